//! `login`: N full logins at concurrency C, each closed right after.
//!
//! A login is TCP connect, stream, STARTTLS, a full TLS handshake, SASL,
//! stream restart, bind, initial presence and a ping round trip (the session
//! is available). Latency runs from connect to the ping's answer. Each
//! session is then closed cleanly in the background, so the logins/s figure
//! is the rate of sessions established; the server CPU time covers the
//! closes too (a session's whole life).
//!
//! Modes: classic SASL (`--mech`), `--sasl2` (SASL2 + SCRAM-SHA-256 with
//! Bind 2 inline: no stream restart, no bind iq) and `--fast` (a returning
//! client: before the measured run, one SASL2 + SCRAM login per account
//! obtains a FAST token, not counted; each measured login then uses the
//! token, `HT-SHA-256-NONE`, and a TLS client that resumes sessions). The
//! report gives the mean round trips per login (TCP and TLS handshakes and
//! each wait for an answer, up to the ping's) and how many TLS handshakes
//! resumed. With `--fast`, logins of one account must not overlap (FAST
//! counts must grow): keep `--users` at least `--concurrency`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;
use serde_json::{json, Map};
use tokio::time::Instant;

use crate::conn::{ClientCfg, Conn};
use crate::run::{self, Failures, Ready};
use crate::sasl2::{self, Auth, Token};
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
    /// SASL2 (XEP-0388) + SCRAM-SHA-256 with Bind 2 instead of classic SASL.
    #[arg(long)]
    pub sasl2: bool,
    /// A returning client: FAST token (XEP-0484) over SASL2, TLS resumption.
    #[arg(long)]
    pub fast: bool,
}

/// One login of the measured run, in the mode asked.
async fn one_login(
    cfg: &ClientCfg,
    mode: Mode,
    tokens: &[Mutex<Option<Token>>],
    slot: usize,
    user: u64,
    resource: &str,
) -> Result<Conn, crate::conn::Error> {
    if mode == Mode::Classic {
        return run::session_as(cfg, user, resource, Ready::Available).await;
    }
    let (mut c, new) = if mode == Mode::Fast {
        // Reserve this use's count (concurrent uses get distinct ones).
        let mut t = {
            let mut g = tokens[slot].lock().expect("token");
            let Some(t) = g.as_mut() else {
                return Err(crate::conn::Error {
                    kind: "auth",
                    msg: "no FAST token from the first login".into(),
                });
            };
            let held = t.clone();
            t.count += 1;
            held
        };
        sasl2::login(cfg, user, resource, Auth::Fast(&mut t)).await?
    } else {
        sasl2::login(cfg, user, resource, Auth::Scram(false)).await?
    };
    if let Some(t) = new {
        *tokens[slot].lock().expect("token") = Some(t);
    }
    let deadline = Instant::now() + cfg.login_timeout;
    let msg = format!(
        "<presence/>{}",
        crate::conn::ping(&cfg.domain, run::READY_PING)
    );
    c.send(msg.as_bytes(), deadline).await?;
    run::wait_pong(&mut c, run::READY_PING, deadline).await?;
    Ok(c)
}

/// The first login of each account for `--fast`: SASL2 + SCRAM asking for a
/// token (not measured); the tokens by account slot.
async fn first_logins(
    cfg: &Arc<ClientCfg>,
    first: u64,
    users: u64,
    concurrency: usize,
) -> Result<Vec<Mutex<Option<Token>>>, String> {
    let slots: Arc<Vec<Mutex<Option<Token>>>> =
        Arc::new((0..users).map(|_| Mutex::new(None)).collect());
    let next = Arc::new(AtomicU64::new(0));
    let mut hs = Vec::new();
    for _ in 0..concurrency.clamp(1, users as usize) {
        let (cfg, next, slots) = (cfg.clone(), next.clone(), slots.clone());
        hs.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= users {
                    return Ok::<(), String>(());
                }
                let resource = format!("{}first{i}", cfg.resource);
                let (c, t) = sasl2::login(&cfg, first + i, &resource, Auth::Scram(true))
                    .await
                    .map_err(|e| format!("first login of user {}: {e}", first + i))?;
                let t = t.ok_or_else(|| {
                    format!(
                        "first login of user {}: no FAST <token/> (is mod_auth_fast on?)",
                        first + i
                    )
                })?;
                *slots[i as usize].lock().expect("token") = Some(t);
                c.close(Duration::from_secs(5)).await;
            }
        }));
    }
    for h in hs {
        h.await.map_err(|e| format!("worker: {e}"))??;
    }
    Ok(Arc::try_unwrap(slots).unwrap_or_else(|a| {
        a.iter()
            .map(|m| Mutex::new(m.lock().expect("token").clone()))
            .collect()
    }))
}

/// Which login.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Classic,
    Sasl2,
    Fast,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Classic => "classic",
            Mode::Sasl2 => "sasl2",
            Mode::Fast => "fast",
        }
    }
}

/// Runs the scenario.
pub async fn run(cfg: ClientCfg, o: Opts) -> Result<bool, String> {
    let n = o.logins;
    let users = o.users.unwrap_or(n).max(1);
    let first = o.common.first_user;
    let limit = o.common.duration.unwrap_or(600.0);
    let deadline = Instant::now() + Duration::from_secs_f64(limit);
    let mode = if o.fast {
        Mode::Fast
    } else if o.sasl2 {
        Mode::Sasl2
    } else {
        Mode::Classic
    };
    let mut cfg = cfg;
    if mode == Mode::Fast {
        cfg.connector = crate::tls::resuming_connector(256);
    }
    let cfg = Arc::new(cfg);
    let tokens = Arc::new(if mode == Mode::Fast {
        first_logins(&cfg, first, users, o.common.concurrency).await?
    } else {
        Vec::new()
    });
    let round_trips = Arc::new(AtomicU64::new(0));
    let resumed = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicU64::new(0));
    let watch = Watch::start(o.common.server_pid);
    let t0 = Instant::now();
    let workers = (o.common.concurrency as u64).clamp(1, n.max(1));
    // One histogram for all workers (each is ~190 KB).
    let hist = Arc::new(Mutex::new(stats::histogram()));
    let mut handles = Vec::new();
    for _ in 0..workers {
        let (cfg, next, hist) = (cfg.clone(), next.clone(), hist.clone());
        let (tokens, round_trips, resumed) = (tokens.clone(), round_trips.clone(), resumed.clone());
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
                let slot = (i % users) as usize;
                match one_login(&cfg, mode, &tokens, slot, user, &resource).await {
                    Ok(c) => {
                        round_trips.fetch_add(c.round_trips as u64, Ordering::Relaxed);
                        resumed.fetch_add(c.tls_resumed as u64, Ordering::Relaxed);
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
    r.insert("mode".into(), json!(mode.name()));
    let mech = match mode {
        Mode::Classic => cfg.mech.sasl_name(),
        Mode::Sasl2 => "SCRAM-SHA-256",
        Mode::Fast => sasl2::FAST_MECH,
    };
    r.insert("mech".into(), json!(mech));
    r.insert("logins".into(), json!(n));
    r.insert("concurrency".into(), json!(workers));
    r.insert("ok".into(), json!(ok));
    fails.put(&mut r, "failures");
    r.insert("logins_per_s".into(), round(ok as f64 / secs, 1));
    stats::put_latency(&mut r, "latency", &hist, false);
    usage.put(&mut r, "");
    r.insert("logins_per_cpu_s".into(), usage.per_cpu_s(ok as f64));
    let rt = round_trips.load(Ordering::Relaxed) as f64 / (ok.max(1) as f64);
    r.insert("round_trips_per_login".into(), round(rt, 2));
    r.insert("tls_resumed".into(), json!(resumed.load(Ordering::Relaxed)));
    stats::print_json(r);
    run::summary(&format!(
        "login ({}): {ok}/{n} ok in {secs:.2} s = {:.1}/s, p50 {:.1} ms, p99 {:.1} ms, {} failures, server CPU {}, {rt:.1} round trips per login",
        mode.name(),
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
