//! Policy distribution: the effective policy of each connected device goes
//! down its `Connect` stream when the agent says hello with another
//! revision, when a change notice for its tenant arrives, and on a periodic
//! sweep that catches notices Redis dropped.

use crate::connections::Connections;
use mamori_policy::store::AppliedReport;
use mamori_policy::{PolicyCache, TenantPolicies};
use mamori_proto::agent::v1::PolicyUpdate;
use mamori_tenancy::{Db, DeviceId, TenantId};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(Debug, Clone)]
pub(crate) struct Pusher {
    pub(crate) db: Db,
    pub(crate) connections: Arc<Connections>,
    /// Effective policies for hellos, dropped on every change notice.
    pub(crate) cache: Arc<PolicyCache>,
    /// Agents' applied-revision reports, written in batches.
    pub(crate) applied: mpsc::Sender<(TenantId, AppliedReport)>,
}

/// Reports waiting at most; past it a report is dropped (the agent says its
/// revision again in its next hello).
pub(crate) const APPLIED_QUEUE: usize = 100_000;

impl Pusher {
    /// Queues an agent's report for [`write_applied`].
    pub(crate) fn record_applied(&self, tenant: TenantId, report: AppliedReport) {
        if self.applied.try_send((tenant, report)).is_err() {
            metrics::counter!("mamori_ingest_policy_reports_dropped_total").increment(1);
        }
    }

    /// The effective policy of one device, for its hello: from the cache
    /// when it knows the device, else from PostgreSQL.
    pub(crate) async fn for_device(
        &self,
        tenant: TenantId,
        device: DeviceId,
    ) -> mamori_policy::Result<PolicyUpdate> {
        if let Some(eff) = self
            .cache
            .effective_if_known(tenant, device.as_uuid())
            .await?
        {
            return Ok(eff.to_update());
        }
        let mut tx = self.db.begin_tenant(tenant).await?;
        let eff = mamori_policy::store::effective_for_device(&mut tx, device.as_uuid()).await?;
        tx.commit().await?;
        Ok(eff.to_update())
    }

    /// Pushes the tenant's current effective policies to its connected
    /// devices that are behind. Returns how many devices got one.
    pub(crate) async fn push_tenant(&self, tenant: TenantId) -> mamori_policy::Result<usize> {
        let started = Instant::now();
        let mut tx = self.db.begin_tenant(tenant).await?;
        let policies = TenantPolicies::load(&mut tx).await?;
        let revision = policies.revision.max(0) as u64;
        let behind = self.connections.behind(tenant, revision);
        if behind.is_empty() {
            tx.commit().await?;
            return Ok(0);
        }
        let groups: HashMap<Uuid, Option<Uuid>> = mamori_policy::store::device_groups(&mut tx)
            .await?
            .into_iter()
            .collect();
        tx.commit().await?;
        // Devices without a policy of their own share their group's update.
        let mut by_group: HashMap<Option<Uuid>, Arc<PolicyUpdate>> = HashMap::new();
        for device in &behind {
            let id = device.as_uuid();
            // A device missing from the list was revoked or deleted just now:
            // its stream is about to be cut.
            let Some(group) = groups.get(&id).copied() else {
                continue;
            };
            let update = if policies.has_device_policy(id) {
                Arc::new(policies.effective(id, group).to_update())
            } else {
                Arc::clone(
                    by_group
                        .entry(group)
                        .or_insert_with(|| Arc::new(policies.effective(id, group).to_update())),
                )
            };
            self.connections.push(*device, &update);
        }
        metrics::counter!("mamori_ingest_policy_pushes_total").increment(behind.len() as u64);
        tracing::info!(
            tenant_id = %tenant,
            revision,
            devices = behind.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "policy pushed"
        );
        Ok(behind.len())
    }

    /// Pushes for every tenant with connections whose revision moved on.
    async fn sweep(&self) -> mamori_policy::Result<()> {
        let tenants = self.connections.tenants();
        if tenants.is_empty() {
            return Ok(());
        }
        let revisions = mamori_policy::notify::revisions(&self.db, &tenants).await?;
        for (tenant, revision) in revisions {
            if !self
                .connections
                .behind(tenant, revision.max(0) as u64)
                .is_empty()
            {
                self.push_tenant(tenant).await?;
            }
        }
        Ok(())
    }

    /// Runs until `stop`: listens for change notices, and sweeps every
    /// `every`.
    pub(crate) async fn run(
        self,
        redis: mamori_streams::RedisTarget,
        every: Duration,
        stop: CancellationToken,
    ) {
        let (tx, mut notices) = mpsc::channel(1024);
        tokio::spawn(mamori_policy::notify::listen(redis, tx, stop.clone()));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let result = tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => self.sweep().await,
                notice = notices.recv() => match notice {
                    None => return,
                    Some(None) => {
                        self.cache.invalidate(None);
                        self.sweep().await
                    }
                    Some(Some(tenant)) => {
                        self.cache.invalidate(Some(tenant));
                        self.push_tenant(tenant).await.map(drop)
                    }
                },
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "policy push failed; the next sweep retries");
            }
        }
    }
}

/// Writes queued applied-revision reports: whatever has arrived, one
/// statement per tenant, until the queue closes.
pub(crate) async fn write_applied(db: Db, mut queue: mpsc::Receiver<(TenantId, AppliedReport)>) {
    let mut buf = Vec::with_capacity(4096);
    while queue.recv_many(&mut buf, 4096).await > 0 {
        let mut by_tenant: HashMap<TenantId, Vec<AppliedReport>> = HashMap::new();
        for (tenant, report) in buf.drain(..) {
            by_tenant.entry(tenant).or_default().push(report);
        }
        for (tenant, reports) in by_tenant {
            let result = async {
                let mut tx = db.begin_tenant(tenant).await?;
                mamori_policy::store::record_applied(&mut tx, &reports).await?;
                tx.commit().await?;
                Ok::<(), mamori_policy::Error>(())
            }
            .await;
            if let Err(e) = result {
                tracing::warn!(tenant_id = %tenant, reports = reports.len(), error = %e, "cannot record applied policy revisions");
            }
        }
    }
}
