//! Keeps the streams short: entries every consumer group has finished with
//! are trimmed, and the lag of the writer group is exported.
//!
//! A stream may be read by several groups (the writer now, alerting later):
//! an entry can go only when no group still needs it, so the trim point is
//! the oldest entry any group has not finished.

use mamori_streams::Conn;
use mamori_streams::{WRITER_GROUP, groups, oldest_unfinished};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub(crate) async fn run(keys: Vec<String>, conn: Conn, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
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

async fn trim_one(key: &str, mut conn: Conn) -> redis::RedisResult<()> {
    let mut trim_to = None;
    for g in groups(&mut conn, key).await? {
        // A group that has finished everything keeps only its last entry.
        let Some(point) = oldest_unfinished(&mut conn, key, &g)
            .await?
            .or(g.last_delivered)
        else {
            return Ok(());
        };
        trim_to = Some(trim_to.map_or(point, |t: mamori_streams::StreamId| t.min(point)));
        if g.name == WRITER_GROUP {
            if let Some(lag) = g.lag {
                metrics::gauge!("mamori_writer_consumer_lag", "stream" => key.to_owned())
                    .set(lag as f64);
            }
            metrics::gauge!("mamori_writer_pending_entries", "stream" => key.to_owned())
                .set(g.pending as f64);
        }
    }
    if let Some(point) = trim_to {
        redis::cmd("XTRIM")
            .arg(key)
            .arg("MINID")
            .arg("~")
            .arg(point.to_string())
            .query_async::<u64>(&mut conn)
            .await?;
    }
    let len: u64 = redis::cmd("XLEN").arg(key).query_async(&mut conn).await?;
    metrics::gauge!("mamori_stream_length", "stream" => key.to_owned()).set(len as f64);
    Ok(())
}
