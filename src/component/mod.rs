//! XEP-0114 external components (`ejabberd_service` listeners): a gateway or
//! bot (a Slidge or Biboumi bridge, a slixmpp `ComponentXMPP`) connects over
//! TCP, names its domain in the stream header and proves the shared secret
//! with `<handshake>` = hex(SHA-1(stream id ‖ secret)). From then on every
//! stanza to that domain (or a JID at it) goes to the component, and the
//! component's stanzas are routed like any other, provided their `from` is
//! at its domain (anything else ends the stream with `<invalid-from/>`).
//!
//! Back-pressure: each connected component has a queue of
//! [`crate::links::COMPONENT_QUEUE`] stanzas (the table of connected
//! components is shared state in [`crate::links`]); a stanza that finds it full is bounced to its sender with
//! `<resource-constraint/>` (never held without bound, never silently
//! dropped). A configured component that is not connected answers
//! `<service-unavailable/>`.

mod stream;

use tokio::sync::mpsc;
use xep_support::element::Element;
use xep_support::stanza::{ErrorType, StanzaError};

use crate::server::Server;

pub use stream::handle;

/// The XEP-0114 stream namespace.
pub const NS_COMPONENT: &str = "jabber:component:accept";

/// Whether `domain` is a component domain of the configuration.
pub fn is_component(server: &Server, domain: &str) -> bool {
    server
        .config()
        .listen
        .iter()
        .any(|l| l.service_hosts.iter().any(|h| h.domain == domain))
}

/// Deliver a stanza addressed to a component domain: to the component's
/// queue, or back to the sender as an error.
pub async fn send(server: &Server, stanza: Element, domain: &str) {
    let error = match server.components.sender(domain) {
        Some(tx) => match tx.try_send(stanza) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(stanza)) => {
                tracing::warn!(%domain, "component queue full; bouncing a stanza");
                (
                    stanza,
                    StanzaError::new(ErrorType::Wait, "resource-constraint"),
                )
            }
            Err(mpsc::error::TrySendError::Closed(stanza)) => {
                (stanza, StanzaError::service_unavailable())
            }
        },
        None => (stanza, StanzaError::service_unavailable()),
    };
    crate::delivery::bounce(server, &error.0, error.1).await;
}
