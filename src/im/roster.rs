//! Rosters (RFC 6121 §2): the in-memory roster cache that presence fan-out
//! reads, kept consistent with sled by writing through it, and the
//! `jabber:iq:roster` get/set handling with versioning (§2.6) and pushes.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};

use jid::{BareJid, Jid};
use xep_support::element::Element;
use xep_support::stanza::{iq_error, iq_result, ErrorType, StanzaError};

use crate::im::subscription::{removed_item_xml, roster_item_xml};
use crate::server::Server;
use crate::storage::{AccountKey, RosterChange, RosterItem, StorageError, Subscription};

/// The roster namespace.
pub const NS_ROSTER: &str = "jabber:iq:roster";
/// The roster-versioning stream feature namespace.
pub const NS_ROSTER_VER: &str = "urn:xmpp:features:rosterver";

/// One account's roster in memory: contact bare JID → item.
pub type Roster = HashMap<String, RosterItem>;

/// Rosters of accounts with sessions, shared read-only with presence code.
/// Writes go to sled first, then replace the cached copy, under `write_lock`
/// so concurrent updates of one roster cannot interleave.
pub struct RosterCache {
    rosters: RwLock<HashMap<BareJid, Arc<Roster>>>,
    write_lock: Mutex<()>,
    /// Sharded by account: held from reading a roster item to writing its
    /// new subscription state, so two subscription stanzas handled at once
    /// for the same account (its own `subscribed` and a contact's
    /// `subscribe`, say) cannot overwrite each other's change. Never held
    /// across an `.await`.
    subscription_locks: Vec<Mutex<()>>,
}

impl Default for RosterCache {
    fn default() -> Self {
        RosterCache {
            rosters: Default::default(),
            write_lock: Mutex::new(()),
            subscription_locks: (0..64).map(|_| Mutex::new(())).collect(),
        }
    }
}

impl RosterCache {
    /// The lock that orders subscription-state changes of `bare`'s roster.
    pub fn subscription_lock(&self, bare: &BareJid) -> std::sync::MutexGuard<'_, ()> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        bare.hash(&mut h);
        let i = (h.finish() as usize) % self.subscription_locks.len();
        self.subscription_locks[i]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The roster of `bare`, from memory or loaded from storage.
    pub fn get(&self, server: &Server, bare: &BareJid) -> Arc<Roster> {
        if let Some(r) = self
            .rosters
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(bare)
        {
            return r.clone();
        }
        // Load under the write lock so a concurrent update cannot be overwritten
        // by this (older) snapshot.
        let _guard = self.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = self
            .rosters
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(bare)
        {
            return r.clone();
        }
        let account = AccountKey::from(bare);
        let items = server.storage.roster_get(account).unwrap_or_else(|e| {
            tracing::error!("reading the roster of {bare}: {e}");
            Vec::new()
        });
        let roster: Arc<Roster> = Arc::new(items.into_iter().map(|i| (i.jid.clone(), i)).collect());
        // Only accounts with sessions stay cached.
        if !server.router.sessions_of(bare).is_empty() {
            self.rosters
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(bare.clone(), roster.clone());
        }
        roster
    }

    /// One item of a roster.
    pub fn item(&self, server: &Server, bare: &BareJid, contact: &str) -> Option<RosterItem> {
        if let Some(r) = self
            .rosters
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(bare)
        {
            return r.get(contact).cloned();
        }
        // Not cached (no session): read just this item.
        let account = AccountKey::from(bare);
        server
            .storage
            .roster_item(account, contact)
            .unwrap_or_else(|e| {
                tracing::error!("reading the roster of {bare}: {e}");
                None
            })
    }

    /// Forget every cached roster (the database was replaced).
    pub fn clear(&self) {
        self.rosters
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Drop a roster from memory (its account's last session ended).
    pub fn evict(&self, bare: &BareJid) {
        self.rosters
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(bare);
    }

    fn replace_cached(&self, bare: &BareJid, f: impl FnOnce(&mut Roster)) {
        let mut map = self.rosters.write().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = map.get(bare) {
            let mut copy = (**old).clone();
            f(&mut copy);
            map.insert(bare.clone(), Arc::new(copy));
        }
    }

    /// Write an item (storage first, then memory); returns it with its new version.
    pub fn put(
        &self,
        server: &Server,
        bare: &BareJid,
        item: RosterItem,
    ) -> Result<RosterItem, StorageError> {
        let _guard = self.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        let account = AccountKey::from(bare);
        let stored = server.storage.roster_put(account, item)?;
        let copy = stored.clone();
        self.replace_cached(bare, |r| {
            r.insert(copy.jid.clone(), copy);
        });
        Ok(stored)
    }

    /// Remove an item; returns the new roster version if it existed.
    pub fn remove(
        &self,
        server: &Server,
        bare: &BareJid,
        contact: &str,
    ) -> Result<Option<u64>, StorageError> {
        let _guard = self.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        let account = AccountKey::from(bare);
        let ver = server.storage.roster_remove(account, contact)?;
        self.replace_cached(bare, |r| {
            r.remove(contact);
        });
        Ok(ver)
    }
}

/// Send a roster push for one item (or a removal) to every resource of
/// `bare` that requested the roster (RFC 6121 §2.1.6).
pub async fn push(server: &Server, bare: &BareJid, item: Element, ver: u64) {
    let query = Element::new("query", NS_ROSTER)
        .with_attr("ver", ver.to_string())
        .with_child(item);
    for session in server.router.sessions_of(bare) {
        if !session.interested.load(Ordering::Relaxed) {
            continue;
        }
        let iq = Element::new("iq", xep_support::ns::CLIENT)
            .with_attr("type", "set")
            .with_attr("id", format!("push{}", rand_id()))
            .with_attr("to", session.jid.to_string())
            .with_child(query.clone());
        let _ = server.router.deliver(&session, iq).await;
    }
}

fn rand_id() -> u64 {
    use rand::Rng;
    rand::thread_rng().gen()
}

/// Handle a `jabber:iq:roster` iq from the account's own session.
/// Returns the reply, or `None` when it was already sent (a versioned
/// result followed by its pushes); pushes and subscription side effects
/// happen here.
pub async fn handle_iq(server: &Server, iq: &Element, owner: &BareJid) -> Option<Element> {
    let Some(query) = iq.first_child() else {
        return Some(iq_error(iq, &StanzaError::bad_request()));
    };
    match iq.attr("type") {
        Some("get") => roster_get(server, iq, query, owner).await,
        Some("set") => Some(roster_set(server, iq, query, owner).await),
        _ => Some(iq_error(iq, &StanzaError::bad_request())),
    }
}

async fn roster_get(
    server: &Server,
    iq: &Element,
    query: &Element,
    owner: &BareJid,
) -> Option<Element> {
    let from = iq.attr("from").and_then(|f| jid::FullJid::new(f).ok());
    if let Some(session) = from.as_ref().and_then(|f| server.router.session(f)) {
        session.interested.store(true, Ordering::Relaxed);
    }
    let account = AccountKey::from(owner);
    let current = server.storage.roster_version(account).unwrap_or(0);
    if let Some(client_ver) = query.attr("ver") {
        if let Ok(v) = client_ver.parse::<u64>() {
            if v == current {
                return Some(iq_result(iq, None));
            }
            if let Ok(Some(changes)) = server.storage.roster_changes_since(account, v) {
                // Up to date except for these: an empty result, then a push per change (§2.6.3).
                let reply = iq_result(iq, None);
                if let Some(f) = from {
                    let to = f.to_string();
                    let mut pushes = Vec::new();
                    for change in changes {
                        let (item, ver) = match change {
                            RosterChange::Upsert(i) => {
                                let ver = i.ver;
                                (roster_item_xml(&i), ver)
                            }
                            RosterChange::Removed { jid, ver } => (removed_item_xml(&jid), ver),
                        };
                        pushes.push(
                            Element::new("iq", xep_support::ns::CLIENT)
                                .with_attr("type", "set")
                                .with_attr("id", format!("push{}", rand_id()))
                                .with_attr("to", to.clone())
                                .with_child(
                                    Element::new("query", NS_ROSTER)
                                        .with_attr("ver", ver.to_string())
                                        .with_child(item),
                                ),
                        );
                    }
                    if let Some(session) = server.router.session(&f) {
                        let _ = server.router.deliver(&session, reply).await;
                        for p in pushes {
                            let _ = server.router.deliver(&session, p).await;
                        }
                    }
                    return None;
                }
                return Some(reply);
            }
        }
    }
    let roster = server.rosters.get(server, owner);
    let mut items: Vec<&RosterItem> = roster.values().collect();
    items.sort_by(|a, b| a.jid.cmp(&b.jid));
    let mut q = Element::new("query", NS_ROSTER).with_attr("ver", current.to_string());
    for item in items {
        q = q.with_child(roster_item_xml(item));
    }
    Some(iq_result(iq, Some(q)))
}

async fn roster_set(server: &Server, iq: &Element, query: &Element, owner: &BareJid) -> Element {
    let items: Vec<&Element> = query.child_elements().collect();
    if items.len() != 1 || !items[0].is("item", NS_ROSTER) {
        return iq_error(
            iq,
            &StanzaError::bad_request().with_text("a roster set carries exactly one item"),
        );
    }
    let item = items[0];
    let Some(contact) = item.attr("jid").and_then(|j| Jid::new(j).ok()) else {
        return iq_error(iq, &StanzaError::new(ErrorType::Modify, "jid-malformed"));
    };
    if contact.resource().is_some() {
        return iq_error(
            iq,
            &StanzaError::bad_request().with_text("roster items are bare JIDs"),
        );
    }
    let contact = contact.to_bare().to_string();
    if item.attr("subscription") == Some("remove") {
        return remove_item(server, iq, owner, &contact).await;
    }
    let mut groups: Vec<String> = Vec::new();
    for g in item.child_elements().filter(|g| g.is("group", NS_ROSTER)) {
        let name = g.text();
        if name.trim().is_empty() {
            return iq_error(
                iq,
                &StanzaError::new(ErrorType::Modify, "not-acceptable")
                    .with_text("empty group name"),
            );
        }
        if name.len() > 1024 {
            return iq_error(
                iq,
                &StanzaError::new(ErrorType::Modify, "not-acceptable")
                    .with_text("group name too long"),
            );
        }
        if groups.contains(&name) {
            return iq_error(iq, &StanzaError::bad_request().with_text("duplicate group"));
        }
        groups.push(name);
    }
    let name = item
        .attr("name")
        .filter(|n| !n.is_empty())
        .map(str::to_string);
    if name.as_ref().is_some_and(|n| n.len() > 1024) {
        return iq_error(
            iq,
            &StanzaError::new(ErrorType::Modify, "not-acceptable").with_text("name too long"),
        );
    }
    // Subscription and ask in a roster set are ignored (§2.1.2.5): only name and groups change.
    // Under the subscription lock, so a concurrent subscription change is not overwritten.
    let guard = server.rosters.subscription_lock(owner);
    let existing = server.rosters.item(server, owner, &contact);
    let new = match existing {
        Some(mut i) => {
            i.name = name;
            i.groups = groups;
            i
        }
        None => RosterItem {
            jid: contact.clone(),
            name,
            groups,
            subscription: Subscription::None,
            ask: false,
            approved: false,
            pending_in: false,
            ver: 0,
        },
    };
    let stored = server.rosters.put(server, owner, new);
    drop(guard);
    match stored {
        Ok(stored) => {
            push(server, owner, roster_item_xml(&stored), stored.ver).await;
            iq_result(iq, None)
        }
        Err(e) => {
            tracing::error!("roster set for {owner}: {e}");
            iq_error(iq, &e.stanza_error())
        }
    }
}

async fn remove_item(server: &Server, iq: &Element, owner: &BareJid, contact: &str) -> Element {
    let Some(old) = server.rosters.item(server, owner, contact) else {
        return iq_error(iq, &StanzaError::item_not_found());
    };
    let ver = match server.rosters.remove(server, owner, contact) {
        Ok(Some(v)) => v,
        Ok(None) => return iq_error(iq, &StanzaError::item_not_found()),
        Err(e) => {
            tracing::error!("roster remove for {owner}: {e}");
            return iq_error(iq, &e.stanza_error());
        }
    };
    push(server, owner, removed_item_xml(contact), ver).await;
    // §2.5.2: cancel subscriptions both ways.
    let from_bare = owner.to_string();
    if matches!(old.subscription, Subscription::To | Subscription::Both) || old.ask {
        crate::im::presence::send_subscription_stanza(server, &from_bare, contact, "unsubscribe")
            .await;
    }
    if matches!(old.subscription, Subscription::From | Subscription::Both) || old.pending_in {
        crate::im::presence::send_subscription_stanza(server, &from_bare, contact, "unsubscribed")
            .await;
    }
    let _ = server.storage.pending_subscription_remove(
        AccountKey::new(
            owner.domain().as_str(),
            owner.node().map(|n| n.as_str()).unwrap_or(""),
        ),
        contact,
    );
    iq_result(iq, None)
}
