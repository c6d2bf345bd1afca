//! Server dialback (XEP-0220) with keys generated as XEP-0185 recommends:
//! `HMAC-SHA256(SHA256(secret), receiving + ' ' + originating + ' ' + stream ID)`
//! in lower-case hex, where the secret is random, made on the first start and
//! kept in the database (so a key issued before a restart is still
//! confirmed after it, as XEP-0185 asks of a server's secret). A receiving
//! server checks a key by connecting to the originating domain's
//! authoritative server and asking it (`db:verify`).

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::stream::{db_xml, Fail, NS_DIALBACK};
use crate::server::Server;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The dialback key for a stream `id` from `originating` to `receiving`.
pub fn key(secret: &str, receiving: &str, originating: &str, id: &str) -> String {
    let k = hex(&Sha256::digest(secret.as_bytes()));
    let mut mac = Hmac::<Sha256>::new_from_slice(k.as_bytes()).expect("HMAC takes any key");
    mac.update(format!("{receiving} {originating} {id}").as_bytes());
    hex(&mac.finalize().into_bytes())
}

/// Whether `given` is the key we would have made (constant time).
pub fn check(secret: &str, receiving: &str, originating: &str, id: &str, given: &str) -> bool {
    use subtle::ConstantTimeEq;
    let expected = key(secret, receiving, originating, id);
    expected.as_bytes().ct_eq(given.trim().as_bytes()).into()
}

/// A new random secret.
pub fn new_secret() -> String {
    use rand::Rng;
    let v: [u8; 32] = rand::thread_rng().gen();
    hex(&v)
}

/// Where the secret is kept: server-wide values live under the empty host
/// and user of the modules' key/value store (no account has them).
const SECRET_MODULE: &str = "s2s";
const SECRET_KEY: &str = "dialback_secret";

/// The stored dialback secret; made and stored (durably) on the first start.
pub fn stored_secret(storage: &dyn crate::storage::ModuleStore) -> Result<String, String> {
    let read = storage
        .module_get(
            crate::storage::AccountKey::new("", ""),
            SECRET_MODULE,
            SECRET_KEY,
        )
        .map_err(|e| format!("reading the dialback secret: {e}"))?;
    if let Some(v) = read {
        match String::from_utf8(v) {
            Ok(s) if s.len() >= 32 => return Ok(s),
            _ => tracing::warn!("the stored dialback secret is unusable; making a new one"),
        }
    }
    let secret = new_secret();
    storage
        .module_put(
            crate::storage::AccountKey::new("", ""),
            SECRET_MODULE,
            SECRET_KEY,
            secret.as_bytes(),
        )
        .map_err(|e| format!("storing the dialback secret: {e}"))?;
    Ok(secret)
}

/// As the receiving server `local`: ask `remote`'s authoritative server
/// whether `key` is the key for stream `id`. `Ok(false)`: it said invalid.
pub async fn verify_remote(
    server: &Arc<Server>,
    local: &str,
    remote: &str,
    id: &str,
    key: &str,
) -> Result<bool, Fail> {
    let wait = server.config().s2s.connect_timeout;
    let run = async {
        let mut opened = super::outgoing::open(server, local, remote).await?;
        let conn = &mut opened.conn;
        conn.send(&db_xml("verify", local, remote, Some(id), None, key))
            .await?;
        for _ in 0..16 {
            let el = conn.next_element(wait).await?;
            if el.name == "verify" && el.ns == NS_DIALBACK && el.attr("id") == Some(id) {
                conn.close().await;
                return Ok(el.attr("type") == Some("valid"));
            }
        }
        Err(Fail::Unreachable("no dialback answer".into()))
    };
    match tokio::time::timeout(wait + Duration::from_secs(1), run).await {
        Ok(r) => r,
        Err(_) => Err(Fail::Timeout),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xep0185_example_key() {
        // The XEP's example inputs; the value was computed independently
        // with Python's hmac/hashlib from the algorithm of XEP-0185 §2.
        assert_eq!(
            key(
                "s3cr3tf0rd14lb4ck",
                "example.net",
                "example.com",
                "D60000229F"
            ),
            "008c689ff366b50c63d69a3e2d2c0e0e1f8404b0118eb688a0102c87cb691bdc"
        );
        assert!(check(
            "s3cr3tf0rd14lb4ck",
            "example.net",
            "example.com",
            "D60000229F",
            "008c689ff366b50c63d69a3e2d2c0e0e1f8404b0118eb688a0102c87cb691bdc"
        ));
        assert!(!check(
            "s3cr3tf0rd14lb4ck",
            "example.net",
            "example.com",
            "D6",
            "37"
        ));
    }
}
