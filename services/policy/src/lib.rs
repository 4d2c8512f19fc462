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
//!
//! The service itself (`mamori policy`) serves the internal gRPC API
//! `mamori.policy.v1` the gateway calls ([`start`], [`PolicyApi`]), acting
//! as the caller identity the gateway signed ([`identity`]); the gateway
//! calls it through [`PolicyClient`].

mod api;
pub mod cache;
pub mod client;
mod config;
pub mod document;
pub mod effective;
mod groups;
pub mod identity;
pub mod notify;
pub mod recipients;
mod server;
pub mod store;
mod templates;
pub mod webhook;

pub use api::{CODE_METADATA, PolicyApi};
pub use cache::PolicyCache;
pub use client::PolicyClient;
pub use config::Config;
pub use document::{FieldError, PolicyDocument};
pub use effective::{Effective, Globs, Origin, Scope};
pub use identity::{Identity, IdentityKey};
pub use server::{Running, start};
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
