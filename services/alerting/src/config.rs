//! The alerting configuration (`[alerting]` in the config file, `MAMORI_*`).

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
    /// The key-encryption key (the gateway's, policy's and alerting's).
    #[serde(flatten)]
    pub kek: mamori_config::KeyEncryption,
    /// Metrics and health endpoint.
    pub alerting_ops_addr: String,
    /// The consumer name in the group; empty means hostname-pid-random.
    pub alerting_consumer: String,
    pub alerting_read_count: u32,
    pub alerting_claim_idle_ms: u64,
    /// What one tenant's work may cost per read of a shard, in
    /// milliseconds: the CPU time of its rule evaluation plus 1 ms per hit
    /// recorded. A tenant over it has its events evaluated in the shard's
    /// overflow lane instead, so that it does not hold up the others.
    pub alerting_tenant_budget_ms: u64,
    /// How long a tenant over its budget stays in the overflow lane.
    pub alerting_overflow_s: u64,
    /// The overflow lanes of a process use at most this share of one core
    /// (percent); beyond it they wait and fall behind, not the others.
    pub alerting_overflow_cpu_percent: u32,
    /// The same rule on the same device (and user) within this many seconds
    /// counts into one open alarm.
    pub alarm_window_s: u64,
    /// "New app launched" stays quiet for a tenant's first this-many
    /// seconds, while the inventory of its ordinary apps builds up.
    pub new_app_learning_s: u64,
    /// How often the outbox is polled (it is also woken after each alarm).
    pub notify_poll_ms: u64,
    /// Delivery attempts before a notification is given up (with
    /// exponential backoff from 2 s, capped at an hour between attempts).
    pub notify_max_attempts: i32,
    /// A sender's claim on a notification lasts this long; a sender that
    /// died holding one lets another retry it after that. Longer than a
    /// delivery may take.
    pub notify_lease_s: u32,
    /// Digest notifications go out at most this often, seconds.
    pub digest_interval_s: u64,
    /// Alarm e-mails one tenant may queue per day (UTC); past it they are
    /// not sent (the alarms are still raised) and the tenant's
    /// administrators are told once.
    pub mail_daily_quota: u32,
    pub webhook_timeout_ms: u64,
    /// Outgoing mail: `smtp://host:port` (STARTTLS when offered), `smtps://…`,
    /// a pickup directory, or neither (logged).
    pub smtp_url: String,
    pub mail_dir: String,
    pub mail_from: String,
    /// The console's address, for links in notifications.
    pub public_url: String,
    /// Deliver to private, loopback and link-local webhook addresses (a
    /// local setup, tests); off, a webhook resolving to one is refused.
    pub webhook_allow_private: bool,
    /// The DNS server (`ip:port`) webhook hosts are resolved with; empty:
    /// the system's resolver.
    pub webhook_dns_server: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            stores: mamori_config::Stores::with_pool(8),
            streams: mamori_config::Streams::default(),
            kek: mamori_config::KeyEncryption::default(),
            alerting_ops_addr: "127.0.0.1:9104".into(),
            alerting_consumer: String::new(),
            alerting_read_count: 64,
            alerting_claim_idle_ms: 30_000,
            alerting_tenant_budget_ms: 20,
            alerting_overflow_s: 60,
            alerting_overflow_cpu_percent: 50,
            alarm_window_s: 3600,
            new_app_learning_s: 86_400,
            notify_poll_ms: 1000,
            notify_max_attempts: 15,
            notify_lease_s: 90,
            digest_interval_s: 3600,
            mail_daily_quota: 500,
            webhook_timeout_ms: 10_000,
            smtp_url: String::new(),
            mail_dir: String::new(),
            mail_from: "Mamori <alarms@mamori.localhost>".into(),
            public_url: "http://127.0.0.1:8080".into(),
            webhook_allow_private: false,
            webhook_dns_server: String::new(),
        }
    }
}

impl Config {
    pub fn validate(&self) -> Result<(), String> {
        self.stores.validate()?;
        self.streams.validate()?;
        if !(1..=10_000).contains(&self.alerting_read_count) {
            return Err("alerting_read_count must be 1..=10000".into());
        }
        if self.alerting_claim_idle_ms < 100 {
            return Err("alerting_claim_idle_ms must be at least 100".into());
        }
        if !(1..=60_000).contains(&self.alerting_tenant_budget_ms) {
            return Err("alerting_tenant_budget_ms must be 1..=60000".into());
        }
        if !(1..=86_400).contains(&self.alerting_overflow_s) {
            return Err("alerting_overflow_s must be 1..=86400".into());
        }
        if !(1..=6400).contains(&self.alerting_overflow_cpu_percent) {
            return Err("alerting_overflow_cpu_percent must be 1..=6400".into());
        }
        if !(1..=7 * 86_400).contains(&self.alarm_window_s) {
            return Err("alarm_window_s must be between 1 and 604800".into());
        }
        if self.notify_poll_ms == 0 || self.notify_max_attempts < 1 || self.notify_lease_s == 0 {
            return Err(
                "notify_poll_ms, notify_max_attempts and notify_lease_s must be positive".into(),
            );
        }
        if self.mail_daily_quota == 0 {
            return Err("mail_daily_quota must be positive".into());
        }
        if self.digest_interval_s == 0 || self.webhook_timeout_ms == 0 {
            return Err("digest_interval_s and webhook_timeout_ms must be positive".into());
        }
        self.kek.validate("webhook secrets are sealed under it")?;
        Ok(())
    }
}
