//! The story every customer of this product class buys for, end to end
//! with real agents (fanotify; the tests run as root): an employee opens
//! the My Number spreadsheet in the HR folder, copies it to the desktop,
//! renames it and copies it to a USB stick (a tmpfs named a SanDisk stick
//! by a fake sysfs); the admin gets the confidential-folder alarm, and the
//! file trace shows each step with the stick's serial — and, after the
//! stick is copied from on a second PC, that PC too.

use crate::gw::{Gw, Session};
use crate::policy_alarms::{
    FakeSysfs, TmpfsMount, alarms, alerting_config, enroll_agent, run_agent, set_tenant_policy,
};
use crate::support::*;
use mamori_agent::{CollectorSet, RunOptions};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Runs a shell command as another process (the agent ignores its own).
fn sh(script: &str) {
    let out = Command::new("sh").arg("-c").arg(script).output().unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A running agent with only the file collector, watching `home`.
struct Pc {
    state: tempfile::TempDir,
    device: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<mamori_agent::Result<()>>,
}

impl Pc {
    async fn start(
        gw: &Gw,
        admin: &Session,
        name: &str,
        home: &Path,
        sysfs: &Path,
        mounts: &Path,
    ) -> Pc {
        let state = tempfile::tempdir().unwrap();
        let device = enroll_agent(gw, admin, state.path(), name).await.device_id;
        let mut opts = RunOptions::new(state.path().to_owned());
        opts.collectors = "files".parse::<CollectorSet>().unwrap();
        opts.watch_dirs = vec![home.to_owned()];
        opts.platform.sysfs_root = sysfs.to_owned();
        opts.platform.mount_table = mounts.to_owned();
        let (stop, task) = run_agent(opts);
        // The policy (the confidential folder) arrives first...
        wait_for("the agent's policy", Duration::from_secs(30), || async {
            state.path().join("policy.pb").exists().then_some(())
        })
        .await;
        // ...and the collector watches once a probe file is reported.
        let probe = home.join(format!("probe-{name}.txt"));
        wait_for("the file collector", Duration::from_secs(30), || async {
            sh(&format!("echo probe >> '{}'", probe.display()));
            let (_, v) = gw
                .get(
                    admin,
                    &format!("/api/v1/events?device={device}&kind=file_create,file_modify"),
                )
                .await;
            v["events"]
                .as_array()
                .is_some_and(|e| !e.is_empty())
                .then_some(())
        })
        .await;
        Pc {
            state,
            device,
            stop,
            task,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
        drop(self.state);
    }
}

fn file(step: &Value) -> &Value {
    &step["detail"]["file"]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confidential_file_copied_renamed_and_taken_on_a_usb_stick_is_alarmed_and_traced_across_pcs()
 {
    let gw = Gw::start().await;
    let alerting = mamori_alerting::start(alerting_config(&gw, ""))
        .await
        .expect("alerting starts");
    let admin = gw.signup("File Trace KK", "tenant").await;

    let home = TmpfsMount::new();
    let home = home_dirs(home);
    let stick = TmpfsMount::new();
    let sysfs = FakeSysfs::new();
    sysfs.plug("1-4", "0781", "5567", "4C530001", "08", "06");
    sysfs.block("1-4", "sdx");
    let mounts = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        mounts.path(),
        format!("/dev/sdx1 {} vfat rw 0 0\n", stick.0.path().display()),
    )
    .unwrap();
    let hr = home.root().join("hr");
    set_tenant_policy(
        &gw,
        &admin,
        json!({"confidential_folders": [format!("{}/**", hr.display())]}),
    )
    .await;

    let pc1 = Pc::start(
        &gw,
        &admin,
        "pc-hr",
        home.root(),
        sysfs.path(),
        mounts.path(),
    )
    .await;
    let original = hr.join("マイナンバー一覧.xlsx");
    std::fs::write(&original, "個人番号,氏名\n".repeat(10_000)).unwrap();
    let desktop = home.root().join("Desktop");
    let copy = desktop.join("マイナンバー一覧.xlsx");
    let renamed = desktop.join("list.xlsx");
    let on_stick = stick.0.path().join("list.xlsx");
    let acted = Instant::now();
    sh(&format!("cat '{}' > /dev/null", original.display()));
    let alarm = wait_for(
        "the confidential-folder alarm",
        Duration::from_secs(30),
        || async {
            alarms(&gw, &admin)
                .await
                .into_iter()
                .find(|a| a["category"] == "confidential_folder")
        },
    )
    .await;
    eprintln!(
        "open in the HR folder → confidential-folder alarm: {} ms",
        acted.elapsed().as_millis()
    );
    assert_eq!(alarm["device_id"], pc1.device.as_str());
    sh(&format!("cp '{}' '{}'", original.display(), copy.display()));
    sh(&format!("mv '{}' '{}'", copy.display(), renamed.display()));
    sh(&format!(
        "cp '{}' '{}'",
        renamed.display(),
        on_stick.display()
    ));

    // The alarm links to the trace of its file; the trace has every step.
    let link = alarm["file_trace"]
        .as_str()
        .expect("a trace link")
        .to_owned();
    let steps = wait_for(
        "the trace to the stick",
        Duration::from_secs(30),
        || async {
            let (status, v) = gw.get(&admin, &link).await;
            assert_eq!(status, reqwest::StatusCode::OK, "{v}");
            let steps = v["steps"].as_array().cloned().unwrap_or_default();
            steps
                .iter()
                .any(|s| file(s)["medium_serial"] == "4C530001")
                .then_some(steps)
        },
    )
    .await;
    let show = serde_json::to_string_pretty(&steps).unwrap();
    let kinds: Vec<&str> = steps.iter().filter_map(|s| s["kind"].as_str()).collect();
    let at = |kind: &str, path: &Path| {
        steps
            .iter()
            .position(|s| s["kind"] == kind && s["subject"] == path.to_str().unwrap())
            .unwrap_or_else(|| panic!("no {kind} of {} in {show}", path.display()))
    };
    let read = at("file_read", &original);
    let to_desktop = at("file_copy", &original);
    let rename = at("file_rename", &copy);
    let to_stick = at("file_copy", &renamed);
    assert!(
        read < to_desktop && to_desktop < rename && rename < to_stick,
        "{kinds:?}"
    );
    assert_eq!(
        file(&steps[to_desktop])["target_path"],
        copy.to_str().unwrap()
    );
    assert_eq!(
        file(&steps[rename])["target_path"],
        renamed.to_str().unwrap()
    );
    let usb = file(&steps[to_stick]);
    assert_eq!(usb["target_path"], on_stick.to_str().unwrap());
    assert_eq!(usb["removable_media"], true);
    assert_eq!(usb["medium_vendor_id"], "0781");
    assert_eq!(usb["medium_product_id"], "5567");
    assert!(
        usb["process_exe_path"]
            .as_str()
            .unwrap_or_default()
            .ends_with("/cp"),
        "{show}"
    );
    assert_eq!(
        usb["sha256"],
        file(&steps[to_desktop])["sha256"],
        "same content"
    );
    assert!(steps.iter().all(|s| s["device_id"] == pc1.device.as_str()));
    pc1.stop().await;

    // The stick goes to another PC, where the file is copied off it.
    let home2 = home_dirs(TmpfsMount::new());
    let pc2 = Pc::start(
        &gw,
        &admin,
        "pc-home",
        home2.root(),
        sysfs.path(),
        mounts.path(),
    )
    .await;
    let taken = home2.root().join("Desktop/list.xlsx");
    sh(&format!(
        "cp '{}' '{}'",
        on_stick.display(),
        taken.display()
    ));
    let hash = usb["sha256"].as_str().unwrap().to_owned();
    let hex = hex::encode(
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &hash).unwrap(),
    );
    let steps = wait_for(
        "the trace to the second PC",
        Duration::from_secs(30),
        || async {
            let (_, v) = gw.get(&admin, &link).await;
            let steps = v["steps"].as_array().cloned().unwrap_or_default();
            steps
                .iter()
                .any(|s| s["device_id"] == pc2.device.as_str())
                .then_some(steps)
        },
    )
    .await;
    let there = steps
        .iter()
        .find(|s| s["device_id"] == pc2.device.as_str())
        .unwrap();
    assert_eq!(there["kind"], "file_copy", "{there}");
    assert_eq!(file(there)["target_path"], taken.to_str().unwrap());
    assert_eq!(file(there)["medium_serial"], "4C530001");
    // The same trace starts from the content alone.
    let (status, by_hash) = gw
        .get(&admin, &format!("/api/v1/files/trace?sha256={hex}"))
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{by_hash}");
    assert!(by_hash["steps"].as_array().unwrap().len() >= 4, "{by_hash}");
    // A bad start is named.
    let (status, bad) = gw.get(&admin, "/api/v1/files/trace?sha256=xyz").await;
    assert_eq!(status, reqwest::StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    assert!(
        bad["error"]["message"].as_str().unwrap().contains("sha256"),
        "{bad}"
    );
    pc2.stop().await;

    // Another tenant sees none of it.
    let other = gw.signup("Other KK", "tenant").await;
    let (status, v) = gw
        .get(&other, &format!("/api/v1/files/trace?sha256={hex}"))
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{v}");
    assert_eq!(v["steps"], json!([]));
    alerting.shutdown().await;
}

/// A home on its own tmpfs, with the folders of the story.
struct Home(TmpfsMount);

impl Home {
    fn root(&self) -> &Path {
        self.0.0.path()
    }
}

fn home_dirs(mount: TmpfsMount) -> Home {
    for d in ["hr", "Desktop"] {
        std::fs::create_dir_all(mount.0.path().join(d)).unwrap();
    }
    Home(mount)
}

/// An agent without root may open fanotify but not mark a file system: it
/// keeps running and tells the server that this PC's file operations are
/// not watched, and where. An auditor must not read "no file operations"
/// as "none happened".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_root_the_file_collector_says_what_it_cannot_watch() {
    use std::os::unix::process::CommandExt;
    const NOBODY: u32 = 65534;
    let gw = Gw::start().await;
    let admin = gw.signup("Unprivileged KK", "tenant").await;
    let home = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let enrolled = enroll_agent(&gw, &admin, state.path(), "nonroot").await;
    let chown = Command::new("chown")
        .arg("-R")
        .arg(format!("{NOBODY}:{NOBODY}"))
        .arg(state.path())
        .status()
        .unwrap();
    assert!(chown.success());
    // The build's directory may be closed to other users (under /root).
    let exe = state.path().join("mamori-agent");
    std::fs::copy(crate::crash::bin("mamori-agent"), &exe).unwrap();
    let _agent = Proc(
        Command::new(&exe)
            .args(["run", "--collectors", "files", "--watch-dir"])
            .arg(home.path())
            .arg("--state-dir")
            .arg(state.path())
            .uid(NOBODY)
            .gid(NOBODY)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let warning = wait_for("the collector warning", Duration::from_secs(30), || async {
        let (_, v) = gw
            .get(&admin, "/api/v1/events?kind=collector_warning")
            .await;
        v["events"].as_array().and_then(|e| e.first().cloned())
    })
    .await;
    assert_eq!(warning["device_id"], enrolled.device_id, "{warning}");
    assert_eq!(
        warning["subject"],
        home.path().to_str().unwrap(),
        "{warning}"
    );
    let w = &warning["detail"]["collector_warning"];
    assert_eq!(w["collector"], "files", "{warning}");
    let message = w["message"].as_str().unwrap();
    assert!(
        message.starts_with("cannot watch file operations here") && message.contains("needs root"),
        "{message}"
    );
    // Said once, not at every look at the watched folders: a mount makes
    // the collector look again.
    let mount = crate::policy_alarms::TmpfsMount::new();
    tokio::time::sleep(Duration::from_secs(3)).await;
    drop(mount);
    let (_, v) = gw
        .get(&admin, "/api/v1/events?kind=collector_warning")
        .await;
    assert_eq!(v["events"].as_array().map(Vec::len), Some(1), "{v}");
}
