//! Differential fuzzing of the XML stream reader (test and fuzz builds only;
//! never part of the server's release build).
//!
//! [`property`] states what must hold for any input: the reader never
//! panics or stalls, yields the same events however the bytes are chunked,
//! holds memory bounded by its configured stanza limit, and accepts only
//! what two strict reference parsers (xml-rs and roxmltree) accept — it may
//! refuse more (RFC 6120 restrictions, limits), never less. [`mutate`] makes
//! inputs from the committed corpus (`fuzz/corpus/xml_reader/`) with
//! structure-aware mutations and shrinks a failing one; [`alloc`] counts
//! the bytes a thread holds. The bounded run inside `cargo test` is in
//! `tests.rs`; the libFuzzer target in `fuzz/` includes these files by path.

pub mod alloc;
pub mod mutate;
pub mod property;
#[cfg(test)]
mod tests;
