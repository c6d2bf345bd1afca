//! The writer task of a bound session: drains the session's bounded queue,
//! serialises stanzas in batches into a buffer that lives only while a batch
//! is written (an idle session holds none), and closes the
//! stream (with a stream error when asked) at the end. How each element,
//! the stream's end and an error are written is the connection's
//! [`Framing`] (an RFC 6120 stream, or RFC 7395 WebSocket messages).
//!
//! With XEP-0198 on, every stanza written moves (no copy) into the session's
//! unacknowledged queue, an `<r/>` follows each batch when no request is
//! outstanding, and an `<r/>` left unanswered for `ack_timeout` counts as a
//! dead connection. With XEP-0352 `<inactive/>`, presence updates,
//! chat-state-only messages (the latest per sender) and PEP notifications
//! (the latest per sender and node) are held here and written before the
//! next other message, or on `<active/>`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;

use crate::queue::Receiver;
use xep_support::client_state::{ClientState, MAX_HELD};
use xep_support::element::Element;
use xep_support::ns;

use super::framing::Framing;
use crate::sessions::{Outgoing, SessionHandle};
use crate::stream::StreamCondition;

/// A write that does not finish in this time means a dead or stuck peer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes batched before a write.
const BATCH: usize = 16 * 1024;

/// Write `bytes` and flush, within [`WRITE_TIMEOUT`]; false if that failed.
/// Boxed: the write's future (with its timer, about 200 bytes) exists only
/// while a write is under way, instead of enlarging every idle session's
/// writer task.
fn write<'a, W: AsyncWrite + Unpin + Send>(
    w: &'a mut W,
    bytes: &'a [u8],
) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + 'a>> {
    Box::pin(async move {
        matches!(
            tokio::time::timeout(WRITE_TIMEOUT, async {
                w.write_all(bytes).await?;
                w.flush().await
            })
            .await,
            Ok(Ok(()))
        )
    })
}

/// How the writer ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    /// The stream was closed (asked to, or the queue closed).
    Closed,
    /// The connection is gone or presumed dead (write failed, ack timeout,
    /// or the session asked to detach): nothing more was written.
    Lost,
}

/// What the writer needs to know besides its queue.
pub struct Settings {
    pub csi: Option<ClientState>,
    pub ack_timeout: Option<Duration>,
    pub max_ack_queue: Option<u64>,
    /// After a resumption: `<resumed/>`, written first, followed by the
    /// unacknowledged stanzas again.
    pub resumed: Option<Element>,
    /// The transport's cork ([`super::cork`]), put back in at the end so
    /// the stream's end and the TLS close_notify leave in one write.
    pub cork: Option<super::cork::Cork>,
    /// How elements, the stream's end and errors are framed.
    pub framing: Framing,
}

/// Stanzas held back while the client is inactive (XEP-0352).
#[derive(Default)]
struct Held {
    // Boxed as they come from the queue and go on to the unacked queue: the
    // element moves as one pointer and is never reallocated.
    #[allow(clippy::vec_box)]
    items: Vec<(HoldKey, Box<Element>)>,
}

impl Held {
    /// Whether `el` may wait while the client is inactive, and if so what
    /// it replaces: an older held stanza with the same key.
    fn holdable(csi: &ClientState, el: &Element) -> Option<HoldKey> {
        match el.name.as_str() {
            "presence" => (csi.queue_presence
                && matches!(el.attr("type"), None | Some("unavailable")))
            .then_some(HoldKey::Presence),
            "message" if el.attr("type") == Some("error") => None,
            "message" => {
                el.child_elements().next()?;
                if csi.queue_chat_states && el.child_elements().all(|c| c.ns == ns::CHATSTATES) {
                    return Some(HoldKey::ChatState);
                }
                // A PEP notification: a pubsub#event payload (with at most a
                // delay stamp beside it), keyed by its node.
                if !csi.queue_pep
                    || !el
                        .child_elements()
                        .all(|c| c.ns == ns::PUBSUB_EVENT || c.ns == ns::DELAY)
                {
                    return None;
                }
                let event = el.child_elements().find(|c| c.ns == ns::PUBSUB_EVENT)?;
                let node = event.child_elements().next()?.attr("node")?;
                Some(HoldKey::Pep(node.to_string()))
            }
            _ => None,
        }
    }

    /// Hold `el`, replacing an older one with the same key from the same sender.
    fn hold(&mut self, key: HoldKey, el: Box<Element>) {
        let from = el.attr("from").unwrap_or("");
        self.items
            .retain(|(k, h)| !(*k == key && h.attr("from").unwrap_or("") == from));
        self.items.push((key, el));
    }
}

/// What a held stanza replaces when a newer one comes from the same sender.
#[derive(PartialEq, Eq)]
enum HoldKey {
    Presence,
    ChatState,
    /// A PEP notification for this node.
    Pep(String),
}

/// Run until the queue closes, a Close arrives, the peer stops reading, or
/// the session asks to detach. Returns the queue (so the session can route
/// what is left in it, or keep it for a resumption) and how it ended.
pub async fn run<W: AsyncWrite + Unpin + Send>(
    mut w: W,
    mut rx: Receiver<Outgoing>,
    handle: Arc<SessionHandle>,
    detach: Arc<Notify>,
    mut settings: Box<Settings>,
) -> (Receiver<Outgoing>, Exit) {
    let mut buf = String::new();
    let mut close: Option<Option<Box<crate::sessions::StreamErrorOut>>> = None;
    let mut acks: Vec<tokio::sync::oneshot::Sender<()>> = Vec::new();
    let mut held = Held::default();
    let framing = settings.framing;
    if let Some(resumed) = settings.resumed.take() {
        framing.write(&resumed, &mut buf);
        if let Some(sm) = handle.sm.get() {
            let sm = sm.lock().unwrap_or_else(|e| e.into_inner());
            for el in &sm.unacked {
                framing.write(el, &mut buf);
            }
        }
    }
    let exit = 'outer: loop {
        if !buf.is_empty() {
            request_ack(&handle, framing, &mut buf);
            // A resumption elsewhere must not wait for a write to a dead peer.
            let ok = tokio::select! {
                ok = write(&mut w, buf.as_bytes()) => ok,
                _ = detach.notified() => false,
            };
            if !ok {
                break 'outer Exit::Lost;
            }
            // Give the buffer back: idle sessions should cost no write buffer.
            buf = String::new();
        }
        for ack in acks.drain(..) {
            let _ = ack.send(());
        }
        if close.is_some() {
            break Exit::Closed;
        }
        let deadline = ack_deadline(&handle, settings.ack_timeout);
        let first = tokio::select! {
            item = rx.recv() => match item {
                Some(item) => item,
                None => break Exit::Closed,
            },
            _ = detach.notified() => break Exit::Lost,
            _ = sleep_until(deadline), if deadline.is_some() => {
                if ack_deadline(&handle, settings.ack_timeout).is_some_and(|d| d <= Instant::now()) {
                    tracing::info!(jid = %handle.jid, "no answer to <r/> in time; connection presumed dead");
                    break Exit::Lost;
                }
                continue;
            }
        };
        let mut next = Some(first);
        while let Some(item) = next.take() {
            match item {
                Outgoing::Stanza(el) => {
                    let inactive = handle
                        .csi_inactive
                        .load(std::sync::atomic::Ordering::Relaxed);
                    let key = match &settings.csi {
                        Some(csi) if inactive => Held::holdable(csi, &el),
                        _ => None,
                    };
                    match key {
                        Some(key) => {
                            held.hold(key, el);
                            if held.items.len() > MAX_HELD {
                                flush_held(&handle, framing, &mut held, &mut buf);
                            }
                        }
                        None => {
                            // A message wakes the client: what was held comes
                            // first, so each sender's stanzas stay in order.
                            // Iqs and subscription presence pass on their own.
                            if el.name == "message" {
                                flush_held(&handle, framing, &mut held, &mut buf);
                            }
                            write_stanza(&handle, framing, el, &mut buf);
                        }
                    }
                    if over_ack_queue(&handle, settings.max_ack_queue) {
                        // Logged (once) with the stream error below.
                        close = Some(Some(Box::new((
                            StreamCondition::PolicyViolation,
                            Some("too many unacknowledged stanzas".into()),
                        ))));
                        break;
                    }
                }
                Outgoing::Nonza(el) => framing.write(&el, &mut buf),
                Outgoing::SmEnabled(el) => {
                    framing.write(&el, &mut buf);
                    if let Some(sm) = handle.sm.get() {
                        sm.lock().unwrap_or_else(|e| e.into_inner()).counting = true;
                    }
                }
                Outgoing::Flush => flush_held(&handle, framing, &mut held, &mut buf),
                Outgoing::Close(cond) => {
                    close = Some(cond);
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
    };
    if exit == Exit::Lost {
        // Held stanzas were never written: keep them for a resumption like
        // the unacknowledged ones (they are counted when written then).
        if let Some(sm) = handle.sm.get() {
            let mut sm = sm.lock().unwrap_or_else(|e| e.into_inner());
            if sm.counting && sm.id.is_some() {
                sm.unacked.extend(held.items.drain(..).map(|(_, el)| el));
            }
        }
        return (rx, Exit::Lost);
    }
    flush_held(&handle, framing, &mut held, &mut buf);
    let tail = match close {
        Some(Some(err)) => {
            let peer: &dyn std::fmt::Display = match handle.origin.get() {
                Some((addr, _)) => addr,
                None => &"?",
            };
            let kind = format!("c2s {}", handle.jid);
            framing.error(&kind, peer, err.0, err.1.as_deref())
        }
        _ => framing.close(),
    };
    buf.push_str(&tail);
    if let Some(cork) = &settings.cork {
        cork.recork();
    }
    let _ = write(&mut w, buf.as_bytes()).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), w.shutdown()).await;
    (rx, Exit::Closed)
}

/// Sleep until `deadline`, if any (the timer lives on the heap only while
/// it runs, so it does not enlarge the writer's task).
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => Box::pin(tokio::time::sleep_until(d.into())).await,
        None => std::future::pending().await,
    }
}

/// When the outstanding `<r/>` times out.
fn ack_deadline(handle: &SessionHandle, timeout: Option<Duration>) -> Option<Instant> {
    let timeout = timeout?;
    let sm = handle.sm.get()?;
    let sm = sm.lock().unwrap_or_else(|e| e.into_inner());
    sm.ack_requested.map(|t| t + timeout)
}

fn over_ack_queue(handle: &SessionHandle, max: Option<u64>) -> bool {
    let (Some(max), Some(sm)) = (max, handle.sm.get()) else {
        return false;
    };
    let sm = sm.lock().unwrap_or_else(|e| e.into_inner());
    sm.unacked.len() as u64 > max
}

/// Serialise a stanza; with XEP-0198 counting on, keep it until acknowledged.
fn write_stanza(handle: &SessionHandle, framing: Framing, el: Box<Element>, buf: &mut String) {
    // A room's fan-out: the shared parts serialised once per thread.
    super::shared_wire::write(framing, &el, buf);
    if let Some(sm) = handle.sm.get() {
        let mut sm = sm.lock().unwrap_or_else(|e| e.into_inner());
        if sm.counting {
            sm.unacked.push_back(el);
        }
    }
}

fn flush_held(handle: &SessionHandle, framing: Framing, held: &mut Held, buf: &mut String) {
    for (_, el) in std::mem::take(&mut held.items) {
        write_stanza(handle, framing, el, buf);
    }
}

/// After a batch with stanzas the client has not acknowledged, ask for an
/// acknowledgement unless one is outstanding.
fn request_ack(handle: &SessionHandle, framing: Framing, buf: &mut String) {
    let Some(sm) = handle.sm.get() else {
        return;
    };
    let mut sm = sm.lock().unwrap_or_else(|e| e.into_inner());
    if sm.counting && !sm.unacked.is_empty() && sm.ack_requested.is_none() {
        framing.write(&super::sm::wire::r(), buf);
        sm.ack_requested = Some(Instant::now());
    }
}
