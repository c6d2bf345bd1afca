//! XEP-0191 blocking command (`mod_blocking`) against the real server:
//! list management and pushes, and enforcement both ways for messages,
//! presence and iqs, online and offline, across a restart.

use crate::common;

use std::time::Duration;

use common::im::{
    bare, im_server, is_presence, login, online, recv_presence, subscribe_mutual, sync, ALICE, BOB,
    CAROL,
};
use common::{Client, Element};

const NS_BLOCKING: &str = "urn:xmpp:blocking";
const NS_BLOCKING_ERRORS: &str = "urn:xmpp:blocking:errors";

async fn blocklist(c: &mut Client) -> Vec<String> {
    let id = c.id();
    let r = c
        .request(
            &format!("<iq type='get' id='{id}'><blocklist xmlns='{NS_BLOCKING}'/></iq>"),
            &id,
        )
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    let list = r.child_ns("blocklist", NS_BLOCKING).expect("blocklist");
    let mut v: Vec<String> = list
        .children_named("item")
        .filter_map(|i| i.attr("jid").map(str::to_string))
        .collect();
    v.sort();
    v
}

async fn command(c: &mut Client, op: &str, jids: &[&str]) -> Element {
    let id = c.id();
    let items: String = jids.iter().map(|j| format!("<item jid='{j}'/>")).collect();
    c.request(
        &format!("<iq type='set' id='{id}'><{op} xmlns='{NS_BLOCKING}'>{items}</{op}></iq>"),
        &id,
    )
    .await
}

fn is_push(e: &Element, op: &str) -> bool {
    e.name == "iq" && e.attr("type") == Some("set") && e.child_ns(op, NS_BLOCKING).is_some()
}

async fn recv_push(c: &mut Client, op: &str) -> Vec<String> {
    let op2 = op.to_string();
    let p = c
        .recv_where(&format!("{op} push"), move |e| is_push(e, &op2))
        .await;
    let own = c.full_jid();
    let own_bare = own.split('/').next().unwrap_or("").to_string();
    let from = p.attr("from");
    assert!(
        from.is_none() || from == Some(own_bare.as_str()),
        "push from elsewhere: {p}"
    );
    let id = p.attr("id").unwrap_or("").to_string();
    c.send(&format!("<iq type='result' id='{id}'/>")).await;
    p.child_ns(op, NS_BLOCKING)
        .unwrap()
        .children_named("item")
        .filter_map(|i| i.attr("jid").map(str::to_string))
        .collect()
}

fn chat(to: &str, body: &str) -> String {
    format!("<message type='chat' to='{to}' id='m-{body}'><body>{body}</body></message>")
}

#[tokio::test]
async fn block_and_unblock_a_contact() {
    let server = im_server();
    subscribe_mutual(&server, ALICE, BOB).await;
    let mut a1 = online(&server, ALICE, "one").await;
    let mut a2 = online(&server, ALICE, "two").await;
    let mut b = online(&server, BOB, "pc").await;
    sync(&mut a1).await;
    sync(&mut b).await;
    assert!(blocklist(&mut a1).await.is_empty());

    let r = command(&mut a1, "block", &[&bare(BOB)]).await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    assert_eq!(recv_push(&mut a1, "block").await, vec![bare(BOB)]);
    // Bob sees both of Alice's resources go offline.
    let a1j = a1.full_jid();
    let a2j = a2.full_jid();
    recv_presence(&mut b, &a1j, Some("unavailable")).await;
    recv_presence(&mut b, &a2j, Some("unavailable")).await;
    // a2 never asked for the list: no push for it.
    let got = sync(&mut a2).await;
    assert!(!got.iter().any(|e| is_push(e, "block")), "{got:?}");
    assert_eq!(blocklist(&mut a2).await, vec![bare(BOB)]);

    // Bob's message: an error back, nothing to Alice.
    b.send(&chat(&bare(ALICE), "hello")).await;
    let e = b
        .recv_where("message error", |e| {
            e.name == "message" && e.attr("type") == Some("error")
        })
        .await;
    assert_eq!(
        e.stanza_error().map(|e| e.1),
        Some("service-unavailable".into()),
        "{e}"
    );
    // Bob's iq get to Alice's resource: service-unavailable.
    let id = b.id();
    let r = b
        .request(
            &format!("<iq type='get' to='{a1j}' id='{id}'><query xmlns='jabber:iq:version'/></iq>"),
            &id,
        )
        .await;
    assert_eq!(
        r.stanza_error().map(|e| e.1),
        Some("service-unavailable".into()),
        "{r}"
    );
    // Bob's presence: dropped.
    b.send("<presence><show>dnd</show></presence>").await;
    sync(&mut b).await;
    let got = sync(&mut a1).await;
    assert!(
        !got.iter()
            .any(|e| e.attr("from").is_some_and(|f| f.starts_with("bob@"))),
        "Alice received from Bob: {got:?}"
    );

    // Alice's message and iq to Bob: not-acceptable with <blocked/>.
    a1.send(&chat(&bare(BOB), "hi")).await;
    let e = a1
        .recv_where("message error", |e| {
            e.name == "message" && e.attr("type") == Some("error")
        })
        .await;
    assert_eq!(
        e.stanza_error().map(|e| e.1),
        Some("not-acceptable".into()),
        "{e}"
    );
    assert!(
        e.child("error")
            .and_then(|x| x.child_ns("blocked", NS_BLOCKING_ERRORS))
            .is_some(),
        "{e}"
    );
    let bj = b.full_jid();
    let id = a1.id();
    let r = a1
        .request(
            &format!("<iq type='get' to='{bj}' id='{id}'><ping xmlns='urn:xmpp:ping'/></iq>"),
            &id,
        )
        .await;
    assert_eq!(
        r.stanza_error().map(|e| e.1),
        Some("not-acceptable".into()),
        "{r}"
    );
    // Alice's presence update does not reach Bob.
    a1.send("<presence><show>chat</show></presence>").await;
    sync(&mut a1).await;
    let got = sync(&mut b).await;
    assert!(
        !got.iter().any(|e| e.attr("from") == Some(a1j.as_str())),
        "{got:?}"
    );

    // Unblock: push, Bob sees Alice again, messages flow.
    let r = command(&mut a1, "unblock", &[&bare(BOB)]).await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    assert_eq!(recv_push(&mut a1, "unblock").await, vec![bare(BOB)]);
    let p = recv_presence(&mut b, &a1j, None).await;
    assert_eq!(p.child_text("show"), Some("chat"), "{p}");
    b.send(&chat(&bare(ALICE), "again")).await;
    sync(&mut b).await;
    let m = a1.recv_where("message", |e| e.name == "message").await;
    assert_eq!(m.child_text("body"), Some("again"), "{m}");
    assert!(blocklist(&mut a1).await.is_empty());
    let _ = a2;
}

#[tokio::test]
async fn blocklist_survives_restart_and_applies_while_offline() {
    let mut server = im_server();
    let mut a = login(&server, ALICE, "pc").await;
    let r = command(
        &mut a,
        "block",
        &[&bare(CAROL), "spam.example", "bob@localhost/evil"],
    )
    .await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    // Invalid requests.
    let r = command(&mut a, "block", &[]).await;
    assert_eq!(
        r.stanza_error().map(|e| e.1),
        Some("bad-request".into()),
        "{r}"
    );
    let r = command(&mut a, "block", &["@@bad@@"]).await;
    assert_eq!(
        r.stanza_error().map(|e| e.1),
        Some("jid-malformed".into()),
        "{r}"
    );
    a.close().await;
    server.kill_hard(); // SIGKILL: the writes must already be durable
    server.restart();

    // Alice offline: Carol's message bounces and is not stored; Bob's other resource gets through.
    let mut c = login(&server, CAROL, "pc").await;
    c.send(&chat(&bare(ALICE), "from-carol")).await;
    let e = c
        .recv_where("message error", |e| {
            e.name == "message" && e.attr("type") == Some("error")
        })
        .await;
    assert_eq!(
        e.stanza_error().map(|e| e.1),
        Some("service-unavailable".into()),
        "{e}"
    );
    let mut b = login(&server, BOB, "good").await;
    b.send(&chat(&bare(ALICE), "from-bob")).await;
    sync(&mut b).await;
    let mut evil = login(&server, BOB, "evil").await;
    evil.send(&chat(&bare(ALICE), "from-evil")).await;
    evil.recv_where("message error", |e| {
        e.name == "message" && e.attr("type") == Some("error")
    })
    .await;

    let mut a = login(&server, ALICE, "pc").await;
    let mut list = blocklist(&mut a).await;
    list.sort();
    assert_eq!(
        list,
        vec![
            "bob@localhost/evil".to_string(),
            bare(CAROL),
            "spam.example".to_string()
        ]
    );
    a.send("<presence/>").await;
    let got = sync(&mut a).await;
    let bodies: Vec<&str> = got
        .iter()
        .filter(|e| e.name == "message")
        .filter_map(|e| e.child_text("body"))
        .collect();
    assert_eq!(bodies, vec!["from-bob"], "{got:?}");

    // Unblock everything (an empty unblock).
    let _ = blocklist(&mut a).await; // ask for pushes
    let r = command(&mut a, "unblock", &[]).await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    let pushed = recv_push(&mut a, "unblock").await;
    assert!(
        pushed.is_empty(),
        "unblock-all is pushed as an empty <unblock/>: {pushed:?}"
    );
    assert!(blocklist(&mut a).await.is_empty());
    c.send(&chat(&bare(ALICE), "now-ok")).await;
    sync(&mut c).await;
    let m = a.recv_where("message", |e| e.name == "message").await;
    assert_eq!(m.child_text("body"), Some("now-ok"));
    a.expect_silence(Duration::from_millis(200)).await;
    let _ = is_presence;
}

/// Waits for the error answering Bob's message `body`: service-unavailable.
async fn refused(b: &mut Client, body: &str) {
    let id = format!("m-{body}");
    let e = b
        .recv_where("message error", move |e| {
            e.name == "message" && e.attr("id") == Some(id.as_str())
        })
        .await;
    assert_eq!(e.attr("type"), Some("error"), "{e}");
    assert_eq!(
        e.stanza_error().map(|e| e.1),
        Some("service-unavailable".into()),
        "{e}"
    );
}

/// The modules' per-hook lists follow `reload_config`: with mod_blocking
/// switched off by a reload, its filters are no longer called (Bob's
/// message reaches Alice, who blocked him); switched on again, they are
/// (the new module reads the stored list).
#[tokio::test]
async fn filters_follow_a_reload_that_switches_the_module() {
    let server = im_server();
    let mut a = online(&server, ALICE, "pc").await;
    let mut b = online(&server, BOB, "pc").await;
    let r = command(&mut a, "block", &[&bare(BOB)]).await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    sync(&mut a).await;

    b.send(&chat(&bare(ALICE), "before")).await;
    refused(&mut b, "before").await;

    let yaml = std::fs::read_to_string(server.config_path()).unwrap();
    let without = yaml.replace("  mod_blocking: {}\n", "");
    assert_ne!(without, yaml);
    std::fs::write(server.config_path(), &without).unwrap();
    server.ctl_ok(&["reload_config"]);
    b.send(&chat(&bare(ALICE), "unfiltered")).await;
    let m = a
        .recv_where("Bob's message", |e| {
            e.name == "message" && e.attr("id") == Some("m-unfiltered")
        })
        .await;
    assert_eq!(m.attr("type"), Some("chat"), "{m}");
    let got = sync(&mut b).await;
    assert!(
        !got.iter().any(|e| e.attr("type") == Some("error")),
        "{got:?}"
    );

    std::fs::write(server.config_path(), &yaml).unwrap();
    server.ctl_ok(&["reload_config"]);
    b.send(&chat(&bare(ALICE), "after")).await;
    refused(&mut b, "after").await;
    let got = sync(&mut a).await;
    assert!(
        !got.iter().any(|e| e.attr("id") == Some("m-after")),
        "{got:?}"
    );
}
