//! XML well-formedness and pre-authentication limits against the real
//! binary (issue 12): every stream must be XML 1.0 with Namespaces to the
//! letter. Characters outside `Char` (raw and as character references, in
//! text, attribute values and names) and the syntax quick-xml lets through
//! end the stream with `<not-well-formed/>` within a second, before and
//! after authentication; the sender's other session and other users go on
//! chatting and nothing reaches the recipient. Depth and attribute limits
//! and the pre-authentication bombs end it with `<policy-violation/>`
//! within a second; `negotiation_timeout` cuts a slow negotiation; s2s and
//! component streams get the same treatment. Legal large stanzas still
//! pass.

use crate::common;

use std::time::{Duration, Instant};

use common::*;

const SECOND: Duration = Duration::from_secs(1);
const STREAM_NS: &str = "xmlns:stream='http://etherx.jabber.org/streams'";

/// The characters outside XML 1.0's `Char`.
const BAD: [u32; 9] = [0x0, 0x1, 0x8, 0xB, 0xC, 0xE, 0x1F, 0xFFFE, 0xFFFF];

/// Messages to `to` carrying the character `code` in each place: raw in the
/// body, an attribute value, an element name and an attribute name, and as
/// decimal and hexadecimal references in the body and an attribute value.
fn char_cases(code: u32, to: &str) -> Vec<(String, Vec<u8>)> {
    let c = char::from_u32(code).expect("a char");
    let m = |label: &str, attrs: &str, inner: &str| {
        (
            format!("U+{code:04X} {label}"),
            format!("<message to='{to}' type='chat'{attrs}>{inner}</message>").into_bytes(),
        )
    };
    vec![
        m("raw in body", "", &format!("<body>x{c}y</body>")),
        m(
            "raw in attribute value",
            &format!(" id='x{c}y'"),
            "<body>hi</body>",
        ),
        m("raw in element name", "", &format!("<bo{c}dy>hi</bo{c}dy>")),
        m(
            "raw in attribute name",
            &format!(" i{c}d='1'"),
            "<body>hi</body>",
        ),
        m(
            "decimal reference in body",
            "",
            &format!("<body>x&#{code};y</body>"),
        ),
        m(
            "hex reference in body",
            "",
            &format!("<body>x&#x{code:X};y</body>"),
        ),
        m(
            "decimal reference in attribute",
            &format!(" id='&#{code};'"),
            "<body>hi</body>",
        ),
        m(
            "hex reference in attribute",
            &format!(" id='&#x{code:x};'"),
            "<body>hi</body>",
        ),
    ]
}

/// Not well-formed syntax that quick-xml alone lets through.
fn syntax_cases(to: &str) -> Vec<(String, Vec<u8>)> {
    let mut cases: Vec<(String, Vec<u8>)> = [
        ("'<' in an attribute value", format!("<message to='{to}' x='<![CDATA[y]]>'><body>hi</body></message>")),
        ("attributes without whitespace", format!("<message to='{to}' a='1'b='2'><body>hi</body></message>")),
        ("invalid element name", format!("<message to='{to}'><1body>hi</1body></message>")),
        ("invalid attribute name", format!("<message to='{to}' a:b:c='1'><body>hi</body></message>")),
        ("unbound prefix", format!("<message to='{to}' p:x='1'><body>hi</body></message>")),
        (
            "duplicate attribute after namespace resolution",
            format!("<message to='{to}' xmlns:a='urn:x' xmlns:b='urn:x' a:x='1' b:x='2'><body>hi</body></message>"),
        ),
        ("xmlns:xml misuse", format!("<message to='{to}' xmlns:xml='urn:x'><body>hi</body></message>")),
        ("xmlns:xmlns", format!("<message to='{to}' xmlns:xmlns='urn:x'><body>hi</body></message>")),
        ("']]>' in text", format!("<message to='{to}'><body>a]]>b</body></message>")),
        ("malformed character reference", format!("<message to='{to}'><body>&#x+41;</body></message>")),
    ]
    .into_iter()
    .map(|(l, s)| (l.to_string(), s.into_bytes()))
    .collect();
    // é in Latin-1: a lone 0xE9 byte.
    let mut latin1 = format!("<message to='{to}'><body>caf").into_bytes();
    latin1.push(0xE9);
    latin1.extend_from_slice(b"</body></message>");
    cases.push(("invalid UTF-8".into(), latin1));
    cases
}

/// Sends `stanza`, and asserts the stream ends with `<condition/>` (and
/// `</stream:stream>` or the connection's end) within a second.
async fn expect_cut(c: &mut Client, stanza: &[u8], condition: &str, label: &str) {
    let started = Instant::now();
    let _ = c.try_send_bytes(stanza).await;
    c.timeout = Duration::from_secs(5);
    let got = c.expect_stream_error_only().await;
    let took = started.elapsed();
    assert_eq!(got, condition, "{label}");
    assert!(took < SECOND, "{label}: <{got}/> after {took:?}");
    match c.recv_event().await {
        StreamEvent::End | StreamEvent::Closed(_) => {}
        other => panic!("{label}: stream not closed after <{got}/>: {other:?}"),
    }
}

#[tokio::test]
async fn malformed_input_before_authentication_is_not_well_formed() {
    let server = Server::start();
    let mut cases: Vec<(String, Vec<u8>)> = BAD
        .iter()
        .flat_map(|&code| char_cases(code, "bob@localhost"))
        .collect();
    cases.extend(syntax_cases("bob@localhost"));
    // In the stream header itself.
    cases.push((
        "U+0001 in the stream header".into(),
        format!(
            "<stream:stream to='local\u{1}host' version='1.0' xmlns='jabber:client' {STREAM_NS}>"
        )
        .into_bytes(),
    ));
    for (i, (label, stanza)) in cases.iter().enumerate() {
        let mut c = Client::connect(server.c2s()).await;
        if label.contains("stream header") {
            expect_cut(&mut c, stanza, "not-well-formed", label).await;
            continue;
        }
        c.open_stream().await;
        // A few over TLS too (the usual pre-authentication state).
        if i % 8 == 0 {
            c.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
                .await;
            let p = c.recv().await;
            assert!(p.is("proceed", NS_TLS), "{p}");
            c.tls_handshake().await;
            c.open_stream().await;
        }
        expect_cut(&mut c, stanza, "not-well-formed", label).await;
    }
}

/// Alice's session `res` sends `stanza` to Bob and is cut with
/// `condition`; Alice's other session and Bob go on chatting, and Bob gets
/// nothing but their chat.
async fn post_auth_case(
    server: &Server,
    other: &mut Client,
    bob: &mut Client,
    n: usize,
    label: &str,
    stanza: &[u8],
    condition: &str,
) {
    let mut a = Client::login(server, "alice", "secret", Some(&format!("victim{n}"))).await;
    expect_cut(&mut a, stanza, condition, label).await;
    // The sender's other session still chats with Bob, both ways, and
    // what Bob gets next is that chat: the refused stanza never reached him.
    let marker = format!("still here {n}");
    other
        .send(&format!(
            "<message to='bob@localhost' type='chat' id='m{n}'><body>{marker}</body></message>"
        ))
        .await;
    let m = bob.recv_message().await;
    assert_eq!(
        m.child_text("body"),
        Some(marker.as_str()),
        "{label}: Bob got {m}"
    );
    let reply = format!("reply {n}");
    bob.send(&format!(
        "<message to='{}' type='chat' id='r{n}'><body>{reply}</body></message>",
        other.full_jid()
    ))
    .await;
    let m = other.recv_message().await;
    assert_eq!(m.child_text("body"), Some(reply.as_str()), "{label}: {m}");
}

#[tokio::test]
async fn malformed_input_after_authentication_is_not_well_formed() {
    let server = server_with_users();
    let mut other = Client::login(&server, "alice", "secret", Some("other")).await;
    let mut bob = Client::login(&server, "bob", "hunter2", Some("pc")).await;
    other.presence().await;
    bob.presence().await;
    // Every place for two characters; raw in the body for the others.
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    for code in BAD {
        let all = char_cases(code, "bob@localhost");
        if code == 0x1 || code == 0xFFFE {
            cases.extend(all);
        } else {
            cases.extend(all.into_iter().take(1));
        }
    }
    cases.extend(syntax_cases("bob@localhost"));
    for (n, (label, stanza)) in cases.iter().enumerate() {
        post_auth_case(
            &server,
            &mut other,
            &mut bob,
            n,
            label,
            stanza,
            "not-well-formed",
        )
        .await;
    }
}

#[tokio::test]
async fn depth_and_attribute_limits_after_authentication_are_policy_violations() {
    let server = server_with_users();
    let mut other = Client::login(&server, "alice", "secret", Some("other")).await;
    let mut bob = Client::login(&server, "bob", "hunter2", Some("pc")).await;
    other.presence().await;
    bob.presence().await;
    let deep = format!(
        "<message to='bob@localhost' type='chat'><body>deep</body>{}{}</message>",
        "<x xmlns='urn:x'>".repeat(100),
        "</x>".repeat(100)
    );
    let attrs: String = (0..200).map(|i| format!(" a{i}='x'")).collect();
    let many =
        format!("<message to='bob@localhost' type='chat'{attrs}><body>many</body></message>");
    let decls: String = (0..200).map(|i| format!(" xmlns:p{i}='urn:{i}'")).collect();
    let namespaces =
        format!("<message to='bob@localhost' type='chat'><x{decls}/><body>ns</body></message>");
    for (n, (label, stanza)) in [
        ("100 nested elements", deep),
        ("200 attributes", many),
        ("200 namespace declarations", namespaces),
    ]
    .iter()
    .enumerate()
    {
        post_auth_case(
            &server,
            &mut other,
            &mut bob,
            n,
            label,
            stanza.as_bytes(),
            "policy-violation",
        )
        .await;
    }
}

#[tokio::test]
async fn large_legal_stanzas_are_still_delivered() {
    let server = server_with_users();
    let mut alice = Client::login(&server, "alice", "secret", Some("pc")).await;
    let mut bob = Client::login(&server, "bob", "hunter2", Some("pc")).await;
    alice.presence().await;
    bob.presence().await;
    // Over the pre-authentication limit, under max_stanza_size (64 KiB
    // here), with 60 levels, 90 attributes, namespaces, references, CDATA
    // and every kind of legal character.
    let text = "é€😀\u{FFFD}\u{E000}\u{10FFFF}\t &lt;&amp;&#x1F600;&#9;".repeat(800);
    let nest = 57;
    let attrs: String = (0..90)
        .map(|i| format!(" a{i}='v&#x{:X};'", 0x41 + i % 26))
        .collect();
    let stanza = format!(
        "<message to='bob@localhost' type='chat' id='big'{attrs}><body>{text}<![CDATA[<cdata & more>]]></body>\
         <data xmlns='urn:example:deep' xmlns:e='urn:example:e' e:x='1'>{}<e:leaf/>{}</data></message>",
        "<l>".repeat(nest),
        "</l>".repeat(nest)
    );
    assert!(
        stanza.len() > 20_000 && stanza.len() < 60_000,
        "{}",
        stanza.len()
    );
    alice.send(&stanza).await;
    let m = bob.recv_message().await;
    assert_eq!(m.attr("id"), Some("big"));
    let body = m.child_text("body").expect("body");
    assert!(
        body.starts_with("é€😀\u{FFFD}\u{E000}\u{10FFFF}\t <&😀\t"),
        "{}",
        &body[..40]
    );
    assert!(body.ends_with("<cdata & more>"));
    assert_eq!(m.attr("a1"), Some("vB"));
    // The nested payload arrived whole.
    let mut depth = 0;
    let mut e = m.child("data").expect("data");
    while let Some(l) = e.child("l") {
        depth += 1;
        e = l;
    }
    assert_eq!(depth, nest);
    assert!(e.child("leaf").is_some(), "{e}");
}

/// Sends a bomb on a fresh, not yet authenticated TLS stream: it must be
/// cut with `<policy-violation/>` within a second.
async fn bomb(server: &Server, label: &str, bytes: &[u8]) {
    let mut c = Client::connect_starttls(server.c2s()).await;
    let started = Instant::now();
    // Written in pieces: the server stops reading long before the end.
    c.send_lossy(bytes, 16 * 1024, Duration::from_millis(500))
        .await;
    c.timeout = Duration::from_secs(5);
    let cond = c.expect_stream_error_only().await;
    let took = started.elapsed();
    assert_eq!(cond, "policy-violation", "{label}");
    assert!(took < SECOND, "{label}: cut after {took:?}");
}

#[tokio::test]
async fn pre_authentication_bombs_are_cut_within_a_second() {
    let server = Server::start_with(Config {
        // No stanza is too large after authentication here: only the
        // pre-authentication limit and the shape limits can cut.
        max_stanza_size: 64 * 1024 * 1024,
        ..Config::default()
    });
    let attribute = format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' a='{}'/>",
        "x".repeat(10_000_000)
    );
    bomb(&server, "10 MB attribute", attribute.as_bytes()).await;
    let nested = "<a>".repeat(100_000);
    bomb(&server, "100,000 nested elements", nested.as_bytes()).await;
    let attrs: String = (0..100_000).map(|i| format!(" a{i}='x'")).collect();
    bomb(
        &server,
        "100,000 attributes",
        format!("<auth{attrs}/>").as_bytes(),
    )
    .await;
    let decls: String = (0..50_000)
        .map(|i| format!(" xmlns:p{i}='urn:{i}'"))
        .collect();
    bomb(
        &server,
        "50,000 namespace declarations",
        format!("<auth{decls}/>").as_bytes(),
    )
    .await;
    let siblings = format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{}</auth>",
        "<a/>".repeat(1_000_000)
    );
    bomb(&server, "a million sibling elements", siblings.as_bytes()).await;

    // The server is fine afterwards.
    server.register("alice", "localhost", "secret");
    let mut a = Client::login(&server, "alice", "secret", Some("after")).await;
    let r = a.ping("localhost").await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
}

#[tokio::test]
async fn pre_auth_limit_is_per_listener_and_lifted_after_authentication() {
    let server = Server::start_with(Config {
        extra_listeners: vec![
            "port: 0\nip: 127.0.0.1\nmodule: ejabberd_c2s\ntls: true\npre_auth_max_stanza_size: 1000".into(),
        ],
        ..Config::default()
    });
    server.register("alice", "localhost", "secret");
    // 3000 bytes before authentication: fine under the default 8 KiB,
    // refused where the listener allows 1000.
    let padded = format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='NONE'>{}</auth>",
        "A".repeat(3000)
    );
    let mut c = Client::connect_starttls(server.c2s()).await;
    c.send(&padded).await;
    let r = c.recv().await;
    assert!(
        r.is("failure", NS_SASL) && r.child("invalid-mechanism").is_some(),
        "{r}"
    );
    let small = server.addr("tls", 1);
    let mut c = Client::connect_tls(small).await;
    expect_cut(
        &mut c,
        padded.as_bytes(),
        "policy-violation",
        "3000 bytes on a 1000-byte listener",
    )
    .await;
    // After authentication on that listener, max_stanza_size holds.
    let mut c = Client::connect_tls(small).await;
    c.login_scram("alice", "secret").await;
    c.bind(Some("big")).await.expect("bind");
    let me = c.full_jid();
    let body = "b".repeat(20_000);
    c.send(&format!(
        "<message to='{me}' type='chat'><body>{body}</body></message>"
    ))
    .await;
    let m = c.recv_message().await;
    assert_eq!(m.child_text("body").map(str::len), Some(body.len()));
}

#[tokio::test]
async fn negotiation_timeout_cuts_a_slow_negotiation() {
    let server = Server::start_with(Config {
        extra_yaml: "negotiation_timeout: 2\n".into(),
        ..Config::default()
    });
    server.register("alice", "localhost", "secret");
    // A client that keeps the connection busy with whitespace but never
    // authenticates is cut at the deadline, not at each read's timeout.
    let mut c = Client::connect_starttls(server.c2s()).await;
    let started = Instant::now();
    c.timeout = Duration::from_millis(400);
    let cond = loop {
        let _ = c.try_send_bytes(b" ").await;
        match c.recv_event_within(Duration::from_millis(400)).await {
            StreamEvent::Timeout(_) => {}
            StreamEvent::Stanza(e) if e.is_stream_error() => {
                break e.condition_in(NS_STREAM_ERRORS).unwrap_or("").to_string()
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(10), "not cut");
    };
    let took = started.elapsed();
    assert_eq!(cond, "connection-timeout");
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(4),
        "{took:?}"
    );
    // A normal login is well within it.
    let mut a = Client::login(&server, "alice", "secret", Some("quick")).await;
    let r = a.ping("localhost").await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
}

fn listener_addr(server: &Server, module: &str) -> std::net::SocketAddr {
    server
        .listeners
        .iter()
        .find(|l| l.module == module)
        .unwrap_or_else(|| panic!("no {module} listener"))
        .addr
}

/// An unauthenticated s2s stream (header answered with ours and features).
async fn s2s_stream(server: &Server) -> Client {
    let mut c = Client::connect(listener_addr(server, "s2s")).await;
    c.send(&format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:server' {STREAM_NS} \
         xmlns:db='jabber:server:dialback' from='evil.example' to='localhost' version='1.0'>"
    ))
    .await;
    c.read_header_and_features().await;
    c
}

#[tokio::test]
async fn s2s_and_component_streams_get_the_same_treatment() {
    let server = Server::start_with(Config {
        extra_listeners: vec![
            "port: 0\nip: 127.0.0.1\nmodule: ejabberd_s2s_in".into(),
            "port: 0\nip: 127.0.0.1\nmodule: ejabberd_service\nhosts:\n  gw.localhost:\n    password: s3cret".into(),
        ],
        ..Config::default()
    });
    // s2s, before the peer is authenticated.
    for (label, stanza) in char_cases(0xFFFE, "alice@localhost")
        .into_iter()
        .chain(char_cases(0x1, "alice@localhost"))
        .chain(syntax_cases("alice@localhost"))
    {
        let mut c = s2s_stream(&server).await;
        expect_cut(&mut c, &stanza, "not-well-formed", &format!("s2s: {label}")).await;
    }
    let mut c = s2s_stream(&server).await;
    let key = "k".repeat(100_000);
    let started = Instant::now();
    c.send_lossy(
        format!("<db:result from='evil.example' to='localhost'>{key}</db:result>").as_bytes(),
        16 * 1024,
        Duration::from_millis(500),
    )
    .await;
    assert_eq!(c.expect_stream_error_only().await, "policy-violation");
    assert!(started.elapsed() < SECOND);
    let mut c = s2s_stream(&server).await;
    let deep = format!(
        "<db:verify from='evil.example' to='localhost' id='x'>{}",
        "<a>".repeat(1000)
    );
    expect_cut(&mut c, deep.as_bytes(), "policy-violation", "s2s: nesting").await;

    // Components, before and in the handshake: a header comes first, then
    // the error.
    let service = listener_addr(&server, "service");
    let header =
        format!("<stream:stream xmlns='jabber:component:accept' {STREAM_NS} to='gw.localhost'>");
    let mut c = Client::connect(service).await;
    expect_cut(
        &mut c,
        header
            .replace("gw.localhost", "gw.local\u{FFFF}host")
            .as_bytes(),
        "not-well-formed",
        "component: bad header",
    )
    .await;
    assert!(c.header.is_some(), "no stream header before the error");
    for (label, stanza) in [
        ("raw U+0001", "<handshake>\u{1}</handshake>".to_string()),
        (
            "reference to U+FFFF",
            "<handshake>&#xFFFF;</handshake>".to_string(),
        ),
        (
            "attributes without whitespace",
            "<handshake a='1'b='2'>x</handshake>".to_string(),
        ),
        (
            "oversized handshake",
            format!("<handshake>{}</handshake>", "0".repeat(20_000)),
        ),
    ] {
        let mut c = Client::connect(service).await;
        c.send(&header).await;
        assert!(
            matches!(c.recv_event().await, StreamEvent::Header(_)),
            "{label}"
        );
        let want = if label.starts_with("oversized") {
            "policy-violation"
        } else {
            "not-well-formed"
        };
        expect_cut(
            &mut c,
            stanza.as_bytes(),
            want,
            &format!("component: {label}"),
        )
        .await;
    }
    // After the handshake, a component's larger stanzas are fine, and
    // malformed ones still are not.
    let mut comp = common::component::connect(&server, "gw.localhost", "s3cret").await;
    server.register("alice", "localhost", "secret");
    let mut alice = Client::login(&server, "alice", "secret", Some("pc")).await;
    let body = "c".repeat(20_000);
    comp.send(&format!(
        "<message from='bot@gw.localhost' to='{}' type='chat'><body>{body}</body></message>",
        alice.full_jid()
    ))
    .await;
    let m = alice.recv_message().await;
    assert_eq!(m.child_text("body").map(str::len), Some(body.len()));
    expect_cut(
        &mut comp,
        format!(
            "<message from='bot@gw.localhost' to='{}'><body>\u{1}</body></message>",
            alice.full_jid()
        )
        .as_bytes(),
        "not-well-formed",
        "component after the handshake",
    )
    .await;
    alice.expect_silence(Duration::from_millis(300)).await;
}
