//! The message archive's engines against the real binary
//! (`archive_engine`, src/storage/archive/): a data directory whose archive
//! is in sled's trees (the default engine, as every release wrote it) opens
//! with `archive_engine: fjall`, its archive moved into `DATA_DIR/archive/`
//! at the first start (same ids, counts, `with` index and origin-ids; sled's
//! archive trees dropped), and back into sled when `archive_engine: sled`
//! is configured again; `rookery ctl backup`/`restore` carry the fjall
//! archive, running and stopped, and a backup taken on one engine restores
//! on the other; a bad `archive_engine` is refused with its line.

use crate::common;

use common::archive_files::ArchiveFiles;
use common::client::Client;
use common::im::{self, bare, sync, ALICE, BOB};
use common::server::{Config, Server};

const NS_MAM: &str = "urn:xmpp:mam:2";
const NS_RSM: &str = "http://jabber.org/protocol/rsm";

/// A chat message with an origin-id.
fn chat_o(to: &str, n: usize) -> String {
    format!(
        "<message to='{to}' type='chat' id='m{n}'><body>b{n}</body>\
         <origin-id xmlns='urn:xmpp:sid:0' id='origin-{n}'/></message>"
    )
}

/// Bodies and ids of `c`'s archive (one page of up to 500, with `form`),
/// and the RSM count.
async fn archive(c: &mut Client, form: &str) -> (Vec<String>, Vec<String>, u64) {
    let id = c.id();
    c.send(&format!(
        "<iq type='set' id='{id}'><query xmlns='{NS_MAM}'>{form}\
         <set xmlns='{NS_RSM}'><max>500</max></set></query></iq>"
    ))
    .await;
    let (mut bodies, mut ids) = (Vec::new(), Vec::new());
    loop {
        let e = c.recv().await;
        if e.name == "iq" && e.attr("id") == Some(id.as_str()) {
            assert_eq!(e.attr("type"), Some("result"), "{e}");
            let count = e
                .child_ns("fin", NS_MAM)
                .and_then(|f| f.child_ns("set", NS_RSM))
                .and_then(|s| s.child_text("count"))
                .map(|c| c.parse().unwrap())
                .unwrap_or(0);
            return (bodies, ids, count);
        }
        if let Some(r) = e.child_ns("result", NS_MAM) {
            let m = r
                .child_ns("forwarded", "urn:xmpp:forward:0")
                .and_then(|f| f.child("message"))
                .unwrap_or_else(|| panic!("{e}"));
            bodies.push(m.child_text("body").unwrap_or("").to_string());
            ids.push(r.attr("id").unwrap().to_string());
        }
    }
}

fn with(peer: &str) -> String {
    format!(
        "<x xmlns='jabber:x:data' type='submit'>\
         <field var='FORM_TYPE' type='hidden'><value>{NS_MAM}</value></field>\
         <field var='with'><value>{peer}</value></field></x>"
    )
}

fn names(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("b{i}")).collect()
}

/// Set (or with `None` remove) `archive_engine` in the server's config.
fn set_engine(server: &Server, engine: Option<&str>) {
    let text = std::fs::read_to_string(server.config_path()).unwrap();
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with("archive_engine:"))
        .map(str::to_string)
        .collect();
    if let Some(e) = engine {
        lines.insert(0, format!("archive_engine: {e}"));
    }
    std::fs::write(server.config_path(), lines.join("\n") + "\n").unwrap();
}

fn sled_has_archive_trees(data: &std::path::Path) -> bool {
    let db = sled::open(data.join("db")).unwrap();
    db.tree_names()
        .iter()
        .any(|n| n.as_ref() == b"archive_messages")
}

#[tokio::test]
async fn an_archive_in_sled_moves_to_fjall_at_start_and_back() {
    // As every release before fjall: the archive in sled's trees.
    let mut server =
        Server::start_with_yaml_edit(Config::default(), |y| format!("archive_engine: sled\n{y}"));
    server.register("alice", "localhost", "secret");
    server.register("bob", "localhost", "hunter2");
    let data = server.dir().join("data");
    let mut a = im::login(&server, ALICE, "a").await;
    for n in 0..30 {
        a.send(&chat_o(&bare(BOB), n)).await;
    }
    sync(&mut a).await;
    let (bodies, ids, count) = archive(&mut a, "").await;
    assert_eq!((bodies, count), (names(0..30), 30));
    drop(a);
    server.stop();
    assert!(!data.join("archive").exists(), "sled only so far");
    {
        let files = ArchiveFiles::open(&data);
        assert_eq!(files.engine(), "sled");
        let arch = files
            .archive_of("alice@localhost")
            .expect("alice's archive");
        assert!(!files.keys("archive_messages", &arch).is_empty());
    }

    // fjall configured: moved at the first start.
    set_engine(&server, Some("fjall"));
    server.restart();
    let mut a = im::login(&server, ALICE, "a").await;
    let (bodies, ids2, count) = archive(&mut a, "").await;
    assert_eq!((bodies, count), (names(0..30), 30));
    assert_eq!(ids2, ids, "ids kept");
    let (bodies, _, count) = archive(&mut a, &with(&bare(BOB))).await;
    assert_eq!((bodies.len(), count), (30, 30), "the peer index came along");
    // The origin-ids came along: a resend is not stored again; a new one is.
    a.send(&chat_o(&bare(BOB), 7)).await;
    a.send(&chat_o(&bare(BOB), 30)).await;
    sync(&mut a).await;
    let (bodies, _, count) = archive(&mut a, "").await;
    assert_eq!((bodies, count), (names(0..31), 31));
    let mut b = im::login(&server, BOB, "b").await;
    assert_eq!(archive(&mut b, "").await.0, names(0..31));
    drop((a, b));
    server.stop();
    assert!(data.join("archive").is_dir());
    assert!(
        !sled_has_archive_trees(&data),
        "sled's archive trees are dropped after the move"
    );
    // Again: nothing to move, same archive.
    server.restart();
    let mut a = im::login(&server, ALICE, "a").await;
    assert_eq!(archive(&mut a, "").await.2, 31);
    drop(a);
    server.stop();

    // Back to sled when it is configured again.
    set_engine(&server, Some("sled"));
    server.restart();
    let mut a = im::login(&server, ALICE, "a").await;
    let (bodies, ids3, count) = archive(&mut a, "").await;
    assert_eq!((bodies, count), (names(0..31), 31));
    assert_eq!(ids3[..30], ids[..]);
    drop(a);
    server.stop();
    assert!(sled_has_archive_trees(&data));
    {
        let files = ArchiveFiles::open(&data);
        assert_eq!(files.engine(), "fjall");
        assert!(
            files.pairs("archive_messages").is_empty(),
            "fjall's copy is emptied after the move back"
        );
    }
}

#[tokio::test]
async fn backup_and_restore_carry_the_fjall_archive() {
    let mut server =
        Server::start_with_yaml_edit(Config::default(), |y| format!("archive_engine: fjall\n{y}"));
    server.register("alice", "localhost", "secret");
    server.register("bob", "localhost", "hunter2");
    let data = server.dir().join("data");
    let mut a = im::login(&server, ALICE, "a").await;
    for n in 0..5 {
        a.send(&chat_o(&bare(BOB), n)).await;
    }
    sync(&mut a).await;
    assert_eq!(archive(&mut a, "").await.0, names(0..5));
    let file = server.dir().join("running.backup");
    let f = file.display().to_string();
    server.ctl_ok(&["backup", &f]);
    for n in 5..8 {
        a.send(&chat_o(&bare(BOB), n)).await;
    }
    sync(&mut a).await;
    assert_eq!(archive(&mut a, "").await.2, 8);
    drop(a);
    // Running: the archive is back to the backup's five messages.
    let out = server.ctl_ok(&["restore", &f]);
    assert!(out.contains("Restored"), "{out}");
    let mut a = im::login(&server, ALICE, "a").await;
    let (bodies, _, count) = archive(&mut a, "").await;
    assert_eq!((bodies, count), (names(0..5), 5));
    // Appends after a restore get ids above the restored ones.
    a.send(&chat_o(&bare(BOB), 5)).await;
    sync(&mut a).await;
    assert_eq!(archive(&mut a, "").await.0, names(0..6));
    drop(a);
    server.stop();
    assert!(data.join("archive").is_dir());
    assert!(!sled_has_archive_trees(&data), "nothing in sled's trees");

    // Stopped: backup and restore on the files directly.
    let offline = server.dir().join("offline.backup");
    let of = offline.display().to_string();
    server.ctl_ok(&["backup", &of]);
    server.ctl_ok(&["unregister", "alice", "localhost"]);
    server.restart();
    server.register("alice", "localhost", "secret");
    let mut a = im::login(&server, ALICE, "a").await;
    assert_eq!(archive(&mut a, "").await.2, 0, "removed with the account");
    drop(a);
    server.stop();
    server.ctl_ok(&["restore", &of]);
    server.restart();
    let mut a = im::login(&server, ALICE, "a").await;
    assert_eq!(archive(&mut a, "").await.0, names(0..6));
    drop(a);
    server.stop();

    // A backup taken on fjall restores on sled, and back.
    set_engine(&server, Some("sled"));
    server.ctl_ok(&["unregister", "bob", "localhost"]);
    server.ctl_ok(&["restore", &of]);
    server.restart();
    let mut b = im::login(&server, BOB, "b").await;
    assert_eq!(archive(&mut b, "").await.0, names(0..6));
    drop(b);
    server.stop();
    assert!(sled_has_archive_trees(&data));
}

#[test]
fn a_bad_archive_engine_is_refused_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("rookery.yml");
    std::fs::write(
        &config,
        format!(
            "hosts: [localhost]\ndata_dir: {}\narchive_engine: rocksdb\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rookery"))
        .args(["serve", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("rookery.yml:3") && err.contains("archive_engine: expected `fjall` or `sled`"),
        "{err}"
    );
}
