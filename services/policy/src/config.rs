//! The policy service configuration (`[policy]` in the config file,
//! `MAMORI_*`).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub database_url: String,
    /// Change notices go to ingest through it.
    pub redis_url: String,
    /// The internal gRPC API (the gateway calls it).
    pub policy_addr: String,
    /// Metrics and health endpoint.
    pub policy_ops_addr: String,
    /// TLS certificate and key (PEM) of the internal API; without them it
    /// listens on loopback only.
    pub policy_tls_cert: String,
    pub policy_tls_key: String,
    /// Callers' identities are signed under a key derived from it (the
    /// same key as the gateway's).
    pub key_encryption_key: String,
    pub key_encryption_key_file: String,
    pub db_max_connections: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: "postgres://mamori@127.0.0.1:5432/mamori".into(),
            redis_url: "redis://127.0.0.1:6379".into(),
            policy_addr: "127.0.0.1:50061".into(),
            policy_ops_addr: "127.0.0.1:9105".into(),
            policy_tls_cert: String::new(),
            policy_tls_key: String::new(),
            key_encryption_key: String::new(),
            key_encryption_key_file: String::new(),
            db_max_connections: 8,
        }
    }
}

impl Config {
    pub fn validate(&self) -> Result<(), String> {
        if self.key_encryption_key.is_empty() && self.key_encryption_key_file.is_empty() {
            return Err(
                "set MAMORI_KEY_ENCRYPTION_KEY or MAMORI_KEY_ENCRYPTION_KEY_FILE (the gateway's key): callers' identities are verified with it"
                    .into(),
            );
        }
        if self.policy_tls_cert.is_empty() != self.policy_tls_key.is_empty() {
            return Err(
                "set both MAMORI_POLICY_TLS_CERT and MAMORI_POLICY_TLS_KEY, or neither".into(),
            );
        }
        if self.db_max_connections == 0 {
            return Err("db_max_connections must be positive".into());
        }
        Ok(())
    }

    pub fn tls_enabled(&self) -> bool {
        !self.policy_tls_cert.is_empty()
    }
}
