//! Federation with a real ejabberd (Debian's package, installed by
//! `.ci/run`; the check needs root to run ejabberd as its own user, and is
//! skipped outside CI when ejabberd is missing or the user is not root).
//!
//! Each round starts a fresh ejabberd serving `ejabberd.test` on 127.0.0.1
//! (c2s and s2s on free ports) from a directory of the test's own (never
//! /etc/ejabberd), as the `ejabberd` user with its own Erlang node name and
//! distribution port, stopped with its own ejabberdctl (and killed by PID if
//! it lingers). Rookery serves `rookery.test` (s2s on 127.0.0.1, port 0)
//! and finds ejabberd through `s2s_hosts`; ejabberd finds Rookery by DNS:
//! the test serves `_xmpp-server._tcp.rookery.test` SRV (target `localhost`,
//! Rookery's port) from a DNS server of its own (tests/common/dns.rs) that
//! ejabberd's Erlang resolver is pointed at through an `inetrc`.
//!
//! How ejabberd 23.01 resolves (why earlier attempts failed with
//! "DNS lookup failed: enoname"): SRV records are asked with the Erlang
//! resolver (inet_res), whose nameservers come from the `inetrc`, except
//! that it reads /etc/resolv.conf lazily and then uses the system's
//! nameservers instead, unless the `inetrc` sets `{resolv_conf, ""}` before
//! its `nameserver` line. The SRV target's address is then looked up with
//! the system's getaddrinfo (p1_xmpp's xmpp_stream_out calls
//! net:getaddrinfo), which never asks the `inetrc` nameserver: a target the
//! system cannot resolve (`rookery.test`) ends in `enoname`. Hence the
//! target `localhost`.
//!
//! Checked in three rounds: SASL EXTERNAL both ways (both trust the test
//! CA), dialback both ways (neither does), and refusal both ways when
//! Rookery requires verified certificates (`s2s_secure_auth`) and trusts
//! another CA. In each accepting round: messages both ways, subscriptions
//! both ways with presence, ping and disco#info to the other server both
//! ways, a message to a nonexistent user bouncing both ways, and the
//! connections and their authentication in `rookery ctl s2s_connections`;
//! then federated rooms (XEP-0045) both ways: ejabberd's user in a room of
//! Rookery's `conference.rookery.test` and Rookery's user in a room of
//! ejabberd's mod_muc (`conference.ejabberd.test`), each service domain on
//! s2s streams of its own (both certificates name the MUC service too;
//! ejabberd finds Rookery's service by its own SRV record).
//! About 40 s (each ejabberd starts in 6-12 s).

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::dns::{Dns, Rr};
use common::*;

/// A validity of 30 days (rcgen's default end, year 4096, overflows
/// ejabberd's certificate-expiry timers and crashes its start).
fn validity(params: &mut rcgen::CertificateParams) {
    let now = std::time::SystemTime::now();
    params.not_before = (now - Duration::from_secs(3600)).into();
    params.not_after = (now + Duration::from_secs(30 * 86400)).into();
}

fn ca() -> (rcgen::CertificateParams, rcgen::KeyPair, String) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    validity(&mut params);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Rookery ejabberd check CA");
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let key = rcgen::KeyPair::generate().unwrap();
    let pem = params.self_signed(&key).unwrap().pem();
    (params, key, pem)
}

/// Certificate and key PEM for `domain` and its MUC service
/// `conference.DOMAIN` (serverAuth + clientAuth).
fn issue(ca: &(rcgen::CertificateParams, rcgen::KeyPair, String), domain: &str) -> String {
    let names = vec![domain.to_string(), format!("conference.{domain}")];
    let mut params = rcgen::CertificateParams::new(names).unwrap();
    validity(&mut params);
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
    format!("{}{}", cert.pem(), key.serialize_pem())
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

struct Ejabberd {
    dir: PathBuf,
    ctl: Vec<String>,
}

impl Ejabberd {
    /// Run ejabberdctl; its output is appended to `ejabberdctl.out`.
    fn ctl(&self, args: &[&str]) -> bool {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("ejabberdctl.out"))
            .unwrap();
        Command::new(&self.ctl[0])
            .args(&self.ctl[1..])
            .args(args)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }
}

impl Drop for Ejabberd {
    fn drop(&mut self) {
        self.ctl(&["stop"]);
        // If it is still there, end the VM this test started, by its PID.
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("ejabberd.pid")) {
            if let Ok(pid) = pid.trim().parse::<u32>() {
                let deadline = Instant::now() + Duration::from_secs(10);
                while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(200));
                }
                if Path::new(&format!("/proc/{pid}")).exists() {
                    let _ = Command::new("kill")
                        .args(["-KILL", &pid.to_string()])
                        .status();
                }
            }
        }
        if std::thread::panicking() {
            let log =
                std::fs::read_to_string(self.dir.join("logs/ejabberd.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            let ctl = std::fs::read_to_string(self.dir.join("ejabberdctl.out")).unwrap_or_default();
            eprintln!("----- ejabberdctl output -----\n{ctl}");
            eprintln!("----- ejabberd log -----");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

/// Ports for ejabberd (c2s, s2s) on 127.0.0.1: free when asked.
use crate::common::ports::free_port;

struct Ports {
    c2s: u16,
    s2s: u16,
}

fn start_ejabberd(
    dir: &Path,
    cert: &str,
    cafile: Option<&Path>,
    ports: &Ports,
    dns: &Dns,
) -> Ejabberd {
    let d = dir.display().to_string();
    for sub in ["spool", "logs"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    write(dir, "ejabberd.pem", cert);
    let cafile = match cafile {
        Some(ca) => format!("s2s_cafile: \"{}\"\n", ca.display()),
        None => String::new(),
    };
    let yml = format!(
        r#"hosts: ["ejabberd.test"]
loglevel: info
certfiles: ["{d}/ejabberd.pem"]
{cafile}s2s_use_starttls: required
listen:
  - port: {c2s}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    starttls_required: true
  - port: {s2s}
    ip: "127.0.0.1"
    module: ejabberd_s2s_in
auth_method: internal
acl:
  local:
    user_regexp: ""
access_rules:
  local:
    allow: local
  c2s:
    allow: all
  s2s:
    allow: all
api_permissions:
  "console commands":
    from: [ejabberd_ctl]
    who: all
    what: "*"
modules:
  mod_disco: {{}}
  mod_ping: {{}}
  mod_roster: {{}}
  mod_s2s_dialback: {{}}
  mod_muc:
    host: "conference.ejabberd.test"
"#,
        c2s = ports.c2s,
        s2s = ports.s2s,
    );
    write(dir, "ejabberd.yml", &yml);
    let dist = free_port();
    write(
        dir,
        "ejabberdctl.cfg",
        &format!(
            "ERLANG_NODE=rookerys2s{}@localhost\nERL_DIST_PORT={dist}\nINET_DIST_INTERFACE=127.0.0.1\n\
             ERL_EPMD_ADDRESS=127.0.0.1\nEJABBERD_PID_PATH={d}/ejabberd.pid\nEJABBERD_BYPASS_WARNINGS=true\n",
            std::process::id()
        ),
    );
    // ejabberdctl exports ERL_INETRC=<config dir>/inetrc. The Erlang
    // resolver (inet_res, which ejabberd uses for SRV queries) reads
    // /etc/resolv.conf lazily and then replaces the inetrc's nameservers
    // with the system's, unless `resolv_conf` is set to "" (no file) before
    // the `nameserver` line: then only the test's DNS server is asked.
    // The address of an SRV target is looked up differently: with the
    // system's getaddrinfo (net:getaddrinfo in xmpp_stream_out), which never
    // asks that nameserver, so SRV targets must be names the system knows.
    write(
        dir,
        "inetrc",
        &format!(
            "{{lookup,[\"file\",\"dns\"]}}.\n{{resolv_conf,\"\"}}.\n{{nameserver,{{127,0,0,1}},{}}}.\n",
            dns.addr.port()
        ),
    );
    let chown = |p: &str| {
        Command::new("chown")
            .args(["-R", "ejabberd:ejabberd", p])
            .status()
            .unwrap();
    };
    Command::new("chmod").args(["755", &d]).status().unwrap();
    chown(&d);
    let ctl: Vec<String> = [
        "setpriv",
        "--reuid=ejabberd",
        "--regid=ejabberd",
        "--init-groups",
        "env",
        "HOME=/var/lib/ejabberd",
        "ejabberdctl",
        "--config-dir",
        &d,
        "--config",
        &format!("{d}/ejabberd.yml"),
        "--ctl-config",
        &format!("{d}/ejabberdctl.cfg"),
        "--spool",
        &format!("{d}/spool"),
        "--logs",
        &format!("{d}/logs"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let e = Ejabberd {
        dir: dir.to_path_buf(),
        ctl,
    };
    assert!(e.ctl(&["start"]), "ejabberdctl start failed");
    // `started` waits (up to about a minute) until the node is up.
    assert!(e.ctl(&["started"]), "ejabberd did not start");
    assert!(
        e.ctl(&["register", "pat", "ejabberd.test", "secret"]),
        "register failed"
    );
    e
}

fn start_rookery(
    dir: &Path,
    cert: &str,
    cafile: Option<&Path>,
    ports: &Ports,
    extra: &str,
) -> Server {
    let certfile = write(dir, "rookery.pem", cert);
    let mut yaml = format!(
        "certfiles: [{0:?}]\ns2s_use_starttls: required\ns2s_hosts:\n  ejabberd.test: \"127.0.0.1:{1}\"\n  conference.ejabberd.test: \"127.0.0.1:{1}\"\n",
        certfile.display().to_string(),
        ports.s2s
    );
    if let Some(ca) = cafile {
        yaml.push_str(&format!("s2s_cafile: {:?}\n", ca.display().to_string()));
    }
    yaml.push_str(extra);
    let s = Server::start_with(Config {
        hosts: vec!["rookery.test".into()],
        extra_listeners: vec!["port: 0\nip: 127.0.0.1\nmodule: ejabberd_s2s_in".into()],
        extra_yaml: yaml,
        loglevel: "debug".into(),
        ..Config::default()
    });
    s.register("alice", "rookery.test", "secret");
    s
}

fn s2s_port(s: &Server) -> u16 {
    s.listeners
        .iter()
        .find(|l| l.module == "s2s")
        .expect("an s2s listener")
        .addr
        .port()
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

async fn ejabberd_user(ports: &Ports) -> Client {
    ejabberd_user_as(ports, "laptop").await
}

async fn ejabberd_user_as(ports: &Ports, resource: &str) -> Client {
    let mut c = Client::connect(format!("127.0.0.1:{}", ports.c2s).parse().unwrap()).await;
    c.domain = "ejabberd.test".into();
    c.open_stream().await;
    c.starttls().await;
    c.auth_plain("pat", "secret")
        .await
        .expect("PLAIN login at ejabberd");
    c.open_stream().await;
    c.bind(Some(resource)).await.unwrap();
    c.send("<iq type='get' id='rg'><query xmlns='jabber:iq:roster'/></iq>")
        .await;
    c.send("<presence/>").await;
    im::sync(&mut c).await;
    c
}

/// Messages, subscriptions with presence, iqs to the other server and
/// bounces, both ways.
async fn exchange(rookery: &Server, expected_auth: &str, ports: &Ports) {
    let mut alice = rookery_user(rookery).await;
    let mut pat = ejabberd_user(ports).await;

    // Messages both ways, then a subscription each way with presence.
    common::federation::chat_and_subscribe(&mut alice, &mut pat, "ejabberd.test").await;

    // iq to the other server: ping and disco#info, both ways.
    for (c, server) in [(&mut alice, "ejabberd.test"), (&mut pat, "rookery.test")] {
        let r = c
            .request(
                &format!("<iq type='get' to='{server}' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>"),
                "p1",
            )
            .await;
        assert_eq!(r.attr("type"), Some("result"), "{r}");
        let r = c
            .request(
                &format!("<iq type='get' to='{server}' id='d1'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"),
                "d1",
            )
            .await;
        assert_eq!(r.attr("type"), Some("result"), "{r}");
        let q = r.child("query").expect("disco#info query");
        assert!(
            q.children_named("feature")
                .any(|f| f.attr("var") == Some("urn:xmpp:ping")),
            "{r}"
        );
    }

    // A nonexistent user on the other server: the message bounces.
    for (c, to) in [
        (&mut alice, "nobody@ejabberd.test"),
        (&mut pat, "nobody@rookery.test"),
    ] {
        c.send(&format!(
            "<message to='{to}' id='nb' type='normal'><body>x</body></message>"
        ))
        .await;
        let e = c
            .recv_where("bounce", |e| {
                e.name == "message" && e.attr("id") == Some("nb")
            })
            .await;
        assert_eq!(e.attr("type"), Some("error"), "{e}");
        assert_eq!(e.attr("from"), Some(to), "{e}");
    }

    let conns = rookery.ctl_ok(&["s2s_connections"]);
    eprintln!("s2s connections:\n{conns}");
    assert!(
        conns.contains(&format!(
            "out rookery.test ejabberd.test {expected_auth} tls"
        )),
        "{conns}"
    );
    assert!(
        conns.contains(&format!(
            "in rookery.test ejabberd.test {expected_auth} tls"
        )),
        "{conns}"
    );
}

/// Federated rooms both ways: pat (ejabberd) in a room of Rookery's
/// `conference.rookery.test` with alice (groupchat both ways, a private
/// message each way, kicked by alice, then refused `not-acceptable` as a
/// non-occupant); alice in a room of ejabberd's mod_muc (the same exchange,
/// kicked by pat, and out of the room when her session ends). The service
/// domains' own s2s streams authenticate as `expected_auth`.
async fn muc_exchange(rookery: &Server, expected_auth: &str, ports: &Ports) {
    let alice = rookery_user_as(rookery, "muc").await;
    let pat = ejabberd_user_as(ports, "muc").await;
    common::muc::federated_rooms_both_ways(rookery, alice, pat, "ejabberd.test", expected_auth)
        .await;
}

/// Whether this check can run: ejabberd installed, and root (to run
/// ejabberd as its own user). In CI both are required.
fn ejabberd_available() -> bool {
    let found = Path::new("/usr/sbin/ejabberdctl").exists()
        || Command::new("ejabberdctl")
            .arg("help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if std::env::var_os("CI").is_some() {
        assert!(found, "ejabberd is not installed (.ci/run installs it)");
        assert!(
            root,
            "the ejabberd check needs root (it runs ejabberd as its user)"
        );
    }
    if !found {
        eprintln!("SKIPPED: ejabberd is not installed (apt-get install ejabberd)");
    } else if !root {
        eprintln!("SKIPPED: the ejabberd check needs root (it runs ejabberd as its user)");
    }
    found && root
}

/// Which check a round makes.
#[derive(PartialEq)]
enum Mode {
    /// Both trust the test CA: SASL EXTERNAL both ways.
    External,
    /// Neither does: dialback both ways.
    Dialback,
    /// Rookery requires verified certificates (`s2s_secure_auth`) and
    /// trusts another CA only: refused both ways, stanzas bounce.
    SecureAuthRefuses,
}

/// One round: a fresh ejabberd (it remembers refused peers for minutes)
/// and Rookery, then the round's checks.
async fn round(ca: &(rcgen::CertificateParams, rcgen::KeyPair, String), mode: Mode) {
    use std::os::unix::fs::PermissionsExt;
    let started = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("rookery-ejabberd-")
        .tempdir()
        .unwrap();
    // ejabberd runs as its own user: it must reach its directory and the CA.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let cafile = write(dir.path(), "ca.pem", &ca.2);
    let other_ca = write(dir.path(), "other-ca.pem", &self::ca().2);
    for f in [&cafile, &other_ca] {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let (ejabberd_ca, rookery_ca, extra) = match mode {
        Mode::External => (Some(cafile.as_path()), Some(cafile.as_path()), ""),
        Mode::Dialback => (None, None, ""),
        Mode::SecureAuthRefuses => (
            Some(cafile.as_path()),
            Some(other_ca.as_path()),
            "s2s_secure_auth: true\n",
        ),
    };
    let ports = Ports {
        c2s: free_port(),
        s2s: free_port(),
    };
    let rookery = start_rookery(
        dir.path(),
        &issue(ca, "rookery.test"),
        rookery_ca,
        &ports,
        extra,
    );
    // ejabberd finds Rookery by SRV: `localhost` (which getaddrinfo
    // resolves from /etc/hosts) on the port Rookery's s2s listener got.
    let dns = Dns::start(
        ["rookery.test", "conference.rookery.test"]
            .iter()
            .map(|d| {
                Rr::Srv(
                    format!("_xmpp-server._tcp.{d}"),
                    0,
                    5,
                    s2s_port(&rookery),
                    "localhost".into(),
                )
            })
            .collect(),
    );
    let edir = dir.path().join("ejabberd");
    std::fs::create_dir_all(&edir).unwrap();
    let _ejabberd = start_ejabberd(
        &edir,
        &issue(ca, "ejabberd.test"),
        ejabberd_ca,
        &ports,
        &dns,
    );
    eprintln!("ejabberd started after {:?}", started.elapsed());
    match mode {
        Mode::External => {
            exchange(&rookery, "sasl-external", &ports).await;
            muc_exchange(&rookery, "sasl-external", &ports).await;
        }
        Mode::Dialback => {
            exchange(&rookery, "dialback", &ports).await;
            muc_exchange(&rookery, "dialback", &ports).await;
        }
        Mode::SecureAuthRefuses => {
            let mut alice = rookery_user(&rookery).await;
            let mut pat = ejabberd_user(&ports).await;
            alice
                .send(
                    "<message to='pat@ejabberd.test' id='m1' type='chat'><body>x</body></message>",
                )
                .await;
            alice
                .expect_message_error("m1", "remote-server-not-found")
                .await;
            pat.send(
                "<message to='alice@rookery.test' id='m2' type='chat'><body>x</body></message>",
            )
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
    assert!(
        dns.asked("_xmpp-server._tcp.rookery.test", "SRV"),
        "{:?}",
        dns.log()
    );
    if mode != Mode::SecureAuthRefuses {
        assert!(
            dns.asked("_xmpp-server._tcp.conference.rookery.test", "SRV"),
            "{:?}",
            dns.log()
        );
    }
    eprintln!("round done in {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federates_with_ejabberd() {
    if !ejabberd_available() {
        return;
    }
    let ca = ca();
    round(&ca, Mode::External).await;
    round(&ca, Mode::Dialback).await;
    round(&ca, Mode::SecureAuthRefuses).await;
}
