//! Tenancy: validated id newtypes and PostgreSQL access under row-level
//! security.
//!
//! Every service reaches PostgreSQL through [`Db`]. Its connections switch to
//! the `mamori_app` role (no owner rights, no BYPASSRLS), and the only way to
//! touch tenant rows is a transaction opened with [`Db::begin_tenant`], which
//! sets the tenant for that transaction alone. A query that forgets its
//! `WHERE tenant_id = ..` still sees only that tenant's rows.

pub mod audit;
mod db;
mod error;
mod failure;
mod ids;

pub use db::{Db, MIGRATOR, TenantTx};
pub use error::{Error, Result};
pub use failure::{Failure, classify, classify_error};
pub use ids::{DeviceId, EventId, TenantId, TokenId};
