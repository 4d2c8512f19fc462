//! The writer configuration (`[writer]` in the config file, `MAMORI_*`).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub database_url: String,
    pub redis_url: String,
    /// Metrics and health endpoint.
    pub writer_ops_addr: String,
    pub stream_shards: u32,
    /// The consumer name in the group; empty means hostname-pid-random.
    pub writer_consumer: String,
    /// Stream entries (batches) read per XREADGROUP.
    pub writer_read_count: u32,
    /// Entries pending this long on another consumer are claimed.
    pub writer_claim_idle_ms: u64,
    pub db_max_connections: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: "postgres://mamori@127.0.0.1:5432/mamori".into(),
            redis_url: "redis://127.0.0.1:6379".into(),
            writer_ops_addr: "127.0.0.1:9102".into(),
            stream_shards: 4,
            writer_consumer: String::new(),
            writer_read_count: 32,
            writer_claim_idle_ms: 30_000,
            db_max_connections: 8,
        }
    }
}

impl Config {
    pub fn validate(&self) -> Result<(), String> {
        if self.stream_shards == 0 || self.stream_shards > 1024 {
            return Err("stream_shards must be 1..=1024".into());
        }
        if self.writer_read_count == 0 || self.writer_read_count > 10_000 {
            return Err("writer_read_count must be 1..=10000".into());
        }
        if self.writer_claim_idle_ms < 100 {
            return Err("writer_claim_idle_ms must be at least 100".into());
        }
        if self.db_max_connections < self.stream_shards.min(4) + 1 {
            return Err("db_max_connections is too small for the shard writers".into());
        }
        Ok(())
    }
}
