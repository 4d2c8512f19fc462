//! Groups over REST: the tenant's offices and departments, a tree devices
//! belong to and policies attach to. The policy service owns them; these
//! handlers call it as the verified caller.

use crate::ctx::{Acting, Manage};
use crate::error::{ApiError, ApiResult};
use crate::policies::{time, uuid};
use crate::state::Shared;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use mamori_proto::policy::v1 as pb;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Debug, Serialize, ToSchema)]
pub struct GroupView {
    pub id: Uuid,
    pub parent_id: Option<Uuid>,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

impl TryFrom<pb::Group> for GroupView {
    type Error = ApiError;
    fn try_from(g: pb::Group) -> ApiResult<Self> {
        Ok(GroupView {
            id: uuid(&g.id)?,
            parent_id: if g.parent_id.is_empty() {
                None
            } else {
                Some(uuid(&g.parent_id)?)
            },
            name: g.name,
            created_at: time(g.created_at)?,
        })
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGroup {
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    pub parent_id: Option<Uuid>,
}

/// Offices and departments (a tree).
#[utoipa::path(get, path = "/api/v1/groups", tag = "devices", security(("bearer" = ["read_tenant"])),
    responses((status = 200, body = [GroupView])))]
pub async fn list(State(state): State<Shared>, acting: Acting) -> ApiResult<Json<Vec<GroupView>>> {
    let req = state
        .policy
        .request(&acting.identity(), "ListGroups", pb::ListGroupsRequest {});
    let list = state.policy.api().list_groups(req).await?.into_inner();
    Ok(Json(
        list.groups
            .into_iter()
            .map(GroupView::try_from)
            .collect::<ApiResult<_>>()?,
    ))
}

/// Create an office or department.
#[utoipa::path(post, path = "/api/v1/groups", tag = "devices", security(("bearer" = ["manage_tenant"])),
    request_body = CreateGroup,
    responses((status = 201, body = GroupView), (status = 409, body = crate::error::ErrorBody)))]
pub async fn create(
    State(state): State<Shared>,
    acting: Acting<Manage>,
    Json(body): Json<CreateGroup>,
) -> ApiResult<(StatusCode, Json<GroupView>)> {
    let req = state.policy.request(
        &acting.identity(),
        "CreateGroup",
        pb::CreateGroupRequest {
            name: body.name,
            parent_id: body.parent_id.map(|p| p.to_string()).unwrap_or_default(),
        },
    );
    let group = state.policy.api().create_group(req).await?.into_inner();
    Ok((StatusCode::CREATED, Json(group.try_into()?)))
}

/// Absent, null and a value are three different things in a PATCH.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<Uuid>>, D::Error> {
    Option::<Uuid>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateGroup {
    /// A new name.
    #[schema(min_length = 1, max_length = 200)]
    pub name: Option<String>,
    /// A new parent group; null makes the group top-level. Left out, the
    /// group stays where it is.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Uuid>)]
    pub parent_id: Option<Option<Uuid>>,
}

/// Rename or move a group. A move changes the effective policy of every
/// device below it; a group never moves under itself or its subgroups.
#[utoipa::path(patch, path = "/api/v1/groups/{id}", tag = "devices", security(("bearer" = ["manage_tenant"])),
    params(("id" = Uuid, Path)), request_body = UpdateGroup,
    responses((status = 200, body = GroupView), (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub async fn update(
    State(state): State<Shared>,
    acting: Acting<Manage>,
    Path(id): Path<Uuid>,
    Json(body): Json<UpdateGroup>,
) -> ApiResult<Json<GroupView>> {
    let req = state.policy.request(
        &acting.identity(),
        "UpdateGroup",
        pb::UpdateGroupRequest {
            id: id.to_string(),
            name: body.name,
            parent_id: body
                .parent_id
                .map(|p| p.map(|p| p.to_string()).unwrap_or_default()),
        },
    );
    let group = state.policy.api().update_group(req).await?.into_inner();
    Ok(Json(group.try_into()?))
}

/// Delete an empty group (no devices, no subgroups) and its policy.
#[utoipa::path(delete, path = "/api/v1/groups/{id}", tag = "devices", security(("bearer" = ["manage_tenant"])),
    params(("id" = Uuid, Path)),
    responses((status = 204, description = "deleted"), (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody)))]
pub async fn delete(
    State(state): State<Shared>,
    acting: Acting<Manage>,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    let req = state.policy.request(
        &acting.identity(),
        "DeleteGroup",
        pb::GroupRef { id: id.to_string() },
    );
    state.policy.api().delete_group(req).await?;
    Ok(StatusCode::NO_CONTENT)
}
