//! Integration tests of c2s sessions on the real `rookery` binary: resource
//! binding (chosen, generated, conflicts, per-user limit), legacy session
//! establishment, pre-authentication stanzas, message routing with `from`
//! stamping, and IQ handling by the server (ping, disco#info, unknown
//! payloads, results/errors, malformed IQs).

use crate::common;

use std::time::Duration;

use common::*;

/// Accepts either an IQ error `bad-request` reply for `id` or a stream error
/// (`bad-format` / `invalid-xml`) as the answer to a malformed IQ.
async fn expect_bad_request(c: &mut Client, id: Option<&str>) {
    let e = c.recv().await;
    if e.is_stream_error() {
        let cond = e.condition_in(NS_STREAM_ERRORS).unwrap_or("").to_string();
        assert!(
            cond == "bad-format" || cond == "invalid-xml",
            "malformed iq answered with stream error <{cond}/> (RFC 6120 §4.9.3 has no such use)"
        );
        return;
    }
    assert_eq!(e.name, "iq", "unexpected reply {e}");
    assert_eq!(e.attr("type"), Some("error"), "{e}");
    if let Some(id) = id {
        assert_eq!(e.attr("id"), Some(id), "{e}");
    }
    let (_, cond) = e.stanza_error().unwrap_or_else(|| panic!("no error: {e}"));
    assert_eq!(cond, "bad-request", "{e}");
}

#[tokio::test]
async fn bind_client_chosen_resource() {
    let server = server_with_users();
    let mut c = Client::connect_starttls(server.c2s()).await;
    c.login_scram("alice", "secret").await;
    assert_eq!(
        c.bind(Some("balcony")).await.expect("bind"),
        "alice@localhost/balcony"
    );
}

#[tokio::test]
async fn bind_server_generated_resource() {
    let server = server_with_users();
    let mut jids = Vec::new();
    let mut keep = Vec::new();
    for _ in 0..2 {
        let mut c = Client::connect_starttls(server.c2s()).await;
        c.login_scram("alice", "secret").await;
        let jid = c.bind(None).await.expect("bind");
        let res = jid
            .strip_prefix("alice@localhost/")
            .unwrap_or_else(|| panic!("generated JID {jid} is not alice@localhost/..."));
        assert!(!res.is_empty(), "empty generated resource");
        jids.push(jid);
        // Keep the connection open so both sessions coexist.
        keep.push(c);
    }
    assert_ne!(jids[0], jids[1], "generated resources collide");
}

#[tokio::test]
async fn rebinding_same_full_jid_replaces_old_session() {
    let server = server_with_users();
    let mut old = Client::login(&server, "alice", "secret", Some("dup")).await;
    let mut new = Client::login(&server, "alice", "secret", Some("dup")).await;
    assert_eq!(new.full_jid(), "alice@localhost/dup");
    assert_eq!(old.expect_stream_error().await, "conflict");

    // Traffic for the full JID now reaches the new session.
    let mut bob = Client::login(&server, "bob", "hunter2", Some("b")).await;
    let token = unique("dup");
    bob.send(&format!(
        "<message to='alice@localhost/dup' type='chat' id='d1'><body>{token}</body></message>"
    ))
    .await;
    let m = new.recv_message().await;
    assert_eq!(m.child_text("body"), Some(token.as_str()), "{m}");
}

#[tokio::test]
async fn max_user_sessions_is_enforced() {
    let server = Server::start_with(Config {
        max_user_sessions: 2,
        ..Config::default()
    });
    server.register("alice", "localhost", "secret");
    let mut s1 = Client::login(&server, "alice", "secret", Some("one")).await;
    let _s2 = Client::login(&server, "alice", "secret", Some("two")).await;

    let mut s3 = Client::connect_starttls(server.c2s()).await;
    s3.login_scram("alice", "secret").await;
    let err = s3
        .bind(Some("three"))
        .await
        .expect_err("third session accepted with max_user_sessions: 2");
    let (ty, cond) = err
        .stanza_error()
        .unwrap_or_else(|| panic!("bind error without condition: {err}"));
    assert_eq!(cond, "resource-constraint", "{err}");
    assert!(ty == "wait" || ty == "cancel", "error type {ty}: {err}");

    // Closing a session frees a slot (allow the server a moment).
    s1.close().await;
    let mut ok = false;
    for _ in 0..10 {
        let mut c = Client::connect_starttls(server.c2s()).await;
        c.login_scram("alice", "secret").await;
        if c.bind(Some("four")).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(ok, "slot not freed after closing a session");
}

#[tokio::test]
async fn legacy_session_iq_gets_result() {
    let server = server_with_users();
    let mut c = Client::login(&server, "alice", "secret", Some("legacy")).await;
    let r = c.session().await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
}

#[tokio::test]
async fn message_before_auth_is_not_authorized() {
    let server = server_with_users();
    let mut c = Client::connect_starttls(server.c2s()).await;
    c.send("<message to='bob@localhost' type='chat'><body>hi</body></message>")
        .await;
    assert_eq!(c.expect_stream_error().await, "not-authorized");
}

#[tokio::test]
async fn iq_before_auth_is_not_authorized() {
    let server = server_with_users();
    let mut c = Client::connect_starttls(server.c2s()).await;
    c.send("<iq type='get' to='localhost' id='x1'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert_eq!(c.expect_stream_error().await, "not-authorized");
}

#[tokio::test]
async fn chat_both_directions_with_stamped_from() {
    let server = server_with_users();
    let mut alice = Client::login(&server, "alice", "secret", Some("home")).await;
    let mut bob = Client::login(&server, "bob", "hunter2", Some("work")).await;
    alice.presence().await;
    bob.presence().await;
    let (aj, bj) = (alice.full_jid(), bob.full_jid());

    // Alice forges from='bob@localhost/x'; bob must see alice's full JID.
    let token = unique("hello");
    alice
        .send(&format!(
            "<message from='bob@localhost/x' to='{bj}' type='chat' id='m1'><body>{token}</body></message>"
        ))
        .await;
    let m = bob.recv_message().await;
    assert_eq!(m.attr("from"), Some(aj.as_str()), "from not stamped: {m}");
    assert_eq!(m.attr("to"), Some(bj.as_str()), "{m}");
    assert_eq!(m.attr("type"), Some("chat"), "{m}");
    assert_eq!(m.attr("id"), Some("m1"), "{m}");
    assert_eq!(m.child_text("body"), Some(token.as_str()), "{m}");

    // Bob replies without a from.
    let reply = unique("re");
    bob.send(&format!(
        "<message to='{aj}' type='chat' id='m2'><body>{reply}</body></message>"
    ))
    .await;
    let m = alice.recv_message().await;
    assert_eq!(m.attr("from"), Some(bj.as_str()), "{m}");
    assert_eq!(m.child_text("body"), Some(reply.as_str()), "{m}");
}

#[tokio::test]
async fn message_to_nonexistent_local_user_bounces() {
    let server = server_with_users();
    let mut alice = Client::login(&server, "alice", "secret", Some("home")).await;
    alice
        .send("<message to='nobody@localhost' type='chat' id='n1'><body>anyone?</body></message>")
        .await;
    let m = alice.recv_message().await;
    assert_eq!(m.attr("type"), Some("error"), "{m}");
    assert_eq!(m.attr("id"), Some("n1"), "{m}");
    assert_eq!(m.attr("from"), Some("nobody@localhost"), "{m}");
    let (ty, cond) = m.stanza_error().unwrap_or_else(|| panic!("no error: {m}"));
    assert_eq!(cond, "service-unavailable", "{m}");
    assert_eq!(ty, "cancel", "{m}");
}

#[tokio::test]
async fn iq_with_unknown_namespace_is_service_unavailable() {
    let server = server_with_users();
    let mut c = Client::login(&server, "alice", "secret", Some("iq")).await;
    for (ty, to) in [
        ("get", " to='localhost'"),
        ("set", " to='localhost'"),
        ("get", ""),
    ] {
        let id = c.id();
        let r = c
            .request(
                &format!("<iq type='{ty}' id='{id}'{to}><query xmlns='urn:example:unknown'/></iq>"),
                &id,
            )
            .await;
        assert_eq!(r.attr("type"), Some("error"), "{r}");
        let (ety, cond) = r.stanza_error().unwrap_or_else(|| panic!("no error: {r}"));
        assert_eq!(cond, "service-unavailable", "{r}");
        assert_eq!(ety, "cancel", "{r}");
        if !to.is_empty() {
            assert_eq!(r.attr("from"), Some("localhost"), "{r}");
        }
    }
}

#[tokio::test]
async fn iq_result_and_error_to_server_are_not_answered() {
    let server = server_with_users();
    let mut c = Client::login(&server, "alice", "secret", Some("quiet")).await;
    c.send("<iq type='result' id='r1' to='localhost'/>").await;
    c.send(
        "<iq type='error' id='e1' to='localhost'><ping xmlns='urn:xmpp:ping'/>\
         <error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>",
    )
    .await;
    c.send("<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let first = c.recv().await;
    assert_eq!(first.name, "iq", "{first}");
    assert_eq!(
        first.attr("id"),
        Some("p1"),
        "first reply is not the ping's: {first}"
    );
    assert_eq!(first.attr("type"), Some("result"), "{first}");
    c.expect_silence(Duration::from_millis(500)).await;
}

#[tokio::test]
async fn iq_without_id_is_bad_request() {
    let server = server_with_users();
    let mut c = Client::login(&server, "alice", "secret", Some("noid")).await;
    c.send("<iq type='get' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    expect_bad_request(&mut c, None).await;
}

#[tokio::test]
async fn iq_with_bad_type_is_bad_request() {
    let server = server_with_users();
    let mut c = Client::login(&server, "alice", "secret", Some("badtype")).await;
    c.send("<iq type='fetch' id='bt1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    expect_bad_request(&mut c, Some("bt1")).await;
}

#[tokio::test]
async fn ping_the_server() {
    let server = server_with_users();
    let mut c = Client::login(&server, "alice", "secret", Some("ping")).await;
    c.send("<iq type='get' to='localhost' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let r = c.recv().await;
    assert_eq!(r.name, "iq", "{r}");
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    assert_eq!(r.attr("id"), Some("p1"), "{r}");
    assert_eq!(r.attr("from"), Some("localhost"), "{r}");
    assert_eq!(r.attr("to"), Some(c.full_jid().as_str()), "{r}");
}

#[tokio::test]
async fn disco_info_of_the_server() {
    let server = server_with_users();
    let mut c = Client::login(&server, "alice", "secret", Some("disco")).await;
    let r = c
        .request(
            "<iq type='get' to='localhost' id='d1'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
            "d1",
        )
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    assert_eq!(r.attr("from"), Some("localhost"), "{r}");
    let q = r
        .child_ns("query", NS_DISCO_INFO)
        .unwrap_or_else(|| panic!("no disco#info query: {r}"));
    assert!(
        q.children_named("identity")
            .any(|i| i.attr("category") == Some("server") && i.attr("type") == Some("im")),
        "no server/im identity: {r}"
    );
    let features: Vec<&str> = q
        .children_named("feature")
        .filter_map(|f| f.attr("var"))
        .collect();
    for f in [NS_PING, NS_DISCO_INFO] {
        assert!(features.contains(&f), "feature {f} missing: {features:?}");
    }
}
