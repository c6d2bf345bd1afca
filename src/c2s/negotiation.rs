//! Stream negotiation of a client connection (RFC 6120 §4–§7): header
//! checks, features, STARTTLS (or direct TLS), SASL through the `sasl`
//! crate's server trait, the stream restart, and resource binding.
//! Everything before binding runs in the connection's one task, reading and
//! writing in turn. Until SASL succeeds the stream reads under the
//! listener's small pre-authentication stanza limit, then under
//! `max_stanza_size`; every read waits at most `STEP_TIMEOUT`, and none
//! past the `negotiation_timeout` deadline counted from the accept.
//! XEP-0388 SASL2 and XEP-0386 Bind 2 are in `negotiation/sasl2.rs` and
//! `negotiation/bind2.rs`; SASL2 shares this file's mechanism exchange.
//! A WebSocket connection ([`Conn::WebSocket`]) runs the same steps in
//! `Framing::WebSocket`: no TLS to do (the HTTP listener's), no STARTTLS,
//! no channel binding, `<open/>` instead of the stream header. A BOSH
//! connection ([`Conn::Bosh`], `Framing::Bosh`) is the same as WebSocket.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use sasl::common::Identity;
use sasl::server::Response;
use tokio::io::{split, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use xep_support::element::Element;
use xep_support::ns;
use xep_support::stanza::{iq_error, Condition, ErrorType, StanzaError};

use super::cork::{Cork, Corked};
use super::framing::Framing;
use super::sm::resume::Resumption;
use crate::auth::{self, ChannelBindings, CredentialStore, SaslContext};
use crate::config::Listener;
use crate::server::Server;
use crate::sessions::{BindRefused, Outgoing, SessionHandle, Sessions, SESSION_QUEUE};
use crate::stream::BoxIo;
use crate::stream::StreamCondition;
use crate::xml::{StreamEvent, StreamHeader, StreamReader, XmlError};

/// Time allowed for each step of the negotiation.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// Time allowed for a TLS handshake.
const TLS_TIMEOUT: Duration = Duration::from_secs(15);
/// Failed authentications one connection may try before it is closed.
const MAX_AUTH_ATTEMPTS: u32 = 5;
/// Iqs (registration) one connection may send before authenticating.
const MAX_PRE_AUTH_IQS: u32 = 10;

pub(super) type Rd = ReadHalf<BoxIo>;

// Size guards (64-bit targets; docs/architecture.md, "Memory per
// session"): the stream reader lives as long as the session, 360 bytes;
// `Bound` (544 bytes) is why the negotiation's result is passed boxed and
// never kept by an `async fn` (c2s/mod.rs, session.rs). Update those texts
// when a number here changes.
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<StreamReader<Rd>>() == 360);
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<Bound>() == 544);

type Wr = WriteHalf<BoxIo>;

mod bind2;
pub(crate) mod fast;
mod sasl2;
mod upgrade;
use sasl2::{Authenticated, Profile};

/// A bound session, ready for stanzas.
pub struct Bound {
    pub reader: StreamReader<Rd>,
    pub writer: Wr,
    pub handle: Arc<SessionHandle>,
    pub rx: crate::queue::Receiver<Outgoing>,
    pub peer: SocketAddr,
    /// For a XEP-0198 resumption: the `<resumed/>` to write first (the
    /// unacknowledged stanzas follow it).
    pub resumed: Option<Element>,
    /// The transport's cork, released: the writer puts it back in to send
    /// the stream's end and the TLS close_notify in one write.
    pub cork: Cork,
    /// How the stream is framed on its transport.
    pub framing: Framing,
    /// What the transport kept undelivered (BOSH), taken when the session
    /// ends for good.
    pub undelivered: Option<Arc<dyn super::Undelivered>>,
}

/// Reads credentials for one host from storage.
struct HostCredentials {
    server: Arc<Server>,
    host: String,
}

impl CredentialStore for HostCredentials {
    fn credentials(&self, username: &str) -> Option<auth::credentials::StoredCredentials> {
        let account = crate::storage::AccountKey::new(&self.host, username);
        match self.server.storage.get_credentials(account) {
            Ok(creds) => creds,
            Err(e) => {
                // Unreadable credentials fail this login like a wrong
                // password (the client learns nothing more); the admin
                // learns which account.
                tracing::error!("reading the credentials of {account}: {e}; login refused");
                None
            }
        }
    }

    fn upgrade(&self, username: &str, full: &auth::credentials::StoredCredentials) {
        let current = self.credentials(username);
        if !current.as_ref().is_some_and(|c| c.needs_upgrade()) {
            return;
        }
        match self
            .server
            .storage
            .set_credentials(crate::storage::AccountKey::new(&self.host, username), full)
        {
            Ok(_) => tracing::info!(
                "{username}@{}: SCRAM-SHA-1-only credentials replaced by SCRAM-SHA-1 and \
                 SCRAM-SHA-256 ones at a PLAIN login",
                self.host
            ),
            Err(e) => tracing::warn!("{username}@{}: credential upgrade failed: {e}", self.host),
        }
    }
}

/// How the negotiation ended early.
enum Stop {
    /// Send this stream error, then close.
    Error(StreamCondition, Option<String>),
    /// Close quietly (peer gone, or it closed the stream).
    Quiet,
    /// The peer sent `</stream:stream>`: answer it and close.
    PeerClosed,
}

impl From<XmlError> for Stop {
    fn from(e: XmlError) -> Self {
        match e.condition() {
            Some(c) => Stop::Error(c, Some(e.to_string())),
            None => Stop::Quiet,
        }
    }
}

struct Negotiation {
    server: Arc<Server>,
    listener: Arc<Listener>,
    peer: SocketAddr,
    reader: StreamReader<Rd>,
    writer: Wr,
    tls: bool,
    bindings: ChannelBindings,
    host: Option<String>,
    user: Option<String>,
    header_sent: bool,
    framing: Framing,
    auth_failures: u32,
    pre_auth_iqs: u32,
    /// The XEP-0445 invitation this stream presented (see `mod_invites`).
    preauth: std::sync::Mutex<Option<String>>,
    /// The stream header's `from` names an account of this host that has
    /// SCRAM-SHA-1 credentials only (imported): SCRAM-SHA-256 is not offered
    /// to it (it would fail), so the lists SSDP signs are the usable ones.
    from_sha1_only: bool,
    /// The XEP-0388 `<user-agent id/>` of the client, when it gave one.
    user_agent: Option<String>,
    /// The XEP-0484 context of the SASL2 exchange under way, if any.
    fast: Option<Arc<auth::fast::FastContext>>,
    /// Holds the negotiation's writes until its next read (see [`Cork`]).
    cork: Cork,
    /// No read waits past this (`negotiation_timeout` after the accept).
    deadline: Option<tokio::time::Instant>,
    /// The BOSH transport's undelivered messages, for `Bound`.
    undelivered: Option<Arc<dyn super::Undelivered>>,
}

fn stream_id() -> String {
    use rand::Rng;
    let v: u64 = rand::thread_rng().gen();
    format!("{v:016x}")
}

/// The transport a client connection came on.
pub enum Conn {
    /// A TCP connection of a c2s listener (TLS, if any, still to do).
    Tcp(TcpStream),
    /// RFC 7395 messages of a WebSocket (see `crate::http::ws`), over TLS
    /// when `secure`.
    WebSocket { io: BoxIo, secure: bool },
    /// XEP-0206 messages of a BOSH session (see `crate::http::bosh`), over
    /// TLS when `secure`; `undelivered` gives back what no request carried.
    Bosh {
        io: BoxIo,
        secure: bool,
        undelivered: Arc<dyn super::Undelivered>,
    },
}

/// Run the negotiation; `None` when the connection ended before binding.
pub async fn negotiate(
    server: Arc<Server>,
    conn: Conn,
    peer: SocketAddr,
    listener: Arc<Listener>,
) -> Option<Bound> {
    let deadline = server
        .config()
        .negotiation_timeout
        .map(|t| tokio::time::Instant::now() + t);
    let mut tls = false;
    let mut bindings = ChannelBindings::default();
    let cork = Cork::new();
    let mut undelivered = None;
    let (sock, framing): (BoxIo, _) = match conn {
        Conn::Tcp(sock) => (Box::new(Corked::new(sock, cork.clone())), Framing::Stream),
        Conn::WebSocket { io, secure } => {
            // TLS (if any) is the HTTP listener's, under the WebSocket: no
            // STARTTLS, and no channel binding (its data is not ours to
            // read there, so SCRAM-PLUS is not offered).
            tls = secure;
            cork.release();
            (io, Framing::WebSocket)
        }
        Conn::Bosh {
            io,
            secure,
            undelivered: u,
        } => {
            // As WebSocket: TLS is the HTTP listener's.
            tls = secure;
            cork.release();
            undelivered = Some(u);
            (io, Framing::Bosh)
        }
    };
    let io: BoxIo = if listener.tls && framing == Framing::Stream {
        let acceptor = server.live().tls_acceptor(true);
        let stream = tls_accept(&acceptor, sock, &cork, peer).await?;
        tls = true;
        bindings = binding_data(&server, stream.get_ref().1);
        Box::new(stream)
    } else {
        sock
    };
    let (rd, wr) = split(io);
    let mut reader = StreamReader::new(rd, listener.pre_auth_limit());
    if let Some(shaper) = listener
        .shaper
        .as_deref()
        .and_then(|name| server.config().shaper_for(name, None, Some(peer.ip())))
    {
        reader.limiter().set_shaper(shaper.rate, shaper.burst_size);
    }
    let mut n = Negotiation {
        server,
        listener,
        peer,
        reader,
        writer: wr,
        tls,
        bindings,
        host: None,
        user: None,
        header_sent: false,
        framing,
        auth_failures: 0,
        pre_auth_iqs: 0,
        preauth: std::sync::Mutex::new(None),
        from_sha1_only: false,
        user_agent: None,
        fast: None,
        cork,
        deadline,
        undelivered,
    };
    let mut shutdown = n.server.shutdown_signal();
    let result = tokio::select! {
        r = n.run() => r,
        _ = shutdown.wait_for(|v| *v) => Err(Stop::Error(StreamCondition::SystemShutdown, None)),
    };
    match result {
        Ok(bound) => {
            // The session's writer task writes while nothing reads: from
            // now on every write goes out when flushed.
            n.cork.release();
            Some(bound)
        }
        Err(stop) => {
            n.finish(stop).await;
            None
        }
    }
}

/// The TLS handshake on a corked transport. On failure, the alert rustls
/// wrote (if any) is sent before the connection is dropped, as without
/// the cork; `None` (logged) on failure or after `TLS_TIMEOUT`.
async fn tls_accept(
    acceptor: &tokio_rustls::TlsAcceptor,
    io: BoxIo,
    cork: &Cork,
    peer: SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<BoxIo>> {
    match tokio::time::timeout(TLS_TIMEOUT, acceptor.accept(io).into_fallible()).await {
        Ok(Ok(s)) => {
            crate::metrics::tls_handshake("c2s", true);
            // The session tickets rustls wrote at the handshake's end leave
            // with the stream features, not on their own.
            cork.hold_once_more();
            Some(s)
        }
        Ok(Err((e, mut io))) => {
            crate::conn_log::tls_failed("c2s", &peer, &e);
            cork.release();
            let _ = tokio::time::timeout(Duration::from_secs(2), io.flush()).await;
            None
        }
        Err(_) => {
            crate::conn_log::tls_failed("c2s", &peer, &"timed out");
            None
        }
    }
}

fn binding_data(server: &Server, conn: &rustls::ServerConnection) -> ChannelBindings {
    ChannelBindings {
        tls_exporter: crate::tls::tls_exporter(conn),
        tls_server_end_point: server.live().tls.server_end_point(conn),
    }
}

impl Negotiation {
    /// Write `xml` (complete elements; in WebSocket framing, a single
    /// element needs no message end: it is added) and flush.
    async fn send(&mut self, xml: &str) -> Result<(), Stop> {
        let end = super::framing::MESSAGE_END;
        let framed = (self.framing.messages() && !xml.ends_with(end)).then_some(end);
        let ok = tokio::time::timeout(STEP_TIMEOUT, async {
            self.writer.write_all(xml.as_bytes()).await?;
            if let Some(end) = framed {
                self.writer.write_all(&[end as u8]).await?;
            }
            self.writer.flush().await
        })
        .await;
        match ok {
            Ok(Ok(())) => Ok(()),
            _ => Err(Stop::Quiet),
        }
    }

    async fn next(&mut self) -> Result<StreamEvent, Stop> {
        let step = tokio::time::Instant::now() + STEP_TIMEOUT;
        let until = self.deadline.map_or(step, |d| d.min(step));
        match tokio::time::timeout_at(until, self.reader.next()).await {
            Ok(Ok(ev)) => Ok(ev),
            Ok(Err(e)) => Err(e.into()),
            Err(_) if until < step => Err(Stop::Error(
                StreamCondition::ConnectionTimeout,
                Some("stream negotiation not finished within negotiation_timeout".into()),
            )),
            Err(_) => Err(Stop::Error(StreamCondition::ConnectionTimeout, None)),
        }
    }

    /// Read the next top-level element, treating the stream's end as a stop.
    async fn next_element(&mut self) -> Result<Element, Stop> {
        match self.next().await? {
            StreamEvent::Stanza(e) => Ok(e),
            StreamEvent::End => Err(Stop::PeerClosed),
            StreamEvent::Header(_) => Err(Stop::Error(StreamCondition::NotWellFormed, None)),
        }
    }

    async fn finish(&mut self, stop: Stop) {
        let tail = match stop {
            Stop::Quiet => {
                let _ = self.writer.shutdown().await;
                return;
            }
            Stop::PeerClosed => self.framing.close(),
            Stop::Error(cond, text) => {
                let mut s = String::new();
                if !self.header_sent {
                    s.push_str(
                        &self.header_xml(self.host.clone().unwrap_or_else(|| self.default_host())),
                    );
                }
                s.push_str(
                    &self
                        .framing
                        .error(self.kind(), &self.peer, cond, text.as_deref()),
                );
                s
            }
        };
        let _ = self.send(&tail).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.writer.shutdown()).await;
    }

    fn default_host(&self) -> String {
        self.server
            .config()
            .hosts
            .first()
            .cloned()
            .unwrap_or_default()
    }

    fn header_xml(&self, host: String) -> String {
        self.framing.open(&host, &stream_id())
    }

    /// The connection's kind in the log.
    fn kind(&self) -> &'static str {
        match self.framing {
            Framing::Stream => "c2s",
            Framing::WebSocket => "c2s websocket",
            Framing::Bosh => "c2s bosh",
        }
    }

    /// Read a stream header, check it, and answer with ours and the features.
    async fn open_stream(&mut self) -> Result<(), Stop> {
        let header = match self.next().await? {
            StreamEvent::Header(h) => h,
            _ => return Err(Stop::Error(StreamCondition::NotWellFormed, None)),
        };
        let host = self.check_header(&header)?;
        // Header and features in one write: one TLS record and one system
        // call instead of two, three times per login.
        let mut xml = self.header_xml(host.clone());
        self.host = Some(host);
        xml.push_str(&self.framing.to_xml(&self.features()));
        self.header_sent = true;
        self.send(&xml).await
    }

    fn check_header(&mut self, h: &StreamHeader) -> Result<String, Stop> {
        if !h.stream_ns_ok {
            return Err(Stop::Error(
                StreamCondition::InvalidNamespace,
                Some("the stream element must be stream:stream".into()),
            ));
        }
        if h.default_ns != ns::CLIENT {
            return Err(Stop::Error(
                StreamCondition::InvalidNamespace,
                Some(format!("expected {} as the content namespace", ns::CLIENT)),
            ));
        }
        let to =
            h.to.as_deref()
                .map(|t| t.trim_end_matches('.').to_lowercase())
                .unwrap_or_default();
        if !self.server.serves(&to) {
            return Err(Stop::Error(StreamCondition::HostUnknown, None));
        }
        if let Some(prev) = &self.host {
            if *prev != to {
                return Err(Stop::Error(
                    StreamCondition::HostUnknown,
                    Some("the host changed on restart".into()),
                ));
            }
        }
        match h
            .version
            .as_deref()
            .and_then(|v| v.split('.').next())
            .map(str::trim)
        {
            Some("1") => {}
            _ => {
                self.host = Some(to);
                return Err(Stop::Error(
                    StreamCondition::UnsupportedVersion,
                    Some("version 1.0 is required".into()),
                ));
            }
        }
        if self.user.is_none() {
            self.from_sha1_only = self.sha1_only_account(h.from.as_deref(), &to);
        }
        Ok(to)
    }

    /// Whether the header's `from` (not required; used when present, as
    /// XEP-0388 suggests, to tailor the mechanisms) is an account of `host`
    /// that has SCRAM-SHA-1 credentials only.
    fn sha1_only_account(&self, from: Option<&str>, host: &str) -> bool {
        let Some(jid) = from.and_then(|f| jid::BareJid::new(f.trim()).ok()) else {
            return false;
        };
        let Some(node) = jid.node() else {
            return false;
        };
        if jid.domain().as_str() != host {
            return false;
        }
        let account = crate::storage::AccountKey::new(host, node.as_str());
        matches!(
            self.server.storage.get_credentials(account),
            Ok(Some(c)) if c.needs_upgrade()
        )
    }

    fn sasl_context(&self) -> SaslContext {
        let host = self.host.clone().unwrap_or_default();
        SaslContext {
            domain: host.clone(),
            tls: self.tls,
            bindings: self.bindings.clone(),
            store: Arc::new(HostCredentials {
                server: self.server.clone(),
                host,
            }),
            sha256: self.server.config().scram_sha256 && !self.from_sha1_only,
            ssdp: None,
            fast: self.fast.clone(),
        }
        .with_ssdp()
    }

    fn tls_required_but_missing(&self) -> bool {
        self.listener.starttls_required && !self.tls
    }

    fn features(&self) -> Element {
        let mut f = Element::new("features", ns::STREAM);
        if self.user.is_some() {
            f = f
                .with_child(Element::new("bind", ns::BIND))
                .with_child(
                    Element::new("session", ns::SESSION)
                        .with_child(Element::new("optional", ns::SESSION)),
                )
                .with_child(Element::new("ver", crate::im::roster::NS_ROSTER_VER))
                .with_child(Element::new("sub", "urn:xmpp:features:pre-approval"));
            for m in &self.server.live().modules {
                for e in m.stream_features() {
                    f = f.with_child(e);
                }
                if let Some(caps) = m
                    .as_any()
                    .and_then(|a| a.downcast_ref::<xep_support::caps::Caps>())
                {
                    f = f.with_child(caps.stream_feature(self.server.as_ref()));
                }
            }
            return f;
        }
        // No STARTTLS inside a WebSocket: TLS is the HTTP listener's.
        if !self.tls && self.framing == Framing::Stream {
            let mut st = Element::new("starttls", ns::TLS);
            if self.listener.starttls_required {
                st = st.with_child(Element::new("required", ns::TLS));
            }
            f = f.with_child(st);
        }
        if !self.tls_required_but_missing() {
            let ctx = self.sasl_context();
            let mut mechs = Element::new("mechanisms", ns::SASL);
            for m in auth::offered_mechanisms(&ctx) {
                mechs = mechs.with_child(Element::new("mechanism", ns::SASL).with_text(m));
            }
            f = f.with_child(mechs);
            f = f.with_child(self.sasl2_feature(&ctx));
            let cbs = auth::channel_binding_types(&ctx);
            if !cbs.is_empty() {
                let mut e = Element::new("sasl-channel-binding", ns::SASL_CB);
                for cb in cbs {
                    e = e.with_child(
                        Element::new("channel-binding", ns::SASL_CB).with_attr("type", cb),
                    );
                }
                f = f.with_child(e);
            }
            let live = self.server.live();
            let host = self.host.clone().unwrap_or_default();
            for m in &live.modules {
                for e in m.pre_auth_stream_features(self.server.as_ref(), &host, self.peer.ip()) {
                    f = f.with_child(e);
                }
            }
        }
        f
    }

    async fn run(&mut self) -> Result<Bound, Stop> {
        self.open_stream().await?;
        loop {
            let el = self.next_element().await?;
            if el.is("starttls", ns::TLS) {
                self.starttls().await?;
                self.open_stream().await?;
            } else if el.is("auth", ns::SASL) {
                if self.user.is_some() {
                    return Err(Stop::Error(
                        StreamCondition::PolicyViolation,
                        Some("already authenticated".into()),
                    ));
                }
                if self.sasl(el).await? {
                    // Stream restart (RFC 6120 §6.4.6): a fresh parser, same transport.
                    let reader = std::mem::replace(&mut self.reader, placeholder_reader());
                    self.reader = reader.restart();
                    self.reader
                        .set_max_stanza_size(self.listener.max_stanza_size);
                    self.open_stream().await?;
                }
            } else if el.is("authenticate", ns::SASL2) {
                if self.user.is_some() {
                    return Err(Stop::Error(
                        StreamCondition::PolicyViolation,
                        Some("already authenticated".into()),
                    ));
                }
                // No stream restart (XEP-0388 §2.6): a bound session (Bind 2
                // or a resumption) or the post-authentication features.
                if let Some(bound) = self.sasl2(el).await? {
                    return Ok(bound);
                }
            } else if el.ns == ns::SM && self.user.is_some() && self.server.live().sm.is_some() {
                if el.name == "resume" {
                    if let Some(bound) = self.resume(el).await? {
                        return Ok(bound);
                    }
                } else {
                    // <enable/> (or <r/>, <a/>) before a resource is bound.
                    let f = super::sm::wire::failed(Condition::UnexpectedRequest, None);
                    self.send(&self.framing.to_xml(&f)).await?;
                }
            } else if el.is("iq", ns::CLIENT) && self.user.is_some() {
                if let Some(bound) = self.bind(el).await? {
                    return Ok(bound);
                }
            } else if el.is("iq", ns::CLIENT) && self.pre_auth_iq_allowed(&el) {
                self.pre_auth_iq(el).await?;
            } else if el.ns == ns::CLIENT
                && matches!(el.name.as_str(), "iq" | "message" | "presence")
            {
                return Err(Stop::Error(StreamCondition::NotAuthorized, None));
            } else {
                return Err(Stop::Error(
                    StreamCondition::UnsupportedStanzaType,
                    Some(format!("unexpected <{}/>", el.name)),
                ));
            }
        }
    }

    async fn starttls(&mut self) -> Result<(), Stop> {
        if self.tls || self.user.is_some() || self.framing != Framing::Stream {
            let xml = self.framing.raw(&format!("<failure xmlns='{}'/>", ns::TLS))
                + &self.framing.close();
            self.send(&xml).await?;
            return Err(Stop::Quiet);
        }
        self.send(&format!("<proceed xmlns='{}'/>", ns::TLS))
            .await?;
        let reader = std::mem::replace(&mut self.reader, placeholder_reader());
        let (rd, leftover) = reader.into_inner();
        let writer = std::mem::replace(&mut self.writer, placeholder_writer());
        let mut io = rd.unsplit(writer);
        if !crate::conn_log::starttls_leftover_ok("c2s", &self.peer, &leftover) {
            // Bytes pipelined after <starttls/> would be read as plaintext:
            // refuse (after the <proceed/>, which the cork still holds).
            // Whitespace (go-xmpp's newline) is dropped.
            self.cork.release();
            let _ = tokio::time::timeout(Duration::from_secs(2), io.flush()).await;
            return Err(Stop::Quiet);
        }
        let acceptor = self.server.live().tls_acceptor(false);
        let Some(stream) = tls_accept(&acceptor, io, &self.cork, self.peer).await else {
            return Err(Stop::Quiet);
        };
        self.bindings = binding_data(&self.server, stream.get_ref().1);
        self.tls = true;
        let (rd, wr) = split(Box::new(stream) as BoxIo);
        self.reader = StreamReader::new(rd, self.listener.pre_auth_limit());
        if let Some(shaper) = self.listener.shaper.as_deref().and_then(|name| {
            self.server
                .config()
                .shaper_for(name, None, Some(self.peer.ip()))
        }) {
            self.reader
                .limiter()
                .set_shaper(shaper.rate, shaper.burst_size);
        }
        self.writer = wr;
        self.header_sent = false;
        Ok(())
    }

    /// Answer a failed exchange with `condition` after the per-address
    /// delay (`Server::auth_failed`); too many failures on one connection
    /// end it. The same for both SASL profiles.
    async fn sasl_failure(&mut self, profile: Profile, condition: &str) -> Result<(), Stop> {
        self.auth_failures += 1;
        let delay = self.server.auth_failed(self.peer.ip());
        tokio::time::sleep(delay).await;
        self.send(&profile.failure(condition)).await?;
        if self.auth_failures >= MAX_AUTH_ATTEMPTS {
            return Err(Stop::Error(
                StreamCondition::PolicyViolation,
                Some("too many authentication failures".into()),
            ));
        }
        Ok(())
    }

    /// One RFC 6120 SASL exchange. `Ok(true)` when authenticated.
    async fn sasl(&mut self, auth: Element) -> Result<bool, Stop> {
        let name = auth.attr("mechanism").unwrap_or("").to_string();
        match self
            .sasl_exchange(Profile::Sasl1, &name, Some(auth.text()))
            .await?
        {
            Some(ok) => {
                let b64 = if ok.data.is_empty() {
                    String::new()
                } else {
                    base64::engine::general_purpose::STANDARD.encode(&ok.data)
                };
                self.send(&format!("<success xmlns='{}'>{b64}</success>", ns::SASL))
                    .await?;
                self.authenticated(ok.user, &name);
                Ok(true)
            }
            None => {
                crate::metrics::auth(&name, false);
                Ok(false)
            }
        }
    }

    /// Record a successful authentication of `user`.
    fn authenticated(&mut self, user: String, mechanism: &str) {
        crate::metrics::auth(mechanism, true);
        self.server.auth_succeeded(self.peer.ip());
        tracing::info!(peer = %self.peer, "{user}@{} authenticated with {mechanism}", self.host.as_deref().unwrap_or(""));
        self.user = Some(user);
        // Authenticated: stanzas may be as large as the listener allows.
        self.reader
            .set_max_stanza_size(self.listener.max_stanza_size);
    }

    /// The mechanism exchange both profiles share (RFC 6120 §6.4, XEP-0388
    /// §2.5): TLS requirement, mechanism choice, challenges and responses,
    /// `<abort/>`, failures (rate-limited). `initial` is the initial
    /// response's base64 text, if any. `Some` when the mechanism succeeded;
    /// the caller sends the profile's `<success/>`. `None`: a failure was sent.
    async fn sasl_exchange(
        &mut self,
        profile: Profile,
        name: &str,
        initial: Option<String>,
    ) -> Result<Option<Authenticated>, Stop> {
        if self.tls_required_but_missing() {
            self.send(&profile.failure("encryption-required")).await?;
            return Ok(None);
        }
        let ctx = self.sasl_context();
        let Some(mut mech) = auth::new_mechanism(name, &ctx) else {
            self.send(&profile.failure("invalid-mechanism")).await?;
            return Ok(None);
        };
        let mut payload = match decode_b64(initial.as_deref().unwrap_or("")) {
            Some(p) => p,
            None => {
                self.sasl_failure(profile, "incorrect-encoding").await?;
                return Ok(None);
            }
        };
        loop {
            match mech.respond(&payload) {
                Ok(Response::Proceed(data)) => {
                    let b64 = base64::engine::general_purpose::STANDARD.encode(data);
                    self.send(&format!(
                        "<challenge xmlns='{}'>{b64}</challenge>",
                        profile.ns()
                    ))
                    .await?;
                    let el = self.next_element().await?;
                    if el.is("abort", profile.ns()) {
                        self.send(&profile.failure("aborted")).await?;
                        return Ok(None);
                    }
                    if !el.is("response", profile.ns()) {
                        self.sasl_failure(profile, "malformed-request").await?;
                        return Ok(None);
                    }
                    payload = match decode_b64(&el.text()) {
                        Some(p) => p,
                        None => {
                            self.sasl_failure(profile, "incorrect-encoding").await?;
                            return Ok(None);
                        }
                    };
                }
                Ok(Response::Success(identity, data)) => {
                    let Identity::Username(user) = identity else {
                        self.sasl_failure(profile, "not-authorized").await?;
                        return Ok(None);
                    };
                    // A banned account (ban_account) logs in nowhere.
                    let host = self.host.clone().unwrap_or_default();
                    let ban = crate::auth::ban::banned(self.server.module_access(), &user, &host);
                    if let Some((_, reason)) = ban {
                        tracing::info!(peer = %self.peer, "login of banned account {user}@{host} refused ({reason})");
                        self.sasl_failure(profile, "account-disabled").await?;
                        return Ok(None);
                    }
                    return Ok(Some(Authenticated { user, data }));
                }
                Err(e) => {
                    let cond = mech.failure_condition(&e);
                    tracing::info!(peer = %self.peer, "authentication failed ({name}): {cond}");
                    self.sasl_failure(profile, cond).await?;
                    return Ok(None);
                }
            }
        }
    }

    /// Whether this iq before authentication goes to a module (XEP-0077):
    /// only once TLS is up where it is required, and only for namespaces
    /// a module answers before authentication.
    fn pre_auth_iq_allowed(&self, iq: &Element) -> bool {
        if self.tls_required_but_missing() {
            return false;
        }
        let Some(payload) = iq.first_child() else {
            return false;
        };
        self.server
            .live()
            .pre_auth_module_for(&payload.ns)
            .is_some()
    }

    /// Answer an iq sent before authentication through its module.
    async fn pre_auth_iq(&mut self, iq: Element) -> Result<(), Stop> {
        self.pre_auth_iqs += 1;
        if self.pre_auth_iqs > MAX_PRE_AUTH_IQS {
            return Err(Stop::Error(
                StreamCondition::PolicyViolation,
                Some("too many requests before authentication".into()),
            ));
        }
        let kind = iq.attr("type").unwrap_or("");
        if kind != "get" && kind != "set" {
            return Ok(()); // results and errors: nothing to answer
        }
        let live = self.server.live();
        let reply = match iq.first_child() {
            Some(payload) if iq.child_elements().count() == 1 => {
                match live.pre_auth_module_for(&payload.ns) {
                    Some(module) => {
                        let host = self.host.clone().unwrap_or_default();
                        let req = xep_support::module::PreAuthIq {
                            stanza: &iq,
                            payload,
                            is_set: kind == "set",
                            host: &host,
                            ip: self.peer.ip(),
                            preauth: &self.preauth,
                        };
                        // Account creation hashes the password: off the async workers.
                        let server = self.server.clone();
                        let result = tokio::task::block_in_place(|| {
                            module.handle_pre_auth_iq(server.as_ref(), &req)
                        });
                        match result {
                            Ok(p) => xep_support::stanza::iq_result(&iq, p),
                            Err(e) => iq_error(&iq, &e),
                        }
                    }
                    None => iq_error(&iq, &StanzaError::service_unavailable()),
                }
            }
            _ => iq_error(&iq, &StanzaError::bad_request()),
        };
        let mut reply = reply;
        reply.remove_attr("from");
        reply.remove_attr("to");
        self.send(&self.framing.to_xml(&reply)).await
    }

    /// Handle an iq after authentication: resource binding, or an error.
    async fn bind(&mut self, iq: Element) -> Result<Option<Bound>, Stop> {
        let is_bind = iq.attr("type") == Some("set") && iq.child("bind", ns::BIND).is_some();
        if !is_bind {
            if iq.attr("type") == Some("get") || iq.attr("type") == Some("set") {
                let reply = iq_error(
                    &iq,
                    &StanzaError::new(ErrorType::Wait, Condition::NotAuthorized),
                );
                self.send(&self.framing.to_xml(&reply)).await?;
            }
            return Ok(None);
        }
        let host = self.host.clone().unwrap_or_default();
        let user = self.user.clone().unwrap_or_default();
        let bare = match jid::BareJid::new(&format!("{user}@{host}")) {
            Ok(b) => b,
            Err(_) => return Err(Stop::Error(StreamCondition::InternalServerError, None)),
        };
        let requested = iq
            .child("bind", ns::BIND)
            .and_then(|b| b.child("resource", ns::BIND))
            .map(|r| r.text())
            .filter(|r| !r.trim().is_empty());
        let full = match requested {
            Some(r) => match bare.with_resource_str(r.trim()) {
                Ok(f) => f,
                Err(_) => {
                    let reply = iq_error(
                        &iq,
                        &StanzaError::bad_request().with_text("invalid resource"),
                    );
                    self.send(&self.framing.to_xml(&reply)).await?;
                    return Ok(None);
                }
            },
            None => match bare.with_resource_str(&format!("rookery-{}", &stream_id()[..12])) {
                Ok(f) => f,
                Err(_) => return Err(Stop::Error(StreamCondition::InternalServerError, None)),
            },
        };
        let mut result = xep_support::stanza::iq_result(&iq, None);
        result.remove_attr("from");
        result.remove_attr("to");
        let result = result.with_child(
            Element::new("bind", ns::BIND)
                .with_child(Element::new("jid", ns::BIND).with_text(full.to_string())),
        );
        let Some((handle, rx)) = self.start_session(full, Some(result)) else {
            let reply = iq_error(
                &iq,
                &StanzaError::new(ErrorType::Wait, Condition::ResourceConstraint),
            );
            self.send(&self.framing.to_xml(&reply)).await?;
            return Ok(None);
        };
        Ok(Some(self.hand_over(handle, rx, None)))
    }

    /// Register a new session for `full` (a session of the same full JID
    /// is replaced), with `first` (the bind result) queued ahead of
    /// anything routed to it; modules are told. `None` when the account
    /// already has its `max_user_sessions`.
    fn start_session(
        &mut self,
        full: jid::FullJid,
        first: Option<Element>,
    ) -> Option<(Arc<SessionHandle>, crate::queue::Receiver<Outgoing>)> {
        let user = self.user.clone().unwrap_or_default();
        let host = self.host.clone().unwrap_or_default();
        let (tx, mut rx) = crate::queue::channel(SESSION_QUEUE);
        if let Some(first) = first {
            let _ = tx.try_send(Outgoing::Stanza(Box::new(first)));
        }
        let handle = Sessions::new_handle(full.clone(), tx);
        let _ = handle.origin.set((self.peer, self.tls));
        let max = self.server.config().max_user_sessions(&user, &host);
        match self.server.sessions.bind(handle.clone(), max) {
            Ok(replaced) => {
                if let Some(old) = replaced {
                    tracing::info!("{} replaced by a new session", old.jid);
                    old.close(Some(StreamCondition::Conflict));
                }
            }
            Err(BindRefused::TooManySessions) => {
                while rx.try_recv().is_ok() {}
                return None;
            }
        }
        if let Some(cluster) = self.server.routes.cluster().cloned() {
            // The cluster's session table learns of it (not yet available).
            let f = full.to_string();
            tokio::spawn(async move { cluster.record(&f, 0, false, true).await });
        }
        for m in &self.server.live().hooks.session_opened {
            m.session_opened(self.server.as_ref(), &full);
        }
        crate::conn_log::bind(&full);
        tracing::info!(peer = %self.peer, "session bound: {full}");
        Some((handle, rx))
    }

    /// The negotiation's result: the transport handed to the session.
    fn hand_over(
        &mut self,
        handle: Arc<SessionHandle>,
        rx: crate::queue::Receiver<Outgoing>,
        resumed: Option<Element>,
    ) -> Bound {
        let reader = std::mem::replace(&mut self.reader, placeholder_reader());
        let writer = std::mem::replace(&mut self.writer, placeholder_writer());
        Bound {
            reader,
            writer,
            handle,
            rx,
            peer: self.peer,
            resumed,
            cork: self.cork.clone(),
            framing: self.framing,
            undelivered: self.undelivered.clone(),
        }
    }

    /// XEP-0198 §5: take over a resumable session of this account (detached,
    /// or still attached to a connection that has not noticed it is dead).
    async fn resume(&mut self, el: Element) -> Result<Option<Bound>, Stop> {
        let host = self.host.clone().unwrap_or_default();
        let user = self.user.clone().unwrap_or_default();
        let bare = format!("{user}@{host}");
        match super::sm::resume::take_over(&self.server, &el, &bare).await {
            Resumption::Refused(failed) => {
                self.send(&self.framing.to_xml(&failed)).await?;
                Ok(None)
            }
            Resumption::Taken {
                handle,
                queue,
                resumed,
            } => {
                tracing::info!(peer = %self.peer, "session resumed: {}", handle.jid);
                Ok(Some(self.hand_over(handle, queue, Some(resumed))))
            }
        }
    }
}

fn decode_b64(text: &str) -> Option<Vec<u8>> {
    let t: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if t.is_empty() || t == "=" {
        return Some(Vec::new());
    }
    base64::engine::general_purpose::STANDARD.decode(t).ok()
}

/// An empty transport used while the real one is being swapped.
fn placeholder_io() -> BoxIo {
    Box::new(tokio::io::duplex(1).0)
}

fn placeholder_reader() -> StreamReader<Rd> {
    let (rd, _) = split(placeholder_io());
    StreamReader::new(rd, Some(0))
}

fn placeholder_writer() -> Wr {
    let (_, wr) = split(placeholder_io());
    wr
}
