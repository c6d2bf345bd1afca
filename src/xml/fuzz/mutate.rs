//! Structure-aware mutations of XMPP streams, and shrinking of a failing
//! input, driven by a small seeded generator (same seed, same inputs).
//!
//! The mutations aim at what the reader must refuse: forbidden characters
//! raw and referenced, broken attribute syntax, bad names and prefixes,
//! restricted XML, deep nesting and repetition towards the limits.

use std::time::{Duration, Instant};

/// SplitMix64: tiny, fast, and stable across versions of everything.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Characters and byte sequences, forbidden and borderline.
const RAW: &[&[u8]] = &[
    b"\x00",
    b"\x01",
    b"\x08",
    b"\x0B",
    b"\x0C",
    b"\x0E",
    b"\x1F",
    b"\x7F",
    "\u{85}".as_bytes(),
    "\u{2028}".as_bytes(),
    "\u{D7FF}".as_bytes(),
    "\u{E000}".as_bytes(),
    "\u{FFFD}".as_bytes(),
    "\u{FFFE}".as_bytes(),
    "\u{FFFF}".as_bytes(),
    "\u{10FFFF}".as_bytes(),
    b"\xED\xA0\x80",     // an encoded surrogate: not UTF-8
    b"\xC0\xBC",         // an overlong '<'
    b"\xF4\x90\x80\x80", // past U+10FFFF
    b"\x80",
    b"\xFF",
    b"\t",
    b"\r",
    b"\r\n",
    "é".as_bytes(),
];

/// Code points for character references.
const CODES: &[u32] = &[
    0,
    1,
    8,
    9,
    0xA,
    0xB,
    0xC,
    0xD,
    0x1F,
    0x20,
    0x26,
    0x3C,
    0x7F,
    0x85,
    0xD7FF,
    0xD800,
    0xDBFF,
    0xDC00,
    0xDFFF,
    0xE000,
    0xFFFD,
    0xFFFE,
    0xFFFF,
    0x10000,
    0x1FFFE,
    0x10FFFF,
    0x110000,
    0xFFFF_FFFF,
];

const TOKENS: &[&str] = &[
    "<",
    ">",
    "&",
    "'",
    "\"",
    "=",
    "/",
    "/>",
    "</",
    ":",
    " ",
    "<![CDATA[x]]>",
    "<![CDATA[",
    "]]>",
    "]]",
    "<!-- c -->",
    "<!--",
    "-->",
    "<?pi x?>",
    "<?xml version='1.0'?>",
    "<!DOCTYPE a>",
    "<!ENTITY e 'x'>",
    "&lt;",
    "&amp;",
    "&foo;",
    "&lt",
    "&#;",
    "&#x;",
    "&#X41;",
    "&#0000065;",
    "</stream:stream>",
    "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>",
    "<a/>",
    "<a>",
    "</a>",
    "<p:a xmlns:p='urn:p'/>",
    "<q:a/>",
];

const NAMES: &[&str] = &[
    "a",
    "1a",
    "-a",
    ".a",
    "a-b.c_d",
    ":a",
    "a:",
    "a:b:c",
    "p:a",
    "q:a",
    "xml:lang",
    "xmlns:p",
    "xmlns",
    "xmlfoo",
    "XML",
    "_",
    "\u{D7}",
    "a\u{B7}b",
    "\u{B7}a",
    "é",
    "\u{300}a",
    "a\u{300}",
    "\u{37E}",
    "\u{2070}",
    "\u{FFFD}",
    "\u{10000}",
    "\u{F0000}",
    "a\u{0}",
];

const ATTRS: &[&str] = &[
    " a='1'",
    "a='1'",
    " a=\"1\"",
    " a='1\"",
    " a=1",
    " a",
    " a = '1' ",
    " a='1' a='2'",
    " xmlns:p='urn:p'",
    " xmlns:p=''",
    " xmlns=''",
    " xmlns='urn:x'",
    " p:a='1'",
    " q:a='1'",
    " xmlns:p='urn:p' xmlns:r='urn:p' p:a='1' r:a='2'",
    " xmlns:xml='urn:x'",
    " xmlns:xml='http://www.w3.org/XML/1998/namespace'",
    " xmlns:p='http://www.w3.org/XML/1998/namespace'",
    " xmlns:xmlns='urn:x'",
    " xmlns:p='http://www.w3.org/2000/xmlns/'",
    " xml:lang='en'",
    " a='<'",
    " a='>'",
    " a='&'",
    " a='&#1;'",
    " a='&#xFFFE;'",
    " a='\u{1}'",
    " a='\t\r\n'",
    " a='<![CDATA[y]]>'",
];

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':') || b >= 0x80
}

/// Positions just after the `<` of a start or end tag.
fn tag_starts(data: &[u8]) -> Vec<usize> {
    (0..data.len())
        .filter(|&i| {
            data[i] == b'<'
                && data
                    .get(i + 1)
                    .is_some_and(|&b| b == b'/' || is_name_byte(b))
        })
        .map(|i| i + 1)
        .collect()
}

fn name_end(data: &[u8], mut i: usize) -> usize {
    if data.get(i) == Some(&b'/') {
        i += 1;
    }
    while i < data.len() && is_name_byte(data[i]) {
        i += 1;
    }
    i
}

fn char_ref(rng: &mut Rng) -> String {
    let c = *rng.pick(CODES);
    match rng.below(4) {
        0 => format!("&#{c};"),
        1 => format!("&#x{c:x};"),
        2 => format!("&#x{c:X};"),
        _ => format!("&#{c:07};"),
    }
}

/// Apply one to four mutations to `data`; `other` is another corpus entry
/// to splice from. The result is at most `max_len` bytes.
pub fn mutate(data: &mut Vec<u8>, other: &[u8], rng: &mut Rng, max_len: usize) {
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(data.len() + 1);
        match rng.below(14) {
            0 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] ^= 1 << rng.below(8);
            }
            1 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] = *rng.pick(b"\x00\x01\x0B<>&'\"=:/ \x7F\x80\xC0\xED\xEF\xFF");
            }
            2 => {
                let raw: &[u8] = rng.pick::<&[u8]>(RAW);
                splice(data, at, raw)
            }
            3 => splice(data, at, char_ref(rng).as_bytes()),
            4 => splice(data, at, rng.pick(TOKENS).as_bytes()),
            5 | 6 => {
                // An attribute right after an element's name.
                let tags = tag_starts(data);
                if !tags.is_empty() {
                    let i = name_end(data, *rng.pick(&tags));
                    splice(data, i, rng.pick(ATTRS).as_bytes());
                }
            }
            7 => {
                // Rename an element (start or end tag).
                let tags = tag_starts(data);
                if !tags.is_empty() {
                    let mut s = *rng.pick(&tags);
                    if data.get(s) == Some(&b'/') {
                        s += 1;
                    }
                    let e = name_end(data, s);
                    data.splice(s..e, rng.pick(NAMES).bytes());
                }
            }
            8 => {
                // Nest: open and close elements around nothing.
                let most = if rng.below(4) == 0 { 600 } else { 8 };
                let depth = 1 + rng.below(most);
                let mut nest = "<x>".repeat(depth);
                nest.push_str(&"</x>".repeat(depth));
                splice(data, at, nest.as_bytes());
            }
            9 if !data.is_empty() => {
                let i = rng.below(data.len());
                let n = (1 + rng.below(16)).min(data.len() - i);
                data.drain(i..i + n);
            }
            10 | 11 if !data.is_empty() => {
                // Repeat a range, once or many times.
                let i = rng.below(data.len());
                let n = (1 + rng.below(64)).min(data.len() - i);
                let many = rng.below(3) == 0;
                let times = if many { 1 + rng.below(200) } else { 1 };
                let piece = data[i..i + n].repeat(times);
                splice(data, at, &piece);
            }
            12 if !other.is_empty() => {
                let i = rng.below(other.len());
                let n = (1 + rng.below(128)).min(other.len() - i);
                splice(data, at, &other[i..i + n]);
            }
            _ => {
                let tags = tag_starts(data);
                if !tags.is_empty() {
                    let s = *rng.pick(&tags);
                    let e = name_end(data, s);
                    splice(data, e, rng.pick(NAMES).as_bytes());
                }
            }
        }
    }
    data.truncate(max_len);
}

fn splice(data: &mut Vec<u8>, at: usize, bytes: &[u8]) {
    let at = at.min(data.len());
    data.splice(at..at, bytes.iter().copied());
}

/// Shrink `input` while `fails` still says the same class of failure, by
/// removing ever smaller ranges, within `budget`.
pub fn minimise(input: &[u8], fails: impl Fn(&[u8]) -> bool, budget: Duration) -> Vec<u8> {
    let start = Instant::now();
    let mut cur = input.to_vec();
    let mut chunk = (cur.len() / 2).max(1);
    loop {
        let mut progressed = false;
        let mut i = 0;
        while i < cur.len() {
            if start.elapsed() > budget {
                return cur;
            }
            let mut cand = cur.clone();
            cand.drain(i..(i + chunk).min(cur.len()));
            if fails(&cand) {
                cur = cand;
                progressed = true;
            } else {
                i += chunk;
            }
        }
        if !progressed {
            if chunk == 1 {
                return cur;
            }
            chunk /= 2;
        }
    }
}
