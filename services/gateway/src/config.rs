//! The gateway configuration (`[gateway]` in the config file, `MAMORI_*`).

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
    /// The limits below hold across every gateway replica (a Redis call
    /// per request); off, each process has its own.
    pub shared_rate_limits: bool,
    /// HTTP listen address of the REST API (and later the console).
    pub gateway_addr: String,
    /// Metrics and health endpoint.
    pub gateway_ops_addr: String,
    /// The address users reach the gateway at, for links in e-mails.
    pub public_url: String,
    /// Lifetime of an access token, seconds.
    pub access_token_ttl_s: u64,
    /// Lifetime of a refresh token, seconds (each use rotates it).
    pub refresh_token_ttl_s: u64,
    /// How often the signing keys are re-read (to pick up rotations made by
    /// another replica or `mamori keys`).
    pub key_reload_s: u64,
    /// How long a gateway trusts what it read of a session (disabled? role
    /// or password changed? logged out?): a change made on another replica
    /// reaches this one within it. Milliseconds.
    pub session_cache_ms: u64,
    /// Consecutive wrong passwords before an account is slowed down; each
    /// further failure doubles the wait, up to `login_max_lockout_s`.
    pub login_free_failures: u32,
    pub login_max_lockout_s: u64,
    /// Requests per second (and burst) from one client address.
    pub api_ip_rate: u32,
    pub api_ip_burst: u32,
    /// Requests per second (and burst) acting on one tenant.
    pub api_tenant_rate: u32,
    pub api_tenant_burst: u32,
    /// Login, signup and refresh attempts per second from one address.
    pub api_auth_rate: u32,
    pub api_auth_burst: u32,
    /// Largest request body accepted, bytes.
    pub api_max_body_bytes: usize,
    /// Requests taking longer are answered 503.
    pub api_request_timeout_ms: u64,
    /// Outgoing mail: an SMTP URL (`smtp://host:port`, `smtps://user:pass@host`),
    /// or a directory to drop .eml files into, or neither (mail is logged).
    pub smtp_url: String,
    pub mail_dir: String,
    pub mail_from: String,
    /// Let webhooks point at private, loopback and link-local addresses
    /// (a local setup, tests); off, they must be public.
    pub webhook_allow_private: bool,
    /// The DNS server (`ip:port`) webhook hosts are resolved with; empty:
    /// the system's resolver.
    pub webhook_dns_server: String,
    /// The policy service's internal API (`mamori policy`); policy and
    /// template calls go there with the caller's signed identity.
    pub policy_url: String,
    /// CA certificate (PEM) to trust for an `https://` policy_url.
    pub policy_tls_ca: String,
    /// The built web console (`console/dist`), served at `/`; empty: none.
    pub console_dir: String,
    /// The ingest URL agents enroll with and stream to, as shown in the
    /// install commands (`mamori all` fills it in from its ingest address
    /// when empty).
    pub agent_server_url: String,
    /// Load balancers and Ingress controllers in front of the gateway
    /// whose `X-Forwarded-For` names the client: comma-separated
    /// addresses and CIDR ranges (`10.0.0.0/8`). Empty: the connection's
    /// address is the client's, and the header is ignored.
    pub trusted_proxies: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            stores: mamori_config::Stores::with_pool(16),
            kek: mamori_config::KeyEncryption::default(),
            gateway_addr: "127.0.0.1:8080".into(),
            gateway_ops_addr: "127.0.0.1:9103".into(),
            public_url: "http://127.0.0.1:8080".into(),
            access_token_ttl_s: 900,
            refresh_token_ttl_s: 30 * 24 * 3600,
            key_reload_s: 30,
            session_cache_ms: 1000,
            login_free_failures: 5,
            login_max_lockout_s: 900,
            shared_rate_limits: true,
            api_ip_rate: 50,
            api_ip_burst: 200,
            api_tenant_rate: 200,
            api_tenant_burst: 1000,
            api_auth_rate: 5,
            api_auth_burst: 20,
            api_max_body_bytes: 1024 * 1024,
            api_request_timeout_ms: 30_000,
            smtp_url: String::new(),
            mail_dir: String::new(),
            mail_from: "Mamori <no-reply@mamori.invalid>".into(),
            webhook_allow_private: false,
            webhook_dns_server: String::new(),
            policy_url: "http://127.0.0.1:50061".into(),
            policy_tls_ca: String::new(),
            console_dir: String::new(),
            agent_server_url: String::new(),
            trusted_proxies: String::new(),
        }
    }
}

impl Config {
    /// An absolute link to `path_and_query` on the public URL.
    pub fn link(&self, path_and_query: &str) -> String {
        format!("{}{path_and_query}", self.public_url.trim_end_matches('/'))
    }

    /// Checks what serde cannot; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        self.stores.validate()?;
        self.kek
            .validate("the JWT signing keys are wrapped under it")?;
        if !(60..=86_400).contains(&self.access_token_ttl_s) {
            return Err("access_token_ttl_s must be 60..=86400".into());
        }
        if !(300..=400 * 86_400).contains(&self.refresh_token_ttl_s) {
            return Err("refresh_token_ttl_s must be 300..=34560000".into());
        }
        if self.key_reload_s == 0 {
            return Err("key_reload_s must be positive".into());
        }
        if self.session_cache_ms > 60_000 {
            return Err("session_cache_ms must be at most 60000".into());
        }
        if self.api_ip_rate == 0 || self.api_tenant_rate == 0 || self.api_auth_rate == 0 {
            return Err("api_ip_rate, api_tenant_rate and api_auth_rate must be positive".into());
        }
        if !(1024..=64 * 1024 * 1024).contains(&self.api_max_body_bytes) {
            return Err("api_max_body_bytes must be 1 KiB..=64 MiB".into());
        }
        if self.api_request_timeout_ms < 100 {
            return Err("api_request_timeout_ms must be at least 100".into());
        }
        if !self.smtp_url.is_empty() && !self.mail_dir.is_empty() {
            return Err("set smtp_url or mail_dir, not both".into());
        }
        if !self.public_url.starts_with("http://") && !self.public_url.starts_with("https://") {
            return Err("public_url must start with http:// or https://".into());
        }
        if !self.console_dir.is_empty()
            && !std::path::Path::new(&self.console_dir)
                .join("index.html")
                .is_file()
        {
            return Err(format!(
                "console_dir {:?} holds no index.html (build the console: cd console && npm ci && npm run build)",
                self.console_dir
            ));
        }
        crate::proxies::TrustedProxies::parse(&self.trusted_proxies)?;
        Ok(())
    }
}
