//! The archive's trees in the server's sled database (`archive_engine:
//! sled`): five sled trees beside the other records' (names in `kv.rs`).
//!
//! [`ArchiveKv::write`] applies one sled batch per tree, in the order of
//! `kv::Tree` (sled's batches are atomic per tree and its log is recovered
//! as a prefix): not atomic across trees, so the writer journals each batch
//! and repairs a torn one at the next open (`writer.rs`). A multi-tree sled
//! transaction would be atomic but reads every key it writes (twice the
//! cost); [`ArchiveKv::write_atomic`] uses one where that is needed
//! (retention, account removal, the old layout's conversion).

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

fn pair(
    dir: &Path,
    kv: sled::Result<(sled::IVec, sled::IVec)>,
) -> Result<(Bytes, Bytes), StorageError> {
    kv.map(|(k, v)| (Bytes::Sled(k), Bytes::Sled(v)))
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
            .map(|v| v.map(Bytes::Sled))
            .map_err(|e| err(&self.dir, e))
    }

    fn range<'a>(&'a self, t: Tree, lo: Bound<&[u8]>, hi: Bound<&[u8]>, reverse: bool) -> Iter<'a> {
        let r = self.tree(t).range::<&[u8], _>((lo, hi));
        let dir = self.dir.as_path();
        if reverse {
            Box::new(r.rev().map(move |kv| pair(dir, kv)))
        } else {
            Box::new(r.map(move |kv| pair(dir, kv)))
        }
    }

    fn prefix<'a>(&'a self, t: Tree, prefix: &[u8]) -> Iter<'a> {
        let dir = self.dir.as_path();
        Box::new(
            self.tree(t)
                .scan_prefix(prefix)
                .map(move |kv| pair(dir, kv)),
        )
    }

    fn atomic_batches(&self) -> bool {
        false
    }

    fn write(&self, b: Batch) -> Result<(), StorageError> {
        let mut per_tree: [Option<sled::Batch>; 5] = Default::default();
        for (t, k, v) in b.ops {
            let batch = per_tree[t as usize].get_or_insert_with(sled::Batch::default);
            match v {
                Some(v) => batch.insert(k, v),
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
        let [o, m, p, bo, c] = &self.trees;
        let r = (o, m, p, bo, c).transaction(|(o, m, p, bo, c)| {
            let trees = [o, m, p, bo, c];
            for (t, k, v) in &b.ops {
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

    fn persist(&self) -> Result<(), StorageError> {
        self.db.flush().map(|_| ()).map_err(|e| err(&self.dir, e))
    }

    fn clear(&self, t: Tree) -> Result<(), StorageError> {
        self.tree(t).clear().map_err(|e| err(&self.dir, e))
    }
}
