//! The key-encryption key (KEK): secrets that must be usable again (JWT
//! signing keys, webhook HMAC secrets) are kept in PostgreSQL sealed with
//! AES-256-GCM under it, bound to their name as associated data. Only the
//! processes that need the secrets hold the KEK; a database dump alone
//! reveals none of them.

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore;
use zeroize::Zeroizing;

/// The key-encryption key.
pub struct Kek {
    aead: Aes256Gcm,
    /// Kept for [`Kek::derive`] only.
    raw: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kek(..)")
    }
}

impl Kek {
    /// Parses 32 bytes of standard base64.
    pub fn from_base64(text: &str) -> anyhow::Result<Self> {
        let bytes = Zeroizing::new(
            STANDARD
                .decode(text.trim())
                .map_err(|_| anyhow::anyhow!("key encryption key is not valid base64"))?,
        );
        if bytes.len() != 32 {
            anyhow::bail!("key encryption key must be 32 bytes, got {}", bytes.len());
        }
        let mut raw = Zeroizing::new([0u8; 32]);
        raw.copy_from_slice(&bytes);
        Ok(Self {
            aead: Aes256Gcm::new_from_slice(&bytes).expect("32-byte key is valid for AES-256"),
            raw,
        })
    }

    /// A key for one purpose derived from the KEK (HMAC-SHA256 of the
    /// purpose under it): services holding the same KEK share it without
    /// another secret to distribute, and it reveals nothing of the KEK.
    pub fn derive(&self, purpose: &str) -> Zeroizing<[u8; 32]> {
        use hmac::{Hmac, Mac};
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(self.raw.as_ref())
            .expect("HMAC takes any key length");
        mac.update(b"mamori-kek-derive:");
        mac.update(purpose.as_bytes());
        Zeroizing::new(mac.finalize().into_bytes().into())
    }

    /// The key from its configuration: `text` (base64, from
    /// MAMORI_KEY_ENCRYPTION_KEY) when set, else the file (created with a
    /// fresh key when missing).
    pub fn load(text: &str, file: &str) -> anyhow::Result<Self> {
        if text.is_empty() {
            Self::from_file(file)
        } else {
            Self::from_base64(text).map_err(|e| anyhow::anyhow!("MAMORI_KEY_ENCRYPTION_KEY: {e}"))
        }
    }

    /// A fresh random key, base64.
    pub fn generate_base64() -> String {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(bytes.as_mut());
        STANDARD.encode(bytes.as_ref())
    }

    /// Reads the key from `path`, creating the file (mode 0600) with a fresh
    /// key when it does not exist.
    pub fn from_file(path: &str) -> anyhow::Result<Self> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        match std::fs::read_to_string(path) {
            Ok(text) => Self::from_base64(&text)
                .map_err(|e| anyhow::anyhow!("key_encryption_key_file {path:?}: {e}")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate_base64();
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|e| {
                        anyhow::anyhow!("cannot create key_encryption_key_file {path:?}: {e}")
                    })?;
                f.write_all(key.as_bytes())?;
                f.sync_all()?;
                tracing::info!(path, "created a new key-encryption key");
                Self::from_base64(&key)
            }
            Err(e) => Err(anyhow::anyhow!(
                "cannot read key_encryption_key_file {path:?}: {e}"
            )),
        }
    }

    /// Seals `secret`, bound to `name` (it opens only under the same name).
    pub fn seal(&self, name: &str, secret: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .aead
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: secret,
                    aad: name.as_bytes(),
                },
            )
            .expect("AES-GCM encryption of an in-memory secret cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        out
    }

    /// Opens what [`Kek::seal`] sealed under `name`.
    pub fn open(&self, name: &str, sealed: &[u8]) -> anyhow::Result<Zeroizing<Vec<u8>>> {
        if sealed.len() < 12 {
            anyhow::bail!("sealed secret {name} is truncated");
        }
        let (nonce, body) = sealed.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().expect("split at 12");
        let plain = self
            .aead
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: body,
                    aad: name.as_bytes(),
                },
            )
            .map_err(|_| {
                anyhow::anyhow!(
                    "secret {name} does not decrypt with this key-encryption key (is MAMORI_KEY_ENCRYPTION_KEY the one the other services use?)"
                )
            })?;
        Ok(Zeroizing::new(plain))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_under_their_name_and_key() {
        let kek = Kek::from_base64(&Kek::generate_base64()).unwrap();
        let other = Kek::from_base64(&Kek::generate_base64()).unwrap();
        let sealed = kek.seal("k1", b"secret");
        assert_eq!(kek.open("k1", &sealed).unwrap().as_slice(), b"secret");
        assert!(kek.open("k2", &sealed).is_err(), "name is bound");
        assert!(other.open("k1", &sealed).is_err(), "other key");
        assert!(Kek::from_base64("not base64!").is_err());
        assert!(Kek::from_base64(&STANDARD.encode([1u8; 16])).is_err());
    }

    #[test]
    fn derived_keys_differ_by_purpose_and_kek() {
        let text = Kek::generate_base64();
        let kek = Kek::from_base64(&text).unwrap();
        let same = Kek::from_base64(&text).unwrap();
        let other = Kek::from_base64(&Kek::generate_base64()).unwrap();
        assert_eq!(*kek.derive("a"), *same.derive("a"));
        assert_ne!(*kek.derive("a"), *kek.derive("b"));
        assert_ne!(*kek.derive("a"), *other.derive("a"));
    }
}
