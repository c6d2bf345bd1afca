//! A strict check of the characters the server sends: every byte a test
//! client receives must be UTF-8 text of XML 1.0 `Char`s, and every
//! character reference must name such a character.
//!
//! quick-xml (the test client's splitter) is permissive and would hand a
//! raw U+0001 or `&#xFFFE;` through as text; strict clients (expat, libxml2)
//! drop the stream on them. The test client runs [`check_chars`] on every
//! unit it cuts off the stream, so every integration test asserts that
//! whatever the server writes is well-formed in this respect.

/// Whether `c` is in XML 1.0's `Char` production.
pub fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

/// `Err` describing the first character or character reference in `bytes`
/// that XML 1.0 does not allow (or the first invalid UTF-8).
pub fn check_chars(bytes: &[u8]) -> Result<(), String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
    if let Some((at, c)) = text.char_indices().find(|(_, c)| !is_xml_char(*c)) {
        return Err(format!(
            "raw character U+{:04X} at byte {at}, not allowed in XML 1.0: {text:?}",
            c as u32
        ));
    }
    let mut rest = text;
    while let Some(i) = rest.find("&#") {
        let tail = &rest[i + 2..];
        let (digits, radix) = match tail.strip_prefix('x') {
            Some(hex) => (hex, 16),
            None => (tail, 10),
        };
        let end = digits
            .find(';')
            .ok_or_else(|| format!("unterminated character reference: {text:?}"))?;
        let valid = u32::from_str_radix(&digits[..end], radix)
            .ok()
            .and_then(char::from_u32)
            .is_some_and(is_xml_char);
        if !valid {
            return Err(format!(
                "character reference &#{}; not allowed in XML 1.0: {text:?}",
                &tail[..tail.find(';').unwrap_or(0)]
            ));
        }
        rest = tail;
    }
    Ok(())
}

#[test]
fn the_check_itself() {
    assert!(
        check_chars(b"<m a='&#10;&#x20;'>\t\r\n\xc3\xa9 &#65; &amp;#1; \xef\xbf\xbd</m>").is_ok()
    );
    for bad in [
        &b"<m>\x01</m>"[..],
        b"<m>\x00</m>",
        b"<m a='\x0b'/>",
        b"<m>\xef\xbf\xbe</m>",
        b"<m>\xef\xbf\xbf</m>",
        b"<m>&#1;</m>",
        b"<m a='&#x1F;'/>",
        b"<m>&#xFFFE;</m>",
        b"<m>&#xD800;</m>",
        b"<m>&#1114112;</m>",
        b"<m>&#0;</m>",
        b"<m>&#x;</m>",
        b"<m>\xff</m>",
    ] {
        assert!(
            check_chars(bad).is_err(),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}
