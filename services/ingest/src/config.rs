//! The ingest configuration (`[ingest]` in the config file, `MAMORI_*`).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// PostgreSQL and Redis (the settings every role shares).
    #[serde(flatten)]
    pub stores: mamori_config::Stores,
    /// The event streams' shard count (ingest, writer and alerting).
    #[serde(flatten)]
    pub streams: mamori_config::Streams,
    /// gRPC listen address for agents.
    pub ingest_addr: String,
    /// Metrics and health endpoint.
    pub ingest_ops_addr: String,
    /// PEM certificate chain and key; both empty means plain HTTP/2, which
    /// is allowed on loopback addresses only.
    pub ingest_tls_cert: String,
    pub ingest_tls_key: String,
    /// Replicas that must have a batch before it is acked (Redis `WAIT`):
    /// 0 for a single Redis; 1 or more with replicas, so that an acked batch
    /// survives the loss of its master.
    pub redis_wait_replicas: u32,
    /// How long to wait for them; past it the agent is told to retry (its
    /// batch may be in Redis already: the writer stores each event once).
    pub redis_wait_timeout_ms: u64,
    pub max_batch_events: u32,
    pub max_message_bytes: u32,
    /// Sustained events per second one device may send, and its burst.
    pub device_rate: u32,
    pub device_burst: u32,
    /// Failed authentications (enrollment token, device credential) per
    /// second from one client address, and their burst; past them the
    /// address is refused for a while without a database lookup.
    pub auth_failure_rate: u32,
    pub auth_failure_burst: u32,
    /// Sustained events per second one tenant may send.
    pub tenant_rate: u32,
    pub tenant_burst: u32,
    /// The device and tenant rates hold across every ingest replica (one
    /// Redis call per batch); off, each process has its own budgets.
    pub shared_rate_limits: bool,
    /// Past this many entries held in the streams, new batches are told to
    /// retry later instead of growing Redis without bound.
    pub max_stream_backlog: u64,
    /// Past this many entries in the alerting service's overflow lanes, the
    /// tenants it has penalised (their alarm evaluation costs too much)
    /// are told to retry later; the others are not held up.
    pub max_alerting_overflow: u64,
    /// Back-pressure: while the slowest stream consumer (the writer) is
    /// further behind than this, acks wait...
    pub max_backlog_ms: u64,
    /// ...for at most this long, then the agent is told to retry later.
    pub backpressure_wait_ms: u64,
    /// How often open streams are checked against device revocations.
    pub revocation_check_ms: u64,
    /// How often connected agents' policy revisions are compared with their
    /// tenants' (behind the immediate change notices), milliseconds.
    pub policy_sweep_ms: u64,
    /// Connections older than this are closed (after a 30 s grace), so that
    /// agents spread again over the replicas; 0 keeps them open.
    pub max_connection_age_s: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            stores: mamori_config::Stores::with_pool(8),
            streams: mamori_config::Streams::default(),
            ingest_addr: "127.0.0.1:50051".into(),
            ingest_ops_addr: "127.0.0.1:9101".into(),
            ingest_tls_cert: String::new(),
            ingest_tls_key: String::new(),
            redis_wait_replicas: 0,
            redis_wait_timeout_ms: 1_000,
            max_batch_events: 1000,
            max_message_bytes: 4 * 1024 * 1024,
            device_rate: 5_000,
            device_burst: 50_000,
            auth_failure_rate: 2,
            auth_failure_burst: 50,
            tenant_rate: 500_000,
            tenant_burst: 1_000_000,
            shared_rate_limits: true,
            max_stream_backlog: 2_000_000,
            max_alerting_overflow: 10_000,
            max_backlog_ms: 1_000,
            backpressure_wait_ms: 10_000,
            revocation_check_ms: 2_000,
            policy_sweep_ms: 15_000,
            max_connection_age_s: 3_600,
        }
    }
}

impl Config {
    /// Checks what serde cannot; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        self.stores.validate()?;
        self.streams.validate()?;
        if self.max_batch_events == 0 || self.max_batch_events > 10_000 {
            return Err("max_batch_events must be 1..=10000".into());
        }
        if self.max_message_bytes < 64 * 1024 || self.max_message_bytes > 64 * 1024 * 1024 {
            return Err("max_message_bytes must be 64 KiB..=64 MiB".into());
        }
        if self.device_rate == 0 || self.tenant_rate == 0 {
            return Err("device_rate and tenant_rate must be positive".into());
        }
        // A batch needing more than the burst and two seconds of the rate
        // would be refused every time it is sent.
        for (what, rate, burst) in [
            ("device", self.device_rate, self.device_burst),
            ("tenant", self.tenant_rate, self.tenant_burst),
        ] {
            let fits = u64::from(burst.max(rate)) + 2 * u64::from(rate);
            if u64::from(self.max_batch_events) > fits {
                return Err(format!(
                    "max_batch_events ({}) is more than a {what} may ever send at once ({what}_burst plus two seconds of {what}_rate: {fits}); raise {what}_burst",
                    self.max_batch_events
                ));
            }
        }
        if self.ingest_tls_cert.is_empty() != self.ingest_tls_key.is_empty() {
            return Err("ingest_tls_cert and ingest_tls_key must be set together".into());
        }
        if self.redis_wait_replicas > 16 {
            return Err("redis_wait_replicas must be 0..=16".into());
        }
        if self.redis_wait_timeout_ms == 0 || self.redis_wait_timeout_ms > 60_000 {
            return Err("redis_wait_timeout_ms must be 1..=60000".into());
        }
        if self.policy_sweep_ms == 0 {
            return Err("policy_sweep_ms must be positive".into());
        }
        if self.revocation_check_ms == 0 {
            return Err("revocation_check_ms must be positive".into());
        }
        Ok(())
    }

    pub fn tls_enabled(&self) -> bool {
        !self.ingest_tls_cert.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_larger_than_a_device_may_ever_send_is_refused_by_name() {
        assert_eq!(Config::default().validate(), Ok(()));
        let e = Config {
            device_rate: 100,
            device_burst: 200,
            max_batch_events: 1000,
            ..Config::default()
        }
        .validate()
        .unwrap_err();
        assert!(
            e.contains("max_batch_events") && e.contains("device_burst"),
            "{e}"
        );
    }
}
