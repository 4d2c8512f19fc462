//! The audit trail: every admin action and every read of the operation log
//! is written with who did it, in the same transaction as the action.

use crate::{Result, TenantTx};
use std::net::IpAddr;
use uuid::Uuid;

/// Who acted: a user from a verified credential, or the operator at the
/// command line (no user; see [`Actor::operator`]).
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    pub user: Option<Uuid>,
    pub email: &'a str,
    pub role: &'a str,
    pub ip: Option<IpAddr>,
    pub request_id: &'a str,
}

impl<'a> Actor<'a> {
    /// The operator running `mamori` on a server, named by `who` (the OS
    /// user and host, say): role `operator`, no user id.
    pub fn operator(who: &'a str) -> Self {
        Actor {
            user: None,
            email: who,
            role: "operator",
            ip: None,
            request_id: "",
        }
    }
}

/// Records `action` on `target` by `actor`, in the tenant of `tx`.
pub async fn record(
    tx: &mut TenantTx,
    actor: &Actor<'_>,
    action: &str,
    target: &str,
    details: &serde_json::Value,
) -> Result<()> {
    let tenant = tx.tenant();
    sqlx::query(
        "INSERT INTO audit_log (tenant_id, id, actor_id, actor_email, actor_role, action, target,
                                details, client_ip, request_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9::inet, $10)",
    )
    .bind(tenant.as_uuid())
    .bind(Uuid::now_v7())
    .bind(actor.user)
    .bind(actor.email)
    .bind(actor.role)
    .bind(action)
    .bind(target.chars().take(200).collect::<String>())
    .bind(details.to_string())
    .bind(actor.ip.map(|ip| ip.to_string()))
    .bind(actor.request_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
