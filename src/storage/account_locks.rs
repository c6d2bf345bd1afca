//! The per-account locks that order offline storage against draining it
//! (XEP-0160, see `im/offline.rs`): a message that finds no available
//! resource is stored under its account's lock, and a session drains the
//! store and only then becomes available under the same lock, so a live
//! message never overtakes a stored one.
//!
//! Invariants: one of [`LOCK_SHARDS`] async mutexes per account, chosen by
//! hashing the bare JID (accounts may share a shard, never the other way
//! round); async mutexes, because the holder awaits storage and the
//! session's writer while holding it.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use jid::BareJid;
use tokio::sync::{Mutex, MutexGuard};

/// Number of account locks.
pub const LOCK_SHARDS: usize = 256;

/// The per-account locks.
pub struct AccountLocks {
    shards: Vec<Mutex<()>>,
}

impl Default for AccountLocks {
    fn default() -> Self {
        AccountLocks {
            shards: (0..LOCK_SHARDS).map(|_| Mutex::new(())).collect(),
        }
    }
}

impl AccountLocks {
    /// Lock the account `bare`.
    pub async fn lock(&self, bare: &BareJid) -> MutexGuard<'_, ()> {
        let mut h = DefaultHasher::new();
        bare.hash(&mut h);
        self.shards[(h.finish() as usize) % LOCK_SHARDS]
            .lock()
            .await
    }
}
