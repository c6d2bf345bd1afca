//! Repair of stored XML text that holds characters XML 1.0 does not allow.
//!
//! Earlier versions of Rookery accepted and stored U+0001 and friends (raw,
//! or as character references such as `&#1;` and `&#xFFFE;`) in offline
//! messages, pending subscription requests, archives and rooms. A strict
//! reader refuses such text, which would lose the message; [`repair`]
//! replaces each such character or reference by U+FFFD first, so the rest
//! is delivered.
//!
//! Invariants: text without a forbidden character or reference is returned
//! borrowed and unchanged after one byte scan; the repaired text holds no
//! character outside XML 1.0's `Char` production, raw or referenced; every
//! other byte (markup, valid references, malformed references) is kept as
//! it was, so the reader still judges the rest.

use std::borrow::Cow;

use xep_support::element::is_xml_char;

/// `xml` with every forbidden character and character reference replaced
/// by U+FFFD, and how many were replaced.
pub fn repair(xml: &str) -> (Cow<'_, str>, usize) {
    let bytes = xml.as_bytes();
    // Fast path: nothing that could be a forbidden character or reference.
    let suspicious = |i: usize, b: u8| {
        (b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r'))
            || (b == 0xEF && bytes.get(i + 1) == Some(&0xBF))
            || (b == b'&' && bytes.get(i + 1) == Some(&b'#'))
    };
    let Some(first) = bytes
        .iter()
        .enumerate()
        .position(|(i, &b)| suspicious(i, b))
    else {
        return (Cow::Borrowed(xml), 0);
    };
    let mut out = String::with_capacity(xml.len());
    out.push_str(&xml[..first]);
    let mut replaced = 0;
    let mut rest = &xml[first..];
    while let Some(c) = rest.chars().next() {
        if c == '&' {
            if let Some((len, valid)) = char_ref(rest) {
                if valid {
                    out.push_str(&rest[..len]);
                } else {
                    out.push('\u{FFFD}');
                    replaced += 1;
                }
                rest = &rest[len..];
                continue;
            }
        }
        if is_xml_char(c) {
            out.push(c);
        } else {
            out.push('\u{FFFD}');
            replaced += 1;
        }
        rest = &rest[c.len_utf8()..];
    }
    (Cow::Owned(out), replaced)
}

/// If `s` starts with a character reference (`&#N;` or `&#xH;`): its length
/// and whether it names a character XML 1.0 allows.
fn char_ref(s: &str) -> Option<(usize, bool)> {
    let body = s.strip_prefix("&#")?;
    let (digits, radix, skip) = match body.strip_prefix('x') {
        Some(hex) => (hex, 16, 3),
        None => (body, 10, 2),
    };
    let n = digits
        .bytes()
        .take_while(|b| (*b as char).is_digit(radix))
        .count();
    if n == 0 || digits.as_bytes().get(n) != Some(&b';') {
        return None; // not a reference: left to the reader
    }
    let valid = u32::from_str_radix(&digits[..n], radix)
        .ok()
        .and_then(char::from_u32)
        .is_some_and(is_xml_char);
    Some((skip + n + 1, valid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_text_is_borrowed() {
        for clean in [
            "<message><body>a &amp; b &#13;&#9;&#10;&#x20;&#65;\t\n\r é \u{FFFD} 😀</body></message>",
            "",
            "&#",
            "&#x;",
        ] {
            let (out, n) = repair(clean);
            assert_eq!((out.as_ref(), n), (clean, 0));
        }
        assert!(matches!(
            repair("<message><body>hi &amp; bye</body></message>").0,
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn replaces_raw_and_referenced_forbidden_characters() {
        let (out, n) = repair(
            "<m a='x\u{1}&#2;'><b>1\u{0}2\u{B}3\u{FFFE}4\u{FFFF}5&#1;6&#x1F;7&#xFFFE;8&#xfffF;9\
             &#65535;a&#0;b&#xD800;c&#1114112;d&#99999999999999999999;e</b></m>",
        );
        assert_eq!(
            out,
            "<m a='x\u{FFFD}\u{FFFD}'><b>1\u{FFFD}2\u{FFFD}3\u{FFFD}4\u{FFFD}5\u{FFFD}6\u{FFFD}7\
             \u{FFFD}8\u{FFFD}9\u{FFFD}a\u{FFFD}b\u{FFFD}c\u{FFFD}d\u{FFFD}e</b></m>"
        );
        assert_eq!(n, 15);
    }

    #[test]
    fn keeps_what_is_not_a_reference() {
        // Malformed references are the reader's business; `&amp;#1;` is text.
        let (out, n) = repair("&#1 &#x; &amp;#1; &#65;\u{1}");
        assert_eq!((out.as_ref(), n), ("&#1 &#x; &amp;#1; &#65;\u{FFFD}", 1));
        // U+EFFF..U+FFFD share the 0xEF lead byte and are kept.
        let (out, n) = repair("\u{FFBD}\u{FFFD}\u{FEFF}\u{1}");
        assert_eq!((out.as_ref(), n), ("\u{FFBD}\u{FFFD}\u{FEFF}\u{FFFD}", 1));
    }
}
