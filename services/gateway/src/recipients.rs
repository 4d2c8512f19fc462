//! Addresses that receive a tenant's alarm mail: the confirmation links
//! the policy service asks for (mailed here, as invitations are), following
//! one, and the list an administrator sees (see `mamori_policy::recipients`
//! for the rules).

use crate::ctx::{Acting, client_ip};
use crate::error::{ApiError, ApiResult};
use crate::state::Shared;
use axum::Json;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
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
#[into_params(parameter_in = Query)]
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

/// The page the confirmation link opens: it confirms nothing by itself (mail
/// scanners open links), it asks for a click that POSTs the code.
#[utoipa::path(get, path = "/api/v1/notification-recipients/confirm", tag = "policies",
    params(ConfirmRequest),
    responses((status = 200, content_type = "text/html", description = "a page with a Confirm button"),
              (status = 422, body = crate::error::ErrorBody)))]
pub async fn confirm_page(Query(req): Query<ConfirmRequest>) -> ApiResult<Response> {
    let secret = RecipientSecret::parse(&req.token).map_err(|e| ApiError::invalid("token", e))?;
    // The code is base64url after a fixed prefix: nothing to escape.
    let body = format!(
        "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><title>Mamori alarm mail</title>\
         <p>Do you want to receive Mamori alarm e-mail at this address?</p>\
         <form method=\"post\" action=\"/api/v1/notification-recipients/confirm?token={}\">\
         <button type=\"submit\">Yes, send me alarm mail</button></form>\
         <p>If you did not expect this, close this page: nothing will be sent to you.</p></html>",
        secret.expose()
    );
    html(StatusCode::OK, body)
}

fn html(status: StatusCode, body: String) -> ApiResult<Response> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .header(
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; form-action 'self'; frame-ancestors 'none'",
        )
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::from(body))
        .map_err(|e| ApiError::internal("confirmation page", e))
}

/// Confirm an address for alarm mail: the code in the query (the page's
/// button, answered with a page) or in a JSON body (answered in JSON).
#[utoipa::path(post, path = "/api/v1/notification-recipients/confirm", tag = "policies",
    params(("token" = Option<String>, Query, description = "the code, when it is not in the body")),
    request_body(content = Option<ConfirmRequest>, description = "the code, when it is not in the query"),
    responses((status = 200, body = Confirmed), (status = 404, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)))]
pub async fn confirm(
    State(state): State<Shared>,
    parts: Parts,
    Query(query): Query<ConfirmQuery>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    state.limits.auth(client_ip(&parts)).await?;
    let (code, from_page) = match query.token {
        Some(t) => (t, true),
        None => {
            let req: ConfirmRequest = serde_json::from_slice(&body).map_err(|e| {
                ApiError::invalid("token", format!("send {{\"token\": \"mmn_…\"}}: {e}"))
            })?;
            (req.token, false)
        }
    };
    let secret = RecipientSecret::parse(&code).map_err(|e| ApiError::invalid("token", e))?;
    let row: Option<(uuid::Uuid, String)> =
        sqlx::query_as("SELECT tenant_id, email FROM mamori_confirm_recipient($1)")
            .bind(secret.hash())
            .fetch_optional(state.db.pool())
            .await?;
    let Some((tenant, email)) = row else {
        if from_page {
            return html(
                StatusCode::NOT_FOUND,
                "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><title>Mamori alarm mail</title>\
                 <p>This link was already used or is older than 7 days.</p></html>"
                    .into(),
            );
        }
        return Err(ApiError::not_found(
            "confirmation code (already used, or older than 7 days?)",
        ));
    };
    tracing::info!(tenant_id = %tenant, "alarm mail address confirmed");
    if from_page {
        return html(
            StatusCode::OK,
            "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><title>Mamori alarm mail</title>\
             <p>Confirmed: this address now receives Mamori alarm mail.</p></html>"
                .into(),
        );
    }
    Ok(Json(Confirmed {
        confirmed: true,
        email,
    })
    .into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ConfirmQuery {
    pub token: Option<String>,
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
#[utoipa::path(get, path = "/api/v1/notification-recipients", tag = "policies", security(("bearer" = ["read_tenant"])),
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
