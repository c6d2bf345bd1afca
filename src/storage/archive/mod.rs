//! The message archive (XEP-0313): [`Archive`] implements
//! `xep_support::archive::ArchiveStore` (and the server's `ArchiveEngine`)
//! over five trees of an ordered key-value engine ([`kv::ArchiveKv`]: sled
//! trees beside the other records by default, or fjall in
//! `DATA_DIR/archive/` with `archive_engine: fjall`), apart from every
//! other kind of record. One copy of the logic serves both engines:
//!
//! | file          | what                                                     |
//! |---------------|----------------------------------------------------------|
//! | `mod.rs`      | the store: queries, counts, removals, import             |
//! | `writer.rs`   | the write path: queue, applier, flusher, tickets         |
//! | `read.rs`     | walking blocks: pages, bounded counts, retention         |
//! | `record.rs`   | keys and the compact block/record encoding (no I/O)      |
//! | `migrate.rs`  | the old layout's conversion; moving between engines     |
//! | `kv.rs`       | the key-value seam; `kv_fjall.rs`, `kv_sled.rs` the engines |
//! | `apply_bench.rs` | a harness for the write side (ignored test)           |
//!
//! | tree                | key                                  | value                        |
//! |---------------------|--------------------------------------|------------------------------|
//! | `archive_owners`    | `o` owner bare JID                   | archive id (u32 BE)          |
//! |                     | `i` archive id (u32 BE)              | owner bare JID               |
//! |                     | `m:last_id`, `m:next_archive`        | u64 BE: highest message id given out (by the conversion), next archive id |
//! |                     | `m:journal`                          | the last batch begun (sled only): its highest and lowest ids, its archives |
//! |                     | `m:migrated`                         | present once the old layout was converted |
//! |                     | `m:converted`                        | while converting: the last old key converted |
//! | `archive_messages`  | archive(4) id(8)                     | a block: the compact records of up to 128 messages of one batch (`record.rs`) |
//! | `archive_by_peer`   | archive(4) peer `\0` id(8)           | per peer and block: the block's id, the peer's message ids in it |
//! | `archive_by_origin` | archive(4) peer `\0` origin-id       | id (u64 BE)                  |
//! | `archive_counts`    | archive(4)                           | messages in the archive (u64 BE) |
//! |                     | archive(4) peer                      | messages with that peer (u64 BE) |
//! |                     | `hwm`                                | highest id of the last complete batch (u64 BE) |
//!
//! One record per message per archive, in blocks: the messages one batch
//! wrote to one archive share one key (and one insert), and so do their
//! peer index entries; a page is one range scan of `archive_messages` (or
//! of `archive_by_peer`, then one read per block); counts are single
//! reads. The origin-id index has one key per message that has an
//! origin-id (it is looked up by exact key). A batch is one
//! [`kv::ArchiveKv::write`]: atomic across trees on fjall; on sled one
//! batch per tree (owners with a journal, blocks, peer index, origin-ids,
//! counters with the high-water mark `hwm`, in that order; sled recovers a
//! prefix of its log), and after a crash the journal tells
//! `writer::repair` which blocks to complete the indexes and counters
//! from, at the next open.
//!
//! Writes go through `writer.rs` (a queue, an applier thread and a
//! flusher thread): appends return at once, are visible to reads as soon as
//! the applier took them (reads wait for that, see [`Inner::settle`]) and
//! are durable within 550 ms plus an fsync (gathered up to 500 ms, flushed
//! at the latest 50 ms after; inside the 1 s bound of
//! `xep_support::archive::DURABILITY_BOUND_MS`). Deletions (retention,
//! account removal) run on the caller's thread under the same write lock
//! as the applier and are flushed before they return.
//!
//! A record that does not decode is skipped with a log line naming the
//! owner (a damaged block: the rest of that block); queries never fail on
//! it. Reads and retention are in `read.rs`.

#[cfg(test)]
mod apply_bench;
pub mod kv;
pub mod kv_fjall;
pub mod kv_sled;
pub mod migrate;
mod read;
pub mod record;
mod writer;
pub use writer::set_node_number;

use std::sync::{Arc, Mutex, RwLock};

use jid::BareJid;
use xep_support::archive::{
    Appended, ArchiveStore, ArchivedMessage, Count, Direction, NewMessage, PageQuery,
    EXACT_COUNT_LIMIT,
};
use xep_support::module::{StoreError, StoreErrorKind};

use self::kv::{ArchiveKv, Tree};
use self::record as rec;
use self::writer::{Writer, WriterState};
use crate::storage::StorageError;

/// Which engine holds the archive (`archive_engine` in the configuration).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineKind {
    /// fjall, in `DATA_DIR/archive/` (opt-in; see docs/architecture.md).
    Fjall,
    /// Five trees of the sled database in `DATA_DIR/db/` (the default).
    Sled,
}

impl EngineKind {
    /// sled: fjall's write halt after a restart is understood and fixed
    /// (`kv_fjall.rs`, `FLUSH_WORKERS`), but its compaction's cost grows
    /// with the archive (every flushed table overlaps every archive's key
    /// range), so under sustained chat it ends up dearer than sled
    /// (docs/benchmarks.md, "Stop 18").
    pub const DEFAULT: EngineKind = EngineKind::Sled;

    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Fjall => "fjall",
            EngineKind::Sled => "sled",
        }
    }

    pub fn parse(s: &str) -> Option<EngineKind> {
        match s {
            "fjall" => Some(EngineKind::Fjall),
            "sled" => Some(EngineKind::Sled),
            _ => None,
        }
    }
}

/// Where the archive lives: its engine, and fjall's directory (looked at
/// also with `sled`, to move an archive kept there before).
#[derive(Clone, Debug)]
pub struct Placement {
    pub engine: EngineKind,
    pub fjall_dir: std::path::PathBuf,
}

impl Placement {
    /// The server's places: `DATA_DIR/archive/` beside `DATA_DIR/db/`.
    pub fn in_data_dir(data_dir: &std::path::Path, engine: EngineKind) -> Placement {
        Placement {
            engine,
            fjall_dir: data_dir.join("archive"),
        }
    }
}

/// `archive_owners` key of the highest message id given out.
const LAST_ID_KEY: &[u8] = b"m:last_id";
/// `archive_owners` key of the next archive id to give out.
const NEXT_ARCHIVE_KEY: &[u8] = b"m:next_archive";
/// Rows removed per transaction by deletions.
const DELETE_CHUNK: usize = 1000;

/// What the archive, its writer threads and its callers share.
struct Inner {
    pub kv: Box<dyn ArchiveKv>,
    /// The storage gate (shared while writing, exclusive for backups).
    pub gate: Arc<RwLock<()>>,
    /// Held by whoever changes the archive trees (applier, deletions), so
    /// counters are read and written by one at a time.
    pub write_lock: Mutex<()>,
    /// Counter values as last written by the applier (read and changed
    /// under the write lock; emptied by every other writer of counters).
    pub counts_cache: Mutex<std::collections::HashMap<Vec<u8>, u64>>,
    pub w: Writer,
}

/// The message archive on one engine.
pub struct Archive {
    inner: Arc<Inner>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

fn owner_key(owner: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + owner.len());
    k.push(b'o');
    k.extend_from_slice(owner.as_bytes());
    k
}

fn owner_rev_key(archive: u32) -> [u8; 5] {
    let mut k = [b'i'; 5];
    k[1..].copy_from_slice(&archive.to_be_bytes());
    k
}

impl Inner {
    pub fn store_err(&self, e: StorageError) -> StoreError {
        store_error(e)
    }

    /// The archive id of `owner`, if it has one (appended or stored).
    pub fn archive_of(&self, owner: &str) -> Result<Option<u32>, StoreError> {
        if let Some(a) = self.w.cached_owner(owner) {
            return Ok(Some(a));
        }
        let v = self
            .kv
            .get(Tree::Owners, &owner_key(owner))
            .map_err(|e| self.store_err(e))?;
        let a = v.and_then(|v| Some(u32::from_be_bytes(v.as_ref().try_into().ok()?)));
        if let Some(a) = a {
            self.w.cache_owner(owner, a);
        }
        Ok(a)
    }

    /// Wait until every append made before this call is applied (visible).
    pub fn settle(&self) {
        self.w.settle();
    }

    pub fn counter(&self, key: &[u8]) -> Result<u64, StoreError> {
        Ok(self
            .kv
            .get(Tree::Counts, key)
            .map_err(|e| self.store_err(e))?
            .and_then(|v| rec::u64_of(&v))
            .unwrap_or(0))
    }

    /// Forget cached counters (their trees are changed by someone else).
    pub fn clear_counts_cache(&self) {
        self.counts_cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    pub fn flush(&self) -> Result<(), StoreError> {
        self.kv.persist().map_err(|e| self.store_err(e))
    }
}

/// A full disk is `StoreErrorKind::Full` (senders get resource-constraint).
pub(crate) fn store_error(e: StorageError) -> StoreError {
    match e {
        StorageError::Full(_) => StoreError::from_source(StoreErrorKind::Full, e),
        e => StoreError::from_source(StoreErrorKind::Other, e),
    }
}

impl Archive {
    /// Start the archive on `kv` (a torn sled batch is completed first).
    pub fn open(kv: Box<dyn ArchiveKv>, gate: Arc<RwLock<()>>) -> Result<Archive, StorageError> {
        if !kv.atomic_batches() {
            writer::repair(kv.as_ref())?;
        }
        let state = WriterState::load(kv.as_ref())?;
        let inner = Arc::new(Inner {
            kv,
            gate,
            write_lock: Mutex::new(()),
            counts_cache: Mutex::new(std::collections::HashMap::new()),
            w: Writer::new(state),
        });
        let threads = writer::start(&inner);
        Ok(Archive {
            inner,
            threads: Mutex::new(threads),
        })
    }

    /// The engine's key-value trees (backup, restore, moving engines).
    pub fn kv(&self) -> &dyn ArchiveKv {
        self.inner.kv.as_ref()
    }

    /// Reload the in-memory state from the trees (after a restore).
    pub fn reload(&self) -> Result<(), StorageError> {
        let _w = self
            .inner
            .write_lock
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        self.inner.clear_counts_cache();
        let state = WriterState::load(self.inner.kv.as_ref())?;
        self.inner.w.replace_state(state);
        Ok(())
    }

    /// The ticket of the last append so far (see [`Archive::durable`]).
    pub fn ticket(&self) -> u64 {
        self.inner.w.ticket()
    }

    /// Wait until every append up to `ticket` is on disk.
    pub async fn durable(&self, ticket: u64) -> Result<(), StorageError> {
        self.inner.w.durable(ticket).await
    }

    /// Stop the writer threads after they wrote and flushed everything.
    pub fn shutdown(&self) {
        self.inner.w.stop();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        let stopped = !threads.is_empty();
        for t in threads {
            let _ = t.join();
        }
        // The applier's last batch may have come after the flusher's last
        // flush.
        if stopped {
            if let Err(e) = self.inner.kv.persist() {
                tracing::error!("archive: flushing at close: {e}");
            }
        }
    }

    /// Load messages with their own ids (a XEP-0227 import) into `owner`'s
    /// archive, which must be empty (ids of one archive's blocks must not
    /// overlap); how many were stored. Durable when it returns.
    pub fn import(
        &self,
        owner: &BareJid,
        msgs: Vec<(u64, NewMessage)>,
    ) -> Result<usize, StoreError> {
        let inner = &self.inner;
        inner.settle();
        if self.count(owner)? > 0 {
            return Err(StoreError::other(format!(
                "the archive of {owner} is not empty"
            )));
        }
        if msgs.is_empty() {
            return Ok(0);
        }
        let _g = inner.gate.read().unwrap_or_else(|e| e.into_inner());
        let _w = inner.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        let (a, owners) = match inner.archive_of(owner.as_str())? {
            Some(a) => (a, Vec::new()),
            None => {
                let a = inner
                    .w
                    .allocate(owner.as_str())
                    .ok_or_else(|| StoreError::other("archive ids exhausted"))?;
                (a, vec![(owner.to_string(), a)])
            }
        };
        let mut batch: Vec<_> = msgs
            .iter()
            .map(|(id, m)| writer::Pending::new(a, *id, m))
            .collect();
        batch.sort_by_key(|p| p.id());
        batch.dedup_by_key(|p| p.id());
        let n = batch.len();
        let max = batch.last().map(|p| p.id()).unwrap_or(0);
        writer::raise_last_id(max);
        writer::write_batch(inner, &batch, &owners, inner.w.next_archive())
            .map_err(|e| inner.store_err(e))?;
        inner.flush()?;
        Ok(n)
    }

    /// Convert archives of the old layout (mod_mam's module data) once.
    pub fn migrate(&self, module_data: &sled::Tree) -> Result<u64, StorageError> {
        migrate::run(&self.inner, module_data)
    }
}

impl Drop for Archive {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl ArchiveStore for Archive {
    fn append(&self, msgs: Vec<NewMessage>) -> Result<Vec<Appended>, StoreError> {
        writer::append(&self.inner, msgs)
    }

    fn append_stanza(
        &self,
        owner: &str,
        peer: &str,
        direction: Direction,
        origin_id: Option<&str>,
        stanza: &xep_support::element::Element,
    ) -> Result<Appended, StoreError> {
        writer::append_stanza(&self.inner, owner, peer, direction, origin_id, stanza)
    }

    fn page(&self, owner: &BareJid, q: &PageQuery<'_>) -> Result<Vec<ArchivedMessage>, StoreError> {
        let inner = &self.inner;
        inner.settle();
        let Some(a) = inner.archive_of(owner.as_str())? else {
            return Ok(Vec::new());
        };
        inner.page_of(owner, a, q.with, q.lo, q.hi, q.reverse, q.limit)
    }

    fn get(&self, owner: &BareJid, id: u64) -> Result<Option<ArchivedMessage>, StoreError> {
        let inner = &self.inner;
        inner.settle();
        let Some(a) = inner.archive_of(owner.as_str())? else {
            return Ok(None);
        };
        inner.get_one(owner, a, id)
    }

    fn find_origin_id(
        &self,
        owner: &BareJid,
        peer: &BareJid,
        origin_id: &str,
    ) -> Result<Option<u64>, StoreError> {
        let inner = &self.inner;
        inner.settle();
        let Some(a) = inner.archive_of(owner.as_str())? else {
            return Ok(None);
        };
        let v = inner
            .kv
            .get(
                Tree::ByOrigin,
                &rec::origin_key(a, peer.as_str(), origin_id),
            )
            .map_err(|e| inner.store_err(e))?;
        Ok(v.and_then(|v| rec::u64_of(&v)))
    }

    fn replace(&self, owner: &BareJid, id: u64, xml: &str) -> Result<bool, StoreError> {
        let inner = &self.inner;
        inner.settle();
        let Some(a) = inner.archive_of(owner.as_str())? else {
            return Ok(false);
        };
        let done = {
            let _g = inner.gate.read().unwrap_or_else(|e| e.into_inner());
            let _w = inner.write_lock.lock().unwrap_or_else(|e| e.into_inner());
            read::replace_one(inner, owner, a, id, xml)?
        };
        if done {
            inner.flush()?;
        }
        Ok(done)
    }

    fn count(&self, owner: &BareJid) -> Result<u64, StoreError> {
        let inner = &self.inner;
        inner.settle();
        match inner.archive_of(owner.as_str())? {
            Some(a) => inner.counter(&rec::archive_prefix(a)),
            None => Ok(0),
        }
    }

    fn count_range(
        &self,
        owner: &BareJid,
        with: Option<&str>,
        lo: u64,
        hi: u64,
    ) -> Result<Count, StoreError> {
        let inner = &self.inner;
        inner.settle();
        let Some(a) = inner.archive_of(owner.as_str())? else {
            return Ok(Count::Exact(0));
        };
        if lo > hi {
            return Ok(Count::Exact(0));
        }
        let total = match with {
            None => inner.counter(&rec::archive_prefix(a))?,
            Some(peer) => inner.counter(&rec::peer_count_key(a, peer))?,
        };
        if total == 0 {
            return Ok(Count::Exact(0));
        }
        if lo == 0 && hi == u64::MAX {
            return Ok(Count::Exact(total));
        }
        let cap = EXACT_COUNT_LIMIT;
        let n = inner.count_between(owner, a, with, lo, hi, cap)?;
        if n <= cap {
            return Ok(Count::Exact(n as u64));
        }
        let below = match lo {
            0 => 0,
            lo => inner.count_between(owner, a, with, 0, lo - 1, cap)?,
        };
        let above = match hi {
            u64::MAX => 0,
            hi => inner.count_between(owner, a, with, hi + 1, u64::MAX, cap)?,
        };
        if below <= cap && above <= cap {
            return Ok(Count::Exact(total.saturating_sub((below + above) as u64)));
        }
        // Interpolate over the archive's time span (ids are microseconds).
        let (first, last) = inner.span(owner, a, with)?.unwrap_or((lo, hi));
        let (l, h) = (lo.max(first), hi.min(last));
        let span = last.saturating_sub(first).max(1) as u128;
        let est = (total as u128 * h.saturating_sub(l) as u128 / span) as u64;
        Ok(Count::Estimate(
            est.clamp(cap as u64 + 1, total.max(cap as u64 + 1)),
        ))
    }

    fn delete_before(
        &self,
        owner: &BareJid,
        cutoff: u64,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let inner = &self.inner;
        inner.settle();
        let Some(a) = inner.archive_of(owner.as_str())? else {
            return Ok(0);
        };
        if cutoff == 0 || limit == 0 {
            return Ok(0);
        }
        let deleted = {
            let _g = inner.gate.read().unwrap_or_else(|e| e.into_inner());
            let _w = inner.write_lock.lock().unwrap_or_else(|e| e.into_inner());
            inner.clear_counts_cache();
            read::delete_before(inner, owner, a, cutoff, limit)?
        };
        if deleted > 0 {
            inner.flush()?;
        }
        Ok(deleted)
    }

    fn delete_archive(&self, owner: &BareJid) -> Result<u64, StoreError> {
        let inner = &self.inner;
        let Some(a) = inner.archive_of(owner.as_str())? else {
            return Ok(0);
        };
        let _g = inner.gate.read().unwrap_or_else(|e| e.into_inner());
        let _w = inner.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        // Appends not applied yet would come back after the removal.
        inner.w.drop_pending(a);
        inner.clear_counts_cache();
        let n = inner.counter(&rec::archive_prefix(a))?;
        for tree in [Tree::Messages, Tree::ByPeer, Tree::ByOrigin, Tree::Counts] {
            loop {
                let mut batch = kv::Batch::default();
                for kv in inner
                    .kv
                    .prefix(tree, &rec::archive_prefix(a))
                    .take(DELETE_CHUNK)
                {
                    let (k, _) = kv.map_err(|e| inner.store_err(e))?;
                    batch.remove(tree, k.to_vec());
                }
                if batch.is_empty() {
                    break;
                }
                inner.kv.write(batch).map_err(|e| inner.store_err(e))?;
            }
        }
        inner.flush()?;
        Ok(n)
    }

    fn owners(&self) -> Result<Vec<BareJid>, StoreError> {
        let inner = &self.inner;
        inner.settle();
        let mut out = Vec::new();
        for kv in inner.kv.prefix(Tree::Owners, b"o") {
            let (k, _) = kv.map_err(|e| inner.store_err(e))?;
            match std::str::from_utf8(&k[1..])
                .ok()
                .and_then(|s| BareJid::new(s).ok())
            {
                Some(j) => out.push(j),
                None => tracing::error!("archive: an owner name is damaged; skipped"),
            }
        }
        Ok(out)
    }
}

impl crate::storage::ArchiveEngine for Archive {
    fn ticket(&self) -> u64 {
        Archive::ticket(self)
    }
    fn close(&self) {
        self.shutdown();
    }
    fn import(&self, owner: &BareJid, msgs: Vec<(u64, NewMessage)>) -> Result<usize, StoreError> {
        Archive::import(self, owner, msgs)
    }
    fn durable(
        &self,
        ticket: u64,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), StorageError>> + Send + '_>>
    {
        Box::pin(Archive::durable(self, ticket))
    }
    fn take_failures(&self) -> Option<tokio::sync::mpsc::Receiver<crate::storage::ArchiveFailure>> {
        self.inner.w.take_failures()
    }
    fn failures_reported(&self) -> u64 {
        self.inner.w.failures_reported()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xep_support::archive::Direction;

    use super::kv_fjall::FjallKv;
    use super::kv_sled::SledKv;

    /// The archive on `engine` in `dir` (fjall in `dir/archive`, sled in
    /// `dir/db`).
    pub(crate) fn open_on(engine: EngineKind, dir: &std::path::Path) -> Archive {
        let kv: Box<dyn ArchiveKv> = match engine {
            EngineKind::Fjall => Box::new(FjallKv::open(&dir.join("archive")).unwrap()),
            EngineKind::Sled => {
                let db = sled::Config::new().path(dir.join("db")).open().unwrap();
                Box::new(SledKv::open(&db, dir).unwrap())
            }
        };
        Archive::open(kv, Arc::new(RwLock::new(()))).unwrap()
    }

    const ENGINES: [EngineKind; 2] = [EngineKind::Fjall, EngineKind::Sled];

    fn jid(s: &str) -> BareJid {
        BareJid::new(s).unwrap()
    }

    fn msg(owner: &str, peer: &str, origin: Option<&str>, body: &str) -> NewMessage {
        NewMessage {
            owner: jid(owner),
            peer: jid(peer),
            direction: Direction::Incoming,
            origin_id: origin.map(str::to_string),
            xml: format!("<message><body>{body}</body></message>"),
        }
    }

    fn page(
        a: &Archive,
        owner: &str,
        with: Option<&str>,
        reverse: bool,
        limit: usize,
    ) -> Vec<String> {
        a.page(
            &jid(owner),
            &PageQuery {
                with,
                lo: 0,
                hi: u64::MAX,
                reverse,
                limit,
            },
        )
        .unwrap()
        .into_iter()
        .map(|m| m.xml)
        .collect()
    }

    #[test]
    fn replace_rewrites_one_message_and_keeps_indexes_and_counts() {
        for engine in ENGINES {
            let dir = tempfile::tempdir().unwrap();
            let a = open_on(engine, dir.path());
            let room = jid("room@muc.x");
            let r = a
                .append(vec![
                    msg("room@muc.x", "al@x", Some("o1"), "first"),
                    msg("room@muc.x", "bo@x", Some("o2"), "second"),
                    msg("room@muc.x", "al@x", None, "third"),
                ])
                .unwrap();
            let id = r[1].id();
            assert!(a
                .replace(&room, id, "<message><retracted/></message>")
                .unwrap());
            assert!(!a.replace(&room, id + 12345, "<x/>").unwrap(), "{engine:?}");
            assert!(!a.replace(&jid("nobody@x"), id, "<x/>").unwrap());
            let all = page(&a, "room@muc.x", None, false, 10);
            assert_eq!(all.len(), 3, "{engine:?}");
            assert!(all[0].contains("first") && all[2].contains("third"));
            assert_eq!(all[1], "<message><retracted/></message>");
            let got = a.get(&room, id).unwrap().unwrap();
            assert_eq!(got.peer, "bo@x");
            assert_eq!(got.origin_id.as_deref(), Some("o2"));
            assert_eq!(
                a.find_origin_id(&room, &jid("bo@x"), "o2").unwrap(),
                Some(id)
            );
            assert_eq!(page(&a, "room@muc.x", Some("bo@x"), false, 10).len(), 1);
            assert_eq!(a.count(&room).unwrap(), 3);
            // On disk: it survives reopening.
            drop(a);
            let a = open_on(engine, dir.path());
            assert_eq!(
                page(&a, "room@muc.x", None, false, 10)[1],
                "<message><retracted/></message>"
            );
        }
    }

    #[test]
    fn a_stanza_appended_is_the_message_appended_as_text() {
        use xep_support::element::Element;
        for engine in ENGINES {
            let dir = tempfile::tempdir().unwrap();
            let a = open_on(engine, dir.path());
            let stanza = |body: &str, origin: Option<&str>| {
                let mut m = Element::new("message", xep_support::ns::CLIENT)
                    .with_attr("to", "bob@x")
                    .with_attr("type", "chat")
                    .with_child(
                        Element::new("body", xep_support::ns::CLIENT).with_text(body.to_string()),
                    );
                if let Some(o) = origin {
                    m = m
                        .with_child(Element::new("origin-id", "urn:xmpp:sid:0").with_attr("id", o));
                }
                m
            };
            // A long stanza after a short one and the other way round (the
            // room reserved follows the last one).
            let long = "é<&>".repeat(2000);
            let mut ids = Vec::new();
            for (body, origin) in [("hi", None), (long.as_str(), Some("o1")), ("x", Some("o2"))] {
                let s = stanza(body, origin);
                let got = a
                    .append_stanza("alice@x", "bob@x", Direction::Outgoing, origin, &s)
                    .unwrap();
                assert!(matches!(got, Appended::Stored(_)), "{engine:?}");
                ids.push(got.id());
                let m = a.get(&jid("alice@x"), got.id()).unwrap().unwrap();
                assert_eq!(m.xml, s.to_xml(xep_support::ns::CLIENT), "{engine:?}");
                assert_eq!(m.peer, "bob@x");
                assert_eq!(m.direction, Direction::Outgoing);
                assert_eq!(m.origin_id.as_deref(), origin);
            }
            assert!(ids.windows(2).all(|w| w[0] < w[1]));
            // The same origin-id again, queued or written, by either call:
            // the first id.
            let again = a
                .append_stanza(
                    "alice@x",
                    "bob@x",
                    Direction::Outgoing,
                    Some("o2"),
                    &stanza("y", None),
                )
                .unwrap();
            assert_eq!(again, Appended::Duplicate(ids[2]), "{engine:?}");
            let mut text = msg("alice@x", "bob@x", Some("o1"), "z");
            text.direction = Direction::Outgoing;
            assert_eq!(
                a.append(vec![text]).unwrap(),
                vec![Appended::Duplicate(ids[1])]
            );
            assert_eq!(a.count(&jid("alice@x")).unwrap(), 3, "{engine:?}");
            // On disk: they survive reopening.
            drop(a);
            let a = open_on(engine, dir.path());
            assert_eq!(
                page(&a, "alice@x", Some("bob@x"), false, 10).len(),
                3,
                "{engine:?}"
            );
        }
    }

    #[test]
    fn both_ends_of_a_message_store_its_exact_xml() {
        // The sender's and the recipient's records of one message are
        // written from one serialisation (`crate::xml::kept`): the stored
        // XML is still exactly each stanza's own, also when a module
        // changed the stanza between the two appends.
        use xep_support::element::{Element, Node};
        for engine in ENGINES {
            let dir = tempfile::tempdir().unwrap();
            let a = open_on(engine, dir.path());
            let sent = Element::new("message", xep_support::ns::CLIENT)
                .with_attr("from", "alice@x/phone")
                .with_attr("to", "bob@x")
                .with_attr("type", "chat")
                .with_child(
                    Element::new("body", xep_support::ns::CLIENT).with_text("hi <&> 'you'"),
                );
            let mut forged = sent.clone();
            forged.children.push(Node::Element(
                Element::new("stanza-id", "urn:xmpp:sid:0")
                    .with_attr("by", "bob@x")
                    .with_attr("id", "1"),
            ));
            let mut edited = sent.clone();
            edited.set_attr("type", "normal");
            let cases = [
                (&sent, &sent),
                // The recipient's hook removed a forged stanza-id.
                (&forged, &sent),
                // Or another module changed it.
                (&sent, &edited),
            ];
            for (i, (out, inc)) in cases.into_iter().enumerate() {
                let o = a
                    .append_stanza("alice@x", "bob@x", Direction::Outgoing, None, out)
                    .unwrap();
                let n = a
                    .append_stanza("bob@x", "alice@x", Direction::Incoming, None, inc)
                    .unwrap();
                let o = a.get(&jid("alice@x"), o.id()).unwrap().unwrap();
                let n = a.get(&jid("bob@x"), n.id()).unwrap().unwrap();
                assert_eq!(o.xml, out.to_xml(xep_support::ns::CLIENT), "{engine:?} {i}");
                assert_eq!(n.xml, inc.to_xml(xep_support::ns::CLIENT), "{engine:?} {i}");
                assert_eq!(
                    (o.peer.as_str(), o.direction),
                    ("bob@x", Direction::Outgoing)
                );
                assert_eq!(
                    (n.peer.as_str(), n.direction),
                    ("alice@x", Direction::Incoming)
                );
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn append_query_count_dedupe_delete_and_reopen() {
        for engine in ENGINES {
            append_query_count_dedupe_delete_and_reopen_on(engine).await;
        }
    }

    async fn append_query_count_dedupe_delete_and_reopen_on(engine: EngineKind) {
        let dir = tempfile::tempdir().unwrap();
        let open = |d: &std::path::Path| open_on(engine, d);
        let a = open(dir.path());
        let mut ids = Vec::new();
        for i in 0..30 {
            let peer = if i % 3 == 0 { "carol@x" } else { "bob@x" };
            let r = a
                .append(vec![msg(
                    "alice@x",
                    peer,
                    Some(&format!("o{i}")),
                    &format!("m{i}"),
                )])
                .unwrap();
            assert!(matches!(r[0], Appended::Stored(_)));
            ids.push(r[0].id());
        }
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase");
        // Visible at once, in order, both directions, with `with`.
        let all = page(&a, "alice@x", None, false, 100);
        assert_eq!(all.len(), 30);
        assert!(all[0].contains("m0") && all[29].contains("m29"));
        let last2 = page(&a, "alice@x", None, true, 2);
        assert!(last2[0].contains("m29") && last2[1].contains("m28"));
        let carol = page(&a, "alice@x", Some("carol@x"), false, 100);
        assert_eq!(carol.len(), 10);
        assert!(carol[1].contains("m3"));
        assert!(page(&a, "bob@x", None, false, 10).is_empty());
        // Counts: O(1) totals, exact ranges.
        let alice = jid("alice@x");
        assert_eq!(a.count(&alice).unwrap(), 30);
        assert_eq!(
            a.count_range(&alice, None, 0, u64::MAX).unwrap(),
            Count::Exact(30)
        );
        assert_eq!(
            a.count_range(&alice, Some("bob@x"), 0, u64::MAX).unwrap(),
            Count::Exact(20)
        );
        assert_eq!(
            a.count_range(&alice, None, ids[5], ids[9]).unwrap(),
            Count::Exact(5)
        );
        assert_eq!(
            a.count_range(&alice, Some("carol@x"), ids[3], ids[9])
                .unwrap(),
            Count::Exact(3)
        );
        // Idempotent by (peer, origin-id), also within one batch.
        let r = a
            .append(vec![
                msg("alice@x", "bob@x", Some("o1"), "again"),
                msg("alice@x", "bob@x", Some("new"), "n"),
                msg("alice@x", "bob@x", Some("new"), "n"),
                msg("alice@x", "carol@x", Some("o1"), "other peer"),
            ])
            .unwrap();
        assert_eq!(r[0], Appended::Duplicate(ids[1]));
        assert!(matches!(r[1], Appended::Stored(_)));
        assert_eq!(r[2], Appended::Duplicate(r[1].id()));
        assert!(matches!(r[3], Appended::Stored(_)));
        assert_eq!(a.count(&alice).unwrap(), 32);
        assert_eq!(
            a.find_origin_id(&alice, &jid("bob@x"), "o4").unwrap(),
            Some(ids[4])
        );
        assert_eq!(
            a.get(&alice, ids[4]).unwrap().unwrap().origin_id.as_deref(),
            Some("o4")
        );
        // Durable on request.
        let t = a.ticket();
        a.durable(t).await.unwrap();
        // Retention: the first ten go, with their index entries and counts.
        assert_eq!(a.delete_before(&alice, ids[10], usize::MAX).unwrap(), 10);
        assert_eq!(a.count(&alice).unwrap(), 22);
        assert_eq!(
            a.count_range(&alice, Some("carol@x"), 0, u64::MAX).unwrap(),
            Count::Exact(7)
        );
        assert_eq!(page(&a, "alice@x", Some("carol@x"), false, 100).len(), 7);
        assert_eq!(a.find_origin_id(&alice, &jid("bob@x"), "o4").unwrap(), None);
        // Reopen: data kept, new ids above the old ones.
        a.append(vec![msg("dave@x", "bob@x", None, "d")]).unwrap();
        drop(a);
        let a = open(dir.path());
        assert_eq!(a.count(&alice).unwrap(), 22);
        assert_eq!(a.count(&jid("dave@x")).unwrap(), 1);
        let r = a
            .append(vec![msg("alice@x", "bob@x", None, "later")])
            .unwrap();
        assert!(r[0].id() > ids[29]);
        let mut owners: Vec<String> = a.owners().unwrap().iter().map(|j| j.to_string()).collect();
        owners.sort();
        assert_eq!(owners, ["alice@x", "dave@x"]);
        // Removal of a whole archive.
        assert_eq!(a.delete_archive(&alice).unwrap(), 23);
        assert_eq!(a.count(&alice).unwrap(), 0);
        assert!(page(&a, "alice@x", None, false, 10).is_empty());
        assert!(page(&a, "alice@x", Some("bob@x"), false, 10).is_empty());
        assert_eq!(a.count(&jid("dave@x")).unwrap(), 1);
    }

    #[test]
    fn damaged_records_are_skipped_and_large_ranges_are_bounded() {
        for engine in ENGINES {
            damaged_records_are_skipped_and_large_ranges_are_bounded_on(engine);
        }
    }

    fn damaged_records_are_skipped_and_large_ranges_are_bounded_on(engine: EngineKind) {
        let dir = tempfile::tempdir().unwrap();
        let a = open_on(engine, dir.path());
        let alice = jid("alice@x");
        let n = EXACT_COUNT_LIMIT * 3 + 300;
        let msgs: Vec<_> = (0..n)
            .map(|i| msg("alice@x", "bob@x", None, &format!("m{i}")))
            .collect();
        let ids: Vec<u64> = a.append(msgs).unwrap().iter().map(|r| r.id()).collect();
        // The whole archive: exact from the counter (once written).
        assert_eq!(a.count(&alice).unwrap(), n as u64);
        // The range and its complement both small: exact.
        let r = a.count_range(&alice, None, ids[20], ids[n - 20]).unwrap();
        assert_eq!(r, Count::Exact((n - 39) as u64));
        // More than the limit inside and on both sides: an estimate, bounded.
        let (lo, hi) = (EXACT_COUNT_LIMIT + 50, 2 * EXACT_COUNT_LIMIT + 250);
        let big = a.count_range(&alice, None, ids[lo], ids[hi]).unwrap();
        assert!(matches!(big, Count::Estimate(_)), "{big:?}");
        assert!(
            big.value() > EXACT_COUNT_LIMIT as u64 && big.value() <= n as u64,
            "{big:?}"
        );
        let small = a
            .count_range(&alice, Some("bob@x"), ids[100], ids[199])
            .unwrap();
        assert_eq!(small, Count::Exact(100));
        // Damage the first block on disk (once it is written): cut it in
        // its second message.
        let arch = a.inner.archive_of("alice@x").unwrap().unwrap();
        let key = rec::message_key(arch, ids[0]);
        let block = a.inner.kv.get(Tree::Messages, &key).unwrap().unwrap();
        let (e, _) = rec::block_entries(ids[0], &block);
        let cut = e[1].1.as_ptr() as usize - block.as_ptr() as usize + 3;
        let mut w = kv::Batch::default();
        w.insert(Tree::Messages, key, &block[..cut]);
        a.inner.kv.write(w).unwrap();
        let first = page(&a, "alice@x", None, false, 3);
        assert_eq!(first.len(), 3);
        let next = rec::BLOCK_MESSAGES;
        assert!(
            first[0].contains(">m0<") && first[1].contains(&format!(">m{next}<")),
            "{first:?}"
        );
    }

    /// sled only: fjall's batches are atomic across trees.
    #[test]
    fn a_batch_torn_by_a_crash_is_completed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let open = |d: &std::path::Path| open_on(EngineKind::Sled, d);
        let a = open(dir.path());
        let alice = jid("alice@x");
        a.append(vec![msg("alice@x", "bob@x", Some("o0"), "m0")])
            .unwrap();
        assert_eq!(a.count(&alice).unwrap(), 1);
        let arch = a.inner.archive_of("alice@x").unwrap().unwrap();
        // As if the process died after the journal and the blocks of the
        // next batch were written, before its indexes and counters.
        let ids = [u64::MAX / 4, u64::MAX / 4 + 1];
        let recs: Vec<Vec<u8>> = ids
            .iter()
            .enumerate()
            .map(|(i, _)| {
                rec::encode(
                    Direction::Incoming,
                    "carol@x",
                    Some(&format!("t{i}")),
                    &format!("<message><body>t{i}</body></message>"),
                )
            })
            .collect();
        let b = super::writer::blocks_of(
            ids.iter()
                .zip(&recs)
                .map(|(id, r)| (arch, *id, "carol@x", r.as_slice())),
        );
        let mut journal = ids[1].to_be_bytes().to_vec();
        journal.extend_from_slice(&ids[0].to_be_bytes());
        journal.extend_from_slice(&arch.to_be_bytes());
        // One sled batch per tree, as the writer does: owners, blocks.
        let mut w = kv::Batch::default();
        w.insert(Tree::Owners, writer::JOURNAL_KEY, journal);
        for (ar, base, block) in &b.blocks {
            w.insert(
                Tree::Messages,
                rec::message_key(*ar, *base),
                block.as_slice(),
            );
        }
        a.inner.kv.write(w).unwrap();
        drop(a);
        let a = open(dir.path());
        assert_eq!(a.count(&alice).unwrap(), 3);
        assert_eq!(page(&a, "alice@x", Some("carol@x"), false, 10).len(), 2);
        assert_eq!(
            a.find_origin_id(&alice, &jid("carol@x"), "t1").unwrap(),
            Some(ids[1])
        );
        // Idempotent: nothing more at the next open; new ids above.
        drop(a);
        let a = open(dir.path());
        assert_eq!(a.count(&alice).unwrap(), 3);
        let r = a.append(vec![msg("alice@x", "bob@x", None, "n")]).unwrap();
        assert!(r[0].id() > ids[1]);
    }

    /// fjall on a full disk (a real tmpfs; root only, else SKIPPED): the
    /// durability wait of appends that cannot reach the disk fails (no
    /// panic, no hang) and appends are refused for a while; what was
    /// durable before reads back after space is freed and the archive is
    /// reopened, and writes work again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fjall_on_a_full_disk_fails_tickets_and_loses_nothing() {
        use crate::storage::sled::full_disk::Tmpfs;
        let Some(fs) = Tmpfs::mount(
            "48m",
            "fjall_on_a_full_disk_fails_tickets_and_loses_nothing",
        ) else {
            return;
        };
        let alice = jid("alice@x");
        let big = |i: usize| {
            msg(
                "alice@x",
                "bob@x",
                None,
                &format!("m{i} {}", "x".repeat(1000)),
            )
        };
        let wait = std::time::Duration::from_secs(20);
        let a = open_on(EngineKind::Fjall, fs.path());
        const BEFORE: usize = 40;
        for i in 0..BEFORE {
            a.append(vec![big(i)]).unwrap();
        }
        let t = a.ticket();
        a.durable(t).await.unwrap();
        let filler = fs.fill();
        let mut failed = None;
        for i in BEFORE..20_000 {
            match a.append((0..20).map(|j| big(i * 20 + j)).collect()) {
                Err(e) => {
                    failed = Some(e.to_string());
                    break;
                }
                Ok(_) => {
                    let t = a.ticket();
                    let r = tokio::time::timeout(wait, a.durable(t))
                        .await
                        .expect("a durability wait on a full disk hangs");
                    if let Err(e) = r {
                        failed = Some(e.to_string());
                        break;
                    }
                }
            }
        }
        let why = failed.expect("writes to a full disk must fail");
        assert!(!why.is_empty());
        // Reads go on.
        assert!(a.count(&alice).unwrap() >= BEFORE as u64);
        drop(a);
        std::fs::remove_file(filler).unwrap();
        let a = open_on(EngineKind::Fjall, fs.path());
        let all = page(&a, "alice@x", None, false, BEFORE);
        assert_eq!(all.len(), BEFORE);
        for (i, m) in all.iter().enumerate() {
            assert!(m.contains(&format!(">m{i} ")), "{i}: {m}");
        }
        let r = a.append(vec![big(99_999)]).unwrap();
        let t = a.ticket();
        a.durable(t).await.unwrap();
        assert_eq!(
            a.get(&alice, r[0].id()).unwrap().map(|m| m.id),
            Some(r[0].id())
        );
        drop(a);
    }

    /// Query times and bytes on disk of a large archive, at the store (no
    /// XMPP), per engine: `ARCHIVE_BENCH_N=1000000 cargo test --release
    /// --bin rookery archive_query_times -- --ignored --nocapture`
    /// (`ARCHIVE_BENCH_ENGINES=fjall` for one; docs/benchmarks.md).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore]
    async fn archive_query_times() {
        let engines = std::env::var("ARCHIVE_BENCH_ENGINES").unwrap_or("fjall,sled".into());
        for name in engines.split(',') {
            let engine = EngineKind::parse(name).expect("fjall or sled");
            println!("== {name}");
            archive_query_times_on(engine).await;
        }
    }

    async fn archive_query_times_on(engine: EngineKind) {
        let n: usize = std::env::var("ARCHIVE_BENCH_N")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000_000);
        let dir = tempfile::tempdir().unwrap();
        let a = open_on(engine, dir.path());
        let alice = jid("alice@localhost");
        // A 200-byte stanza; every tenth message with carol, the rest bob.
        let xml = |i: usize, peer: &str| {
            let body = format!("message {i} {}", "x".repeat(60));
            let s = format!(
                "<message from='{peer}/phone' to='alice@localhost' type='chat' id='id{i:08}'><body>{body}</body></message>"
            );
            format!("{s:<200}")
        };
        let t0 = std::time::Instant::now();
        let mut ids = Vec::with_capacity(n);
        for chunk in (0..n).collect::<Vec<_>>().chunks(2000) {
            let msgs = chunk
                .iter()
                .map(|i| {
                    let peer = if i % 10 == 9 {
                        "carol@localhost"
                    } else {
                        "bob@localhost"
                    };
                    NewMessage {
                        owner: alice.clone(),
                        peer: jid(peer),
                        direction: Direction::Incoming,
                        origin_id: Some(format!("o{i}")),
                        xml: xml(*i, peer),
                    }
                })
                .collect();
            ids.extend(a.append(msgs).unwrap().iter().map(|r| r.id()));
        }
        let t = a.ticket();
        a.durable(t).await.unwrap();
        let fill = t0.elapsed();
        fn du(p: &std::path::Path) -> u64 {
            let mut bytes = 0;
            for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
                match e.metadata() {
                    Ok(m) if m.is_dir() => bytes += du(&e.path()),
                    Ok(m) => bytes += m.len(),
                    Err(_) => {}
                }
            }
            bytes
        }
        let bytes = du(dir.path());
        println!(
            "{n} messages of 200 bytes (with origin-ids) appended in {fill:.1?}; {:.0} bytes on disk per message",
            bytes as f64 / n as f64
        );
        let mid = ids[n / 2];
        let q = |with, lo, hi, reverse| PageQuery {
            with,
            lo,
            hi,
            reverse,
            limit: 50,
        };
        let cases: Vec<(&str, PageQuery<'_>)> = vec![
            ("first page of 50", q(None, 0, u64::MAX, false)),
            (
                "middle page of 50 (after an id)",
                q(None, mid + 1, u64::MAX, false),
            ),
            ("last page of 50 (<before/>)", q(None, 0, u64::MAX, true)),
            (
                "with carol, middle page of 50",
                q(Some("carol@localhost"), mid + 1, u64::MAX, false),
            ),
            (
                "with carol, last page of 50",
                q(Some("carol@localhost"), 0, u64::MAX, true),
            ),
        ];
        for (name, query) in &cases {
            let mut times = Vec::new();
            for _ in 0..21 {
                let t = std::time::Instant::now();
                let page = a.page(&alice, query).unwrap();
                times.push(t.elapsed());
                assert_eq!(page.len(), 50, "{name}");
            }
            times.sort();
            println!("{name}: median {:?}, max {:?}", times[10], times[20]);
        }
        let counts: Vec<(&str, Option<&str>, u64, u64)> = vec![
            ("count, whole archive (counter)", None, 0, u64::MAX),
            (
                "count, with carol (counter)",
                Some("carol@localhost"),
                0,
                u64::MAX,
            ),
            (
                "count after the middle (complement walked)",
                None,
                mid + 1,
                u64::MAX,
            ),
            ("count of the last 5,000", None, ids[n - 5000], u64::MAX),
        ];
        for (name, with, lo, hi) in counts {
            let mut times = Vec::new();
            let mut last = None;
            for _ in 0..21 {
                let t = std::time::Instant::now();
                last = Some(a.count_range(&alice, with, lo, hi).unwrap());
                times.push(t.elapsed());
            }
            times.sort();
            println!(
                "{name}: {:?}, median {:?}, max {:?}",
                last.unwrap(),
                times[10],
                times[20]
            );
        }
    }

    /// A sent message (its sender's archive) and its received copy.
    fn pair(i: usize) -> Vec<NewMessage> {
        let xml = format!(
            "<message from='alice@x/phone' to='bob@x' id='m{i}' type='chat'><body>b{i}</body></message>"
        );
        let sent = NewMessage {
            owner: jid("alice@x"),
            peer: jid("bob@x"),
            direction: Direction::Outgoing,
            origin_id: None,
            xml: xml.clone(),
        };
        let received = NewMessage {
            owner: jid("bob@x"),
            peer: jid("alice@x"),
            direction: Direction::Incoming,
            origin_id: None,
            xml,
        };
        vec![sent, received]
    }

    /// An applier that stops writing (an engine's write halt) does not let
    /// memory grow: past the backlog bound appends are refused, as on a
    /// full disk; nothing accepted is lost once it writes again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stalled_writer_bounds_its_backlog() {
        use super::writer::INJECT_STALL;
        use std::sync::atomic::Ordering;
        let dir = tempfile::tempdir().unwrap();
        let a = open_on(EngineKind::Sled, dir.path());
        a.inner.w.max_backlog.store(16 << 10, Ordering::Relaxed);
        a.inner.w.inject.store(INJECT_STALL, Ordering::Relaxed);
        let mut accepted = 0;
        let refused = loop {
            match a.append(pair(accepted + 1)) {
                Ok(_) => accepted += 1,
                Err(e) => break e,
            }
            assert!(accepted < 1000, "never refused");
        };
        assert!(accepted > 5, "refused too early: {accepted}");
        assert!(!refused.is_full(), "{refused}");
        assert!(refused.to_string().contains("archive busy"), "{refused}");
        // Still refused while stalled.
        assert!(a.append(pair(accepted + 1)).is_err());
        // Writing again: everything accepted is there, appends work.
        a.inner.w.inject.store(0, Ordering::Relaxed);
        a.durable(a.ticket()).await.unwrap();
        a.append(pair(accepted + 1)).unwrap();
        a.durable(a.ticket()).await.unwrap();
        let got = page(&a, "alice@x", None, false, 2000);
        assert_eq!(got.len(), accepted + 1);
        for i in 1..=accepted + 1 {
            assert!(
                got.iter().any(|x| x.contains(&format!("id='m{i}'"))),
                "m{i} missing"
            );
        }
    }

    /// Failed writes and flushes (injected as a full disk) are reported
    /// with the messages they lost, before their tickets fail; appends are
    /// refused meanwhile; the archive works again afterwards.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failed_writes_are_reported_with_the_lost_messages() {
        for engine in ENGINES {
            failed_writes_are_reported_with_the_lost_messages_on(engine).await;
        }
    }

    async fn failed_writes_are_reported_with_the_lost_messages_on(engine: EngineKind) {
        use super::writer::{INJECT_FLUSH, INJECT_WRITE};
        use std::sync::atomic::Ordering;
        let dir = tempfile::tempdir().unwrap();
        let a = open_on(engine, dir.path());
        let mut reports = a.inner.w.take_failures().expect("the report channel");
        assert!(a.inner.w.take_failures().is_none(), "given once");
        let inject = |what: u8| a.inner.w.inject.store(what, Ordering::Relaxed);

        a.append(pair(1)).unwrap();
        a.durable(a.ticket()).await.unwrap();
        assert!(reports.try_recv().is_err());

        // A failed write: the report (both copies, owners named) is queued
        // before the durability wait fails.
        inject(INJECT_WRITE);
        a.append(pair(2)).unwrap();
        let e = a.durable(a.ticket()).await.unwrap_err();
        assert!(matches!(e, StorageError::Full(_)), "{e:?}");
        assert_eq!(a.inner.w.failures_reported(), 1);
        let r = reports
            .try_recv()
            .expect("a report before the ticket failed");
        assert_eq!(r.seq, 1);
        assert!(matches!(r.error, StorageError::Full(_)), "{:?}", r.error);
        let lost: Vec<_> = r
            .messages
            .iter()
            .map(|m| (m.owner.as_str(), m.outgoing, m.xml.contains("id='m2'")))
            .collect();
        assert_eq!(lost, [("alice@x", true, true), ("bob@x", false, true)]);

        // Refused at once for a while, as a full disk.
        let e = a.append(pair(3)).unwrap_err();
        assert!(e.is_full(), "{e}");
        assert!(e.to_string().contains("No space left on device"), "{e}");

        // A failed flush loses what was applied since the last one.
        inject(INJECT_FLUSH);
        std::thread::sleep(std::time::Duration::from_millis(1100));
        a.append(pair(4)).unwrap();
        assert!(a.durable(a.ticket()).await.is_err());
        let r = reports.try_recv().expect("the flush's report");
        assert_eq!(r.seq, 2);
        assert_eq!(r.messages.len(), 2);
        assert!(r.messages[0].outgoing && r.messages[0].xml.contains("id='m4'"));
        assert_eq!(a.inner.w.failures_reported(), 2);

        // Space again: appends work, nothing more is reported.
        inject(0);
        std::thread::sleep(std::time::Duration::from_millis(1100));
        a.append(pair(5)).unwrap();
        a.durable(a.ticket()).await.unwrap();
        assert!(reports.try_recv().is_err());
        let bodies: Vec<_> = page(&a, "alice@x", None, false, 10)
            .iter()
            .filter_map(|x| {
                x.split("<body>")
                    .nth(1)?
                    .split('<')
                    .next()
                    .map(str::to_string)
            })
            .collect();
        assert!(bodies.contains(&"b1".to_string()) && bodies.contains(&"b5".to_string()));
        assert!(!bodies.contains(&"b2".to_string()), "{bodies:?}");
        assert!(!bodies.contains(&"b3".to_string()), "{bodies:?}");
    }
}
