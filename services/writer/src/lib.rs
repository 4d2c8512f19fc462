//! writer: moves accepted batches from the Redis streams into PostgreSQL.
//!
//! One task per stream shard reads through the `writer` consumer group,
//! writes what it read in one transaction (one `INSERT .. SELECT unnest(..)`
//! per tenant, under that tenant's row-level security), and acks the stream
//! entries only after the commit. A writer that dies leaves its entries
//! pending; another (or its restart) claims them with XAUTOCLAIM once they
//! have been idle long enough. Inserts are idempotent on the event's key, so
//! a replay never creates duplicates: at-least-once in, exactly-once visible.

mod config;
mod consume;
mod partitions;
mod server;
pub mod store;
mod trim;

pub use config::Config;
pub use partitions::{apply_retention, ensure_partitions, index_finished_days};
pub use server::{Running, start};
