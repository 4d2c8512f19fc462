//! Where collectors put events: stamps them (id, clock offset) and appends
//! them to the spool, then wakes the uplink.
//!
//! Appending is synchronous and short (one `write(2)`), so when `emit`
//! returns the event is durable against the agent dying, and a collector may
//! record its own progress (the wtmp offset, say) right after.
//!
//! Most events wait up to a second for their batch to fill. An urgent one
//! (an enforcement, a policy hit: what raises an alarm at once) makes the
//! uplink send what is spooled right away.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use mamori_proto::agent::v1::{Event, agent_event, device_event, event::Kind, process_event};
use mamori_proto::schema;
use tokio::sync::Notify;

use crate::clock::ClockOffset;
use crate::error::Result;
use crate::spool::Spool;

/// The spool shared by the collectors, the uplink and the flusher.
pub(crate) type SharedSpool = Arc<Mutex<Spool>>;

/// Locks the spool. A panic while it was held leaves it usable (every
/// operation keeps the files consistent before it touches memory), and an
/// agent that keeps collecting beats one that stops.
pub(crate) fn lock(spool: &SharedSpool) -> MutexGuard<'_, Spool> {
    spool.lock().unwrap_or_else(|e| e.into_inner())
}

/// How collectors tell the uplink that events were spooled, and whether one
/// of them must not wait for its batch to fill.
#[derive(Debug, Default)]
pub(crate) struct Wake {
    notify: Notify,
    urgent: AtomicBool,
    /// Sources in a degraded mode, and why; told to the server in a hello.
    degraded: std::sync::Mutex<std::collections::BTreeMap<String, String>>,
    /// Changes of `degraded` so far.
    degraded_changes: std::sync::atomic::AtomicU64,
}

/// The longest degraded-mode text the server keeps.
pub(crate) const MAX_DEGRADED_CHARS: usize = 1024;

impl Wake {
    /// Says `source` works in a degraded mode (`why`), or no longer does
    /// (`None`); the uplink tells the server.
    fn set_degraded(&self, source: &str, why: Option<&str>) {
        let mut map = self.degraded.lock().unwrap_or_else(|e| e.into_inner());
        let changed = match why {
            Some(why) => map.insert(source.to_owned(), why.to_owned()).as_deref() != Some(why),
            None => map.remove(source).is_some(),
        };
        drop(map);
        if changed {
            self.degraded_changes.fetch_add(1, Ordering::AcqRel);
            self.notify.notify_one();
        }
    }

    /// The degraded sources as the hello says them, and the count of
    /// changes they reflect.
    pub(crate) fn degraded(&self) -> (String, u64) {
        let map = self.degraded.lock().unwrap_or_else(|e| e.into_inner());
        let text = map
            .iter()
            .map(|(source, why)| format!("{source}: {why}"))
            .collect::<Vec<_>>()
            .join("; ");
        let changes = self.degraded_changes.load(Ordering::Acquire);
        (text.chars().take(MAX_DEGRADED_CHARS).collect(), changes)
    }

    /// The count of changes so far (cheap: no lock).
    pub(crate) fn degraded_changes(&self) -> u64 {
        self.degraded_changes.load(Ordering::Acquire)
    }

    /// Called after an event is spooled.
    fn spooled(&self, urgent: bool) {
        if urgent {
            self.urgent.store(true, Ordering::Release);
        }
        self.notify.notify_one();
    }

    /// Resolves when an event was spooled since the last call.
    pub(crate) async fn notified(&self) {
        self.notify.notified().await;
    }

    /// Whether an urgent event was spooled since the last call. (A stale
    /// true only sends the next batch early.)
    pub(crate) fn take_urgent(&self) -> bool {
        self.urgent.swap(false, Ordering::AcqRel)
    }
}

/// Events that record an enforcement or always raise an alarm: a stopped or
/// refused program, a refused device, a print job, a change of the PC's
/// environment, an unknown machine on the network. Collectors mark the policy hits only they
/// know of with [`EventSink::emit_urgent`] (a banned app on "log only").
pub(crate) fn is_urgent(kind: &Kind) -> bool {
    match kind {
        Kind::Process(p) => p.action() == process_event::Action::Blocked,
        Kind::Device(d) => d.action() == device_event::Action::Blocked,
        // An administrator wants to know at once that someone tried to
        // remove the agent.
        Kind::Agent(a) => matches!(
            a.action(),
            agent_event::Action::UninstallRefused | agent_event::Action::UninstallAllowed
        ),
        // Rare, and each may complete a mass-printing alarm.
        Kind::Print(_) | Kind::EnvironmentChange(_) | Kind::LanSighting(_) => true,
        _ => false,
    }
}

/// A handle collectors use to report events. Cheap to clone; usable from any
/// thread.
#[derive(Clone)]
pub struct EventSink {
    spool: SharedSpool,
    clock: Arc<ClockOffset>,
    wake: Arc<Wake>,
}

impl std::fmt::Debug for EventSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSink")
            .field("clock_offset_ms", &self.clock.get_ms())
            .finish_non_exhaustive()
    }
}

impl EventSink {
    pub(crate) fn new(spool: SharedSpool, clock: Arc<ClockOffset>, wake: Arc<Wake>) -> Self {
        EventSink { spool, clock, wake }
    }

    /// Creates an event (a fresh UUIDv7 id, the current clock offset
    /// estimate) and spools it; it goes out at once if [`is_urgent`].
    pub fn emit(&self, occurred_at_us: i64, os_user: String, kind: Kind) -> Result<()> {
        let urgent = is_urgent(&kind);
        self.append(occurred_at_us, os_user, kind, urgent)
    }

    /// [`emit`](Self::emit) for an event the collector knows hits the
    /// policy: it goes out at once.
    pub fn emit_urgent(&self, occurred_at_us: i64, os_user: String, kind: Kind) -> Result<()> {
        self.append(occurred_at_us, os_user, kind, true)
    }

    /// Says a source works in a degraded mode (`why`: what it does instead
    /// and why), or no longer does (`None`): a fact of the device on the
    /// server, sent in the next hello.
    pub fn degraded(&self, source: &str, why: Option<&str>) {
        self.wake.set_degraded(source, why);
    }

    /// Reports a source the collector could not read (it carries on).
    pub fn warn(&self, collector: &str, source: &str, message: &str) {
        use mamori_proto::agent::v1::CollectorWarningEvent;
        let kind = Kind::CollectorWarning(CollectorWarningEvent {
            collector: collector.to_owned(),
            source: source.to_owned(),
            message: message.to_owned(),
        });
        if let Err(e) = self.emit(crate::clock::now_us(), String::new(), kind) {
            tracing::warn!(error = %e, "cannot spool a collector warning");
        }
    }

    fn append(
        &self,
        occurred_at_us: i64,
        os_user: String,
        mut kind: Kind,
        urgent: bool,
    ) -> Result<()> {
        // The server refuses a whole batch over one field out of bounds:
        // every field is fitted to the bounds of the schema both share, a
        // time in the future (an OS source's garbage) becomes now, and an
        // event older than the server keeps is left out.
        let Some(occurred_at_us) = plausible_time(occurred_at_us, crate::clock::now_us()) else {
            // Older than the server keeps: it would refuse the whole batch.
            tracing::debug!(
                occurred_at_us,
                "an event older than 400 days is not spooled"
            );
            return Ok(());
        };
        let os_user = schema::fit_str(os_user, schema::max::EVENT_OS_USER);
        schema::fit(&mut kind);
        let event = Event {
            id: uuid::Uuid::now_v7().as_bytes().to_vec(),
            occurred_at_us,
            clock_offset_ms: self.clock.get_ms(),
            os_user,
            kind: Some(kind),
        };
        lock(&self.spool).append(&event)?;
        self.wake.spooled(urgent);
        Ok(())
    }
}

/// Times further ahead than this, or older, are not believed.
const MAX_AHEAD_US: i64 = 3600 * 1_000_000;
const MAX_BEHIND_US: i64 = 400 * 24 * 3600 * 1_000_000;

/// `at`; `now` when `at` is more than an hour ahead of this PC's clock (no
/// clock gave that); none when it is more than 400 days behind (the
/// operation log keeps nothing older). The server refuses either time, and
/// with it the whole batch.
fn plausible_time(at: i64, now: i64) -> Option<i64> {
    if at > now.saturating_add(MAX_AHEAD_US) {
        tracing::warn!(
            occurred_at_us = at,
            now_us = now,
            "an event's time is in the future: using now"
        );
        return Some(now);
    }
    (at >= now.saturating_sub(MAX_BEHIND_US)).then_some(at)
}

#[cfg(test)]
pub(crate) mod testing {
    //! A sink over a spool in a temporary directory, for collector tests.

    use super::*;
    use crate::spool::SpoolConfig;

    pub(crate) fn sink_in(dir: &std::path::Path) -> (EventSink, SharedSpool) {
        let spool = Arc::new(Mutex::new(
            Spool::open(dir.join("spool"), SpoolConfig::with_max_bytes(64 << 20)).unwrap(),
        ));
        let sink = EventSink::new(spool.clone(), Arc::default(), Arc::default());
        (sink, spool)
    }

    /// Every event in the spool that is not acked, oldest first.
    pub(crate) fn spooled(spool: &SharedSpool) -> Vec<Event> {
        let mut spool = lock(spool);
        let mut out = Vec::new();
        let mut from = 0;
        while let Some(b) = spool.read(from, u64::MAX, 1000, 1 << 20).unwrap() {
            from = b.end;
            out.extend(b.events);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::testing::sink_in;
    use super::*;

    #[test]
    fn degraded_sources_are_one_text_and_a_change_count() {
        let dir = tempfile::tempdir().unwrap();
        let (sink, _spool) = sink_in(dir.path());
        let wake = Arc::clone(&sink.wake);
        assert_eq!(wake.degraded(), (String::new(), 0));
        sink.degraded("process", Some("polling (no ETW)"));
        sink.degraded("files", Some("no reads"));
        assert_eq!(
            wake.degraded(),
            ("files: no reads; process: polling (no ETW)".to_owned(), 2)
        );
        // The same again is no change; a recovery is.
        sink.degraded("process", Some("polling (no ETW)"));
        assert_eq!(wake.degraded_changes(), 2);
        sink.degraded("process", None);
        sink.degraded("nothing", None);
        assert_eq!(wake.degraded(), ("files: no reads".to_owned(), 3));
        // Bounded as the server keeps it.
        sink.degraded("files", Some(&"x".repeat(5000)));
        assert_eq!(wake.degraded().0.chars().count(), MAX_DEGRADED_CHARS);
    }
    use mamori_proto::agent::v1::{DeviceEvent, LogonEvent, ProcessEvent};

    fn sink(dir: &std::path::Path) -> (EventSink, Arc<Wake>) {
        let (sink, _spool) = sink_in(dir);
        let wake = sink.wake.clone();
        (sink, wake)
    }

    #[test]
    fn enforcements_go_out_at_once_and_ordinary_events_wait_for_their_batch() {
        let dir = tempfile::tempdir().unwrap();
        let (sink, wake) = sink(dir.path());
        let start = |action: process_event::Action| {
            Kind::Process(ProcessEvent {
                action: action as i32,
                exe_path: "/usr/bin/winny".into(),
                ..Default::default()
            })
        };
        sink.emit(
            crate::clock::now_us(),
            "sato".into(),
            start(process_event::Action::Start),
        )
        .unwrap();
        sink.emit(
            crate::clock::now_us(),
            "sato".into(),
            Kind::Logon(LogonEvent::default()),
        )
        .unwrap();
        assert!(
            !wake.take_urgent(),
            "a start and a logon wait for their batch"
        );

        sink.emit(
            crate::clock::now_us(),
            "sato".into(),
            start(process_event::Action::Blocked),
        )
        .unwrap();
        assert!(wake.take_urgent(), "a killed program goes out at once");
        assert!(!wake.take_urgent(), "and only once");

        let refused = DeviceEvent {
            action: device_event::Action::Blocked as i32,
            ..Default::default()
        };
        sink.emit(crate::clock::now_us(), String::new(), Kind::Device(refused))
            .unwrap();
        assert!(wake.take_urgent(), "a refused device goes out at once");

        // A policy hit only the collector knows of ("log only").
        sink.emit_urgent(
            crate::clock::now_us(),
            "sato".into(),
            start(process_event::Action::Start),
        )
        .unwrap();
        assert!(wake.take_urgent());
    }

    /// Ingest refuses a whole batch over one field out of bounds; the sink
    /// fits every event to the bounds of the shared schema first.
    #[test]
    fn future_times_become_now_and_ancient_events_are_left_out() {
        let now = 1_800_000_000_000_000;
        let hour_ago = now - 3_600_000_000;
        assert_eq!(plausible_time(hour_ago, now), Some(hour_ago));
        assert_eq!(
            plausible_time(now + 60_000_000, now),
            Some(now + 60_000_000)
        );
        // Year 21086 (what a broken source once said).
        assert_eq!(plausible_time(603_000_000_000_000_000, now), Some(now));
        // 1970: older than the server keeps.
        assert_eq!(plausible_time(1, now), None);
    }

    #[test]
    fn events_are_fitted_to_the_schema_before_they_are_spooled() {
        use mamori_proto::agent::v1::{EnvironmentChangeEvent, SoftwareEvent};
        use mamori_proto::schema::max;
        let dir = tempfile::tempdir().unwrap();
        let (sink, spool) = super::testing::sink_in(dir.path());
        sink.emit(
            crate::clock::now_us(),
            "ユーザー".repeat(100),
            Kind::Software(SoftwareEvent {
                action: 1,
                name: "pkg".into(),
                version: "1.0-".repeat(200),
                publisher: "a\0b".into(),
                inventory: false,
            }),
        )
        .unwrap();
        sink.emit(
            crate::clock::now_us(),
            String::new(),
            Kind::EnvironmentChange(EnvironmentChangeEvent {
                field: 3,
                old_value: String::new(),
                new_value: "2001:db8::1, ".repeat(200),
            }),
        )
        .unwrap();
        let events = super::testing::spooled(&spool);
        assert!(events[0].os_user.len() <= max::EVENT_OS_USER);
        assert!(events[0].os_user.starts_with("ユーザー"));
        let Some(Kind::Software(s)) = &events[0].kind else {
            panic!("{:?}", events[0]);
        };
        assert_eq!(s.version.len(), max::SOFTWARE_VERSION);
        assert_eq!(s.publisher, "ab");
        let Some(Kind::EnvironmentChange(c)) = &events[1].kind else {
            panic!("{:?}", events[1]);
        };
        assert_eq!(c.new_value.len(), max::ENVIRONMENT_CHANGE_NEW_VALUE);
    }
}
