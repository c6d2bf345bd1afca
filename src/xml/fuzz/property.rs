//! The differential property of the XML stream reader, for one input.
//!
//! The input is what a client sends: bytes up to a stream header, then
//! stanzas. [`check`] feeds it to [`StreamReader`] one byte per read (so
//! the bytes consumed when an event is yielded are exactly the document
//! read so far) and all at once, and holds the reader to:
//! 1. no panic, no stall on input that is all there, no endless events;
//! 2. for every event it yields, the strict references accept the prefix
//!    read so far, closed with the header's end tag (the stream's end:
//!    the prefix as it is), as well-formed XML 1.0 with namespaces, and
//!    it holds no comment, PI or DTD (RFC 6120 §11.1) and keeps within
//!    the reader's depth, attribute and namespace limits. The reader may
//!    refuse more (the stanza size limit, its own choices), never less;
//! 3. the same events and verdict whatever the chunking (up to the size
//!    limit, whose count includes read-ahead);
//! 4. peak memory held while reading within [`memory_bound`] of the
//!    configured limit, where the binary counts allocations.

use crate::xml::{StreamEvent, StreamReader, XmlError};
use std::cell::Cell;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use tokio::io::{AsyncRead, ReadBuf};

/// The `max_stanza_size` the reader is run with: small, so that inputs of
/// a few KiB reach it.
pub const MAX_STANZA: usize = 2048;

/// Bytes the reader may hold while reading with `limit`: its input window
/// (`limit` plus 1 KiB of read-ahead) times the growth of a parsed tree
/// over its text (an empty element `<a/>`, 4 bytes, becomes an element
/// of ~100 bytes plus its name and namespace), plus a fixed base.
pub fn memory_bound(limit: usize) -> usize {
    64 * (limit + 1024) + 64 * 1024
}

/// Why an input fails the property.
#[derive(Debug, Clone)]
pub struct Finding {
    /// `panic`, `stall`, `events`, `accepted-not-well-formed`,
    /// `chunking`, `memory` or `harness`.
    pub class: &'static str,
    pub detail: String,
}

impl Finding {
    fn new(class: &'static str, detail: impl Into<String>) -> Self {
        Finding {
            class,
            detail: detail.into(),
        }
    }

    /// The finding without positions and numbers, to tell kinds apart.
    pub fn key(&self) -> String {
        let d: String = self
            .detail
            .chars()
            .filter(|c| !c.is_ascii_digit())
            .take(90)
            .collect();
        format!("{}: {}", self.class, d)
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.class, self.detail)
    }
}

/// What a run of the property saw, for statistics.
#[derive(Debug, Default, Clone, Copy)]
pub struct Outcome {
    pub stanzas: usize,
    /// The reader ended with a stream error (refused the input).
    pub refused: bool,
    /// Peak bytes held while reading, if counted.
    pub peak: Option<usize>,
}

/// An event, comparable across runs.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Header(u64),
    Stanza(u64),
    End,
}

#[derive(Debug, Clone, PartialEq)]
enum Ended {
    Closed,
    End,
    Error(&'static str, String),
}

struct Run {
    /// Each event with the number of bytes consumed when it was yielded.
    events: Vec<(Seen, usize)>,
    ended: Ended,
}

/// Hands out `chunk` bytes per read and counts the bytes handed out.
struct Source<'a> {
    data: &'a [u8],
    pos: Rc<Cell<usize>>,
    chunk: usize,
}

impl AsyncRead for Source<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let p = this.pos.get();
        let n = (this.data.len() - p).min(this.chunk).min(buf.remaining());
        buf.put_slice(&this.data[p..p + n]);
        this.pos.set(p + n);
        Poll::Ready(Ok(()))
    }
}

fn digest(s: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

/// Read `input` to its end or the first error. Reading from memory never
/// waits, so the future must finish in one poll.
/// `events` comes allocated from outside the memory count, large enough.
fn run_reader(
    input: &[u8],
    chunk: usize,
    limit: usize,
    mut events: Vec<(Seen, usize)>,
) -> Result<Run, Finding> {
    let pos = Rc::new(Cell::new(0usize));
    let source = Source {
        data: input,
        pos: pos.clone(),
        chunk,
    };
    let mut reader = StreamReader::new(source, Some(limit));
    let max_events = input.len() + 2;
    let at = pos.clone();
    let fut = async move {
        loop {
            if events.len() > max_events {
                return Err(Finding::new(
                    "events",
                    format!("more than {max_events} events from {} bytes", input.len()),
                ));
            }
            let ended = match reader.next().await {
                Ok(StreamEvent::Header(h)) => {
                    events.push((Seen::Header(digest(&format!("{h:?}"))), at.get()));
                    continue;
                }
                Ok(StreamEvent::Stanza(el)) => {
                    let xml = el.to_xml(xep_support::ns::CLIENT);
                    drop(el);
                    events.push((Seen::Stanza(digest(&xml)), at.get()));
                    continue;
                }
                Ok(StreamEvent::End) => {
                    events.push((Seen::End, at.get()));
                    Ended::End
                }
                Err(XmlError::Closed) => Ended::Closed,
                Err(e) => Ended::Error(e.condition().map_or("io", |c| c.as_str()), e.to_string()),
            };
            return Ok(Run { events, ended });
        }
    };
    let mut fut = std::pin::pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(result) => result,
        Poll::Pending => Err(Finding::new(
            "stall",
            format!(
                "the reader waited for more input after {} of {} bytes (chunk {chunk})",
                pos.get(),
                input.len()
            ),
        )),
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic".into()
    }
}

fn run_guarded(input: &[u8], chunk: usize, limit: usize) -> Result<Run, Finding> {
    let events = Vec::with_capacity(input.len() + 4);
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run_reader(input, chunk, limit, events)
    }))
    .unwrap_or_else(|p| {
        Err(Finding::new(
            "panic",
            format!("chunk {chunk}: {}", panic_message(&*p)),
        ))
    })
}

/// The qualified name of the first element's start tag (after an XML
/// declaration, PIs, comments or a DOCTYPE), to close the document with.
fn root_qname(input: &[u8]) -> Option<&[u8]> {
    let find = |from: usize, pat: &[u8]| {
        input[from..]
            .windows(pat.len())
            .position(|w| w == pat)
            .map(|p| from + p)
    };
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'<' {
            match input.get(i + 1) {
                Some(b'?') => i = find(i, b"?>")? + 2,
                Some(b'!') => i = find(i, b">")? + 1,
                _ => {
                    let start = i + 1;
                    let len = input[start..]
                        .iter()
                        .position(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n' | b'/' | b'>'))?;
                    return Some(&input[start..start + len]);
                }
            }
        } else {
            i += 1;
        }
    }
    None
}

/// The waiver of [`reference_accepts`]: element names with the prefix
/// `xml` renamed to unprefixed ones.
fn waive(doc: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    match std::str::from_utf8(doc) {
        Ok(text) if text.contains("<xml:") || text.contains("</xml:") => text
            .replace("<xml:", "<xml\u{B7}")
            .replace("</xml:", "</xml\u{B7}")
            .into_bytes()
            .into(),
        _ => doc.into(),
    }
}

/// Whether both references accept `doc` as one well-formed, namespace
/// well-formed XML 1.0 document; the first one's reason if not.
///
/// One waiver: both refuse element names with the prefix `xml`, which the
/// Namespaces recommendation allows (the prefix is bound by definition), so
/// such names are renamed to unprefixed ones (`xml·name`) before parsing.
pub fn reference_accepts(doc: &[u8]) -> Result<(), String> {
    let doc = &waive(doc)[..];
    let text = std::str::from_utf8(doc).map_err(|e| format!("not UTF-8: {e}"))?;
    let mut cfg = xml::ParserConfig::new();
    cfg.allow_multiple_root_elements = false;
    cfg.ignore_comments = false;
    for ev in xml::EventReader::new_with_config(doc, cfg) {
        ev.map_err(|e| format!("xml-rs: {e}"))?;
    }
    roxmltree::Document::parse(text).map_err(|e| format!("roxmltree: {e}"))?;
    Ok(())
}

/// The reader's shape limits (`MAX_DEPTH`, `MAX_ATTRIBUTES`,
/// `MAX_NAMESPACES` in src/xml/reader.rs): elements a stanza nests, itself
/// included; attributes of one element, namespace declarations included;
/// namespace declarations in scope, the stream header's included.
pub const MAX_DEPTH: usize = 64;
pub const MAX_ATTRIBUTES: usize = 100;
pub const MAX_NAMESPACES: usize = 128;

/// Whether Rookery's restrictions allow `doc` (taken as well-formed): no
/// comment, processing instruction or DTD (RFC 6120 §11.1; the references
/// already refuse entities other than the predefined ones), and the shape
/// limits. Declarations are counted as the mappings an element adds or
/// changes, so a redeclaration to the same URI is not counted (an
/// undercount: never a false finding).
pub fn xmpp_allows(doc: &[u8]) -> Result<(), String> {
    use std::collections::BTreeMap;
    let doc = &waive(doc)[..];
    let mut cfg = xml::ParserConfig::new();
    cfg.ignore_comments = false;
    let initial: BTreeMap<String, String> = [
        ("", ""),
        ("xml", "http://www.w3.org/XML/1998/namespace"),
        ("xmlns", "http://www.w3.org/2000/xmlns/"),
    ]
    .into_iter()
    .map(|(p, u)| (p.to_string(), u.to_string()))
    .collect();
    // For each open element: its in-scope mappings and declarations in scope.
    let mut open: Vec<(BTreeMap<String, String>, usize)> = Vec::new();
    for ev in xml::EventReader::new_with_config(doc, cfg) {
        match ev {
            Ok(xml::reader::XmlEvent::StartElement {
                attributes,
                namespace,
                ..
            }) => {
                let (parent, in_scope) = open.last().map_or((&initial, 0), |(m, n)| (m, *n));
                let declared = namespace
                    .0
                    .iter()
                    .filter(|(p, u)| parent.get(*p) != Some(*u))
                    .count();
                let in_scope = in_scope + declared;
                // The stream header is the document's root: a stanza at depth 1.
                if open.len() > MAX_DEPTH {
                    return Err(format!("deeper than {MAX_DEPTH} elements in a stanza"));
                }
                if attributes.len() + declared > MAX_ATTRIBUTES {
                    return Err(format!(
                        "{} attributes on one element (limit {MAX_ATTRIBUTES})",
                        attributes.len() + declared
                    ));
                }
                if in_scope > MAX_NAMESPACES {
                    return Err(format!(
                        "{in_scope} namespace declarations in scope (limit {MAX_NAMESPACES})"
                    ));
                }
                open.push((namespace.0, in_scope));
            }
            Ok(xml::reader::XmlEvent::EndElement { .. }) => {
                open.pop();
            }
            Ok(xml::reader::XmlEvent::Comment(_)) => return Err("RFC 6120: a comment".into()),
            Ok(xml::reader::XmlEvent::ProcessingInstruction { name, .. }) => {
                return Err(format!("RFC 6120: a processing instruction <?{name}"))
            }
            Ok(xml::reader::XmlEvent::Doctype { .. }) => return Err("RFC 6120: a DTD".into()),
            Ok(_) => {}
            Err(e) => return Err(format!("xml-rs: {e}")),
        }
    }
    Ok(())
}

/// The references' and RFC 6120's verdict on `doc`.
fn oracle(doc: &[u8]) -> Result<(), String> {
    reference_accepts(doc)?;
    xmpp_allows(doc)
}

/// The document the references must accept after event `i`.
fn prefix_doc(input: &[u8], run: &Run, i: usize, root: &[u8]) -> Vec<u8> {
    let (seen, at) = &run.events[i];
    let mut doc = input[..*at].to_vec();
    if *seen != Seen::End {
        doc.extend_from_slice(b"</");
        doc.extend_from_slice(root);
        doc.push(b'>');
    }
    doc
}

fn kind(seen: &Seen) -> &'static str {
    match seen {
        Seen::Header(_) => "the stream header",
        Seen::Stanza(_) => "a stanza",
        Seen::End => "the stream's end",
    }
}

/// Property 2 on the byte-at-a-time run.
fn check_reference(input: &[u8], run: &Run) -> Result<(), Finding> {
    let Some(last) = run.events.len().checked_sub(1) else {
        return Ok(());
    };
    for (seen, at) in &run.events {
        if *at == 0 || input[at - 1] != b'>' {
            return Err(Finding::new(
                "harness",
                format!("{} yielded at byte {at}, not after a '>'", kind(seen)),
            ));
        }
    }
    let Some(root) = root_qname(input) else {
        return Err(Finding::new(
            "accepted-not-well-formed",
            "the reader yielded events, but the input has no start tag",
        ));
    };
    if oracle(&prefix_doc(input, run, last, root)).is_ok() {
        return Ok(());
    }
    // Name the first event after which the references refuse.
    for i in 0..=last {
        if let Err(why) = oracle(&prefix_doc(input, run, i, root)) {
            let (seen, at) = &run.events[i];
            return Err(Finding::new(
                "accepted-not-well-formed",
                format!(
                    "the reader yielded {} ending at byte {at}; the references refuse it: {why}",
                    kind(seen)
                ),
            ));
        }
    }
    Ok(())
}

/// Property 3: the byte-at-a-time run against the all-at-once run.
fn check_chunking(one: &Run, all: &Run) -> Result<(), Finding> {
    let limited = |r: &Run| matches!(r.ended, Ended::Error("policy-violation", _));
    let a: Vec<&Seen> = one.events.iter().map(|(s, _)| s).collect();
    let b: Vec<&Seen> = all.events.iter().map(|(s, _)| s).collect();
    let verdict = |r: &Run| match &r.ended {
        Ended::Error(c, _) => c.to_string(),
        other => format!("{other:?}"),
    };
    let same = if limited(one) || limited(all) {
        let n = a.len().min(b.len());
        a[..n] == b[..n]
    } else {
        a == b && verdict(one) == verdict(all)
    };
    if same {
        return Ok(());
    }
    Err(Finding::new(
        "chunking",
        format!(
            "byte by byte: {} events then {:?}; all at once: {} events then {:?}",
            a.len(),
            one.ended,
            b.len(),
            all.ended
        ),
    ))
}

/// Check the property for one input, with `max_stanza_size` [`MAX_STANZA`].
pub fn check(input: &[u8]) -> Result<Outcome, Finding> {
    check_with_limit(input, MAX_STANZA)
}

/// Check the property for one input, with `max_stanza_size` `limit`.
pub fn check_with_limit(input: &[u8], limit: usize) -> Result<Outcome, Finding> {
    let events = Vec::with_capacity(input.len() + 4);
    let (one, peak) = super::alloc::measure(|| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_reader(input, 1, limit, events)
        }))
    });
    let one = one.unwrap_or_else(|p| {
        Err(Finding::new(
            "panic",
            format!("byte by byte: {}", panic_message(&*p)),
        ))
    })?;
    if let Some(peak) = peak {
        let bound = memory_bound(limit);
        if peak > bound {
            return Err(Finding::new(
                "memory",
                format!(
                    "the reader held {peak} bytes at once reading {} input bytes with max_stanza_size {limit} (bound {bound})",
                    input.len()
                ),
            ));
        }
    }
    check_reference(input, &one)?;
    let all = run_guarded(input, usize::MAX, limit)?;
    check_chunking(&one, &all)?;
    Ok(Outcome {
        stanzas: one
            .events
            .iter()
            .filter(|(s, _)| matches!(s, Seen::Stanza(_)))
            .count(),
        refused: matches!(one.ended, Ended::Error(..)),
        peak,
    })
}
