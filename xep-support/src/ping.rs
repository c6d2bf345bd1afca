//! XEP-0199 XMPP Ping (`mod_ping`): answers pings addressed to the server
//! and, with `send_pings: true`, pings clients that stayed silent for
//! `ping_interval`; one that does not answer within `ping_ack_timeout` is
//! disconnected when `timeout_action: kill`. The server-side pinging runs in
//! the session's reader, which reads these options through
//! [`crate::module::Module::as_any`].

use std::time::Duration;

use crate::module::{Hooks, IqRequest, IqResult, Module, ServerContext};
use crate::ns;
use crate::options::{Kind, ModuleSpec, OptSpec};
use crate::opts::Opts;
use crate::stanza::StanzaError;

/// `mod_ping` and its options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ping {
    /// Ping silent clients (default false).
    pub send_pings: bool,
    /// Silence before a ping (default 60 s).
    pub ping_interval: Duration,
    /// Time to answer a ping (default 32 s).
    pub ping_ack_timeout: Duration,
    /// Disconnect a client that did not answer (`timeout_action: kill`);
    /// otherwise (`none`, the default) it is only logged.
    pub kill: bool,
}

/// The options of `mod_ping` (ejabberd's).
pub const SPEC: ModuleSpec = ModuleSpec::module(
    "mod_ping",
    &[
        OptSpec::honoured(
            "send_pings",
            Kind::Bool,
            "false",
            "ping a client from which nothing arrived for `ping_interval`",
        ),
        OptSpec::honoured(
            "ping_interval",
            Kind::Timeout,
            "60",
            "silence before a ping",
        ),
        OptSpec::honoured(
            "ping_ack_timeout",
            Kind::Timeout,
            "32",
            "time a client has to answer a ping",
        ),
        OptSpec::honoured(
            "timeout_action",
            Kind::Enum(&["none", "kill"]),
            "none",
            "`kill`: disconnect a client that did not answer; `none`: only log it",
        ),
    ],
    false,
);

impl Default for Ping {
    /// The spec's defaults.
    fn default() -> Self {
        Ping::from_opts(&mut Opts::new(&serde_yaml_ng::Value::Null, &SPEC))
    }
}

impl Ping {
    /// Read the options; bad values become warnings and keep defaults.
    pub fn from_opts(o: &mut Opts<'_>) -> Self {
        let floor = Duration::from_millis(100);
        Ping {
            send_pings: o.bool("send_pings"),
            ping_interval: o
                .timeout("ping_interval")
                .unwrap_or(Duration::from_secs(u32::MAX as u64))
                .max(floor),
            ping_ack_timeout: o
                .timeout("ping_ack_timeout")
                .unwrap_or(Duration::from_secs(u32::MAX as u64))
                .max(floor),
            kill: o.word("timeout_action") == "kill",
        }
    }
}

impl Module for Ping {
    fn name(&self) -> &'static str {
        "mod_ping"
    }
    fn hooks(&self) -> Hooks {
        Hooks::NONE
    }
    fn disco_features(&self) -> Vec<&'static str> {
        vec![ns::PING]
    }
    fn server_iq_namespaces(&self) -> Vec<&'static str> {
        vec![ns::PING]
    }
    fn handle_server_iq(&self, _ctx: &dyn ServerContext, req: &IqRequest<'_>) -> IqResult {
        if req.is_set || req.payload.name != "ping" {
            return Err(StanzaError::bad_request());
        }
        Ok(None)
    }
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}
