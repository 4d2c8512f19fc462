//! Policies over REST: one document per tenant, group and device, every
//! change a new version (audited), the effective policy of a device with
//! where each section came from, and the webhooks notifications can go to.
//! After a change commits, a notice goes to ingest, which pushes the new
//! effective policy to the affected agents.

use crate::audit;
use crate::ctx::Acting;
use crate::error::{ApiError, ApiResult};
use crate::state::Shared;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use mamori_policy::store::{self, PolicyVersion};
use mamori_policy::{PolicyDocument, Scope, StoredPolicy};
use mamori_tenancy::TenantTx;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// A policy as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PolicyView {
    pub id: Uuid,
    /// `tenant`, `group` or `device`.
    pub scope: String,
    pub target_id: Option<Uuid>,
    pub version: i32,
    /// Null when cleared (the target inherits everything).
    #[schema(value_type = Option<Object>)]
    pub document: Option<Value>,
    pub updated_at: DateTime<Utc>,
    pub updated_by: Option<Uuid>,
}

impl From<StoredPolicy> for PolicyView {
    fn from(p: StoredPolicy) -> Self {
        PolicyView {
            id: p.id,
            scope: p.scope.name().to_owned(),
            target_id: p.scope.target(),
            version: p.version,
            document: p
                .document
                .map(|d| serde_json::to_value(d).expect("serialisable")),
            updated_at: p.updated_at,
            updated_by: p.updated_by,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PolicyList {
    /// The tenant's policy revision: agents report the one they enforce.
    pub revision: i64,
    pub policies: Vec<PolicyView>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SavedView {
    pub policy_id: Uuid,
    pub version: i32,
    pub revision: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VersionView {
    pub version: i32,
    #[schema(value_type = Option<Object>)]
    pub document: Option<Value>,
    pub created_at: DateTime<Utc>,
    pub created_by: Option<Uuid>,
}

impl From<PolicyVersion> for VersionView {
    fn from(v: PolicyVersion) -> Self {
        VersionView {
            version: v.version,
            document: v
                .document
                .map(|d| serde_json::to_value(d).expect("serialisable")),
            created_at: v.created_at,
            created_by: v.created_by,
        }
    }
}

/// Every policy of the tenant.
#[utoipa::path(get, path = "/api/v1/policies", tag = "policies", security(("bearer" = [])),
    responses((status = 200, body = PolicyList)))]
pub async fn list(State(state): State<Shared>, acting: Acting) -> ApiResult<Json<PolicyList>> {
    let mut tx = acting.begin(&state).await?;
    let policies = store::list(&mut tx).await?;
    let revision: i64 = sqlx::query_scalar("SELECT policy_revision FROM tenants WHERE id = $1")
        .bind(acting.tenant.as_uuid())
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Json(PolicyList {
        revision,
        policies: policies.into_iter().map(PolicyView::from).collect(),
    }))
}

async fn get_at(state: &Shared, acting: &Acting, scope: Scope) -> ApiResult<Json<PolicyView>> {
    let mut tx = acting.begin(state).await?;
    let found = store::get(&mut tx, scope).await?;
    tx.commit().await?;
    found
        .map(|p| Json(p.into()))
        .ok_or_else(|| ApiError::not_found("policy"))
}

async fn put_at(
    state: &Shared,
    acting: &Acting,
    scope: Scope,
    body: Option<Value>,
) -> ApiResult<Json<SavedView>> {
    acting.require_admin()?;
    // Validate before anything is touched: a refused document changes
    // nothing and the previous version stays in force.
    let document = body
        .map(PolicyDocument::parse)
        .transpose()
        .map_err(mamori_policy::Error::from)?;
    let mut tx = acting.begin(state).await?;
    let saved = store::put(
        &mut tx,
        scope,
        document.as_ref(),
        Some(acting.caller.user()),
    )
    .await?;
    let action = if document.is_some() {
        "policy.update"
    } else {
        "policy.clear"
    };
    audit::by(
        &mut tx,
        acting,
        action,
        &saved.policy_id.to_string(),
        serde_json::json!({
            "scope": scope.name(),
            "target_id": scope.target(),
            "version": saved.version,
            "revision": saved.revision,
            "document": document,
        }),
    )
    .await?;
    tx.commit().await?;
    notify(state, acting.tenant).await;
    Ok(Json(SavedView {
        policy_id: saved.policy_id,
        version: saved.version,
        revision: saved.revision,
    }))
}

/// Tells ingest that the tenant's effective policies changed.
pub(crate) async fn notify(state: &Shared, tenant: mamori_tenancy::TenantId) {
    let connect = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        state.redis.get_multiplexed_async_connection(),
    )
    .await;
    match connect {
        Ok(Ok(mut conn)) => mamori_policy::notify::publish(&mut conn, tenant).await,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot reach Redis for the policy notice; agents get the change on ingest's next sweep")
        }
        Err(_) => tracing::warn!(
            "Redis did not answer in time for the policy notice; agents get the change on ingest's next sweep"
        ),
    }
}

async fn versions_at(
    state: &Shared,
    acting: &Acting,
    scope: Scope,
) -> ApiResult<Json<Vec<VersionView>>> {
    let mut tx = acting.begin(state).await?;
    let versions = store::versions(&mut tx, scope).await?;
    tx.commit().await?;
    if versions.is_empty() {
        return Err(ApiError::not_found("policy"));
    }
    Ok(Json(versions.into_iter().map(VersionView::from).collect()))
}

/// The tenant's own policy.
#[utoipa::path(get, path = "/api/v1/policies/tenant", tag = "policies", security(("bearer" = [])),
    responses((status = 200, body = PolicyView), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get_tenant(
    State(state): State<Shared>,
    acting: Acting,
) -> ApiResult<Json<PolicyView>> {
    get_at(&state, &acting, Scope::Tenant).await
}

/// Replace the tenant's policy with a new version. Sections left out are
/// not set at this level. A refused document names the bad field and
/// changes nothing.
#[utoipa::path(put, path = "/api/v1/policies/tenant", tag = "policies", security(("bearer" = [])),
    request_body(content = Object, description = "the policy document"),
    responses((status = 200, body = SavedView), (status = 422, body = crate::error::ErrorBody)))]
pub async fn put_tenant(
    State(state): State<Shared>,
    acting: Acting,
    Json(body): Json<Value>,
) -> ApiResult<Json<SavedView>> {
    put_at(&state, &acting, Scope::Tenant, Some(body)).await
}

/// Clear the tenant's policy (a new, empty version).
#[utoipa::path(delete, path = "/api/v1/policies/tenant", tag = "policies", security(("bearer" = [])),
    responses((status = 200, body = SavedView)))]
pub async fn clear_tenant(
    State(state): State<Shared>,
    acting: Acting,
) -> ApiResult<Json<SavedView>> {
    put_at(&state, &acting, Scope::Tenant, None).await
}

/// The versions of the tenant's policy, newest first.
#[utoipa::path(get, path = "/api/v1/policies/tenant/versions", tag = "policies", security(("bearer" = [])),
    responses((status = 200, body = [VersionView])))]
pub async fn tenant_versions(
    State(state): State<Shared>,
    acting: Acting,
) -> ApiResult<Json<Vec<VersionView>>> {
    versions_at(&state, &acting, Scope::Tenant).await
}

/// `groups` or `devices` in the path.
fn scope_of(kind: &str, id: Uuid) -> ApiResult<Scope> {
    match kind {
        "groups" => Ok(Scope::Group(id)),
        "devices" => Ok(Scope::Device(id)),
        other => Err(ApiError::not_found(&format!(
            "policy target kind {other:?}"
        ))),
    }
}

/// The policy of a group or a device.
#[utoipa::path(get, path = "/api/v1/policies/{kind}/{id}", tag = "policies", security(("bearer" = [])),
    params(("kind" = String, Path, description = "`groups` or `devices`"), ("id" = Uuid, Path)),
    responses((status = 200, body = PolicyView), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get_target(
    State(state): State<Shared>,
    acting: Acting,
    Path((kind, id)): Path<(String, Uuid)>,
) -> ApiResult<Json<PolicyView>> {
    get_at(&state, &acting, scope_of(&kind, id)?).await
}

/// Replace the policy of a group or a device with a new version.
#[utoipa::path(put, path = "/api/v1/policies/{kind}/{id}", tag = "policies", security(("bearer" = [])),
    params(("kind" = String, Path, description = "`groups` or `devices`"), ("id" = Uuid, Path)),
    request_body(content = Object, description = "the policy document"),
    responses((status = 200, body = SavedView), (status = 404, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)))]
pub async fn put_target(
    State(state): State<Shared>,
    acting: Acting,
    Path((kind, id)): Path<(String, Uuid)>,
    Json(body): Json<Value>,
) -> ApiResult<Json<SavedView>> {
    put_at(&state, &acting, scope_of(&kind, id)?, Some(body)).await
}

/// Clear the policy of a group or a device: it inherits everything again.
#[utoipa::path(delete, path = "/api/v1/policies/{kind}/{id}", tag = "policies", security(("bearer" = [])),
    params(("kind" = String, Path, description = "`groups` or `devices`"), ("id" = Uuid, Path)),
    responses((status = 200, body = SavedView), (status = 404, body = crate::error::ErrorBody)))]
pub async fn clear_target(
    State(state): State<Shared>,
    acting: Acting,
    Path((kind, id)): Path<(String, Uuid)>,
) -> ApiResult<Json<SavedView>> {
    put_at(&state, &acting, scope_of(&kind, id)?, None).await
}

/// The versions of a group's or device's policy, newest first.
#[utoipa::path(get, path = "/api/v1/policies/{kind}/{id}/versions", tag = "policies", security(("bearer" = [])),
    params(("kind" = String, Path, description = "`groups` or `devices`"), ("id" = Uuid, Path)),
    responses((status = 200, body = [VersionView]), (status = 404, body = crate::error::ErrorBody)))]
pub async fn target_versions(
    State(state): State<Shared>,
    acting: Acting,
    Path((kind, id)): Path<(String, Uuid)>,
) -> ApiResult<Json<Vec<VersionView>>> {
    versions_at(&state, &acting, scope_of(&kind, id)?).await
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EffectiveView {
    /// The revision the device should enforce.
    pub revision: i64,
    /// The revision its agent last reported applying (null: none yet).
    pub applied_revision: Option<i64>,
    /// Why the agent could not apply the last revision it received.
    pub apply_error: Option<String>,
    #[schema(value_type = Object)]
    pub document: Value,
    /// Section name → the policy it came from (scope, target, version).
    #[schema(value_type = Object)]
    pub origins: Value,
}

/// The effective policy of a device: tenant, group chain and device
/// policies merged, the most specific winning, with each section's origin.
#[utoipa::path(get, path = "/api/v1/devices/{id}/policy", tag = "policies", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "device id")),
    responses((status = 200, body = EffectiveView), (status = 404, body = crate::error::ErrorBody)))]
pub async fn effective(
    State(state): State<Shared>,
    acting: Acting,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<EffectiveView>> {
    let mut tx = acting.begin(&state).await?;
    let eff = store::effective_for_device(&mut tx, id).await?;
    let (applied, error): (Option<i64>, Option<String>) =
        sqlx::query_as("SELECT policy_version, policy_error FROM devices WHERE id = $1")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
    tx.commit().await?;
    Ok(Json(EffectiveView {
        revision: eff.revision,
        applied_revision: applied,
        apply_error: error,
        document: serde_json::to_value(&eff.document).expect("serialisable"),
        origins: serde_json::to_value(&eff.origins).expect("serialisable"),
    }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveDevice {
    /// The group (office / department) the device belongs to; null for none.
    pub group_id: Option<Uuid>,
}

/// Move a device to another group: its effective policy changes with it.
#[utoipa::path(patch, path = "/api/v1/devices/{id}", tag = "devices", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "device id")), request_body = MoveDevice,
    responses((status = 204, description = "moved"), (status = 404, body = crate::error::ErrorBody)))]
pub async fn move_device(
    State(state): State<Shared>,
    acting: Acting,
    Path(id): Path<Uuid>,
    Json(req): Json<MoveDevice>,
) -> ApiResult<StatusCode> {
    acting.require_admin()?;
    let mut tx = acting.begin(&state).await?;
    if let Some(g) = req.group_id {
        group_exists(&mut tx, g).await?;
    }
    let moved =
        sqlx::query("UPDATE devices SET group_id = $2 WHERE id = $1 AND deleted_at IS NULL")
            .bind(id)
            .bind(req.group_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    if moved == 0 {
        return Err(ApiError::not_found("device"));
    }
    let revision = store::bump_revision(&mut tx).await?;
    audit::by(
        &mut tx,
        &acting,
        "device.move",
        &id.to_string(),
        serde_json::json!({ "group_id": req.group_id, "revision": revision }),
    )
    .await?;
    tx.commit().await?;
    notify(&state, acting.tenant).await;
    Ok(StatusCode::NO_CONTENT)
}

async fn group_exists(tx: &mut TenantTx, id: Uuid) -> ApiResult<()> {
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM groups WHERE id = $1)")
        .bind(id)
        .fetch_one(&mut **tx)
        .await?;
    if exists {
        Ok(())
    } else {
        Err(ApiError::not_found("group"))
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    pub name: String,
    /// `https://…` to a public address (private and loopback destinations
    /// only where the operator allows them).
    pub url: String,
}

#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct WebhookView {
    pub id: Uuid,
    pub name: String,
    pub url: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedWebhook {
    #[serde(flatten)]
    pub webhook: WebhookView,
    /// The HMAC-SHA256 key deliveries are signed with
    /// (`X-Mamori-Signature: sha256=<hex>` over the body). Shown once.
    pub secret: String,
}

/// Register a webhook that alarm notifications can be routed to.
#[utoipa::path(post, path = "/api/v1/webhooks", tag = "policies", security(("bearer" = [])),
    request_body = CreateWebhook,
    responses((status = 201, body = CreatedWebhook), (status = 422, body = crate::error::ErrorBody)))]
pub async fn create_webhook(
    State(state): State<Shared>,
    acting: Acting,
    Json(req): Json<CreateWebhook>,
) -> ApiResult<(StatusCode, Json<CreatedWebhook>)> {
    acting.require_admin()?;
    let name = crate::validate::name("name", &req.name)?;
    let allow_private = state.cfg.webhook_allow_private;
    let url = mamori_policy::webhook::check_url(&req.url, allow_private)
        .map_err(|e| ApiError::invalid("url", e))?;
    mamori_policy::webhook::check_destination(&url, allow_private)
        .await
        .map_err(|e| ApiError::invalid("url", e))?;
    let url = url.to_string();
    let id = Uuid::now_v7();
    let mut secret = zeroize::Zeroizing::new([0u8; 32]);
    rand::rng().fill_bytes(secret.as_mut());
    let sealed = state.kek.seal(&webhook_secret_name(id), secret.as_ref());
    let mut tx = acting.begin(&state).await?;
    let webhook: WebhookView = sqlx::query_as(
        "INSERT INTO webhooks (tenant_id, id, name, url, secret_wrapped) VALUES ($1, $2, $3, $4, $5)
         RETURNING id, name, url, created_at",
    )
    .bind(acting.tenant.as_uuid())
    .bind(id)
    .bind(&name)
    .bind(&url)
    .bind(&sealed)
    .fetch_one(&mut *tx)
    .await?;
    audit::by(
        &mut tx,
        &acting,
        "webhook.create",
        &id.to_string(),
        serde_json::json!({ "name": name, "url": url }),
    )
    .await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedWebhook {
            webhook,
            secret: URL_SAFE_NO_PAD.encode(secret.as_ref()),
        }),
    ))
}

/// The name a webhook's secret is sealed under (binds it to the webhook).
pub fn webhook_secret_name(id: Uuid) -> String {
    format!("webhook:{id}")
}

/// The tenant's webhooks (without secrets).
#[utoipa::path(get, path = "/api/v1/webhooks", tag = "policies", security(("bearer" = [])),
    responses((status = 200, body = [WebhookView])))]
pub async fn list_webhooks(
    State(state): State<Shared>,
    acting: Acting,
) -> ApiResult<Json<Vec<WebhookView>>> {
    let mut tx = acting.begin(&state).await?;
    let rows: Vec<WebhookView> =
        sqlx::query_as("SELECT id, name, url, created_at FROM webhooks ORDER BY name, id")
            .fetch_all(&mut *tx)
            .await?;
    tx.commit().await?;
    Ok(Json(rows))
}

/// Delete a webhook; routes naming it skip it.
#[utoipa::path(delete, path = "/api/v1/webhooks/{id}", tag = "policies", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 204, description = "deleted"), (status = 404, body = crate::error::ErrorBody)))]
pub async fn delete_webhook(
    State(state): State<Shared>,
    acting: Acting,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    acting.require_admin()?;
    let mut tx = acting.begin(&state).await?;
    let gone = sqlx::query("DELETE FROM webhooks WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if gone == 0 {
        return Err(ApiError::not_found("webhook"));
    }
    audit::by(
        &mut tx,
        &acting,
        "webhook.delete",
        &id.to_string(),
        Value::Null,
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
