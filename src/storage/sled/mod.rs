//! The sled engine: one embedded `sled::Db` per data directory, with one
//! named tree per kind of record. It implements the storage traits by
//! concern, one file each:
//!
//! | file          | trait            | trees                                                   |
//! |---------------|------------------|---------------------------------------------------------|
//! | `accounts.rs` | `AccountStore`   | `accounts` (and `delete_user`'s cascade over all trees) |
//! | `roster.rs`   | `RosterStore`    | `roster`, `roster_tombstones`, `roster_meta`, `pending_subscriptions` |
//! | `offline.rs`  | `OfflineStore`   | `offline`, `offline_counts`                             |
//! | `modules.rs`  | `ModuleStore`    | `module_data`                                           |
//! | `backup.rs`   | `Maintenance`    | every tree (backup / restore)                           |
//! | `records.rs`  | `transfer::Records` | every tree but `offline_counts` (moves between engines) |
//!
//! The message archive (`ArchiveAccess`) is `crate::storage::archive`, on
//! fjall in `DATA_DIR/archive/` or on five trees of this database
//! (`archive_engine`); [`SledStorage::open_with`] opens it, moves it from
//! the other engine if it is there, and converts the old layout.
//!
//! This file opens the database and the trees and holds the helpers they
//! share (keys, encoding, durability, the backup gate).
//!
//! Faults (docs/architecture.md, "Faults"): `ENOSPC`/`EDQUOT` become
//! `StorageError::Full` (logged once with the advice to free space and
//! restart: sled refuses every write of the run after its first failed
//! one, reads go on); records that do not decode are skipped with a log
//! line naming the account, or rebuilt where they can be (offline message
//! counters, roster version records). `full_disk.rs` tests this on a real
//! tmpfs.
//!
//! Layout (all trees opened once, in [`Trees::open`]). The on-disk format
//! is the one every earlier release wrote: existing data directories open
//! as they are.
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
//! A module's service domain (mod_muc's `conference.HOST`) uses the domain
//! with an empty user.
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
//! offline message and the user's message counter.
//!
//! To add a record kind: add a tree name constant, a field in [`Trees`],
//! open it in [`Trees::open`], reuse [`key2`] / [`key3`] / [`encode`] /
//! [`decode`] / [`SledStorage::durable`], and clear it in `delete_user`
//! (`accounts.rs`). Every mutating trait method takes
//! `let _w = self.writing();` first (never twice: call the `_impl`
//! functions inside), so `backup` copies a consistent state; backups cover
//! every tree, new ones included.
//!
//! Durability: every mutating method calls `sled::Db::flush` (which writes
//! and fsyncs the log) before returning, so an acknowledged change survives
//! a SIGKILL or power loss; the `_lazy` / `_unflushed` methods leave that
//! to the caller's later flush (group commit) or sled's own 500 ms flush.

mod accounts;
mod backup;
#[cfg(test)]
pub(crate) mod full_disk;
mod modules;
mod offline;
mod records;
mod roster;

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::storage::archive::kv::ArchiveKv;
use crate::storage::archive::kv_fjall::FjallKv;
use crate::storage::archive::kv_sled::SledKv;
use crate::storage::archive::{self, EngineKind, Placement};
use crate::storage::{Maintenance, StorageError};

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
pub(crate) struct Trees {
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
    /// The message archive (`crate::storage::archive`).
    pub(super) archive: std::sync::Arc<archive::Archive>,
    /// Whether the "disk full" advice was logged (once per run).
    full_reported: std::sync::atomic::AtomicBool,
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

/// Whether an I/O error means the disk or quota is full. sled hands later
/// callers a copy of its first write error that keeps only the kind and the
/// text, so the OS error number may be gone: the kind and text are checked
/// too.
fn is_full_error(e: &std::io::Error) -> bool {
    const ENOSPC: i32 = 28;
    const EDQUOT: i32 = 122;
    matches!(e.raw_os_error(), Some(ENOSPC) | Some(EDQUOT))
        || matches!(
            e.kind(),
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
        )
        || e.to_string().contains("No space left on device")
}

/// Translate a sled error into ours; `dir` names the database in messages.
pub(crate) fn map_sled_error(dir: &Path, e: sled::Error) -> StorageError {
    match e {
        sled::Error::Io(io) if is_lock_error(&io) => {
            StorageError::Locked(dir.display().to_string())
        }
        sled::Error::Io(io) if is_full_error(&io) => {
            StorageError::Full(format!("{}: {io}", dir.display()))
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
pub(super) fn prefix1(a: &str) -> Result<Vec<u8>, StorageError> {
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
pub(crate) fn create_private_dir(dir: &Path) -> Result<(), StorageError> {
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
    /// Open (creating if needed, owner-only 0700) the database in `dir`,
    /// with the message archive in its own trees (`archive_engine: sled`;
    /// no other place is looked at: tests and tools).
    ///
    /// Returns [`StorageError::Locked`] if another process (or another open
    /// handle in this process) holds the database.
    #[cfg(test)]
    pub fn open(dir: &Path) -> Result<SledStorage, StorageError> {
        SledStorage::open_with(dir, None)
    }

    /// Open the database in `dir` with the message archive where `place`
    /// says (the server: `DATA_DIR/db` and `Placement::in_data_dir`). An
    /// archive found in the other engine is moved into the configured one
    /// (`archive/migrate.rs`), then the old layout is converted.
    pub fn open_with(dir: &Path, place: Option<&Placement>) -> Result<SledStorage, StorageError> {
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
        let kv: Box<dyn ArchiveKv> = match place {
            None => Box::new(SledKv::open(&db, dir)?),
            Some(p) if p.engine == EngineKind::Sled => {
                let kv = SledKv::open(&db, dir)?;
                if FjallKv::exists_in(&p.fjall_dir) {
                    let old = FjallKv::open(&p.fjall_dir)?;
                    archive::migrate::move_engine(&old, &kv)?;
                }
                Box::new(kv)
            }
            Some(p) => {
                let kv = FjallKv::open(&p.fjall_dir)?;
                if SledKv::exists_in(&db) {
                    let old = SledKv::open(&db, dir)?;
                    archive::migrate::move_engine(&old, &kv)?;
                    if archive::kv::is_empty(&old)? {
                        old.drop_trees()?;
                    }
                }
                Box::new(kv)
            }
        };
        if let Some(p) = place {
            tracing::debug!(
                "message archive: {} in {}",
                p.engine.name(),
                kv.dir().display()
            );
        }
        let archive = archive::Archive::open(kv, gate.clone())?;
        // Archives of the old layout (mod_mam's module data), converted once.
        archive.migrate(&trees.module_data)?;
        Ok(SledStorage {
            db,
            dir: dir.to_path_buf(),
            trees,
            gate,
            archive: std::sync::Arc::new(archive),
            full_reported: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The directory this database lives in.
    #[cfg(test)]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub(super) fn err(&self, e: sled::Error) -> StorageError {
        let e = map_sled_error(&self.dir, e);
        if matches!(e, StorageError::Full(_))
            && !self
                .full_reported
                .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            // sled keeps its first write error for the rest of the run: no
            // write succeeds again until the database is reopened.
            tracing::error!(
                "storage: the disk holding {} is full ({e}); nothing new can be stored \
                 until space is freed and rookery is restarted (messages and changes \
                 already acknowledged are safe; senders get resource-constraint errors)",
                self.dir.display()
            );
        }
        e
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

impl Maintenance for SledStorage {
    fn flush(&self) -> Result<(), StorageError> {
        self.durable()
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

impl super::ArchiveAccess for SledStorage {
    fn archive(&self) -> std::sync::Arc<dyn super::ArchiveEngine> {
        self.archive.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enospc_and_edquot_are_full_also_as_sleds_copies() {
        let dir = Path::new("/db");
        for os in [28, 122] {
            let io = std::io::Error::from_raw_os_error(os);
            // sled hands later callers `Error::clone`, which keeps only the
            // kind and the Debug text of the first error.
            let copy = sled::Error::Io(io).clone();
            assert!(
                matches!(map_sled_error(dir, copy), StorageError::Full(_)),
                "os error {os}"
            );
            let io = std::io::Error::from_raw_os_error(os);
            assert!(matches!(
                map_sled_error(dir, sled::Error::Io(io)),
                StorageError::Full(_)
            ));
        }
        let eio = std::io::Error::from_raw_os_error(5);
        assert!(matches!(
            map_sled_error(dir, sled::Error::Io(eio)),
            StorageError::Io(_)
        ));
    }
    use crate::storage::{
        AccountKey, AccountStore, ModuleStore, OfflineStore, RosterItem, RosterStore, Subscription,
    };

    /// Every (tree, key) of the database, in order.
    fn raw_keys(s: &SledStorage) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        for name in s.db.tree_names() {
            let tree = s.db.open_tree(&name).unwrap();
            for key in tree.iter().keys() {
                out.push((
                    String::from_utf8(name.to_vec()).unwrap(),
                    key.unwrap().to_vec(),
                ));
            }
        }
        out
    }

    /// The on-disk layout is a promise to existing data directories: the
    /// traits by concern write exactly the trees and keys that the one
    /// `Storage` trait of earlier releases wrote (compared with backups of
    /// the same data written by the previous binary when the split was made).
    #[test]
    fn trees_and_keys_are_the_layout_earlier_releases_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStorage::open(dir.path()).unwrap();
        let alice = AccountKey::new("localhost", "alice");
        let creds = crate::auth::credentials::StoredCredentials::derive("pw", 4096).unwrap();
        s.create_user(alice, &creds).unwrap();
        let item = RosterItem {
            jid: "bob@localhost".into(),
            name: None,
            groups: vec![],
            subscription: Subscription::Both,
            ask: false,
            approved: false,
            pending_in: false,
            ver: 0,
        };
        s.roster_put(alice, item.clone()).unwrap();
        s.roster_put(
            alice,
            RosterItem {
                jid: "carol@localhost".into(),
                ..item
            },
        )
        .unwrap();
        s.roster_remove(alice, "carol@localhost").unwrap();
        s.pending_subscription_add(alice, "dave@localhost", "<presence/>")
            .unwrap();
        let seq = match s.offline_store(alice, "<message/>", None).unwrap() {
            crate::storage::OfflineStored::Stored(seq) => seq,
            full => panic!("{full:?}"),
        };
        s.module_put(alice, "mod_vcard", "vcard", b"<vCard/>")
            .unwrap();
        s.module_put(
            AccountKey::new("conference.localhost", ""),
            "mod_muc",
            "room:r",
            b"x",
        )
        .unwrap();
        s.module_put(AccountKey::new("", ""), "s2s", "dialback_secret", b"s")
            .unwrap();
        let mut offline_key = b"localhost\0alice\0".to_vec();
        offline_key.extend_from_slice(&seq.to_be_bytes());
        let expected: Vec<(&str, Vec<u8>)> = vec![
            ("__sled__default", vec![]),
            ("accounts", b"localhost\0alice".to_vec()),
            ("roster", b"localhost\0alice\0bob@localhost".to_vec()),
            (
                "roster_tombstones",
                b"localhost\0alice\0carol@localhost".to_vec(),
            ),
            ("roster_meta", b"localhost\0alice".to_vec()),
            (
                "pending_subscriptions",
                b"localhost\0alice\0dave@localhost".to_vec(),
            ),
            ("offline", offline_key),
            ("offline_counts", b"localhost\0alice".to_vec()),
            ("module_data", b"\0\0s2s\0dialback_secret".to_vec()),
            (
                "module_data",
                b"conference.localhost\0\0mod_muc\0room:r".to_vec(),
            ),
            (
                "module_data",
                b"localhost\0alice\0mod_vcard\0vcard".to_vec(),
            ),
        ];
        let expected: Vec<(String, Vec<u8>)> = expected
            .into_iter()
            .filter(|(_, k)| !k.is_empty())
            .map(|(t, k)| (t.to_string(), k))
            .collect();
        let mut got = raw_keys(&s);
        // The message archive's own trees (`archive_*`, with the marker that
        // the old layout was converted) are new; archive.rs pins them.
        got.retain(|(t, _)| !t.starts_with("archive_"));
        got.sort();
        let mut want = expected;
        want.sort();
        assert_eq!(got, want);
        // Values keep their encodings: credentials and items as JSON, the
        // offline counter and tombstone versions as 8-byte big-endian.
        let count = s
            .trees
            .offline_counts
            .get(b"localhost\0alice")
            .unwrap()
            .unwrap();
        assert_eq!(&count[..], &1u64.to_be_bytes()[..]);
        let acct = s.trees.accounts.get(b"localhost\0alice").unwrap().unwrap();
        let back: crate::auth::credentials::StoredCredentials =
            serde_json::from_slice(&acct).unwrap();
        assert_eq!(back, creds);
        let stored = s
            .trees
            .roster
            .get(b"localhost\0alice\0bob@localhost")
            .unwrap()
            .unwrap();
        assert!(serde_json::from_slice::<RosterItem>(&stored).is_ok());
        let meta = s
            .trees
            .roster_meta
            .get(b"localhost\0alice")
            .unwrap()
            .unwrap();
        assert_eq!(meta.len(), 16);
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
}
