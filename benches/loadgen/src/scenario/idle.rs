//! `idle`: hold N available sessions and measure the server's memory.
//!
//! The server's VmRSS is read before the logins, after them, after holding
//! the sessions for `--duration` seconds (default 5) and after closing them
//! all cleanly. KiB per session is (after hold - before) / sessions. While
//! held, each session is read by its own small task (answering server iqs);
//! nothing is sent. This process's own RSS growth per session (at the end
//! of the hold) is reported too (`client_kib_per_session`).
//!
//! `--modern` logs each session in as a modern client (stream management
//! with resumption, carbons, presence with caps, CSI inactive; `modern.rs`)
//! and answers the server's `<r/>` while held; the report says which
//! (`client`: `bare` or `modern`).

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use serde_json::{json, Map};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::conn::{ClientCfg, Conn};
use crate::run::{self, Ready};
use crate::stats::{self, round, Watch};
use crate::Common;

/// Options of `idle`.
#[derive(Args, Debug)]
pub struct Opts {
    #[command(flatten)]
    pub common: Common,
    /// Sessions to hold.
    #[arg(long, default_value_t = 1000)]
    pub sessions: u64,
    /// Log in as a modern client: stream management with resumption,
    /// carbons, presence with entity caps, CSI inactive (see modern.rs).
    #[arg(long)]
    pub modern: bool,
}

async fn hold(mut c: Conn, mut stop: watch::Receiver<bool>) -> Option<Conn> {
    loop {
        c.release_buffer();
        tokio::select! {
            _ = stop.changed() => return Some(c),
            u = c.next_unit() => {
                let Ok(u) = u else { return None };
                if u.kind == crate::xml::Kind::End {
                    return None;
                }
                let reply = match c.sm {
                    Some(mut sm) => {
                        let r = crate::modern::on_unit(&c, &u, &mut sm);
                        c.sm = Some(sm);
                        r
                    }
                    None => c.iq_reply(&u),
                };
                if let Some(reply) = reply {
                    if c.send_now(reply.as_bytes()).await.is_err() {
                        return None;
                    }
                }
            }
        }
    }
}

fn rss(pid: Option<u32>) -> Option<u64> {
    pid.and_then(|p| stats::sample(&p.to_string()))
        .map(|s| s.rss_kib)
}

/// Runs the scenario.
pub async fn run(cfg: ClientCfg, o: Opts) -> Result<bool, String> {
    let n = o.sessions;
    let pid = o.common.server_pid;
    let hold_s = o.common.duration.unwrap_or(5.0);
    let cfg = Arc::new(cfg);
    let rss0 = rss(pid);
    let self0 = stats::sample("self").map_or(0, |s| s.rss_kib);
    let watch_cpu = Watch::start(pid);
    let deadline = Instant::now() + Duration::from_secs(600);
    let logins = run::login_many(
        cfg.clone(),
        run::users(o.common.first_user, n),
        o.common.concurrency,
        if o.modern {
            Ready::Modern
        } else {
            Ready::Available
        },
        deadline,
    )
    .await;
    let login_usage = watch_cpu.stop();
    let rss1 = rss(pid);
    let ok = logins.conns.iter().filter(|c| c.is_some()).count() as u64;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::with_capacity(ok as usize);
    for c in logins.conns.into_iter().flatten() {
        tasks.push(tokio::spawn(hold(c, stop_rx.clone())));
    }
    tokio::time::sleep(Duration::from_secs_f64(hold_s)).await;
    let rss2 = rss(pid);
    let self1 = stats::sample("self").map_or(0, |s| s.rss_kib);
    let _ = stop_tx.send(true);
    let mut conns = Vec::with_capacity(tasks.len());
    let mut dropped = 0u64;
    for t in tasks {
        match t.await {
            Ok(Some(c)) => conns.push(c),
            _ => dropped += 1,
        }
    }
    let t_close = Instant::now();
    run::close_all(
        conns,
        o.common.concurrency.max(100),
        Duration::from_secs(10),
    )
    .await;
    let close_s = t_close.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss3 = rss(pid);
    let per = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) if ok > 0 => round((b as f64 - a as f64) / ok as f64, 2),
        _ => serde_json::Value::Null,
    };
    let mut r = Map::new();
    r.insert("scenario".into(), json!("idle"));
    r.insert("sessions".into(), json!(n));
    r.insert(
        "client".into(),
        json!(if o.modern { "modern" } else { "bare" }),
    );
    r.insert("ok".into(), json!(ok));
    logins.failures.put(&mut r, "failures");
    r.insert("dropped_while_held".into(), json!(dropped));
    r.insert("hold_s".into(), json!(hold_s));
    r.insert("server_rss_kib_before".into(), json!(rss0));
    r.insert("server_rss_kib_after_login".into(), json!(rss1));
    r.insert("server_rss_kib_after_hold".into(), json!(rss2));
    r.insert("server_rss_kib_after_close".into(), json!(rss3));
    r.insert("kib_per_session".into(), per(rss0, rss2));
    r.insert(
        "client_kib_per_session".into(),
        if ok > 0 {
            round((self1 as f64 - self0 as f64) / ok as f64, 2)
        } else {
            serde_json::Value::Null
        },
    );
    r.insert(
        "logins_per_s".into(),
        round(ok as f64 / logins.elapsed.as_secs_f64().max(1e-6), 1),
    );
    stats::put_latency(&mut r, "login_latency", &logins.latency, false);
    login_usage.put(&mut r, "login_");
    r.insert("logins_per_cpu_s".into(), login_usage.per_cpu_s(ok as f64));
    r.insert("close_s".into(), round(close_s, 3));
    stats::print_json(r);
    let kib = match (rss0, rss2) {
        (Some(a), Some(b)) if ok > 0 => format!("{:.1} KiB", (b as f64 - a as f64) / ok as f64),
        _ => "n/a (no --server-pid)".to_string(),
    };
    run::summary(&format!(
        "idle{}: {ok}/{n} sessions held {hold_s} s, server {kib} per session, client {:.1} KiB per session, {} login failures, {dropped} dropped",
        if o.modern { " (modern clients)" } else { "" },
        (self1 as f64 - self0 as f64) / ok.max(1) as f64,
        logins.failures.total(),
    ));
    Ok(logins.failures.total() == 0 && dropped == 0)
}
