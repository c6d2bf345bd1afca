//! Interop with go-sendxmpp (Debian's package, installed by `.ci/run`), a
//! client on the go-xmpp library, which writes a newline after
//! `<starttls/>`: it logs in over STARTTLS (certificate not verified: the
//! test server's is self-signed) and sends a message to a user of our test
//! client; in listen mode it receives one. SKIPPED when the binary is
//! missing. Also, on raw sockets: whitespace after `<starttls/>` is dropped
//! and TLS proceeds; anything else after it is refused, the connection
//! closed, and the refusal logged at info with the peer's address; a failed
//! TLS handshake and a stream error sent are logged the same way.

use crate::common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::client::esc;
use common::interop::{run_bounded, which};
use common::*;

const GO_SENDXMPP: &str = "go-sendxmpp";
const STARTTLS: &str = "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>";

fn installed() -> bool {
    if which(GO_SENDXMPP).is_some() {
        return true;
    }
    eprintln!("SKIPPED: go-sendxmpp not installed");
    false
}

/// go-sendxmpp against `server`'s STARTTLS listener as `user`, with a home
/// of its own (no user config file is read).
fn go_sendxmpp(server: &Server, home: &Path, user: &str, password: &str) -> Command {
    let mut cmd = Command::new(GO_SENDXMPP);
    cmd.env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .arg("-u")
        .arg(format!("{user}@localhost"))
        .arg("-p")
        .arg(password)
        .arg("-j")
        .arg(server.c2s().to_string())
        .arg("-n")
        .arg("--timeout")
        .arg("10");
    cmd
}

/// The go-sendxmpp child of a listen test, killed (by its PID) when dropped.
struct Listener(Child);

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits (bounded) until `rookery ctl connected_users` lists a session of
/// `bare`; returns its full JID.
fn wait_connected(server: &Server, bare: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = server.ctl_ok(&["connected_users"]);
        if let Some(full) = out
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with(&format!("{bare}/")))
        {
            return full.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "{bare} never connected; connected: {out}\n{}",
            server.stderr_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test]
async fn go_sendxmpp_sends_a_message_over_starttls() {
    if !installed() {
        return;
    }
    let server = server_with_users();
    let mut bob = Client::login(&server, "bob", "hunter2", Some("desk")).await;
    bob.send("<presence/>").await;
    bob.recv_where("own presence", |e| e.is("presence", NS_CLIENT))
        .await;
    let home = tempfile::tempdir().unwrap();
    let body = unique("hello from go-sendxmpp ");
    let msg_file = home.path().join("message.txt");
    std::fs::write(&msg_file, &body).unwrap();
    let mut cmd = go_sendxmpp(&server, home.path(), "alice", "secret");
    cmd.arg("-m").arg(&msg_file).arg("bob@localhost/desk");
    let ran = tokio::task::spawn_blocking(move || {
        run_bounded(cmd, Duration::from_secs(60), "go-sendxmpp")
    })
    .await
    .unwrap();
    assert_eq!(
        ran.code,
        Some(0),
        "go-sendxmpp failed\nstdout:\n{}\nstderr:\n{}\n{}",
        ran.stdout,
        ran.stderr,
        server.stderr_tail()
    );
    let m = bob.recv_message().await;
    assert_eq!(
        m.child_text("body").map(str::trim),
        Some(body.as_str()),
        "{m}"
    );
    assert!(
        m.attr("from")
            .is_some_and(|f| f.starts_with("alice@localhost/")),
        "{m}"
    );
    // It came over TLS: the server logged the session as bound from a
    // STARTTLS connection, and no stream error was sent to it.
    let log = server.stderr_tail();
    assert!(!log.contains("sending stream error"), "{log}");
    assert!(!log.contains("after <starttls/>"), "{log}");
}

#[tokio::test]
async fn go_sendxmpp_listens_and_receives_a_message() {
    if !installed() {
        return;
    }
    let server = server_with_users();
    let home = tempfile::tempdir().unwrap();
    let mut cmd = go_sendxmpp(&server, home.path(), "bob", "hunter2");
    cmd.arg("-l")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = Listener(cmd.spawn().expect("start go-sendxmpp -l"));
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Blocking is fine here: nothing else runs on this test's runtime yet.
    let full = wait_connected(&server, "bob@localhost");
    let mut alice = Client::login(&server, "alice", "secret", Some("pc")).await;
    let body = unique("to go-sendxmpp ");
    alice
        .send(&format!(
            "<message type='chat' to='{}' id='m1'><body>{}</body></message>",
            esc(&full),
            esc(&body)
        ))
        .await;
    let got = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut lines = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(l) => {
                    let found = l.contains(&body);
                    lines.push(l);
                    if found {
                        return Ok(lines);
                    }
                }
                Err(_) => break,
            }
        }
        Err(lines)
    })
    .await
    .unwrap();
    match got {
        Ok(lines) => assert!(
            lines.last().unwrap().contains("alice@localhost"),
            "the sender is not shown: {lines:?}"
        ),
        Err(lines) => panic!(
            "go-sendxmpp -l did not print the message; its stdout: {lines:?}\n{}",
            server.stderr_tail()
        ),
    }
}

/// A plaintext stream, opened, before STARTTLS.
async fn plain_stream(server: &Server) -> Client {
    let mut c = Client::connect(server.c2s()).await;
    let f = c.open_stream().await;
    assert!(f.child_ns("starttls", NS_TLS).is_some(), "{f}");
    c
}

#[tokio::test]
async fn whitespace_after_starttls_is_dropped() {
    let server = server_with_users();
    for tail in ["\n", "\r\n", " \t \n"] {
        let mut c = plain_stream(&server).await;
        c.send_bytes(format!("{STARTTLS}{tail}").as_bytes()).await;
        let p = c.recv().await;
        assert!(p.is("proceed", NS_TLS), "{p}");
        c.tls_handshake().await;
        let f = c.open_stream().await;
        assert!(
            f.child_ns("mechanisms", NS_SASL).is_some(),
            "no SASL after TLS ({tail:?}): {f}"
        );
        c.auth_plain("alice", "secret").await.unwrap();
        c.open_stream().await;
        c.bind(None).await.unwrap();
    }
    assert!(
        !server.stderr_tail().contains("after <starttls/>"),
        "whitespace was refused"
    );
}

#[tokio::test]
async fn data_pipelined_after_starttls_is_refused_and_logged() {
    let server = server_with_users();
    let mut c = plain_stream(&server).await;
    c.send_bytes(
        format!("{STARTTLS}\n<iq type='get' id='inj'><ping xmlns='urn:xmpp:ping'/></iq>")
            .as_bytes(),
    )
    .await;
    // <proceed/> may still arrive (it was written before the check); then
    // the connection closes, no TLS and no answer to the injected iq.
    match c.recv_event().await {
        StreamEvent::Stanza(p) => {
            assert!(p.is("proceed", NS_TLS), "{p}");
            c.expect_closed().await;
        }
        StreamEvent::Closed(_) => {}
        other => panic!("expected <proceed/> or the end, got {other:?}"),
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = server.stderr_tail();
        if log.lines().any(|l| {
            l.contains("after <starttls/>")
                && l.contains("refused")
                && l.contains("127.0.0.1:")
                && l.contains("INFO")
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the refusal is not logged at info with the peer: {log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (bounded) for a server log line with every one of `needles`.
async fn wait_log(server: &Server, needles: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = server.stderr_tail();
        if log.lines().any(|l| needles.iter().all(|n| l.contains(n))) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no log line with {needles:?}: {log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn failed_tls_handshakes_and_stream_errors_are_logged_with_the_peer() {
    let server = server_with_users();
    // A TLS handshake that fails: garbage instead of a ClientHello.
    let mut c = plain_stream(&server).await;
    c.send(STARTTLS).await;
    let p = c.recv().await;
    assert!(p.is("proceed", NS_TLS), "{p}");
    c.send_bytes(b"this is not TLS\r\n\r\n").await;
    wait_log(
        &server,
        &["INFO", "c2s: TLS handshake failed", "127.0.0.1:"],
    )
    .await;

    // A stream error before authentication (with its reason).
    let mut c = plain_stream(&server).await;
    c.send("<message><body>x</body></presence>").await;
    let cond = c.expect_stream_error().await;
    assert_eq!(cond, "not-well-formed");
    wait_log(
        &server,
        &[
            "INFO",
            "c2s: sending stream error not-well-formed",
            "127.0.0.1:",
        ],
    )
    .await;

    // A stream error on a bound session, with the session's JID.
    let mut c = Client::login(&server, "alice", "secret", Some("logged")).await;
    c.send("<message><body>x</body></presence>").await;
    let cond = c.expect_stream_error().await;
    assert_eq!(cond, "not-well-formed");
    wait_log(
        &server,
        &[
            "INFO",
            "alice@localhost/logged",
            "sending stream error not-well-formed",
            "127.0.0.1:",
        ],
    )
    .await;
}
