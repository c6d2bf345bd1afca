//! XEP-0054 vcard-temp (`mod_vcard`) and XEP-0153 avatar hashes in presence
//! (`mod_vcard_xupdate`) against the real server.

use crate::common;

use base64::Engine as _;
use common::im::{
    bare, im_server, login, online, recv_presence, subscribe_mutual, sync, ALICE, BOB,
};
use common::{Client, Element};
use sha1::{Digest, Sha1};

const NS_VCARD: &str = "vcard-temp";
const NS_UPDATE: &str = "vcard-temp:x:update";

async fn vcard_get(c: &mut Client, to: Option<&str>) -> Element {
    let id = c.id();
    let to = to.map(|t| format!(" to='{t}'")).unwrap_or_default();
    c.request(
        &format!("<iq type='get' id='{id}'{to}><vCard xmlns='{NS_VCARD}'/></iq>"),
        &id,
    )
    .await
}

async fn vcard_set(c: &mut Client, to: Option<&str>, inner: &str) -> Element {
    let id = c.id();
    let to = to.map(|t| format!(" to='{t}'")).unwrap_or_default();
    c.request(
        &format!("<iq type='set' id='{id}'{to}><vCard xmlns='{NS_VCARD}'>{inner}</vCard></iq>"),
        &id,
    )
    .await
}

fn photo_bytes() -> Vec<u8> {
    (0..3000u32).map(|i| (i * 7 % 251) as u8).collect()
}

#[tokio::test]
async fn own_vcard_set_and_get_and_others_read_it() {
    let mut server = im_server();
    let mut a = login(&server, ALICE, "pc").await;
    let r = vcard_get(&mut a, None).await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    let v = r.child_ns("vCard", NS_VCARD).expect("an (empty) vCard");
    assert!(v.children.is_empty(), "{r}");

    let b64 = base64::engine::general_purpose::STANDARD.encode(photo_bytes());
    let r = vcard_set(
        &mut a,
        None,
        &format!("<FN>Alice Liddell</FN><NICKNAME>al</NICKNAME><PHOTO><TYPE>image/png</TYPE><BINVAL>{b64}</BINVAL></PHOTO>"),
    )
    .await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    a.close().await;
    server.kill_hard(); // SIGKILL: the writes must already be durable
    server.restart();

    // Bob (no subscription needed) reads Alice's vCard at her bare JID.
    let mut b = login(&server, BOB, "pc").await;
    let r = vcard_get(&mut b, Some(&bare(ALICE))).await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    assert_eq!(r.attr("from"), Some(bare(ALICE).as_str()));
    let v = r.child_ns("vCard", NS_VCARD).expect("vCard");
    assert_eq!(v.child_text("FN"), Some("Alice Liddell"));
    assert_eq!(
        v.child("PHOTO").and_then(|p| p.child_text("BINVAL")),
        Some(b64.as_str())
    );
    // But cannot change it.
    let r = vcard_set(&mut b, Some(&bare(ALICE)), "<FN>Mallory</FN>").await;
    assert_eq!(
        r.stanza_error(),
        Some(("auth".into(), "forbidden".into())),
        "{r}"
    );
    let r = vcard_get(&mut b, Some(&bare(ALICE))).await;
    assert_eq!(
        r.child_ns("vCard", NS_VCARD)
            .and_then(|v| v.child_text("FN")),
        Some("Alice Liddell")
    );
    // A vCard of an account that does not exist: service-unavailable (RFC 6121 §8.5.1).
    let r = vcard_get(&mut b, Some("nobody@localhost")).await;
    assert_eq!(
        r.stanza_error().map(|e| e.1),
        Some("service-unavailable".into()),
        "{r}"
    );
}

#[tokio::test]
async fn avatar_hash_is_added_to_presence_unless_the_client_sent_one() {
    let server = im_server();
    subscribe_mutual(&server, ALICE, BOB).await;
    let mut b = online(&server, BOB, "pc").await;
    let mut a = login(&server, ALICE, "pc").await;
    let b64 = base64::engine::general_purpose::STANDARD.encode(photo_bytes());
    let r = vcard_set(
        &mut a,
        None,
        &format!("<PHOTO><TYPE>image/png</TYPE><BINVAL>{b64}</BINVAL></PHOTO>"),
    )
    .await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    let want: String = Sha1::digest(photo_bytes())
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect();

    a.send("<presence><show>away</show></presence>").await;
    sync(&mut a).await;
    let p = recv_presence(&mut b, &a.full_jid(), None).await;
    let x = p
        .child_ns("x", NS_UPDATE)
        .unwrap_or_else(|| panic!("no x:update in {p}"));
    assert_eq!(x.child_text("photo"), Some(want.as_str()), "{p}");
    assert_eq!(p.child_text("show"), Some("away"));

    // The client's own x:update is left alone (and not doubled).
    a.send(&format!(
        "<presence><x xmlns='{NS_UPDATE}'><photo>0123</photo></x></presence>"
    ))
    .await;
    sync(&mut a).await;
    let p = recv_presence(&mut b, &a.full_jid(), None).await;
    let xs: Vec<_> = p.children.iter().filter(|c| c.is("x", NS_UPDATE)).collect();
    assert_eq!(xs.len(), 1, "{p}");
    assert_eq!(xs[0].child_text("photo"), Some("0123"));

    // A vCard without photo: an empty <photo/> (the XEP's "no avatar").
    let r = vcard_set(&mut a, None, "<FN>A</FN>").await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    a.send("<presence/>").await;
    sync(&mut a).await;
    let p = recv_presence(&mut b, &a.full_jid(), None).await;
    let x = p
        .child_ns("x", NS_UPDATE)
        .unwrap_or_else(|| panic!("no x:update in {p}"));
    let photo = x.child("photo").expect("photo");
    assert!(photo.text.is_empty(), "{p}");
}
