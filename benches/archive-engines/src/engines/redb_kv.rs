//! redb (a copy-on-write B-tree in one file): one table per [`Tree`], 64 MiB
//! cache.
//!
//! `apply` is one write transaction over all tables committed with
//! `Durability::Immediate` (redb's default: fsynced when `commit` returns),
//! so a batch is atomic across tables.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{Kv, Pair, Tree, Write, CACHE_BYTES, TREES};

/// One item of a range over a `&[u8] -> &[u8]` table.
type Guards<'a> = Result<
    (
        redb::AccessGuard<'a, &'static [u8]>,
        redb::AccessGuard<'a, &'static [u8]>,
    ),
    redb::StorageError,
>;

type Def = TableDefinition<'static, &'static [u8], &'static [u8]>;

const DEFS: [Def; 4] = [
    TableDefinition::new("archive_messages"),
    TableDefinition::new("archive_by_peer"),
    TableDefinition::new("archive_by_origin"),
    TableDefinition::new("archive_counters"),
];

pub struct RedbKv {
    db: Database,
}

fn e(err: impl std::fmt::Display) -> String {
    format!("redb: {err}")
}

impl RedbKv {
    pub fn open(dir: &Path) -> Result<Self, String> {
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES as usize)
            .create(dir.join("archive.redb"))
            .map_err(e)?;
        // Create the tables once, so that readers can open them.
        let tx = db.begin_write().map_err(e)?;
        for t in TREES {
            tx.open_table(DEFS[t as usize]).map_err(e)?;
        }
        tx.commit().map_err(e)?;
        Ok(RedbKv { db })
    }
}

impl Kv for RedbKv {
    fn apply(&self, writes: &[Write]) -> Result<(), String> {
        let tx = self.db.begin_write().map_err(e)?;
        {
            let mut tables = Vec::with_capacity(4);
            for t in TREES {
                tables.push(tx.open_table(DEFS[t as usize]).map_err(e)?);
            }
            for w in writes {
                tables[w.tree as usize]
                    .insert(w.key.as_slice(), w.value.as_slice())
                    .map_err(e)?;
            }
        }
        tx.commit().map_err(e)
    }

    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let tx = self.db.begin_read().map_err(e)?;
        let t = tx.open_table(DEFS[tree as usize]).map_err(e)?;
        let v = t.get(key).map_err(e)?.map(|v| v.value().to_vec());
        Ok(v)
    }

    fn scan(
        &self,
        tree: Tree,
        lo: &[u8],
        hi: &[u8],
        rev: bool,
        limit: usize,
    ) -> Result<Vec<Pair>, String> {
        let tx = self.db.begin_read().map_err(e)?;
        let t = tx.open_table(DEFS[tree as usize]).map_err(e)?;
        let r = t.range(lo..hi).map_err(e)?;
        let conv = |kv: Guards<'_>| {
            kv.map(|(k, v)| (k.value().to_vec(), v.value().to_vec()))
                .map_err(e)
        };
        if rev {
            r.rev().take(limit).map(conv).collect()
        } else {
            r.take(limit).map(conv).collect()
        }
    }

    fn count(&self, tree: Tree, lo: &[u8], hi: &[u8]) -> Result<u64, String> {
        let tx = self.db.begin_read().map_err(e)?;
        let t = tx.open_table(DEFS[tree as usize]).map_err(e)?;
        let mut n = 0;
        for kv in t.range(lo..hi).map_err(e)? {
            kv.map_err(e)?;
            n += 1;
        }
        Ok(n)
    }
}
