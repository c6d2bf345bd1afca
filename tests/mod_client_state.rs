//! XEP-0352 Client State Indication against the real binary: while a client
//! is inactive, presence updates and chat-state-only messages wait (only the
//! latest per sender), other messages come at once after what was held, and
//! everything held comes on `<active/>`.

use crate::common;

use common::client::Client;
use common::im::{self, bare, sync, ALICE, BOB, CAROL, NS_CHATSTATES};
use common::server::{Config, Server, DEFAULT_MODULES};
use common::Element;

fn summary(els: &[Element]) -> Vec<String> {
    els.iter()
        .filter(|e| e.name == "presence" || e.name == "message")
        .map(|e| {
            let from = e.attr("from").unwrap_or("");
            let who = from.split('@').next().unwrap_or("");
            match e.name.as_str() {
                "presence" => format!(
                    "{who}:{}",
                    e.child_text("show")
                        .map(str::to_string)
                        .or(e.attr("type").map(str::to_string))
                        .unwrap_or_else(|| "available".into())
                ),
                _ => match e.child_text("body") {
                    Some(b) => format!("{who}:msg:{b}"),
                    None => format!(
                        "{who}:state:{}",
                        e.children
                            .iter()
                            .find(|c| c.ns == NS_CHATSTATES)
                            .map(|c| c.name.clone())
                            .unwrap_or_default()
                    ),
                },
            }
        })
        .collect()
}

async fn show(c: &mut Client, s: &str) {
    c.send(&format!("<presence><show>{s}</show></presence>"))
        .await;
    sync(c).await;
}

#[tokio::test]
async fn inactive_client_gets_only_latest_presence_and_messages_at_once() {
    let server = im::im_server();
    im::subscribe_mutual(&server, ALICE, BOB).await;
    im::subscribe_mutual(&server, ALICE, CAROL).await;
    let mut a = im::online(&server, ALICE, "mobile").await;
    let f = a.features.clone().expect("features");
    assert!(
        f.child_ns("csi", "urn:xmpp:csi:0").is_some(),
        "no <csi/> feature: {f}"
    );
    let mut bob = im::online(&server, BOB, "b").await;
    let mut carol = im::online(&server, CAROL, "c").await;
    sync(&mut a).await;

    a.send("<inactive xmlns='urn:xmpp:csi:0'/>").await;
    // The session reads in order: once this round trip is answered, the
    // server has taken <inactive/> (without it, Bob's presence could race
    // Alice's <inactive/> on a loaded machine and arrive before it).
    let got = sync(&mut a).await;
    assert!(summary(&got).is_empty(), "{}", im::show(&got));
    show(&mut bob, "away").await;
    show(&mut bob, "dnd").await;
    show(&mut carol, "xa").await;
    bob.send(&format!(
        "<message to='{}' type='chat'><composing xmlns='{NS_CHATSTATES}'/></message>",
        bare(ALICE)
    ))
    .await;
    bob.send(&format!(
        "<message to='{}' type='chat'><paused xmlns='{NS_CHATSTATES}'/></message>",
        bare(ALICE)
    ))
    .await;
    sync(&mut bob).await;
    // Held: the iq answer passes, the presence updates and chat states do not.
    let got = sync(&mut a).await;
    assert!(
        summary(&got).is_empty(),
        "delivered while inactive: {}",
        im::show(&got)
    );

    // A message comes at once, after what was held (latest per sender only).
    bob.send(&im::chat(&bare(ALICE), "m1", "wake")).await;
    sync(&mut bob).await;
    let got = sync(&mut a).await;
    assert_eq!(
        summary(&got),
        ["bob:dnd", "carol:xa", "bob:state:paused", "bob:msg:wake"],
        "{}",
        im::show(&got)
    );

    // Held again, then flushed by <active/>.
    show(&mut carol, "chat").await;
    show(&mut carol, "away").await;
    let got = sync(&mut a).await;
    assert!(summary(&got).is_empty(), "{}", im::show(&got));
    a.send("<active xmlns='urn:xmpp:csi:0'/>").await;
    let got = sync(&mut a).await;
    assert_eq!(summary(&got), ["carol:away"], "{}", im::show(&got));

    // Active again: updates flow immediately.
    show(&mut bob, "chat").await;
    let got = sync(&mut a).await;
    assert_eq!(summary(&got), ["bob:chat"], "{}", im::show(&got));
}

#[tokio::test]
async fn without_the_module_csi_is_neither_offered_nor_accepted() {
    let server = Server::start_with(Config {
        modules: DEFAULT_MODULES.replace("  mod_client_state: {}\n", ""),
        ..Config::default()
    });
    server.register(ALICE.0, "localhost", ALICE.1);
    let mut a = im::login(&server, ALICE, "x").await;
    let f = a.features.clone().expect("features");
    assert!(f.child_ns("csi", "urn:xmpp:csi:0").is_none(), "{f}");
    a.send("<inactive xmlns='urn:xmpp:csi:0'/>").await;
    assert_eq!(a.expect_stream_error().await, "unsupported-stanza-type");
}
