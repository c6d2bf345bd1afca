//! RFC 7395 WebSocket client connections on an `ejabberd_http` listener:
//! the HTTP upgrade (checks, then hyper's upgrade and tokio-tungstenite's
//! RFC 6455 framing) and [`WsIo`], the byte stream the one c2s code path
//! (`crate::c2s`, in `Framing::WebSocket`) runs on.
//!
//! [`WsIo`] reads: each text message must be one complete element that
//! declares its namespace; `<open/>` becomes a stream header for the XML
//! reader, `<close/>` the stream's end, other elements pass as they are.
//! A broken rule (binary message, two elements, an undeclared namespace,
//! a message over the listener's `max_stanza_size`, or over its
//! `pre_auth_max_stanza_size` until the stream restarts after SASL, the
//! limits the XML reader applies too) fails the read with a
//! [`TransportError`], which the c2s code sends as a stream error; the
//! WebSocket close frame then carries the matching close code.
//! [`WsIo`] writes: bytes up to each `MESSAGE_END` are one text message.
//! It pings a silent client every `websocket_ping_interval` and fails the
//! read after `websocket_timeout` without any message or pong.
//!
//! Invariants: only complete messages leave (a partial one waits for its
//! end); the upgrade is refused (4xx, with a text body saying why) without
//! the `xmpp` subprotocol or from an origin not in `websocket_origin` (and,
//! before it gets here, on a plain listener from an address neither
//! loopback nor in `trusted_proxies`: `super::proxy`).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use futures_util::{Sink, Stream};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use quick_xml::events::Event;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;
use xep_support::ns;

use super::{text, Body};
use crate::c2s::framing::{MESSAGE_END, NS_FRAMING};
use crate::config::Listener;
use crate::server::Server;
use crate::stream::{StreamCondition, TransportError};

/// The WebSocket subprotocol of RFC 7395.
pub const SUBPROTOCOL: &str = "xmpp";

/// Answer a request to a WebSocket path: refuse it (4xx) or switch
/// protocols and serve the client on the upgraded connection; `peer` is
/// the client's address (after `trusted_proxies`).
pub fn upgrade(
    server: &Arc<Server>,
    cfg: &Arc<Listener>,
    peer: SocketAddr,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let h = req.headers();
    let header = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
    let has_token = |name: &str, token: &str| {
        h.get_all(name).iter().any(|v| {
            v.to_str()
                .unwrap_or("")
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        })
    };
    if req.method() != hyper::Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "WebSocket upgrades use GET");
    }
    if !has_token("upgrade", "websocket") || !has_token("connection", "upgrade") {
        let mut r = text(
            StatusCode::UPGRADE_REQUIRED,
            "this is an XMPP WebSocket endpoint (RFC 7395): connect with a WebSocket client and the `xmpp` subprotocol",
        );
        r.headers_mut()
            .insert("upgrade", "websocket".parse().expect("header"));
        return r;
    }
    if header("sec-websocket-version") != "13" {
        let mut r = text(
            StatusCode::UPGRADE_REQUIRED,
            "WebSocket version 13 required",
        );
        r.headers_mut()
            .insert("sec-websocket-version", "13".parse().expect("header"));
        return r;
    }
    let key = header("sec-websocket-key").to_string();
    if key.is_empty() {
        return text(StatusCode::BAD_REQUEST, "Sec-WebSocket-Key missing");
    }
    if !has_token("sec-websocket-protocol", SUBPROTOCOL) {
        return text(
            StatusCode::BAD_REQUEST,
            "the `xmpp` WebSocket subprotocol is required (RFC 7395 §3.1)",
        );
    }
    let origins = &server.config().websocket.origins;
    let origin = header("origin").trim_end_matches('/');
    if !origins.is_empty() && !origins.iter().any(|o| o.eq_ignore_ascii_case(origin)) {
        tracing::info!(%peer, "WebSocket from origin {origin:?} refused (websocket_origin)");
        return text(
            StatusCode::FORBIDDEN,
            "origin not allowed (websocket_origin)",
        );
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    let (server, cfg) = (server.clone(), cfg.clone());
    let log = crate::conn_log::ConnLog::new("ws");
    tokio::spawn(log.run(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(%peer, "WebSocket upgrade failed: {e}");
                return;
            }
        };
        let io = WsIo::new(TokioIo::new(upgraded), &server, &cfg).await;
        crate::c2s::handle_websocket(server, Box::new(io), cfg.tls, peer, cfg).await;
    }));
    let mut r = Response::new(super::empty());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let hs = r.headers_mut();
    hs.insert("upgrade", "websocket".parse().expect("header"));
    hs.insert("connection", "Upgrade".parse().expect("header"));
    if let Ok(v) = tungstenite::handshake::derive_accept_key(key.as_bytes()).parse() {
        hs.insert("sec-websocket-accept", v);
    }
    hs.insert(
        "sec-websocket-protocol",
        SUBPROTOCOL.parse().expect("header"),
    );
    r
}

/// A rule of RFC 7395 a message broke.
#[derive(Debug, PartialEq, Eq)]
struct Violation {
    condition: StreamCondition,
    text: String,
    close: CloseCode,
}

impl Violation {
    fn new(condition: StreamCondition, text: impl Into<String>) -> Self {
        Violation {
            condition,
            text: text.into(),
            close: CloseCode::Policy,
        }
    }
}

/// A message's root element: offset, qualified name, attributes.
type Root = (usize, String, Vec<(String, String)>);

/// What an incoming text message gives the XML reader: the bytes of a
/// stream header (`<open/>`), of the stream's end (`<close/>`), or the
/// element itself; nothing for an empty (whitespace) message.
fn inbound(message: &str, max: Option<usize>) -> Result<Vec<u8>, Violation> {
    if max.is_some_and(|m| message.len() > m) {
        return Err(Violation {
            close: CloseCode::Size,
            ..Violation::new(
                StreamCondition::PolicyViolation,
                "message larger than the listener's max_stanza_size",
            )
        });
    }
    if message.trim().is_empty() {
        return Ok(Vec::new());
    }
    let not_well_formed = |why: String| Violation::new(StreamCondition::NotWellFormed, why);
    let mut reader = quick_xml::Reader::from_str(message);
    let mut depth = 0usize;
    // The root element: its offset, qualified name and attributes.
    let mut root: Option<Root> = None;
    let mut end = None;
    loop {
        let before = reader.buffer_position() as usize;
        let ev = reader
            .read_event()
            .map_err(|e| not_well_formed(format!("not well-formed: {e}")))?;
        match ev {
            Event::Start(ref s) | Event::Empty(ref s) => {
                if end.is_some() {
                    return Err(not_well_formed(
                        "one element per WebSocket message (RFC 7395 §3.3.3)".into(),
                    ));
                }
                if depth == 0 {
                    let name = String::from_utf8_lossy(s.name().as_ref()).into_owned();
                    let mut attrs = Vec::new();
                    for a in s.attributes() {
                        let a = a.map_err(|e| not_well_formed(format!("not well-formed: {e}")))?;
                        attrs.push((
                            String::from_utf8_lossy(a.key.as_ref()).into_owned(),
                            String::from_utf8_lossy(&a.value).into_owned(),
                        ));
                    }
                    root = Some((before, name, attrs));
                }
                if matches!(ev, Event::Start(_)) {
                    depth += 1;
                } else if depth == 0 {
                    end = Some(reader.buffer_position() as usize);
                }
            }
            Event::End(_) => {
                depth -= 1;
                if depth == 0 {
                    end = Some(reader.buffer_position() as usize);
                }
            }
            Event::Text(ref t) if depth == 0 && !t.iter().all(|b| b.is_ascii_whitespace()) => {
                return Err(not_well_formed("text outside the element".into()));
            }
            Event::Eof => break,
            _ => {}
        }
    }
    let (Some((start, name, attrs)), Some(end)) = (root, end) else {
        return Err(not_well_formed("an incomplete element".into()));
    };
    let (prefix, local) = match name.split_once(':') {
        Some((p, l)) => (Some(p), l),
        None => (None, name.as_str()),
    };
    let decl = match prefix {
        Some(p) => format!("xmlns:{p}"),
        None => "xmlns".into(),
    };
    let Some(namespace) = attrs.iter().find(|(k, _)| *k == decl).map(|(_, v)| v) else {
        return Err(Violation::new(
            StreamCondition::InvalidNamespace,
            "every WebSocket message must declare its namespace (RFC 7395 §3.3.3)",
        ));
    };
    match (local, namespace == NS_FRAMING) {
        ("open", true) => {
            let mut header = format!(
                "<stream:stream xmlns='{}' xmlns:stream='{}'",
                ns::CLIENT,
                ns::STREAM
            );
            for (k, v) in &attrs {
                if matches!(k.as_str(), "to" | "from" | "version" | "xml:lang" | "id") {
                    let q = if v.contains('\'') { '"' } else { '\'' };
                    header.push_str(&format!(" {k}={q}{v}{q}"));
                }
            }
            header.push('>');
            Ok(header.into_bytes())
        }
        ("close", true) => Ok(b"</stream:stream>".to_vec()),
        (_, true) => Err(Violation::new(
            StreamCondition::UnsupportedStanzaType,
            format!("unexpected <{local}/> in the framing namespace"),
        )),
        ("open" | "close", false) => Err(Violation::new(
            StreamCondition::InvalidNamespace,
            format!("<{local}/> must be in {NS_FRAMING} (RFC 7395 §3.3)"),
        )),
        _ => Ok(message.as_bytes()[start..end].to_vec()),
    }
}

type Upgraded = TokioIo<hyper::upgrade::Upgraded>;

/// An RFC 7395 WebSocket as the byte stream of a c2s connection.
pub struct WsIo<S = Upgraded> {
    ws: WebSocketStream<S>,
    /// Bytes of the last message read, not yet given to the reader.
    inbound: Vec<u8>,
    pos: usize,
    /// Bytes written, sent as a text message at each `MESSAGE_END`.
    outbound: Vec<u8>,
    max: Option<usize>,
    /// The limit until the stream restart after authentication (the
    /// second `<open/>`), as the XML reader applies it.
    pre_auth_max: Option<usize>,
    opens: u32,
    /// The close code for the close frame (a violation's, or normal).
    close_code: CloseCode,
    close_sent: bool,
    read_closed: bool,
    /// The broken rule, reported again by every later read (the reader
    /// may see a read error first while only waiting for data).
    failed: Option<(StreamCondition, String)>,
    ping_interval: Option<Duration>,
    timeout: Option<Duration>,
    last_heard: Instant,
    timer: Option<Pin<Box<Sleep>>>,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> WsIo<S> {
    /// Wrap an upgraded connection (the server's side of the WebSocket).
    pub async fn new(io: S, server: &Server, cfg: &Listener) -> Self {
        // tungstenite refuses what is far over the limit before buffering
        // it all; [`inbound`] applies the exact limit. With `infinity`,
        // tungstenite's own cap (64 MiB) stays. Its read buffer (allocated
        // for the connection's life) is 1 KiB instead of 128: an idle
        // session should cost little, and stanzas are small.
        let mut config = WebSocketConfig::default().read_buffer_size(1024);
        if let Some(m) = cfg.max_stanza_size {
            let cap = m.saturating_mul(2).max(64 * 1024);
            config = config.max_message_size(Some(cap)).max_frame_size(Some(cap));
        }
        let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
        let opts = &server.config().websocket;
        let mut io = Self::from_ws(ws, cfg.max_stanza_size, opts.ping_interval, opts.timeout);
        io.pre_auth_max = cfg.pre_auth_limit();
        io
    }

    fn from_ws(
        ws: WebSocketStream<S>,
        max: Option<usize>,
        ping_interval: Option<Duration>,
        timeout: Option<Duration>,
    ) -> Self {
        let first = [ping_interval, timeout].into_iter().flatten().min();
        WsIo {
            ws,
            inbound: Vec::new(),
            pos: 0,
            outbound: Vec::new(),
            max,
            pre_auth_max: max,
            opens: 0,
            close_code: CloseCode::Normal,
            close_sent: false,
            read_closed: false,
            failed: None,
            ping_interval,
            timeout,
            last_heard: Instant::now(),
            timer: first.map(|d| Box::pin(tokio::time::sleep(d))),
        }
    }

    /// The liveness timer fired: fail when the client was silent too
    /// long, else ping it (when it was silent a ping interval) and re-arm.
    fn on_timer(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let now = Instant::now();
        let silent = now - self.last_heard;
        if self.timeout.is_some_and(|t| silent >= t) {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "WebSocket client silent past websocket_timeout",
            ));
        }
        if let Some(every) = self.ping_interval {
            if silent >= every
                && Pin::new(&mut self.ws).poll_ready(cx).is_ready()
                && Pin::new(&mut self.ws)
                    .start_send(Message::Ping(Default::default()))
                    .is_ok()
            {
                let _ = Pin::new(&mut self.ws).poll_flush(cx);
            }
        }
        let next = [
            self.ping_interval.map(|p| now + p),
            self.timeout.map(|t| self.last_heard + t),
        ]
        .into_iter()
        .flatten()
        .min();
        if let (Some(timer), Some(next)) = (self.timer.as_mut(), next) {
            timer.as_mut().reset(next);
        }
        Ok(())
    }

    /// The size limit of the next message: before the stream's restart
    /// after authentication (a second `<open/>`: earlier, the c2s code
    /// refuses it) the pre-authentication one, as the XML reader's; checked
    /// here too so that the close code says "too big" (1009).
    fn limit(&self) -> Option<usize> {
        if self.opens >= 2 {
            self.max
        } else {
            self.pre_auth_max
        }
    }

    /// Send every complete message written so far.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(i) = memchr::memchr(MESSAGE_END as u8, &self.outbound) {
            ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(io::Error::other)?;
            let rest = self.outbound.split_off(i + 1);
            let mut message = std::mem::replace(&mut self.outbound, rest);
            message.pop();
            let text = String::from_utf8(message)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
            Pin::new(&mut self.ws)
                .start_send(Message::text(text))
                .map_err(io::Error::other)?;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> AsyncRead for WsIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some((condition, text)) = &this.failed {
            return Poll::Ready(Err(TransportError::io(*condition, text.clone())));
        }
        let result = this.read_message(cx, buf);
        if let Poll::Ready(Err(e)) = &result {
            if let Some(t) = e.get_ref().and_then(|e| e.downcast_ref::<TransportError>()) {
                this.failed = Some((t.condition, t.text.clone()));
            }
        }
        result
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> WsIo<S> {
    fn read_message(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self;
        loop {
            if this.pos < this.inbound.len() {
                let n = buf.remaining().min(this.inbound.len() - this.pos);
                buf.put_slice(&this.inbound[this.pos..this.pos + n]);
                this.pos += n;
                if this.pos == this.inbound.len() {
                    // Read whole: an idle session keeps no message buffer.
                    this.inbound = Vec::new();
                    this.pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.read_closed {
                return Poll::Ready(Ok(()));
            }
            if let Some(timer) = this.timer.as_mut() {
                if timer.as_mut().poll(cx).is_ready() {
                    this.on_timer(cx)?;
                    continue;
                }
            }
            let message = match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                None => {
                    this.read_closed = true;
                    continue;
                }
                Some(Ok(m)) => m,
                Some(Err(tungstenite::Error::Capacity(e))) => {
                    this.close_code = CloseCode::Size;
                    return Poll::Ready(Err(TransportError::io(
                        StreamCondition::PolicyViolation,
                        format!("WebSocket message too large: {e}"),
                    )));
                }
                Some(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
            };
            this.last_heard = Instant::now();
            match message {
                Message::Text(t) => match inbound(t.as_str(), this.limit()) {
                    Ok(bytes) => {
                        if bytes.starts_with(b"<stream:stream") {
                            this.opens += 1;
                        }
                        this.inbound = bytes;
                        this.pos = 0;
                    }
                    Err(v) => {
                        this.close_code = v.close;
                        return Poll::Ready(Err(TransportError::io(v.condition, v.text)));
                    }
                },
                Message::Binary(_) => {
                    this.close_code = CloseCode::Unsupported;
                    return Poll::Ready(Err(TransportError::io(
                        StreamCondition::UnsupportedFeature,
                        "binary WebSocket messages are not XMPP: text only (RFC 7395 §3.2)",
                    )));
                }
                Message::Close(_) => this.read_closed = true,
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> AsyncWrite for WsIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        this.outbound.extend_from_slice(buf);
        // Queue what is complete now; the flush waits for it to leave.
        let _ = this.poll_send(cx)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.ws)
            .poll_flush(cx)
            .map_err(io::Error::other)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        if !this.close_sent {
            ready!(Pin::new(&mut this.ws).poll_ready(cx)).map_err(io::Error::other)?;
            let frame = CloseFrame {
                code: this.close_code,
                reason: Default::default(),
            };
            // Fails only when the peer closed first (its close was answered).
            let _ = Pin::new(&mut this.ws).start_send(Message::Close(Some(frame)));
            this.close_sent = true;
        }
        match ready!(Pin::new(&mut this.ws).poll_close(cx)) {
            Ok(()) | Err(tungstenite::Error::ConnectionClosed) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(io::Error::other(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(r: Result<Vec<u8>, Violation>) -> StreamCondition {
        r.unwrap_err().condition
    }

    #[test]
    fn open_becomes_a_stream_header() {
        let h = inbound(
            &format!("<open xmlns='{NS_FRAMING}' to='a.example' version='1.0'/>"),
            None,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(h).unwrap(),
            format!(
                "<stream:stream xmlns='jabber:client' xmlns:stream='{}' to='a.example' version='1.0'>",
                ns::STREAM
            )
        );
        assert_eq!(
            inbound(&format!("<close xmlns=\"{NS_FRAMING}\" />"), None).unwrap(),
            b"</stream:stream>"
        );
    }

    #[test]
    fn one_declared_element_per_message() {
        let iq = "<iq xmlns='jabber:client' type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq>";
        assert_eq!(inbound(&format!("  {iq}\n"), None).unwrap(), iq.as_bytes());
        assert_eq!(
            cond(inbound(&format!("{iq}{iq}"), None)),
            StreamCondition::NotWellFormed
        );
        assert_eq!(
            cond(inbound("<iq type='get'/>", None)),
            StreamCondition::InvalidNamespace
        );
        assert_eq!(
            cond(inbound("<open xmlns='jabber:client' to='a'/>", None)),
            StreamCondition::InvalidNamespace
        );
        assert_eq!(
            cond(inbound("<iq xmlns='jabber:client'>", None)),
            StreamCondition::NotWellFormed
        );
        assert_eq!(
            cond(inbound("<a xmlns='x'/>junk", None)),
            StreamCondition::NotWellFormed
        );
        let big = inbound(iq, Some(10)).unwrap_err();
        assert_eq!(big.condition, StreamCondition::PolicyViolation);
        assert_eq!(big.close, CloseCode::Size);
        assert!(inbound(" \n", None).unwrap().is_empty());
    }
}
