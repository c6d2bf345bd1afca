//! XEP-0115 caps of the server itself (`mod_caps`): after authentication the
//! stream features carry `<c/>` whose `ver` is the §5.1 hash of what the
//! server answers to disco#info, and disco#info on `node#ver` gives the same.

use crate::common;

use base64::Engine as _;
use common::client::Client;
use common::{server_with_users, Element};
use sha1::{Digest, Sha1};

const CAPS: &str = "http://jabber.org/protocol/caps";
const INFO: &str = "http://jabber.org/protocol/disco#info";

/// XEP-0115 §5.1 for a disco#info result without forms (the server has none).
fn hash(query: &Element) -> String {
    let mut ids: Vec<String> = query
        .children_named("identity")
        .map(|i| {
            format!(
                "{}/{}/{}/{}",
                i.attr("category").unwrap_or(""),
                i.attr("type").unwrap_or(""),
                i.attr("xml:lang").unwrap_or(""),
                i.attr("name").unwrap_or("")
            )
        })
        .collect();
    ids.sort();
    let mut features: Vec<&str> = query
        .children_named("feature")
        .filter_map(|f| f.attr("var"))
        .collect();
    features.sort();
    let mut s = String::new();
    for x in ids.iter().map(String::as_str).chain(features) {
        s.push_str(x);
        s.push('<');
    }
    base64::engine::general_purpose::STANDARD.encode(Sha1::digest(s.as_bytes()))
}

async fn disco(c: &mut Client, node: Option<&str>) -> Element {
    let id = c.id();
    let node = node.map(|n| format!(" node='{n}'")).unwrap_or_default();
    c.request(
        &format!("<iq type='get' to='localhost' id='{id}'><query xmlns='{INFO}'{node}/></iq>"),
        &id,
    )
    .await
}

#[tokio::test]
async fn stream_features_carry_the_servers_caps_hash() {
    let server = server_with_users();
    let mut c = Client::login(&server, "alice", "secret", Some("caps")).await;
    let features = c.features.clone().expect("features");
    let caps = features
        .child_ns("c", CAPS)
        .expect("no <c/> in stream features");
    assert_eq!(caps.attr("hash"), Some("sha-1"), "{caps}");
    let node = caps.attr("node").expect("node").to_string();
    let ver = caps.attr("ver").expect("ver").to_string();

    let info = disco(&mut c, None).await;
    assert_eq!(info.attr("type"), Some("result"), "{info}");
    let query = info.child_ns("query", INFO).expect("query");
    assert!(query.children_named("feature").count() > 3, "{query}");
    assert_eq!(
        hash(query),
        ver,
        "ver is not the hash of disco#info: {query}"
    );

    // The same answer on node#ver, with the node echoed.
    let on_node = disco(&mut c, Some(&format!("{node}#{ver}"))).await;
    assert_eq!(on_node.attr("type"), Some("result"), "{on_node}");
    let q2 = on_node.child_ns("query", INFO).expect("query");
    assert_eq!(q2.attr("node"), Some(format!("{node}#{ver}").as_str()));
    assert_eq!(hash(q2), ver, "{q2}");

    // A stale ver is not a node the server has.
    let stale = disco(
        &mut c,
        Some(&format!("{node}#AAAAAAAAAAAAAAAAAAAAAAAAAAA=")),
    )
    .await;
    assert_eq!(stale.attr("type"), Some("error"), "{stale}");
    assert!(
        stale
            .child("error")
            .and_then(|e| e.child("item-not-found"))
            .is_some(),
        "{stale}"
    );
}

#[tokio::test]
async fn without_mod_caps_there_is_no_caps_feature() {
    let server = common::Server::start_with_yaml_edit(common::Config::default(), |y| {
        y.replace("  mod_caps: {}\n", "")
    });
    server.register("alice", "localhost", "secret");
    let c = Client::login(&server, "alice", "secret", Some("caps")).await;
    let features = c.features.clone().expect("features");
    assert!(features.child_ns("c", CAPS).is_none(), "{features}");
}
