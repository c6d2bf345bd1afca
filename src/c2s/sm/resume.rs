//! XEP-0198 resumption: a resumable session's claim channel (through
//! which a `<resume/>` on another connection asks the session's task to
//! hand its queue over), the wait of a *detached* session (its connection
//! dropped; it stays bound, its queue filling, for its resumption timeout),
//! and the take-over itself, for the negotiation of the new connection
//! (`c2s/negotiation.rs` sends what [`take_over`] returns). The table of
//! resumable sessions by id, and of recently expired ones (for a late
//! `<resume/>`'s `<failed h=…/>`), is shared state in `server.rs`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use xep_support::element::Element;
use xep_support::ns;
use xep_support::stanza::Condition;

use super::wire::{failed, parse_h};
use super::{AckError, Claim, Takeover};
use crate::server::Server;
use crate::sessions::SessionHandle;

/// What a `<resume/>` came to.
pub enum Resumption {
    /// Refused: the `<failed/>` to send.
    Refused(Element),
    /// The session is this connection's now: its handle, its queue, and
    /// the `<resumed/>` to send.
    Taken {
        handle: Arc<SessionHandle>,
        queue: Takeover,
        resumed: Element,
    },
}

/// Take over the resumable session `el` (`<resume previd h/>`) names, if
/// it belongs to `bare`: ask its task for its queue, apply `h`, and wait
/// until what `h` acknowledges is durable in the archive.
pub async fn take_over(server: &Server, el: &Element, bare: &str) -> Resumption {
    let previd = el.attr("previd").unwrap_or("").to_string();
    let Some(h) = parse_h(el) else {
        return Resumption::Refused(failed(Condition::BadRequest, None));
    };
    let handle = server
        .resumable(&previd)
        .filter(|hd| hd.jid.to_bare().as_str() == bare);
    let sm = handle.as_ref().and_then(|hd| hd.sm.get().cloned());
    let (Some(handle), Some(sm)) = (handle, sm) else {
        let h = server.expired_h(&previd, bare);
        return Resumption::Refused(failed(Condition::ItemNotFound, h));
    };
    let (claims, check, h_in) = {
        let s = sm.lock().unwrap_or_else(|e| e.into_inner());
        (s.claims.clone(), s.check_ack(h), s.h_in)
    };
    if let Err(AckError::TooHigh { h, sent }) = check {
        let f = failed(Condition::UndefinedCondition, Some(h_in)).with_child(
            Element::new("handled-count-too-high", ns::SM)
                .with_attr("h", h.to_string())
                .with_attr("send-count", sent.to_string()),
        );
        return Resumption::Refused(f);
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    let taken = match claims {
        Some(claims) => {
            if claims
                .send_timeout(tx, Duration::from_secs(5))
                .await
                .is_ok()
            {
                tokio::time::timeout(Duration::from_secs(40), rx)
                    .await
                    .ok()
                    .and_then(Result::ok)
            } else {
                None
            }
        }
        None => None,
    };
    let Some(queue) = taken else {
        return Resumption::Refused(failed(Condition::ItemNotFound, None));
    };
    // The session is ours now: its handle stays bound in the session table.
    handle.detached.store(false, Ordering::Relaxed);
    handle.csi_inactive.store(false, Ordering::Relaxed);
    let h_in = {
        let mut s = sm.lock().unwrap_or_else(|e| e.into_inner());
        let _ = s.ack(h);
        s.ack_requested = None;
        s.claims = None;
        s.h_in
    };
    // `h` acknowledges the old connection's stanzas: their archive
    // appends are durable first.
    server.archive_durable(&handle).await;
    let resumed = Element::new("resumed", ns::SM)
        .with_attr("h", h_in.to_string())
        .with_attr("previd", previd);
    Resumption::Taken {
        handle,
        queue,
        resumed,
    }
}

/// A new channel for resumptions to claim the session through.
pub fn install_claims(handle: &SessionHandle) -> mpsc::Receiver<Claim> {
    let (tx, rx) = mpsc::channel(1);
    if let Some(sm) = handle.sm.get() {
        sm.lock().unwrap_or_else(|e| e.into_inner()).claims = Some(tx);
    }
    rx
}

pub async fn next_claim(claims: &mut Option<mpsc::Receiver<Claim>>) -> Option<Claim> {
    match claims {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The connection of a resumable session dropped: wait for a resumption
/// (returns `None`: the queue was handed over) or for the timeout, a kick
/// or shutdown (returns the queue, for the session to end, and whether the
/// resumption timeout ran out).
pub async fn detached(
    server: &Arc<Server>,
    handle: &Arc<SessionHandle>,
    claims: Option<&mut mpsc::Receiver<Claim>>,
    rx: Takeover,
) -> Option<(Takeover, bool)> {
    let Some(claims) = claims else {
        return Some((rx, false));
    };
    let timeout = handle
        .sm
        .get()
        .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).timeout)
        .unwrap_or_default();
    handle.detached.store(true, Ordering::Relaxed);
    tracing::info!(jid = %handle.jid, "connection lost; session kept for resumption for {}s", timeout.as_secs());
    let mut shutdown = server.shutdown_signal();
    let mut timed_out = false;
    let claim = tokio::select! {
        c = claims.recv() => c,
        _ = tokio::time::sleep(timeout) => {
            timed_out = true;
            None
        }
        _ = handle.stop.notified() => None,
        _ = shutdown.wait_for(|v| *v) => None,
    };
    if let Some(claim) = claim {
        match claim.send(rx) {
            Ok(()) => {
                server.sessions.release(handle);
                return None;
            }
            Err(rx) => {
                server.sessions.unbind(handle);
                return Some((rx, false));
            }
        }
    }
    tracing::info!(jid = %handle.jid, "resumable session ended without resumption");
    server.sessions.unbind(handle);
    Some((rx, timed_out))
}
