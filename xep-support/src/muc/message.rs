//! Messages to the room's bare JID: groupchat messages (kept in the
//! history and sent to every occupant) and mediated invitations and
//! declines (XEP-0045 §7.8.2, §7.8.3).
//!
//! Invariants: only occupants with voice send groupchat messages; every
//! occupant gets the message at its real full JID, from the sender's room
//! JID, with the sender's occupant id (XEP-0421) and, when the room keeps
//! an archive, the room's stanza-id (client-sent ones of both removed
//! first); mentioned members who are not connected are passed to the
//! server's mention hook (`mentions.rs`); without an archive the in-memory history is bounded by
//! `history_size`.

use super::*;

impl Muc {
    /// A groupchat message to the room.
    pub(super) fn groupchat(
        &self,
        c: &Ctx<'_>,
        node: &str,
        room: &mut Room,
        stanza: &Element,
        from: &FullJid,
        out: &mut Out,
    ) {
        let Some(me) = room.by_jid(from).map(|i| room.occupants[i].clone()) else {
            out.extend(error_to(
                stanza,
                StanzaError::not_acceptable().with_text("Only occupants may send messages"),
            ));
            return;
        };
        if me.role == Role::Visitor {
            out.extend(error_to(
                stanza,
                StanzaError::forbidden().with_text("Visitors may not speak in this room"),
            ));
            return;
        }
        // min_message_interval: a message too soon after the last is dropped.
        if let (Some(min), Some(i)) = (self.min_message_interval, room.by_jid(from)) {
            let now = std::time::Instant::now();
            if room.occupants[i]
                .last_message
                .is_some_and(|t| now.duration_since(t) < min)
            {
                out.extend(error_to(
                    stanza,
                    StanzaError::resource_constraint()
                        .with_text("Traffic rate limit is exceeded (min_message_interval)"),
                ));
                return;
            }
            room.occupants[i].last_message = Some(now);
        }
        let body = stanza.child("body", ns::CLIENT);
        let subject = stanza.child("subject", ns::CLIENT);
        if let (Some(subject), None) = (subject, body) {
            if !room.config.allow_change_subj && me.role != Role::Moderator {
                out.extend(error_to(
                    stanza,
                    StanzaError::forbidden().with_text("Only moderators may change the subject"),
                ));
                return;
            }
            room.subject = Some((subject.text(), me.nick.clone()));
            if room.config.persistent {
                c.save(node, room);
            }
        }
        // XEP-0424: only the sender retracts its message.
        if let Err(e) = self.check_retraction(c, node, room, stanza, from) {
            out.extend(error_to(stanza, e));
            return;
        }
        let mut m = stanza.clone();
        m.set_attr("from", format!("{}/{}", c.room_jid(node), me.nick));
        m.remove_attr("to");
        // Forged ids go first (all of them), then the room's own.
        archive::strip_stanza_ids(&mut m, &c.room_jid(node));
        occupant_id::stamp_on(&mut m, &room.secret, &from.to_bare());
        if self.archive_of(c, room).is_some() {
            self.archive_message(c, node, room, from, &mut m);
        } else if body.is_some() && self.history_size > 0 {
            let chars = m.to_xml(ns::CLIENT).len();
            room.history.push_back(HistoryEntry {
                msg: m.clone(),
                stamp: crate::date::now_utc(),
                secs: now_secs(),
                chars,
            });
            while room.history.len() > self.history_size {
                room.history.pop_front();
            }
        }
        // Mentioned members who are not connected: their phones wake.
        self.notify_mentions(c, node, room, &m, from);
        // One copy per occupant, `to` last (the message itself is the last
        // copy): the writers serialise the shared part once
        // (`src/c2s/shared_wire.rs`).
        out.reserve(room.occupants.len());
        if let Some((last, others)) = room.occupants.split_last() {
            for o in others {
                let mut copy = m.clone();
                copy.set_attr("to", o.jid.to_string());
                out.push(copy);
            }
            m.set_attr("to", last.jid.to_string());
            out.push(m);
        }
    }

    /// A mediated invitation (§7.8.2) or a decline (§7.8.3) sent through the room.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn invite_or_decline(
        &self,
        c: &Ctx<'_>,
        node: &str,
        room: &mut Room,
        x: &Element,
        stanza: &Element,
        from: &FullJid,
        out: &mut Out,
    ) {
        let bare = from.to_bare().to_string();
        if let Some(invite) = x.child("invite", NS_MUC_USER) {
            let Some(to) = invite.attr("to").and_then(|t| BareJid::new(t).ok()) else {
                out.extend(error_to(stanza, StanzaError::bad_request()));
                return;
            };
            let Some(me) = room.by_jid(from).map(|i| room.occupants[i].clone()) else {
                out.extend(error_to(stanza, StanzaError::not_acceptable()));
                return;
            };
            let aff = room.affiliation(&bare);
            if room.config.members_only
                && !room.config.allow_user_invites
                && aff < Affiliation::Admin
            {
                out.extend(error_to(stanza, StanzaError::forbidden()));
                return;
            }
            let _ = me;
            if room.config.members_only
                && room.affiliation(to.as_str()) < Affiliation::Member
                && room.affiliation(to.as_str()) != Affiliation::Outcast
            {
                room.affiliations
                    .insert(to.to_string(), Affiliation::Member);
                if room.config.persistent {
                    c.save(node, room);
                }
            }
            let mut inv = Element::new("invite", NS_MUC_USER).with_attr("from", bare);
            if let Some(r) = invite.child("reason", NS_MUC_USER) {
                inv = inv.with_child(r.clone());
            }
            let mut ux = Element::new("x", NS_MUC_USER).with_child(inv);
            if room.config.password_protected {
                ux = ux.with_child(
                    Element::new("password", NS_MUC_USER).with_text(room.config.password.clone()),
                );
            }
            let mut m = Element::new("message", ns::CLIENT)
                .with_attr("from", c.room_jid(node))
                .with_attr("to", to.to_string())
                .with_child(ux);
            if let Some(id) = stanza.attr("id") {
                m.set_attr("id", id);
            }
            out.push(m);
        } else if let Some(decline) = x.child("decline", NS_MUC_USER) {
            let Some(to) = decline.attr("to").and_then(|t| Jid::new(t).ok()) else {
                out.extend(error_to(stanza, StanzaError::bad_request()));
                return;
            };
            let mut d = Element::new("decline", NS_MUC_USER).with_attr("from", bare);
            if let Some(r) = decline.child("reason", NS_MUC_USER) {
                d = d.with_child(r.clone());
            }
            out.push(
                Element::new("message", ns::CLIENT)
                    .with_attr("from", c.room_jid(node))
                    .with_attr("to", to.to_string())
                    .with_child(Element::new("x", NS_MUC_USER).with_child(d)),
            );
        } else {
            out.extend(error_to(stanza, StanzaError::bad_request()));
        }
    }
}
