//! Where a stanza to a MUC JID goes: to a room's bare JID (disco, room
//! iqs, groupchat messages, invitations) or to `room@service/nick` (joins,
//! private messages, iqs passed between occupants and their answers).
//!
//! Occupants may be remote (their real JIDs on other servers, reached over
//! s2s from the service domain): an error their server returns for a
//! room's message or presence removes them (status 333).
//!
//! XEP-0410 self-pings (a ping to one's own nick) are answered by the
//! room: a result when the sender is joined under that nick,
//! `not-acceptable` when it is not in the room.
//!
//! Invariants: only occupants reach other occupants; an iq passed on gets a
//! room-made id and is remembered until answered (at most `PENDING_IQS`),
//! so an answer reaches the requester with its own id and the occupant's
//! real JID is never shown where the room is semi-anonymous.

use super::*;

/// XEP-0410: the room answers a self-ping itself.
const NS_SELF_PING: &str = "http://jabber.org/protocol/muc#self-ping-optimization";

impl Muc {
    /// Stanzas to a room's bare JID.
    pub(super) fn to_room(
        &self,
        c: &Ctx<'_>,
        svc: &mut Service,
        node: &str,
        stanza: &Element,
        from: &Jid,
        out: &mut Out,
    ) {
        let kind = stanza.attr("type").unwrap_or("");
        match stanza.name.as_str() {
            // A room nickname is required (XEP-0045 §7.2.1).
            "presence" if kind.is_empty() => {
                out.extend(error_to(
                    stanza,
                    StanzaError::new(ErrorType::Modify, Condition::JidMalformed),
                ));
            }
            "message" => {
                if kind == "error" {
                    self.error_from_occupant(c, svc, node, stanza, from, out);
                    return;
                }
                let Some(room) = svc.rooms.get_mut(node) else {
                    out.extend(error_to(stanza, StanzaError::item_not_found()));
                    return;
                };
                let Ok(from) = from.clone().try_into_full() else {
                    out.extend(error_to(stanza, StanzaError::not_acceptable()));
                    return;
                };
                if kind == "groupchat" {
                    self.groupchat(c, node, room, stanza, &from, out);
                } else if let Some(form) = voice::request_form(stanza) {
                    self.voice_form(c, node, room, form, stanza, &from, out);
                } else if let Some(x) = stanza.child("x", NS_MUC_USER) {
                    self.invite_or_decline(c, node, room, x, stanza, &from, out);
                } else {
                    out.extend(error_to(stanza, StanzaError::not_acceptable()));
                }
            }
            "iq" => {
                if kind != "get" && kind != "set" {
                    return;
                }
                let Ok(from) = from.clone().try_into_full() else {
                    out.extend(error_to(stanza, StanzaError::bad_request()));
                    return;
                };
                let Some(payload) = stanza.first_child() else {
                    out.extend(error_to(stanza, StanzaError::bad_request()));
                    return;
                };
                if !svc.rooms.contains_key(node) {
                    out.extend(error_to(stanza, StanzaError::item_not_found()));
                    return;
                }
                // This answers after what it sends (the notices).
                if payload.is("moderate", moderation::NS_MODERATE)
                    || payload.is("apply-to", moderation::NS_FASTEN)
                {
                    self.moderate_iq(c, node, &svc.rooms[node], stanza, payload, &from, out);
                    return;
                }
                let reply = match (payload.ns.as_str(), payload.name.as_str()) {
                    (ns::DISCO_INFO, "query") if kind == "get" => {
                        let room = &svc.rooms[node];
                        match payload.attr("node") {
                            None => Ok(Some(self.room_info(node, room))),
                            Some(register::NODE_ROOMUSER) => {
                                Ok(Some(self.roomuser_item(room, &from)))
                            }
                            Some(_) => Err(StanzaError::item_not_found()),
                        }
                    }
                    (ns::VCARD, "vCard") => {
                        let room = svc.rooms.get_mut(node).expect("checked above");
                        self.vcard_iq(c, node, room, payload, kind == "set", &from, out)
                    }
                    (register::NS_REGISTER, "query") => {
                        let room = svc.rooms.get_mut(node).expect("checked above");
                        self.register_iq(c, node, room, payload, kind == "set", &from, out)
                    }
                    (ns::DISCO_ITEMS, "query") if kind == "get" => {
                        // Occupants are not listed (their nicks are for occupants).
                        Ok(Some(Element::new("query", ns::DISCO_ITEMS)))
                    }
                    (NS_MUC_OWNER, "query") => {
                        self.owner_iq(c, svc, node, payload, kind == "set", &from, out)
                    }
                    (NS_MUC_ADMIN, "query") => {
                        let room = svc.rooms.get_mut(node).expect("checked above");
                        self.admin_iq(c, node, room, payload, kind == "set", &from, out)
                    }
                    _ => Err(StanzaError::service_unavailable()),
                };
                // The answer comes before what it caused (XEP-0045 examples),
                // except for the destroy/kick notices already queued.
                let reply = match reply {
                    Ok(p) => iq_result(stanza, p),
                    Err(e) => iq_error(stanza, &e),
                };
                out.insert(0, reply);
            }
            _ => {}
        }
    }

    pub(super) fn room_info(&self, node: &str, room: &Room) -> Element {
        let c = &room.config;
        let name = if c.title.is_empty() {
            node.to_string()
        } else {
            c.title.clone()
        };
        let ids = vec![Identity {
            category: "conference".into(),
            kind: "text".into(),
            name: Some(name),
        }];
        let pick = |b: bool, yes: &str, no: &str| if b { yes } else { no }.to_string();
        let features = vec![
            NS_MUC.to_string(),
            ns::DISCO_INFO.to_string(),
            pick(c.public, "muc_public", "muc_hidden"),
            pick(c.persistent, "muc_persistent", "muc_temporary"),
            pick(c.members_only, "muc_membersonly", "muc_open"),
            pick(c.anonymous, "muc_semianonymous", "muc_nonanonymous"),
            pick(
                c.password_protected,
                "muc_passwordprotected",
                "muc_unsecured",
            ),
            pick(c.moderated, "muc_moderated", "muc_unmoderated"),
            occupant_id::NS_OCCUPANT_ID.to_string(),
            NS_SELF_PING.to_string(),
            voice::NS_REQUEST.to_string(),
            register::NS_REGISTER.to_string(),
            ns::VCARD.to_string(),
        ];
        let mut features = features;
        features.extend(archive::features(self.mam_enabled && c.mam));
        features.extend(moderation::features());
        let mut q = crate::disco::info(ids, features);
        let form = Element::new("x", ns::DATA_FORMS)
            .with_attr("type", "result")
            .with_child(field("FORM_TYPE", "hidden", "", &[NS_ROOMINFO]))
            .with_child(field(
                "muc#roominfo_description",
                "text-single",
                "Description",
                &[&c.description],
            ))
            .with_child(field(
                "muc#roominfo_occupants",
                "text-single",
                "Number of occupants",
                &[&room.occupants.len().to_string()],
            ))
            .with_child(field(
                "muc#roomconfig_roomname",
                "text-single",
                "Name",
                &[&c.title],
            ))
            // XEP-0486: the avatar's hash (no value without one).
            .with_child(field(
                "muc#roominfo_avatarhash",
                "text-multi",
                "Avatar hash",
                &Some(room.avatar_hash.as_str())
                    .filter(|h| !h.is_empty())
                    .into_iter()
                    .collect::<Vec<_>>(),
            ));
        q = q.with_child(form);
        q
    }

    /// Stanzas to `room@service/nick`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn to_occupant(
        &self,
        c: &Ctx<'_>,
        svc: &mut Service,
        node: &str,
        nick: &str,
        stanza: &Element,
        from: &Jid,
        out: &mut Out,
    ) {
        let kind = stanza.attr("type").unwrap_or("");
        if ping::is_ping_answer(stanza) && (kind == "result" || kind == "error") {
            // The answer to the room's own check on a remote occupant.
            self.ping_answer(c, svc, stanza, from, out);
            return;
        }
        if stanza.name == "iq" && (kind == "result" || kind == "error") {
            // An answer to an iq the room passed on (it may come from a bare JID).
            self.occupant_iq_answer(c, svc, node, stanza, from, out);
            return;
        }
        if kind == "error" {
            // A message or presence of the room bounced by the occupant's
            // server (or session).
            self.error_from_occupant(c, svc, node, stanza, from, out);
            return;
        }
        let Ok(from) = from.clone().try_into_full() else {
            out.extend(error_to(stanza, StanzaError::bad_request()));
            return;
        };
        match stanza.name.as_str() {
            "presence" => match kind {
                "" => self.presence_available(c, svc, node, nick, stanza, &from, out),
                "unavailable" => {
                    let mut empty = false;
                    if let Some(room) = svc.rooms.get_mut(node) {
                        if let Some(idx) = room.by_jid(&from) {
                            let text = stanza.child("status", ns::CLIENT).map(|s| s.text());
                            c.remove_occupant(node, room, idx, &[], None, text.as_deref(), out);
                            empty = room.occupants.is_empty() && !room.config.persistent;
                        }
                    }
                    if empty {
                        c.drop_room(svc, node);
                    }
                }
                _ => {}
            },
            "message" => {
                if kind == "error" {
                    return;
                }
                let Some(room) = svc.rooms.get(node) else {
                    out.extend(error_to(stanza, StanzaError::item_not_found()));
                    return;
                };
                let Some(me) = room.by_jid(&from).map(|i| &room.occupants[i]) else {
                    out.extend(error_to(
                        stanza,
                        StanzaError::not_acceptable()
                            .with_text("Only occupants may send private messages"),
                    ));
                    return;
                };
                if kind == "groupchat" {
                    out.extend(error_to(stanza, StanzaError::bad_request()));
                    return;
                }
                if !room.config.allow_private_messages && me.role != Role::Moderator {
                    out.extend(error_to(stanza, StanzaError::forbidden()));
                    return;
                }
                if room.by_nick(nick).is_none() {
                    out.extend(error_to(stanza, StanzaError::item_not_found()));
                    return;
                }
                let mut m = stanza.clone();
                m.set_attr("from", format!("{}/{}", c.room_jid(node), me.nick));
                occupant_id::stamp_on(&mut m, &room.secret, &from.to_bare());
                if m.child("x", NS_MUC_USER).is_none() {
                    m = m.with_child(Element::new("x", NS_MUC_USER));
                }
                // Every session behind the nick gets it.
                for target in room.occupants.iter().filter(|o| o.nick == nick) {
                    let mut copy = m.clone();
                    copy.set_attr("to", target.jid.to_string());
                    out.push(copy);
                }
            }
            "iq" => self.occupant_iq(c, svc, node, nick, stanza, &from, out),
            _ => {}
        }
    }

    /// An error returned from an occupant's real JID for a message or
    /// presence of the room: its session or its server is gone (a remote
    /// server bounces what it cannot deliver; s2s bounces when the remote
    /// server cannot be reached). The occupant is removed and everyone is
    /// told with status 333 (XEP-0045 §7.2, as ejabberd expels it), unless
    /// the error is of type `wait` (a retry may succeed). Errors from
    /// anyone else are dropped: an error never gets an answer.
    pub(super) fn error_from_occupant(
        &self,
        c: &Ctx<'_>,
        svc: &mut Service,
        node: &str,
        stanza: &Element,
        from: &Jid,
        out: &mut Out,
    ) {
        let wait = stanza
            .child("error", ns::CLIENT)
            .is_some_and(|e| e.attr("type") == Some("wait"));
        let (Ok(from), false) = (from.clone().try_into_full(), wait) else {
            return;
        };
        let Some(room) = svc.rooms.get_mut(node) else {
            return;
        };
        let Some(idx) = room.by_jid(&from) else {
            return;
        };
        c.remove_occupant(node, room, idx, &[333], None, None, out);
        if room.occupants.is_empty() && !room.config.persistent {
            svc.rooms.remove(node);
        }
    }

    /// An iq to an occupant is passed on to its real JID (vCards to the
    /// bare JID), under an id of the room's; the answer comes back the same way.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn occupant_iq(
        &self,
        c: &Ctx<'_>,
        svc: &mut Service,
        node: &str,
        nick: &str,
        stanza: &Element,
        from: &FullJid,
        out: &mut Out,
    ) {
        let ping = stanza.attr("type") == Some("get")
            && stanza.first_child().is_some_and(|p| p.is("ping", ns::PING));
        let Some(room) = svc.rooms.get(node) else {
            out.extend(error_to(
                stanza,
                if ping {
                    StanzaError::not_acceptable().with_text("You are not in this room")
                } else {
                    StanzaError::item_not_found()
                },
            ));
            return;
        };
        let Some(me) = room.by_jid(from).map(|i| room.occupants[i].nick.clone()) else {
            out.extend(error_to(
                stanza,
                StanzaError::not_acceptable().with_text("You are not in this room"),
            ));
            return;
        };
        // XEP-0410 self-ping: the room answers for the joined client.
        if ping && me == nick {
            out.push(iq_result(stanza, None));
            return;
        }
        let Some(target) = room.by_nick(nick).map(|i| room.occupants[i].jid.clone()) else {
            out.extend(error_to(stanza, StanzaError::item_not_found()));
            return;
        };
        let is_vcard = stanza.first_child().is_some_and(|p| p.ns == ns::VCARD);
        let addressee = if is_vcard {
            target.to_bare().to_string()
        } else {
            target.to_string()
        };
        svc.next_id += 1;
        let id = format!("muc{}", svc.next_id);
        svc.pending.insert(
            id.clone(),
            Pending {
                id: stanza.attr("id").unwrap_or("").to_string(),
                requester: from.to_string(),
                addressee: addressee.clone(),
                nick: nick.to_string(),
            },
        );
        svc.pending_order.push_back(id.clone());
        while svc.pending_order.len() > PENDING_IQS {
            if let Some(old) = svc.pending_order.pop_front() {
                svc.pending.remove(&old);
            }
        }
        let mut fwd = stanza.clone();
        fwd.set_attr("id", id);
        fwd.set_attr("from", format!("{}/{}", c.room_jid(node), me));
        fwd.set_attr("to", addressee);
        out.push(fwd);
    }

    /// The answer to an iq passed on by [`Muc::occupant_iq`]: only from the
    /// addressee, back to the requester from the addressee's room JID.
    pub(super) fn occupant_iq_answer(
        &self,
        c: &Ctx<'_>,
        svc: &mut Service,
        node: &str,
        stanza: &Element,
        from: &Jid,
        out: &mut Out,
    ) {
        let Some(id) = stanza.attr("id") else { return };
        let Some(p) = svc.pending.get(id) else { return };
        if p.addressee != from.as_str() {
            return;
        }
        let Some(p) = svc.pending.remove(id) else {
            return;
        };
        let mut r = stanza.clone();
        r.set_attr("id", p.id);
        r.set_attr("from", format!("{}/{}", c.room_jid(node), p.nick));
        r.set_attr("to", p.requester);
        out.push(r);
    }
}
