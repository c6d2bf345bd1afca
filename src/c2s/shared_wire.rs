//! Serialising a room's fan-out once: a groupchat message goes to every
//! occupant as the same stanza with only `to` differing, and each
//! occupant's writer task would serialise (escape and format) all of it
//! again. Here each worker thread keeps the groupchat messages it wrote
//! recently, cut around the `to` value ([`Element::write_around_attr`]),
//! found again by their `from` and `id` values (a hash lookup, not a scan);
//! a stanza equal to one of them in everything but `to`'s value is written
//! as the kept parts with its own `to` between them.
//!
//! Why keyed and this many: a room's copies reach the occupants' writers
//! interleaved with every other room's, and when the writers fall behind
//! (queued batches) hundreds of messages are in flight at once; a short
//! list searched in turn then mostly missed, and every miss serialised the
//! stanza, copied it into the list and dropped an older one (stop 18's
//! profile: a quarter of the server's CPU at 100 rooms × 20 at 1/s).
//!
//! Invariants: the bytes written are exactly what [`Framing::write`]
//! writes for the stanza (equality is checked on the whole element —
//! name, namespace, every attribute in order, every child — except the
//! `to` value, and the framing is part of the key; the `from`/`id` hash
//! only picks which kept entries to compare); only `message` stanzas of
//! type `groupchat` are considered, so other traffic pays one attribute
//! comparison; what is kept is bounded per thread ([`ENTRIES`] entries and
//! about [`KEPT_BYTES`], each at most [`MAX_BYTES`] serialised, at most
//! [`PER_KEY`] under one `from`/`id`) and holds no session's state. A
//! stanza with a character that must be replaced is not kept (written by
//! `write_to`, which reports it, every time). Other messages on an RFC 6120
//! stream may come from `crate::xml::kept` (a chat message serialised for
//! the archive on this thread), under the same exactness rule.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::hash::{Hash, Hasher};

use rustc_hash::{FxHashMap, FxHasher};
use xep_support::element::{escape_into, Element};
use xep_support::ns;

use super::framing::Framing;

/// Entries kept per thread (the messages in flight through its writers).
pub const ENTRIES: usize = 512;
/// About this many bytes kept per thread (an entry counts twice its
/// serialised size: the bytes and the element they were made from).
pub const KEPT_BYTES: usize = 256 * 1024;
/// Larger serialisations are not kept.
pub const MAX_BYTES: usize = 4096;
/// Entries kept under one `from`/`id` (a sender reusing an id, or sending
/// none).
pub const PER_KEY: usize = 4;

struct Entry {
    /// Insertion number (what the eviction order refers to).
    serial: u64,
    framing: Framing,
    el: Element,
    /// Where `to` is in `el.attrs`.
    to_at: usize,
    before: String,
    after: String,
}

impl Entry {
    fn cost(&self) -> usize {
        2 * (self.before.len() + self.after.len())
    }
}

/// One thread's kept serialisations.
#[derive(Default)]
struct Kept {
    /// By the hash of framing, `from` and `id`; each list oldest first.
    by_key: FxHashMap<u64, Vec<Entry>>,
    /// (key, serial) in insertion order, for eviction (an entry a full
    /// key list dropped earlier is skipped).
    order: VecDeque<(u64, u64)>,
    entries: usize,
    bytes: usize,
    next: u64,
}

impl Kept {
    fn find(&self, key: u64, framing: Framing, el: &Element, to_at: usize) -> Option<&Entry> {
        self.by_key
            .get(&key)?
            .iter()
            .find(|e| e.framing == framing && e.to_at == to_at && same_but_to(&e.el, el, to_at))
    }

    fn insert(&mut self, key: u64, mut entry: Entry) {
        entry.serial = self.next;
        self.next += 1;
        self.entries += 1;
        self.bytes += entry.cost();
        self.order.push_back((key, entry.serial));
        let list = self.by_key.entry(key).or_default();
        if list.len() >= PER_KEY {
            let old = list.remove(0);
            self.entries -= 1;
            self.bytes -= old.cost();
        }
        list.push(entry);
        while self.entries > ENTRIES || self.bytes > KEPT_BYTES {
            let Some((key, serial)) = self.order.pop_front() else {
                break;
            };
            let Some(list) = self.by_key.get_mut(&key) else {
                continue;
            };
            if list.first().is_some_and(|e| e.serial == serial) {
                let old = list.remove(0);
                self.entries -= 1;
                self.bytes -= old.cost();
                if list.is_empty() {
                    self.by_key.remove(&key);
                }
            }
        }
    }
}

thread_local! {
    static KEPT: RefCell<Kept> = RefCell::new(Kept::default());
}

/// The lookup key of a groupchat message: its framing, `from` and `id`.
fn key_of(framing: Framing, el: &Element) -> u64 {
    let mut h = FxHasher::default();
    (framing as u8).hash(&mut h);
    el.attr("from").hash(&mut h);
    el.attr("id").hash(&mut h);
    h.finish()
}

/// Append `el` as `framing` writes it.
pub fn write(framing: Framing, el: &Element, buf: &mut String) {
    if el.name != "message" || el.attr("type") != Some("groupchat") || el.ns == ns::STREAM {
        // A chat message this thread just archived (`xml/kept.rs`): its
        // kept XML, the recipient's stanza-id written into it.
        if framing == Framing::Stream && crate::xml::kept::write_stream(el, buf) {
            return;
        }
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
    let key = key_of(framing, el);
    let written = KEPT.with(|kept| {
        let kept = kept.borrow();
        let e = kept.find(key, framing, el, to_at)?;
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
        kept.borrow_mut().insert(
            key,
            Entry {
                serial: 0,
                framing,
                el: el.clone(),
                to_at,
                before,
                after,
            },
        );
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
    }

    #[test]
    fn many_messages_in_flight_stay_exact_and_bounded() {
        // Messages of 70 senders (some without an id, some reusing one),
        // each written to several recipients interleaved with the others:
        // every write is what the framing writes, a message is serialised
        // once while it is kept, and what is kept stays within its bounds.
        let m = |i: usize, to: &str| {
            let mut m = msg(to, &format!("text {i} <&>"));
            m.set_attr("from", format!("room{}@conference.x/n{}", i % 7, i % 70));
            match i % 3 {
                0 => {
                    m.remove_attr("id");
                }
                1 => m.set_attr("id", "same"),
                _ => m.set_attr("id", format!("id{i}")),
            }
            m
        };
        let inserted = || KEPT.with(|k| k.borrow().next);
        for framing in [Framing::Stream, Framing::WebSocket] {
            // 300 messages in flight at a time, each written to 5
            // recipients in turn: only each message's first write misses.
            for chunk in 0..3 {
                let before = inserted();
                for round in 0..5 {
                    for i in chunk * 300..(chunk + 1) * 300 {
                        let to = format!("u{round}@x/r{i}");
                        let el = m(i, &to);
                        let mut got = String::new();
                        write(framing, &el, &mut got);
                        assert_eq!(got, framing.to_xml(&el), "{framing:?} {round} {i}");
                    }
                }
                assert_eq!(inserted() - before, 300, "{framing:?} chunk {chunk}");
            }
            // 700 in flight: more than is kept; still exact.
            for round in 0..3 {
                for i in 0..700 {
                    let to = format!("v{round}@x/r{i}");
                    let el = m(i, &to);
                    let mut got = String::new();
                    write(framing, &el, &mut got);
                    assert_eq!(got, framing.to_xml(&el), "{framing:?} {round} {i}");
                }
            }
            KEPT.with(|k| {
                let k = k.borrow();
                assert!(k.entries <= ENTRIES && k.bytes <= KEPT_BYTES);
                let listed: usize = k.by_key.values().map(Vec::len).sum();
                assert_eq!(listed, k.entries);
                assert!(k.by_key.values().all(|l| l.len() <= PER_KEY));
                assert!(k.order.len() >= k.entries);
            });
        }
    }

    #[test]
    fn other_stanzas_are_written_as_they_are() {
        // Other stanzas are written as they are.
        let chat = msg("a@x/1", "hi").with_attr("type", "chat");
        let mut got = String::new();
        write(Framing::Stream, &chat, &mut got);
        assert_eq!(got, Framing::Stream.to_xml(&chat));
    }
}
