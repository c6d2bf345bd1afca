//! XEP-0402 §5.3 compatibility between the two places clients keep chatroom
//! bookmarks, when both `mod_private` and `mod_pep` are enabled:
//! XEP-0048 bookmarks in private XML storage (`storage:bookmarks`, used by
//! mcabber, profanity, Pidgin) and XEP-0402 bookmarks in the PEP node
//! `urn:xmpp:bookmarks:1` (Gajim, Conversations, Dino). A write to either
//! is converted and written to the other, so an account's clients see the
//! same rooms. Advertised on accounts as `urn:xmpp:bookmarks:1#compat`.
//!
//! What does not map is kept where it is: URL bookmarks stay in private
//! storage; XEP-0402 `<extensions/>` stay in PEP for rooms that remain.
//!
//! The whole bridge lives here: [`ToPrivate`] is a [`PepHook`] and
//! [`FromPrivate`] a [`PrivateHook`], attached by the registry when both
//! modules are enabled; `pep.rs` and `private.rs` do not import this file.
//! A write made by the bridge does not call the other side's hook back, so
//! a change crosses once.

use std::sync::Arc;

use jid::BareJid;

use crate::element::Element;
use crate::module::ServerContext;
use crate::ns;
use crate::pep::{Access, Pep, PepHook};
use crate::private::PrivateHook;
use crate::stanza::StanzaError;

/// The XEP-0402 node and payload namespace.
pub const NS_BOOKMARKS2: &str = "urn:xmpp:bookmarks:1";
/// XEP-0048's namespace.
pub const NS_BOOKMARKS: &str = "storage:bookmarks";
/// The compatibility feature.
pub const COMPAT: &str = "urn:xmpp:bookmarks:1#compat";

fn truthy(v: Option<&str>) -> bool {
    matches!(v, Some("true") | Some("1"))
}

/// XEP-0048 `<storage/>` → XEP-0402 items (room JID, `<conference/>`).
pub fn storage_to_items(storage: &Element) -> Vec<(String, Element)> {
    storage
        .child_elements()
        .filter(|c| c.is("conference", NS_BOOKMARKS))
        .filter_map(|c| {
            let jid = c.attr("jid")?.to_string();
            let mut conf = Element::new("conference", NS_BOOKMARKS2).with_attr(
                "autojoin",
                if truthy(c.attr("autojoin")) {
                    "true"
                } else {
                    "false"
                },
            );
            if let Some(name) = c.attr("name") {
                conf.set_attr("name", name);
            }
            for tag in ["nick", "password"] {
                if let Some(e) = c.child(tag, NS_BOOKMARKS) {
                    conf = conf.with_child(Element::new(tag, NS_BOOKMARKS2).with_text(e.text()));
                }
            }
            Some((jid, conf))
        })
        .collect()
}

/// XEP-0402 items → XEP-0048 `<storage/>`, keeping the URL bookmarks of
/// `previous` (what private storage held).
pub fn items_to_storage(items: &[(String, Element)], previous: Option<&Element>) -> Element {
    let mut storage = Element::new("storage", NS_BOOKMARKS);
    for (jid, conf) in items {
        let mut c = Element::new("conference", NS_BOOKMARKS)
            .with_attr("jid", jid.as_str())
            .with_attr(
                "autojoin",
                if truthy(conf.attr("autojoin")) {
                    "true"
                } else {
                    "false"
                },
            );
        if let Some(name) = conf.attr("name") {
            c.set_attr("name", name);
        }
        for tag in ["nick", "password"] {
            if let Some(e) = conf.child(tag, NS_BOOKMARKS2) {
                c = c.with_child(Element::new(tag, NS_BOOKMARKS).with_text(e.text()));
            }
        }
        storage = storage.with_child(c);
    }
    if let Some(prev) = previous {
        for url in prev.child_elements().filter(|c| c.is("url", NS_BOOKMARKS)) {
            storage = storage.with_child(url.clone());
        }
    }
    storage
}

/// Keep the `<extensions/>` of `old` (a PEP item) in `new` for the same room.
pub fn keep_extensions(new: &mut Element, old: &Element) {
    if let Some(ext) = old.child("extensions", NS_BOOKMARKS2) {
        new.children.push(crate::Node::Element(ext.clone()));
    }
}

/// PEP → private storage: the XEP-0402 node changed, so its rooms are
/// written to private storage as XEP-0048 bookmarks (keeping the URL
/// bookmarks stored there). Also advertises [`COMPAT`] on accounts.
pub struct ToPrivate;

impl PepHook for ToPrivate {
    fn account_features(&self) -> Vec<&'static str> {
        vec![COMPAT]
    }
    fn node_stored(
        &self,
        ctx: &dyn ServerContext,
        owner: &BareJid,
        node: &str,
        items: Option<&[(String, Element)]>,
    ) {
        if node != NS_BOOKMARKS2 {
            return;
        }
        let previous = ctx
            .store(crate::private::MODULE)
            .get(owner, NS_BOOKMARKS)
            .ok()
            .flatten()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|xml| ctx.parse_xml(&xml));
        let storage = items_to_storage(items.unwrap_or(&[]), previous.as_ref());
        if let Err(e) = ctx.store(crate::private::MODULE).put(
            owner,
            NS_BOOKMARKS,
            storage.to_xml(ns::CLIENT).as_bytes(),
        ) {
            tracing::error!("mirroring bookmarks of {owner} to private storage: {e}");
        }
    }
}

/// Private storage → PEP: XEP-0048 bookmarks were replaced, so the XEP-0402
/// node is made to hold the same rooms (created whitelist-only if needed)
/// and the owner's resources are notified of what changed.
pub struct FromPrivate {
    pub pep: Arc<Pep>,
}

impl PrivateHook for FromPrivate {
    fn stored(
        &self,
        ctx: &dyn ServerContext,
        account: &BareJid,
        fragment: &Element,
    ) -> Result<(), StanzaError> {
        if fragment.ns != NS_BOOKMARKS {
            return Ok(());
        }
        self.pep
            .replace_items(ctx, account, NS_BOOKMARKS2, Access::Whitelist, |old| {
                let mut items: Vec<(String, Element)> = Vec::new();
                for (jid, mut conf) in storage_to_items(fragment) {
                    if let Some((_, o)) = old.iter().find(|(i, _)| *i == jid) {
                        keep_extensions(&mut conf, o);
                    }
                    items.retain(|(i, _)| *i != jid);
                    items.push((jid, conf));
                }
                items
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_rooms_and_urls() {
        let storage = Element::new("storage", NS_BOOKMARKS)
            .with_child(
                Element::new("conference", NS_BOOKMARKS)
                    .with_attr("jid", "r@c.example")
                    .with_attr("name", "R")
                    .with_attr("autojoin", "1")
                    .with_child(Element::new("nick", NS_BOOKMARKS).with_text("al")),
            )
            .with_child(Element::new("url", NS_BOOKMARKS).with_attr("url", "https://x/"));
        let items = storage_to_items(&storage);
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].0, "r@c.example");
        assert_eq!(items[0].1.attr("autojoin"), Some("true"));
        let back = items_to_storage(&items, Some(&storage));
        let conf = back.child("conference", NS_BOOKMARKS).unwrap();
        assert_eq!(conf.attr("jid"), Some("r@c.example"));
        assert_eq!(conf.attr("name"), Some("R"));
        assert_eq!(conf.child("nick", NS_BOOKMARKS).unwrap().text(), "al");
        assert!(back.child("url", NS_BOOKMARKS).is_some());
    }
}
