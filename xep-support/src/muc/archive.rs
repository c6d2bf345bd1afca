//! A room's message archive (XEP-0313 on the room JID): the room is one
//! more owner in the server's archive ([`ServerContext::archive`]), each
//! message stored once with the sender's real bare JID as its peer.
//!
//! - Archiving: with `mod_mam` enabled and the room's `mam` option on
//!   (the default), every groupchat message with a body (and every
//!   retraction) is appended as the occupants get it (from `room/nick`,
//!   with the room's `<stanza-id/>` and the sender's occupant id); the
//!   copies sent carry `<stanza-id by='room' id='archive id'/>`.
//! - Queries (iq set to the room's bare JID): outcasts never; in a
//!   members-only room, members (and above) only; elsewhere occupants and
//!   affiliated users; service admins always; anyone else `forbidden`.
//!   `with` is an occupant's room JID (the messages that nick sent), or a
//!   real JID where real JIDs are visible to the requester. A query is
//!   checked with the rooms' lock held and run after it is released.
//! - History on join is read from the archive (the newest
//!   `min(history_size, maxstanzas, HISTORY_MAX)` messages, within
//!   `seconds`/`since` and `maxchars`), each with the same `<stanza-id/>`
//!   MAM gives, so a client joining with history and catching up by MAM
//!   can tell the two apart (no duplicates).
//! - Retention: `mod_mam`'s `archive_expires_after` leaves older messages
//!   out of queries and history at once and deletes them when the room's
//!   first occupant joins (bounded rounds) or by `delete_old_mam_messages`.
//! - A destroyed room's archive is deleted (a temporary room is destroyed
//!   when its last occupant leaves).
//!
//! Invariants: the stanza-id of a copy and of the MAM result is the same
//! archive id; stanza-ids claiming to be by the room that a client sent
//! are removed first; a failing archive never stops the message (it goes
//! out without a stanza-id, logged).

use super::*;
use crate::archive::{format_id, ArchiveStore, Direction, NewMessage, PageQuery};
use crate::mam::{NS_MAM, NS_SID};

/// Most history messages one join gets, whatever `history_size` says.
pub const HISTORY_MAX: usize = 1000;
/// Expired messages deleted per first join of a room.
const EXPIRE_PER_JOIN: usize = 5_000;

/// Whether a groupchat message is kept in the archive: a non-empty body
/// (or a retraction), no XEP-0334 hint against storing it.
pub(super) fn archivable(msg: &Element) -> bool {
    let body = msg
        .child("body", ns::CLIENT)
        .is_some_and(|b| !b.text().is_empty());
    let retraction = msg.child("retract", moderation::NS_RETRACT).is_some();
    (body || retraction)
        && msg.child("no-store", "urn:xmpp:hints").is_none()
        && msg.child("no-permanent-store", "urn:xmpp:hints").is_none()
}

impl Muc {
    /// The archive, when this room keeps one.
    pub(super) fn archive_of<'a>(&self, c: &Ctx<'a>, room: &Room) -> Option<&'a dyn ArchiveStore> {
        if !self.mam_enabled || !room.config.mam {
            return None;
        }
        c.ctx.archive()
    }

    /// Ids below this are expired (0: none).
    pub(super) fn archive_cutoff(&self) -> u64 {
        self.archive_expires
            .map(|e| now_micros().saturating_sub(e.as_micros() as u64))
            .unwrap_or(0)
    }

    /// Archive `m` (the message as occupants get it, without `to`) and
    /// add the room's `<stanza-id/>` to it.
    pub(super) fn archive_message(
        &self,
        c: &Ctx<'_>,
        node: &str,
        room: &Room,
        sender: &FullJid,
        m: &mut Element,
    ) {
        let Some(store) = self.archive_of(c, room) else {
            return;
        };
        if !archivable(m) {
            return;
        }
        let Ok(owner) = BareJid::new(&c.room_jid(node)) else {
            return;
        };
        let origin_id = m
            .child("origin-id", NS_SID)
            .and_then(|o| o.attr("id"))
            .filter(|o| !o.is_empty())
            .map(str::to_string);
        let new = NewMessage {
            owner: owner.clone(),
            peer: sender.to_bare(),
            direction: Direction::Incoming,
            origin_id,
            xml: m.to_xml(ns::CLIENT),
        };
        match store.append(vec![new]) {
            Ok(ids) => {
                if let Some(a) = ids.first() {
                    m.children.push(crate::element::Node::Element(
                        Element::new("stanza-id", NS_SID)
                            .with_attr("by", owner.to_string())
                            .with_attr("id", format_id(a.id())),
                    ));
                }
            }
            Err(e) => tracing::error!("mod_muc: archiving a message of {owner}: {e}"),
        }
    }

    /// Whether `from` may read the room's archive (see the module header).
    fn may_read_archive(&self, c: &Ctx<'_>, room: &Room, from: &FullJid) -> bool {
        if Muc::allows(c.ctx, &self.access_admin, &Jid::from(from.clone())) {
            return true;
        }
        let aff = room.affiliation(from.to_bare().as_str());
        if aff == Affiliation::Outcast {
            return false;
        }
        if room.config.members_only {
            return aff >= Affiliation::Member;
        }
        aff >= Affiliation::Member || room.by_jid(from).is_some()
    }

    /// A XEP-0313 iq to the room's bare JID, checked with the rooms'
    /// lock held: errors and the form (iq get) go to `out` at once; a
    /// query to run is returned, to be run by [`Muc::mam_run`] once the
    /// lock is released (it reads pages of the archive, and must not hold
    /// up every room meanwhile).
    pub(super) fn mam_prepare(
        &self,
        c: &Ctx<'_>,
        svc: &Service,
        node: &str,
        stanza: &Element,
        from: &Jid,
        out: &mut Out,
    ) -> Option<MamJob> {
        let kind = stanza.attr("type").unwrap_or("");
        if kind != "get" && kind != "set" {
            return None;
        }
        let (Some(payload), Some(room)) = (stanza.first_child(), svc.rooms.get(node)) else {
            out.extend(error_to(stanza, StanzaError::item_not_found()));
            return None;
        };
        let Ok(from) = from.clone().try_into_full() else {
            out.extend(error_to(stanza, StanzaError::bad_request()));
            return None;
        };
        if self.archive_of(c, room).is_none() {
            out.extend(error_to(
                stanza,
                StanzaError::service_unavailable().with_text("This room keeps no archive"),
            ));
            return None;
        }
        if !self.may_read_archive(c, room, &from) {
            out.extend(error_to(
                stanza,
                StanzaError::forbidden()
                    .with_text("Only occupants and members may read the archive"),
            ));
            return None;
        }
        if payload.name != "query" {
            out.extend(error_to(stanza, StanzaError::feature_not_implemented()));
            return None;
        }
        if kind == "get" {
            out.push(iq_result(stanza, Some(crate::mam::search_form())));
            return None;
        }
        let Ok(owner) = BareJid::new(&c.room_jid(node)) else {
            out.extend(error_to(stanza, StanzaError::item_not_found()));
            return None;
        };
        let real_jids = !room.config.anonymous
            || room
                .by_jid(&from)
                .is_some_and(|i| room.occupants[i].role == Role::Moderator)
            || room.affiliation(from.to_bare().as_str()) >= Affiliation::Admin
            || Muc::allows(c.ctx, &self.access_admin, &Jid::from(from.clone()));
        Some(MamJob {
            owner,
            requester: Jid::from(from),
            real_jids,
        })
    }

    /// Run a query [`Muc::mam_prepare`] allowed: the results, then the answer.
    pub(super) fn mam_run(
        &self,
        ctx: &dyn ServerContext,
        job: MamJob,
        stanza: &Element,
        out: &mut Out,
    ) {
        let Some(payload) = stanza.first_child() else {
            return;
        };
        match crate::mam::run_query(
            ctx,
            &job.owner,
            payload,
            &job.requester,
            self.archive_cutoff(),
            Some(crate::mam::RoomWith {
                real_jids: job.real_jids,
            }),
        ) {
            Ok((fin, results)) => {
                out.extend(results);
                out.push(iq_result(stanza, Some(fin)));
            }
            Err(e) => out.extend(error_to(stanza, e)),
        }
    }

    /// The history a joiner gets, from the archive (oldest first, each
    /// with its `<delay/>`), or `None` when the room keeps no archive.
    pub(super) fn archive_history(
        &self,
        c: &Ctx<'_>,
        node: &str,
        room: &Room,
        req: &HistoryRequest,
        to: &FullJid,
    ) -> Option<Vec<Element>> {
        let store = self.archive_of(c, room)?;
        let owner = BareJid::new(&c.room_jid(node)).ok()?;
        let limit = req.max_stanzas.min(self.history_size).min(HISTORY_MAX);
        if limit == 0 || req.max_chars == 0 {
            return Some(Vec::new());
        }
        let lo = self.archive_cutoff().max(req.since_micros);
        let rows = match store.page(
            &owner,
            &PageQuery {
                with: None,
                lo,
                hi: u64::MAX,
                reverse: true,
                limit,
            },
        ) {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!("mod_muc: reading the history of {owner}: {e}");
                return Some(Vec::new());
            }
        };
        let mut chars = 0usize;
        let mut picked = Vec::new();
        for r in rows {
            chars = chars.saturating_add(r.xml.len());
            if chars > req.max_chars {
                break;
            }
            let Some(mut m) = c.ctx.parse_stored_xml(&r.xml, owner.as_str()) else {
                tracing::error!(
                    "mod_muc: archive of {owner}: message {} does not parse; skipped",
                    format_id(r.id)
                );
                continue;
            };
            // A retraction is for clients catching up, not for a joiner.
            if m.child("retract", moderation::NS_RETRACT).is_some() {
                continue;
            }
            m.set_attr("to", to.to_string());
            m = m
                .with_child(
                    Element::new("stanza-id", NS_SID)
                        .with_attr("by", owner.to_string())
                        .with_attr("id", format_id(r.id)),
                )
                .with_child(
                    Element::new("delay", ns::DELAY)
                        .with_attr("from", owner.to_string())
                        .with_attr("stamp", crate::date::stamp(r.id)),
                );
            picked.push(m);
        }
        picked.reverse();
        Some(picked)
    }

    /// Delete the room's expired messages (bounded), at its first join.
    pub(super) fn expire_archive(&self, c: &Ctx<'_>, node: &str, room: &Room) {
        let cutoff = self.archive_cutoff();
        if cutoff == 0 {
            return;
        }
        let (Some(store), Ok(owner)) = (self.archive_of(c, room), BareJid::new(&c.room_jid(node)))
        else {
            return;
        };
        match store.delete_before(&owner, cutoff, EXPIRE_PER_JOIN) {
            Ok(0) => {}
            Ok(n) => tracing::info!("mod_muc: {n} expired messages of {owner} deleted"),
            Err(e) => tracing::error!("mod_muc: expiring messages of {owner}: {e}"),
        }
    }
}

impl Ctx<'_> {
    /// Forget a room for good: its stored form and its archive.
    pub(super) fn drop_room(&self, svc: &mut Service, node: &str) {
        let stored = svc.rooms.remove(node).is_some_and(|r| r.config.persistent);
        if stored {
            self.forget(node);
        }
        if let (Some(store), Ok(owner)) = (self.ctx.archive(), BareJid::new(&self.room_jid(node))) {
            match store.delete_archive(&owner) {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!("mod_muc: room {owner} gone with its {n} archived messages")
                }
                Err(e) => tracing::error!("mod_muc: deleting the archive of {owner}: {e}"),
            }
        }
    }
}

/// A room archive query allowed by [`Muc::mam_prepare`].
pub(super) struct MamJob {
    owner: BareJid,
    requester: Jid,
    /// Whether the requester may filter by real JIDs.
    real_jids: bool,
}

/// What a joiner asked of the history (XEP-0045 §7.2.14), read leniently:
/// a value that is not a number (negative, too large, garbage) is as if
/// absent; limits are clamped, never trusted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct HistoryRequest {
    pub(super) max_stanzas: usize,
    pub(super) max_chars: usize,
    /// Only messages at or after this (microseconds; 0: all).
    pub(super) since_micros: u64,
}

impl HistoryRequest {
    pub(super) fn read(muc_x: Option<&Element>) -> HistoryRequest {
        let h = muc_x.and_then(|x| x.child("history", NS_MUC));
        let num = |k: &str| {
            h.and_then(|h| h.attr(k))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let clamp = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        let mut since = 0u64;
        if let Some(s) = num("seconds") {
            since = now_micros().saturating_sub(s.saturating_mul(1_000_000));
        }
        if let Some(t) = h
            .and_then(|h| h.attr("since"))
            .and_then(|s| crate::date::parse_stamp(s.trim()))
        {
            since = since.max(t);
        }
        HistoryRequest {
            max_stanzas: num("maxstanzas").map(clamp).unwrap_or(usize::MAX),
            max_chars: num("maxchars").map(clamp).unwrap_or(usize::MAX),
            since_micros: since,
        }
    }
}

pub(super) fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Remove stanza-ids claiming to be by the room (XEP-0359 §5).
pub(super) fn strip_stanza_ids(m: &mut Element, room_jid: &str) {
    m.children.retain(|n| match n {
        crate::element::Node::Element(e) => {
            !(e.is("stanza-id", NS_SID)
                && e.attr("by")
                    .is_some_and(|b| b.eq_ignore_ascii_case(room_jid)))
        }
        _ => true,
    });
}

/// The room disco#info features the archive adds.
pub(super) fn features(on: bool) -> Vec<String> {
    if on {
        vec![NS_MAM.to_string(), NS_SID.to_string()]
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn x(history: &str) -> Element {
        let mut h = Element::new("history", NS_MUC);
        for kv in history.split_whitespace() {
            let (k, v) = kv.split_once('=').unwrap();
            h.set_attr(k, v);
        }
        Element::new("x", NS_MUC).with_child(h)
    }

    #[test]
    fn absurd_history_requests_are_clamped_not_trusted() {
        let r = HistoryRequest::read(None);
        assert_eq!(
            (r.max_stanzas, r.max_chars, r.since_micros),
            (usize::MAX, usize::MAX, 0)
        );
        let r = HistoryRequest::read(Some(&x("maxstanzas=-1 maxchars=abc seconds=-5")));
        assert_eq!(
            (r.max_stanzas, r.max_chars, r.since_micros),
            (usize::MAX, usize::MAX, 0)
        );
        let r = HistoryRequest::read(Some(&x(
            "maxstanzas=99999999999999999999999 seconds=18446744073709551615",
        )));
        assert_eq!(r.max_stanzas, usize::MAX);
        assert_eq!(r.since_micros, 0);
        let r = HistoryRequest::read(Some(&x("maxstanzas=3 maxchars=0 since=garbage")));
        assert_eq!((r.max_stanzas, r.max_chars, r.since_micros), (3, 0, 0));
        let r = HistoryRequest::read(Some(&x("since=2024-01-01T00:00:00Z seconds=1")));
        assert!(r.since_micros > 1_704_067_200_000_000);
    }
}
