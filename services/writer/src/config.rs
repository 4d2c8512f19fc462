//! The writer configuration (`[writer]` in the config file, `MAMORI_*`).

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
    /// Metrics and health endpoint.
    pub writer_ops_addr: String,
    /// The consumer name in the group; empty means hostname-pid-random.
    pub writer_consumer: String,
    /// Stream entries (batches) read per XREADGROUP.
    pub writer_read_count: u32,
    /// Entries pending this long on another consumer are claimed.
    pub writer_claim_idle_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            stores: mamori_config::Stores::with_pool(8),
            streams: mamori_config::Streams::default(),
            writer_ops_addr: "127.0.0.1:9102".into(),
            writer_consumer: String::new(),
            writer_read_count: 32,
            writer_claim_idle_ms: 30_000,
        }
    }
}

impl Config {
    pub fn validate(&self) -> Result<(), String> {
        self.stores.validate()?;
        self.streams.validate()?;
        if self.writer_read_count == 0 || self.writer_read_count > 10_000 {
            return Err("writer_read_count must be 1..=10000".into());
        }
        if self.writer_claim_idle_ms < 100 {
            return Err("writer_claim_idle_ms must be at least 100".into());
        }
        if self.stores.db_max_connections < self.streams.stream_shards.min(4) + 1 {
            return Err("db_max_connections is too small for the shard writers".into());
        }
        Ok(())
    }
}
