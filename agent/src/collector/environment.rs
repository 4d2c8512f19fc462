//! The PC's environment: host name, operating system, hardware, IP and MAC
//! addresses. At start and then every minute the collector takes a
//! [`Snapshot`] through a [`Probe`] (each platform supplies its own),
//! compares it with the last one it kept in the state directory, and
//! reports each field that changed as an environment-change event (old and
//! new value), which the server's "PC environment change" rule alarms on.
//! The very first snapshot is the baseline and reports nothing; a restart
//! compares with what was kept, so a change made while the agent was
//! stopped is reported when it starts.

use std::path::PathBuf;
use std::time::Duration;

use futures::future::BoxFuture;
use mamori_proto::agent::v1::{
    EnvironmentChangeEvent, environment_change_event::Field, event::Kind,
};
use serde::{Deserialize, Serialize};

use super::{Collector, EventSink, poll_every};
use crate::clock::now_us;
use crate::error::Result;
use crate::fsutil;

/// What the PC looks like, one text per reported field.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub hostname: String,
    /// Distribution and kernel.
    pub os: String,
    /// CPU, memory and disks.
    pub hardware: String,
    /// Sorted, comma-separated.
    pub ip_addresses: String,
    /// Sorted, comma-separated.
    pub mac_addresses: String,
}

impl Snapshot {
    fn fields(&self) -> [(Field, &str); 5] {
        [
            (Field::Hostname, &self.hostname),
            (Field::Os, &self.os),
            (Field::Hardware, &self.hardware),
            (Field::IpAddress, &self.ip_addresses),
            (Field::MacAddress, &self.mac_addresses),
        ]
    }

    /// The fields that differ from `before`, as events.
    pub fn changes_since(&self, before: &Snapshot) -> Vec<EnvironmentChangeEvent> {
        before
            .fields()
            .into_iter()
            .zip(self.fields())
            .filter(|((_, old), (_, new))| old != new)
            .map(|((field, old), (_, new))| EnvironmentChangeEvent {
                field: field as i32,
                old_value: old.to_owned(),
                new_value: new.to_owned(),
            })
            .collect()
    }
}

/// A platform's source of snapshots.
pub trait Probe: Send + Sync + 'static {
    fn snapshot(&self) -> Snapshot;
}

/// The environment collector.
pub struct EnvironmentCollector {
    probe: Box<dyn Probe>,
    saved_path: PathBuf,
    poll: Duration,
}

impl std::fmt::Debug for EnvironmentCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvironmentCollector")
            .field("saved_path", &self.saved_path)
            .field("poll", &self.poll)
            .finish_non_exhaustive()
    }
}

impl EnvironmentCollector {
    /// Compares `probe`'s snapshots with the one kept in `saved_path`,
    /// every `poll`.
    pub fn new(probe: Box<dyn Probe>, saved_path: impl Into<PathBuf>, poll: Duration) -> Self {
        EnvironmentCollector {
            probe,
            saved_path: saved_path.into(),
            poll,
        }
    }

    /// Takes a snapshot and reports what changed since the kept one; keeps
    /// the new one after the events are spooled.
    fn check(&self, sink: &EventSink) -> Result<usize> {
        let now = self.probe.snapshot();
        let before: Option<Snapshot> = fsutil::read_json(&self.saved_path);
        let changes = match &before {
            Some(before) => now.changes_since(before),
            None => Vec::new(),
        };
        if before.as_ref() == Some(&now) {
            return Ok(0);
        }
        let at = now_us();
        for change in &changes {
            tracing::info!(field = ?change.field(), old = %change.old_value, new = %change.new_value, "the PC's environment changed");
            sink.emit(at, String::new(), Kind::EnvironmentChange(change.clone()))?;
        }
        fsutil::write_json(&self.saved_path, &now)?;
        Ok(changes.len())
    }
}

impl Collector for EnvironmentCollector {
    fn name(&self) -> &'static str {
        "environment"
    }

    fn run(self: Box<Self>, sink: EventSink) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            tracing::info!(
                every_s = self.poll.as_secs(),
                "watching the PC's environment"
            );
            // Reading a few small files: short enough for this task.
            poll_every(
                self.poll,
                &sink,
                "environment",
                "the PC's environment",
                || self.check(&sink).map(drop),
            )
            .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::testing::{sink_in, spooled};
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Fake(Arc<Mutex<Snapshot>>);

    impl Probe for Fake {
        fn snapshot(&self) -> Snapshot {
            self.0.lock().unwrap().clone()
        }
    }

    #[test]
    fn the_first_snapshot_is_the_baseline_and_each_change_is_reported_once() {
        let dir = tempfile::tempdir().unwrap();
        let (sink, spool) = sink_in(dir.path());
        let fake = Fake::default();
        *fake.0.lock().unwrap() = Snapshot {
            hostname: "pc-001".into(),
            os: "Debian GNU/Linux 12, Linux 6.1".into(),
            hardware: "CPU x 4; memory 8 GiB".into(),
            ip_addresses: "192.0.2.10".into(),
            mac_addresses: "52:54:00:12:34:56".into(),
        };
        let c = EnvironmentCollector::new(
            Box::new(fake.clone()),
            dir.path().join("environment.json"),
            Duration::from_secs(60),
        );
        assert_eq!(c.check(&sink).unwrap(), 0, "the baseline reports nothing");
        assert_eq!(c.check(&sink).unwrap(), 0);

        {
            let mut s = fake.0.lock().unwrap();
            s.hostname = "pc-renamed".into();
            s.ip_addresses = "192.0.2.10, 198.51.100.7".into();
        }
        assert_eq!(c.check(&sink).unwrap(), 2);
        assert_eq!(c.check(&sink).unwrap(), 0, "reported once");
        let events = spooled(&spool);
        let changes: Vec<_> = events
            .iter()
            .map(|e| match &e.kind {
                Some(Kind::EnvironmentChange(c)) => {
                    (c.field(), c.old_value.as_str(), c.new_value.as_str())
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            changes,
            [
                (Field::Hostname, "pc-001", "pc-renamed"),
                (Field::IpAddress, "192.0.2.10", "192.0.2.10, 198.51.100.7"),
            ]
        );

        // A restart compares with what was kept.
        fake.0.lock().unwrap().os = "Debian GNU/Linux 13, Linux 6.12".into();
        let c = EnvironmentCollector::new(
            Box::new(fake),
            dir.path().join("environment.json"),
            Duration::from_secs(60),
        );
        assert_eq!(c.check(&sink).unwrap(), 1);
    }
}
