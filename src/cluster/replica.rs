//! This node's in-memory copy of the cluster's session table
//! (docs/architecture.md, "The session table and membership"): a
//! JetStream key-value watch of the bucket `rookery_sessions` loads every
//! account's current entry, then applies puts, deletes and purges in the
//! order the stream holds them, so `Cluster::remote_resources` answers
//! from memory instead of a NATS round trip per stanza.
//!
//! Invariants:
//! - [`Replica::lookup`] answers only while the copy is *current*: it has
//!   applied everything the bucket held when the watch began. Before that
//!   (start, or a rebuild) it returns `None` and the caller reads the
//!   bucket as before, so a rebuild never shows an empty table.
//! - A rebuild starts from scratch (a new watch from the stream's last
//!   entry per key) whenever the watch fails or ends, the connection to
//!   NATS drops, or it was re-made after the watch began: a NATS that lost
//!   its store and had the bucket re-created (`link.rs`) is read afresh,
//!   never resumed from a revision of the old stream.
//! - It is fed only by the watch; the node's own writes reach it the same
//!   way (the caller skips this node's own sessions anyway).
//!
//! Consistency: a session bound on node B is in B's write to the bucket
//! before B's client gets its bind result; the watch brings it here
//! milliseconds later. A stanza routed here in that window does not see it,
//! as when a read of the bucket raced the write before: a message to the
//! bare JID is stored offline (or delivered to the account's other
//! sessions), never lost. Liveness (the node's heartbeat) is still checked
//! by the caller per entry.
//!
//! Memory: one `HashMap` entry per account with a session on any node:
//! the bare JID and a vector of (resource, `Held`: node name, boot id,
//! priority, availability). For an account with one session, a 24-byte
//! bare JID, a 10-byte resource and a 2-byte node name (64-bit, glibc
//! malloc rounding): slot 48 bytes (× ≈1.5 for the table's spare room),
//! JID 32, vector element 80, resource, node and boot strings 24 + 24 + 24
//! ≈ 260 bytes per remote session; ≈ 150 for each further session of the
//! same account. Computed from the types, not measured.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{Entry, Operation};
use futures_util::StreamExt;

use super::table::{self, Held, Resources};
use super::NatsCluster;

/// An account's sessions as the copy holds them: a vector (not the
/// table's `BTreeMap`, whose first node alone is ~900 bytes).
pub type Sessions = Vec<(String, Held)>;

/// How often the follower checks that the connection is still the one
/// its watch was made on.
const CHECK_EVERY: Duration = Duration::from_millis(250);
/// Pause before re-making a watch that failed.
const RETRY_AFTER: Duration = Duration::from_millis(250);

/// The copy and whether it is current.
pub struct Replica {
    state: RwLock<State>,
}

#[derive(Default)]
struct State {
    current: bool,
    /// bare JID → its sessions (accounts with none are absent).
    accounts: HashMap<String, Sessions>,
}

impl Replica {
    pub fn new() -> Arc<Replica> {
        Arc::new(Replica {
            state: RwLock::new(State::default()),
        })
    }

    /// The resources the table holds for `bare` (empty: none), or `None`
    /// while the copy is not current (read the bucket instead).
    pub fn lookup(&self, bare: &str) -> Option<Sessions> {
        let s = self.state.read().unwrap_or_else(|e| e.into_inner());
        if !s.current {
            return None;
        }
        Some(s.accounts.get(bare).cloned().unwrap_or_default())
    }

    /// Accounts held.
    #[cfg(test)]
    fn accounts(&self) -> usize {
        self.state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .accounts
            .len()
    }

    fn install(&self, accounts: HashMap<String, Sessions>) {
        let mut s = self.state.write().unwrap_or_else(|e| e.into_inner());
        s.accounts = accounts;
        s.current = true;
    }

    fn invalidate(&self) {
        let mut s = self.state.write().unwrap_or_else(|e| e.into_inner());
        s.current = false;
        s.accounts = HashMap::new();
    }

    fn apply_live(&self, e: &Entry) {
        let mut s = self.state.write().unwrap_or_else(|e| e.into_inner());
        apply(&mut s.accounts, e);
    }
}

/// Apply one watched entry to a copy.
fn apply(accounts: &mut HashMap<String, Sessions>, e: &Entry) {
    let Some(bare) = table::bare_of_key(&e.key) else {
        return;
    };
    let r = match e.operation {
        Operation::Put => table::decode(&e.value),
        Operation::Delete | Operation::Purge => Resources::new(),
    };
    if r.is_empty() {
        accounts.remove(&bare);
    } else {
        let mut v: Sessions = r.into_iter().collect();
        v.shrink_to_fit();
        accounts.insert(bare, v);
    }
}

/// Keep `c.replica` following the bucket; runs forever.
pub async fn follow(c: Arc<NatsCluster>) {
    let mut failing = false;
    loop {
        if c.up() {
            let started = Instant::now();
            let why = watch(&c, started).await;
            c.replica.invalidate();
            if c.up() && !failing {
                tracing::warn!("cluster: session table copy: {why}; rebuilding it (the table is read from NATS meanwhile)");
                failing = true;
            } else {
                tracing::debug!("cluster: session table copy: {why}; rebuilding it");
            }
        }
        tokio::time::sleep(RETRY_AFTER).await;
        if c.replica.state.read().map(|s| s.current).unwrap_or(false) {
            failing = false;
        }
    }
}

/// One watch, from the load to its end; why it ended.
async fn watch(c: &NatsCluster, started: Instant) -> String {
    // The stream's last entry now: once it (or anything later) has been
    // applied, the copy holds everything the bucket held when the watch began.
    let last = match c.sessions.stream.get_info().await {
        Ok(info) => info.state.last_sequence,
        Err(e) => return format!("reading the bucket's state: {e}"),
    };
    let mut w = match c.sessions.watch_with_history(">").await {
        Ok(w) => w,
        Err(e) => return format!("watching the bucket: {e}"),
    };
    let mut loading: Option<HashMap<String, Sessions>> = Some(HashMap::new());
    if last == 0 {
        c.replica.install(loading.take().unwrap_or_default());
        tracing::info!(
            "cluster: session table copy is current (0 accounts with sessions, {:?})",
            started.elapsed()
        );
    }
    let mut check = tokio::time::interval(CHECK_EVERY);
    loop {
        tokio::select! {
            e = w.next() => match e {
                None => return "the watch ended".to_string(),
                Some(Err(e)) => return format!("the watch failed: {e}"),
                Some(Ok(e)) => match loading.as_mut() {
                    None => c.replica.apply_live(&e),
                    Some(copy) => {
                        apply(copy, &e);
                        if e.delta == 0 || e.revision >= last {
                            let n = copy.len();
                            c.replica.install(loading.take().unwrap_or_default());
                            tracing::info!("cluster: session table copy is current ({n} accounts with sessions, {:?})", started.elapsed());
                        }
                    }
                },
            },
            _ = check.tick() => {
                if !c.up() {
                    return "the connection to NATS dropped".to_string();
                }
                if c.link.connected_for() < started.elapsed() {
                    return "the connection to NATS was re-made".to_string();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, op: Operation, value: &[u8]) -> Entry {
        Entry {
            bucket: "b".into(),
            key: key.into(),
            value: value.to_vec().into(),
            revision: 1,
            delta: 0,
            created: async_nats::datetime::now(),
            operation: op,
            seen_current: true,
        }
    }

    #[test]
    fn puts_deletes_and_purges_apply_in_order_and_lookup_waits_for_current() {
        let r = Replica::new();
        assert_eq!(r.lookup("a@x"), None, "not current: the caller reads NATS");
        let mut held = Resources::new();
        held.insert(
            "phone".into(),
            Held {
                n: "n2".into(),
                b: "boot".into(),
                p: 1,
                a: true,
            },
        );
        let mut copy = HashMap::new();
        apply(
            &mut copy,
            &entry(&table::key("a@x"), Operation::Put, &table::encode(&held)),
        );
        apply(&mut copy, &entry("n.node", Operation::Put, b"ignored"));
        r.install(copy);
        let want: Sessions = held.clone().into_iter().collect();
        assert_eq!(r.lookup("a@x"), Some(want));
        assert_eq!(r.lookup("b@x"), Some(Sessions::new()));
        r.apply_live(&entry(&table::key("a@x"), Operation::Delete, b""));
        assert_eq!(r.lookup("a@x"), Some(Sessions::new()));
        r.apply_live(&entry(
            &table::key("a@x"),
            Operation::Put,
            &table::encode(&held),
        ));
        assert_eq!(r.accounts(), 1);
        r.apply_live(&entry(&table::key("a@x"), Operation::Purge, b""));
        assert_eq!(r.accounts(), 0);
        r.apply_live(&entry(&table::key("a@x"), Operation::Put, b"{}"));
        assert_eq!(r.accounts(), 0, "an empty object holds no session");
        r.invalidate();
        assert_eq!(r.lookup("a@x"), None);
    }
}
