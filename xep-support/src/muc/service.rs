//! The rooms of each MUC service domain, for the whole process, and the
//! per-call context ([`Ctx`]) that saves rooms, builds occupants' presence
//! and removes occupants.
//!
//! Invariants: all room state sits behind one mutex ([`state`]); a stanza
//! is processed with it held and the stanzas it produces are returned in
//! order, routed after the lock is released. Persistent rooms are written
//! through to the module store (key `room:NODE`) on each change and read
//! back once per service domain after a start ([`Ctx::load`]); temporary
//! rooms are never stored. Every occupant's presence carries its XEP-0421
//! occupant id (client-sent ones are dropped). Forwarded iqs between occupants are bounded
//! (`PENDING_IQS`, oldest forgotten first).

use super::*;

/// An iq passed on from one occupant to another, waiting for its answer.
pub(super) struct Pending {
    /// The requester's id.
    pub(super) id: String,
    /// The requester's real full JID.
    pub(super) requester: String,
    /// Where it went (the occupant's real full JID, or bare JID for vCards).
    pub(super) addressee: String,
    /// The addressee's nick (the answer comes from it).
    pub(super) nick: String,
}

/// The rooms of one service domain.
#[derive(Default)]
pub(super) struct Service {
    pub(super) loaded: bool,
    pub(super) rooms: BTreeMap<String, Room>,
    /// Iqs passed on between occupants, by the room's id.
    pub(super) pending: HashMap<String, Pending>,
    pub(super) pending_order: VecDeque<String>,
    pub(super) next_id: u64,
    /// The room's pings to silent remote occupants, by id (`ping.rs`).
    pub(super) pings: HashMap<String, ping::SentPing>,
}

/// Every service domain's rooms, for the whole process.
pub(super) fn state() -> &'static Mutex<HashMap<String, Service>> {
    static STATE: OnceLock<Mutex<HashMap<String, Service>>> = OnceLock::new();
    STATE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The occupant's presence as the room keeps it: no addresses, no MUC
/// payloads, no occupant ids (the room adds its own).
pub(super) fn stored_presence(stanza: &Element) -> Element {
    let mut p = Element::new("presence", ns::CLIENT);
    for c in stanza.child_elements() {
        if c.ns == NS_MUC || c.ns == NS_MUC_USER || c.ns == occupant_id::NS_OCCUPANT_ID {
            continue;
        }
        p = p.with_child(c.clone());
    }
    p
}

/// What a processing step needs about the service it runs in.
pub(super) struct Ctx<'a> {
    pub(super) ctx: &'a dyn ServerContext,
    pub(super) service: &'a str,
}

impl Ctx<'_> {
    pub(super) fn room_jid(&self, node: &str) -> String {
        format!("{node}@{}", self.service)
    }

    pub(super) fn save(&self, node: &str, room: &Room) {
        let Ok(domain) = BareJid::new(self.service) else {
            return;
        };
        let key = format!("room:{node}");
        let r = if room.config.persistent {
            self.ctx
                .store(MODULE)
                .put(&domain, &key, room.to_stored().to_xml("").as_bytes())
        } else {
            self.ctx.store(MODULE).delete(&domain, &key).map(|_| ())
        };
        if let Err(e) = r {
            tracing::error!("mod_muc: storing room {node}@{}: {e}", self.service);
        }
    }

    pub(super) fn forget(&self, node: &str) {
        if let Ok(domain) = BareJid::new(self.service) {
            if let Err(e) = self
                .ctx
                .store(MODULE)
                .delete(&domain, &format!("room:{node}"))
            {
                tracing::error!("mod_muc: removing room {node}@{}: {e}", self.service);
            }
        }
    }

    pub(super) fn load(&self, svc: &mut Service) {
        if svc.loaded {
            return;
        }
        svc.loaded = true;
        let Ok(domain) = BareJid::new(self.service) else {
            return;
        };
        match self.ctx.store(MODULE).scan(&domain, "room:") {
            Ok(rows) => {
                for (key, value) in rows {
                    let node = key.trim_start_matches("room:").to_string();
                    let room = std::str::from_utf8(&value)
                        .ok()
                        .and_then(|x| {
                            self.ctx
                                .parse_stored_xml(x, &format!("{node}@{}", self.service))
                        })
                        .and_then(|e| Room::from_stored(&e));
                    match room {
                        Some(room) => {
                            if room.secret_is_new {
                                // Stored before occupant ids: keep the new secret.
                                self.save(&node, &room);
                            }
                            svc.rooms.insert(node, room);
                        }
                        None => tracing::warn!(
                            "mod_muc: stored room {node}@{} cannot be read; skipped",
                            self.service
                        ),
                    }
                }
            }
            Err(e) => tracing::error!("mod_muc: reading rooms of {}: {e}", self.service),
        }
    }

    /// Forget room `node` and read it again from storage (a cluster node
    /// took the room over: its occupants were on the node that held it,
    /// its stored configuration may be newer than this node's copy).
    pub(super) fn reload(&self, svc: &mut Service, node: &str) {
        svc.rooms.remove(node);
        if !svc.loaded {
            return;
        }
        let Ok(domain) = BareJid::new(self.service) else {
            return;
        };
        match self.ctx.store(MODULE).get(&domain, &format!("room:{node}")) {
            Ok(Some(value)) => {
                let room = std::str::from_utf8(&value)
                    .ok()
                    .and_then(|x| {
                        self.ctx
                            .parse_stored_xml(x, &format!("{node}@{}", self.service))
                    })
                    .and_then(|e| Room::from_stored(&e));
                match room {
                    Some(room) => {
                        svc.rooms.insert(node.to_string(), room);
                    }
                    None => tracing::warn!(
                        "mod_muc: stored room {node}@{} cannot be read; skipped",
                        self.service
                    ),
                }
            }
            Ok(None) => {}
            Err(e) => tracing::error!("mod_muc: reading room {node}@{}: {e}", self.service),
        }
    }

    /// The presence of `occ` as `viewer` sees it.
    pub(super) fn presence_of(
        &self,
        node: &str,
        room: &Room,
        occ: &Occupant,
        viewer: &Occupant,
        codes: &[u16],
    ) -> Element {
        let mut p = occ.presence.clone();
        p.set_attr("from", format!("{}/{}", self.room_jid(node), occ.nick));
        p.set_attr("to", viewer.jid.to_string());
        let mut item = Element::new("item", NS_MUC_USER)
            .with_attr(
                "affiliation",
                room.affiliation(occ.jid.to_bare().as_str()).as_str(),
            )
            .with_attr("role", occ.role.as_str());
        if room.sees_jids(viewer) || viewer.jid == occ.jid {
            item.set_attr("jid", occ.jid.to_string());
        }
        let mut x = Element::new("x", NS_MUC_USER).with_child(item);
        let mut codes = codes.to_vec();
        if viewer.jid == occ.jid {
            codes.push(110);
        }
        for c in codes {
            x = x.with_child(status(c));
        }
        p.with_child(x).with_child(room.occupant_id(&occ.jid))
    }

    /// The unavailable presence of a leaving occupant, as `viewer` sees it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn unavailable_of(
        &self,
        node: &str,
        room: &Room,
        occ: &Occupant,
        viewer: &Occupant,
        codes: &[u16],
        item_extra: Option<Element>,
        status_text: Option<&str>,
    ) -> Element {
        let mut p = Element::new("presence", ns::CLIENT)
            .with_attr("from", format!("{}/{}", self.room_jid(node), occ.nick))
            .with_attr("to", viewer.jid.to_string())
            .with_attr("type", "unavailable");
        if let Some(t) = status_text {
            p = p.with_child(Element::new("status", ns::CLIENT).with_text(t));
        }
        let mut item = Element::new("item", NS_MUC_USER)
            .with_attr(
                "affiliation",
                room.affiliation(occ.jid.to_bare().as_str()).as_str(),
            )
            .with_attr("role", "none");
        if room.sees_jids(viewer) || viewer.jid == occ.jid {
            item.set_attr("jid", occ.jid.to_string());
        }
        if let Some(extra) = item_extra {
            item = item.with_child(extra);
        }
        let mut x = Element::new("x", NS_MUC_USER).with_child(item);
        let mut codes = codes.to_vec();
        if viewer.jid == occ.jid {
            codes.push(110);
        }
        for c in codes {
            x = x.with_child(status(c));
        }
        p.with_child(x).with_child(room.occupant_id(&occ.jid))
    }

    /// Occupant `idx` leaves (kicked, banned or gone); everyone is told.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn remove_occupant(
        &self,
        node: &str,
        room: &mut Room,
        idx: usize,
        codes: &[u16],
        reason: Option<&str>,
        status_text: Option<&str>,
        out: &mut Out,
    ) {
        let occ = room.occupants.remove(idx);
        let extra = reason.map(|r| Element::new("reason", NS_MUC_USER).with_text(r));
        out.push(self.unavailable_of(node, room, &occ, &occ, codes, extra.clone(), status_text));
        if room.occupants.iter().any(|o| o.nick == occ.nick) {
            // Another session of the same account keeps the nick: for the
            // others, nobody left.
            return;
        }
        for viewer in &room.occupants {
            out.push(self.unavailable_of(
                node,
                room,
                &occ,
                viewer,
                codes,
                extra.clone(),
                status_text,
            ));
        }
    }

    /// Tell every occupant the (new) presence of occupant `idx` (not the
    /// account's other sessions sharing its nick).
    pub(super) fn broadcast_presence(&self, node: &str, room: &Room, idx: usize, out: &mut Out) {
        let occ = &room.occupants[idx];
        for viewer in room
            .occupants
            .iter()
            .filter(|v| v.jid == occ.jid || v.nick != occ.nick)
        {
            out.push(self.presence_of(node, room, occ, viewer, &[]));
        }
    }

    pub(super) fn subject_message(&self, node: &str, room: &Room, to: &FullJid) -> Element {
        let (text, by) = room.subject.clone().unwrap_or_default();
        let from = if by.is_empty() {
            self.room_jid(node)
        } else {
            format!("{}/{}", self.room_jid(node), by)
        };
        Element::new("message", ns::CLIENT)
            .with_attr("type", "groupchat")
            .with_attr("from", from)
            .with_attr("to", to.to_string())
            .with_attr("id", format!("subject-{}", now_secs()))
            .with_child(Element::new("subject", ns::CLIENT).with_text(text))
    }

    /// A groupchat message from the room itself (status codes) to everyone.
    pub(super) fn room_notice(&self, node: &str, room: &Room, codes: &[u16], out: &mut Out) {
        for o in &room.occupants {
            let mut x = Element::new("x", NS_MUC_USER);
            for c in codes {
                x = x.with_child(status(*c));
            }
            out.push(
                Element::new("message", ns::CLIENT)
                    .with_attr("type", "groupchat")
                    .with_attr("from", self.room_jid(node))
                    .with_attr("to", o.jid.to_string())
                    .with_child(x),
            );
        }
    }
}
