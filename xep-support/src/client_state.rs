//! XEP-0352 Client State Indication (`mod_client_state`, `urn:xmpp:csi:0`):
//! the stream feature and ejabberd's options. While a client says it is
//! `<inactive/>`, the session's writer holds back presence updates (only the
//! latest per contact full JID), chat-state-only messages (only the latest
//! per sender) and PEP notifications (only the latest per sender and node,
//! as ejabberd's `queue_pep`), writes any other message at once right after
//! everything it held (so each sender's stanzas stay in order), lets iqs
//! and subscription presence pass, and flushes everything on `<active/>`.
//! At most [`MAX_HELD`] senders' stanzas are held; one more flushes them. The work
//! happens in the server's c2s writer, which reads these options through
//! [`crate::module::Module::as_any`].

use crate::element::Element;
use crate::module::Module;
use crate::ns;
use crate::opts::Opts;

/// `mod_client_state` and its options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientState {
    /// Hold presence updates while inactive (default true).
    pub queue_presence: bool,
    /// Hold chat-state-only messages while inactive (default true).
    pub queue_chat_states: bool,
    /// Hold PEP notifications while inactive (default true).
    pub queue_pep: bool,
}

/// ejabberd's option names this module reads.
pub const OPTIONS: &[&str] = &["queue_presence", "queue_chat_states", "queue_pep"];

/// Most distinct senders held for one inactive session; one more flushes them.
pub const MAX_HELD: usize = 256;

impl ClientState {
    /// Read the options; bad values become warnings and keep defaults.
    pub fn from_opts(o: &mut Opts<'_>) -> Self {
        ClientState {
            queue_presence: o.bool("queue_presence", true),
            queue_chat_states: o.bool("queue_chat_states", true),
            queue_pep: o.bool("queue_pep", true),
        }
    }
}

impl Module for ClientState {
    fn name(&self) -> &'static str {
        "mod_client_state"
    }
    fn stream_features(&self) -> Vec<Element> {
        vec![Element::new("csi", ns::CSI)]
    }
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}
