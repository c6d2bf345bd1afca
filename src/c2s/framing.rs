//! How a client stream is framed on its transport: the seam between the
//! one c2s code path (negotiation, session, writer) and its transports.
//!
//! - [`Framing::Stream`]: RFC 6120 over TCP/TLS: a `<stream:stream>`
//!   header, elements written in the header's default namespace, and
//!   `</stream:stream>` at the end.
//! - [`Framing::WebSocket`]: RFC 7395: `<open/>` and `<close/>` from
//!   `urn:ietf:params:xml:ns:xmpp-framing`, and every element a complete
//!   document declaring its own namespaces. Each message written is
//!   followed by [`MESSAGE_END`], the byte the WebSocket transport
//!   (`crate::http::ws`) splits its text messages at.
//!
//! - [`Framing::Bosh`]: XEP-0206 over BOSH (XEP-0124): the same messages
//!   as WebSocket (each element a complete document followed by
//!   [`MESSAGE_END`]); the BOSH transport (`crate::http::bosh`) turns
//!   `<open/>` into its session attributes, `<close/>` into a
//!   `type='terminate'` body, and carries the other messages as the
//!   children of its response `<body/>`s.
//!
//! Invariant: in WebSocket and BOSH framing every string these functions
//! produce is a sequence of complete elements, each followed by
//! [`MESSAGE_END`]; NUL cannot occur in XML (the reader refuses it), so it
//! cannot occur inside an element.

use xep_support::element::{escape, Element};
use xep_support::ns;

use crate::stream::StreamCondition;

/// The end of one WebSocket message in the bytes the c2s code writes.
pub const MESSAGE_END: char = '\0';

/// The RFC 7395 framing namespace.
pub const NS_FRAMING: &str = "urn:ietf:params:xml:ns:xmpp-framing";

/// The framing of one client connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// RFC 6120 stream over TCP or TLS.
    Stream,
    /// RFC 7395 over WebSocket.
    WebSocket,
    /// XEP-0206 over BOSH (HTTP requests carrying `<body/>` wrappers).
    Bosh,
}

impl Framing {
    /// Whether what is written is a sequence of messages, each ending with
    /// [`MESSAGE_END`] (WebSocket and BOSH), rather than one XML stream.
    pub fn messages(self) -> bool {
        self != Framing::Stream
    }

    /// The server's stream opening (RFC 6120 header, or `<open/>`).
    pub fn open(self, host: &str, id: &str) -> String {
        match self {
            Framing::Stream => format!(
                "<?xml version='1.0'?><stream:stream xmlns='{}' xmlns:stream='{}' id='{id}' from='{}' version='1.0' xml:lang='en'>",
                ns::CLIENT,
                ns::STREAM,
                escape(host)
            ),
            Framing::WebSocket | Framing::Bosh => format!(
                "<open xmlns='{NS_FRAMING}' id='{id}' from='{}' version='1.0' xml:lang='en'/>{MESSAGE_END}",
                escape(host)
            ),
        }
    }

    /// Append one element.
    pub fn write(self, el: &Element, buf: &mut String) {
        match self {
            Framing::Stream => el.write_to(buf, ns::CLIENT),
            Framing::WebSocket | Framing::Bosh => {
                if el.ns == ns::STREAM {
                    // `stream:features`, `stream:error`: the prefix declared
                    // on the element itself (RFC 7395 §3.3.2).
                    let mut s = String::new();
                    el.write_to(&mut s, ns::CLIENT);
                    buf.push_str(&declare_stream_prefix(&s));
                } else {
                    el.write_to(buf, "");
                }
                buf.push(MESSAGE_END);
            }
        }
    }

    /// One element as a string.
    pub fn to_xml(self, el: &Element) -> String {
        let mut s = String::new();
        self.write(el, &mut s);
        s
    }

    /// A preformatted element that declares its namespace, as a message.
    pub fn raw(self, xml: &str) -> String {
        match self {
            Framing::Stream => xml.to_string(),
            Framing::WebSocket | Framing::Bosh => format!("{xml}{MESSAGE_END}"),
        }
    }

    /// The end of the stream.
    pub fn close(self) -> String {
        match self {
            Framing::Stream => "</stream:stream>".into(),
            Framing::WebSocket | Framing::Bosh => {
                format!("<close xmlns='{NS_FRAMING}'/>{MESSAGE_END}")
            }
        }
    }

    /// A stream error and the stream's end (logged as `kind`).
    pub fn error(
        self,
        kind: &str,
        peer: &dyn std::fmt::Display,
        cond: StreamCondition,
        text: Option<&str>,
    ) -> String {
        let xml = crate::conn_log::stream_error(kind, peer, cond, text);
        match self {
            Framing::Stream => xml,
            Framing::WebSocket | Framing::Bosh => {
                let element = xml.strip_suffix("</stream:stream>").unwrap_or(&xml);
                format!(
                    "{}{MESSAGE_END}{}",
                    declare_stream_prefix(element),
                    self.close()
                )
            }
        }
    }
}

/// `<stream:NAME ...` with `xmlns:stream` declared on it.
fn declare_stream_prefix(xml: &str) -> String {
    match xml
        .strip_prefix("<stream:")
        .and_then(|rest| rest.find(['>', ' ', '/']).map(|i| (rest, i)))
    {
        Some((rest, i)) => format!(
            "<stream:{} xmlns:stream='{}'{}",
            &rest[..i],
            ns::STREAM,
            &rest[i..]
        ),
        None => xml.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_messages_declare_their_namespaces() {
        let f = Framing::WebSocket;
        let iq = Element::new("iq", ns::CLIENT).with_attr("type", "result");
        assert_eq!(f.to_xml(&iq), "<iq xmlns='jabber:client' type='result'/>\0");
        let feats = Element::new("features", ns::STREAM).with_child(Element::new("bind", ns::BIND));
        let x = f.to_xml(&feats);
        assert!(
            x.starts_with(&format!("<stream:features xmlns:stream='{}'>", ns::STREAM)),
            "{x}"
        );
        assert!(x.ends_with("</stream:features>\0"), "{x}");
        let e = f.error("test", &"peer", StreamCondition::PolicyViolation, None);
        assert_eq!(
            e,
            format!(
                "<stream:error xmlns:stream='{}'><policy-violation xmlns='{}'/></stream:error>\0<close xmlns='{NS_FRAMING}'/>\0",
                ns::STREAM,
                ns::STREAM_ERRORS
            )
        );
        assert!(f.open("a.example", "1").starts_with("<open xmlns="));
        // BOSH writes the same messages (its transport wraps them).
        let b = Framing::Bosh;
        assert_eq!(b.to_xml(&iq), f.to_xml(&iq));
        assert_eq!(b.close(), f.close());
        assert!(b.messages() && f.messages() && !Framing::Stream.messages());
    }

    #[test]
    fn stream_framing_is_rfc_6120() {
        let f = Framing::Stream;
        let iq = Element::new("iq", ns::CLIENT).with_attr("type", "result");
        assert_eq!(f.to_xml(&iq), "<iq type='result'/>");
        assert_eq!(f.close(), "</stream:stream>");
        assert!(f
            .open("a", "1")
            .contains("<stream:stream xmlns='jabber:client'"));
    }
}
