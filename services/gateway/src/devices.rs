//! Devices and enrollment tokens of the acting tenant.

use crate::audit;
use crate::ctx::{Acting, Manage};
use crate::error::{ApiError, ApiResult};
use crate::state::Shared;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// A device counts as online when it was in contact this recently…
const ONLINE_WITHIN_S: i64 = 300;
/// …and as not reporting when it has not been for this long (or never).
const REPORTING_WITHIN_S: i64 = 86_400;

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct DeviceView {
    pub id: Uuid,
    pub hostname: String,
    pub machine_id: String,
    pub os_name: String,
    pub os_version: String,
    pub agent_version: String,
    /// The sources the agent said, in its latest hello, work in a degraded
    /// mode (`process: Toolhelp polling every 250 ms, …` for a Windows agent
    /// without ETW); empty when none.
    pub degraded: String,
    /// `online` (in contact in the last 5 minutes), `offline` (in the last
    /// day), `not_reporting` (not for a day, or never), or `revoked`.
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

/// The status of a device row (`$1` online seconds, `$2` reporting seconds).
const STATUS: &str = "CASE WHEN revoked_at IS NOT NULL THEN 'revoked'
         WHEN last_seen_at > now() - make_interval(secs => $1) THEN 'online'
         WHEN last_seen_at > now() - make_interval(secs => $2) THEN 'offline'
         ELSE 'not_reporting' END";

fn device_columns() -> String {
    format!(
        "id, hostname, machine_id, os_name, os_version, agent_version, degraded, {STATUS} AS status,
         group_id, policy_version, enrolled_at, last_seen_at, revoked_at, clone_of"
    )
}

const STATUSES: [&str; 5] = ["online", "offline", "not_reporting", "revoked", "active"];

/// What the device list is ordered by.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum DeviceSort {
    #[default]
    Hostname,
    LastSeen,
    Status,
    AgentVersion,
    EnrolledAt,
    PolicyVersion,
}

impl DeviceSort {
    fn column(self) -> &'static str {
        match self {
            Self::Hostname => "lower(hostname)",
            Self::LastSeen => "last_seen_at",
            Self::Status => "status",
            Self::AgentVersion => "agent_version",
            Self::EnrolledAt => "enrolled_at",
            Self::PolicyVersion => "policy_version",
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum SortOrder {
    #[default]
    Asc,
    Desc,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeviceFilter {
    /// `online`, `offline`, `not_reporting`, `revoked`, or `active` (not
    /// revoked).
    pub status: Option<String>,
    /// An office or department; its sub-groups are included.
    pub group: Option<Uuid>,
    /// Host name containing this (case-insensitive).
    pub q: Option<String>,
    #[param(inline)]
    pub sort: Option<DeviceSort>,
    #[param(inline)]
    pub order: Option<SortOrder>,
    /// Devices per page, 1 to 1000 (default 100).
    pub limit: Option<i64>,
    /// Devices to skip (paging), at most 1,000,000.
    pub offset: Option<i64>,
}

#[derive(Debug, Default, Serialize, ToSchema)]
pub struct DeviceCounts {
    pub online: i64,
    pub offline: i64,
    pub not_reporting: i64,
    pub revoked: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DevicePage {
    pub devices: Vec<DeviceView>,
    /// Devices matching the filter, over all pages.
    pub total: i64,
    /// Devices by status, with the group and host-name filters applied
    /// (not the status filter).
    pub counts: DeviceCounts,
}

/// Devices of the tenant with their status, last contact, agent and policy
/// versions: filtered, sorted and paged on the server.
#[utoipa::path(get, path = "/api/v1/devices", tag = "devices", params(DeviceFilter), security(("bearer" = ["read_tenant"])),
    responses((status = 200, body = DevicePage), (status = 401, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)))]
pub async fn list(
    State(state): State<Shared>,
    acting: Acting,
    Query(f): Query<DeviceFilter>,
) -> ApiResult<Json<DevicePage>> {
    if let Some(s) = &f.status
        && !STATUSES.contains(&s.as_str())
    {
        return Err(ApiError::invalid(
            "status",
            "must be online, offline, not_reporting, revoked or active",
        ));
    }
    let limit = f.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be 1..=1000"));
    }
    let offset = f.offset.unwrap_or(0);
    if !(0..=1_000_000).contains(&offset) {
        return Err(ApiError::invalid("offset", "must be 0..=1000000"));
    }
    let q = f.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
    if q.is_some_and(|q| q.len() > 200) {
        return Err(ApiError::invalid("q", "is longer than 200 bytes"));
    }
    let pattern = q.map(|q| format!("%{}%", crate::validate::like_literal(q)));
    let order = match f.order.unwrap_or_default() {
        SortOrder::Asc => "ASC",
        SortOrder::Desc => "DESC",
    };
    let sort = f.sort.unwrap_or_default().column();
    let mut tx = acting.begin(&state).await?;
    // The tenant's devices under the filters but status; the group with
    // its sub-groups.
    let base = format!(
        "SELECT {cols} FROM devices
         WHERE tenant_id = $3 AND deleted_at IS NULL
           AND ($4::uuid IS NULL OR group_id IN (
                WITH RECURSIVE sub(id) AS (SELECT $4::uuid
                    UNION SELECT g.id FROM groups g JOIN sub ON g.parent_id = sub.id WHERE g.tenant_id = $3)
                SELECT id FROM sub))
           AND ($5::text IS NULL OR hostname ILIKE $5)",
        cols = device_columns()
    );
    let sql = format!(
        "SELECT *, count(*) OVER () AS total FROM ({base}) d
         WHERE $6::text IS NULL OR status = $6 OR ($6 = 'active' AND status <> 'revoked')
         ORDER BY {sort} {order} NULLS LAST, id {order}
         LIMIT $7 OFFSET $8"
    );
    let rows: Vec<Counted> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(ONLINE_WITHIN_S as f64)
        .bind(REPORTING_WITHIN_S as f64)
        .bind(acting.tenant.as_uuid())
        .bind(f.group)
        .bind(&pattern)
        .bind(&f.status)
        .bind(limit)
        .bind(offset)
        .fetch_all(&mut *tx)
        .await?;
    let by_status: Vec<(String, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT status, count(*) FROM ({base}) d GROUP BY status"
    )))
    .bind(ONLINE_WITHIN_S as f64)
    .bind(REPORTING_WITHIN_S as f64)
    .bind(acting.tenant.as_uuid())
    .bind(f.group)
    .bind(&pattern)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut counts = DeviceCounts::default();
    for (status, n) in by_status {
        match status.as_str() {
            "online" => counts.online = n,
            "offline" => counts.offline = n,
            "not_reporting" => counts.not_reporting = n,
            _ => counts.revoked = n,
        }
    }
    // Past the last page the window count is missing: count what matched.
    let total = match rows.first() {
        Some(r) => r.total,
        None if offset == 0 => 0,
        None => match f.status.as_deref() {
            None => counts.online + counts.offline + counts.not_reporting + counts.revoked,
            Some("active") => counts.online + counts.offline + counts.not_reporting,
            Some("online") => counts.online,
            Some("offline") => counts.offline,
            Some("not_reporting") => counts.not_reporting,
            Some(_) => counts.revoked,
        },
    };
    Ok(Json(DevicePage {
        devices: rows.into_iter().map(|r| r.device).collect(),
        total,
        counts,
    }))
}

#[derive(sqlx::FromRow)]
struct Counted {
    #[sqlx(flatten)]
    device: DeviceView,
    total: i64,
}

async fn fetch_one(tx: &mut mamori_tenancy::TenantTx, id: Uuid) -> ApiResult<DeviceView> {
    let sql = format!(
        "SELECT {} FROM devices WHERE tenant_id = $3 AND id = $4 AND deleted_at IS NULL",
        device_columns()
    );
    let tenant = tx.tenant();
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(ONLINE_WITHIN_S as f64)
        .bind(REPORTING_WITHIN_S as f64)
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
/// tombstone), and audits it. Devices and tokens go through the registry
/// (as the operator's command line does). Returns the open transaction.
pub(crate) async fn revoke_row(
    state: &Shared,
    acting: &Acting<Manage>,
    what: Revocable,
    id: Uuid,
) -> ApiResult<mamori_tenancy::TenantTx> {
    use mamori_registry::manage::{Change, apply_in};
    use mamori_tenancy::{DeviceId, TokenId};
    let mut tx = acting.begin(state).await?;
    let change = match what {
        Revocable::Device => Change::RevokeDevice(DeviceId::from_uuid(id)),
        Revocable::DeviceDelete => Change::DeleteDevice(DeviceId::from_uuid(id)),
        Revocable::Token => Change::RevokeToken(TokenId::from_uuid(id)),
        Revocable::Invitation => {
            let email: Option<String> = sqlx::query_scalar(
                "UPDATE invitations SET revoked_at = coalesce(revoked_at, now())
                 WHERE tenant_id = $1 AND id = $2 AND accepted_at IS NULL RETURNING email",
            )
            .bind(acting.tenant.as_uuid())
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            let email = email.ok_or_else(|| ApiError::not_found("pending invitation"))?;
            audit::by(
                &mut tx,
                acting,
                "user.invitation_revoke",
                &email,
                serde_json::json!({ "invitation_id": id }),
            )
            .await?;
            return Ok(tx);
        }
    };
    apply_in(&mut tx, change, &audit::actor(&acting.caller)).await?;
    Ok(tx)
}

/// One device.
#[utoipa::path(get, path = "/api/v1/devices/{id}", tag = "devices", security(("bearer" = ["read_tenant"])),
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
#[utoipa::path(post, path = "/api/v1/devices/{id}/revoke", tag = "devices", security(("bearer" = ["manage_tenant"])),
    params(("id" = Uuid, Path, description = "device id")),
    responses((status = 200, body = DeviceView), (status = 404, body = crate::error::ErrorBody)))]
pub async fn revoke(
    State(state): State<Shared>,
    acting: Acting<Manage>,
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
#[utoipa::path(delete, path = "/api/v1/devices/{id}", tag = "devices", security(("bearer" = ["manage_tenant"])),
    params(("id" = Uuid, Path, description = "device id")),
    responses((status = 204, description = "deleted"), (status = 404, body = crate::error::ErrorBody)))]
pub async fn delete(
    State(state): State<Shared>,
    acting: Acting<Manage>,
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
    /// The ingest URL agents enroll with (empty when the operator has not
    /// set `agent_server_url`).
    pub server_url: String,
    /// The commands that install the agent on a Linux PC with this token
    /// (run as root), shown this once with it.
    pub install_command: String,
}

/// Single-quoted for a POSIX shell.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn install_command(server: &str, token: &str) -> String {
    let server = if server.is_empty() {
        "<the ingest URL of your Mamori server>"
    } else {
        server
    };
    format!(
        "sudo MAMORI_ENROLLMENT_TOKEN={token} mamori-agent enroll --server {server} --state-dir /var/lib/mamori-agent && \\\n  sudo mamori-agent run --state-dir /var/lib/mamori-agent",
        token = sh_quote(token),
        server = sh_quote(server),
    )
}

/// Enrollment tokens of the tenant (never their secrets).
#[utoipa::path(get, path = "/api/v1/enrollment-tokens", tag = "devices", security(("bearer" = ["manage_tenant"])),
    responses((status = 200, body = [TokenView])))]
pub async fn list_tokens(
    State(state): State<Shared>,
    acting: Acting<Manage>,
) -> ApiResult<Json<Vec<TokenView>>> {
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
#[utoipa::path(post, path = "/api/v1/enrollment-tokens", tag = "devices", security(("bearer" = ["manage_tenant"])),
    request_body = CreateToken,
    responses((status = 201, body = CreatedTokenView), (status = 422, body = crate::error::ErrorBody)))]
pub async fn create_token(
    State(state): State<Shared>,
    acting: Acting<Manage>,
    Json(req): Json<CreateToken>,
) -> ApiResult<(StatusCode, Json<CreatedTokenView>)> {
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
            server_url: state.cfg.agent_server_url.clone(),
            install_command: install_command(&state.cfg.agent_server_url, created.token.expose()),
        }),
    ))
}

/// Revoke an enrollment token; devices already enrolled keep working.
#[utoipa::path(post, path = "/api/v1/enrollment-tokens/{id}/revoke", tag = "devices", security(("bearer" = ["manage_tenant"])),
    params(("id" = Uuid, Path, description = "token id")),
    responses((status = 204, description = "revoked"), (status = 404, body = crate::error::ErrorBody)))]
pub async fn revoke_token(
    State(state): State<Shared>,
    acting: Acting<Manage>,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    revoke_row(&state, &acting, Revocable::Token, id)
        .await?
        .commit()
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_install_command_quotes_what_it_is_given() {
        let c = install_command("https://ingest.example.com:443", "mmt_abc-DEF_1");
        assert!(c.contains("MAMORI_ENROLLMENT_TOKEN='mmt_abc-DEF_1'"), "{c}");
        assert!(
            c.contains("--server 'https://ingest.example.com:443'"),
            "{c}"
        );
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
    }
}
