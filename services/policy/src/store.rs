//! Policies in PostgreSQL: one row per attachment (tenant, group, device)
//! holding the current version, and every version kept. All calls run in a
//! tenant transaction, so row-level security scopes them.

use crate::document::PolicyDocument;
use crate::effective::{Effective, Layer, Scope, merge};
use crate::{Error, Result};
use chrono::{DateTime, Utc};
use mamori_tenancy::TenantTx;
use serde::Serialize;
use sqlx::Row;
use std::collections::HashMap;
use uuid::Uuid;

/// A stored policy (current version).
#[derive(Debug, Clone, Serialize)]
pub struct StoredPolicy {
    pub id: Uuid,
    #[serde(flatten)]
    pub scope: Scope,
    pub version: i32,
    /// None: cleared (inherits everything).
    pub document: Option<PolicyDocument>,
    pub updated_at: DateTime<Utc>,
    pub updated_by: Option<Uuid>,
}

/// One version in a policy's history.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyVersion {
    pub version: i32,
    pub document: Option<PolicyDocument>,
    pub created_at: DateTime<Utc>,
    pub created_by: Option<Uuid>,
}

/// The outcome of a change.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Saved {
    pub policy_id: Uuid,
    pub version: i32,
    /// The tenant's new policy revision (what agents will report).
    pub revision: i64,
}

/// Stores a new version of the policy at `scope` (`None` clears it) and
/// bumps the tenant's revision. The target must exist in the tenant.
pub async fn put(
    tx: &mut TenantTx,
    scope: Scope,
    document: Option<&PolicyDocument>,
    actor: Option<Uuid>,
) -> Result<Saved> {
    check_target(tx, scope).await?;
    let doc_json = document.map(|d| serde_json::to_value(d).expect("documents serialise"));
    let tenant = tx.tenant().as_uuid();
    let row = sqlx::query(
        "INSERT INTO policies (tenant_id, id, scope, target_id, version, document, updated_by)
         VALUES ($1, $2, $3, $4, 1, $5, $6)
         ON CONFLICT (tenant_id, scope, coalesce(target_id, '00000000-0000-0000-0000-000000000000'))
         DO UPDATE SET version = policies.version + 1, document = EXCLUDED.document,
                       updated_at = now(), updated_by = EXCLUDED.updated_by
         RETURNING id, version",
    )
    .bind(tenant)
    .bind(Uuid::now_v7())
    .bind(scope.name())
    .bind(scope.target())
    .bind(&doc_json)
    .bind(actor)
    .fetch_one(&mut **tx)
    .await?;
    let policy_id: Uuid = row.get(0);
    let version: i32 = row.get(1);
    sqlx::query(
        "INSERT INTO policy_versions (tenant_id, policy_id, version, document, created_by)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(tenant)
    .bind(policy_id)
    .bind(version)
    .bind(&doc_json)
    .bind(actor)
    .execute(&mut **tx)
    .await?;
    let revision = bump_revision(tx).await?;
    Ok(Saved {
        policy_id,
        version,
        revision,
    })
}

/// Stores `document` as the tenant's policy, applied from an MSP template
/// (`template` at `template_version`), and remembers where it came from.
pub async fn put_from_template(
    tx: &mut TenantTx,
    document: &PolicyDocument,
    actor: Option<Uuid>,
    template: Uuid,
    template_version: i32,
) -> Result<Saved> {
    let saved = put(tx, Scope::Tenant, Some(document), actor).await?;
    sqlx::query(
        "UPDATE policies SET template_id = $2, template_version = $3, template_policy_version = $4
         WHERE id = $1",
    )
    .bind(saved.policy_id)
    .bind(template)
    .bind(template_version)
    .bind(saved.version)
    .execute(&mut **tx)
    .await?;
    Ok(saved)
}

/// Where the tenant's policy came from, if from a template.
#[derive(Debug, Clone, Copy)]
pub struct TemplateOrigin {
    pub template: Uuid,
    /// The template's version that was applied.
    pub template_version: i32,
    /// True when the tenant's policy changed after the apply.
    pub edited: bool,
}

/// The template the tenant's policy was last applied from.
pub async fn applied_template(tx: &mut TenantTx) -> Result<Option<TemplateOrigin>> {
    let row = sqlx::query(
        "SELECT template_id, template_version, template_policy_version, version
         FROM policies WHERE scope = 'tenant'",
    )
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.and_then(|r| {
        let at: Option<i32> = r.get("template_policy_version");
        let current: i32 = r.get("version");
        Some(TemplateOrigin {
            template: r.get::<Option<Uuid>, _>("template_id")?,
            template_version: r.get::<Option<i32>, _>("template_version")?,
            edited: at != Some(current),
        })
    }))
}

/// Bumps the tenant's policy revision (under its row lock, so concurrent
/// changes get distinct revisions) and returns the new one. Call it for
/// anything that changes a device's effective policy.
pub async fn bump_revision(tx: &mut TenantTx) -> Result<i64> {
    let tenant = tx.tenant().as_uuid();
    let rev: i64 = sqlx::query_scalar(
        "UPDATE tenants SET policy_revision = policy_revision + 1 WHERE id = $1 RETURNING policy_revision",
    )
    .bind(tenant)
    .fetch_one(&mut **tx)
    .await?;
    Ok(rev)
}

/// The tenant's current policy revision, holding its row lock until the
/// transaction ends: orders this change against every other one that
/// bumps or locks the revision, without announcing a change.
pub async fn lock_revision(tx: &mut TenantTx) -> Result<i64> {
    let tenant = tx.tenant().as_uuid();
    let rev: i64 =
        sqlx::query_scalar("SELECT policy_revision FROM tenants WHERE id = $1 FOR UPDATE")
            .bind(tenant)
            .fetch_one(&mut **tx)
            .await?;
    Ok(rev)
}

async fn check_target(tx: &mut TenantTx, scope: Scope) -> Result<()> {
    let exists: bool = match scope {
        Scope::Tenant => true,
        Scope::Group(id) => {
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM groups WHERE id = $1)")
                .bind(id)
                .fetch_one(&mut **tx)
                .await?
        }
        Scope::Device(id) => {
            sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM devices WHERE id = $1 AND deleted_at IS NULL)",
            )
            .bind(id)
            .fetch_one(&mut **tx)
            .await?
        }
    };
    if exists {
        Ok(())
    } else {
        Err(Error::NotFound(scope.name()))
    }
}

fn stored_from_row(row: &sqlx::postgres::PgRow) -> Result<StoredPolicy> {
    let scope: String = row.get("scope");
    let target: Option<Uuid> = row.get("target_id");
    let document: Option<serde_json::Value> = row.get("document");
    Ok(StoredPolicy {
        id: row.get("id"),
        scope: Scope::from_parts(&scope, target).ok_or(Error::Corrupt("policy scope"))?,
        version: row.get("version"),
        document: document.map(decode).transpose()?,
        updated_at: row.get("updated_at"),
        updated_by: row.get("updated_by"),
    })
}

/// Stored documents were validated on the way in; one that no longer parses
/// (written by a newer version, say) is reported rather than ignored.
fn decode(v: serde_json::Value) -> Result<PolicyDocument> {
    serde_json::from_value(v).map_err(|_| Error::Corrupt("policy document"))
}

const SELECT_POLICY: &str =
    "SELECT id, scope, target_id, version, document, updated_at, updated_by FROM policies";

/// The policy at `scope`, if one was ever stored.
pub async fn get(tx: &mut TenantTx, scope: Scope) -> Result<Option<StoredPolicy>> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "{SELECT_POLICY} WHERE scope = $1 AND target_id IS NOT DISTINCT FROM $2"
    )))
    .bind(scope.name())
    .bind(scope.target())
    .fetch_optional(&mut **tx)
    .await?;
    row.as_ref().map(stored_from_row).transpose()
}

/// Every policy of the tenant.
pub async fn list(tx: &mut TenantTx) -> Result<Vec<StoredPolicy>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "{SELECT_POLICY} ORDER BY scope DESC, target_id NULLS FIRST"
    )))
    .fetch_all(&mut **tx)
    .await?;
    rows.iter().map(stored_from_row).collect()
}

/// The versions of the policy at `scope`, newest first.
pub async fn versions(tx: &mut TenantTx, scope: Scope) -> Result<Vec<PolicyVersion>> {
    let rows = sqlx::query(
        "SELECT v.version, v.document, v.created_at, v.created_by
         FROM policy_versions v JOIN policies p ON p.tenant_id = v.tenant_id AND p.id = v.policy_id
         WHERE p.scope = $1 AND p.target_id IS NOT DISTINCT FROM $2
         ORDER BY v.version DESC LIMIT 1000",
    )
    .bind(scope.name())
    .bind(scope.target())
    .fetch_all(&mut **tx)
    .await?;
    rows.iter()
        .map(|r| {
            let doc: Option<serde_json::Value> = r.get("document");
            Ok(PolicyVersion {
                version: r.get("version"),
                document: doc.map(decode).transpose()?,
                created_at: r.get("created_at"),
                created_by: r.get("created_by"),
            })
        })
        .collect()
}

/// Everything needed to compute the effective policy of any device of one
/// tenant: its policies, its group tree, its revision. Loaded once, used for
/// one device or ten thousand.
#[derive(Debug, Clone)]
pub struct TenantPolicies {
    pub revision: i64,
    /// SHA-256 of the tenant's agent uninstall code, if one was issued.
    pub uninstall_code_hash: Option<Vec<u8>>,
    tenant: Option<Layer>,
    groups: HashMap<Uuid, Layer>,
    devices: HashMap<Uuid, Layer>,
    parents: HashMap<Uuid, Option<Uuid>>,
}

impl TenantPolicies {
    pub async fn load(tx: &mut TenantTx) -> Result<Self> {
        let (revision, uninstall_code_hash): (i64, Option<Vec<u8>>) = sqlx::query_as(
            "SELECT policy_revision, uninstall_code_hash FROM tenants WHERE id = $1",
        )
        .bind(tx.tenant().as_uuid())
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(Error::NotFound("tenant"))?;
        let mut out = TenantPolicies {
            revision,
            uninstall_code_hash,
            tenant: None,
            groups: HashMap::new(),
            devices: HashMap::new(),
            parents: HashMap::new(),
        };
        for p in list(tx).await? {
            let Some(document) = p.document else { continue };
            let layer = Layer {
                scope: p.scope,
                policy_id: p.id,
                version: p.version,
                document,
            };
            match p.scope {
                Scope::Tenant => out.tenant = Some(layer),
                Scope::Group(id) => {
                    out.groups.insert(id, layer);
                }
                Scope::Device(id) => {
                    out.devices.insert(id, layer);
                }
            }
        }
        let rows: Vec<(Uuid, Option<Uuid>)> = sqlx::query_as("SELECT id, parent_id FROM groups")
            .fetch_all(&mut **tx)
            .await?;
        out.parents = rows.into_iter().collect();
        Ok(out)
    }

    /// The effective policy of a device in `group`.
    pub fn effective(&self, device: Uuid, group: Option<Uuid>) -> Effective {
        let mut chain = Vec::new();
        let mut at = group;
        // The tree has no cycles (parents are created first), but a bound
        // keeps a damaged one from looping.
        while let Some(g) = at {
            if chain.len() > 64 {
                break;
            }
            chain.push(g);
            at = self.parents.get(&g).copied().flatten();
        }
        let mut layers: Vec<Layer> = self.tenant.iter().cloned().collect();
        layers.extend(
            chain
                .iter()
                .rev()
                .filter_map(|g| self.groups.get(g).cloned()),
        );
        layers.extend(self.devices.get(&device).cloned());
        Effective {
            uninstall_code_hash: self.uninstall_code_hash.clone(),
            ..merge(self.revision, &layers)
        }
    }

    /// True when the device has a policy of its own (it cannot share the
    /// effective policy computed for its group).
    pub fn has_device_policy(&self, device: Uuid) -> bool {
        self.devices.contains_key(&device)
    }
}

/// The group of a live device; `NotFound` for an unknown or deleted one.
pub async fn device_group(tx: &mut TenantTx, device: Uuid) -> Result<Option<Uuid>> {
    let row: Option<(Option<Uuid>,)> =
        sqlx::query_as("SELECT group_id FROM devices WHERE id = $1 AND deleted_at IS NULL")
            .bind(device)
            .fetch_optional(&mut **tx)
            .await?;
    row.map(|(g,)| g).ok_or(Error::NotFound("device"))
}

/// The live devices of the tenant with their groups.
pub async fn device_groups(tx: &mut TenantTx) -> Result<Vec<(Uuid, Option<Uuid>)>> {
    Ok(sqlx::query_as(
        "SELECT id, group_id FROM devices WHERE deleted_at IS NULL AND revoked_at IS NULL",
    )
    .fetch_all(&mut **tx)
    .await?)
}

/// The effective policy of one device.
pub async fn effective_for_device(tx: &mut TenantTx, device: Uuid) -> Result<Effective> {
    let group = device_group(tx, device).await?;
    Ok(TenantPolicies::load(tx).await?.effective(device, group))
}

/// What an agent reported: the revision it enforces, or why it could not
/// apply one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedReport {
    pub device: Uuid,
    pub revision: i64,
    pub error: Option<String>,
}

/// Records agents' reports in one statement (a fleet answers a change at
/// once).
pub async fn record_applied(tx: &mut TenantTx, reports: &[AppliedReport]) -> Result<()> {
    let devices: Vec<Uuid> = reports.iter().map(|r| r.device).collect();
    let revisions: Vec<i64> = reports.iter().map(|r| r.revision).collect();
    let errors: Vec<Option<String>> = reports
        .iter()
        .map(|r| r.error.as_ref().map(|e| e.chars().take(500).collect()))
        .collect();
    sqlx::query(
        "UPDATE devices d
         SET policy_version = CASE WHEN u.err IS NULL THEN u.rev ELSE d.policy_version END,
             policy_error = u.err
         FROM unnest($1::uuid[], $2::bigint[], $3::text[]) AS u(id, rev, err)
         WHERE d.id = u.id",
    )
    .bind(&devices)
    .bind(&revisions)
    .bind(&errors)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
