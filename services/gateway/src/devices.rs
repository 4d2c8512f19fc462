//! Devices and enrollment tokens of the acting tenant.

use crate::audit;
use crate::ctx::Acting;
use crate::error::{ApiError, ApiResult};
use crate::state::Shared;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// A device counts as online when it connected this recently.
const ONLINE_WITHIN_S: i64 = 300;

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct DeviceView {
    pub id: Uuid,
    pub hostname: String,
    pub machine_id: String,
    pub os_name: String,
    pub os_version: String,
    pub agent_version: String,
    /// `online` (seen in the last 5 minutes), `offline`, or `revoked`.
    pub status: String,
    pub group_id: Option<Uuid>,
    pub policy_version: Option<i64>,
    pub enrolled_at: DateTime<Utc>,
    pub last_seen_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// Set when this is a second installation on a machine id that was
    /// already enrolled (a cloned VM image).
    pub clone_of: Option<Uuid>,
}

const DEVICE_COLUMNS: &str = "id, hostname, machine_id, os_name, os_version, agent_version,
    CASE WHEN revoked_at IS NOT NULL THEN 'revoked'
         WHEN last_seen_at > now() - make_interval(secs => $1) THEN 'online'
         ELSE 'offline' END AS status,
    group_id, policy_version, enrolled_at, last_seen_at, revoked_at, clone_of";

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeviceFilter {
    /// `online`, `offline`, `revoked`, or `active` (not revoked).
    pub status: Option<String>,
    pub group: Option<Uuid>,
}

/// Devices of the tenant with their status, last contact, agent and policy
/// versions.
#[utoipa::path(get, path = "/api/v1/devices", tag = "devices", params(DeviceFilter), security(("bearer" = [])),
    responses((status = 200, body = [DeviceView]), (status = 401, body = crate::error::ErrorBody)))]
pub async fn list(
    State(state): State<Shared>,
    acting: Acting,
    Query(f): Query<DeviceFilter>,
) -> ApiResult<Json<Vec<DeviceView>>> {
    if let Some(s) = &f.status
        && !["online", "offline", "revoked", "active"].contains(&s.as_str())
    {
        return Err(ApiError::invalid(
            "status",
            "must be online, offline, revoked or active",
        ));
    }
    let mut tx = acting.begin(&state).await?;
    let sql = format!(
        "SELECT * FROM (SELECT {DEVICE_COLUMNS} FROM devices WHERE tenant_id = $2 AND deleted_at IS NULL
                          AND ($4::uuid IS NULL OR group_id = $4)) d
         WHERE $3::text IS NULL OR status = $3 OR ($3 = 'active' AND status <> 'revoked')
         ORDER BY hostname, id"
    );
    let rows: Vec<DeviceView> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(ONLINE_WITHIN_S as f64)
        .bind(acting.tenant.as_uuid())
        .bind(f.status)
        .bind(f.group)
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Json(rows))
}

async fn fetch_one(tx: &mut mamori_tenancy::TenantTx, id: Uuid) -> ApiResult<DeviceView> {
    let sql = format!(
        "SELECT {DEVICE_COLUMNS} FROM devices WHERE tenant_id = $2 AND id = $3 AND deleted_at IS NULL"
    );
    let tenant = tx.tenant();
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(ONLINE_WITHIN_S as f64)
        .bind(tenant.as_uuid())
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| ApiError::not_found("device"))
}

/// What an admin can revoke (or delete) by id in the acting tenant.
#[derive(Clone, Copy)]
pub(crate) enum Revocable {
    Device,
    DeviceDelete,
    Token,
    Invitation,
}

/// Marks a device, enrollment token or pending invitation of the acting
/// tenant revoked (the first time stays), or deletes a device (a revoked
/// tombstone), and audits it. Returns the open transaction.
pub(crate) async fn revoke_row(
    state: &Shared,
    acting: &Acting,
    what: Revocable,
    id: Uuid,
) -> ApiResult<mamori_tenancy::TenantTx> {
    acting.require_admin()?;
    // Each statement returns a label for the audit entry.
    let (sql, kind, action) = match what {
        Revocable::Device => (
            "UPDATE devices SET revoked_at = coalesce(revoked_at, now())
             WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL RETURNING hostname",
            "device",
            "device.revoke",
        ),
        Revocable::DeviceDelete => (
            "UPDATE devices SET revoked_at = coalesce(revoked_at, now()), deleted_at = now()
             WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL RETURNING hostname",
            "device",
            "device.delete",
        ),
        Revocable::Token => (
            "UPDATE enrollment_tokens SET revoked_at = coalesce(revoked_at, now())
             WHERE tenant_id = $1 AND id = $2 RETURNING ''",
            "enrollment token",
            "enrollment_token.revoke",
        ),
        Revocable::Invitation => (
            "UPDATE invitations SET revoked_at = coalesce(revoked_at, now())
             WHERE tenant_id = $1 AND id = $2 AND accepted_at IS NULL RETURNING email",
            "pending invitation",
            "user.invitation_revoke",
        ),
    };
    let mut tx = acting.begin(state).await?;
    let label: Option<String> = sqlx::query_scalar(sql)
        .bind(acting.tenant.as_uuid())
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    let label = label.ok_or_else(|| ApiError::not_found(kind))?;
    let (target, details) = match what {
        Revocable::Device | Revocable::Token => (id.to_string(), serde_json::json!({})),
        Revocable::DeviceDelete => (id.to_string(), serde_json::json!({ "hostname": label })),
        Revocable::Invitation => (label, serde_json::json!({ "invitation_id": id })),
    };
    audit::by(&mut tx, acting, action, &target, details).await?;
    Ok(tx)
}

/// One device.
#[utoipa::path(get, path = "/api/v1/devices/{id}", tag = "devices", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "device id")),
    responses((status = 200, body = DeviceView), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get(
    State(state): State<Shared>,
    acting: Acting,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<DeviceView>> {
    let mut tx = acting.begin(&state).await?;
    let d = fetch_one(&mut tx, id).await?;
    tx.commit().await?;
    Ok(Json(d))
}

/// Revoke a device: its credential stops working and its agent is cut off
/// within seconds. Its operation log is kept.
#[utoipa::path(post, path = "/api/v1/devices/{id}/revoke", tag = "devices", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "device id")),
    responses((status = 200, body = DeviceView), (status = 404, body = crate::error::ErrorBody)))]
pub async fn revoke(
    State(state): State<Shared>,
    acting: Acting,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<DeviceView>> {
    let mut tx = revoke_row(&state, &acting, Revocable::Device, id).await?;
    let d = fetch_one(&mut tx, id).await?;
    tx.commit().await?;
    Ok(Json(d))
}

/// Delete a device: it is revoked (its agent is cut off within seconds) and
/// disappears from the lists. Its operation log is kept for the retention
/// period.
#[utoipa::path(delete, path = "/api/v1/devices/{id}", tag = "devices", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "device id")),
    responses((status = 204, description = "deleted"), (status = 404, body = crate::error::ErrorBody)))]
pub async fn delete(
    State(state): State<Shared>,
    acting: Acting,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    revoke_row(&state, &acting, Revocable::DeviceDelete, id)
        .await?
        .commit()
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct TokenView {
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub max_uses: Option<i32>,
    pub uses: i32,
    pub revoked_at: Option<DateTime<Utc>>,
    pub group_id: Option<Uuid>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// Lifetime, e.g. `7d`, `12h` (at most 400 days; omitted: never expires).
    pub expires: Option<String>,
    pub max_uses: Option<u32>,
    /// Devices enrolled with the token join this group.
    pub group_id: Option<Uuid>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedTokenView {
    pub id: Uuid,
    /// The secret, shown this once.
    pub token: String,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Enrollment tokens of the tenant (never their secrets).
#[utoipa::path(get, path = "/api/v1/enrollment-tokens", tag = "devices", security(("bearer" = [])),
    responses((status = 200, body = [TokenView])))]
pub async fn list_tokens(
    State(state): State<Shared>,
    acting: Acting,
) -> ApiResult<Json<Vec<TokenView>>> {
    acting.require_admin()?;
    let mut tx = acting.begin(&state).await?;
    let rows: Vec<TokenView> = sqlx::query_as(
        "SELECT id, created_at, expires_at, max_uses, uses, revoked_at, group_id
         FROM enrollment_tokens WHERE tenant_id = $1 ORDER BY created_at, id",
    )
    .bind(acting.tenant.as_uuid())
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Json(rows))
}

/// Create an enrollment token.
#[utoipa::path(post, path = "/api/v1/enrollment-tokens", tag = "devices", security(("bearer" = [])),
    request_body = CreateToken,
    responses((status = 201, body = CreatedTokenView), (status = 422, body = crate::error::ErrorBody)))]
pub async fn create_token(
    State(state): State<Shared>,
    acting: Acting,
    Json(req): Json<CreateToken>,
) -> ApiResult<(StatusCode, Json<CreatedTokenView>)> {
    acting.require_admin()?;
    let expires = req
        .expires
        .as_deref()
        .map(|e| humantime::parse_duration(e).map_err(|err| ApiError::invalid("expires", err)))
        .transpose()?;
    let mut tx = acting.begin(&state).await?;
    let created =
        mamori_registry::create_token_in(&mut tx, expires, req.max_uses, req.group_id).await?;
    audit::by(
        &mut tx,
        &acting,
        "enrollment_token.create",
        &created.id.to_string(),
        serde_json::json!({ "expires_at": created.expires_at, "max_uses": req.max_uses, "group_id": req.group_id }),
    )
    .await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedTokenView {
            id: created.id.as_uuid(),
            token: created.token.expose().to_owned(),
            expires_at: created.expires_at,
        }),
    ))
}

/// Revoke an enrollment token; devices already enrolled keep working.
#[utoipa::path(post, path = "/api/v1/enrollment-tokens/{id}/revoke", tag = "devices", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "token id")),
    responses((status = 204, description = "revoked"), (status = 404, body = crate::error::ErrorBody)))]
pub async fn revoke_token(
    State(state): State<Shared>,
    acting: Acting,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    revoke_row(&state, &acting, Revocable::Token, id)
        .await?
        .commit()
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
