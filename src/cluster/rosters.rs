//! Roster changes across nodes: each node caches the rosters of its own
//! sessions' accounts (`storage/roster_cache.rs`), so a change written
//! here (to the shared database) is told to every other node holding a
//! session of that account, on `rookery.roster.NODE`; that node drops its
//! cached copy and pushes the change to its interested sessions
//! (`im::roster::changed_elsewhere`). Fire-and-forget (NATS publish): a
//! node that misses one reloads the roster when the account's sessions
//! there end and start again.
//!
//! Invariant: changes of one account are sent in the order they were
//! written (one task sends them all).

use std::sync::Arc;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::NatsCluster;
use crate::routes::Cluster;
use crate::server::Server;

/// One roster change as sent between nodes.
#[derive(Serialize, Deserialize)]
struct Change {
    /// The account.
    b: String,
    /// The contact.
    c: String,
    /// The roster version after the change.
    v: u64,
    /// Removed (else added or changed).
    r: bool,
}

fn subject(node: &str) -> String {
    format!("rookery.roster.{node}")
}

/// Hook the roster cache's writes and serve this node's subject.
pub async fn start(server: Arc<Server>, cluster: Arc<NatsCluster>) -> Result<(), String> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Change>();
    server
        .rosters
        .on_change(Box::new(move |bare, contact, ver, removed| {
            let _ = tx.send(Change {
                b: bare.to_string(),
                c: contact.to_string(),
                v: ver,
                r: removed,
            });
        }));
    let c = cluster.clone();
    tokio::spawn(async move {
        while let Some(change) = rx.recv().await {
            let remote = c.remote_resources(&change.b).await;
            let mut nodes: Vec<&str> = remote.iter().map(|r| r.node.as_str()).collect();
            nodes.sort_unstable();
            nodes.dedup();
            let payload = serde_json::to_vec(&change).unwrap_or_default();
            for node in nodes {
                if let Err(e) = c
                    .client
                    .publish(subject(node), payload.clone().into())
                    .await
                {
                    tracing::warn!("cluster: telling {node} of a roster change: {e}");
                }
            }
        }
    });
    let mut sub = cluster
        .client
        .subscribe(subject(&cluster.node))
        .await
        .map_err(|e| format!("cluster: subscribing: {e}"))?;
    tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            let Ok(change) = serde_json::from_slice::<Change>(&msg.payload) else {
                tracing::warn!("cluster: an unreadable roster change was dropped");
                continue;
            };
            let Ok(bare) = jid::BareJid::new(&change.b) else {
                continue;
            };
            let out =
                crate::im::roster::changed_elsewhere(&server, &bare, &change.c, change.v, change.r);
            crate::router::perform(&server, out).await;
        }
    });
    Ok(())
}
