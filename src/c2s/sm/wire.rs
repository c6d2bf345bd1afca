//! The XEP-0198 elements the server writes and the attributes it reads:
//! `<a/>`, `<r/>`, `<failed/>`, resumption ids, `h`.

use xep_support::element::Element;
use xep_support::ns;
use xep_support::stanza::Condition;

/// `<a h='…'/>`.
pub fn a(h: u32) -> Element {
    Element::new("a", ns::SM).with_attr("h", h.to_string())
}

/// `<r/>`.
pub fn r() -> Element {
    Element::new("r", ns::SM)
}

/// `<failed/>` with a stanza error condition and, when known, `h`.
pub fn failed(condition: Condition, h: Option<u32>) -> Element {
    let mut f = Element::new("failed", ns::SM)
        .with_child(Element::new(condition.as_str(), ns::STANZA_ERRORS));
    if let Some(h) = h {
        f.set_attr("h", h.to_string());
    }
    f
}

/// A fresh resumption id: 128 random bits.
pub fn new_id() -> String {
    use rand::Rng;
    let v: u128 = rand::thread_rng().gen();
    format!("{v:032x}")
}

/// Parse an `h` attribute.
pub fn parse_h(el: &Element) -> Option<u32> {
    el.attr("h").and_then(|h| h.trim().parse::<u32>().ok())
}
