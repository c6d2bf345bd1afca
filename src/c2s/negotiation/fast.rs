//! XEP-0484 FAST on the SASL2 negotiation: the `<fast/>` inline feature
//! (the HT mechanisms this connection can do), the `<fast/>` element of an
//! `<authenticate/>` that uses a token (its `count` and `invalidate`), the
//! `<request-token/>` that asks for one after any successful
//! authentication, and the `<token/>` (new or rotated) put into the
//! `<success/>`. Tokens are kept through the module store
//! (`mod_auth_fast`, keyed by the SHA-256 of the user-agent id), so they
//! survive restarts and go with the account's data when it is removed.
//! Without `mod_auth_fast`, or without a `<user-agent id/>`, nothing here
//! happens.

use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use xep_support::auth_fast::NS;
use xep_support::element::Element;

use super::{HostCredentials, Negotiation};
use crate::auth::fast::{self, FastContext, Policy, TokenRecord, TokenStore};
use crate::auth::{CredentialStore, SaslContext};
use crate::server::Server;
use crate::storage::AccountKey;

/// The module-store name of the records.
pub const MODULE: &str = "mod_auth_fast";

/// Records of one host in the module store.
pub struct HostTokens {
    pub server: Arc<Server>,
    pub host: String,
}

fn key(user_agent: &str) -> String {
    let h = Sha256::digest(user_agent.as_bytes());
    let hex: String = h.iter().map(|b| format!("{b:02x}")).collect();
    format!("ua:{hex}")
}

impl TokenStore for HostTokens {
    fn get(&self, user: &str, user_agent: &str) -> Option<TokenRecord> {
        let owner = AccountKey::new(&self.host, user);
        match self
            .server
            .storage
            .module_get(owner, MODULE, &key(user_agent))
        {
            Ok(v) => v.and_then(|b| TokenRecord::decode(&b)),
            Err(e) => {
                tracing::error!("reading a FAST token of {owner}: {e}; token refused");
                None
            }
        }
    }
    fn put(&self, user: &str, user_agent: &str, record: &TokenRecord) {
        let owner = AccountKey::new(&self.host, user);
        if let Err(e) =
            self.server
                .storage
                .module_put(owner, MODULE, &key(user_agent), &record.encode())
        {
            tracing::error!("storing a FAST token of {owner}: {e}");
        }
    }
    fn delete(&self, user: &str, user_agent: &str) {
        let owner = AccountKey::new(&self.host, user);
        if let Err(e) = self
            .server
            .storage
            .module_delete(owner, MODULE, &key(user_agent))
        {
            tracing::error!("deleting a FAST token of {owner}: {e}");
        }
    }
}

/// Delete every FAST token of `user@host` (a kick or ban by the admin);
/// how many there were.
pub fn revoke_all(server: &Server, user: &str, host: &str) -> usize {
    let owner = AccountKey::new(host, user);
    let keys: Vec<String> = match server.storage.module_scan(owner, MODULE, "ua:") {
        Ok(rows) => rows.into_iter().map(|(k, _)| k).collect(),
        Err(e) => {
            tracing::error!("listing the FAST tokens of {owner}: {e}");
            return 0;
        }
    };
    match server.storage.module_delete_many(owner, MODULE, &keys) {
        Ok(n) => n,
        Err(e) => {
            tracing::error!("revoking the FAST tokens of {owner}: {e}");
            0
        }
    }
}

impl Negotiation {
    fn tokens(&self) -> Arc<dyn TokenStore> {
        Arc::new(HostTokens {
            server: self.server.clone(),
            host: self.host.clone().unwrap_or_default(),
        })
    }

    fn fast_policy(&self) -> Option<Policy> {
        let opts = self.server.live().fast.clone()?;
        Some(Policy::new(opts.token_lifetime, opts.token_refresh_age))
    }

    /// The `<fast/>` feature for SASL2's `<inline/>`, when mod_auth_fast is on.
    pub(super) fn fast_feature(&self, ctx: &SaslContext) -> Option<Element> {
        self.server.live().fast.as_ref()?;
        let mut f = Element::new("fast", NS);
        for m in fast::offered(ctx) {
            f = f.with_child(Element::new("mechanism", NS).with_text(m));
        }
        Some(f)
    }

    /// The FAST context for an `<authenticate/>` (`req`), if it can use a
    /// token: mod_auth_fast on and a user-agent id given.
    pub(super) fn fast_context(&self, req: &Element) -> Option<Arc<FastContext>> {
        let policy = self.fast_policy()?;
        let user_agent = self.user_agent.clone()?;
        let el = req.child("fast", NS);
        Some(Arc::new(FastContext {
            user_agent,
            count: el
                .and_then(|f| f.attr("count"))
                .and_then(|c| c.trim().parse().ok()),
            invalidate: el
                .and_then(|f| f.attr("invalidate"))
                .is_some_and(|v| v == "true" || v == "1"),
            store: self.tokens(),
            policy,
            rotated: Mutex::new(None),
        }))
    }

    /// The `<token/>` for the `<success/>` of `user`: the rotated one the
    /// HT mechanism made, or a new one the client asked for with
    /// `<request-token mechanism/>` (a mechanism offered here).
    pub(super) fn fast_token(
        &self,
        req: &Element,
        user: &str,
        ctx: &Option<Arc<FastContext>>,
    ) -> Option<Element> {
        let policy = self.fast_policy()?;
        let rotated = ctx
            .as_ref()
            .and_then(|c| c.rotated.lock().unwrap_or_else(|e| e.into_inner()).take());
        let issued = match (rotated, req.child("request-token", NS)) {
            (Some(t), _) => t,
            (None, Some(rt)) => {
                let user_agent = self.user_agent.clone()?;
                let sasl = self.sasl_context();
                let mech = rt.attr("mechanism").unwrap_or("");
                let mech = fast::offered(&sasl).into_iter().find(|m| *m == mech)?;
                let host = self.host.clone().unwrap_or_default();
                let creds = HostCredentials {
                    server: self.server.clone(),
                    host,
                }
                .credentials(user)?;
                let fp = fast::credentials_fingerprint(&creds);
                fast::issue(&*self.tokens(), user, &user_agent, mech, fp, &policy)
            }
            (None, None) => return None,
        };
        let expiry = xep_support::date::xep0082(issued.expiry as i64, 0);
        Some(
            Element::new("token", NS)
                .with_attr("expiry", expiry)
                .with_attr("token", issued.token),
        )
    }
}
