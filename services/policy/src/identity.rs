//! The caller's identity on the internal API. The gateway verifies the
//! user's access token (and, for MSP users, that the named tenant is one
//! they may reach), then sends who is acting on which tenant in the
//! `x-mamori-identity` metadata, signed with HMAC-SHA256 under a key both
//! derive from the key-encryption key. The policy service takes the tenant
//! from this identity only, and refuses one that is unsigned, forged,
//! malformed or older than [`MAX_AGE_S`].

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use mamori_keywrap::Kek;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::net::IpAddr;
use uuid::Uuid;
use zeroize::Zeroizing;

/// The metadata key the signed identity travels in.
pub const METADATA: &str = "x-mamori-identity";
/// The metadata key of the caller's W3C trace context.
pub const TRACEPARENT: &str = "traceparent";
/// How long a signed identity is accepted after it was made (one call;
/// the clocks of the two services may differ a little).
pub const MAX_AGE_S: i64 = 60;
/// How far in the future an identity's time may be (clock differences).
pub const MAX_AHEAD_S: i64 = 5;
/// The path of a policy-service call named `method` (`PutPolicy`).
pub fn method_path(method: &str) -> String {
    format!("/mamori.policy.v1.PolicyService/{method}")
}

/// The SHA-256 (hex) of a request message's encoding.
pub fn body_digest(message: &impl prost::Message) -> String {
    use sha2::Digest;
    hex::encode(Sha256::digest(message.encode_to_vec()))
}
/// Longest encoded identity accepted.
const MAX_LEN: usize = 2048;

/// Who is calling, as verified by the gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// The tenant acted on; absent for organisation-level calls.
    pub tenant: Option<Uuid>,
    /// The MSP organisation of an MSP user.
    pub org: Option<Uuid>,
    pub user: Uuid,
    pub email: String,
    /// `tenant_admin`, `auditor`, `msp_admin` or `msp_technician`.
    pub role: String,
    pub ip: Option<IpAddr>,
    pub request_id: String,
    /// Unix seconds when the identity was signed.
    pub iat: i64,
    /// Unique per signed call: the service accepts each identity once.
    #[serde(default)]
    pub id: Uuid,
    /// The call it was signed for (`/mamori.policy.v1.PolicyService/PutPolicy`)…
    #[serde(default)]
    pub method: String,
    /// …and the SHA-256 (hex) of its request message's encoding: a captured
    /// identity cannot carry another request.
    #[serde(default)]
    pub body_sha256: String,
}

impl Identity {
    /// Whether the role may change things (every role but `auditor`).
    pub fn may_change(&self) -> bool {
        matches!(
            self.role.as_str(),
            "tenant_admin" | "msp_admin" | "msp_technician"
        )
    }

    /// The organisation of an MSP administrator.
    pub fn msp_admin_org(&self) -> Option<Uuid> {
        (self.role == "msp_admin").then_some(self.org).flatten()
    }

    pub fn actor(&self) -> mamori_tenancy::audit::Actor<'_> {
        mamori_tenancy::audit::Actor {
            user: Some(self.user),
            email: &self.email,
            role: &self.role,
            ip: self.ip,
            request_id: &self.request_id,
        }
    }
}

/// Signs and verifies identities.
pub struct IdentityKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdentityKey(..)")
    }
}

/// Why an identity was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error("the call carries no x-mamori-identity")]
    Missing,
    #[error("x-mamori-identity is malformed")]
    Malformed,
    #[error(
        "x-mamori-identity has a bad signature (do the services share MAMORI_KEY_ENCRYPTION_KEY?)"
    )]
    BadSignature,
    #[error("x-mamori-identity has expired or is from the future (are the clocks in step?)")]
    Stale,
    #[error("x-mamori-identity was signed for another call or request")]
    WrongCall,
    #[error("x-mamori-identity was used before (a replayed call)")]
    Replayed,
}

impl IdentityKey {
    pub fn from_kek(kek: &Kek) -> Self {
        Self(kek.derive("internal-identity-v1"))
    }

    fn mac(&self, payload: &[u8]) -> Hmac<Sha256> {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(self.0.as_ref()).expect("any key length");
        mac.update(payload);
        mac
    }

    /// `base64url(json).base64url(hmac)`.
    pub fn sign(&self, identity: &Identity) -> String {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(identity).expect("serialisable"));
        let tag = self.mac(payload.as_bytes()).finalize().into_bytes();
        format!("{payload}.{}", URL_SAFE_NO_PAD.encode(tag))
    }

    /// Verifies `text` as the identity of the call `method` (its path)
    /// whose request message has the digest `body_sha256`, at `now`. The
    /// caller keeps a [`Replays`] to refuse a second use.
    pub fn verify(
        &self,
        text: &str,
        now: i64,
        method: &str,
        body_sha256: &str,
    ) -> Result<Identity, IdentityError> {
        if text.len() > MAX_LEN {
            return Err(IdentityError::Malformed);
        }
        let (payload, tag) = text.split_once('.').ok_or(IdentityError::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| IdentityError::Malformed)?;
        self.mac(payload.as_bytes())
            .verify_slice(&tag)
            .map_err(|_| IdentityError::BadSignature)?;
        let json = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| IdentityError::Malformed)?;
        let identity: Identity =
            serde_json::from_slice(&json).map_err(|_| IdentityError::Malformed)?;
        if now - identity.iat > MAX_AGE_S || identity.iat - now > MAX_AHEAD_S {
            return Err(IdentityError::Stale);
        }
        if identity.method != method || identity.body_sha256 != body_sha256 {
            return Err(IdentityError::WrongCall);
        }
        Ok(identity)
    }
}

/// The identities accepted in the last [`MAX_AGE_S`] (older ones are
/// refused as stale anyway), so that each is accepted once. Per process:
/// with several policy replicas a captured identity could still be played
/// once to each within that minute; it can carry only the request it was
/// signed for.
#[derive(Debug, Default)]
pub struct Replays {
    seen: std::sync::Mutex<std::collections::HashMap<Uuid, i64>>,
}

impl Replays {
    /// Records `identity`; an error if it was seen before.
    pub fn admit(&self, identity: &Identity, now: i64) -> Result<(), IdentityError> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() > 10_000 {
            seen.retain(|_, iat| now - *iat <= MAX_AGE_S);
        }
        if identity.id.is_nil() || seen.insert(identity.id, identity.iat).is_some() {
            return Err(IdentityError::Replayed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(iat: i64) -> Identity {
        Identity {
            tenant: Some(Uuid::now_v7()),
            org: None,
            user: Uuid::now_v7(),
            email: "a@example.com".into(),
            role: "tenant_admin".into(),
            ip: Some("127.0.0.1".parse().unwrap()),
            request_id: "r1".into(),
            iat,
            id: Uuid::new_v4(),
            method: method_path("PutPolicy"),
            body_sha256: "ab".repeat(32),
        }
    }

    #[test]
    fn an_identity_serves_one_call_once_and_not_from_the_future() {
        let key = IdentityKey::from_kek(&Kek::from_base64(&Kek::generate_base64()).unwrap());
        let id = identity(1000);
        let signed = key.sign(&id);
        let put = method_path("PutPolicy");
        let body = "ab".repeat(32);
        // Another call, another request body.
        assert_eq!(
            key.verify(&signed, 1000, &method_path("DeleteGroup"), &body),
            Err(IdentityError::WrongCall)
        );
        assert_eq!(
            key.verify(&signed, 1000, &put, &"cd".repeat(32)),
            Err(IdentityError::WrongCall)
        );
        // A few seconds ahead is a clock difference; a minute is not.
        assert!(key.verify(&signed, 1000 - MAX_AHEAD_S, &put, &body).is_ok());
        assert_eq!(
            key.verify(&signed, 1000 - MAX_AHEAD_S - 1, &put, &body),
            Err(IdentityError::Stale)
        );
        // Once only.
        let replays = Replays::default();
        let ok = key.verify(&signed, 1001, &put, &body).unwrap();
        assert_eq!(replays.admit(&ok, 1001), Ok(()));
        assert_eq!(replays.admit(&ok, 1002), Err(IdentityError::Replayed));
    }

    #[test]
    fn only_a_fresh_identity_signed_under_the_same_kek_is_accepted() {
        let text = Kek::generate_base64();
        let key = IdentityKey::from_kek(&Kek::from_base64(&text).unwrap());
        let same = IdentityKey::from_kek(&Kek::from_base64(&text).unwrap());
        let other = IdentityKey::from_kek(&Kek::from_base64(&Kek::generate_base64()).unwrap());
        let id = identity(1000);
        let signed = key.sign(&id);
        let (put, body) = (id.method.clone(), id.body_sha256.clone());
        assert_eq!(same.verify(&signed, 1030, &put, &body), Ok(id.clone()));
        assert_eq!(
            other.verify(&signed, 1000, &put, &body),
            Err(IdentityError::BadSignature)
        );
        assert_eq!(
            key.verify(&signed, 1000 + MAX_AGE_S + 1, &put, &body),
            Err(IdentityError::Stale)
        );
        assert_eq!(
            key.verify(&signed, 1000 - MAX_AGE_S - 1, &put, &body),
            Err(IdentityError::Stale)
        );

        // Another tenant spliced into a signed identity.
        let (_, tag) = signed.split_once('.').unwrap();
        let mut forged = id.clone();
        forged.tenant = Some(Uuid::now_v7());
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        assert_eq!(
            key.verify(&format!("{payload}.{tag}"), 1000, &put, &body),
            Err(IdentityError::BadSignature)
        );
        assert_eq!(
            key.verify("garbage", 1000, &put, &body),
            Err(IdentityError::Malformed)
        );
        assert_eq!(
            key.verify(&"a.".repeat(2000), 1000, &put, &body),
            Err(IdentityError::Malformed)
        );
    }
}
