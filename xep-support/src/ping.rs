//! XEP-0199 XMPP Ping (`mod_ping`): answers pings addressed to the server.

use crate::module::{IqRequest, IqResult, Module, ServerContext};
use crate::ns;
use crate::stanza::StanzaError;

/// `mod_ping`.
pub struct Ping;

impl Module for Ping {
    fn name(&self) -> &'static str {
        "mod_ping"
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
}
