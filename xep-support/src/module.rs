//! The one trait every extension module implements, and what the server
//! offers modules in return.
//!
//! Hooks: iqs addressed to the server (dispatched by payload namespace),
//! disco features and identities, extra stream features, session events, and
//! three message hooks (a message left a local session; a message for a
//! local account is about to be delivered; it was delivered to some of the
//! account's resources). Message hooks return further stanzas for the server
//! to route right after (in order, on the caller's task), never route
//! themselves. Later issues add more filters and account-addressed iqs here,
//! next to these, so every module keeps one shape.

use crate::element::Element;
use crate::stanza::StanzaError;
use jid::{BareJid, FullJid, Jid};

/// A disco identity (XEP-0030).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub category: String,
    pub kind: String,
    pub name: Option<String>,
}

/// An iq addressed to the server, as a module sees it.
pub struct IqRequest<'a> {
    /// The whole iq, with `from` already stamped by the server.
    pub stanza: &'a Element,
    /// The iq's one child element.
    pub payload: &'a Element,
    /// `true` for `set`, `false` for `get`.
    pub is_set: bool,
    /// The authenticated sender.
    pub from: &'a FullJid,
    /// The addressee (the server's domain).
    pub to: &'a Jid,
}

/// What a module answers to an iq: a result payload or a stanza error.
pub type IqResult = Result<Option<Element>, StanzaError>;

/// What the server offers modules.
pub trait ServerContext: Send + Sync {
    /// The domains this server serves.
    fn hosts(&self) -> Vec<String>;
    /// Every disco feature the server advertises (core and modules).
    fn disco_features(&self) -> Vec<String>;
    /// Every disco identity of the server.
    fn disco_identities(&self) -> Vec<Identity>;
    /// Deliver a stanza that the server originates (it carries its own `from`).
    fn route(&self, stanza: Element);
    /// The full JIDs of an account's bound sessions (detached resumable
    /// sessions included), in no particular order.
    fn resources(&self, _bare: &BareJid) -> Vec<FullJid> {
        Vec::new()
    }
}

/// An extension module, switched on under `modules:` in the config.
pub trait Module: Send + Sync {
    /// The config name, e.g. `mod_ping`.
    fn name(&self) -> &'static str;
    /// Disco features this module adds to the server's disco#info.
    fn disco_features(&self) -> Vec<&'static str> {
        Vec::new()
    }
    /// Disco identities this module adds.
    fn disco_identities(&self) -> Vec<Identity> {
        Vec::new()
    }
    /// Payload namespaces of iqs to the server this module answers.
    fn server_iq_namespaces(&self) -> Vec<&'static str> {
        Vec::new()
    }
    /// Answer an iq to the server whose payload namespace this module listed.
    fn handle_server_iq(&self, _ctx: &dyn ServerContext, _req: &IqRequest<'_>) -> IqResult {
        Err(StanzaError::service_unavailable())
    }
    /// Extra stream features offered once the client is authenticated.
    fn stream_features(&self) -> Vec<Element> {
        Vec::new()
    }
    /// A session was bound.
    fn session_opened(&self, _ctx: &dyn ServerContext, _jid: &FullJid) {}
    /// A session ended (for a resumable XEP-0198 session: when it can no
    /// longer be resumed, not when its connection dropped).
    fn session_closed(&self, _ctx: &dyn ServerContext, _jid: &FullJid) {}
    /// A `<message/>` from the local session `from` (its `from` stamped) was
    /// routed. Returns stanzas to route next (e.g. XEP-0280 `<sent/>` copies).
    fn message_from_session(
        &self,
        _ctx: &dyn ServerContext,
        _from: &FullJid,
        _msg: &Element,
    ) -> Vec<Element> {
        Vec::new()
    }
    /// A `<message/>` for the local account `account` is about to be delivered
    /// to its sessions: a module may change it (e.g. strip payloads that only
    /// the account itself may send).
    fn filter_message_to_account(
        &self,
        _ctx: &dyn ServerContext,
        _account: &BareJid,
        _msg: &mut Element,
    ) {
    }
    /// A `<message/>` was handed to these sessions of the local account
    /// `account`. Returns stanzas to route next (e.g. XEP-0280 `<received/>`
    /// copies for the account's other resources).
    fn message_delivered(
        &self,
        _ctx: &dyn ServerContext,
        _account: &BareJid,
        _delivered_to: &[FullJid],
        _msg: &Element,
    ) -> Vec<Element> {
        Vec::new()
    }
    /// The module as `Any`, so the server core can read the typed options of
    /// modules whose work happens in the stream itself (mod_stream_mgmt,
    /// mod_client_state, mod_ping's server-side pings).
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }
}
