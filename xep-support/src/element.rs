//! The XML element tree every stanza is held in, and its serialisation.
//!
//! A stanza is parsed into an [`Element`] (name, resolved namespace,
//! attributes, children) by the server's stream reader, handed to the router
//! and to modules, and written back out with [`Element::write_to`], which
//! escapes text and attribute values and declares namespaces only where they
//! differ from the parent's.

use std::fmt::Write as _;

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
    /// stream can be written on a server stream and vice versa.
    pub fn write_to(&self, out: &mut String, parent_ns: &str) {
        out.push('<');
        // Stream-level elements use the `stream:` prefix the stream header declares;
        // some clients match `stream:features` literally.
        let prefixed = self.ns == NS_STREAM;
        if prefixed {
            out.push_str("stream:");
        }
        out.push_str(&self.name);
        let same_ns = prefixed
            || self.ns == parent_ns
            || (is_content_ns(&self.ns) && is_content_ns(parent_ns));
        if !same_ns {
            out.push_str(" xmlns='");
            escape_into(out, &self.ns, true);
            out.push('\'');
        }
        let mut extra = 0usize;
        for (k, v) in &self.attrs {
            if let Some(rest) = k.strip_prefix('{') {
                // A prefixed attribute in some namespace: declare a prefix for it.
                if let Some((ns, local)) = rest.split_once('}') {
                    let _ = write!(out, " xmlns:a{extra}='");
                    escape_into(out, ns, true);
                    let _ = write!(out, "' a{extra}:{local}='");
                    extra += 1;
                } else {
                    continue;
                }
            } else {
                out.push(' ');
                out.push_str(k);
                out.push_str("='");
            }
            escape_into(out, v, true);
            out.push('\'');
        }
        if self.children.is_empty() {
            out.push_str("/>");
            return;
        }
        out.push('>');
        let own_ns = if same_ns { parent_ns } else { &self.ns };
        for n in &self.children {
            match n {
                Node::Element(e) => e.write_to(out, own_ns),
                Node::Text(t) => escape_into(out, t, false),
            }
        }
        out.push_str("</");
        if prefixed {
            out.push_str("stream:");
        }
        out.push_str(&self.name);
        out.push('>');
    }
}

fn is_content_ns(ns: &str) -> bool {
    ns == NS_CLIENT || ns == NS_SERVER || ns == NS_COMPONENT
}

/// Escape character data (and, with `attr`, attribute values quoted by `'`).
pub fn escape_into(out: &mut String, s: &str, attr: bool) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' if attr => out.push_str("&apos;"),
            '"' if attr => out.push_str("&quot;"),
            '\r' => out.push_str("&#13;"),
            '\t' if attr => out.push_str("&#9;"),
            '\n' if attr => out.push_str("&#10;"),
            _ => out.push(c),
        }
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
    fn attribute_helpers() {
        let mut e = Element::new("m", NS_CLIENT).with_attr("to", "a");
        e.set_attr("to", "b");
        assert_eq!(e.attr("to"), Some("b"));
        assert_eq!(e.remove_attr("to"), Some("b".into()));
        assert_eq!(e.attr("to"), None);
    }
}
