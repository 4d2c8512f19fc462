//! The PC's environment, end to end: the agent runs on a thread with a UTS
//! namespace of its own (so its host name is the PC's, and changing it
//! touches nothing else on this machine), the host name is changed, and
//! the change reaches the log and the "PC environment change" alarm.

use crate::gw::Gw;
use crate::policy_alarms::{alarms, alerting_config, enroll_agent};
use crate::support::*;
use mamori_agent::{CollectorSet, RunOptions};
use nix::sched::CloneFlags;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_name_change_on_the_pc_is_logged_with_old_and_new_and_alarmed() {
    let gw = Gw::start().await;
    let alerting = mamori_alerting::start(alerting_config(&gw, ""))
        .await
        .expect("alerting starts");
    let admin = gw.signup("Environment KK", "tenant").await;
    let state = tempfile::tempdir().unwrap();
    enroll_agent(&gw, &admin, state.path(), "env-test").await;
    let mut opts = RunOptions::new(state.path().to_owned());
    opts.collectors = "environment".parse::<CollectorSet>().unwrap();
    opts.environment_poll = Duration::from_millis(200);

    let (rename_tx, rename_rx) = std::sync::mpsc::channel::<&'static str>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let agent = std::thread::spawn(move || {
        // The namespace is this thread's: the agent runs on it alone (a
        // current-thread runtime), and the renames are done on it too.
        nix::sched::unshare(CloneFlags::CLONE_NEWUTS)
            .expect("a UTS namespace of its own (the test runs as root)");
        nix::unistd::sethostname("pc-before").unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let renames = async move {
                loop {
                    if let Ok(name) = rename_rx.try_recv() {
                        nix::unistd::sethostname(name).unwrap();
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            };
            tokio::select! {
                done = mamori_agent::run(opts, async { let _ = stop_rx.await; }) => done,
                () = renames => unreachable!("renaming never ends"),
            }
        })
    });

    let baseline = state.path().join("environment.json");
    wait_for("the first snapshot", Duration::from_secs(20), || async {
        std::fs::read_to_string(&baseline)
            .ok()
            .filter(|s| s.contains("pc-before"))
    })
    .await;
    let host = nix::unistd::gethostname().unwrap();
    rename_tx.send("pc-after").unwrap();

    let event = wait_for("the change in the log", Duration::from_secs(30), || async {
        let (_, v) = gw
            .get(&admin, "/api/v1/events?kind=environment_change")
            .await;
        v["events"].as_array().and_then(|e| e.first().cloned())
    })
    .await;
    let change = &event["detail"]["environment_change"];
    assert_eq!(change["field"], "FIELD_HOSTNAME", "{event}");
    assert_eq!(change["old_value"], "pc-before");
    assert_eq!(change["new_value"], "pc-after");
    let alarm = wait_for("the alarm", Duration::from_secs(30), || async {
        alarms(&gw, &admin)
            .await
            .into_iter()
            .find(|a| a["category"] == "environment_change")
    })
    .await;
    assert!(
        alarm["summary"]
            .as_str()
            .unwrap_or_default()
            .contains("pc-after"),
        "{alarm}"
    );
    assert_eq!(
        nix::unistd::gethostname().unwrap(),
        host,
        "this machine's own host name is untouched"
    );
    let (_, v) = gw
        .get(&admin, "/api/v1/events?kind=environment_change")
        .await;
    assert_eq!(
        v["events"].as_array().map(Vec::len),
        Some(1),
        "only the host name changed, once: {v}"
    );

    let _ = stop_tx.send(());
    tokio::task::spawn_blocking(move || agent.join().unwrap())
        .await
        .unwrap()
        .unwrap();
    alerting.shutdown().await;
}
