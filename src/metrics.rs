//! The server's event counters for `/metrics` (OpenMetrics): what happened
//! since the start (logins, failures, stanzas, handshakes, archive writes)
//! and a few gauges the hot paths keep (sessions per transport, the
//! archive's queue). `crate::http::metrics` reads them at a scrape and adds
//! what it can compute then (s2s and component tables, accounts, memory,
//! disk).
//!
//! A leaf: it imports nothing from the crate, so the transports, the router
//! and storage can all count here. Invariants: recording is one relaxed
//! atomic add or store into a fixed array (no lock, no allocation, no
//! label strings built per event); labels are indexes into the `*_NAMES`
//! tables, so the set of series is fixed and small.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// The c2s transports, as the `transport` label.
pub const TRANSPORT_NAMES: [&str; 4] = ["tcp", "tls", "websocket", "bosh"];
/// A client's transport: an index into [`TRANSPORT_NAMES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// The c2s port (plain, then STARTTLS).
    Tcp = 0,
    /// A direct-TLS c2s port (XEP-0368).
    Tls = 1,
    /// RFC 7395 on the HTTP listener.
    WebSocket = 2,
    /// XEP-0206 on the HTTP listener.
    Bosh = 3,
}

/// Routed stanza kinds, as the `kind` label.
pub const STANZA_NAMES: [&str; 4] = ["message", "presence", "iq", "other"];
/// SASL mechanisms counted by name (anything else is `other`).
pub const MECHANISM_NAMES: [&str; 9] = [
    "SCRAM-SHA-256-PLUS",
    "SCRAM-SHA-1-PLUS",
    "SCRAM-SHA-256",
    "SCRAM-SHA-1",
    "PLAIN",
    "HT-SHA-256-NONE",
    "HT-SHA-256-EXPR",
    "HT-SHA-256-ENDP",
    "other",
];
/// Where a TLS handshake was served, as the `listener` label.
pub const TLS_NAMES: [&str; 4] = ["c2s", "s2s", "component", "http"];
/// Upper bounds (seconds) of the archive write latency buckets.
pub const LATENCY_BOUNDS: [f64; 10] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// A histogram kept in atomics: cumulative counts are made at a scrape.
pub struct AtomicHistogram {
    /// Per bucket of [`LATENCY_BOUNDS`], plus one for `+Inf`.
    buckets: [AtomicU64; LATENCY_BOUNDS.len() + 1],
    sum_micros: AtomicU64,
}

impl AtomicHistogram {
    const fn new() -> Self {
        AtomicHistogram {
            buckets: [const { AtomicU64::new(0) }; LATENCY_BOUNDS.len() + 1],
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Record one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BOUNDS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BOUNDS.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros().min(u64::MAX as u128) as u64, Relaxed);
    }

    /// (sum in seconds, count, per-bucket counts with their upper bounds;
    /// the last bound is infinity). Per bucket, not cumulative: the
    /// encoder adds them up.
    pub fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let out: Vec<(f64, u64)> = self
            .buckets
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let bound = LATENCY_BOUNDS.get(i).copied().unwrap_or(f64::INFINITY);
                (bound, b.load(Relaxed))
            })
            .collect();
        let total: u64 = out.iter().map(|(_, n)| n).sum();
        let sum = self.sum_micros.load(Relaxed) as f64 / 1e6;
        (sum, total, out)
    }
}

const fn zeros<const N: usize>() -> [AtomicU64; N] {
    [const { AtomicU64::new(0) }; N]
}

/// Every counter and hot-path gauge of the process.
pub struct Metrics {
    /// Bound c2s sessions per transport (gauge).
    pub c2s_sessions: [AtomicI64; TRANSPORT_NAMES.len()],
    /// Stanzas handed to the router, per kind.
    pub stanzas_routed: [AtomicU64; STANZA_NAMES.len()],
    /// Messages written to offline storage.
    pub offline_stored: AtomicU64,
    /// Messages written to the archive (XEP-0313), per applied batch.
    pub archived: AtomicU64,
    /// Archive batches that failed to be written, and flushes that failed.
    pub archive_write_errors: AtomicU64,
    /// Time to write one archive batch.
    pub archive_write_seconds: AtomicHistogram,
    /// Messages queued for the archive's next batch (gauge).
    pub archive_queue: AtomicI64,
    /// Bytes queued or written and not yet flushed (gauge).
    pub archive_backlog_bytes: AtomicI64,
    /// Sessions ended because their delivery queue stayed full.
    pub delivery_drops: AtomicU64,
    /// Successful SASL authentications per mechanism.
    pub auth_ok: [AtomicU64; MECHANISM_NAMES.len()],
    /// Failed SASL authentications per mechanism.
    pub auth_failed: [AtomicU64; MECHANISM_NAMES.len()],
    /// Completed TLS handshakes per listener kind.
    pub tls_ok: [AtomicU64; TLS_NAMES.len()],
    /// Failed or timed-out TLS handshakes per listener kind.
    pub tls_failed: [AtomicU64; TLS_NAMES.len()],
    /// 1 while this node of a cluster is connected to NATS (gauge).
    pub cluster_nats_connected: AtomicI64,
    /// Session-table lookups and hand-overs to another node that failed
    /// (no answer in time, no responders, NATS down): handled here.
    pub cluster_forward_failures: AtomicU64,
    /// Messages of such forwards not stored offline because the owner had
    /// archived them already (their origin-id is in the archive).
    pub cluster_duplicates_skipped: AtomicU64,
}

/// The process's metrics.
pub static METRICS: Metrics = Metrics {
    c2s_sessions: [const { AtomicI64::new(0) }; TRANSPORT_NAMES.len()],
    stanzas_routed: zeros(),
    offline_stored: AtomicU64::new(0),
    archived: AtomicU64::new(0),
    archive_write_errors: AtomicU64::new(0),
    archive_write_seconds: AtomicHistogram::new(),
    archive_queue: AtomicI64::new(0),
    archive_backlog_bytes: AtomicI64::new(0),
    delivery_drops: AtomicU64::new(0),
    auth_ok: zeros(),
    auth_failed: zeros(),
    tls_ok: zeros(),
    tls_failed: zeros(),
    cluster_nats_connected: AtomicI64::new(0),
    cluster_forward_failures: AtomicU64::new(0),
    cluster_duplicates_skipped: AtomicU64::new(0),
};

/// Counts one bound c2s session for as long as it lives.
#[derive(Debug)]
pub struct SessionGauge(Transport);

impl SessionGauge {
    /// A session on `transport` was bound.
    pub fn new(transport: Transport) -> SessionGauge {
        METRICS.c2s_sessions[transport as usize].fetch_add(1, Relaxed);
        SessionGauge(transport)
    }
}

impl Drop for SessionGauge {
    fn drop(&mut self) {
        METRICS.c2s_sessions[self.0 as usize].fetch_sub(1, Relaxed);
    }
}

/// One stanza routed; `name` is its element name.
pub fn stanza_routed(name: &str) {
    let i = match name {
        "message" => 0,
        "presence" => 1,
        "iq" => 2,
        _ => 3,
    };
    METRICS.stanzas_routed[i].fetch_add(1, Relaxed);
}

fn mechanism_index(name: &str) -> usize {
    MECHANISM_NAMES[..MECHANISM_NAMES.len() - 1]
        .iter()
        .position(|m| *m == name)
        .unwrap_or(MECHANISM_NAMES.len() - 1)
}

/// One SASL exchange ended: `ok` when it authenticated.
pub fn auth(mechanism: &str, ok: bool) {
    let table = if ok {
        &METRICS.auth_ok
    } else {
        &METRICS.auth_failed
    };
    table[mechanism_index(mechanism)].fetch_add(1, Relaxed);
}

/// One TLS handshake served; `kind` as the connection logs name it (`c2s`,
/// `s2s in`, `component`, `http`).
pub fn tls_handshake(kind: &str, ok: bool) {
    let i = match kind {
        "c2s" => 0,
        k if k.starts_with("s2s") => 1,
        "component" => 2,
        _ => 3,
    };
    let table = if ok {
        &METRICS.tls_ok
    } else {
        &METRICS.tls_failed
    };
    table[i].fetch_add(1, Relaxed);
}

/// One message stored offline.
pub fn offline_stored() {
    METRICS.offline_stored.fetch_add(1, Relaxed);
}

/// This node's connection to NATS went up or down.
pub fn cluster_nats_connected(up: bool) {
    METRICS.cluster_nats_connected.store(i64::from(up), Relaxed);
}

/// A stanza for another node's session was not taken there.
pub fn cluster_forward_failed() {
    METRICS.cluster_forward_failures.fetch_add(1, Relaxed);
}

/// A message was not stored offline: its owner node had archived it.
pub fn cluster_duplicate_skipped() {
    METRICS.cluster_duplicates_skipped.fetch_add(1, Relaxed);
}

/// A session ended because its queue stayed full.
pub fn delivery_dropped() {
    METRICS.delivery_drops.fetch_add(1, Relaxed);
}

/// An archive batch of `n` messages was written in `took` (or failed).
pub fn archive_batch(n: usize, took: Duration, ok: bool) {
    METRICS.archive_write_seconds.observe(took);
    if ok {
        METRICS.archived.fetch_add(n as u64, Relaxed);
    } else {
        METRICS.archive_write_errors.fetch_add(1, Relaxed);
    }
}

/// A flush of archived messages to disk failed (their senders are told).
pub fn archive_flush_failed() {
    METRICS.archive_write_errors.fetch_add(1, Relaxed);
}

/// The archive's queue now: messages waiting for a batch, bytes unflushed.
pub fn archive_queue(messages: usize, backlog_bytes: usize) {
    METRICS.archive_queue.store(messages as i64, Relaxed);
    METRICS
        .archive_backlog_bytes
        .store(backlog_bytes as i64, Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_count_each_observation_once() {
        let h = AtomicHistogram::new();
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(20));
        h.observe(Duration::from_secs(3));
        let (sum, count, buckets) = h.snapshot();
        assert_eq!(count, 3);
        assert!((sum - 3.0205).abs() < 1e-9, "{sum}");
        assert_eq!(buckets.len(), LATENCY_BOUNDS.len() + 1);
        assert_eq!(buckets[0], (0.001, 1));
        assert_eq!(buckets[4], (0.025, 1));
        assert_eq!(*buckets.last().unwrap(), (f64::INFINITY, 1));
        assert_eq!(buckets.iter().map(|b| b.1).sum::<u64>(), 3);
    }

    #[test]
    fn labels_map_to_fixed_indexes() {
        assert_eq!(mechanism_index("PLAIN"), 4);
        assert_eq!(mechanism_index("X-OAUTH2"), MECHANISM_NAMES.len() - 1);
        assert_eq!(mechanism_index("other"), MECHANISM_NAMES.len() - 1);
    }
}
