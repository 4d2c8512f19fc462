//! Boots and shutdowns, end to end: the agent's logon collector reads them
//! from wtmp (a file of the test's own, written as systemd writes it), the
//! server stores them as `boot` and `shutdown` events of the device. The
//! shutdown is written while the agent is stopped, as at a real power-off,
//! and still arrives once the agent runs again. And a collector that stops
//! is a warning event.

use crate::gw::Gw;
use crate::policy_alarms::{enroll_agent, run_agent};
use crate::support::*;
use mamori_agent::platform::linux::logon::wtmp::{self, UtmpRecord};
use mamori_agent::{CollectorSet, RunOptions};
use std::io::Write;
use std::time::Duration;

fn append(path: &std::path::Path, ut_type: i16, user: &str, sec: i64) {
    let rec = UtmpRecord {
        ut_type,
        line: "~".into(),
        user: user.into(),
        tv_sec: sec as i32,
        ..Default::default()
    };
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
        .write_all(&rec.encode())
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_written_while_the_agent_is_stopped_arrives_after_the_next_boot() {
    let gw = Gw::start().await;
    let admin = gw.signup("Power KK", "tenant").await;
    let state = tempfile::tempdir().unwrap();
    let enrolled = enroll_agent(&gw, &admin, state.path(), "power").await;
    let wtmp_path = state.path().join("wtmp");
    let now = chrono::Utc::now().timestamp();
    append(&wtmp_path, wtmp::BOOT_TIME, "reboot", now - 3600);
    let options = || {
        let mut opts = RunOptions::new(state.path().to_owned());
        opts.collectors = "logon".parse::<CollectorSet>().unwrap();
        opts.platform.wtmp_path = wtmp_path.clone();
        opts
    };
    // The first run starts at the end of wtmp: the old boot is history.
    let (stop, agent) = run_agent(options());
    wait_for(
        "the agent's first look",
        Duration::from_secs(10),
        || async { state.path().join("wtmp.offset").exists().then_some(()) },
    )
    .await;
    let _ = stop.send(());
    agent.await.unwrap().unwrap();

    append(&wtmp_path, wtmp::RUN_LVL, "shutdown", now - 60);
    append(&wtmp_path, wtmp::BOOT_TIME, "reboot", now - 30);
    let (stop, agent) = run_agent(options());
    let events = wait_for(
        "the shutdown and the boot",
        Duration::from_secs(30),
        || async {
            let (_, v) = gw
                .get(
                    &admin,
                    &format!("/api/v1/events?device={}", enrolled.device_id),
                )
                .await;
            let kinds: Vec<(String, String)> = v["events"]
                .as_array()?
                .iter()
                // The agent's own start and stop are events too.
                .filter(|e| !e["kind"].as_str().unwrap().starts_with("agent_"))
                .map(|e| {
                    (
                        e["kind"].as_str().unwrap().to_owned(),
                        e["time"].as_str().unwrap().to_owned(),
                    )
                })
                .collect();
            (kinds.len() >= 2).then_some(kinds)
        },
    )
    .await;
    // Newest first, each at the time wtmp recorded (the server adds the
    // agent's clock-offset estimate, a few ms on loopback).
    let got: Vec<(&str, i64)> = events
        .iter()
        .map(|(kind, time)| {
            let t = chrono::DateTime::parse_from_rfc3339(time).unwrap();
            (kind.as_str(), t.timestamp_millis())
        })
        .collect();
    assert_eq!(got.len(), 2, "{events:?}");
    for ((kind, ms), (want_kind, want_s)) in
        got.iter().zip([("boot", now - 30), ("shutdown", now - 60)])
    {
        assert_eq!(*kind, want_kind, "{events:?}");
        assert!((ms - want_s * 1000).abs() < 1000, "{events:?}");
    }
    let _ = stop.send(());
    agent.await.unwrap().unwrap();
}

/// A collector that cannot start (here: its saved wtmp position cannot be
/// written) stops, and the admin is told which one and why; the agent and
/// its other collectors carry on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_stops_is_a_warning_the_admin_sees() {
    let gw = Gw::start().await;
    let admin = gw.signup("Broken Collector KK", "tenant").await;
    let state = tempfile::tempdir().unwrap();
    let enrolled = enroll_agent(&gw, &admin, state.path(), "broken").await;
    // A directory where the position file goes: it cannot be written.
    std::fs::create_dir(state.path().join("wtmp.offset")).unwrap();
    let mut opts = RunOptions::new(state.path().to_owned());
    opts.collectors = "logon,software".parse::<CollectorSet>().unwrap();
    opts.platform.wtmp_path = state.path().join("wtmp");
    let status = state.path().join("status");
    std::fs::write(
        &status,
        "Package: still-collected\nStatus: install ok installed\nVersion: 1\n\n",
    )
    .unwrap();
    opts.platform.dpkg_status = status;
    opts.software_poll = Duration::from_millis(100);
    let (stop, agent) = run_agent(opts);
    let warning = wait_for("the collector warning", Duration::from_secs(30), || async {
        let (_, v) = gw
            .get(&admin, "/api/v1/events?kind=collector_warning")
            .await;
        v["events"].as_array().and_then(|e| e.first().cloned())
    })
    .await;
    assert_eq!(warning["device_id"], enrolled.device_id, "{warning}");
    let w = &warning["detail"]["collector_warning"];
    assert_eq!(w["collector"], "logon", "{warning}");
    let message = w["message"].as_str().unwrap();
    assert!(
        message.starts_with("the collector stopped") && message.contains("wtmp.offset"),
        "{message}"
    );
    // The other collector still reports.
    wait_for(
        "the software inventory",
        Duration::from_secs(30),
        || async {
            let (_, v) = gw
                .get(&admin, "/api/v1/events?kind=software_installed")
                .await;
            v["events"].as_array().and_then(|e| {
                e.iter()
                    .find(|e| e["subject"] == "still-collected")
                    .cloned()
            })
        },
    )
    .await;
    let _ = stop.send(());
    agent.await.unwrap().unwrap();
}
