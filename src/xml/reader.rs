//! The incremental XML stream reader: turns bytes from a (TLS) socket into a
//! stream header, then one complete stanza at a time, then the stream's end.
//! c2s, s2s and component streams (and stored stanzas) all read through it.
//!
//! It uses quick-xml's async reader over a [`LimitedRead`] for tokens, and
//! checks every token against XML 1.0 and Namespaces in XML 1.0 itself
//! ([`super::wellformed`]: characters, names, attribute syntax, references),
//! since quick-xml is permissive by design. It resolves namespaces itself (a
//! stack of declarations) and refuses unbound prefixes, misused `xml`/`xmlns`
//! prefixes and attributes that are duplicates after resolution. It enforces
//! RFC 6120 §11.1 restricted XML: a DTD, a processing instruction (other than
//! the XML declaration), a comment, or a reference to an entity other than the
//! five predefined ones ends the stream; nothing is ever expanded.
//!
//! Limits hold at all times: a stanza nests at most [`MAX_DEPTH`] elements,
//! an element has at most [`MAX_ATTRIBUTES`] attributes (namespace
//! declarations included), at most [`MAX_NAMESPACES`] declarations are in
//! scope; passing one is [`XmlError::Limit`] at once. Only the stanza being
//! read is held in memory, and never more than the stanza-size limit (set at
//! creation, changed with [`StreamReader::set_max_stanza_size`], e.g. after
//! authentication): the byte counter under the parser fails the read first.
//! What the parsed tree holds is bounded by that limit too: every element
//! carries its namespace name as its own string, so a long default
//! namespace inherited by many small children would make memory grow with
//! the square of the stanza size; the names and namespaces of a stanza's
//! elements are counted, and more than [`TREE_FACTOR`] times the limit is a
//! policy violation.
//!
//! Before the stream header only whitespace may come, and a byte order mark
//! as the very first character (however the bytes arrive); an XML
//! declaration must be the first thing of its document (after the BOM),
//! as XML 1.0 says: whitespace before it is not well-formed, except in a
//! restarted stream, where it is what the client sent after the previous
//! document's last element.
//!
//! Errors map to stream error conditions ([`XmlError::condition`]):
//! not well-formed → `not-well-formed`, restricted XML → `restricted-xml`,
//! a limit → `policy-violation`.

use super::bufread::LazyBufReader;
use super::limit::LimitedRead;
use super::wellformed::{self, RawAttr};
use quick_xml::events::{BytesStart, Event};
use std::io;
use tokio::io::AsyncRead;
use xep_support::element::{Element, Node, NS_XML};
use xep_support::ns;

use crate::stream::StreamCondition;

/// Elements a stanza may nest, itself included (deeper is a policy violation).
pub const MAX_DEPTH: usize = 64;
/// Attributes one element may have, namespace declarations included.
pub const MAX_ATTRIBUTES: usize = 100;
/// Namespace declarations in scope at once (the stream header's included).
pub const MAX_NAMESPACES: usize = 128;

/// The names and namespace names of one stanza's elements may add up to
/// this many times the stanza-size limit (a legal stanza needs a few times
/// at most: a namespace inherited by children a few bytes long each).
pub const TREE_FACTOR: usize = 16;

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
    /// A stanza larger than the stanza-size limit in force.
    TooBig,
    /// A stanza nesting too deep, or an element with too many attributes
    /// or namespace declarations.
    Limit(String),
    /// An encoding other than UTF-8 was declared.
    UnsupportedEncoding,
    /// The transport's framing was broken ([`crate::stream::TransportError`]).
    Transport(StreamCondition, String),
}

impl XmlError {
    /// The stream error condition to send for this error, if any.
    pub fn condition(&self) -> Option<StreamCondition> {
        match self {
            XmlError::Closed | XmlError::Io(_) => None,
            XmlError::NotWellFormed(_) => Some(StreamCondition::NotWellFormed),
            XmlError::Restricted(_) => Some(StreamCondition::RestrictedXml),
            XmlError::TooBig | XmlError::Limit(_) => Some(StreamCondition::PolicyViolation),
            XmlError::UnsupportedEncoding => Some(StreamCondition::UnsupportedEncoding),
            XmlError::Transport(c, _) => Some(*c),
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
            XmlError::TooBig => write!(f, "stanza larger than the stanza size limit"),
            XmlError::Limit(why) => write!(f, "limit passed: {why}"),
            XmlError::UnsupportedEncoding => write!(f, "unsupported encoding"),
            XmlError::Transport(_, why) => f.write_str(why),
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
    /// The attributes of the start tag being read (kept for its capacity).
    attrs: Vec<RawAttr>,
    /// Whether the stream header was read.
    started: bool,
    /// Whether an XML declaration was read in this stream.
    declared: bool,
    /// Whether anything (a BOM, whitespace) came before the header.
    opened: bool,
    /// Whether whitespace came before the header.
    preamble: bool,
    /// Whether this is a restarted stream (whitespace the client sent after
    /// its last element of the previous document may precede the header
    /// and its declaration).
    restarted: bool,
    /// Bytes of element names and namespace names of the stanza being read.
    tree_bytes: usize,
    /// `TREE_FACTOR` times the stanza-size limit (`None`: no limit).
    tree_limit: Option<usize>,
}

/// The bound on a stanza's element names and namespaces for a size limit.
fn tree_limit(max_stanza_size: Option<usize>) -> Option<usize> {
    max_stanza_size.map(|m| m.saturating_add(READ_BUFFER).saturating_mul(TREE_FACTOR))
}

fn configure<B>(reader: &mut quick_xml::Reader<B>) {
    let cfg = reader.config_mut();
    cfg.check_end_names = true;
    cfg.expand_empty_elements = false;
    cfg.trim_text(false);
    cfg.allow_dangling_amp = false;
    cfg.allow_unmatched_ends = false;
}

/// The byte limit under the parser for a stanza-size limit: the buffered
/// reader reads ahead up to READ_BUFFER bytes past the stanza being
/// parsed, so the count is allowed that much slack.
fn byte_limit(max_stanza_size: Option<usize>) -> Option<usize> {
    max_stanza_size.map(|m| m.saturating_add(READ_BUFFER))
}

impl<R: AsyncRead + Unpin> StreamReader<R> {
    /// A reader over `inner`, refusing stanzas over `max_stanza_size` bytes.
    pub fn new(inner: R, max_stanza_size: Option<usize>) -> Self {
        let limited = LimitedRead::new(inner, byte_limit(max_stanza_size));
        let mut reader =
            quick_xml::Reader::from_reader(LazyBufReader::with_capacity(READ_BUFFER, limited));
        configure(&mut reader);
        Self::over(reader, tree_limit(max_stanza_size))
    }

    fn over(
        reader: quick_xml::Reader<LazyBufReader<LimitedRead<R>>>,
        tree_limit: Option<usize>,
    ) -> Self {
        StreamReader {
            reader,
            buf: Vec::new(),
            stack: Vec::new(),
            bindings: Vec::new(),
            marks: Vec::new(),
            attrs: Vec::new(),
            started: false,
            declared: false,
            opened: false,
            preamble: false,
            restarted: false,
            tree_bytes: 0,
            tree_limit,
        }
    }

    /// A fresh parser for a restarted stream (after SASL), over the same
    /// transport and whatever bytes are already buffered; the stanza-size
    /// limit stays.
    pub fn restart(self) -> Self {
        let tree_limit = self.tree_limit;
        let inner = self.reader.into_inner();
        let mut reader = quick_xml::Reader::from_reader(inner);
        configure(&mut reader);
        let mut restarted = Self::over(reader, tree_limit);
        restarted.restarted = true;
        restarted
    }

    /// Change the stanza-size limit (`None`: none), e.g. from the
    /// pre-authentication limit to `max_stanza_size` after authentication.
    pub fn set_max_stanza_size(&mut self, max_stanza_size: Option<usize>) {
        self.limiter().set_limit(byte_limit(max_stanza_size));
        self.tree_limit = tree_limit(max_stanza_size);
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

    /// Read a start tag into an element, pushing its namespace declarations.
    fn open(&mut self, start: &BytesStart<'_>) -> Result<Element, XmlError> {
        let tag = wellformed::chars(start)?;
        let mut attrs = std::mem::take(&mut self.attrs);
        self.marks.push(self.bindings.len());
        let result = self.open_tag(tag, &mut attrs);
        self.attrs = attrs;
        result
    }

    fn open_tag(&mut self, tag: &str, attrs: &mut Vec<RawAttr>) -> Result<Element, XmlError> {
        let name = wellformed::start_tag(tag, MAX_ATTRIBUTES, attrs)?;
        let mark = self.bindings.len();
        // Declarations first: they apply to the element's own names.
        for a in attrs.iter() {
            let prefix = match a.name.split(tag) {
                ("", "xmlns") => "",
                ("xmlns", p) => p,
                _ => continue,
            };
            let uri = wellformed::attr_value(&tag[a.value.clone()])?;
            wellformed::check_binding(prefix, &uri)?;
            if self.bindings[mark..].iter().any(|(p, _)| p == prefix) {
                return Err(XmlError::NotWellFormed(format!(
                    "namespace of '{}' declared twice",
                    wellformed::excerpt(prefix)
                )));
            }
            if self.bindings.len() >= MAX_NAMESPACES {
                return Err(XmlError::Limit(format!(
                    "more than {MAX_NAMESPACES} namespace declarations in scope"
                )));
            }
            self.bindings.push((prefix.to_string(), uri.into_owned()));
        }
        let (prefix, local) = name.split(tag);
        if prefix == "xmlns" {
            return Err(XmlError::NotWellFormed(
                "the prefix xmlns is not for elements".into(),
            ));
        }
        let ns = match self.resolve(prefix) {
            Some(u) => u.to_string(),
            None if prefix.is_empty() => String::new(),
            None => return Err(unbound(prefix)),
        };
        self.tree_bytes += local.len() + ns.len();
        if self.tree_limit.is_some_and(|max| self.tree_bytes > max) {
            return Err(XmlError::Limit(
                "the stanza's element names and namespaces are too large".into(),
            ));
        }
        let mut el = Element::new(local, ns);
        // Unprefixed attributes (in no namespace) first, then prefixed ones
        // named `xml:local` or `{uri}local`, each in document order.
        for prefixed in [false, true] {
            for a in attrs.iter() {
                let (p, l) = a.name.split(tag);
                if p.is_empty() == prefixed || p == "xmlns" || (p.is_empty() && l == "xmlns") {
                    continue;
                }
                let name = match p {
                    "" => l.to_string(),
                    "xml" => format!("xml:{l}"),
                    _ => match self.resolve(p) {
                        Some(u) => format!("{{{u}}}{l}"),
                        None => return Err(unbound(p)),
                    },
                };
                if el.attrs.iter().any(|(n, _)| *n == name) {
                    return Err(XmlError::NotWellFormed(format!(
                        "duplicate attribute '{}'",
                        wellformed::excerpt(&tag[a.name.range.clone()])
                    )));
                }
                let value = wellformed::attr_value(&tag[a.value.clone()])?.into_owned();
                el.attrs.push((name, value));
            }
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

    /// Finish a top-level element: count bytes afresh for the next one.
    fn finished(&mut self, el: Element) -> StreamEvent {
        self.limiter().reset();
        self.tree_bytes = 0;
        StreamEvent::Stanza(el)
    }

    /// Character data (from text, CDATA or a reference) at the current place.
    fn push_text(&mut self, text: &str, literal: bool) -> Result<(), XmlError> {
        match self.stack.last_mut() {
            Some(top) => {
                if let Some(Node::Text(t)) = top.children.last_mut() {
                    t.push_str(text);
                } else {
                    top.children.push(Node::Text(text.to_string()));
                }
                Ok(())
            }
            // Whitespace between stanzas (keep-alives) and before the header,
            // where a BOM may open the document (quick-xml drops it itself
            // only when it comes in the first read).
            None if literal => {
                let text = match text.strip_prefix('\u{FEFF}') {
                    Some(rest) if !self.started && !self.opened && !self.declared => rest,
                    _ => text,
                };
                if !text
                    .bytes()
                    .all(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
                {
                    return Err(XmlError::NotWellFormed(if self.started {
                        "text at stream level".into()
                    } else {
                        "text before the stream header".into()
                    }));
                }
                if !self.started {
                    self.opened = true;
                    self.preamble |= !text.is_empty();
                }
                Ok(())
            }
            None if !self.started => Err(XmlError::NotWellFormed(
                "text before the stream header".into(),
            )),
            None => Err(XmlError::NotWellFormed("text at stream level".into())),
        }
    }

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

    /// Read the next stream event.
    pub async fn next(&mut self) -> Result<StreamEvent, XmlError> {
        // The events borrow the parse buffer: it is taken out of `self`
        // while they are read, so no event needs to be copied.
        let mut buf = std::mem::take(&mut self.buf);
        let result = self.next_in(&mut buf).await;
        // After a stanza, give back an oversized parse buffer, or any parse
        // buffer when no more bytes are waiting (the session is likely to
        // wait for its peer now, and an idle session should hold no buffer).
        if matches!(result, Ok(StreamEvent::Stanza(_)))
            && (buf.capacity() > KEEP_BUFFER || self.reader.get_ref().buffer().is_empty())
        {
            buf = Vec::new();
        }
        self.buf = buf;
        result
    }

    /// At a document's first byte: take a BOM that arrived whole here, so
    /// that quick-xml (which drops one only when its first read holds all
    /// of it) never does, and a BOM counts once however the bytes arrive
    /// (one that arrives in pieces reaches [`Self::push_text`] as text).
    /// A read error is left for the parser's next read to report.
    /// A second BOM right behind the first is refused here: quick-xml would
    /// drop it otherwise.
    async fn take_bom(&mut self) -> Result<(), XmlError> {
        use tokio::io::AsyncBufReadExt;
        const BOM: &[u8] = b"\xEF\xBB\xBF";
        let inner = self.reader.get_mut();
        if inner.fill_buf().await.is_ok_and(|b| b.starts_with(BOM)) {
            inner.consume(BOM.len());
            self.opened = true;
            if inner.fill_buf().await.is_ok_and(|b| b.starts_with(BOM)) {
                return Err(XmlError::NotWellFormed(
                    "text before the stream header".into(),
                ));
            }
        }
        Ok(())
    }

    fn read_error(&self, e: quick_xml::Error) -> XmlError {
        if self.reader.get_ref().get_ref().exceeded() {
            return XmlError::TooBig;
        }
        match e {
            quick_xml::Error::Io(io) => {
                if let Some(t) = io
                    .get_ref()
                    .and_then(|e| e.downcast_ref::<crate::stream::TransportError>())
                {
                    return XmlError::Transport(t.condition, t.text.clone());
                }
                if io.kind() == io::ErrorKind::UnexpectedEof {
                    XmlError::Closed
                } else {
                    XmlError::Io(io::Error::new(io.kind(), io.to_string()))
                }
            }
            quick_xml::Error::Escape(e) => {
                XmlError::Restricted(wellformed::printable(&e.to_string(), 200))
            }
            // quick-xml's messages may quote the input: keep them short and
            // free of characters XML cannot carry.
            other => XmlError::NotWellFormed(wellformed::printable(&other.to_string(), 200)),
        }
    }

    async fn next_in(&mut self, buf: &mut Vec<u8>) -> Result<StreamEvent, XmlError> {
        if !self.opened && !self.declared && self.reader.buffer_position() == 0 {
            self.take_bom().await?;
        }
        loop {
            buf.clear();
            let event = match self.reader.read_event_into_async(buf).await {
                Ok(ev) => ev,
                Err(e) => return Err(self.read_error(e)),
            };
            match event {
                Event::Decl(decl) => {
                    if self.started || self.declared {
                        return Err(XmlError::Restricted(
                            "XML declaration inside the stream".into(),
                        ));
                    }
                    if self.preamble && !self.restarted {
                        return Err(XmlError::NotWellFormed(
                            "the XML declaration must open the document".into(),
                        ));
                    }
                    self.declared = true;
                    wellformed::xml_decl(&decl)?;
                }
                Event::DocType(_) => return Err(XmlError::Restricted("DTD".into())),
                Event::PI(_) => return Err(XmlError::Restricted("processing instruction".into())),
                Event::Comment(_) => return Err(XmlError::Restricted("comment".into())),
                Event::Eof => return Err(XmlError::Closed),
                Event::Start(start) => {
                    if self.stack.len() >= MAX_DEPTH {
                        return Err(too_deep());
                    }
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
                    if self.stack.len() >= MAX_DEPTH {
                        return Err(too_deep());
                    }
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
                    let text = wellformed::text(&t)?;
                    self.push_text(&text, true)?;
                }
                Event::CData(c) => {
                    let text = wellformed::cdata(&c)?;
                    self.push_text(&text, false)?;
                }
                Event::GeneralRef(r) => {
                    let ch = wellformed::reference(wellformed::chars(&r)?)?;
                    let mut tmp = [0u8; 4];
                    self.push_text(ch.encode_utf8(&mut tmp), false)?;
                }
            }
        }
    }
}

fn unbound(prefix: &str) -> XmlError {
    XmlError::NotWellFormed(format!("undeclared prefix {}", wellformed::excerpt(prefix)))
}

fn too_deep() -> XmlError {
    XmlError::Limit(format!("a stanza nests more than {MAX_DEPTH} elements"))
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
                    out.push(Err(e
                        .condition()
                        .map_or("none", |c| c.as_str())
                        .to_string()));
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
