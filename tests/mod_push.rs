//! XEP-0357 push notifications (`mod_push`) against the real binary, with
//! an app server played by a XEP-0114 component: a client registers it,
//! and messages stored offline or queued for a session whose connection
//! died wake it with a summary notification; chat states do not; after
//! `<disable/>` nothing is pushed.

use crate::common;

use std::time::Duration;

use common::client::Client;
use common::server::DEFAULT_MODULES;
use common::{Config, Server};

const PUSH: &str = "urn:xmpp:push:0";
const APP: &str = "push.localhost";

fn server() -> Server {
    let server = Server::start_with(Config {
        extra_listeners: vec![format!(
            "port: 0\nip: 127.0.0.1\nmodule: ejabberd_service\nhosts:\n  {APP}:\n    password: s3cret"
        )],
        modules: format!("{DEFAULT_MODULES}  mod_push: {{}}\n"),
        ..Config::default()
    });
    server.register("alice", "localhost", "secret");
    server.register("bob", "localhost", "hunter2");
    server
}

/// The app server: a component for `APP`.
async fn app_server(server: &Server) -> Client {
    common::component::connect(server, APP, "s3cret").await
}

async fn enable(c: &mut Client, node: &str) {
    let id = c.id();
    let r = c
        .request(
            &format!("<iq type='set' id='{id}'><enable xmlns='{PUSH}' jid='{APP}' node='{node}'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field><field var='secret'><value>tok-{node}</value></field></x></enable></iq>"),
            &id,
        )
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
}

/// The next push notification: (node, form fields).
async fn notification(app: &mut Client) -> (String, Vec<(String, String)>, String) {
    let iq = app
        .recv_where("push notification", |e| {
            e.name == "iq" && e.attr("type") == Some("set")
        })
        .await;
    assert_eq!(iq.attr("from"), Some("alice@localhost"), "{iq}");
    let pubsub = iq.child("pubsub").expect("pubsub");
    let publish = pubsub.child("publish").expect("publish");
    let node = publish.attr("node").unwrap_or("").to_string();
    let form = publish
        .child("item")
        .and_then(|i| i.child("notification"))
        .and_then(|n| n.child("x"))
        .unwrap_or_else(|| panic!("no notification form: {iq}"));
    let fields = form
        .children_named("field")
        .map(|f| {
            (
                f.attr("var").unwrap_or("").to_string(),
                f.child_text("value").unwrap_or("").to_string(),
            )
        })
        .collect();
    let secret = pubsub
        .child("publish-options")
        .and_then(|p| p.child("x"))
        .map(|x| x.to_string())
        .unwrap_or_default();
    (node, fields, secret)
}

fn field<'a>(fields: &'a [(String, String)], var: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == var)
        .map(|(_, v)| v.as_str())
}

async fn chat(from: &mut Client, to: &str, body: &str) {
    from.send(&format!(
        "<message to='{to}' type='chat'><body>{body}</body></message>"
    ))
    .await;
    from.ping("localhost").await;
}

#[tokio::test]
async fn offline_and_detached_messages_wake_the_app_server() {
    let server = server();
    let mut app = app_server(&server).await;
    let mut bob = Client::login(&server, "bob", "hunter2", Some("pc")).await;

    // The account advertises push.
    let mut alice = Client::login(&server, "alice", "secret", Some("phone")).await;
    let id = alice.id();
    let info = alice
        .request(&format!("<iq type='get' to='alice@localhost' id='{id}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"), &id)
        .await;
    assert!(info.to_string().contains(PUSH), "{info}");
    enable(&mut alice, "n1").await;
    alice.close().await;

    // Offline: a message with a body is pushed, without sender, with the
    // placeholder body (ejabberd's defaults), and the client's secret.
    chat(&mut bob, "alice@localhost", "secret plans").await;
    let (node, fields, options) = notification(&mut app).await;
    assert_eq!(node, "n1");
    assert_eq!(field(&fields, "FORM_TYPE"), Some("urn:xmpp:push:summary"));
    assert_eq!(field(&fields, "message-count"), Some("1"));
    assert_eq!(field(&fields, "last-message-sender"), None);
    assert_eq!(field(&fields, "last-message-body"), Some("New message"));
    assert!(options.contains("tok-n1"), "{options}");
    // A chat state alone wakes nobody.
    bob.send("<message to='alice@localhost' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>").await;
    bob.ping("localhost").await;
    app.expect_silence(Duration::from_millis(400)).await;

    // A stream-management session whose connection died: pushed too.
    let mut alice = Client::login(&server, "alice", "secret", Some("phone")).await;
    alice
        .send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
        .await;
    alice.recv_where("enabled", |e| e.name == "enabled").await;
    alice.presence().await;
    alice.ping("localhost").await;
    drop(alice);
    tokio::time::sleep(Duration::from_millis(300)).await;
    chat(&mut bob, "alice@localhost/phone", "while away").await;
    let (node, _, _) = notification(&mut app).await;
    assert_eq!(node, "n1");
}

#[tokio::test]
async fn disable_stops_notifications_and_others_cannot_register() {
    let server = server();
    let mut app = app_server(&server).await;
    let mut bob = Client::login(&server, "bob", "hunter2", Some("pc")).await;
    let mut alice = Client::login(&server, "alice", "secret", Some("phone")).await;
    enable(&mut alice, "n1").await;
    enable(&mut alice, "n2").await;
    // Disabling one node keeps the other.
    let id = alice.id();
    let r = alice
        .request(
            &format!(
                "<iq type='set' id='{id}'><disable xmlns='{PUSH}' jid='{APP}' node='n1'/></iq>"
            ),
            &id,
        )
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    // Bob cannot register a service for alice.
    let id = bob.id();
    let r = bob
        .request(&format!("<iq type='set' to='alice@localhost' id='{id}'><enable xmlns='{PUSH}' jid='{APP}' node='evil'/></iq>"), &id)
        .await;
    assert_eq!(r.attr("type"), Some("error"), "{r}");
    alice.close().await;
    chat(&mut bob, "alice@localhost", "one").await;
    let (node, _, _) = notification(&mut app).await;
    assert_eq!(node, "n2");
    app.expect_silence(Duration::from_millis(300)).await;

    // Disabling the whole service (no node): nothing more.
    let mut alice = Client::login(&server, "alice", "secret", Some("phone")).await;
    let id = alice.id();
    let r = alice
        .request(
            &format!("<iq type='set' id='{id}'><disable xmlns='{PUSH}' jid='{APP}'/></iq>"),
            &id,
        )
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    alice.close().await;
    chat(&mut bob, "alice@localhost", "two").await;
    app.expect_silence(Duration::from_millis(400)).await;
}
