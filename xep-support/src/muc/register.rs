//! Nickname registration in a room (XEP-0045 §7.10, `jabber:iq:register`
//! on the room JID) and the registered nick lookup (§7.12, disco#info
//! with node `x-roomuser-item`).
//!
//! A get returns the `muc#register` form (or `<registered/>` with the
//! nick once registered); a set submits it with `muc#register_roomnick`;
//! a `<remove/>` gives the nick up. Registering in an open room makes an
//! unaffiliated account a member (§7.10); in a members-only room only
//! those on the member list (or above) may register, others get
//! `registration-required`, so registration never opens a members-only
//! room. Outcasts get `forbidden`; who may register at all is mod_muc's
//! `access_register` (ejabberd's; default `all`).
//!
//! Invariants: a nick is registered by at most one account per room (a
//! nick registered, or in use by another account's occupant, is
//! `conflict`), and another account joining or changing to it gets
//! `conflict` (`join.rs`); a nick is a valid resourcepart of the room JID;
//! an account losing its affiliation (none or outcast) loses its
//! registration (`admin.rs`); registrations are stored with the room.

use super::*;

/// `jabber:iq:register`.
pub(super) const NS_REGISTER: &str = "jabber:iq:register";
/// The registration form's FORM_TYPE.
const NS_MUC_REGISTER: &str = "http://jabber.org/protocol/muc#register";
/// The disco node that returns one's registered nick (§7.12).
pub(super) const NODE_ROOMUSER: &str = "x-roomuser-item";
/// The nick field.
const ROOMNICK: &str = "muc#register_roomnick";

fn form_value(form: &Element, var: &str) -> Option<String> {
    form.child_elements()
        .find(|f| f.name == "field" && f.attr("var") == Some(var))
        .and_then(|f| f.child("value", ns::DATA_FORMS).map(|v| v.text()))
}

impl Muc {
    /// A `jabber:iq:register` get or set to the room.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn register_iq(
        &self,
        c: &Ctx<'_>,
        node: &str,
        room: &mut Room,
        payload: &Element,
        set: bool,
        from: &FullJid,
        out: &mut Out,
    ) -> Result<Option<Element>, StanzaError> {
        let bare = from.to_bare().to_string();
        let aff = room.affiliation(&bare);
        if !Muc::allows(c.ctx, &self.access_register, &Jid::from(from.clone())) {
            return Err(StanzaError::forbidden().with_text("Nick registration is not allowed here"));
        }
        if aff == Affiliation::Outcast {
            return Err(StanzaError::forbidden());
        }
        if room.config.members_only && aff < Affiliation::Member {
            return Err(
                StanzaError::new(ErrorType::Auth, Condition::RegistrationRequired)
                    .with_text("Only members may register in a members-only room"),
            );
        }
        if !set {
            return Ok(Some(self.register_form(room.nicks.get(&bare))));
        }
        if payload.child("remove", NS_REGISTER).is_some() {
            if room.nicks.remove(&bare).is_some() && room.config.persistent {
                c.save(node, room);
            }
            return Ok(None);
        }
        let form = payload
            .child("x", ns::DATA_FORMS)
            .ok_or_else(|| StanzaError::bad_request().with_text("A muc#register form is needed"))?;
        if form.attr("type") == Some("cancel") {
            return Ok(None);
        }
        if form.attr("type") != Some("submit")
            || form_value(form, "FORM_TYPE").as_deref() != Some(NS_MUC_REGISTER)
        {
            return Err(StanzaError::bad_request().with_text("A muc#register form is needed"));
        }
        let nick = form_value(form, ROOMNICK).unwrap_or_default();
        // The nick must make a valid occupant JID.
        let nick = match FullJid::new(&format!("{}/{}", c.room_jid(node), nick.trim())) {
            Ok(j) if !nick.trim().is_empty() => j.resource().as_str().to_string(),
            _ => {
                return Err(StanzaError::not_acceptable()
                    .with_text("muc#register_roomnick must be a valid nick"))
            }
        };
        if room.nick_owner(&nick).is_some_and(|o| o != bare)
            || room
                .occupants
                .iter()
                .any(|o| o.nick == nick && o.jid.to_bare().as_str() != bare)
        {
            return Err(StanzaError::conflict().with_text("That nick is taken in this room"));
        }
        room.nicks.insert(bare.clone(), nick);
        if aff == Affiliation::None {
            // §7.10: the registrant is added to the member list.
            room.affiliations.insert(bare.clone(), Affiliation::Member);
            // Its occupants show the new affiliation (and voice, if they
            // were visitors).
            let role = room.default_role(Affiliation::Member);
            let idxs: Vec<usize> = (0..room.occupants.len())
                .filter(|&i| room.occupants[i].jid.to_bare().as_str() == bare)
                .collect();
            for idx in idxs {
                if room.occupants[idx].role < role {
                    room.occupants[idx].role = role;
                }
                c.broadcast_presence(node, room, idx, out);
            }
        }
        if room.config.persistent {
            c.save(node, room);
        }
        Ok(None)
    }

    /// The registration form (§7.10, Example 73), or `<registered/>` with
    /// the nick when the account has one.
    fn register_form(&self, nick: Option<&String>) -> Element {
        let mut q = Element::new("query", NS_REGISTER);
        if let Some(n) = nick {
            q = q
                .with_child(Element::new("registered", NS_REGISTER))
                .with_child(Element::new("username", NS_REGISTER).with_text(n.clone()));
        } else {
            q = q.with_child(
                Element::new("instructions", NS_REGISTER)
                    .with_text("Fill in the form to register a nickname in this room"),
            );
        }
        let mut nick_field = field(ROOMNICK, "text-single", "Desired Nickname", &[]);
        if let Some(n) = nick {
            nick_field =
                nick_field.with_child(Element::new("value", ns::DATA_FORMS).with_text(n.clone()));
        }
        nick_field = nick_field.with_child(Element::new("required", ns::DATA_FORMS));
        q.with_child(
            Element::new("x", ns::DATA_FORMS)
                .with_attr("type", "form")
                .with_child(
                    Element::new("title", ns::DATA_FORMS).with_text("Nickname Registration"),
                )
                .with_child(field("FORM_TYPE", "hidden", "", &[NS_MUC_REGISTER]))
                .with_child(nick_field),
        )
    }

    /// disco#info with node `x-roomuser-item` (§7.12): the asker's
    /// registered nick as the identity's name, or an empty answer.
    pub(super) fn roomuser_item(&self, room: &Room, from: &FullJid) -> Element {
        let mut q = Element::new("query", ns::DISCO_INFO).with_attr("node", NODE_ROOMUSER);
        if let Some(nick) = room.nicks.get(from.to_bare().as_str()) {
            q = q.with_child(
                Element::new("identity", ns::DISCO_INFO)
                    .with_attr("category", "conference")
                    .with_attr("type", "text")
                    .with_attr("name", nick.clone()),
            );
        }
        q
    }
}
