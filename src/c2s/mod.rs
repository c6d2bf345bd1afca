//! Client-to-server streams (RFC 6120): one task per connection walks the
//! negotiation — stream header, STARTTLS or direct TLS, SASL, stream
//! restart, resource binding — and then hands the bound stream to
//! [`session`], which reads stanzas while [`writer`] writes the session's
//! queue.

mod negotiation;
mod session;
mod writer;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::config::Listener;
use crate::server::Server;

/// A byte stream: TCP, or TLS over TCP.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// The transport of a connection, boxed so TCP and TLS share one type.
pub type BoxIo = Box<dyn Io>;

/// Serve one client connection until it ends.
pub async fn handle(
    server: Arc<Server>,
    sock: TcpStream,
    peer: SocketAddr,
    listener: Arc<Listener>,
) {
    // The negotiation's future (TLS handshake, SASL) is large; boxing it frees
    // that memory once the session is bound, instead of keeping the task sized
    // for it for the session's whole life.
    let negotiation = Box::pin(negotiation::negotiate(server.clone(), sock, peer, listener));
    if let Some(bound) = negotiation.await {
        // Boxed too: the task is then sized for neither phase, and the bound
        // session's future holds only what it uses (instead of also keeping
        // room for the `Bound` it was built from).
        Box::pin(session::run(server, bound)).await;
    }
}
