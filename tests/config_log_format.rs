//! `log_format: json` against the real binary: every line the server
//! writes to stderr is one JSON object (timestamp, level, target, fields),
//! and a failed TLS handshake is logged once, with the peer's address and
//! the reason as fields a log shipper can index. Every line logged while
//! a connection is handled carries its id (and its JID once bound), in
//! JSON and in text.

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use crate::common;

use common::{Config, Server};

#[tokio::test]
async fn json_log_lines_with_the_failed_handshake_and_its_peer() {
    let server = Server::start_with(Config {
        extra_yaml: "log_format: json\n".to_string(),
        ..Config::default()
    });
    // Not TLS at all on the direct-TLS port.
    let mut tcp = tokio::net::TcpStream::connect(server.c2s_tls())
        .await
        .expect("connect");
    let local = tcp.local_addr().expect("local address");
    tcp.write_all(b"GET / HTTP/1.0\r\n\r\n")
        .await
        .expect("write");
    let deadline = Instant::now() + Duration::from_secs(10);
    let failure = loop {
        let log = std::fs::read_to_string(server.dir().join("server.stderr")).expect("stderr");
        let lines: Vec<serde_json::Value> = log
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        assert!(lines.iter().all(|v| v["level"].is_string()
            && v["timestamp"].is_string()
            && v["fields"]["message"].is_string()));
        let failed: Vec<&serde_json::Value> = lines
            .iter()
            .filter(|v| {
                v["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("TLS handshake failed"))
            })
            .collect();
        if let Some(v) = failed.first() {
            assert_eq!(failed.len(), 1, "logged more than once: {failed:?}");
            break (*v).clone();
        }
        assert!(
            Instant::now() < deadline,
            "no failed handshake logged:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(failure["level"], "INFO", "{failure}");
    assert_eq!(failure["fields"]["peer"], local.to_string(), "{failure}");
    let id = conn_of(&failure).unwrap_or_else(|| panic!("no connection id: {failure}"));
    assert!(id.starts_with("c2s-"), "{failure}");
    assert!(
        failure["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("c2s: TLS handshake failed: ") && m.len() > 27),
        "{failure}"
    );
}

/// The connection id a JSON line carries (`conn`, with `jid` once bound).
fn conn_of(v: &serde_json::Value) -> Option<&str> {
    v["conn"].as_str()
}

/// The JID a JSON line carries: its connection's, or an event field.
fn jid_of(v: &serde_json::Value) -> Option<&str> {
    v["jid"].as_str().or(v["fields"]["jid"].as_str())
}

/// The server's stderr as JSON lines, each checked to be one.
fn json_lines(server: &Server) -> Vec<serde_json::Value> {
    let log = std::fs::read_to_string(server.dir().join("server.stderr")).expect("stderr");
    log.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[tokio::test]
async fn every_line_of_a_session_carries_its_connection_id() {
    let server = Server::start_with(Config {
        extra_yaml: "log_format: json\n".to_string(),
        loglevel: "debug".to_string(),
        ..Config::default()
    });
    server.register("alice", "localhost", "pw-alice");
    server.register("bob", "localhost", "pw-bob");
    let (mut alice, mut bob) = tokio::join!(
        common::Client::login(&server, "alice", "pw-alice", Some("a")),
        common::Client::login(&server, "bob", "pw-bob", Some("b")),
    );
    alice.presence().await;
    bob.presence().await;
    // Bob's client sends XML that is not well-formed: a stream error.
    bob.send_bytes(b"<message to='alice@localhost'><body>x</bod></message>")
        .await;
    assert_eq!(bob.expect_stream_error().await, "not-well-formed");
    alice.close().await;
    let peers = [
        (
            alice.local_addr.expect("addr").to_string(),
            "alice@localhost/a",
        ),
        (bob.local_addr.expect("addr").to_string(), "bob@localhost/b"),
    ];
    // Both sessions' ends are logged.
    let deadline = Instant::now() + Duration::from_secs(10);
    let lines = loop {
        let lines = json_lines(&server);
        let ended = |jid: &str| {
            lines.iter().any(|v| {
                v["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m == format!("session ended: {jid}"))
            })
        };
        if ended(peers[0].1) && ended(peers[1].1) {
            break lines;
        }
        assert!(
            Instant::now() < deadline,
            "session ends not logged:\n{}",
            server.stderr_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut ids = Vec::new();
    for (peer, jid) in &peers {
        // A connection's lines: those naming its address or its JID.
        let own: Vec<&serde_json::Value> = lines
            .iter()
            .filter(|v| v["fields"]["peer"].as_str() == Some(peer) || jid_of(v) == Some(jid))
            .collect();
        assert!(own.len() >= 3, "few lines for {jid}: {own:?}");
        let id = conn_of(own[0]).unwrap_or_else(|| panic!("no connection id: {}", own[0]));
        assert!(id.starts_with("c2s-") && id.len() > 4, "{id}");
        for v in &own {
            assert_eq!(conn_of(v), Some(id), "another id on {jid}'s line: {v}");
        }
        // And every line with that id is this connection's: the JID, once
        // bound, on all of them.
        let with_id: Vec<&serde_json::Value> =
            lines.iter().filter(|v| conn_of(v) == Some(id)).collect();
        assert!(with_id.len() >= own.len());
        for v in &with_id {
            if let Some(p) = v["fields"]["peer"].as_str() {
                assert_eq!(p, peer, "{v}");
            }
        }
        let ended = with_id
            .iter()
            .find(|v| v["fields"]["message"] == format!("session ended: {jid}"))
            .expect("end line");
        assert_eq!(jid_of(ended), Some(*jid), "{ended}");
        ids.push(id.to_string());
    }
    assert_ne!(ids[0], ids[1], "two connections, one id");
    // The stream error: logged once, with Bob's address, id and reason.
    let errors: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|v| {
            v["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("sending stream error"))
        })
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    let e = errors[0];
    assert_eq!(e["level"], "INFO", "{e}");
    assert_eq!(e["fields"]["peer"], peers[1].0, "{e}");
    assert_eq!(conn_of(e), Some(ids[1].as_str()), "{e}");
    assert_eq!(jid_of(e), Some(peers[1].1), "{e}");
    assert!(
        e["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("sending stream error not-well-formed: not well-formed")),
        "{e}"
    );
}

#[tokio::test]
async fn text_lines_carry_the_connection_id_and_jid() {
    let server = Server::start();
    server.register("carol", "localhost", "pw-carol");
    let mut carol = common::Client::login(&server, "carol", "pw-carol", Some("c")).await;
    carol.close().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let line = loop {
        let log = std::fs::read_to_string(server.dir().join("server.stderr")).expect("stderr");
        if let Some(l) = log
            .lines()
            .find(|l| l.contains("session ended: carol@localhost/c"))
        {
            break l.to_string();
        }
        assert!(Instant::now() < deadline, "no session end logged:\n{log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(line.contains("conn=c2s-"), "{line}");
    assert!(line.contains("jid=carol@localhost/c"), "{line}");
}
