//! Rosters (RFC 6121 §2): the `jabber:iq:roster` get/set handling with
//! versioning (§2.6) and pushes. The in-memory roster cache that presence
//! fan-out reads (kept consistent with storage by writing through it) is
//! [`crate::storage::roster_cache`].

use std::sync::atomic::Ordering;

use jid::{BareJid, Jid};
use xep_support::element::Element;
use xep_support::stanza::{iq_error, iq_result, ErrorType, StanzaError};

use crate::im::subscription::{removed_item_xml, roster_item_xml};
use crate::server::Server;
use crate::storage::{AccountKey, RosterChange, RosterItem, Subscription};

/// The roster namespace.
pub const NS_ROSTER: &str = "jabber:iq:roster";
/// The roster-versioning stream feature namespace.
pub const NS_ROSTER_VER: &str = "urn:xmpp:features:rosterver";

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
