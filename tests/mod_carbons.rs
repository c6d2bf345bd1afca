//! XEP-0280 Message Carbons against the real binary: enabling per resource,
//! `<received/>` copies of messages delivered to another resource, `<sent/>`
//! copies of messages a resource sends, the eligibility rules (type, body,
//! `<private/>`, XEP-0334 `<no-copy/>`), and that carbon-looking wrappers
//! from outside the account never reach a client.

use crate::common;

use std::time::Duration;

use common::client::Client;
use common::im::{self, bare, sync, ALICE, BOB, CAROL};
use common::Element;

const NS_CARBONS: &str = "urn:xmpp:carbons:2";
const NS_FORWARD: &str = "urn:xmpp:forward:0";

async fn carbons(c: &mut Client, what: &str) -> Element {
    let id = c.id();
    c.request(
        &format!("<iq type='set' id='{id}'><{what} xmlns='{NS_CARBONS}'/></iq>"),
        &id,
    )
    .await
}

/// The forwarded message inside a carbon copy, after checking the wrapper.
fn unwrap<'a>(copy: &'a Element, wrapper: &str, account: &str) -> &'a Element {
    assert_eq!(
        copy.attr("from"),
        Some(account),
        "carbon not from the bare JID: {copy}"
    );
    let w = copy
        .child_ns(wrapper, NS_CARBONS)
        .unwrap_or_else(|| panic!("no <{wrapper}/> in {copy}"));
    let f = w
        .child_ns("forwarded", NS_FORWARD)
        .unwrap_or_else(|| panic!("no <forwarded/> in {copy}"));
    f.child("message").expect("forwarded message")
}

fn messages(els: &[Element]) -> Vec<&Element> {
    els.iter().filter(|e| e.name == "message").collect()
}

#[tokio::test]
async fn received_and_sent_copies_follow_the_rules() {
    let server = im::im_server();
    let alice = bare(ALICE);
    let mut a1 = im::online(&server, ALICE, "one").await;
    let mut a2 = im::online(&server, ALICE, "two").await;
    let mut a3 = im::online(&server, ALICE, "three").await; // carbons off
    let mut bob = im::online(&server, BOB, "b").await;
    let r = carbons(&mut a1, "enable").await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    let r = carbons(&mut a2, "enable").await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    // A get is not how carbons are switched.
    let id = a3.id();
    let r = a3
        .request(
            &format!("<iq type='get' id='{id}'><enable xmlns='{NS_CARBONS}'/></iq>"),
            &id,
        )
        .await;
    assert_eq!(r.attr("type"), Some("error"), "{r}");

    // bob -> alice/one: alice/two gets a <received/> copy, alice/three nothing.
    bob.send(&im::chat(&format!("{alice}/one"), "r1", "to one"))
        .await;
    sync(&mut bob).await;
    let m = a1.recv_message().await;
    assert_eq!(m.child_text("body"), Some("to one"));
    assert!(m.child_ns("received", NS_CARBONS).is_none());
    let copy = a2.recv_message().await;
    let inner = unwrap(&copy, "received", &alice);
    assert_eq!(inner.attr("from"), Some("bob@localhost/b"));
    assert_eq!(inner.attr("to"), Some(format!("{alice}/one").as_str()));
    assert_eq!(inner.child_text("body"), Some("to one"));
    assert_eq!(copy.attr("to"), Some(format!("{alice}/two").as_str()));
    assert!(messages(&sync(&mut a3).await).is_empty());

    // alice/one -> bob: alice/two gets a <sent/> copy; the sender gets none.
    a1.send(&im::chat("bob@localhost", "s1", "from one")).await;
    sync(&mut a1).await;
    let m = bob.recv_message().await;
    assert_eq!(m.child_text("body"), Some("from one"));
    let copy = a2.recv_message().await;
    let inner = unwrap(&copy, "sent", &alice);
    assert_eq!(inner.attr("from"), Some(format!("{alice}/one").as_str()));
    assert_eq!(inner.attr("to"), Some("bob@localhost"));
    assert!(
        messages(&sync(&mut a1).await).is_empty(),
        "no copy to the sender"
    );
    assert!(messages(&sync(&mut a3).await).is_empty());

    // Not eligible: <private/>, <no-copy/>, headline, normal without body.
    for (i, extra) in [
        (
            "type='chat'",
            "<body>p</body><private xmlns='urn:xmpp:carbons:2'/>",
        ),
        (
            "type='chat'",
            "<body>p</body><no-copy xmlns='urn:xmpp:hints'/>",
        ),
        ("type='headline'", "<body>p</body>"),
        ("", "<subject>no body</subject>"),
    ]
    .iter()
    .enumerate()
    {
        a1.send(&format!(
            "<message to='bob@localhost' id='np{i}' {}>{}</message>",
            extra.0, extra.1
        ))
        .await;
        bob.send(&format!(
            "<message to='{alice}/one' id='nq{i}' {}>{}</message>",
            extra.0, extra.1
        ))
        .await;
    }
    sync(&mut a1).await;
    sync(&mut bob).await;
    let got = sync(&mut a2).await;
    assert!(
        messages(&got).is_empty(),
        "copies of ineligible messages: {}",
        im::show(&got)
    );

    // Normal messages with a body are eligible.
    bob.send(&format!(
        "<message to='{alice}/one' id='n1'><body>normal</body></message>"
    ))
    .await;
    sync(&mut bob).await;
    let copy = a2.recv_message().await;
    assert_eq!(
        unwrap(&copy, "received", &alice).child_text("body"),
        Some("normal")
    );

    // After <disable/>, alice/two gets no more copies.
    let r = carbons(&mut a2, "disable").await;
    assert_eq!(r.attr("type"), Some("result"));
    bob.send(&im::chat(&format!("{alice}/one"), "r2", "after disable"))
        .await;
    sync(&mut bob).await;
    assert!(messages(&sync(&mut a2).await).is_empty());
}

#[tokio::test]
async fn bare_jid_messages_are_copied_to_enabled_resources_that_did_not_get_them() {
    let server = im::im_server();
    let alice = bare(ALICE);
    let mut a1 = im::online(&server, ALICE, "high").await;
    let (mut low, _) = im::online_with(
        &server,
        ALICE,
        "low",
        "<presence><priority>-1</priority></presence>",
    )
    .await;
    let r = carbons(&mut low, "enable").await;
    assert_eq!(r.attr("type"), Some("result"));
    let r = carbons(&mut a1, "enable").await;
    assert_eq!(r.attr("type"), Some("result"));
    let mut bob = im::online(&server, BOB, "b").await;
    bob.send(&im::chat(&alice, "b1", "to bare")).await;
    sync(&mut bob).await;
    let m = a1.recv_message().await;
    assert_eq!(m.child_text("body"), Some("to bare"));
    assert!(m.child_ns("received", NS_CARBONS).is_none());
    let copy = low.recv_message().await;
    assert_eq!(
        unwrap(&copy, "received", &alice).child_text("body"),
        Some("to bare")
    );
    // Exactly one copy each.
    assert!(messages(&sync(&mut a1).await).is_empty());
    assert!(messages(&sync(&mut low).await).is_empty());
}

#[tokio::test]
async fn carbon_wrappers_from_outside_the_account_are_removed() {
    let server = im::im_server();
    let alice = bare(ALICE);
    let mut a1 = im::online(&server, ALICE, "one").await;
    let r = carbons(&mut a1, "enable").await;
    assert_eq!(r.attr("type"), Some("result"));
    let mut carol = im::online(&server, CAROL, "c").await;
    // carol forges a "sent" carbon claiming alice wrote to bob.
    let forged = format!(
        "<message to='{alice}/one' type='chat' id='f1'>\
           <sent xmlns='{NS_CARBONS}'><forwarded xmlns='{NS_FORWARD}'>\
             <message xmlns='jabber:client' from='{alice}/one' to='bob@localhost' type='chat'><body>forged</body></message>\
           </forwarded></sent>\
           <received xmlns='{NS_CARBONS}'><forwarded xmlns='{NS_FORWARD}'>\
             <message xmlns='jabber:client' from='bob@localhost/b' to='{alice}/one' type='chat'><body>forged</body></message>\
           </forwarded></received>\
           <body>visible</body></message>"
    );
    carol.send(&forged).await;
    sync(&mut carol).await;
    let m = a1.recv_message().await;
    assert_eq!(m.attr("from"), Some("carol@localhost/c"));
    assert_eq!(m.child_text("body"), Some("visible"));
    assert!(
        m.child_ns("sent", NS_CARBONS).is_none() && m.child_ns("received", NS_CARBONS).is_none(),
        "forged carbon delivered: {m}"
    );
    // Only the server's own copies come from the bare JID: a client-written
    // `from` is overwritten.
    carol
        .send(&format!(
            "<message from='{alice}' to='{alice}/one' type='chat'><body>spoof</body></message>"
        ))
        .await;
    sync(&mut carol).await;
    let m = a1.recv_message().await;
    assert_eq!(m.attr("from"), Some("carol@localhost/c"), "{m}");
    a1.expect_silence(Duration::from_millis(200)).await;
}
