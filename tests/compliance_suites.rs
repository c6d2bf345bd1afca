//! XEP-0479 (XMPP Compliance Suites 2023): the server rows Rookery meets,
//! each checked against the real binary by a protocol exchange, the way a
//! compliance tester does, with the default modules on. docs/features.md
//! ("XEP-0479 compliance") records the result of each row, including the
//! rows Rookery does not meet (those have no check here).

use crate::common;

use std::collections::BTreeSet;

use common::client::Client;
use common::server::DEFAULT_MODULES;
use common::{Config, Element, Server};

const INFO: &str = "http://jabber.org/protocol/disco#info";

fn server() -> Server {
    let server = Server::start_with(Config {
        extra_listeners: vec![
            "port: 0\nip: 127.0.0.1\nmodule: ejabberd_service\nhosts:\n  gw.localhost:\n    password: s3cret".to_string(),
            "port: 0\nip: 127.0.0.1\nmodule: ejabberd_http\ntls: true\nrequest_handlers:\n  /upload: mod_http_upload".to_string(),
        ],
        modules: format!("{DEFAULT_MODULES}  mod_http_upload: {{}}\n  mod_push: {{}}\n"),
        ..Config::default()
    });
    server.register("alice", "localhost", "secret");
    server.register("bob", "localhost", "hunter2");
    server
}

async fn disco_info(c: &mut Client, to: &str) -> (BTreeSet<String>, Vec<(String, String)>) {
    let id = c.id();
    let r = c
        .request(
            &format!("<iq type='get' to='{to}' id='{id}'><query xmlns='{INFO}'/></iq>"),
            &id,
        )
        .await;
    assert_eq!(r.attr("type"), Some("result"), "disco#info of {to}: {r}");
    let q = r.child_ns("query", INFO).expect("query");
    let features = q
        .children_named("feature")
        .filter_map(|f| f.attr("var").map(str::to_string))
        .collect();
    let ids = q
        .children_named("identity")
        .map(|i| {
            (
                i.attr("category").unwrap_or("").to_string(),
                i.attr("type").unwrap_or("").to_string(),
            )
        })
        .collect();
    (features, ids)
}

async fn iq_ok(c: &mut Client, xml_without_id: &str) -> Element {
    let id = c.id();
    let xml = xml_without_id.replacen("<iq ", &format!("<iq id='{id}' "), 1);
    let r = c.request(&xml, &id).await;
    assert_eq!(r.attr("type"), Some("result"), "{xml} → {r}");
    r
}

/// Core Compliance Suite: Server and Advanced Server.
#[tokio::test]
async fn core_suite() {
    let server = server();
    // Core features (RFC 6120) and TLS (RFC 7590): STARTTLS, SASL, bind,
    // over TLS 1.2 or later.
    let mut c = Client::login(&server, "alice", "secret", Some("core")).await;
    let version = c
        .tls
        .as_ref()
        .map(|t| t.version.clone())
        .unwrap_or_default();
    assert!(
        version.contains("TLSv1_3") || version.contains("TLSv1_2"),
        "TLS version {version}"
    );
    // Feature discovery (XEP-0030).
    let (features, ids) = disco_info(&mut c, "localhost").await;
    assert!(ids.contains(&("server".into(), "im".into())), "{ids:?}");
    assert!(features.contains(INFO), "{features:?}");
    // Feature broadcasts (XEP-0115, Advanced): the server's caps in stream features.
    let f = c.features.clone().expect("features");
    assert!(
        f.child_ns("c", "http://jabber.org/protocol/caps").is_some(),
        "{f}"
    );
    // Event publishing (XEP-0163, Advanced): PEP on the account.
    let (acct, ids) = disco_info(&mut c, "alice@localhost").await;
    assert!(ids.contains(&("pubsub".into(), "pep".into())), "{ids:?}");
    assert!(
        acct.contains("http://jabber.org/protocol/pubsub#publish"),
        "{acct:?}"
    );
    // Direct TLS (XEP-0368, Advanced).
    let mut d = Client::connect_tls(server.c2s_tls()).await;
    d.login_scram("bob", "hunter2").await;
    d.bind(Some("direct")).await.expect("bind over direct TLS");
    // Server extensibility (XEP-0114): a component hand-shakes.
    common::component::connect(&server, "gw.localhost", "s3cret").await;
}

/// Web Compliance Suite (Server and Advanced Server): web connection
/// mechanisms, RFC 7395 WebSocket and XEP-0206 BOSH, on the listener the
/// embedded default configuration has (`/ws`, `/bosh`), each carrying a
/// SASL login, a bound session and a stanza round trip. (A real web
/// client in a real browser over both: `tests/interop_converse.rs`.)
#[tokio::test]
async fn web_suite() {
    let server = Server::start_with(Config {
        extra_listeners: vec![
            "port: 0\nip: 127.0.0.1\nmodule: ejabberd_http\ntls: true\nrequest_handlers:\n  /ws: ejabberd_http_ws\n  /bosh: mod_bosh".to_string(),
        ],
        ..Config::default()
    });
    server.register("alice", "localhost", "secret");
    let http = server
        .listeners
        .iter()
        .find(|l| l.module == "http")
        .expect("http listener")
        .addr;
    // RFC 7395.
    let mut ws = crate::c2s_websocket::Ws::connect(http).await;
    ws.login_sasl("alice", "secret").await;
    ws.send("<iq xmlns='jabber:client' type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
        .await;
    let r = ws.recv_where("bind", |e| e.attr("id") == Some("b")).await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    ws.send("<iq xmlns='jabber:client' type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let r = ws.recv_where("pong", |e| e.attr("id") == Some("p")).await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    // XEP-0206.
    let mut bosh = crate::c2s_bosh::Bosh::login(http, "alice", "secret", "bosh").await;
    bosh.send("<iq xmlns='jabber:client' type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let r = bosh.recv_where("pong", |e| e.attr("id") == Some("p")).await;
    assert_eq!(r.attr("type"), Some("result"), "{r:?}");
}

/// IM Compliance Suite: the Server and Advanced Server rows Rookery meets.
#[tokio::test]
async fn im_suite() {
    let server = server();
    let mut c = Client::login(&server, "alice", "secret", Some("im")).await;
    // Core features (RFC 6121): roster get, with versioning offered.
    let f = c.features.clone().expect("features");
    assert!(
        f.child_ns("ver", "urn:xmpp:features:rosterver").is_some(),
        "{f}"
    );
    iq_ok(
        &mut c,
        "<iq type='get'><query xmlns='jabber:iq:roster'/></iq>",
    )
    .await;
    let (features, _) = disco_info(&mut c, "localhost").await;
    // vcard-temp (XEP-0054): set, then get it back.
    assert!(features.contains("vcard-temp"));
    iq_ok(
        &mut c,
        "<iq type='set'><vCard xmlns='vcard-temp'><FN>Alice</FN></vCard></iq>",
    )
    .await;
    let r = iq_ok(&mut c, "<iq type='get'><vCard xmlns='vcard-temp'/></iq>").await;
    assert_eq!(
        r.child("vCard").and_then(|v| v.child_text("FN")),
        Some("Alice"),
        "{r}"
    );
    // Outbound message synchronization (XEP-0280).
    assert!(features.contains("urn:xmpp:carbons:2"));
    iq_ok(
        &mut c,
        "<iq type='set'><enable xmlns='urn:xmpp:carbons:2'/></iq>",
    )
    .await;
    // User blocking (XEP-0191, Advanced).
    assert!(features.contains("urn:xmpp:blocking"));
    iq_ok(&mut c, "<iq type='set'><block xmlns='urn:xmpp:blocking'><item jid='spam@example.org'/></block></iq>").await;
    let r = iq_ok(
        &mut c,
        "<iq type='get'><blocklist xmlns='urn:xmpp:blocking'/></iq>",
    )
    .await;
    assert!(r.to_string().contains("spam@example.org"), "{r}");
    // Private XML storage (XEP-0049, Advanced).
    assert!(features.contains("jabber:iq:private"));
    iq_ok(&mut c, "<iq type='set'><query xmlns='jabber:iq:private'><note xmlns='urn:example:n'>x</note></query></iq>").await;
    // Persistent storage of private data via PubSub (XEP-0223, Advanced):
    // publish with persist_items and the whitelist access model.
    let (acct, _) = disco_info(&mut c, "alice@localhost").await;
    assert!(
        acct.contains("http://jabber.org/protocol/pubsub#publish-options"),
        "{acct:?}"
    );
    iq_ok(&mut c, "<iq type='set'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='urn:example:private'><item id='current'><data xmlns='urn:example:private'>secret</data></item></publish><publish-options><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#publish-options</value></field><field var='pubsub#persist_items'><value>true</value></field><field var='pubsub#access_model'><value>whitelist</value></field></x></publish-options></pubsub></iq>").await;
    // Stream management (XEP-0198, Advanced).
    assert!(f.child_ns("sm", "urn:xmpp:sm:3").is_some(), "{f}");
    // User avatar compatibility (XEP-0398 with XEP-0153, Advanced): the
    // conversion is advertised (tests/mod_avatar.rs exercises it).
    assert!(acct.contains("urn:xmpp:pep-vcard-conversion:0"), "{acct:?}");
    // File upload (XEP-0363): the server's domain is the upload service and
    // grants slots (tests/mod_http_upload.rs uploads through one).
    assert!(features.contains("urn:xmpp:http:upload:0"), "{features:?}");
    let r = iq_ok(&mut c, "<iq type='get' to='localhost'><request xmlns='urn:xmpp:http:upload:0' filename='a.png' size='100' content-type='image/png'/></iq>").await;
    assert!(
        r.child("slot").and_then(|s| s.child("put")).is_some(),
        "{r}"
    );
    // Group chat (XEP-0045): the MUC service is listed and a room can be
    // created and entered (tests/mod_muc.rs covers the rest).
    let id = c.id();
    let items = c
        .request(&format!("<iq type='get' to='localhost' id='{id}'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>"), &id)
        .await;
    assert!(
        items.to_string().contains("conference.localhost"),
        "{items}"
    );
    c.send("<presence to='room@conference.localhost/alice'><x xmlns='http://jabber.org/protocol/muc'/></presence>").await;
    let own = c
        .recv_where("own room presence", |e| {
            e.name == "presence" && e.attr("from") == Some("room@conference.localhost/alice")
        })
        .await;
    assert!(
        own.to_string().contains("code='110'") || own.to_string().contains("code=\"110\""),
        "{own}"
    );
    // History storage / retrieval (XEP-0313, Advanced): a query answers
    // with <fin/>.
    assert!(
        features.contains("urn:xmpp:mam:2") || acct.contains("urn:xmpp:mam:2"),
        "{acct:?}"
    );
    let id = c.id();
    c.send(&format!(
        "<iq type='set' id='{id}'><query xmlns='urn:xmpp:mam:2'/></iq>"
    ))
    .await;
    let fin = c
        .recv_where("mam fin", |e| {
            e.name == "iq" && e.attr("id") == Some(id.as_str())
        })
        .await;
    assert!(fin.child("fin").is_some(), "{fin}");
    // Bookmarks (part of Advanced Group Chat): the XEP-0402 compat feature.
    assert!(acct.contains("urn:xmpp:bookmarks:1#compat"), "{acct:?}");
    // Advanced group chat: the room archives (XEP-0313 on the room JID: a
    // message comes back with the room's stanza-id, a query to the room
    // returns it) and answers self-pings (XEP-0410); tests/mod_muc_archive.rs
    // and tests/mod_muc_moderation.rs cover the rest.
    let (room_features, _) = disco_info(&mut c, "room@conference.localhost").await;
    assert!(
        room_features.contains("urn:xmpp:mam:2"),
        "{room_features:?}"
    );
    c.send("<message type='groupchat' to='room@conference.localhost' id='gc1'><body>archived</body></message>").await;
    let echo = c
        .recv_where("groupchat echo", |e| {
            e.name == "message" && e.child_text("body") == Some("archived")
        })
        .await;
    let sid = echo
        .children
        .iter()
        .find(|x| x.name == "stanza-id" && x.attr("by") == Some("room@conference.localhost"))
        .and_then(|x| x.attr("id"))
        .unwrap_or_else(|| panic!("no stanza-id by the room: {echo}"))
        .to_string();
    let id = c.id();
    c.send(&format!(
        "<iq type='set' id='{id}' to='room@conference.localhost'><query xmlns='urn:xmpp:mam:2'/></iq>"
    ))
    .await;
    let result = c
        .recv_where("room mam result", |e| {
            e.name == "message" && e.child("result").is_some()
        })
        .await;
    assert_eq!(
        result.child("result").and_then(|r| r.attr("id")),
        Some(sid.as_str()),
        "{result}"
    );
    let fin = c
        .recv_where("room mam fin", |e| {
            e.name == "iq" && e.attr("id") == Some(id.as_str())
        })
        .await;
    assert!(fin.child("fin").is_some(), "{fin}");
    iq_ok(
        &mut c,
        "<iq type='get' to='room@conference.localhost/alice'><ping xmlns='urn:xmpp:ping'/></iq>",
    )
    .await;
}

/// Mobile Compliance Suite: Server and Advanced Server rows Rookery meets.
#[tokio::test]
async fn mobile_suite() {
    let server = server();
    let mut c = Client::login(&server, "alice", "secret", Some("mobile")).await;
    let f = c.features.clone().expect("features");
    // Stream management (XEP-0198): enable with resumption.
    assert!(f.child_ns("sm", "urn:xmpp:sm:3").is_some(), "{f}");
    c.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
        .await;
    let e = c.recv_where("enabled", |e| e.name == "enabled").await;
    assert_eq!(e.attr("resume"), Some("true"), "{e}");
    // Client state indication (XEP-0352).
    assert!(f.child_ns("csi", "urn:xmpp:csi:0").is_some(), "{f}");
    c.send("<inactive xmlns='urn:xmpp:csi:0'/>").await;
    c.send("<active xmlns='urn:xmpp:csi:0'/>").await;
    c.ping("localhost").await;
    // Third-party push notifications (XEP-0357, Advanced): advertised on the
    // account, registration accepted (tests/mod_push.rs pushes).
    let (acct, _) = disco_info(&mut c, "alice@localhost").await;
    assert!(acct.contains("urn:xmpp:push:0"), "{acct:?}");
    iq_ok(
        &mut c,
        "<iq type='set'><enable xmlns='urn:xmpp:push:0' jid='push.example.org' node='n1'/></iq>",
    )
    .await;
}
