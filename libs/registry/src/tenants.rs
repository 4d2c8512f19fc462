//! Tenants: one row per customer company.

use crate::{Error, Result};
use chrono::{DateTime, Utc};
use mamori_tenancy::{Db, TenantId, TenantTx};
use uuid::Uuid;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

/// Creates a tenant. The name is trimmed and must be 1–200 characters.
pub async fn create_tenant(db: &Db, name: &str) -> Result<TenantId> {
    let id = TenantId::new();
    let mut tx = db.begin_tenant(id).await?;
    insert_tenant(&mut tx, name, None).await?;
    tx.commit().await?;
    Ok(id)
}

/// Inserts the tenant of `tx` (a transaction opened for a new tenant id),
/// optionally run by an MSP organisation.
pub async fn insert_tenant(tx: &mut TenantTx, name: &str, msp_org: Option<Uuid>) -> Result<()> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(Error::InvalidInput {
            field: "tenant name",
            reason: "must be 1 to 200 printable characters".into(),
        });
    }
    sqlx::query("INSERT INTO tenants (id, name, msp_org_id) VALUES ($1, $2, $3)")
        .bind(tx.tenant().as_uuid())
        .bind(name)
        .bind(msp_org)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub async fn get_tenant(db: &Db, id: TenantId) -> Result<Tenant> {
    let mut tx = db.begin_tenant(id).await?;
    let row: Option<(String, DateTime<Utc>)> =
        sqlx::query_as("SELECT name, created_at FROM tenants WHERE id = $1")
            .bind(id.as_uuid())
            .fetch_optional(&mut *tx)
            .await?;
    let (name, created_at) = row.ok_or(Error::NotFound {
        kind: "tenant",
        id: id.to_string(),
    })?;
    Ok(Tenant {
        id,
        name,
        created_at,
    })
}

/// Sets a tenant's device licence cap (1 to 1,000,000).
pub async fn set_device_limit(db: &Db, id: TenantId, limit: i32) -> Result<()> {
    if !(1..=1_000_000).contains(&limit) {
        return Err(Error::InvalidInput {
            field: "device limit",
            reason: "must be 1 to 1000000".into(),
        });
    }
    let mut tx = db.begin_tenant(id).await?;
    let done = sqlx::query("UPDATE tenants SET device_limit = $2 WHERE id = $1")
        .bind(id.as_uuid())
        .bind(limit)
        .execute(&mut *tx)
        .await?;
    if done.rows_affected() == 0 {
        return Err(Error::NotFound {
            kind: "tenant",
            id: id.to_string(),
        });
    }
    tx.commit().await?;
    Ok(())
}
