//! The message archive (XEP-0313) in PostgreSQL: [`PgArchive`] implements
//! `ArchiveStore` and `ArchiveEngine` over three tables (schema version 2):
//!
//! - `rookery_archives`: one row per owner (archive id, owner JID, message
//!   count, the highest id written): `count` is one row read;
//! - `rookery_archive_messages`: primary key (archive, id), so a page is
//!   one index range; an index (archive, peer, id) for pages with one
//!   peer; a unique partial index (archive, peer, origin_id) for XEP-0359
//!   idempotency and retractions;
//! - `rookery_archive_peers`: message count per (archive, peer), so a
//!   whole conversation's count is one row read.
//!
//! Write path, as the embedded engine's (`storage/archive/writer.rs`):
//! `append` gives each message its id (microseconds, strictly increasing
//! across the server and across restarts: the start reads the highest id
//! written), resolves its owner's archive (cached; created on first use)
//! and checks its origin-id against the queue and the table (one query for
//! the batch), queues it and returns. One writer task writes the queue
//! every [`APPLY_EVERY`] (at once when a reader or a durability waiter
//! needs it) in one transaction: rows, counters, high-water marks. A
//! committed batch is durable, so "applied" and "durable" are one step:
//! every append is on disk within `APPLY_EVERY` plus one commit, inside
//! the 1 s bound. Reads wait for the batches before them (bounded by
//! [`SETTLE_TIMEOUT`]), so a query sees every message appended before it.
//!
//! Failure: a batch whose commit fails for unavailability is retried every
//! [`RETRY_EVERY`] for up to [`GIVE_UP_AFTER`]; then (or at once for any
//! other error) its messages are reported as an `ArchiveFailure` (the
//! senders are told), their tickets fail, and `append` refuses for
//! [`REFUSE_AFTER_FAILURE`]. The queue is bounded ([`MAX_BACKLOG`] bytes):
//! past it `append` refuses (the sender gets `resource-constraint`, the
//! live copy still goes out). Memory never grows with a database that is
//! down or slow.
//!
//! Cluster note: ids are unique per server process; in a cluster each node
//! puts its number in their low 8 bits (`archive::writer::set_node_number`,
//! set by `cluster::start`), so nodes sharing the database never collide;
//! the schema does not change for that.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use jid::BareJid;
use tokio::sync::{mpsc, watch, Notify};
use xep_support::archive::{
    Appended, ArchiveStore, ArchivedMessage, Count, Direction, NewMessage, PageQuery,
    EXACT_COUNT_LIMIT,
};
use xep_support::module::StoreError;

use super::{big, Bridge, PgErr, Shared};
use crate::storage::{ArchiveFailure, LostMessage, StorageError};

/// Appends gather this long before the writer writes them.
const APPLY_EVERY: Duration = Duration::from_millis(100);
/// Rows written in one transaction at most.
const MAX_BATCH: usize = 5000;
/// Bytes of queued messages beyond which appends are refused.
pub const MAX_BACKLOG: usize = 32 << 20;
/// A batch that cannot be written for unavailability is retried this often...
const RETRY_EVERY: Duration = Duration::from_millis(250);
/// ...for this long, then reported lost.
const GIVE_UP_AFTER: Duration = Duration::from_secs(3);
/// After a lost batch, appends are refused this long.
const REFUSE_AFTER_FAILURE: Duration = Duration::from_secs(1);
/// Longest a read waits for the writer (then it reads what is there).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Failure reports waiting for the server.
const FAILURE_REPORTS: usize = 64;
/// Owners whose archive id is cached (emptied beyond).
const OWNER_CACHE: usize = 1_000_000;

/// One queued message.
struct Row {
    ticket: u64,
    archive: i32,
    id: i64,
    owner: String,
    peer: String,
    outgoing: bool,
    origin: Option<String>,
    xml: String,
}

impl Row {
    fn cost(&self) -> usize {
        self.xml.len() + self.peer.len() + self.owner.len() + 64
    }
}

/// What the writer has done, for durability waiters and readers.
#[derive(Clone, Copy, Debug, Default)]
struct Done {
    /// Appends up to this ticket are written (committed).
    written: u64,
    /// The last failed range of tickets: `lo < t <= hi` failed.
    failed: (u64, u64),
}

#[derive(Default)]
struct State {
    queue: std::collections::VecDeque<Row>,
    bytes: usize,
    /// The last ticket handed out.
    ticket: u64,
    last_id: u64,
    /// Origin-ids queued and not yet written: (archive, peer, origin) → id.
    pending_origin: HashMap<(i32, String, String), u64>,
    failed: Option<(StorageError, Instant)>,
    backlog_logged: Option<Instant>,
    stop: bool,
}

/// The archive on PostgreSQL.
pub(crate) struct PgArchive {
    bridge: Bridge,
    state: Mutex<State>,
    owners: RwLock<HashMap<String, i32>>,
    done: watch::Sender<Done>,
    wake: Arc<Notify>,
    failures_tx: mpsc::Sender<ArchiveFailure>,
    failures_rx: Mutex<Option<mpsc::Receiver<ArchiveFailure>>>,
    reports: AtomicU64,
    stopped: AtomicBool,
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn store_err(e: StorageError) -> StoreError {
    match &e {
        StorageError::Full(_) => {
            StoreError::from_source(xep_support::module::StoreErrorKind::Full, e)
        }
        _ => StoreError::from_source(xep_support::module::StoreErrorKind::Other, e),
    }
}

/// The message of a row (`owner` gives the direction's meaning).
fn message_of(
    id: i64,
    peer: String,
    outgoing: bool,
    origin: Option<String>,
    xml: String,
) -> ArchivedMessage {
    ArchivedMessage {
        id: id as u64,
        peer,
        direction: if outgoing {
            Direction::Outgoing
        } else {
            Direction::Incoming
        },
        origin_id: origin,
        xml,
    }
}

const MSG_COLUMNS: &str = "id, peer, outgoing, origin_id, xml";

fn row_message(r: &tokio_postgres::Row) -> ArchivedMessage {
    message_of(r.get(0), r.get(1), r.get(2), r.get(3), r.get(4))
}

/// Insert rows (ids given) and raise the counters, in `tx`; how many were
/// new (rows already there by id or origin-id are skipped).
async fn insert_rows(
    tx: &deadpool_postgres::Transaction<'_>,
    archives: &[i32],
    ids: &[i64],
    peers: &[String],
    outgoing: &[bool],
    origins: &[Option<String>],
    xmls: &[String],
) -> Result<u64, PgErr> {
    let rows = tx
        .query(
            "INSERT INTO rookery_archive_messages (archive, id, peer, outgoing, origin_id, xml) \
             SELECT * FROM unnest($1::int[], $2::bigint[], $3::text[], $4::bool[], $5::text[], $6::text[]) \
             ON CONFLICT DO NOTHING RETURNING archive, peer, id",
            &[&archives, &ids, &peers, &outgoing, &origins, &xmls],
        )
        .await?;
    let mut per_archive: std::collections::BTreeMap<i32, (i64, i64)> = Default::default();
    let mut per_peer: std::collections::BTreeMap<(i32, String), i64> = Default::default();
    for r in &rows {
        let (a, p, id): (i32, String, i64) = (r.get(0), r.get(1), r.get(2));
        let e = per_archive.entry(a).or_insert((0, 0));
        e.0 += 1;
        e.1 = e.1.max(id);
        *per_peer.entry((a, p)).or_insert(0) += 1;
    }
    if per_archive.is_empty() {
        return Ok(0);
    }
    // Sorted by archive: every writer locks counter rows in one order.
    let (a, (n, last)): (Vec<i32>, (Vec<i64>, Vec<i64>)) = per_archive.into_iter().unzip();
    tx.execute(
        "UPDATE rookery_archives r SET messages = r.messages + u.n, last_id = greatest(r.last_id, u.l) \
         FROM unnest($1::int[], $2::bigint[], $3::bigint[]) AS u(a, n, l) WHERE r.archive = u.a",
        &[&a, &n, &last],
    )
    .await?;
    let mut pa = Vec::new();
    let mut pp = Vec::new();
    let mut pn = Vec::new();
    for ((a, p), n) in per_peer {
        pa.push(a);
        pp.push(p);
        pn.push(n);
    }
    tx.execute(
        "INSERT INTO rookery_archive_peers (archive, peer, messages) \
         SELECT * FROM unnest($1::int[], $2::text[], $3::bigint[]) \
         ON CONFLICT (archive, peer) DO UPDATE SET messages = rookery_archive_peers.messages + EXCLUDED.messages",
        &[&pa, &pp, &pn],
    )
    .await?;
    Ok(rows.len() as u64)
}

impl PgArchive {
    /// Read the ids' high-water mark and start the writer task.
    pub(crate) fn open(bridge: Bridge) -> Result<Arc<PgArchive>, StorageError> {
        let last: i64 = bridge.call(|sh| async move {
            let c = sh.pool.get().await?;
            Ok(c.query_one(
                "SELECT coalesce(max(last_id), 0) FROM rookery_archives",
                &[],
            )
            .await?
            .get(0))
        })?;
        let (failures_tx, failures_rx) = mpsc::channel(FAILURE_REPORTS);
        let archive = Arc::new(PgArchive {
            bridge,
            state: Mutex::new(State {
                last_id: last.max(0) as u64,
                ..State::default()
            }),
            owners: RwLock::new(HashMap::new()),
            done: watch::channel(Done::default()).0,
            wake: Arc::new(Notify::new()),
            failures_tx,
            failures_rx: Mutex::new(Some(failures_rx)),
            reports: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
        });
        let weak = Arc::downgrade(&archive);
        let wake = archive.wake.clone();
        let sh = archive.bridge.shared.clone();
        archive.bridge.handle.spawn(async move {
            loop {
                let _ = tokio::time::timeout(APPLY_EVERY, wake.notified()).await;
                let Some(a) = weak.upgrade() else { return };
                while a.write_some(&sh).await {}
                if a.stopped.load(Ordering::Acquire) && a.lock().queue.is_empty() {
                    return;
                }
            }
        });
        Ok(archive)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Write one batch from the queue; whether there may be more.
    async fn write_some(&self, sh: &Shared) -> bool {
        let (rows, covered) = {
            let mut s = self.lock();
            if s.queue.is_empty() {
                // Appends that queued nothing (duplicates) are covered too.
                let t = s.ticket;
                self.done.send_if_modified(|d| {
                    let newer = d.written < t;
                    d.written = d.written.max(t);
                    newer
                });
                return false;
            }
            let n = s.queue.len().min(MAX_BATCH);
            let rows: Vec<Row> = s.queue.drain(..n).collect();
            let covered = match s.queue.front() {
                Some(next) => next.ticket - 1,
                None => s.ticket,
            };
            (rows, covered)
        };
        let first_ticket = rows.first().map_or(covered, |r| r.ticket);
        let started = Instant::now();
        let result = loop {
            let r = self.write_batch(sh, &rows).await;
            match r {
                Err(StorageError::Unavailable(why))
                    if started.elapsed() < GIVE_UP_AFTER
                        && !self.stopped.load(Ordering::Acquire) =>
                {
                    sh.health.failed(&StorageError::Unavailable(why));
                    tokio::time::sleep(RETRY_EVERY).await;
                }
                r => break r,
            }
        };
        let bytes: usize = rows.iter().map(Row::cost).sum();
        let mut s = self.lock();
        s.bytes = s.bytes.saturating_sub(bytes);
        for r in &rows {
            if let Some(o) = &r.origin {
                s.pending_origin
                    .remove(&(r.archive, r.peer.clone(), o.clone()));
            }
        }
        match result {
            Ok(()) => {
                sh.health.succeeded();
                self.done
                    .send_modify(|d| d.written = d.written.max(covered));
            }
            Err(e) => {
                sh.health.failed(&e);
                tracing::error!(
                    "archive: {} message(s) could not be written: {e}; their senders are told",
                    rows.len()
                );
                s.failed = Some((e.clone(), Instant::now()));
                let lost = rows
                    .into_iter()
                    .map(|r| LostMessage {
                        owner: r.owner,
                        outgoing: r.outgoing,
                        xml: r.xml,
                    })
                    .collect();
                self.report(e, lost);
                let lo = first_ticket.saturating_sub(1);
                self.done.send_modify(|d| {
                    d.failed = (lo, covered);
                    d.written = d.written.max(covered);
                });
            }
        }
        !s.queue.is_empty()
    }

    async fn write_batch(&self, sh: &Shared, rows: &[Row]) -> Result<(), StorageError> {
        let op = async {
            let mut c = sh.pool.get().await?;
            let tx = c.transaction().await?;
            let archives: Vec<i32> = rows.iter().map(|r| r.archive).collect();
            let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
            let peers: Vec<String> = rows.iter().map(|r| r.peer.clone()).collect();
            let outgoing: Vec<bool> = rows.iter().map(|r| r.outgoing).collect();
            let origins: Vec<Option<String>> = rows.iter().map(|r| r.origin.clone()).collect();
            let xmls: Vec<String> = rows.iter().map(|r| r.xml.clone()).collect();
            insert_rows(&tx, &archives, &ids, &peers, &outgoing, &origins, &xmls).await?;
            tx.commit().await?;
            Ok::<(), PgErr>(())
        };
        match tokio::time::timeout(sh.query_timeout, op).await {
            Ok(r) => r.map_err(PgErr::into_storage),
            Err(_) => Err(StorageError::Unavailable(
                "the database did not commit an archive batch in time".into(),
            )),
        }
    }

    fn report(&self, error: StorageError, lost: Vec<LostMessage>) {
        if lost.is_empty() {
            return;
        }
        let seq = self.reports.load(Ordering::Acquire) + 1;
        match self.failures_tx.try_send(ArchiveFailure {
            seq,
            error,
            messages: lost,
        }) {
            Ok(()) => self.reports.store(seq, Ordering::Release),
            Err(e) => tracing::error!("archive: failure report dropped (queue full): {e}"),
        }
    }

    /// The archive id of `owner`, if it has one.
    fn archive_of(&self, owner: &str) -> Result<Option<i32>, StorageError> {
        if let Some(a) = self
            .owners
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(owner)
        {
            return Ok(Some(*a));
        }
        let o = owner.to_string();
        let a: Option<i32> = self.bridge.call(|sh| async move {
            let c = sh.pool.get().await?;
            Ok(c.query_opt(
                "SELECT archive FROM rookery_archives WHERE owner = $1",
                &[&o],
            )
            .await?
            .map(|r| r.get(0)))
        })?;
        if let Some(a) = a {
            self.cache_owner(owner, a);
        }
        Ok(a)
    }

    fn cache_owner(&self, owner: &str, a: i32) {
        let mut o = self.owners.write().unwrap_or_else(|e| e.into_inner());
        if o.len() >= OWNER_CACHE {
            o.clear();
        }
        o.insert(owner.to_string(), a);
    }

    /// Archive ids for owners (created as needed), in one statement.
    fn resolve(&self, owners: &[&str]) -> Result<HashMap<String, i32>, StorageError> {
        let mut out = HashMap::new();
        let mut missing: Vec<String> = Vec::new();
        {
            let cache = self.owners.read().unwrap_or_else(|e| e.into_inner());
            for o in owners {
                match cache.get(*o) {
                    Some(a) => {
                        out.insert(o.to_string(), *a);
                    }
                    None if !missing.iter().any(|m| m == o) => missing.push(o.to_string()),
                    None => {}
                }
            }
        }
        if missing.is_empty() {
            return Ok(out);
        }
        let rows: Vec<(String, i32)> = self.bridge.call(|sh| async move {
            let c = sh.pool.get().await?;
            let rows = c
                .query(
                    "INSERT INTO rookery_archives (owner) SELECT unnest($1::text[]) \
                     ON CONFLICT (owner) DO UPDATE SET owner = EXCLUDED.owner RETURNING owner, archive",
                    &[&missing],
                )
                .await?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })?;
        for (o, a) in rows {
            self.cache_owner(&o, a);
            out.insert(o, a);
        }
        Ok(out)
    }

    /// Run a read after the appends before it are written.
    fn read<T, F, Fut>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Shared) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, PgErr>> + Send + 'static,
    {
        let ticket = self.lock().ticket;
        let me = self.self_ref();
        self.bridge
            .call(move |sh| async move {
                if let Some(me) = me {
                    me.settled(ticket).await;
                }
                op(sh).await
            })
            .map_err(store_err)
    }

    /// A weak handle to this archive, for tasks (the writer's `Arc`).
    fn self_ref(&self) -> Option<ArchiveRef> {
        Some(ArchiveRef {
            done: self.done.subscribe(),
            wake: self.wake.clone(),
        })
    }

    /// Wait until everything queued is written.
    pub(crate) fn settle_all(&self) {
        let ticket = self.lock().ticket;
        if let Some(me) = self.self_ref() {
            let _ = self.bridge.call(move |_| async move {
                me.settled(ticket).await;
                Ok(())
            });
        }
    }

    /// Forget cached archive ids and queued origin-ids (the tables were
    /// emptied by a restore).
    pub(crate) fn reset(&self) {
        self.owners
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.lock().pending_origin.clear();
    }

    /// Write everything queued and refuse new appends.
    pub(crate) fn close_now(&self) {
        let ticket = {
            let mut s = self.lock();
            s.stop = true;
            s.ticket
        };
        self.stopped.store(true, Ordering::Release);
        if let Some(me) = self.self_ref() {
            let _ = self.bridge.call(move |_| async move {
                me.settled(ticket).await;
                Ok(())
            });
        }
    }
}

/// What a read task needs to wait for the writer.
struct ArchiveRef {
    done: watch::Receiver<Done>,
    wake: Arc<Notify>,
}

impl ArchiveRef {
    async fn settled(mut self, ticket: u64) {
        if self.done.borrow().written >= ticket {
            return;
        }
        self.wake.notify_one();
        let _ =
            tokio::time::timeout(SETTLE_TIMEOUT, self.done.wait_for(|d| d.written >= ticket)).await;
    }
}

impl ArchiveStore for PgArchive {
    fn append(&self, msgs: Vec<NewMessage>) -> Result<Vec<Appended>, StoreError> {
        {
            let mut s = self.lock();
            if s.stop {
                return Err(StoreError::other("archive closed"));
            }
            if let Some((why, at)) = &s.failed {
                if at.elapsed() < REFUSE_AFTER_FAILURE {
                    return Err(store_err(StorageError::Unavailable(format!(
                        "archive unavailable for a second after a failed write: {why}"
                    ))));
                }
            }
            if s.bytes >= MAX_BACKLOG {
                if s.backlog_logged
                    .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
                {
                    s.backlog_logged = Some(Instant::now());
                    tracing::warn!(
                        "archive: {} KiB wait to be written to PostgreSQL (at most {} KiB); \
                         messages are not archived until it catches up",
                        s.bytes >> 10,
                        MAX_BACKLOG >> 10
                    );
                }
                return Err(StoreError::other(format!(
                    "archive busy: {} KiB wait to be written",
                    s.bytes >> 10
                )));
            }
        }
        let owners: Vec<&str> = msgs.iter().map(|m| m.owner.as_str()).collect();
        let archives = self.resolve(&owners).map_err(store_err)?;
        // Origin-ids not queued: one query for the batch.
        let mut found: HashMap<usize, u64> = HashMap::new();
        {
            let s = self.lock();
            let mut qa = Vec::new();
            let mut qp = Vec::new();
            let mut qo = Vec::new();
            let mut qi = Vec::new();
            for (i, m) in msgs.iter().enumerate() {
                if let Some(o) = &m.origin_id {
                    let a = archives[m.owner.as_str()];
                    let key = (a, m.peer.as_str().to_string(), o.clone());
                    if let Some(id) = s.pending_origin.get(&key) {
                        found.insert(i, *id);
                    } else {
                        qa.push(a);
                        qp.push(key.1);
                        qo.push(key.2);
                        qi.push(i as i64);
                    }
                }
            }
            drop(s);
            if !qa.is_empty() {
                let rows: Vec<(i64, i64)> = self
                    .bridge
                    .call(|sh| async move {
                        let c = sh.pool.get().await?;
                        let st = c
                            .prepare_cached(
                                "SELECT q.i, m.id FROM unnest($1::int[], $2::text[], $3::text[], $4::bigint[]) AS q(a, p, o, i) \
                                 JOIN rookery_archive_messages m ON m.archive = q.a AND m.peer = q.p AND m.origin_id = q.o",
                            )
                            .await?;
                        let rows = c.query(&st, &[&qa, &qp, &qo, &qi]).await?;
                        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
                    })
                    .map_err(store_err)?;
                for (i, id) in rows {
                    found.insert(i as usize, id as u64);
                }
            }
        }
        let mut s = self.lock();
        if s.stop {
            return Err(StoreError::other("archive closed"));
        }
        s.ticket += 1;
        let ticket = s.ticket;
        let mut out = Vec::with_capacity(msgs.len());
        for (i, m) in msgs.into_iter().enumerate() {
            if let Some(id) = found.get(&i) {
                out.push(Appended::Duplicate(*id));
                continue;
            }
            let a = archives[m.owner.as_str()];
            let peer = m.peer.as_str().to_string();
            if let Some(o) = &m.origin_id {
                // A second copy within this batch or since the query.
                if let Some(id) = s.pending_origin.get(&(a, peer.clone(), o.clone())) {
                    out.push(Appended::Duplicate(*id));
                    continue;
                }
            }
            let id = now_us().max(s.last_id + 1);
            s.last_id = id;
            if let Some(o) = &m.origin_id {
                s.pending_origin.insert((a, peer.clone(), o.clone()), id);
            }
            let row = Row {
                ticket,
                archive: a,
                id: big(id),
                owner: m.owner.as_str().to_string(),
                peer,
                outgoing: m.direction == Direction::Outgoing,
                origin: m.origin_id,
                xml: m.xml,
            };
            s.bytes += row.cost();
            s.queue.push_back(row);
            out.push(Appended::Stored(id));
        }
        if s.queue.len() >= MAX_BATCH {
            self.wake.notify_one();
        }
        Ok(out)
    }

    fn page(&self, owner: &BareJid, q: &PageQuery<'_>) -> Result<Vec<ArchivedMessage>, StoreError> {
        let Some(a) = self.archive_of(owner.as_str()).map_err(store_err)? else {
            return Ok(Vec::new());
        };
        let with = q.with.map(str::to_string);
        let (lo, hi, reverse) = (big(q.lo), big(q.hi), q.reverse);
        let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
        self.read(move |sh| async move {
            let c = sh.pool.get().await?;
            let order = if reverse { "DESC" } else { "ASC" };
            let rows = match with {
                Some(w) => {
                    let st = c
                        .prepare_cached(&format!(
                            "SELECT {MSG_COLUMNS} FROM rookery_archive_messages WHERE archive = $1 AND peer = $2 \
                             AND id BETWEEN $3 AND $4 ORDER BY id {order} LIMIT $5"
                        ))
                        .await?;
                    c.query(&st, &[&a, &w, &lo, &hi, &limit]).await?
                }
                None => {
                    let st = c
                        .prepare_cached(&format!(
                            "SELECT {MSG_COLUMNS} FROM rookery_archive_messages WHERE archive = $1 \
                             AND id BETWEEN $2 AND $3 ORDER BY id {order} LIMIT $4"
                        ))
                        .await?;
                    c.query(&st, &[&a, &lo, &hi, &limit]).await?
                }
            };
            Ok(rows.iter().map(row_message).collect())
        })
    }

    fn get(&self, owner: &BareJid, id: u64) -> Result<Option<ArchivedMessage>, StoreError> {
        let Some(a) = self.archive_of(owner.as_str()).map_err(store_err)? else {
            return Ok(None);
        };
        let id = big(id);
        self.read(move |sh| async move {
            let c = sh.pool.get().await?;
            Ok(c.query_opt(
                &format!("SELECT {MSG_COLUMNS} FROM rookery_archive_messages WHERE archive = $1 AND id = $2"),
                &[&a, &id],
            )
            .await?
            .map(|r| row_message(&r)))
        })
    }

    fn find_origin_id(
        &self,
        owner: &BareJid,
        peer: &BareJid,
        origin_id: &str,
    ) -> Result<Option<u64>, StoreError> {
        let Some(a) = self.archive_of(owner.as_str()).map_err(store_err)? else {
            return Ok(None);
        };
        let (p, o) = (peer.as_str().to_string(), origin_id.to_string());
        self.read(move |sh| async move {
            let c = sh.pool.get().await?;
            Ok(c.query_opt(
                "SELECT id FROM rookery_archive_messages WHERE archive = $1 AND peer = $2 AND origin_id = $3",
                &[&a, &p, &o],
            )
            .await?
            .map(|r| r.get::<_, i64>(0) as u64))
        })
    }

    fn replace(&self, owner: &BareJid, id: u64, xml: &str) -> Result<bool, StoreError> {
        let Some(a) = self.archive_of(owner.as_str()).map_err(store_err)? else {
            return Ok(false);
        };
        let (id, xml) = (big(id), xml.to_string());
        self.read(move |sh| async move {
            let c = sh.pool.get().await?;
            let n = c
                .execute(
                    "UPDATE rookery_archive_messages SET xml = $3 WHERE archive = $1 AND id = $2",
                    &[&a, &id, &xml],
                )
                .await?;
            Ok(n > 0)
        })
    }

    fn count(&self, owner: &BareJid) -> Result<u64, StoreError> {
        let Some(a) = self.archive_of(owner.as_str()).map_err(store_err)? else {
            return Ok(0);
        };
        self.read(move |sh| async move {
            let c = sh.pool.get().await?;
            let st = c
                .prepare_cached("SELECT messages FROM rookery_archives WHERE archive = $1")
                .await?;
            Ok(c.query_opt(&st, &[&a])
                .await?
                .map_or(0, |r| r.get::<_, i64>(0).max(0) as u64))
        })
    }

    fn count_range(
        &self,
        owner: &BareJid,
        with: Option<&str>,
        lo: u64,
        hi: u64,
    ) -> Result<Count, StoreError> {
        let Some(a) = self.archive_of(owner.as_str()).map_err(store_err)? else {
            return Ok(Count::Exact(0));
        };
        let with = with.map(str::to_string);
        let (lo, hi) = (big(lo), big(hi));
        let cap = EXACT_COUNT_LIMIT as i64;
        self.read(move |sh| async move {
            let c = sh.pool.get().await?;
            let peer_cond = if with.is_some() { "AND peer = $4" } else { "AND $4::text IS NULL" };
            let total: i64 = match &with {
                Some(w) => c
                    .query_opt(
                        "SELECT messages FROM rookery_archive_peers WHERE archive = $1 AND peer = $2",
                        &[&a, w],
                    )
                    .await?
                    .map_or(0, |r| r.get(0)),
                None => c
                    .query_opt("SELECT messages FROM rookery_archives WHERE archive = $1", &[&a])
                    .await?
                    .map_or(0, |r| r.get(0)),
            };
            if lo <= 0 && hi == i64::MAX {
                return Ok(Count::Exact(total.max(0) as u64));
            }
            // At most cap + 1 rows of the range, then of its complement.
            let inside: i64 = c
                .query_one(
                    &format!(
                        "SELECT count(*) FROM (SELECT 1 FROM rookery_archive_messages WHERE archive = $1 \
                         AND id BETWEEN $2 AND $3 {peer_cond} LIMIT $5) s"
                    ),
                    &[&a, &lo, &hi, &with, &(cap + 1)],
                )
                .await?
                .get(0);
            if inside <= cap {
                return Ok(Count::Exact(inside as u64));
            }
            let outside: i64 = c
                .query_one(
                    &format!(
                        "SELECT count(*) FROM (SELECT 1 FROM rookery_archive_messages WHERE archive = $1 \
                         AND (id < $2 OR id > $3) {peer_cond} LIMIT $5) s"
                    ),
                    &[&a, &lo, &hi, &with, &(cap + 1)],
                )
                .await?
                .get(0);
            if outside <= cap {
                return Ok(Count::Exact((total - outside).max(0) as u64));
            }
            // Both sides large: interpolate over the archive's id span.
            let span = c
                .query_one(
                    &format!(
                        "SELECT min(id), max(id) FROM rookery_archive_messages WHERE archive = $1 {}",
                        if with.is_some() { "AND peer = $2" } else { "AND $2::text IS NULL" }
                    ),
                    &[&a, &with],
                )
                .await?;
            let (min, max): (Option<i64>, Option<i64>) = (span.get(0), span.get(1));
            let (min, max) = (min.unwrap_or(0) as f64, max.unwrap_or(0) as f64);
            let part = ((hi as f64).min(max) - (lo as f64).max(min)).max(0.0) / (max - min).max(1.0);
            Ok(Count::Estimate(((total as f64) * part.min(1.0)) as u64))
        })
    }

    fn delete_before(
        &self,
        owner: &BareJid,
        cutoff: u64,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let Some(a) = self.archive_of(owner.as_str()).map_err(store_err)? else {
            return Ok(0);
        };
        let cutoff = big(cutoff);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |sh| async move {
            let mut c = sh.pool.get().await?;
            let tx = c.transaction().await?;
            let rows = tx
                .query(
                    "WITH d AS (DELETE FROM rookery_archive_messages WHERE archive = $1 AND id IN \
                     (SELECT id FROM rookery_archive_messages WHERE archive = $1 AND id < $2 ORDER BY id LIMIT $3) \
                     RETURNING peer) SELECT peer, count(*) FROM d GROUP BY peer ORDER BY peer",
                    &[&a, &cutoff, &limit],
                )
                .await?;
            let mut total = 0i64;
            for r in &rows {
                let (p, n): (String, i64) = (r.get(0), r.get(1));
                total += n;
                tx.execute(
                    "UPDATE rookery_archive_peers SET messages = greatest(messages - $3, 0) WHERE archive = $1 AND peer = $2",
                    &[&a, &p, &n],
                )
                .await?;
            }
            tx.execute(
                "UPDATE rookery_archives SET messages = greatest(messages - $2, 0) WHERE archive = $1",
                &[&a, &total],
            )
            .await?;
            tx.commit().await?;
            Ok(total as usize)
        })
    }

    fn delete_archive(&self, owner: &BareJid) -> Result<u64, StoreError> {
        let Some(a) = self.archive_of(owner.as_str()).map_err(store_err)? else {
            return Ok(0);
        };
        {
            // Queued messages of this archive are not written any more.
            let mut s = self.lock();
            let before = s.queue.len();
            let mut freed = 0;
            s.queue.retain(|r| {
                let keep = r.archive != a;
                if !keep {
                    freed += r.cost();
                }
                keep
            });
            s.bytes = s.bytes.saturating_sub(freed);
            s.pending_origin.retain(|k, _| k.0 != a);
            if s.queue.len() != before {
                tracing::debug!(
                    "archive of {owner}: {} queued message(s) dropped",
                    before - s.queue.len()
                );
            }
        }
        self.read(move |sh| async move {
            let mut c = sh.pool.get().await?;
            let tx = c.transaction().await?;
            let n = tx
                .execute(
                    "DELETE FROM rookery_archive_messages WHERE archive = $1",
                    &[&a],
                )
                .await?;
            tx.execute(
                "DELETE FROM rookery_archive_peers WHERE archive = $1",
                &[&a],
            )
            .await?;
            tx.execute(
                "UPDATE rookery_archives SET messages = 0 WHERE archive = $1",
                &[&a],
            )
            .await?;
            tx.commit().await?;
            Ok(n)
        })
    }

    fn owners(&self) -> Result<Vec<BareJid>, StoreError> {
        let names: Vec<String> = self.read(|sh| async move {
            let c = sh.pool.get().await?;
            let rows = c
                .query(
                    "SELECT owner FROM rookery_archives WHERE messages > 0 ORDER BY owner COLLATE \"C\"",
                    &[],
                )
                .await?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })?;
        Ok(names
            .into_iter()
            .filter_map(|n| match BareJid::new(&n) {
                Ok(j) => Some(j),
                Err(e) => {
                    tracing::error!("archive owner {n:?} is not a JID ({e}); skipped");
                    None
                }
            })
            .collect())
    }
}

impl crate::storage::ArchiveEngine for PgArchive {
    fn ticket(&self) -> u64 {
        self.lock().ticket
    }

    fn close(&self) {
        self.close_now();
    }

    fn import(&self, owner: &BareJid, msgs: Vec<(u64, NewMessage)>) -> Result<usize, StoreError> {
        let archives = self.resolve(&[owner.as_str()]).map_err(store_err)?;
        let a = archives[owner.as_str()];
        let max = msgs.iter().map(|(id, _)| *id).max().unwrap_or(0);
        let mut total = 0usize;
        for chunk in msgs.chunks(MAX_BATCH) {
            let archives = vec![a; chunk.len()];
            let ids: Vec<i64> = chunk.iter().map(|(id, _)| big(*id)).collect();
            let peers: Vec<String> = chunk
                .iter()
                .map(|(_, m)| m.peer.as_str().to_string())
                .collect();
            let outgoing: Vec<bool> = chunk
                .iter()
                .map(|(_, m)| m.direction == Direction::Outgoing)
                .collect();
            let origins: Vec<Option<String>> =
                chunk.iter().map(|(_, m)| m.origin_id.clone()).collect();
            let xmls: Vec<String> = chunk.iter().map(|(_, m)| m.xml.clone()).collect();
            let n = self
                .bridge
                .call(move |sh| async move {
                    let mut c = sh.pool.get().await?;
                    let tx = c.transaction().await?;
                    let n = insert_rows(&tx, &archives, &ids, &peers, &outgoing, &origins, &xmls)
                        .await?;
                    tx.commit().await?;
                    Ok(n)
                })
                .map_err(store_err)?;
            total += n as usize;
        }
        let mut s = self.lock();
        s.last_id = s.last_id.max(max);
        Ok(total)
    }

    fn durable(
        &self,
        ticket: u64,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), StorageError>> + Send + '_>>
    {
        Box::pin(async move {
            let d = *self.done.borrow();
            if d.written >= ticket && !(d.failed.0 < ticket && ticket <= d.failed.1) {
                return Ok(());
            }
            self.wake.notify_one();
            let mut rx = self.done.subscribe();
            let d = rx
                .wait_for(|d| d.written >= ticket)
                .await
                .map(|d| *d)
                .map_err(|_| StorageError::Io("the archive writer stopped".into()))?;
            if d.failed.0 < ticket && ticket <= d.failed.1 {
                let why = self.lock().failed.as_ref().map(|(e, _)| e.clone());
                return Err(why.unwrap_or_else(|| StorageError::Io("archive write failed".into())));
            }
            Ok(())
        })
    }

    fn take_failures(&self) -> Option<mpsc::Receiver<ArchiveFailure>> {
        self.failures_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    fn failures_reported(&self) -> u64 {
        self.reports.load(Ordering::Acquire)
    }
}

impl crate::storage::ArchiveAccess for super::PgStorage {
    fn archive(&self) -> Arc<dyn crate::storage::ArchiveEngine> {
        self.archive.clone()
    }
}
