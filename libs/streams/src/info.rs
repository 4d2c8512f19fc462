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
    Ok(match next {
        Value::Array(entries) => entries.into_iter().next().and_then(|e| match e {
            Value::Array(parts) => parts
                .first()
                .and_then(value_text)
                .and_then(|t| StreamId::parse(&t)),
            _ => None,
        }),
        _ => None,
    })
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
