//! Offline messages (XEP-0160) in sled: the `OfflineStore` trait over the
//! `offline` and `offline_counts` trees.
//!
//! Offline messages live in `offline` under `host\0user\0` + an 8-byte
//! big-endian sequence number from sled's persistent monotonic id generator,
//! so a prefix scan returns a user's messages in arrival order (the order
//! of `offline_store` calls; concurrent stores for one user are ordered by
//! the caller's per-account lock). Each user's
//! message count lives in `offline_counts` (`host\0user` → u64 BE) and is
//! updated in the same transaction as the messages, so `offline_count` and
//! the limit check of `offline_store` are single reads, never scans.
//!
//! Exactly-once delivery is the caller's protocol: peek, hand the messages
//! to the session, and remove them by sequence number once the session's
//! writer has accepted them. Removing an already removed sequence number
//! is a no-op and leaves the counter alone.

use sled::transaction::ConflictableTransactionError;
use sled::Transactional;

use super::{decode_u64, key2, prefix2, SledStorage};
use crate::storage::{AccountKey, OfflineStore, OfflineStored, StorageError};

/// Messages removed per transaction by `offline_delete_all`.
const DELETE_CHUNK: usize = 1000;

/// The key of offline message `seq` of `user@host`.
fn offline_key(host: &str, user: &str, seq: u64) -> Result<Vec<u8>, StorageError> {
    let mut key = prefix2(host, user)?;
    key.extend_from_slice(&seq.to_be_bytes());
    Ok(key)
}

/// Stored stanzas were written from `&str`; should the disk hand back
/// invalid UTF-8 anyway, the message is passed on lossily (and then most
/// likely fails to parse and is dropped) rather than blocking the queue.
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The start of the error for an unreadable per-user message counter.
const COUNT_WHAT: &str = "offline message count";

/// Whether `e` is an unreadable message counter (repaired by a recount).
fn is_bad_count(e: &StorageError) -> bool {
    matches!(e, StorageError::Corrupt(why) if why.starts_with(COUNT_WHAT))
}

impl SledStorage {
    /// Run `op`; if it found the user's message counter unreadable, count
    /// the user's messages again (a prefix scan, only on this rare path),
    /// write the counter, log it, and run `op` once more.
    fn with_count_repair<T>(
        &self,
        host: &str,
        user: &str,
        op: impl Fn() -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        match op() {
            Err(e) if is_bad_count(&e) => {
                let prefix = prefix2(host, user)?;
                let mut n = 0u64;
                for key in self.trees.offline.scan_prefix(&prefix).keys() {
                    key.map_err(|e| self.err(e))?;
                    n += 1;
                }
                tracing::error!(
                    "offline messages of {user}@{host}: {e}; recounted {n} stored messages"
                );
                self.trees
                    .offline_counts
                    .insert(key2(host, user)?, &n.to_be_bytes()[..])
                    .map_err(|e| self.err(e))?;
                op()
            }
            other => other,
        }
    }

    pub(super) fn offline_store_impl(
        &self,
        host: &str,
        user: &str,
        stanza_xml: &str,
        limit: Option<usize>,
        flush: bool,
    ) -> Result<OfflineStored, StorageError> {
        // Taken outside the transaction so that a retried closure reuses it.
        let seq = self.db.generate_id().map_err(|e| self.err(e))?;
        let key = offline_key(host, user, seq)?;
        let count_key = key2(host, user)?;
        let t = &self.trees;
        let result = (&t.offline, &t.offline_counts).transaction(|(offline, counts)| {
            let count = match counts.get(&count_key)? {
                Some(bytes) => {
                    decode_u64(COUNT_WHAT, &bytes).map_err(ConflictableTransactionError::Abort)?
                }
                None => 0,
            };
            if let Some(limit) = limit {
                if count >= limit as u64 {
                    return Ok(OfflineStored::Full);
                }
            }
            offline.insert(key.as_slice(), stanza_xml.as_bytes())?;
            counts.insert(count_key.as_slice(), &(count + 1).to_be_bytes()[..])?;
            Ok(OfflineStored::Stored(seq))
        });
        let stored = self.tx_result(result)?;
        if flush && stored != OfflineStored::Full {
            self.durable()?;
        }
        Ok(stored)
    }

    pub(super) fn offline_peek_impl(
        &self,
        host: &str,
        user: &str,
        max: usize,
    ) -> Result<Vec<(u64, String)>, StorageError> {
        let prefix = prefix2(host, user)?;
        let mut out = Vec::new();
        for entry in self.trees.offline.scan_prefix(&prefix) {
            if out.len() >= max {
                break;
            }
            let (key, value) = entry.map_err(|e| self.err(e))?;
            match decode_u64("offline message key", &key[prefix.len()..]) {
                Ok(seq) => out.push((seq, text(&value))),
                // A key that is no sequence number cannot be removed by
                // one either: skipped (it stays; the messages after it
                // still come out).
                Err(e) => tracing::error!("offline messages of {user}@{host}: skipping {e}"),
            }
        }
        Ok(out)
    }

    pub(super) fn offline_remove_impl(
        &self,
        host: &str,
        user: &str,
        seqs: &[u64],
    ) -> Result<(), StorageError> {
        let mut keys = Vec::with_capacity(seqs.len());
        for &seq in seqs {
            keys.push(offline_key(host, user, seq)?);
        }
        keys.sort();
        keys.dedup();
        let removed = self.offline_remove_keys(host, user, &keys)?;
        if removed > 0 {
            self.durable()?;
        }
        Ok(())
    }

    /// Remove these (distinct) message keys of `user@host` and lower the
    /// counter by the number actually removed, in one transaction.
    fn offline_remove_keys(
        &self,
        host: &str,
        user: &str,
        keys: &[Vec<u8>],
    ) -> Result<usize, StorageError> {
        if keys.is_empty() {
            return Ok(0);
        }
        let count_key = key2(host, user)?;
        let t = &self.trees;
        let result = (&t.offline, &t.offline_counts).transaction(|(offline, counts)| {
            let mut removed = 0usize;
            for key in keys {
                if offline.remove(key.as_slice())?.is_some() {
                    removed += 1;
                }
            }
            if removed == 0 {
                return Ok(0);
            }
            let count = match counts.get(&count_key)? {
                Some(bytes) => {
                    decode_u64(COUNT_WHAT, &bytes).map_err(ConflictableTransactionError::Abort)?
                }
                None => 0,
            };
            let left = count.saturating_sub(removed as u64);
            if left == 0 {
                counts.remove(count_key.as_slice())?;
            } else {
                counts.insert(count_key.as_slice(), &left.to_be_bytes()[..])?;
            }
            Ok(removed)
        });
        self.tx_result(result)
    }

    pub(super) fn offline_count_impl(&self, host: &str, user: &str) -> Result<usize, StorageError> {
        let key = key2(host, user)?;
        match self
            .trees
            .offline_counts
            .get(key)
            .map_err(|e| self.err(e))?
        {
            Some(bytes) => {
                let n = decode_u64(COUNT_WHAT, &bytes)?;
                usize::try_from(n)
                    .map_err(|_| StorageError::Corrupt("offline message count too large".into()))
            }
            None => Ok(0),
        }
    }

    pub(super) fn offline_delete_all_impl(
        &self,
        host: &str,
        user: &str,
    ) -> Result<usize, StorageError> {
        let prefix = prefix2(host, user)?;
        let mut total = 0;
        loop {
            let mut keys = Vec::new();
            for key in self
                .trees
                .offline
                .scan_prefix(&prefix)
                .keys()
                .take(DELETE_CHUNK)
            {
                keys.push(key.map_err(|e| self.err(e))?.to_vec());
            }
            if keys.is_empty() {
                break;
            }
            total += self.offline_remove_keys(host, user, &keys)?;
        }
        if total > 0 {
            self.durable()?;
        }
        Ok(total)
    }
}

impl OfflineStore for SledStorage {
    fn offline_store(
        &self,
        account: AccountKey<'_>,
        stanza_xml: &str,
        limit: Option<usize>,
    ) -> Result<OfflineStored, StorageError> {
        let AccountKey { host, user } = account;
        let _w = self.writing();
        self.with_count_repair(host, user, || {
            self.offline_store_impl(host, user, stanza_xml, limit, true)
        })
    }

    fn offline_store_unflushed(
        &self,
        account: AccountKey<'_>,
        stanza_xml: &str,
        limit: Option<usize>,
    ) -> Result<OfflineStored, StorageError> {
        let AccountKey { host, user } = account;
        let _w = self.writing();
        self.with_count_repair(host, user, || {
            self.offline_store_impl(host, user, stanza_xml, limit, false)
        })
    }

    fn offline_peek(
        &self,
        account: AccountKey<'_>,
        max: usize,
    ) -> Result<Vec<(u64, String)>, StorageError> {
        let AccountKey { host, user } = account;
        self.offline_peek_impl(host, user, max)
    }

    fn offline_remove(&self, account: AccountKey<'_>, seqs: &[u64]) -> Result<(), StorageError> {
        let AccountKey { host, user } = account;
        let _w = self.writing();
        self.with_count_repair(host, user, || self.offline_remove_impl(host, user, seqs))
    }

    fn offline_count(&self, account: AccountKey<'_>) -> Result<usize, StorageError> {
        let AccountKey { host, user } = account;
        self.with_count_repair(host, user, || self.offline_count_impl(host, user))
    }

    fn offline_delete_all(&self, account: AccountKey<'_>) -> Result<usize, StorageError> {
        let AccountKey { host, user } = account;
        let _w = self.writing();
        self.with_count_repair(host, user, || self.offline_delete_all_impl(host, user))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::credentials::{ScramSecret, StoredCredentials};
    use crate::storage::{AccountStore, RosterItem, RosterStore, Subscription};

    fn open() -> (tempfile::TempDir, SledStorage) {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStorage::open(dir.path()).unwrap();
        (dir, s)
    }

    fn msg(i: usize) -> String {
        format!("<message from='bob@ex/r' to='alice@ex'><body>m{i}</body></message>")
    }

    fn bodies(batch: &[(u64, String)]) -> Vec<String> {
        batch.iter().map(|(_, x)| x.clone()).collect()
    }

    #[test]
    fn store_peek_remove_in_order() {
        let (_d, s) = open();
        assert_eq!(s.offline_count(AccountKey::new("ex", "alice")).unwrap(), 0);
        assert!(s
            .offline_peek(AccountKey::new("ex", "alice"), 10)
            .unwrap()
            .is_empty());
        let n = 300;
        let mut seqs = Vec::new();
        for i in 0..n {
            match s
                .offline_store(AccountKey::new("ex", "alice"), &msg(i), None)
                .unwrap()
            {
                OfflineStored::Stored(seq) => seqs.push(seq),
                OfflineStored::Full => panic!("unlimited store is never full"),
            }
        }
        // Other users are untouched.
        s.offline_store(AccountKey::new("ex", "al"), &msg(999), None)
            .unwrap();
        s.offline_store(AccountKey::new("ex.org", "alice"), &msg(998), None)
            .unwrap();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(s.offline_count(AccountKey::new("ex", "alice")).unwrap(), n);
        // Peek is oldest first and does not consume.
        let first = s.offline_peek(AccountKey::new("ex", "alice"), 100).unwrap();
        assert_eq!(first.len(), 100);
        assert_eq!(first[0], (seqs[0], msg(0)));
        assert_eq!(
            first,
            s.offline_peek(AccountKey::new("ex", "alice"), 100).unwrap()
        );
        // Drain in batches: every message exactly once, in order.
        let mut seen = Vec::new();
        loop {
            let batch = s.offline_peek(AccountKey::new("ex", "alice"), 64).unwrap();
            if batch.is_empty() {
                break;
            }
            let batch_seqs: Vec<u64> = batch.iter().map(|(q, _)| *q).collect();
            seen.extend(bodies(&batch));
            s.offline_remove(AccountKey::new("ex", "alice"), &batch_seqs)
                .unwrap();
            assert_eq!(
                s.offline_count(AccountKey::new("ex", "alice")).unwrap(),
                n - seen.len()
            );
        }
        assert_eq!(seen, (0..n).map(msg).collect::<Vec<_>>());
        assert_eq!(s.offline_count(AccountKey::new("ex", "alice")).unwrap(), 0);
        assert_eq!(s.offline_count(AccountKey::new("ex", "al")).unwrap(), 1);
        assert_eq!(
            s.offline_count(AccountKey::new("ex.org", "alice")).unwrap(),
            1
        );
        assert_eq!(
            bodies(&s.offline_peek(AccountKey::new("ex", "al"), 10).unwrap()),
            vec![msg(999)]
        );
    }

    #[test]
    fn removing_twice_or_unknown_seqs_keeps_count_right() {
        let (_d, s) = open();
        let mut seqs = Vec::new();
        for i in 0..5 {
            if let OfflineStored::Stored(q) = s
                .offline_store(AccountKey::new("ex", "alice"), &msg(i), None)
                .unwrap()
            {
                seqs.push(q);
            }
        }
        s.offline_remove(AccountKey::new("ex", "alice"), &[seqs[1], seqs[1], seqs[3]])
            .unwrap();
        assert_eq!(s.offline_count(AccountKey::new("ex", "alice")).unwrap(), 3);
        s.offline_remove(
            AccountKey::new("ex", "alice"),
            &[seqs[1], seqs[3], u64::MAX],
        )
        .unwrap();
        assert_eq!(s.offline_count(AccountKey::new("ex", "alice")).unwrap(), 3);
        s.offline_remove(AccountKey::new("ex", "alice"), &[])
            .unwrap();
        // Another user's sequence numbers do not touch this user.
        s.offline_remove(AccountKey::new("ex", "bob"), &seqs)
            .unwrap();
        assert_eq!(s.offline_count(AccountKey::new("ex", "alice")).unwrap(), 3);
        assert_eq!(
            bodies(&s.offline_peek(AccountKey::new("ex", "alice"), 10).unwrap()),
            vec![msg(0), msg(2), msg(4)]
        );
    }

    #[test]
    fn limit_makes_store_full() {
        let (_d, s) = open();
        for i in 0..3 {
            assert!(matches!(
                s.offline_store(AccountKey::new("ex", "alice"), &msg(i), Some(3))
                    .unwrap(),
                OfflineStored::Stored(_)
            ));
        }
        assert_eq!(
            s.offline_store(AccountKey::new("ex", "alice"), &msg(3), Some(3))
                .unwrap(),
            OfflineStored::Full
        );
        assert_eq!(s.offline_count(AccountKey::new("ex", "alice")).unwrap(), 3);
        // A larger limit (another rule) or none still accepts.
        assert!(matches!(
            s.offline_store(AccountKey::new("ex", "alice"), &msg(4), Some(4))
                .unwrap(),
            OfflineStored::Stored(_)
        ));
        assert_eq!(
            s.offline_store(AccountKey::new("ex", "alice"), &msg(5), Some(0))
                .unwrap(),
            OfflineStored::Full
        );
        assert_eq!(s.offline_count(AccountKey::new("ex", "alice")).unwrap(), 4);
        // Once some are delivered there is room again.
        let oldest = s.offline_peek(AccountKey::new("ex", "alice"), 1).unwrap();
        s.offline_remove(AccountKey::new("ex", "alice"), &[oldest[0].0])
            .unwrap();
        assert!(matches!(
            s.offline_store(AccountKey::new("ex", "alice"), &msg(6), Some(4))
                .unwrap(),
            OfflineStored::Stored(_)
        ));
        assert_eq!(
            bodies(&s.offline_peek(AccountKey::new("ex", "alice"), 10).unwrap()),
            vec![msg(1), msg(2), msg(4), msg(6)]
        );
    }

    #[test]
    fn delete_all_clears_and_counts() {
        let (_d, s) = open();
        assert_eq!(
            s.offline_delete_all(AccountKey::new("ex", "alice"))
                .unwrap(),
            0
        );
        let n = DELETE_CHUNK + 5;
        for i in 0..n {
            s.offline_store(AccountKey::new("ex", "alice"), &msg(i), None)
                .unwrap();
        }
        s.offline_store(AccountKey::new("ex", "bob"), &msg(0), None)
            .unwrap();
        assert_eq!(s.offline_count(AccountKey::new("ex", "alice")).unwrap(), n);
        assert_eq!(
            s.offline_delete_all(AccountKey::new("ex", "alice"))
                .unwrap(),
            n
        );
        assert_eq!(s.offline_count(AccountKey::new("ex", "alice")).unwrap(), 0);
        assert!(s
            .offline_peek(AccountKey::new("ex", "alice"), 10)
            .unwrap()
            .is_empty());
        assert_eq!(s.offline_count(AccountKey::new("ex", "bob")).unwrap(), 1);
        // The queue works as new afterwards.
        s.offline_store(AccountKey::new("ex", "alice"), &msg(7), Some(1))
            .unwrap();
        assert_eq!(s.offline_count(AccountKey::new("ex", "alice")).unwrap(), 1);
    }

    #[test]
    fn count_is_a_counter_not_a_scan() {
        let (_d, s) = open();
        for i in 0..3 {
            s.offline_store(AccountKey::new("ex", "alice"), &msg(i), None)
                .unwrap();
        }
        // Remove a message behind storage's back: the count does not move,
        // proving it is read from the counter.
        let first = s.offline_peek(AccountKey::new("ex", "alice"), 1).unwrap()[0].0;
        s.trees
            .offline
            .remove(offline_key("ex", "alice", first).unwrap())
            .unwrap();
        assert_eq!(s.offline_count(AccountKey::new("ex", "alice")).unwrap(), 3);
    }

    #[test]
    fn unicode_and_escapes_survive() {
        let (_d, s) = open();
        let xml = "<message><body>héllo ✓ &lt;&amp;&gt; 'q' \"d\"</body></message>";
        s.offline_store(AccountKey::new("ex", "émile"), xml, None)
            .unwrap();
        assert_eq!(
            bodies(&s.offline_peek(AccountKey::new("ex", "émile"), 1).unwrap()),
            vec![xml]
        );
    }

    #[test]
    fn offline_persists_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let last = {
            let s = SledStorage::open(dir.path()).unwrap();
            for i in 0..4 {
                s.offline_store(AccountKey::new("ex", "alice"), &msg(i), None)
                    .unwrap();
            }
            let first = s.offline_peek(AccountKey::new("ex", "alice"), 1).unwrap()[0].0;
            s.offline_remove(AccountKey::new("ex", "alice"), &[first])
                .unwrap();
            s.pending_subscription_add(
                AccountKey::new("ex", "alice"),
                "bob@ex",
                "<presence type='subscribe'/>",
            )
            .unwrap();
            s.offline_peek(AccountKey::new("ex", "alice"), 10)
                .unwrap()
                .last()
                .unwrap()
                .0
        };
        let s = SledStorage::open(dir.path()).unwrap();
        assert_eq!(s.offline_count(AccountKey::new("ex", "alice")).unwrap(), 3);
        assert_eq!(
            bodies(&s.offline_peek(AccountKey::new("ex", "alice"), 10).unwrap()),
            vec![msg(1), msg(2), msg(3)]
        );
        // New messages still sort after the old ones.
        match s
            .offline_store(AccountKey::new("ex", "alice"), &msg(4), None)
            .unwrap()
        {
            OfflineStored::Stored(seq) => assert!(seq > last),
            OfflineStored::Full => panic!("not full"),
        }
        assert_eq!(
            s.offline_peek(AccountKey::new("ex", "alice"), 10)
                .unwrap()
                .last()
                .unwrap()
                .1,
            msg(4)
        );
        assert_eq!(
            s.pending_subscriptions(AccountKey::new("ex", "alice"))
                .unwrap(),
            vec![(
                "bob@ex".to_string(),
                "<presence type='subscribe'/>".to_string()
            )]
        );
    }

    fn creds() -> StoredCredentials {
        let secret = ScramSecret {
            salt: vec![1; 16],
            iterations: 4096,
            stored_key: vec![2; 20],
            server_key: vec![3; 20],
        };
        StoredCredentials {
            sha1: secret.clone(),
            sha256: Some(secret),
        }
    }

    fn contact(jid: &str) -> RosterItem {
        RosterItem {
            jid: jid.into(),
            name: None,
            groups: vec![],
            subscription: Subscription::Both,
            ask: false,
            approved: false,
            pending_in: false,
            ver: 0,
        }
    }

    /// Everything `user@host` has, for checking cascades.
    fn footprint(s: &SledStorage, host: &str, user: &str) -> (usize, u64, usize, usize, usize) {
        (
            s.roster_get(AccountKey::new(host, user)).unwrap().len(),
            s.roster_version(AccountKey::new(host, user)).unwrap(),
            s.pending_subscriptions(AccountKey::new(host, user))
                .unwrap()
                .len(),
            s.offline_count(AccountKey::new(host, user)).unwrap(),
            s.offline_peek(AccountKey::new(host, user), 100)
                .unwrap()
                .len(),
        )
    }

    #[test]
    fn delete_user_cascades() {
        let (_d, s) = open();
        for user in ["alice", "alicia"] {
            s.create_user(AccountKey::new("ex", user), &creds())
                .unwrap();
            s.roster_put(AccountKey::new("ex", user), contact("bob@ex"))
                .unwrap();
            s.roster_put(AccountKey::new("ex", user), contact("carol@ex"))
                .unwrap();
            s.roster_remove(AccountKey::new("ex", user), "carol@ex")
                .unwrap();
            s.pending_subscription_add(AccountKey::new("ex", user), "dave@ex", "<presence/>")
                .unwrap();
            s.offline_store(AccountKey::new("ex", user), &msg(1), None)
                .unwrap();
            s.offline_store(AccountKey::new("ex", user), &msg(2), None)
                .unwrap();
        }
        let old_ver = s.roster_version(AccountKey::new("ex", "alice")).unwrap();
        let alicia = footprint(&s, "ex", "alicia");
        assert!(s.delete_user(AccountKey::new("ex", "alice")).unwrap());
        assert_eq!(footprint(&s, "ex", "alice"), (0, 0, 0, 0, 0));
        assert_eq!(
            s.trees
                .roster_tombstones
                .scan_prefix(prefix2("ex", "alice").unwrap())
                .count(),
            0
        );
        // Neighbours are untouched.
        assert_eq!(footprint(&s, "ex", "alicia"), alicia);
        // A client of the old account gets the full roster of a new one.
        assert_eq!(
            s.roster_changes_since(AccountKey::new("ex", "alice"), old_ver)
                .unwrap(),
            None
        );
        s.create_user(AccountKey::new("ex", "alice"), &creds())
            .unwrap();
        let fresh = s
            .roster_put(AccountKey::new("ex", "alice"), contact("erin@ex"))
            .unwrap();
        assert!(fresh.ver > old_ver);
        assert_eq!(
            s.roster_changes_since(AccountKey::new("ex", "alice"), old_ver)
                .unwrap(),
            None
        );
        // Deleting a missing account still reports false, and clears strays.
        assert!(!s.delete_user(AccountKey::new("ex", "nobody")).unwrap());
        s.offline_store(AccountKey::new("ex", "ghost"), &msg(1), None)
            .unwrap();
        assert!(!s.delete_user(AccountKey::new("ex", "ghost")).unwrap());
        assert_eq!(s.offline_count(AccountKey::new("ex", "ghost")).unwrap(), 0);
    }

    #[test]
    fn corrupt_counter_is_recounted() {
        let (_d, s) = open();
        for i in 0..2 {
            s.offline_store(AccountKey::new("ex", "alice"), &msg(i), None)
                .unwrap();
        }
        s.trees
            .offline_counts
            .insert(key2("ex", "alice").unwrap(), &b"xyz"[..])
            .unwrap();
        // Read: the counter is rebuilt from the messages themselves.
        assert_eq!(s.offline_count(AccountKey::new("ex", "alice")).unwrap(), 2);
        s.trees
            .offline_counts
            .insert(key2("ex", "alice").unwrap(), &b"xyz"[..])
            .unwrap();
        // Store: repaired, then stored, and the limit counts every message.
        assert!(matches!(
            s.offline_store(AccountKey::new("ex", "alice"), &msg(2), Some(3))
                .unwrap(),
            OfflineStored::Stored(_)
        ));
        assert_eq!(
            s.offline_store(AccountKey::new("ex", "alice"), &msg(3), Some(3))
                .unwrap(),
            OfflineStored::Full
        );
        assert_eq!(s.offline_count(AccountKey::new("ex", "alice")).unwrap(), 3);
    }

    #[test]
    fn unreadable_key_is_skipped_and_the_rest_come_out() {
        let (_d, s) = open();
        s.offline_store(AccountKey::new("ex", "alice"), &msg(1), None)
            .unwrap();
        // A truncated key (3 bytes where 8 belong) sorts before the rest.
        let mut bad = prefix2("ex", "alice").unwrap();
        bad.extend_from_slice(&[0, 0, 0]);
        s.trees.offline.insert(bad, &b"<message/>"[..]).unwrap();
        let got = s.offline_peek(AccountKey::new("ex", "alice"), 1).unwrap();
        assert_eq!(bodies(&got), vec![msg(1)]);
    }

    #[test]
    fn invalid_utf8_message_is_passed_on_lossily() {
        let (_d, s) = open();
        s.trees
            .offline
            .insert(offline_key("ex", "alice", 1).unwrap(), &b"<a>\xff</a>"[..])
            .unwrap();
        let got = s.offline_peek(AccountKey::new("ex", "alice"), 5).unwrap();
        assert_eq!(got, vec![(1, "<a>\u{fffd}</a>".to_string())]);
    }
}
