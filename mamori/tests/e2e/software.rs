//! Installed software, end to end: a tiny .deb the test builds with
//! `dpkg-deb` is installed and removed with the real `dpkg`, in a dpkg root
//! of the test's own (`dpkg --root`, so this machine's packages are not
//! touched), and the agent's software collector reports both.

use crate::gw::Gw;
use crate::policy_alarms::{enroll_agent, run_agent};
use crate::support::*;
use mamori_agent::{CollectorSet, RunOptions};
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
    std::fs::write(admin_dir.join("status"), "").unwrap();
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
    let admin = gw.signup("Software KK", "tenant").await;
    let state = tempfile::tempdir().unwrap();
    enroll_agent(&gw, &admin, state.path(), "software-test").await;
    let mut opts = RunOptions::new(state.path().to_owned());
    opts.collectors = "software".parse::<CollectorSet>().unwrap();
    opts.dpkg_status = admin_dir.join("status");
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
        v["events"].as_array().and_then(|e| e.first().cloned())
    })
    .await;
    assert_eq!(installed["subject"], "mamori-test-tool", "{installed}");
    let sw = &installed["detail"]["software"];
    assert_eq!(sw["version"], "1.0-1");
    assert_eq!(sw["publisher"], "Mamori Tests <tests@mamori.example>");

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
    assert_eq!(
        all["events"].as_array().map(Vec::len),
        Some(1),
        "reported once: {all}"
    );

    let _ = stop_tx.send(());
    agent.await.unwrap().unwrap();
}
