//! The message archive as modules see it: an engine-neutral store of
//! archives (XEP-0313), one per owner (an account now, a MUC room next),
//! reached through [`crate::module::ServerContext::archive`]. Modules never
//! see the engine or its keys; the server's `storage/` implements
//! [`ArchiveStore`].
//!
//! Invariants every engine keeps:
//! - Message ids are time-ordered `u64`s: microseconds since the Unix epoch,
//!   made strictly increasing across the whole server by the store (so two
//!   messages of one microsecond get consecutive ids). `start`/`end` and
//!   `before`/`after` are therefore one id range, and an id is also the
//!   message's timestamp (XEP-0203 `<delay/>` of query results).
//! - A message is stored once per archive, compactly: the peer's bare JID,
//!   the direction, the XEP-0359 origin-id and the stanza's XML.
//! - [`ArchiveStore::append`] is idempotent by origin-id: a message whose
//!   (peer, origin-id) is already in the archive (a resent or resumed
//!   stanza) is not stored again; the answer names the stored id. Messages
//!   without an origin-id are always stored.
//! - Appends are visible to reads at once (a query right after sees them)
//!   and durable within [`DURABILITY_BOUND_MS`] milliseconds; the server
//!   additionally holds back a session's acknowledgements and iq answers
//!   until the appends it caused are durable (see docs/architecture.md).
//! - [`ArchiveStore::count`] is O(1); range counts are exact when the range
//!   or its complement holds at most [`EXACT_COUNT_LIMIT`] messages (always
//!   for a whole archive or a whole conversation with one peer), an
//!   estimate otherwise ([`Count::Estimate`], which XEP-0059 allows); they
//!   never scan a whole archive.

use jid::BareJid;

use crate::element::Element;
use crate::store::StoreError;

/// Appended messages are on disk at most this long after `append` returns.
pub const DURABILITY_BOUND_MS: u64 = 1000;
/// Range counts are exact up to this many messages in the range or in its
/// complement (see [`ArchiveStore::count_range`]).
pub const EXACT_COUNT_LIMIT: usize = 10_000;

/// Which way a message went, seen from the archive's owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From the peer to the owner.
    Incoming,
    /// From the owner to the peer.
    Outgoing,
}

/// A message to archive.
#[derive(Clone, Debug)]
pub struct NewMessage {
    /// The archive's owner (account or room).
    pub owner: BareJid,
    /// The other party (bare JID).
    pub peer: BareJid,
    pub direction: Direction,
    /// XEP-0359 origin-id, if the sender gave one (the idempotency key).
    pub origin_id: Option<String>,
    /// The stanza as XML text (`jabber:client` default namespace).
    pub xml: String,
}

/// What [`ArchiveStore::append`] did with one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Appended {
    /// Stored under this id.
    Stored(u64),
    /// Already in the archive (same peer and origin-id) under this id.
    Duplicate(u64),
}

impl Appended {
    /// The message's id in the archive, new or old.
    pub fn id(self) -> u64 {
        match self {
            Appended::Stored(id) | Appended::Duplicate(id) => id,
        }
    }
}

/// A stored message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchivedMessage {
    pub id: u64,
    /// The peer's bare JID.
    pub peer: String,
    pub direction: Direction,
    pub origin_id: Option<String>,
    /// The stanza as XML text.
    pub xml: String,
}

/// A page request: at most `limit` messages with ids in `lo..=hi`, oldest
/// first (or newest first with `reverse`), only those with `with` (a bare
/// JID) when given.
#[derive(Clone, Copy, Debug)]
pub struct PageQuery<'a> {
    pub with: Option<&'a str>,
    pub lo: u64,
    pub hi: u64,
    pub reverse: bool,
    pub limit: usize,
}

/// A count of messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Count {
    Exact(u64),
    /// Interpolated (more than [`EXACT_COUNT_LIMIT`] on every side).
    Estimate(u64),
}

impl Count {
    pub fn value(self) -> u64 {
        match self {
            Count::Exact(n) | Count::Estimate(n) => n,
        }
    }
}

/// The archives of a server (see the module header for the invariants).
pub trait ArchiveStore: Send + Sync {
    /// Archive these messages (one batch, off the caller's path: visible
    /// at once, durable within [`DURABILITY_BOUND_MS`]). One answer per
    /// message, in order. Fails only when the store is unusable (e.g. its
    /// writer stopped after a write error: the disk is full).
    fn append(&self, msgs: Vec<NewMessage>) -> Result<Vec<Appended>, StoreError>;
    /// Archive one message given as its stanza, as [`ArchiveStore::append`]
    /// does with the [`NewMessage`] of it (`owner` and `peer`: bare JIDs'
    /// normalised text; the stanza written with `jabber:client` as the
    /// default namespace). The chat path: a store may write the stanza
    /// straight into its record, without copies of the JIDs or the text.
    fn append_stanza(
        &self,
        owner: &str,
        peer: &str,
        direction: Direction,
        origin_id: Option<&str>,
        stanza: &Element,
    ) -> Result<Appended, StoreError> {
        let bare = |j: &str| {
            BareJid::new(j).map_err(|e| StoreError::other(format!("archive: {j:?}: {e}")))
        };
        let m = NewMessage {
            owner: bare(owner)?,
            peer: bare(peer)?,
            direction,
            origin_id: origin_id.map(str::to_string),
            xml: stanza.to_xml(crate::ns::CLIENT),
        };
        self.append(vec![m])?
            .pop()
            .ok_or_else(|| StoreError::other("archive: no answer for the message"))
    }
    /// A page of `owner`'s archive (see [`PageQuery`]). A stored entry that
    /// cannot be decoded is skipped with a log line naming the owner.
    fn page(&self, owner: &BareJid, q: &PageQuery<'_>) -> Result<Vec<ArchivedMessage>, StoreError>;
    /// One message by id.
    fn get(&self, owner: &BareJid, id: u64) -> Result<Option<ArchivedMessage>, StoreError>;
    /// The id of the message with `peer` and this origin-id (XEP-0359), for
    /// retractions and corrections (XEP-0424/0425).
    fn find_origin_id(
        &self,
        owner: &BareJid,
        peer: &BareJid,
        origin_id: &str,
    ) -> Result<Option<u64>, StoreError>;
    /// Replace the stanza XML of message `id` (its peer, direction,
    /// origin-id and place stay): a XEP-0424/0425 tombstone. `false` if
    /// there is no such message. Durable when it returns.
    fn replace(&self, owner: &BareJid, id: u64, xml: &str) -> Result<bool, StoreError> {
        let _ = (owner, id, xml);
        Err(StoreError::other("this archive cannot replace messages"))
    }
    /// How many messages `owner`'s archive holds (O(1)).
    fn count(&self, owner: &BareJid) -> Result<u64, StoreError>;
    /// How many messages with ids in `lo..=hi` (and with `with`, a bare
    /// JID, when given) `owner`'s archive holds: see [`EXACT_COUNT_LIMIT`].
    fn count_range(
        &self,
        owner: &BareJid,
        with: Option<&str>,
        lo: u64,
        hi: u64,
    ) -> Result<Count, StoreError>;
    /// Delete at most `limit` of `owner`'s messages with ids below
    /// `cutoff` (retention); how many were deleted. Durable when it returns.
    fn delete_before(
        &self,
        owner: &BareJid,
        cutoff: u64,
        limit: usize,
    ) -> Result<usize, StoreError>;
    /// Delete `owner`'s whole archive (account removal); how many messages
    /// it held. Durable when it returns.
    fn delete_archive(&self, owner: &BareJid) -> Result<u64, StoreError>;
    /// Every owner with an archive (for `rookery ctl` maintenance and export).
    fn owners(&self) -> Result<Vec<BareJid>, StoreError>;
}

/// An id as clients see it (XEP-0359 stanza-id, RSM): 20 decimal digits.
pub fn format_id(id: u64) -> String {
    // Twenty decimal digits, zero-padded (u64::MAX has 20): on every
    // archived message, so without the formatting machinery.
    let mut digits = [b'0'; 20];
    let mut n = id;
    for d in digits.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    String::from_utf8(digits.to_vec()).expect("ASCII digits")
}

/// Parse an id written by [`format_id`].
pub fn parse_id(s: &str) -> Option<u64> {
    (s.len() == 20 && s.bytes().all(|c| c.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_format_and_parse_strictly() {
        assert_eq!(format_id(5), "00000000000000000005");
        assert_eq!(parse_id("00000000000000000005"), Some(5));
        assert_eq!(parse_id("5"), None);
        assert_eq!(parse_id("0000000000000000000x"), None);
        assert!(format_id(999) < format_id(1000));
        assert_eq!(Appended::Duplicate(7).id(), 7);
        assert_eq!(Count::Estimate(9).value(), 9);
    }
}
