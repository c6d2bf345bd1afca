//! `provision`: create the benchmark accounts with the server's own admin
//! command, a bounded number of commands at a time.
//!
//! Rookery (`rookery ctl -c FILE`), ejabberd (`ejabberdctl`) and Prosody
//! (`prosodyctl`) all take `register USER HOST PASSWORD`, so the command is
//! `{ctl-cmd} register {prefix}{n} {domain} {password}`. An account that
//! already exists (exit code non-zero, output mentioning "already" or
//! "exists") counts as existing, so provisioning can be re-run. The
//! `--ctl-cmd` string is split on whitespace (no shell quoting).

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use serde_json::{json, Map};

use crate::stats::round;

/// Which server's admin command to use by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ServerKind {
    /// `rookery ctl` (pass `-c CONFIG` through --ctl-cmd).
    Rookery,
    /// `prosodyctl`.
    Prosody,
    /// `ejabberdctl`.
    Ejabberd,
}

/// Options of `provision`.
#[derive(Args, Debug)]
pub struct Opts {
    /// Accounts to create.
    #[arg(long)]
    pub users: u64,
    /// Number of the first account.
    #[arg(long, default_value_t = 1)]
    pub first: u64,
    /// Account names are `{prefix}{n}`.
    #[arg(long, default_value = "bench")]
    pub prefix: String,
    /// Password of every account.
    #[arg(long, default_value = "secret")]
    pub password: String,
    /// XMPP domain.
    #[arg(long, default_value = "localhost")]
    pub domain: String,
    /// Server kind (chooses the default --ctl-cmd).
    #[arg(long, value_enum, default_value = "rookery")]
    pub server_kind: ServerKind,
    /// Admin command before `register ...`, e.g.
    /// "target/release/rookery ctl -c /tmp/bench/rookery.yml".
    #[arg(long)]
    pub ctl_cmd: Option<String>,
    /// Commands running at once.
    #[arg(long, default_value_t = 8)]
    pub jobs: usize,
    /// Bound on one command, seconds.
    #[arg(long, default_value_t = 30.0)]
    pub timeout: f64,
    /// Bound on the whole provisioning, seconds.
    #[arg(long, default_value_t = 3600.0)]
    pub duration: f64,
}

enum Outcome {
    Created,
    Existed,
    Failed(String),
}

fn register(argv: &[String], user: &str, o: &Opts) -> Outcome {
    let mut child = match Command::new(&argv[0])
        .args(&argv[1..])
        .args(["register", user, &o.domain, &o.password])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return Outcome::Failed(format!("cannot run {}: {e}", argv[0])),
    };
    let deadline = Instant::now() + Duration::from_secs_f64(o.timeout);
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(1)),
            Ok(None) => {
                // Our own child: kill it by handle and reap it.
                let _ = child.kill();
                let _ = child.wait();
                return Outcome::Failed(format!("{user}: command timed out"));
            }
            Err(e) => return Outcome::Failed(format!("{user}: wait: {e}")),
        }
    };
    let mut text = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut text);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut text);
    }
    if status.success() {
        return Outcome::Created;
    }
    let lower = text.to_lowercase();
    if lower.contains("already") || lower.contains("exists") {
        Outcome::Existed
    } else {
        Outcome::Failed(format!("{user}: {status}: {}", text.trim()))
    }
}

/// Runs the provisioning; prints one JSON line.
pub fn run(o: Opts) -> Result<bool, String> {
    let cmd = o.ctl_cmd.clone().unwrap_or_else(|| {
        match o.server_kind {
            ServerKind::Rookery => "rookery ctl",
            ServerKind::Prosody => "prosodyctl",
            ServerKind::Ejabberd => "ejabberdctl",
        }
        .to_string()
    });
    let argv: Vec<String> = cmd.split_whitespace().map(str::to_string).collect();
    if argv.is_empty() {
        return Err("empty --ctl-cmd".into());
    }
    let o = Arc::new(o);
    let argv = Arc::new(argv);
    let next = Arc::new(AtomicU64::new(0));
    let counts = Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
    let first_error = Arc::new(Mutex::new(None::<String>));
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs_f64(o.duration);
    let mut threads = Vec::new();
    for _ in 0..o.jobs.clamp(1, 64) {
        let (o, argv, next, counts, first_error) = (
            o.clone(),
            argv.clone(),
            next.clone(),
            counts.clone(),
            first_error.clone(),
        );
        threads.push(thread::spawn(move || loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= o.users || Instant::now() >= end {
                break;
            }
            let user = format!("{}{}", o.prefix, o.first + i);
            let k = match register(&argv, &user, &o) {
                Outcome::Created => 0,
                Outcome::Existed => 1,
                Outcome::Failed(e) => {
                    first_error.lock().expect("error slot").get_or_insert(e);
                    2
                }
            };
            let done = counts[k].fetch_add(1, Ordering::Relaxed) + 1;
            let total: u64 = counts.iter().map(|c| c.load(Ordering::Relaxed)).sum();
            if k == 0 && done % 1000 == 0 {
                eprintln!("loadgen provision: {total}/{} done", o.users);
            }
        }));
    }
    for t in threads {
        let _ = t.join();
    }
    let secs = t0.elapsed().as_secs_f64();
    let [created, existed, failed] = [0, 1, 2].map(|k| counts[k].load(Ordering::Relaxed));
    let skipped = o.users - created - existed - failed;
    let mut r = Map::new();
    r.insert("scenario".into(), json!("provision"));
    r.insert("users".into(), json!(o.users));
    r.insert("created".into(), json!(created));
    r.insert("existed".into(), json!(existed));
    r.insert("failed".into(), json!(failed));
    r.insert("not_attempted".into(), json!(skipped));
    r.insert("elapsed_s".into(), round(secs, 3));
    r.insert(
        "per_s".into(),
        round((created + existed) as f64 / secs.max(1e-6), 1),
    );
    let first = first_error.lock().expect("error slot").clone();
    if let Some(e) = &first {
        r.insert("first_error".into(), json!(e));
    }
    crate::stats::print_json(r);
    eprintln!(
        "loadgen provision: {created} created, {existed} existed, {failed} failed in {secs:.1} s{}",
        first.map_or(String::new(), |e| format!(" (first error: {e})"))
    );
    Ok(failed == 0 && skipped == 0)
}
