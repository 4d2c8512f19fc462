//! Addresses that receive a tenant's alarm mail: the confirmation links
//! the policy service asks for (mailed here, as invitations are), following
//! one, and the list an administrator sees (see `mamori_policy::recipients`
//! for the rules).

use crate::ctx::{Acting, client_ip};
use crate::error::{ApiError, ApiResult};
use crate::state::Shared;
use axum::Json;
use axum::extract::{Query, State};
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use mamori_proto::policy::v1 as pb;
use mamori_registry::RecipientSecret;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Mails each address its confirmation link; returns the addresses.
pub async fn mail_confirmations(
    state: &Shared,
    by: &str,
    confirmations: &[pb::RecipientConfirmation],
) -> Vec<String> {
    for c in confirmations {
        let link = state.cfg.link(&format!(
            "/api/v1/notification-recipients/confirm?token={}",
            c.token
        ));
        state
            .mailer
            .send(
                &c.email,
                "Confirm that you want Mamori alarm mail",
                format!(
                    "{by} asked Mamori to send alarm e-mails of {:?} to this address.\n\nIf you want them, open this link within {} days:\n\n{link}\n\nUntil you do, nothing else is sent to you. If you did not expect this, ignore this mail.\n",
                    c.tenant_name,
                    mamori_policy::recipients::CONFIRM_DAYS
                ),
            )
            .await;
    }
    confirmations.iter().map(|c| c.email.clone()).collect()
}

#[derive(Debug, Deserialize, ToSchema, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ConfirmRequest {
    /// The code from the confirmation link.
    pub token: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Confirmed {
    pub confirmed: bool,
    pub email: String,
}

/// Confirm an address for alarm mail (the link in the confirmation mail).
#[utoipa::path(get, path = "/api/v1/notification-recipients/confirm", tag = "policies",
    params(ConfirmRequest),
    responses((status = 200, body = Confirmed), (status = 404, body = crate::error::ErrorBody)))]
pub async fn confirm_link(
    State(state): State<Shared>,
    parts: Parts,
    Query(req): Query<ConfirmRequest>,
) -> ApiResult<Json<Confirmed>> {
    confirm(&state, &parts, &req.token).await
}

/// Confirm an address for alarm mail (the same as following the link).
#[utoipa::path(post, path = "/api/v1/notification-recipients/confirm", tag = "policies",
    request_body = ConfirmRequest,
    responses((status = 200, body = Confirmed), (status = 404, body = crate::error::ErrorBody)))]
pub async fn confirm_post(
    State(state): State<Shared>,
    parts: Parts,
    Json(req): Json<ConfirmRequest>,
) -> ApiResult<Json<Confirmed>> {
    confirm(&state, &parts, &req.token).await
}

async fn confirm(state: &Shared, parts: &Parts, code: &str) -> ApiResult<Json<Confirmed>> {
    state.limits.auth(client_ip(parts))?;
    let secret = RecipientSecret::parse(code).map_err(|e| ApiError::invalid("token", e))?;
    let row: Option<(uuid::Uuid, String)> =
        sqlx::query_as("SELECT tenant_id, email FROM mamori_confirm_recipient($1)")
            .bind(secret.hash())
            .fetch_optional(state.db.pool())
            .await?;
    let (tenant, email) = row.ok_or_else(|| {
        ApiError::not_found("confirmation code (already used, or older than 7 days?)")
    })?;
    tracing::info!(tenant_id = %tenant, "alarm mail address confirmed");
    Ok(Json(Confirmed {
        confirmed: true,
        email,
    }))
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct RecipientView {
    pub email: String,
    /// `confirmed`, `pending` (a link was mailed in the last 7 days) or
    /// `expired` (it was not followed; saving a policy that names the
    /// address asks again).
    pub status: String,
    pub requested_at: DateTime<Utc>,
    pub confirmed_at: Option<DateTime<Utc>>,
}

/// Addresses outside the tenant's users that alarm mail was routed to, and
/// whether they confirmed (the tenant's verified users need not).
#[utoipa::path(get, path = "/api/v1/notification-recipients", tag = "policies", security(("bearer" = [])),
    responses((status = 200, body = [RecipientView])))]
pub async fn list(
    State(state): State<Shared>,
    acting: Acting,
) -> ApiResult<Json<Vec<RecipientView>>> {
    let mut tx = acting.begin(&state).await?;
    let rows: Vec<RecipientView> = sqlx::query_as(
        "SELECT email,
                CASE WHEN confirmed_at IS NOT NULL THEN 'confirmed'
                     WHEN requested_at > now() - make_interval(days => $1) THEN 'pending'
                     ELSE 'expired' END AS status,
                requested_at, confirmed_at
         FROM notification_recipients ORDER BY email",
    )
    .bind(mamori_policy::recipients::CONFIRM_DAYS)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Json(rows))
}
