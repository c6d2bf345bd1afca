//! `pubsub`: publish-subscribe broadcast (XEP-0060). One node on a pubsub
//! service (`--service`, default `pubsub.DOMAIN`), S subscribers online
//! (`--subscribers`), one publisher publishing `--rate` items per second
//! for `--duration` seconds; every item goes to every subscriber.
//!
//! The publisher is account `first`, subscriber `k` (0-based) is account
//! `first + 1 + k`. Phases:
//!
//! 1. All sessions log in (available).
//! 2. The publisher creates the node (`--node`, default a name new for each
//!    run) with an open access model, a small `max_items` (`--max-items`)
//!    and `notify_retract` off; a `<conflict/>` means it exists and is used
//!    as it is. Then every subscriber subscribes its bare JID, `--concurrency`
//!    at a time, each waiting for the subscription result.
//! 3. Publish (`--duration` s, measured with the server's CPU time): item
//!    `n` carries `lgps:TAG:n:SENT_US` (the run's tag, its sequence number
//!    and its send time; one clock, one process) and is published at
//!    `n / rate` s, with at most `--window` publishes not yet answered.
//!    Each subscriber checks that it gets every item once and in order.
//!    After publishing stops, subscribers read until they have every item
//!    the service accepted or `--drain` s have passed.
//!
//! Reported: `delivered` (new notifications), `expected` (accepted
//! publishes x subscribed), `lost` (expected - delivered, per subscriber),
//! `out_of_order`, `duplicates`, latency publish -> notification
//! (`latency_*`: every delivery), time from publish to the last subscriber
//! (`last_subscriber_*`: per item, its latest delivery; items some
//! subscriber never got are counted in `items_incomplete` instead) and
//! `delivered_per_cpu_s`: notifications per server CPU-second of phase 3.
//! The node is deleted at the end when this run created it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

/// Options of `pubsub`.
#[derive(Args, Debug)]
pub struct Opts {
    #[command(flatten)]
    pub common: Common,
    /// Subscribers online (accounts first+1 ..= first+S; the publisher is
    /// account first).
    #[arg(long, default_value_t = 100)]
    pub subscribers: u64,
    /// Items published per second.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Most publishes not yet answered by the service.
    #[arg(long, default_value_t = 16)]
    pub window: u64,
    /// Seconds to wait for notifications in flight after publishing stops.
    #[arg(long, default_value_t = 10.0)]
    pub drain: f64,
    /// The pubsub service (default: pubsub.DOMAIN).
    #[arg(long)]
    pub service: Option<String>,
    /// The node (default: a new name for each run); an existing node is
    /// used as it is.
    #[arg(long)]
    pub node: Option<String>,
    /// `pubsub#max_items` of the node created.
    #[arg(long, default_value_t = 10)]
    pub max_items: u64,
    /// Extra bytes of payload padding per item.
    #[arg(long, default_value_t = 0)]
    pub payload_bytes: usize,
    /// Bound on one subscription (and the node's creation), seconds.
    #[arg(long, default_value_t = 60.0)]
    pub subscribe_timeout: f64,
}

const NS_PUBSUB: &str = "http://jabber.org/protocol/pubsub";
const CREATE_ID: &str = "pscreate1";
const SUB_ID: &str = "pssub1";
const DELETE_ID: &str = "psdelete1";
/// Marker of the payload text: `lgps:TAG:SEQ:SENT_US`.
const MARK: &[u8] = b"lgps:";

fn error(kind: &'static str, msg: impl Into<String>) -> Error {
    Error {
        kind,
        msg: msg.into(),
    }
}

fn raw_excerpt(c: &Conn, u: &Unit) -> String {
    String::from_utf8_lossy(c.get(&u.raw))
        .chars()
        .take(300)
        .collect()
}

/// Finds `lgps:TAG:SEQ:SENT_US` in a stanza; returns (tag, seq, sent_us).
fn parse_payload(raw: &[u8]) -> Option<(&[u8], u64, u64)> {
    let at = raw.windows(MARK.len()).position(|w| w == MARK)? + MARK.len();
    let rest = &raw[at..];
    let end = rest
        .iter()
        .position(|b| !(b.is_ascii_alphanumeric() || *b == b':' || *b == b'-'))
        .unwrap_or(rest.len());
    let mut it = rest[..end].split(|b| *b == b':');
    let tag = it.next()?;
    let num = |s: &[u8]| std::str::from_utf8(s).ok()?.parse::<u64>().ok();
    let seq = num(it.next()?)?;
    let ts = num(it.next()?)?;
    Some((tag, seq, ts))
}

/// The node creation request: open access, `max_items` items kept, no
/// retraction notices (a server may send one for each item pushed out).
fn create_iq(service: &str, node: &str, max_items: u64) -> String {
    format!(
        "<iq type='set' id='{CREATE_ID}' to='{service}'><pubsub xmlns='{NS_PUBSUB}'>\
         <create node='{node}'/><configure><x xmlns='jabber:x:data' type='submit'>\
         <field var='FORM_TYPE' type='hidden'><value>{NS_PUBSUB}#node_config</value></field>\
         <field var='pubsub#access_model'><value>open</value></field>\
         <field var='pubsub#max_items'><value>{max_items}</value></field>\
         <field var='pubsub#notify_retract'><value>0</value></field>\
         </x></configure></pubsub></iq>"
    )
}

fn subscribe_iq(service: &str, node: &str, jid: &str) -> String {
    format!(
        "<iq type='set' id='{SUB_ID}' to='{service}'><pubsub xmlns='{NS_PUBSUB}'>\
         <subscribe node='{node}' jid='{jid}'/></pubsub></iq>"
    )
}

fn publish_iq(service: &str, node: &str, tag: &str, seq: u64, ts: u64, pad: &str) -> String {
    format!(
        "<iq type='set' id='pub{seq}' to='{service}'><pubsub xmlns='{NS_PUBSUB}'>\
         <publish node='{node}'><item id='{tag}-{seq}'><entry xmlns='urn:xmpp:loadgen:0'>\
         lgps:{tag}:{seq}:{ts}{pad}</entry></item></publish></pubsub></iq>"
    )
}

fn delete_iq(service: &str, node: &str) -> String {
    format!(
        "<iq type='set' id='{DELETE_ID}' to='{service}'><pubsub xmlns='{NS_PUBSUB}#owner'>\
         <delete node='{node}'/></pubsub></iq>"
    )
}

/// Sends `iq` and waits for the answer to `id`: Ok(None) on a result,
/// Ok(Some(stanza)) on an error.
async fn request(
    c: &mut Conn,
    iq: &str,
    id: &str,
    deadline: Instant,
) -> Result<Option<String>, Error> {
    c.send(iq.as_bytes(), deadline).await?;
    loop {
        let u = c.recv(deadline).await?;
        if c.get(&u.name) == b"iq" && c.opt(&u.id) == id.as_bytes() {
            let t = c.opt(&u.typ);
            if t == b"result" {
                return Ok(None);
            }
            if t == b"error" {
                return Ok(Some(raw_excerpt(c, &u)));
            }
        }
        if let Some(reply) = c.iq_reply(&u) {
            c.send(reply.as_bytes(), deadline).await?;
        }
    }
}

/// The times of phase 3.
#[derive(Clone, Copy, Debug)]
struct Clock {
    t0: Instant,
    send_end: Instant,
    drain_end: Instant,
}

/// What all tasks share.
struct Plan {
    service: String,
    node: String,
    tag: String,
    sub_timeout: Duration,
    sub_sem: Semaphore,
    /// Subscribed subscribers (final before publishing starts).
    subscribed: AtomicU64,
    /// Publishes the service accepted.
    accepted: AtomicU64,
    /// The publisher is done (every answer in, or the drain is over).
    publisher_done: AtomicBool,
    /// Per item: its latest delivery (µs after t0) and its deliveries.
    item_last: Vec<AtomicU64>,
    item_count: Vec<AtomicU64>,
    hist: Mutex<Histogram<u64>>,
}

/// One subscriber's counters.
struct SubResult {
    k: u64,
    subscribed: bool,
    received: u64,
    out_of_order: u64,
    duplicates: u64,
    foreign: u64,
    /// The first unexpected stanza (shortened).
    foreign_first: Option<String>,
    broken: Option<Error>,
    conn: Option<Conn>,
}

/// One subscriber: subscribe, then read notifications until everything the
/// service accepted has arrived or the drain is over.
async fn subscriber(
    k: u64,
    jid: String,
    mut c: Conn,
    p: Arc<Plan>,
    reports: mpsc::UnboundedSender<(u64, Result<(), Error>)>,
    mut start: watch::Receiver<Option<Clock>>,
) -> SubResult {
    let mut r = SubResult {
        k,
        subscribed: false,
        received: 0,
        out_of_order: 0,
        duplicates: 0,
        foreign: 0,
        foreign_first: None,
        broken: None,
        conn: None,
    };
    let res = {
        let _permit = p.sub_sem.acquire().await;
        let deadline = Instant::now() + p.sub_timeout;
        match request(
            &mut c,
            &subscribe_iq(&p.service, &p.node, &jid),
            SUB_ID,
            deadline,
        )
        .await
        {
            Ok(None) => Ok(()),
            Ok(Some(e)) => Err(error("subscribe", e)),
            Err(e) => Err(e),
        }
    };
    r.subscribed = res.is_ok();
    if r.subscribed {
        p.subscribed.fetch_add(1, Ordering::SeqCst);
    }
    let _ = reports.send((k, res));
    drop(reports);
    c.release_buffer();
    if !r.subscribed {
        r.conn = Some(c);
        return r;
    }
    let mut seq = SeqCheck::default();
    let mut lat: Vec<u64> = Vec::with_capacity(64);
    let flush = |lat: &mut Vec<u64>| {
        let mut h = p.hist.lock().expect("histogram");
        for v in lat.drain(..) {
            let _ = h.record(v.max(1));
        }
    };
    // Wait for the start (answering server iqs; a notification of an
    // earlier item of an existing node is foreign).
    let ck = loop {
        if let Some(ck) = *start.borrow_and_update() {
            break ck;
        }
        tokio::select! {
            ch = start.changed() => if ch.is_err() {
                r.conn = Some(c);
                return r;
            },
            u = c.next_unit() => {
                match u {
                    Ok(u) if u.kind == Kind::End => {
                        r.broken = Some(error("closed", "server closed the stream"));
                    }
                    Ok(u) => {
                        if c.get(&u.name) == b"message" {
                            r.foreign += 1;
                            r.foreign_first.get_or_insert_with(|| raw_excerpt(&c, &u));
                        } else if let Some(reply) = c.iq_reply(&u) {
                            if let Err(e) = c.send_now(reply.as_bytes()).await {
                                r.broken = Some(e);
                            }
                        }
                    }
                    Err(e) => r.broken = Some(e),
                }
                if r.broken.is_some() {
                    r.conn = Some(c);
                    return r;
                }
                c.release_buffer();
            }
        }
    };
    let tag = p.tag.as_bytes().to_vec();
    let timer = sleep_until(ck.drain_end);
    tokio::pin!(timer);
    loop {
        let now = Instant::now();
        if now >= ck.drain_end {
            break;
        }
        if p.publisher_done.load(Ordering::SeqCst)
            && r.received >= p.accepted.load(Ordering::SeqCst)
        {
            break;
        }
        let wake = (now + Duration::from_millis(100)).min(ck.drain_end);
        timer.as_mut().reset(wake);
        tokio::select! {
            u = c.next_unit() => {
                let mut next = u.map(Some);
                loop {
                    let u = match next {
                        Ok(Some(u)) => u,
                        Ok(None) => break,
                        Err(e) => { r.broken = Some(e); break; }
                    };
                    if u.kind == Kind::End {
                        r.broken = Some(error("closed", "server closed the stream"));
                        break;
                    }
                    if c.get(&u.name) == b"message" {
                        match parse_payload(c.get(&u.raw)) {
                            Some((t, n, ts)) if t == tag.as_slice()
                                && (n as usize) < p.item_last.len() =>
                            {
                                let (new, ooo, dup) = seq.see(n);
                                if new {
                                    let at = now_us(ck.t0);
                                    r.received += 1;
                                    lat.push(at.saturating_sub(ts));
                                    p.item_last[n as usize].fetch_max(at, Ordering::Relaxed);
                                    p.item_count[n as usize].fetch_add(1, Ordering::Relaxed);
                                    if lat.len() >= 64 {
                                        flush(&mut lat);
                                    }
                                }
                                r.out_of_order += u64::from(ooo);
                                r.duplicates += u64::from(dup);
                            }
                            _ => {
                                r.foreign += 1;
                                r.foreign_first.get_or_insert_with(|| raw_excerpt(&c, &u));
                            }
                        }
                    } else if let Some(reply) = c.iq_reply(&u) {
                        if let Err(e) = c.send(reply.as_bytes(), ck.drain_end).await {
                            r.broken = Some(e);
                            break;
                        }
                    }
                    next = c.try_unit();
                }
                if r.broken.is_some() {
                    break;
                }
            },
            _ = &mut timer => {}
        }
    }
    flush(&mut lat);
    r.conn = Some(c);
    r
}

/// The publisher's counters.
#[derive(Default)]
struct PubResult {
    sent: u64,
    errors: Failures,
    /// Send time (µs after t0) of each item.
    sent_at: Vec<u64>,
    broken: Option<Error>,
}

/// Publishes at the set rate until `send_end`, then waits (until the drain
/// ends) for the answers still due.
async fn publisher(
    c: &mut Conn,
    p: &Plan,
    ck: Clock,
    rate: f64,
    window: u64,
    pad: &str,
) -> PubResult {
    let mut r = PubResult::default();
    let cap = p.item_last.len() as u64;
    let mut answered = 0u64;
    sleep_until(ck.t0).await;
    let timer = sleep_until(ck.drain_end);
    tokio::pin!(timer);
    loop {
        let now = Instant::now();
        let sending = now < ck.send_end && r.sent < cap;
        let inflight = r.sent.saturating_sub(answered);
        if !sending && inflight == 0 || now >= ck.drain_end {
            break;
        }
        if sending && inflight < window {
            let due = ((now - ck.t0).as_secs_f64() * rate).floor() as u64 + 1;
            let n = due.min(cap).saturating_sub(r.sent).min(window - inflight);
            if n > 0 {
                let mut buf = String::new();
                let ts = now_us(ck.t0);
                for i in 0..n {
                    buf.push_str(&publish_iq(
                        &p.service,
                        &p.node,
                        &p.tag,
                        r.sent + i,
                        ts,
                        pad,
                    ));
                    r.sent_at.push(ts);
                }
                if let Err(e) = c.send(buf.as_bytes(), ck.drain_end).await {
                    r.broken = Some(e);
                    break;
                }
                r.sent += n;
                continue;
            }
        }
        let wake = if !sending || inflight >= window {
            ck.drain_end
        } else {
            ck.t0 + Duration::from_secs_f64(r.sent as f64 / rate)
        };
        timer.as_mut().reset(wake.min(ck.drain_end));
        tokio::select! {
            u = c.next_unit() => {
                let mut next = u.map(Some);
                loop {
                    let u = match next {
                        Ok(Some(u)) => u,
                        Ok(None) => break,
                        Err(e) => { r.broken = Some(e); break; }
                    };
                    if u.kind == Kind::End {
                        r.broken = Some(error("closed", "server closed the stream"));
                        break;
                    }
                    let id = c.opt(&u.id);
                    if c.get(&u.name) == b"iq" && id.starts_with(b"pub") {
                        match c.opt(&u.typ) {
                            b"result" => {
                                answered += 1;
                                p.accepted.fetch_add(1, Ordering::SeqCst);
                            }
                            b"error" => {
                                answered += 1;
                                r.errors.add(0, &error("publish", raw_excerpt(c, &u)));
                            }
                            _ => {}
                        }
                    } else if let Some(reply) = c.iq_reply(&u) {
                        if let Err(e) = c.send(reply.as_bytes(), ck.drain_end).await {
                            r.broken = Some(e);
                            break;
                        }
                    }
                    next = c.try_unit();
                }
                if r.broken.is_some() {
                    break;
                }
            },
            _ = &mut timer => {}
        }
    }
    r
}

/// Runs the scenario.
pub async fn run(cfg: ClientCfg, o: Opts) -> Result<bool, String> {
    if o.subscribers == 0 {
        return Err("--subscribers must be at least 1".into());
    }
    if !(o.rate > 0.0 && o.rate.is_finite()) {
        return Err("--rate must be a positive number of items per second".into());
    }
    if o.max_items == 0 {
        return Err("--max-items must be at least 1".into());
    }
    let s = o.subscribers;
    let duration = o.common.duration.unwrap_or(10.0);
    let pid = o.common.server_pid;
    let cfg = Arc::new(cfg);
    let service = o
        .service
        .clone()
        .unwrap_or_else(|| format!("pubsub.{}", cfg.domain));
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let tag = format!("lg{}-{}", std::process::id(), secs % 1_000_000);
    let node = o.node.clone().unwrap_or_else(|| format!("{tag}-node"));
    let window = o.window.max(1);
    let cap = (o.rate * duration).ceil() as usize + 1;

    // Phase 1: logins (the publisher first).
    let t_login = Instant::now();
    let logins = run::login_many(
        cfg.clone(),
        run::users(o.common.first_user, s + 1),
        o.common.concurrency,
        Ready::Available,
        Instant::now() + Duration::from_secs(600),
    )
    .await;
    let login_s = t_login.elapsed().as_secs_f64();
    let mut conns = logins.conns.into_iter();
    let Some(mut publ) = conns.next().flatten() else {
        return Err(format!(
            "the publisher could not log in: {}",
            logins.failures.first.clone().unwrap_or_default()
        ));
    };

    // Phase 2: the node, then the subscriptions.
    let deadline = Instant::now() + Duration::from_secs_f64(o.subscribe_timeout);
    let created = match request(
        &mut publ,
        &create_iq(&service, &node, o.max_items),
        CREATE_ID,
        deadline,
    )
    .await
    {
        Ok(None) => true,
        Ok(Some(e)) if e.contains("<conflict") => false,
        Ok(Some(e)) => return Err(format!("creating node {node} on {service}: {e}")),
        Err(e) => return Err(format!("creating node {node} on {service}: {e}")),
    };
    publ.release_buffer();
    let plan = Arc::new(Plan {
        service: service.clone(),
        node: node.clone(),
        tag: tag.clone(),
        sub_timeout: Duration::from_secs_f64(o.subscribe_timeout),
        sub_sem: Semaphore::new(o.common.concurrency.max(1)),
        subscribed: AtomicU64::new(0),
        accepted: AtomicU64::new(0),
        publisher_done: AtomicBool::new(false),
        item_last: (0..cap).map(|_| AtomicU64::new(0)).collect(),
        item_count: (0..cap).map(|_| AtomicU64::new(0)).collect(),
        hist: Mutex::new(stats::histogram()),
    });
    let (rep_tx, mut rep_rx) = mpsc::unbounded_channel();
    let (start_tx, start_rx) = watch::channel(None);
    let sub_watch = Watch::start(pid);
    let t_sub = Instant::now();
    let mut tasks = Vec::with_capacity(s as usize);
    for (k, c) in conns.enumerate() {
        if let Some(c) = c {
            let jid = cfg.bare(o.common.first_user + 1 + k as u64);
            tasks.push(tokio::spawn(subscriber(
                k as u64,
                jid,
                c,
                plan.clone(),
                rep_tx.clone(),
                start_rx.clone(),
            )));
        }
    }
    drop(rep_tx);
    let mut sub_failures = Failures::default();
    let sub_deadline = Instant::now() + Duration::from_secs(600);
    loop {
        match timeout_at(sub_deadline, rep_rx.recv()).await {
            Ok(Some((k, Err(e)))) => sub_failures.add(o.common.first_user + 1 + k, &e),
            Ok(Some((_, Ok(())))) => {}
            Ok(None) => break,
            Err(_) => {
                sub_failures.add(0, &error("timeout", "subscribe phase over 600 s"));
                break;
            }
        }
    }
    let sub_s = t_sub.elapsed().as_secs_f64();
    let sub_usage = sub_watch.stop();
    let subscribed = plan.subscribed.load(Ordering::SeqCst);

    // Phase 3: publish.
    let t0 = Instant::now() + Duration::from_millis(50);
    let ck = Clock {
        t0,
        send_end: t0 + Duration::from_secs_f64(duration),
        drain_end: t0 + Duration::from_secs_f64(duration + o.drain),
    };
    let watch_run = Watch::start(pid);
    let _ = start_tx.send(Some(ck));
    let pad = if o.payload_bytes > 0 {
        format!(" {}", "x".repeat(o.payload_bytes))
    } else {
        String::new()
    };
    let pr = publisher(&mut publ, &plan, ck, o.rate, window, &pad).await;
    plan.publisher_done.store(true, Ordering::SeqCst);
    let mut results = Vec::with_capacity(tasks.len());
    for t in tasks {
        results.push(t.await.map_err(|e| format!("subscriber task: {e}"))?);
    }
    let usage = watch_run.stop();
    let hist = plan.hist.lock().expect("histogram").clone();
    let accepted = plan.accepted.load(Ordering::SeqCst);

    // Totals.
    let (mut delivered, mut lost, mut ooo, mut dups, mut foreign) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut lost_subscribers = 0u64;
    let mut lost_first = None;
    let mut foreign_first = None;
    let mut broken = Failures::default();
    let mut sub_conns = Vec::with_capacity(results.len());
    for r in &mut results {
        if let Some(c) = r.conn.take() {
            sub_conns.push(c);
        }
        if !r.subscribed {
            continue;
        }
        delivered += r.received;
        let l = accepted.saturating_sub(r.received);
        if l > 0 {
            lost_subscribers += 1;
            lost_first.get_or_insert_with(|| {
                format!("subscriber {}: {} of {accepted} items", r.k, r.received)
            });
        }
        lost += l;
        ooo += r.out_of_order;
        dups += r.duplicates;
        foreign += r.foreign;
        if foreign_first.is_none() {
            foreign_first = r.foreign_first.take();
        }
        if let Some(e) = &r.broken {
            broken.add(o.common.first_user + 1 + r.k, e);
        }
    }
    let expected = accepted * subscribed;
    // Time to the last subscriber, per item every subscriber got.
    let mut last_hist = stats::histogram();
    let mut incomplete = 0u64;
    for (n, &sent_at) in pr.sent_at.iter().enumerate() {
        if plan.item_count[n].load(Ordering::Relaxed) >= subscribed && subscribed > 0 {
            let at = plan.item_last[n].load(Ordering::Relaxed);
            let _ = last_hist.record(at.saturating_sub(sent_at).max(1));
        } else {
            incomplete += 1;
        }
    }

    // Close: subscribers first, then delete the node if this run made it.
    let t_close = Instant::now();
    run::close_all(
        sub_conns,
        o.common.concurrency.max(100),
        Duration::from_secs(10),
    )
    .await;
    let mut deleted = Value::Null;
    if created && pr.broken.is_none() {
        let d = Instant::now() + Duration::from_secs(10);
        deleted = json!(matches!(
            request(&mut publ, &delete_iq(&service, &node), DELETE_ID, d).await,
            Ok(None)
        ));
    }
    publ.close(Duration::from_secs(5)).await;
    let close_s = t_close.elapsed().as_secs_f64();

    let mut r = Map::new();
    r.insert("scenario".into(), json!("pubsub"));
    r.insert("service".into(), json!(service));
    r.insert("node".into(), json!(node));
    r.insert("node_created".into(), json!(created));
    r.insert("max_items".into(), json!(o.max_items));
    r.insert("subscribers".into(), json!(s));
    r.insert("rate".into(), json!(o.rate));
    r.insert("window".into(), json!(window));
    r.insert("duration_s".into(), json!(duration));
    logins.failures.put(&mut r, "login_failures");
    r.insert("login_s".into(), round(login_s, 3));
    r.insert("subscribed".into(), json!(subscribed));
    sub_failures.put(&mut r, "subscribe_failures");
    r.insert("subscribe_s".into(), round(sub_s, 3));
    sub_usage.put(&mut r, "subscribe_");
    r.insert(
        "subscribes_per_cpu_s".into(),
        sub_usage.per_cpu_s(subscribed as f64),
    );
    r.insert("published".into(), json!(pr.sent));
    r.insert("accepted".into(), json!(accepted));
    pr.errors.put(&mut r, "publish_errors");
    r.insert(
        "publisher_broken".into(),
        json!(pr.broken.as_ref().map(|e| e.to_string())),
    );
    broken.put(&mut r, "subscribers_broken");
    r.insert("expected".into(), json!(expected));
    r.insert("delivered".into(), json!(delivered));
    r.insert("lost".into(), json!(lost));
    r.insert("lost_subscribers".into(), json!(lost_subscribers));
    if let Some(f) = &lost_first {
        r.insert("lost_first".into(), json!(f));
    }
    r.insert("out_of_order".into(), json!(ooo));
    r.insert("duplicates".into(), json!(dups));
    r.insert("unexpected".into(), json!(foreign));
    if let Some(f) = &foreign_first {
        r.insert("unexpected_first".into(), json!(f));
    }
    r.insert(
        "delivered_per_s".into(),
        round(delivered as f64 / duration, 1),
    );
    stats::put_latency(&mut r, "latency", &hist, true);
    stats::put_latency(&mut r, "last_subscriber", &last_hist, false);
    r.insert("items_incomplete".into(), json!(incomplete));
    usage.put(&mut r, "");
    r.insert(
        "delivered_per_cpu_s".into(),
        usage.per_cpu_s(delivered as f64),
    );
    r.insert("node_deleted".into(), deleted);
    r.insert("close_s".into(), round(close_s, 3));
    stats::print_json(r);
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    run::summary(&format!(
        "pubsub: {subscribed} of {s} subscribed to {node}; published {} ({accepted} accepted), delivered {delivered} of {expected}, lost {lost}, out of order {ooo}, duplicates {dups}; latency p50 {:.2} ms p99 {:.2} ms; last subscriber p50 {:.2} ms p99 {:.2} ms; server CPU {}",
        pr.sent,
        ms(&hist, 0.5),
        ms(&hist, 0.99),
        ms(&last_hist, 0.5),
        ms(&last_hist, 0.99),
        usage
            .server_cpu_s
            .map_or("n/a".to_string(), |c| format!("{c:.2} s")),
    ));
    Ok(lost == 0
        && ooo == 0
        && dups == 0
        && pr.errors.total() == 0
        && pr.broken.is_none()
        && logins.failures.total() == 0
        && sub_failures.total() == 0
        && broken.total() == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_and_stanzas() {
        let raw = b"<message from='pubsub.x'><event><items node='n'><item id='a-3'>\
                    <entry xmlns='urn:xmpp:loadgen:0'>lgps:lg12-34:3:4000 xx</entry>";
        assert_eq!(parse_payload(raw), Some((&b"lg12-34"[..], 3, 4000)));
        assert_eq!(parse_payload(b"<m>lgps:t:3</m>"), None);
        assert_eq!(parse_payload(b"<m>nothing</m>"), None);
        for s in [
            create_iq("pubsub.localhost", "n", 5),
            subscribe_iq("pubsub.localhost", "n", "a@localhost"),
            publish_iq("pubsub.localhost", "n", "t", 7, 99, " xx"),
            delete_iq("pubsub.localhost", "n"),
        ] {
            let u = crate::xml::split(s.as_bytes(), true).unwrap().unwrap();
            assert_eq!(u.len, s.len());
            assert_eq!(&s.as_bytes()[u.child.unwrap()], b"pubsub");
        }
        let p = publish_iq("pubsub.localhost", "n", "t", 7, 99, "");
        assert_eq!(parse_payload(p.as_bytes()), Some((&b"t"[..], 7, 99)));
    }
}
