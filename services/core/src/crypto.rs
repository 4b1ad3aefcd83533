//! Secrets at rest and device passwords.
//!
//! Tenant client secrets and keys are sealed with AES-256-GCM under the master key
//! (`MAILBRIDGE_MASTER_KEY`), bound to what they belong to so a sealed value cannot
//! be moved to another row. Device passwords are generated here and stored only as
//! argon2id hashes. Nothing in this module logs or formats a secret.

use aes_gcm::{
    Aes256Gcm, KeyInit, Nonce,
    aead::{Aead, Payload},
};
use argon2::{
    Argon2, PasswordHash, PasswordHasher, PasswordVerifier,
    password_hash::{SaltString, rand_core::OsRng},
};
use base64::{Engine, engine::general_purpose::STANDARD};
use rand::{Rng, distr::Uniform};

const SEALED_VERSION: u8 = 1;
const NONCE_LEN: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("the master key must be 32 bytes, base64-encoded (got {0} bytes)")]
    KeyLength(usize),
    #[error("the master key is not valid base64")]
    KeyEncoding,
    #[error("a sealed secret could not be opened (wrong master key or damaged data)")]
    Unseal,
    #[error("password hashing failed: {0}")]
    Hash(String),
}

/// The key that seals secrets at rest. Its `Debug` never shows the key.
#[derive(Clone)]
pub struct MasterKey(Aes256Gcm);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(…)")
    }
}

impl MasterKey {
    pub fn from_base64(encoded: &str) -> Result<Self, CryptoError> {
        let bytes = STANDARD
            .decode(encoded.trim())
            .map_err(|_| CryptoError::KeyEncoding)?;
        if bytes.len() != 32 {
            return Err(CryptoError::KeyLength(bytes.len()));
        }
        Ok(Self(
            Aes256Gcm::new_from_slice(&bytes).expect("length checked"),
        ))
    }

    /// A fresh random key, base64-encoded, for `dev` and for operators to copy.
    pub fn generate_base64() -> String {
        let key: [u8; 32] = rand::rng().random();
        STANDARD.encode(key)
    }

    /// Seals `plaintext`; `context` (e.g. the owning row's id) must be given again to open it.
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> Vec<u8> {
        let nonce: [u8; NONCE_LEN] = rand::rng().random();
        let ciphertext = self
            .0
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: context.as_bytes(),
                },
            )
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let mut sealed = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
        sealed.push(SEALED_VERSION);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        sealed
    }

    pub fn open(&self, context: &str, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        match sealed {
            [SEALED_VERSION, rest @ ..] if rest.len() > NONCE_LEN => {
                let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
                self.0
                    .decrypt(
                        Nonce::from_slice(nonce),
                        Payload {
                            msg: ciphertext,
                            aad: context.as_bytes(),
                        },
                    )
                    .map_err(|_| CryptoError::Unseal)
            }
            _ => Err(CryptoError::Unseal),
        }
    }
}

/// Characters of generated passwords and usernames: no look-alikes (0/O, 1/l/I), so a
/// technician can type them from a printed card into a printer's web form.
const UNAMBIGUOUS: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";

fn random_string(len: usize) -> String {
    let dist = Uniform::new(0, UNAMBIGUOUS.len()).expect("non-empty alphabet");
    rand::rng()
        .sample_iter(dist)
        .take(len)
        .map(|i| UNAMBIGUOUS[i] as char)
        .collect()
}

/// A device password: 24 characters, about 139 bits.
pub fn generate_password() -> String {
    random_string(24)
}

/// A device username: recognisable prefix plus a random part, unique across tenants
/// because every device of every customer shares one hostname.
pub fn generate_username(prefix: &str) -> String {
    let prefix: String = prefix
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(24)
        .collect::<String>()
        .to_ascii_lowercase();
    let suffix = random_string(8).to_ascii_lowercase();
    if prefix.is_empty() {
        format!("dev-{suffix}")
    } else {
        format!("{prefix}-{suffix}")
    }
}

/// Hashes a password with argon2id (OWASP parameters, the crate's defaults).
pub fn hash_password(password: &str) -> Result<String, CryptoError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| CryptoError::Hash(e.to_string()))
}

/// Checks a password against a stored argon2 hash; a malformed hash never verifies.
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A hash of a password nobody has, verified against when a username is unknown so
/// that a miss costs as much time as a wrong password.
pub fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password(&generate_password()).expect("hashing a fresh password"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_in_their_context() {
        let key = MasterKey::from_base64(&MasterKey::generate_base64()).unwrap();
        let sealed = key.seal("tenant:1", b"s3cret");
        assert_eq!(key.open("tenant:1", &sealed).unwrap(), b"s3cret");
        assert!(key.open("tenant:2", &sealed).is_err());
        let other = MasterKey::from_base64(&MasterKey::generate_base64()).unwrap();
        assert!(other.open("tenant:1", &sealed).is_err());
        assert!(key.open("tenant:1", &sealed[..5]).is_err());
    }

    #[test]
    fn master_key_must_be_32_bytes() {
        assert!(matches!(
            MasterKey::from_base64("AAAA"),
            Err(CryptoError::KeyLength(3))
        ));
        assert!(matches!(
            MasterKey::from_base64("not base64!"),
            Err(CryptoError::KeyEncoding)
        ));
    }

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let password = generate_password();
        assert_eq!(password.len(), 24);
        let hash = hash_password(&password).unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password(&password, &hash));
        assert!(!verify_password("wrong", &hash));
        assert!(!verify_password(&password, "not a hash"));
    }

    #[test]
    fn usernames_are_prefixed_and_random() {
        let a = generate_username("Praxis Müller");
        assert!(a.starts_with("praxismller-"), "{a}");
        assert_ne!(a, generate_username("Praxis Müller"));
    }
}
