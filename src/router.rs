//! The router: where a stanza goes once its sender is known (RFC 6120 §10,
//! RFC 6121 §8):
//! the route table (`routes.rs`) says where its domain is — a module's
//! service, a component or another server (handed to that route), or a
//! host of ours: to the server itself (answered by a module), to a local
//! account's sessions (the session table, `sessions.rs`), or back to its
//! sender as an error. This file names no transport: it imports neither
//! `s2s/` nor `component/`. Every stanza that enters the server, from any
//! stream, ends here with its `from` already stamped; what `im/` and the
//! modules decide comes back here to be sent, in order.

use jid::{BareJid, FullJid, Jid};
use xep_support::element::Element;
use xep_support::jids::{self, Bare};
use xep_support::module::{IqRequest, OrderedAnswer};
use xep_support::ns;
use xep_support::stanza::{error_reply, iq_error, iq_result, Condition, ErrorType, StanzaError};

use crate::im::Out;
use crate::routes::{Owned, OwnerKind, Route};
use crate::server::Server;
use crate::sessions::Delivery;

/// Route a stanza whose `from` is trustworthy. Boxed because routing can
/// recurse (presence handling routes probes, answers and broadcasts).
pub fn route<'a>(
    server: &'a Server,
    stanza: Element,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
    Box::pin(route_inner(server, stanza, true))
}

/// Like [`route`], without the sending account's outbound filters (for
/// stanzas a module sends on the account's behalf that those filters would
/// stop, like the unavailable presence to a contact being blocked).
pub fn route_unfiltered<'a>(
    server: &'a Server,
    stanza: Element,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
    Box::pin(route_inner(server, stanza, false))
}

/// Run the modules' stanza filters: the sender's outbound filters (if it is
/// a local account and `outbound`), then the recipient's inbound filters
/// (if it is a local account). Between an account and itself, and between
/// an account and its server, nothing is filtered. Returns the stanza to
/// deliver, or `None` when a filter dropped or rejected it (the sender got
/// the error then).
async fn run_filters(
    server: &Server,
    mut stanza: Element,
    from: Option<&Jid>,
    to: &Jid,
    outbound: bool,
) -> Option<Element> {
    // One snapshot of the modules and hosts for the whole check (each
    // `live()` is a lock and a reference count), and no bare JID built
    // before a filter needs it: most stanzas pass every filter. Only the
    // modules that have a filter in each direction are called.
    let live = server.live();
    let (outbound_filters, inbound_filters) = (
        &live.hooks.filter_outbound[..],
        &live.hooks.filter_inbound[..],
    );
    if outbound_filters.is_empty() && inbound_filters.is_empty() {
        return Some(stanza);
    }
    let Some(from) = from else {
        return Some(stanza);
    };
    if from.node() == to.node() && from.domain() == to.domain() {
        return Some(stanza);
    }
    let serves = |j: &Jid| live.config.hosts.iter().any(|h| h == j.domain().as_str());
    // The server itself (its own domain) is never filtered: blocking it would cut
    // the account off from its own server.
    let is_server = |j: &Jid| j.node().is_none() && j.resource().is_none() && serves(j);
    let is_account = |j: &Jid| j.node().is_some() && serves(j);
    let mut verdict = xep_support::module::Verdict::Pass;
    if outbound && !outbound_filters.is_empty() && !is_server(to) && is_account(from) {
        let from_bare = from.bare();
        for m in outbound_filters {
            verdict = m.filter_outbound(server, &from_bare, to, &mut stanza);
            if verdict != xep_support::module::Verdict::Pass {
                break;
            }
        }
    }
    if verdict == xep_support::module::Verdict::Pass
        && !inbound_filters.is_empty()
        && !is_server(from)
        && is_account(to)
    {
        let to_bare = to.bare();
        for m in inbound_filters {
            verdict = m.filter_inbound(server, &to_bare, from, &stanza);
            if verdict != xep_support::module::Verdict::Pass {
                break;
            }
        }
    }
    drop(live);
    match verdict {
        xep_support::module::Verdict::Pass => Some(stanza),
        xep_support::module::Verdict::Drop => None,
        xep_support::module::Verdict::Reject(e) => {
            bounce(server, &stanza, e).await;
            None
        }
    }
}

async fn route_inner(server: &Server, stanza: Element, outbound_filters: bool) {
    crate::metrics::stanza_routed(&stanza.name);
    let to = match stanza.attr("to") {
        None => None,
        Some(t) => match jids::parse(t) {
            Some(j) => Some(j),
            None => {
                bounce(
                    server,
                    &stanza,
                    StanzaError::new(ErrorType::Modify, Condition::JidMalformed),
                )
                .await;
                return;
            }
        },
    };
    let from = stanza.attr("from").and_then(jids::parse);
    let to = match to {
        Some(t) => t,
        // No `to`: the stanza is for the sender's own account (RFC 6120 §10.3).
        None => match &from {
            Some(f) => Jid::from(f.bare()),
            None => return,
        },
    };
    let Some(stanza) = run_filters(server, stanza, from.as_ref(), &to, outbound_filters).await
    else {
        return;
    };
    let domain = to.domain().as_str();
    match server.routes.resolve(domain) {
        Route::Local => {}
        Route::Service(module) => {
            // A room (an address with a local part) is served by one node
            // of a cluster: its owner, which gets the stanza from here.
            if to.node().is_some() {
                if let Some(cluster) = server.routes.cluster() {
                    let room = to.bare();
                    match cluster
                        .to_owner(OwnerKind::Room, room.as_str(), &stanza)
                        .await
                    {
                        Owned::Here | Owned::Nobody => {}
                        Owned::Claimed => module.service_address_claimed(server, &room),
                        Owned::Taken => return,
                        Owned::Unreachable => {
                            bounce(server, &stanza, owner_timeout()).await;
                            return;
                        }
                    }
                }
            }
            // A module's own service domain (mod_muc's conference.HOST): the
            // module answers, and hands back what to route, in order.
            let out = module.handle_service_stanza(server, &stanza);
            route_service_output(server, out).await;
            return;
        }
        // An external component's domain (XEP-0114), or another server's
        // domain: federation (s2s), which bounces remote-server-not-found /
        // -timeout itself when it cannot deliver.
        Route::Link(link) | Route::Remote(link) => {
            if let Err((stanza, error)) = link.send(stanza, domain).await {
                bounce(server, &stanza, error).await;
            }
            return;
        }
        Route::Unavailable => {
            // The component may be connected to another node of the cluster.
            if let Some(cluster) = server.routes.cluster() {
                match cluster
                    .to_owner(OwnerKind::Component, domain, &stanza)
                    .await
                {
                    Owned::Taken => return,
                    Owned::Unreachable => {
                        bounce(server, &stanza, owner_timeout()).await;
                        return;
                    }
                    Owned::Here | Owned::Claimed | Owned::Nobody => {}
                }
            }
            bounce(server, &stanza, StanzaError::service_unavailable()).await;
            return;
        }
        Route::Unreachable => {
            tracing::debug!("no route to {domain}");
            return;
        }
    }
    if to.node().is_none() {
        if to.resource().is_none() {
            to_server(server, stanza, &to).await;
        } else {
            // No components or resources on the server itself yet.
            bounce(server, &stanza, StanzaError::service_unavailable()).await;
        }
        return;
    }
    match stanza.name.as_str() {
        "message" => message_to_user(server, stanza, &to, true).await,
        "presence" => presence_to_user(server, stanza, &to, true).await,
        "iq" => iq_to_user(server, stanza, &to, true).await,
        _ => {}
    }
}

/// The error for a stanza whose owner node is alive but did not answer.
fn owner_timeout() -> StanzaError {
    StanzaError::new(ErrorType::Wait, Condition::RemoteServerTimeout)
}

/// A stanza another node of the cluster forwarded here (`cluster/inbound.rs`)
/// for an account's session on this node, a room this node owns or a
/// component connected here: its filters ran on the sending node; it is
/// delivered here, stored offline or answered per RFC 6121 (a room's
/// module answers it, a component's link takes it), and never forwarded
/// again.
pub async fn route_forwarded(server: &Server, stanza: Element) {
    let Some(to) = stanza.attr("to").and_then(jids::parse) else {
        return;
    };
    let domain = to.domain().as_str();
    match server.routes.resolve(domain) {
        Route::Local => {}
        Route::Service(module) => {
            let out = module.handle_service_stanza(server, &stanza);
            route_service_output(server, out).await;
            return;
        }
        Route::Link(link) => {
            if let Err((stanza, error)) = link.send(stanza, domain).await {
                bounce(server, &stanza, error).await;
            }
            return;
        }
        Route::Unavailable => {
            bounce(server, &stanza, StanzaError::service_unavailable()).await;
            return;
        }
        Route::Remote(_) | Route::Unreachable => return,
    }
    if to.node().is_none() {
        return;
    }
    match stanza.name.as_str() {
        "message" => message_to_user(server, stanza, &to, false).await,
        "presence" => presence_to_user(server, stanza, &to, false).await,
        "iq" => iq_to_user(server, stanza, &to, false).await,
        _ => {}
    }
}

/// The cluster's view of an account with no session here that suits
/// `stanza`: which node to forward it to (`None`: no cluster, or no other
/// node holds a session of the account). For a full JID, the node holding
/// that resource; otherwise the node of the best available resource (or of
/// any bound one, which then stores a message offline itself).
async fn remote_owner(server: &Server, to: &Jid) -> Option<String> {
    let cluster = server.routes.cluster()?;
    let bare = to.bare();
    let remote = cluster.remote_resources(bare.as_str()).await;
    if let Some(res) = to.resource() {
        if let Some(r) = remote.iter().find(|r| r.resource == res.as_str()) {
            return Some(r.node.clone());
        }
    }
    remote
        .iter()
        .max_by_key(|r| (r.available, r.priority))
        .map(|r| r.node.clone())
}

/// Forward `stanza` to the node holding `to`'s session when this node holds
/// none of the account's (full JID: none of that resource; `whole`: none
/// of the account's at all). `true` when another node took it.
async fn forwarded(server: &Server, stanza: &Element, to: &Jid, whole: bool) -> bool {
    let Some(cluster) = server.routes.cluster() else {
        return false;
    };
    let bare = to.bare();
    let here = match to.clone().try_into_full() {
        Ok(full) if !whole => server.sessions.session(&full).is_some(),
        _ => server.sessions.has_sessions(&bare),
    };
    if here {
        return false;
    }
    let Some(node) = remote_owner(server, to).await else {
        return false;
    };
    cluster.forward(&node, stanza).await || owner_had_it(server, stanza, to)
}

/// A message whose forward got no answer (the owner node died, or NATS
/// went down, before it answered) may still have reached the owner, which
/// archives a message before it delivers or stores it: when the
/// recipient's archive (shared database) already holds a message from
/// this sender with the same origin-id (XEP-0359), it is not handled here
/// again (no second copy offline). Messages without an origin-id, not
/// archived, or whose archive batch the owner had not committed yet (up to
/// 100 ms plus a commit) are still handled here: delivered twice rather than lost.
fn owner_had_it(server: &Server, stanza: &Element, to: &Jid) -> bool {
    if stanza.name != "message" {
        return false;
    }
    let Some(origin) = stanza
        .child("origin-id", "urn:xmpp:sid:0")
        .and_then(|o| o.attr("id"))
        .filter(|o| !o.is_empty())
    else {
        return false;
    };
    let Some(from) = stanza.attr("from").and_then(jids::parse) else {
        return false;
    };
    match server
        .archive
        .find_origin_id(&to.bare(), &from.bare(), origin)
    {
        Ok(Some(_)) => {
            crate::metrics::cluster_duplicate_skipped();
            tracing::info!(
                "cluster: message {origin} from {from} to {to} is in the recipient's archive already (its node took it before failing to answer); not stored again"
            );
            true
        }
        Ok(None) => false,
        Err(e) => {
            tracing::warn!(
                "cluster: looking for message {origin} in the archive of {to}: {e}; handled here"
            );
            false
        }
    }
}

/// A stanza addressed to the server's own domain.
async fn to_server(server: &Server, stanza: Element, to: &Jid) {
    if stanza.name != "iq" {
        // Messages and presence to the server itself: nothing handles them yet.
        return;
    }
    let kind = stanza.attr("type").unwrap_or("");
    if kind != "get" && kind != "set" {
        // Results and errors are never answered; they may answer a module's query.
        for m in &server.live().modules {
            if m.handle_iq_response(server, &stanza) {
                break;
            }
        }
        return;
    }
    let reply = answer_server_iq(server, &stanza, to, kind == "set");
    send_back(server, reply).await;
}

/// Answer an iq get/set to the server through the module registered for
/// its payload namespace.
fn answer_server_iq(server: &Server, stanza: &Element, to: &Jid, is_set: bool) -> Element {
    let Some(payload) = stanza.first_child() else {
        return iq_error(stanza, &StanzaError::bad_request());
    };
    let Some(from) = stanza.attr("from").and_then(jids::parse_full) else {
        // A remote server itself (a bare domain) may ping us (XEP-0199 §4.3).
        if payload.is("ping", ns::PING) {
            return iq_result(stanza, None);
        }
        return iq_error(stanza, &StanzaError::bad_request());
    };
    if payload.is("session", ns::SESSION) {
        // Legacy session establishment (RFC 3921): a no-op that clients still send.
        return iq_result(stanza, None);
    }
    match server.module_for(&payload.ns) {
        Some(module) => {
            let req = IqRequest {
                stanza,
                payload,
                is_set,
                from: &from,
                to,
            };
            match module.handle_server_iq(server, &req) {
                Ok(p) => iq_result(stanza, p),
                Err(e) => iq_error(stanza, &e),
            }
        }
        None => iq_error(stanza, &StanzaError::service_unavailable()),
    }
}

/// Answer an iq to an account's bare JID through `module`.
fn answer_account_iq(
    server: &Server,
    module: &dyn xep_support::module::Module,
    stanza: &Element,
    account: BareJid,
    is_set: bool,
) -> (Element, Vec<Element>, Vec<Element>) {
    let (Some(payload), Some(from)) = (
        stanza.first_child(),
        stanza.attr("from").and_then(jids::parse_full),
    ) else {
        return (
            iq_error(stanza, &StanzaError::bad_request()),
            Vec::new(),
            Vec::new(),
        );
    };
    let to = Jid::from(account);
    let req = IqRequest {
        stanza,
        payload,
        is_set,
        from: &from,
        to: &to,
    };
    let OrderedAnswer {
        before,
        answer,
        after,
    } = module.handle_account_iq_around(server, &req);
    let mut reply = match answer {
        Ok(p) => iq_result(stanza, p),
        Err(e) => iq_error(stanza, &e),
    };
    if stanza.attr("to").is_none() {
        reply.remove_attr("from");
    }
    (reply, before, after)
}

async fn message_to_user(server: &Server, mut stanza: Element, to: &Jid, forward: bool) {
    // On another node of the cluster: that node runs everything below
    // (archive, carbons, delivery or offline storage). It did not answer
    // in time: handled here as if the session were gone.
    if forward && forwarded(server, &stanza, to, to.resource().is_none()).await {
        return;
    }
    if forward && to.resource().is_none() && better_elsewhere(server, &stanza, to).await {
        return;
    }
    let kind = stanza.attr("type").unwrap_or("normal").to_string();
    let bare = to.bare();
    // One snapshot of the hook lists for this message's hooks.
    let live = server.live();
    for m in &live.hooks.filter_message_to_account {
        m.filter_message_to_account(server, &bare, &mut stanza);
    }
    if let Ok(full) = to.clone().try_into_full() {
        if let Some(session) = server.sessions.session(&full) {
            let extra = delivered_hooks(server, &live, &bare, std::slice::from_ref(&full), &stanza);
            if kind == "error" || kind == "headline" || kind == "groupchat" {
                if deliver_or_bounce(server, &session, stanza).await {
                    route_all(server, extra).await;
                }
                return;
            }
            let copy = carbons_on(server).then(|| stanza.clone());
            match server.sessions.deliver_or_return(&session, stanza).await {
                (Delivery::Delivered, _) => {
                    route_all(server, extra).await;
                    if let Some(m) = copy {
                        received_elsewhere(server, &bare, &[full.to_string()], &m).await;
                    }
                    return;
                }
                // The session ended meanwhile (its leftovers go to the
                // account): this message follows them, as if the resource
                // had not been there (below).
                (_, Some(back)) => stanza = back,
                (_, None) => return,
            }
        }
        // RFC 6121 §8.5.3.2.1: no such resource. Only chat is handled as if sent
        // to the bare JID; normal and groupchat get an error, headline and error
        // are silently ignored.
        match kind.as_str() {
            "chat" => {}
            "headline" | "error" => return,
            _ => {
                bounce(server, &stanza, StanzaError::service_unavailable()).await;
                return;
            }
        }
    }
    if kind == "groupchat" {
        // §8.5.2: groupchat to an account is an error, online or not.
        bounce(server, &stanza, StanzaError::service_unavailable()).await;
        return;
    }
    // A session of the account that just ended may still be rerouting the
    // messages it never delivered: this one goes after them.
    server.sessions.wait_backlog(&bare).await;
    let targets = server.sessions.best_resources(&bare);
    if targets.is_empty() {
        if kind == "error" || kind == "headline" {
            return; // §8.5.2.2: silently ignored
        }
        if server.sessions.sessions_of(&bare).is_empty() {
            match account_lookup(server, &bare) {
                Ok(true) => {}
                Ok(false) => {
                    bounce(server, &stanza, StanzaError::service_unavailable()).await;
                    return;
                }
                // The database cannot say (PostgreSQL down): the sender
                // is told to retry, not that the account does not exist.
                Err(e) => {
                    tracing::error!("looking up the account {bare}: {e}; the sender gets an error");
                    bounce(server, &stanza, e.stanza_error()).await;
                    return;
                }
            }
        }
        let refused = crate::im::offline::store_or_deliver(server, stanza, &bare).await;
        perform(server, refused.into_iter().collect()).await;
        return;
    }
    let jids: Vec<FullJid> = targets.iter().map(|s| s.jid.clone()).collect();
    let extra = delivered_hooks(server, &live, &bare, &jids, &stanza);
    let mut any = false;
    for session in targets {
        let mut copy = stanza.clone();
        copy.set_attr("to", to.as_str());
        any |= deliver_or_bounce(server, &session, copy).await;
    }
    if any {
        route_all(server, extra).await;
        let to: Vec<String> = jids.iter().map(|j| j.to_string()).collect();
        received_elsewhere(server, &bare, &to, &stanza).await;
    }
}

/// Whether `mod_carbons` is on (its copies may have to cross nodes).
fn carbons_on(server: &Server) -> bool {
    server.routes.cluster().is_some()
        && server
            .live()
            .modules
            .iter()
            .any(|m| m.name() == "mod_carbons")
}

/// XEP-0280 `<received/>` copies of `msg`, delivered here to `delivered_to`
/// of `account`, for the account's resources on other nodes.
async fn received_elsewhere(
    server: &Server,
    account: &BareJid,
    delivered_to: &[String],
    msg: &Element,
) {
    let Some(cluster) = server.routes.cluster() else {
        return;
    };
    if !carbons_on(server) || !xep_support::carbons::eligible(msg) {
        return;
    }
    let event = crate::routes::OwnEvent::Received {
        stanza: msg,
        delivered_to,
    };
    cluster.to_own_resources(account.as_str(), event).await;
}

/// XEP-0280 `<sent/>` copies of a message the session `from` sent, for
/// the account's resources on other nodes (`c2s` calls this once the
/// message was routed).
pub async fn sent_elsewhere(server: &Server, from: &FullJid, msg: &Element) {
    let Some(cluster) = server.routes.cluster() else {
        return;
    };
    if !carbons_on(server) || !xep_support::carbons::eligible(msg) {
        return;
    }
    let from_s = from.to_string();
    let event = crate::routes::OwnEvent::Sent {
        stanza: msg,
        from: &from_s,
    };
    cluster.to_own_resources(from.bare().as_str(), event).await;
}

/// A presence broadcast of `session` (its `from` set here) for the
/// account's resources on other nodes; what they answer (their presence,
/// for an initial one) is delivered to the session.
async fn own_presence_elsewhere(
    server: &Server,
    session: &std::sync::Arc<crate::sessions::SessionHandle>,
    mut p: Element,
    initial: bool,
) {
    let Some(cluster) = server.routes.cluster() else {
        return;
    };
    p.set_attr("from", session.jid.to_string());
    p.remove_attr("to");
    let bare = session.jid.bare();
    let event = crate::routes::OwnEvent::Presence {
        stanza: &p,
        initial,
    };
    for answer in cluster.to_own_resources(bare.as_str(), event).await {
        let _ = server.sessions.deliver(session, answer).await;
    }
}

/// A message to the bare JID of an account with sessions here: when
/// another node holds an available resource of a higher priority than
/// every one here (RFC 6121 §8.5.2.1.1: the highest priority wins), the
/// message goes to that node instead; `true` once it took it.
async fn better_elsewhere(server: &Server, stanza: &Element, to: &Jid) -> bool {
    let Some(cluster) = server.routes.cluster() else {
        return false;
    };
    if matches!(stanza.attr("type"), Some("error") | Some("groupchat")) {
        return false;
    }
    let bare = to.bare();
    if !server.sessions.has_sessions(&bare) {
        // `forwarded` asked already (and the other node did not answer).
        return false;
    }
    let here = server
        .sessions
        .best_resources(&bare)
        .first()
        .map(|s| s.priority.load(std::sync::atomic::Ordering::Relaxed));
    let remote = cluster.remote_resources(bare.as_str()).await;
    let Some(best) = remote
        .iter()
        .filter(|r| r.available && r.priority >= 0)
        .max_by_key(|r| r.priority)
    else {
        return false;
    };
    if here.is_some_and(|p| p >= best.priority) {
        return false;
    }
    cluster.forward(&best.node, stanza).await || owner_had_it(server, stanza, to)
}

/// Stanzas modules want routed once `msg` reaches these resources of
/// `account` (the modules on the `message_delivered` list of `live`).
fn delivered_hooks(
    server: &Server,
    live: &crate::server::Live,
    account: &BareJid,
    delivered_to: &[FullJid],
    msg: &Element,
) -> Vec<Element> {
    let mut out = Vec::new();
    for m in &live.hooks.message_delivered {
        // Most modules answer nothing: no moving of empty vectors.
        let more = m.message_delivered(server, account, delivered_to, msg);
        if !more.is_empty() {
            out.extend(more);
        }
    }
    out
}

/// A presence without `to` from a session (RFC 6121 §4.2–§4.5): what
/// `im::presence` decides, sent in order, then the modules'
/// `presence_available` hook for an available one.
pub async fn presence_broadcast(
    server: &std::sync::Arc<Server>,
    session: &std::sync::Arc<crate::sessions::SessionHandle>,
    el: Element,
) {
    crate::metrics::stanza_routed("presence");
    let was_available = session.available.load(std::sync::atomic::Ordering::Relaxed);
    let own = match el.attr("type") {
        None => Some((el.clone(), !was_available)),
        Some("unavailable") if was_available => Some((el.clone(), false)),
        _ => None,
    }
    .filter(|_| server.routes.cluster().is_some());
    let (out, available) = crate::im::presence::broadcast_from_session(server, session, el).await;
    if let Some(cluster) = server.routes.cluster() {
        use std::sync::atomic::Ordering;
        cluster
            .record(
                session.jid.as_str(),
                session.priority.load(Ordering::Relaxed),
                session.available.load(Ordering::Relaxed),
                false,
            )
            .await;
    }
    perform(server, out).await;
    if let Some((p, initial)) = own {
        own_presence_elsewhere(server, session, p, initial).await;
    }
    if let Some((el, initial)) = available {
        for m in &server.live().hooks.presence_available {
            m.presence_available(server.as_ref(), &session.jid, &el, initial);
        }
    }
}

/// A presence with `to` from a session: subscription management or
/// directed presence (`im::presence` decides, this sends).
pub async fn presence_directed(
    server: &Server,
    session: &std::sync::Arc<crate::sessions::SessionHandle>,
    el: Element,
    to: Jid,
) {
    crate::metrics::stanza_routed("presence");
    let out = crate::im::presence::directed_from_session(server, session, el, to);
    perform(server, out).await;
}

/// A session ended: its unavailable presence to everyone who saw it.
pub async fn session_ended(
    server: &Server,
    session: &std::sync::Arc<crate::sessions::SessionHandle>,
) {
    // The account's resources on other nodes see it go (before its entry
    // goes: the last one's removal forgets them).
    let was_available = session.available.load(std::sync::atomic::Ordering::Relaxed);
    if was_available && server.routes.cluster().is_some() {
        let p = Element::new("presence", ns::CLIENT).with_attr("type", "unavailable");
        own_presence_elsewhere(server, session, p, false).await;
    }
    // Unless a newer session of this node took the resource over.
    if let Some(cluster) = server.routes.cluster() {
        if server
            .sessions
            .session(&session.jid)
            .is_none_or(|s| s.id == session.id)
        {
            cluster.remove(session.jid.as_str()).await;
        }
    }
    let out = crate::im::presence::session_ended(server, session);
    perform(server, out).await;
}

/// Send what an `im/` handler decided, in order, on this task.
pub async fn perform(server: &Server, outs: Vec<Out>) {
    for out in outs {
        match out {
            Out::Route(el) => route(server, el).await,
            Out::Deliver(session, el) => {
                let _ = server.sessions.deliver(&session, el).await;
            }
            Out::Bounce(el, error) => bounce(server, &el, error).await,
        }
    }
}

async fn route_all(server: &Server, stanzas: Vec<Element>) {
    for s in stanzas {
        route(server, s).await;
    }
}

/// What a module's service answered, routed in order as [`route`] would.
/// A room's fan-out — a run of groupchat messages from one occupant
/// address, each to an account of ours — goes straight to
/// [`message_to_user`], the sender's address parsed once for the run and
/// no boxed future per copy: every copy still passes its recipient's
/// filters ([`run_filters`]), the modules' message hooks and its session's
/// queue exactly as through [`route`]. Anything else is [`route`]d.
async fn route_service_output(server: &Server, stanzas: Vec<Element>) {
    // The last sender's `from` as written, and as parsed.
    let mut sender: Option<(Option<String>, Option<Jid>)> = None;
    for stanza in stanzas {
        let Some(to) = groupchat_to_account(server, &stanza) else {
            route(server, stanza).await;
            continue;
        };
        let from = stanza.attr("from");
        if sender.as_ref().is_none_or(|(f, _)| f.as_deref() != from) {
            sender = Some((from.map(str::to_string), from.and_then(jids::parse)));
        }
        let from = sender.as_ref().and_then(|(_, j)| j.as_ref());
        crate::metrics::stanza_routed(&stanza.name);
        let Some(stanza) = run_filters(server, stanza, from, &to, true).await else {
            continue;
        };
        message_to_user(server, stanza, &to, true).await;
    }
}

/// The addressee of a groupchat message to an account of one of our
/// hosts (what [`route_inner`] hands to [`message_to_user`]), or `None`
/// for anything else (including an unparsable `to`, which [`route`]
/// answers).
fn groupchat_to_account(server: &Server, stanza: &Element) -> Option<Jid> {
    if stanza.name != "message" || stanza.attr("type") != Some("groupchat") {
        return None;
    }
    let to = jids::parse(stanza.attr("to")?)?;
    to.node()?;
    matches!(server.routes.resolve(to.domain().as_str()), Route::Local).then_some(to)
}

async fn presence_to_user(server: &Server, stanza: Element, to: &Jid, forward: bool) {
    let bare = to.bare();
    if forward {
        let broadcast = to.resource().is_none()
            && matches!(
                stanza.attr("type"),
                None | Some("unavailable") | Some("probe")
            );
        if !broadcast {
            // Subscription handling (roster writes) runs on one node.
            if forwarded(server, &stanza, to, true).await {
                return;
            }
        } else if let Some(cluster) = server.routes.cluster() {
            // Every other node holding a resource of the account shows it
            // to its own sessions (or answers a probe for them); this node
            // then does the same for its own, if it has any.
            let remote = cluster.remote_resources(bare.as_str()).await;
            let mut nodes: Vec<&str> = remote.iter().map(|r| r.node.as_str()).collect();
            nodes.sort_unstable();
            nodes.dedup();
            let mut taken = false;
            for node in nodes {
                taken |= cluster.forward(node, &stanza).await;
            }
            if taken && !server.sessions.has_sessions(&bare) {
                return;
            }
        }
    }
    let online = !server.sessions.sessions_of(&bare).is_empty();
    let kind = stanza.attr("type");
    if !online && matches!(kind, None | Some("unavailable") | Some("error")) {
        return; // nobody to show it to
    }
    if !online && !account_exists(server, &bare) {
        return; // §4.x: presence to a nonexistent account is silently dropped
    }
    let out = crate::im::presence::inbound_to_user(server, stanza, to);
    perform(server, out).await;
}

async fn iq_to_user(server: &Server, stanza: Element, to: &Jid, forward: bool) {
    let kind = stanza.attr("type").unwrap_or("");
    if forward && to.resource().is_some() && forwarded(server, &stanza, to, false).await {
        return;
    }
    match to.clone().try_into_full() {
        Ok(full) => match server.sessions.session(&full) {
            Some(session) => {
                deliver_or_bounce(server, &session, stanza).await;
            }
            None => {
                if kind == "get" || kind == "set" {
                    bounce(server, &stanza, StanzaError::service_unavailable()).await;
                }
            }
        },
        Err(bare) => {
            // An iq to an account's bare JID is handled by the server on its behalf.
            if kind != "get" && kind != "set" {
                return;
            }
            let from_self = stanza
                .attr("from")
                .and_then(jids::parse)
                .map(|f| f.bare() == bare)
                .unwrap_or(false);
            let ns = stanza
                .first_child()
                .map(|c| c.ns.clone())
                .unwrap_or_default();
            if let Some(module) = server.account_module_for(&ns) {
                // Answered on the account's behalf by the handler registered
                // for the namespace (the roster, or a module); it decides who
                // may ask.
                if !from_self && !account_exists(server, &bare) {
                    bounce(server, &stanza, StanzaError::service_unavailable()).await;
                    return;
                }
                let (reply, before, after) =
                    answer_account_iq(server, module.as_ref(), &stanza, bare, kind == "set");
                // Stanzas the handler wants first (XEP-0313 results before
                // <fin/>, roster pushes before a set's result), the answer,
                // then what follows it (a versioned roster get's pushes),
                // in order on this task.
                route_all(server, before).await;
                send_back(server, reply).await;
                route_all(server, after).await;
            } else if from_self && (ns == ns::SESSION || server.module_for(&ns).is_some()) {
                let reply = answer_server_iq(server, &stanza, &Jid::from(bare), kind == "set");
                send_back(server, reply).await;
            } else {
                bounce(server, &stanza, StanzaError::service_unavailable()).await;
            }
        }
    }
}

/// Deliver to one session, or bounce; `true` when delivered.
async fn deliver_or_bounce(
    server: &Server,
    session: &crate::sessions::SessionHandle,
    stanza: Element,
) -> bool {
    // An error is never bounced; anything else comes back from the queue
    // when it was not delivered (no copy made beforehand: a room's
    // fan-out passes here once per occupant).
    let is_error = stanza.attr("type") == Some("error");
    let (delivery, back) = server.sessions.deliver_or_return(session, stanza).await;
    let condition = match delivery {
        Delivery::Delivered => return true,
        Delivery::Gone => StanzaError::service_unavailable(),
        Delivery::Stuck => StanzaError::new(ErrorType::Wait, Condition::ResourceConstraint),
    };
    if let (false, Some(s)) = (is_error, back) {
        bounce(server, &s, condition).await;
    }
    false
}

/// Send a stanza the server produced back to its addressee: a local full
/// JID, or an entity elsewhere (a module's service such as a MUC room, a
/// component, or a remote server over s2s), routed as any stanza is.
async fn send_back(server: &Server, stanza: Element) {
    if stanza
        .attr("to")
        .and_then(jids::parse)
        .is_some_and(|t| !server.serves(t.domain().as_str()))
    {
        route(server, stanza).await;
        return;
    }
    let Some(to) = stanza.attr("to").and_then(jids::parse_full) else {
        return;
    };
    if let Some(session) = server.sessions.session(&to) {
        let _ = server.sessions.deliver(&session, stanza).await;
    } else if server.routes.cluster().is_some() {
        // The addressee's session may be on another node (the answer to a
        // stanza that node forwarded here).
        route_unfiltered(server, stanza).await;
    }
}

/// Return an error to the sender of `stanza` (never for errors themselves).
pub async fn bounce(server: &Server, stanza: &Element, error: StanzaError) {
    if stanza.attr("type") == Some("error") {
        return;
    }
    if stanza.name == "presence" {
        // Presence errors to unknown addressees are not reported back (RFC 6121 §4.6).
        return;
    }
    let reply = error_reply(stanza, &error);
    send_back(server, reply).await;
}

/// Whether an account exists (used when it has no session); a storage
/// error counts as "no" (see [`account_lookup`] where that matters).
pub fn account_exists(server: &Server, bare: &BareJid) -> bool {
    account_lookup(server, bare).unwrap_or(false)
}

/// Whether an account exists, or why storage could not say.
pub fn account_lookup(
    server: &Server,
    bare: &BareJid,
) -> Result<bool, crate::storage::StorageError> {
    if bare.node().is_none() {
        return Ok(false);
    }
    server.storage.user_exists(bare.into())
}
