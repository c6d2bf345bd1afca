//! The XML 1.0 (Fifth Edition) and Namespaces in XML 1.0 well-formedness
//! checks that quick-xml leaves to its user. [`super::reader`] runs every
//! event through them before it builds anything from it:
//!
//! - characters ([`chars`]): the bytes are UTF-8 and every character is an
//!   XML `Char` — no C0 control other than tab, line feed and carriage
//!   return, no U+FFFE or U+FFFF (surrogates cannot be UTF-8) — in text,
//!   CDATA, names and attribute values; a character reference must name a
//!   `Char` too ([`reference`]);
//! - start tags ([`start_tag`]): `Name (S Attribute)* S?` with
//!   `Attribute ::= Name S? '=' S? AttValue`, whitespace between
//!   attributes, a quoted value holding no `<`, every name a QName
//!   (`NCName` or `NCName:NCName`), and at most `max_attrs` attributes;
//! - references: `&#N;` and `&#xH;` with digits only, or one of the five
//!   predefined entities; any other well-formed entity reference is
//!   restricted XML (RFC 6120 §11.1), anything else not well-formed;
//! - character data ([`text`], [`cdata`]): no `]]>` outside CDATA; line
//!   ends normalised (§2.11), attribute values normalised as CDATA
//!   attributes are (§3.3.3, [`attr_value`]);
//! - namespace declarations ([`check_binding`]): `xml` only for its own
//!   namespace, `xmlns` never, no empty prefixed declaration.
//!
//! Namespace scope, duplicate attributes after resolution and the depth
//! limit need the reader's state and are checked there.
//!
//! Invariants: the fast paths look at each byte once or twice (a word-wide
//! test over 16-byte chunks, then a byte loop only in chunks holding a
//! byte below 0x20 or 0xEF) and allocate nothing; a copy is made only where
//! a value changes (a reference, a line end, whitespace in an attribute).
//! No message built here quotes more than a few characters of the input,
//! and never a character that is not an XML `Char`.

use std::borrow::Cow;
use std::ops::Range;

use super::reader::XmlError;

/// The namespace that `xmlns` and `xmlns:*` attributes are in (never declared).
pub const NS_XMLNS: &str = "http://www.w3.org/2000/xmlns/";
/// The namespace bound to the `xml` prefix.
pub const NS_XML: &str = "http://www.w3.org/XML/1998/namespace";

fn nwf(why: impl Into<String>) -> XmlError {
    XmlError::NotWellFormed(why.into())
}

/// At most 32 characters of `s`, each an XML `Char` (others replaced), for
/// error messages that go back to the peer.
pub fn excerpt(s: &str) -> String {
    printable(s, 32)
}

/// At most `max` characters of `s`, each an XML `Char` (others replaced).
pub fn printable(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .take(max)
        .map(|c| if is_xml_char(c) { c } else { '\u{FFFD}' })
        .collect();
    if s.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

/// Whether `c` matches XML 1.0's `Char` production.
#[inline]
pub fn is_xml_char(c: char) -> bool {
    matches!(c as u32, 0x9 | 0xA | 0xD | 0x20..=0xD7FF | 0xE000..=0xFFFD | 0x10000..=0x10FFFF)
}

/// Checks that `bytes` are UTF-8 made only of XML `Char`s, and returns them
/// as a string.
#[inline]
pub fn chars(bytes: &[u8]) -> Result<&str, XmlError> {
    let s = std::str::from_utf8(bytes)
        .map_err(|e| nwf(format!("invalid UTF-8 at byte {}", e.valid_up_to())))?;
    // Every character outside `Char` in valid UTF-8 is a byte below 0x20,
    // or starts with 0xEF (U+FFFE is EF BF BE, U+FFFF is EF BF BF). The
    // chunk test has no branch inside, so the compiler vectorises it.
    const CHUNK: usize = 16;
    let mut chunks = bytes.chunks_exact(CHUNK);
    let mut at = 0;
    for chunk in &mut chunks {
        let mut special = false;
        for &b in chunk {
            special |= (b < 0x20) | (b == 0xEF);
        }
        if special {
            check_bytes(bytes, at, at + CHUNK)?;
        }
        at += CHUNK;
    }
    check_bytes(bytes, at, bytes.len())?;
    Ok(s)
}

/// The byte-wise test of `bytes[from..to]` (UTF-8 already checked).
#[inline(never)]
fn check_bytes(bytes: &[u8], from: usize, to: usize) -> Result<(), XmlError> {
    for i in from..to {
        let b = bytes[i];
        if b < 0x20 {
            if !matches!(b, b'\t' | b'\n' | b'\r') {
                return Err(nwf(format!("character U+{b:04X} is not allowed in XML")));
            }
        } else if b == 0xEF
            && bytes.get(i + 1) == Some(&0xBF)
            && matches!(bytes.get(i + 2), Some(0xBE | 0xBF))
        {
            let last = if bytes[i + 2] == 0xBE { 'E' } else { 'F' };
            return Err(nwf(format!("character U+FFF{last} is not allowed in XML")));
        }
    }
    Ok(())
}

fn is_name_start(c: char) -> bool {
    matches!(c,
        'A'..='Z' | '_' | 'a'..='z' | '\u{C0}'..='\u{D6}' | '\u{D8}'..='\u{F6}'
        | '\u{F8}'..='\u{2FF}' | '\u{370}'..='\u{37D}' | '\u{37F}'..='\u{1FFF}'
        | '\u{200C}'..='\u{200D}' | '\u{2070}'..='\u{218F}' | '\u{2C00}'..='\u{2FEF}'
        | '\u{3001}'..='\u{D7FF}' | '\u{F900}'..='\u{FDCF}' | '\u{FDF0}'..='\u{FFFD}'
        | '\u{10000}'..='\u{EFFFF}')
}

fn is_name_char(c: char) -> bool {
    is_name_start(c)
        || matches!(c, '-' | '.' | '0'..='9' | '\u{B7}' | '\u{300}'..='\u{36F}' | '\u{203F}'..='\u{2040}')
}

/// Whether `s` is an `NCName` (an XML `Name` without colons).
pub fn is_ncname(s: &str) -> bool {
    let b = s.as_bytes();
    match b.first() {
        None => false,
        Some(_) if b.is_ascii() => {
            (b[0].is_ascii_alphabetic() || b[0] == b'_')
                && b[1..]
                    .iter()
                    .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
        }
        Some(_) => {
            let mut it = s.chars();
            it.next().is_some_and(is_name_start) && it.all(is_name_char)
        }
    }
}

/// Whether `s` is an XML `Name` (colons allowed anywhere).
fn is_name(s: &str) -> bool {
    let mut it = s.chars();
    it.next().is_some_and(|c| c == ':' || is_name_start(c))
        && it.all(|c| c == ':' || is_name_char(c))
}

/// Where the colon of a QName is in `name` (`None`: no prefix); an error
/// if `name` is not a QName.
fn qname(name: &str, what: &str) -> Result<Option<usize>, XmlError> {
    let ok = match memchr::memchr(b':', name.as_bytes()) {
        None => is_ncname(name).then_some(None),
        Some(i) => (is_ncname(&name[..i]) && is_ncname(&name[i + 1..])).then_some(Some(i)),
    };
    ok.ok_or_else(|| nwf(format!("invalid {what} name '{}'", excerpt(name))))
}

/// A name in a start tag: where it is in the tag, and where its colon is.
#[derive(Debug, Clone)]
pub struct TagName {
    pub range: Range<usize>,
    pub colon: Option<usize>,
}

impl TagName {
    /// The prefix (empty when none) and the local part.
    pub fn split<'a>(&self, tag: &'a str) -> (&'a str, &'a str) {
        match self.colon {
            Some(c) => (&tag[self.range.start..c], &tag[c + 1..self.range.end]),
            None => ("", &tag[self.range.clone()]),
        }
    }
}

/// One attribute of a start tag: its name, and its value as written
/// (between the quotes, references not yet replaced).
#[derive(Debug, Clone)]
pub struct RawAttr {
    pub name: TagName,
    pub value: Range<usize>,
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Parses the content of a start tag — what lies between `<` and `>`,
/// without the `/` of an empty-element tag, already checked by [`chars`] —
/// into the element's name and its attributes (in `attrs`, cleared first).
/// More than `max_attrs` attributes (namespace declarations included) is
/// a [`XmlError::Limit`].
pub fn start_tag(
    tag: &str,
    max_attrs: usize,
    attrs: &mut Vec<RawAttr>,
) -> Result<TagName, XmlError> {
    let b = tag.as_bytes();
    attrs.clear();
    let mut i = b.iter().position(|&c| is_space(c)).unwrap_or(b.len());
    let name = TagName {
        colon: qname(&tag[..i], "element")?,
        range: 0..i,
    };
    loop {
        let gap = i;
        while i < b.len() && is_space(b[i]) {
            i += 1;
        }
        if i == b.len() {
            return Ok(name);
        }
        if i == gap {
            return Err(nwf("attributes must be separated by whitespace"));
        }
        let start = i;
        while i < b.len() && !is_space(b[i]) && b[i] != b'=' {
            i += 1;
        }
        let attr_name = TagName {
            colon: qname(&tag[start..i], "attribute")?.map(|c| start + c),
            range: start..i,
        };
        while i < b.len() && is_space(b[i]) {
            i += 1;
        }
        if b.get(i) != Some(&b'=') {
            return Err(nwf(format!(
                "attribute '{}' has no value",
                excerpt(&tag[attr_name.range])
            )));
        }
        i += 1;
        while i < b.len() && is_space(b[i]) {
            i += 1;
        }
        let quote = match b.get(i) {
            Some(&q @ (b'\'' | b'"')) => q,
            _ => return Err(nwf("attribute value not in quotes")),
        };
        i += 1;
        let len =
            memchr::memchr(quote, &b[i..]).ok_or_else(|| nwf("unterminated attribute value"))?;
        let value = i..i + len;
        i += len + 1;
        if memchr::memchr(b'<', &b[value.clone()]).is_some() {
            return Err(nwf("'<' in an attribute value"));
        }
        if attrs.len() == max_attrs {
            return Err(XmlError::Limit(format!(
                "more than {max_attrs} attributes on one element"
            )));
        }
        attrs.push(RawAttr {
            name: attr_name,
            value,
        });
    }
}

/// The character a reference stands for; `name` is what lies between `&`
/// and `;`.
pub fn reference(name: &str) -> Result<char, XmlError> {
    if let Some(number) = name.strip_prefix('#') {
        let (digits, radix) = match number.strip_prefix('x') {
            Some(hex) => (hex, 16),
            None => (number, 10),
        };
        let well_formed = !digits.is_empty()
            && digits.bytes().all(|c| {
                if radix == 16 {
                    c.is_ascii_hexdigit()
                } else {
                    c.is_ascii_digit()
                }
            });
        let c = well_formed
            .then(|| u32::from_str_radix(digits, radix).ok())
            .flatten()
            .and_then(char::from_u32);
        return match c {
            Some(c) if is_xml_char(c) => Ok(c),
            _ => Err(nwf(format!(
                "character reference &{}; is not an XML character",
                excerpt(name)
            ))),
        };
    }
    match name {
        "amp" => Ok('&'),
        "lt" => Ok('<'),
        "gt" => Ok('>'),
        "apos" => Ok('\''),
        "quot" => Ok('"'),
        _ if is_name(name) => Err(XmlError::Restricted(format!(
            "entity reference &{};",
            excerpt(name)
        ))),
        _ => Err(nwf(format!("malformed reference &{};", excerpt(name)))),
    }
}

/// The value of an attribute written as `raw`: references replaced, and
/// each tab, line feed, carriage return and CR LF pair replaced by a space
/// (XML 1.0 §3.3.3 for CDATA attributes, the only kind without a DTD).
pub fn attr_value(raw: &str) -> Result<Cow<'_, str>, XmlError> {
    let special = |c: u8| matches!(c, b'&' | b'\t' | b'\n' | b'\r');
    if !raw.bytes().any(special) {
        return Ok(Cow::Borrowed(raw));
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(p) = rest.bytes().position(special) {
        out.push_str(&rest[..p]);
        let after = &rest[p + 1..];
        if rest.as_bytes()[p] == b'&' {
            let end = memchr::memchr(b';', after.as_bytes())
                .ok_or_else(|| nwf("'&' without ';' in an attribute value"))?;
            out.push(reference(&after[..end])?);
            rest = &after[end + 1..];
        } else {
            out.push(' ');
            rest = match (rest.as_bytes()[p], after.as_bytes().first()) {
                (b'\r', Some(b'\n')) => &after[1..],
                _ => after,
            };
        }
    }
    out.push_str(rest);
    Ok(Cow::Owned(out))
}

/// Line ends normalised (XML 1.0 §2.11): CR LF and a lone CR become LF.
fn line_ends(s: &str) -> Cow<'_, str> {
    if memchr::memchr(b'\r', s.as_bytes()).is_none() {
        return Cow::Borrowed(s);
    }
    Cow::Owned(s.replace("\r\n", "\n").replace('\r', "\n"))
}

/// Character data between markup (references are events of their own).
pub fn text(raw: &[u8]) -> Result<Cow<'_, str>, XmlError> {
    let s = chars(raw)?;
    for p in memchr::memchr_iter(b'>', raw) {
        if p >= 2 && &raw[p - 2..p] == b"]]" {
            return Err(nwf("']]>' in text"));
        }
    }
    Ok(line_ends(s))
}

/// The content of a CDATA section.
pub fn cdata(raw: &[u8]) -> Result<Cow<'_, str>, XmlError> {
    Ok(line_ends(chars(raw)?))
}

/// Checks a namespace declaration of `prefix` (empty: the default
/// namespace) for `uri` against Namespaces in XML 1.0 §3.
pub fn check_binding(prefix: &str, uri: &str) -> Result<(), XmlError> {
    let why = match prefix {
        "xmlns" => "the prefix xmlns must not be declared",
        "xml" if uri != NS_XML => "the prefix xml is only for its own namespace",
        "xml" => return Ok(()),
        _ if uri == NS_XML => "the XML namespace is bound to the prefix xml only",
        _ if uri == NS_XMLNS => "the xmlns namespace must not be declared",
        "" => return Ok(()),
        _ if uri.is_empty() => "a prefix cannot be undeclared in XML 1.0",
        _ => return Ok(()),
    };
    Err(nwf(why))
}

/// Checks the content of an XML declaration (`xml version='1.0' …`, as
/// quick-xml gives it): version 1.x first, then an optional encoding, then
/// an optional standalone. Another encoding than UTF-8 is
/// [`XmlError::UnsupportedEncoding`].
pub fn xml_decl(content: &[u8]) -> Result<(), XmlError> {
    let content = chars(content)?;
    let mut attrs = Vec::new();
    let name = start_tag(content, 3, &mut attrs).map_err(|_| nwf("malformed XML declaration"))?;
    if &content[name.range] != "xml" {
        return Err(nwf("malformed XML declaration"));
    }
    let mut expected = ["version", "encoding", "standalone"].iter();
    for (n, a) in attrs.iter().enumerate() {
        let key = &content[a.name.range.clone()];
        let value = &content[a.value.clone()];
        if !expected.any(|e| *e == key) || (n == 0 && key != "version") {
            return Err(nwf("malformed XML declaration"));
        }
        let ok = match key {
            "version" => value
                .strip_prefix("1.")
                .is_some_and(|d| !d.is_empty() && d.bytes().all(|c| c.is_ascii_digit())),
            "encoding" => {
                if !value.eq_ignore_ascii_case("utf-8") {
                    return Err(XmlError::UnsupportedEncoding);
                }
                true
            }
            _ => value == "yes" || value == "no",
        };
        if !ok {
            return Err(nwf(format!("bad {key} in the XML declaration")));
        }
    }
    if attrs.is_empty() {
        return Err(nwf("XML declaration without a version"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(r: Result<impl std::fmt::Debug, XmlError>) -> &'static str {
        match r {
            Ok(_) => "ok",
            Err(e) => e.condition().map_or("none", |c| c.as_str()),
        }
    }

    #[test]
    fn chars_refuses_controls_and_non_characters() {
        assert_eq!(chars(b"hello \t\r\n world").unwrap(), "hello \t\r\n world");
        assert!(chars("é€😀\u{FFFD}\u{E000}\u{10FFFF}".as_bytes()).is_ok());
        for bad in [0u32, 1, 8, 0xB, 0xC, 0xE, 0x1F, 0xFFFE, 0xFFFF] {
            let c = char::from_u32(bad).unwrap();
            // At every offset, so both the chunk test and the tail see it.
            for pad in 0..40 {
                let s = format!("{}{c}{}", "a".repeat(pad), "b".repeat(40 - pad));
                assert_eq!(
                    cond(chars(s.as_bytes())),
                    "not-well-formed",
                    "U+{bad:04X} at {pad}"
                );
            }
        }
        // Invalid UTF-8: a lone continuation byte, a truncated sequence, an
        // encoded surrogate (ED A0 80), an overlong form.
        for bad in [&b"a\x80b"[..], b"ab\xE2\x82", b"\xED\xA0\x80", b"\xC0\xAF"] {
            assert_eq!(cond(chars(bad)), "not-well-formed", "{bad:?}");
        }
        // Characters that share the lead byte EF are fine.
        assert!(chars("\u{FFFD}\u{FEFF}\u{F000}".as_bytes()).is_ok());
    }

    #[test]
    fn references() {
        assert_eq!(reference("#65").unwrap(), 'A');
        assert_eq!(reference("#x41").unwrap(), 'A');
        assert_eq!(reference("#x0041").unwrap(), 'A');
        assert_eq!(reference("#0000000000000000065").unwrap(), 'A');
        assert_eq!(reference("#x10FFFF").unwrap(), '\u{10FFFF}');
        assert_eq!(reference("#9").unwrap(), '\t');
        assert_eq!(reference("lt").unwrap(), '<');
        for bad in [
            "#0",
            "#1",
            "#x1",
            "#x0B",
            "#12",
            "#x1F",
            "#xFFFE",
            "#65534",
            "#xFFFF",
            "#65535",
            "#xD800",
            "#55296",
            "#xDFFF",
            "#x110000",
            "#99999999999",
            "#",
            "#x",
            "#X41",
            "#x+41",
            "#+65",
            "#-1",
            "# 65",
            "#6 5",
            "#1a",
            "#xg",
            "",
            "1abc",
            "a b",
        ] {
            assert_eq!(cond(reference(bad)), "not-well-formed", "&{bad};");
        }
        assert_eq!(cond(reference("nbsp")), "restricted-xml");
        assert_eq!(cond(reference("a:b")), "restricted-xml");
    }

    #[test]
    fn start_tags() {
        let mut attrs = Vec::new();
        let tag = "message to='a@b' xml:lang=\"en\"\n\ttype = 'chat' ";
        let name = start_tag(tag, 100, &mut attrs).unwrap();
        assert_eq!(&tag[name.range.clone()], "message");
        let got: Vec<(&str, &str)> = attrs
            .iter()
            .map(|a| (&tag[a.name.range.clone()], &tag[a.value.clone()]))
            .collect();
        assert_eq!(got, [("to", "a@b"), ("xml:lang", "en"), ("type", "chat")]);
        assert_eq!(attrs[1].name.split(tag), ("xml", "lang"));
        assert_eq!(cond(start_tag("a b='>'", 100, &mut attrs)), "ok");
        for bad in [
            "message a='1'b='2'",
            "message a='<![CDATA[y]]>'",
            "message a='<'",
            "a b",
            "a b=",
            "a b=1",
            "a b='1",
            "a ='1'",
            "a b='1' /",
            "",
            " a",
            "1a",
            "-a",
            ".a",
            "a:b:c",
            ":a",
            "a:",
            "a b:c:d='1'",
            "a :b='1'",
            "a b:='1'",
            "a$ b='1'",
            "a b$='1'",
        ] {
            assert_eq!(
                cond(start_tag(bad, 100, &mut attrs)),
                "not-well-formed",
                "<{bad}>"
            );
        }
        // Combining characters and the middle dot are name characters, but
        // cannot start a name.
        assert_eq!(
            cond(start_tag("a\u{B7}b c\u{300}=''", 100, &mut attrs)),
            "ok"
        );
        assert_eq!(
            cond(start_tag("\u{B7}a", 100, &mut attrs)),
            "not-well-formed"
        );
        assert_eq!(
            cond(start_tag("a \u{300}b=''", 100, &mut attrs)),
            "not-well-formed"
        );
        assert_eq!(
            cond(start_tag("élan ñ='1' 名前='2'", 100, &mut attrs)),
            "ok"
        );
        let many: String = (0..101).map(|i| format!(" a{i}='x'")).collect();
        assert_eq!(
            cond(start_tag(&format!("a{many}"), 100, &mut attrs)),
            "policy-violation"
        );
        assert_eq!(cond(start_tag(&format!("a{many}"), 101, &mut attrs)), "ok");
    }

    #[test]
    fn attribute_values() {
        assert!(matches!(attr_value("plain"), Ok(Cow::Borrowed("plain"))));
        assert_eq!(attr_value("a &amp; b &#65;&#x42;").unwrap(), "a & b AB");
        assert_eq!(attr_value("a\tb\nc\r\nd\re").unwrap(), "a b c d e");
        assert_eq!(attr_value("a&#10;b&#9;c&#13;").unwrap(), "a\nb\tc\r");
        assert_eq!(cond(attr_value("a & b")), "not-well-formed");
        assert_eq!(cond(attr_value("a &amp b")), "not-well-formed");
        assert_eq!(cond(attr_value("&#1;")), "not-well-formed");
        assert_eq!(cond(attr_value("&#xFFFE;")), "not-well-formed");
        assert_eq!(cond(attr_value("&foo;")), "restricted-xml");
    }

    #[test]
    fn text_and_cdata() {
        assert_eq!(text(b"a\r\nb\rc\nd").unwrap(), "a\nb\nc\nd");
        assert_eq!(text(b"a > b ]] >").unwrap(), "a > b ]] >");
        assert_eq!(cond(text(b"a ]]> b")), "not-well-formed");
        assert_eq!(cond(text(b"\x01")), "not-well-formed");
        assert_eq!(cdata(b"<&]]\r\n").unwrap(), "<&]]\n");
        assert_eq!(cond(cdata("\u{FFFF}".as_bytes())), "not-well-formed");
    }

    #[test]
    fn bindings() {
        assert!(check_binding("", "jabber:client").is_ok());
        assert!(check_binding("", "").is_ok());
        assert!(check_binding("xml", NS_XML).is_ok());
        for (p, u) in [
            ("xml", "urn:other"),
            ("xmlns", NS_XMLNS),
            ("xmlns", "urn:x"),
            ("p", NS_XML),
            ("", NS_XML),
            ("p", NS_XMLNS),
            ("", NS_XMLNS),
            ("p", ""),
        ] {
            assert_eq!(
                cond(check_binding(p, u)),
                "not-well-formed",
                "xmlns:{p}='{u}'"
            );
        }
    }

    #[test]
    fn xml_declarations() {
        for ok in [
            "xml version='1.0'",
            "xml version=\"1.0\" encoding='UTF-8'",
            "xml version='1.1' encoding='utf-8' standalone='yes'",
            "xml version='1.0' standalone='no'",
        ] {
            assert!(xml_decl(ok.as_bytes()).is_ok(), "{ok}");
        }
        for bad in [
            "xml",
            "xml encoding='UTF-8'",
            "xml version='2.0'",
            "xml version='1.'",
            "xml version='1.0' standalone='maybe'",
            "xml version='1.0' standalone='yes' encoding='UTF-8'",
            "xml version='1.0' foo='bar'",
            "xml version='1.0'encoding='UTF-8'",
        ] {
            assert_eq!(cond(xml_decl(bad.as_bytes())), "not-well-formed", "{bad}");
        }
        assert_eq!(
            cond(xml_decl(b"xml version='1.0' encoding='ISO-8859-1'")),
            "unsupported-encoding"
        );
    }
}
