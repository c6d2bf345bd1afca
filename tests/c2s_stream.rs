//! Integration tests of the c2s stream layer of the real `rookery` binary:
//! stream headers and features, STARTTLS, stream errors for bad headers,
//! restricted and malformed XML, stanza size limits, keep-alives, clean close
//! and shutdown on SIGTERM.

use crate::common;

use std::time::{Duration, Instant};

use common::*;

const STREAM_NS: &str = "xmlns:stream='http://etherx.jabber.org/streams'";

/// Opens a STARTTLS-protected stream without authenticating.
async fn tls_client(server: &Server) -> Client {
    Client::connect_starttls(server.c2s()).await
}

/// Sends `payload` on a fresh TLS stream (pre-auth) and returns the stream
/// error condition the server answers with.
async fn stream_error_for(server: &Server, payload: &str) -> String {
    let mut c = tls_client(server).await;
    c.send(payload).await;
    c.expect_stream_error().await
}

/// The server picks the suite by its own order (AES-128-GCM first), not by
/// the client's (rustls's client offers AES-256-GCM first).
#[tokio::test]
async fn starttls_negotiates_the_servers_preferred_suite() {
    let server = Server::start();
    let c = tls_client(&server).await;
    let tls = c.tls.as_ref().expect("TLS is up");
    assert_eq!(tls.version, "Some(TLSv1_3)");
    assert_eq!(tls.suite, "Some(TLS13_AES_128_GCM_SHA256)");
}

#[tokio::test]
async fn stream_header_and_features_before_and_after_starttls() {
    let server = Server::start();
    let mut c = Client::connect(server.c2s()).await;
    let f = c.open_stream().await;
    let h = c.header.clone().expect("stream header");
    assert_eq!(h.name, "stream");
    assert_eq!(h.ns, NS_STREAMS);
    assert_eq!(h.attr("from"), Some("localhost"), "header: {h}");
    assert_eq!(h.attr("version"), Some("1.0"), "header: {h}");
    let id1 = h.attr("id").unwrap_or_default().to_string();
    assert!(!id1.is_empty(), "stream id missing: {h}");
    assert_eq!(c.stream_content_ns().as_deref(), Some(NS_CLIENT));

    let starttls = f
        .child_ns("starttls", NS_TLS)
        .unwrap_or_else(|| panic!("no starttls feature: {f}"));
    assert!(
        starttls.child("required").is_some(),
        "starttls not marked required: {f}"
    );
    assert!(
        f.child_ns("mechanisms", NS_SASL).is_none(),
        "SASL offered before TLS on a starttls_required listener: {f}"
    );
    assert!(
        f.child_ns("bind", NS_BIND).is_none(),
        "bind offered pre-auth: {f}"
    );

    let f = c.starttls().await;
    let h2 = c.header.clone().expect("stream header after TLS");
    let id2 = h2.attr("id").unwrap_or_default().to_string();
    assert!(
        !id2.is_empty() && id2 != id1,
        "stream id not renewed: {id1} / {id2}"
    );
    assert!(
        f.child_ns("starttls", NS_TLS).is_none(),
        "starttls offered again after TLS: {f}"
    );
    let mechs = c.mechanisms();
    for m in [
        "SCRAM-SHA-256-PLUS",
        "SCRAM-SHA-1-PLUS",
        "SCRAM-SHA-256",
        "SCRAM-SHA-1",
        "PLAIN",
    ] {
        assert!(mechs.iter().any(|x| x == m), "{m} not offered: {mechs:?}");
    }
    let cb = f
        .child_ns("sasl-channel-binding", NS_SASL_CB)
        .unwrap_or_else(|| panic!("no XEP-0440 sasl-channel-binding: {f}"));
    let types: Vec<&str> = cb
        .children_named("channel-binding")
        .filter_map(|e| e.attr("type"))
        .collect();
    assert!(types.contains(&"tls-exporter"), "{types:?}");
    assert!(types.contains(&"tls-server-end-point"), "{types:?}");
    assert!(
        f.child_ns("bind", NS_BIND).is_none(),
        "bind offered pre-auth: {f}"
    );
    let tls = c.tls.as_ref().expect("tls info");
    assert!(
        tls.exporter.iter().any(|b| *b != 0),
        "empty exporter: {tls:?}"
    );

    // A second connection gets a different stream id.
    let mut c2 = Client::connect(server.c2s()).await;
    c2.open_stream().await;
    let other = c2.header.clone().expect("header");
    assert_ne!(other.attr("id"), Some(id1.as_str()), "stream ids repeat");
}

#[tokio::test]
async fn generated_certificate_is_for_localhost() {
    use x509_parser::prelude::*;
    let server = Server::start();
    let c = tls_client(&server).await;
    let der = c.tls.as_ref().unwrap().peer_certs[0].clone();
    let (_, cert) = X509Certificate::from_der(&der).expect("parse server certificate");
    let san_has_localhost = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .any(|n| matches!(n, GeneralName::DNSName(d) if *d == "localhost"))
        })
        .unwrap_or(false);
    assert!(
        san_has_localhost,
        "generated certificate has no DNS SAN localhost: subject {}",
        cert.subject()
    );
}

#[tokio::test]
async fn unknown_host_gets_host_unknown() {
    let server = Server::start();
    let mut c = Client::connect(server.c2s()).await;
    c.send(&format!(
        "<?xml version='1.0'?><stream:stream to='example.org' version='1.0' \
         xmlns='jabber:client' {STREAM_NS}>"
    ))
    .await;
    match c.recv_event().await {
        StreamEvent::Header(_) => {}
        other => panic!("server must send its stream header before the error: {other:?}"),
    }
    assert_eq!(c.expect_stream_error().await, "host-unknown");
}

#[tokio::test]
async fn wrong_stream_namespace_gets_invalid_namespace() {
    let server = Server::start();
    let mut c = Client::connect(server.c2s()).await;
    c.send(
        "<?xml version='1.0'?><stream:stream to='localhost' version='1.0' \
         xmlns='jabber:client' xmlns:stream='http://example.com/not-streams'>",
    )
    .await;
    assert_eq!(c.expect_stream_error().await, "invalid-namespace");
}

#[tokio::test]
async fn wrong_content_namespace_gets_invalid_namespace() {
    // RFC 6120 §4.9.3.10: an unsupported default namespace is invalid-namespace.
    let server = Server::start();
    let mut c = Client::connect(server.c2s()).await;
    c.send(&format!(
        "<?xml version='1.0'?><stream:stream to='localhost' version='1.0' \
         xmlns='urn:example:bogus' {STREAM_NS}>"
    ))
    .await;
    assert_eq!(c.expect_stream_error().await, "invalid-namespace");
}

#[tokio::test]
async fn major_version_2_gets_unsupported_version() {
    let server = Server::start();
    let mut c = Client::connect(server.c2s()).await;
    c.send(&format!(
        "<?xml version='1.0'?><stream:stream to='localhost' version='2.0' \
         xmlns='jabber:client' {STREAM_NS}>"
    ))
    .await;
    assert_eq!(c.expect_stream_error().await, "unsupported-version");
}

#[tokio::test]
async fn dtd_inside_stream_is_restricted_xml() {
    let server = Server::start();
    let cond = stream_error_for(&server, "<!DOCTYPE foo [<!ENTITY x 'y'>]>").await;
    assert_eq!(cond, "restricted-xml");
}

#[tokio::test]
async fn dtd_in_prolog_is_restricted_xml() {
    let server = Server::start();
    let mut c = Client::connect(server.c2s()).await;
    c.send(&format!(
        "<?xml version='1.0'?><!DOCTYPE stream:stream [<!ENTITY x 'y'>]>\
         <stream:stream to='localhost' version='1.0' xmlns='jabber:client' {STREAM_NS}>"
    ))
    .await;
    assert_eq!(c.expect_stream_error().await, "restricted-xml");
}

#[tokio::test]
async fn processing_instruction_is_restricted_xml() {
    let server = Server::start();
    let cond = stream_error_for(&server, "<?foo bar?>").await;
    assert_eq!(cond, "restricted-xml");
}

#[tokio::test]
async fn comment_is_restricted_xml() {
    let server = Server::start();
    let cond = stream_error_for(&server, "<!-- hello -->").await;
    assert_eq!(cond, "restricted-xml");
}

#[tokio::test]
async fn comment_inside_stanza_after_login_is_restricted_xml() {
    let server = server_with_users();
    let mut c = Client::login(&server, "alice", "secret", Some("c")).await;
    c.send("<message to='bob@localhost' type='chat'><body>hi<!-- sneaky --></body></message>")
        .await;
    assert_eq!(c.expect_stream_error().await, "restricted-xml");
}

#[tokio::test]
async fn undefined_entity_reference_is_restricted_xml() {
    let server = server_with_users();
    let mut c = Client::login(&server, "alice", "secret", Some("e")).await;
    c.send("<message to='bob@localhost' type='chat'><body>&foo;</body></message>")
        .await;
    assert_eq!(c.expect_stream_error().await, "restricted-xml");
}

#[tokio::test]
async fn predefined_and_numeric_entities_are_fine() {
    let server = server_with_users();
    let mut c = Client::login(&server, "alice", "secret", Some("ent")).await;
    let me = c.full_jid();
    c.send(&format!(
        "<message to='{me}' type='chat' id='ent1'><body>a&amp;b&lt;c&gt;&quot;&apos;&#233;&#x263A;</body></message>"
    ))
    .await;
    let m = c.recv_message().await;
    assert_eq!(m.child_text("body"), Some("a&b<c>\"'é☺"), "{m}");
}

fn billion_laughs() -> String {
    let mut dtd = String::from("<!DOCTYPE lolz [<!ENTITY lol0 'lol'>");
    for i in 1..10 {
        let prev = format!("&lol{};", i - 1);
        dtd.push_str(&format!("<!ENTITY lol{i} '{}'>", prev.repeat(10)));
    }
    dtd.push_str("]>");
    dtd
}

#[tokio::test]
async fn billion_laughs_is_rejected_fast() {
    let server = server_with_users();
    let mut c = Client::connect(server.c2s()).await;
    c.open_stream().await;
    c.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        .await;
    let p = c.recv().await;
    assert!(p.is("proceed", NS_TLS), "{p}");
    c.tls_handshake().await;
    let started = Instant::now();
    c.send(&format!(
        "<?xml version='1.0'?>{}<stream:stream to='localhost' version='1.0' \
         xmlns='jabber:client' {STREAM_NS}><message><body>&lol9;</body></message>",
        billion_laughs()
    ))
    .await;
    c.timeout = Duration::from_secs(5);
    let cond = c.expect_stream_error_only().await;
    let elapsed = started.elapsed();
    assert!(
        cond == "restricted-xml" || cond == "not-well-formed",
        "unexpected condition <{cond}/>"
    );
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");

    // Same payload inside an established stream.
    let mut c = tls_client(&server).await;
    let started = Instant::now();
    c.send(&format!(
        "{}<message><body>&lol9;</body></message>",
        billion_laughs()
    ))
    .await;
    c.timeout = Duration::from_secs(5);
    let cond = c.expect_stream_error_only().await;
    assert!(
        cond == "restricted-xml" || cond == "not-well-formed",
        "unexpected condition <{cond}/>"
    );
    assert!(started.elapsed() < Duration::from_secs(2));

    // The server is still healthy.
    let mut a = Client::login(&server, "alice", "secret", Some("after")).await;
    let r = a.ping("localhost").await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
}

#[tokio::test]
async fn oversized_stanza_is_policy_violation_and_server_survives() {
    let server = server_with_users();
    let mut c = Client::login(&server, "alice", "secret", Some("big")).await;
    let me = c.full_jid();

    // 32 KiB body: under the 64 KiB limit, must be delivered.
    let body = "b".repeat(32 * 1024);
    c.send(&format!(
        "<message to='{me}' type='chat' id='ok1'><body>{body}</body></message>"
    ))
    .await;
    let m = c.recv_message().await;
    assert_eq!(m.child_text("body").map(str::len), Some(body.len()));

    // 1 MiB body: the server must cut us off with policy-violation.
    let mut big = b"<message to='bob@localhost' type='chat' id='big1'><body>".to_vec();
    big.extend(std::iter::repeat_n(b'A', 1024 * 1024));
    big.extend_from_slice(b"</body></message>");
    c.send_lossy(&big, 16 * 1024, Duration::from_secs(3)).await;
    let cond = c.expect_stream_error_only().await;
    assert_eq!(cond, "policy-violation");
    match c.recv_event().await {
        StreamEvent::End | StreamEvent::Closed(_) => {}
        other => panic!("stream not closed after policy-violation: {other:?}"),
    }

    // A fresh login on the same server still works.
    let mut again = Client::login(&server, "alice", "secret", Some("again")).await;
    let r = again.ping("localhost").await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
}

#[tokio::test]
async fn garbage_before_tls_is_not_well_formed() {
    let server = Server::start();
    let mut c = Client::connect(server.c2s()).await;
    c.open_stream().await;
    c.send("<<this is not xml>>").await;
    assert_eq!(c.expect_stream_error().await, "not-well-formed");
}

#[tokio::test]
async fn mismatched_tags_are_not_well_formed() {
    let server = Server::start();
    let cond = stream_error_for(&server, "<message><body>x</message>").await;
    assert_eq!(cond, "not-well-formed");
}

#[tokio::test]
async fn whitespace_keepalives_are_accepted() {
    let server = server_with_users();
    let mut c = Client::login(&server, "alice", "secret", Some("ka")).await;
    for ws in [" ", "\n", "\r\n\t ", "    \n"] {
        c.send(ws).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = c.ping("localhost").await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    // Whitespace between two stanzas in one write.
    let id = c.id();
    c.send(&format!(
        " \n <iq type='get' to='localhost' id='{id}'><ping xmlns='urn:xmpp:ping'/></iq> \n "
    ))
    .await;
    let r = c.recv().await;
    assert_eq!(r.attr("id"), Some(id.as_str()), "{r}");
    assert_eq!(r.attr("type"), Some("result"), "{r}");
}

#[tokio::test]
async fn clean_close_is_answered_with_stream_close() {
    let server = server_with_users();
    let mut c = Client::login(&server, "alice", "secret", Some("bye")).await;
    c.close().await;
    c.expect_closed().await;

    // Also before authentication.
    let mut c = tls_client(&server).await;
    c.close().await;
    c.expect_closed().await;
}

#[tokio::test]
async fn sigterm_closes_streams_and_exits_zero() {
    let mut server = server_with_users();
    let mut a = Client::login(&server, "alice", "secret", Some("t1")).await;
    let mut b = Client::login(&server, "bob", "hunter2", Some("t2")).await;
    let mut pre = tls_client(&server).await;
    server.send_sigterm();
    for c in [&mut a, &mut b, &mut pre] {
        c.expect_end(&["system-shutdown"]).await;
        let _ = c.try_send_bytes(b"</stream:stream>").await;
    }
    let status = server
        .wait_exit(Duration::from_secs(15))
        .expect("server did not exit after SIGTERM");
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
    for c in [&mut a, &mut b, &mut pre] {
        c.expect_closed().await;
    }
}
