//! Reads the device credential from the stream's metadata, and
//! remembers recent authentications: a device opening streams in a loop
//! would otherwise cost a database lookup each.

use mamori_registry::{AuthenticatedDevice, DeviceCredential};
use mamori_tenancy::{Db, DeviceId};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tonic::Status;
use tonic::metadata::MetadataMap;

/// How long a successful authentication is reused. A revocation evicts it
/// (ingest's revocation sweep), and the sweep cuts any stream it let in.
const REUSE: Duration = Duration::from_secs(10);

/// Credentials (by hash) recently authenticated.
#[derive(Debug, Default)]
pub(crate) struct CredentialCache {
    map: Mutex<HashMap<Vec<u8>, (AuthenticatedDevice, Instant)>>,
}

impl CredentialCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, (AuthenticatedDevice, Instant)>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The device of `credential`, from the cache or PostgreSQL.
    pub(crate) async fn authenticate(
        &self,
        db: &Db,
        credential: &DeviceCredential,
    ) -> Result<AuthenticatedDevice, mamori_registry::Error> {
        let hash = credential.hash();
        let now = Instant::now();
        if let Some((device, at)) = self.lock().get(&hash)
            && now.duration_since(*at) < REUSE
        {
            return Ok(*device);
        }
        let device = mamori_registry::authenticate(db, credential).await?;
        let mut map = self.lock();
        if map.len() >= 100_000 {
            map.retain(|_, (_, at)| now.duration_since(*at) < REUSE);
        }
        map.insert(hash, (device, now));
        Ok(device)
    }

    /// Forgets the credentials of a revoked device.
    pub(crate) fn forget_device(&self, device: DeviceId) {
        self.lock().retain(|_, (d, _)| d.device != device);
    }
}

/// The credential of `authorization: Bearer <credential>`.
pub(crate) fn bearer_credential(md: &MetadataMap) -> Result<DeviceCredential, Status> {
    let value = md
        .get("authorization")
        .ok_or_else(|| {
            Status::unauthenticated("missing authorization metadata (Bearer device credential)")
        })?
        .to_str()
        .map_err(|_| Status::unauthenticated("authorization metadata is not ASCII"))?;
    let secret = value.strip_prefix("Bearer ").ok_or_else(|| {
        Status::unauthenticated("authorization metadata must be `Bearer <device credential>`")
    })?;
    DeviceCredential::parse(secret).map_err(|e| Status::unauthenticated(e.to_string()))
}
