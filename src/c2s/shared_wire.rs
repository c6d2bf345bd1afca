//! Serialising a room's fan-out once: a groupchat message goes to every
//! occupant as the same stanza with only `to` differing, and each
//! occupant's writer task would serialise (escape and format) all of it
//! again. Here each worker thread keeps the last few groupchat messages it
//! wrote, cut around the `to` value ([`Element::write_around_attr`]); a
//! stanza equal to one of them in everything but `to`'s value is written
//! as the kept parts with its own `to` between them.
//!
//! Invariants: the bytes written are exactly what [`Framing::write`]
//! writes for the stanza (equality is checked on the whole element —
//! name, namespace, every attribute in order, every child — except the
//! `to` value, and the framing is part of the key); only `message`
//! stanzas of type `groupchat` are considered, so other traffic pays one
//! attribute comparison; what is kept is bounded ([`ENTRIES`] per thread,
//! each at most [`MAX_BYTES`] serialised) and holds no session's state.
//! A stanza with a character that must be replaced is not kept (written
//! by `write_to`, which reports it, every time).

use std::cell::RefCell;
use std::collections::VecDeque;

use xep_support::element::{escape_into, Element};
use xep_support::ns;

use super::framing::Framing;

/// Stanzas kept per thread (a thread interleaves the fan-outs of the
/// rooms whose messages arrive at about the same time).
pub const ENTRIES: usize = 16;
/// Larger serialisations are not kept.
pub const MAX_BYTES: usize = 4096;

struct Entry {
    framing: Framing,
    el: Element,
    /// Where `to` is in `el.attrs`.
    to_at: usize,
    before: String,
    after: String,
}

thread_local! {
    static KEPT: RefCell<VecDeque<Entry>> = const { RefCell::new(VecDeque::new()) };
}

/// Append `el` as `framing` writes it.
pub fn write(framing: Framing, el: &Element, buf: &mut String) {
    if el.name != "message" || el.attr("type") != Some("groupchat") || el.ns == ns::STREAM {
        return framing.write(el, buf);
    }
    let Some((to_at, to)) = el
        .attrs
        .iter()
        .enumerate()
        .find(|(_, (k, _))| k == "to")
        .map(|(i, (_, v))| (i, v.as_str()))
    else {
        return framing.write(el, buf);
    };
    let written = KEPT.with(|kept| {
        let kept = kept.borrow();
        let e = kept
            .iter()
            .find(|e| e.framing == framing && e.to_at == to_at && same_but_to(&e.el, el, to_at))?;
        buf.push_str(&e.before);
        escape_into(buf, to, true);
        buf.push_str(&e.after);
        Some(())
    });
    if written.is_some() {
        return;
    }
    let Some((before, mut after)) = el.write_around_attr(framing_ns(framing), "to") else {
        return framing.write(el, buf);
    };
    if framing.messages() {
        after.push(super::framing::MESSAGE_END);
    }
    buf.push_str(&before);
    escape_into(buf, to, true);
    buf.push_str(&after);
    if before.len() + after.len() > MAX_BYTES {
        return;
    }
    KEPT.with(|kept| {
        let mut kept = kept.borrow_mut();
        if kept.len() >= ENTRIES {
            kept.pop_front();
        }
        kept.push_back(Entry {
            framing,
            el: el.clone(),
            to_at,
            before,
            after,
        });
    });
}

/// The namespace in scope for a top-level stanza under `framing` (as
/// [`Framing::write`] passes it).
fn framing_ns(framing: Framing) -> &'static str {
    if framing.messages() {
        ""
    } else {
        ns::CLIENT
    }
}

/// `a` and `b` are equal but for the value of their attribute at `to_at`
/// (named `to` in both).
fn same_but_to(a: &Element, b: &Element, to_at: usize) -> bool {
    a.name == b.name
        && a.ns == b.ns
        && a.attrs.len() == b.attrs.len()
        && a.attrs
            .iter()
            .zip(&b.attrs)
            .enumerate()
            .all(|(i, ((ka, va), (kb, vb)))| ka == kb && (i == to_at || va == vb))
        && a.children == b.children
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(to: &str, body: &str) -> Element {
        Element::new("message", ns::CLIENT)
            .with_attr("type", "groupchat")
            .with_attr("from", "room@conference.x/nick")
            .with_attr("to", to)
            .with_attr("id", "m1")
            .with_child(Element::new("body", ns::CLIENT).with_text(body))
    }

    #[test]
    fn writes_what_framing_writes_for_every_recipient() {
        for framing in [Framing::Stream, Framing::WebSocket, Framing::Bosh] {
            for (to, body) in [
                ("a@x/1", "hi"),
                ("b@x/2", "hi"),
                ("c'&@x/3", "hi"),
                ("a@x/1", "other <body>"),
                ("d@x/4", "hi"),
            ] {
                let m = msg(to, body);
                let mut got = String::new();
                write(framing, &m, &mut got);
                assert_eq!(got, framing.to_xml(&m), "{framing:?} {to} {body}");
            }
            // A change anywhere but `to` is never served from what is kept.
            let mut m = msg("e@x/5", "hi");
            m.set_attr("id", "m2");
            let mut got = String::new();
            write(framing, &m, &mut got);
            assert_eq!(got, framing.to_xml(&m));
            let mut m = msg("e@x/5", "hi");
            m.children
                .push(xep_support::element::Node::Element(Element::new(
                    "x", "urn:y",
                )));
            let mut got = String::new();
            write(framing, &m, &mut got);
            assert_eq!(got, framing.to_xml(&m));
        }
        // Other stanzas are written as they are.
        let chat = msg("a@x/1", "hi").with_attr("type", "chat");
        let mut got = String::new();
        write(Framing::Stream, &chat, &mut got);
        assert_eq!(got, Framing::Stream.to_xml(&chat));
    }
}
