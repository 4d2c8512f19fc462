//! The audit trail: every admin action and every read of the operation log,
//! written in the same transaction as the action itself.

use crate::ctx::{Acting, Caller};
use crate::error::ApiResult;
use mamori_tenancy::TenantTx;
use uuid::Uuid;

/// Records `action` on `target` by the caller, in the tenant of `tx`.
pub async fn record(
    tx: &mut TenantTx,
    caller: &Caller,
    action: &str,
    target: &str,
    details: serde_json::Value,
) -> ApiResult<()> {
    let tenant = tx.tenant();
    sqlx::query(
        "INSERT INTO audit_log (tenant_id, id, actor_id, actor_email, actor_role, action, target,
                                details, client_ip, request_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9::inet, $10)",
    )
    .bind(tenant.as_uuid())
    .bind(Uuid::now_v7())
    .bind(caller.claims.sub)
    .bind(&caller.claims.email)
    .bind(caller.claims.role.as_str())
    .bind(action)
    .bind(target.chars().take(200).collect::<String>())
    .bind(details.to_string())
    .bind(caller.ip.map(|ip| ip.to_string()))
    .bind(&caller.request_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Shorthand for the acting caller.
pub async fn by(
    tx: &mut TenantTx,
    acting: &Acting,
    action: &str,
    target: &str,
    details: serde_json::Value,
) -> ApiResult<()> {
    record(tx, &acting.caller, action, target, details).await
}
