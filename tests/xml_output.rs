//! Whatever Rookery writes is well-formed XML 1.0, even when what it holds
//! is not: stanzas stored by earlier versions with characters XML forbids
//! (raw U+0001, U+FFFF, U+000B, or references such as `&#1;` and
//! `&#xFFFE;`) are written straight into the stopped server's database, and
//! after a restart the offline message is delivered, the pending
//! subscription request redelivered, the archive synced and the room's
//! subject replayed — each with U+FFFD in place of every such character.
//! A raw U+0001 sent by a client never reaches anyone raw (with a strict
//! reader nothing is delivered; without one, it arrives replaced).
//!
//! The character check itself is the test client's: every unit any test
//! receives goes through `common::wellformed::check_chars`, a violation
//! fails the test; here the strict check is also asserted explicitly.

use crate::common;

use std::time::Duration;

use common::client::Client;
use common::im::{self, bare, sync, ALICE, BOB, CAROL};
use common::server::Server;
use common::Element;

const NS_MAM: &str = "urn:xmpp:mam:2";
const NS_FORWARD: &str = "urn:xmpp:forward:0";
const MUC: &str = "http://jabber.org/protocol/muc";
const MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";
const ROOM: &str = "poisoned@conference.localhost";

/// What stored data of an earlier version held, as stored text: raw
/// forbidden characters and references to forbidden characters.
const POISON: &str = "A\u{1}B&#1;C&#xFFFE;D\u{FFFF}E\u{B}F&#x1f;G";
/// What must arrive instead.
const REPAIRED: &str = "A\u{FFFD}B\u{FFFD}C\u{FFFD}D\u{FFFD}E\u{FFFD}F\u{FFFD}G";

/// What an archived message of an earlier version held, as the same number
/// of bytes as `MARK-offline` (archive blocks are length-prefixed records,
/// so their text is poisoned in place).
const POISON_12: &[u8] = b"A\x01B&#1;C\xEF\xBF\xBFD";
/// What must arrive instead.
const REPAIRED_12: &str = "A\u{FFFD}B\u{FFFD}C\u{FFFD}D";

/// The trees whose values are stanzas stored as XML text.
const XML_TREES: [&str; 3] = ["offline", "pending_subscriptions", "module_data"];

/// Replace every `marker` in stored XML values by [`POISON`]; returns how
/// many values were changed.
fn poison_stored(server: &Server, markers: &[&str]) -> usize {
    let db =
        sled::open(server.dir().join("data").join("db")).expect("open the stopped server's data");
    let mut changed = 0;
    for name in XML_TREES {
        let tree = db.open_tree(name).unwrap();
        for row in tree.iter() {
            let (k, v) = row.unwrap();
            let Ok(text) = std::str::from_utf8(&v) else {
                continue;
            };
            if markers.iter().any(|m| text.contains(m)) {
                let mut t = text.to_string();
                for m in markers {
                    t = t.replace(m, POISON);
                }
                tree.insert(k, t.as_bytes()).unwrap();
                changed += 1;
            }
        }
    }
    db.flush().unwrap();
    drop(db);
    // The message archive (sled by default): binary blocks, the stanza
    // text inside records.
    let files = common::archive_files::ArchiveFiles::open(&server.dir().join("data"));
    let marker = b"MARK-offline";
    assert_eq!(marker.len(), POISON_12.len());
    for (k, v) in files.pairs("archive_messages") {
        let mut v = v;
        let mut hit = false;
        while let Some(at) = v.windows(marker.len()).position(|w| w == marker) {
            v[at..at + marker.len()].copy_from_slice(POISON_12);
            hit = true;
        }
        if hit {
            files.insert("archive_messages", &k, &v);
            changed += 1;
        }
    }
    files.flush();
    changed
}

/// Sends a MAM query and returns the archived messages' bodies.
async fn archived_bodies(c: &mut Client) -> Vec<String> {
    let id = c.id();
    c.send(&format!(
        "<iq type='set' id='{id}'><query xmlns='{NS_MAM}' queryid='q{id}'/></iq>"
    ))
    .await;
    let mut bodies = Vec::new();
    for _ in 0..200 {
        let e = c.recv().await;
        if e.name == "iq" && e.attr("id") == Some(id.as_str()) {
            assert_eq!(e.attr("type"), Some("result"), "{e}");
            return bodies;
        }
        if let Some(m) = e
            .child_ns("result", NS_MAM)
            .and_then(|r| r.child_ns("forwarded", NS_FORWARD))
            .and_then(|f| f.child("message"))
        {
            bodies.push(m.child_text("body").unwrap_or("").to_string());
        }
    }
    panic!("no answer to the MAM query");
}

/// Joins [`ROOM`] as `nick`; returns everything up to the subject message.
async fn join(c: &mut Client, nick: &str) -> Vec<Element> {
    c.send(&format!(
        "<presence to='{ROOM}/{nick}'><x xmlns='{MUC}'/></presence>"
    ))
    .await;
    let mut got = Vec::new();
    for _ in 0..100 {
        let e = c
            .recv_where("the join sequence", |e| {
                e.attr("from").is_some_and(|f| f.starts_with(ROOM))
            })
            .await;
        assert_ne!(e.attr("type"), Some("error"), "join refused: {e}");
        let subject =
            e.name == "message" && e.child("subject").is_some() && e.child("body").is_none();
        got.push(e);
        if subject {
            return got;
        }
    }
    panic!("no subject in the join sequence");
}

async fn iq_result(c: &mut Client, to: &str, inner: &str) {
    let id = c.id();
    let r = c
        .request(
            &format!("<iq type='set' to='{to}' id='{id}'>{inner}</iq>"),
            &id,
        )
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
}

#[tokio::test]
async fn poisoned_stored_stanzas_are_delivered_synced_and_replayed_repaired() {
    let mut server = im::im_server();
    let bob = bare(BOB);
    {
        let mut a = im::online(&server, ALICE, "a").await;
        // Offline message (also archived for both), pending subscription.
        a.send(&im::chat(&bob, "m1", "MARK-offline")).await;
        a.send(&format!(
            "<presence to='{bob}' type='subscribe'><status>MARK-request</status></presence>"
        ))
        .await;
        // A persistent room with a subject.
        join(&mut a, "alice").await;
        iq_result(
            &mut a,
            ROOM,
            &format!(
                "<query xmlns='{MUC_OWNER}'><x xmlns='jabber:x:data' type='submit'>\
                 <field var='FORM_TYPE'><value>{MUC}#roomconfig</value></field>\
                 <field var='muc#roomconfig_persistentroom'><value>1</value></field>\
                 </x></query>"
            ),
        )
        .await;
        a.send(&format!(
            "<message type='groupchat' to='{ROOM}'><subject>MARK-topic</subject></message>"
        ))
        .await;
        a.recv_where("the subject", |e| {
            e.child_text("subject") == Some("MARK-topic")
        })
        .await;
        sync(&mut a).await;
        a.close().await;
    }
    server.stop();
    // Offline copy, subscription request, bob's and alice's archive, room.
    let changed = poison_stored(&server, &["MARK-offline", "MARK-request", "MARK-topic"]);
    assert!(
        changed >= 5,
        "only {changed} stored values carried a marker"
    );
    server.restart();

    // Delivered at login, with everything else of the stanza kept.
    let (mut b, got) = im::online_with(&server, BOB, "b", "<presence/>").await;
    let msg = got
        .iter()
        .find(|e| e.name == "message")
        .unwrap_or_else(|| panic!("no offline message: {}", im::show(&got)));
    assert_eq!(msg.child_text("body"), Some(REPAIRED), "{msg}");
    assert_eq!(msg.attr("id"), Some("m1"), "{msg}");
    assert!(msg.child("delay").is_some(), "{msg}");
    let sub = match got
        .iter()
        .find(|e| e.name == "presence" && e.attr("type") == Some("subscribe"))
    {
        Some(p) => p.clone(),
        None => {
            b.recv_where("the pending subscription request", |e| {
                e.name == "presence" && e.attr("type") == Some("subscribe")
            })
            .await
        }
    };
    assert_eq!(sub.child_text("status"), Some(REPAIRED), "{sub}");

    // The archives sync, on both sides.
    assert_eq!(archived_bodies(&mut b).await, [REPAIRED_12]);
    let mut a = im::online(&server, ALICE, "a2").await;
    assert_eq!(archived_bodies(&mut a).await, [REPAIRED_12]);

    // The room's subject is replayed to a joiner.
    let mut c = im::online(&server, CAROL, "c").await;
    let seq = join(&mut c, "carol").await;
    let subject = seq.last().unwrap();
    assert_eq!(subject.child_text("subject"), Some(REPAIRED), "{subject}");

    // The server logged it, naming whose data it was.
    sync(&mut b).await;
    let log = server.stderr_tail();
    assert!(
        log.contains("stored data of bob@localhost held"),
        "no warning naming the account: {log}"
    );
}

/// The body alice's raw U+0001 may arrive as (without a strict reader).
const RAW_SENT: &[u8] = b"raw\x01ctl";
const RAW_REPAIRED: &str = "raw\u{FFFD}ctl";

/// Sends `<message>` with a raw U+0001 in its body from a fresh session of
/// alice (which a strict reader ends with a stream error); joins [`ROOM`]
/// first for a groupchat.
async fn send_raw(server: &Server, resource: &str, to: &str, kind: &str) {
    let mut a = im::login(server, ALICE, resource).await;
    if kind == "groupchat" {
        join(&mut a, resource).await;
    }
    let mut xml = format!("<message to='{to}' type='{kind}' id='{resource}'><body>").into_bytes();
    xml.extend_from_slice(RAW_SENT);
    xml.extend_from_slice(b"</body></message>");
    a.send_bytes(&xml).await;
    // Whatever comes back (a stream error, the groupchat echo) is checked by
    // the client like everything else; then give the server time to route.
    let _ = a.recv_event_within(Duration::from_millis(500)).await;
}

/// How many of `bodies` came from the raw message; each must be repaired.
fn count_repaired<'a>(bodies: impl IntoIterator<Item = &'a str>, what: &str) -> usize {
    let mut n = 0;
    for body in bodies {
        if body.starts_with("raw") {
            assert_eq!(body, RAW_REPAIRED, "{what}");
            n += 1;
        }
    }
    n
}

fn message_bodies(els: &[Element]) -> Vec<&str> {
    els.iter()
        .filter(|e| e.name == "message")
        .filter_map(|e| e.child_text("body"))
        .collect()
}

#[tokio::test]
async fn a_raw_control_character_from_a_client_never_reaches_anyone_raw() {
    let server = im::im_server();
    // Bob is online and in the room (an instant room he owns).
    let mut b = im::online(&server, BOB, "b").await;
    join(&mut b, "bob").await;
    iq_result(
        &mut b,
        ROOM,
        &format!("<query xmlns='{MUC_OWNER}'><x xmlns='jabber:x:data' type='submit'/></query>"),
    )
    .await;
    // To bob live, to carol while she is offline, and to the room.
    send_raw(&server, "r1", &bare(BOB), "chat").await;
    send_raw(&server, "r2", &bare(CAROL), "chat").await;
    send_raw(&server, "r3", ROOM, "groupchat").await;

    let got = sync(&mut b).await;
    let live = count_repaired(message_bodies(&got), "live chat and groupchat");
    let (mut c, got) = im::online_with(&server, CAROL, "c", "<presence/>").await;
    let offline = count_repaired(message_bodies(&got), "offline");
    let got = join(&mut c, "carol").await;
    let history = count_repaired(message_bodies(&got), "room history");
    let mut archived = 0;
    for cl in [&mut b, &mut c] {
        let bodies = archived_bodies(cl).await;
        archived += count_repaired(bodies.iter().map(String::as_str), "archive");
    }
    // Either the reader refused all three (nothing delivered anywhere), or
    // all arrived repaired: chat and groupchat live, the offline message at
    // login, the groupchat in the history, and the chats in the archives.
    let counts = (live, offline, history, archived);
    assert!(
        counts == (0, 0, 0, 0) || counts == (2, 1, 1, 2),
        "live, offline, history, archived: {counts:?}"
    );
}
