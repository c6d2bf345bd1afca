//! Smoke test of the load generator against the real Rookery binary.
//!
//! It builds nothing itself except, when no `rookery` binary is found next to
//! `loadgen` or under `target/{debug,release}`, one bounded
//! `cargo build -p rookery`. It starts the server on a free loopback port
//! with a temporary config, provisions 20 accounts with `rookery ctl`, runs
//! `chat --pairs 10 --duration 2` and `offline --messages 50`, and checks the
//! JSON reports: nothing lost, nothing out of order, nothing duplicated.
//! `idle --modern` runs against a server with stream management, carbons,
//! caps and CSI (every session held) and against one without them (every
//! login refused).
//! Over WebSocket (`--transport ws`, the server's HTTPS listener at `/ws`):
//! chat between 2 pairs (4 clients), 4 idle sessions and a room of 5, with
//! nothing lost; a wrong path fails the login with kind `ws`. The `muc`
//! scenario (2 rooms of 5 over TCP) delivers every groupchat message to
//! every occupant, in order; joins to a service that does not exist are
//! reported as join failures. The `pubsub` scenario (one node, 20
//! subscribers, 20 items/s) delivers every item to every subscriber once
//! and in order, and a missing service fails the node's creation.
//! The `login` scenario in its three modes (classic SASL, `--sasl2`,
//! `--fast`) logs every client in, each mode with fewer round trips; `--fast`
//! against a server without mod_auth_fast fails saying so.
//! With `--servers` over two c2s listeners of one server, `chat` places the
//! pairs as `--pairing` says (`pairs_cross` 4, 0 and 2 of 4) and loses
//! nothing; with the second address closed, exactly the accounts placed
//! there fail to log in. `--watch NAME=PID` reports that process's CPU.
//! Every child process is bounded in time and stopped by its own PID.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const LOADGEN: &str = env!("CARGO_BIN_EXE_loadgen");

/// Waits (bounded) for `child`; kills it (by its handle) on timeout.
fn wait_bounded(mut child: Child, limit: Duration, what: &str) -> (i32, String, String) {
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let t_out = thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {limit:?}");
        }
        thread::sleep(Duration::from_millis(20));
    };
    (
        status.code().unwrap_or(-1),
        t_out.join().unwrap_or_default(),
        t_err.join().unwrap_or_default(),
    )
}

/// The `rookery` binary: next to `loadgen`, else under the workspace's
/// `target/`, else built once with `cargo build -p rookery` (bounded).
fn rookery_binary() -> PathBuf {
    let exe = Path::new(LOADGEN);
    let profile_dir = exe.parent().expect("loadgen has a directory");
    let beside = profile_dir.join("rookery");
    if beside.is_file() {
        return beside;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let profile = if release { "release" } else { "debug" };
    let candidate = root.join("target").join(profile).join("rookery");
    if candidate.is_file() {
        return candidate;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root).args(["build", "-p", "rookery"]);
    if release {
        cmd.arg("--release");
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run cargo build -p rookery");
    let (code, _, err) = wait_bounded(child, Duration::from_secs(900), "cargo build -p rookery");
    assert_eq!(code, 0, "cargo build -p rookery failed:\n{err}");
    for c in [&beside, &candidate] {
        if c.is_file() {
            return c.clone();
        }
    }
    panic!(
        "no rookery binary at {} after building",
        candidate.display()
    );
}

/// A running server, stopped (SIGTERM, then SIGKILL) by its PID on drop.
struct Server {
    child: Option<Child>,
    addr: String,
    /// Every c2s listener, in the order announced.
    addrs: Vec<String>,
    /// The HTTPS listener (WebSocket at /ws), when configured.
    http_addr: String,
    config: PathBuf,
    _dir: tempfile::TempDir,
    stderr_path: PathBuf,
}

impl Server {
    fn start(bin: &Path) -> Server {
        Server::start_with(bin, "  mod_ping: {}\n")
    }

    /// Starts the server with `modules` (YAML lines under `modules:`).
    fn start_with(bin: &Path, modules: &str) -> Server {
        Server::start_full(bin, "", modules)
    }

    /// Starts the server with an HTTPS listener serving WebSocket at /ws
    /// and `modules`.
    fn start_ws(bin: &Path, modules: &str) -> Server {
        let http = "  - port: 0\n    ip: 127.0.0.1\n    module: ejabberd_http\n    tls: true\n    \
                    request_handlers:\n      /ws: ejabberd_http_ws\n";
        let s = Server::start_full(bin, http, modules);
        assert!(!s.http_addr.is_empty(), "no http listener announced");
        s
    }

    /// Starts the server with extra `listen:` entries and `modules`.
    fn start_full(bin: &Path, listen_extra: &str, modules: &str) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("loadgen-smoke-")
            .tempdir()
            .expect("temp dir");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).expect("data dir");
        let config = dir.path().join("rookery.yml");
        let yaml = format!(
            "hosts: [localhost]\nloglevel: warning\ndata_dir: {data:?}\n\
             ctl_socket: {ctl:?}\n\
             listen:\n  - port: 0\n    ip: 127.0.0.1\n    module: ejabberd_c2s\n    starttls_required: true\n\
             {listen_extra}\
             acl:\n  local:\n    user_regexp: \"\"\n\
             access_rules:\n  local:\n    allow: local\n\
             shaper_rules:\n  max_user_sessions: infinity\n  max_user_offline_messages: infinity\n\
             modules:\n{modules}",
            data = data.display().to_string(),
            ctl = data.join("rookery.ctl").display().to_string(),
        );
        std::fs::write(&config, yaml).expect("write config");
        let stderr_path = dir.path().join("server.stderr");
        let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
        let mut child = Command::new(bin)
            .arg("serve")
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawn rookery");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let mut server = Server {
            child: Some(child),
            addr: String::new(),
            addrs: Vec::new(),
            http_addr: String::new(),
            config,
            _dir: dir,
            stderr_path,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("server not ready\n{}", server.stderr()));
            if let Some(rest) = line.strip_prefix("rookery: listening c2s ") {
                server.addr = rest.split_whitespace().next().unwrap_or("").to_string();
                server.addrs.push(server.addr.clone());
            }
            if let Some(rest) = line.strip_prefix("rookery: listening http ") {
                server.http_addr = rest.split_whitespace().next().unwrap_or("").to_string();
            }
            if line.trim() == "rookery: ready" {
                break;
            }
        }
        assert!(!server.addr.is_empty(), "no c2s listener announced");
        server
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on the PID of our own, not yet reaped, child.
            unsafe {
                libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `loadgen ARGS` (bounded) and returns its JSON report; it must exit 0.
fn loadgen(args: &[&str], server: &Server) -> serde_json::Value {
    let (code, v, err) = loadgen_exit(args, server);
    assert_eq!(
        code,
        0,
        "loadgen {args:?} exited {code}: {v}\nstderr: {err}\nserver: {}",
        server.stderr()
    );
    v
}

/// Runs `loadgen ARGS` (bounded): its exit code, JSON report and stderr.
fn loadgen_exit(args: &[&str], server: &Server) -> (i32, serde_json::Value, String) {
    let child = Command::new(LOADGEN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn loadgen");
    let (code, out, err) = wait_bounded(child, Duration::from_secs(90), "loadgen");
    let line = out
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| {
            panic!(
                "loadgen {args:?} printed no JSON (exit {code})\nstderr: {err}\nserver: {}",
                server.stderr()
            )
        });
    let v: serde_json::Value = serde_json::from_str(line).expect("valid JSON");
    (code, v, err)
}

/// Creates accounts `bench1..benchN` (loadgen's default names) with the
/// server's own `rookery ctl`.
fn provision(bin: &Path, server: &Server, n: &str) {
    let ctl = format!("{} ctl -c {}", bin.display(), server.config.display());
    let p = loadgen(
        &["provision", "--users", n, "--ctl-cmd", &ctl, "--jobs", "4"],
        server,
    );
    assert_eq!(p["failed"], 0, "{p}");
}

#[test]
fn idle_modern_clients_against_rookery() {
    let bin = rookery_binary();
    // What a modern client uses: stream management, carbons, caps, CSI.
    let server = Server::start_with(
        &bin,
        "  mod_ping: {}\n  mod_disco: {}\n  mod_caps: {}\n  mod_carbons: {}\n  \
         mod_stream_mgmt: {}\n  mod_client_state: {}\n",
    );
    provision(&bin, &server, "8");
    let pid = server.pid().to_string();
    let args = [
        "idle",
        "--sessions",
        "8",
        "--duration",
        "1",
        "--modern",
        "--server",
        &server.addr,
        "--server-pid",
        &pid,
    ];
    let idle = loadgen(&args, &server);
    assert_eq!(idle["client"], "modern", "{idle}");
    assert_eq!(idle["ok"], 8, "{idle}");
    assert_eq!(idle["failures"], 0, "{idle}");
    assert_eq!(idle["dropped_while_held"], 0, "{idle}");
    assert!(idle["kib_per_session"].is_number(), "{idle}");

    // Without stream management the modern login is refused, and said so.
    let bare = Server::start(&bin);
    provision(&bin, &bare, "3");
    let args = [
        "idle",
        "--sessions",
        "3",
        "--duration",
        "1",
        "--modern",
        "--server",
        &bare.addr,
    ];
    let (code, v, err) = loadgen_exit(&args, &bare);
    assert_eq!(code, 2, "{v}\n{err}");
    assert_eq!(v["ok"], 0, "{v}");
    assert_eq!(v["failures"], 3, "{v}");
}

#[test]
fn chat_and_offline_against_rookery() {
    let bin = rookery_binary();
    let server = Server::start(&bin);
    let pid = server.pid().to_string();
    let ctl = format!("{} ctl -c {}", bin.display(), server.config.display());
    let p = loadgen(
        &[
            "provision",
            "--users",
            "20",
            "--ctl-cmd",
            &ctl,
            "--jobs",
            "4",
        ],
        &server,
    );
    assert_eq!(p["failed"], 0, "{p}");
    assert_eq!(
        p["created"].as_u64().unwrap() + p["existed"].as_u64().unwrap(),
        20
    );

    let common = ["--server", &server.addr, "--server-pid", &pid];
    let mut args = vec!["chat", "--pairs", "10", "--duration", "2", "--drain", "10"];
    args.extend_from_slice(&common);
    let chat = loadgen(&args, &server);
    assert_eq!(chat["login_failures"], 0, "{chat}");
    assert_eq!(chat["pairs_active"], 10, "{chat}");
    assert_eq!(chat["lost"], 0, "{chat}");
    assert_eq!(chat["out_of_order"], 0, "{chat}");
    assert_eq!(chat["duplicates"], 0, "{chat}");
    assert!(chat["received"].as_u64().unwrap() > 0, "{chat}");
    assert!(chat["server_cpu_s"].is_number(), "{chat}");

    let mut args = vec!["offline", "--messages", "50", "--senders", "5"];
    args.extend_from_slice(&common);
    let off = loadgen(&args, &server);
    assert_eq!(off["received"], 50, "{off}");
    assert_eq!(off["lost"], 0, "{off}");
    assert_eq!(off["out_of_order"], 0, "{off}");
    assert_eq!(off["duplicates"], 0, "{off}");
    assert_eq!(off["exactly_once"], true, "{off}");
}

#[test]
fn chat_over_several_servers_places_pairs_as_asked() {
    let bin = rookery_binary();
    // Two c2s listeners of one server stand for two cluster nodes.
    let second =
        "  - port: 0\n    ip: 127.0.0.1\n    module: ejabberd_c2s\n    starttls_required: true\n";
    let server = Server::start_full(&bin, second, "  mod_ping: {}\n");
    assert_eq!(server.addrs.len(), 2, "{:?}", server.addrs);
    provision(&bin, &server, "8");
    let servers = server.addrs.join(",");
    let watch = format!("srv={}", server.pid());
    for (pairing, cross) in [("cross", 4), ("same", 0), ("any", 2)] {
        let args = [
            "chat",
            "--pairs",
            "4",
            "--duration",
            "1",
            "--drain",
            "10",
            "--servers",
            &servers,
            "--pairing",
            pairing,
            "--watch",
            &watch,
        ];
        let chat = loadgen(&args, &server);
        assert_eq!(chat["servers"], 2, "{chat}");
        assert_eq!(chat["pairing"], pairing, "{chat}");
        assert_eq!(chat["pairs_active"], 4, "{chat}");
        assert_eq!(chat["pairs_cross"], cross, "{pairing}: {chat}");
        assert_eq!(chat["lost"], 0, "{chat}");
        assert_eq!(chat["out_of_order"], 0, "{chat}");
        assert_eq!(chat["duplicates"], 0, "{chat}");
        assert!(chat["received"].as_u64().unwrap() > 0, "{chat}");
        assert!(chat["watched_cpu_s"]["srv"].is_number(), "{chat}");
    }

    // The accounts really go where the placement says: with the second
    // address closed, `same` loses pairs 1 and 3 (4 logins), `cross` every
    // pair.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .to_string();
    let servers = format!("{},{closed}", server.addr);
    let args = [
        "chat",
        "--pairs",
        "4",
        "--duration",
        "1",
        "--servers",
        &servers,
        "--pairing",
        "same",
        "--login-timeout",
        "5",
    ];
    let (code, v, err) = loadgen_exit(&args, &server);
    assert_eq!(code, 2, "{v}\n{err}");
    assert_eq!(v["login_failures"], 4, "{v}");
    assert_eq!(v["pairs_active"], 2, "{v}");
    assert_eq!(v["lost"], 0, "{v}");
    let args = [
        "chat",
        "--pairs",
        "4",
        "--duration",
        "1",
        "--servers",
        &servers,
        "--pairing",
        "cross",
        "--login-timeout",
        "5",
    ];
    let child = Command::new(LOADGEN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn loadgen");
    let (code, _, err) = wait_bounded(child, Duration::from_secs(90), "loadgen");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no pair could log in"), "{err}");
}

/// Asserts a `muc` report: everyone joined, every message delivered to
/// every occupant once and in order.
fn assert_muc_delivered(v: &serde_json::Value, occupants: u64) {
    assert_eq!(v["scenario"], "muc", "{v}");
    assert_eq!(v["login_failures"], 0, "{v}");
    assert_eq!(v["join_failures"], 0, "{v}");
    assert_eq!(v["joined"], occupants, "{v}");
    assert_eq!(v["occupants_broken"], 0, "{v}");
    let sent = v["sent"].as_u64().unwrap();
    assert!(sent > 0, "{v}");
    assert_eq!(
        v["expected"].as_u64().unwrap(),
        sent * v["occupants"].as_u64().unwrap(),
        "{v}"
    );
    assert_eq!(v["delivered"], v["expected"], "{v}");
    assert_eq!(v["lost"], 0, "{v}");
    assert_eq!(v["lost_senders"], 0, "{v}");
    assert_eq!(v["out_of_order"], 0, "{v}");
    assert_eq!(v["duplicates"], 0, "{v}");
    assert_eq!(v["bounced"], 0, "{v}");
    assert!(v["kib_per_occupant"].is_number(), "{v}");
    assert!(v["delivered_per_cpu_s"].is_number(), "{v}");
}

#[test]
fn websocket_transport_against_rookery() {
    let bin = rookery_binary();
    let server = Server::start_ws(
        &bin,
        "  mod_ping: {}\n  mod_disco: {}\n  mod_muc:\n    access_create: local\n",
    );
    provision(&bin, &server, "8");
    let pid = server.pid().to_string();
    let ws = [
        "--transport",
        "ws",
        "--server",
        &server.http_addr,
        "--server-pid",
        &pid,
    ];

    // 4 clients: 2 pairs chatting over WebSocket.
    let mut args = vec!["chat", "--pairs", "2", "--duration", "2", "--drain", "10"];
    args.extend_from_slice(&ws);
    let chat = loadgen(&args, &server);
    assert_eq!(chat["transport"], "ws", "{chat}");
    assert_eq!(chat["login_failures"], 0, "{chat}");
    assert_eq!(chat["pairs_active"], 2, "{chat}");
    assert!(chat["received"].as_u64().unwrap() > 0, "{chat}");
    assert_eq!(chat["received"], chat["sent"], "{chat}");
    assert_eq!(chat["lost"], 0, "{chat}");
    assert_eq!(chat["out_of_order"], 0, "{chat}");
    assert_eq!(chat["duplicates"], 0, "{chat}");

    let mut args = vec!["idle", "--sessions", "4", "--duration", "1"];
    args.extend_from_slice(&ws);
    let idle = loadgen(&args, &server);
    assert_eq!(idle["transport"], "ws", "{idle}");
    assert_eq!(idle["ok"], 4, "{idle}");
    assert_eq!(idle["dropped_while_held"], 0, "{idle}");
    assert!(idle["kib_per_session"].is_number(), "{idle}");

    // A room of 5 over WebSocket.
    let mut args = vec![
        "muc",
        "--rooms",
        "1",
        "--occupants",
        "5",
        "--rate",
        "5",
        "--duration",
        "2",
        "--hold",
        "0.5",
    ];
    args.extend_from_slice(&ws);
    let muc = loadgen(&args, &server);
    assert_eq!(muc["transport"], "ws", "{muc}");
    assert_muc_delivered(&muc, 5);

    // A path that is not the WebSocket endpoint: the login fails, said so.
    let args = [
        "login",
        "--logins",
        "1",
        "--users",
        "1",
        "--transport",
        "ws",
        "--ws-path",
        "/nope",
        "--server",
        &server.http_addr,
    ];
    let (code, v, err) = loadgen_exit(&args, &server);
    assert_eq!(code, 2, "{v}\n{err}");
    assert_eq!(v["failures"], 1, "{v}");
    assert_eq!(v["failures_by_kind"]["ws"], 1, "{v}");
}

#[test]
fn muc_fan_out_against_rookery() {
    let bin = rookery_binary();
    let server = Server::start_with(
        &bin,
        "  mod_ping: {}\n  mod_disco: {}\n  mod_muc:\n    access_create: local\n",
    );
    provision(&bin, &server, "10");
    let pid = server.pid().to_string();
    let args = [
        "muc",
        "--rooms",
        "2",
        "--occupants",
        "5",
        "--rate",
        "5",
        "--duration",
        "2",
        "--hold",
        "0.5",
        "--server",
        &server.addr,
        "--server-pid",
        &pid,
    ];
    let muc = loadgen(&args, &server);
    assert_eq!(muc["transport"], "tcp", "{muc}");
    assert_eq!(muc["rooms"], 2, "{muc}");
    assert_muc_delivered(&muc, 10);
    assert!(muc["server_cpu_s"].is_number(), "{muc}");

    // A MUC service that does not exist: every join fails, and is reported.
    let args = [
        "muc",
        "--rooms",
        "1",
        "--occupants",
        "3",
        "--duration",
        "1",
        "--hold",
        "0",
        "--join-timeout",
        "5",
        "--service",
        "nosuch.localhost",
        "--server",
        &server.addr,
    ];
    let (code, v, err) = loadgen_exit(&args, &server);
    assert_eq!(code, 2, "{v}\n{err}");
    assert_eq!(v["joined"], 0, "{v}");
    assert_eq!(v["join_failures"], 3, "{v}");
    assert_eq!(v["sent"], 0, "{v}");
}

#[test]
fn pubsub_broadcast_against_rookery() {
    let bin = rookery_binary();
    let server = Server::start_with(
        &bin,
        "  mod_ping: {}\n  mod_disco: {}\n  mod_pubsub:\n    access_createnode: local\n",
    );
    provision(&bin, &server, "21");
    let pid = server.pid().to_string();
    let args = [
        "pubsub",
        "--subscribers",
        "20",
        "--rate",
        "20",
        "--duration",
        "2",
        "--server",
        &server.addr,
        "--server-pid",
        &pid,
    ];
    let v = loadgen(&args, &server);
    assert_eq!(v["scenario"], "pubsub", "{v}");
    assert_eq!(v["service"], "pubsub.localhost", "{v}");
    assert_eq!(v["node_created"], true, "{v}");
    assert_eq!(v["login_failures"], 0, "{v}");
    assert_eq!(v["subscribed"], 20, "{v}");
    assert_eq!(v["subscribe_failures"], 0, "{v}");
    assert_eq!(v["publish_errors"], 0, "{v}");
    assert_eq!(v["subscribers_broken"], 0, "{v}");
    let published = v["published"].as_u64().unwrap();
    assert!(published >= 30, "{v}");
    assert_eq!(v["accepted"], published, "{v}");
    assert_eq!(v["expected"].as_u64().unwrap(), published * 20, "{v}");
    assert_eq!(v["delivered"], v["expected"], "{v}");
    assert_eq!(v["lost"], 0, "{v}");
    assert_eq!(v["out_of_order"], 0, "{v}");
    assert_eq!(v["duplicates"], 0, "{v}");
    assert_eq!(v["unexpected"], 0, "{v}");
    assert_eq!(v["items_incomplete"], 0, "{v}");
    assert!(v["latency_p99_ms"].is_number(), "{v}");
    assert!(v["last_subscriber_p99_ms"].is_number(), "{v}");
    assert!(v["delivered_per_cpu_s"].is_number(), "{v}");
    assert_eq!(v["node_deleted"], true, "{v}");

    // No such service: the node cannot be created, and loadgen says so.
    let args = [
        "pubsub",
        "--subscribers",
        "2",
        "--duration",
        "1",
        "--subscribe-timeout",
        "5",
        "--service",
        "nosuch.localhost",
        "--server",
        &server.addr,
    ];
    let child = Command::new(LOADGEN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn loadgen");
    let (code, _, err) = wait_bounded(child, Duration::from_secs(60), "loadgen pubsub");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("creating node"), "{err}");
}

#[test]
fn login_modes_classic_sasl2_and_fast_against_rookery() {
    let bin = rookery_binary();
    let server = Server::start_with(&bin, "  mod_ping: {}\n  mod_auth_fast: {}\n");
    provision(&bin, &server, "6");
    let pid = server.pid().to_string();
    let mut rts = Vec::new();
    for mode in [None, Some("--sasl2"), Some("--fast")] {
        let mut args = vec![
            "login",
            "--logins",
            "6",
            "--concurrency",
            "3",
            "--server",
            &server.addr,
            "--server-pid",
            &pid,
        ];
        args.extend(mode);
        let v = loadgen(&args, &server);
        let name = mode.map_or("classic", |m| m.trim_start_matches("--"));
        assert_eq!(v["mode"], name, "{v}");
        assert_eq!(v["ok"], 6, "{v}");
        assert_eq!(v["failures"], 0, "{v}");
        assert!(v["logins_per_cpu_s"].is_number(), "{v}");
        eprintln!("smoke {name}: {v}");
        let rt = v["round_trips_per_login"].as_f64().expect("round trips");
        rts.push(rt);
    }
    // Each mode saves round trips: SASL2 + Bind 2 skip the stream restart
    // and the bind iq, FAST the SCRAM challenge.
    assert!(rts[0] > rts[1] && rts[1] > rts[2], "round trips {rts:?}");
    // Without mod_auth_fast, --fast fails with a clear message.
    let plain = Server::start(&bin);
    provision(&bin, &plain, "2");
    let args = ["login", "--logins", "2", "--fast", "--server", &plain.addr];
    let child = Command::new(LOADGEN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn loadgen");
    let (code, _out, err) = wait_bounded(child, Duration::from_secs(60), "loadgen");
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("no FAST <token/>"), "{err}");
}
