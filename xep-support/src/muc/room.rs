//! A MUC room's model: affiliations and roles (XEP-0045 §5), the room
//! configuration (ejabberd's room option names), occupants, the history
//! kept for joiners, and the room's stored form (`to_stored`/`from_stored`,
//! namespace `urn:rookery:muc:room`).
//!
//! Invariants: a nick names at most one occupant and a full JID is at most
//! one occupant ([`Room::by_nick`], [`Room::by_jid`]); affiliations are
//! keyed by bare JID and `none` is never stored; the stored form holds the
//! configuration, affiliations, registered nicks (§7.10; a nick is
//! registered by at most one account), the vCard (XEP-0054), subject and the XEP-0421 occupant
//! id secret, never occupants or history (a room's messages are in its
//! archive), and reading it back yields the same room (a unit test in
//! `mod.rs`).

use super::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Affiliation {
    Outcast,
    None,
    Member,
    Admin,
    Owner,
}

impl Affiliation {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Affiliation::Outcast => "outcast",
            Affiliation::None => "none",
            Affiliation::Member => "member",
            Affiliation::Admin => "admin",
            Affiliation::Owner => "owner",
        }
    }
    pub(super) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "outcast" => Affiliation::Outcast,
            "none" => Affiliation::None,
            "member" => Affiliation::Member,
            "admin" => Affiliation::Admin,
            "owner" => Affiliation::Owner,
            _ => return None,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Role {
    None,
    Visitor,
    Participant,
    Moderator,
}

impl Role {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Role::None => "none",
            Role::Visitor => "visitor",
            Role::Participant => "participant",
            Role::Moderator => "moderator",
        }
    }
    pub(super) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "none" => Role::None,
            "visitor" => Role::Visitor,
            "participant" => Role::Participant,
            "moderator" => Role::Moderator,
            _ => return None,
        })
    }
}

/// A room's configuration (ejabberd's room option names).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct RoomConfig {
    pub(super) title: String,
    pub(super) description: String,
    pub(super) persistent: bool,
    pub(super) public: bool,
    pub(super) public_list: bool,
    pub(super) members_only: bool,
    pub(super) moderated: bool,
    pub(super) members_by_default: bool,
    pub(super) password_protected: bool,
    pub(super) password: String,
    /// Semi-anonymous: real JIDs only for moderators (`whois` = moderators).
    pub(super) anonymous: bool,
    pub(super) allow_change_subj: bool,
    pub(super) allow_private_messages: bool,
    pub(super) allow_user_invites: bool,
    /// XEP-0313 room archive (ejabberd's `mam` room option).
    pub(super) mam: bool,
    /// Visitors may ask for voice (§7.13).
    pub(super) allow_voice_requests: bool,
    /// Seconds between two voice requests of one account.
    pub(super) voice_request_min_interval: u64,
    pub(super) max_users: usize,
}

impl Default for RoomConfig {
    fn default() -> Self {
        RoomConfig {
            title: String::new(),
            description: String::new(),
            persistent: false,
            public: true,
            public_list: true,
            members_only: false,
            moderated: true,
            members_by_default: true,
            password_protected: false,
            password: String::new(),
            anonymous: true,
            allow_change_subj: true,
            allow_private_messages: true,
            allow_user_invites: false,
            mam: true,
            allow_voice_requests: true,
            voice_request_min_interval: voice::DEFAULT_VOICE_INTERVAL,
            max_users: DEFAULT_MAX_USERS,
        }
    }
}

impl RoomConfig {
    pub(super) fn get_bool(&self, key: &str) -> Option<bool> {
        Some(match key {
            "persistent" => self.persistent,
            "public" => self.public,
            "public_list" => self.public_list,
            "members_only" => self.members_only,
            "moderated" => self.moderated,
            "members_by_default" => self.members_by_default,
            "password_protected" => self.password_protected,
            "anonymous" => self.anonymous,
            "allow_change_subj" => self.allow_change_subj,
            "allow_private_messages" => self.allow_private_messages,
            "allow_user_invites" => self.allow_user_invites,
            "mam" => self.mam,
            "allow_voice_requests" => self.allow_voice_requests,
            _ => return None,
        })
    }
    pub(super) fn set_bool(&mut self, key: &str, v: bool) -> bool {
        let slot = match key {
            "persistent" => &mut self.persistent,
            "public" => &mut self.public,
            "public_list" => &mut self.public_list,
            "members_only" => &mut self.members_only,
            "moderated" => &mut self.moderated,
            "members_by_default" => &mut self.members_by_default,
            "password_protected" => &mut self.password_protected,
            "anonymous" => &mut self.anonymous,
            "allow_change_subj" => &mut self.allow_change_subj,
            "allow_private_messages" => &mut self.allow_private_messages,
            "allow_user_invites" => &mut self.allow_user_invites,
            "mam" => &mut self.mam,
            "allow_voice_requests" => &mut self.allow_voice_requests,
            _ => return false,
        };
        *slot = v;
        true
    }
    pub(super) const BOOLS: &'static [&'static str] = &[
        "persistent",
        "public",
        "public_list",
        "members_only",
        "moderated",
        "members_by_default",
        "password_protected",
        "anonymous",
        "allow_change_subj",
        "allow_private_messages",
        "allow_user_invites",
        "mam",
        "allow_voice_requests",
    ];
}

/// One occupant: the real full JID behind a nick.
#[derive(Clone, Debug)]
pub(super) struct Occupant {
    pub(super) nick: String,
    pub(super) jid: FullJid,
    pub(super) role: Role,
    /// The occupant's last presence to the room, without addresses and MUC payloads.
    pub(super) presence: Element,
    /// When it last sent a groupchat message (`min_message_interval`).
    pub(super) last_message: Option<std::time::Instant>,
    /// When the room last heard from it (`ping.rs`).
    pub(super) last_heard: std::time::Instant,
}

/// A groupchat message kept for the history, with when it was sent.
#[derive(Clone, Debug)]
pub(super) struct HistoryEntry {
    pub(super) msg: Element,
    pub(super) stamp: String,
    pub(super) secs: u64,
    pub(super) chars: usize,
}

#[derive(Clone, Debug)]
pub(super) struct Room {
    pub(super) config: RoomConfig,
    /// Bare JID → affiliation (`none` is absent).
    pub(super) affiliations: BTreeMap<String, Affiliation>,
    pub(super) occupants: Vec<Occupant>,
    pub(super) history: VecDeque<HistoryEntry>,
    /// The subject and the nick that set it.
    pub(super) subject: Option<(String, String)>,
    /// The XEP-0421 occupant id secret (stored with the room).
    pub(super) secret: Vec<u8>,
    /// Made new when the room was read back (older stored form): to be saved.
    pub(super) secret_is_new: bool,
    /// Bare JID → when it last asked for voice (seconds), in memory.
    pub(super) voice_requests: HashMap<String, u64>,
    /// Registered nicks (XEP-0045 §7.10): bare JID → nick, stored.
    pub(super) nicks: BTreeMap<String, String>,
    /// The room's vCard (XEP-0054, `vcard.rs`), stored.
    pub(super) vcard: Option<Element>,
    /// Hex SHA-1 of the vCard's photo (empty: none).
    pub(super) avatar_hash: String,
}

impl Room {
    pub(super) fn new(config: RoomConfig) -> Self {
        Room {
            config,
            affiliations: BTreeMap::new(),
            occupants: Vec::new(),
            history: VecDeque::new(),
            subject: None,
            secret: occupant_id::new_secret(),
            secret_is_new: true,
            voice_requests: HashMap::new(),
            nicks: BTreeMap::new(),
            vcard: None,
            avatar_hash: String::new(),
        }
    }
    /// The account that registered `nick` in the room, if any.
    pub(super) fn nick_owner(&self, nick: &str) -> Option<&str> {
        self.nicks
            .iter()
            .find(|(_, n)| n.as_str() == nick)
            .map(|(b, _)| b.as_str())
    }
    /// The XEP-0421 occupant id element of an occupant.
    pub(super) fn occupant_id(&self, jid: &FullJid) -> Element {
        occupant_id::element(&self.secret, &jid.to_bare())
    }
    pub(super) fn affiliation(&self, bare: &str) -> Affiliation {
        self.affiliations
            .get(bare)
            .copied()
            .unwrap_or(Affiliation::None)
    }
    pub(super) fn by_jid(&self, jid: &FullJid) -> Option<usize> {
        self.occupants.iter().position(|o| &o.jid == jid)
    }
    pub(super) fn by_nick(&self, nick: &str) -> Option<usize> {
        self.occupants.iter().position(|o| o.nick == nick)
    }
    pub(super) fn default_role(&self, aff: Affiliation) -> Role {
        match aff {
            Affiliation::Owner | Affiliation::Admin => Role::Moderator,
            Affiliation::Member => Role::Participant,
            Affiliation::None if self.config.moderated && !self.config.members_by_default => {
                Role::Visitor
            }
            Affiliation::None => Role::Participant,
            Affiliation::Outcast => Role::None,
        }
    }
    /// Whether `viewer` sees occupants' real JIDs.
    pub(super) fn sees_jids(&self, viewer: &Occupant) -> bool {
        !self.config.anonymous || viewer.role == Role::Moderator
    }

    pub(super) fn to_stored(&self) -> Element {
        let c = &self.config;
        let mut e = Element::new("room", NS_STORED)
            .with_attr("title", c.title.clone())
            .with_attr("description", c.description.clone())
            .with_attr("password", c.password.clone())
            .with_attr("max_users", c.max_users.to_string())
            .with_attr(
                "voice_request_min_interval",
                c.voice_request_min_interval.to_string(),
            )
            .with_attr("secret", occupant_id::secret_text(&self.secret));
        for key in RoomConfig::BOOLS {
            let v = c.get_bool(key).unwrap_or(false);
            e.set_attr(*key, if v { "true" } else { "false" });
        }
        if let Some((text, by)) = &self.subject {
            e = e.with_child(
                Element::new("subject", NS_STORED)
                    .with_attr("by", by.clone())
                    .with_text(text.clone()),
            );
        }
        for (jid, aff) in &self.affiliations {
            e = e.with_child(
                Element::new("affiliation", NS_STORED)
                    .with_attr("jid", jid.clone())
                    .with_attr("affiliation", aff.as_str()),
            );
        }
        if let Some(v) = &self.vcard {
            e = e.with_child(v.clone());
        }
        for (jid, nick) in &self.nicks {
            e = e.with_child(
                Element::new("nick", NS_STORED)
                    .with_attr("jid", jid.clone())
                    .with_attr("nick", nick.clone()),
            );
        }
        e
    }

    pub(super) fn from_stored(e: &Element) -> Option<Room> {
        if !e.is("room", NS_STORED) {
            return None;
        }
        let mut c = RoomConfig {
            title: e.attr("title").unwrap_or("").to_string(),
            description: e.attr("description").unwrap_or("").to_string(),
            password: e.attr("password").unwrap_or("").to_string(),
            max_users: e
                .attr("max_users")
                .and_then(|m| m.parse().ok())
                .unwrap_or(DEFAULT_MAX_USERS),
            voice_request_min_interval: e
                .attr("voice_request_min_interval")
                .and_then(|m| m.parse().ok())
                .unwrap_or(voice::DEFAULT_VOICE_INTERVAL),
            ..RoomConfig::default()
        };
        for key in RoomConfig::BOOLS {
            if let Some(v) = e.attr(key) {
                c.set_bool(key, v == "true");
            }
        }
        let mut room = Room::new(c);
        if let Some(secret) = e.attr("secret").and_then(occupant_id::secret_from_text) {
            room.secret = secret;
            room.secret_is_new = false;
        }
        if let Some(v) = e.child("vCard", ns::VCARD) {
            room.avatar_hash = crate::vcard::photo_hash(v);
            room.vcard = Some(v.clone());
        }
        if let Some(s) = e.child("subject", NS_STORED) {
            room.subject = Some((s.text(), s.attr("by").unwrap_or("").to_string()));
        }
        for a in e.child_elements() {
            if a.is("affiliation", NS_STORED) {
                if let (Some(j), Some(aff)) = (
                    a.attr("jid"),
                    a.attr("affiliation").and_then(Affiliation::parse),
                ) {
                    room.affiliations.insert(j.to_string(), aff);
                }
            } else if a.is("nick", NS_STORED) {
                if let (Some(j), Some(n)) = (a.attr("jid"), a.attr("nick")) {
                    room.nicks.insert(j.to_string(), n.to_string());
                }
            }
        }
        Some(room)
    }
}
