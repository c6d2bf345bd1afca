//! `chat`: P pairs of sessions exchanging small chat messages.
//!
//! Pair `k` (0-based) is account `first + 2k` sending to account
//! `first + 2k + 1` (with the default `--first-user 1`: bench1 → bench2,
//! bench3 → bench4, …). Both sessions of a pair are driven by one task. Each
//! message body is `PAIR SEQ SENT_US [padding]`; the receiver computes the
//! end-to-end latency from the send timestamp (both ends share this
//! process's clock), and checks the sequence: a sequence number lower than
//! one already received and not seen before is *out of order*, one seen
//! before is a *duplicate*; after the drain period, messages sent but never
//! received are *lost*. At most `--window` messages per pair are in flight;
//! with `--rate` the pairs together offer that many messages per second
//! (each pair a token bucket of rate/P, start times spread over one period),
//! otherwise each pair sends as fast as its window allows.
//!
//! With `--servers A,B,...` the accounts are spread over several servers
//! (the nodes of a cluster) as `placement.rs` says, and the report counts
//! the pairs whose two accounts are on different servers (`pairs_cross`).
//!
//! With `--raw` the same frames (the stanza bytes plus `\n`) go through the
//! `loadgen relay` TLS byte relay instead of an XMPP server: the baseline.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;
use hdrhistogram::Histogram;
use serde_json::{json, Map};
use tokio::time::{sleep_until, Instant};

use crate::conn::{ClientCfg, Conn, Error};
use crate::run::{self, Failures, Ready};
use crate::stats::{self, round, Watch};
use crate::xml::{Kind, Unit};
use crate::Common;

/// Options of `chat`.
#[derive(Args, Debug)]
pub struct Opts {
    #[command(flatten)]
    pub common: Common,
    /// Number of sender/receiver pairs (2P accounts).
    #[arg(long, default_value_t = 10)]
    pub pairs: u64,
    /// Offered rate, messages per second over all pairs (default: as fast
    /// as the window allows).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Most messages in flight per pair.
    #[arg(long, default_value_t = 16)]
    pub window: u64,
    /// Seconds to wait for messages still in flight after sending stops.
    #[arg(long, default_value_t = 10.0)]
    pub drain: f64,
    /// Extra bytes of body padding per message.
    #[arg(long, default_value_t = 0)]
    pub body_bytes: usize,
    /// Talk to `loadgen relay` (direct TLS, no XMPP) instead of a server.
    #[arg(long)]
    pub raw: bool,
}

/// What all pair tasks share.
struct Plan {
    raw: bool,
    window: u64,
    rate_per_pair: Option<f64>,
    pairs: u64,
    t0: Instant,
    send_end: Instant,
    drain_end: Instant,
    pad: String,
    hist: Mutex<Histogram<u64>>,
}

/// Counters of one pair.
#[derive(Default, Debug)]
struct PairResult {
    sent: u64,
    received: u64,
    received_in_window: u64,
    out_of_order: u64,
    duplicates: u64,
    bounced: u64,
    foreign: u64,
    broken: Option<Error>,
    last_recv: Option<Instant>,
}

/// Sequence bookkeeping for one receiver: the next expected number and the
/// numbers skipped so far (normally empty).
#[derive(Default)]
pub(crate) struct SeqCheck {
    next: u64,
    missing: BTreeSet<u64>,
}

/// Most skipped numbers remembered per pair.
const MAX_MISSING: usize = 100_000;

impl SeqCheck {
    /// Records `seq`; returns (new, out_of_order, duplicate).
    pub(crate) fn see(&mut self, seq: u64) -> (bool, bool, bool) {
        if seq == self.next {
            self.next += 1;
            (true, false, false)
        } else if seq > self.next {
            for s in self.next..seq {
                if self.missing.len() >= MAX_MISSING {
                    break;
                }
                self.missing.insert(s);
            }
            self.next = seq + 1;
            (true, false, false)
        } else if self.missing.remove(&seq) {
            (true, true, false)
        } else {
            (false, false, true)
        }
    }
}

pub(crate) fn now_us(t0: Instant) -> u64 {
    Instant::now().saturating_duration_since(t0).as_micros() as u64
}

/// Parses `PAIR SEQ SENT_US ...`.
fn parse_body(b: &[u8]) -> Option<(u64, u64, u64)> {
    let s = std::str::from_utf8(b).ok()?;
    let mut it = s.split_ascii_whitespace();
    let p = it.next()?.parse().ok()?;
    let q = it.next()?.parse().ok()?;
    let t = it.next()?.parse().ok()?;
    Some((p, q, t))
}

/// The body text of a raw frame (`...<body>TEXT</body>...`).
fn raw_body(line: &[u8]) -> Option<&[u8]> {
    let s = line.windows(6).position(|w| w == b"<body>")? + 6;
    let e = line[s..].windows(7).position(|w| w == b"</body>")? + s;
    Some(&line[s..e])
}

/// One pair's receive-side bookkeeping.
struct Rx {
    idx: u64,
    r: PairResult,
    seq: SeqCheck,
    lat: Vec<u64>,
}

impl Rx {
    fn flush(&mut self, p: &Plan) {
        let mut h = p.hist.lock().expect("histogram");
        for v in self.lat.drain(..) {
            let _ = h.record(v.max(1));
        }
    }

    /// Accounts for one received message body.
    fn body(&mut self, p: &Plan, body: Option<(u64, u64, u64)>) {
        let Some((_, s, ts)) = body.filter(|b| b.0 == self.idx) else {
            self.r.foreign += 1;
            return;
        };
        let t = Instant::now();
        let (new, ooo, dup) = self.seq.see(s);
        if new {
            self.r.received += 1;
            if t <= p.send_end {
                self.r.received_in_window += 1;
            }
            self.r.last_recv = Some(t);
            self.lat.push(now_us(p.t0).saturating_sub(ts));
            if self.lat.len() >= 64 {
                self.flush(p);
            }
        }
        self.r.out_of_order += u64::from(ooo);
        self.r.duplicates += u64::from(dup);
    }

    /// Handles one unit read by the receiving session.
    async fn rcv_unit(&mut self, p: &Plan, c: &mut Conn, u: Unit) {
        if c.get(&u.name) == b"message" {
            let b = parse_body(c.opt(&u.body));
            self.body(p, b);
        } else if u.kind == Kind::End {
            self.r.broken = Some(closed("receiver stream closed"));
        } else if let Some(reply) = c.iq_reply(&u) {
            if let Err(e) = c.send(reply.as_bytes(), p.drain_end).await {
                self.r.broken = Some(e);
            }
        }
    }

    /// Handles one unit read by the sending session.
    async fn snd_unit(&mut self, p: &Plan, c: &mut Conn, u: Unit) {
        if c.get(&u.name) == b"message" && c.opt(&u.typ) == b"error" {
            self.r.bounced += 1;
        } else if u.kind == Kind::End {
            self.r.broken = Some(closed("sender stream closed"));
        } else if let Some(reply) = c.iq_reply(&u) {
            if let Err(e) = c.send(reply.as_bytes(), p.drain_end).await {
                self.r.broken = Some(e);
            }
        }
    }
}

fn closed(msg: &str) -> Error {
    Error {
        kind: "closed",
        msg: msg.into(),
    }
}

async fn pair_loop(idx: u64, to: String, mut snd: Conn, mut rcv: Conn, p: Arc<Plan>) -> PairResult {
    let mut rx = Rx {
        idx,
        r: PairResult::default(),
        seq: SeqCheck::default(),
        lat: Vec::with_capacity(64),
    };
    let mut wbuf = String::with_capacity(256);
    let start = match p.rate_per_pair {
        Some(rate) => p.t0 + Duration::from_secs_f64(idx as f64 / p.pairs as f64 / rate),
        None => p.t0,
    };
    sleep_until(p.t0).await;
    let timer = sleep_until(p.drain_end);
    tokio::pin!(timer);
    loop {
        let now = Instant::now();
        let r = &rx.r;
        let sending = now < p.send_end && r.broken.is_none();
        let inflight = r.sent.saturating_sub(r.received);
        let mut allowed = 0;
        if sending {
            allowed = p.window.saturating_sub(inflight);
            if let Some(rate) = p.rate_per_pair {
                let due = match now.checked_duration_since(start) {
                    Some(d) => (d.as_secs_f64() * rate).floor() as u64 + 1,
                    None => 0,
                };
                allowed = allowed.min(due.saturating_sub(r.sent));
            }
        } else if r.received >= r.sent || now >= p.drain_end || r.broken.is_some() {
            break;
        }
        if allowed > 0 {
            wbuf.clear();
            let ts = now_us(p.t0);
            for _ in 0..allowed {
                let s = rx.r.sent;
                let _ = write!(
                    wbuf,
                    "<message to='{to}' type='chat' id='m{s}'><body>{idx} {s} {ts}{}</body></message>",
                    p.pad
                );
                if p.raw {
                    wbuf.push('\n');
                }
                rx.r.sent += 1;
            }
            if let Err(e) = snd.send(wbuf.as_bytes(), p.drain_end).await {
                rx.r.broken = Some(e);
            }
            continue;
        }
        let wake = if !sending {
            p.drain_end
        } else if inflight >= p.window {
            p.send_end
        } else {
            let rate = p.rate_per_pair.unwrap_or(1.0);
            (start + Duration::from_secs_f64(r.sent as f64 / rate)).min(p.send_end)
        };
        if timer.deadline() != wake {
            timer.as_mut().reset(wake);
        }
        if p.raw {
            tokio::select! {
                l = rcv.next_line() => match l {
                    Ok(line) => {
                        let b = raw_body(rcv.get(&line)).and_then(parse_body);
                        rx.body(&p, b);
                        // Everything already buffered, without more reads.
                        loop {
                            match rcv.try_line() {
                                Ok(Some(line)) => {
                                    let b = raw_body(rcv.get(&line)).and_then(parse_body);
                                    rx.body(&p, b);
                                }
                                Ok(None) => break,
                                Err(e) => { rx.r.broken = Some(e); break; }
                            }
                        }
                    }
                    Err(e) => rx.r.broken = Some(e),
                },
                _ = &mut timer => {}
            }
        } else {
            tokio::select! {
                u = rcv.next_unit() => match u {
                    Ok(u) => {
                        rx.rcv_unit(&p, &mut rcv, u).await;
                        loop {
                            match rcv.try_unit() {
                                Ok(Some(u)) => rx.rcv_unit(&p, &mut rcv, u).await,
                                Ok(None) => break,
                                Err(e) => { rx.r.broken = Some(e); break; }
                            }
                        }
                    }
                    Err(e) => rx.r.broken = Some(e),
                },
                u = snd.next_unit() => match u {
                    Ok(u) => rx.snd_unit(&p, &mut snd, u).await,
                    Err(e) => rx.r.broken = Some(e),
                },
                _ = &mut timer => {}
            }
        }
    }
    rx.flush(&p);
    let wait = Duration::from_secs(5);
    if p.raw {
        tokio::join!(snd.shutdown(wait), rcv.shutdown(wait));
    } else {
        tokio::join!(snd.close(wait), rcv.close(wait));
    }
    rx.r
}

/// Connects one raw session to the relay: `PAIR token`, then waits `OK`.
async fn raw_one(cfg: &ClientCfg, token: &str, deadline: Instant) -> Result<Conn, Error> {
    let mut c = Conn::connect_direct_tls(cfg, deadline).await?;
    c.send(format!("PAIR {token}\n").as_bytes(), deadline)
        .await?;
    let l = match tokio::time::timeout_at(deadline, c.next_line()).await {
        Err(_) => {
            return Err(Error {
                kind: "timeout",
                msg: "relay pairing".into(),
            })
        }
        Ok(l) => l?,
    };
    if c.get(&l) != b"OK" {
        return Err(Error {
            kind: "protocol",
            msg: "relay did not answer OK".into(),
        });
    }
    Ok(c)
}

/// Connects both sessions of a raw pair at once (the relay pairs them).
async fn raw_pair(cfg: &ClientCfg, token: &str) -> Result<(Conn, Conn), Error> {
    let deadline = Instant::now() + cfg.login_timeout;
    let (a, b) = tokio::join!(raw_one(cfg, token, deadline), raw_one(cfg, token, deadline));
    Ok((a?, b?))
}

/// Runs the scenario.
pub async fn run(cfg: ClientCfg, o: Opts) -> Result<bool, String> {
    if o.raw && cfg.ws_url.is_some() {
        return Err("chat --raw talks to the TLS relay: no --transport ws".into());
    }
    let pairs = o.pairs.max(1);
    let duration = o.common.duration.unwrap_or(10.0);
    let cfg = Arc::new(cfg);
    let first = o.common.first_user;
    // Log in (or pair up) every session before the clock starts.
    let mut failures = Failures::default();
    // (pair number, sender, receiver); pairs whose login failed are left out.
    let mut conns: Vec<(u64, Conn, Conn)> = Vec::with_capacity(pairs as usize);
    let login_deadline = Instant::now() + Duration::from_secs(600);
    let t_login = Instant::now();
    if o.raw {
        let sem = Arc::new(tokio::sync::Semaphore::new(o.common.concurrency.max(1)));
        let mut hs = Vec::new();
        let tag = std::process::id();
        for k in 0..pairs {
            let (cfg, sem) = (cfg.clone(), sem.clone());
            hs.push(tokio::spawn(async move {
                let _p = sem.acquire_owned().await;
                raw_pair(&cfg, &format!("{tag}-{k}")).await
            }));
        }
        for (k, h) in hs.into_iter().enumerate() {
            match h.await {
                Ok(Ok((a, b))) => conns.push((k as u64, a, b)),
                Ok(Err(e)) => failures.add(k as u64, &e),
                Err(e) => return Err(format!("pairing task: {e}")),
            }
        }
    } else {
        let logins = run::login_many(
            cfg.clone(),
            run::users(first, 2 * pairs),
            o.common.concurrency,
            Ready::Available,
            login_deadline,
        )
        .await;
        failures = logins.failures;
        let mut it = logins.conns.into_iter();
        let mut k = 0;
        while let (Some(a), Some(b)) = (it.next(), it.next()) {
            if let (Some(a), Some(b)) = (a, b) {
                conns.push((k, a, b));
            }
            k += 1;
        }
    }
    let login_s = t_login.elapsed().as_secs_f64();
    let active = conns.len() as u64;
    // With --servers: how many of the active pairs have their two
    // accounts on different servers.
    let cross = cfg.placement.as_ref().map(|p| {
        conns
            .iter()
            .filter(|(k, _, _)| p.crosses(first + 2 * k, first + 2 * k + 1))
            .count()
    });
    if active == 0 {
        return Err(format!(
            "no pair could log in: {}",
            failures.first.unwrap_or_default()
        ));
    }
    let t0 = Instant::now() + Duration::from_millis(50);
    let plan = Arc::new(Plan {
        raw: o.raw,
        window: o.window.max(1),
        rate_per_pair: o.rate.map(|r| r / active as f64),
        pairs: active,
        t0,
        send_end: t0 + Duration::from_secs_f64(duration),
        drain_end: t0 + Duration::from_secs_f64(duration + o.drain),
        pad: if o.body_bytes > 0 {
            format!(" {}", "x".repeat(o.body_bytes))
        } else {
            String::new()
        },
        hist: Mutex::new(stats::histogram()),
    });
    let watch = Watch::start(o.common.server_pid);
    let mut hs = Vec::with_capacity(active as usize);
    for (i, (k, a, b)) in conns.into_iter().enumerate() {
        let to = if o.raw {
            "raw".to_string()
        } else {
            cfg.bare(first + 2 * k + 1)
        };
        // `i` numbers the active pairs (bodies, start-time spread).
        hs.push(tokio::spawn(pair_loop(i as u64, to, a, b, plan.clone())));
    }
    let mut tot = PairResult::default();
    let mut broken = Failures::default();
    let mut last = t0;
    for (k, h) in hs.into_iter().enumerate() {
        let r = h.await.map_err(|e| format!("pair task: {e}"))?;
        tot.sent += r.sent;
        tot.received += r.received;
        tot.received_in_window += r.received_in_window;
        tot.out_of_order += r.out_of_order;
        tot.duplicates += r.duplicates;
        tot.bounced += r.bounced;
        tot.foreign += r.foreign;
        if let Some(l) = r.last_recv {
            last = last.max(l);
        }
        if let Some(e) = &r.broken {
            broken.add(k as u64, e);
        }
    }
    let usage = watch.stop();
    let hist = plan.hist.lock().expect("histogram").clone();
    let lost = tot.sent.saturating_sub(tot.received);
    let active_s = last.saturating_duration_since(t0).as_secs_f64().max(1e-6);
    let mut r = Map::new();
    r.insert(
        "scenario".into(),
        json!(if o.raw { "chat-raw" } else { "chat" }),
    );
    r.insert("pairs".into(), json!(pairs));
    r.insert("pairs_active".into(), json!(active));
    r.insert("window".into(), json!(plan.window));
    if let Some(p) = &cfg.placement {
        r.insert("servers".into(), json!(p.servers.len()));
        r.insert("pairing".into(), json!(p.pairing.name()));
        r.insert("pairs_cross".into(), json!(cross));
    }
    r.insert("offered_rate".into(), json!(o.rate));
    r.insert("duration_s".into(), json!(duration));
    failures.put(&mut r, "login_failures");
    broken.put(&mut r, "pairs_broken");
    r.insert("login_s".into(), round(login_s, 3));
    r.insert("sent".into(), json!(tot.sent));
    r.insert("received".into(), json!(tot.received));
    r.insert("lost".into(), json!(lost));
    r.insert("out_of_order".into(), json!(tot.out_of_order));
    r.insert("duplicates".into(), json!(tot.duplicates));
    r.insert("bounced".into(), json!(tot.bounced));
    r.insert("unexpected".into(), json!(tot.foreign));
    r.insert("sent_per_s".into(), round(tot.sent as f64 / duration, 1));
    r.insert(
        "delivered_per_s".into(),
        round(tot.received_in_window as f64 / duration, 1),
    );
    r.insert(
        "delivered_total_per_s".into(),
        round(tot.received as f64 / active_s, 1),
    );
    stats::put_latency(&mut r, "latency", &hist, true);
    usage.put(&mut r, "");
    r.insert(
        "msgs_per_cpu_s".into(),
        usage.per_cpu_s(tot.received as f64),
    );
    stats::print_json(r);
    run::summary(&format!(
        "chat{}: {active} pairs, sent {} received {} in {duration} s (+drain) = {:.0} msg/s delivered, p50 {:.2} ms p99 {:.2} ms p99.9 {:.2} ms, lost {lost}, out of order {}, duplicates {}, server CPU {}",
        if o.raw { " --raw" } else { "" },
        tot.sent,
        tot.received,
        tot.received_in_window as f64 / duration,
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        hist.value_at_quantile(0.999) as f64 / 1000.0,
        tot.out_of_order,
        tot.duplicates,
        usage
            .server_cpu_s
            .map_or("n/a".to_string(), |c| format!("{c:.2} s")),
    ));
    Ok(lost == 0 && tot.out_of_order == 0 && tot.duplicates == 0 && failures.total() == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_check() {
        let mut s = SeqCheck::default();
        assert_eq!(s.see(0), (true, false, false));
        assert_eq!(s.see(2), (true, false, false));
        assert_eq!(s.see(1), (true, true, false));
        assert_eq!(s.see(1), (false, false, true));
        assert_eq!(s.see(3), (true, false, false));
        assert!(s.missing.is_empty());
    }

    #[test]
    fn bodies() {
        assert_eq!(parse_body(b"3 14 15926 xx"), Some((3, 14, 15926)));
        assert_eq!(parse_body(b"3 14"), None);
        assert_eq!(
            raw_body(b"<message to='raw'><body>1 2 3</body></message>"),
            Some(&b"1 2 3"[..])
        );
    }
}
