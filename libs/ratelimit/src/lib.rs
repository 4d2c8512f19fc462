//! Rate limits that hold across every replica of a role: GCRA (the
//! generic cell rate algorithm, a token bucket kept as one timestamp per
//! key) evaluated in Redis by one script call, so a device that opens
//! streams on two ingest replicas, or a client that spreads its requests
//! over the gateways, still gets one budget.
//!
//! **When Redis does not answer** (an error, or no reply within the
//! timeout) [`Shared::take`] returns `None` and the caller applies its
//! per-process limit instead; Redis is not asked again for two seconds.
//! The limits fail *open to per-process budgets*, so a Redis outage
//! slows nobody down more than before, and
//! during it a client's ceiling is the configured rate times the number of
//! replicas it reaches. Every such fallback is counted
//! (`mamori_rate_limit_fallbacks_total`) and logged when it starts and ends.
//!
//! Keys of one call must share a Redis Cluster hash tag (the script touches
//! all of them); callers build them with [`key`].

use mamori_streams::Conn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A sustained rate (per second) and the burst allowed above it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub rate: u32,
    pub burst: u32,
}

/// What a take decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Taken; the caller waits this long first (zero when within the burst).
    Go(Duration),
    /// Nothing taken: limit number `limit` (index into the keys) would make
    /// the caller wait `wait`, longer than it may.
    Refused { limit: usize, wait: Duration },
}

/// Every key's theoretical arrival time (µs, Redis's clock) moves on by
/// `n` emission intervals; if any would then be further ahead than its
/// burst allows by more than the maximum wait, nothing changes and the
/// index of that key is returned.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = tonumber(ARGV[1])
local max_wait = tonumber(ARGV[2])
local wait = 0
local tats = {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[1 + 2 * i])
  local burst = tonumber(ARGV[2 + 2 * i])
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then tat = now end
  local new_tat = tat + n * interval
  local w = new_tat - burst * interval - now
  if w > max_wait then
    return {i, math.ceil(w)}
  end
  if w > wait then wait = w end
  tats[i] = new_tat
end
for i, key in ipairs(KEYS) do
  redis.call('SET', key, string.format('%.0f', tats[i]), 'PX', math.ceil((tats[i] - now) / 1000) + 1000)
end
return {0, math.ceil(wait)}
";

/// A limit key: `mamori:rl:{<tag>}:<name>`; keys with the same `tag` are
/// in the same cluster slot and may be taken from in one call.
pub fn key(tag: &str, name: &str) -> String {
    format!("mamori:rl:{{{tag}}}:{name}")
}

/// The shared limiter of one role.
pub struct Shared {
    conn: Conn,
    script: redis::Script,
    timeout: Duration,
    role: &'static str,
    /// Whether the last call fell back (for logging the change only).
    down: AtomicBool,
    /// After a failure Redis is not asked again before this: a frozen Redis
    /// would otherwise cost every request the whole timeout.
    retry_at: std::sync::Mutex<Option<Instant>>,
}

/// How long the per-process limits apply alone after Redis failed to
/// answer, before Redis is asked again.
const RETRY_AFTER: Duration = Duration::from_secs(2);

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("role", &self.role)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Shared {
    /// `timeout` bounds each call: past it the caller's local limit applies.
    pub fn new(conn: Conn, role: &'static str, timeout: Duration) -> Self {
        Self {
            conn,
            script: redis::Script::new(GCRA),
            timeout,
            role,
            down: AtomicBool::new(false),
            retry_at: std::sync::Mutex::new(None),
        }
    }

    /// Takes `n` from every `(key, limit)` at once, or from none of them.
    /// `None`: Redis did not decide (fall back to the local limit).
    pub async fn take(
        &self,
        keys: &[(String, Limit)],
        n: u32,
        max_wait: Duration,
    ) -> Option<Verdict> {
        let backing_off = self
            .retry_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|at| Instant::now() < at);
        if backing_off {
            metrics::counter!("mamori_rate_limit_fallbacks_total", "role" => self.role)
                .increment(1);
            return None;
        }
        let mut call = self.script.prepare_invoke();
        call.arg(n).arg(max_wait.as_micros() as u64);
        for (k, limit) in keys {
            let rate = f64::from(limit.rate.max(1));
            call.key(k)
                .arg(1_000_000.0 / rate)
                .arg(limit.burst.max(limit.rate).max(1));
        }
        let mut conn = self.conn.clone();
        let reply = tokio::time::timeout(self.timeout, call.invoke_async::<(i64, i64)>(&mut conn));
        match reply.await {
            Ok(Ok((refused, wait_us))) => {
                *self.retry_at.lock().unwrap_or_else(|e| e.into_inner()) = None;
                if self.down.swap(false, Ordering::Relaxed) {
                    tracing::info!(
                        role = self.role,
                        "shared rate limits answer again; back from per-process limits"
                    );
                }
                let wait = Duration::from_micros(wait_us.max(0) as u64);
                Some(if refused == 0 {
                    Verdict::Go(wait)
                } else {
                    Verdict::Refused {
                        limit: (refused - 1).max(0) as usize,
                        wait,
                    }
                })
            }
            failed => {
                *self.retry_at.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(Instant::now() + RETRY_AFTER);
                metrics::counter!("mamori_rate_limit_fallbacks_total", "role" => self.role)
                    .increment(1);
                if !self.down.swap(true, Ordering::Relaxed) {
                    let why = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => format!("no answer within {} ms", self.timeout.as_millis()),
                    };
                    tracing::warn!(role = self.role, error = %why, "shared rate limits unavailable: per-process limits apply until Redis answers");
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn shared() -> (mamori_test_support::TestEnv, Shared) {
        let env = mamori_test_support::TestEnv::new().await;
        let (_, conn) = mamori_streams::connect(&env.redis_url).await.unwrap();
        (env, Shared::new(conn, "test", Duration::from_secs(2)))
    }

    const L: Limit = Limit {
        rate: 10,
        burst: 20,
    };

    #[tokio::test]
    async fn a_burst_then_a_wait_then_a_refusal_taking_nothing() {
        let (_env, s) = shared().await;
        let k = vec![(key("t1", "device:a"), L)];
        let max = Duration::from_secs(2);
        assert_eq!(s.take(&k, 20, max).await, Some(Verdict::Go(Duration::ZERO)));
        // 10 more at 10/s: about a second's wait.
        let Some(Verdict::Go(w)) = s.take(&k, 10, max).await else {
            panic!("within the wait");
        };
        assert!(
            w > Duration::from_millis(900) && w <= Duration::from_secs(1),
            "{w:?}"
        );
        // 30 more would be 4 s: refused, and nothing taken.
        let Some(Verdict::Refused { limit: 0, wait }) = s.take(&k, 30, max).await else {
            panic!("refused");
        };
        assert!(wait > Duration::from_secs(3), "{wait:?}");
        let Some(Verdict::Go(w2)) = s.take(&k, 1, max).await else {
            panic!("one more fits");
        };
        assert!(
            w2 < Duration::from_millis(1200),
            "the refusal took nothing: {w2:?}"
        );
    }

    #[tokio::test]
    async fn two_limits_move_together_and_the_refusing_one_is_named() {
        let (_env, s) = shared().await;
        let tight = Limit { rate: 1, burst: 5 };
        let keys = vec![(key("t2", "device:a"), L), (key("t2", "tenant"), tight)];
        assert_eq!(
            s.take(&keys, 5, Duration::ZERO).await,
            Some(Verdict::Go(Duration::ZERO))
        );
        let Some(Verdict::Refused { limit: 1, .. }) = s.take(&keys, 1, Duration::ZERO).await else {
            panic!("the tenant's limit refuses");
        };
        // The device's key did not move on the refusal: 15 of its 20 left.
        let dev = vec![(key("t2", "device:a"), L)];
        assert_eq!(
            s.take(&dev, 15, Duration::ZERO).await,
            Some(Verdict::Go(Duration::ZERO))
        );
    }

    #[tokio::test]
    async fn a_frozen_redis_is_no_verdict_until_it_answers_again() {
        let redis = mamori_test_support::RedisProc::start(&[]);
        let signal = |sig: &str| {
            std::process::Command::new("kill")
                .args([sig, &redis.pid().to_string()])
                .status()
                .unwrap()
        };
        let url = redis.url();
        let conn = loop {
            if let Ok((_, c)) = mamori_streams::connect(&url).await {
                break c;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let s = Shared::new(conn, "test", Duration::from_millis(200));
        let k = [(key("t3", "x"), L)];
        assert_eq!(
            s.take(&k, 1, Duration::ZERO).await,
            Some(Verdict::Go(Duration::ZERO))
        );
        // Stopped, Redis holds the connection open and answers nothing.
        signal("-STOP");
        assert_eq!(s.take(&k, 1, Duration::ZERO).await, None);
        signal("-CONT");
        let mut verdict = None;
        for _ in 0..50 {
            verdict = s.take(&k, 1, Duration::ZERO).await;
            if verdict.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            verdict,
            Some(Verdict::Go(Duration::ZERO)),
            "back once it answers"
        );
    }
}
