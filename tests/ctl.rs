//! Integration tests of `rookery ctl` against the real binary: account
//! management with the server running and stopped, exit codes, connected
//! users, status and stop.

use crate::common;

use std::time::Duration;

use common::*;

/// Whether `user` can authenticate with `password` (SCRAM-SHA-256).
async fn can_login(server: &Server, user: &str, password: &str) -> bool {
    let mut c = Client::connect_starttls(server.c2s()).await;
    c.auth_scram("SCRAM-SHA-256", user, password).await.is_ok()
}

/// Whether `registered_users localhost` lists `user` (bare name or JID).
fn is_listed(server: &Server, user: &str) -> bool {
    let out = server.ctl_ok(&["registered_users", "localhost"]);
    let jid = format!("{user}@localhost");
    out.lines().map(str::trim).any(|l| l == user || l == jid)
}

/// SIGTERM and assert a clean exit (status 0).
fn stop_clean(server: &mut Server) {
    let st = server.stop();
    assert!(st.success(), "server exited with {st:?} after SIGTERM");
}

fn code(server: &Server, args: &[&str]) -> i32 {
    server.ctl(args).0
}

#[tokio::test]
async fn account_lifecycle_with_server_running() {
    let server = Server::start();
    assert!(!is_listed(&server, "alice"));
    server.register("alice", "localhost", "secret");
    assert!(is_listed(&server, "alice"));
    assert_eq!(
        code(&server, &["register", "alice", "localhost", "other"]),
        1,
        "registering twice must fail with exit 1"
    );
    assert!(can_login(&server, "alice", "secret").await);

    server.ctl_ok(&["change_password", "alice", "localhost", "n3w-pass"]);
    assert!(
        can_login(&server, "alice", "n3w-pass").await,
        "new password refused"
    );
    assert!(
        !can_login(&server, "alice", "secret").await,
        "old password still works"
    );

    server.ctl_ok(&["unregister", "alice", "localhost"]);
    assert!(!is_listed(&server, "alice"));
    assert!(
        !can_login(&server, "alice", "n3w-pass").await,
        "unregistered user logs in"
    );
}

#[tokio::test]
async fn account_lifecycle_with_server_stopped() {
    let mut server = Server::start();
    stop_clean(&mut server);

    server.register("alice", "localhost", "secret");
    assert_eq!(code(&server, &["register", "alice", "localhost", "x"]), 1);
    assert_eq!(code(&server, &["register", "carol", "example.org", "x"]), 1);
    assert!(is_listed(&server, "alice"));
    server.ctl_ok(&["change_password", "alice", "localhost", "offline-pw"]);

    server.restart();
    assert!(is_listed(&server, "alice"), "offline registration lost");
    assert!(can_login(&server, "alice", "offline-pw").await);
    assert!(!can_login(&server, "alice", "secret").await);
    stop_clean(&mut server);

    server.ctl_ok(&["unregister", "alice", "localhost"]);
    assert!(!is_listed(&server, "alice"));
    server.restart();
    assert!(!is_listed(&server, "alice"));
    assert!(!can_login(&server, "alice", "offline-pw").await);
}

#[test]
fn register_on_unknown_host_fails() {
    let server = Server::start();
    let (c, out, err) = server.ctl(&["register", "alice", "example.org", "secret"]);
    assert_eq!(c, 1, "stdout={out:?} stderr={err:?}");
    assert_eq!(code(&server, &["registered_users", "example.org"]), 1);
}

#[tokio::test]
async fn connected_users_lists_full_jid() {
    let server = server_with_users();
    let out = server.ctl_ok(&["connected_users"]);
    assert!(!out.contains("alice@localhost"), "{out}");
    let mut c = Client::login(&server, "alice", "secret", Some("desk")).await;
    let out = server.ctl_ok(&["connected_users"]);
    assert!(
        out.lines().any(|l| l.trim() == "alice@localhost/desk"),
        "connected_users: {out:?}"
    );
    c.close().await;
    let mut gone = false;
    for _ in 0..20 {
        if !server
            .ctl_ok(&["connected_users"])
            .contains("alice@localhost/desk")
        {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "closed session still listed");
}

#[test]
fn status_reflects_server_state() {
    let mut server = Server::start();
    let (c, out, err) = server.ctl(&["status"]);
    assert_eq!(c, 0, "status while running: stdout={out:?} stderr={err:?}");
    stop_clean(&mut server);
    assert_eq!(code(&server, &["status"]), 3);
    assert_eq!(code(&server, &["connected_users"]), 3);
    assert_eq!(code(&server, &["stop"]), 3);
}

#[test]
fn ctl_stop_stops_the_server() {
    let mut server = Server::start();
    server.ctl_ok(&["stop"]);
    let status = server
        .wait_exit(Duration::from_secs(15))
        .expect("server still running after `ctl stop`");
    assert!(status.success(), "{status:?}");
}

#[test]
fn usage_errors_exit_2() {
    let server = Server::start();
    assert_eq!(code(&server, &["frobnicate"]), 2);
    assert_eq!(code(&server, &["register", "alice"]), 2);
    assert_eq!(code(&server, &["change_password", "alice", "localhost"]), 2);
    let (c, out, err) = server.ctl(&["help"]);
    assert_eq!(c, 0, "help: stderr={err:?}");
    let text = format!("{out}{err}");
    assert!(
        text.contains("register") && text.contains("connected_users"),
        "help does not list commands: {text}"
    );
}
