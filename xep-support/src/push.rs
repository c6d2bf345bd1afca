//! XEP-0357 push notifications (`mod_push`, ejabberd's name and options): a
//! client (typically on iOS, where apps cannot keep a connection) registers
//! its push service (`<enable jid node/>`); when a message for the account
//! is stored offline, or reaches only sessions whose connection is gone
//! (XEP-0198, waiting for resumption), the server publishes a
//! `urn:xmpp:push:summary` notification to that service, which wakes the
//! app. A room's groupchat message wakes it only when it mentions the
//! account (the MUC room decides, [`Module::room_mention`]), never merely
//! by reaching a detached session. Registrations are stored per account
//! and cached in memory.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use jid::{BareJid, FullJid, Jid};

use crate::element::Element;
use crate::module::{Hooks, IqRequest, IqResult, Module, ServerContext};
use crate::ns;
use crate::options::{Kind, ModuleSpec, OptSpec};
use crate::opts::Opts;
use crate::stanza::{Condition, StanzaError};

/// The XEP-0357 namespace.
pub const NS: &str = "urn:xmpp:push:0";
const MODULE: &str = "mod_push";
const KEY: &str = "registrations";
/// Most push services one account may register.
const MAX_REGISTRATIONS: usize = 20;
/// Accounts whose registrations are cached; more clears the cache.
const MAX_CACHED: usize = 100_000;

/// The options of `mod_push` (ejabberd's).
pub const SPEC: ModuleSpec = ModuleSpec::module(
    "mod_push",
    &[
        OptSpec::honoured(
            "include_sender",
            Kind::Bool,
            "false",
            "put the sender's JID in notifications",
        ),
        OptSpec::honoured(
            "include_body",
            Kind::BoolOrText,
            "New message",
            "`true`: the message's body; `false`: none; a text: that text",
        ),
        OptSpec::ignored(
            "notify_on",
            Kind::Any,
            "which events notify (Rookery: messages)",
        ),
    ],
    true,
);

/// One registered push service.
#[derive(Clone, Debug, PartialEq)]
struct Registration {
    jid: String,
    node: String,
    /// The publish-options form the client gave (e.g. a secret).
    options: Option<Element>,
}

/// `mod_push`.
pub struct Push {
    /// Put the sender's JID in notifications.
    pub include_sender: bool,
    /// `None`: no body; `Some("")`: the message's body; else this text.
    pub include_body: Option<String>,
    cache: RwLock<HashMap<BareJid, Arc<Vec<Registration>>>>,
}

impl Push {
    pub fn from_opts(o: &mut Opts<'_>) -> Push {
        let include_body = match o.get("include_body") {
            Some(serde_yaml_ng::Value::Bool(true)) => Some(String::new()),
            Some(serde_yaml_ng::Value::Bool(false)) => None,
            Some(serde_yaml_ng::Value::String(s)) => Some(s.clone()),
            _ => SPEC.option("include_body").map(|s| s.default.to_string()),
        };
        Push {
            include_sender: o.bool("include_sender"),
            include_body,
            cache: RwLock::default(),
        }
    }

    /// Whether `account` registered a push service (a cached account's
    /// answer without taking a reference to its list).
    fn has_registrations(&self, ctx: &dyn ServerContext, account: &BareJid) -> bool {
        if let Some(r) = self
            .cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(account)
        {
            return !r.is_empty();
        }
        !self.registrations(ctx, account).is_empty()
    }

    fn registrations(&self, ctx: &dyn ServerContext, account: &BareJid) -> Arc<Vec<Registration>> {
        if let Some(r) = self
            .cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(account)
        {
            return r.clone();
        }
        let regs: Vec<Registration> = ctx
            .store(MODULE)
            .get(account, KEY)
            .ok()
            .flatten()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|xml| ctx.parse_xml(&xml))
            .map(|list| {
                list.child_elements()
                    .filter_map(|r| {
                        Some(Registration {
                            jid: r.attr("jid")?.to_string(),
                            node: r.attr("node")?.to_string(),
                            options: r.child("x", ns::DATA_FORMS).cloned(),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let regs = Arc::new(regs);
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(account.clone(), regs.clone());
        regs
    }

    fn store(
        &self,
        ctx: &dyn ServerContext,
        account: &BareJid,
        regs: Vec<Registration>,
    ) -> Result<(), StanzaError> {
        let mut list = Element::new("registrations", NS);
        for r in &regs {
            let mut e = Element::new("registration", NS)
                .with_attr("jid", r.jid.as_str())
                .with_attr("node", r.node.as_str());
            if let Some(x) = &r.options {
                e = e.with_child(x.clone());
            }
            list = list.with_child(e);
        }
        if regs.is_empty() {
            ctx.store(MODULE).delete(account, KEY)?;
        } else {
            ctx.store(MODULE)
                .put(account, KEY, list.to_xml(ns::CLIENT).as_bytes())?;
        }
        self.cache
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(account.clone(), Arc::new(regs));
        Ok(())
    }

    /// Publish a summary notification to each of the account's services.
    fn notify(&self, ctx: &dyn ServerContext, account: &BareJid, msg: &Element) {
        let regs = self.registrations(ctx, account);
        if regs.is_empty() {
            return;
        }
        let field = |var: &str, value: &str| {
            Element::new("field", ns::DATA_FORMS)
                .with_attr("var", var)
                .with_child(Element::new("value", ns::DATA_FORMS).with_text(value))
        };
        let mut form = Element::new("x", ns::DATA_FORMS)
            .with_attr("type", "submit")
            .with_child(field("FORM_TYPE", "urn:xmpp:push:summary"))
            .with_child(field("message-count", "1"));
        if self.include_sender {
            if let Some(from) = msg.attr("from") {
                form = form.with_child(field("last-message-sender", from));
            }
        }
        match (&self.include_body, msg.child("body", ns::CLIENT)) {
            (Some(text), Some(body)) if text.is_empty() => {
                form = form.with_child(field("last-message-body", &body.text()));
            }
            (Some(text), Some(_)) => form = form.with_child(field("last-message-body", text)),
            _ => {}
        }
        for (i, r) in regs.iter().enumerate() {
            let mut pubsub = Element::new("pubsub", ns::PUBSUB).with_child(
                Element::new("publish", ns::PUBSUB)
                    .with_attr("node", r.node.as_str())
                    .with_child(
                        Element::new("item", ns::PUBSUB)
                            .with_child(Element::new("notification", NS).with_child(form.clone())),
                    ),
            );
            if let Some(x) = &r.options {
                pubsub = pubsub
                    .with_child(Element::new("publish-options", ns::PUBSUB).with_child(x.clone()));
            }
            let id = format!("push-{:016x}-{i}", rand_id());
            ctx.route(
                Element::new("iq", ns::CLIENT)
                    .with_attr("type", "set")
                    .with_attr("from", account.as_str())
                    .with_attr("to", r.jid.as_str())
                    .with_attr("id", id)
                    .with_child(pubsub),
            );
        }
    }
}

fn rand_id() -> u64 {
    use rand::Rng;
    rand::thread_rng().gen()
}

/// Messages worth waking a phone for: with a body (not chat states,
/// receipts or errors).
fn wakes(msg: &Element) -> bool {
    msg.attr("type") != Some("error") && msg.child("body", ns::CLIENT).is_some()
}

/// Groupchat messages wake a phone only when the room says they mention
/// the account ([`Module::room_mention`]), not each time they reach a
/// session waiting for resumption.
fn is_groupchat(msg: &Element) -> bool {
    msg.attr("type") == Some("groupchat")
}

impl Module for Push {
    fn name(&self) -> &'static str {
        MODULE
    }
    fn hooks(&self) -> Hooks {
        Hooks::MESSAGE_DELIVERED | Hooks::MESSAGE_STORED_OFFLINE | Hooks::ROOM_MENTION
    }
    fn account_disco_features(&self) -> Vec<&'static str> {
        vec![NS]
    }
    fn account_iq_namespaces(&self) -> Vec<&'static str> {
        vec![NS]
    }
    fn handle_account_iq(&self, ctx: &dyn ServerContext, req: &IqRequest<'_>) -> IqResult {
        if !req.is_set {
            return Err(StanzaError::bad_request());
        }
        if !req.from_owner() {
            return Err(StanzaError::forbidden());
        }
        let account = req.account();
        let service = req
            .payload
            .attr("jid")
            .and_then(|j| Jid::new(j).ok())
            .ok_or_else(StanzaError::bad_request)?;
        let mut regs = (*self.registrations(ctx, &account)).clone();
        match req.payload.name.as_str() {
            "enable" => {
                let node = req
                    .payload
                    .attr("node")
                    .filter(|n| !n.is_empty())
                    .ok_or_else(StanzaError::bad_request)?;
                regs.retain(|r| !(r.jid == service.as_str() && r.node == node));
                if regs.len() >= MAX_REGISTRATIONS {
                    return Err(StanzaError::new(
                        crate::stanza::ErrorType::Wait,
                        Condition::ResourceConstraint,
                    ));
                }
                regs.push(Registration {
                    jid: service.to_string(),
                    node: node.to_string(),
                    options: req.payload.child("x", ns::DATA_FORMS).cloned(),
                });
            }
            "disable" => {
                let node = req.payload.attr("node");
                regs.retain(|r| !(r.jid == service.as_str() && node.is_none_or(|n| n == r.node)));
            }
            _ => return Err(StanzaError::bad_request()),
        }
        self.store(ctx, &account, regs)?;
        Ok(None)
    }
    fn room_mention(&self, ctx: &dyn ServerContext, account: &BareJid, msg: &Element) {
        if wakes(msg) {
            self.notify(ctx, account, msg);
        }
    }
    fn message_stored_offline(&self, ctx: &dyn ServerContext, account: &BareJid, msg: &Element) {
        if wakes(msg) {
            self.notify(ctx, account, msg);
        }
    }
    fn message_delivered(
        &self,
        ctx: &dyn ServerContext,
        account: &BareJid,
        delivered_to: &[FullJid],
        msg: &Element,
    ) -> Vec<Element> {
        // Only when every session it reached has lost its connection (the
        // cached registrations first: most accounts have none, and listing
        // the sessions copies them).
        if wakes(msg)
            && !is_groupchat(msg)
            && !delivered_to.is_empty()
            && self.has_registrations(ctx, account)
        {
            let sessions = ctx.sessions(account);
            let all_detached = delivered_to
                .iter()
                .all(|j| sessions.iter().any(|s| &s.jid == j && s.detached));
            if all_detached {
                self.notify(ctx, account, msg);
            }
        }
        Vec::new()
    }
}
