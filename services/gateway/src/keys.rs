//! JWT signing keys: Ed25519, named by `kid`, kept in PostgreSQL with the
//! private half encrypted (AES-256-GCM, the kid as associated data) under the
//! key-encryption key that only gateway processes hold.
//!
//! The newest unretired key signs; every unretired key verifies, so a
//! rotation logs nobody out. Retiring a key makes every token it signed
//! invalid at once. Replicas re-read the keys periodically and whenever a
//! token names a kid they have not seen.

use crate::claims::Claims;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use mamori_tenancy::Db;
use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// Issuer and audience of Mamori access tokens.
pub const ISSUER: &str = "mamori";
pub const AUDIENCE: &str = "mamori-api";

/// An unknown kid triggers a re-read at most this often.
const MISS_RELOAD_EVERY: Duration = Duration::from_secs(2);

/// Why a presented access token is refused. The text goes to the client.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("access token is malformed")]
    Malformed,
    #[error("access token names an unknown signing key")]
    UnknownKey,
    #[error("access token was signed by a retired key: log in again")]
    RetiredKey,
    #[error("access token has expired")]
    Expired,
    #[error("access token is not valid yet")]
    NotYetValid,
    #[error("access token signature or claims are invalid")]
    Invalid,
}

pub use mamori_keywrap::Kek;
use mamori_registry::signing_keys::{StoredKey as KeyRow, add_key, stored as fetch};

/// Opens a wrapped Ed25519 seed.
fn open_seed(kek: &Kek, kid: &str, wrapped: &[u8]) -> anyhow::Result<Zeroizing<[u8; 32]>> {
    let plain = kek.open(kid, wrapped)?;
    if plain.len() != 32 {
        anyhow::bail!("signing key {kid} has the wrong length");
    }
    let mut seed = Zeroizing::new([0u8; 32]);
    seed.copy_from_slice(&plain);
    Ok(seed)
}

struct Loaded {
    signer: Option<(String, EncodingKey)>,
    verifiers: HashMap<String, (DecodingKey, bool)>,
    jwks: serde_json::Value,
}

/// The signing and verifying keys of this gateway process.
pub struct KeyRing {
    kek: std::sync::Arc<Kek>,
    state: RwLock<Loaded>,
    last_miss_reload: std::sync::Mutex<Option<Instant>>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing").finish_non_exhaustive()
    }
}

impl KeyRing {
    /// Loads the keys, creating the first one when there is none (under an
    /// advisory lock, so that replicas starting together agree on one).
    pub async fn open(db: &Db, kek: std::sync::Arc<Kek>) -> anyhow::Result<Self> {
        let mut rows = fetch(db.pool()).await?;
        if !rows.iter().any(|r| r.retired_at.is_none()) {
            let mut tx = db.pool().begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock(7347061)")
                .execute(&mut *tx)
                .await?;
            let again = fetch(&mut *tx).await?;
            if !again.iter().any(|r| r.retired_at.is_none()) {
                let kid = add_key(db, &kek).await?;
                tracing::info!(kid, "created the first JWT signing key");
            }
            tx.commit().await?;
            rows = fetch(db.pool()).await?;
        }
        let loaded = build(&kek, rows)?;
        Ok(Self {
            kek,
            state: RwLock::new(loaded),
            last_miss_reload: std::sync::Mutex::new(None),
        })
    }

    /// Whether this caller may re-read the keys for an unknown kid: at most
    /// one re-read per [`MISS_RELOAD_EVERY`], however many requests name
    /// unknown kids at once (they are cheap to forge).
    fn claim_miss_reload(&self) -> bool {
        let mut last = self.last_miss_reload.lock().expect("key ring lock");
        if last.is_some_and(|at| at.elapsed() < MISS_RELOAD_EVERY) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    /// Re-reads the keys from the database.
    pub async fn reload(&self, db: &Db) -> anyhow::Result<()> {
        let loaded = build(&self.kek, fetch(db.pool()).await?)?;
        *self.state.write().expect("key ring lock") = loaded;
        Ok(())
    }

    pub fn jwks(&self) -> serde_json::Value {
        self.state.read().expect("key ring lock").jwks.clone()
    }

    pub fn sign(&self, claims: &Claims) -> anyhow::Result<String> {
        let state = self.state.read().expect("key ring lock");
        let (kid, key) = state
            .signer
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("no unretired signing key: run `mamori keys rotate`"))?;
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.clone());
        Ok(jsonwebtoken::encode(&header, claims, key)?)
    }

    /// Verifies a token: algorithm, key, signature, issuer, audience and
    /// time claims. Re-reads the keys once when the kid is unknown.
    pub async fn verify(&self, db: &Db, token: &str) -> Result<Claims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::Invalid);
        }
        let kid = header.kid.ok_or(TokenError::UnknownKey)?;
        if kid.len() > 64 {
            return Err(TokenError::Malformed);
        }
        let known = self
            .state
            .read()
            .expect("key ring lock")
            .verifiers
            .contains_key(&kid);
        if !known
            && self.claim_miss_reload()
            && let Err(e) = self.reload(db).await
        {
            tracing::warn!(error = %e, "cannot re-read signing keys");
        }
        let state = self.state.read().expect("key ring lock");
        let (key, retired) = state.verifiers.get(&kid).ok_or(TokenError::UnknownKey)?;
        if *retired {
            return Err(TokenError::RetiredKey);
        }
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "sub", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = 5;
        jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                jsonwebtoken::errors::ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                jsonwebtoken::errors::ErrorKind::Base64(_)
                | jsonwebtoken::errors::ErrorKind::Json(_)
                | jsonwebtoken::errors::ErrorKind::Utf8(_) => TokenError::Malformed,
                _ => TokenError::Invalid,
            })
    }
}

fn build(kek: &Kek, rows: Vec<KeyRow>) -> anyhow::Result<Loaded> {
    let mut verifiers = HashMap::new();
    let mut jwks = Vec::new();
    let mut signer: Option<(DateTime<Utc>, String, EncodingKey)> = None;
    for row in rows {
        let retired = row.retired_at.is_some();
        verifiers.insert(
            row.kid.clone(),
            (DecodingKey::from_ed_der(&row.public_key), retired),
        );
        if retired {
            continue;
        }
        jwks.push(serde_json::json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "alg": "EdDSA",
            "use": "sig",
            "kid": row.kid,
            "x": URL_SAFE_NO_PAD.encode(&row.public_key),
        }));
        if signer
            .as_ref()
            .is_none_or(|(at, _, _)| row.created_at > *at)
        {
            let seed = open_seed(kek, &row.kid, &row.private_key_wrapped)?;
            let der = SigningKey::from_bytes(&seed)
                .to_pkcs8_der()
                .map_err(|e| anyhow::anyhow!("signing key {}: {e}", row.kid))?;
            signer = Some((
                row.created_at,
                row.kid.clone(),
                EncodingKey::from_ed_der(der.as_bytes()),
            ));
        }
    }
    Ok(Loaded {
        signer: signer.map(|(_, kid, key)| (kid, key)),
        verifiers,
        jwks: serde_json::json!({ "keys": jwks }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapped_keys_open_only_with_their_kek_and_kid() {
        let kek = Kek::from_base64(&Kek::generate_base64()).unwrap();
        let other = Kek::from_base64(&Kek::generate_base64()).unwrap();
        let seed = [7u8; 32];
        let wrapped = kek.seal("k1", &seed);
        assert_eq!(*open_seed(&kek, "k1", &wrapped).unwrap(), seed);
        assert!(open_seed(&kek, "k2", &wrapped).is_err(), "kid is bound");
        assert!(open_seed(&other, "k1", &wrapped).is_err(), "kek is needed");
        assert!(!wrapped.windows(32).any(|w| w == seed), "stored encrypted");
    }
}
