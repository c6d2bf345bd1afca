//! The sled implementation of [`Storage`]: one embedded `sled::Db` per data
//! directory, with one named tree per kind of record.
//!
//! Layout (all trees opened once, in [`Trees::open`]):
//!
//! | tree                    | key                               | value                                  |
//! |-------------------------|-----------------------------------|----------------------------------------|
//! | `accounts`              | `host\0user`                      | `StoredCredentials` as JSON (serde)    |
//! | `roster`                | `host\0user\0contact`             | `RosterItem` as JSON                   |
//! | `roster_tombstones`     | `host\0user\0contact`             | version of the removal (u64 BE)        |
//! | `roster_meta`           | `host\0user`                      | current version + oldest diffable one  |
//! | `pending_subscriptions` | `host\0user\0from_bare`           | the request stanza (XML text)          |
//! | `offline`               | `host\0user\0` + seq (u64 BE)     | the message stanza (XML text)          |
//! | `offline_counts`        | `host\0user`                      | number of stored messages (u64 BE)     |
//! | `module_data`           | `host\0user\0module\0key`         | a module's value for the account (bytes) |
//!
//! Server-wide values use `module_data` with an empty host and user (no
//! account has them): `\0\0s2s\0dialback_secret` holds the dialback secret.
//!
//! Hosts and localparts never contain NUL (nodeprep and domain rules forbid
//! control characters, and keys with NUL are refused here), so the key
//! `host\0` is an exact prefix of the host's accounts and `list_users` is a
//! prefix scan; likewise `host\0user\0` prefixes exactly one user's roster,
//! tombstones, pending requests and offline messages. sled orders keys
//! bytewise, which for UTF-8 is the same as `String` ordering, so scans are
//! already sorted (and big-endian sequence numbers sort in arrival order).
//!
//! Records that change together change in one sled transaction over the
//! trees involved: a roster item, its tombstone and the roster version; an
//! offline message and the user's message counter. Rosters live in
//! `roster_store.rs`, offline messages and pending requests in
//! `offline_store.rs`; both are `impl SledStorage` blocks that this file's
//! [`Storage`] impl delegates to.
//!
//! To add a record kind: add a tree name constant, a field in [`Trees`],
//! open it in [`Trees::open`], reuse [`key2`] / [`key3`] / [`encode`] /
//! [`decode`] / [`SledStorage::durable`], and clear it in `delete_user`.
//! Every mutating `Storage` method takes `let _w = self.writing();` first
//! (never twice: call the `_impl` functions inside), so `backup` copies a
//! consistent state; backups cover every tree, new ones included.
//!
//! Durability: every mutating method calls `sled::Db::flush` (which writes
//! and fsyncs the log) before returning, so an acknowledged change survives
//! a SIGKILL or power loss.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{KeyRange, OfflineStored, RosterChange, RosterItem, Storage, StorageError};
use crate::auth::credentials::StoredCredentials;

/// Name of the tree holding accounts.
const ACCOUNTS_TREE: &str = "accounts";
/// Name of the tree holding roster items.
const ROSTER_TREE: &str = "roster";
/// Name of the tree holding removed roster items' versions.
const ROSTER_TOMBSTONES_TREE: &str = "roster_tombstones";
/// Name of the tree holding each roster's version.
const ROSTER_META_TREE: &str = "roster_meta";
/// Name of the tree holding pending inbound subscription requests.
const PENDING_TREE: &str = "pending_subscriptions";
/// Name of the tree holding offline messages.
const OFFLINE_TREE: &str = "offline";
/// Name of the tree holding each user's offline message count.
const OFFLINE_COUNTS_TREE: &str = "offline_counts";
/// Name of the tree holding modules' per-account data (private XML, vCards,
/// blocklists, PEP nodes, last logout...).
const MODULE_DATA_TREE: &str = "module_data";

/// The named trees, opened once when the database is opened.
pub(super) struct Trees {
    pub(super) accounts: sled::Tree,
    pub(super) roster: sled::Tree,
    pub(super) roster_tombstones: sled::Tree,
    pub(super) roster_meta: sled::Tree,
    pub(super) pending: sled::Tree,
    pub(super) offline: sled::Tree,
    pub(super) offline_counts: sled::Tree,
    pub(super) module_data: sled::Tree,
}

impl Trees {
    fn open(db: &sled::Db) -> Result<Trees, sled::Error> {
        Ok(Trees {
            accounts: db.open_tree(ACCOUNTS_TREE)?,
            roster: db.open_tree(ROSTER_TREE)?,
            roster_tombstones: db.open_tree(ROSTER_TOMBSTONES_TREE)?,
            roster_meta: db.open_tree(ROSTER_META_TREE)?,
            pending: db.open_tree(PENDING_TREE)?,
            offline: db.open_tree(OFFLINE_TREE)?,
            offline_counts: db.open_tree(OFFLINE_COUNTS_TREE)?,
            module_data: db.open_tree(MODULE_DATA_TREE)?,
        })
    }
}

/// Rookery's embedded database (sled).
pub struct SledStorage {
    pub(super) db: sled::Db,
    dir: PathBuf,
    pub(super) trees: Trees,
    /// Writers hold it shared, `backup` and `restore` exclusively, so a
    /// backup is a consistent copy of every tree (see `backup.rs`).
    pub(super) gate: std::sync::Arc<std::sync::RwLock<()>>,
    /// The message archive (trees `archive_*`, see `sled/archive.rs`).
    pub(super) archive: std::sync::Arc<super::archive::SledArchive>,
}

impl std::fmt::Debug for SledStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStorage")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// Whether a sled error is its "could not acquire lock" failure.
fn is_lock_error(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::WouldBlock || e.to_string().contains("could not acquire lock")
}

/// Translate a sled error into ours; `dir` names the database in messages.
fn map_sled_error(dir: &Path, e: sled::Error) -> StorageError {
    match e {
        sled::Error::Io(io) if is_lock_error(&io) => {
            StorageError::Locked(dir.display().to_string())
        }
        sled::Error::Io(io) => StorageError::Io(format!("{}: {io}", dir.display())),
        sled::Error::Corruption { .. } => StorageError::Corrupt(format!("{}: {e}", dir.display())),
        sled::Error::CollectionNotFound(_) => {
            StorageError::Corrupt(format!("{}: {e}", dir.display()))
        }
        other => StorageError::Io(format!("{}: {other}", dir.display())),
    }
}

/// A two-part key `a\0b`. Refuses parts containing NUL, which would make
/// keys ambiguous.
pub(super) fn key2(a: &str, b: &str) -> Result<Vec<u8>, StorageError> {
    if a.contains('\0') || b.contains('\0') {
        return Err(StorageError::Io("key part contains a NUL byte".into()));
    }
    let mut key = Vec::with_capacity(a.len() + 1 + b.len());
    key.extend_from_slice(a.as_bytes());
    key.push(0);
    key.extend_from_slice(b.as_bytes());
    Ok(key)
}

/// A three-part key `a\0b\0c`. Refuses parts containing NUL.
pub(super) fn key3(a: &str, b: &str, c: &str) -> Result<Vec<u8>, StorageError> {
    if c.contains('\0') {
        return Err(StorageError::Io("key part contains a NUL byte".into()));
    }
    let mut key = prefix2(a, b)?;
    key.extend_from_slice(c.as_bytes());
    Ok(key)
}

/// The prefix `a\0` shared by every key `key2(a, _)`.
fn prefix1(a: &str) -> Result<Vec<u8>, StorageError> {
    key2(a, "")
}

/// The prefix `a\0b\0` shared by every key `key3(a, b, _)`.
pub(super) fn prefix2(a: &str, b: &str) -> Result<Vec<u8>, StorageError> {
    let mut key = key2(a, b)?;
    key.push(0);
    Ok(key)
}

/// The UTF-8 text after `prefix` in `key`; `what` names the record in errors.
pub(super) fn key_suffix(key: &[u8], prefix: &[u8], what: &str) -> Result<String, StorageError> {
    key.get(prefix.len()..)
        .and_then(|rest| std::str::from_utf8(rest).ok())
        .map(str::to_string)
        .ok_or_else(|| StorageError::Corrupt(format!("{what}: key is not UTF-8")))
}

/// Serialise a record value (JSON).
pub(super) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StorageError> {
    serde_json::to_vec(value).map_err(|e| StorageError::Io(format!("cannot encode record: {e}")))
}

/// Deserialise a record value; `what` names it in the error.
pub(super) fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StorageError> {
    serde_json::from_slice(bytes).map_err(|e| StorageError::Corrupt(format!("{what}: {e}")))
}

/// Decode a big-endian u64 value; `what` names it in the error.
pub(super) fn decode_u64(what: &str, bytes: &[u8]) -> Result<u64, StorageError> {
    let arr: [u8; 8] = bytes
        .try_into()
        .map_err(|_| StorageError::Corrupt(format!("{what}: not an 8-byte number")))?;
    Ok(u64::from_be_bytes(arr))
}

/// Create `dir` (and missing parents) owner-only, if it does not exist.
fn create_private_dir(dir: &Path) -> Result<(), StorageError> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| StorageError::Io(format!("cannot create {}: {e}", dir.display())))
}

impl SledStorage {
    /// Open (creating if needed, owner-only 0700) the database in `dir`.
    ///
    /// Returns [`StorageError::Locked`] if another process (or another open
    /// handle in this process) holds the database.
    pub fn open(dir: &Path) -> Result<SledStorage, StorageError> {
        // sled's default page cache is 1 GiB; hot data (credentials at login,
        // rosters at bind) is small, and rosters are cached by the server itself.
        const CACHE_CAPACITY: u64 = 64 * 1024 * 1024;
        create_private_dir(dir)?;
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_CAPACITY)
            .open()
            .map_err(|e| map_sled_error(dir, e))?;
        let trees = Trees::open(&db).map_err(|e| map_sled_error(dir, e))?;
        let gate = std::sync::Arc::new(std::sync::RwLock::new(()));
        let archive = super::archive::SledArchive::open(&db, dir, gate.clone())?;
        // Archives of the old layout (mod_mam's module data), converted once.
        archive.migrate(&trees.module_data)?;
        Ok(SledStorage {
            db,
            dir: dir.to_path_buf(),
            trees,
            gate,
            archive: std::sync::Arc::new(archive),
        })
    }

    /// The directory this database lives in.
    #[cfg(test)]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub(super) fn err(&self, e: sled::Error) -> StorageError {
        map_sled_error(&self.dir, e)
    }

    /// Translate the outcome of a sled transaction whose closure aborts with
    /// a [`StorageError`].
    pub(super) fn tx_result<T>(
        &self,
        r: sled::transaction::TransactionResult<T, StorageError>,
    ) -> Result<T, StorageError> {
        r.map_err(|e| match e {
            sled::transaction::TransactionError::Abort(e) => e,
            sled::transaction::TransactionError::Storage(e) => self.err(e),
        })
    }

    /// Make every change so far durable (`Db::flush` writes and fsyncs the
    /// log) before acknowledging it.
    pub(super) fn durable(&self) -> Result<(), StorageError> {
        self.db.flush().map(|_| ()).map_err(|e| self.err(e))
    }

    /// Taken (shared) by every method that changes data, so that a backup
    /// (which takes it exclusively) sees no half-done change.
    pub(super) fn writing(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.gate.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Remove every key starting with `prefix` from `tree` (one batch).
    pub(super) fn clear_prefix(
        &self,
        tree: &sled::Tree,
        prefix: &[u8],
    ) -> Result<usize, StorageError> {
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for key in tree.scan_prefix(prefix).keys() {
            batch.remove(key.map_err(|e| self.err(e))?);
            n += 1;
        }
        if n > 0 {
            tree.apply_batch(batch).map_err(|e| self.err(e))?;
        }
        Ok(n)
    }
}

impl Storage for SledStorage {
    fn user_exists(&self, host: &str, user: &str) -> Result<bool, StorageError> {
        let key = key2(host, user)?;
        self.trees
            .accounts
            .contains_key(key)
            .map_err(|e| self.err(e))
    }

    fn create_user(
        &self,
        host: &str,
        user: &str,
        creds: &StoredCredentials,
    ) -> Result<(), StorageError> {
        let _w = self.writing();
        let key = key2(host, user)?;
        let value = encode(creds)?;
        let swapped = self
            .trees
            .accounts
            .compare_and_swap(key, None as Option<&[u8]>, Some(value))
            .map_err(|e| self.err(e))?;
        if swapped.is_err() {
            return Err(StorageError::AlreadyExists);
        }
        self.durable()
    }

    /// Deletes the account and everything kept for it: roster (items,
    /// tombstones, version), pending requests, offline messages, module data
    /// and the message archive. The
    /// user's data goes first and the account last, so an interrupted
    /// deletion leaves an account that can be deleted again, never orphaned
    /// data that a new account of the same name would inherit.
    fn delete_user(&self, host: &str, user: &str) -> Result<bool, StorageError> {
        // The archive first (it takes the gate itself).
        if let Ok(owner) = jid::BareJid::new(&format!("{user}@{host}")) {
            use xep_support::archive::ArchiveStore;
            self.archive
                .delete_archive(&owner)
                .map_err(|e| StorageError::Io(e.0))?;
        }
        let _w = self.writing();
        let key = key2(host, user)?;
        self.offline_delete_all_impl(host, user)?;
        self.roster_delete_all(host, user)?;
        self.clear_prefix(&self.trees.pending, &prefix2(host, user)?)?;
        self.clear_prefix(&self.trees.module_data, &prefix2(host, user)?)?;
        let old = self.trees.accounts.remove(key).map_err(|e| self.err(e))?;
        self.durable()?;
        Ok(old.is_some())
    }

    fn get_credentials(
        &self,
        host: &str,
        user: &str,
    ) -> Result<Option<StoredCredentials>, StorageError> {
        let key = key2(host, user)?;
        match self.trees.accounts.get(key).map_err(|e| self.err(e))? {
            Some(bytes) => Ok(Some(decode(
                &format!("credentials of {user}@{host}"),
                &bytes,
            )?)),
            None => Ok(None),
        }
    }

    fn set_credentials(
        &self,
        host: &str,
        user: &str,
        creds: &StoredCredentials,
    ) -> Result<bool, StorageError> {
        let _w = self.writing();
        let key = key2(host, user)?;
        let value = encode(creds)?;
        // Atomic "update if present": absent stays absent.
        let previous = self
            .trees
            .accounts
            .fetch_and_update(key, |old| old.map(|_| value.clone()))
            .map_err(|e| self.err(e))?;
        if previous.is_none() {
            return Ok(false);
        }
        self.durable()?;
        Ok(true)
    }

    fn list_users(&self, host: &str) -> Result<Vec<String>, StorageError> {
        let prefix = prefix1(host)?;
        let mut users = Vec::new();
        for item in self.trees.accounts.scan_prefix(&prefix) {
            let (key, _) = item.map_err(|e| self.err(e))?;
            let user = std::str::from_utf8(&key[prefix.len()..]).map_err(|_| {
                StorageError::Corrupt(format!("account key on {host} is not UTF-8"))
            })?;
            users.push(user.to_string());
        }
        Ok(users)
    }

    fn count_users(&self, host: &str) -> Result<usize, StorageError> {
        let prefix = prefix1(host)?;
        let mut count = 0;
        for item in self.trees.accounts.scan_prefix(&prefix).keys() {
            item.map_err(|e| self.err(e))?;
            count += 1;
        }
        Ok(count)
    }

    fn flush(&self) -> Result<(), StorageError> {
        self.durable()
    }

    fn roster_get(&self, host: &str, user: &str) -> Result<Vec<RosterItem>, StorageError> {
        self.roster_get_impl(host, user)
    }

    fn roster_item(
        &self,
        host: &str,
        user: &str,
        contact: &str,
    ) -> Result<Option<RosterItem>, StorageError> {
        self.roster_item_impl(host, user, contact)
    }

    fn roster_put(
        &self,
        host: &str,
        user: &str,
        item: RosterItem,
    ) -> Result<RosterItem, StorageError> {
        let _w = self.writing();
        self.roster_put_impl(host, user, item)
    }

    fn roster_remove(
        &self,
        host: &str,
        user: &str,
        contact: &str,
    ) -> Result<Option<u64>, StorageError> {
        let _w = self.writing();
        self.roster_remove_impl(host, user, contact)
    }

    fn roster_version(&self, host: &str, user: &str) -> Result<u64, StorageError> {
        self.roster_version_impl(host, user)
    }

    fn roster_changes_since(
        &self,
        host: &str,
        user: &str,
        ver: u64,
    ) -> Result<Option<Vec<RosterChange>>, StorageError> {
        self.roster_changes_since_impl(host, user, ver)
    }

    fn pending_subscription_add(
        &self,
        host: &str,
        user: &str,
        from_bare: &str,
        stanza_xml: &str,
    ) -> Result<(), StorageError> {
        let _w = self.writing();
        self.pending_add_impl(host, user, from_bare, stanza_xml)
    }

    fn pending_subscription_remove(
        &self,
        host: &str,
        user: &str,
        from_bare: &str,
    ) -> Result<bool, StorageError> {
        let _w = self.writing();
        self.pending_remove_impl(host, user, from_bare)
    }

    fn pending_subscriptions(
        &self,
        host: &str,
        user: &str,
    ) -> Result<Vec<(String, String)>, StorageError> {
        self.pending_list_impl(host, user)
    }

    fn offline_store(
        &self,
        host: &str,
        user: &str,
        stanza_xml: &str,
        limit: Option<usize>,
    ) -> Result<OfflineStored, StorageError> {
        let _w = self.writing();
        self.offline_store_impl(host, user, stanza_xml, limit, true)
    }

    fn offline_store_unflushed(
        &self,
        host: &str,
        user: &str,
        stanza_xml: &str,
        limit: Option<usize>,
    ) -> Result<OfflineStored, StorageError> {
        let _w = self.writing();
        self.offline_store_impl(host, user, stanza_xml, limit, false)
    }

    fn offline_peek(
        &self,
        host: &str,
        user: &str,
        max: usize,
    ) -> Result<Vec<(u64, String)>, StorageError> {
        self.offline_peek_impl(host, user, max)
    }

    fn offline_remove(&self, host: &str, user: &str, seqs: &[u64]) -> Result<(), StorageError> {
        let _w = self.writing();
        self.offline_remove_impl(host, user, seqs)
    }

    fn offline_count(&self, host: &str, user: &str) -> Result<usize, StorageError> {
        self.offline_count_impl(host, user)
    }

    fn offline_delete_all(&self, host: &str, user: &str) -> Result<usize, StorageError> {
        let _w = self.writing();
        self.offline_delete_all_impl(host, user)
    }

    fn module_get(
        &self,
        host: &str,
        user: &str,
        module: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        let k = module_key(host, user, module, key)?;
        let v = self.trees.module_data.get(k).map_err(|e| self.err(e))?;
        Ok(v.map(|v| v.to_vec()))
    }

    fn module_put(
        &self,
        host: &str,
        user: &str,
        module: &str,
        key: &str,
        value: &[u8],
    ) -> Result<(), StorageError> {
        let _w = self.writing();
        let k = module_key(host, user, module, key)?;
        self.trees
            .module_data
            .insert(k, value)
            .map_err(|e| self.err(e))?;
        self.durable()
    }

    fn module_put_lazy(
        &self,
        host: &str,
        user: &str,
        module: &str,
        key: &str,
        value: &[u8],
    ) -> Result<(), StorageError> {
        let _w = self.writing();
        let k = module_key(host, user, module, key)?;
        self.trees
            .module_data
            .insert(k, value)
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn module_put_many_lazy(
        &self,
        host: &str,
        user: &str,
        module: &str,
        entries: &[(&str, &[u8])],
    ) -> Result<(), StorageError> {
        let _w = self.writing();
        let mut batch = sled::Batch::default();
        for (key, value) in entries {
            batch.insert(module_key(host, user, module, key)?, *value);
        }
        self.trees
            .module_data
            .apply_batch(batch)
            .map_err(|e| self.err(e))
    }

    fn module_delete(
        &self,
        host: &str,
        user: &str,
        module: &str,
        key: &str,
    ) -> Result<bool, StorageError> {
        let _w = self.writing();
        let k = module_key(host, user, module, key)?;
        let old = self.trees.module_data.remove(k).map_err(|e| self.err(e))?;
        if old.is_some() {
            self.durable()?;
        }
        Ok(old.is_some())
    }

    fn module_scan(
        &self,
        host: &str,
        user: &str,
        module: &str,
        prefix: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        let base = module_key(host, user, module, "")?;
        let mut full = base.clone();
        full.extend_from_slice(prefix.as_bytes());
        let mut out = Vec::new();
        for kv in self.trees.module_data.scan_prefix(&full) {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            out.push((key_suffix(&k, &base, "module data")?, v.to_vec()));
        }
        Ok(out)
    }

    fn module_scan_range(
        &self,
        host: &str,
        user: &str,
        module: &str,
        range: &KeyRange<'_>,
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        let base = module_key(host, user, module, "")?;
        let Some(bounds) = sled_bounds(&base, range) else {
            return Ok(Vec::new());
        };
        let iter = self.trees.module_data.range(bounds);
        let mut out = Vec::new();
        let mut push = |kv: sled::Result<(sled::IVec, sled::IVec)>| {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            out.push((key_suffix(&k, &base, "module data")?, v.to_vec()));
            Ok::<(), StorageError>(())
        };
        if reverse {
            for kv in iter.rev().take(limit) {
                push(kv)?;
            }
        } else {
            for kv in iter.take(limit) {
                push(kv)?;
            }
        }
        Ok(out)
    }

    fn module_count_range(
        &self,
        host: &str,
        user: &str,
        module: &str,
        range: &KeyRange<'_>,
    ) -> Result<usize, StorageError> {
        let base = module_key(host, user, module, "")?;
        let Some(bounds) = sled_bounds(&base, range) else {
            return Ok(0);
        };
        let mut n = 0;
        for kv in self.trees.module_data.range(bounds) {
            kv.map_err(|e| self.err(e))?;
            n += 1;
        }
        Ok(n)
    }

    fn module_delete_many(
        &self,
        host: &str,
        user: &str,
        module: &str,
        keys: &[String],
    ) -> Result<usize, StorageError> {
        if keys.is_empty() {
            return Ok(0);
        }
        let _w = self.writing();
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for key in keys {
            let k = module_key(host, user, module, key)?;
            if self
                .trees
                .module_data
                .contains_key(&k)
                .map_err(|e| self.err(e))?
            {
                n += 1;
            }
            batch.remove(k);
        }
        self.trees
            .module_data
            .apply_batch(batch)
            .map_err(|e| self.err(e))?;
        self.durable()?;
        Ok(n)
    }

    fn archive(&self) -> std::sync::Arc<dyn super::ArchiveEngine> {
        self.archive.clone()
    }

    fn backup(&self, path: &Path) -> Result<u64, StorageError> {
        self.backup_impl(path)
    }

    fn restore(&self, path: &Path) -> Result<u64, StorageError> {
        let n = self.restore_impl(path)?;
        // A backup from before the archive had its own trees.
        self.archive.migrate(&self.trees.module_data)?;
        Ok(n)
    }
}

/// Lower and upper bounds of a sled key range.
type SledRange = (std::ops::Bound<Vec<u8>>, std::ops::Bound<Vec<u8>>);

/// The sled key range of `range` under a module's `base` key, clamped to
/// the range's prefix; `None` when it is empty.
fn sled_bounds(base: &[u8], range: &KeyRange<'_>) -> Option<SledRange> {
    use std::ops::Bound::{Excluded, Included, Unbounded};
    let full = |k: &str| {
        let mut v = base.to_vec();
        v.extend_from_slice(k.as_bytes());
        v
    };
    let start = full(range.prefix);
    // No UTF-8 key has the byte 0xFF: every key with the prefix is below this.
    let mut end = start.clone();
    end.push(0xFF);
    let lower = match range.lower {
        Included(k) if full(k) > start => Included(full(k)),
        Excluded(k) if full(k) >= start => Excluded(full(k)),
        _ => Included(start),
    };
    let upper = match range.upper {
        Included(k) if full(k) < end => Included(full(k)),
        Excluded(k) if full(k) < end => Excluded(full(k)),
        _ => Excluded(end),
    };
    let (lo, lo_incl) = match &lower {
        Included(k) => (k, true),
        Excluded(k) => (k, false),
        Unbounded => unreachable!(),
    };
    let (hi, hi_incl) = match &upper {
        Included(k) => (k, true),
        Excluded(k) => (k, false),
        Unbounded => unreachable!(),
    };
    if lo > hi || (lo == hi && !(lo_incl && hi_incl)) {
        return None;
    }
    Some((lower, upper))
}

/// The key `host\0user\0module\0key` of a module's record; the module's own
/// key may contain anything (it is the last part).
fn module_key(host: &str, user: &str, module: &str, key: &str) -> Result<Vec<u8>, StorageError> {
    let mut k = key3(host, user, module)?;
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    Ok(k)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::credentials::ScramSecret;

    /// Cheap, distinguishable credentials (no PBKDF2).
    fn fake_creds(tag: u8) -> StoredCredentials {
        let secret = ScramSecret {
            salt: vec![tag; 16],
            iterations: 4096,
            stored_key: vec![tag; 20],
            server_key: vec![tag.wrapping_add(1); 20],
        };
        StoredCredentials {
            sha1: secret.clone(),
            sha256: Some(secret),
        }
    }

    #[test]
    fn module_range_scans_count_and_delete_many() {
        use std::ops::Bound::*;
        let dir = tempfile::tempdir().unwrap();
        let s = SledStorage::open(dir.path()).unwrap();
        for k in ["m:01", "m:02", "m:03", "m:04", "n", "l"] {
            s.module_put_lazy("localhost", "alice", "mod_mam", k, k.as_bytes())
                .unwrap();
        }
        s.module_put("localhost", "alicex", "mod_mam", "m:00", b"x")
            .unwrap();
        let keys = |r: Vec<(String, Vec<u8>)>| r.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        let all = KeyRange::prefix("m:");
        let r = s
            .module_scan_range("localhost", "alice", "mod_mam", &all, false, 10)
            .unwrap();
        assert_eq!(keys(r), ["m:01", "m:02", "m:03", "m:04"]);
        let r = s
            .module_scan_range("localhost", "alice", "mod_mam", &all, true, 2)
            .unwrap();
        assert_eq!(keys(r), ["m:04", "m:03"]);
        let mid = KeyRange {
            prefix: "m:",
            lower: Excluded("m:01"),
            upper: Included("m:03"),
        };
        let r = s
            .module_scan_range("localhost", "alice", "mod_mam", &mid, false, 10)
            .unwrap();
        assert_eq!(keys(r), ["m:02", "m:03"]);
        assert_eq!(
            s.module_count_range("localhost", "alice", "mod_mam", &mid)
                .unwrap(),
            2
        );
        // Bounds outside the prefix are clamped to it; an empty range is empty.
        let wide = KeyRange {
            prefix: "m:",
            lower: Included("a"),
            upper: Included("z"),
        };
        assert_eq!(
            s.module_count_range("localhost", "alice", "mod_mam", &wide)
                .unwrap(),
            4
        );
        let empty = KeyRange {
            prefix: "m:",
            lower: Excluded("m:03"),
            upper: Excluded("m:03"),
        };
        assert_eq!(
            s.module_count_range("localhost", "alice", "mod_mam", &empty)
                .unwrap(),
            0
        );
        let gone = s
            .module_delete_many(
                "localhost",
                "alice",
                "mod_mam",
                &["m:01".into(), "m:02".into(), "m:99".into()],
            )
            .unwrap();
        assert_eq!(gone, 2);
        assert_eq!(
            s.module_count_range("localhost", "alice", "mod_mam", &all)
                .unwrap(),
            2
        );
    }

    #[test]
    fn create_get_exists_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStorage::open(dir.path()).unwrap();
        assert!(!s.user_exists("localhost", "alice").unwrap());
        assert_eq!(s.get_credentials("localhost", "alice").unwrap(), None);
        s.create_user("localhost", "alice", &fake_creds(1)).unwrap();
        assert!(s.user_exists("localhost", "alice").unwrap());
        assert!(!s.user_exists("example.org", "alice").unwrap());
        assert_eq!(
            s.get_credentials("localhost", "alice").unwrap(),
            Some(fake_creds(1))
        );
    }

    #[test]
    fn module_data_is_per_account_and_module_scanned_by_prefix_and_deleted_with_the_user() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStorage::open(dir.path()).unwrap();
        s.create_user("localhost", "alice", &fake_creds(1)).unwrap();
        s.create_user("localhost", "alicex", &fake_creds(2))
            .unwrap();
        s.module_put("localhost", "alice", "mod_pep", "node:b", b"2")
            .unwrap();
        s.module_put("localhost", "alice", "mod_pep", "node:a", b"1")
            .unwrap();
        s.module_put("localhost", "alice", "mod_pep", "other", b"x")
            .unwrap();
        s.module_put("localhost", "alice", "mod_pe", "node:z", b"no")
            .unwrap();
        s.module_put("localhost", "alicex", "mod_pep", "node:c", b"3")
            .unwrap();
        let scan = s
            .module_scan("localhost", "alice", "mod_pep", "node:")
            .unwrap();
        assert_eq!(
            scan,
            vec![
                ("node:a".to_string(), b"1".to_vec()),
                ("node:b".to_string(), b"2".to_vec())
            ]
        );
        assert_eq!(
            s.module_get("localhost", "alice", "mod_pep", "other")
                .unwrap(),
            Some(b"x".to_vec())
        );
        assert!(s
            .module_delete("localhost", "alice", "mod_pep", "other")
            .unwrap());
        assert!(!s
            .module_delete("localhost", "alice", "mod_pep", "other")
            .unwrap());
        assert!(s.delete_user("localhost", "alice").unwrap());
        assert!(s
            .module_scan("localhost", "alice", "mod_pep", "")
            .unwrap()
            .is_empty());
        assert!(s
            .module_scan("localhost", "alice", "mod_pe", "")
            .unwrap()
            .is_empty());
        // Another account whose name extends this one's keeps its data.
        assert_eq!(
            s.module_scan("localhost", "alicex", "mod_pep", "")
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn real_credentials_survive_encoding() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStorage::open(dir.path()).unwrap();
        let creds = StoredCredentials::derive("pencil", 4096).unwrap();
        s.create_user("localhost", "user", &creds).unwrap();
        let back = s.get_credentials("localhost", "user").unwrap().unwrap();
        assert!(back.verify_password("pencil"));
        assert!(!back.verify_password("pen"));
    }

    #[test]
    fn create_twice_is_already_exists_and_keeps_first() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStorage::open(dir.path()).unwrap();
        s.create_user("localhost", "alice", &fake_creds(1)).unwrap();
        assert_eq!(
            s.create_user("localhost", "alice", &fake_creds(2)),
            Err(StorageError::AlreadyExists)
        );
        assert_eq!(
            s.get_credentials("localhost", "alice").unwrap(),
            Some(fake_creds(1))
        );
    }

    #[test]
    fn delete_reports_presence() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStorage::open(dir.path()).unwrap();
        assert!(!s.delete_user("localhost", "alice").unwrap());
        s.create_user("localhost", "alice", &fake_creds(1)).unwrap();
        assert!(s.delete_user("localhost", "alice").unwrap());
        assert!(!s.user_exists("localhost", "alice").unwrap());
        assert!(!s.delete_user("localhost", "alice").unwrap());
        // Can be registered again afterwards.
        s.create_user("localhost", "alice", &fake_creds(3)).unwrap();
    }

    #[test]
    fn set_credentials_only_for_existing_users() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStorage::open(dir.path()).unwrap();
        assert!(!s
            .set_credentials("localhost", "bob", &fake_creds(1))
            .unwrap());
        assert!(!s.user_exists("localhost", "bob").unwrap());
        s.create_user("localhost", "bob", &fake_creds(1)).unwrap();
        assert!(s
            .set_credentials("localhost", "bob", &fake_creds(2))
            .unwrap());
        assert_eq!(
            s.get_credentials("localhost", "bob").unwrap(),
            Some(fake_creds(2))
        );
    }

    #[test]
    fn list_is_sorted_and_per_host() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStorage::open(dir.path()).unwrap();
        for user in ["zoe", "alice", "émile", "bob", "al"] {
            s.create_user("ex", user, &fake_creds(1)).unwrap();
        }
        // A host whose name extends "ex" must not leak into "ex".
        s.create_user("ex.org", "carol", &fake_creds(1)).unwrap();
        s.create_user("e", "dave", &fake_creds(1)).unwrap();
        assert_eq!(
            s.list_users("ex").unwrap(),
            vec!["al", "alice", "bob", "zoe", "émile"]
        );
        assert_eq!(s.count_users("ex").unwrap(), 5);
        assert_eq!(s.list_users("ex.org").unwrap(), vec!["carol"]);
        assert_eq!(s.count_users("e").unwrap(), 1);
        assert!(s.list_users("nowhere").unwrap().is_empty());
        assert_eq!(s.count_users("nowhere").unwrap(), 0);
    }

    #[test]
    fn nul_in_key_parts_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStorage::open(dir.path()).unwrap();
        assert!(matches!(
            s.create_user("ex", "a\0b", &fake_creds(1)),
            Err(StorageError::Io(_))
        ));
        assert!(matches!(s.list_users("e\0x"), Err(StorageError::Io(_))));
    }

    #[test]
    fn data_persists_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStorage::open(dir.path()).unwrap();
            s.create_user("localhost", "alice", &fake_creds(1)).unwrap();
            s.create_user("localhost", "bob", &fake_creds(2)).unwrap();
            s.delete_user("localhost", "bob").unwrap();
            s.set_credentials("localhost", "alice", &fake_creds(5))
                .unwrap();
        }
        let s = SledStorage::open(dir.path()).unwrap();
        assert_eq!(s.list_users("localhost").unwrap(), vec!["alice"]);
        assert_eq!(
            s.get_credentials("localhost", "alice").unwrap(),
            Some(fake_creds(5))
        );
    }

    #[test]
    fn second_open_is_locked() {
        let dir = tempfile::tempdir().unwrap();
        let first = SledStorage::open(dir.path()).unwrap();
        match SledStorage::open(dir.path()) {
            Err(StorageError::Locked(d)) => assert_eq!(d, dir.path().display().to_string()),
            other => panic!("expected Locked, got {other:?}"),
        }
        drop(first);
    }

    #[test]
    fn missing_dir_is_created_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a").join("db");
        let s = SledStorage::open(&db).unwrap();
        assert_eq!(s.dir(), db.as_path());
        let mode = std::fs::metadata(&db).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn undecodable_value_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStorage::open(dir.path()).unwrap();
        s.trees
            .accounts
            .insert(key2("localhost", "mallory").unwrap(), &b"not json"[..])
            .unwrap();
        assert!(matches!(
            s.get_credentials("localhost", "mallory"),
            Err(StorageError::Corrupt(_))
        ));
        // Existence does not need decoding.
        assert!(s.user_exists("localhost", "mallory").unwrap());
    }

    const KILL_ENV: &str = "ROOKERY_TEST_SIGKILL_DB";

    /// Child half of `acknowledged_changes_survive_sigkill`: makes changes,
    /// then kills itself with SIGKILL (no destructors, no final flush).
    #[test]
    #[ignore = "run by acknowledged_changes_survive_sigkill in a child process"]
    fn sigkill_child() {
        let Some(dir) = std::env::var_os(KILL_ENV) else {
            return;
        };
        let s = SledStorage::open(Path::new(&dir)).unwrap();
        s.create_user("localhost", "alice", &fake_creds(1)).unwrap();
        s.create_user("localhost", "bob", &fake_creds(2)).unwrap();
        assert!(s.delete_user("localhost", "bob").unwrap());
        assert!(s
            .set_credentials("localhost", "alice", &fake_creds(7))
            .unwrap());
        // SAFETY: plain libc calls with no memory arguments.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
        unreachable!("SIGKILL did not stop the process");
    }

    #[test]
    fn acknowledged_changes_survive_sigkill() {
        use std::os::unix::process::ExitStatusExt;
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        // Test names are relative to the crate root: drop the crate name.
        let module = module_path!().split_once("::").unwrap().1;
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                &format!("{module}::sigkill_child"),
                "--ignored",
                "--test-threads=1",
            ])
            .env(KILL_ENV, &db)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL), "child: {status:?}");
        let s = SledStorage::open(&db).unwrap();
        assert_eq!(s.list_users("localhost").unwrap(), vec!["alice"]);
        assert_eq!(
            s.get_credentials("localhost", "alice").unwrap(),
            Some(fake_creds(7))
        );
    }
}
