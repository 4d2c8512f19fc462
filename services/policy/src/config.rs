//! The policy service configuration (`[policy]` in the config file,
//! `MAMORI_*`).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// PostgreSQL and Redis (the settings every role shares).
    #[serde(flatten)]
    pub stores: mamori_config::Stores,
    /// The key-encryption key (the gateway's, policy's and alerting's).
    #[serde(flatten)]
    pub kek: mamori_config::KeyEncryption,
    /// The internal gRPC API (the gateway calls it).
    pub policy_addr: String,
    /// Metrics and health endpoint.
    pub policy_ops_addr: String,
    /// TLS certificate and key (PEM) of the internal API; without them it
    /// listens on loopback only.
    pub policy_tls_cert: String,
    pub policy_tls_key: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            stores: mamori_config::Stores::with_pool(8),
            kek: mamori_config::KeyEncryption::default(),
            policy_addr: "127.0.0.1:50061".into(),
            policy_ops_addr: "127.0.0.1:9105".into(),
            policy_tls_cert: String::new(),
            policy_tls_key: String::new(),
        }
    }
}

impl Config {
    pub fn validate(&self) -> Result<(), String> {
        self.kek
            .validate("callers' identities are verified with it")?;
        if self.policy_tls_cert.is_empty() != self.policy_tls_key.is_empty() {
            return Err(
                "set both MAMORI_POLICY_TLS_CERT and MAMORI_POLICY_TLS_KEY, or neither".into(),
            );
        }
        self.stores.validate()?;
        Ok(())
    }

    pub fn tls_enabled(&self) -> bool {
        !self.policy_tls_cert.is_empty()
    }
}
