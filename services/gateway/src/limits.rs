//! Rate limits: per client address, per tenant, and a stricter one per
//! address for login, signup and refresh. They hold across every gateway
//! replica (GCRA in Redis, `mamori_ratelimit`); when Redis does not answer
//! in time, the per-process token buckets below apply instead, so during a
//! Redis outage the ceilings are the configured rates times the replicas.

use crate::error::{ApiError, ApiResult};
use mamori_tenancy::TenantId;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mamori_ratelimit::{Limit, Shared, Verdict};

/// Buckets idle this long are forgotten when the map is swept.
const IDLE_SECS: f64 = 600.0;
const SWEEP_AT: usize = 100_000;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Debug)]
pub struct Keyed<K> {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Hash + Eq + Copy> Keyed<K> {
    pub fn new(rate: u32, burst: u32) -> Self {
        Self {
            rate: f64::from(rate),
            burst: f64::from(burst.max(rate)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token, or says how many whole seconds until one is there.
    pub fn take(&self, key: K) -> Result<(), u64> {
        let now = Instant::now();
        let mut map = self.buckets.lock().expect("rate limit lock");
        if map.len() >= SWEEP_AT {
            map.retain(|_, b| now.duration_since(b.at).as_secs_f64() < IDLE_SECS);
        }
        let b = map.entry(key).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * self.rate).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - b.tokens) / self.rate).ceil() as u64)
        }
    }
}

/// One limit: its rate, the shared key's name, the local fallback.
#[derive(Debug)]
pub struct Rule<K> {
    pub limit: Limit,
    pub local: Keyed<K>,
}

impl<K: Hash + Eq + Copy> Rule<K> {
    pub fn new(rate: u32, burst: u32) -> Self {
        Self {
            limit: Limit { rate, burst },
            local: Keyed::new(rate, burst),
        }
    }
}

#[derive(Debug)]
pub struct Limits {
    /// None when shared limits are off (`shared_rate_limits`).
    pub shared: Option<Shared>,
    pub ip: Rule<IpAddr>,
    pub tenant: Rule<TenantId>,
    pub auth: Rule<IpAddr>,
}

impl Limits {
    /// Takes one request from `rule` for `key` (`tag` and `name` make its
    /// shared key), or says how many whole seconds to wait.
    async fn take<K: Hash + Eq + Copy>(
        &self,
        rule: &Rule<K>,
        key: K,
        tag: &str,
        name: &str,
    ) -> Result<(), u64> {
        if let Some(shared) = &self.shared {
            let keys = [(mamori_ratelimit::key(tag, name), rule.limit)];
            match shared.take(&keys, 1, Duration::ZERO).await {
                Some(Verdict::Go(_)) => return Ok(()),
                Some(Verdict::Refused { wait, .. }) => {
                    return Err(wait.as_secs_f64().ceil().max(1.0) as u64);
                }
                None => {}
            }
        }
        rule.local.take(key)
    }

    pub async fn ip(&self, ip: IpAddr) -> ApiResult<()> {
        let ip = client_key(ip);
        self.take(&self.ip, ip, &ip.to_string(), "api")
            .await
            .map_err(|s| {
                ApiError::rate_limited(s, "too many requests from this address, slow down")
            })
    }

    pub async fn tenant(&self, tenant: TenantId) -> ApiResult<()> {
        self.take(&self.tenant, tenant, &tenant.to_string(), "api")
            .await
            .map_err(|s| ApiError::rate_limited(s, "too many requests for this tenant, slow down"))
    }

    pub async fn auth(&self, ip: Option<IpAddr>) -> ApiResult<()> {
        match ip {
            Some(ip) => {
                let ip = client_key(ip);
                self.take(&self.auth, ip, &ip.to_string(), "sign-in")
                    .await
                    .map_err(|s| {
                        ApiError::rate_limited(
                            s,
                            "too many sign-in attempts from this address, wait",
                        )
                    })
            }
            None => Ok(()),
        }
    }
}

/// The key a client address is limited by: an IPv4 address as it is, an
/// IPv6 address by its /64 (one host usually holds a whole /64, and would
/// otherwise get a fresh budget for each of its 2^64 addresses).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match crate::proxies::canonical(ip) {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_host_gets_one_budget_for_its_64() {
        let k = Keyed::new(1, 2);
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:1:2:3".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        k.take(client_key(a)).unwrap();
        k.take(client_key(b)).unwrap();
        assert!(k.take(client_key(a)).is_err(), "the /64 has used its burst");
        k.take(client_key(other)).unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(client_key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn burst_then_refusal_with_a_wait() {
        let k = Keyed::new(1, 3);
        for _ in 0..3 {
            k.take(1u8).unwrap();
        }
        assert_eq!(k.take(1u8), Err(1));
        k.take(2u8).unwrap();
    }
}
