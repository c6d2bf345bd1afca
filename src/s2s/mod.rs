//! Server-to-server federation (RFC 6120 with `jabber:server` streams):
//! - [`incoming`]: streams other servers open to our `ejabberd_s2s_in` listener;
//! - [`outgoing`]: one connection per remote domain, queue, bounces;
//! - [`dialback`]: XEP-0220 keys and their verification;
//! - [`resolve`]: `s2s_hosts`, SRV (`_xmpps-server`, `_xmpp-server`), A/AAAA;
//! - [`tls`]: certificate trust (`s2s_cafile` or system roots), XEP-0178 checks;
//! - [`stream`]: what both directions share.

pub mod dialback;
pub mod incoming;
pub mod outgoing;
pub mod resolve;
pub mod stream;
pub mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use xep_support::element::Element;

use crate::server::Server;

/// What a resolver is built from.
type ResolverKey = (Vec<SocketAddr>, std::time::Duration, usize);

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
    pub out: outgoing::Manager,
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

    /// The DNS resolver for the current options: built on first use, and
    /// again when `reload_config` changed the DNS options (else its cache
    /// is kept).
    pub fn resolver(
        &self,
        opts: &crate::config::s2s::S2sOptions,
    ) -> Arc<hickory_resolver::TokioResolver> {
        let key = (opts.dns_servers.clone(), opts.dns_timeout, opts.dns_retries);
        let mut slot = self.resolver.lock().unwrap_or_else(|e| e.into_inner());
        match &*slot {
            Some((k, r)) if *k == key => r.clone(),
            _ => {
                let r = Arc::new(resolve::resolver(opts));
                *slot = Some((key, r.clone()));
                r
            }
        }
    }

    fn register_incoming(&self, peer: SocketAddr) -> u64 {
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

    fn update_incoming(&self, id: u64, info: ConnInfo) {
        self.incoming
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, info);
    }

    fn unregister_incoming(&self, id: u64) {
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
}

/// Route a stanza to a domain we do not serve. Its `from` must be on a
/// domain we serve (we never relay between remote servers).
pub async fn send(server: &Server, stanza: Element, remote: &str) {
    let local = stanza
        .attr("from")
        .and_then(|f| jid::Jid::new(f).ok())
        .map(|f| f.domain().as_str().to_string());
    match local {
        Some(local) if server.serves(&local) => {
            outgoing::send(server, &local, remote, stanza).await;
        }
        _ => tracing::debug!("s2s: not relaying a stanza from a remote domain to {remote}"),
    }
}
