//! The pubsub service over s2s, between two real Rookery servers on
//! 127.0.0.1: a.test serves `pubsub.a.test`, a user of b.test subscribes
//! to one of its nodes. The service domain federates like a host (its own
//! s2s streams, here by certificate: a.test's names `pubsub.a.test` too).
//!
//! Checked: the remote user discovers the node, subscribes by bare and by
//! full JID, receives notifications of each publish over s2s (both
//! subscriptions), retrieves items with a result set, gets the same
//! errors as a local user (a presence-model node refuses a stranger, a
//! subscription for someone else's JID is `invalid-jid`), and stops
//! receiving after unsubscribing; `rookery ctl s2s_connections` shows the
//! service domain's own streams.

use crate::common::*;
use crate::s2s::{free_port, start, start_with_modules, user, write, Ca, Side};

const SERVICE: &str = "pubsub.a.test";
const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
const EVENT: &str = "http://jabber.org/protocol/pubsub#event";

async fn iq(c: &mut Client, kind: &str, payload: &str) -> Element {
    let id = c.id();
    c.request(
        &format!("<iq type='{kind}' to='{SERVICE}' id='{id}'>{payload}</iq>"),
        &id,
    )
    .await
}

async fn event_item(c: &mut Client) -> (String, String) {
    let m = c
        .recv_where("a pubsub notification", |e| {
            e.name == "message"
                && e.attr("from") == Some(SERVICE)
                && e.child_ns("event", EVENT).is_some()
        })
        .await;
    let id = m
        .child_ns("event", EVENT)
        .and_then(|e| e.child("items"))
        .and_then(|i| i.child("item"))
        .and_then(|i| i.attr("id"))
        .unwrap_or("")
        .to_string();
    (m.attr("to").unwrap_or("").to_string(), id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_subscriber_gets_notifications_over_s2s() {
    let files = tempfile::tempdir().unwrap();
    let ca = Ca::new("Rookery pubsub federation CA");
    let ca_file = write(files.path(), "ca.pem", &ca.pem);
    let (pa, pb) = (free_port(), free_port());
    let cert_a = ca.issue_names(&["a.test", SERVICE]);
    let cert_b = ca.issue_names(&["b.test"]);
    let a = start_with_modules(
        &Side {
            domain: "a.test",
            s2s_port: pa,
            cert: &cert_a,
            cafile: Some(ca_file.as_path()),
            extra: "",
        },
        &[("b.test", pb)],
        files.path(),
        &format!("{}  mod_pubsub: {{}}\n", server::DEFAULT_MODULES),
    );
    let b = start(
        &Side {
            domain: "b.test",
            s2s_port: pb,
            cert: &cert_b,
            cafile: Some(ca_file.as_path()),
            extra: "",
        },
        &[("a.test", pa), (SERVICE, pa)],
        files.path(),
    );
    let mut alice = user(&a, "a.test", "alice", "pc").await;
    let mut bob = user(&b, "b.test", "bob", "phone").await;

    let r = iq(
        &mut alice,
        "set",
        &format!("<pubsub xmlns='{PUBSUB}'><create node='channel'/></pubsub>"),
    )
    .await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");

    // Bob (on b.test) finds the node and subscribes, bare and full.
    let r = iq(
        &mut bob,
        "get",
        "<query xmlns='http://jabber.org/protocol/disco#items'/>",
    )
    .await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    assert!(
        r.child("query")
            .unwrap()
            .children_named("item")
            .any(|i| i.attr("node") == Some("channel")),
        "{r}"
    );
    let r = iq(
        &mut bob,
        "set",
        &format!("<pubsub xmlns='{PUBSUB}'><subscribe node='channel' jid='bob@b.test'/></pubsub>"),
    )
    .await;
    assert_eq!(
        r.child("pubsub")
            .and_then(|p| p.child("subscription"))
            .and_then(|s| s.attr("subscription")),
        Some("subscribed"),
        "{r}"
    );
    let full = bob.full_jid();
    let r = iq(
        &mut bob,
        "set",
        &format!("<pubsub xmlns='{PUBSUB}'><subscribe node='channel' jid='{full}'/></pubsub>"),
    )
    .await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    // Someone else's JID is refused, as for local users.
    let r = iq(
        &mut bob,
        "set",
        &format!(
            "<pubsub xmlns='{PUBSUB}'><subscribe node='channel' jid='alice@a.test'/></pubsub>"
        ),
    )
    .await;
    assert_eq!(
        r.stanza_error().map(|e| e.1),
        Some("bad-request".into()),
        "{r}"
    );

    // Alice publishes: both of bob's subscriptions are notified over s2s.
    for id in ["one", "two"] {
        let r = iq(&mut alice, "set", &format!("<pubsub xmlns='{PUBSUB}'><publish node='channel'><item id='{id}'><entry xmlns='http://www.w3.org/2005/Atom'><title>{id}</title></entry></item></publish></pubsub>")).await;
        assert_eq!(r.attr("type"), Some("result"), "{r}");
        let mut to = vec![event_item(&mut bob).await, event_item(&mut bob).await];
        to.sort();
        let mut want = vec![
            ("bob@b.test".to_string(), id.to_string()),
            (full.clone(), id.to_string()),
        ];
        want.sort();
        assert_eq!(to, want);
    }

    // Items with a result set, over s2s.
    let r = iq(&mut bob, "get", &format!("<pubsub xmlns='{PUBSUB}'><items node='channel'/><set xmlns='http://jabber.org/protocol/rsm'><max>1</max></set></pubsub>")).await;
    let items = r
        .child("pubsub")
        .and_then(|p| p.child("items"))
        .unwrap_or_else(|| panic!("{r}"));
    assert_eq!(
        items
            .children_named("item")
            .filter_map(|i| i.attr("id"))
            .collect::<Vec<_>>(),
        vec!["two"]
    );
    assert_eq!(
        r.child("pubsub")
            .and_then(|p| p.child("set"))
            .and_then(|s| s.child_text("count")),
        Some("2")
    );

    // A presence-model node: bob is in no local roster.
    let r = iq(&mut alice, "set", &format!("<pubsub xmlns='{PUBSUB}'><create node='friends'/><configure><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#node_config</value></field><field var='pubsub#access_model'><value>presence</value></field></x></configure></pubsub>")).await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    let r = iq(
        &mut bob,
        "set",
        &format!("<pubsub xmlns='{PUBSUB}'><subscribe node='friends' jid='bob@b.test'/></pubsub>"),
    )
    .await;
    assert_eq!(
        r.stanza_error().map(|e| e.1),
        Some("not-authorized".into()),
        "{r}"
    );

    // Unsubscribed (both), bob hears nothing more.
    for jid in ["bob@b.test", full.as_str()] {
        let r = iq(
            &mut bob,
            "set",
            &format!("<pubsub xmlns='{PUBSUB}'><unsubscribe node='channel' jid='{jid}'/></pubsub>"),
        )
        .await;
        assert_eq!(r.attr("type"), Some("result"), "{r}");
    }
    iq(&mut alice, "set", &format!("<pubsub xmlns='{PUBSUB}'><publish node='channel'><item id='three'><x xmlns='urn:example'/></item></publish></pubsub>")).await;
    bob.expect_silence(std::time::Duration::from_millis(500))
        .await;

    let conns = a.ctl_ok(&["s2s_connections"]);
    assert!(conns.contains(&format!("out {SERVICE} b.test")), "{conns}");
    assert!(conns.contains(&format!("in {SERVICE} b.test")), "{conns}");
}
