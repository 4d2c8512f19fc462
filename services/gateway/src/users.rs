//! Users, roles and invitations: of the acting tenant (tenant admins), and
//! of an MSP organisation (MSP admins), with technicians' tenant access lists.

use crate::accounts::{
    TokenResponse, UserRow, begin_identity, email_taken, email_verified, end_sessions, insert_user,
    login_tokens,
};
use crate::audit;
use crate::claims::Role;
use crate::ctx::{Acting, Caller, Manage, OrgAdmin, client_ip};
use crate::devices::{Revocable, revoke_row};
use crate::error::{ApiError, ApiResult};
use crate::state::Shared;
use crate::validate;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use chrono::{DateTime, Duration, Utc};
use mamori_registry::InvitationSecret;
use mamori_registry::password;
use mamori_tenancy::TenantId;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// How long an invitation link works.
const INVITATION_DAYS: i64 = 7;

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct UserView {
    pub id: Uuid,
    pub email: String,
    pub role: String,
    pub created_at: DateTime<Utc>,
    pub email_verified: bool,
    pub disabled: bool,
    /// For MSP technicians: the tenants on their access list.
    #[sqlx(default)]
    pub tenant_access: Option<Vec<Uuid>>,
}

/// Users of the acting tenant.
#[utoipa::path(get, path = "/api/v1/users", tag = "users", security(("bearer" = ["manage_tenant"])),
    responses((status = 200, body = [UserView])))]
pub async fn list(
    State(state): State<Shared>,
    acting: Acting<Manage>,
) -> ApiResult<Json<Vec<UserView>>> {
    let mut tx = acting.begin(&state).await?;
    let rows: Vec<UserView> = sqlx::query_as(
        "SELECT id, email, role, created_at, email_verified_at IS NOT NULL AS email_verified,
                disabled_at IS NOT NULL AS disabled
         FROM users WHERE tenant_id = $1 ORDER BY email",
    )
    .bind(acting.tenant.as_uuid())
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Json(rows))
}

/// Users of the caller's MSP organisation, with technicians' access lists.
#[utoipa::path(get, path = "/api/v1/org/users", tag = "users", security(("bearer" = ["manage_org"])),
    responses((status = 200, body = [UserView])))]
pub async fn list_org(
    State(state): State<Shared>,
    OrgAdmin { caller, org }: OrgAdmin,
) -> ApiResult<Json<Vec<UserView>>> {
    let mut tx = begin_identity(&state, Some(org), Some(caller.user())).await?;
    let rows: Vec<UserView> = sqlx::query_as(
        "SELECT u.id, u.email, u.role, u.created_at, u.email_verified_at IS NOT NULL AS email_verified,
                u.disabled_at IS NOT NULL AS disabled,
                CASE WHEN u.role = 'msp_technician' THEN
                    coalesce((SELECT array_agg(a.tenant_id ORDER BY a.tenant_id) FROM msp_tenant_access a
                              WHERE a.msp_org_id = $1 AND a.user_id = u.id), '{}') END AS tenant_access
         FROM users u WHERE u.msp_org_id = $1 ORDER BY u.email",
    )
    .bind(org)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Json(rows))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Invite {
    #[schema(format = "email", max_length = 254)]
    pub email: String,
    pub role: Role,
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct InvitationView {
    pub id: Uuid,
    pub email: String,
    pub role: String,
    pub expires_at: DateTime<Utc>,
}

/// What both invitation endpoints check first: the inviter's own address
/// is confirmed and the invited one is valid and has no account. Returns
/// the normalised address and a fresh invitation secret.
async fn prepare_invitation(
    state: &Shared,
    caller: &Caller,
    email: &str,
) -> ApiResult<(String, InvitationSecret)> {
    if email_verified(state, caller.user()).await? != Some(true) {
        return Err(ApiError::forbidden(
            "confirm your own e-mail address (see the link we sent) before inviting others",
        ));
    }
    let email = validate::email(email)?;
    if email_taken(state, &email).await? {
        return Err(ApiError::conflict(
            "email_taken",
            "an account with this e-mail address exists",
        ));
    }
    Ok((email, InvitationSecret::generate()))
}

async fn send_invitation(
    state: &Shared,
    email: &str,
    role: Role,
    secret: &InvitationSecret,
    inviter: &str,
) {
    let link = state
        .cfg
        .link(&format!("/accept-invitation?token={}", secret.expose()));
    state
        .mailer
        .send(
            email,
            "You are invited to Mamori",
            format!(
                "{inviter} invited you to Mamori as {}.\n\nAccept within {INVITATION_DAYS} days: {link}\n\nOr POST the code to /api/v1/invitations/accept: {}\n",
                role.as_str(),
                secret.expose()
            ),
        )
        .await;
}

/// Invite a tenant admin or auditor to the acting tenant.
#[utoipa::path(post, path = "/api/v1/invitations", tag = "users", security(("bearer" = ["manage_tenant"])),
    request_body = Invite,
    responses((status = 201, body = InvitationView), (status = 409, body = crate::error::ErrorBody)))]
pub async fn invite(
    State(state): State<Shared>,
    acting: Acting<Manage>,
    Json(req): Json<Invite>,
) -> ApiResult<(StatusCode, Json<InvitationView>)> {
    if req.role.is_msp() {
        return Err(ApiError::invalid(
            "role",
            "invite MSP users at /api/v1/org/invitations",
        ));
    }
    let (email, secret) = prepare_invitation(&state, &acting.caller, &req.email).await?;
    let mut tx = acting.begin(&state).await?;
    let inv = insert_invitation(
        &mut tx,
        Some(acting.tenant.as_uuid()),
        None,
        &email,
        req.role,
        &secret,
        acting.caller.user(),
    )
    .await?;
    audit::by(
        &mut tx,
        &acting,
        "user.invite",
        &email,
        serde_json::json!({ "role": req.role, "invitation_id": inv.id }),
    )
    .await?;
    tx.commit().await?;
    send_invitation(
        &state,
        &email,
        req.role,
        &secret,
        &acting.caller.claims.email,
    )
    .await;
    Ok((StatusCode::CREATED, Json(inv)))
}

/// Invite an MSP admin or technician to the caller's organisation.
#[utoipa::path(post, path = "/api/v1/org/invitations", tag = "users", security(("bearer" = ["manage_org"])),
    request_body = Invite,
    responses((status = 201, body = InvitationView), (status = 409, body = crate::error::ErrorBody)))]
pub async fn invite_org(
    State(state): State<Shared>,
    OrgAdmin { caller, org }: OrgAdmin,
    Json(req): Json<Invite>,
) -> ApiResult<(StatusCode, Json<InvitationView>)> {
    if !req.role.is_msp() {
        return Err(ApiError::invalid(
            "role",
            "invite tenant users at /api/v1/invitations with X-Mamori-Tenant",
        ));
    }
    let (email, secret) = prepare_invitation(&state, &caller, &req.email).await?;
    let mut tx = begin_identity(&state, Some(org), Some(caller.user())).await?;
    let inv = insert_invitation(
        &mut tx,
        None,
        Some(org),
        &email,
        req.role,
        &secret,
        caller.user(),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(org = %org, invited_by = %caller.user(), role = req.role.as_str(), "MSP user invited");
    send_invitation(&state, &email, req.role, &secret, &caller.claims.email).await;
    Ok((StatusCode::CREATED, Json(inv)))
}

async fn insert_invitation(
    conn: &mut sqlx::PgConnection,
    tenant: Option<Uuid>,
    org: Option<Uuid>,
    email: &str,
    role: Role,
    secret: &InvitationSecret,
    by: Uuid,
) -> ApiResult<InvitationView> {
    Ok(sqlx::query_as(
        "INSERT INTO invitations (id, tenant_id, msp_org_id, email, role, token_hash, invited_by, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         RETURNING id, email, role, expires_at",
    )
    .bind(Uuid::now_v7())
    .bind(tenant)
    .bind(org)
    .bind(email)
    .bind(role.as_str())
    .bind(secret.hash())
    .bind(by)
    .bind(Utc::now() + Duration::days(INVITATION_DAYS))
    .fetch_one(conn)
    .await?)
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct PendingInvitationView {
    pub id: Uuid,
    pub email: String,
    pub role: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub accepted_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Invitations to the acting tenant (never their codes).
#[utoipa::path(get, path = "/api/v1/invitations", tag = "users", security(("bearer" = ["manage_tenant"])),
    responses((status = 200, body = [PendingInvitationView])))]
pub async fn list_invitations(
    State(state): State<Shared>,
    acting: Acting<Manage>,
) -> ApiResult<Json<Vec<PendingInvitationView>>> {
    let mut tx = acting.begin(&state).await?;
    let rows: Vec<PendingInvitationView> = sqlx::query_as(
        "SELECT id, email, role, created_at, expires_at, accepted_at, revoked_at
         FROM invitations WHERE tenant_id = $1 ORDER BY created_at DESC, id",
    )
    .bind(acting.tenant.as_uuid())
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Json(rows))
}

/// Invitations to the caller's MSP organisation (never their codes).
#[utoipa::path(get, path = "/api/v1/org/invitations", tag = "users", security(("bearer" = ["manage_org"])),
    responses((status = 200, body = [PendingInvitationView])))]
pub async fn list_org_invitations(
    State(state): State<Shared>,
    OrgAdmin { caller, org }: OrgAdmin,
) -> ApiResult<Json<Vec<PendingInvitationView>>> {
    let mut tx = begin_identity(&state, Some(org), Some(caller.user())).await?;
    let rows: Vec<PendingInvitationView> = sqlx::query_as(
        "SELECT id, email, role, created_at, expires_at, accepted_at, revoked_at
         FROM invitations WHERE msp_org_id = $1 ORDER BY created_at DESC, id",
    )
    .bind(org)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Json(rows))
}

/// Withdraw an invitation to the caller's MSP organisation that has not
/// been accepted.
#[utoipa::path(post, path = "/api/v1/org/invitations/{id}/revoke", tag = "users", security(("bearer" = ["manage_org"])),
    params(("id" = Uuid, Path, description = "invitation id")),
    responses((status = 204, description = "withdrawn"), (status = 404, body = crate::error::ErrorBody)))]
pub async fn revoke_org_invitation(
    State(state): State<Shared>,
    OrgAdmin { caller, org }: OrgAdmin,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    let mut tx = begin_identity(&state, Some(org), Some(caller.user())).await?;
    let email: Option<String> = sqlx::query_scalar(
        "UPDATE invitations SET revoked_at = coalesce(revoked_at, now())
         WHERE msp_org_id = $1 AND id = $2 AND accepted_at IS NULL RETURNING email",
    )
    .bind(org)
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    email.ok_or_else(|| ApiError::not_found("pending invitation"))?;
    tx.commit().await?;
    tracing::info!(org = %org, invitation_id = %id, by = %caller.user(), "MSP invitation withdrawn");
    Ok(StatusCode::NO_CONTENT)
}

/// Withdraw an invitation that has not been accepted.
#[utoipa::path(post, path = "/api/v1/invitations/{id}/revoke", tag = "users", security(("bearer" = ["manage_tenant"])),
    params(("id" = Uuid, Path, description = "invitation id")),
    responses((status = 204, description = "withdrawn"), (status = 404, body = crate::error::ErrorBody)))]
pub async fn revoke_invitation(
    State(state): State<Shared>,
    acting: Acting<Manage>,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    revoke_row(&state, &acting, Revocable::Invitation, id)
        .await?
        .commit()
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcceptInvitation {
    pub token: String,
    #[schema(min_length = 12, max_length = 128)]
    pub password: String,
}

#[derive(sqlx::FromRow)]
struct PendingInvitation {
    id: Uuid,
    tenant_id: Option<Uuid>,
    msp_org_id: Option<Uuid>,
    email: String,
    role: String,
    expires_at: DateTime<Utc>,
    accepted_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

/// Accept an invitation: choose a password; you are logged in.
#[utoipa::path(post, path = "/api/v1/invitations/accept", tag = "users", request_body = AcceptInvitation,
    responses((status = 201, body = TokenResponse), (status = 404, body = crate::error::ErrorBody)))]
pub async fn accept(
    State(state): State<Shared>,
    parts: Parts,
    Json(req): Json<AcceptInvitation>,
) -> ApiResult<(StatusCode, Json<TokenResponse>)> {
    state.limits.auth(client_ip(&parts)).await?;
    let secret = InvitationSecret::parse(&req.token).map_err(|e| ApiError::invalid("token", e))?;
    let inv: PendingInvitation = sqlx::query_as(
        "SELECT id, tenant_id, msp_org_id, email, role, expires_at, accepted_at, revoked_at
         FROM mamori_invitation_by_hash($1)",
    )
    .bind(secret.hash())
    .fetch_optional(state.db.pool())
    .await?
    .ok_or_else(|| ApiError::not_found("invitation"))?;
    if inv.accepted_at.is_some() {
        return Err(ApiError::conflict(
            "invitation_used",
            "this invitation was already accepted: log in",
        ));
    }
    if inv.revoked_at.is_some() || inv.expires_at <= Utc::now() {
        return Err(ApiError::conflict(
            "invitation_expired",
            "this invitation has expired or was withdrawn: ask for a new one",
        ));
    }
    password::check_rules("password", &req.password, &inv.email)?;
    let role =
        Role::parse(&inv.role).ok_or_else(|| ApiError::internal("invitation role", &inv.role))?;
    let hash = password::hash(req.password).await?;
    let user_id = Uuid::now_v7();
    // The invitation link proves the address: the account starts verified.
    match inv.tenant_id {
        Some(t) => {
            let mut tx = state.db.begin_tenant(TenantId::from_uuid(t)).await?;
            insert_user(
                &mut tx,
                user_id,
                &inv.email,
                &hash,
                Some(t),
                None,
                role,
                None,
            )
            .await?;
            mark_accepted(&mut tx, inv.id).await?;
            tx.commit().await?;
        }
        None => {
            let mut tx = begin_identity(&state, inv.msp_org_id, Some(user_id)).await?;
            insert_user(
                &mut tx,
                user_id,
                &inv.email,
                &hash,
                None,
                inv.msp_org_id,
                role,
                None,
            )
            .await?;
            mark_accepted(&mut tx, inv.id).await?;
            tx.commit().await?;
        }
    }
    let user = UserRow {
        id: user_id,
        email: inv.email,
        role: inv.role,
        tenant_id: inv.tenant_id,
        msp_org_id: inv.msp_org_id,
        session_epoch: 0,
    };
    Ok((
        StatusCode::CREATED,
        Json(login_tokens(&state, &user).await?),
    ))
}

async fn mark_accepted(conn: &mut sqlx::PgConnection, id: Uuid) -> ApiResult<()> {
    let done = sqlx::query(
        "UPDATE invitations SET accepted_at = now()
         WHERE id = $1 AND accepted_at IS NULL AND revoked_at IS NULL AND expires_at > now()",
    )
    .bind(id)
    .execute(conn)
    .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::conflict(
            "invitation_used",
            "this invitation was already accepted: log in",
        ));
    }
    Ok(())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    pub role: Option<Role>,
    /// Disabling ends every session of the user.
    pub disabled: Option<bool>,
}

fn check_self(caller: &Caller, id: Uuid) -> ApiResult<()> {
    if caller.user() == id {
        return Err(ApiError::forbidden(
            "you cannot change your own role or disable yourself",
        ));
    }
    Ok(())
}

/// Whose users an update may touch.
enum Scope {
    Tenant(Uuid),
    Org(Uuid),
}

/// Applies a role change or (dis|en)abling to a user within `scope`, ending
/// the user's sessions when their rights shrink or change.
async fn apply_update(
    conn: &mut sqlx::PgConnection,
    scope: Scope,
    id: Uuid,
    req: &UpdateUser,
) -> ApiResult<UserView> {
    let (tenant, org) = match scope {
        Scope::Tenant(t) => (Some(t), None),
        Scope::Org(o) => (None, Some(o)),
    };
    let row: Option<UserView> = sqlx::query_as(
        "UPDATE users SET role = coalesce($4, role),
                disabled_at = CASE WHEN $5 IS NULL THEN disabled_at WHEN $5 THEN coalesce(disabled_at, now()) END
         WHERE (tenant_id = $1 OR msp_org_id = $2) AND id = $3
         RETURNING id, email, role, created_at, email_verified_at IS NOT NULL AS email_verified,
                   disabled_at IS NOT NULL AS disabled",
    )
    .bind(tenant)
    .bind(org)
    .bind(id)
    .bind(req.role.map(Role::as_str))
    .bind(req.disabled)
    .fetch_optional(&mut *conn)
    .await?;
    let row = row.ok_or_else(|| ApiError::not_found("user"))?;
    if req.disabled == Some(true) || req.role.is_some() {
        // Their tokens stop working at once, and nobody they invited can
        // still join on their word.
        end_sessions(conn, id).await?;
        let voided: i32 = sqlx::query_scalar("SELECT mamori_void_invitations_of($1)")
            .bind(id)
            .fetch_one(&mut *conn)
            .await?;
        if voided > 0 {
            tracing::info!(user_id = %id, invitations = voided, "pending invitations of the user withdrawn");
        }
    }
    Ok(row)
}

/// Change the role of a user of the acting tenant, or disable them.
#[utoipa::path(patch, path = "/api/v1/users/{id}", tag = "users", security(("bearer" = ["manage_tenant"])),
    params(("id" = Uuid, Path, description = "user id")), request_body = UpdateUser,
    responses((status = 200, body = UserView), (status = 404, body = crate::error::ErrorBody)))]
pub async fn update(
    State(state): State<Shared>,
    acting: Acting<Manage>,
    Path(id): Path<Uuid>,
    Json(req): Json<UpdateUser>,
) -> ApiResult<Json<UserView>> {
    check_self(&acting.caller, id)?;
    if req.role.is_some_and(Role::is_msp) {
        return Err(ApiError::invalid(
            "role",
            "a tenant user can be tenant_admin or auditor",
        ));
    }
    let mut tx = acting.begin(&state).await?;
    let row = apply_update(&mut tx, Scope::Tenant(acting.tenant.as_uuid()), id, &req).await?;
    audit::by(
        &mut tx,
        &acting,
        "user.update",
        &row.email,
        serde_json::json!({ "user_id": id, "role": req.role, "disabled": req.disabled }),
    )
    .await?;
    tx.commit().await?;
    state.sessions.forget_user(id);
    Ok(Json(row))
}

/// Change the role of a user of the caller's MSP organisation, or disable them.
#[utoipa::path(patch, path = "/api/v1/org/users/{id}", tag = "users", security(("bearer" = ["manage_org"])),
    params(("id" = Uuid, Path, description = "user id")), request_body = UpdateUser,
    responses((status = 200, body = UserView), (status = 404, body = crate::error::ErrorBody)))]
pub async fn update_org(
    State(state): State<Shared>,
    OrgAdmin { caller, org }: OrgAdmin,
    Path(id): Path<Uuid>,
    Json(req): Json<UpdateUser>,
) -> ApiResult<Json<UserView>> {
    check_self(&caller, id)?;
    if req.role.is_some_and(|r| !r.is_msp()) {
        return Err(ApiError::invalid(
            "role",
            "an MSP user can be msp_admin or msp_technician",
        ));
    }
    let mut tx = begin_identity(&state, Some(org), Some(caller.user())).await?;
    let row = apply_update(&mut tx, Scope::Org(org), id, &req).await?;
    tx.commit().await?;
    state.sessions.forget_user(id);
    Ok(Json(row))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantAccess {
    pub tenant_ids: Vec<Uuid>,
}

/// Set the tenants an MSP technician may act on (replaces the list).
#[utoipa::path(put, path = "/api/v1/org/users/{id}/tenants", tag = "users", security(("bearer" = ["manage_org"])),
    params(("id" = Uuid, Path, description = "technician's user id")), request_body = TenantAccess,
    responses((status = 200, body = UserView), (status = 404, body = crate::error::ErrorBody)))]
pub async fn set_access(
    State(state): State<Shared>,
    OrgAdmin { caller, org }: OrgAdmin,
    Path(id): Path<Uuid>,
    Json(req): Json<TenantAccess>,
) -> ApiResult<Json<UserView>> {
    if req.tenant_ids.len() > 10_000 {
        return Err(ApiError::invalid("tenant_ids", "at most 10000 tenants"));
    }
    // A tenant transaction (starting on no tenant) so that each tenant whose
    // list entry changes gets the change in its own audit log, atomically.
    let mut tx = state
        .db
        .begin_tenant(TenantId::from_uuid(Uuid::nil()))
        .await?;
    crate::ctx::set_identity(&mut tx, &caller.claims).await?;
    let role: Option<String> =
        sqlx::query_scalar("SELECT role FROM users WHERE msp_org_id = $1 AND id = $2 FOR UPDATE")
            .bind(org)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    match role.as_deref() {
        None => return Err(ApiError::not_found("user")),
        Some("msp_technician") => {}
        Some(_) => {
            return Err(ApiError::invalid(
                "id",
                "access lists apply to MSP technicians only",
            ));
        }
    }
    let ours: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tenants WHERE msp_org_id = $1 AND id = ANY($2)")
            .bind(org)
            .bind(&req.tenant_ids)
            .fetch_one(&mut *tx)
            .await?;
    let mut wanted = req.tenant_ids.clone();
    wanted.sort_unstable();
    wanted.dedup();
    if ours != wanted.len() as i64 {
        return Err(ApiError::not_found("tenant"));
    }
    let before: Vec<Uuid> = sqlx::query_scalar(
        "DELETE FROM msp_tenant_access WHERE msp_org_id = $1 AND user_id = $2 RETURNING tenant_id",
    )
    .bind(org)
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO msp_tenant_access (msp_org_id, user_id, tenant_id) SELECT $1, $2, unnest($3::uuid[])",
    )
    .bind(org)
    .bind(id)
    .bind(&wanted)
    .execute(&mut *tx)
    .await?;
    let row: UserView = sqlx::query_as(
        "SELECT u.id, u.email, u.role, u.created_at, u.email_verified_at IS NOT NULL AS email_verified,
                u.disabled_at IS NOT NULL AS disabled, $3::uuid[] AS tenant_access
         FROM users u WHERE u.msp_org_id = $1 AND u.id = $2",
    )
    .bind(org)
    .bind(id)
    .bind(&wanted)
    .fetch_one(&mut *tx)
    .await?;
    let granted = wanted
        .iter()
        .filter(|t| !before.contains(t))
        .map(|t| (*t, true));
    let removed = before
        .iter()
        .filter(|t| !wanted.contains(t))
        .map(|t| (*t, false));
    for (tenant, granted) in granted.chain(removed).collect::<Vec<_>>() {
        tx.switch_tenant(TenantId::from_uuid(tenant)).await?;
        if !granted {
            // What the technician invited there goes with its access.
            sqlx::query(
                "UPDATE invitations SET revoked_at = now()
                 WHERE tenant_id = $1 AND invited_by = $2 AND accepted_at IS NULL AND revoked_at IS NULL",
            )
            .bind(tenant)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        audit::record(
            &mut tx,
            &caller,
            if granted {
                "msp.access_granted"
            } else {
                "msp.access_removed"
            },
            &row.email,
            serde_json::json!({ "user_id": id }),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(Json(row))
}
