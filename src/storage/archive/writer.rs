//! The archive's write path: appends are queued in memory by the routing
//! threads and written by one applier thread, a batch (one
//! `ArchiveKv::write`) at a time; a flusher thread makes them durable.
//! Engine-neutral (see `kv.rs`); the journal and [`repair`] are for engines
//! whose batches are not atomic across trees (sled).
//!
//! - [`append`] gives each message its id (microseconds, strictly
//!   increasing across the server and across restarts: the high-water mark
//!   is written with every batch), checks its origin-id against the queue
//!   and the index (idempotency), queues it and returns: no disk I/O but one
//!   index read for messages with an origin-id. [`append_stanza`] (one
//!   message of the chat path) writes the stanza's XML straight into its
//!   encoded record before it takes the lock, so the lock covers only the
//!   owner lookup, the id and the push.
//! - The applier takes the whole queue under the write lock and the storage
//!   gate and writes it in one batch (records, indexes, counters, new
//!   owners, the high-water mark). Then it is "applied": reads wait for
//!   that ([`Writer::settle`]), so a query sees every message appended
//!   before it.
//! - The flusher runs `ArchiveKv::persist` (write + fsync of the engine's
//!   log: sled's, or fjall's journal with `SyncAll`) when a
//!   caller waits for durability ([`Writer::durable`]), or at the latest
//!   [`FLUSH_EVERY`] after an apply: an appended message is on disk within
//!   that plus one fsync, inside the 1 s bound of the module API.
//! - Tickets: every `append` call takes the next ticket. `applied` and
//!   `durable` are the tickets up to which batches were applied / flushed;
//!   [`Writer::durable`] waits for a ticket (the server holds a session's
//!   XEP-0198 `<a/>` and iq answers on it).
//! - A failed transaction or flush (a full disk) fails the tickets it
//!   covered (their waiters get an error), and `append` refuses new
//!   messages for [`RETRY_AFTER`], then tries again.
//! - The backlog is bounded: the bytes queued or applied but not yet
//!   flushed are counted, and past [`MAX_BACKLOG`] (an engine that stalls,
//!   a disk slower than the chat) `append` refuses new messages, as on a
//!   full disk, until the writer catches up: memory never grows without
//!   bound, and senders are told their message is not archived.
//! - Failure reports: the messages a failed write or flush lost (a flush
//!   covers the batches applied since the last one, kept until it is done)
//!   are queued as one [`ArchiveFailure`] on a bounded channel, before the
//!   tickets fail, so the server can tell each sender before it answers
//!   the sender's `<r/>` or next iq ([`Writer::take_failures`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use xep_support::archive::{Appended, Direction, NewMessage};
use xep_support::element::Element;
use xep_support::module::StoreError;

use super::kv::{self, ArchiveKv, Tree};
use super::record as rec;
use super::{owner_key, owner_rev_key, Inner, LAST_ID_KEY, NEXT_ARCHIVE_KEY};
use crate::storage::{ArchiveFailure, LostMessage, StorageError};

/// Appends gather this long before the applier writes them (unless a read
/// or a durability wait needs them now): larger batches, fewer blocks.
/// sled's cost per batch is mostly per insert (about four per archive the
/// batch touches: block, peer entry, two counters) and per new key (leaf
/// splits), whatever the messages per block, so the applier's CPU per
/// message falls with the gathering time: 500 ms instead of 250 costs
/// about 40 % less per message. Every batch also has fixed costs (sled
/// writes its log buffer out around each batch it applies, and the flush
/// after it is one more): at a low message rate those, not the messages,
/// are the archive's CPU; so batches gather for most of the durability
/// budget and the flush follows soon after ([`APPLY_EVERY`] +
/// [`FLUSH_EVERY`] = 550 ms plus one fsync, inside the 1 s bound;
/// docs/benchmarks.md, "Stop 19").
const APPLY_EVERY: Duration = Duration::from_millis(500);
/// Longest time an applied batch waits for its flush.
const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// After a failed write, appends are refused this long.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Longest a read waits for the applier (then it reads what is there).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Counters kept in memory by the applier (the cache is emptied beyond).
const COUNTS_CACHE: usize = 200_000;
/// Owners whose archive id is cached (the cache is emptied beyond).
const OWNER_CACHE: usize = 1_000_000;
/// Failure reports waiting for the server (beyond: logged and dropped).
const FAILURE_REPORTS: usize = 64;
/// Bytes of messages queued or applied and not flushed beyond which
/// appends are refused (about ten seconds of 10,000 messages a second).
pub const MAX_BACKLOG: usize = 64 << 20;
/// At most one log line about a full backlog this often.
const BACKLOG_LOG_EVERY: Duration = Duration::from_secs(10);

/// One queued message.
pub(super) struct Pending {
    archive: u32,
    id: u64,
    origin: Option<(Vec<u8>, String)>,
    /// The encoded record; the peer is read back from it ([`rec::peer_of`]),
    /// not kept twice.
    record: Vec<u8>,
}

impl Pending {
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The peer the record names (records are encoded here, so it is there).
    fn peer(&self) -> &str {
        rec::peer_of(&self.record).map_or("", |(p, _)| p)
    }

    /// What it holds in memory, for the backlog bound.
    fn cost(&self) -> usize {
        std::mem::size_of::<Pending>()
            + self.record.len()
            + self.origin.as_ref().map_or(0, |(k, o)| k.len() + o.len())
    }

    /// A message with a given id (import), for [`write_batch`].
    pub fn new(archive: u32, id: u64, m: &NewMessage) -> Pending {
        let peer = m.peer.as_str();
        Pending {
            archive,
            id,
            origin: m
                .origin_id
                .as_deref()
                .map(|o| (rec::origin_key(archive, peer, o), o.to_string())),
            record: rec::encode(m.direction, peer, m.origin_id.as_deref(), &m.xml),
        }
    }
}

/// The writer's state, under one mutex.
pub(super) struct WriterState {
    queue: Vec<Pending>,
    /// Tickets: last handed out, applied, flushed.
    submitted: u64,
    applied: u64,
    durable: u64,
    /// Highest ticket someone waits durability for.
    wanted: u64,
    /// When the oldest applied-but-unflushed batch was applied.
    unflushed_since: Option<Instant>,
    /// Origin-id keys queued and not yet applied (-> id).
    pending_origins: HashMap<Vec<u8>, u64>,
    /// Local owners' names (not chosen by remote senders): a fast hasher.
    owners: rustc_hash::FxHashMap<String, u32>,
    new_owners: Vec<(String, u32)>,
    next_archive: u32,
    /// The last failure and when.
    failed: Option<(StorageError, Instant)>,
    /// Batches applied and not flushed yet, with their last ticket (what
    /// a failed flush lost).
    unflushed: Vec<(u64, Vec<Pending>)>,
    /// Failure reports queued so far.
    reports: u64,
    stop: bool,
    /// The applier waits for work (so `append` wakes it; otherwise it
    /// finds the queue itself and no wake-up system call is spent).
    applier_idle: bool,
    /// A reader or a durability waiter needs the queue applied now.
    urgent: bool,
    /// When the oldest queued append came.
    queued_since: Option<Instant>,
    /// Bytes queued or applied and not flushed (see [`MAX_BACKLOG`]).
    backlog: usize,
    /// When a full backlog was last logged.
    backlog_logged: Option<Instant>,
}

impl WriterState {
    /// The persistent counters from `archive_owners` (and the high-water
    /// mark of the last batch from `archive_counts`).
    pub fn load(kv: &dyn ArchiveKv) -> Result<WriterState, StorageError> {
        let next_archive = kv
            .get(Tree::Owners, NEXT_ARCHIVE_KEY)?
            .and_then(|v| rec::u64_of(&v))
            .unwrap_or(1) as u32;
        let last_id = kv
            .get(Tree::Owners, LAST_ID_KEY)?
            .and_then(|v| rec::u64_of(&v))
            .unwrap_or(0);
        LAST_ID.fetch_max(last_id, Ordering::Relaxed);
        // The journal names the last batch begun (complete or repaired).
        if let Some(j) = kv.get(Tree::Owners, JOURNAL_KEY)? {
            if let Some(max) = j.get(..8).and_then(rec::u64_of) {
                LAST_ID.fetch_max(max, Ordering::Relaxed);
            }
        }
        if let Some(hwm) = kv.get(Tree::Counts, HWM_KEY)? {
            if let Some(max) = rec::u64_of(&hwm) {
                LAST_ID.fetch_max(max, Ordering::Relaxed);
            }
        }
        Ok(WriterState {
            queue: Vec::new(),
            submitted: 0,
            applied: 0,
            durable: 0,
            wanted: 0,
            unflushed_since: None,
            pending_origins: HashMap::new(),
            owners: rustc_hash::FxHashMap::default(),
            new_owners: Vec::new(),
            next_archive: next_archive.max(1),
            failed: None,
            unflushed: Vec::new(),
            reports: 0,
            stop: false,
            applier_idle: false,
            urgent: false,
            queued_since: None,
            backlog: 0,
            backlog_logged: None,
        })
    }
}

/// What waiters of durability see.
#[derive(Clone, Copy, Debug, Default)]
struct Durable {
    /// Tickets up to this one are on disk.
    ticket: u64,
    /// Tickets in `failed.0 < t <= failed.1` were lost to a write error.
    failed: (u64, u64),
}

pub(super) struct Writer {
    state: Mutex<WriterState>,
    /// Wakes the applier (queue not empty, stop).
    work: Condvar,
    /// Wakes readers waiting for `applied`.
    applied_cv: Condvar,
    /// Wakes the flusher.
    flush_cv: Condvar,
    durable_tx: tokio::sync::watch::Sender<Durable>,
    /// `submitted` and `durable`, readable without the lock.
    submitted_a: AtomicU64,
    durable_a: AtomicU64,
    /// Failure reports (see the module header); the receiver until taken.
    failures_tx: tokio::sync::mpsc::Sender<ArchiveFailure>,
    failures_rx: Mutex<Option<tokio::sync::mpsc::Receiver<ArchiveFailure>>>,
    /// `reports`, readable without the lock.
    reports_a: AtomicU64,
    /// The backlog bound in bytes ([`MAX_BACKLOG`]; tests lower it).
    pub max_backlog: std::sync::atomic::AtomicUsize,
    /// Test seam: writes ([`INJECT_WRITE`]) and/or flushes
    /// ([`INJECT_FLUSH`]) fail as on a full disk while set; the applier
    /// stalls ([`INJECT_STALL`]) as an engine that stops writing.
    #[cfg(test)]
    pub inject: std::sync::atomic::AtomicU8,
}

pub const INJECT_WRITE: u8 = 1;
pub const INJECT_FLUSH: u8 = 2;
#[cfg(test)]
pub const INJECT_STALL: u8 = 4;

/// Whether the test asked the applier to stall.
#[cfg(test)]
fn stalled(w: &Writer) -> bool {
    w.inject.load(Ordering::Relaxed) & INJECT_STALL != 0
}

#[cfg(not(test))]
fn stalled(_: &Writer) -> bool {
    false
}

/// The injected failure of `what`, if the test asked for one.
#[cfg(test)]
fn injected(w: &Writer, what: u8) -> Option<StorageError> {
    (w.inject.load(Ordering::Relaxed) & what != 0).then(|| {
        StorageError::Full(format!(
            "injected: {}",
            std::io::Error::from_raw_os_error(28)
        ))
    })
}

#[cfg(not(test))]
fn injected(_: &Writer, _: u8) -> Option<StorageError> {
    None
}

/// The highest message id given out (ids are server-wide).
static LAST_ID: AtomicU64 = AtomicU64::new(0);

fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or_default()
}

/// Ids from now on are above `id` (migrated messages keep theirs).
pub(super) fn raise_last_id(id: u64) {
    LAST_ID.fetch_max(id, Ordering::Relaxed);
}

/// In a cluster, this node's number + 1 (0: not clustered): the low 8
/// bits of every id it gives out, so nodes writing one shared database
/// never make the same id (`cluster::start` sets it).
static NODE_NUMBER: AtomicU64 = AtomicU64::new(0);

/// Give this node's ids the low bits `n` (a cluster node's number).
pub fn set_node_number(n: u8) {
    NODE_NUMBER.store(u64::from(n) + 1, Ordering::Relaxed);
}

/// The smallest id >= `id` that carries this node's number in its low
/// 8 bits (`id` itself when not clustered).
fn with_node_number(id: u64) -> u64 {
    tag_id(id, NODE_NUMBER.load(Ordering::Relaxed))
}

/// `id`, or with `n` != 0 the smallest id >= it whose low 8 bits are n - 1.
fn tag_id(id: u64, n: u64) -> u64 {
    match n {
        0 => id,
        n => {
            let tagged = (id & !0xff) | (n - 1);
            if tagged < id {
                tagged + 0x100
            } else {
                tagged
            }
        }
    }
}

/// A fresh message id: microseconds now, strictly above every earlier id
/// (in a cluster, with the node's number in the low 8 bits).
fn next_id() -> u64 {
    let now = now_micros();
    let mut prev = LAST_ID.load(Ordering::Relaxed);
    loop {
        let id = with_node_number(now.max(prev + 1));
        match LAST_ID.compare_exchange_weak(prev, id, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return id,
            Err(p) => prev = p,
        }
    }
}

impl Writer {
    pub fn new(state: WriterState) -> Writer {
        let (failures_tx, failures_rx) = tokio::sync::mpsc::channel(FAILURE_REPORTS);
        Writer {
            failures_tx,
            failures_rx: Mutex::new(Some(failures_rx)),
            reports_a: AtomicU64::new(0),
            max_backlog: std::sync::atomic::AtomicUsize::new(MAX_BACKLOG),
            #[cfg(test)]
            inject: std::sync::atomic::AtomicU8::new(0),
            state: Mutex::new(state),
            work: Condvar::new(),
            applied_cv: Condvar::new(),
            flush_cv: Condvar::new(),
            durable_tx: tokio::sync::watch::channel(Durable::default()).0,
            submitted_a: AtomicU64::new(0),
            durable_a: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WriterState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn cached_owner(&self, owner: &str) -> Option<u32> {
        self.lock().owners.get(owner).copied()
    }

    pub fn cache_owner(&self, owner: &str, archive: u32) {
        let mut s = self.lock();
        if s.owners.len() >= OWNER_CACHE && s.new_owners.is_empty() {
            s.owners.clear();
        }
        s.owners.insert(owner.to_string(), archive);
    }

    /// Allocate an archive id for `owner` (migration; written by the caller).
    pub fn allocate(&self, owner: &str) -> Option<u32> {
        let mut s = self.lock();
        if let Some(a) = s.owners.get(owner) {
            return Some(*a);
        }
        let a = s.next_archive;
        s.next_archive = a.checked_add(1)?;
        s.owners.insert(owner.to_string(), a);
        Some(a)
    }

    /// The next archive id to give out.
    pub fn next_archive(&self) -> u32 {
        self.lock().next_archive
    }

    pub fn replace_state(&self, fresh: WriterState) {
        let mut s = self.lock();
        s.owners.clear();
        s.pending_origins.clear();
        s.queue.clear();
        s.backlog = s
            .unflushed
            .iter()
            .flat_map(|(_, b)| b)
            .map(Pending::cost)
            .sum();
        s.new_owners.clear();
        s.next_archive = fresh.next_archive;
    }

    pub fn ticket(&self) -> u64 {
        self.submitted_a.load(Ordering::Acquire)
    }

    /// Forget queued appends to `archive` (it is being deleted; the caller
    /// holds the write lock, so none is being applied).
    pub fn drop_pending(&self, archive: u32) {
        let mut s = self.lock();
        s.queue.retain(|p| p.archive != archive);
        s.backlog = s
            .queue
            .iter()
            .chain(s.unflushed.iter().flat_map(|(_, b)| b))
            .map(Pending::cost)
            .sum();
        s.pending_origins
            .retain(|k, _| k[..4] != archive.to_be_bytes());
    }

    /// Wait until every append made so far is applied.
    pub fn settle(&self) {
        let mut s = self.lock();
        let target = s.submitted;
        if s.applied < target {
            s.urgent = true;
            self.work.notify_one();
        }
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        while s.applied < target && !s.stop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::warn!("archive: the writer is slow; reading without its last appends");
                break;
            }
            s = self
                .applied_cv
                .wait_timeout(s, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Wait until appends up to `ticket` are on disk.
    pub async fn durable(&self, ticket: u64) -> Result<(), StorageError> {
        if self.durable_a.load(Ordering::Acquire) >= ticket {
            return Ok(());
        }
        {
            let mut s = self.lock();
            if s.durable >= ticket {
                return Ok(());
            }
            s.wanted = s.wanted.max(ticket);
            s.urgent = true;
            self.work.notify_one();
            self.flush_cv.notify_one();
        }
        let mut rx = self.durable_tx.subscribe();
        let d = rx
            .wait_for(|d| d.ticket >= ticket || (d.failed.0 < ticket && ticket <= d.failed.1))
            .await
            .map(|d| *d)
            .map_err(|_| StorageError::Io("the archive writer stopped".into()))?;
        if d.failed.0 < ticket && ticket <= d.failed.1 {
            let why = self.lock().failed.as_ref().map(|(e, _)| e.clone());
            return Err(why.unwrap_or_else(|| StorageError::Io("archive write failed".into())));
        }
        Ok(())
    }

    pub fn stop(&self) {
        let mut s = self.lock();
        s.stop = true;
        self.work.notify_all();
        self.flush_cv.notify_all();
        self.applied_cv.notify_all();
    }

    fn fail(&self, s: &mut WriterState, lo: u64, hi: u64, why: StorageError) {
        tracing::error!("archive: {why}");
        s.failed = Some((why, Instant::now()));
        self.durable_tx.send_modify(|d| d.failed = (lo, hi));
    }

    /// The failure reports (once).
    pub fn take_failures(&self) -> Option<tokio::sync::mpsc::Receiver<ArchiveFailure>> {
        self.failures_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// How many failure reports were queued.
    pub fn failures_reported(&self) -> u64 {
        self.reports_a.load(Ordering::Acquire)
    }

    /// Queue a report of `lost` (call before failing their tickets).
    fn report(&self, s: &mut WriterState, error: &StorageError, lost: Vec<LostMessage>) {
        if lost.is_empty() {
            return;
        }
        let seq = s.reports + 1;
        let report = ArchiveFailure {
            seq,
            error: error.clone(),
            messages: lost,
        };
        match self.failures_tx.try_send(report) {
            Ok(()) => {
                s.reports = seq;
                self.reports_a.store(seq, Ordering::Release);
            }
            Err(e) => {
                let why = match &e {
                    tokio::sync::mpsc::error::TrySendError::Full(_) => "too many reports waiting",
                    tokio::sync::mpsc::error::TrySendError::Closed(_) => "nobody takes reports",
                };
                let r = e.into_inner();
                let mut owners: Vec<&str> = r.messages.iter().map(|m| m.owner.as_str()).collect();
                owners.sort_unstable();
                owners.dedup();
                tracing::error!(
                    "archive: {} messages of {} not archived ({error}); their senders cannot be told \
                     ({why})",
                    r.messages.len(),
                    owners.join(", ")
                );
            }
        }
    }
}

/// What `batches` lost, owners named (from `new_owners`, the batch's new
/// archives, or the owners tree, which reads still work on a full disk).
fn lost_messages<'a>(
    inner: &Inner,
    batches: impl Iterator<Item = &'a Pending>,
    new_owners: &[(String, u32)],
) -> Vec<LostMessage> {
    let mut names: HashMap<u32, String> = new_owners.iter().map(|(n, a)| (*a, n.clone())).collect();
    let mut out = Vec::new();
    for p in batches {
        let Some(m) = rec::decode(p.id, &p.record) else {
            continue;
        };
        let owner = names
            .entry(p.archive)
            .or_insert_with(|| {
                inner
                    .kv
                    .get(Tree::Owners, &owner_rev_key(p.archive))
                    .ok()
                    .flatten()
                    .and_then(|v| String::from_utf8(v.to_vec()).ok())
                    .unwrap_or_else(|| format!("archive {}", p.archive))
            })
            .clone();
        out.push(LostMessage {
            owner,
            outgoing: m.direction == xep_support::archive::Direction::Outgoing,
            xml: m.xml,
        });
    }
    out
}

/// Whether appends are taken now: not after a failed write (for
/// [`RETRY_AFTER`]), nor once stopped, nor with a full backlog.
fn admit(inner: &Inner, s: &mut WriterState) -> Result<(), StoreError> {
    if let Some((why, at)) = &s.failed {
        if at.elapsed() < RETRY_AFTER {
            let msg = format!("archive unavailable for a second after a failed write: {why}");
            return Err(match why {
                StorageError::Full(_) => StoreError::full(msg),
                _ => StoreError::other(msg),
            });
        }
    }
    if s.stop {
        return Err(StoreError::other("archive closed"));
    }
    let max = inner.w.max_backlog.load(Ordering::Relaxed);
    if s.backlog >= max {
        if s.backlog_logged
            .is_none_or(|t| t.elapsed() >= BACKLOG_LOG_EVERY)
        {
            s.backlog_logged = Some(Instant::now());
            tracing::warn!(
                "archive: {} KiB wait to be written (at most {} KiB); messages are not archived \
                 until the writer catches up",
                s.backlog >> 10,
                max >> 10
            );
        }
        return Err(StoreError::other(format!(
            "archive busy: {} KiB wait to be written",
            s.backlog >> 10
        )));
    }
    Ok(())
}

type Guard<'a> = std::sync::MutexGuard<'a, WriterState>;

/// Queue one message (its `record` encoded, naming `peer` and
/// `origin_id`) for `owner`, under the writer's lock `s` (let go and taken
/// again while an owner not in the cache is read).
fn queue_one<'a>(
    inner: &'a Inner,
    mut s: Guard<'a>,
    owner: &str,
    peer: &str,
    origin_id: Option<&str>,
    record: Vec<u8>,
) -> Result<(Guard<'a>, Appended), StoreError> {
    let archive = match s.owners.get(owner) {
        Some(a) => *a,
        None => {
            drop(s);
            let stored = inner.archive_of(owner)?;
            s = inner.w.lock();
            match stored.or_else(|| s.owners.get(owner).copied()) {
                Some(a) => a,
                None => {
                    let a = s.next_archive;
                    s.next_archive = a
                        .checked_add(1)
                        .ok_or_else(|| StoreError::other("archive ids exhausted"))?;
                    s.owners.insert(owner.to_string(), a);
                    s.new_owners.push((owner.to_string(), a));
                    a
                }
            }
        }
    };
    let origin = origin_id.map(|o| (rec::origin_key(archive, peer, o), o.to_string()));
    if let Some((key, _)) = &origin {
        let known = match s.pending_origins.get(key) {
            Some(id) => Some(*id),
            None => inner
                .kv
                .get(Tree::ByOrigin, key)
                .map_err(|e| inner.store_err(e))?
                .and_then(|v| rec::u64_of(&v)),
        };
        if let Some(id) = known {
            return Ok((s, Appended::Duplicate(id)));
        }
    }
    let id = next_id();
    if let Some((key, _)) = &origin {
        s.pending_origins.insert(key.clone(), id);
    }
    let p = Pending {
        archive,
        id,
        origin,
        record,
    };
    s.backlog += p.cost();
    s.queue.push(p);
    Ok((s, Appended::Stored(id)))
}

/// One `append` call's messages are queued: its ticket, and the applier
/// woken if it waits for work.
fn queued(inner: &Inner, mut s: Guard<'_>) {
    if s.queued_since.is_none() {
        s.queued_since = Some(Instant::now());
    }
    s.submitted += 1;
    inner.w.submitted_a.store(s.submitted, Ordering::Release);
    crate::metrics::archive_queue(s.queue.len(), s.backlog);
    if s.applier_idle {
        inner.w.work.notify_one();
    }
}

/// Queue messages (see the module header).
pub(super) fn append(inner: &Inner, msgs: Vec<NewMessage>) -> Result<Vec<Appended>, StoreError> {
    let mut out = Vec::with_capacity(msgs.len());
    let mut s = inner.w.lock();
    admit(inner, &mut s)?;
    for m in msgs {
        let peer = m.peer.as_str();
        let origin_id = m.origin_id.as_deref();
        let record = rec::encode(m.direction, peer, origin_id, &m.xml);
        let (guard, appended) = queue_one(inner, s, m.owner.as_str(), peer, origin_id, record)?;
        s = guard;
        out.push(appended);
    }
    queued(inner, s);
    Ok(out)
}

/// The most room reserved for a stanza ahead of writing it.
const MAX_XML_HINT: usize = 2048;

thread_local! {
    /// The length of the last stanza this thread wrote into a record: the
    /// room reserved for the next one (chat stanzas of one thread are
    /// alike), so the record is allocated once.
    static XML_HINT: std::cell::Cell<usize> = const { std::cell::Cell::new(256) };
}

/// Queue one message given as its stanza (the chat path, see
/// [`xep_support::archive::ArchiveStore::append_stanza`]): the stanza is
/// written straight into its record, before the writer's lock is taken.
pub(super) fn append_stanza(
    inner: &Inner,
    owner: &str,
    peer: &str,
    direction: Direction,
    origin_id: Option<&str>,
    stanza: &Element,
) -> Result<Appended, StoreError> {
    let hint = XML_HINT.with(|h| h.get());
    let mut written = 0;
    let mut record = rec::encode_with(direction, peer, origin_id, hint, |out| {
        let start = out.len();
        // Both ends' copies of a local message: serialised once.
        crate::xml::kept::write_archived(stanza, out);
        written = out.len() - start;
    });
    XML_HINT.with(|h| h.set((written + 64).min(MAX_XML_HINT)));
    if record.capacity() > 2 * record.len() {
        // A short stanza after a long one: it waits in the queue, so it
        // holds no more than it needs.
        record.shrink_to_fit();
    }
    let mut s = inner.w.lock();
    admit(inner, &mut s)?;
    let (s, appended) = queue_one(inner, s, owner, peer, origin_id, record)?;
    queued(inner, s);
    Ok(appended)
}

/// Start the applier and the flusher.
pub(super) fn start(inner: &Arc<Inner>) -> Vec<std::thread::JoinHandle<()>> {
    let a = inner.clone();
    let f = inner.clone();
    let mut threads = Vec::new();
    match std::thread::Builder::new()
        .name("archive-apply".into())
        .spawn(move || applier(&a))
    {
        Ok(t) => threads.push(t),
        Err(e) => tracing::error!("archive: cannot start the applier: {e}"),
    }
    match std::thread::Builder::new()
        .name("archive-flush".into())
        .spawn(move || flusher(&f))
    {
        Ok(t) => threads.push(t),
        Err(e) => tracing::error!("archive: cannot start the flusher: {e}"),
    }
    threads
}

fn applier(inner: &Inner) {
    let w = &inner.w;
    loop {
        {
            let mut s = w.lock();
            while s.applied == s.submitted && s.new_owners.is_empty() && !s.stop {
                s.applier_idle = true;
                s = w.work.wait(s).unwrap_or_else(|e| e.into_inner());
                s.applier_idle = false;
            }
            if s.stop && s.applied == s.submitted {
                return;
            }
            while stalled(w) && !s.stop {
                s = w
                    .work
                    .wait_timeout(s, Duration::from_millis(10))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            // Gather (see APPLY_EVERY).
            while !s.urgent && !s.stop {
                let since = s.queued_since.unwrap_or_else(Instant::now);
                let left = APPLY_EVERY.saturating_sub(since.elapsed());
                if left.is_zero() {
                    break;
                }
                s = w
                    .work
                    .wait_timeout(s, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
        let _g = inner.gate.read().unwrap_or_else(|e| e.into_inner());
        let _wl = inner.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        let (batch, owners, upto, from, next_archive) = {
            let mut s = w.lock();
            s.urgent = false;
            s.queued_since = None;
            let cap = s.queue.len();
            crate::metrics::archive_queue(0, s.backlog);
            (
                std::mem::replace(&mut s.queue, Vec::with_capacity(cap)),
                std::mem::take(&mut s.new_owners),
                s.submitted,
                s.applied,
                s.next_archive,
            )
        };
        let started = Instant::now();
        let r = match injected(w, INJECT_WRITE) {
            Some(e) => Err(e),
            None => write_batch(inner, &batch, &owners, next_archive),
        };
        if !batch.is_empty() {
            crate::metrics::archive_batch(batch.len(), started.elapsed(), r.is_ok());
        }
        let lost = match &r {
            Ok(()) => Vec::new(),
            Err(_) => lost_messages(inner, batch.iter(), &owners),
        };
        let mut s = w.lock();
        for p in &batch {
            if let Some((k, _)) = &p.origin {
                s.pending_origins.remove(k);
            }
        }
        match r {
            Ok(()) => {
                if s.unflushed_since.is_none() {
                    s.unflushed_since = Some(Instant::now());
                }
                s.failed = None;
                if !batch.is_empty() {
                    s.unflushed.push((upto, batch));
                }
            }
            Err(e) => {
                for (o, _) in &owners {
                    s.owners.remove(o);
                }
                let freed: usize = batch.iter().map(Pending::cost).sum();
                s.backlog = s.backlog.saturating_sub(freed);
                w.report(&mut s, &e, lost);
                let n = batch.len();
                w.fail(
                    &mut s,
                    from,
                    upto,
                    annotate(e, &format!("writing {n} messages")),
                );
            }
        }
        s.applied = upto;
        w.applied_cv.notify_all();
        w.flush_cv.notify_one();
    }
}

/// A batch's blocks and peer index entries (see `record.rs`).
pub(super) struct Blocks {
    pub blocks: Vec<(u32, u64, Vec<u8>)>,
    pub peers: Vec<(Vec<u8>, Vec<u8>)>,
    pub deltas: HashMap<Vec<u8>, u64>,
    pub last_id: u64,
}

/// One message of a block: archive, id, peer, record.
type Msg<'a> = (u32, u64, &'a str, &'a [u8]);

/// Group messages (archive, id, peer, record), in id order per archive,
/// into blocks of at most `rec::BLOCK_MESSAGES`. One sort, then runs: the
/// counter keys are made once per archive and per peer in it, not per
/// message.
pub(super) fn blocks_of<'a>(msgs: impl Iterator<Item = Msg<'a>>) -> Blocks {
    let mut msgs: Vec<Msg<'a>> = msgs.collect();
    msgs.sort_unstable_by_key(|m| (m.0, m.1));
    let mut out = Blocks {
        blocks: Vec::new(),
        peers: Vec::new(),
        deltas: HashMap::new(),
        last_id: msgs.iter().map(|m| m.1).max().unwrap_or(0),
    };
    // Per archive: its messages' peers and how many each.
    let mut per_peer: HashMap<&str, u64> = HashMap::new();
    for run in msgs.chunk_by(|x, y| x.0 == y.0) {
        let a = run[0].0;
        out.deltas
            .insert(rec::archive_prefix(a).to_vec(), run.len() as u64);
        per_peer.clear();
        for chunk in run.chunks(rec::BLOCK_MESSAGES) {
            let base = chunk[0].1;
            // Exactly the block's size: it is allocated once.
            let size = chunk
                .iter()
                .map(|m| rec::block_entry_len(base, m.1, m.3.len()))
                .sum();
            let mut block = Vec::with_capacity(size);
            let mut peers: Vec<(&str, Vec<u64>)> = Vec::new();
            for &(_, id, peer, record) in chunk {
                rec::block_push(&mut block, base, id, record);
                match peers.iter_mut().find(|(p, _)| *p == peer) {
                    Some((_, ids)) => ids.push(id),
                    None => peers.push((peer, vec![id])),
                }
            }
            for (peer, ids) in peers {
                *per_peer.entry(peer).or_default() += ids.len() as u64;
                out.peers.push((
                    rec::peer_key(a, peer, ids[0]),
                    rec::peer_entry(base, ids[0], &ids),
                ));
            }
            out.blocks.push((a, base, block));
        }
        for (peer, n) in per_peer.drain() {
            out.deltas.insert(rec::peer_count_key(a, peer), n);
        }
    }
    out
}

/// `archive_owners` key of the journal of the batch being written: its
/// highest and lowest message ids (u64 BE each), then the archives it
/// touches (u32 BE each).
pub(super) const JOURNAL_KEY: &[u8] = b"m:journal";
/// `archive_counts` key of the highest message id whose batch is complete
/// (3 bytes: never an archive's counter key, which has at least 4).
pub(super) const HWM_KEY: &[u8] = b"hwm";

/// One batch: one [`ArchiveKv::write`], in this order of trees: owners
/// (with the journal), blocks, peer index, origin-ids, counters (with the
/// high-water mark). On fjall it is atomic. On sled it is one sled batch
/// per tree, atomic per tree, and its log is recovered as a prefix, so
/// after a crash a batch is complete (its counters and high-water mark are
/// there) or its journal names what [`repair`] re-derives from the blocks.
pub(super) fn write_batch(
    inner: &Inner,
    batch: &[Pending],
    owners: &[(String, u32)],
    next_archive: u32,
) -> Result<(), StorageError> {
    if batch.is_empty() && owners.is_empty() {
        return Ok(());
    }
    let b = blocks_of(
        batch
            .iter()
            .map(|p| (p.archive, p.id, p.peer(), p.record.as_slice())),
    );
    // New counter values, from the cache (the write lock is held).
    let mut cache = inner.counts_cache.lock().unwrap_or_else(|e| e.into_inner());
    let mut counts = Vec::with_capacity(b.deltas.len());
    for (k, d) in &b.deltas {
        let cur = match cache.get(k) {
            Some(n) => *n,
            None => inner
                .kv
                .get(Tree::Counts, k)?
                .and_then(|v| rec::u64_of(&v))
                .unwrap_or(0),
        };
        counts.push((k.clone(), cur + d));
    }
    let mut w = kv::Batch::default();
    for (name, a) in owners {
        w.insert(Tree::Owners, owner_key(name), a.to_be_bytes());
        w.insert(Tree::Owners, owner_rev_key(*a), name.as_bytes());
    }
    if !owners.is_empty() {
        w.insert(
            Tree::Owners,
            NEXT_ARCHIVE_KEY,
            (next_archive as u64).to_be_bytes(),
        );
    }
    if !batch.is_empty() && !inner.kv.atomic_batches() {
        let mut journal = Vec::with_capacity(16 + 4 * b.blocks.len());
        journal.extend_from_slice(&b.last_id.to_be_bytes());
        journal.extend_from_slice(&batch[0].id.to_be_bytes());
        let mut seen = std::collections::HashSet::new();
        for (a, _, _) in &b.blocks {
            if seen.insert(*a) {
                journal.extend_from_slice(&a.to_be_bytes());
            }
        }
        w.insert(Tree::Owners, JOURNAL_KEY, journal);
    }
    let Blocks { blocks, peers, .. } = b;
    for (a, base, block) in blocks {
        w.insert(Tree::Messages, rec::message_key(a, base), block);
    }
    for (k, v) in peers {
        w.insert(Tree::ByPeer, k, v);
    }
    for p in batch {
        if let Some((k, _)) = &p.origin {
            w.insert(Tree::ByOrigin, k.as_slice(), p.id.to_be_bytes());
        }
    }
    for (k, n) in &counts {
        w.insert(Tree::Counts, k.as_slice(), n.to_be_bytes());
    }
    if b.last_id > 0 {
        w.insert(Tree::Counts, HWM_KEY, b.last_id.to_be_bytes());
    }
    match inner.kv.write(w) {
        Ok(()) => {
            if cache.len() > COUNTS_CACHE {
                cache.clear();
            }
            cache.extend(counts);
            Ok(())
        }
        Err(e) => {
            cache.clear();
            Err(e)
        }
    }
}

/// After a crash in the middle of [`write_batch`]: complete the batch the
/// journal names (peer index, origin-ids and counters re-derived from its
/// blocks, which hold everything). Idempotent; how many messages it found.
pub(super) fn repair(kv: &dyn ArchiveKv) -> Result<u64, StorageError> {
    let Some(j) = kv.get(Tree::Owners, JOURNAL_KEY)? else {
        return Ok(0);
    };
    let (Some(max), Some(min)) = (
        j.get(..8).and_then(rec::u64_of),
        j.get(8..16).and_then(rec::u64_of),
    ) else {
        return Ok(0);
    };
    let hwm = kv
        .get(Tree::Counts, HWM_KEY)?
        .and_then(|v| rec::u64_of(&v))
        .unwrap_or(0);
    if hwm >= max {
        return Ok(0);
    }
    let mut msgs = Vec::new();
    for a in j[16..].chunks_exact(4) {
        let a = u32::from_be_bytes(a.try_into().expect("4 bytes"));
        let (lo, hi) = (rec::message_key(a, min), rec::message_key(a, max));
        let (lo, hi) = kv::incl(&lo, &hi);
        for item in kv.range(Tree::Messages, lo, hi, false) {
            let (k, v) = item?;
            let Some(base) = rec::id_of_key(&k) else {
                continue;
            };
            for (id, r) in rec::block_entries(base, &v).0 {
                if let Some((peer, origin)) = rec::peer_of(r) {
                    msgs.push((a, id, peer.to_string(), origin.map(str::to_string), base));
                }
            }
        }
    }
    // The peer entries exactly as the batch wrote them (same blocks).
    let mut w = kv::Batch::default();
    let mut by_block: HashMap<(u32, u64), Vec<(u64, &str)>> = HashMap::new();
    for (a, id, peer, _, base) in &msgs {
        by_block.entry((*a, *base)).or_default().push((*id, peer));
    }
    for ((a, base), entries) in &by_block {
        let mut peers: Vec<(&str, Vec<u64>)> = Vec::new();
        for (id, peer) in entries {
            match peers.iter_mut().find(|(p, _)| p == peer) {
                Some((_, ids)) => ids.push(*id),
                None => peers.push((peer, vec![*id])),
            }
        }
        for (peer, ids) in peers {
            w.insert(
                Tree::ByPeer,
                rec::peer_key(*a, peer, ids[0]),
                rec::peer_entry(*base, ids[0], &ids),
            );
        }
    }
    let mut deltas: HashMap<Vec<u8>, u64> = HashMap::new();
    for (a, id, peer, origin, _) in &msgs {
        if let Some(o) = origin {
            w.insert(
                Tree::ByOrigin,
                rec::origin_key(*a, peer, o),
                id.to_be_bytes(),
            );
        }
        *deltas.entry(rec::archive_prefix(*a).to_vec()).or_default() += 1;
        *deltas.entry(rec::peer_count_key(*a, peer)).or_default() += 1;
    }
    for (k, d) in deltas {
        let cur = kv
            .get(Tree::Counts, &k)?
            .and_then(|v| rec::u64_of(&v))
            .unwrap_or(0);
        w.insert(Tree::Counts, k, (cur + d).to_be_bytes());
    }
    w.insert(Tree::Counts, HWM_KEY, max.to_be_bytes());
    kv.write(w)?;
    if !msgs.is_empty() {
        tracing::warn!(
            "archive: completed a batch of {} messages interrupted by a crash",
            msgs.len()
        );
    }
    Ok(msgs.len() as u64)
}

/// `e` with what was being done in front of its text.
fn annotate(e: StorageError, doing: &str) -> StorageError {
    match e {
        StorageError::Full(why) => StorageError::Full(format!("{doing}: {why}")),
        StorageError::Corrupt(why) => StorageError::Corrupt(format!("{doing}: {why}")),
        StorageError::Io(why) => StorageError::Io(format!("{doing}: {why}")),
        other => other,
    }
}

fn flusher(inner: &Inner) {
    let w = &inner.w;
    loop {
        let upto = {
            let mut s = w.lock();
            loop {
                let pending = s.applied > s.durable;
                if pending
                    && (s.wanted > s.durable
                        || s.stop
                        || s.unflushed_since
                            .is_some_and(|t| t.elapsed() >= FLUSH_EVERY))
                {
                    break;
                }
                if s.stop && !pending {
                    return;
                }
                // Nothing due: sleep until the applier, a durability
                // waiter or `stop` notifies (each of them does), not on a
                // timer (an idle server does not wake this thread).
                s = match s.unflushed_since {
                    Some(t) if pending => {
                        let wait = FLUSH_EVERY.saturating_sub(t.elapsed());
                        w.flush_cv
                            .wait_timeout(s, wait.max(Duration::from_millis(1)))
                            .unwrap_or_else(|e| e.into_inner())
                            .0
                    }
                    _ => w.flush_cv.wait(s).unwrap_or_else(|e| e.into_inner()),
                };
            }
            s.unflushed_since = None;
            (s.durable, s.applied)
        };
        let r = match injected(w, INJECT_FLUSH) {
            Some(e) => Err(e),
            None => inner.kv.persist(),
        };
        let mut s = w.lock();
        // The batches this flush covered (freed or reported outside the lock).
        let split = s.unflushed.partition_point(|(t, _)| *t <= upto.1);
        let covered: Vec<_> = s.unflushed.drain(..split).collect();
        let freed: usize = covered.iter().flat_map(|(_, b)| b).map(Pending::cost).sum();
        s.backlog = s.backlog.saturating_sub(freed);
        crate::metrics::archive_queue(s.queue.len(), s.backlog);
        match r {
            Ok(_) => {
                s.durable = s.durable.max(upto.1);
                let t = s.durable;
                w.durable_a.store(t, Ordering::Release);
                w.durable_tx.send_modify(|d| d.ticket = t);
                drop(s);
                drop(covered);
            }
            Err(e) => {
                drop(s);
                crate::metrics::archive_flush_failed();
                let lost = lost_messages(inner, covered.iter().flat_map(|(_, b)| b.iter()), &[]);
                let mut s = w.lock();
                w.report(&mut s, &e, lost);
                let (lo, hi) = upto;
                s.durable = hi;
                w.fail(&mut s, lo, hi, annotate(e, "flushing"));
            }
        }
    }
}

#[cfg(test)]
mod id_tests {
    use super::tag_id;

    #[test]
    fn cluster_ids_carry_the_node_number_and_never_go_down() {
        assert_eq!(tag_id(1_000_000, 0), 1_000_000);
        for n in [1u64, 7, 256] {
            for id in [0u64, 255, 256, 1_000_000, 1_000_255, 1_000_256] {
                let t = tag_id(id, n);
                assert!(t >= id && t - id < 256, "{id} {n} -> {t}");
                assert_eq!(t & 0xff, n - 1);
            }
        }
        // Two nodes never give the same id.
        assert_ne!(tag_id(5_000, 1), tag_id(5_000, 2));
    }
}
