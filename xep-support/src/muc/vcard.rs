//! Room vCards and avatars: XEP-0054 `vcard-temp` on the room JID, and
//! the avatar's hash as XEP-0486 (MUC Avatars) advertises it.
//!
//! Anyone may get a room's vCard (also before joining, to show the room's
//! avatar in a room list); owners (and service admins) set it, others get
//! `forbidden`. A vCard larger than [`MAX_ROOM_VCARD`] bytes is refused
//! with `not-acceptable`, a PHOTO whose BINVAL is not base64 with
//! `bad-request`; an empty `<vCard/>` removes it. The avatar hash (hex
//! SHA-1 of the decoded PHOTO, as XEP-0153 computes it) is in the room's
//! disco#info form (`muc#roominfo_avatarhash`) and in a presence from the
//! room's bare JID with `vcard-temp:x:update` that joiners get after their
//! own presence and every occupant gets when the avatar changes (with a
//! status 104 notice, so clients read the room's disco#info again).
//!
//! Invariants: the vCard is stored with a persistent room and read back
//! with it; `avatar_hash` is always the hash of the stored vCard's photo
//! (empty without one).

use super::*;

/// The largest room vCard accepted, in bytes of XML.
pub(super) const MAX_ROOM_VCARD: usize = 32 * 1024;
/// XEP-0153's presence payload.
const NS_VCARD_UPDATE: &str = "vcard-temp:x:update";

impl Muc {
    /// A `vcard-temp` get or set to the room.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn vcard_iq(
        &self,
        c: &Ctx<'_>,
        node: &str,
        room: &mut Room,
        payload: &Element,
        set: bool,
        from: &FullJid,
        out: &mut Out,
    ) -> Result<Option<Element>, StanzaError> {
        if !set {
            return Ok(Some(
                room.vcard
                    .clone()
                    .unwrap_or_else(|| Element::new("vCard", ns::VCARD)),
            ));
        }
        let owner = room.affiliation(from.to_bare().as_str()) == Affiliation::Owner
            || Muc::allows(c.ctx, &self.access_admin, &Jid::from(from.clone()));
        if !owner {
            return Err(StanzaError::forbidden().with_text("Only owners set the room's vCard"));
        }
        let size = payload.to_xml(ns::CLIENT).len();
        if size > MAX_ROOM_VCARD {
            return Err(StanzaError::not_acceptable().with_text(format!(
                "The vCard has {size} bytes; a room's vCard may have {MAX_ROOM_VCARD}"
            )));
        }
        let has_photo = payload
            .child("PHOTO", ns::VCARD)
            .and_then(|p| p.child("BINVAL", ns::VCARD))
            .is_some();
        let hash = crate::vcard::photo_hash(payload);
        if has_photo && hash.is_empty() {
            return Err(StanzaError::bad_request().with_text("PHOTO/BINVAL is not base64"));
        }
        room.vcard = (payload.child_elements().next().is_some()).then(|| {
            let mut v = Element::new("vCard", ns::VCARD);
            for child in payload.child_elements() {
                v = v.with_child(child.clone());
            }
            v
        });
        let changed = room.avatar_hash != hash;
        room.avatar_hash = hash;
        if room.config.persistent {
            c.save(node, room);
        }
        if changed {
            for o in &room.occupants {
                out.push(avatar_presence(c, node, room, &o.jid));
            }
            c.room_notice(node, room, &[104], out);
        }
        Ok(None)
    }
}

/// The room's XEP-0153 presence to `to`: its avatar hash (empty `<photo/>`
/// without one).
pub(super) fn avatar_presence(c: &Ctx<'_>, node: &str, room: &Room, to: &FullJid) -> Element {
    let mut photo = Element::new("photo", NS_VCARD_UPDATE);
    if !room.avatar_hash.is_empty() {
        photo = photo.with_text(room.avatar_hash.clone());
    }
    Element::new("presence", ns::CLIENT)
        .with_attr("from", c.room_jid(node))
        .with_attr("to", to.to_string())
        .with_child(Element::new("x", NS_VCARD_UPDATE).with_child(photo))
}
