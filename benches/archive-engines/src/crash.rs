//! Crash recovery: a child process (`crash-writer`) opens the database and
//! appends chat batches, printing `ACK <entries> <last id>` once each batch
//! is durable; the parent kills it with SIGKILL at a random moment, reopens
//! the database (timed) and checks what survived:
//!
//! - every acknowledged entry is there (ids up to the last acknowledged one);
//! - the trees agree: as many peer-index and origin-index entries as
//!   messages, and the counters add up to the messages;
//! - what was written past the last acknowledgement (a batch durable but not
//!   yet acknowledged, or a torn one).

use std::io::{BufRead, BufReader, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::json;

use crate::archive::{be_u64, decode_counter, Archive};
use crate::engines::{self, Tree};
use crate::workload::Workload;

pub fn writer(engine: &str, dir: &Path, batch: usize, accounts: u32) -> Result<(), String> {
    let mut a = Archive::open(engines::open(engine, dir)?)?;
    let mut w = Workload::new(accounts, rand::random());
    let out = std::io::stdout();
    let mut acked = 0u64;
    println!("READY {}", a.last_id());
    loop {
        let mut entries = Vec::with_capacity(batch);
        while entries.len() < batch {
            w.chat(&mut entries);
        }
        let ids = a.append(&entries)?;
        acked += ids.iter().filter(|&&i| i != 0).count() as u64;
        let mut o = out.lock();
        writeln!(o, "ACK {acked} {}", a.last_id())
            .and_then(|_| o.flush())
            .map_err(|e| e.to_string())?;
    }
}

/// Totals over the whole database: messages, peer-index and origin-index
/// entries, the counters' sum, and messages by id relative to `lo < id <= hi`.
struct Totals {
    messages: u64,
    by_peer: u64,
    by_origin: u64,
    counters: u64,
    in_window: u64,
    past_window: u64,
}

fn totals(a: &Archive, lo: u64, hi: u64) -> Result<Totals, String> {
    let full = [0xffu8; 16];
    let mut t = Totals {
        messages: 0,
        by_peer: 0,
        by_origin: 0,
        counters: 0,
        in_window: 0,
        past_window: 0,
    };
    // Messages in chunks (a scan returns owned pairs).
    let mut from = Vec::new();
    loop {
        let chunk = a.kv.scan(Tree::Messages, &from, &full, false, 10_000)?;
        let Some((last, _)) = chunk.last() else { break };
        for (k, _) in &chunk {
            let id = be_u64(&k[4..]);
            t.messages += 1;
            if id > lo && id <= hi {
                t.in_window += 1;
            } else if id > hi {
                t.past_window += 1;
            }
        }
        from = last.clone();
        from.push(0);
    }
    t.by_peer = a.kv.count(Tree::ByPeer, &[], &full)?;
    t.by_origin = a.kv.count(Tree::ByOrigin, &[], &full)?;
    for (_, v) in a.kv.scan(Tree::Counters, &[], &full, false, usize::MAX)? {
        t.counters += decode_counter(&v)?.count;
    }
    Ok(t)
}

/// Kill a writer on `dir` after 2-3 s of writing, reopen, check. `dir` may
/// already hold data (the large archive).
pub fn test(
    engine: &str,
    dir: &Path,
    batch: usize,
    accounts: u32,
) -> Result<serde_json::Value, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .args([
            "crash-writer",
            "--engine",
            engine,
            "--batch",
            &batch.to_string(),
            "--accounts",
            &accounts.to_string(),
        ])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start crash-writer: {e}"))?;
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let ready = rx
        .recv_timeout(Duration::from_secs(300))
        .map_err(|_| "crash-writer did not start".to_string())?;
    let start_id: u64 = ready
        .strip_prefix("READY ")
        .and_then(|s| s.parse().ok())
        .ok_or(format!("unexpected {ready:?}"))?;
    let kill_after = Duration::from_millis(2000 + rand::thread_rng().gen_range(0..1000));
    let t0 = Instant::now();
    let (mut acked, mut acked_id) = (0u64, start_id);
    while t0.elapsed() < kill_after {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(5)) {
            let mut f = line
                .split(' ')
                .skip(1)
                .map(|x| x.parse::<u64>().unwrap_or(0));
            acked = f.next().unwrap_or(acked);
            acked_id = f.next().unwrap_or(acked_id);
        }
    }
    child.kill().map_err(|e| e.to_string())?; // SIGKILL
    let _ = child.wait();
    // Lines already written before the kill are acknowledgements too.
    while let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
        let mut f = line
            .split(' ')
            .skip(1)
            .map(|x| x.parse::<u64>().unwrap_or(0));
        acked = f.next().unwrap_or(acked);
        acked_id = f.next().unwrap_or(acked_id);
    }
    let t1 = Instant::now();
    let reopened = engines::open(engine, dir).and_then(Archive::open);
    let reopen_ms = t1.elapsed().as_secs_f64() * 1e3;
    let a = match reopened {
        Ok(a) => a,
        Err(e) => {
            return Ok(
                json!({"killed_after_ms": kill_after.as_millis() as u64, "acked": acked, "reopen_error": e, "reopen_ms": reopen_ms}),
            )
        }
    };
    let t = totals(&a, start_id, acked_id)?;
    let q0 = Instant::now();
    let page = a.page_last(0, 50).map(|p| p.len());
    let first_query_ms = q0.elapsed().as_secs_f64() * 1e3;
    Ok(json!({
        "killed_after_ms": kill_after.as_millis() as u64,
        "acked_entries": acked,
        "acked_present": t.in_window,
        "lost_acked": acked.saturating_sub(t.in_window),
        "unacked_survivors": t.past_window,
        "messages": t.messages,
        "by_peer": t.by_peer,
        "by_origin": t.by_origin,
        "counters_sum": t.counters,
        "trees_agree": t.messages == t.by_peer && t.messages == t.by_origin && t.messages == t.counters,
        "reopen_ms": reopen_ms,
        "first_page_after_reopen_ms": first_query_ms,
        "first_page_len": page.unwrap_or(0),
    }))
}
