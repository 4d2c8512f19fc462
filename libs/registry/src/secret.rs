//! Bearer secrets: enrollment tokens, device credentials, and the gateway's
//! refresh tokens, invitations and e-mail verification links.
//!
//! Format: a short prefix naming the kind, then 43 characters of URL-safe
//! base64 (32 random bytes). Parsing checks the shape so that a malformed
//! value is refused before any database work.

use crate::{Error, Result};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

const TOKEN_PREFIX: &str = "mmt_";
const CREDENTIAL_PREFIX: &str = "mmd_";
const REFRESH_PREFIX: &str = "mmr_";
const INVITATION_PREFIX: &str = "mmi_";
const VERIFICATION_PREFIX: &str = "mmv_";
const HANDOVER_PREFIX: &str = "mmh_";
const RECIPIENT_PREFIX: &str = "mmn_";
const RESET_PREFIX: &str = "mmp_";
const UNINSTALL_PREFIX: &str = "mmu_";
const BODY_LEN: usize = 43;

fn generate(prefix: &str) -> SecretString {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    SecretString::from(format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes)))
}

fn parse(prefix: &str, field: &'static str, value: &str) -> Result<SecretString> {
    let value = value.trim();
    let well_formed = value.len() == prefix.len() + BODY_LEN
        && value.starts_with(prefix)
        && value[prefix.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !well_formed {
        return Err(Error::InvalidInput {
            field,
            reason: format!("expected {prefix} followed by {BODY_LEN} base64url characters"),
        });
    }
    Ok(SecretString::from(value.to_owned()))
}

fn hash(secret: &SecretString) -> Vec<u8> {
    Sha256::digest(secret.expose_secret().as_bytes()).to_vec()
}

macro_rules! secret_type {
    ($(#[$doc:meta])* $name:ident, $prefix:expr, $field:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name(SecretString);

        impl $name {
            pub fn generate() -> Self {
                Self(generate($prefix))
            }
            pub fn parse(value: &str) -> Result<Self> {
                parse($prefix, $field, value).map(Self)
            }
            /// The SHA-256 that the database stores.
            pub fn hash(&self) -> Vec<u8> {
                hash(&self.0)
            }
            /// The secret itself, to hand to its owner exactly once.
            pub fn expose(&self) -> &str {
                self.0.expose_secret()
            }
        }
    };
}

secret_type!(
    /// A tenant's enrollment token, presented by an agent to enroll.
    EnrollmentToken, TOKEN_PREFIX, "enrollment token"
);
secret_type!(
    /// A device's credential, presented on every agent stream.
    DeviceCredential, CREDENTIAL_PREFIX, "device credential"
);

secret_type!(
    /// A user's opaque refresh token (rotated on every use).
    RefreshToken, REFRESH_PREFIX, "refresh token"
);
secret_type!(
    /// The secret in an invitation link.
    InvitationSecret, INVITATION_PREFIX, "invitation"
);
secret_type!(
    /// The secret in an e-mail verification link.
    VerificationSecret, VERIFICATION_PREFIX, "verification code"
);

secret_type!(
    /// The one-time code with which a tenant is handed over to an MSP.
    HandoverCode, HANDOVER_PREFIX, "handover code"
);

secret_type!(
    /// The secret in the link that confirms an address for alarm mail.
    RecipientSecret, RECIPIENT_PREFIX, "confirmation code"
);

secret_type!(
    /// The one-time code mailed to reset a forgotten password.
    PasswordResetCode, RESET_PREFIX, "password reset code"
);

secret_type!(
    /// The code that lets an agent be removed from a PC (the agent checks
    /// it against the hash its policy carries).
    UninstallCode, UNINSTALL_PREFIX, "uninstall code"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_parse_and_hash_stably() {
        let t = EnrollmentToken::generate();
        let p = EnrollmentToken::parse(t.expose()).unwrap();
        assert_eq!(t.hash(), p.hash());
        assert_eq!(t.hash().len(), 32);
        assert!(
            DeviceCredential::parse(t.expose()).is_err(),
            "kinds do not mix"
        );
    }

    #[test]
    fn malformed_secrets_are_refused_with_the_field_named() {
        for bad in ["", "mmt_", "mmt_short", &format!("mmt_{}", "!".repeat(43))] {
            let err = EnrollmentToken::parse(bad).unwrap_err().to_string();
            assert!(err.contains("enrollment token"), "{err}");
        }
    }

    #[test]
    fn debug_does_not_show_the_secret() {
        let t = EnrollmentToken::generate();
        assert!(!format!("{t:?}").contains(&t.expose()[4..]));
    }
}
