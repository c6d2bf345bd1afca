//! The XEP-0198 stream management state of one session, as data: the
//! counters and the queue of unacknowledged stanzas, shared by the
//! session's reader (which counts handled inbound stanzas and processes
//! `<a/>`) and its writer (which keeps what it wrote until acknowledged).
//! A leaf, so the session table's handle (`sessions.rs`) can carry it without
//! importing `c2s/`; the protocol — `<enable/>`, `<r/>`, `<a/>`,
//! `<resume/>`, the detached wait — is `c2s/sm/`.
//!
//! Counters are `u32` and wrap around at 2^32 as the XEP requires: the
//! number of stanzas an `<a h='…'/>` acknowledges is `h - acked` in wrapping
//! arithmetic. The state exists only once a client sent `<enable/>`; an
//! idle session with everything acknowledged holds an empty queue.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use xep_support::element::Element;

/// The XEP-0198 state of a session. `C` is what a resumption sends the
/// session's task to claim it (the session table names it:
/// `sessions::Claim`).
pub struct SmState<C> {
    /// The resumption id, when the client asked for `resume`.
    pub id: Option<String>,
    /// How long the session waits for a resumption once its connection drops.
    pub timeout: Duration,
    /// Set by the writer once `<enabled/>` was written: stanzas written from
    /// then on are counted and kept.
    pub counting: bool,
    /// Stanzas received from the client and handled.
    pub h_in: u32,
    /// Stanzas the client acknowledged.
    pub acked: u32,
    /// Stanzas written and not yet acknowledged, oldest first.
    pub unacked: VecDeque<Box<Element>>,
    /// When the server's outstanding `<r/>` was sent.
    pub ack_requested: Option<Instant>,
    /// Where a resumption asks the session's task to hand over.
    pub claims: Option<mpsc::Sender<C>>,
}

/// Outcome of an acknowledgement.
#[derive(Debug, PartialEq, Eq)]
pub enum AckError {
    /// `h` acknowledges more stanzas than were sent.
    TooHigh { h: u32, sent: u32 },
}

impl<C> SmState<C> {
    pub fn new(id: Option<String>, timeout: Duration) -> Self {
        SmState {
            id,
            timeout,
            counting: false,
            h_in: 0,
            acked: 0,
            unacked: VecDeque::new(),
            ack_requested: None,
            claims: None,
        }
    }

    /// Stanzas sent (and counted) so far, modulo 2^32.
    pub fn sent(&self) -> u32 {
        self.acked.wrapping_add(self.unacked.len() as u32)
    }

    /// Check an acknowledgement without applying it.
    pub fn check_ack(&self, h: u32) -> Result<usize, AckError> {
        let n = h.wrapping_sub(self.acked) as usize;
        if n > self.unacked.len() {
            return Err(AckError::TooHigh {
                h,
                sent: self.sent(),
            });
        }
        Ok(n)
    }

    /// Apply `<a h='…'/>` (or the `h` of `<resume/>`): drop what it confirms.
    pub fn ack(&mut self, h: u32) -> Result<(), AckError> {
        let n = self.check_ack(h)?;
        self.unacked.drain(..n);
        self.acked = h;
        self.ack_requested = None;
        if self.unacked.is_empty() {
            // Give the memory back: an idle session keeps no queue storage.
            self.unacked = VecDeque::new();
        }
        Ok(())
    }

    /// Note one more handled inbound stanza.
    pub fn handled(&mut self) {
        self.h_in = self.h_in.wrapping_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el() -> Box<Element> {
        Box::new(Element::new("message", "jabber:client"))
    }

    #[test]
    fn acks_wrap_around() {
        let mut s: SmState<()> = SmState::new(None, Duration::from_secs(1));
        s.acked = u32::MAX - 1;
        for _ in 0..4 {
            s.unacked.push_back(el());
        }
        assert_eq!(s.sent(), 2);
        s.ack(u32::MAX).unwrap();
        assert_eq!(s.unacked.len(), 3);
        s.ack(1).unwrap();
        assert_eq!(s.unacked.len(), 1);
        assert_eq!(s.ack(5), Err(AckError::TooHigh { h: 5, sent: 2 }));
        s.ack(2).unwrap();
        assert!(s.unacked.is_empty());
        s.h_in = u32::MAX;
        s.handled();
        assert_eq!(s.h_in, 0);
    }
}
