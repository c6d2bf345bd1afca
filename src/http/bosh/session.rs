//! One BOSH session (XEP-0124) between its HTTP requests and its c2s
//! session: the `rid` window, the requests held open for the server to
//! answer (`hold`), the responses kept for retransmission, the messages
//! the c2s writer wrote that no request has carried yet, the inactivity
//! deadline, and the byte stream the c2s reader reads ([`super::io`]).
//! [`Registry`] holds the live sessions by `sid`.
//!
//! Invariants:
//! - a request's payload reaches the c2s reader only in `rid` order: one
//!   that comes early (within the window of `requests`) waits for the
//!   gap to fill; one whose `rid` was answered already gets the same
//!   response again (the last `requests` responses are kept); any other
//!   `rid` ends the session with `item-not-found`;
//! - at most `hold` requests wait for data; the oldest is answered (empty)
//!   when one more comes, and each is answered after `wait` at the latest;
//! - what the c2s code writes leaves in the first response that can carry
//!   it, or stays for [`Session::take_undelivered`] (so a session that
//!   ends reroutes it to offline storage); after a client's `terminate`
//!   nothing more is carried;
//! - once the c2s side closes, every request is answered with the final
//!   `type='terminate'` body; a session without any request for
//!   `inactivity` (or its pause) fails the c2s reader, which ends (or
//!   detaches, with XEP-0198) the c2s session.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::Waker;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;
use xep_support::element::{escape, Element};
use xep_support::ns;

use super::body::{self, xbosh, NS_XBOSH};

/// The protocol version this server speaks (XEP-0124 1.11).
pub const VERSION: (u32, u32) = (1, 11);
/// The longest `wait` granted, in seconds (a client asking more gets this).
pub const MAX_WAIT: u64 = 120;
/// The most requests held open at once (`hold`) granted.
pub const MAX_HOLD: u64 = 2;
/// The `polling` interval advertised, in seconds.
pub const POLLING: u64 = 2;
/// Bytes of messages waiting for a request beyond which the c2s writer
/// waits (as on a TCP connection whose peer stopped reading): its
/// `WRITE_TIMEOUT` then counts the connection as lost.
pub const MAX_PENDING: usize = 1024 * 1024;

/// What was agreed at session creation.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    pub wait: Duration,
    pub hold: usize,
    /// `requests`: the window of `rid`s (hold + 1).
    pub window: u64,
    /// `None`: never (`max_inactivity: infinity`).
    pub inactivity: Option<Duration>,
    pub max_pause: Option<Duration>,
    /// `ver`: the lower of the client's and [`VERSION`].
    pub ver: (u32, u32),
}

/// The `ver` to answer a client's `ver` with (XEP-0124 §7.1): the lower.
pub fn version(client: Option<&str>) -> (u32, u32) {
    let parsed = client.and_then(|v| {
        let (major, minor) = v.trim().split_once('.')?;
        Some((major.parse().ok()?, minor.parse().ok()?))
    });
    parsed.map_or(VERSION, |v: (u32, u32)| v.min(VERSION))
}
pub enum Handled {
    /// At once, with this body.
    Reply(String),
    /// When the session has something to say (or at `wait`).
    Wait(oneshot::Receiver<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closing {
    Open,
    /// The client sent `type='terminate'`: its c2s stream is ending.
    ClientTerminate,
    /// The c2s side closed (or failed): only the final body is left.
    Closed,
}

struct State {
    p: Params,
    /// Bytes for the c2s reader.
    inbound: Vec<u8>,
    read_waker: Option<Waker>,
    /// The session failed (timed out, bad rid): reads fail with this.
    read_failed: Option<&'static str>,
    next_rid: u64,
    creation_rid: u64,
    /// Requests that came before their turn: their bodies and responders.
    early: BTreeMap<u64, (Element, oneshot::Sender<String>)>,
    /// Requests read, waiting for their response.
    waiting: BTreeMap<u64, oneshot::Sender<String>>,
    /// The last responses given, for retransmission.
    sent: VecDeque<(u64, String)>,
    /// Written by the c2s code, not yet a complete message.
    partial: Vec<u8>,
    /// Complete messages no response has carried yet, and their size.
    pending: Vec<String>,
    pending_bytes: usize,
    /// The c2s writer, waiting for `pending` to drain.
    write_waker: Option<Waker>,
    /// The c2s stream's id (`authid`), from its `<open/>`.
    stream_id: Option<String>,
    /// A stream error the c2s code wrote, for the final body.
    error: Option<String>,
    closing: Closing,
    /// The body every later request gets, once closed or failed.
    final_body: Option<String>,
    /// When the last waiting request was answered.
    idle_since: Instant,
    /// Told when the last waiting request is answered (for [`Session::watch`]).
    idle: Arc<tokio::sync::Notify>,
    pause_until: Option<Instant>,
}

/// A BOSH session.
pub struct Session {
    pub sid: String,
    /// The client's address (after `trusted_proxies`).
    pub ip: IpAddr,
    /// The served domain the client asked for (`to`).
    pub host: String,
    lang: String,
    st: Mutex<State>,
}

/// The live sessions by `sid`.
#[derive(Default)]
pub struct Registry {
    sessions: Mutex<HashMap<String, Arc<Session>>>,
}

/// The process's registry (one server per process).
pub fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::default)
}

impl Registry {
    pub fn get(&self, sid: &str) -> Option<Arc<Session>> {
        self.lock().get(sid).cloned()
    }

    /// Add `s` unless its address has `max_per_ip` sessions already.
    pub fn insert(&self, s: Arc<Session>, max_per_ip: Option<u64>) -> bool {
        let mut map = self.lock();
        let of_ip = map.values().filter(|o| o.ip == s.ip).count() as u64;
        if max_per_ip.is_some_and(|m| of_ip >= m) {
            return false;
        }
        map.insert(s.sid.clone(), s);
        true
    }

    pub fn remove(&self, sid: &str) {
        self.lock().remove(sid);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A session id: 128 bits from the operating system's CSPRNG, in hex.
pub fn new_sid() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Session {
    /// A session created by the request `rid`, whose response is `Wait`ed
    /// for on the returned receiver; the c2s reader finds a stream header.
    pub fn new(
        sid: String,
        ip: IpAddr,
        host: String,
        lang: String,
        p: Params,
        rid: u64,
    ) -> (Arc<Session>, oneshot::Receiver<String>) {
        let (tx, rx) = oneshot::channel();
        let mut waiting = BTreeMap::new();
        waiting.insert(rid, tx);
        let s = Arc::new(Session {
            sid,
            ip,
            host,
            lang,
            st: Mutex::new(State {
                p,
                inbound: Vec::new(),
                read_waker: None,
                read_failed: None,
                next_rid: rid.wrapping_add(1),
                creation_rid: rid,
                early: BTreeMap::new(),
                waiting,
                sent: VecDeque::new(),
                partial: Vec::new(),
                pending: Vec::new(),
                pending_bytes: 0,
                write_waker: None,
                stream_id: None,
                error: None,
                closing: Closing::Open,
                final_body: None,
                idle_since: Instant::now(),
                idle: Arc::new(tokio::sync::Notify::new()),
                pause_until: None,
            }),
        });
        {
            let mut st = s.lock();
            s.push_header(&mut st);
        }
        (s, rx)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn params(&self) -> Params {
        self.lock().p
    }

    /// The stream header the c2s reader reads at creation and restart.
    fn push_header(&self, st: &mut State) {
        let header = format!(
            "<stream:stream xmlns='{}' xmlns:stream='{}' to='{}' version='1.0' xml:lang='{}'>",
            ns::CLIENT,
            ns::STREAM,
            escape(&self.host),
            escape(&self.lang)
        );
        st.inbound.extend_from_slice(header.as_bytes());
    }

    /// A request with `rid` and its body, for this session.
    pub fn request(&self, rid: u64, body: Element) -> Handled {
        let mut st = self.lock();
        if let Some(f) = &st.final_body {
            return Handled::Reply(f.clone());
        }
        if rid < st.next_rid {
            if let Some((_, b)) = st.sent.iter().find(|(r, _)| *r == rid) {
                tracing::debug!(sid = %self.sid, rid, "BOSH response retransmitted");
                return Handled::Reply(b.clone());
            }
            if let Some(tx) = st.waiting.get_mut(&rid) {
                // Sent again while its first copy waits: this one waits now.
                let (new_tx, rx) = oneshot::channel();
                *tx = new_tx;
                return Handled::Wait(rx);
            }
            return Handled::Reply(self.fail(&mut st, "item-not-found", "rid already answered"));
        }
        if rid - st.next_rid >= st.p.window {
            return Handled::Reply(self.fail(&mut st, "item-not-found", "rid outside the window"));
        }
        let (tx, rx) = oneshot::channel();
        if rid > st.next_rid {
            st.early.insert(rid, (body, tx));
            return Handled::Wait(rx);
        }
        if let Err(cond) = self.accept(&mut st, rid, &body, tx) {
            return Handled::Reply(self.fail(&mut st, cond, "pause too long"));
        }
        loop {
            let r = st.next_rid;
            let Some((b, tx)) = st.early.remove(&r) else {
                break;
            };
            if let Err(cond) = self.accept(&mut st, r, &b, tx) {
                self.fail(&mut st, cond, "pause too long");
                break;
            }
        }
        self.pump(&mut st);
        Handled::Wait(rx)
    }

    /// Take a request's payload in its turn.
    fn accept(
        &self,
        st: &mut State,
        rid: u64,
        body: &Element,
        tx: oneshot::Sender<String>,
    ) -> Result<(), &'static str> {
        st.next_rid = rid.wrapping_add(1);
        if !tx.is_closed() {
            st.waiting.insert(rid, tx);
        }
        if let Some(pause) = body
            .attr("pause")
            .and_then(|p| p.trim().parse::<u64>().ok())
        {
            let pause = Duration::from_secs(pause);
            if st.p.max_pause.is_some_and(|m| pause > m) {
                return Err("policy-violation");
            }
            // XEP-0124 §10: every held request is answered now.
            st.pause_until = Some(Instant::now() + pause);
            let rids: Vec<u64> = st.waiting.keys().copied().collect();
            for r in rids {
                let b = self.body_for(st, r, Vec::new());
                answer(st, r, b);
            }
        } else {
            st.pause_until = None;
        }
        if body.attr(&xbosh("restart")) == Some("true") {
            self.push_header(st);
        }
        let mut xml = String::new();
        for child in body.child_elements() {
            child.write_to(&mut xml, "");
        }
        st.inbound.extend_from_slice(xml.as_bytes());
        if body.attr("type") == Some("terminate") && st.closing == Closing::Open {
            st.closing = Closing::ClientTerminate;
            st.inbound.extend_from_slice(b"</stream:stream>");
        }
        if let Some(w) = st.read_waker.take() {
            w.wake();
        }
        Ok(())
    }

    /// Answer what can be answered: pending messages to the oldest
    /// waiting request, and requests beyond `hold` empty.
    fn pump(&self, st: &mut State) {
        if st.closing == Closing::Closed {
            self.answer_all_final(st);
            return;
        }
        self.drop_gone(st);
        while let Some(&rid) = st.waiting.keys().next() {
            let carry = !st.pending.is_empty()
                && st.closing == Closing::Open
                && (rid != st.creation_rid || st.stream_id.is_some());
            if carry {
                let children = std::mem::take(&mut st.pending);
                let bytes = std::mem::take(&mut st.pending_bytes);
                let b = self.body_for(st, rid, children.clone());
                let sent = st
                    .waiting
                    .remove(&rid)
                    .is_some_and(|tx| tx.send(b.clone()).is_ok());
                if sent {
                    answer(st, rid, b);
                    if let Some(w) = st.write_waker.take() {
                        w.wake();
                    }
                } else {
                    // Its HTTP exchange went away just now: the messages
                    // wait for the next request, the rid gets an empty
                    // answer for a retransmission.
                    st.pending = children;
                    st.pending_bytes = bytes;
                    let empty = self.body_for(st, rid, Vec::new());
                    answer(st, rid, empty);
                }
            } else if st.waiting.len() > st.p.hold {
                let b = self.body_for(st, rid, Vec::new());
                answer(st, rid, b);
            } else {
                break;
            }
        }
    }

    /// The response body for `rid`: the session's attributes on the
    /// creation request's response.
    fn body_for(&self, st: &State, rid: u64, children: Vec<String>) -> String {
        if rid != st.creation_rid {
            return body::response(&[], &children);
        }
        let p = &st.p;
        let mut attrs = vec![
            ("sid", self.sid.clone()),
            ("wait", p.wait.as_secs().to_string()),
            ("requests", p.window.to_string()),
            ("hold", p.hold.to_string()),
            ("polling", POLLING.to_string()),
            ("ver", format!("{}.{}", p.ver.0, p.ver.1)),
            ("from", self.host.clone()),
            ("secure", "true".to_string()),
            ("xmlns:xmpp", NS_XBOSH.to_string()),
            ("xmpp:version", "1.0".to_string()),
            ("xmpp:restartlogic", "true".to_string()),
        ];
        if let Some(i) = p.inactivity {
            attrs.push(("inactivity", i.as_secs().to_string()));
        }
        if let Some(m) = p.max_pause {
            attrs.push(("maxpause", m.as_secs().to_string()));
        }
        if let Some(id) = &st.stream_id {
            attrs.push(("authid", id.clone()));
        }
        body::response(&attrs, &children)
    }

    /// The request `rid` waited `wait`: its response (empty) if it still
    /// waits; `None` if it was answered meanwhile.
    pub fn wait_over(&self, rid: u64) -> Option<String> {
        let mut st = self.lock();
        if st.waiting.contains_key(&rid) {
            let b = self.body_for(&st, rid, Vec::new());
            answer(&mut st, rid, b.clone());
            return Some(b);
        }
        if let Some((_, tx)) = st.early.get_mut(&rid) {
            // Still before its turn: answered empty; its payload is taken
            // when the gap fills, and its response is not kept.
            let (dead, _) = oneshot::channel();
            *tx = dead;
            return Some(body::response(&[], &[]));
        }
        None
    }

    /// End the session from the HTTP side: every request is answered with
    /// a terminate body with `condition`, the c2s reader fails.
    fn fail(&self, st: &mut State, condition: &str, why: &'static str) -> String {
        tracing::info!(sid = %self.sid, ip = %self.ip, "BOSH session ended: {condition} ({why})");
        let f = body::terminate(Some(condition), &[]);
        st.final_body = Some(f.clone());
        st.closing = Closing::Closed;
        self.answer_all_final(st);
        st.read_failed = Some(why);
        if let Some(w) = st.read_waker.take() {
            w.wake();
        }
        registry().remove(&self.sid);
        f
    }

    fn answer_all_final(&self, st: &mut State) {
        let Some(f) = st.final_body.clone() else {
            return;
        };
        let mut any = false;
        for (_, tx) in std::mem::take(&mut st.waiting) {
            any |= tx.send(f.clone()).is_ok();
        }
        for (_, (_, tx)) in std::mem::take(&mut st.early) {
            any |= tx.send(f.clone()).is_ok();
        }
        st.idle_since = Instant::now();
        st.idle.notify_one();
        if any {
            registry().remove(&self.sid);
        }
    }

    /// Requests whose HTTP exchange is gone are answered (empty) into the
    /// retransmission cache: what is pending waits for a live request.
    fn drop_gone(&self, st: &mut State) {
        let gone: Vec<u64> = st
            .waiting
            .iter()
            .filter(|(_, tx)| tx.is_closed())
            .map(|(r, _)| *r)
            .collect();
        for r in gone {
            let b = self.body_for(st, r, Vec::new());
            answer(st, r, b);
        }
    }

    /// Whether a request waits (one ahead of its turn counts while its
    /// HTTP exchange is there).
    fn busy(st: &State) -> bool {
        !st.waiting.is_empty() || st.early.values().any(|(_, tx)| !tx.is_closed())
    }

    /// When the session ends for want of requests (`None`: it is busy, or
    /// never ends so).
    fn deadline(st: &State) -> Option<Instant> {
        if Self::busy(st) {
            return None;
        }
        let idle = st.idle_since + st.p.inactivity?;
        Some(st.pause_until.map_or(idle, |p| p.max(idle)))
    }

    /// Watch the inactivity deadline until the session is over. While a
    /// request waits there is none: the watcher sleeps until the session
    /// is idle again (or, to notice requests whose HTTP exchange is gone,
    /// `wait` and a second at most), so a busy session costs no timer
    /// wake-ups beyond its requests'.
    pub async fn watch(self: Arc<Self>) {
        loop {
            let (next, idle, wait) = {
                let mut st = self.lock();
                if st.read_failed.is_some() {
                    return;
                }
                self.drop_gone(&mut st);
                let now = Instant::now();
                let busy = Self::busy(&st);
                let next = if st.final_body.is_some() {
                    // Closed: kept only for a last request to learn it.
                    if !busy && now >= st.idle_since + st.p.wait {
                        registry().remove(&self.sid);
                        return;
                    }
                    (!busy).then_some(st.idle_since + st.p.wait)
                } else {
                    match Self::deadline(&st) {
                        Some(d) if d <= now => {
                            self.fail(&mut st, "item-not-found", "no request within inactivity");
                            return;
                        }
                        d => d,
                    }
                };
                (next, st.idle.clone(), st.p.wait)
            };
            match next {
                Some(d) => tokio::time::sleep_until(d).await,
                None => {
                    tokio::select! {
                        _ = idle.notified() => {}
                        _ = tokio::time::sleep(wait + Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    }

    // The c2s side ([`super::io::BoshIo`]).

    /// Copy bytes for the c2s reader into `out`; `Ok(0)` at the end, `Err`
    /// when the session failed, `None` (waker kept) when nothing is there.
    pub fn read(
        &self,
        out: &mut tokio::io::ReadBuf<'_>,
        waker: &Waker,
    ) -> Option<std::io::Result<usize>> {
        let mut st = self.lock();
        if !st.inbound.is_empty() {
            let n = out.remaining().min(st.inbound.len());
            out.put_slice(&st.inbound[..n]);
            st.inbound.drain(..n);
            if st.inbound.is_empty() {
                st.inbound = Vec::new();
            }
            return Some(Ok(n));
        }
        if let Some(why) = st.read_failed {
            return Some(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("BOSH session over: {why}"),
            )));
        }
        if st.closing == Closing::Closed {
            return Some(Ok(0));
        }
        st.read_waker = Some(waker.clone());
        None
    }

    /// Bytes the c2s code wrote: complete messages are classified.
    /// `false` (the waker kept): too much waits for a request already.
    pub fn write(&self, bytes: &[u8], waker: &Waker) -> bool {
        let mut st = self.lock();
        if st.pending_bytes >= MAX_PENDING && st.closing == Closing::Open {
            st.write_waker = Some(waker.clone());
            return false;
        }
        st.partial.extend_from_slice(bytes);
        while let Some(i) = memchr::memchr(crate::c2s::framing::MESSAGE_END as u8, &st.partial) {
            let rest = st.partial.split_off(i + 1);
            let mut message = std::mem::replace(&mut st.partial, rest);
            message.pop();
            let message = String::from_utf8(message)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
            self.message(&mut st, message);
        }
        true
    }

    fn message(&self, st: &mut State, m: String) {
        if m.starts_with("<open ") {
            // Ours (`Framing::open`): id='…' as written, escaped.
            if let Some(id) = m
                .split_once(" id='")
                .and_then(|(_, r)| r.split_once('\''))
                .map(|(id, _)| id.to_string())
            {
                st.stream_id = Some(id);
            }
        } else if m.starts_with("<close ") {
            self.close(st);
        } else if m.starts_with("<stream:error") {
            st.error = Some(m);
        } else if st.closing != Closing::Closed {
            st.pending_bytes += m.len();
            st.pending.push(m);
        }
    }

    /// The c2s code flushed: answer what can be answered.
    pub fn flush(&self) {
        let mut st = self.lock();
        self.pump(&mut st);
    }

    /// The c2s side closed its stream (or went away).
    pub fn close_from_c2s(&self) {
        let mut st = self.lock();
        self.close(&mut st);
    }

    fn close(&self, st: &mut State) {
        if st.closing == Closing::Closed {
            return;
        }
        st.closing = Closing::Closed;
        st.final_body = Some(match &st.error {
            Some(e) => body::terminate(Some("remote-stream-error"), std::slice::from_ref(e)),
            None => body::terminate(None, &[]),
        });
        self.answer_all_final(st);
        if let Some(w) = st.read_waker.take() {
            w.wake();
        }
        if let Some(w) = st.write_waker.take() {
            w.wake();
        }
    }

    /// The messages no response carried (the session is ending).
    pub fn take_undelivered(&self) -> Vec<String> {
        let mut st = self.lock();
        st.pending_bytes = 0;
        std::mem::take(&mut st.pending)
    }
}

/// Give `rid` its response and keep it for retransmission.
fn answer(st: &mut State, rid: u64, b: String) {
    if let Some(tx) = st.waiting.remove(&rid) {
        let _ = tx.send(b.clone());
    }
    st.sent.push_back((rid, b));
    while st.sent.len() as u64 > st.p.window {
        st.sent.pop_front();
    }
    if st.waiting.is_empty() {
        st.idle_since = Instant::now();
        st.idle.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> Params {
        Params {
            wait: Duration::from_secs(60),
            hold: 1,
            window: 2,
            inactivity: Some(Duration::from_secs(30)),
            max_pause: Some(Duration::from_secs(120)),
            ver: VERSION,
        }
    }

    #[test]
    fn version_is_the_lower_one() {
        assert_eq!(version(Some("1.6")), (1, 6));
        assert_eq!(version(Some("1.11")), (1, 11));
        assert_eq!(version(Some("2.0")), (1, 11));
        assert_eq!(version(Some("junk")), VERSION);
        assert_eq!(version(None), VERSION);
    }

    fn body(xml: &str) -> Element {
        body::parse(format!("<body xmlns='{}'>{xml}</body>", body::NS_HTTPBIND).as_bytes()).unwrap()
    }

    impl Session {
        fn write_all_now(&self, bytes: &[u8]) {
            assert!(self.write(bytes, Waker::noop()));
        }
    }

    #[test]
    fn a_client_that_does_not_poll_holds_back_the_writer() {
        let (s, mut created) = Session::new(
            new_sid(),
            "127.0.0.1".parse().unwrap(),
            "a.example".into(),
            "en".into(),
            params(),
            1,
        );
        s.write_all_now(b"<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' id='i'/>\0");
        s.flush();
        let big = format!(
            "<message xmlns='jabber:client'><body>{}</body></message>\0",
            "x".repeat(MAX_PENDING)
        );
        s.write_all_now(big.as_bytes());
        assert!(!s.write(b"<a xmlns='b'/>\0", Waker::noop()));
        // The next request (two waiting, hold 1) lets the oldest carry what
        // waits; the writer may go on.
        let Handled::Wait(_rx) = s.request(2, body("")) else {
            panic!()
        };
        assert!(created.try_recv().is_ok_and(|r| r.contains("xxx")));
        assert!(s.write(b"<a xmlns='b'/>\0", Waker::noop()));
    }

    fn inbound(s: &Session) -> String {
        String::from_utf8(std::mem::take(&mut s.lock().inbound)).unwrap()
    }

    #[test]
    fn rids_in_order_early_held_answered_retransmitted() {
        let (s, mut created) = Session::new(
            new_sid(),
            "127.0.0.1".parse().unwrap(),
            "a.example".into(),
            "en".into(),
            params(),
            10,
        );
        assert!(inbound(&s).starts_with("<stream:stream xmlns='jabber:client'"));
        s.write_all_now(b"<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' id='abc' from='a.example' version='1.0' xml:lang='en'/>\0<stream:features xmlns:stream='x'/>\0");
        s.flush();
        let r = created.try_recv().unwrap();
        assert!(
            r.contains("authid='abc'") && r.contains("<stream:features"),
            "{r}"
        );
        // 12 before 11: held until 11 comes, then both in order.
        let Handled::Wait(_r12) = s.request(12, body("<b xmlns='jabber:client'/>")) else {
            panic!("12 answered at once")
        };
        assert_eq!(inbound(&s), "");
        let Handled::Wait(mut r11) = s.request(11, body("<a xmlns='jabber:client'/>")) else {
            panic!("11 answered at once")
        };
        assert_eq!(
            inbound(&s),
            "<a xmlns='jabber:client'/><b xmlns='jabber:client'/>"
        );
        // Two waiting, hold 1: the oldest is answered empty.
        assert_eq!(r11.try_recv().unwrap(), body::response(&[], &[]));
        // 11 again: the same response.
        let Handled::Reply(again) = s.request(11, body("")) else {
            panic!("no retransmission")
        };
        assert_eq!(again, body::response(&[], &[]));
        // Data goes to the waiting 12.
        s.write_all_now(b"<message xmlns='jabber:client'/>\0");
        s.flush();
        // Out of the window: item-not-found, and the reader fails.
        let Handled::Reply(t) = s.request(20, body("")) else {
            panic!()
        };
        assert!(t.contains("item-not-found"), "{t}");
        let Handled::Reply(t) = s.request(13, body("")) else {
            panic!()
        };
        assert!(t.contains("terminate"), "{t}");
    }

    #[test]
    fn undelivered_messages_stay_until_taken() {
        let (s, created) = Session::new(
            new_sid(),
            "127.0.0.1".parse().unwrap(),
            "a.example".into(),
            "en".into(),
            params(),
            1,
        );
        drop(created);
        s.write_all_now(b"<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' id='i'/>\0<message xmlns='jabber:client'><body>x</body></message>\0");
        s.flush();
        // The only request's HTTP side is gone: it is answered empty into
        // the cache, the messages stay for a live request.
        s.write_all_now(b"<message xmlns='jabber:client'><body>y</body></message>\0");
        s.flush();
        assert_eq!(s.take_undelivered().len(), 2);
        assert!(s.take_undelivered().is_empty());
        let Handled::Reply(r) = s.request(1, body("")) else {
            panic!("no retransmission")
        };
        assert!(r.contains("sid="), "{r}");
    }
}
