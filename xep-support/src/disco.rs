//! XEP-0030 Service Discovery (`mod_disco`): the server's identity and the
//! features of every enabled module (disco#info), and its items (disco#items).

use crate::element::Element;
use crate::module::{IqRequest, IqResult, Module, ServerContext};
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
            let mut query = Element::new("query", ns::DISCO_INFO);
            for id in ctx.disco_identities() {
                let mut e = Element::new("identity", ns::DISCO_INFO)
                    .with_attr("category", id.category)
                    .with_attr("type", id.kind);
                if let Some(name) = id.name {
                    e.set_attr("name", name);
                }
                query = query.with_child(e);
            }
            let mut features = ctx.disco_features();
            features.sort();
            features.dedup();
            for f in features {
                query =
                    query.with_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", f));
            }
            Ok(Some(query))
        } else {
            // No components yet: an empty item list.
            Ok(Some(Element::new("query", ns::DISCO_ITEMS)))
        }
    }
}
