//! XML on the wire: the incremental stream reader (with XML 1.0
//! well-formedness, restricted-XML checks, shape limits and the stanza-size
//! limit), the well-formedness checks it applies, and the byte
//! limiter/shaper under it.
//! Writing uses [`xep_support::element::Element::write_to`]; `kept.rs`
//! keeps a routing thread's last chat messages serialised, for the
//! archive's second copy and the recipient's stream.

pub mod bufread;
/// Tests only: holds the reader to strict reference parsers.
#[cfg(test)]
pub mod fuzz;
pub mod kept;
pub mod limit;
pub mod reader;
pub mod wellformed;

#[cfg(test)]
mod parse_bench;
#[cfg(test)]
mod strict_tests;

pub use reader::{StreamEvent, StreamHeader, StreamReader, XmlError};
