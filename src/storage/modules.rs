//! The module-facing side of module data: [`ModuleAccess`] implements
//! `xep_support::store::ModuleData` (what `ctx.store(MODULE)` calls) over
//! any engine's [`ModuleStore`], so modules reach their store without
//! going through the server and without knowing the engine.
//!
//! It only translates: the owner `BareJid` becomes an [`AccountKey`](super::AccountKey)
//! borrowed from it (a bare domain gets an empty user, which no account
//! has), and a [`StorageError`] becomes the modules' `StoreError` (its
//! text, for logs; a full disk made with `StoreError::full`, so that modules
//! answer `resource-constraint`). Nothing is allocated or locked here beyond what the
//! engine does.

use std::sync::Arc;

use jid::BareJid;
use xep_support::module::{KeyRange, StoreError, StoreErrorKind};
use xep_support::store::{ModuleData, Row};

use super::{ModuleStore, StorageError};

/// Module data as modules see it, over the server's engine.
pub struct ModuleAccess {
    engine: Arc<dyn ModuleStore>,
}

impl ModuleAccess {
    /// Module data kept in `engine`.
    pub fn new(engine: Arc<dyn ModuleStore>) -> ModuleAccess {
        ModuleAccess { engine }
    }
}

fn store_error(e: StorageError) -> StoreError {
    match e {
        // Modules answer resource-constraint for it (RFC 6120 §8.3.3.18).
        StorageError::Full(_) => StoreError::from_source(StoreErrorKind::Full, e),
        e => StoreError::from_source(StoreErrorKind::Other, e),
    }
}

impl ModuleData for ModuleAccess {
    fn get(&self, module: &str, owner: &BareJid, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.engine
            .module_get(owner.into(), module, key)
            .map_err(store_error)
    }

    fn put(
        &self,
        module: &str,
        owner: &BareJid,
        key: &str,
        value: &[u8],
    ) -> Result<(), StoreError> {
        self.engine
            .module_put(owner.into(), module, key, value)
            .map_err(store_error)
    }

    fn put_lazy(
        &self,
        module: &str,
        owner: &BareJid,
        key: &str,
        value: &[u8],
    ) -> Result<(), StoreError> {
        self.engine
            .module_put_lazy(owner.into(), module, key, value)
            .map_err(store_error)
    }

    fn put_many_lazy(
        &self,
        module: &str,
        owner: &BareJid,
        entries: &[(&str, &[u8])],
    ) -> Result<(), StoreError> {
        self.engine
            .module_put_many_lazy(owner.into(), module, entries)
            .map_err(store_error)
    }

    fn delete(&self, module: &str, owner: &BareJid, key: &str) -> Result<bool, StoreError> {
        self.engine
            .module_delete(owner.into(), module, key)
            .map_err(store_error)
    }

    fn scan(&self, module: &str, owner: &BareJid, prefix: &str) -> Result<Vec<Row>, StoreError> {
        self.engine
            .module_scan(owner.into(), module, prefix)
            .map_err(store_error)
    }

    fn scan_range(
        &self,
        module: &str,
        owner: &BareJid,
        range: &KeyRange<'_>,
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<Row>, StoreError> {
        self.engine
            .module_scan_range(owner.into(), module, range, reverse, limit)
            .map_err(store_error)
    }

    fn count_range(
        &self,
        module: &str,
        owner: &BareJid,
        range: &KeyRange<'_>,
    ) -> Result<usize, StoreError> {
        self.engine
            .module_count_range(owner.into(), module, range)
            .map_err(store_error)
    }

    fn delete_many(
        &self,
        module: &str,
        owner: &BareJid,
        keys: &[String],
    ) -> Result<usize, StoreError> {
        self.engine
            .module_delete_many(owner.into(), module, keys)
            .map_err(store_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{AccountKey, AccountStore, SledStorage};
    use xep_support::store::ModuleStore as Handle;

    #[test]
    fn handles_are_scoped_to_their_module_and_owner_and_reach_the_engine_keys() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Arc::new(SledStorage::open(dir.path()).unwrap());
        let access = ModuleAccess::new(engine.clone());
        let alice = BareJid::new("alice@localhost").unwrap();
        let room_domain = BareJid::new("conference.localhost").unwrap();
        let vcard = Handle::new(&access, "mod_vcard");
        let pep = Handle::new(&access, "mod_pep");
        vcard.put(&alice, "vcard", b"<vCard/>").unwrap();
        pep.put(&alice, "node:a", b"1").unwrap();
        pep.put_many_lazy(&alice, &[("node:b", b"2"), ("node:c", b"3")])
            .unwrap();
        pep.put(&room_domain, "node:a", b"domain").unwrap();
        assert_eq!(
            vcard.get(&alice, "vcard").unwrap(),
            Some(b"<vCard/>".to_vec())
        );
        assert_eq!(vcard.get(&alice, "node:a").unwrap(), None);
        let keys: Vec<String> = pep
            .scan(&alice, "node:")
            .unwrap()
            .into_iter()
            .map(|r| r.0)
            .collect();
        assert_eq!(keys, ["node:a", "node:b", "node:c"]);
        assert_eq!(
            pep.count_range(&alice, &KeyRange::prefix("node:")).unwrap(),
            3
        );
        let last = pep
            .scan_range(&alice, &KeyRange::prefix("node:"), true, 1)
            .unwrap();
        assert_eq!(last, vec![("node:c".to_string(), b"3".to_vec())]);
        assert_eq!(
            pep.get(&room_domain, "node:a").unwrap(),
            Some(b"domain".to_vec())
        );
        // The same records the engine keeps under (host, user, module, key):
        // the on-disk layout did not change.
        assert_eq!(
            engine
                .module_get(AccountKey::new("localhost", "alice"), "mod_pep", "node:a")
                .unwrap(),
            Some(b"1".to_vec())
        );
        assert_eq!(
            engine
                .module_get(
                    AccountKey::new("conference.localhost", ""),
                    "mod_pep",
                    "node:a"
                )
                .unwrap(),
            Some(b"domain".to_vec())
        );
        assert!(pep.delete(&alice, "node:a").unwrap());
        assert!(!pep.delete(&alice, "node:a").unwrap());
        assert_eq!(
            pep.delete_many(&alice, &["node:b".into(), "x".into()])
                .unwrap(),
            1
        );
        // Deleting the account takes its module data, not the domain's.
        engine
            .create_user(AccountKey::new("localhost", "alice"), &test_creds())
            .unwrap();
        assert!(engine
            .delete_user(AccountKey::new("localhost", "alice"))
            .unwrap());
        assert_eq!(vcard.get(&alice, "vcard").unwrap(), None);
        assert_eq!(pep.scan(&alice, "").unwrap(), vec![]);
        assert_eq!(pep.scan(&room_domain, "").unwrap().len(), 1);
    }

    fn test_creds() -> crate::auth::credentials::StoredCredentials {
        let secret = crate::auth::credentials::ScramSecret {
            salt: vec![1; 16],
            iterations: 4096,
            stored_key: vec![2; 20],
            server_key: vec![3; 20],
        };
        crate::auth::credentials::StoredCredentials {
            sha1: secret.clone(),
            sha256: Some(secret),
        }
    }
}
