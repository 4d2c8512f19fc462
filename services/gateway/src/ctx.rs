//! Who is calling and on which tenant: the request extractors every
//! authenticated handler takes. Identity comes from the verified access
//! token only; the tenant is the user's own, or for MSP users the one named
//! by `X-Mamori-Tenant`, checked against what the user may reach.

use crate::claims::{Claims, Role};
pub use crate::claims::{HandOver, IssueCode, Manage, Need, Permission, Read};
use crate::error::{ApiError, ApiResult};
use crate::state::Shared;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use mamori_tenancy::{TenantId, TenantTx};
use std::marker::PhantomData;
use std::net::{IpAddr, SocketAddr};
use uuid::Uuid;

/// The header an MSP user names the tenant being acted on with.
pub const TENANT_HEADER: &str = "x-mamori-tenant";

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub claims: Claims,
    pub ip: Option<IpAddr>,
    pub request_id: String,
}

impl Caller {
    pub fn user(&self) -> Uuid {
        self.claims.sub
    }

    pub fn role(&self) -> Role {
        self.claims.role
    }

    /// Who is calling, for the policy service (signed by its client).
    pub fn identity(&self, tenant: Option<TenantId>) -> mamori_policy::Identity {
        mamori_policy::Identity {
            tenant: tenant.map(|t| t.as_uuid()),
            org: self.claims.org,
            user: self.claims.sub,
            email: self.claims.email.clone(),
            role: self.claims.role.as_str().to_owned(),
            ip: self.ip,
            request_id: self.request_id.clone(),
            iat: chrono::Utc::now().timestamp(),
            // Filled in for each call by the policy client.
            id: Uuid::nil(),
            method: String::new(),
            body_sha256: String::new(),
        }
    }
}

/// The client's address, as the edge middleware found it (behind a
/// trusted proxy, from `X-Forwarded-For`; see `proxies`).
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

pub fn client_ip(parts: &Parts) -> Option<IpAddr> {
    parts.extensions.get::<ClientIp>().map(|c| c.0).or_else(|| {
        parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
    })
}

pub fn request_id(parts: &Parts) -> String {
    parts
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .chars()
        .take(100)
        .collect()
}

impl FromRequestParts<Shared> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> ApiResult<Self> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| {
                ApiError::unauthenticated("missing Authorization: Bearer <access token>")
            })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty() && t.len() <= 4096)
            .ok_or_else(|| {
                ApiError::unauthenticated("Authorization must be `Bearer <access token>`")
            })?;
        let claims = state
            .keys
            .verify(&state.db, token)
            .await
            .map_err(|e| ApiError::unauthenticated(e.to_string()))?;
        state.sessions.check(&state.db, &claims).await?;
        let span = tracing::Span::current();
        span.record("user_id", tracing::field::display(claims.sub));
        Ok(Self {
            claims,
            ip: client_ip(parts),
            request_id: request_id(parts),
        })
    }
}

/// An authenticated caller acting on one tenant it may reach, with the
/// permission `N` there: a handler that takes `Acting<Manage>` cannot run
/// for a caller whose role lacks it (403, before the tenant is looked up
/// or the body read).
#[derive(Debug, Clone)]
pub struct Acting<N: Need = Read> {
    pub caller: Caller,
    pub tenant: TenantId,
    need: PhantomData<N>,
}

impl<N: Need> Acting<N> {
    /// Whether the caller also holds `p` (for what a page shows, not for
    /// what a handler may do: that is the extractor's type).
    pub fn may(&self, p: Permission) -> bool {
        self.caller.role().may(p)
    }

    /// Who is calling on which tenant, for the policy service.
    pub fn identity(&self) -> mamori_policy::Identity {
        self.caller.identity(Some(self.tenant))
    }

    /// A transaction on the tenant, with the caller's organisation and user
    /// set for the row-level policies.
    pub async fn begin(&self, state: &Shared) -> ApiResult<TenantTx> {
        let mut tx = state.db.begin_tenant(self.tenant).await?;
        set_identity(&mut tx, &self.caller.claims).await?;
        Ok(tx)
    }
}

/// An MSP administrator, with the organisation it runs.
#[derive(Debug, Clone)]
pub struct OrgAdmin {
    pub caller: Caller,
    pub org: Uuid,
}

impl FromRequestParts<Shared> for OrgAdmin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> ApiResult<Self> {
        let caller = Caller::from_request_parts(parts, state).await?;
        refuse_without(&caller, Permission::ManageOrg)?;
        let org = caller
            .claims
            .org
            .ok_or_else(|| ApiError::forbidden("only an MSP administrator may do this"))?;
        Ok(Self { caller, org })
    }
}

fn refuse_without(caller: &Caller, p: Permission) -> ApiResult<()> {
    if caller.role().may(p) {
        return Ok(());
    }
    Err(ApiError::forbidden(format!(
        "the {} role may not do this (it takes the {} permission)",
        caller.role().as_str(),
        p.as_str()
    )))
}

/// Names the organisation and user of a transaction for the policies.
pub async fn set_identity(tx: &mut TenantTx, claims: &Claims) -> ApiResult<()> {
    Ok(tx.set_actor(claims.org, Some(claims.sub)).await?)
}

impl<N: Need> FromRequestParts<Shared> for Acting<N> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> ApiResult<Self> {
        let caller = Caller::from_request_parts(parts, state).await?;
        refuse_without(&caller, N::PERMISSION)?;
        let named = match parts.headers.get(TENANT_HEADER) {
            None => None,
            Some(v) => Some(
                v.to_str()
                    .ok()
                    .and_then(|s| Uuid::parse_str(s.trim()).ok())
                    .ok_or_else(|| {
                        ApiError::bad_request("X-Mamori-Tenant must be a tenant id (UUID)")
                    })?,
            ),
        };
        let tenant = match (caller.claims.tid, caller.claims.org) {
            (Some(own), None) => {
                if named.is_some_and(|n| n != own) {
                    return Err(ApiError::not_found("tenant"));
                }
                TenantId::from_uuid(own)
            }
            (None, Some(org)) => {
                let wanted = named.ok_or_else(|| {
                    ApiError::bad_request(
                        "an MSP user must name the tenant to act on in the X-Mamori-Tenant header",
                    )
                })?;
                let wanted = TenantId::from_uuid(wanted);
                if !msp_reaches(state, &caller.claims, org, wanted).await? {
                    return Err(ApiError::not_found("tenant"));
                }
                wanted
            }
            _ => {
                return Err(ApiError::unauthenticated(
                    "access token has no tenant or organisation",
                ));
            }
        };
        state.limits.tenant(tenant).await?;
        tracing::Span::current().record("tenant_id", tracing::field::display(tenant));
        Ok(Self {
            caller,
            tenant,
            need: PhantomData,
        })
    }
}

/// Whether an MSP user may act on `tenant`: the organisation runs it, and a
/// technician has it on their access list.
async fn msp_reaches(
    state: &Shared,
    claims: &Claims,
    org: Uuid,
    tenant: TenantId,
) -> ApiResult<bool> {
    let mut tx = state.db.begin_tenant(tenant).await?;
    set_identity(&mut tx, claims).await?;
    let reachable: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM tenants t WHERE t.id = $1 AND t.msp_org_id = $2)
            AND ($3 OR EXISTS (SELECT 1 FROM msp_tenant_access a
                               WHERE a.msp_org_id = $2 AND a.user_id = $4 AND a.tenant_id = $1))",
    )
    .bind(tenant.as_uuid())
    .bind(org)
    .bind(claims.role == Role::MspAdmin)
    .bind(claims.sub)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(reachable)
}
