//! One owner node per MUC room and per external component domain, in the
//! JetStream key-value bucket `rookery_owners`: key `r.` (room) or `c.`
//! (component) + the name in unpadded URL-safe base64, value `{n: node,
//! b: boot id, i: connection}`.
//!
//! - A room is claimed by the first node that gets a stanza for it
//!   (compare-and-set `create`); the other nodes forward its stanzas to
//!   that node (NATS request on `rookery.node.NODE`, answered once routed,
//!   as for sessions), which broadcasts to the occupants wherever they are.
//!   A claim whose node is dead (heartbeat gone or of another boot, or "no
//!   responders" on its subject) is taken over by the next node that gets
//!   a stanza for the room (compare-and-set on the claim's revision); that
//!   node loads the room from the shared database (persistent rooms) —
//!   the occupants the dead node held are gone and rejoin.
//! - A component domain is claimed by the node the component connected to
//!   (refused while another node holds it and answers: one connection per
//!   domain across the cluster, as on one node) and released when that
//!   connection ends (only if the claim is still that connection's). Other
//!   nodes forward its stanzas there; a dead node's claim counts as none
//!   and is deleted by the first node that reads it.
//!
//! Invariant: a node hands a stanza to another only while the claim names
//! that node; a node that owns a claim handles its stanzas itself and never
//! forwards them again (`router::route_forwarded`).

use async_nats::jetstream::kv::Operation;
use base64::Engine;
use serde::{Deserialize, Serialize};
use xep_support::element::Element;

use super::table::Held;
use super::NatsCluster;
use crate::routes::{Owned, OwnerKind};

/// The bucket of claims.
pub const BUCKET: &str = "rookery_owners";

/// One claim.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Claim {
    n: String,
    b: String,
    #[serde(default)]
    i: u64,
}

/// The key of a claim.
pub fn key(kind: OwnerKind, name: &str) -> String {
    let prefix = match kind {
        OwnerKind::Room => "r",
        OwnerKind::Component => "c",
    };
    format!(
        "{prefix}.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(name.as_bytes())
    )
}

fn mine(c: &NatsCluster, i: u64) -> Claim {
    Claim {
        n: c.node.clone(),
        b: c.boot.clone(),
        i,
    }
}

fn encode(claim: &Claim) -> Vec<u8> {
    serde_json::to_vec(claim).unwrap_or_default()
}

/// Hand `stanza` to the owner of `name` (see the file's header).
pub async fn to_owner(c: &NatsCluster, kind: OwnerKind, name: &str, stanza: &Element) -> Owned {
    if !c.up() {
        // NATS is down (`link.rs`): fail fast, as for sessions.
        return match kind {
            OwnerKind::Room => Owned::Here,
            OwnerKind::Component => Owned::Nobody,
        };
    }
    let key = key(kind, name);
    let payload = stanza.to_xml(xep_support::ns::CLIENT);
    for _ in 0..8 {
        let entry = match c.owners.entry(key.clone()).await {
            Ok(e) => e,
            Err(e) => {
                // NATS cannot say: a room is served here (better than not
                // at all), a component is unavailable.
                tracing::warn!("cluster: reading the owner of {name}: {e}");
                return match kind {
                    OwnerKind::Room => Owned::Here,
                    OwnerKind::Component => Owned::Nobody,
                };
            }
        };
        let current = entry
            .as_ref()
            .filter(|e| e.operation == Operation::Put)
            .and_then(|e| serde_json::from_slice::<Claim>(&e.value).ok());
        let revision = entry.as_ref().map(|e| e.revision);
        let Some(claim) = current else {
            if kind == OwnerKind::Component {
                return Owned::Nobody;
            }
            let made = match revision {
                // A deleted key: its tombstone's revision.
                Some(rev) => c
                    .owners
                    .update(key.clone(), encode(&mine(c, 0)).into(), rev)
                    .await
                    .is_ok(),
                None => c
                    .owners
                    .create(key.clone(), encode(&mine(c, 0)).into())
                    .await
                    .is_ok(),
            };
            if made {
                tracing::debug!("cluster: room {name} claimed by this node");
                return Owned::Claimed;
            }
            continue; // another node claimed it meanwhile
        };
        if claim.n == c.node && claim.b == c.boot {
            return Owned::Here;
        }
        let held = Held {
            n: claim.n.clone(),
            b: claim.b.clone(),
            p: 0,
            a: true,
        };
        let dead = !c.is_live(&held).await;
        if !dead {
            match c
                .client
                .request(super::subject(&claim.n), payload.clone().into())
                .await
            {
                Ok(_) => return Owned::Taken,
                Err(e) if e.kind() == async_nats::client::RequestErrorKind::NoResponders => {}
                Err(e) => {
                    tracing::info!(
                        "cluster: node {} did not take a stanza for {name}: {e}",
                        claim.n
                    );
                    return Owned::Unreachable;
                }
            }
        }
        // The owner is gone: take the room over, forget the component.
        let Some(rev) = revision else { continue };
        match kind {
            OwnerKind::Room => {
                if c.owners
                    .update(key.clone(), encode(&mine(c, 0)).into(), rev)
                    .await
                    .is_ok()
                {
                    tracing::info!(
                        "cluster: room {name} taken over from node {} (gone)",
                        claim.n
                    );
                    return Owned::Claimed;
                }
            }
            OwnerKind::Component => {
                let _ = c
                    .owners
                    .delete_expect_revision(key.clone(), Some(rev))
                    .await;
                return Owned::Nobody;
            }
        }
    }
    tracing::warn!("cluster: the owner of {name} keeps changing; the stanza is refused");
    Owned::Unreachable
}

/// Claim `name` for connection `id` of this node (refused with the
/// holder's name while another node holds it and answers), or release
/// that connection's claim.
pub async fn claim(
    c: &NatsCluster,
    kind: OwnerKind,
    name: &str,
    id: u64,
    on: bool,
) -> Result<(), String> {
    let key = key(kind, name);
    for _ in 0..8 {
        let entry = match c.owners.entry(key.clone()).await {
            Ok(e) => e,
            Err(e) => {
                // NATS cannot say: served here (as without a cluster).
                tracing::error!("cluster: claiming {name}: {e}");
                return Ok(());
            }
        };
        let current = entry
            .as_ref()
            .filter(|e| e.operation == Operation::Put)
            .and_then(|e| serde_json::from_slice::<Claim>(&e.value).ok());
        let revision = entry.as_ref().map(|e| e.revision);
        if !on {
            if let (Some(claim), Some(rev)) = (current, revision) {
                if claim == mine(c, id) {
                    if let Err(e) = c.owners.delete_expect_revision(key, Some(rev)).await {
                        tracing::info!("cluster: releasing {name}: {e}");
                    }
                }
            }
            return Ok(());
        }
        if let Some(claim) = &current {
            let other = claim.n != c.node || claim.b != c.boot;
            let held = Held {
                n: claim.n.clone(),
                b: claim.b.clone(),
                p: 0,
                a: true,
            };
            if other && c.is_live(&held).await && super::control::answers(c, &claim.n).await {
                return Err(claim.n.clone());
            }
        }
        // Free, of a dead node, or of this node's previous connection.
        let done = match revision {
            Some(rev) => c
                .owners
                .update(key.clone(), encode(&mine(c, id)).into(), rev)
                .await
                .is_ok(),
            None => c
                .owners
                .create(key.clone(), encode(&mine(c, id)).into())
                .await
                .is_ok(),
        };
        if done {
            return Ok(());
        }
    }
    tracing::warn!("cluster: the claim of {name} keeps changing; taken anyway");
    if let Err(e) = c.owners.put(key, encode(&mine(c, id)).into()).await {
        tracing::error!("cluster: claiming {name}: {e}");
    }
    Ok(())
}

/// Claim again the component domains connected here (NATS came back
/// without its store: `link.rs`). Rooms are claimed again by the next
/// stanza for them.
pub async fn reclaim(server: &crate::server::Server, c: &NatsCluster) {
    for domain in server.routes.linked() {
        let Some(id) = server.routes.link_id(&domain) else {
            continue;
        };
        if let Err(node) = claim(c, OwnerKind::Component, &domain, id, true).await {
            tracing::warn!(
                "cluster: component {domain} is connected here and to node {node}; that one keeps it"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_use_the_nats_alphabet_and_kinds_do_not_collide() {
        let k = key(OwnerKind::Room, "räume+x@conference.example.org");
        assert!(k
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)));
        assert_ne!(
            key(OwnerKind::Room, "a.example"),
            key(OwnerKind::Component, "a.example")
        );
    }
}
