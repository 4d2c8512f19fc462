//! Operating the spine: metrics and health endpoints, stateless ingest
//! replicas, rate limits, partitions created on demand, a graceful writer
//! stop.

use crate::support::*;
use std::time::Duration;
use tonic::Code;

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out[9..12].parse().unwrap();
    (status, out)
}

#[tokio::test]
async fn metrics_and_health_endpoints_report_the_pipeline() {
    let s = Stack::start().await;
    let (_tenant, token) = s.tenant_with_token().await;
    let dev = s.new_device(&token).await;
    let mut st = s.open(&dev.device_credential).await.unwrap();
    st.send(batch(1, vec![process_event("/a"), process_event("/b")]))
        .await
        .unwrap();
    let mut bad = process_event("/c");
    bad.id.clear();
    st.send(batch(2, vec![bad])).await.unwrap();

    assert_eq!(get(s.ingest.ops_addr, "/healthz").await.0, 200);
    assert_eq!(get(s.ingest.ops_addr, "/readyz").await.0, 200);
    let (_, metrics) = get(s.ingest.ops_addr, "/metrics").await;
    for needle in [
        "mamori_ingest_events_accepted_total 2",
        "mamori_ingest_events_rejected_total{reason=\"event_id\"} 1",
        "mamori_ingest_connected_agents 1",
        "mamori_ingest_xadd_seconds",
    ] {
        assert!(metrics.contains(needle), "missing {needle:?} in\n{metrics}");
    }
    let writer_ops = s._writer.as_ref().unwrap().ops_addr;
    wait_for(
        "committed events in the writer's metrics",
        Duration::from_secs(10),
        || async {
            let (_, m) = get(writer_ops, "/metrics").await;
            (m.contains("mamori_writer_events_committed_total 2")
                && m.contains("mamori_writer_commit_seconds"))
            .then_some(())
        },
    )
    .await;
    wait_for("stream gauges", Duration::from_secs(10), || async {
        let (_, m) = get(writer_ops, "/metrics").await;
        (m.contains("mamori_writer_consumer_lag") && m.contains("mamori_stream_length"))
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_agent_can_use_any_ingest_replica() {
    let s = Stack::start().await;
    let second = mamori_ingest::start(ingest_config(&s.env)).await.unwrap();
    let (tenant, token) = s.tenant_with_token().await;
    // Enrolled through the first replica...
    let dev = s.new_device(&token).await;
    // ...streams through the second.
    let mut st = open_at(
        &format!("http://{}", second.grpc_addr),
        &dev.device_credential,
    )
    .await
    .unwrap();
    st.send(batch(1, vec![process_event("/via/second")]))
        .await
        .unwrap();
    let mut first = s.open(&dev.device_credential).await.unwrap();
    first
        .send(batch(2, vec![process_event("/via/first")]))
        .await
        .unwrap();
    wait_for("both events", Duration::from_secs(10), || async {
        (s.count_events(tenant).await == 2).then_some(())
    })
    .await;
    second.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_device_over_its_rate_is_slowed_then_told_to_retry_later() {
    let s = Stack::ingest_only(|cfg| {
        cfg.device_rate = 100;
        cfg.device_burst = 100;
        // What a device at these rates may send at once at most.
        cfg.max_batch_events = 300;
    })
    .await;
    let (_tenant, token) = s.tenant_with_token().await;
    let dev = s.new_device(&token).await;
    let mut st = s.open(&dev.device_credential).await.unwrap();
    let ten = || (0..10).map(|_| process_event("/x")).collect::<Vec<_>>();
    // The burst (100 events) goes through; 30 more at 100/s cannot all have
    // been accepted in less than 0.3 s, whatever the scheduling: the bucket
    // delays the acks instead of failing the batches.
    let started = std::time::Instant::now();
    for seq in 1..=13 {
        st.send(batch(seq, ten())).await.unwrap();
    }
    assert!(
        started.elapsed() >= Duration::from_millis(290),
        "{:?}",
        started.elapsed()
    );
    // A batch needing more than two seconds' worth is refused: retry later.
    let err = st
        .send(batch(12, (0..300).map(|_| process_event("/x")).collect()))
        .await
        .expect_err("over the device rate");
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err.message().contains("rate limit"), "{err:?}");
}

#[tokio::test]
async fn an_event_from_a_day_without_a_partition_gets_one() {
    let s = Stack::start().await;
    let (tenant, token) = s.tenant_with_token().await;
    let dev = s.new_device(&token).await;
    let mut st = s.open(&dev.device_credential).await.unwrap();
    let mut old = process_event("/offline/for/a/month");
    old.occurred_at_us -= 30 * 24 * 3600 * 1_000_000;
    st.send(batch(1, vec![old, process_event("/today")]))
        .await
        .unwrap();
    wait_for("both events stored", Duration::from_secs(10), || async {
        (s.count_events(tenant).await == 2).then_some(())
    })
    .await;
    let day = (chrono::Utc::now() - chrono::Duration::days(30))
        .format("events_%Y%m%d")
        .to_string();
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(&day)
        .fetch_one(&s.env.owner)
        .await
        .unwrap();
    assert!(exists, "partition {day} was created");
}

/// Ingest without a writer (appends wait once it is 300 ms behind, for at
/// most `backpressure_wait_ms`), one device, and a first batch that has
/// waited 900 ms in Redis: the writer is behind.
async fn behind_without_a_writer(
    backpressure_wait_ms: u64,
) -> (
    Stack,
    mamori_tenancy::TenantId,
    mamori_proto::agent::v1::EnrollResponse,
    AgentStream,
) {
    let s = Stack::ingest_only(|cfg| {
        cfg.max_backlog_ms = 300;
        cfg.backpressure_wait_ms = backpressure_wait_ms;
    })
    .await;
    let (tenant, token) = s.tenant_with_token().await;
    let dev = s.new_device(&token).await;
    let mut st = s.open(&dev.device_credential).await.unwrap();
    st.send(batch(1, vec![process_event("/first")]))
        .await
        .expect("no backlog yet");
    tokio::time::sleep(Duration::from_millis(900)).await;
    (s, tenant, dev, st)
}

#[tokio::test]
async fn a_writer_that_falls_behind_slows_acks_then_refuses_until_it_catches_up() {
    let (mut s, tenant, dev, mut st) = behind_without_a_writer(700).await;
    let t = std::time::Instant::now();
    let err = st
        .send(batch(2, vec![process_event("/second")]))
        .await
        .expect_err("the writer is behind");
    assert!(
        t.elapsed() >= Duration::from_millis(600),
        "the ack waited first: {:?}",
        t.elapsed()
    );
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(
        err.message().contains("behind") && err.message().contains("retry later"),
        "{err:?}"
    );

    // The writer comes: the backlog drains and the retried batch is acked.
    s._writer = Some(mamori_writer::start(writer_config(&s.env)).await.unwrap());
    wait_for(
        "an ack once the writer caught up",
        Duration::from_secs(20),
        || async {
            let mut st = s.open(&dev.device_credential).await.ok()?;
            st.send(batch(2, vec![process_event("/second")])).await.ok()
        },
    )
    .await;
    wait_for("both events stored", Duration::from_secs(10), || async {
        (s.count_events(tenant).await == 2).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_waiting_ack_goes_out_as_soon_as_the_writer_catches_up() {
    let (mut s, tenant, _dev, mut st) = behind_without_a_writer(9_000).await;
    // The second batch waits for the consumers; a writer starts meanwhile.
    let t = std::time::Instant::now();
    let (reply, writer) = tokio::join!(st.send(batch(2, vec![process_event("/second")])), async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        mamori_writer::start(writer_config(&s.env)).await.unwrap()
    });
    s._writer = Some(writer);
    let waited = t.elapsed();
    match reply.expect("acked, not refused").body {
        Some(mamori_proto::agent::v1::server_message::Body::Ack(a)) => assert_eq!(a.sequence, 2),
        other => panic!("expected the ack of batch 2, got {other:?}"),
    }
    // It waited for the writer, and went out once the writer caught up,
    // long before its 9 s bound.
    assert!(
        waited >= Duration::from_millis(500) && waited < Duration::from_secs(5),
        "acked after {waited:?}"
    );
    wait_for("both events stored", Duration::from_secs(10), || async {
        (s.count_events(tenant).await == 2).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_database_that_refuses_writes_for_a_while_loses_nothing() {
    let env = mamori_test_support::TestEnv::new().await;
    let mut wcfg = writer_config(&env);
    // Far beyond the test: recovery must not depend on the claim timer.
    wcfg.writer_claim_idle_ms = 600_000;
    let writer = mamori_writer::start(wcfg).await.unwrap();
    let ingest = mamori_ingest::start(ingest_config(&env)).await.unwrap();
    let s = Stack {
        env,
        ingest,
        _writer: Some(writer),
    };
    let (tenant, token) = s.tenant_with_token().await;
    let dev = s.new_device(&token).await;
    let mut st = s.open(&dev.device_credential).await.unwrap();

    sqlx::query("REVOKE INSERT ON events FROM mamori_app")
        .execute(&s.env.owner)
        .await
        .unwrap();
    st.send(batch(1, vec![process_event("/during/outage")]))
        .await
        .expect("acked: Redis has it");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        s.count_events(tenant).await,
        0,
        "the writer could not write"
    );
    sqlx::query("GRANT INSERT ON events TO mamori_app")
        .execute(&s.env.owner)
        .await
        .unwrap();
    wait_for(
        "the event once writes are allowed again",
        Duration::from_secs(15),
        || async { (s.count_events(tenant).await == 1).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn a_writer_stopped_mid_stream_leaves_nothing_pending_and_the_next_stores_the_rest() {
    let mut s = Stack::ingest_only(|cfg| {
        cfg.max_backlog_ms = 600_000;
        cfg.device_rate = 1_000_000;
        cfg.device_burst = 1_000_000;
    })
    .await;
    let (tenant, token) = s.tenant_with_token().await;
    let dev = s.new_device(&token).await;
    let mut st = s.open(&dev.device_credential).await.unwrap();
    for seq in 1..=300 {
        let events = (0..20)
            .map(|i| process_event(&format!("/bin/p{seq}-{i}")))
            .collect();
        st.send(batch(seq, events)).await.expect("acked");
    }
    // A writer reading two entries at a time, stopped while most are still
    // unread.
    let mut wcfg = writer_config(&s.env);
    wcfg.writer_read_count = 2;
    let writer = mamori_writer::start(wcfg.clone()).await.unwrap();
    wait_for("the first events", Duration::from_secs(10), || async {
        (s.count_events(tenant).await > 0).then_some(())
    })
    .await;
    writer.shutdown().await;
    let stored = s.count_events(tenant).await;
    assert!(stored < 6000, "stopped mid-stream ({stored} stored)");
    assert_eq!(stored % 20, 0, "whole batches only ({stored} stored)");
    // What it read, it wrote and acked: nothing waits for a reclaim.
    assert_eq!(
        writer_pending(&s.env.redis_url, wcfg.streams.stream_shards).await,
        0
    );
    // The next writer stores the rest, each event once.
    s._writer = Some(mamori_writer::start(wcfg).await.unwrap());
    s.assert_only_written(tenant, 6000).await;
}

/// A device that keeps sending stays "seen": each accepted batch marks it
/// (written with the others once a second), not only its connect.
#[tokio::test]
async fn a_device_sending_batches_is_seen_at_each_batch() {
    let s = Stack::start().await;
    let (_tenant, token) = s.tenant_with_token().await;
    let dev = s.new_device(&token).await;
    let mut st = s.open(&dev.device_credential).await.unwrap();
    st.send(batch(1, vec![process_event("/x")])).await.unwrap();
    let id: uuid::Uuid = dev.device_id.parse().unwrap();
    let seen_within = |secs: f64| {
        let owner = s.env.owner.clone();
        async move {
            sqlx::query_scalar::<_, bool>(
                "SELECT coalesce(last_seen_at > now() - make_interval(secs => $2), false)
                 FROM devices WHERE id = $1",
            )
            .bind(id)
            .bind(secs)
            .fetch_one(&owner)
            .await
            .unwrap()
        }
    };
    wait_for("the connect recorded", Duration::from_secs(10), || async {
        seen_within(60.0).await.then_some(())
    })
    .await;
    // As if the stream had been open for an hour.
    sqlx::query("UPDATE devices SET last_seen_at = now() - interval '1 hour' WHERE id = $1")
        .bind(id)
        .execute(&s.env.owner)
        .await
        .unwrap();
    st.send(batch(2, vec![process_event("/x")])).await.unwrap();
    wait_for("the batch recorded", Duration::from_secs(10), || async {
        seen_within(60.0).await.then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_writer_whose_consumer_dies_says_so_and_stops() {
    let s = Stack::start().await;
    let writer = s._writer.as_ref().unwrap();
    let (status, _) = get(writer.ops_addr, "/readyz").await;
    assert_eq!(status, 200, "ready while every consumer runs");
    assert!(
        writer.abort_task("mamori:events:{2}"),
        "the shard's consumer exists"
    );
    let why = tokio::time::timeout(Duration::from_secs(5), writer.failed())
        .await
        .expect("the writer reports the dead consumer");
    assert!(
        why.contains("writer consumer of mamori:events:{2}"),
        "{why}"
    );
    let (status, body) = get(writer.ops_addr, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("writer failed") && body.contains("mamori:events:{2}"),
        "{body}"
    );
}

#[tokio::test]
async fn ingest_refuses_to_start_with_another_shard_count_than_the_writer() {
    let s = Stack::start().await;
    let err = mamori_ingest::start(mamori_ingest::Config {
        streams: mamori_config::Streams { stream_shards: 8 },
        ..ingest_config(&s.env)
    })
    .await
    .expect_err("8 shards where the streams have 4");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("stream_shards is 8 here but 4 in Redis")
            && msg.contains("MAMORI_STREAM_SHARDS=4"),
        "{msg}"
    );
    // The running pipeline is untouched: a batch still lands.
    let (tenant, token) = s.tenant_with_token().await;
    let dev = s.new_device(&token).await;
    let mut st = s.open(&dev.device_credential).await.unwrap();
    st.send(batch(1, vec![process_event("/usr/bin/a")]))
        .await
        .unwrap();
    s.assert_only_written(tenant, 1).await;
}

#[tokio::test]
async fn a_draining_ingest_is_unready_at_once() {
    let s = Stack::start().await;
    let (status, _) = get(s.ingest.ops_addr, "/readyz").await;
    assert_eq!(status, 200);
    // SIGTERM in the binary cancels this token.
    s.ingest.stopper().cancel();
    let (status, body) = get(s.ingest.ops_addr, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("shutting down"), "{body}");
}

/// The process, not only the role: a real `mamori writer` whose shard
/// consumer dies (aborted two seconds after its start through the debug
/// builds' `MAMORI_DEBUG_ABORT_TASK`, as a crash of that task would end it)
/// exits with status 1, saying which task failed, so that Kubernetes or
/// systemd starts it again; started again, it stores what arrived
/// meanwhile, each event once.
#[tokio::test]
async fn a_writer_process_whose_consumer_dies_exits_non_zero_and_its_restart_catches_up() {
    let s = Stack::ingest_only(|_| {}).await;
    let (tenant, token) = s.tenant_with_token().await;
    let ops = free_port();
    let logs = tempfile::tempdir().unwrap();
    let writer = |fault: Option<&str>, log: &str| {
        let ops_addr = format!("127.0.0.1:{ops}");
        let mut vars = vec![
            ("MAMORI_WRITER_OPS_ADDR", ops_addr.as_str()),
            ("MAMORI_WRITER_CLAIM_IDLE_MS", "1000"),
        ];
        vars.extend(fault.map(|task| ("MAMORI_DEBUG_ABORT_TASK", task)));
        spawn_mamori("writer", &s.env, &vars, &logs.path().join(log))
    };
    let readyz = || async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut c = tokio::net::TcpStream::connect(("127.0.0.1", ops))
            .await
            .ok()?;
        c.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut out = String::new();
        c.read_to_string(&mut out).await.ok()?;
        Some((out.get(9..12)?.parse::<u16>().ok()?, out))
    };
    let mut devices = Vec::new();
    for _ in 0..8 {
        let dev = s.new_device(&token).await;
        devices.push(s.open(&dev.device_credential).await.unwrap());
    }

    let mut first = writer(Some("writer consumer of mamori:events:{"), "first.log");
    wait_for("the writer ready", Duration::from_secs(10), || async {
        (readyz().await?.0 == 200).then_some(())
    })
    .await;
    for (i, st) in devices.iter_mut().enumerate() {
        st.send(batch(1, vec![process_event(&format!("/before/{i}"))]))
            .await
            .unwrap();
    }
    // Unready from the failure until the exit (`a_writer_whose_consumer_
    // dies_says_so_and_stops` asserts the 503 in-process: here the drain
    // can be too short to poll), then the process ends with status 1.
    let status = wait_for("the writer's exit", Duration::from_secs(20), || {
        let exited = first.0.try_wait().unwrap();
        async move { exited }
    })
    .await;
    assert_eq!(status.code(), Some(1), "a failed role exits non-zero");
    let log = std::fs::read_to_string(logs.path().join("first.log")).unwrap();
    assert!(
        log.contains("the writer failed") && log.contains("writer consumer of mamori:events:{"),
        "the log says which task failed: {log}"
    );
    assert!(readyz().await.is_none(), "nothing answers on its port");

    // Meanwhile events keep arriving (ingest acks them into the streams).
    for (i, st) in devices.iter_mut().enumerate() {
        st.send(batch(2, vec![process_event(&format!("/after/{i}"))]))
            .await
            .unwrap();
    }
    let _second = writer(None, "second.log");
    wait_for(
        "the restarted writer ready",
        Duration::from_secs(10),
        || async { (readyz().await?.0 == 200).then_some(()) },
    )
    .await;
    s.assert_only_written(tenant, 16).await;
}
