//! Reads the device credential from the stream's metadata.

use mamori_registry::DeviceCredential;
use tonic::Status;
use tonic::metadata::MetadataMap;

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
