//! The key-value seam under the message archive: the few operations the
//! archive's logic (`mod.rs`, `writer.rs`, `read.rs`, `migrate.rs`) needs
//! from an ordered key-value engine, over five named trees ([`Tree`]).
//! Implementations: `kv_sled.rs` (trees of the server's sled database) and
//! `kv_fjall.rs` (partitions of a fjall keyspace in `DATA_DIR/archive/`).
//!
//! Invariants every implementation keeps:
//! - keys sort bytewise; ranges and prefix scans return keys in that order
//!   (or the reverse), and see every write that returned before they began;
//! - [`ArchiveKv::write`] applies a [`Batch`] all or nothing when
//!   [`ArchiveKv::atomic_batches`] says so; otherwise tree by tree in the
//!   order of [`Tree`] (owners, messages, peer index, origin-ids, counters),
//!   each tree's part all or nothing, and a crash keeps a prefix of those
//!   parts (the writer's journal and repair rely on that order);
//! - [`ArchiveKv::write_atomic`] is all or nothing on every engine;
//! - a write is durable once [`ArchiveKv::persist`] returned after it.
//!
//! Errors are [`StorageError`]s (a full disk is `StorageError::Full`).

use std::ops::Bound;
use std::path::Path;

use crate::storage::StorageError;

/// The archive's trees (layout in `mod.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tree {
    Owners = 0,
    Messages = 1,
    ByPeer = 2,
    ByOrigin = 3,
    Counts = 4,
}

/// Every tree, in write order.
pub const TREES: [Tree; 5] = [
    Tree::Owners,
    Tree::Messages,
    Tree::ByPeer,
    Tree::ByOrigin,
    Tree::Counts,
];

impl Tree {
    /// The tree's name (a sled tree, a fjall partition, a backup's tree).
    pub fn name(self) -> &'static str {
        match self {
            Tree::Owners => "archive_owners",
            Tree::Messages => "archive_messages",
            Tree::ByPeer => "archive_by_peer",
            Tree::ByOrigin => "archive_by_origin",
            Tree::Counts => "archive_counts",
        }
    }

    /// The tree of that name.
    pub fn named(name: &[u8]) -> Option<Tree> {
        TREES.into_iter().find(|t| t.name().as_bytes() == name)
    }
}

/// A value or key read from an engine (no copy, but for a value the
/// engine had to decompress).
pub enum Bytes {
    Sled(sled::IVec),
    Fjall(fjall::Slice),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Sled(v) => v,
            Bytes::Fjall(v) => v,
            Bytes::Owned(v) => v,
        }
    }
}

impl AsRef<[u8]> for Bytes {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

/// Key-value pairs in key order (or the reverse).
pub type Iter<'a> = Box<dyn Iterator<Item = Result<(Bytes, Bytes), StorageError>> + 'a>;

/// Writes to several trees, applied by [`ArchiveKv::write`] or
/// [`ArchiveKv::write_atomic`] in the order they were added per tree.
#[derive(Default)]
pub struct Batch {
    /// (tree, key, value; `None` removes).
    pub ops: Vec<(Tree, Vec<u8>, Option<Vec<u8>>)>,
}

impl Batch {
    pub fn insert(&mut self, t: Tree, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push((t, key.into(), Some(value.into())));
    }

    pub fn remove(&mut self, t: Tree, key: impl Into<Vec<u8>>) {
        self.ops.push((t, key.into(), None));
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }
}

/// An ordered key-value engine holding the archive (see the module header).
pub trait ArchiveKv: Send + Sync {
    /// The engine's name in messages and docs (`fjall`, `sled`).
    fn engine(&self) -> &'static str;
    /// Where the engine keeps its files (in messages).
    fn dir(&self) -> &Path;
    fn get(&self, t: Tree, key: &[u8]) -> Result<Option<Bytes>, StorageError>;
    /// Pairs with keys in `(lo, hi)`, in order or (`reverse`) newest first.
    fn range<'a>(&'a self, t: Tree, lo: Bound<&[u8]>, hi: Bound<&[u8]>, reverse: bool) -> Iter<'a>;
    /// Pairs whose key starts with `prefix`, in order.
    fn prefix<'a>(&'a self, t: Tree, prefix: &[u8]) -> Iter<'a>;
    /// Whether [`ArchiveKv::write`] is all or nothing across trees.
    fn atomic_batches(&self) -> bool;
    /// Apply `b` (see the module header for what a crash leaves).
    fn write(&self, b: Batch) -> Result<(), StorageError>;
    /// Apply `b` all or nothing.
    fn write_atomic(&self, b: Batch) -> Result<(), StorageError>;
    /// Make every write so far durable (write and fsync).
    fn persist(&self) -> Result<(), StorageError>;
    /// Remove every key of `t`.
    fn clear(&self, t: Tree) -> Result<(), StorageError>;
}

/// Whether every tree of `kv` is empty.
pub fn is_empty(kv: &dyn ArchiveKv) -> Result<bool, StorageError> {
    for t in TREES {
        if let Some(kv) = kv.prefix(t, b"").next() {
            kv?;
            return Ok(false);
        }
    }
    Ok(true)
}

/// Range bounds for a `lo..=hi` range.
pub fn incl<'a>(lo: &'a [u8], hi: &'a [u8]) -> (Bound<&'a [u8]>, Bound<&'a [u8]>) {
    (Bound::Included(lo), Bound::Included(hi))
}
