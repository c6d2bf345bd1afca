//! Rookery's storage layer: the [`Storage`] trait every database engine
//! implements, and the [`StorageError`] it reports.
//!
//! The only engine today is the embedded sled database in [`sled_store`]
//! ([`SledStorage`]). The trait is kept small and engine-neutral so that
//! another engine (for clusters) can be added later without touching callers.
//!
//! Host and user strings handed to storage are already normalised by the
//! caller (nodeprep / domain normalisation); storage does not validate JIDs.
//!
//! Besides accounts, storage keeps the RFC 6121 instant-messaging state:
//! rosters with versions (§2.6) and tombstones of removed items, pending
//! inbound subscription requests (§3.1.3), and offline messages (XEP-0160).
//! Stanzas are stored as XML text; [`stanza_codec`] turns them back into
//! elements.

// The message archive's sled engine (its own trees, by concern, under
// storage/sled/; see archive.rs there).
#[path = "sled/archive.rs"]
pub mod archive;
#[path = "sled/archive_migrate.rs"]
mod archive_migrate;
#[path = "sled/archive_read.rs"]
mod archive_read;
#[path = "sled/archive_record.rs"]
mod archive_record;
#[path = "sled/archive_writer.rs"]
mod archive_writer;
mod backup;
pub mod group_commit;
mod offline_store;
mod roster_store;
pub mod sled_store;
pub mod stanza_codec;

pub use sled_store::SledStorage;

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
    /// [`Storage::roster_put`]).
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

/// What [`Storage::offline_store`] did with a message.
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
    /// Any other I/O or engine failure.
    Io(String),
}

impl std::fmt::Display for StorageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StorageError::Locked(dir) => {
                write!(f, "the database at {dir} is in use by another process")
            }
            StorageError::AlreadyExists => write!(f, "the account already exists"),
            StorageError::Corrupt(why) => write!(f, "corrupt database: {why}"),
            StorageError::Io(why) => write!(f, "database I/O error: {why}"),
        }
    }
}

impl std::error::Error for StorageError {}

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
    /// covering it failed.
    fn durable(
        &self,
        ticket: u64,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), StorageError>> + Send + '_>>;
}

/// What Rookery keeps on disk. Accounts are keyed by (host, localpart); a
/// user's rosters, pending requests and offline messages by (host,
/// localpart, ...), and `contact` / `from_bare` arguments are bare JIDs
/// already normalised by the caller.
///
/// Every method that changes data is durable when it returns `Ok`: a crash
/// right after never loses an acknowledged change.
pub trait Storage: Send + Sync {
    /// Whether the account `user@host` exists.
    fn user_exists(&self, host: &str, user: &str) -> Result<bool, StorageError>;
    /// Create `user@host` atomically; [`StorageError::AlreadyExists`] if present.
    fn create_user(
        &self,
        host: &str,
        user: &str,
        creds: &StoredCredentials,
    ) -> Result<(), StorageError>;
    /// Delete `user@host`; `Ok(false)` if it did not exist.
    fn delete_user(&self, host: &str, user: &str) -> Result<bool, StorageError>;
    /// The stored credentials of `user@host`, if the account exists.
    fn get_credentials(
        &self,
        host: &str,
        user: &str,
    ) -> Result<Option<StoredCredentials>, StorageError>;
    /// Replace the credentials of an existing account; `Ok(false)` if there
    /// is no such user (nothing is created then).
    fn set_credentials(
        &self,
        host: &str,
        user: &str,
        creds: &StoredCredentials,
    ) -> Result<bool, StorageError>;
    /// The localparts registered on `host`, sorted.
    fn list_users(&self, host: &str) -> Result<Vec<String>, StorageError>;
    /// How many accounts `host` has.
    fn count_users(&self, host: &str) -> Result<usize, StorageError>;
    /// Write everything still buffered to disk.
    fn flush(&self) -> Result<(), StorageError>;

    // --- Rosters (RFC 6121 §2), with versioning (§2.6) ---

    /// The live items of `user@host`'s roster, sorted by contact JID.
    fn roster_get(&self, host: &str, user: &str) -> Result<Vec<RosterItem>, StorageError>;
    /// One roster item, if `contact` is in the roster.
    fn roster_item(
        &self,
        host: &str,
        user: &str,
        contact: &str,
    ) -> Result<Option<RosterItem>, StorageError>;
    /// Add or replace the item for `item.jid`, bumping the roster version in
    /// the same transaction; returns the item as stored (with its new `ver`).
    fn roster_put(
        &self,
        host: &str,
        user: &str,
        item: RosterItem,
    ) -> Result<RosterItem, StorageError>;
    /// Remove `contact` from the roster, leaving a tombstone for versioned
    /// pushes; the new roster version, or `None` (nothing changed) if the
    /// contact was not in the roster.
    fn roster_remove(
        &self,
        host: &str,
        user: &str,
        contact: &str,
    ) -> Result<Option<u64>, StorageError>;
    /// The current roster version (0 for a roster never written).
    fn roster_version(&self, host: &str, user: &str) -> Result<u64, StorageError>;
    /// The changes after version `ver`, ordered by version; empty if `ver`
    /// is current, `None` if `ver` is unknown (newer than the current one,
    /// or older than the oldest kept tombstone): send the full roster then.
    fn roster_changes_since(
        &self,
        host: &str,
        user: &str,
        ver: u64,
    ) -> Result<Option<Vec<RosterChange>>, StorageError>;

    // --- Pending inbound subscription requests (RFC 6121 §3.1.3) ---

    /// Keep the request from `from_bare` (replacing an older one from it).
    fn pending_subscription_add(
        &self,
        host: &str,
        user: &str,
        from_bare: &str,
        stanza_xml: &str,
    ) -> Result<(), StorageError>;
    /// Forget the request from `from_bare`; whether there was one.
    fn pending_subscription_remove(
        &self,
        host: &str,
        user: &str,
        from_bare: &str,
    ) -> Result<bool, StorageError>;
    /// Every pending request as (from_bare, stanza_xml), sorted by JID.
    fn pending_subscriptions(
        &self,
        host: &str,
        user: &str,
    ) -> Result<Vec<(String, String)>, StorageError>;

    // --- Offline messages (XEP-0160) ---

    /// Store a message unless the user already has `limit` messages waiting.
    /// Never scans: the count is kept in a counter updated atomically.
    fn offline_store(
        &self,
        host: &str,
        user: &str,
        stanza_xml: &str,
        limit: Option<usize>,
    ) -> Result<OfflineStored, StorageError>;
    /// [`Storage::offline_store`] without making the message durable: the
    /// caller must not acknowledge it before a later [`Storage::flush`]
    /// (see [`group_commit`], which batches those flushes). Engines without
    /// a cheaper path keep the default, which is durable at once.
    fn offline_store_unflushed(
        &self,
        host: &str,
        user: &str,
        stanza_xml: &str,
        limit: Option<usize>,
    ) -> Result<OfflineStored, StorageError> {
        self.offline_store(host, user, stanza_xml, limit)
    }
    /// Up to `max` stored messages as (seq, stanza_xml), oldest first.
    fn offline_peek(
        &self,
        host: &str,
        user: &str,
        max: usize,
    ) -> Result<Vec<(u64, String)>, StorageError>;
    /// Remove delivered messages (unknown sequence numbers are ignored).
    fn offline_remove(&self, host: &str, user: &str, seqs: &[u64]) -> Result<(), StorageError>;
    /// How many messages are waiting, in O(1).
    fn offline_count(&self, host: &str, user: &str) -> Result<usize, StorageError>;
    /// Remove every stored message; how many there were.
    #[allow(dead_code)] // part of the storage API; delete_user uses the sled internals
    fn offline_delete_all(&self, host: &str, user: &str) -> Result<usize, StorageError>;

    // --- Modules' per-account data (key/value per module and account) ---

    /// A module's value under `key` for `user@host`.
    fn module_get(
        &self,
        host: &str,
        user: &str,
        module: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>, StorageError>;
    /// Store (replace) a module's value; durable when it returns.
    fn module_put(
        &self,
        host: &str,
        user: &str,
        module: &str,
        key: &str,
        value: &[u8],
    ) -> Result<(), StorageError>;
    /// Store a module's value without waiting for it to reach the disk (the
    /// store flushes on its own shortly after: sled every 500 ms), for
    /// writes on the message path such as archiving (XEP-0313).
    fn module_put_lazy(
        &self,
        host: &str,
        user: &str,
        module: &str,
        key: &str,
        value: &[u8],
    ) -> Result<(), StorageError> {
        self.module_put(host, user, module, key, value)
    }
    /// Store several values of a module atomically, without waiting for the
    /// disk (like [`Storage::module_put_lazy`]).
    fn module_put_many_lazy(
        &self,
        host: &str,
        user: &str,
        module: &str,
        entries: &[(&str, &[u8])],
    ) -> Result<(), StorageError>;
    /// Remove a module's value; whether there was one. Durable when it returns.
    fn module_delete(
        &self,
        host: &str,
        user: &str,
        module: &str,
        key: &str,
    ) -> Result<bool, StorageError>;
    /// Every (key, value) of a module for `user@host` whose key starts with
    /// `prefix`, sorted by key (a prefix scan, never a full scan).
    fn module_scan(
        &self,
        host: &str,
        user: &str,
        module: &str,
        prefix: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, StorageError>;
    /// At most `limit` (key, value) pairs of a module for `user@host` in
    /// `range`, in key order or (`reverse`) from the last key down: a range
    /// scan of the store's ordered keys.
    fn module_scan_range(
        &self,
        host: &str,
        user: &str,
        module: &str,
        range: &KeyRange<'_>,
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StorageError>;
    /// How many keys of a module for `user@host` are in `range`, without
    /// copying values.
    fn module_count_range(
        &self,
        host: &str,
        user: &str,
        module: &str,
        range: &KeyRange<'_>,
    ) -> Result<usize, StorageError>;
    /// Remove several keys of a module for `user@host` at once (atomic, one
    /// flush); how many existed.
    fn module_delete_many(
        &self,
        host: &str,
        user: &str,
        module: &str,
        keys: &[String],
    ) -> Result<usize, StorageError>;
    // --- The message archive ---

    /// The message archives (their own layout and write path).
    fn archive(&self) -> std::sync::Arc<dyn ArchiveEngine>;

    // --- Whole database ---

    /// Write a consistent copy of the whole database to the file `path`
    /// (while writes go on); returns the number of records.
    fn backup(&self, path: &std::path::Path) -> Result<u64, StorageError>;
    /// Replace the whole database with a backup file (checked first);
    /// returns the number of records loaded.
    fn restore(&self, path: &std::path::Path) -> Result<u64, StorageError>;
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
