//! XEP-0092 Software Version (`mod_version`): the server's name and version,
//! and its operating system unless `show_os: false`.

use crate::element::Element;
use crate::module::{Hooks, IqRequest, IqResult, Module, ServerContext};
use crate::ns;
use crate::stanza::StanzaError;

/// `mod_version`.
pub struct Version {
    /// ejabberd's `show_os` (default `true`).
    pub show_os: bool,
}

/// The operating system's name and kernel release, e.g. `linux 6.1.0`.
fn os_name() -> String {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{} {}", std::env::consts::OS, release.trim())
        .trim()
        .to_string()
}

impl Module for Version {
    fn name(&self) -> &'static str {
        "mod_version"
    }
    fn hooks(&self) -> Hooks {
        Hooks::NONE
    }
    fn disco_features(&self) -> Vec<&'static str> {
        vec![ns::VERSION]
    }
    fn server_iq_namespaces(&self) -> Vec<&'static str> {
        vec![ns::VERSION]
    }
    fn handle_server_iq(&self, _ctx: &dyn ServerContext, req: &IqRequest<'_>) -> IqResult {
        if req.is_set || req.payload.name != "query" {
            return Err(StanzaError::bad_request());
        }
        let mut q = Element::new("query", ns::VERSION)
            .with_child(Element::new("name", ns::VERSION).with_text("Rookery"))
            .with_child(Element::new("version", ns::VERSION).with_text(env!("CARGO_PKG_VERSION")));
        if self.show_os {
            q = q.with_child(Element::new("os", ns::VERSION).with_text(os_name()));
        }
        Ok(Some(q))
    }
}
