//! Redis unavailable or over its memory bound: agents are told to retry
//! later (their batches stay in their spool), and nothing is acked that
//! Redis does not hold.

use crate::support::*;
use mamori_test_support::RedisProc;
use std::time::Duration;
use tonic::Code;

#[tokio::test]
async fn redis_down_means_retry_later_and_up_again_means_acks() {
    let mut redis = RedisProc::start(&[]);
    let s = Stack::ingest_only(|cfg| cfg.stores.redis_url = redis.url()).await;
    let (_tenant, token) = s.tenant_with_token().await;
    let dev = s.new_device(&token).await;
    let mut st = s.open(&dev.device_credential).await.unwrap();
    st.send(batch(1, vec![process_event("/a")]))
        .await
        .expect("ack while Redis is up");

    redis.kill();
    retry_later(
        &mut st,
        batch(2, vec![process_event("/b")]),
        "no ack without Redis",
    )
    .await;

    // Redis comes back on the same port: the agent reconnects and its
    // retried batch is acked and stored.
    redis.restart();
    let ack = wait_for(
        "an ack after Redis is back",
        Duration::from_secs(20),
        || async {
            let mut st = s.open(&dev.device_credential).await.ok()?;
            st.send(batch(2, vec![process_event("/b")])).await.ok()
        },
    )
    .await;
    assert!(ack.body.is_some());
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let len = stream_entries(&mut conn).await;
    assert_eq!(
        len, 1,
        "the batch acked after the restart is in the (new, empty) Redis"
    );
}

#[tokio::test]
async fn redis_over_its_memory_bound_means_resource_exhausted() {
    let redis = RedisProc::start(&["--maxmemory", "3mb", "--maxmemory-policy", "noeviction"]);
    let s = Stack::ingest_only(|cfg| cfg.stores.redis_url = redis.url()).await;
    let (_tenant, token) = s.tenant_with_token().await;
    let dev = s.new_device(&token).await;
    let mut st = s.open(&dev.device_credential).await.unwrap();
    let mut refused = None;
    for seq in 1..=200 {
        let events = (0..500)
            .map(|_| process_event(&"/opt/app/bin/tool".repeat(20)))
            .collect();
        match st.send(batch(seq, events)).await {
            Ok(_) => continue,
            Err(status) => {
                refused = Some(status);
                break;
            }
        }
    }
    let status = refused.expect("a 3 MB Redis fills up within 200 batches");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("retry later"), "{status:?}");
}

/// Sends `b` and asserts it is not acked but "retry later" (UNAVAILABLE).
async fn retry_later(st: &mut AgentStream, b: mamori_proto::agent::v1::EventBatch, why: &str) {
    let err = st.send(b).await.expect_err(why);
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("retry later"), "{err:?}");
}

/// Entries in the four shard streams.
async fn stream_entries(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    let mut total = 0;
    for key in mamori_streams::stream_keys(4) {
        total += redis::cmd("XLEN")
            .arg(&key)
            .query_async::<u64>(&mut *conn)
            .await
            .unwrap();
    }
    total
}

#[tokio::test]
async fn without_the_replicas_acks_wait_for_a_batch_is_retry_later_not_acked() {
    // A Redis with no replica, and ingest told to ack only what one replica
    // has: the append cannot be confirmed, so the agent keeps the batch.
    let redis = RedisProc::start(&[]);
    let s = Stack::ingest_only(|cfg| {
        cfg.stores.redis_url = redis.url();
        cfg.redis_wait_replicas = 1;
        cfg.redis_wait_timeout_ms = 2000;
        // No writer reads the entry: no back-pressure for its age either.
        cfg.max_backlog_ms = 60_000;
    })
    .await;
    let (_tenant, token) = s.tenant_with_token().await;
    let dev = s.new_device(&token).await;
    let conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let entries = || {
        let mut conn = conn.clone();
        async move { stream_entries(&mut conn).await }
    };
    let attempt = || async {
        let mut st = s.open(&dev.device_credential).await.unwrap();
        let b = batch(1, vec![process_event("/a")]);
        retry_later(&mut st, b, "no ack without a replica").await;
    };
    attempt().await;
    assert_eq!(entries().await, 1, "the first attempt reached Redis");
    // For one WAIT timeout, that stream's batches are refused at once,
    // without appending (or waiting) again.
    attempt().await;
    assert_eq!(entries().await, 1, "the second was refused without Redis");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    attempt().await;
    assert_eq!(entries().await, 2, "after the timeout Redis is asked again");
}

/// Back-pressure leaves out what a dead consumer holds: ingest measures how
/// far behind the writers are by the oldest entry they have not finished,
/// and a writer killed mid-batch leaves its entries pending until another
/// claims them (`writer_claim_idle_ms`, 30 s by default). Those no longer
/// hold back every agent meanwhile; trimming still keeps them.
#[tokio::test]
async fn entries_pending_on_a_dead_consumer_do_not_count_as_behind() {
    use mamori_streams::{StreamId, groups, oldest_unfinished, oldest_unfinished_live};
    let env = mamori_test_support::TestEnv::new().await;
    let mut conn = env.redis().await;
    let key = "mamori:test:{0}";
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(key)
        .arg("g")
        .arg("$")
        .arg("MKSTREAM")
        .query_async(&mut conn)
        .await
        .unwrap();
    let add = |conn: &mut redis::aio::MultiplexedConnection| {
        let mut conn = conn.clone();
        async move {
            let id: String = redis::cmd("XADD")
                .arg(key)
                .arg("*")
                .arg("b")
                .arg("x")
                .query_async(&mut conn)
                .await
                .unwrap();
            StreamId::parse(&id).unwrap()
        }
    };
    let held = add(&mut conn).await;
    // Consumer "a" reads it and is never heard of again.
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("g")
        .arg("a")
        .arg("COUNT")
        .arg(1)
        .arg("STREAMS")
        .arg(key)
        .arg(">")
        .query_async(&mut conn)
        .await
        .unwrap();
    let waiting = add(&mut conn).await;
    let group = groups(&mut conn, key).await.unwrap().remove(0);
    assert_eq!(group.pending, 1);
    let live = |dead_after| {
        let (mut conn, group) = (conn.clone(), group.clone());
        async move {
            oldest_unfinished_live(&mut conn, key, &group, dead_after)
                .await
                .unwrap()
        }
    };
    assert_eq!(
        live(Duration::from_secs(60)).await,
        Some(held),
        "a consumer that read a moment ago is alive: its entry counts"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        live(Duration::from_millis(200)).await,
        Some(waiting),
        "silent longer than that: only the undelivered entry counts"
    );
    assert_eq!(
        oldest_unfinished(&mut conn, key, &group).await.unwrap(),
        Some(held),
        "nothing it holds is trimmed"
    );
}
