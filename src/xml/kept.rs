//! One serialisation of a chat message for both archive copies and the
//! recipient's stream. A message between two local accounts is written
//! into two archive records on one routing thread — the sender's copy
//! (`mod_mam`'s `message_from_session`) and, a few hooks later in the
//! same routing call, the recipient's (`filter_message_to_account`) — and
//! then to the recipient's stream by its writer task, which tokio mostly
//! runs next on the same worker thread. Each thread keeps the XML of the
//! last [`RING`] messages it wrote into records, each with a flat copy of
//! the element it came from: a record whose stanza equals a kept element
//! gets the kept XML ([`write_archived`]), and a stream write of a kept
//! element followed by more children (the recipient's `<stanza-id/>`)
//! gets the kept XML up to its end tag, the new children serialised and
//! the end tag ([`write_stream`]).
//!
//! Invariants:
//! - The bytes written are exactly what `Element::write_to(out,
//!   jabber:client)` writes for the stanza given: reuse needs the stanza
//!   to equal the kept one in everything `write_to` reads — name,
//!   namespace, every attribute (name and value) in order, every child in
//!   order, recursively; for [`write_stream`], every kept child and then
//!   any others — compared string by string against the flat copy
//!   (lengths and bytes, no hash). A module that changed the stanza in
//!   between (a removed forged stanza-id, a stripped carbons wrapper, any
//!   filter) gets a fresh serialisation.
//! - Only `message` stanzas that are not `groupchat` are kept or looked up
//!   (a room's archive writes each message once, and its fan-out has
//!   `c2s/shared_wire.rs`); other stanzas pay one attribute read.
//! - A stanza whose serialisation replaced a character XML forbids is not
//!   kept (each write of it reports the replacement, as before).
//! - What is kept is bounded per thread: [`RING`] serialisations of at
//!   most [`MAX_XML`] bytes, each with a flat copy of at most [`MAX_FLAT`]
//!   bytes, in buffers reused from message to message (no allocation once
//!   they have grown); nothing of a session or an account is kept beyond
//!   the last messages' text.

use std::cell::RefCell;

use std::hash::Hasher;

use rustc_hash::FxHasher;
use xep_support::element::{replaced_chars_total, Element, Node};
use xep_support::ns;

/// Messages kept per thread (those a reader routed since the writers last
/// ran: a client sends a few at a time).
pub const RING: usize = 4;
/// Larger serialisations are not kept.
pub const MAX_XML: usize = 4096;
/// Larger flat copies are not kept (an element of many tiny children).
pub const MAX_FLAT: usize = 8192;

/// One kept message.
#[derive(Default)]
struct Kept {
    /// `flat` and `xml` describe one message.
    valid: bool,
    /// [`key_of`] the element: most other messages differ in it, and are
    /// then not compared (equal keys are compared in full).
    key: u64,
    /// The element's strings and shape ([`flatten`]).
    flat: Vec<u8>,
    /// Its serialisation (`write_to` with `jabber:client` in scope).
    xml: String,
}

/// One thread's kept messages.
#[derive(Default)]
struct Ring {
    slots: [Kept; RING],
    /// The slot written next (the oldest).
    next: usize,
}

impl Ring {
    /// The kept messages, newest first.
    fn newest_first(&self) -> impl Iterator<Item = &Kept> {
        (1..=RING)
            .map(move |i| &self.slots[(self.next + RING - i) % RING])
            .filter(|k| k.valid)
    }

    /// The kept messages with this key, newest first.
    fn with_key(&self, key: u64) -> impl Iterator<Item = &Kept> {
        self.newest_first().filter(move |k| k.key == key)
    }
}

thread_local! {
    static KEPT: RefCell<Ring> = RefCell::new(Ring::default());
}

/// Whether `stanza` is the kind of stanza kept: a message archived at
/// both ends (not a room's).
fn keepable(stanza: &Element) -> bool {
    stanza.name == "message" && stanza.attr("type") != Some("groupchat")
}

/// A hash of the element's attribute values (`from`, `to`, `id`, ...):
/// which kept messages are worth comparing. Not a proof of anything.
fn key_of(el: &Element) -> u64 {
    let mut h = FxHasher::default();
    for (_, v) in &el.attrs {
        h.write(v.as_bytes());
        h.write_u8(0xff);
    }
    h.finish()
}

/// Append `stanza` to `out` as `stanza.write_to(out, ns::CLIENT)` does
/// (an archive record's XML): from a kept message when it is one,
/// otherwise serialised (and kept, when it is a message).
pub fn write_archived(stanza: &Element, out: &mut String) {
    if !keepable(stanza) {
        return stanza.write_to(out, ns::CLIENT);
    }
    let key = key_of(stanza);
    // (`try_with`: a thread being torn down just serialises.)
    let reused = KEPT
        .try_with(|k| {
            let ring = k.borrow();
            let found = ring
                .with_key(key)
                .find(|k| matched(stanza, &k.flat) == Some(stanza.children.len()));
            if let Some(k) = found {
                out.push_str(&k.xml);
            }
            found.is_some()
        })
        .unwrap_or(false);
    if reused {
        return;
    }
    let start = out.len();
    let replaced = replaced_chars_total();
    stanza.write_to(out, ns::CLIENT);
    let xml = &out[start..];
    let _ = KEPT.try_with(|k| {
        let mut ring = k.borrow_mut();
        let at = ring.next;
        let k = &mut ring.slots[at];
        k.valid = false;
        // Another thread's replacement may move the counter too: then this
        // one is not kept either, which is merely a missed reuse.
        if xml.len() > MAX_XML || replaced_chars_total() != replaced {
            return;
        }
        k.flat.clear();
        flatten(stanza, &mut k.flat);
        if k.flat.len() > MAX_FLAT {
            k.flat = Vec::new();
            return;
        }
        k.xml.clear();
        k.xml.push_str(xml);
        k.key = key;
        k.valid = true;
        ring.next = (at + 1) % RING;
    });
}

/// Append `stanza` to `out` as `stanza.write_to(out, ns::CLIENT)` does (an
/// RFC 6120 stream's stanza) when it is a kept message, or one with more
/// children after the kept ones: `true` then; `false` (nothing written)
/// otherwise. Nothing is kept here.
pub fn write_stream(stanza: &Element, out: &mut String) -> bool {
    // Only `jabber:client` at the top: its children are then written with
    // `jabber:client` in scope, as the kept ones were.
    if !keepable(stanza) || stanza.ns != ns::CLIENT {
        return false;
    }
    let key = key_of(stanza);
    KEPT.try_with(|k| {
        let ring = k.borrow();
        for k in ring.with_key(key) {
            let Some(kept) = matched(stanza, &k.flat) else {
                continue;
            };
            if kept == stanza.children.len() {
                out.push_str(&k.xml);
                return true;
            }
            // The kept XML ends with the end tag (it had children).
            let Some(open) = k
                .xml
                .strip_suffix('>')
                .and_then(|x| x.strip_suffix(stanza.name.as_str()))
                .and_then(|x| x.strip_suffix("</"))
            else {
                continue;
            };
            if kept == 0 {
                continue;
            }
            // Room for the rest too (a writer's buffer starts empty).
            out.reserve(open.len() + 256);
            out.push_str(open);
            for n in &stanza.children[kept..] {
                match n {
                    Node::Element(c) => c.write_to(out, ns::CLIENT),
                    Node::Text(t) => xep_support::element::escape_into(out, t, false),
                }
            }
            out.push_str("</");
            out.push_str(&stanza.name);
            out.push('>');
            return true;
        }
        false
    })
    .unwrap_or(false)
}

const ELEMENT: u8 = b'E';
const TEXT: u8 = b'T';

fn put(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&s.len().to_ne_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// The flat copy of an element: a tag, then every string as its length
/// and bytes, counts before the attributes and the children. Unambiguous:
/// equal copies come only from equal elements.
fn flatten(el: &Element, out: &mut Vec<u8>) {
    out.push(ELEMENT);
    put(out, &el.name);
    put(out, &el.ns);
    out.extend_from_slice(&el.attrs.len().to_ne_bytes());
    for (k, v) in &el.attrs {
        put(out, k);
        put(out, v);
    }
    out.extend_from_slice(&el.children.len().to_ne_bytes());
    for n in &el.children {
        match n {
            Node::Element(c) => flatten(c, out),
            Node::Text(t) => {
                out.push(TEXT);
                put(out, t);
            }
        }
    }
}

/// A reader over a flat copy.
struct Flat<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Flat<'_> {
    fn byte(&mut self, want: u8) -> bool {
        let ok = self.b.get(self.pos) == Some(&want);
        self.pos += 1;
        ok
    }

    fn count(&mut self, want: usize) -> bool {
        self.read_count() == Some(want)
    }

    fn string(&mut self, s: &str) -> bool {
        if !self.count(s.len()) {
            return false;
        }
        let Some(b) = self.b.get(self.pos..self.pos + s.len()) else {
            return false;
        };
        self.pos += s.len();
        same_bytes(b, s.as_bytes())
    }

    fn element(&mut self, el: &Element) -> bool {
        self.head(el) && self.count(el.children.len()) && el.children.iter().all(|n| self.node(n))
    }

    /// Name, namespace and attributes.
    fn head(&mut self, el: &Element) -> bool {
        self.byte(ELEMENT)
            && self.string(&el.name)
            && self.string(&el.ns)
            && self.count(el.attrs.len())
            && el
                .attrs
                .iter()
                .all(|(k, v)| self.string(k) && self.string(v))
    }

    fn node(&mut self, n: &Node) -> bool {
        match n {
            Node::Element(c) => self.element(c),
            Node::Text(t) => self.byte(TEXT) && self.string(t),
        }
    }

    /// The child count at the cursor.
    fn read_count(&mut self) -> Option<usize> {
        const N: usize = std::mem::size_of::<usize>();
        let b = self.b.get(self.pos..self.pos + N)?;
        self.pos += N;
        Some(usize::from_ne_bytes(b.try_into().ok()?))
    }
}

/// `a == b`; the short strings of a stanza (names, namespaces, addresses,
/// ids) compared a word or two at a time instead of by a call (most of a
/// comparison's cost otherwise).
#[inline]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    /// The word of `W` bytes at `i` of both slices (`false`: unequal, or
    /// out of range).
    fn words<const W: usize>(a: &[u8], b: &[u8], i: usize) -> bool {
        match (a.get(i..i + W), b.get(i..i + W)) {
            (Some(x), Some(y)) => {
                let x: Result<[u8; W], _> = x.try_into();
                let y: Result<[u8; W], _> = y.try_into();
                matches!((x, y), (Ok(x), Ok(y)) if x == y)
            }
            _ => false,
        }
    }
    let n = a.len();
    if n != b.len() {
        return false;
    }
    match n {
        // Two overlapping words cover every byte.
        8..=16 => words::<8>(a, b, 0) && words::<8>(a, b, n - 8),
        4..=7 => words::<4>(a, b, 0) && words::<4>(a, b, n - 4),
        0..=3 => a.iter().zip(b).all(|(x, y)| x == y),
        _ => a == b,
    }
}

/// How many of `el`'s first children, with everything else of `el`, are
/// the element `flat` was made from (`Some(el.children.len())`: all of
/// `el`); `None` when `el` does not begin as that element.
fn matched(el: &Element, flat: &[u8]) -> Option<usize> {
    let mut f = Flat { b: flat, pos: 0 };
    if !f.head(el) {
        return None;
    }
    let kept = f.read_count()?;
    let ok = el.children.get(..kept)?.iter().all(|n| f.node(n)) && f.pos == flat.len();
    ok.then_some(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(body: &str) -> Element {
        Element::new("message", ns::CLIENT)
            .with_attr("from", "alice@x/phone")
            .with_attr("to", "bob@x")
            .with_attr("type", "chat")
            .with_attr("id", "m1")
            .with_child(Element::new("body", ns::CLIENT).with_text(body.to_string()))
            .with_child(Element::new("origin-id", "urn:xmpp:sid:0").with_attr("id", "o1"))
    }

    /// What [`write_archived`] writes after a record's header.
    fn written(el: &Element) -> String {
        let mut out = String::from("\0\0header");
        write_archived(el, &mut out);
        out.split_off(8)
    }

    /// What [`write_stream`] writes after earlier stanzas, if anything.
    fn streamed(el: &Element) -> Option<String> {
        let mut out = String::from("<iq/>");
        write_stream(el, &mut out).then(|| out.split_off(5))
    }

    /// Whether the newest kept message is `el`.
    fn newest_is(el: &Element) -> bool {
        KEPT.with(|k| {
            let ring = k.borrow();
            let newest = &ring.slots[(ring.next + RING - 1) % RING];
            newest.valid && matched(el, &newest.flat) == Some(el.children.len())
        })
    }

    /// Write `el` until it is kept (another test thread replacing a
    /// character at the same moment keeps it from being kept once).
    fn keep(el: &Element) {
        for _ in 0..100 {
            assert_eq!(written(el), el.to_xml(ns::CLIENT));
            if newest_is(el) {
                return;
            }
        }
        panic!("never kept");
    }

    /// Mark the kept XML of `el`, to tell a reuse from a serialisation.
    fn mark(el: &Element) {
        KEPT.with(|k| {
            let mut ring = k.borrow_mut();
            for k in ring.slots.iter_mut() {
                if k.valid && matched(el, &k.flat) == Some(el.children.len()) {
                    k.xml
                        .insert_str(k.xml.len() - "</message>".len(), "<!--kept-->");
                }
            }
        });
    }

    fn clear() {
        KEPT.with(|k| *k.borrow_mut() = Ring::default());
    }

    #[test]
    fn the_same_message_is_reused_byte_for_byte() {
        clear();
        let m = chat("hi <&> 'there'");
        keep(&m);
        // The second copy comes from what was kept: the same bytes.
        assert_eq!(written(&m.clone()), m.to_xml(ns::CLIENT));
        mark(&m);
        let with_mark = m
            .to_xml(ns::CLIENT)
            .replace("</message>", "<!--kept--></message>");
        assert_eq!(written(&m), with_mark);
        // So does the stream's copy, also with the recipient's stanza-id
        // after the kept children.
        assert_eq!(streamed(&m).as_deref(), Some(with_mark.as_str()));
        let mut delivered = m.clone();
        delivered.children.push(Node::Element(
            Element::new("stanza-id", "urn:xmpp:sid:0")
                .with_attr("by", "bob@x")
                .with_attr("id", "0001"),
        ));
        delivered.children.push(Node::Text("tail & more".into()));
        let want = delivered
            .to_xml(ns::CLIENT)
            .replacen("<stanza-id", "<!--kept--><stanza-id", 1);
        assert_eq!(streamed(&delivered).as_deref(), Some(want.as_str()));
        // Unmarked: exactly what the stream's framing writes (RFC 6120
        // framing is `write_to` with `jabber:client` in scope).
        clear();
        keep(&m);
        assert_eq!(streamed(&delivered), Some(delivered.to_xml(ns::CLIENT)));
        assert_eq!(streamed(&m), Some(m.to_xml(ns::CLIENT)));
    }

    #[test]
    fn several_messages_in_flight_are_kept() {
        clear();
        let msgs: Vec<Element> = (0..RING + 1).map(|i| chat(&format!("m{i}"))).collect();
        for m in &msgs {
            keep(m);
        }
        for m in &msgs[1..] {
            mark(m);
        }
        // The oldest fell out; the others come from what was kept.
        assert_eq!(written(&msgs[0]), msgs[0].to_xml(ns::CLIENT));
        assert_eq!(streamed(&msgs[1]), None, "pushed out by msgs[0] again");
        for m in &msgs[2..] {
            let with_mark = m
                .to_xml(ns::CLIENT)
                .replace("</message>", "<!--kept--></message>");
            assert_eq!(written(m), with_mark);
            assert_eq!(streamed(m).as_deref(), Some(with_mark.as_str()));
        }
    }

    #[test]
    fn a_changed_message_is_serialised_again() {
        let base = chat("hi");
        type Change = Box<dyn Fn(&mut Element)>;
        let changes: Vec<Change> = vec![
            // A child removed (a forged stanza-id, a carbons wrapper).
            Box::new(|m| {
                m.children.pop();
            }),
            Box::new(|m| {
                m.children.remove(0);
            }),
            // One added before the others.
            Box::new(|m| {
                m.children.insert(
                    0,
                    Node::Element(Element::new("stanza-id", "urn:xmpp:sid:0")),
                )
            }),
            // An attribute value of the same length.
            Box::new(|m| m.set_attr("id", "m2")),
            // An attribute renamed, one added, one removed.
            Box::new(|m| m.attrs[3].0 = "xd".into()),
            Box::new(|m| m.set_attr("xml:lang", "en")),
            Box::new(|m| {
                m.remove_attr("id");
            }),
            // Attributes in another order.
            Box::new(|m| m.attrs.swap(0, 1)),
            // Text changed in place, split in two, moved to an attribute.
            Box::new(|m| {
                if let Some(Node::Element(b)) = m.children.first_mut() {
                    b.children = vec![Node::Text("ho".into())];
                }
            }),
            Box::new(|m| {
                if let Some(Node::Element(b)) = m.children.first_mut() {
                    b.children = vec![Node::Text("h".into()), Node::Text("i".into())];
                }
            }),
            Box::new(|m| {
                if let Some(Node::Element(b)) = m.children.first_mut() {
                    b.children.clear();
                    b.attrs.push(("hi".into(), String::new()));
                }
            }),
            // A child grew a child of its own.
            Box::new(|m| {
                if let Some(Node::Element(b)) = m.children.get_mut(1) {
                    b.children.push(Node::Text("x".into()));
                }
            }),
            // A namespace or a name changed.
            Box::new(|m| m.ns = ns::SERVER.to_string()),
            Box::new(|m| {
                if let Some(Node::Element(b)) = m.children.get_mut(1) {
                    b.ns = "urn:xmpp:sid:1".into();
                }
            }),
            Box::new(|m| m.name = "messagf".into()),
        ];
        for (i, change) in changes.iter().enumerate() {
            clear();
            keep(&base);
            mark(&base);
            let mut m = base.clone();
            change(&mut m);
            assert_ne!(m, base, "{i}");
            assert_eq!(written(&m), m.to_xml(ns::CLIENT), "change {i}");
            // The stream's copy is not served from the kept one either.
            clear();
            keep(&base);
            mark(&base);
            assert!(streamed(&m).is_none(), "stream {i}");
        }
        // Children only after the kept ones: the archive's copy is a new one.
        clear();
        keep(&base);
        let mut more = base.clone();
        more.children
            .push(Node::Element(Element::new("x", "urn:y")));
        assert_eq!(written(&more), more.to_xml(ns::CLIENT));
    }

    #[test]
    fn rooms_large_and_replaced_are_not_kept() {
        clear();
        let mut room = chat("hi");
        room.set_attr("type", "groupchat");
        let kept_none = || KEPT.with(|k| k.borrow().newest_first().count() == 0);
        assert_eq!(written(&room), room.to_xml(ns::CLIENT));
        assert!(kept_none());
        assert_eq!(streamed(&room), None);
        let presence = Element::new("presence", ns::CLIENT);
        assert_eq!(written(&presence), presence.to_xml(ns::CLIENT));
        assert!(kept_none());
        let large = chat(&"x".repeat(MAX_XML));
        assert_eq!(written(&large), large.to_xml(ns::CLIENT));
        assert!(kept_none());
        let many = (0..MAX_FLAT / 16).fold(chat("hi"), |m, _| {
            m.with_child(Element::new("a", ns::CLIENT))
        });
        assert!(many.to_xml(ns::CLIENT).len() <= MAX_XML);
        assert_eq!(written(&many), many.to_xml(ns::CLIENT));
        assert!(kept_none());
        let forbidden = chat("bell \u{7}");
        assert_eq!(written(&forbidden), forbidden.to_xml(ns::CLIENT));
        assert!(kept_none());
        assert_eq!(written(&forbidden), forbidden.to_xml(ns::CLIENT));
        // A message of another namespace is kept for the archive, but its
        // stream copy is serialised (its children's scope differs).
        let mut server = chat("hi");
        server.ns = ns::SERVER.to_string();
        keep(&server);
        assert_eq!(streamed(&server), None);
        // One without children has no end tag to write more before.
        clear();
        let empty = Element::new("message", ns::CLIENT).with_attr("to", "b@x");
        keep(&empty);
        let grown = empty.clone().with_child(Element::new("body", ns::CLIENT));
        assert_eq!(streamed(&grown), None);
        assert_eq!(streamed(&empty), Some(empty.to_xml(ns::CLIENT)));
    }

    #[test]
    fn short_strings_compare_exactly() {
        for n in 0..40usize {
            let a: Vec<u8> = (0..n as u8).map(|i| b'a' + i % 26).collect();
            assert!(same_bytes(&a, &a.clone()), "{n}");
            for at in 0..n {
                let mut b = a.clone();
                b[at] ^= 0x20;
                assert!(!same_bytes(&a, &b), "{n} {at}");
            }
            assert!(!same_bytes(&a, &a[..n.saturating_sub(1)]) || n == 0);
        }
    }

    #[test]
    fn flat_copies_tell_elements_apart() {
        // Strings that concatenate alike but split differently.
        let a = Element::new("ab", "c");
        let b = Element::new("a", "bc");
        let mut fa = Vec::new();
        flatten(&a, &mut fa);
        assert_eq!(matched(&a, &fa), Some(0));
        assert_eq!(matched(&b, &fa), None);
        // A prefix of the copy is not the element, nor is a longer one.
        assert_eq!(matched(&a, &fa[..fa.len() - 1]), None);
        let mut longer = fa.clone();
        longer.push(0);
        assert_eq!(matched(&a, &longer), None);
        assert_eq!(matched(&a, &[]), None);
        // More children than kept: how many were.
        let a2 = a.clone().with_child(Element::new("c", "d"));
        let mut fa2 = Vec::new();
        flatten(&a2, &mut fa2);
        assert_eq!(
            matched(&a2.clone().with_child(Element::new("e", "f")), &fa2),
            Some(1)
        );
        assert_eq!(matched(&a, &fa2), None);
    }
}
