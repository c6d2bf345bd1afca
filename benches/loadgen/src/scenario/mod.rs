//! The client scenarios, one module each; every `run` prints one JSON line
//! and returns whether the run's correctness checks passed.

pub mod chat;
pub mod idle;
pub mod login;
pub mod muc;
pub mod offline;
pub mod presence;
pub mod pubsub;
