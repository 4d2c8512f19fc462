//! Accounts: signup, e-mail verification, login, token refresh and logout.

use crate::audit;
use crate::claims::{Claims, Role};
use crate::ctx::{Caller, client_ip, request_id};
use crate::error::{ApiError, ApiResult};
use crate::keys::{AUDIENCE, ISSUER};
use crate::state::Shared;
use crate::validate;
use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use chrono::{DateTime, Duration, Utc};
use mamori_registry::password;
use mamori_registry::{RefreshToken, VerificationSecret};
use mamori_tenancy::TenantId;
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, Transaction};
use utoipa::ToSchema;
use uuid::Uuid;

/// Who a user is, as tokens need it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub id: Uuid,
    pub email: String,
    pub role: String,
    pub tenant_id: Option<Uuid>,
    pub msp_org_id: Option<Uuid>,
    /// The epoch new sessions start at (see `crate::sessions`).
    pub session_epoch: i32,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SignupKind {
    /// A company that runs its own PCs: a tenant and its first admin.
    #[default]
    Tenant,
    /// An MSP organisation that will run tenants for its customers.
    Msp,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignupRequest {
    #[schema(format = "email", max_length = 254)]
    pub email: String,
    #[schema(min_length = 12, max_length = 128)]
    pub password: String,
    /// The company (or MSP) name.
    #[schema(min_length = 1, max_length = 200)]
    pub company: String,
    #[serde(default)]
    pub kind: SignupKind,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SignupResponse {
    pub user_id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub org_id: Option<Uuid>,
    /// The tenant's first enrollment token (30 days), shown once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enrollment_token: Option<String>,
    #[serde(flatten)]
    pub tokens: TokenResponse,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    pub refresh_token: String,
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    #[schema(format = "email", max_length = 254)]
    pub email: String,
    #[schema(max_length = 128)]
    pub password: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

#[derive(Debug, Deserialize, ToSchema, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// The code from the verification link.
    pub token: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    pub id: Uuid,
    pub email: String,
    pub role: Role,
    pub tenant_id: Option<Uuid>,
    pub org_id: Option<Uuid>,
    pub email_verified: bool,
    /// What the role may do (the same table the API enforces; each
    /// operation names the one it takes in its `bearer` security scopes).
    pub permissions: Vec<crate::claims::Permission>,
}

/// A transaction for work outside one tenant (signup, login, refresh),
/// naming the organisation and user for the policies.
pub async fn begin_identity(
    state: &Shared,
    org: Option<Uuid>,
    user: Option<Uuid>,
) -> ApiResult<Transaction<'static, Postgres>> {
    Ok(state.db.begin_actor(org, user).await?)
}

#[derive(sqlx::FromRow)]
struct UserState {
    #[sqlx(flatten)]
    user: UserRow,
    disabled: bool,
}

/// The user row (and whether it is disabled), read as that user.
pub async fn load_user(state: &Shared, id: Uuid) -> ApiResult<Option<(UserRow, bool)>> {
    let mut tx = begin_identity(state, None, Some(id)).await?;
    let row: Option<UserState> = sqlx::query_as(
        "SELECT id, email, role, tenant_id, msp_org_id, session_epoch, disabled_at IS NOT NULL AS disabled
         FROM users WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(row.map(|r| (r.user, r.disabled)))
}

/// The claims of an access token for `user`'s login `family`.
fn claims_for(state: &Shared, user: &UserRow, family: Option<Uuid>) -> ApiResult<Claims> {
    let role = Role::parse(&user.role)
        .ok_or_else(|| ApiError::internal("user role", format!("unknown role {:?}", user.role)))?;
    let now = Utc::now().timestamp();
    let ttl = i64::try_from(state.cfg.access_token_ttl_s).unwrap_or(900);
    Ok(Claims {
        iss: ISSUER.into(),
        aud: AUDIENCE.into(),
        sub: user.id,
        iat: now,
        nbf: now,
        exp: now + ttl,
        jti: Uuid::new_v4(),
        email: user.email.clone(),
        role,
        tid: user.tenant_id,
        org: user.msp_org_id,
        sep: user.session_epoch,
        fam: family,
    })
}

fn refresh_expiry(state: &Shared) -> DateTime<Utc> {
    Utc::now() + Duration::seconds(i64::try_from(state.cfg.refresh_token_ttl_s).unwrap_or(86_400))
}

/// Signs an access token for `user` and pairs it with `refresh`, of the
/// login `family`.
fn token_pair(
    state: &Shared,
    user: &UserRow,
    refresh: &RefreshToken,
    family: Uuid,
) -> ApiResult<TokenResponse> {
    let claims = claims_for(state, user, Some(family))?;
    let access = state
        .keys
        .sign(&claims)
        .map_err(|e| ApiError::internal("signing access token", e))?;
    Ok(TokenResponse {
        access_token: access,
        refresh_token: refresh.expose().to_owned(),
        token_type: "Bearer",
        expires_in: state.cfg.access_token_ttl_s,
    })
}

/// Starts a new refresh-token family for a fresh login.
pub async fn login_tokens(state: &Shared, user: &UserRow) -> ApiResult<TokenResponse> {
    let refresh = RefreshToken::generate();
    let family = Uuid::new_v4();
    sqlx::query("SELECT mamori_issue_refresh_token($1, $2, $3, $4, $5)")
        .bind(Uuid::new_v4())
        .bind(family)
        .bind(user.id)
        .bind(refresh.hash())
        .bind(refresh_expiry(state))
        .execute(state.db.pool())
        .await?;
    token_pair(state, user, &refresh, family)
}

/// The enrollment token a new tenant starts with: 30 days, unlimited uses.
pub async fn first_enrollment_token(
    tx: &mut mamori_tenancy::TenantTx,
) -> ApiResult<mamori_registry::CreatedToken> {
    Ok(mamori_registry::create_token_in(
        tx,
        Some(std::time::Duration::from_secs(30 * 86_400)),
        None,
        None,
    )
    .await?)
}

/// Creates the verification secret of a new address and mails the link.
pub async fn send_verification(state: &Shared, email: &str, secret: &VerificationSecret) {
    // The console's page when there is one (it confirms with a POST), else
    // the API's GET.
    let path = if state.cfg.console_dir.is_empty() {
        "/api/v1/auth/verify"
    } else {
        "/verify"
    };
    let link = state.cfg.link(&format!("{path}?token={}", secret.expose()));
    state
        .mailer
        .send(
            email,
            "Confirm your e-mail address for Mamori",
            format!("Open this link to confirm your address:\n\n{link}\n\nIf you did not sign up for Mamori, ignore this mail.\n"),
        )
        .await;
}

fn synthetic_caller(parts_ip: Option<std::net::IpAddr>, rid: String, claims: Claims) -> Caller {
    Caller {
        claims,
        ip: parts_ip,
        request_id: rid,
    }
}

/// Sign up a company (a tenant and its first admin) or an MSP organisation.
#[utoipa::path(post, path = "/api/v1/signup", tag = "accounts", request_body = SignupRequest,
    responses((status = 201, body = SignupResponse), (status = 409, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)))]
pub async fn signup(
    State(state): State<Shared>,
    parts: Parts,
    Json(req): Json<SignupRequest>,
) -> ApiResult<(StatusCode, Json<SignupResponse>)> {
    state.limits.auth(client_ip(&parts)).await?;
    let email = validate::email(&req.email)?;
    password::check_rules("password", &req.password, &email)?;
    let company = validate::name("company", &req.company)?;
    if email_taken(&state, &email).await? {
        return Err(ApiError::conflict(
            "email_taken",
            "an account with this e-mail address exists: log in instead",
        ));
    }
    let hash = password::hash(req.password).await?;
    let verify = VerificationSecret::generate();
    let user_id = Uuid::now_v7();
    let (user, tenant_id, org_id, enrollment) = match req.kind {
        SignupKind::Tenant => {
            let tenant = TenantId::new();
            let mut tx = state.db.begin_tenant(tenant).await?;
            mamori_registry::insert_tenant(&mut tx, &company, None).await?;
            insert_user(
                &mut tx,
                user_id,
                &email,
                &hash,
                Some(tenant.as_uuid()),
                None,
                Role::TenantAdmin,
                Some(&verify),
            )
            .await?;
            let token = first_enrollment_token(&mut tx).await?;
            let user = UserRow {
                id: user_id,
                email: email.clone(),
                role: Role::TenantAdmin.as_str().into(),
                tenant_id: Some(tenant.as_uuid()),
                msp_org_id: None,
                session_epoch: 0,
            };
            let caller = synthetic_caller(
                client_ip(&parts),
                request_id(&parts),
                claims_for(&state, &user, None)?,
            );
            audit::record(&mut tx, &caller, "tenant.signup", &tenant.to_string(),
                serde_json::json!({"company": company, "enrollment_token_id": token.id.to_string()})).await?;
            tx.commit().await?;
            (
                user,
                Some(tenant.as_uuid()),
                None,
                Some(token.token.expose().to_owned()),
            )
        }
        SignupKind::Msp => {
            let org = Uuid::now_v7();
            let mut tx = begin_identity(&state, Some(org), Some(user_id)).await?;
            sqlx::query("INSERT INTO msp_orgs (id, name) VALUES ($1, $2)")
                .bind(org)
                .bind(&company)
                .execute(&mut *tx)
                .await?;
            insert_user(
                &mut tx,
                user_id,
                &email,
                &hash,
                None,
                Some(org),
                Role::MspAdmin,
                Some(&verify),
            )
            .await?;
            tx.commit().await?;
            let user = UserRow {
                id: user_id,
                email: email.clone(),
                role: Role::MspAdmin.as_str().into(),
                tenant_id: None,
                msp_org_id: Some(org),
                session_epoch: 0,
            };
            (user, None, Some(org), None)
        }
    };
    tracing::info!(user_id = %user.id, kind = ?req.kind, "signed up");
    send_verification(&state, &email, &verify).await;
    let tokens = login_tokens(&state, &user).await?;
    Ok((
        StatusCode::CREATED,
        Json(SignupResponse {
            user_id: user.id,
            tenant_id,
            org_id,
            enrollment_token: enrollment,
            tokens,
        }),
    ))
}

pub async fn email_taken(state: &Shared, email: &str) -> ApiResult<bool> {
    Ok(sqlx::query_scalar("SELECT mamori_email_taken($1)")
        .bind(email)
        .fetch_one(state.db.pool())
        .await?)
}

#[allow(clippy::too_many_arguments)]
pub async fn insert_user(
    conn: &mut sqlx::PgConnection,
    id: Uuid,
    email: &str,
    password_hash: &str,
    tenant: Option<Uuid>,
    org: Option<Uuid>,
    role: Role,
    verify: Option<&VerificationSecret>,
) -> ApiResult<()> {
    Ok(mamori_registry::users::insert_user(
        conn,
        mamori_registry::users::NewUser {
            id,
            email,
            password_hash,
            tenant,
            org,
            role: role.as_str(),
            verify,
        },
    )
    .await?)
}

/// Confirm an e-mail address with the code from the verification link.
#[utoipa::path(get, path = "/api/v1/auth/verify", tag = "accounts", params(VerifyRequest),
    responses((status = 200, description = "address confirmed"), (status = 404, body = crate::error::ErrorBody)))]
pub async fn verify_link(
    State(state): State<Shared>,
    Query(req): Query<VerifyRequest>,
) -> ApiResult<Json<serde_json::Value>> {
    verify_code(&state, &req.token).await
}

/// Confirm an e-mail address (the same as following the link).
#[utoipa::path(post, path = "/api/v1/auth/verify", tag = "accounts", request_body = VerifyRequest,
    responses((status = 200, description = "address confirmed"), (status = 404, body = crate::error::ErrorBody)))]
pub async fn verify_post(
    State(state): State<Shared>,
    Json(req): Json<VerifyRequest>,
) -> ApiResult<Json<serde_json::Value>> {
    verify_code(&state, &req.token).await
}

async fn verify_code(state: &Shared, code: &str) -> ApiResult<Json<serde_json::Value>> {
    let secret = VerificationSecret::parse(code).map_err(|e| ApiError::invalid("token", e))?;
    let user: Option<Uuid> = sqlx::query_scalar("SELECT mamori_verify_email($1)")
        .bind(secret.hash())
        .fetch_one(state.db.pool())
        .await?;
    match user {
        Some(id) => Ok(Json(serde_json::json!({ "verified": true, "user_id": id }))),
        None => Err(ApiError::not_found("verification code (already used?)")),
    }
}

#[derive(sqlx::FromRow)]
struct LoginRow {
    id: Uuid,
    password_hash: String,
    tenant_id: Option<Uuid>,
    msp_org_id: Option<Uuid>,
    role: String,
    disabled: bool,
    failed_logins: i32,
    session_epoch: i32,
}

/// Log in with e-mail and password.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "accounts", request_body = LoginRequest,
    responses((status = 200, body = TokenResponse), (status = 401, body = crate::error::ErrorBody),
              (status = 429, body = crate::error::ErrorBody)))]
pub async fn login(
    State(state): State<Shared>,
    parts: Parts,
    Json(req): Json<LoginRequest>,
) -> ApiResult<Json<TokenResponse>> {
    state.limits.auth(client_ip(&parts)).await?;
    let refused = || ApiError::unauthenticated("e-mail address or password is wrong");
    // A malformed address cannot have an account; answer as for a wrong
    // password so that the reply says nothing more.
    let email = validate::email(&req.email).ok();
    if req.password.len() > 4 * password::MAX_LEN {
        return Err(refused());
    }
    let row: Option<LoginRow> = match &email {
        Some(e) => {
            sqlx::query_as(
                "SELECT id, password_hash, tenant_id, msp_org_id, role, disabled, failed_logins, session_epoch
             FROM mamori_user_for_login($1)",
            )
            .bind(e)
            .fetch_optional(state.db.pool())
            .await?
        }
        None => None,
    };
    if let Some(r) = &row
        && let Some(wait) = admit_attempt(&state, r.id).await?
    {
        return Err(ApiError {
            code: "too_many_attempts",
            ..ApiError::rate_limited(
                wait,
                format!("too many login attempts for this account: try again in {wait} s"),
            )
        });
    }
    let ok = password::verify(req.password, row.as_ref().map(|r| r.password_hash.clone())).await?;
    let Some(r) = row else {
        return Err(refused());
    };
    if !ok {
        // Already counted by admit_attempt.
        tracing::info!(user_id = %r.id, failures = r.failed_logins + 1, "wrong password");
        return Err(refused());
    }
    sqlx::query("SELECT mamori_record_login($1, true)")
        .bind(r.id)
        .execute(state.db.pool())
        .await?;
    if r.disabled {
        return Err(ApiError::forbidden("this account is disabled"));
    }
    let user = UserRow {
        id: r.id,
        email: email.unwrap_or_default(),
        role: r.role,
        tenant_id: r.tenant_id,
        msp_org_id: r.msp_org_id,
        session_epoch: r.session_epoch,
    };
    Ok(Json(login_tokens(&state, &user).await?))
}

/// Admits a login attempt for `user`, or says how many seconds the account
/// must wait (after `login_free_failures` wrong passwords in a row, 1, 2,
/// 4 … s after the last one, at most `login_max_lockout_s`). The check and
/// the count are one locked step, so parallel guesses cannot all get in.
async fn admit_attempt(state: &Shared, user: Uuid) -> ApiResult<Option<u64>> {
    let wait: i32 = sqlx::query_scalar("SELECT mamori_begin_login($1, $2, $3)")
        .bind(user)
        .bind(i32::try_from(state.cfg.login_free_failures).unwrap_or(i32::MAX))
        .bind(i32::try_from(state.cfg.login_max_lockout_s).unwrap_or(i32::MAX))
        .fetch_one(state.db.pool())
        .await?;
    Ok((wait > 0).then(|| u64::try_from(wait).unwrap_or(1)))
}

/// Trade a refresh token for a new access token and a new refresh token.
/// Presenting a refresh token a second time revokes every token of its login.
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "accounts", request_body = RefreshRequest,
    responses((status = 200, body = TokenResponse), (status = 401, body = crate::error::ErrorBody)))]
pub async fn refresh(
    State(state): State<Shared>,
    parts: Parts,
    Json(req): Json<RefreshRequest>,
) -> ApiResult<Json<TokenResponse>> {
    state.limits.auth(client_ip(&parts)).await?;
    let old = RefreshToken::parse(&req.refresh_token)
        .map_err(|_| ApiError::unauthenticated("refresh token is not valid"))?;
    let new = RefreshToken::generate();
    let (outcome, user_id, family): (String, Option<Uuid>, Option<Uuid>) = sqlx::query_as(
        "SELECT outcome, user_id, family_id FROM mamori_rotate_refresh_token($1, $2, $3, $4)",
    )
    .bind(old.hash())
    .bind(Uuid::new_v4())
    .bind(new.hash())
    .bind(refresh_expiry(&state))
    .fetch_one(state.db.pool())
    .await?;
    match outcome.as_str() {
        "ok" => {}
        "reused" => {
            tracing::warn!(user_id = ?user_id, family = ?family, "refresh token reused: family revoked");
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "refresh_token_reused",
                "this refresh token was already used; every session of this login is now revoked: log in again",
            ));
        }
        "expired" => {
            return Err(ApiError::unauthenticated(
                "refresh token has expired: log in again",
            ));
        }
        "revoked" => {
            return Err(ApiError::unauthenticated(
                "refresh token has been revoked: log in again",
            ));
        }
        _ => return Err(ApiError::unauthenticated("refresh token is not valid")),
    }
    let (Some(user_id), Some(family)) = (user_id, family) else {
        return Err(ApiError::unauthenticated("refresh token is not valid"));
    };
    let (user, disabled) = load_user(&state, user_id)
        .await?
        .ok_or_else(|| ApiError::unauthenticated("the account no longer exists"))?;
    if disabled {
        return Err(ApiError::forbidden("this account is disabled"));
    }
    Ok(Json(token_pair(&state, &user, &new, family)?))
}

/// Log out: ends the login that a refresh token belongs to, its access
/// tokens included.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "accounts", request_body = RefreshRequest,
    responses((status = 204, description = "logged out")))]
pub async fn logout(
    State(state): State<Shared>,
    Json(req): Json<RefreshRequest>,
) -> ApiResult<StatusCode> {
    if let Ok(token) = RefreshToken::parse(&req.refresh_token) {
        let family: Option<Uuid> = sqlx::query_scalar("SELECT mamori_revoke_refresh_family($1)")
            .bind(token.hash())
            .fetch_one(state.db.pool())
            .await?;
        if let Some(f) = family {
            state.sessions.forget_family(f);
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Ends every session of `user` (refresh tokens revoked, access tokens
/// refused from now on), in `conn`'s transaction. The caller forgets the
/// cached state after committing.
pub async fn end_sessions(conn: &mut sqlx::PgConnection, user: Uuid) -> ApiResult<()> {
    sqlx::query("SELECT mamori_revoke_user_sessions($1)")
        .bind(user)
        .execute(conn)
        .await?;
    Ok(())
}

/// Stores a new password hash and ends every session of the user; returns
/// the epoch new sessions start at.
async fn set_password(conn: &mut sqlx::PgConnection, user: Uuid, hash: &str) -> ApiResult<i32> {
    sqlx::query("UPDATE users SET password_hash = $2, failed_logins = 0 WHERE id = $1")
        .bind(user)
        .bind(hash)
        .execute(&mut *conn)
        .await?;
    let epoch: i32 = sqlx::query_scalar("SELECT mamori_revoke_user_sessions($1)")
        .bind(user)
        .fetch_one(conn)
        .await?;
    Ok(epoch)
}

/// Log out everywhere: ends every session of the caller, on every device.
#[utoipa::path(post, path = "/api/v1/auth/logout-everywhere", tag = "accounts", security(("bearer" = [])),
    responses((status = 204, description = "every session ended"), (status = 401, body = crate::error::ErrorBody)))]
pub async fn logout_everywhere(
    State(state): State<Shared>,
    caller: Caller,
) -> ApiResult<StatusCode> {
    let mut tx = begin_identity(&state, caller.claims.org, Some(caller.user())).await?;
    end_sessions(&mut tx, caller.user()).await?;
    tx.commit().await?;
    state.sessions.forget_user(caller.user());
    tracing::info!(user_id = %caller.user(), "logged out everywhere");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePassword {
    #[schema(max_length = 128)]
    pub current_password: String,
    #[schema(min_length = 12, max_length = 128)]
    pub new_password: String,
}

/// Change your password: every other session ends; the answer is a fresh
/// login for this one.
#[utoipa::path(post, path = "/api/v1/me/password", tag = "accounts", security(("bearer" = [])),
    request_body = ChangePassword,
    responses((status = 200, body = TokenResponse), (status = 401, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)))]
pub async fn change_password(
    State(state): State<Shared>,
    parts: Parts,
    caller: Caller,
    Json(req): Json<ChangePassword>,
) -> ApiResult<Json<TokenResponse>> {
    state.limits.auth(client_ip(&parts)).await?;
    let email = caller.claims.email.clone();
    password::check_rules("new_password", &req.new_password, &email)?;
    if req.current_password.len() > 4 * password::MAX_LEN {
        return Err(ApiError::unauthenticated("the current password is wrong"));
    }
    let row: Option<LoginRow> = sqlx::query_as(
        "SELECT id, password_hash, tenant_id, msp_org_id, role, disabled, failed_logins, session_epoch
         FROM mamori_user_for_login($1)",
    )
    .bind(&email)
    .fetch_optional(state.db.pool())
    .await?;
    let row = row.ok_or_else(|| ApiError::unauthenticated("the account no longer exists"))?;
    if let Some(wait) = admit_attempt(&state, row.id).await? {
        return Err(ApiError::rate_limited(
            wait,
            format!("too many login attempts for this account: try again in {wait} s"),
        ));
    }
    if !password::verify(req.current_password, Some(row.password_hash.clone())).await? {
        return Err(ApiError::unauthenticated("the current password is wrong"));
    }
    let hash = password::hash(req.new_password).await?;
    // The row is updated as its own user, in its tenant or organisation.
    let epoch = match row.tenant_id {
        Some(t) => {
            let mut tx = state.db.begin_tenant(TenantId::from_uuid(t)).await?;
            tx.set_actor(None, Some(row.id)).await?;
            let epoch = set_password(&mut tx, row.id, &hash).await?;
            tx.commit().await?;
            epoch
        }
        None => {
            let mut tx = begin_identity(&state, row.msp_org_id, Some(row.id)).await?;
            let epoch = set_password(&mut tx, row.id, &hash).await?;
            tx.commit().await?;
            epoch
        }
    };
    state.sessions.forget_user(row.id);
    tracing::info!(user_id = %row.id, "password changed; other sessions ended");
    let user = UserRow {
        id: row.id,
        email,
        role: row.role,
        tenant_id: row.tenant_id,
        msp_org_id: row.msp_org_id,
        session_epoch: epoch,
    };
    Ok(Json(login_tokens(&state, &user).await?))
}

/// Whether the user's address is confirmed (`None`: no such user), read as
/// that user.
pub async fn email_verified(state: &Shared, user: Uuid) -> ApiResult<Option<bool>> {
    let mut tx = begin_identity(state, None, Some(user)).await?;
    let verified: Option<bool> =
        sqlx::query_scalar("SELECT email_verified_at IS NOT NULL FROM users WHERE id = $1")
            .bind(user)
            .fetch_optional(&mut *tx)
            .await?;
    tx.commit().await?;
    Ok(verified)
}

/// The caller's own account.
#[utoipa::path(get, path = "/api/v1/me", tag = "accounts", security(("bearer" = [])),
    responses((status = 200, body = Me), (status = 401, body = crate::error::ErrorBody)))]
pub async fn me(State(state): State<Shared>, caller: Caller) -> ApiResult<Json<Me>> {
    let verified = email_verified(&state, caller.user()).await?;
    let verified =
        verified.ok_or_else(|| ApiError::unauthenticated("the account no longer exists"))?;
    Ok(Json(Me {
        id: caller.claims.sub,
        email: caller.claims.email.clone(),
        role: caller.claims.role,
        tenant_id: caller.claims.tid,
        org_id: caller.claims.org,
        email_verified: verified,
        permissions: caller.claims.role.permissions().to_vec(),
    }))
}

/// The public keys that verify access tokens.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "accounts",
    responses((status = 200, description = "JSON Web Key Set")))]
pub async fn jwks(State(state): State<Shared>) -> Json<serde_json::Value> {
    Json(state.keys.jwks())
}

/// How long a mailed reset code works.
const RESET_VALID_MINUTES: i64 = 30;
/// Reset mails one address gets in an hour at most.
const RESET_MAILS_PER_HOUR: i32 = 5;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordResetRequest {
    #[schema(format = "email", max_length = 254)]
    pub email: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PasswordResetAccepted {
    /// The same whether or not an account uses the address.
    pub message: String,
}

/// Ask for a password reset: when an account uses the address, a one-time
/// code (valid 30 minutes) is mailed to it. The answer is the same either
/// way, so it tells nobody which addresses have accounts; at most 5 reset
/// mails an hour go to one address.
#[utoipa::path(post, path = "/api/v1/auth/password-reset", tag = "accounts",
    request_body = PasswordResetRequest,
    responses((status = 202, body = PasswordResetAccepted), (status = 422, body = crate::error::ErrorBody),
              (status = 429, body = crate::error::ErrorBody)))]
pub async fn request_password_reset(
    State(state): State<Shared>,
    parts: Parts,
    Json(req): Json<PasswordResetRequest>,
) -> ApiResult<(StatusCode, Json<PasswordResetAccepted>)> {
    state.limits.auth(client_ip(&parts)).await?;
    let email = validate::email(&req.email)?;
    let code = mamori_registry::PasswordResetCode::generate();
    let user: Option<Uuid> = sqlx::query_scalar(
        "SELECT mamori_begin_password_reset($1, $2, make_interval(mins => $3), $4)",
    )
    .bind(&email)
    .bind(code.hash())
    .bind(RESET_VALID_MINUTES as i32)
    .bind(RESET_MAILS_PER_HOUR)
    .fetch_one(state.db.pool())
    .await?;
    if let Some(user) = user {
        tracing::info!(user_id = %user, "password reset mailed");
        // Sent after the answer, so its time does not tell either.
        let state = state.clone();
        tokio::spawn(async move {
            let body = if state.cfg.console_dir.is_empty() {
                format!(
                    "Someone (we hope you) asked to reset your Mamori password.\n\nPOST this code with your new password to /api/v1/auth/password-reset/confirm within {RESET_VALID_MINUTES} minutes:\n\n{}\n\nIf it was not you, ignore this mail: your password stays as it is.\n",
                    code.expose()
                )
            } else {
                let link = state
                    .cfg
                    .link(&format!("/reset-password?token={}", code.expose()));
                format!(
                    "Someone (we hope you) asked to reset your Mamori password.\n\nOpen this link within {RESET_VALID_MINUTES} minutes to choose a new one:\n\n{link}\n\nIf it was not you, ignore this mail: your password stays as it is.\n"
                )
            };
            state
                .mailer
                .send(&email, "Reset your Mamori password", body)
                .await;
        });
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(PasswordResetAccepted {
            message: "if an account uses this address, a reset link is on its way".into(),
        }),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordResetConfirm {
    /// The code from the mail (`mmp_…`).
    pub token: String,
    #[schema(min_length = 12, max_length = 128)]
    pub new_password: String,
}

/// Set a new password with the mailed code. Every session of the account
/// ends; log in with the new password. The address counts as confirmed.
#[utoipa::path(post, path = "/api/v1/auth/password-reset/confirm", tag = "accounts",
    request_body = PasswordResetConfirm,
    responses((status = 204, description = "the password is set"), (status = 422, body = crate::error::ErrorBody),
              (status = 429, body = crate::error::ErrorBody)))]
pub async fn confirm_password_reset(
    State(state): State<Shared>,
    parts: Parts,
    Json(req): Json<PasswordResetConfirm>,
) -> ApiResult<StatusCode> {
    state.limits.auth(client_ip(&parts)).await?;
    let code = mamori_registry::PasswordResetCode::parse(&req.token)
        .map_err(|e| ApiError::invalid("token", e))?;
    let unknown = || ApiError::invalid("token", "is unknown, used or expired: ask for a new one");
    let email: Option<String> = sqlx::query_scalar("SELECT mamori_password_reset_email($1)")
        .bind(code.hash())
        .fetch_one(state.db.pool())
        .await?;
    let email = email.ok_or_else(unknown)?;
    password::check_rules("new_password", &req.new_password, &email)?;
    let hash = password::hash(req.new_password).await?;
    let user: Option<Uuid> = sqlx::query_scalar("SELECT mamori_finish_password_reset($1, $2)")
        .bind(code.hash())
        .bind(&hash)
        .fetch_one(state.db.pool())
        .await?;
    let user = user.ok_or_else(unknown)?;
    state.sessions.forget_user(user);
    tracing::info!(user_id = %user, "password reset; every session ended");
    Ok(StatusCode::NO_CONTENT)
}
