//! What Rookery tells the admin about a connection it refuses or ends: every
//! stream error it sends, every failed TLS handshake, and bytes pipelined
//! after `<starttls/>`. Each is logged once, at info, with the peer's
//! address and the reason, so an admin can find out why a client or server
//! could not connect.
//!
//! Every connection (c2s on TCP, direct TLS, WebSocket and BOSH; s2s in
//! and out; components; HTTP) gets a compact id at accept, such as
//! `c2s-1a`: [`ConnLog`] carries it, and every line logged while one of
//! the connection's tasks runs names it (`conn=c2s-1a` in text,
//! `"conn":"c2s-1a"` in JSON), with the JID once [`bind`] recorded it.
//!
//! Invariants: a stream error is written only through [`stream_error`],
//! which logs it; callers do not log the same error again. Every task a
//! connection spawns runs under its [`ConnLog`] ([`ConnLog::current`]).

use std::fmt::Display;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::Instrument;

use crate::stream::StreamCondition;

/// The next connection number (ids are unique for the process's life).
static NEXT: AtomicU64 = AtomicU64::new(1);

/// A connection's log context: its id (`KIND-HEX`) and, once bound, its
/// JID, on every line logged by a future it [`run`](ConnLog::run)s.
#[derive(Clone)]
pub struct ConnLog(tracing::Span);

impl ConnLog {
    /// A new id for a connection of `kind` (`c2s`, `ws`, `bosh`, `s2s-in`,
    /// `s2s-out`, `comp`, `http`). The context has no parent: a stream a
    /// client's stanza opens (s2s out) gets its own id, not the client's.
    pub fn new(kind: &'static str) -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        // At error level, so that it exists whenever anything is logged.
        ConnLog(tracing::error_span!(
            target: "rookery::conn",
            parent: None,
            "conn",
            conn = %format_args!("{kind}-{n:x}"),
            jid = tracing::field::Empty
        ))
    }

    /// The context of the connection whose task is running (for the
    /// tasks it spawns); none outside a connection.
    pub fn current() -> Self {
        ConnLog(tracing::Span::current())
    }

    /// `f`'s result, with this context on every line it logs.
    pub fn in_scope<T>(&self, f: impl FnOnce() -> T) -> T {
        self.0.in_scope(f)
    }

    /// `fut`, with this context on every line it logs.
    pub fn run<F: Future>(&self, fut: F) -> impl Future<Output = F::Output> {
        fut.instrument(self.0.clone())
    }
}

/// Record the JID (or, for s2s and components, the domain) the running
/// connection is bound to: its later lines carry it.
pub fn bind(jid: &dyn Display) {
    tracing::Span::current().record("jid", tracing::field::display(jid));
}

/// The XML of a stream error (and the stream's end) to send to `peer` on a
/// stream of `kind` (`c2s`, `s2s in`, `component`), logged at info.
pub fn stream_error(
    kind: &str,
    peer: &dyn Display,
    condition: StreamCondition,
    text: Option<&str>,
) -> String {
    match text {
        Some(t) => tracing::info!(%peer, "{kind}: sending stream error {condition}: {t}"),
        None => tracing::info!(%peer, "{kind}: sending stream error {condition}"),
    }
    crate::stream::stream_error_xml(condition, text)
}

/// Log a TLS handshake that failed or timed out (and count it).
pub fn tls_failed(kind: &str, peer: &dyn Display, why: &dyn Display) {
    crate::metrics::tls_handshake(kind, false);
    tracing::info!(%peer, "{kind}: TLS handshake failed: {why}");
}

/// Whether the bytes a peer sent after `<starttls/>` (read before TLS
/// starts) may be dropped: only XML whitespace (go-xmpp clients end the
/// element with a newline). Anything else would be read as plaintext
/// inside the TLS stream (STARTTLS command injection): logged, refused.
pub fn starttls_leftover_ok(kind: &str, peer: &dyn Display, leftover: &[u8]) -> bool {
    if leftover
        .iter()
        .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
    {
        return true;
    }
    let shown: String = String::from_utf8_lossy(&leftover[..leftover.len().min(64)])
        .chars()
        .map(|c| if c.is_control() { '.' } else { c })
        .collect();
    tracing::info!(
        %peer,
        "{kind}: {} bytes sent after <starttls/> before TLS started (refused): {shown:?}",
        leftover.len()
    );
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_xml_whitespace_may_follow_starttls() {
        let p = "127.0.0.1:1";
        assert!(starttls_leftover_ok("c2s", &p, b""));
        assert!(starttls_leftover_ok("c2s", &p, b"\n"));
        assert!(starttls_leftover_ok("c2s", &p, b" \t\r\n "));
        assert!(!starttls_leftover_ok("c2s", &p, b"\n<iq type='get'/>"));
        assert!(!starttls_leftover_ok("c2s", &p, b"\x0b"));
        assert!(!starttls_leftover_ok("c2s", &p, "\u{a0}".as_bytes()));
    }
}
