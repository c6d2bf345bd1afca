//! Integration tests of what crosses the nodes of a cluster besides chat
//! between two accounts (that is `cluster.rs`): two or three real
//! `rookery` nodes sharing one PostgreSQL (`common::pg`) and one NATS with
//! JetStream (`common::nats`), started in temporary directories on ports
//! they picked (SKIPPED without PostgreSQL's binaries or `nats-server`):
//!
//! - an account with resources on two nodes: each resource sees the
//!   other's presence (the new one at its initial presence, updates and
//!   unavailable, also when the session just ends), and XEP-0280 carbon
//!   copies of what the other one sends and receives, exactly once;
//! - a MUC room used from two nodes: one owner node, occupants on both see
//!   each other's presence and groupchat messages both ways, join history
//!   and a MAM query of the room from either node; when the owner node is
//!   SIGKILLed, the next node that gets a stanza for the room takes it over
//!   with its stored configuration (a persistent room) and archive; an
//!   occupant whose node dies is removed at the room's next broadcast;
//! - an XEP-0114 component connected to one node is reachable from users
//!   on the other (both ways, messages and iqs), one connection per domain
//!   across the cluster (a second one is a `<conflict/>`), and unavailable
//!   (`service-unavailable`) once it disconnects or its node dies;
//! - s2s: a stanza arriving over s2s at one node for a user on the other
//!   is delivered (a third, standalone Rookery is the remote server); the
//!   answer leaves over that user's node's own outgoing s2s connection;
//! - `rookery ctl connected_users_info` / `user_sessions_info` list every
//!   node's sessions with their node's name, `kick_user` / `kick_session`
//!   reach sessions on other nodes, `leave_cluster NODE` makes that node leave (its users get
//!   `<system-shutdown/>`), `join_cluster` explains that joining is by
//!   configuration.

use std::time::{Duration, Instant};

use crate::common;

use common::cluster::{engines, node_config};
use common::im::*;
use common::muc::{codes, heard, presence_from, say, MUC, MUC_OWNER};
use common::nats::NatsServer;
use common::pg::PgServer;
use common::*;

const A: &str = "alice@localhost";
const B: &str = "bob@localhost";
const CARBONS: &str = "urn:xmpp:carbons:2";
const FORWARD: &str = "urn:xmpp:forward:0";
const MAM: &str = "urn:xmpp:mam:2";
const SERVICE: &str = "conference.localhost";
const GW: &str = "gw.localhost";
const GW_SECRET: &str = "gwsecret";

/// One node of the test cluster, with a component listener for [`GW`].
fn node(pg: &PgServer, nats: &NatsServer, name: &str) -> Server {
    Server::start_with(Config {
        extra_listeners: vec![format!(
            "port: 0\nip: 127.0.0.1\nmodule: ejabberd_service\nhosts:\n  {GW}:\n    password: {GW_SECRET}"
        )],
        ..node_config(pg, nats, name, 3)
    })
}

/// Wait until `list_cluster` on `s` says `want`.
fn wait_nodes(s: &Server, want: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut got: Vec<String> = s
            .ctl_ok(&["list_cluster"])
            .lines()
            .map(str::to_string)
            .collect();
        got.sort();
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "list_cluster says {got:?}, expected {want:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Two nodes n1, n2 with alice, bob and carol registered.
fn two_nodes(pg: &PgServer, nats: &NatsServer) -> (Server, Server) {
    let n1 = node(pg, nats, "n1");
    let n2 = node(pg, nats, "n2");
    n1.register(ALICE.0, "localhost", ALICE.1);
    n1.register(BOB.0, "localhost", BOB.1);
    n1.register(CAROL.0, "localhost", CAROL.1);
    wait_nodes(&n1, &["n1", "n2"]);
    wait_nodes(&n2, &["n1", "n2"]);
    (n1, n2)
}

/// The body of the message a carbon copy (`kind`: sent or received) wraps.
fn carbon_body(e: &Element, kind: &str) -> Option<String> {
    let m = e
        .child_ns(kind, CARBONS)?
        .child_ns("forwarded", FORWARD)?
        .child("message")?;
    m.child_text("body").map(str::to_string)
}

/// Every carbon copy (`kind`) in `els`, by body.
fn carbons_in(els: &[Element], kind: &str) -> Vec<String> {
    els.iter().filter_map(|e| carbon_body(e, kind)).collect()
}

async fn enable_carbons(c: &mut Client) {
    let id = c.id();
    let r = c
        .request(
            &format!("<iq type='set' id='{id}'><enable xmlns='{CARBONS}'/></iq>"),
            &id,
        )
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
}

/// Wait for the carbon copy (`kind`) of the message with `body`.
async fn recv_carbon(c: &mut Client, kind: &str, body: &str) -> Element {
    let e = c
        .recv_where(&format!("the {kind} carbon of {body:?}"), |e| {
            carbon_body(e, kind).as_deref() == Some(body)
        })
        .await;
    let me = c.full_jid();
    let account = me.split('/').next().unwrap_or_default().to_string();
    assert_eq!(e.attr("from"), Some(account.as_str()), "{e}");
    e
}

#[tokio::test]
async fn an_account_on_two_nodes_sees_its_own_presence_and_gets_carbons() {
    let Some((pg, nats)) = engines("cluster_routing::an_account_on_two_nodes") else {
        return;
    };
    let (n1, n2) = two_nodes(&pg, &nats);
    let a1_jid = format!("{A}/a1");
    let a2_jid = format!("{A}/a2");

    // a1 (n1) is online; a2 (n2) comes online and learns a1's presence,
    // and a1 sees a2 arrive.
    let (mut a1, _) = online_with(
        &n1,
        ALICE,
        "a1",
        "<presence><show>away</show><priority>1</priority></presence>",
    )
    .await;
    let (mut a2, got) = online_with(&n2, ALICE, "a2", "<presence/>").await;
    let p = got
        .iter()
        .find(|e| is_presence(e, &a1_jid, None))
        .unwrap_or_else(|| panic!("a2 did not learn a1's presence: {}", show(&got)));
    assert_eq!(p.child_text("show"), Some("away"), "{p}");
    assert_eq!(p.attr("to"), Some(a2_jid.as_str()), "{p}");
    let p = recv_presence(&mut a1, &a2_jid, None).await;
    assert_eq!(p.attr("to"), Some(a1_jid.as_str()), "{p}");

    // A presence update of a1 reaches a2, and one of a2 reaches a1.
    a1.send("<presence><show>dnd</show></presence>").await;
    let p = a2
        .recv_where("a1's dnd", |e| {
            is_presence(e, &a1_jid, None) && e.child_text("show") == Some("dnd")
        })
        .await;
    assert_eq!(p.attr("to"), Some(a2_jid.as_str()), "{p}");
    a2.send("<presence><show>chat</show></presence>").await;
    a1.recv_where("a2's chat", |e| {
        is_presence(e, &a2_jid, None) && e.child_text("show") == Some("chat")
    })
    .await;

    // Carbons: both resources enable them; bob is on n1.
    enable_carbons(&mut a1).await;
    enable_carbons(&mut a2).await;
    let mut bob = online(&n1, BOB, "b1").await;
    let b1 = format!("{B}/b1");
    // bob → a1 (same node as bob): a2 on n2 gets a <received/> copy.
    bob.send(&chat(&a1_jid, "m1", "to a1")).await;
    a1.recv_where("bob's message to a1", |e| {
        e.name == "message" && e.child_text("body") == Some("to a1")
    })
    .await;
    recv_carbon(&mut a2, "received", "to a1").await;
    // bob → a2 (the other node): a1 gets the <received/> copy.
    bob.send(&chat(&a2_jid, "m2", "to a2")).await;
    a2.recv_where("bob's message to a2", |e| {
        e.name == "message" && e.child_text("body") == Some("to a2")
    })
    .await;
    recv_carbon(&mut a1, "received", "to a2").await;
    // a2 → bob: a1 gets a <sent/> copy; a1 → bob: a2 gets one.
    a2.send(&chat(&b1, "s1", "from a2")).await;
    recv_carbon(&mut a1, "sent", "from a2").await;
    a1.send(&chat(&b1, "s2", "from a1")).await;
    recv_carbon(&mut a2, "sent", "from a1").await;
    let got = bodies(&sync(&mut bob).await);
    let mut want = vec!["from a2".to_string(), "from a1".to_string()];
    let mut got_sorted = got.clone();
    got_sorted.sort();
    want.sort();
    assert_eq!(got_sorted, want, "bob got {got:?}");
    // Exactly once: nothing more arrives at either resource.
    let rest1 = sync(&mut a1).await;
    let rest2 = sync(&mut a2).await;
    for rest in [&rest1, &rest2] {
        assert!(
            carbons_in(rest, "sent").is_empty() && carbons_in(rest, "received").is_empty(),
            "a copy twice: {}",
            show(rest)
        );
        assert!(bodies(rest).is_empty(), "{}", show(rest));
    }
    // A <private/> message is not copied across nodes either.
    a2.send(&format!(
        "<message to='{b1}' type='chat'><body>private</body><private xmlns='{CARBONS}'/></message>"
    ))
    .await;
    bob.recv_where("the private message", |e| {
        e.child_text("body") == Some("private")
    })
    .await;
    assert!(carbons_in(&sync(&mut a1).await, "sent").is_empty());

    // a2 goes unavailable: a1 sees it; a2 back, then its session just
    // ends (no unavailable sent): a1 sees it go.
    a2.send("<presence type='unavailable'/>").await;
    recv_presence(&mut a1, &a2_jid, Some("unavailable")).await;
    a2.send("<presence/>").await;
    recv_presence(&mut a1, &a2_jid, None).await;
    a2.close().await;
    recv_presence(&mut a1, &a2_jid, Some("unavailable")).await;

    // n2 held alice's last resource there and told n1 so; a new one on
    // n2 is learned again: presence both ways, carbons both ways.
    let a3_jid = format!("{A}/a3");
    let (mut a3, got) = online_with(&n2, ALICE, "a3", "<presence/>").await;
    assert!(
        got.iter().any(|e| is_presence(e, &a1_jid, None)),
        "a3 did not learn a1's presence: {}",
        show(&got)
    );
    recv_presence(&mut a1, &a3_jid, None).await;
    enable_carbons(&mut a3).await;
    a1.send(&chat(&b1, "s3", "a1 again")).await;
    recv_carbon(&mut a3, "sent", "a1 again").await;
    a3.send(&chat(&b1, "s4", "from a3")).await;
    recv_carbon(&mut a1, "sent", "from a3").await;
}

/// A MAM query of `room`: the bodies of the results, in order.
async fn room_archive(c: &mut Client, room: &str) -> Vec<String> {
    let id = c.id();
    c.send(&format!(
        "<iq type='set' id='{id}' to='{room}'><query xmlns='{MAM}' queryid='q{id}'/></iq>"
    ))
    .await;
    let mut out = Vec::new();
    loop {
        let e = c
            .recv_where("a MAM result or answer", |e| {
                (e.name == "iq" && e.attr("id") == Some(id.as_str()))
                    || (e.name == "message" && e.child_ns("result", MAM).is_some())
            })
            .await;
        if e.name == "iq" {
            assert_eq!(e.attr("type"), Some("result"), "{e}");
            return out;
        }
        let body = e
            .child_ns("result", MAM)
            .and_then(|r| r.child_ns("forwarded", FORWARD))
            .and_then(|f| f.child("message"))
            .and_then(|m| m.child_text("body"))
            .unwrap_or_default()
            .to_string();
        out.push(body);
    }
}

/// Join `room` as `nick` with `history` inside `<x/>`; everything up to
/// the subject (the end of the join).
async fn join_all(c: &mut Client, room: &str, nick: &str, history: &str) -> Vec<Element> {
    c.send(&format!(
        "<presence to='{room}/{nick}'><x xmlns='{MUC}'>{history}</x></presence>"
    ))
    .await;
    let mut got = Vec::new();
    loop {
        let e = c
            .recv_where("the join sequence", |e| {
                e.attr("from")
                    .is_some_and(|f| f == room || f.starts_with(&format!("{room}/")))
            })
            .await;
        assert_ne!(e.attr("type"), Some("error"), "join refused: {e}");
        let done = e.name == "message" && e.child("subject").is_some() && e.child("body").is_none();
        got.push(e);
        if done {
            return got;
        }
    }
}

async fn iq(c: &mut Client, kind: &str, to: &str, inner: &str) -> Element {
    let id = c.id();
    c.request(
        &format!("<iq type='{kind}' to='{to}' id='{id}'>{inner}</iq>"),
        &id,
    )
    .await
}

#[tokio::test]
async fn a_room_has_one_owner_node_occupants_on_both_and_is_taken_over_when_it_dies() {
    let Some((pg, nats)) = engines("cluster_routing::a_room_has_one_owner_node") else {
        return;
    };
    let (mut n1, n2) = two_nodes(&pg, &nats);
    let room = format!("lounge@{SERVICE}");

    // alice (n1) creates the room: n1 owns it. She makes it persistent.
    let mut alice = login(&n1, ALICE, "pc").await;
    join_all(&mut alice, &room, "alice", "").await;
    let form = format!(
        "<query xmlns='{MUC_OWNER}'><x xmlns='jabber:x:data' type='submit'>\
         <field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>\
         <field var='muc#roomconfig_persistentroom'><value>1</value></field>\
         <field var='muc#roomconfig_roomname'><value>Across nodes</value></field>\
         </x></query>"
    );
    let r = iq(&mut alice, "set", &room, &form).await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");

    // bob (n2) joins: he sees alice in the room, she sees him.
    let mut bob = login(&n2, BOB, "pc").await;
    let got = join_all(&mut bob, &room, "bob", "<history maxstanzas='0'/>").await;
    assert!(
        got.iter()
            .any(|e| e.name == "presence" && e.attr("from") == Some(&*format!("{room}/alice"))),
        "bob does not see alice: {}",
        show(&got)
    );
    let own = got
        .iter()
        .find(|e| e.name == "presence" && e.attr("from") == Some(&*format!("{room}/bob")))
        .expect("bob's own presence");
    assert!(codes(own).contains(&"110".to_string()), "{own}");
    presence_from(&mut alice, &format!("{room}/bob"), None).await;

    // Groupchat both ways, each message to every occupant once.
    say(&mut alice, &room, "hello from n1").await;
    heard(&mut bob, &format!("{room}/alice"), "hello from n1").await;
    heard(&mut alice, &format!("{room}/alice"), "hello from n1").await;
    say(&mut bob, &room, "hello from n2").await;
    heard(&mut alice, &format!("{room}/bob"), "hello from n2").await;
    heard(&mut bob, &format!("{room}/bob"), "hello from n2").await;
    assert!(bodies(&sync(&mut alice).await).is_empty());
    assert!(bodies(&sync(&mut bob).await).is_empty());

    // carol joins from n2 with history: both messages, once each.
    let mut carol = login(&n2, CAROL, "pc").await;
    let got = join_all(&mut carol, &room, "carol", "").await;
    let history: Vec<String> = got
        .iter()
        .filter(|e| e.name == "message" && e.child("body").is_some())
        .filter_map(|e| e.child_text("body").map(str::to_string))
        .collect();
    assert_eq!(history, vec!["hello from n1", "hello from n2"]);
    presence_from(&mut alice, &format!("{room}/carol"), None).await;
    presence_from(&mut bob, &format!("{room}/carol"), None).await;

    // The room's archive, from either node.
    let want = vec!["hello from n1".to_string(), "hello from n2".to_string()];
    assert_eq!(room_archive(&mut bob, &room).await, want);
    assert_eq!(room_archive(&mut alice, &room).await, want);

    // carol leaves: the occupants on both nodes see her go.
    carol
        .send(&format!("<presence to='{room}/carol' type='unavailable'/>"))
        .await;
    presence_from(&mut alice, &format!("{room}/carol"), Some("unavailable")).await;
    presence_from(&mut bob, &format!("{room}/carol"), Some("unavailable")).await;

    // The owner node dies. The next stanza for the room (from n2) finds
    // nobody answering on n1: n2 takes the room over, with its stored
    // name and its archive (the occupants n1 held are gone: they rejoin).
    n1.kill_hard();
    let info = iq(
        &mut bob,
        "get",
        &room,
        "<query xmlns='http://jabber.org/protocol/disco#info'/>",
    )
    .await;
    assert_eq!(info.attr("type"), Some("result"), "{info}");
    assert_eq!(
        info.child("query")
            .and_then(|q| q.child("identity"))
            .and_then(|i| i.attr("name")),
        Some("Across nodes"),
        "{info}"
    );
    join_all(&mut bob, &room, "bob", "<history maxstanzas='0'/>").await;
    join_all(&mut carol, &room, "carol", "<history maxstanzas='0'/>").await;
    presence_from(&mut bob, &format!("{room}/carol"), None).await;
    say(&mut carol, &room, "after the takeover").await;
    heard(&mut bob, &format!("{room}/carol"), "after the takeover").await;
    let mut want = want;
    want.push("after the takeover".to_string());
    assert_eq!(room_archive(&mut bob, &room).await, want);
}

#[tokio::test]
async fn an_occupant_whose_node_dies_leaves_the_room() {
    let Some((pg, nats)) = engines("cluster_routing::an_occupant_whose_node_dies") else {
        return;
    };
    let (n1, mut n2) = two_nodes(&pg, &nats);
    let room = format!("ghosts@{SERVICE}");
    let mut alice = login(&n1, ALICE, "pc").await;
    join_all(&mut alice, &room, "alice", "").await;
    let mut bob = login(&n2, BOB, "pc").await;
    join_all(&mut bob, &room, "bob", "<history maxstanzas='0'/>").await;
    presence_from(&mut alice, &format!("{room}/bob"), None).await;
    // bob's node dies; the room's next broadcast bounces for him (nobody
    // answers on n2) and the room removes him (status 333).
    n2.kill_hard();
    say(&mut alice, &room, "still there?").await;
    let p = presence_from(&mut alice, &format!("{room}/bob"), Some("unavailable")).await;
    assert!(codes(&p).contains(&"333".to_string()), "{p}");
}

#[tokio::test]
async fn a_component_on_one_node_is_reachable_from_the_other_until_it_goes() {
    let Some((pg, nats)) = engines("cluster_routing::a_component_on_one_node") else {
        return;
    };
    let (n1, mut n2) = two_nodes(&pg, &nats);
    let mut comp = common::component::connect(&n1, GW, GW_SECRET).await;
    // One connection per component domain across the cluster.
    match common::component::handshake(&n2, GW, GW_SECRET).await {
        (_, StreamEvent::Stanza(e)) if e.is_stream_error() => {
            assert!(e.child("conflict").is_some(), "{e}")
        }
        (_, other) => panic!("a second connection for {GW} was accepted: {other:?}"),
    }
    let mut bob = online(&n2, BOB, "pc").await;
    let b = format!("{B}/pc");

    // bob (n2) → the component (n1), a message and an iq; and back.
    // The claim is written when the handshake succeeds: retry until then.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        bob.send(&chat(&format!("bot@{GW}"), "c1", "hello bot"))
            .await;
        let got = sync(&mut bob).await;
        if got.iter().all(|e| e.attr("type") != Some("error")) {
            break;
        }
        assert!(Instant::now() < deadline, "{}", show(&got));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let m = comp
        .recv_where("bob's message", |e| {
            e.name == "message" && e.child_text("body") == Some("hello bot")
        })
        .await;
    assert_eq!(m.attr("from"), Some(b.as_str()), "{m}");
    comp.send(&format!(
        "<message from='bot@{GW}' to='{b}' type='chat'><body>hello bob</body></message>"
    ))
    .await;
    let m = bob
        .recv_where("the bot's answer", |e| {
            e.child_text("body") == Some("hello bob")
        })
        .await;
    assert_eq!(m.attr("from"), Some(format!("bot@{GW}").as_str()), "{m}");
    bob.send(&format!(
        "<iq type='get' to='{GW}' id='v1'><query xmlns='jabber:iq:version'/></iq>"
    ))
    .await;
    let q = comp
        .recv_where("the version query", |e| e.name == "iq")
        .await;
    assert_eq!(q.attr("from"), Some(b.as_str()), "{q}");
    comp.send(&format!(
        "<iq type='result' from='{GW}' to='{b}' id='v1'><query xmlns='jabber:iq:version'><name>Gw</name></query></iq>"
    ))
    .await;
    let r = bob
        .recv_where("the version answer", |e| {
            e.name == "iq" && e.attr("id") == Some("v1")
        })
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");

    // The component disconnects: bob's next message is refused.
    comp.close().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        bob.send(&chat(&format!("bot@{GW}"), "c2", "anyone?")).await;
        let got = sync(&mut bob).await;
        if let Some(e) = got.iter().find(|e| e.attr("type") == Some("error")) {
            assert_eq!(
                e.stanza_error().map(|x| x.1).as_deref(),
                Some("service-unavailable"),
                "{e}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "still delivered: {}", show(&got));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // It reconnects to n2; alice on n1 reaches it. Then n2 dies: alice's
    // messages are refused at once (nobody answers on n2's subject).
    let mut comp = common::component::connect(&n2, GW, GW_SECRET).await;
    let mut alice = online(&n1, ALICE, "pc").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        alice
            .send(&chat(&format!("bot@{GW}"), "c3", "hi from n1"))
            .await;
        let got = sync(&mut alice).await;
        if got.iter().all(|e| e.attr("type") != Some("error")) {
            break;
        }
        assert!(Instant::now() < deadline, "{}", show(&got));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    comp.recv_where("alice's message", |e| {
        e.child_text("body") == Some("hi from n1")
    })
    .await;
    n2.kill_hard();
    alice.send(&chat(&format!("bot@{GW}"), "c4", "gone?")).await;
    let e = alice
        .recv_where("the error", |e| {
            e.name == "message" && e.attr("type") == Some("error")
        })
        .await;
    assert_eq!(
        e.stanza_error().map(|x| x.1).as_deref(),
        Some("service-unavailable"),
        "{e}"
    );
    // The dead node's claim does not keep the component from connecting
    // to n1 at once.
    let mut comp = common::component::connect(&n1, GW, GW_SECRET).await;
    alice
        .send(&chat(&format!("bot@{GW}"), "c5", "back on n1"))
        .await;
    comp.recv_where("alice's message", |e| {
        e.child_text("body") == Some("back on n1")
    })
    .await;
}

#[tokio::test]
async fn kicks_reach_other_nodes_and_leave_cluster_stops_a_node() {
    let Some((pg, nats)) = engines("cluster_routing::kicks_reach_other_nodes") else {
        return;
    };
    let (n1, mut n2) = two_nodes(&pg, &nats);
    n1.register("dave", "localhost", "davepw");
    let mut bob = online(&n2, BOB, "pc").await;
    let mut carol = online(&n2, CAROL, "pc").await;
    let mut alice = online(&n2, ALICE, "pc").await;

    let _dave_on_n1 = online(&n1, ("dave", "davepw"), "desk").await;

    // The session details list every node's sessions, each with its node.
    let info = n1.ctl_ok(&["connected_users_info"]);
    let rows: Vec<Vec<&str>> = info.lines().map(|l| l.split('\t').collect()).collect();
    let jids_nodes: Vec<(&str, &str)> = rows.iter().map(|f| (f[0], f[5])).collect();
    assert_eq!(
        jids_nodes,
        vec![
            ("alice@localhost/pc", "n2"),
            ("bob@localhost/pc", "n2"),
            ("carol@localhost/pc", "n2"),
            ("dave@localhost/desk", "n1"),
        ],
        "{info}"
    );
    let bob_info = n1.ctl_ok(&["user_sessions_info", "bob", "localhost"]);
    let f: Vec<&str> = bob_info.trim().split('\t').collect();
    assert_eq!((f[4], f[6], f[7]), ("n2", "available", "pc"), "{bob_info}");

    // kick_user on n1 ends bob's session on n2.
    assert_eq!(n1.ctl_ok(&["kick_user", "bob", "localhost"]).trim(), "1");
    let e = bob.recv_where("the kick", |e| e.is_stream_error()).await;
    assert!(e.child("not-authorized").is_some(), "{e}");
    // kick_session on n1 ends carol's session on n2; an unknown one fails.
    n1.ctl_ok(&["kick_session", "carol", "localhost", "pc", "testing"]);
    let e = carol.recv_where("the kick", |e| e.is_stream_error()).await;
    assert!(e.child("policy-violation").is_some(), "{e}");
    let (code, out, err) = n1.ctl(&["kick_session", "carol", "localhost", "nope", "x"]);
    assert_eq!(code, 1, "{out}{err}");

    // join_cluster explains that joining is by configuration.
    let (code, out, err) = n1.ctl(&["join_cluster", "n3"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(format!("{out}{err}").contains("cluster:"), "{out}{err}");
    // leave_cluster of an unknown node fails; of n2, run on n1: n2 leaves
    // and stops, its users told with <system-shutdown/>.
    let (code, out, err) = n1.ctl(&["leave_cluster", "n9"]);
    assert_eq!(code, 1, "{out}{err}");
    n1.ctl_ok(&["leave_cluster", "n2"]);
    let e = alice
        .recv_where("the shutdown", |e| e.is_stream_error())
        .await;
    assert!(e.child("system-shutdown").is_some(), "{e}");
    wait_nodes(&n1, &["n1"]);
    assert!(
        n2.wait_exit(Duration::from_secs(20)).is_some(),
        "n2 did not stop"
    );
}

#[tokio::test]
async fn leave_cluster_without_a_cluster_is_a_clear_error() {
    let s = Server::start();
    let (code, out, err) = s.ctl(&["leave_cluster", "rookery"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        format!("{out}{err}").contains("not in a cluster"),
        "{out}{err}"
    );
}

/// One node of a cluster serving `a.test`, federating with `b.test`.
fn s2s_node(
    pg: &PgServer,
    nats: &NatsServer,
    name: &str,
    s2s_port: u16,
    cert: &std::path::Path,
    ca: &std::path::Path,
    b_port: u16,
) -> Server {
    let cluster = node_config(pg, nats, name, 3);
    Server::start_with(Config {
        hosts: vec!["a.test".to_string()],
        extra_listeners: vec![format!(
            "port: {s2s_port}\nip: 127.0.0.1\nmodule: ejabberd_s2s_in"
        )],
        extra_yaml: format!(
            "certfiles: [{:?}]\ns2s_use_starttls: required\ns2s_hosts:\n  b.test: \"127.0.0.1:{b_port}\"\ns2s_cafile: {:?}\n{}",
            cert.display().to_string(),
            ca.display().to_string(),
            cluster.extra_yaml
        ),
        ..cluster
    })
}

#[tokio::test]
async fn a_stanza_over_s2s_at_one_node_reaches_a_user_on_the_other() {
    let Some((pg, nats)) = engines("cluster_routing::a_stanza_over_s2s_at_one_node") else {
        return;
    };
    use crate::s2s::{free_port, start, user, write, Ca, Side};
    let files = tempfile::tempdir().unwrap();
    let ca = Ca::new("Rookery cluster test CA");
    let ca_file = write(files.path(), "ca.pem", &ca.pem);
    let a_cert = write(files.path(), "a.test.pem", &ca.issue("a.test"));
    let (p1, p2, pb) = (free_port(), free_port(), free_port());
    let n1 = s2s_node(&pg, &nats, "n1", p1, &a_cert, &ca_file, pb);
    let n2 = s2s_node(&pg, &nats, "n2", p2, &a_cert, &ca_file, pb);
    n1.register("alice", "a.test", "secret");
    wait_nodes(&n2, &["n1", "n2"]);
    // b.test finds a.test at n1 only.
    let b_cert = ca.issue("b.test");
    let b = start(
        &Side {
            domain: "b.test",
            s2s_port: pb,
            cert: &b_cert,
            cafile: Some(ca_file.as_path()),
            extra: "",
        },
        &[("a.test", p1)],
        files.path(),
    );

    let mut alice = user(&n2, "a.test", "alice", "pc").await;
    let mut bob = user(&b, "b.test", "bob", "phone").await;
    // b.test → n1 over s2s → n2 over NATS → alice; to the full and the
    // bare JID.
    bob.send("<message to='alice@a.test/pc' type='chat' id='s1'><body>over s2s</body></message>")
        .await;
    let m = alice.recv_message().await;
    assert_eq!(m.attr("from"), Some("bob@b.test/phone"), "{m}");
    assert_eq!(m.child_text("body"), Some("over s2s"));
    bob.send(
        "<message to='alice@a.test' type='chat' id='s2'><body>to the bare jid</body></message>",
    )
    .await;
    let m = alice.recv_message().await;
    assert_eq!(m.child_text("body"), Some("to the bare jid"), "{m}");
    // The answer leaves from n2 over its own s2s connection.
    alice
        .send("<message to='bob@b.test/phone' type='chat'><body>back from n2</body></message>")
        .await;
    let m = bob.recv_message().await;
    assert_eq!(m.attr("from"), Some("alice@a.test/pc"), "{m}");
    assert_eq!(m.child_text("body"), Some("back from n2"));
    let c1 = n1.ctl_ok(&["s2s_connections"]);
    let c2 = n2.ctl_ok(&["s2s_connections"]);
    assert!(
        c1.lines()
            .any(|l| l.starts_with("in ") && l.contains("b.test")),
        "{c1}"
    );
    assert!(
        c2.lines()
            .any(|l| l.starts_with("out ") && l.contains("b.test")),
        "{c2}"
    );
    assert!(!c2.lines().any(|l| l.starts_with("in ")), "{c2}");
}
