//! Federation between two real Rookery servers on 127.0.0.1 (different
//! ports, found through `s2s_hosts`), with a CA made by the test: messages
//! both ways, a cross-domain subscription with presence, iq to the remote
//! server, bounces, SASL EXTERNAL and dialback, refusal of untrusted
//! certificates under `s2s_secure_auth`, and spoofed `from` refused.

use crate::common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NS_STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
const NS_STREAMS: &str = "urn:ietf:params:xml:ns:xmpp-streams";

/// A test CA and certificates it issues.
pub(crate) struct Ca {
    params: rcgen::CertificateParams,
    key: rcgen::KeyPair,
    pub(crate) pem: String,
}

impl Ca {
    pub(crate) fn new(name: &str) -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Ca { params, key, pem }
    }

    /// Certificate + key PEM for `domain` (serverAuth + clientAuth).
    pub(crate) fn issue(&self, domain: &str) -> String {
        self.issue_names(&[domain])
    }

    /// Certificate + key PEM for these names (the first is the common
    /// name; serverAuth + clientAuth).
    pub(crate) fn issue_names(&self, names: &[&str]) -> String {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, names[0]);
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        format!("{}{}", cert.pem(), key.serialize_pem())
    }
}

pub(crate) use crate::common::ports::free_port;

pub(crate) fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// One side of a federation test.
pub(crate) struct Side<'a> {
    pub(crate) domain: &'a str,
    pub(crate) s2s_port: u16,
    pub(crate) cert: &'a str,
    /// CA file to trust (`s2s_cafile`); `None`: system roots (which do not
    /// know the test CA, so certificates do not verify: dialback).
    pub(crate) cafile: Option<&'a Path>,
    pub(crate) extra: &'a str,
}

pub(crate) fn start(side: &Side, peers: &[(&str, u16)], files: &Path) -> Server {
    start_with_modules(side, peers, files, common::server::DEFAULT_MODULES)
}

/// [`start`] with these `modules:` lines.
pub(crate) fn start_with_modules(
    side: &Side,
    peers: &[(&str, u16)],
    files: &Path,
    modules: &str,
) -> Server {
    let cert = write(files, &format!("{}.pem", side.domain), side.cert);
    let mut yaml = format!(
        "certfiles: [{:?}]\ns2s_use_starttls: required\ns2s_hosts:\n",
        cert.display().to_string()
    );
    for (d, port) in peers {
        yaml.push_str(&format!("  {d}: \"127.0.0.1:{port}\"\n"));
    }
    if let Some(ca) = side.cafile {
        yaml.push_str(&format!("s2s_cafile: {:?}\n", ca.display().to_string()));
    }
    yaml.push_str(side.extra);
    let config = Config {
        hosts: vec![side.domain.to_string()],
        extra_listeners: vec![format!(
            "port: {}\nip: 127.0.0.1\nmodule: ejabberd_s2s_in",
            side.s2s_port
        )],
        extra_yaml: yaml,
        loglevel: "debug".into(),
        modules: modules.to_string(),
        ..Config::default()
    };
    let s = Server::start_with(config);
    s.register("alice", side.domain, "secret");
    s.register("bob", side.domain, "secret");
    s
}

/// Two servers a.test and b.test federating; `trust_a`/`trust_b`: whether
/// each trusts the test CA.
fn pair(
    trust_a: bool,
    trust_b: bool,
    extra_a: &str,
    extra_b: &str,
) -> (Server, Server, tempfile::TempDir) {
    let files = tempfile::tempdir().unwrap();
    let ca = Ca::new("Rookery test CA");
    let ca_file = write(files.path(), "ca.pem", &ca.pem);
    let (pa, pb) = (free_port(), free_port());
    let (ca_cert, cb_cert) = (ca.issue("a.test"), ca.issue("b.test"));
    let a = start(
        &Side {
            domain: "a.test",
            s2s_port: pa,
            cert: &ca_cert,
            cafile: trust_a.then_some(ca_file.as_path()),
            extra: extra_a,
        },
        &[("b.test", pb), ("c.test", free_port())],
        files.path(),
    );
    let b = start(
        &Side {
            domain: "b.test",
            s2s_port: pb,
            cert: &cb_cert,
            cafile: trust_b.then_some(ca_file.as_path()),
            extra: extra_b,
        },
        &[("a.test", pa)],
        files.path(),
    );
    (a, b, files)
}

pub(crate) async fn user(server: &Server, domain: &str, name: &str, resource: &str) -> Client {
    let mut c = Client::connect(server.c2s()).await;
    c.domain = domain.to_string();
    c.open_stream().await;
    c.starttls().await;
    c.login_scram(name, "secret").await;
    c.bind(Some(resource)).await.unwrap();
    c.send("<presence/>").await;
    im::sync(&mut c).await;
    c
}

async fn message_both_ways(a: &Server, b: &Server) {
    let mut alice = user(a, "a.test", "alice", "pc").await;
    let mut bob = user(b, "b.test", "bob", "phone").await;
    alice
        .send("<message to='bob@b.test' type='chat' id='m1'><body>hello b</body></message>")
        .await;
    let m = bob.recv_message().await;
    assert_eq!(m.attr("from"), Some("alice@a.test/pc"), "{m}");
    assert_eq!(m.child_text("body"), Some("hello b"));
    bob.send("<message to='alice@a.test/pc' type='chat'><body>hello a</body></message>")
        .await;
    let m = alice.recv_message().await;
    assert_eq!(m.attr("from"), Some("bob@b.test/phone"), "{m}");
    assert_eq!(m.child_text("body"), Some("hello a"));
}

fn connections(s: &Server) -> String {
    s.ctl_ok(&["s2s_connections"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_external_federation() {
    let (a, b, _files) = pair(true, true, "", "");
    message_both_ways(&a, &b).await;
    // One connection each way, authenticated by certificate.
    let ca = connections(&a);
    assert!(ca.contains("out a.test b.test sasl-external tls"), "{ca}");
    assert!(ca.contains("in a.test b.test sasl-external tls"), "{ca}");
    assert_eq!(a.ctl_ok(&["outgoing_s2s_number"]).trim(), "1");
    assert_eq!(a.ctl_ok(&["incoming_s2s_number"]).trim(), "1");

    // Cross-domain subscription with presence (RFC 6121 §3.1).
    let mut alice = user(&a, "a.test", "alice", "r2").await;
    let mut bob = user(&b, "b.test", "bob", "r2").await;
    bob.send("<iq type='get' id='rg'><query xmlns='jabber:iq:roster'/></iq>")
        .await;
    alice
        .send("<iq type='get' id='rg'><query xmlns='jabber:iq:roster'/></iq>")
        .await;
    alice
        .send("<presence to='bob@b.test' type='subscribe'/>")
        .await;
    let sub = bob
        .recv_where("subscribe", |e| {
            e.name == "presence" && e.attr("type") == Some("subscribe")
        })
        .await;
    assert_eq!(sub.attr("from"), Some("alice@a.test"), "{sub}");
    bob.send("<presence to='alice@a.test' type='subscribed'/>")
        .await;
    let push = alice
        .recv_where("roster push with subscription to", |e| {
            e.name == "iq"
                && e.children.iter().any(|q| {
                    q.children.iter().any(|i| {
                        i.attr("jid") == Some("bob@b.test") && i.attr("subscription") == Some("to")
                    })
                })
        })
        .await;
    assert_eq!(push.attr("type"), Some("set"));
    let p = alice
        .recv_where("bob's presence", |e| {
            e.name == "presence"
                && e.attr("type").is_none()
                && e.attr("from").is_some_and(|f| f.starts_with("bob@b.test/"))
        })
        .await;
    assert!(
        p.attr("to").is_some_and(|t| t.starts_with("alice@a.test/")),
        "{p}"
    );
    // A new session of alice probes bob@b.test at its initial presence
    // (RFC 6121 §4.3) and learns bob's presence from b.test's answer.
    let mut alice3 = Client::connect(a.c2s()).await;
    alice3.domain = "a.test".into();
    alice3.open_stream().await;
    alice3.starttls().await;
    alice3.login_scram("alice", "secret").await;
    alice3.bind(Some("r3")).await.unwrap();
    alice3.send("<presence/>").await;
    alice3
        .recv_where("probe answer from bob", |e| {
            e.name == "presence"
                && e.attr("type").is_none()
                && e.attr("from").is_some_and(|f| f.starts_with("bob@b.test/"))
        })
        .await;
    // Bob goes offline: alice sees it.
    bob.send("<presence type='unavailable'/>").await;
    alice
        .recv_where("bob unavailable", |e| {
            e.name == "presence"
                && e.attr("type") == Some("unavailable")
                && e.attr("from").is_some_and(|f| f.starts_with("bob@b.test/"))
        })
        .await;

    // A message from b.test to an offline account of a.test is stored and
    // delivered at its next login (XEP-0160).
    bob.send(
        "<message to='bob@a.test' type='chat' id='off1'><body>while you were out</body></message>",
    )
    .await;
    // The same s2s stream carries stanzas in order and a.test handles them
    // one after the other: once this one arrives, the first one is stored.
    bob.send("<message to='alice@a.test/r2' type='chat'><body>marker</body></message>")
        .await;
    alice
        .recv_where("marker", |e| {
            e.name == "message" && e.child_text("body") == Some("marker")
        })
        .await;
    let mut bob_a = Client::connect(a.c2s()).await;
    bob_a.domain = "a.test".into();
    bob_a.open_stream().await;
    bob_a.starttls().await;
    bob_a.login_scram("bob", "secret").await;
    bob_a.bind(Some("home")).await.unwrap();
    bob_a.send("<presence/>").await;
    let got = im::sync(&mut bob_a).await;
    assert!(
        got.iter().any(|e| e.name == "message"
            && e.attr("from") == Some("bob@b.test/r2")
            && e.child_text("body") == Some("while you were out")),
        "offline message from b.test not delivered at login: {}",
        im::show(&got)
    );

    // iq to the remote server: ping and disco#info.
    let r = alice
        .request(
            "<iq type='get' to='b.test' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>",
            "p1",
        )
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    assert_eq!(r.attr("from"), Some("b.test"));
    let r = alice
        .request(
            "<iq type='get' to='b.test' id='d1'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
            "d1",
        )
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    let q = r.child("query").unwrap();
    assert!(
        q.children_named("identity")
            .any(|i| i.attr("category") == Some("server")),
        "{r}"
    );

    // A message to a nonexistent remote user bounces from the remote server.
    alice
        .send("<message to='nobody@b.test' id='nb' type='normal'><body>x</body></message>")
        .await;
    let e = alice
        .recv_where("bounce", |e| {
            e.name == "message" && e.attr("id") == Some("nb")
        })
        .await;
    assert_eq!(e.attr("type"), Some("error"), "{e}");
    assert_eq!(e.attr("from"), Some("nobody@b.test"));
    assert_eq!(
        e.stanza_error().map(|x| x.1),
        Some("service-unavailable".into()),
        "{e}"
    );

    // A domain whose server does not answer: remote-server-not-found.
    alice
        .send("<message to='x@c.test' id='nf' type='chat'><body>x</body></message>")
        .await;
    alice
        .expect_message_error("nf", "remote-server-not-found")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialback_federation() {
    // Neither trusts the CA: certificates do not verify, dialback is used.
    let (a, b, _files) = pair(false, false, "", "");
    message_both_ways(&a, &b).await;
    let ca = connections(&a);
    assert!(ca.contains("out a.test b.test dialback tls"), "{ca}");
    assert!(ca.contains("in a.test b.test dialback tls"), "{ca}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_auth_refuses_untrusted_certificates() {
    // a.test requires verified certificates; b.test's is not trusted by it.
    let files = tempfile::tempdir().unwrap();
    let trusted = Ca::new("trusted CA");
    let other = Ca::new("other CA");
    let ca_file = write(files.path(), "ca.pem", &trusted.pem);
    let (pa, pb) = (free_port(), free_port());
    let (ca_cert, cb_cert) = (trusted.issue("a.test"), other.issue("b.test"));
    let a = start(
        &Side {
            domain: "a.test",
            s2s_port: pa,
            cert: &ca_cert,
            cafile: Some(&ca_file),
            extra: "s2s_secure_auth: true\n",
        },
        &[("b.test", pb)],
        files.path(),
    );
    let b = start(
        &Side {
            domain: "b.test",
            s2s_port: pb,
            cert: &cb_cert,
            cafile: Some(&ca_file),
            extra: "",
        },
        &[("a.test", pa)],
        files.path(),
    );
    let mut alice = user(&a, "a.test", "alice", "pc").await;
    let mut bob = user(&b, "b.test", "bob", "pc").await;
    // a -> b: a does not accept b's certificate: bounced.
    alice
        .send("<message to='bob@b.test' id='m1' type='chat'><body>x</body></message>")
        .await;
    let e = alice
        .recv_where("bounce", |e| {
            e.name == "message" && e.attr("id") == Some("m1")
        })
        .await;
    assert_eq!(
        e.stanza_error().map(|x| x.1),
        Some("remote-server-not-found".into()),
        "{e}"
    );
    // b -> a: a refuses dialback and b's certificate: bounced to bob.
    bob.send("<message to='alice@a.test' id='m2' type='chat'><body>x</body></message>")
        .await;
    let e = bob
        .recv_where("bounce", |e| {
            e.name == "message" && e.attr("id") == Some("m2")
        })
        .await;
    assert_eq!(
        e.stanza_error().map(|x| x.1),
        Some("remote-server-not-found".into()),
        "{e}"
    );
    alice.expect_silence(Duration::from_millis(300)).await;
    assert_eq!(a.ctl_ok(&["incoming_s2s_number"]).trim(), "0");
    assert_eq!(a.ctl_ok(&["outgoing_s2s_number"]).trim(), "0");
}

// ----- a raw s2s peer authenticated by certificate, for spoofing tests -----

#[derive(Debug)]
struct AnyCert;

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Read until `needle` appears (bounded), returning everything read.
pub(crate) async fn read_until<S: tokio::io::AsyncRead + Unpin>(s: &mut S, needle: &str) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&out).contains(needle) {
        let n = tokio::time::timeout_at(deadline, s.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no {needle:?} in {:?}", String::from_utf8_lossy(&out)))
            .unwrap();
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(crate) fn s2s_header(from: &str, to: &str) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' \
         xmlns:db='jabber:server:dialback' from='{from}' to='{to}' version='1.0'>"
    )
}

/// Open an s2s stream to `addr` as `b.test` with `cert_pem` and SASL EXTERNAL.
async fn raw_peer(
    addr: SocketAddr,
    cert_pem: &str,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    raw_peer_to(addr, cert_pem, "a.test").await
}

/// Open an s2s stream to `addr` for our domain `to` as `b.test` with
/// `cert_pem` and SASL EXTERNAL.
pub(crate) async fn raw_peer_to(
    addr: SocketAddr,
    cert_pem: &str,
    to: &str,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use rustls::pki_types::pem::PemObject;
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(s2s_header("b.test", to).as_bytes())
        .await
        .unwrap();
    read_until(&mut tcp, "</stream:features>").await;
    tcp.write_all(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        .await
        .unwrap();
    read_until(&mut tcp, "<proceed").await;
    let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .map(Result::unwrap)
        .collect();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(AnyCert))
    .with_client_auth_cert(certs, key)
    .unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(to.to_string().try_into().unwrap(), tcp)
        .await
        .unwrap();
    tls.write_all(s2s_header("b.test", to).as_bytes())
        .await
        .unwrap();
    let f = read_until(&mut tls, "</stream:features>").await;
    assert!(
        f.contains("EXTERNAL"),
        "EXTERNAL not offered for a trusted certificate: {f}"
    );
    tls.write_all(
        b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>Yi50ZXN0</auth>",
    )
    .await
    .unwrap();
    let r = read_until(&mut tls, "<success").await;
    assert!(r.contains("success"), "{r}");
    tls.write_all(s2s_header("b.test", to).as_bytes())
        .await
        .unwrap();
    read_until(&mut tls, "features").await;
    tls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_from_is_refused() {
    let files = tempfile::tempdir().unwrap();
    let ca = Ca::new("Rookery test CA");
    let ca_file = write(files.path(), "ca.pem", &ca.pem);
    let pa = free_port();
    let a = start(
        &Side {
            domain: "a.test",
            s2s_port: pa,
            cert: &ca.issue("a.test"),
            cafile: Some(&ca_file),
            extra: "",
        },
        &[],
        files.path(),
    );
    let addr: SocketAddr = format!("127.0.0.1:{pa}").parse().unwrap();
    let b_cert = ca.issue("b.test");
    let mut alice = user(&a, "a.test", "alice", "pc").await;

    // Authenticated as b.test, a genuine stanza goes through.
    let mut peer = raw_peer(addr, &b_cert).await;
    peer.write_all(
        b"<message from='eve@b.test/x' to='alice@a.test' type='chat'><body>ok</body></message>",
    )
    .await
    .unwrap();
    let m = alice.recv_message().await;
    assert_eq!(m.attr("from"), Some("eve@b.test/x"));

    // Claiming another remote domain, or a local user: <invalid-from/>.
    for spoof in ["mallory@c.test/x", "bob@a.test/x"] {
        let mut peer = raw_peer(addr, &b_cert).await;
        peer.write_all(
            format!("<message from='{spoof}' to='alice@a.test' type='chat'><body>spoof</body></message>")
                .as_bytes(),
        )
        .await
        .unwrap();
        let r = read_until(&mut peer, "</stream:stream>").await;
        assert!(
            r.contains(&format!("<invalid-from xmlns='{NS_STREAMS}'/>")),
            "{spoof}: {r}"
        );
    }
    // No from at all: <improper-addressing/>.
    let mut peer = raw_peer(addr, &b_cert).await;
    peer.write_all(b"<message to='alice@a.test' type='chat'><body>spoof</body></message>")
        .await
        .unwrap();
    let r = read_until(&mut peer, "</stream:stream>").await;
    assert!(r.contains("<improper-addressing"), "{r}");
    // Unauthenticated: a stanza is refused.
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(s2s_header("b.test", "a.test").as_bytes())
        .await
        .unwrap();
    read_until(&mut tcp, "</stream:features>").await;
    tcp.write_all(b"<message from='eve@b.test' to='alice@a.test'><body>x</body></message>")
        .await
        .unwrap();
    let r = read_until(&mut tcp, "</stream:stream>").await;
    assert!(
        r.contains("<not-authorized") || r.contains("<policy-violation"),
        "{r}"
    );
    alice.expect_silence(Duration::from_millis(300)).await;
    let _ = NS_STANZAS;
}

// ----- bidirectional streams (XEP-0288) -----

/// With `s2s_bidi` on both sides, the stream a.test opens carries b.test's
/// stanzas back too: one TCP connection, seen by a.test as outgoing and by
/// b.test as incoming, both marked `bidi`; in SASL EXTERNAL and dialback
/// modes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bidi_federation() {
    for (trust, auth) in [(true, "sasl-external"), (false, "dialback")] {
        let (a, b, _files) = pair(trust, trust, "s2s_bidi: true\n", "s2s_bidi: true\n");
        message_both_ways(&a, &b).await;
        let mut bob = user(&b, "b.test", "bob", "r2").await;
        let r = bob
            .request(
                "<iq type='get' to='a.test' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>",
                "p1",
            )
            .await;
        assert_eq!(r.attr("type"), Some("result"), "{r}");
        bob.send("<message to='nobody@a.test' id='nb' type='chat'><body>x</body></message>")
            .await;
        bob.expect_message_error("nb", "service-unavailable").await;
        let ca = connections(&a);
        let cb = connections(&b);
        assert!(
            ca.contains(&format!("out a.test b.test {auth} tls")),
            "{ca}"
        );
        assert!(ca.trim_end().ends_with(" bidi"), "{ca}");
        assert!(!ca.contains("in "), "{ca}");
        assert!(cb.contains(&format!("in b.test a.test {auth} tls")), "{cb}");
        assert!(cb.trim_end().ends_with(" bidi"), "{cb}");
        assert!(!cb.contains("out "), "{cb}");
        assert_eq!(a.ctl_ok(&["incoming_s2s_number"]).trim(), "0");
        assert_eq!(b.ctl_ok(&["outgoing_s2s_number"]).trim(), "0");
    }
}

// ----- the dialback secret survives a restart -----

/// The text between `start` and the next `end` in `s`.
fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let i = s.find(start)? + start.len();
    let j = s[i..].find(end)? + i;
    Some(&s[i..j])
}

/// A server for a.test whose s2s needs no TLS (so a plain-TCP peer can play
/// the other server), with b.test routed to `b_port`.
fn plain_side(files: &Path, s2s_port: u16, b_port: u16) -> Server {
    let ca = Ca::new("Rookery test CA");
    let cert = write(files, "a.test.pem", &ca.issue("a.test"));
    Server::start_with(Config {
        hosts: vec!["a.test".into()],
        extra_listeners: vec![format!(
            "port: {s2s_port}\nip: 127.0.0.1\nmodule: ejabberd_s2s_in"
        )],
        extra_yaml: format!(
            "certfiles: [{:?}]\ns2s_use_starttls: optional\ns2s_hosts:\n  b.test: \"127.0.0.1:{b_port}\"\n",
            cert.display().to_string()
        ),
        loglevel: "debug".into(),
        ..Config::default()
    })
}

/// XEP-0220/XEP-0185: a key a.test issued before a restart is still
/// confirmed (`db:verify` answered `valid`) after it, because the secret is
/// stored, not made per process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialback_key_survives_restart() {
    let files = tempfile::tempdir().unwrap();
    // A fake b.test: a plain TCP listener that offers only dialback.
    let fake_b = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let pa = free_port();
    let mut a = plain_side(files.path(), pa, fake_b.local_addr().unwrap().port());
    a.register("alice", "a.test", "secret");
    let mut alice = user(&a, "a.test", "alice", "pc").await;
    alice
        .send("<message to='bob@b.test' type='chat'><body>x</body></message>")
        .await;
    let (mut sock, _) = tokio::time::timeout(Duration::from_secs(10), fake_b.accept())
        .await
        .expect("a.test connects to b.test")
        .unwrap();
    let header = read_until(&mut sock, ">").await;
    assert!(header.contains("from='a.test'"), "{header}");
    const ID: &str = "restart-test-stream-1";
    sock.write_all(
        format!(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' \
             xmlns:db='jabber:server:dialback' from='b.test' to='a.test' id='{ID}' version='1.0'>\
             <stream:features><dialback xmlns='urn:xmpp:features:dialback'/></stream:features>"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let got = read_until(&mut sock, "</db:result>").await;
    let key = between(&got, "to='b.test'>", "</db:result>")
        .unwrap_or_else(|| panic!("no dialback key in {got}"))
        .to_string();
    assert_eq!(key.len(), 64, "{got}");
    drop(sock);
    drop(alice);

    a.stop();
    a.restart();

    // b.test asks the restarted a.test whether it issued that key.
    let verify =
        |key: &str| format!("<db:verify from='b.test' to='a.test' id='{ID}'>{key}</db:verify>");
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", pa))
        .await
        .unwrap();
    tcp.write_all(s2s_header("b.test", "a.test").as_bytes())
        .await
        .unwrap();
    read_until(&mut tcp, "</stream:features>").await;
    tcp.write_all(verify(&key).as_bytes()).await.unwrap();
    let r = read_until(&mut tcp, "verify").await;
    let r = if r.contains("type=") {
        r
    } else {
        r + &read_until(&mut tcp, "type=").await
    };
    assert!(
        r.contains("type='valid'"),
        "key from before the restart: {r}"
    );
    // A key it did not issue is still refused.
    let mut wrong = key.clone();
    wrong.replace_range(0..1, if key.starts_with('0') { "1" } else { "0" });
    tcp.write_all(verify(&wrong).as_bytes()).await.unwrap();
    let r = read_until(&mut tcp, "type='invalid'").await;
    assert!(r.contains("type='invalid'"), "{r}");
}

// ----- reloaded certificates are used by s2s -----

#[derive(Debug)]
struct AnyClient;

impl rustls::server::danger::ClientCertVerifier for AnyClient {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        false
    }
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }
    fn verify_client_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The leaf certificate (DER) of a PEM bundle.
fn leaf_der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

/// The certificate a.test presents to an incoming s2s stream (STARTTLS).
async fn presented_certificate(addr: SocketAddr) -> Vec<u8> {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(s2s_header("b.test", "a.test").as_bytes())
        .await
        .unwrap();
    read_until(&mut tcp, "</stream:features>").await;
    tcp.write_all(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        .await
        .unwrap();
    read_until(&mut tcp, "<proceed").await;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(AnyCert))
    .with_no_client_auth();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("a.test".try_into().unwrap(), tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// The client certificate a.test presents on its next outgoing s2s stream,
/// as seen by a fake b.test listening on `fake_b` that requires STARTTLS.
async fn client_certificate(
    fake_b: &tokio::net::TcpListener,
    alice: &mut Client,
    b_pem: &str,
) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    alice
        .send("<message to='bob@b.test' type='chat'><body>x</body></message>")
        .await;
    let (mut sock, _) = tokio::time::timeout(Duration::from_secs(10), fake_b.accept())
        .await
        .expect("a.test connects to b.test")
        .unwrap();
    read_until(&mut sock, ">").await;
    sock.write_all(
        b"<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' \
          from='b.test' to='a.test' id='cert-test' version='1.0'>\
          <stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>",
    )
    .await
    .unwrap();
    read_until(&mut sock, "starttls").await;
    sock.write_all(b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        .await
        .unwrap();
    let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_slice_iter(b_pem.as_bytes())
        .map(Result::unwrap)
        .collect();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(b_pem.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_client_cert_verifier(Arc::new(AnyClient))
    .with_single_cert(certs, key)
    .unwrap();
    let tls = tokio_rustls::TlsAcceptor::from(Arc::new(config))
        .accept(sock)
        .await
        .unwrap();
    let der = tls
        .get_ref()
        .1
        .peer_certificates()
        .expect("a.test presents a client certificate")[0]
        .to_vec();
    drop(tls);
    // The stanza bounces (b.test went away): wait for it so the next
    // message starts a new connection.
    alice
        .recv_where("bounce", |e| {
            e.name == "message" && e.attr("type") == Some("error")
        })
        .await;
    der
}

/// Certificates replaced on disk reach s2s, in both directions: after
/// `rookery ctl reload_config`, and after the certificate file watcher
/// noticed the change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2s_uses_reloaded_certificates() {
    // The watcher checks every second in the servers this test starts.
    std::env::set_var("ROOKERY_CERT_CHECK_SECS", "1");
    let files = tempfile::tempdir().unwrap();
    let ca = Ca::new("Rookery test CA");
    let fake_b = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let b_pem = ca.issue("b.test");
    let pa = free_port();
    let a = plain_side(files.path(), pa, fake_b.local_addr().unwrap().port());
    a.register("alice", "a.test", "secret");
    let certfile = files.path().join("a.test.pem");
    let addr: SocketAddr = format!("127.0.0.1:{pa}").parse().unwrap();
    let first = std::fs::read_to_string(&certfile).unwrap();
    let mut alice = user(&a, "a.test", "alice", "pc").await;
    assert_eq!(presented_certificate(addr).await, leaf_der(&first));
    assert_eq!(
        client_certificate(&fake_b, &mut alice, &b_pem).await,
        leaf_der(&first)
    );

    // Replaced, then reload_config.
    let second = ca.issue("a.test");
    std::fs::write(&certfile, &second).unwrap();
    a.ctl_ok(&["reload_config"]);
    assert_eq!(presented_certificate(addr).await, leaf_der(&second));
    assert_eq!(
        client_certificate(&fake_b, &mut alice, &b_pem).await,
        leaf_der(&second)
    );

    // Replaced again: the watcher reloads it by itself.
    let third = ca.issue("a.test");
    std::fs::write(&certfile, &third).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while presented_certificate(addr).await != leaf_der(&third) {
        assert!(
            std::time::Instant::now() < deadline,
            "the watcher did not reload the certificate"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(
        client_certificate(&fake_b, &mut alice, &b_pem).await,
        leaf_der(&third)
    );
}

// ----- real DNS resolution (s2s_dns_servers, no s2s_hosts) -----

/// Outgoing streams found through DNS, each path once: SRV
/// `_xmpp-server._tcp` (STARTTLS), SRV `_xmpps-server._tcp` (direct TLS,
/// XEP-0368), and no SRV at all (the domain's A record on
/// `outgoing_s2s_port`); a domain without records bounces
/// `<remote-server-not-found/>`. a.test on one Rookery; b.test, c.test and
/// d.test on another, with a STARTTLS and a direct-TLS s2s listener. Both
/// ask the test's DNS server (`s2s_dns_servers`); neither has `s2s_hosts`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_resolution_paths() {
    use common::dns::{Dns, Rr};
    let files = tempfile::tempdir().unwrap();
    let ca = Ca::new("Rookery test CA");
    let ca_file = write(files.path(), "ca.pem", &ca.pem);
    let (pa, pr, pr_tls) = (free_port(), free_port(), free_port());
    let lo = std::net::IpAddr::from([127, 0, 0, 1]);
    let dns = Dns::start(vec![
        Rr::Srv(
            "_xmpp-server._tcp.a.test".into(),
            0,
            5,
            pa,
            "a-host.test".into(),
        ),
        Rr::Addr("a-host.test".into(), lo),
        Rr::Srv(
            "_xmpp-server._tcp.b.test".into(),
            0,
            5,
            pr,
            "r-host.test".into(),
        ),
        Rr::Srv(
            "_xmpps-server._tcp.c.test".into(),
            0,
            5,
            pr_tls,
            "r-host.test".into(),
        ),
        Rr::Addr("r-host.test".into(), lo),
        Rr::Addr("d.test".into(), lo),
    ]);
    let dns_yaml = format!(
        "s2s_use_starttls: required\ns2s_cafile: {:?}\ns2s_dns_servers: [\"{}\"]\ns2s_dns_timeout: 2\n",
        ca_file.display().to_string(),
        dns.addr
    );
    let a_cert = write(files.path(), "a.pem", &ca.issue("a.test"));
    let a = Server::start_with(Config {
        hosts: vec!["a.test".into()],
        extra_listeners: vec![format!(
            "port: {pa}\nip: 127.0.0.1\nmodule: ejabberd_s2s_in"
        )],
        // No SRV for d.test: its A record, on this port.
        extra_yaml: format!(
            "certfiles: [{:?}]\noutgoing_s2s_port: {pr}\n{dns_yaml}",
            a_cert.display().to_string()
        ),
        loglevel: "debug".into(),
        ..Config::default()
    });
    a.register("alice", "a.test", "secret");
    let mut certs = Vec::new();
    for d in ["b.test", "c.test", "d.test"] {
        certs.push(
            write(files.path(), &format!("{d}.pem"), &ca.issue(d))
                .display()
                .to_string(),
        );
    }
    let r = Server::start_with(Config {
        hosts: vec!["b.test".into(), "c.test".into(), "d.test".into()],
        extra_listeners: vec![
            format!("port: {pr}\nip: 127.0.0.1\nmodule: ejabberd_s2s_in"),
            format!("port: {pr_tls}\nip: 127.0.0.1\nmodule: ejabberd_s2s_in\ntls: true"),
        ],
        extra_yaml: format!("certfiles: {certs:?}\n{dns_yaml}"),
        loglevel: "debug".into(),
        ..Config::default()
    });
    for d in ["b.test", "c.test", "d.test"] {
        r.register("bob", d, "secret");
    }

    let mut alice = user(&a, "a.test", "alice", "pc").await;
    for d in ["b.test", "c.test", "d.test"] {
        let mut bob = user(&r, d, "bob", "phone").await;
        alice
            .send(&format!(
                "<message to='bob@{d}' type='chat'><body>to {d}</body></message>"
            ))
            .await;
        let m = bob.recv_message().await;
        assert_eq!(
            m.child_text("body"),
            Some(format!("to {d}").as_str()),
            "{m}"
        );
        // And back: the other server finds a.test by its SRV record.
        bob.send("<message to='alice@a.test/pc' type='chat'><body>back</body></message>")
            .await;
        let m = alice.recv_message().await;
        assert_eq!(
            m.attr("from"),
            Some(format!("bob@{d}/phone").as_str()),
            "{m}"
        );
    }
    let conns = connections(&a);
    for (d, port) in [("b.test", pr), ("c.test", pr_tls), ("d.test", pr)] {
        assert!(
            conns.contains(&format!(
                "out a.test {d} sasl-external tls 127.0.0.1:{port}"
            )),
            "{d} through port {port}: {conns}"
        );
    }
    for (name, kind) in [
        ("_xmpp-server._tcp.b.test", "SRV"),
        ("_xmpps-server._tcp.c.test", "SRV"),
        ("_xmpp-server._tcp.d.test", "SRV"),
        ("d.test", "A"),
        ("_xmpp-server._tcp.a.test", "SRV"),
    ] {
        assert!(dns.asked(name, kind), "{name} {kind}: {:?}", dns.log());
    }

    // No records at all: the sender learns it.
    alice
        .send("<message to='bob@nowhere.test' id='nw' type='chat'><body>x</body></message>")
        .await;
    alice
        .expect_message_error("nw", "remote-server-not-found")
        .await;
    assert!(dns.asked("nowhere.test", "A"), "{:?}", dns.log());
}

/// Measurement, not a check (run by hand, preferably with `--release`):
/// `cargo test --release --test integration s2s::s2s_throughput -- --ignored --nocapture`.
/// alice@a.test sends N chat messages to bob@b.test over one s2s connection
/// (SASL EXTERNAL, TLS); prints the time until bob has all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement"]
async fn s2s_throughput() {
    const N: usize = 2000;
    let (a, b, _files) = pair(true, true, "", "");
    let mut alice = user(&a, "a.test", "alice", "pc").await;
    let mut bob = user(&b, "b.test", "bob", "phone").await;
    // Warm up: the connection is established by the first message.
    alice
        .send("<message to='bob@b.test' type='chat'><body>warm</body></message>")
        .await;
    bob.recv_message().await;
    let start = std::time::Instant::now();
    let mut batch = String::new();
    for i in 0..N {
        batch.push_str(&format!(
            "<message to='bob@b.test' type='chat'><body>m{i}</body></message>"
        ));
        if batch.len() > 16_000 {
            alice.send(&batch).await;
            batch.clear();
        }
    }
    alice.send(&batch).await;
    for i in 0..N {
        let m = bob.recv_message().await;
        assert_eq!(
            m.child_text("body"),
            Some(format!("m{i}").as_str()),
            "order"
        );
    }
    let t = start.elapsed();
    println!(
        "s2s: {N} messages a.test -> b.test in {:.3} s ({:.0} msg/s)",
        t.as_secs_f64(),
        N as f64 / t.as_secs_f64()
    );
}

/// Incoming s2s STARTTLS: whitespace after `<starttls/>` is dropped and TLS
/// proceeds; anything else after it (here a dialback request that would be
/// read as if sent over TLS) is refused with `<policy-violation/>`, and the
/// refusal and the stream error are logged at info with the peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incoming_starttls_drops_whitespace_and_refuses_pipelined_data() {
    let files = tempfile::tempdir().unwrap();
    let pa = free_port();
    let a = plain_side(files.path(), pa, free_port());
    let addr: SocketAddr = format!("127.0.0.1:{pa}").parse().unwrap();

    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(s2s_header("b.test", "a.test").as_bytes())
        .await
        .unwrap();
    read_until(&mut tcp, "</stream:features>").await;
    tcp.write_all(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>\r\n")
        .await
        .unwrap();
    read_until(&mut tcp, "<proceed").await;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(AnyCert))
    .with_no_client_auth();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("a.test".try_into().unwrap(), tcp)
        .await
        .expect("TLS after a newline following <starttls/>");
    tls.write_all(s2s_header("b.test", "a.test").as_bytes())
        .await
        .unwrap();
    let f = read_until(&mut tls, "</stream:features>").await;
    assert!(!f.contains("starttls"), "{f}");

    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(s2s_header("b.test", "a.test").as_bytes())
        .await
        .unwrap();
    read_until(&mut tcp, "</stream:features>").await;
    tcp.write_all(
        b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>\n\
          <db:result from='b.test' to='a.test'>key</db:result>",
    )
    .await
    .unwrap();
    let r = read_until(&mut tcp, "</stream:stream>").await;
    assert!(r.contains("policy-violation"), "{r}");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let log = a.stderr_tail();
        let refused = log.lines().any(|l| {
            l.contains("INFO") && l.contains("s2s in: ") && l.contains("after <starttls/>")
        });
        let error_sent = log.lines().any(|l| {
            l.contains("INFO")
                && l.contains("s2s in: sending stream error policy-violation")
                && l.contains("127.0.0.1:")
        });
        if refused && error_sent {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not logged: {log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
