//! The archive in fjall (`archive_engine: fjall`, opt-in): one fjall
//! keyspace in `DATA_DIR/archive/` with one partition per archive tree
//! (names in `kv.rs`). fjall is a log-structured merge tree: a write is an
//! append to its journal and an insert into an in-memory table, flushed to
//! sorted files in the background; no page of the tree is read or
//! rewritten on the write path (what sled spends its time on, see
//! docs/benchmarks.md, "The message archive (issue 13)").
//!
//! - A keyspace batch is atomic across partitions (one journal entry):
//!   [`ArchiveKv::write`] and [`ArchiveKv::write_atomic`] are the same, and
//!   the writer needs no journal of its own nor a repair at open.
//! - Batches reach the OS at commit (a `write`), the disk at
//!   [`ArchiveKv::persist`] (`PersistMode::SyncAll`: write + fsync of the
//!   journal), which the archive's flusher calls within its bound.
//! - After a write or fsync failed (a full disk), fjall refuses every later
//!   write of the run ("poisoned"), like sled; reads go on. Restarting after
//!   space is freed recovers the journal up to its last complete batch.
//! - Memory is bounded: see [`CACHE_BYTES`] and [`WRITE_BUFFER_BYTES`].
//! - Writes never halt for good: fjall holds a write while its journals
//!   pass [`JOURNAL_BYTES`] until flushes release some, and its flusher
//!   must take several queued tables per wake-up for that to happen after
//!   a restart ([`FLUSH_WORKERS`]; the test at the end writes past the
//!   limit on a reopened keyspace). A commit held for long is logged.
//! - Only one process opens it: the caller holds sled's lock on
//!   `DATA_DIR/db` first (fjall takes no lock of its own).

use std::ops::Bound;
use std::path::{Path, PathBuf};

use fjall::{Config, Keyspace, PartitionCreateOptions, PartitionHandle, PersistMode};

use super::kv::{ArchiveKv, Batch, Bytes, Iter, Tree};
use crate::storage::StorageError;

/// The block cache: recent blocks (the pages clients ask for are mostly the
/// newest), counters, owners and index blocks. 16 MiB keeps a small
/// server's working set and bounds a large one's; sled's cache for every
/// other record is 64 MiB (`sled/mod.rs`).
const CACHE_BYTES: u64 = 16 * 1024 * 1024;
/// All in-memory tables together (fjall flushes the largest when the sum
/// passes this): 16 MiB is several seconds of archive writes at 10,000
/// messages/s, so the files flushed are few and large.
const WRITE_BUFFER_BYTES: u64 = 16 * 1024 * 1024;
/// The in-memory tables' sizes (fjall seals a partition's table and
/// queues it for flushing past this); tests shrink them to roll journals
/// within a few megabytes ([`FjallKv::open_tuned`]).
#[derive(Clone, Copy, Debug)]
pub struct Tuning {
    /// `archive_messages`: the blocks get most of the budget.
    pub messages_memtable: u32,
    /// Every other partition.
    pub other_memtable: u32,
}

impl Tuning {
    /// The server's sizes.
    pub const SERVER: Tuning = Tuning {
        messages_memtable: 8 * 1024 * 1024,
        other_memtable: 2 * 1024 * 1024,
    };
}

/// Journals kept before fjall halts writes until flushes free some (disk,
/// not memory; fjall's least is 24 MiB). fjall preallocates each journal
/// at 32 MiB and counts that size for every sealed one, so the limit is 8
/// sealed journals; its monitor starts sealing idle partitions' tables at
/// half of it. 32 MiB (one sealed journal) stalled writes at every roll.
const JOURNAL_BYTES: u64 = 256 * 1024 * 1024;
/// Memtables fjall's flusher takes per wake-up (and writes in parallel).
/// The cause of the write halt seen at issue 13's stop 14
/// (docs/architecture.md): fjall 2.11 wakes its flusher once per sealed
/// memtable, but after recovering a keyspace with sealed journals it
/// queues one memtable per partition and journal and wakes it only once
/// per partition. With 1, as here before, each wake-up flushed exactly one
/// memtable, so that surplus stayed queued for the whole run; the flusher
/// takes queues in a fixed order, the surplus settles in partitions that
/// seal no table of their own (counters, owners), the monitor skips
/// partitions with queued tables, every later journal waits for those
/// tables, and once sealed journals reach [`JOURNAL_BYTES`] writes halt
/// for good (no write, no seal, no wake-up). With 16, the wake-ups at
/// open take everything a recovery can queue (5 partitions times at most
/// 8 journals to the limit plus the monitor's seals), and any later
/// wake-up takes whatever is queued. Usually one memtable is queued: the
/// parallelism costs nothing then.
const FLUSH_WORKERS: usize = 16;
/// Files fjall keeps open (a cache: it reopens beyond). Its default, 900,
/// would compete with client connections for the process's descriptors.
const OPEN_FILES: usize = 256;
/// A batch commit slower than this is logged (fjall's write stalls).
const SLOW_COMMIT: std::time::Duration = std::time::Duration::from_millis(400);
/// At most one such log line this often.
const SLOW_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);
/// Records removed per batch by [`ArchiveKv::clear`].
const CLEAR_CHUNK: usize = 10_000;

pub struct FjallKv {
    ks: Keyspace,
    parts: [PartitionHandle; 5],
    dir: PathBuf,
    /// When a slow commit was last logged.
    slow_logged: std::sync::Mutex<Option<std::time::Instant>>,
}

/// Whether an I/O error means the disk or quota is full.
fn full(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(28) | Some(122))
        || matches!(
            e.kind(),
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
        )
}

/// Whether the file system holding `dir` has (almost) no room left for
/// us: under 1 MiB available (`statvfs`).
fn no_space_left(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `path` is a valid C string and `st` a writable statvfs.
    if unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) } != 0 {
        return false;
    }
    // SAFETY: statvfs returned 0, so it filled `st`.
    let st = unsafe { st.assume_init() };
    st.f_bavail.saturating_mul(st.f_frsize) < 1024 * 1024
}

fn err(dir: &Path, e: fjall::Error) -> StorageError {
    let at = dir.display();
    match &e {
        fjall::Error::Io(io) | fjall::Error::Storage(fjall::LsmError::Io(io)) if full(io) => {
            StorageError::Full(format!("{at}: {io}"))
        }
        // fjall keeps the error of a failed journal write or fsync to
        // itself and answers "poisoned" from then on: a disk with no room
        // left is the full disk the sender must hear of.
        fjall::Error::Poisoned if no_space_left(dir) => StorageError::Full(format!(
            "{at}: archive: No space left on device; the archive takes no writes until rookery is restarted"
        )),
        fjall::Error::Poisoned => StorageError::Io(format!(
            "{at}: archive: an earlier write failed; the archive takes no writes until rookery is restarted"
        )),
        fjall::Error::Decode(_) | fjall::Error::JournalRecovery(_) => {
            StorageError::Corrupt(format!("{at}: archive: {e}"))
        }
        _ => StorageError::Io(format!("{at}: archive: {e}")),
    }
}

impl FjallKv {
    /// Open (creating, owner-only) the keyspace in `dir`.
    pub fn open(dir: &Path) -> Result<FjallKv, StorageError> {
        FjallKv::open_tuned(dir, Tuning::SERVER)
    }

    /// [`FjallKv::open`] with other in-memory table sizes.
    pub fn open_tuned(dir: &Path, tuning: Tuning) -> Result<FjallKv, StorageError> {
        crate::storage::sled::create_private_dir(dir)?;
        let ks = Config::new(dir)
            .cache_size(CACHE_BYTES)
            .max_write_buffer_size(WRITE_BUFFER_BYTES)
            .max_journaling_size(JOURNAL_BYTES)
            .flush_workers(FLUSH_WORKERS)
            .compaction_workers(1)
            .max_open_files(OPEN_FILES)
            .open()
            .map_err(|e| err(dir, e))?;
        let open = |t: Tree| {
            let size = if t == Tree::Messages {
                tuning.messages_memtable
            } else {
                tuning.other_memtable
            };
            ks.open_partition(
                t.name(),
                PartitionCreateOptions::default().max_memtable_size(size),
            )
            .map_err(|e| err(dir, e))
        };
        let parts = [
            open(Tree::Owners)?,
            open(Tree::Messages)?,
            open(Tree::ByPeer)?,
            open(Tree::ByOrigin)?,
            open(Tree::Counts)?,
        ];
        Ok(FjallKv {
            ks,
            parts,
            dir: dir.to_path_buf(),
            slow_logged: std::sync::Mutex::new(None),
        })
    }

    /// Whether `dir` holds a keyspace (without creating one).
    pub fn exists_in(dir: &Path) -> bool {
        dir.join("version").exists() || dir.join("journals").exists()
    }

    fn part(&self, t: Tree) -> &PartitionHandle {
        &self.parts[t as usize]
    }

    fn pair(&self, kv: fjall::Result<fjall::KvPair>) -> Result<(Bytes, Bytes), StorageError> {
        kv.map(|(k, v)| (Bytes::Fjall(k), Bytes::Fjall(v)))
            .map_err(|e| err(&self.dir, e))
    }

    fn commit(&self, b: Batch) -> Result<(), StorageError> {
        if b.is_empty() {
            return Ok(());
        }
        let mut fb = fjall::Batch::with_capacity(self.ks.clone(), b.len());
        for (t, k, v) in b.ops {
            match v {
                Some(v) => fb.insert(self.part(t), k, v),
                None => fb.remove(self.part(t), k),
            }
        }
        let started = std::time::Instant::now();
        let r = fb.commit().map_err(|e| err(&self.dir, e));
        let took = started.elapsed();
        if took >= SLOW_COMMIT
            && self.slow_logged.lock().is_ok_and(|mut at| {
                let due = at.is_none_or(|t| t.elapsed() >= SLOW_LOG_EVERY);
                if due {
                    *at = Some(std::time::Instant::now());
                }
                due
            })
        {
            // fjall holds a write while its journals or in-memory tables
            // are over their limits (a stall of 0.5 s near the journal
            // limit; a halt beyond until flushes free some).
            tracing::warn!(
                "archive: fjall held a write for {} ms ({} journals, {} KiB in memory tables)",
                took.as_millis(),
                self.ks.journal_count(),
                self.ks.write_buffer_size() / 1024
            );
        }
        r
    }
}

impl ArchiveKv for FjallKv {
    fn engine(&self) -> &'static str {
        "fjall"
    }

    fn dir(&self) -> &Path {
        &self.dir
    }

    fn get(&self, t: Tree, key: &[u8]) -> Result<Option<Bytes>, StorageError> {
        self.part(t)
            .get(key)
            .map(|v| v.map(Bytes::Fjall))
            .map_err(|e| err(&self.dir, e))
    }

    fn range<'a>(&'a self, t: Tree, lo: Bound<&[u8]>, hi: Bound<&[u8]>, reverse: bool) -> Iter<'a> {
        let r = self.part(t).range::<&[u8], _>((lo, hi));
        if reverse {
            Box::new(r.rev().map(move |kv| self.pair(kv)))
        } else {
            Box::new(r.map(move |kv| self.pair(kv)))
        }
    }

    fn prefix<'a>(&'a self, t: Tree, prefix: &[u8]) -> Iter<'a> {
        Box::new(self.part(t).prefix(prefix).map(move |kv| self.pair(kv)))
    }

    fn atomic_batches(&self) -> bool {
        true
    }

    fn write(&self, b: Batch) -> Result<(), StorageError> {
        self.commit(b)
    }

    fn write_atomic(&self, b: Batch) -> Result<(), StorageError> {
        self.commit(b)
    }

    fn persist(&self) -> Result<(), StorageError> {
        self.ks
            .persist(PersistMode::SyncAll)
            .map_err(|e| err(&self.dir, e))
    }

    fn clear(&self, t: Tree) -> Result<(), StorageError> {
        loop {
            let mut b = Batch::default();
            for k in self.part(t).keys().take(CLEAR_CHUNK) {
                b.remove(t, k.map_err(|e| err(&self.dir, e))?.to_vec());
            }
            if b.is_empty() {
                return Ok(());
            }
            self.commit(b)?;
        }
    }
}

impl Drop for FjallKv {
    fn drop(&mut self) {
        // What the flusher did not persist yet (a graceful stop persists
        // before; this covers a dropped handle in tests and tools).
        if let Err(e) = self.ks.persist(PersistMode::SyncAll) {
            tracing::error!("archive: persisting at close: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, RwLock};
    use std::time::{Duration, Instant};

    use jid::BareJid;
    use xep_support::archive::{ArchiveStore, Direction, NewMessage};

    use super::super::Archive;
    use super::*;

    /// Small in-memory tables for `archive_messages` only: a batch of the
    /// test seals one and rolls the journal; the other partitions keep the
    /// server's size, so (as under chat load) they are not sealed by their
    /// own writes.
    const SMALL: Tuning = Tuning {
        messages_memtable: 128 * 1024,
        other_memtable: Tuning::SERVER.other_memtable,
    };

    /// Journal files in the keyspace (the active one and the sealed ones).
    fn journals(dir: &Path) -> usize {
        std::fs::read_dir(dir.join("journals"))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// `batches` batches of 50 chat messages of 2 KiB between 20 accounts,
    /// each archived at both ends, written through the archive's applier
    /// (each batch made durable before the next), in a thread; whether
    /// they were all durable within `within`.
    fn write_through_applier(
        dir: &Path,
        first: usize,
        batches: usize,
        within: Duration,
    ) -> Result<(), String> {
        let (tx, rx) = std::sync::mpsc::channel();
        let d = dir.to_path_buf();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let kv = FjallKv::open_tuned(&d, SMALL).unwrap();
            let a = Archive::open(Box::new(kv), Arc::new(RwLock::new(()))).unwrap();
            let body = "x".repeat(2048);
            for b in first..first + batches {
                let mut msgs = Vec::new();
                for i in 0..50 {
                    let (from, to) = (format!("u{}@x", i % 20), format!("u{}@x", (i + 1) % 20));
                    let xml = format!("<message id='m{b}-{i}'><body>{body}</body></message>");
                    for (owner, peer, direction) in [
                        (&from, &to, Direction::Outgoing),
                        (&to, &from, Direction::Incoming),
                    ] {
                        msgs.push(NewMessage {
                            owner: BareJid::new(owner).unwrap(),
                            peer: BareJid::new(peer).unwrap(),
                            direction,
                            origin_id: None,
                            xml: xml.clone(),
                        });
                    }
                }
                if let Err(e) = a.append(msgs) {
                    let _ = tx.send(Err(format!("batch {b}: {e}")));
                    return;
                }
                if let Err(e) = rt.block_on(a.durable(a.ticket())) {
                    let _ = tx.send(Err(format!("batch {b}: {e}")));
                    return;
                }
            }
            a.shutdown();
            drop(a);
            let _ = tx.send(Ok(()));
        });
        let started = Instant::now();
        match rx.recv_timeout(within) {
            Ok(r) => r,
            Err(_) => Err(format!(
                "writes did not finish in {:?}: fjall halted them ({} journal files)",
                started.elapsed(),
                journals(dir)
            )),
        }
    }

    /// fjall's write halt (issue 13): more than the journal limit
    /// ([`JOURNAL_BYTES`]; every sealed journal counts at least its 32 MiB
    /// preallocation) written through the applier completes, on a fresh
    /// keyspace and on one reopened with sealed journals to recover —
    /// where fjall 2.11 queues a flush per partition and journal but wakes
    /// its flusher once per partition ([`FLUSH_WORKERS`]; with 1 the
    /// reopened keyspace halted for good at the limit).
    #[test]
    fn writing_past_the_journal_limit_never_halts_after_a_restart() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("archive");
        // Three times as many sealed journals as fit under the limit.
        let limit_journals = 3 * (JOURNAL_BYTES / (32 << 20)) as usize;
        write_through_applier(&dir, 0, limit_journals, Duration::from_secs(60)).unwrap();
        // Leave journals to recover: a few batches, each sealing a table
        // of `archive_messages` while the other partitions' tables (counts,
        // peer index, owners) stay unflushed in every journal.
        let fresh = tmp.path().join("archive2");
        write_through_applier(&fresh, 0, 6, Duration::from_secs(60)).unwrap();
        let left = journals(&fresh);
        assert!(
            left >= 3,
            "expected sealed journals left, found {left} files"
        );
        // Reopened: recovery queues their tables; writing past the limit
        // again completes.
        write_through_applier(&fresh, 6, limit_journals, Duration::from_secs(60)).unwrap();
        // Everything is there.
        let kv = FjallKv::open_tuned(&fresh, SMALL).unwrap();
        let a = Archive::open(Box::new(kv), Arc::new(RwLock::new(()))).unwrap();
        let n = a.count(&BareJid::new("u0@x").unwrap()).unwrap();
        assert_eq!(
            n as usize,
            (6 + limit_journals) * 5,
            "messages in u0's archive"
        );
    }
}
