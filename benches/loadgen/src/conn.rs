//! One client connection: TCP, STARTTLS, SASL, bind, then stanzas; or,
//! with `--transport ws`, TLS, a WebSocket (RFC 7395, `ws.rs`), SASL, bind.
//!
//! A [`Conn`] is a socket (plain, then TLS; or a WebSocket over TLS, whose
//! messages are turned into the same byte stream), one small read buffer that grows
//! only while a large unit is pending and shrinks back when drained, and the
//! splitter state. There is no task or thread per connection inside this
//! type: a scenario drives one or two connections from one tokio task. Every
//! negotiation step is bounded by a deadline; stream-level reads in a
//! scenario's main loop are bounded by the scenario's own deadlines.

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rustls::pki_types::ServerName;
use sasl::client::mechanisms::{Plain, Scram};
use sasl::client::Mechanism;
use sasl::common::{ChannelBinding, Credentials};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{timeout_at, Instant};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::scram::{CachedSha1, CachedSha256};
use crate::ws::WsLink;
use crate::xml::{self, Kind, Unit};

/// Initial (and resting) size of a connection's read buffer.
const READ_BUF: usize = 2048;
/// Read buffers above this size are shrunk back once drained.
const SHRINK_ABOVE: usize = 16 * 1024;

/// SASL mechanism to log in with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Mech {
    /// SCRAM-SHA-256 (RFC 7677).
    #[value(name = "scram-sha-256")]
    ScramSha256,
    /// SCRAM-SHA-1 (RFC 5802).
    #[value(name = "scram-sha-1")]
    ScramSha1,
    /// PLAIN (RFC 4616), over TLS only.
    #[value(name = "plain")]
    Plain,
}

impl Mech {
    /// The SASL mechanism name.
    pub fn sasl_name(self) -> &'static str {
        match self {
            Mech::ScramSha256 => "SCRAM-SHA-256",
            Mech::ScramSha1 => "SCRAM-SHA-1",
            Mech::Plain => "PLAIN",
        }
    }
}

/// Everything needed to open a client session.
#[derive(Clone)]
pub struct ClientCfg {
    /// Server address (c2s STARTTLS port, or the relay's TLS port).
    pub server: SocketAddr,
    /// XMPP domain (`to` of the stream header, TLS server name).
    pub domain: String,
    /// Local-part prefix: user `i` is `{prefix}{i}`.
    pub prefix: String,
    /// Everyone's password.
    pub password: String,
    /// SASL mechanism.
    pub mech: Mech,
    /// TLS connector (accepts any certificate).
    pub connector: TlsConnector,
    /// TLS server name derived from the domain.
    pub server_name: ServerName<'static>,
    /// Local address to connect from (several loopback addresses give more
    /// ephemeral ports).
    pub bind_ip: Option<IpAddr>,
    /// Bound on a whole login.
    pub login_timeout: Duration,
    /// Resource to bind.
    pub resource: String,
    /// `Some(url)`: connect with a WebSocket (RFC 7395) to this
    /// `wss://` or `ws://` URL at `server` instead of c2s over STARTTLS.
    pub ws_url: Option<String>,
    /// `--servers`: the server of each account (`placement.rs`); `None`:
    /// every account uses `server`.
    pub placement: Option<crate::placement::Placement>,
}

impl ClientCfg {
    /// Local part of user `i`.
    pub fn user(&self, i: u64) -> String {
        format!("{}{}", self.prefix, i)
    }

    /// Bare JID of user `i`.
    pub fn bare(&self, i: u64) -> String {
        format!("{}{}@{}", self.prefix, i, self.domain)
    }

    /// User number of a JID `{prefix}{n}@{domain}[/res]`, if it is one.
    pub fn user_number(&self, jid: &str) -> Option<u64> {
        let local = jid.split('@').next()?;
        local.strip_prefix(&self.prefix)?.parse().ok()
    }
}

/// Why a connection or login failed; `kind` is a short stable word used as a
/// key in the JSON reports.
#[derive(Clone, Debug)]
pub struct Error {
    /// `connect`, `tls`, `auth`, `bind`, `timeout`, `closed`, `protocol`, `io`.
    pub kind: &'static str,
    /// Details.
    pub msg: String,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.msg)
    }
}

fn err(kind: &'static str, msg: impl Into<String>) -> Error {
    Error {
        kind,
        msg: msg.into(),
    }
}

/// The byte stream under a connection (or under its WebSocket).
pub enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    Gone,
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Io::Gone => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Io::Gone => Poll::Ready(Err(std::io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Io::Gone => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Io::Gone => Poll::Ready(Ok(())),
        }
    }
}

/// A client connection.
pub struct Conn {
    io: Io,
    buf: Vec<u8>,
    pos: usize,
    pending: usize,
    in_stream: bool,
    /// The WebSocket, with `--transport ws` (then `io` is `Gone`).
    ws: Option<Box<WsLink>>,
    /// XEP-0198 state of a "modern" session (`idle --modern`), else None.
    pub sm: Option<crate::modern::Sm>,
    /// Round trips so far: the TCP and TLS handshakes, and each read that
    /// had to wait for an answer to something sent.
    pub round_trips: u32,
    /// Something was sent since the last read.
    awaiting: bool,
    /// The TLS handshake resumed an earlier session.
    pub tls_resumed: bool,
}

/// The client's stream header.
pub fn stream_header(domain: &str) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream to='{domain}' version='1.0' xml:lang='en' \
         xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
    )
}

/// A ping to the server with the given id (XEP-0199); any reply with that id
/// (result or error) proves the server processed everything sent before.
pub fn ping(domain: &str, id: &str) -> String {
    format!("<iq type='get' id='{id}' to='{domain}'><ping xmlns='urn:xmpp:ping'/></iq>")
}

async fn tcp_connect(cfg: &ClientCfg) -> std::io::Result<TcpStream> {
    let sock = match cfg.server {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(ip) = cfg.bind_ip {
        sock.bind(SocketAddr::new(ip, 0))?;
    }
    let s = sock.connect(cfg.server).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

impl Conn {
    /// Opens TCP (no bytes sent yet).
    pub async fn connect(cfg: &ClientCfg, deadline: Instant) -> Result<Conn, Error> {
        let tcp = match timeout_at(deadline, tcp_connect(cfg)).await {
            Err(_) => return Err(err("timeout", "TCP connect")),
            Ok(Err(e)) => return Err(err("connect", e.to_string())),
            Ok(Ok(s)) => s,
        };
        Ok(Conn {
            io: Io::Plain(tcp),
            buf: Vec::new(),
            pos: 0,
            pending: 0,
            in_stream: false,
            ws: None,
            sm: None,
            round_trips: 1,
            awaiting: false,
            tls_resumed: false,
        })
    }

    /// Opens TCP, TLS unless the URL is `ws://`, and the WebSocket.
    async fn connect_ws(cfg: &ClientCfg, url: &str, deadline: Instant) -> Result<Conn, Error> {
        let mut c = Conn::connect(cfg, deadline).await?;
        if url.starts_with("wss:") {
            c.start_tls(cfg, deadline).await?;
        }
        let io = std::mem::replace(&mut c.io, Io::Gone);
        match timeout_at(deadline, WsLink::handshake(io, url)).await {
            Err(_) => return Err(err("timeout", "WebSocket handshake")),
            Ok(r) => c.ws = Some(Box::new(r?)),
        }
        Ok(c)
    }

    /// The stream header this connection's transport uses.
    pub(crate) fn header(&self, domain: &str) -> String {
        if self.ws.is_some() {
            crate::ws::open(domain)
        } else {
            stream_header(domain)
        }
    }

    /// Sends a stream header or end as it is (not split into elements).
    pub(crate) async fn send_framing(
        &mut self,
        data: &[u8],
        deadline: Instant,
    ) -> Result<(), Error> {
        match &mut self.ws {
            Some(ws) => match timeout_at(deadline, ws.send_raw(data)).await {
                Err(_) => Err(err("timeout", "write")),
                Ok(r) => r,
            },
            None => self.send(data, deadline).await,
        }
    }

    /// Opens TCP and TLS from the first byte (the relay's raw mode).
    pub async fn connect_direct_tls(cfg: &ClientCfg, deadline: Instant) -> Result<Conn, Error> {
        let mut c = Conn::connect(cfg, deadline).await?;
        c.start_tls(cfg, deadline).await?;
        Ok(c)
    }

    async fn start_tls(&mut self, cfg: &ClientCfg, deadline: Instant) -> Result<(), Error> {
        let tcp = match std::mem::replace(&mut self.io, Io::Gone) {
            Io::Plain(t) => t,
            _ => return Err(err("protocol", "TLS already started")),
        };
        let tls = match timeout_at(
            deadline,
            cfg.connector.connect(cfg.server_name.clone(), tcp),
        )
        .await
        {
            Err(_) => return Err(err("timeout", "TLS handshake")),
            Ok(Err(e)) => return Err(err("tls", e.to_string())),
            Ok(Ok(s)) => s,
        };
        self.round_trips += 1;
        self.tls_resumed = tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        self.io = Io::Tls(Box::new(tls));
        Ok(())
    }

    /// TCP, the stream, STARTTLS and TLS (or the WebSocket), and the
    /// stream on TLS: the connection, its stream header and its features.
    pub(crate) async fn secure(
        cfg: &ClientCfg,
        deadline: Instant,
    ) -> Result<(Conn, String, Unit), Error> {
        let mut c = match &cfg.ws_url {
            Some(url) => Conn::connect_ws(cfg, url, deadline).await?,
            None => Conn::connect(cfg, deadline).await?,
        };
        let header = c.header(&cfg.domain);
        if c.ws.is_none() {
            // Plain stream: expect <starttls/>.
            c.send(header.as_bytes(), deadline).await?;
            let f = c.open_stream(deadline).await?;
            if !contains(c.get(&f.raw), b"starttls") {
                return Err(err("tls", "server offers no STARTTLS"));
            }
            c.send(
                b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>",
                deadline,
            )
            .await?;
            let p = c.recv(deadline).await?;
            if c.get(&p.name) != b"proceed" {
                return Err(err(
                    "tls",
                    format!(
                        "STARTTLS answered with <{}>",
                        String::from_utf8_lossy(c.get(&p.name))
                    ),
                ));
            }
            c.reset_stream();
            c.start_tls(cfg, deadline).await?;
        }
        // TLS stream (or WebSocket over TLS): its features.
        c.send_framing(header.as_bytes(), deadline).await?;
        let f = c.open_stream(deadline).await?;
        Ok((c, header, f))
    }

    /// Full c2s login: stream, STARTTLS, SASL, restart, bind of `resource`.
    /// Returns the bound connection (no presence sent).
    pub async fn login(cfg: &ClientCfg, user: &str, resource: &str) -> Result<Conn, Error> {
        let deadline = Instant::now() + cfg.login_timeout;
        let (mut c, header, f) = Conn::secure(cfg, deadline).await?;
        let want = format!(">{}<", cfg.mech.sasl_name());
        if !contains(c.get(&f.raw), want.as_bytes()) {
            return Err(err(
                "auth",
                format!("server does not offer {}", cfg.mech.sasl_name()),
            ));
        }
        c.authenticate(cfg, user, deadline).await?;
        c.reset_stream();
        c.send_framing(header.as_bytes(), deadline).await?;
        let f = c.open_stream(deadline).await?;
        if !contains(c.get(&f.raw), b"bind") {
            return Err(err("bind", "no <bind/> feature after authentication"));
        }
        let bind = format!(
            "<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
             <resource>{resource}</resource></bind></iq>"
        );
        c.send(bind.as_bytes(), deadline).await?;
        loop {
            let u = c.recv(deadline).await?;
            if c.get(&u.name) == b"iq" && c.opt(&u.id) == b"bind1" {
                if c.opt(&u.typ) == b"result" {
                    break;
                }
                return Err(err("bind", String::from_utf8_lossy(c.get(&u.raw))));
            }
        }
        Ok(c)
    }

    async fn authenticate(
        &mut self,
        cfg: &ClientCfg,
        user: &str,
        deadline: Instant,
    ) -> Result<(), Error> {
        let creds = Credentials::default()
            .with_username(user)
            .with_password(cfg.password.as_str())
            .with_channel_binding(ChannelBinding::None);
        let mut m: Box<dyn Mechanism + Send> = match cfg.mech {
            Mech::ScramSha256 => Box::new(
                Scram::<CachedSha256>::from_credentials(creds)
                    .map_err(|e| err("auth", format!("{e:?}")))?,
            ),
            Mech::ScramSha1 => Box::new(
                Scram::<CachedSha1>::from_credentials(creds)
                    .map_err(|e| err("auth", format!("{e:?}")))?,
            ),
            Mech::Plain => {
                Box::new(Plain::from_credentials(creds).map_err(|e| err("auth", format!("{e:?}")))?)
            }
        };
        let first = m.initial();
        let auth = format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{}'>{}</auth>",
            cfg.mech.sasl_name(),
            b64_or_eq(&first)
        );
        self.send(auth.as_bytes(), deadline).await?;
        // SCRAM needs one challenge; allow a final challenge too.
        for _ in 0..3 {
            let u = self.recv(deadline).await?;
            let data = match &u.text {
                Some(r) if self.get(r).trim_ascii() != b"=" => B64
                    .decode(self.get(r).trim_ascii())
                    .map_err(|e| err("auth", format!("bad base64 from server: {e}")))?,
                _ => Vec::new(),
            };
            match self.get(&u.name) {
                b"challenge" => {
                    let r = m
                        .response(&data)
                        .map_err(|e| err("auth", format!("bad challenge: {e:?}")))?;
                    let resp = format!(
                        "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
                        b64_or_eq(&r)
                    );
                    self.send(resp.as_bytes(), deadline).await?;
                }
                b"success" => {
                    return m
                        .success(&data)
                        .map_err(|e| err("auth", format!("server signature: {e:?}")));
                }
                b"failure" => {
                    return Err(err(
                        "auth",
                        format!("<failure><{}/></failure>", self.str(&u.child)),
                    ))
                }
                other => {
                    return Err(err(
                        "protocol",
                        format!(
                            "unexpected <{}> during SASL",
                            String::from_utf8_lossy(other)
                        ),
                    ))
                }
            }
        }
        Err(err("auth", "too many SASL round trips"))
    }

    /// Reads the header and the `<stream:features/>` that follows it.
    pub(crate) async fn open_stream(&mut self, deadline: Instant) -> Result<Unit, Error> {
        let h = self.recv(deadline).await?;
        if h.kind != Kind::Header {
            return Err(err("protocol", "expected a stream header"));
        }
        let f = self.recv(deadline).await?;
        if self.get(&f.name) != b"features" {
            return Err(err(
                "protocol",
                format!(
                    "expected <stream:features/>, got <{}>",
                    String::from_utf8_lossy(self.get(&f.name))
                ),
            ));
        }
        Ok(f)
    }

    pub(crate) fn reset_stream(&mut self) {
        self.consume_pending();
        self.in_stream = false;
    }

    /// Writes and flushes `data`, bounded by `deadline`.
    pub async fn send(&mut self, data: &[u8], deadline: Instant) -> Result<(), Error> {
        self.awaiting = true;
        if let Some(ws) = &mut self.ws {
            return match timeout_at(deadline, ws.send(data)).await {
                Err(_) => Err(err("timeout", "write")),
                Ok(r) => r,
            };
        }
        let io = &mut self.io;
        let fut = async {
            io.write_all(data).await?;
            io.flush().await
        };
        match timeout_at(deadline, fut).await {
            Err(_) => Err(err("timeout", "write")),
            Ok(Err(e)) => Err(err("io", e.to_string())),
            Ok(Ok(())) => Ok(()),
        }
    }

    /// Writes and flushes `data` without a deadline (the caller bounds it).
    pub async fn send_now(&mut self, data: &[u8]) -> Result<(), Error> {
        if let Some(ws) = &mut self.ws {
            return ws.send(data).await;
        }
        let r = async {
            self.io.write_all(data).await?;
            self.io.flush().await
        }
        .await;
        r.map_err(|e| err("io", e.to_string()))
    }

    fn consume_pending(&mut self) {
        if self.pending > 0 {
            self.pos += self.pending;
            self.pending = 0;
            if self.pos >= self.buf.len() {
                self.buf.clear();
                self.pos = 0;
                if self.buf.capacity() > SHRINK_ABOVE {
                    self.buf.shrink_to(READ_BUF);
                }
            }
        }
    }

    /// Frees the read buffer if it holds nothing unread (an idle session
    /// then costs no buffer of ours; the next read allocates one again).
    pub fn release_buffer(&mut self) {
        self.consume_pending();
        if self.pos >= self.buf.len() {
            self.buf = Vec::new();
            self.pos = 0;
        }
    }

    async fn fill(&mut self) -> Result<(), Error> {
        if let Some(ws) = &mut self.ws {
            // Whole messages only (cancel-safe); an idle session's empty
            // buffer is allocated when one arrives.
            if self.pos > 0 && self.pos >= self.buf.len() {
                self.buf.clear();
                self.pos = 0;
            } else if self.pos > SHRINK_ABOVE {
                self.buf.drain(..self.pos);
                self.pos = 0;
            }
            return ws.recv_into(&mut self.buf).await.map(|_| ());
        }
        if self.buf.capacity() == 0 {
            // No buffer (an idle session released it): read into a scratch
            // array that lives on the thread's stack only during each poll,
            // not in the task, and allocate only when bytes arrive.
            let (io, buf) = (&mut self.io, &mut self.buf);
            let r = std::future::poll_fn(|cx| {
                let mut scratch = [0u8; READ_BUF];
                let mut rb = ReadBuf::new(&mut scratch);
                match Pin::new(&mut *io).poll_read(cx, &mut rb) {
                    Poll::Ready(Ok(())) => {
                        buf.extend_from_slice(rb.filled());
                        Poll::Ready(Ok(rb.filled().len()))
                    }
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                    Poll::Pending => Poll::Pending,
                }
            })
            .await;
            return match r {
                Ok(0) => Err(err("closed", "connection closed by the server")),
                Ok(_) => Ok(()),
                Err(e) => Err(err("io", e.to_string())),
            };
        }
        if self.buf.capacity() - self.buf.len() < 512 {
            if self.pos > 0 {
                self.buf.drain(..self.pos);
                self.pos = 0;
            }
            if self.buf.capacity() - self.buf.len() < 512 {
                let grow = self.buf.capacity().max(READ_BUF);
                self.buf.reserve(grow);
            }
        }
        match self.io.read_buf(&mut self.buf).await {
            Ok(0) => Err(err("closed", "connection closed by the server")),
            Ok(_) => Ok(()),
            Err(e) => Err(err("io", e.to_string())),
        }
    }

    /// The next unit if one is complete in the buffer (no I/O).
    pub fn try_unit(&mut self) -> Result<Option<Unit>, Error> {
        self.consume_pending();
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        match xml::split(&self.buf[self.pos..], self.in_stream) {
            Ok(Some(mut u)) => {
                self.pending = u.len;
                let off = self.pos;
                shift(&mut u, off);
                match u.kind {
                    Kind::Header => self.in_stream = true,
                    Kind::End => self.in_stream = false,
                    Kind::Element => {}
                }
                Ok(Some(u))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(err("protocol", e.0)),
        }
    }

    /// The next unit (header, element, end). Cancel-safe: data read before a
    /// cancellation stays buffered. Ranges in the unit index [`Conn::get`].
    pub async fn next_unit(&mut self) -> Result<Unit, Error> {
        loop {
            if let Some(u) = self.try_unit()? {
                return Ok(u);
            }
            self.fill().await?;
        }
    }

    /// [`Conn::next_unit`] bounded by `deadline`; a `</stream:stream>` or a
    /// stream error is an error of kind `closed`.
    pub async fn recv(&mut self, deadline: Instant) -> Result<Unit, Error> {
        if self.awaiting {
            self.awaiting = false;
            self.round_trips += 1;
        }
        let u = match timeout_at(deadline, self.next_unit()).await {
            Err(_) => return Err(err("timeout", "read")),
            Ok(r) => r?,
        };
        if u.kind == Kind::End {
            return Err(err("closed", "server closed the stream"));
        }
        if u.kind == Kind::Element && self.get(&u.name) == b"error" {
            return Err(err(
                "closed",
                format!("stream error <{}/>", self.str(&u.child)),
            ));
        }
        Ok(u)
    }

    /// The next `\n`-terminated line if one is complete in the buffer.
    pub fn try_line(&mut self) -> Result<Option<Range<usize>>, Error> {
        self.consume_pending();
        if let Some(i) = self.buf[self.pos..].iter().position(|&c| c == b'\n') {
            let r = self.pos..self.pos + i;
            self.pending = i + 1;
            return Ok(Some(r));
        }
        if self.buf.len() - self.pos > xml::MAX_UNIT {
            return Err(err("protocol", "line too long"));
        }
        Ok(None)
    }

    /// Next `\n`-terminated line (raw relay mode), without the newline.
    pub async fn next_line(&mut self) -> Result<Range<usize>, Error> {
        loop {
            if let Some(r) = self.try_line()? {
                return Ok(r);
            }
            self.fill().await?;
        }
    }

    /// Bytes of a range from the last unit.
    pub fn get(&self, r: &Range<usize>) -> &[u8] {
        &self.buf[r.clone()]
    }

    /// Bytes of an optional range (empty when absent).
    pub fn opt(&self, r: &Option<Range<usize>>) -> &[u8] {
        r.as_ref().map_or(&[][..], |r| &self.buf[r.clone()])
    }

    /// An optional range as text (lossy: invalid UTF-8 gives "").
    pub fn str(&self, r: &Option<Range<usize>>) -> &str {
        std::str::from_utf8(self.opt(r)).unwrap_or("")
    }

    /// The answer a client owes for a server-initiated iq (ping, roster
    /// push: result; anything else: service-unavailable), if `u` is one.
    pub fn iq_reply(&self, u: &Unit) -> Option<String> {
        if self.get(&u.name) != b"iq" {
            return None;
        }
        let typ = self.opt(&u.typ);
        if typ != b"get" && typ != b"set" {
            return None;
        }
        let id = self.str(&u.id);
        let from = self.str(&u.from);
        let to = if from.is_empty() {
            String::new()
        } else {
            format!(" to='{from}'")
        };
        let child = self.opt(&u.child);
        if child == b"ping" || (typ == b"set" && child == b"query") {
            Some(format!("<iq type='result' id='{id}'{to}/>"))
        } else {
            Some(format!(
                "<iq type='error' id='{id}'{to}><error type='cancel'>\
                 <service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
                 </error></iq>"
            ))
        }
    }

    /// Closes the stream cleanly: `</stream:stream>`, waits (bounded) for
    /// the server's end of stream or EOF, then closes TLS and TCP.
    pub async fn close(mut self, wait: Duration) {
        let deadline = Instant::now() + wait;
        let end: &[u8] = if self.ws.is_some() {
            crate::ws::CLOSE
        } else {
            b"</stream:stream>"
        };
        if self.send_framing(end, deadline).await.is_ok() {
            loop {
                match timeout_at(deadline, self.next_unit()).await {
                    Ok(Ok(u)) if u.kind != Kind::End => continue,
                    _ => break,
                }
            }
        }
        if let Some(ws) = &mut self.ws {
            let _ = timeout_at(deadline, ws.close()).await;
        }
        let _ = timeout_at(deadline, self.io.shutdown()).await;
    }

    /// Closes TLS and TCP without a stream close (raw relay mode).
    pub async fn shutdown(mut self, wait: Duration) {
        let _ = tokio::time::timeout(wait, self.io.shutdown()).await;
    }
}

fn shift(u: &mut Unit, off: usize) {
    let s = |r: &mut Range<usize>| *r = r.start + off..r.end + off;
    s(&mut u.raw);
    s(&mut u.name);
    for r in [
        &mut u.typ,
        &mut u.id,
        &mut u.from,
        &mut u.child,
        &mut u.text,
        &mut u.body,
    ]
    .into_iter()
    .flatten()
    {
        s(r);
    }
}

fn b64_or_eq(data: &[u8]) -> String {
    if data.is_empty() {
        "=".to_string()
    } else {
        B64.encode(data)
    }
}

/// Whether `needle` occurs in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}
