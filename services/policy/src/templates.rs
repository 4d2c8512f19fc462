//! MSP policy templates: an MSP organisation keeps policy documents of its
//! own, applies one to many of its tenants at once (it becomes their tenant
//! policy, a new version each, audited in each tenant), and sees which
//! tenants have drifted from it since. Only the organisation's
//! administrators reach them.

use crate::api::{
    PolicyApi, audit, begin_as, coded, commit, db_error, display_name, parse_document, parse_id, ts,
};
use crate::identity::Identity;
use crate::{PolicyDocument, store};
use chrono::{DateTime, Utc};
use mamori_proto::policy::v1 as pb;
use mamori_tenancy::{TenantId, TenantTx};
use sqlx::{Postgres, Transaction};
use tonic::Status;
use uuid::Uuid;

/// Tenants one apply call may name.
pub const MAX_APPLY: usize = 1000;

#[derive(Debug, sqlx::FromRow)]
struct Row {
    id: Uuid,
    name: String,
    version: i32,
    document: serde_json::Value,
    updated_at: DateTime<Utc>,
}

impl Row {
    fn into_pb(self) -> pb::Template {
        pb::Template {
            id: self.id.to_string(),
            name: self.name,
            version: self.version,
            document_json: self.document.to_string(),
            updated_at: Some(ts(self.updated_at)),
        }
    }
}

const COLUMNS: &str = "id, name, version, document, updated_at";

fn org_of(identity: &Identity) -> Result<Uuid, Status> {
    identity
        .msp_admin_org()
        .ok_or_else(|| Status::permission_denied("only an MSP administrator may do this"))
}

fn input(t: Option<pb::TemplateInput>) -> Result<(String, PolicyDocument), Status> {
    let t = t.ok_or_else(|| Status::invalid_argument("template: missing"))?;
    Ok((
        display_name("name", &t.name)?,
        parse_document("document", &t.document_json)?,
    ))
}

/// A transaction with no tenant, as the organisation's user.
async fn begin_org(
    api: &PolicyApi,
    org: Uuid,
    user: Uuid,
) -> Result<Transaction<'static, Postgres>, Status> {
    api.db
        .begin_actor(Some(org), Some(user))
        .await
        .map_err(db_error)
}

pub(crate) async fn create(
    api: &PolicyApi,
    identity: &Identity,
    req: pb::TemplateInput,
) -> Result<pb::Template, Status> {
    let org = org_of(identity)?;
    let (name, doc) = input(Some(req))?;
    let mut tx = begin_org(api, org, identity.user).await?;
    let inserted: Result<Row, sqlx::Error> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO policy_templates (msp_org_id, id, name, version, document, updated_by)
         VALUES ($1, $2, $3, 1, $4, $5) RETURNING {COLUMNS}"
    )))
    .bind(org)
    .bind(Uuid::now_v7())
    .bind(&name)
    .bind(serde_json::to_value(&doc).expect("serialisable"))
    .bind(identity.user)
    .fetch_one(&mut *tx)
    .await;
    let row = inserted.map_err(|e| named(e, &name))?;
    tx.commit().await.map_err(db_error)?;
    tracing::info!(template_id = %row.id, "policy template created");
    Ok(row.into_pb())
}

pub(crate) async fn list(api: &PolicyApi, identity: &Identity) -> Result<pb::TemplateList, Status> {
    let org = org_of(identity)?;
    let mut tx = begin_org(api, org, identity.user).await?;
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM policy_templates WHERE msp_org_id = $1 ORDER BY name"
    )))
    .bind(org)
    .fetch_all(&mut *tx)
    .await
    .map_err(db_error)?;
    tx.commit().await.map_err(db_error)?;
    Ok(pb::TemplateList {
        templates: rows.into_iter().map(Row::into_pb).collect(),
    })
}

/// Replaces a template's document (a new version). Tenants it was applied
/// to keep their policy until it is applied again; they show as drifted.
pub(crate) async fn update(
    api: &PolicyApi,
    identity: &Identity,
    req: pb::UpdateTemplateRequest,
) -> Result<pb::Template, Status> {
    let org = org_of(identity)?;
    let id = parse_id("id", &req.id)?;
    let (name, doc) = input(req.template)?;
    let mut tx = begin_org(api, org, identity.user).await?;
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE policy_templates SET name = $3, document = $4, version = version + 1,
                updated_at = now(), updated_by = $5
         WHERE msp_org_id = $1 AND id = $2 RETURNING {COLUMNS}"
    )))
    .bind(org)
    .bind(id)
    .bind(&name)
    .bind(serde_json::to_value(&doc).expect("serialisable"))
    .bind(identity.user)
    .fetch_optional(&mut *tx)
    .await
    .map_err(|e| named(e, &name))?;
    let row = row.ok_or_else(|| Status::not_found("policy template not found"))?;
    tx.commit().await.map_err(db_error)?;
    Ok(row.into_pb())
}

/// A failed insert or update of template `name`: the name taken in the
/// organisation (a rename too), or another database failure.
fn named(e: sqlx::Error, name: &str) -> Status {
    match mamori_tenancy::classify(&e) {
        mamori_tenancy::Failure::Duplicate { constraint }
            if constraint.as_deref() == Some("policy_templates_name") =>
        {
            coded(
                tonic::Code::AlreadyExists,
                "template_exists",
                format!("a template named {name:?} exists"),
            )
        }
        _ => db_error(e),
    }
}

async fn fetch(api: &PolicyApi, identity: &Identity, org: Uuid, id: Uuid) -> Result<Row, Status> {
    let mut tx = begin_org(api, org, identity.user).await?;
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM policy_templates WHERE msp_org_id = $1 AND id = $2"
    )))
    .bind(org)
    .bind(id)
    .fetch_optional(&mut *tx)
    .await
    .map_err(db_error)?;
    tx.commit().await.map_err(db_error)?;
    row.ok_or_else(|| Status::not_found("policy template not found"))
}

/// A transaction on one of the organisation's tenants (NOT_FOUND for any
/// other).
async fn org_tenant(
    api: &PolicyApi,
    identity: &Identity,
    org: Uuid,
    tenant: Uuid,
) -> Result<TenantTx, Status> {
    let mut tx = begin_as(&api.db, identity, TenantId::from_uuid(tenant)).await?;
    let ours: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM tenants WHERE id = $1 AND msp_org_id = $2)",
    )
    .bind(tenant)
    .bind(org)
    .fetch_one(&mut *tx)
    .await
    .map_err(db_error)?;
    if !ours {
        return Err(Status::not_found(format!("tenant {tenant} not found")));
    }
    Ok(tx)
}

/// Applies a template to tenants of the organisation: it becomes each
/// one's tenant policy (a new version, audited in the tenant) and reaches
/// their agents. Every tenant is checked first: one that is not the
/// organisation's fails the whole call and changes nothing.
pub(crate) async fn apply(
    api: &PolicyApi,
    identity: &Identity,
    req: pb::ApplyTemplateRequest,
) -> Result<pb::ApplyTemplateResponse, Status> {
    let org = org_of(identity)?;
    let id = parse_id("id", &req.id)?;
    if req.tenant_ids.is_empty() || req.tenant_ids.len() > MAX_APPLY {
        return Err(Status::invalid_argument(format!(
            "tenant_ids: name 1 to {MAX_APPLY} tenants"
        )));
    }
    let tenants = req
        .tenant_ids
        .iter()
        .enumerate()
        .map(|(i, t)| parse_id(&format!("tenant_ids[{i}]"), t))
        .collect::<Result<Vec<_>, _>>()?;
    let template = fetch(api, identity, org, id).await?;
    let doc = parse_document("document", &template.document.to_string())?;
    // Check all, then change all (each check in its own short transaction:
    // a thousand open ones would drain the pool).
    for t in &tenants {
        commit(org_tenant(api, identity, org, *t).await?).await?;
    }
    let mut applied = Vec::with_capacity(tenants.len());
    for t in &tenants {
        // Checked again inside the change: a tenant released since fails
        // here, before anything of its own is touched.
        let mut tx = org_tenant(api, identity, org, *t).await?;
        let saved = store::put_from_template(
            &mut tx,
            &doc,
            Some(identity.user),
            template.id,
            template.version,
        )
        .await?;
        let confirmations = crate::recipients::register(&mut tx, identity, &doc).await?;
        audit(
            &mut tx,
            identity,
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
        commit(tx).await?;
        api.announce(tenant).await;
        applied.push(pb::AppliedTemplate {
            tenant_id: tenant.to_string(),
            policy_version: saved.version,
            revision: saved.revision,
            confirmations,
        });
    }
    Ok(pb::ApplyTemplateResponse { applied })
}

/// Which of the organisation's tenants follow the template and which have
/// drifted from it.
pub(crate) async fn drift(
    api: &PolicyApi,
    identity: &Identity,
    req: pb::TemplateRef,
) -> Result<pb::DriftList, Status> {
    let org = org_of(identity)?;
    let id = parse_id("id", &req.id)?;
    let template = fetch(api, identity, org, id).await?;
    let mut tx = begin_org(api, org, identity.user).await?;
    let tenants: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT tenant_id, name FROM mamori_msp_tenant_overview()")
            .fetch_all(&mut *tx)
            .await
            .map_err(db_error)?;
    tx.commit().await.map_err(db_error)?;
    let mut out = Vec::with_capacity(tenants.len());
    for (tenant, name) in tenants {
        let mut tx = org_tenant(api, identity, org, tenant).await?;
        let from = store::applied_template(&mut tx).await?;
        commit(tx).await?;
        let from = from.filter(|o| o.template == template.id);
        let status = match from {
            None => "not_applied",
            Some(o) if o.edited => "modified",
            Some(o) if o.template_version < template.version => "outdated",
            Some(_) => "in_sync",
        };
        out.push(pb::Drift {
            tenant_id: tenant.to_string(),
            name,
            status: status.to_owned(),
            applied_version: from.map(|o| o.template_version),
            template_version: template.version,
        });
    }
    Ok(pb::DriftList { tenants: out })
}
