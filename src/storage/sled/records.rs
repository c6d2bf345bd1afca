//! The sled engine's side of `storage::transfer`: its trees listed and
//! loaded as engine-neutral records (`rookery ctl migrate_db`, and the
//! PostgreSQL engine's backups, which go through a sled copy).
//!
//! Export reads each tree in key order (so a user's offline messages come
//! in arrival order) and skips `offline_counts` (the target keeps its own
//! counters); a key or value that does not decode is an error naming the
//! tree, never a silent skip. Import writes the records as the trait
//! methods would (offline messages get new sequence numbers and raise the
//! user's counter in the same transaction), under the backup gate, and
//! flushes once at the end.

use super::{decode, decode_u64, encode, key2, key3, SledStorage};
use crate::storage::transfer::{Record, Records};
use crate::storage::StorageError;

/// Split a key into its first `n` NUL-separated parts and the rest.
fn parts(tree: &str, key: &[u8], n: usize) -> Result<(Vec<String>, Vec<u8>), StorageError> {
    let mut out = Vec::with_capacity(n);
    let mut rest = key;
    for _ in 0..n {
        let i = rest
            .iter()
            .position(|b| *b == 0)
            .ok_or_else(|| StorageError::Corrupt(format!("{tree}: malformed key")))?;
        out.push(
            String::from_utf8(rest[..i].to_vec())
                .map_err(|_| StorageError::Corrupt(format!("{tree}: key is not UTF-8")))?,
        );
        rest = &rest[i + 1..];
    }
    Ok((out, rest.to_vec()))
}

fn utf8(tree: &str, b: Vec<u8>) -> Result<String, StorageError> {
    String::from_utf8(b).map_err(|_| StorageError::Corrupt(format!("{tree}: not UTF-8")))
}

impl Records for SledStorage {
    fn export(
        &self,
        sink: &mut dyn FnMut(Record) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        let t = &self.trees;
        for item in t.accounts.iter() {
            let (k, v) = item.map_err(|e| self.err(e))?;
            let (p, user) = parts("accounts", &k, 1)?;
            sink(Record::Account {
                host: p[0].clone(),
                user: utf8("accounts", user)?,
                creds: decode("accounts", &v)?,
            })?;
        }
        for item in t.roster.iter() {
            let (k, v) = item.map_err(|e| self.err(e))?;
            let (p, _) = parts("roster", &k, 2)?;
            sink(Record::RosterItem {
                host: p[0].clone(),
                user: p[1].clone(),
                item: decode("roster", &v)?,
            })?;
        }
        for item in t.roster_meta.iter() {
            let (k, v) = item.map_err(|e| self.err(e))?;
            let (p, user) = parts("roster_meta", &k, 1)?;
            if v.len() != 16 {
                return Err(StorageError::Corrupt("roster_meta: not 16 bytes".into()));
            }
            sink(Record::RosterVersion {
                host: p[0].clone(),
                user: utf8("roster_meta", user)?,
                ver: decode_u64("roster_meta", &v[..8])?,
                floor: decode_u64("roster_meta", &v[8..])?,
            })?;
        }
        for item in t.roster_tombstones.iter() {
            let (k, v) = item.map_err(|e| self.err(e))?;
            let (p, jid) = parts("roster_tombstones", &k, 2)?;
            sink(Record::Tombstone {
                host: p[0].clone(),
                user: p[1].clone(),
                jid: utf8("roster_tombstones", jid)?,
                ver: decode_u64("roster_tombstones", &v)?,
            })?;
        }
        for item in t.pending.iter() {
            let (k, v) = item.map_err(|e| self.err(e))?;
            let (p, from) = parts("pending_subscriptions", &k, 2)?;
            sink(Record::Pending {
                host: p[0].clone(),
                user: p[1].clone(),
                from: utf8("pending_subscriptions", from)?,
                xml: utf8("pending_subscriptions", v.to_vec())?,
            })?;
        }
        for item in t.offline.iter() {
            let (k, v) = item.map_err(|e| self.err(e))?;
            let (p, _seq) = parts("offline", &k, 2)?;
            sink(Record::Offline {
                host: p[0].clone(),
                user: p[1].clone(),
                xml: String::from_utf8_lossy(&v).into_owned(),
            })?;
        }
        for item in t.module_data.iter() {
            let (k, v) = item.map_err(|e| self.err(e))?;
            let (p, key) = parts("module_data", &k, 3)?;
            sink(Record::Module {
                host: p[0].clone(),
                user: p[1].clone(),
                module: p[2].clone(),
                key: utf8("module_data", key)?,
                value: v.to_vec(),
            })?;
        }
        Ok(())
    }

    fn import(&self, records: Vec<Record>) -> Result<(), StorageError> {
        let t = &self.trees;
        for r in records {
            if let Record::Offline { host, user, xml } = &r {
                let _w = self.writing();
                self.offline_store_impl(host, user, xml, None, false)?;
                continue;
            }
            let _w = self.writing();
            let done = match r {
                Record::Account { host, user, creds } => {
                    t.accounts.insert(key2(&host, &user)?, encode(&creds)?)
                }
                Record::RosterItem { host, user, item } => t
                    .roster
                    .insert(key3(&host, &user, &item.jid)?, encode(&item)?),
                Record::RosterVersion {
                    host,
                    user,
                    ver,
                    floor,
                } => {
                    let mut v = ver.to_be_bytes().to_vec();
                    v.extend_from_slice(&floor.to_be_bytes());
                    t.roster_meta.insert(key2(&host, &user)?, v)
                }
                Record::Tombstone {
                    host,
                    user,
                    jid,
                    ver,
                } => t
                    .roster_tombstones
                    .insert(key3(&host, &user, &jid)?, &ver.to_be_bytes()[..]),
                Record::Pending {
                    host,
                    user,
                    from,
                    xml,
                } => t.pending.insert(key3(&host, &user, &from)?, xml.as_bytes()),
                Record::Module {
                    host,
                    user,
                    module,
                    key,
                    value,
                } => {
                    let mut k = super::prefix2(&host, &user)?;
                    k.extend_from_slice(module.as_bytes());
                    k.push(0);
                    k.extend_from_slice(key.as_bytes());
                    t.module_data.insert(k, value)
                }
                Record::Offline { .. } => unreachable!("handled above"),
            };
            done.map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    fn import_done(&self) -> Result<(), StorageError> {
        // Roster versions drawn later pass the copied ones by themselves
        // (`roster.rs`, `next_version`).
        self.durable()
    }
}
