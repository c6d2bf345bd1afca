//! XEP-0124/XEP-0206 BOSH against the real binary, over HTTPS on an
//! `ejabberd_http` listener (one HTTP/1.1 connection per request, as a
//! browser with several connections does): session creation and its
//! attributes, SCRAM login, binding, a chat with a TCP client; `rid`
//! gaps (a request ahead of its turn waits), retransmission of an answered
//! `rid`, an `rid` outside the window (`item-not-found`); an oversize
//! body (413), a body that is not strict XML (400), an unknown `sid`,
//! another host, `max_sessions_per_ip` (with `X-Forwarded-For` believed
//! only from `trusted_proxies`); `terminate`; `pause` within and beyond
//! `max_pause`; a stream error (conflict) as `remote-stream-error`; an
//! inactivity timeout and a terminate whose undelivered messages go to
//! offline storage; the CORS
//! preflight; host-meta's `xbosh` link; Prosody's `/http-bind` path and a
//! plain listener from loopback; XEP-0198 resumption of a BOSH session
//! over WebSocket.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use crate::c2s_websocket::Ws;
use crate::common;
use common::client::{sasl_b64, Client};
use common::http::Answer;
use common::scram::{Gs2Binding, ScramClient, ScramHash};
use common::server::DEFAULT_MODULES;
use common::xml::parse_element;
use common::{Config, Element, Server};

const NS_HTTPBIND: &str = "http://jabber.org/protocol/httpbind";
const NS_XBOSH: &str = "urn:xmpp:xbosh";
const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
const NS_SM: &str = "urn:xmpp:sm:3";
const NS_STREAM: &str = "http://etherx.jabber.org/streams";

/// An `ejabberd_http` listener serving BOSH at /bosh and /http-bind.
fn bosh_listener(tls: bool) -> String {
    format!("port: 0\nip: 127.0.0.1\nmodule: ejabberd_http\ntls: {tls}\nrequest_handlers:\n  /bosh: mod_bosh\n  /http-bind: mod_bosh\n  /ws: ejabberd_http_ws")
}

fn server_with(mod_bosh: &str, extra_yaml: &str, tls: bool) -> (Server, SocketAddr) {
    let server = Server::start_with(Config {
        extra_listeners: vec![bosh_listener(tls)],
        extra_yaml: extra_yaml.to_string(),
        modules: format!("{DEFAULT_MODULES}  mod_bosh: {{{mod_bosh}}}\n"),
        ..Config::default()
    });
    server.register("alice", "localhost", "secret");
    server.register("bob", "localhost", "hunter2");
    let addr = server
        .listeners
        .iter()
        .find(|l| l.module == "http")
        .expect("http listener")
        .addr;
    (server, addr)
}

/// POST `body` to `path` (over TLS, or plain HTTP).
async fn post_to(
    tls: bool,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let mut h = vec![("Content-Type", "text/xml; charset=utf-8")];
    h.extend_from_slice(headers);
    if tls {
        let len = body.len().to_string();
        h.push(("Content-Length", &len));
        common::http::https(addr, "POST", path, &h, body.as_bytes()).await
    } else {
        plain_http(addr, "POST", path, &h, body.as_bytes()).await
    }
}

/// One request over plain HTTP/1.1.
async fn plain_http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    tcp.write_all(head.as_bytes()).await.expect("write");
    tcp.write_all(body).await.expect("write");
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), tcp.read_to_end(&mut raw)).await;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Answer {
        status,
        headers,
        body: rest.as_bytes().to_vec(),
    }
}

fn parse_body(a: &Answer) -> Element {
    let text = String::from_utf8_lossy(&a.body).into_owned();
    let b = parse_element(&text);
    assert!(b.is("body", NS_HTTPBIND), "not a BOSH body: {text}");
    b
}

/// A BOSH client.
pub(crate) struct Bosh {
    tls: bool,
    addr: SocketAddr,
    path: String,
    sid: String,
    rid: u64,
    /// Children received and not yet looked at.
    got: VecDeque<Element>,
    next_id: u32,
}

impl Bosh {
    /// Create a session; returns it and the creation response.
    async fn create(addr: SocketAddr, wait: u32) -> (Bosh, Element) {
        Self::create_at(true, addr, "/bosh", wait, &[]).await
    }

    async fn create_at(
        tls: bool,
        addr: SocketAddr,
        path: &str,
        wait: u32,
        headers: &[(&str, &str)],
    ) -> (Bosh, Element) {
        let rid = 1_000_000 + u64::from(rand_u16());
        let a = post_to(tls, addr, path, headers, &format!(
            "<body rid='{rid}' to='localhost' xml:lang='en' wait='{wait}' hold='1' content='text/xml; charset=utf-8' ver='1.6' xmpp:version='1.0' xmlns:xmpp='{NS_XBOSH}' xmlns='{NS_HTTPBIND}'/>"
        ))
        .await;
        assert_eq!(a.status, 200, "{:?}", String::from_utf8_lossy(&a.body));
        assert_eq!(a.header("access-control-allow-origin"), Some("*"));
        let b = parse_body(&a);
        let sid = b
            .attr("sid")
            .unwrap_or_else(|| panic!("no sid: {b:?}"))
            .to_string();
        let mut s = Bosh {
            tls,
            addr,
            path: path.to_string(),
            sid,
            rid,
            got: VecDeque::new(),
            next_id: 0,
        };
        s.got.extend(b.children.iter().cloned());
        (s, b)
    }

    fn id(&mut self) -> String {
        self.next_id += 1;
        format!("b{}", self.next_id)
    }

    /// The next request's body text (`attrs` added to the wrapper).
    fn next_body(&mut self, attrs: &str, inner: &str) -> (u64, String) {
        self.rid += 1;
        let rid = self.rid;
        (
            rid,
            format!(
                "<body rid='{rid}' sid='{}' xmlns='{NS_HTTPBIND}' {attrs}>{inner}</body>",
                self.sid
            ),
        )
    }

    async fn post(&self, body: &str) -> Answer {
        post_to(self.tls, self.addr, &self.path, &[], body).await
    }

    /// Send `inner` in the next request; the response's body.
    pub(crate) async fn send(&mut self, inner: &str) -> Element {
        let (_, b) = self.next_body("", inner);
        let a = self.post(&b).await;
        assert_eq!(a.status, 200);
        let b = parse_body(&a);
        assert_ne!(
            b.attr("type"),
            Some("terminate"),
            "session terminated: {b:?}"
        );
        self.got.extend(b.children.iter().cloned());
        b
    }

    /// The next child matching `f`, polling with empty requests.
    pub(crate) async fn recv_where(&mut self, what: &str, f: impl Fn(&Element) -> bool) -> Element {
        for _ in 0..30 {
            while let Some(e) = self.got.pop_front() {
                if f(&e) {
                    return e;
                }
            }
            self.send("").await;
        }
        panic!("no {what}");
    }

    async fn recv(&mut self) -> Element {
        self.recv_where("element", |_| true).await
    }

    /// SCRAM-SHA-256 and the restart; returns the features after it.
    async fn login_sasl(&mut self, user: &str, password: &str) -> Element {
        let f = self
            .recv_where("features", |e| e.is("features", NS_STREAM))
            .await;
        let mechs: Vec<String> = f
            .child_ns("mechanisms", NS_SASL)
            .map(|m| m.children.iter().map(|c| c.text.clone()).collect())
            .unwrap_or_default();
        assert!(mechs.iter().any(|m| m == "SCRAM-SHA-256"), "{f:?}");
        assert!(!mechs.iter().any(|m| m.ends_with("-PLUS")), "{f:?}");
        assert!(f.child("starttls").is_none(), "{f:?}");
        let mut sc = ScramClient::new(ScramHash::Sha256, user, password, Gs2Binding::No, None);
        self.send(&format!(
            "<auth xmlns='{NS_SASL}' mechanism='SCRAM-SHA-256'>{}</auth>",
            sasl_b64(&sc.client_first())
        ))
        .await;
        let ch = self.recv().await;
        assert!(ch.is("challenge", NS_SASL), "{ch:?}");
        let fin = sc.client_final(&b64(&ch.text)).expect("server-first");
        self.send(&format!(
            "<response xmlns='{NS_SASL}'>{}</response>",
            sasl_b64(&fin)
        ))
        .await;
        let ok = self.recv().await;
        assert!(ok.is("success", NS_SASL), "{ok:?}");
        sc.verify_server_final(&b64(&ok.text))
            .expect("server signature");
        let (_, b) = self.next_body(
            &format!("to='localhost' xml:lang='en' xmpp:restart='true' xmlns:xmpp='{NS_XBOSH}'"),
            "",
        );
        let a = self.post(&b).await;
        self.got.extend(parse_body(&a).children);
        let f = self
            .recv_where("features", |e| e.is("features", NS_STREAM))
            .await;
        assert!(f.child("bind").is_some(), "{f:?}");
        f
    }

    async fn bind(&mut self, resource: &str) -> String {
        let id = self.id();
        self.send(&format!("<iq xmlns='jabber:client' type='set' id='{id}'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource></bind></iq>")).await;
        let r = self
            .recv_where("bind result", |e| e.attr("id") == Some(&id))
            .await;
        assert_eq!(r.attr("type"), Some("result"), "{r:?}");
        r.child("bind")
            .and_then(|b| b.child_text("jid"))
            .expect("jid")
            .to_string()
    }

    pub(crate) async fn login(
        addr: SocketAddr,
        user: &str,
        password: &str,
        resource: &str,
    ) -> Bosh {
        let (mut s, _) = Bosh::create(addr, 2).await;
        s.login_sasl(user, password).await;
        assert_eq!(
            s.bind(resource).await,
            format!("{user}@localhost/{resource}")
        );
        s
    }
}

fn rand_u16() -> u16 {
    (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(7)
        % 60000) as u16
}

fn b64(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .expect("base64")
}

#[tokio::test]
async fn creation_login_chat_with_tcp_and_terminate() {
    let (server, addr) = server_with("", "", true);
    let (mut alice, created) = Bosh::create(addr, 2).await;
    // The session's attributes (XEP-0124 §7.2, XEP-0206 §3).
    assert_eq!(alice.sid.len(), 32, "{created:?}");
    assert!(alice.sid.bytes().all(|b| b.is_ascii_hexdigit()));
    for (k, v) in [
        ("wait", "2"),
        ("hold", "1"),
        ("requests", "2"),
        ("inactivity", "30"),
        ("maxpause", "120"),
        ("polling", "2"),
        // The lower of the client's (1.6) and the server's (1.11).
        ("ver", "1.6"),
        ("from", "localhost"),
        ("xmpp:version", "1.0"),
        ("xmpp:restartlogic", "true"),
    ] {
        assert_eq!(created.attr(k), Some(v), "{k} in {created:?}");
    }
    assert!(created.attr("authid").is_some(), "{created:?}");
    // Two sessions never share a sid.
    let (other, _) = Bosh::create(addr, 2).await;
    assert_ne!(other.sid, alice.sid);

    alice.login_sasl("alice", "secret").await;
    assert_eq!(alice.bind("web").await, "alice@localhost/web");
    let id = alice.id();
    alice
        .send(&format!(
            "<iq xmlns='jabber:client' type='get' id='{id}'><query xmlns='jabber:iq:roster'/></iq>"
        ))
        .await;
    let roster = alice
        .recv_where("roster", |e| e.attr("id") == Some(&id))
        .await;
    assert_eq!(roster.attr("type"), Some("result"), "{roster:?}");

    let mut bob = Client::login(&server, "bob", "hunter2", Some("tcp")).await;
    alice
        .send("<message xmlns='jabber:client' to='bob@localhost/tcp' type='chat' id='m1'><body>hello over BOSH</body></message>")
        .await;
    let m = bob.recv_message().await;
    assert_eq!(m.attr("from"), Some("alice@localhost/web"), "{m}");
    assert_eq!(m.child_text("body"), Some("hello over BOSH"));
    // A request held open (hold=1) carries bob's answer when it comes.
    let (_, poll) = alice.next_body("", "");
    let waiting = {
        let (tls, addr, path) = (alice.tls, alice.addr, alice.path.clone());
        tokio::spawn(async move { post_to(tls, addr, &path, &[], &poll).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    bob.send("<message to='alice@localhost/web' type='chat' id='m2'><body>hello from TCP</body></message>")
        .await;
    let a = waiting.await.expect("poll");
    let b = parse_body(&a);
    let m = b
        .child("message")
        .unwrap_or_else(|| panic!("not carried: {b:?}"));
    assert_eq!(m.ns, "jabber:client");
    assert_eq!(m.attr("from"), Some("bob@localhost/tcp"));
    assert_eq!(m.child_text("body"), Some("hello from TCP"));

    // terminate (with a last stanza), answered with type='terminate'.
    let (_, t) = alice.next_body(
        "type='terminate'",
        "<presence xmlns='jabber:client' type='unavailable'/>",
    );
    let a = alice.post(&t).await;
    let b = parse_body(&a);
    assert_eq!(b.attr("type"), Some("terminate"), "{b:?}");
    assert_eq!(b.attr("condition"), None, "{b:?}");
    // The sid is gone.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, late) = alice.next_body("", "");
    let b = parse_body(&alice.post(&late).await);
    assert_eq!(b.attr("type"), Some("terminate"), "{b:?}");
    // The account's session ended.
    let id = bob.id();
    bob.send(&format!(
        "<iq to='alice@localhost/web' type='get' id='{id}'><ping xmlns='urn:xmpp:ping'/></iq>"
    ))
    .await;
    let e = bob
        .recv_where("ping error", |e| e.attr("id") == Some(&id))
        .await;
    assert_eq!(e.attr("type"), Some("error"), "{e}");
}

#[tokio::test]
async fn rid_gaps_retransmits_and_the_window() {
    let (server, addr) = server_with("", "", true);
    let mut alice = Bosh::login(addr, "alice", "secret", "gaps").await;
    let mut bob = Client::login(&server, "bob", "hunter2", Some("tcp")).await;
    // rid+2 comes before rid+1: it waits for the gap; then both are read
    // in rid order.
    let (r1, b1) = alice.next_body("", "<message xmlns='jabber:client' to='bob@localhost/tcp' type='chat'><body>first</body></message>");
    let (r2, b2) = alice.next_body("", "<message xmlns='jabber:client' to='bob@localhost/tcp' type='chat'><body>second</body></message>");
    let (tls, path) = (alice.tls, alice.path.clone());
    let later = {
        let path = path.clone();
        tokio::spawn(async move { post_to(tls, addr, &path, &[], &b2).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    bob.expect_silence(Duration::from_millis(300)).await;
    let first = alice.post(&b1).await;
    assert_eq!(first.status, 200);
    let m = bob.recv_message().await;
    assert_eq!(m.child_text("body"), Some("first"), "{m}");
    let m = bob.recv_message().await;
    assert_eq!(m.child_text("body"), Some("second"), "{m}");
    let second = later.await.expect("later");
    assert_eq!(second.status, 200);
    assert!(r2 == r1 + 1);
    // An answered rid sent again gets the same answer again.
    let again = alice.post(&b1).await;
    assert_eq!(again.body, first.body, "retransmission differs");
    // Bob's message is carried by the next request...
    bob.send("<message to='alice@localhost/gaps' type='chat'><body>kept</body></message>")
        .await;
    let (_, poll) = alice.next_body("", "");
    let carried = alice.post(&poll).await;
    let b = parse_body(&carried);
    let m = b.child("message").unwrap_or_else(|| panic!("{b:?}"));
    assert_eq!(m.child_text("body"), Some("kept"));
    // ... and again if that response was lost and the rid is sent again.
    let resent = alice.post(&poll).await;
    assert_eq!(resent.body, carried.body);
    // A rid far ahead of the window ends the session: item-not-found.
    alice.rid += 10;
    let (_, far) = alice.next_body("", "");
    let b = parse_body(&alice.post(&far).await);
    assert_eq!(b.attr("type"), Some("terminate"), "{b:?}");
    assert_eq!(b.attr("condition"), Some("item-not-found"), "{b:?}");
    // An old rid no longer kept: the session is gone anyway.
    let (_, next) = alice.next_body("", "");
    let b = parse_body(&alice.post(&next).await);
    assert_eq!(b.attr("type"), Some("terminate"), "{b:?}");
}

#[tokio::test]
async fn bad_requests_and_limits() {
    let (_server, addr) = server_with("max_request_size: 4000, max_sessions_per_ip: 3", "", true);
    // Over max_request_size: 413.
    let big = format!(
        "<body rid='1' to='localhost' wait='5' hold='1' xmlns='{NS_HTTPBIND}'>{}</body>",
        "<a xmlns='x'/>".repeat(500)
    );
    let a = post_to(true, addr, "/bosh", &[], &big).await;
    assert_eq!(a.status, 413);
    assert_eq!(a.header("access-control-allow-origin"), Some("*"));
    // Not XML, not a body, a DTD with an entity, a processing instruction: 400.
    for bad in [
        "<body rid='1' xmlns='http://jabber.org/protocol/httpbind'>".to_string(),
        "<iq xmlns='jabber:client'/>".into(),
        format!("<!DOCTYPE body [<!ENTITY e 'x'>]><body rid='1' to='localhost' xmlns='{NS_HTTPBIND}'>&e;</body>"),
        format!("<body rid='1' to='localhost' xmlns='{NS_HTTPBIND}'><?php x?></body>"),
        "\u{0}garbage".into(),
    ] {
        let a = post_to(true, addr, "/bosh", &[], &bad).await;
        assert_eq!(a.status, 400, "{bad}");
        let b = parse_body(&a);
        assert_eq!(b.attr("condition"), Some("bad-request"), "{bad}");
    }
    // No rid; an unknown sid; a host not served.
    let b = parse_body(
        &post_to(
            true,
            addr,
            "/bosh",
            &[],
            &format!("<body to='localhost' xmlns='{NS_HTTPBIND}'/>"),
        )
        .await,
    );
    assert_eq!(b.attr("condition"), Some("bad-request"));
    let b = parse_body(
        &post_to(
            true,
            addr,
            "/bosh",
            &[],
            &format!("<body rid='5' sid='nosuchsession' xmlns='{NS_HTTPBIND}'/>"),
        )
        .await,
    );
    assert_eq!(b.attr("condition"), Some("item-not-found"));
    let b = parse_body(
        &post_to(
            true,
            addr,
            "/bosh",
            &[],
            &format!("<body rid='5' to='elsewhere.example' xmlns='{NS_HTTPBIND}'/>"),
        )
        .await,
    );
    assert_eq!(b.attr("condition"), Some("host-unknown"));
    // max_sessions_per_ip: 3 sessions from 127.0.0.1, the 4th refused.
    let mut kept = Vec::new();
    for _ in 0..3 {
        kept.push(Bosh::create(addr, 1).await.0);
    }
    let b = parse_body(
        &post_to(
            true,
            addr,
            "/bosh",
            &[],
            &format!("<body rid='9' to='localhost' wait='1' xmlns='{NS_HTTPBIND}'/>"),
        )
        .await,
    );
    assert_eq!(b.attr("condition"), Some("policy-violation"), "{b:?}");
    // X-Forwarded-For from an untrusted peer changes nothing.
    let b = parse_body(
        &post_to(
            true,
            addr,
            "/bosh",
            &[("X-Forwarded-For", "198.51.100.9")],
            &format!("<body rid='9' to='localhost' wait='1' xmlns='{NS_HTTPBIND}'/>"),
        )
        .await,
    );
    assert_eq!(b.attr("condition"), Some("policy-violation"), "{b:?}");
    // A terminated session stops counting.
    let mut first = kept.remove(0);
    let (_, t) = first.next_body("type='terminate'", "");
    first.post(&t).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    Bosh::create(addr, 1).await;
}

#[tokio::test]
async fn forwarded_for_from_trusted_proxies_on_a_plain_listener() {
    let (_server, addr) = server_with(
        "max_sessions_per_ip: 1",
        "trusted_proxies: [127.0.0.1]\n",
        false,
    );
    // Plain HTTP from loopback (a local TLS-terminating proxy): served;
    // each forwarded client counts on its own.
    let xff = |ip: &'static str| [("X-Forwarded-For", ip)];
    let (s1, _) = Bosh::create_at(false, addr, "/http-bind", 1, &xff("198.51.100.1")).await;
    let (s2, _) = Bosh::create_at(false, addr, "/bosh", 1, &xff("198.51.100.2")).await;
    assert_ne!(s1.sid, s2.sid);
    let a = post_to(
        false,
        addr,
        "/bosh",
        &xff("198.51.100.1"),
        &format!("<body rid='3' to='localhost' wait='1' xmlns='{NS_HTTPBIND}'/>"),
    )
    .await;
    assert_eq!(parse_body(&a).attr("condition"), Some("policy-violation"));
    // host-meta on the plain listener gives http:// BOSH URLs.
    let a = plain_http(addr, "GET", "/.well-known/host-meta.json", &[], b"").await;
    let j: serde_json::Value = serde_json::from_slice(&a.body).expect("JSON");
    let links = j["links"].as_array().expect("links");
    assert!(
        links
            .iter()
            .any(|l| l["rel"] == "urn:xmpp:alt-connections:xbosh"
                && l["href"] == "http://localhost/bosh"),
        "{j}"
    );
}

#[tokio::test]
async fn cors_preflight_and_host_meta() {
    let (_server, addr) = server_with(
        "",
        "bosh_service_url: https://chat.example.org/http-bind\n",
        true,
    );
    let a = common::http::https(
        addr,
        "OPTIONS",
        "/bosh",
        &[
            ("Origin", "https://web.example.net"),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "content-type"),
        ],
        b"",
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("access-control-allow-origin"), Some("*"));
    assert!(a
        .header("access-control-allow-methods")
        .is_some_and(|m| m.contains("POST")));
    assert!(a
        .header("access-control-allow-headers")
        .is_some_and(|m| m.to_ascii_lowercase().contains("content-type")));
    // host-meta: the configured BOSH URL beside the derived WebSocket one.
    let a = common::http::https(addr, "GET", "/.well-known/host-meta", &[], b"").await;
    let xrd = parse_element(&String::from_utf8_lossy(&a.body));
    let links: Vec<(&str, &str)> = xrd
        .children_named("Link")
        .filter_map(|l| Some((l.attr("rel")?, l.attr("href")?)))
        .collect();
    assert!(
        links.contains(&(
            "urn:xmpp:alt-connections:xbosh",
            "https://chat.example.org/http-bind"
        )),
        "{links:?}"
    );
    assert!(
        links.contains(&("urn:xmpp:alt-connections:websocket", "wss://localhost/ws")),
        "{links:?}"
    );
}

#[tokio::test]
async fn a_stream_error_ends_the_session_with_remote_stream_error() {
    let (server, addr) = server_with("", "", true);
    let mut alice = Bosh::login(addr, "alice", "secret", "same").await;
    alice.send("<presence xmlns='jabber:client'/>").await;
    // The same resource bound over TCP replaces the BOSH session.
    let _tcp = Client::login(&server, "alice", "secret", Some("same")).await;
    let mut ended = None;
    for _ in 0..10 {
        let (_, poll) = alice.next_body("", "");
        let b = parse_body(&alice.post(&poll).await);
        if b.attr("type") == Some("terminate") {
            ended = Some(b);
            break;
        }
    }
    let b = ended.expect("no terminate after the conflict");
    assert_eq!(b.attr("condition"), Some("remote-stream-error"), "{b:?}");
    let e = b
        .child("error")
        .unwrap_or_else(|| panic!("no stream error: {b:?}"));
    assert_eq!(e.ns, NS_STREAM, "{b:?}");
    assert!(e.child("conflict").is_some(), "{b:?}");
}

#[tokio::test]
async fn pause_within_max_pause_and_beyond() {
    let (_server, addr) = server_with("max_inactivity: 2, max_pause: 5", "", true);
    let mut alice = Bosh::login(addr, "alice", "secret", "pausing").await;
    // Requests held for their whole `wait` (2 s) one after the other keep
    // the session past max_inactivity (2 s): it counts only without any.
    for _ in 0..3 {
        alice.send("").await;
    }
    // A held request is answered at once when the client pauses.
    let (_, poll) = alice.next_body("", "");
    let held = {
        let (tls, path) = (alice.tls, alice.path.clone());
        tokio::spawn(async move { post_to(tls, addr, &path, &[], &poll).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, pause) = alice.next_body("pause='4'", "");
    let started = std::time::Instant::now();
    let a = alice.post(&pause).await;
    let held = held.await.expect("held");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "pause request waited"
    );
    assert_eq!(parse_body(&held).attr("type"), None);
    assert_eq!(parse_body(&a).attr("type"), None);
    // Silent past max_inactivity (2 s) but within the pause (4 s): alive.
    tokio::time::sleep(Duration::from_secs(3)).await;
    alice.send("").await;
    // A pause over max_pause ends the session.
    let (_, long) = alice.next_body("pause='60'", "");
    let b = parse_body(&alice.post(&long).await);
    assert_eq!(b.attr("type"), Some("terminate"), "{b:?}");
    assert_eq!(b.attr("condition"), Some("policy-violation"), "{b:?}");
}

/// Stanzas for alice@localhost/r, sent by bob while alice has no request
/// open.
async fn send_while_away(bob: &mut Client, resource: &str, body: &str) {
    bob.send(&format!(
        "<message to='alice@localhost/{resource}' type='chat'><body>{body}</body></message>"
    ))
    .await;
}

/// The bodies of the offline messages alice gets at her next login.
async fn offline_bodies(server: &Server) -> Vec<String> {
    let mut alice = Client::login(server, "alice", "secret", Some("later")).await;
    alice.send("<presence/>").await;
    let mut bodies = Vec::new();
    while let Ok(m) = tokio::time::timeout(Duration::from_secs(2), alice.recv_message()).await {
        assert!(m.child("delay").is_some(), "no delay stamp: {m}");
        bodies.extend(m.child_text("body").map(str::to_string));
    }
    bodies
}

#[tokio::test]
async fn undelivered_messages_go_offline_after_inactivity_or_terminate() {
    let (server, addr) = server_with("max_inactivity: 2", "", true);
    let mut bob = Client::login(&server, "bob", "hunter2", Some("tcp")).await;
    // Inactivity: no request for max_inactivity seconds.
    let mut alice = Bosh::login(addr, "alice", "secret", "idle").await;
    alice.send("<presence xmlns='jabber:client'/>").await;
    send_while_away(&mut bob, "idle", "while idle 1").await;
    send_while_away(&mut bob, "idle", "while idle 2").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (_, late) = alice.next_body("", "");
    let b = parse_body(&alice.post(&late).await);
    assert_eq!(b.attr("type"), Some("terminate"), "{b:?}");
    assert_eq!(
        offline_bodies(&server).await,
        ["while idle 1", "while idle 2"]
    );

    // terminate while a message waits for a request: not lost either.
    let mut alice = Bosh::login(addr, "alice", "secret", "bye").await;
    alice.send("<presence xmlns='jabber:client'/>").await;
    // Let the held request be answered, so nothing carries the message.
    tokio::time::sleep(Duration::from_millis(200)).await;
    send_while_away(&mut bob, "bye", "before the terminate").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, t) = alice.next_body("type='terminate'", "");
    let b = parse_body(&alice.post(&t).await);
    assert_eq!(b.attr("type"), Some("terminate"), "{b:?}");
    assert!(b.children.is_empty(), "{b:?}");
    assert_eq!(offline_bodies(&server).await, ["before the terminate"]);
}

#[tokio::test]
async fn resumes_a_bosh_session_over_websocket() {
    let (server, addr) = server_with("", "", true);
    let mut alice = Bosh::login(addr, "alice", "secret", "moving").await;
    alice
        .send(&format!("<enable xmlns='{NS_SM}' resume='true'/>"))
        .await;
    let en = alice
        .recv_where("enabled", |e| e.is("enabled", NS_SM))
        .await;
    let previd = en.attr("id").expect("id").to_string();
    let mut bob = Client::login(&server, "bob", "hunter2", Some("tcp")).await;
    send_while_away(&mut bob, "moving", "carried over BOSH").await;
    let m = alice.recv_where("message", |e| e.name == "message").await;
    assert_eq!(m.child_text("body"), Some("carried over BOSH"));
    // Unacknowledged, and another one that no request carried.
    send_while_away(&mut bob, "moving", "still waiting").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The browser reconnects over WebSocket and resumes the session.
    let mut ws = Ws::connect(addr).await;
    ws.login_sasl("alice", "secret").await;
    ws.send(&format!(
        "<resume xmlns='{NS_SM}' previd='{previd}' h='0'/>"
    ))
    .await;
    let r = ws
        .recv_where("resumed", |e| e.ns == NS_SM && e.name != "r")
        .await;
    assert_eq!(r.name, "resumed", "{r}");
    let mut bodies = Vec::new();
    while bodies.len() < 2 {
        let m = ws.recv_where("message", |e| e.name == "message").await;
        bodies.extend(m.child_text("body").map(str::to_string));
    }
    assert_eq!(bodies, ["carried over BOSH", "still waiting"]);
    send_while_away(&mut bob, "moving", "now over WebSocket").await;
    let m = ws.recv_where("message", |e| e.name == "message").await;
    assert_eq!(m.child_text("body"), Some("now over WebSocket"));
    // The BOSH session is over.
    let (_, late) = alice.next_body("", "");
    let b = parse_body(&alice.post(&late).await);
    assert_eq!(b.attr("type"), Some("terminate"), "{b:?}");
}

/// Idle memory of bound BOSH sessions beside WebSocket ones, in one server
/// (a measurement for docs/benchmarks.md, not a check): each BOSH session
/// has no request open (its client between two polls; a held request
/// costs an HTTP connection besides). `cargo test --release --test
/// integration c2s_bosh::idle_memory -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn idle_memory_bosh_beside_websocket() {
    const N: usize = 300;
    let (server, addr) = server_with(
        "max_inactivity: 600, max_sessions_per_ip: infinity",
        "",
        true,
    );
    for i in 0..N {
        server.register(&format!("b{i}"), "localhost", "pw");
        server.register(&format!("w{i}"), "localhost", "pw");
    }
    let settle = || tokio::time::sleep(Duration::from_secs(3));
    settle().await;
    let base = server.rss_kib();
    let mut ws = Vec::new();
    for i in 0..N {
        let mut w = Ws::connect(addr).await;
        w.login_sasl(&format!("w{i}"), "pw").await;
        w.send("<iq xmlns='jabber:client' type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>").await;
        w.recv_where("bind", |e| e.attr("id") == Some("b")).await;
        ws.push(w);
    }
    settle().await;
    let after_ws = server.rss_kib();
    let mut bosh = Vec::new();
    for i in 0..N {
        bosh.push(Bosh::login(addr, &format!("b{i}"), "pw", "idle").await);
    }
    settle().await;
    let after_bosh = server.rss_kib();
    let per = |kib: u64| kib as f64 / N as f64;
    println!(
        "idle sessions: {N} WebSocket (wss) {:.2} KiB each, {N} BOSH (https, no request open) {:.2} KiB each (server RSS {base} -> {after_ws} -> {after_bosh} KiB)",
        per(after_ws.saturating_sub(base)),
        per(after_bosh.saturating_sub(after_ws)),
    );
    drop(bosh);
    drop(ws);
}
