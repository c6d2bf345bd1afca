//! Room archives (XEP-0313 on a MUC room JID) against the real server: one
//! `<stanza-id/>` by the room per groupchat message (forged ones removed),
//! queries by occupants per the room's privacy (non-occupants of an open
//! room and non-members of a members-only room `forbidden`), RSM paging,
//! `with` by occupant room JID (a real JID only for who may see it),
//! `start`/`end`, the join history served from the archive with the same
//! stanza-ids (no duplicate with a MAM catch-up), absurd history requests,
//! a groupchat from a non-occupant, archiving switched off by the room
//! configuration (`muc#roomconfig_enablearchiving`), the archive across a
//! restart (SIGKILL), in `rookery ctl backup`/`restore`,
//! `delete_old_mam_messages groupchat`, `mod_mam`'s `archive_expires_after`
//! on rooms, and destruction deleting the archive.

use crate::common;

use std::time::Duration;

use common::im::{login, ALICE, BOB, CAROL};
use common::{Client, Element};

pub const SERVICE: &str = "conference.localhost";
pub const MUC: &str = "http://jabber.org/protocol/muc";
const MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";
const MUC_ADMIN: &str = "http://jabber.org/protocol/muc#admin";
const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
pub const NS_MAM: &str = "urn:xmpp:mam:2";
const NS_RSM: &str = "http://jabber.org/protocol/rsm";
pub const NS_SID: &str = "urn:xmpp:sid:0";
const NS_FORWARD: &str = "urn:xmpp:forward:0";
pub const NS_OID: &str = "urn:xmpp:occupant-id:0";

pub fn room(name: &str) -> String {
    format!("{name}@{SERVICE}")
}

/// Joins and returns everything up to the subject (the end of the join).
pub async fn join(c: &mut Client, room_jid: &str, nick: &str, x_inner: &str) -> Vec<Element> {
    c.send(&format!(
        "<presence to='{room_jid}/{nick}'><x xmlns='{MUC}'>{x_inner}</x></presence>"
    ))
    .await;
    let mut got = Vec::new();
    for _ in 0..200 {
        let e = c
            .recv_where("the join sequence", |e| {
                e.attr("from")
                    .is_some_and(|f| f == room_jid || f.starts_with(&format!("{room_jid}/")))
            })
            .await;
        assert_ne!(e.attr("type"), Some("error"), "join refused: {e}");
        let done = e.name == "message" && e.child("subject").is_some() && e.child("body").is_none();
        got.push(e);
        if done {
            return got;
        }
    }
    panic!("no subject after 200 stanzas");
}

pub async fn iq(c: &mut Client, kind: &str, to: &str, inner: &str) -> Element {
    let id = c.id();
    c.request(
        &format!("<iq type='{kind}' to='{to}' id='{id}'>{inner}</iq>"),
        &id,
    )
    .await
}

pub fn error_condition(e: &Element) -> String {
    assert_eq!(e.attr("type"), Some("error"), "{e}");
    e.stanza_error().expect("error").1
}

/// The groupchat message with this body from `from`.
pub async fn groupchat_from(c: &mut Client, from: &str, body: &str) -> Element {
    c.recv_where(&format!("groupchat {body} from {from}"), |e| {
        e.name == "message"
            && e.attr("type") == Some("groupchat")
            && e.attr("from") == Some(from)
            && e.child_text("body") == Some(body)
    })
    .await
}

/// The stanza-ids by `by` in a stanza.
pub fn stanza_ids(e: &Element, by: &str) -> Vec<String> {
    e.children
        .iter()
        .filter(|c| c.is("stanza-id", NS_SID) && c.attr("by") == Some(by))
        .filter_map(|c| c.attr("id").map(str::to_string))
        .collect()
}

/// The occupant ids in a stanza.
pub fn occupant_ids(e: &Element) -> Vec<String> {
    e.children
        .iter()
        .filter(|c| c.is("occupant-id", NS_OID))
        .filter_map(|c| c.attr("id").map(str::to_string))
        .collect()
}

/// A MAM query to `to`: the results before the answer, and the answer.
pub async fn mam(c: &mut Client, to: &str, inner: &str) -> (Vec<Element>, Element) {
    let id = c.id();
    c.send(&format!(
        "<iq type='set' id='{id}' to='{to}'><query xmlns='{NS_MAM}' queryid='q-{id}'>{inner}</query></iq>"
    ))
    .await;
    let mut results = Vec::new();
    for _ in 0..2000 {
        let e = c
            .recv_where("a MAM result or answer", |e| {
                (e.name == "iq" && e.attr("id") == Some(id.as_str()))
                    || (e.name == "message" && e.child_ns("result", NS_MAM).is_some())
            })
            .await;
        if e.name == "iq" {
            return (results, e);
        }
        assert_eq!(e.attr("from"), Some(to), "{e}");
        assert_eq!(
            e.child_ns("result", NS_MAM).unwrap().attr("queryid"),
            Some(format!("q-{id}").as_str())
        );
        results.push(e);
    }
    panic!("no answer to the MAM query");
}

pub fn form(fields: &[(&str, &str)]) -> String {
    let mut x = format!(
        "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>{NS_MAM}</value></field>"
    );
    for (k, v) in fields {
        x.push_str(&format!("<field var='{k}'><value>{v}</value></field>"));
    }
    x + "</x>"
}

fn rsm(inner: &str) -> String {
    format!("<set xmlns='{NS_RSM}'>{inner}</set>")
}

/// The archived message of a result.
pub fn forwarded(r: &Element) -> &Element {
    r.child_ns("result", NS_MAM)
        .and_then(|x| x.child_ns("forwarded", NS_FORWARD))
        .and_then(|f| f.child("message"))
        .unwrap_or_else(|| panic!("no forwarded message in {r}"))
}

pub fn result_id(r: &Element) -> String {
    r.child_ns("result", NS_MAM)
        .and_then(|x| x.attr("id"))
        .expect("result id")
        .to_string()
}

fn fin(answer: &Element) -> &Element {
    assert_eq!(answer.attr("type"), Some("result"), "{answer}");
    answer.child_ns("fin", NS_MAM).expect("fin")
}

fn count(answer: &Element) -> u64 {
    fin(answer)
        .child_ns("set", NS_RSM)
        .and_then(|s| s.child_text("count"))
        .and_then(|c| c.parse().ok())
        .expect("count")
}

async fn features(c: &mut Client, jid: &str) -> Vec<String> {
    let r = iq(c, "get", jid, &format!("<query xmlns='{DISCO_INFO}'/>")).await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    r.child("query")
        .expect("query")
        .children_named("feature")
        .filter_map(|f| f.attr("var").map(str::to_string))
        .collect()
}

pub async fn configure(c: &mut Client, room_jid: &str, fields: &[(&str, &str)]) -> Element {
    let mut x = "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>".to_string();
    for (var, value) in fields {
        x.push_str(&format!(
            "<field var='{var}'><value>{value}</value></field>"
        ));
    }
    x.push_str("</x>");
    iq(
        c,
        "set",
        room_jid,
        &format!("<query xmlns='{MUC_OWNER}'>{x}</query>"),
    )
    .await
}

/// Bodies of a join sequence's history messages.
fn history_bodies(got: &[Element]) -> Vec<String> {
    got.iter()
        .filter(|e| e.name == "message" && e.child("body").is_some())
        .map(|e| e.child_text("body").unwrap_or("").to_string())
        .collect()
}

#[tokio::test]
async fn stanza_ids_queries_paging_with_and_join_history() {
    let server = common::im::im_server();
    let r = room("archived");
    let mut a = login(&server, ALICE, "pc").await;
    let mut b = login(&server, BOB, "pc").await;
    let mut c = login(&server, CAROL, "pc").await;
    join(&mut a, &r, "alice", "").await;
    join(&mut b, &r, "bob", "").await;

    let f = features(&mut b, &r).await;
    for feat in [NS_MAM, NS_SID, NS_OID] {
        assert!(f.iter().any(|x| x == feat), "{feat} missing: {f:?}");
    }

    // Five messages from Alice; the third carries a forged stanza-id by
    // the room and two forged occupant ids.
    let mut live = Vec::new();
    for i in 1..=5 {
        let forged = if i == 3 {
            format!("<stanza-id xmlns='{NS_SID}' by='{r}' id='forged'/><occupant-id xmlns='{NS_OID}' id='fake1'/><occupant-id xmlns='{NS_OID}' id='fake2'/>")
        } else {
            String::new()
        };
        a.send(&format!(
            "<message type='groupchat' to='{r}' id='a{i}'><body>msg {i}</body><origin-id xmlns='{NS_SID}' id='o{i}'/>{forged}</message>"
        ))
        .await;
        let m = groupchat_from(&mut b, &format!("{r}/alice"), &format!("msg {i}")).await;
        let ids = stanza_ids(&m, &r);
        assert_eq!(ids.len(), 1, "one stanza-id by the room: {m}");
        assert_eq!(ids[0].len(), 20, "{m}");
        let oids = occupant_ids(&m);
        assert_eq!(oids.len(), 1, "{m}");
        assert!(!oids[0].starts_with("fake"), "{m}");
        live.push(ids[0].clone());
        groupchat_from(&mut a, &format!("{r}/alice"), &format!("msg {i}")).await;
    }
    b.send(&format!(
        "<message type='groupchat' to='{r}' id='b1'><body>from bob</body></message>"
    ))
    .await;
    let m = groupchat_from(&mut a, &format!("{r}/bob"), "from bob").await;
    live.push(stanza_ids(&m, &r)[0].clone());
    groupchat_from(&mut b, &format!("{r}/bob"), "from bob").await;

    // The whole archive, to an occupant, with the live ids.
    let (res, ans) = mam(&mut b, &r, "").await;
    assert_eq!(count(&ans), 6);
    assert_eq!(fin(&ans).attr("complete"), Some("true"));
    let ids: Vec<String> = res.iter().map(result_id).collect();
    assert_eq!(ids, live);
    let first = forwarded(&res[0]);
    assert_eq!(first.attr("from"), Some(format!("{r}/alice").as_str()));
    assert_eq!(first.child_text("body"), Some("msg 1"));
    // The forged ids did not reach the archive either.
    let third = forwarded(&res[2]);
    assert!(!third.to_string().contains("forged"), "{third}");
    assert!(!third.to_string().contains("fake"), "{third}");
    assert_eq!(occupant_ids(third).len(), 1, "{third}");

    // RSM paging: 2 at a time, forwards, then the last page backwards.
    let (p1, ans) = mam(&mut b, &r, &rsm("<max>2</max>")).await;
    assert_eq!(p1.iter().map(result_id).collect::<Vec<_>>(), live[..2]);
    assert_eq!(fin(&ans).attr("complete"), Some("false"));
    let last = fin(&ans)
        .child_ns("set", NS_RSM)
        .and_then(|s| s.child_text("last"))
        .unwrap()
        .to_string();
    let (p2, _) = mam(
        &mut b,
        &r,
        &rsm(&format!("<max>2</max><after>{last}</after>")),
    )
    .await;
    assert_eq!(p2.iter().map(result_id).collect::<Vec<_>>(), live[2..4]);
    let (pl, _) = mam(&mut b, &r, &rsm("<max>2</max><before/>")).await;
    assert_eq!(pl.iter().map(result_id).collect::<Vec<_>>(), live[4..]);

    // `with` an occupant's room JID: what that nick sent.
    let (w, ans) = mam(&mut a, &r, &form(&[("with", &format!("{r}/bob"))])).await;
    assert_eq!(w.len(), 1);
    assert_eq!(count(&ans), 1);
    assert_eq!(forwarded(&w[0]).child_text("body"), Some("from bob"));
    // A real JID: hidden from Bob (semi-anonymous room), fine for the owner.
    let (_, ans) = mam(&mut b, &r, &form(&[("with", "alice@localhost")])).await;
    assert_eq!(error_condition(&ans), "not-allowed");
    let (w, _) = mam(&mut a, &r, &form(&[("with", "bob@localhost")])).await;
    assert_eq!(w.len(), 1);
    // start/end.
    let (w, _) = mam(&mut b, &r, &form(&[("start", "2999-01-01T00:00:00Z")])).await;
    assert!(w.is_empty());
    let (w, _) = mam(&mut b, &r, &form(&[("end", "2000-01-01T00:00:00Z")])).await;
    assert!(w.is_empty());
    let (_, ans) = mam(&mut b, &r, &form(&[("start", "yesterday")])).await;
    assert_eq!(error_condition(&ans), "bad-request");

    // Carol is not in the (open) room: no archive for her, and her
    // groupchat message is refused and not archived.
    let (_, ans) = mam(&mut c, &r, "").await;
    assert_eq!(error_condition(&ans), "forbidden");
    c.send(&format!(
        "<message type='groupchat' to='{r}' id='c0'><body>not in</body></message>"
    ))
    .await;
    c.expect_message_error("c0", "not-acceptable").await;
    let (_, ans) = mam(&mut b, &r, "").await;
    assert_eq!(count(&ans), 6);

    // History on join, from the archive: the last two, with the ids MAM
    // gives; a catch-up after the last one has nothing more (no duplicate).
    let got = join(&mut c, &r, "carol", "<history maxstanzas='2'/>").await;
    let hist: Vec<&Element> = got
        .iter()
        .filter(|e| e.name == "message" && e.child("body").is_some())
        .collect();
    assert_eq!(hist.len(), 2, "{got:?}");
    assert_eq!(hist[0].child_text("body"), Some("msg 5"));
    assert_eq!(hist[1].child_text("body"), Some("from bob"));
    assert!(hist[0].child_ns("delay", "urn:xmpp:delay").is_some());
    assert_eq!(stanza_ids(hist[0], &r), [live[4].clone()]);
    assert_eq!(stanza_ids(hist[1], &r), [live[5].clone()]);
    let (w, ans) = mam(&mut c, &r, &rsm(&format!("<after>{}</after>", live[5]))).await;
    assert!(w.is_empty());
    assert_eq!(fin(&ans).attr("complete"), Some("true"));

    // Absurd history requests: clamped, never a crash.
    for (x, want) in [
        (
            "<history maxstanzas='-5' maxchars='99999999999999999999999' seconds='abc' since='garbage'/>",
            6,
        ),
        ("<history maxstanzas='18446744073709551615'/>", 6),
        ("<history maxstanzas='0'/>", 0),
        ("<history maxchars='1'/>", 0),
        ("<history seconds='0'/>", 0),
        ("<history since='2999-01-01T00:00:00Z'/>", 0),
        ("<history seconds='18446744073709551615'/>", 6),
    ] {
        c.send(&format!("<presence to='{r}/carol' type='unavailable'/>"))
            .await;
        c.recv_where("carol leaves", |e| {
            e.name == "presence"
                && e.attr("type") == Some("unavailable")
                && e.attr("from") == Some(format!("{r}/carol").as_str())
        })
        .await;
        let got = join(&mut c, &r, "carol", x).await;
        assert_eq!(history_bodies(&got).len(), want, "{x}: {got:?}");
    }
    // The server is still fine.
    b.send(&format!(
        "<message type='groupchat' to='{r}' id='b2'><body>still here</body></message>"
    ))
    .await;
    groupchat_from(&mut c, &format!("{r}/bob"), "still here").await;
}

#[tokio::test]
async fn members_only_archive_is_for_members_and_archiving_can_be_off() {
    let server = common::im::im_server();
    let r = room("club");
    let mut a = login(&server, ALICE, "pc").await;
    let mut b = login(&server, BOB, "pc").await;
    join(&mut a, &r, "alice", "").await;
    let ok = configure(&mut a, &r, &[("muc#roomconfig_membersonly", "1")]).await;
    assert_eq!(ok.attr("type"), Some("result"), "{ok}");
    a.send(&format!(
        "<message type='groupchat' to='{r}' id='a1'><body>members only</body></message>"
    ))
    .await;
    groupchat_from(&mut a, &format!("{r}/alice"), "members only").await;
    let (_, ans) = mam(&mut b, &r, "").await;
    assert_eq!(error_condition(&ans), "forbidden");
    let set = iq(
        &mut a,
        "set",
        &r,
        &format!(
            "<query xmlns='{MUC_ADMIN}'><item jid='bob@localhost' affiliation='member'/></query>"
        ),
    )
    .await;
    assert_eq!(set.attr("type"), Some("result"), "{set}");
    // A member reads it without being in the room.
    let (res, _) = mam(&mut b, &r, "").await;
    assert_eq!(res.len(), 1);
    assert_eq!(forwarded(&res[0]).child_text("body"), Some("members only"));

    // Archiving switched off by the owner: no stanza-id, no archive, no feature.
    let q = iq(&mut a, "get", &r, &format!("<query xmlns='{MUC_OWNER}'/>")).await;
    assert!(
        q.to_string().contains("muc#roomconfig_enablearchiving"),
        "{q}"
    );
    let ok = configure(&mut a, &r, &[("muc#roomconfig_enablearchiving", "0")]).await;
    assert_eq!(ok.attr("type"), Some("result"), "{ok}");
    a.send(&format!(
        "<message type='groupchat' to='{r}' id='a2'><body>off the record</body></message>"
    ))
    .await;
    let m = groupchat_from(&mut a, &format!("{r}/alice"), "off the record").await;
    assert!(stanza_ids(&m, &r).is_empty(), "{m}");
    assert_eq!(occupant_ids(&m).len(), 1, "{m}");
    let (_, ans) = mam(&mut a, &r, "").await;
    assert_eq!(error_condition(&ans), "service-unavailable");
    assert!(!features(&mut a, &r).await.iter().any(|f| f == NS_MAM));
}

#[tokio::test]
async fn archive_survives_a_restart_retention_and_destruction() {
    let mut server = common::im::im_server();
    let r = room("kept");
    let oid_before;
    let live;
    {
        let mut a = login(&server, ALICE, "pc").await;
        let got = join(&mut a, &r, "alice", "").await;
        oid_before = occupant_ids(&got[0]);
        assert_eq!(oid_before.len(), 1, "{}", got[0]);
        let ok = configure(&mut a, &r, &[("muc#roomconfig_persistentroom", "1")]).await;
        assert_eq!(ok.attr("type"), Some("result"), "{ok}");
        a.send(&format!(
            "<message type='groupchat' to='{r}' id='a1'><body>before the crash</body></message>"
        ))
        .await;
        let m = groupchat_from(&mut a, &format!("{r}/alice"), "before the crash").await;
        live = stanza_ids(&m, &r);
        // Appends are durable within a second.
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    server.kill_hard();
    server.restart();

    let mut a = login(&server, ALICE, "pc").await;
    // The owner reads it without joining; the id is the one given live.
    let (res, _) = mam(&mut a, &r, "").await;
    assert_eq!(res.len(), 1);
    assert_eq!(vec![result_id(&res[0])], live);
    // The occupant id is the same after the restart (secret stored with the room).
    let got = join(&mut a, &r, "alice", "").await;
    assert_eq!(history_bodies(&got), ["before the crash"]);
    assert_eq!(occupant_ids(&got[0]), oid_before);

    // Room archives are in `rookery ctl backup`.
    let backup = server.dir().join("rooms.backup").display().to_string();
    server.ctl_ok(&["backup", &backup]);
    // Retention: delete_old_mam_messages groupchat covers rooms ("chat" not).
    assert_eq!(
        server
            .ctl_ok(&["delete_old_mam_messages", "chat", "0"])
            .trim(),
        "0"
    );
    assert_eq!(
        server
            .ctl_ok(&["delete_old_mam_messages", "groupchat", "0"])
            .trim(),
        "1"
    );
    let (res, _) = mam(&mut a, &r, "").await;
    assert!(res.is_empty());
    drop(a);
    // A restore resets the sessions; the room's message is back.
    let out = server.ctl_ok(&["restore", &backup]);
    assert!(out.contains("Restored"), "{out}");
    let mut a = login(&server, ALICE, "pc").await;
    let (res, _) = mam(&mut a, &r, "").await;
    assert_eq!(res.iter().map(result_id).collect::<Vec<_>>(), live);
    join(&mut a, &r, "alice", "<history maxstanzas='0'/>").await;

    // Destroying the room deletes its archive: a new room of that name
    // starts empty.
    a.send(&format!(
        "<message type='groupchat' to='{r}' id='a2'><body>last words</body></message>"
    ))
    .await;
    groupchat_from(&mut a, &format!("{r}/alice"), "last words").await;
    let d = iq(
        &mut a,
        "set",
        &r,
        &format!("<query xmlns='{MUC_OWNER}'><destroy/></query>"),
    )
    .await;
    assert_eq!(d.attr("type"), Some("result"), "{d}");
    let got = join(&mut a, &r, "alice", "").await;
    assert!(history_bodies(&got).is_empty(), "{got:?}");
    let (res, _) = mam(&mut a, &r, "").await;
    assert!(res.is_empty());
}

#[tokio::test]
async fn archive_expires_after_covers_rooms() {
    let server = common::Server::start_with_yaml_edit(common::Config::default(), |y| {
        y.replace(
            "  mod_mam: {}\n",
            "  mod_mam:\n    archive_expires_after: 2\n",
        )
    });
    server.register(ALICE.0, "localhost", ALICE.1);
    server.register(BOB.0, "localhost", BOB.1);
    let r = room("fleeting");
    let mut a = login(&server, ALICE, "pc").await;
    let mut b = login(&server, BOB, "pc").await;
    join(&mut a, &r, "alice", "").await;
    let ok = configure(&mut a, &r, &[("muc#roomconfig_persistentroom", "1")]).await;
    assert_eq!(ok.attr("type"), Some("result"), "{ok}");
    a.send(&format!(
        "<message type='groupchat' to='{r}' id='a1'><body>old</body></message>"
    ))
    .await;
    groupchat_from(&mut a, &format!("{r}/alice"), "old").await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    a.send(&format!(
        "<message type='groupchat' to='{r}' id='a2'><body>new</body></message>"
    ))
    .await;
    groupchat_from(&mut a, &format!("{r}/alice"), "new").await;
    // Left out of queries and of the join history at once.
    let (res, ans) = mam(&mut a, &r, "").await;
    let bodies: Vec<&str> = res
        .iter()
        .filter_map(|m| forwarded(m).child_text("body"))
        .collect();
    assert_eq!(bodies, ["new"]);
    assert_eq!(count(&ans), 1);
    let got = join(&mut b, &r, "bob", "").await;
    assert_eq!(history_bodies(&got), ["new"]);
    // Deleted when the room's first occupant joins again.
    for (c, nick) in [(&mut a, "alice"), (&mut b, "bob")] {
        c.send(&format!("<presence to='{r}/{nick}' type='unavailable'/>"))
            .await;
        c.recv_where("left", |e| {
            e.name == "presence"
                && e.attr("type") == Some("unavailable")
                && e.attr("from") == Some(format!("{r}/{nick}").as_str())
        })
        .await;
    }
    join(&mut a, &r, "alice", "").await;
    let log = server.stderr_tail();
    assert!(
        log.contains(&format!("expired messages of {r} deleted")),
        "{log}"
    );
}
