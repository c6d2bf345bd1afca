//! Keys and the compact record of the message archive, the same on every
//! engine (see `mod.rs` for the trees). Pure functions, no I/O.
//!
//! An archive is named by a 4-byte big-endian number (its "archive id",
//! given out once per owner); message ids are 8-byte big-endian numbers
//! (microseconds, see `xep_support::archive`), so every key of one archive
//! shares the 4-byte prefix and sorts by time within it.
//!
//! Messages are kept in blocks: the value under `archive(4) id(8)` in
//! `archive_messages` holds the messages of one archive written by one
//! batch (at most [`BLOCK_MESSAGES`]), the key's id being the first one's:
//!
//! ```text
//! per message: varint (id - key id), varint record_len, record
//! ```
//!
//! so the block holding message `id` is the last key at or below
//! `archive(4) id(8)`. A record:
//!
//! ```text
//! flags u8 (bit 0: outgoing, bit 1: has origin-id; others 0)
//! varint peer_len, peer (bare JID, UTF-8)
//! [varint origin_len, origin-id]      only with bit 1
//! stanza XML (UTF-8, the rest)
//! ```
//!
//! The peer index (`archive_by_peer`) has one entry per peer and block,
//! under `archive(4) peer 0x00 id(8)` (the peer's first message in the
//! block): the block's key id (u64 BE), then varint (id - entry id) for
//! each of the peer's messages in it.
//!
//! A record or block that does not parse (unknown flag bits, lengths past
//! the end, not UTF-8) decodes to `None` / stops the walk: callers skip it
//! and log it.

use xep_support::archive::{ArchivedMessage, Direction};

/// Most messages in one block.
pub const BLOCK_MESSAGES: usize = 128;

const OUTGOING: u8 = 1;
const HAS_ORIGIN: u8 = 2;

/// The key of message `id` in archive `archive` (tree `archive_messages`).
pub fn message_key(archive: u32, id: u64) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..4].copy_from_slice(&archive.to_be_bytes());
    k[4..].copy_from_slice(&id.to_be_bytes());
    k
}

/// The prefix of every key of `archive` in any archive tree.
pub fn archive_prefix(archive: u32) -> [u8; 4] {
    archive.to_be_bytes()
}

/// `archive(4) peer 0x00`: the prefix of one peer's keys (trees
/// `archive_by_peer`, `archive_by_origin`). JIDs never contain NUL.
pub fn peer_prefix(archive: u32, peer: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(5 + peer.len() + 8);
    k.extend_from_slice(&archive.to_be_bytes());
    k.extend_from_slice(peer.as_bytes());
    k.push(0);
    k
}

/// The key of message `id` in the peer index (tree `archive_by_peer`).
pub fn peer_key(archive: u32, peer: &str, id: u64) -> Vec<u8> {
    let mut k = peer_prefix(archive, peer);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// The key of an origin-id (tree `archive_by_origin`; the value is the id).
pub fn origin_key(archive: u32, peer: &str, origin_id: &str) -> Vec<u8> {
    let mut k = peer_prefix(archive, peer);
    k.extend_from_slice(origin_id.as_bytes());
    k
}

/// The key of a peer's message counter (tree `archive_counts`; the
/// archive's own counter is under the bare 4-byte prefix).
pub fn peer_count_key(archive: u32, peer: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + peer.len());
    k.extend_from_slice(&archive.to_be_bytes());
    k.extend_from_slice(peer.as_bytes());
    k
}

/// The message id at the end of a key (the last 8 bytes).
pub fn id_of_key(key: &[u8]) -> Option<u64> {
    let tail: [u8; 8] = key.get(key.len().checked_sub(8)?..)?.try_into().ok()?;
    Some(u64::from_be_bytes(tail))
}

/// A big-endian u64 value (ids, counters).
pub fn u64_of(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

fn put_varint64(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn put_varint(out: &mut Vec<u8>, n: usize) {
    put_varint64(out, n as u64)
}

fn get_varint64(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut n: u64 = 0;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*pos)?;
        *pos += 1;
        n |= ((byte & 0x7f) as u64) << shift;
        if byte & 0x80 == 0 {
            return Some(n);
        }
    }
    None
}

fn get_varint(b: &[u8], pos: &mut usize) -> Option<usize> {
    let n = get_varint64(b, pos)?;
    (n <= u32::MAX as u64).then_some(n as usize)
}

/// Append message `id` (its encoded `record`) to a block keyed `base`.
pub fn block_push(block: &mut Vec<u8>, base: u64, id: u64, record: &[u8]) {
    put_varint64(block, id - base);
    put_varint(block, record.len());
    block.extend_from_slice(record);
}

/// The bytes [`block_push`] adds for message `id` with a record of `len`.
pub fn block_entry_len(base: u64, id: u64, len: usize) -> usize {
    varint_len64(id - base) + varint_len(len) + len
}

/// The (id, record) entries of a block keyed `base`, in order, and whether
/// the whole block parsed (`false`: damaged from some entry on).
pub fn block_entries(base: u64, b: &[u8]) -> (Vec<(u64, &[u8])>, bool) {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < b.len() {
        let Some(delta) = get_varint64(b, &mut pos) else {
            return (out, false);
        };
        let Some(len) = get_varint(b, &mut pos) else {
            return (out, false);
        };
        let (Some(id), Some(rec)) = (
            base.checked_add(delta),
            pos.checked_add(len).and_then(|end| b.get(pos..end)),
        ) else {
            return (out, false);
        };
        if out.last().is_some_and(|(prev, _)| *prev >= id) {
            return (out, false);
        }
        out.push((id, rec));
        pos += len;
    }
    (out, true)
}

/// A peer index entry keyed `base` for messages `ids` (ascending, the
/// first one `base`) of the block keyed `block`.
pub fn peer_entry(block: u64, base: u64, ids: &[u64]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + ids.len() * 2);
    v.extend_from_slice(&block.to_be_bytes());
    for id in ids {
        put_varint64(&mut v, id - base);
    }
    v
}

/// The block key id and message ids of a peer index entry keyed `base`.
pub fn peer_entry_ids(base: u64, v: &[u8]) -> Option<(u64, Vec<u64>)> {
    let block = u64_of(v.get(..8)?)?;
    let mut ids = Vec::new();
    let mut pos = 8;
    while pos < v.len() {
        ids.push(base.checked_add(get_varint64(v, &mut pos)?)?);
    }
    Some((block, ids))
}

/// The bytes of a varint of `n`.
fn varint_len(n: usize) -> usize {
    varint_len64(n as u64)
}

fn varint_len64(mut n: u64) -> usize {
    let mut len = 1;
    while n >= 0x80 {
        n >>= 7;
        len += 1;
    }
    len
}

/// How long a record's header (flags, peer, origin-id) is.
fn header_len(peer: &str, origin_id: Option<&str>) -> usize {
    1 + varint_len(peer.len()) + peer.len() + origin_id.map_or(0, |o| varint_len(o.len()) + o.len())
}

/// A varint of `n` in a buffer: (bytes, length).
fn varint_bytes(n: usize) -> ([u8; 10], usize) {
    let mut b = [0u8; 10];
    let mut len = 0;
    let mut n = n as u64;
    while n >= 0x80 {
        b[len] = (n as u8) | 0x80;
        n >>= 7;
        len += 1;
    }
    b[len] = n as u8;
    (b, len + 1)
}

/// A record's header (flags, peer, origin-id), in pieces handed to `put`.
fn header(direction: Direction, peer: &str, origin_id: Option<&str>, mut put: impl FnMut(&[u8])) {
    let mut flags = 0;
    if direction == Direction::Outgoing {
        flags |= OUTGOING;
    }
    if origin_id.is_some() {
        flags |= HAS_ORIGIN;
    }
    put(&[flags]);
    let (b, n) = varint_bytes(peer.len());
    put(&b[..n]);
    put(peer.as_bytes());
    if let Some(o) = origin_id {
        let (b, n) = varint_bytes(o.len());
        put(&b[..n]);
        put(o.as_bytes());
    }
}

/// Encode a record.
pub fn encode(direction: Direction, peer: &str, origin_id: Option<&str>, xml: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(header_len(peer, origin_id) + xml.len());
    header(direction, peer, origin_id, |b| out.extend_from_slice(b));
    out.extend_from_slice(xml.as_bytes());
    out
}

/// Encode a record whose stanza `write_xml` writes straight into it (the
/// chat path: no separate string of the stanza, no copy of it); `xml_hint`
/// is the room to reserve for the stanza. The same bytes as [`encode`] of
/// what `write_xml` writes.
pub fn encode_with(
    direction: Direction,
    peer: &str,
    origin_id: Option<&str>,
    xml_hint: usize,
    write_xml: impl FnOnce(&mut String),
) -> Vec<u8> {
    let len = header_len(peer, origin_id);
    // The header is not text (flags, varints): the string starts with as
    // many NULs (UTF-8) as the header has bytes, and once it is bytes the
    // header is written over them.
    const NULS: &str = "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";
    let mut text = String::with_capacity(len + xml_hint);
    while text.len() < len {
        // Whole strings, not one character at a time.
        text.push_str(&NULS[..NULS.len().min(len - text.len())]);
    }
    write_xml(&mut text);
    let mut out = text.into_bytes();
    let mut pos = 0;
    header(direction, peer, origin_id, |b| {
        out[pos..pos + b.len()].copy_from_slice(b);
        pos += b.len();
    });
    debug_assert_eq!(pos, len);
    out
}

/// Decode the record of message `id`; `None` if it is damaged.
pub fn decode(id: u64, b: &[u8]) -> Option<ArchivedMessage> {
    let flags = *b.first()?;
    if flags & !(OUTGOING | HAS_ORIGIN) != 0 {
        return None;
    }
    let mut pos = 1;
    let text = |pos: &mut usize| -> Option<String> {
        let n = get_varint(b, pos)?;
        let s = std::str::from_utf8(b.get(*pos..pos.checked_add(n)?)?).ok()?;
        *pos += n;
        Some(s.to_string())
    };
    let peer = text(&mut pos)?;
    let origin_id = if flags & HAS_ORIGIN != 0 {
        Some(text(&mut pos)?)
    } else {
        None
    };
    let xml = std::str::from_utf8(&b[pos..]).ok()?.to_string();
    Some(ArchivedMessage {
        id,
        peer,
        direction: if flags & OUTGOING != 0 {
            Direction::Outgoing
        } else {
            Direction::Incoming
        },
        origin_id,
        xml,
    })
}

/// The peer of a record, without decoding the rest (retention, removal).
pub fn peer_of(b: &[u8]) -> Option<(&str, Option<&str>)> {
    let flags = *b.first()?;
    let mut pos = 1;
    let text = |pos: &mut usize| -> Option<&str> {
        let n = get_varint(b, pos)?;
        let s = std::str::from_utf8(b.get(*pos..pos.checked_add(n)?)?).ok()?;
        *pos += n;
        Some(s)
    };
    let peer = text(&mut pos)?;
    let origin = if flags & HAS_ORIGIN != 0 {
        Some(text(&mut pos)?)
    } else {
        None
    };
    Some((peer, origin))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_damage_is_detected() {
        let r = encode(
            Direction::Outgoing,
            "bob@x",
            Some("o1"),
            "<message><body>hi</body></message>",
        );
        let m = decode(7, &r).unwrap();
        assert_eq!(m.id, 7);
        assert_eq!(m.peer, "bob@x");
        assert_eq!(m.direction, Direction::Outgoing);
        assert_eq!(m.origin_id.as_deref(), Some("o1"));
        assert_eq!(m.xml, "<message><body>hi</body></message>");
        assert_eq!(peer_of(&r), Some(("bob@x", Some("o1"))));
        let r2 = encode(Direction::Incoming, "bob@x", None, "<m/>");
        let m2 = decode(1, &r2).unwrap();
        assert_eq!((m2.direction, m2.origin_id), (Direction::Incoming, None));
        // Truncated, bad flags, empty: refused, never a panic.
        assert!(decode(1, &r[..3]).is_none());
        assert!(decode(1, &[0x80, 1, b'a']).is_none());
        assert!(decode(1, &[]).is_none());
        assert!(decode(1, &[0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).is_none());
        let long = "p".repeat(300);
        assert_eq!(
            decode(2, &encode(Direction::Incoming, &long, None, "x"))
                .unwrap()
                .peer,
            long
        );
    }

    /// `block_entry_len` is what `block_push` adds (the applier sizes
    /// each block with it, so a block is allocated once).
    #[test]
    fn block_entry_len_is_what_block_push_adds() {
        let mut block = Vec::new();
        for (delta, len) in [
            (0u64, 0usize),
            (1, 5),
            (127, 127),
            (128, 128),
            (250_000, 300),
            (1 << 40, 20_000),
        ] {
            let before = block.len();
            block_push(&mut block, 1000, 1000 + delta, &vec![b'x'; len]);
            assert_eq!(
                block.len() - before,
                block_entry_len(1000, 1000 + delta, len),
                "{delta} {len}"
            );
        }
    }

    #[test]
    fn records_written_in_place_are_the_same_bytes() {
        let long = "p".repeat(300);
        let origin = "o".repeat(200);
        for (direction, peer, origin_id, xml) in [
            (
                Direction::Outgoing,
                "bob@x",
                Some("o1"),
                "<message><body>hi</body></message>",
            ),
            (Direction::Incoming, "bob@x", None, "<m/>"),
            (
                Direction::Incoming,
                long.as_str(),
                Some(origin.as_str()),
                "<message>é</message>",
            ),
            (Direction::Outgoing, "", None, ""),
        ] {
            for hint in [0, 4, 1000] {
                let r = encode_with(direction, peer, origin_id, hint, |s| s.push_str(xml));
                assert_eq!(r, encode(direction, peer, origin_id, xml), "{peer} {hint}");
                let m = decode(9, &r).unwrap();
                assert_eq!(
                    (m.peer.as_str(), m.origin_id.as_deref(), m.xml.as_str()),
                    (peer, origin_id, xml)
                );
            }
        }
    }

    #[test]
    fn blocks_and_peer_entries_round_trip() {
        let mut b = Vec::new();
        block_push(&mut b, 100, 100, b"one");
        block_push(&mut b, 100, 105, b"");
        block_push(&mut b, 100, 100_000, b"three");
        let (e, ok) = block_entries(100, &b);
        assert!(ok);
        assert_eq!(
            e,
            vec![
                (100, &b"one"[..]),
                (105, &b""[..]),
                (100_000, &b"three"[..])
            ]
        );
        let (e, ok) = block_entries(100, &b[..b.len() - 1]);
        assert!(!ok);
        assert_eq!(e.len(), 2);
        let v = peer_entry(90, 100, &[100, 107, 300]);
        assert_eq!(peer_entry_ids(100, &v), Some((90, vec![100, 107, 300])));
        assert_eq!(peer_entry_ids(100, &v[..5]), None);
    }

    #[test]
    fn keys_sort_by_archive_then_time() {
        assert!(message_key(1, 999) < message_key(1, 1000));
        assert!(message_key(1, u64::MAX) < message_key(2, 0));
        assert!(peer_key(1, "a@x", 5) < peer_key(1, "a@x", 6));
        assert!(peer_key(1, "a@x", u64::MAX) < peer_key(1, "a@xy", 0));
        assert_eq!(id_of_key(&peer_key(3, "a@x", 42)), Some(42));
        assert_eq!(id_of_key(&message_key(3, 43)), Some(43));
        assert!(peer_count_key(1, "").len() == 4);
    }
}
