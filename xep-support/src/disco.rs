//! XEP-0030 Service Discovery (`mod_disco`): the server's identity and the
//! features of every enabled module (disco#info), and its items (disco#items).
//! With ejabberd's `server_info` option, the server's disco#info also carries
//! XEP-0157 contact addresses (a `http://jabber.org/network/serverinfo`
//! form). The config loader has checked the option (errors with file and
//! line); here entries for other modules than `mod_disco` are left out.

use crate::element::Element;
use crate::module::{Hooks, Identity, IqRequest, IqResult, Module, ServerContext};
use crate::ns;
use crate::stanza::StanzaError;
use serde_yaml_ng::Value;

/// The FORM_TYPE of XEP-0157 contact addresses.
pub const NS_SERVERINFO: &str = "http://jabber.org/network/serverinfo";

/// `mod_disco`.
#[derive(Default)]
pub struct Disco {
    /// XEP-0157 fields (e.g. `abuse-addresses`) and their URIs, in the
    /// order first named; the same name given twice adds its URIs.
    server_info: Vec<(String, Vec<String>)>,
}

impl Disco {
    /// `mod_disco` with its options: `server_info`, a list of
    /// `{modules: all | [MODULE], name: FIELD, urls: [URI]}`. Entries whose
    /// `modules` is neither `all` nor a list naming `mod_disco` belong to
    /// other services' disco#info and are not shown here.
    pub fn from_opts(opts: &Value) -> Disco {
        let mut server_info: Vec<(String, Vec<String>)> = Vec::new();
        let entries = opts
            .get("server_info")
            .and_then(Value::as_sequence)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for entry in entries {
            let for_server = match entry.get("modules") {
                None => true,
                Some(Value::String(s)) => s == "all" || s == "mod_disco",
                Some(Value::Sequence(list)) => list.iter().any(|m| m.as_str() == Some("mod_disco")),
                Some(_) => false,
            };
            let Some(name) = entry.get("name").and_then(Value::as_str) else {
                continue;
            };
            let urls: Vec<String> = match entry.get("urls") {
                Some(Value::Sequence(list)) => list
                    .iter()
                    .filter_map(|u| u.as_str().map(str::to_string))
                    .collect(),
                Some(Value::String(u)) => vec![u.clone()],
                _ => Vec::new(),
            };
            if !for_server {
                continue;
            }
            match server_info.iter_mut().find(|(n, _)| n == name) {
                Some((_, have)) => {
                    for u in urls {
                        if !have.contains(&u) {
                            have.push(u);
                        }
                    }
                }
                None => server_info.push((name.to_string(), urls)),
            }
        }
        Disco { server_info }
    }

    /// The XEP-0157 form, if any address is configured.
    fn server_info_form(&self) -> Option<Element> {
        if self.server_info.is_empty() {
            return None;
        }
        let mut x = Element::new("x", ns::DATA_FORMS)
            .with_attr("type", "result")
            .with_child(
                Element::new("field", ns::DATA_FORMS)
                    .with_attr("var", "FORM_TYPE")
                    .with_attr("type", "hidden")
                    .with_child(Element::new("value", ns::DATA_FORMS).with_text(NS_SERVERINFO)),
            );
        for (name, urls) in &self.server_info {
            let mut field = Element::new("field", ns::DATA_FORMS)
                .with_attr("var", name.as_str())
                .with_attr("type", "list-multi");
            for u in urls {
                field =
                    field.with_child(Element::new("value", ns::DATA_FORMS).with_text(u.as_str()));
            }
            x = x.with_child(field);
        }
        Some(x)
    }
}

impl Module for Disco {
    fn name(&self) -> &'static str {
        "mod_disco"
    }
    fn hooks(&self) -> Hooks {
        Hooks::NONE
    }
    fn disco_features(&self) -> Vec<&'static str> {
        vec![ns::DISCO_INFO, ns::DISCO_ITEMS]
    }
    /// XEP-0157 contact addresses (XEP-0128 extended information).
    fn disco_forms(&self) -> Vec<Element> {
        self.server_info_form().into_iter().collect()
    }
    fn server_iq_namespaces(&self) -> Vec<&'static str> {
        vec![ns::DISCO_INFO, ns::DISCO_ITEMS]
    }
    fn handle_server_iq(&self, ctx: &dyn ServerContext, req: &IqRequest<'_>) -> IqResult {
        if req.is_set || req.payload.name != "query" {
            return Err(StanzaError::bad_request());
        }
        if let Some(node) = req.payload.attr("node") {
            // Nodes belong to modules (e.g. ad-hoc commands).
            if req.payload.ns == ns::DISCO_INFO {
                let (ids, features) = ctx
                    .disco_node_info(req.from, node)
                    .ok_or_else(StanzaError::item_not_found)?;
                let mut query = Element::new("query", ns::DISCO_INFO).with_attr("node", node);
                for id in ids {
                    let mut e = Element::new("identity", ns::DISCO_INFO)
                        .with_attr("category", id.category)
                        .with_attr("type", id.kind);
                    if let Some(name) = id.name {
                        e.set_attr("name", name);
                    }
                    query = query.with_child(e);
                }
                for f in features {
                    query = query
                        .with_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", f));
                }
                return Ok(Some(query));
            }
            let items = ctx
                .disco_node_items(req.from, node)
                .ok_or_else(StanzaError::item_not_found)?;
            let mut query = Element::new("query", ns::DISCO_ITEMS).with_attr("node", node);
            for item in items {
                query = query.with_child(item);
            }
            return Ok(Some(query));
        }
        if req.payload.ns == ns::DISCO_INFO {
            let mut query = info(ctx.disco_identities(), ctx.disco_features());
            for form in ctx.disco_forms() {
                query = query.with_child(form);
            }
            Ok(Some(query))
        } else {
            // The server's components (XEP-0114) and module services
            // (XEP-0045 MUC), by domain.
            let mut query = Element::new("query", ns::DISCO_ITEMS);
            for jid in ctx.disco_items(req.to.domain().as_str()) {
                query =
                    query.with_child(Element::new("item", ns::DISCO_ITEMS).with_attr("jid", jid));
            }
            Ok(Some(query))
        }
    }
    fn account_iq_namespaces(&self) -> Vec<&'static str> {
        vec![ns::DISCO_INFO, ns::DISCO_ITEMS]
    }
    /// disco#info and disco#items of an account's bare JID (XEP-0030 §3.3,
    /// XEP-0163 §6): the account identity, PEP's identity and features, the
    /// PEP nodes the requester may see.
    fn handle_account_iq(&self, ctx: &dyn ServerContext, req: &IqRequest<'_>) -> IqResult {
        if req.is_set || req.payload.name != "query" {
            return Err(StanzaError::bad_request());
        }
        if req.payload.attr("node").is_some() {
            return Err(StanzaError::item_not_found());
        }
        let account = req.account();
        if req.payload.ns == ns::DISCO_INFO {
            Ok(Some(info(
                ctx.account_disco_identities(),
                ctx.account_disco_features(),
            )))
        } else {
            let mut q = Element::new("query", ns::DISCO_ITEMS);
            for item in ctx.account_disco_items(&account, &jid::Jid::from(req.from.clone())) {
                q = q.with_child(item);
            }
            Ok(Some(q))
        }
    }
}

/// A disco#info result (features sorted, duplicates removed).
pub fn info(identities: Vec<Identity>, mut features: Vec<String>) -> Element {
    let mut query = Element::new("query", ns::DISCO_INFO);
    for id in identities {
        let mut e = Element::new("identity", ns::DISCO_INFO)
            .with_attr("category", id.category)
            .with_attr("type", id.kind);
        if let Some(name) = id.name {
            e.set_attr("name", name);
        }
        query = query.with_child(e);
    }
    features.sort();
    features.dedup();
    for f in features {
        query = query.with_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", f));
    }
    query
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_info_form_merges_names_and_skips_other_modules() {
        let opts: Value = serde_yaml_ng::from_str(
            "server_info:\n\
             - modules: all\n  name: abuse-addresses\n  urls: [\"mailto:abuse@example.org\"]\n\
             - modules: [mod_muc]\n  name: admin-addresses\n  urls: [\"xmpp:muc-admin@example.org\"]\n\
             - modules: [mod_disco]\n  name: admin-addresses\n  urls: [\"xmpp:admin@example.org\"]\n\
             - name: abuse-addresses\n  urls: [\"https://example.org/abuse\", \"mailto:abuse@example.org\"]\n",
        )
        .unwrap();
        let d = Disco::from_opts(&opts);
        assert_eq!(
            d.server_info,
            vec![
                (
                    "abuse-addresses".to_string(),
                    vec![
                        "mailto:abuse@example.org".to_string(),
                        "https://example.org/abuse".to_string()
                    ]
                ),
                (
                    "admin-addresses".to_string(),
                    vec!["xmpp:admin@example.org".to_string()]
                ),
            ]
        );
        let form = d.disco_forms().pop().expect("a form");
        let xml = form.to_xml(ns::CLIENT);
        assert!(xml.contains(NS_SERVERINFO), "{xml}");
        assert!(!xml.contains("muc-admin"), "{xml}");
        assert!(Disco::from_opts(&Value::Null).disco_forms().is_empty());
    }
}
