//! XEP-0163 PEP (`mod_pep`) against the real server, with data stored the
//! way real clients store it: XEP-0384 OMEMO device lists and bundles,
//! XEP-0084 avatars, XEP-0402 bookmarks, XEP-0172 nicknames. Clients
//! announce XEP-0115 caps with `+notify` features and answer the server's
//! disco#info query for them, as real clients do.

use crate::common;

use base64::Engine as _;
use common::im::{bare, im_server, login, subscribe_mutual, sync, ALICE, BOB, CAROL};
use common::{Client, Element};
use sha1::{Digest, Sha1};

const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
const EVENT: &str = "http://jabber.org/protocol/pubsub#event";
const OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
const ERRORS: &str = "http://jabber.org/protocol/pubsub#errors";
const DEVICELIST: &str = "eu.siacs.conversations.axolotl.devicelist";
const BOOKMARKS: &str = "urn:xmpp:bookmarks:1";
const AVATAR_DATA: &str = "urn:xmpp:avatar:data";
const AVATAR_META: &str = "urn:xmpp:avatar:metadata";
const NICK: &str = "http://jabber.org/protocol/nick";
const BIG: &str = "urn:example:big";

/// The XEP-0115 ver of a client with one identity and these features.
fn ver(features: &[String]) -> String {
    let mut f = features.to_vec();
    f.sort();
    let mut s = "client/pc//Test<".to_string();
    for x in f {
        s.push_str(&x);
        s.push('<');
    }
    base64::engine::general_purpose::STANDARD.encode(Sha1::digest(s.as_bytes()))
}

fn features(notify: &[&str]) -> Vec<String> {
    let mut f = vec![
        "http://jabber.org/protocol/caps".to_string(),
        "http://jabber.org/protocol/disco#info".to_string(),
    ];
    f.extend(notify.iter().map(|n| format!("{n}+notify")));
    f
}

/// Sends available presence with caps for `notify` nodes and answers the
/// server's disco#info query if it asks (it asks once per hash); returns
/// what else arrived meanwhile.
async fn online_with_caps(c: &mut Client, notify: &[&str], expect_query: bool) -> Vec<Element> {
    let feats = features(notify);
    let v = ver(&feats);
    c.send(&format!(
        "<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='https://rookery.test' ver='{v}'/></presence>"
    ))
    .await;
    if expect_query {
        let q = c
            .recv_where("caps disco#info query", |e| {
                e.name == "iq"
                    && e.attr("type") == Some("get")
                    && e.child_ns("query", "http://jabber.org/protocol/disco#info")
                        .is_some()
            })
            .await;
        let node = q
            .child("query")
            .and_then(|q| q.attr("node"))
            .unwrap_or("")
            .to_string();
        assert_eq!(node, format!("https://rookery.test#{v}"), "{q}");
        let fx: String = feats
            .iter()
            .map(|f| format!("<feature var='{f}'/>"))
            .collect();
        c.send(&format!(
            "<iq type='result' to='{}' id='{}'><query xmlns='http://jabber.org/protocol/disco#info' node='{node}'><identity category='client' type='pc' name='Test'/>{fx}</query></iq>",
            q.attr("from").unwrap_or(""),
            q.attr("id").unwrap_or("")
        ))
        .await;
    }
    sync(c).await
}

fn publish_options(fields: &[(&str, &str)]) -> String {
    if fields.is_empty() {
        return String::new();
    }
    let f: String = fields
        .iter()
        .map(|(k, v)| format!("<field var='{k}'><value>{v}</value></field>"))
        .collect();
    format!("<publish-options><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>{f}</x></publish-options>")
}

async fn publish(
    c: &mut Client,
    node: &str,
    id: Option<&str>,
    payload: &str,
    opts: &[(&str, &str)],
) -> Element {
    let rid = c.id();
    let id = id.map(|i| format!(" id='{i}'")).unwrap_or_default();
    c.request(
        &format!(
            "<iq type='set' id='{rid}'><pubsub xmlns='{PUBSUB}'><publish node='{node}'><item{id}>{payload}</item></publish>{}</pubsub></iq>",
            publish_options(opts)
        ),
        &rid,
    )
    .await
}

async fn items(c: &mut Client, owner: &str, node: &str, extra: &str) -> Element {
    let id = c.id();
    c.request(
        &format!("<iq type='get' to='{owner}' id='{id}'><pubsub xmlns='{PUBSUB}'><items node='{node}'{extra}/></pubsub></iq>"),
        &id,
    )
    .await
}

fn item_ids(r: &Element) -> Vec<String> {
    r.child_ns("pubsub", PUBSUB)
        .and_then(|p| p.child("items"))
        .map(|i| {
            i.children_named("item")
                .filter_map(|x| x.attr("id").map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn is_event(e: &Element, from: &str, node: &str) -> bool {
    e.name == "message"
        && e.attr("from") == Some(from)
        && e.child_ns("event", EVENT)
            .and_then(|ev| ev.child("items"))
            .is_some_and(|i| i.attr("node") == Some(node))
}

async fn recv_event(c: &mut Client, from: &str, node: &str) -> Element {
    let (f, n) = (from.to_string(), node.to_string());
    c.recv_where(&format!("event {node} from {from}"), move |e| {
        is_event(e, &f, &n)
    })
    .await
}

fn event_items(e: &Element) -> &Element {
    e.child_ns("event", EVENT)
        .and_then(|ev| ev.child("items"))
        .expect("items")
}

fn no_event(got: &[Element], node: &str) -> bool {
    !got.iter().any(|e| {
        e.child_ns("event", EVENT)
            .and_then(|ev| ev.child("items"))
            .is_some_and(|i| i.attr("node") == Some(node))
    })
}

#[tokio::test]
async fn omemo_devicelist_and_bundle() {
    let server = im_server();
    subscribe_mutual(&server, ALICE, BOB).await;
    let mut a = login(&server, ALICE, "phone").await;
    online_with_caps(&mut a, &[DEVICELIST], true).await;
    let mut b = login(&server, BOB, "pc").await;
    // Same caps as Alice's: already known, no query.
    online_with_caps(&mut b, &[DEVICELIST], false).await;
    let mut c = login(&server, CAROL, "pc").await;
    online_with_caps(&mut c, &[DEVICELIST], false).await;

    let list = "<list xmlns='eu.siacs.conversations.axolotl'><device id='12345'/></list>";
    let r = publish(
        &mut a,
        DEVICELIST,
        Some("current"),
        list,
        &[("pubsub#access_model", "open")],
    )
    .await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    let published = r
        .child_ns("pubsub", PUBSUB)
        .and_then(|p| p.child("publish"))
        .and_then(|p| p.child("item"))
        .and_then(|i| i.attr("id"));
    assert_eq!(published, Some("current"), "{r}");
    // Alice's own resource and her contact Bob are notified; Carol (no subscription) is not.
    let e = recv_event(&mut a, &bare(ALICE), DEVICELIST).await;
    assert_eq!(e.attr("type"), Some("headline"));
    let e = recv_event(&mut b, &bare(ALICE), DEVICELIST).await;
    let item = event_items(&e).child("item").expect("item");
    assert_eq!(item.attr("id"), Some("current"));
    assert_eq!(
        item.child("list")
            .and_then(|l| l.child("device"))
            .and_then(|d| d.attr("id")),
        Some("12345")
    );
    let got = sync(&mut c).await;
    assert!(no_event(&got, DEVICELIST), "Carol was notified: {got:?}");

    // Bundle with open access: Carol (not a contact) fetches it, as OMEMO needs.
    let bundle_node = "eu.siacs.conversations.axolotl.bundles:12345";
    let bundle = "<bundle xmlns='eu.siacs.conversations.axolotl'><signedPreKeyPublic signedPreKeyId='1'>BQ==</signedPreKeyPublic><identityKey>BQ==</identityKey><prekeys><preKeyPublic preKeyId='1'>BQ==</preKeyPublic></prekeys></bundle>";
    let r = publish(
        &mut a,
        bundle_node,
        Some("current"),
        bundle,
        &[("pubsub#access_model", "open")],
    )
    .await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    let r = items(&mut c, &bare(ALICE), bundle_node, "").await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    assert_eq!(r.attr("from"), Some(bare(ALICE).as_str()));
    let b_el = r
        .child_ns("pubsub", PUBSUB)
        .and_then(|p| p.child("items"))
        .and_then(|i| i.child("item"))
        .and_then(|i| i.child("bundle"));
    assert!(b_el.and_then(|b| b.child("identityKey")).is_some(), "{r}");
    let r = items(&mut c, &bare(ALICE), DEVICELIST, "").await;
    assert_eq!(item_ids(&r), vec!["current"], "{r}");
    // Only the owner publishes.
    let id = c.id();
    let r = c
        .request(
            &format!("<iq type='set' to='{}' id='{id}'><pubsub xmlns='{PUBSUB}'><publish node='{DEVICELIST}'><item id='current'>{list}</item></publish></pubsub></iq>", bare(ALICE)),
            &id,
        )
        .await;
    assert_eq!(
        r.stanza_error().map(|e| e.1),
        Some("forbidden".into()),
        "{r}"
    );
    // A missing node: item-not-found.
    let r = items(&mut c, &bare(ALICE), "no-such-node", "").await;
    assert_eq!(
        r.stanza_error().map(|e| e.1),
        Some("item-not-found".into()),
        "{r}"
    );
}

#[tokio::test]
async fn avatars_metadata_notifies_and_data_is_presence_only() {
    let server = im_server();
    subscribe_mutual(&server, ALICE, BOB).await;
    let mut a = login(&server, ALICE, "pc").await;
    online_with_caps(&mut a, &[AVATAR_META], true).await;
    let mut b = login(&server, BOB, "pc").await;
    online_with_caps(&mut b, &[AVATAR_META], false).await;
    let mut c = login(&server, CAROL, "pc").await;

    let png: Vec<u8> = (0..2000u32).map(|i| (i % 256) as u8).collect();
    let hash: String = Sha1::digest(&png)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect();
    let data = format!(
        "<data xmlns='{AVATAR_DATA}'>{}</data>",
        base64::engine::general_purpose::STANDARD.encode(&png)
    );
    let r = publish(&mut a, AVATAR_DATA, Some(&hash), &data, &[]).await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    let meta = format!("<metadata xmlns='{AVATAR_META}'><info bytes='{}' id='{hash}' height='32' width='32' type='image/png'/></metadata>", png.len());
    let r = publish(&mut a, AVATAR_META, Some(&hash), &meta, &[]).await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    let e = recv_event(&mut b, &bare(ALICE), AVATAR_META).await;
    let info = event_items(&e)
        .child("item")
        .and_then(|i| i.child("metadata"))
        .and_then(|m| m.child("info"));
    assert_eq!(info.and_then(|i| i.attr("id")), Some(hash.as_str()), "{e}");
    let got = sync(&mut b).await;
    assert!(
        no_event(&got, AVATAR_DATA),
        "data is not +notify'd: {got:?}"
    );
    // Bob fetches the data by id.
    let r = items(&mut b, &bare(ALICE), AVATAR_DATA, "").await;
    assert_eq!(item_ids(&r), vec![hash.clone()], "{r}");
    let id = b.id();
    let r = b
        .request(
            &format!("<iq type='get' to='{}' id='{id}'><pubsub xmlns='{PUBSUB}'><items node='{AVATAR_DATA}'><item id='{hash}'/></items></pubsub></iq>", bare(ALICE)),
            &id,
        )
        .await;
    let got = r
        .child_ns("pubsub", PUBSUB)
        .and_then(|p| p.child("items"))
        .and_then(|i| i.child("item"))
        .and_then(|i| i.child("data"))
        .map(|d| d.text.clone());
    assert_eq!(
        got.map(|t| base64::engine::general_purpose::STANDARD.decode(t).unwrap()),
        Some(png.clone())
    );
    // Carol has no subscription: presence access refuses her.
    let r = items(&mut c, &bare(ALICE), AVATAR_META, "").await;
    assert_eq!(
        r.stanza_error(),
        Some(("auth".into(), "not-authorized".into())),
        "{r}"
    );
    assert!(
        r.child("error")
            .and_then(|e| e.child_ns("presence-subscription-required", ERRORS))
            .is_some(),
        "{r}"
    );
    // A new avatar replaces the single item (max_items 1 by default).
    let meta2 = format!(
        "<metadata xmlns='{AVATAR_META}'><info bytes='1' id='abc' type='image/png'/></metadata>"
    );
    let r = publish(&mut a, AVATAR_META, Some("abc"), &meta2, &[]).await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    let r = items(&mut b, &bare(ALICE), AVATAR_META, "").await;
    assert_eq!(item_ids(&r), vec!["abc"], "{r}");
}

#[tokio::test]
async fn bookmarks_whitelist_max_items_retract_config_and_restart() {
    let mut server = im_server();
    subscribe_mutual(&server, ALICE, BOB).await;
    let mut a1 = login(&server, ALICE, "one").await;
    online_with_caps(&mut a1, &[BOOKMARKS], true).await;
    let mut a2 = login(&server, ALICE, "two").await;
    online_with_caps(&mut a2, &[BOOKMARKS], false).await;
    let mut b = login(&server, BOB, "pc").await;
    online_with_caps(&mut b, &[BOOKMARKS], false).await;

    let opts = [
        ("pubsub#persist_items", "true"),
        ("pubsub#max_items", "max"),
        ("pubsub#send_last_published_item", "never"),
        ("pubsub#access_model", "whitelist"),
    ];
    for room in ["room1@conf.example", "room2@conf.example"] {
        let conf = "<conference xmlns='urn:xmpp:bookmarks:1' name='R' autojoin='true'><nick>al</nick></conference>";
        let r = publish(&mut a1, BOOKMARKS, Some(room), conf, &opts).await;
        assert_eq!(r.attr("type"), Some("result"), "{r}");
        // Both of Alice's resources hear of it; Bob never does.
        let e = recv_event(&mut a2, &bare(ALICE), BOOKMARKS).await;
        assert_eq!(
            event_items(&e).child("item").and_then(|i| i.attr("id")),
            Some(room)
        );
        recv_event(&mut a1, &bare(ALICE), BOOKMARKS).await;
    }
    let got = sync(&mut b).await;
    assert!(
        no_event(&got, BOOKMARKS),
        "Bob got Alice's bookmarks: {got:?}"
    );
    let r = items(&mut b, &bare(ALICE), BOOKMARKS, "").await;
    assert_eq!(
        r.stanza_error().map(|e| e.1),
        Some("not-allowed".into()),
        "{r}"
    );
    assert!(
        r.child("error")
            .and_then(|e| e.child_ns("closed-node", ERRORS))
            .is_some(),
        "{r}"
    );
    let r = items(&mut a2, &bare(ALICE), BOOKMARKS, "").await;
    assert_eq!(
        item_ids(&r),
        vec!["room1@conf.example", "room2@conf.example"],
        "{r}"
    );
    let r = items(&mut a2, &bare(ALICE), BOOKMARKS, " max_items='1'").await;
    assert_eq!(item_ids(&r), vec!["room2@conf.example"], "{r}");

    // Options that contradict the node: precondition-not-met, nothing published.
    let r = publish(
        &mut a1,
        BOOKMARKS,
        Some("room3@conf.example"),
        "<conference xmlns='urn:xmpp:bookmarks:1'/>",
        &[("pubsub#access_model", "open")],
    )
    .await;
    assert_eq!(
        r.stanza_error().map(|e| e.1),
        Some("conflict".into()),
        "{r}"
    );
    assert!(
        r.child("error")
            .and_then(|e| e.child_ns("precondition-not-met", ERRORS))
            .is_some(),
        "{r}"
    );

    // Retract with notify.
    let id = a1.id();
    let r = a1
        .request(
            &format!("<iq type='set' id='{id}'><pubsub xmlns='{PUBSUB}'><retract node='{BOOKMARKS}' notify='true'><item id='room1@conf.example'/></retract></pubsub></iq>"),
            &id,
        )
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    let e = recv_event(&mut a2, &bare(ALICE), BOOKMARKS).await;
    assert_eq!(
        event_items(&e).child("retract").and_then(|x| x.attr("id")),
        Some("room1@conf.example"),
        "{e}"
    );

    // Owner configuration: read it, open the node to presence subscribers.
    let id = a1.id();
    let r = a1
        .request(&format!("<iq type='get' id='{id}'><pubsub xmlns='{OWNER}'><configure node='{BOOKMARKS}'/></pubsub></iq>"), &id)
        .await;
    assert!(r.to_string().contains("whitelist"), "{r}");
    let id = a1.id();
    let r = a1
        .request(
            &format!("<iq type='set' id='{id}'><pubsub xmlns='{OWNER}'><configure node='{BOOKMARKS}'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#node_config</value></field><field var='pubsub#access_model'><value>presence</value></field></x></configure></pubsub></iq>"),
            &id,
        )
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    let r = items(&mut b, &bare(ALICE), BOOKMARKS, "").await;
    assert_eq!(item_ids(&r), vec!["room2@conf.example"], "{r}");

    drop((a1, a2, b));
    server.kill_hard(); // SIGKILL: the writes must already be durable
    server.restart();
    let mut a = login(&server, ALICE, "three").await;
    let r = items(&mut a, &bare(ALICE), BOOKMARKS, "").await;
    assert_eq!(item_ids(&r), vec!["room2@conf.example"], "{r}");
    // disco#items lists the node for its owner.
    let id = a.id();
    let r = a
        .request(&format!("<iq type='get' to='{}' id='{id}'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>", bare(ALICE)), &id)
        .await;
    assert!(
        r.child("query").is_some_and(|q| q
            .children_named("item")
            .any(|i| i.attr("node") == Some(BOOKMARKS))),
        "{r}"
    );
}

#[tokio::test]
async fn last_nick_is_sent_when_a_contact_comes_online() {
    let server = im_server();
    subscribe_mutual(&server, ALICE, BOB).await;
    let mut a = login(&server, ALICE, "pc").await;
    let r = publish(
        &mut a,
        NICK,
        None,
        &format!("<nick xmlns='{NICK}'>Ally</nick>"),
        &[],
    )
    .await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    // A last item too large to be kept in memory (read from the database when needed).
    let big = "x".repeat(20_000);
    let r = publish(
        &mut a,
        BIG,
        Some("b1"),
        &format!("<big xmlns='{BIG}'>{big}</big>"),
        &[],
    )
    .await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    a.close().await;
    // Bob logs in later with nick+notify caps: he gets Alice's last nick once his caps are known.
    let mut b = login(&server, BOB, "pc").await;
    let got = online_with_caps(&mut b, &[NICK, DEVICELIST, BIG], true).await;
    let e = match got.iter().find(|e| is_event(e, &bare(ALICE), NICK)) {
        Some(e) => e.clone(),
        None => recv_event(&mut b, &bare(ALICE), NICK).await,
    };
    let e_big = match got.iter().find(|e| is_event(e, &bare(ALICE), BIG)) {
        Some(e) => e.clone(),
        None => recv_event(&mut b, &bare(ALICE), BIG).await,
    };
    let text = event_items(&e_big)
        .child("item")
        .and_then(|i| i.child("big"))
        .map(|b| b.text.len());
    assert_eq!(text, Some(20_000));
    let nick = event_items(&e)
        .child("item")
        .and_then(|i| i.child("nick"))
        .map(|n| n.text.clone());
    assert_eq!(nick.as_deref(), Some("Ally"), "{e}");
    // Carol, not subscribed, gets nothing on login.
    let mut c = login(&server, CAROL, "pc").await;
    let mut got = online_with_caps(&mut c, &[NICK, DEVICELIST], false).await;
    got.extend(sync(&mut c).await);
    assert!(no_event(&got, NICK), "{got:?}");
    // Alice's own new session gets her nick too (caps already known).
    let mut a = login(&server, ALICE, "laptop").await;
    let got = online_with_caps(&mut a, &[NICK], true).await;
    if !got.iter().any(|e| is_event(e, &bare(ALICE), NICK)) {
        recv_event(&mut a, &bare(ALICE), NICK).await;
    }
}

#[tokio::test]
async fn a_caps_hash_that_does_not_verify_is_not_cached_for_others() {
    let server = im_server();
    subscribe_mutual(&server, ALICE, BOB).await;
    // Carol claims the hash of a devicelist+notify client but answers with other features.
    let real = features(&[DEVICELIST]);
    let v = ver(&real);
    let mut c = login(&server, CAROL, "pc").await;
    c.send(&format!(
        "<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='https://rookery.test' ver='{v}'/></presence>"
    ))
    .await;
    let q = c
        .recv_where("caps query", |e| {
            e.name == "iq" && e.attr("type") == Some("get")
        })
        .await;
    c.send(&format!(
        "<iq type='result' to='{}' id='{}'><query xmlns='http://jabber.org/protocol/disco#info' node='https://rookery.test#{v}'><identity category='client' type='pc' name='Evil'/><feature var='urn:x:nothing'/></query></iq>",
        q.attr("from").unwrap_or(""),
        q.attr("id").unwrap_or("")
    ))
    .await;
    sync(&mut c).await;
    // Bob announces the same hash honestly: the server asks him again, and
    // his notifications work.
    let mut b = login(&server, BOB, "pc").await;
    online_with_caps(&mut b, &[DEVICELIST], true).await;
    let mut a = login(&server, ALICE, "pc").await;
    let r = publish(
        &mut a,
        DEVICELIST,
        Some("current"),
        "<list xmlns='eu.siacs.conversations.axolotl'><device id='1'/></list>",
        &[],
    )
    .await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    recv_event(&mut b, &bare(ALICE), DEVICELIST).await;
}

async fn private_bookmarks(c: &mut Client, kind: &str, inner: &str) -> Element {
    let id = c.id();
    c.request(
        &format!(
            "<iq type='{kind}' id='{id}'><query xmlns='jabber:iq:private'>{inner}</query></iq>"
        ),
        &id,
    )
    .await
}

fn private_rooms(r: &Element) -> Vec<String> {
    let mut v: Vec<String> = r
        .child("query")
        .and_then(|q| q.child_ns("storage", "storage:bookmarks"))
        .map(|s| {
            s.children_named("conference")
                .filter_map(|c| c.attr("jid").map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[tokio::test]
async fn xep_0048_private_bookmarks_and_xep_0402_pep_bookmarks_are_kept_in_step() {
    let server = im_server();
    // An mcabber-like session (private XML storage) and a Gajim-like one (PEP).
    let mut old = login(&server, ALICE, "mcabber").await;
    let mut new = login(&server, ALICE, "gajim").await;
    online_with_caps(&mut new, &[BOOKMARKS], true).await;
    let id = new.id();
    let r = new
        .request(&format!("<iq type='get' to='{}' id='{id}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>", bare(ALICE)), &id)
        .await;
    assert!(r.to_string().contains("urn:xmpp:bookmarks:1#compat"), "{r}");

    let r = private_bookmarks(
        &mut old,
        "set",
        "<storage xmlns='storage:bookmarks'><conference jid='a@conf.example' name='A' autojoin='true'><nick>al</nick></conference><url name='W' url='https://w.example/'/></storage>",
    )
    .await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    // The PEP client hears of room A and reads it from the XEP-0402 node.
    let e = recv_event(&mut new, &bare(ALICE), BOOKMARKS).await;
    let item = event_items(&e).child("item").expect("item");
    assert_eq!(item.attr("id"), Some("a@conf.example"), "{e}");
    let conf = item.child_ns("conference", BOOKMARKS).expect("conference");
    assert_eq!(conf.attr("autojoin"), Some("true"));
    assert_eq!(conf.child_text("nick"), Some("al"));
    let r = items(&mut new, &bare(ALICE), BOOKMARKS, "").await;
    assert_eq!(item_ids(&r), vec!["a@conf.example"], "{r}");

    // The PEP client adds room B: private storage has A and B, and keeps the URL.
    let opts = [
        ("pubsub#persist_items", "true"),
        ("pubsub#max_items", "max"),
        ("pubsub#access_model", "whitelist"),
    ];
    let r = publish(
        &mut new,
        BOOKMARKS,
        Some("b@conf.example"),
        "<conference xmlns='urn:xmpp:bookmarks:1' name='B' autojoin='false'/>",
        &opts,
    )
    .await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    let r = private_bookmarks(&mut old, "get", "<storage xmlns='storage:bookmarks'/>").await;
    assert_eq!(
        private_rooms(&r),
        vec!["a@conf.example", "b@conf.example"],
        "{r}"
    );
    assert!(
        r.to_string().contains("https://w.example/"),
        "URL bookmark lost: {r}"
    );

    // The PEP client removes A; the private storage client removes B: both views end empty of rooms.
    let id = new.id();
    let r = new
        .request(&format!("<iq type='set' id='{id}'><pubsub xmlns='{PUBSUB}'><retract node='{BOOKMARKS}' notify='true'><item id='a@conf.example'/></retract></pubsub></iq>"), &id)
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    let r = private_bookmarks(&mut old, "get", "<storage xmlns='storage:bookmarks'/>").await;
    assert_eq!(private_rooms(&r), vec!["b@conf.example"], "{r}");
    let r = private_bookmarks(
        &mut old,
        "set",
        "<storage xmlns='storage:bookmarks'><url name='W' url='https://w.example/'/></storage>",
    )
    .await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    let e = new
        .recv_where("retract of b", |e| {
            e.child_ns("event", EVENT)
                .and_then(|ev| ev.child("items"))
                .and_then(|i| i.child("retract"))
                .is_some_and(|r| r.attr("id") == Some("b@conf.example"))
        })
        .await;
    let _ = e;
    let r = items(&mut new, &bare(ALICE), BOOKMARKS, "").await;
    assert!(item_ids(&r).is_empty(), "{r}");
}

/// XEP-0352 with PEP (ejabberd's `queue_pep`): while Bob's client is
/// inactive, Alice's notifications wait, only the latest per node, and
/// come on `<active/>`; a message wakes the client and comes after them.
#[tokio::test]
async fn inactive_client_gets_only_the_latest_notification_per_node() {
    let server = im_server();
    subscribe_mutual(&server, ALICE, BOB).await;
    let mut a = login(&server, ALICE, "pc").await;
    let mut b = login(&server, BOB, "phone").await;
    online_with_caps(&mut b, &[NICK, DEVICELIST], true).await;
    b.send("<inactive xmlns='urn:xmpp:csi:0'/>").await;
    sync(&mut b).await;
    for nick in ["N1", "N2", "N3"] {
        let r = publish(
            &mut a,
            NICK,
            None,
            &format!("<nick xmlns='{NICK}'>{nick}</nick>"),
            &[],
        )
        .await;
        assert_eq!(r.attr("type"), Some("result"), "{r}");
    }
    let r = publish(
        &mut a,
        DEVICELIST,
        Some("current"),
        "<list xmlns='eu.siacs.conversations.axolotl'><device id='7'/></list>",
        &[],
    )
    .await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    let got = sync(&mut b).await;
    assert!(
        no_event(&got, NICK) && no_event(&got, DEVICELIST),
        "notification delivered while inactive: {got:?}"
    );
    b.send("<active xmlns='urn:xmpp:csi:0'/>").await;
    let got = sync(&mut b).await;
    let nicks: Vec<String> = got
        .iter()
        .filter(|e| is_event(e, &bare(ALICE), NICK))
        .filter_map(|e| {
            event_items(e)
                .child("item")
                .and_then(|i| i.child("nick"))
                .map(|n| n.text.clone())
        })
        .collect();
    assert_eq!(nicks, ["N3"], "{got:?}");
    let lists = got
        .iter()
        .filter(|e| is_event(e, &bare(ALICE), DEVICELIST))
        .count();
    assert_eq!(lists, 1, "{got:?}");

    // Inactive again: a chat message comes at once, after the held notification.
    b.send("<inactive xmlns='urn:xmpp:csi:0'/>").await;
    sync(&mut b).await;
    publish(
        &mut a,
        NICK,
        None,
        &format!("<nick xmlns='{NICK}'>N4</nick>"),
        &[],
    )
    .await;
    assert!(no_event(&sync(&mut b).await, NICK));
    a.send(&format!(
        "<message to='{}' type='chat' id='m1'><body>hi</body></message>",
        bare(BOB)
    ))
    .await;
    sync(&mut a).await;
    let got = sync(&mut b).await;
    let order: Vec<&str> = got
        .iter()
        .filter(|e| e.name == "message")
        .map(|e| {
            if e.child("body").is_some() {
                "msg"
            } else {
                "nick"
            }
        })
        .collect();
    assert_eq!(order, ["nick", "msg"], "{got:?}");
}
