//! The account-lifecycle commands against the real binary:
//! `ban_account` / `unban_account` / `get_ban_details` (a banned account
//! cannot log in over SASL, SASL2 or a FAST token, its sessions are ended,
//! its data kept) and `delete_old_users` (last activity from `mod_last`),
//! with bad input.

use crate::common;

use std::time::Duration;

use common::server::DEFAULT_MODULES;
use common::*;
use hmac::{Hmac, Mac};

use crate::c2s_sasl2::{failure_condition, sasl2_reply, scram, scram2, send_authenticate};

async fn scram_condition(server: &Server, user: &str, password: &str) -> Result<(), String> {
    let mut c = Client::connect_starttls(server.c2s()).await;
    c.auth_scram("SCRAM-SHA-256", user, password).await
}

#[tokio::test]
async fn banned_accounts_cannot_log_in_and_are_kicked() {
    let server = Server::start_with(Config {
        modules: format!("{DEFAULT_MODULES}  mod_auth_fast: {{}}\n"),
        ..Config::default()
    });
    server.register("alice", "localhost", "secret");
    server.register("bob", "localhost", "secret");
    server.ctl_ok(&[
        "add_rosteritem",
        "alice",
        "localhost",
        "bob",
        "localhost",
        "Bob",
        "",
        "both",
    ]);

    // A FAST token from before the ban.
    let token = fast_token(&server, "alice").await;

    let mut session = Client::login(&server, "alice", "secret", Some("desk")).await;
    session.presence().await;
    server.ctl_ok(&[
        "ban_account",
        "alice",
        "localhost",
        "spam from this account",
    ]);
    // Its session is ended.
    let err = session.expect_stream_error().await;
    assert!(!err.is_empty());

    // SCRAM and PLAIN over SASL, SCRAM over SASL2, and the FAST token.
    assert_eq!(
        scram_condition(&server, "alice", "secret").await,
        Err("account-disabled".to_string())
    );
    let mut c = Client::connect_starttls(server.c2s()).await;
    assert_eq!(
        c.auth_plain("alice", "secret").await,
        Err("account-disabled".to_string())
    );
    let mut c = Client::connect_starttls(server.c2s()).await;
    let r = scram2(&mut c, scram(ScramHash::Sha256, "alice", "secret"), "").await;
    assert_eq!(r.err().as_deref(), Some("account-disabled"));
    // (kick_user also revoked alice's FAST tokens; the offline ban below
    // shows the ban itself refusing a FAST login.)
    assert!(fast_login(&server, "alice", &token, 1).await.is_err());
    // A wrong password is still not-authorized, not a ban leak.
    assert_eq!(
        scram_condition(&server, "alice", "wrong").await,
        Err("not-authorized".to_string())
    );

    // Data kept; the ban is on record; others unaffected.
    assert_eq!(server.ctl(&["check_account", "alice", "localhost"]).0, 0);
    let roster = server.ctl_ok(&["get_roster", "alice", "localhost"]);
    assert!(roster.contains("bob@localhost"), "{roster}");
    let details = server.ctl_ok(&["get_ban_details", "alice", "localhost"]);
    assert!(
        details.contains("reason\tspam from this account") && details.contains("bandate\t"),
        "{details}"
    );
    assert!(scram_condition(&server, "bob", "secret").await.is_ok());

    server.ctl_ok(&["unban_account", "alice", "localhost"]);
    assert!(scram_condition(&server, "alice", "secret").await.is_ok());
    assert_eq!(
        server
            .ctl_ok(&["get_ban_details", "alice", "localhost"])
            .trim(),
        ""
    );

    // Bad input.
    assert_eq!(server.ctl(&["unban_account", "alice", "localhost"]).0, 1);
    assert_eq!(
        server.ctl(&["ban_account", "nobody", "localhost", "x"]).0,
        1
    );
    assert_eq!(
        server.ctl(&["ban_account", "bad@name", "localhost", "x"]).0,
        1
    );
    assert_eq!(
        server
            .ctl(&["ban_account", "alice", "nowhere.example", "x"])
            .0,
        1
    );
    assert_eq!(server.ctl(&["ban_account", "alice", "localhost"]).0, 2);

    // Offline too: ban with the server stopped (no session is kicked, no
    // FAST token revoked), then start it: SCRAM and FAST are refused.
    let bobs = fast_token(&server, "bob").await;
    assert!(fast_login(&server, "bob", &bobs, 1).await.is_ok());
    let mut server = server;
    server.stop();
    let (code, out, err) = server.ctl(&["ban_account", "bob", "localhost", "offline ban"]);
    assert_eq!(code, 0, "{out} {err}");
    server.restart();
    assert_eq!(
        scram_condition(&server, "bob", "secret").await,
        Err("account-disabled".to_string())
    );
    assert_eq!(
        fast_login(&server, "bob", &bobs, 2).await,
        Err("account-disabled".to_string())
    );
    server.ctl_ok(&["unban_account", "bob", "localhost"]);
    assert!(scram_condition(&server, "bob", "secret").await.is_ok());
}

/// A FAST token for `user` (password `secret`), from a SCRAM login over SASL2.
async fn fast_token(server: &Server, user: &str) -> String {
    let mut c = Client::connect_starttls(server.c2s()).await;
    let ok = scram2(
        &mut c,
        scram(ScramHash::Sha256, user, "secret"),
        "<request-token xmlns='urn:xmpp:fast:0' mechanism='HT-SHA-256-NONE'/>",
    )
    .await
    .expect("SCRAM over SASL2");
    ok.child_ns("token", "urn:xmpp:fast:0")
        .and_then(|t| t.attr("token"))
        .expect("FAST token")
        .to_string()
}

/// A FAST (HT-SHA-256-NONE) login with `count` (above the last one used):
/// `Ok` or the failure's condition.
async fn fast_login(server: &Server, user: &str, token: &str, count: u32) -> Result<(), String> {
    let mut c = Client::connect_starttls(server.c2s()).await;
    let mut initial = format!("{user}\0").into_bytes();
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(token.as_bytes()).unwrap();
    m.update(b"Initiator");
    initial.extend(m.finalize().into_bytes());
    send_authenticate(
        &mut c,
        "HT-SHA-256-NONE",
        Some(&initial),
        &format!("<fast xmlns='urn:xmpp:fast:0' count='{count}'/>"),
    )
    .await;
    let e = sasl2_reply(&mut c).await;
    if e.name == "success" {
        Ok(())
    } else {
        Err(failure_condition(&e))
    }
}

#[tokio::test]
async fn delete_old_users_by_last_activity() {
    let server = Server::start();
    for u in ["gone", "online", "never"] {
        server.register(u, "localhost", "pw");
    }
    // `gone` logs in and out: mod_last records its logout.
    let mut c = Client::login(&server, "gone", "pw", None).await;
    c.presence().await;
    c.close().await;
    drop(c);
    let _online = Client::login(&server, "online", "pw", None).await;
    // Wait until the logout is recorded and at least a second old.
    tokio::time::sleep(Duration::from_millis(2100)).await;

    assert_eq!(server.ctl(&["delete_old_users", "soon"]).0, 1);
    assert_eq!(server.ctl(&["delete_old_users"]).0, 2);
    let out = server.ctl_ok(&["delete_old_users", "1"]);
    assert_eq!(out.trim(), "Deleted 0 users: []");
    let out = server.ctl_ok(&["delete_old_users", "0"]);
    assert_eq!(out.trim(), "Deleted 1 users: [gone@localhost]");
    let mut left: Vec<String> = server
        .ctl_ok(&["registered_users", "localhost"])
        .lines()
        .map(str::to_string)
        .collect();
    left.sort();
    assert_eq!(left, ["never", "online"]);
}
