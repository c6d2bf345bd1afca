//! XEP-0163 Personal Eventing Protocol (`mod_pep`): the XEP-0060 subset
//! clients use, on nodes owned by each account (its bare JID).
//!
//! - publish (owner only), with node auto-creation and publish-options
//!   (`pubsub#access_model` open/presence/whitelist, `pubsub#max_items`,
//!   `pubsub#persist_items`, `pubsub#send_last_published_item`); options
//!   that do not match an existing node's configuration fail with
//!   `<precondition-not-met/>`, and the owner can reconfigure the node
//!   (pubsub#owner configure) or delete it;
//! - items retrieval (all, the newest `max_items`, or by id) and retract,
//!   subject to the node's access model;
//! - notifications (`headline` messages with a pubsub#event payload) to the
//!   owner's own resources and to contacts allowed by the access model
//!   whose XEP-0115 entity capabilities list `NODE+notify`
//!   ("auto-subscription" through presence subscription and caps);
//! - the last item of each such node sent when a session of the owner or of
//!   a contact becomes available (and again when its caps change).
//!
//! Caps: the `<c/>` element of a session's available presence names a
//! `ver` hash; the server asks the client for disco#info of `node#ver` once
//! per hash, verifies the hash (XEP-0115 §5.1, SHA-1) and caches the
//! `+notify` nodes in memory; a hash that does not verify is used for that
//! session only, never cached for others.
//!
//! Storage: each node is one record of the module's key/value space, key
//! `node:NAME`, value the node as XML
//! (`<node access='presence' max='1'><item id='..'>payload</item>...</node>`,
//! oldest item first). Publish, retract, items and configure read the node
//! from the database (iq paths). For accounts with sessions a summary of
//! each node is cached in memory (access model and last item, its payload
//! only up to 4 KiB, so avatar data does not sit in memory); notifications
//! and last-item delivery use it. Offline owners' nodes are read when a
//! contact logs in.
//!
//! Bridges to other storage (XEP-0402 bookmarks in `bookmarks.rs`, XEP-0398
//! avatars in `avatar.rs`) attach a [`PepHook`]; this module knows none of
//! them and imports neither.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use jid::{BareJid, FullJid, Jid};

use crate::caps::caps_hash;
use crate::element::Element;
use crate::module::{Hooks, Identity, IqRequest, IqResult, Module, ServerContext};
use crate::ns;
use crate::pubsub::forms::{form_fields, pubsub_error};
use crate::stanza::{Condition, ErrorType, StanzaError};

/// Default `max_items_node`: the most items a node keeps (and what
/// `pubsub#max_items` = `max` means).
pub const DEFAULT_MAX_ITEMS: usize = 1000;
/// Default `max_payload_size` in bytes of one item's payload.
pub const DEFAULT_MAX_PAYLOAD: usize = 256 * 1024;

const MODULE: &str = "mod_pep";
/// Namespace of the stored node records (never on the wire).
const NS_STORE: &str = "urn:rookery:pep:0";
const PUBLISH_OPTIONS: &str = "http://jabber.org/protocol/pubsub#publish-options";
const NODE_CONFIG: &str = "http://jabber.org/protocol/pubsub#node_config";
/// Caps disco#info queries the server waits for at most.
const MAX_PENDING_CAPS: usize = 10_000;
/// Verified caps hashes kept.
const MAX_CAPS_CACHE: usize = 10_000;

/// Who may retrieve items and receive notifications.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Open,
    Presence,
    Whitelist,
}

impl Access {
    fn parse(s: &str) -> Option<Access> {
        match s {
            "open" => Some(Access::Open),
            "presence" => Some(Access::Presence),
            "whitelist" => Some(Access::Whitelist),
            _ => None,
        }
    }
    fn as_str(self) -> &'static str {
        match self {
            Access::Open => "open",
            Access::Presence => "presence",
            Access::Whitelist => "whitelist",
        }
    }
}

/// One node.
#[derive(Clone, Debug)]
struct Node {
    access: Access,
    max_items: usize,
    /// (id, payload), oldest first.
    items: Vec<(String, Element)>,
}

impl Node {
    fn to_xml(&self) -> String {
        let mut e = Element::new("node", NS_STORE)
            .with_attr("access", self.access.as_str())
            .with_attr("max", self.max_items.to_string());
        for (id, payload) in &self.items {
            e = e.with_child(
                Element::new("item", NS_STORE)
                    .with_attr("id", id.as_str())
                    .with_child(payload.clone()),
            );
        }
        e.to_xml(ns::CLIENT)
    }
    fn from_element(e: &Element) -> Option<Node> {
        Some(Node {
            access: Access::parse(e.attr("access")?)?,
            max_items: e.attr("max")?.parse().ok()?,
            items: e
                .child_elements()
                .filter_map(|i| Some((i.attr("id")?.to_string(), i.first_child()?.clone())))
                .collect(),
        })
    }
}

/// What the cache keeps of a node: its access model and its last item
/// (the payload only if small; large ones, like avatar data, are read from
/// the database when needed).
#[derive(Clone, Debug)]
struct Summary {
    access: Access,
    /// (id, payload if at most [`CACHED_PAYLOAD`] bytes).
    last: Option<(String, Option<Element>)>,
}

/// Largest last-item payload kept in memory.
const CACHED_PAYLOAD: usize = 4096;

impl Summary {
    fn of(node: &Node) -> Summary {
        Summary {
            access: node.access,
            last: node.items.last().map(|(id, p)| {
                let small = p.to_xml(ns::CLIENT).len() <= CACHED_PAYLOAD;
                (id.clone(), small.then(|| p.clone()))
            }),
        }
    }
}

type Nodes = BTreeMap<String, Summary>;

/// Node settings from a data form (publish-options or node configuration).
#[derive(Default, Debug)]
struct Options {
    access: Option<Access>,
    max_items: Option<usize>,
}

/// `mod_pep`.
pub struct Pep {
    max_items: usize,
    max_payload: usize,
    /// Node summaries of accounts with sessions.
    nodes: RwLock<HashMap<BareJid, Arc<Nodes>>>,
    /// Serialises read-modify-write of one account's nodes.
    write: Mutex<()>,
    /// Each session's caps `ver` (from its last available presence).
    session_caps: RwLock<HashMap<FullJid, String>>,
    /// Verified caps hash → the nodes its `+notify` features name.
    caps: RwLock<HashMap<String, Arc<HashSet<String>>>>,
    /// Sessions whose caps did not verify: their own notify set.
    own_caps: RwLock<HashMap<FullJid, Arc<HashSet<String>>>>,
    /// Outstanding caps queries: iq id → (ver, node#ver, session asked).
    pending: Mutex<HashMap<String, (String, FullJid)>>,
    next_id: AtomicU64,
    /// Bridges told of node changes, in the order the registry added them.
    hooks: Vec<Arc<dyn PepHook>>,
}

/// A bridge from PEP to another module's storage (XEP-0402 bookmarks,
/// XEP-0398 avatars): PEP calls it and never names it, so the bridge
/// depends on PEP and not the other way round.
pub trait PepHook: Send + Sync {
    /// Features the bridge adds to each account's disco#info.
    fn account_features(&self) -> Vec<&'static str> {
        Vec::new()
    }
    /// A node of `owner` was written (`Some(items)`, oldest first) or deleted
    /// (`None`) by a publish, retract or delete. Called with the account's
    /// PEP write lock held: it must not call back into the [`Pep`].
    fn node_stored(
        &self,
        _ctx: &dyn ServerContext,
        _owner: &BareJid,
        _node: &str,
        _items: Option<&[(String, Element)]>,
    ) {
    }
    /// The owner published an item on `node` (not through
    /// [`Pep::publish_as_owner`]), after notifications went out; the lock is
    /// released, so the hook may read or publish through `pep`.
    fn item_published(&self, _ctx: &dyn ServerContext, _pep: &Pep, _owner: &BareJid, _node: &str) {}
}

fn now_id() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}{:09}", d.as_secs(), d.subsec_nanos())
}

impl Pep {
    pub fn new(max_items: usize, max_payload: usize) -> Pep {
        Pep {
            max_items: max_items.max(1),
            max_payload,
            nodes: RwLock::default(),
            write: Mutex::new(()),
            session_caps: RwLock::default(),
            caps: RwLock::default(),
            own_caps: RwLock::default(),
            pending: Mutex::default(),
            next_id: AtomicU64::new(1),
            hooks: Vec::new(),
        }
    }

    /// Add a bridge (before the module is shared).
    pub fn with_hook(mut self, hook: Arc<dyn PepHook>) -> Pep {
        self.hooks.push(hook);
        self
    }

    /// Tell the hooks a node was stored (write lock held).
    fn node_stored(
        &self,
        ctx: &dyn ServerContext,
        owner: &BareJid,
        name: &str,
        items: Option<&[(String, Element)]>,
    ) {
        for h in &self.hooks {
            h.node_stored(ctx, owner, name, items);
        }
    }

    /// Replace all items of one of `owner`'s nodes on the owner's behalf
    /// (creating it with `access` and the largest `max_items` if needed):
    /// `f` maps the current items to the new ones, oldest first (trimmed
    /// to the node's `max_items`); the owner's subscribers are notified of
    /// the items added or changed and of those removed. Hooks are not
    /// called: the caller is the bridge that made the change.
    pub fn replace_items(
        &self,
        ctx: &dyn ServerContext,
        owner: &BareJid,
        name: &str,
        access: Access,
        f: impl FnOnce(&[(String, Element)]) -> Vec<(String, Element)>,
    ) -> Result<(), StanzaError> {
        let _g = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.load_node(ctx, owner, name)?;
        let mut node = old.clone().unwrap_or(Node {
            access,
            max_items: self.max_items,
            items: Vec::new(),
        });
        let old_items = old.map(|n| n.items).unwrap_or_default();
        let mut items = f(&old_items);
        let excess = items.len().saturating_sub(node.max_items);
        items.drain(..excess);
        let changed: Vec<(String, Element)> = items
            .iter()
            .filter(|(id, p)| !old_items.iter().any(|(oi, op)| oi == id && op == p))
            .cloned()
            .collect();
        let removed: Vec<String> = old_items
            .iter()
            .filter(|(oi, _)| !items.iter().any(|(i, _)| i == oi))
            .map(|(oi, _)| oi.clone())
            .collect();
        if changed.is_empty() && removed.is_empty() {
            return Ok(());
        }
        node.items = items;
        self.store(ctx, owner, name, Some(node.clone()))?;
        drop(_g);
        for (id, payload) in changed {
            let event = Element::new("items", ns::PUBSUB_EVENT)
                .with_attr("node", name)
                .with_child(
                    Element::new("item", ns::PUBSUB_EVENT)
                        .with_attr("id", id)
                        .with_child(payload),
                );
            self.notify(ctx, owner, name, &node, &event);
        }
        if !removed.is_empty() {
            let mut event = Element::new("items", ns::PUBSUB_EVENT).with_attr("node", name);
            for id in removed {
                event =
                    event.with_child(Element::new("retract", ns::PUBSUB_EVENT).with_attr("id", id));
            }
            self.notify(ctx, owner, name, &node, &event);
        }
        Ok(())
    }

    /// Parse publish-options or a node configuration form.
    fn options(&self, x: &Element, form_type: &str) -> Result<Options, StanzaError> {
        let fields = form_fields(x);
        if let Some(ft) = fields.get("FORM_TYPE") {
            if ft.first().map(String::as_str) != Some(form_type) {
                return Err(StanzaError::bad_request().with_text("wrong FORM_TYPE"));
            }
        }
        let mut o = Options::default();
        if let Some(v) = fields.get("pubsub#access_model").and_then(|v| v.first()) {
            o.access = Some(Access::parse(v).ok_or_else(|| {
                pubsub_error(
                    ErrorType::Cancel,
                    Condition::FeatureNotImplemented,
                    "unsupported",
                )
                .with_text(format!("access model {v} is not supported"))
            })?);
        }
        if let Some(v) = fields.get("pubsub#max_items").and_then(|v| v.first()) {
            o.max_items = Some(if v == "max" {
                self.max_items
            } else {
                let n: usize = v
                    .parse()
                    .map_err(|_| StanzaError::not_acceptable().with_text("bad pubsub#max_items"))?;
                if n > self.max_items {
                    return Err(StanzaError::not_acceptable()
                        .with_text(format!("at most {} items per node", self.max_items)));
                }
                n.max(1)
            });
        }
        if let Some(v) = fields.get("pubsub#persist_items").and_then(|v| v.first()) {
            if v == "false" || v == "0" {
                return Err(pubsub_error(
                    ErrorType::Cancel,
                    Condition::Conflict,
                    "precondition-not-met",
                )
                .with_text("items are always persistent"));
            }
        }
        Ok(o)
    }

    fn load_uncached(&self, ctx: &dyn ServerContext, owner: &BareJid) -> Nodes {
        let rows = match ctx.store(MODULE).scan(owner, "node:") {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("reading PEP nodes of {owner}: {e}");
                return Nodes::new();
            }
        };
        rows.into_iter()
            .filter_map(|(k, v)| {
                let name = k.strip_prefix("node:")?.to_string();
                let xml = String::from_utf8(v).ok()?;
                let node = ctx.parse_xml(&xml).and_then(|e| Node::from_element(&e));
                if node.is_none() {
                    tracing::error!("PEP node {name} of {owner} is unreadable; ignored");
                }
                Some((name, Summary::of(&node?)))
            })
            .collect()
    }

    /// One node, read from the database (iq paths: publish, items, retract, configure).
    fn load_node(
        &self,
        ctx: &dyn ServerContext,
        owner: &BareJid,
        name: &str,
    ) -> Result<Option<Node>, StanzaError> {
        let Some(bytes) = ctx.store(MODULE).get(owner, &format!("node:{name}"))? else {
            return Ok(None);
        };
        let node = String::from_utf8(bytes)
            .ok()
            .and_then(|xml| ctx.parse_xml(&xml))
            .and_then(|e| Node::from_element(&e));
        if node.is_none() {
            tracing::error!("PEP node {name} of {owner} is unreadable");
            return Err(StanzaError::internal_server_error());
        }
        Ok(node)
    }

    /// Summaries of the nodes of `owner`: from memory for accounts with sessions.
    fn nodes_of(&self, ctx: &dyn ServerContext, owner: &BareJid) -> Arc<Nodes> {
        if let Some(n) = self
            .nodes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(owner)
        {
            return n.clone();
        }
        let nodes = Arc::new(self.load_uncached(ctx, owner));
        if !ctx.sessions(owner).is_empty() {
            // Never replace an entry a concurrent write may have updated.
            return self
                .nodes
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .entry(owner.clone())
                .or_insert(nodes)
                .clone();
        }
        nodes
    }

    /// Write one node (or remove it) durably, then the cached copy.
    fn store(
        &self,
        ctx: &dyn ServerContext,
        owner: &BareJid,
        name: &str,
        node: Option<Node>,
    ) -> Result<(), StanzaError> {
        let key = format!("node:{name}");
        match &node {
            Some(n) => ctx.store(MODULE).put(owner, &key, n.to_xml().as_bytes())?,
            None => {
                ctx.store(MODULE).delete(owner, &key)?;
            }
        }
        let mut map = self.nodes.write().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = map.get(owner) {
            let mut copy = (**old).clone();
            match node {
                Some(n) => copy.insert(name.to_string(), Summary::of(&n)),
                None => copy.remove(name),
            };
            map.insert(owner.clone(), Arc::new(copy));
        }
        Ok(())
    }

    /// Whether `who` may see `owner`'s node.
    fn allowed(ctx: &dyn ServerContext, owner: &BareJid, access: Access, who: &BareJid) -> bool {
        if who == owner {
            return true;
        }
        match access {
            Access::Open => true,
            Access::Presence => ctx.subscription(owner, who).has_from(),
            Access::Whitelist => false,
        }
    }

    fn access_error(access: Access) -> StanzaError {
        match access {
            Access::Whitelist => {
                pubsub_error(ErrorType::Cancel, Condition::NotAllowed, "closed-node")
            }
            _ => pubsub_error(
                ErrorType::Auth,
                Condition::NotAuthorized,
                "presence-subscription-required",
            ),
        }
    }

    /// The `+notify` nodes of a session, if its caps are known.
    fn notify_set(&self, jid: &FullJid) -> Option<Arc<HashSet<String>>> {
        if let Some(own) = self
            .own_caps
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(jid)
        {
            return Some(own.clone());
        }
        let ver = self
            .session_caps
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(jid)
            .cloned()?;
        self.caps
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&ver)
            .cloned()
    }

    fn event(owner: &BareJid, to: &FullJid, items: Element) -> Element {
        Element::new("message", ns::CLIENT)
            .with_attr("from", owner.as_str())
            .with_attr("to", to.as_str())
            .with_attr("type", "headline")
            .with_attr("id", now_id())
            .with_child(Element::new("event", ns::PUBSUB_EVENT).with_child(items))
    }

    /// Send `items` (an `<items node='..'/>` of pubsub#event) to every
    /// available session allowed to see `node` that asked for `name+notify`.
    fn notify(
        &self,
        ctx: &dyn ServerContext,
        owner: &BareJid,
        name: &str,
        node: &Node,
        items: &Element,
    ) {
        let mut accounts = vec![owner.clone()];
        if node.access != Access::Whitelist {
            for (contact, sub) in ctx.roster_contacts(owner) {
                if sub.has_from() && contact != *owner {
                    accounts.push(contact);
                }
            }
        }
        for account in accounts {
            for s in ctx.sessions(&account) {
                if !s.available {
                    continue;
                }
                if self.notify_set(&s.jid).is_some_and(|n| n.contains(name)) {
                    ctx.route(Self::event(owner, &s.jid, items.clone()));
                }
            }
        }
    }

    /// Send a newly available session the last item of every node it wants
    /// notifications for: its own account's and its contacts'.
    fn send_last_items(&self, ctx: &dyn ServerContext, session: &FullJid) {
        let Some(notify) = self.notify_set(session) else {
            return;
        };
        if notify.is_empty() {
            return;
        }
        let me = session.to_bare();
        let mut owners = vec![me.clone()];
        for (contact, sub) in ctx.roster_contacts(&me) {
            // We see the contact's presence, so its presence-access nodes.
            if sub.has_to()
                && contact != me
                && ctx.hosts().iter().any(|h| h == contact.domain().as_str())
            {
                owners.push(contact);
            }
        }
        for owner in owners {
            let nodes = self.nodes_of(ctx, &owner);
            for (name, node) in nodes.iter() {
                if !notify.contains(name) || !Self::allowed(ctx, &owner, node.access, &me) {
                    continue;
                }
                let Some((id, cached)) = &node.last else {
                    continue;
                };
                let payload = match cached {
                    Some(p) => Some(p.clone()),
                    // Too large to keep in memory: read it.
                    None => self
                        .load_node(ctx, &owner, name)
                        .ok()
                        .flatten()
                        .and_then(|n| n.items.last().map(|(_, p)| p.clone())),
                };
                if let Some(payload) = payload {
                    let items = Element::new("items", ns::PUBSUB_EVENT)
                        .with_attr("node", name.as_str())
                        .with_child(
                            Element::new("item", ns::PUBSUB_EVENT)
                                .with_attr("id", id.as_str())
                                .with_child(payload),
                        );
                    ctx.route(Self::event(&owner, session, items));
                }
            }
        }
    }

    fn publish(&self, ctx: &dyn ServerContext, req: &IqRequest<'_>, publish: &Element) -> IqResult {
        if !req.from_owner() {
            return Err(StanzaError::forbidden());
        }
        let owner = req.account();
        let name = publish
            .attr("node")
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                pubsub_error(ErrorType::Modify, Condition::BadRequest, "nodeid-required")
            })?;
        let items: Vec<&Element> = publish
            .child_elements()
            .filter(|c| c.is("item", ns::PUBSUB))
            .collect();
        if items.len() > 1 {
            return Err(pubsub_error(
                ErrorType::Modify,
                Condition::BadRequest,
                "invalid-payload",
            ));
        }
        let item = items.first().copied();
        let payloads: Vec<&Element> = item
            .map(|i| i.child_elements().collect())
            .unwrap_or_default();
        if payloads.len() != 1 {
            let app = if payloads.is_empty() {
                "payload-required"
            } else {
                "invalid-payload"
            };
            return Err(pubsub_error(ErrorType::Modify, Condition::BadRequest, app));
        }
        let payload = payloads[0].clone();
        if payload.to_xml(ns::CLIENT).len() > self.max_payload {
            return Err(pubsub_error(
                ErrorType::Modify,
                Condition::NotAcceptable,
                "payload-too-big",
            ));
        }
        let id = item
            .and_then(|i| i.attr("id"))
            .filter(|i| !i.is_empty())
            .map(str::to_string)
            .unwrap_or_else(now_id);
        let options = match req
            .payload
            .child("publish-options", ns::PUBSUB)
            .and_then(|p| p.child("x", ns::DATA_FORMS))
        {
            Some(x) => self.options(x, PUBLISH_OPTIONS)?,
            None => Options::default(),
        };
        self.put_item(ctx, &owner, name, (&id, payload), options, true)?;
        Ok(Some(
            Element::new("pubsub", ns::PUBSUB).with_child(
                Element::new("publish", ns::PUBSUB)
                    .with_attr("node", name)
                    .with_child(Element::new("item", ns::PUBSUB).with_attr("id", id)),
            ),
        ))
    }

    /// Store an item (replacing one with the same id) on a node of
    /// `owner`, creating the node with `options` if needed, and notify.
    fn put_item(
        &self,
        ctx: &dyn ServerContext,
        owner: &BareJid,
        name: &str,
        (id, payload): (&str, Element),
        options: Options,
        convert: bool,
    ) -> Result<(), StanzaError> {
        let _g = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let mut node = match self.load_node(ctx, owner, name)? {
            Some(existing) => {
                let mismatch = options.access.is_some_and(|a| a != existing.access)
                    || options.max_items.is_some_and(|m| m != existing.max_items);
                if mismatch {
                    return Err(pubsub_error(
                        ErrorType::Cancel,
                        Condition::Conflict,
                        "precondition-not-met",
                    ));
                }
                existing
            }
            None => Node {
                access: options.access.unwrap_or(Access::Presence),
                max_items: options.max_items.unwrap_or(1),
                items: Vec::new(),
            },
        };
        node.items.retain(|(i, _)| *i != id);
        node.items.push((id.to_string(), payload.clone()));
        let excess = node.items.len().saturating_sub(node.max_items);
        node.items.drain(..excess);
        self.store(ctx, owner, name, Some(node.clone()))?;
        self.node_stored(ctx, owner, name, Some(&node.items));
        drop(_g);
        let event = Element::new("items", ns::PUBSUB_EVENT)
            .with_attr("node", name)
            .with_child(
                Element::new("item", ns::PUBSUB_EVENT)
                    .with_attr("id", id)
                    .with_child(payload),
            );
        self.notify(ctx, owner, name, &node, &event);
        if convert {
            for h in &self.hooks {
                h.item_published(ctx, self, owner, name);
            }
        }
        Ok(())
    }

    /// Publish an item on the owner's behalf (a node created here gets the
    /// defaults), without converting it back to the storage it came from.
    pub fn publish_as_owner(
        &self,
        ctx: &dyn ServerContext,
        owner: &BareJid,
        name: &str,
        id: &str,
        payload: Element,
    ) -> Result<(), StanzaError> {
        self.put_item(ctx, owner, name, (id, payload), Options::default(), false)
    }

    /// The last item of one of `owner`'s nodes (id and payload).
    pub fn last_item(
        &self,
        ctx: &dyn ServerContext,
        owner: &BareJid,
        name: &str,
    ) -> Option<(String, Element)> {
        self.load_node(ctx, owner, name).ok().flatten()?.items.pop()
    }

    /// The item with this id on one of `owner`'s nodes.
    pub fn item(
        &self,
        ctx: &dyn ServerContext,
        owner: &BareJid,
        name: &str,
        id: &str,
    ) -> Option<Element> {
        let node = self.load_node(ctx, owner, name).ok().flatten()?;
        node.items
            .into_iter()
            .find(|(i, _)| i == id)
            .map(|(_, p)| p)
    }

    fn items(&self, ctx: &dyn ServerContext, req: &IqRequest<'_>, items: &Element) -> IqResult {
        let owner = req.account();
        let name = items.attr("node").ok_or_else(|| {
            pubsub_error(ErrorType::Modify, Condition::BadRequest, "nodeid-required")
        })?;
        let node = self
            .load_node(ctx, &owner, name)?
            .ok_or_else(StanzaError::item_not_found)?;
        if !Self::allowed(ctx, &owner, node.access, &req.from.to_bare()) {
            return Err(Self::access_error(node.access));
        }
        let wanted: Vec<&str> = items
            .child_elements()
            .filter(|c| c.is("item", ns::PUBSUB))
            .filter_map(|c| c.attr("id"))
            .collect();
        let mut selected: Vec<&(String, Element)> = if wanted.is_empty() {
            node.items.iter().collect()
        } else {
            node.items
                .iter()
                .filter(|(id, _)| wanted.contains(&id.as_str()))
                .collect()
        };
        if let Some(max) = items
            .attr("max_items")
            .and_then(|m| m.parse::<usize>().ok())
        {
            let skip = selected.len().saturating_sub(max);
            selected.drain(..skip);
        }
        let mut out = Element::new("items", ns::PUBSUB).with_attr("node", name);
        for (id, payload) in selected {
            out = out.with_child(
                Element::new("item", ns::PUBSUB)
                    .with_attr("id", id.as_str())
                    .with_child(payload.clone()),
            );
        }
        Ok(Some(Element::new("pubsub", ns::PUBSUB).with_child(out)))
    }

    fn retract(&self, ctx: &dyn ServerContext, req: &IqRequest<'_>, retract: &Element) -> IqResult {
        if !req.from_owner() {
            return Err(StanzaError::forbidden());
        }
        let owner = req.account();
        let name = retract.attr("node").ok_or_else(|| {
            pubsub_error(ErrorType::Modify, Condition::BadRequest, "nodeid-required")
        })?;
        let ids: Vec<String> = retract
            .child_elements()
            .filter(|c| c.is("item", ns::PUBSUB))
            .filter_map(|c| c.attr("id").map(str::to_string))
            .collect();
        if ids.is_empty() {
            return Err(pubsub_error(
                ErrorType::Modify,
                Condition::BadRequest,
                "item-required",
            ));
        }
        let _g = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let mut node = self
            .load_node(ctx, &owner, name)?
            .ok_or_else(StanzaError::item_not_found)?;
        let before = node.items.len();
        node.items.retain(|(i, _)| !ids.contains(i));
        if node.items.len() == before {
            return Err(StanzaError::item_not_found());
        }
        self.store(ctx, &owner, name, Some(node.clone()))?;
        self.node_stored(ctx, &owner, name, Some(&node.items));
        drop(_g);
        if matches!(retract.attr("notify"), Some("true") | Some("1")) {
            let mut event = Element::new("items", ns::PUBSUB_EVENT).with_attr("node", name);
            for id in &ids {
                event = event.with_child(
                    Element::new("retract", ns::PUBSUB_EVENT).with_attr("id", id.as_str()),
                );
            }
            self.notify(ctx, &owner, name, &node, &event);
        }
        Ok(None)
    }

    fn config_form(node: &Node) -> Element {
        let field = |var: &str, value: String| {
            Element::new("field", ns::DATA_FORMS)
                .with_attr("var", var)
                .with_child(Element::new("value", ns::DATA_FORMS).with_text(value))
        };
        let mut ft = field("FORM_TYPE", NODE_CONFIG.to_string());
        ft.set_attr("type", "hidden");
        let mut access = field("pubsub#access_model", node.access.as_str().to_string());
        access.set_attr("type", "list-single");
        for a in ["open", "presence", "whitelist"] {
            access = access.with_child(
                Element::new("option", ns::DATA_FORMS)
                    .with_child(Element::new("value", ns::DATA_FORMS).with_text(a)),
            );
        }
        Element::new("x", ns::DATA_FORMS)
            .with_attr("type", "form")
            .with_child(ft)
            .with_child(access)
            .with_child(field("pubsub#max_items", node.max_items.to_string()))
            .with_child(field("pubsub#persist_items", "true".into()))
    }

    /// pubsub#owner: configure (get/set) and delete, owner only.
    fn owner_iq(&self, ctx: &dyn ServerContext, req: &IqRequest<'_>) -> IqResult {
        if !req.from_owner() {
            return Err(StanzaError::forbidden());
        }
        let owner = req.account();
        let Some(op) = req.payload.first_child() else {
            return Err(StanzaError::bad_request());
        };
        let name = op
            .attr("node")
            .ok_or_else(|| {
                pubsub_error(ErrorType::Modify, Condition::BadRequest, "nodeid-required")
            })?
            .to_string();
        let _g = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let mut node = self
            .load_node(ctx, &owner, &name)?
            .ok_or_else(StanzaError::item_not_found)?;
        match (req.is_set, op.name.as_str()) {
            (false, "configure") => Ok(Some(
                Element::new("pubsub", ns::PUBSUB_OWNER).with_child(
                    Element::new("configure", ns::PUBSUB_OWNER)
                        .with_attr("node", name.as_str())
                        .with_child(Self::config_form(&node)),
                ),
            )),
            (true, "configure") => {
                let x = op
                    .child("x", ns::DATA_FORMS)
                    .ok_or_else(StanzaError::bad_request)?;
                if x.attr("type") == Some("cancel") {
                    return Ok(None);
                }
                let o = self.options(x, NODE_CONFIG)?;
                if let Some(a) = o.access {
                    node.access = a;
                }
                if let Some(m) = o.max_items {
                    node.max_items = m;
                    let excess = node.items.len().saturating_sub(m);
                    node.items.drain(..excess);
                }
                self.store(ctx, &owner, &name, Some(node))?;
                Ok(None)
            }
            (true, "delete") => {
                self.store(ctx, &owner, &name, None)?;
                self.node_stored(ctx, &owner, &name, None);
                drop(_g);
                let event =
                    Element::new("delete", ns::PUBSUB_EVENT).with_attr("node", name.as_str());
                for s in ctx.sessions(&owner) {
                    if s.available && self.notify_set(&s.jid).is_some_and(|n| n.contains(&name)) {
                        ctx.route(
                            Element::new("message", ns::CLIENT)
                                .with_attr("from", owner.as_str())
                                .with_attr("to", s.jid.as_str())
                                .with_attr("type", "headline")
                                .with_child(
                                    Element::new("event", ns::PUBSUB_EVENT)
                                        .with_child(event.clone()),
                                ),
                        );
                    }
                }
                Ok(None)
            }
            _ => Err(StanzaError::feature_not_implemented()),
        }
    }

    /// Ask a session for the disco#info behind its caps hash.
    fn query_caps(&self, ctx: &dyn ServerContext, jid: &FullJid, node: &str, ver: &str) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.len() >= MAX_PENDING_CAPS {
            return;
        }
        let id = format!("pep-caps-{}", self.next_id.fetch_add(1, Ordering::Relaxed));
        pending.insert(id.clone(), (ver.to_string(), jid.clone()));
        drop(pending);
        let Some(host) = ctx.hosts().into_iter().find(|h| h == jid.domain().as_str()) else {
            return;
        };
        ctx.route(
            Element::new("iq", ns::CLIENT)
                .with_attr("type", "get")
                .with_attr("id", id)
                .with_attr("from", host)
                .with_attr("to", jid.as_str())
                .with_child(
                    Element::new("query", ns::DISCO_INFO)
                        .with_attr("node", format!("{node}#{ver}")),
                ),
        );
    }
}

/// The `+notify` node names among disco#info features.
fn notify_nodes(query: &Element) -> HashSet<String> {
    query
        .child_elements()
        .filter(|f| f.is("feature", ns::DISCO_INFO))
        .filter_map(|f| f.attr("var")?.strip_suffix("+notify").map(str::to_string))
        .collect()
}

impl Module for Pep {
    fn name(&self) -> &'static str {
        MODULE
    }
    fn hooks(&self) -> Hooks {
        Hooks::SESSION_OPENED | Hooks::SESSION_CLOSED | Hooks::PRESENCE_AVAILABLE
    }
    fn account_iq_namespaces(&self) -> Vec<&'static str> {
        vec![ns::PUBSUB, ns::PUBSUB_OWNER]
    }
    fn account_disco_identities(&self) -> Vec<Identity> {
        vec![Identity {
            category: "pubsub".into(),
            kind: "pep".into(),
            name: None,
        }]
    }
    fn account_disco_features(&self) -> Vec<&'static str> {
        let mut f: Vec<&'static str> = self
            .hooks
            .iter()
            .flat_map(|h| h.account_features())
            .collect();
        f.extend([
            ns::PUBSUB,
            "http://jabber.org/protocol/pubsub#access-open",
            "http://jabber.org/protocol/pubsub#access-presence",
            "http://jabber.org/protocol/pubsub#access-whitelist",
            "http://jabber.org/protocol/pubsub#auto-create",
            "http://jabber.org/protocol/pubsub#auto-subscribe",
            "http://jabber.org/protocol/pubsub#config-node",
            "http://jabber.org/protocol/pubsub#delete-nodes",
            "http://jabber.org/protocol/pubsub#filtered-notifications",
            "http://jabber.org/protocol/pubsub#item-ids",
            "http://jabber.org/protocol/pubsub#last-published",
            "http://jabber.org/protocol/pubsub#persistent-items",
            "http://jabber.org/protocol/pubsub#publish",
            "http://jabber.org/protocol/pubsub#publish-options",
            "http://jabber.org/protocol/pubsub#retract-items",
            "http://jabber.org/protocol/pubsub#retrieve-items",
        ]);
        f
    }
    fn account_disco_items(
        &self,
        ctx: &dyn ServerContext,
        account: &BareJid,
        from: &Jid,
    ) -> Vec<Element> {
        let who = from.to_bare();
        self.nodes_of(ctx, account)
            .iter()
            .filter(|(_, n)| Self::allowed(ctx, account, n.access, &who))
            .map(|(name, _)| {
                Element::new("item", ns::DISCO_ITEMS)
                    .with_attr("jid", account.as_str())
                    .with_attr("node", name.as_str())
            })
            .collect()
    }
    fn handle_account_iq(&self, ctx: &dyn ServerContext, req: &IqRequest<'_>) -> IqResult {
        if req.payload.name != "pubsub" {
            return Err(StanzaError::bad_request());
        }
        if req.payload.ns == ns::PUBSUB_OWNER {
            return self.owner_iq(ctx, req);
        }
        let op = req
            .payload
            .child_elements()
            .find(|c| c.ns == ns::PUBSUB && c.name != "publish-options")
            .ok_or_else(StanzaError::bad_request)?;
        match (req.is_set, op.name.as_str()) {
            (true, "publish") => self.publish(ctx, req, op),
            (false, "items") => self.items(ctx, req, op),
            (true, "retract") => self.retract(ctx, req, op),
            _ => Err(pubsub_error(
                ErrorType::Cancel,
                Condition::FeatureNotImplemented,
                "unsupported",
            )),
        }
    }
    fn handle_iq_response(&self, ctx: &dyn ServerContext, stanza: &Element) -> bool {
        let Some(id) = stanza.attr("id").filter(|i| i.starts_with("pep-caps-")) else {
            return false;
        };
        let Some((ver, jid)) = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id)
        else {
            return true;
        };
        // Only the session asked may answer.
        if stanza.attr("from") != Some(jid.as_str()) {
            return true;
        }
        let Some(query) = stanza
            .child("query", ns::DISCO_INFO)
            .filter(|_| stanza.attr("type") == Some("result"))
        else {
            return true;
        };
        let notify = Arc::new(notify_nodes(query));
        if caps_hash(query) == ver {
            let mut caps = self.caps.write().unwrap_or_else(|e| e.into_inner());
            if caps.len() >= MAX_CAPS_CACHE {
                caps.clear();
            }
            caps.insert(ver, notify);
        } else {
            tracing::debug!("caps hash of {jid} does not verify; used for that session only");
            self.own_caps
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(jid.clone(), notify);
        }
        if ctx
            .sessions(&jid.to_bare())
            .iter()
            .any(|s| s.jid == jid && s.available)
        {
            self.send_last_items(ctx, &jid);
        }
        true
    }
    fn presence_available(
        &self,
        ctx: &dyn ServerContext,
        jid: &FullJid,
        presence: &Element,
        initial: bool,
    ) {
        let caps = presence.child("c", ns::CAPS).and_then(|c| {
            Some((
                c.attr("node")?.to_string(),
                c.attr("ver")?.to_string(),
                c.attr("hash"),
            ))
        });
        let Some((node, ver, hash)) = caps else {
            return;
        };
        if hash.is_some_and(|h| h != "sha-1") {
            return; // only SHA-1 caps are verified
        }
        let previous = self
            .session_caps
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(jid.clone(), ver.clone());
        let changed = previous.as_deref() != Some(ver.as_str());
        if changed {
            self.own_caps
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remove(jid);
        }
        if !initial && !changed {
            return;
        }
        let known = self
            .caps
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&ver);
        if known {
            self.send_last_items(ctx, jid);
        } else {
            self.query_caps(ctx, jid, &node, &ver);
        }
    }
    fn session_opened(&self, ctx: &dyn ServerContext, jid: &FullJid) {
        let _ = self.nodes_of(ctx, &jid.to_bare());
    }
    fn session_closed(&self, ctx: &dyn ServerContext, jid: &FullJid) {
        self.session_caps
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(jid);
        self.own_caps
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(jid);
        let owner = jid.to_bare();
        if ctx.sessions(&owner).is_empty() {
            self.nodes
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&owner);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_round_trips_through_its_record() {
        let n = Node {
            access: Access::Open,
            max_items: 3,
            items: vec![(
                "a".into(),
                Element::new("nick", "http://jabber.org/protocol/nick").with_text("x"),
            )],
        };
        let xml = n.to_xml();
        assert!(
            xml.contains("access='open'") && xml.contains("max='3'"),
            "{xml}"
        );
    }
}
