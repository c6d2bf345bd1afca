//! The archive layout of issue 13 on top of any [`Kv`]: one archive per owner
//! (a `u32` id), time-ordered message ids, the message stored once per
//! archive, a peer index, an origin-id index and per-archive counters written
//! in the same batch as the messages.
//!
//! Keys (all integers big-endian, so byte order is id order):
//!
//! | tree        | key                                   | value                                      |
//! |-------------|---------------------------------------|--------------------------------------------|
//! | messages    | archive u32, id u64                   | dir u8, peer len u8, peer, origin len u8, origin, stanza |
//! | by_peer     | archive u32, peer, 0x00, id u64       | empty                                      |
//! | by_origin   | archive u32, origin-id                | id u64                                     |
//! | counters    | archive u32                           | count u64, first id u64, last id u64       |
//!
//! Invariants: ids are strictly increasing across the whole database (one
//! writer: microseconds since the epoch, or the last id + 1 if the clock has
//! not moved); an entry whose origin-id is already in its archive is not
//! stored again (a point read of by_origin per append); the counters held
//! in memory are those on disk after each `append` returns.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::engines::{Kv, Tree, Write};

/// One message to archive in one owner's archive.
pub struct Entry {
    pub archive: u32,
    pub peer: String,
    pub outgoing: bool,
    pub origin: String,
    pub stanza: Vec<u8>,
}

/// A message read back from a page.
pub struct Stored {
    pub id: u64,
    pub peer: String,
    pub outgoing: bool,
    pub origin: String,
    pub stanza: Vec<u8>,
}

#[derive(Clone, Copy, Default)]
pub struct Counter {
    pub count: u64,
    pub first: u64,
    pub last: u64,
}

pub struct Archive {
    pub kv: Box<dyn Kv>,
    counters: HashMap<u32, Counter>,
    last_id: u64,
    pub dedupe: bool,
}

pub fn msg_key(archive: u32, id: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(12);
    k.extend_from_slice(&archive.to_be_bytes());
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn peer_prefix(archive: u32, peer: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(5 + peer.len() + 8);
    k.extend_from_slice(&archive.to_be_bytes());
    k.extend_from_slice(peer.as_bytes());
    k.push(0);
    k
}

fn origin_key(archive: u32, origin: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + origin.len());
    k.extend_from_slice(&archive.to_be_bytes());
    k.extend_from_slice(origin.as_bytes());
    k
}

fn encode_counter(c: &Counter) -> Vec<u8> {
    let mut v = Vec::with_capacity(24);
    v.extend_from_slice(&c.count.to_be_bytes());
    v.extend_from_slice(&c.first.to_be_bytes());
    v.extend_from_slice(&c.last.to_be_bytes());
    v
}

pub fn decode_counter(v: &[u8]) -> Result<Counter, String> {
    if v.len() != 24 {
        return Err(format!("counter of {} bytes", v.len()));
    }
    let n = |i: usize| u64::from_be_bytes(v[i..i + 8].try_into().unwrap());
    Ok(Counter {
        count: n(0),
        first: n(8),
        last: n(16),
    })
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().unwrap())
}

pub fn be_u64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b[..8].try_into().unwrap())
}

pub fn decode_message(key: &[u8], v: &[u8]) -> Result<Stored, String> {
    let bad = || format!("corrupt message entry ({} bytes)", v.len());
    if key.len() != 12 || v.len() < 3 {
        return Err(bad());
    }
    let outgoing = v[0] == 1;
    let pl = v[1] as usize;
    let peer = v.get(2..2 + pl).ok_or_else(bad)?;
    let ol = *v.get(2 + pl).ok_or_else(bad)? as usize;
    let origin = v.get(3 + pl..3 + pl + ol).ok_or_else(bad)?;
    Ok(Stored {
        id: be_u64(&key[4..]),
        peer: String::from_utf8_lossy(peer).into_owned(),
        outgoing,
        origin: String::from_utf8_lossy(origin).into_owned(),
        stanza: v[3 + pl + ol..].to_vec(),
    })
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl Archive {
    /// Open over `kv`, loading the counters (one small tree).
    pub fn open(kv: Box<dyn Kv>) -> Result<Archive, String> {
        let mut counters = HashMap::new();
        let mut last_id = 0;
        for (k, v) in kv.scan(Tree::Counters, &[], &[0xff; 5], false, usize::MAX)? {
            let c = decode_counter(&v)?;
            last_id = last_id.max(c.last);
            counters.insert(be_u32(&k), c);
        }
        Ok(Archive {
            kv,
            counters,
            last_id,
            dedupe: true,
        })
    }

    fn next_id(&mut self) -> u64 {
        self.last_id = now_micros().max(self.last_id + 1);
        self.last_id
    }

    pub fn last_id(&self) -> u64 {
        self.last_id
    }

    pub fn counters(&self) -> &HashMap<u32, Counter> {
        &self.counters
    }

    /// Archive the entries in one durable batch; returns the ids given
    /// (0 for an entry skipped as a duplicate origin-id).
    pub fn append(&mut self, entries: &[Entry]) -> Result<Vec<u64>, String> {
        let mut writes = Vec::with_capacity(entries.len() * 3 + 64);
        let mut touched: HashMap<u32, Counter> = HashMap::new();
        let mut ids = Vec::with_capacity(entries.len());
        for e in entries {
            let okey = origin_key(e.archive, &e.origin);
            if self.dedupe && self.kv.get(Tree::ByOrigin, &okey)?.is_some() {
                ids.push(0);
                continue;
            }
            let id = self.next_id();
            ids.push(id);
            let mut v = Vec::with_capacity(3 + e.peer.len() + e.origin.len() + e.stanza.len());
            v.push(e.outgoing as u8);
            v.push(e.peer.len() as u8);
            v.extend_from_slice(e.peer.as_bytes());
            v.push(e.origin.len() as u8);
            v.extend_from_slice(e.origin.as_bytes());
            v.extend_from_slice(&e.stanza);
            writes.push(Write {
                tree: Tree::Messages,
                key: msg_key(e.archive, id),
                value: v,
            });
            let mut pk = peer_prefix(e.archive, &e.peer);
            pk.extend_from_slice(&id.to_be_bytes());
            writes.push(Write {
                tree: Tree::ByPeer,
                key: pk,
                value: Vec::new(),
            });
            writes.push(Write {
                tree: Tree::ByOrigin,
                key: okey,
                value: id.to_be_bytes().to_vec(),
            });
            let c = touched
                .entry(e.archive)
                .or_insert_with(|| self.counters.get(&e.archive).copied().unwrap_or_default());
            if c.count == 0 {
                c.first = id;
            }
            c.count += 1;
            c.last = id;
        }
        for (a, c) in &touched {
            writes.push(Write {
                tree: Tree::Counters,
                key: a.to_be_bytes().to_vec(),
                value: encode_counter(c),
            });
        }
        self.kv.apply(&writes)?;
        self.counters.extend(touched);
        Ok(ids)
    }

    fn page_range(
        &self,
        lo: Vec<u8>,
        hi: Vec<u8>,
        rev: bool,
        n: usize,
    ) -> Result<Vec<Stored>, String> {
        let mut out: Vec<Stored> = self
            .kv
            .scan(Tree::Messages, &lo, &hi, rev, n)?
            .iter()
            .map(|(k, v)| decode_message(k, v))
            .collect::<Result<_, _>>()?;
        if rev {
            out.reverse();
        }
        Ok(out)
    }

    /// The oldest `n` messages.
    pub fn page_first(&self, archive: u32, n: usize) -> Result<Vec<Stored>, String> {
        self.page_range(msg_key(archive, 0), msg_key(archive, u64::MAX), false, n)
    }

    /// The newest `n` messages (what a client asks for first).
    pub fn page_last(&self, archive: u32, n: usize) -> Result<Vec<Stored>, String> {
        self.page_range(msg_key(archive, 0), msg_key(archive, u64::MAX), true, n)
    }

    /// The `n` messages after id `after` (RSM `<after/>`).
    pub fn page_after(&self, archive: u32, after: u64, n: usize) -> Result<Vec<Stored>, String> {
        self.page_range(
            msg_key(archive, after + 1),
            msg_key(archive, u64::MAX),
            false,
            n,
        )
    }

    /// The newest `n` messages exchanged with `peer` (`with`): the peer index,
    /// then one point read per message.
    pub fn page_with_last(
        &self,
        archive: u32,
        peer: &str,
        n: usize,
    ) -> Result<Vec<Stored>, String> {
        let lo = peer_prefix(archive, peer);
        let mut hi = lo.clone();
        hi.extend_from_slice(&[0xff; 8]);
        let mut out = Vec::with_capacity(n);
        for (k, _) in self.kv.scan(Tree::ByPeer, &lo, &hi, true, n)?.iter().rev() {
            let id = be_u64(&k[k.len() - 8..]);
            let mk = msg_key(archive, id);
            if let Some(v) = self.kv.get(Tree::Messages, &mk)? {
                out.push(decode_message(&mk, &v)?);
            }
        }
        Ok(out)
    }

    /// RSM `<count/>`: one read of the counter.
    pub fn count(&self, archive: u32) -> Result<u64, String> {
        Ok(self
            .kv
            .get(Tree::Counters, &archive.to_be_bytes())?
            .map(|v| decode_counter(&v))
            .transpose()?
            .map_or(0, |c| c.count))
    }

    /// The count by walking the archive's keys (what a layout without counters pays).
    pub fn scan_count(&self, archive: u32) -> Result<u64, String> {
        self.kv.count(
            Tree::Messages,
            &msg_key(archive, 0),
            &msg_key(archive, u64::MAX),
        )
    }
}
