//! Bearer tokens for `mod_http_api` (`rookery ctl api_token_issue USER HOST`,
//! `api_token_revoke USER HOST`): a token stands for the account it was
//! issued for, and `api_permissions` (`from: mod_http_api`) decides what
//! that account may run with it, as with HTTP Basic and its password.
//!
//! Invariants: a token is 32 bytes from the operating system's CSPRNG
//! (`rk_` + unpadded base64url); only its SHA-256 is stored, under the
//! server-wide owner (empty host and user) of the modules' store, module
//! [`MODULE`], key = the hash in hex, value = the account's bare JID. The
//! token itself is printed once and never kept or logged.

use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::storage::{AccountKey, Storage, StorageError};

/// The modules' store namespace of the tokens.
pub const MODULE: &str = "http_api_tokens";

fn server_wide() -> AccountKey<'static> {
    AccountKey::new("", "")
}

fn hash_hex(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Make, store and return a new token for `user@host` (normalised by the
/// caller).
pub fn issue(storage: &dyn Storage, user: &str, host: &str) -> Result<String, StorageError> {
    use base64::Engine;
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let token = format!(
        "rk_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    );
    storage.module_put(
        server_wide(),
        MODULE,
        &hash_hex(&token),
        format!("{user}@{host}").as_bytes(),
    )?;
    Ok(token)
}

/// The account (`user`, `host`) `token` was issued for, if it is a
/// current token.
pub fn lookup(
    storage: &dyn Storage,
    token: &str,
) -> Result<Option<(String, String)>, StorageError> {
    if !token.starts_with("rk_") || token.len() > 100 {
        return Ok(None);
    }
    let Some(v) = storage.module_get(server_wide(), MODULE, &hash_hex(token))? else {
        return Ok(None);
    };
    let jid = String::from_utf8_lossy(&v).into_owned();
    Ok(jid
        .split_once('@')
        .map(|(u, h)| (u.to_string(), h.to_string())))
}

/// Delete every token of `user@host`; how many there were.
pub fn revoke(storage: &dyn Storage, user: &str, host: &str) -> Result<usize, StorageError> {
    let jid = format!("{user}@{host}");
    let keys: Vec<String> = storage
        .module_scan(server_wide(), MODULE, "")?
        .into_iter()
        .filter(|(_, v)| v.as_slice() == jid.as_bytes())
        .map(|(k, _)| k)
        .collect();
    if keys.is_empty() {
        return Ok(0);
    }
    storage.module_delete_many(server_wide(), MODULE, &keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::SledStorage;

    #[test]
    fn issue_lookup_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStorage::open(dir.path()).unwrap();
        let a = issue(&s, "alice", "localhost").unwrap();
        let b = issue(&s, "alice", "localhost").unwrap();
        let c = issue(&s, "bob", "localhost").unwrap();
        assert!(a.starts_with("rk_") && a.len() == 46, "{a}");
        assert_ne!(a, b);
        assert_eq!(
            lookup(&s, &a).unwrap(),
            Some(("alice".into(), "localhost".into()))
        );
        assert_eq!(lookup(&s, "rk_nope").unwrap(), None);
        assert_eq!(lookup(&s, &a[..45]).unwrap(), None);
        // Only the hash is stored.
        let stored =
            crate::storage::ModuleStore::module_scan(&s, server_wide(), MODULE, "").unwrap();
        assert!(stored.iter().all(|(k, _)| !k.contains(&a[3..])));
        assert_eq!(revoke(&s, "alice", "localhost").unwrap(), 2);
        assert_eq!(lookup(&s, &a).unwrap(), None);
        assert_eq!(lookup(&s, &b).unwrap(), None);
        assert!(lookup(&s, &c).unwrap().is_some());
    }
}
