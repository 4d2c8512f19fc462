use super::*;

fn info(user: &str, terminal: &str, remote: &str) -> SessionInfo {
    SessionInfo {
        user: user.into(),
        terminal: terminal.into(),
        remote_host: remote.into(),
    }
}

fn logon(kind: &Kind) -> (Action, &str, &str) {
    match kind {
        Kind::Logon(e) => (e.action(), e.terminal.as_str(), e.remote_host.as_str()),
        other => panic!("not a logon event: {other:?}"),
    }
}

fn session(reason: u32, session_id: u32) -> Notice {
    Notice::Session { reason, session_id }
}

#[test]
fn session_changes_become_logon_events_with_the_user() {
    let mut t = Tracker::default();
    let alice = |id: u32| (id == 2).then(|| info(r"OFFICE\alice", "RDP-Tcp#0", "LAPTOP-7"));
    let (user, kind) = t.handle(&session(WTS_SESSION_LOGON, 2), 0, alice).unwrap();
    assert_eq!(user, r"OFFICE\alice");
    assert_eq!(logon(&kind), (Action::Logon, "RDP-Tcp#0", "LAPTOP-7"));

    let (user, kind) = t.handle(&session(WTS_SESSION_LOCK, 2), 0, alice).unwrap();
    assert_eq!(
        (user.as_str(), logon(&kind).0),
        (r"OFFICE\alice", Action::Lock)
    );
    let (_, kind) = t.handle(&session(WTS_SESSION_UNLOCK, 2), 0, alice).unwrap();
    assert_eq!(logon(&kind).0, Action::Unlock);

    // At logoff the session is no longer there to ask: the user comes
    // from the logon.
    let (user, kind) = t
        .handle(&session(WTS_SESSION_LOGOFF, 2), 0, |_| None)
        .unwrap();
    assert_eq!(user, r"OFFICE\alice");
    assert_eq!(logon(&kind).0, Action::Logoff);

    // Connects and disconnects are not logons.
    assert!(t.handle(&session(1, 2), 0, alice).is_none());
    assert!(t.handle(&session(3, 2), 0, alice).is_none());
}

#[test]
fn a_session_open_at_start_keeps_its_user_for_the_logoff() {
    let mut t = Tracker::default();
    t.prime(1, info(r"PC\bob", "Console", ""));
    // Services' session 0 has nobody on it: not remembered.
    t.prime(0, info("", "Services", ""));
    let (user, kind) = t
        .handle(&session(WTS_SESSION_LOGOFF, 1), 0, |_| None)
        .unwrap();
    assert_eq!(user, r"PC\bob");
    assert_eq!(logon(&kind), (Action::Logoff, "Console", ""));
    // An unknown session still gets its event, named by its number.
    let (user, kind) = t
        .handle(&session(WTS_SESSION_LOGOFF, 9), 0, |_| None)
        .unwrap();
    assert_eq!(user, "");
    assert_eq!(logon(&kind).1, "session 9");
}

#[test]
fn sleep_and_wake_are_one_suspend_and_one_resume_with_the_time_asleep() {
    let mut t = Tracker::default();
    let power_of = |k: &Kind| match k {
        Kind::Power(p) => (p.action(), p.asleep_s),
        other => panic!("not a power event: {other:?}"),
    };
    // A resume without a suspend seen (the agent started asleep) is not
    // reported: how long it slept is unknown.
    assert!(t.handle(&Notice::Resume, 5, |_| None).is_none());
    let (_, k) = t.handle(&Notice::Suspend, 10_000_000, |_| None).unwrap();
    assert_eq!(power_of(&k), (Power::Suspend, 0));
    let (_, k) = t.handle(&Notice::Resume, 3_610_000_000, |_| None).unwrap();
    assert_eq!(power_of(&k), (Power::Resume, 3600));
    // "Resume suspend" after "resume automatic": the same wake.
    assert!(t.handle(&Notice::Resume, 3_611_000_000, |_| None).is_none());
    let (tx, _rx) = std::sync::mpsc::channel();
    let (_, k) = t.handle(&Notice::Shutdown(tx), 0, |_| None).unwrap();
    assert_eq!(power_of(&k), (Power::Shutdown, 0));
}

#[test]
fn a_boot_is_new_when_far_from_the_last_one_reported() {
    let boot = 1_700_000_000_000_000;
    assert!(is_new_boot(None, boot));
    // The clock and the tick count drift: a minute is the same boot.
    assert!(!is_new_boot(Some(boot), boot + 60_000_000));
    assert!(!is_new_boot(Some(boot), boot - 60_000_000));
    assert!(is_new_boot(Some(boot), boot + 3_600_000_000));
}

#[test]
fn a_notice_reaches_only_a_running_collector() {
    // No collector yet in this test process: the notice is refused, not
    // queued for ever.
    let mut guard = NOTICES.lock().unwrap();
    let before = guard.take();
    drop(guard);
    assert!(!notify(Notice::Suspend));
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    *NOTICES.lock().unwrap() = Some(tx);
    assert!(notify(Notice::Suspend));
    // Full: refused rather than blocking the service manager's thread.
    assert!(!notify(Notice::Resume));
    assert!(matches!(rx.try_recv(), Ok(Notice::Suspend)));
    *NOTICES.lock().unwrap() = before;
}
