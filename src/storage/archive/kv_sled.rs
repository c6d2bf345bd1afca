//! The archive's trees in the server's sled database (`archive_engine:
//! sled`): five sled trees beside the other records' (names in `kv.rs`).
//!
//! [`ArchiveKv::write`] applies one sled batch per tree, in the order of
//! `kv::Tree` (sled's batches are atomic per tree and its log is recovered
//! as a prefix): not atomic across trees, so the writer journals each batch
//! and repairs a torn one at the next open (`writer.rs`). A multi-tree sled
//! transaction is atomic but reads every key it writes (twice the cost per
//! key); [`ArchiveKv::write_atomic`] uses one where that is needed
//! (retention, account removal, the old layout's conversion). A small
//! batch that touches several trees ([`ONE_TRANSACTION_UP_TO`] operations
//! or fewer: the applier's batch at a few messages a second) is written as
//! one transaction all the same: sled writes out its log buffer around each
//! batch or transaction it applies (`pin_log`: a `pwrite` and a
//! `sync_file_range` on its I/O thread pool, which wakes every idle pool
//! thread), so five per-tree batches cost up to ten log writes where one
//! transaction costs two, and at a low rate those fixed costs, not the
//! keys, are most of the archive's CPU (docs/benchmarks.md, "Group chat at
//! a low rate"). The journal is still written; it is then redundant.
//!
//! Message blocks are stored lz4-compressed (a leading [`LZ4`] byte, then
//! lz4_flex's size-prepended block): sled copies and rewrites a whole leaf
//! node for each insert into it, so its cost per archived message grows
//! with the bytes per message in a node; chat stanzas in one block repeat
//! their JIDs and compress several times over. A block that did not shrink
//! is stored as it is (an uncompressed block starts with 0, the varint of
//! its first message's id delta). Readers get blocks decompressed: the
//! format above this file, backups and moves to another engine never see
//! the compression.

use std::ops::Bound;
use std::path::{Path, PathBuf};

use sled::Transactional;

use super::kv::{ArchiveKv, Batch, Bytes, Iter, Tree, TREES};
use crate::storage::StorageError;

pub struct SledKv {
    db: sled::Db,
    dir: PathBuf,
    trees: [sled::Tree; 5],
}

impl SledKv {
    /// Open (creating) the archive's trees in `db`.
    pub fn open(db: &sled::Db, dir: &Path) -> Result<SledKv, StorageError> {
        let open = |t: Tree| db.open_tree(t.name()).map_err(|e| err(dir, e));
        Ok(SledKv {
            db: db.clone(),
            dir: dir.to_path_buf(),
            trees: [
                open(Tree::Owners)?,
                open(Tree::Messages)?,
                open(Tree::ByPeer)?,
                open(Tree::ByOrigin)?,
                open(Tree::Counts)?,
            ],
        })
    }

    /// Whether `db` has any archive tree (without creating one).
    pub fn exists_in(db: &sled::Db) -> bool {
        let names = db.tree_names();
        TREES
            .iter()
            .any(|t| names.iter().any(|n| n.as_ref() == t.name().as_bytes()))
    }

    /// Remove the archive's trees from the database (after its archive
    /// moved to another engine).
    pub fn drop_trees(self) -> Result<(), StorageError> {
        for t in TREES {
            self.db.drop_tree(t.name()).map_err(|e| err(&self.dir, e))?;
        }
        self.db.flush().map_err(|e| err(&self.dir, e))?;
        Ok(())
    }

    fn tree(&self, t: Tree) -> &sled::Tree {
        &self.trees[t as usize]
    }
}

fn err(dir: &Path, e: sled::Error) -> StorageError {
    match crate::storage::sled::map_sled_error(dir, e) {
        StorageError::Io(m) => StorageError::Io(format!("archive: {m}")),
        e => e,
    }
}

/// First byte of a compressed message block.
const LZ4: u8 = 0xC1;
/// Blocks shorter than this are stored as they are.
const COMPRESS_FROM: usize = 128;

/// What tree `t` stores for `v` (message blocks compressed when smaller).
fn stored(t: Tree, v: Vec<u8>) -> Vec<u8> {
    if t != Tree::Messages || v.len() < COMPRESS_FROM {
        return v;
    }
    let mut c = Vec::with_capacity(1 + 4 + lz4_flex::block::get_maximum_output_size(v.len()));
    c.push(LZ4);
    c.extend_from_slice(&(v.len() as u32).to_le_bytes());
    let start = c.len();
    c.resize(c.capacity(), 0);
    match lz4_flex::block::compress_into(&v, &mut c[start..]) {
        Ok(n) if start + n < v.len() => {
            c.truncate(start + n);
            c
        }
        _ => v,
    }
}

/// What a reader of tree `t` gets for the stored `v`.
fn loaded(t: Tree, k: &[u8], v: sled::IVec) -> Bytes {
    if t != Tree::Messages || v.first() != Some(&LZ4) {
        return Bytes::Sled(v);
    }
    match lz4_flex::block::decompress_size_prepended(&v[1..]) {
        Ok(plain) => Bytes::Owned(plain),
        Err(e) => {
            tracing::error!("archive: the block under key {k:02x?} does not decompress ({e})");
            // Not a block (an unfinished varint): readers log it and skip.
            Bytes::Owned(vec![0xff])
        }
    }
}

fn pair(
    dir: &Path,
    t: Tree,
    kv: sled::Result<(sled::IVec, sled::IVec)>,
) -> Result<(Bytes, Bytes), StorageError> {
    kv.map(|(k, v)| {
        let v = loaded(t, &k, v);
        (Bytes::Sled(k), v)
    })
    .map_err(|e| err(dir, e))
}

impl ArchiveKv for SledKv {
    fn engine(&self) -> &'static str {
        "sled"
    }

    fn dir(&self) -> &Path {
        &self.dir
    }

    fn get(&self, t: Tree, key: &[u8]) -> Result<Option<Bytes>, StorageError> {
        self.tree(t)
            .get(key)
            .map(|v| v.map(|v| loaded(t, key, v)))
            .map_err(|e| err(&self.dir, e))
    }

    fn range<'a>(&'a self, t: Tree, lo: Bound<&[u8]>, hi: Bound<&[u8]>, reverse: bool) -> Iter<'a> {
        let r = self.tree(t).range::<&[u8], _>((lo, hi));
        let dir = self.dir.as_path();
        if reverse {
            Box::new(r.rev().map(move |kv| pair(dir, t, kv)))
        } else {
            Box::new(r.map(move |kv| pair(dir, t, kv)))
        }
    }

    fn prefix<'a>(&'a self, t: Tree, prefix: &[u8]) -> Iter<'a> {
        let dir = self.dir.as_path();
        Box::new(
            self.tree(t)
                .scan_prefix(prefix)
                .map(move |kv| pair(dir, t, kv)),
        )
    }

    fn atomic_batches(&self) -> bool {
        false
    }

    fn write(&self, b: Batch) -> Result<(), StorageError> {
        if b.len() <= ONE_TRANSACTION_UP_TO {
            let first = b.ops.first().map(|(t, _, _)| *t);
            if b.ops.iter().any(|(t, _, _)| Some(*t) != first) {
                return self.transact(b);
            }
        }
        let mut per_tree: [Option<sled::Batch>; 5] = Default::default();
        for (t, k, v) in b.ops {
            let batch = per_tree[t as usize].get_or_insert_with(sled::Batch::default);
            match v {
                Some(v) => batch.insert(k, stored(t, v)),
                None => batch.remove(k),
            }
        }
        for t in TREES {
            if let Some(batch) = per_tree[t as usize].take() {
                self.tree(t)
                    .apply_batch(batch)
                    .map_err(|e| err(&self.dir, e))?;
            }
        }
        Ok(())
    }

    fn write_atomic(&self, b: Batch) -> Result<(), StorageError> {
        self.transact(b)
    }

    fn persist(&self) -> Result<(), StorageError> {
        self.db.flush().map(|_| ()).map_err(|e| err(&self.dir, e))
    }

    fn clear(&self, t: Tree) -> Result<(), StorageError> {
        self.tree(t).clear().map_err(|e| err(&self.dir, e))
    }
}

/// Batches of at most this many operations touching more than one tree
/// are written by [`ArchiveKv::write`] as one transaction (see the header):
/// a few messages' batch (about four operations a message: block, peer
/// entry, two counters). Larger ones keep a sled batch per tree: there the
/// transaction's read of every key would cost about what the log writes
/// it saves (a busy server's 500 ms batches hold hundreds of operations).
const ONE_TRANSACTION_UP_TO: usize = 64;

impl SledKv {
    /// `b` as one multi-tree sled transaction: all or nothing, one log pin.
    fn transact(&self, b: Batch) -> Result<(), StorageError> {
        // Compressed once, outside the closure (sled may run it again).
        let ops: Vec<(Tree, Vec<u8>, Option<Vec<u8>>)> = b
            .ops
            .into_iter()
            .map(|(t, k, v)| (t, k, v.map(|v| stored(t, v))))
            .collect();
        let [o, m, p, bo, c] = &self.trees;
        let r = (o, m, p, bo, c).transaction(|(o, m, p, bo, c)| {
            let trees = [o, m, p, bo, c];
            for (t, k, v) in &ops {
                let tree = trees[*t as usize];
                match v {
                    Some(v) => {
                        tree.insert(k.as_slice(), v.as_slice())?;
                    }
                    None => {
                        tree.remove(k.as_slice())?;
                    }
                }
            }
            Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
        });
        r.map_err(|e| match e {
            sled::transaction::TransactionError::Storage(e) => err(&self.dir, e),
            sled::transaction::TransactionError::Abort(()) => {
                StorageError::Io("archive: transaction aborted".into())
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch of `n` operations over every tree: an insert per key, then
    /// an overwrite of every other key (the last write wins) and the
    /// removal of a key written before the batch.
    fn mixed_batch(n: usize) -> Batch {
        let mut b = Batch::default();
        for i in 0..n {
            let t = TREES[i % TREES.len()];
            b.insert(t, format!("k{i:05}").into_bytes(), vec![1u8; 200 + i % 7]);
        }
        for i in (0..n).step_by(2) {
            let t = TREES[i % TREES.len()];
            b.insert(
                t,
                format!("k{i:05}").into_bytes(),
                format!("v{i}").into_bytes(),
            );
        }
        for t in TREES {
            b.remove(t, b"old".to_vec());
        }
        b
    }

    /// Small multi-tree batches (one transaction) and large ones (a sled
    /// batch per tree) leave the same contents, and both survive a
    /// `persist` and a reopen.
    #[test]
    fn small_and_large_batches_write_the_same_and_persist() {
        for n in [12, ONE_TRANSACTION_UP_TO / 2, ONE_TRANSACTION_UP_TO * 3] {
            let dir = tempfile::tempdir().unwrap();
            {
                let db = sled::open(dir.path()).unwrap();
                let kv = SledKv::open(&db, dir.path()).unwrap();
                for t in TREES {
                    kv.tree(t).insert(b"old", b"x".as_slice()).unwrap();
                }
                let b = mixed_batch(n);
                assert_eq!(b.len() <= ONE_TRANSACTION_UP_TO, n < ONE_TRANSACTION_UP_TO);
                kv.write(b).unwrap();
                kv.persist().unwrap();
            }
            let db = sled::open(dir.path()).unwrap();
            let kv = SledKv::open(&db, dir.path()).unwrap();
            for i in 0..n {
                let t = TREES[i % TREES.len()];
                let got = kv.get(t, format!("k{i:05}").as_bytes()).unwrap().unwrap();
                let want = if i % 2 == 0 {
                    format!("v{i}").into_bytes()
                } else {
                    vec![1u8; 200 + i % 7]
                };
                assert_eq!(&*got, &want[..], "n {n}, key {i}");
            }
            for t in TREES {
                assert!(kv.get(t, b"old").unwrap().is_none(), "n {n}: removed");
                let count = kv.prefix(t, b"k").count();
                assert_eq!(
                    count,
                    n / TREES.len() + usize::from(n % TREES.len() > t as usize)
                );
            }
        }
    }

    /// Many threads writing and flushing at once (each flush and each
    /// applied batch is a job on sled's I/O thread pool, which
    /// `vendor/sled` patches to wake one idle thread per job instead of
    /// all of them): every write and flush finishes — none waits for a
    /// pool thread that went back to sleep — and everything is there
    /// after a reopen.
    #[test]
    fn concurrent_writes_and_flushes_all_finish_on_the_patched_pool() {
        const THREADS: usize = 12;
        const ROUNDS: usize = 60;
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            let kv = std::sync::Arc::new(SledKv::open(&db, dir.path()).unwrap());
            let (done_tx, done_rx) = std::sync::mpsc::channel();
            for th in 0..THREADS {
                let (kv, done_tx) = (kv.clone(), done_tx.clone());
                std::thread::spawn(move || {
                    for r in 0..ROUNDS {
                        let mut b = Batch::default();
                        // Alternately one tree (a sled batch) and several
                        // (a transaction).
                        for t in &TREES[..1 + r % 2 * 2] {
                            b.insert(*t, format!("t{th:02}r{r:03}"), vec![th as u8; 64]);
                        }
                        kv.write(b).unwrap();
                        if r % 3 == th % 3 {
                            kv.persist().unwrap();
                        }
                    }
                    done_tx.send(th).unwrap();
                });
            }
            for _ in 0..THREADS {
                done_rx
                    .recv_timeout(std::time::Duration::from_secs(120))
                    .expect("a writer or a flush never finished (a lost pool wake-up)");
            }
            kv.persist().unwrap();
        }
        let db = sled::open(dir.path()).unwrap();
        let kv = SledKv::open(&db, dir.path()).unwrap();
        for th in 0..THREADS {
            for r in 0..ROUNDS {
                let key = format!("t{th:02}r{r:03}");
                for t in &TREES[..1 + r % 2 * 2] {
                    let got = kv.get(*t, key.as_bytes()).unwrap();
                    assert_eq!(got.as_deref(), Some(&[th as u8; 64][..]), "{key} in {t:?}");
                }
            }
        }
    }

    /// Message blocks are stored compressed and read back as written;
    /// blocks stored uncompressed (before compression, or that did not
    /// shrink) read as they are; a damaged compressed block reads as a
    /// block that does not parse (readers log and skip it).
    #[test]
    fn message_blocks_are_compressed_and_old_blocks_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let kv = SledKv::open(&db, dir.path()).unwrap();
        let mut block = Vec::new();
        for i in 0..40u64 {
            let rec = format!(
                "\u{1}\u{7}bob@x<message from='alice@x/phone' to='bob@x' type='chat' id='m{i}'><body>hello {i}</body></message>"
            );
            super::super::record::block_push(&mut block, 1000, 1000 + i, rec.as_bytes());
        }
        let mut b = Batch::default();
        b.insert(Tree::Messages, b"k1".to_vec(), block.clone());
        b.insert(Tree::Counts, b"k1".to_vec(), block.clone());
        kv.write(b).unwrap();
        let raw = kv.tree(Tree::Messages).get(b"k1").unwrap().unwrap();
        assert_eq!(raw[0], LZ4);
        assert!(
            raw.len() * 3 < block.len(),
            "{} of {}",
            raw.len(),
            block.len()
        );
        assert_eq!(
            &*kv.get(Tree::Messages, b"k1").unwrap().unwrap(),
            &block[..]
        );
        let all: Vec<_> = kv
            .prefix(Tree::Messages, b"")
            .map(|r| r.unwrap().1.to_vec())
            .collect();
        assert_eq!(all, [block.clone()]);
        // Other trees are stored as they are.
        let raw = kv.tree(Tree::Counts).get(b"k1").unwrap().unwrap();
        assert_eq!(&raw[..], &block[..]);

        // Written before compression (or not shrinking): read unchanged.
        kv.tree(Tree::Messages)
            .insert(b"k0", block.as_slice())
            .unwrap();
        assert_eq!(
            &*kv.get(Tree::Messages, b"k0").unwrap().unwrap(),
            &block[..]
        );
        let mut b = Batch::default();
        b.insert(Tree::Messages, b"k2".to_vec(), vec![0u8; 10]);
        kv.write_atomic(b).unwrap();
        assert_eq!(
            &*kv.get(Tree::Messages, b"k2").unwrap().unwrap(),
            &[0u8; 10]
        );

        // Damaged.
        let mut bad = kv
            .tree(Tree::Messages)
            .get(b"k1")
            .unwrap()
            .unwrap()
            .to_vec();
        bad.truncate(bad.len() / 2);
        kv.tree(Tree::Messages).insert(b"k3", bad).unwrap();
        let v = kv.get(Tree::Messages, b"k3").unwrap().unwrap();
        assert!(!super::super::record::block_entries(1000, &v).1);
    }
}
