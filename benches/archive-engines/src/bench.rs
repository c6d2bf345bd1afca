//! The `run` command: each engine in turn, in a fresh directory under
//! `--dir`:
//!
//! 1. chat: `--messages` chat messages (2 appends each) in durable batches;
//!    CPU of the whole process minus the generator's, and wall time;
//! 2. settle: `--settle` seconds idle, to count the CPU the engine spends in
//!    the background after the writes (flushes, compactions);
//! 3. heavy: `--heavy` appends into one archive, same batches;
//! 4. bytes on disk per archived message;
//! 5. queries on the heavy archive: page of 50 first / middle / last / with
//!    a peer, the count from the counter and by walking; `--reps` each;
//! 6. reopen (clean, in a fresh process) and the first page after it;
//! 7. crash: a writer on the same database killed with SIGKILL, reopen, check.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::archive::Archive;
use crate::workload::{jid, Workload, HEAVY};
use crate::{cpu, crash, engines};

#[derive(clap::Args)]
pub struct Opts {
    /// Engines, comma-separated (sled,fjall,redb).
    #[arg(long, default_value = "sled,fjall,redb")]
    engines: String,
    /// Directory for the databases (each engine's is removed before and after).
    #[arg(long, default_value = "target/archive-engines")]
    dir: PathBuf,
    /// Chat messages of the throughput phase (each archived twice).
    #[arg(long, default_value_t = 250_000)]
    messages: u64,
    /// Accounts of the chat phase.
    #[arg(long, default_value_t = 200)]
    accounts: u32,
    /// Messages in the large archive that is queried.
    #[arg(long, default_value_t = 1_000_000)]
    heavy: u64,
    /// Archive entries per durable batch (one fsync each).
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Seconds of idle after the chat phase, counted apart.
    #[arg(long, default_value_t = 5)]
    settle: u64,
    /// Repetitions of each query.
    #[arg(long, default_value_t = 200)]
    reps: usize,
    /// Skip the origin-id lookup before each append (no idempotence).
    #[arg(long)]
    no_dedupe: bool,
    /// Skip the SIGKILL test.
    #[arg(long)]
    no_crash: bool,
    /// Keep the databases.
    #[arg(long)]
    keep: bool,
    /// Append one JSON object per engine to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

struct Phase {
    appends: u64,
    cpu: f64,
    wall: f64,
}

/// Append `n` units from `gen` in batches of `batch` entries.
fn phase(
    a: &mut Archive,
    w: &mut Workload,
    n: u64,
    batch: usize,
    heavy: bool,
) -> Result<Phase, String> {
    let (c0, t0) = (cpu::process(), Instant::now());
    let mut gen_cpu = 0.0;
    let mut done = 0u64;
    let mut appends = 0u64;
    while done < n {
        let g0 = cpu::thread();
        let mut entries = Vec::with_capacity(batch + 2);
        while entries.len() < batch && done < n {
            if heavy {
                w.heavy(&mut entries);
            } else {
                w.chat(&mut entries);
            }
            done += 1;
        }
        gen_cpu += cpu::thread() - g0;
        appends += a.append(&entries)?.iter().filter(|&&i| i != 0).count() as u64;
    }
    Ok(Phase {
        appends,
        cpu: cpu::process() - c0 - gen_cpu,
        wall: t0.elapsed().as_secs_f64(),
    })
}

/// Median and 99th percentile of `reps` runs of `f`, in milliseconds.
fn timed<T>(
    reps: usize,
    mut f: impl FnMut(usize) -> Result<T, String>,
) -> Result<(f64, f64), String> {
    let mut v = Vec::with_capacity(reps);
    for i in 0..reps {
        let t = Instant::now();
        f(i)?;
        v.push(t.elapsed().as_secs_f64() * 1e3);
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let p = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    Ok((p(0.5), p(0.99)))
}

/// A page has `n` well-formed messages in ascending id order, incoming to
/// the heavy archive (or all with `peer`, if given).
fn check_page(p: &[crate::archive::Stored], n: usize, what: &str) -> Result<(), String> {
    check_page_with(p, n, what, None)
}

fn check_page_with(
    p: &[crate::archive::Stored],
    n: usize,
    what: &str,
    peer: Option<&str>,
) -> Result<(), String> {
    let sorted = p.windows(2).all(|w| w[0].id < w[1].id);
    let bad = p.iter().any(|m| {
        m.stanza.len() != crate::workload::STANZA_BYTES
            || m.origin.len() != 36
            || m.outgoing
            || peer.is_some_and(|x| x != m.peer)
    });
    if p.len() != n || !sorted || bad {
        let m = p.first().map(|m| {
            (
                m.id,
                m.peer.clone(),
                m.outgoing,
                m.origin.len(),
                m.stanza.len(),
            )
        });
        return Err(format!(
            "{what}: got {} messages, expected {n} well-formed (sorted {sorted}; first {m:?})",
            p.len()
        ));
    }
    Ok(())
}

fn one(engine: &str, o: &Opts) -> Result<serde_json::Value, String> {
    let dir = o.dir.join(engine);
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("== {engine}: {}", dir.display());
    let mut a = Archive::open(engines::open(engine, &dir)?)?;
    a.dedupe = !o.no_dedupe;
    let mut w = Workload::new(o.accounts, 13);

    // 1. chat
    let chat = phase(&mut a, &mut w, o.messages, o.batch, false)?;
    eprintln!(
        "   chat: {} appends in {:.1}s wall, {:.1} CPU-s",
        chat.appends, chat.wall, chat.cpu
    );
    // 2. settle
    let c0 = cpu::process();
    std::thread::sleep(Duration::from_secs(o.settle));
    let settle_cpu = cpu::process() - c0;
    let chat_disk = cpu::disk_bytes(&dir);
    // 3. heavy
    let heavy = phase(&mut a, &mut w, o.heavy, o.batch, true)?;
    eprintln!(
        "   heavy: {} appends in {:.1}s wall, {:.1} CPU-s",
        heavy.appends, heavy.wall, heavy.cpu
    );
    let c0 = cpu::process();
    std::thread::sleep(Duration::from_secs(o.settle));
    let heavy_settle_cpu = cpu::process() - c0;
    // 4. disk
    let total_appends = chat.appends + heavy.appends;
    let disk = cpu::disk_bytes(&dir);

    // 5. queries on the heavy archive
    let hc = *a.counters().get(&HEAVY).ok_or("no heavy archive")?;
    let n = 50;
    check_page(&a.page_first(HEAVY, n)?, n, "first")?;
    check_page(&a.page_last(HEAVY, n)?, n, "last")?;
    // Middle: after an id about halfway (ids are microseconds, roughly uniform).
    let mid = hc.first + (hc.last - hc.first) / 2;
    check_page(&a.page_after(HEAVY, mid, n)?, n, "middle")?;
    let peer = jid(7);
    check_page_with(&a.page_with_last(HEAVY, &peer, n)?, n, "with", Some(&peer))?;
    if a.count(HEAVY)? != hc.count || hc.count != o.heavy {
        return Err(format!("count {} != {}", a.count(HEAVY)?, o.heavy));
    }
    let span = hc.last - hc.first;
    let first = timed(o.reps, |_| a.page_first(HEAVY, n))?;
    let last = timed(o.reps, |_| a.page_last(HEAVY, n))?;
    let middle = timed(o.reps, |i| {
        a.page_after(
            HEAVY,
            hc.first + span / 4 + (span / 2) * i as u64 / o.reps as u64,
            n,
        )
    })?;
    let with = timed(o.reps, |i| {
        a.page_with_last(HEAVY, &jid(i as u32 % o.accounts), n)
    })?;
    let small_last = timed(o.reps, |i| a.page_last(i as u32 % o.accounts, n))?;
    let count = timed(o.reps, |_| a.count(HEAVY))?;
    let scan_count = timed(3, |_| a.scan_count(HEAVY))?;
    eprintln!("   queries: first {first:?} middle {middle:?} last {last:?} with {with:?} count {count:?} scan-count {scan_count:?} ms");

    // 6. reopen, in a fresh process (nothing of this one's engine left running)
    drop(a);
    let (reopen_ms, first_page_after_reopen_ms) = reopen_child(engine, &dir)?;
    eprintln!("   reopen {reopen_ms:.0} ms, first page after {first_page_after_reopen_ms:.1} ms");

    // 7. crash
    let crash = if o.no_crash {
        json!(null)
    } else {
        crash::test(engine, &dir, o.batch, o.accounts)?
    };
    eprintln!("   crash: {crash}");
    if !o.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let ms = |x: (f64, f64)| json!({"p50_ms": x.0, "p99_ms": x.1});
    Ok(json!({
        "engine": engine,
        "batch_entries": o.batch,
        "accounts": o.accounts,
        "dedupe": !o.no_dedupe,
        "chat": {
            "messages": o.messages, "appends": chat.appends, "cpu_s": chat.cpu, "wall_s": chat.wall,
            "appends_per_cpu_s": chat.appends as f64 / chat.cpu,
            "chat_msgs_per_cpu_s": chat.appends as f64 / 2.0 / chat.cpu,
            "appends_per_s": chat.appends as f64 / chat.wall,
            "fsyncs_per_s": (chat.appends as f64 / o.batch as f64) / chat.wall,
            "settle_cpu_s": settle_cpu,
            "appends_per_cpu_s_with_settle": chat.appends as f64 / (chat.cpu + settle_cpu),
            "disk_bytes": chat_disk, "disk_bytes_per_append": chat_disk as f64 / chat.appends as f64,
        },
        "heavy": {
            "appends": heavy.appends, "cpu_s": heavy.cpu, "wall_s": heavy.wall,
            "appends_per_cpu_s": heavy.appends as f64 / heavy.cpu, "settle_cpu_s": heavy_settle_cpu,
        },
        "disk_bytes": disk,
        "disk_bytes_per_append": disk as f64 / total_appends as f64,
        "stanza_bytes": crate::workload::STANZA_BYTES,
        "page50": {"first": ms(first), "middle": ms(middle), "last": ms(last), "with": ms(with), "small_archive_last": ms(small_last)},
        "count": ms(count),
        "scan_count": ms(scan_count),
        "heavy_archive_messages": hc.count,
        "reopen_ms": reopen_ms,
        "first_page_after_reopen_ms": first_page_after_reopen_ms,
        "crash": crash,
    }))
}

/// The `reopen` command: open, then the newest page of the heavy archive.
pub fn reopen_here(engine: &str, dir: &std::path::Path) -> Result<(), String> {
    let t = Instant::now();
    let a = Archive::open(engines::open(engine, dir)?)?;
    let open_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let n = a.page_last(HEAVY, 50)?.len();
    let page_ms = t.elapsed().as_secs_f64() * 1e3;
    println!(
        "{}",
        json!({"open_ms": open_ms, "first_page_ms": page_ms, "page_len": n})
    );
    Ok(())
}

/// Run `reopen` in a child process; (open ms, first page ms).
fn reopen_child(engine: &str, dir: &std::path::Path) -> Result<(f64, f64), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = std::process::Command::new(exe)
        .args(["reopen", "--engine", engine])
        .arg("--dir")
        .arg(dir)
        .output()
        .map_err(|e| format!("cannot run reopen: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "reopen failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("reopen output: {e}"))?;
    if v["page_len"] != 50 {
        return Err(format!("reopen: page of {} messages", v["page_len"]));
    }
    Ok((
        v["open_ms"].as_f64().unwrap_or(f64::NAN),
        v["first_page_ms"].as_f64().unwrap_or(f64::NAN),
    ))
}

pub fn run(o: &Opts) -> Result<(), String> {
    let mut rows = Vec::new();
    for e in o.engines.split(',') {
        if !engines::ENGINES.contains(&e) {
            return Err(format!("unknown engine {e:?}"));
        }
    }
    for e in o.engines.split(',') {
        let r = one(e, o)?;
        if let Some(p) = &o.json {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| e.to_string())?;
            writeln!(f, "{r}").map_err(|e| e.to_string())?;
        }
        println!("{r}");
        rows.push(r);
    }
    Ok(())
}
