//! The streams open on this process: so that a revoked device is cut off
//! within seconds (a background sweep asks PostgreSQL which devices were
//! revoked lately and cancels their streams), and so that a policy change
//! reaches the agents of its tenant (each stream has a slot the latest
//! policy is put in).

use mamori_proto::agent::v1::PolicyUpdate;
use mamori_tenancy::{Db, DeviceId, TenantId};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The latest policy for one stream to send.
pub(crate) type PolicySlot = watch::Sender<Option<Arc<PolicyUpdate>>>;

#[derive(Debug)]
struct Open {
    id: u64,
    cancel: CancellationToken,
    /// Cancelled when a newer stream of the same device registers.
    superseded: CancellationToken,
    tenant: TenantId,
    policy: PolicySlot,
    /// The newest revision the agent has or was sent.
    known_revision: Arc<AtomicU64>,
}

#[derive(Debug, Default)]
pub(crate) struct Connections {
    next: AtomicU64,
    open: Mutex<HashMap<DeviceId, Vec<Open>>>,
    /// Recent authentications, evicted by the revocation sweep.
    pub(crate) credentials: crate::auth::CredentialCache,
}

/// A stream's way to the policy pusher.
#[derive(Debug)]
pub(crate) struct PolicyInbox {
    pub(crate) updates: watch::Receiver<Option<Arc<PolicyUpdate>>>,
    pub(crate) known_revision: Arc<AtomicU64>,
}

/// Unregisters its stream when dropped.
#[derive(Debug)]
pub(crate) struct Registration {
    owner: Arc<Connections>,
    device: DeviceId,
    id: u64,
    /// The device was revoked.
    pub(crate) cancelled: CancellationToken,
    /// A newer stream of the device took over.
    pub(crate) superseded: CancellationToken,
}

impl Connections {
    /// Registers a stream of `device`, closing its older streams here: a
    /// device has one live stream, so that it cannot multiply its share of
    /// anything by opening more (a reconnecting agent's old stream is
    /// usually dead already).
    pub(crate) fn register(
        self: &Arc<Self>,
        tenant: TenantId,
        device: DeviceId,
    ) -> (Registration, PolicyInbox) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let token = CancellationToken::new();
        let superseded = CancellationToken::new();
        let (policy, updates) = watch::channel(None);
        let known_revision = Arc::new(AtomicU64::new(0));
        {
            let mut open = self.lock();
            let streams = open.entry(device).or_default();
            for older in streams.iter() {
                older.superseded.cancel();
            }
            streams.push(Open {
                id,
                cancel: token.clone(),
                superseded: superseded.clone(),
                tenant,
                policy,
                known_revision: Arc::clone(&known_revision),
            });
        }
        metrics::gauge!("mamori_ingest_connected_agents").increment(1.0);
        let registration = Registration {
            owner: Arc::clone(self),
            device,
            id,
            cancelled: token,
            superseded,
        };
        (
            registration,
            PolicyInbox {
                updates,
                known_revision,
            },
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<DeviceId, Vec<Open>>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Cancels every open stream of `device`; returns how many.
    pub(crate) fn cut(&self, device: DeviceId) -> usize {
        let open = self.lock();
        let streams = open.get(&device).map(Vec::as_slice).unwrap_or_default();
        for s in streams {
            s.cancel.cancel();
        }
        streams.len()
    }

    /// Every device with an open stream here, with its tenant.
    pub(crate) fn devices(&self) -> Vec<(TenantId, DeviceId)> {
        let open = self.lock();
        open.iter()
            .filter_map(|(d, streams)| streams.first().map(|s| (s.tenant, *d)))
            .collect()
    }

    /// The tenants with at least one open stream here.
    pub(crate) fn tenants(&self) -> Vec<TenantId> {
        let open = self.lock();
        let set: HashSet<TenantId> = open.values().flatten().map(|s| s.tenant).collect();
        set.into_iter().collect()
    }

    /// The devices of `tenant` with an open stream whose agent has neither
    /// reported nor been sent `revision`.
    pub(crate) fn behind(&self, tenant: TenantId, revision: u64) -> Vec<DeviceId> {
        let open = self.lock();
        open.iter()
            .filter(|(_, streams)| {
                streams.iter().any(|s| {
                    s.tenant == tenant && s.known_revision.load(Ordering::Relaxed) < revision
                })
            })
            .map(|(d, _)| *d)
            .collect()
    }

    /// Hands `update` to every open stream of `device`.
    pub(crate) fn push(&self, device: DeviceId, update: &Arc<PolicyUpdate>) {
        let open = self.lock();
        for s in open.get(&device).map(Vec::as_slice).unwrap_or_default() {
            s.known_revision
                .fetch_max(update.revision, Ordering::Relaxed);
            s.policy.send_replace(Some(Arc::clone(update)));
        }
    }

    /// Runs until `stop` is cancelled: every `every`, cuts the streams of
    /// devices revoked since the previous sweep (with a margin for clock
    /// differences between this process and PostgreSQL).
    pub(crate) async fn sweep_revocations(&self, db: Db, every: Duration, stop: CancellationToken) {
        let margin = chrono::Duration::seconds(30);
        let mut since = chrono::Utc::now() - margin;
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let started = chrono::Utc::now();
            match mamori_registry::revoked_since(&db, since).await {
                Ok(revoked) => {
                    for (device, _) in revoked {
                        self.credentials.forget_device(device);
                        let n = self.cut(device);
                        if n > 0 {
                            tracing::info!(device_id = %device, streams = n, "device revoked: stream cut");
                        }
                    }
                    since = started - margin;
                }
                Err(e) => tracing::warn!(error = %e, "revocation sweep failed; will retry"),
            }
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut open = self.owner.lock();
        if let Some(v) = open.get_mut(&self.device) {
            v.retain(|s| s.id != self.id);
            if v.is_empty() {
                open.remove(&self.device);
            }
        }
        metrics::gauge!("mamori_ingest_connected_agents").decrement(1.0);
    }
}
