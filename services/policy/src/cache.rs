//! Effective policies by tenant and device, loaded on first use, dropped on
//! a change notice (and after a minute regardless, behind lost notices).
//! Alerting evaluates every event against one; ingest answers agents'
//! hellos from one (a fleet reconnecting at once would otherwise cost a
//! database transaction per agent).

use crate::store::{self, TenantPolicies};
use crate::{Effective, Result};
use mamori_tenancy::{Db, TenantId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

const MAX_AGE: Duration = Duration::from_secs(60);
/// An unknown device (enrolled after the load) reloads at most this often.
const MISS_RELOAD: Duration = Duration::from_secs(2);

#[derive(Debug)]
struct Entry {
    policies: TenantPolicies,
    groups: HashMap<Uuid, Option<Uuid>>,
    loaded: Instant,
    effective: Mutex<HashMap<Uuid, Arc<Effective>>>,
}

#[derive(Debug)]
pub struct PolicyCache {
    db: Db,
    map: Mutex<HashMap<TenantId, Arc<Entry>>>,
}

impl PolicyCache {
    pub fn new(db: Db) -> Self {
        PolicyCache {
            db,
            map: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, Arc<Entry>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets `tenant`'s policies (all tenants' for `None`).
    pub fn invalidate(&self, tenant: Option<TenantId>) {
        match tenant {
            Some(t) => {
                self.lock().remove(&t);
            }
            None => self.lock().clear(),
        }
    }

    async fn load(&self, tenant: TenantId) -> Result<Arc<Entry>> {
        let mut tx = self.db.begin_tenant(tenant).await?;
        let policies = TenantPolicies::load(&mut tx).await?;
        let groups = store::device_groups(&mut tx).await?.into_iter().collect();
        tx.commit().await?;
        let entry = Arc::new(Entry {
            policies,
            groups,
            loaded: Instant::now(),
            effective: Mutex::default(),
        });
        self.lock().insert(tenant, Arc::clone(&entry));
        Ok(entry)
    }

    /// The effective policy of `device`. A device the cached tenant does
    /// not know (enrolled since) reloads the tenant, at most every
    /// [`MISS_RELOAD`]; until then it gets its tenant's policy without a
    /// group's (good enough to evaluate events by, not to send to agents:
    /// see [`PolicyCache::effective_if_known`]).
    pub async fn effective(&self, tenant: TenantId, device: Uuid) -> Result<Arc<Effective>> {
        let mut entry = self.entry(tenant).await?;
        if !entry.groups.contains_key(&device) && entry.loaded.elapsed() >= MISS_RELOAD {
            entry = self.load(tenant).await?;
        }
        Ok(memo(&entry, device))
    }

    /// The effective policy of `device` when the cached tenant knows the
    /// device; `None` for one it does not (ask PostgreSQL instead).
    pub async fn effective_if_known(
        &self,
        tenant: TenantId,
        device: Uuid,
    ) -> Result<Option<Arc<Effective>>> {
        let entry = self.entry(tenant).await?;
        Ok(entry
            .groups
            .contains_key(&device)
            .then(|| memo(&entry, device)))
    }

    async fn entry(&self, tenant: TenantId) -> Result<Arc<Entry>> {
        let cached = self.lock().get(&tenant).cloned();
        match cached {
            Some(e) if e.loaded.elapsed() < MAX_AGE => Ok(e),
            _ => self.load(tenant).await,
        }
    }
}

fn memo(entry: &Entry, device: Uuid) -> Arc<Effective> {
    let mut memo = entry.effective.lock().unwrap_or_else(|e| e.into_inner());
    let eff = memo.entry(device).or_insert_with(|| {
        let group = entry.groups.get(&device).copied().flatten();
        Arc::new(entry.policies.effective(device, group))
    });
    Arc::clone(eff)
}
