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
use std::net::IpAddr;

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

/// An iq a client sends before it authenticated (XEP-0077 registration):
/// there is no `from`; the module sees the stream's host and the client's
/// address instead.
pub struct PreAuthIq<'a> {
    /// The whole iq as the client sent it.
    pub stanza: &'a Element,
    /// The iq's one child element.
    pub payload: &'a Element,
    /// `true` for `set`, `false` for `get`.
    pub is_set: bool,
    /// The host the stream was opened for.
    pub host: &'a str,
    /// The client's IP address.
    pub ip: IpAddr,
}

/// Why an account operation through [`ServerContext`] failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccountError {
    /// The account already exists.
    Exists,
    /// No such account.
    NotFound,
    /// The user name or password is not acceptable (the reason).
    Invalid(String),
    /// Storage or another internal failure (the reason, for logs).
    Failed(String),
}

/// The outcome of an administration command run through
/// [`ServerContext::run_command`] (the registry behind `rookery ctl`):
/// ejabberdctl's exit code (0 success) and its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandOutcome {
    pub code: i32,
    pub output: String,
}

/// Top-level configuration values some modules read.
#[derive(Clone, Debug, Default)]
pub struct Globals {
    /// `registration_timeout`: minimum time between two registrations from
    /// one IP address (`None` = no limit).
    pub registration_timeout: Option<std::time::Duration>,
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
    /// Whether the `access_rules` rule allows this user and/or address
    /// (ejabberd semantics; an undefined rule denies, `all` allows).
    fn access_allows(&self, _rule: &str, _user: Option<(&str, &str)>, _ip: Option<IpAddr>) -> bool {
        false
    }
    /// Whether the ACL `acl_name` matches this user and/or address.
    fn acl_matches(&self, _acl: &str, _user: Option<(&str, &str)>, _ip: Option<IpAddr>) -> bool {
        false
    }
    /// Whether the account `user@host` exists.
    fn account_exists(&self, _user: &str, _host: &str) -> bool {
        false
    }
    /// Create the account `user@host` (user name nodeprep'd, password
    /// stored as SCRAM credentials).
    fn create_account(
        &self,
        _user: &str,
        _host: &str,
        _password: &str,
    ) -> Result<(), AccountError> {
        Err(AccountError::Failed("not supported".into()))
    }
    /// Change the password of `user@host`; sessions stay.
    fn change_password(
        &self,
        _user: &str,
        _host: &str,
        _password: &str,
    ) -> Result<(), AccountError> {
        Err(AccountError::Failed("not supported".into()))
    }
    /// Delete `user@host` with its data. Its sessions are closed shortly
    /// after, once the reply to the current stanza has been queued.
    fn remove_account(&self, _user: &str, _host: &str) -> Result<(), AccountError> {
        Err(AccountError::Failed("not supported".into()))
    }
    /// Run an administration command of the `rookery ctl` registry (the
    /// caller decides who may; see [`ServerContext::may_run_command`]).
    fn run_command(&self, _name: &str, _args: &[String]) -> CommandOutcome {
        CommandOutcome {
            code: 1,
            output: "not supported".into(),
        }
    }
    /// Whether `who` may run the administration command `name` (the
    /// `api_permissions`-like rules of the configuration).
    fn may_run_command(&self, _who: &Jid, _name: &str) -> bool {
        false
    }
    /// Items of a disco node of the server (collected from the modules'
    /// [`Module::disco_node_items`]); `None` if no module has the node.
    fn disco_node_items(&self, _from: &FullJid, _node: &str) -> Option<Vec<Element>> {
        None
    }
    /// Disco#info of a node of the server; `None` if no module has it.
    fn disco_node_info(
        &self,
        _from: &FullJid,
        _node: &str,
    ) -> Option<(Vec<Identity>, Vec<String>)> {
        None
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
    /// Payload namespaces of iqs this module answers before authentication.
    fn pre_auth_iq_namespaces(&self) -> Vec<&'static str> {
        Vec::new()
    }
    /// Answer an iq sent before authentication.
    fn handle_pre_auth_iq(&self, _ctx: &dyn ServerContext, _req: &PreAuthIq<'_>) -> IqResult {
        Err(StanzaError::service_unavailable())
    }
    /// Stream features offered before authentication to a client at `ip`
    /// on `host` (e.g. `http://jabber.org/features/iq-register`).
    fn pre_auth_stream_features(
        &self,
        _ctx: &dyn ServerContext,
        _host: &str,
        _ip: IpAddr,
    ) -> Vec<Element> {
        Vec::new()
    }
    /// Disco#items of a server node this module owns, as seen by `from`;
    /// `None` if the node is not this module's.
    fn disco_node_items(
        &self,
        _ctx: &dyn ServerContext,
        _from: &FullJid,
        _node: &str,
    ) -> Option<Vec<Element>> {
        None
    }
    /// Disco#info (identities, features) of a server node this module owns.
    fn disco_node_info(
        &self,
        _ctx: &dyn ServerContext,
        _from: &FullJid,
        _node: &str,
    ) -> Option<(Vec<Identity>, Vec<String>)> {
        None
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
