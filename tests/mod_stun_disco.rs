//! XEP-0215 external service discovery (`mod_stun_disco`) against the real
//! binary and a real TURN server: Rookery hands out coturn's address and
//! time-limited TURN REST credentials over XMPP, a TURN client allocates a
//! relay on coturn (`use-auth-secret`) with them and sends data through it
//! to a peer; credentials whose lifetime has passed, signed with another
//! secret, or with a wrong password are refused by coturn (401). Also the
//! stanza errors for bad requests (XEP-0215 §3.3: item-not-found,
//! bad-request; `set` not allowed; `<forbidden/>` outside `access`), a
//! config without the `secret` its restricted services need refused by
//! `reload_config` with its line, `rookery ctl check turn` on services that
//! answer (UDP and TCP) and on three that do not, and Jingle call signalling
//! (XEP-0353, XEP-0166) relayed between clients unchanged. The coturn test
//! says SKIPPED without Debian's `coturn` package (`.ci/run` installs it).

use crate::common;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use common::client::Client;
use common::server::DEFAULT_MODULES;
use common::turn::{coturn_available, Coturn, TurnClient};
use common::{Config, Element, Server};

const NS: &str = "urn:xmpp:extdisco:2";
const SECRET: &str = "shared-with-coturn";

fn modules(turn: SocketAddr, stun: SocketAddr, secret: &str, lifetime: &str) -> String {
    format!(
        "{DEFAULT_MODULES}  mod_stun_disco:\n    secret: {secret}\n    credentials_lifetime: {lifetime}\n    services:\n      - host: {}\n        port: {}\n        type: turn\n        transport: udp\n      - host: {}\n        port: {}\n        type: stun\n      - host: {}\n        port: {}\n        type: stun\n        transport: tcp\n",
        turn.ip(),
        turn.port(),
        stun.ip(),
        stun.port(),
        stun.ip(),
        stun.port()
    )
}

fn server(turn: SocketAddr, stun: SocketAddr) -> Server {
    let server = Server::start_with(Config {
        modules: modules(turn, stun, SECRET, "600"),
        ..Config::default()
    });
    server.register("alice", "localhost", "secret");
    server
}

/// Replace the server's `modules` text `from` by `to` and reload.
fn reconfigure(server: &Server, from: &str, to: &str) {
    let cfg = std::fs::read_to_string(server.config_path()).unwrap();
    assert!(cfg.contains(from), "{cfg}");
    std::fs::write(server.config_path(), cfg.replace(from, to)).unwrap();
    server.ctl_ok(&["reload_config"]);
}

async fn iq(c: &mut Client, kind: &str, payload: &str) -> Element {
    let id = c.id();
    c.request(
        &format!("<iq type='{kind}' to='localhost' id='{id}'>{payload}</iq>"),
        &id,
    )
    .await
}

/// The `<service/>` children of a result's payload.
fn services(r: &Element, payload: &str) -> Vec<Element> {
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    r.child_ns(payload, NS)
        .unwrap_or_else(|| panic!("no <{payload}/>: {r}"))
        .children_named("service")
        .cloned()
        .collect()
}

fn error_condition(r: &Element) -> String {
    assert_eq!(r.attr("type"), Some("error"), "{r}");
    r.child("error")
        .and_then(|e| e.children.iter().find(|c| c.name != "text"))
        .map(|c| c.name.clone())
        .unwrap_or_default()
}

/// Credentials for the TURN service from Rookery: (username, password).
async fn credentials(c: &mut Client, turn: SocketAddr) -> (String, String, String) {
    let r = iq(
        c,
        "get",
        &format!(
            "<credentials xmlns='{NS}'><service host='{}' port='{}' type='turn'/></credentials>",
            turn.ip(),
            turn.port()
        ),
    )
    .await;
    let s = services(&r, "credentials");
    assert_eq!(s.len(), 1, "{r}");
    let a = |n: &str| {
        s[0].attr(n)
            .unwrap_or_else(|| panic!("no {n}: {r}"))
            .to_string()
    };
    (a("username"), a("password"), a("expires"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turn_credentials_from_rookery_allocate_a_relay_on_coturn() {
    if !coturn_available() {
        eprintln!("SKIPPED: coturn is not installed (apt-get install coturn)");
        return;
    }
    let coturn = Coturn::start(SECRET, "rookery.test");
    let server = server(coturn.addr, coturn.addr);
    let mut c = Client::login(&server, "alice", "secret", Some("call")).await;

    // Discoverable, and the service list carries credentials for TURN only.
    let info = iq(
        &mut c,
        "get",
        "<query xmlns='http://jabber.org/protocol/disco#info'/>",
    )
    .await;
    assert!(info.to_string().contains(NS), "{info}");
    let all = services(
        &iq(&mut c, "get", &format!("<services xmlns='{NS}'/>")).await,
        "services",
    );
    assert_eq!(all.len(), 3, "{all:?}");
    let port = coturn.addr.port().to_string();
    assert_eq!(all[0].attr("type"), Some("turn"));
    assert_eq!(all[0].attr("host"), Some("127.0.0.1"));
    assert_eq!(all[0].attr("port"), Some(port.as_str()));
    assert_eq!(all[0].attr("transport"), Some("udp"));
    assert_eq!(all[0].attr("restricted"), Some("true"));
    assert!(all[0].attr("username").is_some() && all[0].attr("password").is_some());
    assert_eq!(all[1].attr("type"), Some("stun"));
    assert_eq!(all[1].attr("username"), None);
    assert_eq!(all[2].attr("transport"), Some("tcp"));
    let stun = iq(
        &mut c,
        "get",
        &format!("<services xmlns='{NS}' type='stun'/>"),
    )
    .await;
    assert_eq!(services(&stun, "services").len(), 2, "{stun}");

    // The credentials work: a relay on coturn, and data through it.
    let (user, pass, expires) = credentials(&mut c, coturn.addr).await;
    assert!(expires.ends_with('Z'), "{expires}");
    let expiry: u64 = user.split(':').next().unwrap().parse().expect("expiry");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!((now + 590..=now + 610).contains(&expiry), "{user}");
    let mut turn = TurnClient::new(coturn.addr);
    let relay = turn
        .allocate(&user, &pass)
        .unwrap_or_else(|e| panic!("allocation refused: {e:?}\n{}", coturn.log()));
    assert_eq!(relay.ip().to_string(), "127.0.0.1", "{relay}");
    assert!(
        (coturn.relay_ports.0..=coturn.relay_ports.1).contains(&relay.port()),
        "{relay} outside {:?}",
        coturn.relay_ports
    );
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    turn.create_permission(peer.local_addr().unwrap())
        .unwrap_or_else(|e| panic!("permission refused: {e:?}"));
    turn.send(peer.local_addr().unwrap(), b"hello through the relay");
    let mut buf = [0u8; 100];
    let (n, from) = peer.recv_from(&mut buf).expect("data relayed to the peer");
    assert_eq!(&buf[..n], b"hello through the relay");
    assert_eq!(from, relay);

    // A wrong password is refused.
    let e = TurnClient::new(coturn.addr)
        .allocate(&user, "bm90IHRoZSBwYXNzd29yZA==")
        .unwrap_err();
    assert_eq!(e.0, 401, "{e:?}");

    // `ctl check turn` finds the server answering, over UDP and TCP.
    let out = server.ctl_ok(&["check", "turn"]);
    assert_eq!(
        out.matches("answers STUN Binding requests").count(),
        3,
        "{out}"
    );
    assert!(
        out.contains(&format!("stun 127.0.0.1:{port} (tcp): answers")),
        "{out}"
    );

    // Credentials whose lifetime has passed are refused.
    let a = coturn.addr;
    reconfigure(
        &server,
        &modules(a, a, SECRET, "600"),
        &modules(a, a, SECRET, "1"),
    );
    let (user, pass, _) = credentials(&mut c, coturn.addr).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let e = TurnClient::new(coturn.addr)
        .allocate(&user, &pass)
        .unwrap_err();
    assert_eq!(e.0, 401, "expired credentials: {e:?}");

    // Credentials signed with a secret coturn does not share are refused.
    reconfigure(
        &server,
        &modules(a, a, SECRET, "1"),
        &modules(a, a, "not-the-shared-secret", "600"),
    );
    let (user, pass, _) = credentials(&mut c, coturn.addr).await;
    let e = TurnClient::new(coturn.addr)
        .allocate(&user, &pass)
        .unwrap_err();
    assert_eq!(e.0, 401, "wrong secret: {e:?}");
}

#[tokio::test]
async fn bad_requests_bad_config_and_silent_servers() {
    // Nothing answers at either service: one port bound but silent (UDP),
    // one with nothing bound.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let closed = {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap()
    };
    let turn = silent.local_addr().unwrap();
    let server = server(turn, closed);
    let mut c = Client::login(&server, "alice", "secret", Some("call")).await;

    let cred = |attrs: &str| format!("<credentials xmlns='{NS}'><service {attrs}/></credentials>");
    let port = turn.port();
    for (payload, kind, condition) in [
        (
            cred(&format!("host='192.0.2.7' port='{port}' type='turn'")),
            "get",
            "item-not-found",
        ),
        (
            cred("host='127.0.0.1' port='1' type='turn'"),
            "get",
            "item-not-found",
        ),
        (
            cred(&format!(
                "host='127.0.0.1' port='{}' type='stun'",
                closed.port()
            )),
            "get",
            "item-not-found",
        ),
        (cred("host='127.0.0.1'"), "get", "bad-request"),
        (
            cred("host='127.0.0.1' type='turn' port='http'"),
            "get",
            "bad-request",
        ),
        (format!("<credentials xmlns='{NS}'/>"), "get", "bad-request"),
        (format!("<whatever xmlns='{NS}'/>"), "get", "bad-request"),
        (format!("<services xmlns='{NS}'/>"), "set", "not-allowed"),
    ] {
        let r = iq(&mut c, kind, &payload).await;
        assert_eq!(error_condition(&r), condition, "{payload}: {r}");
    }
    // An unknown type filter is an empty list, not an error.
    let r = iq(
        &mut c,
        "get",
        &format!("<services xmlns='{NS}' type='ftp'/>"),
    )
    .await;
    assert!(services(&r, "services").is_empty(), "{r}");

    // Restricted services without the secret: refused with the line.
    let cfg = std::fs::read_to_string(server.config_path()).unwrap();
    std::fs::write(
        server.config_path(),
        cfg.replace(&format!("    secret: {SECRET}\n"), ""),
    )
    .unwrap();
    let (code, out, err) = server.ctl(&["reload_config"]);
    assert_ne!(code, 0, "{out}{err}");
    let text = format!("{out}{err}");
    assert!(
        text.contains("modules.mod_stun_disco.secret") && text.contains("rookery.yml:"),
        "{text}"
    );
    // The running configuration is kept.
    let r = iq(&mut c, "get", &format!("<services xmlns='{NS}'/>")).await;
    assert_eq!(services(&r, "services").len(), 3, "{r}");

    // An `access` rule that denies: <forbidden/>.
    std::fs::write(
        server.config_path(),
        cfg.replace(
            "  mod_stun_disco:\n",
            "  mod_stun_disco:\n    access: none\n",
        ),
    )
    .unwrap();
    server.ctl_ok(&["reload_config"]);
    let r = iq(&mut c, "get", &format!("<services xmlns='{NS}'/>")).await;
    assert_eq!(error_condition(&r), "forbidden", "{r}");
    std::fs::write(server.config_path(), cfg).unwrap();

    // `ctl check turn`: all three services are problems, within the timeout.
    let started = std::time::Instant::now();
    let (code, out, err) = server.ctl(&["check", "turn"]);
    let text = format!("{out}{err}");
    assert_eq!(code, 1, "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    let problems: Vec<&str> = text.lines().filter(|l| l.contains("PROBLEM")).collect();
    assert_eq!(problems.len(), 3, "{text}");
    assert!(
        problems[0].contains(&format!("turn 127.0.0.1:{port} (udp)"))
            && problems[0].contains("no answer"),
        "{text}"
    );
    assert!(
        problems[1].contains(&format!("stun 127.0.0.1:{} (udp)", closed.port())),
        "{text}"
    );
    assert!(
        problems[2].contains(&format!("stun 127.0.0.1:{} (tcp)", closed.port()))
            && problems[2].contains("cannot connect"),
        "{text}"
    );
    drop(silent);
}

/// Jingle is end to end: the server relays the call's signalling as it is —
/// XEP-0353 `<propose/>` to the callee's bare JID and `<proceed/>` back,
/// then a XEP-0166/0167/0176/0320 `session-initiate` iq between full JIDs
/// with its payload (codecs, ICE candidates, DTLS fingerprint) intact, and
/// the callee's result back to the caller.
#[tokio::test]
async fn jingle_signalling_is_relayed_between_clients() {
    let server = Server::start();
    server.register("alice", "localhost", "secret");
    server.register("bob", "localhost", "secret");
    let mut alice = Client::login(&server, "alice", "secret", Some("phone")).await;
    let mut bob = Client::login(&server, "bob", "secret", Some("laptop")).await;
    for c in [&mut alice, &mut bob] {
        c.send("<presence/>").await;
    }
    const JMI: &str = "urn:xmpp:jingle-message:0";
    alice
        .send(&format!(
            "<message to='bob@localhost' type='chat' id='p1'><propose xmlns='{JMI}' id='call-1'><description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/></propose><store xmlns='urn:xmpp:hints'/></message>"
        ))
        .await;
    let propose = bob
        .recv_where("the propose", |e| {
            e.name == "message" && e.child_ns("propose", JMI).is_some()
        })
        .await;
    assert_eq!(
        propose.attr("from"),
        Some("alice@localhost/phone"),
        "{propose}"
    );
    bob.send(&format!(
        "<message to='alice@localhost/phone' type='chat' id='p2'><proceed xmlns='{JMI}' id='call-1'/></message>"
    ))
    .await;
    let proceed = alice
        .recv_where("the proceed", |e| {
            e.name == "message" && e.child_ns("proceed", JMI).is_some()
        })
        .await;
    assert_eq!(
        proceed.attr("from"),
        Some("bob@localhost/laptop"),
        "{proceed}"
    );

    let fingerprint = "02:1A:CC:54:27:AB:EB:9C:53:3F:3E:4B:65:2E:7D:46:3F:54:42:CD:54:F1:7A:03:A2:7D:F9:B0:7F:46:19:B2";
    alice
        .send(&format!(
            "<iq type='set' to='bob@localhost/laptop' id='j1'><jingle xmlns='urn:xmpp:jingle:1' action='session-initiate' initiator='alice@localhost/phone' sid='call-1'><content creator='initiator' name='voice'><description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'><payload-type id='111' name='opus' clockrate='48000' channels='2'/></description><transport xmlns='urn:xmpp:jingle:transports:ice-udp:1' ufrag='8hhy' pwd='asd88fgpdd777uzjYhagZg'><fingerprint xmlns='urn:xmpp:jingle:apps:dtls:0' hash='sha-256' setup='actpass'>{fingerprint}</fingerprint><candidate component='1' foundation='1' generation='0' id='el0747fg11' ip='192.0.2.10' network='1' port='8998' priority='2130706431' protocol='udp' type='host'/><candidate component='1' foundation='2' generation='0' id='y3s2b30v3r' ip='203.0.113.3' network='1' port='49152' priority='16777215' protocol='udp' rel-addr='192.0.2.10' rel-port='8998' type='relay'/></transport></content></jingle></iq>"
        ))
        .await;
    let initiate = bob
        .recv_where("session-initiate", |e| {
            e.name == "iq" && e.attr("id") == Some("j1")
        })
        .await;
    assert_eq!(
        initiate.attr("from"),
        Some("alice@localhost/phone"),
        "{initiate}"
    );
    let jingle = initiate
        .child_ns("jingle", "urn:xmpp:jingle:1")
        .expect("jingle");
    let transport = jingle
        .child("content")
        .and_then(|c| c.child_ns("transport", "urn:xmpp:jingle:transports:ice-udp:1"))
        .unwrap_or_else(|| panic!("transport: {initiate}"));
    assert_eq!(
        transport.children_named("candidate").count(),
        2,
        "{initiate}"
    );
    assert_eq!(
        transport
            .child("fingerprint")
            .map(|f| f.text.clone())
            .as_deref(),
        Some(fingerprint),
        "{initiate}"
    );
    bob.send("<iq type='result' to='alice@localhost/phone' id='j1'/>")
        .await;
    let ack = alice
        .recv_where("the result", |e| {
            e.name == "iq" && e.attr("id") == Some("j1")
        })
        .await;
    assert_eq!(ack.attr("type"), Some("result"), "{ack}");
    assert_eq!(ack.attr("from"), Some("bob@localhost/laptop"), "{ack}");
}
