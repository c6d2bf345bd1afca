//! An account's own resources across nodes: what one of its sessions does
//! that its resources on other nodes must see — its presence broadcasts
//! (RFC 6121 §4.2.2: an available resource sees the account's other
//! resources; a new one learns theirs) and XEP-0280 carbon copies of the
//! messages it sends and receives. The node where it happens sends one
//! request per other node holding a resource of the account, on
//! `rookery.own.NODE`; that node delivers the presence to its own
//! available sessions of the account (answering an initial presence with
//! their last presence), or runs `mod_carbons` alone for its own sessions
//! (the archive and the other modules ran once, where the message was).
//!
//! Each node sends these only for accounts `peers.rs` says have resources
//! elsewhere (learned from the session table's writes, and from the other
//! nodes' notices `b`, "I hold one", and `u`, "I hold none any more",
//! which this file also carries).
//!
//! Invariants: nothing received here is sent to another node again (a
//! carbon copy is no longer carbon-eligible; presence is delivered, not
//! routed); the sender waits for each node's answer, so one session's
//! events reach a node in order.

use std::sync::Arc;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use xep_support::element::Element;
use xep_support::jids::{self, Bare};

use super::NatsCluster;
use crate::routes::{Cluster, OwnEvent};
use crate::server::Server;

/// One event as sent between nodes.
#[derive(Serialize, Deserialize)]
struct Event {
    /// `p` presence, `s` sent, `r` received.
    k: String,
    /// The stanza, as `jabber:client` XML.
    x: String,
    /// Presence: the session's initial one.
    #[serde(default)]
    i: bool,
    /// Sent: the sending full JID; received: the account.
    #[serde(default)]
    f: String,
    /// Received: the full JIDs it was delivered to.
    #[serde(default)]
    d: Vec<String>,
}

fn subject(node: &str) -> String {
    format!("rookery.own.{node}")
}

/// The nodes other than this one holding resources in an account's entry.
pub fn other_nodes(c: &NatsCluster, r: &super::table::Resources) -> Vec<String> {
    let mut nodes: Vec<String> = r
        .values()
        .filter(|h| h.n != c.node)
        .map(|h| h.n.clone())
        .collect();
    nodes.sort_unstable();
    nodes.dedup();
    nodes
}

/// Notices of this node's resources between nodes (`peers.rs`).
async fn notice(c: &NatsCluster, kind: &str, bare: &str, nodes: &[String]) {
    let ev = Event {
        k: kind.into(),
        x: String::new(),
        i: false,
        f: c.node.clone(),
        d: vec![bare.to_string()],
    };
    let payload = serde_json::to_vec(&ev).unwrap_or_default();
    for node in nodes {
        if let Err(e) = c
            .client
            .publish(subject(node), payload.clone().into())
            .await
        {
            tracing::info!("cluster: telling {node} about {bare}: {e}");
        }
    }
}

/// This node wrote a session of `bare` in the table, which showed
/// resources on `others`: remember them, and tell them.
pub async fn recorded(c: &NatsCluster, bare: &str, others: Vec<String>) {
    if others.is_empty() {
        return;
    }
    c.peers.add(bare, &others);
    notice(c, "b", bare, &others).await;
}

/// This node's last session of `bare` ended; `others` still hold some.
pub async fn ended(c: &NatsCluster, bare: &str, others: Vec<String>) {
    c.peers.forget(bare);
    notice(c, "u", bare, &others).await;
}

/// Send `event` of `bare` to every other live node holding one of its
/// resources; the stanzas they answer with (presence for a new session).
pub async fn send(c: &NatsCluster, bare: &str, event: OwnEvent<'_>) -> Vec<Element> {
    if !c.up() || !c.peers.elsewhere(bare) {
        return Vec::new(); // no other node holds one (peers.rs)
    }
    let remote = c.remote_resources(bare).await;
    let mut nodes: Vec<&str> = remote.iter().map(|r| r.node.as_str()).collect();
    nodes.sort_unstable();
    nodes.dedup();
    if nodes.is_empty() {
        return Vec::new();
    }
    let ev = match event {
        OwnEvent::Presence { stanza, initial } => Event {
            k: "p".into(),
            x: stanza.to_xml(xep_support::ns::CLIENT),
            i: initial,
            f: String::new(),
            d: Vec::new(),
        },
        OwnEvent::Sent { stanza, from } => Event {
            k: "s".into(),
            x: stanza.to_xml(xep_support::ns::CLIENT),
            i: false,
            f: from.to_string(),
            d: Vec::new(),
        },
        OwnEvent::Received {
            stanza,
            delivered_to,
        } => Event {
            k: "r".into(),
            x: stanza.to_xml(xep_support::ns::CLIENT),
            i: false,
            f: bare.to_string(),
            d: delivered_to.to_vec(),
        },
    };
    let payload = serde_json::to_vec(&ev).unwrap_or_default();
    let mut out = Vec::new();
    for node in nodes {
        match c
            .client
            .request(subject(node), payload.clone().into())
            .await
        {
            Ok(reply) => {
                let answers: Vec<String> =
                    serde_json::from_slice(&reply.payload).unwrap_or_default();
                out.extend(
                    answers
                        .iter()
                        .filter_map(|x| crate::storage::stanza_codec::parse_stanza(x)),
                );
            }
            Err(e) => tracing::info!("cluster: node {node} did not take an event of {bare}: {e}"),
        }
    }
    out
}

/// Serve this node's subject until the connection ends.
pub async fn listen(server: Arc<Server>, cluster: Arc<NatsCluster>) -> Result<(), String> {
    let mut sub = cluster
        .client
        .subscribe(subject(&cluster.node))
        .await
        .map_err(|e| format!("cluster: subscribing: {e}"))?;
    tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            let server = server.clone();
            let client = cluster.client.clone();
            let cluster = cluster.clone();
            tokio::spawn(async move {
                let answers = match serde_json::from_slice::<Event>(&msg.payload) {
                    Ok(ev) if ev.k == "b" || ev.k == "u" => {
                        noticed(&server, &cluster, &ev);
                        Vec::new()
                    }
                    Ok(ev) => handle(&server, ev).await,
                    Err(_) => {
                        tracing::warn!("cluster: an unreadable own-resources event was dropped");
                        Vec::new()
                    }
                };
                if let Some(reply) = msg.reply {
                    let body = serde_json::to_vec(&answers).unwrap_or_default();
                    if let Err(e) = client.publish(reply, body.into()).await {
                        tracing::warn!("cluster: answering an own-resources event: {e}");
                    }
                }
            });
        }
    });
    Ok(())
}

/// Another node holds (`b`) or no longer holds (`u`) resources of an
/// account: remembered while this node holds one too.
fn noticed(server: &Server, c: &NatsCluster, ev: &Event) {
    let Some(bare) = ev.d.first() else {
        return;
    };
    if ev.k == "u" {
        c.peers.remove(bare, &ev.f);
        return;
    }
    let here = jid::BareJid::new(bare).is_ok_and(|b| server.sessions.has_sessions(&b));
    if here {
        c.peers.add(bare, std::slice::from_ref(&ev.f));
    }
}

async fn handle(server: &Server, ev: Event) -> Vec<String> {
    let Some(stanza) = crate::storage::stanza_codec::parse_stanza(&ev.x) else {
        return Vec::new();
    };
    match ev.k.as_str() {
        "p" => presence(server, stanza, ev.i).await,
        "s" | "r" => {
            carbons(server, &ev, &stanza).await;
            Vec::new()
        }
        _ => Vec::new(),
    }
}

/// A resource elsewhere broadcast `p`: this node's available resources of
/// the account see it; a new one learns theirs (the answer).
async fn presence(server: &Server, p: Element, initial: bool) -> Vec<String> {
    use std::sync::atomic::Ordering;
    let Some(from) = p.attr("from").and_then(jids::parse_full) else {
        return Vec::new();
    };
    let mut answers = Vec::new();
    for own in server.sessions.sessions_of(&from.bare()) {
        if !own.available.load(Ordering::Relaxed) {
            continue;
        }
        let mut copy = p.clone();
        copy.set_attr("to", own.jid.to_string());
        let _ = server.sessions.deliver(&own, copy).await;
        if initial {
            let last = own
                .last_presence
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            if let Some(mut mine) = last {
                mine.set_attr("from", own.jid.to_string());
                mine.set_attr("to", from.to_string());
                answers.push(mine.to_xml(xep_support::ns::CLIENT));
            }
        }
    }
    answers
}

/// XEP-0280 copies for this node's carbon-enabled resources of a message
/// sent or received by a resource elsewhere.
async fn carbons(server: &Server, ev: &Event, msg: &Element) {
    let Some(m) = server
        .live()
        .modules
        .iter()
        .find(|m| m.name() == "mod_carbons")
        .cloned()
    else {
        return;
    };
    let copies = if ev.k == "s" {
        let Some(from) = jids::parse_full(&ev.f) else {
            return;
        };
        m.message_from_session(server, &from, msg)
    } else {
        let Ok(account) = jid::BareJid::new(&ev.f) else {
            return;
        };
        let to: Vec<jid::FullJid> = ev.d.iter().filter_map(|j| jids::parse_full(j)).collect();
        m.message_delivered(server, &account, &to, msg)
    };
    for copy in copies {
        crate::router::route(server, copy).await;
    }
}
