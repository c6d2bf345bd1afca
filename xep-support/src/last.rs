//! XEP-0012 Last Activity (`mod_last`): the server's uptime (iq to the
//! server), and for an account (iq to its bare JID) the seconds since its
//! last session ended, stored when the last session of the account ends.
//! An account's last activity is shown only to the account itself and to
//! contacts allowed to see its presence (subscription `from`/`both`), as
//! the XEP requires; others get `<forbidden/>`. The account asking about its
//! own bare JID is online and gets 0 seconds (as from ejabberd and Prosody).

use crate::element::Element;
use crate::module::{Hooks, IqRequest, IqResult, Module, ServerContext};
use crate::ns;
use crate::stanza::StanzaError;
use jid::FullJid;

/// `mod_last`.
pub struct Last;

const KEY: &str = "logout";

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Module for Last {
    fn name(&self) -> &'static str {
        "mod_last"
    }
    fn hooks(&self) -> Hooks {
        Hooks::SESSION_CLOSED
    }
    fn disco_features(&self) -> Vec<&'static str> {
        vec![ns::LAST]
    }
    fn server_iq_namespaces(&self) -> Vec<&'static str> {
        vec![ns::LAST]
    }
    fn account_iq_namespaces(&self) -> Vec<&'static str> {
        vec![ns::LAST]
    }
    fn handle_server_iq(&self, ctx: &dyn ServerContext, req: &IqRequest<'_>) -> IqResult {
        if req.is_set || req.payload.name != "query" {
            return Err(StanzaError::bad_request());
        }
        Ok(Some(
            Element::new("query", ns::LAST)
                .with_attr("seconds", ctx.uptime().as_secs().to_string()),
        ))
    }
    fn handle_account_iq(&self, ctx: &dyn ServerContext, req: &IqRequest<'_>) -> IqResult {
        if req.is_set || req.payload.name != "query" {
            return Err(StanzaError::bad_request());
        }
        let account = req.account();
        if !req.from_owner() && !ctx.subscription(&account, &req.from.to_bare()).has_from() {
            return Err(StanzaError::forbidden());
        }
        // Online: 0 seconds (XEP-0012 §3). The account asking about itself
        // is online by asking (as ejabberd answers: any session counts).
        if req.from_owner() || ctx.sessions(&account).iter().any(|s| s.available) {
            return Ok(Some(
                Element::new("query", ns::LAST).with_attr("seconds", "0"),
            ));
        }
        let stored = ctx.store(self.name()).get(&account, KEY)?.and_then(|b| {
            let t = std::str::from_utf8(&b)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok());
            if t.is_none() {
                tracing::error!("the last logout time of {account} is unreadable; skipped");
            }
            t
        });
        match stored {
            Some(t) => Ok(Some(
                Element::new("query", ns::LAST)
                    .with_attr("seconds", now_secs().saturating_sub(t).to_string()),
            )),
            None => Err(StanzaError::item_not_found()),
        }
    }
    fn session_closed(&self, ctx: &dyn ServerContext, jid: &FullJid) {
        let account = jid.to_bare();
        if ctx.sessions(&account).is_empty() {
            if let Err(e) =
                ctx.store(self.name())
                    .put(&account, KEY, now_secs().to_string().as_bytes())
            {
                tracing::error!("storing the last logout of {account}: {e}");
            }
        }
    }
}
