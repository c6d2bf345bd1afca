//! One session as the session listings show it (`rookery ctl
//! connected_users_info` / `user_sessions_info`, ejabberdctl's columns),
//! read from a session handle of this node; in a cluster the other nodes
//! send theirs in this shape (`cluster/control.rs`), so one function makes
//! every row.
//!
//! Invariant: reading a session takes its presence lock for one clone only.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use crate::sessions::SessionHandle;

/// One session, for `connected_users_info` and `user_sessions_info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// The full JID.
    pub jid: String,
    /// `c2s_tls` or `c2s`.
    pub connection: String,
    pub ip: String,
    pub port: u16,
    pub priority: i32,
    /// Seconds since the session was bound.
    pub uptime: u64,
    /// `available` (or the presence's `show`) or `unavailable`.
    pub status: String,
    pub status_text: String,
    /// The cluster node holding it (`None`: this machine, not clustered).
    #[serde(default)]
    pub node: Option<String>,
}

/// The row of session `s`, held by cluster node `node` (if clustered).
pub fn of(s: &SessionHandle, node: Option<&str>) -> SessionInfo {
    let (addr, tls) = s
        .origin
        .get()
        .copied()
        .unwrap_or((SocketAddr::from(([0, 0, 0, 0], 0)), false));
    let presence = s
        .last_presence
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let available = s.available.load(Ordering::Relaxed);
    let show = presence
        .as_ref()
        .and_then(|p| p.child("show", xep_support::ns::CLIENT).map(|e| e.text()));
    let text = presence
        .as_ref()
        .and_then(|p| p.child("status", xep_support::ns::CLIENT).map(|e| e.text()))
        .unwrap_or_default();
    SessionInfo {
        jid: s.jid.to_string(),
        connection: if tls { "c2s_tls" } else { "c2s" }.into(),
        ip: addr.ip().to_canonical().to_string(),
        port: addr.port(),
        priority: s.priority.load(Ordering::Relaxed),
        uptime: s.since.elapsed().as_secs(),
        status: match (available, show) {
            (false, _) => "unavailable".into(),
            (true, Some(show)) if !show.trim().is_empty() => show.trim().to_string(),
            (true, _) => "available".into(),
        },
        status_text: text,
        node: node.map(str::to_string),
    }
}
