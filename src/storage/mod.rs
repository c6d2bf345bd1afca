//! Rookery's storage layer: small engine-neutral traits, one per concern,
//! that every database engine implements, and the [`StorageError`] they
//! report.
//!
//! | trait            | what it keeps                                              |
//! |------------------|------------------------------------------------------------|
//! | [`AccountStore`] | accounts and their SCRAM credentials                       |
//! | [`RosterStore`]  | rosters (RFC 6121 §2) with versions (§2.6) and tombstones, and pending inbound subscription requests (§3.1.3) |
//! | [`OfflineStore`] | offline messages (XEP-0160), with an O(1) per-user count   |
//! | [`ModuleStore`]  | modules' data: key/value per (owner, module)               |
//! | [`ArchiveAccess`] | the message archives ([`ArchiveEngine`], `archive/`: fjall or sled) |
//! | [`Maintenance`]  | flush, and backup/restore of the whole database            |
//!
//! [`Storage`] is all of them together (implemented for every type that
//! implements each); the server holds an `Arc<dyn Storage>` and hands out
//! narrower views (`&dyn ModuleStore` through [`modules::ModuleAccess`] to
//! the modules). Two engines implement them: the embedded sled database in
//! [`sled`] ([`SledStorage`], the default) and PostgreSQL in [`pgsql`]
//! ([`PgStorage`], `default_db: sql`); [`transfer`] copies everything from
//! one engine to the other (`rookery ctl migrate_db`).
//!
//! Accounts are named by [`AccountKey`] (host, localpart), borrowed from the
//! caller's `BareJid` without allocating. Host and user strings are already
//! normalised by the caller (nodeprep / domain normalisation); storage does
//! not validate JIDs. Stanzas are stored as XML text; [`stanza_codec`] turns
//! them back into elements.
//!
//! Every method that changes data is durable when it returns `Ok` unless its
//! name says otherwise (`_unflushed`, `_lazy`): a crash right after never
//! loses an acknowledged change.
//!
//! Beside the engines, two pieces of shared state sit next to what they
//! cache or order: [`roster_cache`] (the rosters of accounts with sessions,
//! in memory, written through to storage) and [`account_locks`] (the
//! per-account locks that order offline storage against draining it).

pub mod account_locks;
pub mod archive;
pub mod group_commit;
pub mod modules;
pub mod pgsql;
pub mod roster_cache;
pub mod sled;
pub mod stanza_codec;
mod stored_chars;
pub mod transfer;

pub use self::archive::{EngineKind as ArchiveKind, Placement as ArchivePlacement};
pub use self::pgsql::PgStorage;
pub use self::sled::SledStorage;

use serde::{Deserialize, Serialize};

use crate::auth::credentials::StoredCredentials;
pub use xep_support::module::KeyRange;

/// The subscription state of a roster item (RFC 6121 §2.1.2.5), from the
/// roster owner's point of view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Subscription {
    /// Neither side is subscribed to the other's presence.
    None,
    /// The user is subscribed to the contact's presence.
    To,
    /// The contact is subscribed to the user's presence.
    From,
    /// Both.
    Both,
}

impl Subscription {
    /// The `subscription` attribute value: `none`, `to`, `from` or `both`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Subscription::None => "none",
            Subscription::To => "to",
            Subscription::From => "from",
            Subscription::Both => "both",
        }
    }

    /// Whether the user receives the contact's presence (`to` or `both`).
    pub fn has_to(&self) -> bool {
        matches!(self, Subscription::To | Subscription::Both)
    }

    /// Whether the contact receives the user's presence (`from` or `both`).
    pub fn has_from(&self) -> bool {
        matches!(self, Subscription::From | Subscription::Both)
    }

    /// The state with the given `to` and `from` halves.
    pub fn from_halves(to: bool, from: bool) -> Subscription {
        match (to, from) {
            (false, false) => Subscription::None,
            (true, false) => Subscription::To,
            (false, true) => Subscription::From,
            (true, true) => Subscription::Both,
        }
    }
}

/// One item of a user's roster (RFC 6121 §2.1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RosterItem {
    /// The contact's bare JID, normalised.
    pub jid: String,
    /// The handle the user gave the contact.
    pub name: Option<String>,
    /// The groups the item is in.
    pub groups: Vec<String>,
    /// The subscription state.
    pub subscription: Subscription,
    /// `ask='subscribe'`: the user asked to subscribe and the contact has
    /// not answered ("Pending Out").
    pub ask: bool,
    /// The user pre-approved a subscription request from the contact (§3.4).
    pub approved: bool,
    /// The contact asked to subscribe to the user, who has not answered
    /// ("Pending In"; not shown in the roster).
    pub pending_in: bool,
    /// The roster version at which this item last changed (set by
    /// [`RosterStore::roster_put`]).
    pub ver: u64,
}

/// One roster change after a given version (RFC 6121 §2.6.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RosterChange {
    /// The item was added or changed; its `ver` is the version of the change.
    Upsert(RosterItem),
    /// The item was removed at version `ver`.
    Removed { jid: String, ver: u64 },
}

impl RosterChange {
    /// The roster version at which this change happened.
    pub fn ver(&self) -> u64 {
        match self {
            RosterChange::Upsert(item) => item.ver,
            RosterChange::Removed { ver, .. } => *ver,
        }
    }
}

/// What [`OfflineStore::offline_store`] did with a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OfflineStored {
    /// Stored (durably) under this sequence number.
    Stored(u64),
    /// Not stored: the user already has `limit` messages waiting.
    Full,
}

/// Why a storage operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageError {
    /// The database is locked by another process (or another open handle in
    /// this process). The string is the database directory.
    Locked(String),
    /// `create_user` found the account already present.
    AlreadyExists,
    /// Data on disk could not be decoded, or the engine detected corruption.
    Corrupt(String),
    /// The disk (or the user's quota) is full: `ENOSPC` / `EDQUOT`. sled
    /// refuses every later write of this run once one failed (see
    /// docs/architecture.md, "Faults"); reads go on.
    Full(String),
    /// Any other I/O or engine failure.
    Io(String),
    /// The database server cannot be reached, or did not answer within the
    /// configured time, or too many operations already wait for it
    /// (PostgreSQL, `default_db: sql`). Nothing was changed; the same
    /// operation may succeed once the database is back.
    Unavailable(String),
}

impl StorageError {
    /// The stanza error for the sender of a stanza that could not be
    /// stored (RFC 6120 §8.3.3): a full disk is `resource-constraint`
    /// (§8.3.3.18, "lacks the system resources", type `wait`: it may work
    /// once space is freed); anything else is `internal-server-error`
    /// (§8.3.3.8, type `cancel` as the RFC says it SHOULD be).
    pub fn stanza_error(&self) -> xep_support::stanza::StanzaError {
        use xep_support::stanza::{Condition, ErrorType, StanzaError};
        match self {
            StorageError::Full(_) => {
                StanzaError::new(ErrorType::Wait, Condition::ResourceConstraint)
                    .with_text("the server's storage is full")
            }
            StorageError::Unavailable(_) => {
                StanzaError::new(ErrorType::Wait, Condition::ResourceConstraint)
                    .with_text("the server's database is unavailable; try again later")
            }
            _ => StanzaError::new(ErrorType::Cancel, Condition::InternalServerError),
        }
    }
}

impl std::fmt::Display for StorageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StorageError::Locked(dir) => {
                write!(f, "the database at {dir} is in use by another process")
            }
            StorageError::AlreadyExists => write!(f, "the account already exists"),
            StorageError::Corrupt(why) => write!(f, "corrupt database: {why}"),
            StorageError::Full(why) => write!(f, "database disk full: {why}"),
            StorageError::Io(why) => write!(f, "database I/O error: {why}"),
            StorageError::Unavailable(why) => write!(f, "database unavailable: {why}"),
        }
    }
}

impl std::error::Error for StorageError {}

/// A module-API store error back in the server's terms (the archive reports
/// through the module API): a full disk stays [`StorageError::Full`].
impl From<xep_support::module::StoreError> for StorageError {
    fn from(e: xep_support::module::StoreError) -> Self {
        if let Some(original) =
            std::error::Error::source(&e).and_then(|s| s.downcast_ref::<StorageError>())
        {
            return original.clone();
        }
        if e.is_full() {
            StorageError::Full(e.message().to_string())
        } else {
            StorageError::Io(e.message().to_string())
        }
    }
}

/// The key of one account: its host (domain) and localpart, both already
/// normalised. Borrowed and `Copy`, so passing it costs nothing; made from a
/// `BareJid` with [`AccountKey::from`] (a bare domain gives an empty user,
/// which no account has: modules keep a service domain's data there, and
/// server-wide values use an empty host too).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AccountKey<'a> {
    pub host: &'a str,
    pub user: &'a str,
}

impl<'a> AccountKey<'a> {
    /// The account `user@host`.
    pub fn new(host: &'a str, user: &'a str) -> AccountKey<'a> {
        AccountKey { host, user }
    }
}

impl<'a> From<&'a jid::BareJid> for AccountKey<'a> {
    fn from(bare: &'a jid::BareJid) -> AccountKey<'a> {
        AccountKey {
            host: bare.domain().as_str(),
            user: bare.node().map(|n| n.as_str()).unwrap_or(""),
        }
    }
}

impl std::fmt::Display for AccountKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.user, self.host)
    }
}

/// The message archive (XEP-0313) as the server sees it: the modules' API
/// ([`xep_support::archive::ArchiveStore`]) plus durability tickets, so a
/// session can hold its acknowledgements until the appends it caused are on
/// disk (docs/architecture.md, "Durability").
pub trait ArchiveEngine: xep_support::archive::ArchiveStore {
    /// The ticket of the last append so far.
    fn ticket(&self) -> u64;
    /// Write and flush every append made so far, then refuse new ones (the
    /// server is stopping).
    fn close(&self);
    /// Load messages with their own ids (a XEP-0227 import) into an empty
    /// archive; how many were stored. Durable when it returns.
    fn import(
        &self,
        owner: &jid::BareJid,
        msgs: Vec<(u64, xep_support::archive::NewMessage)>,
    ) -> Result<usize, xep_support::module::StoreError>;
    /// Wait until every append up to `ticket` is on disk; `Err` if a write
    /// covering it failed (its [`ArchiveFailure`] was queued first).
    fn durable(
        &self,
        ticket: u64,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), StorageError>> + Send + '_>>;
    /// The reports of failed writes, for the server to tell the senders
    /// (given once; `None` afterwards). Bounded: a report that finds it
    /// full is logged and dropped.
    fn take_failures(&self) -> Option<tokio::sync::mpsc::Receiver<ArchiveFailure>>;
    /// How many reports were queued so far (the `seq` of the last one).
    fn failures_reported(&self) -> u64;
}

/// Appended messages an archive write (or its flush) lost: reported by the
/// engine after [`ArchiveEngine::append`](xep_support::archive::ArchiveStore::append)
/// accepted them, before the waiters of their tickets learn of the failure.
#[derive(Debug)]
pub struct ArchiveFailure {
    /// 1, 2, ... in the order reported.
    pub seq: u64,
    /// Why (a full disk is [`StorageError::Full`]).
    pub error: StorageError,
    /// The messages, in append order.
    pub messages: Vec<LostMessage>,
}

/// One message of an [`ArchiveFailure`].
#[derive(Debug)]
pub struct LostMessage {
    /// The archive's owner (bare JID).
    pub owner: String,
    /// Sent by the owner (its `from` is the sending session), not received.
    pub outgoing: bool,
    /// The stanza as it was archived.
    pub xml: String,
}

/// Accounts and their SCRAM credentials.
pub trait AccountStore: Send + Sync {
    /// Whether the account exists.
    fn user_exists(&self, account: AccountKey<'_>) -> Result<bool, StorageError>;
    /// Create the account atomically; [`StorageError::AlreadyExists`] if present.
    fn create_user(
        &self,
        account: AccountKey<'_>,
        creds: &StoredCredentials,
    ) -> Result<(), StorageError>;
    /// Delete the account and everything every store keeps for it (roster,
    /// pending requests, offline messages, module data); `Ok(false)` if it
    /// did not exist. The account's data goes first and the account last,
    /// so an interrupted deletion can be run again and never leaves data
    /// that a new account of the same name would inherit.
    fn delete_user(&self, account: AccountKey<'_>) -> Result<bool, StorageError>;
    /// The stored credentials, if the account exists.
    fn get_credentials(
        &self,
        account: AccountKey<'_>,
    ) -> Result<Option<StoredCredentials>, StorageError>;
    /// Replace the credentials of an existing account; `Ok(false)` if there
    /// is no such user (nothing is created then).
    fn set_credentials(
        &self,
        account: AccountKey<'_>,
        creds: &StoredCredentials,
    ) -> Result<bool, StorageError>;
    /// The localparts registered on `host`, sorted.
    fn list_users(&self, host: &str) -> Result<Vec<String>, StorageError>;
    /// How many accounts `host` has.
    fn count_users(&self, host: &str) -> Result<usize, StorageError>;
}

/// Rosters (RFC 6121 §2) with versioning (§2.6), and pending inbound
/// subscription requests (§3.1.3). `contact` / `from_bare` are bare JIDs
/// already normalised by the caller.
pub trait RosterStore: Send + Sync {
    /// The live items of the account's roster, sorted by contact JID.
    fn roster_get(&self, account: AccountKey<'_>) -> Result<Vec<RosterItem>, StorageError>;
    /// One roster item, if `contact` is in the roster.
    fn roster_item(
        &self,
        account: AccountKey<'_>,
        contact: &str,
    ) -> Result<Option<RosterItem>, StorageError>;
    /// Add or replace the item for `item.jid`, bumping the roster version in
    /// the same transaction; returns the item as stored (with its new `ver`).
    fn roster_put(
        &self,
        account: AccountKey<'_>,
        item: RosterItem,
    ) -> Result<RosterItem, StorageError>;
    /// Remove `contact` from the roster, leaving a tombstone for versioned
    /// pushes; the new roster version, or `None` (nothing changed) if the
    /// contact was not in the roster.
    fn roster_remove(
        &self,
        account: AccountKey<'_>,
        contact: &str,
    ) -> Result<Option<u64>, StorageError>;
    /// The current roster version (0 for a roster never written).
    fn roster_version(&self, account: AccountKey<'_>) -> Result<u64, StorageError>;
    /// The changes after version `ver`, ordered by version; empty if `ver`
    /// is current, `None` if `ver` is unknown (newer than the current one,
    /// or older than the oldest kept tombstone): send the full roster then.
    fn roster_changes_since(
        &self,
        account: AccountKey<'_>,
        ver: u64,
    ) -> Result<Option<Vec<RosterChange>>, StorageError>;

    /// Keep the request from `from_bare` (replacing an older one from it).
    fn pending_subscription_add(
        &self,
        account: AccountKey<'_>,
        from_bare: &str,
        stanza_xml: &str,
    ) -> Result<(), StorageError>;
    /// Forget the request from `from_bare`; whether there was one.
    fn pending_subscription_remove(
        &self,
        account: AccountKey<'_>,
        from_bare: &str,
    ) -> Result<bool, StorageError>;
    /// Every pending request as (from_bare, stanza_xml), sorted by JID.
    fn pending_subscriptions(
        &self,
        account: AccountKey<'_>,
    ) -> Result<Vec<(String, String)>, StorageError>;
}

/// Offline messages (XEP-0160), on the message path: keep these calls
/// cheap (no scans; one transaction per store).
pub trait OfflineStore: Send + Sync {
    /// Store a message unless the user already has `limit` messages waiting.
    /// Never scans: the count is kept in a counter updated atomically.
    fn offline_store(
        &self,
        account: AccountKey<'_>,
        stanza_xml: &str,
        limit: Option<usize>,
    ) -> Result<OfflineStored, StorageError>;
    /// [`OfflineStore::offline_store`] without making the message durable:
    /// the caller must not acknowledge it before a later
    /// [`Maintenance::flush`] (see [`group_commit`], which batches those
    /// flushes). Engines without a cheaper path keep the default, which is
    /// durable at once.
    fn offline_store_unflushed(
        &self,
        account: AccountKey<'_>,
        stanza_xml: &str,
        limit: Option<usize>,
    ) -> Result<OfflineStored, StorageError> {
        self.offline_store(account, stanza_xml, limit)
    }
    /// Up to `max` stored messages as (seq, stanza_xml), oldest first.
    fn offline_peek(
        &self,
        account: AccountKey<'_>,
        max: usize,
    ) -> Result<Vec<(u64, String)>, StorageError>;
    /// Remove delivered messages (unknown sequence numbers are ignored).
    fn offline_remove(&self, account: AccountKey<'_>, seqs: &[u64]) -> Result<(), StorageError>;
    /// How many messages are waiting, in O(1).
    fn offline_count(&self, account: AccountKey<'_>) -> Result<usize, StorageError>;
    /// Remove every stored message; how many there were.
    #[allow(dead_code)] // part of the storage API; delete_user uses the engine's internals
    fn offline_delete_all(&self, account: AccountKey<'_>) -> Result<usize, StorageError>;
}

/// Modules' data: a key/value space per (owner, module). The owner is an
/// account, or a bare domain (empty user: a module's service domain, e.g.
/// mod_muc's rooms), or nothing (empty host and user: server-wide values
/// such as the dialback secret). Keys of one (owner, module) are ordered
/// bytewise; scans are prefix or range scans, never full scans. Modules
/// reach this through [`modules::ModuleAccess`] (`ctx.store(MODULE)`).
pub trait ModuleStore: Send + Sync {
    /// A module's value under `key`.
    fn module_get(
        &self,
        owner: AccountKey<'_>,
        module: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>, StorageError>;
    /// Store (replace) a module's value; durable when it returns.
    fn module_put(
        &self,
        owner: AccountKey<'_>,
        module: &str,
        key: &str,
        value: &[u8],
    ) -> Result<(), StorageError>;
    /// Store a module's value without waiting for it to reach the disk (the
    /// store flushes on its own shortly after: sled every 500 ms), for
    /// writes on the message path.
    fn module_put_lazy(
        &self,
        owner: AccountKey<'_>,
        module: &str,
        key: &str,
        value: &[u8],
    ) -> Result<(), StorageError> {
        self.module_put(owner, module, key, value)
    }
    /// Store several values of a module atomically, without waiting for the
    /// disk (like [`ModuleStore::module_put_lazy`]).
    fn module_put_many_lazy(
        &self,
        owner: AccountKey<'_>,
        module: &str,
        entries: &[(&str, &[u8])],
    ) -> Result<(), StorageError>;
    /// Remove a module's value; whether there was one. Durable when it returns.
    fn module_delete(
        &self,
        owner: AccountKey<'_>,
        module: &str,
        key: &str,
    ) -> Result<bool, StorageError>;
    /// Every (key, value) of a module whose key starts with `prefix`, sorted
    /// by key (a prefix scan, never a full scan).
    fn module_scan(
        &self,
        owner: AccountKey<'_>,
        module: &str,
        prefix: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, StorageError>;
    /// At most `limit` (key, value) pairs of a module in `range`, in key
    /// order or (`reverse`) from the last key down: a range scan of the
    /// store's ordered keys.
    fn module_scan_range(
        &self,
        owner: AccountKey<'_>,
        module: &str,
        range: &KeyRange<'_>,
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StorageError>;
    /// How many keys of a module are in `range`, without copying values.
    fn module_count_range(
        &self,
        owner: AccountKey<'_>,
        module: &str,
        range: &KeyRange<'_>,
    ) -> Result<usize, StorageError>;
    /// Remove several keys of a module at once (atomic, one flush); how
    /// many existed.
    fn module_delete_many(
        &self,
        owner: AccountKey<'_>,
        module: &str,
        keys: &[String],
    ) -> Result<usize, StorageError>;
}

/// The whole database: durability and backup/restore (`rookery ctl
/// backup` / `restore`).
pub trait Maintenance: Send + Sync {
    /// Write everything still buffered to disk.
    fn flush(&self) -> Result<(), StorageError>;
    /// Write a consistent copy of the whole database to the file `path`
    /// (while writes go on); returns the number of records.
    fn backup(&self, path: &std::path::Path) -> Result<u64, StorageError>;
    /// Replace the whole database with a backup file (checked first);
    /// returns the number of records loaded.
    fn restore(&self, path: &std::path::Path) -> Result<u64, StorageError>;
}

/// The message archives (XEP-0313): their own layout and write path.
pub trait ArchiveAccess: Send + Sync {
    /// The engine's message archives.
    fn archive(&self) -> std::sync::Arc<dyn ArchiveEngine>;
}

/// Everything Rookery keeps on disk: an engine implements the traits by
/// concern and gets this one for free.
pub trait Storage:
    AccountStore + RosterStore + OfflineStore + ModuleStore + ArchiveAccess + Maintenance
{
}

impl<
        T: AccountStore
            + RosterStore
            + OfflineStore
            + ModuleStore
            + ArchiveAccess
            + Maintenance
            + ?Sized,
    > Storage for T
{
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_display_clearly() {
        let e = StorageError::Locked("/var/lib/rookery".into());
        assert_eq!(
            e.to_string(),
            "the database at /var/lib/rookery is in use by another process"
        );
        assert_eq!(
            StorageError::AlreadyExists.to_string(),
            "the account already exists"
        );
        assert!(StorageError::Corrupt("bad".into())
            .to_string()
            .contains("bad"));
        let boxed: Box<dyn std::error::Error> = Box::new(StorageError::Io("disk".into()));
        assert!(boxed.to_string().contains("disk"));
    }

    #[test]
    fn full_disk_is_resource_constraint_anything_else_internal_error() {
        use xep_support::stanza::{Condition, ErrorType};
        let full = StorageError::Full("/db: No space left on device".into()).stanza_error();
        assert_eq!(
            (full.kind, full.condition),
            (ErrorType::Wait, Condition::ResourceConstraint)
        );
        assert!(full.text.is_some());
        for e in [
            StorageError::Io("EIO".into()),
            StorageError::Corrupt("bad".into()),
            StorageError::Locked("/db".into()),
        ] {
            let s = e.stanza_error();
            assert_eq!(
                (s.kind, s.condition),
                (ErrorType::Cancel, Condition::InternalServerError)
            );
        }
    }

    #[test]
    fn subscription_halves_and_names() {
        for (to, from, s, name) in [
            (false, false, Subscription::None, "none"),
            (true, false, Subscription::To, "to"),
            (false, true, Subscription::From, "from"),
            (true, true, Subscription::Both, "both"),
        ] {
            assert_eq!(Subscription::from_halves(to, from), s);
            assert_eq!(s.has_to(), to);
            assert_eq!(s.has_from(), from);
            assert_eq!(s.as_str(), name);
        }
    }

    #[test]
    fn roster_change_versions() {
        let item = RosterItem {
            jid: "a@b".into(),
            name: None,
            groups: vec![],
            subscription: Subscription::None,
            ask: false,
            approved: false,
            pending_in: false,
            ver: 7,
        };
        assert_eq!(RosterChange::Upsert(item).ver(), 7);
        let removed = RosterChange::Removed {
            jid: "a@b".into(),
            ver: 9,
        };
        assert_eq!(removed.ver(), 9);
    }
}
