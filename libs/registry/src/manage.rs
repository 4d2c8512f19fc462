//! What an administrator does to a tenant's devices and enrollment tokens,
//! through the REST API or as the operator at the command line: one place,
//! each change audited with its actor in the change's own transaction.
//! Deleted devices are gone for both: revoking one is "not found".

use crate::{Error, Result};
use mamori_tenancy::audit::{self, Actor};
use mamori_tenancy::{Db, DeviceId, TenantId, TenantTx, TokenId};
use uuid::Uuid;

/// A change to one device or token of the transaction's tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The device's credential stops working (the first revocation stays).
    RevokeDevice(DeviceId),
    /// Revoked and gone from the lists; its log is kept (a tombstone, so
    /// ingest still sees the revocation).
    DeleteDevice(DeviceId),
    /// No more enrollments with the token; enrolled devices keep working.
    RevokeToken(TokenId),
}

impl Change {
    fn action(self) -> &'static str {
        match self {
            Self::RevokeDevice(_) => "device.revoke",
            Self::DeleteDevice(_) => "device.delete",
            Self::RevokeToken(_) => "enrollment_token.revoke",
        }
    }

    fn target(self) -> (&'static str, Uuid) {
        match self {
            Self::RevokeDevice(d) | Self::DeleteDevice(d) => ("device", d.as_uuid()),
            Self::RevokeToken(t) => ("enrollment token", t.as_uuid()),
        }
    }
}

/// Applies `change` in the tenant of `tx` and audits it as `actor`. The
/// caller commits.
pub async fn apply_in(tx: &mut TenantTx, change: Change, actor: &Actor<'_>) -> Result<()> {
    let tenant = tx.tenant().as_uuid();
    let (kind, id) = change.target();
    let sql = match change {
        Change::RevokeDevice(_) => {
            "UPDATE devices SET revoked_at = coalesce(revoked_at, now())
             WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL RETURNING hostname"
        }
        Change::DeleteDevice(_) => {
            "UPDATE devices SET revoked_at = coalesce(revoked_at, now()), deleted_at = now()
             WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL RETURNING hostname"
        }
        Change::RevokeToken(_) => {
            "UPDATE enrollment_tokens SET revoked_at = coalesce(revoked_at, now())
             WHERE tenant_id = $1 AND id = $2 RETURNING ''"
        }
    };
    let label: Option<String> = sqlx::query_scalar(sql)
        .bind(tenant)
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
    let label = label.ok_or_else(|| Error::NotFound {
        kind,
        id: id.to_string(),
    })?;
    let details = match change {
        Change::DeleteDevice(_) => serde_json::json!({ "hostname": label }),
        _ => serde_json::json!({}),
    };
    audit::record(tx, actor, change.action(), &id.to_string(), &details).await?;
    Ok(())
}

/// Applies `change` wherever its device or token is (the operator names
/// only the id), committed. Returns the tenant it belonged to.
pub async fn apply(db: &Db, change: Change, actor: &Actor<'_>) -> Result<TenantId> {
    let (kind, id) = change.target();
    let owner = match change {
        Change::RevokeDevice(_) | Change::DeleteDevice(_) => {
            "SELECT mamori_tenant_of_device_id($1)"
        }
        Change::RevokeToken(_) => "SELECT mamori_tenant_of_token_id($1)",
    };
    let tenant: Option<Uuid> = sqlx::query_scalar(owner)
        .bind(id)
        .fetch_one(db.pool())
        .await?;
    let tenant = TenantId::from_uuid(tenant.ok_or_else(|| Error::NotFound {
        kind,
        id: id.to_string(),
    })?);
    let mut tx = db.begin_tenant(tenant).await?;
    apply_in(&mut tx, change, actor).await?;
    tx.commit().await?;
    Ok(tenant)
}
