//! The security status of this machine, end to end: the real agent's
//! security collector asks apt (a simulated upgrade), looks for ClamAV, a
//! firewall and disk encryption, and the status shows in the operation log
//! of its device — the numbers apt itself gives.

use crate::gw::Gw;
use crate::policy_alarms::{enroll_agent, run_agent};
use crate::support::*;
use mamori_agent::{CollectorSet, RunOptions};
use std::process::Command;
use std::time::Duration;

/// Updates and security updates as `apt-get -s upgrade` lists them here.
fn apt_counts() -> Option<(u64, u64)> {
    let out = Command::new("apt-get")
        .args(["-s", "-o", "Debug::NoLocking=1", "upgrade"])
        .env("LC_ALL", "C")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let inst: Vec<&str> = text.lines().filter(|l| l.starts_with("Inst ")).collect();
    let security = inst
        .iter()
        .filter(|l| l.contains("-security") || l.contains("Debian-Security"))
        .count();
    Some((inst.len() as u64, security as u64))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_security_status_of_this_pc_is_reported_with_apts_own_counts() {
    let gw = Gw::start().await;
    let admin = gw.signup("Security KK", "tenant").await;
    let state = tempfile::tempdir().unwrap();
    let device = enroll_agent(&gw, &admin, state.path(), "security-test")
        .await
        .device_id;
    let mut opts = RunOptions::new(state.path().to_owned());
    opts.collectors = "security".parse::<CollectorSet>().unwrap();
    let (stop_tx, agent) = run_agent(opts);
    let events = wait_for("the security status", Duration::from_secs(60), || async {
        let (_, v) = gw
            .get(
                &admin,
                &format!("/api/v1/events?device={device}&kind=security_status&limit=1"),
            )
            .await;
        let e = v["events"].as_array().cloned().unwrap_or_default();
        (!e.is_empty()).then_some(e)
    })
    .await;
    let _ = stop_tx.send(());
    agent.await.unwrap().unwrap();
    let status = &events[0]["detail"]["security_status"];
    assert!(
        status["patch_level"]
            .as_str()
            .unwrap_or_default()
            .contains("Linux"),
        "{status}"
    );
    let (updates, security) = apt_counts().expect("apt-get runs here (Debian)");
    // proto3 JSON: 64-bit-free counts are numbers, zero is left out.
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    assert_eq!(n(&status["pending_updates"]), updates, "{status}");
    assert_eq!(n(&status["pending_security_updates"]), security, "{status}");
    // This machine has no antivirus: nothing claims one is up to date.
    if !std::path::Path::new("/var/lib/clamav").exists() {
        assert!(status.get("antivirus_up_to_date").is_none(), "{status}");
    }
}
