//! Tests of the PostgreSQL engine against a real PostgreSQL started for
//! the test (`testpg`, SKIPPED without PostgreSQL's binaries).
//!
//! [`conformance`] drives every storage trait through the behaviour the
//! server relies on and runs on both engines (sled and PostgreSQL), so the
//! two are held to one contract. Then: migrations from an empty database
//! and from version 1; ejabberd-format rows read as they are; a database
//! stopped and started again (bounded errors, then recovery); moves
//! between the engines both ways with counts verified; backup and restore.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jid::BareJid;
use xep_support::archive::{Appended, Count, Direction, NewMessage, PageQuery};

use super::testpg::PgServer;
use super::PgStorage;
use super::SqlOptions;
use crate::auth::credentials::StoredCredentials;
use crate::storage::transfer::{self, Engine};
use crate::storage::{
    AccountKey, AccountStore, ArchiveAccess, KeyRange, Maintenance, ModuleStore, OfflineStore,
    OfflineStored, RosterChange, RosterItem, RosterStore, SledStorage, StorageError, Subscription,
};

pub(crate) fn options(pg: &PgServer) -> SqlOptions {
    SqlOptions {
        server: "127.0.0.1".into(),
        port: pg.port,
        database: "rookery".into(),
        username: "postgres".into(),
        password: String::new(),
        pool_size: 4,
        ssl: false,
        connect_timeout: Duration::from_secs(2),
        query_timeout: Duration::from_secs(3),
    }
}

fn creds() -> StoredCredentials {
    StoredCredentials::derive("secret", 4096).unwrap()
}

fn item(jid: &str, sub: Subscription) -> RosterItem {
    RosterItem {
        jid: jid.into(),
        name: Some(format!("name of {jid}")),
        groups: vec!["Friends".into(), "Work".into()],
        subscription: sub,
        ask: false,
        approved: false,
        pending_in: false,
        ver: 0,
    }
}

fn msg(owner: &str, peer: &str, origin: Option<&str>, body: &str) -> NewMessage {
    NewMessage {
        owner: BareJid::new(owner).unwrap(),
        peer: BareJid::new(peer).unwrap(),
        direction: Direction::Outgoing,
        origin_id: origin.map(str::to_string),
        xml: format!("<message xmlns='jabber:client'><body>{body}</body></message>"),
    }
}

/// The storage contract, on any engine (`s` starts empty).
fn conformance(s: &dyn Engine) {
    let alice = AccountKey::new("ex.org", "alice");
    // Accounts.
    assert!(!s.user_exists(alice).unwrap());
    s.create_user(alice, &creds()).unwrap();
    assert_eq!(
        s.create_user(alice, &creds()),
        Err(StorageError::AlreadyExists)
    );
    assert!(s.user_exists(alice).unwrap());
    assert!(s
        .get_credentials(alice)
        .unwrap()
        .unwrap()
        .verify_password("secret"));
    let sha1_only = StoredCredentials::sha1_only(creds().sha1);
    assert!(s.set_credentials(alice, &sha1_only).unwrap());
    assert_eq!(s.get_credentials(alice).unwrap(), Some(sha1_only));
    assert!(!s
        .set_credentials(AccountKey::new("ex.org", "nobody"), &creds())
        .unwrap());
    for u in ["zoe", "bob", "émile"] {
        s.create_user(AccountKey::new("ex.org", u), &creds())
            .unwrap();
    }
    s.create_user(AccountKey::new("ex.org.uk", "carol"), &creds())
        .unwrap();
    assert_eq!(
        s.list_users("ex.org").unwrap(),
        vec!["alice", "bob", "zoe", "émile"]
    );
    assert_eq!(s.count_users("ex.org").unwrap(), 4);

    // Rosters with versions and tombstones.
    assert_eq!(s.roster_version(alice).unwrap(), 0);
    assert_eq!(s.roster_changes_since(alice, 0).unwrap(), Some(vec![]));
    let bob = s
        .roster_put(alice, item("bob@ex.org", Subscription::Both))
        .unwrap();
    let mut carol_item = item("carol@ex.org.uk", Subscription::To);
    carol_item.ask = true;
    carol_item.pending_in = true;
    carol_item.approved = true;
    carol_item.name = None;
    let carol = s.roster_put(alice, carol_item).unwrap();
    assert!(carol.ver > bob.ver);
    assert_eq!(s.roster_version(alice).unwrap(), carol.ver);
    let got = s.roster_get(alice).unwrap();
    assert_eq!(got, vec![bob.clone(), carol.clone()]);
    assert_eq!(
        s.roster_item(alice, "carol@ex.org.uk").unwrap(),
        Some(carol.clone())
    );
    assert_eq!(s.roster_item(alice, "nobody@ex.org").unwrap(), None);
    let removed = s.roster_remove(alice, "bob@ex.org").unwrap().unwrap();
    assert!(removed > carol.ver);
    assert_eq!(s.roster_remove(alice, "bob@ex.org").unwrap(), None);
    assert_eq!(
        s.roster_changes_since(alice, bob.ver).unwrap(),
        Some(vec![
            RosterChange::Upsert(carol.clone()),
            RosterChange::Removed {
                jid: "bob@ex.org".into(),
                ver: removed
            }
        ])
    );
    assert_eq!(
        s.roster_changes_since(alice, removed).unwrap(),
        Some(vec![])
    );
    assert_eq!(s.roster_changes_since(alice, removed + 1000).unwrap(), None);
    assert_eq!(s.roster_changes_since(alice, bob.ver - 1).unwrap(), None);
    // Pending requests.
    s.pending_subscription_add(alice, "dave@ex.org", "<presence type='subscribe'/>")
        .unwrap();
    s.pending_subscription_add(
        alice,
        "dave@ex.org",
        "<presence type='subscribe'><status>hi</status></presence>",
    )
    .unwrap();
    s.pending_subscription_add(alice, "bea@ex.org", "<presence/>")
        .unwrap();
    assert_eq!(
        s.pending_subscriptions(alice).unwrap(),
        vec![
            ("bea@ex.org".to_string(), "<presence/>".to_string()),
            (
                "dave@ex.org".to_string(),
                "<presence type='subscribe'><status>hi</status></presence>".to_string()
            )
        ]
    );
    assert!(s.pending_subscription_remove(alice, "bea@ex.org").unwrap());
    assert!(!s.pending_subscription_remove(alice, "bea@ex.org").unwrap());

    // Offline messages with a limit.
    let mut seqs = Vec::new();
    for i in 0..3 {
        match s
            .offline_store(
                alice,
                &format!("<message><body>m{i}</body></message>"),
                Some(3),
            )
            .unwrap()
        {
            OfflineStored::Stored(q) => seqs.push(q),
            OfflineStored::Full => panic!("not full yet"),
        }
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(
        s.offline_store(alice, "<message/>", Some(3)).unwrap(),
        OfflineStored::Full
    );
    assert_eq!(s.offline_count(alice).unwrap(), 3);
    let peek = s.offline_peek(alice, 2).unwrap();
    assert_eq!(peek.len(), 2);
    assert_eq!(
        peek[0],
        (seqs[0], "<message><body>m0</body></message>".to_string())
    );
    s.offline_remove(alice, &[seqs[0], seqs[0], u64::MAX])
        .unwrap();
    assert_eq!(s.offline_count(alice).unwrap(), 2);
    assert!(matches!(
        s.offline_store_unflushed(alice, "<message><body>m3</body></message>", Some(3))
            .unwrap(),
        OfflineStored::Stored(_)
    ));
    s.flush().unwrap();
    assert_eq!(s.offline_count(alice).unwrap(), 3);

    // Module data, ejabberd-mapped keys and others, in one key order.
    let muc = AccountKey::new("conference.ex.org", "");
    s.module_put(alice, "mod_vcard", "vcard", b"<vCard xmlns='vcard-temp'/>")
        .unwrap();
    s.module_put(alice, "mod_private", "storage:bookmarks", b"<storage/>")
        .unwrap();
    s.module_put(alice, "mod_pep", "node:b", &[0, 159, 255])
        .unwrap();
    s.module_put_many_lazy(alice, "mod_pep", &[("node:a", b"1"), ("node:c", b"3")])
        .unwrap();
    s.module_put(muc, "mod_muc", "room:lobby", b"<room/>")
        .unwrap();
    s.module_put(muc, "mod_muc", "room:attic", b"<room name='attic'/>")
        .unwrap();
    s.module_put(muc, "mod_muc", "registered:x", b"nick")
        .unwrap();
    s.module_put(AccountKey::new("", ""), "s2s", "dialback_secret", b"s3cret")
        .unwrap();
    assert_eq!(
        s.module_get(alice, "mod_vcard", "vcard").unwrap(),
        Some(b"<vCard xmlns='vcard-temp'/>".to_vec())
    );
    assert_eq!(
        s.module_get(alice, "mod_pep", "node:b").unwrap(),
        Some(vec![0, 159, 255])
    );
    assert_eq!(s.module_get(alice, "mod_pep", "node:x").unwrap(), None);
    let keys = |rows: Vec<(String, Vec<u8>)>| rows.into_iter().map(|r| r.0).collect::<Vec<_>>();
    assert_eq!(
        keys(s.module_scan(alice, "mod_pep", "node:").unwrap()),
        ["node:a", "node:b", "node:c"]
    );
    assert_eq!(
        keys(s.module_scan(muc, "mod_muc", "").unwrap()),
        ["registered:x", "room:attic", "room:lobby"]
    );
    assert_eq!(
        keys(
            s.module_scan_range(muc, "mod_muc", &KeyRange::prefix("room:"), true, 1)
                .unwrap()
        ),
        ["room:lobby"]
    );
    let after_a = KeyRange {
        prefix: "node:",
        lower: std::ops::Bound::Excluded("node:a"),
        upper: std::ops::Bound::Unbounded,
    };
    assert_eq!(
        keys(
            s.module_scan_range(alice, "mod_pep", &after_a, false, 10)
                .unwrap()
        ),
        ["node:b", "node:c"]
    );
    assert_eq!(s.module_count_range(alice, "mod_pep", &after_a).unwrap(), 2);
    assert!(s.module_delete(muc, "mod_muc", "room:attic").unwrap());
    assert!(!s.module_delete(muc, "mod_muc", "room:attic").unwrap());
    assert_eq!(
        s.module_delete_many(alice, "mod_pep", &["node:a".into(), "none".into()])
            .unwrap(),
        1
    );

    // The archive.
    let archive = s.archive();
    let owner = BareJid::new("alice@ex.org").unwrap();
    let ans = archive
        .append(vec![
            msg("alice@ex.org", "bob@ex.org", Some("o1"), "one"),
            msg("alice@ex.org", "carol@ex.org.uk", None, "two"),
            msg("alice@ex.org", "bob@ex.org", Some("o1"), "one again"),
        ])
        .unwrap();
    let (Appended::Stored(id1), Appended::Stored(id2), Appended::Duplicate(dup)) =
        (ans[0], ans[1], ans[2])
    else {
        panic!("{ans:?}");
    };
    assert_eq!(dup, id1);
    assert!(id2 > id1);
    // Visible at once.
    assert_eq!(archive.count(&owner).unwrap(), 2);
    let again = archive
        .append(vec![msg(
            "alice@ex.org",
            "bob@ex.org",
            Some("o1"),
            "resent",
        )])
        .unwrap();
    assert_eq!(again, vec![Appended::Duplicate(id1)]);
    let all = |with: Option<&str>, reverse: bool, limit: usize| {
        archive
            .page(
                &owner,
                &PageQuery {
                    with,
                    lo: 0,
                    hi: u64::MAX,
                    reverse,
                    limit,
                },
            )
            .unwrap()
    };
    assert_eq!(
        all(None, false, 10)
            .iter()
            .map(|m| m.id)
            .collect::<Vec<_>>(),
        [id1, id2]
    );
    assert_eq!(all(None, true, 1)[0].id, id2);
    assert_eq!(all(Some("bob@ex.org"), false, 10).len(), 1);
    assert_eq!(
        archive
            .find_origin_id(&owner, &BareJid::new("bob@ex.org").unwrap(), "o1")
            .unwrap(),
        Some(id1)
    );
    assert_eq!(
        archive.get(&owner, id2).unwrap().unwrap().peer,
        "carol@ex.org.uk"
    );
    assert!(archive
        .replace(&owner, id2, "<message xmlns='jabber:client'/>")
        .unwrap());
    assert_eq!(
        archive.get(&owner, id2).unwrap().unwrap().xml,
        "<message xmlns='jabber:client'/>"
    );
    assert_eq!(
        archive
            .count_range(&owner, Some("bob@ex.org"), 0, u64::MAX)
            .unwrap(),
        Count::Exact(1)
    );
    assert_eq!(
        archive.count_range(&owner, None, id2, u64::MAX).unwrap(),
        Count::Exact(1)
    );
    assert_eq!(archive.owners().unwrap(), vec![owner.clone()]);
    let t = archive.ticket();
    futures_block(archive.durable(t)).unwrap();

    // Deleting an account takes everything it had, and nothing else.
    s.create_user(AccountKey::new("ex.org", "alicia"), &creds())
        .unwrap();
    s.offline_store(AccountKey::new("ex.org", "alicia"), "<message/>", None)
        .unwrap();
    assert!(s.delete_user(alice).unwrap());
    assert!(!s.user_exists(alice).unwrap());
    assert!(s.roster_get(alice).unwrap().is_empty());
    assert_eq!(s.offline_count(alice).unwrap(), 0);
    assert!(s.offline_peek(alice, 10).unwrap().is_empty());
    assert!(s.pending_subscriptions(alice).unwrap().is_empty());
    assert_eq!(s.module_get(alice, "mod_vcard", "vcard").unwrap(), None);
    assert!(s.module_scan(alice, "mod_private", "").unwrap().is_empty());
    assert_eq!(archive.count(&owner).unwrap(), 0);
    assert_eq!(
        s.offline_count(AccountKey::new("ex.org", "alicia"))
            .unwrap(),
        1
    );
    assert_eq!(
        keys(s.module_scan(muc, "mod_muc", "room:").unwrap()),
        ["room:lobby"]
    );
    // A new account of the same name starts from a roster no old client
    // version can diff from.
    s.create_user(alice, &creds()).unwrap();
    assert_eq!(s.roster_changes_since(alice, removed).unwrap(), None);
}

/// Wait for a future from a synchronous test.
fn futures_block<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn pg(test: &str) -> Option<(PgServer, PgStorage)> {
    let server = PgServer::start(test)?;
    let s = PgStorage::open(&options(&server)).expect("open PostgreSQL");
    Some((server, s))
}

#[test]
fn the_storage_contract_holds_on_sled() {
    let dir = tempfile::tempdir().unwrap();
    conformance(&SledStorage::open(dir.path()).unwrap());
}

#[test]
fn the_storage_contract_holds_on_postgresql() {
    let Some((server, s)) = pg("the_storage_contract_holds_on_postgresql") else {
        return;
    };
    conformance(&s);
    // The tables are ejabberd's, in its formats.
    let mut bob = item("bob@ex.org", Subscription::From);
    bob.ask = true;
    s.roster_put(AccountKey::new("ex.org", "alice"), bob)
        .unwrap();
    assert_eq!(
        server.psql("SELECT subscription || ask || ' ' || nick || ' ' || server || ' ' || \"type\" FROM rosterusers WHERE username = 'alice'"),
        "FO name of bob@ex.org N item"
    );
    assert_eq!(
        server.psql(
            "SELECT string_agg(grp, ',' ORDER BY grp) FROM rostergroups WHERE username = 'alice'"
        ),
        "Friends,Work"
    );
    assert_eq!(
        server.psql("SELECT count(*) FROM users WHERE server_host = 'ex.org' AND serverkey <> '' AND iterationcount = 4096"),
        "5"
    );
    assert_eq!(
        server
            .psql("SELECT name || ' ' || host || ' ' || server_host || ' ' || opts FROM muc_room"),
        "lobby conference.ex.org ex.org <room/>"
    );
    assert_eq!(
        server.psql("SELECT xml FROM spool WHERE username = 'alicia'"),
        "<message/>"
    );
    // An appended message is committed within the 1 s bound, without a
    // read or a durability wait asking for it.
    let before: u64 = server
        .psql("SELECT count(*) FROM rookery_archive_messages")
        .parse()
        .unwrap();
    s.archive()
        .append(vec![msg("zoe@ex.org", "bob@ex.org", None, "bound")])
        .unwrap();
    std::thread::sleep(Duration::from_millis(
        xep_support::archive::DURABILITY_BOUND_MS,
    ));
    assert_eq!(
        server.psql("SELECT count(*) FROM rookery_archive_messages"),
        (before + 1).to_string()
    );
}

#[test]
fn migrations_run_from_empty_and_from_the_previous_version() {
    let Some(server) = PgServer::start("migrations_run_from_empty_and_from_the_previous_version")
    else {
        return;
    };
    let o = options(&server);
    // Version 1 only, as an older Rookery left it, with data in it.
    {
        let s = PgStorage::open_with(&o, false);
        assert!(
            matches!(&s, Err(StorageError::Io(why)) if why.contains("sql_migrate")),
            "an unmigrated database is refused without migrating: {s:?}"
        );
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let mut cfg = deadpool_postgres::Config::new();
            cfg.host = Some(o.server.clone());
            cfg.port = Some(o.port);
            cfg.dbname = Some(o.database.clone());
            cfg.user = Some(o.username.clone());
            let pool = cfg
                .create_pool(
                    Some(deadpool_postgres::Runtime::Tokio1),
                    tokio_postgres::NoTls,
                )
                .unwrap();
            let mut c = pool.get().await.unwrap();
            assert_eq!(super::schema::migrate_to(&mut c, 1, true).await.unwrap(), 1);
            assert_eq!(super::schema::current(&c).await.unwrap(), 1);
        });
    }
    server.psql(
        "INSERT INTO users (username, server_host, \"password\") VALUES ('old', 'ex.org', 'plain-pw');
         INSERT INTO spool (username, server_host, xml) VALUES ('old', 'ex.org', '<message><body>kept</body></message>');",
    );
    assert_eq!(server.psql("SELECT count(*) FROM rookery_schema"), "1");
    // The current version migrates it and keeps the data.
    let s = PgStorage::open(&o).unwrap();
    assert_eq!(
        server.psql("SELECT string_agg(version::text, ',' ORDER BY version) FROM rookery_schema"),
        (1..=super::schema::latest())
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    let old = AccountKey::new("ex.org", "old");
    // ejabberd's plain password format logs in.
    assert!(s
        .get_credentials(old)
        .unwrap()
        .unwrap()
        .verify_password("plain-pw"));
    assert_eq!(s.offline_peek(old, 5).unwrap().len(), 1);
    drop(s);
    // Opening again applies nothing; a newer database is refused.
    let s = PgStorage::open_with(&o, false).unwrap();
    drop(s);
    server
        .psql("INSERT INTO rookery_schema (version, description) VALUES (999, 'from the future')");
    let e = PgStorage::open(&o).unwrap_err();
    assert!(e.to_string().contains("newer than this Rookery"), "{e}");
}

#[test]
fn a_stopped_database_gives_bounded_errors_and_recovers() {
    let Some((server, s)) = pg("a_stopped_database_gives_bounded_errors_and_recovers") else {
        return;
    };
    let alice = AccountKey::new("ex.org", "alice");
    s.create_user(alice, &creds()).unwrap();
    s.offline_store(alice, "<message><body>before</body></message>", None)
        .unwrap();
    server.stop_server();
    let t = Instant::now();
    let e = s
        .offline_store(alice, "<message><body>during</body></message>", None)
        .unwrap_err();
    assert!(matches!(e, StorageError::Unavailable(_)), "{e:?}");
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "took {:?}",
        t.elapsed()
    );
    let stanza = e.stanza_error();
    assert_eq!(
        stanza.condition,
        xep_support::stanza::Condition::ResourceConstraint
    );
    assert!(matches!(
        s.user_exists(alice),
        Err(StorageError::Unavailable(_))
    ));
    // The archive refuses or reports, never blocks past its bound.
    let archive = s.archive();
    let t = Instant::now();
    let r = archive.append(vec![msg("alice@ex.org", "bob@ex.org", Some("x"), "lost?")]);
    assert!(r.is_err(), "{r:?}");
    assert!(t.elapsed() < Duration::from_secs(8));
    assert!(s.unavailable_count() > 0);
    server.start_server();
    // Back: the pool reconnects by itself.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match s.offline_count(alice) {
            Ok(n) => {
                assert_eq!(
                    n, 1,
                    "nothing acknowledged was lost, nothing refused was kept"
                );
                break;
            }
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("PostgreSQL did not come back: {e}\n{}", server.log()),
        }
    }
    assert!(matches!(
        s.offline_store(alice, "<message><body>after</body></message>", None)
            .unwrap(),
        OfflineStored::Stored(_)
    ));
    let owner = BareJid::new("alice@ex.org").unwrap();
    // Refused for a second after the failed write at most.
    std::thread::sleep(Duration::from_millis(1100));
    let a = archive
        .append(vec![msg("alice@ex.org", "bob@ex.org", Some("y"), "after")])
        .unwrap();
    assert!(matches!(a[0], Appended::Stored(_)));
    assert_eq!(archive.count(&owner).unwrap(), 1);
}

#[test]
fn everything_moves_from_sled_to_postgresql_and_back_with_counts_verified() {
    let Some((server, pgs)) =
        pg("everything_moves_from_sled_to_postgresql_and_back_with_counts_verified")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sled = SledStorage::open(&dir.path().join("a")).unwrap();
    // Some of everything in sled.
    let alice = AccountKey::new("ex.org", "alice");
    sled.create_user(alice, &creds()).unwrap();
    sled.create_user(AccountKey::new("ex.org", "bob"), &creds())
        .unwrap();
    sled.roster_put(alice, item("bob@ex.org", Subscription::Both))
        .unwrap();
    sled.roster_put(alice, item("gone@ex.org", Subscription::None))
        .unwrap();
    sled.roster_remove(alice, "gone@ex.org").unwrap();
    sled.pending_subscription_add(alice, "eve@ex.org", "<presence type='subscribe'/>")
        .unwrap();
    for i in 0..5 {
        sled.offline_store(alice, &format!("<message><body>{i}</body></message>"), None)
            .unwrap();
    }
    sled.module_put(
        alice,
        "mod_vcard",
        "vcard",
        b"<vCard xmlns='vcard-temp'><FN>A</FN></vCard>",
    )
    .unwrap();
    sled.module_put(alice, "mod_pep", "node:x", b"\x00\x01")
        .unwrap();
    sled.module_put(
        AccountKey::new("conference.ex.org", ""),
        "mod_muc",
        "room:r",
        b"<room/>",
    )
    .unwrap();
    let archive = sled.archive();
    let mut batch = Vec::new();
    for i in 0..1500 {
        batch.push(msg(
            "alice@ex.org",
            if i % 2 == 0 {
                "bob@ex.org"
            } else {
                "carol@ex.org"
            },
            Some(&format!("o{i}")),
            &format!("{i}"),
        ));
    }
    archive.append(batch).unwrap();
    archive
        .append(vec![msg(
            "room@conference.ex.org",
            "alice@ex.org",
            None,
            "muc",
        )])
        .unwrap();
    let ver = sled.roster_version(alice).unwrap();

    let counts = transfer::copy(&sled, &pgs).unwrap();
    assert_eq!(counts.accounts, 2);
    assert_eq!(counts.offline, 5);
    assert_eq!(counts.archived_messages, 1501);
    assert_eq!(counts.archives, 2);
    assert_eq!(counts.tombstones, 1);
    // The copy behaves as the original.
    assert_eq!(pgs.roster_version(alice).unwrap(), ver);
    assert_eq!(
        pgs.roster_get(alice).unwrap(),
        sled.roster_get(alice).unwrap()
    );
    assert!(pgs
        .get_credentials(alice)
        .unwrap()
        .unwrap()
        .verify_password("secret"));
    assert_eq!(
        pgs.offline_peek(alice, 10)
            .unwrap()
            .iter()
            .map(|m| m.1.clone())
            .collect::<Vec<_>>(),
        sled.offline_peek(alice, 10)
            .unwrap()
            .iter()
            .map(|m| m.1.clone())
            .collect::<Vec<_>>()
    );
    assert_eq!(
        server.psql("SELECT count(*) FROM rookery_archive_messages"),
        "1501"
    );
    let newer = pgs
        .roster_put(alice, item("new@ex.org", Subscription::None))
        .unwrap();
    assert!(newer.ver > ver, "versions go on past the copied ones");
    // A second copy into a database with data is refused.
    let e = transfer::copy(&sled, &pgs).unwrap_err();
    assert!(e.to_string().contains("not empty"), "{e}");
    // And back into a fresh sled database.
    let back = SledStorage::open(&dir.path().join("b")).unwrap();
    let counts_back = transfer::copy(&pgs, &back).unwrap();
    assert_eq!(counts_back.archived_messages, 1501);
    assert_eq!(counts_back.roster_items, 2);
    let owner = BareJid::new("alice@ex.org").unwrap();
    let page = |a: Arc<dyn crate::storage::ArchiveEngine>| {
        a.page(
            &owner,
            &PageQuery {
                with: Some("bob@ex.org"),
                lo: 0,
                hi: u64::MAX,
                reverse: true,
                limit: 3,
            },
        )
        .unwrap()
    };
    assert_eq!(page(back.archive()), page(sled.archive()));

    // Backup of PostgreSQL restores on PostgreSQL and on sled.
    let file = dir.path().join("pg.backup");
    let n = pgs.backup(&file).unwrap();
    assert!(n > 1500);
    pgs.create_user(AccountKey::new("ex.org", "later"), &creds())
        .unwrap();
    assert_eq!(pgs.restore(&file).unwrap(), n);
    assert!(!pgs.user_exists(AccountKey::new("ex.org", "later")).unwrap());
    assert_eq!(pgs.archive().count(&owner).unwrap(), 1500);
    let third = SledStorage::open(&dir.path().join("c")).unwrap();
    assert_eq!(third.restore(&file).unwrap(), n);
    assert_eq!(third.count_users("ex.org").unwrap(), 2);
}
