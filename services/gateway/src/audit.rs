//! The audit trail: every admin action and every read of the operation log,
//! written in the same transaction as the action itself.

use crate::ctx::{Acting, Caller, Need};
use crate::error::ApiResult;
use mamori_tenancy::TenantTx;

/// The caller as the audit trail names it.
pub fn actor(caller: &Caller) -> mamori_tenancy::audit::Actor<'_> {
    let claims = &caller.claims;
    mamori_tenancy::audit::Actor {
        user: Some(claims.sub),
        email: &claims.email,
        role: claims.role.as_str(),
        ip: caller.ip,
        request_id: &caller.request_id,
    }
}

/// Records `action` on `target` by the caller, in the tenant of `tx`.
pub async fn record(
    tx: &mut TenantTx,
    caller: &Caller,
    action: &str,
    target: &str,
    details: serde_json::Value,
) -> ApiResult<()> {
    mamori_tenancy::audit::record(tx, &actor(caller), action, target, &details).await?;
    Ok(())
}

/// Shorthand for the acting caller.
pub async fn by<N: Need>(
    tx: &mut TenantTx,
    acting: &Acting<N>,
    action: &str,
    target: &str,
    details: serde_json::Value,
) -> ApiResult<()> {
    record(tx, &acting.caller, action, target, details).await
}
