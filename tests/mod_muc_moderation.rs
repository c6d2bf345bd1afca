//! Occupants in a room against the real server: XEP-0421 occupant ids
//! (stable per account, the same in presence and messages, client-sent
//! ones removed — every one of them — from presence and messages),
//! XEP-0410 self-ping (joined: result; not joined: `not-acceptable`),
//! XEP-0424 retraction by the sender (tombstone in the room archive,
//! retraction broadcast; someone else's message `forbidden`) and XEP-0425
//! moderation by moderators (0.3 `urn:xmpp:message-moderate:1` and 0.2
//! `:0` forms; a participant `forbidden`, an unknown id `item-not-found`).

use crate::common;
use crate::mod_muc_archive::{
    error_condition, forwarded, groupchat_from, iq, join, mam, occupant_ids, room, stanza_ids,
    NS_OID,
};

use common::im::{login, ALICE, BOB, CAROL};
use common::{Client, Element};

const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const NS_RETRACT: &str = "urn:xmpp:message-retract:1";
const NS_MODERATE: &str = "urn:xmpp:message-moderate:1";
const NS_MODERATE_0: &str = "urn:xmpp:message-moderate:0";
const NS_FASTEN: &str = "urn:xmpp:fasten:0";

/// Sends a groupchat message and returns the room's stanza-id of it (as
/// the sender gets it back).
async fn say(c: &mut Client, r: &str, nick: &str, body: &str) -> String {
    let id = c.id();
    c.send(&format!(
        "<message type='groupchat' to='{r}' id='{id}'><body>{body}</body></message>"
    ))
    .await;
    let m = groupchat_from(c, &format!("{r}/{nick}"), body).await;
    stanza_ids(&m, r).pop().expect("stanza-id")
}

fn moderate_1(sid: &str, reason: &str) -> String {
    format!(
        "<moderate xmlns='{NS_MODERATE}' id='{sid}'><retract xmlns='{NS_RETRACT}'/><reason>{reason}</reason></moderate>"
    )
}

/// The archived message with this stanza-id, as MAM gives it.
async fn archived(c: &mut Client, r: &str, sid: &str) -> Element {
    let (res, _) = mam(c, r, "").await;
    res.iter()
        .find(|m| crate::mod_muc_archive::result_id(m) == sid)
        .map(|m| forwarded(m).clone())
        .unwrap_or_else(|| panic!("{sid} not in the archive"))
}

#[tokio::test]
async fn occupant_ids_and_self_ping() {
    let server = common::im::im_server();
    let r = room("ids");
    let mut a = login(&server, ALICE, "pc").await;
    let mut b = login(&server, BOB, "pc").await;
    let mut b2 = login(&server, BOB, "phone").await;
    let mut c = login(&server, CAROL, "pc").await;
    join(&mut a, &r, "alice", "").await;
    // Bob joins with forged occupant ids in his presence.
    b.send(&format!(
        "<presence to='{r}/bob'><x xmlns='http://jabber.org/protocol/muc'/><occupant-id xmlns='{NS_OID}' id='evil1'/><occupant-id xmlns='{NS_OID}' id='evil2'/></presence>"
    ))
    .await;
    let p = a
        .recv_where("bob's presence", |e| {
            e.name == "presence" && e.attr("from") == Some(format!("{r}/bob").as_str())
        })
        .await;
    let bob_id = occupant_ids(&p);
    assert_eq!(bob_id.len(), 1, "{p}");
    assert!(!bob_id[0].starts_with("evil"), "{p}");
    // His other client under the same nick has the same id; Alice another.
    let got = join(&mut b2, &r, "bob", "").await;
    let own = got
        .iter()
        .find(|e| e.name == "presence" && e.attr("from") == Some(format!("{r}/bob").as_str()))
        .expect("own presence");
    assert_eq!(occupant_ids(own), bob_id);
    let alice_p = got
        .iter()
        .find(|e| e.name == "presence" && e.attr("from") == Some(format!("{r}/alice").as_str()))
        .expect("alice's presence");
    let alice_id = occupant_ids(alice_p);
    assert_eq!(alice_id.len(), 1);
    assert_ne!(alice_id, bob_id);
    // Messages carry the same id; forged ones in a message go, all of them.
    b.send(&format!(
        "<message type='groupchat' to='{r}' id='b1'><occupant-id xmlns='{NS_OID}' id='{}'/><body>spoof</body><occupant-id xmlns='{NS_OID}' id='x2'/></message>",
        alice_id[0]
    ))
    .await;
    let m = groupchat_from(&mut a, &format!("{r}/bob"), "spoof").await;
    assert_eq!(occupant_ids(&m), bob_id, "{m}");
    // The room says it does this.
    let info = iq(&mut a, "get", &r, &format!("<query xmlns='{DISCO_INFO}'/>")).await;
    let s = info.to_string();
    for f in [
        NS_OID,
        "http://jabber.org/protocol/muc#self-ping-optimization",
        NS_MODERATE,
        NS_RETRACT,
    ] {
        assert!(s.contains(f), "{f} missing: {info}");
    }

    // XEP-0410 self-ping.
    let pong = iq(
        &mut b,
        "get",
        &format!("{r}/bob"),
        "<ping xmlns='urn:xmpp:ping'/>",
    )
    .await;
    assert_eq!(pong.attr("type"), Some("result"), "{pong}");
    let e = iq(
        &mut c,
        "get",
        &format!("{r}/carol"),
        "<ping xmlns='urn:xmpp:ping'/>",
    )
    .await;
    assert_eq!(error_condition(&e), "not-acceptable");
    let e = iq(
        &mut c,
        "get",
        &format!("{r}/bob"),
        "<ping xmlns='urn:xmpp:ping'/>",
    )
    .await;
    assert_eq!(error_condition(&e), "not-acceptable");
    let e = iq(
        &mut c,
        "get",
        &format!("{}/carol", room("nosuchroom")),
        "<ping xmlns='urn:xmpp:ping'/>",
    )
    .await;
    assert_eq!(error_condition(&e), "not-acceptable");
}

#[tokio::test]
async fn retraction_by_the_sender_and_moderation() {
    let server = common::im::im_server();
    let r = room("modded");
    let mut a = login(&server, ALICE, "pc").await;
    let mut b = login(&server, BOB, "pc").await;
    let mut c = login(&server, CAROL, "pc").await;
    join(&mut a, &r, "alice", "").await;
    join(&mut b, &r, "bob", "").await;
    join(&mut c, &r, "carol", "").await;

    // Bob retracts his own message: everyone gets the retraction, the
    // archive keeps a tombstone in its place.
    let sid = say(&mut b, &r, "bob", "oops").await;
    groupchat_from(&mut a, &format!("{r}/bob"), "oops").await;
    b.send(&format!(
        "<message type='groupchat' to='{r}' id='rt1'><retract xmlns='{NS_RETRACT}' id='{sid}'/><body>retracted</body></message>"
    ))
    .await;
    let rt = groupchat_from(&mut a, &format!("{r}/bob"), "retracted").await;
    assert_eq!(
        rt.child_ns("retract", NS_RETRACT)
            .and_then(|x| x.attr("id")),
        Some(sid.as_str())
    );
    let t = archived(&mut a, &r, &sid).await;
    assert!(t.child("body").is_none(), "{t}");
    assert!(t.child_ns("retracted", NS_RETRACT).is_some(), "{t}");
    assert_eq!(t.attr("from"), Some(format!("{r}/bob").as_str()));

    // Carol may not retract Alice's message.
    let sid_a = say(&mut a, &r, "alice", "mine").await;
    c.send(&format!(
        "<message type='groupchat' to='{r}' id='rt2'><retract xmlns='{NS_RETRACT}' id='{sid_a}'/><body>gone?</body></message>"
    ))
    .await;
    c.expect_message_error("rt2", "forbidden").await;
    let kept = archived(&mut a, &r, &sid_a).await;
    assert_eq!(kept.child_text("body"), Some("mine"));

    // Moderation: a participant is refused, a moderator is not.
    let sid_c = say(&mut c, &r, "carol", "spam spam").await;
    let e = iq(&mut b, "set", &r, &moderate_1(&sid_c, "no")).await;
    assert_eq!(error_condition(&e), "forbidden");
    let e = iq(&mut a, "set", &r, &moderate_1("00000000000000000001", "?")).await;
    assert_eq!(error_condition(&e), "item-not-found");
    let ok = iq(&mut a, "set", &r, &moderate_1(&sid_c, "Spam")).await;
    assert_eq!(ok.attr("type"), Some("result"), "{ok}");
    let notice = b
        .recv_where("the moderation notice", |e| {
            e.name == "message"
                && e.child_ns("retract", NS_RETRACT).is_some()
                && e.attr("from") == Some(r.as_str())
        })
        .await;
    let retract = notice.child_ns("retract", NS_RETRACT).unwrap();
    assert_eq!(retract.attr("id"), Some(sid_c.as_str()));
    let by = retract
        .child_ns("moderated", NS_MODERATE)
        .expect("moderated");
    assert_eq!(by.attr("by"), Some(format!("{r}/alice").as_str()));
    assert_eq!(retract.child_text("reason"), Some("Spam"));
    // The 0.2 form is in the same notice.
    assert_eq!(
        notice
            .child_ns("apply-to", NS_FASTEN)
            .and_then(|x| x.attr("id")),
        Some(sid_c.as_str())
    );
    let t = archived(&mut b, &r, &sid_c).await;
    assert!(t.child("body").is_none(), "{t}");
    let retracted = t.child_ns("retracted", NS_RETRACT).expect("tombstone");
    assert!(
        retracted.child_ns("moderated", NS_MODERATE).is_some(),
        "{t}"
    );

    // The 0.2 request form is understood too.
    let sid_c2 = say(&mut c, &r, "carol", "more spam").await;
    let ok = iq(
        &mut a,
        "set",
        &r,
        &format!(
            "<apply-to xmlns='{NS_FASTEN}' id='{sid_c2}'><moderate xmlns='{NS_MODERATE_0}'><retract xmlns='urn:xmpp:message-retract:0'/><reason>again</reason></moderate></apply-to>"
        ),
    )
    .await;
    assert_eq!(ok.attr("type"), Some("result"), "{ok}");
    let t = archived(&mut b, &r, &sid_c2).await;
    assert!(t.child("body").is_none(), "{t}");

    // A joiner's history shows the tombstones, not the content.
    c.send(&format!("<presence to='{r}/carol' type='unavailable'/>"))
        .await;
    c.recv_where("carol leaves", |e| {
        e.name == "presence" && e.attr("type") == Some("unavailable")
    })
    .await;
    let got = join(&mut c, &r, "carol", "").await;
    let text = got
        .iter()
        .filter(|e| e.child_ns("delay", "urn:xmpp:delay").is_some())
        .map(|e| e.to_string())
        .collect::<String>();
    assert!(!text.contains("spam"), "{text}");
    assert!(!text.contains("oops"), "{text}");
    assert!(text.contains("mine"), "{text}");
}
