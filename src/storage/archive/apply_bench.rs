//! A harness for the archive's write side (no XMPP, ignored by default):
//! the batches a chat load gives the applier, written through the real
//! write path (`writer.rs`: queue, applier, flusher) into sled trees opened
//! as the server opens them, with the CPU of each of the process's threads
//! read from `/proc/self/task/*/stat` around the measured batches.
//!
//! ```text
//! cargo test --release --bin rookery apply_chat_batches -- --ignored --nocapture
//! ```
//!
//! Shape (environment; defaults as `benches/loadgen/archive.sh`'s default
//! run, 100 pairs at about 10,000 messages a second, gathered 250 ms as
//! before stop 19; 54 messages per pair is the 500 ms of now):
//! `APPLY_BENCH_PAIRS` (100), `APPLY_BENCH_PER_PAIR` (27 messages per
//! pair per batch, each archived twice: the sender's and the recipient's
//! archive), `APPLY_BENCH_WARMUP` (10 batches, not measured),
//! `APPLY_BENCH_BATCHES` (40 measured), `APPLY_BENCH_ENGINE` (`sled`).
//! Every batch is appended, then waited for until durable (one apply and
//! one flush per batch, as the server's flusher does under load). Under
//! `valgrind --tool=callgrind` the instructions of `write_batch` and of
//! the flush are those of the applier and flusher threads.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use jid::BareJid;
use xep_support::archive::{ArchiveStore, Direction, NewMessage};

use super::kv::ArchiveKv;
use super::kv_fjall::FjallKv;
use super::kv_sled::SledKv;
use super::{Archive, EngineKind};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU seconds per thread name (digits folded), from /proc/self/task.
fn thread_cpu() -> HashMap<(u32, String), f64> {
    let hz = 100.0; // USER_HZ on Linux
    let mut out = HashMap::new();
    for e in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find(" ("), stat.rfind(')')) else {
            continue;
        };
        let tid: u32 = stat[..open].parse().unwrap_or(0);
        let name: String = stat[open + 2..close]
            .chars()
            .map(|c| if c.is_ascii_digit() { 'N' } else { c })
            .collect();
        let f: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        out.insert((tid, name), (ticks(11) + ticks(12)) / hz);
    }
    out
}

/// One batch of chat: every pair's sender writes `per_pair` messages to
/// its partner, each archived by both.
fn chat_batch(pairs: usize, per_pair: usize, seq: &mut u64) -> Vec<NewMessage> {
    let mut out = Vec::with_capacity(pairs * per_pair * 2);
    for _ in 0..per_pair {
        for p in 0..pairs {
            *seq += 1;
            let (a, b) = (
                format!("bench{}@localhost", 2 * p + 1),
                format!("bench{}@localhost", 2 * p + 2),
            );
            let xml = format!(
                "<message xmlns='jabber:client' to='{b}' type='chat' id='m{s}' from='{a}/loadgen'><body>{p} {s} 1765000000{s:06}</body></message>",
                s = *seq
            );
            let (ja, jb) = (BareJid::new(&a).unwrap(), BareJid::new(&b).unwrap());
            out.push(NewMessage {
                owner: ja.clone(),
                peer: jb.clone(),
                direction: Direction::Outgoing,
                origin_id: None,
                xml: xml.clone(),
            });
            out.push(NewMessage {
                owner: jb,
                peer: ja,
                direction: Direction::Incoming,
                origin_id: None,
                xml,
            });
        }
    }
    out
}

/// Append each batch, then wait until it is durable.
async fn write(a: &Archive, batches: Vec<Vec<NewMessage>>) {
    for b in batches {
        a.append(b).unwrap();
        a.durable(a.ticket()).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn apply_chat_batches() {
    let pairs = env("APPLY_BENCH_PAIRS", 100);
    let per_pair = env("APPLY_BENCH_PER_PAIR", 27);
    let warmup = env("APPLY_BENCH_WARMUP", 10);
    let batches = env("APPLY_BENCH_BATCHES", 40);
    let engine = EngineKind::parse(&std::env::var("APPLY_BENCH_ENGINE").unwrap_or("sled".into()))
        .expect("fjall or sled");
    let dir = tempfile::tempdir().unwrap();
    let kv: Box<dyn ArchiveKv> = match engine {
        EngineKind::Fjall => Box::new(FjallKv::open(&dir.path().join("archive")).unwrap()),
        EngineKind::Sled => {
            // As the server opens it (storage/sled/mod.rs).
            let db = sled::Config::new()
                .path(dir.path().join("db"))
                .cache_capacity(64 * 1024 * 1024)
                .open()
                .unwrap();
            Box::new(SledKv::open(&db, dir.path()).unwrap())
        }
    };
    let a = Archive::open(kv, Arc::new(RwLock::new(()))).unwrap();
    let mut seq = 0;
    let warm: Vec<_> = (0..warmup)
        .map(|_| chat_batch(pairs, per_pair, &mut seq))
        .collect();
    write(&a, warm).await;
    let measured: Vec<_> = (0..batches)
        .map(|_| chat_batch(pairs, per_pair, &mut seq))
        .collect();
    let before = thread_cpu();
    let t0 = std::time::Instant::now();
    write(&a, measured).await;
    let wall = t0.elapsed();
    let after = thread_cpu();
    let appends = (batches * pairs * per_pair * 2) as f64;
    let mut per: HashMap<String, f64> = HashMap::new();
    for ((tid, name), t) in &after {
        let t0 = before.get(&(*tid, name.clone())).copied().unwrap_or(0.0);
        *per.entry(name.clone()).or_default() += t - t0;
    }
    let mut per: Vec<_> = per.into_iter().filter(|(_, t)| *t > 0.0).collect();
    per.sort_by(|x, y| y.1.total_cmp(&x.1));
    println!(
        "{} engine, {batches} batches of {} appends ({pairs} pairs x {per_pair} messages x 2) after {warmup}: {:.2} s",
        engine.name(),
        pairs * per_pair * 2,
        wall.as_secs_f64()
    );
    for (name, t) in per {
        println!("  {name:24} {t:6.2} s  {:6.3} µs/append", t * 1e6 / appends);
    }
    a.shutdown();
}
