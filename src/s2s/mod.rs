//! Server-to-server federation (RFC 6120 with `jabber:server` streams):
//! - [`incoming`]: streams other servers open to our `ejabberd_s2s_in` listener;
//! - [`outgoing`]: one connection per remote domain, queue, bounces;
//! - [`dialback`]: XEP-0220 keys and their verification;
//! - [`resolve`]: `s2s_hosts`, SRV (`_xmpps-server`, `_xmpp-server`), A/AAAA;
//! - [`stream`]: what both directions share.
//!
//! The connection tables (outgoing and incoming streams, the dialback
//! secret, the resolver cache) are shared state in [`crate::links`];
//! certificate trust and the XEP-0178 checks are in [`crate::tls::s2s`].

pub mod dialback;
pub mod incoming;
pub mod outgoing;
pub mod resolve;
pub mod stream;

use std::sync::{Arc, Weak};

use xep_support::element::Element;

pub use crate::links::{AuthMethod, ConnInfo};
use crate::routes::{Link, Sending};
use crate::server::Server;

/// The s2s manager as the route table's route for every domain not
/// configured here.
struct Federation(Weak<Server>);

impl Link for Federation {
    fn send<'a>(&'a self, stanza: Element, domain: &'a str) -> Sending<'a> {
        Box::pin(async move {
            if let Some(server) = self.0.upgrade() {
                send(&server, stanza, domain).await;
            }
            Ok(())
        })
    }
}

/// Register federation in `server`'s route table (once, at start-up).
pub fn register(server: &Arc<Server>) {
    server
        .routes
        .set_remote(Arc::new(Federation(Arc::downgrade(server))));
}

/// Route a stanza to a domain we do not serve. Its `from` must be on a
/// domain we speak for — a served host or a module's service domain, which
/// then has its own connections (`conference.HOST` -> remote), as in
/// Prosody and ejabberd — (we never relay between remote servers).
async fn send(server: &Server, stanza: Element, remote: &str) {
    let local = stanza
        .attr("from")
        .and_then(|f| jid::Jid::new(f).ok())
        .map(|f| f.domain().as_str().to_string());
    match local {
        Some(local) if server.speaks_for(&local) => {
            outgoing::send(server, &local, remote, stanza).await;
        }
        _ => tracing::debug!("s2s: not relaying a stanza from a remote domain to {remote}"),
    }
}
