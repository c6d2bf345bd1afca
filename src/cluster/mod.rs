//! Clustering over NATS (docs/architecture.md, "Cluster"): the nodes of a
//! cluster share one PostgreSQL database (`default_db: sql`) for
//! everything persistent, and one NATS server (or NATS cluster) for what
//! is transient:
//!
//! - the session table, in the JetStream key-value bucket
//!   `rookery_sessions` (one key per account, see `table.rs`), written by
//!   the node that holds a session at bind, presence change and end, and
//!   read by every node from its own in-memory copy fed by a watch of the
//!   bucket (`replica.rs`);
//! - node membership, in the bucket `rookery_nodes` whose entries expire
//!   after `node_ttl`: each node puts `n.NODE` = its boot id every
//!   `heartbeat`; a node whose key expired (or changed boot) is dead, and
//!   its sessions are removed from the table by any live node's sweeper in
//!   batches of [`SWEEP_BATCH`] keys;
//! - stanzas for a session on another node, as NATS request-reply on the
//!   subject `rookery.node.NODE` (`inbound.rs` answers): the sending node
//!   waits for the owner's answer, and on timeout or "no responders" the
//!   router handles the stanza as if the session were gone (a message is
//!   stored offline in the shared database; nothing is dropped);
//! - roster changes, to the other nodes holding sessions of the account
//!   (`rosters.rs`): they drop their cached copy and push the change.
//!
//! When NATS is down (`link.rs`) the node fails fast rather than waiting
//! on NATS timeouts: stanzas for other nodes' sessions are handled here
//! as if those sessions were gone (messages stored offline), and when it
//! is back the node re-publishes its sessions and heartbeat.
//!
//! The router reaches this through `routes::Cluster` (it names no
//! transport). Invariants: this node only ever writes its own sessions
//! (and removes dead nodes' ones); every table change is a compare-and-set
//! on the key's revision, retried, so concurrent writers of one account
//! never lose each other's resources.

pub mod control;
pub mod inbound;
pub mod link;
pub mod own;
pub mod owners;
pub mod peers;
pub mod replica;
pub mod rosters;
pub mod table;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{self, Operation};
use futures_util::StreamExt;
use xep_support::element::Element;

use crate::config::cluster::ClusterOptions;
use crate::routes::{ClusterFuture, RemoteResource};
use crate::server::Server;
use table::Held;

/// Session-table keys a sweeper reads before it pauses.
pub const SWEEP_BATCH: usize = 200;
/// The session table's bucket.
pub(crate) const SESSIONS: &str = "rookery_sessions";
/// The node heartbeats' bucket.
pub(crate) const NODES: &str = "rookery_nodes";
/// How long a node's liveness, once read, is believed.
const ALIVE_CACHE: Duration = Duration::from_millis(500);

/// This node's handle on the cluster.
pub struct NatsCluster {
    node: String,
    boot: String,
    client: async_nats::Client,
    sessions: kv::Store,
    nodes: kv::Store,
    /// Room and component owners (`owners.rs`).
    owners: kv::Store,
    /// Accounts of this node's sessions with resources elsewhere too.
    peers: peers::Peers,
    /// node → (when read, its boot id then).
    alive: Mutex<HashMap<String, (Instant, Option<String>)>>,
    /// Set by [`NatsCluster::leave`]: heartbeats stop.
    leaving: std::sync::atomic::AtomicBool,
    /// The connection's state and recovery (`link.rs`).
    link: Arc<link::Link>,
    /// The in-memory copy of the session table (`replica.rs`).
    replica: Arc<replica::Replica>,
}

/// The subject a node answers forwarded stanzas on.
pub fn subject(node: &str) -> String {
    format!("rookery.node.{node}")
}

pub(crate) async fn bucket(
    js: &async_nats::jetstream::Context,
    name: &str,
    max_age: Duration,
) -> Result<kv::Store, String> {
    // The stream a key-value bucket is, made directly: the client's
    // `create_key_value` first reads the account info in a shape NATS 2.9
    // (Debian 12's) does not send. Same settings as a KV bucket of history 1.
    use async_nats::jetstream::stream;
    let config = stream::Config {
        name: format!("KV_{name}"),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        max_age,
        max_bytes: -1,
        max_message_size: -1,
        storage: stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        num_replicas: 1,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    };
    if let Err(create) = js.get_or_create_stream(config).await {
        return Err(format!("NATS JetStream bucket {name}: {create}"));
    }
    js.get_key_value(name)
        .await
        .map_err(|e| format!("NATS JetStream bucket {name}: {e}"))
}

/// Connect to NATS, join the cluster (heartbeats, sweeper, the inbound
/// subscription) and return the handle the route table gets.
pub async fn start(server: Arc<Server>, o: &ClusterOptions) -> Result<Arc<NatsCluster>, String> {
    let link = link::Link::new();
    let events = (link.clone(), o.node.clone());
    let client = async_nats::ConnectOptions::new()
        .name(format!("rookery {}", o.node))
        .event_callback(move |e| {
            let (link, node) = events.clone();
            async move { link.event(&node, e) }
        })
        .request_timeout(Some(o.request_timeout))
        .connect(o.nats.as_slice())
        .await
        .map_err(|e| format!("cluster: connecting to NATS {}: {e}", o.nats.join(", ")))?;
    let js = async_nats::jetstream::new(client.clone());
    let sessions = bucket(&js, SESSIONS, Duration::ZERO).await?;
    let nodes = bucket(&js, NODES, o.node_ttl).await?;
    let owners = bucket(&js, owners::BUCKET, Duration::ZERO).await?;
    let boot = format!("{:016x}", rand::random::<u64>());
    // The node's number in the archive's message ids (their low 8 bits):
    // two live nodes must not share one.
    let number = node_number(&o.node);
    let live = live_nodes_of(&nodes).await?;
    if let Some(other) = live
        .keys()
        .find(|n| *n != &o.node && node_number(n) == number)
    {
        return Err(format!(
            "cluster: node names {} and {other} (alive) map to the same archive id number {number}; rename one of them",
            o.node
        ));
    }
    crate::storage::archive::set_node_number(number);
    if let Ok(Some(other)) = nodes.get(table::node_key(&o.node)).await {
        tracing::warn!(
            "cluster: node name {} had a heartbeat (boot {}) until recently: another node with the same name, or this node's previous run",
            o.node,
            String::from_utf8_lossy(&other)
        );
    }
    nodes
        .put(table::node_key(&o.node), boot.clone().into())
        .await
        .map_err(|e| format!("cluster: first heartbeat: {e}"))?;
    let cluster = Arc::new(NatsCluster {
        node: o.node.clone(),
        boot,
        client,
        sessions,
        nodes,
        owners,
        peers: peers::Peers::default(),
        alive: Mutex::new(HashMap::new()),
        leaving: std::sync::atomic::AtomicBool::new(false),
        link,
        replica: replica::Replica::new(),
    });
    tokio::spawn(replica::follow(cluster.clone()));
    inbound::listen(server.clone(), cluster.clone()).await?;
    own::listen(server.clone(), cluster.clone()).await?;
    control::listen(server.clone(), cluster.clone()).await?;
    rosters::start(server.clone(), cluster.clone()).await?;
    tokio::spawn(heartbeat(cluster.clone(), o.heartbeat));
    tokio::spawn(sweeper(cluster.clone(), o.node_ttl));
    tokio::spawn(link::recovery(server, cluster.clone(), o.node_ttl));
    tracing::info!(
        "cluster: node {} joined through NATS {}",
        o.node,
        o.nats.join(", ")
    );
    Ok(cluster)
}

/// A node's number, 0-255, from its name (FNV-1a).
pub fn node_number(name: &str) -> u8 {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    (h ^ (h >> 8) ^ (h >> 16) ^ (h >> 24)) as u8
}

async fn live_nodes_of(nodes: &kv::Store) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    let mut keys = nodes.keys().await.map_err(|e| e.to_string())?;
    while let Some(k) = keys.next().await {
        let k = k.map_err(|e| e.to_string())?;
        if let Some(n) = table::node_of_key(&k) {
            if let Ok(Some(b)) = nodes.get(k.clone()).await {
                out.insert(n.to_string(), String::from_utf8_lossy(&b).into_owned());
            }
        }
    }
    Ok(out)
}

async fn heartbeat(c: Arc<NatsCluster>, every: Duration) {
    let mut failing = false;
    loop {
        tokio::time::sleep(every).await;
        if c.leaving.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        if !c.up() {
            failing = true;
            continue;
        }
        match c
            .nodes
            .put(table::node_key(&c.node), c.boot.clone().into())
            .await
        {
            Ok(_) if failing => {
                tracing::info!("cluster: heartbeats go through again");
                failing = false;
                c.link.wake();
            }
            Ok(_) => {}
            Err(e) if !failing => {
                tracing::error!("cluster: heartbeat failed: {e} (other nodes will count this one dead after node_ttl)");
                failing = true;
            }
            Err(_) => {}
        }
    }
}

impl NatsCluster {
    /// Whether the connection to NATS is up now: when it is not, callers
    /// fail fast instead of waiting for NATS timeouts.
    pub fn up(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Write this node's session `full` to the table; whether it is there.
    pub(crate) async fn record_checked(&self, full: &str, priority: i32, available: bool) -> bool {
        let Some((bare, resource)) = split(full) else {
            return true;
        };
        let held = Held {
            n: self.node.clone(),
            b: self.boot.clone(),
            p: priority,
            a: available,
        };
        self.change(bare, |r| {
            if r.get(resource) == Some(&held) {
                return false;
            }
            r.insert(resource.to_string(), held.clone());
            true
        })
        .await
    }

    /// Leave the cluster (orderly shutdown): the heartbeat key goes, so the
    /// other nodes count this one dead now rather than after `node_ttl`;
    /// the sessions' entries go as the sessions end.
    pub async fn leave(&self) {
        self.leaving
            .store(true, std::sync::atomic::Ordering::Relaxed);
        if let Err(e) = self.nodes.delete(table::node_key(&self.node)).await {
            tracing::warn!("cluster: leaving: {e}");
        }
        let _ = self.client.flush().await;
        tracing::info!("cluster: node {} left", self.node);
    }

    /// The live nodes: name → boot id, from the heartbeat bucket.
    pub async fn live_nodes(&self) -> Result<HashMap<String, String>, String> {
        live_nodes_of(&self.nodes).await
    }

    /// Whether the session `h` points at is on a live node.
    async fn is_live(&self, h: &Held) -> bool {
        if let Some((at, boot)) = self
            .alive
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&h.n)
        {
            if at.elapsed() < ALIVE_CACHE {
                return boot.as_deref() == Some(h.b.as_str());
            }
        }
        let boot = match self.nodes.get(table::node_key(&h.n)).await {
            Ok(v) => v.map(|b| String::from_utf8_lossy(&b).into_owned()),
            // NATS cannot say: believe the table.
            Err(_) => return true,
        };
        let live = boot.as_deref() == Some(h.b.as_str());
        self.alive
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(h.n.clone(), (Instant::now(), boot));
        live
    }

    /// Change an account's entry with `f` (compare-and-set, retried);
    /// `false` when it could not be written (NATS down, contention).
    async fn change(&self, bare: &str, f: impl Fn(&mut table::Resources) -> bool) -> bool {
        if !self.up() {
            self.link
                .note_down("session table writes are skipped until it is back");
            return false;
        }
        let key = table::key(bare);
        for _ in 0..16 {
            let (mut r, revision) = match self.sessions.entry(key.clone()).await {
                Ok(Some(e)) if e.operation == Operation::Put => {
                    (table::decode(&e.value), Some(e.revision))
                }
                Ok(Some(e)) => (table::Resources::new(), Some(e.revision)),
                Ok(None) => (table::Resources::new(), None),
                Err(e) => {
                    tracing::error!("cluster: reading the session table for {bare}: {e}");
                    return false;
                }
            };
            if !f(&mut r) {
                return true;
            }
            let done = match (r.is_empty(), revision) {
                (true, Some(rev)) => self
                    .sessions
                    .delete_expect_revision(key.clone(), Some(rev))
                    .await
                    .map_err(|e| e.to_string()),
                (true, None) => return true,
                (false, Some(rev)) => self
                    .sessions
                    .update(key.clone(), table::encode(&r).into(), rev)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                (false, None) => self
                    .sessions
                    .create(key.clone(), table::encode(&r).into())
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            };
            match done {
                Ok(()) => return true,
                Err(e) => tracing::debug!("cluster: session table for {bare}: {e}; retrying"),
            }
        }
        tracing::error!(
            "cluster: could not update the session table for {bare} (too much contention)"
        );
        false
    }

    /// One sweep: remove the sessions of dead boots, [`SWEEP_BATCH`] keys
    /// at a time. Returns the number of resources removed.
    async fn sweep(&self) -> Result<(usize, usize), String> {
        let live = self.live_nodes().await?;
        let mut keys = self.sessions.keys().await.map_err(|e| e.to_string())?;
        let mut removed = 0;
        let mut batches = 1;
        let mut batch = Vec::new();
        while let Some(k) = keys.next().await {
            batch.push(k.map_err(|e| e.to_string())?);
            if batch.len() < SWEEP_BATCH {
                continue;
            }
            removed += self.sweep_batch(&live, std::mem::take(&mut batch)).await;
            batches += 1;
            // Bounded batches: the table's other users get their turn.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        removed += self.sweep_batch(&live, batch).await;
        Ok((removed, batches))
    }

    async fn sweep_batch(&self, live: &HashMap<String, String>, keys: Vec<String>) -> usize {
        let dead = |h: &Held| live.get(&h.n) != Some(&h.b);
        let mut removed = 0;
        for key in keys {
            let Ok(Some(e)) = self.sessions.entry(key.clone()).await else {
                continue;
            };
            if e.operation != Operation::Put {
                continue;
            }
            let mut r = table::decode(&e.value);
            let before = r.len();
            if !table::prune(&mut r, dead) {
                continue;
            }
            let result = if r.is_empty() {
                self.sessions
                    .delete_expect_revision(key.clone(), Some(e.revision))
                    .await
                    .map_err(|e| e.to_string())
            } else {
                self.sessions
                    .update(key.clone(), table::encode(&r).into(), e.revision)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            };
            // A conflict means the account changed meanwhile: next sweep.
            if result.is_ok() {
                removed += before - r.len();
            }
        }
        removed
    }
}

/// Sweep when the set of live boots lost a member since the last look
/// (and once at start: a previous run of any node may have left entries).
/// Not while NATS is down, nor within `node_ttl` of (re)connecting: the
/// live nodes need that long to put their heartbeats back after a NATS
/// outage, and would otherwise look dead.
async fn sweeper(c: Arc<NatsCluster>, node_ttl: Duration) {
    let mut known: Option<HashMap<String, String>> = None;
    loop {
        tokio::time::sleep(node_ttl / 2).await;
        if !c.up() || c.link.connected_for() < node_ttl {
            known = None;
            continue;
        }
        let Ok(live) = c.live_nodes().await else {
            continue;
        };
        let lost = match &known {
            None => true,
            Some(k) => k.iter().any(|(n, b)| live.get(n) != Some(b)),
        };
        known = Some(live);
        if !lost {
            continue;
        }
        match c.sweep().await {
            Ok((0, _)) => {}
            Ok((n, batches)) => tracing::info!(
                "cluster: removed {n} sessions of nodes that are gone ({batches} batches of at most {SWEEP_BATCH} keys)"
            ),
            Err(e) => {
                tracing::warn!("cluster: sweeping the session table: {e}");
                known = None;
            }
        }
    }
}

fn split(full: &str) -> Option<(&str, &str)> {
    full.split_once('/')
}

impl crate::routes::Cluster for NatsCluster {
    fn remote_resources<'a>(&'a self, bare: &'a str) -> ClusterFuture<'a, Vec<RemoteResource>> {
        Box::pin(async move {
            if !self.up() {
                self.link.unavailable(
                    "stanzas for sessions on other nodes are handled here (messages stored offline)",
                );
                return Vec::new();
            }
            // From the copy when it is current, else from the bucket.
            let r = match self.replica.lookup(bare) {
                Some(r) => r,
                None => match self.sessions.get(table::key(bare)).await {
                    Ok(Some(v)) => table::decode(&v).into_iter().collect(),
                    Ok(None) => return Vec::new(),
                    Err(e) => {
                        tracing::warn!("cluster: reading the session table for {bare}: {e}");
                        return Vec::new();
                    }
                },
            };
            let mut out = Vec::new();
            for (resource, h) in r {
                if h.n == self.node || !self.is_live(&h).await {
                    continue;
                }
                out.push(RemoteResource {
                    resource,
                    node: h.n,
                    priority: h.p,
                    available: h.a,
                });
            }
            out
        })
    }

    fn all_sessions(&self) -> ClusterFuture<'_, Result<Vec<String>, String>> {
        Box::pin(async move {
            if !self.up() {
                return Err("NATS is unavailable".to_string());
            }
            let live = self.live_nodes().await?;
            let mut keys = self.sessions.keys().await.map_err(|e| e.to_string())?;
            let mut out = Vec::new();
            while let Some(k) = keys.next().await {
                let k = k.map_err(|e| e.to_string())?;
                let Some(bare) = table::bare_of_key(&k) else {
                    continue;
                };
                let Ok(Some(v)) = self.sessions.get(k.clone()).await else {
                    continue;
                };
                for (resource, h) in table::decode(&v) {
                    if live.get(&h.n) == Some(&h.b) {
                        out.push(format!("{bare}/{resource}"));
                    }
                }
            }
            Ok(out)
        })
    }

    fn members(&self) -> ClusterFuture<'_, Result<Vec<String>, String>> {
        Box::pin(async move {
            if !self.up() {
                return Err("NATS is unavailable".to_string());
            }
            Ok(self.live_nodes().await?.into_keys().collect())
        })
    }

    fn forward<'a>(&'a self, node: &'a str, stanza: &'a Element) -> ClusterFuture<'a, bool> {
        Box::pin(async move {
            if !self.up() {
                self.link.unavailable("stanzas for sessions on other nodes are handled here (messages stored offline)");
                return false;
            }
            let payload = stanza.to_xml(xep_support::ns::CLIENT);
            match self.client.request(subject(node), payload.into()).await {
                Ok(_) => true,
                Err(e) => {
                    crate::metrics::cluster_forward_failed();
                    tracing::info!("cluster: node {node} did not take a {}: {e}", stanza.name);
                    false
                }
            }
        })
    }

    fn record<'a>(
        &'a self,
        full: &'a str,
        priority: i32,
        available: bool,
        at_bind: bool,
    ) -> ClusterFuture<'a, ()> {
        Box::pin(async move {
            let Some((bare, resource)) = split(full) else {
                return;
            };
            let held = Held {
                n: self.node.clone(),
                b: self.boot.clone(),
                p: priority,
                a: available,
            };
            let others = Mutex::new(Vec::new());
            self.change(bare, |r| {
                *others.lock().unwrap_or_else(|e| e.into_inner()) = own::other_nodes(self, r);
                match r.get(resource) {
                    Some(h) if h == &held => return false,
                    Some(h) if at_bind && h.n == held.n && h.b == held.b => return false,
                    _ => {}
                }
                r.insert(resource.to_string(), held.clone());
                true
            })
            .await;
            let others = others.into_inner().unwrap_or_else(|e| e.into_inner());
            own::recorded(self, bare, others).await;
        })
    }

    fn remove<'a>(&'a self, full: &'a str) -> ClusterFuture<'a, ()> {
        Box::pin(async move {
            let Some((bare, resource)) = split(full) else {
                return;
            };
            let after = Mutex::new(None);
            let done = self
                .change(bare, |r| {
                    let mine = r
                        .get(resource)
                        .is_some_and(|h| h.n == self.node && h.b == self.boot);
                    let others = own::other_nodes(self, r);
                    let still_here = r
                        .iter()
                        .any(|(res, h)| res != resource && h.n == self.node && h.b == self.boot);
                    *after.lock().unwrap_or_else(|e| e.into_inner()) = Some((others, still_here));
                    if mine {
                        r.remove(resource);
                    }
                    mine
                })
                .await;
            if let Some((others, false)) = after.into_inner().unwrap_or_else(|e| e.into_inner()) {
                own::ended(self, bare, others).await;
            }
            if !done {
                self.link.removal_failed(full);
            }
        })
    }

    fn to_own_resources<'a>(
        &'a self,
        bare: &'a str,
        event: crate::routes::OwnEvent<'a>,
    ) -> ClusterFuture<'a, Vec<Element>> {
        Box::pin(own::send(self, bare, event))
    }

    fn to_owner<'a>(
        &'a self,
        kind: crate::routes::OwnerKind,
        name: &'a str,
        stanza: &'a Element,
    ) -> ClusterFuture<'a, crate::routes::Owned> {
        Box::pin(owners::to_owner(self, kind, name, stanza))
    }

    fn claim<'a>(
        &'a self,
        kind: crate::routes::OwnerKind,
        name: &'a str,
        id: u64,
        on: bool,
    ) -> ClusterFuture<'a, Result<(), String>> {
        Box::pin(owners::claim(self, kind, name, id, on))
    }

    fn on_other_nodes<'a>(
        &'a self,
        command: &'a [String],
    ) -> ClusterFuture<'a, Result<Vec<(String, String)>, String>> {
        Box::pin(control::ask_others(self, command))
    }
}
