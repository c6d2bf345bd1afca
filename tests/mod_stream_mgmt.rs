//! XEP-0198 Stream Management against the real binary over real sockets:
//! enabling, `<r/>`/`<a/>` counting, resumption after the TCP connection is
//! dropped without acknowledging (every unacknowledged stanza delivered
//! exactly once), takeover of a connection that has not noticed it is dead,
//! `<failed/>` conditions, ack timeout, the unacked-queue limit, and the
//! timeout path: unacknowledged and queued messages go to offline storage,
//! queued iqs are answered with an error, contacts see unavailable presence.

use crate::common;

use std::time::{Duration, Instant};

use common::client::Client;
use common::im::{self, bare, chat, sync, ALICE, BOB};
use common::server::{Config, Server, DEFAULT_MODULES};
use common::Element;

const NS_SM: &str = "urn:xmpp:sm:3";
const NS_STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";

fn server_with(sm_opts: &str) -> Server {
    let modules = DEFAULT_MODULES.replace(
        "  mod_stream_mgmt: {}\n",
        &format!("  mod_stream_mgmt: {sm_opts}\n"),
    );
    let s = Server::start_with(Config {
        modules,
        ..Config::default()
    });
    s.register(ALICE.0, "localhost", ALICE.1);
    s.register(BOB.0, "localhost", BOB.1);
    s
}

fn is_r(e: &Element) -> bool {
    e.name == "r" && e.ns == NS_SM
}

/// Log in and enable stream management with resumption; returns the id.
async fn sm_login(server: &Server, user: (&str, &str), resource: &str) -> (Client, String) {
    let mut c = Client::login(server, user.0, user.1, Some(resource)).await;
    let f = c.features.clone().expect("features");
    assert!(f.child_ns("sm", NS_SM).is_some(), "no <sm/> feature: {f}");
    c.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
        .await;
    let e = c
        .recv_where("enabled", |e| e.ns == NS_SM && e.name != "r")
        .await;
    assert_eq!(e.name, "enabled", "{e}");
    assert_eq!(e.attr("resume"), Some("true"), "{e}");
    let id = e.attr("id").expect("enabled id").to_string();
    (c, id)
}

/// Next `n` messages (skipping `<r/>`), their bodies in order.
async fn bodies(c: &mut Client, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        let m = c.recv_where("a message", |e| e.name == "message").await;
        out.push(m.child_text("body").unwrap_or("").to_string());
    }
    out
}

/// Everything up to a ping answer, without `<r/>` requests.
async fn drain(c: &mut Client) -> Vec<Element> {
    sync(c).await.into_iter().filter(|e| !is_r(e)).collect()
}

/// Reconnect as `user` and send `<resume/>`; returns the client and the answer.
async fn resume(server: &Server, user: (&str, &str), id: &str, h: u32) -> (Client, Element) {
    let mut c = Client::connect_starttls(server.c2s()).await;
    c.login_scram(user.0, user.1).await;
    c.send(&format!(
        "<resume xmlns='urn:xmpp:sm:3' previd='{id}' h='{h}'/>"
    ))
    .await;
    let e = c
        .recv_where("resumed or failed", |e| {
            e.ns == NS_SM && (e.name == "resumed" || e.name == "failed")
        })
        .await;
    (c, e)
}

async fn send_chats(from: &mut Client, to: &str, bodies: &[&str]) {
    for b in bodies {
        from.send(&chat(to, b, b)).await;
    }
    sync(from).await;
}

#[tokio::test]
async fn counting_both_directions_and_bad_acks() {
    let server = server_with("{}");
    let (mut a, _) = sm_login(&server, ALICE, "count").await;
    // Three stanzas handled after <enable/>.
    for _ in 0..3 {
        let r = a.ping("localhost").await;
        assert_eq!(r.attr("type"), Some("result"));
    }
    a.send("<r xmlns='urn:xmpp:sm:3'/>").await;
    let ack = a
        .recv_where("<a/>", |e| e.name == "a" && e.ns == NS_SM)
        .await;
    assert_eq!(ack.attr("h"), Some("3"), "{ack}");
    // The server asks for acks of what it sent (3 ping results).
    let r = a.recv_where("<r/>", is_r).await;
    assert!(is_r(&r));
    a.send("<a xmlns='urn:xmpp:sm:3' h='3'/>").await;
    // Enabling twice is an unexpected request.
    a.send("<enable xmlns='urn:xmpp:sm:3'/>").await;
    let f = a.recv_where("failed", |e| e.name == "failed").await;
    assert!(
        f.child_ns("unexpected-request", NS_STANZAS).is_some(),
        "{f}"
    );
    // Acknowledging more than was sent ends the stream.
    a.send("<a xmlns='urn:xmpp:sm:3' h='1000'/>").await;
    assert_eq!(a.expect_stream_error().await, "undefined-condition");
}

#[tokio::test]
async fn enable_before_bind_and_unknown_resume_fail() {
    let server = server_with("{}");
    let mut c = Client::connect_starttls(server.c2s()).await;
    c.login_scram(ALICE.0, ALICE.1).await;
    c.send("<enable xmlns='urn:xmpp:sm:3'/>").await;
    let f = c.recv().await;
    assert!(
        f.name == "failed" && f.child_ns("unexpected-request", NS_STANZAS).is_some(),
        "{f}"
    );
    c.send("<resume xmlns='urn:xmpp:sm:3' previd='nope' h='0'/>")
        .await;
    let f = c.recv().await;
    assert!(
        f.name == "failed" && f.child_ns("item-not-found", NS_STANZAS).is_some(),
        "{f}"
    );
    // The stream goes on: binding still works.
    c.bind(Some("after"))
        .await
        .expect("bind after failed resume");

    // Another account cannot resume alice's session.
    let (_a, id) = sm_login(&server, ALICE, "victim").await;
    let (_b, f) = resume(&server, BOB, &id, 0).await;
    assert!(
        f.name == "failed" && f.child_ns("item-not-found", NS_STANZAS).is_some(),
        "{f}"
    );
}

#[tokio::test]
async fn resume_after_dropped_connection_delivers_each_unacked_stanza_once() {
    let server = server_with("{}");
    let mut bob = im::online(&server, BOB, "b").await;
    let (mut a, id) = sm_login(&server, ALICE, "phone").await;
    let to = format!("{}/phone", bare(ALICE));
    send_chats(&mut bob, &to, &["m1", "m2", "m3"]).await;
    assert_eq!(bodies(&mut a, 3).await, ["m1", "m2", "m3"]);
    // alice sends one stanza, then acknowledges nothing, and its connection dies.
    a.send("<message to='bob@localhost' type='chat'><body>hi</body></message>")
        .await;
    let _ = bob.recv_message().await;
    drop(a);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Messages sent while detached are queued for the session.
    send_chats(&mut bob, &to, &["m4", "m5"]).await;

    // The client had processed m1 before the connection died.
    let (mut a, r) = resume(&server, ALICE, &id, 1).await;
    assert_eq!(r.name, "resumed", "{r}");
    assert_eq!(r.attr("previd"), Some(id.as_str()));
    assert_eq!(
        r.attr("h"),
        Some("1"),
        "the server handled alice's one message: {r}"
    );
    let got: Vec<String> = drain(&mut a)
        .await
        .iter()
        .filter(|e| e.name == "message")
        .map(|e| e.child_text("body").unwrap_or("").to_string())
        .collect();
    assert_eq!(
        got,
        ["m2", "m3", "m4", "m5"],
        "each unacked stanza exactly once"
    );
    // New messages flow on the resumed session, with the same full JID.
    send_chats(&mut bob, &to, &["m6"]).await;
    assert_eq!(bodies(&mut a, 1).await, ["m6"]);
    // Server to alice so far: m1..m5, the sync answer, m6 = 7 stanzas; alice
    // to the server: her message and the sync ping = 2.
    a.send("<a xmlns='urn:xmpp:sm:3' h='7'/>").await;
    a.send("<r xmlns='urn:xmpp:sm:3'/>").await;
    let ack = a
        .recv_where("<a/>", |e| e.name == "a" && e.ns == NS_SM)
        .await;
    assert_eq!(ack.attr("h"), Some("2"), "{ack}");
    drop(a);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (mut a, r) = resume(&server, ALICE, &id, 7).await;
    assert_eq!(r.name, "resumed", "{r}");
    assert_eq!(r.attr("h"), Some("2"), "{r}");
    let again = drain(&mut a).await;
    assert!(
        again.iter().all(|e| e.name != "message"),
        "nothing resent after a full ack: {}",
        im::show(&again)
    );
    // A count above what was sent is refused (the session stays resumable).
    drop(a);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_c, f) = resume(&server, ALICE, &id, 100).await;
    assert_eq!(f.name, "failed", "{f}");
    assert!(f.child_ns("handled-count-too-high", NS_SM).is_some(), "{f}");
    let (_c, r) = resume(&server, ALICE, &id, 8).await;
    assert_eq!(r.name, "resumed", "{r}");
}

#[tokio::test]
async fn resume_takes_over_a_connection_that_looks_alive() {
    let server = server_with("{}");
    let mut bob = im::online(&server, BOB, "b").await;
    let (mut old, id) = sm_login(&server, ALICE, "laptop").await;
    let to = format!("{}/laptop", bare(ALICE));
    send_chats(&mut bob, &to, &["t1"]).await;
    assert_eq!(bodies(&mut old, 1).await, ["t1"]);
    // The old TCP connection stays open; a new one resumes.
    let (mut new, r) = resume(&server, ALICE, &id, 0).await;
    assert_eq!(r.name, "resumed", "{r}");
    let got: Vec<String> = drain(&mut new)
        .await
        .iter()
        .filter(|e| e.name == "message")
        .map(|e| e.child_text("body").unwrap_or("").to_string())
        .collect();
    assert_eq!(got, ["t1"]);
    // The old connection is closed by the server.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "old connection still open");
        match old.recv_event_within(Duration::from_secs(10)).await {
            common::StreamEvent::Closed(_) | common::StreamEvent::End => break,
            common::StreamEvent::Stanza(_) => continue,
            other => panic!("old connection: {other:?}"),
        }
    }
}

#[tokio::test]
async fn timeout_sends_unacked_and_queued_messages_to_offline_storage() {
    let server = server_with("{resume_timeout: 2}");
    let mut bob = im::online(&server, BOB, "b").await;
    im::subscribe_mutual(&server, ALICE, BOB).await;
    // Alice's archive off: timed-out messages that the archive holds are
    // not stored offline (tests/sm_hibernation.rs); these are not archived.
    let mut p = im::login(&server, ALICE, "prefs").await;
    let pid = p.id();
    let r = p
        .request(
            &format!(
                "<iq type='set' id='{pid}'><prefs xmlns='urn:xmpp:mam:2' default='never'/></iq>"
            ),
            &pid,
        )
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    drop(p);
    let (mut a, id) = sm_login(&server, ALICE, "mobile").await;
    a.presence().await;
    drain(&mut a).await;
    let alice_full = format!("{}/mobile", bare(ALICE));
    send_chats(&mut bob, &bare(ALICE), &["o1", "o2"]).await;
    assert_eq!(bodies(&mut a, 2).await, ["o1", "o2"]);
    drop(a);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // While detached: a message (queued) and an iq (answered with an error
    // once the session ends).
    send_chats(&mut bob, &alice_full, &["o3"]).await;
    bob.send(&format!(
        "<iq type='get' to='{alice_full}' id='late'><query xmlns='jabber:iq:version'/></iq>"
    ))
    .await;
    // Contacts see the session as available until the timeout...
    let unavailable = bob
        .recv_where("alice unavailable", |e| {
            e.name == "presence"
                && e.attr("from") == Some(alice_full.as_str())
                && e.attr("type") == Some("unavailable")
        })
        .await;
    assert_eq!(unavailable.attr("type"), Some("unavailable"));
    let err = bob
        .recv_where("iq error", |e| {
            e.name == "iq" && e.attr("id") == Some("late")
        })
        .await;
    assert_eq!(err.attr("type"), Some("error"), "{err}");
    assert!(
        err.child("error")
            .and_then(|e| e.child_ns("service-unavailable", NS_STANZAS))
            .is_some(),
        "{err}"
    );
    // A late resumption fails, and says how many of alice's stanzas arrived.
    let (_late, f) = resume(&server, ALICE, &id, 0).await;
    assert_eq!(f.name, "failed", "{f}");
    assert!(f.child_ns("item-not-found", NS_STANZAS).is_some(), "{f}");
    assert_eq!(f.attr("h"), Some("2"), "{f}");
    // Nothing was lost: a new session gets all three from offline storage.
    let (_a2, got) = im::online_with(&server, ALICE, "desk", "<presence/>").await;
    let b: Vec<String> = got
        .iter()
        .filter(|e| e.name == "message")
        .map(|e| e.child_text("body").unwrap_or("").to_string())
        .collect();
    assert_eq!(b, ["o1", "o2", "o3"], "{}", im::show(&got));
    for m in got.iter().filter(|e| e.name == "message") {
        assert!(m.child_ns("delay", im::NS_DELAY).is_some(), "{m}");
    }
}

#[tokio::test]
async fn unacked_stanzas_go_to_another_resource_when_the_session_is_not_resumable() {
    let server = server_with("{}");
    let mut bob = im::online(&server, BOB, "b").await;
    let mut other = im::online(&server, ALICE, "other").await;
    let mut a = im::online(&server, ALICE, "pidgin").await;
    // Stream management without resumption (as libpurple does).
    a.send("<enable xmlns='urn:xmpp:sm:3'/>").await;
    let e = a.recv_where("enabled", |e| e.name == "enabled").await;
    assert_eq!(e.attr("resume"), None);
    let to = format!("{}/pidgin", bare(ALICE));
    send_chats(&mut bob, &to, &["p1"]).await;
    assert_eq!(bodies(&mut a, 1).await, ["p1"]);
    drop(a);
    let m = other.recv_message().await;
    assert_eq!(m.child_text("body"), Some("p1"), "{m}");
}

#[tokio::test]
async fn unanswered_ack_request_counts_as_a_dead_connection() {
    let server = server_with("{ack_timeout: 1}");
    let mut bob = im::online(&server, BOB, "b").await;
    let (mut a, id) = sm_login(&server, ALICE, "silent").await;
    let to = format!("{}/silent", bare(ALICE));
    send_chats(&mut bob, &to, &["k1"]).await;
    assert_eq!(bodies(&mut a, 1).await, ["k1"]);
    // alice never answers <r/>: the server drops the connection...
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "connection not dropped");
        match a.recv_event_within(Duration::from_secs(10)).await {
            common::StreamEvent::Closed(_) => break,
            common::StreamEvent::Stanza(_) => continue,
            other => panic!("{other:?}"),
        }
    }
    // ...and keeps the session for resumption.
    let (mut a, r) = resume(&server, ALICE, &id, 0).await;
    assert_eq!(r.name, "resumed", "{r}");
    assert_eq!(bodies(&mut a, 1).await, ["k1"]);
}

#[tokio::test]
async fn too_many_unacked_stanzas_close_the_stream_without_losing_them() {
    let server = server_with("{max_ack_queue: 3}");
    let mut bob = im::online(&server, BOB, "b").await;
    let (mut a, _id) = sm_login(&server, ALICE, "slow").await;
    a.presence().await;
    let to = format!("{}/slow", bare(ALICE));
    for i in 0..5 {
        let b = format!("q{i}");
        bob.send(&chat(&to, &b, &b)).await;
    }
    sync(&mut bob).await;
    assert_eq!(a.expect_stream_error().await, "policy-violation");
    drop(a);
    let (mut a2, got) = im::online_with(&server, ALICE, "again", "<presence/>").await;
    let mut b: Vec<String> = got
        .iter()
        .filter(|e| e.name == "message")
        .map(|e| e.child_text("body").unwrap_or("").to_string())
        .collect();
    // The closed session's stanzas reach the account either from offline
    // storage at this login or, when the new resource became available
    // before they were rerouted, delivered to it directly, possibly after
    // the login's sync: wait (bounded) for the rest, in order.
    if b.len() < 5 {
        let rest = bodies(&mut a2, 5 - b.len()).await;
        b.extend(rest);
    }
    assert_eq!(b, ["q0", "q1", "q2", "q3", "q4"], "{}", im::show(&got));
}

#[tokio::test]
async fn binding_the_same_resource_ends_a_detached_session_without_losing_messages() {
    let server = server_with("{}");
    let mut bob = im::online(&server, BOB, "b").await;
    let (mut a, _id) = sm_login(&server, ALICE, "kicked").await;
    let to = format!("{}/kicked", bare(ALICE));
    send_chats(&mut bob, &to, &["c1"]).await;
    assert_eq!(bodies(&mut a, 1).await, ["c1"]);
    drop(a);
    tokio::time::sleep(Duration::from_millis(300)).await;
    send_chats(&mut bob, &to, &["c2"]).await;
    let users = server.ctl_ok(&["connected_users"]);
    assert!(
        users.contains("alice@localhost/kicked"),
        "detached session listed: {users}"
    );
    // A client that lost its resumption state binds the same resource again.
    let (mut a2, got) = im::online_with(&server, ALICE, "kicked", "<presence/>").await;
    let mut b: Vec<String> = got
        .iter()
        .filter(|e| e.name == "message")
        .map(|e| e.child_text("body").unwrap_or("").to_string())
        .collect();
    // The old session's leftovers are routed while the new one logs in: a
    // message stored after the new session drained offline storage reaches
    // it live, after the drain, still in order.
    if b.len() < 2 {
        b.extend(bodies(&mut a2, 2 - b.len()).await);
    }
    assert_eq!(b, ["c1", "c2"], "{}", im::show(&got));
}

#[tokio::test]
async fn shutdown_with_a_detached_session_stores_its_messages_durably() {
    let mut server = server_with("{}");
    let mut bob = im::online(&server, BOB, "b").await;
    let (mut a, _id) = sm_login(&server, ALICE, "sleepy").await;
    let to = format!("{}/sleepy", bare(ALICE));
    send_chats(&mut bob, &to, &["d1"]).await;
    assert_eq!(bodies(&mut a, 1).await, ["d1"]);
    drop(a);
    tokio::time::sleep(Duration::from_millis(300)).await;
    send_chats(&mut bob, &to, &["d2"]).await;
    drop(bob);
    server.stop();
    server.restart();
    let (_a2, got) = im::online_with(&server, ALICE, "morning", "<presence/>").await;
    let b: Vec<String> = got
        .iter()
        .filter(|e| e.name == "message")
        .map(|e| e.child_text("body").unwrap_or("").to_string())
        .collect();
    assert_eq!(b, ["d1", "d2"], "{}", im::show(&got));
}

/// Many messages in flight while a session is closed for too many unacked
/// stanzas: its backlog (unacked and queued) is rerouted as a whole before
/// any later message, so the next login gets every message once, in order
/// (the later ones used to be stored first and interleave with the backlog).
#[tokio::test]
async fn backlog_of_a_closed_session_is_not_overtaken_by_later_messages() {
    const N: usize = 300;
    for round in 0..2 {
        let server = server_with("{max_ack_queue: 5}");
        let mut bob = im::online(&server, BOB, "b").await;
        let (mut a, _id) = sm_login(&server, ALICE, "slow").await;
        a.presence().await;
        drain(&mut a).await; // available before the first message
        let full = format!("{}/slow", bare(ALICE));
        let bare_jid = bare(ALICE);
        let mut batch = String::new();
        for i in 0..N {
            // Half to the full JID, half to the bare JID: both reach "slow"
            // while it lives, and the account after.
            let to = if i % 2 == 0 { &full } else { &bare_jid };
            let b = format!("o{i}");
            batch.push_str(&chat(to, &b, &b));
        }
        bob.send(&batch).await;
        sync(&mut bob).await;
        assert_eq!(a.expect_stream_error().await, "policy-violation");
        drop(a);
        let (mut a2, got) = im::online_with(&server, ALICE, "again", "<presence/>").await;
        let mut b: Vec<String> = got
            .iter()
            .filter(|e| e.name == "message")
            .map(|e| e.child_text("body").unwrap_or("").to_string())
            .collect();
        if b.len() < N {
            // Leftovers routed after the new session's drain arrive live.
            b.extend(bodies(&mut a2, N - b.len()).await);
        }
        let want: Vec<String> = (0..N).map(|i| format!("o{i}")).collect();
        assert_eq!(b, want, "round {round}: every message once, in order");
        // Rerouting does not archive (XEP-0313) a second time.
        let id = a2.id();
        let r = a2
            .request(
                &format!(
                    "<iq type='set' id='{id}'><query xmlns='urn:xmpp:mam:2'>\
                     <set xmlns='http://jabber.org/protocol/rsm'><max>0</max></set></query></iq>"
                ),
                &id,
            )
            .await;
        let count = r
            .child("fin")
            .and_then(|f| f.child("set"))
            .and_then(|s| s.child_text("count"))
            .map(str::to_string);
        assert_eq!(count, Some(N.to_string()), "archived once each: {r}");
    }
}
