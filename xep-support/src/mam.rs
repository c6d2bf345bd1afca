//! XEP-0313 Message Archive Management (`mod_mam`, `urn:xmpp:mam:2`) for
//! one-to-one chats, with XEP-0359 stanza ids and XEP-0059 paging.
//!
//! Archiving: every `chat` or `normal` message with a `<body/>` (not
//! groupchat, headline or error, not chat states alone, not with a XEP-0334
//! `no-store`/`no-permanent-store` hint) is kept in the sender's archive
//! when a local session sends it ([`Module::message_from_session`]) and in
//! the recipient's archive when it reaches a local account
//! ([`Module::filter_message_to_account`], which runs once per message,
//! before delivery and before offline storage: a message to an offline
//! account is archived once; a message between two resources of one
//! account once, on the recipient side). The copy delivered carries
//! `<stanza-id by='account' id='archive id'/>`; stanza ids claiming to be by
//! the account that came from outside are removed first. The account's
//! preferences (`<prefs/>`: default always/never/roster and always/never
//! JID lists; the module's `default` option when it has none) decide per
//! peer; they are read from storage once and kept in a bounded cache.
//!
//! Storage: the server's message archive ([`ServerContext::archive`], see
//! [`crate::archive`]): one archive per account, each message stored once
//! with its peer, direction and XEP-0359 origin-id (handed over as the
//! stanza itself, [`crate::archive::ArchiveStore::append_stanza`]: the
//! hooks make no JID and no copy of the stanza per message, they read the
//! addresses' normalised text, [`crate::jids::normalised`]); the archive id is
//! microseconds since the Unix epoch, strictly increasing, so ids sort by
//! time. Appending is idempotent by origin-id (a resent or resumed stanza
//! keeps its first id) and does not wait for the disk (the store makes it
//! durable within a second; the server holds the sender's acknowledgements
//! until then). When the archive refuses the sender's copy (a full disk),
//! the sender gets `resource-constraint` (wait) for it and the live copy is
//! still delivered; a write that fails later is reported to the sender by
//! the server. The account's `<prefs/>` stay in the module's key/value
//! space (`prefs`).
//!
//! Query: an iq set `<query/>` from the owner, with the optional form fields
//! `with`, `start`, `end`, `after-id`, `before-id` and RSM `max` (capped at
//! [`MAX_PAGE`]), `after`, `before` (empty: the last page). All of them map
//! to one id range of the archive (of the peer's index when `with` is
//! given), read a page at a time ([`crate::archive::ArchiveStore::page`]):
//! its cost follows the page size, not the archive size; `before` pages
//! backwards. A full JID `with` reads the peer's messages and filters on
//! the resource, reading at most [`MAX_SCAN`] messages per query. The RSM `<count/>` comes from the archive's counters
//! ([`crate::archive::ArchiveStore::count_range`]: exact for a whole archive
//! or conversation and for small ranges, never a scan of the archive).
//! Results come as messages to the querying resource, routed in
//! order before the iq result with `<fin/>` ([`Module::handle_account_iq_ordered`]).
//!
//! Retention: with `archive_expires_after`, older messages are left out of
//! queries at once and deleted from storage when the account logs in (in
//! bounded rounds) or by `rookery ctl delete_old_mam_messages`
//! ([`crate::archive::ArchiveStore::delete_before`]).

use crate::jids::{self, Bare};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jid::{BareJid, FullJid, Jid};

use crate::archive::{format_id, parse_id, ArchiveStore, Direction, PageQuery};
use crate::element::Element;
use crate::module::{Hooks, IqRequest, IqResult, Module, ServerContext, StoreError};
use crate::ns;
use crate::options::{Kind, ModuleSpec, OptSpec};
use crate::stanza::StanzaError;

/// The module's name (its key/value space).
pub const MODULE: &str = "mod_mam";
pub const NS_MAM: &str = "urn:xmpp:mam:2";
pub const NS_SID: &str = "urn:xmpp:sid:0";
pub const NS_RSM: &str = "http://jabber.org/protocol/rsm";
/// Most results one query returns (a larger RSM `max` is capped).
pub const MAX_PAGE: usize = 250;
/// Messages one query reads at most when a full JID `with` filters them
/// (an account's peer by resource, a room's occupant by nick): a page (and
/// a count) then covers what these held.
pub const MAX_SCAN: usize = 20_000;
/// Results of a query without RSM `max`.
pub const DEFAULT_PAGE: usize = 50;
/// The options of `mod_mam` (ejabberd's, and Prosody's
/// `archive_expires_after`).
pub const SPEC: ModuleSpec = ModuleSpec::module(
    "mod_mam",
    &[
        OptSpec::honoured(
            "default",
            Kind::Enum(&["always", "never", "roster"]),
            "always",
            "archiving policy for accounts without preferences",
        ),
        OptSpec::honoured(
            "archive_expires_after",
            Kind::Timeout,
            "infinity",
            "retention of archived messages",
        ),
        OptSpec::ignored(
            "access_preferences",
            Kind::Any,
            "who may change their preferences (everyone may)",
        ),
        OptSpec::ignored(
            "assume_mam_usage",
            Kind::Any,
            "treating MAM clients as having received messages",
        ),
        OptSpec::ignored(
            "clear_archive_on_room_destroy",
            Kind::Any,
            "keeping a destroyed room's archive (it is always deleted)",
        ),
        OptSpec::ignored("compress_xml", Kind::Any, "compressed storage in SQL"),
        OptSpec::ignored(
            "request_activates_archiving",
            Kind::Any,
            "archiving only after a first query",
        ),
        OptSpec::ignored(
            "user_mucsub_from_muc_archive",
            Kind::Any,
            "MucSub messages from room archives",
        ),
    ],
    true,
);
/// The key of the account's preferences.
pub const PREFS_KEY: &str = "prefs";
/// Accounts whose preferences are cached (the cache is emptied beyond).
const PREFS_CACHE: usize = 10_000;
/// Expired messages deleted per login (the rest at the next one).
const EXPIRE_PER_LOGIN: usize = 5_000;

/// An archiving policy (ejabberd's `default` option, XEP-0313 `<prefs default=''/>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    Always,
    Never,
    Roster,
}

impl Policy {
    pub fn parse(s: &str) -> Option<Policy> {
        match s {
            "always" => Some(Policy::Always),
            "never" => Some(Policy::Never),
            "roster" => Some(Policy::Roster),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Always => "always",
            Policy::Never => "never",
            Policy::Roster => "roster",
        }
    }
}

/// An account's archiving preferences.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prefs {
    pub default: Policy,
    /// JIDs (bare: every resource) always archived.
    pub always: Vec<String>,
    /// JIDs never archived (wins over `always`).
    pub never: Vec<String>,
}

impl Prefs {
    fn to_element(&self) -> Element {
        let list = |name: &str, jids: &[String]| {
            jids.iter().fold(Element::new(name, NS_MAM), |e, j| {
                e.with_child(Element::new("jid", NS_MAM).with_text(j.clone()))
            })
        };
        Element::new("prefs", NS_MAM)
            .with_attr("default", self.default.as_str())
            .with_child(list("always", &self.always))
            .with_child(list("never", &self.never))
    }

    /// Read a `<prefs/>` element (from a client or from storage).
    fn from_element(el: &Element) -> Result<Prefs, StanzaError> {
        let default = el.attr("default").and_then(Policy::parse).ok_or_else(|| {
            StanzaError::bad_request().with_text("default: always, never or roster")
        })?;
        let list = |name: &str| -> Result<Vec<String>, StanzaError> {
            let mut out = Vec::new();
            if let Some(l) = el.child(name, NS_MAM) {
                for j in l.child_elements().filter(|j| j.name == "jid") {
                    let jid = Jid::new(j.text().trim())
                        .map_err(|_| StanzaError::bad_request().with_text("malformed jid"))?;
                    if !out.contains(&jid.to_string()) {
                        out.push(jid.to_string());
                    }
                }
            }
            Ok(out)
        };
        Ok(Prefs {
            default,
            always: list("always")?,
            never: list("never")?,
        })
    }

    /// Whether a message with `peer` (`bare`: its bare JID; both
    /// normalised text, as `account`) is archived (never > always > default).
    fn archives(&self, ctx: &dyn ServerContext, account: &str, peer: &str, bare: &str) -> bool {
        let matches = |j: &String| j == bare || j == peer;
        if self.never.iter().any(matches) {
            return false;
        }
        if self.always.iter().any(matches) {
            return true;
        }
        match self.default {
            Policy::Always => true,
            Policy::Never => false,
            Policy::Roster => {
                bare == account
                    || bare_jid(account).zip(bare_jid(bare)).is_some_and(|(a, b)| {
                        ctx.subscription(&a, &b) != crate::module::Subscription::None
                    })
            }
        }
    }
}

/// A bare JID from its normalised text (the rarer paths: roster
/// subscriptions, reading stored preferences).
fn bare_jid(text: &str) -> Option<BareJid> {
    jids::parse(text).map(|j| j.bare())
}

/// Delete `account`'s archived messages with ids (microseconds) below
/// `cutoff`, at most `limit`; how many were deleted.
pub fn delete_older_than(
    store: &dyn ArchiveStore,
    account: &BareJid,
    cutoff: u64,
    limit: usize,
) -> Result<usize, StoreError> {
    store.delete_before(account, cutoff, limit)
}

/// The archive, or an error for a server without one.
fn store(ctx: &dyn ServerContext) -> Result<&dyn ArchiveStore, StoreError> {
    ctx.archive()
        .ok_or_else(|| StoreError::other("no message archive"))
}

/// `mod_mam`.
pub struct Mam {
    default: Policy,
    expires: Option<Duration>,
    /// By the account's bare JID (normalised text: looked up on every
    /// archived message without making a JID).
    /// Local accounts' names (no remote sender chooses them): a fast hasher.
    prefs: RwLock<rustc_hash::FxHashMap<String, Option<Arc<Prefs>>>>,
}

impl Default for Mam {
    fn default() -> Self {
        Mam::new(Policy::Always, None)
    }
}

fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or_default()
}

pub use crate::date::{parse_stamp, stamp};

/// Whether a message goes into archives at all: `chat` or `normal` with a
/// body, without a XEP-0334 hint against storing it.
fn archivable(msg: &Element) -> bool {
    matches!(msg.attr("type").unwrap_or("normal"), "chat" | "normal")
        && msg.child_elements().any(|c| {
            c.is("body", ns::CLIENT)
                && c.children
                    .iter()
                    .any(|n| matches!(n, crate::element::Node::Text(t) if !t.is_empty()))
        })
        && msg.child("no-store", "urn:xmpp:hints").is_none()
        && msg.child("no-permanent-store", "urn:xmpp:hints").is_none()
}

/// A stored entry, parsed.
struct Entry {
    id: u64,
    message: Element,
}

/// What a query asks, once the form and RSM are read.
struct Query {
    with: Option<Jid>,
    /// The peer index read (a bare JID), if any.
    index: Option<String>,
    /// Only messages whose peer attribute (`from` of incoming, `to` of
    /// outgoing) is exactly this full JID.
    full: Option<Jid>,
    /// Lowest and highest archive id in the result set (inclusive).
    lo: u64,
    hi: u64,
    /// The page: ids strictly between these.
    after: Option<u64>,
    before: Option<u64>,
    /// Page backwards (RSM `<before/>`).
    backwards: bool,
    max: usize,
}

impl Mam {
    pub fn new(default: Policy, expires: Option<Duration>) -> Self {
        Mam {
            default,
            expires,
            prefs: RwLock::new(rustc_hash::FxHashMap::default()),
        }
    }

    /// Ids below this are expired (0: nothing is).
    fn cutoff(&self) -> u64 {
        self.expires
            .map(|e| now_micros().saturating_sub(e.as_micros() as u64))
            .unwrap_or(0)
    }

    fn default_prefs(&self) -> Prefs {
        Prefs {
            default: self.default,
            always: Vec::new(),
            never: Vec::new(),
        }
    }

    /// The account's preferences (`None`: the module default), cached.
    fn prefs_of(&self, ctx: &dyn ServerContext, account: &str) -> Option<Arc<Prefs>> {
        if let Some(p) = self
            .prefs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(account)
        {
            return p.clone();
        }
        let bare = bare_jid(account)?;
        let stored = match ctx.store(MODULE).get(&bare, PREFS_KEY) {
            Ok(v) => v
                .and_then(|v| ctx.parse_stored_xml(std::str::from_utf8(&v).ok()?, account))
                .and_then(|el| Prefs::from_element(&el).ok())
                .map(Arc::new),
            Err(e) => {
                tracing::error!("mod_mam: reading preferences of {account}: {e}");
                return None; // not cached: read again next time
            }
        };
        let mut cache = self.prefs.write().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= PREFS_CACHE {
            cache.clear();
        }
        cache.insert(account.to_string(), stored.clone());
        stored
    }

    /// Whether `account`'s preferences archive a message with `peer`
    /// (`bare`: its bare part; normalised text, all three).
    fn archives(&self, ctx: &dyn ServerContext, account: &str, peer: &str, bare: &str) -> bool {
        match self.prefs_of(ctx, account) {
            Some(p) => p.archives(ctx, account, peer, bare),
            None if self.default == Policy::Always => true,
            None => self.default_prefs().archives(ctx, account, peer, bare),
        }
    }

    /// Store `msg` in `account`'s archive (`direction` seen from the
    /// account, `with` the peer's bare JID; both normalised text); its
    /// archive id (the first one if the message, by its origin-id, is
    /// already there). `Err`: the archive refused it (logged here, naming
    /// the account).
    pub fn archive(
        &self,
        ctx: &dyn ServerContext,
        account: &str,
        with: &str,
        direction: Direction,
        msg: &Element,
    ) -> Result<u64, StoreError> {
        let origin_id = msg
            .child("origin-id", NS_SID)
            .and_then(|o| o.attr("id"))
            .filter(|o| !o.is_empty());
        match store(ctx).and_then(|s| s.append_stanza(account, with, direction, origin_id, msg)) {
            Ok(a) => Ok(a.id()),
            Err(e) => {
                tracing::error!("mod_mam: archiving for {account}: {e}");
                Err(e)
            }
        }
    }

    fn entry(
        ctx: &dyn ServerContext,
        account: &BareJid,
        m: crate::archive::ArchivedMessage,
    ) -> Option<Entry> {
        match ctx.parse_stored_xml(&m.xml, account.as_str()) {
            Some(message) => Some(Entry { id: m.id, message }),
            None => {
                tracing::error!(
                    "mod_mam: archive of {account}: message {} does not parse; skipped",
                    format_id(m.id)
                );
                None
            }
        }
    }
}

/// Read a query's form and RSM into a [`Query`] (`index`/`full` still unset).
fn read_form(
    ctx: &dyn ServerContext,
    account: &BareJid,
    payload: &Element,
    cutoff: u64,
) -> Result<Query, StanzaError> {
    {
        let account = account.clone();
        let mut q = Query {
            with: None,
            index: None,
            full: None,
            lo: cutoff,
            hi: u64::MAX,
            after: None,
            before: None,
            backwards: false,
            max: DEFAULT_PAGE,
        };
        // An id the client names must be in the archive (XEP-0313 §4.3.2).
        let known = |s: &str| -> Result<u64, StanzaError> {
            let id = parse_id(s.trim()).ok_or_else(StanzaError::item_not_found)?;
            match store(ctx)?.get(&account, id)? {
                Some(_) => Ok(id),
                None => Err(StanzaError::item_not_found()),
            }
        };
        let stamp_field = |name: &str, value: &str| {
            parse_stamp(value.trim())
                .ok_or_else(|| StanzaError::bad_request().with_text(format!("malformed '{name}'")))
        };
        if let Some(x) = payload.child("x", ns::DATA_FORMS) {
            for f in x.child_elements().filter(|f| f.name == "field") {
                let value = f
                    .child("value", ns::DATA_FORMS)
                    .map(|v| v.text())
                    .unwrap_or_default();
                match f.attr("var").unwrap_or("") {
                    "FORM_TYPE" => {
                        if value != NS_MAM {
                            return Err(StanzaError::bad_request().with_text("FORM_TYPE"));
                        }
                    }
                    "with" => {
                        q.with = Some(Jid::new(value.trim()).map_err(|_| {
                            StanzaError::bad_request().with_text("malformed 'with'")
                        })?)
                    }
                    "start" => q.lo = q.lo.max(stamp_field("start", &value)?),
                    "end" => q.hi = q.hi.min(stamp_field("end", &value)?),
                    "after-id" => q.after = Some(known(&value)?),
                    "before-id" => q.before = Some(known(&value)?),
                    other => {
                        return Err(StanzaError::bad_request()
                            .with_text(format!("unsupported field '{other}'")))
                    }
                }
            }
        }
        if let Some(set) = payload.child("set", NS_RSM) {
            if let Some(m) = set.child("max", NS_RSM) {
                q.max = m
                    .text()
                    .trim()
                    .parse::<usize>()
                    .map_err(|_| StanzaError::bad_request().with_text("malformed RSM max"))?
                    .min(MAX_PAGE);
            }
            if let Some(a) = set.child("after", NS_RSM) {
                let id = known(&a.text())?;
                q.after = Some(q.after.map_or(id, |x| x.max(id)));
            }
            if let Some(b) = set.child("before", NS_RSM) {
                q.backwards = true;
                let t = b.text();
                if !t.trim().is_empty() {
                    let id = known(&t)?;
                    q.before = Some(q.before.map_or(id, |x| x.min(id)));
                }
            }
        }
        Ok(q)
    }
}

/// The query's page, in archive order, and whether it reaches the end
/// of the result set in the paging direction.
fn page(
    ctx: &dyn ServerContext,
    account: &BareJid,
    q: &Query,
) -> Result<(Vec<Entry>, bool), StanzaError> {
    let lo = q.lo.max(q.after.map_or(0, |a| a.saturating_add(1)));
    let hi = q.hi.min(q.before.map_or(u64::MAX, |b| b.saturating_sub(1)));
    if lo > hi || q.before == Some(0) {
        return Ok((Vec::new(), true));
    }
    let with_bare = q.index.clone();
    let full_with = q.full.as_ref();
    let want = q.max + 1;
    let mut found: Vec<Entry> = Vec::new();
    let (mut lo, mut hi) = (lo, hi);
    let archive = store(ctx)?;
    // A full JID `with` is matched on the stored XML: a cheap look for its
    // text first when it has no character XML escapes.
    let plain = full_with
        .map(|w| w.as_str())
        .filter(|w| !w.contains(['&', '<', '>', '\'', '"']));
    let mut scanned = 0usize;
    let mut capped = false;
    // Rounds: one, unless a full JID `with` filters messages out.
    for _ in 0..100_000 {
        let limit = if full_with.is_some() {
            want.max(100)
        } else {
            want - found.len()
        };
        let rows = archive.page(
            account,
            &PageQuery {
                with: with_bare.as_deref(),
                lo,
                hi,
                reverse: q.backwards,
                limit,
            },
        )?;
        let n = rows.len();
        scanned += n;
        for m in rows {
            if q.backwards {
                hi = m.id.saturating_sub(1);
            } else {
                lo = m.id.saturating_add(1);
            }
            if plain.is_some_and(|w| !m.xml.contains(w)) {
                continue;
            }
            let outgoing = m.direction == Direction::Outgoing;
            let Some(e) = Mam::entry(ctx, account, m) else {
                continue;
            };
            if let Some(w) = full_with {
                let peer = e.message.attr(if outgoing { "to" } else { "from" });
                if peer != Some(w.as_str()) {
                    continue;
                }
            }
            found.push(e);
            if found.len() == want {
                break;
            }
        }
        if found.len() == want || n < limit || lo > hi || (q.backwards && hi == 0) {
            break;
        }
        if scanned >= MAX_SCAN {
            capped = true;
            break;
        }
    }
    // Stopped by MAX_SCAN: not complete when the client can page on from
    // what it got.
    let complete = found.len() <= q.max && (!capped || found.is_empty());
    found.truncate(q.max);
    if q.backwards {
        found.reverse();
    }
    Ok((found, complete))
}

/// The number of messages in the result set (without RSM paging).
fn count(ctx: &dyn ServerContext, account: &BareJid, q: &Query) -> Result<usize, StanzaError> {
    if q.lo > q.hi {
        return Ok(0);
    }
    if let Some(w) = q.full.as_ref() {
        // Counted by reading the peer's messages (no index per
        // resource), at most EXACT_COUNT_LIMIT of them.
        let all = Query {
            with: Some(w.clone()),
            index: q.index.clone(),
            full: Some(w.clone()),
            lo: q.lo,
            hi: q.hi,
            after: None,
            before: None,
            backwards: false,
            max: crate::archive::EXACT_COUNT_LIMIT,
        };
        return Ok(page(ctx, account, &all)?.0.len());
    }
    Ok(store(ctx)?
        .count_range(account, q.index.as_deref(), q.lo, q.hi)?
        .value() as usize)
}

/// The query form (XEP-0313 §5.1.1), for an iq get.
pub fn search_form() -> Element {
    let field = |var: &str, kind: &str| {
        Element::new("field", ns::DATA_FORMS)
            .with_attr("var", var)
            .with_attr("type", kind)
    };
    let form = Element::new("x", ns::DATA_FORMS)
        .with_attr("type", "form")
        .with_child(
            field("FORM_TYPE", "hidden")
                .with_child(Element::new("value", ns::DATA_FORMS).with_text(NS_MAM)),
        )
        .with_child(field("with", "jid-single"))
        .with_child(field("start", "text-single"))
        .with_child(field("end", "text-single"))
        .with_child(field("after-id", "text-single"))
        .with_child(field("before-id", "text-single"));
    Element::new("query", NS_MAM).with_child(form)
}

impl Mam {
    fn prefs_iq(&self, ctx: &dyn ServerContext, req: &IqRequest<'_>) -> IqResult {
        let account = req.account();
        if req.is_set {
            let prefs = Prefs::from_element(req.payload)?;
            let xml = prefs.to_element().to_xml(ns::CLIENT);
            ctx.store(MODULE).put(&account, PREFS_KEY, xml.as_bytes())?;
            let mut cache = self.prefs.write().unwrap_or_else(|e| e.into_inner());
            if cache.len() >= PREFS_CACHE {
                cache.clear();
            }
            cache.insert(account.to_string(), Some(Arc::new(prefs.clone())));
            return Ok(Some(prefs.to_element()));
        }
        let prefs = self
            .prefs_of(ctx, account.as_str())
            .map(|p| (*p).clone())
            .unwrap_or_else(|| self.default_prefs());
        Ok(Some(prefs.to_element()))
    }

    fn query(
        &self,
        ctx: &dyn ServerContext,
        req: &IqRequest<'_>,
    ) -> Result<(Element, Vec<Element>), StanzaError> {
        if !req.is_set {
            return Ok((search_form(), Vec::new()));
        }
        run_query(
            ctx,
            &req.account(),
            req.payload,
            &req.from.clone().into(),
            self.cutoff(),
            None,
        )
    }
}

/// How a room archive's `with` is read (XEP-0313 §5.1.1 on a MUC).
#[derive(Clone, Copy, Debug)]
pub struct RoomWith {
    /// Whether the requester may filter by an occupant's real JID (the
    /// peer of every message in a room archive is the sender's real bare
    /// JID): in non-anonymous rooms and for moderators.
    pub real_jids: bool,
}

/// Answer a XEP-0313 query (iq set) on `owner`'s archive: the `<fin/>` and
/// the result messages to `requester`, in order. `cutoff`: ids below are
/// expired (left out). `room`: the archive is a MUC room's, whose `with` is
/// an occupant's room JID (`room@service/nick`: the messages it sent), or,
/// when allowed, a real JID.
pub fn run_query(
    ctx: &dyn ServerContext,
    owner: &BareJid,
    payload: &Element,
    requester: &Jid,
    cutoff: u64,
    room: Option<RoomWith>,
) -> Result<(Element, Vec<Element>), StanzaError> {
    let account = owner.clone();
    let mut q = read_form(ctx, owner, payload, cutoff)?;
    if let Some(w) = q.with.clone() {
        let bare = w.to_bare();
        match room {
            Some(_) if bare == *owner => {
                // An occupant's room JID: its messages (their `from`).
                q.full = w.resource().is_some().then_some(w);
            }
            Some(r) if !r.real_jids => {
                return Err(StanzaError::new(
                    crate::stanza::ErrorType::Cancel,
                    crate::stanza::Condition::NotAllowed,
                )
                .with_text("'with' names an occupant's room JID here (real JIDs are hidden)"));
            }
            _ => {
                q.index = Some(bare.to_string());
                q.full = w.resource().is_some().then_some(w);
            }
        }
    }
    {
        let (page, complete) = page(ctx, &account, &q)?;
        let count = count(ctx, &account, &q)?;
        let queryid = payload.attr("queryid");
        let results = page
            .iter()
            .map(|e| {
                let id = format!("{:020}", e.id);
                let mut result = Element::new("result", NS_MAM).with_attr("id", id.clone());
                if let Some(qid) = queryid {
                    result.set_attr("queryid", qid);
                }
                Element::new("message", ns::CLIENT)
                    .with_attr("from", account.to_string())
                    .with_attr("to", requester.to_string())
                    .with_attr("id", format!("mam-{id}"))
                    .with_child(
                        result.with_child(
                            Element::new("forwarded", ns::FORWARD)
                                .with_child(
                                    Element::new("delay", ns::DELAY)
                                        .with_attr("stamp", stamp(e.id)),
                                )
                                .with_child(e.message.clone()),
                        ),
                    )
            })
            .collect();
        let mut set = Element::new("set", NS_RSM);
        if let (Some(first), Some(last)) = (page.first(), page.last()) {
            set = set
                .with_child(Element::new("first", NS_RSM).with_text(format!("{:020}", first.id)))
                .with_child(Element::new("last", NS_RSM).with_text(format!("{:020}", last.id)));
        }
        set = set.with_child(Element::new("count", NS_RSM).with_text(count.to_string()));
        let mut fin = Element::new("fin", NS_MAM).with_attr("complete", complete.to_string());
        if let Some(qid) = queryid {
            fin.set_attr("queryid", qid);
        }
        Ok((fin.with_child(set), results))
    }
}

impl Module for Mam {
    fn name(&self) -> &'static str {
        MODULE
    }
    fn hooks(&self) -> Hooks {
        Hooks::MESSAGE_FROM_SESSION
            | Hooks::FILTER_MESSAGE_TO_ACCOUNT
            | Hooks::SESSION_OPENED
            | Hooks::SESSION_CLOSED
    }
    fn account_disco_features(&self) -> Vec<&'static str> {
        vec![NS_MAM]
    }
    fn account_iq_namespaces(&self) -> Vec<&'static str> {
        vec![NS_MAM]
    }
    fn handle_account_iq(&self, ctx: &dyn ServerContext, req: &IqRequest<'_>) -> IqResult {
        self.handle_account_iq_ordered(ctx, req).0
    }
    fn handle_account_iq_ordered(
        &self,
        ctx: &dyn ServerContext,
        req: &IqRequest<'_>,
    ) -> (IqResult, Vec<Element>) {
        if !req.from_owner() {
            return (Err(StanzaError::forbidden()), Vec::new());
        }
        match req.payload.name.as_str() {
            "query" => match self.query(ctx, req) {
                Ok((payload, results)) => (Ok(Some(payload)), results),
                Err(e) => (Err(e), Vec::new()),
            },
            "prefs" => (self.prefs_iq(ctx, req), Vec::new()),
            _ => (Err(StanzaError::bad_request()), Vec::new()),
        }
    }
    fn session_opened(&self, ctx: &dyn ServerContext, jid: &FullJid) {
        let cutoff = self.cutoff();
        if cutoff > 0 {
            let account = jid.bare();
            let deleted =
                store(ctx).and_then(|s| s.delete_before(&account, cutoff, EXPIRE_PER_LOGIN));
            match deleted {
                Ok(0) => {}
                Ok(n) => tracing::info!("mod_mam: {n} expired messages of {account} deleted"),
                Err(e) => tracing::error!("mod_mam: expiring messages of {account}: {e}"),
            }
        }
    }
    fn session_closed(&self, ctx: &dyn ServerContext, jid: &FullJid) {
        let account = jid.bare();
        if ctx.sessions(&account).is_empty() {
            // Read again at the next login (or message).
            self.prefs
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remove(account.as_str());
        }
    }
    fn message_from_session(
        &self,
        ctx: &dyn ServerContext,
        from: &FullJid,
        msg: &Element,
    ) -> Vec<Element> {
        if !archivable(msg) {
            return Vec::new();
        }
        // JIDs as normalised text, borrowed: no JID is made per message.
        let Some(to) = msg.attr("to").and_then(jids::normalised) else {
            return Vec::new();
        };
        let account = jids::bare_text(from.as_str());
        let peer = jids::bare_text(&to);
        // Between two resources of the account: archived once, on the
        // receiving side (with its stanza id).
        if peer == account || !self.archives(ctx, account, &to, peer) {
            return Vec::new();
        }
        if let Err(e) = self.archive(ctx, account, peer, Direction::Outgoing, msg) {
            // Refused (a full disk, a failed write a moment ago): the live
            // copy still goes out, as in ejabberd and Prosody; the sender
            // learns it is not in the archive (try again later: `wait`).
            let text = match e.is_full() {
                true => "message not archived: the server's storage is full",
                false => "message not archived",
            };
            let e = StanzaError::resource_constraint().with_text(text);
            return vec![crate::stanza::error_reply(msg, &e)];
        }
        Vec::new()
    }
    fn filter_message_to_account(
        &self,
        ctx: &dyn ServerContext,
        account: &BareJid,
        msg: &mut Element,
    ) {
        // XEP-0359 §5: stanza ids by this account from anyone else are forged.
        let by = account.as_str();
        msg.children.retain(|n| match n {
            crate::element::Node::Element(c) => {
                !(c.is("stanza-id", NS_SID) && c.attr("by") == Some(by))
            }
            _ => true,
        });
        if !archivable(msg) {
            return;
        }
        let id = {
            let Some(from) = msg.attr("from").and_then(jids::normalised) else {
                return;
            };
            let peer = jids::bare_text(&from);
            if !self.archives(ctx, by, &from, peer) {
                return;
            }
            // No archive for an account that does not exist (the message is
            // bounced); the store is read only when the account has no session.
            if !ctx.has_sessions(account) && !ctx.account_exists(account) {
                return;
            }
            // From the account itself (another of its resources): outgoing.
            let direction = if peer == by {
                Direction::Outgoing
            } else {
                Direction::Incoming
            };
            match self.archive(ctx, by, peer, direction, msg) {
                Ok(id) => id,
                Err(_) => return,
            }
        };
        msg.children.push(crate::element::Node::Element(
            Element::new("stanza-id", NS_SID)
                .with_attr("by", by)
                .with_attr("id", format_id(id)),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip() {
        assert_eq!(stamp(0), "1970-01-01T00:00:00.000000Z");
        let t = 1_704_067_200_123_456; // 2024-01-01T00:00:00.123456Z
        assert_eq!(stamp(t), "2024-01-01T00:00:00.123456Z");
        assert_eq!(parse_stamp("2024-01-01T00:00:00.123456Z"), Some(t));
        assert_eq!(
            parse_stamp("2024-01-01T01:00:00+01:00"),
            Some(1_704_067_200_000_000)
        );
        assert_eq!(
            parse_stamp("2024-01-01T00:00:00.5Z"),
            Some(1_704_067_200_500_000)
        );
        assert_eq!(parse_stamp("yesterday"), None);
        assert_eq!(parse_stamp("2024-13-01T00:00:00Z"), None);
    }

    #[test]
    fn prefs_parse_and_render() {
        let el = Element::new("prefs", NS_MAM)
            .with_attr("default", "roster")
            .with_child(
                Element::new("always", NS_MAM)
                    .with_child(Element::new("jid", NS_MAM).with_text("a@x"))
                    .with_child(Element::new("jid", NS_MAM).with_text("a@x")),
            )
            .with_child(
                Element::new("never", NS_MAM)
                    .with_child(Element::new("jid", NS_MAM).with_text("b@x/r")),
            );
        let p = Prefs::from_element(&el).unwrap();
        assert_eq!(p.default, Policy::Roster);
        assert_eq!(p.always, ["a@x"]);
        assert_eq!(p.never, ["b@x/r"]);
        assert_eq!(Prefs::from_element(&p.to_element()).unwrap(), p);
        let bad = Element::new("prefs", NS_MAM).with_attr("default", "sometimes");
        assert!(Prefs::from_element(&bad).is_err());
        let bad_jid = Element::new("prefs", NS_MAM)
            .with_attr("default", "always")
            .with_child(
                Element::new("never", NS_MAM)
                    .with_child(Element::new("jid", NS_MAM).with_text("@@")),
            );
        assert!(Prefs::from_element(&bad_jid).is_err());
    }
}
