//! Groups: a tenant's offices and departments, a tree that devices belong
//! to and policies attach to. Moving a group changes the effective policy
//! of every device below it, so it bumps the tenant's revision (whose row
//! lock also serialises tree changes: two moves cannot make a cycle
//! together). A group is deleted only when nothing is in it.

use crate::api::{audit, coded, commit, db_error, display_name, parse_id, ts};
use crate::identity::Identity;
use crate::store;
use chrono::{DateTime, Utc};
use mamori_proto::policy::v1 as pb;
use mamori_tenancy::TenantTx;
use serde_json::json;
use tonic::{Code, Status};
use uuid::Uuid;

#[derive(Debug, sqlx::FromRow)]
struct Row {
    id: Uuid,
    parent_id: Option<Uuid>,
    name: String,
    created_at: DateTime<Utc>,
}

impl Row {
    fn into_pb(self) -> pb::Group {
        pb::Group {
            id: self.id.to_string(),
            parent_id: self.parent_id.map(|p| p.to_string()).unwrap_or_default(),
            name: self.name,
            created_at: Some(ts(self.created_at)),
        }
    }
}

const COLUMNS: &str = "id, parent_id, name, created_at";

fn parent(field: &str, text: &str) -> Result<Option<Uuid>, Status> {
    if text.is_empty() {
        Ok(None)
    } else {
        parse_id(field, text).map(Some)
    }
}

async fn exists(tx: &mut TenantTx, id: Uuid) -> Result<bool, Status> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM groups WHERE id = $1)")
        .bind(id)
        .fetch_one(&mut **tx)
        .await
        .map_err(db_error)
}

/// A failed insert or update of group `name`: its name taken among its
/// siblings, or a database error.
fn refused(e: sqlx::Error, name: &str) -> Status {
    match e {
        sqlx::Error::Database(d) if d.constraint() == Some("groups_name") => coded(
            Code::AlreadyExists,
            "group_exists",
            format!("a group named {name:?} exists here"),
        ),
        other => db_error(other),
    }
}

pub(crate) async fn list(mut tx: TenantTx) -> Result<pb::GroupList, Status> {
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM groups ORDER BY name, id"
    )))
    .fetch_all(&mut *tx)
    .await
    .map_err(db_error)?;
    commit(tx).await?;
    Ok(pb::GroupList {
        groups: rows.into_iter().map(Row::into_pb).collect(),
    })
}

pub(crate) async fn create(
    identity: &Identity,
    mut tx: TenantTx,
    req: pb::CreateGroupRequest,
) -> Result<pb::Group, Status> {
    let name = display_name("name", &req.name)?;
    let parent_id = parent("parent_id", &req.parent_id)?;
    if let Some(p) = parent_id
        && !exists(&mut tx, p).await?
    {
        return Err(Status::not_found("parent group not found"));
    }
    let inserted: Result<Row, sqlx::Error> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO groups (tenant_id, id, parent_id, name) VALUES ($1, $2, $3, $4)
         RETURNING {COLUMNS}"
    )))
    .bind(tx.tenant().as_uuid())
    .bind(Uuid::now_v7())
    .bind(parent_id)
    .bind(&name)
    .fetch_one(&mut *tx)
    .await;
    let row = inserted.map_err(|e| refused(e, &name))?;
    audit(
        &mut tx,
        identity,
        "group.create",
        &row.id.to_string(),
        json!({ "name": name, "parent_id": parent_id }),
    )
    .await?;
    commit(tx).await?;
    Ok(row.into_pb())
}

/// Renames and/or moves a group. Returns the group and whether the tenant's
/// policies changed (a move).
pub(crate) async fn update(
    identity: &Identity,
    mut tx: TenantTx,
    req: pb::UpdateGroupRequest,
) -> Result<(pb::Group, Option<i64>), Status> {
    let id = parse_id("id", &req.id)?;
    let name = req
        .name
        .as_deref()
        .map(|n| display_name("name", n))
        .transpose()?;
    let new_parent = req
        .parent_id
        .as_deref()
        .map(|p| parent("parent_id", p))
        .transpose()?;
    // A move takes the tenant's revision (and its row lock) first, so the
    // cycle check below sees every move committed before it.
    let revision = match new_parent {
        Some(_) => Some(store::bump_revision(&mut tx).await?),
        None => None,
    };
    let before: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM groups WHERE id = $1 FOR UPDATE"
    )))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await
    .map_err(db_error)?;
    let before = before.ok_or_else(|| Status::not_found("group not found"))?;
    if let Some(Some(p)) = new_parent {
        if !exists(&mut tx, p).await? {
            return Err(Status::not_found("parent group not found"));
        }
        let below: bool = sqlx::query_scalar(
            "WITH RECURSIVE sub AS (
                 SELECT id FROM groups WHERE id = $1
                 UNION SELECT g.id FROM groups g JOIN sub ON g.parent_id = sub.id)
             SELECT EXISTS (SELECT 1 FROM sub WHERE id = $2)",
        )
        .bind(id)
        .bind(p)
        .fetch_one(&mut *tx)
        .await
        .map_err(db_error)?;
        if below {
            return Err(Status::invalid_argument(
                "parent_id: a group cannot move under itself or one of its subgroups",
            ));
        }
    }
    let name = name.unwrap_or_else(|| before.name.clone());
    let parent_id = new_parent.unwrap_or(before.parent_id);
    let updated: Result<Row, sqlx::Error> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE groups SET name = $2, parent_id = $3 WHERE id = $1 RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(&name)
    .bind(parent_id)
    .fetch_one(&mut *tx)
    .await;
    let row = updated.map_err(|e| refused(e, &name))?;
    audit(
        &mut tx,
        identity,
        "group.update",
        &id.to_string(),
        json!({
            "before": { "name": before.name, "parent_id": before.parent_id },
            "after": { "name": row.name, "parent_id": row.parent_id },
            "revision": revision,
        }),
    )
    .await?;
    commit(tx).await?;
    Ok((row.into_pb(), revision))
}

/// Deletes an empty group (no devices, no subgroups) and its policy.
/// Returns the tenant's (unchanged) policy revision.
pub(crate) async fn delete(
    identity: &Identity,
    mut tx: TenantTx,
    req: pb::GroupRef,
) -> Result<i64, Status> {
    let id = parse_id("id", &req.id)?;
    // The revision's row lock orders this after any device or group move
    // in flight. An empty group changes no device's effective policy, so
    // the revision stays and nothing is pushed.
    let revision = store::lock_revision(&mut tx).await?;
    if !exists(&mut tx, id).await? {
        return Err(Status::not_found("group not found"));
    }
    let (devices, subgroups): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM devices WHERE group_id = $1 AND deleted_at IS NULL),
                (SELECT count(*) FROM groups WHERE parent_id = $1)",
    )
    .bind(id)
    .fetch_one(&mut *tx)
    .await
    .map_err(db_error)?;
    if devices > 0 || subgroups > 0 {
        return Err(coded(
            Code::FailedPrecondition,
            "group_not_empty",
            format!(
                "the group has {devices} device(s) and {subgroups} subgroup(s); move them out first"
            ),
        ));
    }
    sqlx::query("DELETE FROM policies WHERE scope = 'group' AND target_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
    sqlx::query("DELETE FROM groups WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
    audit(
        &mut tx,
        identity,
        "group.delete",
        &id.to_string(),
        json!({ "revision": revision }),
    )
    .await?;
    commit(tx).await?;
    Ok(revision)
}
