//! XEP-0045 Multi-User Chat (`mod_muc`), a service on a domain of its own
//! (`host`, default `conference.@HOST@` for each served host).
//!
//! The server hands the module every stanza addressed to a service domain or
//! a JID at it ([`Module::handle_service_stanza`]); the module answers and
//! returns the stanzas to route (presence of occupants, history, subject,
//! groupchat messages to every occupant's real JID), in order.
//!
//! Rooms live in memory (one map for the whole process, so they outlive a
//! `reload_config`, which rebuilds the modules but keeps the rooms).
//! Persistent rooms (their configuration, affiliations and subject, not
//! their history) are written through to the module store under the service
//! domain (key `room:NODE`), and read back the first time a service domain
//! is used after a start. Temporary rooms vanish when their last occupant
//! leaves.
//!
//! Room occupants are local accounts: rooms' stanzas to remote users are
//! not sent over s2s (the s2s code sends only from served hosts), and remote
//! servers cannot open streams to the service domain.

use crate::element::Element;
use crate::module::{Identity, Module, ServerContext};
use crate::ns;
use crate::stanza::{error_reply, iq_error, iq_result, ErrorType, StanzaError};
use jid::{BareJid, FullJid, Jid};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, OnceLock};

pub const NS_MUC: &str = "http://jabber.org/protocol/muc";
pub const NS_MUC_USER: &str = "http://jabber.org/protocol/muc#user";
pub const NS_MUC_ADMIN: &str = "http://jabber.org/protocol/muc#admin";
pub const NS_MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";
const NS_ROOMCONFIG: &str = "http://jabber.org/protocol/muc#roomconfig";
const NS_ROOMINFO: &str = "http://jabber.org/protocol/muc#roominfo";
/// The namespace of a room as stored.
const NS_STORED: &str = "urn:rookery:muc:room";
/// Module name in the store.
const MODULE: &str = "mod_muc";

/// ejabberd's `history_size` default.
pub const DEFAULT_HISTORY: usize = 20;
/// ejabberd's `max_users` default.
pub const DEFAULT_MAX_USERS: usize = 200;
/// ejabberd's `max_user_conferences` default: rooms one account may be in.
pub const DEFAULT_MAX_USER_CONFERENCES: usize = 100;
/// Forwarded iqs between occupants waiting for their answer, at most.
const PENDING_IQS: usize = 1000;

/// Options of `mod_muc` (those not implemented are accepted and ignored, for
/// ejabberd configurations).
pub const OPTIONS: &[&str] = &[
    "host",
    "hosts",
    "name",
    "access",
    "access_admin",
    "access_create",
    "access_persistent",
    "history_size",
    "max_users",
    "max_user_conferences",
    "default_room_options",
    "db_type",
    "ram_db_type",
];

/// Room options of `default_room_options` this module knows.
const ROOM_OPTIONS: &[&str] = &[
    "allow_change_subj",
    "allow_private_messages",
    "allow_user_invites",
    "anonymous",
    "max_users",
    "members_by_default",
    "members_only",
    "moderated",
    "password_protected",
    "password",
    "persistent",
    "public",
    "public_list",
    "title",
    "description",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Affiliation {
    Outcast,
    None,
    Member,
    Admin,
    Owner,
}

impl Affiliation {
    fn as_str(self) -> &'static str {
        match self {
            Affiliation::Outcast => "outcast",
            Affiliation::None => "none",
            Affiliation::Member => "member",
            Affiliation::Admin => "admin",
            Affiliation::Owner => "owner",
        }
    }
    fn parse(s: &str) -> Option<Self> {
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
enum Role {
    None,
    Visitor,
    Participant,
    Moderator,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::None => "none",
            Role::Visitor => "visitor",
            Role::Participant => "participant",
            Role::Moderator => "moderator",
        }
    }
    fn parse(s: &str) -> Option<Self> {
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
struct RoomConfig {
    title: String,
    description: String,
    persistent: bool,
    public: bool,
    public_list: bool,
    members_only: bool,
    moderated: bool,
    members_by_default: bool,
    password_protected: bool,
    password: String,
    /// Semi-anonymous: real JIDs only for moderators (`whois` = moderators).
    anonymous: bool,
    allow_change_subj: bool,
    allow_private_messages: bool,
    allow_user_invites: bool,
    max_users: usize,
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
            max_users: DEFAULT_MAX_USERS,
        }
    }
}

impl RoomConfig {
    fn get_bool(&self, key: &str) -> Option<bool> {
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
            _ => return None,
        })
    }
    fn set_bool(&mut self, key: &str, v: bool) -> bool {
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
            _ => return false,
        };
        *slot = v;
        true
    }
    const BOOLS: &'static [&'static str] = &[
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
    ];
}

/// One occupant: the real full JID behind a nick.
#[derive(Clone, Debug)]
struct Occupant {
    nick: String,
    jid: FullJid,
    role: Role,
    /// The occupant's last presence to the room, without addresses and MUC payloads.
    presence: Element,
}

/// A groupchat message kept for the history, with when it was sent.
#[derive(Clone, Debug)]
struct HistoryEntry {
    msg: Element,
    stamp: String,
    secs: u64,
    chars: usize,
}

#[derive(Clone, Debug)]
struct Room {
    config: RoomConfig,
    /// Bare JID → affiliation (`none` is absent).
    affiliations: BTreeMap<String, Affiliation>,
    occupants: Vec<Occupant>,
    history: VecDeque<HistoryEntry>,
    /// The subject and the nick that set it.
    subject: Option<(String, String)>,
}

impl Room {
    fn new(config: RoomConfig) -> Self {
        Room {
            config,
            affiliations: BTreeMap::new(),
            occupants: Vec::new(),
            history: VecDeque::new(),
            subject: None,
        }
    }
    fn affiliation(&self, bare: &str) -> Affiliation {
        self.affiliations
            .get(bare)
            .copied()
            .unwrap_or(Affiliation::None)
    }
    fn by_jid(&self, jid: &FullJid) -> Option<usize> {
        self.occupants.iter().position(|o| &o.jid == jid)
    }
    fn by_nick(&self, nick: &str) -> Option<usize> {
        self.occupants.iter().position(|o| o.nick == nick)
    }
    fn default_role(&self, aff: Affiliation) -> Role {
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
    fn sees_jids(&self, viewer: &Occupant) -> bool {
        !self.config.anonymous || viewer.role == Role::Moderator
    }

    fn to_stored(&self) -> Element {
        let c = &self.config;
        let mut e = Element::new("room", NS_STORED)
            .with_attr("title", c.title.clone())
            .with_attr("description", c.description.clone())
            .with_attr("password", c.password.clone())
            .with_attr("max_users", c.max_users.to_string());
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
        e
    }

    fn from_stored(e: &Element) -> Option<Room> {
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
            ..RoomConfig::default()
        };
        for key in RoomConfig::BOOLS {
            if let Some(v) = e.attr(key) {
                c.set_bool(key, v == "true");
            }
        }
        let mut room = Room::new(c);
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
            }
        }
        Some(room)
    }
}

/// An iq passed on from one occupant to another, waiting for its answer.
struct Pending {
    /// The requester's id.
    id: String,
    /// The requester's real full JID.
    requester: String,
    /// Where it went (the occupant's real full JID, or bare JID for vCards).
    addressee: String,
    /// The addressee's nick (the answer comes from it).
    nick: String,
}

/// The rooms of one service domain.
#[derive(Default)]
struct Service {
    loaded: bool,
    rooms: BTreeMap<String, Room>,
    /// Iqs passed on between occupants, by the room's id.
    pending: HashMap<String, Pending>,
    pending_order: VecDeque<String>,
    next_id: u64,
}

/// Every service domain's rooms, for the whole process.
fn state() -> &'static Mutex<HashMap<String, Service>> {
    static STATE: OnceLock<Mutex<HashMap<String, Service>>> = OnceLock::new();
    STATE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// `mod_muc`.
pub struct Muc {
    /// Service domain templates (`@HOST@` is each served host).
    hosts: Vec<String>,
    name: String,
    access: String,
    access_admin: String,
    access_create: String,
    access_persistent: String,
    history_size: usize,
    max_users: usize,
    max_user_conferences: usize,
    defaults: RoomConfig,
}

impl Muc {
    /// Read the options; warnings are for the registry to report.
    pub fn from_opts(opts: &serde_yaml_ng::Value, warnings: &mut Vec<String>) -> Muc {
        let get = |k: &str| opts.as_mapping().and_then(|m| m.get(k));
        let string = |k: &str, default: &str, warnings: &mut Vec<String>| match get(k) {
            None => default.to_string(),
            Some(serde_yaml_ng::Value::String(s)) => s.clone(),
            Some(_) => {
                warnings.push(format!("option {k}: expected a string; using {default}"));
                default.to_string()
            }
        };
        let uint = |k: &str, default: usize, warnings: &mut Vec<String>| match get(k) {
            None => default,
            Some(serde_yaml_ng::Value::Number(n)) if n.as_u64().is_some() => {
                n.as_u64().unwrap_or(0) as usize
            }
            Some(_) => {
                warnings.push(format!(
                    "option {k}: expected a non-negative number; using {default}"
                ));
                default
            }
        };
        let mut hosts = Vec::new();
        if let Some(serde_yaml_ng::Value::Sequence(list)) = get("hosts") {
            for h in list {
                match h.as_str() {
                    Some(h) => hosts.push(h.to_string()),
                    None => warnings.push("option hosts: expected a list of domains".into()),
                }
            }
        }
        if hosts.is_empty() {
            hosts.push(string("host", "conference.@HOST@", warnings));
        }
        let max_users = uint("max_users", DEFAULT_MAX_USERS, warnings).max(1);
        let mut defaults = RoomConfig {
            max_users,
            ..RoomConfig::default()
        };
        if let Some(v) = get("default_room_options") {
            match v.as_mapping() {
                Some(map) => {
                    for (k, v) in map {
                        let k = k.as_str().unwrap_or("?");
                        match (k, v) {
                            ("title", serde_yaml_ng::Value::String(s)) => defaults.title = s.clone(),
                            ("description", serde_yaml_ng::Value::String(s)) => {
                                defaults.description = s.clone()
                            }
                            ("password", serde_yaml_ng::Value::String(s)) => {
                                defaults.password = s.clone()
                            }
                            ("max_users", serde_yaml_ng::Value::Number(n))
                                if n.as_u64().is_some_and(|n| n > 0) =>
                            {
                                defaults.max_users =
                                    (n.as_u64().unwrap_or(1) as usize).min(max_users)
                            }
                            (k, serde_yaml_ng::Value::Bool(b))
                                if RoomConfig::BOOLS.contains(&k) =>
                            {
                                defaults.set_bool(k, *b);
                            }
                            (k, _) if ROOM_OPTIONS.contains(&k) => warnings.push(format!(
                                "option default_room_options: bad value for {k}; using the default"
                            )),
                            (k, _) => warnings.push(format!(
                                "option default_room_options: room option {k} is not supported and is ignored"
                            )),
                        }
                    }
                }
                None => warnings
                    .push("option default_room_options: expected a map of room options".into()),
            }
        }
        Muc {
            hosts,
            name: string("name", "Chatrooms", warnings),
            access: string("access", "all", warnings),
            access_admin: string("access_admin", "none", warnings),
            access_create: string("access_create", "all", warnings),
            access_persistent: string("access_persistent", "all", warnings),
            history_size: uint("history_size", DEFAULT_HISTORY, warnings),
            max_users,
            max_user_conferences: uint(
                "max_user_conferences",
                DEFAULT_MAX_USER_CONFERENCES,
                warnings,
            )
            .max(1),
            defaults,
        }
    }

    /// Whether the access rule allows `who` (`all` always, `none` never).
    fn allows(ctx: &dyn ServerContext, rule: &str, who: &Jid) -> bool {
        match rule {
            "all" => true,
            "none" => false,
            _ => match who.node() {
                Some(n) => ctx.access_allows(rule, Some((n.as_str(), who.domain().as_str())), None),
                None => false,
            },
        }
    }
}

/// Collects the stanzas to route.
type Out = Vec<Element>;

fn status(code: u16) -> Element {
    Element::new("status", NS_MUC_USER).with_attr("code", code.to_string())
}

fn error_to(stanza: &Element, e: StanzaError) -> Option<Element> {
    if stanza.attr("type") == Some("error")
        || (stanza.name == "iq" && stanza.attr("type") == Some("result"))
    {
        return None;
    }
    Some(if stanza.name == "iq" {
        iq_error(stanza, &e)
    } else {
        error_reply(stanza, &e)
    })
}

fn is_true(v: &str) -> bool {
    v == "1" || v == "true"
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A data form field.
fn field(var: &str, kind: &str, label: &str, values: &[&str]) -> Element {
    let mut f = Element::new("field", ns::DATA_FORMS)
        .with_attr("var", var)
        .with_attr("type", kind);
    if !label.is_empty() {
        f.set_attr("label", label);
    }
    for v in values {
        f = f.with_child(Element::new("value", ns::DATA_FORMS).with_text(*v));
    }
    f
}

fn bool_str(b: bool) -> &'static str {
    if b {
        "1"
    } else {
        "0"
    }
}

/// The occupant's presence as the room keeps it: no addresses, no MUC payloads.
fn stored_presence(stanza: &Element) -> Element {
    let mut p = Element::new("presence", ns::CLIENT);
    for c in stanza.child_elements() {
        if c.ns == NS_MUC || c.ns == NS_MUC_USER {
            continue;
        }
        p = p.with_child(c.clone());
    }
    p
}

/// What a processing step needs about the service it runs in.
struct Ctx<'a> {
    ctx: &'a dyn ServerContext,
    service: &'a str,
}

impl Ctx<'_> {
    fn room_jid(&self, node: &str) -> String {
        format!("{node}@{}", self.service)
    }

    fn save(&self, node: &str, room: &Room) {
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

    fn forget(&self, node: &str) {
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

    fn load(&self, svc: &mut Service) {
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

    /// The presence of `occ` as `viewer` sees it.
    fn presence_of(
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
        p.with_child(x)
    }

    /// The unavailable presence of a leaving occupant, as `viewer` sees it.
    #[allow(clippy::too_many_arguments)]
    fn unavailable_of(
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
        p.with_child(x)
    }

    /// Occupant `idx` leaves (kicked, banned or gone); everyone is told.
    #[allow(clippy::too_many_arguments)]
    fn remove_occupant(
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
    fn broadcast_presence(&self, node: &str, room: &Room, idx: usize, out: &mut Out) {
        let occ = &room.occupants[idx];
        for viewer in room
            .occupants
            .iter()
            .filter(|v| v.jid == occ.jid || v.nick != occ.nick)
        {
            out.push(self.presence_of(node, room, occ, viewer, &[]));
        }
    }

    fn subject_message(&self, node: &str, room: &Room, to: &FullJid) -> Element {
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
    fn room_notice(&self, node: &str, room: &Room, codes: &[u16], out: &mut Out) {
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

impl Module for Muc {
    fn name(&self) -> &'static str {
        "mod_muc"
    }

    fn service_domains(&self, hosts: &[String]) -> Vec<(String, String)> {
        let mut v = Vec::new();
        for host in hosts {
            for t in &self.hosts {
                let domain = t.replace("@HOST@", host).to_lowercase();
                if !v.iter().any(|(d, _)| d == &domain) {
                    v.push((domain, host.clone()));
                }
            }
        }
        v
    }

    fn handle_service_stanza(&self, ctx: &dyn ServerContext, stanza: &Element) -> Vec<Element> {
        let (Some(to), Some(from)) = (
            stanza.attr("to").and_then(|t| Jid::new(t).ok()),
            stanza.attr("from").and_then(|f| Jid::new(f).ok()),
        ) else {
            return Vec::new();
        };
        let service = to.domain().as_str().to_string();
        let mut out = Vec::new();
        if !Muc::allows(ctx, &self.access, &from) {
            out.extend(error_to(stanza, StanzaError::forbidden()));
            return out;
        }
        let mut guard = state().lock().unwrap_or_else(|e| e.into_inner());
        let svc = guard.entry(service.clone()).or_default();
        let c = Ctx {
            ctx,
            service: &service,
        };
        c.load(svc);
        match (to.node(), to.resource()) {
            (None, None) => self.to_service(&c, svc, stanza, &from, &mut out),
            (None, Some(_)) => out.extend(error_to(stanza, StanzaError::service_unavailable())),
            (Some(node), None) => self.to_room(&c, svc, node.as_str(), stanza, &from, &mut out),
            (Some(node), Some(nick)) => self.to_occupant(
                &c,
                svc,
                node.as_str(),
                nick.as_str(),
                stanza,
                &from,
                &mut out,
            ),
        }
        out
    }

    fn session_closed(&self, ctx: &dyn ServerContext, jid: &FullJid) {
        let mut out = Vec::new();
        let mut guard = state().lock().unwrap_or_else(|e| e.into_inner());
        for (service, svc) in guard.iter_mut() {
            let c = Ctx { ctx, service };
            let mut gone = Vec::new();
            for (node, room) in svc.rooms.iter_mut() {
                if let Some(idx) = room.by_jid(jid) {
                    c.remove_occupant(node, room, idx, &[], None, None, &mut out);
                    if room.occupants.is_empty() && !room.config.persistent {
                        gone.push(node.clone());
                    }
                }
            }
            for node in gone {
                svc.rooms.remove(&node);
            }
        }
        drop(guard);
        ctx.route_ordered(out);
    }
}

impl Muc {
    /// Stanzas to the service domain itself.
    fn to_service(&self, c: &Ctx<'_>, svc: &Service, stanza: &Element, from: &Jid, out: &mut Out) {
        let _ = from;
        if stanza.name != "iq" {
            if stanza.name == "message" {
                out.extend(error_to(stanza, StanzaError::service_unavailable()));
            }
            return;
        }
        let kind = stanza.attr("type").unwrap_or("");
        if kind != "get" && kind != "set" {
            return;
        }
        let Some(payload) = stanza.first_child() else {
            out.extend(error_to(stanza, StanzaError::bad_request()));
            return;
        };
        let reply = if kind == "get" && payload.is("query", ns::DISCO_INFO) {
            if payload.attr("node").is_some() {
                iq_error(stanza, &StanzaError::item_not_found())
            } else {
                let ids = vec![Identity {
                    category: "conference".into(),
                    kind: "text".into(),
                    name: Some(self.name.clone()),
                }];
                let features = vec![
                    NS_MUC.to_string(),
                    ns::DISCO_INFO.to_string(),
                    ns::DISCO_ITEMS.to_string(),
                ];
                iq_result(stanza, Some(crate::disco::info(ids, features)))
            }
        } else if kind == "get" && payload.is("query", ns::DISCO_ITEMS) {
            let mut q = Element::new("query", ns::DISCO_ITEMS);
            for (node, room) in &svc.rooms {
                if !room.config.public {
                    continue;
                }
                let name = if room.config.title.is_empty() {
                    node.clone()
                } else {
                    room.config.title.clone()
                };
                q = q.with_child(
                    Element::new("item", ns::DISCO_ITEMS)
                        .with_attr("jid", c.room_jid(node))
                        .with_attr("name", name),
                );
            }
            iq_result(stanza, Some(q))
        } else {
            iq_error(stanza, &StanzaError::service_unavailable())
        };
        out.push(reply);
    }

    /// Stanzas to a room's bare JID.
    fn to_room(
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
                    StanzaError::new(ErrorType::Modify, "jid-malformed"),
                ));
            }
            "message" => {
                if kind == "error" {
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
                let reply = match (payload.ns.as_str(), payload.name.as_str()) {
                    (ns::DISCO_INFO, "query") if kind == "get" => {
                        let room = &svc.rooms[node];
                        Ok(Some(self.room_info(node, room)))
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

    fn room_info(&self, node: &str, room: &Room) -> Element {
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
        ];
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
            ));
        q = q.with_child(form);
        q
    }

    /// Stanzas to `room@service/nick`.
    #[allow(clippy::too_many_arguments)]
    fn to_occupant(
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
        if stanza.name == "iq" && (kind == "result" || kind == "error") {
            // An answer to an iq the room passed on (it may come from a bare JID).
            self.occupant_iq_answer(c, svc, node, stanza, from, out);
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
                        svc.rooms.remove(node);
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

    /// An iq to an occupant is passed on to its real JID (vCards to the
    /// bare JID), under an id of the room's; the answer comes back the same way.
    #[allow(clippy::too_many_arguments)]
    fn occupant_iq(
        &self,
        c: &Ctx<'_>,
        svc: &mut Service,
        node: &str,
        nick: &str,
        stanza: &Element,
        from: &FullJid,
        out: &mut Out,
    ) {
        let Some(room) = svc.rooms.get(node) else {
            out.extend(error_to(stanza, StanzaError::item_not_found()));
            return;
        };
        let Some(me) = room.by_jid(from).map(|i| room.occupants[i].nick.clone()) else {
            out.extend(error_to(stanza, StanzaError::not_acceptable()));
            return;
        };
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
    fn occupant_iq_answer(
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

    /// Available presence to `room/nick`: a join, a nick change or a presence update.
    #[allow(clippy::too_many_arguments)]
    fn presence_available(
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
                // Nick change (§7.6).
                if room.by_nick(nick).is_some() {
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
            let mut room = Room::new(self.defaults.clone());
            room.affiliations.insert(bare.clone(), Affiliation::Owner);
            svc.rooms.insert(node.to_string(), room);
        }
        let room = svc.rooms.get_mut(node).expect("exists");
        let aff = room.affiliation(&bare);
        let service_admin = Muc::allows(c.ctx, &self.access_admin, &Jid::from(from.clone()));
        let refuse = if nick.is_empty() {
            Some(StanzaError::new(ErrorType::Modify, "jid-malformed"))
        } else if aff == Affiliation::Outcast && !service_admin {
            Some(StanzaError::forbidden())
        } else if room.config.members_only && aff < Affiliation::Member && !service_admin {
            Some(StanzaError::new(ErrorType::Auth, "registration-required"))
        } else if room
            .by_nick(nick)
            .is_some_and(|i| room.occupants[i].jid.to_bare() != from.to_bare())
        {
            // The same account may join under its nick from several
            // clients (multi-session nicks, as ejabberd allows).
            Some(StanzaError::conflict())
        } else if room.occupants.len() >= room.config.max_users.min(self.max_users)
            && aff < Affiliation::Admin
            && !service_admin
        {
            Some(StanzaError::new(ErrorType::Wait, "service-unavailable"))
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
        });
        let idx = room.occupants.len() - 1;
        self.join_sequence(c, node, room, idx, muc_x, created, out);
    }

    /// What a joining occupant gets (§7.2.3–§7.2.15): the others' presence,
    /// its own (others get it too), the history, then the subject.
    #[allow(clippy::too_many_arguments)]
    fn join_sequence(
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
        // History (§7.2.15), limited by the request.
        let h = muc_x.and_then(|x| x.child("history", NS_MUC));
        let num = |k: &str| {
            h.and_then(|h| h.attr(k))
                .and_then(|v| v.parse::<u64>().ok())
        };
        let max_stanzas = num("maxstanzas").map(|n| n as usize).unwrap_or(usize::MAX);
        let max_chars = num("maxchars").map(|n| n as usize).unwrap_or(usize::MAX);
        let since = num("seconds").map(|s| now_secs().saturating_sub(s));
        let mut picked: Vec<&HistoryEntry> = Vec::new();
        let mut chars = 0usize;
        for e in room.history.iter().rev() {
            if picked.len() >= max_stanzas.min(self.history_size) {
                break;
            }
            if since.is_some_and(|s| e.secs < s) {
                break;
            }
            chars += e.chars;
            if chars > max_chars {
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

    /// A groupchat message to the room.
    fn groupchat(
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
        let mut m = stanza.clone();
        m.set_attr("from", format!("{}/{}", c.room_jid(node), me.nick));
        m.remove_attr("to");
        if body.is_some() && self.history_size > 0 {
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
        for o in &room.occupants {
            let mut copy = m.clone();
            copy.set_attr("to", o.jid.to_string());
            out.push(copy);
        }
    }

    /// A mediated invitation (§7.8.2) or a decline (§7.8.3) sent through the room.
    #[allow(clippy::too_many_arguments)]
    fn invite_or_decline(
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

    /// muc#owner: the configuration form, its submission, destroying the room.
    #[allow(clippy::too_many_arguments)]
    fn owner_iq(
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
            svc.rooms.remove(node);
            c.forget(node);
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
            svc.rooms.remove(node);
        }
        Ok(None)
    }

    fn config_form(&self, node: &str, room: &Room) -> Element {
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
            .with_child(max)
    }

    /// muc#admin: roles (kick, voice, moderator) and affiliations (ban,
    /// member, admin, owner), and their lists.
    #[allow(clippy::too_many_arguments)]
    fn admin_iq(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_and_service_domains() {
        let opts: serde_yaml_ng::Value = serde_yaml_ng::from_str(
            "host: muc.@HOST@\nhistory_size: 5\ndefault_room_options: {persistent: true, public: false, bogus: 1}\n",
        )
        .unwrap();
        let mut w = Vec::new();
        let m = Muc::from_opts(&opts, &mut w);
        assert_eq!(m.history_size, 5);
        assert!(m.defaults.persistent && !m.defaults.public);
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(
            m.service_domains(&["a.org".into(), "b.org".into()]),
            vec![
                ("muc.a.org".to_string(), "a.org".to_string()),
                ("muc.b.org".to_string(), "b.org".to_string())
            ]
        );
    }

    #[test]
    fn stored_room_round_trips() {
        let mut room = Room::new(RoomConfig {
            title: "T".into(),
            persistent: true,
            members_only: true,
            ..RoomConfig::default()
        });
        room.subject = Some(("hello".into(), "al".into()));
        room.affiliations.insert("a@x".into(), Affiliation::Owner);
        room.affiliations.insert("b@x".into(), Affiliation::Outcast);
        let back = Room::from_stored(&room.to_stored()).unwrap();
        assert_eq!(back.config, room.config);
        assert_eq!(back.subject, room.subject);
        assert_eq!(back.affiliations, room.affiliations);
    }
}
