//! The nodes of each pubsub service domain, for the whole process, and the
//! per-call context ([`Call`]) that reads and writes them in the module
//! store.
//!
//! Invariants: all node state sits behind one mutex ([`state`]); a stanza is
//! processed with it held and the stanzas it produces are returned in
//! order, routed after the lock is released. Node records and
//! subscriptions are written through to the store (durable when the write
//! returns) before the answer is built, and read back once per service
//! domain after a start ([`Call::load`]). Store keys, under the service
//! domain as owner (module `mod_pubsub`):
//!
//! | key | value |
//! |---|---|
//! | `node:NAME` | the node record (configuration, creator, affiliations) as XML |
//! | `sub:NAME\0JID` | one subscription: `STATE SUBID DELIVER` |
//! | `item:NAME\0SEQ` | one item as XML (`SEQ`: 20 digits, publication order) |
//! | `iid:NAME\0ID` | the `SEQ` of the item with that id |
//! | `seq:NAME` | the last `SEQ` given out |
//!
//! `\0` cannot occur in a node name (XML forbids it), so one node's keys
//! never fall in another's prefix.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, OnceLock};

use jid::BareJid;

use super::node::{Node, Subscription};
use super::{Pubsub, MODULE};
use crate::module::ServerContext;
use crate::stanza::StanzaError;
use crate::store::{KeyRange, ModuleStore};

/// The nodes of one service domain.
#[derive(Default)]
pub struct Service {
    pub loaded: bool,
    pub nodes: BTreeMap<String, Node>,
}

/// Every service domain's nodes, for the whole process (they outlive a
/// `reload_config`, which rebuilds the module).
pub fn state() -> &'static Mutex<HashMap<String, Service>> {
    static STATE: OnceLock<Mutex<HashMap<String, Service>>> = OnceLock::new();
    STATE.get_or_init(|| Mutex::new(HashMap::new()))
}

pub fn node_key(name: &str) -> String {
    format!("node:{name}")
}
pub fn sub_key(name: &str, jid: &str) -> String {
    format!("sub:{name}\0{jid}")
}
pub fn item_prefix(name: &str) -> String {
    format!("item:{name}\0")
}
pub fn item_key(name: &str, seq: u64) -> String {
    format!("item:{name}\0{seq:020}")
}
pub fn iid_key(name: &str, id: &str) -> String {
    format!("iid:{name}\0{id}")
}
pub fn seq_key(name: &str) -> String {
    format!("seq:{name}")
}

/// What one stanza's processing needs about the service it runs in.
pub struct Call<'a> {
    pub ctx: &'a dyn ServerContext,
    pub ps: &'a Pubsub,
    /// The service domain.
    pub service: &'a str,
    pub owner: BareJid,
}

impl<'a> Call<'a> {
    pub fn new(ctx: &'a dyn ServerContext, ps: &'a Pubsub, service: &'a str) -> Option<Call<'a>> {
        Some(Call {
            ctx,
            ps,
            service,
            owner: BareJid::new(service).ok()?,
        })
    }

    pub fn store(&self) -> ModuleStore<'a> {
        self.ctx.store(MODULE)
    }

    /// Read the service's nodes and subscriptions once after a start.
    pub fn load(&self, svc: &mut Service) {
        if svc.loaded {
            return;
        }
        let limit = self.ps.max_items_node;
        let store = self.store();
        let rows = match store.scan(&self.owner, "node:") {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("pubsub {}: cannot read nodes: {e}", self.service);
                return;
            }
        };
        for (key, value) in rows {
            let name = &key["node:".len()..];
            let xml = String::from_utf8_lossy(&value);
            let Some(mut node) = self
                .ctx
                .parse_stored_xml(&xml, self.service)
                .and_then(|e| Node::from_stored(&e, limit))
            else {
                tracing::warn!(
                    "pubsub {}: node {name:?} has an unreadable record",
                    self.service
                );
                continue;
            };
            let prefix = item_prefix(name);
            node.count = store
                .count_range(&self.owner, &KeyRange::prefix(&prefix))
                .unwrap_or(0);
            let last = store
                .get(&self.owner, &seq_key(name))
                .ok()
                .flatten()
                .and_then(|v| String::from_utf8_lossy(&v).parse::<u64>().ok())
                .unwrap_or(0);
            node.next_seq = last + 1;
            svc.nodes.insert(name.to_string(), node);
        }
        if let Ok(rows) = store.scan(&self.owner, "sub:") {
            for (key, value) in rows {
                let Some((name, jid)) = key["sub:".len()..].split_once('\0') else {
                    continue;
                };
                let (Some(node), Some(sub)) = (
                    svc.nodes.get_mut(name),
                    Subscription::from_stored(&String::from_utf8_lossy(&value)),
                ) else {
                    continue;
                };
                node.subscriptions.insert(jid.to_string(), sub);
            }
        }
        svc.loaded = true;
    }

    /// Write the node record (durable).
    pub fn save_node(&self, name: &str, node: &Node) -> Result<(), StanzaError> {
        self.store().put(
            &self.owner,
            &node_key(name),
            node.to_stored().to_xml("").as_bytes(),
        )?;
        Ok(())
    }

    /// Write (`Some`) or remove one subscription (durable).
    pub fn save_sub(
        &self,
        name: &str,
        jid: &str,
        sub: Option<&Subscription>,
    ) -> Result<(), StanzaError> {
        let key = sub_key(name, jid);
        match sub {
            Some(s) => self
                .store()
                .put(&self.owner, &key, s.to_stored().as_bytes())?,
            None => {
                self.store().delete(&self.owner, &key)?;
            }
        }
        Ok(())
    }

    /// Remove every key of a node (record, subscriptions, items), in
    /// batches so a large node is never read whole.
    pub fn delete_node_data(&self, name: &str) -> Result<(), StanzaError> {
        for prefix in [
            item_prefix(name),
            format!("iid:{name}\0"),
            format!("sub:{name}\0"),
        ] {
            self.delete_prefix(&prefix)?;
        }
        self.store()
            .delete_many(&self.owner, &[node_key(name), seq_key(name)])?;
        Ok(())
    }

    /// Remove every key starting with `prefix`, 1000 at a time.
    pub fn delete_prefix(&self, prefix: &str) -> Result<(), StanzaError> {
        let store = self.store();
        loop {
            let rows = store.scan_range(&self.owner, &KeyRange::prefix(prefix), false, 1000)?;
            if rows.is_empty() {
                return Ok(());
            }
            let keys: Vec<String> = rows.into_iter().map(|(k, _)| k).collect();
            store.delete_many(&self.owner, &keys)?;
        }
    }
}
