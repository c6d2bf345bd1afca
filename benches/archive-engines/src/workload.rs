//! The chat workload: `accounts` accounts `bench1@localhost` ..; each chat
//! message from one account to another is archived twice (the sender's
//! archive, outgoing; the recipient's, incoming), as a 200-byte stanza with
//! an origin-id, the body made of random lowercase words (as compressible as
//! chat text, roughly).
//!
//! Archive ids: account i has archive i (0-based); `HEAVY` is a separate
//! archive (a busy account or, later, a room) used for the large archive.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::archive::Entry;

pub const HEAVY: u32 = 1_000_000;
pub const STANZA_BYTES: usize = 200;

pub struct Workload {
    rng: StdRng,
    pub accounts: u32,
    seq: u64,
}

pub fn jid(i: u32) -> String {
    format!("bench{}@localhost", i + 1)
}

impl Workload {
    pub fn new(accounts: u32, seed: u64) -> Workload {
        Workload {
            rng: StdRng::seed_from_u64(seed),
            accounts,
            seq: 0,
        }
    }

    fn origin(&mut self) -> String {
        let a: u128 = self.rng.gen();
        let h = format!("{a:032x}");
        format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }

    fn stanza(&mut self, from: &str, to: &str, origin: &str) -> Vec<u8> {
        self.seq += 1;
        let head = format!(
            "<message from='{from}/r' to='{to}' type='chat' id='m{}'><origin-id xmlns='urn:xmpp:sid:0' id='{origin}'/><body>",
            self.seq
        );
        let tail = "</body></message>";
        let mut s = head.into_bytes();
        let want = STANZA_BYTES.saturating_sub(s.len() + tail.len());
        let start = s.len();
        while s.len() - start < want {
            let wl = self.rng.gen_range(2..8);
            for _ in 0..wl {
                s.push(b'a' + self.rng.gen_range(0..26u8));
            }
            s.push(b' ');
        }
        s.truncate(start + want);
        s.extend_from_slice(tail.as_bytes());
        s
    }

    /// One chat message between two different random accounts: two entries.
    pub fn chat(&mut self, out: &mut Vec<Entry>) {
        let a = self.rng.gen_range(0..self.accounts);
        let mut b = self.rng.gen_range(0..self.accounts - 1);
        if b >= a {
            b += 1;
        }
        let (ja, jb) = (jid(a), jid(b));
        let origin = self.origin();
        let stanza = self.stanza(&ja, &jb, &origin);
        out.push(Entry {
            archive: a,
            peer: jb.clone(),
            outgoing: true,
            origin: origin.clone(),
            stanza: stanza.clone(),
        });
        out.push(Entry {
            archive: b,
            peer: ja,
            outgoing: false,
            origin,
            stanza,
        });
    }

    /// One incoming message into the heavy archive, from the accounts in turn.
    pub fn heavy(&mut self, out: &mut Vec<Entry>) {
        let p = (self.seq % self.accounts as u64) as u32;
        let from = jid(p);
        let origin = self.origin();
        let stanza = self.stanza(&from, "heavy@localhost", &origin);
        out.push(Entry {
            archive: HEAVY,
            peer: from,
            outgoing: false,
            origin,
            stanza,
        });
    }
}
