//! A bound client session: reads stanzas one at a time, checks them, stamps
//! `from` with the session's full JID (whatever the client wrote), keeps the
//! session's presence state, and hands each stanza to [`crate::delivery`].
//! Its writer runs as a second task draining the session's queue. XEP-0352
//! elements are handled here too (they are not stanzas), and so are
//! mod_ping's server-side pings; XEP-0198 elements go to `sm/`, which also
//! holds the wait of a detached session. When a session ends, what it did not
//! deliver is rerouted (`finish`): messages to another resource or offline
//! storage, except those of a timed-out hibernated session that the archive
//! already holds.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use xep_support::jids::{self, Bare};

use tokio::sync::{mpsc, Notify};
use xep_support::element::Element;
use xep_support::ns;
use xep_support::ping::Ping;
use xep_support::stanza::{error_reply, iq_error, Condition, StanzaError};

use super::negotiation::{Bound, Rd};
use super::sm::{self, Claim, Takeover};
use super::writer::{Exit, Settings};
use crate::server::Server;
use crate::sessions::{Outgoing, SessionHandle};
use crate::stream::StreamCondition;
use crate::xml::{StreamEvent, StreamReader, XmlError};

type WriterResult = Result<(Takeover, Exit), tokio::task::JoinError>;

/// How the session's reading ended.
enum End {
    /// The client closed its stream.
    Closed,
    /// Kicked, replaced or shut down: the writer was already told.
    Stopped,
    /// A stream error to send (condition, why), boxed: a thin pointer.
    Error(Box<crate::sessions::StreamErrorOut>),
    /// The connection is gone (read or write failed, ack or ping timeout).
    Gone,
    /// A XEP-0198 resumption on another connection takes the session over.
    Taken(Claim),
}

/// Serve a bound session until it ends, then clean up. A resumable
/// XEP-0198 session whose connection drops stays bound ("detached") for
/// its resumption timeout, its queue filling (bounded) meanwhile; a
/// resumption takes its queue over, the timeout ends it.
///
/// `bound` comes boxed: an async fn keeps its arguments in its state for
/// its whole life, so a `Bound` by value would cost every idle session its
/// size (544 bytes) a second time.
pub async fn run(server: Arc<Server>, bound: Box<Bound>) {
    let Bound {
        mut reader,
        writer,
        handle,
        rx,
        peer,
        resumed,
        cork,
        framing,
        undelivered,
    } = *bound;
    let resumed_session = resumed.is_some();
    let detach = Arc::new(Notify::new());
    let settings = Box::new(Settings {
        csi: server.live().csi.clone(),
        ack_timeout: server.live().sm.as_ref().and_then(|s| s.ack_timeout),
        max_ack_queue: server.live().sm.as_ref().and_then(|s| s.max_ack_queue),
        resumed,
        cork: Some(cork),
        framing,
    });
    crate::conn_log::bind(&handle.jid);
    let mut writer_task = tokio::spawn(crate::conn_log::ConnLog::current().run(
        super::writer::run(writer, rx, handle.clone(), detach.clone(), settings),
    ));
    let mut claims: Option<mpsc::Receiver<Claim>> = None;
    // A resumed session, or one whose stream management a XEP-0386 bind
    // enabled inline with resumption, is claimed through this channel.
    let resumable_inline = handle
        .sm
        .get()
        .is_some_and(|s| s.lock().unwrap_or_else(|e| e.into_inner()).id.is_some());
    if resumed_session || resumable_inline {
        claims = Some(sm::resume::install_claims(&handle));
    }
    if !resumed_session {
        // Roster for presence fan-out is loaded once now, not per stanza.
        let _ = server.rosters.get(server.as_ref(), &handle.jid.bare());
    }
    let mut pinger = Pinger::new(server.live().ping.clone());
    // The writer's result, when it ended first, leaves with the loop's
    // break value (a local would be kept in every idle session's state).
    let (end, writer_done) = loop {
        let wake = pinger.wake();
        let ev = tokio::select! {
            ev = next_event(&mut reader) => ev,
            _ = handle.stop.notified() => break (End::Stopped, None),
            w = &mut writer_task => {
                // The writer closed the stream itself (too many unacked
                // stanzas): the session ends; otherwise the connection is lost.
                let closed = matches!(&w, Ok((_, Exit::Closed)));
                break (if closed { End::Stopped } else { End::Gone }, Some(w));
            }
            Some(claim) = sm::resume::next_claim(&mut claims) => break (End::Taken(claim), None),
            _ = sleep_until(wake), if wake.is_some() => {
                if pinger.on_timer(&handle) {
                    continue;
                }
                break (End::Gone, None);
            }
        };
        pinger.activity();
        // `ev` is consumed by a plain function, so neither it nor the
        // stanza is kept in this future's state across the await.
        match dispatch(&server, &handle, &mut claims, &mut pinger, ev) {
            Err(end) => break (end, None),
            Ok(None) => {}
            Ok(Some(handling)) => {
                if let Err(cond) = handling.await {
                    break (End::Error(Box::new((cond, None))), None);
                }
            }
        }
    };
    // The rest runs in its own boxed future: its state (timeouts, the
    // detached wait, the final clean-up) would otherwise enlarge every idle
    // session's task.
    drop(reader);
    let rest = Box::pin(wind_down(
        server,
        handle,
        end,
        writer_done,
        writer_task,
        detach,
        claims,
        peer,
        undelivered,
    ));
    rest.await;
}

/// After the reading loop: stop the writer, then detach (resumable), hand
/// over (resumption) or end the session.
#[allow(clippy::too_many_arguments)]
async fn wind_down(
    server: Arc<Server>,
    handle: Arc<SessionHandle>,
    end: End,
    writer_done: Option<WriterResult>,
    writer_task: tokio::task::JoinHandle<(Takeover, Exit)>,
    detach: Arc<Notify>,
    mut claims: Option<mpsc::Receiver<Claim>>,
    peer: std::net::SocketAddr,
    undelivered: Option<Arc<dyn super::Undelivered>>,
) {
    let resumable = claims.is_some() && server.live().sm.is_some();
    let keep = resumable && matches!(end, End::Gone | End::Taken(_));
    if !keep {
        // Nothing is routed to a session that is ending.
        server.sessions.unbind(&handle);
    }
    let writer_result = match writer_done {
        Some(r) => Some(r),
        None => {
            match &end {
                End::Closed => {
                    if handle.tx.try_send(Outgoing::Close(None)).is_err() {
                        detach.notify_one();
                    }
                }
                End::Error(cond) => {
                    if handle
                        .tx
                        .try_send(Outgoing::Close(Some(cond.clone())))
                        .is_err()
                    {
                        detach.notify_one();
                    }
                }
                End::Stopped if !handle.detached.load(Ordering::Relaxed) => {
                    // close() queued a Close; if the queue was full, stop now.
                    if handle.tx.capacity() == 0 {
                        detach.notify_one();
                    }
                }
                End::Stopped => {}
                End::Gone | End::Taken(_) => detach.notify_one(),
            }
            // The writer ends on Close or detach; bound the wait.
            tokio::time::timeout(std::time::Duration::from_secs(35), writer_task)
                .await
                .ok()
        }
    };
    // The writer may have closed the stream itself (too many unacked
    // stanzas) just before the reader saw the connection go: that session
    // ends, it is not kept for a resumption.
    let writer_closed = matches!(&writer_result, Some(Ok((_, Exit::Closed))));
    let rx = match writer_result {
        Some(Ok((rx, _exit))) => Some(rx),
        _ => None,
    };
    // Whether the session hibernated (XEP-0198) and its resumption timeout
    // ran out: its client catches up through MAM when it comes back.
    let mut timed_out = false;
    let rx = match (end, rx) {
        (End::Taken(claim), Some(rx)) => match claim.send(rx) {
            Ok(()) => {
                tracing::info!(%peer, "session {} taken over by a resumption", handle.jid);
                server.sessions.release(&handle);
                return;
            }
            Err(rx) => Some(rx),
        },
        (End::Gone, Some(rx)) if keep && !writer_closed => {
            match Box::pin(sm::resume::detached(&server, &handle, claims.as_mut(), rx)).await {
                None => return,
                Some((rx, expired)) => {
                    timed_out = expired;
                    Some(rx)
                }
            }
        }
        (_, rx) => rx,
    };
    // Boxed, like the other cold paths: an idle session's task stays small.
    Box::pin(finish(
        &server,
        &handle,
        rx,
        undelivered.as_deref(),
        timed_out,
    ))
    .await;
    tracing::info!(%peer, "session ended: {}", handle.jid);
}

type Handling<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), StreamCondition>> + Send + 'a>>;

/// What to do with one event read from the client: end the session, or
/// run the returned (boxed) handling of a stanza or nonza. A plain function
/// builds the boxed futures: built inside `run`, a future would first be
/// laid out in `run`'s own state (which every idle session keeps) before
/// being moved to the heap.
fn dispatch<'a>(
    server: &'a Arc<Server>,
    handle: &'a Arc<SessionHandle>,
    claims: &'a mut Option<mpsc::Receiver<Claim>>,
    pinger: &mut Pinger,
    ev: Result<StreamEvent, XmlError>,
) -> Result<Option<Handling<'a>>, End> {
    match ev {
        Ok(StreamEvent::Stanza(el)) => {
            if el.ns == ns::SM {
                return Ok(Some(Box::pin(sm::ack::nonza(server, handle, claims, el))));
            }
            if el.ns == ns::CSI && server.live().csi.is_some() {
                return Ok(Some(Box::pin(csi_nonza(handle, el))));
            }
            if let Some(sm) = handle.sm.get() {
                sm.lock().unwrap_or_else(|e| e.into_inner()).handled();
            }
            if pinger.is_reply(&el) {
                return Ok(None);
            }
            Ok(Some(Box::pin(handle_stanza(server, handle, el))))
        }
        Ok(StreamEvent::End) => Err(End::Closed),
        Ok(StreamEvent::Header(_)) => Err(End::Error(Box::new((
            StreamCondition::NotWellFormed,
            Some("a second stream header".into()),
        )))),
        Err(XmlError::Closed) | Err(XmlError::Io(_)) => Err(End::Gone),
        Err(e) => {
            let cond = e
                .condition()
                .unwrap_or(StreamCondition::InternalServerError);
            Err(End::Error(Box::new((cond, Some(e.to_string())))))
        }
    }
}

/// The next event from the client. An idle session waits in
/// [`StreamReader::readable`], whose state is a pointer; the parser's
/// future (about 250 bytes) exists, boxed, only while bytes are arriving.
async fn next_event(reader: &mut StreamReader<Rd>) -> Result<StreamEvent, XmlError> {
    reader.readable().await;
    let next = boxed_next(reader);
    next.await
}

type NextEvent<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<StreamEvent, XmlError>> + Send + 'a>>;

fn boxed_next(reader: &mut StreamReader<Rd>) -> NextEvent<'_> {
    Box::pin(reader.next())
}

/// Sleep until `deadline`, if any (the timer lives on the heap only while
/// it runs, so it does not enlarge the session's task).
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => Box::pin(tokio::time::sleep_until(d.into())).await,
        None => std::future::pending().await,
    }
}

/// End a session for good: unavailable presence, modules told, and every
/// stanza it did not deliver (unacknowledged, kept by its transport, or
/// still queued, in that order) rerouted; `hibernated`: its resumption
/// timeout ran out (see [`reroute`]).
async fn finish(
    server: &Arc<Server>,
    handle: &Arc<SessionHandle>,
    rx: Option<Takeover>,
    undelivered: Option<&dyn super::Undelivered>,
    hibernated: bool,
) {
    server.sessions.unbind(handle);
    handle.detached.store(false, Ordering::Relaxed);
    let mut left: Vec<Element> = Vec::new();
    let mut counted = false;
    if let Some(sm) = handle.sm.get() {
        let mut sm = sm.lock().unwrap_or_else(|e| e.into_inner());
        counted = sm.counting;
        if let Some(id) = sm.id.take() {
            server.forget_resumable(&id, handle.id);
            server.remember_expired(&id, &bare_of(handle), sm.h_in);
        }
        sm.claims = None;
        left.extend(sm.unacked.drain(..).map(|b| *b));
    }
    if let Some(u) = undelivered {
        // With XEP-0198 counting, what the transport kept is among the
        // unacknowledged stanzas already.
        let kept = u.take();
        if !counted {
            left.extend(kept);
        }
    }
    if let Some(mut rx) = rx {
        rx.close();
        while let Ok(item) = rx.try_recv() {
            if let Outgoing::Stanza(el) = item {
                left.push(*el);
            }
        }
    }
    Box::pin(crate::router::session_ended(server, handle)).await;
    for m in &server.live().hooks.session_closed {
        m.session_closed(server.as_ref(), &handle.jid);
    }
    // The whole backlog goes out under the account lock, before any message
    // that came later: those wait for `release` (Sessions::wait_backlog) or for
    // the lock (offline storage), so none overtakes it.
    if !left.is_empty() {
        let bare = handle.jid.bare();
        let _guard = server.account_locks.lock(&bare).await;
        let exists = !server.sessions.sessions_of(&bare).is_empty()
            || crate::router::account_exists(server, &bare);
        for el in left {
            reroute(server, handle, el, exists, hibernated).await;
        }
    }
    server.sessions.release(handle);
}

fn bare_of(handle: &SessionHandle) -> String {
    handle.jid.bare().to_string()
}

/// A stanza a session never got to deliver: messages go to another resource
/// or offline storage (a delay stamp says when they first came), iq
/// requests are answered with an error, the rest is dropped. The caller
/// holds the account lock. Messages went through the modules' filters and
/// hooks (archiving, carbons) when they first reached the session; they are
/// not run again. Of a `hibernated` session whose resumption timed out, a
/// message that no other
/// resource takes and that the account's archive already holds is not
/// stored offline: the client gets it once, through MAM.
async fn reroute(
    server: &Arc<Server>,
    handle: &SessionHandle,
    mut el: Element,
    exists: bool,
    hibernated: bool,
) {
    let bare = handle.jid.bare();
    match el.name.as_str() {
        "message" => {
            if matches!(
                el.attr("type"),
                Some("groupchat") | Some("headline") | Some("error")
            ) {
                return;
            }
            let from_self = el.attr("from") == Some(bare.as_str());
            if from_self
                && (el.child("sent", ns::CARBONS).is_some()
                    || el.child("received", ns::CARBONS).is_some())
            {
                return; // a carbon copy: the original reached its resource
            }
            el.set_attr("to", bare.to_string());
            if el.child("delay", ns::DELAY).is_none() {
                el.children.push(xep_support::Node::Element(
                    Element::new("delay", ns::DELAY)
                        .with_attr("from", bare.domain().as_str())
                        .with_attr("stamp", crate::im::offline::now_stamp()),
                ));
            }
            if exists
                && hibernated
                && server.sessions.best_resources(&bare).is_empty()
                && archived(server, &bare, &el)
            {
                tracing::debug!(to = %bare, "unacked message of an ended hibernated session is in the archive; not stored offline");
            } else if exists {
                let refused = crate::im::offline::store_or_deliver_locked(server, el, &bare).await;
                crate::router::perform(server, refused.into_iter().collect()).await;
            } else {
                // The account was removed.
                crate::router::bounce(server, &el, StanzaError::service_unavailable()).await;
            }
        }
        "iq" if matches!(el.attr("type"), Some("get") | Some("set")) => {
            crate::router::bounce(server, &el, StanzaError::service_unavailable()).await;
        }
        _ => {}
    }
}

/// Whether `bare`'s archive holds `msg`: its `<stanza-id by=bare/>` (only
/// the server sets those while mod_mam is on: it strips forged ones) names
/// a stored message.
fn archived(server: &Server, bare: &jid::BareJid, msg: &Element) -> bool {
    if !server.live().modules.iter().any(|m| m.name() == "mod_mam") {
        return false;
    }
    let id = msg
        .child_elements()
        .find(|c| {
            c.is("stanza-id", xep_support::mam::NS_SID) && c.attr("by") == Some(bare.as_str())
        })
        .and_then(|c| c.attr("id"))
        .and_then(xep_support::archive::parse_id);
    match id.map(|id| server.storage.archive().get(bare, id)) {
        Some(Ok(Some(_))) => true,
        Some(Err(e)) => {
            tracing::warn!("archive lookup for {bare}: {e}; storing offline");
            false
        }
        _ => false,
    }
}

/// A XEP-0352 element from the client.
async fn csi_nonza(handle: &SessionHandle, el: Element) -> Result<(), StreamCondition> {
    match el.name.as_str() {
        "inactive" => handle.csi_inactive.store(true, Ordering::Relaxed),
        "active" => {
            if handle.csi_inactive.swap(false, Ordering::Relaxed) {
                let _ = handle.tx.send(Outgoing::Flush).await;
            }
        }
        _ => return Err(StreamCondition::UnsupportedStanzaType),
    }
    Ok(())
}

/// Server-side pings of a silent client (mod_ping `send_pings`); boxed
/// state, present only when pings are on.
struct Pinger(Option<Box<PingState>>);

struct PingState {
    cfg: Ping,
    last: Instant,
    pending: Option<(u32, Instant)>,
    seq: u32,
}

impl Pinger {
    fn new(cfg: Option<Ping>) -> Self {
        Pinger(cfg.filter(|c| c.send_pings).map(|cfg| {
            Box::new(PingState {
                cfg,
                last: Instant::now(),
                pending: None,
                seq: 0,
            })
        }))
    }

    fn wake(&self) -> Option<Instant> {
        self.0.as_ref().map(|p| p.wake())
    }

    fn activity(&mut self) {
        if let Some(p) = self.0.as_mut() {
            p.last = Instant::now();
        }
    }

    fn on_timer(&mut self, handle: &SessionHandle) -> bool {
        self.0.as_mut().is_none_or(|p| p.on_timer(handle))
    }

    fn is_reply(&mut self, el: &Element) -> bool {
        self.0.as_mut().is_some_and(|p| p.is_reply(el))
    }
}

impl PingState {
    fn wake(&self) -> Instant {
        match self.pending {
            Some((_, sent)) => sent + self.cfg.ping_ack_timeout,
            None => self.last + self.cfg.ping_interval,
        }
    }

    fn id(seq: u32) -> String {
        format!("rookery-ping-{seq}")
    }

    /// The timer fired: send a ping, or give up on one. `false`: the client
    /// is presumed gone.
    fn on_timer(&mut self, handle: &SessionHandle) -> bool {
        let cfg = &self.cfg;
        let now = Instant::now();
        if let Some((_, sent)) = self.pending {
            if now >= sent + cfg.ping_ack_timeout {
                self.pending = None;
                self.last = now;
                tracing::info!(jid = %handle.jid, "no answer to a ping");
                return !cfg.kill;
            }
            return true;
        }
        if now >= self.last + cfg.ping_interval {
            self.seq = self.seq.wrapping_add(1);
            let domain = handle.jid.domain().to_string();
            let iq = Element::new("iq", ns::CLIENT)
                .with_attr("from", domain)
                .with_attr("to", handle.jid.to_string())
                .with_attr("type", "get")
                .with_attr("id", Self::id(self.seq))
                .with_child(Element::new("ping", ns::PING));
            if handle.tx.try_send(Outgoing::Stanza(Box::new(iq))).is_ok() {
                self.pending = Some((self.seq, now));
            } else {
                self.last = now;
            }
        }
        true
    }

    /// Whether `el` answers the outstanding ping (then it is consumed).
    fn is_reply(&mut self, el: &Element) -> bool {
        let Some((seq, _)) = self.pending else {
            return false;
        };
        if el.name == "iq"
            && matches!(el.attr("type"), Some("result") | Some("error"))
            && el.attr("id") == Some(Self::id(seq).as_str())
        {
            self.pending = None;
            return true;
        }
        false
    }
}

/// Check, stamp and route one stanza. `Err` is a stream error condition.
async fn handle_stanza(
    server: &Arc<Server>,
    handle: &Arc<crate::sessions::SessionHandle>,
    mut el: Element,
) -> Result<(), StreamCondition> {
    if el.ns != ns::CLIENT || !matches!(el.name.as_str(), "message" | "presence" | "iq") {
        return Err(StreamCondition::UnsupportedStanzaType);
    }
    // The server, not the client, says who sent it (RFC 6120 §8.1.2.1).
    el.set_attr("from", handle.jid.to_string());
    if let Some(to) = el.attr("to") {
        if jids::parse(to).is_none() {
            if el.name != "presence" && el.attr("type") != Some("error") {
                let mut reply = error_reply(
                    &el,
                    &StanzaError::new(
                        xep_support::stanza::ErrorType::Modify,
                        Condition::JidMalformed,
                    ),
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
            if kind == "get" || kind == "set" {
                // An iq answer acknowledges what came before it: the
                // session's archived messages are durable first.
                server.archive_durable(handle).await;
            }
            if el.attr("to").is_none() && (kind == "get" || kind == "set") {
                // No `to`: handled by the server on behalf of the account (RFC 6120 §10.3.3).
                el.set_attr("to", handle.jid.bare().to_string());
            }
        }
        "presence" => {
            // Boxed: presence handling (offline drain, fan-out) has a large
            // future that would otherwise enlarge every idle session's task.
            match el.attr("to").map(|t| jids::parse(t).ok_or(())) {
                None => Box::pin(crate::router::presence_broadcast(server, handle, el)).await,
                Some(Ok(to)) => {
                    Box::pin(crate::router::presence_directed(server, handle, el, to)).await
                }
                Some(Err(_)) => {}
            }
            return Ok(());
        }
        _ => {}
    }
    if el.name == "message" {
        // Module copies (XEP-0280 <sent/>) are made before the message moves on.
        let mut extra = Vec::new();
        for m in &server.live().hooks.message_from_session {
            let more = m.message_from_session(server.as_ref(), &handle.jid, &el);
            if !more.is_empty() {
                extra.extend(more);
            }
        }
        let cluster_copy = server.routes.cluster().is_some().then(|| el.clone());
        crate::router::route(server, el).await;
        for s in extra {
            crate::router::route(server, s).await;
        }
        if let Some(el) = cluster_copy {
            // The same copies for the account's resources on other nodes.
            crate::router::sent_elsewhere(server, &handle.jid, &el).await;
        }
        // Covers the archive appends of this message (both ends).
        handle
            .archive_ticket
            .store(server.archive.ticket(), Ordering::Relaxed);
        return Ok(());
    }
    crate::router::route(server, el).await;
    Ok(())
}
