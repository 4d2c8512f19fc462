//! ingest: the gRPC edge for agents.
//!
//! Serves `mamori.agent.v1.AgentService`. `Enroll` trades an enrollment token
//! for a device credential. `Connect` authenticates the credential, stamps the
//! tenant and device ids itself (ids inside payloads are never trusted),
//! validates and bounds every batch, appends it to the device's Redis stream
//! shard with one XADD and only then acks it. Nothing here survives a restart
//! because nothing needs to: an unacked batch is still in the agent's spool.
//! Run as many replicas as needed behind a TCP/HTTP2 load balancer.

mod auth;
mod config;
mod connections;
mod error;
mod grpc;
mod limits;
mod policy;
mod seen;
mod server;
mod service;
mod sink;

pub use config::Config;
pub use mamori_proto::validate::Limits as BatchLimits;
pub use server::{Running, start};
