//! Client-to-server streams (RFC 6120): one task per connection walks the
//! negotiation — stream header, STARTTLS or direct TLS, SASL, stream
//! restart, resource binding — and then hands the bound stream to
//! [`session`], which reads stanzas while [`writer`] writes the session's
//! queue. [`framing`] is the seam to the transports: an RFC 6120 stream on
//! TCP (this module's listeners), RFC 7395 messages on a WebSocket
//! (`crate::http::ws`, which calls [`handle_websocket`]) or XEP-0206
//! messages in BOSH requests (`crate::http::bosh`, which calls
//! [`handle_bosh`]); everything else is the same code for all three.

mod cork;
pub mod framing;
mod negotiation;
mod session;
mod shared_wire;
mod sm;
mod writer;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;

use crate::config::Listener;
use crate::server::Server;

/// Serve one client connection until it ends.
///
/// The negotiation's future (TLS handshake, SASL) is large; boxing it frees
/// that memory once the session is bound, instead of keeping the task sized
/// for it for the session's whole life. The session's future is boxed too,
/// so the task is sized for neither phase. Both are built by plain
/// functions and joined by a combinator rather than an async fn: an async
/// fn keeps its arguments for its whole life and would hold the
/// negotiation's result (the 544-byte `Bound`) while the session runs.
pub fn handle(
    server: Arc<Server>,
    sock: TcpStream,
    peer: SocketAddr,
    listener: Arc<Listener>,
) -> impl std::future::Future<Output = ()> + Send {
    serve(server, negotiation::Conn::Tcp(sock), peer, listener)
}

/// Serve one RFC 7395 client connection until it ends: `io` carries the
/// WebSocket's text messages, each followed by
/// [`framing::MESSAGE_END`]; `secure` when it runs over TLS.
pub fn handle_websocket(
    server: Arc<Server>,
    io: crate::stream::BoxIo,
    secure: bool,
    peer: SocketAddr,
    listener: Arc<Listener>,
) -> impl std::future::Future<Output = ()> + Send {
    serve(
        server,
        negotiation::Conn::WebSocket { io, secure },
        peer,
        listener,
    )
}

/// What a message transport holds that its client never received: BOSH
/// messages written while no request was open to carry them. A session
/// that ends for good (not kept for a XEP-0198 resumption, and without
/// XEP-0198 counting, which keeps them as unacknowledged already) reroutes
/// them like the rest of its queue: messages to offline storage.
pub trait Undelivered: Send + Sync {
    /// The undelivered stanzas, oldest first; later calls give the rest.
    fn take(&self) -> Vec<xep_support::element::Element>;
}

/// Serve one XEP-0206 (BOSH) client session until it ends: `io` carries
/// the stanzas of its requests and takes what the responses carry, as
/// messages each followed by [`framing::MESSAGE_END`]; `secure` when the
/// HTTP listener is TLS.
pub fn handle_bosh(
    server: Arc<Server>,
    io: crate::stream::BoxIo,
    secure: bool,
    peer: SocketAddr,
    listener: Arc<Listener>,
    undelivered: Arc<dyn Undelivered>,
) -> impl std::future::Future<Output = ()> + Send {
    serve(
        server,
        negotiation::Conn::Bosh {
            io,
            secure,
            undelivered,
        },
        peer,
        listener,
    )
}

fn serve(
    server: Arc<Server>,
    conn: negotiation::Conn,
    peer: SocketAddr,
    listener: Arc<Listener>,
) -> impl std::future::Future<Output = ()> + Send {
    use crate::metrics::Transport;
    use futures_util::FutureExt;
    let for_session = server.clone();
    let transport = match (&conn, listener.tls) {
        (negotiation::Conn::WebSocket { .. }, _) => Transport::WebSocket,
        (negotiation::Conn::Bosh { .. }, _) => Transport::Bosh,
        (_, true) => Transport::Tls,
        (_, false) => Transport::Tcp,
    };
    boxed_negotiation(server, conn, peer, listener).then(move |bound| match bound {
        Some(bound) => boxed_session(for_session, bound, transport),
        None => Box::pin(std::future::ready(())),
    })
}

type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

fn boxed_negotiation(
    server: Arc<Server>,
    conn: negotiation::Conn,
    peer: SocketAddr,
    listener: Arc<Listener>,
) -> BoxFuture<Option<negotiation::Bound>> {
    Box::pin(negotiation::negotiate(server, conn, peer, listener))
}

/// The session, counted in `/metrics` for as long as it runs.
fn boxed_session(
    server: Arc<Server>,
    bound: negotiation::Bound,
    transport: crate::metrics::Transport,
) -> BoxFuture<()> {
    let gauge = crate::metrics::SessionGauge::new(transport);
    let run = session::run(server, Box::new(bound));
    Box::pin(async move {
        let _gauge = gauge;
        run.await
    })
}

/// Delete every XEP-0484 FAST token of `user@host` (`ctl kick_session`,
/// `kick_user`, `ban_account`); how many there were.
pub fn revoke_fast_tokens(server: &Server, user: &str, host: &str) -> usize {
    negotiation::fast::revoke_all(server, user, host)
}
