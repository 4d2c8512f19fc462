//! The web collector against history databases in the browsers' formats
//! (made here with SQLite), and the block list's policy files.

use std::sync::Arc;

use mamori_proto::agent::v1::{Event, PolicyUpdate};
use rusqlite::Connection;

use super::*;
use crate::sink::testing::{sink_in, spooled};

/// Where `browser` keeps its profiles below a home on this OS.
fn profiles(browser: &str) -> &'static str {
    os::BROWSERS
        .iter()
        .find(|(name, _, _)| *name == browser)
        .map(|(_, dir, _)| *dir)
        .unwrap()
}

/// When the visits happen: a fixed time lately (the sink takes no time
/// older than a year).
fn t0() -> i64 {
    (crate::clock::now_us() / 86_400_000_000 - 1) * 86_400_000_000
}

/// Chrome's epoch (1601-01-01) in µs before the Unix epoch.
const WINDOWS_EPOCH_US: i64 = 11_644_473_600_000_000;

fn chromium_history(path: &Path) -> Connection {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let c = Connection::open(path).unwrap();
    c.execute_batch(
        "CREATE TABLE urls (id INTEGER PRIMARY KEY, url LONGVARCHAR, title LONGVARCHAR,
                            visit_count INTEGER DEFAULT 0 NOT NULL);
         CREATE TABLE visits (id INTEGER PRIMARY KEY, url INTEGER NOT NULL,
                              visit_time INTEGER NOT NULL);",
    )
    .unwrap();
    c
}

fn visit(c: &Connection, url: &str, title: &str, at_us: i64) {
    c.execute(
        "INSERT INTO urls (url, title) VALUES (?1, ?2)",
        (url, title),
    )
    .unwrap();
    let id = c.last_insert_rowid();
    c.execute(
        "INSERT INTO visits (url, visit_time) VALUES (?1, ?2)",
        (id, at_us + WINDOWS_EPOCH_US),
    )
    .unwrap();
}

fn collector(homes: &Path, state: &Path, policy: PolicyUpdate, chromium: &Path) -> WebCollector {
    std::fs::create_dir_all(state).unwrap();
    WebCollector::new(
        vec![homes.to_owned()],
        state.to_owned(),
        Duration::from_secs(1),
        Arc::new(PolicyState::in_memory(policy).unwrap()),
        vec![chromium.to_owned()],
        Vec::new(),
    )
}

fn webs(events: &[Event]) -> Vec<(&WebEvent, &Event)> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(Kind::Web(w)) => Some((w, e)),
            _ => None,
        })
        .collect()
}

fn looker() -> Looker {
    Looker {
        positions: Positions::default(),
        owners: Owners::new(),
        blocked: None,
    }
}

#[test]
fn new_visits_are_reported_with_the_host_only_unless_the_policy_says_full_urls() {
    let dir = tempfile::tempdir().unwrap();
    let homes = dir.path().join("home");
    let history = homes
        .join("sato")
        .join(profiles("chromium"))
        .join("Default")
        .join("History");
    let db = chromium_history(&history);
    visit(
        &db,
        "https://old.example/before",
        "before the agent",
        1_700_000_000_000_000,
    );
    let (sink, spool) = sink_in(dir.path());
    let c = collector(
        &homes,
        &dir.path().join("state"),
        PolicyUpdate::default(),
        &dir.path().join("none"),
    );
    let mut l = looker();
    c.look(&mut l, &sink).unwrap();
    assert!(
        webs(&spooled(&spool)).is_empty(),
        "history from before the agent"
    );

    visit(
        &db,
        "https://Intranet.Example:8443/hr/給与?id=7",
        "給与明細",
        t0(),
    );
    visit(&db, "about:blank", "", t0() + 1);
    c.look(&mut l, &sink).unwrap();
    let events = spooled(&spool);
    let w = webs(&events);
    assert_eq!(w.len(), 1, "{w:?}");
    let (web, event) = w[0];
    assert_eq!(web.url_host, "intranet.example");
    assert_eq!(web.url, "", "the full URL only where the policy says so");
    assert_eq!(web.title, "給与明細");
    assert_eq!(web.browser, "chromium");
    assert_eq!(event.occurred_at_us, t0());
    // The home's owner is the user.
    let owner = Owners::new().of(&homes.join("sato")).unwrap();
    assert!(!owner.is_empty());
    assert_eq!(event.os_user, owner);

    // With full URLs on, and a restart that keeps its place.
    let c = collector(
        &homes,
        &dir.path().join("state"),
        PolicyUpdate {
            web_full_url: true,
            ..Default::default()
        },
        &dir.path().join("none"),
    );
    let mut l = Looker {
        positions: fsutil::read_json(&dir.path().join("state/web.json")).unwrap(),
        ..looker()
    };
    visit(&db, "https://mail.example/inbox", "Inbox", t0() + 1_000_000);
    c.look(&mut l, &sink).unwrap();
    let events = spooled(&spool);
    let w = webs(&events);
    assert_eq!(w.len(), 2, "nothing repeated after the restart: {w:?}");
    assert_eq!(w[1].0.url, "https://mail.example/inbox");

    // A profile made after the agent's first look is read from its start.
    let fresh = chromium_history(
        &homes
            .join("sato")
            .join(profiles("chromium"))
            .join("Profile 2")
            .join("History"),
    );
    visit(&fresh, "https://new-profile.example/", "", t0() + 2_000_000);
    c.look(&mut l, &sink).unwrap();
    assert!(
        webs(&spooled(&spool))
            .iter()
            .any(|(e, _)| e.url_host == "new-profile.example")
    );
}

#[test]
fn a_flood_is_summarised_and_a_corrupt_history_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let homes = dir.path().join("home");
    let db = chromium_history(
        &homes
            .join("sato")
            .join(profiles("chromium"))
            .join("Default")
            .join("History"),
    );
    let broken = homes
        .join("sato")
        .join(profiles("chromium"))
        .join("Profile 1")
        .join("History");
    std::fs::create_dir_all(broken.parent().unwrap()).unwrap();
    std::fs::write(&broken, b"not a database at all").unwrap();
    let (sink, spool) = sink_in(dir.path());
    let c = collector(
        &homes,
        &dir.path().join("state"),
        PolicyUpdate::default(),
        &dir.path().join("none"),
    );
    let mut l = looker();
    c.look(&mut l, &sink).unwrap();
    let flood = 1500;
    db.execute_batch("BEGIN").unwrap();
    for i in 0..flood {
        visit(&db, &format!("https://site{i}.example/"), "", t0() + i);
    }
    db.execute_batch("COMMIT").unwrap();
    c.look(&mut l, &sink).unwrap();
    let events = spooled(&spool);
    let w = webs(&events);
    let one_by_one = w.iter().filter(|(e, _)| e.summarized == 0).count() as i64;
    let summarized: i64 = w.iter().map(|(e, _)| i64::from(e.summarized)).sum();
    assert_eq!(one_by_one, MAX_VISITS_PER_LOOK);
    assert_eq!(
        one_by_one + summarized,
        flood,
        "every visit reported or counted"
    );
    // The newest are the ones reported.
    assert!(
        w.iter()
            .any(|(e, _)| e.url_host == format!("site{}.example", flood - 1))
    );
    // The corrupt profile is a warning, once, and the next look goes on.
    let key = broken.to_string_lossy().into_owned();
    assert!(l.positions.warned.contains_key(&key), "{:?}", l.positions);
    let warnings = |events: &[Event]| -> Vec<mamori_proto::agent::v1::CollectorWarningEvent> {
        events
            .iter()
            .filter_map(|e| match &e.kind {
                Some(Kind::CollectorWarning(w)) => Some(w.clone()),
                _ => None,
            })
            .collect()
    };
    let w = warnings(&spooled(&spool));
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(
        (w[0].collector.as_str(), w[0].source.as_str()),
        ("web", key.as_str())
    );
    assert!(w[0].message.contains("chromium history"), "{w:?}");
    visit(&db, "https://after.example/", "", t0() + 100_000_000);
    c.look(&mut l, &sink).unwrap();
    assert!(
        webs(&spooled(&spool))
            .iter()
            .any(|(e, _)| e.url_host == "after.example")
    );
    assert_eq!(warnings(&spooled(&spool)).len(), 1, "not again every look");
}

#[test]
fn firefox_history_is_read_too() {
    let dir = tempfile::tempdir().unwrap();
    let homes = dir.path().join("home");
    let path = homes
        .join("suzuki")
        .join(profiles("firefox"))
        .join("abcd.default-release")
        .join("places.sqlite");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let db = Connection::open(&path).unwrap();
    db.execute_batch(
        "CREATE TABLE moz_places (id INTEGER PRIMARY KEY, url LONGVARCHAR, title LONGVARCHAR);
         CREATE TABLE moz_historyvisits (id INTEGER PRIMARY KEY, place_id INTEGER, visit_date INTEGER);",
    )
    .unwrap();
    let (sink, spool) = sink_in(dir.path());
    let c = collector(
        &homes,
        &dir.path().join("state"),
        PolicyUpdate::default(),
        &dir.path().join("none"),
    );
    let mut l = looker();
    c.look(&mut l, &sink).unwrap();
    db.execute(
        "INSERT INTO moz_places (id, url, title) VALUES (1, 'http://p2p.example/x', 'P2P')",
        [],
    )
    .unwrap();
    db.execute(
        "INSERT INTO moz_historyvisits (place_id, visit_date) VALUES (1, ?1)",
        [t0()],
    )
    .unwrap();
    c.look(&mut l, &sink).unwrap();
    let events = spooled(&spool);
    let w = webs(&events);
    assert_eq!(w.len(), 1);
    assert_eq!(
        (w[0].0.url_host.as_str(), w[0].0.browser.as_str()),
        ("p2p.example", "firefox")
    );
    assert_eq!(w[0].1.occurred_at_us, t0());
}

#[test]
fn the_block_list_becomes_chromium_policy_and_goes_when_empty() {
    assert_eq!(
        chromium_lists(&["P2P.example".into(), "*.torrent.example".into()]),
        (
            vec!["p2p.example".to_owned(), "torrent.example".to_owned()],
            vec![".torrent.example".to_owned()]
        )
    );
    // Listed both ways: the host is blocked too.
    assert_eq!(
        chromium_lists(&["*.x.example".into(), "x.example".into()]).1,
        Vec::<String>::new()
    );
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("etc-chromium");
    std::fs::create_dir_all(&root).unwrap();
    let managed = root.join("policies/managed");
    let (sink, _spool) = sink_in(dir.path());
    let c = collector(
        &dir.path().join("home"),
        &dir.path().join("state"),
        PolicyUpdate {
            web_block: vec!["p2p.example".into()],
            ..Default::default()
        },
        &managed,
    );
    let mut l = looker();
    c.look(&mut l, &sink).unwrap();
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(managed.join(POLICY_FILE)).unwrap()).unwrap();
    assert_eq!(doc["URLBlocklist"], serde_json::json!(["p2p.example"]));
    c.policy.apply(PolicyUpdate::default()).unwrap();
    c.look(&mut l, &sink).unwrap();
    assert!(!managed.join(POLICY_FILE).exists());
    // A browser that is not installed is left alone.
    let absent = dir.path().join("no-browser/policies/managed");
    let c = collector(
        &dir.path().join("home"),
        &dir.path().join("state"),
        PolicyUpdate {
            web_block: vec!["p2p.example".into()],
            ..Default::default()
        },
        &absent,
    );
    c.look(&mut looker(), &sink).unwrap();
    assert!(!absent.exists());
}

#[test]
fn hosts_come_out_of_urls() {
    assert_eq!(
        host_of("https://user:pw@Example.COM:8080/a?b#c"),
        "example.com"
    );
    assert_eq!(host_of("http://[::1]:3000/"), "::1");
    assert_eq!(host_of("about:blank"), "");
    assert_eq!(host_of("chrome://settings/"), "");
    assert_eq!(host_of("file:///home/x"), "");
}
