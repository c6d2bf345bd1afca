//! One component connection: the XEP-0114 handshake, then a reader that
//! routes the component's stanzas and a writer task that drains its queue.
//! Until the handshake succeeds the stream reads under the listener's
//! pre-authentication stanza limit and within `negotiation_timeout`; a
//! stream error always follows our stream header.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use xep_support::element::{escape, Element, Node};
use xep_support::ns;
use xep_support::stanza::{Condition, StanzaError};

use super::NS_COMPONENT;
use crate::config::Listener;
use crate::routes::OwnerKind;
use crate::s2s::stream::{stream_id, Conn, Fail};
use crate::server::Server;
use crate::stream::StreamCondition;
use crate::xml::StreamEvent;

/// Time a new connection has for its header and handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// A component may stay silent this long between stanzas (it is waited for
/// again; the queue's writer notices dead peers on write).
const IDLE_WAIT: Duration = Duration::from_secs(3600);
/// A write that does not finish in this time means a dead or stuck component.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Serve one component connection until it ends.
pub async fn handle(server: Arc<Server>, sock: TcpStream, peer: SocketAddr, cfg: Arc<Listener>) {
    let deadline = server
        .config()
        .negotiation_timeout
        .map(|t| tokio::time::Instant::now() + t);
    let io = match crate::tls::accept_transport(
        server.live().tls_acceptor(false),
        sock,
        cfg.tls,
        HANDSHAKE_TIMEOUT,
    )
    .await
    {
        Ok(io) => {
            if cfg.tls {
                crate::metrics::tls_handshake("component", true);
            }
            io
        }
        Err(why) => return crate::conn_log::tls_failed("component", &peer, &why),
    };
    let mut conn = Conn::new(io, cfg.tls, cfg.pre_auth_limit());
    let (domain, conn_id, rx) = match handshake(&server, &mut conn, &cfg, deadline).await {
        Ok(x) => x,
        Err(Fail::Stream(cond, text)) => {
            conn.close_error("component", &peer, cond, text.as_deref())
                .await;
            return;
        }
        Err(e) => {
            tracing::info!(%peer, "component connection ended during the handshake: {e}");
            return;
        }
    };
    conn.set_max_stanza_size(cfg.max_stanza_size);
    crate::conn_log::bind(&domain);
    tracing::info!(%peer, %domain, "component connected");
    let cluster = server.routes.cluster().cloned();
    let Some((mut reader, writer)) = conn.into_parts() else {
        server.routes.unregister(&domain, conn_id);
        if let Some(c) = &cluster {
            let _ = c.claim(OwnerKind::Component, &domain, conn_id, false).await;
        }
        return;
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let writer = tokio::spawn(crate::conn_log::ConnLog::current().run(write_loop(
        server.clone(),
        writer,
        rx,
        stop_rx,
        peer,
    )));
    let end = loop {
        let event = match tokio::time::timeout(IDLE_WAIT, reader.next()).await {
            Err(_) => continue,
            Ok(Ok(ev)) => ev,
            Ok(Err(e)) => break Fail::from(e),
        };
        let el = match event {
            StreamEvent::Stanza(el) => el,
            StreamEvent::End => break Fail::Closed,
            StreamEvent::Header(_) => break Fail::Stream(StreamCondition::NotWellFormed, None),
        };
        if let Err(fail) = stanza(&server, &domain, el).await {
            break fail;
        }
    };
    tracing::info!(%peer, %domain, "component disconnected: {end}");
    let error = match end {
        Fail::Stream(c, text) => Some((c, text)),
        _ => None,
    };
    // Stop the writer (with the stream error) before the route goes away,
    // so the closing queue cannot end the stream first.
    let _ = stop_tx.send(error);
    server.routes.unregister(&domain, conn_id);
    if let Some(c) = &cluster {
        let _ = c.claim(OwnerKind::Component, &domain, conn_id, false).await;
    }
    let _ = writer.await;
}

/// Read the header, answer it, check `<handshake>`; claim the domain.
async fn handshake(
    server: &Server,
    conn: &mut Conn,
    cfg: &Listener,
    deadline: Option<tokio::time::Instant>,
) -> Result<(String, u64, mpsc::Receiver<Element>), Fail> {
    // Each read waits HANDSHAKE_TIMEOUT at most, and not past the deadline.
    let wait = || match deadline {
        Some(d) => HANDSHAKE_TIMEOUT.min(d.saturating_duration_since(tokio::time::Instant::now())),
        None => HANDSHAKE_TIMEOUT,
    };
    let id = stream_id();
    let our_header = |to: &str| {
        format!(
            "<?xml version='1.0'?><stream:stream xmlns='{NS_COMPONENT}' xmlns:stream='{}' from='{}' id='{id}'>",
            ns::STREAM,
            escape(to)
        )
    };
    let header = match conn.next(wait()).await {
        Ok(StreamEvent::Header(h)) => h,
        // A stream error goes after a stream header (RFC 6120 §4.9.1.1).
        Ok(_) => {
            conn.send(&our_header("")).await?;
            return Err(Fail::Stream(StreamCondition::NotWellFormed, None));
        }
        Err(e @ Fail::Stream(..)) => {
            conn.send(&our_header("")).await?;
            return Err(e);
        }
        Err(Fail::Timeout) => {
            conn.send(&our_header("")).await?;
            return Err(Fail::Stream(StreamCondition::ConnectionTimeout, None));
        }
        Err(e) => return Err(e),
    };
    let to = header.to.clone().unwrap_or_default().to_lowercase();
    conn.send(&our_header(&to)).await?;
    if !header.stream_ns_ok {
        return Err(Fail::Stream(StreamCondition::InvalidNamespace, None));
    }
    if header.default_ns != NS_COMPONENT {
        return Err(Fail::Stream(
            StreamCondition::InvalidNamespace,
            Some(format!("components use {NS_COMPONENT}")),
        ));
    }
    let Some(host) = cfg.service_hosts.iter().find(|h| h.domain == to) else {
        return Err(Fail::Stream(
            StreamCondition::HostUnknown,
            Some(format!("no component {to} is configured on this listener")),
        ));
    };
    let el = match conn.next(wait()).await {
        Err(Fail::Timeout) => return Err(Fail::Stream(StreamCondition::ConnectionTimeout, None)),
        other => other?,
    };
    let el = match el {
        StreamEvent::Stanza(el) => el,
        StreamEvent::End => return Err(Fail::Closed),
        StreamEvent::Header(_) => return Err(Fail::Stream(StreamCondition::NotWellFormed, None)),
    };
    if el.name != "handshake" {
        return Err(Fail::Stream(
            StreamCondition::NotAuthorized,
            Some("a component must send <handshake/> first".into()),
        ));
    }
    let expected = hex(&Sha1::digest(format!("{id}{}", host.password).as_bytes()));
    let given = el.text().trim().to_lowercase();
    if !bool::from(expected.as_bytes().ct_eq(given.as_bytes())) {
        return Err(Fail::Stream(
            StreamCondition::NotAuthorized,
            Some("wrong handshake".into()),
        ));
    }
    if server.serves(&to) {
        return Err(Fail::Stream(
            StreamCondition::Conflict,
            Some(format!("{to} is a host of this server")),
        ));
    }
    let Some((conn_id, rx)) = super::register(server, &to) else {
        return Err(Fail::Stream(
            StreamCondition::Conflict,
            Some(format!("a component for {to} is connected already")),
        ));
    };
    // The other nodes of a cluster forward the domain's stanzas here; one
    // connection per domain across the cluster.
    if let Some(c) = server.routes.cluster() {
        if let Err(node) = c.claim(OwnerKind::Component, &to, conn_id, true).await {
            server.routes.unregister(&to, conn_id);
            return Err(Fail::Stream(
                StreamCondition::Conflict,
                Some(format!(
                    "a component for {to} is connected already (to cluster node {node})"
                )),
            ));
        }
    }
    if let Err(e) = conn.send("<handshake/>").await {
        server.routes.unregister(&to, conn_id);
        if let Some(c) = server.routes.cluster() {
            let _ = c.claim(OwnerKind::Component, &to, conn_id, false).await;
        }
        return Err(e);
    }
    Ok((to, conn_id, rx))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A stanza from the component: check its addresses, then route it.
async fn stanza(server: &Server, domain: &str, mut el: Element) -> Result<(), Fail> {
    if !matches!(el.name.as_str(), "message" | "presence" | "iq") {
        return Err(Fail::Stream(StreamCondition::UnsupportedStanzaType, None));
    }
    let from = el.attr("from").map(jid::Jid::new);
    match from {
        Some(Ok(f)) if f.domain().as_str() == domain => {}
        Some(Ok(f)) => {
            return Err(Fail::Stream(
                StreamCondition::InvalidFrom,
                Some(format!("{f} is not at {domain}")),
            ))
        }
        _ => {
            return Err(Fail::Stream(
                StreamCondition::InvalidFrom,
                Some(format!("stanzas from a component need a from at {domain}")),
            ))
        }
    }
    match el.attr("to").map(jid::Jid::new) {
        Some(Ok(_)) => {}
        Some(Err(_)) => {
            crate::router::bounce(
                server,
                &to_client_ns(el),
                StanzaError::new(
                    xep_support::stanza::ErrorType::Modify,
                    Condition::JidMalformed,
                ),
            )
            .await;
            return Ok(());
        }
        None => {
            return Err(Fail::Stream(
                StreamCondition::ImproperAddressing,
                Some("stanzas from a component need a to".into()),
            ))
        }
    }
    el = to_client_ns(el);
    // Presence handling may route probes and answers back out: boxed.
    Box::pin(crate::router::route(server, el)).await;
    Ok(())
}

/// Inside the server every stanza is in `jabber:client`.
fn to_client_ns(mut el: Element) -> Element {
    fn walk(el: &mut Element) {
        if el.ns == NS_COMPONENT {
            el.ns = ns::CLIENT.to_string();
        }
        for child in el.children.iter_mut() {
            if let Node::Element(e) = child {
                walk(e);
            }
        }
    }
    walk(&mut el);
    el
}

/// Write queued stanzas until the queue closes or the reader stops; then
/// end the stream (with the reader's stream error, if any) and bounce what
/// is left in the queue.
async fn write_loop(
    server: Arc<Server>,
    mut w: tokio::io::WriteHalf<crate::stream::BoxIo>,
    mut rx: mpsc::Receiver<Element>,
    mut stop: tokio::sync::oneshot::Receiver<Option<(StreamCondition, Option<String>)>>,
    peer: SocketAddr,
) {
    let mut buf = String::new();
    let error = loop {
        let el = tokio::select! {
            biased;
            c = &mut stop => break c.ok().flatten(),
            el = rx.recv() => match el {
                Some(el) => el,
                None => break None,
            },
        };
        buf.clear();
        el.write_to(&mut buf, NS_COMPONENT);
        while buf.len() < 16 * 1024 {
            match rx.try_recv() {
                Ok(el) => el.write_to(&mut buf, NS_COMPONENT),
                Err(_) => break,
            }
        }
        let ok = tokio::time::timeout(WRITE_TIMEOUT, async {
            w.write_all(buf.as_bytes()).await?;
            w.flush().await
        })
        .await;
        if !matches!(ok, Ok(Ok(()))) {
            break None;
        }
    };
    let tail = match error {
        Some((condition, text)) => {
            crate::conn_log::stream_error("component", &peer, condition, text.as_deref())
        }
        _ => "</stream:stream>".to_string(),
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = w.write_all(tail.as_bytes()).await;
        let _ = w.shutdown().await;
    })
    .await;
    // Stanzas that never reached the component go back to their senders.
    rx.close();
    while let Ok(el) = rx.try_recv() {
        crate::router::bounce(&server, &el, StanzaError::service_unavailable()).await;
    }
}
