//! Presence (RFC 6121 §3–§4): subscription stanzas run through the state
//! machine of [`crate::im::subscription`] on both sides, initial presence
//! (broadcast, probes, then offline messages and pending subscription
//! requests), updates, probes answered from each resource's last presence,
//! directed presence, and the unavailable broadcast when a session ends.
//!
//! Fan-out reads the sender's roster from the [`RosterCache`] in memory.
//! Nothing here routes: each handler returns the stanzas its decision
//! sends, in order ([`Out`]), and the router sends them (`router.rs`).
//!
//! [`RosterCache`]: crate::im::roster::RosterCache

use std::sync::atomic::Ordering;
use std::sync::Arc;
use xep_support::jids::{self, Bare};

use jid::{BareJid, FullJid, Jid};
use xep_support::element::Element;
use xep_support::ns;

use crate::im::roster::push_outs as push;
use crate::im::subscription::{inbound, outbound, roster_item_xml, SubKind, SubState};
use crate::im::Out;
use crate::server::Server;
use crate::sessions::SessionHandle;
use crate::storage::{AccountKey, RosterItem, Subscription};

fn state_of(item: &RosterItem) -> SubState {
    SubState {
        subscription: item.subscription.clone(),
        ask: item.ask,
        pending_in: item.pending_in,
        approved: item.approved,
    }
}

fn presence(from: &str, to: &str, kind: Option<&str>) -> Element {
    let mut p = Element::new("presence", ns::CLIENT)
        .with_attr("from", from)
        .with_attr("to", to);
    if let Some(k) = kind {
        p.set_attr("type", k);
    }
    p
}

/// What a presence broadcast sends, and, for an available presence, the
/// presence and whether it was the initial one (the modules'
/// `presence_available` hook runs once these are sent).
pub type Broadcast = (Vec<Out>, Option<(Element, bool)>);

/// A presence stanza without `to` from a session: broadcast (RFC 6121 §4.2,
/// §4.4, §4.5). Offline messages are handed over (under the account lock)
/// before this returns; the rest is returned, to be sent in order.
pub async fn broadcast_from_session(
    server: &Arc<Server>,
    session: &Arc<SessionHandle>,
    el: Element,
) -> Broadcast {
    let mut out = Vec::new();
    match el.attr("type") {
        None => {
            let initial = !session.available.load(Ordering::Relaxed);
            let prio = el
                .child("priority", ns::CLIENT)
                .and_then(|p| p.text().trim().parse::<i32>().ok())
                .unwrap_or(0)
                .clamp(-128, 127);
            session.priority.store(prio, Ordering::Relaxed);
            *session
                .last_presence
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(el.clone());
            let bare = session.jid.bare();
            if initial {
                // Offline messages first, in order, then the session counts as available.
                crate::im::offline::drain_then_mark_available(server, session).await;
            }
            fan_out(server, session, &bare, &el, &mut out);
            if initial {
                send_probes(server, &bare, &mut out);
                show_own_resources(server, session, &bare, &mut out);
                redeliver_pending(server, session, &bare, &mut out);
            }
            return (out, Some((el, initial)));
        }
        Some("unavailable") if session.available.swap(false, Ordering::Relaxed) => {
            *session
                .last_presence
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = None;
            let bare = session.jid.bare();
            fan_out(server, session, &bare, &el, &mut out);
            send_to_directed(session, &el, &mut out);
        }
        // Probes, errors and subscription types without `to` have no meaning here.
        _ => {}
    }
    (out, None)
}

/// Send `el` (from the session) to contacts with from/both and to the
/// account's own available resources.
fn fan_out(
    server: &Server,
    session: &SessionHandle,
    bare: &BareJid,
    el: &Element,
    out: &mut Vec<Out>,
) {
    let from = session.jid.to_string();
    let roster = server.rosters.get(server, bare);
    for item in roster.values() {
        if matches!(item.subscription, Subscription::From | Subscription::Both) {
            let mut p = el.clone();
            p.set_attr("from", from.clone());
            p.set_attr("to", item.jid.clone());
            out.push(Out::Route(p));
        }
    }
    for own in server.sessions.sessions_of(bare) {
        if own.available.load(Ordering::Relaxed) || own.id == session.id {
            let mut p = el.clone();
            p.set_attr("from", from.clone());
            p.set_attr("to", own.jid.to_string());
            out.push(Out::Deliver(own, p));
        }
    }
}

fn send_to_directed(session: &SessionHandle, el: &Element, out: &mut Vec<Out>) {
    let targets: Vec<String> = session
        .directed
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain()
        .collect();
    for t in targets {
        let mut p = el.clone();
        p.set_attr("from", session.jid.to_string());
        p.set_attr("to", t);
        out.push(Out::Route(p));
    }
}

/// The newly available session learns the presence of the account's other
/// available resources (as a probe of one's own account would tell it).
fn show_own_resources(
    server: &Server,
    session: &Arc<SessionHandle>,
    bare: &BareJid,
    out: &mut Vec<Out>,
) {
    for own in server.sessions.sessions_of(bare) {
        if own.id == session.id || !own.available.load(Ordering::Relaxed) {
            continue;
        }
        let last = own
            .last_presence
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(mut p) = last {
            p.set_attr("from", own.jid.to_string());
            p.set_attr("to", session.jid.to_string());
            out.push(Out::Deliver(session.clone(), p));
        }
    }
}

fn send_probes(server: &Server, bare: &BareJid, out: &mut Vec<Out>) {
    let roster = server.rosters.get(server, bare);
    let from = bare.to_string();
    for item in roster.values() {
        if matches!(item.subscription, Subscription::To | Subscription::Both) {
            out.push(Out::Route(presence(&from, &item.jid, Some("probe"))));
        }
    }
}

/// Deliver stored inbound subscription requests again (RFC 6121 §3.1.3).
fn redeliver_pending(
    server: &Server,
    session: &Arc<SessionHandle>,
    bare: &BareJid,
    out: &mut Vec<Out>,
) {
    let account = AccountKey::from(bare);
    let pending = server
        .storage
        .pending_subscriptions(account)
        .unwrap_or_default();
    for (from, xml) in pending {
        // The stored request keeps its payload (status text, XEP-0172 nick).
        let mut p = crate::storage::stanza_codec::parse_stored(&xml, Some(bare.as_str()))
            .filter(|p| p.name == "presence")
            .unwrap_or_else(|| presence(&from, bare.as_str(), Some("subscribe")));
        p.set_attr("from", from.clone());
        p.set_attr("to", session.jid.to_string());
        p.set_attr("type", "subscribe");
        out.push(Out::Deliver(session.clone(), p));
    }
}

/// The session ended: unavailable to everyone who saw it available.
pub fn session_ended(server: &Server, session: &Arc<SessionHandle>) -> Vec<Out> {
    let mut out = Vec::new();
    let was_available = session.available.swap(false, Ordering::Relaxed);
    let bare = session.jid.bare();
    let el = Element::new("presence", ns::CLIENT).with_attr("type", "unavailable");
    if was_available {
        fan_out(server, session, &bare, &el, &mut out);
    }
    // Entities that got directed presence (MUC rooms here and on other
    // servers among them) learn the session ended, even when it never
    // sent its initial presence (as Prosody does): a room must not keep an
    // occupant that is gone.
    send_to_directed(session, &el, &mut out);
    if server.sessions.sessions_of(&bare).is_empty() {
        server.rosters.evict(&bare);
    }
    out
}

/// A presence stanza with `to` from a session: subscription management or
/// directed presence.
pub fn directed_from_session(
    server: &Server,
    session: &Arc<SessionHandle>,
    mut el: Element,
    to: Jid,
) -> Vec<Out> {
    if let Some(kind) = el.attr("type").and_then(SubKind::parse) {
        let payload = std::mem::take(&mut el.children);
        return outbound_subscription(server, &session.jid.bare(), to.bare(), kind, payload);
    }
    match el.attr("type") {
        None | Some("unavailable") => {
            let target = to.to_string();
            let bare_target = to.bare().to_string();
            let roster = server.rosters.get(server, &session.jid.bare());
            let subscribed = roster
                .get(&bare_target)
                .is_some_and(|i| matches!(i.subscription, Subscription::From | Subscription::Both));
            {
                let mut d = session.directed.lock().unwrap_or_else(|e| e.into_inner());
                if el.attr("type").is_none() && !subscribed {
                    d.insert(target);
                } else {
                    d.remove(&target);
                }
            }
            el.set_attr("from", session.jid.to_string());
            vec![Out::Route(el)]
        }
        Some("error") => vec![Out::Route(el)],
        // Clients do not send probes (§4.3).
        _ => Vec::new(),
    }
}

/// The user `owner` sends a subscription stanza to `contact` (Appendix A.2).
/// `payload` is the stanza's content (status text, nickname), passed on.
pub fn outbound_subscription(
    server: &Server,
    owner: &BareJid,
    contact: BareJid,
    kind: SubKind,
    payload: Vec<xep_support::element::Node>,
) -> Vec<Out> {
    let mut out = Vec::new();
    let contact_s = contact.to_string();
    if contact_s == owner.to_string() {
        return out; // subscribing to oneself is a no-op
    }
    // Read, decide and write under the account's subscription lock (never
    // across an await); roster pushes go out after it is released.
    let guard = server.rosters.subscription_lock(owner);
    let item = server.rosters.item(server, owner, &contact_s);
    let current = match &item {
        Some(i) => Some(state_of(i)),
        None => {
            // A request from someone not in the roster is kept apart (§3.1.3).
            let account = AccountKey::from(owner);
            let pending = server
                .storage
                .pending_subscriptions(account)
                .unwrap_or_default()
                .iter()
                .any(|(from, _)| *from == contact_s);
            pending.then(|| SubState {
                pending_in: true,
                ..Default::default()
            })
        }
    };
    let verdict = outbound(current.as_ref(), kind);
    let stored = if (item.is_some() || verdict.create_item)
        && current.as_ref() != Some(&verdict.new_state)
    {
        store_state(server, owner, &contact_s, item, &verdict.new_state)
    } else {
        None
    };
    if matches!(kind, SubKind::Subscribed | SubKind::Unsubscribed) {
        let account = AccountKey::from(owner);
        let _ = server
            .storage
            .pending_subscription_remove(account, &contact_s);
    }
    drop(guard);
    if let (Some(stored), true) = (stored, verdict.push) {
        out.extend(push(server, owner, roster_item_xml(&stored), stored.ver));
    }
    if verdict.route {
        let mut p = presence(owner.as_str(), &contact_s, Some(kind.as_str()));
        p.children = payload;
        out.push(Out::Route(p));
        let owner_sessions = server.sessions.sessions_of(owner);
        match kind {
            SubKind::Subscribed => {
                // §3.1.5: the contact now sees our current presence.
                send_current_presence(server, owner, &contact_s, &mut out);
            }
            SubKind::Unsubscribed => {
                // §3.2.2: and no longer sees it.
                for s in owner_sessions {
                    if s.available.load(Ordering::Relaxed) {
                        out.push(Out::Route(presence(
                            s.jid.as_str(),
                            &contact_s,
                            Some("unavailable"),
                        )));
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Store a contact's new subscription state in `owner`'s roster (creating
/// the item if needed) and push it when the change is visible.
/// Write the new subscription state of `contact` in `owner`'s roster (the
/// caller holds the subscription lock); returns the stored item.
fn store_state(
    server: &Server,
    owner: &BareJid,
    contact: &str,
    item: Option<RosterItem>,
    state: &SubState,
) -> Option<RosterItem> {
    let mut new = item.unwrap_or(RosterItem {
        jid: contact.to_string(),
        name: None,
        groups: Vec::new(),
        subscription: Subscription::None,
        ask: false,
        approved: false,
        pending_in: false,
        ver: 0,
    });
    new.subscription = state.subscription.clone();
    new.ask = state.ask;
    new.pending_in = state.pending_in;
    new.approved = state.approved;
    match server.rosters.put(server, owner, new) {
        Ok(stored) => Some(stored),
        Err(e) => {
            tracing::error!("roster update for {owner}: {e}");
            None
        }
    }
}

/// Send the last presence of each available resource of `owner` to `to`;
/// returns how many were sent.
fn send_current_presence(server: &Server, owner: &BareJid, to: &str, out: &mut Vec<Out>) -> usize {
    let mut sent = 0;
    for s in server.sessions.sessions_of(owner) {
        if !s.available.load(Ordering::Relaxed) {
            continue;
        }
        let last = s
            .last_presence
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(mut p) = last {
            p.set_attr("from", s.jid.to_string());
            p.set_attr("to", to);
            out.push(Out::Route(p));
            sent += 1;
        }
    }
    sent
}

/// A subscription stanza from a bare JID (the server stamps bare JIDs on these).
pub fn subscription_stanza(from_bare: &str, to_bare: &str, kind: &str) -> Element {
    presence(from_bare, to_bare, Some(kind))
}

/// A presence stanza addressed to a local account that exists.
pub fn inbound_to_user(server: &Server, el: Element, to: &Jid) -> Vec<Out> {
    let mut out = Vec::new();
    let user = to.bare();
    let Some(from) = el.attr("from").and_then(jids::parse) else {
        return out;
    };
    match el.attr("type") {
        Some("probe") => answer_probe(server, &user, &from, &mut out),
        Some(t) if SubKind::parse(t).is_some() => {
            if let Some(kind) = SubKind::parse(t) {
                inbound_subscription(server, &user, from.bare(), kind, el, &mut out);
            }
        }
        _ => deliver_presence(server, el, to, &mut out),
    }
    out
}

/// Available/unavailable/error presence: to the full JID's session, or to
/// every available resource of the bare JID.
fn deliver_presence(server: &Server, el: Element, to: &Jid, out: &mut Vec<Out>) {
    match to.clone().try_into_full() {
        Ok(full) => {
            if let Some(s) = server.sessions.session(&full) {
                out.push(Out::Deliver(s, el));
            }
        }
        Err(bare) => {
            for s in server.sessions.sessions_of(&bare) {
                if s.available.load(Ordering::Relaxed) {
                    let mut copy = el.clone();
                    copy.set_attr("to", s.jid.to_string());
                    out.push(Out::Deliver(s, copy));
                }
            }
        }
    }
}

fn answer_probe(server: &Server, user: &BareJid, from: &Jid, out: &mut Vec<Out>) {
    let roster = server.rosters.get(server, user);
    let prober = from.bare().to_string();
    let allowed = roster
        .get(&prober)
        .is_some_and(|i| matches!(i.subscription, Subscription::From | Subscription::Both));
    if !allowed {
        return; // never reveal presence to someone not subscribed (§4.3.2)
    }
    if send_current_presence(server, user, from.as_str(), out) == 0 {
        out.push(Out::Route(presence(
            user.as_str(),
            from.as_str(),
            Some("unavailable"),
        )));
    }
}

/// A subscription stanza from `contact` reaches `user` (Appendix A.3).
fn inbound_subscription(
    server: &Server,
    user: &BareJid,
    contact: BareJid,
    kind: SubKind,
    el: Element,
    out: &mut Vec<Out>,
) {
    let contact_s = contact.to_string();
    // As in outbound_subscription: read, decide and write under the lock.
    let guard = server.rosters.subscription_lock(user);
    let item = server.rosters.item(server, user, &contact_s);
    let had_from = matches!(
        item.as_ref().map(|i| &i.subscription),
        Some(Subscription::From) | Some(Subscription::Both)
    );
    let inb = inbound(item.as_ref().map(state_of).as_ref(), kind);
    let changed = item.as_ref().map(state_of) != Some(inb.new_state.clone());
    let stored = if (item.is_some() || inb.create_item) && changed {
        store_state(server, user, &contact_s, item, &inb.new_state)
    } else {
        None
    };
    // Pending requests are subscription state too: changed under the lock.
    let account = AccountKey::from(user);
    match kind {
        SubKind::Subscribe if inb.deliver && !inb.auto_reply_subscribed => {
            let xml = el.to_xml(ns::CLIENT);
            if let Err(e) = server
                .storage
                .pending_subscription_add(account, &contact_s, &xml)
            {
                tracing::error!("storing a subscription request for {user}: {e}");
            }
        }
        SubKind::Unsubscribe => {
            let _ = server
                .storage
                .pending_subscription_remove(account, &contact_s);
        }
        _ => {}
    }
    drop(guard);
    if let (Some(stored), true) = (stored, inb.push) {
        out.extend(push(server, user, roster_item_xml(&stored), stored.ver));
    }
    if inb.auto_reply_subscribed {
        out.push(Out::Route(subscription_stanza(
            user.as_str(),
            &contact_s,
            "subscribed",
        )));
        // And the contact now gets our presence.
        send_current_presence(server, user, &contact_s, out);
        return;
    }
    if kind == SubKind::Unsubscribe && had_from {
        // §3.3.3: the contact no longer sees our presence.
        for s in server.sessions.sessions_of(user) {
            if s.available.load(Ordering::Relaxed) {
                out.push(Out::Route(presence(
                    s.jid.as_str(),
                    &contact_s,
                    Some("unavailable"),
                )));
            }
        }
    }
    if inb.deliver {
        let mut p = presence(&contact_s, user.as_str(), Some(kind.as_str()));
        // Keep the request's status text and other payload (e.g. a nickname).
        p.children = el.children.clone();
        deliver_presence(server, p, &Jid::from(user.clone()), out);
    }
}

/// Whether a session of `full` exists (used by tests of the directed presence rules).
#[allow(dead_code)]
pub fn has_session(server: &Server, full: &FullJid) -> bool {
    server.sessions.session(full).is_some()
}
