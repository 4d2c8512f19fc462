//! gateway: Mamori's only public HTTP surface.
//!
//! Signup (companies and MSP organisations), login with short-lived EdDSA
//! access JWTs and rotating refresh tokens, users and roles, tenants and
//! MSP access, enrollment tokens, devices, operation-log search and export,
//! and the audit trail, all as JSON under `/api/v1` with an OpenAPI
//! document. Identity comes only from a verified token; every query runs
//! under row-level security for the acting tenant.

mod accounts;
mod alarms;
mod audit;
mod browser;
mod claims;
mod config;
mod console;
mod ctx;
mod devices;
mod error;
mod events;
mod files;
mod groups;
mod keys;
mod limits;
mod openapi;
mod policies;
mod proxies;
mod recipients;
mod server;
mod sessions;
mod state;
mod templates;
mod tenants;
mod users;
mod validate;

pub use claims::{Claims, Role};
pub use config::Config;
pub use keys::{AUDIENCE, ISSUER, Kek};
pub use openapi::{document_json as openapi_json, permission_of as openapi_permission};
pub use server::{Running, start};
