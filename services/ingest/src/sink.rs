//! Appends accepted batches to the Redis streams and watches their backlog.

use crate::error::redis_status;
use mamori_streams::{BATCH_FIELD, shard_of, stream_key, stream_keys};
use mamori_streams::{Conn, RedisTarget, Replication};
use mamori_tenancy::DeviceId;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tonic::Status;

const APPEND_TIMEOUT: Duration = Duration::from_secs(5);

/// A writer consumer that has not read for this long is taken for dead:
/// the entries it holds (until a living one claims them, after the
/// writer's `writer_claim_idle_ms`) do not hold back the agents.
const DEAD_CONSUMER: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub(crate) struct Sink {
    conn: Conn,
    /// A connection of its own for measuring the backlog: on the shared one
    /// the measurements would queue behind the appends they are meant to
    /// throttle, and arrive late exactly when they matter.
    monitor: Conn,
    shards: u32,
    replication: Replication,
    limits: BacklogLimits,
    /// Entries in all shard streams (the memory guard).
    entries: Arc<AtomicU64>,
    /// How far (ms) the slowest consumer group is behind the newest entry.
    behind_ms: Arc<AtomicU64>,
    /// Wakes the appends waiting for the consumers when a measurement finds
    /// them caught up (waiters do not poll: at the peak thousands wait).
    caught_up: Arc<tokio::sync::Notify>,
    /// Entries in the alerting service's overflow lanes.
    overflow: Arc<AtomicU64>,
    /// Whether a tenant is penalised by alerting, as last read (cached for
    /// a second: asked only while the overflow lanes are full).
    penalised:
        Arc<std::sync::Mutex<std::collections::HashMap<mamori_tenancy::TenantId, (bool, Instant)>>>,
    /// Per shard, until when (ms after `epoch`) its appends are refused
    /// without asking Redis: its master just had fewer replicas than
    /// required (after a failover it has none until one is back). Without
    /// this each append would wait out its WAIT, the ones behind it on the
    /// same connection queued, and the agents' batches be refused only
    /// after seconds instead of at once.
    unreplicated: Arc<[AtomicU64]>,
    epoch: Instant,
}

/// When appends wait, and when they are refused.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BacklogLimits {
    /// Hard bound on entries held in Redis.
    pub(crate) max_entries: u64,
    /// Appends wait while the slowest consumer is further behind than this.
    pub(crate) max_behind: Duration,
    /// ...for at most this long, then the agent is told to retry later.
    pub(crate) max_wait: Duration,
    /// Entries the alerting service's overflow lanes may hold before the
    /// tenants it penalised are told to retry later. The lanes hold the
    /// entries of tenants whose alarm evaluation costs too much; they are
    /// outside the streams' bound and back-pressure (which would hold up
    /// every tenant for one), so they get their own.
    pub(crate) max_overflow: u64,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink")
            .field("shards", &self.shards)
            .finish()
    }
}

/// What an agent is told when its shard's master lacks replicas.
fn not_replicated() -> Status {
    Status::unavailable("event store not replicated, retry later")
}

impl Sink {
    pub(crate) async fn connect(
        target: &RedisTarget,
        shards: u32,
        replication: Replication,
        limits: BacklogLimits,
    ) -> anyhow::Result<Self> {
        // WAIT holds the connection for up to its timeout.
        let mut conn = target
            .connect(APPEND_TIMEOUT + replication.timeout)
            .await
            .map_err(anyhow::Error::msg)?;
        let monitor = target
            .connect(APPEND_TIMEOUT)
            .await
            .map_err(anyhow::Error::msg)?;
        mamori_streams::check_shards(&mut conn, shards)
            .await
            .map_err(anyhow::Error::msg)?;
        // The writer's group exists from the start, so what is appended
        // before the first writer runs counts as its backlog.
        mamori_streams::ensure_group(&mut conn, shards, mamori_streams::WRITER_GROUP)
            .await
            .map_err(|e| anyhow::anyhow!("cannot create the stream consumer groups: {e}"))?;
        Ok(Self {
            conn,
            monitor,
            shards,
            replication,
            limits,
            entries: Arc::new(AtomicU64::new(0)),
            behind_ms: Arc::new(AtomicU64::new(0)),
            caught_up: Arc::new(tokio::sync::Notify::new()),
            overflow: Arc::new(AtomicU64::new(0)),
            penalised: Arc::default(),
            unreplicated: (0..shards).map(|_| AtomicU64::new(0)).collect(),
            epoch: Instant::now(),
        })
    }

    /// Refuses a batch of `tenant` when the alerting service has penalised
    /// the tenant and its overflow lanes are full: the agent keeps the
    /// batch and retries later, the other tenants carry on.
    pub(crate) async fn admit_penalised(
        &self,
        tenant: mamori_tenancy::TenantId,
    ) -> Result<(), Status> {
        if self.overflow.load(Ordering::Relaxed) <= self.limits.max_overflow {
            return Ok(());
        }
        let now = Instant::now();
        let cached = self
            .penalised
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&tenant)
            .filter(|(_, at)| now.duration_since(*at) < Duration::from_secs(1))
            .map(|(p, _)| *p);
        let penalised = match cached {
            Some(p) => p,
            None => {
                let mut conn = self.monitor.clone();
                let p: bool = redis::cmd("EXISTS")
                    .arg(mamori_streams::penalised_key(&tenant.to_string()))
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| redis_status(&e))?;
                let mut map = self.penalised.lock().unwrap_or_else(|e| e.into_inner());
                if map.len() > 100_000 {
                    map.clear();
                }
                map.insert(tenant, (p, now));
                p
            }
        };
        if penalised {
            metrics::counter!("mamori_ingest_penalised_refusals_total").increment(1);
            return Err(Status::resource_exhausted(
                "alarm evaluation for this tenant is far behind, retry later",
            ));
        }
        Ok(())
    }

    /// Waits while the consumers are too far behind (back-pressure the
    /// agent sees as a slower ack), then appends the batch with one XADD and
    /// returns once Redis has it.
    pub(crate) async fn append(&self, device: DeviceId, batch: Vec<u8>) -> Result<(), Status> {
        let deadline = Instant::now() + self.limits.max_wait;
        let mut waited = false;
        loop {
            // Registered before the check, so a wake-up between the check
            // and the wait is not lost.
            let caught_up = self.caught_up.notified();
            if self.entries.load(Ordering::Relaxed) > self.limits.max_entries {
                metrics::counter!("mamori_ingest_backlog_refusals_total").increment(1);
                return Err(Status::resource_exhausted(
                    "event backlog is full, retry later",
                ));
            }
            if self.behind_ms.load(Ordering::Relaxed) <= self.limits.max_behind.as_millis() as u64 {
                break;
            }
            if Instant::now() >= deadline {
                metrics::counter!("mamori_ingest_backlog_refusals_total").increment(1);
                return Err(Status::resource_exhausted(
                    "event store consumers are behind, retry later",
                ));
            }
            if !waited {
                waited = true;
                metrics::counter!("mamori_ingest_backpressure_waits_total").increment(1);
            }
            tokio::select! {
                () = caught_up => {}
                () = tokio::time::sleep_until(deadline.into()) => {}
            }
        }
        let shard = shard_of(device, self.shards);
        let unreplicated = &self.unreplicated[shard as usize];
        if (self.epoch.elapsed().as_millis() as u64) < unreplicated.load(Ordering::Relaxed) {
            metrics::counter!("mamori_ingest_unreplicated_refusals_total").increment(1);
            return Err(not_replicated());
        }
        let key = stream_key(shard);
        let mut conn = self.conn.clone();
        let started = Instant::now();
        let res =
            mamori_streams::append(&mut conn, &key, BATCH_FIELD, &batch, self.replication).await;
        metrics::histogram!("mamori_ingest_xadd_seconds").record(started.elapsed().as_secs_f64());
        match res {
            Ok(()) => {
                if unreplicated.swap(0, Ordering::Relaxed) != 0 {
                    tracing::info!(stream = %key, "batches for this stream are replicated again");
                }
                Ok(())
            }
            Err(mamori_streams::AppendError::Redis(e)) => Err(redis_status(&e)),
            Err(e @ mamori_streams::AppendError::NotReplicated { .. }) => {
                // One WAIT timeout without asking again: the master is short
                // of replicas for longer than that, as a rule.
                let until = self.epoch.elapsed() + self.replication.timeout;
                if unreplicated.swap(until.as_millis() as u64, Ordering::Relaxed) == 0 {
                    tracing::warn!(stream = %key, error = %e, "batches for this stream are refused until its master has the replicas required again");
                }
                Err(not_replicated())
            }
        }
    }

    pub(crate) async fn ping(&self) -> Result<(), String> {
        let mut conn = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(drop)
            .map_err(|e| format!("redis: {e}"))
    }

    /// Five times a second, measures how many entries the streams hold and
    /// how far behind (by entry age) the slowest consumer group is.
    pub(crate) async fn watch_backlog(self, stop: CancellationToken) {
        let keys = stream_keys(self.shards);
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            match self.measure(&keys).await {
                Ok((entries, behind_ms, overflow)) => {
                    self.entries.store(entries, Ordering::Relaxed);
                    self.overflow.store(overflow, Ordering::Relaxed);
                    metrics::gauge!("mamori_ingest_alerting_overflow_entries").set(overflow as f64);
                    self.behind_ms.store(behind_ms, Ordering::Relaxed);
                    if behind_ms <= self.limits.max_behind.as_millis() as u64 {
                        self.caught_up.notify_waiters();
                    }
                    metrics::gauge!("mamori_ingest_stream_backlog").set(entries as f64);
                    metrics::gauge!("mamori_ingest_consumers_behind_seconds")
                        .set(behind_ms as f64 / 1000.0);
                }
                Err(e) => tracing::debug!(error = %e, "backlog check failed"),
            }
        }
    }

    /// Entries in the streams, how far (ms) the writer is behind, and
    /// entries in the alerting overflow lanes.
    async fn measure(&self, keys: &[String]) -> redis::RedisResult<(u64, u64, u64)> {
        let mut conn = self.monitor.clone();
        // Redis's clock, since entry ids carry Redis's append time.
        let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut conn).await?;
        let now_ms = secs * 1000 + micros / 1000;
        let mut entries = 0;
        let mut oldest: Option<u64> = None;
        for key in keys {
            entries += redis::cmd("XLEN")
                .arg(key)
                .query_async::<u64>(&mut conn)
                .await?;
            // Only the writer's lag holds agents back: events must reach
            // PostgreSQL, while a slow alerting service only delays alarms
            // (its backlog still counts in XLEN against the entry bound).
            for g in mamori_streams::groups(&mut conn, key).await? {
                if g.name != mamori_streams::WRITER_GROUP {
                    continue;
                }
                if let Some(id) =
                    mamori_streams::oldest_unfinished_live(&mut conn, key, &g, DEAD_CONSUMER)
                        .await?
                {
                    oldest = Some(oldest.map_or(id.ms, |o| o.min(id.ms)));
                }
            }
        }
        let mut overflow = 0;
        for shard in 0..self.shards {
            overflow += redis::cmd("XLEN")
                .arg(mamori_streams::overflow_key(shard))
                .query_async::<u64>(&mut conn)
                .await?;
        }
        Ok((
            entries,
            oldest.map_or(0, |o| now_ms.saturating_sub(o)),
            overflow,
        ))
    }
}
