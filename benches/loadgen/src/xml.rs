//! A light XMPP stream splitter on top of quick-xml.
//!
//! The load generator never builds element trees. [`split`] looks at the
//! unconsumed bytes of a connection's read buffer and finds the next
//! stream-level unit: the `<stream:stream>` header, one complete top-level
//! element (a stanza or a nonza such as `<stream:features/>`), or the closing
//! `</stream:stream>`. While it scans, it notes the few things the scenarios
//! need — the element's local name, its `type`, `id` and `from` attributes,
//! the name of its first child, its own direct text (SASL payloads) and the
//! text of a `<body/>` or `<status/>` child — as byte ranges into the buffer,
//! so nothing is allocated per stanza.
//!
//! An incomplete unit (the buffer ends inside it) yields `Ok(None)`; the
//! caller reads more and calls again from the same start, so a stanza split
//! across reads is scanned again from its beginning (stanzas here are small).

use std::ops::Range;

use quick_xml::events::Event;
use quick_xml::Reader;

/// Largest unit the splitter waits for before declaring the stream broken.
pub const MAX_UNIT: usize = 1 << 20;

/// What kind of stream-level unit was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `<stream:stream ...>` (the stream is now open).
    Header,
    /// One complete top-level element.
    Element,
    /// `</stream:stream>`.
    End,
}

/// One unit found by [`split`]; ranges index the slice given to [`split`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unit {
    /// Header, element or end.
    pub kind: Kind,
    /// Bytes to consume (leading whitespace included).
    pub len: usize,
    /// The element's own bytes (without leading whitespace).
    pub raw: Range<usize>,
    /// Local name of the element.
    pub name: Range<usize>,
    /// `type` attribute.
    pub typ: Option<Range<usize>>,
    /// `id` attribute.
    pub id: Option<Range<usize>>,
    /// `from` attribute.
    pub from: Option<Range<usize>>,
    /// Local name of the first child element.
    pub child: Option<Range<usize>>,
    /// First text directly inside the element (e.g. SASL data).
    pub text: Option<Range<usize>>,
    /// First text inside a `<body/>` or `<status/>` child.
    pub body: Option<Range<usize>>,
}

/// The splitter found bytes that can never become a valid unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitError(pub String);

impl std::fmt::Display for SplitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SplitError {}

fn sub(base: &[u8], part: &[u8]) -> Option<Range<usize>> {
    let b = base.as_ptr() as usize;
    let p = part.as_ptr() as usize;
    if p >= b && p + part.len() <= b + base.len() {
        Some(p - b..p - b + part.len())
    } else {
        None
    }
}

fn local(name: &[u8]) -> &[u8] {
    match name.iter().position(|&c| c == b':') {
        Some(i) => &name[i + 1..],
        None => name,
    }
}

/// Finds the next unit in `buf`. `in_stream` tells whether the stream header
/// has been seen (then top-level elements and the end are expected).
pub fn split(buf: &[u8], in_stream: bool) -> Result<Option<Unit>, SplitError> {
    let mut reader = Reader::from_reader(buf);
    {
        let c = reader.config_mut();
        c.check_end_names = false;
        c.allow_unmatched_ends = true;
        c.trim_text(false);
    }
    let mut depth = 0usize;
    let mut unit = Unit {
        kind: Kind::Element,
        len: 0,
        raw: 0..0,
        name: 0..0,
        typ: None,
        id: None,
        from: None,
        child: None,
        text: None,
        body: None,
    };
    let mut start = None;
    let mut in_body = false;
    loop {
        let before = reader.buffer_position() as usize;
        let ev = match reader.read_event() {
            Ok(ev) => ev,
            Err(e) => {
                // Usually a tag cut by the end of the buffer; real garbage is
                // detected by size.
                if buf.len() > MAX_UNIT {
                    return Err(SplitError(format!("unparsable stream data: {e}")));
                }
                return Ok(None);
            }
        };
        let pos = reader.buffer_position() as usize;
        match ev {
            Event::Eof => {
                if buf.len() > MAX_UNIT {
                    return Err(SplitError("unit larger than the limit".into()));
                }
                return Ok(None);
            }
            Event::Start(ref e) | Event::Empty(ref e) if depth == 0 => {
                let empty = matches!(ev, Event::Empty(_));
                let name = e.name();
                let raw_name = name.as_ref();
                let tag_start = buf[before..pos]
                    .iter()
                    .position(|&c| c == b'<')
                    .map_or(before, |i| before + i);
                start = Some(tag_start);
                if !in_stream {
                    if local(raw_name) == b"stream" && !empty {
                        unit.kind = Kind::Header;
                        unit.len = pos;
                        unit.raw = tag_start..pos;
                        unit.name = sub(buf, local(raw_name)).unwrap_or(0..0);
                        for a in e.attributes().flatten() {
                            if a.key.as_ref() == b"id" {
                                unit.id = sub(buf, &a.value);
                            }
                        }
                        return Ok(Some(unit));
                    }
                    return Err(SplitError(format!(
                        "expected a stream header, found <{}>",
                        String::from_utf8_lossy(raw_name)
                    )));
                }
                unit.name = sub(buf, local(raw_name)).unwrap_or(0..0);
                for a in e.attributes().flatten() {
                    match a.key.as_ref() {
                        b"type" => unit.typ = sub(buf, &a.value),
                        b"id" => unit.id = sub(buf, &a.value),
                        b"from" => unit.from = sub(buf, &a.value),
                        _ => {}
                    }
                }
                if empty {
                    unit.len = pos;
                    unit.raw = tag_start..pos;
                    return Ok(Some(unit));
                }
                depth = 1;
            }
            Event::Start(e) => {
                depth += 1;
                if depth == 2 {
                    let n = e.name();
                    let l = local(n.as_ref());
                    if unit.child.is_none() {
                        unit.child = sub(buf, l);
                    }
                    in_body = unit.body.is_none() && (l == b"body" || l == b"status");
                }
            }
            Event::Empty(e) if depth == 1 && unit.child.is_none() => {
                let n = e.name();
                unit.child = sub(buf, local(n.as_ref()));
            }
            Event::End(_) => {
                if depth == 0 {
                    if !in_stream {
                        return Err(SplitError("end tag before the stream header".into()));
                    }
                    unit.kind = Kind::End;
                    unit.len = pos;
                    let s = buf[before..pos]
                        .iter()
                        .position(|&c| c == b'<')
                        .map_or(before, |i| before + i);
                    unit.raw = s..pos;
                    return Ok(Some(unit));
                }
                depth -= 1;
                in_body = false;
                if depth == 0 {
                    unit.len = pos;
                    unit.raw = start.unwrap_or(0)..pos;
                    return Ok(Some(unit));
                }
            }
            Event::Text(t) => {
                if depth == 1 && unit.text.is_none() && t.iter().any(|c| !c.is_ascii_whitespace()) {
                    unit.text = sub(buf, &t);
                } else if depth == 2 && in_body && unit.body.is_none() {
                    unit.body = sub(buf, &t);
                }
            }
            // Declarations, comments, references, CDATA: nothing we need.
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s<'a>(buf: &'a [u8], r: &Option<Range<usize>>) -> Option<&'a str> {
        r.as_ref()
            .map(|r| std::str::from_utf8(&buf[r.clone()]).unwrap())
    }

    #[test]
    fn header_then_features() {
        let b =
            b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' id='abc' version='1.0'>";
        let u = split(b, false).unwrap().unwrap();
        assert_eq!(u.kind, Kind::Header);
        assert_eq!(u.len, b.len());
        assert_eq!(s(b, &u.id), Some("abc"));
        let f = b"<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>";
        let u = split(f, true).unwrap().unwrap();
        assert_eq!(&f[u.name.clone()], b"features");
        assert_eq!(s(f, &u.child), Some("starttls"));
        assert_eq!(u.len, f.len());
    }

    #[test]
    fn message_body_and_attrs() {
        let b = b" <message from='a@x/r' type='chat' id='m1'><body>1 2 3</body></message><iq/>";
        let u = split(b, true).unwrap().unwrap();
        assert_eq!(&b[u.name.clone()], b"message");
        assert_eq!(s(b, &u.from), Some("a@x/r"));
        assert_eq!(s(b, &u.typ), Some("chat"));
        assert_eq!(s(b, &u.body), Some("1 2 3"));
        assert_eq!(&b[u.raw.clone()], &b[1..u.len]);
        let rest = &b[u.len..];
        let u2 = split(rest, true).unwrap().unwrap();
        assert_eq!(&rest[u2.name.clone()], b"iq");
        assert_eq!(u2.len, rest.len());
    }

    #[test]
    fn incomplete_units_wait() {
        let full = b"<message to='b@x'><body>hello</body></message>";
        for cut in 0..full.len() {
            assert_eq!(split(&full[..cut], true).unwrap(), None, "cut at {cut}");
        }
        assert!(split(full, true).unwrap().is_some());
        let hdr = b"<stream:stream xmlns='jabber:client'>";
        for cut in 0..hdr.len() {
            assert_eq!(split(&hdr[..cut], false).unwrap(), None, "cut at {cut}");
        }
    }

    #[test]
    fn sasl_text_and_stream_end() {
        let b = b"<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>cj1hYmM=</challenge></stream:stream>";
        let u = split(b, true).unwrap().unwrap();
        assert_eq!(s(b, &u.text), Some("cj1hYmM="));
        let u2 = split(&b[u.len..], true).unwrap().unwrap();
        assert_eq!(u2.kind, Kind::End);
    }

    #[test]
    fn presence_status_and_empty_child() {
        let b = b"<presence from='c@x/r'><show>away</show><status>s3</status><x/></presence>";
        let u = split(b, true).unwrap().unwrap();
        assert_eq!(s(b, &u.child), Some("show"));
        assert_eq!(s(b, &u.body), Some("s3"));
        let b = b"<iq type='result' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>";
        let u = split(b, true).unwrap().unwrap();
        assert_eq!(s(b, &u.child), Some("ping"));
        assert_eq!(s(b, &u.id), Some("p1"));
    }
}
