//! mod_ping's server-side pings against the real binary: a silent client is
//! pinged after `ping_interval`; answering keeps it connected; with
//! `timeout_action: kill`, one that does not answer within
//! `ping_ack_timeout` is disconnected; without it, it stays.

use crate::common;

use std::time::{Duration, Instant};

use common::client::Client;
use common::im::ALICE;
use common::server::{Config, Server, DEFAULT_MODULES};
use common::{Element, StreamEvent};

fn server(action: &str) -> Server {
    let modules = DEFAULT_MODULES.replace(
        "  mod_ping: {}\n",
        &format!(
            "  mod_ping:\n    send_pings: true\n    ping_interval: 1\n    ping_ack_timeout: 1\n    timeout_action: {action}\n"
        ),
    );
    let s = Server::start_with(Config {
        modules,
        ..Config::default()
    });
    s.register(ALICE.0, "localhost", ALICE.1);
    s
}

fn is_ping(e: &Element) -> bool {
    e.name == "iq" && e.attr("type") == Some("get") && e.child_ns("ping", "urn:xmpp:ping").is_some()
}

#[tokio::test]
async fn silent_clients_are_pinged_and_killed_when_they_do_not_answer() {
    let server = server("kill");
    let mut c = Client::login(&server, ALICE.0, ALICE.1, Some("p")).await;
    let start = Instant::now();
    let ping = c.recv_where("a server ping", is_ping).await;
    assert!(
        start.elapsed() >= Duration::from_millis(800),
        "pinged too early"
    );
    assert_eq!(ping.attr("from"), Some("localhost"));
    assert_eq!(ping.attr("to"), Some(c.full_jid().as_str()));
    // Answer: the session stays and is pinged again later.
    c.send(&format!(
        "<iq type='result' to='localhost' id='{}'/>",
        ping.attr("id").unwrap()
    ))
    .await;
    let again = c.recv_where("a second ping", is_ping).await;
    assert_ne!(again.attr("id"), ping.attr("id"));
    // No answer: disconnected within ping_ack_timeout (plus slack).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "not disconnected");
        match c.recv_event_within(Duration::from_secs(10)).await {
            StreamEvent::End | StreamEvent::Closed(_) => break,
            StreamEvent::Stanza(_) => continue,
            other => panic!("{other:?}"),
        }
    }
    // The session is gone from the server.
    let users = server.ctl_ok(&["connected_users"]);
    assert!(!users.contains("alice@localhost/p"), "{users}");
}

#[tokio::test]
async fn without_kill_an_unanswered_ping_is_only_logged() {
    let server = server("none");
    let mut c = Client::login(&server, ALICE.0, ALICE.1, Some("q")).await;
    let _ = c.recv_where("a server ping", is_ping).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let r = c.ping("localhost").await;
    assert_eq!(
        r.attr("type"),
        Some("result"),
        "session should still be up: {r}"
    );
}
