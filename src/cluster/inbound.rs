//! Stanzas other nodes forward to this one (NATS request-reply on
//! `rookery.node.NODE`): each is routed to this node's own sessions by
//! `router::route_forwarded` (delivered, stored offline in the shared
//! database, or answered per RFC 6121 when the session is gone), and only
//! then answered, so the sending node keeps the stanza until it is
//! delivered or stored. Requests are handled concurrently; one sender's
//! stanzas stay in order because its node waits for each answer before
//! forwarding the next.
//!
//! Invariant: a forwarded stanza is never forwarded again (no loops
//! between nodes whose tables disagree for a moment).

use std::sync::Arc;

use futures_util::StreamExt;

use super::NatsCluster;
use crate::server::Server;

/// Subscribe to this node's subject and serve it until the connection ends.
pub async fn listen(server: Arc<Server>, cluster: Arc<NatsCluster>) -> Result<(), String> {
    let mut sub = cluster
        .client
        .subscribe(super::subject(&cluster.node))
        .await
        .map_err(|e| format!("cluster: subscribing: {e}"))?;
    tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            let server = server.clone();
            let client = cluster.client.clone();
            tokio::spawn(async move {
                let text = String::from_utf8_lossy(&msg.payload);
                match crate::storage::stanza_codec::parse_stanza(&text) {
                    Some(stanza) => crate::router::route_forwarded(&server, stanza).await,
                    None => tracing::warn!(
                        "cluster: a forwarded stanza that does not parse was dropped"
                    ),
                }
                if let Some(reply) = msg.reply {
                    if let Err(e) = client.publish(reply, "ok".into()).await {
                        tracing::warn!("cluster: answering a forwarded stanza: {e}");
                    }
                }
            });
        }
    });
    Ok(())
}
