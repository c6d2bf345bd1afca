//! XEP-0202 Entity Time (`mod_time`): the server's clock in UTC (XEP-0082
//! format, from `date.rs`); the server reports its offset as `+00:00`.

use crate::date::now_utc;
use crate::element::Element;
use crate::module::{Hooks, IqRequest, IqResult, Module, ServerContext};
use crate::ns;
use crate::stanza::StanzaError;

/// `mod_time`.
pub struct Time;

impl Module for Time {
    fn name(&self) -> &'static str {
        "mod_time"
    }
    fn hooks(&self) -> Hooks {
        Hooks::NONE
    }
    fn disco_features(&self) -> Vec<&'static str> {
        vec![ns::TIME]
    }
    fn server_iq_namespaces(&self) -> Vec<&'static str> {
        vec![ns::TIME]
    }
    fn handle_server_iq(&self, _ctx: &dyn ServerContext, req: &IqRequest<'_>) -> IqResult {
        if req.is_set || req.payload.name != "time" {
            return Err(StanzaError::bad_request());
        }
        Ok(Some(
            Element::new("time", ns::TIME)
                .with_child(Element::new("tzo", ns::TIME).with_text("+00:00"))
                .with_child(Element::new("utc", ns::TIME).with_text(now_utc())),
        ))
    }
}
