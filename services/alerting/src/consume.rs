//! The alerting consumer: decodes each batch, runs the rules against the
//! device's effective policy, and records the hits in the tenant's
//! transaction before the entries are acked (so a crash re-reads them, and
//! the hit table makes the replay count once).

use crate::rules;
use crate::store::{self, Occurrence, Outcome};
use chrono::{DateTime, Utc};
use mamori_policy::PolicyCache;
use mamori_proto::agent::v1::Event;
use mamori_proto::wire;
use mamori_streams::{Entry, Handler};
use mamori_tenancy::{Db, TenantId};
use prost::Message;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use uuid::Uuid;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Clone)]
pub(crate) struct Alerting {
    pub(crate) db: Db,
    pub(crate) cache: Arc<PolicyCache>,
    pub(crate) window: Duration,
    pub(crate) digest_every: Duration,
    pub(crate) learning: Duration,
    /// Apps known per tenant, so that only unseen ones cost a database
    /// round trip.
    pub(crate) known_apps: Arc<KnownApps>,
    /// Woken when notifications were queued.
    pub(crate) outbox: Arc<Notify>,
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
    notifications: Option<mamori_policy::document::Notifications>,
}

impl Handler for Alerting {
    async fn handle(&self, entries: &[Entry]) -> Result<Vec<(String, String)>, BoxError> {
        // Hits by tenant, in stream order.
        let mut by_tenant: BTreeMap<TenantId, Vec<Pending>> = BTreeMap::new();
        let mut events = 0u64;
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
            let policy = self.cache.effective(tenant, device).await?;
            // The tenant's known apps, looked up once per batch.
            let known = self.known_apps.of(tenant);
            let is_known =
                |sha: &[u8], path: &str| known.as_ref().is_some_and(|k| k.contains(sha, path));
            for encoded in batch.events {
                events += 1;
                // Only events some rule can hit are decoded.
                let relevant = wire::body(encoded)
                    .ok()
                    .flatten()
                    .is_some_and(|b| rules::may_hit(b.field, b.encoding, &policy, is_known));
                let Some(event) = relevant.then(|| Event::decode(encoded).ok()).flatten() else {
                    continue;
                };
                let Some(event_id) = Uuid::from_slice(&event.id).ok() else {
                    continue;
                };
                let occurred =
                    DateTime::from_timestamp_micros(event.occurred_at_us).unwrap_or_else(Utc::now);
                let at = occurred + chrono::Duration::milliseconds(event.clock_offset_ms);
                let new_app = rules::new_app(&event, is_known);
                for hit in rules::evaluate(&event, at, &policy)
                    .into_iter()
                    .chain(new_app)
                {
                    by_tenant.entry(tenant).or_default().push(Pending {
                        hit,
                        event_id,
                        device,
                        os_user: event.os_user.clone(),
                        at,
                        occurred,
                        notifications: policy.document.notifications.clone(),
                    });
                }
            }
        }
        metrics::counter!("mamori_alerting_events_evaluated_total").increment(events);
        if by_tenant.is_empty() {
            return Ok(Vec::new());
        }
        let mut queued = 0;
        let mut raised = Vec::new();
        let mut seen_apps = Vec::new();
        for (tenant, hits) in by_tenant {
            let mut tx = self.db.begin_tenant(tenant).await?;
            for p in &hits {
                let occurrence = Occurrence {
                    event_id: p.event_id,
                    device: p.device,
                    os_user: &p.os_user,
                    at: p.at,
                };
                let outcome = store::record(
                    &mut tx,
                    &p.hit,
                    &occurrence,
                    self.window,
                    p.notifications.as_ref(),
                    self.digest_every,
                    self.learning,
                )
                .await?;
                match outcome {
                    Outcome::Raised(id, n) => {
                        queued += n;
                        raised.push((tenant, id, p.hit.category, p.occurred, true));
                    }
                    Outcome::Counted(id) => {
                        raised.push((tenant, id, p.hit.category, p.occurred, false));
                    }
                    _ => {}
                }
                if p.hit.category == "new_app" {
                    seen_apps.push((tenant, p.hit.detail.clone()));
                }
                metrics::counter!("mamori_alerting_hits_total", "category" => p.hit.category, "outcome" => outcome_label(outcome)).increment(1);
            }
            tx.commit().await?;
        }
        // Committed: these apps are known from now on.
        for (tenant, app) in seen_apps {
            self.known_apps.insert(tenant, &app);
        }
        let now = Utc::now();
        // From the event on the agent to its alarm row committed (new or
        // counted into an open one).
        for (tenant, id, category, occurred, new) in raised {
            let latency = (now - occurred).to_std().unwrap_or_default();
            metrics::histogram!("mamori_alerting_event_to_alarm_seconds")
                .record(latency.as_secs_f64());
            if new {
                tracing::info!(tenant_id = %tenant, alarm_id = %id, category, latency_ms = latency.as_millis() as u64, "alarm raised");
            }
        }
        if queued > 0 {
            self.outbox.notify_one();
        }
        Ok(Vec::new())
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
