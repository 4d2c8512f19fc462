//! Appends accepted batches to the Redis streams and watches their backlog.

use crate::error::redis_status;
use mamori_streams::{BATCH_FIELD, shard_of, stream_key, stream_keys};
use mamori_tenancy::DeviceId;
use redis::aio::ConnectionManager;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tonic::Status;

const APPEND_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub(crate) struct Sink {
    conn: ConnectionManager,
    shards: u32,
    max_backlog: u64,
    backlog: Arc<AtomicU64>,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink")
            .field("shards", &self.shards)
            .finish()
    }
}

impl Sink {
    pub(crate) async fn connect(url: &str, shards: u32, max_backlog: u64) -> anyhow::Result<Self> {
        let client = redis::Client::open(url).map_err(|e| {
            anyhow::anyhow!("MAMORI_REDIS_URL {url:?} is not a valid Redis URL: {e}")
        })?;
        let cfg = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(APPEND_TIMEOUT));
        let conn = ConnectionManager::new_with_config(client, cfg)
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach Redis at {url}: {e}"))?;
        Ok(Self {
            conn,
            shards,
            max_backlog,
            backlog: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Appends one encoded batch with one XADD; returns once Redis has it.
    pub(crate) async fn append(&self, device: DeviceId, batch: Vec<u8>) -> Result<(), Status> {
        if self.backlog.load(Ordering::Relaxed) > self.max_backlog {
            metrics::counter!("mamori_ingest_backlog_refusals_total").increment(1);
            return Err(Status::resource_exhausted(
                "event backlog is full, retry later",
            ));
        }
        let key = stream_key(shard_of(device, self.shards));
        let mut conn = self.conn.clone();
        let started = Instant::now();
        let res: redis::RedisResult<String> = redis::cmd("XADD")
            .arg(&key)
            .arg("*")
            .arg(BATCH_FIELD)
            .arg(batch)
            .query_async(&mut conn)
            .await;
        metrics::histogram!("mamori_ingest_xadd_seconds").record(started.elapsed().as_secs_f64());
        res.map(drop).map_err(|e| redis_status(&e))
    }

    pub(crate) async fn ping(&self) -> Result<(), String> {
        let mut conn = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(drop)
            .map_err(|e| format!("redis: {e}"))
    }

    /// Every second, sums the stream lengths (entries not yet trimmed by the
    /// consumers) so that appends can refuse before Redis runs out of memory.
    pub(crate) async fn watch_backlog(self, stop: CancellationToken) {
        let keys = stream_keys(self.shards);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let mut pipe = redis::pipe();
            for k in &keys {
                pipe.cmd("XLEN").arg(k);
            }
            let mut conn = self.conn.clone();
            match pipe.query_async::<Vec<u64>>(&mut conn).await {
                Ok(lens) => {
                    let total: u64 = lens.iter().sum();
                    self.backlog.store(total, Ordering::Relaxed);
                    metrics::gauge!("mamori_ingest_stream_backlog").set(total as f64);
                }
                Err(e) => tracing::debug!(error = %e, "backlog check failed"),
            }
        }
    }
}
