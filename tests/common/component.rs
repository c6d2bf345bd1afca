//! An XEP-0114 component connection for tests: the stream header and the
//! handshake against the server's `ejabberd_service` listener.

use sha1::{Digest, Sha1};

use super::client::{Client, StreamEvent};
use super::server::Server;

/// The address of the server's first `ejabberd_service` listener.
pub fn service_addr(server: &Server) -> std::net::SocketAddr {
    server
        .listeners
        .iter()
        .find(|l| l.module == "service")
        .expect("service listener")
        .addr
}

/// Open a component stream for `domain` and hand-shake with `secret`;
/// returns the client and what the server answered to the handshake.
pub async fn handshake(server: &Server, domain: &str, secret: &str) -> (Client, StreamEvent) {
    let mut c = Client::connect(service_addr(server)).await;
    c.send(&format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' to='{domain}'>"
    ))
    .await;
    let header = match c.recv_event().await {
        StreamEvent::Header(h) => h,
        other => panic!("no stream header: {other:?}"),
    };
    let id = header.attr("id").expect("stream id").to_string();
    let digest: String = Sha1::digest(format!("{id}{secret}").as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    c.send(&format!("<handshake>{digest}</handshake>")).await;
    let answer = c.recv_event().await;
    (c, answer)
}

/// A connected component for `domain` (panics if refused).
pub async fn connect(server: &Server, domain: &str, secret: &str) -> Client {
    match handshake(server, domain, secret).await {
        (c, StreamEvent::Stanza(e)) if e.name == "handshake" => c,
        (_, other) => panic!("component handshake refused: {other:?}"),
    }
}
