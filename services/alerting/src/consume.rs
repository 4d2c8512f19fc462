//! The alerting consumer: decodes each batch, runs the rules against the
//! device's effective policy, and records the hits in the tenant's
//! transaction before the entries are acked (so a crash re-reads them, and
//! the hit table makes the replay count once).
//!
//! Tenants share the consumer of a shard, so each gets a budget per read
//! ([`Fairness`]): the entries of a tenant whose work went over it go,
//! unprocessed, to the shard's overflow lane
//! (`mamori:alerting:overflow:{N}`, consumed by its own consumer), and so
//! do all its entries for a while after. A tenant with a hostile policy or
//! a flood then costs the others at most one budget (plus one event or one
//! hit recorded) once, and nothing after; its own alarms come later, from
//! the overflow lane, but none is lost: an entry is acked on the shard only
//! after it is in the overflow lane, and hits recorded before a deferral
//! are recognised as replays there.
//!
//! A tenant's work is what it costs, not how long it took on the clock: the
//! CPU time of its rule evaluation (the thread's own clock, so a busy
//! machine does not inflate it) plus [`HIT_COST`] per hit recorded. Clock
//! time made a quiet tenant whose read waited on a loaded database look
//! costly, and sent it to the overflow lane behind the hostile one's
//! backlog (seen in `loadtest/fairness.sh`).

use crate::rules;
use crate::store::{self, Occurrence, Outcome};
use chrono::{DateTime, Utc};
use mamori_policy::PolicyCache;
use mamori_proto::agent::v1::Event;
use mamori_proto::wire;
use mamori_streams::{Entry, Handler};
use mamori_tenancy::{Db, TenantId, TenantTx};
use prost::Message;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use uuid::Uuid;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Clone)]
pub(crate) struct Alerting {
    pub(crate) db: Db,
    pub(crate) cache: Arc<PolicyCache>,
    pub(crate) settings: store::Settings,
    /// Apps known per tenant, so that only unseen ones cost a database
    /// round trip.
    pub(crate) known_apps: Arc<KnownApps>,
    /// Woken when notifications were queued.
    pub(crate) outbox: Arc<Notify>,
    /// Where this consumer's over-budget tenants go: `None` for the
    /// overflow lane itself, which handles everything it reads.
    pub(crate) overflow: Option<Overflow>,
    /// The CPU the overflow lanes of the process may use.
    pub(crate) throttle: Arc<Throttle>,
}

/// Keeps the overflow lanes of a process within a share of one core: the
/// tenants there are the ones whose work is costly, and evaluated at full
/// speed they would take the cores the others' alarms need (measured: with
/// a hostile tenant's flood in the overflow lane unthrottled, the quiet
/// tenant's p50 went from 2 ms to 110 ms on two cores). Work beyond the
/// share waits, asleep; the lane falls behind instead. Time is charged as
/// it passes on the clock (database round trips included), so the share
/// is an upper bound on the CPU taken.
#[derive(Debug)]
pub(crate) struct Throttle {
    /// Seconds of CPU per second.
    share: f64,
    /// CPU seconds that may be used now (negative: owed).
    tokens: std::sync::Mutex<(f64, Instant)>,
}

impl Throttle {
    /// The most CPU time used in one go before the lane waits.
    const BURST_S: f64 = 0.02;

    pub(crate) fn new(share: f64) -> Self {
        Self {
            share,
            tokens: std::sync::Mutex::new((Self::BURST_S, Instant::now())),
        }
    }

    /// Charges `used` CPU time; returns how long to wait to stay within
    /// the share.
    fn charge(&self, used: Duration) -> Duration {
        let mut t = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        t.0 = (t.0 + now.duration_since(t.1).as_secs_f64() * self.share).min(Self::BURST_S)
            - used.as_secs_f64();
        t.1 = now;
        if t.0 >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-t.0 / self.share)
        }
    }
}

/// A shard's overflow lane, and the budgets that send tenants to it.
#[derive(Debug, Clone)]
pub(crate) struct Overflow {
    pub(crate) key: String,
    pub(crate) conn: mamori_streams::Conn,
    pub(crate) fairness: Arc<Fairness>,
}

/// Per-tenant budgets, shared by the consumers of one process.
#[derive(Debug)]
pub(crate) struct Fairness {
    /// What one tenant's work may cost per read of a shard (CPU time of
    /// its rule evaluation plus [`HIT_COST`] per hit recorded).
    pub(crate) budget: Duration,
    /// How long a tenant that overspent stays in the overflow lane.
    pub(crate) penalty: Duration,
    until: std::sync::Mutex<HashMap<TenantId, Instant>>,
}

impl Fairness {
    pub(crate) fn new(budget: Duration, penalty: Duration) -> Self {
        Self {
            budget,
            penalty,
            until: std::sync::Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, Instant>> {
        self.until.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn penalised(&self, tenant: TenantId) -> bool {
        let now = Instant::now();
        let mut map = self.lock();
        match map.get(&tenant) {
            Some(until) if *until > now => true,
            Some(_) => {
                map.remove(&tenant);
                false
            }
            None => false,
        }
    }

    /// Sends `tenant` to the overflow lane for the penalty; true when it
    /// was not there already.
    fn penalise(&self, tenant: TenantId, cost: Duration) -> bool {
        let mut map = self.lock();
        let fresh = map.insert(tenant, Instant::now() + self.penalty).is_none();
        if fresh {
            tracing::warn!(tenant_id = %tenant, cost_ms = cost.as_millis() as u64,
                budget_ms = self.budget.as_millis() as u64, penalty_s = self.penalty.as_secs(),
                "tenant over its alerting budget: its events go to the overflow lane");
            metrics::counter!("mamori_alerting_tenants_deferred_total").increment(1);
        }
        fresh
    }
}

/// What recording one hit counts as (a few indexed statements).
const HIT_COST: Duration = Duration::from_millis(1);

/// CPU time this thread has used.
fn thread_cpu() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(Duration::from)
        .unwrap_or_default()
}

/// One hit, ready to record.
struct Pending {
    hit: rules::Hit,
    event_id: Uuid,
    device: Uuid,
    os_user: String,
    at: DateTime<Utc>,
    /// When the agent saw the event, for the latency metric.
    occurred: DateTime<Utc>,
}

/// What one tenant's share of a read did, once committed.
#[derive(Default)]
struct Done {
    queued: usize,
    /// Alarms raised (true) or counted into.
    alarms: Vec<(Uuid, &'static str, DateTime<Utc>, bool)>,
    seen_apps: Vec<String>,
}

/// A batch of the read, decoded as far as routing needs.
struct Work<'a> {
    entry: &'a Entry,
    batch: wire::StreamBatchView<'a>,
    device: Uuid,
}

impl Handler for Alerting {
    async fn handle(&self, entries: &[Entry]) -> Result<Vec<(String, String)>, BoxError> {
        // Each tenant's batches, in stream order; tenants in order of first
        // appearance. A device belongs to one tenant, so its events keep
        // their order.
        let mut order: Vec<TenantId> = Vec::new();
        let mut by_tenant: HashMap<TenantId, Vec<Work<'_>>> = HashMap::new();
        for entry in entries {
            // The writer moves undecodable entries to the dead letters.
            let Some(batch) = entry
                .bytes
                .as_deref()
                .and_then(|b| wire::read_stream_batch(b).ok())
            else {
                continue;
            };
            let (Ok(tenant), Ok(device)) = (
                batch.tenant_id.parse::<Uuid>(),
                batch.device_id.parse::<Uuid>(),
            ) else {
                continue;
            };
            let tenant = TenantId::from_uuid(tenant);
            by_tenant
                .entry(tenant)
                .or_insert_with(|| {
                    order.push(tenant);
                    Vec::new()
                })
                .push(Work {
                    entry,
                    batch,
                    device,
                });
        }
        let mut deferred: Vec<&Entry> = Vec::new();
        let mut queued = 0;
        for tenant in order {
            let work = by_tenant.remove(&tenant).unwrap_or_default();
            if let Some(o) = &self.overflow
                && o.fairness.penalised(tenant)
            {
                deferred.extend(work.iter().map(|w| w.entry));
                continue;
            }
            let mut cost = Duration::ZERO;
            let mut tx = None;
            let mut done = Done::default();
            for (i, w) in work.iter().enumerate() {
                let batch_started = Instant::now();
                if !self
                    .evaluate(tenant, w, &mut tx, &mut done, &mut cost)
                    .await?
                {
                    // Over budget: this batch (its hits so far count as
                    // replays there) and the rest go to the overflow lane.
                    deferred.extend(work[i..].iter().map(|w| w.entry));
                    break;
                }
                if self.overflow.is_none() {
                    // The overflow lane commits each batch, then keeps
                    // within its share of the CPU, holding no transaction
                    // (nor its locks) while it waits.
                    if let Some(tx) = tx.take() {
                        tx.commit().await?;
                    }
                    queued += self.committed(tenant, std::mem::take(&mut done));
                    let wait = self.throttle.charge(batch_started.elapsed());
                    if !wait.is_zero() {
                        metrics::counter!("mamori_alerting_overflow_throttled_ms_total")
                            .increment(wait.as_millis() as u64);
                        tokio::time::sleep(wait).await;
                    }
                }
            }
            if let Some(tx) = tx {
                tx.commit().await?;
            }
            queued += self.committed(tenant, done);
            if let Some(o) = &self.overflow
                && cost > o.fairness.budget
                && o.fairness.penalise(tenant, cost)
            {
                // Ingest holds the tenant's batches back (retry later)
                // while the overflow lanes are full.
                let penalty = o.fairness.penalty.as_millis().max(1) as u64;
                let set: redis::RedisResult<()> = redis::cmd("SET")
                    .arg(mamori_streams::penalised_key(&tenant.to_string()))
                    .arg(1)
                    .arg("PX")
                    .arg(penalty)
                    .query_async(&mut o.conn.clone())
                    .await;
                if let Err(e) = set {
                    tracing::warn!(tenant_id = %tenant, error = %e, "cannot mark the tenant penalised for ingest");
                }
            }
        }
        if !deferred.is_empty() {
            self.defer(&deferred).await?;
        }
        if queued > 0 {
            self.outbox.notify_one();
        }
        Ok(Vec::new())
    }
}

impl Alerting {
    /// Runs the rules over one batch of `tenant` and records the hits in
    /// `tx` (begun at the first hit), adding what it cost to `cost`. False
    /// when the tenant's budget ran out before the batch was done.
    async fn evaluate(
        &self,
        tenant: TenantId,
        w: &Work<'_>,
        tx: &mut Option<TenantTx>,
        done: &mut Done,
        cost: &mut Duration,
    ) -> Result<bool, BoxError> {
        let budget = self.overflow.as_ref().map(|o| o.fairness.budget);
        let over = |cost: Duration| budget.is_some_and(|b| cost > b);
        let policy = self.cache.effective(tenant, w.device).await?;
        // The tenant's known apps, looked up once per batch.
        let known = self.known_apps.of(tenant);
        let is_known =
            |sha: &[u8], path: &str| known.as_ref().is_some_and(|k| k.contains(sha, path));
        let mut events = 0u64;
        let mut since_yield = Instant::now();
        for encoded in &w.batch.events {
            if self.overflow.is_none() && since_yield.elapsed() > Duration::from_millis(1) {
                // The overflow lane's costly work never holds a worker
                // thread for long.
                tokio::task::yield_now().await;
                since_yield = Instant::now();
            }
            if over(*cost) {
                metrics::counter!("mamori_alerting_events_evaluated_total").increment(events);
                return Ok(false);
            }
            events += 1;
            let cpu = thread_cpu();
            // Only events some rule can hit are decoded.
            let relevant = wire::body(encoded)
                .ok()
                .flatten()
                .is_some_and(|b| rules::may_hit(b.field, b.encoding, &policy, is_known));
            let Some(event) = relevant.then(|| Event::decode(*encoded).ok()).flatten() else {
                *cost += thread_cpu().saturating_sub(cpu);
                continue;
            };
            let Some(event_id) = Uuid::from_slice(&event.id).ok() else {
                *cost += thread_cpu().saturating_sub(cpu);
                continue;
            };
            let occurred =
                DateTime::from_timestamp_micros(event.occurred_at_us).unwrap_or_else(Utc::now);
            let at = occurred + chrono::Duration::milliseconds(event.clock_offset_ms);
            let new_app = rules::new_app(&event, is_known);
            let hits: Vec<rules::Hit> = rules::evaluate(&event, at, &policy)
                .into_iter()
                .chain(new_app)
                .collect();
            *cost += thread_cpu().saturating_sub(cpu);
            for hit in hits {
                let p = Pending {
                    hit,
                    event_id,
                    device: w.device,
                    os_user: event.os_user.clone(),
                    at,
                    occurred,
                };
                let tx = match tx {
                    Some(tx) => tx,
                    None => {
                        let mut new = self.db.begin_tenant(tenant).await?;
                        // First, before any incident lock (see the doc).
                        store::lock_mail_quota(&mut new).await?;
                        tx.insert(new)
                    }
                };
                self.record(tx, &p, policy.document.notifications.as_ref(), done)
                    .await?;
                *cost += HIT_COST;
                if over(*cost) {
                    metrics::counter!("mamori_alerting_events_evaluated_total").increment(events);
                    return Ok(false);
                }
            }
        }
        metrics::counter!("mamori_alerting_events_evaluated_total").increment(events);
        Ok(true)
    }

    async fn record(
        &self,
        tx: &mut TenantTx,
        p: &Pending,
        notifications: Option<&mamori_policy::document::Notifications>,
        done: &mut Done,
    ) -> Result<(), BoxError> {
        let occurrence = Occurrence {
            event_id: p.event_id,
            device: p.device,
            os_user: &p.os_user,
            at: p.at,
        };
        let outcome = store::record(tx, &p.hit, &occurrence, &self.settings, notifications).await?;
        match outcome {
            Outcome::Raised(id, n) => {
                done.queued += n;
                done.alarms.push((id, p.hit.category, p.occurred, true));
            }
            Outcome::Counted(id) => done.alarms.push((id, p.hit.category, p.occurred, false)),
            _ => {}
        }
        if p.hit.category == "new_app" {
            done.seen_apps.push(p.hit.detail.clone());
        }
        metrics::counter!("mamori_alerting_hits_total", "category" => p.hit.category, "outcome" => outcome_label(outcome)).increment(1);
        Ok(())
    }

    /// What follows a tenant's commit; returns the notifications queued.
    fn committed(&self, tenant: TenantId, done: Done) -> usize {
        // These apps are known from now on.
        for app in &done.seen_apps {
            self.known_apps.insert(tenant, app);
        }
        let now = Utc::now();
        // From the event on the agent to its alarm row committed (new or
        // counted into an open one).
        for (id, category, occurred, new) in done.alarms {
            let latency = (now - occurred).to_std().unwrap_or_default();
            metrics::histogram!("mamori_alerting_event_to_alarm_seconds")
                .record(latency.as_secs_f64());
            if new {
                tracing::info!(tenant_id = %tenant, alarm_id = %id, category, latency_ms = latency.as_millis() as u64, "alarm raised");
            }
        }
        done.queued
    }

    /// Appends `entries` to the overflow lane, before the shard acks them.
    async fn defer(&self, entries: &[&Entry]) -> Result<(), BoxError> {
        let Some(o) = &self.overflow else {
            return Ok(());
        };
        let mut pipe = redis::pipe();
        for e in entries {
            pipe.cmd("XADD")
                .arg(&o.key)
                .arg("*")
                .arg(mamori_streams::BATCH_FIELD)
                .arg(e.bytes.as_deref().unwrap_or_default())
                .ignore();
        }
        pipe.query_async::<()>(&mut o.conn.clone()).await?;
        metrics::counter!("mamori_alerting_entries_deferred_total").increment(entries.len() as u64);
        Ok(())
    }
}

fn outcome_label(o: Outcome) -> &'static str {
    match o {
        Outcome::Replay => "replay",
        Outcome::KnownApp => "known_app",
        Outcome::BelowThreshold => "below_threshold",
        Outcome::Counted(_) => "counted",
        Outcome::Raised(..) => "raised",
    }
}

/// The apps each tenant is known to have, bounded: a tenant past the bound
/// starts over (its apps are then looked up in PostgreSQL again).
#[derive(Debug, Default)]
pub(crate) struct KnownApps {
    map: std::sync::Mutex<std::collections::HashMap<TenantId, Arc<AppSet>>>,
}

/// One tenant's known apps: by executable hash, and by path for apps that
/// could not be hashed (keys as [`rules::app_key`] makes them).
#[derive(Debug, Default, Clone)]
pub(crate) struct AppSet {
    hashes: std::collections::HashSet<[u8; 32]>,
    paths: std::collections::HashSet<String>,
}

impl AppSet {
    fn contains(&self, sha256: &[u8], path: &str) -> bool {
        match <[u8; 32]>::try_from(sha256) {
            Ok(h) => self.hashes.contains(&h),
            Err(_) => self.paths.contains(&path.to_lowercase()),
        }
    }

    fn len(&self) -> usize {
        self.hashes.len() + self.paths.len()
    }
}

const KNOWN_APPS_PER_TENANT: usize = 100_000;

impl KnownApps {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<TenantId, Arc<AppSet>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn of(&self, tenant: TenantId) -> Option<Arc<AppSet>> {
        self.lock().get(&tenant).cloned()
    }

    /// Adds an app by its key (`sha256:…` or `path:…`).
    fn insert(&self, tenant: TenantId, key: &str) {
        let mut map = self.lock();
        let set = Arc::make_mut(map.entry(tenant).or_default());
        if set.len() >= KNOWN_APPS_PER_TENANT {
            *set = AppSet::default();
        }
        if let Some(h) = key
            .strip_prefix("sha256:")
            .and_then(|h| hex::decode(h).ok())
            .and_then(|h| <[u8; 32]>::try_from(h).ok())
        {
            set.hashes.insert(h);
        } else if let Some(p) = key.strip_prefix("path:") {
            set.paths.insert(p.to_owned());
        }
    }
}
