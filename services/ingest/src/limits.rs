//! Rate limits per device and per tenant.
//!
//! The event budgets of a device and of its tenant are shared by every
//! stream on every ingest replica: one GCRA call to Redis per batch takes
//! from both ([`EventLimits`]). When Redis does not answer in time, the
//! per-process token buckets below apply instead (see `mamori_ratelimit`
//! for which way that fails).
//!
//! A batch that finds too few tokens waits for them when the wait is short
//! (back-pressure the agent sees as a slower ack); past that the stream ends
//! with RESOURCE_EXHAUSTED and the agent retries later with its data intact.
//! A device's bucket is shared by all its streams on this process (a
//! device has one live stream at a time anyway: a new one closes the older);
//! Hello and PolicyApplied messages take from it too.

use mamori_ratelimit::{Limit, Shared, Verdict};
use mamori_tenancy::{DeviceId, TenantId};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The longest a batch waits for tokens before the agent is told to retry.
const MAX_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub(crate) struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    pub(crate) fn new(rate: u32, burst: u32) -> Self {
        let burst = f64::from(burst.max(rate));
        Self {
            rate: f64::from(rate),
            burst,
            tokens: burst,
            at: Instant::now(),
        }
    }

    /// Takes `n` tokens now and returns how long the caller must wait for
    /// them to have been earned, or `None` (taking nothing) when that is
    /// longer than [`MAX_WAIT`].
    pub(crate) fn take(&mut self, n: u32) -> Option<Duration> {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(self.burst);
        self.at = now;
        let n = f64::from(n);
        let wait = if self.tokens >= n {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((n - self.tokens) / self.rate)
        };
        if wait > MAX_WAIT {
            return None;
        }
        self.tokens -= n;
        Some(wait)
    }
}

/// Buckets by key (device, tenant), shared by every stream of this process
/// that takes from them: a device gets one budget however many streams it
/// opens or however often it reconnects.
#[derive(Debug)]
pub(crate) struct Buckets<K> {
    rate: u32,
    burst: u32,
    buckets: Mutex<HashMap<K, Bucket>>,
}

/// Buckets idle this long are full again and can be forgotten.
const IDLE: Duration = Duration::from_secs(600);
const SWEEP_AT: usize = 100_000;

impl<K: std::hash::Hash + Eq + Copy> Buckets<K> {
    pub(crate) fn new(rate: u32, burst: u32) -> Self {
        Self {
            rate,
            burst,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `key`'s bucket holds a whole token now (takes nothing).
    pub(crate) fn has_token(&self, key: K) -> bool {
        let buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        buckets.get(&key).is_none_or(|b| {
            b.tokens + Instant::now().duration_since(b.at).as_secs_f64() * b.rate >= 1.0
        })
    }

    /// Takes one token from `key`'s bucket if it holds one now.
    pub(crate) fn try_take(&self, key: K) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let b = buckets
            .entry(key)
            .or_insert_with(|| Bucket::new(self.rate, self.burst));
        let now = Instant::now();
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * b.rate).min(b.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// [`Bucket::take`] on `key`'s bucket.
    pub(crate) fn take(&self, key: K, n: u32) -> Option<Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= SWEEP_AT {
            let now = Instant::now();
            buckets.retain(|_, b| now.duration_since(b.at) < IDLE);
        }
        buckets
            .entry(key)
            .or_insert_with(|| Bucket::new(self.rate, self.burst))
            .take(n)
    }
}

/// The event budgets of devices and tenants.
#[derive(Debug)]
pub(crate) struct EventLimits {
    /// None when shared limits are switched off (`shared_rate_limits`).
    pub(crate) shared: Option<Shared>,
    pub(crate) device: Limit,
    pub(crate) tenant: Limit,
    pub(crate) local_device: Buckets<DeviceId>,
    pub(crate) local_tenant: Buckets<TenantId>,
}

impl EventLimits {
    pub(crate) fn new(shared: Option<Shared>, device: Limit, tenant: Limit) -> Self {
        Self {
            shared,
            device,
            tenant,
            local_device: Buckets::new(device.rate, device.burst),
            local_tenant: Buckets::new(tenant.rate, tenant.burst),
        }
    }

    /// Takes `n` events from the device's and the tenant's budgets: how
    /// long to wait first, or the refusal the agent gets.
    pub(crate) async fn take(
        &self,
        tenant: TenantId,
        device: DeviceId,
        n: u32,
    ) -> Result<Duration, tonic::Status> {
        let device_refused =
            || tonic::Status::resource_exhausted("device rate limit exceeded, retry later");
        let tenant_refused =
            || tonic::Status::resource_exhausted("tenant rate limit exceeded, retry later");
        if let Some(shared) = &self.shared {
            let tag = tenant.to_string();
            let keys = [
                (
                    mamori_ratelimit::key(&tag, &format!("device:{device}")),
                    self.device,
                ),
                (mamori_ratelimit::key(&tag, "tenant"), self.tenant),
            ];
            match shared.take(&keys, n, MAX_WAIT).await {
                Some(Verdict::Go(wait)) => return Ok(wait),
                Some(Verdict::Refused { limit: 0, .. }) => return Err(device_refused()),
                Some(Verdict::Refused { .. }) => return Err(tenant_refused()),
                None => {}
            }
        }
        let wait = self
            .local_device
            .take(device, n)
            .ok_or_else(device_refused)?;
        let tenant_wait = self
            .local_tenant
            .take(tenant, n)
            .ok_or_else(tenant_refused)?;
        Ok(wait.max(tenant_wait))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_keeps_its_bucket() {
        let b = Buckets::new(1, 10);
        assert_eq!(b.take(1u8, 10), Some(Duration::ZERO));
        // The same device again (another stream): the bucket is empty.
        assert_eq!(b.take(1u8, 10), None);
        assert_eq!(b.take(2u8, 10), Some(Duration::ZERO));
    }

    #[test]
    fn burst_then_wait_then_refuse() {
        let mut b = Bucket::new(100, 100);
        assert_eq!(b.take(100), Some(Duration::ZERO));
        let wait = b.take(50).unwrap();
        assert!(
            wait > Duration::from_millis(400) && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        assert_eq!(b.take(1000), None, "a wait over two seconds is refused");
    }
}
