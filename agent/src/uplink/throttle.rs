//! The token bucket that bounds how fast a backlog is sent after an outage.
//!
//! When the server comes back, every agent of the fleet has a backlog; sent
//! at full speed they would flatten the ingest tier at the moment it is
//! weakest. Each agent drains at most `rate` backlog events per second; live
//! events are not counted.

use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
pub(crate) struct TokenBucket {
    /// Events per second; 0 means unlimited.
    rate: f64,
    capacity: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A bucket holding at most `capacity` events (one batch), full at first.
    pub(crate) fn new(rate: u32, capacity: usize, now: Instant) -> Self {
        TokenBucket {
            rate: f64::from(rate),
            capacity: capacity as f64,
            tokens: capacity as f64,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        self.last = now;
    }

    /// `None` when `n` events may go now, else when they may.
    pub(crate) fn ready_at(&mut self, n: usize, now: Instant) -> Option<Instant> {
        if self.rate == 0.0 {
            return None;
        }
        self.refill(now);
        let n = (n as f64).min(self.capacity);
        if self.tokens >= n {
            return None;
        }
        Some(now + Duration::from_secs_f64((n - self.tokens) / self.rate))
    }

    /// Records that `n` events were sent.
    pub(crate) fn take(&mut self, n: usize) {
        if self.rate != 0.0 {
            self.tokens -= n as f64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_the_rate_and_unlimited_never_waits() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, 500, t0);
        assert_eq!(b.ready_at(500, t0), None, "starts full");
        b.take(500);
        let at = b.ready_at(500, t0).unwrap();
        assert_eq!(at - t0, Duration::from_millis(500));
        assert_eq!(b.ready_at(250, t0 + Duration::from_millis(250)), None);

        let mut unlimited = TokenBucket::new(0, 500, t0);
        unlimited.take(1_000_000);
        assert_eq!(unlimited.ready_at(500, t0), None);
    }
}
