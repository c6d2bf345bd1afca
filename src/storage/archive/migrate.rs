//! Converting archives of the old layout, once, when the database opens;
//! and moving the archive between engines when `archive_engine` changed.
//!
//! Before the archive had trees of its own, mod_mam kept each account's
//! messages in the module key/value space (`module_data`, key
//! `host\0user\0mod_mam\0KEY`): `m:<id, 20 digits>` = `<peer bare JID>\n<the
//! message XML>`, plus an index entry `w:<peer>\0<id>` (empty) per message.
//! [`run`] walks `module_data` once, in key order, and moves every `m:`
//! record into the archive trees (same id, so stanza-ids clients hold stay
//! valid; direction and origin-id read from the stanza), dropping the `w:`
//! entries (the peer index is rebuilt from the records). The module's
//! other keys (`prefs`) stay.
//!
//! Each chunk is one atomic archive write (the new records, counters and
//! owners, and `m:converted` = the chunk's last old key), persisted, then
//! the removal of the chunk's old keys from `module_data` (sled; the
//! archive may be in another engine, so the two are not one transaction):
//! a migration killed midway resumes with what is left at the next start,
//! and old keys at or below `m:converted` are only removed (converting a
//! chunk twice would count its messages twice). When the walk ends,
//! `m:migrated` is written to `archive_owners` (and `m:converted` removed),
//! so later starts do not walk `module_data` again.
//!
//! [`move_engine`] copies every record of the archive's trees from one
//! engine to the other as it is (same keys and values: the layout is the
//! same on both), persists the copy, then empties the source. It runs at
//! open when the source holds records and the destination is empty or
//! holds a copy begun earlier (marked by `m:copying` in its
//! `archive_owners` until the source is empty), so a move killed midway
//! resumes from the start at the next open; both holding archives of
//! their own is refused with an error naming both places.

use xep_support::archive::{parse_id, Direction};

use super::kv::{self, ArchiveKv, Tree, TREES};
use super::record as rec;
use super::{owner_key, owner_rev_key, Inner, LAST_ID_KEY, NEXT_ARCHIVE_KEY};
use crate::storage::StorageError;

/// The old module name.
const MODULE: &[u8] = b"mod_mam";
/// `archive_owners` key present once the old layout was converted.
pub const MIGRATED_KEY: &[u8] = b"m:migrated";
/// `archive_owners` key of the last old key converted (while converting).
const CONVERTED_KEY: &[u8] = b"m:converted";
/// `archive_owners` key present in the destination while a move runs.
const COPYING_KEY: &[u8] = b"m:copying";
/// Records per write when moving between engines.
const COPY_CHUNK: usize = 10_000;
/// Old keys converted per transaction.
const CHUNK: usize = 500;

/// One old key, split.
struct Old {
    key: sled::IVec,
    owner: String,
    /// `Some` for a message (`m:`), `None` for an index entry (`w:`).
    message: Option<(u64, sled::IVec)>,
}

/// Split `host\0user\0mod_mam\0KEY` (host-only keys are a service's, e.g. rooms').
fn split(key: &[u8]) -> Option<(String, &[u8])> {
    let mut parts = key.splitn(4, |b| *b == 0);
    let host = std::str::from_utf8(parts.next()?).ok()?;
    let user = std::str::from_utf8(parts.next()?).ok()?;
    let module = parts.next()?;
    let rest = parts.next()?;
    if module != MODULE || host.is_empty() {
        return None;
    }
    let owner = if user.is_empty() {
        host.to_string()
    } else {
        format!("{user}@{host}")
    };
    Some((owner, rest))
}

/// Peer, direction, origin-id and XML of an old record.
fn convert(owner: &str, value: &[u8]) -> Option<(String, Direction, Option<String>, String)> {
    let text = std::str::from_utf8(value).ok()?;
    let (peer, xml) = text.split_once('\n')?;
    if !xml.contains("origin-id") {
        // No origin-id: only the sender is needed, from the start tag (the
        // old server wrote it with `Element::write_to`: single quotes, '>'
        // escaped in values; a bare JID has no quote or ampersand).
        let tag = &xml[..xml.find('>')?];
        let from = tag
            .split_once(" from='")
            .and_then(|(_, rest)| rest.split_once('\''))
            .map(|(v, _)| v.split('/').next().unwrap_or(v));
        let direction = if from == Some(owner) {
            Direction::Outgoing
        } else {
            Direction::Incoming
        };
        return Some((peer.to_string(), direction, None, xml.to_string()));
    }
    let el = crate::storage::stanza_codec::parse_stanza(xml);
    let from_bare = el
        .as_ref()
        .and_then(|e| e.attr("from"))
        .map(|f| f.split('/').next().unwrap_or(f).to_string());
    let direction = if from_bare.as_deref() == Some(owner) {
        Direction::Outgoing
    } else {
        Direction::Incoming
    };
    let origin = el
        .as_ref()
        .and_then(|e| e.child("origin-id", "urn:xmpp:sid:0"))
        .and_then(|o| o.attr("id"))
        .map(str::to_string);
    Some((peer.to_string(), direction, origin, xml.to_string()))
}

/// Convert what is left of the old layout; how many messages were moved.
pub(super) fn run(inner: &Inner, module_data: &sled::Tree) -> Result<u64, StorageError> {
    let kvs = inner.kv.as_ref();
    if kvs.get(Tree::Owners, MIGRATED_KEY)?.is_some() {
        return Ok(0);
    }
    let md_err = |e: sled::Error| StorageError::Io(format!("archive migration: module data: {e}"));
    let _g = inner.gate.read().unwrap_or_else(|e| e.into_inner());
    let _w = inner.write_lock.lock().unwrap_or_else(|e| e.into_inner());
    inner.clear_counts_cache();
    // Old keys up to this one were converted by an interrupted run.
    let done: Option<Vec<u8>> = kvs.get(Tree::Owners, CONVERTED_KEY)?.map(|v| v.to_vec());
    let mut moved = 0u64;
    let mut after: Option<sled::IVec> = None;
    loop {
        let range = match &after {
            Some(k) => module_data.range::<&[u8], _>((
                std::ops::Bound::Excluded(k.as_ref()),
                std::ops::Bound::Unbounded,
            )),
            None => module_data.iter(),
        };
        let mut chunk: Vec<Old> = Vec::new();
        let mut stale: Vec<sled::IVec> = Vec::new();
        for kv in range {
            let (k, v) = kv.map_err(md_err)?;
            after = Some(k.clone());
            let Some((owner, rest)) = split(&k) else {
                continue;
            };
            let old = rest.starts_with(b"m:") || rest.starts_with(b"w:");
            if old && done.as_deref().is_some_and(|d| k.as_ref() <= d) {
                stale.push(k.clone());
            } else if let Some(id) = rest.strip_prefix(b"m:") {
                match std::str::from_utf8(id).ok().and_then(parse_id) {
                    Some(id) => chunk.push(Old {
                        key: k.clone(),
                        owner,
                        message: Some((id, v)),
                    }),
                    None => tracing::error!("archive migration: {owner}: a damaged key; left"),
                }
            } else if rest.starts_with(b"w:") {
                chunk.push(Old {
                    key: k.clone(),
                    owner,
                    message: None,
                });
            }
            if chunk.len() + stale.len() >= CHUNK {
                break;
            }
        }
        if chunk.is_empty() && stale.is_empty() {
            break;
        }
        // New records and owners of this chunk.
        let mut records = Vec::new();
        let mut owners = Vec::new();
        for old in &chunk {
            let Some((id, value)) = &old.message else {
                continue;
            };
            let Some((peer, dir, origin, xml)) = convert(&old.owner, value) else {
                tracing::error!(
                    "archive migration: {}: message {id:020} is damaged; dropped",
                    old.owner
                );
                continue;
            };
            let a = match inner.archive_of(&old.owner).map_err(StorageError::from)? {
                Some(a) => a,
                None => {
                    let a = inner
                        .w
                        .allocate(&old.owner)
                        .ok_or_else(|| StorageError::Io("archive ids exhausted".into()))?;
                    owners.push((old.owner.clone(), a));
                    a
                }
            };
            let record = rec::encode(dir, &peer, origin.as_deref(), &xml);
            records.push((a, *id, peer, origin, record));
        }
        if let Some(last) = chunk.last() {
            let b = super::writer::blocks_of(
                records
                    .iter()
                    .map(|(a, id, peer, _, r)| (*a, *id, peer.as_str(), r.as_slice())),
            );
            let last_id = b.last_id;
            let mut w = kv::Batch::default();
            for (a, base, block) in b.blocks {
                w.insert(Tree::Messages, rec::message_key(a, base), block);
            }
            for (k, v) in b.peers {
                w.insert(Tree::ByPeer, k, v);
            }
            for (a, id, peer, origin, _) in &records {
                if let Some(origin) = origin {
                    w.insert(
                        Tree::ByOrigin,
                        rec::origin_key(*a, peer, origin),
                        id.to_be_bytes(),
                    );
                }
            }
            for (k, d) in b.deltas {
                let cur = kvs
                    .get(Tree::Counts, &k)?
                    .and_then(|v| rec::u64_of(&v))
                    .unwrap_or(0);
                w.insert(Tree::Counts, k, (cur + d).to_be_bytes());
            }
            for (name, a) in &owners {
                w.insert(Tree::Owners, owner_key(name), a.to_be_bytes());
                w.insert(Tree::Owners, owner_rev_key(*a), name.as_bytes());
            }
            let next_archive = inner.w.next_archive();
            w.insert(
                Tree::Owners,
                NEXT_ARCHIVE_KEY,
                (next_archive as u64).to_be_bytes(),
            );
            let prev = kvs
                .get(Tree::Owners, LAST_ID_KEY)?
                .and_then(|v| rec::u64_of(&v))
                .unwrap_or(0);
            w.insert(Tree::Owners, LAST_ID_KEY, prev.max(last_id).to_be_bytes());
            w.insert(Tree::Owners, CONVERTED_KEY, last.key.to_vec());
            kvs.write_atomic(w)?;
            // On disk before the old keys go.
            kvs.persist()?;
            super::writer::raise_last_id(last_id);
            moved += records.len() as u64;
        }
        let mut gone = sled::Batch::default();
        for k in stale.into_iter().chain(chunk.into_iter().map(|o| o.key)) {
            gone.remove(k);
        }
        module_data.apply_batch(gone).map_err(md_err)?;
    }
    let mut w = kv::Batch::default();
    w.insert(Tree::Owners, MIGRATED_KEY, &[][..]);
    w.remove(Tree::Owners, CONVERTED_KEY);
    kvs.write_atomic(w)?;
    kvs.persist()?;
    module_data.flush().map_err(md_err)?;
    if moved > 0 {
        tracing::info!("archive: {moved} messages converted from the old layout");
    }
    Ok(moved)
}

/// Move the archive from `from` to `to` (see the module header); how many
/// records were copied.
pub fn move_engine(from: &dyn ArchiveKv, to: &dyn ArchiveKv) -> Result<u64, StorageError> {
    let resuming = to.get(Tree::Owners, COPYING_KEY)?.is_some();
    if kv::is_empty(from)? {
        if resuming {
            let mut w = kv::Batch::default();
            w.remove(Tree::Owners, COPYING_KEY);
            to.write_atomic(w)?;
            to.persist()?;
        }
        return Ok(0);
    }
    if !resuming && !kv::is_empty(to)? {
        return Err(StorageError::Io(format!(
            "both {} ({}) and {} ({}) hold message archives: keep the one of the configured \
             archive_engine and move the other away",
            from.dir().display(),
            from.engine(),
            to.dir().display(),
            to.engine()
        )));
    }
    if from.engine() == "sled" {
        // A batch torn by a crash is completed before it is copied.
        super::writer::repair(from)?;
    }
    tracing::info!(
        "archive: moving the message archive from {} ({}) to {} ({})",
        from.dir().display(),
        from.engine(),
        to.dir().display(),
        to.engine()
    );
    let mut w = kv::Batch::default();
    w.insert(Tree::Owners, COPYING_KEY, &[][..]);
    to.write_atomic(w)?;
    let mut copied = 0u64;
    for t in TREES {
        let mut w = kv::Batch::default();
        for item in from.prefix(t, b"") {
            let (k, v) = item?;
            if t == Tree::Owners && &k[..] == COPYING_KEY {
                continue;
            }
            w.insert(t, k.to_vec(), v.to_vec());
            copied += 1;
            if w.len() >= COPY_CHUNK {
                to.write(std::mem::take(&mut w))?;
            }
        }
        to.write(w)?;
    }
    to.persist()?;
    for t in TREES {
        from.clear(t)?;
    }
    from.persist()?;
    let mut w = kv::Batch::default();
    w.remove(Tree::Owners, COPYING_KEY);
    to.write_atomic(w)?;
    to.persist()?;
    tracing::info!("archive: moved {copied} records to {}", to.engine());
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_keys_split_into_owner_and_key() {
        let (o, k) = split(b"localhost\0alice\0mod_mam\0m:1").unwrap();
        assert_eq!((o.as_str(), k), ("alice@localhost", &b"m:1"[..]));
        let (o, _) = split(b"conference.localhost\0\0mod_mam\0m:1").unwrap();
        assert_eq!(o, "conference.localhost");
        assert!(split(b"localhost\0alice\0mod_pep\0m:1").is_none());
        assert!(split(b"\0\0s2s\0dialback_secret").is_none());
        let (peer, dir, origin, xml) = convert(
            "alice@localhost",
            b"bob@localhost\n<message from='alice@localhost/a' to='bob@localhost'><body>x</body><origin-id xmlns='urn:xmpp:sid:0' id='o7'/></message>",
        )
        .unwrap();
        assert_eq!(peer, "bob@localhost");
        assert_eq!(dir, Direction::Outgoing);
        assert_eq!(origin.as_deref(), Some("o7"));
        assert!(xml.starts_with("<message"));
        assert!(convert("a@b", b"no newline").is_none());
        let (_, dir, origin, _) = convert(
            "alice@localhost",
            b"bob@localhost\n<message to='bob@localhost' from='alice@localhost/x&apos;y'><body>a&gt;b</body></message>",
        )
        .unwrap();
        assert_eq!((dir, origin), (Direction::Outgoing, None));
        let (_, dir, _, _) = convert(
            "alice@localhost",
            b"bob@localhost\n<message from='bob@localhost/b' to='alice@localhost'><body/></message>",
        )
        .unwrap();
        assert_eq!(dir, Direction::Incoming);
    }

    #[test]
    fn conversion_is_complete_resumable_and_runs_once() {
        for engine in [
            super::super::EngineKind::Fjall,
            super::super::EngineKind::Sled,
        ] {
            conversion_is_complete_resumable_and_runs_once_on(engine);
        }
    }

    fn conversion_is_complete_resumable_and_runs_once_on(engine: super::super::EngineKind) {
        use xep_support::archive::{ArchiveStore, PageQuery};
        let dir = tempfile::tempdir().unwrap();
        // module_data in a sled database of its own, the archive on `engine`.
        let db = sled::Config::new()
            .path(dir.path().join("md"))
            .open()
            .unwrap();
        let md = db.open_tree("module_data").unwrap();
        let put = |user: &str, i: u64, peer: &str| {
            let k = format!("localhost\0{user}\0mod_mam\0m:{i:020}");
            let v = format!(
                "{peer}\n<message from='{peer}/r' to='{user}@localhost'><body>{i}</body></message>"
            );
            md.insert(k, v.as_bytes()).unwrap();
            md.insert(
                format!("localhost\0{user}\0mod_mam\0w:{peer}\0{i:020}"),
                &b""[..],
            )
            .unwrap();
        };
        let n: u64 = std::env::var("MIG_N")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(700);
        for i in 1..=n {
            put("alice", i, "bob@localhost");
        }
        md.insert("localhost\0alice\0mod_mam\0prefs", &b"<prefs/>"[..])
            .unwrap();
        md.insert("localhost\0alice\0mod_pep\0m:1", &b"pep"[..])
            .unwrap();
        let a = super::super::tests::open_on(engine, dir.path());
        let t0 = std::time::Instant::now();
        assert_eq!(a.migrate(&md).unwrap(), n);
        eprintln!("MIGRATION {n}: {:?}", t0.elapsed());
        if n != 700 {
            return;
        }
        assert_eq!(a.migrate(&md).unwrap(), 0, "once");
        // As if killed after part of the work: old keys left, no marker.
        for i in 701..=750 {
            put("alice", i, "carol@localhost");
        }
        let mut w = kv::Batch::default();
        w.remove(Tree::Owners, MIGRATED_KEY);
        a.inner.kv.write(w).unwrap();
        assert_eq!(a.migrate(&md).unwrap(), 50);
        // As if killed after a chunk was written, before its old keys were
        // removed: they are removed, not converted again.
        for i in 751..=760 {
            put("alice", i, "carol@localhost");
        }
        let last = format!("localhost\0alice\0mod_mam\0w:carol@localhost\0{:020}", 760);
        let mut w = kv::Batch::default();
        w.remove(Tree::Owners, MIGRATED_KEY);
        w.insert(Tree::Owners, CONVERTED_KEY, last.as_bytes());
        a.inner.kv.write(w).unwrap();
        assert_eq!(a.migrate(&md).unwrap(), 0);
        let alice = jid::BareJid::new("alice@localhost").unwrap();
        assert_eq!(a.count(&alice).unwrap(), 750);
        let q = |with| PageQuery {
            with,
            lo: 0,
            hi: u64::MAX,
            reverse: false,
            limit: 1000,
        };
        let carol = a.page(&alice, &q(Some("carol@localhost"))).unwrap();
        assert_eq!(carol.len(), 50);
        assert_eq!(carol[0].id, 701);
        assert_eq!(carol[0].direction, Direction::Incoming);
        assert_eq!(a.page(&alice, &q(None)).unwrap().len(), 750);
        // Only mod_mam's m:/w: keys went; prefs and other modules stay.
        let left: Vec<_> = md.iter().keys().map(|k| k.unwrap().to_vec()).collect();
        assert_eq!(left.len(), 2, "{left:?}");
        // New ids continue above the converted ones.
        let r = a
            .append(vec![xep_support::archive::NewMessage {
                owner: alice.clone(),
                peer: jid::BareJid::new("bob@localhost").unwrap(),
                direction: Direction::Outgoing,
                origin_id: None,
                xml: "<message/>".into(),
            }])
            .unwrap();
        assert!(r[0].id() > 750);
    }
}

#[cfg(test)]
mod move_tests {
    use super::*;
    use crate::storage::archive::kv_fjall::FjallKv;
    use crate::storage::archive::kv_sled::SledKv;

    fn fill(kv: &dyn ArchiveKv, n: usize) {
        let mut w = kv::Batch::default();
        for i in 0..n {
            let t = TREES[i % TREES.len()];
            w.insert(
                t,
                format!("k{i:05}").into_bytes(),
                format!("v{i}").into_bytes(),
            );
        }
        kv.write(w).unwrap();
    }

    fn dump(kv: &dyn ArchiveKv) -> Vec<(Tree, Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        for t in TREES {
            for item in kv.prefix(t, b"") {
                let (k, v) = item.unwrap();
                out.push((t, k.to_vec(), v.to_vec()));
            }
        }
        out
    }

    #[test]
    fn a_move_copies_everything_resumes_and_refuses_two_archives() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new()
            .path(dir.path().join("db"))
            .open()
            .unwrap();
        let sled_kv = SledKv::open(&db, dir.path()).unwrap();
        let fjall_kv = FjallKv::open(&dir.path().join("archive")).unwrap();
        fill(&sled_kv, 25_000);
        let want = dump(&sled_kv);
        // Killed during an earlier move: part copied, the marker left.
        let mut w = kv::Batch::default();
        w.insert(Tree::Owners, COPYING_KEY, &[][..]);
        for (t, k, v) in want.iter().take(100) {
            w.insert(*t, k.clone(), v.clone());
        }
        fjall_kv.write(w).unwrap();
        assert_eq!(move_engine(&sled_kv, &fjall_kv).unwrap(), 25_000);
        assert_eq!(dump(&fjall_kv), want, "copied as is, the marker gone");
        assert!(kv::is_empty(&sled_kv).unwrap(), "the source is emptied");
        // Nothing left to move: nothing happens.
        assert_eq!(move_engine(&sled_kv, &fjall_kv).unwrap(), 0);
        // Killed after the source was emptied, before the marker went.
        let mut w = kv::Batch::default();
        w.insert(Tree::Owners, COPYING_KEY, &[][..]);
        fjall_kv.write(w).unwrap();
        assert_eq!(move_engine(&sled_kv, &fjall_kv).unwrap(), 0);
        assert_eq!(dump(&fjall_kv), want);
        // Both holding archives of their own: refused, nothing changed.
        fill(&sled_kv, 10);
        let e = move_engine(&sled_kv, &fjall_kv).unwrap_err().to_string();
        assert!(
            e.contains("both") && e.contains("hold message archives"),
            "{e}"
        );
        assert_eq!(dump(&fjall_kv), want);
        // And back: fjall to an empty sled.
        for t in TREES {
            sled_kv.clear(t).unwrap();
        }
        assert_eq!(move_engine(&fjall_kv, &sled_kv).unwrap(), 25_000);
        assert_eq!(dump(&sled_kv), want);
        assert!(kv::is_empty(&fjall_kv).unwrap());
    }
}
