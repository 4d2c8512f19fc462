//! MSP policy templates over REST: an MSP organisation keeps policy
//! documents of its own, applies one to many of its tenants at once (it
//! becomes their tenant policy, a new version each, audited in each
//! tenant), and sees which tenants have drifted from it since. The policy
//! service keeps them; these handlers call it as the verified caller.

use crate::ctx::OrgAdmin;
use crate::error::ApiResult;
use crate::policies::{json, time, uuid};
use crate::state::Shared;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use mamori_proto::policy::v1 as pb;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateInput {
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// A policy document.
    #[schema(value_type = mamori_policy::document::PolicyDocument)]
    pub document: Value,
}

impl From<TemplateInput> for pb::TemplateInput {
    fn from(t: TemplateInput) -> Self {
        pb::TemplateInput {
            name: t.name,
            document_json: t.document.to_string(),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TemplateView {
    pub id: Uuid,
    pub name: String,
    pub version: i32,
    #[schema(value_type = mamori_policy::document::PolicyDocument)]
    pub document: Value,
    pub updated_at: DateTime<Utc>,
}

impl TryFrom<pb::Template> for TemplateView {
    type Error = crate::error::ApiError;
    fn try_from(t: pb::Template) -> ApiResult<Self> {
        Ok(TemplateView {
            id: uuid(&t.id)?,
            name: t.name,
            version: t.version,
            document: json(&t.document_json)?,
            updated_at: time(t.updated_at)?,
        })
    }
}

/// Create a policy template of the caller's MSP organisation.
#[utoipa::path(post, path = "/api/v1/org/policy-templates", tag = "policies", security(("bearer" = ["manage_org"])),
    request_body = TemplateInput,
    responses((status = 201, body = TemplateView), (status = 409, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)))]
pub async fn create(
    State(state): State<Shared>,
    OrgAdmin { caller, .. }: OrgAdmin,
    Json(input): Json<TemplateInput>,
) -> ApiResult<(StatusCode, Json<TemplateView>)> {
    let req = state
        .policy
        .request(&caller.identity(None), "CreateTemplate", input.into());
    let template = state.policy.api().create_template(req).await?.into_inner();
    Ok((StatusCode::CREATED, Json(template.try_into()?)))
}

/// The organisation's policy templates.
#[utoipa::path(get, path = "/api/v1/org/policy-templates", tag = "policies", security(("bearer" = ["manage_org"])),
    responses((status = 200, body = [TemplateView])))]
pub async fn list(
    State(state): State<Shared>,
    OrgAdmin { caller, .. }: OrgAdmin,
) -> ApiResult<Json<Vec<TemplateView>>> {
    let req = state.policy.request(
        &caller.identity(None),
        "ListTemplates",
        pb::ListTemplatesRequest {},
    );
    let list = state.policy.api().list_templates(req).await?.into_inner();
    Ok(Json(
        list.templates
            .into_iter()
            .map(TemplateView::try_from)
            .collect::<ApiResult<_>>()?,
    ))
}

/// Replace a template's document (a new version). Tenants it was applied to
/// keep their policy until it is applied again; they show as drifted.
#[utoipa::path(put, path = "/api/v1/org/policy-templates/{id}", tag = "policies", security(("bearer" = ["manage_org"])),
    params(("id" = Uuid, Path)), request_body = TemplateInput,
    responses((status = 200, body = TemplateView), (status = 404, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)))]
pub async fn update(
    State(state): State<Shared>,
    OrgAdmin { caller, .. }: OrgAdmin,
    Path(id): Path<Uuid>,
    Json(input): Json<TemplateInput>,
) -> ApiResult<Json<TemplateView>> {
    let req = state.policy.request(
        &caller.identity(None),
        "UpdateTemplate",
        pb::UpdateTemplateRequest {
            id: id.to_string(),
            template: Some(input.into()),
        },
    );
    let template = state.policy.api().update_template(req).await?.into_inner();
    Ok(Json(template.try_into()?))
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
    /// Addresses just mailed a confirmation link for this tenant's alarm
    /// mail.
    pub awaiting_confirmation: Vec<String>,
}

/// Apply a template to tenants of the organisation: it becomes each one's
/// tenant policy (a new version, audited in the tenant) and reaches their
/// agents. Every tenant is checked first: one that is not the
/// organisation's makes the whole call 404 and changes nothing.
#[utoipa::path(post, path = "/api/v1/org/policy-templates/{id}/apply", tag = "policies", security(("bearer" = ["manage_org"])),
    params(("id" = Uuid, Path)), request_body = ApplyTemplate,
    responses((status = 200, body = [Applied]), (status = 404, body = crate::error::ErrorBody)))]
pub async fn apply(
    State(state): State<Shared>,
    OrgAdmin { caller, .. }: OrgAdmin,
    Path(id): Path<Uuid>,
    Json(body): Json<ApplyTemplate>,
) -> ApiResult<Json<Vec<Applied>>> {
    let req = state.policy.request(
        &caller.identity(None),
        "ApplyTemplate",
        pb::ApplyTemplateRequest {
            id: id.to_string(),
            tenant_ids: body.tenant_ids.iter().map(Uuid::to_string).collect(),
        },
    );
    let done = state.policy.api().apply_template(req).await?.into_inner();
    let mut applied = Vec::with_capacity(done.applied.len());
    for a in done.applied {
        let awaiting =
            crate::recipients::mail_confirmations(&state, &caller.claims.email, &a.confirmations)
                .await;
        applied.push(Applied {
            tenant_id: uuid(&a.tenant_id)?,
            policy_version: a.policy_version,
            revision: a.revision,
            awaiting_confirmation: awaiting,
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
    pub status: String,
    pub applied_version: Option<i32>,
    pub template_version: i32,
}

/// Which of the organisation's tenants follow the template and which have
/// drifted from it.
#[utoipa::path(get, path = "/api/v1/org/policy-templates/{id}/drift", tag = "policies", security(("bearer" = ["manage_org"])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = [DriftView]), (status = 404, body = crate::error::ErrorBody)))]
pub async fn drift(
    State(state): State<Shared>,
    OrgAdmin { caller, .. }: OrgAdmin,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Vec<DriftView>>> {
    let req = state.policy.request(
        &caller.identity(None),
        "TemplateDrift",
        pb::TemplateRef { id: id.to_string() },
    );
    let list = state.policy.api().template_drift(req).await?.into_inner();
    let out = list
        .tenants
        .into_iter()
        .map(|d| {
            Ok(DriftView {
                tenant_id: uuid(&d.tenant_id)?,
                name: d.name,
                status: d.status,
                applied_version: d.applied_version,
                template_version: d.template_version,
            })
        })
        .collect::<ApiResult<_>>()?;
    Ok(Json(out))
}
