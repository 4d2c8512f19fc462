//! The streams open on this process, so that a revoked device is cut off
//! within seconds: a background sweep asks PostgreSQL which devices were
//! revoked lately and cancels their streams.

use mamori_tenancy::{Db, DeviceId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Default)]
pub(crate) struct Connections {
    next: AtomicU64,
    open: Mutex<HashMap<DeviceId, Vec<(u64, CancellationToken)>>>,
}

/// Unregisters its stream when dropped.
#[derive(Debug)]
pub(crate) struct Registration {
    owner: Arc<Connections>,
    device: DeviceId,
    id: u64,
    pub(crate) cancelled: CancellationToken,
}

impl Connections {
    pub(crate) fn register(self: &Arc<Self>, device: DeviceId) -> Registration {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let token = CancellationToken::new();
        self.lock()
            .entry(device)
            .or_default()
            .push((id, token.clone()));
        metrics::gauge!("mamori_ingest_connected_agents").increment(1.0);
        Registration {
            owner: Arc::clone(self),
            device,
            id,
            cancelled: token,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<DeviceId, Vec<(u64, CancellationToken)>>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Cancels every open stream of `device`; returns how many.
    pub(crate) fn cut(&self, device: DeviceId) -> usize {
        let open = self.lock();
        let streams = open.get(&device).map(Vec::as_slice).unwrap_or_default();
        for (_, token) in streams {
            token.cancel();
        }
        streams.len()
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
            v.retain(|(id, _)| *id != self.id);
            if v.is_empty() {
                open.remove(&self.device);
            }
        }
        metrics::gauge!("mamori_ingest_connected_agents").decrement(1.0);
    }
}
