//! Devices: enrollment, credential checks and revocation.

use crate::{DeviceCredential, EnrollmentToken, Error, Result};
use chrono::{DateTime, Utc};
use mamori_tenancy::{Db, DeviceId, TenantId, TokenId};
use uuid::Uuid;

/// What an agent says about its machine when it enrolls.
#[derive(Debug, Clone, Default)]
pub struct MachineFacts {
    pub machine_id: String,
    pub instance_id: String,
    pub hostname: String,
    pub os_name: String,
    pub os_version: String,
    pub agent_version: String,
}

impl MachineFacts {
    /// Checks every field's length and content; names the first bad one.
    pub fn validate(&self) -> Result<()> {
        let fields: [(&'static str, &str, usize, usize); 6] = [
            ("machine_id", &self.machine_id, 1, 128),
            ("instance_id", &self.instance_id, 1, 64),
            ("hostname", &self.hostname, 1, 255),
            ("os_name", &self.os_name, 0, 128),
            ("os_version", &self.os_version, 0, 128),
            ("agent_version", &self.agent_version, 0, 64),
        ];
        for (field, value, min, max) in fields {
            let n = value.chars().count();
            if n < min || n > max || value.chars().any(char::is_control) {
                return Err(Error::InvalidInput {
                    field,
                    reason: format!("must be {min} to {max} printable characters"),
                });
            }
        }
        Ok(())
    }
}

/// The enrollment token row, locked for the enrollment.
#[derive(sqlx::FromRow)]
struct TokenState {
    id: Uuid,
    expires_at: Option<DateTime<Utc>>,
    max_uses: Option<i32>,
    uses: i32,
    revoked_at: Option<DateTime<Utc>>,
    group_id: Option<Uuid>,
}

/// The result of a successful enrollment.
#[derive(Debug)]
pub struct Enrolled {
    pub tenant: TenantId,
    pub device: DeviceId,
    pub credential: DeviceCredential,
    /// The machine was already enrolled and got its device back.
    pub reenrolled: bool,
    /// Another installation already claimed this machine id.
    pub clone_of: Option<DeviceId>,
}

/// A device whose credential checked out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthenticatedDevice {
    pub tenant: TenantId,
    pub device: DeviceId,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Device {
    pub id: DeviceId,
    pub machine_id: String,
    pub hostname: String,
    pub os_name: String,
    pub os_version: String,
    pub agent_version: String,
    pub enrolled_at: DateTime<Utc>,
    pub last_seen_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub clone_of: Option<DeviceId>,
}

/// Enrolls a machine with a tenant's token.
///
/// The same machine (same machine id and installation id) gets its device
/// back with a fresh credential; the old credential stops working. A second
/// installation claiming an enrolled machine id (a cloned VM) becomes a new
/// device marked `clone_of` the first, and is reported.
pub async fn enroll(db: &Db, token: &EnrollmentToken, facts: &MachineFacts) -> Result<Enrolled> {
    facts.validate()?;
    let hash = token.hash();
    let tenant: Option<Uuid> = sqlx::query_scalar("SELECT mamori_tenant_of_enrollment_token($1)")
        .bind(&hash)
        .fetch_one(db.pool())
        .await?;
    let tenant = TenantId::from_uuid(tenant.ok_or(Error::UnknownToken)?);
    let mut tx = db.begin_tenant(tenant).await?;
    // Row lock: concurrent enrollments count uses exactly.
    let t: TokenState = sqlx::query_as(
        "SELECT id, expires_at, max_uses, uses, revoked_at, group_id FROM enrollment_tokens
         WHERE token_hash = $1 FOR UPDATE",
    )
    .bind(&hash)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(Error::UnknownToken)?;
    if t.revoked_at.is_some() {
        return Err(Error::TokenRevoked);
    }
    if t.expires_at.is_some_and(|e| e <= Utc::now()) {
        return Err(Error::TokenExpired);
    }
    if t.max_uses.is_some_and(|m| t.uses >= m) {
        return Err(Error::TokenUsedUp);
    }
    let token_id = TokenId::from_uuid(t.id);

    let existing: Vec<(Uuid, String, Option<Uuid>, bool)> = sqlx::query_as(
        "SELECT id, instance_id, clone_of, revoked_at IS NOT NULL FROM devices
         WHERE machine_id = $1 ORDER BY enrolled_at",
    )
    .bind(&facts.machine_id)
    .fetch_all(&mut *tx)
    .await?;
    let credential = DeviceCredential::generate();
    let same_install = existing
        .iter()
        .find(|(_, instance, _, _)| *instance == facts.instance_id);
    // A new device, or a revoked one coming back, takes a licence.
    if same_install.is_none_or(|(_, _, _, revoked)| *revoked) {
        check_licence_cap(&mut tx, tenant).await?;
    }
    let (device, reenrolled, clone_of) = if let Some((id, _, clone_of, _)) = same_install {
        sqlx::query(
            "UPDATE devices SET credential_hash = $2, hostname = $3, os_name = $4,
                 os_version = $5, agent_version = $6, revoked_at = NULL, deleted_at = NULL, enrolled_at = now(),
                 enrolled_with = $7
             WHERE id = $1",
        )
        .bind(id)
        .bind(credential.hash())
        .bind(&facts.hostname)
        .bind(&facts.os_name)
        .bind(&facts.os_version)
        .bind(&facts.agent_version)
        .bind(token_id.as_uuid())
        .execute(&mut *tx)
        .await?;
        (
            DeviceId::from_uuid(*id),
            true,
            clone_of.map(DeviceId::from_uuid),
        )
    } else {
        let id = DeviceId::new();
        let clone_of = existing
            .first()
            .map(|(first, _, _, _)| DeviceId::from_uuid(*first));
        sqlx::query(
            "INSERT INTO devices (tenant_id, id, machine_id, instance_id, hostname, os_name,
                 os_version, agent_version, credential_hash, enrolled_with, clone_of, group_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(tenant.as_uuid())
        .bind(id.as_uuid())
        .bind(&facts.machine_id)
        .bind(&facts.instance_id)
        .bind(&facts.hostname)
        .bind(&facts.os_name)
        .bind(&facts.os_version)
        .bind(&facts.agent_version)
        .bind(credential.hash())
        .bind(token_id.as_uuid())
        .bind(clone_of.map(|c| c.as_uuid()))
        .bind(t.group_id)
        .execute(&mut *tx)
        .await?;
        if let Some(original) = clone_of {
            tracing::warn!(
                tenant_id = %tenant,
                device_id = %id,
                clone_of = %original,
                machine_id = %facts.machine_id,
                "second installation claims an enrolled machine id (cloned machine?): enrolled as a separate device"
            );
        }
        (id, false, clone_of)
    };
    sqlx::query("UPDATE enrollment_tokens SET uses = uses + 1 WHERE id = $1")
        .bind(token_id.as_uuid())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Enrolled {
        tenant,
        device,
        credential,
        reenrolled,
        clone_of,
    })
}

/// Refuses one more active device past the tenant's licence cap. The tenant
/// row is locked so that concurrent enrollments count exactly.
async fn check_licence_cap(tx: &mut mamori_tenancy::TenantTx, tenant: TenantId) -> Result<()> {
    let limit: i32 =
        sqlx::query_scalar("SELECT device_limit FROM tenants WHERE id = $1 FOR UPDATE")
            .bind(tenant.as_uuid())
            .fetch_optional(&mut **tx)
            .await?
            .ok_or(Error::UnknownToken)?;
    let active: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM devices WHERE tenant_id = $1 AND revoked_at IS NULL",
    )
    .bind(tenant.as_uuid())
    .fetch_one(&mut **tx)
    .await?;
    if active >= i64::from(limit) {
        return Err(Error::LicenceCap { limit });
    }
    Ok(())
}

/// Checks a device credential. The tenant and device ids come from here and
/// nowhere else.
pub async fn authenticate(db: &Db, credential: &DeviceCredential) -> Result<AuthenticatedDevice> {
    let row: Option<(Uuid, Uuid, bool)> =
        sqlx::query_as("SELECT tenant_id, device_id, revoked FROM mamori_authenticate_device($1)")
            .bind(credential.hash())
            .fetch_optional(db.pool())
            .await?;
    match row {
        None => Err(Error::UnknownCredential),
        Some((_, _, true)) => Err(Error::DeviceRevoked),
        Some((tenant, device, false)) => Ok(AuthenticatedDevice {
            tenant: TenantId::from_uuid(tenant),
            device: DeviceId::from_uuid(device),
        }),
    }
}

/// Devices revoked at or after `since` (for cutting open streams).
pub async fn revoked_since(
    db: &Db,
    since: DateTime<Utc>,
) -> Result<Vec<(DeviceId, DateTime<Utc>)>> {
    let rows: Vec<(Uuid, DateTime<Utc>)> =
        sqlx::query_as("SELECT device_id, revoked_at FROM mamori_revoked_devices_since($1)")
            .bind(since)
            .fetch_all(db.pool())
            .await?;
    Ok(rows
        .into_iter()
        .map(|(d, at)| (DeviceId::from_uuid(d), at))
        .collect())
}

pub async fn list_devices(db: &Db, tenant: TenantId) -> Result<Vec<Device>> {
    let mut tx = db.begin_tenant(tenant).await?;
    type Row = (
        Uuid,
        String,
        String,
        String,
        String,
        String,
        DateTime<Utc>,
        Option<DateTime<Utc>>,
        Option<DateTime<Utc>>,
        Option<Uuid>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, machine_id, hostname, os_name, os_version, agent_version, enrolled_at,
                last_seen_at, revoked_at, clone_of
         FROM devices WHERE deleted_at IS NULL ORDER BY enrolled_at, id",
    )
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Device {
            id: DeviceId::from_uuid(r.0),
            machine_id: r.1,
            hostname: r.2,
            os_name: r.3,
            os_version: r.4,
            agent_version: r.5,
            enrolled_at: r.6,
            last_seen_at: r.7,
            revoked_at: r.8,
            clone_of: r.9.map(DeviceId::from_uuid),
        })
        .collect())
}
