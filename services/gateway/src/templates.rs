//! MSP policy templates: an MSP organisation keeps policy documents of its
//! own, applies one to many of its tenants at once (it becomes their tenant
//! policy, a new version each, audited in each tenant), and sees which
//! tenants have drifted from it since.

use crate::accounts::begin_identity;
use crate::audit;
use crate::ctx::{Caller, set_identity};
use crate::error::{ApiError, ApiResult};
use crate::state::Shared;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use mamori_policy::PolicyDocument;
use mamori_tenancy::{TenantId, TenantTx};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// Tenants one apply call may name.
const MAX_APPLY: usize = 1000;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateInput {
    pub name: String,
    /// A policy document.
    #[schema(value_type = Object)]
    pub document: Value,
}

#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct TemplateView {
    pub id: Uuid,
    pub name: String,
    pub version: i32,
    #[schema(value_type = Object)]
    pub document: Value,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, name, version, document, updated_at";

fn parse(document: Value) -> ApiResult<PolicyDocument> {
    PolicyDocument::parse(document)
        .map_err(|f| ApiError::invalid(&format!("document.{}", f.field), f.message))
}

/// Create a policy template of the caller's MSP organisation.
#[utoipa::path(post, path = "/api/v1/org/policy-templates", tag = "policies", security(("bearer" = [])),
    request_body = TemplateInput,
    responses((status = 201, body = TemplateView), (status = 409, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)))]
pub async fn create(
    State(state): State<Shared>,
    caller: Caller,
    Json(req): Json<TemplateInput>,
) -> ApiResult<(StatusCode, Json<TemplateView>)> {
    let org = caller.require_msp_admin()?;
    let name = crate::validate::name("name", &req.name)?;
    let doc = parse(req.document)?;
    let mut tx = begin_identity(&state, Some(org), Some(caller.user())).await?;
    let inserted: Result<TemplateView, sqlx::Error> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO policy_templates (msp_org_id, id, name, version, document, updated_by)
         VALUES ($1, $2, $3, 1, $4, $5) RETURNING {COLUMNS}"
    )))
    .bind(org)
    .bind(Uuid::now_v7())
    .bind(&name)
    .bind(serde_json::to_value(&doc).expect("serialisable"))
    .bind(caller.user())
    .fetch_one(&mut *tx)
    .await;
    let view = match inserted {
        Ok(v) => v,
        Err(sqlx::Error::Database(d)) if d.constraint() == Some("policy_templates_name") => {
            return Err(ApiError::conflict(
                "template_exists",
                format!("a template named {name:?} exists"),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    tx.commit().await?;
    tracing::info!(template_id = %view.id, "policy template created");
    Ok((StatusCode::CREATED, Json(view)))
}

/// The organisation's policy templates.
#[utoipa::path(get, path = "/api/v1/org/policy-templates", tag = "policies", security(("bearer" = [])),
    responses((status = 200, body = [TemplateView])))]
pub async fn list(
    State(state): State<Shared>,
    caller: Caller,
) -> ApiResult<Json<Vec<TemplateView>>> {
    let org = caller.require_msp_admin()?;
    let mut tx = begin_identity(&state, Some(org), Some(caller.user())).await?;
    let rows: Vec<TemplateView> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM policy_templates WHERE msp_org_id = $1 ORDER BY name"
    )))
    .bind(org)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Json(rows))
}

/// Replace a template's document (a new version). Tenants it was applied to
/// keep their policy until it is applied again; they show as drifted.
#[utoipa::path(put, path = "/api/v1/org/policy-templates/{id}", tag = "policies", security(("bearer" = [])),
    params(("id" = Uuid, Path)), request_body = TemplateInput,
    responses((status = 200, body = TemplateView), (status = 404, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)))]
pub async fn update(
    State(state): State<Shared>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Json(req): Json<TemplateInput>,
) -> ApiResult<Json<TemplateView>> {
    let org = caller.require_msp_admin()?;
    let name = crate::validate::name("name", &req.name)?;
    let doc = parse(req.document)?;
    let mut tx = begin_identity(&state, Some(org), Some(caller.user())).await?;
    let view: Option<TemplateView> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE policy_templates SET name = $3, document = $4, version = version + 1,
                updated_at = now(), updated_by = $5
         WHERE msp_org_id = $1 AND id = $2 RETURNING {COLUMNS}"
    )))
    .bind(org)
    .bind(id)
    .bind(&name)
    .bind(serde_json::to_value(&doc).expect("serialisable"))
    .bind(caller.user())
    .fetch_optional(&mut *tx)
    .await?;
    let view = view.ok_or_else(|| ApiError::not_found("policy template"))?;
    tx.commit().await?;
    Ok(Json(view))
}

async fn fetch(state: &Shared, caller: &Caller, org: Uuid, id: Uuid) -> ApiResult<TemplateView> {
    let mut tx = begin_identity(state, Some(org), Some(caller.user())).await?;
    let view: Option<TemplateView> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM policy_templates WHERE msp_org_id = $1 AND id = $2"
    )))
    .bind(org)
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    view.ok_or_else(|| ApiError::not_found("policy template"))
}

/// A transaction on one of the organisation's tenants (404 for any other).
async fn org_tenant(
    state: &Shared,
    caller: &Caller,
    org: Uuid,
    tenant: Uuid,
) -> ApiResult<TenantTx> {
    let mut tx = state.db.begin_tenant(TenantId::from_uuid(tenant)).await?;
    set_identity(&mut tx, &caller.claims).await?;
    let ours: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM tenants WHERE id = $1 AND msp_org_id = $2)",
    )
    .bind(tenant)
    .bind(org)
    .fetch_one(&mut *tx)
    .await?;
    if !ours {
        return Err(ApiError::not_found(&format!("tenant {tenant}")));
    }
    Ok(tx)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplyTemplate {
    pub tenant_ids: Vec<Uuid>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Applied {
    pub tenant_id: Uuid,
    pub policy_version: i32,
    pub revision: i64,
}

/// Apply a template to tenants of the organisation: it becomes each one's
/// tenant policy (a new version, audited in the tenant) and reaches their
/// agents. Every tenant is checked first: one that is not the
/// organisation's makes the whole call 404 and changes nothing.
#[utoipa::path(post, path = "/api/v1/org/policy-templates/{id}/apply", tag = "policies", security(("bearer" = [])),
    params(("id" = Uuid, Path)), request_body = ApplyTemplate,
    responses((status = 200, body = [Applied]), (status = 404, body = crate::error::ErrorBody)))]
pub async fn apply(
    State(state): State<Shared>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Json(req): Json<ApplyTemplate>,
) -> ApiResult<Json<Vec<Applied>>> {
    let org = caller.require_msp_admin()?;
    if req.tenant_ids.is_empty() || req.tenant_ids.len() > MAX_APPLY {
        return Err(ApiError::invalid(
            "tenant_ids",
            format!("name 1 to {MAX_APPLY} tenants"),
        ));
    }
    let template = fetch(&state, &caller, org, id).await?;
    let doc = parse(template.document.clone())?;
    // Check all, then change all (each check in its own short transaction:
    // a thousand open ones would drain the pool).
    for t in &req.tenant_ids {
        org_tenant(&state, &caller, org, *t).await?.commit().await?;
    }
    let mut applied = Vec::with_capacity(req.tenant_ids.len());
    for t in &req.tenant_ids {
        // Checked again inside the change: a tenant released since fails
        // here, before anything of its own is touched.
        let mut tx = org_tenant(&state, &caller, org, *t).await?;
        let saved = mamori_policy::store::put_from_template(
            &mut tx,
            &doc,
            Some(caller.user()),
            template.id,
            template.version,
        )
        .await?;
        audit::record(
            &mut tx,
            &caller,
            "policy.apply_template",
            &saved.policy_id.to_string(),
            serde_json::json!({
                "template_id": template.id,
                "template_name": template.name,
                "template_version": template.version,
                "version": saved.version,
                "revision": saved.revision,
            }),
        )
        .await?;
        let tenant = tx.tenant();
        tx.commit().await?;
        crate::policies::notify(&state, tenant).await;
        applied.push(Applied {
            tenant_id: tenant.as_uuid(),
            policy_version: saved.version,
            revision: saved.revision,
        });
    }
    Ok(Json(applied))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DriftView {
    pub tenant_id: Uuid,
    pub name: String,
    /// `in_sync` (the template's current version, unchanged since),
    /// `outdated` (an older version of the template, unchanged since),
    /// `modified` (changed in the tenant after the apply), or
    /// `not_applied` (never applied, or another template was applied since).
    pub status: &'static str,
    pub applied_version: Option<i32>,
    pub template_version: i32,
}

/// Which of the organisation's tenants follow the template and which have
/// drifted from it.
#[utoipa::path(get, path = "/api/v1/org/policy-templates/{id}/drift", tag = "policies", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = [DriftView]), (status = 404, body = crate::error::ErrorBody)))]
pub async fn drift(
    State(state): State<Shared>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Vec<DriftView>>> {
    let org = caller.require_msp_admin()?;
    let template = fetch(&state, &caller, org, id).await?;
    let mut tx = begin_identity(&state, Some(org), Some(caller.user())).await?;
    let tenants: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT tenant_id, name FROM mamori_msp_tenant_overview()")
            .fetch_all(&mut *tx)
            .await?;
    tx.commit().await?;
    let mut out = Vec::with_capacity(tenants.len());
    for (tenant, name) in tenants {
        let mut tx = org_tenant(&state, &caller, org, tenant).await?;
        let from = mamori_policy::store::applied_template(&mut tx).await?;
        tx.commit().await?;
        let from = from.filter(|o| o.template == template.id);
        let status = match from {
            None => "not_applied",
            Some(o) if o.edited => "modified",
            Some(o) if o.template_version < template.version => "outdated",
            Some(_) => "in_sync",
        };
        out.push(DriftView {
            tenant_id: tenant,
            name,
            status,
            applied_version: from.map(|o| o.template_version),
            template_version: template.version,
        });
    }
    Ok(Json(out))
}
