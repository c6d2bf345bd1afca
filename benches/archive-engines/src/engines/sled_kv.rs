//! sled 0.34: one `sled::Db` with one tree per [`Tree`], opened as Rookery
//! opens its database (64 MiB cache, default flush interval).
//!
//! `apply` groups the writes by tree, applies one `sled::Batch` per tree
//! (each atomic on its own) and then `Db::flush` (write + fsync of the log):
//! a crash between two trees' batches can leave one tree ahead of another,
//! which the crash test reports. The `sled-tx` engine ([`SledKv::open_tx`])
//! applies the batch as one sled transaction over the four trees instead
//! (atomic together), then flushes.

use std::path::Path;

use super::{Kv, Pair, Tree, Write, CACHE_BYTES, TREES};

pub struct SledKv {
    db: sled::Db,
    trees: Vec<sled::Tree>,
    /// Apply each batch as one multi-tree transaction.
    tx: bool,
}

fn e(err: sled::Error) -> String {
    format!("sled: {err}")
}

impl SledKv {
    pub fn open(dir: &Path) -> Result<Self, String> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_BYTES)
            .open()
            .map_err(e)?;
        let trees = TREES
            .iter()
            .map(|t| db.open_tree(t.name()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(e)?;
        Ok(SledKv {
            db,
            trees,
            tx: false,
        })
    }

    /// As [`SledKv::open`], applying each batch as one transaction over the trees.
    pub fn open_tx(dir: &Path) -> Result<Self, String> {
        Ok(SledKv {
            tx: true,
            ..SledKv::open(dir)?
        })
    }

    fn apply_tx(&self, writes: &[Write]) -> Result<(), String> {
        use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
        let t = &self.trees;
        let r: Result<(), TransactionError<()>> =
            (&t[0], &t[1], &t[2], &t[3]).transaction(|(a, b, c, d)| {
                for w in writes {
                    let tree = match w.tree {
                        Tree::Messages => a,
                        Tree::ByPeer => b,
                        Tree::ByOrigin => c,
                        Tree::Counters => d,
                    };
                    tree.insert(w.key.as_slice(), w.value.as_slice())?;
                }
                Ok::<(), ConflictableTransactionError<()>>(())
            });
        r.map_err(|e| format!("sled transaction: {e:?}"))?;
        self.db.flush().map_err(e)?;
        Ok(())
    }
}

impl Kv for SledKv {
    fn apply(&self, writes: &[Write]) -> Result<(), String> {
        if self.tx {
            return self.apply_tx(writes);
        }
        let mut batches: Vec<sled::Batch> = TREES.iter().map(|_| sled::Batch::default()).collect();
        let mut used = [false; 4];
        for w in writes {
            batches[w.tree as usize].insert(w.key.as_slice(), w.value.as_slice());
            used[w.tree as usize] = true;
        }
        for (i, b) in batches.into_iter().enumerate() {
            if used[i] {
                self.trees[i].apply_batch(b).map_err(e)?;
            }
        }
        self.db.flush().map_err(e)?;
        Ok(())
    }

    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
        Ok(self.trees[tree as usize]
            .get(key)
            .map_err(e)?
            .map(|v| v.to_vec()))
    }

    fn scan(
        &self,
        tree: Tree,
        lo: &[u8],
        hi: &[u8],
        rev: bool,
        limit: usize,
    ) -> Result<Vec<Pair>, String> {
        let r = self.trees[tree as usize].range(lo..hi);
        let it: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> =
            if rev { Box::new(r.rev()) } else { Box::new(r) };
        it.take(limit)
            .map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(e))
            .collect()
    }

    fn count(&self, tree: Tree, lo: &[u8], hi: &[u8]) -> Result<u64, String> {
        let mut n = 0;
        for kv in self.trees[tree as usize].range(lo..hi) {
            kv.map_err(e)?;
            n += 1;
        }
        Ok(n)
    }
}
