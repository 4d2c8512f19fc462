//! What every handler shares.

use crate::config::Config;
use crate::keys::KeyRing;
use crate::limits::Limits;
use mamori_mail::Mailer;
use mamori_tenancy::Db;
use std::sync::Arc;

#[derive(Debug)]
pub struct AppState {
    pub db: Db,
    pub keys: KeyRing,
    pub cfg: Config,
    pub mailer: Mailer,
    pub limits: Limits,
    /// Whether access tokens' sessions still stand.
    pub sessions: crate::sessions::Sessions,
    /// The policy service (`mamori policy`): policies and templates.
    pub policy: mamori_policy::PolicyClient,
    /// Resolves and vets webhook destinations.
    pub webhook_resolver: mamori_policy::webhook::Resolver,
    /// Posts test deliveries (connects only to vetted addresses).
    pub webhook_http: reqwest::Client,
    /// Webhook secrets are sealed under it.
    pub kek: std::sync::Arc<crate::keys::Kek>,
    /// Whose `X-Forwarded-For` names the client.
    pub proxies: crate::proxies::TrustedProxies,
    /// Where policy change notices go (the same Redis as ingest's).
    pub redis: mamori_streams::RedisTarget,
}

pub type Shared = Arc<AppState>;
