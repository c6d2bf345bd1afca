//! Mentions wake phones: a groupchat message that mentions a member who is
//! not connected is handed to the server's mention hook (mod_push turns it
//! into a XEP-0357 notification; ejabberd issue #2641).
//!
//! A message mentions an account when its body names the account's nick
//! in the room as a word of its own (case-insensitively: "alice: hi",
//! "hi @Alice"), or when it carries a XEP-0372 reference of type
//! `mention` to the account's bare JID (`xmpp:alice@example.org`) or to
//! a nick in the room (`xmpp:room@service/alice`). The nick is the
//! occupant's nick, or the nick the account registered in the room.
//!
//! Invariants: only local accounts are candidates, never the sender;
//! someone who is not in the room counts only when affiliated (member,
//! admin or owner) or holding a registered nick; an account is notified
//! only when none of its sessions is connected (it has none, or only
//! XEP-0198 sessions waiting for resumption); at most
//! [`MAX_MENTIONS`] accounts per message (a message naming everyone wakes
//! no more phones than that); nothing is looked for when no module acts on
//! mentions.

use super::*;

/// XEP-0372 references.
pub(super) const NS_REFERENCE: &str = "urn:xmpp:reference:0";
/// Most accounts one message may wake.
pub(super) const MAX_MENTIONS: usize = 20;

/// Whether `nick` occurs in `body` as a word of its own (not inside a
/// longer word), ignoring case.
pub(super) fn names(body_lower: &str, nick: &str) -> bool {
    let nick = nick.to_lowercase();
    if nick.is_empty() || nick.len() > body_lower.len() {
        return false;
    }
    let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    body_lower.match_indices(nick.as_str()).any(|(i, _)| {
        !word(body_lower[..i].chars().next_back())
            && !word(body_lower[i + nick.len()..].chars().next())
    })
}

/// The bare JIDs a groupchat message mentions (see the header), the
/// sender's excluded, at most [`MAX_MENTIONS`], in a stable order.
pub(super) fn mentioned(room: &Room, room_jid: &str, msg: &Element, sender: &str) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    let mut add = |bare: String| {
        if bare != sender && !found.contains(&bare) && found.len() < MAX_MENTIONS {
            found.push(bare);
        }
    };
    let by_nick = |nick: &str| -> Option<String> {
        room.by_nick(nick)
            .map(|i| room.occupants[i].jid.to_bare().to_string())
            .or_else(|| room.nick_owner(nick).map(str::to_string))
    };
    for r in msg.child_elements() {
        if !r.is("reference", NS_REFERENCE) || r.attr("type") != Some("mention") {
            continue;
        }
        let Some(uri) = r.attr("uri").and_then(|u| u.strip_prefix("xmpp:")) else {
            continue;
        };
        let uri = uri.split('?').next().unwrap_or("");
        let Ok(jid) = Jid::new(uri) else { continue };
        if jid.to_bare().as_str() == room_jid {
            if let Some(bare) = jid.resource().and_then(|n| by_nick(n.as_str())) {
                add(bare);
            }
        } else if jid.resource().is_none() {
            add(jid.to_bare().to_string());
        }
    }
    if let Some(body) = msg.child("body", ns::CLIENT) {
        let lower = body.text().to_lowercase();
        // The bare JID is made only for a nick that matches.
        for o in &room.occupants {
            if names(&lower, &o.nick) {
                add(o.jid.to_bare().to_string());
            }
        }
        for (bare, nick) in &room.nicks {
            if names(&lower, nick) {
                add(bare.clone());
            }
        }
    }
    found
}

impl Muc {
    /// After a groupchat message went out: the mentioned members who are
    /// not connected are handed to the server's mention hook.
    pub(super) fn notify_mentions(
        &self,
        c: &Ctx<'_>,
        node: &str,
        room: &Room,
        msg: &Element,
        sender: &FullJid,
    ) {
        if msg.child("body", ns::CLIENT).is_none() || !c.ctx.room_mention_hooks() {
            return;
        }
        let room_jid = c.room_jid(node);
        let sender = sender.to_bare().to_string();
        let hosts = c.ctx.hosts();
        for bare in mentioned(room, &room_jid, msg, &sender) {
            let Ok(account) = BareJid::new(&bare) else {
                continue;
            };
            if !hosts.iter().any(|h| h == account.domain().as_str()) {
                continue;
            }
            let in_room = room.occupants.iter().any(|o| o.jid.to_bare() == account);
            let aff = room.affiliation(&bare);
            if aff == Affiliation::Outcast
                || (!in_room && aff < Affiliation::Member && !room.nicks.contains_key(&bare))
            {
                continue;
            }
            if c.ctx.sessions(&account).iter().any(|s| !s.detached) {
                continue;
            }
            let mut copy = msg.clone();
            copy.set_attr("to", bare.as_str());
            c.ctx.room_mention(&account, &copy);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nicks_are_words_of_their_own() {
        assert!(names("alice: look", "Alice"));
        assert!(names("hi @alice!", "alice"));
        assert!(names("ping alice", "alice"));
        assert!(!names("malice aforethought", "alice"));
        assert!(!names("alice_b here", "alice"));
        assert!(names("dear mr. smith, hi", "Mr. Smith"));
        assert!(!names("a", "alice"));
        assert!(!names("anything", ""));
    }

    #[test]
    fn mentions_by_nick_reference_and_registered_nick() {
        let mut room = Room::new(RoomConfig::default());
        room.occupants.push(Occupant {
            nick: "Bob".into(),
            jid: FullJid::new("bob@x/phone").unwrap(),
            role: Role::Participant,
            presence: Element::new("presence", ns::CLIENT),
            last_message: None,
            last_heard: std::time::Instant::now(),
        });
        room.nicks.insert("carol@x".into(), "caz".into());
        let msg = |xml: &str| {
            let mut m = Element::new("message", ns::CLIENT);
            m = m.with_child(Element::new("body", ns::CLIENT).with_text(xml));
            m
        };
        let r = "r@muc.x";
        assert_eq!(
            mentioned(&room, r, &msg("bob, caz: hi"), "al@x"),
            vec!["bob@x".to_string(), "carol@x".to_string()]
        );
        // The sender never; a nick inside a word not.
        assert!(mentioned(&room, r, &msg("bobby says"), "al@x").is_empty());
        assert!(mentioned(&room, r, &msg("bob"), "bob@x").is_empty());
        // References: to a bare JID, to a nick in the room.
        let m = msg("hey").with_child(
            Element::new("reference", NS_REFERENCE)
                .with_attr("type", "mention")
                .with_attr("uri", "xmpp:dave@x"),
        );
        let m = m.with_child(
            Element::new("reference", NS_REFERENCE)
                .with_attr("type", "mention")
                .with_attr("uri", "xmpp:r@muc.x/caz"),
        );
        assert_eq!(
            mentioned(&room, r, &m, "al@x"),
            vec!["dave@x".to_string(), "carol@x".to_string()]
        );
        // A message naming many wakes at most MAX_MENTIONS.
        let mut m = msg("all");
        for i in 0..50 {
            m = m.with_child(
                Element::new("reference", NS_REFERENCE)
                    .with_attr("type", "mention")
                    .with_attr("uri", format!("xmpp:u{i}@x")),
            );
        }
        assert_eq!(mentioned(&room, r, &m, "al@x").len(), MAX_MENTIONS);
    }
}
