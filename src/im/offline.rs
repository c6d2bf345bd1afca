//! Offline messages (XEP-0160): storing messages for an account with no
//! available resource, and handing them to its first available session in
//! their original order, exactly once.
//!
//! Ordering rests on a per-account lock (one of
//! [`crate::storage::account_locks::LOCK_SHARDS`] async mutexes chosen by
//! hashing the bare JID, see [`crate::storage::account_locks`]): a message that finds no
//! available resource is stored under the lock, and a session drains the
//! store and only then becomes available, under the same lock — so a live
//! message can never overtake a stored one. A stored message is removed only
//! after the session's writer has written it to the socket (an ack through
//! the session queue); if the session dies first, it stays for next time.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use xep_support::jids::Bare;

use jid::BareJid;
use tokio::sync::oneshot;
use xep_support::element::Element;
use xep_support::ns;
use xep_support::stanza::{Condition, ErrorType, StanzaError};

use crate::im::Out;
use crate::server::Server;
use crate::sessions::{Delivery, Outgoing, SessionHandle};
use crate::storage::{AccountKey, OfflineStored};

/// Stored messages handed to a session per round.
const DRAIN_BATCH: usize = 100;
/// How long a session's writer may take to write a batch.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// Reading the stored messages at login is tried this many times, with
/// [`READ_RETRY`] times the attempt's number between tries, when the
/// database is unavailable (a pooled connection that broke in a restart):
/// giving up would let live messages overtake the stored ones.
const READ_ATTEMPTS: u32 = 4;
const READ_RETRY: Duration = Duration::from_millis(150);

/// Whether a message is worth storing (XEP-0160 §3, XEP-0334 hints).
pub fn storable(msg: &Element) -> bool {
    if matches!(
        msg.attr("type"),
        Some("groupchat") | Some("headline") | Some("error")
    ) {
        return false;
    }
    if msg.child("no-store", "urn:xmpp:hints").is_some() {
        return false;
    }
    if msg.child("store", "urn:xmpp:hints").is_some() {
        return true;
    }
    msg.child_elements().any(|c| {
        (c.ns == ns::CLIENT && (c.name == "body" || c.name == "subject") && !c.text().is_empty())
            || c.is("x", "jabber:x:conference")
            || c.is("encrypted", "eu.siacs.conversations.axolotl")
            || c.is("encrypted", "urn:xmpp:omemo:2")
            || c.is("x", "http://jabber.org/protocol/muc#user")
    })
}

/// The UTC time as XEP-0082 says.
pub fn now_stamp() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    stamp_parts(now.as_secs() as i64, now.subsec_millis())
}

/// The XEP-0082 stamp of `secs` seconds after the Unix epoch.
pub fn stamp_at(secs: u64) -> String {
    stamp_parts(secs as i64, 0)
}

fn stamp_parts(secs: i64, millis: u32) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A message for an account with no available resource (checked again
/// under the account lock): deliver if one became available meanwhile,
/// else store it. Returns the error for the sender when it could not be
/// stored, for the caller to send (`router::perform`).
pub async fn store_or_deliver(server: &Server, msg: Element, to: &BareJid) -> Option<Out> {
    let _guard = server.account_locks.lock(to).await;
    store_or_deliver_locked(server, msg, to).await
}

/// [`store_or_deliver`] for a caller that holds `to`'s account lock (an
/// ending session rerouting its whole backlog under one lock).
pub async fn store_or_deliver_locked(server: &Server, msg: Element, to: &BareJid) -> Option<Out> {
    let targets = server.sessions.best_resources(to);
    if !targets.is_empty() {
        for s in targets {
            let mut copy = msg.clone();
            copy.set_attr("to", to.as_str());
            let _ = server.sessions.deliver(&s, copy).await;
        }
        return None;
    }
    if !storable(&msg) {
        return None; // chat states, receipts and the like are not kept (XEP-0160 §3)
    }
    let account = AccountKey::from(to);
    let mut stored = msg.clone();
    stored.remove_children("delay", "urn:xmpp:delay");
    stored = stored.with_child(
        Element::new("delay", "urn:xmpp:delay")
            .with_attr("from", account.host)
            .with_attr("stamp", now_stamp())
            .with_text("Offline storage"),
    );
    let limit = server
        .config()
        .max_user_offline_messages(account.user, account.host);
    // Stored without a flush of its own, then made durable by the group
    // commit (one fsync for all the messages stored meanwhile) before this
    // returns: the sender's next stanza is handled only after that, so
    // anything it was answered is on disk (the SIGKILL guarantee).
    let result =
        match server
            .storage
            .offline_store_unflushed(account, &stored.to_xml(ns::CLIENT), limit)
        {
            Ok(OfflineStored::Stored(seq)) => match server.group_commit.durable().await {
                Ok(()) => Ok(OfflineStored::Stored(seq)),
                Err(e) => {
                    // The sender is told it failed: take the message back
                    // out, so that a store which still reads (sled refuses
                    // writes, not reads, after a failed flush) does not hand
                    // it over later. Best effort: on a full disk the removal
                    // fails too, and the message never reached the disk.
                    if let Err(undo) = server.storage.offline_remove(account, &[seq]) {
                        tracing::debug!("withdrawing offline message {seq} of {to}: {undo}");
                    }
                    Err(e)
                }
            },
            other => other,
        };
    match result {
        Ok(OfflineStored::Stored(_)) => {
            crate::metrics::offline_stored();
            for m in &server.live().hooks.message_stored_offline {
                m.message_stored_offline(server, to, &msg);
            }
            None
        }
        Ok(OfflineStored::Full) => Some(Out::Bounce(
            msg,
            StanzaError::new(ErrorType::Wait, Condition::ResourceConstraint)
                .with_text("the recipient's offline storage is full"),
        )),
        Err(e) => {
            let from = msg.attr("from").unwrap_or("?");
            tracing::error!(
                "storing an offline message from {from} for {to}: {e}; the sender gets an error"
            );
            Some(Out::Bounce(msg, e.stanza_error()))
        }
    }
}

/// Hand every stored message to `session` in order, then mark it available
/// (both under the account lock).
pub async fn drain_then_mark_available(server: &Arc<Server>, session: &Arc<SessionHandle>) {
    let bare = session.jid.bare();
    let _guard = server.account_locks.lock(&bare).await;
    let account = AccountKey::from(&bare);
    let mut rounds = 0usize;
    loop {
        rounds += 1;
        if rounds > 100_000 {
            break;
        }
        let mut attempt = 1;
        let batch = loop {
            match server.storage.offline_peek(account, DRAIN_BATCH) {
                Ok(b) => break Some(b),
                Err(e @ crate::storage::StorageError::Unavailable(_))
                    if attempt < READ_ATTEMPTS =>
                {
                    tracing::warn!("reading offline messages of {bare}: {e}; trying again");
                    tokio::time::sleep(READ_RETRY * attempt).await;
                    attempt += 1;
                }
                Err(e) => {
                    tracing::error!(
                        "reading offline messages of {bare}: {e}; they stay stored for the next session"
                    );
                    break None;
                }
            }
        };
        let Some(batch) = batch else {
            break;
        };
        if batch.is_empty() {
            break;
        }
        let mut seqs = Vec::with_capacity(batch.len());
        let mut gone = false;
        for (seq, xml) in batch {
            seqs.push(seq);
            let Some(mut el) =
                crate::storage::stanza_codec::parse_stored(&xml, Some(bare.as_str()))
            else {
                tracing::error!("offline message {seq} of {bare} is unreadable; dropping it");
                continue;
            };
            el.set_attr("to", session.jid.to_string());
            if server.sessions.deliver(session, el).await != Delivery::Delivered {
                gone = true;
                break;
            }
        }
        if gone {
            break;
        }
        let (tx, rx) = oneshot::channel();
        if session.tx.send(Outgoing::Ack(tx)).await.is_err() {
            break;
        }
        match tokio::time::timeout(ACK_WAIT, rx).await {
            Ok(Ok(())) => {
                if let Err(e) = server.storage.offline_remove(account, &seqs) {
                    tracing::error!("removing delivered offline messages of {bare}: {e}");
                    break;
                }
            }
            _ => break, // not written: they stay stored for the next session
        }
    }
    session.available.store(true, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_xep0082() {
        let s = now_stamp();
        assert_eq!(s.len(), 24);
        assert!(s.ends_with('Z'));
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
    }

    #[test]
    fn storable_rules() {
        let body = Element::new("message", ns::CLIENT)
            .with_attr("type", "chat")
            .with_child(Element::new("body", ns::CLIENT).with_text("hi"));
        assert!(storable(&body));
        let state = Element::new("message", ns::CLIENT).with_child(Element::new(
            "composing",
            "http://jabber.org/protocol/chatstates",
        ));
        assert!(!storable(&state));
        let mut headline = body.clone();
        headline.set_attr("type", "headline");
        assert!(!storable(&headline));
        let no_store = body
            .clone()
            .with_child(Element::new("no-store", "urn:xmpp:hints"));
        assert!(!storable(&no_store));
        let hinted = state
            .clone()
            .with_child(Element::new("store", "urn:xmpp:hints"));
        assert!(storable(&hinted));
    }
}
