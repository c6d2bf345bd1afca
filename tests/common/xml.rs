//! A minimal XML element tree and an incremental XMPP stream splitter for the
//! integration-test client.
//!
//! The server's output is buffered as raw bytes; [`parse_unit`] tries to cut
//! one top-level unit (stream header, complete stanza, or stream close) off the
//! front of that buffer with quick-xml. When the buffer does not yet hold a
//! complete unit it answers `Ok(None)` and the caller reads more bytes.

use std::fmt;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

/// Namespace of the stream envelope (`stream:` prefix).
pub const NS_STREAMS: &str = "http://etherx.jabber.org/streams";
/// Namespace of stream error conditions.
pub const NS_STREAM_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
/// Namespace of stanza error conditions.
pub const NS_STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
/// STARTTLS namespace.
pub const NS_TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
/// SASL namespace.
pub const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
/// Resource binding namespace.
pub const NS_BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
/// Legacy session establishment namespace.
pub const NS_SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
/// XEP-0440 SASL channel-binding type capability namespace.
pub const NS_SASL_CB: &str = "urn:xmpp:sasl-cb:0";
/// Client content namespace.
pub const NS_CLIENT: &str = "jabber:client";
/// XEP-0199 ping.
pub const NS_PING: &str = "urn:xmpp:ping";
/// XEP-0030 disco#info.
pub const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";

/// A parsed XML element (namespace-resolved name, raw attributes, children).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Element {
    /// Local name (without prefix).
    pub name: String,
    /// Prefix as written by the sender, if any.
    pub prefix: Option<String>,
    /// Resolved namespace URI ("" when none is in scope).
    pub ns: String,
    /// Attributes in document order, excluding namespace declarations,
    /// keyed by their qualified name as written.
    pub attrs: Vec<(String, String)>,
    /// Child elements in document order.
    pub children: Vec<Element>,
    /// Concatenated character data directly inside this element.
    pub text: String,
}

impl Element {
    /// Value of the attribute `name`, matched on the qualified name first and
    /// then on the local part (so `lang` finds `xml:lang`).
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .or_else(|| {
                self.attrs
                    .iter()
                    .find(|(k, _)| k.rsplit(':').next() == Some(name))
            })
            .map(|(_, v)| v.as_str())
    }

    /// True when this element has local name `name` in namespace `ns`.
    pub fn is(&self, name: &str, ns: &str) -> bool {
        self.name == name && self.ns == ns
    }

    /// First child with local name `name` (any namespace).
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// First child with local name `name` in namespace `ns`.
    pub fn child_ns(&self, name: &str, ns: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.is(name, ns))
    }

    /// All children with local name `name` (any namespace).
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// Text of the first child called `name`, if present.
    pub fn child_text(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.as_str())
    }

    /// For a `<stream:error/>` or a stanza `<error/>` element: the local name
    /// of its defined-condition child (the first child in `cond_ns` that is
    /// not `<text/>`).
    pub fn condition_in(&self, cond_ns: &str) -> Option<&str> {
        self.children
            .iter()
            .find(|c| c.ns == cond_ns && c.name != "text")
            .map(|c| c.name.as_str())
    }

    /// For a stanza of type `error`: `(error type attribute, condition)`.
    pub fn stanza_error(&self) -> Option<(String, String)> {
        let err = self.child("error")?;
        let cond = err.condition_in(NS_STANZAS)?;
        Some((err.attr("type").unwrap_or("").to_string(), cond.to_string()))
    }

    /// True for `<stream:error/>`.
    pub fn is_stream_error(&self) -> bool {
        self.is("error", NS_STREAMS)
    }
}

fn escape(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}

impl fmt::Display for Element {
    /// Re-serialises the element (namespaces shown as `xmlns` on every element
    /// whose namespace differs from its parent's); meant for diagnostics.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn write(e: &Element, parent_ns: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            let qname = match &e.prefix {
                Some(p) => format!("{p}:{}", e.name),
                None => e.name.clone(),
            };
            write!(f, "<{qname}")?;
            if e.ns != parent_ns && e.prefix.is_none() {
                write!(f, " xmlns='{}'", escape(&e.ns))?;
            }
            for (k, v) in &e.attrs {
                write!(f, " {k}='{}'", escape(v))?;
            }
            if e.children.is_empty() && e.text.is_empty() {
                return write!(f, "/>");
            }
            write!(f, ">{}", escape(&e.text))?;
            for c in &e.children {
                write(c, &e.ns, f)?;
            }
            write!(f, "</{qname}>")
        }
        write(self, "", f)
    }
}

/// Namespace declarations in scope: `(prefix, uri)`, prefix "" = default.
pub type Scope = Vec<(String, String)>;

/// One unit cut from the front of the stream.
#[derive(Clone, Debug, PartialEq)]
pub enum Unit {
    /// `<stream:stream ...>` opening tag (no children).
    Header(Element),
    /// A complete first-level element (stanza, features, SASL, stream error...).
    Stanza(Element),
    /// `</stream:stream>`.
    End,
}

fn lookup(scopes: &[Scope], prefix: &str) -> Option<String> {
    scopes
        .iter()
        .rev()
        .flat_map(|s| s.iter().rev())
        .find(|(p, _)| p == prefix)
        .map(|(_, u)| u.clone())
}

fn start_element(e: &BytesStart<'_>, scopes: &mut Vec<Scope>) -> Result<Element, String> {
    let qname = String::from_utf8_lossy(e.name().as_ref()).into_owned();
    let (prefix, local) = match qname.split_once(':') {
        Some((p, l)) => (Some(p.to_string()), l.to_string()),
        None => (None, qname.clone()),
    };
    let mut decls = Scope::new();
    let mut attrs = Vec::new();
    for a in e.attributes() {
        let a = a.map_err(|err| format!("bad attribute: {err}"))?;
        let key = String::from_utf8_lossy(a.key.as_ref()).into_owned();
        let value = a
            .unescape_value()
            .map_err(|err| format!("bad attribute value: {err}"))?
            .into_owned();
        if key == "xmlns" {
            decls.push((String::new(), value));
        } else if let Some(p) = key.strip_prefix("xmlns:") {
            decls.push((p.to_string(), value));
        } else {
            attrs.push((key, value));
        }
    }
    scopes.push(decls);
    let pfx = prefix.as_deref().unwrap_or("");
    let ns = lookup(scopes, pfx).unwrap_or_else(|| match pfx {
        // Be lenient about an undeclared `stream:` prefix (diagnostics only).
        "stream" => NS_STREAMS.to_string(),
        _ => String::new(),
    });
    Ok(Element {
        name: local,
        prefix,
        ns,
        attrs,
        children: Vec::new(),
        text: String::new(),
    })
}

/// Tries to cut one unit off the front of `buf`.
///
/// `stream_scope` holds the namespace declarations of the current stream
/// header; it is replaced when a new header is parsed. Returns the unit and the
/// number of bytes consumed, `Ok(None)` when more input is needed, or `Err`
/// when the input can never become a valid unit (the caller decides whether
/// more input may still help).
pub fn parse_unit(buf: &[u8], stream_scope: &mut Scope) -> Result<Option<(Unit, usize)>, String> {
    let mut reader = Reader::from_reader(buf);
    {
        let cfg = reader.config_mut();
        cfg.allow_unmatched_ends = true;
        cfg.check_end_names = true;
        cfg.expand_empty_elements = false;
        cfg.trim_text_start = false;
        cfg.trim_text_end = false;
    }
    let mut scopes: Vec<Scope> = vec![stream_scope.clone()];
    let mut stack: Vec<Element> = Vec::new();
    loop {
        let ev = match reader.read_event() {
            Ok(ev) => ev,
            Err(err) => return Err(format!("{err}")),
        };
        let pos = reader.buffer_position() as usize;
        match ev {
            Event::Eof => return Ok(None),
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) | Event::DocType(_)
                if stack.is_empty() =>
            {
                // Prolog noise at top level (XML declaration...): skip it.
            }
            Event::Text(t) if stack.is_empty() => {
                let s = t.decode().map_err(|e| e.to_string())?;
                if !s.trim().is_empty() {
                    return Err(format!("unexpected top-level text {s:?}"));
                }
                // Whitespace between stanzas: consume as part of the next unit.
            }
            Event::Start(s) => {
                let el = start_element(&s, &mut scopes)?;
                if stack.is_empty() && el.name == "stream" && el.ns == NS_STREAMS {
                    *stream_scope = scopes.pop().unwrap_or_default();
                    return Ok(Some((Unit::Header(el), pos)));
                }
                stack.push(el);
            }
            Event::Empty(s) => {
                let el = start_element(&s, &mut scopes)?;
                scopes.pop();
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => return Ok(Some((Unit::Stanza(el), pos))),
                }
            }
            Event::End(e) => {
                if stack.is_empty() {
                    let qname = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                    if qname == "stream:stream" || qname.ends_with(":stream") || qname == "stream" {
                        return Ok(Some((Unit::End, pos)));
                    }
                    return Err(format!("unexpected closing tag </{qname}>"));
                }
                scopes.pop();
                let el = stack.pop().expect("non-empty stack");
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => return Ok(Some((Unit::Stanza(el), pos))),
                }
            }
            Event::Text(t) => {
                let s = t.decode().map_err(|e| e.to_string())?;
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&s);
                }
            }
            Event::CData(t) => {
                let s = t.decode().map_err(|e| e.to_string())?;
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&s);
                }
            }
            Event::GeneralRef(r) => {
                let resolved = if r.is_char_ref() {
                    r.resolve_char_ref()
                        .map_err(|e| e.to_string())?
                        .map(String::from)
                } else {
                    let name = r.decode().map_err(|e| e.to_string())?;
                    quick_xml::escape::resolve_predefined_entity(&name).map(String::from)
                };
                let resolved = resolved.ok_or_else(|| "unknown entity reference".to_string())?;
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&resolved);
                }
            }
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) | Event::DocType(_) => {}
        }
    }
}

/// Parses one complete standalone element (for unit tests of the harness and
/// for building expected values). Namespaces default to `jabber:client`.
pub fn parse_element(xml: &str) -> Element {
    let mut scope = vec![(String::new(), NS_CLIENT.to_string())];
    match parse_unit(xml.as_bytes(), &mut scope) {
        Ok(Some((Unit::Stanza(e), _))) => e,
        other => panic!("not a single element: {xml:?} -> {other:?}"),
    }
}
