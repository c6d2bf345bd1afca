//! The writer task of a bound session: drains the session's bounded queue,
//! serialises stanzas in batches into a buffer that lives only while a batch
//! is written (an idle session holds none), and closes the
//! stream (with a stream error when asked) at the end.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use xep_support::ns;

use crate::router::{Outgoing, SessionHandle};

/// A write that does not finish in this time means a dead or stuck peer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes batched before a write.
const BATCH: usize = 16 * 1024;

/// The XML of a stream error followed by the stream's end.
pub fn stream_error_xml(condition: &str, text: Option<&str>) -> String {
    let mut s = format!("<stream:error><{condition} xmlns='{}'/>", ns::STREAM_ERRORS);
    if let Some(t) = text {
        s.push_str(&format!(
            "<text xmlns='{}' xml:lang='en'>{}</text>",
            ns::STREAM_ERRORS,
            xep_support::element::escape(t)
        ));
    }
    s.push_str("</stream:error></stream:stream>");
    s
}

async fn write(w: &mut (impl AsyncWrite + Unpin), bytes: &[u8]) -> bool {
    matches!(
        tokio::time::timeout(WRITE_TIMEOUT, async {
            w.write_all(bytes).await?;
            w.flush().await
        })
        .await,
        Ok(Ok(()))
    )
}

/// Run until the queue closes, a Close arrives, or the peer stops reading.
/// Returns the messages still queued then, so the caller can route them
/// elsewhere (another resource, or offline storage) instead of losing them.
pub async fn run<W: AsyncWrite + Unpin>(
    mut w: W,
    mut rx: mpsc::Receiver<Outgoing>,
    handle: Arc<SessionHandle>,
) -> Vec<xep_support::element::Element> {
    let mut buf = String::new();
    let mut close: Option<Option<&'static str>> = None;
    let mut acks = Vec::new();
    'outer: while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(item) = next.take() {
            match item {
                Outgoing::Stanza(el) => el.write_to(&mut buf, ns::CLIENT),
                Outgoing::Close(cond) => {
                    close = Some(cond.map(|c| *c));
                    break;
                }
                Outgoing::Ack(tx) => {
                    acks.push(tx);
                    break;
                }
            }
            if buf.len() >= BATCH {
                break;
            }
            next = rx.try_recv().ok();
        }
        if !buf.is_empty() {
            if !write(&mut w, buf.as_bytes()).await {
                break 'outer;
            }
            // Give the buffer back: idle sessions should cost no write buffer.
            buf = String::new();
        }
        for ack in acks.drain(..) {
            let _ = ack.send(());
        }
        if close.is_some() {
            break;
        }
    }
    let tail = match close {
        Some(Some(cond)) => stream_error_xml(cond, None),
        _ => "</stream:stream>".to_string(),
    };
    let _ = write(&mut w, tail.as_bytes()).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), w.shutdown()).await;
    // Wake the reader in case the session is ending from this side.
    handle.stop.notify_one();
    rx.close();
    let mut leftover = Vec::new();
    while let Ok(item) = rx.try_recv() {
        if let Outgoing::Stanza(el) = item {
            if el.name == "message" {
                leftover.push(*el);
            }
        }
    }
    leftover
}
