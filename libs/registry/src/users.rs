//! Users: the checks every new account meets (address, password) and the
//! row that makes one, for signup, invitations and the operator's
//! `mamori user create` alike.

use crate::{Error, Result, VerificationSecret, password};
use mamori_tenancy::audit::{self, Actor};
use mamori_tenancy::{Db, TenantId};
use uuid::Uuid;

fn invalid(reason: &str) -> Error {
    Error::InvalidInput {
        field: "email",
        reason: reason.to_owned(),
    }
}

/// Lower-cases and checks an e-mail address (a pragmatic subset of RFC
/// 5321: one `@`, a dotted domain, no spaces or control characters).
pub fn normalize_email(raw: &str) -> Result<String> {
    let e = raw.trim().to_lowercase();
    if e.is_empty() {
        return Err(invalid("is required"));
    }
    if e.len() > 254 {
        return Err(invalid("must be at most 254 characters"));
    }
    if e.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid("must not contain spaces or control characters"));
    }
    let Some((local, domain)) = e.split_once('@') else {
        return Err(invalid("must look like name@example.com"));
    };
    if local.is_empty()
        || local.len() > 64
        || domain.contains('@')
        || !domain.contains('.')
        || domain.starts_with('.')
        || domain.ends_with('.')
        || domain.contains("..")
    {
        return Err(invalid("must look like name@example.com"));
    }
    Ok(e)
}

/// A new user's row.
#[derive(Debug)]
pub struct NewUser<'a> {
    pub id: Uuid,
    /// Already normalised ([`normalize_email`]).
    pub email: &'a str,
    pub password_hash: &'a str,
    pub tenant: Option<Uuid>,
    pub org: Option<Uuid>,
    /// `msp_admin`, `msp_technician`, `tenant_admin` or `auditor`.
    pub role: &'a str,
    /// The address still to be confirmed with this secret; `None`: it
    /// counts as confirmed.
    pub verify: Option<&'a VerificationSecret>,
}

/// Inserts the user; a taken address is [`Error::EmailTaken`].
pub async fn insert_user(conn: &mut sqlx::PgConnection, u: NewUser<'_>) -> Result<()> {
    let result = sqlx::query(
        "INSERT INTO users (id, email, password_hash, tenant_id, msp_org_id, role, verify_hash, email_verified_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, CASE WHEN $7 IS NULL THEN now() END)",
    )
    .bind(u.id)
    .bind(u.email)
    .bind(u.password_hash)
    .bind(u.tenant)
    .bind(u.org)
    .bind(u.role)
    .bind(u.verify.map(VerificationSecret::hash))
    .execute(conn)
    .await;
    match result {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(d)) if d.constraint() == Some("users_email_key") => {
            Err(Error::EmailTaken)
        }
        Err(e) => Err(e.into()),
    }
}

/// The roles a tenant's own users have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantRole {
    TenantAdmin,
    Auditor,
}

impl TenantRole {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "tenant_admin" => Ok(Self::TenantAdmin),
            "auditor" => Ok(Self::Auditor),
            other => Err(Error::InvalidInput {
                field: "role",
                reason: format!("{other:?}: a tenant user is tenant_admin or auditor"),
            }),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::TenantAdmin => "tenant_admin",
            Self::Auditor => "auditor",
        }
    }
}

/// Creates a user of an existing tenant (the operator's `mamori user
/// create`, for tenants made with `mamori tenant create`), audited as
/// `actor`. The address counts as confirmed: the operator vouches for it.
pub async fn create_tenant_user(
    db: &Db,
    tenant: TenantId,
    email: &str,
    password: String,
    role: TenantRole,
    actor: &Actor<'_>,
) -> Result<Uuid> {
    let email = normalize_email(email)?;
    password::check_rules("password", &password, &email)?;
    let hash = password::hash(password).await?;
    let id = Uuid::now_v7();
    let mut tx = db.begin_tenant(tenant).await?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tenants WHERE id = $1)")
        .bind(tenant.as_uuid())
        .fetch_one(&mut *tx)
        .await?;
    if !exists {
        return Err(Error::NotFound {
            kind: "tenant",
            id: tenant.to_string(),
        });
    }
    insert_user(
        &mut tx,
        NewUser {
            id,
            email: &email,
            password_hash: &hash,
            tenant: Some(tenant.as_uuid()),
            org: None,
            role: role.as_str(),
            verify: None,
        },
    )
    .await?;
    audit::record(
        &mut tx,
        actor,
        "user.create",
        &email,
        &serde_json::json!({ "user_id": id, "role": role.as_str() }),
    )
    .await?;
    tx.commit().await?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_normalised_or_refused_with_the_field_named() {
        assert_eq!(
            normalize_email("  Alice@Example.COM ").unwrap(),
            "alice@example.com"
        );
        for bad in [
            "",
            "alice",
            "a b@example.com",
            "alice@localhost",
            "@example.com",
            "a@b..c",
        ] {
            let e = normalize_email(bad).unwrap_err();
            assert!(e.to_string().starts_with("invalid email:"), "{bad}: {e}");
        }
    }
}
