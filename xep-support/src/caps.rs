//! XEP-0115 entity capabilities of the server itself (`mod_caps`): a `<c/>`
//! stream feature (XEP-0115 §6.3) whose `ver` is the hash of the server's
//! disco#info, and disco#info answered on `NODE#ver`, so a client that has
//! seen this server's features before need not ask again. Clients' own caps
//! (for PEP `+notify`) are read by `mod_pep`.
//!
//! The hash is computed once per module instance, on first use: a
//! `reload_config` builds new modules, so a changed feature set gets a new
//! `ver`.

use std::sync::OnceLock;

use crate::element::Element;
use crate::module::{Identity, Module, ServerContext};
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
            crate::pep::caps_hash(&query)
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
