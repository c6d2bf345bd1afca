//! Integration tests of a cluster's failures (docs/architecture.md,
//! "Cluster", "When NATS or PostgreSQL fails"): real `rookery` nodes on
//! one PostgreSQL (`common::pg`) and one NATS server (`common::nats`),
//! each started in a temporary directory on loopback ports (SKIPPED
//! without PostgreSQL's binaries or `nats-server`). Every message is
//! numbered, and "acknowledged" means the sender's next ping was answered
//! without an error for it:
//!
//! - NATS stopped mid-load and started again on the same port and store:
//!   while it is down each message is answered within a bound (no stall
//!   on NATS timeouts) and stored offline; after it returns the nodes
//!   re-publish their sessions and deliver live again; every acknowledged
//!   message arrives exactly once (live, or offline at the next login), in
//!   order within each of the two;
//! - NATS restarted without its store: the nodes recreate the buckets
//!   and put their heartbeats and sessions back;
//! - PostgreSQL stopped mid-load in a two-node cluster: messages that
//!   cannot be stored get `resource-constraint` within a bound, live
//!   cross-node delivery goes on, and nothing acknowledged is lost;
//! - a message whose owner node archived it and died before answering is
//!   not stored offline a second time (the dedupe by origin-id);
//! - a dead node's sessions, a thousand of them, are swept in bounded
//!   batches while the live node's entries stay.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::common;

use common::cluster::{engines, node, node_config};
use common::im::*;
use common::nats::NatsServer;
use common::pg::PgServer;
use common::*;

const A: &str = "alice@localhost";
const B: &str = "bob@localhost";
const C: &str = "carol@localhost";

/// One node of the test cluster, with `node_ttl` in seconds.
fn node_ttl(pg: &PgServer, nats: &NatsServer, name: &str, ttl: u32) -> Server {
    Server::start_with(node_config(pg, nats, name, ttl))
}

/// Wait until `list_cluster` on `s` names `want` (sorted).
fn wait_nodes(s: &Server, want: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, out, _) = s.ctl(&["list_cluster"]);
        let mut got: Vec<&str> = out.lines().collect();
        got.sort();
        if code == 0 && got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "list_cluster says {got:?}, expected {want:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Wait until `s`'s log contains `text`.
fn wait_log(s: &Server, text: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while !s.stderr_tail().contains(text) {
        assert!(
            Instant::now() < deadline,
            "no {text:?} in the log: {}",
            s.stderr_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A numbered chat message with an origin-id (XEP-0359).
fn numbered(to: &str, body: &str) -> String {
    format!(
        "<message to='{to}' type='chat' id='{body}'><body>{body}</body><origin-id xmlns='urn:xmpp:sid:0' id='{body}'/></message>"
    )
}

/// Send `body` to `to`, then a ping: `Ok` when acknowledged, `Err(error)`
/// when the message came back as an error (other than "not archived",
/// which leaves the message delivered), and how long that took. Bodies of
/// the chat messages the sender received meanwhile go to `inbox`.
async fn send_acked_into(
    c: &mut Client,
    to: &str,
    body: &str,
    inbox: &mut Vec<String>,
) -> (Result<(), String>, Duration) {
    let start = Instant::now();
    c.send(&numbered(to, body)).await;
    let back = sync(c).await;
    let took = start.elapsed();
    let mut result = Ok(());
    for e in &back {
        if e.name != "message" {
            continue;
        }
        if e.attr("type") != Some("error") {
            inbox.extend(e.child_text("body").map(str::to_string));
        } else if e.attr("id") == Some(body) && !e.to_string().contains("message not archived") {
            result = Err(e.to_string());
        }
    }
    (result, took)
}

/// [`send_acked_into`] for a sender that receives no chat.
async fn send_acked(c: &mut Client, to: &str, body: &str) -> (Result<(), String>, Duration) {
    let mut inbox = Vec::new();
    let r = send_acked_into(c, to, body, &mut inbox).await;
    assert!(
        inbox.is_empty(),
        "unexpected chat for the sender: {inbox:?}"
    );
    r
}

/// Every acknowledged message exactly once in `live` + `offline`, each of
/// the two in sending order (the number a body ends with); refused ones
/// (`refused`) at most once.
fn check_once_in_order(
    what: &str,
    acked: &[String],
    refused: &[String],
    live: &[String],
    offline: &[String],
) {
    let mut seen = HashSet::new();
    for b in live.iter().chain(offline) {
        assert!(
            seen.insert(b.clone()),
            "{what}: {b} arrived twice (live {live:?}, offline {offline:?})"
        );
        assert!(
            acked.contains(b) || refused.contains(b),
            "{what}: {b} was never sent"
        );
    }
    for b in acked {
        assert!(
            seen.contains(b),
            "{what}: acknowledged {b} was lost (live {live:?}, offline {offline:?})"
        );
    }
    let num = |b: &String| b.rsplit('-').next().and_then(|n| n.parse::<u32>().ok());
    for (name, v) in [("live", live), ("offline", offline)] {
        let nums: Vec<u32> = v.iter().map(|b| num(b).expect("numbered")).collect();
        assert!(
            nums.windows(2).all(|w| w[0] < w[1]),
            "{what}: {name} copies out of order: {v:?}"
        );
    }
}

#[tokio::test]
async fn nats_restarted_mid_load_loses_and_doubles_nothing_acknowledged() {
    let Some((pg, mut nats)) = engines("cluster_faults::nats_restarted_mid_load") else {
        return;
    };
    let n1 = node(&pg, &nats, "n1");
    let n2 = node(&pg, &nats, "n2");
    for u in [ALICE, BOB, CAROL] {
        n1.register(u.0, "localhost", u.1);
    }
    wait_nodes(&n1, &["n1", "n2"]);
    wait_nodes(&n2, &["n1", "n2"]);
    // Two pairs across the nodes, one each way: alice (n1) → bob (n2),
    // carol (n2) → alice (n1).
    let mut alice = online(&n1, ALICE, "a1").await;
    let mut bob = online(&n2, BOB, "b1").await;
    let mut carol = online(&n2, CAROL, "c1").await;
    let (mut ab, mut ca) = (Vec::new(), Vec::new());
    // What alice receives while she sends.
    let mut alice_inbox = Vec::new();
    let (mut ab_refused, mut ca_refused) = (Vec::new(), Vec::new());
    let mut i = 0;
    let mut round = |phase: &str| {
        i += 1;
        (format!("ab-{phase}-{i:03}"), format!("ca-{phase}-{i:03}"))
    };

    // Live.
    for _ in 0..10 {
        let (x, y) = round("live");
        assert!(send_acked_into(&mut alice, B, &x, &mut alice_inbox)
            .await
            .0
            .is_ok());
        ab.push(x);
        assert!(send_acked(&mut carol, A, &y).await.0.is_ok());
        ca.push(y);
    }

    // NATS goes away: every message is answered within a bound, and
    // acknowledged ones are stored offline (or refused with an error).
    nats.stop();
    let down = Instant::now();
    let mut slowest = Duration::ZERO;
    // Down longer than node_ttl (3 s): the heartbeat keys expire, and the
    // nodes must put them and their sessions back when NATS returns.
    while down.elapsed() < Duration::from_secs(6) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (x, y) = round("down");
        let (r, took) = send_acked_into(&mut alice, B, &x, &mut alice_inbox).await;
        slowest = slowest.max(took);
        match r {
            Ok(()) => ab.push(x),
            Err(_) => ab_refused.push(x),
        }
        let (r, took) = send_acked(&mut carol, A, &y).await;
        slowest = slowest.max(took);
        match r {
            Ok(()) => ca.push(y),
            Err(_) => ca_refused.push(y),
        }
    }
    assert!(
        slowest < Duration::from_secs(8),
        "a message took {slowest:?} to be answered while NATS was down"
    );
    wait_log(&n1, "lost its connection to NATS", Duration::from_secs(5));
    wait_log(&n1, "NATS is unavailable", Duration::from_secs(5));
    let outage = down.elapsed();

    // NATS returns (same port, same store): both nodes recover their
    // heartbeat and session entries, and delivery is live again.
    nats.restart();
    let back = Instant::now();
    wait_log(
        &n1,
        "recovered after the NATS outage",
        Duration::from_secs(30),
    );
    wait_log(
        &n2,
        "recovered after the NATS outage",
        Duration::from_secs(30),
    );
    wait_nodes(&n1, &["n1", "n2"]);
    let recovered = back.elapsed();
    // Meanwhile (the first seconds after the restart) messages are still
    // acknowledged: offline or live.
    for _ in 0..10 {
        let (x, y) = round("back");
        assert!(
            send_acked_into(&mut alice, B, &x, &mut alice_inbox)
                .await
                .0
                .is_ok(),
            "{x}"
        );
        ab.push(x);
        assert!(send_acked(&mut carol, A, &y).await.0.is_ok(), "{y}");
        ca.push(y);
    }
    // Past node_ttl after the recovery (a second re-publishing), every
    // message is live.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut must_be_live = Vec::new();
    for _ in 0..10 {
        let (x, y) = round("late");
        assert!(
            send_acked_into(&mut alice, B, &x, &mut alice_inbox)
                .await
                .0
                .is_ok(),
            "{x}"
        );
        ab.push(x.clone());
        assert!(send_acked(&mut carol, A, &y).await.0.is_ok(), "{y}");
        ca.push(y.clone());
        must_be_live.push((x, y));
    }
    let bob_live = bodies(&sync(&mut bob).await);
    // The session table has every session again.
    let users = n1.ctl_ok(&["connected_users"]);
    assert_eq!(
        users.lines().collect::<Vec<_>>(),
        vec![format!("{A}/a1"), format!("{B}/b1"), format!("{C}/c1")],
        "{users}"
    );
    let mut alice_live = alice_inbox;
    alice_live.extend(bodies(&sync(&mut alice).await));
    for (x, y) in &must_be_live {
        assert!(
            bob_live.contains(x),
            "{x} not live after recovery: {bob_live:?}"
        );
        assert!(
            alice_live.contains(y),
            "{y} not live after recovery: {alice_live:?}"
        );
    }
    println!(
        "NATS outage: {outage:?} down, slowest answer meanwhile {slowest:?}, recovered {recovered:?} after the restart; refused {} + {}",
        ab_refused.len(),
        ca_refused.len()
    );

    // The next login (on the other node) gets the offline copies.
    bob.close().await;
    alice.close().await;
    let (mut bob, got) = online_with(&n1, BOB, "b2", "<presence/>").await;
    let mut bob_off = bodies(&got);
    bob_off.extend(bodies(&sync(&mut bob).await));
    let (mut alice, got) = online_with(&n2, ALICE, "a2", "<presence/>").await;
    let mut alice_off = bodies(&got);
    alice_off.extend(bodies(&sync(&mut alice).await));
    check_once_in_order("alice → bob", &ab, &ab_refused, &bob_live, &bob_off);
    check_once_in_order("carol → alice", &ca, &ca_refused, &alice_live, &alice_off);
    // Messages sent while NATS was down went offline (nothing silently lost).
    assert!(
        ab.iter()
            .any(|b| b.contains("-down-") && bob_off.contains(b)),
        "{bob_off:?}"
    );
}

#[tokio::test]
async fn nats_restarted_without_its_store_gets_buckets_heartbeats_and_sessions_back() {
    let Some((pg, mut nats)) = engines("cluster_faults::nats_restarted_without_its_store") else {
        return;
    };
    let n1 = node(&pg, &nats, "n1");
    let n2 = node(&pg, &nats, "n2");
    n1.register(ALICE.0, "localhost", ALICE.1);
    n1.register(BOB.0, "localhost", BOB.1);
    wait_nodes(&n1, &["n1", "n2"]);
    let mut alice = online(&n1, ALICE, "a1").await;
    let mut bob = online(&n2, BOB, "b1").await;
    assert!(send_acked(&mut alice, B, "s-001").await.0.is_ok());
    // NATS comes back with nothing: no buckets, no heartbeats, no table.
    nats.restart_empty();
    wait_log(
        &n1,
        "recovered after the NATS outage",
        Duration::from_secs(30),
    );
    wait_log(
        &n2,
        "recovered after the NATS outage",
        Duration::from_secs(30),
    );
    wait_nodes(&n1, &["n1", "n2"]);
    let users = n1.ctl_ok(&["connected_users"]);
    assert_eq!(
        users.lines().collect::<Vec<_>>(),
        vec![format!("{A}/a1"), format!("{B}/b1")],
        "{users}"
    );
    // Live across the nodes again.
    assert!(send_acked(&mut alice, B, "s-002").await.0.is_ok());
    assert_eq!(
        bodies(&sync(&mut bob).await),
        vec!["s-001".to_string(), "s-002".to_string()]
    );
}

#[tokio::test]
async fn postgresql_restarted_under_a_two_node_cluster_gives_errors_and_loses_nothing_acknowledged()
{
    let Some((pg, nats)) = engines("cluster_faults::postgresql_restarted") else {
        return;
    };
    let n1 = node(&pg, &nats, "n1");
    let n2 = node(&pg, &nats, "n2");
    for u in [ALICE, BOB, CAROL] {
        n1.register(u.0, "localhost", u.1);
    }
    wait_nodes(&n1, &["n1", "n2"]);
    // alice (n1) writes to bob (online on n2) and to carol (offline).
    let mut alice = online(&n1, ALICE, "a1").await;
    let mut bob = online(&n2, BOB, "b1").await;
    let (mut to_b, mut to_c) = (Vec::new(), Vec::new());
    let (mut ref_b, mut ref_c) = (Vec::new(), Vec::new());
    let mut n = 0;
    let mut next = |who: &str| {
        n += 1;
        format!("{who}-{n:03}")
    };
    for _ in 0..5 {
        let x = next("b");
        assert!(send_acked(&mut alice, B, &x).await.0.is_ok());
        to_b.push(x);
        let y = next("c");
        assert!(send_acked(&mut alice, C, &y).await.0.is_ok());
        to_c.push(y);
    }

    pg.stop_server();
    let down = Instant::now();
    let mut slowest = Duration::ZERO;
    while down.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let x = next("b");
        let (r, took) = send_acked(&mut alice, B, &x).await;
        slowest = slowest.max(took);
        match r {
            Ok(()) => to_b.push(x),
            Err(_) => ref_b.push(x),
        }
        let y = next("c");
        let (r, took) = send_acked(&mut alice, C, &y).await;
        slowest = slowest.max(took);
        match r {
            Ok(()) => panic!("{y} to the offline carol was acknowledged while PostgreSQL was down"),
            Err(e) => {
                assert!(e.contains("resource-constraint"), "{e}");
                ref_c.push(y)
            }
        }
    }
    assert!(
        slowest < Duration::from_secs(30),
        "a message took {slowest:?} to be answered while PostgreSQL was down"
    );
    let outage = down.elapsed();

    pg.start_server();
    let restarted = Instant::now();
    // Until storing works again, messages to carol are refused; then stored.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let y = next("c");
        match send_acked(&mut alice, C, &y).await.0 {
            Ok(()) => {
                to_c.push(y);
                break;
            }
            Err(_) => {
                ref_c.push(y);
                assert!(
                    Instant::now() < deadline,
                    "no recovery after PostgreSQL restarted"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    let recovered = restarted.elapsed();
    for _ in 0..3 {
        let x = next("b");
        assert!(send_acked(&mut alice, B, &x).await.0.is_ok(), "{x}");
        to_b.push(x);
        let y = next("c");
        assert!(send_acked(&mut alice, C, &y).await.0.is_ok(), "{y}");
        to_c.push(y);
    }
    println!(
        "PostgreSQL outage under 2 nodes: {outage:?} down, slowest answer {slowest:?}, storing again {recovered:?} after pg_ctl start; refused {} (bob) + {} (carol)",
        ref_b.len(),
        ref_c.len()
    );
    let bob_live = bodies(&sync(&mut bob).await);
    check_once_in_order(
        "alice → bob (live, other node)",
        &to_b,
        &ref_b,
        &bob_live,
        &[],
    );
    // carol logs in on the other node: the acknowledged ones, once, in order.
    let (mut carol, got) = online_with(&n2, CAROL, "c1", "<presence/>").await;
    let mut off = bodies(&got);
    off.extend(bodies(&sync(&mut carol).await));
    assert_eq!(off, to_c, "refused: {ref_c:?}");
    assert!(
        n1.stderr_tail().contains("PostgreSQL is unavailable"),
        "{}",
        n1.stderr_tail()
    );
}

#[tokio::test]
async fn a_message_its_dead_owner_archived_is_not_stored_offline_again() {
    let Some((pg, nats)) = engines("cluster_faults::a_message_its_dead_owner_archived") else {
        return;
    };
    // A long node_ttl: n2 still counts as alive after its death, so n1
    // forwards to it and gets "no responders", as when an owner dies
    // between delivering and answering.
    let n1 = node_ttl(&pg, &nats, "n1", 60);
    let mut n2 = node_ttl(&pg, &nats, "n2", 60);
    n1.register(ALICE.0, "localhost", ALICE.1);
    n1.register(BOB.0, "localhost", BOB.1);
    wait_nodes(&n1, &["n1", "n2"]);
    let mut alice = online(&n1, ALICE, "a1").await;
    let mut bob = online(&n2, BOB, "b1").await;
    assert!(send_acked(&mut alice, B, "o-1").await.0.is_ok());
    assert_eq!(bodies(&sync(&mut bob).await), vec!["o-1".to_string()]);
    // The owner's archive batch (bob's copy) is committed.
    let deadline = Instant::now() + Duration::from_secs(10);
    while pg
        .psql(
            "SELECT count(*) FROM rookery_archive_messages m JOIN rookery_archives a \
             ON a.archive = m.archive WHERE a.owner = 'bob@localhost' AND m.origin_id = 'o-1'",
        )
        .trim()
        != "1"
    {
        assert!(Instant::now() < deadline, "o-1 not in bob's archive");
        std::thread::sleep(Duration::from_millis(100));
    }
    n2.kill_hard();
    drop(bob);
    // alice's client resends o-1 (its answer was lost, as the owner's
    // was), then sends o-2: n1's forward gets no answer for both; o-1 is
    // in bob's archive already and is not stored again, o-2 is stored.
    assert!(send_acked(&mut alice, B, "o-1").await.0.is_ok());
    assert!(send_acked(&mut alice, B, "o-2").await.0.is_ok());
    wait_log(
        &n1,
        "is in the recipient's archive already",
        Duration::from_secs(5),
    );
    let (mut bob, got) = online_with(&n1, BOB, "b2", "<presence/>").await;
    let mut off = bodies(&got);
    off.extend(bodies(&sync(&mut bob).await));
    assert_eq!(off, vec!["o-2".to_string()], "{}", show(&got));
}

#[tokio::test]
async fn a_dead_nodes_thousand_sessions_are_swept_in_bounded_batches() {
    use async_nats::jetstream::kv::Operation;
    use base64::Engine;
    use futures_util::StreamExt;
    let Some((pg, nats)) = engines("cluster_faults::a_dead_nodes_thousand_sessions") else {
        return;
    };
    let n1 = node(&pg, &nats, "n1");
    let mut n2 = node(&pg, &nats, "n2");
    n1.register(ALICE.0, "localhost", ALICE.1);
    n1.register(BOB.0, "localhost", BOB.1);
    wait_nodes(&n1, &["n1", "n2"]);
    let _alice = online(&n1, ALICE, "a1").await;
    let _bob = online(&n2, BOB, "b1").await;
    // Both nodes' start-up sweeps are over (node_ttl + a sweep interval).
    tokio::time::sleep(Duration::from_secs(6)).await;

    // 1000 accounts with a session of a node that is gone (the table as a
    // node that died with 1000 users left it), and one stale resource in
    // alice's entry next to her live one.
    let client = async_nats::connect(nats.url()).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let kv = js.get_key_value("rookery_sessions").await.expect("bucket");
    let key = |bare: &str| {
        format!(
            "s.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bare.as_bytes())
        )
    };
    let ghost = r#"{"n":"ghost","b":"0000000000000dead","p":0,"a":true}"#;
    for i in 0..1000 {
        kv.put(
            key(&format!("user{i}@localhost")),
            format!(r#"{{"phone":{ghost}}}"#).into(),
        )
        .await
        .expect("put");
    }
    let e = kv.entry(key(A)).await.unwrap().expect("alice's entry");
    let mut v: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&e.value).unwrap();
    assert!(v.contains_key("a1"), "{v:?}");
    v.insert("old".into(), serde_json::from_str(ghost).unwrap());
    kv.update(key(A), serde_json::to_vec(&v).unwrap().into(), e.revision)
        .await
        .expect("update");

    // n2 dies: n1's sweeper removes every session of dead boots (1000
    // ghosts, alice's stale one and bob's on n2) in batches of 200 keys.
    let killed = Instant::now();
    n2.kill_hard();
    // The sweeps' log lines: (sessions removed, batches).
    let sweeps = |log: &str| -> Vec<(usize, usize)> {
        log.lines()
            .filter_map(|l| {
                let rest = l.split("cluster: removed ").nth(1)?;
                let n = rest.split(' ').next()?.parse().ok()?;
                let b = rest.split(" (").nth(1)?.split(' ').next()?.parse().ok()?;
                Some((n, b))
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = loop {
        let s = sweeps(&n1.stderr_tail());
        if s.iter().map(|(n, _)| n).sum::<usize>() >= 1002 {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the sweep did not remove 1002 sessions: {s:?} {}",
            n1.stderr_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(done.iter().map(|(n, _)| n).sum::<usize>(), 1002, "{done:?}");
    // 1002 keys in batches of at most 200: six batches (one sweep).
    assert!(done.iter().any(|(_, b)| *b >= 6), "{done:?}");
    println!(
        "swept 1002 sessions of 1002 keys {:?} after the kill: {done:?}",
        killed.elapsed()
    );
    let mut keys = kv.keys().await.expect("keys");
    let mut left = Vec::new();
    while let Some(k) = keys.next().await {
        let k = k.unwrap();
        if let Ok(Some(e)) = kv.entry(k.clone()).await {
            if e.operation == Operation::Put {
                left.push((k, String::from_utf8_lossy(&e.value).into_owned()));
            }
        }
    }
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].0, key(A));
    let v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&left[0].1).unwrap();
    assert_eq!(v.keys().collect::<Vec<_>>(), vec!["a1"], "{v:?}");
}
