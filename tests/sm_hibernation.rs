//! XEP-0198 hibernation for phones, against the real binary: with
//! `mod_push` on, a resumable session waits an hour by default; a client's
//! `<enable max=…/>` is capped by `max_resume_timeout` (and the session
//! really ends then); when a hibernated session times out, its
//! unacknowledged messages that the account's archive holds are not
//! stored offline (the client gets each once, through MAM), while those
//! the archive does not hold (archive preference `never`) are.
//! (The push for a message queued to a hibernated session is in
//! `mod_push::offline_and_detached_messages_wake_the_app_server`.)

use crate::common;

use std::time::Duration;

use common::client::Client;
use common::im::{self, bare, chat, sync, ALICE, BOB};
use common::server::{Config, Server, DEFAULT_MODULES};
use common::Element;

const NS_SM: &str = "urn:xmpp:sm:3";
const NS_MAM: &str = "urn:xmpp:mam:2";

fn server_with(sm_opts: &str, push: bool) -> Server {
    let mut modules = DEFAULT_MODULES.replace(
        "  mod_stream_mgmt: {}\n",
        &format!("  mod_stream_mgmt: {sm_opts}\n"),
    );
    if push {
        modules.push_str("  mod_push: {}\n");
    }
    let s = Server::start_with(Config {
        modules,
        ..Config::default()
    });
    s.register(ALICE.0, "localhost", ALICE.1);
    s.register(BOB.0, "localhost", BOB.1);
    s
}

/// Log in, enable resumable stream management (with `max` if given);
/// returns the client and the `<enabled/>`.
async fn sm_login(server: &Server, resource: &str, max: Option<u64>) -> (Client, Element) {
    let mut c = Client::login(server, ALICE.0, ALICE.1, Some(resource)).await;
    let max = max.map(|m| format!(" max='{m}'")).unwrap_or_default();
    c.send(&format!("<enable xmlns='{NS_SM}' resume='true'{max}/>"))
        .await;
    let e = c
        .recv_where("enabled", |e| e.ns == NS_SM && e.name != "r")
        .await;
    assert_eq!(e.name, "enabled", "{e}");
    assert_eq!(e.attr("resume"), Some("true"), "{e}");
    (c, e)
}

/// Reconnect and send `<resume/>`; the answer.
async fn resume(server: &Server, id: &str) -> Element {
    let mut c = Client::connect_starttls(server.c2s()).await;
    c.login_scram(ALICE.0, ALICE.1).await;
    c.send(&format!("<resume xmlns='{NS_SM}' previd='{id}' h='0'/>"))
        .await;
    c.recv_where("resumed or failed", |e| {
        e.ns == NS_SM && (e.name == "resumed" || e.name == "failed")
    })
    .await
}

#[tokio::test]
async fn with_push_the_default_window_is_an_hour() {
    let server = server_with("{}", true);
    let (_a, e) = sm_login(&server, "phone", None).await;
    assert_eq!(e.attr("max"), Some("3600"), "{e}");
    // A client asking for more gets max_resume_timeout (by default the hour).
    let (_b, e) = sm_login(&server, "phone2", Some(86400)).await;
    assert_eq!(e.attr("max"), Some("3600"), "{e}");
    // Without mod_push, ejabberd's 300 seconds.
    let plain = server_with("{}", false);
    let (_c, e) = sm_login(&plain, "desk", None).await;
    assert_eq!(e.attr("max"), Some("300"), "{e}");
}

#[tokio::test]
async fn a_clients_max_is_capped_by_max_resume_timeout() {
    let server = server_with("{resume_timeout: 1, max_resume_timeout: 2}", true);
    let (a, e) = sm_login(&server, "phone", Some(100)).await;
    assert_eq!(e.attr("max"), Some("2"), "{e}");
    let id = e.attr("id").expect("id").to_string();
    // A shorter wish is honoured.
    let (_b, e) = sm_login(&server, "other", Some(2)).await;
    assert_eq!(e.attr("max"), Some("2"), "{e}");
    drop(a);
    // The session really ends after the capped window, not the 100 s asked.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let f = resume(&server, &id).await;
    assert_eq!(f.name, "failed", "{f}");
}

/// Bodies of the messages in `els`.
fn message_bodies(els: &[Element]) -> Vec<String> {
    els.iter()
        .filter(|e| e.name == "message")
        .filter_map(|e| e.child_text("body").map(str::to_string))
        .collect()
}

/// Bodies of alice's whole archive.
async fn archive(c: &mut Client) -> Vec<String> {
    let id = c.id();
    c.send(&format!(
        "<iq type='set' id='{id}'><query xmlns='{NS_MAM}' queryid='q'/></iq>"
    ))
    .await;
    let mut out = Vec::new();
    loop {
        let e = c.recv().await;
        if e.name == "iq" && e.attr("id") == Some(id.as_str()) {
            assert_eq!(e.attr("type"), Some("result"), "{e}");
            return out;
        }
        if let Some(m) = e
            .child_ns("result", NS_MAM)
            .and_then(|r| r.child("forwarded"))
            .and_then(|f| f.child("message"))
        {
            out.push(m.child_text("body").unwrap_or("").to_string());
        }
    }
}

/// Alice's hibernated phone gets `bodies` from bob without acknowledging
/// them, drops its connection, and the resumption window (1 s) runs out.
async fn hibernate_and_expire(server: &Server, bob: &mut Client, bodies: &[&str]) {
    let (mut a, _) = sm_login(server, "phone", None).await;
    a.presence().await;
    sync(&mut a).await;
    for b in bodies {
        bob.send(&chat(&bare(ALICE), b, b)).await;
    }
    sync(bob).await;
    let mut got = Vec::new();
    while got.len() < bodies.len() {
        let m = a.recv_where("a message", |e| e.name == "message").await;
        got.extend(m.child_text("body").map(str::to_string));
    }
    assert_eq!(got, bodies);
    drop(a); // never acknowledged
    let phone = format!("{}/phone", bare(ALICE));
    bob.recv_where("alice/phone unavailable", |e| {
        im::is_presence(e, &phone, Some("unavailable"))
    })
    .await;
}

#[tokio::test]
async fn timed_out_unacked_messages_go_offline_only_when_not_archived() {
    let server = server_with("{resume_timeout: 1}", true);
    let mut bob = im::online(&server, BOB, "b").await;
    im::subscribe_mutual(&server, ALICE, BOB).await;
    // Archived (mod_mam's default `always`): not stored offline.
    hibernate_and_expire(&server, &mut bob, &["h1", "h2"]).await;
    let (mut desk, got) = im::online_with(&server, ALICE, "desk", "<presence/>").await;
    assert!(message_bodies(&got).is_empty(), "{}", im::show(&got));
    // ...the client gets each once, through MAM.
    assert_eq!(archive(&mut desk).await, ["h1", "h2"]);
    // Archive off for alice: the next timed-out messages go offline.
    let id = desk.id();
    let r = desk
        .request(
            &format!("<iq type='set' id='{id}'><prefs xmlns='{NS_MAM}' default='never'/></iq>"),
            &id,
        )
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    drop(desk);
    let desk_jid = format!("{}/desk", bare(ALICE));
    bob.recv_where("alice/desk unavailable", |e| {
        im::is_presence(e, &desk_jid, Some("unavailable"))
    })
    .await;
    hibernate_and_expire(&server, &mut bob, &["n1"]).await;
    let (mut again, got) = im::online_with(&server, ALICE, "again", "<presence/>").await;
    assert_eq!(message_bodies(&got), ["n1"], "{}", im::show(&got));
    assert_eq!(archive(&mut again).await, ["h1", "h2"]);
}
