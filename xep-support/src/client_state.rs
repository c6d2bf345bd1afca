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
use crate::module::{Hooks, Module};
use crate::ns;
use crate::options::{Kind, ModuleSpec, OptSpec};
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

/// The options of `mod_client_state` (ejabberd's).
pub const SPEC: ModuleSpec = ModuleSpec::module(
    "mod_client_state",
    &[
        OptSpec::honoured(
            "queue_presence",
            Kind::Bool,
            "true",
            "hold presence updates",
        ),
        OptSpec::honoured(
            "queue_chat_states",
            Kind::Bool,
            "true",
            "hold messages that only carry chat states",
        ),
        OptSpec::honoured("queue_pep", Kind::Bool, "true", "hold PEP notifications"),
    ],
    false,
);

/// Most distinct senders held for one inactive session; one more flushes them.
pub const MAX_HELD: usize = 256;

impl ClientState {
    /// Read the options; bad values become warnings and keep defaults.
    pub fn from_opts(o: &mut Opts<'_>) -> Self {
        ClientState {
            queue_presence: o.bool("queue_presence"),
            queue_chat_states: o.bool("queue_chat_states"),
            queue_pep: o.bool("queue_pep"),
        }
    }
}

impl Module for ClientState {
    fn name(&self) -> &'static str {
        "mod_client_state"
    }
    fn hooks(&self) -> Hooks {
        Hooks::NONE
    }
    fn stream_features(&self) -> Vec<Element> {
        vec![Element::new("csi", ns::CSI)]
    }
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}
