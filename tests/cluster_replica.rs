//! Integration tests of each node's in-memory copy of the cluster's
//! session table (src/cluster/replica.rs; docs/architecture.md, "The
//! session table and membership"): real `rookery` nodes on one PostgreSQL
//! (`common::pg`) and one NATS server with JetStream (`common::nats`),
//! each in a temporary directory on loopback ports (SKIPPED without
//! PostgreSQL's binaries or `nats-server`):
//!
//! - a session bound on node n2 is reached from n1 by bare JID a second
//!   later, live; once its client left, a message to the bare JID is
//!   stored offline and delivered once at the next login;
//! - a node started while the table already holds sessions loads them
//!   (its copy is current with those accounts) and reaches them by bare JID;
//! - after NATS restarts without its store, every node rebuilds its copy
//!   from the re-published sessions and reaches the other node's session
//!   by bare JID again.

use std::time::{Duration, Instant};

use crate::common;

use common::cluster::{engines, node};
use common::im::*;
use common::*;

const B: &str = "bob@localhost";

/// The log line a node writes when its copy is current.
const CURRENT: &str = "session table copy is current";

/// Wait until `s`'s log holds `text` at least `times` times; the log.
fn wait_log_count(s: &Server, text: &str, times: usize, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let log = s.stderr_tail();
        if log.matches(text).count() >= times {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "{text:?} fewer than {times} times in the log: {log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Send a chat message and a ping; no error may come back.
async fn send_ok(c: &mut Client, to: &str, body: &str) {
    c.send(&chat(to, body, body)).await;
    let back = sync(c).await;
    assert!(
        !back.iter().any(|e| e.attr("type") == Some("error")),
        "{}",
        show(&back)
    );
}

#[tokio::test]
async fn a_session_bound_on_another_node_is_reached_by_bare_jid_and_forgotten_when_it_leaves() {
    let Some((pg, nats)) = engines("cluster_replica::bound_and_left") else {
        return;
    };
    let n1 = node(&pg, &nats, "n1");
    let n2 = node(&pg, &nats, "n2");
    n1.register(ALICE.0, "localhost", ALICE.1);
    n1.register(BOB.0, "localhost", BOB.1);
    wait_log_count(&n1, CURRENT, 1, Duration::from_secs(10));
    wait_log_count(&n2, CURRENT, 1, Duration::from_secs(10));
    let mut alice = online(&n1, ALICE, "a1").await;
    let mut bob = online(&n2, BOB, "b1").await;
    // The watch brings bob's entry to n1 within milliseconds; a second is
    // the bound the docs state.
    tokio::time::sleep(Duration::from_secs(1)).await;
    send_ok(&mut alice, B, "live-1").await;
    assert_eq!(bodies(&sync(&mut bob).await), vec!["live-1".to_string()]);

    bob.close().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    send_ok(&mut alice, B, "offline-1").await;
    // Stored offline, delivered once at the next login (on n1 this time).
    let (mut bob, mut got) = online_with(&n1, BOB, "b2", "<presence/>").await;
    got.extend(sync(&mut bob).await);
    let got = bodies(&got);
    assert_eq!(got, vec!["offline-1".to_string()], "bob got {got:?}");
}

#[tokio::test]
async fn a_node_started_later_loads_the_table_and_rebuilds_it_after_nats_lost_its_store() {
    let Some((pg, mut nats)) = engines("cluster_replica::late_node_and_restart") else {
        return;
    };
    let n1 = node(&pg, &nats, "n1");
    n1.register(ALICE.0, "localhost", ALICE.1);
    n1.register(BOB.0, "localhost", BOB.1);
    let mut bob = online(&n1, BOB, "b1").await;
    // n2 starts with bob's entry in the table: its copy loads it.
    let n2 = node(&pg, &nats, "n2");
    let log = wait_log_count(&n2, CURRENT, 1, Duration::from_secs(10));
    assert!(
        log.contains(&format!("{CURRENT} (1 accounts")),
        "n2 did not load bob's entry: {log}"
    );
    let mut alice = online(&n2, ALICE, "a1").await;
    send_ok(&mut alice, B, "loaded-1").await;
    assert_eq!(bodies(&sync(&mut bob).await), vec!["loaded-1".to_string()]);

    // NATS comes back with nothing; the nodes re-publish their sessions
    // and rebuild their copies from the new bucket.
    nats.restart_empty();
    for n in [&n1, &n2] {
        wait_log_count(
            n,
            "recovered after the NATS outage",
            1,
            Duration::from_secs(30),
        );
        wait_log_count(n, CURRENT, 2, Duration::from_secs(30));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    send_ok(&mut alice, B, "rebuilt-1").await;
    assert_eq!(bodies(&sync(&mut bob).await), vec!["rebuilt-1".to_string()]);
}
