//! The Mamori endpoint agent.
//!
//! It enrolls a PC with a tenant's enrollment token ([`enroll`]), then
//! ([`run`]) watches what happens on it through [`collector`]s, appends every
//! event to a durable on-disk [`spool`] and streams the spool to the ingest
//! service over gRPC (`uplink`), deleting events only once the server has
//! acked them. The agent keeps collecting while the server is unreachable or
//! refuses it, survives being killed and the machine losing power, and drains
//! its backlog at a bounded rate when the server comes back. It enforces
//! the [`policy`] the server pushes down the same stream (banned apps are
//! killed as they start), from its stored copy while offline.
//!
//! The agent is meant to be small: one thread for everything (the binary runs
//! a current-thread tokio runtime), plus one for hashing executables and the
//! blocking pool for fsync.

pub mod collector;
pub mod error;
pub mod platform;
pub mod policy;
pub mod spool;
pub mod uninstall;

mod channel;
mod clock;
mod enroll;
mod facts;
mod fsutil;
mod lifecycle;
mod run;
mod sink;
mod state;
mod uplink;

pub use clock::ClockOffset;
pub use collector::{Collector, CollectorSet, EventSink};
pub use enroll::{EnrollOptions, EnrollOutcome, enroll};
pub use error::{Error, Result};
pub use platform::{PlatformArgs, PlatformOptions, service};
pub use run::{RunOptions, run, spool_dir};
