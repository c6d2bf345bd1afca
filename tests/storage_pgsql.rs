//! Integration tests of the PostgreSQL engine (`default_db: sql`) on the
//! real `rookery` binary, each against its own PostgreSQL started in a
//! temporary directory on a loopback port (`common::pg`; SKIPPED without
//! PostgreSQL's binaries):
//!
//! - login (SCRAM), roster, offline messages (XEP-0160), a MAM query
//!   (XEP-0313) and a persistent MUC room (XEP-0045) all kept in
//!   PostgreSQL across a SIGKILL and restart of the server, in ejabberd's
//!   tables where ejabberd has them;
//! - PostgreSQL stopped mid-run (`pg_ctl stop`): the sender gets
//!   `resource-constraint` for what cannot be stored, nothing acknowledged
//!   is lost, and everything works again once PostgreSQL is back;
//! - `rookery ctl migrate_db sled sql` and back, with counts verified.

use crate::common;

use common::im::*;
use common::pg::PgServer;
use common::*;

const B: &str = "bob@localhost";

fn sql_server(pg: &PgServer) -> Server {
    let s = Server::start_with(Config {
        extra_yaml: pg.config_yaml(),
        ..Config::default()
    });
    s.register(ALICE.0, "localhost", ALICE.1);
    s.register(BOB.0, "localhost", BOB.1);
    s
}

async fn mam_count(c: &mut Client, with: &str) -> (usize, Vec<String>) {
    let id = c.id();
    c.send(&format!(
        "<iq type='set' id='{id}'><query xmlns='urn:xmpp:mam:2' queryid='q{id}'>\
         <x xmlns='jabber:x:data' type='submit'>\
         <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>\
         <field var='with'><value>{with}</value></field></x></query></iq>"
    ))
    .await;
    let mut bodies = Vec::new();
    loop {
        let e = c.recv().await;
        if e.name == "iq" && e.attr("id") == Some(id.as_str()) {
            assert_eq!(e.attr("type"), Some("result"), "{e}");
            return (bodies.len(), bodies);
        }
        if let Some(r) = e.child_ns("result", "urn:xmpp:mam:2") {
            let body = r
                .child_ns("forwarded", "urn:xmpp:forward:0")
                .and_then(|f| f.child("message"))
                .and_then(|m| m.child_text("body"))
                .unwrap_or("")
                .to_string();
            bodies.push(body);
        }
    }
}

#[tokio::test]
async fn logins_rosters_offline_archive_and_rooms_live_in_postgresql_across_restarts() {
    let Some(pg) = PgServer::start("storage_pgsql::logins_rosters_offline_archive_and_rooms")
    else {
        return;
    };
    let mut server = sql_server(&pg);
    let room = "lobby@conference.localhost";
    {
        let mut alice = online(&server, ALICE, "a1").await;
        roster_set(&mut alice, &item_xml(B, Some("Bobby"), &["Friends"])).await;
        let tag = unique("pg");
        for i in 0..3 {
            alice
                .send(&chat(B, &format!("m{i}"), &format!("{tag}-{i}")))
                .await;
        }
        let back = sync(&mut alice).await;
        assert!(
            back.iter().all(|e| e.attr("type") != Some("error")),
            "{}",
            show(&back)
        );
        let (n, bodies) = mam_count(&mut alice, B).await;
        assert_eq!(n, 3, "alice's archive: {bodies:?}");
        common::muc::join(&mut alice, room, "alice").await;
        let id = alice.id();
        let r = alice
            .request(
                &format!(
                    "<iq type='set' to='{room}' id='{id}'><query xmlns='http://jabber.org/protocol/muc#owner'>\
                     <x xmlns='jabber:x:data' type='submit'>\
                     <field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>\
                     <field var='muc#roomconfig_persistentroom'><value>1</value></field>\
                     <field var='muc#roomconfig_roomname'><value>Lobby</value></field></x></query></iq>"
                ),
                &id,
            )
            .await;
        assert_eq!(r.attr("type"), Some("result"), "{r}");
        sync(&mut alice).await;
    }
    // In ejabberd's tables, in its formats.
    assert_eq!(
        pg.psql("SELECT string_agg(username, ',' ORDER BY username) FROM users WHERE server_host = 'localhost' AND serverkey <> ''"),
        "alice,bob"
    );
    assert_eq!(
        pg.psql("SELECT nick || ' ' || subscription || ' ' || grp FROM rosterusers JOIN rostergroups USING (server_host, username, jid) WHERE username = 'alice'"),
        "Bobby N Friends"
    );
    assert_eq!(
        pg.psql("SELECT count(*) FROM spool WHERE username = 'bob'"),
        "3"
    );
    assert_eq!(pg.psql("SELECT name || '@' || host FROM muc_room"), room);
    server.kill_hard();
    server.restart();

    let (_bob, got) = online_with(&server, BOB, "b1", "<presence/>").await;
    let offline: Vec<String> = bodies(&got)
        .into_iter()
        .filter(|b| b.starts_with("pg"))
        .collect();
    assert_eq!(
        offline.len(),
        3,
        "offline messages after restart: {}",
        show(&got)
    );
    assert_eq!(
        pg.psql("SELECT count(*) FROM spool WHERE username = 'bob'"),
        "0"
    );
    let mut alice = login(&server, ALICE, "a2").await;
    let item = roster_item(&mut alice, B)
        .await
        .expect("bob in alice's roster");
    assert_eq!(item.attr("name"), Some("Bobby"), "{item}");
    let (n, _) = mam_count(&mut alice, B).await;
    assert_eq!(n, 3);
    let id = alice.id();
    let items = alice
        .request(
            &format!(
                "<iq type='get' to='conference.localhost' id='{id}'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>"
            ),
            &id,
        )
        .await;
    assert!(
        items.to_string().contains(room),
        "the persistent room is gone: {items}"
    );
}

/// A "message not archived" error: the archive refused, the message went on.
fn is_archive_only(e: &Element) -> bool {
    e.to_string().contains("message not archived")
}

#[tokio::test]
async fn postgresql_stopped_mid_run_gives_errors_loses_nothing_acknowledged_and_recovers() {
    let Some(pg) = PgServer::start("storage_pgsql::postgresql_stopped_mid_run") else {
        return;
    };
    let server = sql_server(&pg);
    let mut alice = online(&server, ALICE, "a1").await;
    // Messages for the offline bob, each confirmed by a ping round trip.
    let mut errors = std::collections::HashSet::new();
    let send =
        |n: usize| format!("<message to='{B}' type='chat' id='n{n}'><body>n{n}</body></message>");
    for n in 0..5 {
        alice.send(&send(n)).await;
    }
    let back = sync(&mut alice).await;
    assert!(
        back.iter().all(|e| e.attr("type") != Some("error")),
        "{}",
        show(&back)
    );

    pg.stop_server();
    let started = std::time::Instant::now();
    for n in 5..8 {
        alice.send(&send(n)).await;
    }
    let back = sync(&mut alice).await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "routing stalled for {:?} while PostgreSQL was down",
        started.elapsed()
    );
    for e in &back {
        if e.name == "message" && e.attr("type") == Some("error") {
            let id = e.attr("id").unwrap_or("").to_string();
            assert!(
                e.to_string().contains("resource-constraint"),
                "error while PostgreSQL is down: {e}"
            );
            // "message not archived" errors leave the message delivered
            // (the archive is refused, the live or offline copy is not).
            if !is_archive_only(e) {
                errors.insert(id);
            }
        }
    }
    for n in 5..8 {
        assert!(
            errors.contains(&format!("n{n}")),
            "message n{n} sent while PostgreSQL was down got no error: {}",
            show(&back)
        );
    }
    // The server is still alive and answers.
    assert!(
        server.stderr_tail().contains("PostgreSQL is unavailable"),
        "{}",
        server.stderr_tail()
    );

    pg.start_server();
    // Recovery: within a few seconds, messages are stored again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut n = 8;
    loop {
        alice.send(&send(n)).await;
        let back = sync(&mut alice).await;
        let failed = back.iter().any(|e| {
            e.name == "message"
                && e.attr("type") == Some("error")
                && e.attr("id") == Some(&format!("n{n}"))
                && !is_archive_only(e)
        });
        if failed {
            errors.insert(format!("n{n}"));
            assert!(
                std::time::Instant::now() < deadline,
                "no recovery after PostgreSQL restarted"
            );
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            n += 1;
            continue;
        }
        break;
    }
    let last = n;
    let (_bob, got) = online_with(&server, BOB, "b1", "<presence/>").await;
    let received: Vec<String> = bodies(&got);
    let acknowledged: Vec<String> = (0..=last)
        .map(|i| format!("n{i}"))
        .filter(|id| !errors.contains(id))
        .collect();
    assert_eq!(
        received, acknowledged,
        "every message not refused arrives exactly once, in order (refused: {errors:?})"
    );
    assert!(
        server.stderr_tail().contains("PostgreSQL answers again"),
        "{}",
        server.stderr_tail()
    );
}

#[tokio::test]
async fn ctl_migrate_db_moves_sled_to_postgresql_and_back() {
    let Some(pg) = PgServer::start("storage_pgsql::ctl_migrate_db") else {
        return;
    };
    // A server on sled with some data, then stopped.
    let mut server = Server::start_with(Config {
        extra_yaml: pg
            .config_yaml()
            .replace("default_db: sql\n", "default_db: mnesia\n"),
        ..Config::default()
    });
    server.register(ALICE.0, "localhost", ALICE.1);
    server.register(BOB.0, "localhost", BOB.1);
    {
        let mut alice = online(&server, ALICE, "a1").await;
        roster_set(&mut alice, &item_xml(B, Some("B"), &[])).await;
        alice.send(&chat(B, "x1", "kept offline")).await;
        sync(&mut alice).await;
    }
    let (code, _, err) = server.ctl(&["migrate_db", "sled", "sql"]);
    assert_ne!(code, 0, "migrate_db must refuse while the server runs");
    assert!(err.contains("stop it first"), "{err}");
    server.stop();
    let out = server.ctl_ok(&["migrate_db", "sled", "sql"]);
    assert!(
        out.contains("2 accounts")
            && out.contains("1 offline messages")
            && out.contains("counted equal"),
        "{out}"
    );
    assert_eq!(pg.psql("SELECT count(*) FROM users"), "2");
    // A second copy into the now full database is refused.
    let (code, _, err) = server.ctl(&["migrate_db", "sled", "sql"]);
    assert_ne!(code, 0);
    assert!(err.contains("not empty"), "{err}");
    // Serve from PostgreSQL: the copied data is there.
    let yaml = std::fs::read_to_string(server.config_path()).unwrap();
    std::fs::write(
        server.config_path(),
        yaml.replace("default_db: mnesia\n", "default_db: sql\n"),
    )
    .unwrap();
    server.restart();
    let (_bob, got) = online_with(&server, BOB, "b1", "<presence/>").await;
    assert_eq!(bodies(&got), vec!["kept offline".to_string()]);
    let mut alice = login(&server, ALICE, "a2").await;
    assert!(roster_item(&mut alice, B).await.is_some());
    drop(alice);
    server.stop();
    // And back into an empty sled database.
    let db = server.dir().join("data").join("db");
    std::fs::remove_dir_all(&db).unwrap();
    let _ = std::fs::remove_dir_all(server.dir().join("data").join("archive"));
    let out = server.ctl_ok(&["migrate_db", "sql", "sled"]);
    assert!(
        out.contains("2 accounts") && out.contains("counted equal"),
        "{out}"
    );
}
