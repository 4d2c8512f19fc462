//! Enrollment tokens: created per tenant with an optional expiry and use
//! limit, revocable, stored only as a hash.

use crate::{EnrollmentToken, Error, Result, get_tenant};
use chrono::{DateTime, Utc};
use mamori_tenancy::{Db, TenantId, TenantTx, TokenId};
use std::time::Duration;
use uuid::Uuid;

/// The longest expiry a token may be given.
const MAX_EXPIRY: Duration = Duration::from_secs(400 * 24 * 3600);

/// A freshly created token: the secret is shown to its creator once.
#[derive(Debug)]
pub struct CreatedToken {
    pub id: TokenId,
    pub token: EnrollmentToken,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct TokenInfo {
    pub id: TokenId,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub max_uses: Option<i32>,
    pub uses: i32,
    pub revoked_at: Option<DateTime<Utc>>,
}

pub async fn create_token(
    db: &Db,
    tenant: TenantId,
    expires_in: Option<Duration>,
    max_uses: Option<u32>,
) -> Result<CreatedToken> {
    // A token for a tenant that does not exist is "not found", not a
    // foreign-key error.
    get_tenant(db, tenant).await?;
    let mut tx = db.begin_tenant(tenant).await?;
    let created = create_token_in(&mut tx, expires_in, max_uses, None).await?;
    tx.commit().await?;
    Ok(created)
}

/// Creates a token for the tenant of `tx`, optionally placing the devices
/// it enrolls in a group of that tenant.
pub async fn create_token_in(
    tx: &mut TenantTx,
    expires_in: Option<Duration>,
    max_uses: Option<u32>,
    group: Option<Uuid>,
) -> Result<CreatedToken> {
    if let Some(d) = expires_in
        && (d.is_zero() || d > MAX_EXPIRY)
    {
        return Err(Error::InvalidInput {
            field: "expires",
            reason: "must be more than 0 and at most 400 days".into(),
        });
    }
    let max_uses = match max_uses {
        Some(0) => {
            return Err(Error::InvalidInput {
                field: "max uses",
                reason: "must be at least 1".into(),
            });
        }
        Some(n) => Some(i32::try_from(n).map_err(|_| Error::InvalidInput {
            field: "max uses",
            reason: "is too large".into(),
        })?),
        None => None,
    };
    if let Some(g) = group {
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM groups WHERE id = $1)")
            .bind(g)
            .fetch_one(&mut **tx)
            .await?;
        if !exists {
            return Err(Error::NotFound {
                kind: "group",
                id: g.to_string(),
            });
        }
    }
    let id = TokenId::new();
    let token = EnrollmentToken::generate();
    let expires_at = expires_in.map(|d| Utc::now() + d);
    sqlx::query(
        "INSERT INTO enrollment_tokens (tenant_id, id, token_hash, expires_at, max_uses, group_id)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(tx.tenant().as_uuid())
    .bind(id.as_uuid())
    .bind(token.hash())
    .bind(expires_at)
    .bind(max_uses)
    .bind(group)
    .execute(&mut **tx)
    .await?;
    Ok(CreatedToken {
        id,
        token,
        expires_at,
    })
}

pub async fn list_tokens(db: &Db, tenant: TenantId) -> Result<Vec<TokenInfo>> {
    let mut tx = db.begin_tenant(tenant).await?;
    let rows: Vec<TokenRow> = sqlx::query_as(
        "SELECT id, created_at, expires_at, max_uses, uses, revoked_at
         FROM enrollment_tokens ORDER BY created_at",
    )
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| TokenInfo {
            id: TokenId::from_uuid(r.id),
            created_at: r.created_at,
            expires_at: r.expires_at,
            max_uses: r.max_uses,
            uses: r.uses,
            revoked_at: r.revoked_at,
        })
        .collect())
}

#[derive(sqlx::FromRow)]
struct TokenRow {
    id: uuid::Uuid,
    created_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    max_uses: Option<i32>,
    uses: i32,
    revoked_at: Option<DateTime<Utc>>,
}
