//! The one trait every extension module implements, and what the server
//! offers modules in return.
//!
//! Hooks: iqs addressed to the server (dispatched by payload namespace),
//! disco features and identities, extra stream features, and session events.
//! Later issues add stanza filters and account-addressed iqs here, next to
//! these, so every module keeps one shape.

use crate::element::Element;
use crate::stanza::StanzaError;
use jid::{FullJid, Jid};

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
    /// A session ended.
    fn session_closed(&self, _ctx: &dyn ServerContext, _jid: &FullJid) {}
}
