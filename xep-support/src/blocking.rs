//! XEP-0191 Blocking Command (`mod_blocking`): an account's blocklist
//! (get/block/unblock, pushed to every resource that requested the list),
//! enforced by stanza filters in both directions:
//! - inbound from a blocked entity: presence dropped, messages and iq
//!   get/set answered with `<service-unavailable/>`, other iqs dropped;
//! - outbound to a blocked entity: presence dropped, messages and iq
//!   get/set refused with `<not-acceptable/>` and the
//!   `urn:xmpp:blocking:errors` `<blocked/>` payload.
//!
//! Blocking a contact that sees the account's presence sends it
//! unavailable presence from every available resource; unblocking sends it
//! the current presence again.
//!
//! JID matching follows XEP-0016 §2.1: an item `domain` blocks everything
//! from the domain, `domain/resource` that resource of the domain, a bare
//! JID every resource, a full JID that resource only.
//!
//! Storage: the list, newline-separated normalised JIDs, under key `list`
//! in the module's key/value space. Lists of accounts with sessions live
//! in memory (loaded at bind), so the filters of online accounts never read
//! the database; a stanza to or from an account without a session reads
//! its list (such a stanza is about to be stored or dropped anyway).

use crate::jids::{self, Bare};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use jid::{BareJid, FullJid, Jid};

use crate::element::Element;
use crate::module::{Hooks, IqRequest, IqResult, Module, ServerContext, Verdict};
use crate::ns;
use crate::stanza::{Condition, ErrorType, StanzaError};

const KEY: &str = "list";

type List = Arc<BTreeSet<String>>;

/// `mod_blocking`.
#[derive(Default)]
pub struct Blocking {
    lists: RwLock<HashMap<BareJid, List>>,
    /// Sessions that requested the blocklist (they get pushes).
    interested: Mutex<HashSet<FullJid>>,
    /// Serialises read-modify-write of lists.
    write: Mutex<()>,
    next_id: AtomicU64,
}

/// Whether `jid` is matched by an item of `list` (XEP-0016 §2.1).
fn matches(list: &BTreeSet<String>, jid: &Jid) -> bool {
    if list.is_empty() {
        return false;
    }
    let domain = jid.domain().as_str();
    if list.contains(jid.as_str()) || list.contains(domain) {
        return true;
    }
    // A bare JID item matches its resources; `domain/resource` items match
    // only JIDs without a localpart, which `jid.as_str()` already covered.
    jid.node().is_some() && list.contains(jid.bare().as_str())
}

impl Blocking {
    /// Whether the list of `account` is in memory (it has a session).
    fn cached(&self, account: &BareJid) -> bool {
        self.lists
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(account)
    }

    /// Whether `account`'s list blocks `jid`: an online account's list is
    /// matched in place (no reference taken), another's is read.
    fn blocks(&self, ctx: &dyn ServerContext, account: &BareJid, jid: &Jid) -> bool {
        if let Some(l) = self
            .lists
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(account)
        {
            return matches(l, jid);
        }
        matches(&self.load(ctx, account), jid)
    }

    fn load(&self, ctx: &dyn ServerContext, account: &BareJid) -> List {
        if let Some(l) = self
            .lists
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(account)
        {
            return l.clone();
        }
        let text = match ctx.store(self.name()).get(account, KEY) {
            Ok(v) => v
                .and_then(|b| match String::from_utf8(b) {
                    Ok(text) => Some(text),
                    Err(_) => {
                        tracing::error!("the blocklist of {account} is unreadable; skipped");
                        None
                    }
                })
                .unwrap_or_default(),
            Err(e) => {
                tracing::error!("reading the blocklist of {account}: {e}");
                String::new()
            }
        };
        Arc::new(
            text.lines()
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect(),
        )
    }

    fn save(
        &self,
        ctx: &dyn ServerContext,
        account: &BareJid,
        list: BTreeSet<String>,
    ) -> Result<(), StanzaError> {
        let text: Vec<&str> = list.iter().map(String::as_str).collect();
        if list.is_empty() {
            ctx.store(self.name()).delete(account, KEY)?;
        } else {
            ctx.store(self.name())
                .put(account, KEY, text.join("\n").as_bytes())?;
        }
        let mut lists = self.lists.write().unwrap_or_else(|e| e.into_inner());
        if lists.contains_key(account) || !ctx.sessions(account).is_empty() {
            lists.insert(account.clone(), Arc::new(list));
        }
        Ok(())
    }

    /// Items of a block/unblock request, normalised.
    fn items(payload: &Element) -> Result<Vec<String>, StanzaError> {
        payload
            .child_elements()
            .filter(|c| c.is("item", ns::BLOCKING))
            .map(|c| {
                c.attr("jid")
                    .and_then(jids::parse)
                    .map(|j| j.to_string())
                    .ok_or_else(|| StanzaError::new(ErrorType::Modify, Condition::JidMalformed))
            })
            .collect()
    }

    /// Push the change to every resource of `account` that requested the list.
    fn push(&self, ctx: &dyn ServerContext, account: &BareJid, change: &Element) {
        let interested: Vec<FullJid> = self
            .interested
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|j| j.bare() == *account)
            .cloned()
            .collect();
        for to in interested {
            let id = format!(
                "block-push-{}",
                self.next_id.fetch_add(1, Ordering::Relaxed)
            );
            ctx.route(
                Element::new("iq", ns::CLIENT)
                    .with_attr("type", "set")
                    .with_attr("id", id)
                    .with_attr("from", account.as_str())
                    .with_attr("to", to.as_str())
                    .with_child(change.clone()),
            );
        }
    }

    /// Send each available resource's presence (or unavailable) to the
    /// contacts among `jids` that are subscribed to the account's presence.
    fn presence_to(
        &self,
        ctx: &dyn ServerContext,
        account: &BareJid,
        jids: &[String],
        available: bool,
    ) {
        let contacts = ctx.roster_contacts(account);
        let sessions: Vec<_> = ctx
            .sessions(account)
            .into_iter()
            .filter(|s| s.available)
            .collect();
        let changed: BTreeSet<String> = jids.iter().cloned().collect();
        for (contact, sub) in contacts {
            if !sub.has_from() {
                continue;
            }
            if !matches(&changed, &Jid::from(contact.clone())) {
                continue;
            }
            for s in &sessions {
                let mut p = if available {
                    match &s.presence {
                        Some(p) => p.clone(),
                        None => continue,
                    }
                } else {
                    Element::new("presence", ns::CLIENT).with_attr("type", "unavailable")
                };
                p.set_attr("from", s.jid.as_str());
                p.set_attr("to", contact.as_str());
                if available {
                    ctx.route(p);
                } else {
                    ctx.route_unfiltered(p);
                }
            }
        }
    }
}

impl Module for Blocking {
    fn name(&self) -> &'static str {
        "mod_blocking"
    }
    fn hooks(&self) -> Hooks {
        Hooks::FILTER_INBOUND
            | Hooks::FILTER_OUTBOUND
            | Hooks::SESSION_OPENED
            | Hooks::SESSION_CLOSED
    }
    fn disco_features(&self) -> Vec<&'static str> {
        vec![ns::BLOCKING]
    }
    fn account_iq_namespaces(&self) -> Vec<&'static str> {
        vec![ns::BLOCKING]
    }
    fn handle_account_iq(&self, ctx: &dyn ServerContext, req: &IqRequest<'_>) -> IqResult {
        if !req.from_owner() {
            return Err(StanzaError::forbidden());
        }
        let account = req.account();
        match (req.is_set, req.payload.name.as_str()) {
            (false, "blocklist") => {
                self.interested
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(req.from.clone());
                let list = self.load(ctx, &account);
                let mut out = Element::new("blocklist", ns::BLOCKING);
                for j in list.iter() {
                    out = out.with_child(
                        Element::new("item", ns::BLOCKING).with_attr("jid", j.as_str()),
                    );
                }
                Ok(Some(out))
            }
            (true, "block") => {
                let items = Self::items(req.payload)?;
                if items.is_empty() {
                    return Err(StanzaError::bad_request());
                }
                let _g = self.write.lock().unwrap_or_else(|e| e.into_inner());
                let mut list = (*self.load(ctx, &account)).clone();
                let added: Vec<String> = items
                    .into_iter()
                    .filter(|i| list.insert(i.clone()))
                    .collect();
                // Contacts being blocked stop seeing us (before the filter hides us).
                self.presence_to(ctx, &account, &added, false);
                self.save(ctx, &account, list)?;
                let mut change = Element::new("block", ns::BLOCKING);
                for j in &added {
                    change = change.with_child(
                        Element::new("item", ns::BLOCKING).with_attr("jid", j.as_str()),
                    );
                }
                if !added.is_empty() {
                    self.push(ctx, &account, &change);
                }
                Ok(None)
            }
            (true, "unblock") => {
                let items = Self::items(req.payload)?;
                let _g = self.write.lock().unwrap_or_else(|e| e.into_inner());
                let mut list = (*self.load(ctx, &account)).clone();
                let unblock_all = items.is_empty();
                let removed: Vec<String> = if unblock_all {
                    std::mem::take(&mut list).into_iter().collect()
                } else {
                    items.into_iter().filter(|i| list.remove(i)).collect()
                };
                self.save(ctx, &account, list)?;
                if !removed.is_empty() {
                    self.presence_to(ctx, &account, &removed, true);
                    let mut change = Element::new("unblock", ns::BLOCKING);
                    // Unblocking everything is pushed as it was asked: an empty <unblock/>.
                    let listed = if unblock_all { &[][..] } else { &removed[..] };
                    for j in listed {
                        change = change.with_child(
                            Element::new("item", ns::BLOCKING).with_attr("jid", j.as_str()),
                        );
                    }
                    self.push(ctx, &account, &change);
                }
                Ok(None)
            }
            _ => Err(StanzaError::bad_request()),
        }
    }
    fn session_opened(&self, ctx: &dyn ServerContext, jid: &FullJid) {
        let account = jid.bare();
        let list = self.load(ctx, &account);
        self.lists
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(account, list);
    }
    fn session_closed(&self, ctx: &dyn ServerContext, jid: &FullJid) {
        self.interested
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(jid);
        let account = jid.bare();
        if ctx.sessions(&account).is_empty() {
            self.lists
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&account);
        }
    }
    fn filter_inbound(
        &self,
        ctx: &dyn ServerContext,
        account: &BareJid,
        from: &Jid,
        stanza: &Element,
    ) -> Verdict {
        if stanza.name == "presence"
            && matches!(
                stanza.attr("type"),
                None | Some("unavailable") | Some("error")
            )
            && !self.cached(account)
        {
            // Presence broadcast to an account without sessions is dropped by
            // the router anyway: no database read for it.
            return Verdict::Pass;
        }
        if !self.blocks(ctx, account, from) {
            return Verdict::Pass;
        }
        let kind = stanza.attr("type").unwrap_or("");
        match stanza.name.as_str() {
            "message" if kind != "error" => Verdict::Reject(StanzaError::service_unavailable()),
            "iq" if kind == "get" || kind == "set" => {
                Verdict::Reject(StanzaError::service_unavailable())
            }
            _ => Verdict::Drop,
        }
    }
    fn filter_outbound(
        &self,
        ctx: &dyn ServerContext,
        account: &BareJid,
        to: &Jid,
        stanza: &mut Element,
    ) -> Verdict {
        if !self.blocks(ctx, account, to) {
            return Verdict::Pass;
        }
        let kind = stanza.attr("type").unwrap_or("");
        let refuse = match stanza.name.as_str() {
            "message" => kind != "error",
            "iq" => kind == "get" || kind == "set",
            _ => false,
        };
        if refuse {
            Verdict::Reject(
                StanzaError::not_acceptable()
                    .with_app(Element::new("blocked", ns::BLOCKING_ERRORS)),
            )
        } else {
            Verdict::Drop
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jid_matching_rules() {
        let list: BTreeSet<String> = ["a@x", "b@x/r", "y", "z/res"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let m = |j: &str| matches(&list, &Jid::new(j).unwrap());
        assert!(m("a@x") && m("a@x/any"));
        assert!(m("b@x/r") && !m("b@x") && !m("b@x/other"));
        assert!(m("y") && m("u@y/r") && m("y/r"));
        assert!(m("z/res") && !m("z/other") && !m("u@z/res"));
        assert!(!m("c@x"));
    }
}
