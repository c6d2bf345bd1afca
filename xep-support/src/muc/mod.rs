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
//! Rooms keep their messages in the server's message archive (one archive
//! per room, `archive.rs`); occupants carry XEP-0421 occupant ids
//! (`occupant_id.rs`); XEP-0424/0425 retractions are in `moderation.rs`;
//! voice requests in `voice.rs`; nick registration (§7.10) in
//! `register.rs`; room vCards and avatars (XEP-0054, XEP-0486) in
//! `vcard.rs`; the room's pings to silent remote occupants in `ping.rs`; mentions that wake members' phones
//! (XEP-0357 through the server's mention hook) in `mentions.rs`.
//!
//! Occupants are local accounts or users of other servers: the server
//! federates the service domain like a host (its own s2s streams and
//! dialback identity), so a remote user's join, messages and presence
//! arrive here as a local user's do, and what the room returns for a
//! remote real JID leaves over s2s from `room@service/nick`. A remote
//! occupant leaves by its server's unavailable presence, or is removed when
//! its server returns an error for the room's stanzas (`route.rs`).
//!
//! The module is a folder: this file holds the options, the [`Muc`] module
//! and the stanzas to the service domain itself; `room.rs` the room model
//! and its stored form; `service.rs` the process-wide rooms and the
//! per-call context; `route.rs` the dispatch of stanzas to rooms and
//! occupants; `join.rs` joins and presence; `message.rs` groupchat
//! messages and invitations; `owner.rs` and `admin.rs` the muc#owner and
//! muc#admin iqs. Each is an `impl Muc` or helpers over the room model.

use crate::element::Element;
use crate::module::{Hooks, Identity, Module, ServerContext};
use crate::ns;
use crate::options::{Kind, ModuleSpec, OptSpec};
use crate::opts::Opts;
use crate::stanza::{error_reply, iq_error, iq_result, Condition, ErrorType, StanzaError};
use jid::{BareJid, FullJid, Jid};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, OnceLock};

mod admin;
mod archive;
mod join;
mod mentions;
mod message;
mod moderation;
mod occupant_id;
mod owner;
mod ping;
mod register;
mod room;
mod route;
mod service;
mod vcard;
mod voice;

use room::*;
use service::*;

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

/// The options of `mod_muc` (ejabberd's).
pub const SPEC: ModuleSpec = ModuleSpec::module(
    "mod_muc",
    &[
        OptSpec::honoured(
            "host",
            Kind::Text,
            "conference.@HOST@",
            "the service domain; `@HOST@` is each served host",
        ),
        OptSpec::honoured(
            "hosts",
            Kind::TextList,
            "",
            "a list of service domains, instead of `host`",
        ),
        OptSpec::honoured(
            "name",
            Kind::Text,
            "Chatrooms",
            "the service's name in disco",
        ),
        OptSpec::honoured("access", Kind::AccessRule, "all", "who may use the service"),
        OptSpec::honoured(
            "access_create",
            Kind::AccessRule,
            "all",
            "who may create rooms",
        ),
        OptSpec::honoured(
            "access_persistent",
            Kind::AccessRule,
            "all",
            "who may make a room persistent",
        ),
        OptSpec::honoured(
            "access_register",
            Kind::AccessRule,
            "all",
            "who may register a nick in a room (jabber:iq:register)",
        ),
        OptSpec::honoured(
            "access_admin",
            Kind::AccessRule,
            "none",
            "service administrators",
        ),
        OptSpec::honoured(
            "history_size",
            Kind::Int {
                min: 0,
                max: u64::MAX,
            },
            "20",
            "messages kept per room",
        ),
        OptSpec::honoured(
            "max_users",
            Kind::Int {
                min: 1,
                max: u64::MAX,
            },
            "200",
            "most occupants of a room",
        ),
        OptSpec::honoured(
            "max_rooms_per_user",
            Kind::Count,
            "infinity",
            "rooms one account may own (create) on a service domain",
        ),
        OptSpec::honoured(
            "max_users_admin_threshold",
            Kind::Int {
                min: 0,
                max: u32::MAX as u64,
            },
            "5",
            "admins and owners who may still enter a full room",
        ),
        OptSpec::honoured(
            "min_message_interval",
            Kind::Number { min: 0.0 },
            "0",
            "seconds between two groupchat messages of one occupant (0: no limit)",
        ),
        OptSpec::honoured(
            "occupant_ping_interval",
            Kind::Timeout,
            "300",
            "silence after which the room pings an occupant of another server (`infinity`: never)",
        ),
        OptSpec::honoured(
            "occupant_ping_timeout",
            Kind::Timeout,
            "30",
            "how long the room waits for that ping's answer before removing the occupant",
        ),
        OptSpec::honoured(
            "max_user_conferences",
            Kind::Int {
                min: 1,
                max: u64::MAX,
            },
            "100",
            "rooms one account may be in at once",
        ),
        OptSpec::honoured(
            "default_room_options",
            Kind::Map,
            "",
            "the configuration of a new room",
        ),
        OptSpec::storage("ram_db_type", Kind::Any),
        OptSpec::ignored(
            "access_mam",
            Kind::Any,
            "who reads room archives (the room's privacy decides)",
        ),
        OptSpec::ignored(
            "cleanup_affiliations_on_start",
            Kind::Any,
            "removing affiliations of gone accounts",
        ),
        OptSpec::ignored("hibernation_timeout", Kind::Any, "room hibernation"),
        OptSpec::ignored("max_captcha_whitelist", Kind::Any, "CAPTCHA"),
        OptSpec::ignored("max_password", Kind::Any, "longest room password"),
        OptSpec::ignored("max_room_desc", Kind::Any, "longest room description"),
        OptSpec::ignored("max_room_id", Kind::Any, "longest room name"),
        OptSpec::ignored("max_room_name", Kind::Any, "longest room title"),
        OptSpec::ignored(
            "max_rooms_discoitems",
            Kind::Any,
            "rooms listed in disco#items",
        ),
        OptSpec::ignored(
            "max_users_presence",
            Kind::Any,
            "occupants whose presence is broadcast",
        ),
        OptSpec::ignored("min_presence_interval", Kind::Any, "presence rate limit"),
        OptSpec::ignored("preload_rooms", Kind::Any, "loading rooms at start"),
        OptSpec::ignored("queue_type", Kind::Any, "queue storage"),
        OptSpec::ignored("regexp_room_id", Kind::Any, "allowed room names"),
        OptSpec::ignored("room_shaper", Kind::Any, "room traffic shaper"),
        OptSpec::ignored("user_message_shaper", Kind::Any, "occupant message shaper"),
        OptSpec::ignored(
            "user_presence_shaper",
            Kind::Any,
            "occupant presence shaper",
        ),
        OptSpec::ignored("vcard", Kind::Any, "the service's vCard"),
    ],
    true,
);

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
    "mam",
    "allow_voice_requests",
    "voice_request_min_interval",
];

/// `mod_muc`.
pub struct Muc {
    /// Service domain templates (`@HOST@` is each served host).
    hosts: Vec<String>,
    name: String,
    access: String,
    access_admin: String,
    access_create: String,
    access_persistent: String,
    access_register: String,
    history_size: usize,
    max_users: usize,
    max_user_conferences: usize,
    /// Rooms one account may own per service domain (`None`: no limit).
    max_rooms_per_user: Option<usize>,
    /// Admins and owners who may enter a room beyond `max_users`.
    max_users_admin_threshold: usize,
    /// Least time between two groupchat messages of one occupant.
    min_message_interval: Option<std::time::Duration>,
    /// Silence after which a remote occupant is pinged (`None`: never).
    occupant_ping_interval: Option<std::time::Duration>,
    /// How long such a ping may go unanswered.
    occupant_ping_timeout: std::time::Duration,
    defaults: RoomConfig,
    /// Room archives: only with `mod_mam` enabled (as in ejabberd).
    mam_enabled: bool,
    /// `mod_mam`'s `archive_expires_after`, for room archives too.
    archive_expires: Option<std::time::Duration>,
}

impl Muc {
    /// Read the options; warnings are for the registry to report.
    pub fn from_opts(opts: &serde_yaml_ng::Value, warnings: &mut Vec<String>) -> Muc {
        let mut o = Opts::new(opts, &SPEC);
        let mut hosts = o.list("hosts");
        if hosts.is_empty() {
            hosts.push(o.text("host"));
        }
        let max_users = (o.uint("max_users") as usize).max(1);
        let mut defaults = RoomConfig {
            max_users,
            ..RoomConfig::default()
        };
        if let Some(v) = o.get("default_room_options") {
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
                            ("voice_request_min_interval", serde_yaml_ng::Value::Number(n))
                                if n.as_u64().is_some() =>
                            {
                                defaults.voice_request_min_interval = n.as_u64().unwrap_or(0)
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
        let muc = Muc {
            hosts,
            name: o.text("name"),
            access: o.text("access"),
            access_admin: o.text("access_admin"),
            access_create: o.text("access_create"),
            access_persistent: o.text("access_persistent"),
            access_register: o.text("access_register"),
            history_size: o.uint("history_size") as usize,
            max_users,
            max_user_conferences: (o.uint("max_user_conferences") as usize).max(1),
            max_rooms_per_user: o
                .count("max_rooms_per_user")
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            max_users_admin_threshold: o.uint("max_users_admin_threshold") as usize,
            min_message_interval: {
                let n = o.number("min_message_interval");
                (n.is_finite() && n > 0.0)
                    .then(|| std::time::Duration::from_secs_f64(n.min(86_400.0)))
            },
            occupant_ping_interval: o
                .timeout("occupant_ping_interval")
                .map(|d| d.max(ping::MIN_PING_INTERVAL)),
            occupant_ping_timeout: o
                .timeout("occupant_ping_timeout")
                .unwrap_or(std::time::Duration::from_secs(86_400))
                .max(ping::MIN_PING_TIMEOUT),
            defaults,
            mam_enabled: false,
            archive_expires: None,
        };
        warnings.extend(o.warnings);
        muc
    }

    /// Room archives (XEP-0313) when `mod_mam` is enabled, with its retention.
    pub fn with_archive(mut self, enabled: bool, expires: Option<std::time::Duration>) -> Muc {
        self.mam_enabled = enabled;
        self.archive_expires = expires;
        self
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

impl Module for Muc {
    fn name(&self) -> &'static str {
        "mod_muc"
    }
    fn hooks(&self) -> Hooks {
        Hooks::SESSION_CLOSED | Hooks::TICK
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

    fn service_address_claimed(&self, ctx: &dyn ServerContext, address: &BareJid) {
        let Some(node) = address.node() else {
            return;
        };
        let service = address.domain().as_str().to_string();
        let mut guard = state().lock().unwrap_or_else(|e| e.into_inner());
        let Some(svc) = guard.get_mut(&service) else {
            return; // not loaded yet: the first stanza loads it from storage
        };
        let c = Ctx {
            ctx,
            service: &service,
        };
        c.reload(svc, node.as_str());
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
        if let Some(node) = to.node() {
            ping::heard_from(svc, node.as_str(), &from);
        }
        // A room archive query: checked here, run without the lock.
        if let (Some(node), None, "iq") = (to.node(), to.resource(), stanza.name.as_str()) {
            if stanza
                .first_child()
                .is_some_and(|p| p.ns == crate::mam::NS_MAM)
            {
                let job = self.mam_prepare(&c, svc, node.as_str(), stanza, &from, &mut out);
                drop(guard);
                if let Some(job) = job {
                    self.mam_run(ctx, job, stanza, &mut out);
                }
                return out;
            }
        }
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

    fn tick(&self, ctx: &dyn ServerContext) {
        self.check_occupants(ctx);
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
                c.drop_room(svc, &node);
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
                    // Room vCards and avatars (XEP-0486).
                    ns::VCARD.to_string(),
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
            mam: false,
            allow_voice_requests: false,
            voice_request_min_interval: 5,
            ..RoomConfig::default()
        });
        room.subject = Some(("hello".into(), "al".into()));
        room.affiliations.insert("a@x".into(), Affiliation::Owner);
        room.affiliations.insert("b@x".into(), Affiliation::Outcast);
        room.nicks.insert("c@x".into(), "cee".into());
        room.vcard = Some(
            Element::new("vCard", ns::VCARD).with_child(
                Element::new("PHOTO", ns::VCARD)
                    .with_child(Element::new("BINVAL", ns::VCARD).with_text("AAEC")),
            ),
        );
        let back = Room::from_stored(&room.to_stored()).unwrap();
        assert_eq!(back.nicks, room.nicks);
        assert_eq!(back.vcard, room.vcard);
        // The hash of bytes 00 01 02.
        assert_eq!(back.avatar_hash, "0c7a623fd2bbc05b06423be359e4021d36e721ad");
        assert_eq!(back.config, room.config);
        assert_eq!(back.subject, room.subject);
        assert_eq!(back.affiliations, room.affiliations);
        // The occupant id secret is kept; a stored form without one gets a
        // new one, marked to be saved.
        assert_eq!(back.secret, room.secret);
        assert!(!back.secret_is_new);
        let mut old = room.to_stored();
        old.remove_attr("secret");
        assert!(Room::from_stored(&old).unwrap().secret_is_new);
    }
}
