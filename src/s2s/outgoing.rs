//! Outgoing s2s: one connection per (local domain, remote domain) pair,
//! shared by every local sender. A stanza for a domain without a connection
//! starts one; stanzas wait in its bounded queue ([`crate::links::OUT_QUEUE`]) while it
//! resolves, connects, secures (STARTTLS) and authenticates (SASL EXTERNAL,
//! else dialback). If that fails, every queued stanza is bounced to its
//! sender with `<remote-server-not-found/>` (or `<remote-server-timeout/>`
//! when it took longer than `outgoing_s2s_timeout`). An established
//! connection writes its queue in batches and closes after `s2s_timeout`
//! without traffic.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use xep_support::element::Element;
use xep_support::ns;
use xep_support::stanza::{Condition, ErrorType, StanzaError};

use super::resolve;
use super::stream::{db_xml, header_xml, Conn, Fail, NS_DIALBACK, NS_DIALBACK_FEATURE};
use super::AuthMethod;
use crate::config::S2sStartTls;
use crate::links::OutConn;
use crate::server::Server;
use crate::stream::BoxIo;
use crate::stream::StreamCondition;
use crate::xml::StreamEvent;

/// How long a sender waits for room in a full queue before the stanza bounces.
const SEND_WAIT: Duration = Duration::from_secs(5);
/// Bytes batched before a write.
const BATCH: usize = 16 * 1024;
/// Largest element a remote server may send on our outgoing streams (as the
/// s2s listener's default `max_stanza_size`).
const MAX_IN: Option<usize> = Some(524_288);

/// Send a stanza (its `from` on a domain we speak for: a served host or a
/// module service domain) to a remote domain.
pub async fn send(server: &Server, local: &str, remote: &str, stanza: Element) {
    let Some(arc) = server.arc() else {
        return; // shutting down
    };
    let mut stanza = Box::new(stanza);
    for _ in 0..2 {
        let conn = arc.s2s.out.get_or_start(local, remote, |conn, rx| {
            tokio::spawn(crate::conn_log::ConnLog::new("s2s-out").run(run(
                arc.clone(),
                conn,
                local.to_string(),
                remote.to_string(),
                rx,
            )));
        });
        match conn.tx.try_send(stanza) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(s)) => {
                match conn.tx.send_timeout(s, SEND_WAIT).await {
                    Ok(()) => return,
                    Err(mpsc::error::SendTimeoutError::Timeout(s)) => {
                        let err = StanzaError::new(ErrorType::Wait, Condition::ResourceConstraint);
                        crate::router::bounce(server, &s, err).await;
                        return;
                    }
                    Err(mpsc::error::SendTimeoutError::Closed(s)) => {
                        arc.s2s.out.remove(local, remote, conn.id);
                        stanza = s;
                    }
                }
            }
            Err(mpsc::error::TrySendError::Closed(s)) => {
                // That connection just ended: start a new one.
                arc.s2s.out.remove(local, remote, conn.id);
                stanza = s;
            }
        }
    }
    let err = StanzaError::new(ErrorType::Cancel, Condition::RemoteServerNotFound);
    crate::router::bounce(server, &stanza, err).await;
}

/// A stream opened to a remote server, before authentication.
pub struct Opened {
    pub conn: Conn,
    /// The stream ID the remote server gave.
    pub id: String,
    pub features: Element,
    /// Whether the remote's certificate verified for its domain.
    pub verified: bool,
    pub addr: SocketAddr,
    /// Whether we asked for a bidirectional stream (XEP-0288).
    pub bidi: bool,
}

async fn read_features(conn: &mut Conn, wait: Duration) -> Result<(String, Element), Fail> {
    let header = conn.next_header(wait).await?;
    if header.default_ns != ns::SERVER || !header.stream_ns_ok {
        return Err(Fail::Stream(StreamCondition::InvalidNamespace, None));
    }
    let id = header.id.unwrap_or_default();
    if header
        .version
        .as_deref()
        .is_none_or(|v| !v.starts_with('1'))
    {
        // A pre-1.0 server: no features; dialback only.
        return Ok((id, Element::new("features", ns::STREAM)));
    }
    let features = conn.next_element(wait).await?;
    if !features.is("features", ns::STREAM) {
        return Err(Fail::Stream(
            StreamCondition::NotWellFormed,
            Some("expected stream features".into()),
        ));
    }
    Ok((id, features))
}

/// Connect to `remote`'s server, open a stream from `local`, and use TLS as
/// `s2s_use_starttls` says. Used for connections and dialback checks.
pub async fn open(server: &Arc<Server>, local: &str, remote: &str) -> Result<Opened, Fail> {
    let config = server.config();
    let opts = &config.s2s;
    let wait = opts.connect_timeout;
    let key = (opts.dns_servers.clone(), opts.dns_timeout, opts.dns_retries);
    let resolver = server.s2s.resolver(key, || resolve::resolver(opts));
    let resolver = resolver.as_ref();
    let targets = resolve::targets(resolver, opts, remote)
        .await
        .map_err(Fail::Unreachable)?;
    let policy = server.config().s2s_use_starttls;
    let mut last = String::from("no address");
    for target in targets {
        if target.direct_tls && policy == S2sStartTls::Disabled {
            continue;
        }
        let (sock, addr) = match resolve::connect(resolver, opts, &target, wait).await {
            Ok(x) => x,
            Err(e) => {
                last = e;
                continue;
            }
        };
        let _ = sock.set_nodelay(true);
        let mut conn = if target.direct_tls {
            let connector = server.live().s2s_tls.connector(local, true);
            let name = match rustls::pki_types::ServerName::try_from(remote.to_string()) {
                Ok(n) => n,
                Err(_) => return Err(Fail::Unreachable(format!("{remote}: not a DNS name"))),
            };
            match tokio::time::timeout(wait, connector.connect(name, sock)).await {
                Ok(Ok(tls)) => {
                    let certs = super::stream::certs_of(tls.get_ref().1.peer_certificates());
                    let mut c = Conn::new(Box::new(tls) as BoxIo, true, MAX_IN);
                    c.peer_certs = certs;
                    c
                }
                _ => {
                    last = format!("{addr}: TLS handshake failed");
                    continue;
                }
            }
        } else {
            Conn::new(Box::new(sock) as BoxIo, false, MAX_IN)
        };
        match negotiate_tls(server, &mut conn, local, remote).await {
            Ok((id, features)) => {
                let verified = conn.tls && server.live().s2s_tls.verify(&conn.peer_certs, remote);
                return Ok(Opened {
                    conn,
                    id,
                    features,
                    verified,
                    addr,
                    bidi: false,
                });
            }
            Err(Fail::Timeout) => return Err(Fail::Timeout),
            Err(e) => {
                conn.close().await;
                last = format!("{addr}: {e}");
            }
        }
    }
    Err(Fail::Unreachable(format!("cannot reach {remote}: {last}")))
}

async fn negotiate_tls(
    server: &Arc<Server>,
    conn: &mut Conn,
    local: &str,
    remote: &str,
) -> Result<(String, Element), Fail> {
    let wait = server.config().s2s.connect_timeout;
    conn.send(&header_xml(local, Some(remote), None, true))
        .await?;
    let (id, features) = read_features(conn, wait).await?;
    if conn.tls {
        return Ok((id, features));
    }
    let policy = server.config().s2s_use_starttls;
    let offered = features.child("starttls", ns::TLS);
    let required_there = offered.is_some_and(|s| s.child("required", ns::TLS).is_some());
    let use_tls = offered.is_some() && (policy != S2sStartTls::Disabled || required_there);
    if !use_tls {
        if policy == S2sStartTls::Required {
            return Err(Fail::Unreachable(format!(
                "{remote} does not offer STARTTLS (s2s_use_starttls: required)"
            )));
        }
        return Ok((id, features));
    }
    conn.send(&format!("<starttls xmlns='{}'/>", ns::TLS))
        .await?;
    let answer = conn.next_element(wait).await?;
    if !answer.is("proceed", ns::TLS) {
        return Err(Fail::Unreachable(format!("{remote} refused STARTTLS")));
    }
    let io = conn.take_io("s2s out", &remote)?;
    let connector = server.live().s2s_tls.connector(local, false);
    let name = rustls::pki_types::ServerName::try_from(remote.to_string())
        .map_err(|_| Fail::Unreachable(format!("{remote}: not a DNS name")))?;
    let tls = match tokio::time::timeout(wait, connector.connect(name, io)).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => return Err(Fail::Unreachable(format!("TLS handshake: {e}"))),
        Err(_) => return Err(Fail::Timeout),
    };
    let certs = super::stream::certs_of(tls.get_ref().1.peer_certificates());
    conn.set_io(Box::new(tls), certs);
    conn.send(&header_xml(local, Some(remote), None, true))
        .await?;
    read_features(conn, wait).await
}

/// Authenticate an opened stream: SASL EXTERNAL when offered (our
/// certificate), else dialback if allowed.
async fn authenticate(
    server: &Arc<Server>,
    opened: &mut Opened,
    local: &str,
    remote: &str,
) -> Result<AuthMethod, Fail> {
    let opts = &server.config().s2s;
    let wait = opts.connect_timeout;
    if opts.secure_auth && !opened.verified {
        return Err(Fail::Unreachable(format!(
            "{remote}'s certificate does not verify (s2s_secure_auth)"
        )));
    }
    let conn = &mut opened.conn;
    if opts.bidi
        && opened
            .features
            .child("bidi", super::stream::NS_BIDI_FEATURE)
            .is_some()
    {
        // XEP-0288: asked before authenticating; the peer may then send
        // its stanzas for us on this stream.
        conn.send(&format!("<bidi xmlns='{}'/>", super::stream::NS_BIDI))
            .await?;
        opened.bidi = true;
    }
    let external = conn.tls
        && opened
            .features
            .child("mechanisms", ns::SASL)
            .is_some_and(|m| {
                m.child_elements()
                    .any(|c| c.name == "mechanism" && c.text().trim() == "EXTERNAL")
            });
    if external {
        let authzid = base64::engine::general_purpose::STANDARD.encode(local);
        conn.send(&format!(
            "<auth xmlns='{}' mechanism='EXTERNAL'>{authzid}</auth>",
            ns::SASL
        ))
        .await?;
        let answer = conn.next_element(wait).await?;
        if answer.is("success", ns::SASL) {
            conn.restart();
            conn.send(&header_xml(local, Some(remote), None, true))
                .await?;
            let (id, features) = read_features(conn, wait).await?;
            opened.id = id;
            opened.features = features;
            return Ok(AuthMethod::External);
        }
        tracing::info!("s2s {local} -> {remote}: SASL EXTERNAL refused; trying dialback");
    }
    if !opts.dialback || opts.secure_auth {
        return Err(Fail::Unreachable(format!(
            "{remote} does not accept our certificate and dialback is disabled"
        )));
    }
    let _offered = opened
        .features
        .child("dialback", NS_DIALBACK_FEATURE)
        .is_some();
    let k = super::dialback::key(&server.s2s.secret, remote, local, &opened.id);
    conn.send(&db_xml("result", local, remote, None, None, &k))
        .await?;
    for _ in 0..16 {
        let el = conn.next_element(wait).await?;
        if el.name == "result" && el.ns == NS_DIALBACK {
            return match el.attr("type") {
                Some("valid") => Ok(AuthMethod::Dialback),
                other => Err(Fail::Unreachable(format!(
                    "{remote} refused dialback ({})",
                    other.unwrap_or("no type")
                ))),
            };
        }
    }
    Err(Fail::Unreachable("no dialback answer".into()))
}

async fn establish(
    server: &Arc<Server>,
    conn_entry: &OutConn,
    local: &str,
    remote: &str,
) -> Result<Conn, Fail> {
    let mut opened = open(server, local, remote).await?;
    let auth = match authenticate(server, &mut opened, local, remote).await {
        Ok(a) => a,
        Err(e) => {
            opened.conn.close().await;
            return Err(e);
        }
    };
    let mut info = conn_entry.info.lock().unwrap_or_else(|e| e.into_inner());
    info.auth = auth;
    info.tls = opened.conn.tls;
    info.peer = Some(opened.addr);
    info.bidi = opened.bidi;
    Ok(opened.conn)
}

async fn run(
    server: Arc<Server>,
    entry: Arc<OutConn>,
    local: String,
    remote: String,
    mut rx: mpsc::Receiver<Box<Element>>,
) {
    crate::conn_log::bind(&remote);
    let timeout = server.config().s2s.connect_timeout;
    let mut shutdown = server.shutdown_signal();
    let result = tokio::select! {
        r = tokio::time::timeout(timeout, establish(&server, &entry, &local, &remote)) => r,
        _ = shutdown.wait_for(|v| *v) => Ok(Err(Fail::Unreachable("shutting down".into()))),
    };
    let condition = match result {
        Ok(Ok(conn)) => {
            tracing::info!(
                "s2s {local} -> {remote}: connected ({})",
                entry
                    .info
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .auth
                    .as_str()
            );
            let bidi = entry.info.lock().unwrap_or_else(|e| e.into_inner()).bidi;
            pump(&server, conn, &mut rx, &local, &remote, bidi).await;
            Condition::RemoteServerNotFound
        }
        Ok(Err(Fail::Timeout)) | Err(_) => {
            tracing::info!("s2s {local} -> {remote}: timed out");
            Condition::RemoteServerTimeout
        }
        Ok(Err(e)) => {
            tracing::info!("s2s {local} -> {remote}: {e}");
            Condition::RemoteServerNotFound
        }
    };
    server.s2s.out.remove(&local, &remote, entry.id);
    rx.close();
    let mut n = 0;
    while let Ok(stanza) = rx.try_recv() {
        n += 1;
        crate::router::bounce(
            &server,
            &stanza,
            StanzaError::new(ErrorType::Cancel, condition),
        )
        .await;
    }
    if n > 0 {
        tracing::info!("s2s {local} -> {remote}: bounced {n} stanzas ({condition})");
    }
}

/// Write queued stanzas until the stream ends, stays idle, or the server stops.
async fn pump(
    server: &Arc<Server>,
    conn: Conn,
    rx: &mut mpsc::Receiver<Box<Element>>,
    local: &str,
    remote: &str,
    bidi: bool,
) {
    let Some((mut reader, mut writer)) = conn.into_parts() else {
        return;
    };
    let idle = server.config().s2s.idle_timeout;
    // The reader runs apart: parsing is not cancel-safe. The peer sends
    // whitespace keep-alives or the stream's end on this stream, and on a
    // bidirectional one (XEP-0288) its stanzas for us.
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel::<()>();
    let (l, r) = (local.to_string(), remote.to_string());
    let srv = server.clone();
    let reader_task = tokio::spawn(crate::conn_log::ConnLog::current().run(async move {
        loop {
            match reader.next().await {
                Ok(StreamEvent::Stanza(el))
                    if bidi
                        && el.ns == ns::SERVER
                        && matches!(el.name.as_str(), "message" | "presence" | "iq") =>
                {
                    if let Err(why) = bidi_stanza(&srv, el, &l, &r).await {
                        tracing::info!("s2s {l} -> {r}: closing: {why}");
                        break;
                    }
                }
                Ok(StreamEvent::Stanza(el)) => {
                    tracing::debug!(
                        "s2s {l} -> {r}: ignoring <{}/> on an outgoing stream",
                        el.name
                    );
                }
                _ => break,
            }
        }
        let _ = done_tx.send(());
    }));
    let mut shutdown = server.shutdown_signal();
    let mut buf = String::new();
    let mut shutting_down = false;
    loop {
        let first = tokio::select! {
            s = rx.recv() => s,
            _ = &mut done_rx => None,
            _ = tokio::time::sleep(idle) => None,
            _ = shutdown.wait_for(|v| *v) => { shutting_down = true; None }
        };
        let Some(first) = first else { break };
        first.write_to(&mut buf, ns::SERVER);
        let mut batch = vec![first];
        while buf.len() < BATCH {
            match rx.try_recv() {
                Ok(s) => {
                    s.write_to(&mut buf, ns::SERVER);
                    batch.push(s);
                }
                Err(_) => break,
            }
        }
        let ok = tokio::time::timeout(super::stream::WRITE_TIMEOUT, async {
            writer.write_all(buf.as_bytes()).await?;
            writer.flush().await
        })
        .await;
        buf = String::new();
        if !matches!(ok, Ok(Ok(()))) {
            // The batch may not have reached the peer: its senders learn it.
            tracing::info!(
                "s2s {local} -> {remote}: write failed; bouncing {} stanzas",
                batch.len()
            );
            for s in batch {
                let err = StanzaError::new(ErrorType::Cancel, Condition::RemoteServerNotFound);
                crate::router::bounce(server, &s, err).await;
            }
            break;
        }
    }
    let tail = if shutting_down {
        let peer = format!("{local} -> {remote}");
        crate::conn_log::stream_error("s2s out", &peer, StreamCondition::SystemShutdown, None)
    } else {
        "</stream:stream>".to_string()
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        writer.write_all(tail.as_bytes()).await?;
        writer.shutdown().await
    })
    .await;
    let _ = tokio::time::timeout(Duration::from_secs(2), reader_task).await;
}

/// A stanza the peer sent on our bidirectional outgoing stream: it must
/// come from the domain we connected to (authenticated by its certificate,
/// or by DNS as in dialback) and go to our domain of this stream.
async fn bidi_stanza(
    server: &Arc<Server>,
    mut el: Element,
    local: &str,
    remote: &str,
) -> Result<(), String> {
    let from = el
        .attr("from")
        .and_then(|f| jid::Jid::new(f).ok())
        .ok_or("a stanza without a valid from")?;
    let to = el
        .attr("to")
        .and_then(|t| jid::Jid::new(t).ok())
        .ok_or("a stanza without a valid to")?;
    if from.domain().as_str() != remote {
        return Err(format!("a stanza from {} (invalid-from)", from.domain()));
    }
    if to.domain().as_str() != local {
        return Err(format!("a stanza to {} (host-unknown)", to.domain()));
    }
    super::stream::to_client_ns(&mut el);
    Box::pin(crate::router::route(server, el)).await;
    Ok(())
}
