//! What every handler shares.

use crate::config::Config;
use crate::keys::KeyRing;
use crate::limits::Limits;
use crate::mail::Mailer;
use mamori_tenancy::Db;
use std::sync::Arc;

#[derive(Debug)]
pub struct AppState {
    pub db: Db,
    pub keys: KeyRing,
    pub cfg: Config,
    pub mailer: Mailer,
    pub limits: Limits,
}

pub type Shared = Arc<AppState>;
