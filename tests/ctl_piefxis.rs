//! XEP-0227 export/import (`export_piefxis`, `import_piefxis`) with the real
//! binary: a round trip between two servers (accounts with their SCRAM
//! credentials, rosters, pending subscription requests, offline messages,
//! vCards, private XML), ejabberd-style plaintext passwords,
//! SCRAM-SHA-1-only accounts (Prosody's and ejabberd's encodings) and their
//! own round trip, and what is refused or skipped. Exports of real Prosody
//! and ejabberd installations: tests/ctl_migrate_real.rs.

use crate::common;

use std::time::Duration;

use base64::Engine;
use common::*;

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// A `<scram-credentials/>` for `password`; `twice` encodes the values as
/// ejabberd 23.01 does (base64 of base64).
fn scram_xml(hash: ScramHash, password: &str, salt: &[u8], twice: bool) -> String {
    let (stored, server) = hash.stored_and_server_key(password, salt, 4096);
    let enc = |b: &[u8]| {
        if twice {
            b64(b64(b).as_bytes())
        } else {
            b64(b)
        }
    };
    format!(
        "<scram-credentials xmlns='urn:xmpp:pie:0#scram' mechanism='{}'><iter-count>4096</iter-count>\
         <salt>{}</salt><server-key>{}</server-key><stored-key>{}</stored-key></scram-credentials>",
        hash.base_name(),
        enc(salt),
        enc(&server),
        enc(&stored)
    )
}

async fn can_login(server: &Server, user: &str, password: &str) -> bool {
    let mut c = Client::connect_starttls(server.c2s()).await;
    c.auth_scram("SCRAM-SHA-256", user, password).await.is_ok()
}

#[tokio::test]
async fn round_trip_between_two_servers() {
    let a = server_with_users();
    a.ctl_ok(&[
        "add_rosteritem",
        "alice",
        "localhost",
        "bob",
        "localhost",
        "Bobby",
        "Friends",
        "both",
    ]);
    a.ctl_ok(&[
        "send_message",
        "chat",
        "bob@localhost",
        "alice@localhost",
        "",
        "kept for later",
    ]);
    // vCard, private XML and a pending request from carol, through XMPP.
    let mut al = Client::login(&a, "alice", "secret", Some("r")).await;
    let r = al
        .request(
            "<iq type='set' id='v'><vCard xmlns='vcard-temp'><FN>Alice &amp; Co</FN></vCard></iq>",
            "v",
        )
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    let r = al
        .request(
            "<iq type='set' id='p'><query xmlns='jabber:iq:private'><exodus xmlns='exodus:prefs'><pref>on</pref></exodus></query></iq>",
            "p",
        )
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    drop(al);
    a.register("carol", "localhost", "carolpw");
    let mut carol = Client::login(&a, "carol", "carolpw", Some("r")).await;
    carol
        .send("<presence to='alice@localhost' type='subscribe'><status>it is carol</status></presence>")
        .await;
    im::sync(&mut carol).await;
    drop(carol);
    a.ctl_ok(&["unregister", "carol", "localhost"]);

    let dir = a.dir().join("export");
    let out = a.ctl_ok(&["export_piefxis", &dir.display().to_string()]);
    assert!(out.contains("localhost: 2 accounts"), "{out}");
    let file = dir.join("localhost.xml");
    let xml = std::fs::read_to_string(&file).unwrap();
    assert!(
        xml.contains("urn:xmpp:pie:0#scram") && !xml.contains("secret"),
        "{xml}"
    );

    let b = Server::start();
    b.register("bob", "localhost", "other");
    let out = b.ctl_ok(&["import_piefxis", &file.display().to_string()]);
    assert!(out.contains("Imported 1 account(s)"), "{out}");
    assert!(
        out.contains("bob@localhost already exists; skipped"),
        "{out}"
    );
    assert!(
        can_login(&b, "alice", "secret").await,
        "imported credentials refused"
    );
    assert!(
        !can_login(&b, "bob", "hunter2").await,
        "existing account overwritten"
    );
    assert_eq!(
        b.ctl_ok(&["get_roster", "alice", "localhost"]).trim(),
        "bob@localhost\tBobby\tboth\tnone\tFriends"
    );
    assert!(
        xml.contains("<vCard xmlns='vcard-temp'>")
            && xml.contains("<query xmlns='jabber:iq:private'>")
            && xml.contains("it is carol"),
        "{xml}"
    );
    let mut alice = Client::login(&b, "alice", "secret", Some("r")).await;
    alice.send("<presence/>").await;
    let got = im::sync(&mut alice).await;
    assert_eq!(im::bodies(&got), ["kept for later"], "{}", im::show(&got));
    let req = got
        .iter()
        .find(|e| im::is_presence(e, "carol@localhost", Some("subscribe")))
        .unwrap_or_else(|| panic!("pending request not imported: {}", im::show(&got)));
    assert_eq!(req.child_text("status"), Some("it is carol"));
    let r = alice
        .request(
            "<iq type='get' id='v'><vCard xmlns='vcard-temp'/></iq>",
            "v",
        )
        .await;
    let fname = r
        .child_ns("vCard", "vcard-temp")
        .and_then(|v| v.child_ns("FN", "vcard-temp"))
        .map(|f| f.text.clone());
    assert_eq!(fname.as_deref(), Some("Alice & Co"), "{r}");
    let r = alice
        .request(
            "<iq type='get' id='p'><query xmlns='jabber:iq:private'><exodus xmlns='exodus:prefs'/></query></iq>",
            "p",
        )
        .await;
    let pref = r
        .child_ns("query", "jabber:iq:private")
        .and_then(|q| q.child_ns("exodus", "exodus:prefs"))
        .and_then(|e| e.child("pref"))
        .map(|p| p.text.clone());
    assert_eq!(pref.as_deref(), Some("on"), "{r}");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

#[tokio::test]
async fn sha1_only_accounts_import_log_in_and_round_trip() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sha1.xml");
    std::fs::write(
        &file,
        format!(
            "<server-data xmlns='urn:xmpp:pie:0'><host jid='localhost'>\
               <user name='dana'>{}</user>\
               <user name='erin'>{}</user>\
               <user name='bad'><scram-credentials xmlns='urn:xmpp:pie:0#scram' mechanism='SCRAM-SHA-1'>\
                 <iter-count>4096</iter-count><salt>c2FsdA==</salt><server-key>AAAA</server-key><stored-key>AAAA</stored-key>\
               </scram-credentials></user>\
             </host></server-data>",
            scram_xml(ScramHash::Sha1, "dana-pw", b"prosody-salt", false),
            scram_xml(ScramHash::Sha1, "erin-pw", b"ejabberd-salt-16", true),
        ),
    )
    .unwrap();
    let out = server.ctl_ok(&["import_piefxis", &file.display().to_string()]);
    assert!(out.contains("Imported 2 account(s)"), "{out}");
    assert!(
        out.contains("bad@localhost: malformed SCRAM-SHA-1 credentials; skipped"),
        "{out}"
    );
    assert!(
        out.contains("dana@localhost: SCRAM-SHA-1 credentials only"),
        "{out}"
    );
    for (user, pw) in [("dana", "dana-pw"), ("erin", "erin-pw")] {
        let mut c = Client::connect_starttls(server.c2s()).await;
        c.auth_scram("SCRAM-SHA-1", user, pw)
            .await
            .unwrap_or_else(|e| panic!("SCRAM-SHA-1 of {user}: {e}"));
        let mut c = Client::connect_starttls(server.c2s()).await;
        assert_eq!(
            c.auth_scram("SCRAM-SHA-1", user, "wrong").await,
            Err("not-authorized".into())
        );
    }
    assert_eq!(
        server
            .ctl(&["check_password", "dana", "localhost", "dana-pw"])
            .0,
        0
    );
    assert_eq!(
        server
            .ctl(&["check_password", "dana", "localhost", "nope"])
            .0,
        1
    );

    // Exported as they are (SHA-1 only), and imported again elsewhere.
    let export = dir.path().join("export");
    server.ctl_ok(&["export_piefxis", &export.display().to_string()]);
    let xml = std::fs::read_to_string(export.join("localhost.xml")).unwrap();
    assert!(
        xml.contains("SCRAM-SHA-1") && !xml.contains("SCRAM-SHA-256"),
        "{xml}"
    );
    let other = Server::start();
    let out = other.ctl_ok(&[
        "import_piefxis",
        &export.join("localhost.xml").display().to_string(),
    ]);
    assert!(out.contains("Imported 2 account(s)"), "{out}");
    let mut c = Client::connect_starttls(other.c2s()).await;
    c.auth_scram("SCRAM-SHA-1", "dana", "dana-pw")
        .await
        .unwrap();

    // A password change gives full credentials.
    other.ctl_ok(&["change_password", "erin", "localhost", "new-erin"]);
    assert!(can_login(&other, "erin", "new-erin").await);
}

#[tokio::test]
async fn plaintext_passwords_and_refusals() {
    let mut server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ejabberd.xml");
    std::fs::write(
        &file,
        "<?xml version='1.0' encoding='UTF-8'?>\n\
         <server-data xmlns='urn:xmpp:pie:0'>\
           <host jid='localhost'>\
             <user name='carol' password='carol-pw'>\
               <query xmlns='jabber:iq:roster'><item jid='dave@example.net' subscription='to'><group>Work</group></item></query>\
             </user>\
             <user name='sha1only'>\
               <scram-credentials xmlns='urn:xmpp:pie:0#scram' mechanism='SCRAM-SHA-1'>\
                 <iter-count>4096</iter-count><salt>c2FsdA==</salt><server-key>AAAA</server-key><stored-key>AAAA</stored-key>\
               </scram-credentials>\
             </user>\
           </host>\
           <host jid='elsewhere.example'><user name='x' password='y'/></host>\
         </server-data>",
    )
    .unwrap();
    let st = server.stop();
    assert!(st.success());
    // Works on the database with the server stopped.
    let out = server.ctl_ok(&["import_piefxis", &file.display().to_string()]);
    assert!(out.contains("Imported 1 account(s)"), "{out}");
    assert!(
        out.contains("sha1only@localhost: malformed SCRAM-SHA-1 credentials"),
        "{out}"
    );
    assert!(
        out.contains("host elsewhere.example is not served here"),
        "{out}"
    );
    server.restart();
    assert!(can_login(&server, "carol", "carol-pw").await);
    assert_eq!(
        server.ctl_ok(&["get_roster", "carol", "localhost"]).trim(),
        "dave@example.net\t\tto\tnone\tWork"
    );
    let bad = dir.path().join("bad.xml");
    std::fs::write(&bad, "<not-pie/>").unwrap();
    assert_eq!(
        server
            .ctl(&["import_piefxis", &bad.display().to_string()])
            .0,
        1
    );
    std::fs::write(&bad, "<server-data xmlns='urn:xmpp:pie:0'>").unwrap();
    assert_eq!(
        server
            .ctl(&["import_piefxis", &bad.display().to_string()])
            .0,
        1
    );
    assert_eq!(server.ctl(&["import_piefxis", "/nonexistent.xml"]).0, 1);
}

/// `auth_scram_hash: sha` (ejabberd's option) offers SCRAM-SHA-1 only: the
/// migration mode for accounts imported with SCRAM-SHA-1 secrets, whose
/// clients would otherwise pick SCRAM-SHA-256 and fail. Taking the option
/// out again (reload) offers SCRAM-SHA-256 once more.
#[tokio::test]
async fn auth_scram_hash_sha_offers_only_scram_sha_1() {
    let server = Server::start_with(Config {
        extra_yaml: "auth_scram_hash: sha\n".into(),
        ..Config::default()
    });
    let file = server.dir().join("sha1.xml");
    std::fs::write(
        &file,
        format!(
            "<server-data xmlns='urn:xmpp:pie:0'><host jid='localhost'><user name='dana'>{}</user></host></server-data>",
            scram_xml(ScramHash::Sha1, "dana-pw", b"prosody-salt", false)
        ),
    )
    .unwrap();
    server.ctl_ok(&["import_piefxis", &file.display().to_string()]);
    let mut c = Client::connect_starttls(server.c2s()).await;
    let mechs = c.mechanisms();
    assert!(
        mechs.contains(&"SCRAM-SHA-1".to_string())
            && mechs.contains(&"PLAIN".to_string())
            && !mechs.iter().any(|m| m.starts_with("SCRAM-SHA-256")),
        "{mechs:?}"
    );
    c.send_auth("SCRAM-SHA-256", Some(b"n,,n=dana,r=abcdefgh"))
        .await;
    match c.sasl_reply().await {
        SaslReply::Failure(cond) => assert_eq!(cond, "invalid-mechanism"),
        other => panic!("SCRAM-SHA-256 while not offered: {other:?}"),
    }
    let mut c = Client::connect_starttls(server.c2s()).await;
    c.auth_scram("SCRAM-SHA-1", "dana", "dana-pw")
        .await
        .unwrap();

    let yaml = std::fs::read_to_string(server.config_path()).unwrap();
    std::fs::write(
        server.config_path(),
        yaml.replace("auth_scram_hash: sha\n", ""),
    )
    .unwrap();
    server.ctl_ok(&["reload_config"]);
    let c = Client::connect_starttls(server.c2s()).await;
    assert!(
        c.mechanisms().contains(&"SCRAM-SHA-256".to_string()),
        "{:?}",
        c.mechanisms()
    );
}
