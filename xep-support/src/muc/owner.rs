//! muc#owner (XEP-0045 §10): the room configuration form, its submission
//! and destroying the room.
//!
//! Invariants: only owners reach these; a submitted form changes the room
//! only if every field is valid (it is read into a copy first); a room
//! that is or was persistent is saved after a change (`save` drops a room
//! made temporary from the store); a destroyed room's occupants are told
//! and the room is forgotten with its archive.

use super::*;

impl Muc {
    /// muc#owner: the configuration form, its submission, destroying the room.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn owner_iq(
        &self,
        c: &Ctx<'_>,
        svc: &mut Service,
        node: &str,
        payload: &Element,
        is_set: bool,
        from: &FullJid,
        out: &mut Out,
    ) -> Result<Option<Element>, StanzaError> {
        let room = svc
            .rooms
            .get_mut(node)
            .ok_or_else(StanzaError::item_not_found)?;
        let service_admin = Muc::allows(c.ctx, &self.access_admin, &Jid::from(from.clone()));
        if room.affiliation(from.to_bare().as_str()) != Affiliation::Owner && !service_admin {
            return Err(StanzaError::forbidden().with_text("Only owners may configure the room"));
        }
        if !is_set {
            return Ok(Some(
                Element::new("query", NS_MUC_OWNER).with_child(self.config_form(node, room)),
            ));
        }
        if let Some(destroy) = payload.child("destroy", NS_MUC_OWNER) {
            let mut d = Element::new("destroy", NS_MUC_USER);
            if let Some(j) = destroy.attr("jid") {
                d.set_attr("jid", j);
            }
            if let Some(r) = destroy.child("reason", NS_MUC_OWNER) {
                d = d.with_child(Element::new("reason", NS_MUC_USER).with_text(r.text()));
            }
            for o in &room.occupants {
                let mut item = Element::new("item", NS_MUC_USER)
                    .with_attr("affiliation", "none")
                    .with_attr("role", "none");
                let _ = &mut item;
                let mut x = Element::new("x", NS_MUC_USER)
                    .with_child(item)
                    .with_child(d.clone());
                x = x.with_child(status(110));
                out.push(
                    Element::new("presence", ns::CLIENT)
                        .with_attr("from", format!("{}/{}", c.room_jid(node), o.nick))
                        .with_attr("to", o.jid.to_string())
                        .with_attr("type", "unavailable")
                        .with_child(x),
                );
            }
            c.drop_room(svc, node);
            return Ok(None);
        }
        let Some(form) = payload.child("x", ns::DATA_FORMS) else {
            return Err(StanzaError::bad_request());
        };
        match form.attr("type") {
            Some("cancel") => return Ok(None),
            Some("submit") => {}
            _ => return Err(StanzaError::bad_request()),
        }
        let mut cfg = room.config.clone();
        for f in form.child_elements().filter(|f| f.name == "field") {
            let var = f.attr("var").unwrap_or("");
            let value = f
                .child("value", ns::DATA_FORMS)
                .map(|v| v.text())
                .unwrap_or_default();
            let b = is_true(value.trim());
            match var {
                "FORM_TYPE" if value != NS_ROOMCONFIG => {
                    return Err(StanzaError::bad_request().with_text("wrong FORM_TYPE"));
                }
                "muc#roomconfig_roomname" => cfg.title = value,
                "muc#roomconfig_roomdesc" => cfg.description = value,
                "muc#roomconfig_persistentroom" => cfg.persistent = b,
                "muc#roomconfig_publicroom" => cfg.public = b,
                "public_list" | "muc#roomconfig_public_list" => cfg.public_list = b,
                "muc#roomconfig_membersonly" => cfg.members_only = b,
                "muc#roomconfig_moderatedroom" => cfg.moderated = b,
                "members_by_default" => cfg.members_by_default = b,
                "muc#roomconfig_passwordprotectedroom" => cfg.password_protected = b,
                "muc#roomconfig_roomsecret" => cfg.password = value,
                "muc#roomconfig_whois" => match value.as_str() {
                    "anyone" => cfg.anonymous = false,
                    "moderators" => cfg.anonymous = true,
                    _ => {
                        return Err(
                            StanzaError::not_acceptable().with_text("whois: anyone or moderators")
                        )
                    }
                },
                "muc#roomconfig_changesubject" => cfg.allow_change_subj = b,
                "muc#roomconfig_allowinvites" => cfg.allow_user_invites = b,
                "allow_private_messages" => cfg.allow_private_messages = b,
                "muc#roomconfig_enablearchiving" | "mam" => cfg.mam = b,
                "muc#roomconfig_allowvoicerequests" | "allow_voice_requests" => {
                    cfg.allow_voice_requests = b
                }
                "muc#roomconfig_voicerequestmininterval" | "voice_request_min_interval" => {
                    match value.trim().parse::<u64>() {
                        Ok(n) => cfg.voice_request_min_interval = n,
                        Err(_) => {
                            return Err(StanzaError::not_acceptable()
                                .with_text("voicerequestmininterval: a whole number of seconds"))
                        }
                    }
                }
                "muc#roomconfig_maxusers" => match value.trim().parse::<usize>() {
                    Ok(n) if n > 0 && n <= self.max_users => cfg.max_users = n,
                    _ if value.trim().is_empty() || value.trim() == "none" => {
                        cfg.max_users = self.max_users
                    }
                    _ => {
                        return Err(StanzaError::not_acceptable()
                            .with_text(format!("maxusers: at most {}", self.max_users)))
                    }
                },
                _ => {}
            }
        }
        if cfg.persistent
            && !room.config.persistent
            && !Muc::allows(c.ctx, &self.access_persistent, &Jid::from(from.clone()))
        {
            return Err(StanzaError::forbidden().with_text("You may not make rooms persistent"));
        }
        let mut codes = vec![104];
        if cfg.anonymous != room.config.anonymous {
            codes.push(if cfg.anonymous { 173 } else { 172 });
        }
        let was_persistent = room.config.persistent;
        room.config = cfg;
        if room.config.persistent || was_persistent {
            c.save(node, room);
        }
        c.room_notice(node, room, &codes, out);
        // Members-only now: non-members leave (§9.4, status 322).
        if room.config.members_only {
            while let Some(idx) = room
                .occupants
                .iter()
                .position(|o| room.affiliation(o.jid.to_bare().as_str()) < Affiliation::Member)
            {
                c.remove_occupant(node, room, idx, &[322], None, None, out);
            }
        }
        if room.occupants.is_empty() && !room.config.persistent {
            c.drop_room(svc, node);
        }
        Ok(None)
    }

    pub(super) fn config_form(&self, node: &str, room: &Room) -> Element {
        let c = &room.config;
        let mut max = field(
            "muc#roomconfig_maxusers",
            "list-single",
            "Maximum number of occupants",
            &[&c.max_users.to_string()],
        );
        let mut choices: Vec<usize> = [5, 10, 20, 30, 50, 100, 200, 500, 1000]
            .into_iter()
            .filter(|n| *n < self.max_users)
            .collect();
        choices.push(self.max_users);
        if !choices.contains(&c.max_users) {
            choices.push(c.max_users);
            choices.sort();
        }
        for n in choices {
            max = max.with_child(
                Element::new("option", ns::DATA_FORMS)
                    .with_attr("label", n.to_string())
                    .with_child(Element::new("value", ns::DATA_FORMS).with_text(n.to_string())),
            );
        }
        let mut whois = field(
            "muc#roomconfig_whois",
            "list-single",
            "Who may see real JIDs",
            &[if c.anonymous { "moderators" } else { "anyone" }],
        );
        for (v, l) in [("moderators", "Moderators only"), ("anyone", "Anyone")] {
            whois = whois.with_child(
                Element::new("option", ns::DATA_FORMS)
                    .with_attr("label", l)
                    .with_child(Element::new("value", ns::DATA_FORMS).with_text(v)),
            );
        }
        Element::new("x", ns::DATA_FORMS)
            .with_attr("type", "form")
            .with_child(
                Element::new("title", ns::DATA_FORMS)
                    .with_text(format!("Configuration of room {node}")),
            )
            .with_child(field("FORM_TYPE", "hidden", "", &[NS_ROOMCONFIG]))
            .with_child(field(
                "muc#roomconfig_roomname",
                "text-single",
                "Room title",
                &[&c.title],
            ))
            .with_child(field(
                "muc#roomconfig_roomdesc",
                "text-single",
                "Room description",
                &[&c.description],
            ))
            .with_child(field(
                "muc#roomconfig_persistentroom",
                "boolean",
                "Make room persistent",
                &[bool_str(c.persistent)],
            ))
            .with_child(field(
                "muc#roomconfig_publicroom",
                "boolean",
                "Make room public searchable",
                &[bool_str(c.public)],
            ))
            .with_child(field(
                "muc#roomconfig_membersonly",
                "boolean",
                "Make room members-only",
                &[bool_str(c.members_only)],
            ))
            .with_child(field(
                "muc#roomconfig_moderatedroom",
                "boolean",
                "Make room moderated",
                &[bool_str(c.moderated)],
            ))
            .with_child(field(
                "muc#roomconfig_passwordprotectedroom",
                "boolean",
                "Make room password protected",
                &[bool_str(c.password_protected)],
            ))
            .with_child(field(
                "muc#roomconfig_roomsecret",
                "text-private",
                "Password",
                &[&c.password],
            ))
            .with_child(whois)
            .with_child(field(
                "muc#roomconfig_changesubject",
                "boolean",
                "Allow occupants to change the subject",
                &[bool_str(c.allow_change_subj)],
            ))
            .with_child(field(
                "muc#roomconfig_allowinvites",
                "boolean",
                "Allow occupants to invite others",
                &[bool_str(c.allow_user_invites)],
            ))
            .with_child(field(
                "allow_private_messages",
                "boolean",
                "Allow occupants to send private messages",
                &[bool_str(c.allow_private_messages)],
            ))
            .with_child(field(
                "muc#roomconfig_allowvoicerequests",
                "boolean",
                "Allow visitors to ask for voice",
                &[bool_str(c.allow_voice_requests)],
            ))
            .with_child(field(
                "muc#roomconfig_voicerequestmininterval",
                "text-single",
                "Seconds between voice requests",
                &[&c.voice_request_min_interval.to_string()],
            ))
            .with_child(field(
                "muc#roomconfig_enablearchiving",
                "boolean",
                "Archive messages (XEP-0313)",
                &[bool_str(c.mam)],
            ))
            .with_child(max)
    }
}
