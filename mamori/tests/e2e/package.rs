//! The agent as a Debian package, run by a real systemd: the package is
//! built by scripts/agent-deb.sh (from the debug binary) and installed with
//! dpkg on this machine; a systemd of the test's own (PID 1 of a new PID
//! and mount namespace, see [`Systemd`]) runs its unit. `mamori-agent
//! install` enrolls and enables the service, its events (a program start
//! among them) reach PostgreSQL,
//! systemd restarts it when it dies, a plain `systemctl stop` is refused,
//! an upgrade restarts it without the code, and once the tenant has issued
//! an uninstall code, stopping and `dpkg -r` need it; with it, a purge
//! takes everything away and the agent's last events still arrive. Needs
//! root, as dpkg does.

use crate::crash::bin;
use crate::gw::Gw;
use crate::support::*;
use reqwest::StatusCode;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const UNIT: &str = "mamori-agent.service";

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("the command runs");
    assert!(out.status.success(), "{cmd:?} failed:\n{}", text(&out));
    text(&out)
}

fn refused(cmd: &mut Command) -> String {
    let out = cmd.output().expect("the command runs");
    assert!(!out.status.success(), "{cmd:?} succeeded:\n{}", text(&out));
    text(&out)
}

/// A systemd of the test's own: PID 1 of a new PID and mount namespace
/// (`unshare`), with its own /run, and empty directories of the test's
/// over /lib/systemd/system and /etc/systemd/system, so it starts nothing
/// of this machine's (its minimal targets are written here) and the
/// package's unit lands in [`Systemd::units`]. The rest of the file system
/// and the network are this machine's. Commands run in it through
/// `nsenter`; dropping it kills its PID 1, which ends every process in it.
/// Only where this machine's PID 1 is not systemd (this one's is not).
struct Systemd {
    unshare: std::process::Child,
    /// Its PID 1, as this machine numbers it.
    init: i32,
    units: tempfile::TempDir,
    _etc: tempfile::TempDir,
}

impl Systemd {
    async fn start() -> Self {
        assert!(
            !Path::new("/run/systemd/system").exists(),
            "this machine runs systemd as PID 1: a second one in a namespace would share its cgroups"
        );
        assert!(
            Path::new("/lib/systemd/systemd").exists(),
            "no /lib/systemd/systemd: install Debian's systemd package"
        );
        let units = tempfile::tempdir().unwrap();
        for target in [
            "sysinit",
            "basic",
            "multi-user",
            "network",
            "network-online",
            "shutdown",
            "sockets",
            "timers",
            "paths",
            "slices",
            "local-fs",
            "swap",
        ] {
            std::fs::write(
                units.path().join(format!("{target}.target")),
                format!("[Unit]\nDescription=the test's {target}.target\n"),
            )
            .unwrap();
        }
        let etc = tempfile::tempdir().unwrap();
        let script = format!(
            "set -e\n\
             mount -t tmpfs tmpfs /run\n\
             mount --bind '{units}' /usr/lib/systemd/system\n\
             mount --bind '{etc}' /etc/systemd/system\n\
             export container=mamori-test\n\
             exec /lib/systemd/systemd --system --unit=multi-user.target\n",
            units = units.path().display(),
            etc = etc.path().display(),
        );
        let unshare = Command::new("unshare")
            .args([
                "--pid",
                "--fork",
                "--mount",
                "--mount-proc",
                "--propagation",
                "private",
                "/bin/sh",
                "-c",
                &script,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("unshare runs");
        let children = format!("/proc/{0}/task/{0}/children", unshare.id());
        let init = wait_for("systemd's PID 1", Duration::from_secs(10), || async {
            std::fs::read_to_string(&children)
                .ok()?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .await;
        let systemd = Systemd {
            unshare,
            init,
            units,
            _etc: etc,
        };
        wait_for("systemd up", Duration::from_secs(30), || async {
            let out = systemd
                .cmd("systemctl")
                .arg("is-system-running")
                .output()
                .ok()?;
            let state = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            matches!(state.as_str(), "running" | "degraded").then_some(())
        })
        .await;
        systemd
    }

    /// `program`, run in the namespaces.
    fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.args(["-t", &self.init.to_string(), "-m", "-p", "--"])
            .arg(program);
        c
    }

    /// The unit's properties (`systemctl show`).
    fn show(&self) -> HashMap<String, String> {
        run(self.cmd("systemctl").args([
            "show",
            UNIT,
            "-p",
            "ActiveState,SubState,MainPID,NRestarts,WatchdogTimestampMonotonic,RefuseManualStop",
        ]))
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// Waits until the unit is running with a main process other than
    /// `not`; returns that process's id (in the namespace).
    async fn running(&self, what: &str, not: Option<&str>) -> String {
        wait_for(what, Duration::from_secs(30), || async {
            let p = self.show();
            (p["ActiveState"] == "active"
                && p["SubState"] == "running"
                && p["MainPID"] != "0"
                && Some(p["MainPID"].as_str()) != not)
                .then(|| p["MainPID"].clone())
        })
        .await
    }

    fn unit_path(&self) -> PathBuf {
        self.units.path().join(UNIT)
    }
}

impl Drop for Systemd {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.init),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.unshare.wait();
        // The cgroups it made at the top of each hierarchy, once empty.
        fn remove(dir: &Path) {
            if let Ok(entries) = std::fs::read_dir(dir) {
                for e in entries.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        remove(&e.path());
                    }
                }
            }
            let _ = std::fs::remove_dir(dir);
        }
        let mut tops = vec![PathBuf::from("/sys/fs/cgroup")];
        if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
            tops.extend(entries.flatten().map(|e| e.path()));
        }
        for _ in 0..20 {
            let left: Vec<PathBuf> = tops
                .iter()
                .flat_map(|t| [t.join("system.slice"), t.join("init.scope")])
                .filter(|p| p.is_dir())
                .collect();
            if left.is_empty() {
                break;
            }
            left.iter().for_each(|p| remove(p));
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_package_runs_under_systemd_and_stopping_or_removing_it_needs_the_code() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "installing a package needs root (scripts/test.sh runs as root in CI)"
    );
    // What an earlier, interrupted run may have left: its enrollment's
    // policy (which would protect the removal) first, then the package.
    let _ = std::fs::remove_file("/var/lib/mamori-agent/policy.pb");
    let _ = Command::new("dpkg")
        .args(["--purge", "mamori-agent"])
        .output();
    let _ = std::fs::remove_dir_all("/var/lib/mamori-agent");

    let g = Gw::start().await;
    let s = &g.stack;
    let admin = g.signup("Package KK", "tenant").await;
    crate::gateway::verify(&g, &admin).await;
    let token = admin.enrollment_token.clone().unwrap();
    let tenant: uuid::Uuid = admin.tenant_id.as_deref().unwrap().parse().unwrap();
    let count = |kind: mamori_proto::EventKind| async move {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM events WHERE tenant_id = $1 AND kind = $2",
        )
        .bind(tenant)
        .bind(kind.code())
        .fetch_one(&s.env.owner)
        .await
        .unwrap()
    };
    let counts = |kind, n: i64| async move {
        wait_for(
            &format!("{n} × {kind:?}"),
            Duration::from_secs(30),
            || async { (count(kind).await == n).then_some(()) },
        )
        .await;
    };
    use mamori_proto::EventKind::{
        AgentStarted, AgentStopping, UninstallAllowed, UninstallRefused,
    };

    // The package, and an upgrade of it (the same binary, a later version).
    let out = tempfile::tempdir().unwrap();
    // The runner's CARGO_MANIFEST_DIR first (see proto's fuzz test).
    let root = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(
            || env!("CARGO_MANIFEST_DIR").into(),
            std::path::PathBuf::from,
        )
        .join("..");
    let build = |version: Option<&str>| {
        let mut c = Command::new(root.join("scripts/agent-deb.sh"));
        c.arg(out.path())
            .env("MAMORI_AGENT_BIN", bin("mamori-agent"));
        if let Some(v) = version {
            c.env("MAMORI_DEB_VERSION", v);
        }
        let built = run(&mut c);
        let deb = built.lines().last().unwrap().trim().to_owned();
        assert!(deb.ends_with("_amd64.deb"), "{built}");
        deb
    };
    let deb = build(None);
    let fields = run(Command::new("dpkg-deb").args(["--field", &deb]));
    assert!(fields.contains("Package: mamori-agent"), "{fields}");
    let upgrade = build(Some("99.0.0"));

    let systemd = Systemd::start().await;
    let installed = run(systemd.cmd("dpkg").args(["-i", &deb]));
    assert!(
        installed.contains("mamori-agent install --server URL --token TOKEN"),
        "the package says how to enroll:\n{installed}"
    );
    assert!(Path::new("/usr/bin/mamori-agent").exists());
    assert!(systemd.unit_path().exists(), "the unit is installed");
    // Unit syntax and the ExecStart binary, checked offline as well; an
    // unknown or misspelt setting is only a warning there.
    let verified = run(Command::new("systemd-analyze")
        .arg("verify")
        .arg(systemd.unit_path()));
    assert!(
        !verified.contains("ignoring") && !verified.contains("Unknown"),
        "{verified}"
    );

    // One command enrolls and starts the service; systemd sees it ready
    // (Type=notify) and its watchdog fed.
    let enrolled = run(systemd
        .cmd("/usr/bin/mamori-agent")
        .args(["install", "--server", &s.url()])
        .env("MAMORI_ENROLLMENT_TOKEN", &token));
    assert!(enrolled.contains("enrolled as device"), "{enrolled}");
    assert!(enrolled.contains("enabled and running"), "{enrolled}");
    assert!(Path::new("/var/lib/mamori-agent/agent.json").exists());
    let first = systemd.running("the agent's service", None).await;
    let props = systemd.show();
    assert_eq!(props["RefuseManualStop"], "yes");
    assert_ne!(
        props["WatchdogTimestampMonotonic"], "0",
        "the agent feeds the watchdog: {props:?}"
    );
    // It shares the PC's mounts (it remounts media read-only for all).
    let namespaces = run(systemd
        .cmd("readlink")
        .args(["/proc/1/ns/mnt".to_owned(), format!("/proc/{first}/ns/mnt")]));
    let mut ns = namespaces.lines();
    assert_eq!(
        ns.next(),
        ns.next(),
        "the service has no mount namespace of its own"
    );
    counts(AgentStarted, 1).await;
    // A program started on this PC (the namespace's: outside the initial
    // PID namespace the agent polls /proc, the kernel's process connector
    // reporting nothing there) arrives as a process start.
    let bin_dir = tempfile::tempdir().unwrap();
    let exe = crate::agent::marker_program(
        bin_dir.path(),
        &format!("mamori-pkg-{}", uuid::Uuid::new_v4().simple()),
    );
    run(systemd.cmd(&exe).arg("1"));
    wait_for(
        "the packaged agent's process event",
        Duration::from_secs(30),
        || async { (!crate::agent::rows_for(&s.env, &exe).await.is_empty()).then_some(()) },
    )
    .await;

    // The administrator issues an uninstall code; the running agent gets
    // its hash with the policy.
    let (status, issued) = g
        .post(
            &admin,
            "/api/v1/tenant/uninstall-code",
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{issued}");
    let code = issued["code"].as_str().unwrap().to_owned();
    wait_for(
        "the uninstall code's hash on the PC",
        Duration::from_secs(30),
        || async {
            use prost::Message;
            use sha2::Digest;
            let stored = std::fs::read("/var/lib/mamori-agent/policy.pb").ok()?;
            let policy = mamori_proto::agent::v1::PolicyUpdate::decode(stored.as_slice()).ok()?;
            (policy.uninstall_code_sha256 == sha2::Sha256::digest(code.as_bytes()).to_vec())
                .then_some(())
        },
    )
    .await;

    // Stopping it: systemctl refuses, and so does the agent without the code.
    let said = refused(systemd.cmd("systemctl").args(["stop", UNIT]));
    assert!(said.contains("refuse"), "{said}");
    let said = refused(
        systemd
            .cmd("/usr/bin/mamori-agent")
            .arg("stop")
            .env_remove("MAMORI_UNINSTALL_CODE"),
    );
    assert!(said.contains("uninstall code"), "{said}");
    // Nor against another state directory, whose policy has no code.
    let elsewhere = tempfile::tempdir().unwrap();
    refused(
        systemd
            .cmd("/usr/bin/mamori-agent")
            .args(["stop", "--state-dir"])
            .arg(elsewhere.path())
            .env_remove("MAMORI_UNINSTALL_CODE"),
    );
    assert_eq!(systemd.show()["MainPID"], first, "still the same agent");
    counts(UninstallRefused, 1).await;

    // Killed, systemd starts it again.
    run(systemd.cmd("kill").args(["-9", &first]));
    let second = systemd
        .running("the agent started again", Some(&first))
        .await;
    assert_eq!(systemd.show()["NRestarts"], "1");
    counts(AgentStarted, 2).await;

    // An upgrade needs no code and restarts the agent with the new files.
    run(systemd.cmd("dpkg").args(["-i", &upgrade]));
    let third = systemd.running("the upgraded agent", Some(&second)).await;
    let version = run(Command::new("dpkg-query").args(["-W", "-f=${Version}", "mamori-agent"]));
    assert_eq!(version, "99.0.0");
    // ...and the stop it let through was for that restart only.
    assert_eq!(systemd.show()["RefuseManualStop"], "yes");
    let said = refused(systemd.cmd("systemctl").args(["stop", UNIT]));
    assert!(said.contains("refuse"), "{said}");
    counts(AgentStarted, 3).await;
    counts(AgentStopping, 1).await;

    // With the code it stops, and it can be started again.
    let stopped = run(systemd
        .cmd("/usr/bin/mamori-agent")
        .arg("stop")
        .env("MAMORI_UNINSTALL_CODE", &code));
    assert!(stopped.contains("stopped"), "{stopped}");
    assert_eq!(systemd.show()["ActiveState"], "inactive");
    counts(AgentStopping, 2).await;
    counts(UninstallAllowed, 1).await;
    // Stopped already: nothing to do, and no error.
    run(systemd
        .cmd("/usr/bin/mamori-agent")
        .arg("stop")
        .env("MAMORI_UNINSTALL_CODE", &code));
    assert_eq!(
        systemd.show()["RefuseManualStop"],
        "yes",
        "the stop was let through once"
    );
    run(systemd.cmd("systemctl").args(["start", UNIT]));
    systemd
        .running("the agent started by hand", Some(&third))
        .await;
    counts(AgentStarted, 4).await;

    // Without the code, or with another, removal is refused and nothing
    // goes; the policy is on the PC, so this holds offline too.
    for attempt in [None, Some("mmu_not-the-code")] {
        let mut remove = systemd.cmd("dpkg");
        remove
            .args(["-r", "mamori-agent"])
            .env_remove("MAMORI_UNINSTALL_CODE");
        if let Some(c) = attempt {
            remove.env("MAMORI_UNINSTALL_CODE", c);
        }
        let said = refused(&mut remove);
        assert!(said.contains("uninstall code"), "{said}");
        assert!(Path::new("/usr/bin/mamori-agent").exists());
        assert_eq!(systemd.show()["ActiveState"], "active");
    }
    counts(UninstallRefused, 3).await;

    // With it, a purge stops the agent and takes everything away; the
    // agent sent its last events before it went.
    run(systemd
        .cmd("dpkg")
        .args(["--purge", "mamori-agent"])
        .env("MAMORI_UNINSTALL_CODE", &code));
    assert!(!Path::new("/usr/bin/mamori-agent").exists());
    assert!(!systemd.unit_path().exists());
    assert!(
        !Path::new("/var/lib/mamori-agent").exists(),
        "purge forgets the enrollment"
    );
    assert_ne!(systemd.show()["ActiveState"], "active");
    // The second stop's attempt (recorded while the agent was stopped) and
    // the removal's.
    counts(UninstallAllowed, 3).await;
    counts(AgentStopping, 3).await;
    assert_eq!(count(AgentStarted).await, 4);
    assert_eq!(count(UninstallRefused).await, 3);
}
