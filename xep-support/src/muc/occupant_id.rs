//! XEP-0421 anonymous unique occupant identifiers (`urn:xmpp:occupant-id:0`):
//! an occupant's id is an HMAC-SHA-256 of its real bare JID under the
//! room's secret (32 random bytes made with the room, stored with it when
//! the room is persistent), base64 without padding.
//!
//! Invariants: the id is stable per room and real bare JID (every session
//! and nick of one account shares it, across restarts of a persistent
//! room) and reveals nothing about the JID without the secret; every
//! `<occupant-id/>` a client put in a stanza is removed before the room's
//! own is added (all of them, not the first only), so a client cannot
//! pose as another occupant.

use super::*;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;

pub const NS_OCCUPANT_ID: &str = "urn:xmpp:occupant-id:0";

/// A new room secret.
pub(super) fn new_secret() -> Vec<u8> {
    let mut s = vec![0u8; 32];
    rand::thread_rng().fill_bytes(&mut s);
    s
}

/// The secret as stored (base64).
pub(super) fn secret_text(secret: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(secret)
}

/// A stored secret read back (`None`: missing or damaged).
pub(super) fn secret_from_text(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .ok()
        .filter(|s| s.len() >= 16)
}

/// The occupant id of `bare` in the room with this secret.
pub(super) fn occupant_id(secret: &[u8], bare: &BareJid) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(bare.as_str().as_bytes());
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(mac.finalize().into_bytes())
}

/// The `<occupant-id/>` element of `bare`.
pub(super) fn element(secret: &[u8], bare: &BareJid) -> Element {
    Element::new("occupant-id", NS_OCCUPANT_ID).with_attr("id", occupant_id(secret, bare))
}

/// Remove every `<occupant-id/>` from a stanza (client-sent ones are forged).
pub(super) fn strip(stanza: &mut Element) {
    stanza.remove_children("occupant-id", NS_OCCUPANT_ID);
}

/// Strip the client's occupant ids and add the room's for `bare`.
pub(super) fn stamp_on(stanza: &mut Element, secret: &[u8], bare: &BareJid) {
    strip(stanza);
    stanza
        .children
        .push(crate::element::Node::Element(element(secret, bare)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_per_room_and_account_and_forgeries_go() {
        let (s1, s2) = (new_secret(), new_secret());
        let a = BareJid::new("a@x").unwrap();
        let b = BareJid::new("b@x").unwrap();
        assert_eq!(occupant_id(&s1, &a), occupant_id(&s1, &a));
        assert_ne!(occupant_id(&s1, &a), occupant_id(&s1, &b));
        assert_ne!(occupant_id(&s1, &a), occupant_id(&s2, &a));
        assert_eq!(
            secret_from_text(&secret_text(&s1)).as_deref(),
            Some(&s1[..])
        );
        assert_eq!(secret_from_text("short"), None);
        let mut m = Element::new("message", ns::CLIENT)
            .with_child(Element::new("occupant-id", NS_OCCUPANT_ID).with_attr("id", "forged1"))
            .with_child(Element::new("body", ns::CLIENT).with_text("hi"))
            .with_child(Element::new("occupant-id", NS_OCCUPANT_ID).with_attr("id", "forged2"));
        stamp_on(&mut m, &s1, &a);
        let ids: Vec<&str> = m
            .child_elements()
            .filter(|c| c.is("occupant-id", NS_OCCUPANT_ID))
            .filter_map(|c| c.attr("id"))
            .collect();
        assert_eq!(ids, [occupant_id(&s1, &a).as_str()]);
    }
}
