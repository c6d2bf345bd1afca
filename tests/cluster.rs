//! Integration tests of clustering (`cluster:`, src/cluster/): two or three
//! real `rookery` nodes on distinct ports sharing one PostgreSQL
//! (`common::pg`) and one NATS server with JetStream (`common::nats`), each
//! started by the test in a temporary directory on loopback ports it
//! picked (SKIPPED without PostgreSQL's binaries or `nats-server`):
//!
//! - users on different nodes chat both ways, every message once and in
//!   order; presence (probe answers and broadcasts) crosses nodes; a
//!   subscription between them sets both rosters, with roster pushes on
//!   each user's node; an account on both nodes gets contacts' presence and
//!   roster pushes on both and bare-JID messages at its highest priority; a node stopped in
//!   order leaves the cluster at once;
//!   `rookery ctl list_cluster` lists the live nodes, `connected_users`
//!   every node's sessions;
//! - a node is SIGKILLed: every message its user's contact sent afterwards
//!   and saw acknowledged (a ping round trip after each) is stored offline
//!   and delivered exactly once, in order, when the user logs in on another
//!   node; the dead node drops out of `list_cluster` and its sessions are
//!   swept from the session table;
//! - `cluster:` on the embedded database is a configuration error naming
//!   file and line; an unreachable NATS stops the start with a clear error.

use std::time::{Duration, Instant};

use crate::common;

use common::cluster::{engines, node};
use common::im::*;
use common::pg::PgServer;
use common::server::serve_until_exit;
use common::*;

const A: &str = "alice@localhost";
const B: &str = "bob@localhost";

fn nodes_listed(s: &Server) -> Vec<String> {
    let mut v: Vec<String> = s
        .ctl_ok(&["list_cluster"])
        .lines()
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

/// Wait until `list_cluster` on `s` says `want`.
fn wait_nodes(s: &Server, want: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = nodes_listed(s);
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

/// Receive `n` message bodies (other stanzas are skipped).
async fn recv_bodies(c: &mut Client, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    while out.len() < n {
        let m = c.recv_message().await;
        if let Some(b) = m.child_text("body") {
            out.push(b.to_string());
        }
    }
    out
}

#[tokio::test]
async fn users_on_two_nodes_chat_both_ways_in_order_and_see_each_others_presence() {
    let Some((pg, nats)) = engines("cluster::users_on_two_nodes_chat") else {
        return;
    };
    let n1 = node(&pg, &nats, "n1");
    let n2 = node(&pg, &nats, "n2");
    // Accounts and rosters live in the shared database: made through n1.
    n1.register(ALICE.0, "localhost", ALICE.1);
    n1.register(BOB.0, "localhost", BOB.1);
    subscribe_mutual(&n1, ALICE, BOB).await;
    wait_nodes(&n1, &["n1", "n2"]);
    wait_nodes(&n2, &["n1", "n2"]);

    // Presence: alice (n1) comes online first; bob (n2) gets her presence
    // as the answer to his probe, and she gets his broadcast.
    let mut alice = online(&n1, ALICE, "a1").await;
    let (mut bob, got) = online_with(
        &n2,
        BOB,
        "b1",
        "<presence><priority>3</priority></presence>",
    )
    .await;
    let from_alice = format!("{A}/a1");
    let p = match got.iter().find(|e| is_presence(e, &from_alice, None)) {
        Some(p) => p.clone(),
        None => recv_presence(&mut bob, &from_alice, None).await,
    };
    assert!(p.attr("to").is_some_and(|t| t.starts_with(B)), "{p}");
    let p = recv_presence(&mut alice, &format!("{B}/b1"), None).await;
    assert_eq!(p.child_text("priority"), Some("3"), "{p}");

    // Chat both ways, interleaved, to the bare and to the full JID.
    const N: usize = 40;
    for i in 0..N {
        alice
            .send(&chat(B, &format!("a{i}"), &format!("a->b {i}")))
            .await;
        let to_alice = if i % 2 == 0 {
            A.to_string()
        } else {
            format!("{A}/a1")
        };
        bob.send(&chat(&to_alice, &format!("b{i}"), &format!("b->a {i}")))
            .await;
    }
    let want_b: Vec<String> = (0..N).map(|i| format!("a->b {i}")).collect();
    let want_a: Vec<String> = (0..N).map(|i| format!("b->a {i}")).collect();
    assert_eq!(recv_bodies(&mut bob, N).await, want_b);
    assert_eq!(recv_bodies(&mut alice, N).await, want_a);
    // Nothing twice.
    assert!(bodies(&sync(&mut bob).await).is_empty());
    assert!(bodies(&sync(&mut alice).await).is_empty());

    // An iq between full JIDs crosses too (and its answer comes back).
    alice
        .send(&format!(
            "<iq type='get' to='{B}/b1' id='v1'><query xmlns='jabber:iq:version'/></iq>"
        ))
        .await;
    let q = bob
        .recv_where("the version query", |e| {
            e.name == "iq" && e.attr("id") == Some("v1")
        })
        .await;
    assert_eq!(q.attr("from"), Some(format!("{A}/a1").as_str()), "{q}");
    bob.send(&format!(
        "<iq type='result' to='{A}/a1' id='v1'><query xmlns='jabber:iq:version'><name>t</name></query></iq>"
    ))
    .await;
    let r = alice
        .recv_where("the version answer", |e| {
            e.name == "iq" && e.attr("id") == Some("v1")
        })
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");

    // The session commands see the whole cluster (ejabberd's
    // `onlineusersnode`: this node only).
    for n in [&n1, &n2] {
        let users = n.ctl_ok(&["connected_users"]);
        assert_eq!(
            users.lines().collect::<Vec<_>>(),
            vec![format!("{A}/a1"), format!("{B}/b1")],
            "{users}"
        );
        assert_eq!(n.ctl_ok(&["stats", "onlineusers"]).trim(), "2");
        assert_eq!(n.ctl_ok(&["stats", "onlineusersnode"]).trim(), "1");
    }

    // bob on both nodes: alice's presence change reaches his resource on
    // her node and the one on the other node.
    let mut bob2 = online(&n1, BOB, "b2").await;
    alice.send("<presence><show>dnd</show></presence>").await;
    for c in [&mut bob, &mut bob2] {
        let p = c
            .recv_where("alice's dnd", |e| {
                is_presence(e, &format!("{A}/a1"), None) && e.child_text("show") == Some("dnd")
            })
            .await;
        assert!(p.attr("to").is_some_and(|t| t.starts_with(B)), "{p}");
    }
    // A message to bob's bare JID goes to his resource of the highest
    // priority (3, on n2), not to the one on the sender's node (0).
    alice.send(&chat(B, "prio", "to the best resource")).await;
    assert_eq!(
        recv_bodies(&mut bob, 1).await,
        vec!["to the best resource".to_string()]
    );
    assert!(bodies(&sync(&mut bob2).await).is_empty());
    bob2.send("<presence type='unavailable'/>").await;
    recv_presence(&mut alice, &format!("{B}/b2"), Some("unavailable")).await;
    bob2.close().await;

    // bob leaves: alice sees him go.
    bob.send("<presence type='unavailable'/>").await;
    recv_presence(&mut alice, &format!("{B}/b1"), Some("unavailable")).await;
    bob.close().await;
    // With bob gone from every node, a message to him is stored offline
    // and delivered at his next login, on the other node this time.
    alice.send(&chat(B, "late", "after you left")).await;
    sync(&mut alice).await;
    let (_bob, got) = online_with(&n1, BOB, "b2", "<presence/>").await;
    assert_eq!(
        bodies(&got),
        vec!["after you left".to_string()],
        "{}",
        show(&got)
    );
}

#[tokio::test]
async fn a_subscription_between_users_on_two_nodes_pushes_rosters_and_shares_presence() {
    let Some((pg, nats)) = engines("cluster::a_subscription_between_users_on_two_nodes") else {
        return;
    };
    let n1 = node(&pg, &nats, "n1");
    let n2 = node(&pg, &nats, "n2");
    n1.register(ALICE.0, "localhost", ALICE.1);
    n1.register(BOB.0, "localhost", BOB.1);
    wait_nodes(&n2, &["n1", "n2"]);
    let mut alice = online_interested(&n1, ALICE, "a1").await;
    let mut bob = online_interested(&n2, BOB, "b1").await;

    // alice (n1) asks; bob (n2) gets the request and approves.
    send_sub(&mut alice, B, "subscribe").await;
    let req = recv_presence(&mut bob, A, Some("subscribe")).await;
    assert!(req.attr("to").is_some_and(|t| t.starts_with(B)), "{req}");
    send_sub(&mut bob, A, "subscribed").await;
    // alice's roster push (on n1) says `to`; she gets bob's presence.
    loop {
        let push = recv_push_for(&mut alice, B).await;
        if push_item(&push).attr("subscription") == Some("to") {
            break;
        }
    }
    recv_presence(&mut alice, &format!("{B}/b1"), None).await;
    // bob's roster (on n2, pushed there) says `from`.
    let item = roster_item(&mut bob, A)
        .await
        .expect("bob's item for alice");
    assert_eq!(item.attr("subscription"), Some("from"), "{item}");
    // Both rosters are in the shared database: read through the other node.
    assert!(n2
        .ctl_ok(&["get_roster", "alice", "localhost"])
        .contains("bob@localhost"));
    // A presence change of bob's (n2) reaches alice (n1), subscribed to him.
    bob.send("<presence><show>away</show></presence>").await;
    let p = recv_presence(&mut alice, &format!("{B}/b1"), None).await;
    assert_eq!(p.child_text("show"), Some("away"), "{p}");

    // alice on both nodes: a roster change made on n1 is pushed to her
    // resource on n2 (whose node dropped its cached copy).
    let mut alice2 = online_interested(&n2, ALICE, "a2").await;
    let r = roster_set(
        &mut alice,
        &item_xml("carol@localhost", Some("Carol"), &["G"]),
    )
    .await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    let push = recv_push_for(&mut alice2, "carol@localhost").await;
    assert_eq!(push_item(&push).attr("name"), Some("Carol"), "{push}");
    let r = roster_remove(&mut alice, "carol@localhost").await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    let push = recv_push_for(&mut alice2, "carol@localhost").await;
    assert_eq!(
        push_item(&push).attr("subscription"),
        Some("remove"),
        "{push}"
    );
    assert!(roster_item(&mut alice2, "carol@localhost").await.is_none());
    alice2.close().await;

    // An orderly stop leaves the cluster at once (no wait for node_ttl),
    // and alice sees bob go.
    let mut n2 = n2;
    n2.stop();
    assert_eq!(nodes_listed(&n1), vec!["n1".to_string()]);
    recv_presence(&mut alice, &format!("{B}/b1"), Some("unavailable")).await;
}

#[tokio::test]
async fn messages_to_a_user_of_a_killed_node_are_stored_and_delivered_once_at_the_next_login() {
    let Some((pg, nats)) = engines("cluster::messages_to_a_user_of_a_killed_node") else {
        return;
    };
    let n1 = node(&pg, &nats, "n1");
    let mut n2 = node(&pg, &nats, "n2");
    let n3 = node(&pg, &nats, "n3");
    n1.register(ALICE.0, "localhost", ALICE.1);
    n1.register(BOB.0, "localhost", BOB.1);
    wait_nodes(&n3, &["n1", "n2", "n3"]);

    let mut alice = online(&n1, ALICE, "a1").await;
    let mut bob = online(&n2, BOB, "b1").await;
    // Live first: 0..10 reach bob on n2.
    for i in 0..10 {
        alice
            .send(&chat(B, &format!("m{i}"), &format!("msg {i}")))
            .await;
    }
    sync(&mut alice).await;
    let live: Vec<String> = (0..10).map(|i| format!("msg {i}")).collect();
    assert_eq!(recv_bodies(&mut bob, 10).await, live);

    // n2 dies (SIGKILL: no goodbye, its table entries stay until swept).
    n2.kill_hard();
    drop(bob);
    // Every message alice sends now is acknowledged (ping round trip) only
    // after n1 gave up on n2 and stored it in the shared database.
    let mut acked = Vec::new();
    for i in 10..40 {
        alice
            .send(&chat(B, &format!("m{i}"), &format!("msg {i}")))
            .await;
        let got = sync(&mut alice).await;
        assert!(
            got.iter().all(|e| e.attr("type") != Some("error")),
            "message {i} bounced: {}",
            show(&got)
        );
        acked.push(format!("msg {i}"));
    }
    // The dead node leaves the cluster's membership, and a live node's
    // sweeper removes its sessions from the table.
    wait_nodes(&n1, &["n1", "n3"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while ![&n1, &n3].iter().any(|n| {
        n.stderr_tail()
            .contains("removed 1 sessions of nodes that are gone")
    }) {
        assert!(
            Instant::now() < deadline,
            "no sweep of n2's session: {}{}",
            n1.stderr_tail(),
            n3.stderr_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // bob logs in on n3: each acknowledged message exactly once, in order.
    let (mut bob, got) = online_with(&n3, BOB, "b2", "<presence/>").await;
    assert_eq!(bodies(&got), acked, "{}", show(&got));
    assert!(bodies(&sync(&mut bob).await).is_empty(), "nothing twice");
    // And the cluster goes on: live delivery to bob on n3.
    alice.send(&chat(B, "after", "after the crash")).await;
    assert_eq!(
        recv_bodies(&mut bob, 1).await,
        vec!["after the crash".to_string()]
    );
}

#[tokio::test]
async fn list_cluster_without_cluster_names_the_single_node() {
    let s = Server::start();
    let out = s.ctl_ok(&["list_cluster"]);
    assert!(out.contains("no `cluster:` configured"), "{out}");
}

#[test]
fn a_cluster_on_the_embedded_database_or_without_nats_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let base = format!(
        "hosts: [localhost]\ndata_dir: {}\nlisten:\n  - port: 0\n    ip: 127.0.0.1\n    module: ejabberd_c2s\n",
        data.display()
    );
    // The embedded database: a configuration error naming file and line.
    let (file, status, err) = serve_until_exit(
        dir.path(),
        &format!("{base}cluster:\n  node: n1\n  nats: nats://127.0.0.1:1\n"),
    );
    assert!(!status.success(), "{err}");
    assert!(
        err.contains(&format!("{file}:8:3: cluster: needs `default_db: sql`")),
        "{err}"
    );
    // NATS unreachable: a clear start-up error, no hang.
    let Some(pg) = PgServer::start("cluster::a_cluster_without_nats") else {
        return;
    };
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (_, status, err) = serve_until_exit(
        dir.path(),
        &format!(
            "{base}{}cluster:\n  node: n1\n  nats: nats://127.0.0.1:{closed}\n",
            pg.config_yaml()
        ),
    );
    assert!(!status.success(), "{err}");
    assert!(
        err.contains("cluster: connecting to NATS nats://127.0.0.1:"),
        "{err}"
    );
}
