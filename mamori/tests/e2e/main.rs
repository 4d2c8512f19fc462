//! End-to-end tests of the event spine against the real PostgreSQL and Redis
//! started by scripts/test.sh: real gRPC clients, the real agent, the real
//! `mamori` binary. One test binary keeps link time down.

mod gw;
mod support;

mod accounts;
mod admin_cli;
mod agent;
mod api_contract;
mod authorization;
mod chaos;
mod crash;
mod enrollment;
mod environment;
mod files;
mod gateway;
mod gateway_security;
mod hardening;
mod operations;
mod package;
mod policy_alarms;
mod policy_service;
mod postgres_crash;
mod power;
mod print;
mod redis_cluster;
mod redis_faults;
mod security;
mod shared_limits;
mod software;
mod stream;
mod tenancy;
mod tls;
mod tracing;
mod web;
mod windows;
