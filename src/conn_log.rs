//! What Rookery tells the admin about a connection it refuses or ends: every
//! stream error it sends, every failed TLS handshake, and bytes pipelined
//! after `<starttls/>`. Each is logged once, at info, with the peer's
//! address and the reason, so an admin can find out why a client or server
//! could not connect.
//!
//! Invariant: a stream error is written only through [`stream_error`],
//! which logs it; callers do not log the same error again.

use std::fmt::Display;

use crate::stream::StreamCondition;

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
