//! Mamori's protobuf messages and gRPC services, generated at build time by
//! protox + tonic-prost-build, with the hand-written conversions beside them.
//!
//! `agent::v1` is the agent ↔ ingest protocol and the event vocabulary.

pub mod agent {
    pub mod v1 {
        #![allow(clippy::all, missing_debug_implementations)]
        tonic::include_proto!("mamori.agent.v1");
    }
}

/// `policy::v1` is the policy service's internal API (gateway → policy).
pub mod policy {
    pub mod v1 {
        #![allow(clippy::all, missing_debug_implementations)]
        tonic::include_proto!("mamori.policy.v1");
    }
}

mod convert;
#[doc(hidden)]
pub mod fuzz;
pub mod schema;
pub mod validate;
pub mod wire;

pub use convert::{EventKind, app_name, kind_of, strongest_ban, subject};

/// The encoded `FileDescriptorSet` of every Mamori proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("mamori_descriptor");
