//! XEP-0398 (`mod_avatar`): avatars published to PEP (XEP-0084) show up in
//! the vCard (XEP-0054/0153) and the other way round, against the real
//! binary.

use crate::common;

use base64::Engine as _;
use common::client::Client;
use common::server::DEFAULT_MODULES;
use common::{Config, Element, Server};
use sha1::{Digest, Sha1};

const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
const DATA: &str = "urn:xmpp:avatar:data";
const META: &str = "urn:xmpp:avatar:metadata";

fn server() -> Server {
    let server = Server::start();
    server.register("alice", "localhost", "secret");
    server.register("bob", "localhost", "hunter2");
    server
}

fn sha1_hex(bytes: &[u8]) -> String {
    Sha1::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn ok(c: &mut Client, xml: &str) -> Element {
    let id = c.id();
    let xml = xml.replacen("<iq ", &format!("<iq id='{id}' "), 1);
    let r = c.request(&xml, &id).await;
    assert_eq!(r.attr("type"), Some("result"), "{xml} → {r}");
    r
}

async fn publish(c: &mut Client, node: &str, id: &str, payload: &str) {
    ok(
        c,
        &format!("<iq type='set'><pubsub xmlns='{PUBSUB}'><publish node='{node}'><item id='{id}'>{payload}</item></publish></pubsub></iq>"),
    )
    .await;
}

async fn vcard_photo(c: &mut Client, of: &str) -> Option<(String, String)> {
    let r = ok(
        c,
        &format!("<iq type='get' to='{of}'><vCard xmlns='vcard-temp'/></iq>"),
    )
    .await;
    let photo = r.child("vCard")?.child("PHOTO")?;
    Some((
        photo.child_text("TYPE").unwrap_or("").to_string(),
        photo.child_text("BINVAL").unwrap_or("").to_string(),
    ))
}

#[tokio::test]
async fn pep_avatar_becomes_the_vcard_photo_and_back() {
    let server = server();
    let mut alice = Client::login(&server, "alice", "secret", Some("pc")).await;
    let mut bob = Client::login(&server, "bob", "hunter2", Some("pc")).await;
    bob.presence().await;

    // The account advertises the conversion.
    let r = ok(&mut alice, "<iq type='get' to='alice@localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>").await;
    assert!(
        r.to_string().contains("urn:xmpp:pep-vcard-conversion:0"),
        "{r}"
    );

    // PEP → vCard: data first, then metadata, as XEP-0084 clients do.
    let png = b"\x89PNG fake image bytes for the test";
    let b64 = base64::engine::general_purpose::STANDARD.encode(png);
    let hash = sha1_hex(png);
    ok(
        &mut alice,
        "<iq type='set'><vCard xmlns='vcard-temp'><FN>Alice</FN></vCard></iq>",
    )
    .await;
    publish(
        &mut alice,
        DATA,
        &hash,
        &format!("<data xmlns='{DATA}'>{b64}</data>"),
    )
    .await;
    publish(
        &mut alice,
        META,
        &hash,
        &format!(
            "<metadata xmlns='{META}'><info id='{hash}' bytes='{}' type='image/png'/></metadata>",
            png.len()
        ),
    )
    .await;
    let (kind, binval) = vcard_photo(&mut bob, "alice@localhost")
        .await
        .expect("no PHOTO in alice's vCard");
    assert_eq!(kind, "image/png");
    assert_eq!(binval, b64);
    // The rest of the vCard is kept.
    let r = ok(
        &mut bob,
        "<iq type='get' to='alice@localhost'><vCard xmlns='vcard-temp'/></iq>",
    )
    .await;
    assert_eq!(
        r.child("vCard").and_then(|v| v.child_text("FN")),
        Some("Alice"),
        "{r}"
    );

    // XEP-0153: alice's presence now carries the photo's hash.
    alice.send("<presence to='bob@localhost'/>").await;
    let p = bob
        .recv_where("alice's presence", |e| {
            e.name == "presence" && e.attr("from").is_some_and(|f| f.starts_with("alice@"))
        })
        .await;
    assert_eq!(
        p.child("x").and_then(|x| x.child_text("photo")),
        Some(hash.as_str()),
        "{p}"
    );

    // Disabling the avatar (empty metadata) removes the PHOTO.
    publish(
        &mut alice,
        META,
        "off",
        &format!("<metadata xmlns='{META}'/>"),
    )
    .await;
    assert_eq!(vcard_photo(&mut bob, "alice@localhost").await, None);

    // vCard → PEP: bob sets a vCard photo; his PEP avatar nodes carry it.
    let jpeg = b"\xff\xd8\xff another fake image";
    let b64 = base64::engine::general_purpose::STANDARD.encode(jpeg);
    let hash = sha1_hex(jpeg);
    ok(
        &mut bob,
        &format!("<iq type='set'><vCard xmlns='vcard-temp'><PHOTO><TYPE>image/jpeg</TYPE><BINVAL>{b64}</BINVAL></PHOTO></vCard></iq>"),
    )
    .await;
    let r = ok(&mut bob, &format!("<iq type='get' to='bob@localhost'><pubsub xmlns='{PUBSUB}'><items node='{META}'/></pubsub></iq>")).await;
    let info = r
        .child("pubsub")
        .and_then(|p| p.child("items"))
        .and_then(|i| i.child("item"))
        .and_then(|i| i.child("metadata"))
        .and_then(|m| m.child("info"))
        .unwrap_or_else(|| panic!("no metadata info: {r}"));
    assert_eq!(info.attr("id"), Some(hash.as_str()));
    assert_eq!(info.attr("type"), Some("image/jpeg"));
    assert_eq!(info.attr("bytes"), Some(jpeg.len().to_string().as_str()));
    let r = ok(&mut bob, &format!("<iq type='get' to='bob@localhost'><pubsub xmlns='{PUBSUB}'><items node='{DATA}'><item id='{hash}'/></items></pubsub></iq>")).await;
    let data = r
        .child("pubsub")
        .and_then(|p| p.child("items"))
        .and_then(|i| i.child("item"))
        .and_then(|i| i.child_text("data"))
        .unwrap_or("")
        .to_string();
    assert_eq!(data, b64, "{r}");
}

#[tokio::test]
async fn without_mod_avatar_nothing_is_converted() {
    let server = Server::start_with(Config {
        modules: DEFAULT_MODULES.replace("  mod_avatar: {}\n", ""),
        ..Config::default()
    });
    server.register("alice", "localhost", "secret");
    let mut alice = Client::login(&server, "alice", "secret", Some("pc")).await;
    let png = b"png";
    let hash = sha1_hex(png);
    let b64 = base64::engine::general_purpose::STANDARD.encode(png);
    publish(
        &mut alice,
        DATA,
        &hash,
        &format!("<data xmlns='{DATA}'>{b64}</data>"),
    )
    .await;
    publish(
        &mut alice,
        META,
        &hash,
        &format!(
            "<metadata xmlns='{META}'><info id='{hash}' bytes='3' type='image/png'/></metadata>"
        ),
    )
    .await;
    assert_eq!(vcard_photo(&mut alice, "alice@localhost").await, None);
}
