//! Tenants: the acting tenant's settings, and for MSPs the tenants they run
//! (create, list with usage, take over with a handover code, release).

use crate::accounts::begin_identity;
use crate::audit;
use crate::ctx::{Acting, Caller, HandOver, IssueCode, Manage, OrgAdmin};
use crate::error::{ApiError, ApiResult};
use crate::state::Shared;
use crate::validate;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Duration, Utc};
use mamori_registry::HandoverCode;
use mamori_tenancy::TenantId;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct TenantSummary {
    pub id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub device_limit: i32,
    /// Enrolled, unrevoked devices (what counts against the licence).
    pub devices: i64,
    /// Alarms not yet acknowledged.
    pub open_alarms: i64,
    /// The latest occurrence of any of the tenant's alarms (acknowledged
    /// or not); none if it never had one.
    pub last_alarm_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct TenantSettings {
    pub id: Uuid,
    pub name: String,
    pub msp_org_id: Option<Uuid>,
    pub device_limit: i32,
    pub devices: i64,
    pub open_alarms: i64,
    /// The latest occurrence of any of the tenant's alarms.
    pub last_alarm_at: Option<DateTime<Utc>>,
    /// Days operation logs are kept (90 to 2557).
    pub retention_days: i32,
    /// The IANA time zone the violation calendar's days are in by default.
    pub time_zone: String,
    pub created_at: DateTime<Utc>,
}

impl From<TenantSettings> for TenantSummary {
    fn from(s: TenantSettings) -> Self {
        Self {
            id: s.id,
            name: s.name,
            created_at: s.created_at,
            device_limit: s.device_limit,
            devices: s.devices,
            open_alarms: s.open_alarms,
            last_alarm_at: s.last_alarm_at,
        }
    }
}

/// Tenants the caller may act on: an MSP's tenants (for a technician, those
/// on its access list), or a tenant user's own.
#[utoipa::path(get, path = "/api/v1/tenants", tag = "tenants", security(("bearer" = [])),
    responses((status = 200, body = [TenantSummary])))]
pub async fn list(
    State(state): State<Shared>,
    caller: Caller,
) -> ApiResult<Json<Vec<TenantSummary>>> {
    match (caller.claims.tid, caller.claims.org) {
        (None, Some(org)) => {
            let mut tx = begin_identity(&state, Some(org), Some(caller.user())).await?;
            let rows: Vec<TenantSummary> = sqlx::query_as(
                "SELECT o.tenant_id AS id, o.name, o.created_at, o.device_limit, o.devices, o.open_alarms, o.last_alarm_at
                 FROM mamori_msp_tenant_overview() o
                 WHERE $1 OR EXISTS (SELECT 1 FROM msp_tenant_access a
                                     WHERE a.msp_org_id = $2 AND a.user_id = $3 AND a.tenant_id = o.tenant_id)",
            )
            .bind(caller.role().may(crate::claims::Permission::ManageOrg))
            .bind(org)
            .bind(caller.user())
            .fetch_all(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(Json(rows))
        }
        (Some(own), None) => {
            let mut tx = state.db.begin_tenant(TenantId::from_uuid(own)).await?;
            let own = settings(&mut tx).await?;
            tx.commit().await?;
            Ok(Json(vec![own.into()]))
        }
        _ => Err(ApiError::unauthenticated(
            "access token has no tenant or organisation",
        )),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedTenant {
    pub id: Uuid,
    /// The tenant's first enrollment token (30 days), shown once.
    pub enrollment_token: String,
}

/// Create a tenant for a customer of the caller's MSP.
#[utoipa::path(post, path = "/api/v1/tenants", tag = "tenants", security(("bearer" = ["manage_org"])),
    request_body = CreateTenant,
    responses((status = 201, body = CreatedTenant), (status = 403, body = crate::error::ErrorBody)))]
pub async fn create(
    State(state): State<Shared>,
    OrgAdmin { caller, org }: OrgAdmin,
    Json(req): Json<CreateTenant>,
) -> ApiResult<(StatusCode, Json<CreatedTenant>)> {
    let name = validate::name("name", &req.name)?;
    let tenant = TenantId::new();
    let mut tx = state.db.begin_tenant(tenant).await?;
    crate::ctx::set_identity(&mut tx, &caller.claims).await?;
    mamori_registry::insert_tenant(&mut tx, &name, Some(org)).await?;
    let token = crate::accounts::first_enrollment_token(&mut tx).await?;
    audit::record(
        &mut tx,
        &caller,
        "tenant.create",
        &tenant.to_string(),
        serde_json::json!({ "name": name, "msp_org_id": org }),
    )
    .await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedTenant {
            id: tenant.as_uuid(),
            enrollment_token: token.token.expose().to_owned(),
        }),
    ))
}

async fn settings(tx: &mut mamori_tenancy::TenantTx) -> ApiResult<TenantSettings> {
    let id = tx.tenant().as_uuid();
    sqlx::query_as(
        "SELECT t.id, t.name, t.msp_org_id, t.device_limit, t.retention_days, t.time_zone, t.created_at,
                (SELECT count(*) FROM devices d WHERE d.tenant_id = t.id AND d.revoked_at IS NULL) AS devices,
                (SELECT count(*) FROM alarms a WHERE a.tenant_id = t.id AND a.status = 'open') AS open_alarms,
                (SELECT max(a.last_at) FROM alarms a WHERE a.tenant_id = t.id) AS last_alarm_at
         FROM tenants t WHERE t.id = $1",
    )
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(|| ApiError::not_found("tenant"))
}

/// The acting tenant: licence usage and settings.
#[utoipa::path(get, path = "/api/v1/tenant", tag = "tenants", security(("bearer" = ["read_tenant"])),
    responses((status = 200, body = TenantSettings)))]
pub async fn get(State(state): State<Shared>, acting: Acting) -> ApiResult<Json<TenantSettings>> {
    let mut tx = acting.begin(&state).await?;
    let s = settings(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(s))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTenant {
    #[schema(min_length = 1, max_length = 200)]
    pub name: Option<String>,
    /// Days operation logs are kept: 90 (three months) to 2557 (seven years).
    pub retention_days: Option<i32>,
    /// An IANA time zone name, e.g. `Asia/Tokyo`.
    #[schema(max_length = 64)]
    pub time_zone: Option<String>,
}

/// Change the acting tenant's name, log retention or time zone. (The device licence
/// cap is the operator's: `mamori tenant set-limit`.)
#[utoipa::path(patch, path = "/api/v1/tenant", tag = "tenants", security(("bearer" = ["manage_tenant"])),
    request_body = UpdateTenant,
    responses((status = 200, body = TenantSettings), (status = 422, body = crate::error::ErrorBody)))]
pub async fn update(
    State(state): State<Shared>,
    acting: Acting<Manage>,
    Json(req): Json<UpdateTenant>,
) -> ApiResult<Json<TenantSettings>> {
    let name = req
        .name
        .as_deref()
        .map(|n| validate::name("name", n))
        .transpose()?;
    if let Some(r) = req.retention_days
        && !(90..=2557).contains(&r)
    {
        return Err(ApiError::invalid(
            "retention_days",
            "must be 90 (three months) to 2557 (seven years)",
        ));
    }
    let mut tx = acting.begin(&state).await?;
    if let Some(tz) = &req.time_zone {
        crate::validate::time_zone(&mut tx, "time_zone", tz).await?;
    }
    sqlx::query(
        "UPDATE tenants SET name = coalesce($2, name), retention_days = coalesce($3, retention_days),
                            time_zone = coalesce($4, time_zone)
         WHERE id = $1",
    )
    .bind(acting.tenant.as_uuid())
    .bind(&name)
    .bind(req.retention_days)
    .bind(&req.time_zone)
    .execute(&mut *tx)
    .await?;
    audit::by(
        &mut tx,
        &acting,
        "tenant.update",
        &acting.tenant.to_string(),
        serde_json::json!({ "name": name, "retention_days": req.retention_days, "time_zone": req.time_zone }),
    )
    .await?;
    let s = settings(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(s))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Handover {
    /// Give this to the MSP; it claims the tenant with it. Shown once.
    pub code: String,
    pub expires_at: DateTime<Utc>,
}

/// Create a one-time code (valid 7 days) with which an MSP takes over the
/// running of this tenant.
#[utoipa::path(post, path = "/api/v1/tenant/handover", tag = "tenants", security(("bearer" = ["hand_over_tenant"])),
    responses((status = 201, body = Handover), (status = 409, body = crate::error::ErrorBody)))]
pub async fn handover(
    State(state): State<Shared>,
    acting: Acting<HandOver>,
) -> ApiResult<(StatusCode, Json<Handover>)> {
    let code = HandoverCode::generate();
    let expires_at = Utc::now() + Duration::days(7);
    let mut tx = acting.begin(&state).await?;
    let updated = sqlx::query(
        "UPDATE tenants SET handover_hash = $2, handover_expires_at = $3, handover_created_by = $4
         WHERE id = $1 AND msp_org_id IS NULL",
    )
    .bind(acting.tenant.as_uuid())
    .bind(code.hash())
    .bind(expires_at)
    .bind(acting.caller.user())
    .execute(&mut *tx)
    .await?;
    if updated.rows_affected() == 0 {
        return Err(ApiError::conflict(
            "already_managed",
            "this tenant is already run by an MSP",
        ));
    }
    audit::by(
        &mut tx,
        &acting,
        "tenant.handover_code",
        &acting.tenant.to_string(),
        serde_json::json!({ "expires_at": expires_at }),
    )
    .await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(Handover {
            code: code.expose().to_owned(),
            expires_at,
        }),
    ))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IssuedUninstallCode {
    /// Removing the agent from a PC needs this code
    /// (`sudo MAMORI_UNINSTALL_CODE=CODE dpkg -r mamori-agent`). Shown once; a
    /// new code replaces it on every PC as their policy arrives.
    pub code: String,
    /// The policy revision that carries it to the agents.
    pub policy_revision: i64,
}

/// Issue a new uninstall code for the tenant's agents (the previous one
/// stops working once a PC has the new policy). Only its SHA-256 is kept
/// and sent to the agents, which check the code offline.
#[utoipa::path(post, path = "/api/v1/tenant/uninstall-code", tag = "tenants", security(("bearer" = ["issue_uninstall_code"])),
    responses((status = 201, body = IssuedUninstallCode)))]
pub async fn uninstall_code(
    State(state): State<Shared>,
    acting: Acting<IssueCode>,
) -> ApiResult<(StatusCode, Json<IssuedUninstallCode>)> {
    let code = mamori_registry::UninstallCode::generate();
    let mut tx = acting.begin(&state).await?;
    sqlx::query("UPDATE tenants SET uninstall_code_hash = $2 WHERE id = $1")
        .bind(acting.tenant.as_uuid())
        .bind(code.hash())
        .execute(&mut *tx)
        .await?;
    // A new revision: ingest pushes the policy, with the hash, to the PCs.
    let revision = mamori_policy::store::bump_revision(&mut tx)
        .await
        .map_err(|e| ApiError::internal("bumping the policy revision", e))?;
    audit::by(
        &mut tx,
        &acting,
        "tenant.uninstall_code",
        &acting.tenant.to_string(),
        serde_json::json!({ "policy_revision": revision }),
    )
    .await?;
    tx.commit().await?;
    mamori_policy::notify::publish_to(
        &state.redis,
        acting.tenant,
        std::time::Duration::from_secs(2),
    )
    .await;
    Ok((
        StatusCode::CREATED,
        Json(IssuedUninstallCode {
            code: code.expose().to_owned(),
            policy_revision: revision,
        }),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimTenant {
    pub code: String,
}

/// Take over a tenant with the handover code its administrator created.
#[utoipa::path(post, path = "/api/v1/tenants/claim", tag = "tenants", security(("bearer" = ["manage_org"])),
    request_body = ClaimTenant,
    responses((status = 200, body = TenantSummary), (status = 404, body = crate::error::ErrorBody)))]
pub async fn claim(
    State(state): State<Shared>,
    OrgAdmin { caller, org }: OrgAdmin,
    Json(req): Json<ClaimTenant>,
) -> ApiResult<Json<TenantSummary>> {
    let code = HandoverCode::parse(&req.code).map_err(|e| ApiError::invalid("code", e))?;
    // One transaction: the takeover and its audit entry stand or fall
    // together. The tenant is only known after the claim, so the claim runs
    // first and the transaction then switches to that tenant.
    let mut tx = state
        .db
        .begin_tenant(TenantId::from_uuid(Uuid::nil()))
        .await?;
    crate::ctx::set_identity(&mut tx, &caller.claims).await?;
    let tenant: Option<Uuid> = sqlx::query_scalar("SELECT mamori_claim_tenant($1)")
        .bind(code.hash())
        .fetch_one(&mut *tx)
        .await?;
    let tenant = TenantId::from_uuid(
        tenant.ok_or_else(|| ApiError::not_found("handover code (expired or used?)"))?,
    );
    tx.switch_tenant(tenant).await?;
    audit::record(
        &mut tx,
        &caller,
        "tenant.claimed",
        &tenant.to_string(),
        serde_json::json!({ "msp_org_id": org }),
    )
    .await?;
    let s = settings(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(s.into()))
}

/// Stop running a tenant: the MSP loses access; the tenant's own
/// administrators keep it.
#[utoipa::path(post, path = "/api/v1/tenants/{id}/release", tag = "tenants", security(("bearer" = ["manage_org"])),
    params(("id" = Uuid, Path, description = "tenant id")),
    responses((status = 204, description = "released"), (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody)))]
pub async fn release(
    State(state): State<Shared>,
    OrgAdmin { caller, org }: OrgAdmin,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    let tenant = TenantId::from_uuid(id);
    let mut tx = state.db.begin_tenant(tenant).await?;
    crate::ctx::set_identity(&mut tx, &caller.claims).await?;
    let (ours, admins): (bool, i64) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM tenants WHERE id = $1 AND msp_org_id = $2),
                (SELECT count(*) FROM users WHERE tenant_id = $1 AND role = 'tenant_admin' AND disabled_at IS NULL)",
    )
    .bind(id)
    .bind(org)
    .fetch_one(&mut *tx)
    .await?;
    if !ours {
        return Err(ApiError::not_found("tenant"));
    }
    if admins == 0 {
        return Err(ApiError::conflict(
            "no_tenant_admin",
            "the tenant has no administrator of its own: invite one before releasing it",
        ));
    }
    audit::record(
        &mut tx,
        &caller,
        "tenant.released",
        &id.to_string(),
        serde_json::json!({ "msp_org_id": org }),
    )
    .await?;
    sqlx::query("DELETE FROM msp_tenant_access WHERE msp_org_id = $1 AND tenant_id = $2")
        .bind(org)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE tenants SET msp_org_id = NULL WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
