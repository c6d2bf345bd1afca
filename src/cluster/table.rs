//! The cluster's session table as stored in NATS JetStream key-value: one
//! key per account (`s.` + the bare JID in unpadded URL-safe base64, which
//! keeps to the key alphabet NATS allows), whose value is a JSON object
//! resource → where that session is (node, the node's boot id, priority,
//! availability). Pure functions only; `mod.rs` does the I/O.
//!
//! Invariant: an entry is live only while its node's heartbeat key holds
//! the same boot id, so a node that died and came back under the same name
//! does not revive its old sessions; entries of other boots are removed by
//! the sweeper.

use std::collections::BTreeMap;

use base64::Engine;
use serde::{Deserialize, Serialize};

/// One session as the table holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    /// The node's name.
    pub n: String,
    /// The node's boot id.
    pub b: String,
    /// Priority of its last available presence.
    pub p: i32,
    /// Available (sent available presence).
    pub a: bool,
}

/// An account's sessions: resource → where.
pub type Resources = BTreeMap<String, Held>;

/// The key of an account's entry.
pub fn key(bare: &str) -> String {
    format!(
        "s.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bare.as_bytes())
    )
}

/// The bare JID of an account's key.
pub fn bare_of_key(key: &str) -> Option<String> {
    let b = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(key.strip_prefix("s.")?)
        .ok()?;
    String::from_utf8(b).ok()
}

/// The heartbeat key of a node.
pub fn node_key(node: &str) -> String {
    format!("n.{node}")
}

/// The node name of a heartbeat key.
pub fn node_of_key(key: &str) -> Option<&str> {
    key.strip_prefix("n.")
}

/// Decode an entry's value; anything unreadable counts as empty (it is
/// rewritten at the next change).
pub fn decode(value: &[u8]) -> Resources {
    serde_json::from_slice(value).unwrap_or_default()
}

pub fn encode(r: &Resources) -> Vec<u8> {
    serde_json::to_vec(r).unwrap_or_default()
}

/// Remove the resources held by boots `dead` says are gone; whether any was.
pub fn prune(r: &mut Resources, dead: impl Fn(&Held) -> bool) -> bool {
    let before = r.len();
    r.retain(|_, h| !dead(h));
    r.len() != before
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_use_the_nats_alphabet_and_values_round_trip() {
        let k = key("ünïcode+x@example.org");
        assert!(k
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)));
        assert_ne!(key("a@b"), key("a@c"));
        assert_eq!(
            bare_of_key(&key("ünïcode+x@example.org")).as_deref(),
            Some("ünïcode+x@example.org")
        );
        assert_eq!(bare_of_key("n.node1"), None);
        let mut r = Resources::new();
        r.insert(
            "phone".into(),
            Held {
                n: "n1".into(),
                b: "x".into(),
                p: 5,
                a: true,
            },
        );
        r.insert(
            "pc".into(),
            Held {
                n: "n2".into(),
                b: "y".into(),
                p: 0,
                a: false,
            },
        );
        assert_eq!(decode(&encode(&r)), r);
        assert!(decode(b"not json").is_empty());
        assert!(prune(&mut r, |h| h.n == "n2"));
        assert_eq!(r.len(), 1);
        assert!(!prune(&mut r, |h| h.n == "n2"));
        assert_eq!(node_of_key(&node_key("n1")), Some("n1"));
    }
}
