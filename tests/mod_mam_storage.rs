//! The message archive's storage against the real binary: what the server
//! acknowledged (a XEP-0198 `<a/>`, or an iq answer after the messages) is
//! in both archives after a SIGKILL, exactly once, also when the client
//! resends the same stanzas (same origin-id) after the restart; and a data
//! directory with archives in the old layout (mod_mam's module key/value
//! records, written here byte for byte as the old server wrote them) is
//! converted at the first start: queries return the old messages with
//! their old ids, `with` and counts work, and the converted origin-ids
//! still make resends idempotent; a graceful stop writes what was
//! archived but not yet flushed; and archives travel in a XEP-0227
//! export/import with their ids.

use crate::common;

use common::client::Client;
use common::im::{self, bare, sync, ALICE, BOB};
use common::server::Server;
use common::Element;

const NS_MAM: &str = "urn:xmpp:mam:2";
const NS_RSM: &str = "http://jabber.org/protocol/rsm";
const NS_FORWARD: &str = "urn:xmpp:forward:0";
const NS_SM: &str = "urn:xmpp:sm:3";

/// A chat message with an origin-id.
fn chat_o(to: &str, n: usize) -> String {
    format!(
        "<message to='{to}' type='chat' id='m{n}'><body>b{n}</body>\
         <origin-id xmlns='urn:xmpp:sid:0' id='origin-{n}'/></message>"
    )
}

/// Every message of `c`'s archive (bodies, in order; pages of 250) and
/// the RSM count of the first answer.
async fn archive(c: &mut Client, form: &str) -> (Vec<String>, u64, Vec<String>) {
    let mut bodies = Vec::new();
    let mut ids = Vec::new();
    let mut after = String::new();
    let mut count = None;
    loop {
        let id = c.id();
        let set = if after.is_empty() {
            format!("<set xmlns='{NS_RSM}'><max>250</max></set>")
        } else {
            format!("<set xmlns='{NS_RSM}'><max>250</max><after>{after}</after></set>")
        };
        c.send(&format!(
            "<iq type='set' id='{id}'><query xmlns='{NS_MAM}'>{form}{set}</query></iq>"
        ))
        .await;
        let answer = loop {
            let e = c.recv().await;
            if e.name == "iq" && e.attr("id") == Some(id.as_str()) {
                break e;
            }
            if let Some(r) = e.child_ns("result", NS_MAM) {
                let m = r
                    .child_ns("forwarded", NS_FORWARD)
                    .and_then(|f| f.child("message"))
                    .unwrap_or_else(|| panic!("{e}"));
                bodies.push(m.child_text("body").unwrap_or("").to_string());
                ids.push(r.attr("id").unwrap().to_string());
            }
        };
        assert_eq!(answer.attr("type"), Some("result"), "{answer}");
        let fin = answer.child_ns("fin", NS_MAM).expect("fin");
        let set = fin.child_ns("set", NS_RSM).expect("set");
        count.get_or_insert(set.child_text("count").unwrap().parse::<u64>().unwrap());
        if fin.attr("complete") == Some("true") {
            return (bodies, count.unwrap(), ids);
        }
        after = set.child_text("last").unwrap().to_string();
    }
}

fn names(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("b{i}")).collect()
}

async fn sm_login(server: &Server, user: (&str, &str), resource: &str) -> Client {
    let mut c = Client::login(server, user.0, user.1, Some(resource)).await;
    c.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
        .await;
    let e = c
        .recv_where("enabled", |e| e.ns == NS_SM && e.name != "r")
        .await;
    assert_eq!(e.name, "enabled", "{e}");
    c
}

#[tokio::test]
async fn acknowledged_messages_survive_sigkill_exactly_once() {
    let mut server = common::server_with_users();
    let bob = bare(BOB);
    // 1. Acknowledged by <a/>: 40 messages, <r/>, <a h='40'/>, SIGKILL.
    let mut a = sm_login(&server, ALICE, "a").await;
    for n in 0..40 {
        a.send(&chat_o(&bob, n)).await;
    }
    a.send("<r xmlns='urn:xmpp:sm:3'/>").await;
    let ack = a
        .recv_where("<a/>", |e| e.ns == NS_SM && e.name == "a")
        .await;
    assert_eq!(ack.attr("h"), Some("40"), "{ack}");
    server.kill_hard();
    server.restart();
    let mut a = im::login(&server, ALICE, "a").await;
    let (b, count, _) = archive(&mut a, "").await;
    assert_eq!(b, names(0..40));
    assert_eq!(count, 40);
    // The client never saw its stanzas acknowledged on that connection
    // (say): it resends them all after the restart. Nothing is stored twice.
    for n in 0..40 {
        a.send(&chat_o(&bob, n)).await;
    }
    sync(&mut a).await;
    let (b, count, _) = archive(&mut a, "").await;
    assert_eq!(b, names(0..40));
    assert_eq!(count, 40);
    // 2. Acknowledged by an iq answer after them (no stream management).
    for n in 40..70 {
        a.send(&chat_o(&bob, n)).await;
    }
    sync(&mut a).await;
    server.kill_hard();
    server.restart();
    let mut a = im::login(&server, ALICE, "a").await;
    let (b, count, _) = archive(&mut a, "").await;
    assert_eq!(b, names(0..70));
    assert_eq!(count, 70);
    // Bob's archive (he was offline: each message archived once for him).
    let mut bc = im::login(&server, BOB, "b").await;
    let (b, count, _) = archive(&mut bc, "").await;
    assert_eq!(b, names(0..70));
    assert_eq!(count, 70);
}

/// The value the old server wrote under `m:<id>`: `<peer>\n<message XML>`.
fn old_value(peer: &str, from: &str, to: &str, n: usize, origin: bool) -> String {
    let o = if origin {
        format!("<origin-id xmlns='urn:xmpp:sid:0' id='origin-{n}'/>")
    } else {
        String::new()
    };
    format!("{peer}\n<message from='{from}' to='{to}' type='chat' id='m{n}'><body>b{n}</body>{o}</message>")
}

#[tokio::test]
async fn archives_of_the_old_layout_are_converted_at_start() {
    let mut server = common::server_with_users();
    // Start once (creates the database), stop, then write the old layout.
    server.stop();
    let base: u64 = 1_600_000_000_000_000;
    let id = |i: usize| format!("{:020}", base + i as u64 * 1000);
    {
        let db = sled::open(server.dir().join("data").join("db")).expect("open the data");
        let tree = db.open_tree("module_data").unwrap();
        let key = |user: &str, k: &str| {
            let mut v = format!("localhost\0{user}\0mod_mam\0").into_bytes();
            v.extend_from_slice(k.as_bytes());
            v
        };
        let mut batch = sled::Batch::default();
        for i in 0..1200 {
            // alice <-> bob, alternating directions; carol in every tenth.
            let (peer, from, to) = if i % 10 == 9 {
                ("carol@localhost", "carol@localhost/c", "alice@localhost")
            } else if i % 2 == 0 {
                ("bob@localhost", "alice@localhost/a", "bob@localhost")
            } else {
                ("bob@localhost", "bob@localhost/b", "alice@localhost")
            };
            batch.insert(
                key("alice", &format!("m:{}", id(i))),
                old_value(peer, from, to, i, true).as_bytes(),
            );
            batch.insert(key("alice", &format!("w:{peer}\0{}", id(i))), &b""[..]);
            if peer == "bob@localhost" {
                batch.insert(
                    key("bob", &format!("m:{}", id(i))),
                    old_value("alice@localhost", from, to, i, false).as_bytes(),
                );
                batch.insert(
                    key("bob", &format!("w:alice@localhost\0{}", id(i))),
                    &b""[..],
                );
            }
        }
        batch.insert(
            key("alice", "prefs"),
            &b"<prefs xmlns='urn:xmpp:mam:2' default='always'><always/><never/></prefs>"[..],
        );
        tree.apply_batch(batch).unwrap();
        db.flush().unwrap();
    }
    // A data directory from before the conversion has no marker.
    common::archive_files::ArchiveFiles::open(&server.dir().join("data")).forget_conversion();
    server.restart();
    let mut a = im::login(&server, ALICE, "a").await;
    let (b, count, ids) = archive(&mut a, "").await;
    assert_eq!(b, names(0..1200));
    assert_eq!(count, 1200);
    // Old ids kept (clients hold them as stanza-ids).
    assert_eq!(ids[0], id(0));
    assert_eq!(ids[1199], id(1199));
    // `with` over the rebuilt index, and its count.
    let form = format!(
        "<x xmlns='jabber:x:data' type='submit'>\
         <field var='FORM_TYPE' type='hidden'><value>{NS_MAM}</value></field>\
         <field var='with'><value>carol@localhost</value></field></x>"
    );
    let (b, count, _) = archive(&mut a, &form).await;
    assert_eq!(
        b,
        (0..1200)
            .filter(|i| i % 10 == 9)
            .map(|i| format!("b{i}"))
            .collect::<Vec<_>>()
    );
    assert_eq!(count, 120);
    // after-id of an old id, and a page from the end.
    let id = a.id();
    a.send(&format!(
        "<iq type='set' id='{id}'><query xmlns='{NS_MAM}'><set xmlns='{NS_RSM}'><max>2</max><before/></set></query></iq>"
    ))
    .await;
    let mut last = Vec::new();
    let ans: Element = loop {
        let e = a.recv().await;
        if e.name == "iq" && e.attr("id") == Some(id.as_str()) {
            break e;
        }
        if e.child_ns("result", NS_MAM).is_some() {
            last.push(e);
        }
    };
    assert_eq!(ans.attr("type"), Some("result"), "{ans}");
    assert_eq!(last.len(), 2);
    // The converted origin-ids: resending alice's message 0 stores nothing.
    a.send(&chat_o(&bare(BOB), 0)).await;
    sync(&mut a).await;
    let (_, count, _) = archive(&mut a, "").await;
    assert_eq!(count, 1200);
    // Bob's archive too (no origin-ids there: incoming ones are new).
    let mut bc = im::login(&server, BOB, "b").await;
    let (b, count, _) = archive(&mut bc, "").await;
    assert_eq!(count, 1080 + 1, "{:?}", &b[b.len().saturating_sub(3)..]);
    // The conversion ran once: a restart changes nothing.
    drop(a);
    drop(bc);
    server.stop();
    server.restart();
    let mut a = im::login(&server, ALICE, "a").await;
    let (_, count, _) = archive(&mut a, "").await;
    assert_eq!(count, 1200);
}

#[tokio::test]
async fn a_graceful_stop_writes_what_was_archived() {
    let mut server = common::server_with_users();
    let mut a = im::login(&server, ALICE, "a").await;
    let mut b = im::online(&server, BOB, "b").await;
    for n in 0..30 {
        a.send(&chat_o(&bare(BOB), n)).await;
    }
    // Delivered to bob, so routed and archived (both ends); stop at once,
    // before the archive's own flush would have run.
    for _ in 0..30 {
        b.recv_where("a message", |e| e.name == "message").await;
    }
    drop(a);
    drop(b);
    server.stop();
    server.restart();
    let mut b = im::login(&server, BOB, "b").await;
    let (bodies, count, _) = archive(&mut b, "").await;
    assert_eq!(bodies, names(0..30));
    assert_eq!(count, 30);
}

#[tokio::test]
async fn archives_travel_in_xep0227_export_and_import() {
    let a = common::server_with_users();
    let mut al = im::login(&a, ALICE, "a").await;
    for n in 0..3 {
        al.send(&chat_o(&bare(BOB), n)).await;
    }
    sync(&mut al).await;
    let (_, _, ids) = archive(&mut al, "").await;
    assert_eq!(ids.len(), 3);
    drop(al);
    let dir = a.dir().join("export");
    a.ctl_ok(&["export_piefxis", &dir.display().to_string()]);
    let file = dir.join("localhost.xml");
    let xml = std::fs::read_to_string(&file).unwrap();
    assert!(xml.contains("urn:xmpp:pie:0#mam"), "{xml}");
    let b = Server::start();
    let out = b.ctl_ok(&["import_piefxis", &file.display().to_string()]);
    assert!(out.contains("Imported 2 account(s)"), "{out}");
    let mut al = im::login(&b, ALICE, "a").await;
    let (bodies, count, ids2) = archive(&mut al, "").await;
    assert_eq!(bodies, names(0..3));
    assert_eq!(count, 3);
    assert_eq!(ids2, ids, "ids kept");
    // The origin-ids came along: a resend is not stored again.
    al.send(&chat_o(&bare(BOB), 1)).await;
    sync(&mut al).await;
    assert_eq!(archive(&mut al, "").await.1, 3);
    let mut bo = im::login(&b, BOB, "b").await;
    assert_eq!(archive(&mut bo, "").await.0, names(0..3));
}
