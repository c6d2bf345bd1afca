//! XEP-0045 voice requests (§7.13 and §8.6): a visitor asks for voice with
//! a `muc#request` form sent to the room; every moderator gets the approval
//! form (with the requester's JID and nick); a moderator who submits it
//! with `muc#request_allow` true makes the visitor a participant.
//!
//! Invariants: only visitors ask (others: `not-acceptable`); a room with
//! `allow_voice_requests` off refuses them (`forbidden`); one account asks
//! at most once per `voice_request_min_interval` seconds
//! (`resource-constraint`, wait; ejabberd's room options and defaults);
//! only moderators approve (`forbidden`); an approval for a nick that is
//! gone is `item-not-found`.

use super::*;

pub const NS_REQUEST: &str = "http://jabber.org/protocol/muc#request";
/// ejabberd's default `voice_request_min_interval`, seconds.
pub const DEFAULT_VOICE_INTERVAL: u64 = 1800;
/// Accounts whose last request a room remembers (the oldest are forgotten).
const REMEMBERED: usize = 1000;

/// Whether a message carries a `muc#request` form.
pub(super) fn request_form(stanza: &Element) -> Option<&Element> {
    stanza.child_elements().find(|x| {
        x.is("x", ns::DATA_FORMS) && form_value(x, "FORM_TYPE") == Some(NS_REQUEST.into())
    })
}

fn form_value(form: &Element, var: &str) -> Option<String> {
    form.child_elements()
        .find(|f| f.name == "field" && f.attr("var") == Some(var))
        .map(|f| {
            f.child("value", ns::DATA_FORMS)
                .map(|v| v.text())
                .unwrap_or_default()
        })
}

impl Muc {
    /// A `muc#request` form sent to the room: a request or an approval.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn voice_form(
        &self,
        c: &Ctx<'_>,
        node: &str,
        room: &mut Room,
        form: &Element,
        stanza: &Element,
        from: &FullJid,
        out: &mut Out,
    ) {
        let Some(me) = room.by_jid(from).map(|i| room.occupants[i].clone()) else {
            out.extend(error_to(
                stanza,
                StanzaError::not_acceptable().with_text("Only occupants may ask for voice"),
            ));
            return;
        };
        let approval = form_value(form, "muc#request_allow").is_some()
            || form_value(form, "muc#roomnick").is_some();
        if approval && me.role == Role::Moderator {
            self.voice_approval(c, node, room, form, stanza, out);
            return;
        }
        if approval && me.role != Role::Visitor {
            out.extend(error_to(
                stanza,
                StanzaError::forbidden().with_text("Only moderators grant voice"),
            ));
            return;
        }
        if me.role != Role::Visitor {
            out.extend(error_to(
                stanza,
                StanzaError::not_acceptable().with_text("You have voice already"),
            ));
            return;
        }
        if !room.config.allow_voice_requests {
            out.extend(error_to(
                stanza,
                StanzaError::forbidden().with_text("Voice requests are disabled in this room"),
            ));
            return;
        }
        let bare = from.to_bare().to_string();
        let now = now_secs();
        if let Some(last) = room.voice_requests.get(&bare) {
            if now.saturating_sub(*last) < room.config.voice_request_min_interval {
                out.extend(error_to(
                    stanza,
                    StanzaError::resource_constraint()
                        .with_text("Please wait before asking for voice again"),
                ));
                return;
            }
        }
        if room.voice_requests.len() >= REMEMBERED {
            room.voice_requests.clear();
        }
        room.voice_requests.insert(bare, now);
        let text = |var: &str, kind: &str, label: &str, v: &str| field(var, kind, label, &[v]);
        let approve = Element::new("x", ns::DATA_FORMS)
            .with_attr("type", "form")
            .with_child(Element::new("title", ns::DATA_FORMS).with_text("Voice request"))
            .with_child(Element::new("instructions", ns::DATA_FORMS).with_text(
                "To grant voice, check \"Grant voice to this person?\" and submit; to skip this request, cancel.",
            ))
            .with_child(field("FORM_TYPE", "hidden", "", &[NS_REQUEST]))
            .with_child(text("muc#role", "list-single", "Requested role", "participant"))
            .with_child(text("muc#jid", "jid-single", "User ID", from.as_str()))
            .with_child(text("muc#roomnick", "text-single", "Room Nickname", &me.nick))
            .with_child(text(
                "muc#request_allow",
                "boolean",
                "Grant voice to this person?",
                "false",
            ));
        for o in room.occupants.iter().filter(|o| o.role == Role::Moderator) {
            out.push(
                Element::new("message", ns::CLIENT)
                    .with_attr("from", c.room_jid(node))
                    .with_attr("to", o.jid.to_string())
                    .with_attr("id", format!("voice-{}-{now}", me.nick))
                    .with_child(approve.clone()),
            );
        }
    }

    /// A moderator's answer to a voice request (§8.6).
    fn voice_approval(
        &self,
        c: &Ctx<'_>,
        node: &str,
        room: &mut Room,
        form: &Element,
        stanza: &Element,
        out: &mut Out,
    ) {
        if form.attr("type") == Some("cancel")
            || !form_value(form, "muc#request_allow").is_some_and(|v| is_true(v.trim()))
        {
            return;
        }
        let nick = form_value(form, "muc#roomnick").unwrap_or_default();
        let idx = room.by_nick(&nick).or_else(|| {
            form_value(form, "muc#jid")
                .and_then(|j| FullJid::new(j.trim()).ok())
                .and_then(|j| room.by_jid(&j))
        });
        let Some(idx) = idx else {
            out.extend(error_to(
                stanza,
                StanzaError::item_not_found().with_text("That occupant is gone"),
            ));
            return;
        };
        if room.occupants[idx].role != Role::Visitor {
            return;
        }
        // Every session behind the nick gets voice.
        let nick = room.occupants[idx].nick.clone();
        for i in 0..room.occupants.len() {
            if room.occupants[i].nick == nick {
                room.occupants[i].role = Role::Participant;
                c.broadcast_presence(node, room, i, out);
            }
        }
    }
}
