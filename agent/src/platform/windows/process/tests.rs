//! The Windows process collector against real processes (under Wine here:
//! the Toolhelp snapshot, `OpenProcess`, `QueryFullProcessImageNameW` and
//! `TerminateProcess` work there).

use std::process::{Child, Command};
use std::time::Instant;

use mamori_proto::agent::v1::banned_app::Action as BanAction;
use mamori_proto::agent::v1::process_event::Action;
use mamori_proto::agent::v1::{BannedApp, Event, PolicyUpdate, ProcessEvent, event::Kind};

use super::*;
use crate::sink::testing::{sink_in, spooled};

/// A copy of this system's `ping.exe` under a name no other process has
/// (`ping -n N 127.0.0.1` waits about N-1 seconds).
fn unique_ping(dir: &std::path::Path) -> std::path::PathBuf {
    let system = std::env::var_os("SystemRoot").map_or_else(
        || std::path::PathBuf::from(r"C:\Windows"),
        std::path::PathBuf::from,
    );
    let exe = dir.join(format!("mamori-test-{}.exe", uuid::Uuid::new_v4().simple()));
    std::fs::copy(system.join(r"System32\PING.EXE"), &exe).unwrap();
    exe
}

fn ping(exe: &std::path::Path, seconds: u32) -> Child {
    Command::new(exe)
        .args(["-n", &seconds.to_string(), "127.0.0.1"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

fn process_events(events: &[Event], exe: &std::path::Path) -> Vec<ProcessEvent> {
    with_users(events, exe)
        .into_iter()
        .map(|(_, p)| p)
        .collect()
}

/// The process events of `exe`, each with its user.
fn with_users(events: &[Event], exe: &std::path::Path) -> Vec<(String, ProcessEvent)> {
    let name = exe.file_name().unwrap().to_string_lossy().to_lowercase();
    events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(Kind::Process(p)) if p.exe_path.to_lowercase().ends_with(&name) => {
                Some((e.os_user.clone(), p.clone()))
            }
            _ => None,
        })
        .collect()
}

async fn wait_for(
    spool: &crate::sink::SharedSpool,
    exe: &std::path::Path,
    done: impl Fn(&[ProcessEvent]) -> bool,
) -> Vec<ProcessEvent> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found = process_events(&spooled(spool), exe);
        if done(&found) {
            return found;
        }
        assert!(Instant::now() < deadline, "saw only {found:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_start_and_its_stop_are_reported_with_path_hash_and_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let (sink, spool) = sink_in(dir.path());
    let task = tokio::spawn(Box::new(ProcessCollector::new()).run(sink));
    tokio::time::sleep(POLL_INTERVAL * 2).await;

    let exe = unique_ping(dir.path());
    let mut child = ping(&exe, 2);
    let found = wait_for(&spool, &exe, |f| {
        f.iter().any(|p| p.action == Action::Stop as i32)
    })
    .await;
    child.wait().unwrap();
    task.abort();

    let start = found
        .iter()
        .find(|p| p.action == Action::Start as i32)
        .unwrap();
    assert_eq!(start.pid, child.id());
    assert!(
        start.exe_path.eq_ignore_ascii_case(&exe.to_string_lossy())
            || start
                .exe_path
                .to_lowercase()
                .ends_with(&exe.file_name().unwrap().to_string_lossy().to_lowercase()),
        "{} vs {}",
        start.exe_path,
        exe.display()
    );
    let content = std::fs::read(&exe).unwrap();
    use sha2::Digest;
    assert_eq!(start.exe_sha256, sha2::Sha256::digest(&content).to_vec());
    assert_eq!(start.parent_pid, std::process::id());
    let stop = found
        .iter()
        .find(|p| p.action == Action::Stop as i32)
        .unwrap();
    assert_eq!(stop.pid, start.pid);
    assert_eq!(stop.exit_code, 0);
}

#[tokio::test]
async fn a_banned_app_is_terminated_as_it_starts() {
    let dir = tempfile::tempdir().unwrap();
    let (sink, spool) = sink_in(dir.path());
    let exe = unique_ping(dir.path());
    let policy = Arc::new(
        PolicyState::in_memory(PolicyUpdate {
            revision: 7,
            banned_apps: vec![BannedApp {
                label: "test".into(),
                // By name, in another case than the file's.
                name: exe.file_name().unwrap().to_string_lossy().to_uppercase(),
                action: BanAction::Kill as i32,
                ..Default::default()
            }],
            ..Default::default()
        })
        .unwrap(),
    );
    let task = tokio::spawn(Box::new(ProcessCollector::new().enforcing(policy)).run(sink));
    tokio::time::sleep(POLL_INTERVAL * 2).await;

    let started = Instant::now();
    let mut child = ping(&exe, 30);
    let found = wait_for(&spool, &exe, |f| {
        f.iter().any(|p| p.action == Action::Blocked as i32)
    })
    .await;
    let status = child.wait().unwrap();
    task.abort();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a 30 s program was stopped after {:?}",
        started.elapsed()
    );
    assert_eq!(status.code(), Some(1), "terminated with exit code 1");
    let blocked = found
        .iter()
        .find(|p| p.action == Action::Blocked as i32)
        .unwrap();
    assert!(
        blocked.blocked_reason.ends_with("killed"),
        "{}",
        blocked.blocked_reason
    );
    assert_eq!(blocked.policy_revision, 7);
    assert!(
        !found.iter().any(|p| p.action == Action::Stop as i32),
        "no stop follows a blocked start"
    );
}

#[test]
fn filetimes_convert_to_unix_microseconds() {
    // 2021-01-01T00:00:00Z.
    let t: u64 = 132_539_328_000_000_000;
    let ft = FILETIME {
        dwLowDateTime: t as u32,
        dwHighDateTime: (t >> 32) as u32,
    };
    assert_eq!(filetime_us(ft), 1_609_459_200_000_000);
    assert_eq!(
        filetime_us(FILETIME {
            dwLowDateTime: 0,
            dwHighDateTime: 0
        }),
        0
    );
}
