//! Integration tests of the administration commands added for issue 5,
//! against the real binary, over the control socket (server running) and
//! directly on the database (server stopped): session listing and kicks,
//! send_message/send_stanza, roster items, delete_old_messages, stats,
//! reload_config, backup/restore, help and exit codes.

use crate::common;

use std::time::Duration;

use common::im::{online_interested, roster_item};
use common::*;

fn code(server: &Server, args: &[&str]) -> (i32, String) {
    let (c, out, err) = server.ctl(args);
    (c, format!("{out}{err}"))
}

async fn can_login(server: &Server, user: &str, password: &str) -> bool {
    let mut c = Client::connect_starttls(server.c2s()).await;
    c.auth_scram("SCRAM-SHA-256", user, password).await.is_ok()
}

#[tokio::test]
async fn session_listing_and_kicks() {
    let server = server_with_users();
    let mut desk = Client::login(&server, "alice", "secret", Some("desk")).await;
    desk.send("<presence><show>away</show><status>lunch</status></presence>")
        .await;
    let _phone = Client::login(&server, "alice", "secret", Some("phone")).await;
    let _bob = Client::login(&server, "bob", "hunter2", Some("b")).await;
    // The presence is processed asynchronously: poll (bounded).
    let mut info = String::new();
    for _ in 0..50 {
        info = server.ctl_ok(&["connected_users_info"]);
        if info.contains("\taway\t") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let line = info
        .lines()
        .find(|l| l.starts_with("alice@localhost/desk\t"))
        .unwrap_or_else(|| panic!("no desk session in {info:?}"));
    let f: Vec<&str> = line.split('\t').collect();
    assert_eq!(f.len(), 10, "{line:?}");
    assert_eq!(f[1], "c2s_tls", "{line:?}");
    assert_eq!(f[2], "127.0.0.1");
    assert!(f[3].parse::<u16>().unwrap() > 0);
    assert!(f[5].starts_with("rookery@"));
    assert_eq!(f[7], "away");
    assert_eq!(f[8], "desk");
    assert_eq!(f[9], "lunch");
    assert_eq!(server.ctl_ok(&["connected_users_number"]).trim(), "3");
    assert_eq!(server.ctl_ok(&["stats", "onlineusers"]).trim(), "3");
    assert_eq!(
        server
            .ctl_ok(&["stats_host", "onlineusers", "localhost"])
            .trim(),
        "3"
    );
    assert_eq!(server.ctl_ok(&["stats", "registeredusers"]).trim(), "2");
    let up: u64 = server
        .ctl_ok(&["stats", "uptimeseconds"])
        .trim()
        .parse()
        .unwrap();
    assert!(up < 600);

    let mine = server.ctl_ok(&["user_sessions_info", "alice", "localhost"]);
    let mut resources: Vec<&str> = mine
        .lines()
        .map(|l| l.split('\t').nth(7).unwrap_or(""))
        .collect();
    resources.sort();
    assert_eq!(resources, ["desk", "phone"], "{mine:?}");

    server.ctl_ok(&["kick_session", "alice", "localhost", "desk", "Maintenance"]);
    let cond = desk.expect_stream_error().await;
    assert_eq!(cond, "policy-violation");
    let (c, text) = code(
        &server,
        &["kick_session", "alice", "localhost", "desk", "x"],
    );
    assert_eq!(c, 1, "{text}");
    assert!(text.contains("No session alice@localhost/desk"), "{text}");

    assert_eq!(
        server.ctl_ok(&["kick_user", "alice", "localhost"]).trim(),
        "1"
    );
    assert_eq!(
        server.ctl_ok(&["kick_user", "alice", "localhost"]).trim(),
        "0"
    );
    let left = server.ctl_ok(&["connected_users"]);
    assert_eq!(left.trim(), "bob@localhost/b", "{left}");
}

#[tokio::test]
async fn send_message_and_send_stanza() {
    let server = server_with_users();
    let mut bob = Client::login(&server, "bob", "hunter2", Some("b")).await;
    bob.presence().await;
    server.ctl_ok(&[
        "send_message",
        "chat",
        "alice@localhost",
        "bob@localhost",
        "Hi",
        "hello bob",
    ]);
    let m = bob.recv_message().await;
    assert_eq!(m.attr("from"), Some("alice@localhost"));
    assert_eq!(m.attr("type"), Some("chat"));
    assert_eq!(m.child_text("body"), Some("hello bob"));
    assert_eq!(m.child_text("subject"), Some("Hi"));

    server.ctl_ok(&[
        "send_stanza",
        "localhost",
        "bob@localhost/b",
        "<message type='headline'><body>notice</body></message>",
    ]);
    let m = bob.recv_message().await;
    assert_eq!(m.attr("from"), Some("localhost"));
    assert_eq!(m.child_text("body"), Some("notice"));

    // To an offline account: stored for later.
    server.ctl_ok(&[
        "send_message",
        "normal",
        "bob@localhost",
        "alice@localhost",
        "",
        "while you were out",
    ]);
    assert_eq!(
        server
            .ctl_ok(&["get_offline_count", "alice", "localhost"])
            .trim(),
        "1"
    );

    for bad in [
        vec!["send_stanza", "localhost", "bob@localhost", "<message"],
        vec![
            "send_stanza",
            "localhost",
            "bob@localhost",
            "<foo xmlns='x'/>",
        ],
        vec![
            "send_message",
            "bogus",
            "a@localhost",
            "bob@localhost",
            "",
            "x",
        ],
        vec!["send_message", "chat", "a@@x", "bob@localhost", "", "x"],
    ] {
        let (c, text) = code(&server, &bad);
        assert_eq!(c, 1, "{bad:?}: {text}");
    }
}

#[tokio::test]
async fn roster_items_running_and_stopped() {
    let mut server = server_with_users();
    let mut alice = online_interested(&server, ("alice", "secret"), "r").await;
    server.ctl_ok(&[
        "add_rosteritem",
        "alice",
        "localhost",
        "bob",
        "localhost",
        "Bobby",
        "Friends;Work",
        "both",
    ]);
    // The online session gets a roster push.
    let push = alice
        .recv_where("roster push", |e| {
            e.name == "iq" && e.attr("type") == Some("set")
        })
        .await;
    assert!(push.to_string().contains("bob@localhost"), "{push:?}");
    let item = roster_item(&mut alice, "bob@localhost")
        .await
        .expect("item");
    assert_eq!(item.attr("name"), Some("Bobby"));
    assert_eq!(item.attr("subscription"), Some("both"));
    let roster = server.ctl_ok(&["get_roster", "alice", "localhost"]);
    assert_eq!(
        roster.trim(),
        "bob@localhost\tBobby\tboth\tnone\tFriends;Work"
    );
    server.ctl_ok(&[
        "delete_rosteritem",
        "alice",
        "localhost",
        "bob",
        "localhost",
    ]);
    assert!(roster_item(&mut alice, "bob@localhost").await.is_none());
    let (c, _) = code(
        &server,
        &[
            "delete_rosteritem",
            "alice",
            "localhost",
            "bob",
            "localhost",
        ],
    );
    assert_eq!(c, 1);
    let (c, _) = code(
        &server,
        &[
            "add_rosteritem",
            "alice",
            "localhost",
            "bob",
            "localhost",
            "",
            "",
            "sometimes",
        ],
    );
    assert_eq!(c, 1);
    let (c, _) = code(
        &server,
        &[
            "add_rosteritem",
            "nobody",
            "localhost",
            "bob",
            "localhost",
            "",
            "",
            "none",
        ],
    );
    assert_eq!(c, 1);
    alice.close().await;

    let st = server.stop();
    assert!(st.success());
    server.ctl_ok(&[
        "add_rosteritem",
        "bob",
        "localhost",
        "carol",
        "example.net",
        "",
        "",
        "to",
    ]);
    assert_eq!(
        server.ctl_ok(&["get_roster", "bob", "localhost"]).trim(),
        "carol@example.net\t\tto\tnone"
    );
    server.restart();
    assert_eq!(
        server.ctl_ok(&["get_roster", "bob", "localhost"]).trim(),
        "carol@example.net\t\tto\tnone"
    );
    server.ctl_ok(&[
        "delete_rosteritem",
        "bob",
        "localhost",
        "carol",
        "example.net",
    ]);
    assert_eq!(
        server.ctl_ok(&["get_roster", "bob", "localhost"]).trim(),
        ""
    );
}

#[tokio::test]
async fn delete_old_messages_by_age() {
    let mut server = server_with_users();
    for body in ["one", "two"] {
        server.ctl_ok(&[
            "send_message",
            "chat",
            "bob@localhost",
            "alice@localhost",
            "",
            body,
        ]);
    }
    assert_eq!(
        server
            .ctl_ok(&["get_offline_count", "alice", "localhost"])
            .trim(),
        "2"
    );
    assert_eq!(server.ctl_ok(&["delete_old_messages", "1"]).trim(), "0");
    assert_eq!(
        server
            .ctl_ok(&["get_offline_count", "alice", "localhost"])
            .trim(),
        "2"
    );
    let (c, _) = code(&server, &["delete_old_messages", "soon"]);
    assert_eq!(c, 1);
    // Stamps have second resolution: wait past the second they were stored in.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let st = server.stop();
    assert!(st.success());
    assert_eq!(server.ctl_ok(&["delete_old_messages", "0"]).trim(), "2");
    assert_eq!(
        server
            .ctl_ok(&["get_offline_count", "alice", "localhost"])
            .trim(),
        "0"
    );
    server.restart();
    server.ctl_ok(&[
        "send_message",
        "chat",
        "bob@localhost",
        "alice@localhost",
        "",
        "x",
    ]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(server.ctl_ok(&["delete_old_messages", "0"]).trim(), "1");
}

#[tokio::test]
async fn reload_config_keeps_sessions_and_refuses_bad_files() {
    let server = Server::start_with(Config {
        max_user_sessions: 10,
        ..Default::default()
    });
    server.register("alice", "localhost", "secret");
    let mut first = Client::login(&server, "alice", "secret", Some("one")).await;
    let path = server.config_path().to_path_buf();
    let original = std::fs::read_to_string(&path).unwrap();
    assert!(original.contains("max_user_sessions: 10"));
    std::fs::write(
        &path,
        original.replace("max_user_sessions: 10", "max_user_sessions: 1"),
    )
    .unwrap();
    let out = server.ctl_ok(&["reload_config"]);
    assert!(out.contains("Configuration reloaded"), "{out}");
    // The existing session is still served.
    let pong = first.ping("localhost").await;
    assert_eq!(pong.attr("type"), Some("result"));
    // The new limit applies to new sessions.
    let mut second = Client::connect_starttls(server.c2s()).await;
    second.login_scram("alice", "secret").await;
    let refused = second
        .bind(Some("two"))
        .await
        .expect_err("second session allowed");
    assert!(
        refused.to_string().contains("resource-constraint"),
        "{refused:?}"
    );

    // A broken file is refused with its line, and the old config stays:
    // a syntax error is already caught by `rookery ctl` reading the file...
    std::fs::write(&path, format!("{original}\nshaper_rules: [unclosed\n")).unwrap();
    let (c, text) = code(&server, &["reload_config"]);
    assert_eq!(c, 1, "{text}");
    assert!(text.contains(&format!("{}:", path.display())), "{text}");
    assert!(text.contains("keeps its current configuration"), "{text}");
    // ...and a file the server cannot use (a certificate that is no PEM) by the server.
    let bad_pem = server.dir().join("bad.pem");
    std::fs::write(&bad_pem, "not a certificate\n").unwrap();
    std::fs::write(
        &path,
        format!(
            "{}\ncertfiles:\n  - {:?}\n",
            original.replace("max_user_sessions: 10", "max_user_sessions: 5"),
            bad_pem.display().to_string()
        ),
    )
    .unwrap();
    let (c, text) = code(&server, &["reload_config"]);
    assert_eq!(c, 1, "{text}");
    assert!(text.contains("bad.pem"), "{text}");
    assert!(text.contains("old one stays in effect"), "{text}");
    let pong = first.ping("localhost").await;
    assert_eq!(pong.attr("type"), Some("result"));
    let mut third = Client::connect_starttls(server.c2s()).await;
    third.login_scram("alice", "secret").await;
    assert!(
        third.bind(Some("three")).await.is_err(),
        "limit 1 still in force"
    );
    let (c, _) = code(&server, &["reload_config", "extra"]);
    assert_eq!(c, 2);
}

#[tokio::test]
async fn backup_and_restore_running_and_stopped() {
    let mut server = server_with_users();
    server.ctl_ok(&[
        "send_message",
        "chat",
        "bob@localhost",
        "alice@localhost",
        "",
        "kept",
    ]);
    let file = server.dir().join("first.backup");
    let f = file.display().to_string();
    let out = server.ctl_ok(&["backup", &f]);
    assert!(out.contains("Wrote"), "{out}");
    server.register("carol", "localhost", "c");
    server.ctl_ok(&["unregister", "alice", "localhost"]);
    let mut bob = Client::login(&server, "bob", "hunter2", Some("b")).await;

    let out = server.ctl_ok(&["restore", &f]);
    assert!(out.contains("Restored"), "{out}");
    // Sessions end on restore (their state may no longer match the data).
    let cond = bob.expect_stream_error().await;
    assert_eq!(cond, "reset");
    let users = server.ctl_ok(&["registered_users", "localhost"]);
    assert_eq!(users.trim(), "alice\nbob");
    assert!(can_login(&server, "alice", "secret").await);
    assert!(!can_login(&server, "carol", "c").await);
    assert_eq!(
        server
            .ctl_ok(&["get_offline_count", "alice", "localhost"])
            .trim(),
        "1"
    );

    // A damaged file is refused and nothing changes.
    let mut bytes = std::fs::read(&file).unwrap();
    let n = bytes.len();
    bytes.truncate(n - 10);
    let damaged = server.dir().join("damaged.backup");
    std::fs::write(&damaged, bytes).unwrap();
    let (c, text) = code(&server, &["restore", &damaged.display().to_string()]);
    assert_eq!(c, 1, "{text}");
    assert!(text.contains("not a valid Rookery backup"), "{text}");
    let (c, _) = code(&server, &["restore", "/nonexistent/file"]);
    assert_eq!(c, 1);
    assert!(can_login(&server, "alice", "secret").await);

    // With the server stopped, on the database directly.
    let st = server.stop();
    assert!(st.success());
    let offline_file = server.dir().join("offline.backup");
    let of = offline_file.display().to_string();
    server.ctl_ok(&["backup", &of]);
    server.ctl_ok(&["unregister", "bob", "localhost"]);
    server.ctl_ok(&["restore", &of]);
    server.restart();
    assert!(can_login(&server, "bob", "hunter2").await);
}

#[test]
fn help_and_per_command_help_and_server_only_refusals() {
    let mut server = Server::start();
    let help = server.ctl_ok(&["help"]);
    for cmd in [
        "register",
        "unregister",
        "change_password",
        "check_account",
        "check_password",
        "registered_users",
        "connected_users",
        "connected_users_number",
        "connected_users_info",
        "user_sessions_info",
        "kick_session",
        "kick_user",
        "send_message",
        "send_stanza",
        "get_roster",
        "add_rosteritem",
        "delete_rosteritem",
        "get_offline_count",
        "delete_old_messages",
        "status",
        "stats",
        "reload_config",
        "stop",
        "backup",
        "restore",
        "help",
    ] {
        assert!(
            help.lines()
                .any(|l| l.trim_start().starts_with(&format!("{cmd} ")) || l.trim() == cmd),
            "help lacks {cmd}"
        );
    }
    let out = server.ctl_ok(&["kick_session", "--help"]);
    assert!(
        out.starts_with("Usage: rookery ctl kick_session USER HOST RESOURCE REASON"),
        "{out}"
    );
    assert!(out.contains("Needs a running server"));
    let out = server.ctl_ok(&["help", "add_rosteritem"]);
    assert!(
        out.contains("LOCALUSER LOCALHOST USER HOST NICK GROUP SUBS"),
        "{out}"
    );
    let st = server.stop();
    assert!(st.success());
    for args in [
        vec!["kick_session", "a", "localhost", "r", "x"],
        vec!["kick_user", "a", "localhost"],
        vec![
            "send_message",
            "chat",
            "a@localhost",
            "b@localhost",
            "",
            "x",
        ],
        vec!["send_stanza", "a@localhost", "b@localhost", "<message/>"],
        vec!["reload_config"],
        vec!["connected_users_info"],
        vec!["user_sessions_info", "a", "localhost"],
    ] {
        let (c, text) = code(&server, &args);
        assert_eq!(c, 3, "{args:?}: {text}");
        assert!(text.contains("not running"), "{args:?}: {text}");
    }
    // Help works with the server stopped, and usage errors still exit 2.
    server.ctl_ok(&["send_message", "--help"]);
    let (c, _) = code(&server, &["kick_user", "a"]);
    assert_eq!(c, 2);
}
