//! Passwords: the rules a new one must meet, and argon2id hashing (run off
//! the async threads: one hash costs tens of milliseconds by design).

use crate::{Error, Result};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use std::sync::LazyLock;

pub const MIN_LEN: usize = 12;
pub const MAX_LEN: usize = 128;

/// A few passwords every attacker tries first.
const COMMON: &[&str] = &[
    "password1234",
    "123456789012",
    "qwertyuiopas",
    "passwordpassword",
    "111111111111",
    "letmeinletmein",
    "administrator",
    "changemechangeme",
];

fn argon2() -> Argon2<'static> {
    // OWASP's argon2id baseline: 19 MiB, 2 passes, 1 lane.
    Argon2::new(
        Algorithm::Argon2id,
        Version::V0x13,
        Params::new(19 * 1024, 2, 1, None).expect("static argon2 parameters are valid"),
    )
}

/// A hash to verify against when the account does not exist, so that a
/// missing account costs as long as a wrong password.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| hash_blocking("not a real password"));

/// Checks a new password (the request's `field`); the message names the
/// field and the rule it breaks.
pub fn check_rules(field: &'static str, password: &str, email: &str) -> Result<()> {
    let len = password.chars().count();
    if len < MIN_LEN {
        return Err(invalid(
            field,
            format!("must be at least {MIN_LEN} characters (got {len})"),
        ));
    }
    if len > MAX_LEN {
        return Err(invalid(
            field,
            format!("must be at most {MAX_LEN} characters"),
        ));
    }
    if password.chars().any(char::is_control) {
        return Err(invalid(field, "must not contain control characters"));
    }
    let lower = password.to_lowercase();
    let distinct = {
        let mut c: Vec<char> = lower.chars().collect();
        c.sort_unstable();
        c.dedup();
        c.len()
    };
    if distinct < 5 {
        return Err(invalid(field, "must use at least 5 different characters"));
    }
    if COMMON.contains(&lower.as_str()) {
        return Err(invalid(field, "is one of the most common passwords"));
    }
    let local = email.split('@').next().unwrap_or_default();
    if local.chars().count() >= 4 && lower.contains(&local.to_lowercase()) {
        return Err(invalid(field, "must not contain the e-mail address"));
    }
    Ok(())
}

fn invalid(field: &'static str, reason: impl Into<String>) -> Error {
    Error::InvalidInput {
        field,
        reason: reason.into(),
    }
}

fn hash_blocking(password: &str) -> String {
    let mut bytes = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    let salt = SaltString::encode_b64(&bytes).expect("16 bytes make a valid salt");
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 hashing with valid parameters does not fail")
        .to_string()
}

/// Hashes a password with argon2id and a fresh salt.
pub async fn hash(password: String) -> Result<String> {
    Ok(blocking(move || hash_blocking(&password)).await)
}

/// Runs `f` on the blocking pool; a panic there goes on here.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Verifies `password` against `stored` (or the dummy hash when there is
/// no account, taking the same time and returning false).
pub async fn verify(password: String, stored: Option<String>) -> Result<bool> {
    Ok(blocking(move || {
        let real = stored.is_some();
        let stored = stored.unwrap_or_else(|| DUMMY_HASH.clone());
        let Ok(parsed) = PasswordHash::new(&stored) else {
            return false;
        };
        argon2()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
            && real
    })
    .await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rule_names_itself() {
        let cases = [
            ("short", "at least 12"),
            ("aaaaaaaaaaaaaaaa", "5 different"),
            ("password1234", "most common"),
            ("alice-secret-9876", "e-mail"),
            ("tab\there-is-bad-1", "control"),
        ];
        for (pw, want) in cases {
            let err = check_rules("password", pw, "alice@example.com").unwrap_err();
            assert!(err.to_string().contains(want), "{pw}: {err}");
        }
        check_rules("password", "correct horse battery", "alice@example.com").unwrap();
        check_rules(
            "password",
            "パスワードは長くて安全です",
            "alice@example.com",
        )
        .unwrap();
    }

    #[tokio::test]
    async fn hashes_verify_and_differ_by_salt() {
        let a = hash("correct horse battery".into()).await.unwrap();
        let b = hash("correct horse battery".into()).await.unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("$argon2id$"));
        assert!(
            verify("correct horse battery".into(), Some(a.clone()))
                .await
                .unwrap()
        );
        assert!(!verify("wrong horse battery".into(), Some(a)).await.unwrap());
        assert!(!verify("anything".into(), None).await.unwrap());
    }
}
