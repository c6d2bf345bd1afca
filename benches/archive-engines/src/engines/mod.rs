//! The engines under test behind one small key-value interface: four named
//! trees (messages, the peer index, the origin-id index, counters), an
//! atomic-as-the-engine-allows batch of writes that is durable (fsynced) when
//! `apply` returns, point reads and bounded range scans in either direction.
//!
//! Invariant: every engine gets the same keys and values from `archive.rs`;
//! nothing here knows the archive's layout, so the figures compare engines,
//! not layouts. Each implementation lives in its own file and says what its
//! `apply` guarantees across trees.

pub mod fjall_kv;
pub mod redb_kv;
pub mod sled_kv;

use std::path::Path;

/// The trees of the archive layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tree {
    Messages = 0,
    ByPeer = 1,
    ByOrigin = 2,
    Counters = 3,
}

pub const TREES: [Tree; 4] = [Tree::Messages, Tree::ByPeer, Tree::ByOrigin, Tree::Counters];

impl Tree {
    pub fn name(self) -> &'static str {
        match self {
            Tree::Messages => "archive_messages",
            Tree::ByPeer => "archive_by_peer",
            Tree::ByOrigin => "archive_by_origin",
            Tree::Counters => "archive_counters",
        }
    }
}

/// One write of a batch.
pub struct Write {
    pub tree: Tree,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

pub type Pair = (Vec<u8>, Vec<u8>);

pub trait Kv {
    /// Apply the writes and make them durable (fsync) before returning.
    fn apply(&self, writes: &[Write]) -> Result<(), String>;
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, String>;
    /// Up to `limit` pairs with `lo <= key < hi`, ascending, or descending from `hi` if `rev`.
    fn scan(
        &self,
        tree: Tree,
        lo: &[u8],
        hi: &[u8],
        rev: bool,
        limit: usize,
    ) -> Result<Vec<Pair>, String>;
    /// Number of keys with `lo <= key < hi` (a full range walk).
    fn count(&self, tree: Tree, lo: &[u8], hi: &[u8]) -> Result<u64, String>;
}

/// The engines by name, as given on the command line.
/// `sled-tx` is sled with each batch as one transaction over its trees.
pub const ENGINES: [&str; 4] = ["sled", "sled-tx", "fjall", "redb"];

/// Open (creating if needed) engine `name`'s database in `dir`.
pub fn open(name: &str, dir: &Path) -> Result<Box<dyn Kv>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    match name {
        "sled" => Ok(Box::new(sled_kv::SledKv::open(dir)?)),
        "sled-tx" => Ok(Box::new(sled_kv::SledKv::open_tx(dir)?)),
        "fjall" => Ok(Box::new(fjall_kv::FjallKv::open(dir)?)),
        "redb" => Ok(Box::new(redb_kv::RedbKv::open(dir)?)),
        other => Err(format!(
            "unknown engine {other:?} (expected one of {ENGINES:?})"
        )),
    }
}

/// The page cache each engine is given (Rookery's sled cache is 64 MiB).
pub const CACHE_BYTES: u64 = 64 * 1024 * 1024;
