//! Reading and trimming the archive's blocks (layout in `record.rs`), on
//! any engine (`kv.rs`):
//! pages by id range in either direction, with or without a peer, bounded
//! counts, and the removal of messages below an id (retention).
//!
//! Blocks of one archive never overlap in ids (each batch's ids are above
//! every earlier batch's, and the conversion of the old layout runs before
//! any append), so walking block keys in order walks messages in order.
//! A damaged block or record is skipped from the damage on, with a log
//! line naming the owner.

use std::collections::{HashMap, HashSet};

use std::ops::Bound;

use jid::BareJid;
use xep_support::archive::ArchivedMessage;
use xep_support::module::StoreError;

use super::kv::{self, Bytes, Tree};
use super::record as rec;
use super::Inner;

/// Blocks trimmed per transaction by [`delete_before`].
const DELETE_BLOCKS: usize = 64;

/// How a walk goes on after one message.
enum Step {
    Go,
    Stop,
}

impl Inner {
    /// The block holding (or that would hold) `id`: its key id and value.
    fn block_at(&self, a: u32, id: u64) -> Result<Option<(u64, Bytes)>, StoreError> {
        let (lo, hi) = (rec::message_key(a, 0), rec::message_key(a, id));
        let (lo, hi) = kv::incl(&lo, &hi);
        let last = self.kv.range(Tree::Messages, lo, hi, true).next();
        match last {
            Some(kv) => {
                let (k, v) = kv.map_err(|e| self.store_err(e))?;
                Ok(rec::id_of_key(&k).map(|b| (b, v)))
            }
            None => Ok(None),
        }
    }

    /// The entries of a block, logging damage.
    fn entries<'v>(owner: &BareJid, base: u64, v: &'v [u8]) -> Vec<(u64, &'v [u8])> {
        let (e, ok) = rec::block_entries(base, v);
        if !ok {
            tracing::error!(
                "archive of {owner}: block {base:020} is damaged after {} messages; the rest is skipped",
                e.len()
            );
        }
        e
    }

    fn decode(owner: &BareJid, id: u64, r: &[u8]) -> Option<ArchivedMessage> {
        let m = rec::decode(id, r);
        if m.is_none() {
            tracing::error!("archive of {owner}: message {id:020} is damaged; skipped");
        }
        m
    }

    /// Call `f` with every message id (and record) of archive `a` in
    /// `lo..=hi`, in order or (`reverse`) newest first, until it says stop.
    fn walk(
        &self,
        owner: &BareJid,
        a: u32,
        lo: u64,
        hi: u64,
        reverse: bool,
        f: &mut dyn FnMut(u64, &[u8]) -> Step,
    ) -> Result<(), StoreError> {
        if lo > hi {
            return Ok(());
        }
        if !reverse {
            let start = self.block_at(a, lo)?.map_or(lo, |(b, _)| b);
            let (from, to) = (rec::message_key(a, start), rec::message_key(a, hi));
            let (from, to) = kv::incl(&from, &to);
            for kv in self.kv.range(Tree::Messages, from, to, false) {
                let (k, v) = kv.map_err(|e| self.store_err(e))?;
                let Some(base) = rec::id_of_key(&k) else {
                    continue;
                };
                for (id, r) in Self::entries(owner, base, &v) {
                    if id < lo {
                        continue;
                    }
                    if id > hi {
                        return Ok(());
                    }
                    if let Step::Stop = f(id, r) {
                        return Ok(());
                    }
                }
            }
        } else {
            let (from, to) = (rec::message_key(a, 0), rec::message_key(a, hi));
            let (from, to) = kv::incl(&from, &to);
            for kv in self.kv.range(Tree::Messages, from, to, true) {
                let (k, v) = kv.map_err(|e| self.store_err(e))?;
                let Some(base) = rec::id_of_key(&k) else {
                    continue;
                };
                for (id, r) in Self::entries(owner, base, &v).into_iter().rev() {
                    if id > hi {
                        continue;
                    }
                    if id < lo {
                        return Ok(());
                    }
                    if let Step::Stop = f(id, r) {
                        return Ok(());
                    }
                }
                if base < lo {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Like [`Inner::walk`] over the messages with `peer` (ids only: the
    /// records are read by the caller when it wants them).
    fn walk_peer(
        &self,
        a: u32,
        peer: &str,
        lo: u64,
        hi: u64,
        reverse: bool,
        f: &mut dyn FnMut(u64, u64) -> Result<Step, StoreError>,
    ) -> Result<(), StoreError> {
        if lo > hi {
            return Ok(());
        }
        let entry = |kv: Result<(Bytes, Bytes), crate::storage::StorageError>| -> Result<Option<(u64, Vec<u64>)>, StoreError> {
            let (k, v) = kv.map_err(|e| self.store_err(e))?;
            let Some(base) = rec::id_of_key(&k) else {
                return Ok(None);
            };
            Ok(rec::peer_entry_ids(base, &v))
        };
        if !reverse {
            let (from, to) = (rec::peer_key(a, peer, 0), rec::peer_key(a, peer, lo));
            let (from, to) = kv::incl(&from, &to);
            let start = match self.kv.range(Tree::ByPeer, from, to, true).next() {
                Some(kv) => rec::id_of_key(&kv.map_err(|e| self.store_err(e))?.0).unwrap_or(lo),
                None => lo,
            };
            let (from, to) = (rec::peer_key(a, peer, start), rec::peer_key(a, peer, hi));
            let (from, to) = kv::incl(&from, &to);
            for kv in self.kv.range(Tree::ByPeer, from, to, false) {
                let Some((block, ids)) = entry(kv)? else {
                    continue;
                };
                for id in ids {
                    if id < lo {
                        continue;
                    }
                    if id > hi {
                        return Ok(());
                    }
                    if let Step::Stop = f(block, id)? {
                        return Ok(());
                    }
                }
            }
        } else {
            let (from, to) = (rec::peer_key(a, peer, 0), rec::peer_key(a, peer, hi));
            let (from, to) = kv::incl(&from, &to);
            for kv in self.kv.range(Tree::ByPeer, from, to, true) {
                let Some((block, ids)) = entry(kv)? else {
                    continue;
                };
                let first = ids.first().copied().unwrap_or(0);
                for id in ids.into_iter().rev() {
                    if id > hi {
                        continue;
                    }
                    if id < lo {
                        return Ok(());
                    }
                    if let Step::Stop = f(block, id)? {
                        return Ok(());
                    }
                }
                if first < lo {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// At most `limit` messages of archive `a` in `lo..=hi` (with `peer`).
    #[allow(clippy::too_many_arguments)]
    pub fn page_of(
        &self,
        owner: &BareJid,
        a: u32,
        peer: Option<&str>,
        lo: u64,
        hi: u64,
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<ArchivedMessage>, StoreError> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        match peer {
            None => self.walk(owner, a, lo, hi, reverse, &mut |id, r| {
                if let Some(m) = Self::decode(owner, id, r) {
                    out.push(m);
                }
                if out.len() >= limit {
                    Step::Stop
                } else {
                    Step::Go
                }
            })?,
            Some(peer) => {
                // One block read serves its consecutive messages.
                let mut cached: Option<(u64, Bytes)> = None;
                self.walk_peer(a, peer, lo, hi, reverse, &mut |block, id| {
                    if cached.as_ref().map(|c| c.0) != Some(block) {
                        let v = self
                            .kv
                            .get(Tree::Messages, &rec::message_key(a, block))
                            .map_err(|e| self.store_err(e))?;
                        match v {
                            Some(v) => cached = Some((block, v)),
                            None => {
                                tracing::error!(
                                    "archive of {owner}: the peer index names block {block:020}, which is missing"
                                );
                                return Ok(Step::Go);
                            }
                        }
                    }
                    let (_, v) = cached.as_ref().expect("just read");
                    let entries = Self::entries(owner, block, v);
                    match entries.binary_search_by_key(&id, |e| e.0) {
                        Ok(i) => {
                            if let Some(m) = Self::decode(owner, id, entries[i].1) {
                                out.push(m);
                            }
                        }
                        Err(_) => tracing::error!(
                            "archive of {owner}: message {id:020} is missing from its block"
                        ),
                    }
                    Ok(if out.len() >= limit { Step::Stop } else { Step::Go })
                })?
            }
        }
        Ok(out)
    }

    /// How many messages of archive `a` in `lo..=hi` (with `peer`), counted
    /// up to `cap + 1`.
    pub fn count_between(
        &self,
        owner: &BareJid,
        a: u32,
        peer: Option<&str>,
        lo: u64,
        hi: u64,
        cap: usize,
    ) -> Result<usize, StoreError> {
        let mut n = 0;
        match peer {
            None => self.walk(owner, a, lo, hi, false, &mut |_, _| {
                n += 1;
                if n > cap {
                    Step::Stop
                } else {
                    Step::Go
                }
            })?,
            Some(peer) => self.walk_peer(a, peer, lo, hi, false, &mut |_, _| {
                n += 1;
                Ok(if n > cap { Step::Stop } else { Step::Go })
            })?,
        }
        Ok(n)
    }

    /// The first and last message ids of archive `a` (with `peer`).
    pub fn span(
        &self,
        owner: &BareJid,
        a: u32,
        peer: Option<&str>,
    ) -> Result<Option<(u64, u64)>, StoreError> {
        let mut first = None;
        let mut last = None;
        match peer {
            None => {
                self.walk(owner, a, 0, u64::MAX, false, &mut |id, _| {
                    first = Some(id);
                    Step::Stop
                })?;
                self.walk(owner, a, 0, u64::MAX, true, &mut |id, _| {
                    last = Some(id);
                    Step::Stop
                })?;
            }
            Some(peer) => {
                self.walk_peer(a, peer, 0, u64::MAX, false, &mut |_, id| {
                    first = Some(id);
                    Ok(Step::Stop)
                })?;
                self.walk_peer(a, peer, 0, u64::MAX, true, &mut |_, id| {
                    last = Some(id);
                    Ok(Step::Stop)
                })?;
            }
        }
        Ok(first.zip(last))
    }

    /// The record of message `id`.
    pub fn get_one(
        &self,
        owner: &BareJid,
        a: u32,
        id: u64,
    ) -> Result<Option<ArchivedMessage>, StoreError> {
        let Some((base, v)) = self.block_at(a, id)? else {
            return Ok(None);
        };
        let entries = Self::entries(owner, base, &v);
        Ok(match entries.binary_search_by_key(&id, |e| e.0) {
            Ok(i) => Self::decode(owner, id, entries[i].1),
            Err(_) => None,
        })
    }
}

/// Replace the stanza XML of message `id` of archive `a` (a tombstone):
/// its block is rewritten with the one record changed (peer, direction
/// and origin-id kept, so the indexes and counts stay right). The caller
/// holds the gate and the write lock. `false`: no such message.
pub fn replace_one(
    inner: &Inner,
    owner: &BareJid,
    a: u32,
    id: u64,
    xml: &str,
) -> Result<bool, StoreError> {
    let Some((base, v)) = inner.block_at(a, id)? else {
        return Ok(false);
    };
    let (entries, whole) = rec::block_entries(base, &v);
    if !whole {
        // Rewriting would drop the damaged rest: left as it is.
        tracing::error!(
            "archive of {owner}: block {base:020} is damaged; message {id:020} not replaced"
        );
        return Ok(false);
    }
    if entries.binary_search_by_key(&id, |e| e.0).is_err() {
        return Ok(false);
    }
    let mut block = Vec::with_capacity(v.len());
    for (eid, r) in entries {
        if eid == id {
            let Some(m) = Inner::decode(owner, id, r) else {
                return Ok(false);
            };
            let record = rec::encode(m.direction, &m.peer, m.origin_id.as_deref(), xml);
            rec::block_push(&mut block, base, eid, &record);
        } else {
            rec::block_push(&mut block, base, eid, r);
        }
    }
    let mut w = kv::Batch::default();
    w.insert(Tree::Messages, rec::message_key(a, base), block);
    inner.kv.write_atomic(w).map_err(|e| inner.store_err(e))?;
    Ok(true)
}

/// Remove at most `limit` messages of archive `a` with ids below `cutoff`
/// (their blocks trimmed or removed, their peer index entries, origin-ids
/// and counts with them), one atomic write per [`DELETE_BLOCKS`] blocks;
/// the caller holds the gate and the write lock (so what is read here does
/// not change before the write). How many were removed.
pub fn delete_before(
    inner: &Inner,
    owner: &BareJid,
    a: u32,
    cutoff: u64,
    limit: usize,
) -> Result<usize, StoreError> {
    let kvs = inner.kv.as_ref();
    let mut deleted = 0;
    while deleted < limit {
        // The blocks to trim: (key id, remaining value or None).
        let mut blocks: Vec<(u64, Option<Vec<u8>>)> = Vec::new();
        let mut gone: HashMap<String, HashSet<u64>> = HashMap::new();
        let mut origins: Vec<(Vec<u8>, u64)> = Vec::new();
        let mut deltas: HashMap<Vec<u8>, u64> = HashMap::new();
        let mut more = false;
        let (from, to) = (rec::message_key(a, 0), rec::message_key(a, cutoff));
        for kv in kvs.range(
            Tree::Messages,
            Bound::Included(&from),
            Bound::Excluded(&to),
            false,
        ) {
            if blocks.len() >= DELETE_BLOCKS || deleted >= limit {
                more = true;
                break;
            }
            let (k, v) = kv.map_err(|e| inner.store_err(e))?;
            let Some(base) = rec::id_of_key(&k) else {
                continue;
            };
            let (entries, _) = rec::block_entries(base, &v);
            let mut kept = Vec::new();
            for (id, r) in entries {
                if id >= cutoff || deleted >= limit {
                    rec::block_push(&mut kept, base, id, r);
                    continue;
                }
                deleted += 1;
                *deltas.entry(rec::archive_prefix(a).to_vec()).or_default() += 1;
                if let Some((peer, origin)) = rec::peer_of(r) {
                    *deltas.entry(rec::peer_count_key(a, peer)).or_default() += 1;
                    gone.entry(peer.to_string()).or_default().insert(id);
                    if let Some(o) = origin {
                        origins.push((rec::origin_key(a, peer, o), id));
                    }
                } else {
                    tracing::error!("archive of {owner}: message {id:020} is damaged; removed");
                }
            }
            blocks.push((base, (!kept.is_empty()).then_some(kept)));
        }
        if blocks.is_empty() {
            break;
        }
        // The peer index entries naming removed messages.
        let mut entries: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        for (peer, ids) in &gone {
            let max = ids.iter().max().copied().unwrap_or(0);
            let (from, to) = (rec::peer_key(a, peer, 0), rec::peer_key(a, peer, max));
            let (from, to) = kv::incl(&from, &to);
            for kv in kvs.range(Tree::ByPeer, from, to, false) {
                let (k, v) = kv.map_err(|e| inner.store_err(e))?;
                let Some(base) = rec::id_of_key(&k) else {
                    continue;
                };
                let Some((block, all)) = rec::peer_entry_ids(base, &v) else {
                    entries.push((k.to_vec(), None));
                    continue;
                };
                if !all.iter().any(|id| ids.contains(id)) {
                    continue;
                }
                let left: Vec<u64> = all.into_iter().filter(|id| !ids.contains(id)).collect();
                entries.push((
                    k.to_vec(),
                    (!left.is_empty()).then(|| rec::peer_entry(block, base, &left)),
                ));
            }
        }
        let err = |e| inner.store_err(e);
        let mut w = kv::Batch::default();
        for (base, kept) in blocks {
            let key = rec::message_key(a, base);
            match kept {
                Some(v) => w.insert(Tree::Messages, key, v),
                None => w.remove(Tree::Messages, key),
            }
        }
        for (k, v) in entries {
            match v {
                Some(v) => w.insert(Tree::ByPeer, k, v),
                None => w.remove(Tree::ByPeer, k),
            }
        }
        for (k, id) in origins {
            // Only if it names this message.
            let named = kvs.get(Tree::ByOrigin, &k).map_err(err)?;
            if named.and_then(|v| rec::u64_of(&v)) == Some(id) {
                w.remove(Tree::ByOrigin, k);
            }
        }
        for (k, d) in deltas {
            let cur = kvs
                .get(Tree::Counts, &k)
                .map_err(err)?
                .and_then(|v| rec::u64_of(&v))
                .unwrap_or(0);
            let n = cur.saturating_sub(d);
            if n == 0 {
                w.remove(Tree::Counts, k);
            } else {
                w.insert(Tree::Counts, k, n.to_be_bytes());
            }
        }
        kvs.write_atomic(w).map_err(err)?;
        if !more {
            break;
        }
    }
    Ok(deleted)
}
