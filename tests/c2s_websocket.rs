//! RFC 7395 XMPP over WebSocket against the real binary, with a small
//! WebSocket client built on tokio-tungstenite over the suite's TLS
//! client: SCRAM login, binding, roster and a chat with a TCP client over
//! `wss://` on an `ejabberd_http` listener; XEP-0198 enable and resume
//! over WebSocket; the framing errors (binary message, two elements in one
//! message, a message over `max_stanza_size`, an undeclared namespace, a
//! bad `<open/>`) with their stream errors and WebSocket close codes; the
//! refused upgrades (no or another subprotocol, an origin not in
//! `websocket_origin`, no upgrade at all); WebSocket pings and
//! `websocket_timeout`; XEP-0280 carbons, XEP-0352 CSI and XEP-0313 over
//! WebSocket; XEP-0388 SASL2 with XEP-0386 Bind 2 over WebSocket; `ws://`
//! on a plain listener from loopback (and no STARTTLS
//! inside); XEP-0156 host-meta in XRD and JSON.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

use crate::common;
use common::client::{sasl_b64, Client};
use common::scram::{Gs2Binding, ScramClient, ScramHash};
use common::xml::parse_element;
use common::{Config, Element, Server};

const NS_FRAMING: &str = "urn:ietf:params:xml:ns:xmpp-framing";
const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
const NS_SM: &str = "urn:xmpp:sm:3";
const WAIT: Duration = Duration::from_secs(10);

/// An `ejabberd_http` listener serving WebSocket at /ws and /xmpp-websocket.
fn ws_listener(tls: bool) -> String {
    format!("port: 0\nip: 127.0.0.1\nmodule: ejabberd_http\ntls: {tls}\nmax_stanza_size: 20000\nrequest_handlers:\n  /ws: ejabberd_http_ws\n  /xmpp-websocket: ejabberd_http_ws")
}

fn server_with(extra_yaml: &str) -> (Server, SocketAddr) {
    let server = Server::start_with(Config {
        extra_listeners: vec![ws_listener(true)],
        extra_yaml: extra_yaml.to_string(),
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

type Io = Box<dyn common::client::Io>;

/// What the server sent.
#[derive(Debug)]
enum Got {
    Element(Element),
    /// A close frame with its code, or the connection's end (`None`).
    Closed(Option<CloseCode>),
}

pub(crate) struct Ws {
    ws: WebSocketStream<Io>,
    next_id: u32,
}

/// Open a WebSocket to `path` with these subprotocols and headers; the
/// HTTP status and body of a refusal otherwise.
async fn try_connect(
    addr: SocketAddr,
    path: &str,
    protocol: Option<&str>,
    headers: &[(&str, &str)],
) -> Result<Ws, (u16, String)> {
    try_connect_over(true, addr, path, protocol, headers).await
}

/// [`try_connect`] over TLS (`wss://`) or plain TCP (`ws://`).
async fn try_connect_over(
    tls: bool,
    addr: SocketAddr,
    path: &str,
    protocol: Option<&str>,
    headers: &[(&str, &str)],
) -> Result<Ws, (u16, String)> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let io: Io = if tls {
        Box::new(
            common::client::tls_connector()
                .connect(ServerName::try_from("localhost").expect("name"), tcp)
                .await
                .expect("TLS handshake"),
        )
    } else {
        Box::new(tcp)
    };
    let scheme = if tls { "wss" } else { "ws" };
    let mut req = format!("{scheme}://localhost{path}")
        .into_client_request()
        .expect("request");
    if let Some(p) = protocol {
        req.headers_mut()
            .insert("sec-websocket-protocol", p.parse().expect("header"));
    }
    for (k, v) in headers {
        req.headers_mut().insert(
            tungstenite::http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
            v.parse().expect("header"),
        );
    }
    let r = tokio::time::timeout(WAIT, tokio_tungstenite::client_async(req, io))
        .await
        .expect("WebSocket handshake timed out");
    match r {
        Ok((ws, resp)) => {
            if protocol.is_some_and(|p| p.contains("xmpp")) {
                assert_eq!(
                    resp.headers()
                        .get("sec-websocket-protocol")
                        .and_then(|v| v.to_str().ok()),
                    Some("xmpp")
                );
            }
            Ok(Ws { ws, next_id: 0 })
        }
        Err(tungstenite::Error::Http(resp)) => {
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            Err((resp.status().as_u16(), body))
        }
        Err(e) => panic!("WebSocket handshake: {e}"),
    }
}

impl Ws {
    pub(crate) async fn connect(addr: SocketAddr) -> Ws {
        try_connect(addr, "/ws", Some("xmpp"), &[])
            .await
            .unwrap_or_else(|e| panic!("upgrade refused: {e:?}"))
    }

    fn id(&mut self) -> String {
        self.next_id += 1;
        format!("w{}", self.next_id)
    }

    pub(crate) async fn send(&mut self, xml: &str) {
        self.ws
            .send(Message::text(xml.to_string()))
            .await
            .expect("send");
    }

    async fn recv_got(&mut self) -> Got {
        loop {
            let m = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("nothing received in time");
            match m {
                Some(Ok(Message::Text(t))) => {
                    let t = t.as_str();
                    // Every message is one document declaring its namespaces.
                    let el = parse_element(t);
                    assert!(!el.ns.is_empty(), "no namespace declared: {t}");
                    return Got::Element(el);
                }
                Some(Ok(Message::Close(f))) => return Got::Closed(f.map(|f| f.code)),
                Some(Ok(Message::Binary(b))) => panic!("binary message from the server: {b:?}"),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Got::Closed(None),
            }
        }
    }

    pub(crate) async fn recv(&mut self) -> Element {
        match self.recv_got().await {
            Got::Element(e) => e,
            Got::Closed(c) => panic!("closed ({c:?}) while waiting for an element"),
        }
    }

    pub(crate) async fn recv_where(&mut self, what: &str, f: impl Fn(&Element) -> bool) -> Element {
        for _ in 0..50 {
            let e = self.recv().await;
            if f(&e) {
                return e;
            }
        }
        panic!("no {what}");
    }

    /// `<open/>`; returns the features that follow the server's `<open/>`.
    async fn open(&mut self) -> Element {
        self.send(&format!(
            "<open xmlns='{NS_FRAMING}' to='localhost' version='1.0'/>"
        ))
        .await;
        let open = self.recv().await;
        assert!(open.is("open", NS_FRAMING), "{open}");
        assert_eq!(open.attr("from"), Some("localhost"));
        assert_eq!(open.attr("version"), Some("1.0"));
        assert!(open.attr("id").is_some());
        let f = self.recv().await;
        assert!(f.is("features", "http://etherx.jabber.org/streams"), "{f}");
        f
    }

    /// A stream error and the `<close/>` after it, then the close frame's code.
    async fn expect_error(&mut self) -> (String, Option<CloseCode>) {
        let e = self.recv().await;
        assert!(e.is_stream_error(), "expected a stream error: {e}");
        let cond = e
            .children
            .first()
            .map(|c| c.name.clone())
            .unwrap_or_default();
        let close = self.recv().await;
        assert!(close.is("close", NS_FRAMING), "{close}");
        match self.recv_got().await {
            Got::Closed(code) => (cond, code),
            Got::Element(e) => panic!("element after <close/>: {e}"),
        }
    }

    pub(crate) async fn login_sasl(&mut self, user: &str, password: &str) {
        let f = self.open().await;
        let mechs: Vec<String> = f
            .child_ns("mechanisms", NS_SASL)
            .map(|m| m.children.iter().map(|c| c.text.clone()).collect())
            .unwrap_or_default();
        assert!(mechs.iter().any(|m| m == "SCRAM-SHA-256"), "{f}");
        // No channel binding over WebSocket, and no STARTTLS inside it.
        assert!(!mechs.iter().any(|m| m.ends_with("-PLUS")), "{f}");
        assert!(f.child("starttls").is_none(), "{f}");
        let mut sc = ScramClient::new(ScramHash::Sha256, user, password, Gs2Binding::No, None);
        self.send(&format!(
            "<auth xmlns='{NS_SASL}' mechanism='SCRAM-SHA-256'>{}</auth>",
            sasl_b64(&sc.client_first())
        ))
        .await;
        let ch = self.recv().await;
        assert!(ch.is("challenge", NS_SASL), "{ch}");
        let first = b64(&ch.text);
        let fin = sc.client_final(&first).expect("server-first");
        self.send(&format!(
            "<response xmlns='{NS_SASL}'>{}</response>",
            sasl_b64(&fin)
        ))
        .await;
        let ok = self.recv().await;
        assert!(ok.is("success", NS_SASL), "{ok}");
        sc.verify_server_final(&b64(&ok.text))
            .expect("server signature");
        let f = self.open().await;
        assert!(f.child("bind").is_some(), "{f}");
    }

    pub(crate) async fn bind(&mut self, resource: &str) -> String {
        let id = self.id();
        self.send(&format!("<iq xmlns='jabber:client' type='set' id='{id}'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource></bind></iq>")).await;
        let r = self.recv().await;
        assert_eq!(r.attr("type"), Some("result"), "{r}");
        r.child("bind")
            .and_then(|b| b.child_text("jid"))
            .expect("jid")
            .to_string()
    }

    async fn login(addr: SocketAddr, user: &str, password: &str, resource: &str) -> (Ws, String) {
        let mut ws = Ws::connect(addr).await;
        ws.login_sasl(user, password).await;
        let jid = ws.bind(resource).await;
        (ws, jid)
    }
}

fn b64(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .expect("base64")
}

#[tokio::test]
async fn login_roster_and_chat_with_a_tcp_client() {
    let (server, addr) = server_with("");
    let (mut alice, jid) = Ws::login(addr, "alice", "secret", "web").await;
    assert_eq!(jid, "alice@localhost/web");
    let id = alice.id();
    alice
        .send(&format!(
            "<iq xmlns='jabber:client' type='get' id='{id}'><query xmlns='jabber:iq:roster'/></iq>"
        ))
        .await;
    let roster = alice.recv().await;
    assert!(roster.is("iq", "jabber:client"), "{roster}");
    assert_eq!(roster.attr("type"), Some("result"), "{roster}");
    assert!(roster.child("query").is_some(), "{roster}");

    let mut bob = Client::login(&server, "bob", "hunter2", Some("tcp")).await;
    alice
        .send("<message xmlns='jabber:client' to='bob@localhost/tcp' type='chat' id='m1'><body>hello from the web</body></message>")
        .await;
    let m = bob.recv_message().await;
    assert_eq!(m.attr("from"), Some("alice@localhost/web"), "{m}");
    assert_eq!(m.child_text("body"), Some("hello from the web"));
    bob.send("<message to='alice@localhost/web' type='chat' id='m2'><body>hello from TCP</body></message>")
        .await;
    let m = alice.recv_where("message", |e| e.name == "message").await;
    assert!(m.is("message", "jabber:client"), "{m}");
    assert_eq!(m.attr("from"), Some("bob@localhost/tcp"), "{m}");
    assert_eq!(m.child_text("body"), Some("hello from TCP"));

    // The stream's end: <close/> answered with <close/> and a normal close.
    alice.send(&format!("<close xmlns='{NS_FRAMING}'/>")).await;
    let c = alice.recv().await;
    assert!(c.is("close", NS_FRAMING), "{c}");
    match alice.recv_got().await {
        Got::Closed(code) => assert!(matches!(code, None | Some(CloseCode::Normal)), "{code:?}"),
        Got::Element(e) => panic!("after <close/>: {e}"),
    }
    // Prosody's conventional path serves the same.
    let mut other = try_connect(addr, "/xmpp-websocket", Some("xmpp"), &[])
        .await
        .expect("/xmpp-websocket");
    other.open().await;
}

#[tokio::test]
async fn stream_management_resumes_over_websocket() {
    let (server, addr) = server_with("");
    let (mut alice, _) = Ws::login(addr, "alice", "secret", "web").await;
    alice
        .send(&format!("<enable xmlns='{NS_SM}' resume='true'/>"))
        .await;
    let en = alice.recv().await;
    assert!(en.is("enabled", NS_SM), "{en}");
    let previd = en.attr("id").expect("id").to_string();
    let mut bob = Client::login(&server, "bob", "hunter2", Some("tcp")).await;
    bob.send("<message to='alice@localhost/web' type='chat' id='r1'><body>while you were away</body></message>")
        .await;
    let m = alice.recv_where("message", |e| e.name == "message").await;
    assert_eq!(m.child_text("body"), Some("while you were away"));
    // The connection drops without acknowledging the message.
    drop(alice);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut again = Ws::connect(addr).await;
    again.login_sasl("alice", "secret").await;
    again
        .send(&format!(
            "<resume xmlns='{NS_SM}' previd='{previd}' h='0'/>"
        ))
        .await;
    let r = again
        .recv_where("resumed", |e| e.ns == NS_SM && e.name != "r")
        .await;
    assert_eq!(r.name, "resumed", "{r}");
    let m = again.recv_where("message", |e| e.name == "message").await;
    assert_eq!(m.child_text("body"), Some("while you were away"), "{m}");
    // The resumed session is the bound one: a new message reaches it.
    bob.send("<message to='alice@localhost/web' type='chat' id='r2'><body>back?</body></message>")
        .await;
    let m = again.recv_where("message", |e| e.name == "message").await;
    assert_eq!(m.child_text("body"), Some("back?"), "{m}");
}

#[tokio::test]
async fn carbons_csi_and_mam_work_as_over_tcp() {
    const NS_CARBONS: &str = "urn:xmpp:carbons:2";
    let (server, addr) = server_with("");
    let (mut web, _) = Ws::login(addr, "alice", "secret", "web").await;
    let id = web.id();
    web.send(&format!(
        "<iq xmlns='jabber:client' type='set' id='{id}'><enable xmlns='{NS_CARBONS}'/></iq>"
    ))
    .await;
    let r = web
        .recv_where("carbons result", |e| e.attr("id") == Some(&id))
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    web.send("<presence xmlns='jabber:client'/>").await;
    let mut phone = Client::login(&server, "alice", "secret", Some("phone")).await;
    let mut bob = Client::login(&server, "bob", "hunter2", Some("tcp")).await;
    // XEP-0280: what alice's other resource sends is copied to the WebSocket.
    phone
        .send("<message to='bob@localhost/tcp' type='chat' id='c1'><body>from my phone</body></message>")
        .await;
    bob.recv_message().await;
    let copy = web
        .recv_where("sent carbon", |e| {
            e.name == "message" && e.child_ns("sent", NS_CARBONS).is_some()
        })
        .await;
    let fwd = copy
        .child_ns("sent", NS_CARBONS)
        .and_then(|s| s.child("forwarded"))
        .and_then(|f| f.child("message"))
        .expect("forwarded message");
    assert_eq!(fwd.child_text("body"), Some("from my phone"), "{copy}");
    // XEP-0352: inactive holds a chat state, the next message brings it.
    web.send("<inactive xmlns='urn:xmpp:csi:0'/>").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    bob.send("<message to='alice@localhost/web' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>")
        .await;
    let held = tokio::time::timeout(Duration::from_millis(800), async {
        loop {
            if let Got::Element(e) = web.recv_got().await {
                if e.name == "message" {
                    return e;
                }
            }
        }
    })
    .await;
    assert!(
        held.is_err(),
        "a chat state reached an inactive client: {held:?}"
    );
    bob.send("<message to='alice@localhost/web' type='chat'><body>ping</body></message>")
        .await;
    let first = web.recv_where("a message", |e| e.name == "message").await;
    assert!(
        first.child("composing").is_some(),
        "held chat state first: {first}"
    );
    let second = web.recv_where("a message", |e| e.name == "message").await;
    assert_eq!(second.child_text("body"), Some("ping"), "{second}");
    // XEP-0313: the archive answers over WebSocket.
    let id = web.id();
    web.send(&format!(
        "<iq xmlns='jabber:client' type='set' id='{id}'><query xmlns='urn:xmpp:mam:2' queryid='q'/></iq>"
    ))
    .await;
    let mut bodies = Vec::new();
    loop {
        let e = web.recv().await;
        if e.attr("id") == Some(&id) {
            assert_eq!(e.attr("type"), Some("result"), "{e}");
            break;
        }
        if let Some(m) = e
            .child("result")
            .and_then(|r| r.child("forwarded"))
            .and_then(|f| f.child("message"))
        {
            bodies.extend(m.child_text("body").map(str::to_string));
        }
    }
    assert!(bodies.contains(&"from my phone".to_string()), "{bodies:?}");
    assert!(bodies.contains(&"ping".to_string()), "{bodies:?}");
}

#[tokio::test]
async fn framing_errors_close_with_stream_errors_and_close_codes() {
    let (_server, addr) = server_with("");
    // A binary message.
    let mut ws = Ws::connect(addr).await;
    ws.open().await;
    ws.ws
        .send(Message::binary(b"<iq/>".to_vec()))
        .await
        .expect("send");
    assert_eq!(
        ws.expect_error().await,
        ("unsupported-feature".into(), Some(CloseCode::Unsupported))
    );
    // Two elements in one message.
    let mut ws = Ws::connect(addr).await;
    ws.open().await;
    ws.send(&format!("<r xmlns='{NS_SM}'/><r xmlns='{NS_SM}'/>"))
        .await;
    assert_eq!(ws.expect_error().await.0, "not-well-formed");
    // A message without its namespace declared.
    let mut ws = Ws::connect(addr).await;
    ws.open().await;
    ws.send("<auth mechanism='PLAIN'>AGFsaWNlAHNlY3JldA==</auth>")
        .await;
    assert_eq!(ws.expect_error().await.0, "invalid-namespace");
    // A message over the listener's max_stanza_size (20000), after login.
    let (mut ws, _) = Ws::login(addr, "alice", "secret", "big").await;
    let body = "x".repeat(30_000);
    ws.send(&format!(
        "<message xmlns='jabber:client' to='bob@localhost'><body>{body}</body></message>"
    ))
    .await;
    assert_eq!(
        ws.expect_error().await,
        ("policy-violation".into(), Some(CloseCode::Size))
    );
    // Before authentication, the listener's pre_auth_max_stanza_size (8192).
    let mut ws = Ws::connect(addr).await;
    ws.open().await;
    ws.send(&format!(
        "<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{}</auth>",
        "A".repeat(9000)
    ))
    .await;
    assert_eq!(
        ws.expect_error().await,
        ("policy-violation".into(), Some(CloseCode::Size))
    );
    // A bad <open/>: the wrong namespace, then no version.
    let mut ws = Ws::connect(addr).await;
    ws.send("<open xmlns='jabber:client' to='localhost' version='1.0'/>")
        .await;
    let e = ws.recv_where("stream error", |e| e.is_stream_error()).await;
    assert!(e.child("invalid-namespace").is_some(), "{e}");
    let mut ws = Ws::connect(addr).await;
    ws.send(&format!("<open xmlns='{NS_FRAMING}' to='localhost'/>"))
        .await;
    let e = ws.recv_where("stream error", |e| e.is_stream_error()).await;
    assert!(e.child("unsupported-version").is_some(), "{e}");
    let mut ws = Ws::connect(addr).await;
    ws.send(&format!(
        "<open xmlns='{NS_FRAMING}' to='elsewhere.example' version='1.0'/>"
    ))
    .await;
    let e = ws.recv_where("stream error", |e| e.is_stream_error()).await;
    assert!(e.child("host-unknown").is_some(), "{e}");
}

#[tokio::test]
async fn upgrades_without_xmpp_or_from_other_origins_are_refused() {
    let (_server, addr) = server_with("websocket_origin: [https://chat.example.org]\n");
    let origin = [("origin", "https://chat.example.org")];
    let (status, body) = try_connect(addr, "/ws", None, &origin)
        .await
        .err()
        .expect("refused");
    assert_eq!(status, 400);
    assert!(body.contains("xmpp"), "{body}");
    let (status, _) = try_connect(addr, "/ws", Some("chat"), &origin)
        .await
        .err()
        .expect("refused");
    assert_eq!(status, 400);
    let (status, body) = try_connect(
        addr,
        "/ws",
        Some("xmpp"),
        &[("origin", "https://evil.example")],
    )
    .await
    .err()
    .expect("refused");
    assert_eq!(status, 403);
    assert!(body.contains("websocket_origin"), "{body}");
    let mut ok = try_connect(addr, "/ws", Some("chat, xmpp"), &origin)
        .await
        .expect("allowed origin");
    ok.open().await;
    // A plain GET: 426 with an explanation.
    let a = common::http::https(addr, "GET", "/ws", &[], b"").await;
    assert_eq!(a.status, 426);
    assert!(String::from_utf8_lossy(&a.body).contains("RFC 7395"));
}

#[tokio::test]
async fn pings_a_silent_client_and_drops_it_after_the_timeout() {
    let (_server, addr) = server_with("websocket_ping_interval: 1\nwebsocket_timeout: 3\n");
    let (mut ws, _) = Ws::login(addr, "alice", "secret", "idle").await;
    // A ping within the interval (answered by tungstenite while reading).
    let ping = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.ws.next().await {
                Some(Ok(Message::Ping(_))) => return true,
                Some(Ok(_)) => continue,
                _ => return false,
            }
        }
    })
    .await;
    assert_eq!(ping, Ok(true), "no WebSocket ping");
    // Still alive after some pinged intervals while reading (pongs sent).
    let id = ws.id();
    tokio::time::sleep(Duration::from_millis(200)).await;
    ws.send(&format!(
        "<iq xmlns='jabber:client' type='get' id='{id}'><ping xmlns='urn:xmpp:ping'/></iq>"
    ))
    .await;
    let r = ws.recv_where("pong", |e| e.attr("id") == Some(&id)).await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    // Silent (not reading, so no pongs) past websocket_timeout: dropped.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            match ws.ws.next().await {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "connection not dropped after websocket_timeout"
    );
}

#[tokio::test]
async fn host_meta_lists_the_websocket_endpoints() {
    let (_server, addr) = server_with("");
    let a = common::http::https(addr, "GET", "/.well-known/host-meta", &[], b"").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("access-control-allow-origin"), Some("*"));
    assert_eq!(a.header("content-type"), Some("application/xrd+xml"));
    let xrd = parse_element(&String::from_utf8_lossy(&a.body));
    assert!(
        xrd.is("XRD", "http://docs.oasis-open.org/ns/xri/xrd-1.0"),
        "{xrd}"
    );
    let hrefs: Vec<&str> = xrd
        .children_named("Link")
        .filter(|l| l.attr("rel") == Some("urn:xmpp:alt-connections:websocket"))
        .filter_map(|l| l.attr("href"))
        .collect();
    assert_eq!(
        hrefs,
        ["wss://localhost/ws", "wss://localhost/xmpp-websocket"]
    );

    let a = common::http::https(addr, "GET", "/.well-known/host-meta.json", &[], b"").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("access-control-allow-origin"), Some("*"));
    let j: serde_json::Value = serde_json::from_slice(&a.body).expect("JSON");
    assert_eq!(j["links"][0]["rel"], "urn:xmpp:alt-connections:websocket");
    assert_eq!(j["links"][0]["href"], "wss://localhost/ws");

    // A configured websocket_url replaces the derived ones.
    let (_server, addr) = server_with("websocket_url: wss://chat.example.org/ws\n");
    let a = common::http::https(addr, "GET", "/.well-known/host-meta.json", &[], b"").await;
    let j: serde_json::Value = serde_json::from_slice(&a.body).expect("JSON");
    assert_eq!(j["links"][0]["href"], "wss://chat.example.org/ws");
    assert_eq!(j["links"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn plain_websocket_from_loopback() {
    let server = Server::start_with(Config {
        extra_listeners: vec![ws_listener(false)],
        ..Config::default()
    });
    server.register("alice", "localhost", "secret");
    let addr = server
        .listeners
        .iter()
        .find(|l| l.module == "http")
        .expect("http listener")
        .addr;
    // ws:// (no TLS on the listener): served to loopback, as an ordinary
    // session (SCRAM over the plain connection a local proxy would have
    // terminated TLS for).
    let mut ws = try_connect_over(false, addr, "/ws", Some("xmpp"), &[])
        .await
        .expect("ws:// from loopback");
    ws.login_sasl("alice", "secret").await;
    assert_eq!(ws.bind("plain").await, "alice@localhost/plain");
    // A client asking for STARTTLS inside the WebSocket is refused.
    let mut ws = try_connect_over(false, addr, "/ws", Some("xmpp"), &[])
        .await
        .expect("ws:// from loopback");
    ws.open().await;
    ws.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        .await;
    let f = ws.recv().await;
    assert!(f.is("failure", "urn:ietf:params:xml:ns:xmpp-tls"), "{f}");
    let c = ws.recv().await;
    assert!(c.is("close", NS_FRAMING), "{c}");
    // host-meta on a plain listener gives ws:// URLs.
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tcp.write_all(
        b"GET /.well-known/host-meta.json HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await
    .expect("write");
    let mut raw = String::new();
    let _ = tcp.read_to_string(&mut raw).await;
    assert!(raw.contains("\"ws://localhost/ws\""), "{raw}");
}

/// Idle memory of bound sessions over WebSocket (wss) beside TCP
/// (STARTTLS), in one server (a measurement for docs/benchmarks.md, not a
/// check): `cargo test --release --test integration
/// c2s_websocket::idle_memory -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn idle_memory_websocket_beside_tcp() {
    const N: usize = 400;
    let (server, addr) = server_with("");
    for i in 0..N {
        server.register(&format!("w{i}"), "localhost", "pw");
        server.register(&format!("t{i}"), "localhost", "pw");
    }
    let settle = || tokio::time::sleep(Duration::from_secs(3));
    settle().await;
    let base = server.rss_kib();
    let mut tcp = Vec::new();
    for i in 0..N {
        tcp.push(Client::login(&server, &format!("t{i}"), "pw", Some("idle")).await);
    }
    settle().await;
    let after_tcp = server.rss_kib();
    let mut ws = Vec::new();
    for i in 0..N {
        ws.push(Ws::login(addr, &format!("w{i}"), "pw", "idle").await.0);
    }
    settle().await;
    let after_ws = server.rss_kib();
    let per = |kib: u64| kib as f64 / N as f64;
    println!(
        "idle sessions: {N} TCP (STARTTLS) {:.2} KiB each, {N} WebSocket (wss) {:.2} KiB each (server RSS {base} -> {after_tcp} -> {after_ws} KiB)",
        per(after_tcp.saturating_sub(base)),
        per(after_ws.saturating_sub(after_tcp)),
    );
    drop(ws);
    drop(tcp);
}

/// XEP-0388 SASL2 with XEP-0386 Bind 2 over WebSocket: offered beside
/// SASL (no -PLUS), one round trip to a bound session, then a ping.
#[tokio::test]
async fn sasl2_and_bind2_over_websocket() {
    const NS_SASL2: &str = "urn:xmpp:sasl:2";
    let (_server, addr) = server_with("");
    let mut ws = Ws::connect(addr).await;
    let f = ws.open().await;
    let auth = f
        .child_ns("authentication", NS_SASL2)
        .unwrap_or_else(|| panic!("no SASL2 over WebSocket: {f}"));
    let mechs: Vec<&str> = auth
        .children_named("mechanism")
        .map(|m| m.text.trim())
        .collect();
    assert!(mechs.contains(&"SCRAM-SHA-256"), "{auth}");
    assert!(!mechs.iter().any(|m| m.ends_with("-PLUS")), "{auth}");
    let mut sc = ScramClient::new(ScramHash::Sha256, "alice", "secret", Gs2Binding::No, None);
    ws.send(&format!(
        "<authenticate xmlns='{NS_SASL2}' mechanism='SCRAM-SHA-256'><initial-response>{}</initial-response>\
         <user-agent id='0f7e1a52-9a43-4f8e-b2f0-5b6a1d2c3e4f'/>\
         <bind xmlns='urn:xmpp:bind:0'><tag>Web</tag></bind></authenticate>",
        sasl_b64(&sc.client_first())
    ))
    .await;
    let ch = ws.recv().await;
    assert!(ch.is("challenge", NS_SASL2), "{ch}");
    let fin = sc.client_final(&b64(&ch.text)).expect("server-first");
    ws.send(&format!(
        "<response xmlns='{NS_SASL2}'>{}</response>",
        sasl_b64(&fin)
    ))
    .await;
    let ok = ws.recv().await;
    assert!(ok.is("success", NS_SASL2), "{ok}");
    sc.verify_server_final(&b64(&ok.child("additional-data").expect("data").text))
        .expect("server signature");
    let jid = ok
        .child("authorization-identifier")
        .map(|e| e.text.trim().to_string())
        .unwrap_or_default();
    assert!(jid.starts_with("alice@localhost/Web/"), "{ok}");
    assert!(ok.child("bound").is_some(), "{ok}");
    let id = ws.id();
    ws.send(&format!(
        "<iq xmlns='jabber:client' type='get' to='localhost' id='{id}'><ping xmlns='urn:xmpp:ping'/></iq>"
    ))
    .await;
    let r = ws
        .recv_where("ping result", |e| e.attr("id") == Some(id.as_str()))
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    assert_eq!(r.attr("to"), Some(jid.as_str()), "{r}");
}
