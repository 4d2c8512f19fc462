//! Effective policies by tenant and device, loaded on first use, dropped on
//! a change notice (and after a minute regardless, behind lost notices).

use mamori_policy::{Effective, TenantPolicies};
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
pub(crate) struct PolicyCache {
    db: Db,
    map: Mutex<HashMap<TenantId, Arc<Entry>>>,
}

impl PolicyCache {
    pub(crate) fn new(db: Db) -> Self {
        PolicyCache {
            db,
            map: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, Arc<Entry>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets `tenant`'s policies (all tenants' for `None`).
    pub(crate) fn invalidate(&self, tenant: Option<TenantId>) {
        match tenant {
            Some(t) => {
                self.lock().remove(&t);
            }
            None => self.lock().clear(),
        }
    }

    async fn load(&self, tenant: TenantId) -> mamori_policy::Result<Arc<Entry>> {
        let mut tx = self.db.begin_tenant(tenant).await?;
        let policies = TenantPolicies::load(&mut tx).await?;
        let groups = mamori_policy::store::device_groups(&mut tx)
            .await?
            .into_iter()
            .collect();
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

    /// The effective policy of `device`.
    pub(crate) async fn effective(
        &self,
        tenant: TenantId,
        device: Uuid,
    ) -> mamori_policy::Result<Arc<Effective>> {
        let cached = self.lock().get(&tenant).cloned();
        let mut entry = match cached {
            Some(e) if e.loaded.elapsed() < MAX_AGE => e,
            _ => self.load(tenant).await?,
        };
        if !entry.groups.contains_key(&device) && entry.loaded.elapsed() >= MISS_RELOAD {
            entry = self.load(tenant).await?;
        }
        let mut memo = entry.effective.lock().unwrap_or_else(|e| e.into_inner());
        let eff = memo.entry(device).or_insert_with(|| {
            let group = entry.groups.get(&device).copied().flatten();
            Arc::new(entry.policies.effective(device, group))
        });
        Ok(Arc::clone(eff))
    }
}
