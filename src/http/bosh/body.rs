//! The `<body/>` wrapper of XEP-0124: reading a request's body with the
//! server's strict XML reader (`crate::xml`: no DTD, entity, comment or
//! processing instruction; the namespaces resolved; the size limited), and
//! writing the response bodies.
//!
//! Invariants: a request body is exactly one `<body/>` element in
//! `http://jabber.org/protocol/httpbind` (an XML declaration may precede
//! it), and its children come out in `jabber:client` when they were left
//! in the wrapper's namespace (as XEP-0206 clients that do not declare
//! `jabber:client` on each stanza write them); every response is one
//! `<body/>` whose children are complete elements declaring their own
//! namespaces (the c2s code's BOSH messages) and whose attribute values
//! are escaped.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use xep_support::element::{escape, Element, Node};
use xep_support::ns;

use crate::xml::{StreamEvent, StreamReader, XmlError};

/// The XEP-0124 namespace.
pub const NS_HTTPBIND: &str = "http://jabber.org/protocol/httpbind";
/// The XEP-0206 namespace of `xmpp:version`, `xmpp:restart`, ….
pub const NS_XBOSH: &str = "urn:xmpp:xbosh";

/// An attribute in the `urn:xmpp:xbosh` namespace, as the reader names it.
pub fn xbosh(local: &str) -> String {
    format!("{{{NS_XBOSH}}}{local}")
}

/// Run a future that never waits (a reader over a byte slice).
fn run_ready<F: Future>(fut: F) -> Option<F::Output> {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(out) => Some(out),
        Poll::Pending => None,
    }
}

/// Parse a request body; `Err` says why it is not one `<body/>`.
pub fn parse(bytes: &[u8]) -> Result<Element, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "the body is not UTF-8".to_string())?;
    let text = text.trim_start_matches('\u{feff}');
    // An XML declaration may open the document; the reader checks it.
    let (decl, rest) = match text.strip_prefix("<?xml") {
        Some(after) => match after.find("?>") {
            Some(i) => text.split_at(5 + i + 2),
            None => return Err("an unfinished XML declaration".into()),
        },
        None => ("", text),
    };
    // The body is read as the one element of a stream whose header says
    // nothing: its own xmlns applies.
    let mut input = String::with_capacity(decl.len() + rest.len() + 80);
    input.push_str(decl);
    input.push_str("<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>");
    input.push_str(rest);
    let mut reader = StreamReader::new(input.as_bytes(), None);
    let result = run_ready(async move {
        match reader.next().await {
            Ok(StreamEvent::Header(_)) => {}
            Ok(_) => return Err("no body".to_string()),
            Err(e) => return Err(e.to_string()),
        }
        let body = match reader.next().await {
            Ok(StreamEvent::Stanza(el)) => el,
            Ok(_) | Err(XmlError::Closed) => return Err("no complete <body/> element".into()),
            Err(e) => return Err(e.to_string()),
        };
        match reader.next().await {
            Err(XmlError::Closed) => Ok(body),
            Ok(_) => Err("more than one element".into()),
            Err(e) => Err(e.to_string()),
        }
    });
    let mut body = result.unwrap_or_else(|| Err("incomplete".into()))?;
    if body.name != "body" || body.ns != NS_HTTPBIND {
        return Err(format!(
            "the root element must be <body xmlns='{NS_HTTPBIND}'/>"
        ));
    }
    for child in body.children.iter_mut() {
        if let Node::Element(el) = child {
            to_client_ns(el);
        }
    }
    Ok(body)
}

/// Elements left in the wrapper's namespace are `jabber:client` ones.
fn to_client_ns(el: &mut Element) {
    if el.ns == NS_HTTPBIND {
        el.ns = ns::CLIENT.to_string();
        for child in el.children.iter_mut() {
            if let Node::Element(c) = child {
                to_client_ns(c);
            }
        }
    }
}

/// A response `<body/>` with these attributes (values escaped here) and
/// these children (complete elements).
pub fn response(attrs: &[(&str, String)], children: &[String]) -> String {
    let mut s = format!("<body xmlns='{NS_HTTPBIND}'");
    for (k, v) in attrs {
        s.push_str(&format!(" {k}='{}'", escape(v)));
    }
    if children.is_empty() {
        s.push_str("/>");
        return s;
    }
    s.push('>');
    for c in children {
        s.push_str(c);
    }
    s.push_str("</body>");
    s
}

/// A `type='terminate'` body, with an XEP-0124 condition if any.
pub fn terminate(condition: Option<&str>, children: &[String]) -> String {
    let mut attrs = vec![("type", "terminate".to_string())];
    if let Some(c) = condition {
        attrs.push(("condition", c.to_string()));
    }
    response(&attrs, children)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_body_with_its_stanzas() {
        let b = parse(
            format!("<?xml version='1.0'?><body rid='7' sid='s' xmlns='{NS_HTTPBIND}' xmlns:xmpp='{NS_XBOSH}' xmpp:restart='true'><message to='a@b'><body>hi</body></message><auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'/></body>").as_bytes(),
        )
        .unwrap();
        assert_eq!(b.attr("rid"), Some("7"));
        assert_eq!(b.attr(&xbosh("restart")), Some("true"));
        let kids: Vec<&Element> = b.child_elements().collect();
        assert_eq!(kids[0].ns, ns::CLIENT);
        assert_eq!(kids[0].child_elements().next().unwrap().ns, ns::CLIENT);
        assert_eq!(kids[1].ns, "urn:ietf:params:xml:ns:xmpp-sasl");
    }

    #[test]
    fn refuses_what_is_not_one_strict_body() {
        for bad in [
            "<body xmlns='http://jabber.org/protocol/httpbind'>".to_string(),
            "<iq xmlns='jabber:client'/>".into(),
            format!("<body xmlns='{NS_HTTPBIND}'/><body xmlns='{NS_HTTPBIND}'/>"),
            format!("<!DOCTYPE body [<!ENTITY x 'y'>]><body xmlns='{NS_HTTPBIND}'>&x;</body>"),
            format!("<body xmlns='{NS_HTTPBIND}'><?pi x?></body>"),
            format!("<body xmlns='{NS_HTTPBIND}'>&unknown;</body>"),
            "not xml".into(),
            String::new(),
        ] {
            assert!(parse(bad.as_bytes()).is_err(), "accepted {bad:?}");
        }
        assert!(parse(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn writes_bodies() {
        assert_eq!(
            terminate(Some("item-not-found"), &[]),
            format!("<body xmlns='{NS_HTTPBIND}' type='terminate' condition='item-not-found'/>")
        );
        assert_eq!(
            response(&[("sid", "a'b".into())], &["<x xmlns='y'/>".into()]),
            format!("<body xmlns='{NS_HTTPBIND}' sid='a&apos;b'><x xmlns='y'/></body>")
        );
    }
}
