//! XEP-0227 export/import (`export_piefxis`, `import_piefxis`) with the real
//! binary: a round trip between two servers (accounts with their SCRAM
//! credentials, rosters, offline messages), ejabberd-style plaintext
//! passwords, and what is refused or skipped.

mod common;

use std::time::Duration;

use common::*;

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
    let mut alice = Client::login(&b, "alice", "secret", Some("r")).await;
    alice.presence().await;
    let m = alice.recv_message().await;
    assert_eq!(m.child_text("body"), Some("kept for later"));
    tokio::time::sleep(Duration::from_millis(50)).await;
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
        out.contains("sha1only@localhost: only SCRAM-SHA-1"),
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
