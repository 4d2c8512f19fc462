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
    let s = Stack::ingest_only(|cfg| cfg.redis_url = redis.url()).await;
    let (_tenant, token) = s.tenant_with_token().await;
    let dev = s.new_device(&token).await;
    let mut st = s.open(&dev.device_credential).await.unwrap();
    st.send(batch(1, vec![process_event("/a")]))
        .await
        .expect("ack while Redis is up");

    redis.kill();
    let err = st
        .send(batch(2, vec![process_event("/b")]))
        .await
        .expect_err("no ack without Redis");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("retry later"), "{err:?}");

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
    let len: u64 = {
        let mut total = 0;
        for key in mamori_streams::stream_keys(4) {
            total += redis::cmd("XLEN")
                .arg(&key)
                .query_async::<u64>(&mut conn)
                .await
                .unwrap();
        }
        total
    };
    assert_eq!(
        len, 1,
        "the batch acked after the restart is in the (new, empty) Redis"
    );
}

#[tokio::test]
async fn redis_over_its_memory_bound_means_resource_exhausted() {
    let redis = RedisProc::start(&["--maxmemory", "3mb", "--maxmemory-policy", "noeviction"]);
    let s = Stack::ingest_only(|cfg| cfg.redis_url = redis.url()).await;
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

#[tokio::test]
async fn without_the_replicas_acks_wait_for_a_batch_is_retry_later_not_acked() {
    // A Redis with no replica, and ingest told to ack only what one replica
    // has: the append cannot be confirmed, so the agent keeps the batch.
    let redis = RedisProc::start(&[]);
    let s = Stack::ingest_only(|cfg| {
        cfg.redis_url = redis.url();
        cfg.redis_wait_replicas = 1;
        cfg.redis_wait_timeout_ms = 100;
    })
    .await;
    let (_tenant, token) = s.tenant_with_token().await;
    let dev = s.new_device(&token).await;
    let mut st = s.open(&dev.device_credential).await.unwrap();
    let err = st
        .send(batch(1, vec![process_event("/a")]))
        .await
        .expect_err("no ack without a replica");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("retry later"), "{err:?}");
}
