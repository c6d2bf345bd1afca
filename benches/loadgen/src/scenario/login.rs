//! `login`: N full logins at concurrency C, each closed right after.
//!
//! A login is TCP connect, stream, STARTTLS, a full TLS handshake, SASL,
//! stream restart, bind, initial presence and a ping round trip (the session
//! is available). Latency runs from connect to the ping's answer. Each
//! session is then closed cleanly in the background, so the logins/s figure
//! is the rate of sessions established; the server CPU time covers the
//! closes too (a session's whole life).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;
use serde_json::{json, Map};
use tokio::time::Instant;

use crate::conn::ClientCfg;
use crate::run::{self, Failures, Ready};
use crate::stats::{self, round, Watch};
use crate::Common;

/// Options of `login`.
#[derive(Args, Debug)]
pub struct Opts {
    #[command(flatten)]
    pub common: Common,
    /// Number of logins.
    #[arg(long, default_value_t = 1000)]
    pub logins: u64,
    /// Distinct accounts, used round-robin (default: as many as logins).
    #[arg(long)]
    pub users: Option<u64>,
}

/// Runs the scenario.
pub async fn run(cfg: ClientCfg, o: Opts) -> Result<bool, String> {
    let n = o.logins;
    let users = o.users.unwrap_or(n).max(1);
    let first = o.common.first_user;
    let limit = o.common.duration.unwrap_or(600.0);
    let deadline = Instant::now() + Duration::from_secs_f64(limit);
    let cfg = Arc::new(cfg);
    let next = Arc::new(AtomicU64::new(0));
    let watch = Watch::start(o.common.server_pid);
    let t0 = Instant::now();
    let workers = (o.common.concurrency as u64).clamp(1, n.max(1));
    // One histogram for all workers (each is ~190 KB).
    let hist = Arc::new(Mutex::new(stats::histogram()));
    let mut handles = Vec::new();
    for _ in 0..workers {
        let (cfg, next, hist) = (cfg.clone(), next.clone(), hist.clone());
        handles.push(tokio::spawn(async move {
            let mut fails = Failures::default();
            let mut closes = Vec::new();
            let mut last_ok = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let user = first + i % users;
                if Instant::now() >= deadline {
                    fails.add(
                        user,
                        &crate::conn::Error {
                            kind: "timeout",
                            msg: "run time limit reached".into(),
                        },
                    );
                    continue;
                }
                let t = Instant::now();
                // A resource of its own per login: with fewer accounts than
                // logins in flight, the same account logs in concurrently.
                let resource = format!("{}{i}", cfg.resource);
                match run::session_as(&cfg, user, &resource, Ready::Available).await {
                    Ok(c) => {
                        let us = t.elapsed().as_micros().max(1) as u64;
                        let _ = hist.lock().expect("histogram").record(us);
                        last_ok = Some(Instant::now());
                        closes.push(tokio::spawn(c.close(Duration::from_secs(5))));
                    }
                    Err(e) => fails.add(user, &e),
                }
            }
            for c in closes {
                let _ = c.await;
            }
            (fails, last_ok)
        }));
    }
    let mut fails = Failures::default();
    let mut last = t0;
    for h in handles {
        let (f, l) = h.await.map_err(|e| format!("worker: {e}"))?;
        fails.merge(f);
        if let Some(l) = l {
            last = last.max(l);
        }
    }
    let usage = watch.stop();
    let hist = hist.lock().expect("histogram").clone();
    let ok = hist.len();
    let secs = last.duration_since(t0).as_secs_f64().max(1e-6);
    let mut r = Map::new();
    r.insert("scenario".into(), json!("login"));
    r.insert("mech".into(), json!(cfg.mech.sasl_name()));
    r.insert("logins".into(), json!(n));
    r.insert("concurrency".into(), json!(workers));
    r.insert("ok".into(), json!(ok));
    fails.put(&mut r, "failures");
    r.insert("logins_per_s".into(), round(ok as f64 / secs, 1));
    stats::put_latency(&mut r, "latency", &hist, false);
    usage.put(&mut r, "");
    r.insert("logins_per_cpu_s".into(), usage.per_cpu_s(ok as f64));
    stats::print_json(r);
    run::summary(&format!(
        "login: {ok}/{n} ok in {secs:.2} s = {:.1}/s, p50 {:.1} ms, p99 {:.1} ms, {} failures, server CPU {}",
        ok as f64 / secs,
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        fails.total(),
        usage
            .server_cpu_s
            .map_or("n/a".to_string(), |c| format!("{c:.2} s")),
    ));
    Ok(fails.total() == 0)
}
