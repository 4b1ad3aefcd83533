//! Secrets at rest and device passwords.
//!
//! Tenant client secrets and keys, and queued message bodies, are sealed with
//! AES-256-GCM under the master key (`MAILBRIDGE_MASTER_KEY`), each with a fresh
//! nonce, bound to what they belong to (the associated data names the row) so a
//! sealed value cannot be moved to another row. A sealed value names its key by id,
//! so the key can be rotated online: previous keys
//! (`MAILBRIDGE_MASTER_KEY_PREVIOUS`) keep opening what they sealed until
//! `mailbridge rotate-master-key` has re-sealed it. Device passwords are generated here and stored only as
//! argon2id hashes. Nothing in this module logs or formats a secret.

use argon2::{
    Argon2, PasswordHash, PasswordHasher, PasswordVerifier,
    password_hash::{SaltString, rand_core::OsRng},
};
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use base64::{Engine, engine::general_purpose::STANDARD};
use rand::{Rng, distr::Uniform};
use sha2::{Digest, Sha256};

/// Sealed before keys had ids: `[1][nonce][ciphertext+tag]`, opened with any key.
const SEALED_V1: u8 = 1;
/// `[2][key id][nonce][ciphertext+tag]`: opened with the key of that id.
const SEALED_V2: u8 = 2;
const NONCE_LEN: usize = 12;
const KEY_ID_LEN: usize = 4;
const TAG_LEN: usize = 16;
/// Bytes a sealed value is longer than its plaintext.
pub const SEALED_OVERHEAD: usize = 1 + KEY_ID_LEN + NONCE_LEN + TAG_LEN;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("the master key must be 32 bytes, base64-encoded (got {0} bytes)")]
    KeyLength(usize),
    #[error("the master key is not valid base64")]
    KeyEncoding,
    #[error("a sealed secret could not be opened (wrong master key or damaged data)")]
    Unseal,
    #[error(
        "a value is sealed with master key {0}, which is neither MAILBRIDGE_MASTER_KEY nor in MAILBRIDGE_MASTER_KEY_PREVIOUS"
    )]
    UnknownKey(String),
    #[error("password hashing failed: {0}")]
    Hash(String),
}

/// One AES-256-GCM key and its id (a digest of the key, not the key).
#[derive(Clone)]
struct Key {
    id: [u8; KEY_ID_LEN],
    cipher: std::sync::Arc<LessSafeKey>,
}

impl Key {
    fn from_base64(encoded: &str) -> Result<Self, CryptoError> {
        let bytes = STANDARD
            .decode(encoded.trim())
            .map_err(|_| CryptoError::KeyEncoding)?;
        if bytes.len() != 32 {
            return Err(CryptoError::KeyLength(bytes.len()));
        }
        let digest = Sha256::new()
            .chain_update(b"mailbridge master key id\0")
            .chain_update(&bytes)
            .finalize();
        Ok(Self {
            id: digest[..KEY_ID_LEN].try_into().expect("digest is longer"),
            cipher: std::sync::Arc::new(LessSafeKey::new(
                UnboundKey::new(&AES_256_GCM, &bytes).expect("length checked"),
            )),
        })
    }

    /// Opens `ciphertext` (with its tag at the end).
    fn open(&self, nonce: &[u8], ciphertext: &[u8], context: &str) -> Result<Vec<u8>, CryptoError> {
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Unseal)?;
        let mut in_out = ciphertext.to_vec();
        let plain = self
            .cipher
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut in_out)
            .map_err(|_| CryptoError::Unseal)?
            .len();
        in_out.truncate(plain);
        Ok(in_out)
    }
}

/// The keys that seal secrets and queued message bodies at rest: the current one,
/// which seals, and during a rotation the previous ones, which still open what they
/// sealed (`mailbridge rotate-master-key` re-seals it under the current key). Its
/// `Debug` never shows a key.
#[derive(Clone)]
pub struct MasterKey {
    current: Key,
    previous: Vec<Key>,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "MasterKey({}, {} previous)",
            self.id(),
            self.previous.len()
        )
    }
}

impl MasterKey {
    pub fn from_base64(encoded: &str) -> Result<Self, CryptoError> {
        Ok(Self {
            current: Key::from_base64(encoded)?,
            previous: Vec::new(),
        })
    }

    /// Adds previous keys (comma-separated, base64), which open but never seal.
    pub fn with_previous(mut self, encoded: &str) -> Result<Self, CryptoError> {
        for key in encoded.split(',').filter(|k| !k.trim().is_empty()) {
            let key = Key::from_base64(key)?;
            if key.id != self.current.id && !self.previous.iter().any(|p| p.id == key.id) {
                self.previous.push(key);
            }
        }
        Ok(self)
    }

    /// A fresh random key, base64-encoded, for `dev` and for operators to copy.
    pub fn generate_base64() -> String {
        let key: [u8; 32] = rand::rng().random();
        STANDARD.encode(key)
    }

    /// The current key's id (8 hex digits), as shown in logs and by the rotation.
    pub fn id(&self) -> String {
        hex(&self.current.id)
    }

    /// Seals `plaintext` with the current key; `context` (e.g. the owning row's id)
    /// must be given again to open it.
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> Vec<u8> {
        let nonce: [u8; NONCE_LEN] = rand::rng().random();
        let mut sealed = Vec::with_capacity(SEALED_OVERHEAD + plaintext.len());
        sealed.push(SEALED_V2);
        sealed.extend_from_slice(&self.current.id);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(plaintext);
        let tag = self
            .current
            .cipher
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut sealed[1 + KEY_ID_LEN + NONCE_LEN..],
            )
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        sealed.extend_from_slice(tag.as_ref());
        sealed
    }

    pub fn open(&self, context: &str, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        match sealed {
            [SEALED_V2, rest @ ..] if rest.len() >= KEY_ID_LEN + NONCE_LEN + TAG_LEN => {
                let (id, rest) = rest.split_at(KEY_ID_LEN);
                let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
                let key = std::iter::once(&self.current)
                    .chain(&self.previous)
                    .find(|k| k.id == id)
                    .ok_or_else(|| CryptoError::UnknownKey(hex(id)))?;
                key.open(nonce, ciphertext, context)
            }
            [SEALED_V1, rest @ ..] if rest.len() > NONCE_LEN => {
                let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
                std::iter::once(&self.current)
                    .chain(&self.previous)
                    .find_map(|k| k.open(nonce, ciphertext, context).ok())
                    .ok_or(CryptoError::Unseal)
            }
            _ => Err(CryptoError::Unseal),
        }
    }

    /// The first bytes of everything the current key seals.
    pub fn sealed_prefix(&self) -> Vec<u8> {
        [&[SEALED_V2][..], &self.current.id].concat()
    }

    /// Whether `sealed` is sealed with the current key (nothing to re-seal).
    pub fn sealed_with_current(&self, sealed: &[u8]) -> bool {
        sealed.starts_with(&self.sealed_prefix())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
    fn a_rotated_key_opens_the_old_values_until_they_are_resealed() {
        let (old, new) = (MasterKey::generate_base64(), MasterKey::generate_base64());
        let before = MasterKey::from_base64(&old).unwrap();
        let sealed = before.seal("body:1", b"lab result");
        assert!(before.sealed_with_current(&sealed));
        assert_eq!(sealed.len(), b"lab result".len() + SEALED_OVERHEAD);

        let rotating = MasterKey::from_base64(&new)
            .unwrap()
            .with_previous(&old)
            .unwrap();
        assert_eq!(rotating.open("body:1", &sealed).unwrap(), b"lab result");
        assert!(!rotating.sealed_with_current(&sealed));
        let resealed = rotating.seal("body:1", &rotating.open("body:1", &sealed).unwrap());
        assert!(rotating.sealed_with_current(&resealed));

        let after = MasterKey::from_base64(&new).unwrap();
        assert_eq!(after.open("body:1", &resealed).unwrap(), b"lab result");
        match after.open("body:1", &sealed) {
            Err(CryptoError::UnknownKey(id)) => assert_eq!(id, before.id()),
            other => panic!("expected the old key's id, got {other:?}"),
        }
    }

    #[test]
    fn values_sealed_before_key_ids_still_open() {
        let encoded = MasterKey::generate_base64();
        let key = MasterKey::from_base64(&encoded).unwrap();
        // The first format: [1][nonce][ciphertext and tag], no key id.
        let nonce = [7u8; NONCE_LEN];
        let cipher = LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, &STANDARD.decode(&encoded).unwrap()).unwrap(),
        );
        let mut ciphertext = b"s3cret".to_vec();
        let tag = cipher
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(b"tenant:1"),
                &mut ciphertext,
            )
            .unwrap();
        ciphertext.extend_from_slice(tag.as_ref());
        let v1 = [&[SEALED_V1][..], &nonce, &ciphertext].concat();
        assert_eq!(key.open("tenant:1", &v1).unwrap(), b"s3cret");
        assert!(!key.sealed_with_current(&v1), "a rotation re-seals it");
        let rotated = MasterKey::from_base64(&MasterKey::generate_base64())
            .unwrap()
            .with_previous(&encoded)
            .unwrap();
        assert_eq!(rotated.open("tenant:1", &v1).unwrap(), b"s3cret");
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
