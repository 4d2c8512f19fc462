//! One consumer of one stream shard in a consumer group: read (or claim
//! from a dead consumer), hand the entries to a [`Handler`], ack them once
//! it has made them durable. The writer and the alerting service each run
//! one per shard, in their own groups.

use crate::conn::{Conn, RedisTarget};
use crate::{BATCH_FIELD, DEAD_LETTER_STREAM, value_text};
use redis::Value;
use std::future::Future;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How long one XREADGROUP waits for new entries.
const BLOCK_MS: u64 = 1000;

/// One stream entry: its id and the batch bytes (None when the field is
/// missing, which makes it a dead letter).
#[derive(Debug, Clone)]
pub struct Entry {
    pub id: String,
    pub bytes: Option<Vec<u8>>,
}

/// What a consumer does with the entries it reads.
pub trait Handler: Send + Sync + 'static {
    /// Makes `entries` durable (commits them); returns the ones that can
    /// never be handled, with why. An `Err` leaves every entry pending, to be
    /// retried.
    fn handle(
        &self,
        entries: &[Entry],
    ) -> impl Future<
        Output = Result<Vec<(String, String)>, Box<dyn std::error::Error + Send + Sync>>,
    > + Send;
}

#[derive(Debug)]
pub struct Consumer<H> {
    pub key: String,
    pub group: &'static str,
    pub consumer: String,
    pub read_count: u32,
    pub claim_idle_ms: u64,
    /// Move entries that can never be handled to [`DEAD_LETTER_STREAM`]
    /// (one group should; the others just skip them).
    pub dead_letters: bool,
    /// Delete entries once acked: for a stream only this group reads (the
    /// alerting overflow lane), where no trimmer runs.
    pub delete_acked: bool,
    /// For XACK, XADD to the dead letters and XAUTOCLAIM.
    pub conn: Conn,
    pub handler: H,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<H: Handler> Consumer<H> {
    /// Runs until `stop`: claims what dead consumers left, then reads new
    /// entries, reclaiming again every half claim-idle period. After a failed
    /// step (PostgreSQL away, say) it retries its own pending entries before
    /// reading new ones, so they wait for the database, not for a reclaim.
    pub async fn run(self, mut reader: Conn, stop: CancellationToken) {
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
                    tracing::warn!(stream = %self.key, group = self.group, error = %e, "stream consumer step failed; retrying");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Reads and handles entries after `from`: `>` for new ones, `0` for this
    /// consumer's own pending ones. Returns how many entries it handled.
    async fn read(
        &self,
        reader: &mut Conn,
        stop: &CancellationToken,
        from: &str,
    ) -> Result<usize, BoxError> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(self.group)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(self.read_count);
        if from == ">" {
            cmd.arg("BLOCK").arg(BLOCK_MS);
        }
        cmd.arg("STREAMS").arg(&self.key).arg(from);
        let read = cmd.query_async::<Value>(reader);
        tokio::pin!(read);
        let reply = tokio::select! {
            r = &mut read => r?,
            _ = stop.cancelled() => {
                // Redis may have delivered entries to this consumer already:
                // take the reply (the read blocks for at most BLOCK_MS) and
                // handle them, instead of leaving them pending until another
                // consumer claims them.
                read.await?
            }
        };
        let entries = parse_read_reply(reply)?;
        let n = entries.len();
        self.process(entries).await?;
        Ok(n)
    }

    /// Claims entries idle on any consumer for longer than the claim period
    /// (a crashed consumer's) and handles them.
    async fn reclaim(&self) -> Result<(), BoxError> {
        let mut cursor = "0-0".to_owned();
        loop {
            let mut conn = self.conn.clone();
            let reply: Value = redis::cmd("XAUTOCLAIM")
                .arg(&self.key)
                .arg(self.group)
                .arg(&self.consumer)
                .arg(self.claim_idle_ms)
                .arg(&cursor)
                .arg("COUNT")
                .arg(self.read_count)
                .query_async(&mut conn)
                .await?;
            let (next, entries) = parse_autoclaim_reply(reply)?;
            if !entries.is_empty() {
                tracing::info!(stream = %self.key, group = self.group, entries = entries.len(), "claimed entries of a stalled consumer");
                metrics::counter!("mamori_stream_claimed_entries_total", "group" => self.group)
                    .increment(entries.len() as u64);
                self.process(entries).await?;
            }
            if next == "0-0" {
                return Ok(());
            }
            cursor = next;
        }
    }

    /// Hands the entries to the handler, then acks them all; the ones it
    /// can never handle go to the dead letters first.
    async fn process(&self, entries: Vec<Entry>) -> Result<(), BoxError> {
        if entries.is_empty() {
            return Ok(());
        }
        let dead = self.handler.handle(&entries).await?;
        if self.dead_letters {
            for (id, why) in &dead {
                let bytes = entries
                    .iter()
                    .find(|e| &e.id == id)
                    .and_then(|e| e.bytes.as_deref());
                self.dead_letter(id, bytes, why).await?;
            }
        }
        let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        pipe.cmd("XACK").arg(&self.key).arg(self.group).arg(&ids);
        if self.delete_acked {
            pipe.cmd("XDEL").arg(&self.key).arg(&ids);
        }
        pipe.query_async::<Vec<u64>>(&mut conn).await?;
        Ok(())
    }

    async fn dead_letter(&self, id: &str, bytes: Option<&[u8]>, why: &str) -> Result<(), BoxError> {
        tracing::error!(stream = %self.key, entry = id, reason = why, "undecodable stream entry moved to dead letters");
        metrics::counter!("mamori_stream_dead_letters_total").increment(1);
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
fn parse_read_reply(v: Value) -> Result<Vec<Entry>, BoxError> {
    let streams = match v {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(s) => s,
        Value::Map(m) => m
            .into_iter()
            .map(|(k, v)| Value::Array(vec![k, v]))
            .collect(),
        other => return Err(format!("unexpected XREADGROUP reply {other:?}").into()),
    };
    let mut out = Vec::new();
    for s in streams {
        let Value::Array(mut pair) = s else {
            return Err("unexpected XREADGROUP stream reply".into());
        };
        if pair.len() == 2 {
            out.extend(parse_entries(pair.pop().expect("len 2"))?);
        }
    }
    Ok(out)
}

/// `[next-cursor, [[id, fields], ...], [deleted ids]]`.
fn parse_autoclaim_reply(v: Value) -> Result<(String, Vec<Entry>), BoxError> {
    let Value::Array(mut parts) = v else {
        return Err(format!("unexpected XAUTOCLAIM reply {v:?}").into());
    };
    if parts.len() < 2 {
        return Err("short XAUTOCLAIM reply".into());
    }
    let entries = parse_entries(parts.remove(1))?;
    let next = value_text(&parts[0]).unwrap_or_else(|| "0-0".into());
    Ok((next, entries))
}

fn parse_entries(v: Value) -> Result<Vec<Entry>, BoxError> {
    let Value::Array(items) = v else {
        return Err("unexpected stream entries reply".into());
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
        out.push(Entry { id, bytes });
    }
    Ok(out)
}

/// How one service consumes every shard.
#[derive(Debug, Clone)]
pub struct GroupSpec {
    pub shards: u32,
    /// The stream key of a shard ([`crate::stream_key`] for the events).
    pub key_of: fn(u32) -> String,
    pub group: &'static str,
    pub consumer: String,
    pub read_count: u32,
    pub claim_idle_ms: u64,
    pub dead_letters: bool,
    pub delete_acked: bool,
}

/// Creates the group on every shard and spawns one consumer per shard into
/// `tasks`, supervised by `sup`, each with the handler `make(stream_key)` gives it.
pub async fn spawn_group<H: Handler>(
    target: &RedisTarget,
    conn: &Conn,
    spec: &GroupSpec,
    make: impl Fn(&str) -> H,
    sup: &mamori_telemetry::Supervisor,
    tasks: &mut tokio::task::JoinSet<()>,
    stop: &CancellationToken,
) -> redis::RedisResult<()> {
    let mut setup = conn.clone();
    let keys: Vec<String> = (0..spec.shards).map(spec.key_of).collect();
    crate::ensure_group_on(&mut setup, &keys, spec.group).await?;
    for key in keys {
        // A blocking XREADGROUP holds its connection: each shard reads on
        // its own, and acks on the shared manager.
        let reader = target.reader(Duration::from_secs(10)).await?;
        let consumer = Consumer {
            handler: make(&key),
            key,
            group: spec.group,
            consumer: spec.consumer.clone(),
            read_count: spec.read_count,
            claim_idle_ms: spec.claim_idle_ms,
            dead_letters: spec.dead_letters,
            delete_acked: spec.delete_acked,
            conn: conn.clone(),
        };
        sup.spawn(
            tasks,
            format!("{} consumer of {}", spec.group, consumer.key),
            consumer.run(reader, stop.clone()),
        );
    }
    Ok(())
}

/// The configured Redis and a reconnecting connection to it, checked
/// once; the error names the setting.
pub async fn connect(url: &str) -> Result<(RedisTarget, Conn), String> {
    let target = RedisTarget::parse(url)?;
    let conn = target.connect(Duration::from_secs(10)).await?;
    Ok((target, conn))
}

/// A consumer name unique to this process: hostname-pid-random.
pub fn consumer_name(configured: &str) -> String {
    if !configured.is_empty() {
        return configured.to_owned();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".into());
    format!(
        "{host}-{}-{}",
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// Ready when PostgreSQL and Redis both answer.
pub fn readiness(db: mamori_tenancy::Db, conn: Conn) -> mamori_telemetry::Readiness {
    std::sync::Arc::new(move || {
        let db = db.clone();
        let mut conn = conn.clone();
        Box::pin(async move {
            sqlx::query("SELECT 1")
                .execute(db.pool())
                .await
                .map_err(|e| format!("postgres: {e}"))?;
            redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .map(drop)
                .map_err(|e| format!("redis: {e}"))
        })
    })
}
