//! Migration from real Prosody and ejabberd installations (Debian's
//! packages, installed by `.ci/run`): each test makes a private instance
//! (own config, own data directory, 127.0.0.1 only, never the system's
//! config), fills it with accounts, rosters with subscriptions, pending
//! subscription requests, vCards, private XML (and, for ejabberd, offline
//! messages), exports it with the server's own XEP-0227 tool, imports the
//! files with `rookery ctl import_piefxis` into a fresh Rookery, and logs
//! in as the imported users with their old passwords over TLS.
//!
//! - Prosody 0.12: data made through Prosody itself (clients over c2s),
//!   exported with `prosody-migrator` to its `xep0227` store. Debian's
//!   migrator writes the XEP-0227 files into its compiled-in data directory
//!   (`/var/lib/prosody`); the test runs the unchanged script with that one
//!   global redirected to a directory of its own (a `lua5.4 -e` prelude).
//!   Prosody stores SCRAM-SHA-1 secrets only, and its 0.12 `xep0227` store
//!   has no offline-message handler, so no offline messages come over.
//! - ejabberd 23.01: data made through ejabberd itself (XEP-0077
//!   registration and clients over a plaintext c2s listener on 127.0.0.1;
//!   each `ejabberdctl` call costs seconds), exported with `ejabberdctl
//!   export_piefxis` (a top file `xi:include`-ing one file per host). One
//!   host keeps SCRAM secrets (`auth_password_format: scram`, exported as
//!   SCRAM-SHA-1 only, base64-encoded twice), one plaintext passwords.
//!
//! Both need root (the servers run as their own system users) and skip
//! with a message when the tools are missing (they fail under `CI`).

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::ejabberd::*;
use common::*;

/// A Rookery client on `host`, STARTTLS done, not authenticated.
async fn tls_client(server: &Server, host: &str) -> Client {
    let mut c = Client::connect(server.c2s()).await;
    c.domain = host.to_string();
    c.open_stream().await;
    c.starttls().await;
    c
}

/// Restart the stream after authentication and bind; then initial presence.
async fn finish_login(c: &mut Client) -> Vec<Element> {
    c.open_stream().await;
    c.bind(Some("migrated")).await.unwrap();
    c.send("<iq type='get' id='r0'><query xmlns='jabber:iq:roster'/></iq>")
        .await;
    c.send("<presence/>").await;
    im::sync(c).await
}

/// (jid, subscription, ask, name, sorted groups) of each item of `c`'s roster.
async fn roster_of(c: &mut Client) -> Vec<(String, String, bool, String, Vec<String>)> {
    let (_, items) = im::roster(c).await;
    let mut out: Vec<_> = items
        .iter()
        .map(|i| {
            let mut groups: Vec<String> =
                i.children_named("group").map(|g| g.text.clone()).collect();
            groups.sort();
            (
                i.attr("jid").unwrap_or("").to_string(),
                i.attr("subscription").unwrap_or("none").to_string(),
                i.attr("ask") == Some("subscribe"),
                i.attr("name").unwrap_or("").to_string(),
                groups,
            )
        })
        .collect();
    out.sort();
    out
}

async fn vcard_fn(c: &mut Client) -> Option<String> {
    let r = c
        .request(
            "<iq type='get' id='vc'><vCard xmlns='vcard-temp'/></iq>",
            "vc",
        )
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    r.child_ns("vCard", "vcard-temp")
        .and_then(|v| v.child_ns("FN", "vcard-temp"))
        .map(|f| f.text.clone())
}

async fn private_notes(c: &mut Client) -> String {
    let r = c
        .request(
            "<iq type='get' id='pv'><query xmlns='jabber:iq:private'><storage xmlns='storage:rosternotes'/></query></iq>",
            "pv",
        )
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    r.to_string()
}

fn s(v: &str) -> String {
    v.to_string()
}

// ---------------------------------------------------------------- Prosody

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
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("----- prosody log -----");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

const PROSODY_USERS: &[(&str, &str)] = &[
    ("alice", "alice-pw"),
    ("bob", "b0b pässword"),
    ("carol", "carol-pw"),
];

fn prosody_config(dir: &Path, port: u16) -> PathBuf {
    let d = dir.display();
    write(
        dir,
        "prosody.cfg.lua",
        &format!(
            r#"run_as_root = true
daemonize = false
pidfile = "{d}/prosody.pid"
data_path = "{d}/data"
certificates = "{d}/certs"
interfaces = {{ "127.0.0.1" }}
local_interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {port} }}
s2s_ports = {{}}
c2s_direct_tls_ports = {{}}
s2s_direct_tls_ports = {{}}
component_ports = {{}}
http_ports = {{}}
https_ports = {{}}
log = {{ debug = "{d}/prosody.log" }}
modules_enabled = {{ "roster", "saslauth", "disco", "ping", "vcard", "private", "offline" }}
authentication = "internal_hashed"
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
VirtualHost "prosody.test"
"#
        ),
    )
}

async fn prosody_client(port: u16, user: &str, password: &str) -> Client {
    let mut c = Client::connect(format!("127.0.0.1:{port}").parse().unwrap()).await;
    c.domain = "prosody.test".into();
    c.open_stream().await;
    c.auth_scram("SCRAM-SHA-1", user, password)
        .await
        .unwrap_or_else(|e| panic!("login of {user} at Prosody: {e}"));
    c.open_stream().await;
    c.bind(Some("pc")).await.unwrap();
    c
}

/// Makes the data through a running Prosody, stops it, and exports it.
async fn prosody_export(dir: &Path) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::create_dir_all(dir.join("certs")).unwrap();
    std::fs::create_dir_all(dir.join("export")).unwrap();
    let port = free_port();
    let cfg = prosody_config(dir, port);
    let cfg_s = cfg.display().to_string();
    for (user, pw) in PROSODY_USERS {
        let (ok, out) = run(Command::new("prosodyctl").args([
            "--config",
            &cfg_s,
            "register",
            user,
            "prosody.test",
            pw,
        ]));
        assert!(ok, "prosodyctl register {user}: {out}");
    }
    let child = Command::new("prosody")
        .args(["--config", &cfg_s])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prosody");
    let prosody = Prosody {
        child,
        dir: dir.to_path_buf(),
    };
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < deadline,
            "Prosody does not listen on {addr}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let mut alice = prosody_client(port, "alice", "alice-pw").await;
    let mut bob = prosody_client(port, "bob", "b0b pässword").await;
    for c in [&mut alice, &mut bob] {
        c.send("<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>")
            .await;
        c.send("<presence/>").await;
        im::sync(c).await;
    }
    // alice <-> bob: both, with a name and groups on alice's side.
    im::roster_set(
        &mut alice,
        &im::item_xml("bob@prosody.test", Some("Bobby"), &["Friends", "Family"]),
    )
    .await;
    im::send_sub(&mut alice, "bob@prosody.test", "subscribe").await;
    im::recv_presence(&mut bob, "alice@prosody.test", Some("subscribe")).await;
    im::send_sub(&mut bob, "alice@prosody.test", "subscribed").await;
    im::send_sub(&mut bob, "alice@prosody.test", "subscribe").await;
    im::recv_presence(&mut alice, "bob@prosody.test", Some("subscribe")).await;
    im::send_sub(&mut alice, "bob@prosody.test", "subscribed").await;
    // alice asks carol (offline): pending out for alice, pending in for carol.
    im::send_sub(&mut alice, "carol@prosody.test", "subscribe").await;
    let r = alice
        .request(
            "<iq type='set' id='v'><vCard xmlns='vcard-temp'><FN>Alice Liddell</FN><NICKNAME>ali</NICKNAME></vCard></iq>",
            "v",
        )
        .await;
    assert_eq!(r.attr("type"), Some("result"), "vCard set at Prosody: {r}");
    let r = alice
        .request(
            "<iq type='set' id='p'><query xmlns='jabber:iq:private'><storage xmlns='storage:rosternotes'><note jid='bob@prosody.test'>likes tea</note></storage></query></iq>",
            "p",
        )
        .await;
    assert_eq!(
        r.attr("type"),
        Some("result"),
        "private set at Prosody: {r}"
    );
    im::sync(&mut alice).await;
    im::sync(&mut bob).await;
    let roster = roster_of(&mut alice).await;
    assert!(
        roster.contains(&(
            s("bob@prosody.test"),
            s("both"),
            false,
            s("Bobby"),
            vec![s("Family"), s("Friends")]
        )),
        "Prosody roster of alice: {roster:?}"
    );
    drop(alice);
    drop(bob);
    drop(prosody);

    // Export: the migrator runs as the prosody user.
    write(
        dir,
        "migrator.cfg.lua",
        &format!(
            r#"input {{ type = "internal"; path = "{d}/data"; hosts = {{ ["prosody.test"] = {{ "accounts", "roster", "vcard", "private" }} }} }}
output {{ type = "xep0227"; path = "{d}/export"; }}
"#,
            d = dir.display()
        ),
    );
    chown("prosody", dir);
    let (ok, out) = run(Command::new("lua5.4")
        .env("ROOKERY_MIGRATOR_OUT", dir.join("export"))
        .args([
            "-e",
            "setmetatable(_G, { __newindex = function(t, k, v) \
               if k == 'CFG_DATADIR' then v = os.getenv('ROOKERY_MIGRATOR_OUT') end \
               rawset(t, k, v) end })",
            "/usr/bin/prosody-migrator",
            "--config",
            &dir.join("migrator.cfg.lua").display().to_string(),
            "input",
            "output",
        ]));
    assert!(ok && out.contains("Done!"), "prosody-migrator: {out}");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("export"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_from_prosody() {
    if !available(&["prosody", "prosodyctl", "prosody-migrator", "lua5.4"]) {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("rookery-prosody-export-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let files = prosody_export(dir.path()).await;
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "alice@prosody.test.xml",
            "bob@prosody.test.xml",
            "carol@prosody.test.xml"
        ],
        "one file per account"
    );
    let alice_xml = std::fs::read_to_string(&files[0]).unwrap();
    let carol_xml = std::fs::read_to_string(&files[2]).unwrap();
    assert!(
        carol_xml.contains("<presence") && carol_xml.contains("alice@prosody.test"),
        "carol's pending request is not in Prosody's export: {carol_xml}"
    );
    assert!(
        alice_xml.contains("mechanism='SCRAM-SHA-1'") && !alice_xml.contains("SCRAM-SHA-256"),
        "{alice_xml}"
    );

    let server = Server::start_with(Config {
        hosts: vec!["prosody.test".into()],
        ..Config::default()
    });
    for f in &files {
        let out = server.ctl_ok(&["import_piefxis", &f.display().to_string()]);
        assert!(out.contains("Imported 1 account(s)"), "{out}");
        assert!(out.contains("SCRAM-SHA-1 credentials only"), "{out}");
    }

    // alice: SCRAM-SHA-256 is refused (only a SHA-1 secret), SCRAM-SHA-1 works.
    let mut c = tls_client(&server, "prosody.test").await;
    assert_eq!(
        c.auth_scram("SCRAM-SHA-256", "alice", "alice-pw").await,
        Err("not-authorized".into())
    );
    let mut alice = tls_client(&server, "prosody.test").await;
    alice
        .auth_scram("SCRAM-SHA-1", "alice", "alice-pw")
        .await
        .expect("SCRAM-SHA-1 login with the Prosody password");
    finish_login(&mut alice).await;
    assert_eq!(
        roster_of(&mut alice).await,
        vec![
            (
                s("bob@prosody.test"),
                s("both"),
                false,
                s("Bobby"),
                vec![s("Family"), s("Friends")]
            ),
            (s("carol@prosody.test"), s("none"), true, s(""), vec![]),
        ]
    );
    assert_eq!(vcard_fn(&mut alice).await.as_deref(), Some("Alice Liddell"));
    let notes = private_notes(&mut alice).await;
    assert!(notes.contains("likes tea"), "{notes}");
    let log = server.stderr_tail();
    assert!(
        log.contains(
            "SCRAM-SHA-256 for alice@prosody.test refused: the account has only SCRAM-SHA-1"
        ),
        "no log line saying why SCRAM-SHA-256 failed:\n{log}"
    );

    // bob: PLAIN over TLS with the old password upgrades the credentials;
    // SCRAM-SHA-256 works from then on.
    let mut c = tls_client(&server, "prosody.test").await;
    assert_eq!(
        c.auth_scram("SCRAM-SHA-256", "bob", "b0b pässword").await,
        Err("not-authorized".into())
    );
    let mut c = tls_client(&server, "prosody.test").await;
    c.auth_plain("bob", "b0b pässword")
        .await
        .expect("PLAIN login with the Prosody password");
    let mut bob = tls_client(&server, "prosody.test").await;
    bob.auth_scram("SCRAM-SHA-256", "bob", "b0b pässword")
        .await
        .expect("SCRAM-SHA-256 after the PLAIN login");
    finish_login(&mut bob).await;
    let roster = roster_of(&mut bob).await;
    assert_eq!(
        roster,
        vec![(s("alice@prosody.test"), s("both"), false, s(""), vec![])]
    );
    let mut c = tls_client(&server, "prosody.test").await;
    c.auth_scram("SCRAM-SHA-1", "bob", "b0b pässword")
        .await
        .expect("SCRAM-SHA-1 after the upgrade");

    // carol: alice's request, made while carol was offline at Prosody,
    // reaches her when she comes online here.
    let mut carol = tls_client(&server, "prosody.test").await;
    carol.auth_plain("carol", "carol-pw").await.unwrap();
    let got = finish_login(&mut carol).await;
    assert!(
        got.iter()
            .any(|e| im::is_presence(e, "alice@prosody.test", Some("subscribe"))),
        "pending request not delivered: {}",
        im::show(&got)
    );
    assert!(roster_of(&mut carol).await.is_empty());
}

// ---------------------------------------------------------------- ejabberd

fn start_ejabberd(dir: &Path, port: u16) -> Ejabberd {
    for sub in ["spool", "logs", "export"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    // One plaintext c2s listener on loopback, for the clients that make
    // the data (each ejabberdctl call costs seconds; XMPP milliseconds).
    write(
        dir,
        "ejabberd.yml",
        &format!(
            r#"hosts: ["ejabberd.test", "plain.test"]
loglevel: info
listen:
  - port: {port}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    starttls: false
registration_timeout: infinity
auth_method: internal
auth_password_format: scram
host_config:
  plain.test:
    auth_password_format: plain
acl:
  local:
    user_regexp: ""
access_rules:
  local:
    allow: local
api_permissions:
  "console commands":
    from: [ejabberd_ctl]
    who: all
    what: "*"
modules:
  mod_admin_extra: {{}}
  mod_roster: {{}}
  mod_offline: {{}}
  mod_vcard: {{}}
  mod_private: {{}}
  mod_ping: {{}}
  mod_register:
    ip_access: all
    access: all
"#
        ),
    );
    Ejabberd::start(dir, "rookerymigrate")
}

/// An ejabberd client: plaintext c2s, SCRAM-SHA-1 (what ejabberd offers
/// for accounts stored as SCRAM), bound, roster fetched, available.
async fn ejabberd_client(port: u16, host: &str, user: &str, password: &str) -> Client {
    let mut c = Client::connect(format!("127.0.0.1:{port}").parse().unwrap()).await;
    c.domain = host.into();
    c.open_stream().await;
    c.auth_scram("SCRAM-SHA-1", user, password)
        .await
        .unwrap_or_else(|e| panic!("login of {user}@{host} at ejabberd: {e}"));
    c.open_stream().await;
    c.bind(Some("pc")).await.unwrap();
    c.send("<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>")
        .await;
    c.send("<presence/>").await;
    im::sync(&mut c).await;
    c
}

/// XEP-0077 registration at ejabberd (before authentication).
async fn ejabberd_register(port: u16, host: &str, user: &str, password: &str) {
    let mut c = Client::connect(format!("127.0.0.1:{port}").parse().unwrap()).await;
    c.domain = host.into();
    c.open_stream().await;
    let r = c
        .request(
            &format!(
                "<iq type='set' id='reg'><query xmlns='jabber:iq:register'><username>{}</username><password>{}</password></query></iq>",
                client::esc(user),
                client::esc(password)
            ),
            "reg",
        )
        .await;
    assert_eq!(
        r.attr("type"),
        Some("result"),
        "registering {user}@{host}: {r}"
    );
}

async fn ejabberd_export(dir: &Path) -> PathBuf {
    let port = free_port();
    let e = start_ejabberd(dir, port);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < deadline,
            "ejabberd does not listen on {addr}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let h = "ejabberd.test";
    for (user, pw) in [("alice", "alice-pw"), ("bob", "bob pw"), ("carol", "c4rol")] {
        ejabberd_register(port, h, user, pw).await;
    }
    ejabberd_register(port, "plain.test", "pat", "pat's pw").await;

    let mut alice = ejabberd_client(port, h, "alice", "alice-pw").await;
    let mut bob = ejabberd_client(port, h, "bob", "bob pw").await;
    // alice <-> bob: both, with a name and groups on alice's side.
    im::roster_set(
        &mut alice,
        &im::item_xml("bob@ejabberd.test", Some("Bobby"), &["Friends", "Family"]),
    )
    .await;
    im::send_sub(&mut alice, "bob@ejabberd.test", "subscribe").await;
    im::recv_presence(&mut bob, "alice@ejabberd.test", Some("subscribe")).await;
    im::send_sub(&mut bob, "alice@ejabberd.test", "subscribed").await;
    im::send_sub(&mut bob, "alice@ejabberd.test", "subscribe").await;
    im::recv_presence(&mut alice, "bob@ejabberd.test", Some("subscribe")).await;
    im::send_sub(&mut alice, "bob@ejabberd.test", "subscribed").await;
    // alice asks carol (offline): pending out for alice, pending in for carol.
    im::roster_set(
        &mut alice,
        &im::item_xml("carol@ejabberd.test", Some("Carol"), &["Work"]),
    )
    .await;
    im::send_sub(&mut alice, "carol@ejabberd.test", "subscribe").await;
    let r = alice
        .request(
            "<iq type='set' id='v'><vCard xmlns='vcard-temp'><FN>Alice Liddell</FN><NICKNAME>ali</NICKNAME></vCard></iq>",
            "v",
        )
        .await;
    assert_eq!(r.attr("type"), Some("result"), "vCard set at ejabberd: {r}");
    let r = alice
        .request(
            "<iq type='set' id='p'><query xmlns='jabber:iq:private'><storage xmlns='storage:rosternotes'><note jid='bob@ejabberd.test'>likes tea</note></storage></query></iq>",
            "p",
        )
        .await;
    assert_eq!(
        r.attr("type"),
        Some("result"),
        "private set at ejabberd: {r}"
    );
    im::sync(&mut alice).await;
    alice.close().await;
    drop(alice);
    // alice is offline now: bob's messages are stored for her.
    im::sync(&mut bob).await;
    // Until her session is gone at ejabberd (bounded): a ping to her full
    // JID fails then.
    for i in 0.. {
        let id = format!("ping-alice-{i}");
        let r = bob
            .request(
                &format!("<iq type='get' to='alice@ejabberd.test/pc' id='{id}'><ping xmlns='urn:xmpp:ping'/></iq>"),
                &id,
            )
            .await;
        if r.attr("type") == Some("error") {
            break;
        }
        assert!(i < 50, "alice's session at ejabberd does not end");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bob.send("<message to='alice@ejabberd.test' type='chat' id='m1'><body>hello from ejabberd</body></message>")
        .await;
    bob.send("<message to='alice@ejabberd.test' id='m2'><subject>Subj</subject><body>second &lt;offline&gt; &amp; message</body></message>")
        .await;
    im::sync(&mut bob).await;
    drop(bob);
    let count = e.ctl_ok(&["get_offline_count", "alice", h]);
    assert_eq!(count.lines().last().map(str::trim), Some("2"), "{count}");
    let export = dir.join("export");
    e.ctl_ok(&["export_piefxis", &export.display().to_string()]);
    drop(e);
    // The top file is the one without a host suffix.
    let mut files: Vec<PathBuf> = std::fs::read_dir(&export)
        .unwrap()
        .map(|f| f.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 3, "top file and one per host: {files:?}");
    let top = files
        .iter()
        .find(|f| {
            let n = f.file_name().unwrap().to_string_lossy();
            !n.contains("_ejabberd_test") && !n.contains("_plain_test")
        })
        .expect("top file")
        .clone();
    let text = std::fs::read_to_string(&top).unwrap();
    assert!(text.contains("xi:include"), "{text}");
    top
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_from_ejabberd() {
    if !available(&["ejabberdctl", "setpriv", "epmd"]) {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("rookery-ejabberd-export-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let top = ejabberd_export(dir.path()).await;

    let server = Server::start_with(Config {
        hosts: vec!["ejabberd.test".into(), "plain.test".into()],
        ..Config::default()
    });
    let out = server.ctl_ok(&["import_piefxis", &top.display().to_string()]);
    assert!(out.contains("Imported 4 account(s)"), "{out}");

    // pat had a plaintext password: full credentials at once.
    let mut pat = tls_client(&server, "plain.test").await;
    pat.auth_scram("SCRAM-SHA-256", "pat", "pat's pw")
        .await
        .expect("SCRAM-SHA-256 with the ejabberd password");

    // alice: SCRAM-SHA-1 only (ejabberd's scram format).
    let mut c = tls_client(&server, "ejabberd.test").await;
    assert_eq!(
        c.auth_scram("SCRAM-SHA-256", "alice", "alice-pw").await,
        Err("not-authorized".into())
    );
    let mut alice = tls_client(&server, "ejabberd.test").await;
    alice
        .auth_scram("SCRAM-SHA-1", "alice", "alice-pw")
        .await
        .expect("SCRAM-SHA-1 with the ejabberd password");
    let got = finish_login(&mut alice).await;
    let bodies = im::bodies(&got);
    assert_eq!(
        bodies,
        ["hello from ejabberd", "second <offline> & message"],
        "{}",
        im::show(&got)
    );
    let first = got
        .iter()
        .find(|e| e.name == "message")
        .expect("offline message");
    assert_eq!(first.attr("from"), Some("bob@ejabberd.test/pc"));
    assert!(
        first.child_ns("delay", im::NS_DELAY).is_some(),
        "no delay: {first}"
    );
    assert_eq!(
        roster_of(&mut alice).await,
        vec![
            (
                s("bob@ejabberd.test"),
                s("both"),
                false,
                s("Bobby"),
                vec![s("Family"), s("Friends")]
            ),
            (
                s("carol@ejabberd.test"),
                s("none"),
                true,
                s("Carol"),
                vec![s("Work")]
            ),
        ]
    );
    assert_eq!(vcard_fn(&mut alice).await.as_deref(), Some("Alice Liddell"));
    assert!(private_notes(&mut alice).await.contains("likes tea"));

    // bob: PLAIN over TLS, then SCRAM-SHA-256.
    let mut c = tls_client(&server, "ejabberd.test").await;
    c.auth_plain("bob", "bob pw").await.expect("PLAIN login");
    let mut bob = tls_client(&server, "ejabberd.test").await;
    bob.auth_scram("SCRAM-SHA-256", "bob", "bob pw")
        .await
        .expect("SCRAM-SHA-256 after the PLAIN login");

    // carol: alice's request, made while carol was offline at ejabberd,
    // reaches her when she comes online here.
    let mut carol = tls_client(&server, "ejabberd.test").await;
    carol.auth_plain("carol", "c4rol").await.unwrap();
    let got = finish_login(&mut carol).await;
    assert!(
        got.iter()
            .any(|e| im::is_presence(e, "alice@ejabberd.test", Some("subscribe"))),
        "pending request not delivered: {}",
        im::show(&got)
    );
    assert!(roster_of(&mut carol).await.is_empty());

    // Importing again changes nothing and says so.
    let out = server.ctl_ok(&["import_piefxis", &top.display().to_string()]);
    assert!(
        out.contains("Imported 0 account(s)") && out.contains("alice@ejabberd.test already exists"),
        "{out}"
    );
}
