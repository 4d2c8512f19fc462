//! Who may receive a tenant's alarm mail. A policy's notification routes
//! name addresses; alarm mail carries text an agent chose (paths, window
//! titles), so a free tenant must not be able to aim it at strangers. Only
//! a user whose own address is verified may route mail; an address that is
//! not a verified user of the tenant (or the caller's own) is sent a
//! confirmation link first, by the gateway, and receives nothing else
//! until it follows it (the alerting service checks at every alarm). At
//! most [`MAX_PENDING`] addresses of a tenant await confirmation at once,
//! and each is asked once a week at most.

use crate::api::{coded, db_error};
use crate::document::PolicyDocument;
use crate::identity::Identity;
use mamori_proto::policy::v1 as pb;
use mamori_registry::RecipientSecret;
use mamori_tenancy::TenantTx;
use std::collections::BTreeSet;
use tonic::Status;

/// Addresses of one tenant awaiting confirmation at once.
pub const MAX_PENDING: i64 = 50;
/// How long a confirmation link works (and how soon an address that did
/// not follow it may be asked again).
pub const CONFIRM_DAYS: i32 = 7;

/// An address as stored and compared (the alerting service uses it too).
pub fn normalise(email: &str) -> String {
    email.trim().to_lowercase()
}

/// Registers the addresses `document` routes mail to, in the transaction
/// that stores it; returns the confirmations to mail.
pub(crate) async fn register(
    tx: &mut TenantTx,
    identity: &Identity,
    document: &PolicyDocument,
) -> Result<Vec<pb::RecipientConfirmation>, Status> {
    let wanted: BTreeSet<String> = document
        .notifications
        .iter()
        .flat_map(|n| &n.routes)
        .flat_map(|r| &r.email)
        .map(|e| normalise(e))
        .collect();
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let caller: Option<(String, bool)> = sqlx::query_as(
        "SELECT email, email_verified_at IS NOT NULL FROM users WHERE id = $1 AND disabled_at IS NULL",
    )
    .bind(identity.user)
    .fetch_optional(&mut **tx)
    .await
    .map_err(db_error)?;
    let Some((own, true)) = caller.map(|(e, v)| (normalise(&e), v)) else {
        return Err(Status::permission_denied(
            "notifications: confirm your own e-mail address (see the link we sent) before routing alarm mail to addresses",
        ));
    };
    let wanted: Vec<String> = wanted.into_iter().collect();
    let tenant = tx.tenant().as_uuid();
    // The caller's own address needs no link: a user of the tenant is one
    // of its verified users; an MSP user is not, so it is recorded as
    // confirmed.
    if identity.org.is_some() && wanted.contains(&own) {
        sqlx::query(
            "INSERT INTO notification_recipients (tenant_id, email, requested_by, confirmed_at)
             VALUES ($1, $2, $3, now())
             ON CONFLICT (tenant_id, email) DO UPDATE
             SET confirmed_at = coalesce(notification_recipients.confirmed_at, now()), token_hash = NULL",
        )
        .bind(tenant)
        .bind(&own)
        .bind(identity.user)
        .execute(&mut **tx)
        .await
        .map_err(db_error)?;
    }
    // Verified users of the tenant, confirmed addresses and links still
    // waiting: no new link.
    let settled: Vec<String> = sqlx::query_scalar(
        "SELECT e FROM unnest($1::text[]) AS e
         WHERE EXISTS (SELECT 1 FROM users u WHERE u.tenant_id = $2 AND u.email = e
                                                AND u.email_verified_at IS NOT NULL
                                                AND u.disabled_at IS NULL)
            OR EXISTS (SELECT 1 FROM notification_recipients r WHERE r.email = e
                          AND (r.confirmed_at IS NOT NULL
                               OR r.requested_at > now() - make_interval(days => $3)))",
    )
    .bind(&wanted)
    .bind(tenant)
    .bind(CONFIRM_DAYS)
    .fetch_all(&mut **tx)
    .await
    .map_err(db_error)?;
    let asking: Vec<&String> = wanted.iter().filter(|e| !settled.contains(e)).collect();
    if asking.is_empty() {
        return Ok(Vec::new());
    }
    let pending: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM notification_recipients
         WHERE confirmed_at IS NULL AND requested_at > now() - make_interval(days => $1)",
    )
    .bind(CONFIRM_DAYS)
    .fetch_one(&mut **tx)
    .await
    .map_err(db_error)?;
    if pending + asking.len() as i64 > MAX_PENDING {
        return Err(coded(
            tonic::Code::FailedPrecondition,
            "too_many_unconfirmed",
            format!(
                "notifications: {} new addresses would await confirmation besides {pending}; at most {MAX_PENDING} may at once (each must follow the link mailed to it)",
                asking.len()
            ),
        ));
    }
    let tenant_name: String = sqlx::query_scalar("SELECT name FROM tenants WHERE id = $1")
        .bind(tenant)
        .fetch_one(&mut **tx)
        .await
        .map_err(db_error)?;
    let mut out = Vec::with_capacity(asking.len());
    for email in asking {
        let secret = RecipientSecret::generate();
        sqlx::query(
            "INSERT INTO notification_recipients (tenant_id, email, token_hash, requested_by, requested_at)
             VALUES ($1, $2, $3, $4, now())
             ON CONFLICT (tenant_id, email) DO UPDATE
             SET token_hash = excluded.token_hash, requested_by = excluded.requested_by,
                 requested_at = now()
             WHERE notification_recipients.confirmed_at IS NULL",
        )
        .bind(tenant)
        .bind(email)
        .bind(secret.hash())
        .bind(identity.user)
        .execute(&mut **tx)
        .await
        .map_err(db_error)?;
        out.push(pb::RecipientConfirmation {
            email: email.clone(),
            token: secret.expose().to_owned(),
            tenant_name: tenant_name.clone(),
        });
    }
    tracing::info!(tenant_id = %tenant, addresses = out.len(), "alarm mail addresses asked to confirm");
    Ok(out)
}
