//! Web access, read from the browsers' own history databases, and the web
//! block list, enforced through the browsers' managed policies.
//!
//! **History.** Every few seconds the collector looks at each profile of
//! Chromium, Google Chrome, Microsoft Edge and Firefox in each user's home
//! (`History`, `places.sqlite`). A changed database is copied (with its
//! write-ahead log) into the state directory and the copy is read, so the
//! browser is never locked out and a half-written page is never read; new
//! visits since the last look become web events: host, title, browser and
//! the user who owns the home, and the full URL only where the tenant's
//! policy says so (`web.full_url`; by default the host only). The agent's
//! first look reports nothing (that history is from before the agent); a
//! database that appears later (a new profile) is read from its start.
//! A look reads at most [`MAX_VISITS_PER_LOOK`] visits of one database; more
//! are counted into one summary event. A database that cannot be read
//! (corrupt, not SQLite) is a collector-warning event, once per reason,
//! and the collector carries on.
//!
//! **Block.** The policy's `web.block` hosts are written as the managed
//! policy each browser honours (Chromium-based: `URLBlocklist` in a JSON
//! file of their managed-policy directories; Firefox: `WebsiteFilter` in
//! `policies.json`; on Windows the same lists in the registry's policy
//! keys), and removed when the list is empty: the browser itself refuses
//! the page, as it does for any enterprise policy.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use mamori_proto::agent::v1::{WebEvent, event::Kind};
use serde::{Deserialize, Serialize};

use super::{Collector, EventSink};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::platform::os::{self, Owners};
use crate::policy::PolicyState;

/// Visits read from one database per look; more are counted.
pub const MAX_VISITS_PER_LOOK: i64 = 1000;
/// Largest history database copied (a heavy user's is ~100 MiB).
const MAX_DB_BYTES: u64 = 512 << 20;

/// The file the agent owns in each managed-policy directory.
const POLICY_FILE: &str = "mamori.json";

/// The web collector.
#[derive(Debug, Clone)]
pub struct WebCollector {
    /// Directories whose subdirectories are users' homes (`/home`), and
    /// single homes (`/root`).
    homes: Vec<PathBuf>,
    /// The collector's own directory (its place, its copies).
    state: PathBuf,
    poll: Duration,
    policy: Arc<PolicyState>,
    chromium_policy_dirs: Vec<PathBuf>,
    firefox_policy_dirs: Vec<PathBuf>,
}

impl WebCollector {
    pub fn new(
        homes: Vec<PathBuf>,
        state: PathBuf,
        poll: Duration,
        policy: Arc<PolicyState>,
        chromium_policy_dirs: Vec<PathBuf>,
        firefox_policy_dirs: Vec<PathBuf>,
    ) -> Self {
        Self {
            homes,
            state,
            poll,
            policy,
            chromium_policy_dirs,
            firefox_policy_dirs,
        }
    }

    /// The collector `run` starts: the homes, poll and policy directories
    /// of `opts`, its state in the state directory's `web`.
    pub(crate) fn for_run(
        opts: &crate::RunOptions,
        state: &crate::state::StateDir,
        policy: &Arc<PolicyState>,
    ) -> Self {
        Self::new(
            opts.browser_homes.clone(),
            state.web_dir(),
            opts.web_poll,
            Arc::clone(policy),
            opts.chromium_policy_dirs.clone(),
            opts.firefox_policy_dirs.clone(),
        )
    }
}

/// What was read of each database: its last visit id, and whether a
/// warning about it was sent.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Positions {
    /// The agent's first look is done: a database found later (a new
    /// browser profile) is read from its start.
    #[serde(default)]
    started: bool,
    last: BTreeMap<String, i64>,
    #[serde(default)]
    warned: BTreeMap<String, String>,
}

/// One history database found.
#[derive(Debug, Clone)]
struct History {
    browser: &'static str,
    path: PathBuf,
    user: String,
}

/// One visit read.
#[derive(Debug, Clone, PartialEq)]
struct Visit {
    id: i64,
    url: String,
    title: String,
    /// µs since the Unix epoch.
    at_us: i64,
}

impl Collector for WebCollector {
    fn name(&self) -> &'static str {
        "web"
    }

    fn run(self: Box<Self>, sink: EventSink) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            std::fs::create_dir_all(&self.state)
                .map_err(Error::io(format!("creating {}", self.state.display())))?;
            let positions: Positions =
                fsutil::read_json(&self.state.join("web.json")).unwrap_or_default();
            let mut looker = Looker {
                positions,
                owners: Owners::new(),
                blocked: None,
            };
            let mut tick = tokio::time::interval(self.poll);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                // Copying and reading databases is slow: off the runtime.
                let (this, sink) = (self.clone(), sink.clone());
                let (back, done) = tokio::task::spawn_blocking(move || {
                    let done = this.look(&mut looker, &sink);
                    (looker, done)
                })
                .await
                .map_err(|e| Error::io("the web collector")(std::io::Error::other(e)))?;
                looker = back;
                if let Err(e) = done {
                    tracing::warn!(error = %e, "keeping the web collector's place failed");
                }
            }
        })
    }
}

/// What the collector keeps between looks.
struct Looker {
    positions: Positions,
    owners: Owners,
    /// The block list last written.
    blocked: Option<Vec<String>>,
}

impl WebCollector {
    /// One look: the block list if it changed, then every database's new
    /// visits; the positions are kept after the events are spooled.
    fn look(&self, l: &mut Looker, sink: &EventSink) -> Result<()> {
        let policy = self.policy.current();
        let block = &policy.update.web_block;
        if l.blocked.as_ref() != Some(block) && self.enforce(block) {
            l.blocked = Some(block.clone());
        }
        let full_url = policy.update.web_full_url;
        for h in self.histories(&mut l.owners) {
            let key = h.path.to_string_lossy().into_owned();
            let after = match l.positions.last.get(&key) {
                Some(&last) => Some(last),
                None if l.positions.started => Some(0),
                None => None,
            };
            match self.read(&h, after) {
                Ok((visits, skipped, last)) => {
                    l.positions.warned.remove(&key);
                    if after.is_some() {
                        emit(sink, &h, &visits, skipped, full_url);
                    }
                    l.positions.last.insert(key, last.max(after.unwrap_or(0)));
                }
                Err(why) => {
                    // Once per database and reason, not every look.
                    if l.positions.warned.get(&key) != Some(&why) {
                        tracing::warn!(db = %key, error = %why, "cannot read a browser history");
                        sink.warn("web", &key, &why);
                        l.positions.warned.insert(key, why);
                    }
                }
            }
        }
        l.positions.started = true;
        fsutil::write_json(&self.state.join("web.json"), &l.positions)
    }

    /// Every history database in every home, with the home's owner.
    fn histories(&self, owners: &mut Owners) -> Vec<History> {
        let mut homes = Vec::new();
        for h in &self.homes {
            // A directory of homes (`/home`) or a home itself (`/root`).
            if os::BROWSERS.iter().any(|(_, dir, _)| h.join(dir).is_dir()) {
                homes.push(h.clone());
            } else if let Ok(entries) = std::fs::read_dir(h) {
                homes.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
            }
        }
        let mut out = Vec::new();
        for home in homes {
            let user = owners.of(&home).unwrap_or_default();
            for (browser, dir, file) in os::BROWSERS {
                let Ok(profiles) = std::fs::read_dir(home.join(dir)) else {
                    continue;
                };
                for p in profiles.flatten() {
                    let path = p.path().join(file);
                    if path.is_file() {
                        out.push(History {
                            browser,
                            path,
                            user: user.clone(),
                        });
                    }
                }
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        out
    }

    /// The visits after `after` (all of them counted, at most
    /// [`MAX_VISITS_PER_LOOK`] read), the number skipped, and the last id.
    fn read(
        &self,
        h: &History,
        after: Option<i64>,
    ) -> std::result::Result<(Vec<Visit>, u64, i64), String> {
        let copy = self.state.join("web-copy");
        let _ = std::fs::remove_dir_all(&copy);
        std::fs::create_dir_all(&copy).map_err(|e| e.to_string())?;
        let len = std::fs::metadata(&h.path).map_err(|e| e.to_string())?.len();
        if len > MAX_DB_BYTES {
            return Err(format!("{len} bytes, more than the {MAX_DB_BYTES} read"));
        }
        let db = copy.join("history.sqlite");
        std::fs::copy(&h.path, &db).map_err(|e| e.to_string())?;
        for suffix in ["-wal", "-journal"] {
            let mut side = h.path.as_os_str().to_owned();
            side.push(suffix);
            let mut to = db.as_os_str().to_owned();
            to.push(suffix);
            if Path::new(&side).is_file() {
                std::fs::copy(&side, &to).map_err(|e| e.to_string())?;
            }
        }
        let result = query(&db, h.browser, after);
        let _ = std::fs::remove_dir_all(&copy);
        result.map_err(|e| format!("not a readable {} history: {e}", h.browser))
    }

    /// Writes (or removes) the block list in each browser's managed
    /// policies. A browser that is not installed (its directory's parent is
    /// missing) is left alone.
    /// Whether everything was written (what was not is tried again at the
    /// next look).
    fn enforce(&self, block: &[String]) -> bool {
        let (blocklist, allowlist) = chromium_lists(block);
        let patterns: Vec<String> = block
            .iter()
            .flat_map(|p| match p.strip_prefix("*.") {
                Some(d) => vec![format!("*://*.{d}/*")],
                None => vec![format!("*://{p}/*"), format!("*://*.{p}/*")],
            })
            .collect();
        for dir in &self.chromium_policy_dirs {
            let doc = serde_json::json!({
                "URLBlocklist": blocklist,
                "URLAllowlist": allowlist,
            });
            write_policy(dir, &dir.join(POLICY_FILE), block.is_empty(), &doc);
        }
        for dir in &self.firefox_policy_dirs {
            let doc = serde_json::json!({"policies": {"WebsiteFilter": {"Block": patterns}}});
            write_policy(dir, &dir.join("policies.json"), block.is_empty(), &doc);
        }
        os::write_browser_policies(&blocklist, &allowlist, &patterns)
    }
}

/// Chromium's `URLBlocklist` and `URLAllowlist` for the policy's hosts, as
/// the alerting service matches them: `example.com` is the host and its
/// subdomains (Chromium's `example.com`), `*.example.com` only the
/// subdomains (blocked as `example.com`, with the host itself allowed by
/// `.example.com` unless it is listed too).
fn chromium_lists(block: &[String]) -> (Vec<String>, Vec<String>) {
    let mut blocklist = Vec::new();
    let mut allowlist = Vec::new();
    for p in block {
        let p = p.to_ascii_lowercase();
        match p.strip_prefix("*.") {
            Some(d) => {
                blocklist.push(d.to_owned());
                if !block.iter().any(|q| q.eq_ignore_ascii_case(d)) {
                    allowlist.push(format!(".{d}"));
                }
            }
            None => blocklist.push(p),
        }
    }
    blocklist.dedup();
    (blocklist, allowlist)
}

fn write_policy(dir: &Path, file: &Path, remove: bool, doc: &serde_json::Value) {
    if remove {
        match std::fs::remove_file(file) {
            Ok(()) => tracing::info!(file = %file.display(), "web block list removed"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(file = %file.display(), error = %e, "cannot remove the web block list")
            }
        }
        return;
    }
    // The browser's policy root (`/etc/chromium`) exists where it is
    // installed; the managed directory below it is created.
    let installed = dir.ancestors().nth(2).is_some_and(|root| root.is_dir());
    if !installed {
        return;
    }
    let written = std::fs::create_dir_all(dir)
        .map_err(Error::io("creating the policy directory"))
        .and_then(|()| fsutil::write_atomic(file, doc.to_string().as_bytes(), 0o644));
    match written {
        Ok(()) => tracing::info!(file = %file.display(), "web block list written"),
        Err(e) => {
            tracing::warn!(file = %file.display(), error = %e, "cannot write the web block list")
        }
    }
}

/// Reads visits from a copied history database.
fn query(db: &Path, browser: &str, after: Option<i64>) -> rusqlite::Result<(Vec<Visit>, u64, i64)> {
    use rusqlite::{Connection, OpenFlags};
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    let (max_sql, visits_sql) = if browser == "firefox" {
        (
            "SELECT coalesce(max(id), 0) FROM moz_historyvisits",
            // visit_date: µs since the Unix epoch.
            "SELECT v.id, p.url, coalesce(p.title, ''), v.visit_date
             FROM moz_historyvisits v JOIN moz_places p ON p.id = v.place_id
             WHERE v.id > ?1 ORDER BY v.id DESC LIMIT ?2",
        )
    } else {
        (
            "SELECT coalesce(max(id), 0) FROM visits",
            // visit_time: µs since 1601-01-01 (Windows' epoch).
            "SELECT v.id, u.url, coalesce(u.title, ''), v.visit_time - 11644473600000000
             FROM visits v JOIN urls u ON u.id = v.url
             WHERE v.id > ?1 ORDER BY v.id DESC LIMIT ?2",
        )
    };
    let last: i64 = conn.query_row(max_sql, [], |r| r.get(0))?;
    let Some(after) = after else {
        return Ok((Vec::new(), 0, last));
    };
    let mut stmt = conn.prepare(visits_sql)?;
    let mut visits: Vec<Visit> = stmt
        .query_map([after, MAX_VISITS_PER_LOOK], |r| {
            Ok(Visit {
                id: r.get(0)?,
                url: r.get(1)?,
                title: r.get(2)?,
                at_us: r.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    visits.reverse();
    let count_sql = if browser == "firefox" {
        "SELECT count(*) FROM moz_historyvisits WHERE id > ?1"
    } else {
        "SELECT count(*) FROM visits WHERE id > ?1"
    };
    let total: i64 = conn.query_row(count_sql, [after], |r| r.get(0))?;
    let skipped = u64::try_from(total - visits.len() as i64).unwrap_or(0);
    Ok((visits, skipped, last))
}

/// The host of a web URL (`https://user@Host:8080/x` → `host`),
/// lower-case; "" for the browser's own pages and files (`about:`,
/// `chrome://`, `file://`).
fn host_of(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return String::new();
    };
    if !["http", "https", "ftp"].contains(&scheme.to_ascii_lowercase().as_str()) {
        return String::new();
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    host.to_ascii_lowercase()
}

fn emit(sink: &EventSink, h: &History, visits: &[Visit], skipped: u64, full_url: bool) {
    for v in visits {
        let host = host_of(&v.url);
        if host.is_empty() {
            continue; // about:, chrome://, file: pages
        }
        let event = WebEvent {
            url_host: host,
            url: if full_url {
                v.url.clone()
            } else {
                String::new()
            },
            title: v.title.clone(),
            browser: h.browser.to_owned(),
            summarized: 0,
        };
        if let Err(e) = sink.emit(v.at_us, h.user.clone(), Kind::Web(event)) {
            tracing::warn!(error = %e, "cannot spool a web event");
        }
    }
    if skipped > 0 {
        let event = WebEvent {
            url_host: visits.last().map(|v| host_of(&v.url)).unwrap_or_default(),
            browser: h.browser.to_owned(),
            summarized: u32::try_from(skipped).unwrap_or(u32::MAX),
            ..Default::default()
        };
        if let Err(e) = sink.emit(crate::clock::now_us(), h.user.clone(), Kind::Web(event)) {
            tracing::warn!(error = %e, "cannot spool a web summary");
        }
    }
}

#[cfg(test)]
mod tests;
