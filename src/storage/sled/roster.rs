//! Rosters in sled (RFC 6121 §2) with roster versioning (§2.6), and pending
//! inbound subscription requests (§3.1.3): the `RosterStore` trait.
//!
//! Three trees change together, always in one sled transaction:
//!
//! * `roster`: `host\0user\0contact` → the [`RosterItem`] (JSON);
//! * `roster_tombstones`: `host\0user\0contact` → the version (u64 BE) at
//!   which the contact was removed, so a client holding an older version
//!   learns about the removal (§2.6.3);
//! * `roster_meta`: `host\0user` → the current version and the oldest
//!   version a diff can still be computed from (16 bytes, two u64 BE).
//!
//! Versions come from sled's persistent monotonic id generator
//! (`generate_id`), not from a per-user counter starting at 1: after an
//! account is deleted and created again, its new versions are larger than
//! any version a client of the old account may still hold, and a fresh
//! roster refuses diffs from anything older than its first version, so such
//! a client always gets the full roster. Within one roster, versions
//! strictly increase.
//!
//! At most [`MAX_TOMBSTONES`] tombstones are kept per user; pruning older
//! ones raises the oldest diffable version, below which
//! `roster_changes_since` answers `None` (send the full roster).
//!
//! Pending subscription requests live in `pending_subscriptions` under
//! `host\0user\0from_bare` → the request stanza (XML text), one per
//! requesting JID (a newer request replaces the older); added and removed
//! durably, listed by a prefix scan (sorted by JID).

use sled::transaction::{ConflictableTransactionError, TransactionalTree};
use sled::Transactional;

use super::{decode, decode_u64, encode, key2, key3, key_suffix, prefix2, SledStorage};
use crate::storage::{AccountKey, RosterChange, RosterItem, RosterStore, StorageError};

/// Tombstones kept per user before the oldest are pruned.
pub(super) const MAX_TOMBSTONES: usize = 1000;

/// A roster's version record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Meta {
    /// The current version.
    ver: u64,
    /// The oldest client version a diff can be computed from.
    floor: u64,
}

impl Meta {
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(16);
        v.extend_from_slice(&self.ver.to_be_bytes());
        v.extend_from_slice(&self.floor.to_be_bytes());
        v
    }

    fn decode(bytes: &[u8]) -> Result<Meta, StorageError> {
        if bytes.len() != 16 {
            return Err(StorageError::Corrupt(format!(
                "{META_WHAT} is not 16 bytes"
            )));
        }
        Ok(Meta {
            ver: decode_u64("roster version", &bytes[..8])?,
            floor: decode_u64("roster version floor", &bytes[8..])?,
        })
    }
}

/// How the error for an unreadable version record starts.
const META_WHAT: &str = "roster version record";

/// Whether `e` is an unreadable roster version record.
fn is_bad_meta(e: &StorageError) -> bool {
    matches!(e, StorageError::Corrupt(why) if why.starts_with(META_WHAT))
}

type TxResult<T> = Result<T, ConflictableTransactionError<StorageError>>;

/// Abort a transaction with a storage error.
fn abort<T>(e: StorageError) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(e))
}

/// Read the roster version record inside a transaction.
fn read_meta(meta: &TransactionalTree, key: &[u8]) -> TxResult<Option<Meta>> {
    match meta.get(key)? {
        None => Ok(None),
        Some(bytes) => match Meta::decode(&bytes) {
            Ok(m) => Ok(Some(m)),
            Err(e) => abort(e),
        },
    }
}

/// The next version of a roster at version `current`: a fresh id from the
/// generator, strictly greater than `current`.
fn next_version(tree: &TransactionalTree, current: u64) -> TxResult<u64> {
    // Versions are generated ids + 1, so `current` was handed out earlier
    // and a new id passes it at once; the loop only covers races between
    // writers of one roster, and the fallback a corrupt version record.
    for _ in 0..4 {
        let v = tree.generate_id()?.saturating_add(1);
        if v > current {
            return Ok(v);
        }
    }
    match current.checked_add(1) {
        Some(v) => Ok(v),
        None => abort(StorageError::Corrupt("roster version overflow".into())),
    }
}

/// Write the new version `ver` of a roster whose old record was `old`.
fn write_meta(meta: &TransactionalTree, key: &[u8], old: Option<Meta>, ver: u64) -> TxResult<()> {
    // A roster written for the first time cannot be diffed from anything
    // older than this first version.
    let floor = old.map_or(ver, |m| m.floor);
    meta.insert(key, Meta { ver, floor }.encode())?;
    Ok(())
}

impl SledStorage {
    /// Run `op`; if it found the roster's version record unreadable,
    /// rebuild it (current version: the highest of the readable items and
    /// tombstones; nothing older diffable, so clients get the full roster
    /// once), log it, and run `op` once more.
    fn with_meta_repair<T>(
        &self,
        host: &str,
        user: &str,
        op: impl Fn() -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        match op() {
            Err(e) if is_bad_meta(&e) => {
                let prefix = prefix2(host, user)?;
                let mut ver = 0u64;
                for entry in self.trees.roster.scan_prefix(&prefix) {
                    let (_, value) = entry.map_err(|e| self.err(e))?;
                    if let Ok(item) = decode::<RosterItem>("roster item", &value) {
                        ver = ver.max(item.ver);
                    }
                }
                for entry in self.trees.roster_tombstones.scan_prefix(&prefix) {
                    let (_, value) = entry.map_err(|e| self.err(e))?;
                    if let Ok(v) = decode_u64("roster tombstone", &value) {
                        ver = ver.max(v);
                    }
                }
                tracing::error!(
                    "roster of {user}@{host}: {e}; version record rebuilt at version {ver}"
                );
                self.trees
                    .roster_meta
                    .insert(key2(host, user)?, Meta { ver, floor: ver }.encode())
                    .map_err(|e| self.err(e))?;
                op()
            }
            other => other,
        }
    }

    fn roster_meta(&self, host: &str, user: &str) -> Result<Option<Meta>, StorageError> {
        let key = key2(host, user)?;
        match self.trees.roster_meta.get(key).map_err(|e| self.err(e))? {
            Some(bytes) => Ok(Some(Meta::decode(&bytes)?)),
            None => Ok(None),
        }
    }

    pub(super) fn roster_get_impl(
        &self,
        host: &str,
        user: &str,
    ) -> Result<Vec<RosterItem>, StorageError> {
        let prefix = prefix2(host, user)?;
        let mut items = Vec::new();
        for entry in self.trees.roster.scan_prefix(&prefix) {
            let (key, value) = entry.map_err(|e| self.err(e))?;
            let contact = String::from_utf8_lossy(&key[prefix.len()..]);
            match decode::<RosterItem>(&format!("roster item {contact} of {user}@{host}"), &value) {
                Ok(item) => items.push(item),
                // One unreadable item must not cost the user the rest of the
                // roster (and with it presence to every contact): skipped,
                // and a later roster set for the contact replaces it.
                Err(e) => tracing::error!("skipping an unreadable roster item: {e}"),
            }
        }
        Ok(items)
    }

    pub(super) fn roster_item_impl(
        &self,
        host: &str,
        user: &str,
        contact: &str,
    ) -> Result<Option<RosterItem>, StorageError> {
        let key = key3(host, user, contact)?;
        match self.trees.roster.get(key).map_err(|e| self.err(e))? {
            Some(bytes) => {
                match decode(&format!("roster item {contact} of {user}@{host}"), &bytes) {
                    Ok(item) => Ok(Some(item)),
                    // As in roster_get: an unreadable item is no item.
                    Err(e) => {
                        tracing::error!("skipping an unreadable roster item: {e}");
                        Ok(None)
                    }
                }
            }
            None => Ok(None),
        }
    }

    pub(super) fn roster_put_impl(
        &self,
        host: &str,
        user: &str,
        item: RosterItem,
    ) -> Result<RosterItem, StorageError> {
        let key = key3(host, user, &item.jid)?;
        let meta_key = key2(host, user)?;
        let t = &self.trees;
        let result = (&t.roster, &t.roster_tombstones, &t.roster_meta).transaction(
            |(roster, tombstones, meta)| {
                let old = read_meta(meta, &meta_key)?;
                let ver = next_version(meta, old.map_or(0, |m| m.ver))?;
                let mut stored = item.clone();
                stored.ver = ver;
                let value = match encode(&stored) {
                    Ok(v) => v,
                    Err(e) => return abort(e),
                };
                roster.insert(key.as_slice(), value)?;
                tombstones.remove(key.as_slice())?;
                write_meta(meta, &meta_key, old, ver)?;
                Ok(stored)
            },
        );
        let stored = self.tx_result(result)?;
        self.durable()?;
        Ok(stored)
    }

    pub(super) fn roster_remove_impl(
        &self,
        host: &str,
        user: &str,
        contact: &str,
    ) -> Result<Option<u64>, StorageError> {
        let key = key3(host, user, contact)?;
        let meta_key = key2(host, user)?;
        let t = &self.trees;
        let result = (&t.roster, &t.roster_tombstones, &t.roster_meta).transaction(
            |(roster, tombstones, meta)| {
                if roster.remove(key.as_slice())?.is_none() {
                    return Ok(None);
                }
                let old = read_meta(meta, &meta_key)?;
                let ver = next_version(meta, old.map_or(0, |m| m.ver))?;
                tombstones.insert(key.as_slice(), &ver.to_be_bytes()[..])?;
                write_meta(meta, &meta_key, old, ver)?;
                Ok(Some(ver))
            },
        );
        let ver = self.tx_result(result)?;
        if ver.is_some() {
            self.prune_tombstones(host, user, MAX_TOMBSTONES)?;
            self.durable()?;
        }
        Ok(ver)
    }

    /// Keep at most `max` tombstones for the user, raising the oldest
    /// diffable version past the ones dropped.
    fn prune_tombstones(&self, host: &str, user: &str, max: usize) -> Result<(), StorageError> {
        let prefix = prefix2(host, user)?;
        let mut all = Vec::new();
        for entry in self.trees.roster_tombstones.scan_prefix(&prefix) {
            let (key, value) = entry.map_err(|e| self.err(e))?;
            all.push((decode_u64("roster tombstone", &value)?, key));
        }
        if all.len() <= max {
            return Ok(());
        }
        all.sort();
        all.truncate(all.len() - max);
        let meta_key = key2(host, user)?;
        let t = &self.trees;
        let result = (&t.roster_tombstones, &t.roster_meta).transaction(|(tombstones, meta)| {
            let mut highest = 0;
            for (ver, key) in &all {
                // Skip a tombstone a concurrent re-add already cleared.
                if let Some(current) = tombstones.get(key)? {
                    if current.as_ref() == ver.to_be_bytes() {
                        tombstones.remove(key)?;
                        highest = highest.max(*ver);
                    }
                }
            }
            if let Some(mut m) = read_meta(meta, &meta_key)? {
                if highest > m.floor {
                    m.floor = highest;
                    meta.insert(meta_key.as_slice(), m.encode())?;
                }
            }
            Ok(())
        });
        self.tx_result(result)
    }

    pub(super) fn roster_version_impl(&self, host: &str, user: &str) -> Result<u64, StorageError> {
        Ok(self.roster_meta(host, user)?.map_or(0, |m| m.ver))
    }

    pub(super) fn roster_changes_since_impl(
        &self,
        host: &str,
        user: &str,
        ver: u64,
    ) -> Result<Option<Vec<RosterChange>>, StorageError> {
        let Some(meta) = self.roster_meta(host, user)? else {
            // Never written: only the empty roster's version 0 is known.
            return Ok(if ver == 0 { Some(Vec::new()) } else { None });
        };
        if ver > meta.ver || ver < meta.floor {
            return Ok(None);
        }
        if ver == meta.ver {
            return Ok(Some(Vec::new()));
        }
        let mut changes = Vec::new();
        for item in self.roster_get_impl(host, user)? {
            if item.ver > ver {
                changes.push(RosterChange::Upsert(item));
            }
        }
        let prefix = prefix2(host, user)?;
        for entry in self.trees.roster_tombstones.scan_prefix(&prefix) {
            let (key, value) = entry.map_err(|e| self.err(e))?;
            let removed_at = match decode_u64("roster tombstone", &value) {
                Ok(v) => v,
                // Unknown removal version: the client cannot be sent a
                // correct diff, so it gets the full roster instead.
                Err(e) => {
                    tracing::error!("roster of {user}@{host}: {e}; sending the full roster");
                    return Ok(None);
                }
            };
            if removed_at > ver {
                changes.push(RosterChange::Removed {
                    jid: key_suffix(&key, &prefix, "roster tombstone")?,
                    ver: removed_at,
                });
            }
        }
        changes.sort_by_key(RosterChange::ver);
        Ok(Some(changes))
    }

    /// Remove the user's roster items, tombstones and version (for
    /// `delete_user`; the caller flushes).
    pub(super) fn roster_delete_all(&self, host: &str, user: &str) -> Result<(), StorageError> {
        let prefix = prefix2(host, user)?;
        self.clear_prefix(&self.trees.roster, &prefix)?;
        self.clear_prefix(&self.trees.roster_tombstones, &prefix)?;
        self.trees
            .roster_meta
            .remove(key2(host, user)?)
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub(super) fn pending_add_impl(
        &self,
        host: &str,
        user: &str,
        from_bare: &str,
        stanza_xml: &str,
    ) -> Result<(), StorageError> {
        let key = key3(host, user, from_bare)?;
        self.trees
            .pending
            .insert(key, stanza_xml.as_bytes())
            .map_err(|e| self.err(e))?;
        self.durable()
    }

    pub(super) fn pending_remove_impl(
        &self,
        host: &str,
        user: &str,
        from_bare: &str,
    ) -> Result<bool, StorageError> {
        let key = key3(host, user, from_bare)?;
        let old = self.trees.pending.remove(key).map_err(|e| self.err(e))?;
        if old.is_none() {
            return Ok(false);
        }
        self.durable()?;
        Ok(true)
    }

    pub(super) fn pending_list_impl(
        &self,
        host: &str,
        user: &str,
    ) -> Result<Vec<(String, String)>, StorageError> {
        let prefix = prefix2(host, user)?;
        let mut out = Vec::new();
        for entry in self.trees.pending.scan_prefix(&prefix) {
            let (key, value) = entry.map_err(|e| self.err(e))?;
            out.push((
                key_suffix(&key, &prefix, "pending subscription request")?,
                text(&value),
            ));
        }
        Ok(out)
    }
}

/// Stored stanzas were written from `&str`; should the disk hand back
/// invalid UTF-8 anyway, the text is passed on lossily.
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl RosterStore for SledStorage {
    fn roster_get(&self, account: AccountKey<'_>) -> Result<Vec<RosterItem>, StorageError> {
        let AccountKey { host, user } = account;
        self.roster_get_impl(host, user)
    }

    fn roster_item(
        &self,
        account: AccountKey<'_>,
        contact: &str,
    ) -> Result<Option<RosterItem>, StorageError> {
        let AccountKey { host, user } = account;
        self.roster_item_impl(host, user, contact)
    }

    fn roster_put(
        &self,
        account: AccountKey<'_>,
        item: RosterItem,
    ) -> Result<RosterItem, StorageError> {
        let AccountKey { host, user } = account;
        let _w = self.writing();
        self.with_meta_repair(host, user, || {
            self.roster_put_impl(host, user, item.clone())
        })
    }

    fn roster_remove(
        &self,
        account: AccountKey<'_>,
        contact: &str,
    ) -> Result<Option<u64>, StorageError> {
        let AccountKey { host, user } = account;
        let _w = self.writing();
        self.with_meta_repair(host, user, || self.roster_remove_impl(host, user, contact))
    }

    fn roster_version(&self, account: AccountKey<'_>) -> Result<u64, StorageError> {
        let AccountKey { host, user } = account;
        self.with_meta_repair(host, user, || self.roster_version_impl(host, user))
    }

    fn roster_changes_since(
        &self,
        account: AccountKey<'_>,
        ver: u64,
    ) -> Result<Option<Vec<RosterChange>>, StorageError> {
        let AccountKey { host, user } = account;
        self.with_meta_repair(host, user, || {
            self.roster_changes_since_impl(host, user, ver)
        })
    }

    fn pending_subscription_add(
        &self,
        account: AccountKey<'_>,
        from_bare: &str,
        stanza_xml: &str,
    ) -> Result<(), StorageError> {
        let AccountKey { host, user } = account;
        let _w = self.writing();
        self.pending_add_impl(host, user, from_bare, stanza_xml)
    }

    fn pending_subscription_remove(
        &self,
        account: AccountKey<'_>,
        from_bare: &str,
    ) -> Result<bool, StorageError> {
        let AccountKey { host, user } = account;
        let _w = self.writing();
        self.pending_remove_impl(host, user, from_bare)
    }

    fn pending_subscriptions(
        &self,
        account: AccountKey<'_>,
    ) -> Result<Vec<(String, String)>, StorageError> {
        let AccountKey { host, user } = account;
        self.pending_list_impl(host, user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Subscription;

    fn open() -> (tempfile::TempDir, SledStorage) {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStorage::open(dir.path()).unwrap();
        (dir, s)
    }

    fn item(jid: &str) -> RosterItem {
        RosterItem {
            jid: jid.into(),
            name: Some(format!("name of {jid}")),
            groups: vec!["Friends".into(), "Work".into()],
            subscription: Subscription::None,
            ask: false,
            approved: false,
            pending_in: false,
            ver: 0,
        }
    }

    #[test]
    fn unreadable_item_is_skipped_and_replaceable() {
        let (_d, s) = open();
        let alice = AccountKey::new("ex", "alice");
        let v1 = s.roster_put(alice, item("bob@ex")).unwrap().ver;
        s.roster_put(alice, item("dave@ex")).unwrap();
        // Garbage, and a record cut short, under real item keys.
        s.trees
            .roster
            .insert(
                key3("ex", "alice", "carol@ex").unwrap(),
                &b"\xff\x00garbage"[..],
            )
            .unwrap();
        let whole = encode(&item("dave@ex")).unwrap();
        s.trees
            .roster
            .insert(
                key3("ex", "alice", "dave@ex").unwrap(),
                &whole[..whole.len() / 2],
            )
            .unwrap();
        let jids: Vec<String> = s
            .roster_get(alice)
            .unwrap()
            .into_iter()
            .map(|i| i.jid)
            .collect();
        assert_eq!(jids, vec!["bob@ex".to_string()]);
        assert_eq!(s.roster_item(alice, "carol@ex").unwrap(), None);
        // Diffs skip it too; a roster set for the contact replaces it.
        let changes = s.roster_changes_since(alice, v1).unwrap().unwrap();
        assert!(changes.is_empty(), "{changes:?}");
        s.roster_put(alice, item("carol@ex")).unwrap();
        assert_eq!(
            s.roster_item(alice, "carol@ex").unwrap().unwrap().jid,
            "carol@ex"
        );
        assert_eq!(s.roster_get(alice).unwrap().len(), 2);
    }

    #[test]
    fn empty_roster() {
        let (_d, s) = open();
        assert!(s
            .roster_get(AccountKey::new("ex", "alice"))
            .unwrap()
            .is_empty());
        assert_eq!(
            s.roster_item(AccountKey::new("ex", "alice"), "bob@ex")
                .unwrap(),
            None
        );
        assert_eq!(s.roster_version(AccountKey::new("ex", "alice")).unwrap(), 0);
        assert_eq!(
            s.roster_remove(AccountKey::new("ex", "alice"), "bob@ex")
                .unwrap(),
            None
        );
        assert_eq!(s.roster_version(AccountKey::new("ex", "alice")).unwrap(), 0);
    }

    #[test]
    fn put_get_item_roundtrip_and_versions_increase() {
        let (_d, s) = open();
        let mut b = item("bob@ex");
        b.subscription = Subscription::Both;
        b.ask = true;
        b.approved = true;
        b.pending_in = true;
        let stored_b = s
            .roster_put(AccountKey::new("ex", "alice"), b.clone())
            .unwrap();
        assert!(stored_b.ver > 0);
        assert_eq!(
            s.roster_version(AccountKey::new("ex", "alice")).unwrap(),
            stored_b.ver
        );
        let stored_c = s
            .roster_put(AccountKey::new("ex", "alice"), item("carol@ex"))
            .unwrap();
        assert!(stored_c.ver > stored_b.ver);
        assert_eq!(
            s.roster_version(AccountKey::new("ex", "alice")).unwrap(),
            stored_c.ver
        );
        // Everything but ver is kept as given.
        let back = s
            .roster_item(AccountKey::new("ex", "alice"), "bob@ex")
            .unwrap()
            .unwrap();
        assert_eq!(
            back,
            RosterItem {
                ver: stored_b.ver,
                ..b
            }
        );
        // Sorted by JID, live items only.
        let all = s.roster_get(AccountKey::new("ex", "alice")).unwrap();
        assert_eq!(all, vec![stored_b.clone(), stored_c.clone()]);
        // Updating an item replaces it and bumps the version again.
        let mut b2 = stored_b.clone();
        b2.groups.clear();
        let stored_b2 = s.roster_put(AccountKey::new("ex", "alice"), b2).unwrap();
        assert!(stored_b2.ver > stored_c.ver);
        assert_eq!(
            s.roster_get(AccountKey::new("ex", "alice")).unwrap().len(),
            2
        );
        assert!(s
            .roster_item(AccountKey::new("ex", "alice"), "bob@ex")
            .unwrap()
            .unwrap()
            .groups
            .is_empty());
        // Other users and hosts are separate.
        assert!(s
            .roster_get(AccountKey::new("ex", "al"))
            .unwrap()
            .is_empty());
        assert!(s
            .roster_get(AccountKey::new("ex.org", "alice"))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn remove_bumps_version_and_leaves_tombstone() {
        let (_d, s) = open();
        let b = s
            .roster_put(AccountKey::new("ex", "alice"), item("bob@ex"))
            .unwrap();
        let c = s
            .roster_put(AccountKey::new("ex", "alice"), item("carol@ex"))
            .unwrap();
        let removed = s
            .roster_remove(AccountKey::new("ex", "alice"), "bob@ex")
            .unwrap()
            .unwrap();
        assert!(removed > c.ver);
        assert_eq!(
            s.roster_version(AccountKey::new("ex", "alice")).unwrap(),
            removed
        );
        assert_eq!(
            s.roster_item(AccountKey::new("ex", "alice"), "bob@ex")
                .unwrap(),
            None
        );
        assert_eq!(
            s.roster_get(AccountKey::new("ex", "alice")).unwrap(),
            vec![c.clone()]
        );
        // Removing again changes nothing.
        assert_eq!(
            s.roster_remove(AccountKey::new("ex", "alice"), "bob@ex")
                .unwrap(),
            None
        );
        assert_eq!(
            s.roster_version(AccountKey::new("ex", "alice")).unwrap(),
            removed
        );
        // A client at b.ver must learn about carol's add and bob's removal.
        assert_eq!(
            s.roster_changes_since(AccountKey::new("ex", "alice"), b.ver)
                .unwrap(),
            Some(vec![
                RosterChange::Upsert(c.clone()),
                RosterChange::Removed {
                    jid: "bob@ex".into(),
                    ver: removed
                },
            ])
        );
    }

    #[test]
    fn changes_since_is_ordered_and_bounded() {
        let (_d, s) = open();
        let b = s
            .roster_put(AccountKey::new("ex", "alice"), item("bob@ex"))
            .unwrap();
        let z = s
            .roster_put(AccountKey::new("ex", "alice"), item("zed@ex"))
            .unwrap();
        let a = s
            .roster_put(AccountKey::new("ex", "alice"), item("ann@ex"))
            .unwrap();
        let gone = s
            .roster_remove(AccountKey::new("ex", "alice"), "zed@ex")
            .unwrap()
            .unwrap();
        let b2 = s
            .roster_put(AccountKey::new("ex", "alice"), item("bob@ex"))
            .unwrap();
        let current = s.roster_version(AccountKey::new("ex", "alice")).unwrap();
        assert_eq!(current, b2.ver);
        // Current version: nothing to send.
        assert_eq!(
            s.roster_changes_since(AccountKey::new("ex", "alice"), current)
                .unwrap(),
            Some(vec![])
        );
        // Ordered by version, not by JID; bob appears once, as changed last.
        assert_eq!(
            s.roster_changes_since(AccountKey::new("ex", "alice"), b.ver)
                .unwrap(),
            Some(vec![
                RosterChange::Upsert(a.clone()),
                RosterChange::Removed {
                    jid: "zed@ex".into(),
                    ver: gone
                },
                RosterChange::Upsert(b2.clone()),
            ])
        );
        assert_eq!(
            s.roster_changes_since(AccountKey::new("ex", "alice"), a.ver)
                .unwrap(),
            Some(vec![
                RosterChange::Removed {
                    jid: "zed@ex".into(),
                    ver: gone
                },
                RosterChange::Upsert(b2.clone()),
            ])
        );
        assert!(z.ver < a.ver);
        // Unknown versions: newer than current, or before the roster existed.
        assert_eq!(
            s.roster_changes_since(AccountKey::new("ex", "alice"), current + 1)
                .unwrap(),
            None
        );
        assert_eq!(
            s.roster_changes_since(AccountKey::new("ex", "alice"), b.ver - 1)
                .unwrap(),
            None
        );
        assert_eq!(
            s.roster_changes_since(AccountKey::new("ex", "alice"), 0)
                .unwrap(),
            None
        );
    }

    #[test]
    fn re_adding_clears_the_tombstone() {
        let (_d, s) = open();
        let b = s
            .roster_put(AccountKey::new("ex", "alice"), item("bob@ex"))
            .unwrap();
        s.roster_remove(AccountKey::new("ex", "alice"), "bob@ex")
            .unwrap()
            .unwrap();
        let again = s
            .roster_put(AccountKey::new("ex", "alice"), item("bob@ex"))
            .unwrap();
        assert_eq!(
            s.roster_changes_since(AccountKey::new("ex", "alice"), b.ver)
                .unwrap(),
            Some(vec![RosterChange::Upsert(again)])
        );
    }

    #[test]
    fn never_written_roster_knows_only_version_zero() {
        let (_d, s) = open();
        assert_eq!(
            s.roster_changes_since(AccountKey::new("ex", "alice"), 0)
                .unwrap(),
            Some(vec![])
        );
        assert_eq!(
            s.roster_changes_since(AccountKey::new("ex", "alice"), 5)
                .unwrap(),
            None
        );
    }

    #[test]
    fn pruned_tombstones_make_old_versions_unknown() {
        let (_d, s) = open();
        let first = s
            .roster_put(AccountKey::new("ex", "alice"), item("keep@ex"))
            .unwrap();
        let n = 10;
        let mut removals = Vec::new();
        for i in 0..n {
            let jid = format!("c{i:02}@ex");
            s.roster_put(AccountKey::new("ex", "alice"), item(&jid))
                .unwrap();
            removals.push(
                s.roster_remove(AccountKey::new("ex", "alice"), &jid)
                    .unwrap()
                    .unwrap(),
            );
        }
        // Under the limit nothing is pruned.
        assert_eq!(
            s.roster_changes_since(AccountKey::new("ex", "alice"), first.ver)
                .unwrap()
                .map(|c| c.len()),
            Some(n)
        );
        s.prune_tombstones("ex", "alice", MAX_TOMBSTONES).unwrap();
        s.prune_tombstones("ex", "alice", 7).unwrap();
        let kept = s
            .trees
            .roster_tombstones
            .scan_prefix(prefix2("ex", "alice").unwrap())
            .count();
        assert_eq!(kept, 7);
        // The three oldest removals are forgotten: a client from before the
        // last of them must get the full roster.
        assert_eq!(
            s.roster_changes_since(AccountKey::new("ex", "alice"), first.ver)
                .unwrap(),
            None
        );
        assert_eq!(
            s.roster_changes_since(AccountKey::new("ex", "alice"), removals[1])
                .unwrap(),
            None
        );
        // From the last pruned removal on, diffs still work.
        let since = s
            .roster_changes_since(AccountKey::new("ex", "alice"), removals[2])
            .unwrap()
            .unwrap();
        assert_eq!(since.len(), n - 3);
        assert!(since
            .iter()
            .all(|c| matches!(c, RosterChange::Removed { .. })));
        assert!(since.windows(2).all(|w| w[0].ver() < w[1].ver()));
        assert_eq!(
            s.roster_get(AccountKey::new("ex", "alice")).unwrap(),
            vec![first]
        );
    }

    #[test]
    fn roster_persists_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (b, gone) = {
            let s = SledStorage::open(dir.path()).unwrap();
            let b = s
                .roster_put(AccountKey::new("ex", "alice"), item("bob@ex"))
                .unwrap();
            s.roster_put(AccountKey::new("ex", "alice"), item("carol@ex"))
                .unwrap();
            let gone = s
                .roster_remove(AccountKey::new("ex", "alice"), "carol@ex")
                .unwrap()
                .unwrap();
            (b, gone)
        };
        let s = SledStorage::open(dir.path()).unwrap();
        assert_eq!(
            s.roster_get(AccountKey::new("ex", "alice")).unwrap(),
            vec![b.clone()]
        );
        assert_eq!(
            s.roster_version(AccountKey::new("ex", "alice")).unwrap(),
            gone
        );
        // Carol came and went after b: only her removal is news.
        assert_eq!(
            s.roster_changes_since(AccountKey::new("ex", "alice"), b.ver)
                .unwrap(),
            Some(vec![RosterChange::Removed {
                jid: "carol@ex".into(),
                ver: gone
            }])
        );
        // Versions keep increasing after a restart.
        let d = s
            .roster_put(AccountKey::new("ex", "alice"), item("dave@ex"))
            .unwrap();
        assert!(d.ver > gone);
    }

    #[test]
    fn corrupt_item_is_skipped_corrupt_version_is_rebuilt() {
        let (_d, s) = open();
        s.trees
            .roster
            .insert(key3("ex", "alice", "bob@ex").unwrap(), &b"{"[..])
            .unwrap();
        // An unreadable item is skipped (logged), not an error for the roster.
        assert_eq!(
            s.roster_item(AccountKey::new("ex", "alice"), "bob@ex")
                .unwrap(),
            None
        );
        assert!(s
            .roster_get(AccountKey::new("ex", "alice"))
            .unwrap()
            .is_empty());
        s.trees
            .roster_meta
            .insert(key2("ex", "alice").unwrap(), &b"short"[..])
            .unwrap();
        // The version record is rebuilt from the items and tombstones.
        let dave = s
            .roster_put(AccountKey::new("ex", "alice"), item("dave@ex"))
            .unwrap();
        s.trees
            .roster_meta
            .insert(key2("ex", "alice").unwrap(), &b"short"[..])
            .unwrap();
        assert_eq!(
            s.roster_version(AccountKey::new("ex", "alice")).unwrap(),
            dave.ver
        );
        // Nothing older is diffable any more: the full roster is sent.
        assert_eq!(
            s.roster_changes_since(AccountKey::new("ex", "alice"), dave.ver - 1)
                .unwrap(),
            None
        );
        s.trees
            .roster_meta
            .insert(key2("ex", "alice").unwrap(), &b"short"[..])
            .unwrap();
        let carol = s
            .roster_put(AccountKey::new("ex", "alice"), item("carol@ex"))
            .unwrap();
        assert!(carol.ver > dave.ver);
        assert_eq!(
            s.roster_version(AccountKey::new("ex", "alice")).unwrap(),
            carol.ver
        );
    }

    #[test]
    fn nul_in_contact_is_refused() {
        let (_d, s) = open();
        assert!(matches!(
            s.roster_put(AccountKey::new("ex", "alice"), item("a\0b")),
            Err(StorageError::Io(_))
        ));
        assert!(matches!(
            s.roster_item(AccountKey::new("ex", "alice"), "a\0b"),
            Err(StorageError::Io(_))
        ));
    }

    #[test]
    fn pending_requests_replace_and_remove() {
        let (_d, s) = open();
        assert!(s
            .pending_subscriptions(AccountKey::new("ex", "alice"))
            .unwrap()
            .is_empty());
        assert!(!s
            .pending_subscription_remove(AccountKey::new("ex", "alice"), "bob@ex")
            .unwrap());
        s.pending_subscription_add(
            AccountKey::new("ex", "alice"),
            "carol@ex",
            "<presence id='c'/>",
        )
        .unwrap();
        s.pending_subscription_add(
            AccountKey::new("ex", "alice"),
            "bob@ex",
            "<presence id='b1'/>",
        )
        .unwrap();
        s.pending_subscription_add(
            AccountKey::new("ex", "alice"),
            "bob@ex",
            "<presence id='b2'/>",
        )
        .unwrap();
        s.pending_subscription_add(
            AccountKey::new("ex", "al"),
            "bob@ex",
            "<presence id='other'/>",
        )
        .unwrap();
        assert_eq!(
            s.pending_subscriptions(AccountKey::new("ex", "alice"))
                .unwrap(),
            vec![
                ("bob@ex".to_string(), "<presence id='b2'/>".to_string()),
                ("carol@ex".to_string(), "<presence id='c'/>".to_string()),
            ]
        );
        assert!(s
            .pending_subscription_remove(AccountKey::new("ex", "alice"), "bob@ex")
            .unwrap());
        assert!(!s
            .pending_subscription_remove(AccountKey::new("ex", "alice"), "bob@ex")
            .unwrap());
        assert_eq!(
            s.pending_subscriptions(AccountKey::new("ex", "alice"))
                .unwrap(),
            vec![("carol@ex".to_string(), "<presence id='c'/>".to_string())]
        );
        assert_eq!(
            s.pending_subscriptions(AccountKey::new("ex", "al"))
                .unwrap()
                .len(),
            1
        );
    }
}
