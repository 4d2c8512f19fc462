//! What the consumer groups of a stream still have to do.
//!
//! Ingest uses it for back-pressure (how old is the oldest entry that some
//! group has not finished?) and the writer to trim what every group has
//! finished. A stream entry id starts with its append time in milliseconds,
//! so "oldest unfinished entry" is also "how far behind the slowest group is".

use redis::Value;
use std::collections::HashMap;

/// A stream entry id (`<ms>-<seq>`), ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

impl StreamId {
    pub fn parse(id: &str) -> Option<Self> {
        let (ms, seq) = id.split_once('-')?;
        Some(Self {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// One consumer group of a stream, from XINFO GROUPS.
#[derive(Debug, Clone)]
pub struct GroupInfo {
    pub name: String,
    /// Delivered to a consumer, not yet acked.
    pub pending: u64,
    /// Not yet delivered (None when Redis cannot tell).
    pub lag: Option<u64>,
    pub last_delivered: Option<StreamId>,
}

/// The consumer groups of `key` (empty when the stream does not exist).
pub async fn groups(
    conn: &mut impl redis::aio::ConnectionLike,
    key: &str,
) -> redis::RedisResult<Vec<GroupInfo>> {
    let reply: redis::RedisResult<Value> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(key)
        .query_async(conn)
        .await;
    let reply = match reply {
        Ok(v) => v,
        Err(e) if e.to_string().contains("no such key") => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let Value::Array(groups) = reply else {
        return Ok(Vec::new());
    };
    Ok(groups
        .into_iter()
        .map(to_map)
        .map(|g| GroupInfo {
            name: g.get("name").and_then(value_text).unwrap_or_default(),
            pending: g.get("pending").and_then(int).unwrap_or(0),
            lag: g.get("lag").and_then(int),
            last_delivered: g
                .get("last-delivered-id")
                .and_then(value_text)
                .and_then(|t| StreamId::parse(&t)),
        })
        .collect())
}

/// The oldest entry of `key` that `group` has not finished: its first
/// pending entry, else its first undelivered one. None when it is done.
pub async fn oldest_unfinished(
    conn: &mut impl redis::aio::ConnectionLike,
    key: &str,
    group: &GroupInfo,
) -> redis::RedisResult<Option<StreamId>> {
    if group.pending > 0 {
        let summary: Value = redis::cmd("XPENDING")
            .arg(key)
            .arg(&group.name)
            .query_async(conn)
            .await?;
        if let Value::Array(v) = summary
            && v.len() >= 2
        {
            return Ok(value_text(&v[1]).and_then(|t| StreamId::parse(&t)));
        }
    }
    first_undelivered(conn, key, group).await
}

/// As [`oldest_unfinished`], but leaving out the entries pending on
/// consumers that have not read for `dead_after` or longer. A live
/// consumer reads every second (its blocking read ends after one); one that
/// died holds its entries until another claims them, which says nothing
/// about how far behind the living are. (A live consumer stuck on one
/// batch stops reading too: what it has not read yet still counts.)
pub async fn oldest_unfinished_live(
    conn: &mut impl redis::aio::ConnectionLike,
    key: &str,
    group: &GroupInfo,
    dead_after: std::time::Duration,
) -> redis::RedisResult<Option<StreamId>> {
    let mut oldest = first_undelivered(conn, key, group).await?;
    if group.pending == 0 {
        return Ok(oldest);
    }
    let consumers: Value = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(key)
        .arg(&group.name)
        .query_async(conn)
        .await?;
    let Value::Array(consumers) = consumers else {
        return Ok(oldest);
    };
    for c in consumers.into_iter().map(to_map) {
        let pending = c.get("pending").and_then(int).unwrap_or(0);
        let idle = c.get("idle").and_then(int).unwrap_or(u64::MAX);
        let Some(name) = c.get("name").and_then(value_text) else {
            continue;
        };
        if pending == 0 || u128::from(idle) >= dead_after.as_millis() {
            continue;
        }
        // Its oldest pending entry: [[id, consumer, idle, deliveries]].
        let first: Value = redis::cmd("XPENDING")
            .arg(key)
            .arg(&group.name)
            .arg("-")
            .arg("+")
            .arg(1)
            .arg(&name)
            .query_async(conn)
            .await?;
        if let Some(id) = first_id(first) {
            oldest = Some(oldest.map_or(id, |o| o.min(id)));
        }
    }
    Ok(oldest)
}

/// The first entry of `key` not yet delivered to `group`'s consumers.
async fn first_undelivered(
    conn: &mut impl redis::aio::ConnectionLike,
    key: &str,
    group: &GroupInfo,
) -> redis::RedisResult<Option<StreamId>> {
    // Not trusting `lag` here: Redis reports it from counters that trimming
    // can leave stale; one XRANGE is cheap and exact.
    let after = group
        .last_delivered
        .map_or_else(|| "-".to_owned(), |id| format!("({id}"));
    let next: Value = redis::cmd("XRANGE")
        .arg(key)
        .arg(after)
        .arg("+")
        .arg("COUNT")
        .arg(1)
        .query_async(conn)
        .await?;
    Ok(first_id(next))
}

/// The id of the first entry of a reply listing entries whose first field
/// is their id (XRANGE, the extended XPENDING).
fn first_id(reply: Value) -> Option<StreamId> {
    match reply {
        Value::Array(entries) => entries.into_iter().next().and_then(|e| match e {
            Value::Array(parts) => parts
                .first()
                .and_then(value_text)
                .and_then(|t| StreamId::parse(&t)),
            _ => None,
        }),
        _ => None,
    }
}

fn to_map(v: Value) -> HashMap<String, Value> {
    let mut out = HashMap::new();
    match v {
        Value::Array(kv) => {
            let mut it = kv.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                if let Some(k) = value_text(&k) {
                    out.insert(k, v);
                }
            }
        }
        Value::Map(kv) => {
            for (k, v) in kv {
                if let Some(k) = value_text(&k) {
                    out.insert(k, v);
                }
            }
        }
        _ => {}
    }
    out
}

/// A Redis string reply (bulk or simple) as text.
pub fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

fn int(v: &Value) -> Option<u64> {
    match v {
        Value::Int(i) => u64::try_from(*i).ok(),
        _ => None,
    }
}
