//! Integration tests of SASL authentication against the real `rookery`
//! binary: every offered mechanism (SCRAM-SHA-1/-256, their -PLUS variants
//! with tls-exporter and tls-server-end-point, PLAIN), failures and retries,
//! authzid handling, SASL protocol errors, TLS requirements and the
//! direct-TLS listener.

use crate::common;

use common::*;

/// After a successful SASL exchange: restart, check features, bind.
async fn finish_login(c: &mut Client, user: &str, resource: &str) {
    let f = c.open_stream().await;
    assert!(
        f.child_ns("mechanisms", NS_SASL).is_none(),
        "SASL offered again after authentication: {f}"
    );
    assert!(f.child_ns("bind", NS_BIND).is_some(), "no bind: {f}");
    let session = f
        .child_ns("session", NS_SESSION)
        .unwrap_or_else(|| panic!("no legacy session feature: {f}"));
    assert!(
        session.child("optional").is_some(),
        "session not optional: {f}"
    );
    let jid = c.bind(Some(resource)).await.expect("bind");
    assert_eq!(jid, format!("{user}@localhost/{resource}"));
    let r = c.ping("localhost").await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
}

#[tokio::test]
async fn scram_sha_256_login() {
    let server = server_with_users();
    let mut c = Client::connect_starttls(server.c2s()).await;
    c.auth_scram("SCRAM-SHA-256", "alice", "secret")
        .await
        .expect("SCRAM-SHA-256");
    finish_login(&mut c, "alice", "s256").await;
}

#[tokio::test]
async fn scram_sha_1_login() {
    let server = server_with_users();
    let mut c = Client::connect_starttls(server.c2s()).await;
    c.auth_scram("SCRAM-SHA-1", "alice", "secret")
        .await
        .expect("SCRAM-SHA-1");
    finish_login(&mut c, "alice", "s1").await;
}

#[tokio::test]
async fn plain_login() {
    let server = server_with_users();
    let mut c = Client::connect_starttls(server.c2s()).await;
    c.auth_plain("bob", "hunter2").await.expect("PLAIN");
    finish_login(&mut c, "bob", "plain").await;
}

#[tokio::test]
async fn scram_sha_256_plus_tls_exporter_login() {
    let server = server_with_users();
    let mut c = Client::connect_starttls(server.c2s()).await;
    c.auth_scram_plus(ScramHash::Sha256, "tls-exporter", "alice", "secret")
        .await
        .expect("SCRAM-SHA-256-PLUS tls-exporter");
    finish_login(&mut c, "alice", "plus256").await;
}

#[tokio::test]
async fn scram_sha_1_plus_tls_exporter_login() {
    let server = server_with_users();
    let mut c = Client::connect_starttls(server.c2s()).await;
    c.auth_scram_plus(ScramHash::Sha1, "tls-exporter", "alice", "secret")
        .await
        .expect("SCRAM-SHA-1-PLUS tls-exporter");
    finish_login(&mut c, "alice", "plus1").await;
}

#[tokio::test]
async fn scram_sha_256_plus_tls_server_end_point_login() {
    let server = server_with_users();
    let mut c = Client::connect_starttls(server.c2s()).await;
    c.auth_scram_plus(ScramHash::Sha256, "tls-server-end-point", "alice", "secret")
        .await
        .expect("SCRAM-SHA-256-PLUS tls-server-end-point");
    finish_login(&mut c, "alice", "tsep").await;
}

#[tokio::test]
async fn scram_plus_with_wrong_binding_data_fails() {
    let server = server_with_users();
    let mut c = Client::connect_starttls(server.c2s()).await;
    let mut data = c.channel_binding("tls-exporter");
    data[0] ^= 0xff;
    let sc = ScramClient::new(
        ScramHash::Sha256,
        "alice",
        "secret",
        Gs2Binding::Bind {
            cb_type: "tls-exporter".into(),
            data,
        },
        None,
    );
    assert_eq!(c.auth_scram_custom(sc).await, Err("not-authorized".into()));
    // The stream survives: a correct attempt still works.
    c.auth_scram_plus(ScramHash::Sha256, "tls-exporter", "alice", "secret")
        .await
        .expect("retry");
    finish_login(&mut c, "alice", "retry").await;
}

#[tokio::test]
async fn scram_y_flag_while_plus_offered_is_rejected() {
    // RFC 5802 §6: gs2 flag "y" while the server advertises -PLUS indicates
    // a downgrade attack; the server MUST fail the authentication.
    let server = server_with_users();
    let mut c = Client::connect_starttls(server.c2s()).await;
    let sc = ScramClient::new(
        ScramHash::Sha256,
        "alice",
        "secret",
        Gs2Binding::ClientOnly,
        None,
    );
    let r = c.auth_scram_custom(sc).await;
    assert!(r.is_err(), "downgraded SCRAM accepted");
}

#[tokio::test]
async fn hand_rolled_scram_without_binding_login() {
    // Cross-checks the server with a second SCRAM implementation, with a
    // user name that needs no escaping and an authzid-free gs2 header.
    let server = server_with_users();
    let mut c = Client::connect_starttls(server.c2s()).await;
    let sc = ScramClient::new(ScramHash::Sha256, "bob", "hunter2", Gs2Binding::No, None);
    c.auth_scram_custom(sc).await.expect("SCRAM-SHA-256");
    finish_login(&mut c, "bob", "hand").await;
}

#[tokio::test]
async fn wrong_password_is_not_authorized_and_stream_survives() {
    let server = server_with_users();
    let mut c = Client::connect_starttls(server.c2s()).await;
    assert_eq!(
        c.auth_scram("SCRAM-SHA-256", "alice", "wrong").await,
        Err("not-authorized".into())
    );
    assert_eq!(
        c.auth_plain("alice", "wrong").await,
        Err("not-authorized".into())
    );
    assert_eq!(
        c.auth_scram("SCRAM-SHA-1", "alice", "wrong").await,
        Err("not-authorized".into())
    );
    c.auth_scram("SCRAM-SHA-256", "alice", "secret")
        .await
        .expect("retry with the right password");
    finish_login(&mut c, "alice", "second-try").await;
}

#[tokio::test]
async fn unknown_user_is_not_authorized() {
    let server = server_with_users();
    let mut c = Client::connect_starttls(server.c2s()).await;
    assert_eq!(
        c.auth_scram("SCRAM-SHA-256", "nobody", "secret").await,
        Err("not-authorized".into())
    );
    assert_eq!(
        c.auth_plain("nobody", "secret").await,
        Err("not-authorized".into())
    );
}

#[tokio::test]
async fn plain_with_foreign_authzid_is_refused() {
    let server = server_with_users();
    let mut c = Client::connect_starttls(server.c2s()).await;
    let r = c.auth_plain_authz("bob@localhost", "alice", "secret").await;
    match r {
        Err(cond) => assert!(
            cond == "invalid-authzid" || cond == "not-authorized",
            "unexpected condition <{cond}/>"
        ),
        Ok(()) => panic!("alice was allowed to authorize as bob"),
    }
    // No session: a stanza now is still pre-authentication.
    c.send("<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
        .await;
    assert_eq!(c.expect_stream_error().await, "not-authorized");
}

#[tokio::test]
async fn scram_with_foreign_authzid_is_refused() {
    let server = server_with_users();
    let mut c = Client::connect_starttls(server.c2s()).await;
    let sc = ScramClient::new(
        ScramHash::Sha256,
        "alice",
        "secret",
        Gs2Binding::No,
        Some("bob@localhost"),
    );
    match c.auth_scram_custom(sc).await {
        Err(cond) => assert!(
            cond == "invalid-authzid" || cond == "not-authorized",
            "unexpected condition <{cond}/>"
        ),
        Ok(()) => panic!("alice was allowed to authorize as bob"),
    }
}

#[tokio::test]
async fn unknown_mechanism_is_invalid_mechanism() {
    let server = server_with_users();
    let mut c = Client::connect_starttls(server.c2s()).await;
    c.send_auth("X-ROOKERY-NONSENSE", Some(b"abc")).await;
    assert_eq!(
        c.sasl_reply().await,
        SaslReply::Failure("invalid-mechanism".into())
    );
    c.auth_plain("alice", "secret").await.expect("retry");
    finish_login(&mut c, "alice", "after-invalid").await;
}

#[tokio::test]
async fn bad_base64_is_incorrect_encoding() {
    let server = server_with_users();
    let mut c = Client::connect_starttls(server.c2s()).await;
    c.send(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>!!!not*base64!!!</auth>",
    )
    .await;
    assert_eq!(
        c.sasl_reply().await,
        SaslReply::Failure("incorrect-encoding".into())
    );
    // Also inside a SCRAM exchange (bad <response/>).
    let sc = ScramClient::new(ScramHash::Sha256, "alice", "secret", Gs2Binding::No, None);
    c.send_auth("SCRAM-SHA-256", Some(&sc.client_first())).await;
    assert!(matches!(c.sasl_reply().await, SaslReply::Challenge(_)));
    c.send("<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>%%%</response>")
        .await;
    assert_eq!(
        c.sasl_reply().await,
        SaslReply::Failure("incorrect-encoding".into())
    );
}

#[tokio::test]
async fn malformed_sasl_messages_fail() {
    let server = server_with_users();
    let mut c = Client::connect_starttls(server.c2s()).await;
    // PLAIN without NUL separators.
    c.send_auth("PLAIN", Some(b"alicesecret")).await;
    match c.sasl_reply().await {
        SaslReply::Failure(cond) => assert!(
            cond == "malformed-request" || cond == "not-authorized",
            "<{cond}/>"
        ),
        other => panic!("malformed PLAIN: {other:?}"),
    }
    // SCRAM client-first that is not SCRAM.
    c.send_auth("SCRAM-SHA-256", Some(b"hello world")).await;
    match c.sasl_reply().await {
        SaslReply::Failure(cond) => assert!(
            cond == "malformed-request" || cond == "not-authorized",
            "<{cond}/>"
        ),
        other => panic!("malformed SCRAM: {other:?}"),
    }
    c.auth_scram("SCRAM-SHA-256", "alice", "secret")
        .await
        .expect("retry");
}

#[tokio::test]
async fn abort_is_answered_with_aborted() {
    let server = server_with_users();
    let mut c = Client::connect_starttls(server.c2s()).await;
    let sc = ScramClient::new(ScramHash::Sha256, "alice", "secret", Gs2Binding::No, None);
    c.send_auth("SCRAM-SHA-256", Some(&sc.client_first())).await;
    match c.sasl_reply().await {
        SaslReply::Challenge(_) => {}
        other => panic!("expected a SCRAM challenge, got {other:?}"),
    }
    c.send("<abort xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
        .await;
    assert_eq!(c.sasl_reply().await, SaslReply::Failure("aborted".into()));
    c.auth_scram("SCRAM-SHA-256", "alice", "secret")
        .await
        .expect("login after abort");
    finish_login(&mut c, "alice", "after-abort").await;
}

#[tokio::test]
async fn auth_before_starttls_is_refused() {
    let server = server_with_users();
    let mut c = Client::connect(server.c2s()).await;
    c.open_stream().await;
    c.send_auth("PLAIN", Some(b"\0alice\0secret")).await;
    match c.sasl_reply().await {
        SaslReply::Failure(cond) => assert_eq!(cond, "encryption-required"),
        SaslReply::StreamError(_) => {}
        SaslReply::Success(_) => {
            panic!("PLAIN accepted over plaintext on a starttls_required port")
        }
        other => panic!("unexpected reply: {other:?}"),
    }
}

#[tokio::test]
async fn direct_tls_listener_login() {
    let server = server_with_users();
    let mut c = Client::connect_tls(server.c2s_tls()).await;
    let f = c.features.clone().expect("features");
    assert!(
        f.child_ns("starttls", NS_TLS).is_none(),
        "starttls offered on a direct TLS stream: {f}"
    );
    let mechs = c.mechanisms();
    assert!(mechs.iter().any(|m| m == "SCRAM-SHA-256-PLUS"), "{mechs:?}");
    assert!(mechs.iter().any(|m| m == "PLAIN"), "{mechs:?}");
    c.auth_scram_plus(ScramHash::Sha256, "tls-exporter", "alice", "secret")
        .await
        .expect("SCRAM-SHA-256-PLUS over direct TLS");
    finish_login(&mut c, "alice", "direct").await;

    let mut c = Client::connect_tls(server.c2s_tls()).await;
    c.auth_scram("SCRAM-SHA-256", "bob", "hunter2")
        .await
        .expect("SCRAM-SHA-256 over direct TLS");
    finish_login(&mut c, "bob", "direct").await;
}

#[tokio::test]
async fn optional_starttls_listener_hides_plain_before_tls() {
    let server = Server::start_with(Config {
        starttls_required: false,
        ..Config::default()
    });
    server.register("alice", "localhost", "secret");

    let mut c = Client::connect(server.c2s()).await;
    let f = c.open_stream().await;
    let st = f
        .child_ns("starttls", NS_TLS)
        .unwrap_or_else(|| panic!("no starttls: {f}"));
    assert!(
        st.child("required").is_none(),
        "starttls marked required: {f}"
    );
    let mechs = c.mechanisms();
    assert!(
        !mechs.is_empty(),
        "no mechanisms before TLS on optional listener: {f}"
    );
    assert!(
        !mechs.iter().any(|m| m == "PLAIN"),
        "PLAIN offered without TLS: {mechs:?}"
    );
    assert!(
        !mechs.iter().any(|m| m.ends_with("-PLUS")),
        "-PLUS offered without TLS: {mechs:?}"
    );
    assert!(mechs.iter().any(|m| m == "SCRAM-SHA-256"), "{mechs:?}");
    // PLAIN is refused in the clear even if the client insists.
    assert!(c.auth_plain("alice", "secret").await.is_err());
    // SCRAM in the clear works on this listener.
    c.auth_scram("SCRAM-SHA-256", "alice", "secret")
        .await
        .expect("SCRAM-SHA-256 without TLS");
    finish_login(&mut c, "alice", "clear").await;

    // STARTTLS still works there and then offers PLAIN and -PLUS.
    let c = Client::connect_starttls(server.c2s()).await;
    let mechs = c.mechanisms();
    assert!(mechs.iter().any(|m| m == "PLAIN"), "{mechs:?}");
    assert!(mechs.iter().any(|m| m == "SCRAM-SHA-256-PLUS"), "{mechs:?}");
}
