//! Installed software on Debian and its derivatives: dpkg's status
//! database.
//!
//! Every 10 s the collector looks at the status file's modification time;
//! when it changed it reads the installed packages (name, version,
//! maintainer as the publisher) and the shared
//! [`report`](crate::collector::software::report) tells what changed. The
//! status file is bounded ([`MAX_STATUS_BYTES`]); a larger or unreadable
//! one is a warning and the next look tries again.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;

use crate::collector::software::{Packages, report};
use crate::collector::{Collector, EventSink};
use crate::error::{Error, Result};

/// Debian's dpkg status database.
pub const DEFAULT_DPKG_STATUS: &str = "/var/lib/dpkg/status";
/// Largest status file read (a desktop with 5,000 packages has ~10 MiB).
pub const MAX_STATUS_BYTES: u64 = 64 << 20;

/// The installed packages in a dpkg status file.
pub fn parse_status(text: &str) -> Packages {
    let mut out = Packages::new();
    for stanza in text.split("\n\n") {
        let (mut name, mut version, mut publisher, mut installed) =
            (None, String::new(), String::new(), false);
        for line in stanza.lines() {
            if let Some(v) = line.strip_prefix("Package: ") {
                name = Some(v.trim().to_owned());
            } else if let Some(v) = line.strip_prefix("Version: ") {
                version = v.trim().to_owned();
            } else if let Some(v) = line.strip_prefix("Maintainer: ") {
                publisher = v.trim().to_owned();
            } else if let Some(v) = line.strip_prefix("Status: ") {
                installed = v.trim().ends_with(" installed");
            }
        }
        if let (Some(name), true) = (name, installed) {
            out.insert(name, (version, publisher));
        }
    }
    out
}

/// The dpkg collector.
#[derive(Debug, Clone)]
pub struct SoftwareCollector {
    status: PathBuf,
    saved_path: PathBuf,
    poll: Duration,
}

impl SoftwareCollector {
    /// Watches the dpkg `status` file, keeping the last list in `saved_path`.
    pub fn new(status: impl Into<PathBuf>, saved_path: impl Into<PathBuf>) -> Self {
        SoftwareCollector {
            status: status.into(),
            saved_path: saved_path.into(),
            poll: Duration::from_secs(10),
        }
    }

    /// Changes how often the status file is looked at (tests).
    pub fn with_poll_interval(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    /// Reads the status file and reports what changed since the kept list.
    fn check(&self, sink: &EventSink) -> Result<usize> {
        let what = || format!("reading {}", self.status.display());
        let size = std::fs::metadata(&self.status)
            .map_err(Error::io(what()))?
            .len();
        if size > MAX_STATUS_BYTES {
            return Err(Error::InvalidOption(format!(
                "{} is {size} bytes, over the {MAX_STATUS_BYTES}-byte limit: not read",
                self.status.display()
            )));
        }
        let text = std::fs::read_to_string(&self.status).map_err(Error::io(what()))?;
        report(&parse_status(&text), &self.saved_path, sink)
    }
}

impl Collector for SoftwareCollector {
    fn name(&self) -> &'static str {
        "software"
    }

    fn run(self: Box<Self>, sink: EventSink) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            tracing::info!(status = %self.status.display(), "watching installed software");
            let mut tick = tokio::time::interval(self.poll);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut seen: Option<SystemTime> = None;
            let mut failing = crate::collector::Failing::default();
            let source = self.status.display().to_string();
            loop {
                tick.tick().await;
                let modified = std::fs::metadata(&self.status)
                    .and_then(|m| m.modified())
                    .ok();
                if modified.is_none() || modified == seen {
                    continue;
                }
                let collector = self.clone();
                // A large status file takes a moment: off the runtime.
                let check_sink = sink.clone();
                let done = tokio::task::spawn_blocking(move || collector.check(&check_sink)).await;
                if let Ok(outcome) = &done {
                    failing.report(&sink, "software", &source, outcome);
                }
                match done {
                    Ok(Ok(n)) => {
                        seen = modified;
                        if n > 0 {
                            tracing::info!(changes = n, "installed software changed");
                        }
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "reading the installed software failed")
                    }
                    Err(e) => tracing::warn!(error = %e, "the software check stopped"),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::testing::{sink_in, spooled};
    use mamori_proto::agent::v1::{event::Kind, software_event::Action};

    const STATUS: &str = "Package: bash\nStatus: install ok installed\nMaintainer: Matthias Klose <doko@debian.org>\nVersion: 5.2.15-2\n\n\
Package: gone\nStatus: deinstall ok config-files\nVersion: 1.0\n\n\
Package: zip\nStatus: install ok installed\nVersion: 3.0-13\nDescription: Archiver\n multi-line\n";

    #[test]
    fn installed_packages_are_read_and_others_are_not() {
        let p = parse_status(STATUS);
        assert_eq!(p.keys().collect::<Vec<_>>(), ["bash", "zip"]);
        assert_eq!(p["bash"].0, "5.2.15-2");
        assert_eq!(p["bash"].1, "Matthias Klose <doko@debian.org>");
    }

    #[test]
    fn the_first_look_is_the_inventory_then_only_changes_once_each() {
        let dir = tempfile::tempdir().unwrap();
        let status = dir.path().join("status");
        std::fs::write(&status, STATUS).unwrap();
        let (sink, spool) = sink_in(dir.path());
        let c = SoftwareCollector::new(&status, dir.path().join("software.json"));
        assert_eq!(c.check(&sink).unwrap(), 2, "every installed package, once");
        assert_eq!(c.check(&sink).unwrap(), 0);

        let updated = STATUS
            .replace("3.0-13", "3.0-14")
            .replace("Package: bash", "Package: bash-new");
        std::fs::write(&status, updated).unwrap();
        assert_eq!(c.check(&sink).unwrap(), 3);
        let events = spooled(&spool);
        let seen: Vec<(Action, String, String, bool)> = events
            .iter()
            .map(|e| match &e.kind {
                Some(Kind::Software(s)) => {
                    (s.action(), s.name.clone(), s.version.clone(), s.inventory)
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            seen,
            [
                // The inventory, marked as such (no "new app" alarms).
                (Action::Installed, "bash".into(), "5.2.15-2".into(), true),
                (Action::Installed, "zip".into(), "3.0-13".into(), true),
                // Then what the agent saw happen.
                (
                    Action::Installed,
                    "bash-new".into(),
                    "5.2.15-2".into(),
                    false
                ),
                (Action::Updated, "zip".into(), "3.0-14".into(), false),
                (Action::Removed, "bash".into(), "5.2.15-2".into(), false),
            ]
        );
        assert_eq!(c.check(&sink).unwrap(), 0, "nothing twice");
    }

    #[test]
    fn an_unreadable_status_file_is_an_error_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (sink, spool) = sink_in(dir.path());
        let c =
            SoftwareCollector::new(dir.path().join("missing"), dir.path().join("software.json"));
        let e = c.check(&sink).unwrap_err().to_string();
        assert!(e.contains("missing"), "{e}");
        assert!(spooled(&spool).is_empty());
        assert!(!dir.path().join("software.json").exists());
    }

    #[tokio::test]
    async fn a_status_file_over_the_limit_is_one_warning_and_the_collector_carries_on() {
        let dir = tempfile::tempdir().unwrap();
        let status = dir.path().join("status");
        // Sparse: over the limit without writing 64 MiB.
        std::fs::File::create(&status)
            .unwrap()
            .set_len(MAX_STATUS_BYTES + 1)
            .unwrap();
        let (sink, spool) = sink_in(dir.path());
        let c = SoftwareCollector::new(&status, dir.path().join("software.json"))
            .with_poll_interval(Duration::from_millis(20));
        let task = tokio::spawn(Box::new(c).run(sink));
        tokio::time::sleep(Duration::from_millis(200)).await;
        let warnings = |events: Vec<mamori_proto::agent::v1::Event>| -> Vec<String> {
            events
                .into_iter()
                .filter_map(|e| match e.kind {
                    Some(Kind::CollectorWarning(w)) => {
                        assert_eq!(
                            (w.collector.as_str(), w.source.as_str()),
                            ("software", &*status.display().to_string())
                        );
                        Some(w.message)
                    }
                    _ => None,
                })
                .collect()
        };
        let first = warnings(spooled(&spool));
        assert_eq!(first.len(), 1, "once, not once per look: {first:?}");
        assert!(first[0].contains("over the"), "{first:?}");
        // Fixed: the inventory follows, and the collector is still running.
        std::fs::write(&status, STATUS).unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let events = spooled(&spool);
        let software = events
            .iter()
            .filter(|e| matches!(e.kind, Some(Kind::Software(_))))
            .count();
        assert_eq!(software, 2);
        assert!(!task.is_finished());
        task.abort();
    }
}
