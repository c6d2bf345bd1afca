//! XEP-0049 Private XML Storage (`mod_private`): an account keeps XML
//! fragments on its server, one per namespace (bookmarks `storage:bookmarks`,
//! Gajim's `roster:delimiter`, mcabber's `storage:rosternotes`...). Stored
//! in the module's key/value space under the fragment's namespace.
//!
//! A [`PrivateHook`] (the XEP-0402 bookmarks bridge, `bookmarks.rs`) is told
//! of each fragment stored; this module does not know what it does.

use jid::BareJid;

use crate::element::Element;
use crate::module::{Hooks, IqRequest, IqResult, Module, ServerContext};
use crate::ns;
use crate::stanza::StanzaError;

/// The module's name (its key/value space).
pub const MODULE: &str = "mod_private";

/// `mod_private`.
#[derive(Default)]
pub struct Private {
    /// Told of each fragment stored (with `mod_pep`: XEP-0048 bookmarks are
    /// mirrored to the XEP-0402 PEP node).
    pub hook: Option<std::sync::Arc<dyn PrivateHook>>,
}

/// A bridge from private storage to another module.
pub trait PrivateHook: Send + Sync {
    /// `fragment` was stored for `account`; an error fails the client's iq
    /// (the fragment stays stored).
    fn stored(
        &self,
        ctx: &dyn ServerContext,
        account: &BareJid,
        fragment: &Element,
    ) -> Result<(), StanzaError>;
}

/// Namespaces a client may not store under (the protocol's own and stanza namespaces).
fn reserved(namespace: &str) -> bool {
    namespace.is_empty()
        || namespace == ns::PRIVATE
        || namespace == ns::CLIENT
        || namespace == ns::SERVER
}

impl Module for Private {
    fn name(&self) -> &'static str {
        MODULE
    }
    fn hooks(&self) -> Hooks {
        Hooks::NONE
    }
    fn disco_features(&self) -> Vec<&'static str> {
        vec![ns::PRIVATE]
    }
    fn account_iq_namespaces(&self) -> Vec<&'static str> {
        vec![ns::PRIVATE]
    }
    fn handle_account_iq(&self, ctx: &dyn ServerContext, req: &IqRequest<'_>) -> IqResult {
        if !req.from_owner() {
            // Nobody reads or writes another account's private data.
            return Err(StanzaError::forbidden());
        }
        if req.payload.name != "query" {
            return Err(StanzaError::bad_request());
        }
        let children: Vec<&Element> = req.payload.child_elements().collect();
        if children.is_empty() || children.iter().any(|c| reserved(&c.ns)) {
            return Err(StanzaError::not_acceptable());
        }
        let account = req.account();
        let mut out = Element::new("query", ns::PRIVATE);
        if req.is_set {
            for c in &children {
                ctx.store(self.name())
                    .put(&account, &c.ns, c.to_xml(ns::CLIENT).as_bytes())?;
                if let Some(hook) = &self.hook {
                    hook.stored(ctx, &account, c)?;
                }
            }
            return Ok(None);
        }
        for c in children {
            let stored = ctx.store(self.name()).get(&account, &c.ns)?.and_then(|b| {
                let el = String::from_utf8(b)
                    .ok()
                    .and_then(|xml| ctx.parse_xml(&xml));
                if el.is_none() {
                    tracing::error!(
                        "the private XML {} of {account} is unreadable; answered as empty",
                        c.ns
                    );
                }
                el
            });
            // Nothing stored: the requested (empty) element comes back.
            out = out
                .with_child(stored.unwrap_or_else(|| Element::new(c.name.clone(), c.ns.clone())));
        }
        Ok(Some(out))
    }
}
