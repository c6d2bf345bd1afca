//! What Rookery tells the admin about a connection it refuses or ends: every
//! stream error it sends, every failed TLS handshake, and bytes pipelined
//! after `<starttls/>`. Each is logged once, at info, with the peer's
//! address and the reason, so an admin can find out why a client or server
//! could not connect.
//!
//! Every connection (c2s on TCP, direct TLS, WebSocket and BOSH; s2s in
//! and out; components; HTTP) gets a compact id when it is accepted, such
//! as `c2s-1a`: every line logged while one of the connection's tasks runs
//! names it (`conn=c2s-1a` in text, `"conn":"c2s-1a"` in JSON), and its JID
//! (for s2s and components, the remote domain) once [`bind`] recorded it.
//! The id lives in a task-local [`ConnLog`] (an `Arc` of 8 bytes and the
//! JID), not a `tracing` span: a span per idle session cost more memory
//! (docs/benchmarks.md); [`WithConn`] adds it to a line only when one is
//! written.
//!
//! Invariants: a stream error is written only through [`stream_error`],
//! which logs it; callers do not log the same error again. Every task a
//! connection spawns runs under its [`ConnLog`] ([`ConnLog::current`]).

use std::fmt::Display;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::registry::LookupSpan;

use crate::stream::StreamCondition;

/// Connection kinds, in the id's top byte.
const KINDS: [&str; 7] = ["c2s", "ws", "bosh", "s2s-in", "s2s-out", "comp", "http"];

/// The next connection number (ids are unique for the process's life).
static NEXT: AtomicU64 = AtomicU64::new(1);

tokio::task_local! {
    static CONN: ConnLog;
}

/// A connection's log context, shared by its tasks: its id and, once
/// bound, its JID. `None` outside a connection.
#[derive(Clone)]
pub struct ConnLog(Option<Arc<Ctx>>);

struct Ctx {
    /// The kind's index in [`KINDS`] in the top byte, the number below.
    id: u64,
    jid: OnceLock<Box<str>>,
}

impl ConnLog {
    /// A new id for a connection of `kind` (one of `c2s`, `ws`, `bosh`,
    /// `s2s-in`, `s2s-out`, `comp`, `http`).
    pub fn new(kind: &'static str) -> Self {
        let k = KINDS.iter().position(|k| *k == kind).unwrap_or(0) as u64;
        let n = NEXT.fetch_add(1, Ordering::Relaxed) & ((1 << 56) - 1);
        ConnLog(Some(Arc::new(Ctx {
            id: k << 56 | n,
            jid: OnceLock::new(),
        })))
    }

    /// The context of the connection whose task is running (for the
    /// tasks it spawns); none outside a connection.
    pub fn current() -> Self {
        CONN.try_with(|c| c.clone()).unwrap_or(ConnLog(None))
    }

    /// `fut`, with this context on every line it logs.
    pub fn run<F: Future>(&self, fut: F) -> impl Future<Output = F::Output> {
        CONN.scope(self.clone(), fut)
    }

    /// `f`'s result, with this context on every line it logs.
    pub fn in_scope<T>(&self, f: impl FnOnce() -> T) -> T {
        CONN.sync_scope(self.clone(), f)
    }
}

impl Ctx {
    fn id(&self) -> impl Display + '_ {
        let kind = KINDS[(self.id >> 56) as usize % KINDS.len()];
        let n = self.id & ((1 << 56) - 1);
        std::fmt::from_fn(move |f| write!(f, "{kind}-{n:x}"))
    }
}

/// Record the JID (for s2s and components, the remote domain) the running
/// connection is bound to: its later lines carry it. The first one stays.
pub fn bind(jid: &dyn Display) {
    let _ = CONN.try_with(|c| {
        if let Some(c) = &c.0 {
            let _ = c.jid.set(jid.to_string().into_boxed_str());
        }
    });
}

/// A line format (`inner`) with the running connection's id and JID
/// added: `conn=… jid=…` at the end of a text line, `"conn"` and `"jid"`
/// keys in a JSON object. Lines outside a connection are `inner`'s as is.
pub struct WithConn<F> {
    pub inner: F,
    pub json: bool,
}

impl<S, N, F> FormatEvent<S, N> for WithConn<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let Some(c) = CONN.try_with(|c| c.0.clone()).ok().flatten() else {
            return self.inner.format_event(ctx, writer, event);
        };
        let mut line = String::with_capacity(256);
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        let jid = c.jid.get();
        if self.json {
            let Some(rest) = line.strip_prefix('{') else {
                return writer.write_str(&line);
            };
            write!(writer, "{{\"conn\":\"{}\",", c.id())?;
            if let Some(j) = jid {
                let quoted = serde_json::to_string(j).map_err(|_| std::fmt::Error)?;
                write!(writer, "\"jid\":{quoted},")?;
            }
            writer.write_str(rest)
        } else {
            let body = line.strip_suffix('\n').unwrap_or(&line);
            write!(writer, "{body} conn={}", c.id())?;
            if let Some(j) = jid {
                write!(writer, " jid={j}")?;
            }
            writer.write_char('\n')
        }
    }
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
    use std::sync::Mutex;

    /// The lines a subscriber with [`WithConn`] writes while `f` runs.
    fn logged(json: bool, f: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let out = buf.clone();
        let builder = tracing_subscriber::fmt()
            .with_writer(move || buf.clone())
            .with_ansi(false);
        if json {
            let inner = tracing_subscriber::fmt::format().json();
            let sub = builder
                .json()
                .event_format(WithConn { inner, json: true })
                .finish();
            tracing::subscriber::with_default(sub, f);
        } else {
            let inner = tracing_subscriber::fmt::format().with_ansi(false);
            let sub = builder
                .event_format(WithConn { inner, json: false })
                .finish();
            tracing::subscriber::with_default(sub, f);
        }
        let bytes = out.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn lines_of_a_connection_carry_its_id_and_then_its_jid() {
        let a = ConnLog::new("s2s-out");
        let b = ConnLog::new("comp");
        let log = logged(true, || {
            tracing::info!("outside");
            a.in_scope(|| {
                tracing::info!(peer = %"192.0.2.1:5269", "before");
                bind(&"example.org");
                bind(&"ignored.example");
                tracing::info!("after");
            });
            b.in_scope(|| tracing::warn!("component \"quoted\""));
        });
        let lines: Vec<serde_json::Value> = log
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert_eq!(lines.len(), 4, "{log}");
        assert!(lines[0].get("conn").is_none(), "{log}");
        let id = lines[1]["conn"].as_str().expect("conn");
        assert!(id.starts_with("s2s-out-"), "{id}");
        assert!(lines[1].get("jid").is_none(), "{log}");
        assert_eq!(lines[1]["fields"]["peer"], "192.0.2.1:5269");
        assert_eq!(lines[2]["conn"], id);
        assert_eq!(lines[2]["jid"], "example.org");
        assert_eq!(lines[2]["fields"]["message"], "after");
        let other = lines[3]["conn"].as_str().expect("conn");
        assert!(other.starts_with("comp-") && other != id, "{other}");
        assert_eq!(lines[3]["fields"]["message"], "component \"quoted\"");

        let text = logged(false, || {
            a.in_scope(|| tracing::info!(peer = %"192.0.2.1:5269", "text"));
            tracing::info!("outside");
        });
        let mut lines = text.lines();
        let first = lines.next().expect("line");
        assert!(
            first.ends_with(&format!(
                "text peer=192.0.2.1:5269 conn={id} jid=example.org"
            )),
            "{first}"
        );
        assert!(!lines.next().expect("line").contains("conn="), "{text}");
    }

    #[tokio::test]
    async fn spawned_tasks_keep_the_context() {
        let a = ConnLog::new("c2s");
        let log = a
            .run(async {
                let child = ConnLog::current();
                tokio::spawn(child.run(async {
                    bind(&"alice@example.org/r");
                }))
                .await
                .unwrap();
                logged(true, || tracing::info!("in the parent"))
            })
            .await;
        let v: serde_json::Value = serde_json::from_str(log.trim()).unwrap();
        assert!(v["conn"].as_str().unwrap().starts_with("c2s-"), "{v}");
        assert_eq!(v["jid"], "alice@example.org/r", "{v}");
    }

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
