//! XEP-0114 external components against the real binary: an
//! `ejabberd_service` listener, the handshake, stanzas both ways between a
//! component and a local user, and the refusals (wrong secret, unknown
//! domain, spoofed `from`, a second connection for the same domain, a
//! component that is not connected).

use crate::common;

use common::client::Client;
use common::{Config, Element, Server, StreamEvent};

const NS: &str = "jabber:component:accept";
const GW: &str = "gw.localhost";
const SECRET: &str = "s3cret";

fn server() -> Server {
    let server = Server::start_with(Config {
        extra_listeners: vec![format!(
            "port: 0\nip: 127.0.0.1\nmodule: ejabberd_service\nhosts:\n  {GW}:\n    password: {SECRET}\n  other.localhost: {{}}\npassword: shared"
        )],
        ..Config::default()
    });
    server.register("alice", "localhost", "secret");
    server
}

async fn component(server: &Server, domain: &str, secret: &str) -> (Client, StreamEvent) {
    common::component::handshake(server, domain, secret).await
}

async fn connected(server: &Server) -> Client {
    common::component::connect(server, GW, SECRET).await
}

fn is_message(e: &Element, body: &str) -> bool {
    e.name == "message" && e.child_text("body") == Some(body)
}

#[tokio::test]
async fn messages_iq_and_presence_flow_both_ways() {
    let server = server();
    let mut comp = connected(&server).await;
    let mut alice = Client::login(&server, "alice", "secret", Some("pc")).await;
    alice.presence().await;

    // User → component, with the user's full JID as from.
    alice
        .send(&format!(
            "<message to='bot@{GW}' type='chat' id='m1'><body>hello bot</body></message>"
        ))
        .await;
    let got = comp
        .recv_where("message from alice", |e| is_message(e, "hello bot"))
        .await;
    assert_eq!(got.attr("from"), Some(alice.full_jid().as_str()), "{got}");
    assert_eq!(got.attr("to"), Some(format!("bot@{GW}").as_str()));

    // Component → user.
    comp.send(&format!(
        "<message from='bot@{GW}/x' to='{}' type='chat'><body>hello alice</body></message>",
        alice.full_jid()
    ))
    .await;
    let got = alice
        .recv_where("message from the bot", |e| is_message(e, "hello alice"))
        .await;
    assert_eq!(got.attr("from"), Some(format!("bot@{GW}/x").as_str()));

    // An iq to the component's domain is answered by the component.
    alice
        .send(&format!(
            "<iq type='get' to='{GW}' id='v1'><query xmlns='jabber:iq:version'/></iq>"
        ))
        .await;
    let iq = comp.recv_where("version query", |e| e.name == "iq").await;
    assert_eq!(iq.attr("from"), Some(alice.full_jid().as_str()));
    comp.send(&format!(
        "<iq type='result' from='{GW}' to='{}' id='v1'><query xmlns='jabber:iq:version'><name>Gateway</name></query></iq>",
        alice.full_jid()
    ))
    .await;
    let r = alice
        .recv_where("version result", |e| {
            e.name == "iq" && e.attr("id") == Some("v1")
        })
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    assert_eq!(r.attr("from"), Some(GW));

    // Subscribing to a contact at the gateway: the request reaches the
    // component, its approval lands in alice's roster.
    alice
        .send(&format!("<presence to='bot@{GW}' type='subscribe'/>"))
        .await;
    let sub = comp
        .recv_where("subscribe", |e| {
            e.name == "presence" && e.attr("type") == Some("subscribe")
        })
        .await;
    assert_eq!(sub.attr("from"), Some("alice@localhost"), "{sub}");
    comp.send(&format!(
        "<presence from='bot@{GW}' to='alice@localhost' type='subscribed'/>"
    ))
    .await;
    comp.send(&format!(
        "<presence from='bot@{GW}/x' to='alice@localhost'><show>chat</show></presence>"
    ))
    .await;
    let p = alice
        .recv_where("bot presence", |e| {
            e.name == "presence"
                && e.attr("from") == Some(&format!("bot@{GW}/x"))
                && e.attr("type").is_none()
        })
        .await;
    assert_eq!(p.child_text("show"), Some("chat"));
    let id = alice.id();
    let roster = alice
        .request(
            &format!("<iq type='get' id='{id}'><query xmlns='jabber:iq:roster'/></iq>"),
            &id,
        )
        .await;
    let item = roster
        .child("query")
        .and_then(|q| {
            q.children_named("item")
                .find(|i| i.attr("jid") == Some(&format!("bot@{GW}")))
        })
        .map(|i| i.attr("subscription").unwrap_or("").to_string());
    assert_eq!(item.as_deref(), Some("to"), "{roster}");

    // The server lists the connected component in disco#items (then the
    // MUC service of the default test modules).
    let id = alice.id();
    let items = alice
        .request(
            &format!("<iq type='get' to='localhost' id='{id}'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>"),
            &id,
        )
        .await;
    let jids: Vec<&str> = items
        .child("query")
        .map(|q| {
            q.children_named("item")
                .filter_map(|i| i.attr("jid"))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(jids, [GW, "conference.localhost"], "{items}");
}

#[tokio::test]
async fn refusals() {
    let server = server();
    // Wrong secret.
    let (mut c, answer) = component(&server, GW, "wrong").await;
    match answer {
        StreamEvent::Stanza(e) if e.name == "error" => {
            assert!(e.child("not-authorized").is_some(), "{e}");
        }
        other => panic!("wrong secret accepted: {other:?}"),
    }
    assert!(matches!(c.recv_event().await, StreamEvent::End));
    // A domain this listener does not serve.
    let mut c = Client::connect(common::component::service_addr(&server)).await;
    c.send(&format!(
        "<?xml version='1.0'?><stream:stream xmlns='{NS}' xmlns:stream='http://etherx.jabber.org/streams' to='nobody.localhost'>"
    ))
    .await;
    assert!(matches!(c.recv_event().await, StreamEvent::Header(_)));
    assert_eq!(c.expect_stream_error().await, "host-unknown");
    // Each refusal is logged once at info with the component's address.
    for cond in ["not-authorized", "host-unknown"] {
        let needle = format!("component: sending stream error {cond}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let log = server.stderr_tail();
            let n = log
                .lines()
                .filter(|l| {
                    l.contains("INFO") && l.contains(&needle) && l.contains("peer=127.0.0.1:")
                })
                .count();
            if n == 1 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{needle}: logged {n} times, not once: {log}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    // The listener-wide password serves the host without its own.
    let (_other, answer) = component(&server, "other.localhost", "shared").await;
    assert!(
        matches!(answer, StreamEvent::Stanza(ref e) if e.name == "handshake"),
        "{answer:?}"
    );

    // Not connected yet: the user's message bounces with service-unavailable.
    let mut alice = Client::login(&server, "alice", "secret", Some("pc")).await;
    alice
        .send(&format!(
            "<message to='bot@{GW}' id='lost'><body>anyone?</body></message>"
        ))
        .await;
    alice
        .expect_message_error("lost", "service-unavailable")
        .await;

    // A second connection for a connected domain is refused.
    let mut comp = connected(&server).await;
    let (mut second, answer) = component(&server, GW, SECRET).await;
    match answer {
        StreamEvent::Stanza(e) if e.name == "error" => {
            assert!(e.child("conflict").is_some(), "{e}")
        }
        other => panic!("second component accepted: {other:?}"),
    }
    assert!(matches!(second.recv_event().await, StreamEvent::End));

    // Spoofing a local user ends the component's stream.
    comp.send("<message from='alice@localhost' to='alice@localhost'><body>forged</body></message>")
        .await;
    assert_eq!(comp.expect_stream_error().await, "invalid-from");
    alice
        .expect_silence(std::time::Duration::from_millis(300))
        .await;
}

/// A component nobody here wrote: slixmpp's `ComponentXMPP` (an echo
/// gateway) and a slixmpp client (`tests/interop/slixmpp_component.py`).
#[test]
fn slixmpp_component_and_client() {
    let server = server();
    let port = common::component::service_addr(&server).port().to_string();
    common::interop::run_slixmpp_script(
        "slixmpp_component.py",
        &server,
        &[
            "--service-port",
            &port,
            "--jid",
            "alice@localhost",
            "--password",
            "secret",
            "--component",
            GW,
            "--secret",
            SECRET,
        ],
    );
}
