//! `/metrics` (request handler `mod_prometheus`) against the real binary:
//! scraped over real HTTP, the OpenMetrics text moves with real traffic
//! (logins over STARTTLS, direct TLS, BOSH and WebSocket, a failed login,
//! a message stored offline and archived), a client from an address the
//! allow list does not name gets 403, and docs/admin.md lists exactly the
//! families served.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::common;

use common::client::Client;
use common::http::{http, http_from};
use common::{Config, Server};

/// A server with a plain HTTP listener serving `/metrics` to 127.0.0.1 only.
fn server() -> (Server, std::net::SocketAddr) {
    let server = Server::start_with(Config {
        extra_listeners: vec![
            "port: 0\nip: 127.0.0.1\nmodule: ejabberd_http\nrequest_handlers:\n  /metrics: mod_prometheus"
                .to_string(),
        ],
        extra_yaml: "openmetrics_allow_ips: [127.0.0.1]\n".to_string(),
        ..Config::default()
    });
    let addr = server
        .listeners
        .iter()
        .find(|l| l.module == "http")
        .expect("http listener")
        .addr;
    (server, addr)
}

/// One scrape: every sample line as `name{labels}` → value.
async fn scrape(addr: std::net::SocketAddr) -> (String, HashMap<String, f64>) {
    let a = http(addr, "GET", "/metrics", &[], b"").await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    assert!(
        a.header("content-type")
            .is_some_and(|t| t.starts_with("application/openmetrics-text")),
        "{:?}",
        a.headers
    );
    let text = String::from_utf8(a.body).expect("UTF-8");
    assert!(text.ends_with("# EOF\n"), "{text}");
    let samples = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect();
    (text, samples)
}

fn get(m: &HashMap<String, f64>, key: &str) -> f64 {
    *m.get(key)
        .unwrap_or_else(|| panic!("{key} not served; have {:?}", m.keys()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_real_traffic() {
    let (server, addr) = server();
    server.register("alice", "localhost", "secret");
    server.register("bob", "localhost", "secret");
    let (_, before) = scrape(addr).await;
    assert_eq!(get(&before, "rookery_accounts{host=\"localhost\"}"), 2.0);
    assert_eq!(get(&before, "rookery_c2s_sessions{transport=\"tcp\"}"), 0.0);
    assert!(get(&before, "rookery_process_resident_memory_bytes") > 1e6);
    assert!(get(&before, "rookery_storage_size_bytes") > 0.0);
    assert_eq!(
        get(
            &before,
            "rookery_s2s_connections{direction=\"in\",state=\"established\"}"
        ),
        0.0
    );

    // A login over STARTTLS, one over direct TLS, one refused.
    let mut alice = Client::login(&server, "alice", "secret", Some("a")).await;
    let mut tls = Client::connect_tls(server.c2s_tls()).await;
    tls.login_scram("alice", "secret").await;
    tls.bind(Some("b")).await.expect("bind");
    let mut wrong = Client::connect_starttls(server.c2s()).await;
    assert!(wrong.auth_plain("alice", "not the password").await.is_err());
    // A message to bob, who is offline: stored offline and archived.
    alice.presence().await;
    alice
        .send("<message to='bob@localhost' type='chat' id='m1'><body>hi</body></message>")
        .await;
    alice.ping("localhost").await; // the message was handled before the answer

    let (_, after) = scrape(addr).await;
    let delta = |key: &str| get(&after, key) - get(&before, key);
    assert_eq!(get(&after, "rookery_c2s_sessions{transport=\"tcp\"}"), 1.0);
    assert_eq!(get(&after, "rookery_c2s_sessions{transport=\"tls\"}"), 1.0);
    assert_eq!(
        delta("rookery_auth_successes_total{mechanism=\"SCRAM-SHA-256\"}"),
        2.0
    );
    assert_eq!(
        delta("rookery_auth_failures_total{mechanism=\"PLAIN\"}"),
        1.0
    );
    assert_eq!(delta("rookery_tls_handshakes_total{listener=\"c2s\"}"), 3.0);
    assert!(delta("rookery_stanzas_routed_total{kind=\"message\"}") >= 1.0);
    assert!(delta("rookery_stanzas_routed_total{kind=\"iq\"}") >= 1.0);
    assert!(delta("rookery_stanzas_routed_total{kind=\"presence\"}") >= 1.0);
    assert_eq!(delta("rookery_offline_messages_stored_total"), 1.0);

    // The archive writes in batches (within a second): wait for it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, now) = scrape(addr).await;
        if get(&now, "rookery_archive_messages_total") >= 1.0 {
            assert!(get(&now, "rookery_archive_write_seconds_count") >= 1.0);
            assert_eq!(get(&now, "rookery_archive_queue_messages"), 0.0);
            break;
        }
        assert!(Instant::now() < deadline, "the archive write never showed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Sessions that end leave the gauge.
    alice.close().await;
    tls.close().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, now) = scrape(addr).await;
        if get(&now, "rookery_c2s_sessions{transport=\"tcp\"}") == 0.0
            && get(&now, "rookery_c2s_sessions{transport=\"tls\"}") == 0.0
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sessions still counted after closing"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addresses_outside_the_allow_list_get_403() {
    let (_server, addr) = server();
    // 127.0.0.2 is this machine too (all of 127/8 is loopback), but not
    // the 127.0.0.1 the allow list names.
    let a = http_from([127, 0, 0, 2].into(), addr, "GET", "/metrics", &[], b"").await;
    assert_eq!(a.status, 403, "{}", String::from_utf8_lossy(&a.body));
    assert!(!String::from_utf8_lossy(&a.body).contains("rookery_"));
    let a = http(addr, "POST", "/metrics", &[], b"").await;
    assert_eq!(a.status, 405);
    let a = http(addr, "GET", "/metrics", &[], b"").await;
    assert_eq!(a.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_md_lists_exactly_the_served_families() {
    let (_server, addr) = server();
    let (text, _) = scrape(addr).await;
    let mut served: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let (name, kind) = l.split_once(' ').expect("TYPE line");
            if kind == "counter" {
                format!("{name}_total")
            } else {
                name.to_string()
            }
        })
        .collect();
    served.sort();
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/admin.md"))
        .expect("docs/admin.md");
    let mut documented: Vec<String> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("| `rookery_"))
        .map(|l| format!("rookery_{}", l.split('`').next().unwrap_or("")))
        .collect();
    documented.sort();
    assert_eq!(
        documented, served,
        "docs/admin.md's metric table and /metrics disagree"
    );
}

/// The web transports have their own series: a BOSH and a WebSocket
/// session on an HTTPS listener that also serves `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_sessions_are_counted_by_transport() {
    let server = Server::start_with(Config {
        extra_listeners: vec![
            "port: 0\nip: 127.0.0.1\nmodule: ejabberd_http\ntls: true\nrequest_handlers:\n  /bosh: mod_bosh\n  /ws: ejabberd_http_ws\n  /metrics: mod_prometheus"
                .to_string(),
        ],
        ..Config::default()
    });
    let addr = server
        .listeners
        .iter()
        .find(|l| l.module == "http")
        .expect("http listener")
        .addr;
    server.register("alice", "localhost", "secret");
    let _bosh = crate::c2s_bosh::Bosh::login(addr, "alice", "secret", "bosh").await;
    let mut ws = crate::c2s_websocket::Ws::connect(addr).await;
    ws.login_sasl("alice", "secret").await;
    ws.bind("ws").await;
    let a = common::http::https(addr, "GET", "/metrics", &[], b"").await;
    assert_eq!(a.status, 200);
    let text = String::from_utf8(a.body).expect("UTF-8");
    for line in [
        "rookery_c2s_sessions{transport=\"bosh\"} 1\n",
        "rookery_c2s_sessions{transport=\"websocket\"} 1\n",
        "rookery_c2s_sessions{transport=\"tcp\"} 0\n",
        "rookery_auth_successes_total{mechanism=\"SCRAM-SHA-256\"} 2\n",
    ] {
        assert!(text.contains(line), "{line} not in\n{text}");
    }
    assert!(
        text.lines().any(
            |l| l.starts_with("rookery_tls_handshakes_total{listener=\"http\"} ")
                && !l.ends_with(" 0")
        ),
        "{text}"
    );
}
