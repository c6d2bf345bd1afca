//! XEP-0114 external components (`ejabberd_service` listeners): a gateway or
//! bot (a Slidge or Biboumi bridge, a slixmpp `ComponentXMPP`) connects over
//! TCP, names its domain in the stream header and proves the shared secret
//! with `<handshake>` = hex(SHA-1(stream id ‖ secret)). From then on every
//! stanza to that domain (or a JID at it) goes to the component, and the
//! component's stanzas are routed like any other, provided their `from` is
//! at its domain (anything else ends the stream with `<invalid-from/>`).
//!
//! Back-pressure: each connected component has a queue of
//! [`COMPONENT_QUEUE`] stanzas, registered in the route table
//! (`routes.rs`) while it is connected; a stanza that finds it full is
//! bounced to its sender with `<resource-constraint/>` (never held without
//! bound, never silently dropped). A configured component that is not
//! connected answers `<service-unavailable/>` (the route table says so).

mod stream;

use tokio::sync::mpsc;
use xep_support::element::Element;
use xep_support::stanza::{Condition, ErrorType, StanzaError};

use crate::routes::{Link, Sending};

pub use stream::handle;

/// The XEP-0114 stream namespace.
pub const NS_COMPONENT: &str = "jabber:component:accept";

/// Stanzas queued for one component before new ones are bounced.
pub const COMPONENT_QUEUE: usize = 4096;

/// A connected component's queue, as its route.
struct Queue(mpsc::Sender<Element>);

impl Link for Queue {
    fn send<'a>(&'a self, stanza: Element, domain: &'a str) -> Sending<'a> {
        let result = match self.0.try_send(stanza) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(stanza)) => {
                tracing::warn!(%domain, "component queue full; bouncing a stanza");
                Err((
                    stanza,
                    StanzaError::new(ErrorType::Wait, Condition::ResourceConstraint),
                ))
            }
            Err(mpsc::error::TrySendError::Closed(stanza)) => {
                Err((stanza, StanzaError::service_unavailable()))
            }
        };
        Box::pin(std::future::ready(result))
    }
}

/// Register a queue for `domain` in the route table: the registration id
/// and the queue's receiving end, or `None` if a component for `domain`
/// is connected already.
fn register(
    server: &crate::server::Server,
    domain: &str,
) -> Option<(u64, mpsc::Receiver<Element>)> {
    let (tx, rx) = mpsc::channel(COMPONENT_QUEUE);
    let id = server
        .routes
        .register(domain, std::sync::Arc::new(Queue(tx)))?;
    Some((id, rx))
}
