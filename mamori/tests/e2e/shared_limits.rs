//! Rate limits that hold across replicas: a device's event budget across
//! two ingest processes, and the sign-in limit across two gateways (GCRA
//! in the shared Redis).

use crate::gw::{Gw, gateway_config};
use crate::support::*;
use reqwest::StatusCode;
use serde_json::json;
use std::net::SocketAddr;
use tonic::Code;

/// An authenticated stream to the ingest replica at `addr`.
async fn open_on(addr: SocketAddr, credential: &str) -> AgentStream {
    open_at(&format!("http://{addr}"), credential)
        .await
        .expect("the replica accepts the stream")
}

fn events(n: usize) -> Vec<mamori_proto::agent::v1::Event> {
    (0..n).map(|_| process_event("/usr/bin/x")).collect()
}

#[tokio::test]
async fn a_device_has_one_budget_across_ingest_replicas() {
    let slow = |cfg: &mut mamori_ingest::Config| {
        cfg.device_rate = 10;
        cfg.device_burst = 20;
        // What a device at these rates may send at once at most.
        cfg.max_batch_events = 40;
    };
    let s = Stack::ingest_only(slow).await;
    let mut cfg = ingest_config(&s.env);
    slow(&mut cfg);
    let second = mamori_ingest::start(cfg.clone()).await.unwrap();
    let (_tenant, token) = s.tenant_with_token().await;
    let dev = s.new_device(&token).await;

    // The whole burst on the first replica...
    let mut first = open_on(s.ingest.grpc_addr, &dev.device_credential).await;
    first.send(batch(1, events(20))).await.expect("the burst");
    // ...leaves nothing on the second: 25 more would take 2.5 s at 10/s,
    // longer than a batch may wait.
    let mut other = open_on(second.grpc_addr, &dev.device_credential).await;
    let err = other
        .send(batch(2, events(25)))
        .await
        .expect_err("the budget is shared");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("device rate limit"), "{err:?}");

    // Contrast: a replica with per-process limits has a budget of its own.
    cfg.shared_rate_limits = false;
    let local = mamori_ingest::start(cfg).await.unwrap();
    let mut st = open_on(local.grpc_addr, &dev.device_credential).await;
    st.send(batch(3, events(20)))
        .await
        .expect("a per-process bucket starts full");
    second.shutdown().await.unwrap();
    local.shutdown().await.unwrap();
}

#[tokio::test]
async fn sign_in_attempts_from_one_address_share_a_limit_across_gateways() {
    let g = Gw::start_with(|c| {
        c.api_auth_rate = 1;
        c.api_auth_burst = 4;
    })
    .await;
    let mut cfg = gateway_config(&g.stack, g.mail_dir.path(), &g.kek);
    cfg.policy_url = format!("http://{}", g.policy.grpc_addr);
    cfg.api_auth_rate = 1;
    cfg.api_auth_burst = 4;
    let second = mamori_gateway::start(cfg).await.unwrap();
    let login = |base: String| {
        let http = g.http.clone();
        async move {
            http.post(format!("{base}/api/v1/auth/login"))
                .json(&json!({ "email": "nobody@example.com", "password": "wrong password here" }))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let other = format!("http://{}", second.addr);
    // Four attempts, alternating gateways: the shared burst.
    for i in 0..4 {
        let base = if i % 2 == 0 {
            g.base.clone()
        } else {
            other.clone()
        };
        assert_eq!(login(base).await, StatusCode::UNAUTHORIZED, "attempt {i}");
    }
    // The fifth is refused on either gateway.
    assert_eq!(login(other.clone()).await, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(login(g.base.clone()).await, StatusCode::TOO_MANY_REQUESTS);
    second.shutdown().await.unwrap();
}
