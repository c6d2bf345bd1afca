//! `offline`: messages to offline accounts, then their delivery at login.
//!
//! Accounts `first .. first+S` send, accounts `first+S .. first+2S` receive
//! (sender `i` writes to recipient `i`); M messages in all.
//!
//! 0. The recipients log in once and out again, which drains anything left
//!    from earlier runs, so they start offline with empty storage.
//! 1. **Store** (measured): the senders write their messages as fast as the
//!    connection takes them, then ping the server; the server handles a
//!    session's stanzas in order, so the answer to the ping means every
//!    message has been stored. stored/s = M / time to the last answer.
//! 2. **Deliver** (measured): the recipients log in and bind, then send
//!    initial presence and a ping; the server delivers the stored messages
//!    before the ping's answer. delivered/s = M / time from the presences
//!    to the last answer.
//!
//! Each body is `RUN SENDER SEQ SENT_US`; every message must arrive exactly
//! once (missing, duplicates and order per sender are reported; messages of
//! another run are counted as `stale`).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use serde_json::{json, Map};
use tokio::time::Instant;

use crate::conn::{self, ClientCfg, Conn, Error};
use crate::run::{self, Failures, Ready};
use crate::stats::{round, Watch};
use crate::Common;

/// Options of `offline`.
#[derive(Args, Debug)]
pub struct Opts {
    #[command(flatten)]
    pub common: Common,
    /// Messages in all.
    #[arg(long, default_value_t = 1000)]
    pub messages: u64,
    /// Sender accounts (and as many recipients).
    #[arg(long, default_value_t = 10)]
    pub senders: u64,
}

/// Messages sender `i` of `s` sends out of `m`.
fn share(m: u64, s: u64, i: u64) -> u64 {
    m / s + u64::from(i < m % s)
}

/// Stanzas per write while storing.
const BATCH: u64 = 64;

async fn store_one(
    cfg: Arc<ClientCfg>,
    mut c: Conn,
    to: String,
    run_id: String,
    idx: u64,
    count: u64,
    deadline: Instant,
) -> (Conn, Result<Instant, Error>, u64) {
    let t0 = Instant::now();
    let mut seq = 0;
    let mut buf = String::with_capacity(BATCH as usize * 160);
    while seq < count {
        buf.clear();
        let end = (seq + BATCH).min(count);
        while seq < end {
            let ts = t0.elapsed().as_micros();
            buf.push_str(&format!(
                "<message to='{to}' type='chat' id='o{seq}'><body>{run_id} {idx} {seq} {ts}</body></message>"
            ));
            seq += 1;
        }
        if seq == count {
            buf.push_str(&conn::ping(&cfg.domain, "stored1"));
        }
        if let Err(e) = c.send(buf.as_bytes(), deadline).await {
            return (c, Err(e), 0);
        }
    }
    if count == 0 {
        if let Err(e) = c
            .send(conn::ping(&cfg.domain, "stored1").as_bytes(), deadline)
            .await
        {
            return (c, Err(e), 0);
        }
    }
    let mut bounced = 0;
    loop {
        let u = match c.recv(deadline).await {
            Ok(u) => u,
            Err(e) => return (c, Err(e), bounced),
        };
        let name = c.get(&u.name);
        if name == b"iq" && c.opt(&u.id) == b"stored1" {
            return (c, Ok(Instant::now()), bounced);
        }
        if name == b"message" && c.opt(&u.typ) == b"error" {
            bounced += 1;
        } else if let Some(reply) = c.iq_reply(&u) {
            if let Err(e) = c.send(reply.as_bytes(), deadline).await {
                return (c, Err(e), bounced);
            }
        }
    }
}

/// What one recipient saw.
#[derive(Default)]
struct Rx {
    unique: u64,
    duplicates: u64,
    out_of_order: u64,
    stale: u64,
    foreign: u64,
    missing: u64,
    done_at: Option<Instant>,
    error: Option<Error>,
}

async fn deliver_one(
    cfg: Arc<ClientCfg>,
    mut c: Conn,
    run_id: String,
    idx: u64,
    count: u64,
    deadline: Instant,
) -> (Conn, Rx) {
    let mut rx = Rx::default();
    let mut seen = vec![0u8; count as usize];
    let mut max_seen: Option<u64> = None;
    let msg = format!("<presence/>{}", conn::ping(&cfg.domain, "drained1"));
    if let Err(e) = c.send(msg.as_bytes(), deadline).await {
        rx.error = Some(e);
        return (c, rx);
    }
    loop {
        let u = match c.recv(deadline).await {
            Ok(u) => u,
            Err(e) => {
                rx.error = Some(e);
                break;
            }
        };
        let name = c.get(&u.name);
        if name == b"iq" && c.opt(&u.id) == b"drained1" {
            rx.done_at = Some(Instant::now());
            break;
        }
        if name == b"message" {
            let body = std::str::from_utf8(c.opt(&u.body)).unwrap_or("");
            let mut it = body.split_ascii_whitespace();
            let (r, s, q) = (it.next(), it.next(), it.next());
            if r != Some(run_id.as_str()) {
                rx.stale += 1;
                continue;
            }
            let (Some(s), Some(q)) = (
                s.and_then(|s| s.parse::<u64>().ok()),
                q.and_then(|q| q.parse::<u64>().ok()),
            ) else {
                rx.foreign += 1;
                continue;
            };
            if s != idx || q >= count {
                rx.foreign += 1;
                continue;
            }
            let slot = &mut seen[q as usize];
            if *slot > 0 {
                rx.duplicates += 1;
            } else {
                rx.unique += 1;
                if max_seen.is_some_and(|m| q < m) {
                    rx.out_of_order += 1;
                }
            }
            *slot = slot.saturating_add(1);
            max_seen = Some(max_seen.map_or(q, |m| m.max(q)));
            continue;
        }
        if let Some(reply) = c.iq_reply(&u) {
            if let Err(e) = c.send(reply.as_bytes(), deadline).await {
                rx.error = Some(e);
                break;
            }
        }
    }
    rx.missing = seen.iter().filter(|&&x| x == 0).count() as u64;
    (c, rx)
}

/// Runs the scenario.
pub async fn run(cfg: ClientCfg, o: Opts) -> Result<bool, String> {
    let m = o.messages;
    let s = o.senders.clamp(1, m.max(1));
    let first = o.common.first_user;
    let limit = o.common.duration.unwrap_or(600.0);
    let deadline = Instant::now() + Duration::from_secs_f64(limit);
    let cfg = Arc::new(cfg);
    let run_id = format!(
        "r{}x{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros())
    );
    let senders = run::users(first, s);
    let recipients = run::users(first + s, s);
    let conc = o.common.concurrency;
    let close_wait = Duration::from_secs(10);
    // 0. Recipients drain leftovers and go offline.
    let pre = run::login_many(
        cfg.clone(),
        recipients.clone(),
        conc,
        Ready::Available,
        deadline,
    )
    .await;
    let mut failures = pre.failures;
    run::close_all(
        pre.conns.into_iter().flatten().collect(),
        conc.max(100),
        close_wait,
    )
    .await;
    if failures.total() > 0 {
        return Err(format!(
            "recipients could not log in: {}",
            failures.first.unwrap_or_default()
        ));
    }
    // 1. Store.
    let snd = run::login_many(cfg.clone(), senders.clone(), conc, Ready::Bound, deadline).await;
    failures.merge(snd.failures);
    let watch = Watch::start(o.common.server_pid);
    let t0 = Instant::now();
    let mut hs = Vec::new();
    for (i, c) in snd.conns.into_iter().enumerate() {
        let Some(c) = c else { continue };
        let i = i as u64;
        hs.push(tokio::spawn(store_one(
            cfg.clone(),
            c,
            cfg.bare(recipients[i as usize]),
            run_id.clone(),
            i,
            share(m, s, i),
            deadline,
        )));
    }
    let mut store_errors = Failures::default();
    let mut last = t0;
    let mut bounced = 0;
    let mut sender_conns = Vec::new();
    for h in hs {
        let (c, r, b) = h.await.map_err(|e| format!("sender task: {e}"))?;
        bounced += b;
        match r {
            Ok(t) => last = last.max(t),
            Err(e) => store_errors.add(0, &e),
        }
        sender_conns.push(c);
    }
    let store_usage = watch.stop();
    let store_s = last.duration_since(t0).as_secs_f64().max(1e-6);
    run::close_all(sender_conns, conc.max(100), close_wait).await;
    // 2. Deliver.
    let rcp = run::login_many(
        cfg.clone(),
        recipients.clone(),
        conc,
        Ready::Bound,
        deadline,
    )
    .await;
    failures.merge(rcp.failures);
    let watch = Watch::start(o.common.server_pid);
    let t1 = Instant::now();
    let mut hs = Vec::new();
    for (i, c) in rcp.conns.into_iter().enumerate() {
        let Some(c) = c else { continue };
        let i = i as u64;
        hs.push(tokio::spawn(deliver_one(
            cfg.clone(),
            c,
            run_id.clone(),
            i,
            share(m, s, i),
            deadline,
        )));
    }
    let mut tot = Rx::default();
    let mut deliver_errors = Failures::default();
    let mut last = t1;
    let mut rconns = Vec::new();
    let mut recipients_done = 0u64;
    for (i, h) in hs.into_iter().enumerate() {
        let (c, rx) = h.await.map_err(|e| format!("recipient task: {e}"))?;
        tot.unique += rx.unique;
        tot.duplicates += rx.duplicates;
        tot.out_of_order += rx.out_of_order;
        tot.stale += rx.stale;
        tot.foreign += rx.foreign;
        tot.missing += rx.missing;
        if let Some(t) = rx.done_at {
            last = last.max(t);
            recipients_done += 1;
        }
        if let Some(e) = &rx.error {
            deliver_errors.add(recipients[i], e);
        }
        rconns.push(c);
    }
    let deliver_usage = watch.stop();
    let deliver_s = last.duration_since(t1).as_secs_f64().max(1e-6);
    run::close_all(rconns, conc.max(100), close_wait).await;
    // Recipients that never logged in lose all their messages.
    let missing = m - tot.unique;
    let mut r = Map::new();
    r.insert("scenario".into(), json!("offline"));
    r.insert("messages".into(), json!(m));
    r.insert("senders".into(), json!(s));
    failures.put(&mut r, "login_failures");
    store_errors.put(&mut r, "store_errors");
    deliver_errors.put(&mut r, "deliver_errors");
    r.insert("bounced".into(), json!(bounced));
    r.insert("store_s".into(), round(store_s, 3));
    r.insert("stored_per_s".into(), round(m as f64 / store_s, 1));
    store_usage.put(&mut r, "store_");
    r.insert("stored_per_cpu_s".into(), store_usage.per_cpu_s(m as f64));
    r.insert("deliver_s".into(), round(deliver_s, 3));
    r.insert(
        "delivered_per_s".into(),
        round(tot.unique as f64 / deliver_s, 1),
    );
    deliver_usage.put(&mut r, "deliver_");
    r.insert(
        "delivered_per_cpu_s".into(),
        deliver_usage.per_cpu_s(tot.unique as f64),
    );
    r.insert("received".into(), json!(tot.unique));
    r.insert("recipients_done".into(), json!(recipients_done));
    r.insert("lost".into(), json!(missing));
    r.insert("duplicates".into(), json!(tot.duplicates));
    r.insert("out_of_order".into(), json!(tot.out_of_order));
    r.insert("stale".into(), json!(tot.stale));
    r.insert("unexpected".into(), json!(tot.foreign));
    r.insert(
        "exactly_once".into(),
        json!(missing == 0 && tot.duplicates == 0),
    );
    crate::stats::print_json(r);
    run::summary(&format!(
        "offline: {m} messages stored in {store_s:.2} s = {:.0}/s, delivered {} in {deliver_s:.2} s = {:.0}/s, lost {missing}, duplicates {}, out of order {}, server CPU store {} deliver {}",
        m as f64 / store_s,
        tot.unique,
        tot.unique as f64 / deliver_s,
        tot.duplicates,
        tot.out_of_order,
        store_usage
            .server_cpu_s
            .map_or("n/a".to_string(), |c| format!("{c:.2} s")),
        deliver_usage
            .server_cpu_s
            .map_or("n/a".to_string(), |c| format!("{c:.2} s")),
    ));
    Ok(missing == 0
        && tot.duplicates == 0
        && tot.out_of_order == 0
        && failures.total() == 0
        && store_errors.total() == 0
        && deliver_errors.total() == 0)
}

#[cfg(test)]
mod tests {
    use super::share;

    #[test]
    fn shares_add_up() {
        for (m, s) in [(50, 10), (51, 10), (7, 3), (1, 1)] {
            assert_eq!((0..s).map(|i| share(m, s, i)).sum::<u64>(), m);
        }
    }
}
