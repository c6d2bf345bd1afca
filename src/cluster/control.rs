//! Session commands across nodes (`rookery ctl kick_user`, `kick_session`,
//! `connected_users_info` / `user_sessions_info`, `leave_cluster NODE`): the node where the command runs asks the others
//! on `rookery.ctl.NODE` (request-reply, JSON: the command's name and
//! arguments) and each carries it out on its own sessions and answers.
//!
//! Invariant: a command received here acts on this node only (it is never
//! asked of other nodes again), and only the commands below are accepted.

use std::sync::Arc;

use futures_util::StreamExt;

use super::NatsCluster;
use crate::server::Server;
use crate::stream::StreamCondition;

fn subject(node: &str) -> String {
    format!("rookery.ctl.{node}")
}

/// Whether `node` answers on its subject now (no answer in time, or *no
/// responders*: its connection to NATS is gone).
pub async fn answers(c: &NatsCluster, node: &str) -> bool {
    let payload = serde_json::to_vec(&["ping"]).unwrap_or_default();
    c.client
        .request(subject(node), payload.into())
        .await
        .is_ok()
}

/// Ask the other live nodes (or, for `leave_cluster NODE`, that node) to
/// run `command`; (node, answer) for each that answered.
pub async fn ask_others(
    c: &NatsCluster,
    command: &[String],
) -> Result<Vec<(String, String)>, String> {
    if !c.up() {
        return Err("NATS is down".into());
    }
    let mut nodes: Vec<String> = c.live_nodes().await?.into_keys().collect();
    nodes.retain(|n| *n != c.node);
    if let (Some("leave_cluster"), Some(target)) =
        (command.first().map(String::as_str), command.get(1))
    {
        nodes.retain(|n| n == target);
        if nodes.is_empty() {
            return Err(format!("no live node {target} in this cluster"));
        }
    }
    nodes.sort();
    let payload = serde_json::to_vec(command).unwrap_or_default();
    let mut out = Vec::new();
    for node in nodes {
        match c
            .client
            .request(subject(&node), payload.clone().into())
            .await
        {
            Ok(reply) => out.push((node, String::from_utf8_lossy(&reply.payload).into_owned())),
            Err(e) => tracing::warn!("cluster: node {node} did not answer a command: {e}"),
        }
    }
    Ok(out)
}

/// Serve this node's subject until the connection ends.
pub async fn listen(server: Arc<Server>, cluster: Arc<NatsCluster>) -> Result<(), String> {
    let mut sub = cluster
        .client
        .subscribe(subject(&cluster.node))
        .await
        .map_err(|e| format!("cluster: subscribing: {e}"))?;
    tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            let answer = match serde_json::from_slice::<Vec<String>>(&msg.payload) {
                Ok(command) => run(&server, &command),
                Err(_) => "unreadable command".to_string(),
            };
            if let Some(reply) = msg.reply {
                if let Err(e) = cluster.client.publish(reply, answer.into()).await {
                    tracing::warn!("cluster: answering a command: {e}");
                }
            }
        }
    });
    Ok(())
}

/// Carry out one command on this node's sessions; the answer.
fn run(server: &Server, command: &[String]) -> String {
    let names: Vec<&str> = command.iter().map(String::as_str).collect();
    match names.as_slice() {
        ["kick_user", user, host] => {
            let Ok(bare) = jid::BareJid::new(&format!("{user}@{host}")) else {
                return "0".into();
            };
            let sessions = server.sessions.sessions_of(&bare);
            for s in &sessions {
                s.close(Some(StreamCondition::NotAuthorized));
                server.sessions.unbind(s);
            }
            sessions.len().to_string()
        }
        ["kick_session", user, host, resource, reason] => {
            let Some(full) = jid::BareJid::new(&format!("{user}@{host}"))
                .ok()
                .and_then(|b| b.with_resource_str(resource).ok())
            else {
                return "0".into();
            };
            let Some(session) = server.sessions.session(&full) else {
                return "0".into();
            };
            tracing::info!("kicking {full} (asked by another node): {reason}");
            session.close(Some(StreamCondition::PolicyViolation));
            server.sessions.unbind(&session);
            "1".into()
        }
        // A liveness check (`owners.rs`): any answer means alive.
        ["ping"] => "pong".into(),
        ["sessions_info"] => {
            let rows: Vec<crate::session_info::SessionInfo> = server
                .sessions
                .all_sessions()
                .iter()
                .map(|s| crate::session_info::of(s, None))
                .collect();
            serde_json::to_string(&rows).unwrap_or_default()
        }
        ["leave_cluster", ..] => {
            tracing::info!("cluster: asked by another node to leave the cluster; stopping");
            server.begin_shutdown();
            "leaving".into()
        }
        _ => "unknown command".into(),
    }
}
