//! Regression tests for the findings of the outside security review (one
//! free tenant slowing, spamming or outlasting others), each failing on the
//! code before its fix.

use crate::gw::Gw;
use crate::policy_alarms::{alarms, alerting_config, event_at, set_tenant_policy};
use crate::support::*;
use mamori_proto::agent::v1::{FileEvent, ProcessEvent, event::Kind, file_event, process_event};
use serde_json::json;
use std::time::Duration;

/// A tenant whose events cost the shared alerting consumer more than its
/// budget has them evaluated in the overflow lane, and nothing is lost or
/// counted twice: every one of its 900 confidential-folder operations
/// counts into its alarm exactly once, and the other tenant's banned app
/// is alarmed too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_over_its_alerting_budget_is_moved_aside_and_loses_nothing() {
    let gw = Gw::start().await;
    let mut cfg = alerting_config(&gw, "");
    cfg.alerting_tenant_budget_ms = 5;
    let alerting = mamori_alerting::start(cfg).await.expect("alerting starts");
    let hostile = gw.signup("Flood KK", "tenant").await;
    let quiet = gw.signup("Quiet KK", "tenant").await;
    // The hostile tenant's policy holds as much glob text as it may.
    let folders: Vec<String> = (0..31)
        .map(|i| format!("*{}{i}*", "a".repeat(500 - 4)))
        .chain(["/srv/hr/**".to_owned()])
        .collect();
    set_tenant_policy(&gw, &hostile, json!({ "confidential_folders": folders })).await;
    set_tenant_policy(
        &gw,
        &quiet,
        json!({"banned_apps": [{"name": "winny", "action": "log"}]}),
    )
    .await;
    let flooder = gw
        .stack
        .new_device(hostile.enrollment_token.as_deref().unwrap())
        .await;
    let victim = gw
        .stack
        .new_device(quiet.enrollment_token.as_deref().unwrap())
        .await;
    let mut flood = gw.stack.open(&flooder.device_credential).await.unwrap();
    let mut agent = gw.stack.open(&victim.device_credential).await.unwrap();
    let now = chrono::Utc::now();
    // Long paths in the confidential folder: each one a hit to record.
    let long_path = format!("/srv/hr/{}/pay.xlsx", "b".repeat(3000));
    for seq in 1..=3 {
        let events = (0..300)
            .map(|_| {
                event_at(
                    now,
                    Kind::File(FileEvent {
                        action: file_event::Action::Modify as i32,
                        path: long_path.clone(),
                        ..Default::default()
                    }),
                )
            })
            .collect();
        flood.send(batch(seq, events)).await.unwrap();
    }
    let start = event_at(
        now,
        Kind::Process(ProcessEvent {
            action: process_event::Action::Start as i32,
            exe_path: "C:\\Tools\\Winny.exe".into(),
            ..Default::default()
        }),
    );
    agent.send(batch(1, vec![start])).await.unwrap();

    let quiet_alarm = wait_for(
        "the quiet tenant's alarm",
        Duration::from_secs(30),
        || async { alarms(&gw, &quiet).await.into_iter().next() },
    )
    .await;
    assert_eq!(quiet_alarm["category"], "banned_app");
    let counted = wait_for(
        "every flood event counted",
        Duration::from_secs(60),
        || async {
            let a = alarms(&gw, &hostile).await;
            (a.len() == 1 && a[0]["count"] == 900).then_some(a)
        },
    )
    .await;
    assert_eq!(counted[0]["category"], "confidential_folder");
    // The flood went through an overflow lane (the fix); no entry is left
    // pending there, and nothing was counted twice.
    let client = redis::Client::open(gw.stack.env.redis_url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut lanes_used = 0;
    for shard in 0..4 {
        let key = mamori_streams::overflow_key(shard);
        for g in mamori_streams::groups(&mut conn, &key).await.unwrap() {
            assert_eq!(g.pending, 0, "{key}");
            if g.last_delivered.is_some_and(|id| id.ms > 0) {
                lanes_used += 1;
            }
        }
    }
    assert!(lanes_used >= 1, "the flood bypassed the overflow lanes");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let again = alarms(&gw, &hostile).await;
    assert_eq!(again[0]["count"], 900, "{again:?}");
    assert_eq!(alarms(&gw, &quiet).await[0]["count"], 1);
    alerting.shutdown().await;
}
