//! XEP-0198 stream management, gathered: what a client's `<enable/>`,
//! `<r/>` and `<a/>` do ([`ack`]), resumption — the claim channel, the wait
//! of a detached session, the take-over by a new connection ([`resume`]) —
//! and the elements written and read ([`wire`]).
//!
//! Where the rest lives, and why: the state itself (counters, the
//! unacknowledged queue) is the leaf `src/sm_state.rs`, so the session
//! table's handle (`sessions.rs`) carries it without importing `c2s/`; the
//! writer (`c2s/writer.rs`) counts and keeps each stanza it writes once
//! `<enabled/>` is out and asks for acks (`<r/>`) as part of its write
//! loop; the tables of resumable and expired sessions are shared state in
//! `server.rs`; the options are `mod_stream_mgmt`'s
//! (`xep_support::stream_mgmt`).

pub mod ack;
pub mod resume;
pub mod wire;

pub use crate::sessions::{Claim, SmState, Takeover};
pub use crate::sm_state::AckError;
