//! Federation with a real Prosody (Debian's package, installed by `.ci/run`)
//! on one machine: Prosody serves `prosody.test` on 127.0.0.3 (5222/5269),
//! Rookery serves `rookery.test` with its s2s listener on 127.0.0.2:5269.
//! Rookery finds Prosody through `s2s_hosts`; Prosody finds Rookery through
//! a hosts file of the test's own (`unbound.hoststxt`: its resolver answers
//! NXDOMAIN for SRV of `.test` names and falls back to A on 5269). Each
//! Prosody gets its own config, data directory and the test CA, and is
//! killed by its PID. Checked in both authentication modes: SASL EXTERNAL
//! (both trust the test CA) and dialback (neither does); with bidirectional
//! streams (XEP-0288: Prosody's mod_s2s_bidi, Rookery's `s2s_bidi`) opened
//! by either side; and refusal under `s2s_secure_auth`. In the SASL
//! EXTERNAL and dialback rounds, federated rooms (XEP-0045) both ways:
//! Prosody's user in a room of Rookery's `conference.rookery.test` and
//! Rookery's user in a room of Prosody's MUC component
//! (`conference.prosody.test`), each service domain on s2s streams of its
//! own (both certificates name the MUC service too); and XEP-0060 pubsub
//! over s2s: Prosody's user subscribed to a node of Rookery's
//! `pubsub.rookery.test` gets its notifications and items.
//!
//! Standard ports on 127.0.0.2/127.0.0.3 are needed because Prosody cannot
//! be told another port for a domain without DNS.

use crate::common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const ROOKERY_S2S: &str = "127.0.0.2";
const PROSODY_IP: &str = "127.0.0.3";

struct Prosody {
    child: Child,
    dir: PathBuf,
}

impl Drop for Prosody {
    fn drop(&mut self) {
        // Only the process this test started, by its PID.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.join("prosody.log")).unwrap_or_default();
            let tail: String = log
                .lines()
                .rev()
                .take(80)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            eprintln!("----- prosody log -----\n{tail}\n----- end -----");
        }
    }
}

fn ca() -> (rcgen::CertificateParams, rcgen::KeyPair, String) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Rookery interop test CA");
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let key = rcgen::KeyPair::generate().unwrap();
    let pem = params.self_signed(&key).unwrap().pem();
    (params, key, pem)
}

/// (certificate PEM, key PEM) for `domain` and its MUC service
/// `conference.DOMAIN` and `pubsub.DOMAIN`, both EKUs (s2s uses the same certificate as client
/// and server).
fn issue(
    ca: &(rcgen::CertificateParams, rcgen::KeyPair, String),
    domain: &str,
) -> (String, String) {
    let names = vec![
        domain.to_string(),
        format!("conference.{domain}"),
        format!("pubsub.{domain}"),
    ];
    let mut params = rcgen::CertificateParams::new(names).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, domain);
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = rcgen::KeyPair::generate().unwrap();
    let issuer = rcgen::Issuer::from_params(&ca.0, &ca.1);
    let cert = params.signed_by(&key, &issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn wait_port(addr: &str) {
    let addr: SocketAddr = addr.parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn start_prosody(dir: &Path, cert: &(String, String), cafile: Option<&Path>) -> Prosody {
    start_prosody_with(dir, cert, cafile, false)
}

/// `bidi`: keep Prosody's mod_s2s_bidi (XEP-0288) enabled.
fn start_prosody_with(
    dir: &Path,
    cert: &(String, String),
    cafile: Option<&Path>,
    bidi: bool,
) -> Prosody {
    let (enabled, disabled) = if bidi {
        (", \"s2s_bidi\"", "")
    } else {
        ("", "\"s2s_bidi\"")
    };
    let d = dir.display();
    write(dir, "prosody.crt", &cert.0);
    write(dir, "prosody.key", &cert.1);
    write(
        dir,
        "hosts",
        &format!("{ROOKERY_S2S} rookery.test\n{ROOKERY_S2S} conference.rookery.test\n{ROOKERY_S2S} pubsub.rookery.test\n"),
    );
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let ssl_global = match cafile {
        Some(ca) => format!("ssl = {{ cafile = {:?} }}\n", ca.display().to_string()),
        None => String::new(),
    };
    let cfg = format!(
        r#"run_as_root = true
daemonize = false
pidfile = "{d}/prosody.pid"
data_path = "{d}/data"
interfaces = {{ "{PROSODY_IP}" }}
c2s_ports = {{ 5222 }}
s2s_ports = {{ 5269 }}
c2s_direct_tls_ports = {{}}
s2s_direct_tls_ports = {{}}
http_ports = {{}}
https_ports = {{}}
log = {{ debug = "{d}/prosody.log" }}
modules_enabled = {{ "roster", "saslauth", "tls", "dialback", "disco", "ping", "posix"{enabled} }}
modules_disabled = {{ {disabled} }}
unbound = {{ hoststxt = "{d}/hosts" }}
authentication = "internal_hashed"
c2s_require_encryption = true
s2s_require_encryption = true
s2s_secure_auth = false
{ssl_global}
VirtualHost "prosody.test"
  ssl = {{ certificate = "{d}/prosody.crt", key = "{d}/prosody.key" }}

Component "conference.prosody.test" "muc"
  ssl = {{ certificate = "{d}/prosody.crt", key = "{d}/prosody.key" }}
  modules_enabled = {{ "s2s_auth_certs" }}
"#
    );
    let cfg_path = write(dir, "prosody.cfg.lua", &cfg);
    let status = Command::new("prosodyctl")
        .args(["--config", &cfg_path.display().to_string()])
        .args(["register", "pat", "prosody.test", "secret"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run prosodyctl");
    assert!(status.success(), "prosodyctl register failed");
    let child = Command::new("prosody")
        .args(["--config", &cfg_path.display().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prosody");
    let p = Prosody {
        child,
        dir: dir.to_path_buf(),
    };
    wait_port(&format!("{PROSODY_IP}:5222"));
    wait_port(&format!("{PROSODY_IP}:5269"));
    p
}

fn start_rookery(
    dir: &Path,
    cert: &(String, String),
    cafile: Option<&Path>,
    extra: &str,
) -> Server {
    let certfile = write(dir, "rookery.pem", &format!("{}{}", cert.0, cert.1));
    let mut yaml = format!(
        "certfiles: [{:?}]\ns2s_use_starttls: required\ns2s_hosts:\n  prosody.test: \"{PROSODY_IP}:5269\"\n  conference.prosody.test: \"{PROSODY_IP}:5269\"\n",
        certfile.display().to_string()
    );
    if let Some(ca) = cafile {
        yaml.push_str(&format!("s2s_cafile: {:?}\n", ca.display().to_string()));
    }
    yaml.push_str(extra);
    let s = Server::start_with(Config {
        hosts: vec!["rookery.test".into()],
        extra_listeners: vec![format!(
            "port: 5269\nip: {ROOKERY_S2S}\nmodule: ejabberd_s2s_in"
        )],
        extra_yaml: yaml,
        loglevel: "debug".into(),
        modules: format!("{}  mod_pubsub: {{}}\n", server::DEFAULT_MODULES),
        ..Config::default()
    });
    s.register("alice", "rookery.test", "secret");
    s
}

async fn rookery_user(s: &Server) -> Client {
    rookery_user_as(s, "pc").await
}

async fn rookery_user_as(s: &Server, resource: &str) -> Client {
    let mut c = Client::connect(s.c2s()).await;
    c.domain = "rookery.test".into();
    c.open_stream().await;
    c.starttls().await;
    c.login_scram("alice", "secret").await;
    c.bind(Some(resource)).await.unwrap();
    c.send("<iq type='get' id='rg'><query xmlns='jabber:iq:roster'/></iq>")
        .await;
    c.send("<presence/>").await;
    im::sync(&mut c).await;
    c
}

async fn prosody_user() -> Client {
    prosody_user_as("laptop").await
}

async fn prosody_user_as(resource: &str) -> Client {
    let mut c = Client::connect(format!("{PROSODY_IP}:5222").parse().unwrap()).await;
    c.domain = "prosody.test".into();
    c.open_stream().await;
    c.starttls().await;
    c.auth_plain("pat", "secret")
        .await
        .expect("PLAIN login at Prosody");
    c.open_stream().await;
    c.bind(Some(resource)).await.unwrap();
    c.send("<iq type='get' id='rg'><query xmlns='jabber:iq:roster'/></iq>")
        .await;
    c.send("<presence/>").await;
    im::sync(&mut c).await;
    c
}

async fn exchange(rookery: &Server, expected_auth: &str) {
    exchange_with(rookery, expected_auth, false).await
}

/// `bidi`: both ends use XEP-0288, so the stream Rookery opens carries
/// Prosody's stanzas too and no incoming stream is needed.
async fn exchange_with(rookery: &Server, expected_auth: &str, bidi: bool) {
    let mut alice = rookery_user(rookery).await;
    let mut pat = prosody_user().await;

    // Messages both ways, then a subscription each way with presence.
    common::federation::chat_and_subscribe(&mut alice, &mut pat, "prosody.test").await;

    // iq to Prosody's server, and a nonexistent user there.
    let r = alice
        .request(
            "<iq type='get' to='prosody.test' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>",
            "p1",
        )
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    alice
        .send("<message to='nobody@prosody.test' id='nb' type='normal'><body>x</body></message>")
        .await;
    let e = alice
        .recv_where("bounce", |e| {
            e.name == "message" && e.attr("id") == Some("nb")
        })
        .await;
    assert_eq!(e.attr("type"), Some("error"), "{e}");

    let conns = rookery.ctl_ok(&["s2s_connections"]);
    assert!(
        conns.contains(&format!(
            "out rookery.test prosody.test {expected_auth} tls"
        )),
        "{conns}"
    );
    if bidi {
        assert!(conns.trim_end().ends_with(" bidi"), "{conns}");
        assert!(!conns.contains("in "), "{conns}");
    } else {
        assert!(
            conns.contains(&format!("in rookery.test prosody.test {expected_auth} tls")),
            "{conns}"
        );
    }
}

/// Federated rooms both ways: pat (Prosody) in a room of Rookery's
/// `conference.rookery.test` with alice (groupchat both ways, a private
/// message each way, kicked by alice, then refused `not-acceptable` as a
/// non-occupant); alice in a room of Prosody's MUC component (the same
/// exchange, kicked by pat, and out of the room when her session ends).
/// The service domains' own s2s streams authenticate as `expected_auth`.
async fn muc_exchange(rookery: &Server, expected_auth: &str) {
    let alice = rookery_user_as(rookery, "muc").await;
    let pat = prosody_user_as("muc").await;
    common::muc::federated_rooms_both_ways(rookery, alice, pat, "prosody.test", expected_auth)
        .await;
}

/// Prosody's user subscribes to a node of Rookery's `pubsub.rookery.test`
/// (XEP-0060 over s2s, the service domain's own streams authenticated as
/// `expected_auth`): notifications of alice's publishes reach him, he
/// reads the items, and after unsubscribing he hears nothing more.
async fn pubsub_exchange(rookery: &Server, expected_auth: &str) {
    const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
    const SERVICE: &str = "pubsub.rookery.test";
    let mut alice = rookery_user_as(rookery, "pubsub").await;
    let mut pat = prosody_user_as("pubsub").await;
    let node = format!("channel-{}", expected_auth);
    let iq = |kind: &str, id: &str, inner: &str| {
        format!("<iq type='{kind}' to='{SERVICE}' id='{id}'><pubsub xmlns='{PUBSUB}'>{inner}</pubsub></iq>")
    };
    let r = alice
        .request(&iq("set", "c1", &format!("<create node='{node}'/>")), "c1")
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    let r = pat
        .request(
            &iq(
                "set",
                "s1",
                &format!("<subscribe node='{node}' jid='pat@prosody.test'/>"),
            ),
            "s1",
        )
        .await;
    assert_eq!(
        r.child("pubsub")
            .and_then(|p| p.child("subscription"))
            .and_then(|s| s.attr("subscription")),
        Some("subscribed"),
        "{r}"
    );
    let publish = |id: &str| {
        iq(
            "set",
            id,
            &format!("<publish node='{node}'><item id='{id}'><entry xmlns='http://www.w3.org/2005/Atom'><title>{id}</title></entry></item></publish>"),
        )
    };
    let r = alice.request(&publish("p1"), "p1").await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    let m = pat
        .recv_where("the notification", |e| {
            e.name == "message" && e.attr("from") == Some(SERVICE)
        })
        .await;
    let item = m
        .child("event")
        .and_then(|e| e.child("items"))
        .and_then(|i| i.child("item"))
        .unwrap_or_else(|| panic!("no item in {m}"));
    assert_eq!(item.attr("id"), Some("p1"), "{m}");
    assert_eq!(item.attr("publisher"), Some("alice@rookery.test"), "{m}");
    let r = pat
        .request(&iq("get", "i1", &format!("<items node='{node}'/>")), "i1")
        .await;
    let ids: Vec<&str> = r
        .child("pubsub")
        .and_then(|p| p.child("items"))
        .map(|i| {
            i.children_named("item")
                .filter_map(|x| x.attr("id"))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(ids, vec!["p1"], "{r}");
    let r = pat
        .request(
            &iq(
                "set",
                "u1",
                &format!("<unsubscribe node='{node}' jid='pat@prosody.test'/>"),
            ),
            "u1",
        )
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    alice.request(&publish("p2"), "p2").await;
    // Nothing more from the service (pat may hear alice's presence).
    let until = Instant::now() + Duration::from_millis(700);
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        match pat.recv_event_within(left).await {
            common::StreamEvent::Stanza(e) => assert_ne!(
                e.attr("from"),
                Some(SERVICE),
                "a notification after unsubscribing: {e}"
            ),
            _ => break,
        }
    }
    let conns = rookery.ctl_ok(&["s2s_connections"]);
    assert!(
        conns.contains(&format!("out {SERVICE} prosody.test {expected_auth} tls")),
        "{conns}"
    );
}

fn prosody_available() -> bool {
    let found = Command::new("prosody")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found && std::env::var_os("CI").is_some() {
        panic!("prosody is not installed (.ci/run installs it)");
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federates_with_prosody() {
    if !prosody_available() {
        eprintln!("SKIPPED: prosody is not installed (apt-get install prosody)");
        return;
    }
    let ca = ca();
    // SASL EXTERNAL: both trust the test CA.
    {
        let dir = tempfile::tempdir().unwrap();
        let cafile = write(dir.path(), "ca.pem", &ca.2);
        let _prosody = start_prosody(dir.path(), &issue(&ca, "prosody.test"), Some(&cafile));
        let rookery = start_rookery(dir.path(), &issue(&ca, "rookery.test"), Some(&cafile), "");
        exchange(&rookery, "sasl-external").await;
        muc_exchange(&rookery, "sasl-external").await;
        pubsub_exchange(&rookery, "sasl-external").await;
    }
    // Bidirectional streams (XEP-0288): Prosody's mod_s2s_bidi and s2s_bidi.
    {
        let dir = tempfile::tempdir().unwrap();
        let cafile = write(dir.path(), "ca.pem", &ca.2);
        let _prosody =
            start_prosody_with(dir.path(), &issue(&ca, "prosody.test"), Some(&cafile), true);
        let rookery = start_rookery(
            dir.path(),
            &issue(&ca, "rookery.test"),
            Some(&cafile),
            "s2s_bidi: true\n",
        );
        exchange_with(&rookery, "sasl-external", true).await;
    }
    // The same, Prosody opening the stream: Rookery answers on it.
    {
        let dir = tempfile::tempdir().unwrap();
        let cafile = write(dir.path(), "ca.pem", &ca.2);
        let _prosody =
            start_prosody_with(dir.path(), &issue(&ca, "prosody.test"), Some(&cafile), true);
        let rookery = start_rookery(
            dir.path(),
            &issue(&ca, "rookery.test"),
            Some(&cafile),
            "s2s_bidi: true\n",
        );
        let mut alice = rookery_user(&rookery).await;
        let mut pat = prosody_user().await;
        pat.send("<message to='alice@rookery.test/pc' type='chat'><body>first</body></message>")
            .await;
        let m = alice.recv_message().await;
        assert_eq!(m.attr("from"), Some("pat@prosody.test/laptop"), "{m}");
        alice
            .send("<message to='pat@prosody.test/laptop' type='chat'><body>back</body></message>")
            .await;
        let m = pat.recv_message().await;
        assert_eq!(m.child_text("body"), Some("back"), "{m}");
        let r = alice
            .request(
                "<iq type='get' to='prosody.test' id='p2'><ping xmlns='urn:xmpp:ping'/></iq>",
                "p2",
            )
            .await;
        assert_eq!(r.attr("type"), Some("result"), "{r}");
        let conns = rookery.ctl_ok(&["s2s_connections"]);
        assert!(
            conns.contains("in rookery.test prosody.test sasl-external tls"),
            "{conns}"
        );
        assert!(conns.trim_end().ends_with(" bidi"), "{conns}");
        assert!(!conns.contains("out "), "{conns}");
        assert_eq!(rookery.ctl_ok(&["outgoing_s2s_number"]).trim(), "0");
    }
    // Dialback: neither trusts it.
    {
        let dir = tempfile::tempdir().unwrap();
        let _prosody = start_prosody(dir.path(), &issue(&ca, "prosody.test"), None);
        let rookery = start_rookery(dir.path(), &issue(&ca, "rookery.test"), None, "");
        exchange(&rookery, "dialback").await;
        muc_exchange(&rookery, "dialback").await;
        pubsub_exchange(&rookery, "dialback").await;
    }
    // s2s_secure_auth on Rookery, which trusts another CA only: refused both ways.
    {
        let dir = tempfile::tempdir().unwrap();
        let cafile = write(dir.path(), "ca.pem", &ca.2);
        let other = write(dir.path(), "other-ca.pem", &self::ca().2);
        let _prosody = start_prosody(dir.path(), &issue(&ca, "prosody.test"), Some(&cafile));
        let rookery = start_rookery(
            dir.path(),
            &issue(&ca, "rookery.test"),
            Some(&other),
            "s2s_secure_auth: true\n",
        );
        let mut alice = rookery_user(&rookery).await;
        let mut pat = prosody_user().await;
        alice
            .send("<message to='pat@prosody.test' id='m1' type='chat'><body>x</body></message>")
            .await;
        alice
            .expect_message_error("m1", "remote-server-not-found")
            .await;
        pat.send("<message to='alice@rookery.test' id='m2' type='chat'><body>x</body></message>")
            .await;
        let e = pat
            .recv_where("bounce", |e| {
                e.name == "message" && e.attr("id") == Some("m2")
            })
            .await;
        assert_eq!(e.attr("type"), Some("error"), "{e}");
        alice.expect_silence(Duration::from_millis(300)).await;
        assert_eq!(rookery.ctl_ok(&["incoming_s2s_number"]).trim(), "0");
        assert_eq!(rookery.ctl_ok(&["outgoing_s2s_number"]).trim(), "0");
    }
}
