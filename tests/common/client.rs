//! A small, deliberately strict XMPP client for integration tests.
//!
//! It speaks over a real TCP socket, upgrades with STARTTLS or direct TLS
//! (tokio-rustls, accepting any certificate), authenticates with PLAIN, SCRAM
//! (via the `sasl` crate) or a hand-rolled SCRAM-*-PLUS, binds resources and
//! exchanges stanzas. Every read is bounded by [`Client::timeout`] (10 s by
//! default) and no loop runs unbounded. Raw writes allow hostile input.
//! Every unit received is held to XML 1.0's characters
//! ([`super::wellformed::check_chars`]); a violation fails the test.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};

use super::scram::{tls_server_end_point, Gs2Binding, ScramClient, ScramHash};
use super::server::Server;
use super::xml::*;

/// Default bound for every read or write.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A byte stream the client can speak XMPP over.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

enum Conn {
    Plain(TcpStream),
    Tls(Box<dyn Io>),
    Gone,
}

/// What the TLS layer tells us after the handshake.
#[derive(Clone, Debug)]
pub struct TlsInfo {
    /// RFC 9266 `tls-exporter` channel-binding data (32 bytes).
    pub exporter: Vec<u8>,
    /// The server's certificate chain (DER), end entity first.
    pub peer_certs: Vec<Vec<u8>>,
    /// Negotiated protocol version, e.g. `TLSv1_3`.
    pub version: String,
    /// Negotiated cipher suite, e.g. `TLS13_AES_128_GCM_SHA256`.
    pub suite: String,
}

/// One event read from the stream.
#[derive(Clone, Debug, PartialEq)]
pub enum StreamEvent {
    /// A stream header `<stream:stream ...>`.
    Header(Element),
    /// A first-level element.
    Stanza(Element),
    /// `</stream:stream>`.
    End,
    /// The connection was closed (with a note on leftover data, if any).
    Closed(String),
    /// Nothing complete arrived before the deadline (note: buffered data).
    Timeout(String),
}

/// Outcome of one SASL round trip.
#[derive(Clone, Debug, PartialEq)]
pub enum SaslReply {
    /// `<challenge/>` with decoded data.
    Challenge(Vec<u8>),
    /// `<success/>` with decoded additional data.
    Success(Vec<u8>),
    /// `<failure/>` with its condition.
    Failure(String),
    /// A stream error with its condition.
    StreamError(String),
    /// Anything else (described).
    Other(String),
}

#[derive(Debug)]
struct AcceptAnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A client with rustls's own cipher-suite order (AES-256-GCM first) that
/// accepts any certificate.
pub fn tls_connector() -> tokio_rustls::TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// Base64 of `data`, or `=` for empty data (RFC 6120 §6.4.2).
pub fn sasl_b64(data: &[u8]) -> String {
    if data.is_empty() {
        "=".to_string()
    } else {
        B64.encode(data)
    }
}

/// XML-escapes text or attribute values.
pub fn esc(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}

/// The opening stream header the client normally sends.
pub fn stream_header(to: &str) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream to='{}' version='1.0' xml:lang='en' \
         xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>",
        esc(to)
    )
}

/// A connection to the server under test.
pub struct Client {
    conn: Conn,
    buf: Vec<u8>,
    scope: Scope,
    pending: VecDeque<Element>,
    closed: bool,
    next_id: u64,
    /// Bound for each read/write.
    pub timeout: Duration,
    /// Domain used in `to=` of stream headers.
    pub domain: String,
    /// TLS details once TLS is up.
    pub tls: Option<TlsInfo>,
    /// Last stream header received from the server.
    pub header: Option<Element>,
    /// Last `<stream:features/>` received.
    pub features: Option<Element>,
    /// Full JID after a successful bind.
    pub jid: Option<String>,
    /// The connection's local address (the server logs it as `peer`).
    pub local_addr: Option<SocketAddr>,
}

impl Client {
    /// Opens a plain TCP connection (nothing sent yet).
    pub async fn connect(addr: SocketAddr) -> Client {
        let tcp = tokio::time::timeout(DEFAULT_TIMEOUT, TcpStream::connect(addr))
            .await
            .unwrap_or_else(|_| panic!("connect to {addr} timed out"))
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        tcp.set_nodelay(true).ok();
        let local_addr = tcp.local_addr().ok();
        Client {
            conn: Conn::Plain(tcp),
            buf: Vec::new(),
            scope: Scope::new(),
            pending: VecDeque::new(),
            closed: false,
            next_id: 0,
            timeout: DEFAULT_TIMEOUT,
            domain: "localhost".to_string(),
            tls: None,
            header: None,
            features: None,
            jid: None,
            local_addr,
        }
    }

    /// TCP + STARTTLS: returns a client whose TLS stream is open and whose
    /// post-TLS features (SASL mechanisms) are in [`Client::features`].
    pub async fn connect_starttls(addr: SocketAddr) -> Client {
        let mut c = Client::connect(addr).await;
        let f = c.open_stream().await;
        assert!(
            f.child_ns("starttls", NS_TLS).is_some(),
            "no <starttls/> offered before TLS: {f}"
        );
        c.starttls().await;
        c
    }

    /// TCP + direct TLS (XEP-0368 style) + stream open.
    pub async fn connect_tls(addr: SocketAddr) -> Client {
        let mut c = Client::connect(addr).await;
        c.tls_handshake().await;
        c.open_stream().await;
        c
    }

    /// Connects over STARTTLS, authenticates with SCRAM-SHA-256 and binds
    /// `resource` (server-generated when `None`).
    pub async fn login(
        server: &Server,
        user: &str,
        password: &str,
        resource: Option<&str>,
    ) -> Client {
        let mut c = Client::connect_starttls(server.c2s()).await;
        c.login_scram(user, password).await;
        c.bind(resource)
            .await
            .unwrap_or_else(|e| panic!("bind failed for {user}: {e}"));
        c
    }

    /// A fresh stanza id.
    pub fn id(&mut self) -> String {
        self.next_id += 1;
        format!("t{}", self.next_id)
    }

    // ----- raw I/O --------------------------------------------------------

    /// Writes raw bytes; returns the I/O error instead of panicking.
    pub async fn try_send_bytes(&mut self, data: &[u8]) -> std::io::Result<()> {
        let fut = async {
            match &mut self.conn {
                Conn::Plain(s) => {
                    s.write_all(data).await?;
                    s.flush().await
                }
                Conn::Tls(s) => {
                    s.write_all(data).await?;
                    s.flush().await
                }
                Conn::Gone => Err(std::io::Error::other("connection gone")),
            }
        };
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "write timed out",
            )),
        }
    }

    /// Writes raw bytes, panicking on failure.
    pub async fn send_bytes(&mut self, data: &[u8]) {
        if let Err(e) = self.try_send_bytes(data).await {
            panic!(
                "write of {} bytes failed: {e} (starting {:?})",
                data.len(),
                String::from_utf8_lossy(&data[..data.len().min(200)])
            );
        }
    }

    /// Writes an XML string, panicking on failure.
    pub async fn send(&mut self, xml: &str) {
        self.send_bytes(xml.as_bytes()).await
    }

    /// Writes `data` in `chunk`-sized pieces, each bounded by `per_chunk`;
    /// stops silently at the first error or stall (the peer may legitimately
    /// cut us off). Returns the number of bytes written.
    pub async fn send_lossy(&mut self, data: &[u8], chunk: usize, per_chunk: Duration) -> usize {
        let saved = self.timeout;
        self.timeout = per_chunk;
        let mut written = 0;
        for piece in data.chunks(chunk.max(1)) {
            if self.try_send_bytes(piece).await.is_err() {
                break;
            }
            written += piece.len();
        }
        self.timeout = saved;
        written
    }

    async fn read_more(&mut self, deadline: Instant) -> Result<(), ()> {
        let mut chunk = vec![0u8; 16 * 1024];
        let fut = async {
            match &mut self.conn {
                Conn::Plain(s) => s.read(&mut chunk).await,
                Conn::Tls(s) => s.read(&mut chunk).await,
                Conn::Gone => Ok(0),
            }
        };
        match timeout_at(deadline, fut).await {
            Err(_) => Err(()),
            Ok(Ok(n)) if n > 0 => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Ok(_) => {
                // EOF, or an error such as a TLS close without close_notify.
                self.closed = true;
                Ok(())
            }
        }
    }

    fn buffered_note(&self) -> String {
        let s = String::from_utf8_lossy(&self.buf);
        if s.len() > 2000 {
            format!("{:?}...", &s[..s.floor_char_boundary(2000)])
        } else {
            format!("{s:?}")
        }
    }

    /// Next event, waiting at most `wait`. Queued stanzas come first.
    pub async fn recv_event_within(&mut self, wait: Duration) -> StreamEvent {
        if let Some(el) = self.pending.pop_front() {
            return StreamEvent::Stanza(el);
        }
        let deadline = Instant::now() + wait;
        loop {
            let start = self
                .buf
                .iter()
                .take_while(|b| b.is_ascii_whitespace())
                .count();
            if start > 0 {
                self.buf.drain(..start);
            }
            if !self.buf.is_empty() {
                match parse_unit(&self.buf, &mut self.scope) {
                    Ok(Some((unit, n))) => {
                        // Every unit the server writes is held to XML 1.0's
                        // characters, which quick-xml does not check.
                        if let Err(e) = super::wellformed::check_chars(&self.buf[..n]) {
                            panic!("the server sent XML a strict parser refuses: {e}");
                        }
                        self.buf.drain(..n);
                        return match unit {
                            Unit::Header(h) => {
                                self.header = Some(h.clone());
                                StreamEvent::Header(h)
                            }
                            Unit::Stanza(e) => StreamEvent::Stanza(e),
                            Unit::End => StreamEvent::End,
                        };
                    }
                    Ok(None) => {}
                    Err(e) if self.closed => {
                        return StreamEvent::Closed(format!(
                            "unparsable data before close ({e}): {}",
                            self.buffered_note()
                        ))
                    }
                    Err(_) => {}
                }
            }
            if self.closed {
                return StreamEvent::Closed(if self.buf.is_empty() {
                    String::new()
                } else {
                    format!("incomplete data before close: {}", self.buffered_note())
                });
            }
            if self.read_more(deadline).await.is_err() {
                return StreamEvent::Timeout(format!("buffered: {}", self.buffered_note()));
            }
        }
    }

    /// Next event within the default timeout.
    pub async fn recv_event(&mut self) -> StreamEvent {
        let t = self.timeout;
        self.recv_event_within(t).await
    }

    /// Next first-level element; panics on close, stream end or timeout.
    pub async fn recv(&mut self) -> Element {
        match self.recv_event().await {
            StreamEvent::Stanza(e) => e,
            other => panic!("expected a stanza, got {other:?}"),
        }
    }

    /// Waits for the error reply to the message with `id` and checks that it
    /// is `type='error'` with the defined `condition`; returns it.
    pub async fn expect_message_error(&mut self, id: &str, condition: &str) -> Element {
        let e = self
            .recv_where("an error reply", |e| {
                e.name == "message" && e.attr("id") == Some(id)
            })
            .await;
        assert_eq!(e.attr("type"), Some("error"), "{e}");
        assert_eq!(
            e.stanza_error().map(|x| x.1),
            Some(condition.to_string()),
            "{e}"
        );
        e
    }

    /// Reads until an element satisfying `pred` arrives (others are queued
    /// for later `recv` calls); panics after the default timeout, on stream
    /// errors, stream end or close.
    pub async fn recv_where<F: Fn(&Element) -> bool>(&mut self, what: &str, pred: F) -> Element {
        if let Some(i) = self.pending.iter().position(&pred) {
            return self.pending.remove(i).expect("index");
        }
        let deadline = Instant::now() + self.timeout;
        let mut skipped = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            // Bypass the queue: we already searched it.
            let saved = std::mem::take(&mut self.pending);
            let ev = self.recv_event_within(left).await;
            self.pending = saved;
            match ev {
                StreamEvent::Stanza(e) if pred(&e) => {
                    self.pending.extend(skipped);
                    return e;
                }
                StreamEvent::Stanza(e) if e.is_stream_error() => {
                    panic!("waiting for {what}: got stream error {e}")
                }
                StreamEvent::Stanza(e) => skipped.push(e),
                StreamEvent::Header(h) => panic!("waiting for {what}: unexpected header {h}"),
                other => panic!(
                    "waiting for {what}: got {other:?}; skipped: {}",
                    skipped
                        .iter()
                        .map(|e| e.to_string())
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
            }
        }
    }

    /// Next `<message/>` (other stanzas are queued).
    pub async fn recv_message(&mut self) -> Element {
        self.recv_where("a message", |e| e.name == "message").await
    }

    /// Asserts that no stanza arrives within `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        match self.recv_event_within(wait).await {
            StreamEvent::Timeout(_) => {}
            other => panic!("expected silence for {wait:?}, got {other:?}"),
        }
    }

    /// Reads until a `<stream:error/>` and returns its condition; skips a
    /// stream header and other stanzas, then asserts that `</stream:stream>`
    /// (or at least the end of the connection) follows.
    pub async fn expect_stream_error(&mut self) -> String {
        let cond = self.expect_stream_error_only().await;
        match self.recv_event().await {
            StreamEvent::End => {}
            StreamEvent::Closed(note) => {
                panic!("stream error <{cond}/> not followed by </stream:stream> (closed: {note})")
            }
            other => panic!("stream error <{cond}/> not followed by </stream:stream>: {other:?}"),
        }
        cond
    }

    /// Like [`Client::expect_stream_error`] without checking what follows.
    pub async fn expect_stream_error_only(&mut self) -> String {
        let deadline = Instant::now() + self.timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv_event_within(left).await {
                StreamEvent::Header(_) => {}
                StreamEvent::Stanza(e) if e.is_stream_error() => {
                    return e
                        .condition_in(NS_STREAM_ERRORS)
                        .unwrap_or_else(|| panic!("stream error without condition: {e}"))
                        .to_string();
                }
                StreamEvent::Stanza(e) => seen.push(e.to_string()),
                other => panic!("expected a stream error, got {other:?}; before that: {seen:?}"),
            }
        }
    }

    /// Asserts the stream ends (`</stream:stream>`), skipping stanzas and an
    /// optional stream error whose condition is in `allowed_errors`.
    pub async fn expect_end(&mut self, allowed_errors: &[&str]) {
        let deadline = Instant::now() + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv_event_within(left).await {
                StreamEvent::End => return,
                StreamEvent::Stanza(e) if e.is_stream_error() => {
                    let cond = e.condition_in(NS_STREAM_ERRORS).unwrap_or("").to_string();
                    assert!(
                        allowed_errors.contains(&cond.as_str()),
                        "unexpected stream error <{cond}/> while waiting for the stream end"
                    );
                }
                StreamEvent::Stanza(_) => {}
                other => panic!("expected </stream:stream>, got {other:?}"),
            }
        }
    }

    /// Asserts the TCP connection is closed by the peer within the timeout
    /// (after the stream has ended).
    pub async fn expect_closed(&mut self) {
        match self.recv_event().await {
            StreamEvent::Closed(_) => {}
            other => panic!("expected the connection to close, got {other:?}"),
        }
    }

    // ----- stream management ---------------------------------------------

    /// Sends a stream header for [`Client::domain`], reads the server's
    /// header and features; returns the features.
    pub async fn open_stream(&mut self) -> Element {
        let h = stream_header(&self.domain);
        self.send(&h).await;
        self.read_header_and_features().await
    }

    /// Reads the server's stream header then `<stream:features/>`.
    pub async fn read_header_and_features(&mut self) -> Element {
        match self.recv_event().await {
            StreamEvent::Header(h) => {
                assert_eq!(h.ns, NS_STREAMS, "header namespace: {h}");
            }
            other => panic!("expected a stream header, got {other:?}"),
        }
        let f = self.recv().await;
        assert!(
            f.is("features", NS_STREAMS),
            "expected stream features, got {f}"
        );
        self.features = Some(f.clone());
        f
    }

    /// Negotiates STARTTLS on an open plaintext stream and restarts it.
    pub async fn starttls(&mut self) -> Element {
        self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
            .await;
        let p = self.recv().await;
        assert!(p.is("proceed", NS_TLS), "expected <proceed/>, got {p}");
        assert!(
            self.buf.is_empty(),
            "server sent data after <proceed/> in plaintext: {}",
            self.buffered_note()
        );
        self.tls_handshake().await;
        self.open_stream().await
    }

    /// Runs the TLS handshake over the current TCP connection.
    pub async fn tls_handshake(&mut self) {
        let tcp = match std::mem::replace(&mut self.conn, Conn::Gone) {
            Conn::Plain(t) => t,
            _ => panic!("TLS handshake on a non-plain connection"),
        };
        let name = ServerName::try_from(self.domain.clone()).expect("server name");
        let tls = tokio::time::timeout(self.timeout, tls_connector().connect(name, tcp))
            .await
            .expect("TLS handshake timed out")
            .expect("TLS handshake failed");
        let (_, conn) = tls.get_ref();
        let exporter = conn
            .export_keying_material(vec![0u8; 32], b"EXPORTER-Channel-Binding", None)
            .expect("export keying material");
        let peer_certs = conn
            .peer_certificates()
            .map(|cs| cs.iter().map(|c| c.as_ref().to_vec()).collect())
            .unwrap_or_default();
        let version = format!("{:?}", conn.protocol_version());
        let suite = format!("{:?}", conn.negotiated_cipher_suite().map(|s| s.suite()));
        self.tls = Some(TlsInfo {
            exporter,
            peer_certs,
            version,
            suite,
        });
        self.scope.clear();
        self.conn = Conn::Tls(Box::new(tls));
    }

    /// Default (content) namespace declared by the server's current stream
    /// header, if any.
    pub fn stream_content_ns(&self) -> Option<String> {
        self.scope
            .iter()
            .rev()
            .find(|(p, _)| p.is_empty())
            .map(|(_, u)| u.clone())
    }

    /// Mechanism names from the last features.
    pub fn mechanisms(&self) -> Vec<String> {
        self.features
            .as_ref()
            .and_then(|f| f.child_ns("mechanisms", NS_SASL))
            .map(|m| {
                m.children_named("mechanism")
                    .map(|c| c.text.trim().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Sends `</stream:stream>` and asserts the server answers in kind.
    pub async fn close(&mut self) {
        self.send("</stream:stream>").await;
        self.expect_end(&[]).await;
    }

    // ----- SASL ------------------------------------------------------------

    /// Sends `<auth mechanism=...>` with an optional initial response.
    pub async fn send_auth(&mut self, mechanism: &str, initial: Option<&[u8]>) {
        let xml = match initial {
            Some(d) => format!(
                "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{}'>{}</auth>",
                esc(mechanism),
                sasl_b64(d)
            ),
            None => format!(
                "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{}'/>",
                esc(mechanism)
            ),
        };
        self.send(&xml).await;
    }

    /// Sends `<response/>` with `data`.
    pub async fn send_response(&mut self, data: &[u8]) {
        let xml = format!(
            "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
            sasl_b64(data)
        );
        self.send(&xml).await;
    }

    /// Reads the next SASL element (or stream error).
    pub async fn sasl_reply(&mut self) -> SaslReply {
        let e = match self.recv_event().await {
            StreamEvent::Stanza(e) => e,
            other => return SaslReply::Other(format!("{other:?}")),
        };
        if e.is_stream_error() {
            return SaslReply::StreamError(e.condition_in(NS_STREAM_ERRORS).unwrap_or("").into());
        }
        if e.ns != NS_SASL {
            return SaslReply::Other(e.to_string());
        }
        let decode = |e: &Element| -> Vec<u8> {
            let t = e.text.trim();
            if t.is_empty() || t == "=" {
                Vec::new()
            } else {
                B64.decode(t)
                    .unwrap_or_else(|err| panic!("server sent bad base64 in {e}: {err}"))
            }
        };
        match e.name.as_str() {
            "challenge" => SaslReply::Challenge(decode(&e)),
            "success" => SaslReply::Success(decode(&e)),
            "failure" => SaslReply::Failure(
                e.children
                    .iter()
                    .find(|c| c.name != "text")
                    .map(|c| c.name.clone())
                    .unwrap_or_default(),
            ),
            _ => SaslReply::Other(e.to_string()),
        }
    }

    /// PLAIN with an explicit authzid ("" for none). `Err(condition)`.
    pub async fn auth_plain_authz(
        &mut self,
        authzid: &str,
        user: &str,
        password: &str,
    ) -> Result<(), String> {
        let msg = format!("{authzid}\0{user}\0{password}");
        self.send_auth("PLAIN", Some(msg.as_bytes())).await;
        match self.sasl_reply().await {
            SaslReply::Success(_) => Ok(()),
            SaslReply::Failure(c) => Err(c),
            other => panic!("unexpected answer to PLAIN: {other:?}"),
        }
    }

    /// PLAIN without authzid. `Err(condition)` on failure.
    pub async fn auth_plain(&mut self, user: &str, password: &str) -> Result<(), String> {
        self.auth_plain_authz("", user, password).await
    }

    /// SCRAM-SHA-1 or SCRAM-SHA-256 via the `sasl` crate. `Err(condition)`.
    pub async fn auth_scram(
        &mut self,
        mechanism: &str,
        user: &str,
        password: &str,
    ) -> Result<(), String> {
        use sasl::client::mechanisms::Scram;
        use sasl::common::scram::{Sha1, Sha256};
        use sasl::common::{ChannelBinding, Credentials};
        let creds = Credentials::default()
            .with_username(user)
            .with_password(password)
            .with_channel_binding(ChannelBinding::None);
        match mechanism {
            "SCRAM-SHA-1" => {
                let m = <Scram<Sha1> as sasl::client::Mechanism>::from_credentials(creds)
                    .expect("scram");
                self.run_sasl_mechanism(m).await
            }
            "SCRAM-SHA-256" => {
                let m = <Scram<Sha256> as sasl::client::Mechanism>::from_credentials(creds)
                    .expect("scram");
                self.run_sasl_mechanism(m).await
            }
            other => panic!("auth_scram: unsupported mechanism {other}"),
        }
    }

    async fn run_sasl_mechanism<M: sasl::client::Mechanism>(
        &mut self,
        mut m: M,
    ) -> Result<(), String> {
        let name = m.name().to_string();
        let first = m.initial();
        self.send_auth(&name, Some(&first)).await;
        // At most a handful of round trips: SCRAM needs one challenge.
        for _ in 0..4 {
            match self.sasl_reply().await {
                SaslReply::Challenge(c) => {
                    let r = m
                        .response(&c)
                        .unwrap_or_else(|e| panic!("{name}: bad challenge: {e}"));
                    self.send_response(&r).await;
                }
                SaslReply::Success(d) => {
                    m.success(&d)
                        .unwrap_or_else(|e| panic!("{name}: server signature rejected: {e}"));
                    return Ok(());
                }
                SaslReply::Failure(c) => return Err(c),
                other => panic!("{name}: unexpected {other:?}"),
            }
        }
        panic!("{name}: too many SASL round trips");
    }

    /// Runs a hand-rolled SCRAM exchange. `Err(condition)` on failure.
    pub async fn auth_scram_custom(&mut self, mut sc: ScramClient) -> Result<(), String> {
        let mech = sc.mechanism();
        self.send_auth(&mech, Some(&sc.client_first())).await;
        let server_first = match self.sasl_reply().await {
            SaslReply::Challenge(c) => c,
            SaslReply::Failure(c) => return Err(c),
            other => panic!("{mech}: unexpected first reply {other:?}"),
        };
        let fin = sc
            .client_final(&server_first)
            .unwrap_or_else(|e| panic!("{mech}: bad server-first-message: {e}"));
        self.send_response(&fin).await;
        match self.sasl_reply().await {
            SaslReply::Success(d) => {
                sc.verify_server_final(&d)
                    .unwrap_or_else(|e| panic!("{mech}: {e}"));
                Ok(())
            }
            SaslReply::Challenge(d) if d.starts_with(b"e=") => {
                // server-final-message carrying an error: finish the exchange.
                self.send_response(b"").await;
                match self.sasl_reply().await {
                    SaslReply::Failure(c) => Err(c),
                    other => panic!("{mech}: expected failure after e=, got {other:?}"),
                }
            }
            SaslReply::Challenge(d) => {
                // RFC 6120 allows server-final in a challenge, then success.
                sc.verify_server_final(&d)
                    .unwrap_or_else(|e| panic!("{mech}: {e}"));
                self.send_response(b"").await;
                match self.sasl_reply().await {
                    SaslReply::Success(_) => Ok(()),
                    SaslReply::Failure(c) => Err(c),
                    other => panic!("{mech}: unexpected {other:?}"),
                }
            }
            SaslReply::Failure(c) => Err(c),
            other => panic!("{mech}: unexpected final reply {other:?}"),
        }
    }

    /// Channel-binding data of the current TLS connection for `cb_type`.
    pub fn channel_binding(&self, cb_type: &str) -> Vec<u8> {
        let tls = self.tls.as_ref().expect("channel binding needs TLS");
        match cb_type {
            "tls-exporter" => tls.exporter.clone(),
            "tls-server-end-point" => {
                tls_server_end_point(tls.peer_certs.first().expect("server certificate"))
            }
            other => panic!("unknown channel-binding type {other}"),
        }
    }

    /// SCRAM-*-PLUS with the real channel-binding data for `cb_type`.
    pub async fn auth_scram_plus(
        &mut self,
        hash: ScramHash,
        cb_type: &str,
        user: &str,
        password: &str,
    ) -> Result<(), String> {
        let data = self.channel_binding(cb_type);
        let sc = ScramClient::new(
            hash,
            user,
            password,
            Gs2Binding::Bind {
                cb_type: cb_type.to_string(),
                data,
            },
            None,
        );
        self.auth_scram_custom(sc).await
    }

    /// SCRAM-SHA-256 (panicking on failure) followed by a stream restart;
    /// asserts the restarted features offer resource binding.
    pub async fn login_scram(&mut self, user: &str, password: &str) {
        self.auth_scram("SCRAM-SHA-256", user, password)
            .await
            .unwrap_or_else(|c| panic!("SCRAM-SHA-256 login of {user} failed: <{c}/>"));
        let f = self.open_stream().await;
        assert!(
            f.child_ns("bind", NS_BIND).is_some(),
            "no <bind/> feature after authentication: {f}"
        );
    }

    // ----- stanzas ----------------------------------------------------------

    /// Sends `xml` (an iq carrying `id='{id}'`) and waits for the iq result
    /// or error with that id.
    pub async fn request(&mut self, xml: &str, id: &str) -> Element {
        self.send(xml).await;
        let id = id.to_string();
        self.recv_where(&format!("iq reply id={id}"), move |e| {
            e.name == "iq"
                && e.attr("id") == Some(id.as_str())
                && matches!(e.attr("type"), Some("result") | Some("error"))
        })
        .await
    }

    /// Binds a resource; `Ok(full JID)` or `Err(iq error element)`.
    pub async fn bind(&mut self, resource: Option<&str>) -> Result<String, Element> {
        let id = self.id();
        let inner = match resource {
            Some(r) => format!("<resource>{}</resource>", esc(r)),
            None => String::new(),
        };
        let xml = format!(
            "<iq type='set' id='{id}'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>{inner}</bind></iq>"
        );
        let reply = self.request(&xml, &id).await;
        if reply.attr("type") != Some("result") {
            return Err(reply);
        }
        let jid = reply
            .child_ns("bind", NS_BIND)
            .and_then(|b| b.child("jid"))
            .map(|j| j.text.trim().to_string())
            .unwrap_or_else(|| panic!("bind result without <jid/>: {reply}"));
        self.jid = Some(jid.clone());
        Ok(jid)
    }

    /// Legacy RFC 3921 session establishment; returns the reply.
    pub async fn session(&mut self) -> Element {
        let id = self.id();
        let xml = format!(
            "<iq type='set' id='{id}'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>"
        );
        self.request(&xml, &id).await
    }

    /// XEP-0199 ping to `to`; returns the reply.
    pub async fn ping(&mut self, to: &str) -> Element {
        let id = self.id();
        let xml = format!(
            "<iq type='get' to='{}' id='{id}'><ping xmlns='urn:xmpp:ping'/></iq>",
            esc(to)
        );
        self.request(&xml, &id).await
    }

    /// Sends initial presence.
    pub async fn presence(&mut self) {
        self.send("<presence/>").await;
    }

    /// The bound full JID (panics before bind).
    pub fn full_jid(&self) -> String {
        self.jid.clone().expect("not bound yet")
    }
}
