//! Entering a room and changing presence in it (XEP-0045 §7.2): the
//! checks before a join (password, members-only, bans, nick conflicts
//! with occupants and with nicks other accounts registered,
//! `max_users` with `max_users_admin_threshold`, `max_user_conferences`,
//! and `max_rooms_per_user` for a join that creates a room), nick changes, and the join
//! sequence a new occupant receives.
//!
//! Invariants: the join sequence is in the order §7.2 requires: the other
//! occupants' presence, the joiner's presence to the others, its own
//! presence back to it (with its status codes), the room's avatar
//! presence when it has an avatar, the history, then the
//! subject (always sent, empty if none). A refused join changes nothing: a
//! room created by it is removed again.

use super::*;

impl Muc {
    /// Available presence to `room/nick`: a join, a nick change or a presence update.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn presence_available(
        &self,
        c: &Ctx<'_>,
        svc: &mut Service,
        node: &str,
        nick: &str,
        stanza: &Element,
        from: &FullJid,
        out: &mut Out,
    ) {
        let muc_x = stanza.child("x", NS_MUC);
        let bare = from.to_bare().to_string();
        let err = |e: StanzaError| error_to(stanza, e);
        // An occupant already: update, nick change or rejoin.
        if let Some(room) = svc.rooms.get_mut(node) {
            if let Some(idx) = room.by_jid(from) {
                if room.occupants[idx].nick == nick {
                    room.occupants[idx].presence = stored_presence(stanza);
                    if muc_x.is_some() {
                        // A rejoin (the client lost track): the whole join sequence again.
                        self.join_sequence(c, node, room, idx, muc_x, false, out);
                    } else {
                        c.broadcast_presence(node, room, idx, out);
                    }
                    return;
                }
                // Nick change (§7.6), not to another account's registered nick.
                if room.by_nick(nick).is_some() || room.nick_owner(nick).is_some_and(|o| o != bare)
                {
                    out.extend(err(StanzaError::conflict()));
                    return;
                }
                let old = room.occupants[idx].clone();
                for viewer in &room.occupants {
                    let mut p = c.unavailable_of(node, room, &old, viewer, &[303], None, None);
                    if let Some(it) = p
                        .child_mut("x", NS_MUC_USER)
                        .and_then(|x| x.child_mut("item", NS_MUC_USER))
                    {
                        it.set_attr("nick", nick);
                    }
                    out.push(p);
                }
                room.occupants[idx].nick = nick.to_string();
                room.occupants[idx].presence = stored_presence(stanza);
                c.broadcast_presence(node, room, idx, out);
                return;
            }
        }
        // A join (§7.2), within the account's limit of rooms.
        let in_rooms = svc
            .rooms
            .values()
            .filter(|r| {
                r.occupants
                    .iter()
                    .any(|o| o.jid.to_bare() == from.to_bare())
            })
            .count();
        if in_rooms >= self.max_user_conferences {
            out.extend(err(StanzaError::resource_constraint()
                .with_text("You are in too many rooms (max_user_conferences)")));
            return;
        }
        let created = !svc.rooms.contains_key(node);
        if created {
            if !Muc::allows(c.ctx, &self.access_create, &Jid::from(from.clone())) {
                out.extend(err(
                    StanzaError::not_allowed().with_text("Room creation is not allowed here")
                ));
                return;
            }
            // Rooms the account owns already (service admins: no limit).
            if let Some(max) = self.max_rooms_per_user {
                let owned = svc
                    .rooms
                    .values()
                    .filter(|r| r.affiliation(&bare) == Affiliation::Owner)
                    .count();
                if owned >= max && !Muc::allows(c.ctx, &self.access_admin, &Jid::from(from.clone()))
                {
                    out.extend(err(StanzaError::not_allowed().with_text(format!(
                        "You own {owned} rooms, the most allowed here (max_rooms_per_user)"
                    ))));
                    return;
                }
            }
            let mut room = Room::new(self.defaults.clone());
            room.affiliations.insert(bare.clone(), Affiliation::Owner);
            svc.rooms.insert(node.to_string(), room);
        }
        let room = svc.rooms.get_mut(node).expect("exists");
        let aff = room.affiliation(&bare);
        let service_admin = Muc::allows(c.ctx, &self.access_admin, &Jid::from(from.clone()));
        let refuse = if nick.is_empty() {
            Some(StanzaError::new(ErrorType::Modify, Condition::JidMalformed))
        } else if aff == Affiliation::Outcast && !service_admin {
            Some(StanzaError::forbidden())
        } else if room.config.members_only && aff < Affiliation::Member && !service_admin {
            Some(StanzaError::new(
                ErrorType::Auth,
                Condition::RegistrationRequired,
            ))
        } else if room
            .by_nick(nick)
            .is_some_and(|i| room.occupants[i].jid.to_bare() != from.to_bare())
        {
            // The same account may join under its nick from several
            // clients (multi-session nicks, as ejabberd allows).
            Some(StanzaError::conflict())
        } else if room.nick_owner(nick).is_some_and(|o| o != bare) {
            // Registered by another account (§7.10).
            Some(StanzaError::conflict().with_text("That nick is registered by someone else"))
        } else if room.occupants.len()
            >= room.config.max_users.min(self.max_users).saturating_add(
                // Admins and owners pass a full room, up to a threshold.
                if aff >= Affiliation::Admin || service_admin {
                    self.max_users_admin_threshold
                } else {
                    0
                },
            )
        {
            Some(StanzaError::new(
                ErrorType::Wait,
                Condition::ServiceUnavailable,
            ))
        } else if room.config.password_protected
            && aff < Affiliation::Owner
            && !service_admin
            && muc_x
                .and_then(|x| x.child("password", NS_MUC))
                .map(|p| p.text())
                .as_deref()
                != Some(room.config.password.as_str())
        {
            Some(StanzaError::not_authorized())
        } else {
            None
        };
        if let Some(e) = refuse {
            if created {
                svc.rooms.remove(node);
            }
            out.extend(err(e));
            return;
        }
        let role = if service_admin {
            Role::Moderator
        } else {
            room.default_role(aff)
        };
        room.occupants.push(Occupant {
            nick: nick.to_string(),
            jid: from.clone(),
            role,
            presence: stored_presence(stanza),
            last_message: None,
            last_heard: std::time::Instant::now(),
        });
        let idx = room.occupants.len() - 1;
        self.join_sequence(c, node, room, idx, muc_x, created, out);
    }

    /// What a joining occupant gets (§7.2.3–§7.2.15): the others' presence,
    /// its own (others get it too), the history, then the subject.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn join_sequence(
        &self,
        c: &Ctx<'_>,
        node: &str,
        room: &Room,
        idx: usize,
        muc_x: Option<&Element>,
        created: bool,
        out: &mut Out,
    ) {
        let me = &room.occupants[idx];
        // The account's other sessions under the same nick are not "others".
        for o in room.occupants.iter().filter(|o| o.nick != me.nick) {
            out.push(c.presence_of(node, room, o, me, &[]));
        }
        for viewer in room.occupants.iter().filter(|o| o.nick != me.nick) {
            out.push(c.presence_of(node, room, me, viewer, &[]));
        }
        let mut codes = Vec::new();
        if !room.config.anonymous {
            codes.push(100);
        }
        if created {
            codes.push(201);
        }
        out.push(c.presence_of(node, room, me, me, &codes));
        // The room's avatar (XEP-0153 style), when it has one.
        if !room.avatar_hash.is_empty() {
            out.push(vcard::avatar_presence(c, node, room, &me.jid));
        }
        // History (§7.2.15), limited by the request: from the archive when
        // the room keeps one, else from memory.
        let req = archive::HistoryRequest::read(muc_x);
        if room.occupants.len() == 1 {
            self.expire_archive(c, node, room);
        }
        if let Some(history) = self.archive_history(c, node, room, &req, &me.jid) {
            out.extend(history);
            out.push(c.subject_message(node, room, &me.jid));
            return;
        }
        let since = (req.since_micros > 0).then_some(req.since_micros / 1_000_000);
        let mut picked: Vec<&HistoryEntry> = Vec::new();
        let mut chars = 0usize;
        for e in room.history.iter().rev() {
            if picked.len() >= req.max_stanzas.min(self.history_size) {
                break;
            }
            if since.is_some_and(|s| e.secs < s) {
                break;
            }
            chars = chars.saturating_add(e.chars);
            if chars > req.max_chars {
                break;
            }
            picked.push(e);
        }
        for e in picked.into_iter().rev() {
            let mut m = e.msg.clone();
            m.set_attr("to", me.jid.to_string());
            m = m.with_child(
                Element::new("delay", ns::DELAY)
                    .with_attr("from", c.room_jid(node))
                    .with_attr("stamp", e.stamp.clone()),
            );
            out.push(m);
        }
        out.push(c.subject_message(node, room, &me.jid));
    }
}
