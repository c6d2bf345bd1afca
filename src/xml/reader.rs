//! The incremental XML stream reader: turns bytes from a (TLS) socket into a
//! stream header, then one complete stanza at a time, then the stream's end.
//!
//! It uses quick-xml's async reader over a [`LimitedRead`], resolves
//! namespaces itself (a stack of declarations), and enforces RFC 6120 §11.1
//! restricted XML: a DTD, a processing instruction (other than the XML
//! declaration), a comment, or a reference to an entity other than the five
//! predefined ones ends the stream; nothing is ever expanded. Only the stanza
//! being read is held in memory, and never more than `max_stanza_size` bytes
//! of it, because the byte counter under the parser fails the read first.

use super::bufread::LazyBufReader;
use super::limit::LimitedRead;
use quick_xml::events::{BytesStart, Event};
use std::io;
use tokio::io::AsyncRead;
use xep_support::element::{Element, Node, NS_XML};
use xep_support::ns;

/// Bytes the buffered reader under the parser holds at most (and only
/// while bytes are arriving: none while the session waits, see [`LazyBufReader`]).
const READ_BUFFER: usize = 1024;
/// A parse buffer larger than this after a stanza is given back.
const KEEP_BUFFER: usize = 1024;

/// What the reader yields.
#[derive(Debug)]
pub enum StreamEvent {
    /// The `<stream:stream>` opening tag.
    Header(StreamHeader),
    /// A complete top-level element (a stanza or a negotiation element).
    Stanza(Element),
    /// `</stream:stream>`.
    End,
}

/// The attributes of a stream header.
#[derive(Debug, Clone, Default)]
pub struct StreamHeader {
    pub to: Option<String>,
    /// `from` (the sending server's domain on s2s streams).
    pub from: Option<String>,
    /// `id` (the stream ID a receiving server gives, used by dialback).
    pub id: Option<String>,
    pub version: Option<String>,
    /// The default namespace declared on the header (`jabber:client` for c2s).
    pub default_ns: String,
    /// Whether the header was `stream` in the streams namespace.
    pub stream_ns_ok: bool,
}

/// Why reading stopped.
#[derive(Debug)]
pub enum XmlError {
    /// The peer closed the connection.
    Closed,
    /// A transport error.
    Io(io::Error),
    /// Malformed XML.
    NotWellFormed(String),
    /// XML that RFC 6120 §11.1 forbids (DTD, PI, comment, entity).
    Restricted(String),
    /// A stanza larger than `max_stanza_size`.
    TooBig,
    /// An encoding other than UTF-8 was declared.
    UnsupportedEncoding,
}

impl XmlError {
    /// The stream error condition to send for this error, if any.
    pub fn condition(&self) -> Option<&'static str> {
        match self {
            XmlError::Closed | XmlError::Io(_) => None,
            XmlError::NotWellFormed(_) => Some("not-well-formed"),
            XmlError::Restricted(_) => Some("restricted-xml"),
            XmlError::TooBig => Some("policy-violation"),
            XmlError::UnsupportedEncoding => Some("unsupported-encoding"),
        }
    }
}

impl std::fmt::Display for XmlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            XmlError::Closed => write!(f, "connection closed"),
            XmlError::Io(e) => write!(f, "i/o error: {e}"),
            XmlError::NotWellFormed(why) => write!(f, "not well-formed: {why}"),
            XmlError::Restricted(why) => write!(f, "restricted XML: {why}"),
            XmlError::TooBig => write!(f, "stanza larger than max_stanza_size"),
            XmlError::UnsupportedEncoding => write!(f, "unsupported encoding"),
        }
    }
}

/// The incremental stream reader over a transport `R`.
pub struct StreamReader<R> {
    reader: quick_xml::Reader<LazyBufReader<LimitedRead<R>>>,
    buf: Vec<u8>,
    /// Elements open inside the current stanza (the stanza itself first).
    stack: Vec<Element>,
    /// Namespace declarations in scope: (prefix, uri), innermost last.
    bindings: Vec<(String, String)>,
    /// For each open element (the stream header included), where its
    /// declarations start in `bindings`.
    marks: Vec<usize>,
    /// Whether the stream header was read.
    started: bool,
}

fn configure<B>(reader: &mut quick_xml::Reader<B>) {
    let cfg = reader.config_mut();
    cfg.check_end_names = true;
    cfg.expand_empty_elements = false;
    cfg.trim_text(false);
    cfg.allow_dangling_amp = false;
    cfg.allow_unmatched_ends = false;
}

impl<R: AsyncRead + Unpin> StreamReader<R> {
    /// A reader over `inner`, refusing stanzas over `max_stanza_size` bytes.
    pub fn new(inner: R, max_stanza_size: Option<usize>) -> Self {
        // The buffered reader reads ahead up to READ_BUFFER bytes past the
        // stanza being parsed, so the byte count is allowed that much slack.
        let limited = LimitedRead::new(inner, max_stanza_size.map(|m| m + READ_BUFFER));
        let mut reader =
            quick_xml::Reader::from_reader(LazyBufReader::with_capacity(READ_BUFFER, limited));
        configure(&mut reader);
        StreamReader {
            reader,
            buf: Vec::new(),
            stack: Vec::new(),
            bindings: Vec::new(),
            marks: Vec::new(),
            started: false,
        }
    }

    /// A fresh parser for a restarted stream (after SASL), over the same
    /// transport and whatever bytes are already buffered.
    pub fn restart(self) -> Self {
        let inner = self.reader.into_inner();
        let mut reader = quick_xml::Reader::from_reader(inner);
        configure(&mut reader);
        StreamReader {
            reader,
            buf: Vec::new(),
            stack: Vec::new(),
            bindings: Vec::new(),
            marks: Vec::new(),
            started: false,
        }
    }

    /// The byte counter/shaper under the parser.
    pub fn limiter(&mut self) -> &mut LimitedRead<R> {
        self.reader.get_mut().get_mut()
    }

    /// Give back the transport, and the bytes read from it but not parsed
    /// (before a TLS upgrade the caller decides whether they may be dropped).
    pub fn into_inner(self) -> (R, Vec<u8>) {
        let bufreader = self.reader.into_inner();
        let leftover = bufreader.buffer().to_vec();
        (bufreader.into_inner().into_inner(), leftover)
    }

    fn resolve(&self, prefix: &str) -> Option<&str> {
        if prefix == "xml" {
            return Some(NS_XML);
        }
        self.bindings
            .iter()
            .rev()
            .find(|(p, _)| p == prefix)
            .map(|(_, u)| u.as_str())
    }

    /// Read an opening tag into an element, pushing its namespace declarations.
    fn open(&mut self, start: &BytesStart<'_>) -> Result<Element, XmlError> {
        self.marks.push(self.bindings.len());
        let mut plain: Vec<(String, String)> = Vec::new();
        let mut prefixed: Vec<(String, String, String)> = Vec::new();
        for attr in start.attributes() {
            let attr = attr.map_err(|e| XmlError::NotWellFormed(e.to_string()))?;
            let key = std::str::from_utf8(attr.key.as_ref())
                .map_err(|_| XmlError::NotWellFormed("attribute name is not UTF-8".into()))?
                .to_string();
            let value = match attr.unescape_value() {
                Ok(v) => v.into_owned(),
                Err(quick_xml::Error::Escape(e)) => {
                    return Err(XmlError::Restricted(format!("attribute {key}: {e}")))
                }
                Err(e) => return Err(XmlError::NotWellFormed(e.to_string())),
            };
            if key == "xmlns" {
                self.bindings.push((String::new(), value));
            } else if let Some(p) = key.strip_prefix("xmlns:") {
                if value.is_empty() {
                    return Err(XmlError::NotWellFormed(format!(
                        "empty namespace for prefix {p}"
                    )));
                }
                self.bindings.push((p.to_string(), value));
            } else if let Some((p, local)) = key.split_once(':') {
                prefixed.push((p.to_string(), local.to_string(), value));
            } else {
                plain.push((key, value));
            }
        }
        let qname = std::str::from_utf8(start.name().as_ref())
            .map_err(|_| XmlError::NotWellFormed("element name is not UTF-8".into()))?
            .to_string();
        let (prefix, local) = match qname.split_once(':') {
            Some((p, l)) => (p.to_string(), l.to_string()),
            None => (String::new(), qname.clone()),
        };
        let ns = match self.resolve(&prefix) {
            Some(u) => u.to_string(),
            None if prefix.is_empty() => String::new(),
            None => {
                return Err(XmlError::NotWellFormed(format!(
                    "undeclared prefix {prefix}"
                )))
            }
        };
        let mut el = Element::new(local, ns);
        el.attrs = plain;
        for (p, local, value) in prefixed {
            let name = if p == "xml" {
                format!("xml:{local}")
            } else {
                match self.resolve(&p) {
                    Some(u) => format!("{{{u}}}{local}"),
                    None => return Err(XmlError::NotWellFormed(format!("undeclared prefix {p}"))),
                }
            };
            el.attrs.push((name, value));
        }
        Ok(el)
    }

    fn close_scope(&mut self) {
        if let Some(mark) = self.marks.pop() {
            self.bindings.truncate(mark);
        }
    }

    fn header_from(&self, el: &Element) -> StreamHeader {
        StreamHeader {
            to: el.attr("to").map(str::to_string),
            from: el.attr("from").map(str::to_string),
            id: el.attr("id").map(str::to_string),
            version: el.attr("version").map(str::to_string),
            default_ns: self.resolve("").unwrap_or("").to_string(),
            stream_ns_ok: el.name == "stream" && el.ns == ns::STREAM,
        }
    }

    /// Finish a top-level element: count bytes afresh for the next one and
    /// give back an oversized parse buffer, or any parse buffer when no
    /// more bytes are waiting (the session is likely to wait for its peer
    /// now, and an idle session should hold no buffer).
    fn finished(&mut self, el: Element) -> StreamEvent {
        self.limiter().reset();
        if self.buf.capacity() > KEEP_BUFFER || self.reader.get_ref().buffer().is_empty() {
            self.buf = Vec::new();
        }
        StreamEvent::Stanza(el)
    }

    fn push_text(&mut self, text: &str) -> Result<(), XmlError> {
        match self.stack.last_mut() {
            Some(top) => {
                if let Some(Node::Text(t)) = top.children.last_mut() {
                    t.push_str(text);
                } else {
                    top.children.push(Node::Text(text.to_string()));
                }
                Ok(())
            }
            None if text.chars().all(|c| c.is_ascii_whitespace()) => Ok(()), // keep-alive
            None => Err(XmlError::NotWellFormed("text at stream level".into())),
        }
    }

    /// Read the next stream event.
    /// Wait until bytes (or the end of the stream, or a read error) have
    /// arrived, without parsing: [`Self::next`] then finds them buffered.
    /// Cancel-safe. Its future holds only `self`, so an idle session can
    /// wait here cheaply and start the parser's larger future on data.
    pub async fn readable(&mut self) {
        std::future::poll_fn(|cx| {
            let inner = std::pin::Pin::new(self.reader.get_mut());
            match tokio::io::AsyncBufRead::poll_fill_buf(inner, cx) {
                std::task::Poll::Pending => std::task::Poll::Pending,
                // Errors and the end of the stream are for `next` to report:
                // the limit error is sticky, a failed connection fails again.
                std::task::Poll::Ready(_) => std::task::Poll::Ready(()),
            }
        })
        .await
    }

    pub async fn next(&mut self) -> Result<StreamEvent, XmlError> {
        loop {
            self.buf.clear();
            let event = match self.reader.read_event_into_async(&mut self.buf).await {
                Ok(ev) => ev.into_owned(),
                Err(e) => {
                    if self.reader.get_ref().get_ref().exceeded() {
                        return Err(XmlError::TooBig);
                    }
                    return Err(match e {
                        quick_xml::Error::Io(io) => {
                            if io.kind() == io::ErrorKind::UnexpectedEof {
                                XmlError::Closed
                            } else {
                                XmlError::Io(io::Error::new(io.kind(), io.to_string()))
                            }
                        }
                        quick_xml::Error::Escape(e) => XmlError::Restricted(e.to_string()),
                        other => XmlError::NotWellFormed(other.to_string()),
                    });
                }
            };
            match event {
                Event::Decl(decl) => {
                    if self.started {
                        return Err(XmlError::Restricted(
                            "XML declaration inside the stream".into(),
                        ));
                    }
                    if let Some(Ok(enc)) = decl.encoding() {
                        if !enc.eq_ignore_ascii_case(b"utf-8") {
                            return Err(XmlError::UnsupportedEncoding);
                        }
                    }
                }
                Event::DocType(_) => return Err(XmlError::Restricted("DTD".into())),
                Event::PI(_) => return Err(XmlError::Restricted("processing instruction".into())),
                Event::Comment(_) => return Err(XmlError::Restricted("comment".into())),
                Event::Eof => return Err(XmlError::Closed),
                Event::Start(start) => {
                    let el = self.open(&start)?;
                    if !self.started {
                        self.started = true;
                        let header = self.header_from(&el);
                        self.limiter().reset();
                        return Ok(StreamEvent::Header(header));
                    }
                    self.stack.push(el);
                }
                Event::Empty(start) => {
                    let el = self.open(&start)?;
                    self.close_scope();
                    if !self.started {
                        return Err(XmlError::NotWellFormed(
                            "stream header closed at once".into(),
                        ));
                    }
                    match self.stack.last_mut() {
                        Some(parent) => parent.children.push(Node::Element(el)),
                        None => return Ok(self.finished(el)),
                    }
                }
                Event::End(_) => {
                    self.close_scope();
                    match self.stack.pop() {
                        None => return Ok(StreamEvent::End),
                        Some(el) => match self.stack.last_mut() {
                            Some(parent) => parent.children.push(Node::Element(el)),
                            None => return Ok(self.finished(el)),
                        },
                    }
                }
                Event::Text(t) => {
                    if !self.started {
                        // Whitespace before the header is allowed.
                        let raw = t
                            .decode()
                            .map_err(|e| XmlError::NotWellFormed(e.to_string()))?;
                        if raw.chars().all(|c| c.is_ascii_whitespace()) {
                            continue;
                        }
                        return Err(XmlError::NotWellFormed(
                            "text before the stream header".into(),
                        ));
                    }
                    let text = t
                        .xml_content()
                        .map_err(|e| XmlError::NotWellFormed(e.to_string()))?;
                    self.push_text(&text)?;
                }
                Event::CData(c) => {
                    let text = c
                        .decode()
                        .map_err(|e| XmlError::NotWellFormed(e.to_string()))?
                        .into_owned();
                    self.push_text(&text)?;
                }
                Event::GeneralRef(r) => {
                    let ch = if r.is_char_ref() {
                        match r.resolve_char_ref() {
                            Ok(Some(c)) => c,
                            _ => {
                                return Err(XmlError::NotWellFormed(
                                    "bad character reference".into(),
                                ))
                            }
                        }
                    } else {
                        let name = r
                            .decode()
                            .map_err(|e| XmlError::NotWellFormed(e.to_string()))?;
                        match name.as_ref() {
                            "amp" => '&',
                            "lt" => '<',
                            "gt" => '>',
                            "apos" => '\'',
                            "quot" => '"',
                            other => {
                                return Err(XmlError::Restricted(format!(
                                    "entity reference &{other};"
                                )))
                            }
                        }
                    };
                    let mut tmp = [0u8; 4];
                    self.push_text(ch.encode_utf8(&mut tmp))?;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0' xml:lang='en'>";

    async fn events(input: &str, limit: Option<usize>) -> Vec<Result<String, String>> {
        let mut r = StreamReader::new(input.as_bytes(), limit);
        let mut out = Vec::new();
        for _ in 0..200 {
            match r.next().await {
                Ok(StreamEvent::Header(h)) => out.push(Ok(format!(
                    "header {} {}",
                    h.default_ns,
                    h.to.unwrap_or_default()
                ))),
                Ok(StreamEvent::Stanza(e)) => out.push(Ok(e.to_xml(ns::CLIENT))),
                Ok(StreamEvent::End) => {
                    out.push(Ok("end".into()));
                    break;
                }
                Err(XmlError::Closed) => break,
                Err(e) => {
                    out.push(Err(e.condition().unwrap_or("none").to_string()));
                    break;
                }
            }
        }
        out
    }

    #[tokio::test]
    async fn reads_header_stanzas_and_end() {
        let input = format!("{HEADER}<message to='a@b'><body>x &amp; y &#65;</body></message> \n<presence/></stream:stream>");
        let ev = events(&input, None).await;
        assert_eq!(ev[0], Ok("header jabber:client localhost".into()));
        assert_eq!(
            ev[1],
            Ok("<message to='a@b'><body>x &amp; y A</body></message>".into())
        );
        assert_eq!(ev[2], Ok("<presence/>".into()));
        assert_eq!(ev[3], Ok("end".into()));
    }

    #[tokio::test]
    async fn resolves_prefixed_namespaces() {
        let input = format!("{HEADER}<iq type='get' id='1'><p:ping xmlns:p='urn:xmpp:ping'/></iq>");
        let mut r = StreamReader::new(input.as_bytes(), None);
        assert!(matches!(r.next().await, Ok(StreamEvent::Header(_))));
        match r.next().await {
            Ok(StreamEvent::Stanza(e)) => {
                assert_eq!(e.ns, ns::CLIENT);
                let c = e.first_child().unwrap();
                assert!(c.is("ping", ns::PING));
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn refuses_restricted_xml() {
        for bad in [
            "<!DOCTYPE foo [<!ENTITY a 'b'>]><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>",
            &format!("{HEADER}<?foo bar?>"),
            &format!("{HEADER}<!-- hi -->"),
            &format!("{HEADER}<message><body>&foo;</body></message>"),
            &format!("{HEADER}<message to='&foo;'/>"),
        ] {
            let ev = events(bad, None).await;
            assert_eq!(ev.last(), Some(&Err("restricted-xml".into())), "{bad}");
        }
    }

    #[tokio::test]
    async fn refuses_malformed_xml() {
        for bad in [
            &format!("{HEADER}<message></presence>"),
            &format!("{HEADER}<a b='1' b='2'/>"),
            &format!("{HEADER}<x:y/>"),
            &format!("{HEADER}hello"),
        ] {
            let ev = events(bad, None).await;
            assert_eq!(ev.last(), Some(&Err("not-well-formed".into())), "{bad}");
        }
    }

    #[tokio::test]
    async fn enforces_stanza_size() {
        let big = "a".repeat(100_000);
        let input = format!("{HEADER}<message><body>{big}</body></message>");
        let ev = events(&input, Some(10_000)).await;
        assert_eq!(ev.last(), Some(&Err("policy-violation".into())));
        // Many small stanzas adding up past the limit are fine.
        let small: String = (0..100).map(|i| format!("<presence id='{i}'/>")).collect();
        let ev = events(&format!("{HEADER}{small}"), Some(300)).await;
        assert_eq!(ev.len(), 101);
        assert!(ev.iter().all(|e| e.is_ok()));
    }
}
