//! XEP-0388 SASL2, XEP-0386 Bind 2 and XEP-0474 SSDP against the real
//! binary: the `<authentication/>` feature beside RFC 6120 SASL, every
//! mechanism (SCRAM-SHA-1/-256, their -PLUS variants with tls-exporter and
//! tls-server-end-point, PLAIN), the success with the authorization
//! identifier and SCRAM's server-final as additional data, a wrong
//! password, an unknown mechanism, `<abort/>`, the stream features after a
//! success without Bind 2; Bind 2 with the client's tag, inline carbons, CSI and
//! stream management, and a XEP-0198 resumption inline in SASL2 that
//! returns the unacknowledged messages exactly once; the SSDP `h` in the
//! server-first message matches the advertised lists and a stripped list
//! is detected; the XEP-0480 SCRAM-SHA-256 upgrade task of an account that
//! has SCRAM-SHA-1 credentials only, and the stream header's `from`
//! tailoring the mechanisms.
//!
//! slixmpp (the interop venv's 1.17.0) has no XEP-0388 support; the
//! independent client for SASL2, Bind 2 and FAST is xmpp.js
//! (`interop_xmppjs.rs`). The XEP-0474 example exchange is checked byte for
//! byte by the unit test `auth::scram::tests::xep_0474_full_example`.

use crate::common;

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use common::im::{self, bare, chat, sync, ALICE, BOB};
use common::*;

const NS_SASL2: &str = "urn:xmpp:sasl:2";
const NS_BIND2: &str = "urn:xmpp:bind:0";
const NS_SM: &str = "urn:xmpp:sm:3";
const NS_CARBONS: &str = "urn:xmpp:carbons:2";
const NS_SASL_CB: &str = "urn:xmpp:sasl-cb:0";
pub(crate) const UA: &str = "d4565fa7-4d72-4749-b3d3-740edbf87770";

/// The `<authentication/>` feature of the last features.
pub(crate) fn sasl2_feature(c: &Client) -> Element {
    let f = c.features.clone().expect("features");
    f.child_ns("authentication", NS_SASL2)
        .unwrap_or_else(|| panic!("no SASL2 <authentication/> feature: {f}"))
        .clone()
}

fn sasl2_mechanisms(c: &Client) -> Vec<String> {
    sasl2_feature(c)
        .children_named("mechanism")
        .map(|m| m.text.trim().to_string())
        .collect()
}

fn cb_types(c: &Client) -> Option<Vec<String>> {
    let f = c.features.clone().expect("features");
    f.child_ns("sasl-channel-binding", NS_SASL_CB).map(|e| {
        e.children_named("channel-binding")
            .filter_map(|b| b.attr("type").map(str::to_string))
            .collect()
    })
}

/// XEP-0474's hash of the lists a client saw, as that client computes it.
fn ssdp(hash: ScramHash, mechs: &[String], cbs: Option<&[String]>) -> String {
    use sha2::Digest;
    let mut m: Vec<&str> = mechs.iter().map(String::as_str).collect();
    m.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    let mut s = m.join("\u{1e}");
    if let Some(cbs) = cbs {
        let mut c: Vec<&str> = cbs.iter().map(String::as_str).collect();
        c.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        s.push('\u{1f}');
        s.push_str(&c.join("\u{1e}"));
    }
    match hash {
        ScramHash::Sha1 => B64.encode(sha1::Sha1::digest(s.as_bytes())),
        ScramHash::Sha256 => B64.encode(sha2::Sha256::digest(s.as_bytes())),
    }
}

pub(crate) async fn send_authenticate(
    c: &mut Client,
    mech: &str,
    initial: Option<&[u8]>,
    extra: &str,
) {
    send_authenticate_as(c, UA, mech, initial, extra).await
}

/// `<authenticate/>` with the user-agent id `ua`.
pub(crate) async fn send_authenticate_as(
    c: &mut Client,
    ua: &str,
    mech: &str,
    initial: Option<&[u8]>,
    extra: &str,
) {
    let initial = initial
        .map(|d| format!("<initial-response>{}</initial-response>", B64.encode(d)))
        .unwrap_or_default();
    c.send(&format!(
        "<authenticate xmlns='{NS_SASL2}' mechanism='{mech}'>{initial}\
         <user-agent id='{ua}'><software>rookery-tests</software><device>loopback</device></user-agent>\
         {extra}</authenticate>"
    ))
    .await;
}

/// The next SASL2 element (`challenge`, `success`, `failure`).
pub(crate) async fn sasl2_reply(c: &mut Client) -> Element {
    let e = c.recv().await;
    assert_eq!(e.ns, NS_SASL2, "expected a SASL2 element, got {e}");
    e
}

pub(crate) fn decode(e: &Element) -> Vec<u8> {
    let t: String = e.text.chars().filter(|c| !c.is_whitespace()).collect();
    B64.decode(t)
        .unwrap_or_else(|err| panic!("bad base64 in {e}: {err}"))
}

/// The RFC 6120 condition inside a SASL2 `<failure/>`.
pub(crate) fn failure_condition(e: &Element) -> String {
    assert_eq!(e.name, "failure", "expected a failure, got {e}");
    e.children
        .iter()
        .find(|c| c.ns == NS_SASL && c.name != "text")
        .map(|c| c.name.clone())
        .unwrap_or_else(|| panic!("no RFC 6120 condition in {e}"))
}

/// A SCRAM exchange over SASL2 with `extra` inside `<authenticate/>`.
/// Checks the SSDP `h` against the features the client saw and the
/// server signature in `<additional-data/>`. `Ok(<success/>)` or
/// `Err(condition)`.
pub(crate) async fn scram2(
    c: &mut Client,
    sc: ScramClient,
    extra: &str,
) -> Result<Element, String> {
    scram2_as(c, UA, sc, extra).await
}

/// [`scram2`] with the user-agent id `ua`.
pub(crate) async fn scram2_as(
    c: &mut Client,
    ua: &str,
    mut sc: ScramClient,
    extra: &str,
) -> Result<Element, String> {
    let mech = sc.mechanism();
    let hash = if mech.starts_with("SCRAM-SHA-256") {
        ScramHash::Sha256
    } else {
        ScramHash::Sha1
    };
    let expected_h = ssdp(hash, &sasl2_mechanisms(c), cb_types(c).as_deref());
    send_authenticate_as(c, ua, &mech, Some(&sc.client_first()), extra).await;
    let e = sasl2_reply(c).await;
    if e.name == "failure" {
        return Err(failure_condition(&e));
    }
    assert_eq!(e.name, "challenge", "{e}");
    let server_first = decode(&e);
    let sf = String::from_utf8(server_first.clone()).unwrap();
    let h = sf
        .split(',')
        .find_map(|p| p.strip_prefix("h="))
        .unwrap_or_else(|| panic!("no XEP-0474 h in server-first {sf:?}"));
    assert_eq!(h, expected_h, "SSDP hash differs from the advertised lists");
    let fin = sc.client_final(&server_first).expect("client-final");
    c.send(&format!(
        "<response xmlns='{NS_SASL2}'>{}</response>",
        B64.encode(fin)
    ))
    .await;
    let e = sasl2_reply(c).await;
    match e.name.as_str() {
        "success" => {
            let data = e
                .child_ns("additional-data", NS_SASL2)
                .unwrap_or_else(|| panic!("no additional-data (server-final) in {e}"));
            sc.verify_server_final(&decode(data))
                .unwrap_or_else(|err| panic!("{mech}: {err}"));
            Ok(e)
        }
        _ => Err(failure_condition(&e)),
    }
}

pub(crate) fn authz_id(success: &Element) -> String {
    success
        .child_ns("authorization-identifier", NS_SASL2)
        .unwrap_or_else(|| panic!("no authorization-identifier in {success}"))
        .text
        .trim()
        .to_string()
}

/// After a success without Bind 2: the post-authentication features come
/// on the same stream (no restart), and an RFC 6120 bind works.
async fn features_then_legacy_bind(c: &mut Client, user: &str) {
    let f = c.recv().await;
    assert!(
        f.name == "features" && f.child_ns("bind", NS_BIND).is_some(),
        "expected post-authentication features with <bind/>, got {f}"
    );
    assert!(f.child_ns("authentication", NS_SASL2).is_none(), "{f}");
    c.features = Some(f);
    let jid = c.bind(Some("legacy")).await.expect("bind");
    assert_eq!(jid, format!("{user}@localhost/legacy"));
    let r = c.ping("localhost").await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
}

pub(crate) fn scram(hash: ScramHash, user: &str, password: &str) -> ScramClient {
    ScramClient::new(hash, user, password, Gs2Binding::No, None)
}

#[tokio::test]
async fn offered_beside_sasl_with_the_same_mechanisms_and_inline_features() {
    let server = server_with_users();
    let mut c = Client::connect(server.c2s()).await;
    let before_tls = c.open_stream().await;
    c.features = Some(before_tls.clone());
    // PLAIN only under TLS, as in RFC 6120 SASL.
    if before_tls.child_ns("authentication", NS_SASL2).is_some() {
        assert!(!sasl2_mechanisms(&c).contains(&"PLAIN".to_string()));
    }
    c.starttls().await;
    let a = sasl2_feature(&c);
    assert_eq!(sasl2_mechanisms(&c), c.mechanisms(), "{a}");
    assert!(sasl2_mechanisms(&c).contains(&"PLAIN".to_string()));
    assert!(sasl2_mechanisms(&c).contains(&"SCRAM-SHA-256-PLUS".to_string()));
    let inline = a.child_ns("inline", NS_SASL2).expect("inline");
    assert!(inline.child_ns("sm", NS_SM).is_some(), "{a}");
    let bind = inline.child_ns("bind", NS_BIND2).expect("bind 2 feature");
    let vars: Vec<&str> = bind
        .child_ns("inline", NS_BIND2)
        .expect("bind inline")
        .children_named("feature")
        .filter_map(|f| f.attr("var"))
        .collect();
    for v in [NS_CARBONS, "urn:xmpp:csi:0", NS_SM] {
        assert!(vars.contains(&v), "{v} not inline in {bind}");
    }
}

#[tokio::test]
async fn every_mechanism_authenticates() {
    let server = server_with_users();
    for hash in [ScramHash::Sha1, ScramHash::Sha256] {
        let mut c = Client::connect_starttls(server.c2s()).await;
        let ok = scram2(&mut c, scram(hash, "alice", "secret"), "")
            .await
            .unwrap_or_else(|e| panic!("{hash:?}: <{e}/>"));
        assert_eq!(authz_id(&ok), "alice@localhost");
        features_then_legacy_bind(&mut c, "alice").await;
    }
    for (hash, cb) in [
        (ScramHash::Sha256, "tls-exporter"),
        (ScramHash::Sha1, "tls-server-end-point"),
    ] {
        let mut c = Client::connect_starttls(server.c2s()).await;
        let data = c.channel_binding(cb);
        let sc = ScramClient::new(
            hash,
            "bob",
            "hunter2",
            Gs2Binding::Bind {
                cb_type: cb.to_string(),
                data,
            },
            None,
        );
        let ok = scram2(&mut c, sc, "")
            .await
            .unwrap_or_else(|e| panic!("{hash:?}-PLUS {cb}: <{e}/>"));
        assert_eq!(authz_id(&ok), "bob@localhost");
        features_then_legacy_bind(&mut c, "bob").await;
    }
    let mut c = Client::connect_starttls(server.c2s()).await;
    send_authenticate(&mut c, "PLAIN", Some(b"\0alice\0secret"), "").await;
    let ok = sasl2_reply(&mut c).await;
    assert_eq!(ok.name, "success", "{ok}");
    assert!(ok.child_ns("additional-data", NS_SASL2).is_none(), "{ok}");
    assert_eq!(authz_id(&ok), "alice@localhost");
    features_then_legacy_bind(&mut c, "alice").await;
}

#[tokio::test]
async fn wrong_password_unknown_mechanism_and_abort_then_success() {
    let server = server_with_users();
    let mut c = Client::connect_starttls(server.c2s()).await;
    let e = scram2(&mut c, scram(ScramHash::Sha256, "alice", "wrong"), "")
        .await
        .unwrap_err();
    assert_eq!(e, "not-authorized");
    send_authenticate(&mut c, "PLAIN", Some(b"\0alice\0wrong"), "").await;
    assert_eq!(
        failure_condition(&sasl2_reply(&mut c).await),
        "not-authorized"
    );
    send_authenticate(&mut c, "DIGEST-MD5", Some(b"x"), "").await;
    assert_eq!(
        failure_condition(&sasl2_reply(&mut c).await),
        "invalid-mechanism"
    );
    // <abort/> in the middle of a SCRAM exchange.
    let sc = scram(ScramHash::Sha256, "alice", "secret");
    send_authenticate(&mut c, "SCRAM-SHA-256", Some(&sc.client_first()), "").await;
    assert_eq!(sasl2_reply(&mut c).await.name, "challenge");
    c.send(&format!("<abort xmlns='{NS_SASL2}'/>")).await;
    assert_eq!(failure_condition(&sasl2_reply(&mut c).await), "aborted");
    // The connection is still usable: a right password succeeds.
    let ok = scram2(&mut c, scram(ScramHash::Sha256, "alice", "secret"), "")
        .await
        .expect("login after failures");
    assert_eq!(authz_id(&ok), "alice@localhost");
    // Authenticated: another <authenticate/> is a policy violation.
    c.send(&format!(
        "<authenticate xmlns='{NS_SASL2}' mechanism='PLAIN'/>"
    ))
    .await;
    let err = c.expect_stream_error().await;
    assert_eq!(err, "policy-violation");
}

#[tokio::test]
async fn failures_are_rate_limited_like_sasl() {
    let server = server_with_users();
    let mut c = Client::connect_starttls(server.c2s()).await;
    // Five failures (the per-connection limit) end the stream.
    for _ in 0..4 {
        send_authenticate(&mut c, "PLAIN", Some(b"\0alice\0wrong"), "").await;
        assert_eq!(
            failure_condition(&sasl2_reply(&mut c).await),
            "not-authorized"
        );
    }
    send_authenticate(&mut c, "PLAIN", Some(b"\0alice\0wrong"), "").await;
    assert_eq!(
        failure_condition(&sasl2_reply(&mut c).await),
        "not-authorized"
    );
    assert_eq!(c.expect_stream_error().await, "policy-violation");
}

#[tokio::test]
async fn ssdp_detects_a_stripped_mechanism_list() {
    let server = server_with_users();
    let mut c = Client::connect_starttls(server.c2s()).await;
    let mechs = sasl2_mechanisms(&c);
    let cbs = cb_types(&c);
    assert!(mechs.iter().any(|m| m.ends_with("-PLUS")), "{mechs:?}");
    // What a MITM would show: no -PLUS mechanisms, no channel-binding list.
    let stripped: Vec<String> = mechs
        .iter()
        .filter(|m| !m.ends_with("-PLUS"))
        .cloned()
        .collect();
    let sc = scram(ScramHash::Sha256, "alice", "secret");
    send_authenticate(&mut c, "SCRAM-SHA-256", Some(&sc.client_first()), "").await;
    let sf = String::from_utf8(decode(&sasl2_reply(&mut c).await)).unwrap();
    let h = sf.split(',').find_map(|p| p.strip_prefix("h=")).expect("h");
    assert_eq!(h, ssdp(ScramHash::Sha256, &mechs, cbs.as_deref()));
    assert_ne!(
        h,
        ssdp(ScramHash::Sha256, &stripped, None),
        "stripped list undetected"
    );
    assert_ne!(
        h,
        ssdp(
            ScramHash::Sha256,
            &mechs,
            Some(&["tls-server-end-point".to_string()])
        ),
        "stripped channel-binding list undetected"
    );
    // RFC 6120 SASL carries the same protection.
    let mut c = Client::connect_starttls(server.c2s()).await;
    let sc = scram(ScramHash::Sha1, "alice", "secret");
    c.send_auth("SCRAM-SHA-1", Some(&sc.client_first())).await;
    let SaslReply::Challenge(sf) = c.sasl_reply().await else {
        panic!("no challenge");
    };
    let sf = String::from_utf8(sf).unwrap();
    let h = sf
        .split(',')
        .find_map(|p| p.strip_prefix("h="))
        .expect("h in SASL1");
    assert_eq!(
        h,
        ssdp(ScramHash::Sha1, &c.mechanisms(), cb_types(&c).as_deref())
    );
}

const BIND2_ALL: &str = "<bind xmlns='urn:xmpp:bind:0'><tag>AwesomeXMPP</tag>\
    <enable xmlns='urn:xmpp:carbons:2'/><enable xmlns='urn:xmpp:sm:3' resume='true'/></bind>";

/// SASL2 + Bind 2 with carbons and resumable stream management: the client,
/// its full JID and the resumption id.
async fn bind2_login(server: &Server, ua: &str) -> (Client, String, String) {
    let mut c = Client::connect_starttls(server.c2s()).await;
    let ok = scram2_as(
        &mut c,
        ua,
        scram(ScramHash::Sha256, ALICE.0, ALICE.1),
        BIND2_ALL,
    )
    .await
    .expect("SASL2 + Bind 2");
    let jid = authz_id(&ok);
    let bound = ok
        .child_ns("bound", NS_BIND2)
        .unwrap_or_else(|| panic!("no <bound/>: {ok}"));
    let enabled = bound
        .child_ns("enabled", NS_SM)
        .unwrap_or_else(|| panic!("no inline <enabled/>: {ok}"));
    assert_eq!(enabled.attr("resume"), Some("true"), "{enabled}");
    let id = enabled.attr("id").expect("resumption id").to_string();
    c.jid = Some(jid.clone());
    (c, jid, id)
}

#[tokio::test]
async fn bind2_tag_resource_inline_carbons_and_sm() {
    let server = server_with_users();
    let (mut a, jid, _id) = bind2_login(&server, UA).await;
    let prefix = format!("{}/AwesomeXMPP/", bare(ALICE));
    assert!(
        jid.starts_with(&prefix) && jid.len() > prefix.len(),
        "resource is not tag/random: {jid}"
    );
    // No features after a Bind 2 success: the session is ready.
    a.send("<presence/>").await;
    sync(&mut a).await;
    // Another client (another user-agent id) with the same tag gets
    // another resource.
    let (_a2, jid2, _) = bind2_login(&server, "5a0c2b6e-1111-4c1e-9d7e-0e4f5a6b7c8d").await;
    assert_ne!(jid, jid2);
    // Carbons are on: a message another resource of alice sends reaches
    // this session as a <sent/> carbon.
    let mut other = im::login(&server, ALICE, "desk").await;
    other.send(&chat(&bare(BOB), "c1", "hello from desk")).await;
    let carbon = a
        .recv_where("a carbon", |e| {
            e.name == "message" && e.child_ns("sent", NS_CARBONS).is_some()
        })
        .await;
    assert!(carbon.to_string().contains("hello from desk"), "{carbon}");
    // Stream management counts from the <success/>: the carbon is stanza 1
    // after the presence/sync traffic; an ack request is answered.
    a.send("<r xmlns='urn:xmpp:sm:3'/>").await;
    let ack = a
        .recv_where("<a/>", |e| e.name == "a" && e.ns == NS_SM)
        .await;
    assert!(ack.attr("h").is_some(), "{ack}");
}

#[tokio::test]
async fn inline_resume_returns_unacked_messages_exactly_once() {
    let server = server_with_users();
    let mut bob = im::online(&server, BOB, "b").await;
    let (mut a, jid, id) = bind2_login(&server, UA).await;
    for b in ["m1", "m2", "m3"] {
        bob.send(&chat(&jid, b, b)).await;
    }
    sync(&mut bob).await;
    for want in ["m1", "m2", "m3"] {
        let m = a.recv_where("a message", |e| e.name == "message").await;
        assert_eq!(m.child_text("body"), Some(want));
    }
    drop(a);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for b in ["m4", "m5"] {
        bob.send(&chat(&jid, b, b)).await;
    }
    sync(&mut bob).await;
    // The client had handled m1: resume inline with h=1. The bind request
    // beside it is ignored because the resumption succeeds.
    let mut a = Client::connect_starttls(server.c2s()).await;
    let extra = format!("<resume xmlns='urn:xmpp:sm:3' previd='{id}' h='1'/>{BIND2_ALL}");
    let ok = scram2(&mut a, scram(ScramHash::Sha256, ALICE.0, ALICE.1), &extra)
        .await
        .expect("SASL2 with inline resume");
    assert_eq!(authz_id(&ok), jid, "the resumed session's full JID");
    let resumed = ok
        .child_ns("resumed", NS_SM)
        .unwrap_or_else(|| panic!("no <resumed/> in {ok}"));
    assert_eq!(resumed.attr("previd"), Some(id.as_str()));
    assert!(
        ok.child_ns("bound", NS_BIND2).is_none(),
        "bound after a resumption: {ok}"
    );
    let got: Vec<String> = sync(&mut a)
        .await
        .iter()
        .filter(|e| e.name == "message")
        .map(|e| e.child_text("body").unwrap_or("").to_string())
        .collect();
    assert_eq!(
        got,
        ["m2", "m3", "m4", "m5"],
        "each unacked message exactly once"
    );
    bob.send(&chat(&jid, "m6", "m6")).await;
    let m = a.recv_where("m6", |e| e.name == "message").await;
    assert_eq!(m.child_text("body"), Some("m6"));
    // The old id is spent: resuming it again on a fresh login fails, the
    // <failed/> is in the success and the bind request then binds anew.
    drop(a);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut a = Client::connect_starttls(server.c2s()).await;
    let extra = format!("<resume xmlns='urn:xmpp:sm:3' previd='not-an-id' h='0'/>{BIND2_ALL}");
    let ok = scram2(&mut a, scram(ScramHash::Sha256, ALICE.0, ALICE.1), &extra)
        .await
        .expect("SASL2 with a failing inline resume");
    assert!(ok.child_ns("failed", NS_SM).is_some(), "{ok}");
    let bound = ok.child_ns("bound", NS_BIND2).expect("bound");
    // The archive's state at the bind: the messages above are in it.
    let meta = bound
        .child_ns("metadata", "urn:xmpp:mam:2")
        .unwrap_or_else(|| panic!("no MAM metadata in {bound}"));
    let ids: Vec<&str> = ["start", "end"]
        .iter()
        .map(|n| {
            let e = meta
                .child(n)
                .unwrap_or_else(|| panic!("no <{n}/> in {meta}"));
            assert!(e.attr("timestamp").is_some_and(|t| t.ends_with('Z')), "{e}");
            e.attr("id").expect("id")
        })
        .collect();
    assert!(ids[0] < ids[1], "{meta}");
}

const NS_UPGRADE: &str = "urn:xmpp:sasl:upgrade:0";
const NS_SCRAM_UPGRADE: &str = "urn:xmpp:scram-upgrade:0";

/// Direct TLS, then a stream header with `from` (XEP-0388 §2.1).
async fn open_with_from(server: &Server, from: &str) -> Client {
    let mut c = Client::connect(server.c2s_tls()).await;
    c.tls_handshake().await;
    c.send(&format!(
        "<?xml version='1.0'?><stream:stream from='{from}' to='localhost' version='1.0' \
         xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
    ))
    .await;
    c.read_header_and_features().await;
    c
}

#[tokio::test]
async fn scram_sha_256_upgrade_task_for_a_sha1_only_account() {
    let server = Server::start_with(Config {
        tls_listener: true,
        ..Config::default()
    });
    server.register("alice", "localhost", "secret");
    // dana has SCRAM-SHA-1 credentials only (as imported from Prosody).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dana.xml");
    let salt = b"prosody-salt";
    let (stored, server_key) = ScramHash::Sha1.stored_and_server_key("dana-pw", salt, 4096);
    std::fs::write(
        &file,
        format!(
            "<server-data xmlns='urn:xmpp:pie:0'><host jid='localhost'><user name='dana'>\
             <scram-credentials xmlns='urn:xmpp:pie:0#scram' mechanism='SCRAM-SHA-1'>\
             <iter-count>4096</iter-count><salt>{}</salt><server-key>{}</server-key>\
             <stored-key>{}</stored-key></scram-credentials></user></host></server-data>",
            B64.encode(salt),
            B64.encode(&server_key),
            B64.encode(&stored)
        ),
    )
    .unwrap();
    server.ctl_ok(&["import_piefxis", &file.display().to_string()]);

    // The header's `from` tailors the mechanisms: no SCRAM-SHA-256 for dana
    // (it would fail), but for alice; the upgrade task is offered.
    let a = open_with_from(&server, "alice@localhost").await;
    assert!(sasl2_mechanisms(&a).contains(&"SCRAM-SHA-256".to_string()));
    let mut c = open_with_from(&server, "dana@localhost").await;
    let mechs = sasl2_mechanisms(&c);
    assert!(
        !mechs.iter().any(|m| m.starts_with("SCRAM-SHA-256")),
        "SCRAM-SHA-256 offered to a SHA-1-only account: {mechs:?}"
    );
    let upgrades: Vec<String> = sasl2_feature(&c)
        .children
        .iter()
        .filter(|e| e.is("upgrade", NS_UPGRADE))
        .map(|e| e.text.trim().to_string())
        .collect();
    assert_eq!(upgrades, ["UPGR-SCRAM-SHA-256"]);

    // SCRAM-SHA-1 with the upgrade task.
    let mut sc = scram(ScramHash::Sha1, "dana", "dana-pw");
    let upgrade = format!("<upgrade xmlns='{NS_UPGRADE}'>UPGR-SCRAM-SHA-256</upgrade>");
    send_authenticate(&mut c, "SCRAM-SHA-1", Some(&sc.client_first()), &upgrade).await;
    let ch = sasl2_reply(&mut c).await;
    assert_eq!(ch.name, "challenge", "{ch}");
    let fin = sc.client_final(&decode(&ch)).unwrap();
    c.send(&format!(
        "<response xmlns='{NS_SASL2}'>{}</response>",
        B64.encode(fin)
    ))
    .await;
    let cont = sasl2_reply(&mut c).await;
    assert_eq!(cont.name, "continue", "{cont}");
    sc.verify_server_final(&decode(
        cont.child_ns("additional-data", NS_SASL2).expect("data"),
    ))
    .unwrap();
    let task = cont
        .child_ns("tasks", NS_SASL2)
        .and_then(|t| t.child_ns("task", NS_SASL2))
        .map(|t| t.text.trim().to_string());
    assert_eq!(task.as_deref(), Some("UPGR-SCRAM-SHA-256"), "{cont}");
    c.send(&format!(
        "<next xmlns='{NS_SASL2}' task='UPGR-SCRAM-SHA-256'/>"
    ))
    .await;
    let td = sasl2_reply(&mut c).await;
    assert_eq!(td.name, "task-data", "{td}");
    let salt_el = td.child_ns("salt", NS_SCRAM_UPGRADE).expect("salt");
    let iterations: u32 = salt_el.attr("iterations").unwrap().parse().unwrap();
    let new_salt = decode(salt_el);
    assert!(iterations >= 4096 && !new_salt.is_empty(), "{td}");
    let mut salted = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(b"dana-pw", &new_salt, iterations, &mut salted);
    c.send(&format!(
        "<task-data xmlns='{NS_SASL2}'><hash xmlns='{NS_SCRAM_UPGRADE}'>{}</hash></task-data>",
        B64.encode(salted)
    ))
    .await;
    let ok = sasl2_reply(&mut c).await;
    assert_eq!(ok.name, "success", "{ok}");
    assert_eq!(authz_id(&ok), "dana@localhost");

    // From now on dana logs in with SCRAM-SHA-256 (and still SCRAM-SHA-1).
    let mut c = Client::connect_starttls(server.c2s()).await;
    c.auth_scram("SCRAM-SHA-256", "dana", "dana-pw")
        .await
        .expect("SCRAM-SHA-256 after the upgrade");
    let mut c = Client::connect_starttls(server.c2s()).await;
    c.auth_scram("SCRAM-SHA-1", "dana", "dana-pw")
        .await
        .expect("SCRAM-SHA-1 kept");
    let mut c = Client::connect_starttls(server.c2s()).await;
    assert_eq!(
        c.auth_scram("SCRAM-SHA-256", "dana", "wrong").await,
        Err("not-authorized".into())
    );
}

#[tokio::test]
async fn a_new_bind_of_the_same_client_ends_its_earlier_session() {
    let server = server_with_users();
    let (mut first, jid, _) = bind2_login(&server, UA).await;
    let (_second, jid2, _) = bind2_login(&server, UA).await;
    assert_eq!(jid, jid2, "the same user-agent id gets the same resource");
    assert!(!jid.contains(UA), "the user-agent id is not exposed: {jid}");
    let err = first.expect_stream_error().await;
    assert_eq!(
        err, "conflict",
        "the earlier session of the same client ends"
    );
}

#[tokio::test]
async fn bind2_inline_csi_starts_the_session_inactive() {
    let server = im::im_server();
    im::subscribe_mutual(&server, ALICE, BOB).await;
    let mut bob = im::online(&server, BOB, "b").await;
    let mut a = Client::connect_starttls(server.c2s()).await;
    let bind = "<bind xmlns='urn:xmpp:bind:0'><tag>Pocket</tag>\
                <inactive xmlns='urn:xmpp:csi:0'/></bind>";
    scram2(&mut a, scram(ScramHash::Sha256, ALICE.0, ALICE.1), bind)
        .await
        .expect("SASL2 + Bind 2 with CSI");
    a.send("<presence/>").await;
    sync(&mut a).await;
    // Bob's presence update is held for the inactive session ...
    bob.send("<presence><show>away</show></presence>").await;
    sync(&mut bob).await;
    let got = sync(&mut a).await;
    assert!(
        !got.iter()
            .any(|e| e.name == "presence" && e.child_text("show") == Some("away")),
        "presence delivered to a session bound inactive: {}",
        im::show(&got)
    );
    // ... and comes on <active/>.
    a.send("<active xmlns='urn:xmpp:csi:0'/>").await;
    let p = a
        .recv_where("bob's held presence", |e| {
            e.name == "presence" && e.child_text("show") == Some("away")
        })
        .await;
    assert!(
        p.attr("from").unwrap_or("").starts_with("bob@localhost"),
        "{p}"
    );
}
