//! The XML element tree every stanza is held in, and its serialisation.
//!
//! A stanza is parsed into an [`Element`] (name, resolved namespace,
//! attributes, children) by the server's stream reader, handed to the router
//! and to modules, and written back out with [`Element::write_to`], which
//! escapes text and attribute values and declares namespaces only where they
//! differ from the parent's.
//!
//! Invariant: whatever [`Element::write_to`] and [`escape_into`] write holds
//! only characters of XML 1.0's `Char` production, whatever the element
//! holds. A character outside it (U+0000–U+0008, U+000B, U+000C,
//! U+000E–U+001F, U+FFFE, U+FFFF; Rust strings cannot hold surrogates) — in
//! text, attribute values or names — is written as U+FFFD and reported by a
//! rate-limited warning. Such characters reach an element only from data
//! stored by an earlier version or from a reader that let them through; the
//! check is one table lookup per byte, in the same scan that finds the
//! characters to escape, so clean text costs nothing more.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Namespace of client streams' stanzas.
pub const NS_CLIENT: &str = "jabber:client";
/// Namespace of server-to-server streams' stanzas.
pub const NS_SERVER: &str = "jabber:server";
/// The XEP-0114 component stream namespace (the same content namespace again).
pub const NS_COMPONENT: &str = "jabber:component:accept";
/// The streams namespace, written with the `stream:` prefix.
pub const NS_STREAM: &str = "http://etherx.jabber.org/streams";
/// The `xml:` prefix's namespace.
pub const NS_XML: &str = "http://www.w3.org/XML/1998/namespace";

/// A child of an element: another element or character data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    Element(Element),
    Text(String),
}

/// An XML element with its namespace resolved.
///
/// Attribute names are kept as written for unprefixed attributes, as
/// `xml:lang`-style names for the `xml:` prefix, and as `{namespace}local`
/// for any other prefixed attribute.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Element {
    pub name: String,
    pub ns: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Node>,
}

impl Element {
    /// A new empty element.
    pub fn new(name: impl Into<String>, ns: impl Into<String>) -> Self {
        Element {
            name: name.into(),
            ns: ns.into(),
            attrs: Vec::new(),
            children: Vec::new(),
        }
    }

    /// Builder: set an attribute.
    pub fn with_attr(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.set_attr(name, value);
        self
    }

    /// Builder: append a child element.
    pub fn with_child(mut self, child: Element) -> Self {
        self.children.push(Node::Element(child));
        self
    }

    /// Builder: append character data.
    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.children.push(Node::Text(text.into()));
        self
    }

    /// Whether this element has the given name and namespace.
    pub fn is(&self, name: &str, ns: &str) -> bool {
        self.name == name && self.ns == ns
    }

    /// An attribute's value.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Set (or replace) an attribute.
    pub fn set_attr(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = name.into();
        let value = value.into();
        if let Some(slot) = self.attrs.iter_mut().find(|(k, _)| *k == name) {
            slot.1 = value;
        } else {
            self.attrs.push((name, value));
        }
    }

    /// Remove an attribute, returning its old value.
    pub fn remove_attr(&mut self, name: &str) -> Option<String> {
        let pos = self.attrs.iter().position(|(k, _)| k == name)?;
        Some(self.attrs.remove(pos).1)
    }

    /// Child elements, in order.
    pub fn child_elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// Child elements, mutable.
    pub fn child_elements_mut(&mut self) -> impl Iterator<Item = &mut Element> {
        self.children.iter_mut().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// The first child element with this name and namespace.
    pub fn child(&self, name: &str, ns: &str) -> Option<&Element> {
        self.child_elements().find(|e| e.is(name, ns))
    }

    /// The first child element with this name and namespace, mutable.
    pub fn child_mut(&mut self, name: &str, ns: &str) -> Option<&mut Element> {
        self.child_elements_mut().find(|e| e.is(name, ns))
    }

    /// The first child element, if any.
    pub fn first_child(&self) -> Option<&Element> {
        self.child_elements().next()
    }

    /// Remove every child element with this name and namespace.
    pub fn remove_children(&mut self, name: &str, ns: &str) {
        self.children
            .retain(|n| !matches!(n, Node::Element(e) if e.is(name, ns)));
    }

    /// The concatenated character data directly inside this element.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for n in &self.children {
            if let Node::Text(t) = n {
                out.push_str(t);
            }
        }
        out
    }

    /// Serialise to a string; `parent_ns` is the namespace in scope (the
    /// stream's default namespace for a top-level stanza).
    pub fn to_xml(&self, parent_ns: &str) -> String {
        let mut out = String::with_capacity(128);
        self.write_to(&mut out, parent_ns);
        out
    }

    /// Serialise into `out`. The content namespaces `jabber:client` and
    /// `jabber:server` are treated as one, so a stanza parsed on a client
    /// stream can be written on a server stream and vice versa. Characters
    /// XML 1.0 does not allow are written as U+FFFD (see the module header).
    pub fn write_to(&self, out: &mut String, parent_ns: &str) {
        let replaced = self.write_inner(out, parent_ns, None);
        if replaced > 0 {
            report_replaced(replaced, &self.name, self.attr("from"), self.attr("to"));
        }
    }

    /// The serialisation [`Element::write_to`] gives, cut around the value
    /// of this element's own attribute `attr`: `(before, after)`, so that
    /// `before + escape(value) + after` is what `write_to` writes for any
    /// value of that attribute (a fan-out writes the shared parts once and
    /// only the recipient's address per recipient). `None` when the
    /// element has no such attribute, or when a character had to be
    /// replaced (such an element is written by `write_to`, which reports it).
    pub fn write_around_attr(&self, parent_ns: &str, attr: &str) -> Option<(String, String)> {
        self.attr(attr)?;
        let mut out = String::with_capacity(256);
        let mut hole = (attr, None);
        if self.write_inner(&mut out, parent_ns, Some(&mut hole)) > 0 {
            return None;
        }
        let at = hole.1?;
        let after = out.split_off(at);
        Some((out, after))
    }

    /// [`Element::write_to`] without the report; returns how many
    /// characters were replaced. With `hole` = `(name, at)`, the value of
    /// this element's attribute `name` is left out and `at` set to where it
    /// would be.
    fn write_inner(
        &self,
        out: &mut String,
        parent_ns: &str,
        mut hole: Option<&mut (&str, Option<usize>)>,
    ) -> usize {
        let mut replaced = 0;
        out.push('<');
        // Stream-level elements use the `stream:` prefix the stream header declares;
        // some clients match `stream:features` literally.
        let prefixed = self.ns == NS_STREAM;
        if prefixed {
            out.push_str("stream:");
        }
        replaced += push_name(out, &self.name);
        let same_ns = prefixed
            || self.ns == parent_ns
            || (is_content_ns(&self.ns) && is_content_ns(parent_ns));
        if !same_ns {
            out.push_str(" xmlns='");
            replaced += escape_counted(out, &self.ns, true);
            out.push('\'');
        }
        let mut extra = 0usize;
        for (k, v) in &self.attrs {
            if let Some(rest) = k.strip_prefix('{') {
                // A prefixed attribute in some namespace: declare a prefix for it.
                if let Some((ns, local)) = rest.split_once('}') {
                    let _ = write!(out, " xmlns:a{extra}='");
                    replaced += escape_counted(out, ns, true);
                    let _ = write!(out, "' a{extra}:");
                    replaced += push_name(out, local);
                    out.push_str("='");
                    extra += 1;
                } else {
                    continue;
                }
            } else {
                out.push(' ');
                replaced += push_name(out, k);
                out.push_str("='");
                if let Some(h) = hole
                    .as_deref_mut()
                    .filter(|h| h.0 == k.as_str() && h.1.is_none())
                {
                    h.1 = Some(out.len());
                    out.push('\'');
                    continue;
                }
            }
            replaced += escape_counted(out, v, true);
            out.push('\'');
        }
        if self.children.is_empty() {
            out.push_str("/>");
            return replaced;
        }
        out.push('>');
        let own_ns = if same_ns { parent_ns } else { &self.ns };
        for n in &self.children {
            replaced += match n {
                Node::Element(e) => e.write_inner(out, own_ns, None),
                Node::Text(t) => escape_counted(out, t, false),
            };
        }
        out.push_str("</");
        if prefixed {
            out.push_str("stream:");
        }
        replaced += push_name(out, &self.name);
        out.push('>');
        replaced
    }
}

fn is_content_ns(ns: &str) -> bool {
    ns == NS_CLIENT || ns == NS_SERVER || ns == NS_COMPONENT
}

/// What a byte asks of the writer.
const KEEP: u8 = 0;
/// `&`, `<`, `>`: always escaped.
const MARKUP: u8 = 1;
/// `'`, `"`, TAB, LF: escaped in attribute values only.
const ATTR_ONLY: u8 = 2;
/// CR: escaped everywhere (a raw CR would be normalised away by the reader).
const CR: u8 = 3;
/// A C0 control XML 1.0 does not allow.
const FORBIDDEN: u8 = 4;
/// 0xEF: the lead byte of U+F000–U+FFFF, among them U+FFFE and U+FFFF.
const LEAD_EF: u8 = 5;

const fn byte_classes() -> [u8; 256] {
    let mut t = [KEEP; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = FORBIDDEN;
        b += 1;
    }
    t[b'\t' as usize] = ATTR_ONLY;
    t[b'\n' as usize] = ATTR_ONLY;
    t[b'\r' as usize] = CR;
    t[b'&' as usize] = MARKUP;
    t[b'<' as usize] = MARKUP;
    t[b'>' as usize] = MARKUP;
    t[b'\'' as usize] = ATTR_ONLY;
    t[b'"' as usize] = ATTR_ONLY;
    t[0xEF] = LEAD_EF;
    t
}

static BYTE_CLASS: [u8; 256] = byte_classes();

/// What U+FFFE and U+FFFF start with in UTF-8 (the third byte is 0xBE or 0xBF).
fn is_nonchar_at(bytes: &[u8], i: usize) -> bool {
    bytes.get(i + 1) == Some(&0xBF) && matches!(bytes.get(i + 2), Some(0xBE | 0xBF))
}

/// Escape `s` into `out`; returns how many characters XML 1.0 does not
/// allow were written as U+FFFD. One pass over the bytes: runs of bytes
/// that need nothing are copied whole.
fn escape_counted(out: &mut String, s: &str, attr: bool) -> usize {
    let bytes = s.as_bytes();
    let mut replaced = 0;
    let mut run = 0;
    let mut i = 0;
    while i < bytes.len() {
        let class = BYTE_CLASS[bytes[i] as usize];
        if class == KEEP {
            i += 1;
            continue;
        }
        let rep = match (class, bytes[i]) {
            (MARKUP, b'&') => "&amp;",
            (MARKUP, b'<') => "&lt;",
            (MARKUP, _) => "&gt;",
            (CR, _) => "&#13;",
            (ATTR_ONLY, _) if !attr => {
                i += 1;
                continue;
            }
            (ATTR_ONLY, b'\'') => "&apos;",
            (ATTR_ONLY, b'"') => "&quot;",
            (ATTR_ONLY, b'\t') => "&#9;",
            (ATTR_ONLY, _) => "&#10;",
            (LEAD_EF, _) if !is_nonchar_at(bytes, i) => {
                i += 3;
                continue;
            }
            (LEAD_EF, _) => {
                // Both are three bytes long.
                out.push_str(&s[run..i]);
                out.push('\u{FFFD}');
                replaced += 1;
                i += 3;
                run = i;
                continue;
            }
            _ => {
                replaced += 1;
                "\u{FFFD}"
            }
        };
        // Every byte classed as needing work is ASCII, so `i` is a char boundary.
        out.push_str(&s[run..i]);
        out.push_str(rep);
        i += 1;
        run = i;
    }
    out.push_str(&s[run..]);
    replaced
}

/// Write an element or attribute name, replacing characters XML 1.0 does
/// not allow by U+FFFD (itself a name character); returns how many.
fn push_name(out: &mut String, name: &str) -> usize {
    let bytes = name.as_bytes();
    let clean = !bytes
        .iter()
        .enumerate()
        .any(|(i, &b)| b < 0x20 || (b == 0xEF && is_nonchar_at(bytes, i)));
    if clean {
        out.push_str(name);
        return 0;
    }
    let mut replaced = 0;
    for c in name.chars() {
        if is_xml_char(c) {
            out.push(c);
        } else {
            out.push('\u{FFFD}');
            replaced += 1;
        }
    }
    replaced
}

/// Whether `c` is in XML 1.0's `Char` production.
pub fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

/// Total characters replaced so far, and when (seconds since the first
/// report) the last warning was logged.
static REPLACED_TOTAL: AtomicU64 = AtomicU64::new(0);
static LAST_REPORT: AtomicU64 = AtomicU64::new(u64::MAX);

/// Log that characters were replaced: the first time, then at most once a
/// minute, so that a flood of such stanzas cannot flood the log.
fn report_replaced(n: usize, name: &str, from: Option<&str>, to: Option<&str>) {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let total = REPLACED_TOTAL.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
    let now = START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_secs();
    let last = LAST_REPORT.load(Ordering::Relaxed);
    let due = last == u64::MAX || now >= last.saturating_add(60);
    if due
        && LAST_REPORT
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(
            "wrote <{name}> (from {}, to {}) with {n} character(s) XML 1.0 does not allow replaced by U+FFFD \
             ({total} so far; data stored by an earlier version, or input the reader let through; \
             logged at most once a minute)",
            from.unwrap_or("-"),
            to.unwrap_or("-"),
        );
    }
}

/// Total characters written as U+FFFD because XML 1.0 does not allow them
/// (since the process started).
pub fn replaced_chars_total() -> u64 {
    REPLACED_TOTAL.load(Ordering::Relaxed)
}

/// Escape character data (and, with `attr`, attribute values quoted by `'`).
/// Characters XML 1.0 does not allow are written as U+FFFD (and reported).
pub fn escape_into(out: &mut String, s: &str, attr: bool) {
    let replaced = escape_counted(out, s, attr);
    if replaced > 0 {
        report_replaced(replaced, "text", None, None);
    }
}

/// Escape a string for use in XML text or attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    escape_into(&mut out, s, true);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_around_attr_gives_write_to_for_any_value() {
        let mut m = Element::new("message", NS_CLIENT)
            .with_attr("from", "r@c.x/n")
            .with_attr("to", "a@x/1")
            .with_attr("type", "groupchat")
            .with_child(Element::new("body", NS_CLIENT).with_text("a <b> & 'c'"))
            .with_child(Element::new("occupant-id", "urn:xmpp:occupant-id:0").with_attr("id", "q"));
        for ns in [NS_CLIENT, ""] {
            let (before, after) = m.write_around_attr(ns, "to").unwrap();
            for to in ["a@x/1", "b'&<@x/r"] {
                m.set_attr("to", to);
                assert_eq!(format!("{before}{}{after}", escape(to)), m.to_xml(ns));
            }
        }
        // A child's attribute of the same name is not the hole.
        let c = Element::new("iq", NS_CLIENT)
            .with_child(Element::new("q", "urn:x").with_attr("to", "inner"));
        assert_eq!(c.write_around_attr(NS_CLIENT, "to"), None);
        // A character that must be replaced: written (and reported) by write_to instead.
        let bad = Element::new("message", NS_CLIENT)
            .with_attr("to", "a@x")
            .with_text("\u{1}");
        assert_eq!(bad.write_around_attr(NS_CLIENT, "to"), None);
    }

    #[test]
    fn writes_namespaces_only_where_they_change() {
        let e = Element::new("iq", NS_CLIENT)
            .with_attr("type", "result")
            .with_child(Element::new("ping", "urn:xmpp:ping"));
        assert_eq!(
            e.to_xml(NS_CLIENT),
            "<iq type='result'><ping xmlns='urn:xmpp:ping'/></iq>"
        );
        assert_eq!(
            e.to_xml(NS_SERVER),
            "<iq type='result'><ping xmlns='urn:xmpp:ping'/></iq>"
        );
    }

    #[test]
    fn escapes_text_and_attributes() {
        let e = Element::new("body", NS_CLIENT)
            .with_attr("a", "x'<\"&")
            .with_text("1 < 2 & 3 > 'q'");
        assert_eq!(
            e.to_xml(NS_CLIENT),
            "<body a='x&apos;&lt;&quot;&amp;'>1 &lt; 2 &amp; 3 &gt; 'q'</body>"
        );
    }

    #[test]
    fn nested_client_ns_declared_inside_foreign_ns() {
        let fwd = Element::new("forwarded", "urn:xmpp:forward:0")
            .with_child(Element::new("message", NS_CLIENT));
        assert_eq!(
            fwd.to_xml(NS_CLIENT),
            "<forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client'/></forwarded>"
        );
    }

    #[test]
    fn stream_elements_use_the_stream_prefix() {
        let f = Element::new("features", NS_STREAM)
            .with_child(Element::new("bind", "urn:ietf:params:xml:ns:xmpp-bind"));
        assert_eq!(
            f.to_xml(NS_CLIENT),
            "<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>"
        );
    }

    #[test]
    fn never_writes_characters_xml_forbids() {
        let bad = "a\u{1}b\u{0}c\u{B}\u{C}\u{1F}d\u{FFFE}e\u{FFFF}f";
        let e = Element::new("body", NS_CLIENT)
            .with_attr("a", bad)
            .with_attr("{urn:x}n\u{2}", "v")
            .with_child(Element::new("x\u{7}", "urn:\u{8}").with_text(bad))
            .with_text(bad);
        let xml = e.to_xml(NS_CLIENT);
        assert!(xml.chars().all(is_xml_char), "{xml:?}");
        let clean = "a\u{FFFD}b\u{FFFD}c\u{FFFD}\u{FFFD}\u{FFFD}d\u{FFFD}e\u{FFFD}f";
        assert_eq!(
            xml,
            format!(
                "<body a='{clean}' xmlns:a0='urn:x' a0:n\u{FFFD}='v'>\
                 <x\u{FFFD} xmlns='urn:\u{FFFD}'>{clean}</x\u{FFFD}>{clean}</body>"
            )
        );
        let mut out = String::new();
        escape_into(&mut out, "\u{FFFF}", false);
        assert_eq!(out, "\u{FFFD}");
        assert!(replaced_chars_total() >= 25);
    }

    #[test]
    fn keeps_every_allowed_character_as_it_is() {
        // Tab, LF and quotes are kept in text and escaped in attributes; CR
        // is escaped in both; U+EFFF..U+FFFD and astral characters pass.
        let text = "\t\n'\"\u{EFFF}\u{F000}\u{FEFF}\u{FFBD}\u{FFFD}\u{FFFD}\u{10000}\u{1F600}é";
        let e = Element::new("b", NS_CLIENT)
            .with_attr("a", text)
            .with_text(text)
            .with_text("\r");
        assert_eq!(
            e.to_xml(NS_CLIENT),
            format!(
                "<b a='&#9;&#10;&apos;&quot;{0}'>\t\n'\"{0}&#13;</b>",
                "\u{EFFF}\u{F000}\u{FEFF}\u{FFBD}\u{FFFD}\u{FFFD}\u{10000}\u{1F600}é"
            )
        );
        for c in [
            '\u{0}', '\u{8}', '\u{B}', '\u{C}', '\u{E}', '\u{1F}', '\u{FFFE}', '\u{FFFF}',
        ] {
            assert!(!is_xml_char(c), "{c:?}");
        }
        for c in [
            '\t',
            '\n',
            '\r',
            ' ',
            '\u{D7FF}',
            '\u{E000}',
            '\u{FFFD}',
            '\u{10FFFF}',
        ] {
            assert!(is_xml_char(c), "{c:?}");
        }
    }

    /// A typical chat message, serialised `TO_XML_N` times (a million by
    /// default): run with
    /// `cargo test -p xep-support --release -- --ignored --nocapture to_xml_timing`,
    /// or count instructions with `TO_XML_N=10000 valgrind --tool=callgrind`
    /// on the test binary (minus a run with `TO_XML_N=0`).
    #[test]
    #[ignore]
    fn to_xml_timing() {
        let msg = Element::new("message", NS_CLIENT)
            .with_attr("from", "juliet@capulet.example/balcony")
            .with_attr("to", "romeo@montague.example")
            .with_attr("type", "chat")
            .with_attr("id", "a1b2c3d4-e5f6")
            .with_child(Element::new("body", NS_CLIENT).with_text(
                "Wherefore art thou, Romeo? Deny thy father & refuse thy name; \
                 or if thou wilt not, be but sworn my love <3",
            ))
            .with_child(Element::new(
                "active",
                "http://jabber.org/protocol/chatstates",
            ));
        let n: usize = std::env::var("TO_XML_N")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000_000);
        let t = std::time::Instant::now();
        let mut len = 0;
        for _ in 0..n {
            len += std::hint::black_box(&msg).to_xml(NS_CLIENT).len();
        }
        let el = t.elapsed();
        println!(
            "to_xml: {:.0} ns per message ({} bytes)",
            el.as_nanos() as f64 / n.max(1) as f64,
            len / n.max(1)
        );
    }

    #[test]
    fn attribute_helpers() {
        let mut e = Element::new("m", NS_CLIENT).with_attr("to", "a");
        e.set_attr("to", "b");
        assert_eq!(e.attr("to"), Some("b"));
        assert_eq!(e.remove_attr("to"), Some("b".into()));
        assert_eq!(e.attr("to"), None);
    }
}
