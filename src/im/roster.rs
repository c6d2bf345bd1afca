//! Rosters (RFC 6121 §2): the `jabber:iq:roster` get/set handling with
//! versioning (§2.6) and pushes. The in-memory roster cache that presence
//! fan-out reads (kept consistent with storage by writing through it) is
//! [`crate::storage::roster_cache`].
//!
//! The roster iq is answered by [`RosterIq`], registered in the table of
//! account iq handlers by namespace like the modules' (`serve::live`); like
//! them it returns its answer and the stanzas to send around it (pushes,
//! unsubscriptions) and routes nothing itself.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use jid::{BareJid, Jid};
use xep_support::element::Element;
use xep_support::module::{Hooks, IqRequest, Module, OrderedAnswer, ServerContext};
use xep_support::stanza::{Condition, ErrorType, StanzaError};

use crate::im::subscription::{removed_item_xml, roster_item_xml};
use crate::im::Out;
use crate::server::Server;
use crate::sessions::SessionHandle;
use crate::storage::{AccountKey, RosterChange, RosterItem, Subscription};

/// The roster namespace.
pub const NS_ROSTER: &str = "jabber:iq:roster";
/// The roster-versioning stream feature namespace.
pub const NS_ROSTER_VER: &str = "urn:xmpp:features:rosterver";

/// The roster pushes for one item (or a removal), one for every resource
/// of `bare` that requested the roster (RFC 6121 §2.1.6), with the session
/// each goes to.
pub fn pushes(
    server: &Server,
    bare: &BareJid,
    item: Element,
    ver: u64,
) -> Vec<(Arc<SessionHandle>, Element)> {
    let query = Element::new("query", NS_ROSTER)
        .with_attr("ver", ver.to_string())
        .with_child(item);
    let mut out = Vec::new();
    for session in server.sessions.sessions_of(bare) {
        if !session.interested.load(Ordering::Relaxed) {
            continue;
        }
        let iq = Element::new("iq", xep_support::ns::CLIENT)
            .with_attr("type", "set")
            .with_attr("id", format!("push{}", rand_id()))
            .with_attr("to", session.jid.to_string())
            .with_child(query.clone());
        out.push((session, iq));
    }
    out
}

/// A roster change another node of the cluster made for `bare` (an
/// account with sessions here): the cached copy is dropped (the next read
/// loads what that node wrote) and the change is pushed to this node's
/// interested sessions.
pub fn changed_elsewhere(
    server: &Server,
    bare: &BareJid,
    contact: &str,
    ver: u64,
    removed: bool,
) -> Vec<Out> {
    server.rosters.evict(bare);
    let item = if removed {
        crate::im::subscription::removed_item_xml(contact)
    } else {
        match server.rosters.item(server, bare, contact) {
            Some(it) => crate::im::subscription::roster_item_xml(&it),
            None => return Vec::new(),
        }
    };
    push_outs(server, bare, item, ver)
}

/// [`pushes`] as [`Out`]s, for the router to deliver.
pub fn push_outs(server: &Server, bare: &BareJid, item: Element, ver: u64) -> Vec<Out> {
    pushes(server, bare, item, ver)
        .into_iter()
        .map(|(s, iq)| Out::Deliver(s, iq))
        .collect()
}

/// [`pushes`] as stanzas to route (each is addressed to its session's full JID).
fn push_stanzas(server: &Server, bare: &BareJid, item: Element, ver: u64) -> Vec<Element> {
    pushes(server, bare, item, ver)
        .into_iter()
        .map(|(_, iq)| iq)
        .collect()
}

/// The `jabber:iq:roster` handler, in the table of account iq handlers.
/// Only the account itself may ask; anyone else gets
/// `<service-unavailable/>` (RFC 6121 §2.1.5 keeps rosters private).
pub struct RosterIq;

impl Module for RosterIq {
    fn name(&self) -> &'static str {
        "roster"
    }

    fn hooks(&self) -> Hooks {
        Hooks::NONE
    }

    fn account_iq_namespaces(&self) -> Vec<&'static str> {
        vec![NS_ROSTER]
    }

    fn handle_account_iq_around(
        &self,
        ctx: &dyn ServerContext,
        req: &IqRequest<'_>,
    ) -> OrderedAnswer {
        let server = ctx.core().and_then(|c| c.downcast_ref::<Server>());
        let (Some(server), true) = (server, req.from_owner()) else {
            return OrderedAnswer::answer(Err(StanzaError::service_unavailable()));
        };
        handle_iq(server, req.stanza, &req.to.to_bare())
    }
}

fn rand_id() -> u64 {
    use rand::Rng;
    rand::thread_rng().gen()
}

/// Handle a `jabber:iq:roster` iq from the account's own session: the
/// answer, with the pushes and subscription stanzas to send before it (a
/// set, a removal) or after it (a versioned get's changes, §2.6.3).
fn handle_iq(server: &Server, iq: &Element, owner: &BareJid) -> OrderedAnswer {
    let Some(query) = iq.first_child() else {
        return OrderedAnswer::answer(Err(StanzaError::bad_request()));
    };
    match iq.attr("type") {
        Some("get") => roster_get(server, iq, query, owner),
        Some("set") => roster_set(server, query, owner),
        _ => OrderedAnswer::answer(Err(StanzaError::bad_request())),
    }
}

fn roster_get(server: &Server, iq: &Element, query: &Element, owner: &BareJid) -> OrderedAnswer {
    let from = iq.attr("from").and_then(|f| jid::FullJid::new(f).ok());
    if let Some(session) = from.as_ref().and_then(|f| server.sessions.session(f)) {
        session.interested.store(true, Ordering::Relaxed);
    }
    let account = AccountKey::from(owner);
    let current = server.storage.roster_version(account).unwrap_or(0);
    if let Some(client_ver) = query.attr("ver") {
        if let Ok(v) = client_ver.parse::<u64>() {
            if v == current {
                return OrderedAnswer::answer(Ok(None));
            }
            if let Ok(Some(changes)) = server.storage.roster_changes_since(account, v) {
                // Up to date except for these: an empty result, then a push per change (§2.6.3).
                let mut answer = OrderedAnswer::answer(Ok(None));
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
                    answer.after = pushes;
                }
                return answer;
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
    OrderedAnswer::answer(Ok(Some(q)))
}

fn roster_set(server: &Server, query: &Element, owner: &BareJid) -> OrderedAnswer {
    match roster_set_checked(server, query, owner) {
        Ok(answer) => answer,
        Err(e) => OrderedAnswer::answer(Err(e)),
    }
}

fn roster_set_checked(
    server: &Server,
    query: &Element,
    owner: &BareJid,
) -> Result<OrderedAnswer, StanzaError> {
    let items: Vec<&Element> = query.child_elements().collect();
    if items.len() != 1 || !items[0].is("item", NS_ROSTER) {
        return Err(StanzaError::bad_request().with_text("a roster set carries exactly one item"));
    }
    let item = items[0];
    let Some(contact) = item.attr("jid").and_then(|j| Jid::new(j).ok()) else {
        return Err(StanzaError::new(ErrorType::Modify, Condition::JidMalformed));
    };
    if contact.resource().is_some() {
        return Err(StanzaError::bad_request().with_text("roster items are bare JIDs"));
    }
    let contact = contact.to_bare().to_string();
    if item.attr("subscription") == Some("remove") {
        return remove_item(server, owner, &contact);
    }
    let mut groups: Vec<String> = Vec::new();
    for g in item.child_elements().filter(|g| g.is("group", NS_ROSTER)) {
        let name = g.text();
        if name.trim().is_empty() {
            return Err(
                StanzaError::new(ErrorType::Modify, Condition::NotAcceptable)
                    .with_text("empty group name"),
            );
        }
        if name.len() > 1024 {
            return Err(
                StanzaError::new(ErrorType::Modify, Condition::NotAcceptable)
                    .with_text("group name too long"),
            );
        }
        if groups.contains(&name) {
            return Err(StanzaError::bad_request().with_text("duplicate group"));
        }
        groups.push(name);
    }
    let name = item
        .attr("name")
        .filter(|n| !n.is_empty())
        .map(str::to_string);
    if name.as_ref().is_some_and(|n| n.len() > 1024) {
        return Err(
            StanzaError::new(ErrorType::Modify, Condition::NotAcceptable)
                .with_text("name too long"),
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
        Ok(stored) => Ok(OrderedAnswer {
            before: push_stanzas(server, owner, roster_item_xml(&stored), stored.ver),
            answer: Ok(None),
            after: Vec::new(),
        }),
        Err(e) => {
            tracing::error!("roster set for {owner}: {e}");
            Err(e.stanza_error())
        }
    }
}

fn remove_item(
    server: &Server,
    owner: &BareJid,
    contact: &str,
) -> Result<OrderedAnswer, StanzaError> {
    let Some(old) = server.rosters.item(server, owner, contact) else {
        return Err(StanzaError::item_not_found());
    };
    let ver = match server.rosters.remove(server, owner, contact) {
        Ok(Some(v)) => v,
        Ok(None) => return Err(StanzaError::item_not_found()),
        Err(e) => {
            tracing::error!("roster remove for {owner}: {e}");
            return Err(e.stanza_error());
        }
    };
    let mut before = push_stanzas(server, owner, removed_item_xml(contact), ver);
    // §2.5.2: cancel subscriptions both ways.
    let from_bare = owner.to_string();
    if matches!(old.subscription, Subscription::To | Subscription::Both) || old.ask {
        before.push(crate::im::presence::subscription_stanza(
            &from_bare,
            contact,
            "unsubscribe",
        ));
    }
    if matches!(old.subscription, Subscription::From | Subscription::Both) || old.pending_in {
        before.push(crate::im::presence::subscription_stanza(
            &from_bare,
            contact,
            "unsubscribed",
        ));
    }
    let _ = server.storage.pending_subscription_remove(
        AccountKey::new(
            owner.domain().as_str(),
            owner.node().map(|n| n.as_str()).unwrap_or(""),
        ),
        contact,
    );
    Ok(OrderedAnswer {
        before,
        answer: Ok(None),
        after: Vec::new(),
    })
}
