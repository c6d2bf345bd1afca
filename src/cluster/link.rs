//! This node's connection to NATS, and what happens when it breaks
//! (docs/architecture.md, "Cluster", "When NATS or PostgreSQL fails"):
//!
//! - the client's connection events are logged and counted (the gauge
//!   `rookery_cluster_nats_connected`); while the connection is down the
//!   cluster code fails fast (`NatsCluster::up`) instead of waiting for
//!   NATS timeouts on a sender's task: a stanza for a session on another
//!   node is then handled as if that session were gone (a message is
//!   stored offline in PostgreSQL), table writes are skipped;
//! - when the connection comes back (or heartbeats go through again),
//!   [`recovery`] makes the node whole: the buckets again (a NATS that
//!   lost its store has none), a heartbeat at once, every local session
//!   re-published in the session table (other nodes' sweepers may have
//!   removed them while this node's heartbeat key had expired) and the
//!   removals that failed meanwhile retried; once more after `node_ttl`,
//!   for a sweep that began on the stale view. The client library
//!   re-subscribes the node's subjects itself.
//!
//! Invariant: nothing here blocks a routing task; recovery runs on its
//! own task, one at a time.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::NatsCluster;
use crate::server::Server;

/// At most one "NATS is unavailable" line per this long.
const DOWN_LOG_EVERY: Duration = Duration::from_secs(10);

/// The state of the connection the event callback and the cluster share.
pub struct Link {
    /// Woken when the connection (or JetStream) is back.
    recover: Notify,
    /// Connects so far (the first is the start).
    connects: AtomicU64,
    /// When the connection was last (re)made.
    since: Mutex<Instant>,
    /// When "unavailable" was last logged.
    last_down_log: Mutex<Option<Instant>>,
    /// Full JIDs whose table entry could not be removed (NATS down).
    pending_removals: Mutex<HashSet<String>>,
}

impl Link {
    pub fn new() -> Arc<Link> {
        Arc::new(Link {
            recover: Notify::new(),
            connects: AtomicU64::new(0),
            since: Mutex::new(Instant::now()),
            last_down_log: Mutex::new(None),
            pending_removals: Mutex::new(HashSet::new()),
        })
    }

    /// A connection event of the NATS client.
    pub fn event(&self, node: &str, e: async_nats::Event) {
        match e {
            async_nats::Event::Connected => {
                crate::metrics::cluster_nats_connected(true);
                *self.since.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
                if self.connects.fetch_add(1, Ordering::Relaxed) > 0 {
                    tracing::info!("cluster: node {node} is connected to NATS again; re-publishing its sessions");
                    self.recover.notify_one();
                }
            }
            async_nats::Event::Disconnected => {
                crate::metrics::cluster_nats_connected(false);
                tracing::error!("cluster: node {node} lost its connection to NATS (reconnecting): stanzas for sessions on other nodes are handled here meanwhile (messages stored offline)");
            }
            // Each failed reconnect attempt: the outage is logged above.
            async_nats::Event::ClientError(e) => tracing::debug!("cluster: NATS: {e}"),
            other => tracing::warn!("cluster: NATS: {other}"),
        }
    }

    /// Ask for a recovery (heartbeats went through again after failing).
    pub fn wake(&self) {
        self.recover.notify_one();
    }

    /// How long the connection has been up (since the last connect).
    pub fn connected_for(&self) -> Duration {
        self.since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
    }

    /// Count a cross-node lookup or hand-over NATS could not serve, and
    /// log (rate-limited) what happens instead.
    pub fn unavailable(&self, what: &str) {
        crate::metrics::cluster_forward_failed();
        self.note_down(what);
    }

    /// Log (at most every [`DOWN_LOG_EVERY`]) that NATS is unavailable.
    pub fn note_down(&self, what: &str) {
        let mut last = self.last_down_log.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_none_or(|t| t.elapsed() >= DOWN_LOG_EVERY) {
            *last = Some(Instant::now());
            tracing::warn!("cluster: NATS is unavailable: {what}");
        }
    }

    /// Remember a table removal that failed, for the next recovery.
    pub fn removal_failed(&self, full: &str) {
        self.pending_removals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(full.to_string());
    }

    fn take_removals(&self) -> Vec<String> {
        self.pending_removals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .collect()
    }
}

/// Recover after each reconnect (see the module header); runs forever.
pub async fn recovery(server: Arc<Server>, c: Arc<NatsCluster>, node_ttl: Duration) {
    loop {
        c.link.recover.notified().await;
        // JetStream may need a moment after a NATS restart.
        let deadline = Instant::now() + node_ttl.max(Duration::from_secs(10)) * 4;
        loop {
            match republish(&server, &c, node_ttl).await {
                Ok(n) => {
                    tracing::info!(
                        "cluster: recovered after the NATS outage: heartbeat sent, {n} sessions re-published"
                    );
                    break;
                }
                Err(e) if Instant::now() > deadline => {
                    tracing::error!("cluster: recovering after the NATS outage: {e} (retried at the next reconnect)");
                    break;
                }
                Err(e) => {
                    tracing::debug!("cluster: recovering: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        // A sweep that read the live nodes before this node's heartbeat
        // came back may have removed entries after the re-publishing.
        tokio::time::sleep(node_ttl).await;
        if let Err(e) = republish(&server, &c, node_ttl).await {
            tracing::warn!("cluster: re-publishing sessions: {e}");
        }
    }
}

/// Buckets, heartbeat, this node's sessions, failed removals: the number
/// of sessions re-published.
async fn republish(server: &Server, c: &NatsCluster, node_ttl: Duration) -> Result<usize, String> {
    use crate::routes::Cluster;
    if c.leaving.load(Ordering::Relaxed) {
        // An orderly shutdown deleted the heartbeat: it stays deleted.
        return Ok(0);
    }
    let js = async_nats::jetstream::new(c.client.clone());
    super::bucket(&js, super::SESSIONS, Duration::ZERO).await?;
    super::bucket(&js, super::NODES, node_ttl).await?;
    super::bucket(&js, super::owners::BUCKET, Duration::ZERO).await?;
    c.nodes
        .put(super::table::node_key(&c.node), c.boot.clone().into())
        .await
        .map_err(|e| format!("heartbeat: {e}"))?;
    let sessions = server.sessions.all_sessions();
    for s in &sessions {
        if !c
            .record_checked(
                s.jid.as_str(),
                s.priority.load(Ordering::Relaxed),
                s.available.load(Ordering::Relaxed),
            )
            .await
        {
            return Err(format!("re-publishing {}", s.jid));
        }
    }
    super::owners::reclaim(server, c).await;
    for full in c.link.take_removals() {
        let gone = xep_support::jids::parse_full(&full)
            .is_none_or(|j| server.sessions.session(&j).is_none());
        if gone {
            c.remove(&full).await;
        }
    }
    Ok(sessions.len())
}
