//! The room checks on remote occupants whose server has gone silent (the
//! complement of XEP-0410, which has clients check on the room): an
//! occupant at another server that sent the room nothing for
//! `occupant_ping_interval` gets a XEP-0199 ping from the room (from its
//! own occupant JID); without an answer within `occupant_ping_timeout`, or
//! with an error other than `feature-not-implemented` (a client that does
//! not do pings is still there) or of type `wait`, it is removed with
//! status 333 for everyone, as when its server bounces the room's stanzas
//! (`route.rs`). Local occupants need no check: their sessions' end
//! removes them (`Module::session_closed`).
//!
//! Invariants: at most one ping is outstanding per occupant (real full JID
//! and room); any stanza from an occupant counts as hearing from it; the
//! check runs from [`Module::tick`] (about once a second) and does nothing
//! when `occupant_ping_interval` is `infinity`.

use super::*;
use std::time::{Duration, Instant};

/// The id prefix of the room's pings.
const PING_ID: &str = "mucping-";

/// A ping the room sent to an occupant.
pub(super) struct SentPing {
    pub(super) node: String,
    pub(super) jid: FullJid,
    pub(super) sent: Instant,
}

/// Whether an iq answer is for one of the room's pings.
pub(super) fn is_ping_answer(stanza: &Element) -> bool {
    stanza.name == "iq" && stanza.attr("id").is_some_and(|id| id.starts_with(PING_ID))
}

/// Any stanza from `from` to room `node`: the occupant (if it is one) is
/// alive.
pub(super) fn heard_from(svc: &mut Service, node: &str, from: &Jid) {
    let Ok(full) = from.clone().try_into_full() else {
        return;
    };
    if let Some(room) = svc.rooms.get_mut(node) {
        if let Some(i) = room.by_jid(&full) {
            room.occupants[i].last_heard = Instant::now();
        }
    }
}

impl Muc {
    /// The answer to a room's ping: the occupant is there, or it is gone.
    pub(super) fn ping_answer(
        &self,
        c: &Ctx<'_>,
        svc: &mut Service,
        stanza: &Element,
        from: &Jid,
        out: &mut Out,
    ) {
        let Some(id) = stanza.attr("id") else { return };
        if svc
            .pings
            .get(id)
            .is_none_or(|p| from.as_str() != p.jid.as_str())
        {
            return;
        }
        let Some(ping) = svc.pings.remove(id) else {
            return;
        };
        if stanza.attr("type") != Some("error") {
            return;
        }
        let error = stanza.child("error", ns::CLIENT);
        let alive = error.is_some_and(|e| {
            e.attr("type") == Some("wait")
                || e.child_elements()
                    .any(|c| c.name == Condition::FeatureNotImplemented.as_str())
        });
        if !alive {
            self.ping_failed(c, svc, &ping, out);
        }
    }

    fn ping_failed(&self, c: &Ctx<'_>, svc: &mut Service, ping: &SentPing, out: &mut Out) {
        let Some(room) = svc.rooms.get_mut(&ping.node) else {
            return;
        };
        if let Some(idx) = room.by_jid(&ping.jid) {
            c.remove_occupant(&ping.node, room, idx, &[333], None, None, out);
            if room.occupants.is_empty() && !room.config.persistent {
                c.drop_room(svc, &ping.node);
            }
        }
    }

    /// The periodic check: pings to remote occupants silent for
    /// `occupant_ping_interval`, removal of those whose ping went
    /// unanswered for `occupant_ping_timeout`.
    pub(super) fn check_occupants(&self, ctx: &dyn ServerContext) {
        let Some(interval) = self.occupant_ping_interval else {
            return;
        };
        let timeout = self.occupant_ping_timeout;
        let hosts = ctx.hosts();
        let mut out = Vec::new();
        let mut guard = state().lock().unwrap_or_else(|e| e.into_inner());
        for (service, svc) in guard.iter_mut() {
            let c = Ctx { ctx, service };
            // Unanswered pings first.
            let late: Vec<String> = svc
                .pings
                .iter()
                .filter(|(_, p)| p.sent.elapsed() >= timeout)
                .map(|(id, _)| id.clone())
                .collect();
            for id in late {
                if let Some(ping) = svc.pings.remove(&id) {
                    self.ping_failed(&c, svc, &ping, &mut out);
                }
            }
            let mut due = Vec::new();
            for (node, room) in &svc.rooms {
                for o in &room.occupants {
                    let remote = !hosts.iter().any(|h| h == o.jid.domain().as_str());
                    if remote
                        && o.last_heard.elapsed() >= interval
                        && !svc
                            .pings
                            .values()
                            .any(|p| p.jid == o.jid && &p.node == node)
                    {
                        due.push((node.clone(), o.nick.clone(), o.jid.clone()));
                    }
                }
            }
            for (node, nick, jid) in due {
                svc.next_id += 1;
                let id = format!("{PING_ID}{}", svc.next_id);
                out.push(
                    Element::new("iq", ns::CLIENT)
                        .with_attr("type", "get")
                        .with_attr("id", id.clone())
                        .with_attr("from", format!("{}/{}", c.room_jid(&node), nick))
                        .with_attr("to", jid.to_string())
                        .with_child(Element::new("ping", ns::PING)),
                );
                svc.pings.insert(
                    id,
                    SentPing {
                        node,
                        jid,
                        sent: Instant::now(),
                    },
                );
            }
        }
        drop(guard);
        ctx.route_ordered(out);
    }
}

/// `occupant_ping_timeout`'s floor: a ping gets at least this long.
pub(super) const MIN_PING_TIMEOUT: Duration = Duration::from_secs(1);
/// `occupant_ping_interval`'s floor.
pub(super) const MIN_PING_INTERVAL: Duration = Duration::from_secs(1);
