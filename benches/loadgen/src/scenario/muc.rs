//! `muc`: group chat fan-out. N rooms of M occupants (XEP-0045), each
//! occupant posting at a set rate; every message goes to every occupant.
//!
//! Occupant `k` (0-based) of room `r` is account `first + r*M + k`, nick
//! `o{k}`, in room `{tag}-{r}@{service}` (`--service`, default
//! `conference.DOMAIN`); the tag is new for each run, so every run creates
//! fresh rooms and no history from an earlier run can arrive (the join also
//! asks for none). Phases:
//!
//! 1. All sessions log in (available). Server RSS before and after.
//! 2. Joins: each room's owner (`k = 0`) joins first and submits the room
//!    configuration: persistent (a community's room; servers delete a
//!    temporary room's archive with the room) and nothing else, so the
//!    service's defaults, such as room archives, stay as configured
//!    (`--temporary`: an empty instant-room form); servers that lock new
//!    rooms, as Prosody does, unlock them. Then the other occupants join,
//!    `--concurrency` at a time. A join is done when the
//!    occupant's own presence (from `room/nick`) arrives.
//! 3. Hold `--hold` seconds (every occupant reading), then read the
//!    server's RSS: `kib_per_occupant` is (after joins - after logins) /
//!    occupants joined; `kib_per_session` the logins' share.
//! 4. Send (`--duration` s, measured with the server's CPU time): each
//!    occupant posts `--rate` messages per second (start times spread over
//!    one period), at most `--window` of its own not yet reflected back by
//!    the room. Bodies are `ROOM SENDER SEQ SENT_US`; each occupant checks,
//!    per sender, that it gets every message once and in order (latency
//!    from the send timestamp: one clock, one process). After sending stops,
//!    occupants read until they have everything their room's senders sent
//!    or `--drain` s have passed.
//!
//! Lost = for each room and sender, (sent x occupants of the room) -
//! deliveries; reported in all, per room (`lost_by_room`) and as the number
//! of (room, sender) pairs with a loss. `delivered_per_cpu_s` counts every
//! groupchat stanza delivered (the sender's own reflection included) per
//! server CPU-second of phase 4.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::{sleep_until, timeout_at, Instant};

use super::chat::{now_us, SeqCheck};
use crate::conn::{ClientCfg, Conn, Error};
use crate::run::{self, Failures, Ready};
use crate::stats::{self, round, Watch};
use crate::xml::{Kind, Unit};
use crate::Common;

/// Options of `muc`.
#[derive(Args, Debug)]
pub struct Opts {
    #[command(flatten)]
    pub common: Common,
    /// Rooms.
    #[arg(long, default_value_t = 1)]
    pub rooms: u64,
    /// Occupants per room (rooms x occupants accounts).
    #[arg(long, default_value_t = 20)]
    pub occupants: u64,
    /// Messages per second each occupant posts.
    #[arg(long, default_value_t = 1.0)]
    pub rate: f64,
    /// Most of an occupant's own messages not yet reflected by the room.
    #[arg(long, default_value_t = 16)]
    pub window: u64,
    /// Seconds to wait for messages in flight after sending stops.
    #[arg(long, default_value_t = 10.0)]
    pub drain: f64,
    /// Extra bytes of body padding per message.
    #[arg(long, default_value_t = 0)]
    pub body_bytes: usize,
    /// The MUC service (default: conference.DOMAIN).
    #[arg(long)]
    pub service: Option<String>,
    /// Seconds the joined occupants sit idle before the memory reading.
    #[arg(long, default_value_t = 2.0)]
    pub hold: f64,
    /// Bound on one join, seconds.
    #[arg(long, default_value_t = 60.0)]
    pub join_timeout: f64,
    /// Leave the rooms temporary (an empty instant-room form) instead of
    /// making them persistent.
    #[arg(long)]
    pub temporary: bool,
}

const NS_MUC: &str = "http://jabber.org/protocol/muc";
const CONFIG_ID: &str = "muccfg1";

/// What one room's occupants share.
struct RoomState {
    /// The owner has joined and configured the room (or failed to).
    ready: watch::Sender<bool>,
    /// Occupants joined (final before the sending starts).
    joined: AtomicU64,
    /// Messages sent to the room so far.
    sent: AtomicU64,
    /// Occupants that stopped sending.
    senders_done: AtomicU64,
}

/// What all occupant tasks share.
struct Plan {
    occupants: u64,
    total: u64,
    rate: f64,
    window: u64,
    pad: String,
    service: String,
    tag: String,
    join_timeout: Duration,
    temporary: bool,
    join_sem: Semaphore,
    rooms: Vec<RoomState>,
    hist: Mutex<Histogram<u64>>,
}

impl Plan {
    fn room_jid(&self, r: u64) -> String {
        format!("{}-{r}@{}", self.tag, self.service)
    }
}

/// The times of phase 4, sent to the occupants when the joins are over.
#[derive(Clone, Copy, Debug)]
struct Clock {
    t0: Instant,
    send_end: Instant,
    drain_end: Instant,
}

/// How one occupant's join went.
struct JoinReport {
    room: u64,
    k: u64,
    result: Result<(), Error>,
    config_error: Option<Error>,
}

/// One occupant's counters.
struct OccResult {
    room: u64,
    k: u64,
    joined: bool,
    sent: u64,
    /// New messages received, per sender of the room.
    from: Vec<u64>,
    received: u64,
    received_in_window: u64,
    out_of_order: u64,
    duplicates: u64,
    bounced: u64,
    foreign: u64,
    broken: Option<Error>,
    last_recv: Option<Instant>,
    conn: Option<Conn>,
}

fn error(kind: &'static str, msg: impl Into<String>) -> Error {
    Error {
        kind,
        msg: msg.into(),
    }
}

/// Parses `ROOM SENDER SEQ SENT_US ...`.
fn parse_body(b: &[u8]) -> Option<(u64, u64, u64, u64)> {
    let s = std::str::from_utf8(b).ok()?;
    let mut it = s.split_ascii_whitespace();
    let r = it.next()?.parse().ok()?;
    let k = it.next()?.parse().ok()?;
    let q = it.next()?.parse().ok()?;
    let t = it.next()?.parse().ok()?;
    Some((r, k, q, t))
}

/// The join presence for `room/nick`, asking for no history.
fn join_presence(room: &str, nick: &str) -> String {
    format!(
        "<presence to='{room}/{nick}'><x xmlns='{NS_MUC}'><history maxstanzas='0'/></x></presence>"
    )
}

/// The room configuration the owner submits: persistent only (XEP-0045
/// §10.2), or with `temporary` the instant-room form (§10.1.2, empty).
fn room_config(room: &str, temporary: bool) -> String {
    let fields = if temporary {
        String::new()
    } else {
        format!(
            "<field var='FORM_TYPE' type='hidden'><value>{NS_MUC}#roomconfig</value></field>\
             <field var='muc#roomconfig_persistentroom'><value>1</value></field>"
        )
    };
    format!(
        "<iq type='set' id='{CONFIG_ID}' to='{room}'><query xmlns='{NS_MUC}#owner'>\
         <x xmlns='jabber:x:data' type='submit'>{fields}</x></query></iq>"
    )
}

/// Joins `room` as `nick`: done when our own presence comes back.
async fn join(c: &mut Conn, room: &str, nick: &str, deadline: Instant) -> Result<(), Error> {
    let full = format!("{room}/{nick}");
    c.send(join_presence(room, nick).as_bytes(), deadline)
        .await?;
    loop {
        let u = c.recv(deadline).await?;
        if c.get(&u.name) == b"presence" && c.opt(&u.from) == full.as_bytes() {
            if c.opt(&u.typ) == b"error" {
                let raw = String::from_utf8_lossy(c.get(&u.raw));
                return Err(error("join", raw.chars().take(300).collect::<String>()));
            }
            return Ok(());
        }
        if let Some(reply) = c.iq_reply(&u) {
            c.send(reply.as_bytes(), deadline).await?;
        }
    }
}

/// Submits the instant-room configuration and waits for the answer.
async fn configure(
    c: &mut Conn,
    room: &str,
    temporary: bool,
    deadline: Instant,
) -> Result<(), Error> {
    c.send(room_config(room, temporary).as_bytes(), deadline)
        .await?;
    loop {
        let u = c.recv(deadline).await?;
        if c.get(&u.name) == b"iq" && c.opt(&u.id) == CONFIG_ID.as_bytes() {
            if c.opt(&u.typ) == b"result" {
                return Ok(());
            }
            let raw = String::from_utf8_lossy(c.get(&u.raw));
            return Err(error("config", raw.chars().take(300).collect::<String>()));
        }
        if let Some(reply) = c.iq_reply(&u) {
            c.send(reply.as_bytes(), deadline).await?;
        }
    }
}

/// One occupant's receive-side bookkeeping.
struct Rx {
    r: OccResult,
    seqs: Vec<SeqCheck>,
    echoes: u64,
    lat: Vec<u64>,
}

impl Rx {
    fn flush(&mut self, p: &Plan) {
        let mut h = p.hist.lock().expect("histogram");
        for v in self.lat.drain(..) {
            let _ = h.record(v.max(1));
        }
    }

    /// Handles one unit; returns the reply owed (a server iq), if any.
    fn unit(&mut self, p: &Plan, ck: &Clock, c: &Conn, u: &Unit) -> Option<String> {
        if u.kind == Kind::End {
            self.r.broken = Some(error("closed", "server closed the stream"));
            return None;
        }
        let name = c.get(&u.name);
        if name == b"message" {
            let typ = c.opt(&u.typ);
            if typ == b"error" {
                self.r.bounced += 1;
            } else if typ == b"groupchat" && u.body.is_some() {
                self.body(p, ck, parse_body(c.opt(&u.body)));
            }
            return None;
        }
        c.iq_reply(u)
    }

    fn body(&mut self, p: &Plan, ck: &Clock, b: Option<(u64, u64, u64, u64)>) {
        let Some((_, s, q, ts)) = b.filter(|b| b.0 == self.r.room && b.1 < p.occupants) else {
            self.r.foreign += 1;
            return;
        };
        let (new, ooo, dup) = self.seqs[s as usize].see(q);
        if new {
            let t = Instant::now();
            self.r.received += 1;
            self.r.from[s as usize] += 1;
            if s == self.r.k {
                self.echoes += 1;
            }
            if t <= ck.send_end {
                self.r.received_in_window += 1;
            }
            self.r.last_recv = Some(t);
            self.lat.push(now_us(ck.t0).saturating_sub(ts));
            if self.lat.len() >= 64 {
                self.flush(p);
            }
        }
        self.r.out_of_order += u64::from(ooo);
        self.r.duplicates += u64::from(dup);
    }
}

/// One occupant: join, wait for the start (reading), then post and read.
async fn occupant(
    room: u64,
    k: u64,
    gidx: u64,
    mut c: Conn,
    p: Arc<Plan>,
    reports: mpsc::UnboundedSender<JoinReport>,
    mut start: watch::Receiver<Option<Clock>>,
) -> OccResult {
    let mut rx = Rx {
        r: OccResult {
            room,
            k,
            joined: false,
            sent: 0,
            from: vec![0; p.occupants as usize],
            received: 0,
            received_in_window: 0,
            out_of_order: 0,
            duplicates: 0,
            bounced: 0,
            foreign: 0,
            broken: None,
            last_recv: None,
            conn: None,
        },
        seqs: (0..p.occupants).map(|_| SeqCheck::default()).collect(),
        echoes: 0,
        lat: Vec::with_capacity(64),
    };
    let rs = &p.rooms[room as usize];
    let room_jid = p.room_jid(room);
    let nick = format!("o{k}");
    // Phase 2: the owner first; the others once the room is configured.
    if k > 0 {
        let mut ready = rs.ready.subscribe();
        while !*ready.borrow_and_update() {
            if ready.changed().await.is_err() {
                break;
            }
        }
    }
    let joined = {
        let _permit = p.join_sem.acquire().await;
        let deadline = Instant::now() + p.join_timeout;
        let j = join(&mut c, &room_jid, &nick, deadline).await;
        let mut config_error = None;
        if k == 0 {
            if j.is_ok() {
                config_error = configure(&mut c, &room_jid, p.temporary, deadline)
                    .await
                    .err();
            }
            rs.ready.send_replace(true);
        }
        if j.is_ok() {
            rs.joined.fetch_add(1, Ordering::SeqCst);
        }
        let ok = j.is_ok();
        let _ = reports.send(JoinReport {
            room,
            k,
            result: j,
            config_error,
        });
        ok
    };
    drop(reports);
    c.release_buffer();
    if !joined {
        rx.r.conn = Some(c);
        return rx.r;
    }
    rx.r.joined = true;
    // Phase 3: read (presences of later joins) until the start.
    let ck = loop {
        if let Some(ck) = *start.borrow_and_update() {
            break ck;
        }
        tokio::select! {
            ch = start.changed() => if ch.is_err() {
                rx.r.conn = Some(c);
                return rx.r;
            },
            u = c.next_unit() => {
                let reply = match u {
                    Ok(u) if u.kind == Kind::End => {
                        Err(error("closed", "server closed the stream"))
                    }
                    Ok(u) => Ok(c.iq_reply(&u)),
                    Err(e) => Err(e),
                };
                match reply {
                    Ok(Some(reply)) => {
                        if let Err(e) = c.send_now(reply.as_bytes()).await {
                            rx.r.broken = Some(e);
                        }
                    }
                    Ok(None) => {}
                    Err(e) => rx.r.broken = Some(e),
                }
                if rx.r.broken.is_some() {
                    rs.senders_done.fetch_add(1, Ordering::SeqCst);
                    rx.r.conn = Some(c);
                    return rx.r;
                }
                c.release_buffer();
            }
        }
    };
    // Phase 4.
    let start_at = ck.t0 + Duration::from_secs_f64(gidx as f64 / p.total as f64 / p.rate);
    let mut wbuf = String::with_capacity(256);
    let mut done = false;
    sleep_until(ck.t0).await;
    let timer = sleep_until(ck.drain_end);
    tokio::pin!(timer);
    loop {
        let now = Instant::now();
        let sending = now < ck.send_end && rx.r.broken.is_none();
        let inflight = rx.r.sent.saturating_sub(rx.echoes);
        let mut allowed = 0;
        if sending {
            let due = match now.checked_duration_since(start_at) {
                Some(d) => (d.as_secs_f64() * p.rate).floor() as u64 + 1,
                None => 0,
            };
            allowed = p
                .window
                .saturating_sub(inflight)
                .min(due.saturating_sub(rx.r.sent));
        } else {
            if !done {
                rs.senders_done.fetch_add(1, Ordering::SeqCst);
                done = true;
            }
            let all_done = rs.senders_done.load(Ordering::SeqCst)
                >= rs.joined.load(Ordering::SeqCst)
                && rx.r.received >= rs.sent.load(Ordering::SeqCst);
            if rx.r.broken.is_some() || now >= ck.drain_end || all_done {
                break;
            }
        }
        if allowed > 0 {
            wbuf.clear();
            let ts = now_us(ck.t0);
            for i in 0..allowed {
                let s = rx.r.sent + i;
                let _ = write!(
                    wbuf,
                    "<message to='{room_jid}' type='groupchat' id='g{s}'><body>{room} {k} {s} {ts}{}</body></message>",
                    p.pad
                );
            }
            match c.send(wbuf.as_bytes(), ck.drain_end).await {
                Ok(()) => {
                    rx.r.sent += allowed;
                    rs.sent.fetch_add(allowed, Ordering::SeqCst);
                }
                Err(e) => rx.r.broken = Some(e),
            }
            continue;
        }
        let wake = if !sending {
            // Others may finish without anything arriving here: look again.
            (now + Duration::from_millis(100)).min(ck.drain_end)
        } else if inflight >= p.window {
            ck.send_end
        } else {
            (start_at + Duration::from_secs_f64(rx.r.sent as f64 / p.rate)).min(ck.send_end)
        };
        if timer.deadline() != wake {
            timer.as_mut().reset(wake);
        }
        tokio::select! {
            u = c.next_unit() => match u {
                Ok(u) => {
                    let mut reply = rx.unit(&p, &ck, &c, &u);
                    loop {
                        if let Some(r) = reply.take() {
                            if let Err(e) = c.send(r.as_bytes(), ck.drain_end).await {
                                rx.r.broken = Some(e);
                                break;
                            }
                        }
                        match c.try_unit() {
                            Ok(Some(u)) => reply = rx.unit(&p, &ck, &c, &u),
                            Ok(None) => break,
                            Err(e) => { rx.r.broken = Some(e); break; }
                        }
                    }
                }
                Err(e) => rx.r.broken = Some(e),
            },
            _ = &mut timer => {}
        }
    }
    if !done {
        rs.senders_done.fetch_add(1, Ordering::SeqCst);
    }
    rx.flush(&p);
    rx.r.conn = Some(c);
    rx.r
}

fn rss(pid: Option<u32>) -> Option<u64> {
    pid.and_then(|p| stats::sample(&p.to_string()))
        .map(|s| s.rss_kib)
}

/// Runs the scenario.
pub async fn run(cfg: ClientCfg, o: Opts) -> Result<bool, String> {
    if o.rooms == 0 || o.occupants == 0 {
        return Err("--rooms and --occupants must be at least 1".into());
    }
    if !(o.rate > 0.0 && o.rate.is_finite()) {
        return Err("--rate must be a positive number of messages per second".into());
    }
    let (rooms, m) = (o.rooms, o.occupants);
    let total = rooms * m;
    let duration = o.common.duration.unwrap_or(10.0);
    let pid = o.common.server_pid;
    let cfg = Arc::new(cfg);
    let service = o
        .service
        .clone()
        .unwrap_or_else(|| format!("conference.{}", cfg.domain));
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let tag = format!("lg{}-{}", std::process::id(), secs % 1_000_000);

    // Phase 1: logins.
    let rss0 = rss(pid);
    let t_login = Instant::now();
    let logins = run::login_many(
        cfg.clone(),
        run::users(o.common.first_user, total),
        o.common.concurrency,
        Ready::Available,
        Instant::now() + Duration::from_secs(600),
    )
    .await;
    let login_s = t_login.elapsed().as_secs_f64();
    let rss1 = rss(pid);
    let logged_in = logins.conns.iter().filter(|c| c.is_some()).count() as u64;
    if logged_in == 0 {
        return Err(format!(
            "no occupant could log in: {}",
            logins.failures.first.clone().unwrap_or_default()
        ));
    }

    // Phase 2: joins.
    let plan = Arc::new(Plan {
        occupants: m,
        total,
        rate: o.rate,
        window: o.window.max(1),
        pad: if o.body_bytes > 0 {
            format!(" {}", "x".repeat(o.body_bytes))
        } else {
            String::new()
        },
        service: service.clone(),
        tag: tag.clone(),
        join_timeout: Duration::from_secs_f64(o.join_timeout),
        temporary: o.temporary,
        join_sem: Semaphore::new(o.common.concurrency.max(1)),
        rooms: (0..rooms)
            .map(|_| RoomState {
                ready: watch::channel(false).0,
                joined: AtomicU64::new(0),
                sent: AtomicU64::new(0),
                senders_done: AtomicU64::new(0),
            })
            .collect(),
        hist: Mutex::new(stats::histogram()),
    });
    let (rep_tx, mut rep_rx) = mpsc::unbounded_channel();
    let (start_tx, start_rx) = watch::channel(None);
    let join_watch = Watch::start(pid);
    let t_join = Instant::now();
    let mut tasks = Vec::with_capacity(logged_in as usize);
    for (i, c) in logins.conns.into_iter().enumerate() {
        let (room, k) = (i as u64 / m, i as u64 % m);
        match c {
            Some(c) => tasks.push(tokio::spawn(occupant(
                room,
                k,
                i as u64,
                c,
                plan.clone(),
                rep_tx.clone(),
                start_rx.clone(),
            ))),
            // No owner: let the others join (the first creates the room).
            None if k == 0 => {
                plan.rooms[room as usize].ready.send_replace(true);
            }
            None => {}
        }
    }
    drop(rep_tx);
    let mut join_failures = Failures::default();
    let mut config_errors = Failures::default();
    let mut joined = 0u64;
    let join_deadline = Instant::now() + Duration::from_secs(600);
    loop {
        match timeout_at(join_deadline, rep_rx.recv()).await {
            Ok(Some(rep)) => {
                let who = o.common.first_user + rep.room * m + rep.k;
                match &rep.result {
                    Ok(()) => joined += 1,
                    Err(e) => join_failures.add(who, e),
                }
                if let Some(e) = &rep.config_error {
                    config_errors.add(who, e);
                }
            }
            Ok(None) => break,
            Err(_) => {
                join_failures.add(0, &error("timeout", "join phase over 600 s"));
                break;
            }
        }
    }
    let join_s = t_join.elapsed().as_secs_f64();
    let join_usage = join_watch.stop();

    // Phase 3: hold, then memory.
    tokio::time::sleep(Duration::from_secs_f64(o.hold.max(0.0))).await;
    let rss2 = rss(pid);

    // Phase 4: send.
    let t0 = Instant::now() + Duration::from_millis(50);
    let ck = Clock {
        t0,
        send_end: t0 + Duration::from_secs_f64(duration),
        drain_end: t0 + Duration::from_secs_f64(duration + o.drain),
    };
    let watch_run = Watch::start(pid);
    let _ = start_tx.send(Some(ck));
    let mut results = Vec::with_capacity(tasks.len());
    for t in tasks {
        results.push(t.await.map_err(|e| format!("occupant task: {e}"))?);
    }
    let usage = watch_run.stop();
    let hist = plan.hist.lock().expect("histogram").clone();

    // Totals, and loss per room and sender.
    let mut sent = 0u64;
    let (mut received, mut in_window) = (0u64, 0u64);
    let (mut ooo, mut dups, mut bounced, mut foreign) = (0u64, 0u64, 0u64, 0u64);
    let mut broken = Failures::default();
    let mut last = t0;
    let mut sent_by = vec![vec![0u64; m as usize]; rooms as usize];
    let mut got_by = vec![vec![0u64; m as usize]; rooms as usize];
    let mut receivers = vec![0u64; rooms as usize];
    let mut conns = Vec::with_capacity(results.len());
    for r in &mut results {
        if let Some(c) = r.conn.take() {
            conns.push(c);
        }
        if !r.joined {
            continue;
        }
        let ri = r.room as usize;
        receivers[ri] += 1;
        sent_by[ri][r.k as usize] = r.sent;
        for (s, n) in r.from.iter().enumerate() {
            got_by[ri][s] += n;
        }
        sent += r.sent;
        received += r.received;
        in_window += r.received_in_window;
        ooo += r.out_of_order;
        dups += r.duplicates;
        bounced += r.bounced;
        foreign += r.foreign;
        if let Some(l) = r.last_recv {
            last = last.max(l);
        }
        if let Some(e) = &r.broken {
            broken.add(o.common.first_user + r.room * m + r.k, e);
        }
    }
    let mut lost = 0u64;
    let mut expected = 0u64;
    let mut lost_by_room = BTreeMap::new();
    let mut lost_senders = 0u64;
    let mut lost_first = None;
    for ri in 0..rooms as usize {
        let mut room_lost = 0;
        for s in 0..m as usize {
            let want = sent_by[ri][s] * receivers[ri];
            let l = want.saturating_sub(got_by[ri][s]);
            expected += want;
            if l > 0 {
                lost_senders += 1;
                room_lost += l;
                lost_first.get_or_insert_with(|| {
                    format!(
                        "room {ri} sender o{s}: {} of {want} deliveries",
                        got_by[ri][s]
                    )
                });
            }
        }
        if room_lost > 0 {
            lost_by_room.insert(ri.to_string(), room_lost);
        }
        lost += room_lost;
    }
    let t_close = Instant::now();
    run::close_all(
        conns,
        o.common.concurrency.max(100),
        Duration::from_secs(10),
    )
    .await;
    let close_s = t_close.elapsed().as_secs_f64();

    let per = |a: Option<u64>, b: Option<u64>, n: u64| match (a, b) {
        (Some(a), Some(b)) if n > 0 => round((b as f64 - a as f64) / n as f64, 2),
        _ => Value::Null,
    };
    let active_s = last.saturating_duration_since(t0).as_secs_f64().max(1e-6);
    let mut r = Map::new();
    r.insert("scenario".into(), json!("muc"));
    r.insert("rooms".into(), json!(rooms));
    r.insert("occupants".into(), json!(m));
    r.insert("service".into(), json!(service));
    r.insert("room_tag".into(), json!(tag));
    r.insert("persistent".into(), json!(!o.temporary));
    r.insert("rate_per_occupant".into(), json!(o.rate));
    r.insert("offered_per_s".into(), round(joined as f64 * o.rate, 1));
    r.insert("window".into(), json!(plan.window));
    r.insert("duration_s".into(), json!(duration));
    logins.failures.put(&mut r, "login_failures");
    r.insert("login_s".into(), round(login_s, 3));
    r.insert("joined".into(), json!(joined));
    join_failures.put(&mut r, "join_failures");
    config_errors.put(&mut r, "room_config_errors");
    r.insert("join_s".into(), round(join_s, 3));
    join_usage.put(&mut r, "join_");
    r.insert(
        "joins_per_cpu_s".into(),
        join_usage.per_cpu_s(joined as f64),
    );
    r.insert("server_rss_kib_before".into(), json!(rss0));
    r.insert("server_rss_kib_after_login".into(), json!(rss1));
    r.insert("server_rss_kib_after_join".into(), json!(rss2));
    r.insert("kib_per_session".into(), per(rss0, rss1, logged_in));
    r.insert("kib_per_occupant".into(), per(rss1, rss2, joined));
    broken.put(&mut r, "occupants_broken");
    r.insert("sent".into(), json!(sent));
    r.insert("expected".into(), json!(expected));
    r.insert("delivered".into(), json!(received));
    r.insert("lost".into(), json!(lost));
    r.insert("lost_by_room".into(), json!(lost_by_room));
    r.insert("lost_senders".into(), json!(lost_senders));
    if let Some(f) = &lost_first {
        r.insert("lost_first".into(), json!(f));
    }
    r.insert("out_of_order".into(), json!(ooo));
    r.insert("duplicates".into(), json!(dups));
    r.insert("bounced".into(), json!(bounced));
    r.insert("unexpected".into(), json!(foreign));
    r.insert("sent_per_s".into(), round(sent as f64 / duration, 1));
    r.insert(
        "delivered_per_s".into(),
        round(in_window as f64 / duration, 1),
    );
    r.insert(
        "delivered_total_per_s".into(),
        round(received as f64 / active_s, 1),
    );
    stats::put_latency(&mut r, "latency", &hist, true);
    usage.put(&mut r, "");
    r.insert(
        "delivered_per_cpu_s".into(),
        usage.per_cpu_s(received as f64),
    );
    r.insert("close_s".into(), round(close_s, 3));
    stats::print_json(r);
    let kib = match (rss1, rss2) {
        (Some(a), Some(b)) if joined > 0 => {
            format!("{:.1} KiB", (b as f64 - a as f64) / joined as f64)
        }
        _ => "n/a".to_string(),
    };
    run::summary(&format!(
        "muc: {rooms} rooms x {m} occupants, {joined} joined ({} join failures), {kib} per occupant; sent {sent}, delivered {received} of {expected} in {duration} s (+drain) = {:.0} deliveries/s, p50 {:.2} ms p99 {:.2} ms, lost {lost}, out of order {ooo}, duplicates {dups}, server CPU {}",
        join_failures.total(),
        in_window as f64 / duration,
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        usage
            .server_cpu_s
            .map_or("n/a".to_string(), |c| format!("{c:.2} s")),
    ));
    Ok(lost == 0
        && ooo == 0
        && dups == 0
        && logins.failures.total() == 0
        && join_failures.total() == 0
        && broken.total() == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_and_stanzas() {
        assert_eq!(parse_body(b"2 7 31 4000 xx"), Some((2, 7, 31, 4000)));
        assert_eq!(parse_body(b"2 7 31"), None);
        let p = join_presence("r@conference.localhost", "o1");
        let u = crate::xml::split(p.as_bytes(), true).unwrap().unwrap();
        assert_eq!(u.len, p.len());
        assert!(p.contains("maxstanzas='0'"));
        for temporary in [false, true] {
            let c = room_config("r@conference.localhost", temporary);
            let u = crate::xml::split(c.as_bytes(), true).unwrap().unwrap();
            assert_eq!(u.len, c.len());
            assert_eq!(&c.as_bytes()[u.child.unwrap()], b"query");
            assert_eq!(c.contains("persistentroom"), !temporary);
        }
    }
}
