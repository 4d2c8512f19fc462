//! The process collector against real processes (run as root, the kernel
//! connector is used; the polling fallback is tested explicitly).

use super::*;
use crate::sink::testing::{sink_in, spooled};
use mamori_proto::agent::v1::Event;
use mamori_proto::agent::v1::{ProcessEvent, event::Kind, process_event::Action};
use std::path::{Path, PathBuf};

/// Copies a system binary under a name no other process has, so its events
/// can be picked out of everything else happening on the machine.
fn unique_copy(dir: &Path, of: &str) -> PathBuf {
    let path = dir.join(format!("mamori-test-{}", uuid::Uuid::new_v4().simple()));
    std::fs::copy(of, &path).unwrap();
    path
}

fn process_events(events: &[Event], exe: &Path) -> Vec<(Event, ProcessEvent)> {
    let exe = exe.to_string_lossy();
    events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(Kind::Process(p)) if p.exe_path == exe => Some((e.clone(), p.clone())),
            _ => None,
        })
        .collect()
}

/// Runs `exe args` every 200 ms until `done` says the spool has what the
/// test wants (the collector subscribes asynchronously, so the first runs
/// may happen before it listens).
async fn run_until(
    spool: &crate::sink::SharedSpool,
    exe: &Path,
    args: &[&str],
    done: impl Fn(&[(Event, ProcessEvent)]) -> bool,
) -> Vec<(Event, ProcessEvent)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let status = tokio::process::Command::new(exe)
            .args(args)
            .status()
            .await
            .unwrap();
        assert!(status.code().is_some());
        tokio::time::sleep(Duration::from_millis(200)).await;
        let found = process_events(&spooled(spool), exe);
        if done(&found) {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no event for {}",
            exe.display()
        );
    }
}

fn sha256_of(path: &Path) -> Vec<u8> {
    let never = std::sync::atomic::AtomicBool::new(false);
    crate::collector::process::hash::sha256(&mut std::fs::File::open(path).unwrap(), &never)
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn exec_and_exit_are_reported_with_hash_and_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let exe = unique_copy(dir.path(), "/bin/false");
    let (sink, spool) = sink_in(dir.path());
    let task = tokio::spawn(Box::new(ProcessCollector::new()).run(sink));

    // A start read from /proc in time has the command line (one named by
    // the exec witness after the process is gone has not).
    let read = |p: &ProcessEvent| p.action == Action::Start as i32 && !p.command_line.is_empty();
    let found = run_until(&spool, &exe, &["--some", "arg"], |found| {
        found.iter().any(|(_, p)| read(p))
            && found.iter().any(|(_, p)| p.action == Action::Stop as i32)
    })
    .await;
    task.abort();

    let (event, start) = found.iter().find(|(_, p)| read(p)).unwrap();
    assert_eq!(event.id.len(), 16);
    assert_eq!(
        uuid::Uuid::from_slice(&event.id).unwrap().get_version_num(),
        7
    );
    assert!((now_us() - event.occurred_at_us).abs() < 60_000_000);
    assert_eq!(start.exe_sha256.len(), 32);
    assert_eq!(start.exe_sha256, sha256_of(&exe));
    assert_eq!(start.command_line, format!("{} --some arg", exe.display()));
    assert_eq!(start.parent_pid, std::process::id(), "spawned by the test");
    assert_eq!(
        start.parent_exe_path,
        std::env::current_exe().unwrap().to_string_lossy()
    );
    let uid = nix::unistd::getuid().as_raw();
    assert_eq!(start.uid, uid);
    assert_eq!(event.os_user, Users::new("/etc/passwd").name(uid));

    let (stop_event, stop) = found
        .iter()
        .find(|(_, p)| p.action == Action::Stop as i32 && p.pid == start.pid)
        .expect("the stop of the same process");
    assert_eq!(stop.exit_code, 1, "false exits with 1");
    assert_eq!(stop_event.os_user, event.os_user);
    assert!(stop_event.occurred_at_us >= event.occurred_at_us);
}

#[tokio::test]
async fn polling_fallback_sees_new_processes() {
    let dir = tempfile::tempdir().unwrap();
    let exe = unique_copy(dir.path(), "/bin/sleep");
    let (sink, spool) = sink_in(dir.path());
    let task = tokio::spawn(Box::new(ProcessCollector::polling()).run(sink));
    tokio::time::sleep(Duration::from_millis(100)).await;

    let found = run_until(&spool, &exe, &["0.6"], |found| !found.is_empty()).await;
    task.abort();
    let (_, start) = &found[0];
    assert_eq!(start.action, Action::Start as i32);
    assert_eq!(start.exe_sha256, sha256_of(&exe));
    assert_eq!(start.command_line, format!("{} 0.6", exe.display()));
}

#[tokio::test]
async fn hash_is_cached_per_file_version() {
    let dir = tempfile::tempdir().unwrap();
    let (sink, spool) = sink_in(dir.path());
    let mut handler = Handler::new(sink, None);
    let mut child = std::process::Command::new("/bin/sleep")
        .arg("5")
        .spawn()
        .unwrap();
    // Pretend the sleeping child exec'd: the first report goes through the
    // hashing thread, the second comes from the cache.
    let pid = child.id();
    handler.on_exec(pid);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while spooled(&spool).is_empty() {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(handler.reporter.cache.lock().unwrap().map.len(), 1);
    handler.on_exec(pid);
    let events = spooled(&spool);
    assert_eq!(events.len(), 2, "the cached hash is reported at once");
    let hashes: Vec<_> = events
        .iter()
        .map(|e| match &e.kind {
            Some(Kind::Process(p)) => p.exe_sha256.clone(),
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(hashes[0], sha256_of(Path::new("/bin/sleep")));
    assert_eq!(hashes[0], hashes[1]);
    child.kill().unwrap();
    child.wait().unwrap();
}

/// A burst of short-lived programs (a shell loop starting `true` 10,000
/// times; each lives about a millisecond, gone before /proc can be read):
/// nearly every start still names its program and user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_short_lived_starts_names_each_program_and_user() {
    const STARTS: usize = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let exe = unique_copy(dir.path(), "/bin/true");
    let (sink, spool) = sink_in(dir.path());
    let task = tokio::spawn(Box::new(ProcessCollector::new()).run(sink));
    // Listening once one start is seen.
    run_until(&spool, &exe, &[], |found| !found.is_empty()).await;
    let before = process_events(&spooled(&spool), &exe).len();
    let script = format!(
        "i=0; while [ $i -lt {STARTS} ]; do '{}'; i=$((i+1)); done",
        exe.display()
    );
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&script)
        .status()
        .await
        .unwrap();
    assert!(status.success());
    tokio::time::sleep(Duration::from_secs(2)).await;
    task.abort();
    let user = Users::new("/etc/passwd").name(nix::unistd::getuid().as_raw());
    let named = process_events(&spooled(&spool), &exe)
        .into_iter()
        .skip(before)
        .filter(|(e, p)| p.action == Action::Start as i32 && e.os_user == user)
        .count();
    let share = named as f64 / STARTS as f64;
    eprintln!(
        "{named} of {STARTS} short-lived starts named their program and user ({:.2} %)",
        100.0 * share
    );
    assert!(share >= 0.999, "{named} of {STARTS}");
}
