//! Instant messaging and presence (RFC 6121): rosters, presence
//! subscriptions, and the logic the server applies to them.
//!
//! The handlers here decide; they do not route. Each returns the stanzas
//! its decision sends, as [`Out`]s in the order they must leave, and the
//! router (`router.rs`, [`crate::router::perform`]) sends them, in that
//! order, on the caller's task — as `subscription.rs` returns its
//! `Outbound`/`Inbound` verdicts and as modules return stanzas. So `im/`
//! does not import the router. The one exception is the offline store
//! (`offline.rs`), which writes into session queues itself: it must hold
//! the account lock while it does, and learn whether each stored message
//! was written before removing it from storage.

use std::sync::Arc;

use xep_support::element::Element;
use xep_support::stanza::StanzaError;

use crate::sessions::SessionHandle;

pub mod offline;
pub mod presence;
pub mod roster;
pub mod subscription;

/// One stanza a handler sends, and how.
pub enum Out {
    /// Route it as any stanza from its `from` (filters, the route table).
    Route(Element),
    /// Put it straight into this session's queue (the handler chose the
    /// session: presence to one's own resources, roster pushes).
    Deliver(Arc<SessionHandle>, Element),
    /// Return this error to the stanza's sender.
    Bounce(Element, StanzaError),
}
