//! The Redis event streams between ingest and its consumers (writer, and
//! alerting).
//!
//! Events are spread over `shards` streams named `mamori:events:{N}`; a
//! device always lands on the same shard, so its batches stay in order. The
//! braces are a Redis Cluster hash tag: each shard is one slot, and shards
//! spread over the cluster's nodes. Each stream entry is one accepted batch,
//! a protobuf `StreamBatch` in the field `b`.

mod conn;
mod consumer;
mod info;

pub use conn::{AppendError, Conn, RedisTarget, Replication, SHARDS_KEY, append, check_shards};

pub use consumer::{
    Consumer, Entry, GroupSpec, Handler, connect, consumer_name, readiness, spawn_group,
};

pub use info::{
    GroupInfo, StreamId, groups, oldest_unfinished, oldest_unfinished_live, value_text,
};

use mamori_tenancy::DeviceId;

/// The field of a stream entry that holds the encoded `StreamBatch`.
pub const BATCH_FIELD: &str = "b";

/// The consumer group of the writer (PostgreSQL).
pub const WRITER_GROUP: &str = "writer";

/// The consumer group of the alerting service.
pub const ALERTING_GROUP: &str = "alerting";

/// Where entries that can never be written are moved, for an operator.
pub const DEAD_LETTER_STREAM: &str = "mamori:events:dead";

/// The stream key of shard `n`.
pub fn stream_key(n: u32) -> String {
    format!("mamori:events:{{{n}}}")
}

/// The alerting service's overflow lane of shard `n`: the entries of a
/// tenant that used up its share of rule evaluation wait here, so that
/// the shard's other tenants are not held up (same hash tag as the shard,
/// so the same Redis Cluster node).
pub fn overflow_key(n: u32) -> String {
    format!("mamori:alerting:overflow:{{{n}}}")
}

/// Set (with the penalty's expiry) while the alerting service sends a
/// tenant's events to the overflow lanes; ingest refuses the tenant's
/// batches while it is set and the lanes are full.
pub fn penalised_key(tenant: &str) -> String {
    format!("mamori:alerting:penalised:{tenant}")
}

/// The shard number in a key made by [`stream_key`] or [`overflow_key`].
pub fn shard_of_key(key: &str) -> Option<u32> {
    let (_, rest) = key.split_once('{')?;
    rest.split_once('}')?.0.parse().ok()
}

/// Every shard's stream key, in shard order.
pub fn stream_keys(shards: u32) -> Vec<String> {
    (0..shards).map(stream_key).collect()
}

/// The shard of a device: stable across processes and restarts.
pub fn shard_of(device: DeviceId, shards: u32) -> u32 {
    // FNV-1a over the id bytes: stable, unlike std's randomised hasher.
    let mut h: u32 = 0x811c_9dc5;
    for b in device.as_uuid().as_bytes() {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % shards.max(1)
}

/// Creates `group` on every shard stream (and the streams themselves),
/// starting from the beginning so nothing appended before is missed.
pub async fn ensure_group(
    conn: &mut impl redis::aio::ConnectionLike,
    shards: u32,
    group: &str,
) -> redis::RedisResult<()> {
    ensure_group_on(conn, &stream_keys(shards), group).await
}

/// [`ensure_group`] on the streams `keys`.
pub async fn ensure_group_on(
    conn: &mut impl redis::aio::ConnectionLike,
    keys: &[String],
    group: &str,
) -> redis::RedisResult<()> {
    for key in keys {
        let res: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(key)
            .arg(group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(conn)
            .await;
        match res {
            Ok(()) => {}
            Err(e) if e.code() == Some("BUSYGROUP") => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_is_stable_and_in_range() {
        let d = DeviceId::new();
        assert_eq!(shard_of(d, 8), shard_of(d, 8));
        assert!(shard_of(d, 8) < 8);
        assert_eq!(stream_key(3), "mamori:events:{3}");
        assert_eq!(shard_of_key(&stream_key(3)), Some(3));
        assert_eq!(shard_of_key(&overflow_key(12)), Some(12));
        assert_eq!(shard_of_key("mamori:events:dead"), None);
    }
}
