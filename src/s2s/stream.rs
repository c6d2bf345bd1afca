//! What both directions of an s2s stream share: the connection (a parser
//! over the read half, the write half, TLS upgrade), the stream header,
//! namespaces, and how a failure is reported.

use std::time::Duration;

use rustls::pki_types::CertificateDer;
use tokio::io::{split, AsyncWriteExt, ReadHalf, WriteHalf};
use xep_support::element::{escape, Element, Node};
use xep_support::ns;

use crate::stream::BoxIo;
use crate::stream::StreamCondition;
use crate::xml::{StreamEvent, StreamHeader, StreamReader, XmlError};

/// The dialback namespace (XEP-0220), declared as `db` on our stream headers.
pub const NS_DIALBACK: &str = "jabber:server:dialback";
/// The dialback stream feature.
pub const NS_DIALBACK_FEATURE: &str = "urn:xmpp:features:dialback";
/// Bidirectional streams (XEP-0288): the stream feature, and the request.
pub const NS_BIDI_FEATURE: &str = "urn:xmpp:features:bidi";
pub const NS_BIDI: &str = "urn:xmpp:bidi";
/// A write that does not finish in this time means a dead peer.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a stream ended or could not be set up.
#[derive(Debug)]
pub enum Fail {
    /// Send this stream error (with a text for the log and the peer).
    Stream(StreamCondition, Option<String>),
    /// The peer is gone or closed its stream.
    Closed,
    /// No answer in time.
    Timeout,
    /// Could not connect or authenticate (for bounces: remote-server-not-found).
    Unreachable(String),
}

impl From<XmlError> for Fail {
    fn from(e: XmlError) -> Self {
        match e.condition() {
            Some(c) => Fail::Stream(c, Some(e.to_string())),
            None => Fail::Closed,
        }
    }
}

impl std::fmt::Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fail::Stream(c, Some(t)) => write!(f, "stream error {c}: {t}"),
            Fail::Stream(c, None) => write!(f, "stream error {c}"),
            Fail::Closed => f.write_str("connection closed"),
            Fail::Timeout => f.write_str("timed out"),
            Fail::Unreachable(why) => f.write_str(why),
        }
    }
}

/// The write half of a connection, shared with the writer of a
/// bidirectional stream (XEP-0288) once one is negotiated.
pub type SharedWriter = std::sync::Arc<tokio::sync::Mutex<Option<WriteHalf<BoxIo>>>>;

/// Write `xml` and flush, within [`WRITE_TIMEOUT`].
pub async fn write_shared(writer: &SharedWriter, xml: &str) -> Result<(), Fail> {
    let mut guard = writer.lock().await;
    let Some(w) = guard.as_mut() else {
        return Err(Fail::Closed);
    };
    match tokio::time::timeout(WRITE_TIMEOUT, async {
        w.write_all(xml.as_bytes()).await?;
        w.flush().await
    })
    .await
    {
        Ok(Ok(())) => Ok(()),
        _ => Err(Fail::Closed),
    }
}

/// An s2s connection: a parser over the read half and the write half.
pub struct Conn {
    reader: Option<StreamReader<ReadHalf<BoxIo>>>,
    writer: SharedWriter,
    /// The stanza-size limit in force (kept across a TLS upgrade).
    max: Option<usize>,
    /// Whether TLS is up.
    pub tls: bool,
    /// The peer's certificate chain once TLS is up (may be empty).
    pub peer_certs: Vec<CertificateDer<'static>>,
}

impl Conn {
    pub fn new(io: BoxIo, tls: bool, max: Option<usize>) -> Conn {
        let (rd, wr) = split(io);
        Conn {
            reader: Some(StreamReader::new(rd, max)),
            writer: std::sync::Arc::new(tokio::sync::Mutex::new(Some(wr))),
            max,
            tls,
            peer_certs: Vec::new(),
        }
    }

    /// Change the stanza-size limit, e.g. from the pre-authentication
    /// limit to `max_stanza_size` once the peer is authenticated.
    pub fn set_max_stanza_size(&mut self, max: Option<usize>) {
        self.max = max;
        if let Some(r) = self.reader.as_mut() {
            r.set_max_stanza_size(max);
        }
    }

    /// Write and flush.
    pub async fn send(&mut self, xml: &str) -> Result<(), Fail> {
        write_shared(&self.writer, xml).await
    }

    /// The write half, for a writer task of its own (bidirectional streams).
    pub fn shared_writer(&self) -> SharedWriter {
        self.writer.clone()
    }

    fn take_writer(&mut self) -> Option<WriteHalf<BoxIo>> {
        // Only the owner writes before a bidirectional stream is set up,
        // and none is while TLS starts or the stream is split.
        self.writer.try_lock().ok().and_then(|mut w| w.take())
    }

    /// The next stream event, waiting at most `wait`.
    pub async fn next(&mut self, wait: Duration) -> Result<StreamEvent, Fail> {
        let Some(r) = self.reader.as_mut() else {
            return Err(Fail::Closed);
        };
        match tokio::time::timeout(wait, r.next()).await {
            Ok(Ok(ev)) => Ok(ev),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(Fail::Timeout),
        }
    }

    /// The next top-level element; the stream's end is `Closed`.
    pub async fn next_element(&mut self, wait: Duration) -> Result<Element, Fail> {
        match self.next(wait).await? {
            StreamEvent::Stanza(e) => {
                if e.is("error", ns::STREAM) {
                    let cond = e.first_child().map(|c| c.name.clone()).unwrap_or_default();
                    return Err(Fail::Unreachable(format!("peer sent stream error {cond}")));
                }
                Ok(e)
            }
            StreamEvent::End => Err(Fail::Closed),
            StreamEvent::Header(_) => Err(Fail::Stream(StreamCondition::NotWellFormed, None)),
        }
    }

    /// The next stream header.
    pub async fn next_header(&mut self, wait: Duration) -> Result<StreamHeader, Fail> {
        match self.next(wait).await? {
            StreamEvent::Header(h) => Ok(h),
            _ => Err(Fail::Stream(StreamCondition::NotWellFormed, None)),
        }
    }

    /// A new stream on the same transport (after SASL, RFC 6120 §6.4.6).
    pub fn restart(&mut self) {
        if let Some(r) = self.reader.take() {
            self.reader = Some(r.restart());
        }
    }

    /// Take the transport back for a TLS upgrade; fails if the peer sent
    /// bytes other than whitespace after its STARTTLS element or `<proceed/>`
    /// (they would be read as plaintext; logged with `kind` and `peer`).
    pub fn take_io(&mut self, kind: &str, peer: &dyn std::fmt::Display) -> Result<BoxIo, Fail> {
        let (Some(r), Some(w)) = (self.reader.take(), self.take_writer()) else {
            return Err(Fail::Closed);
        };
        let (rd, leftover) = r.into_inner();
        if !crate::conn_log::starttls_leftover_ok(kind, peer, &leftover) {
            // The write half goes back, so the stream error can be sent.
            if let Ok(mut guard) = self.writer.try_lock() {
                *guard = Some(w);
            }
            return Err(Fail::Stream(
                StreamCondition::PolicyViolation,
                Some("data pipelined after STARTTLS".into()),
            ));
        }
        Ok(rd.unsplit(w))
    }

    /// Continue over a TLS transport.
    pub fn set_io(&mut self, io: BoxIo, certs: Vec<CertificateDer<'static>>) {
        let (rd, wr) = split(io);
        self.reader = Some(StreamReader::new(rd, self.max));
        self.writer = std::sync::Arc::new(tokio::sync::Mutex::new(Some(wr)));
        self.tls = true;
        self.peer_certs = certs;
    }

    /// Split into the parser and the write half (for a running stream).
    pub fn into_parts(mut self) -> Option<(StreamReader<ReadHalf<BoxIo>>, WriteHalf<BoxIo>)> {
        let w = self.take_writer()?;
        Some((self.reader.take()?, w))
    }

    /// End the stream and close the socket.
    pub async fn close(&mut self) {
        self.close_with("</stream:stream>").await;
    }

    /// Send a stream error (logged, see [`crate::conn_log`]) to `peer` on a
    /// stream of `kind`, end the stream and close the socket.
    pub async fn close_error(
        &mut self,
        kind: &str,
        peer: &(dyn std::fmt::Display + Sync),
        condition: StreamCondition,
        text: Option<&str>,
    ) {
        let tail = crate::conn_log::stream_error(kind, peer, condition, text);
        self.close_with(&tail).await;
    }

    async fn close_with(&mut self, tail: &str) {
        let _ = self.send(tail).await;
        if let Some(w) = self.writer.lock().await.as_mut() {
            let _ = tokio::time::timeout(Duration::from_secs(2), w.shutdown()).await;
        }
    }
}

/// A random stream ID.
pub fn stream_id() -> String {
    use rand::Rng;
    let v: [u8; 12] = rand::thread_rng().gen();
    v.iter().map(|b| format!("{b:02x}")).collect()
}

/// An s2s stream header (with the dialback namespace declared).
pub fn header_xml(from: &str, to: Option<&str>, id: Option<&str>, version: bool) -> String {
    let mut s = format!(
        "<?xml version='1.0'?><stream:stream xmlns='{}' xmlns:stream='{}' xmlns:db='{}' from='{}'",
        ns::SERVER,
        ns::STREAM,
        NS_DIALBACK,
        escape(from)
    );
    if let Some(to) = to {
        s.push_str(&format!(" to='{}'", escape(to)));
    }
    if let Some(id) = id {
        s.push_str(&format!(" id='{}'", escape(id)));
    }
    if version {
        s.push_str(" version='1.0'");
    }
    s.push_str(" xml:lang='en'>");
    s
}

/// A dialback element (`db:result` or `db:verify`), written with the `db`
/// prefix our headers declare.
pub fn db_xml(
    name: &str,
    from: &str,
    to: &str,
    id: Option<&str>,
    kind: Option<&str>,
    body: &str,
) -> String {
    let mut s = format!("<db:{name} from='{}' to='{}'", escape(from), escape(to));
    if let Some(id) = id {
        s.push_str(&format!(" id='{}'", escape(id)));
    }
    if let Some(k) = kind {
        s.push_str(&format!(" type='{k}'"));
    }
    if body.is_empty() {
        s.push_str("/>");
    } else {
        // The body may be a key a peer sent (relayed in db:verify): escaped.
        s.push_str(&format!(">{}</db:{name}>", escape(body)));
    }
    s
}

/// Stanzas from a server stream carry `jabber:server`; inside the server
/// every stanza is in `jabber:client` (written back as `jabber:server` on
/// s2s, as both are the stream's content namespace).
pub fn to_client_ns(el: &mut Element) {
    if el.ns == ns::SERVER {
        el.ns = ns::CLIENT.to_string();
    }
    for child in el.children.iter_mut() {
        if let Node::Element(e) = child {
            to_client_ns(e);
        }
    }
}

/// The certificates of a finished TLS handshake.
pub fn certs_of(certs: Option<&[CertificateDer<'_>]>) -> Vec<CertificateDer<'static>> {
    certs
        .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dialback_elements_escape_what_a_peer_sent() {
        // A key relayed in db:verify comes from the peer's db:result.
        assert_eq!(
            db_xml("verify", "a.example", "b.example", Some("i'd"), None, "k<&\u{1}"),
            "<db:verify from='a.example' to='b.example' id='i&apos;d'>k&lt;&amp;\u{FFFD}</db:verify>"
        );
        assert_eq!(
            db_xml("result", "a.example", "b.example", None, Some("valid"), ""),
            "<db:result from='a.example' to='b.example' type='valid'/>"
        );
    }
}
