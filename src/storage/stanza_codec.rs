//! Stanzas kept in storage (offline messages, pending subscription
//! requests) are stored as XML text written with
//! `Element::to_xml(jabber:client)`, and read back with [`parse_stanza`].
//!
//! Parsing reuses the server's own stream reader, so stored stanzas get
//! exactly the treatment of stanzas read from a socket (namespaces,
//! restricted XML, escapes): the text is wrapped in a stream header
//! declaring `jabber:client` as the default namespace and read from memory.
//! Reading from a byte slice never waits, so the reader's future is polled
//! to completion right here, without a runtime.
//!
//! Stored text may hold characters XML 1.0 does not allow (raw, or as
//! character references), written by earlier versions that relayed them.
//! They are replaced by U+FFFD before parsing ([`super::stored_chars`]), so
//! such a stanza is delivered without them instead of being refused by the
//! reader, and a warning names whose data it was, once per owner.

use std::collections::HashSet;
use std::future::Future;
use std::pin::pin;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

use xep_support::element::Element;

use crate::xml::{StreamEvent, StreamReader, XmlError};

/// The stream header stored stanzas are parsed under.
const HEADER: &str =
    "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:client'>";

/// Run a future that never waits (I/O over a byte slice) to completion.
fn run_ready<F: Future>(fut: F) -> Option<F::Output> {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(out) => Some(out),
        Poll::Pending => None,
    }
}

/// Parse one stored stanza back into an element; `None` if `xml` is not
/// exactly one well-formed, unrestricted element once characters XML 1.0
/// does not allow are replaced by U+FFFD.
pub fn parse_stanza(xml: &str) -> Option<Element> {
    parse_stored(xml, None)
}

/// [`parse_stanza`] for data that belongs to `owner` (an account or a room),
/// named in the warning when characters had to be replaced.
pub fn parse_stored(xml: &str, owner: Option<&str>) -> Option<Element> {
    let (xml, replaced) = super::stored_chars::repair(xml);
    if replaced > 0 {
        report(owner, replaced);
    }
    parse_exact(&xml)
}

/// Owners already named in a warning (bounded: after that many, no more).
static REPORTED: Mutex<Option<HashSet<String>>> = Mutex::new(None);
const REPORTED_MAX: usize = 10_000;

/// Warn once per owner that stored data held forbidden characters.
fn report(owner: Option<&str>, replaced: usize) {
    let owner = owner.unwrap_or("(unknown owner)");
    let mut seen = REPORTED.lock().unwrap_or_else(|e| e.into_inner());
    let seen = seen.get_or_insert_with(HashSet::new);
    if seen.len() >= REPORTED_MAX || !seen.insert(owner.to_string()) {
        return;
    }
    tracing::warn!(
        "stored data of {owner} held {replaced} character(s) XML 1.0 does not allow \
         (written by an earlier version); delivered with U+FFFD in their place \
         (logged once per owner)"
    );
}

fn parse_exact(xml: &str) -> Option<Element> {
    let mut input = String::with_capacity(HEADER.len() + xml.len());
    input.push_str(HEADER);
    input.push_str(xml);
    let mut reader = StreamReader::new(input.as_bytes(), None);
    run_ready(async move {
        match reader.next().await {
            Ok(StreamEvent::Header(_)) => {}
            _ => return None,
        }
        let stanza = match reader.next().await {
            Ok(StreamEvent::Stanza(el)) => el,
            _ => return None,
        };
        // Nothing but the end of the input may follow.
        match reader.next().await {
            Err(XmlError::Closed) => Some(stanza),
            _ => None,
        }
    })
    .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use xep_support::element::{Node, NS_CLIENT};

    #[test]
    fn roundtrips_a_message() {
        let msg = Element::new("message", NS_CLIENT)
            .with_attr("from", "bob@ex/r")
            .with_attr("to", "alice@ex")
            .with_attr("type", "chat")
            .with_attr("xml:lang", "fr")
            .with_child(Element::new("body", NS_CLIENT).with_text("a < b & 'c' \"d\" é\r\n"))
            .with_child(
                Element::new("delay", "urn:xmpp:delay")
                    .with_attr("stamp", "2024-01-01T00:00:00Z")
                    .with_text("Offline storage"),
            );
        let xml = msg.to_xml(NS_CLIENT);
        let back = parse_stanza(&xml).expect("parses");
        assert_eq!(back, msg);
        assert_eq!(back.attr("xml:lang"), Some("fr"));
        assert!(back.child("delay", "urn:xmpp:delay").is_some());
        assert_eq!(
            back.child("body", NS_CLIENT).map(|b| b.text()),
            Some("a < b & 'c' \"d\" é\r\n".to_string())
        );
    }

    #[test]
    fn resolves_namespaces_of_stored_text() {
        let el = parse_stanza(
            "<presence type='subscribe'><n:nick xmlns:n='http://jabber.org/protocol/nick'>B</n:nick></presence>",
        )
        .expect("parses");
        assert!(el.is("presence", NS_CLIENT));
        assert_eq!(el.attr("type"), Some("subscribe"));
        let nick = el.first_child().expect("child");
        assert!(nick.is("nick", "http://jabber.org/protocol/nick"));
        assert_eq!(nick.children, vec![Node::Text("B".into())]);
        // Prefixed attributes come back in `{ns}local` form.
        let el = parse_stanza("<message xmlns:x='urn:x' x:a='1' xml:lang='en'/>").expect("parses");
        assert_eq!(el.attr("{urn:x}a"), Some("1"));
        assert_eq!(el.attr("xml:lang"), Some("en"));
    }

    #[test]
    fn refuses_anything_but_one_clean_element() {
        for bad in [
            "",
            "   ",
            "<message>",
            "<message></presence>",
            "<message/><message/>",
            "<message/>trailing",
            "<message><!-- c --></message>",
            "<message><body>&ent;</body></message>",
            "<?pi x?><message/>",
            "</stream:stream>",
            "<x:y/>",
        ] {
            assert_eq!(parse_stanza(bad), None, "{bad:?}");
        }
        // Whitespace after the element is harmless.
        assert!(parse_stanza("<message/>\n").is_some());
    }

    #[test]
    fn repairs_forbidden_characters_of_earlier_versions() {
        let el = parse_stored(
            "<message from='a\u{1}b@ex'><body>x\u{1}y&#2;z&#xFFFE;\u{FFFF}</body></message>",
            Some("alice@ex"),
        )
        .expect("delivered, repaired");
        assert_eq!(el.attr("from"), Some("a\u{FFFD}b@ex"));
        assert_eq!(
            el.child("body", NS_CLIENT).map(|b| b.text()),
            Some("x\u{FFFD}y\u{FFFD}z\u{FFFD}\u{FFFD}".to_string())
        );
        let out = el.to_xml(NS_CLIENT);
        assert!(
            out.chars().all(xep_support::element::is_xml_char),
            "{out:?}"
        );
    }
}
