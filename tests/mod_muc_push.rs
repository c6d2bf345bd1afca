//! Mentions in rooms wake phones (XEP-0045 rooms with XEP-0357 push, as
//! ejabberd issue #2641 asks) against the real binary, with the app server
//! played by a XEP-0114 component: a groupchat message that names an
//! occupant whose only session is detached (XEP-0198) by nick, or that
//! carries a XEP-0372 mention reference to an offline member's JID,
//! produces a push notification for that account (with the body and the
//! sender's room JID under `include_body`/`include_sender`); a message
//! that mentions nobody, or mentions an occupant who is connected, or an
//! offline account that is no member of the room, wakes nobody; a
//! registered nick (XEP-0045 §7.10) names its offline owner too.

use crate::common;
use crate::mod_muc_archive::{iq, join, room};

use std::time::Duration;

use common::client::Client;
use common::server::DEFAULT_MODULES;
use common::{Config, Element, Server};

const PUSH: &str = "urn:xmpp:push:0";
const APP: &str = "push.localhost";
const MUC_ADMIN: &str = "http://jabber.org/protocol/muc#admin";
const REF: &str = "urn:xmpp:reference:0";

pub fn server() -> Server {
    let server = Server::start_with(Config {
        extra_listeners: vec![format!(
            "port: 0\nip: 127.0.0.1\nmodule: ejabberd_service\nhosts:\n  {APP}:\n    password: s3cret"
        )],
        modules: format!(
            "{DEFAULT_MODULES}  mod_push: {{include_body: true, include_sender: true}}\n"
        ),
        ..Config::default()
    });
    for (u, p) in [
        ("alice", "secret"),
        ("bob", "hunter2"),
        ("carol", "carolpw"),
        ("dave", "davepw"),
    ] {
        server.register(u, "localhost", p);
    }
    server
}

pub async fn enable_push(c: &mut Client, node: &str) {
    let id = c.id();
    let r = c
        .request(
            &format!(
                "<iq type='set' id='{id}'><enable xmlns='{PUSH}' jid='{APP}' node='{node}'/></iq>"
            ),
            &id,
        )
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
}

/// The next push notification: (account it is for, node, form fields).
pub async fn notification(app: &mut Client) -> (String, String, Vec<(String, String)>) {
    let iq = app
        .recv_where("push notification", |e| {
            e.name == "iq" && e.attr("type") == Some("set")
        })
        .await;
    let publish = iq
        .child("pubsub")
        .and_then(|p| p.child("publish"))
        .unwrap_or_else(|| panic!("no publish: {iq}"));
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
    (
        iq.attr("from").unwrap_or("").to_string(),
        publish.attr("node").unwrap_or("").to_string(),
        fields,
    )
}

pub fn field<'a>(fields: &'a [(String, String)], var: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == var)
        .map(|(_, v)| v.as_str())
}

/// A groupchat message to the room (with extra payloads), after the
/// server has handled it.
pub async fn say(c: &mut Client, r: &str, body: &str, extra: &str) {
    c.send(&format!(
        "<message type='groupchat' to='{r}'><body>{body}</body>{extra}</message>"
    ))
    .await;
    c.ping("localhost").await;
}

pub fn mention(jid: &str) -> String {
    format!("<reference xmlns='{REF}' type='mention' uri='xmpp:{jid}'/>")
}

/// Logs in, joins `r` as `nick` with stream management on, then loses
/// its connection: the session waits for resumption (detached).
pub async fn detached_occupant(server: &Server, user: &str, pw: &str, r: &str, nick: &str) {
    let mut c = Client::login(server, user, pw, Some("phone")).await;
    enable_push(&mut c, "phone").await;
    c.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
        .await;
    c.recv_where("enabled", |e| e.name == "enabled").await;
    join(&mut c, r, nick, "<history maxstanzas='0'/>").await;
    c.ping("localhost").await;
    drop(c);
    tokio::time::sleep(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn mentions_wake_detached_and_offline_members() {
    let server = server();
    let mut app = common::component::connect(&server, APP, "s3cret").await;
    let r = room("pushy");
    let mut bob = Client::login(&server, "bob", "hunter2", Some("pc")).await;
    join(&mut bob, &r, "bob", "").await;
    // Carol is a member, registered for push, offline; Dave registered
    // for push but is nobody in the room.
    let set = iq(
        &mut bob,
        "set",
        &r,
        &format!(
            "<query xmlns='{MUC_ADMIN}'><item jid='carol@localhost' affiliation='member'/></query>"
        ),
    )
    .await;
    assert_eq!(set.attr("type"), Some("result"), "{set}");
    for (u, p) in [("carol", "carolpw"), ("dave", "davepw")] {
        let mut c = Client::login(&server, u, p, Some("phone")).await;
        enable_push(&mut c, "phone").await;
        c.close().await;
    }
    // Alice is in the room from a phone that lost its connection.
    detached_occupant(&server, "alice", "secret", &r, "Alice").await;

    // A message that mentions nobody wakes nobody (not even the detached
    // occupant it reaches).
    say(&mut bob, &r, "hello everyone, malice aforethought", "").await;
    app.expect_silence(Duration::from_millis(400)).await;

    // Her nick, in any case, as a word of its own: her phone wakes.
    say(&mut bob, &r, "alice: are you there?", "").await;
    let (to, node, fields) = notification(&mut app).await;
    assert_eq!(to, "alice@localhost");
    assert_eq!(node, "phone");
    assert_eq!(field(&fields, "FORM_TYPE"), Some("urn:xmpp:push:summary"));
    assert_eq!(
        field(&fields, "last-message-body"),
        Some("alice: are you there?")
    );
    assert_eq!(
        field(&fields, "last-message-sender"),
        Some(format!("{r}/bob").as_str())
    );
    app.expect_silence(Duration::from_millis(300)).await;

    // A XEP-0372 reference to an offline member's JID.
    say(&mut bob, &r, "see the minutes", &mention("carol@localhost")).await;
    let (to, _, fields) = notification(&mut app).await;
    assert_eq!(to, "carol@localhost");
    assert_eq!(field(&fields, "last-message-body"), Some("see the minutes"));
    // A reference to a nick in the room.
    say(&mut bob, &r, "and you", &mention(&format!("{r}/Alice"))).await;
    let (to, _, _) = notification(&mut app).await;
    assert_eq!(to, "alice@localhost");

    // Dave is no member: a reference to him wakes nothing; the sender
    // mentioning himself neither.
    say(&mut bob, &r, "dave?", &mention("dave@localhost")).await;
    say(&mut bob, &r, "bob here", &mention("bob@localhost")).await;
    app.expect_silence(Duration::from_millis(400)).await;

    // Carol connected (and joined): she reads it herself, no push.
    let mut carol = Client::login(&server, "carol", "carolpw", Some("pc")).await;
    join(&mut carol, &r, "carol", "<history maxstanzas='0'/>").await;
    say(
        &mut bob,
        &r,
        "carol: welcome back",
        &mention("carol@localhost"),
    )
    .await;
    let got: Element = carol
        .recv_where("the mention", |e| {
            e.name == "message" && e.child_text("body") == Some("carol: welcome back")
        })
        .await;
    assert_eq!(got.attr("type"), Some("groupchat"));
    app.expect_silence(Duration::from_millis(400)).await;
}

/// A registered nick (XEP-0045 §7.10) names its owner while offline.
#[tokio::test]
async fn a_registered_nick_wakes_its_offline_owner() {
    let server = server();
    let mut app = common::component::connect(&server, APP, "s3cret").await;
    let r = room("regpush");
    let mut bob = Client::login(&server, "bob", "hunter2", Some("pc")).await;
    join(&mut bob, &r, "bob", "").await;
    let mut carol = Client::login(&server, "carol", "carolpw", Some("phone")).await;
    enable_push(&mut carol, "phone").await;
    let ok = crate::mod_muc_register::register(&mut carol, &r, "Caz").await;
    assert_eq!(ok.attr("type"), Some("result"), "{ok}");
    carol.close().await;
    say(&mut bob, &r, "@caz what do you think?", "").await;
    let (to, _, fields) = notification(&mut app).await;
    assert_eq!(to, "carol@localhost");
    assert_eq!(
        field(&fields, "last-message-body"),
        Some("@caz what do you think?")
    );
}
