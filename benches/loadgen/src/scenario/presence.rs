//! `presence`: presence fan-out over rosters of R mutual contacts.
//!
//! The N accounts form a ring; each account's contacts are its R nearest
//! neighbours (R/2 on each side), all with subscription `both`.
//!
//! 1. **Setup** (not measured; `--skip-setup` skips it): every account logs
//!    in, reads its roster and, for each neighbour not yet `both`, sends
//!    `subscribed` (approval or pre-approval) and `subscribe`, approving any
//!    request it receives; it is done when roster pushes show `both` for all
//!    R neighbours. Running it again on complete rosters only costs a login.
//! 2. **Initial presence** (measured): all N log in and bind, then all send
//!    initial presence; the phase ends when every client has seen every
//!    contact available (broadcasts and probe answers).
//! 3. **Status changes** (measured): every client sends K presence updates
//!    (`<show>away</show><status>sK</status>`); the phase ends when every
//!    client has received K updates from each of its R contacts.
//!
//! Reported: presence stanzas received per second in each phase and per
//! server CPU-second, and how many expected updates never arrived.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use quick_xml::events::Event;
use quick_xml::Reader;
use serde_json::{json, Map};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::conn::{ClientCfg, Conn, Error};
use crate::run::{self, Failures, Ready};
use crate::stats::{round, Watch};
use crate::Common;

/// Options of `presence`.
#[derive(Args, Debug)]
pub struct Opts {
    #[command(flatten)]
    pub common: Common,
    /// Accounts in the ring.
    #[arg(long, default_value_t = 100)]
    pub users: u64,
    /// Contacts per account (even, less than --users).
    #[arg(long, default_value_t = 10)]
    pub contacts: u64,
    /// Status changes per account.
    #[arg(long, default_value_t = 5)]
    pub changes: u64,
    /// Milliseconds between one account's status changes.
    #[arg(long, default_value_t = 0)]
    pub interval_ms: u64,
    /// Assume the rosters are already set up.
    #[arg(long)]
    pub skip_setup: bool,
}

/// The ring: account numbers `first .. first + n`, `r` contacts each.
#[derive(Clone, Copy)]
struct Ring {
    first: u64,
    n: u64,
    r: u64,
}

impl Ring {
    /// Contact slot (0..r) of account `other` for account `me`.
    fn slot(&self, me: u64, other: u64) -> Option<usize> {
        if other < self.first || other >= self.first + self.n || other == me {
            return None;
        }
        let (a, b) = (me - self.first, other - self.first);
        let d = (b + self.n - a) % self.n;
        let h = self.r / 2;
        if d >= 1 && d <= h {
            Some((d - 1) as usize)
        } else if d >= self.n - h {
            Some((h + (self.n - d) - 1) as usize)
        } else {
            None
        }
    }

    /// The account in slot `s` of `me`.
    fn contact(&self, me: u64, s: usize) -> u64 {
        let h = self.r / 2;
        let a = me - self.first;
        let s = s as u64;
        let b = if s < h {
            (a + s + 1) % self.n
        } else {
            (a + self.n - (s - h + 1)) % self.n
        };
        self.first + b
    }
}

/// `(jid, subscription)` of the roster items in a roster result or push.
fn roster_items(raw: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rd = Reader::from_reader(raw);
    loop {
        match rd.read_event() {
            Ok(Event::Start(e)) | Ok(Event::Empty(e)) if e.local_name().as_ref() == b"item" => {
                let mut jid = String::new();
                let mut sub = String::from("none");
                for a in e.attributes().flatten() {
                    let v = String::from_utf8_lossy(&a.value).into_owned();
                    match a.key.as_ref() {
                        b"jid" => jid = v,
                        b"subscription" => sub = v,
                        _ => {}
                    }
                }
                out.push((jid, sub));
            }
            Ok(Event::Eof) | Err(_) => break,
            _ => {}
        }
    }
    out
}

/// One account's part of the setup phase.
async fn setup_one(
    cfg: Arc<ClientCfg>,
    ring: Ring,
    me: u64,
    mut c: Conn,
    done: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) -> (Option<Conn>, bool) {
    let r = ring.r as usize;
    let mut both = vec![false; r];
    let deadline = Instant::now() + Duration::from_secs(3600);
    let fail = |_e: Error| (None, false);
    if let Err(e) = c
        .send(
            b"<iq type='get' id='roster1'><query xmlns='jabber:iq:roster'/></iq>",
            deadline,
        )
        .await
    {
        return fail(e);
    }
    let mut asked = false;
    let mut complete = false;
    loop {
        let u = tokio::select! {
            _ = stop.changed() => return (Some(c), complete),
            u = c.next_unit() => match u {
                Ok(u) if u.kind == crate::xml::Kind::End => return (None, complete),
                Ok(u) => u,
                Err(e) => return fail(e),
            },
        };
        let name = c.get(&u.name).to_vec();
        let mut out = String::new();
        if name == b"iq" && (c.opt(&u.id) == b"roster1" || c.opt(&u.typ) == b"set") {
            for (jid, sub) in roster_items(c.get(&u.raw)) {
                if let Some(s) = cfg.user_number(&jid).and_then(|n| ring.slot(me, n)) {
                    both[s] = sub == "both";
                }
            }
            if let Some(reply) = c.iq_reply(&u) {
                out.push_str(&reply);
            }
            if c.opt(&u.id) == b"roster1" && !asked {
                asked = true;
                for (s, ok) in both.iter().enumerate() {
                    if !ok {
                        let to = cfg.bare(ring.contact(me, s));
                        out.push_str(&format!(
                            "<presence to='{to}' type='subscribed'/><presence to='{to}' type='subscribe'/>"
                        ));
                    }
                }
            }
        } else if name == b"presence" && c.opt(&u.typ) == b"subscribe" {
            let from = c.str(&u.from).to_string();
            out.push_str(&format!("<presence to='{from}' type='subscribed'/>"));
        } else if let Some(reply) = c.iq_reply(&u) {
            out.push_str(&reply);
        }
        if !out.is_empty() {
            if let Err(e) = c.send(out.as_bytes(), deadline).await {
                return fail(e);
            }
        }
        if asked && !complete && both.iter().all(|&b| b) {
            complete = true;
            done.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Counters of one account in the measured phases.
#[derive(Default)]
struct Counts {
    initial_rx: u64,
    change_rx: u64,
    self_rx: u64,
    other_rx: u64,
    missing_updates: u64,
    initial_done: bool,
    changes_done: bool,
    error: Option<Error>,
}

/// What every account's measured phases share.
struct Phases {
    cfg: Arc<ClientCfg>,
    ring: Ring,
    /// Status changes per account.
    k: u64,
    interval: Duration,
    /// Accounts that have seen all their contacts available.
    initial_done: AtomicU64,
    deadline: Instant,
}

/// One account's measured phases.
async fn measure_one(
    ph: Arc<Phases>,
    me: u64,
    mut c: Conn,
    mut go: watch::Receiver<bool>,
) -> (Option<Conn>, Counts) {
    let (cfg, ring, k, interval, deadline) = (&ph.cfg, ph.ring, ph.k, ph.interval, ph.deadline);
    let initial_done = &ph.initial_done;
    let r = ring.r as usize;
    let mut seen = vec![false; r];
    let mut updates = vec![0u64; r];
    let mut n = Counts::default();
    if let Err(e) = c.send(b"<presence/>", deadline).await {
        n.error = Some(e);
        return (None, n);
    }
    let mut started = false;
    let mut sent_changes = 0u64;
    let mut next_change = Instant::now();
    let mut seen_count = 0usize;
    let mut complete = 0usize;
    loop {
        if !started && *go.borrow() {
            started = true;
            next_change = Instant::now();
        }
        if started && sent_changes < k && Instant::now() >= next_change {
            // Without an interval, all changes go out in one write.
            let mut out = String::new();
            loop {
                sent_changes += 1;
                out.push_str(&format!(
                    "<presence><show>away</show><status>s{sent_changes}</status></presence>"
                ));
                if sent_changes >= k || !interval.is_zero() {
                    break;
                }
            }
            next_change = Instant::now() + interval;
            if let Err(e) = c.send(out.as_bytes(), deadline).await {
                n.error = Some(e);
                return (None, n);
            }
            continue;
        }
        if n.changes_done && sent_changes >= k {
            break;
        }
        let wake = if !started {
            deadline
        } else if sent_changes < k {
            next_change
        } else {
            deadline
        };
        let u = tokio::select! {
            _ = go.changed(), if !started => continue,
            _ = tokio::time::sleep_until(wake) => {
                if Instant::now() >= deadline {
                    n.error = Some(Error { kind: "timeout", msg: "presence phase".into() });
                    break;
                }
                continue;
            }
            u = c.next_unit() => match u {
                Ok(u) if u.kind == crate::xml::Kind::End => {
                    n.error = Some(Error { kind: "closed", msg: "stream closed".into() });
                    return (None, n);
                }
                Ok(u) => u,
                Err(e) => { n.error = Some(e); return (None, n); }
            },
        };
        if c.get(&u.name) == b"presence" {
            let typ = c.opt(&u.typ);
            let from_n = cfg.user_number(c.str(&u.from));
            let change = c.opt(&u.body).first() == Some(&b's');
            if from_n == Some(me) {
                n.self_rx += 1;
            } else if let (true, Some(s)) = (typ.is_empty(), from_n.and_then(|f| ring.slot(me, f)))
            {
                if !seen[s] {
                    seen[s] = true;
                    seen_count += 1;
                }
                if change {
                    n.change_rx += 1;
                    updates[s] += 1;
                    if updates[s] == k {
                        complete += 1;
                    }
                } else {
                    n.initial_rx += 1;
                }
            } else {
                n.other_rx += 1;
            }
            if !n.initial_done && seen_count == r {
                n.initial_done = true;
                initial_done.fetch_add(1, Ordering::SeqCst);
            }
            if !n.changes_done && complete == r {
                n.changes_done = true;
            }
        } else if let Some(reply) = c.iq_reply(&u) {
            if let Err(e) = c.send(reply.as_bytes(), deadline).await {
                n.error = Some(e);
                return (None, n);
            }
        }
    }
    n.missing_updates = updates.iter().map(|&x| k.saturating_sub(x)).sum();
    (Some(c), n)
}

/// Runs the scenario.
pub async fn run(cfg: ClientCfg, o: Opts) -> Result<bool, String> {
    let ring = Ring {
        first: o.common.first_user,
        n: o.users,
        r: o.contacts,
    };
    if ring.r == 0 || ring.r % 2 == 1 || ring.r >= ring.n {
        return Err("--contacts must be even, positive and less than --users".into());
    }
    let limit = o.common.duration.unwrap_or(300.0);
    let deadline = Instant::now() + Duration::from_secs_f64(limit);
    let cfg = Arc::new(cfg);
    let users = run::users(ring.first, ring.n);
    let mut setup_s = 0.0;
    let mut setup_complete = 0;
    if !o.skip_setup {
        let t = Instant::now();
        let logins = run::login_many(
            cfg.clone(),
            users.clone(),
            o.common.concurrency,
            Ready::Available,
            deadline,
        )
        .await;
        if logins.failures.total() > 0 {
            return Err(format!(
                "setup: {} logins failed ({})",
                logins.failures.total(),
                logins.failures.first.unwrap_or_default()
            ));
        }
        let done = Arc::new(AtomicU64::new(0));
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut hs = Vec::new();
        for (i, c) in logins.conns.into_iter().enumerate() {
            let c = c.expect("all logged in");
            hs.push(tokio::spawn(setup_one(
                cfg.clone(),
                ring,
                users[i],
                c,
                done.clone(),
                stop_rx.clone(),
            )));
        }
        while done.load(Ordering::SeqCst) < ring.n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = stop_tx.send(true);
        let mut conns = Vec::new();
        for h in hs {
            if let Ok((Some(c), ok)) = h.await {
                conns.push(c);
                setup_complete += ok as u64;
            }
        }
        run::close_all(
            conns,
            o.common.concurrency.max(100),
            Duration::from_secs(10),
        )
        .await;
        setup_s = t.elapsed().as_secs_f64();
        if setup_complete < ring.n {
            return Err(format!(
                "setup: only {setup_complete}/{} rosters complete within the time limit",
                ring.n
            ));
        }
    }
    // Measured phases.
    let logins = run::login_many(
        cfg.clone(),
        users.clone(),
        o.common.concurrency,
        Ready::Bound,
        deadline,
    )
    .await;
    let failures = logins.failures;
    let ph = Arc::new(Phases {
        cfg: cfg.clone(),
        ring,
        k: o.changes,
        interval: Duration::from_millis(o.interval_ms),
        initial_done: AtomicU64::new(0),
        deadline,
    });
    let (go_tx, go_rx) = watch::channel(false);
    let watch_all = Watch::start(o.common.server_pid);
    let t_initial = Instant::now();
    let mut hs = Vec::new();
    let logged_in = logins.conns.iter().filter(|c| c.is_some()).count() as u64;
    for (i, c) in logins.conns.into_iter().enumerate() {
        let Some(c) = c else { continue };
        hs.push(tokio::spawn(measure_one(
            ph.clone(),
            users[i],
            c,
            go_rx.clone(),
        )));
    }
    while ph.initial_done.load(Ordering::SeqCst) < logged_in && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let initial_s = t_initial.elapsed().as_secs_f64();
    let watch_changes = Watch::start(o.common.server_pid);
    let t_changes = Instant::now();
    let _ = go_tx.send(true);
    let mut tot = Counts::default();
    let mut conns = Vec::new();
    let mut phase_errors = Failures::default();
    let mut last_done = t_changes;
    let mut initial_complete = 0u64;
    let mut changes_complete = 0u64;
    for (i, h) in hs.into_iter().enumerate() {
        let (c, n) = h.await.map_err(|e| format!("presence task: {e}"))?;
        last_done = last_done.max(Instant::now());
        if let Some(c) = c {
            conns.push(c);
        }
        tot.initial_rx += n.initial_rx;
        tot.change_rx += n.change_rx;
        tot.self_rx += n.self_rx;
        tot.other_rx += n.other_rx;
        tot.missing_updates += n.missing_updates;
        initial_complete += n.initial_done as u64;
        changes_complete += n.changes_done as u64;
        if let Some(e) = &n.error {
            phase_errors.add(users[i], e);
        }
    }
    let changes_s = last_done.duration_since(t_changes).as_secs_f64().max(1e-6);
    let usage_changes = watch_changes.stop();
    let usage_all = watch_all.stop();
    run::close_all(
        conns,
        o.common.concurrency.max(100),
        Duration::from_secs(10),
    )
    .await;
    let expected = logged_in * o.changes * ring.r;
    let missing = tot.missing_updates + (ring.n - logged_in) * o.changes * ring.r;
    let all_stanzas = tot.initial_rx + tot.change_rx + tot.self_rx + tot.other_rx;
    let mut r = Map::new();
    r.insert("scenario".into(), json!("presence"));
    r.insert("users".into(), json!(ring.n));
    r.insert("contacts".into(), json!(ring.r));
    r.insert("changes".into(), json!(o.changes));
    r.insert("setup_s".into(), round(setup_s, 3));
    r.insert("setup_skipped".into(), json!(o.skip_setup));
    failures.put(&mut r, "login_failures");
    phase_errors.put(&mut r, "session_errors");
    r.insert("initial_s".into(), round(initial_s, 3));
    r.insert("initial_presence_rx".into(), json!(tot.initial_rx));
    r.insert("initial_complete".into(), json!(initial_complete));
    r.insert(
        "initial_presence_per_s".into(),
        round(tot.initial_rx as f64 / initial_s.max(1e-6), 1),
    );
    r.insert("changes_s".into(), round(changes_s, 3));
    r.insert("updates_expected".into(), json!(expected));
    r.insert("updates_rx".into(), json!(tot.change_rx));
    r.insert("self_echo_rx".into(), json!(tot.self_rx));
    r.insert("other_rx".into(), json!(tot.other_rx));
    r.insert("updates_missing".into(), json!(missing));
    r.insert("changes_complete".into(), json!(changes_complete));
    // Updates from contacts only: self echoes are not waited for, so their
    // count depends on timing.
    r.insert(
        "presence_per_s".into(),
        round(tot.change_rx as f64 / changes_s, 1),
    );
    usage_changes.put(&mut r, "");
    r.insert(
        "presence_per_cpu_s".into(),
        usage_changes.per_cpu_s(tot.change_rx as f64),
    );
    usage_all.put(&mut r, "all_");
    r.insert(
        "all_presence_stanzas_per_cpu_s".into(),
        usage_all.per_cpu_s(all_stanzas as f64),
    );
    crate::stats::print_json(r);
    run::summary(&format!(
        "presence: {} users x {} contacts, initial presence {:.2} s ({} rx), {} changes each: {} updates (+{} self echoes) in {changes_s:.2} s = {:.0} presence/s, {missing} missing, server CPU {}",
        ring.n,
        ring.r,
        initial_s,
        tot.initial_rx,
        o.changes,
        tot.change_rx,
        tot.self_rx,
        tot.change_rx as f64 / changes_s,
        usage_changes
            .server_cpu_s
            .map_or("n/a".to_string(), |c| format!("{c:.2} s")),
    ));
    Ok(missing == 0 && failures.total() == 0 && phase_errors.total() == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_slots_are_symmetric_and_invertible() {
        let ring = Ring {
            first: 1,
            n: 7,
            r: 4,
        };
        for me in 1..=7 {
            let mut contacts = std::collections::BTreeSet::new();
            for s in 0..4 {
                let c = ring.contact(me, s);
                assert_ne!(c, me);
                assert_eq!(ring.slot(me, c), Some(s));
                assert!(ring.slot(c, me).is_some(), "{me} <-> {c}");
                contacts.insert(c);
            }
            assert_eq!(contacts.len(), 4);
        }
        assert_eq!(ring.slot(1, 4), None);
    }

    #[test]
    fn parses_roster_items() {
        let raw = b"<iq type='result'><query xmlns='jabber:iq:roster'><item jid='a@x' subscription='both'/><item jid='b@x'><group>g</group></item></query></iq>";
        assert_eq!(
            roster_items(raw),
            vec![
                ("a@x".to_string(), "both".to_string()),
                ("b@x".to_string(), "none".to_string())
            ]
        );
    }
}
