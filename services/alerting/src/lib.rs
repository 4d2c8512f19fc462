//! The alerting service: its own consumer group on the event streams runs
//! the alarm rules (one per category) against each device's effective
//! policy, deduplicates hits into alarms with counts, and sends
//! notifications (e-mail, signed webhooks) from a transactional outbox.

mod config;
mod consume;
mod outbox;
pub mod rules;
mod server;
mod store;

pub use config::Config;
pub use outbox::sign;
pub use server::{Running, start};
