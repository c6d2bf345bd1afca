//! Instant messaging and presence (RFC 6121): rosters, presence
//! subscriptions, and the logic the server applies to them.

pub mod offline;
pub mod presence;
pub mod roster;
pub mod subscription;
