//! Modules' data in sled: the `module_data` tree, key
//! `host\0user\0module\0key` → the module's value (bytes). The owner is an
//! account, a module's service domain (`domain\0\0module\0key`) or the
//! server (`\0\0module\0key`, e.g. the dialback secret).
//!
//! Invariants: host, user and module contain no NUL (refused), so
//! `host\0user\0module\0` is an exact prefix of one owner's keys in one
//! module, and prefix and range scans never see another owner's or module's
//! keys (a module's own key may contain anything: it is the last part).
//! `put`, `delete` and `delete_many` flush before returning; the `_lazy`
//! writes leave it to sled's own flush (every 500 ms). `delete_user`
//! (accounts.rs) clears `host\0user\0` here too.

use super::{key3, key_suffix, SledStorage};
use crate::storage::{AccountKey, KeyRange, ModuleStore, StorageError};

impl ModuleStore for SledStorage {
    fn module_get(
        &self,
        owner: AccountKey<'_>,
        module: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        let AccountKey { host, user } = owner;
        let k = module_key(host, user, module, key)?;
        let v = self.trees.module_data.get(k).map_err(|e| self.err(e))?;
        Ok(v.map(|v| v.to_vec()))
    }

    fn module_put(
        &self,
        owner: AccountKey<'_>,
        module: &str,
        key: &str,
        value: &[u8],
    ) -> Result<(), StorageError> {
        let AccountKey { host, user } = owner;
        let _w = self.writing();
        let k = module_key(host, user, module, key)?;
        self.trees
            .module_data
            .insert(k, value)
            .map_err(|e| self.err(e))?;
        self.durable()
    }

    fn module_put_lazy(
        &self,
        owner: AccountKey<'_>,
        module: &str,
        key: &str,
        value: &[u8],
    ) -> Result<(), StorageError> {
        let AccountKey { host, user } = owner;
        let _w = self.writing();
        let k = module_key(host, user, module, key)?;
        self.trees
            .module_data
            .insert(k, value)
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn module_put_many_lazy(
        &self,
        owner: AccountKey<'_>,
        module: &str,
        entries: &[(&str, &[u8])],
    ) -> Result<(), StorageError> {
        let AccountKey { host, user } = owner;
        let _w = self.writing();
        let mut batch = sled::Batch::default();
        for (key, value) in entries {
            batch.insert(module_key(host, user, module, key)?, *value);
        }
        self.trees
            .module_data
            .apply_batch(batch)
            .map_err(|e| self.err(e))
    }

    fn module_delete(
        &self,
        owner: AccountKey<'_>,
        module: &str,
        key: &str,
    ) -> Result<bool, StorageError> {
        let AccountKey { host, user } = owner;
        let _w = self.writing();
        let k = module_key(host, user, module, key)?;
        let old = self.trees.module_data.remove(k).map_err(|e| self.err(e))?;
        if old.is_some() {
            self.durable()?;
        }
        Ok(old.is_some())
    }

    fn module_scan(
        &self,
        owner: AccountKey<'_>,
        module: &str,
        prefix: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        let AccountKey { host, user } = owner;
        let base = module_key(host, user, module, "")?;
        let mut full = base.clone();
        full.extend_from_slice(prefix.as_bytes());
        let mut out = Vec::new();
        for kv in self.trees.module_data.scan_prefix(&full) {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            out.push((key_suffix(&k, &base, "module data")?, v.to_vec()));
        }
        Ok(out)
    }

    fn module_scan_range(
        &self,
        owner: AccountKey<'_>,
        module: &str,
        range: &KeyRange<'_>,
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        let AccountKey { host, user } = owner;
        let base = module_key(host, user, module, "")?;
        let Some(bounds) = sled_bounds(&base, range) else {
            return Ok(Vec::new());
        };
        let iter = self.trees.module_data.range(bounds);
        let mut out = Vec::new();
        let mut push = |kv: sled::Result<(sled::IVec, sled::IVec)>| {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            out.push((key_suffix(&k, &base, "module data")?, v.to_vec()));
            Ok::<(), StorageError>(())
        };
        if reverse {
            for kv in iter.rev().take(limit) {
                push(kv)?;
            }
        } else {
            for kv in iter.take(limit) {
                push(kv)?;
            }
        }
        Ok(out)
    }

    fn module_count_range(
        &self,
        owner: AccountKey<'_>,
        module: &str,
        range: &KeyRange<'_>,
    ) -> Result<usize, StorageError> {
        let AccountKey { host, user } = owner;
        let base = module_key(host, user, module, "")?;
        let Some(bounds) = sled_bounds(&base, range) else {
            return Ok(0);
        };
        let mut n = 0;
        for kv in self.trees.module_data.range(bounds) {
            kv.map_err(|e| self.err(e))?;
            n += 1;
        }
        Ok(n)
    }

    fn module_delete_many(
        &self,
        owner: AccountKey<'_>,
        module: &str,
        keys: &[String],
    ) -> Result<usize, StorageError> {
        let AccountKey { host, user } = owner;
        if keys.is_empty() {
            return Ok(0);
        }
        let _w = self.writing();
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for key in keys {
            let k = module_key(host, user, module, key)?;
            if self
                .trees
                .module_data
                .contains_key(&k)
                .map_err(|e| self.err(e))?
            {
                n += 1;
            }
            batch.remove(k);
        }
        self.trees
            .module_data
            .apply_batch(batch)
            .map_err(|e| self.err(e))?;
        self.durable()?;
        Ok(n)
    }
}

/// Lower and upper bounds of a sled key range.
type SledRange = (std::ops::Bound<Vec<u8>>, std::ops::Bound<Vec<u8>>);

/// The sled key range of `range` under a module's `base` key, clamped to
/// the range's prefix; `None` when it is empty.
fn sled_bounds(base: &[u8], range: &KeyRange<'_>) -> Option<SledRange> {
    use std::ops::Bound::{Excluded, Included, Unbounded};
    let full = |k: &str| {
        let mut v = base.to_vec();
        v.extend_from_slice(k.as_bytes());
        v
    };
    let start = full(range.prefix);
    // No UTF-8 key has the byte 0xFF: every key with the prefix is below this.
    let mut end = start.clone();
    end.push(0xFF);
    let lower = match range.lower {
        Included(k) if full(k) > start => Included(full(k)),
        Excluded(k) if full(k) >= start => Excluded(full(k)),
        _ => Included(start),
    };
    let upper = match range.upper {
        Included(k) if full(k) < end => Included(full(k)),
        Excluded(k) if full(k) < end => Excluded(full(k)),
        _ => Excluded(end),
    };
    let (lo, lo_incl) = match &lower {
        Included(k) => (k, true),
        Excluded(k) => (k, false),
        Unbounded => unreachable!(),
    };
    let (hi, hi_incl) = match &upper {
        Included(k) => (k, true),
        Excluded(k) => (k, false),
        Unbounded => unreachable!(),
    };
    if lo > hi || (lo == hi && !(lo_incl && hi_incl)) {
        return None;
    }
    Some((lower, upper))
}

/// The key `host\0user\0module\0key` of a module's record; the module's own
/// key may contain anything (it is the last part).
fn module_key(host: &str, user: &str, module: &str, key: &str) -> Result<Vec<u8>, StorageError> {
    let mut k = key3(host, user, module)?;
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    Ok(k)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::credentials::{ScramSecret, StoredCredentials};
    use crate::storage::AccountStore;

    fn fake_creds(tag: u8) -> StoredCredentials {
        let secret = ScramSecret {
            salt: vec![tag; 16],
            iterations: 4096,
            stored_key: vec![tag; 20],
            server_key: vec![tag.wrapping_add(1); 20],
        };
        StoredCredentials {
            sha1: secret.clone(),
            sha256: Some(secret),
        }
    }

    #[test]
    fn module_range_scans_count_and_delete_many() {
        use std::ops::Bound::*;
        let dir = tempfile::tempdir().unwrap();
        let s = SledStorage::open(dir.path()).unwrap();
        for k in ["m:01", "m:02", "m:03", "m:04", "n", "l"] {
            s.module_put_lazy(
                AccountKey::new("localhost", "alice"),
                "mod_mam",
                k,
                k.as_bytes(),
            )
            .unwrap();
        }
        s.module_put(
            AccountKey::new("localhost", "alicex"),
            "mod_mam",
            "m:00",
            b"x",
        )
        .unwrap();
        let keys = |r: Vec<(String, Vec<u8>)>| r.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        let all = KeyRange::prefix("m:");
        let r = s
            .module_scan_range(
                AccountKey::new("localhost", "alice"),
                "mod_mam",
                &all,
                false,
                10,
            )
            .unwrap();
        assert_eq!(keys(r), ["m:01", "m:02", "m:03", "m:04"]);
        let r = s
            .module_scan_range(
                AccountKey::new("localhost", "alice"),
                "mod_mam",
                &all,
                true,
                2,
            )
            .unwrap();
        assert_eq!(keys(r), ["m:04", "m:03"]);
        let mid = KeyRange {
            prefix: "m:",
            lower: Excluded("m:01"),
            upper: Included("m:03"),
        };
        let r = s
            .module_scan_range(
                AccountKey::new("localhost", "alice"),
                "mod_mam",
                &mid,
                false,
                10,
            )
            .unwrap();
        assert_eq!(keys(r), ["m:02", "m:03"]);
        assert_eq!(
            s.module_count_range(AccountKey::new("localhost", "alice"), "mod_mam", &mid)
                .unwrap(),
            2
        );
        // Bounds outside the prefix are clamped to it; an empty range is empty.
        let wide = KeyRange {
            prefix: "m:",
            lower: Included("a"),
            upper: Included("z"),
        };
        assert_eq!(
            s.module_count_range(AccountKey::new("localhost", "alice"), "mod_mam", &wide)
                .unwrap(),
            4
        );
        let empty = KeyRange {
            prefix: "m:",
            lower: Excluded("m:03"),
            upper: Excluded("m:03"),
        };
        assert_eq!(
            s.module_count_range(AccountKey::new("localhost", "alice"), "mod_mam", &empty)
                .unwrap(),
            0
        );
        let gone = s
            .module_delete_many(
                AccountKey::new("localhost", "alice"),
                "mod_mam",
                &["m:01".into(), "m:02".into(), "m:99".into()],
            )
            .unwrap();
        assert_eq!(gone, 2);
        assert_eq!(
            s.module_count_range(AccountKey::new("localhost", "alice"), "mod_mam", &all)
                .unwrap(),
            2
        );
    }

    #[test]
    fn module_data_is_per_account_and_module_scanned_by_prefix_and_deleted_with_the_user() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStorage::open(dir.path()).unwrap();
        s.create_user(AccountKey::new("localhost", "alice"), &fake_creds(1))
            .unwrap();
        s.create_user(AccountKey::new("localhost", "alicex"), &fake_creds(2))
            .unwrap();
        s.module_put(
            AccountKey::new("localhost", "alice"),
            "mod_pep",
            "node:b",
            b"2",
        )
        .unwrap();
        s.module_put(
            AccountKey::new("localhost", "alice"),
            "mod_pep",
            "node:a",
            b"1",
        )
        .unwrap();
        s.module_put(
            AccountKey::new("localhost", "alice"),
            "mod_pep",
            "other",
            b"x",
        )
        .unwrap();
        s.module_put(
            AccountKey::new("localhost", "alice"),
            "mod_pe",
            "node:z",
            b"no",
        )
        .unwrap();
        s.module_put(
            AccountKey::new("localhost", "alicex"),
            "mod_pep",
            "node:c",
            b"3",
        )
        .unwrap();
        let scan = s
            .module_scan(AccountKey::new("localhost", "alice"), "mod_pep", "node:")
            .unwrap();
        assert_eq!(
            scan,
            vec![
                ("node:a".to_string(), b"1".to_vec()),
                ("node:b".to_string(), b"2".to_vec())
            ]
        );
        assert_eq!(
            s.module_get(AccountKey::new("localhost", "alice"), "mod_pep", "other")
                .unwrap(),
            Some(b"x".to_vec())
        );
        assert!(s
            .module_delete(AccountKey::new("localhost", "alice"), "mod_pep", "other")
            .unwrap());
        assert!(!s
            .module_delete(AccountKey::new("localhost", "alice"), "mod_pep", "other")
            .unwrap());
        assert!(s
            .delete_user(AccountKey::new("localhost", "alice"))
            .unwrap());
        assert!(s
            .module_scan(AccountKey::new("localhost", "alice"), "mod_pep", "")
            .unwrap()
            .is_empty());
        assert!(s
            .module_scan(AccountKey::new("localhost", "alice"), "mod_pe", "")
            .unwrap()
            .is_empty());
        // Another account whose name extends this one's keeps its data.
        assert_eq!(
            s.module_scan(AccountKey::new("localhost", "alicex"), "mod_pep", "")
                .unwrap()
                .len(),
            1
        );
    }
}
