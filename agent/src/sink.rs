//! Where collectors put events: stamps them (id, clock offset) and appends
//! them to the spool, then wakes the uplink.
//!
//! Appending is synchronous and short (one `write(2)`), so when `emit`
//! returns the event is durable against the agent dying, and a collector may
//! record its own progress (the wtmp offset, say) right after.

use std::sync::{Arc, Mutex, MutexGuard};

use mamori_proto::agent::v1::{Event, event::Kind};
use tokio::sync::Notify;

use crate::clock::ClockOffset;
use crate::error::Result;
use crate::spool::Spool;
use crate::text::truncate_utf8;

/// Longest user name the server accepts, in bytes.
const MAX_USER: usize = 256;

/// The spool shared by the collectors, the uplink and the flusher.
pub(crate) type SharedSpool = Arc<Mutex<Spool>>;

/// Locks the spool. A panic while it was held leaves it usable (every
/// operation keeps the files consistent before it touches memory), and an
/// agent that keeps collecting beats one that stops.
pub(crate) fn lock(spool: &SharedSpool) -> MutexGuard<'_, Spool> {
    spool.lock().unwrap_or_else(|e| e.into_inner())
}

/// A handle collectors use to report events. Cheap to clone; usable from any
/// thread.
#[derive(Clone)]
pub struct EventSink {
    spool: SharedSpool,
    clock: Arc<ClockOffset>,
    wake: Arc<Notify>,
}

impl std::fmt::Debug for EventSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSink")
            .field("clock_offset_ms", &self.clock.get_ms())
            .finish_non_exhaustive()
    }
}

impl EventSink {
    pub(crate) fn new(spool: SharedSpool, clock: Arc<ClockOffset>, wake: Arc<Notify>) -> Self {
        EventSink { spool, clock, wake }
    }

    /// Creates an event (a fresh UUIDv7 id, the current clock offset
    /// estimate) and spools it.
    pub fn emit(&self, occurred_at_us: i64, mut os_user: String, kind: Kind) -> Result<()> {
        // The server refuses a whole batch over one bad field; keep the user
        // name within its bounds here rather than lose the batch.
        if os_user.len() > MAX_USER || os_user.contains('\0') {
            os_user = truncate_utf8(os_user.replace('\0', ""), MAX_USER);
        }
        let event = Event {
            id: uuid::Uuid::now_v7().as_bytes().to_vec(),
            occurred_at_us,
            clock_offset_ms: self.clock.get_ms(),
            os_user,
            kind: Some(kind),
        };
        lock(&self.spool).append(&event)?;
        self.wake.notify_one();
        Ok(())
    }
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
