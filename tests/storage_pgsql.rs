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

    let outage = started.elapsed();
    pg.start_server();
    let restarted = std::time::Instant::now();
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
    println!(
        "PostgreSQL outage: 3 messages refused and answered in {} ms; stored again {} ms after pg_ctl start ({} message(s) refused meanwhile)",
        outage.as_millis(),
        restarted.elapsed().as_millis(),
        n - 8
    );
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
    // The schema first, as an administrator would prepare the database.
    let out = server.ctl_ok(&["sql_migrate"]);
    assert!(out.contains("is at version 2"), "{out}");
    assert_eq!(pg.psql("SELECT max(version) FROM rookery_schema"), "2");
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

/// ejabberd 23.01 (Debian's package) on its PostgreSQL schema
/// (`pg.new.sql`) with `default_db: sql`, filled through XMPP; then
/// `rookery ctl import_ejabberd_sql` and Rookery serving the same database:
/// old passwords, rosters, offline messages, vCards, the message archive
/// and a persistent room with its subject and owner.
#[tokio::test]
async fn import_ejabberd_sql_takes_over_a_real_ejabberd_on_postgresql() {
    use common::ejabberd::{available, free_port, write, Ejabberd};
    const SCHEMA: &str = "/usr/share/ejabberd/sql/pg.new.sql";
    if !available(&["ejabberdctl", "setpriv", "epmd"]) || !std::path::Path::new(SCHEMA).exists() {
        return;
    }
    let Some(pg) = PgServer::start("storage_pgsql::import_ejabberd_sql") else {
        return;
    };
    pg.psql(&std::fs::read_to_string(SCHEMA).unwrap());
    let h = "ejabberd.test";
    let room = "lobby@conference.ejabberd.test";
    let dir = tempfile::Builder::new()
        .prefix("rookery-ejsql")
        .tempdir()
        .unwrap();
    let port = free_port();
    write(
        dir.path(),
        "ejabberd.yml",
        &format!(
            r#"hosts: ["{h}"]
loglevel: info
listen:
  - port: {port}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    starttls: false
default_db: sql
sql_type: pgsql
sql_server: "127.0.0.1"
sql_port: {pgport}
sql_database: "rookery"
sql_username: "postgres"
sql_password: ""
new_sql_schema: true
auth_method: sql
auth_password_format: scram
registration_timeout: infinity
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
  mod_disco: {{}}
  mod_roster: {{}}
  mod_offline: {{}}
  mod_vcard: {{}}
  mod_private: {{}}
  mod_ping: {{}}
  mod_mam:
    default: always
  mod_muc:
    host: "conference.{h}"
    default_room_options:
      persistent: true
      mam: true
  mod_register:
    ip_access: all
    access: all
"#,
            pgport = pg.port
        ),
    );
    {
        let _ej = Ejabberd::start(dir.path(), "rookerypgsql");
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(200))
            .is_err()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "ejabberd does not listen"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        for (user, pw) in [("alice", "alice-pw"), ("bob", "bob pw")] {
            let mut c = Client::connect(addr).await;
            c.domain = h.into();
            c.open_stream().await;
            let r = c
                .request(
                    &format!("<iq type='set' id='reg'><query xmlns='jabber:iq:register'><username>{user}</username><password>{pw}</password></query></iq>"),
                    "reg",
                )
                .await;
            assert_eq!(r.attr("type"), Some("result"), "registering {user}: {r}");
        }
        let mut alice = Client::connect(addr).await;
        alice.domain = h.into();
        alice.open_stream().await;
        alice
            .auth_scram("SCRAM-SHA-1", "alice", "alice-pw")
            .await
            .unwrap();
        alice.open_stream().await;
        alice.bind(Some("pc")).await.unwrap();
        alice.send("<presence/>").await;
        roster_set(
            &mut alice,
            &item_xml("bob@ejabberd.test", Some("Bobby"), &["Friends"]),
        )
        .await;
        alice
            .send("<message to='bob@ejabberd.test' type='chat' id='e1'><body>kept by ejabberd</body><origin-id xmlns='urn:xmpp:sid:0' id='orig-1'/></message>")
            .await;
        let id = alice.id();
        let r = alice
            .request(
                &format!("<iq type='set' id='{id}'><vCard xmlns='vcard-temp'><FN>Alice Liddell</FN></vCard></iq>"),
                &id,
            )
            .await;
        assert_eq!(r.attr("type"), Some("result"), "{r}");
        common::muc::join(&mut alice, room, "alice").await;
        common::muc::instant_room(&mut alice, room).await;
        alice
            .send(&format!(
                "<message to='{room}' type='groupchat'><subject>Welcome home</subject></message>"
            ))
            .await;
        alice
            .recv_where("the subject", |e| {
                e.child_text("subject") == Some("Welcome home")
            })
            .await;
        sync(&mut alice).await;
        // Give ejabberd's MAM and room writes a moment, then stop it.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    assert!(
        pg.psql("SELECT count(*) FROM archive")
            .parse::<u32>()
            .unwrap()
            >= 1,
        "ejabberd archived nothing"
    );
    assert_eq!(pg.psql("SELECT count(*) FROM spool"), "1");
    assert_eq!(pg.psql("SELECT count(*) FROM muc_room"), "1");

    let mut server = Server::start_with(Config {
        hosts: vec![h.to_string()],
        extra_yaml: pg.config_yaml(),
        ..Config::default()
    });
    let out = server.ctl_ok(&["import_ejabberd_sql", h]);
    assert!(
        out.contains("2 accounts") && out.contains("1 MUC rooms converted"),
        "{out}"
    );
    // Again: nothing more, nothing twice.
    let again = server.ctl_ok(&["import_ejabberd_sql", h]);
    assert!(again.contains("0 MUC rooms converted"), "{again}");
    server.stop();
    server.restart();

    let login = |user: &'static str, pw: &'static str| {
        let server = &server;
        async move {
            let mut c = Client::connect(server.c2s()).await;
            c.domain = h.to_string();
            c.open_stream().await;
            c.starttls().await;
            c.auth_scram("SCRAM-SHA-1", user, pw)
                .await
                .unwrap_or_else(|e| panic!("{user} logs in with the password ejabberd had: {e}"));
            c.open_stream().await;
            c.bind(Some("rookery")).await.unwrap();
            c
        }
    };
    let mut bob = login("bob", "bob pw").await;
    bob.send("<presence/>").await;
    let got = sync(&mut bob).await;
    assert_eq!(
        bodies(&got),
        vec!["kept by ejabberd".to_string()],
        "{}",
        show(&got)
    );
    let mut alice = login("alice", "alice-pw").await;
    let item = roster_item(&mut alice, "bob@ejabberd.test")
        .await
        .expect("bob in the roster");
    assert_eq!(item.attr("name"), Some("Bobby"), "{item}");
    let id = alice.id();
    let v = alice
        .request(
            &format!("<iq type='get' id='{id}'><vCard xmlns='vcard-temp'/></iq>"),
            &id,
        )
        .await;
    assert!(v.to_string().contains("Alice Liddell"), "{v}");
    let (n, archived) = mam_count(&mut alice, "bob@ejabberd.test").await;
    assert_eq!(
        archived,
        vec!["kept by ejabberd".to_string()],
        "alice's archive ({n})"
    );
    // The room: still there, alice still its owner, its subject kept.
    let me = common::muc::join(&mut alice, room, "alice").await;
    assert!(me.to_string().contains("owner"), "{me}");
    let subject = alice
        .recv_where("the room's subject", |e| e.child("subject").is_some())
        .await;
    assert_eq!(
        subject.child_text("subject"),
        Some("Welcome home"),
        "ejabberd's options: {}\nconverted: {}",
        pg.psql("SELECT opts FROM rookery_ejabberd_muc_room"),
        pg.psql("SELECT opts FROM muc_room")
    );
}
