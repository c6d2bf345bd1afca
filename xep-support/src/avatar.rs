//! XEP-0398 user avatar to vCard-based avatar conversion (`mod_avatar`, as
//! in ejabberd): an avatar published to PEP (XEP-0084: data node, then
//! metadata node) is written into the account's vCard PHOTO, so clients
//! that only know XEP-0153 see it (and the presence hash of
//! `mod_vcard_xupdate` follows); a vCard set with a PHOTO is published to
//! the PEP avatar nodes, so XEP-0084 clients see it. Empty metadata (avatar
//! disabled) removes the PHOTO; a vCard without PHOTO disables the PEP
//! avatar. Needs `mod_vcard` and `mod_pep`; the account then advertises
//! `urn:xmpp:pep-vcard-conversion:0`.
//!
//! Dependencies run one way: this file uses `pep.rs` and `vcard.rs`, which
//! call it only through the hooks they define ([`PepToVcard`] is a
//! [`PepHook`], [`VcardToPep`] a [`VcardHook`]; the registry attaches them).
//! Writes made here do not call the hooks back: a vCard written from PEP
//! goes straight to storage, and [`Pep::publish_as_owner`] does not convert.

use std::sync::Arc;

use base64::Engine as _;
use jid::BareJid;
use sha1::{Digest, Sha1};

use crate::element::Element;
use crate::module::{Hooks, Module, ServerContext};
use crate::ns;
use crate::pep::{Pep, PepHook};
use crate::vcard::{load_vcard, photo_hash, PhotoHashes, VcardHook};

/// XEP-0084 metadata node.
pub const NS_METADATA: &str = "urn:xmpp:avatar:metadata";
/// XEP-0084 data node.
pub const NS_DATA: &str = "urn:xmpp:avatar:data";
/// The account feature of XEP-0398.
pub const NS_CONVERSION: &str = "urn:xmpp:pep-vcard-conversion:0";

/// `mod_avatar`: the conversion runs in the hooks below, which the registry
/// attaches to `mod_pep` and `mod_vcard` when this module is enabled.
pub struct Avatar;

impl Module for Avatar {
    fn name(&self) -> &'static str {
        "mod_avatar"
    }
    fn hooks(&self) -> Hooks {
        Hooks::NONE
    }
}

/// PEP → vCard: the owner published avatar metadata. Also advertises
/// [`NS_CONVERSION`] on accounts.
pub struct PepToVcard {
    /// The photo hashes `mod_vcard_xupdate` puts in presence.
    pub hashes: Arc<PhotoHashes>,
}

impl PepHook for PepToVcard {
    fn account_features(&self) -> Vec<&'static str> {
        vec![NS_CONVERSION]
    }
    fn item_published(&self, ctx: &dyn ServerContext, pep: &Pep, owner: &BareJid, node: &str) {
        if node == NS_METADATA {
            pep_to_vcard(ctx, pep, &self.hashes, owner);
        }
    }
}

/// vCard → PEP: a vCard was set.
pub struct VcardToPep {
    pub pep: Arc<Pep>,
}

impl VcardHook for VcardToPep {
    fn vcard_set(&self, ctx: &dyn ServerContext, account: &BareJid, vcard: &Element) {
        vcard_to_pep(ctx, &self.pep, account, vcard);
    }
}

/// The metadata node changed: mirror the avatar it points at into the vCard.
fn pep_to_vcard(ctx: &dyn ServerContext, pep: &Pep, hashes: &PhotoHashes, owner: &BareJid) {
    let Some((_, metadata)) = pep.last_item(ctx, owner, NS_METADATA) else {
        return;
    };
    // The first info whose data is in PEP (no url): what XEP-0153 can carry.
    let info = metadata
        .child_elements()
        .find(|i| i.is("info", NS_METADATA) && i.attr("url").is_none());
    let photo = match info {
        Some(info) => {
            let Some(id) = info.attr("id") else { return };
            let Some(data) = pep.item(ctx, owner, NS_DATA, id) else {
                // The data was not published (first): nothing to convert.
                return;
            };
            let kind = info.attr("type").unwrap_or("image/png");
            Some(
                Element::new("PHOTO", ns::VCARD)
                    .with_child(Element::new("TYPE", ns::VCARD).with_text(kind))
                    .with_child(Element::new("BINVAL", ns::VCARD).with_text(data.text())),
            )
        }
        None => None,
    };
    let mut vcard = match load_vcard(ctx, owner) {
        Ok(v) => v.unwrap_or_else(|| Element::new("vCard", ns::VCARD)),
        Err(_) => return,
    };
    let had_photo = vcard.child("PHOTO", ns::VCARD).is_some();
    if photo.is_none() && !had_photo {
        return;
    }
    vcard
        .children
        .retain(|c| !matches!(c, crate::Node::Element(e) if e.is("PHOTO", ns::VCARD)));
    if let Some(photo) = photo {
        vcard.children.push(crate::Node::Element(photo));
    }
    let xml = vcard.to_xml(ns::CLIENT);
    if let Err(e) = ctx
        .store(crate::vcard::MODULE)
        .put(owner, crate::vcard::KEY, xml.as_bytes())
    {
        tracing::error!("storing the vCard avatar of {owner}: {e:?}");
        return;
    }
    if hashes.get(owner).is_some() {
        hashes.set(owner, Some(photo_hash(&vcard)));
    }
}

/// A vCard was set: publish its photo to the PEP avatar nodes (or disable
/// the PEP avatar when the vCard has none and PEP had one).
fn vcard_to_pep(ctx: &dyn ServerContext, pep: &Pep, owner: &BareJid, vcard: &Element) {
    let current = pep.last_item(ctx, owner, NS_METADATA).and_then(|(_, m)| {
        m.child_elements()
            .find(|i| i.is("info", NS_METADATA))
            .and_then(|i| i.attr("id").map(str::to_string))
    });
    let photo = vcard.child("PHOTO", ns::VCARD);
    let b64: Option<String> = photo
        .and_then(|p| p.child("BINVAL", ns::VCARD))
        .map(|b| b.text().chars().filter(|c| !c.is_whitespace()).collect());
    let bytes = b64
        .as_deref()
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok());
    let (Some(b64), Some(bytes)) = (b64, bytes) else {
        if current.is_some() {
            let _ = pep.publish_as_owner(
                ctx,
                owner,
                NS_METADATA,
                "none",
                Element::new("metadata", NS_METADATA),
            );
        }
        return;
    };
    let id: String = Sha1::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if current.as_deref() == Some(id.as_str()) {
        return;
    }
    let kind = photo
        .and_then(|p| p.child("TYPE", ns::VCARD))
        .map(|t| t.text().trim().to_string())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "image/png".to_string());
    let data = Element::new("data", NS_DATA).with_text(b64);
    if let Err(e) = pep.publish_as_owner(ctx, owner, NS_DATA, &id, data) {
        tracing::warn!("publishing the vCard avatar of {owner} to PEP: {e:?}");
        return;
    }
    let metadata = Element::new("metadata", NS_METADATA).with_child(
        Element::new("info", NS_METADATA)
            .with_attr("id", id.as_str())
            .with_attr("bytes", bytes.len().to_string())
            .with_attr("type", kind),
    );
    if let Err(e) = pep.publish_as_owner(ctx, owner, NS_METADATA, &id, metadata) {
        tracing::warn!("publishing the vCard avatar metadata of {owner}: {e:?}");
    }
}
