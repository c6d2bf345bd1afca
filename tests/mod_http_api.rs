//! `mod_http_api` (ejabberd's ReST API) against the real binary over real
//! HTTP: `POST /api/COMMAND` with ejabberd's argument names and result
//! shapes, the same answers as `rookery ctl`, and the refusals: bad JSON
//! (400), unknown command (404), no or wrong credentials (401), an account
//! `api_permissions` does not allow (403), bearer tokens issued, used and
//! revoked with `rookery ctl`, and an address rule (`who: {ip: ...}`)
//! checked from a second loopback address.

use std::net::{IpAddr, SocketAddr};

use base64::Engine;
use serde_json::{json, Value};

use crate::common;

use common::client::Client;
use common::http::http_from;
use common::{Config, Server};

const PERMISSIONS: &str = "\
acl:
  admin:
    user: admin@localhost
access_rules:
  configure:
    allow: admin
api_permissions:
  console:
    from: ejabberd_ctl
    who: all
    what: \"*\"
  admins:
    from: mod_http_api
    who:
      access: configure
    what: \"*\"
  monitoring:
    from: mod_http_api
    who:
      ip: 127.0.0.2
    what: [connected_users_number, status]
";

fn server() -> (Server, SocketAddr) {
    let server = Server::start_with(Config {
        extra_listeners: vec![
            "port: 0\nip: 127.0.0.1\nmodule: ejabberd_http\nrequest_handlers:\n  /api: mod_http_api"
                .to_string(),
        ],
        extra_yaml: PERMISSIONS.to_string(),
        ..Config::default()
    });
    let addr = server
        .listeners
        .iter()
        .find(|l| l.module == "http")
        .expect("http listener")
        .addr;
    server.register("admin", "localhost", "adminpw");
    server.register("bob", "localhost", "bobpw");
    (server, addr)
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// POST `body` to `/api/COMMAND` from `source` with `auth`: (status, JSON).
async fn call_from(
    source: IpAddr,
    addr: SocketAddr,
    auth: Option<&str>,
    command: &str,
    body: &str,
) -> (u16, Value) {
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(a) = auth {
        headers.push(("Authorization", a));
    }
    let a = http_from(
        source,
        addr,
        "POST",
        &format!("/api/{command}"),
        &headers,
        body.as_bytes(),
    )
    .await;
    let v = serde_json::from_slice(&a.body).unwrap_or_else(|e| {
        panic!(
            "{command}: not JSON ({e}): {:?}",
            String::from_utf8_lossy(&a.body)
        )
    });
    (a.status, v)
}

async fn call(addr: SocketAddr, auth: &str, command: &str, body: Value) -> (u16, Value) {
    call_from(
        [127, 0, 0, 1].into(),
        addr,
        Some(auth),
        command,
        &body.to_string(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_with_ejabberd_names_and_shapes() {
    let (server, addr) = server();
    let admin = basic("admin@localhost", "adminpw");
    let (s, v) = call(
        addr,
        &admin,
        "register",
        json!({"user": "carol", "host": "localhost", "password": "c1"}),
    )
    .await;
    assert_eq!(
        (s, v),
        (200, json!("User carol@localhost successfully registered"))
    );
    let (s, v) = call(
        addr,
        &admin,
        "register",
        json!({"user": "carol", "host": "localhost", "password": "c1"}),
    )
    .await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["status"], "error");
    assert_eq!(
        call(
            addr,
            &admin,
            "check_account",
            json!({"user": "carol", "host": "localhost"})
        )
        .await,
        (200, json!(0))
    );
    assert_eq!(
        call(
            addr,
            &admin,
            "check_account",
            json!({"user": "dave", "host": "localhost"})
        )
        .await,
        (200, json!(1))
    );
    assert_eq!(
        call(
            addr,
            &admin,
            "change_password",
            json!({"user": "carol", "host": "localhost", "newpass": "c2"})
        )
        .await,
        (200, json!(0))
    );
    assert_eq!(
        call(
            addr,
            &admin,
            "check_password",
            json!({"user": "carol", "host": "localhost", "password": "c2"})
        )
        .await,
        (200, json!(0))
    );
    assert_eq!(
        call(
            addr,
            &admin,
            "registered_users",
            json!({"host": "localhost"})
        )
        .await,
        (200, json!(["admin", "bob", "carol"]))
    );
    // ejabberd's version-1 add_rosteritem: `groups` as a list.
    assert_eq!(
        call(
            addr,
            &admin,
            "add_rosteritem",
            json!({"localuser": "bob", "localhost": "localhost", "user": "carol",
                   "host": "localhost", "nick": "Carol", "groups": ["Friends", "Work"], "subs": "both"})
        )
        .await,
        (200, json!(0))
    );
    assert_eq!(
        call(
            addr,
            &admin,
            "get_roster",
            json!({"user": "bob", "host": "localhost"})
        )
        .await,
        (
            200,
            json!([{"jid": "carol@localhost", "nick": "Carol", "subscription": "both",
                    "pending": "none", "groups": ["Friends", "Work"]}])
        )
    );

    // Sessions and messages: bob online, a message through the API.
    assert_eq!(
        call(addr, &admin, "connected_users", json!({})).await,
        (200, json!([]))
    );
    let mut bob = Client::login(&server, "bob", "bobpw", Some("phone")).await;
    bob.presence().await;
    assert_eq!(
        call(addr, &admin, "connected_users", json!({})).await,
        (200, json!(["bob@localhost/phone"]))
    );
    assert_eq!(
        call(addr, &admin, "connected_users_number", json!({})).await,
        (200, json!(1))
    );
    let (s, v) = call(
        addr,
        &admin,
        "user_sessions_info",
        json!({"user": "bob", "host": "localhost"}),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v[0]["resource"], "phone");
    assert_eq!(v[0]["ip"], "127.0.0.1");
    assert!(v[0]["port"].is_u64(), "{v}");
    assert_eq!(
        call(
            addr,
            &admin,
            "send_message",
            json!({"type": "chat", "from": "admin@localhost", "to": "bob@localhost/phone",
                   "subject": "", "body": "hello over HTTP"})
        )
        .await,
        (200, json!(0))
    );
    let msg = bob.recv_message().await;
    assert_eq!(
        msg.child("body").map(|b| b.text.as_str()),
        Some("hello over HTTP")
    );

    // The same answers as rookery ctl.
    for (command, args, body) in [
        (
            "registered_users",
            vec!["localhost"],
            json!({"host": "localhost"}),
        ),
        ("registered_vhosts", vec![], json!({})),
        ("connected_users", vec![], json!({})),
    ] {
        let mut argv = vec![command];
        argv.extend(args);
        let ctl: Vec<Value> = server
            .ctl_ok(&argv)
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| json!(l))
            .collect();
        assert_eq!(
            call(addr, &admin, command, body).await,
            (200, Value::Array(ctl)),
            "{command}"
        );
    }
    for (argv, body) in [
        (vec!["connected_users_number"], json!({})),
        (
            vec!["stats", "registeredusers"],
            json!({"name": "registeredusers"}),
        ),
        (
            vec!["stats_host", "onlineusers", "localhost"],
            json!({"name": "onlineusers", "host": "localhost"}),
        ),
        (
            vec!["get_offline_count", "carol", "localhost"],
            json!({"user": "carol", "host": "localhost"}),
        ),
        (vec!["incoming_s2s_number"], json!({})),
    ] {
        let ctl: i64 = server.ctl_ok(&argv).trim().parse().expect("a number");
        assert_eq!(
            call(addr, &admin, argv[0], body).await,
            (200, json!(ctl)),
            "{argv:?}"
        );
    }

    assert_eq!(
        call(
            addr,
            &admin,
            "kick_user",
            json!({"user": "bob", "host": "localhost"})
        )
        .await,
        (200, json!(1))
    );
    let (s, _) = call(
        addr,
        &admin,
        "unregister",
        json!({"user": "carol", "host": "localhost"}),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(
        call(
            addr,
            &admin,
            "check_account",
            json!({"user": "carol", "host": "localhost"})
        )
        .await,
        (200, json!(1))
    );
    let (s, v) = call(
        addr,
        &admin,
        "unregister",
        json!({"user": "carol", "host": "localhost"}),
    )
    .await;
    assert_eq!(s, 404, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_have_ejabberd_status_codes() {
    let (server, addr) = server();
    let lo: IpAddr = [127, 0, 0, 1].into();
    let admin = basic("admin@localhost", "adminpw");
    // Bad JSON, not an object, unknown argument, missing argument: 400.
    for body in [
        "{\"user\": ",
        "[1, 2]",
        "{\"user\":\"a\",\"host\":\"localhost\",\"colour\":\"red\"}",
        "{\"user\":\"a\"}",
    ] {
        let (s, v) = call_from(lo, addr, Some(&admin), "check_account", body).await;
        assert_eq!(s, 400, "{body}: {v}");
        assert_eq!(v["status"], "error");
    }
    // Unknown commands, and those that run only in rookery ctl: 404.
    for command in ["frobnicate", "check", "cert_import", "help"] {
        let (s, v) = call_from(lo, addr, Some(&admin), command, "{}").await;
        assert_eq!((s, &v["code"]), (404, &json!(44)), "{command}: {v}");
    }
    // No credentials, wrong password, unknown account: 401.
    let (s, _) = call_from(lo, addr, None, "registered_vhosts", "{}").await;
    assert_eq!(s, 401);
    let wrong = basic("admin@localhost", "nope");
    let (s, _) = call_from(lo, addr, Some(&wrong), "registered_vhosts", "{}").await;
    assert_eq!(s, 401);
    let ghost = basic("ghost@localhost", "x");
    let (s, _) = call_from(lo, addr, Some(&ghost), "registered_vhosts", "{}").await;
    assert_eq!(s, 401);
    // A real account api_permissions does not allow: 403.
    let bob = basic("bob@localhost", "bobpw");
    let (s, v) = call_from(lo, addr, Some(&bob), "registered_vhosts", "{}").await;
    assert_eq!((s, &v["code"]), (403, &json!(32)), "{v}");
    // Nothing was done by the refused calls.
    let (s, _) = call_from(
        lo,
        addr,
        Some(&bob),
        "register",
        "{\"user\":\"eve\",\"host\":\"localhost\",\"password\":\"x\"}",
    )
    .await;
    assert_eq!(s, 403);
    assert_eq!(server.ctl(&["check_account", "eve", "localhost"]).0, 1);
    // GET is not a call.
    let a = http_from(
        lo,
        addr,
        "GET",
        "/api/status",
        &[("Authorization", &admin)],
        b"",
    )
    .await;
    assert_eq!(a.status, 405);

    // Bearer tokens: issued with ctl for an account, which they act as.
    let token = server.ctl_ok(&["api_token_issue", "admin", "localhost"]);
    let token = token.trim();
    assert!(token.starts_with("rk_"), "{token}");
    let bearer = format!("Bearer {token}");
    let (s, v) = call_from(lo, addr, Some(&bearer), "registered_vhosts", "{}").await;
    assert_eq!((s, v), (200, json!(["localhost"])));
    let (s, _) = call_from(lo, addr, Some("Bearer rk_wrong"), "registered_vhosts", "{}").await;
    assert_eq!(s, 401);
    let bobs = server.ctl_ok(&["api_token_issue", "bob", "localhost"]);
    let (s, _) = call_from(
        lo,
        addr,
        Some(&format!("Bearer {}", bobs.trim())),
        "registered_vhosts",
        "{}",
    )
    .await;
    assert_eq!(s, 403);
    assert_eq!(
        server
            .ctl_ok(&["api_token_revoke", "admin", "localhost"])
            .trim(),
        "1"
    );
    let (s, _) = call_from(lo, addr, Some(&bearer), "registered_vhosts", "{}").await;
    assert_eq!(s, 401);

    // An address rule: 127.0.0.2 may read two commands without credentials.
    let other: IpAddr = [127, 0, 0, 2].into();
    let (s, v) = call_from(other, addr, None, "connected_users_number", "{}").await;
    assert_eq!((s, v), (200, json!(0)));
    let (s, _) = call_from(other, addr, None, "registered_vhosts", "{}").await;
    assert_eq!(s, 401);
    let (s, _) = call_from(lo, addr, None, "connected_users_number", "{}").await;
    assert_eq!(s, 401);
}
