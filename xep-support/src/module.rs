//! The one trait every extension module implements, and what the server
//! offers modules in return.
//!
//! Hooks, all with defaults so a module implements only what it uses (the
//! per-event ones — filters, message, session and presence hooks, room
//! mentions, ticks — it also names in [`Module::hooks`], so the server calls
//! them only on the modules that implement them; see [`crate::hooks`]):
//! - iqs addressed to the server, dispatched by payload namespace
//!   ([`Module::server_iq_namespaces`], [`Module::handle_server_iq`]), and
//!   iq results/errors addressed to the server ([`Module::handle_iq_response`],
//!   for queries a module sent itself, e.g. caps disco#info);
//! - iqs addressed to an account's bare JID, dispatched by payload namespace
//!   ([`Module::account_iq_namespaces`], [`Module::handle_account_iq`]): the
//!   server answers these on the account's behalf (vCard, private storage,
//!   blocking, PEP, last activity, disco#info of the account). The module
//!   decides who may ask: `req.from` may be the owner or anyone else;
//! - disco features/identities of the server and of accounts, and the
//!   account's disco#items;
//! - stanza filters ([`Module::filter_inbound`], [`Module::filter_outbound`])
//!   run by the router for every stanza that reaches a local account from
//!   another entity, and every stanza a local account sends to another
//!   entity (blocking, avatar hash in presence). Filters run on the hot path:
//!   they must answer from memory;
//! - session events: bound, ended, and available presence broadcast;
//! - service domains ([`Module::service_domains`],
//!   [`Module::handle_service_stanza`]): a module that is an XMPP service on
//!   a domain of its own (mod_muc's `conference.HOST`) gets every stanza
//!   addressed to that domain or a JID at it, and returns what to route.
//!
//! [`ServerContext`] gives modules the domains, routing, read access to the
//! roster (subscription states) and to sessions, and each module's own
//! key/value store per account ([`ServerContext::store`], see
//! [`crate::store`]; writes are durable when they return), and the message
//! archives ([`ServerContext::archive`], see [`crate::archive`]).
//! Hooks: iqs addressed to the server (dispatched by payload namespace),
//! disco features and identities, extra stream features, session events, and
//! three message hooks (a message left a local session; a message for a
//! local account is about to be delivered; it was delivered to some of the
//! account's resources). Message hooks return further stanzas for the server
//! to route right after (in order, on the caller's task), never route
//! themselves. Later issues add more filters and account-addressed iqs here,
//! next to these, so every module keeps one shape.

use crate::element::Element;
pub use crate::hooks::Hooks;
use crate::stanza::StanzaError;
pub use crate::store::{KeyRange, StoreError, StoreErrorKind};
use jid::{BareJid, FullJid, Jid};
use std::net::IpAddr;

/// A disco identity (XEP-0030).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub category: String,
    pub kind: String,
    pub name: Option<String>,
}

/// An iq addressed to the server or to an account, as a module sees it.
pub struct IqRequest<'a> {
    /// The whole iq, with `from` already stamped by the server.
    pub stanza: &'a Element,
    /// The iq's one child element.
    pub payload: &'a Element,
    /// `true` for `set`, `false` for `get`.
    pub is_set: bool,
    /// The authenticated sender.
    pub from: &'a FullJid,
    /// The addressee: the server's domain, or an account's bare JID.
    pub to: &'a Jid,
}

impl IqRequest<'_> {
    /// For an account-addressed iq: the account (the `to` bare JID).
    pub fn account(&self) -> BareJid {
        self.to.to_bare()
    }
    /// Whether the sender is the account the iq is addressed to.
    pub fn from_owner(&self) -> bool {
        self.from.to_bare() == self.to.to_bare()
    }
}

/// An iq a client sends before it authenticated (XEP-0077 registration):
/// there is no `from`; the module sees the stream's host and the client's
/// address instead.
pub struct PreAuthIq<'a> {
    /// The whole iq as the client sent it.
    pub stanza: &'a Element,
    /// The iq's one child element.
    pub payload: &'a Element,
    /// `true` for `set`, `false` for `get`.
    pub is_set: bool,
    /// The host the stream was opened for.
    pub host: &'a str,
    /// The client's IP address.
    pub ip: IpAddr,
    /// The XEP-0445 invitation token this stream presented (`<preauth/>`,
    /// checked by `mod_invites`), kept for the stream's registration.
    pub preauth: &'a std::sync::Mutex<Option<String>>,
}

/// Why an account operation through [`ServerContext`] failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccountError {
    /// The account already exists.
    Exists,
    /// No such account.
    NotFound,
    /// The user name or password is not acceptable (the reason).
    Invalid(String),
    /// Storage or another internal failure (the reason, for logs).
    Failed(String),
}

impl AccountError {
    /// The stanza error a client gets for it (a failure is logged).
    pub fn stanza_error(self) -> StanzaError {
        use crate::stanza::{Condition, ErrorType};
        match self {
            AccountError::Exists => StanzaError::new(ErrorType::Cancel, Condition::Conflict)
                .with_text("The user name is already taken"),
            AccountError::NotFound => StanzaError::item_not_found(),
            AccountError::Invalid(why) => {
                StanzaError::new(ErrorType::Modify, Condition::NotAcceptable).with_text(why)
            }
            AccountError::Failed(why) => {
                tracing::error!("account operation failed: {why}");
                StanzaError::internal_server_error()
            }
        }
    }
}

/// The outcome of an administration command run through
/// [`ServerContext::run_command`] (the registry behind `rookery ctl`):
/// ejabberdctl's exit code (0 success) and its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandOutcome {
    pub code: i32,
    pub output: String,
}

/// Top-level configuration values some modules read.
#[derive(Clone, Debug, Default)]
pub struct Globals {
    /// `registration_timeout`: minimum time between two registrations from
    /// one IP address (`None` = no limit).
    pub registration_timeout: Option<std::time::Duration>,
    /// The server's `data_dir` (modules keep files under it, e.g. uploads).
    pub data_dir: std::path::PathBuf,
    /// The built-in invitation landing page's base URL
    /// (`https://@HOST@:5443/invites`): an `ejabberd_http` listener's
    /// `mod_invites` request handler, if any.
    pub invites_url: Option<String>,
}

/// Stanzas produced one at a time (see [`ServerContext::route_stream`]).
pub type StanzaStream = Box<dyn Iterator<Item = Element> + Send>;

/// What a module answers to an iq: a result payload or a stanza error.
pub type IqResult = Result<Option<Element>, StanzaError>;

/// A roster subscription state, from the roster owner's point of view
/// (RFC 6121 §2.1.2.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subscription {
    None,
    /// The owner receives the contact's presence.
    To,
    /// The contact receives the owner's presence.
    From,
    Both,
}

impl Subscription {
    /// The contact receives the owner's presence (`from` or `both`).
    pub fn has_from(self) -> bool {
        matches!(self, Subscription::From | Subscription::Both)
    }
    /// The owner receives the contact's presence (`to` or `both`).
    pub fn has_to(self) -> bool {
        matches!(self, Subscription::To | Subscription::Both)
    }
}

/// A bound session, as modules see it.
#[derive(Clone, Debug)]
pub struct SessionInfo {
    pub jid: FullJid,
    /// Whether it sent available presence.
    pub available: bool,
    pub priority: i32,
    /// Its last available broadcast presence.
    pub presence: Option<Element>,
    /// A XEP-0198 session whose connection is gone, waiting for resumption.
    pub detached: bool,
}

/// What a stanza filter decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Deliver (possibly modified, for outbound filters).
    Pass,
    /// Drop silently.
    Drop,
    /// Do not deliver; return this error to the sender (never for errors
    /// and presence, which are dropped instead).
    Reject(StanzaError),
}

/// What the server offers modules.
/// An account iq's answer with the stanzas the server routes around it,
/// in order: `before`, then the answer, then `after`.
pub struct OrderedAnswer {
    pub before: Vec<Element>,
    pub answer: IqResult,
    pub after: Vec<Element>,
}

impl OrderedAnswer {
    /// Just the answer.
    pub fn answer(answer: IqResult) -> OrderedAnswer {
        OrderedAnswer {
            before: Vec::new(),
            answer,
            after: Vec::new(),
        }
    }
}

pub trait ServerContext: Send + Sync {
    /// The server itself as `Any`, for handlers the server's core registers
    /// beside the modules (the roster iq), which reach its own state;
    /// `None` for other implementations (tests' mocks). Modules of this
    /// crate never use it.
    fn core(&self) -> Option<&dyn std::any::Any> {
        None
    }
    /// The domains this server serves.
    fn hosts(&self) -> Vec<String>;
    /// Every disco feature the server advertises (core and modules).
    fn disco_features(&self) -> Vec<String>;
    /// Every disco identity of the server.
    fn disco_identities(&self) -> Vec<Identity>;
    /// XEP-0128 forms in the server's disco#info (from the modules).
    fn disco_forms(&self) -> Vec<Element> {
        Vec::new()
    }
    /// The server's disco#items for its domain `host`: the domains of its
    /// connected components and of the modules' services on that host
    /// (e.g. mod_muc's `conference.HOST`).
    fn disco_items(&self, _host: &str) -> Vec<String> {
        Vec::new()
    }
    /// Deliver a stanza that the server originates (it carries its own
    /// `from`). Routing happens on a task of its own, after the caller returns.
    fn route(&self, stanza: Element);
    /// Like [`ServerContext::route`], but the sending account's outbound
    /// filters are not run (e.g. the unavailable presence sent to a contact
    /// being blocked).
    fn route_unfiltered(&self, stanza: Element);
    /// Route these stanzas one after the other, in order, on one task of
    /// their own (after the caller returns): for a module whose stanzas must
    /// reach each recipient in sequence (a MUC room's presence, history,
    /// subject) and that has no caller to return them to.
    fn route_ordered(&self, stanzas: Vec<Element>) {
        for s in stanzas {
            self.route(s);
        }
    }
    /// Route a stream of stanzas that may be long (a pubsub node's
    /// notifications to every subscriber) without collecting it: the
    /// server pulls the stanzas one at a time on a task of its own and
    /// routes them in order; everything given to the same `queue` (e.g.
    /// a service domain) is routed in the order given, across calls, so
    /// each recipient gets one publisher's notifications in order. The
    /// default collects and calls [`ServerContext::route_ordered`].
    fn route_stream(&self, queue: &str, stanzas: StanzaStream) {
        let _ = queue;
        self.route_ordered(stanzas.collect());
    }
    /// Disco features of every account (from the enabled modules).
    fn account_disco_features(&self) -> Vec<String>;
    /// Disco identities of every account.
    fn account_disco_identities(&self) -> Vec<Identity>;
    /// disco#items of `account` as `from` may see them (from the modules).
    fn account_disco_items(&self, account: &BareJid, from: &Jid) -> Vec<Element>;
    /// Whether the local account exists.
    fn account_exists(&self, account: &BareJid) -> bool;
    /// The subscription between `owner` and `contact` in `owner`'s roster
    /// (`None` when the contact is not in it). From memory for accounts
    /// with sessions.
    fn subscription(&self, owner: &BareJid, contact: &BareJid) -> Subscription;
    /// Every contact in `owner`'s roster with its subscription.
    fn roster_contacts(&self, owner: &BareJid) -> Vec<(BareJid, Subscription)>;
    /// The bound sessions of an account.
    fn sessions(&self, account: &BareJid) -> Vec<SessionInfo>;
    /// Whether the account has a bound session (cheaper than
    /// [`ServerContext::sessions`]: nothing is copied).
    fn has_sessions(&self, account: &BareJid) -> bool {
        !self.sessions(account).is_empty()
    }
    /// How long the server has been running.
    fn uptime(&self) -> std::time::Duration;
    /// Parse one element from XML text (as stored with `Element::to_xml`).
    fn parse_xml(&self, xml: &str) -> Option<Element>;
    /// [`ServerContext::parse_xml`] for stored data of `owner` (an account
    /// or a room JID): characters XML 1.0 does not allow, which earlier
    /// versions stored, are replaced by U+FFFD and reported naming `owner`.
    fn parse_stored_xml(&self, xml: &str, owner: &str) -> Option<Element> {
        let _ = owner;
        self.parse_xml(xml)
    }
    /// The module-data store behind [`ServerContext::store`] (the server's
    /// storage engine).
    fn module_data(&self) -> &dyn crate::store::ModuleData;
    /// The data store of `module` (its config name): a key/value space per
    /// owner (an account, or a bare service domain), see [`crate::store`].
    fn store<'a>(&'a self, module: &'a str) -> crate::store::ModuleStore<'a> {
        crate::store::ModuleStore::new(self.module_data(), module)
    }

    /// The message archives (XEP-0313; one per account, later per MUC
    /// room): an engine-neutral store, `None` when the server has none.
    fn archive(&self) -> Option<&dyn crate::archive::ArchiveStore> {
        None
    }
    /// Whether the `access_rules` rule allows this user and/or address
    /// (ejabberd semantics; an undefined rule denies, `all` allows).
    fn access_allows(&self, _rule: &str, _user: Option<(&str, &str)>, _ip: Option<IpAddr>) -> bool {
        false
    }
    /// Whether the ACL `acl_name` matches this user and/or address.
    fn acl_matches(&self, _acl: &str, _user: Option<(&str, &str)>, _ip: Option<IpAddr>) -> bool {
        false
    }
    /// Create the account `user@host` (user name nodeprep'd, password
    /// stored as SCRAM credentials).
    fn create_account(
        &self,
        _user: &str,
        _host: &str,
        _password: &str,
    ) -> Result<(), AccountError> {
        Err(AccountError::Failed("not supported".into()))
    }
    /// Change the password of `user@host`; sessions stay.
    fn change_password(
        &self,
        _user: &str,
        _host: &str,
        _password: &str,
    ) -> Result<(), AccountError> {
        Err(AccountError::Failed("not supported".into()))
    }
    /// Delete `user@host` with its data. Its sessions are closed shortly
    /// after, once the reply to the current stanza has been queued.
    fn remove_account(&self, _user: &str, _host: &str) -> Result<(), AccountError> {
        Err(AccountError::Failed("not supported".into()))
    }
    /// Run an administration command of the `rookery ctl` registry (the
    /// caller decides who may; see [`ServerContext::may_run_command`]).
    fn run_command(&self, _name: &str, _args: &[String]) -> CommandOutcome {
        CommandOutcome {
            code: 1,
            output: "not supported".into(),
        }
    }
    /// Whether `who` may run the administration command `name` (the
    /// `api_permissions`-like rules of the configuration).
    fn may_run_command(&self, _who: &Jid, _name: &str) -> bool {
        false
    }
    /// Whether a module acts on [`ServerContext::room_mention`] (mod_push,
    /// by [`Module::hooks`]): without one, a room does not look for
    /// mentions at all.
    fn room_mention_hooks(&self) -> bool {
        false
    }
    /// A groupchat message of a room (`msg`, from `room@service/nick`)
    /// mentions the local account `account`, none of whose sessions is
    /// connected (offline, or only XEP-0198 sessions waiting for
    /// resumption): each module's [`Module::room_mention`] runs.
    fn room_mention(&self, _account: &BareJid, _msg: &Element) {}
    /// Items of a disco node of the server (collected from the modules'
    /// [`Module::disco_node_items`]); `None` if no module has the node.
    fn disco_node_items(&self, _from: &FullJid, _node: &str) -> Option<Vec<Element>> {
        None
    }
    /// Disco#info of a node of the server; `None` if no module has it.
    fn disco_node_info(
        &self,
        _from: &FullJid,
        _node: &str,
    ) -> Option<(Vec<Identity>, Vec<String>)> {
        None
    }
    /// XEP-0050 command nodes other modules offer `from` (collected from
    /// [`Module::adhoc_nodes`]): (node, name).
    fn module_adhoc_nodes(&self, _from: &FullJid) -> Vec<(&'static str, &'static str)> {
        Vec::new()
    }
    /// Run a module's XEP-0050 command ([`Module::adhoc_execute`]); `None`
    /// if no module has the node.
    fn module_adhoc(&self, _req: &IqRequest<'_>) -> Option<IqResult> {
        None
    }
    /// XEP-0379: put `contact` into `owner`'s roster with subscription
    /// `both` (`mutual`), or pre-approve `contact`'s subscription request
    /// (RFC 6121 §3.4); the owner's sessions get the roster push.
    fn roster_invite_link(
        &self,
        _owner: &BareJid,
        _contact: &BareJid,
        _mutual: bool,
    ) -> Result<(), AccountError> {
        Err(AccountError::Failed("not supported".into()))
    }
}

/// An extension module, switched on under `modules:` in the config.
pub trait Module: Send + Sync {
    /// The config name, e.g. `mod_ping`.
    fn name(&self) -> &'static str;
    /// The per-event hooks this module implements (overrides): the stanza
    /// filters, the message hooks, the session and presence events,
    /// [`Module::room_mention`] and [`Module::tick`]. The server calls each
    /// hook only on the modules that list it (one list per hook, built with
    /// the modules at start-up and by `reload_config`). The default,
    /// [`Hooks::ALL`], calls every hook; a module that declares must list
    /// every hook method it overrides, or that method is never called
    /// (`hooks::undeclared_overrides`, run by the tests over every module,
    /// finds the omission).
    fn hooks(&self) -> Hooks {
        Hooks::ALL
    }
    /// Disco features this module adds to the server's disco#info.
    fn disco_features(&self) -> Vec<&'static str> {
        Vec::new()
    }
    /// Disco identities this module adds.
    fn disco_identities(&self) -> Vec<Identity> {
        Vec::new()
    }
    /// XEP-0128 data forms this module adds to the server's disco#info
    /// (e.g. XEP-0363's max-file-size).
    fn disco_forms(&self) -> Vec<Element> {
        Vec::new()
    }
    /// Payload namespaces of iqs to the server this module answers.
    fn server_iq_namespaces(&self) -> Vec<&'static str> {
        Vec::new()
    }
    /// Answer an iq to the server whose payload namespace this module listed.
    fn handle_server_iq(&self, _ctx: &dyn ServerContext, _req: &IqRequest<'_>) -> IqResult {
        Err(StanzaError::service_unavailable())
    }
    /// An iq result or error addressed to the server (an answer to a query a
    /// module sent). Return `true` if this module consumed it.
    fn handle_iq_response(&self, _ctx: &dyn ServerContext, _stanza: &Element) -> bool {
        false
    }
    /// Payload namespaces of iqs to an account's bare JID this module answers.
    fn account_iq_namespaces(&self) -> Vec<&'static str> {
        Vec::new()
    }
    /// Answer an iq addressed to an account's bare JID (`req.to`), sent by
    /// the owner or by anyone else (`req.from`); the account exists.
    fn handle_account_iq(&self, _ctx: &dyn ServerContext, _req: &IqRequest<'_>) -> IqResult {
        Err(StanzaError::service_unavailable())
    }
    /// Like [`Module::handle_account_iq`], with stanzas the server routes, in
    /// order, before it sends the iq's answer (e.g. XEP-0313 results, which
    /// must reach the client before the `<fin/>`). Defaults to
    /// `handle_account_iq` with no stanzas.
    fn handle_account_iq_ordered(
        &self,
        ctx: &dyn ServerContext,
        req: &IqRequest<'_>,
    ) -> (IqResult, Vec<Element>) {
        (self.handle_account_iq(ctx, req), Vec::new())
    }
    /// What the server calls for an account iq: the answer with the
    /// stanzas routed, in order, before it and after it (the roster's
    /// versioned get: an empty result, then a push per change). Defaults
    /// to [`Module::handle_account_iq_ordered`], nothing after.
    fn handle_account_iq_around(
        &self,
        ctx: &dyn ServerContext,
        req: &IqRequest<'_>,
    ) -> OrderedAnswer {
        let (answer, before) = self.handle_account_iq_ordered(ctx, req);
        OrderedAnswer {
            before,
            answer,
            after: Vec::new(),
        }
    }
    /// Disco features every account advertises because of this module.
    fn account_disco_features(&self) -> Vec<&'static str> {
        Vec::new()
    }
    /// Disco identities every account has because of this module.
    fn account_disco_identities(&self) -> Vec<Identity> {
        Vec::new()
    }
    /// disco#items of `account` that `from` may see.
    fn account_disco_items(
        &self,
        _ctx: &dyn ServerContext,
        _account: &BareJid,
        _from: &Jid,
    ) -> Vec<Element> {
        Vec::new()
    }
    /// A stanza from another entity (`from`, already stamped and parsed)
    /// reaching the local `account`. Runs per stanza: answer from memory.
    fn filter_inbound(
        &self,
        _ctx: &dyn ServerContext,
        _account: &BareJid,
        _from: &Jid,
        _stanza: &Element,
    ) -> Verdict {
        Verdict::Pass
    }
    /// A stanza the local `account` sends to another entity (`to`, parsed);
    /// the filter may change it. Runs per stanza (presence broadcast: per
    /// contact).
    fn filter_outbound(
        &self,
        _ctx: &dyn ServerContext,
        _account: &BareJid,
        _to: &Jid,
        _stanza: &mut Element,
    ) -> Verdict {
        Verdict::Pass
    }
    /// Payload namespaces of iqs this module answers before authentication.
    fn pre_auth_iq_namespaces(&self) -> Vec<&'static str> {
        Vec::new()
    }
    /// Answer an iq sent before authentication.
    fn handle_pre_auth_iq(&self, _ctx: &dyn ServerContext, _req: &PreAuthIq<'_>) -> IqResult {
        Err(StanzaError::service_unavailable())
    }
    /// Stream features offered before authentication to a client at `ip`
    /// on `host` (e.g. `http://jabber.org/features/iq-register`).
    fn pre_auth_stream_features(
        &self,
        _ctx: &dyn ServerContext,
        _host: &str,
        _ip: IpAddr,
    ) -> Vec<Element> {
        Vec::new()
    }
    /// Disco#items of a server node this module owns, as seen by `from`;
    /// `None` if the node is not this module's.
    fn disco_node_items(
        &self,
        _ctx: &dyn ServerContext,
        _from: &FullJid,
        _node: &str,
    ) -> Option<Vec<Element>> {
        None
    }
    /// Disco#info (identities, features) of a server node this module owns.
    fn disco_node_info(
        &self,
        _ctx: &dyn ServerContext,
        _from: &FullJid,
        _node: &str,
    ) -> Option<(Vec<Identity>, Vec<String>)> {
        None
    }
    /// XEP-0050 command nodes this module offers `from` (run through
    /// `mod_adhoc`): (node, name).
    fn adhoc_nodes(
        &self,
        _ctx: &dyn ServerContext,
        _from: &FullJid,
    ) -> Vec<(&'static str, &'static str)> {
        Vec::new()
    }
    /// Run one of this module's XEP-0050 commands (`req.payload` is the
    /// `<command/>`); `None` if the node is not this module's.
    fn adhoc_execute(&self, _ctx: &dyn ServerContext, _req: &IqRequest<'_>) -> Option<IqResult> {
        None
    }
    /// Extra stream features offered once the client is authenticated.
    fn stream_features(&self) -> Vec<Element> {
        Vec::new()
    }
    /// Called about once a second, on a task of the server's own, for
    /// periodic work (mod_muc's checks on silent remote occupants).
    fn tick(&self, _ctx: &dyn ServerContext) {}
    /// A session was bound.
    fn session_opened(&self, _ctx: &dyn ServerContext, _jid: &FullJid) {}
    /// A session broadcast available presence (`initial`: its first).
    fn presence_available(
        &self,
        _ctx: &dyn ServerContext,
        _jid: &FullJid,
        _presence: &Element,
        _initial: bool,
    ) {
    }
    /// A session ended (it is already gone from [`ServerContext::sessions`];
    /// for a resumable XEP-0198 session: when it can no longer be resumed,
    /// not when its connection dropped).
    fn session_closed(&self, _ctx: &dyn ServerContext, _jid: &FullJid) {}
    /// A `<message/>` from the local session `from` (its `from` stamped) was
    /// routed. Returns stanzas to route next (e.g. XEP-0280 `<sent/>` copies).
    fn message_from_session(
        &self,
        _ctx: &dyn ServerContext,
        _from: &FullJid,
        _msg: &Element,
    ) -> Vec<Element> {
        Vec::new()
    }
    /// A `<message/>` for the local account `account` is about to be delivered
    /// to its sessions: a module may change it (e.g. strip payloads that only
    /// the account itself may send).
    fn filter_message_to_account(
        &self,
        _ctx: &dyn ServerContext,
        _account: &BareJid,
        _msg: &mut Element,
    ) {
    }
    /// A `<message/>` for the local account `account`, which had no session
    /// to take it, was stored offline (durably).
    fn message_stored_offline(&self, _ctx: &dyn ServerContext, _account: &BareJid, _msg: &Element) {
    }
    /// A `<message/>` was handed to these sessions of the local account
    /// `account`. Returns stanzas to route next (e.g. XEP-0280 `<received/>`
    /// copies for the account's other resources).
    fn message_delivered(
        &self,
        _ctx: &dyn ServerContext,
        _account: &BareJid,
        _delivered_to: &[FullJid],
        _msg: &Element,
    ) -> Vec<Element> {
        Vec::new()
    }
    /// A room's groupchat message mentions `account`, who has no connected
    /// session (see [`ServerContext::room_mention`]).
    fn room_mention(&self, _ctx: &dyn ServerContext, _account: &BareJid, _msg: &Element) {}
    /// Domains this module serves itself, as a service of its own (XEP-0045
    /// MUC's `conference.example.org`), given the server's hosts: every
    /// stanza addressed to such a domain or to a JID at it goes to
    /// [`Module::handle_service_stanza`] instead of the core. Returns
    /// (service domain, the host it belongs to, for the host's disco#items).
    fn service_domains(&self, _hosts: &[String]) -> Vec<(String, String)> {
        Vec::new()
    }
    /// A stanza addressed to one of this module's service domains or to a
    /// JID at it, its `from` stamped (a local account's full JID, or the
    /// server). Returns the stanzas to route next, in order, on the caller's
    /// task (answers, broadcasts to local accounts).
    fn handle_service_stanza(&self, _ctx: &dyn ServerContext, _stanza: &Element) -> Vec<Element> {
        Vec::new()
    }
    /// This node of a cluster just became the owner of `address` (a JID
    /// with a local part at one of this module's service domains: a MUC
    /// room), which another node may have served until now: forget what
    /// memory holds of it and read it again from storage.
    fn service_address_claimed(&self, _ctx: &dyn ServerContext, _address: &BareJid) {}
    /// The module as `Any`, so the server core can read the typed options of
    /// modules whose work happens in the stream itself (mod_stream_mgmt,
    /// mod_client_state, mod_ping's server-side pings).
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }
}

#[cfg(test)]
mod store_error_tests {
    use super::*;
    use crate::stanza::ErrorType;

    #[test]
    fn a_full_disk_is_resource_constraint_anything_else_internal_error() {
        let full = StoreError::full("database disk full: /db: No space left on device");
        assert!(full.is_full());
        assert_eq!(
            full.to_string(),
            "disk full: database disk full: /db: No space left on device"
        );
        assert_eq!(
            full.message(),
            "database disk full: /db: No space left on device"
        );
        let s: StanzaError = full.into();
        assert_eq!(
            (s.kind, s.condition),
            (
                ErrorType::Wait,
                crate::stanza::Condition::ResourceConstraint
            )
        );
        let other = StoreError::other("database I/O error: EIO");
        assert!(!other.is_full());
        assert_eq!(other.to_string(), "database I/O error: EIO");
        let s: StanzaError = other.into();
        assert_eq!(s.condition, "internal-server-error");
    }

    #[test]
    fn the_source_is_kept() {
        let io = std::io::Error::new(std::io::ErrorKind::StorageFull, "No space left on device");
        let e = StoreError::from_source(StoreErrorKind::Full, io);
        assert!(e.is_full());
        let source = std::error::Error::source(&e).expect("a source");
        let io = source
            .downcast_ref::<std::io::Error>()
            .expect("the io::Error");
        assert_eq!(io.kind(), std::io::ErrorKind::StorageFull);
        assert_eq!(e.clone(), e);
    }
}
