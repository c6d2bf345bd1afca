//! Moving everything from one engine to another (`rookery ctl migrate_db`,
//! and PostgreSQL's backup and restore, which go through a sled copy).
//!
//! Each engine lists and loads its data as engine-neutral [`Record`]s
//! ([`Records`]: sled's trees, PostgreSQL's tables); the message archives
//! go through the archive API instead (every owner's pages, loaded with
//! their ids by `ArchiveEngine::import`). [`copy`] refuses a target that
//! holds anything, copies, then counts both sides again ([`Counts`]: every
//! kind of record, and every archive's messages) and fails if any count
//! differs, so a completed copy is a verified one.
//!
//! Invariants: records keep their values (credentials, roster items with
//! their versions, tombstones, module values byte for byte); offline
//! messages keep their order but get the target's sequence numbers, and
//! their per-user counters are the target's own; archived messages keep
//! their ids.

use xep_support::archive::{NewMessage, PageQuery};

use super::{RosterItem, Storage, StorageError};
use crate::auth::credentials::StoredCredentials;

/// One engine-neutral record.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    Account {
        host: String,
        user: String,
        creds: StoredCredentials,
    },
    RosterItem {
        host: String,
        user: String,
        item: RosterItem,
    },
    /// A roster's current version and the oldest one a diff starts from.
    RosterVersion {
        host: String,
        user: String,
        ver: u64,
        floor: u64,
    },
    Tombstone {
        host: String,
        user: String,
        jid: String,
        ver: u64,
    },
    Pending {
        host: String,
        user: String,
        from: String,
        xml: String,
    },
    /// One offline message (records of a user come in arrival order).
    Offline {
        host: String,
        user: String,
        xml: String,
    },
    Module {
        host: String,
        user: String,
        module: String,
        key: String,
        value: Vec<u8>,
    },
}

/// How many records of each kind, and archived messages.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub accounts: u64,
    pub roster_items: u64,
    pub roster_versions: u64,
    pub tombstones: u64,
    pub pending: u64,
    pub offline: u64,
    pub module_values: u64,
    pub archives: u64,
    pub archived_messages: u64,
}

impl Counts {
    fn add(&mut self, r: &Record) {
        match r {
            Record::Account { .. } => self.accounts += 1,
            Record::RosterItem { .. } => self.roster_items += 1,
            Record::RosterVersion { .. } => self.roster_versions += 1,
            Record::Tombstone { .. } => self.tombstones += 1,
            Record::Pending { .. } => self.pending += 1,
            Record::Offline { .. } => self.offline += 1,
            Record::Module { .. } => self.module_values += 1,
        }
    }

    /// Records of every kind (archived messages included).
    pub fn total(&self) -> u64 {
        self.accounts
            + self.roster_items
            + self.roster_versions
            + self.tombstones
            + self.pending
            + self.offline
            + self.module_values
            + self.archived_messages
    }
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} accounts, {} roster items, {} roster versions, {} roster tombstones, \
             {} pending subscription requests, {} offline messages, {} module values, \
             {} archives with {} messages",
            self.accounts,
            self.roster_items,
            self.roster_versions,
            self.tombstones,
            self.pending,
            self.offline,
            self.module_values,
            self.archives,
            self.archived_messages
        )
    }
}

/// What an engine lists and loads for a copy.
pub trait Records {
    /// Every record, to `sink` (offline messages of a user in order).
    fn export(
        &self,
        sink: &mut dyn FnMut(Record) -> Result<(), StorageError>,
    ) -> Result<(), StorageError>;
    /// Load records into this engine (which held none of them).
    fn import(&self, records: Vec<Record>) -> Result<(), StorageError>;
    /// Called once after the last `import`, to settle what depends on all
    /// records (counters, sequences).
    fn import_done(&self) -> Result<(), StorageError> {
        Ok(())
    }
}

/// An engine that can be copied from and to.
pub trait Engine: Storage + Records {}
impl<T: Storage + Records + ?Sized> Engine for T {}

/// Records loaded per `import` call.
const BATCH: usize = 2000;
/// Archived messages read per page.
const PAGE: usize = 1000;

/// Count everything `e` holds.
pub fn count(e: &dyn Engine) -> Result<Counts, StorageError> {
    let mut c = Counts::default();
    e.export(&mut |r| {
        c.add(&r);
        Ok(())
    })?;
    let archive = e.archive();
    for owner in archive.owners().map_err(StorageError::from)? {
        let n = archive.count(&owner).map_err(StorageError::from)?;
        if n > 0 {
            c.archives += 1;
            c.archived_messages += n;
        }
    }
    Ok(c)
}

/// Copy everything from `from` into the empty `to`, then check that both
/// hold the same counts; the counts.
pub fn copy(from: &dyn Engine, to: &dyn Engine) -> Result<Counts, StorageError> {
    let before = count(to)?;
    if before.total() > 0 {
        return Err(StorageError::Io(format!(
            "the target database is not empty ({before}); refusing to mix data"
        )));
    }
    let mut batch = Vec::with_capacity(BATCH);
    from.export(&mut |r| {
        batch.push(r);
        if batch.len() >= BATCH {
            to.import(std::mem::take(&mut batch))?;
        }
        Ok(())
    })?;
    if !batch.is_empty() {
        to.import(batch)?;
    }
    to.import_done()?;
    copy_archives(from, to)?;
    to.flush()?;
    let source = count(from)?;
    let target = count(to)?;
    if source != target {
        return Err(StorageError::Io(format!(
            "the copy does not match: source has {source}; target has {target}"
        )));
    }
    Ok(target)
}

/// Every archive, read page by page and loaded whole, with its ids.
fn copy_archives(from: &dyn Engine, to: &dyn Engine) -> Result<(), StorageError> {
    let src = from.archive();
    let dst = to.archive();
    for owner in src.owners().map_err(StorageError::from)? {
        // One import per owner: the embedded engine loads an archive whole.
        let mut msgs = Vec::new();
        let mut lo = 0u64;
        loop {
            let page = src
                .page(
                    &owner,
                    &PageQuery {
                        with: None,
                        lo,
                        hi: u64::MAX,
                        reverse: false,
                        limit: PAGE,
                    },
                )
                .map_err(StorageError::from)?;
            let Some(last) = page.last().map(|m| m.id) else {
                break;
            };
            for m in page {
                let peer = jid::BareJid::new(&m.peer).map_err(|e| {
                    StorageError::Corrupt(format!(
                        "archive of {owner}: message {} has peer {:?}: {e}",
                        m.id, m.peer
                    ))
                })?;
                msgs.push((
                    m.id,
                    NewMessage {
                        owner: owner.clone(),
                        peer,
                        direction: m.direction,
                        origin_id: m.origin_id,
                        xml: m.xml,
                    },
                ));
            }
            if last == u64::MAX {
                break;
            }
            lo = last + 1;
        }
        dst.import(&owner, msgs).map_err(StorageError::from)?;
    }
    Ok(())
}
