//! What XEP-0060 services share about data forms and errors: reading a
//! submitted form's fields, building form fields, and pubsub-specific error
//! conditions. Used by the `mod_pubsub` service (this folder) and by
//! `mod_pep` (`pep.rs`), so both read forms and word errors the same way.
//!
//! Invariants: [`form_fields`] keeps every `<field var=..>` of a form with
//! its values in order (a field without values maps to an empty list);
//! [`pubsub_error`] always carries the condition element in
//! `http://jabber.org/protocol/pubsub#errors`.

use std::collections::HashMap;

use crate::element::Element;
use crate::ns;
use crate::stanza::{Condition, ErrorType, StanzaError};

/// A stanza error with a XEP-0060 application condition (§7, §8: e.g.
/// `<conflict/>` with `<precondition-not-met/>`).
pub fn pubsub_error(kind: ErrorType, condition: Condition, app: &str) -> StanzaError {
    StanzaError::new(kind, condition).with_app(Element::new(app, ns::PUBSUB_ERRORS))
}

/// The `node` attribute an operation needs (`bad-request` +
/// `nodeid-required` when missing or empty).
pub fn node_name(op: &Element) -> Result<&str, StanzaError> {
    op.attr("node")
        .filter(|n| !n.is_empty())
        .ok_or_else(|| pubsub_error(ErrorType::Modify, Condition::BadRequest, "nodeid-required"))
}

/// The value of each field of a submitted data form, by `var`.
pub fn form_fields(x: &Element) -> HashMap<String, Vec<String>> {
    x.child_elements()
        .filter(|f| f.is("field", ns::DATA_FORMS))
        .filter_map(|f| {
            let values = f
                .child_elements()
                .filter(|v| v.is("value", ns::DATA_FORMS))
                .map(|v| v.text())
                .collect();
            Some((f.attr("var")?.to_string(), values))
        })
        .collect()
}

/// A form field of `kind` (`""`: no type attribute) with these values.
pub fn field(var: &str, kind: &str, values: &[&str]) -> Element {
    let mut f = Element::new("field", ns::DATA_FORMS).with_attr("var", var);
    if !kind.is_empty() {
        f.set_attr("type", kind);
    }
    for v in values {
        f = f.with_child(Element::new("value", ns::DATA_FORMS).with_text(*v));
    }
    f
}

/// A `list-single` field offering `options`, with `value` chosen.
pub fn list_field(var: &str, options: &[&str], value: &str) -> Element {
    let mut f = field(var, "list-single", &[]);
    for o in options {
        f = f.with_child(
            Element::new("option", ns::DATA_FORMS)
                .with_attr("label", *o)
                .with_child(Element::new("value", ns::DATA_FORMS).with_text(*o)),
        );
    }
    f.with_child(Element::new("value", ns::DATA_FORMS).with_text(value))
}

/// A form (`type` form, result or submit) whose first field is the hidden
/// `FORM_TYPE`.
pub fn form(kind: &str, form_type: &str) -> Element {
    Element::new("x", ns::DATA_FORMS)
        .with_attr("type", kind)
        .with_child(field("FORM_TYPE", "hidden", &[form_type]))
}

/// A data-form boolean (`1`/`true` or `0`/`false`); `None` for anything else.
pub fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

/// A boolean as a form writes it.
pub fn bool_value(b: bool) -> &'static str {
    if b {
        "1"
    } else {
        "0"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_and_writes_them_back() {
        let x = form("submit", "urn:t")
            .with_child(field("a", "", &["1", "2"]))
            .with_child(field("b", "boolean", &[]));
        let f = form_fields(&x);
        assert_eq!(f["FORM_TYPE"], vec!["urn:t".to_string()]);
        assert_eq!(f["a"], vec!["1".to_string(), "2".to_string()]);
        assert!(f["b"].is_empty());
        assert_eq!(parse_bool("true"), Some(true));
        assert_eq!(parse_bool("yes"), None);
        let l = list_field("m", &["x", "y"], "y");
        assert_eq!(l.child_elements().count(), 3);
        let e = pubsub_error(
            ErrorType::Cancel,
            Condition::Conflict,
            "precondition-not-met",
        );
        assert_eq!(e.app.unwrap().ns, ns::PUBSUB_ERRORS);
    }
}
