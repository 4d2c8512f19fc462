//! The event spine on a real Redis Cluster (3 masters, a replica each):
//! ingest acks a batch only once a replica has it (`WAIT 1`), so when a
//! master is killed with -9 mid-load and its replica takes over, every
//! acked event still reaches PostgreSQL, exactly once, and the writer and
//! alerting carry on.

use crate::support::*;
use mamori_proto::agent::v1::server_message::Body;
use mamori_test_support::TestEnv;
use mamori_test_support::cluster::RedisCluster;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const DEVICES: usize = 6;
const EVENTS_PER_BATCH: usize = 20;

/// Sends batches until `stop`, each retried (on a fresh stream, as the
/// agent does) until it is acked; returns the ids of the acked events.
async fn send_until(
    s: Arc<Stack>,
    credential: String,
    stop: Arc<AtomicBool>,
    refusals: Arc<std::sync::atomic::AtomicU64>,
) -> Vec<Vec<u8>> {
    let mut acked = Vec::new();
    let mut stream = None;
    let mut seq = 0;
    while !stop.load(Ordering::Relaxed) {
        seq += 1;
        let events: Vec<_> = (0..EVENTS_PER_BATCH)
            .map(|i| process_event(&format!("/usr/bin/tool-{seq}-{i}")))
            .collect();
        let ids: Vec<Vec<u8>> = events.iter().map(|e| e.id.clone()).collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(Instant::now() < deadline, "batch {seq} never acked");
            if stream.is_none() {
                stream = s.open(&credential).await.ok();
            }
            let Some(st) = stream.as_mut() else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            match st.send(batch(seq, events.clone())).await {
                Ok(m) if matches!(m.body, Some(Body::Ack(_))) => break,
                // No policy is pushed here (none is set), so the reply is
                // this batch's; sending it again would leave a stale ack.
                Ok(m) => panic!("batch {seq} refused: {m:?}"),
                Err(_) => {
                    refusals.fetch_add(1, Ordering::Relaxed);
                    stream = None;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        acked.extend(ids);
        // About 1,000 events/s per device: a load, not a flood.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    acked
}

#[tokio::test]
async fn acked_events_survive_a_master_killed_mid_load_exactly_once() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("warn")
        .with_test_writer()
        .try_init();
    let mut cluster = RedisCluster::start(3, 1).await;
    let env = TestEnv::new().await;
    let url = cluster.url();
    let writer = mamori_writer::start(mamori_writer::Config {
        stores: mamori_config::Stores {
            redis_url: url.clone(),
            ..writer_config(&env).stores
        },
        ..writer_config(&env)
    })
    .await
    .expect("writer starts on the cluster");
    let mail = tempfile::tempdir().unwrap();
    let alerting = mamori_alerting::start(mamori_alerting::Config {
        stores: mamori_config::Stores {
            database_url: env.database_url.clone(),
            redis_url: url.clone(),
            db_max_connections: 4,
        },
        alerting_ops_addr: "127.0.0.1:0".into(),
        alerting_claim_idle_ms: 1000,
        kek: mamori_config::KeyEncryption {
            key_encryption_key: mamori_gateway::Kek::generate_base64(),
            ..Default::default()
        },
        mail_dir: mail.path().display().to_string(),
        ..Default::default()
    })
    .await
    .expect("alerting starts on the cluster");
    let ingest = mamori_ingest::start(mamori_ingest::Config {
        stores: mamori_config::Stores {
            redis_url: url.clone(),
            ..ingest_config(&env).stores
        },
        redis_wait_replicas: 1,
        redis_wait_timeout_ms: 500,
        ..ingest_config(&env)
    })
    .await
    .expect("ingest starts on the cluster");
    let s = Arc::new(Stack {
        env,
        ingest,
        _writer: Some(writer),
    });
    let (tenant, token) = s.tenant_with_token().await;
    let mut devices = Vec::new();
    for _ in 0..DEVICES {
        devices.push(s.new_device(&token).await);
    }
    // The shard streams are spread over the masters: the victim serves the
    // first device's shard.
    let first: mamori_tenancy::DeviceId = devices[0].device_id.parse().unwrap();
    let key = mamori_streams::stream_key(mamori_streams::shard_of(first, 4));
    let victim = cluster.master_of(&key).await;

    let stop = Arc::new(AtomicBool::new(false));
    let refusals = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let senders: Vec<_> = devices
        .iter()
        .map(|d| {
            tokio::spawn(send_until(
                Arc::clone(&s),
                d.device_credential.clone(),
                Arc::clone(&stop),
                Arc::clone(&refusals),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = s.count_events(tenant).await;
    assert!(
        before > 0,
        "events flow through the cluster before the kill"
    );
    cluster.kill(victim);
    let promoted = cluster.wait_for_failover(&key, victim).await;
    // The promoted master has no replica left, so its shard's batches are
    // refused (WAIT 1 cannot be met) until the killed node comes back as
    // its replica, as a restarted pod would. Load goes on, then stops.
    let failed_over = s.count_events(tenant).await;
    cluster.restart(victim).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    for t in senders {
        acked.extend(t.await.expect("sender"));
    }
    let acked_set: HashSet<Vec<u8>> = acked.iter().cloned().collect();
    assert_eq!(acked_set.len(), acked.len(), "event ids are unique");

    assert_stored_exactly_once(&s.env, tenant, &acked).await;

    // Alerting read the same entries through the failover: its group has
    // nothing pending on any shard.
    let mut conn =
        redis::cluster::ClusterClient::new(vec![format!("redis://127.0.0.1:{promoted}")])
            .unwrap()
            .get_async_connection()
            .await
            .unwrap();
    wait_for(
        "alerting caught up on every shard",
        Duration::from_secs(30),
        || async {
            for k in mamori_streams::stream_keys(4) {
                for g in mamori_streams::groups(&mut conn.clone(), &k).await.ok()? {
                    if g.name == mamori_streams::ALERTING_GROUP
                        && (g.pending > 0 || g.lag.unwrap_or(0) > 0)
                    {
                        return None;
                    }
                }
            }
            Some(())
        },
    )
    .await;
    let _ = &mut conn;
    eprintln!(
        "cluster failover: {} events acked ({before} stored before the kill, {failed_over} after the failover), {} refusals",
        acked.len(),
        refusals.load(Ordering::Relaxed)
    );
    alerting.shutdown().await;
}
