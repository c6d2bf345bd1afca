//! Shared scenario machinery: logging many accounts in with bounded
//! concurrency, a session's "ready" handshake, and closing many connections.
//!
//! A session is *ready* when it is bound, has sent initial presence and has
//! received the answer to a ping sent right after it: the server handles a
//! session's stanzas in order, so by then the session is available (offline
//! messages left from earlier runs have been delivered and are discarded
//! here).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};
use tokio::time::Instant;

use crate::conn::{self, ClientCfg, Conn, Error};
use crate::stats;

/// How far a login goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ready {
    /// Bound, nothing more sent.
    Bound,
    /// Bound, initial presence sent, ping answered.
    Available,
    /// Bound, then what a modern client does (see `modern.rs`): stream
    /// management with resumption, carbons, presence with caps, CSI
    /// inactive; ping answered.
    Modern,
}

/// Id of the ping that ends the ready handshake.
pub const READY_PING: &str = "ready1";

/// Logs user `user` in (binding `cfg.resource`) up to `ready`.
pub async fn session(cfg: &ClientCfg, user: u64, ready: Ready) -> Result<Conn, Error> {
    session_as(cfg, user, &cfg.resource, ready).await
}

/// Logs user `user` in, binding `resource`, up to `ready`.
pub async fn session_as(
    cfg: &ClientCfg,
    user: u64,
    resource: &str,
    ready: Ready,
) -> Result<Conn, Error> {
    let cfg = &*cfg.for_user(user);
    let mut c = Conn::login(cfg, &cfg.user(user), resource).await?;
    if ready == Ready::Available {
        let deadline = Instant::now() + cfg.login_timeout;
        let msg = format!("<presence/>{}", conn::ping(&cfg.domain, READY_PING));
        c.send(msg.as_bytes(), deadline).await?;
        wait_pong(&mut c, READY_PING, deadline).await?;
    } else if ready == Ready::Modern {
        let deadline = Instant::now() + cfg.login_timeout;
        let sm = crate::modern::setup(&mut c, &cfg.domain, READY_PING, deadline).await?;
        c.sm = Some(sm);
    }
    // Sessions often sit idle after login: hold no read buffer until data
    // arrives (the freed buffer serves the next login).
    c.release_buffer();
    Ok(c)
}

/// Reads (discarding other stanzas, answering server iqs) until the reply
/// to iq `id` arrives.
pub async fn wait_pong(c: &mut Conn, id: &str, deadline: Instant) -> Result<(), Error> {
    loop {
        let u = c.recv(deadline).await?;
        if c.get(&u.name) == b"iq" && c.opt(&u.id) == id.as_bytes() {
            let t = c.opt(&u.typ);
            if t == b"result" || t == b"error" {
                return Ok(());
            }
        }
        if let Some(reply) = c.iq_reply(&u) {
            c.send(reply.as_bytes(), deadline).await?;
        }
    }
}

/// Failures by kind, plus the first message seen.
#[derive(Debug, Default)]
pub struct Failures {
    /// Count per error kind.
    pub by_kind: BTreeMap<&'static str, u64>,
    /// One example.
    pub first: Option<String>,
}

impl Failures {
    /// Records one failure.
    pub fn add(&mut self, user: u64, e: &Error) {
        *self.by_kind.entry(e.kind).or_default() += 1;
        if self.first.is_none() {
            self.first = Some(format!("user {user}: {e}"));
        }
    }

    /// Total failures.
    pub fn total(&self) -> u64 {
        self.by_kind.values().sum()
    }

    /// Merges another set.
    pub fn merge(&mut self, o: Failures) {
        for (k, v) in o.by_kind {
            *self.by_kind.entry(k).or_default() += v;
        }
        if self.first.is_none() {
            self.first = o.first;
        }
    }

    /// Adds `{name}` (total) and `{name}_by_kind` to a report.
    pub fn put(&self, r: &mut Map<String, Value>, name: &str) {
        r.insert(name.to_string(), json!(self.total()));
        r.insert(format!("{name}_by_kind"), json!(self.by_kind));
        if let Some(f) = &self.first {
            r.insert(format!("{name}_first"), json!(f));
        }
    }
}

/// Result of [`login_many`].
pub struct Logins {
    /// One slot per requested user, in order; `None` where the login failed.
    pub conns: Vec<Option<Conn>>,
    /// Failures.
    pub failures: Failures,
    /// Login latency (µs), connect to ready.
    pub latency: Histogram<u64>,
    /// Wall time of the whole batch.
    pub elapsed: Duration,
}

/// Logs `users` in with at most `concurrency` logins in flight; logins not
/// started by `deadline` fail with kind `timeout`.
pub async fn login_many(
    cfg: Arc<ClientCfg>,
    users: Vec<u64>,
    concurrency: usize,
    ready: Ready,
    deadline: Instant,
) -> Logins {
    let t0 = Instant::now();
    let users = Arc::new(users);
    let next = Arc::new(AtomicUsize::new(0));
    let workers = concurrency.clamp(1, users.len().max(1));
    // One histogram for all workers (each is ~190 KB).
    let hist = Arc::new(Mutex::new(stats::histogram()));
    let mut handles = Vec::with_capacity(workers);
    for _ in 0..workers {
        let (cfg, users, next, hist) = (cfg.clone(), users.clone(), next.clone(), hist.clone());
        handles.push(tokio::spawn(async move {
            let mut out = Vec::new();
            let mut fails = Failures::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&user) = users.get(i) else { break };
                if Instant::now() >= deadline {
                    fails.add(
                        user,
                        &Error {
                            kind: "timeout",
                            msg: "run time limit reached before this login".into(),
                        },
                    );
                    continue;
                }
                let t = Instant::now();
                match tokio::time::timeout_at(deadline, session(&cfg, user, ready)).await {
                    Ok(Ok(c)) => {
                        let us = t.elapsed().as_micros().max(1) as u64;
                        let _ = hist.lock().expect("histogram").record(us);
                        out.push((i, c));
                    }
                    Ok(Err(e)) => fails.add(user, &e),
                    Err(_) => fails.add(
                        user,
                        &Error {
                            kind: "timeout",
                            msg: "run time limit reached during login".into(),
                        },
                    ),
                }
            }
            (out, fails)
        }));
    }
    let mut conns: Vec<Option<Conn>> = (0..users.len()).map(|_| None).collect();
    let mut failures = Failures::default();
    for h in handles {
        match h.await {
            Ok((out, fails)) => {
                for (i, c) in out {
                    conns[i] = Some(c);
                }
                failures.merge(fails);
            }
            Err(e) => failures.add(
                0,
                &Error {
                    kind: "panic",
                    msg: e.to_string(),
                },
            ),
        }
    }
    let latency = hist.lock().expect("histogram").clone();
    Logins {
        conns,
        failures,
        latency,
        elapsed: t0.elapsed(),
    }
}

/// Closes every connection cleanly, `concurrency` at a time (each close
/// waits at most `wait` for the server's end of stream).
pub async fn close_all(conns: Vec<Conn>, concurrency: usize, wait: Duration) {
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut set = tokio::task::JoinSet::new();
    for c in conns {
        let sem = sem.clone();
        set.spawn(async move {
            let _p = sem.acquire_owned().await;
            c.close(wait).await;
        });
    }
    while set.join_next().await.is_some() {}
}

/// The accounts `first .. first + n`.
pub fn users(first: u64, n: u64) -> Vec<u64> {
    (first..first + n).collect()
}

/// A human-readable summary line on stderr.
pub fn summary(text: &str) {
    eprintln!("loadgen: {text}");
}
