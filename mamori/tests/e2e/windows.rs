//! The Windows agent (`mamori-agent.exe`, cross-built) under Wine against
//! the real server on loopback: it enrolls, its process and file events
//! reach PostgreSQL, a banned app started in the Wine prefix is terminated
//! and alarmed, and a kill -9 mid-stream loses and duplicates nothing.
//!
//! scripts/test.sh builds the agent for x86_64-pc-windows-gnu and prepares
//! the prefix (scripts/wine-prefix.sh); it passes them as
//! `MAMORI_TEST_WINDOWS_AGENT` and `MAMORI_TEST_WINE_PREFIX`.

use crate::gw::{Gw, Session};
use crate::policy_alarms::{alarms, alerting_config, set_tenant_policy};
use crate::support::*;
use mamori_proto::EventKind;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The Wine prefix and the agent built for Windows.
struct Wine {
    prefix: PathBuf,
    agent: PathBuf,
    /// This test's directory on the prefix's C: drive.
    dir: tempfile::TempDir,
}

impl Wine {
    fn from_env() -> Self {
        let var = |name: &str| {
            PathBuf::from(std::env::var_os(name).unwrap_or_else(|| {
                panic!("{name} is not set: run the tests with scripts/test.sh, which builds the Windows agent and its Wine prefix")
            }))
        };
        let prefix = var("MAMORI_TEST_WINE_PREFIX");
        let agent = var("MAMORI_TEST_WINDOWS_AGENT");
        assert!(agent.exists(), "{} is missing", agent.display());
        let dir = tempfile::Builder::new()
            .prefix("mamori-test-")
            .tempdir_in(prefix.join("drive_c"))
            .unwrap();
        Wine { prefix, agent, dir }
    }

    /// `wine PROGRAM` in the prefix, quiet.
    fn cmd(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("wine");
        c.arg(program)
            .env("WINEPREFIX", &self.prefix)
            .env("WINEDEBUG", "-all")
            .stdin(Stdio::null());
        c
    }

    /// A directory of this test's, created, and its Windows path.
    fn mkdir(&self, name: &str) -> (PathBuf, String) {
        let path = self.dir.path().join(name);
        std::fs::create_dir_all(&path).unwrap();
        let win = self.windows_path(&path);
        (path, win)
    }

    /// `C:\...` for a path under the prefix's drive_c.
    fn windows_path(&self, path: &Path) -> String {
        let rel = path.strip_prefix(self.prefix.join("drive_c")).unwrap();
        format!("C:\\{}", rel.to_str().unwrap().replace('/', "\\"))
    }

    /// A copy of the prefix's ping.exe named `name`; `ping -n N` waits
    /// about N-1 seconds.
    fn program(&self, name: &str) -> (PathBuf, String) {
        let (bin, _) = self.mkdir("bin");
        let path = bin.join(name);
        std::fs::copy(self.prefix.join("drive_c/windows/system32/ping.exe"), &path).unwrap();
        let win = self.windows_path(&path);
        (path, win)
    }

    fn enroll(&self, server: &str, token: &str, state: &str) {
        let out = self
            .cmd(&self.agent)
            .args(["enroll", "--server", server, "--state-dir", state])
            .args(["--machine-id", &format!("wine-{}", uuid::Uuid::new_v4())])
            .env("MAMORI_ENROLLMENT_TOKEN", token)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "enrollment under Wine failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `mamori-agent.exe run` with the process and file collectors, for
    /// `pc`; its log appended to `pc`'s.
    fn run_agent(&self, pc: &EnrolledPc) -> Proc {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&pc.log)
            .unwrap();
        Proc(
            self.cmd(&self.agent)
                .args([
                    "run",
                    "--collectors",
                    "process,files",
                    "--batch-max-events",
                    "5",
                ])
                .args(["--state-dir", &pc.state, "--watch-dir", &pc.watch])
                .env(
                    "RUST_LOG",
                    std::env::var("MAMORI_TEST_WINE_LOG").unwrap_or_else(|_| "info".into()),
                )
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        )
    }

    /// A state and a watched directory in the prefix, enrolled in
    /// `admin`'s tenant.
    fn enrolled(&self, gw: &Gw, admin: &Session) -> EnrolledPc {
        let (state_dir, state) = self.mkdir("state");
        let (watch_dir, watch) = self.mkdir("watch");
        self.enroll(
            &gw.stack.url(),
            admin.enrollment_token.as_deref().unwrap(),
            &state,
        );
        let logs = tempfile::tempdir().unwrap();
        let log = logs.path().join("agent.log");
        EnrolledPc {
            _print: LogOnPanic(log.clone()),
            _logs: logs,
            state_dir,
            state,
            watch_dir,
            watch,
            log,
        }
    }
}

/// An enrolled agent installation in the prefix (Linux and Windows paths)
/// and its log, printed if the test fails.
struct EnrolledPc {
    state_dir: PathBuf,
    state: String,
    watch_dir: PathBuf,
    watch: String,
    log: PathBuf,
    _print: LogOnPanic,
    _logs: tempfile::TempDir,
}

/// Prints the agent's log when the test fails.
struct LogOnPanic(PathBuf);

impl Drop for LogOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.0).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- the agent's log (last lines) ---");
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// Events of `kind` in the tenant, by subject, oldest first.
async fn events(gw: &Gw, admin: &Session, kind: &str) -> Vec<serde_json::Value> {
    let (_, v) = gw
        .get(admin, &format!("/api/v1/events?kind={kind}&limit=500"))
        .await;
    let mut e = v["events"].as_array().cloned().unwrap_or_default();
    e.reverse();
    e
}

/// A number in the event's JSON (64-bit ones are strings there; zero is
/// left out).
fn num(v: &serde_json::Value) -> i64 {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0)
}

/// The id of the tenant's device once it is online; it says it runs
/// Windows.
async fn online(gw: &Gw, admin: &Session) -> String {
    let device = wait_for(
        "the Windows agent online",
        Duration::from_secs(60),
        || async {
            let (_, d) = gw.get(admin, "/api/v1/devices").await;
            d["devices"]
                .as_array()
                .and_then(|d| d.iter().find(|d| d["status"] == "online").cloned())
                .map(|d| d["id"].as_str().unwrap().to_owned())
        },
    )
    .await;
    let (_, d) = gw.get(admin, &format!("/api/v1/devices/{device}")).await;
    assert!(
        d["os_name"]
            .as_str()
            .unwrap_or_default()
            .contains("Windows"),
        "{d}"
    );
    device
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_windows_agent_under_wine_reports_processes_and_files_and_kills_a_banned_app() {
    let wine = Wine::from_env();
    let gw = Gw::start().await;
    let alerting = mamori_alerting::start(alerting_config(&gw, ""))
        .await
        .expect("alerting starts");
    let admin = gw.signup("Wine KK", "tenant").await;
    crate::gateway::verify(&gw, &admin).await;
    let saved = set_tenant_policy(
        &gw,
        &admin,
        serde_json::json!({"banned_apps": [
            {"name": "winny", "action": "kill"},
            {"name": "vinny", "action": "block"},
        ]}),
    )
    .await;
    assert!(saved["revision"].as_i64().is_some(), "{saved}");

    let pc = wine.enrolled(&gw, &admin);
    let (state_dir, watch_dir) = (&pc.state_dir, &pc.watch_dir);
    let _agent = wine.run_agent(&pc);
    let device = online(&gw, &admin).await;
    // Wine refuses ETW: the process and file sources' degraded modes are
    // facts of the device (its hellos say so, the device record shows it).
    let degraded = wait_for(
        "the degraded modes on the device",
        Duration::from_secs(30),
        || async {
            let (_, d) = gw.get(&admin, &format!("/api/v1/devices/{device}")).await;
            d["degraded"]
                .as_str()
                .filter(|s| {
                    s.contains("process: Toolhelp polling every 250 ms")
                        && s.contains("files: ReadDirectoryChangesW")
                })
                .map(str::to_owned)
        },
    )
    .await;
    assert!(degraded.contains("ETW"), "{degraded}");

    // The policy reaches the agent (and is kept for offline enforcement).
    wait_for("the policy on disk", Duration::from_secs(30), || async {
        state_dir.join("policy.pb").exists().then_some(())
    })
    .await;

    // A program started in the prefix: a start with its Windows path and
    // the SHA-256 of its image, then its stop.
    let name = format!("mamori-ping-{}.exe", uuid::Uuid::new_v4().simple());
    let (exe, exe_win) = wine.program(&name);
    let status = wine
        .cmd(&exe)
        .args(["-n", "3", "127.0.0.1"])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let stop = wait_for("the program's stop", Duration::from_secs(30), || async {
        events(&gw, &admin, "process_stop")
            .await
            .into_iter()
            .find(|e| {
                e["subject"]
                    .as_str()
                    .is_some_and(|s| s.eq_ignore_ascii_case(&exe_win))
            })
    })
    .await;
    assert_eq!(num(&stop["detail"]["process"]["exit_code"]), 0, "{stop}");
    let start = events(&gw, &admin, "process_start")
        .await
        .into_iter()
        .find(|e| {
            e["subject"]
                .as_str()
                .is_some_and(|s| s.eq_ignore_ascii_case(&exe_win))
        })
        .unwrap_or_else(|| panic!("no start of {exe_win}"));
    use base64::Engine;
    use sha2::Digest;
    let sha = base64::engine::general_purpose::STANDARD
        .encode(sha2::Sha256::digest(std::fs::read(&exe).unwrap()));
    assert_eq!(
        start["detail"]["process"]["exe_sha256"].as_str(),
        Some(sha.as_str()),
        "{start}"
    );
    assert_eq!(start["device_id"].as_str(), Some(device.as_str()));
    // Its user from its token, and its command line.
    let user = start["os_user"].as_str().unwrap_or_default();
    assert!(user.contains('\\'), "DOMAIN\\name: {start}");
    let command_line = start["detail"]["process"]["command_line"]
        .as_str()
        .unwrap_or_default();
    assert!(command_line.contains("-n 3"), "{start}");

    // winny.exe is banned: terminated as it starts, alarmed once.
    let (winny, winny_win) = wine.program("winny.exe");
    let started = Instant::now();
    // (`wine` reports 0 for a program another process terminated: the
    // exit code is checked by the Windows unit test.)
    wine.cmd(&winny)
        .args(["-n", "60", "127.0.0.1"])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(20),
        "a 60 s program was stopped after {took:?}"
    );
    eprintln!("winny.exe stopped after {took:?}");
    let alarm = wait_for("the banned-app alarm", Duration::from_secs(30), || async {
        alarms(&gw, &admin).await.into_iter().find(|a| {
            a["category"] == "banned_app"
                && a["summary"].as_str().is_some_and(|s| s.contains("winny"))
        })
    })
    .await;
    assert_eq!(alarm["count"], 1);
    let blocked = wait_for("the blocked start", Duration::from_secs(30), || async {
        events(&gw, &admin, "process_blocked")
            .await
            .into_iter()
            .next()
    })
    .await;
    assert!(
        blocked["subject"]
            .as_str()
            .unwrap()
            .eq_ignore_ascii_case(&winny_win),
        "{blocked}"
    );
    let reason = blocked["detail"]["process"]["blocked_reason"]
        .as_str()
        .unwrap();
    assert!(reason.contains("killed"), "{reason}");

    // vinny.exe has a block rule, but this agent does not run from below
    // Program Files: no launch block (a user could replace the debugger),
    // the rule is enforced by kill on start. (The service's blocks are
    // tested with the MSI.)
    let ifeo =
        r"HKLM\SOFTWARE\Microsoft\Windows NT\CurrentVersion\Image File Execution Options\vinny.exe";
    assert_eq!(reg_value(&wine, ifeo, "Debugger"), None);
    // Nor is a copy of the agent run with `blocked` taken for a refusal.
    let (fake_path, fake) = wine.program("mamori-agent.exe");
    std::fs::copy(&wine.agent, &fake_path).unwrap();
    let (_, vinny_win) = wine.program("vinny.exe");
    let ran = wine
        .cmd(&fake)
        .args(["blocked", &vinny_win])
        .output()
        .unwrap();
    assert_eq!(ran.status.code(), Some(1), "{ran:?}");

    // A file written and renamed in the watched folder (by a Linux process:
    // Wine's ReadDirectoryChangesW sees it through inotify).
    let report = watch_dir.join("report.txt");
    std::fs::write(&report, b"quarterly figures").unwrap();
    let report_win = wine.windows_path(&report);
    let created = wait_for("the file's creation", Duration::from_secs(30), || async {
        events(&gw, &admin, "file_create")
            .await
            .into_iter()
            .find(|e| e["subject"] == report_win.as_str())
    })
    .await;
    assert_eq!(
        num(&created["detail"]["file"]["size_bytes"]),
        17,
        "{created}"
    );
    let renamed = watch_dir.join("final.txt");
    std::fs::rename(&report, &renamed).unwrap();
    let rename = wait_for("the rename", Duration::from_secs(30), || async {
        events(&gw, &admin, "file_rename")
            .await
            .into_iter()
            .find(|e| e["subject"] == report_win.as_str())
    })
    .await;
    assert_eq!(
        rename["detail"]["file"]["target_path"].as_str(),
        Some(wine.windows_path(&renamed).as_str()),
        "{rename}"
    );
    // The Toolhelp poller says it is the degraded mode.
    let warnings = events(&gw, &admin, "collector_warning").await;
    assert!(
        warnings
            .iter()
            .any(|w| w["detail"]["collector_warning"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("degraded mode"))),
        "{warnings:?}"
    );
    // The copy run with `blocked` earlier was not taken for a refusal (the
    // agent's own start of it was seen: the starts since are in).
    assert!(
        !events(&gw, &admin, "process_blocked")
            .await
            .iter()
            .any(|e| e["subject"].as_str() == Some(vinny_win.as_str())),
        "a copy of the agent faked a refused launch"
    );
    alerting.shutdown().await;
}

/// How many rows of `kind` each subject under `dir` (a Windows path) has.
async fn counts_under(
    env: &mamori_test_support::TestEnv,
    kind: EventKind,
    dir: &str,
) -> HashMap<String, usize> {
    let subjects: Vec<String> =
        sqlx::query_scalar("SELECT subject FROM events WHERE kind = $1 AND subject LIKE $2")
            .bind(kind.code())
            .bind(format!("{}%", dir.replace('\\', "\\\\")))
            .fetch_all(&env.owner)
            .await
            .unwrap();
    let mut counts = HashMap::new();
    for s in subjects {
        *counts.entry(s).or_insert(0) += 1;
    }
    counts
}

/// Waits until the agent's file collector reports a file created in
/// `dir`: a new probe file (`name-N`) every half second until one is.
async fn watching(wine: &Wine, gw: &Gw, dir: &Path, name: &str) {
    let probes = wine.windows_path(&dir.join(name));
    let mut n = 0;
    let mut last = Instant::now() - Duration::from_secs(1);
    wait_for(
        "the file collector to watch",
        Duration::from_secs(60),
        || {
            if last.elapsed() >= Duration::from_millis(500) {
                std::fs::write(dir.join(format!("{name}-{n}")), b"probe").unwrap();
                n += 1;
                last = Instant::now();
            }
            let probes = probes.clone();
            async move {
                let c = counts_under(&gw.stack.env, EventKind::FileCreate, &probes).await;
                (!c.is_empty()).then_some(())
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_windows_agent_mid_stream_loses_and_duplicates_nothing() {
    let wine = Wine::from_env();
    let gw = Gw::start().await;
    let admin = gw.signup("Wine Crash KK", "tenant").await;
    crate::gateway::verify(&gw, &admin).await;
    let pc = wine.enrolled(&gw, &admin);
    let watch_dir = &pc.watch_dir;

    // A file per marker, written in turn; its creation is one event.
    let marker = |i: u32| watch_dir.join(format!("marker-{i:04}.txt"));
    let write = |i: u32| std::fs::write(marker(i), format!("marker {i}")).unwrap();
    let mut agent = wine.run_agent(&pc);
    online(&gw, &admin).await;
    watching(&wine, &gw, watch_dir, "probe-a").await;

    // A file is reported once it has settled (0.5 s) or, unwritten, after
    // 2 s: markers written more than this before the kill were spooled.
    let margin = Duration::from_millis(3000);
    let mut written_at = HashMap::new();
    for i in 0..80u32 {
        written_at.insert(i, Instant::now());
        write(i);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let killed = Instant::now();
    crate::crash::kill9(&mut agent);
    let mut expected: Vec<u32> = (0..80)
        .filter(|i| killed.duration_since(written_at[i]) > margin)
        .collect();
    assert!(expected.len() > 20, "{} markers certain", expected.len());

    let _agent = wine.run_agent(&pc);
    // Once it watches again, more markers.
    watching(&wine, &gw, watch_dir, "probe-b").await;
    for i in 100..120u32 {
        write(i);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    expected.extend(100..120);

    let name = |i: &u32| wine.windows_path(&marker(*i));
    let dir = wine.windows_path(watch_dir);
    let counts = wait_for(
        "every expected marker stored",
        Duration::from_secs(60),
        || async {
            let c = counts_under(&gw.stack.env, EventKind::FileCreate, &dir).await;
            expected
                .iter()
                .all(|i| c.contains_key(&name(i)))
                .then_some(c)
        },
    )
    .await;
    // Late replays would land now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = counts_under(&gw.stack.env, EventKind::FileCreate, &dir).await;
    assert!(after.len() >= counts.len(), "rows never disappear");
    let twice: Vec<_> = after.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
    eprintln!(
        "{} markers certain, {} stored in all",
        expected.len(),
        after.keys().filter(|k| k.contains("marker-")).count()
    );
}

/// A registry value's data as `reg query` prints it (`0x1`, a string as it
/// is), none when it is not there.
fn reg_value(wine: &Wine, key: &str, value: &str) -> Option<String> {
    let out = wine
        .cmd("reg")
        .args(["query", key, "/v", value])
        .output()
        .unwrap();
    if !out.status.success() {
        return None;
    }
    // `    NAME    REG_TYPE    DATA`
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text.lines().find(|l| l.trim_start().starts_with(value))?;
    let after_type = line.split_once("REG_")?.1;
    let data = after_type.split_once(char::is_whitespace)?.1;
    Some(data.trim().to_owned())
}

/// `wine msiexec ARGS` in the prefix; its exit status.
fn msiexec(wine: &Wine, args: &[&str]) -> std::process::ExitStatus {
    wine.cmd("msiexec")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
}

/// Whether the MamoriAgent service is installed (and its state).
fn service_state(wine: &Wine) -> Option<String> {
    let out = wine
        .cmd("sc")
        .args(["query", "MamoriAgent"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    out.status.success().then(|| {
        text.lines()
            .find(|l| l.contains("STATE"))
            .unwrap_or("")
            .trim()
            .to_owned()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_msi_installs_a_service_that_enrolls_and_removal_needs_the_uninstall_code() {
    let wine = Wine::from_env();
    let msi = PathBuf::from(std::env::var_os("MAMORI_TEST_WINDOWS_MSI").expect(
        "MAMORI_TEST_WINDOWS_MSI is not set: run the tests with scripts/test.sh, which builds the MSI",
    ));
    let msi = msi.to_str().unwrap().to_owned();
    let gw = Gw::start().await;
    let admin = gw.signup("Wine MSI KK", "tenant").await;
    crate::gateway::verify(&gw, &admin).await;
    let token = admin.enrollment_token.clone().unwrap();
    // What a run before may have left in the prefix.
    if service_state(&wine).is_some() {
        panic!("the MamoriAgent service is installed already: the Wine prefix is not fresh");
    }

    let server = format!("SERVER={}", gw.stack.url());
    let token_property = format!("TOKEN={token}");
    let status = msiexec(&wine, &["/i", &msi, "/qn", &server, &token_property]);
    assert!(status.success(), "msiexec /i: {status:?}");
    let state = service_state(&wine).expect("the service is installed");
    assert!(state.contains("RUNNING"), "{state}");

    // The service enrolls with the properties, says it runs, and its events
    // reach PostgreSQL.
    online(&gw, &admin).await;
    let program_data = wine.prefix.join("drive_c/ProgramData/Mamori");
    let _log = LogOnPanic(program_data.join("agent.log"));
    wait_for(
        "the service's start event",
        Duration::from_secs(30),
        || async { (!events(&gw, &admin, "agent_started").await.is_empty()).then_some(()) },
    )
    .await;
    // The token is gone from the registry once enrolled.
    let reg = wine
        .cmd("reg")
        .args(["query", r"HKLM\SOFTWARE\Mamori\Agent"])
        .output()
        .unwrap();
    let reg = String::from_utf8_lossy(&reg.stdout).into_owned();
    assert!(reg.contains("Server"), "{reg}");
    wait_for("the token deleted", Duration::from_secs(30), || async {
        let out = wine
            .cmd("reg")
            .args([
                "query",
                r"HKLM\SOFTWARE\Mamori\Agent",
                "/v",
                "EnrollmentToken",
            ])
            .output()
            .unwrap();
        (!out.status.success()).then_some(())
    })
    .await;

    // The boot, from the tick count, once.
    let boots = wait_for("the boot event", Duration::from_secs(30), || async {
        Some(events(&gw, &admin, "boot").await).filter(|b| !b.is_empty())
    })
    .await;
    assert_eq!(boots.len(), 1, "{boots:?}");

    // The security status: the build from the registry; Wine registers no
    // antivirus and no firewall with Security Center, so none is claimed.
    let status = wait_for("the security status", Duration::from_secs(60), || async {
        events(&gw, &admin, "security_status")
            .await
            .into_iter()
            .next()
    })
    .await;
    let status = &status["detail"]["security_status"];
    assert!(
        status["patch_level"]
            .as_str()
            .is_some_and(|p| p.contains("build")),
        "{status}"
    );
    assert!(status.get("antivirus_up_to_date").is_none(), "{status}");

    // Device control becomes Windows's own removable-storage policy, and
    // goes again with the rule.
    let disks = r"HKLM\SOFTWARE\Policies\Microsoft\Windows\RemovableStorageDevices\{53f5630d-b6bf-11d0-94f2-00a0c91efb8b}";
    let cd = r"HKLM\SOFTWARE\Policies\Microsoft\Windows\RemovableStorageDevices\{53f56308-b6bf-11d0-94f2-00a0c91efb8b}";
    set_tenant_policy(
        &gw,
        &admin,
        serde_json::json!({"device_control": {"classes": {"usb_storage": "deny", "cd_dvd": "read_only"}}}),
    )
    .await;
    wait_for(
        "the removable-storage policy",
        Duration::from_secs(30),
        || async {
            (reg_value(&wine, disks, "Deny_Read").as_deref() == Some("0x1")
                && reg_value(&wine, disks, "Deny_Write").as_deref() == Some("0x1")
                && reg_value(&wine, cd, "Deny_Write").as_deref() == Some("0x1"))
            .then_some(())
        },
    )
    .await;
    assert_eq!(
        reg_value(&wine, cd, "Deny_Read"),
        None,
        "read-only CDs stay readable"
    );
    set_tenant_policy(
        &gw,
        &admin,
        serde_json::json!({"device_control": {"classes": {"cd_dvd": "read_only"}}}),
    )
    .await;
    wait_for(
        "USB storage allowed again",
        Duration::from_secs(30),
        || async {
            (reg_value(&wine, disks, "Deny_Read").is_none()
                && reg_value(&wine, disks, "Deny_Write").is_none())
            .then_some(())
        },
    )
    .await;
    assert_eq!(reg_value(&wine, cd, "Deny_Write").as_deref(), Some("0x1"));

    // The web block list becomes the browsers' registry policies.
    set_tenant_policy(
        &gw,
        &admin,
        serde_json::json!({"web": {"block": ["p2p.example", "*.games.example"]}}),
    )
    .await;
    let chrome = r"HKLM\SOFTWARE\Policies\Google\Chrome\URLBlocklist";
    let edge_allow = r"HKLM\SOFTWARE\Policies\Microsoft\Edge\URLAllowlist";
    let firefox = r"HKLM\SOFTWARE\Policies\Mozilla\Firefox\WebsiteFilter\Block";
    wait_for(
        "the browsers' block list",
        Duration::from_secs(30),
        || async {
            (reg_value(&wine, chrome, "1").as_deref() == Some("p2p.example")
                && reg_value(&wine, chrome, "2").as_deref() == Some("games.example"))
            .then_some(())
        },
    )
    .await;
    assert_eq!(
        reg_value(&wine, edge_allow, "1").as_deref(),
        Some(".games.example")
    );
    assert_eq!(
        reg_value(&wine, firefox, "1").as_deref(),
        Some("*://p2p.example/*")
    );

    // The administrator issues an uninstall code; it reaches the PC.
    let (status, issued) = gw
        .post(
            &admin,
            "/api/v1/tenant/uninstall-code",
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{issued}");
    let code = issued["code"].as_str().unwrap().to_owned();
    wait_for(
        "the uninstall code's hash on the PC",
        Duration::from_secs(30),
        || async {
            use prost::Message;
            use sha2::Digest;
            let stored = std::fs::read(program_data.join("policy.pb")).ok()?;
            let policy = mamori_proto::agent::v1::PolicyUpdate::decode(stored.as_slice()).ok()?;
            (policy.uninstall_code_sha256 == sha2::Sha256::digest(code.as_bytes()).to_vec())
                .then_some(())
        },
    )
    .await;

    // Everything the service sent was taken (a batch refused over one
    // implausible time once lost events).
    let log = std::fs::read_to_string(program_data.join("agent.log")).unwrap();
    assert!(!log.contains("server rejected"), "{log}");

    // Without the code, or with another, removal is refused: the service
    // keeps running and says so.
    for attempt in ["", "mmu_not-the-code"] {
        let given = format!("UNINSTALL_CODE={attempt}");
        let status = msiexec(&wine, &["/x", &msi, "/qn", &given]);
        assert!(!status.success(), "removal with {given:?} was allowed");
        let state = service_state(&wine).expect("the service stays installed");
        assert!(state.contains("RUNNING"), "{state}");
    }
    wait_for(
        "the refused removals as events",
        Duration::from_secs(30),
        || async { (events(&gw, &admin, "uninstall_refused").await.len() == 2).then_some(()) },
    )
    .await;

    // A launch block the service wrote goes with the agent (a blocked
    // program must not be left failing on a missing debugger).
    set_tenant_policy(
        &gw,
        &admin,
        serde_json::json!({"banned_apps": [{"name": "limewire", "action": "block"}]}),
    )
    .await;
    let ifeo = r"HKLM\SOFTWARE\Microsoft\Windows NT\CurrentVersion\Image File Execution Options\limewire.exe";
    wait_for(
        "the service's launch block",
        Duration::from_secs(30),
        || async { reg_value(&wine, ifeo, "Debugger").filter(|d| d.contains("Program Files")) },
    )
    .await;
    // Wine's loader ignores the key: the trampoline is run here as Windows
    // would run it instead of limewire.exe; the service reports the
    // refusal as limewire's blocked start, with its command line.
    let (_, limewire) = wine.program("limewire.exe");
    let trampoline = wine
        .cmd(r"C:\Program Files\Mamori\mamori-agent.exe")
        .args(["blocked", &limewire, "-n", "60", "127.0.0.1"])
        .output()
        .unwrap();
    assert_eq!(trampoline.status.code(), Some(1), "{trampoline:?}");
    assert!(
        String::from_utf8_lossy(&trampoline.stderr).contains("blocked by your organisation"),
        "{trampoline:?}"
    );
    let refused = wait_for("the refused launch", Duration::from_secs(30), || async {
        events(&gw, &admin, "process_blocked")
            .await
            .into_iter()
            .find(|e| e["subject"].as_str() == Some(limewire.as_str()))
    })
    .await;
    let reason = refused["detail"]["process"]["blocked_reason"]
        .as_str()
        .unwrap();
    assert!(
        reason.contains("limewire") && reason.contains("before launch"),
        "{reason}"
    );
    assert_eq!(
        refused["detail"]["process"]["command_line"].as_str(),
        Some(format!("{limewire} -n 60 127.0.0.1").as_str()),
        "{refused}"
    );
    // That policy has no web block list: the browsers' lists are gone.
    wait_for(
        "the block list removed",
        Duration::from_secs(30),
        || async { reg_value(&wine, chrome, "1").is_none().then_some(()) },
    )
    .await;

    // With it, the service and the program are gone.
    let given = format!("UNINSTALL_CODE={code}");
    let status = msiexec(&wine, &["/x", &msi, "/qn", &given]);
    assert!(status.success(), "msiexec /x with the code: {status:?}");
    assert_eq!(service_state(&wine), None, "the service is removed");
    assert_eq!(
        reg_value(&wine, ifeo, "Debugger"),
        None,
        "the launch block is lifted"
    );
    assert!(
        !wine
            .prefix
            .join("drive_c/Program Files/Mamori/mamori-agent.exe")
            .exists()
    );
    // (The allowed removal and the stop are spooled, and may not reach the
    // server before the service is gone: the README says so.)
}

/// With a code-signing certificate, the script signs the program before
/// packaging it and the MSI after (Authenticode, checked by
/// osslsigncode against the certificate); without one, nothing is signed.
#[test]
fn the_msi_and_its_program_are_signed_when_a_certificate_is_given() {
    let wine = Wine::from_env();
    let dir = tempfile::tempdir().unwrap();
    let (key, cert) = (dir.path().join("key.pem"), dir.path().join("cert.pem"));
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=Mamori test code signing", "-addext"])
        .arg("extendedKeyUsage=codeSigning")
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let root = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), PathBuf::from)
        .join("..");
    let out = dir.path().join("msi");
    let built = Command::new(root.join("scripts/agent-msi.sh"))
        .arg(&out)
        .env("MAMORI_AGENT_EXE", &wine.agent)
        .env("MAMORI_SIGN_CERT", &cert)
        .env("MAMORI_SIGN_KEY", &key)
        .output()
        .unwrap();
    assert!(built.status.success(), "{built:?}");
    let msi = String::from_utf8(built.stdout).unwrap().trim().to_owned();
    let verify = |file: &Path| {
        Command::new("osslsigncode")
            .args(["verify", "-CAfile"])
            .arg(&cert)
            .arg("-in")
            .arg(file)
            .output()
            .unwrap()
    };
    let checked = verify(Path::new(&msi));
    let text = String::from_utf8_lossy(&checked.stdout).into_owned();
    assert!(checked.status.success(), "{checked:?}");
    assert!(text.contains("Mamori test code signing"), "{text}");
    // The program inside is signed too.
    let files = dir.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    let extracted = Command::new("msiextract")
        .arg("-C")
        .arg(&files)
        .arg(&msi)
        .output()
        .unwrap();
    assert!(extracted.status.success(), "{extracted:?}");
    let exe = walk(&files)
        .into_iter()
        .find(|p| p.file_name().is_some_and(|n| n == "mamori-agent.exe"))
        .expect("the MSI holds mamori-agent.exe");
    assert!(
        verify(&exe).status.success(),
        "the packaged program is signed"
    );
    // The default build (the tests' MSI) carries no signature.
    let unsigned = std::env::var_os("MAMORI_TEST_WINDOWS_MSI").unwrap();
    assert!(!verify(Path::new(&unsigned)).status.success());
}

/// Every file below `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
