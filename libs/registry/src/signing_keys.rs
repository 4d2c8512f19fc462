//! The keys that sign access tokens: Ed25519, the private half sealed with
//! the operator's key-encryption key; the newest unretired key signs, all
//! unretired keys verify. The gateways load them (`KeyRing`); the operator
//! adds and retires them (`mamori keys`).

use crate::Result;
use chrono::{DateTime, Utc};
use ed25519_dalek::SigningKey;
use mamori_keywrap::Kek;
use mamori_tenancy::Db;
use rand::RngCore;
use zeroize::Zeroizing;

/// A key as stored (the private half sealed; not shown by `Debug`).
#[derive(sqlx::FromRow)]
pub struct StoredKey {
    pub kid: String,
    pub public_key: Vec<u8>,
    pub private_key_wrapped: Vec<u8>,
    pub created_at: DateTime<Utc>,
    pub retired_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

/// A key as listed by `mamori keys list`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyInfo {
    pub kid: String,
    pub created_at: DateTime<Utc>,
    pub retired_at: Option<DateTime<Utc>>,
    pub signing: bool,
}

/// Every key, retired ones too.
pub async fn stored<'e>(conn: impl sqlx::PgExecutor<'e>) -> sqlx::Result<Vec<StoredKey>> {
    sqlx::query_as(
        "SELECT kid, public_key, private_key_wrapped, created_at, retired_at FROM mamori_signing_keys()",
    )
    .fetch_all(conn)
    .await
}

/// Adds a fresh key, which becomes the signing key. Returns its kid.
pub async fn add_key(db: &Db, kek: &Kek) -> Result<String> {
    let mut seed = Zeroizing::new([0u8; 32]);
    rand::rng().fill_bytes(seed.as_mut());
    import_key(db, kek, &seed).await
}

/// Adds the Ed25519 key with this 32-byte seed (a key generated elsewhere,
/// e.g. kept in an HSM export), which becomes the signing key.
pub async fn import_key(db: &Db, kek: &Kek, seed: &[u8; 32]) -> Result<String> {
    let mut suffix = [0u8; 4];
    rand::rng().fill_bytes(&mut suffix);
    let kid = format!("{}-{}", Utc::now().format("%Y%m%d"), hex::encode(suffix));
    let public = SigningKey::from_bytes(seed).verifying_key().to_bytes();
    sqlx::query("SELECT mamori_add_signing_key($1, $2, $3)")
        .bind(&kid)
        .bind(public.as_slice())
        .bind(kek.seal(&kid, seed))
        .execute(db.pool())
        .await?;
    Ok(kid)
}

/// Retires a key: every token it signed stops working. Returns false when
/// there is no such unretired key.
pub async fn retire_key(db: &Db, kid: &str) -> Result<bool> {
    let retired: Option<bool> = sqlx::query_scalar("SELECT mamori_retire_signing_key($1)")
        .bind(kid)
        .fetch_one(db.pool())
        .await?;
    Ok(retired.unwrap_or(false))
}

pub async fn list_keys(db: &Db) -> Result<Vec<KeyInfo>> {
    let rows = stored(db.pool()).await?;
    let signing = rows
        .iter()
        .filter(|r| r.retired_at.is_none())
        .max_by_key(|r| r.created_at)
        .map(|r| r.kid.clone());
    Ok(rows
        .into_iter()
        .map(|r| KeyInfo {
            signing: Some(&r.kid) == signing.as_ref(),
            kid: r.kid,
            created_at: r.created_at,
            retired_at: r.retired_at,
        })
        .collect())
}
