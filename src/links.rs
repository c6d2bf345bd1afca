//! The tables of the server's s2s links to other servers, as shared
//! state: s2s connections (outgoing, one per local/remote domain pair;
//! incoming streams, for `rookery ctl`), the dialback secret, the DNS
//! resolver cache. Data only: what a link does (connecting, authenticating,
//! reading, writing, bouncing) lives in `s2s/`, which reaches these tables
//! through `Server::s2s`. Connected components are routes: they register
//! in the route table (`routes.rs`).
//!
//! Invariants: at most one outgoing entry per (local, remote) pair; an
//! entry is removed only by the
//! connection that owns it (by id), so a connection that ended late cannot
//! remove its successor's entry. Every lock here is held for a table
//! operation only, never across an `.await`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use xep_support::element::Element;

/// Stanzas an outgoing s2s connection queues (while connecting, and while
/// its writer is busy).
pub const OUT_QUEUE: usize = 1024;

/// What a DNS resolver is built from (`s2s_dns_servers`, timeout, retries).
pub type ResolverKey = (Vec<SocketAddr>, Duration, usize);

/// How a peer (or we, on an outgoing stream) authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// Not yet.
    None,
    /// SASL EXTERNAL with a verified certificate (XEP-0178).
    External,
    /// Server dialback (XEP-0220).
    Dialback,
}

impl AuthMethod {
    pub fn as_str(&self) -> &'static str {
        match self {
            AuthMethod::None => "none",
            AuthMethod::External => "sasl-external",
            AuthMethod::Dialback => "dialback",
        }
    }
}

/// One s2s connection, for `rookery ctl`.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// Our domain.
    pub local: String,
    /// The remote domains (several on an incoming stream multiplexed by dialback).
    pub remote: Vec<String>,
    pub auth: AuthMethod,
    pub tls: bool,
    pub peer: Option<SocketAddr>,
    /// A bidirectional stream (XEP-0288): stanzas go both ways on it.
    pub bidi: bool,
}

impl ConnInfo {
    /// One line: `DIRECTION LOCAL REMOTE... AUTH tls|plain ADDRESS`, then
    /// `bidi` for a bidirectional stream.
    pub fn line(&self, direction: &str) -> String {
        format!(
            "{direction} {} {} {} {} {}{}",
            self.local,
            if self.remote.is_empty() {
                "-".to_string()
            } else {
                self.remote.join(",")
            },
            self.auth.as_str(),
            if self.tls { "tls" } else { "plain" },
            self.peer.map(|p| p.to_string()).unwrap_or_default(),
            if self.bidi { " bidi" } else { "" }
        )
    }
}

/// The s2s state of the server.
pub struct S2s {
    pub out: OutConns,
    /// The dialback secret (made once, kept in the database: keys issued
    /// before a restart still verify after it).
    pub secret: String,
    incoming: Mutex<HashMap<u64, ConnInfo>>,
    next_incoming: AtomicU64,
    /// The DNS resolver and the options it was built for.
    resolver: Mutex<Option<(ResolverKey, Arc<hickory_resolver::TokioResolver>)>>,
}

impl S2s {
    pub fn new(secret: String) -> S2s {
        S2s {
            out: Default::default(),
            secret,
            incoming: Mutex::new(HashMap::new()),
            next_incoming: AtomicU64::new(1),
            resolver: Mutex::new(None),
        }
    }

    /// The DNS resolver built for `key`: the cached one, or a new one from
    /// `build` when there is none or the options changed (else its cache
    /// is kept).
    pub fn resolver(
        &self,
        key: ResolverKey,
        build: impl FnOnce() -> hickory_resolver::TokioResolver,
    ) -> Arc<hickory_resolver::TokioResolver> {
        let mut slot = self.resolver.lock().unwrap_or_else(|e| e.into_inner());
        match &*slot {
            Some((k, r)) if *k == key => r.clone(),
            _ => {
                let r = Arc::new(build());
                *slot = Some((key, r.clone()));
                r
            }
        }
    }

    /// Note a new incoming stream from `peer`; returns its id.
    pub fn register_incoming(&self, peer: SocketAddr) -> u64 {
        let id = self.next_incoming.fetch_add(1, Ordering::Relaxed);
        let info = ConnInfo {
            local: String::new(),
            remote: Vec::new(),
            auth: AuthMethod::None,
            tls: false,
            peer: Some(peer),
            bidi: false,
        };
        self.incoming
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, info);
        id
    }

    pub fn update_incoming(&self, id: u64, info: ConnInfo) {
        self.incoming
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, info);
    }

    pub fn unregister_incoming(&self, id: u64) {
        self.incoming
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    /// Authenticated incoming streams.
    pub fn incoming_connections(&self) -> Vec<ConnInfo> {
        self.incoming
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|i| i.auth != AuthMethod::None)
            .cloned()
            .collect()
    }

    /// Authenticated outgoing streams.
    pub fn outgoing_connections(&self) -> Vec<ConnInfo> {
        self.out.established()
    }

    /// (negotiating, established) incoming streams, for `/metrics`.
    pub fn incoming_counts(&self) -> (usize, usize) {
        let t = self.incoming.lock().unwrap_or_else(|e| e.into_inner());
        let established = t.values().filter(|i| i.auth != AuthMethod::None).count();
        (t.len() - established, established)
    }

    /// (connecting, established) outgoing connections, for `/metrics`.
    pub fn outgoing_counts(&self) -> (usize, usize) {
        self.out.counts()
    }
}

static NEXT_OUT_ID: AtomicU64 = AtomicU64::new(1);

/// One outgoing connection as the table sees it.
pub struct OutConn {
    pub id: u64,
    pub tx: mpsc::Sender<Box<Element>>,
    pub info: Mutex<ConnInfo>,
    /// An incoming bidirectional stream lent for this direction (not a
    /// connection of ours: not counted as outgoing).
    lent: bool,
}

/// The table of outgoing connections, by (local domain, remote domain).
#[derive(Default)]
pub struct OutConns {
    conns: Mutex<HashMap<(String, String), Arc<OutConn>>>,
}

impl OutConns {
    /// Connections that are established (authenticated).
    pub fn established(&self) -> Vec<ConnInfo> {
        let t = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        t.values()
            .filter(|c| !c.lent)
            .map(|c| c.info.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .filter(|i| i.auth != AuthMethod::None)
            .collect()
    }

    /// (connecting, established) connections of ours (not lent streams).
    pub fn counts(&self) -> (usize, usize) {
        let t = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        let (mut connecting, mut established) = (0, 0);
        for c in t.values().filter(|c| !c.lent) {
            if c.info.lock().unwrap_or_else(|e| e.into_inner()).auth == AuthMethod::None {
                connecting += 1;
            } else {
                established += 1;
            }
        }
        (connecting, established)
    }

    /// The entry for `local` → `remote`; when there is none, a new one, and
    /// `start` is called with it and its queue's receiving end to start the
    /// connection that drains the queue (under the table's lock, so no
    /// second connection starts meanwhile).
    pub fn get_or_start(
        &self,
        local: &str,
        remote: &str,
        start: impl FnOnce(Arc<OutConn>, mpsc::Receiver<Box<Element>>),
    ) -> Arc<OutConn> {
        let mut t = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        let key = (local.to_string(), remote.to_string());
        if let Some(c) = t.get(&key) {
            return c.clone();
        }
        let (tx, rx) = mpsc::channel(OUT_QUEUE);
        let conn = Arc::new(OutConn {
            id: NEXT_OUT_ID.fetch_add(1, Ordering::Relaxed),
            tx,
            info: Mutex::new(ConnInfo {
                local: local.to_string(),
                remote: vec![remote.to_string()],
                auth: AuthMethod::None,
                tls: false,
                peer: None,
                bidi: false,
            }),
            lent: false,
        });
        t.insert(key, conn.clone());
        start(conn.clone(), rx);
        conn
    }

    /// Route stanzas from `local` to `remote` into `tx` (the writer of an
    /// incoming bidirectional stream), unless a connection for that pair
    /// exists already. Returns the entry's id (for [`OutConns::remove`]).
    pub fn lend(&self, local: &str, remote: &str, tx: mpsc::Sender<Box<Element>>) -> Option<u64> {
        let mut t = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        let key = (local.to_string(), remote.to_string());
        if t.contains_key(&key) {
            return None;
        }
        let id = NEXT_OUT_ID.fetch_add(1, Ordering::Relaxed);
        t.insert(
            key,
            Arc::new(OutConn {
                id,
                tx,
                info: Mutex::new(ConnInfo {
                    local: local.to_string(),
                    remote: vec![remote.to_string()],
                    auth: AuthMethod::None,
                    tls: true,
                    peer: None,
                    bidi: true,
                }),
                lent: true,
            }),
        );
        Some(id)
    }

    /// Remove the entry for `local` → `remote` if it is still entry `id`.
    pub fn remove(&self, local: &str, remote: &str, id: u64) {
        let mut t = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        let key = (local.to_string(), remote.to_string());
        if t.get(&key).is_some_and(|c| c.id == id) {
            t.remove(&key);
        }
    }
}
