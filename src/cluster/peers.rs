//! Which accounts with sessions on this node have resources on other nodes
//! too, and on which: the filter in front of `own.rs`, so that a message or
//! presence of an account held by this node alone (the common case) costs
//! no session-table read for its own resources elsewhere.
//!
//! Learned from the session table itself: each time this node writes an
//! account's entry (a bind, a presence change, an end) it sees the other
//! nodes' resources in it, remembers their nodes and tells them (a NATS
//! publish on `rookery.own.NODE`, `own.rs`) that it holds one too, or, when
//! its last one ended, that it holds none any more.
//!
//! Invariant: a node listed may no longer hold a resource (it died, or a
//! notice was lost): that costs one table read, which has the truth; an
//! account is never missing while a node that holds one of its resources
//! wrote the table after this node's session was recorded (it told this
//! node), except when a notice is lost (NATS down).

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

/// bare JID → the other nodes holding its resources.
#[derive(Default)]
pub struct Peers {
    map: Mutex<HashMap<String, BTreeSet<String>>>,
}

impl Peers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, BTreeSet<String>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `bare` may have resources on another node.
    pub fn elsewhere(&self, bare: &str) -> bool {
        self.lock().get(bare).is_some_and(|n| !n.is_empty())
    }

    /// `nodes` hold resources of `bare` (this node holds one too).
    pub fn add(&self, bare: &str, nodes: &[String]) {
        if nodes.is_empty() {
            return;
        }
        self.lock()
            .entry(bare.to_string())
            .or_default()
            .extend(nodes.iter().cloned());
    }

    /// `node` holds no resource of `bare` any more.
    pub fn remove(&self, bare: &str, node: &str) {
        let mut map = self.lock();
        if let Some(nodes) = map.get_mut(bare) {
            nodes.remove(node);
            if nodes.is_empty() {
                map.remove(bare);
            }
        }
    }

    /// This node holds no resource of `bare` any more.
    pub fn forget(&self, bare: &str) {
        self.lock().remove(bare);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_are_listed_while_another_node_holds_a_resource() {
        let p = Peers::default();
        assert!(!p.elsewhere("a@x"));
        p.add("a@x", &[]);
        assert!(!p.elsewhere("a@x"));
        p.add("a@x", &["n2".into(), "n3".into()]);
        assert!(p.elsewhere("a@x"));
        p.remove("a@x", "n2");
        assert!(p.elsewhere("a@x"));
        p.remove("a@x", "n3");
        assert!(!p.elsewhere("a@x"));
        p.add("a@x", &["n2".into()]);
        p.forget("a@x");
        assert!(!p.elsewhere("a@x"));
    }
}
