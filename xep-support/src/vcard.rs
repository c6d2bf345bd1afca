//! XEP-0054 vcard-temp (`mod_vcard`): an account sets its own vCard and
//! anyone may read it (iq get to the account's bare JID); and XEP-0153
//! vCard-based avatars (`mod_vcard_xupdate`): the SHA-1 of the vCard's
//! photo is added to the account's outgoing available presence when the
//! client did not put a `vcard-temp:x:update` element there itself.
//!
//! The vCard is stored as XML in `mod_vcard`'s key/value space (key
//! `vcard`). The photo hashes of accounts with sessions are kept in memory
//! ([`PhotoHashes`], shared by both modules), so presence never reads the
//! database: loaded when a session is bound, updated by a vCard set,
//! dropped when the account's last session ends.
//!
//! A [`VcardHook`] (the XEP-0398 avatar bridge, `avatar.rs`) is told of each
//! vCard set; this module does not know what it does.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use base64::Engine as _;
use jid::{BareJid, FullJid, Jid};
use sha1::{Digest, Sha1};

use crate::element::Element;
use crate::module::{Hooks, IqRequest, IqResult, Module, ServerContext, Verdict};
use crate::ns;
use crate::stanza::StanzaError;

pub(crate) const MODULE: &str = "mod_vcard";
pub(crate) const KEY: &str = "vcard";

/// Photo hash per account with a session: `None` = no vCard stored,
/// `Some("")` = a vCard without photo, `Some(hex)` = SHA-1 of the photo.
#[derive(Default)]
pub struct PhotoHashes(RwLock<HashMap<BareJid, Option<String>>>);

impl PhotoHashes {
    pub(crate) fn get(&self, account: &BareJid) -> Option<Option<String>> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(account)
            .cloned()
    }
    pub(crate) fn set(&self, account: &BareJid, hash: Option<String>) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(account.clone(), hash);
    }
    fn remove(&self, account: &BareJid) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(account);
    }
}

/// The XEP-0153 hash of a vCard: hex SHA-1 of the decoded PHOTO/BINVAL, or
/// an empty string when the vCard has no photo.
pub fn photo_hash(vcard: &Element) -> String {
    let Some(binval) = vcard
        .child("PHOTO", ns::VCARD)
        .and_then(|p| p.child("BINVAL", ns::VCARD))
    else {
        return String::new();
    };
    let b64: String = binval
        .text()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(b64) else {
        return String::new();
    };
    Sha1::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub(crate) fn load_vcard(
    ctx: &dyn ServerContext,
    account: &BareJid,
) -> Result<Option<Element>, StanzaError> {
    let Some(bytes) = ctx.store(MODULE).get(account, KEY)? else {
        return Ok(None);
    };
    let vcard = String::from_utf8(bytes)
        .ok()
        .and_then(|xml| ctx.parse_xml(&xml));
    if vcard.is_none() {
        // Answered as if there were none; the next vCard set replaces it.
        tracing::error!("the stored vCard of {account} is unreadable; skipped");
    }
    Ok(vcard)
}

/// `mod_vcard`.
pub struct Vcard {
    pub hashes: Arc<PhotoHashes>,
    /// Told of each vCard set (with `mod_avatar`: the photo is mirrored to
    /// PEP, XEP-0398).
    pub hook: Option<Arc<dyn VcardHook>>,
}

/// A bridge from vCards to another module.
pub trait VcardHook: Send + Sync {
    /// `account` stored `vcard` (already written and hashed).
    fn vcard_set(&self, ctx: &dyn ServerContext, account: &BareJid, vcard: &Element);
}

impl Module for Vcard {
    fn name(&self) -> &'static str {
        MODULE
    }
    fn hooks(&self) -> Hooks {
        Hooks::NONE
    }
    fn disco_features(&self) -> Vec<&'static str> {
        vec![ns::VCARD]
    }
    fn account_iq_namespaces(&self) -> Vec<&'static str> {
        vec![ns::VCARD]
    }
    fn handle_account_iq(&self, ctx: &dyn ServerContext, req: &IqRequest<'_>) -> IqResult {
        if req.payload.name != "vCard" {
            return Err(StanzaError::bad_request());
        }
        let account = req.account();
        if req.is_set {
            if !req.from_owner() {
                return Err(StanzaError::forbidden());
            }
            let xml = req.payload.to_xml(ns::CLIENT);
            ctx.store(MODULE).put(&account, KEY, xml.as_bytes())?;
            if self.hashes.get(&account).is_some() {
                self.hashes.set(&account, Some(photo_hash(req.payload)));
            }
            if let Some(hook) = &self.hook {
                hook.vcard_set(ctx, &account, req.payload);
            }
            return Ok(None);
        }
        // No vCard yet: an empty one (XEP-0054 allows it; clients prefer it to an error).
        Ok(Some(
            load_vcard(ctx, &account)?.unwrap_or_else(|| Element::new("vCard", ns::VCARD)),
        ))
    }
}

/// `mod_vcard_xupdate`.
pub struct VcardXupdate {
    pub hashes: Arc<PhotoHashes>,
}

impl Module for VcardXupdate {
    fn name(&self) -> &'static str {
        "mod_vcard_xupdate"
    }
    fn hooks(&self) -> Hooks {
        Hooks::FILTER_OUTBOUND | Hooks::SESSION_OPENED | Hooks::SESSION_CLOSED
    }
    fn session_opened(&self, ctx: &dyn ServerContext, jid: &FullJid) {
        let account = jid.to_bare();
        if self.hashes.get(&account).is_none() {
            let hash = match load_vcard(ctx, &account) {
                Ok(v) => v.map(|v| photo_hash(&v)),
                Err(_) => None,
            };
            self.hashes.set(&account, hash);
        }
    }
    fn session_closed(&self, ctx: &dyn ServerContext, jid: &FullJid) {
        let account = jid.to_bare();
        if ctx.sessions(&account).is_empty() {
            self.hashes.remove(&account);
        }
    }
    fn filter_outbound(
        &self,
        _ctx: &dyn ServerContext,
        account: &BareJid,
        _to: &Jid,
        stanza: &mut Element,
    ) -> Verdict {
        if stanza.name != "presence"
            || stanza.attr("type").is_some()
            || stanza.child("x", ns::VCARD_UPDATE).is_some()
        {
            return Verdict::Pass;
        }
        if let Some(Some(hash)) = self.hashes.get(account) {
            let mut photo = Element::new("photo", ns::VCARD_UPDATE);
            if !hash.is_empty() {
                photo = photo.with_text(hash);
            }
            stanza.children.push(crate::Node::Element(
                Element::new("x", ns::VCARD_UPDATE).with_child(photo),
            ));
        }
        Verdict::Pass
    }
}
