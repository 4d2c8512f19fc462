//! Policies over REST: one document per tenant, group and device, every
//! change a new version (audited), the effective policy of a device with
//! where each section came from, and the webhooks notifications can go to.
//! The policy service (`mamori policy`) owns policies: these handlers call
//! its internal API as the verified caller, and it validates, stores,
//! audits and announces each change to ingest, which pushes the new
//! effective policy to the affected agents.

use crate::audit;
use crate::ctx::{Acting, Manage};
use crate::error::{ApiError, ApiResult};
use crate::state::Shared;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use mamori_policy::document::PolicyDocument;
use mamori_proto::policy::v1 as pb;
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
    #[schema(value_type = Option<PolicyDocument>)]
    pub document: Option<Value>,
    pub updated_at: DateTime<Utc>,
    pub updated_by: Option<Uuid>,
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
    /// Addresses the document routes alarm mail to that were just mailed a
    /// confirmation link: they receive nothing else until they follow it.
    pub awaiting_confirmation: Vec<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VersionView {
    pub version: i32,
    #[schema(value_type = Option<PolicyDocument>)]
    pub document: Option<Value>,
    pub created_at: DateTime<Utc>,
    pub created_by: Option<Uuid>,
}

/// What the policy service answered, read back. It only sends what it
/// wrote itself; anything unreadable is its fault, not the caller's.
pub(crate) fn uuid(text: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(text)
        .map_err(|_| ApiError::internal("policy service", format!("bad id {text:?}")))
}

fn optional_uuid(text: &str) -> ApiResult<Option<Uuid>> {
    if text.is_empty() {
        Ok(None)
    } else {
        uuid(text).map(Some)
    }
}

pub(crate) fn json(text: &str) -> ApiResult<Value> {
    serde_json::from_str(text).map_err(|e| ApiError::internal("policy service", e))
}

pub(crate) fn time(t: Option<prost_types::Timestamp>) -> ApiResult<DateTime<Utc>> {
    t.and_then(|t| DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .ok_or_else(|| ApiError::internal("policy service", "missing time"))
}

impl TryFrom<pb::Policy> for PolicyView {
    type Error = ApiError;
    fn try_from(p: pb::Policy) -> ApiResult<Self> {
        let target = p.target.unwrap_or_default();
        let scope = match pb::ScopeKind::try_from(target.scope) {
            Ok(pb::ScopeKind::Tenant) => "tenant",
            Ok(pb::ScopeKind::Group) => "group",
            Ok(pb::ScopeKind::Device) => "device",
            _ => return Err(ApiError::internal("policy service", "bad scope")),
        };
        Ok(PolicyView {
            id: uuid(&p.id)?,
            scope: scope.to_owned(),
            target_id: optional_uuid(&target.target_id)?,
            version: p.version,
            document: p.document_json.as_deref().map(json).transpose()?,
            updated_at: time(p.updated_at)?,
            updated_by: optional_uuid(&p.updated_by)?,
        })
    }
}

impl TryFrom<pb::PolicyVersion> for VersionView {
    type Error = ApiError;
    fn try_from(v: pb::PolicyVersion) -> ApiResult<Self> {
        Ok(VersionView {
            version: v.version,
            document: v.document_json.as_deref().map(json).transpose()?,
            created_at: time(v.created_at)?,
            created_by: optional_uuid(&v.created_by)?,
        })
    }
}

impl TryFrom<pb::SavedPolicy> for SavedView {
    type Error = ApiError;
    fn try_from(s: pb::SavedPolicy) -> ApiResult<Self> {
        Ok(SavedView {
            policy_id: uuid(&s.policy_id)?,
            version: s.version,
            revision: s.revision,
            awaiting_confirmation: s.confirmations.into_iter().map(|c| c.email).collect(),
        })
    }
}

/// Every policy of the tenant.
#[utoipa::path(get, path = "/api/v1/policies", tag = "policies", security(("bearer" = ["read_tenant"])),
    responses((status = 200, body = PolicyList)))]
pub async fn list(State(state): State<Shared>, acting: Acting) -> ApiResult<Json<PolicyList>> {
    let req = state.policy.request(
        &acting.identity(),
        "ListPolicies",
        pb::ListPoliciesRequest {},
    );
    let list = state.policy.api().list_policies(req).await?.into_inner();
    Ok(Json(PolicyList {
        revision: list.revision,
        policies: list
            .policies
            .into_iter()
            .map(PolicyView::try_from)
            .collect::<ApiResult<_>>()?,
    }))
}

fn target(scope: pb::ScopeKind, id: Option<Uuid>) -> pb::PolicyTarget {
    pb::PolicyTarget {
        scope: scope as i32,
        target_id: id.map(|u| u.to_string()).unwrap_or_default(),
    }
}

async fn get_at(
    state: &Shared,
    acting: &Acting,
    at: pb::PolicyTarget,
) -> ApiResult<Json<PolicyView>> {
    let req = state.policy.request(&acting.identity(), "GetPolicy", at);
    let policy = state.policy.api().get_policy(req).await?.into_inner();
    Ok(Json(policy.try_into()?))
}

async fn put_at(
    state: &Shared,
    acting: &Acting<Manage>,
    at: pb::PolicyTarget,
    body: Option<Value>,
) -> ApiResult<Json<SavedView>> {
    let req = state.policy.request(
        &acting.identity(),
        "PutPolicy",
        pb::PutPolicyRequest {
            target: Some(at),
            document_json: body.map(|b| b.to_string()),
        },
    );
    let saved = state.policy.api().put_policy(req).await?.into_inner();
    crate::recipients::mail_confirmations(state, &acting.caller.claims.email, &saved.confirmations)
        .await;
    Ok(Json(saved.try_into()?))
}

async fn versions_at(
    state: &Shared,
    acting: &Acting,
    at: pb::PolicyTarget,
) -> ApiResult<Json<Vec<VersionView>>> {
    let req = state.policy.request(&acting.identity(), "ListVersions", at);
    let list = state.policy.api().list_versions(req).await?.into_inner();
    Ok(Json(
        list.versions
            .into_iter()
            .map(VersionView::try_from)
            .collect::<ApiResult<_>>()?,
    ))
}

fn tenant_target() -> pb::PolicyTarget {
    target(pb::ScopeKind::Tenant, None)
}

/// The tenant's own policy.
#[utoipa::path(get, path = "/api/v1/policies/tenant", tag = "policies", security(("bearer" = ["read_tenant"])),
    responses((status = 200, body = PolicyView), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get_tenant(
    State(state): State<Shared>,
    acting: Acting,
) -> ApiResult<Json<PolicyView>> {
    get_at(&state, &acting, tenant_target()).await
}

/// Replace the tenant's policy with a new version. Sections left out are
/// not set at this level. A refused document names the bad field and
/// changes nothing.
#[utoipa::path(put, path = "/api/v1/policies/tenant", tag = "policies", security(("bearer" = ["manage_tenant"])),
    request_body(content = PolicyDocument, description = "the policy document"),
    responses((status = 200, body = SavedView), (status = 422, body = crate::error::ErrorBody)))]
pub async fn put_tenant(
    State(state): State<Shared>,
    acting: Acting<Manage>,
    Json(body): Json<Value>,
) -> ApiResult<Json<SavedView>> {
    put_at(&state, &acting, tenant_target(), Some(body)).await
}

/// Clear the tenant's policy (a new, empty version).
#[utoipa::path(delete, path = "/api/v1/policies/tenant", tag = "policies", security(("bearer" = ["manage_tenant"])),
    responses((status = 200, body = SavedView)))]
pub async fn clear_tenant(
    State(state): State<Shared>,
    acting: Acting<Manage>,
) -> ApiResult<Json<SavedView>> {
    put_at(&state, &acting, tenant_target(), None).await
}

/// The versions of the tenant's policy, newest first.
#[utoipa::path(get, path = "/api/v1/policies/tenant/versions", tag = "policies", security(("bearer" = ["read_tenant"])),
    responses((status = 200, body = [VersionView])))]
pub async fn tenant_versions(
    State(state): State<Shared>,
    acting: Acting,
) -> ApiResult<Json<Vec<VersionView>>> {
    versions_at(&state, &acting, tenant_target()).await
}

/// What a policy below the tenant is set on (`{kind}` in the path).
#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    Groups,
    Devices,
}

fn scope_of(kind: TargetKind, id: Uuid) -> ApiResult<pb::PolicyTarget> {
    Ok(match kind {
        TargetKind::Groups => target(pb::ScopeKind::Group, Some(id)),
        TargetKind::Devices => target(pb::ScopeKind::Device, Some(id)),
    })
}

/// The policy of a group or a device.
#[utoipa::path(get, path = "/api/v1/policies/{kind}/{id}", tag = "policies", security(("bearer" = ["read_tenant"])),
    params(("kind" = TargetKind, Path, description = "what the policy is set on"), ("id" = Uuid, Path)),
    responses((status = 200, body = PolicyView), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get_target(
    State(state): State<Shared>,
    acting: Acting,
    Path((kind, id)): Path<(TargetKind, Uuid)>,
) -> ApiResult<Json<PolicyView>> {
    get_at(&state, &acting, scope_of(kind, id)?).await
}

/// Replace the policy of a group or a device with a new version.
#[utoipa::path(put, path = "/api/v1/policies/{kind}/{id}", tag = "policies", security(("bearer" = ["manage_tenant"])),
    params(("kind" = TargetKind, Path, description = "what the policy is set on"), ("id" = Uuid, Path)),
    request_body(content = PolicyDocument, description = "the policy document"),
    responses((status = 200, body = SavedView), (status = 404, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)))]
pub async fn put_target(
    State(state): State<Shared>,
    acting: Acting<Manage>,
    Path((kind, id)): Path<(TargetKind, Uuid)>,
    Json(body): Json<Value>,
) -> ApiResult<Json<SavedView>> {
    put_at(&state, &acting, scope_of(kind, id)?, Some(body)).await
}

/// Clear the policy of a group or a device: it inherits everything again.
#[utoipa::path(delete, path = "/api/v1/policies/{kind}/{id}", tag = "policies", security(("bearer" = ["manage_tenant"])),
    params(("kind" = TargetKind, Path, description = "what the policy is set on"), ("id" = Uuid, Path)),
    responses((status = 200, body = SavedView), (status = 404, body = crate::error::ErrorBody)))]
pub async fn clear_target(
    State(state): State<Shared>,
    acting: Acting<Manage>,
    Path((kind, id)): Path<(TargetKind, Uuid)>,
) -> ApiResult<Json<SavedView>> {
    put_at(&state, &acting, scope_of(kind, id)?, None).await
}

/// The versions of a group's or device's policy, newest first.
#[utoipa::path(get, path = "/api/v1/policies/{kind}/{id}/versions", tag = "policies", security(("bearer" = ["read_tenant"])),
    params(("kind" = TargetKind, Path, description = "what the policy is set on"), ("id" = Uuid, Path)),
    responses((status = 200, body = [VersionView]), (status = 404, body = crate::error::ErrorBody)))]
pub async fn target_versions(
    State(state): State<Shared>,
    acting: Acting,
    Path((kind, id)): Path<(TargetKind, Uuid)>,
) -> ApiResult<Json<Vec<VersionView>>> {
    versions_at(&state, &acting, scope_of(kind, id)?).await
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EffectiveView {
    /// The revision the device should enforce.
    pub revision: i64,
    /// The revision its agent last reported applying (null: none yet).
    pub applied_revision: Option<i64>,
    /// Why the agent could not apply the last revision it received.
    pub apply_error: Option<String>,
    #[schema(value_type = PolicyDocument)]
    pub document: Value,
    /// Section name → the policy it came from.
    #[schema(value_type = std::collections::BTreeMap<String, OriginView>)]
    pub origins: Value,
}

/// Which policy a section of an effective policy came from (the schema of
/// the policy service's answer, passed on as it is).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OriginView {
    /// `tenant`, `group` or `device`.
    pub scope: String,
    /// The group or device (absent for the tenant).
    pub target_id: Option<Uuid>,
    pub policy_id: Uuid,
    pub version: i32,
}

/// The effective policy of a device: tenant, group chain and device
/// policies merged, the most specific winning, with each section's origin.
#[utoipa::path(get, path = "/api/v1/devices/{id}/policy", tag = "policies", security(("bearer" = ["read_tenant"])),
    params(("id" = Uuid, Path, description = "device id")),
    responses((status = 200, body = EffectiveView), (status = 404, body = crate::error::ErrorBody)))]
pub async fn effective(
    State(state): State<Shared>,
    acting: Acting,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<EffectiveView>> {
    let req = state.policy.request(
        &acting.identity(),
        "GetEffective",
        pb::DeviceRef {
            device_id: id.to_string(),
        },
    );
    let eff = state.policy.api().get_effective(req).await?.into_inner();
    Ok(Json(EffectiveView {
        revision: eff.revision,
        applied_revision: eff.applied_revision,
        apply_error: eff.apply_error,
        document: json(&eff.document_json)?,
        origins: json(&eff.origins_json)?,
    }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveDevice {
    /// The group (office / department) the device belongs to; null for none.
    pub group_id: Option<Uuid>,
}

/// Move a device to another group: its effective policy changes with it.
#[utoipa::path(patch, path = "/api/v1/devices/{id}", tag = "devices", security(("bearer" = ["manage_tenant"])),
    params(("id" = Uuid, Path, description = "device id")), request_body = MoveDevice,
    responses((status = 204, description = "moved"), (status = 404, body = crate::error::ErrorBody)))]
pub async fn move_device(
    State(state): State<Shared>,
    acting: Acting<Manage>,
    Path(id): Path<Uuid>,
    Json(body): Json<MoveDevice>,
) -> ApiResult<StatusCode> {
    let req = state.policy.request(
        &acting.identity(),
        "MoveDevice",
        pb::MoveDeviceRequest {
            device_id: id.to_string(),
            group_id: body.group_id.map(|g| g.to_string()).unwrap_or_default(),
        },
    );
    state.policy.api().move_device(req).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// `https://…` to a public address (private and loopback destinations
    /// only where the operator allows them).
    pub url: String,
}

#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct WebhookView {
    pub id: Uuid,
    pub name: String,
    /// The whole URL for administrators; for auditors only its scheme and
    /// host (`https://hooks.slack.com/…`): Slack's and Teams' webhook URLs
    /// are credentials.
    pub url: String,
    pub created_at: DateTime<Utc>,
}

/// A webhook URL without what may be a credential (path, query).
fn masked_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => match (u.host_str(), u.port()) {
            (Some(h), Some(p)) => format!("{}://{h}:{p}/…", u.scheme()),
            (Some(h), None) => format!("{}://{h}/…", u.scheme()),
            _ => "…".into(),
        },
        Err(_) => "…".into(),
    }
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
#[utoipa::path(post, path = "/api/v1/webhooks", tag = "policies", security(("bearer" = ["manage_tenant"])),
    request_body = CreateWebhook,
    responses((status = 201, body = CreatedWebhook), (status = 422, body = crate::error::ErrorBody)))]
pub async fn create_webhook(
    State(state): State<Shared>,
    acting: Acting<Manage>,
    Json(req): Json<CreateWebhook>,
) -> ApiResult<(StatusCode, Json<CreatedWebhook>)> {
    let name = crate::validate::name("name", &req.name)?;
    let allow_private = state.cfg.webhook_allow_private;
    let url = mamori_policy::webhook::check_url(&req.url, allow_private)
        .map_err(|e| ApiError::invalid("url", e))?;
    state
        .webhook_resolver
        .check_destination(&url)
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

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookTestResult {
    /// The receiver answered 2xx.
    pub delivered: bool,
    /// The receiver's HTTP status, when it answered.
    pub status: Option<u16>,
    /// Why it was not delivered.
    pub error: Option<String>,
}

/// Send a signed test delivery to a webhook now (10 s at most) and say
/// what its receiver answered. Same body shape, headers and signature as
/// alarm deliveries, with `"test": true` and no alarms.
#[utoipa::path(post, path = "/api/v1/webhooks/{id}/test", tag = "policies", security(("bearer" = ["manage_tenant"])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = WebhookTestResult), (status = 404, body = crate::error::ErrorBody)))]
pub async fn test_webhook(
    State(state): State<Shared>,
    acting: Acting<Manage>,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<WebhookTestResult>> {
    let mut tx = acting.begin(&state).await?;
    let row: Option<(String, Vec<u8>)> =
        sqlx::query_as("SELECT url, secret_wrapped FROM webhooks WHERE tenant_id = $1 AND id = $2")
            .bind(acting.tenant.as_uuid())
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    let (url, sealed) = row.ok_or_else(|| ApiError::not_found("webhook"))?;
    audit::by(
        &mut tx,
        &acting,
        "webhook.test",
        &id.to_string(),
        serde_json::json!({}),
    )
    .await?;
    tx.commit().await?;
    let failed = |error: String| {
        Json(WebhookTestResult {
            delivered: false,
            status: None,
            error: Some(error),
        })
    };
    if let Err(e) = mamori_policy::webhook::check_url(&url, state.cfg.webhook_allow_private) {
        return Ok(failed(format!("webhook URL refused: {e}")));
    }
    let secret = state
        .kek
        .open(&webhook_secret_name(id), &sealed)
        .map_err(|e| ApiError::internal("webhook secret", e))?;
    let delivery = Uuid::now_v7();
    let body = serde_json::to_vec(&serde_json::json!({
        "text": "Mamori: a test delivery. Alarm notifications will arrive like this.",
        "delivery_id": delivery,
        "test": true,
        "alarms": [],
    }))
    .map_err(|e| ApiError::internal("webhook body", e))?;
    match mamori_policy::webhook::post_signed(&state.webhook_http, &url, &secret, delivery, body)
        .await
    {
        Ok(status) => Ok(Json(WebhookTestResult {
            delivered: status.is_success(),
            status: Some(status.as_u16()),
            error: (!status.is_success()).then(|| format!("the receiver answered {status}")),
        })),
        Err(e) => {
            // reqwest's message names the URL; the cause says what failed.
            let mut cause = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                cause = s.to_string();
                source = s.source();
            }
            Ok(failed(format!("not delivered: {cause}")))
        }
    }
}

/// The name a webhook's secret is sealed under (binds it to the webhook).
pub fn webhook_secret_name(id: Uuid) -> String {
    format!("webhook:{id}")
}

/// The tenant's webhooks (without secrets).
#[utoipa::path(get, path = "/api/v1/webhooks", tag = "policies", security(("bearer" = ["read_tenant"])),
    responses((status = 200, body = [WebhookView])))]
pub async fn list_webhooks(
    State(state): State<Shared>,
    acting: Acting,
) -> ApiResult<Json<Vec<WebhookView>>> {
    let mut tx = acting.begin(&state).await?;
    let mut rows: Vec<WebhookView> =
        sqlx::query_as("SELECT id, name, url, created_at FROM webhooks ORDER BY name, id")
            .fetch_all(&mut *tx)
            .await?;
    tx.commit().await?;
    if !acting.may(crate::ctx::Permission::ManageTenant) {
        for r in &mut rows {
            r.url = masked_url(&r.url);
        }
    }
    Ok(Json(rows))
}

/// Delete a webhook; routes naming it skip it.
#[utoipa::path(delete, path = "/api/v1/webhooks/{id}", tag = "policies", security(("bearer" = ["manage_tenant"])),
    params(("id" = Uuid, Path)),
    responses((status = 204, description = "deleted"), (status = 404, body = crate::error::ErrorBody)))]
pub async fn delete_webhook(
    State(state): State<Shared>,
    acting: Acting<Manage>,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
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
