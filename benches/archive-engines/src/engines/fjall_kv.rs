//! fjall 2 (an LSM tree): one keyspace with one partition per [`Tree`], 64 MiB
//! block cache, default write buffers and background flush/compaction.
//!
//! `apply` commits one keyspace batch over all partitions (atomic across
//! them: one journal entry) with `PersistMode::SyncAll`, so the journal is
//! fsynced before `apply` returns.

use std::path::Path;

use fjall::{Batch, Config, Keyspace, PartitionCreateOptions, PartitionHandle, PersistMode};

use super::{Kv, Pair, Tree, Write, CACHE_BYTES, TREES};

pub struct FjallKv {
    ks: Keyspace,
    parts: Vec<PartitionHandle>,
}

fn e(err: fjall::Error) -> String {
    format!("fjall: {err}")
}

impl FjallKv {
    pub fn open(dir: &Path) -> Result<Self, String> {
        let ks = Config::new(dir).cache_size(CACHE_BYTES).open().map_err(e)?;
        let parts = TREES
            .iter()
            .map(|t| ks.open_partition(t.name(), PartitionCreateOptions::default()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(e)?;
        Ok(FjallKv { ks, parts })
    }
}

impl Kv for FjallKv {
    fn apply(&self, writes: &[Write]) -> Result<(), String> {
        let mut b: Batch = self.ks.batch().durability(Some(PersistMode::SyncAll));
        for w in writes {
            b.insert(
                &self.parts[w.tree as usize],
                w.key.as_slice(),
                w.value.as_slice(),
            );
        }
        b.commit().map_err(e)
    }

    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
        Ok(self.parts[tree as usize]
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
        let r = self.parts[tree as usize].range(lo.to_vec()..hi.to_vec());
        let it: Box<dyn Iterator<Item = fjall::Result<fjall::KvPair>>> =
            if rev { Box::new(r.rev()) } else { Box::new(r) };
        it.take(limit)
            .map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(e))
            .collect()
    }

    fn count(&self, tree: Tree, lo: &[u8], hi: &[u8]) -> Result<u64, String> {
        let mut n = 0;
        for kv in self.parts[tree as usize].range(lo.to_vec()..hi.to_vec()) {
            kv.map_err(e)?;
            n += 1;
        }
        Ok(n)
    }
}
