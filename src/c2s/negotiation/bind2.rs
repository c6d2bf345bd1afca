//! XEP-0386 Bind 2 inside a XEP-0388 `<authenticate/>`: the feature (with
//! the features that can be enabled inline: XEP-0280 carbons, XEP-0352
//! CSI, XEP-0198 stream management — each only when its module is on),
//! and the bind itself after a successful authentication: a resource made
//! of the client's `<tag/>` and a server-made part (`tag/part`, the XEP's
//! recommended form; the part alone without a usable tag) — random, or
//! stable per user-agent id so that a client's new bind replaces its
//! earlier session (see `resource_suffix`) — a new session
//! started as a RFC 6120 bind would, then the inline features enabled
//! before the `<success/>` (with `<bound/>`: the archive's XEP-0313
//! `<metadata/>` when mod_mam is on, and XEP-0198's
//! `<enabled/>` or `<failed/>`) is written.
//!
//! Invariant: the `<success/>` is written by the negotiation before the
//! session's writer starts, so it precedes every stanza routed to the new
//! session; stream management counts from the first stanza after it.

use std::sync::OnceLock;

use rand::RngCore;
use xep_support::element::Element;
use xep_support::ns;

use super::{stream_id, Bound, Negotiation, Stop};

/// Longest client tag kept in a resource (characters).
const MAX_TAG: usize = 64;

impl Negotiation {
    /// The Bind 2 feature for SASL2's `<inline/>`.
    pub(super) fn bind2_feature(&self) -> Element {
        let live = self.server.live();
        let mut inline = Element::new("inline", ns::BIND2);
        if self.carbons().is_some() {
            inline = inline.with_child(feature(ns::CARBONS));
        }
        if live.csi.is_some() {
            inline = inline.with_child(feature(ns::CSI));
        }
        if live.sm.is_some() {
            inline = inline.with_child(feature(ns::SM));
        }
        Element::new("bind", ns::BIND2).with_child(inline)
    }

    fn carbons(&self) -> Option<std::sync::Arc<dyn xep_support::module::Module>> {
        self.server
            .live()
            .modules
            .iter()
            .find(|m| {
                m.as_any()
                    .is_some_and(|a| a.is::<xep_support::carbons::Carbons>())
            })
            .cloned()
    }

    /// Bind after a successful SASL2 authentication and send the
    /// `<success/>` (carrying `sm_failed`, a refused inline resumption).
    pub(super) async fn bind2(
        &mut self,
        req: &Element,
        success: Element,
        sm_failed: Option<Element>,
    ) -> Result<Option<Bound>, Stop> {
        let host = self.host.clone().unwrap_or_default();
        let user = self.user.clone().unwrap_or_default();
        let bare = match jid::BareJid::new(&format!("{user}@{host}")) {
            Ok(b) => b,
            Err(_) => {
                return Err(Stop::Error(
                    crate::stream::StreamCondition::InternalServerError,
                    None,
                ))
            }
        };
        let random = self.resource_suffix(&bare);
        let random = random.as_str();
        let tag: String = req
            .child("tag", ns::BIND2)
            .map(|t| t.text().trim().chars().take(MAX_TAG).collect())
            .unwrap_or_default();
        let full = (!tag.is_empty())
            .then(|| bare.with_resource_str(&format!("{tag}/{random}")).ok())
            .flatten()
            .or_else(|| bare.with_resource_str(random).ok());
        let Some(full) = full else {
            return Err(Stop::Error(
                crate::stream::StreamCondition::InternalServerError,
                None,
            ));
        };
        let Some((handle, rx)) = self.start_session(full.clone(), None) else {
            // Authenticated, but no session: say so and let the client retry.
            self.user = None;
            let xml = format!(
                "<failure xmlns='{}'><temporary-auth-failure xmlns='{}'/><text>too many sessions of this account</text></failure>",
                ns::SASL2,
                ns::SASL
            );
            self.send(&xml).await?;
            return Ok(None);
        };
        let mut bound = Element::new("bound", ns::BIND2);
        if let Some(metadata) = self.archive_metadata(&bare) {
            bound = bound.with_child(metadata);
        }
        let live = self.server.live();
        for el in req.child_elements() {
            if el.is("enable", ns::CARBONS) {
                if let Some(m) = self.carbons() {
                    if let Some(c) = m
                        .as_any()
                        .and_then(|a| a.downcast_ref::<xep_support::carbons::Carbons>())
                    {
                        c.enable(&full);
                    }
                }
            } else if el.is("inactive", ns::CSI) && live.csi.is_some() {
                handle
                    .csi_inactive
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            } else if el.is("enable", ns::SM) {
                if let Some(opts) = live.sm.as_ref() {
                    let (reply, _resumable) =
                        crate::c2s::sm::ack::enable(&self.server, opts, &handle, el);
                    if reply.name == "enabled" {
                        // <enabled/> leaves inside the <success/>, before
                        // anything the writer writes: count from now on.
                        // The session installs the claim channel (resumable).
                        if let Some(sm) = handle.sm.get() {
                            sm.lock().unwrap_or_else(|e| e.into_inner()).counting = true;
                        }
                    }
                    bound = bound.with_child(reply);
                }
            }
        }
        let mut success = success.with_child(
            Element::new("authorization-identifier", ns::SASL2).with_text(full.to_string()),
        );
        if let Some(failed) = sm_failed {
            success = success.with_child(failed);
        }
        success = success.with_child(bound);
        let xml = self.framing.to_xml(&success);
        // The session is started: if this write fails, the session's own
        // task finds the connection gone and ends (or detaches) it.
        let _ = self.send(&xml).await;
        Ok(Some(self.hand_over(handle, rx, None)))
    }
}

impl Negotiation {
    /// The server-made part of a Bind 2 resource: random, or — when the
    /// client gave a `<user-agent id/>` — a keyed hash of the account and
    /// that id (the id itself is never shown), stable for the server
    /// process's life. The same client then gets the same full JID, so its
    /// earlier session is replaced (XEP-0386 §3.2: the server SHOULD end
    /// earlier sessions of the same client).
    fn resource_suffix(&self, bare: &jid::BareJid) -> String {
        static KEY: OnceLock<[u8; 32]> = OnceLock::new();
        let Some(ua) = &self.user_agent else {
            return stream_id()[..12].to_string();
        };
        let key = KEY.get_or_init(|| {
            let mut k = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut k);
            k
        });
        let mut data = bare.to_string().into_bytes();
        data.push(0);
        data.extend_from_slice(ua.as_bytes());
        let mac =
            crate::auth::credentials::hmac(crate::auth::credentials::ScramHash::Sha256, key, &data);
        mac[..6].iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl Negotiation {
    /// XEP-0313's `<metadata/>` (the oldest and newest message of the
    /// account's archive, ids and times) at the moment of binding, when
    /// mod_mam is on; empty `<metadata/>` for an empty archive.
    fn archive_metadata(&self, bare: &jid::BareJid) -> Option<Element> {
        use xep_support::archive::{format_id, PageQuery};
        use xep_support::mam::NS_MAM;
        let live = self.server.live();
        if !live.modules.iter().any(|m| m.name() == "mod_mam") {
            return None;
        }
        let archive = self.server.storage.archive();
        let edge = |reverse: bool| {
            let q = PageQuery {
                with: None,
                lo: 0,
                hi: u64::MAX,
                reverse,
                limit: 1,
            };
            match archive.page(bare, &q) {
                Ok(page) => page.into_iter().next().map(|m| m.id),
                Err(e) => {
                    tracing::warn!("archive metadata of {bare}: {e}");
                    None
                }
            }
        };
        let mut metadata = Element::new("metadata", NS_MAM);
        if let (Some(first), Some(last)) = (edge(false), edge(true)) {
            for (name, id) in [("start", first), ("end", last)] {
                metadata = metadata.with_child(
                    Element::new(name, NS_MAM)
                        .with_attr("id", format_id(id))
                        .with_attr("timestamp", xep_support::mam::stamp(id)),
                );
            }
        }
        Some(metadata)
    }
}

fn feature(var: &str) -> Element {
    Element::new("feature", ns::BIND2).with_attr("var", var)
}
