//! XEP-0092 software version (`mod_version`), XEP-0202 entity time
//! (`mod_time`), XEP-0012 last activity (`mod_last`) and disco#info/items on
//! an account's bare JID (`mod_disco` with `mod_pep`), against the real server.

use crate::common;

use common::im::{bare, im_server, login, online, subscribe_mutual, sync, ALICE, BOB, CAROL};
use common::server::{Config, DEFAULT_MODULES};
use common::{Client, Element, Server};

async fn query(c: &mut Client, to: &str, payload: &str) -> Element {
    let id = c.id();
    c.request(
        &format!("<iq type='get' to='{to}' id='{id}'>{payload}</iq>"),
        &id,
    )
    .await
}

#[tokio::test]
async fn version_with_and_without_os() {
    let server = im_server();
    let mut a = login(&server, ALICE, "pc").await;
    let r = query(&mut a, "localhost", "<query xmlns='jabber:iq:version'/>").await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    let q = r.child_ns("query", "jabber:iq:version").expect("query");
    assert_eq!(q.child_text("name"), Some("Rookery"));
    assert_eq!(q.child_text("version"), Some(env!("CARGO_PKG_VERSION")));
    assert!(q.child_text("os").is_some_and(|o| !o.is_empty()), "{r}");

    let cfg = Config {
        modules: DEFAULT_MODULES
            .replace("  mod_version: {}\n", "  mod_version: {show_os: false}\n"),
        ..Config::default()
    };
    let s2 = Server::start_with(cfg);
    s2.register("alice", "localhost", "secret");
    let mut a2 = login(&s2, ALICE, "pc").await;
    let r = query(&mut a2, "localhost", "<query xmlns='jabber:iq:version'/>").await;
    let q = r.child_ns("query", "jabber:iq:version").expect("query");
    assert!(
        q.child("os").is_none(),
        "show_os: false still shows the OS: {r}"
    );
    assert_eq!(q.child_text("name"), Some("Rookery"));
}

#[tokio::test]
async fn time_is_utc_and_current() {
    let server = im_server();
    let mut a = login(&server, ALICE, "pc").await;
    let before = common::im::now_secs();
    let r = query(&mut a, "localhost", "<time xmlns='urn:xmpp:time'/>").await;
    let after = common::im::now_secs();
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    let t = r.child_ns("time", "urn:xmpp:time").expect("time");
    assert_eq!(t.child_text("tzo"), Some("+00:00"));
    let utc = t.child_text("utc").expect("utc");
    assert!(utc.ends_with('Z'), "{utc}");
    let secs = common::im::parse_stamp(utc).unwrap_or_else(|| panic!("not XEP-0082: {utc}"));
    assert!(
        secs >= before - 1 && secs <= after + 1,
        "{utc} not within [{before}, {after}]"
    );
    // A set is refused.
    let id = a.id();
    let r = a
        .request(
            &format!("<iq type='set' to='localhost' id='{id}'><time xmlns='urn:xmpp:time'/></iq>"),
            &id,
        )
        .await;
    assert_eq!(
        r.stanza_error().map(|e| e.1),
        Some("bad-request".into()),
        "{r}"
    );
}

#[tokio::test]
async fn last_activity_of_server_and_accounts() {
    let server = im_server();
    subscribe_mutual(&server, ALICE, BOB).await;
    let mut c = login(&server, CAROL, "pc").await;
    let r = query(&mut c, "localhost", "<query xmlns='jabber:iq:last'/>").await;
    let up: u64 = r
        .child("query")
        .and_then(|q| q.attr("seconds"))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no uptime: {r}"));
    assert!(up < 600, "{r}");

    // Alice online: 0 seconds for her contact Bob.
    let mut a = online(&server, ALICE, "pc").await;
    let mut b = online(&server, BOB, "pc").await;
    let r = query(&mut b, &bare(ALICE), "<query xmlns='jabber:iq:last'/>").await;
    assert_eq!(
        r.child("query").and_then(|q| q.attr("seconds")),
        Some("0"),
        "{r}"
    );
    // Carol, not subscribed: forbidden.
    let r = query(&mut c, &bare(ALICE), "<query xmlns='jabber:iq:last'/>").await;
    assert_eq!(
        r.stanza_error(),
        Some(("auth".into(), "forbidden".into())),
        "{r}"
    );
    let aj = a.full_jid();
    sync(&mut a).await;
    a.close().await;
    common::im::recv_presence(&mut b, &aj, Some("unavailable")).await;
    // The logout is stored: after two seconds, Bob is told at least 2 (not "online").
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let r = query(&mut b, &bare(ALICE), "<query xmlns='jabber:iq:last'/>").await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    let s: u64 = r
        .child("query")
        .and_then(|q| q.attr("seconds"))
        .and_then(|s| s.parse().ok())
        .expect("seconds");
    assert!((2..60).contains(&s), "{r}");
    let r = query(&mut c, &bare(ALICE), "<query xmlns='jabber:iq:last'/>").await;
    assert_eq!(
        r.stanza_error(),
        Some(("auth".into(), "forbidden".into())),
        "{r}"
    );
    // Carol asking about herself: she is online (her asking session, even
    // without available presence), so 0 seconds, as ejabberd and Prosody
    // answer; not item-not-found because she never logged out.
    let r = query(&mut c, &bare(CAROL), "<query xmlns='jabber:iq:last'/>").await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    assert_eq!(
        r.child_ns("query", "jabber:iq:last")
            .and_then(|q| q.attr("seconds")),
        Some("0"),
        "{r}"
    );
    // Alice, logged out two seconds ago, logs in again and asks: 0 too.
    let mut a2 = login(&server, ALICE, "phone").await;
    let r = query(&mut a2, &bare(ALICE), "<query xmlns='jabber:iq:last'/>").await;
    assert_eq!(
        r.child_ns("query", "jabber:iq:last")
            .and_then(|q| q.attr("seconds")),
        Some("0"),
        "{r}"
    );
}

#[tokio::test]
async fn disco_on_an_account() {
    let server = im_server();
    let mut a = login(&server, ALICE, "pc").await;
    let mut b = login(&server, BOB, "pc").await;
    for (c, who) in [(&mut a, "own"), (&mut b, "other")] {
        let r = query(
            c,
            &bare(ALICE),
            "<query xmlns='http://jabber.org/protocol/disco#info'/>",
        )
        .await;
        assert_eq!(r.attr("type"), Some("result"), "{who}: {r}");
        let q = r.child("query").expect("query");
        let ids: Vec<(String, String)> = q
            .children_named("identity")
            .map(|i| {
                (
                    i.attr("category").unwrap_or("").into(),
                    i.attr("type").unwrap_or("").into(),
                )
            })
            .collect();
        assert!(
            ids.contains(&("account".into(), "registered".into())),
            "{who}: {r}"
        );
        assert!(ids.contains(&("pubsub".into(), "pep".into())), "{who}: {r}");
        let features: Vec<&str> = q
            .children_named("feature")
            .filter_map(|f| f.attr("var"))
            .collect();
        for f in [
            "http://jabber.org/protocol/pubsub#publish",
            "http://jabber.org/protocol/pubsub#publish-options",
            "http://jabber.org/protocol/pubsub#access-whitelist",
        ] {
            assert!(features.contains(&f), "{who}: {f} missing in {r}");
        }
        let r = query(
            c,
            &bare(ALICE),
            "<query xmlns='http://jabber.org/protocol/disco#items'/>",
        )
        .await;
        assert_eq!(r.attr("type"), Some("result"), "{who}: {r}");
    }
    let r = query(
        &mut b,
        "nobody@localhost",
        "<query xmlns='http://jabber.org/protocol/disco#info'/>",
    )
    .await;
    assert_eq!(
        r.stanza_error().map(|e| e.1),
        Some("service-unavailable".into()),
        "{r}"
    );
}
