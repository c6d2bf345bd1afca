//! XEP-0030 Service Discovery (`mod_disco`): the server's identity and the
//! features of every enabled module (disco#info), and its items (disco#items).

use crate::element::Element;
use crate::module::{Identity, IqRequest, IqResult, Module, ServerContext};
use crate::ns;
use crate::stanza::StanzaError;

/// `mod_disco`.
pub struct Disco;

impl Module for Disco {
    fn name(&self) -> &'static str {
        "mod_disco"
    }
    fn disco_features(&self) -> Vec<&'static str> {
        vec![ns::DISCO_INFO, ns::DISCO_ITEMS]
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
            // The server's components (XEP-0114), by domain.
            let mut query = Element::new("query", ns::DISCO_ITEMS);
            for jid in ctx.disco_items() {
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
