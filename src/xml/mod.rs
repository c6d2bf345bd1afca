//! XML on the wire: the incremental stream reader (with restricted-XML
//! checks and the stanza-size limit) and the byte limiter/shaper under it.
//! Writing uses [`xep_support::element::Element::write_to`].

pub mod bufread;
/// Tests only: holds the reader to strict reference parsers.
#[cfg(test)]
pub mod fuzz;
pub mod limit;
pub mod reader;

pub use reader::{StreamEvent, StreamHeader, StreamReader, XmlError};
