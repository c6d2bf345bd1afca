//! Incoming s2s streams (RFC 6120, `jabber:server`) on an `ejabberd_s2s_in`
//! listener: header checks, STARTTLS (`s2s_use_starttls`), authentication
//! of the peer by SASL EXTERNAL when its certificate verifies for the
//! domain it claims (XEP-0178), or by dialback (XEP-0220) unless
//! `s2s_secure_auth` or `s2s_dialback: false` forbid it; answers to
//! `db:verify` for keys this server issued; then stanzas, each of which must
//! come `from` a domain the stream authenticated and go `to` a domain we
//! speak for (a served host, or a module's service domain such as mod_muc's
//! `conference.HOST`: `Server::speaks_for`), before it is routed like any
//! other. A service domain is a stream's `to`, a dialback `to` and a
//! stanza's `to` under exactly the rules of a host.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use jid::Jid;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use xep_support::element::Element;
use xep_support::ns;

use super::stream::{
    certs_of, db_xml, header_xml, stream_id, to_client_ns, write_shared, Conn, Fail, SharedWriter,
    NS_BIDI, NS_BIDI_FEATURE, NS_DIALBACK, NS_DIALBACK_FEATURE,
};
use super::{AuthMethod, ConnInfo};
use crate::config::Listener;
use crate::server::Server;
use crate::stream::BoxIo;
use crate::stream::StreamCondition;
use crate::xml::StreamEvent;

/// Time allowed for each step before the stream is authenticated (and no
/// step waits past the `negotiation_timeout` deadline then).
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
const TLS_TIMEOUT: Duration = Duration::from_secs(15);

struct Incoming {
    server: Arc<Server>,
    listener: Arc<Listener>,
    peer: SocketAddr,
    conn: Conn,
    id: String,
    /// Our domain the peer addressed (header `to`).
    local: Option<String>,
    /// The domain the peer claims in its header.
    claimed: Option<String>,
    /// Domains the stream is authenticated for.
    authenticated: HashSet<String>,
    auth: AuthMethod,
    registry_id: u64,
    /// The peer asked for a bidirectional stream (XEP-0288).
    bidi: bool,
    /// Once it is authenticated: the writer task taking our stanzas for it.
    bidi_writer: Option<BidiWriter>,
    /// Until a domain is authenticated, no read waits past this.
    deadline: Option<tokio::time::Instant>,
}

/// The writer of our stanzas on a bidirectional incoming stream, and the
/// outgoing routes (remote domain, entry id) that lead to it.
struct BidiWriter {
    tx: mpsc::Sender<Box<Element>>,
    routes: Vec<(String, u64)>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

/// Serve one incoming s2s connection until it ends.
pub async fn handle(
    server: Arc<Server>,
    sock: TcpStream,
    peer: SocketAddr,
    listener: Arc<Listener>,
) {
    // Until a domain is authenticated: the small pre-authentication limit.
    let max = listener.pre_auth_limit();
    let deadline = server
        .config()
        .negotiation_timeout
        .map(|t| tokio::time::Instant::now() + t);
    let conn = if listener.tls {
        let acceptor = server.live().s2s_tls.direct_acceptor.clone();
        match tokio::time::timeout(TLS_TIMEOUT, acceptor.accept(sock)).await {
            Ok(Ok(s)) => {
                crate::metrics::tls_handshake("s2s in", true);
                let certs = certs_of(s.get_ref().1.peer_certificates());
                let mut c = Conn::new(Box::new(s) as BoxIo, true, max);
                c.peer_certs = certs;
                c
            }
            Ok(Err(e)) => return crate::conn_log::tls_failed("s2s in", &peer, &e),
            Err(_) => return crate::conn_log::tls_failed("s2s in", &peer, &"timed out"),
        }
    } else {
        Conn::new(Box::new(sock) as BoxIo, false, max)
    };
    let registry_id = server.s2s.register_incoming(peer);
    let mut s = Incoming {
        server: server.clone(),
        listener,
        peer,
        conn,
        id: stream_id(),
        local: None,
        claimed: None,
        authenticated: HashSet::new(),
        auth: AuthMethod::None,
        registry_id,
        bidi: false,
        bidi_writer: None,
        deadline,
    };
    let mut shutdown = server.shutdown_signal();
    let result = tokio::select! {
        r = s.run() => r,
        _ = shutdown.wait_for(|v| *v) => Err(Fail::Stream(StreamCondition::SystemShutdown, None)),
    };
    server.s2s.unregister_incoming(registry_id);
    if let Some(w) = s.bidi_writer.take() {
        // No more stanzas for this stream: later ones start a connection.
        let local = s.local.clone().unwrap_or_default();
        for (remote, id) in &w.routes {
            server.s2s.out.remove(&local, remote, *id);
        }
        drop(w.tx);
        let _ = w.stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(5), w.task).await;
    }
    match result {
        Ok(()) | Err(Fail::Closed) => s.conn.close().await,
        Err(Fail::Stream(cond, text)) => {
            if s.local.is_none() {
                let host = s.server.config().hosts.first().cloned().unwrap_or_default();
                let _ = s
                    .conn
                    .send(&header_xml(&host, None, Some(&s.id), true))
                    .await;
            }
            s.conn
                .close_error("s2s in", &s.peer, cond, text.as_deref())
                .await;
        }
        Err(Fail::Timeout) => {
            s.conn
                .close_error("s2s in", &s.peer, StreamCondition::ConnectionTimeout, None)
                .await
        }
        Err(Fail::Unreachable(why)) => {
            tracing::info!(peer = %s.peer, "s2s in: {why}");
            s.conn.close().await;
        }
    }
}

impl Incoming {
    fn starttls_offered(&self) -> bool {
        self.listener.starttls && !self.conn.tls
    }

    fn tls_missing(&self) -> bool {
        self.listener.starttls_required && !self.conn.tls
    }

    fn dialback_allowed(&self) -> bool {
        let o = &self.server.config().s2s;
        o.dialback && !o.secure_auth && !self.tls_missing()
    }

    fn cert_verifies(&self, domain: &str) -> bool {
        self.conn.tls
            && self
                .server
                .live()
                .s2s_tls
                .verify(&self.conn.peer_certs, domain)
    }

    fn update_registry(&self) {
        let mut remote: Vec<String> = self.authenticated.iter().cloned().collect();
        remote.sort();
        self.server.s2s.update_incoming(
            self.registry_id,
            ConnInfo {
                local: self.local.clone().unwrap_or_default(),
                remote,
                auth: self.auth,
                tls: self.conn.tls,
                peer: Some(self.peer),
                bidi: self.bidi,
            },
        );
    }

    /// How long the next read may wait before the stream is authenticated.
    fn step_wait(&self) -> Duration {
        match self.deadline {
            Some(d) => STEP_TIMEOUT.min(d.saturating_duration_since(tokio::time::Instant::now())),
            None => STEP_TIMEOUT,
        }
    }

    /// A domain was authenticated on this stream: stanzas may now be as
    /// large as the listener allows, and no deadline applies.
    fn authenticated_now(&mut self, domain: String) {
        if self.authenticated.is_empty() {
            crate::conn_log::bind(&domain);
        }
        self.authenticated.insert(domain);
        self.deadline = None;
        self.conn.set_max_stanza_size(self.listener.max_stanza_size);
    }

    /// Read a stream header and answer with ours (and features on 1.0 streams).
    async fn open_stream(&mut self) -> Result<(), Fail> {
        let h = self.conn.next_header(self.step_wait()).await?;
        if !h.stream_ns_ok || h.default_ns != ns::SERVER {
            return Err(Fail::Stream(
                StreamCondition::InvalidNamespace,
                Some(format!("expected {} streams", ns::SERVER)),
            ));
        }
        let to =
            h.to.as_deref()
                .map(|t| t.trim_end_matches('.').to_lowercase())
                .or_else(|| self.server.config().hosts.first().cloned())
                .unwrap_or_default();
        if !self.server.speaks_for(&to) {
            self.local = Some(to);
            return Err(Fail::Stream(StreamCondition::HostUnknown, None));
        }
        if self.local.as_ref().is_some_and(|l| *l != to) {
            return Err(Fail::Stream(
                StreamCondition::HostUnknown,
                Some("the host changed on restart".into()),
            ));
        }
        self.local = Some(to.clone());
        if let Some(from) = h.from.as_deref() {
            self.claimed = Some(from.trim_end_matches('.').to_lowercase());
        }
        let version = h.version.as_deref().is_some_and(|v| v.starts_with('1'));
        self.id = stream_id();
        let header = header_xml(&to, self.claimed.as_deref(), Some(&self.id), version);
        self.conn.send(&header).await?;
        if version {
            let f = self.features();
            self.conn.send(&f.to_xml(ns::SERVER)).await?;
        }
        Ok(())
    }

    fn features(&self) -> Element {
        let mut f = Element::new("features", ns::STREAM);
        if self.starttls_offered() {
            let mut st = Element::new("starttls", ns::TLS);
            if self.listener.starttls_required {
                st = st.with_child(Element::new("required", ns::TLS));
            }
            f = f.with_child(st);
        }
        if self.tls_missing() || self.auth == AuthMethod::External {
            return f;
        }
        if let Some(claimed) = &self.claimed {
            if self.cert_verifies(claimed) {
                f = f.with_child(
                    Element::new("mechanisms", ns::SASL)
                        .with_child(Element::new("mechanism", ns::SASL).with_text("EXTERNAL")),
                );
            }
        }
        if self.dialback_allowed() {
            f = f.with_child(
                Element::new("dialback", NS_DIALBACK_FEATURE)
                    .with_child(Element::new("errors", NS_DIALBACK_FEATURE)),
            );
        }
        if self.bidi_offered() {
            f = f.with_child(Element::new("bidi", NS_BIDI_FEATURE));
        }
        f
    }

    /// XEP-0288 is offered before the peer authenticates.
    fn bidi_offered(&self) -> bool {
        self.server.config().s2s.bidi && self.authenticated.is_empty() && !self.tls_missing()
    }

    /// After `domain` authenticated on a stream that asked for bidi: our
    /// stanzas for `domain` go out on this stream (unless a connection of
    /// ours to it exists already).
    fn bidi_route(&mut self, domain: &str) {
        if !self.bidi {
            return;
        }
        let Some(local) = self.local.clone() else {
            return;
        };
        let w = self.bidi_writer.get_or_insert_with(|| {
            let (tx, rx) = mpsc::channel(crate::links::OUT_QUEUE);
            let (stop, stop_rx) = oneshot::channel();
            let task = tokio::spawn(crate::conn_log::ConnLog::current().run(bidi_writer(
                self.server.clone(),
                self.conn.shared_writer(),
                rx,
                stop_rx,
            )));
            BidiWriter {
                tx,
                routes: Vec::new(),
                stop,
                task,
            }
        });
        if let Some(id) = self.server.s2s.out.lend(&local, domain, w.tx.clone()) {
            w.routes.push((domain.to_string(), id));
            tracing::info!(peer = %self.peer, "s2s in: bidirectional stream for {local} -> {domain}");
        }
    }

    async fn run(&mut self) -> Result<(), Fail> {
        self.open_stream().await?;
        loop {
            let wait = if self.authenticated.is_empty() {
                self.step_wait()
            } else {
                self.server.config().s2s.idle_timeout
            };
            let el = match self.conn.next(wait).await? {
                StreamEvent::Stanza(el) => el,
                StreamEvent::End => return Ok(()),
                StreamEvent::Header(_) => {
                    return Err(Fail::Stream(StreamCondition::NotWellFormed, None))
                }
            };
            if el.is("error", ns::STREAM) {
                // The peer ends the stream with an error (e.g. it shuts down).
                let cond = el.first_child().map(|c| c.name.clone()).unwrap_or_default();
                tracing::info!(peer = %self.peer, "s2s in: peer sent stream error {cond}");
                return Ok(());
            }
            if el.is("starttls", ns::TLS) {
                self.starttls().await?;
                self.open_stream().await?;
            } else if el.is("auth", ns::SASL) {
                if self.external(&el).await? {
                    self.conn.restart();
                    self.open_stream().await?;
                    // Only now: our stanzas must follow the new header.
                    if let Some(domain) = self.claimed.clone() {
                        self.bidi_route(&domain);
                    }
                }
            } else if el.ns == NS_DIALBACK && el.name == "result" {
                self.db_result(&el).await?;
            } else if el.is("bidi", NS_BIDI) {
                if self.bidi_offered() {
                    self.bidi = true;
                } else {
                    return Err(Fail::Stream(
                        StreamCondition::PolicyViolation,
                        Some("bidi was not offered".into()),
                    ));
                }
            } else if el.ns == NS_DIALBACK && el.name == "verify" {
                self.db_verify(&el).await?;
            } else if el.ns == ns::SERVER
                && matches!(el.name.as_str(), "message" | "presence" | "iq")
            {
                self.stanza(el).await?;
            } else {
                return Err(Fail::Stream(
                    StreamCondition::UnsupportedStanzaType,
                    Some(format!("unexpected <{}/>", el.name)),
                ));
            }
        }
    }

    async fn starttls(&mut self) -> Result<(), Fail> {
        if !self.starttls_offered() {
            self.conn
                .send(&format!("<failure xmlns='{}'/>", ns::TLS))
                .await?;
            return Err(Fail::Closed);
        }
        self.conn
            .send(&format!("<proceed xmlns='{}'/>", ns::TLS))
            .await?;
        let io = self.conn.take_io("s2s in", &self.peer)?;
        let acceptor = self.server.live().s2s_tls.starttls_acceptor.clone();
        let tls = match tokio::time::timeout(TLS_TIMEOUT, acceptor.accept(io)).await {
            Ok(Ok(s)) => {
                crate::metrics::tls_handshake("s2s in", true);
                s
            }
            Ok(Err(e)) => {
                crate::conn_log::tls_failed("s2s in", &self.peer, &e);
                return Err(Fail::Closed);
            }
            Err(_) => {
                crate::conn_log::tls_failed("s2s in", &self.peer, &"timed out");
                return Err(Fail::Closed);
            }
        };
        let certs = certs_of(tls.get_ref().1.peer_certificates());
        self.conn.set_io(Box::new(tls), certs);
        self.update_registry();
        Ok(())
    }

    /// SASL EXTERNAL (XEP-0178). `Ok(true)`: authenticated, restart the stream.
    async fn external(&mut self, el: &Element) -> Result<bool, Fail> {
        let failure = |cond: &str| format!("<failure xmlns='{}'><{cond}/></failure>", ns::SASL);
        if self.auth == AuthMethod::External || self.tls_missing() {
            self.conn.send(&failure("not-authorized")).await?;
            return Ok(false);
        }
        if el.attr("mechanism") != Some("EXTERNAL") {
            self.conn.send(&failure("invalid-mechanism")).await?;
            return Ok(false);
        }
        let text = el.text();
        let text = text.trim();
        let authzid = if text.is_empty() || text == "=" {
            None
        } else {
            match base64::engine::general_purpose::STANDARD.decode(text) {
                Ok(b) => String::from_utf8(b).ok().map(|s| s.to_lowercase()),
                Err(_) => {
                    self.conn.send(&failure("incorrect-encoding")).await?;
                    return Ok(false);
                }
            }
        };
        let domain = match (&authzid, &self.claimed) {
            (Some(a), Some(c)) if a != c => {
                self.conn.send(&failure("invalid-authzid")).await?;
                return Ok(false);
            }
            (Some(a), _) => a.clone(),
            (None, Some(c)) => c.clone(),
            (None, None) => {
                self.conn.send(&failure("not-authorized")).await?;
                return Ok(false);
            }
        };
        if !self.cert_verifies(&domain) {
            tracing::info!(peer = %self.peer, "s2s in: SASL EXTERNAL for {domain} refused: certificate does not verify");
            self.conn.send(&failure("not-authorized")).await?;
            return Ok(false);
        }
        self.conn
            .send(&format!("<success xmlns='{}'/>", ns::SASL))
            .await?;
        self.claimed = Some(domain.clone());
        self.authenticated_now(domain.clone());
        self.auth = AuthMethod::External;
        self.update_registry();
        tracing::info!(peer = %self.peer, "s2s in: {domain} authenticated by certificate (SASL EXTERNAL)");
        Ok(true)
    }

    /// A dialback request from the originating server (XEP-0220 §2.1.2).
    async fn db_result(&mut self, el: &Element) -> Result<(), Fail> {
        let (Some(from), Some(to)) = (el.attr("from"), el.attr("to")) else {
            return Err(Fail::Stream(StreamCondition::ImproperAddressing, None));
        };
        let from = from.to_lowercase();
        let to = to.to_lowercase();
        let error = |cond: &str, kind: &str| {
            format!(
                "<db:result from='{}' to='{}' type='error'><error type='{kind}'><{cond} xmlns='{}'/></error></db:result>",
                xep_support::element::escape(&to),
                xep_support::element::escape(&from),
                ns::STANZA_ERRORS
            )
        };
        if !self.server.speaks_for(&to) {
            return self.conn.send(&error("item-not-found", "cancel")).await;
        }
        if !self.dialback_allowed() {
            tracing::info!(peer = %self.peer, "s2s in: dialback from {from} refused (verified certificates required)");
            return self.conn.send(&error("not-authorized", "auth")).await;
        }
        let key = el.text();
        let valid = match super::dialback::verify_remote(&self.server, &to, &from, &self.id, &key)
            .await
        {
            Ok(v) => v,
            Err(e) => {
                tracing::info!(peer = %self.peer, "s2s in: cannot verify dialback key of {from}: {e}");
                return self
                    .conn
                    .send(&error("remote-server-not-found", "cancel"))
                    .await;
            }
        };
        let kind = if valid { "valid" } else { "invalid" };
        self.conn
            .send(&db_xml("result", &to, &from, None, Some(kind), ""))
            .await?;
        if valid {
            self.authenticated_now(from.clone());
            if self.auth == AuthMethod::None {
                self.auth = AuthMethod::Dialback;
            }
            self.update_registry();
            self.bidi_route(&from);
            tracing::info!(peer = %self.peer, "s2s in: {from} authenticated by dialback");
            Ok(())
        } else {
            tracing::info!(peer = %self.peer, "s2s in: {from} gave an invalid dialback key");
            Err(Fail::Stream(
                StreamCondition::NotAuthorized,
                Some("invalid dialback key".into()),
            ))
        }
    }

    /// A receiving server asks whether we issued a key (XEP-0220 §2.1.3).
    async fn db_verify(&mut self, el: &Element) -> Result<(), Fail> {
        let (Some(from), Some(to), Some(id)) = (el.attr("from"), el.attr("to"), el.attr("id"))
        else {
            return Err(Fail::Stream(StreamCondition::ImproperAddressing, None));
        };
        let valid = self.server.speaks_for(&to.to_lowercase())
            && super::dialback::check(&self.server.s2s.secret, from, to, id, &el.text());
        let kind = if valid { "valid" } else { "invalid" };
        self.conn
            .send(&db_xml("verify", to, from, Some(id), Some(kind), ""))
            .await
    }

    /// A stanza: check its addresses against the stream, then route it.
    async fn stanza(&mut self, mut el: Element) -> Result<(), Fail> {
        if self.authenticated.is_empty() {
            return Err(Fail::Stream(StreamCondition::NotAuthorized, None));
        }
        let (Some(from), Some(to)) = (el.attr("from"), el.attr("to")) else {
            return Err(Fail::Stream(
                StreamCondition::ImproperAddressing,
                Some("stanzas between servers need from and to".into()),
            ));
        };
        let from = Jid::new(from).map_err(|_| Fail::Stream(StreamCondition::InvalidFrom, None))?;
        let to = match Jid::new(to) {
            Ok(t) => t,
            Err(_) => {
                return Err(Fail::Stream(
                    StreamCondition::ImproperAddressing,
                    Some("malformed to".into()),
                ))
            }
        };
        if !self.authenticated.contains(from.domain().as_str()) {
            return Err(Fail::Stream(
                StreamCondition::InvalidFrom,
                Some(format!(
                    "{} is not authenticated on this stream",
                    from.domain()
                )),
            ));
        }
        if !self.server.speaks_for(to.domain().as_str()) {
            return Err(Fail::Stream(
                StreamCondition::HostUnknown,
                Some(format!("{} is not served here", to.domain())),
            ));
        }
        to_client_ns(&mut el);
        if el.name == "presence" && el.attr("to").is_some() {
            // Presence handling may route probes and answers back out.
            Box::pin(crate::router::route(&self.server, el)).await;
        } else {
            crate::router::route(&self.server, el).await;
        }
        Ok(())
    }
}

/// Write our stanzas for the peer of a bidirectional stream (XEP-0288) in
/// batches, until the stream ends; what is left then, or what a failed
/// write may not have delivered, bounces to its senders.
async fn bidi_writer(
    server: Arc<Server>,
    writer: SharedWriter,
    mut rx: mpsc::Receiver<Box<Element>>,
    mut stop: oneshot::Receiver<()>,
) {
    use xep_support::stanza::{Condition, ErrorType, StanzaError};
    const BATCH: usize = 16 * 1024;
    let mut buf = String::new();
    loop {
        let first = tokio::select! {
            s = rx.recv() => s,
            _ = &mut stop => None,
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
        let ok = write_shared(&writer, &buf).await.is_ok();
        buf.clear();
        if !ok {
            for s in batch {
                let err = StanzaError::new(ErrorType::Cancel, Condition::RemoteServerNotFound);
                crate::router::bounce(&server, &s, err).await;
            }
            break;
        }
    }
    rx.close();
    while let Ok(s) = rx.try_recv() {
        let err = StanzaError::new(ErrorType::Cancel, Condition::RemoteServerNotFound);
        crate::router::bounce(&server, &s, err).await;
    }
}
