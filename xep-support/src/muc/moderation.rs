//! XEP-0424 message retraction by the sender and XEP-0425 moderated
//! retraction by moderators, in a room.
//!
//! - Retraction: a groupchat message with `<retract id='…'
//!   xmlns='urn:xmpp:message-retract:1'/>`, the id being the room's
//!   stanza-id of the message (or, for older clients, its origin-id). The
//!   archived message must be the sender's own (same real bare JID), else
//!   `forbidden`; it is replaced by a tombstone and the retraction goes to
//!   every occupant (and into the archive) like any groupchat message.
//! - Moderation: an iq set to the room with `<moderate id='stanza-id'
//!   xmlns='urn:xmpp:message-moderate:1'><retract
//!   xmlns='urn:xmpp:message-retract:1'/><reason/></moderate>` (0.3), or
//!   the 0.2 form `<apply-to id='…' xmlns='urn:xmpp:fasten:0'><moderate
//!   xmlns='urn:xmpp:message-moderate:0'><retract
//!   xmlns='urn:xmpp:message-retract:0'/></moderate></apply-to>`, from a
//!   moderator only (else `forbidden`); the archived message becomes a
//!   tombstone naming the moderator, and one message from the room tells
//!   every occupant, in both forms.
//!
//! Invariants: a tombstone keeps the message's place, sender (`from`),
//! stanza-id and occupant id, and nothing of its content; only the
//! sender or a moderator changes a message; an id the archive does not
//! hold is `item-not-found` for moderation.

use super::*;
use crate::archive::parse_id;
use crate::mam::NS_SID;

pub const NS_RETRACT: &str = "urn:xmpp:message-retract:1";
pub const NS_RETRACT_0: &str = "urn:xmpp:message-retract:0";
pub const NS_MODERATE: &str = "urn:xmpp:message-moderate:1";
pub const NS_MODERATE_0: &str = "urn:xmpp:message-moderate:0";
pub const NS_FASTEN: &str = "urn:xmpp:fasten:0";

/// The room disco#info features of this file.
pub(super) fn features() -> Vec<String> {
    vec![
        NS_RETRACT.to_string(),
        NS_MODERATE.to_string(),
        NS_MODERATE_0.to_string(),
    ]
}

/// The tombstone of `original`: its `from`, `id`, stanza-id and occupant
/// id, and `<retracted/>` (with `moderated` when a moderator did it).
fn tombstone(original: &Element, moderated: Option<&Element>, reason: Option<&str>) -> Element {
    let mut t = Element::new("message", ns::CLIENT).with_attr("type", "groupchat");
    for a in ["from", "id"] {
        if let Some(v) = original.attr(a) {
            t.set_attr(a, v);
        }
    }
    let mut retracted =
        Element::new("retracted", NS_RETRACT).with_attr("stamp", crate::date::now_utc());
    if let Some(m) = moderated {
        retracted = retracted.with_child(m.clone());
    }
    if let Some(r) = reason {
        retracted = retracted.with_child(Element::new("reason", NS_RETRACT).with_text(r));
    }
    t = t.with_child(retracted);
    for c in original.child_elements() {
        if c.is("stanza-id", NS_SID) || c.is("occupant-id", occupant_id::NS_OCCUPANT_ID) {
            t = t.with_child(c.clone());
        }
    }
    t
}

impl Muc {
    /// The archived message a retraction names: by the room's stanza-id,
    /// else by the sender's origin-id. `(id, message)`.
    fn find_target(
        &self,
        c: &Ctx<'_>,
        node: &str,
        room: &Room,
        id: &str,
        sender: Option<&BareJid>,
    ) -> Option<(u64, crate::archive::ArchivedMessage)> {
        let store = self.archive_of(c, room)?;
        let owner = BareJid::new(&c.room_jid(node)).ok()?;
        let by_sid = parse_id(id.trim()).and_then(|n| store.get(&owner, n).ok().flatten());
        if let Some(m) = by_sid {
            return Some((m.id, m));
        }
        let sender = sender?;
        let n = store.find_origin_id(&owner, sender, id).ok().flatten()?;
        store.get(&owner, n).ok().flatten().map(|m| (n, m))
    }

    /// Replace archive entry `id` by the tombstone of its message.
    #[allow(clippy::too_many_arguments)]
    fn bury(
        &self,
        c: &Ctx<'_>,
        node: &str,
        room: &Room,
        id: u64,
        xml: &str,
        moderated: Option<&Element>,
        reason: Option<&str>,
    ) {
        let (Some(store), Ok(owner)) = (self.archive_of(c, room), BareJid::new(&c.room_jid(node)))
        else {
            return;
        };
        let Some(original) = c.ctx.parse_stored_xml(xml, owner.as_str()) else {
            return;
        };
        let t = tombstone(&original, moderated, reason);
        if let Err(e) = store.replace(&owner, id, &t.to_xml(ns::CLIENT)) {
            tracing::error!("mod_muc: retracting message {id} of {owner}: {e}");
        }
    }

    /// A groupchat message carrying a XEP-0424 retraction: `Err` if the
    /// sender may not retract the message it names (then nothing is sent).
    pub(super) fn check_retraction(
        &self,
        c: &Ctx<'_>,
        node: &str,
        room: &Room,
        stanza: &Element,
        sender: &FullJid,
    ) -> Result<(), StanzaError> {
        let Some(r) = stanza.child("retract", NS_RETRACT) else {
            return Ok(());
        };
        let Some(id) = r.attr("id").filter(|i| !i.is_empty()) else {
            return Err(StanzaError::bad_request().with_text("retract: an id is required"));
        };
        let bare = sender.to_bare();
        let Some((n, m)) = self.find_target(c, node, room, id, Some(&bare)) else {
            // Not in the archive (kept before archiving, or none): the
            // occupants' clients check the occupant id themselves.
            return Ok(());
        };
        if m.peer != bare.as_str() {
            return Err(StanzaError::forbidden()
                .with_text("Only the sender may retract a message (moderators: XEP-0425)"));
        }
        self.bury(c, node, room, n, &m.xml, None, None);
        Ok(())
    }

    /// A XEP-0425 moderation iq (either version): the broadcast, then the answer.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn moderate_iq(
        &self,
        c: &Ctx<'_>,
        node: &str,
        room: &Room,
        stanza: &Element,
        payload: &Element,
        from: &FullJid,
        out: &mut Out,
    ) {
        let (id, moderate, v1) = if payload.is("moderate", NS_MODERATE) {
            (payload.attr("id"), payload, true)
        } else {
            match payload.child("moderate", NS_MODERATE_0) {
                Some(m) => (payload.attr("id"), m, false),
                None => {
                    out.extend(error_to(stanza, StanzaError::bad_request()));
                    return;
                }
            }
        };
        if stanza.attr("type") != Some("set") {
            out.extend(error_to(stanza, StanzaError::bad_request()));
            return;
        }
        let retract_ns = if v1 { NS_RETRACT } else { NS_RETRACT_0 };
        let Some(id) = id.filter(|i| !i.is_empty()) else {
            out.extend(error_to(
                stanza,
                StanzaError::bad_request().with_text("an id is required"),
            ));
            return;
        };
        if moderate.child("retract", retract_ns).is_none() {
            out.extend(error_to(
                stanza,
                StanzaError::feature_not_implemented().with_text("only retraction is supported"),
            ));
            return;
        }
        let service_admin = Muc::allows(c.ctx, &self.access_admin, &Jid::from(from.clone()));
        let me = room.by_jid(from).map(|i| &room.occupants[i]);
        if !service_admin && me.is_none_or(|o| o.role != Role::Moderator) {
            out.extend(error_to(
                stanza,
                StanzaError::forbidden().with_text("Only moderators may moderate messages"),
            ));
            return;
        }
        let Some((n, m)) = self.find_target(c, node, room, id, None) else {
            out.extend(error_to(stanza, StanzaError::item_not_found()));
            return;
        };
        let reason = moderate
            .child("reason", moderate.ns.as_str())
            .map(|r| r.text())
            .filter(|r| !r.is_empty());
        let by = match me {
            Some(o) => format!("{}/{}", c.room_jid(node), o.nick),
            None => c.room_jid(node),
        };
        let mut moderated = Element::new("moderated", NS_MODERATE).with_attr("by", by.clone());
        moderated = moderated.with_child(room.occupant_id(from));
        self.bury(
            c,
            node,
            room,
            n,
            &m.xml,
            Some(&moderated),
            reason.as_deref(),
        );
        let sid = crate::archive::format_id(n);
        // One notice in both forms (0.3 and 0.2 clients).
        let mut retract = Element::new("retract", NS_RETRACT)
            .with_attr("id", sid.clone())
            .with_child(moderated);
        let mut old = Element::new("moderated", NS_MODERATE_0)
            .with_attr("by", by)
            .with_child(Element::new("retract", NS_RETRACT_0));
        if let Some(r) = &reason {
            retract = retract.with_child(Element::new("reason", NS_RETRACT).with_text(r.clone()));
            old = old.with_child(Element::new("reason", NS_MODERATE_0).with_text(r.clone()));
        }
        let notice = Element::new("message", ns::CLIENT)
            .with_attr("type", "groupchat")
            .with_attr("from", c.room_jid(node))
            .with_attr("id", format!("moderation-{sid}"))
            .with_child(retract)
            .with_child(
                Element::new("apply-to", NS_FASTEN)
                    .with_attr("id", sid)
                    .with_child(old),
            );
        out.push(iq_result(stanza, None));
        for o in &room.occupants {
            let mut copy = notice.clone();
            copy.set_attr("to", o.jid.to_string());
            out.push(copy);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tombstone_keeps_the_place_and_drops_the_content() {
        let m = Element::new("message", ns::CLIENT)
            .with_attr("from", "r@s/al")
            .with_attr("id", "1")
            .with_child(Element::new("body", ns::CLIENT).with_text("secret"))
            .with_child(Element::new("stanza-id", NS_SID).with_attr("id", "7"))
            .with_child(
                Element::new("occupant-id", occupant_id::NS_OCCUPANT_ID).with_attr("id", "o"),
            );
        let t = tombstone(&m, None, Some("spam"));
        assert!(t.child("body", ns::CLIENT).is_none());
        assert_eq!(t.attr("from"), Some("r@s/al"));
        assert!(t.child("stanza-id", NS_SID).is_some());
        assert!(t
            .child("occupant-id", occupant_id::NS_OCCUPANT_ID)
            .is_some());
        let r = t.child("retracted", NS_RETRACT).unwrap();
        assert_eq!(r.child("reason", NS_RETRACT).unwrap().text(), "spam");
    }
}
