//! The wtmp collector against fake wtmp files.

use super::*;
use crate::clock::now_us;
use crate::sink::testing::{sink_in, spooled};
use mamori_proto::agent::v1::Event;
use std::io::Write;

/// A recent time, fixed for the whole test run, that record times count from.
fn base() -> i32 {
    static BASE: std::sync::OnceLock<i32> = std::sync::OnceLock::new();
    *BASE.get_or_init(|| (now_us() / 1_000_000) as i32 - 10_000)
}

/// Microseconds since the epoch of `sec` after [`base`].
fn at(sec: i32) -> i64 {
    i64::from(base() + sec) * 1_000_000
}

fn record(ut_type: i16, line: &str, user: &str, host: &str, sec: i32) -> UtmpRecord {
    UtmpRecord {
        ut_type,
        pid: 1000 + sec,
        line: line.into(),
        id: String::new(),
        user: user.into(),
        host: host.into(),
        tv_sec: base() + sec,
        tv_usec: 0,
    }
}

fn append(path: &std::path::Path, records: &[UtmpRecord]) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for r in records {
        f.write_all(&r.encode()).unwrap();
    }
}

fn logons(events: &[Event]) -> Vec<(String, i32, String, String, i64)> {
    events
        .iter()
        .map(|e| match &e.kind {
            Some(Kind::Logon(l)) => (
                e.os_user.clone(),
                l.action,
                l.terminal.clone(),
                l.remote_host.clone(),
                e.occurred_at_us,
            ),
            other => panic!("not a logon: {other:?}"),
        })
        .collect()
}

const LOGON: i32 = Action::Logon as i32;
const LOGOFF: i32 = Action::Logoff as i32;

#[test]
fn first_run_starts_at_the_end_and_reports_new_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let wtmp = dir.path().join("wtmp");
    let pos = dir.path().join("wtmp.offset");
    let (sink, spool) = sink_in(dir.path());
    // History from before the agent, including a session still open.
    append(
        &wtmp,
        &[
            record(wtmp::BOOT_TIME, "~", "reboot", "", 10),
            record(wtmp::USER_PROCESS, "pts/0", "old", "", 11),
            record(wtmp::DEAD_PROCESS, "pts/0", "", "", 12),
            record(wtmp::USER_PROCESS, "pts/1", "bob", "192.0.2.7", 13),
        ],
    );
    let mut tracker = Tracker::open(wtmp.clone(), pos.clone()).unwrap();
    tracker.poll(&sink).unwrap();
    assert!(spooled(&spool).is_empty(), "history is not reported");

    append(
        &wtmp,
        &[
            record(wtmp::USER_PROCESS, "tty1", "alice", ":0", 20),
            // Records for a getty that never had a user: nothing to report.
            record(wtmp::DEAD_PROCESS, "tty2", "", "", 21),
            record(wtmp::DEAD_PROCESS, "pts/1", "", "", 22),
            record(wtmp::DEAD_PROCESS, "tty1", "", "", 23),
        ],
    );
    tracker.poll(&sink).unwrap();
    assert_eq!(
        logons(&spooled(&spool)),
        vec![
            ("alice".into(), LOGON, "tty1".into(), "".into(), at(20)),
            // The logon happened before the agent started; the user comes
            // from re-reading the records before the saved position.
            (
                "bob".into(),
                LOGOFF,
                "pts/1".into(),
                "192.0.2.7".into(),
                at(22)
            ),
            ("alice".into(), LOGOFF, "tty1".into(), "".into(), at(23)),
        ]
    );
}

#[test]
fn restart_neither_repeats_nor_misses() {
    let dir = tempfile::tempdir().unwrap();
    let wtmp = dir.path().join("wtmp");
    let pos = dir.path().join("wtmp.offset");
    let (sink, spool) = sink_in(dir.path());
    append(&wtmp, &[record(wtmp::USER_PROCESS, "pts/0", "old", "", 1)]);
    let mut tracker = Tracker::open(wtmp.clone(), pos.clone()).unwrap();
    append(
        &wtmp,
        &[record(
            wtmp::USER_PROCESS,
            "pts/2",
            "carol",
            "host.example",
            5,
        )],
    );
    tracker.poll(&sink).unwrap();
    drop(tracker);
    // Written while the agent was down.
    append(&wtmp, &[record(wtmp::DEAD_PROCESS, "pts/2", "", "", 6)]);
    let mut tracker = Tracker::open(wtmp.clone(), pos.clone()).unwrap();
    tracker.poll(&sink).unwrap();
    tracker.poll(&sink).unwrap();
    assert_eq!(
        logons(&spooled(&spool)),
        vec![
            (
                "carol".into(),
                LOGON,
                "pts/2".into(),
                "host.example".into(),
                at(5)
            ),
            (
                "carol".into(),
                LOGOFF,
                "pts/2".into(),
                "host.example".into(),
                at(6)
            ),
        ]
    );
}

#[test]
fn truncated_or_replaced_file_is_read_from_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let wtmp = dir.path().join("wtmp");
    let pos = dir.path().join("wtmp.offset");
    let (sink, spool) = sink_in(dir.path());
    append(
        &wtmp,
        &[
            record(wtmp::USER_PROCESS, "pts/0", "a", "", 1),
            record(wtmp::USER_PROCESS, "pts/1", "b", "", 2),
        ],
    );
    let mut tracker = Tracker::open(wtmp.clone(), pos.clone()).unwrap();
    // Truncated in place (`> /var/log/wtmp`), then one new logon.
    std::fs::File::create(&wtmp).unwrap();
    append(&wtmp, &[record(wtmp::USER_PROCESS, "pts/3", "dave", "", 3)]);
    tracker.poll(&sink).unwrap();
    // Rotated: a new file (new inode) in its place.
    std::fs::rename(&wtmp, dir.path().join("wtmp.1")).unwrap();
    append(&wtmp, &[record(wtmp::USER_PROCESS, "pts/4", "erin", "", 4)]);
    tracker.poll(&sink).unwrap();
    let users: Vec<String> = logons(&spooled(&spool)).into_iter().map(|l| l.0).collect();
    assert_eq!(users, vec!["dave", "erin"]);
}

#[test]
fn partial_record_waits_for_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let wtmp = dir.path().join("wtmp");
    let pos = dir.path().join("wtmp.offset");
    let (sink, spool) = sink_in(dir.path());
    std::fs::File::create(&wtmp).unwrap();
    let mut tracker = Tracker::open(wtmp.clone(), pos).unwrap();
    let bytes = record(wtmp::USER_PROCESS, "pts/5", "frank", "", 9).encode();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&wtmp)
        .unwrap();
    f.write_all(&bytes[..100]).unwrap();
    tracker.poll(&sink).unwrap();
    assert!(spooled(&spool).is_empty());
    f.write_all(&bytes[100..]).unwrap();
    tracker.poll(&sink).unwrap();
    assert_eq!(logons(&spooled(&spool))[0].0, "frank");
}

#[test]
fn missing_file_at_first_run_is_read_in_full_once_created() {
    let dir = tempfile::tempdir().unwrap();
    let wtmp = dir.path().join("wtmp");
    let (sink, spool) = sink_in(dir.path());
    let mut tracker = Tracker::open(wtmp.clone(), dir.path().join("wtmp.offset")).unwrap();
    tracker.poll(&sink).unwrap();
    append(&wtmp, &[record(wtmp::USER_PROCESS, "pts/0", "gina", "", 1)]);
    tracker.poll(&sink).unwrap();
    assert_eq!(logons(&spooled(&spool))[0].0, "gina");
}

#[tokio::test]
async fn collector_task_reports_through_the_sink() {
    let dir = tempfile::tempdir().unwrap();
    let wtmp = dir.path().join("wtmp");
    std::fs::File::create(&wtmp).unwrap();
    let (sink, spool) = sink_in(dir.path());
    let collector = Box::new(
        LogonCollector::new(&wtmp, dir.path().join("wtmp.offset"))
            .with_poll_interval(Duration::from_millis(20)),
    );
    let task = tokio::spawn(collector.run(sink));
    tokio::time::sleep(Duration::from_millis(100)).await;
    append(&wtmp, &[record(wtmp::USER_PROCESS, "pts/9", "hank", "", 1)]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while spooled(&spool).is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no logon event");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    task.abort();
    let events = spooled(&spool);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].id.len(), 16);
    assert_eq!(events[0].os_user, "hank");
}

#[test]
fn records_with_implausible_times_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let wtmp = dir.path().join("wtmp");
    std::fs::File::create(&wtmp).unwrap();
    let (sink, spool) = sink_in(dir.path());
    let mut tracker = Tracker::open(wtmp.clone(), dir.path().join("wtmp.offset")).unwrap();
    let mut zeroed = record(wtmp::USER_PROCESS, "pts/0", "old", "", 0);
    zeroed.tv_sec = 0;
    let mut future = record(wtmp::USER_PROCESS, "pts/1", "future", "", 0);
    future.tv_sec = base() + 30 * 24 * 3600;
    append(
        &wtmp,
        &[
            zeroed,
            future,
            record(wtmp::USER_PROCESS, "pts/2", "now", "", 1),
        ],
    );
    tracker.poll(&sink).unwrap();
    let users: Vec<String> = logons(&spooled(&spool)).into_iter().map(|l| l.0).collect();
    assert_eq!(users, vec!["now"]);
}

fn power(events: &[Event]) -> Vec<(Power, u64, i64)> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(Kind::Power(p)) => Some((p.action(), p.asleep_s, e.occurred_at_us)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_shutdown_and_the_next_boot_are_reported_even_when_the_agent_was_already_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let wtmp = dir.path().join("wtmp");
    let pos = dir.path().join("wtmp.offset");
    let (sink, spool) = sink_in(dir.path());
    append(&wtmp, &[record(wtmp::USER_PROCESS, "tty1", "alice", "", 1)]);
    let mut tracker = Tracker::open(wtmp.clone(), pos.clone()).unwrap();
    tracker.poll(&sink).unwrap();
    // The agent stops first; systemd then writes the shutdown record, and
    // the boot record when the PC starts again.
    drop(tracker);
    append(
        &wtmp,
        &[
            record(wtmp::RUN_LVL, "~", "shutdown", "", 5),
            record(wtmp::BOOT_TIME, "~", "reboot", "", 60),
            // A run-level change that is not a shutdown.
            record(wtmp::RUN_LVL, "~", "runlevel", "", 61),
        ],
    );
    let mut tracker = Tracker::open(wtmp, pos).unwrap();
    tracker.poll(&sink).unwrap();
    let events = spooled(&spool);
    assert_eq!(
        power(&events),
        [(Power::Shutdown, 0, at(5)), (Power::Boot, 0, at(60))]
    );
    assert!(events.iter().all(|e| e.os_user.is_empty()), "the system's");
    // The boot ended alice's session (no logoff record was written).
    assert!(tracker.sessions.is_empty());
}

#[test]
fn sleep_is_the_boot_clock_running_ahead_of_the_monotonic_one() {
    let s = Duration::from_secs;
    let mut watch = SleepWatch::default();
    assert_eq!(watch.observe(s(100), s(100)), None, "the first look");
    assert_eq!(watch.observe(s(101), s(101)), None, "awake");
    // A poll held back 3 s by a busy PC: both clocks moved.
    assert_eq!(watch.observe(s(104), s(104)), None);
    // 4 s of sleep is under the minimum; 2 h is not.
    assert_eq!(watch.observe(s(105), s(109)), None);
    assert_eq!(watch.observe(s(106), s(7310)), Some(s(7200)));
    assert_eq!(watch.observe(s(107), s(7311)), None, "once");

    let events = sleep_events(at(7200), s(7200));
    let kinds: Vec<_> = events
        .iter()
        .map(|(when, k)| match k {
            Kind::Power(p) => (p.action(), p.asleep_s, *when),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        [(Power::Suspend, 0, at(0)), (Power::Resume, 7200, at(7200))]
    );
}
