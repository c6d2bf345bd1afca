//! XEP-0484 FAST (`mod_auth_fast`) against the real binary: the `<fast/>`
//! inline feature with the HT mechanisms the connection can do, a token
//! requested at a SCRAM login over SASL2, a one-round-trip login with it
//! (`HT-SHA-256-NONE`, and `HT-SHA-256-EXPR` bound to the new connection's
//! tls-exporter) with the server's proof in `<additional-data/>`, a
//! replayed `count` refused, rotation after `token_refresh_age` (the old
//! token spent once the new one is used), expiry after
//! `token_lifetime`, and revocation by `ctl kick_session`, a password
//! change and the account's removal.
//!
//! The token exchange follows the XEP's examples (element and attribute
//! names, `user NUL HMAC(token, "Initiator" || cb)`); an independent
//! client (xmpp.js) requests and uses a token in `interop_xmppjs.rs`.

use crate::common;

use std::time::Duration;

use common::server::DEFAULT_MODULES;
use common::*;
use hmac::{Hmac, Mac};

use crate::c2s_sasl2::{
    authz_id, decode, failure_condition, sasl2_feature, sasl2_reply, scram, scram2,
    send_authenticate,
};

const NS_FAST: &str = "urn:xmpp:fast:0";
const NS_SASL2: &str = "urn:xmpp:sasl:2";

fn server(opts: &str) -> Server {
    let s = Server::start_with(Config {
        modules: format!("{DEFAULT_MODULES}  mod_auth_fast: {opts}\n"),
        ..Config::default()
    });
    s.register("alice", "localhost", "secret");
    s
}

fn mac(token: &str, label: &[u8], cb: &[u8]) -> Vec<u8> {
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(token.as_bytes()).unwrap();
    m.update(label);
    m.update(cb);
    m.finalize().into_bytes().to_vec()
}

/// A SCRAM login over SASL2 asking for a token for `mechanism`.
async fn request_token(server: &Server, mechanism: &str) -> String {
    let mut c = Client::connect_starttls(server.c2s()).await;
    let req = format!("<request-token xmlns='{NS_FAST}' mechanism='{mechanism}'/>");
    let ok = scram2(&mut c, scram(ScramHash::Sha256, "alice", "secret"), &req)
        .await
        .expect("SCRAM login");
    let t = ok
        .child_ns("token", NS_FAST)
        .unwrap_or_else(|| panic!("no <token/> in {ok}"));
    assert!(t.attr("expiry").is_some_and(|e| e.ends_with('Z')), "{t}");
    t.attr("token").expect("token").to_string()
}

/// A FAST login; `Ok(<success/>)` (server proof checked) or `Err(condition)`.
async fn fast_login(
    server: &Server,
    mechanism: &str,
    token: &str,
    count: u64,
    extra: &str,
) -> (Client, Result<Element, String>) {
    let mut c = Client::connect_starttls(server.c2s()).await;
    let cb = match mechanism {
        "HT-SHA-256-EXPR" => c.channel_binding("tls-exporter"),
        "HT-SHA-256-ENDP" => c.channel_binding("tls-server-end-point"),
        _ => Vec::new(),
    };
    let mut initial = b"alice\0".to_vec();
    initial.extend(mac(token, b"Initiator", &cb));
    let fast = format!("<fast xmlns='{NS_FAST}' count='{count}'/>{extra}");
    send_authenticate(&mut c, mechanism, Some(&initial), &fast).await;
    let e = sasl2_reply(&mut c).await;
    if e.name != "success" {
        let cond = failure_condition(&e);
        return (c, Err(cond));
    }
    let data = e
        .child_ns("additional-data", NS_SASL2)
        .unwrap_or_else(|| panic!("no additional-data in {e}"));
    assert_eq!(
        decode(data),
        mac(token, b"Responder", &cb),
        "server proof of the token"
    );
    (c, Ok(e))
}

#[tokio::test]
async fn request_use_replay_rotation_and_channel_binding() {
    let server = server("{token_refresh_age: 2}");
    let c = Client::connect_starttls(server.c2s()).await;
    let fast = sasl2_feature(&c)
        .child_ns("inline", NS_SASL2)
        .and_then(|i| i.child_ns("fast", NS_FAST))
        .cloned()
        .expect("<fast/> inline feature");
    let mechs: Vec<&str> = fast
        .children_named("mechanism")
        .map(|m| m.text.trim())
        .collect();
    assert_eq!(
        mechs,
        ["HT-SHA-256-EXPR", "HT-SHA-256-ENDP", "HT-SHA-256-NONE"]
    );
    drop(c);

    let token = request_token(&server, "HT-SHA-256-NONE").await;
    let (_c, ok) = fast_login(&server, "HT-SHA-256-NONE", &token, 1, "").await;
    let ok = ok.expect("FAST login");
    assert_eq!(authz_id(&ok), "alice@localhost");
    assert!(
        ok.child_ns("token", NS_FAST).is_none(),
        "young token rotated: {ok}"
    );
    // The same count again: a replay.
    let (_c, r) = fast_login(&server, "HT-SHA-256-NONE", &token, 1, "").await;
    assert_eq!(r.unwrap_err(), "not-authorized");
    // A wrong token.
    let (_c, r) = fast_login(&server, "HT-SHA-256-NONE", "forged", 9, "").await;
    assert_eq!(r.unwrap_err(), "not-authorized");
    // Older than token_refresh_age: the success carries a new token.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let (_c, ok) = fast_login(&server, "HT-SHA-256-NONE", &token, 10, "").await;
    let ok = ok.expect("FAST login with an old token");
    let new = ok
        .child_ns("token", NS_FAST)
        .unwrap_or_else(|| panic!("no rotated token in {ok}"))
        .attr("token")
        .unwrap()
        .to_string();
    assert_ne!(new, token);
    // The new one works (the client counts anew with it), and the old one
    // is then spent.
    let (_c, r) = fast_login(&server, "HT-SHA-256-NONE", &new, 1, "").await;
    let ok = r.expect("login with the rotated token");
    assert!(ok.child_ns("token", NS_FAST).is_none(), "{ok}");
    let (_c, r) = fast_login(&server, "HT-SHA-256-NONE", &token, 12, "").await;
    assert_eq!(r.unwrap_err(), "not-authorized", "old token after rotation");

    // A token for HT-SHA-256-EXPR, used on another TLS connection with that
    // connection's tls-exporter data; with NONE it is refused.
    let token = request_token(&server, "HT-SHA-256-EXPR").await;
    let (_c, r) = fast_login(&server, "HT-SHA-256-EXPR", &token, 1, "").await;
    r.expect("HT-SHA-256-EXPR login");
    let (_c, r) = fast_login(&server, "HT-SHA-256-NONE", &token, 2, "").await;
    assert_eq!(r.unwrap_err(), "not-authorized");
}

#[tokio::test]
async fn tokens_expire() {
    let server = server("{token_lifetime: 2}");
    let token = request_token(&server, "HT-SHA-256-NONE").await;
    let (_c, r) = fast_login(&server, "HT-SHA-256-NONE", &token, 1, "").await;
    r.expect("fresh token");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_c, r) = fast_login(&server, "HT-SHA-256-NONE", &token, 2, "").await;
    assert_eq!(r.unwrap_err(), "credentials-expired", "expired token");
}

#[tokio::test]
async fn kick_password_change_and_removal_revoke() {
    let server = server("{}");
    // kick_session: the token of the kicked client is gone.
    let token = request_token(&server, "HT-SHA-256-NONE").await;
    let bind = "<bind xmlns='urn:xmpp:bind:0'><tag>Phone</tag></bind>";
    let (_c, ok) = fast_login(&server, "HT-SHA-256-NONE", &token, 1, bind).await;
    let jid = authz_id(&ok.expect("FAST + Bind 2"));
    let resource = jid.split_once('/').unwrap().1.to_string();
    server.ctl_ok(&["kick_session", "alice", "localhost", &resource, "test"]);
    let (_c, r) = fast_login(&server, "HT-SHA-256-NONE", &token, 2, "").await;
    assert_eq!(r.unwrap_err(), "not-authorized", "token after kick_session");

    // A password change.
    let token = request_token(&server, "HT-SHA-256-NONE").await;
    server.ctl_ok(&["change_password", "alice", "localhost", "newpass"]);
    let (_c, r) = fast_login(&server, "HT-SHA-256-NONE", &token, 1, "").await;
    assert_eq!(
        r.unwrap_err(),
        "credentials-expired",
        "token after a password change"
    );

    // Removal and re-registration with the same password.
    server.ctl_ok(&["change_password", "alice", "localhost", "secret"]);
    let token = request_token(&server, "HT-SHA-256-NONE").await;
    server.ctl_ok(&["unregister", "alice", "localhost"]);
    server.register("alice", "localhost", "secret");
    let (_c, r) = fast_login(&server, "HT-SHA-256-NONE", &token, 1, "").await;
    assert_eq!(r.unwrap_err(), "not-authorized", "token after removal");
}
