//! Policies: what an administrator decides for the tenant, a group or a
//! single device (banned apps, device control, business hours, confidential
//! folders, print threshold, web lists, notification routing).
//!
//! * [`document`]: the JSON document and its validation.
//! * [`store`]: versions in PostgreSQL, the effective policy of a device.
//! * [`effective`]: merging (most specific wins) and the wire form agents
//!   enforce.
//! * [`notify`]: change notices to the ingest processes holding the agents.
//! * [`cache`]: effective policies kept in memory between notices.
//! * [`webhook`]: which webhook destinations are acceptable.

pub mod cache;
pub mod document;
pub mod effective;
pub mod notify;
pub mod store;
pub mod webhook;

pub use cache::PolicyCache;
pub use document::{FieldError, PolicyDocument};
pub use effective::{Effective, Globs, Origin, Scope};
pub use store::{Saved, StoredPolicy, TenantPolicies};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("invalid policy: {0}")]
    Invalid(#[from] FieldError),
    #[error("stored {0} is unreadable")]
    Corrupt(&'static str),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Tenancy(#[from] mamori_tenancy::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
