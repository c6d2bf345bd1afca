//! Room vCards and avatars (XEP-0054 on a room JID, the hash as XEP-0486
//! MUC Avatars advertises it) against the real server: anyone gets a
//! room's vCard, also before joining; only owners set it (`forbidden`
//! for an occupant who is not one); an oversize vCard is
//! `not-acceptable`, a photo that is not base64 `bad-request`; a new
//! avatar reaches occupants as a presence from the room's bare JID with
//! `vcard-temp:x:update` and a status 104 notice, joiners get that
//! presence, and the room's disco#info carries `vcard-temp` and
//! `muc#roominfo_avatarhash`; the vCard survives a restart of a
//! persistent room, and an empty `<vCard/>` removes it.

use crate::common;
use crate::mod_muc_archive::{configure, error_condition, iq, join, room, SERVICE};

use common::im::{login, ALICE, BOB, CAROL};
use common::{Client, Element};

const VCARD: &str = "vcard-temp";
const UPDATE: &str = "vcard-temp:x:update";
const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
/// The hex SHA-1 of the bytes 00 01 02 (base64 `AAEC`).
const HASH: &str = "0c7a623fd2bbc05b06423be359e4021d36e721ad";

fn vcard(binval: &str) -> String {
    format!(
        "<vCard xmlns='{VCARD}'><FN>Picture club</FN><PHOTO><TYPE>image/png</TYPE>\
         <BINVAL>{binval}</BINVAL></PHOTO></vCard>"
    )
}

/// The photo hash of a room's presence from its bare JID, if it is one.
fn photo_of(e: &Element, r: &str) -> Option<String> {
    if e.name != "presence" || e.attr("from") != Some(r) {
        return None;
    }
    e.child_ns("x", UPDATE)
        .and_then(|x| x.child("photo"))
        .map(|p| p.text.clone())
}

/// The values of `muc#roominfo_avatarhash` in the room's disco#info.
async fn avatar_hashes(c: &mut Client, r: &str) -> Vec<String> {
    let info = iq(c, "get", r, &format!("<query xmlns='{DISCO_INFO}'/>")).await;
    assert_eq!(info.attr("type"), Some("result"), "{info}");
    let q = info.child("query").expect("query");
    assert!(
        q.children_named("feature")
            .any(|f| f.attr("var") == Some(VCARD)),
        "{info}"
    );
    let field = q
        .child("x")
        .and_then(|x| {
            x.children_named("field")
                .find(|f| f.attr("var") == Some("muc#roominfo_avatarhash"))
        })
        .unwrap_or_else(|| panic!("no avatar hash field: {info}"));
    field
        .children_named("value")
        .map(|v| v.text.clone())
        .collect()
}

#[tokio::test]
async fn room_vcards_and_avatars() {
    let mut server = common::im::im_server();
    let r = room("pics");
    let mut b = login(&server, BOB, "pc").await;
    join(&mut b, &r, "bob", "").await;
    let ok = configure(&mut b, &r, &[("muc#roomconfig_persistentroom", "1")]).await;
    assert_eq!(ok.attr("type"), Some("result"), "{ok}");
    let mut a = login(&server, ALICE, "pc").await;

    // The service says it has room vCards; a room without one answers an
    // empty vCard to anyone, joined or not.
    let info = iq(
        &mut a,
        "get",
        SERVICE,
        &format!("<query xmlns='{DISCO_INFO}'/>"),
    )
    .await;
    assert!(info.to_string().contains(VCARD), "{info}");
    let v = iq(&mut a, "get", &r, &format!("<vCard xmlns='{VCARD}'/>")).await;
    assert_eq!(v.attr("type"), Some("result"), "{v}");
    assert!(
        v.child("vCard").is_some_and(|v| v.children.is_empty()),
        "{v}"
    );
    assert!(avatar_hashes(&mut a, &r).await.is_empty());

    // Only owners set it.
    join(&mut a, &r, "alice", "").await;
    let e = iq(&mut a, "set", &r, &vcard("AAEC")).await;
    assert_eq!(error_condition(&e), "forbidden");
    // Bad input: oversize, a photo that is not base64.
    let big = "A".repeat(40_000);
    let e = iq(&mut b, "set", &r, &vcard(&big)).await;
    assert_eq!(error_condition(&e), "not-acceptable");
    let e = iq(&mut b, "set", &r, &vcard("!!not base64!!")).await;
    assert_eq!(error_condition(&e), "bad-request");
    assert!(avatar_hashes(&mut a, &r).await.is_empty());

    // The owner sets it: occupants see the new avatar and a 104 notice.
    let ok = iq(&mut b, "set", &r, &vcard("AAEC")).await;
    assert_eq!(ok.attr("type"), Some("result"), "{ok}");
    let p = a
        .recv_where("the room's avatar presence", |e| photo_of(e, &r).is_some())
        .await;
    assert_eq!(photo_of(&p, &r).as_deref(), Some(HASH));
    a.recv_where("status 104", |e| {
        e.name == "message"
            && e.attr("from") == Some(r.as_str())
            && common::muc::codes(e).iter().any(|c| c == "104")
    })
    .await;
    let v = iq(&mut a, "get", &r, &format!("<vCard xmlns='{VCARD}'/>")).await;
    let text = v.to_string();
    assert!(
        text.contains("Picture club") && text.contains("AAEC"),
        "{v}"
    );
    assert_eq!(avatar_hashes(&mut a, &r).await, vec![HASH.to_string()]);

    // A joiner gets the room's avatar presence in the join sequence.
    let mut c = login(&server, CAROL, "pc").await;
    let seq = join(&mut c, &r, "carol", "").await;
    assert!(
        seq.iter().any(|e| photo_of(e, &r).as_deref() == Some(HASH)),
        "no avatar presence in the join: {seq:?}"
    );

    // A persistent room keeps its vCard across a restart.
    drop((a, b, c));
    server.stop();
    server.restart();
    let mut a = login(&server, ALICE, "pc").await;
    let v = iq(&mut a, "get", &r, &format!("<vCard xmlns='{VCARD}'/>")).await;
    assert!(v.to_string().contains("AAEC"), "{v}");
    assert_eq!(avatar_hashes(&mut a, &r).await, vec![HASH.to_string()]);

    // An empty vCard removes it.
    let mut b = login(&server, BOB, "pc").await;
    let ok = iq(&mut b, "set", &r, &format!("<vCard xmlns='{VCARD}'/>")).await;
    assert_eq!(ok.attr("type"), Some("result"), "{ok}");
    let v = iq(&mut a, "get", &r, &format!("<vCard xmlns='{VCARD}'/>")).await;
    assert!(!v.to_string().contains("AAEC"), "{v}");
    assert!(avatar_hashes(&mut a, &r).await.is_empty());
}
