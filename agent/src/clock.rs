//! The device clock and the agent's estimate of how far it is from the
//! server's.
//!
//! Every ack carries the server's clock; the difference to the local clock
//! when the ack arrives (smoothed, because network delays jitter) is stamped
//! on each event as it is created, so the server can correct the time of
//! events from a device whose clock is off. The estimate starts at 0 and is
//! not persisted: a restarted agent learns it again from its first ack.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch by the device clock.
pub(crate) fn now_us() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_micros() as i64,
        Err(e) => -(e.duration().as_micros() as i64),
    }
}

/// The current estimate, shared by the uplink (which updates it) and every
/// place that creates events.
#[derive(Debug, Default)]
pub struct ClockOffset {
    offset_ms: AtomicI64,
}

impl ClockOffset {
    /// Server clock minus device clock, in milliseconds.
    pub fn get_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::Relaxed)
    }

    fn set_ms(&self, ms: i64) {
        self.offset_ms.store(ms, Ordering::Relaxed);
    }
}

/// Smooths the samples taken from acks into the shared [`ClockOffset`].
#[derive(Debug, Default)]
pub(crate) struct OffsetEstimator {
    estimate_us: Option<f64>,
}

impl OffsetEstimator {
    /// Weight of a new sample. Small enough that one slow ack barely moves
    /// the estimate.
    const ALPHA: f64 = 0.125;
    /// A sample this far from the estimate means the device clock was set
    /// (NTP step, manual change): start over from it rather than crawl there.
    const JUMP_US: f64 = 60_000_000.0;

    /// Takes the server's time from an ack and the local time it arrived.
    pub(crate) fn observe(&mut self, server_time_us: i64, local_now_us: i64, shared: &ClockOffset) {
        if server_time_us <= 0 {
            // The server did not say.
            return;
        }
        let sample = (server_time_us - local_now_us) as f64;
        let estimate = match self.estimate_us {
            Some(e) if (sample - e).abs() < Self::JUMP_US => e + Self::ALPHA * (sample - e),
            _ => sample,
        };
        self.estimate_us = Some(estimate);
        shared.set_ms((estimate / 1000.0).round() as i64);
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's
/// algorithm).
pub(crate) fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_sample_sets_then_smooths_and_jumps_reset() {
        let shared = ClockOffset::default();
        let mut est = OffsetEstimator::default();
        assert_eq!(shared.get_ms(), 0);
        est.observe(1_000_000_000 + 5_000_000, 1_000_000_000, &shared);
        assert_eq!(shared.get_ms(), 5_000);
        // One ack delayed by 800 ms moves the estimate by an eighth of it.
        est.observe(2_000_000_000 + 5_800_000, 2_000_000_000, &shared);
        assert_eq!(shared.get_ms(), 5_100);
        // The device clock was stepped by an hour.
        est.observe(9_000_000_000 - 3_600_000_000, 9_000_000_000, &shared);
        assert_eq!(shared.get_ms(), -3_600_000);
        // A server that does not fill the field changes nothing.
        est.observe(0, 4_000_000_000, &shared);
        assert_eq!(shared.get_ms(), -3_600_000);
    }
}
