//! XEP-0280 Message Carbons (`mod_carbons`, `urn:xmpp:carbons:2`).
//!
//! Each resource turns carbons on or off with an iq set (`<enable/>`,
//! `<disable/>`); the set of carbon-enabled resources lives here, in memory,
//! and is dropped when a session ends. Copies:
//! - a message a resource sends is copied, wrapped in `<sent/>`, to the
//!   account's other carbon-enabled resources;
//! - a message delivered to some of an account's resources is copied, wrapped
//!   in `<received/>`, to its carbon-enabled resources that did not get it.
//!
//! Every copy comes `from` the account's bare JID and wraps the original in
//! `<forwarded xmlns='urn:xmpp:forward:0'/>`. Eligibility follows XEP-0280
//! §6.1: type `chat`; type `normal` with a `<body/>`; or IM payloads (chat
//! states, receipts, markers); never `groupchat`, `headline` or `error`, and
//! never a message carrying `<private/>` (XEP-0280) or `<no-copy/>` (XEP-0334).
//!
//! Forgery (the CVE-2017-5589 class): a client must only trust carbons whose
//! `from` is its own bare JID. The server helps: `<sent/>` and `<received/>`
//! elements in a message from anyone outside the account are removed before
//! delivery, so a carbon-looking wrapper only ever reaches a client from the
//! server itself.

use crate::jids::{self, Bare};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use jid::{BareJid, FullJid};

use crate::element::Element;
use crate::module::{Hooks, IqRequest, IqResult, Module, ServerContext};
use crate::ns;
use crate::stanza::StanzaError;

/// `mod_carbons`.
#[derive(Default)]
pub struct Carbons {
    /// Carbon-enabled resources of each account, by bare JID text (looked
    /// up with the bare part of a full JID's text, no JID built for it).
    enabled: Mutex<HashMap<String, Vec<FullJid>>>,
    /// Whether any resource has carbons on (`enabled` is not empty),
    /// written under its lock: a message hook reads this first and skips
    /// the lock while nobody uses carbons.
    any: AtomicBool,
}

/// The bare part of a JID's text (before the first `/`).
fn bare_text(jid: &str) -> &str {
    jid.find('/').map_or(jid, |i| &jid[..i])
}

impl Carbons {
    /// The carbon-enabled resources of the account `bare` (its text) that
    /// `skip` does not exclude.
    fn copies_to(&self, bare: &str, skip: impl Fn(&FullJid) -> bool) -> Vec<FullJid> {
        if !self.any.load(Ordering::Acquire) {
            return Vec::new();
        }
        let map = self.enabled.lock().unwrap_or_else(|e| e.into_inner());
        map.get(bare)
            .map(|l| l.iter().filter(|r| !skip(r)).cloned().collect())
            .unwrap_or_default()
    }

    /// Whether `jid` has carbons on.
    pub fn is_enabled(&self, jid: &FullJid) -> bool {
        let map = self.enabled.lock().unwrap_or_else(|e| e.into_inner());
        map.get(bare_text(jid.as_str()))
            .is_some_and(|l| l.contains(jid))
    }

    /// Turn carbons on for `jid` (XEP-0386 inline enabling at bind time).
    pub fn enable(&self, jid: &FullJid) {
        self.set(jid, true);
    }

    fn set(&self, jid: &FullJid, on: bool) {
        let mut map = self.enabled.lock().unwrap_or_else(|e| e.into_inner());
        let bare = bare_text(jid.as_str());
        if let Some(list) = map.get_mut(bare) {
            list.retain(|j| j != jid);
            if on {
                list.push(jid.clone());
            } else if list.is_empty() {
                map.remove(bare);
            }
        } else if on {
            map.insert(bare.to_string(), vec![jid.clone()]);
        }
        self.any.store(!map.is_empty(), Ordering::Release);
    }
}

/// Whether a message is a carbon copy or carries a carbon wrapper.
fn has_carbon_wrapper(msg: &Element) -> bool {
    msg.child("sent", ns::CARBONS).is_some() || msg.child("received", ns::CARBONS).is_some()
}

/// XEP-0280 §6.1 eligibility, with the `<private/>` and `<no-copy/>` opt-outs.
pub fn eligible(msg: &Element) -> bool {
    if msg.name != "message" || has_carbon_wrapper(msg) {
        return false;
    }
    if msg.child("private", ns::CARBONS).is_some() || msg.child("no-copy", ns::HINTS).is_some() {
        return false;
    }
    match msg.attr("type").unwrap_or("normal") {
        "chat" => true,
        "normal" => msg.child_elements().any(|c| {
            (c.is("body", ns::CLIENT) && !c.text().is_empty())
                || c.ns == ns::CHATSTATES
                || c.ns == ns::RECEIPTS
                || c.ns == ns::MARKERS
        }),
        _ => false,
    }
}

/// A copy of `original` for `to`, from `account`, wrapped in `<wrapper/>`.
fn wrap(account: &BareJid, to: &FullJid, wrapper: &str, original: &Element) -> Element {
    let mut m = Element::new("message", ns::CLIENT)
        .with_attr("from", account.to_string())
        .with_attr("to", to.to_string());
    if let Some(t) = original.attr("type") {
        m.set_attr("type", t);
    }
    m.with_child(
        Element::new(wrapper, ns::CARBONS)
            .with_child(Element::new("forwarded", ns::FORWARD).with_child(original.clone())),
    )
}

impl Module for Carbons {
    fn name(&self) -> &'static str {
        "mod_carbons"
    }
    fn hooks(&self) -> Hooks {
        Hooks::MESSAGE_FROM_SESSION
            | Hooks::FILTER_MESSAGE_TO_ACCOUNT
            | Hooks::MESSAGE_DELIVERED
            | Hooks::SESSION_CLOSED
    }
    /// Reached by the XEP-0386 bind (inline enabling).
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
    fn disco_features(&self) -> Vec<&'static str> {
        vec![ns::CARBONS]
    }
    fn server_iq_namespaces(&self) -> Vec<&'static str> {
        vec![ns::CARBONS]
    }
    fn handle_server_iq(&self, _ctx: &dyn ServerContext, req: &IqRequest<'_>) -> IqResult {
        // Only the account itself (iq without `to`, or to its server) may switch.
        if let Some(node) = req.to.node() {
            if req.from.node() != Some(node) || req.from.domain() != req.to.domain() {
                return Err(StanzaError::forbidden());
            }
        }
        if !req.is_set {
            return Err(StanzaError::bad_request());
        }
        match req.payload.name.as_str() {
            "enable" => self.set(req.from, true),
            "disable" => self.set(req.from, false),
            _ => return Err(StanzaError::bad_request()),
        }
        Ok(None)
    }
    fn session_closed(&self, _ctx: &dyn ServerContext, jid: &FullJid) {
        self.set(jid, false);
    }
    fn message_from_session(
        &self,
        _ctx: &dyn ServerContext,
        from: &FullJid,
        msg: &Element,
    ) -> Vec<Element> {
        if !self.any.load(Ordering::Acquire) || !eligible(msg) {
            return Vec::new();
        }
        let to = self.copies_to(bare_text(from.as_str()), |r| r == from);
        if to.is_empty() {
            return Vec::new();
        }
        let bare = from.bare();
        to.iter().map(|r| wrap(&bare, r, "sent", msg)).collect()
    }
    fn filter_message_to_account(
        &self,
        _ctx: &dyn ServerContext,
        account: &BareJid,
        msg: &mut Element,
    ) {
        // The wrapper first: most messages carry none, and then the
        // sender's JID need not be looked at.
        if !has_carbon_wrapper(msg) {
            return;
        }
        let from_account = msg
            .attr("from")
            .and_then(jids::parse)
            .is_some_and(|f| f.bare() == *account);
        if !from_account {
            msg.remove_children("sent", ns::CARBONS);
            msg.remove_children("received", ns::CARBONS);
        }
    }
    fn message_delivered(
        &self,
        _ctx: &dyn ServerContext,
        account: &BareJid,
        delivered_to: &[FullJid],
        msg: &Element,
    ) -> Vec<Element> {
        if !self.any.load(Ordering::Acquire) || !eligible(msg) {
            return Vec::new();
        }
        self.copies_to(account.as_str(), |r| delivered_to.contains(r))
            .iter()
            .map(|r| wrap(account, r, "received", msg))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(kind: Option<&str>, body: bool) -> Element {
        let mut m = Element::new("message", ns::CLIENT);
        if let Some(k) = kind {
            m.set_attr("type", k);
        }
        if body {
            m = m.with_child(Element::new("body", ns::CLIENT).with_text("hi"));
        }
        m
    }

    #[test]
    fn enabled_resources_and_the_any_flag() {
        let c = Carbons::default();
        let a1 = FullJid::new("a@x/1").unwrap();
        let a2 = FullJid::new("a@x/2/with/slashes").unwrap();
        let b1 = FullJid::new("b@x/1").unwrap();
        assert!(!c.any.load(Ordering::Acquire));
        assert!(c.copies_to("a@x", |_| false).is_empty());
        c.enable(&a1);
        c.enable(&a2);
        c.enable(&a2);
        assert!(c.any.load(Ordering::Acquire));
        assert!(c.is_enabled(&a1) && c.is_enabled(&a2) && !c.is_enabled(&b1));
        assert_eq!(c.copies_to("a@x", |r| r == &a1), vec![a2.clone()]);
        assert!(c.copies_to("b@x", |_| false).is_empty());
        // Disabling a resource that never enabled leaves no entry behind.
        c.set(&b1, false);
        c.set(&a1, false);
        assert!(c.any.load(Ordering::Acquire));
        c.set(&a2, false);
        assert!(!c.any.load(Ordering::Acquire));
        assert!(c.enabled.lock().unwrap().is_empty());
        assert!(!c.is_enabled(&a2));
    }

    #[test]
    fn eligibility() {
        assert!(eligible(&msg(Some("chat"), false)));
        assert!(eligible(&msg(None, true)));
        assert!(!eligible(&msg(None, false)));
        assert!(!eligible(&msg(Some("groupchat"), true)));
        assert!(!eligible(&msg(Some("headline"), true)));
        assert!(!eligible(
            &msg(Some("chat"), true).with_child(Element::new("private", ns::CARBONS))
        ));
        assert!(!eligible(
            &msg(Some("chat"), true).with_child(Element::new("no-copy", ns::HINTS))
        ));
        assert!(eligible(
            &msg(None, false).with_child(Element::new("received", ns::RECEIPTS))
        ));
    }
}
