//! Tenants: one row per customer company.

use crate::{Error, Result};
use chrono::{DateTime, Utc};
use mamori_tenancy::{Db, TenantId};

#[derive(Debug, Clone, serde::Serialize)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

/// Creates a tenant. The name is trimmed and must be 1–200 characters.
pub async fn create_tenant(db: &Db, name: &str) -> Result<TenantId> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(Error::InvalidInput {
            field: "tenant name",
            reason: "must be 1 to 200 printable characters".into(),
        });
    }
    let id = TenantId::new();
    let mut tx = db.begin_tenant(id).await?;
    sqlx::query("INSERT INTO tenants (id, name) VALUES ($1, $2)")
        .bind(id.as_uuid())
        .bind(name)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(id)
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
