//! Installed software, end to end: a tiny .deb the test builds with
//! `dpkg-deb` is installed and removed with the real `dpkg`, in a dpkg root
//! of the test's own (`dpkg --root`, so this machine's packages are not
//! touched), and the agent's software collector reports both; the
//! installation is a "new app" alarm, the packages already installed when
//! the agent first looked (the PC's inventory) are not.

use crate::gw::Gw;
use crate::policy_alarms::{alarms, alerting_config, enroll_agent, past_learning, run_agent};
use crate::support::*;
use mamori_agent::{CollectorSet, RunOptions};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn dpkg(root: &Path, args: &[&str]) {
    let out = Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .arg("--force-script-chrootless")
        .args(args)
        .output()
        .expect("dpkg runs");
    assert!(
        out.status.success(),
        "dpkg {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_installed_and_removed_with_dpkg_is_reported_with_version_and_publisher() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let admin_dir = root.join("var/lib/dpkg");
    for sub in ["info", "updates", "triggers"] {
        std::fs::create_dir_all(admin_dir.join(sub)).unwrap();
    }
    // One package installed before the agent looks: the inventory.
    std::fs::write(
        admin_dir.join("status"),
        "Package: already-there\nStatus: install ok installed\nVersion: 2.0\n\
         Maintainer: Someone <a@example.org>\nArchitecture: all\nDescription: old\n\n",
    )
    .unwrap();
    std::fs::write(admin_dir.join("available"), "").unwrap();
    let pkg = dir.path().join("pkg");
    std::fs::create_dir_all(pkg.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(pkg.join("usr/share/mamori-test-tool")).unwrap();
    std::fs::write(
        pkg.join("DEBIAN/control"),
        "Package: mamori-test-tool\nVersion: 1.0-1\nArchitecture: all\n\
         Maintainer: Mamori Tests <tests@mamori.example>\nDescription: a package the tests install\n",
    )
    .unwrap();
    std::fs::write(pkg.join("usr/share/mamori-test-tool/readme"), "hi\n").unwrap();
    let deb = dir.path().join("mamori-test-tool.deb");
    let built = Command::new("dpkg-deb")
        .arg("--build")
        .arg(&pkg)
        .arg(&deb)
        .output()
        .expect("dpkg-deb runs");
    assert!(built.status.success(), "{built:?}");

    let gw = Gw::start().await;
    let alerting = mamori_alerting::start(alerting_config(&gw, ""))
        .await
        .expect("alerting starts");
    let admin = gw.signup("Software KK", "tenant").await;
    // Past its learning period: new apps alarm.
    past_learning(&gw, &admin).await;
    let state = tempfile::tempdir().unwrap();
    enroll_agent(&gw, &admin, state.path(), "software-test").await;
    let mut opts = RunOptions::new(state.path().to_owned());
    opts.collectors = "software".parse::<CollectorSet>().unwrap();
    opts.platform.dpkg_status = admin_dir.join("status");
    opts.software_poll = Duration::from_millis(100);
    let (stop_tx, agent) = run_agent(opts);
    wait_for("the first look", Duration::from_secs(10), || async {
        state.path().join("software.json").exists().then_some(())
    })
    .await;

    dpkg(&root, &["-i", deb.to_str().unwrap()]);
    let installed = wait_for("the installation", Duration::from_secs(30), || async {
        let (_, v) = gw
            .get(&admin, "/api/v1/events?kind=software_installed")
            .await;
        v["events"].as_array().and_then(|e| {
            e.iter()
                .find(|e| e["subject"] == "mamori-test-tool")
                .cloned()
        })
    })
    .await;
    assert_ne!(
        installed["detail"]["software"]["inventory"], true,
        "{installed}"
    );
    let sw = &installed["detail"]["software"];
    assert_eq!(sw["version"], "1.0-1");
    assert_eq!(sw["publisher"], "Mamori Tests <tests@mamori.example>");
    let alarm = wait_for("the new-app alarm", Duration::from_secs(20), || async {
        alarms(&gw, &admin)
            .await
            .into_iter()
            .find(|a| a["category"] == "new_app")
    })
    .await;
    assert_eq!(
        alarm["summary"], "New app installed: mamori-test-tool 1.0-1",
        "{alarm}"
    );

    dpkg(&root, &["-r", "mamori-test-tool"]);
    wait_for("the removal", Duration::from_secs(30), || async {
        let (_, v) = gw.get(&admin, "/api/v1/events?kind=software_removed").await;
        v["events"]
            .as_array()
            .and_then(|e| e.first().cloned())
            .filter(|e| e["subject"] == "mamori-test-tool")
    })
    .await;
    let (_, all) = gw
        .get(&admin, "/api/v1/events?kind=software_installed")
        .await;
    let installs: Vec<&str> = all["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["subject"].as_str().unwrap())
        .collect();
    assert_eq!(
        installs
            .iter()
            .filter(|s| **s == "mamori-test-tool")
            .count(),
        1,
        "reported once: {all}"
    );
    assert!(installs.contains(&"already-there"), "the inventory: {all}");
    let new_apps: Vec<Value> = alarms(&gw, &admin)
        .await
        .into_iter()
        .filter(|a| a["category"] == "new_app")
        .collect();
    assert_eq!(
        new_apps.len(),
        1,
        "the inventory is no new app: {new_apps:?}"
    );
    alerting.shutdown().await;

    let _ = stop_tx.send(());
    agent.await.unwrap().unwrap();
}
