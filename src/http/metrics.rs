//! `GET /metrics` (request handler `mod_prometheus`): the server's metrics
//! in the OpenMetrics text format, encoded by the `prometheus-client`
//! crate, for Prometheus, Grafana Agent, VictoriaMetrics and the like.
//!
//! The counters the hot paths keep live in [`crate::metrics`] (atomics);
//! what is cheap only once per scrape is computed here: the s2s and
//! component tables, accounts per host, the process's memory and CPU time,
//! the data directory's size on disk. That work runs on the blocking pool.
//!
//! Invariants: only clients `openmetrics_allow_ips` / `openmetrics_allow_cidr`
//! allow get an answer (else 403; the address is the one `trusted_proxies`
//! vouch for); every name and label listed in [`METRIC_NAMES`] is served,
//! always, even at zero (docs/admin.md lists the same names, and a test
//! holds the two together).

use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use super::{full, text, Body};
use crate::metrics::{MECHANISM_NAMES, METRICS, STANZA_NAMES, TLS_NAMES, TRANSPORT_NAMES};
use crate::server::Server;

/// Every metric family served, as it appears in the text (counters with
/// their `_total`).
#[cfg(test)]
pub const METRIC_NAMES: &[&str] = &[
    "rookery_c2s_sessions",
    "rookery_s2s_connections",
    "rookery_components",
    "rookery_stanzas_routed_total",
    "rookery_offline_messages_stored_total",
    "rookery_archive_messages_total",
    "rookery_archive_write_errors_total",
    "rookery_archive_write_seconds",
    "rookery_archive_queue_messages",
    "rookery_archive_backlog_bytes",
    "rookery_delivery_queue_drops_total",
    "rookery_auth_successes_total",
    "rookery_auth_failures_total",
    "rookery_tls_handshakes_total",
    "rookery_tls_handshake_failures_total",
    "rookery_process_resident_memory_bytes",
    "rookery_process_cpu_seconds_total",
    "rookery_uptime_seconds",
    "rookery_storage_size_bytes",
    "rookery_accounts",
    "rookery_cluster_nats_connected",
    "rookery_cluster_forward_failures_total",
    "rookery_cluster_duplicates_skipped_total",
];

/// What a scrape reads besides the atomics.
#[derive(Debug, Default)]
struct Snapshot {
    /// (direction, state, count).
    s2s: Vec<(&'static str, &'static str, i64)>,
    components: i64,
    accounts: Vec<(String, i64)>,
    rss_bytes: i64,
    cpu_seconds: f64,
    uptime_seconds: i64,
    storage_bytes: i64,
}

/// Answer a request for a metrics path.
pub async fn serve(
    server: &Arc<Server>,
    client: std::net::SocketAddr,
    req: &Request<Incoming>,
) -> Response<Body> {
    let config = server.config();
    if !config.openmetrics.allows(client.ip()) {
        tracing::info!(peer = %client, "/metrics refused: not in openmetrics_allow_ips / openmetrics_allow_cidr");
        return text(StatusCode::FORBIDDEN, "forbidden");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    }
    let for_snapshot = server.clone();
    let snapshot = tokio::task::spawn_blocking(move || snapshot(&for_snapshot))
        .await
        .unwrap_or_default();
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Exposition(snapshot)));
    let mut out = String::with_capacity(8192);
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        tracing::error!("encoding /metrics: {e}");
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot encode the metrics",
        );
    }
    let mut r = Response::new(full(out));
    r.headers_mut().insert(
        "content-type",
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
            .parse()
            .expect("header"),
    );
    r
}

fn snapshot(server: &Server) -> Snapshot {
    let config = server.config();
    let (in_neg, in_est) = server.s2s.incoming_counts();
    let (out_neg, out_est) = server.s2s.outgoing_counts();
    let accounts = config
        .hosts
        .iter()
        .map(|h| {
            let n = server.storage.count_users(h).unwrap_or(0);
            (h.clone(), n as i64)
        })
        .collect();
    let (rss_bytes, cpu_seconds) = process_usage();
    Snapshot {
        s2s: vec![
            ("in", "negotiating", in_neg as i64),
            ("in", "established", in_est as i64),
            ("out", "connecting", out_neg as i64),
            ("out", "established", out_est as i64),
        ],
        components: server.routes.linked().len() as i64,
        accounts,
        rss_bytes,
        cpu_seconds,
        uptime_seconds: server.uptime().as_secs() as i64,
        storage_bytes: disk_usage(&config.data_dir) as i64,
    }
}

/// Resident memory (bytes) and CPU time (user + system, seconds) of this
/// process, from `/proc/self` (zero where it cannot be read).
fn process_usage() -> (i64, f64) {
    // SAFETY: sysconf only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as i64;
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let rss = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<i64>().ok())
        .unwrap_or(0)
        * page;
    // Fields after the command name (which may hold spaces), from `state`:
    // utime and stime are the 12th and 13th.
    let cpu = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = &s[s.rfind(')')? + 1..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = f.get(11)?.parse().ok()?;
            let stime: f64 = f.get(12)?.parse().ok()?;
            Some((utime + stime) / ticks)
        })
        .unwrap_or(0.0);
    (rss, cpu)
}

/// Bytes allocated on disk to the files under `dir` (not following links).
fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = e.path().symlink_metadata() else {
                continue;
            };
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                total += meta.blocks() * 512;
            }
        }
    }
    total
}

/// The scrape's metrics, encoded when the registry is.
#[derive(Debug)]
struct Exposition(Snapshot);

type Fmt = Result<(), std::fmt::Error>;

fn gauges<'a>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    rows: impl IntoIterator<Item = (Vec<(&'a str, &'a str)>, i64)>,
) -> Fmt {
    let mut m = enc.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    for (labels, v) in rows {
        ConstGauge::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counters<'a>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Vec<(&'a str, &'a str)>, u64)>,
) -> Fmt {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in rows {
        ConstCounter::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn one<T>(v: T) -> [(Vec<(&'static str, &'static str)>, T); 1] {
    [(Vec::new(), v)]
}

impl Collector for Exposition {
    fn encode(&self, mut enc: DescriptorEncoder) -> Fmt {
        let s = &self.0;
        let m = &METRICS;
        gauges(
            &mut enc,
            "rookery_c2s_sessions",
            "Bound client sessions, by transport",
            None,
            TRANSPORT_NAMES
                .iter()
                .enumerate()
                .map(|(i, t)| (vec![("transport", *t)], m.c2s_sessions[i].load(Relaxed))),
        )?;
        gauges(
            &mut enc,
            "rookery_s2s_connections",
            "Server-to-server connections, by direction and state",
            None,
            s.s2s
                .iter()
                .map(|(d, st, n)| (vec![("direction", *d), ("state", *st)], *n)),
        )?;
        gauges(
            &mut enc,
            "rookery_components",
            "Connected external components (XEP-0114)",
            None,
            one(s.components),
        )?;
        counters(
            &mut enc,
            "rookery_stanzas_routed",
            "Stanzas handed to the router, by kind",
            STANZA_NAMES
                .iter()
                .enumerate()
                .map(|(i, k)| (vec![("kind", *k)], m.stanzas_routed[i].load(Relaxed))),
        )?;
        gauges(
            &mut enc,
            "rookery_cluster_nats_connected",
            "1 while this cluster node is connected to NATS (0 without a cluster)",
            None,
            one(m.cluster_nats_connected.load(Relaxed)),
        )?;
        counters(
            &mut enc,
            "rookery_cluster_forward_failures",
            "Cross-node lookups and hand-overs that failed (NATS down, no answer, owner gone): handled here",
            one(m.cluster_forward_failures.load(Relaxed)),
        )?;
        counters(
            &mut enc,
            "rookery_cluster_duplicates_skipped",
            "Messages not stored offline after a failed forward: the owner node had archived them",
            one(m.cluster_duplicates_skipped.load(Relaxed)),
        )?;
        counters(
            &mut enc,
            "rookery_offline_messages_stored",
            "Messages written to offline storage",
            one(m.offline_stored.load(Relaxed)),
        )?;
        counters(
            &mut enc,
            "rookery_archive_messages",
            "Messages written to the message archive (XEP-0313)",
            one(m.archived.load(Relaxed)),
        )?;
        counters(
            &mut enc,
            "rookery_archive_write_errors",
            "Archive writes and flushes that failed",
            one(m.archive_write_errors.load(Relaxed)),
        )?;
        let (sum, count, buckets) = m.archive_write_seconds.snapshot();
        let mut h = enc.encode_descriptor(
            "rookery_archive_write",
            "Time to write one batch of archived messages",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        h.encode_histogram::<prometheus_client::encoding::NoLabelSet>(sum, count, &buckets, None)?;
        gauges(
            &mut enc,
            "rookery_archive_queue_messages",
            "Messages waiting for the archive's next batch",
            None,
            one(m.archive_queue.load(Relaxed)),
        )?;
        gauges(
            &mut enc,
            "rookery_archive_backlog",
            "Archived messages queued or written and not yet flushed to disk",
            Some(&Unit::Bytes),
            one(m.archive_backlog_bytes.load(Relaxed)),
        )?;
        counters(
            &mut enc,
            "rookery_delivery_queue_drops",
            "Sessions ended because their delivery queue stayed full",
            one(m.delivery_drops.load(Relaxed)),
        )?;
        counters(
            &mut enc,
            "rookery_auth_successes",
            "Successful client authentications, by SASL mechanism",
            MECHANISM_NAMES
                .iter()
                .enumerate()
                .map(|(i, n)| (vec![("mechanism", *n)], m.auth_ok[i].load(Relaxed))),
        )?;
        counters(
            &mut enc,
            "rookery_auth_failures",
            "Failed client authentications, by SASL mechanism",
            MECHANISM_NAMES
                .iter()
                .enumerate()
                .map(|(i, n)| (vec![("mechanism", *n)], m.auth_failed[i].load(Relaxed))),
        )?;
        counters(
            &mut enc,
            "rookery_tls_handshakes",
            "TLS handshakes completed, by listener kind",
            TLS_NAMES
                .iter()
                .enumerate()
                .map(|(i, n)| (vec![("listener", *n)], m.tls_ok[i].load(Relaxed))),
        )?;
        counters(
            &mut enc,
            "rookery_tls_handshake_failures",
            "TLS handshakes that failed or timed out, by listener kind",
            TLS_NAMES
                .iter()
                .enumerate()
                .map(|(i, n)| (vec![("listener", *n)], m.tls_failed[i].load(Relaxed))),
        )?;
        gauges(
            &mut enc,
            "rookery_process_resident_memory",
            "Resident memory of the server process",
            Some(&Unit::Bytes),
            one(s.rss_bytes),
        )?;
        let mut cpu = enc.encode_descriptor(
            "rookery_process_cpu",
            "CPU time (user and system) used by the server process",
            Some(&Unit::Seconds),
            MetricType::Counter,
        )?;
        ConstCounter::new(s.cpu_seconds).encode(cpu.encode_family(&Vec::<(&str, &str)>::new())?)?;
        gauges(
            &mut enc,
            "rookery_uptime",
            "Time since the server started",
            Some(&Unit::Seconds),
            one(s.uptime_seconds),
        )?;
        gauges(
            &mut enc,
            "rookery_storage_size",
            "Disk space used by the files under data_dir",
            Some(&Unit::Bytes),
            one(s.storage_bytes),
        )?;
        gauges(
            &mut enc,
            "rookery_accounts",
            "Registered accounts, by served host",
            None,
            s.accounts
                .iter()
                .map(|(h, n)| (vec![("host", h.as_str())], *n)),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(s: Snapshot) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Exposition(s)));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        out
    }

    #[test]
    fn every_listed_family_is_served_and_nothing_else() {
        let text = encoded(Snapshot {
            accounts: vec![("example.org".into(), 3)],
            ..Snapshot::default()
        });
        let families: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| l.split(' ').next().unwrap())
            .collect();
        for name in METRIC_NAMES {
            let family = name.strip_suffix("_total").unwrap_or(name);
            assert!(families.contains(&family), "{name} missing in\n{text}");
        }
        assert_eq!(families.len(), METRIC_NAMES.len(), "{families:?}");
        assert!(
            text.contains("rookery_accounts{host=\"example.org\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("rookery_archive_write_seconds_bucket{le=\"+Inf\"}"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn process_usage_reads_proc() {
        let (rss, cpu) = process_usage();
        assert!(rss > 1 << 20, "{rss}");
        assert!(cpu >= 0.0);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), vec![1u8; 100_000]).unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::fs::write(dir.path().join("d/g"), vec![1u8; 100_000]).unwrap();
        assert!(disk_usage(dir.path()) >= 200_000);
    }
}
