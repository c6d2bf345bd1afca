//! Rookery's protocol extensions (XEPs), each a [`module::Module`] switched on
//! under `modules:` in the configuration, the way ejabberd's `mod_*` are.
//!
//! The server core parses stanzas into [`element::Element`] trees, asks the
//! enabled modules (built by [`registry::build`]) to answer iqs addressed to
//! the server by payload namespace, and collects their disco features.

pub mod adhoc;
pub mod archive;
pub mod auth_fast;
pub mod avatar;
pub mod blocking;
pub mod bookmarks;
pub mod caps;
pub mod carbons;
pub mod client_state;
pub mod date;
pub mod disco;
pub mod element;
pub mod hook_lists;
pub mod hooks;
pub mod http_upload;
pub mod invites;
pub mod jids;
pub mod last;
pub mod mam;
pub mod module;
pub mod muc;
pub mod ns;
pub mod options;
pub mod opts;
pub mod pep;
pub mod ping;
pub mod private;
pub mod pubsub;
pub mod push;
pub mod register;
pub mod registry;
pub mod stanza;
pub mod store;
pub mod stream_mgmt;
pub mod stun_disco;
pub mod time;
pub mod vcard;
pub mod version;

pub use element::{Element, Node};
pub use module::{Module, ServerContext};
