//! `log_format: json` against the real binary: every line the server
//! writes to stderr is one JSON object (timestamp, level, target, fields),
//! and a failed TLS handshake is logged once, with the peer's address and
//! the reason as fields a log shipper can index.

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
    assert!(
        failure["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("c2s: TLS handshake failed: ") && m.len() > 27),
        "{failure}"
    );
}
