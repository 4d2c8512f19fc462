//! The consumer loop of one stream shard: read (or claim), write, ack.

use crate::store::{self, Batch};
use mamori_streams::{BATCH_FIELD, DEAD_LETTER_STREAM, WRITER_GROUP, value_text};
use mamori_tenancy::Db;
use redis::Value;
use redis::aio::{ConnectionManager, MultiplexedConnection};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How long one XREADGROUP waits for new entries.
const BLOCK_MS: u64 = 1000;

#[derive(Debug)]
pub(crate) struct Shard {
    pub(crate) key: String,
    pub(crate) consumer: String,
    pub(crate) read_count: u32,
    pub(crate) claim_idle_ms: u64,
    pub(crate) db: Db,
    /// For XACK, XADD to the dead letters and XAUTOCLAIM.
    pub(crate) conn: ConnectionManager,
}

/// One stream entry: its id and the batch bytes (None when the field is
/// missing, which makes it a dead letter).
type Entry = (String, Option<Vec<u8>>);

impl Shard {
    /// Runs until `stop`: claims what dead consumers left, then reads new
    /// entries, reclaiming again every half claim-idle period. After a failed
    /// write (PostgreSQL away, say) it retries its own pending entries before
    /// reading new ones, so they wait for the database, not for a reclaim.
    pub(crate) async fn run(self, mut reader: MultiplexedConnection, stop: CancellationToken) {
        let reclaim_every = Duration::from_millis(self.claim_idle_ms / 2);
        let mut last_reclaim: Option<Instant> = None;
        let mut backoff = Duration::from_millis(100);
        // Also picks up what this consumer name left before a restart.
        let mut own_pending_first = true;
        loop {
            if stop.is_cancelled() {
                return;
            }
            let step = if last_reclaim.is_none_or(|t| t.elapsed() >= reclaim_every) {
                last_reclaim = Some(Instant::now());
                self.reclaim().await
            } else if own_pending_first {
                let handled = self.read(&mut reader, &stop, "0").await;
                if matches!(handled, Ok(0)) {
                    own_pending_first = false;
                }
                handled.map(drop)
            } else {
                self.read(&mut reader, &stop, ">").await.map(drop)
            };
            match step {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(e) => {
                    own_pending_first = true;
                    tracing::warn!(stream = %self.key, error = %e, "writer step failed; retrying");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Reads and writes entries after `from`: `>` for new ones, `0` for this
    /// consumer's own pending ones. Returns how many entries it handled.
    async fn read(
        &self,
        reader: &mut MultiplexedConnection,
        stop: &CancellationToken,
        from: &str,
    ) -> anyhow::Result<usize> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(WRITER_GROUP)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(self.read_count);
        if from == ">" {
            cmd.arg("BLOCK").arg(BLOCK_MS);
        }
        cmd.arg("STREAMS").arg(&self.key).arg(from);
        let read = cmd.query_async::<Value>(reader);
        let reply = tokio::select! {
            _ = stop.cancelled() => return Ok(0),
            r = read => r?,
        };
        let entries = parse_read_reply(reply)?;
        let n = entries.len();
        self.process(entries).await?;
        Ok(n)
    }

    /// Claims entries idle on any consumer for longer than the claim period
    /// (a crashed writer's) and writes them.
    async fn reclaim(&self) -> anyhow::Result<()> {
        let mut cursor = "0-0".to_owned();
        loop {
            let mut conn = self.conn.clone();
            let reply: Value = redis::cmd("XAUTOCLAIM")
                .arg(&self.key)
                .arg(WRITER_GROUP)
                .arg(&self.consumer)
                .arg(self.claim_idle_ms)
                .arg(&cursor)
                .arg("COUNT")
                .arg(self.read_count)
                .query_async(&mut conn)
                .await?;
            let (next, entries) = parse_autoclaim_reply(reply)?;
            if !entries.is_empty() {
                tracing::info!(stream = %self.key, entries = entries.len(), "claimed entries of a stalled consumer");
                metrics::counter!("mamori_writer_claimed_entries_total")
                    .increment(entries.len() as u64);
                self.process(entries).await?;
            }
            if next == "0-0" {
                return Ok(());
            }
            cursor = next;
        }
    }

    /// Writes the entries in one transaction, then acks them. An entry that
    /// can never be written is moved to the dead letters (and acked).
    async fn process(&self, entries: Vec<Entry>) -> anyhow::Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut batch = Batch::default();
        let mut ids = Vec::with_capacity(entries.len());
        let mut parents = Vec::new();
        for (id, bytes) in &entries {
            let added = match bytes {
                Some(b) => batch.add_entry(b).map_err(|e| e.to_string()),
                None => Err(format!("entry has no field {BATCH_FIELD:?}")),
            };
            match added {
                Ok(tp) => {
                    if !tp.is_empty() {
                        parents.push(tp);
                    }
                }
                Err(why) => self.dead_letter(id, bytes.as_deref(), &why).await?,
            }
            ids.push(id.as_str());
        }
        let started = Instant::now();
        let inserted = self.write(&batch).await?;
        let elapsed = started.elapsed();
        metrics::histogram!("mamori_writer_commit_seconds").record(elapsed.as_secs_f64());
        metrics::counter!("mamori_writer_events_committed_total").increment(inserted);
        metrics::counter!("mamori_writer_events_duplicate_total")
            .increment(batch.events() as u64 - inserted);
        for tp in parents {
            let span = tracing::info_span!("batch_committed", stream = %self.key, commit_ms = elapsed.as_millis() as u64);
            mamori_telemetry::set_parent_from_traceparent(&span, &tp);
        }
        let mut conn = self.conn.clone();
        redis::cmd("XACK")
            .arg(&self.key)
            .arg(WRITER_GROUP)
            .arg(&ids)
            .query_async::<u64>(&mut conn)
            .await?;
        Ok(())
    }

    async fn write(&self, batch: &Batch) -> anyhow::Result<u64> {
        match store::write(&self.db, batch).await {
            Err(e) if store::is_missing_partition(&e) => {
                let (from, to) = batch.day_range().expect("a failed write had rows");
                let created = crate::ensure_partitions(&self.db, from, to).await?;
                tracing::info!(%from, %to, created, "created partitions on demand");
                Ok(store::write(&self.db, batch).await?)
            }
            other => Ok(other?),
        }
    }

    async fn dead_letter(&self, id: &str, bytes: Option<&[u8]>, why: &str) -> anyhow::Result<()> {
        tracing::error!(stream = %self.key, entry = id, reason = why, "undecodable stream entry moved to dead letters");
        metrics::counter!("mamori_writer_dead_letters_total").increment(1);
        let mut conn = self.conn.clone();
        redis::cmd("XADD")
            .arg(DEAD_LETTER_STREAM)
            .arg("*")
            .arg("stream")
            .arg(&self.key)
            .arg("entry")
            .arg(id)
            .arg("reason")
            .arg(why)
            .arg(BATCH_FIELD)
            .arg(bytes.unwrap_or_default())
            .query_async::<String>(&mut conn)
            .await?;
        Ok(())
    }
}

/// `[[key, [[id, [field, value, ...]], ...]]]` or nil on timeout.
fn parse_read_reply(v: Value) -> anyhow::Result<Vec<Entry>> {
    let streams = match v {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(s) => s,
        Value::Map(m) => m
            .into_iter()
            .map(|(k, v)| Value::Array(vec![k, v]))
            .collect(),
        other => anyhow::bail!("unexpected XREADGROUP reply {other:?}"),
    };
    let mut out = Vec::new();
    for s in streams {
        let Value::Array(mut pair) = s else {
            anyhow::bail!("unexpected XREADGROUP stream reply");
        };
        if pair.len() == 2 {
            out.extend(parse_entries(pair.pop().expect("len 2"))?);
        }
    }
    Ok(out)
}

/// `[next-cursor, [[id, fields], ...], [deleted ids]]`.
fn parse_autoclaim_reply(v: Value) -> anyhow::Result<(String, Vec<Entry>)> {
    let Value::Array(mut parts) = v else {
        anyhow::bail!("unexpected XAUTOCLAIM reply {v:?}");
    };
    if parts.len() < 2 {
        anyhow::bail!("short XAUTOCLAIM reply");
    }
    let entries = parse_entries(parts.remove(1))?;
    let next = value_text(&parts[0]).unwrap_or_else(|| "0-0".into());
    Ok((next, entries))
}

fn parse_entries(v: Value) -> anyhow::Result<Vec<Entry>> {
    let Value::Array(items) = v else {
        anyhow::bail!("unexpected stream entries reply");
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Value::Array(mut parts) = item else {
            continue;
        };
        if parts.len() != 2 {
            continue;
        }
        let fields = parts.pop().expect("len 2");
        let Some(id) = value_text(&parts[0]) else {
            continue;
        };
        let mut bytes = None;
        // A deleted-but-pending entry has nil fields: a dead letter.
        if let Value::Array(kv) = fields {
            let mut kv = kv.into_iter();
            while let (Some(k), Some(v)) = (kv.next(), kv.next()) {
                if value_text(&k).as_deref() == Some(BATCH_FIELD)
                    && let Value::BulkString(b) = v
                {
                    bytes = Some(b);
                }
            }
        }
        out.push((id, bytes));
    }
    Ok(out)
}
