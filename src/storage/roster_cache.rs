//! The in-memory roster cache (RFC 6121 §2): the rosters of accounts with
//! sessions, which presence fan-out reads without touching storage, kept
//! consistent with storage by writing through it.
//!
//! Invariants: storage is written first, then the cached copy is replaced
//! (never edited in place: readers hold `Arc` snapshots); loads and writes
//! of the cache run under one write lock, so an older snapshot loaded
//! concurrently can never overwrite a newer write; only accounts with
//! sessions stay cached (the owner says which, see [`RosterSource`]).
//!
//! In a cluster each node caches the rosters of its own sessions' accounts;
//! every write is reported to the change hook ([`RosterCache::on_change`]),
//! through which the other nodes holding sessions of the account drop
//! their copy (and push the change to their sessions).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use jid::BareJid;

use super::{AccountKey, RosterItem, Storage, StorageError};

/// What the cache reads through: the storage, and whether an account has
/// sessions now (only those rosters are kept in memory).
pub trait RosterSource {
    fn storage(&self) -> &dyn Storage;
    fn has_sessions(&self, bare: &BareJid) -> bool;
}

impl<T: RosterSource + ?Sized> RosterSource for Arc<T> {
    fn storage(&self) -> &dyn Storage {
        (**self).storage()
    }

    fn has_sessions(&self, bare: &BareJid) -> bool {
        (**self).has_sessions(bare)
    }
}

/// One account's roster in memory: contact bare JID → item.
pub type Roster = HashMap<String, RosterItem>;

/// Rosters of accounts with sessions, shared read-only with presence code.
/// Writes go to sled first, then replace the cached copy, under `write_lock`
/// so concurrent updates of one roster cannot interleave.
pub struct RosterCache {
    rosters: RwLock<HashMap<BareJid, Arc<Roster>>>,
    write_lock: Mutex<()>,
    /// Sharded by account: held from reading a roster item to writing its
    /// new subscription state, so two subscription stanzas handled at once
    /// for the same account (its own `subscribed` and a contact's
    /// `subscribe`, say) cannot overwrite each other's change. Never held
    /// across an `.await`.
    subscription_locks: Vec<Mutex<()>>,
    /// Told of every write: (account, contact, new roster version, removed).
    changed: std::sync::OnceLock<ChangeHook>,
}

/// What [`RosterCache::on_change`] calls after each write.
pub type ChangeHook = Box<dyn Fn(&BareJid, &str, u64, bool) + Send + Sync>;

impl Default for RosterCache {
    fn default() -> Self {
        RosterCache {
            rosters: Default::default(),
            write_lock: Mutex::new(()),
            subscription_locks: (0..64).map(|_| Mutex::new(())).collect(),
            changed: std::sync::OnceLock::new(),
        }
    }
}

impl RosterCache {
    /// Call `hook` after every write from now on (the cluster sets it once).
    pub fn on_change(&self, hook: ChangeHook) {
        let _ = self.changed.set(hook);
    }

    fn report(&self, bare: &BareJid, contact: &str, ver: u64, removed: bool) {
        if let Some(hook) = self.changed.get() {
            hook(bare, contact, ver, removed);
        }
    }

    /// The lock that orders subscription-state changes of `bare`'s roster.
    pub fn subscription_lock(&self, bare: &BareJid) -> std::sync::MutexGuard<'_, ()> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        bare.hash(&mut h);
        let i = (h.finish() as usize) % self.subscription_locks.len();
        self.subscription_locks[i]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The roster of `bare`, from memory or loaded from storage.
    pub fn get(&self, owner: &dyn RosterSource, bare: &BareJid) -> Arc<Roster> {
        if let Some(r) = self
            .rosters
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(bare)
        {
            return r.clone();
        }
        // Load under the write lock so a concurrent update cannot be overwritten
        // by this (older) snapshot.
        let _guard = self.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = self
            .rosters
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(bare)
        {
            return r.clone();
        }
        let account = AccountKey::from(bare);
        let items = owner.storage().roster_get(account).unwrap_or_else(|e| {
            tracing::error!("reading the roster of {bare}: {e}");
            Vec::new()
        });
        let roster: Arc<Roster> = Arc::new(items.into_iter().map(|i| (i.jid.clone(), i)).collect());
        // Only accounts with sessions stay cached.
        if owner.has_sessions(bare) {
            self.rosters
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(bare.clone(), roster.clone());
        }
        roster
    }

    /// One item of a roster.
    pub fn item(
        &self,
        owner: &dyn RosterSource,
        bare: &BareJid,
        contact: &str,
    ) -> Option<RosterItem> {
        if let Some(r) = self
            .rosters
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(bare)
        {
            return r.get(contact).cloned();
        }
        // Not cached (no session): read just this item.
        let account = AccountKey::from(bare);
        owner
            .storage()
            .roster_item(account, contact)
            .unwrap_or_else(|e| {
                tracing::error!("reading the roster of {bare}: {e}");
                None
            })
    }

    /// Forget every cached roster (the database was replaced).
    pub fn clear(&self) {
        self.rosters
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Drop a roster from memory (its account's last session ended).
    pub fn evict(&self, bare: &BareJid) {
        self.rosters
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(bare);
    }

    fn replace_cached(&self, bare: &BareJid, f: impl FnOnce(&mut Roster)) {
        let mut map = self.rosters.write().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = map.get(bare) {
            let mut copy = (**old).clone();
            f(&mut copy);
            map.insert(bare.clone(), Arc::new(copy));
        }
    }

    /// Write an item (storage first, then memory); returns it with its new version.
    pub fn put(
        &self,
        owner: &dyn RosterSource,
        bare: &BareJid,
        item: RosterItem,
    ) -> Result<RosterItem, StorageError> {
        let _guard = self.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        let account = AccountKey::from(bare);
        let stored = owner.storage().roster_put(account, item)?;
        let copy = stored.clone();
        self.replace_cached(bare, |r| {
            r.insert(copy.jid.clone(), copy);
        });
        self.report(bare, &stored.jid, stored.ver, false);
        Ok(stored)
    }

    /// Remove an item; returns the new roster version if it existed.
    pub fn remove(
        &self,
        owner: &dyn RosterSource,
        bare: &BareJid,
        contact: &str,
    ) -> Result<Option<u64>, StorageError> {
        let _guard = self.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        let account = AccountKey::from(bare);
        let ver = owner.storage().roster_remove(account, contact)?;
        self.replace_cached(bare, |r| {
            r.remove(contact);
        });
        if let Some(v) = ver {
            self.report(bare, contact, v, true);
        }
        Ok(ver)
    }
}
