//! XEP-0198 elements from a bound client: `<enable/>` (with `resume`:
//! a resumption id, the session registered as resumable), `<r/>` (answered
//! with `<a/>` once what it acknowledges is durable), `<a/>` (drops what it
//! confirms from the unacknowledged queue; too high ends the stream).
//! Written stanzas are counted and kept by the writer (`c2s/writer.rs`)
//! once `<enabled/>` is written.

use std::sync::Arc;

use tokio::sync::mpsc;
use xep_support::element::Element;
use xep_support::ns;
use xep_support::stanza::Condition;

use super::wire::{a, failed, new_id, parse_h};
use super::{Claim, SmState};
use crate::server::Server;
use crate::sessions::{Outgoing, SessionHandle};
use crate::stream::StreamCondition;

/// Enable stream management on `handle` as `<enable/>` (`el`) asks: the
/// `<enabled/>` to send (with a resumption id, the session registered as
/// resumable: the bool is true) or `<failed/>` when it is already on. Used
/// for a bound session's `<enable/>` and for XEP-0386 inline enabling; the
/// caller installs the claim channel and starts the counting when
/// `<enabled/>` is written.
pub fn enable(
    server: &Server,
    opts: &xep_support::stream_mgmt::StreamMgmt,
    handle: &Arc<SessionHandle>,
    el: &Element,
) -> (Element, bool) {
    if handle.sm.get().is_some() {
        return (failed(Condition::UnexpectedRequest, None), false);
    }
    let resume = matches!(el.attr("resume"), Some("true") | Some("1"));
    let max = el.attr("max").and_then(|m| m.trim().parse::<u64>().ok());
    let timeout = opts.timeout_for(max);
    let id = resume.then(new_id);
    let state = SmState::new(id.clone(), timeout);
    let _ = handle.sm.set(Arc::new(std::sync::Mutex::new(state)));
    let mut enabled = Element::new("enabled", ns::SM);
    if let Some(id) = &id {
        server.remember_resumable(id, handle.clone());
        enabled.set_attr("id", id.clone());
        enabled.set_attr("resume", "true");
        enabled.set_attr("max", timeout.as_secs().to_string());
    }
    (enabled, id.is_some())
}

/// A XEP-0198 element from the client.
pub async fn nonza(
    server: &Arc<Server>,
    handle: &Arc<SessionHandle>,
    claims: &mut Option<mpsc::Receiver<Claim>>,
    el: Element,
) -> Result<(), StreamCondition> {
    let live = server.live();
    let Some(opts) = live.sm.as_ref() else {
        return Err(StreamCondition::UnsupportedStanzaType);
    };
    let reply = match el.name.as_str() {
        "enable" => {
            let (reply, resumable) = enable(server, opts, handle, &el);
            match reply.name.as_str() {
                "enabled" => {
                    if resumable {
                        *claims = Some(super::resume::install_claims(handle));
                    }
                    Outgoing::SmEnabled(Box::new(reply))
                }
                _ => Outgoing::Nonza(Box::new(reply)),
            }
        }
        "r" => match handle.sm.get() {
            Some(sm) => {
                // What this answer acknowledges is durable first.
                server.archive_durable(handle).await;
                let h = sm.lock().unwrap_or_else(|e| e.into_inner()).h_in;
                Outgoing::Nonza(Box::new(a(h)))
            }
            None => Outgoing::Nonza(Box::new(failed(Condition::UnexpectedRequest, None))),
        },
        "a" => {
            let Some(sm) = handle.sm.get() else {
                return Err(StreamCondition::UnsupportedStanzaType);
            };
            let Some(h) = parse_h(&el) else {
                return Err(StreamCondition::InvalidXml);
            };
            let r = sm.lock().unwrap_or_else(|e| e.into_inner()).ack(h);
            return match r {
                Ok(()) => Ok(()),
                Err(e) => {
                    tracing::info!(jid = %handle.jid, "bad acknowledgement: {e:?}");
                    Err(StreamCondition::UndefinedCondition)
                }
            };
        }
        "resume" => Outgoing::Nonza(Box::new(failed(Condition::UnexpectedRequest, None))),
        _ => return Err(StreamCondition::UnsupportedStanzaType),
    };
    let _ = handle.tx.send(reply).await;
    Ok(())
}
