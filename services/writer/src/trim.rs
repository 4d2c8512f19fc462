//! Keeps the streams short: entries every consumer group has finished with
//! are trimmed, and the lag of the writer group is exported.
//!
//! A stream may be read by several groups (the writer now, alerting later):
//! an entry can go only when no group still needs it, so the trim point is
//! the oldest of each group's first pending entry, or its last-delivered id
//! when nothing is pending.

use mamori_streams::WRITER_GROUP;
use redis::Value;
use redis::aio::ConnectionManager;
use std::collections::HashMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub(crate) async fn run(keys: Vec<String>, conn: ConnectionManager, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        for key in &keys {
            if let Err(e) = trim_one(key, conn.clone()).await {
                tracing::debug!(stream = %key, error = %e, "stream trim failed");
            }
        }
    }
}

async fn trim_one(key: &str, mut conn: ConnectionManager) -> anyhow::Result<()> {
    let groups: Vec<HashMap<String, Value>> = match redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(key)
        .query_async::<Value>(&mut conn)
        .await?
    {
        Value::Array(gs) => gs.into_iter().map(to_map).collect(),
        _ => return Ok(()),
    };
    let mut trim_to: Option<(u64, u64)> = None;
    for g in &groups {
        let name = g.get("name").and_then(text).unwrap_or_default();
        let pending = g.get("pending").and_then(int).unwrap_or(0);
        let point = if pending > 0 {
            let summary: Value = redis::cmd("XPENDING")
                .arg(key)
                .arg(&name)
                .query_async(&mut conn)
                .await?;
            match summary {
                Value::Array(v) if v.len() >= 2 => text(&v[1]),
                _ => None,
            }
        } else {
            g.get("last-delivered-id").and_then(text)
        };
        let Some(point) = point.and_then(|p| parse_id(&p)) else {
            return Ok(());
        };
        trim_to = Some(trim_to.map_or(point, |t| t.min(point)));
        if name == WRITER_GROUP {
            if let Some(lag) = g.get("lag").and_then(int) {
                metrics::gauge!("mamori_writer_consumer_lag", "stream" => key.to_owned())
                    .set(lag as f64);
            }
            metrics::gauge!("mamori_writer_pending_entries", "stream" => key.to_owned())
                .set(pending as f64);
        }
    }
    if let Some((ms, seq)) = trim_to {
        let _: u64 = redis::cmd("XTRIM")
            .arg(key)
            .arg("MINID")
            .arg("~")
            .arg(format!("{ms}-{seq}"))
            .query_async(&mut conn)
            .await?;
    }
    let len: u64 = redis::cmd("XLEN").arg(key).query_async(&mut conn).await?;
    metrics::gauge!("mamori_stream_length", "stream" => key.to_owned()).set(len as f64);
    Ok(())
}

fn to_map(v: Value) -> HashMap<String, Value> {
    let mut out = HashMap::new();
    match v {
        Value::Array(kv) => {
            let mut it = kv.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                if let Some(k) = text(&k) {
                    out.insert(k, v);
                }
            }
        }
        Value::Map(kv) => {
            for (k, v) in kv {
                if let Some(k) = text(&k) {
                    out.insert(k, v);
                }
            }
        }
        _ => {}
    }
    out
}

fn text(v: &Value) -> Option<String> {
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

fn parse_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}
