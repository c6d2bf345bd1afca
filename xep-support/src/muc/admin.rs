//! muc#admin (XEP-0045 §8, §9): roles (kick, voice, moderator) and
//! affiliations (ban, member, admin, owner), and their lists.
//!
//! Invariants: each change is checked against the requester's affiliation
//! and role as §8 and §9 allow before it is made; a room keeps at least
//! one owner; a banned or kicked occupant is removed with the status code
//! saying why; a persistent room is saved after affiliations change.

use super::*;

impl Muc {
    /// muc#admin: roles (kick, voice, moderator) and affiliations (ban,
    /// member, admin, owner), and their lists.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn admin_iq(
        &self,
        c: &Ctx<'_>,
        node: &str,
        room: &mut Room,
        payload: &Element,
        is_set: bool,
        from: &FullJid,
        out: &mut Out,
    ) -> Result<Option<Element>, StanzaError> {
        let actor_bare = from.to_bare().to_string();
        let service_admin = Muc::allows(c.ctx, &self.access_admin, &Jid::from(from.clone()));
        let actor_aff = if service_admin {
            Affiliation::Owner
        } else {
            room.affiliation(&actor_bare)
        };
        let actor_role = if service_admin {
            Role::Moderator
        } else {
            room.by_jid(from)
                .map(|i| room.occupants[i].role)
                .unwrap_or(Role::None)
        };
        let items: Vec<&Element> = payload
            .child_elements()
            .filter(|i| i.is("item", NS_MUC_ADMIN))
            .collect();
        if items.is_empty() {
            return Err(StanzaError::bad_request());
        }
        if !is_set {
            let item = items[0];
            let mut q = Element::new("query", NS_MUC_ADMIN);
            if let Some(a) = item.attr("affiliation").and_then(Affiliation::parse) {
                if actor_aff < Affiliation::Admin {
                    return Err(StanzaError::forbidden());
                }
                for (jid, aff) in &room.affiliations {
                    if *aff == a {
                        q = q.with_child(
                            Element::new("item", NS_MUC_ADMIN)
                                .with_attr("affiliation", a.as_str())
                                .with_attr("jid", jid.clone()),
                        );
                    }
                }
            } else if let Some(r) = item.attr("role").and_then(Role::parse) {
                if actor_role != Role::Moderator {
                    return Err(StanzaError::forbidden());
                }
                for o in room.occupants.iter().filter(|o| o.role == r) {
                    q = q.with_child(
                        Element::new("item", NS_MUC_ADMIN)
                            .with_attr("nick", o.nick.clone())
                            .with_attr("role", r.as_str())
                            .with_attr(
                                "affiliation",
                                room.affiliation(o.jid.to_bare().as_str()).as_str(),
                            )
                            .with_attr("jid", o.jid.to_string()),
                    );
                }
            } else {
                return Err(StanzaError::bad_request());
            }
            return Ok(Some(q));
        }
        let mut changed_affs = false;
        for item in items {
            let reason = item.child("reason", NS_MUC_ADMIN).map(|r| r.text());
            if let Some(role) = item.attr("role") {
                let role = Role::parse(role).ok_or_else(StanzaError::bad_request)?;
                let nick = item.attr("nick").ok_or_else(StanzaError::bad_request)?;
                if actor_role != Role::Moderator {
                    return Err(StanzaError::forbidden());
                }
                let idx = room.by_nick(nick).ok_or_else(StanzaError::item_not_found)?;
                let target_aff = room.affiliation(room.occupants[idx].jid.to_bare().as_str());
                // Nobody changes the role of an admin or owner, except a
                // higher affiliation (§8.2: a moderator may not kick an admin).
                if target_aff >= Affiliation::Admin && actor_aff <= target_aff {
                    return Err(StanzaError::not_allowed());
                }
                if role == Role::Moderator && actor_aff < Affiliation::Admin {
                    return Err(StanzaError::not_allowed());
                }
                if role == Role::None {
                    // Every session behind the nick.
                    while let Some(idx) = room.by_nick(nick) {
                        c.remove_occupant(node, room, idx, &[307], reason.as_deref(), None, out);
                    }
                } else {
                    room.occupants[idx].role = role;
                    c.broadcast_presence(node, room, idx, out);
                }
            } else if let Some(aff) = item.attr("affiliation") {
                let aff = Affiliation::parse(aff).ok_or_else(StanzaError::bad_request)?;
                let jid = item
                    .attr("jid")
                    .and_then(|j| Jid::new(j).ok())
                    .map(|j| j.to_bare().to_string())
                    .or_else(|| {
                        item.attr("nick")
                            .and_then(|n| room.by_nick(n))
                            .map(|i| room.occupants[i].jid.to_bare().to_string())
                    })
                    .ok_or_else(StanzaError::bad_request)?;
                let current = room.affiliation(&jid);
                if actor_aff < Affiliation::Admin {
                    return Err(StanzaError::forbidden());
                }
                // Owners and admins are changed, or made, by owners only.
                if (current >= Affiliation::Admin || aff >= Affiliation::Admin)
                    && actor_aff != Affiliation::Owner
                {
                    return Err(StanzaError::not_allowed());
                }
                if current == Affiliation::Owner
                    && aff != Affiliation::Owner
                    && room
                        .affiliations
                        .values()
                        .filter(|a| **a == Affiliation::Owner)
                        .count()
                        <= 1
                {
                    return Err(StanzaError::conflict().with_text("A room keeps one owner"));
                }
                if aff <= Affiliation::None {
                    // No affiliation, no registered nick (§7.10).
                    room.nicks.remove(&jid);
                }
                if aff == Affiliation::None {
                    room.affiliations.remove(&jid);
                } else {
                    room.affiliations.insert(jid.clone(), aff);
                }
                changed_affs = true;
                // Occupants with that bare JID: banned, shut out, or their role follows.
                while let Some(idx) = room.occupants.iter().position(|o| {
                    o.jid.to_bare().as_str() == jid && {
                        let new_role = room.default_role(aff);
                        aff == Affiliation::Outcast
                            || (room.config.members_only && aff < Affiliation::Member)
                            || o.role != new_role
                    }
                }) {
                    if aff == Affiliation::Outcast {
                        c.remove_occupant(node, room, idx, &[301], reason.as_deref(), None, out);
                    } else if room.config.members_only && aff < Affiliation::Member {
                        c.remove_occupant(node, room, idx, &[321], reason.as_deref(), None, out);
                    } else {
                        room.occupants[idx].role = room.default_role(aff);
                        c.broadcast_presence(node, room, idx, out);
                    }
                }
            } else {
                return Err(StanzaError::bad_request());
            }
        }
        if changed_affs && room.config.persistent {
            c.save(node, room);
        }
        Ok(None)
    }
}
