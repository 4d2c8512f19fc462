//! The policy service's internal gRPC API (`mamori.policy.v1`): policies
//! per tenant, group and device, their versions, the effective policy of a
//! device, moving devices between groups, and MSP templates. Every call
//! acts as the identity the gateway signed (see [`crate::identity`]); the
//! tenant comes from it alone. Changes are audited in their transaction
//! and announced to ingest after they commit.

use crate::identity::{Identity, IdentityKey, METADATA};
use crate::store::{self, PolicyVersion};
use crate::{Error, PolicyDocument, Scope, StoredPolicy};
use crate::{groups, templates};
use chrono::{DateTime, Utc};
use mamori_proto::policy::v1 as pb;
use mamori_proto::policy::v1::policy_service_server::PolicyService;
use mamori_tenancy::{Db, TenantId, TenantTx};
use serde_json::{Value, json};
use std::sync::Arc;
use tonic::{Request, Response, Status};
use uuid::Uuid;

/// The policy service.
#[derive(Debug, Clone)]
pub struct PolicyApi {
    pub db: Db,
    pub redis: mamori_streams::RedisTarget,
    pub key: Arc<IdentityKey>,
    /// Identities already accepted (each is good for one call).
    pub replays: Arc<crate::identity::Replays>,
}

type Reply<T> = Result<Response<T>, Status>;

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        match e {
            Error::NotFound(kind) => Status::not_found(format!("{kind} not found")),
            Error::Invalid(f) => Status::invalid_argument(format!("{}: {}", f.field, f.message)),
            Error::Db(e) => db_error(e),
            Error::Tenancy(e) => db_error(e),
            other => {
                tracing::error!(error = %other, "policy store failed");
                Status::internal("the policy store failed; see the policy service's log")
            }
        }
    }
}

/// An error a database call can end with, classified by SQLSTATE.
pub(crate) trait DbFailure: std::fmt::Display {
    fn failure(&self) -> mamori_tenancy::Failure;
}

impl DbFailure for sqlx::Error {
    fn failure(&self) -> mamori_tenancy::Failure {
        mamori_tenancy::classify(self)
    }
}

impl DbFailure for mamori_tenancy::Error {
    fn failure(&self) -> mamori_tenancy::Failure {
        mamori_tenancy::classify_error(self)
    }
}

/// The stable code and message of a duplicate, by the constraint refusing it.
fn duplicate(constraint: Option<&str>) -> (&'static str, &'static str) {
    match constraint {
        Some("groups_name") => ("group_exists", "a group of this name exists there"),
        Some("policy_templates_name") => (
            "template_exists",
            "the organisation has a template of this name",
        ),
        _ => ("conflict", "this would duplicate something that exists"),
    }
}

/// A database failure as the caller should see it: its own mistake
/// (duplicate, refused value, a rule of ours), a moment to retry, or an
/// internal error (logged here in full, never shown).
pub(crate) fn db_error(e: impl DbFailure) -> Status {
    use mamori_tenancy::Failure;
    match e.failure() {
        Failure::Duplicate { constraint } => {
            let (key, message) = duplicate(constraint.as_deref());
            coded(tonic::Code::AlreadyExists, key, message.into())
        }
        Failure::Refused { constraint } => Status::invalid_argument(format!(
            "a value breaks the rule {}",
            constraint.as_deref().unwrap_or("of the database")
        )),
        Failure::Rule { message } => coded(tonic::Code::FailedPrecondition, "conflict", message),
        Failure::Unavailable => {
            tracing::warn!(error = %e, "database unavailable");
            Status::unavailable("the database is unavailable, retry later")
        }
        Failure::Internal => {
            tracing::error!(error = %e, "database error");
            Status::internal("internal error; see the policy service's log")
        }
    }
}

pub(crate) fn ts(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

fn uuid_text(id: Option<Uuid>) -> String {
    id.map(|u| u.to_string()).unwrap_or_default()
}

/// A refusal with a stable code in the `x-mamori-code` metadata.
pub(crate) fn coded(code: tonic::Code, key: &'static str, message: String) -> Status {
    let mut metadata = tonic::metadata::MetadataMap::new();
    metadata.insert(
        CODE_METADATA,
        tonic::metadata::MetadataValue::from_static(key),
    );
    Status::with_metadata(code, message, metadata)
}

/// The metadata key of a refusal's stable code.
pub const CODE_METADATA: &str = "x-mamori-code";

/// A display name: trimmed, 1–200 printable characters.
pub(crate) fn display_name(field: &str, raw: &str) -> Result<String, Status> {
    let n = raw.trim();
    let problem = if n.is_empty() {
        "is required"
    } else if n.chars().count() > 200 {
        "must be at most 200 characters"
    } else if n.chars().any(char::is_control) {
        "must not contain control characters"
    } else {
        return Ok(n.to_owned());
    };
    Err(Status::invalid_argument(format!("{field}: {problem}")))
}

pub(crate) fn parse_id(field: &str, text: &str) -> Result<Uuid, Status> {
    Uuid::parse_str(text)
        .map_err(|_| Status::invalid_argument(format!("{field}: {text:?} is not a UUID")))
}

/// A JSON document from the wire, validated.
pub(crate) fn parse_document(field: &str, text: &str) -> Result<PolicyDocument, Status> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| Status::invalid_argument(format!("{field}: not JSON: {e}")))?;
    PolicyDocument::parse(value).map_err(|f| {
        Status::invalid_argument(if field.is_empty() {
            format!("{}: {}", f.field, f.message)
        } else {
            format!("{field}.{}: {}", f.field, f.message)
        })
    })
}

fn document_text(doc: &PolicyDocument) -> String {
    serde_json::to_string(doc).expect("documents serialise")
}

fn scope_of(target: Option<&pb::PolicyTarget>) -> Result<Scope, Status> {
    let target = target.ok_or_else(|| Status::invalid_argument("target: missing"))?;
    let id = || parse_id("target_id", &target.target_id);
    match pb::ScopeKind::try_from(target.scope) {
        Ok(pb::ScopeKind::Tenant) if target.target_id.is_empty() => Ok(Scope::Tenant),
        Ok(pb::ScopeKind::Tenant) => Err(Status::invalid_argument(
            "target_id: the tenant scope takes no target id",
        )),
        Ok(pb::ScopeKind::Group) => Ok(Scope::Group(id()?)),
        Ok(pb::ScopeKind::Device) => Ok(Scope::Device(id()?)),
        _ => Err(Status::invalid_argument(
            "scope: must be tenant, group or device",
        )),
    }
}

fn target_of(scope: Scope) -> pb::PolicyTarget {
    pb::PolicyTarget {
        scope: match scope {
            Scope::Tenant => pb::ScopeKind::Tenant,
            Scope::Group(_) => pb::ScopeKind::Group,
            Scope::Device(_) => pb::ScopeKind::Device,
        } as i32,
        target_id: uuid_text(scope.target()),
    }
}

fn policy_of(p: StoredPolicy) -> pb::Policy {
    pb::Policy {
        id: p.id.to_string(),
        target: Some(target_of(p.scope)),
        version: p.version,
        document_json: p.document.as_ref().map(document_text),
        updated_at: Some(ts(p.updated_at)),
        updated_by: uuid_text(p.updated_by),
    }
}

fn version_of(v: PolicyVersion) -> pb::PolicyVersion {
    pb::PolicyVersion {
        version: v.version,
        document_json: v.document.as_ref().map(document_text),
        created_at: Some(ts(v.created_at)),
        created_by: uuid_text(v.created_by),
    }
}

/// The path of the gRPC call being served, put in the request's extensions
/// by the server (see `server.rs`) for the identity check.
#[derive(Debug, Clone)]
pub(crate) struct CallPath(pub(crate) String);

impl PolicyApi {
    /// The verified identity of a call: signed for this call (its path, as
    /// `CallPath` recorded it) and this request message, and not seen
    /// before.
    pub(crate) fn identity<T: prost::Message>(&self, req: &Request<T>) -> Result<Identity, Status> {
        let method = req
            .extensions()
            .get::<CallPath>()
            .map(|p| p.0.as_str())
            .unwrap_or_default();
        let body = crate::identity::body_digest(req.get_ref());
        let now = Utc::now().timestamp();
        let text = req
            .metadata()
            .get(METADATA)
            .ok_or_else(|| {
                Status::unauthenticated(crate::identity::IdentityError::Missing.to_string())
            })?
            .to_str()
            .map_err(|_| Status::unauthenticated("x-mamori-identity is not ASCII"))?;
        let identity = self
            .key
            .verify(text, now, method, &body)
            .and_then(|i| self.replays.admit(&i, now).map(|()| i))
            .map_err(|e| Status::unauthenticated(e.to_string()))?;
        let span = tracing::Span::current();
        span.record("user_id", tracing::field::display(identity.user));
        Ok(identity)
    }

    /// The identity of a call on a tenant, and a transaction on that tenant
    /// with the caller's organisation and user named for the row policies.
    async fn tenant_tx<T: prost::Message>(
        &self,
        req: &Request<T>,
    ) -> Result<(Identity, TenantTx), Status> {
        self.open(self.identity(req)?).await
    }

    /// As [`PolicyApi::tenant_tx`], for a caller whose role may change
    /// things (refused before anything is opened).
    async fn change_tx<T: prost::Message>(
        &self,
        req: &Request<T>,
    ) -> Result<(Identity, TenantTx), Status> {
        let identity = self.identity(req)?;
        require_change(&identity)?;
        self.open(identity).await
    }

    async fn open(&self, identity: Identity) -> Result<(Identity, TenantTx), Status> {
        let tenant = identity
            .tenant
            .ok_or_else(|| Status::invalid_argument("the identity names no tenant to act on"))?;
        let tx = begin_as(&self.db, &identity, TenantId::from_uuid(tenant)).await?;
        Ok((identity, tx))
    }

    /// Tells ingest (and alerting) that `tenant`'s policies changed.
    pub(crate) async fn announce(&self, tenant: TenantId) {
        crate::notify::publish_to(&self.redis, tenant, std::time::Duration::from_secs(2)).await;
    }
}

pub(crate) fn require_change(identity: &Identity) -> Result<(), Status> {
    if identity.may_change() {
        Ok(())
    } else {
        Err(Status::permission_denied(format!(
            "the {} role is read-only",
            identity.role
        )))
    }
}

/// A transaction on `tenant` as `identity`.
pub(crate) async fn begin_as(
    db: &Db,
    identity: &Identity,
    tenant: TenantId,
) -> Result<TenantTx, Status> {
    let mut tx = db.begin_tenant(tenant).await.map_err(db_error)?;
    tx.set_actor(identity.org, Some(identity.user))
        .await
        .map_err(db_error)?;
    Ok(tx)
}

pub(crate) async fn audit(
    tx: &mut TenantTx,
    identity: &Identity,
    action: &str,
    target: &str,
    details: Value,
) -> Result<(), Status> {
    mamori_tenancy::audit::record(tx, &identity.actor(), action, target, &details)
        .await
        .map_err(db_error)
}

pub(crate) async fn commit(tx: TenantTx) -> Result<(), Status> {
    tx.commit().await.map_err(db_error)
}

#[tonic::async_trait]
impl PolicyService for PolicyApi {
    #[tracing::instrument(skip_all, fields(user_id))]
    async fn list_policies(&self, req: Request<pb::ListPoliciesRequest>) -> Reply<pb::PolicyList> {
        let (_, mut tx) = self.tenant_tx(&req).await?;
        let policies = store::list(&mut tx).await?;
        let revision: i64 = sqlx::query_scalar("SELECT policy_revision FROM tenants WHERE id = $1")
            .bind(tx.tenant().as_uuid())
            .fetch_one(&mut *tx)
            .await
            .map_err(db_error)?;
        commit(tx).await?;
        Ok(Response::new(pb::PolicyList {
            revision,
            policies: policies.into_iter().map(policy_of).collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(user_id))]
    async fn get_policy(&self, req: Request<pb::PolicyTarget>) -> Reply<pb::Policy> {
        let scope = scope_of(Some(req.get_ref()))?;
        let (_, mut tx) = self.tenant_tx(&req).await?;
        let found = store::get(&mut tx, scope).await?;
        commit(tx).await?;
        found
            .map(|p| Response::new(policy_of(p)))
            .ok_or_else(|| Status::not_found("policy not found"))
    }

    #[tracing::instrument(skip_all, fields(user_id))]
    async fn put_policy(&self, req: Request<pb::PutPolicyRequest>) -> Reply<pb::SavedPolicy> {
        let scope = scope_of(req.get_ref().target.as_ref())?;
        // Validated before anything is touched: a refused document changes
        // nothing and the previous version stays in force.
        let document = req
            .get_ref()
            .document_json
            .as_deref()
            .map(|text| parse_document("", text))
            .transpose()?;
        let (identity, mut tx) = self.change_tx(&req).await?;
        let saved = store::put(&mut tx, scope, document.as_ref(), Some(identity.user)).await?;
        let confirmations = match &document {
            Some(d) => crate::recipients::register(&mut tx, &identity, d).await?,
            None => Vec::new(),
        };
        let action = if document.is_some() {
            "policy.update"
        } else {
            "policy.clear"
        };
        audit(
            &mut tx,
            &identity,
            action,
            &saved.policy_id.to_string(),
            json!({
                "scope": scope.name(),
                "target_id": scope.target(),
                "version": saved.version,
                "revision": saved.revision,
                "document": document,
            }),
        )
        .await?;
        let tenant = tx.tenant();
        commit(tx).await?;
        self.announce(tenant).await;
        Ok(Response::new(pb::SavedPolicy {
            policy_id: saved.policy_id.to_string(),
            version: saved.version,
            revision: saved.revision,
            confirmations,
        }))
    }

    #[tracing::instrument(skip_all, fields(user_id))]
    async fn list_versions(&self, req: Request<pb::PolicyTarget>) -> Reply<pb::VersionList> {
        let scope = scope_of(Some(req.get_ref()))?;
        let (_, mut tx) = self.tenant_tx(&req).await?;
        let versions = store::versions(&mut tx, scope).await?;
        commit(tx).await?;
        if versions.is_empty() {
            return Err(Status::not_found("policy not found"));
        }
        Ok(Response::new(pb::VersionList {
            versions: versions.into_iter().map(version_of).collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(user_id))]
    async fn get_effective(&self, req: Request<pb::DeviceRef>) -> Reply<pb::EffectivePolicy> {
        let device = parse_id("device_id", &req.get_ref().device_id)?;
        let (_, mut tx) = self.tenant_tx(&req).await?;
        let eff = store::effective_for_device(&mut tx, device).await?;
        let (applied, error): (Option<i64>, Option<String>) =
            sqlx::query_as("SELECT policy_version, policy_error FROM devices WHERE id = $1")
                .bind(device)
                .fetch_one(&mut *tx)
                .await
                .map_err(db_error)?;
        commit(tx).await?;
        Ok(Response::new(pb::EffectivePolicy {
            revision: eff.revision,
            applied_revision: applied,
            apply_error: error,
            document_json: document_text(&eff.document),
            origins_json: serde_json::to_string(&eff.origins).expect("serialisable"),
        }))
    }

    #[tracing::instrument(skip_all, fields(user_id))]
    async fn move_device(
        &self,
        req: Request<pb::MoveDeviceRequest>,
    ) -> Reply<pb::MoveDeviceResponse> {
        let device = parse_id("device_id", &req.get_ref().device_id)?;
        let group = match req.get_ref().group_id.as_str() {
            "" => None,
            text => Some(parse_id("group_id", text)?),
        };
        let (identity, mut tx) = self.change_tx(&req).await?;
        // The revision first: its row lock orders this move against a
        // delete of the target group.
        let revision = store::bump_revision(&mut tx).await?;
        if let Some(g) = group {
            let exists: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM groups WHERE id = $1)")
                    .bind(g)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db_error)?;
            if !exists {
                return Err(Status::not_found("group not found"));
            }
        }
        let moved =
            sqlx::query("UPDATE devices SET group_id = $2 WHERE id = $1 AND deleted_at IS NULL")
                .bind(device)
                .bind(group)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?
                .rows_affected();
        if moved == 0 {
            return Err(Status::not_found("device not found"));
        }
        audit(
            &mut tx,
            &identity,
            "device.move",
            &device.to_string(),
            json!({ "group_id": group, "revision": revision }),
        )
        .await?;
        let tenant = tx.tenant();
        commit(tx).await?;
        self.announce(tenant).await;
        Ok(Response::new(pb::MoveDeviceResponse { revision }))
    }

    #[tracing::instrument(skip_all, fields(user_id))]
    async fn list_groups(&self, req: Request<pb::ListGroupsRequest>) -> Reply<pb::GroupList> {
        let (_, tx) = self.tenant_tx(&req).await?;
        groups::list(tx).await.map(Response::new)
    }

    #[tracing::instrument(skip_all, fields(user_id))]
    async fn create_group(&self, req: Request<pb::CreateGroupRequest>) -> Reply<pb::Group> {
        let (identity, tx) = self.change_tx(&req).await?;
        groups::create(&identity, tx, req.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all, fields(user_id))]
    async fn update_group(&self, req: Request<pb::UpdateGroupRequest>) -> Reply<pb::Group> {
        let (identity, tx) = self.change_tx(&req).await?;
        let tenant = tx.tenant();
        let (group, moved) = groups::update(&identity, tx, req.into_inner()).await?;
        if moved.is_some() {
            self.announce(tenant).await;
        }
        Ok(Response::new(group))
    }

    #[tracing::instrument(skip_all, fields(user_id))]
    async fn delete_group(&self, req: Request<pb::GroupRef>) -> Reply<pb::DeleteGroupResponse> {
        let (identity, tx) = self.change_tx(&req).await?;
        let revision = groups::delete(&identity, tx, req.into_inner()).await?;
        Ok(Response::new(pb::DeleteGroupResponse { revision }))
    }

    #[tracing::instrument(skip_all, fields(user_id))]
    async fn create_template(&self, req: Request<pb::TemplateInput>) -> Reply<pb::Template> {
        let identity = self.identity(&req)?;
        templates::create(self, &identity, req.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all, fields(user_id))]
    async fn list_templates(
        &self,
        req: Request<pb::ListTemplatesRequest>,
    ) -> Reply<pb::TemplateList> {
        let identity = self.identity(&req)?;
        templates::list(self, &identity).await.map(Response::new)
    }

    #[tracing::instrument(skip_all, fields(user_id))]
    async fn update_template(
        &self,
        req: Request<pb::UpdateTemplateRequest>,
    ) -> Reply<pb::Template> {
        let identity = self.identity(&req)?;
        templates::update(self, &identity, req.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all, fields(user_id))]
    async fn apply_template(
        &self,
        req: Request<pb::ApplyTemplateRequest>,
    ) -> Reply<pb::ApplyTemplateResponse> {
        let identity = self.identity(&req)?;
        templates::apply(self, &identity, req.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all, fields(user_id))]
    async fn template_drift(&self, req: Request<pb::TemplateRef>) -> Reply<pb::DriftList> {
        let identity = self.identity(&req)?;
        templates::drift(self, &identity, req.into_inner())
            .await
            .map(Response::new)
    }
}
