//! A bound client session: reads stanzas one at a time, checks them, stamps
//! `from` with the session's full JID (whatever the client wrote), keeps the
//! session's presence state, and hands each stanza to [`crate::delivery`].
//! Its writer runs as a second task draining the session's queue.

use std::sync::Arc;

use jid::Jid;
use xep_support::element::Element;
use xep_support::ns;
use xep_support::stanza::{error_reply, iq_error, StanzaError};

use super::negotiation::Bound;
use crate::router::Outgoing;
use crate::server::Server;
use crate::xml::{StreamEvent, XmlError};

/// How the session's reading ended.
enum End {
    /// The client closed its stream.
    Closed,
    /// Kicked, replaced or shut down: the writer was already told.
    Stopped,
    /// A stream error to send.
    Error(&'static str),
    /// The connection is gone.
    Gone,
}

/// Serve a bound session until it ends, then clean up.
pub async fn run(server: Arc<Server>, bound: Bound) {
    let Bound {
        mut reader,
        writer,
        handle,
        rx,
        peer,
    } = bound;
    let writer_task = tokio::spawn(super::writer::run(writer, rx, handle.clone()));
    // Roster for presence fan-out is loaded once now, not per stanza.
    let _ = server.rosters.get(&server, &handle.jid.to_bare());
    let end = loop {
        let ev = tokio::select! {
            ev = reader.next() => ev,
            _ = handle.stop.notified() => break End::Stopped,
        };
        match ev {
            Ok(StreamEvent::Stanza(el)) => {
                // Boxed: routing a stanza (delivery, offline storage, iq
                // handlers) is a deep future; inline, it would size this
                // task, which every idle session keeps, for its largest
                // case (3.6 KiB per session before, see docs/architecture.md).
                if let Err(cond) = boxed_stanza(&server, &handle, el).await {
                    break End::Error(cond);
                }
            }
            Ok(StreamEvent::End) => break End::Closed,
            Ok(StreamEvent::Header(_)) => break End::Error("not-well-formed"),
            Err(XmlError::Closed) | Err(XmlError::Io(_)) => break End::Gone,
            Err(e) => {
                tracing::debug!(%peer, jid = %handle.jid, "stream error: {e}");
                break End::Error(e.condition().unwrap_or("internal-server-error"));
            }
        }
    };
    drop(reader);
    // Boxed: the clean-up's futures would otherwise enlarge the session's
    // future, which every idle session keeps.
    boxed_finish(server, handle, end, peer, writer_task).await;
}

// Plain functions build the boxed futures: built inside `run`, a future
// would be laid out in `run`'s own state before being moved to the heap.
fn boxed_stanza<'a>(
    server: &'a Arc<Server>,
    handle: &'a Arc<crate::router::SessionHandle>,
    el: Element,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), &'static str>> + Send + 'a>> {
    Box::pin(handle_stanza(server, handle, el))
}

fn boxed_finish(
    server: Arc<Server>,
    handle: Arc<crate::router::SessionHandle>,
    end: End,
    peer: std::net::SocketAddr,
    writer_task: tokio::task::JoinHandle<Vec<Element>>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    Box::pin(finish(server, handle, end, peer, writer_task))
}

/// After reading stopped: unbind, close the stream, announce unavailability,
/// and route what was queued but not written.
async fn finish(
    server: Arc<Server>,
    handle: Arc<crate::router::SessionHandle>,
    end: End,
    peer: std::net::SocketAddr,
    writer_task: tokio::task::JoinHandle<Vec<Element>>,
) {
    server.router.unbind(&handle);
    match end {
        End::Closed | End::Gone => {
            let _ = handle.tx.try_send(Outgoing::Close(None));
        }
        End::Error(cond) => {
            let _ = handle.tx.try_send(Outgoing::Close(Some(Box::new(cond))));
        }
        End::Stopped => {}
    }
    Box::pin(crate::im::presence::session_ended(&server, &handle)).await;
    for m in &server.modules {
        m.session_closed(server.as_ref(), &handle.jid);
    }
    tracing::info!(%peer, "session ended: {}", handle.jid);
    // The writer ends on Close or once every sender is gone; bound the wait.
    if let Ok(Ok(leftover)) =
        tokio::time::timeout(std::time::Duration::from_secs(35), writer_task).await
    {
        // Messages that were queued but not written go to another resource or offline storage.
        for msg in leftover {
            Box::pin(crate::delivery::route(&server, msg)).await;
        }
    }
}

/// Check, stamp and route one stanza. `Err` is a stream error condition.
async fn handle_stanza(
    server: &Arc<Server>,
    handle: &Arc<crate::router::SessionHandle>,
    mut el: Element,
) -> Result<(), &'static str> {
    if el.ns != ns::CLIENT || !matches!(el.name.as_str(), "message" | "presence" | "iq") {
        return Err("unsupported-stanza-type");
    }
    // The server, not the client, says who sent it (RFC 6120 §8.1.2.1).
    el.set_attr("from", handle.jid.to_string());
    if let Some(to) = el.attr("to") {
        if Jid::new(to).is_err() {
            if el.name != "presence" && el.attr("type") != Some("error") {
                let mut reply = error_reply(
                    &el,
                    &StanzaError::new(xep_support::stanza::ErrorType::Modify, "jid-malformed"),
                );
                reply.remove_attr("from");
                reply.set_attr("to", handle.jid.to_string());
                let _ = handle.tx.send(Outgoing::Stanza(Box::new(reply))).await;
            }
            return Ok(());
        }
    }
    match el.name.as_str() {
        "iq" => {
            let kind = el.attr("type").unwrap_or("");
            let valid_type = matches!(kind, "get" | "set" | "result" | "error");
            let one_child = el.child_elements().count() == 1;
            if el.attr("id").is_none()
                || !valid_type
                || ((kind == "get" || kind == "set") && !one_child)
            {
                if kind == "result" || kind == "error" {
                    return Ok(()); // never answer results or errors
                }
                let mut reply = iq_error(&el, &StanzaError::bad_request());
                reply.remove_attr("from");
                reply.set_attr("to", handle.jid.to_string());
                let _ = handle.tx.send(Outgoing::Stanza(Box::new(reply))).await;
                return Ok(());
            }
            if el.attr("to").is_none() && (kind == "get" || kind == "set") {
                // No `to`: handled by the server on behalf of the account (RFC 6120 §10.3.3).
                el.set_attr("to", handle.jid.to_bare().to_string());
            }
        }
        "presence" => {
            // Boxed: presence handling (offline drain, fan-out) has a large
            // future that would otherwise enlarge every idle session's task.
            match el.attr("to").map(Jid::new) {
                None => {
                    Box::pin(crate::im::presence::broadcast_from_session(
                        server, handle, el,
                    ))
                    .await
                }
                Some(Ok(to)) => {
                    Box::pin(crate::im::presence::directed_from_session(
                        server, handle, el, to,
                    ))
                    .await
                }
                Some(Err(_)) => {}
            }
            return Ok(());
        }
        _ => {}
    }
    crate::delivery::route(server, el).await;
    Ok(())
}
