//! Measurements: process CPU time and RSS from `/proc`, latency histograms,
//! and the one-line JSON report every scenario prints.
//!
//! CPU time is `utime + stime` from `/proc/PID/stat` in clock ticks, turned
//! into seconds with `sysconf(_SC_CLK_TCK)`. Processes named with `--watch
//! NAME=PID` are measured with their descendants (e.g. PostgreSQL's
//! postmaster and its backends): the sum over the processes alive at the
//! stop of what each used since the start (a process started in between
//! counts whole; one that ended in between is not counted). Work per server CPU-second
//! (e.g. messages per CPU-second) stays comparable on a noisy shared machine
//! where wall-clock rates do not.

use std::time::Instant;

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

/// One reading of a process's counters.
#[derive(Clone, Copy, Debug)]
pub struct ProcSample {
    /// utime + stime, clock ticks.
    pub cpu_ticks: u64,
    /// VmRSS, KiB.
    pub rss_kib: u64,
}

/// Clock ticks per second.
pub fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

fn cpu_ticks(stat: &str) -> Option<u64> {
    // The command name may contain spaces and parentheses: fields start
    // after the last ')'. Field 3 (state) is index 0, utime (14) index 11.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Reads `/proc/{pid}` (`"self"` for this process).
pub fn sample(pid: &str) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(ProcSample {
        cpu_ticks: cpu_ticks(&stat)?,
        rss_kib: rss_kib(&status)?,
    })
}

/// `--watch NAME=PID`.
pub fn parse_watch(s: &str) -> Result<(String, u32), String> {
    let (name, pid) = s
        .split_once('=')
        .ok_or_else(|| format!("--watch: {s:?} is not NAME=PID"))?;
    let pid = pid
        .trim()
        .parse()
        .map_err(|e| format!("--watch: {pid:?} is not a PID ({e})"))?;
    if name.is_empty() {
        return Err(format!("--watch: {s:?} has no name"));
    }
    Ok((name.to_string(), pid))
}

/// The processes of `--watch`, set once at start-up.
static WATCHED: std::sync::OnceLock<Vec<(String, u32)>> = std::sync::OnceLock::new();

/// Records the processes every [`Watch`] measures besides the server.
pub fn set_watched(w: Vec<(String, u32)>) {
    let _ = WATCHED.set(w);
}

/// (parent, CPU ticks) of every process in `/proc`.
fn all_procs() -> std::collections::HashMap<u32, (u32, u64)> {
    let mut m = std::collections::HashMap::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return m;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let ppid = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().nth(1)?.parse().ok());
        if let (Some(ppid), Some(t)) = (ppid, cpu_ticks(&stat)) {
            m.insert(pid, (ppid, t));
        }
    }
    m
}

/// CPU ticks of `root` and each of its descendants, by PID.
fn tree_ticks(root: u32) -> std::collections::HashMap<u32, u64> {
    let all = all_procs();
    let mut out = std::collections::HashMap::new();
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        if let Some(&(_, t)) = all.get(&p) {
            if out.insert(p, t).is_none() {
                todo.extend(all.iter().filter(|(_, v)| v.0 == p).map(|(k, _)| *k));
            }
        }
    }
    out
}

/// CPU and memory of the server (when its PID is known) and of this process,
/// from a start point.
pub struct Watch {
    watched0: Vec<std::collections::HashMap<u32, u64>>,
    pid: Option<u32>,
    server0: Option<ProcSample>,
    self0: Option<ProcSample>,
    t0: Instant,
}

/// What a [`Watch`] saw between start and stop.
#[derive(Clone, Debug, Default)]
pub struct Usage {
    /// Server CPU seconds used, when `--server-pid` was given.
    pub server_cpu_s: Option<f64>,
    /// Server VmRSS at start and stop, KiB.
    pub server_rss_kib: Option<(u64, u64)>,
    /// This process's CPU seconds.
    pub client_cpu_s: f64,
    /// This process's VmRSS at stop, KiB.
    pub client_rss_kib: u64,
    /// Wall-clock seconds.
    pub wall_s: f64,
    /// CPU seconds of each `--watch` process tree, by name.
    pub watched_cpu_s: Vec<(String, f64)>,
}

impl Watch {
    /// Starts watching (reads the counters now).
    pub fn start(pid: Option<u32>) -> Watch {
        let watched0 = WATCHED.get().map_or(Vec::new(), |w| {
            w.iter().map(|(_, p)| tree_ticks(*p)).collect()
        });
        Watch {
            watched0,
            pid,
            server0: pid.and_then(|p| sample(&p.to_string())),
            self0: sample("self"),
            t0: Instant::now(),
        }
    }

    /// Reads the counters again.
    pub fn stop(&self) -> Usage {
        let tck = clk_tck();
        let server1 = self.pid.and_then(|p| sample(&p.to_string()));
        let self1 = sample("self");
        let (server_cpu_s, server_rss_kib) = match (self.server0, server1) {
            (Some(a), Some(b)) => (
                Some(b.cpu_ticks.saturating_sub(a.cpu_ticks) as f64 / tck),
                Some((a.rss_kib, b.rss_kib)),
            ),
            _ => (None, None),
        };
        let (client_cpu_s, client_rss_kib) = match (self.self0, self1) {
            (Some(a), Some(b)) => (
                b.cpu_ticks.saturating_sub(a.cpu_ticks) as f64 / tck,
                b.rss_kib,
            ),
            _ => (0.0, 0),
        };
        let watched_cpu_s = WATCHED
            .get()
            .into_iter()
            .flatten()
            .zip(&self.watched0)
            .map(|((name, pid), t0)| {
                let ticks: u64 = tree_ticks(*pid)
                    .iter()
                    .map(|(p, t)| t.saturating_sub(t0.get(p).copied().unwrap_or(0)))
                    .sum();
                (name.clone(), ticks as f64 / tck)
            })
            .collect();
        Usage {
            watched_cpu_s,
            server_cpu_s,
            server_rss_kib,
            client_cpu_s,
            client_rss_kib,
            wall_s: self.t0.elapsed().as_secs_f64(),
        }
    }
}

impl Usage {
    /// Adds the usage fields (prefixed, e.g. `""` or `"stored_"`) to a report.
    pub fn put(&self, r: &mut Map<String, Value>, prefix: &str) {
        r.insert(format!("{prefix}wall_s"), round(self.wall_s, 3));
        r.insert(format!("{prefix}client_cpu_s"), round(self.client_cpu_s, 2));
        r.insert(
            format!("{prefix}server_cpu_s"),
            self.server_cpu_s.map_or(Value::Null, |v| round(v, 2)),
        );
        r.insert(
            format!("{prefix}server_rss_kib"),
            self.server_rss_kib.map_or(Value::Null, |(_, b)| json!(b)),
        );
        r.insert(
            format!("{prefix}client_rss_kib"),
            json!(self.client_rss_kib),
        );
        if !self.watched_cpu_s.is_empty() {
            let m: Map<String, Value> = self
                .watched_cpu_s
                .iter()
                .map(|(n, c)| (n.clone(), round(*c, 3)))
                .collect();
            r.insert(format!("{prefix}watched_cpu_s"), Value::Object(m));
        }
    }

    /// `work / server CPU seconds`, or null without a PID or CPU time.
    pub fn per_cpu_s(&self, work: f64) -> Value {
        match self.server_cpu_s {
            Some(c) if c > 0.0 => round(work / c, 1),
            _ => Value::Null,
        }
    }
}

/// Rounds for the report.
pub fn round(v: f64, digits: i32) -> Value {
    let m = 10f64.powi(digits);
    json!((v * m).round() / m)
}

/// A latency histogram in microseconds (1 µs to 1 h, 3 significant digits).
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// Adds `{name}_p50_ms`, `_p99_ms`, `_p999_ms`, `_max_ms` from a µs histogram.
pub fn put_latency(r: &mut Map<String, Value>, name: &str, h: &Histogram<u64>, p999: bool) {
    let ms = |us: u64| round(us as f64 / 1000.0, 3);
    if h.is_empty() {
        r.insert(format!("{name}_p50_ms"), Value::Null);
        r.insert(format!("{name}_p99_ms"), Value::Null);
        if p999 {
            r.insert(format!("{name}_p999_ms"), Value::Null);
        }
        r.insert(format!("{name}_max_ms"), Value::Null);
        return;
    }
    r.insert(format!("{name}_p50_ms"), ms(h.value_at_quantile(0.5)));
    r.insert(format!("{name}_p99_ms"), ms(h.value_at_quantile(0.99)));
    if p999 {
        r.insert(format!("{name}_p999_ms"), ms(h.value_at_quantile(0.999)));
    }
    r.insert(format!("{name}_max_ms"), ms(h.max()));
}

/// The 1, 5 and 15 minute load averages: how busy the machine was.
fn loadavg() -> Value {
    let Ok(s) = std::fs::read_to_string("/proc/loadavg") else {
        return Value::Null;
    };
    let v: Vec<f64> = s
        .split_whitespace()
        .take(3)
        .filter_map(|x| x.parse().ok())
        .collect();
    json!(v)
}

/// The clients' transport (`tcp` or `ws`), set once at start-up.
static TRANSPORT: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

/// Records the transport every report names (`transport`).
pub fn set_transport(t: &'static str) {
    let _ = TRANSPORT.set(t);
}

/// Prints the report as one JSON line on stdout, with the clients'
/// transport (`transport`, when set) and the machine's load averages at the
/// end of the run (`loadavg`).
pub fn print_json(mut r: Map<String, Value>) {
    if let Some(t) = TRANSPORT.get() {
        r.insert("transport".into(), json!(t));
    }
    r.insert("loadavg".into(), loadavg());
    println!("{}", Value::Object(r));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat_with_odd_names() {
        let s = "123 (a b) c)) S 1 2 3 4 5 6 7 8 9 10 111 222 13 14 15";
        assert_eq!(cpu_ticks(s), Some(333));
        assert_eq!(rss_kib("Name:\tx\nVmRSS:\t  4242 kB\n"), Some(4242));
    }

    #[test]
    fn watch_option_and_own_tree() {
        assert_eq!(parse_watch("nats=42"), Ok(("nats".to_string(), 42)));
        assert!(parse_watch("nats").is_err());
        assert!(parse_watch("=3").is_err());
        assert!(parse_watch("pg=x").is_err());
        let me = std::process::id();
        assert!(tree_ticks(me).contains_key(&me));
    }

    #[test]
    fn reads_self() {
        let s = sample("self").expect("own /proc entry");
        assert!(s.rss_kib > 0);
    }
}
