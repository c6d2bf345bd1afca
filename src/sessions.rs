//! The session table: every bound session by bare and full JID, and the
//! delivery of a stanza into one session's queue (the router, `router.rs`,
//! decides which sessions; this file only holds them and hands over).
//!
//! Each session owns a bounded queue ([`crate::queue`], [`SESSION_QUEUE`] stanzas) drained by
//! its writer task. Back-pressure policy: delivery waits for room in the
//! recipient's queue for at most [`SEND_WAIT`]; that wait slows the
//! *sender's* reader (and so, through TCP, the sending client) down to the
//! recipient's pace. A recipient whose queue stays full that long is a stuck
//! reader: it is disconnected with `<policy-violation/>` and the stanza is
//! bounced to its sender with `<resource-constraint/>` (a chat message
//! addressed to its full JID follows the session's leftovers to the account
//! instead) — never
//! dropped silently.
//!
//! Leftovers of an ending session: a session that leaves the table
//! ([`Sessions::unbind`], or replaced in [`Sessions::bind`]) is marked *ending*
//! until its clean-up ([`Sessions::release`]) has rerouted the stanzas it never
//! delivered (XEP-0198 unacked ones, its queue). Meanwhile a message for that
//! account that is not taken by one of its live full JIDs waits
//! ([`Sessions::wait_backlog`]) so it cannot overtake that backlog on its way
//! to another resource or to offline storage. Checking costs one atomic load
//! while no session anywhere is ending.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use xep_support::jids::Bare;

use jid::{BareJid, FullJid};
use tokio::sync::{oneshot, Notify};

use crate::queue;
use crate::stream::StreamCondition;
use xep_support::element::Element;

/// Stanzas a session's outgoing queue holds.
pub const SESSION_QUEUE: usize = 256;
/// How long delivery waits for room in a full queue.
pub const SEND_WAIT: Duration = Duration::from_secs(5);
/// How long a message waits for an ending session's backlog to be rerouted
/// before it goes on anyway (the writer of a dead connection may take up to
/// 35 s to give up).
pub const BACKLOG_WAIT: Duration = Duration::from_secs(40);

/// What a session's writer task is asked to do.
#[derive(Debug)]
pub enum Outgoing {
    /// Write a stanza (boxed: every queued item stays 16 bytes).
    Stanza(Box<Element>),
    /// Close the stream, with a stream error if given (boxed: a thin
    /// pointer keeps the item at 16 bytes).
    Close(Option<Box<StreamErrorOut>>),
    /// Signal once everything queued before this was written to the socket.
    Ack(oneshot::Sender<()>),
    /// Write a stream-level element that is not a stanza (XEP-0198 `<a/>`,
    /// `<failed/>`): never counted, never kept for resending.
    Nonza(Box<Element>),
    /// Write XEP-0198 `<enabled/>` and count every stanza written after it.
    SmEnabled(Box<Element>),
    /// XEP-0352: the client became active; write what was held back.
    Flush,
}

/// The XEP-0198 state a session's handle carries (the type is the leaf
/// [`crate::sm_state`]; the protocol is `c2s/sm/`).
pub type SmState = crate::sm_state::SmState<Claim>;

/// What a XEP-0198 resumption takes over from the session it resumes: the
/// queue of stanzas routed to the session (its handle and XEP-0198 state
/// stay shared).
pub type Takeover = queue::Receiver<Outgoing>;

/// A request to hand a session over to a new connection.
pub type Claim = oneshot::Sender<Takeover>;

/// A stream error a session's writer is to send: its condition and, for
/// the log and the peer, why (if more than the condition says).
pub type StreamErrorOut = (StreamCondition, Option<String>);

// Size guards (64-bit targets): docs/architecture.md, "Memory per
// session", counts these in what every idle session costs. A change that
// moves one updates that section (and measures) along with the number here.
// Every queued item is 16 bytes (the payloads are boxed, see above).
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<Outgoing>() == 16);
// The session queue while empty: 112 bytes.
#[cfg(target_pointer_width = "64")]
const _: () = assert!(queue::empty_size::<Outgoing>() == 112);
// The session table's handle: 336 bytes (328 before the archive's
// durability ticket).
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<SessionHandle>() == 336);

/// A bound session as the session table holds it.
pub struct SessionHandle {
    pub id: u64,
    pub jid: FullJid,
    pub tx: queue::Sender<Outgoing>,
    /// Signalled when the session must stop reading (kicked, replaced, shut down).
    pub stop: Notify,
    /// Whether the session has sent available presence.
    pub available: AtomicBool,
    /// The priority of its last available presence.
    pub priority: AtomicI32,
    /// Whether the session requested the roster (and so gets roster pushes).
    pub interested: AtomicBool,
    /// Its last available presence, to answer probes (RFC 6121 §4.3.2).
    pub last_presence: std::sync::Mutex<Option<Element>>,
    /// Entities it sent directed presence to (RFC 6121 §4.6), told when it goes.
    pub directed: std::sync::Mutex<HashSet<String>>,
    /// XEP-0198 state, once the client enabled stream management.
    pub sm: std::sync::OnceLock<Arc<std::sync::Mutex<SmState>>>,
    /// XEP-0352: the client said it is inactive.
    pub csi_inactive: AtomicBool,
    /// XEP-0198: the connection dropped and the session waits for a
    /// resumption; its queue is not being drained.
    pub detached: AtomicBool,
    /// When the session was bound (for `rookery ctl connected_users_info`).
    pub since: std::time::Instant,
    /// The client's address and whether the stream is TLS (set once at bind).
    pub origin: std::sync::OnceLock<(std::net::SocketAddr, bool)>,
    /// It left the session table and its leftovers are not yet rerouted
    /// (see [`Sessions::release`]).
    pub ending: AtomicBool,
    /// The archive's ticket after the last message this session sent was
    /// routed: its acknowledgements wait for it ([`crate::server::Server::archive_durable`]).
    pub archive_ticket: std::sync::atomic::AtomicU64,
}

impl SessionHandle {
    /// Ask the session to close its stream (with an optional stream error).
    pub fn close(&self, condition: Option<StreamCondition>) {
        let _ = self
            .tx
            .try_send(Outgoing::Close(condition.map(|c| Box::new((c, None)))));
        self.stop.notify_one();
    }
}

/// Why a bind was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum BindRefused {
    /// `max_user_sessions` reached.
    TooManySessions,
}

/// The outcome of offering a stanza to a session.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery {
    Delivered,
    /// The session is gone.
    Gone,
    /// The session's queue stayed full: it was disconnected.
    Stuck,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The session table.
#[derive(Default)]
pub struct Sessions {
    sessions: RwLock<HashMap<BareJid, Vec<Arc<SessionHandle>>>>,
    /// Accounts with ending sessions (how many), see [`Sessions::release`].
    ending: std::sync::Mutex<HashMap<BareJid, usize>>,
    /// Number of ending sessions on the server (the fast path: zero).
    ending_total: AtomicUsize,
    /// Signalled whenever an ending session was released.
    released: Notify,
}

impl Sessions {
    pub fn new() -> Self {
        Self::default()
    }

    /// Make a handle for a new session.
    pub fn new_handle(jid: FullJid, tx: queue::Sender<Outgoing>) -> Arc<SessionHandle> {
        Arc::new(SessionHandle {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            jid,
            tx,
            stop: Notify::new(),
            available: AtomicBool::new(false),
            priority: AtomicI32::new(0),
            interested: AtomicBool::new(false),
            last_presence: std::sync::Mutex::new(None),
            directed: std::sync::Mutex::new(HashSet::new()),
            sm: std::sync::OnceLock::new(),
            csi_inactive: AtomicBool::new(false),
            detached: AtomicBool::new(false),
            since: std::time::Instant::now(),
            origin: std::sync::OnceLock::new(),
            ending: AtomicBool::new(false),
            archive_ticket: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Register a bound session. A session with the same full JID is
    /// returned so the caller can close it with `<conflict/>` (it is removed
    /// from the table here). `max` is the user's session limit.
    pub fn bind(
        &self,
        handle: Arc<SessionHandle>,
        max: Option<usize>,
    ) -> Result<Option<Arc<SessionHandle>>, BindRefused> {
        let bare = handle.jid.bare();
        let mut table = self.sessions.write().unwrap_or_else(|e| e.into_inner());
        let list = table.entry(bare).or_default();
        let old_pos = list.iter().position(|s| s.jid == handle.jid);
        let others = list.len() - usize::from(old_pos.is_some());
        if let Some(max) = max {
            if others >= max {
                return Err(BindRefused::TooManySessions);
            }
        }
        let replaced = old_pos.map(|p| list.remove(p));
        if let Some(old) = &replaced {
            self.mark_ending(old);
        }
        list.push(handle);
        Ok(replaced)
    }

    /// Remove a session (only if it is still the one registered under its
    /// JID). It stays *ending* until [`Sessions::release`].
    pub fn unbind(&self, handle: &SessionHandle) {
        let bare = handle.jid.bare();
        let mut table = self.sessions.write().unwrap_or_else(|e| e.into_inner());
        if let Some(list) = table.get_mut(&bare) {
            let before = list.len();
            list.retain(|s| s.id != handle.id);
            if list.len() != before {
                // Marked while the table is still locked: nobody sees the
                // account without the session and without the mark.
                self.mark_ending(handle);
            }
            if list.is_empty() {
                table.remove(&bare);
            }
        }
    }

    fn mark_ending(&self, handle: &SessionHandle) {
        if handle.ending.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut ending = self.ending.lock().unwrap_or_else(|e| e.into_inner());
        *ending.entry(handle.jid.bare()).or_default() += 1;
        self.ending_total.fetch_add(1, Ordering::AcqRel);
    }

    /// The session's leftovers were rerouted (or handed to a resumption):
    /// messages for its account no longer wait for it. Idempotent.
    pub fn release(&self, handle: &SessionHandle) {
        if !handle.ending.swap(false, Ordering::AcqRel) {
            return;
        }
        {
            let mut ending = self.ending.lock().unwrap_or_else(|e| e.into_inner());
            let bare = handle.jid.bare();
            if let Some(n) = ending.get_mut(&bare) {
                *n -= 1;
                if *n == 0 {
                    ending.remove(&bare);
                }
            }
            self.ending_total.fetch_sub(1, Ordering::AcqRel);
        }
        self.released.notify_waiters();
    }

    /// Whether a session of `bare` is ending (its leftovers not yet rerouted).
    pub fn is_ending(&self, bare: &BareJid) -> bool {
        if self.ending_total.load(Ordering::Acquire) == 0 {
            return false;
        }
        let ending = self.ending.lock().unwrap_or_else(|e| e.into_inner());
        ending.contains_key(bare)
    }

    /// Wait until no session of `bare` is ending, at most [`BACKLOG_WAIT`].
    pub async fn wait_backlog(&self, bare: &BareJid) {
        if !self.is_ending(bare) {
            return;
        }
        let deadline = tokio::time::Instant::now() + BACKLOG_WAIT;
        loop {
            let notified = self.released.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !self.is_ending(bare) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                tracing::warn!("{bare}: an ending session's leftovers took too long; going on");
                return;
            }
        }
    }

    /// Whether `bare` has a bound session.
    pub fn has_sessions(&self, bare: &BareJid) -> bool {
        let table = self.sessions.read().unwrap_or_else(|e| e.into_inner());
        table.get(bare).is_some_and(|l| !l.is_empty())
    }

    /// The sessions of one account.
    pub fn sessions_of(&self, bare: &BareJid) -> Vec<Arc<SessionHandle>> {
        let table = self.sessions.read().unwrap_or_else(|e| e.into_inner());
        table.get(bare).cloned().unwrap_or_default()
    }

    /// The session bound to a full JID.
    pub fn session(&self, full: &FullJid) -> Option<Arc<SessionHandle>> {
        let table = self.sessions.read().unwrap_or_else(|e| e.into_inner());
        table
            .get(&full.bare())
            .and_then(|l| l.iter().find(|s| s.jid == *full).cloned())
    }

    /// Every session.
    pub fn all_sessions(&self) -> Vec<Arc<SessionHandle>> {
        let table = self.sessions.read().unwrap_or_else(|e| e.into_inner());
        table.values().flatten().cloned().collect()
    }

    /// Number of bound sessions.
    pub fn count(&self) -> usize {
        let table = self.sessions.read().unwrap_or_else(|e| e.into_inner());
        table.values().map(Vec::len).sum()
    }

    /// The available resources of an account with the highest non-negative
    /// priority (RFC 6121 §8.5.2.1.1 lets a server pick these).
    pub fn best_resources(&self, bare: &BareJid) -> Vec<Arc<SessionHandle>> {
        let list = self.sessions_of(bare);
        let eligible: Vec<_> = list
            .into_iter()
            .filter(|s| {
                s.available.load(Ordering::Relaxed) && s.priority.load(Ordering::Relaxed) >= 0
            })
            .collect();
        let Some(top) = eligible
            .iter()
            .map(|s| s.priority.load(Ordering::Relaxed))
            .max()
        else {
            return Vec::new();
        };
        eligible
            .into_iter()
            .filter(|s| s.priority.load(Ordering::Relaxed) == top)
            .collect()
    }

    /// Offer a stanza to one session, waiting for room as the policy says.
    pub async fn deliver(&self, session: &SessionHandle, stanza: Element) -> Delivery {
        self.deliver_or_return(session, stanza).await.0
    }

    /// [`Sessions::deliver`], giving the stanza back when it was not
    /// delivered (so a caller that reroutes it needs no copy beforehand).
    pub async fn deliver_or_return(
        &self,
        session: &SessionHandle,
        stanza: Element,
    ) -> (Delivery, Option<Element>) {
        let back = |o: Outgoing| match o {
            Outgoing::Stanza(s) => Some(*s),
            _ => None,
        };
        match session.tx.try_send(Outgoing::Stanza(Box::new(stanza))) {
            Ok(()) => (Delivery::Delivered, None),
            Err(queue::TrySendError::Closed(o)) => (Delivery::Gone, back(o)),
            Err(queue::TrySendError::Full(o)) if session.detached.load(Ordering::Relaxed) => {
                // A detached session's queue only fills while nobody reads
                // it: end the session now (what it holds goes to another
                // resource or offline storage) rather than wait.
                tracing::info!(jid = %session.jid, "queue of a detached session is full; ending it");
                session.close(None);
                self.unbind(session);
                crate::metrics::delivery_dropped();
                (Delivery::Stuck, back(o))
            }
            Err(queue::TrySendError::Full(Outgoing::Stanza(stanza))) => {
                match session
                    .tx
                    .send_timeout(Outgoing::Stanza(stanza), SEND_WAIT)
                    .await
                {
                    Ok(()) => (Delivery::Delivered, None),
                    Err(queue::SendTimeoutError::Closed(o)) => (Delivery::Gone, back(o)),
                    Err(queue::SendTimeoutError::Timeout(o)) => {
                        tracing::warn!(jid = %session.jid, "output queue stayed full; disconnecting");
                        session.close(Some(StreamCondition::PolicyViolation));
                        self.unbind(session);
                        crate::metrics::delivery_dropped();
                        (Delivery::Stuck, back(o))
                    }
                }
            }
            Err(queue::TrySendError::Full(o)) => (Delivery::Gone, back(o)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle(j: &str) -> (Arc<SessionHandle>, queue::Receiver<Outgoing>) {
        let (tx, rx) = queue::channel(2);
        (Sessions::new_handle(FullJid::new(j).unwrap(), tx), rx)
    }

    #[test]
    fn bind_replaces_same_full_jid_and_limits_sessions() {
        let r = Sessions::new();
        let (a, _ra) = handle("a@x/1");
        let (a2, _ra2) = handle("a@x/1");
        let (b, _rb) = handle("a@x/2");
        assert!(r.bind(a.clone(), Some(2)).unwrap().is_none());
        let replaced = r.bind(a2.clone(), Some(2)).unwrap().unwrap();
        assert_eq!(replaced.id, a.id);
        assert!(r.bind(b, Some(2)).unwrap().is_none());
        let (c, _rc) = handle("a@x/3");
        assert!(matches!(
            r.bind(c, Some(2)),
            Err(BindRefused::TooManySessions)
        ));
        assert_eq!(r.count(), 2);
        r.unbind(&a); // already replaced: no effect
        assert_eq!(r.count(), 2);
        r.unbind(&a2);
        assert_eq!(r.count(), 1);
    }

    #[test]
    fn best_resources_skip_negative_and_unavailable() {
        let r = Sessions::new();
        let (a, _ra) = handle("a@x/1");
        let (b, _rb) = handle("a@x/2");
        let (c, _rc) = handle("a@x/3");
        for h in [&a, &b, &c] {
            r.bind(h.clone(), None).unwrap();
        }
        a.available.store(true, Ordering::Relaxed);
        a.priority.store(-1, Ordering::Relaxed);
        b.available.store(true, Ordering::Relaxed);
        b.priority.store(5, Ordering::Relaxed);
        let best = r.best_resources(&BareJid::new("a@x").unwrap());
        assert_eq!(best.len(), 1);
        assert_eq!(best[0].id, b.id);
    }

    #[tokio::test(start_paused = true)]
    async fn stuck_recipient_is_disconnected() {
        let r = Sessions::new();
        let (a, _ra) = handle("a@x/1");
        r.bind(a.clone(), None).unwrap();
        let msg = || Element::new("message", "jabber:client");
        assert_eq!(r.deliver(&a, msg()).await, Delivery::Delivered);
        assert_eq!(r.deliver(&a, msg()).await, Delivery::Delivered);
        assert_eq!(r.deliver(&a, msg()).await, Delivery::Stuck);
        assert_eq!(r.count(), 0);
    }

    #[tokio::test]
    async fn messages_wait_for_an_ending_session_until_it_is_released() {
        let r = Arc::new(Sessions::new());
        let (a, _ra) = handle("a@x/1");
        let bare = BareJid::new("a@x").unwrap();
        r.bind(a.clone(), None).unwrap();
        assert!(!r.is_ending(&bare));
        r.unbind(&a);
        r.unbind(&a); // once only
        assert!(r.is_ending(&bare));
        assert!(!r.is_ending(&BareJid::new("b@x").unwrap()));
        let waiter = {
            let (r, bare) = (r.clone(), bare.clone());
            tokio::spawn(async move { r.wait_backlog(&bare).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        r.release(&a);
        r.release(&a);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert!(!r.is_ending(&bare));
        assert_eq!(r.ending_total.load(Ordering::Relaxed), 0);
    }
}
