//! Stored SCRAM credentials: what the database keeps instead of a password.
//!
//! For each hash we keep the salt, the iteration count, StoredKey and
//! ServerKey (RFC 5802 §3). None of them is password-equivalent: StoredKey
//! is a hash of ClientKey, so it verifies a proof but cannot produce one.

use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Default PBKDF2 iteration count for new credentials.
pub const DEFAULT_ITERATIONS: u32 = 4096;

/// Which hash a SCRAM secret was made with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScramHash {
    Sha1,
    Sha256,
}

/// One hash's SCRAM secret.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ScramSecret {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl std::fmt::Debug for ScramSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material, not even in debug logs.
        f.debug_struct("ScramSecret")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

/// The credentials of one account: a SCRAM secret per supported hash.
///
/// `sha256` is `None` only for accounts imported with SCRAM-SHA-1 secrets
/// alone (Prosody's XEP-0227 export): without the password no SHA-256
/// secret can be made. Such an account logs in with SCRAM-SHA-1 or PLAIN;
/// its first PLAIN login (password known) or password change replaces the
/// credentials with full ones ([`StoredCredentials::needs_upgrade`]).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoredCredentials {
    pub sha1: ScramSecret,
    #[serde(default)]
    pub sha256: Option<ScramSecret>,
}

/// Why credentials could not be made from a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialError {
    /// The password is empty or contains characters SASLprep prohibits.
    InvalidPassword(String),
}

impl std::fmt::Display for CredentialError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CredentialError::InvalidPassword(why) => write!(f, "invalid password: {why}"),
        }
    }
}

impl std::error::Error for CredentialError {}

/// SASLprep a password (RFC 4013), refusing empty results.
pub fn prepare_password(password: &str) -> Result<String, CredentialError> {
    let prepared = stringprep::saslprep(password)
        .map_err(|_| CredentialError::InvalidPassword("prohibited characters".into()))?;
    if prepared.is_empty() {
        return Err(CredentialError::InvalidPassword("empty".into()));
    }
    Ok(prepared.into_owned())
}

fn hmac_sha1(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha1>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// HMAC with the given hash.
pub fn hmac(hash: ScramHash, key: &[u8], data: &[u8]) -> Vec<u8> {
    match hash {
        ScramHash::Sha1 => hmac_sha1(key, data),
        ScramHash::Sha256 => hmac_sha256(key, data),
    }
}

/// Plain hash with the given hash function.
pub fn digest(hash: ScramHash, data: &[u8]) -> Vec<u8> {
    match hash {
        ScramHash::Sha1 => Sha1::digest(data).to_vec(),
        ScramHash::Sha256 => Sha256::digest(data).to_vec(),
    }
}

/// PBKDF2 SaltedPassword (RFC 5802 Hi()).
fn salted_password(hash: ScramHash, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
    match hash {
        ScramHash::Sha1 => {
            let mut out = [0u8; 20];
            pbkdf2::pbkdf2_hmac::<Sha1>(password, salt, iterations, &mut out);
            out.to_vec()
        }
        ScramHash::Sha256 => {
            let mut out = [0u8; 32];
            pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
            out.to_vec()
        }
    }
}

impl ScramSecret {
    /// Derive a secret for an already SASLprep'd password.
    pub fn derive(
        hash: ScramHash,
        prepared_password: &str,
        salt: Vec<u8>,
        iterations: u32,
    ) -> Self {
        let salted = salted_password(hash, prepared_password.as_bytes(), &salt, iterations);
        Self::from_salted_password(hash, &salted, salt, iterations)
    }

    /// A secret from a SaltedPassword (RFC 5802 §3, `Hi(password, salt,
    /// i)`) a client computed for `salt` and `iterations` (XEP-0480's SCRAM
    /// upgrade task): the password itself is never seen.
    pub fn from_salted_password(
        hash: ScramHash,
        salted: &[u8],
        salt: Vec<u8>,
        iterations: u32,
    ) -> Self {
        let client_key = hmac(hash, salted, b"Client Key");
        let stored_key = digest(hash, &client_key);
        let server_key = hmac(hash, salted, b"Server Key");
        ScramSecret {
            salt,
            iterations,
            stored_key,
            server_key,
        }
    }

    /// Check a prepared password against this secret in constant time.
    pub fn matches(&self, hash: ScramHash, prepared_password: &str) -> bool {
        let candidate =
            ScramSecret::derive(hash, prepared_password, self.salt.clone(), self.iterations);
        bool::from(candidate.stored_key.ct_eq(&self.stored_key))
            & bool::from(candidate.server_key.ct_eq(&self.server_key))
    }
}

/// 16 random bytes for a new secret.
pub fn random_salt() -> Vec<u8> {
    let mut salt = vec![0u8; 16];
    rand::thread_rng().fill_bytes(&mut salt);
    salt
}

impl StoredCredentials {
    /// Make credentials for a new password (SASLprep'd here).
    pub fn derive(password: &str, iterations: u32) -> Result<Self, CredentialError> {
        let prepared = prepare_password(password)?;
        let iterations = iterations.max(DEFAULT_ITERATIONS);
        Ok(StoredCredentials {
            sha1: ScramSecret::derive(ScramHash::Sha1, &prepared, random_salt(), iterations),
            sha256: Some(ScramSecret::derive(
                ScramHash::Sha256,
                &prepared,
                random_salt(),
                iterations,
            )),
        })
    }

    /// Credentials from a SCRAM-SHA-1 secret alone (an import without the
    /// password); see the type's documentation.
    pub fn sha1_only(sha1: ScramSecret) -> Self {
        StoredCredentials { sha1, sha256: None }
    }

    /// Whether these are SCRAM-SHA-1-only credentials that should be
    /// replaced by full ones as soon as the password is known.
    pub fn needs_upgrade(&self) -> bool {
        self.sha256.is_none()
    }

    /// The secret for one hash, if the account has one.
    pub fn secret(&self, hash: ScramHash) -> Option<&ScramSecret> {
        match hash {
            ScramHash::Sha1 => Some(&self.sha1),
            ScramHash::Sha256 => self.sha256.as_ref(),
        }
    }

    /// Verify a cleartext password (PLAIN, `check_password`) in constant
    /// time, against the SHA-256 secret (the SHA-1 one when that is all the
    /// account has).
    pub fn verify_password(&self, password: &str) -> bool {
        match prepare_password(password) {
            Ok(prepared) => match &self.sha256 {
                Some(s) => s.matches(ScramHash::Sha256, &prepared),
                None => self.sha1.matches(ScramHash::Sha1, &prepared),
            },
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc5802_sha1_vector() {
        // RFC 5802 §5: user "user", password "pencil", salt QSXCR+Q6sek8bf92, 4096 iterations.
        use base64::Engine;
        let salt = base64::engine::general_purpose::STANDARD
            .decode("QSXCR+Q6sek8bf92")
            .unwrap();
        let s = ScramSecret::derive(ScramHash::Sha1, "pencil", salt, 4096);
        // ServerSignature in the RFC is HMAC(ServerKey, AuthMessage); check ServerKey through it.
        let auth = b"n=user,r=fyko+d2lbbFgONRv9qkxdawL,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096,c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j";
        let sig = hmac(ScramHash::Sha1, &s.server_key, auth);
        assert_eq!(
            base64::engine::general_purpose::STANDARD.encode(sig),
            "rmF9pqV8S7suAoZWja4dJRkFsKQ="
        );
    }

    #[test]
    fn verify_password_roundtrip() {
        let c = StoredCredentials::derive("secret", 4096).unwrap();
        assert!(c.verify_password("secret"));
        assert!(!c.verify_password("Secret"));
        assert!(!format!("{c:?}").contains(&format!("{:?}", c.sha1.stored_key)));
    }

    #[test]
    fn sha1_only_credentials_verify_and_read_old_records() {
        let full = StoredCredentials::derive("secret", 4096).unwrap();
        let c = StoredCredentials::sha1_only(full.sha1.clone());
        assert!(c.needs_upgrade() && !full.needs_upgrade());
        assert!(c.verify_password("secret"));
        assert!(!c.verify_password("other"));
        assert!(c.secret(ScramHash::Sha256).is_none());
        // Records written before `sha256` became optional still load, and
        // SHA-1-only records survive a round trip.
        let json = serde_json::to_string(&full).unwrap();
        assert_eq!(
            serde_json::from_str::<StoredCredentials>(&json).unwrap(),
            full
        );
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<StoredCredentials>(&json).unwrap(), c);
    }

    #[test]
    fn empty_password_refused() {
        assert!(StoredCredentials::derive("", 4096).is_err());
    }
}
