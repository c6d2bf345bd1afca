//! Cheap JID handling on the message path: parsing the `from`/`to`
//! attributes that every stanza carries, and taking the bare part of a JID.
//!
//! - [`parse`] is `Jid::new` (RFC 7622 preparation: nodeprep, nameprep with
//!   IDNA, resourceprep) memoised per thread: the same few thousand JIDs
//!   are parsed again and again by the router and by each module that looks
//!   at a message, and the preparation is most of a message's JID cost.
//!   The cache is a pure memo of a pure function (the same text always
//!   gives the same result, invalid text is never cached, so errors are
//!   always computed fresh); it is bounded ([`CACHE_ENTRIES`] per thread,
//!   emptied when full) and holds nothing a session owns.
//! - [`bare`] / [`bare_of_full`] give the bare JID by truncating a copy of
//!   the normalised text. `jid`'s own `to_bare` formats the parts anew
//!   (`format!`), which costs several times more.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;

use jid::{BareJid, FullJid, Jid};

/// Entries in each thread's cache before it is emptied.
pub const CACHE_ENTRIES: usize = 4096;
/// Texts longer than this are parsed without the cache (a JID is at most
/// 3 × 1023 bytes plus separators; chat JIDs are far shorter).
const CACHED_LEN: usize = 256;

thread_local! {
    static CACHE: RefCell<HashMap<Box<str>, Jid>> = RefCell::new(HashMap::new());
}

/// `Jid::new(text).ok()`, memoised per thread.
pub fn parse(text: &str) -> Option<Jid> {
    if text.len() > CACHED_LEN {
        return Jid::new(text).ok();
    }
    if let Some(j) = CACHE.with(|c| c.borrow().get(text).cloned()) {
        return Some(j);
    }
    let j = Jid::new(text).ok()?;
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= CACHE_ENTRIES {
            c.clear();
        }
        c.insert(text.into(), j.clone());
    });
    Some(j)
}

/// The bare part of `jid` (what `jid.to_bare()` gives, without formatting).
pub fn bare(jid: &Jid) -> BareJid {
    jid.clone().into_bare()
}

/// The bare part of a full JID.
pub fn bare_of_full(jid: &FullJid) -> BareJid {
    jid.clone().into_bare()
}

/// The normalised text of the JID `text` (what `parse(text)?.as_str()`
/// gives), borrowed from `text` when it is already normalised — as the
/// addresses of nearly every message are — so no JID is copied.
pub fn normalised(text: &str) -> Option<Cow<'_, str>> {
    if text.len() > CACHED_LEN {
        return Jid::new(text)
            .ok()
            .map(|j| Cow::Owned(j.as_str().to_string()));
    }
    let hit = CACHE.with(|c| {
        c.borrow()
            .get(text)
            .map(|j| (j.as_str() != text).then(|| j.as_str().to_string()))
    });
    match hit {
        Some(None) => Some(Cow::Borrowed(text)),
        Some(Some(other)) => Some(Cow::Owned(other)),
        None => {
            let j = parse(text)?;
            Some(match j.as_str() == text {
                true => Cow::Borrowed(text),
                false => Cow::Owned(j.as_str().to_string()),
            })
        }
    }
}

/// The bare part of a normalised JID's text (up to its first `/`: nodes
/// and domains hold none).
pub fn bare_text(jid: &str) -> &str {
    jid.find('/').map_or(jid, |i| &jid[..i])
}

/// `FullJid::new(text).ok()` through the same cache.
pub fn parse_full(text: &str) -> Option<FullJid> {
    parse(text)?.try_into_full().ok()
}

/// `.bare()` on JIDs: [`bare`] / [`bare_of_full`] as a method.
pub trait Bare {
    /// The bare part, without formatting it anew.
    fn bare(&self) -> BareJid;
}

impl Bare for Jid {
    fn bare(&self) -> BareJid {
        bare(self)
    }
}

impl Bare for FullJid {
    fn bare(&self) -> BareJid {
        bare_of_full(self)
    }
}

/// Whether `jid`'s bare part is `account` (no allocation).
pub fn is_of(jid: &Jid, account: &BareJid) -> bool {
    bare_text(jid.as_str()) == account.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_agrees_with_jid_new_and_caches_only_valid_text() {
        for text in [
            "Alice@Example.COM/Phone",
            "alice@example.com",
            "example.com",
            "example.com/res",
            "ünïcode@exämple.org/ß",
        ] {
            let want = Jid::new(text).unwrap();
            assert_eq!(parse(text), Some(want.clone()), "{text}");
            // Second time from the cache: the same.
            assert_eq!(parse(text), Some(want), "{text}");
        }
        for bad in [
            "",
            "@example.com",
            "a@b@c",
            "alice@/res",
            "alice@example.com/",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        let long = format!("{}@example.com", "a".repeat(300));
        assert_eq!(parse(&long), Jid::new(&long).ok());
    }

    #[test]
    fn normalised_text_is_borrowed_when_it_is_normal_already() {
        let long = format!("{}@Example.com/R", "a".repeat(300));
        for text in [
            "alice@example.com/phone",
            "Alice@Example.COM/Phone",
            "example.com",
            "ünïcode@exämple.org/ß",
            long.as_str(),
        ] {
            let want = Jid::new(text).unwrap();
            // Twice: the second time from the cache.
            for _ in 0..2 {
                let got = normalised(text).unwrap();
                assert_eq!(got, want.as_str(), "{text}");
                assert_eq!(
                    matches!(got, Cow::Borrowed(_)),
                    want.as_str() == text,
                    "{text}"
                );
            }
            assert_eq!(
                bare_text(&normalised(text).unwrap()),
                want.clone().into_bare().as_str()
            );
        }
        for bad in ["", "a@b@c", "alice@example.com/"] {
            assert_eq!(normalised(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_cache_stays_bounded() {
        for i in 0..(CACHE_ENTRIES * 2 + 7) {
            assert!(parse(&format!("u{i}@example.com/r")).is_some());
        }
        CACHE.with(|c| assert!(c.borrow().len() <= CACHE_ENTRIES));
    }

    #[test]
    fn bare_parts_match_to_bare() {
        for text in [
            "alice@example.com/phone",
            "alice@example.com",
            "example.com/x",
            "example.com",
        ] {
            let j = Jid::new(text).unwrap();
            assert_eq!(bare(&j), j.to_bare(), "{text}");
            assert!(is_of(&j, &j.to_bare()));
            if let Ok(f) = FullJid::new(text) {
                assert_eq!(bare_of_full(&f), f.to_bare());
            }
        }
        let a = BareJid::new("alice@example.com").unwrap();
        assert!(!is_of(&Jid::new("alice@example.co").unwrap(), &a));
        assert!(!is_of(
            &Jid::new("bob@example.com/alice@example.com").unwrap(),
            &a
        ));
    }
}
