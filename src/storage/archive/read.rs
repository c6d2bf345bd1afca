//! Reading and trimming the archive's blocks (layout in `archive_record.rs`):
//! pages by id range in either direction, with or without a peer, bounded
//! counts, and the removal of messages below an id (retention).
//!
//! Blocks of one archive never overlap in ids (each batch's ids are above
//! every earlier batch's, and the conversion of the old layout runs before
//! any append), so walking block keys in order walks messages in order.
//! A damaged block or record is skipped from the damage on, with a log
//! line naming the owner.

use std::collections::{HashMap, HashSet};

use jid::BareJid;
use sled::Transactional;
use xep_support::archive::ArchivedMessage;
use xep_support::module::StoreError;

use super::archive::Inner;
use super::archive_record as rec;

/// Blocks trimmed per transaction by [`delete_before`].
const DELETE_BLOCKS: usize = 64;

/// How a walk goes on after one message.
enum Step {
    Go,
    Stop,
}

impl Inner {
    /// The block holding (or that would hold) `id`: its key id and value.
    fn block_at(&self, a: u32, id: u64) -> Result<Option<(u64, sled::IVec)>, StoreError> {
        let last = self
            .trees
            .messages
            .range(rec::message_key(a, 0)..=rec::message_key(a, id))
            .next_back();
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
        let m = &self.trees.messages;
        if !reverse {
            let start = self.block_at(a, lo)?.map_or(lo, |(b, _)| b);
            for kv in m.range(rec::message_key(a, start)..=rec::message_key(a, hi)) {
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
            for kv in m
                .range(rec::message_key(a, 0)..=rec::message_key(a, hi))
                .rev()
            {
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
        let p = &self.trees.by_peer;
        let entry = |kv: sled::Result<(sled::IVec, sled::IVec)>| -> Result<Option<(u64, Vec<u64>)>, StoreError> {
            let (k, v) = kv.map_err(|e| self.store_err(e))?;
            let Some(base) = rec::id_of_key(&k) else {
                return Ok(None);
            };
            Ok(rec::peer_entry_ids(base, &v))
        };
        if !reverse {
            let start = match p
                .range(rec::peer_key(a, peer, 0)..=rec::peer_key(a, peer, lo))
                .next_back()
            {
                Some(kv) => rec::id_of_key(&kv.map_err(|e| self.store_err(e))?.0).unwrap_or(lo),
                None => lo,
            };
            for kv in p.range(rec::peer_key(a, peer, start)..=rec::peer_key(a, peer, hi)) {
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
            for kv in p
                .range(rec::peer_key(a, peer, 0)..=rec::peer_key(a, peer, hi))
                .rev()
            {
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
                let mut cached: Option<(u64, sled::IVec)> = None;
                self.walk_peer(a, peer, lo, hi, reverse, &mut |block, id| {
                    if cached.as_ref().map(|c| c.0) != Some(block) {
                        let v = self
                            .trees
                            .messages
                            .get(rec::message_key(a, block))
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

/// Remove at most `limit` messages of archive `a` with ids below `cutoff`
/// (their blocks trimmed or removed, their peer index entries, origin-ids
/// and counts with them), a transaction per [`DELETE_BLOCKS`] blocks; the
/// caller holds the gate and the write lock. How many were removed.
pub fn delete_before(
    inner: &Inner,
    owner: &BareJid,
    a: u32,
    cutoff: u64,
    limit: usize,
) -> Result<usize, StoreError> {
    let t = &inner.trees;
    let mut deleted = 0;
    while deleted < limit {
        // The blocks to trim: (key id, remaining value or None).
        let mut blocks: Vec<(u64, Option<Vec<u8>>)> = Vec::new();
        let mut gone: HashMap<String, HashSet<u64>> = HashMap::new();
        let mut origins: Vec<(Vec<u8>, u64)> = Vec::new();
        let mut deltas: HashMap<Vec<u8>, u64> = HashMap::new();
        let mut more = false;
        for kv in t
            .messages
            .range(rec::message_key(a, 0)..rec::message_key(a, cutoff))
        {
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
            for kv in t
                .by_peer
                .range(rec::peer_key(a, peer, 0)..=rec::peer_key(a, peer, max))
            {
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
        let r = (&t.messages, &t.by_peer, &t.by_origin, &t.counts).transaction(|(m, p, o, c)| {
            for (base, kept) in &blocks {
                let key = rec::message_key(a, *base);
                match kept {
                    Some(v) => m.insert(&key[..], v.as_slice())?,
                    None => m.remove(&key[..])?,
                };
            }
            for (k, v) in &entries {
                match v {
                    Some(v) => p.insert(k.as_slice(), v.as_slice())?,
                    None => p.remove(k.as_slice())?,
                };
            }
            for (k, id) in &origins {
                // Only if it names this message.
                if o.get(k.as_slice())?.and_then(|v| rec::u64_of(&v)) == Some(*id) {
                    o.remove(k.as_slice())?;
                }
            }
            for (k, d) in &deltas {
                let cur = c
                    .get(k.as_slice())?
                    .and_then(|v| rec::u64_of(&v))
                    .unwrap_or(0);
                let n = cur.saturating_sub(*d);
                if n == 0 {
                    c.remove(k.as_slice())?;
                } else {
                    c.insert(k.as_slice(), &n.to_be_bytes())?;
                }
            }
            Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
        });
        r.map_err(|e| StoreError::other(format!("{}: archive: {e:?}", inner.dir.display())))?;
        if !more {
            break;
        }
    }
    Ok(deleted)
}
