//! XEP-0115 entity capabilities of the server itself (`mod_caps`): a `<c/>`
//! stream feature (XEP-0115 §6.3) whose `ver` is the hash of the server's
//! disco#info, and disco#info answered on `NODE#ver`, so a client that has
//! seen this server's features before need not ask again. Clients' own caps
//! (for PEP `+notify`) are read by `mod_pep`.
//!
//! [`caps_hash`] (XEP-0115 §5.1) is the one implementation of the
//! verification string: `mod_pep` uses it to verify clients' hashes.
//!
//! The hash is computed once per module instance, on first use: a
//! `reload_config` builds new modules, so a changed feature set gets a new
//! `ver`.

use std::sync::OnceLock;

use base64::Engine as _;
use sha1::{Digest, Sha1};

use crate::element::Element;
use crate::module::{Hooks, Identity, Module, ServerContext};
use crate::ns;
use jid::FullJid;

/// The node naming this software in the caps element.
pub const NODE: &str = "urn:xmpp:rookery";

/// `mod_caps`.
#[derive(Default)]
pub struct Caps {
    ver: OnceLock<String>,
}

impl Caps {
    /// The server's caps `ver`: XEP-0115 §5.1 over its disco#info.
    pub fn ver(&self, ctx: &dyn ServerContext) -> &str {
        self.ver.get_or_init(|| {
            let mut query = crate::disco::info(ctx.disco_identities(), ctx.disco_features());
            for form in ctx.disco_forms() {
                query = query.with_child(form);
            }
            caps_hash(&query)
        })
    }

    /// The `<c/>` stream feature offered after authentication.
    pub fn stream_feature(&self, ctx: &dyn ServerContext) -> Element {
        Element::new("c", ns::CAPS)
            .with_attr("hash", "sha-1")
            .with_attr("node", NODE)
            .with_attr("ver", self.ver(ctx))
    }
}

impl Module for Caps {
    fn name(&self) -> &'static str {
        "mod_caps"
    }
    fn hooks(&self) -> Hooks {
        Hooks::NONE
    }
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
    /// disco#info on `NODE#ver` is the server's disco#info.
    fn disco_node_info(
        &self,
        ctx: &dyn ServerContext,
        _from: &FullJid,
        node: &str,
    ) -> Option<(Vec<Identity>, Vec<String>)> {
        let ver = node.strip_prefix(NODE)?.strip_prefix('#')?;
        (ver == self.ver(ctx)).then(|| (ctx.disco_identities(), ctx.disco_features()))
    }
}

/// A data form field: var and values.
type Field = (String, Vec<String>);

/// The XEP-0115 §5.1 verification string's SHA-1, base64: what `ver` must be.
pub fn caps_hash(query: &Element) -> String {
    let mut s = String::new();
    let mut ids: Vec<String> = query
        .child_elements()
        .filter(|c| c.is("identity", ns::DISCO_INFO))
        .map(|i| {
            format!(
                "{}/{}/{}/{}",
                i.attr("category").unwrap_or(""),
                i.attr("type").unwrap_or(""),
                i.attr("xml:lang").unwrap_or(""),
                i.attr("name").unwrap_or("")
            )
        })
        .collect();
    ids.sort();
    for i in ids {
        s.push_str(&i);
        s.push('<');
    }
    let mut features: Vec<&str> = query
        .child_elements()
        .filter(|c| c.is("feature", ns::DISCO_INFO))
        .filter_map(|f| f.attr("var"))
        .collect();
    features.sort();
    for f in features {
        s.push_str(f);
        s.push('<');
    }
    let mut forms: Vec<(String, Vec<Field>)> = query
        .child_elements()
        .filter(|c| c.is("x", ns::DATA_FORMS))
        .filter_map(|x| {
            let mut form_type = None;
            let mut fields = Vec::new();
            for f in x.child_elements().filter(|f| f.is("field", ns::DATA_FORMS)) {
                let var = f.attr("var")?.to_string();
                let mut values: Vec<String> = f
                    .child_elements()
                    .filter(|v| v.is("value", ns::DATA_FORMS))
                    .map(|v| v.text())
                    .collect();
                if var == "FORM_TYPE" {
                    form_type = values.first().cloned();
                } else {
                    values.sort();
                    fields.push((var, values));
                }
            }
            fields.sort();
            Some((form_type?, fields))
        })
        .collect();
    forms.sort();
    for (ft, fields) in forms {
        s.push_str(&ft);
        s.push('<');
        for (var, values) in fields {
            s.push_str(&var);
            s.push('<');
            for v in values {
                s.push_str(&v);
                s.push('<');
            }
        }
    }
    base64::engine::general_purpose::STANDARD.encode(Sha1::digest(s.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_hash_of_the_xep_0115_simple_example() {
        let q = Element::new("query", ns::DISCO_INFO)
            .with_child(
                Element::new("identity", ns::DISCO_INFO)
                    .with_attr("category", "client")
                    .with_attr("type", "pc")
                    .with_attr("name", "Exodus 0.9.1"),
            )
            .with_child(
                Element::new("feature", ns::DISCO_INFO)
                    .with_attr("var", "http://jabber.org/protocol/caps"),
            )
            .with_child(
                Element::new("feature", ns::DISCO_INFO)
                    .with_attr("var", "http://jabber.org/protocol/disco#info"),
            )
            .with_child(
                Element::new("feature", ns::DISCO_INFO)
                    .with_attr("var", "http://jabber.org/protocol/disco#items"),
            )
            .with_child(
                Element::new("feature", ns::DISCO_INFO)
                    .with_attr("var", "http://jabber.org/protocol/muc"),
            );
        assert_eq!(caps_hash(&q), "QgayPKawpkPSDYmwT/WM94uAlu0=");
    }
}
