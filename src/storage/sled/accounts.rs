//! Accounts in sled: the `accounts` tree, `host\0user` → the account's
//! SCRAM credentials (`StoredCredentials` as JSON).
//!
//! Invariants: an account is created with compare-and-swap (never
//! overwritten); `set_credentials` only updates an existing key; the
//! host's accounts are exactly the keys under `host\0`, so listing and
//! counting are prefix scans. `delete_user` removes the account's data from
//! every tree (offline, roster, pending requests, module data) before the
//! account itself, under one backup gate, then flushes.

use super::{decode, encode, key2, prefix1, prefix2, SledStorage};
use crate::auth::credentials::StoredCredentials;
use crate::storage::{AccountKey, AccountStore, StorageError};

impl AccountStore for SledStorage {
    fn user_exists(&self, account: AccountKey<'_>) -> Result<bool, StorageError> {
        let AccountKey { host, user } = account;
        let key = key2(host, user)?;
        self.trees
            .accounts
            .contains_key(key)
            .map_err(|e| self.err(e))
    }

    fn create_user(
        &self,
        account: AccountKey<'_>,
        creds: &StoredCredentials,
    ) -> Result<(), StorageError> {
        let AccountKey { host, user } = account;
        let _w = self.writing();
        let key = key2(host, user)?;
        let value = encode(creds)?;
        let swapped = self
            .trees
            .accounts
            .compare_and_swap(key, None as Option<&[u8]>, Some(value))
            .map_err(|e| self.err(e))?;
        if swapped.is_err() {
            return Err(StorageError::AlreadyExists);
        }
        self.durable()
    }

    /// Deletes the account and everything kept for it: roster (items,
    /// tombstones, version), pending requests, offline messages, module data
    /// and the message archive. The user's data goes first and the account last, so an interrupted
    /// deletion leaves an account that can be deleted again, never orphaned
    /// data that a new account of the same name would inherit.
    fn delete_user(&self, account: AccountKey<'_>) -> Result<bool, StorageError> {
        let AccountKey { host, user } = account;
        // The archive first (it takes the gate itself).
        if let Ok(owner) = jid::BareJid::new(&format!("{user}@{host}")) {
            use xep_support::archive::ArchiveStore;
            self.archive
                .delete_archive(&owner)
                .map_err(StorageError::from)?;
        }
        let _w = self.writing();
        let key = key2(host, user)?;
        self.offline_delete_all_impl(host, user)?;
        self.roster_delete_all(host, user)?;
        self.clear_prefix(&self.trees.pending, &prefix2(host, user)?)?;
        self.clear_prefix(&self.trees.module_data, &prefix2(host, user)?)?;
        let old = self.trees.accounts.remove(key).map_err(|e| self.err(e))?;
        self.durable()?;
        Ok(old.is_some())
    }

    fn get_credentials(
        &self,
        account: AccountKey<'_>,
    ) -> Result<Option<StoredCredentials>, StorageError> {
        let AccountKey { host, user } = account;
        let key = key2(host, user)?;
        match self.trees.accounts.get(key).map_err(|e| self.err(e))? {
            Some(bytes) => Ok(Some(decode(
                &format!("credentials of {user}@{host}"),
                &bytes,
            )?)),
            None => Ok(None),
        }
    }

    fn set_credentials(
        &self,
        account: AccountKey<'_>,
        creds: &StoredCredentials,
    ) -> Result<bool, StorageError> {
        let AccountKey { host, user } = account;
        let _w = self.writing();
        let key = key2(host, user)?;
        let value = encode(creds)?;
        // Atomic "update if present": absent stays absent.
        let previous = self
            .trees
            .accounts
            .fetch_and_update(key, |old| old.map(|_| value.clone()))
            .map_err(|e| self.err(e))?;
        if previous.is_none() {
            return Ok(false);
        }
        self.durable()?;
        Ok(true)
    }

    fn list_users(&self, host: &str) -> Result<Vec<String>, StorageError> {
        let prefix = prefix1(host)?;
        let mut users = Vec::new();
        for item in self.trees.accounts.scan_prefix(&prefix) {
            let (key, _) = item.map_err(|e| self.err(e))?;
            let user = std::str::from_utf8(&key[prefix.len()..]).map_err(|_| {
                StorageError::Corrupt(format!("account key on {host} is not UTF-8"))
            })?;
            users.push(user.to_string());
        }
        Ok(users)
    }

    fn count_users(&self, host: &str) -> Result<usize, StorageError> {
        let prefix = prefix1(host)?;
        let mut count = 0;
        for item in self.trees.accounts.scan_prefix(&prefix).keys() {
            item.map_err(|e| self.err(e))?;
            count += 1;
        }
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::credentials::ScramSecret;
    use std::path::Path;

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
    fn create_get_exists_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStorage::open(dir.path()).unwrap();
        assert!(!s
            .user_exists(AccountKey::new("localhost", "alice"))
            .unwrap());
        assert_eq!(
            s.get_credentials(AccountKey::new("localhost", "alice"))
                .unwrap(),
            None
        );
        s.create_user(AccountKey::new("localhost", "alice"), &fake_creds(1))
            .unwrap();
        assert!(s
            .user_exists(AccountKey::new("localhost", "alice"))
            .unwrap());
        assert!(!s
            .user_exists(AccountKey::new("example.org", "alice"))
            .unwrap());
        assert_eq!(
            s.get_credentials(AccountKey::new("localhost", "alice"))
                .unwrap(),
            Some(fake_creds(1))
        );
    }

    #[test]
    fn real_credentials_survive_encoding() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStorage::open(dir.path()).unwrap();
        let creds = StoredCredentials::derive("pencil", 4096).unwrap();
        s.create_user(AccountKey::new("localhost", "user"), &creds)
            .unwrap();
        let back = s
            .get_credentials(AccountKey::new("localhost", "user"))
            .unwrap()
            .unwrap();
        assert!(back.verify_password("pencil"));
        assert!(!back.verify_password("pen"));
    }

    #[test]
    fn create_twice_is_already_exists_and_keeps_first() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStorage::open(dir.path()).unwrap();
        s.create_user(AccountKey::new("localhost", "alice"), &fake_creds(1))
            .unwrap();
        assert_eq!(
            s.create_user(AccountKey::new("localhost", "alice"), &fake_creds(2)),
            Err(StorageError::AlreadyExists)
        );
        assert_eq!(
            s.get_credentials(AccountKey::new("localhost", "alice"))
                .unwrap(),
            Some(fake_creds(1))
        );
    }

    #[test]
    fn delete_reports_presence() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStorage::open(dir.path()).unwrap();
        assert!(!s
            .delete_user(AccountKey::new("localhost", "alice"))
            .unwrap());
        s.create_user(AccountKey::new("localhost", "alice"), &fake_creds(1))
            .unwrap();
        assert!(s
            .delete_user(AccountKey::new("localhost", "alice"))
            .unwrap());
        assert!(!s
            .user_exists(AccountKey::new("localhost", "alice"))
            .unwrap());
        assert!(!s
            .delete_user(AccountKey::new("localhost", "alice"))
            .unwrap());
        // Can be registered again afterwards.
        s.create_user(AccountKey::new("localhost", "alice"), &fake_creds(3))
            .unwrap();
    }

    #[test]
    fn set_credentials_only_for_existing_users() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStorage::open(dir.path()).unwrap();
        assert!(!s
            .set_credentials(AccountKey::new("localhost", "bob"), &fake_creds(1))
            .unwrap());
        assert!(!s.user_exists(AccountKey::new("localhost", "bob")).unwrap());
        s.create_user(AccountKey::new("localhost", "bob"), &fake_creds(1))
            .unwrap();
        assert!(s
            .set_credentials(AccountKey::new("localhost", "bob"), &fake_creds(2))
            .unwrap());
        assert_eq!(
            s.get_credentials(AccountKey::new("localhost", "bob"))
                .unwrap(),
            Some(fake_creds(2))
        );
    }

    #[test]
    fn list_is_sorted_and_per_host() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStorage::open(dir.path()).unwrap();
        for user in ["zoe", "alice", "émile", "bob", "al"] {
            s.create_user(AccountKey::new("ex", user), &fake_creds(1))
                .unwrap();
        }
        // A host whose name extends "ex" must not leak into "ex".
        s.create_user(AccountKey::new("ex.org", "carol"), &fake_creds(1))
            .unwrap();
        s.create_user(AccountKey::new("e", "dave"), &fake_creds(1))
            .unwrap();
        assert_eq!(
            s.list_users("ex").unwrap(),
            vec!["al", "alice", "bob", "zoe", "émile"]
        );
        assert_eq!(s.count_users("ex").unwrap(), 5);
        assert_eq!(s.list_users("ex.org").unwrap(), vec!["carol"]);
        assert_eq!(s.count_users("e").unwrap(), 1);
        assert!(s.list_users("nowhere").unwrap().is_empty());
        assert_eq!(s.count_users("nowhere").unwrap(), 0);
    }

    #[test]
    fn nul_in_key_parts_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStorage::open(dir.path()).unwrap();
        assert!(matches!(
            s.create_user(AccountKey::new("ex", "a\0b"), &fake_creds(1)),
            Err(StorageError::Io(_))
        ));
        assert!(matches!(s.list_users("e\0x"), Err(StorageError::Io(_))));
    }

    #[test]
    fn data_persists_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStorage::open(dir.path()).unwrap();
            s.create_user(AccountKey::new("localhost", "alice"), &fake_creds(1))
                .unwrap();
            s.create_user(AccountKey::new("localhost", "bob"), &fake_creds(2))
                .unwrap();
            s.delete_user(AccountKey::new("localhost", "bob")).unwrap();
            s.set_credentials(AccountKey::new("localhost", "alice"), &fake_creds(5))
                .unwrap();
        }
        let s = SledStorage::open(dir.path()).unwrap();
        assert_eq!(s.list_users("localhost").unwrap(), vec!["alice"]);
        assert_eq!(
            s.get_credentials(AccountKey::new("localhost", "alice"))
                .unwrap(),
            Some(fake_creds(5))
        );
    }

    #[test]
    fn undecodable_value_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStorage::open(dir.path()).unwrap();
        s.trees
            .accounts
            .insert(key2("localhost", "mallory").unwrap(), &b"not json"[..])
            .unwrap();
        assert!(matches!(
            s.get_credentials(AccountKey::new("localhost", "mallory")),
            Err(StorageError::Corrupt(_))
        ));
        // Existence does not need decoding.
        assert!(s
            .user_exists(AccountKey::new("localhost", "mallory"))
            .unwrap());
    }

    const KILL_ENV: &str = "ROOKERY_TEST_SIGKILL_DB";

    /// Child half of `acknowledged_changes_survive_sigkill`: makes changes,
    /// then kills itself with SIGKILL (no destructors, no final flush).
    #[test]
    #[ignore = "run by acknowledged_changes_survive_sigkill in a child process"]
    fn sigkill_child() {
        let Some(dir) = std::env::var_os(KILL_ENV) else {
            return;
        };
        let s = SledStorage::open(Path::new(&dir)).unwrap();
        s.create_user(AccountKey::new("localhost", "alice"), &fake_creds(1))
            .unwrap();
        s.create_user(AccountKey::new("localhost", "bob"), &fake_creds(2))
            .unwrap();
        assert!(s.delete_user(AccountKey::new("localhost", "bob")).unwrap());
        assert!(s
            .set_credentials(AccountKey::new("localhost", "alice"), &fake_creds(7))
            .unwrap());
        // SAFETY: plain libc calls with no memory arguments.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
        unreachable!("SIGKILL did not stop the process");
    }

    #[test]
    fn acknowledged_changes_survive_sigkill() {
        use std::os::unix::process::ExitStatusExt;
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        // Test names are relative to the crate root: drop the crate name.
        let module = module_path!().split_once("::").unwrap().1;
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                &format!("{module}::sigkill_child"),
                "--ignored",
                "--test-threads=1",
            ])
            .env(KILL_ENV, &db)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL), "child: {status:?}");
        let s = SledStorage::open(&db).unwrap();
        assert_eq!(s.list_users("localhost").unwrap(), vec!["alice"]);
        assert_eq!(
            s.get_credentials(AccountKey::new("localhost", "alice"))
                .unwrap(),
            Some(fake_creds(7))
        );
    }
}
