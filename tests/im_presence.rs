//! Integration tests of presence subscriptions (RFC 6121 §3, Appendix A),
//! presence exchange (§4) and message delivery rules (§8.5) on the real
//! `rookery` binary, with two to four users and several resources each.
//!
//! Subscriptions: request/approve with roster pushes on both sides, mutual
//! subscription, redundant requests, unsubscribe/unsubscribed, requests
//! stored for an offline contact and re-delivered at every login until
//! answered, pre-approval, requests to nonexistent users and to oneself.
//! Presence: initial broadcast and probes (one presence per available
//! resource), updates, explicit unavailable, unavailable when a session ends
//! by `</stream:stream>`, by a dropped connection and by a conflicting bind,
//! directed presence, presence to nonexistent users. Messages: priorities,
//! full/bare JID rules, groupchat/headline/error handling.

use crate::common;

use std::time::Duration;

use common::im::*;
use common::*;

const A: &str = "alice@localhost";
const B: &str = "bob@localhost";
const C: &str = "carol@localhost";

/// Messages among `els` whose body is `body`.
fn with_body<'a>(els: &'a [Element], body: &str) -> Vec<&'a Element> {
    els.iter()
        .filter(|e| e.name == "message" && e.child_text("body") == Some(body))
        .collect()
}

/// Presences among `els` from `from` with type `ty`.
fn presences<'a>(els: &'a [Element], from: &str, ty: Option<&str>) -> Vec<&'a Element> {
    els.iter().filter(|e| is_presence(e, from, ty)).collect()
}

/// Asserts `c` received no presence from `from` (any type) up to a barrier.
async fn assert_no_presence_from(c: &mut Client, from: &str, ctx: &str) {
    let seen = sync(c).await;
    let bad: Vec<&Element> = seen
        .iter()
        .filter(|e| e.name == "presence" && e.attr("from") == Some(from))
        .collect();
    assert!(
        bad.is_empty(),
        "{ctx}: {} got presence from {from}: {}",
        c.full_jid(),
        bad.iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    );
}

/// An error message reply with `condition`, from `from`.
async fn expect_message_error(c: &mut Client, id: &str, from: &str, condition: &str) {
    let i = id.to_string();
    let e = c
        .recv_where(&format!("error reply to message {id}"), move |e| {
            e.name == "message" && e.attr("id") == Some(i.as_str())
        })
        .await;
    assert_eq!(e.attr("type"), Some("error"), "{e}");
    assert_eq!(
        e.attr("from"),
        Some(from),
        "error not from the addressee: {e}"
    );
    let (_, cond) = e
        .stanza_error()
        .unwrap_or_else(|| panic!("no condition: {e}"));
    assert_eq!(cond, condition, "{e}");
}

// ----- subscriptions --------------------------------------------------------

#[tokio::test]
async fn subscribe_then_approve_with_pushes_and_presence() {
    let server = im_server();
    let mut alice = online_interested(&server, ALICE, "a1").await;
    let mut alice2 = online_interested(&server, ALICE, "a2").await;
    let mut bob = online_interested(&server, BOB, "b1").await;
    let (mut bob2, _) = online_with(
        &server,
        BOB,
        "b2",
        "<presence><status>second</status></presence>",
    )
    .await; // available, never asks for the roster
    sync(&mut alice).await;
    sync(&mut alice2).await;
    sync(&mut bob).await;

    send_sub(&mut alice, B, "subscribe").await;
    for a in [&mut alice, &mut alice2] {
        let p = recv_push_for(a, B).await;
        assert_item_state(
            push_item(&p),
            "none",
            true,
            false,
            "user's push after subscribe",
        );
    }
    for b in [&mut bob, &mut bob2] {
        let s = recv_presence(b, A, Some("subscribe")).await;
        assert_eq!(
            s.attr("from"),
            Some(A),
            "request not from the bare JID: {s}"
        );
    }
    // The contact's item is not pushed as subscribed yet.
    let seen = sync(&mut bob).await;
    for p in pushes_for(&seen, A) {
        let i = push_item(p);
        assert_eq!(i.attr("subscription").unwrap_or("none"), "none", "{p}");
    }
    let seen = sync(&mut bob2).await;
    assert!(
        seen.iter().all(|e| !is_push(e)),
        "uninterested resource got a push: {}",
        show(&seen)
    );

    send_sub(&mut bob, A, "subscribed").await;
    let p = recv_push_for(&mut bob, A).await;
    assert_item_state(
        push_item(&p),
        "from",
        false,
        false,
        "contact's push after approval",
    );
    // Bob's server has now routed everything his approval causes.
    sync(&mut bob).await;
    for a in [&mut alice, &mut alice2] {
        let p = recv_push_for(a, B).await;
        assert_item_state(
            push_item(&p),
            "to",
            false,
            false,
            "user's push after approval",
        );
        let seen = sync(a).await;
        let sub_at = seen
            .iter()
            .position(|e| is_presence(e, B, Some("subscribed")))
            .unwrap_or_else(|| panic!("no <subscribed/> from {B}: {}", show(&seen)));
        for r in ["bob@localhost/b1", "bob@localhost/b2"] {
            let at: Vec<usize> = seen
                .iter()
                .enumerate()
                .filter(|(_, e)| is_presence(e, r, None))
                .map(|(i, _)| i)
                .collect();
            assert_eq!(at.len(), 1, "presence from {r} once: {}", show(&seen));
            assert!(
                at[0] > sub_at,
                "presence from {r} before <subscribed/>: {}",
                show(&seen)
            );
        }
        let b2 = seen
            .iter()
            .find(|e| is_presence(e, "bob@localhost/b2", None))
            .expect("b2 presence");
        assert_eq!(b2.child_text("status"), Some("second"), "{b2}");
    }
    // Bob is not subscribed to alice: alice's presence does not reach him.
    alice
        .send("<presence><status>visible?</status></presence>")
        .await;
    sync(&mut alice).await;
    assert_no_presence_from(&mut bob, "alice@localhost/a1", "one-way subscription").await;
    // Bob's presence now reaches alice.
    bob.send("<presence><show>away</show></presence>").await;
    let p = recv_presence(&mut alice, "bob@localhost/b1", None).await;
    assert_eq!(p.child_text("show"), Some("away"), "{p}");

    let item = roster_item(&mut alice, B).await.expect("alice's item");
    assert_item_state(&item, "to", false, false, "alice's roster");
    let item = roster_item(&mut bob, A).await.expect("bob's item");
    assert_item_state(&item, "from", false, false, "bob's roster");
}

#[tokio::test]
async fn mutual_subscription_reaches_both() {
    let server = im_server();
    subscribe_one_way(&server, ALICE, BOB).await;
    let mut alice = online_interested(&server, ALICE, "a1").await;
    let mut bob = online_interested(&server, BOB, "b1").await;
    sync(&mut alice).await;

    send_sub(&mut bob, A, "subscribe").await;
    let p = recv_push_for(&mut bob, A).await;
    assert_item_state(
        push_item(&p),
        "from",
        true,
        false,
        "bob's push after subscribe",
    );
    recv_presence(&mut alice, B, Some("subscribe")).await;
    send_sub(&mut alice, B, "subscribed").await;
    let p = recv_push_for(&mut alice, B).await;
    assert_item_state(
        push_item(&p),
        "both",
        false,
        false,
        "alice's push after approval",
    );
    let p = recv_push_for(&mut bob, A).await;
    assert_item_state(
        push_item(&p),
        "both",
        false,
        false,
        "bob's push after approval",
    );
    recv_presence(&mut bob, A, Some("subscribed")).await;
    recv_presence(&mut bob, "alice@localhost/a1", None).await;

    alice
        .send("<presence><show>chat</show><status>hello</status></presence>")
        .await;
    let p = recv_presence(&mut bob, "alice@localhost/a1", None).await;
    assert_eq!(p.child_text("status"), Some("hello"), "{p}");
    bob.send("<presence><show>xa</show></presence>").await;
    let p = recv_presence(&mut alice, "bob@localhost/b1", None).await;
    assert_eq!(p.child_text("show"), Some("xa"), "{p}");
}

#[tokio::test]
async fn redundant_subscribe_does_not_bother_the_contact() {
    let server = im_server();
    subscribe_mutual(&server, ALICE, BOB).await;
    let mut alice = online_interested(&server, ALICE, "a1").await;
    let mut bob = online_interested(&server, BOB, "b1").await;
    sync(&mut alice).await;
    send_sub(&mut alice, B, "subscribe").await;
    sync(&mut alice).await;
    let seen = sync(&mut bob).await;
    assert!(
        presences(&seen, A, Some("subscribe")).is_empty(),
        "contact asked again although already subscribed (RFC 6121 §3.1.3): {}",
        show(&seen)
    );
    assert!(pushes_for(&seen, A).is_empty(), "{}", show(&seen));
    let item = roster_item(&mut alice, B).await.expect("item");
    assert_item_state(&item, "both", false, false, "alice's roster");
    let item = roster_item(&mut bob, A).await.expect("item");
    assert_item_state(&item, "both", false, false, "bob's roster");
}

#[tokio::test]
async fn unsubscribe_and_unsubscribed() {
    let server = im_server();
    subscribe_mutual(&server, ALICE, BOB).await;
    let mut alice = online_interested(&server, ALICE, "a1").await;
    let mut bob = online_interested(&server, BOB, "b1").await;
    sync(&mut alice).await;

    // Alice stops watching bob (§3.3).
    send_sub(&mut alice, B, "unsubscribe").await;
    let p = recv_push_for(&mut alice, B).await;
    assert_item_state(
        push_item(&p),
        "from",
        false,
        false,
        "alice's push after unsubscribe",
    );
    recv_presence(&mut bob, A, Some("unsubscribe")).await;
    let p = recv_push_for(&mut bob, A).await;
    assert_item_state(
        push_item(&p),
        "to",
        false,
        false,
        "bob's push after unsubscribe",
    );
    // The contact's server then owes the user unavailable presence (§3.3.3;
    // checked in detail by `unsubscribe_sends_unavailable_from_the_contact`).
    recv_presence(&mut alice, "bob@localhost/b1", Some("unavailable")).await;
    // Bob's updates no longer reach alice; alice's still reach bob.
    bob.send("<presence><status>unseen</status></presence>")
        .await;
    sync(&mut bob).await;
    assert_no_presence_from(&mut alice, "bob@localhost/b1", "after unsubscribe").await;
    alice
        .send("<presence><status>seen</status></presence>")
        .await;
    let p = recv_presence(&mut bob, "alice@localhost/a1", None).await;
    assert_eq!(p.child_text("status"), Some("seen"), "{p}");

    // Alice cancels bob's subscription to her (§3.2).
    send_sub(&mut alice, B, "unsubscribed").await;
    let p = recv_push_for(&mut alice, B).await;
    assert_item_state(
        push_item(&p),
        "none",
        false,
        false,
        "alice's push after unsubscribed",
    );
    recv_presence(&mut bob, A, Some("unsubscribed")).await;
    let p = recv_push_for(&mut bob, A).await;
    assert_item_state(
        push_item(&p),
        "none",
        false,
        false,
        "bob's push after unsubscribed",
    );
    recv_presence(&mut bob, "alice@localhost/a1", Some("unavailable")).await;
    alice
        .send("<presence><status>gone</status></presence>")
        .await;
    sync(&mut alice).await;
    assert_no_presence_from(&mut bob, "alice@localhost/a1", "after unsubscribed").await;

    let item = roster_item(&mut alice, B).await.expect("item kept");
    assert_item_state(&item, "none", false, false, "alice's roster");
    let item = roster_item(&mut bob, A).await.expect("item kept");
    assert_item_state(&item, "none", false, false, "bob's roster");
}

#[tokio::test]
async fn cancelling_a_pending_request_with_unsubscribe() {
    let server = im_server();
    let mut alice = online_interested(&server, ALICE, "a1").await;
    let mut bob = online_interested(&server, BOB, "b1").await;
    send_sub(&mut alice, B, "subscribe").await;
    recv_push_for(&mut alice, B).await;
    recv_presence(&mut bob, A, Some("subscribe")).await;
    send_sub(&mut alice, B, "unsubscribe").await;
    let p = recv_push_for(&mut alice, B).await;
    assert_item_state(push_item(&p), "none", false, false, "push after cancelling");
    sync(&mut alice).await;
    bob.close().await;
    // The withdrawn request is not delivered again at the next login.
    let (mut bob, seen) = online_with(&server, BOB, "b2", "<presence/>").await;
    assert!(
        presences(&seen, A, Some("subscribe")).is_empty(),
        "withdrawn request delivered again: {}",
        show(&seen)
    );
    let seen = sync(&mut bob).await;
    assert!(
        presences(&seen, A, Some("subscribe")).is_empty(),
        "{}",
        show(&seen)
    );
}

#[tokio::test]
async fn request_to_offline_contact_is_delivered_at_every_login_until_answered() {
    let server = im_server();
    let mut alice = online_interested(&server, ALICE, "a1").await;
    alice
        .send(&format!(
            "<presence to='{B}' type='subscribe'><status>it is alice</status></presence>"
        ))
        .await;
    let p = recv_push_for(&mut alice, B).await;
    assert_item_state(push_item(&p), "none", true, false, "push after subscribe");
    sync(&mut alice).await;

    for round in 0..2 {
        let mut bob = login(&server, BOB, &format!("b{round}")).await;
        let before = sync(&mut bob).await;
        assert!(
            presences(&before, A, Some("subscribe")).is_empty(),
            "request delivered before initial presence: {}",
            show(&before)
        );
        bob.send("<presence/>").await;
        recv_presence(&mut bob, A, Some("subscribe")).await;
        let seen = sync(&mut bob).await;
        assert!(
            presences(&seen, A, Some("subscribe")).is_empty(),
            "round {round}: request delivered twice: {}",
            show(&seen)
        );
        if round == 0 {
            bob.close().await;
        } else {
            send_sub(&mut bob, A, "subscribed").await;
            sync(&mut bob).await;
            bob.close().await;
        }
    }
    let p = recv_push_for(&mut alice, B).await;
    assert_item_state(push_item(&p), "to", false, false, "push after approval");
    recv_presence(&mut alice, B, Some("subscribed")).await;

    let (mut bob, seen) = online_with(&server, BOB, "b9", "<presence/>").await;
    assert!(
        presences(&seen, A, Some("subscribe")).is_empty(),
        "answered request delivered again: {}",
        show(&seen)
    );
    let seen = sync(&mut bob).await;
    assert!(
        presences(&seen, A, Some("subscribe")).is_empty(),
        "{}",
        show(&seen)
    );
    let item = roster_item(&mut bob, A).await.expect("bob's item");
    assert_item_state(&item, "from", false, false, "bob's roster");
    // Alice, subscribed now, sees bob's new session.
    recv_presence(&mut alice, "bob@localhost/b9", None).await;
}

#[tokio::test]
async fn unsubscribe_sends_unavailable_from_the_contact() {
    // RFC 6121 §3.3.3: on an inbound unsubscribe, the contact's server MUST
    // also send unavailable presence from all of the contact's available
    // resources to the user (mirroring §3.2.2 for unsubscribed).
    let server = im_server();
    subscribe_mutual(&server, ALICE, BOB).await;
    let mut alice = online(&server, ALICE, "a1").await;
    let mut bob = online(&server, BOB, "b1").await;
    let _bob2 = online(&server, BOB, "b2").await;
    sync(&mut alice).await;
    send_sub(&mut alice, B, "unsubscribe").await;
    recv_presence(&mut bob, A, Some("unsubscribe")).await;
    for r in ["bob@localhost/b1", "bob@localhost/b2"] {
        recv_presence(&mut alice, r, Some("unavailable")).await;
    }
}

#[tokio::test]
async fn stored_subscription_request_keeps_its_payload() {
    // A request stored for an offline contact is delivered later; its
    // <status/> (and any other payload, e.g. a XEP-0172 nick) should be the
    // one the user sent, as it is for live delivery.
    let server = im_server();
    let mut alice = online(&server, ALICE, "a1").await;
    alice
        .send(&format!(
            "<presence to='{B}' type='subscribe'><status>it is alice</status>\
             <nick xmlns='http://jabber.org/protocol/nick'>Ally</nick></presence>"
        ))
        .await;
    sync(&mut alice).await;
    let mut bob = login(&server, BOB, "b1").await;
    bob.send("<presence/>").await;
    let s = recv_presence(&mut bob, A, Some("subscribe")).await;
    assert_eq!(
        s.child_text("status"),
        Some("it is alice"),
        "status lost: {s}"
    );
    assert_eq!(s.child_text("nick"), Some("Ally"), "nick lost: {s}");
}

#[tokio::test]
async fn preapproval_answers_the_later_request_automatically() {
    let server = im_server();
    let mut bob = online_interested(&server, BOB, "b1").await;
    let mut carol = online_interested(&server, CAROL, "c1").await;

    send_sub(&mut bob, C, "subscribed").await;
    let p = recv_push_for(&mut bob, C).await;
    assert_item_state(
        push_item(&p),
        "none",
        false,
        true,
        "push after pre-approval",
    );
    sync(&mut bob).await;
    let seen = sync(&mut carol).await;
    assert!(
        seen.iter()
            .all(|e| !(e.name == "presence" && e.attr("from").is_some_and(|f| f.starts_with(B)))),
        "pre-approval must not be routed to the contact: {}",
        show(&seen)
    );
    let item = roster_item(&mut bob, C).await.expect("item");
    assert_item_state(
        &item,
        "none",
        false,
        true,
        "bob's roster after pre-approval",
    );

    send_sub(&mut carol, B, "subscribe").await;
    let p = recv_push_for(&mut carol, B).await;
    assert_item_state(
        push_item(&p),
        "none",
        true,
        false,
        "carol's push after subscribe",
    );
    recv_presence(&mut carol, B, Some("subscribed")).await;
    let p = recv_push_for(&mut carol, B).await;
    assert_item_state(
        push_item(&p),
        "to",
        false,
        false,
        "carol's push after auto-approval",
    );
    recv_presence(&mut carol, "bob@localhost/b1", None).await;
    let p = recv_push_for(&mut bob, C).await;
    let i = push_item(&p);
    assert_eq!(i.attr("subscription"), Some("from"), "{p}");
    assert_eq!(i.attr("ask"), None, "{p}");
    sync(&mut carol).await;
    let seen = sync(&mut bob).await;
    assert!(
        presences(&seen, C, Some("subscribe")).is_empty(),
        "pre-approved request was shown to the contact: {}",
        show(&seen)
    );

    // Pre-approval while offline: alice asks when bob has no session.
    send_sub(&mut bob, A, "subscribed").await;
    recv_push_for(&mut bob, A).await;
    bob.close().await;
    let mut alice = online_interested(&server, ALICE, "a1").await;
    send_sub(&mut alice, B, "subscribe").await;
    recv_presence(&mut alice, B, Some("subscribed")).await;
    let item = roster_item(&mut alice, B).await.expect("item");
    assert_item_state(&item, "to", false, false, "alice's roster");
    let (_bob, seen) = online_with(&server, BOB, "b2", "<presence/>").await;
    assert!(
        presences(&seen, A, Some("subscribe")).is_empty(),
        "pre-approved request delivered at login: {}",
        show(&seen)
    );
}

#[tokio::test]
async fn subscription_stanzas_to_nonexistent_user_are_harmless() {
    let server = im_server();
    let mut alice = online_interested(&server, ALICE, "a1").await;
    for ty in ["subscribe", "subscribed", "unsubscribe", "unsubscribed"] {
        send_sub(&mut alice, "nobody@localhost", ty).await;
    }
    alice
        .send("<presence to='nobody@localhost'/><presence to='nobody@localhost/x' type='unavailable'/>")
        .await;
    let seen = sync(&mut alice).await;
    assert!(
        seen.iter()
            .all(|e| !(e.name == "presence" && e.attr("type") == Some("error"))),
        "presence error for a nonexistent user: {}",
        show(&seen)
    );
    assert!(
        seen.iter().all(|e| !(e.name == "presence"
            && e.attr("from").is_some_and(|f| f.starts_with("nobody@"))
            && e.attr("type") != Some("unsubscribed"))),
        "unexpected presence from the nonexistent user: {}",
        show(&seen)
    );
    // The server is fine and others are unaffected.
    let mut bob = online(&server, BOB, "b1").await;
    let r = bob.ping("localhost").await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
}

#[tokio::test]
async fn subscribing_to_oneself_is_ignored() {
    let server = im_server();
    let mut a1 = online_interested(&server, ALICE, "a1").await;
    let mut a2 = online_interested(&server, ALICE, "a2").await;
    sync(&mut a1).await;
    send_sub(&mut a1, A, "subscribe").await;
    send_sub(&mut a1, "alice@localhost/a2", "subscribe").await;
    sync(&mut a1).await;
    for c in [&mut a1, &mut a2] {
        let seen = sync(c).await;
        assert!(
            seen.iter()
                .all(|e| !is_push(e) && e.attr("type") != Some("subscribe")),
            "subscribing to oneself had an effect: {}",
            show(&seen)
        );
    }
    let (_, items) = roster(&mut a1).await;
    assert!(
        items.iter().all(|i| i.attr("jid") != Some(A)),
        "own JID added to the roster: {}",
        show(&items)
    );
}

// ----- presence -------------------------------------------------------------

#[tokio::test]
async fn initial_presence_broadcast_and_probes() {
    let server = im_server();
    server.register("dave", "localhost", "davepw");
    let dave = ("dave", "davepw");
    subscribe_mutual(&server, ALICE, BOB).await; // both
    subscribe_one_way(&server, CAROL, ALICE).await; // alice: from carol
    subscribe_one_way(&server, ALICE, dave).await; // alice: to dave

    let (mut b1, _) = online_with(
        &server,
        BOB,
        "b1",
        "<presence><status>one</status></presence>",
    )
    .await;
    let (mut b2, _) = online_with(
        &server,
        BOB,
        "b2",
        "<presence><show>away</show><status>two</status></presence>",
    )
    .await;
    let mut b3 = login(&server, BOB, "b3").await; // connected, never available
    let mut c1 = online(&server, CAROL, "c1").await;
    let (mut d1, _) = online_with(
        &server,
        dave,
        "d1",
        "<presence><status>dave</status></presence>",
    )
    .await;

    let (mut a1, got) = online_with(
        &server,
        ALICE,
        "a1",
        "<presence><status>alice one</status></presence>",
    )
    .await;
    // Probes: one presence per available resource of contacts with to/both.
    let p = presences(&got, "bob@localhost/b1", None);
    assert_eq!(p.len(), 1, "b1 presence once: {}", show(&got));
    assert_eq!(p[0].child_text("status"), Some("one"), "{}", p[0]);
    let p = presences(&got, "bob@localhost/b2", None);
    assert_eq!(p.len(), 1, "b2 presence once: {}", show(&got));
    assert_eq!(p[0].child_text("show"), Some("away"), "{}", p[0]);
    assert_eq!(p[0].child_text("status"), Some("two"), "{}", p[0]);
    assert!(
        presences(&got, "bob@localhost/b3", None).is_empty(),
        "presence of a never-available resource: {}",
        show(&got)
    );
    let p = presences(&got, "dave@localhost/d1", None);
    assert_eq!(p.len(), 1, "dave's presence once: {}", show(&got));
    assert!(
        presences(&got, "carol@localhost/c1", None).is_empty(),
        "got presence of carol, to whom alice is not subscribed: {}",
        show(&got)
    );
    // Own presence reflected to the sender (RFC 6121 §4.2.2).
    let own = presences(&got, "alice@localhost/a1", None);
    assert_eq!(own.len(), 1, "own initial presence once: {}", show(&got));
    assert_eq!(own[0].child_text("status"), Some("alice one"));
    for p in presences(&got, "bob@localhost/b1", None) {
        assert_eq!(p.attr("to"), Some("alice@localhost/a1"), "{p}");
    }

    // Broadcast: to from/both contacts' available resources only.
    for c in [&mut b1, &mut b2, &mut c1] {
        let p = recv_presence(c, "alice@localhost/a1", None).await;
        assert_eq!(p.child_text("status"), Some("alice one"), "{p}");
    }
    assert_no_presence_from(&mut b3, "alice@localhost/a1", "unavailable resource").await;
    assert_no_presence_from(
        &mut d1,
        "alice@localhost/a1",
        "alice only subscribed to dave",
    )
    .await;

    // A second resource: the first one sees it, and it gets probes too.
    let (mut a2, got) = online_with(
        &server,
        ALICE,
        "a2",
        "<presence><status>alice two</status></presence>",
    )
    .await;
    let p = recv_presence(&mut a1, "alice@localhost/a2", None).await;
    assert_eq!(p.child_text("status"), Some("alice two"), "{p}");
    assert_eq!(
        presences(&got, "alice@localhost/a2", None).len(),
        1,
        "{}",
        show(&got)
    );
    assert_eq!(
        presences(&got, "bob@localhost/b1", None).len(),
        1,
        "{}",
        show(&got)
    );
    assert_eq!(
        presences(&got, "bob@localhost/b2", None).len(),
        1,
        "{}",
        show(&got)
    );
    assert_eq!(
        presences(&got, "dave@localhost/d1", None).len(),
        1,
        "{}",
        show(&got)
    );
    for c in [&mut b1, &mut b2, &mut c1] {
        recv_presence(c, "alice@localhost/a2", None).await;
    }
    let seen = sync(&mut a2).await;
    assert!(
        presences(&seen, "alice@localhost/a2", None).is_empty(),
        "own presence twice: {}",
        show(&seen)
    );
}

#[tokio::test]
async fn presence_update_and_unavailable_are_broadcast() {
    let server = im_server();
    subscribe_mutual(&server, ALICE, BOB).await;
    let mut b1 = online(&server, BOB, "b1").await;
    let mut a1 = online(&server, ALICE, "a1").await;
    let mut a2 = online(&server, ALICE, "a2").await;
    sync(&mut a1).await;
    sync(&mut b1).await;

    a1.send("<presence><show>dnd</show><status>busy</status><priority>3</priority></presence>")
        .await;
    for c in [&mut b1, &mut a2] {
        let p = recv_presence(c, "alice@localhost/a1", None).await;
        assert_eq!(p.child_text("show"), Some("dnd"), "{p}");
        assert_eq!(p.child_text("status"), Some("busy"), "{p}");
        assert_eq!(p.child_text("priority"), Some("3"), "{p}");
    }

    a1.send("<presence type='unavailable'><status>bye</status></presence>")
        .await;
    for c in [&mut b1, &mut a2] {
        let p = recv_presence(c, "alice@localhost/a1", Some("unavailable")).await;
        assert_eq!(p.child_text("status"), Some("bye"), "{p}");
    }
    // a1 is connected but unavailable: bare-JID messages go to a2 only.
    let body = unique("after-unavailable");
    b1.send(&chat(A, "m1", &body)).await;
    let m = a2.recv_message().await;
    assert_eq!(m.child_text("body"), Some(body.as_str()), "{m}");
    sync(&mut b1).await;
    let seen = sync(&mut a1).await;
    assert!(
        with_body(&seen, &body).is_empty(),
        "unavailable resource got a bare-JID message: {}",
        show(&seen)
    );
    // Contacts do not get presence from the unavailable resource any more
    // (a second unavailable changes nothing).
    a1.send("<presence type='unavailable'/>").await;
    sync(&mut a1).await;
    assert_no_presence_from(&mut b1, "alice@localhost/a1", "repeated unavailable").await;

    // Available again: initial presence once more, with probes.
    a1.send("<presence/>").await;
    recv_presence(&mut b1, "alice@localhost/a1", None).await;
    recv_presence(&mut a1, "bob@localhost/b1", None).await;
}

#[tokio::test]
async fn unavailable_when_stream_is_closed() {
    let server = im_server();
    subscribe_mutual(&server, ALICE, BOB).await;
    let mut b1 = online(&server, BOB, "b1").await;
    let mut a2 = online(&server, ALICE, "a2").await;
    let mut a1 = online(&server, ALICE, "a1").await;
    sync(&mut b1).await;
    sync(&mut a2).await;
    a1.close().await;
    for c in [&mut b1, &mut a2] {
        recv_presence(c, "alice@localhost/a1", Some("unavailable")).await;
    }
}

#[tokio::test]
async fn unavailable_when_connection_drops() {
    let server = im_server();
    subscribe_mutual(&server, ALICE, BOB).await;
    let mut b1 = online(&server, BOB, "b1").await;
    let a1 = online(&server, ALICE, "a1").await;
    sync(&mut b1).await;
    drop(a1); // TCP closed without </stream:stream> or TLS close_notify
    recv_presence(&mut b1, "alice@localhost/a1", Some("unavailable")).await;
    let seen = sync(&mut b1).await;
    assert!(
        presences(&seen, "alice@localhost/a1", Some("unavailable")).is_empty(),
        "unavailable twice: {}",
        show(&seen)
    );
}

#[tokio::test]
async fn unavailable_when_replaced_by_conflicting_bind() {
    let server = im_server();
    subscribe_mutual(&server, ALICE, BOB).await;
    let mut b1 = online(&server, BOB, "b1").await;
    let mut old = online(&server, ALICE, "same").await;
    sync(&mut b1).await;
    let mut new = login(&server, ALICE, "same").await;
    assert_eq!(old.expect_stream_error().await, "conflict");
    recv_presence(&mut b1, "alice@localhost/same", Some("unavailable")).await;
    // The new session, once available, is seen again.
    new.send("<presence><status>new</status></presence>").await;
    let p = recv_presence(&mut b1, "alice@localhost/same", None).await;
    assert_eq!(p.child_text("status"), Some("new"), "{p}");
    recv_presence(&mut new, "bob@localhost/b1", None).await;
}

#[tokio::test]
async fn directed_presence_and_unavailable_on_departure() {
    let server = im_server();
    let mut c1 = online(&server, CAROL, "c1").await;
    let mut c2 = online(&server, CAROL, "c2").await;
    sync(&mut c1).await;

    // To a full JID: only that resource; later broadcasts are not sent.
    let mut a1 = online(&server, ALICE, "a1").await;
    a1.send("<presence to='carol@localhost/c1'><status>hi carol</status></presence>")
        .await;
    let p = recv_presence(&mut c1, "alice@localhost/a1", None).await;
    assert_eq!(p.child_text("status"), Some("hi carol"), "{p}");
    a1.send("<presence><status>broadcast</status></presence>")
        .await;
    sync(&mut a1).await;
    assert_no_presence_from(
        &mut c1,
        "alice@localhost/a1",
        "broadcast to a directed-only entity",
    )
    .await;
    assert_no_presence_from(&mut c2, "alice@localhost/a1", "other resource").await;
    a1.close().await;
    recv_presence(&mut c1, "alice@localhost/a1", Some("unavailable")).await;

    // To the bare JID: every available resource; told when the connection drops.
    let mut a2 = online(&server, ALICE, "a2").await;
    a2.send(&format!("<presence to='{C}'/>")).await;
    for c in [&mut c1, &mut c2] {
        recv_presence(c, "alice@localhost/a2", None).await;
    }
    drop(a2);
    for c in [&mut c1, &mut c2] {
        recv_presence(c, "alice@localhost/a2", Some("unavailable")).await;
    }

    // Directed unavailable first: no second unavailable at departure.
    let mut a3 = online(&server, ALICE, "a3").await;
    a3.send("<presence to='carol@localhost/c1'/>").await;
    recv_presence(&mut c1, "alice@localhost/a3", None).await;
    a3.send("<presence to='carol@localhost/c1' type='unavailable'/>")
        .await;
    recv_presence(&mut c1, "alice@localhost/a3", Some("unavailable")).await;
    a3.close().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_no_presence_from(&mut c1, "alice@localhost/a3", "after directed unavailable").await;
}

#[tokio::test]
async fn presence_to_nonexistent_user_is_dropped_silently() {
    let server = im_server();
    let mut a1 = online(&server, ALICE, "a1").await;
    a1.send(
        "<presence to='nobody@localhost'/>\
         <presence to='nobody@localhost/r'><status>x</status></presence>\
         <presence to='nobody@localhost' type='unavailable'/>",
    )
    .await;
    let seen = sync(&mut a1).await;
    assert!(
        seen.iter()
            .all(|e| e.name != "presence"
                || !e.attr("from").is_some_and(|f| f.starts_with("nobody@"))),
        "answer to presence for a nonexistent user: {}",
        show(&seen)
    );
}

// ----- messages ---------------------------------------------------------------

#[tokio::test]
async fn bare_jid_messages_follow_priority() {
    let server = im_server();
    let mut bob = online(&server, BOB, "b1").await;
    let (mut r1, _) = online_with(
        &server,
        ALICE,
        "r1",
        "<presence><priority>5</priority></presence>",
    )
    .await;
    let (mut r2, _) = online_with(
        &server,
        ALICE,
        "r2",
        "<presence><priority>1</priority></presence>",
    )
    .await;
    let (mut r3, _) = online_with(
        &server,
        ALICE,
        "r3",
        "<presence><priority>-1</priority></presence>",
    )
    .await;
    let mut r4 = login(&server, ALICE, "r4").await; // no presence at all

    // Highest priority wins; negative and presence-less resources never get it.
    let m1 = unique("prio-5");
    bob.send(&chat(A, "p1", &m1)).await;
    let normal = unique("prio-5-normal");
    bob.send(&format!(
        "<message to='{A}' id='p1n'><body>{normal}</body></message>"
    ))
    .await;
    sync(&mut bob).await;
    let got = sync(&mut r1).await;
    assert_eq!(with_body(&got, &m1).len(), 1, "{}", show(&got));
    assert_eq!(with_body(&got, &normal).len(), 1, "{}", show(&got));
    for m in with_body(&got, &m1)
        .into_iter()
        .chain(with_body(&got, &normal))
    {
        // "the server MUST NOT rewrite the 'to' attribute" (§8.5.2.1.1).
        assert_eq!(m.attr("to"), Some(A), "bare-JID message readdressed: {m}");
    }
    for c in [&mut r2, &mut r3, &mut r4] {
        let got = sync(c).await;
        assert!(
            with_body(&got, &m1).is_empty() && with_body(&got, &normal).is_empty(),
            "{} (not the top priority) got a bare-JID message: {}",
            c.full_jid(),
            show(&got)
        );
    }

    // r1 drops below zero: r2 is now the one.
    r1.send("<presence><priority>-2</priority></presence>")
        .await;
    sync(&mut r1).await;
    let m2 = unique("prio-1");
    bob.send(&chat(A, "p2", &m2)).await;
    sync(&mut bob).await;
    let got = sync(&mut r2).await;
    assert_eq!(with_body(&got, &m2).len(), 1, "{}", show(&got));
    for c in [&mut r1, &mut r3, &mut r4] {
        let got = sync(c).await;
        assert!(
            with_body(&got, &m2).is_empty(),
            "{}: {}",
            c.full_jid(),
            show(&got)
        );
    }

    // Equal top priorities: at least one of them, never a negative one.
    let (mut r5, _) = online_with(
        &server,
        ALICE,
        "r5",
        "<presence><priority>1</priority></presence>",
    )
    .await;
    let m3 = unique("prio-tie");
    bob.send(&chat(A, "p3", &m3)).await;
    sync(&mut bob).await;
    let n2 = with_body(&sync(&mut r2).await, &m3).len();
    let n5 = with_body(&sync(&mut r5).await, &m3).len();
    assert!(
        n2 <= 1 && n5 <= 1 && n2 + n5 >= 1,
        "tie: r2 got {n2}, r5 got {n5}"
    );
    for c in [&mut r1, &mut r3, &mut r4] {
        let got = sync(c).await;
        assert!(
            with_body(&got, &m3).is_empty(),
            "{}: {}",
            c.full_jid(),
            show(&got)
        );
    }

    // Full JIDs reach their resource whatever its priority or presence.
    for (c, jid) in [
        (&mut r3, "alice@localhost/r3"),
        (&mut r4, "alice@localhost/r4"),
    ] {
        let m = unique("full");
        bob.send(&chat(jid, "f", &m)).await;
        let got = c.recv_message().await;
        assert_eq!(got.child_text("body"), Some(m.as_str()), "{got}");
        assert_eq!(got.attr("to"), Some(jid), "{got}");
    }

    // Every available resource negative: no resource gets a bare-JID
    // message; it is handled as for an account with no available resource
    // (RFC 6121 §8.5.2.1.1): stored offline or bounced.
    r2.send("<presence><priority>-1</priority></presence>")
        .await;
    r5.send("<presence><priority>-1</priority></presence>")
        .await;
    sync(&mut r2).await;
    sync(&mut r5).await;
    let m4 = unique("all-negative");
    bob.send(&chat(A, "p4", &m4)).await;
    let bounced = sync(&mut bob).await;
    let bounced = bounced
        .iter()
        .any(|e| e.attr("id") == Some("p4") && e.attr("type") == Some("error"));
    for c in [&mut r1, &mut r2, &mut r3, &mut r4, &mut r5] {
        let got = sync(c).await;
        assert!(
            with_body(&got, &m4).is_empty(),
            "negative-priority {} got a bare-JID message: {}",
            c.full_jid(),
            show(&got)
        );
    }
    if !bounced {
        let (_r6, got) = online_with(&server, ALICE, "r6", "<presence/>").await;
        assert_eq!(
            with_body(&got, &m4).len(),
            1,
            "message for all-negative resources neither bounced nor stored: {}",
            show(&got)
        );
    }
}

#[tokio::test]
async fn message_to_full_jid_rules() {
    let server = im_server();
    let mut bob = online(&server, BOB, "b1").await;
    let (mut r1, _) = online_with(
        &server,
        ALICE,
        "r1",
        "<presence><priority>2</priority></presence>",
    )
    .await;
    let mut r2 = online(&server, ALICE, "r2").await;

    // Online full JID: that resource only.
    let m = unique("to-r2");
    bob.send(&chat("alice@localhost/r2", "x1", &m)).await;
    let got = r2.recv_message().await;
    assert_eq!(got.child_text("body"), Some(m.as_str()), "{got}");
    assert_eq!(got.attr("from"), Some("bob@localhost/b1"), "{got}");
    sync(&mut bob).await;
    let seen = sync(&mut r1).await;
    assert!(with_body(&seen, &m).is_empty(), "{}", show(&seen));

    // Unknown resource, chat: handled like the bare JID, i.e. to the most
    // available resource (r1, priority 2), not to r2 (§8.5.3.2.1).
    let m = unique("chat");
    bob.send(&format!(
        "<message to='alice@localhost/nope' type='chat' id='x2'><body>{m}</body></message>"
    ))
    .await;
    let got = r1.recv_message().await;
    assert_eq!(got.child_text("body"), Some(m.as_str()), "{got}");
    sync(&mut bob).await;
    let seen = sync(&mut r2).await;
    assert!(with_body(&seen, &m).is_empty(), "{}", show(&seen));
}

#[tokio::test]
async fn normal_and_headline_to_unknown_resource_are_not_delivered() {
    // "For a message stanza of type normal, groupchat, or headline, the
    // server MUST either (a) silently ignore the stanza or (b) return an
    // error stanza to the sender" (RFC 6121 §8.5.3.2.1): never delivered to
    // another resource.
    let server = im_server();
    let mut bob = online(&server, BOB, "b1").await;
    let (mut r1, _) = online_with(
        &server,
        ALICE,
        "r1",
        "<presence><priority>2</priority></presence>",
    )
    .await;
    let mut r2 = online(&server, ALICE, "r2").await;
    let mut violations = Vec::new();
    for (ty, id) in [("normal", "x3"), ("headline", "x4"), ("", "x5")] {
        let m = unique("unknown-res");
        let type_attr = if ty.is_empty() {
            String::new()
        } else {
            format!(" type='{ty}'")
        };
        bob.send(&format!(
            "<message to='alice@localhost/nope'{type_attr} id='{id}'><body>{m}</body></message>"
        ))
        .await;
        let back = sync(&mut bob).await;
        for e in back.iter().filter(|e| e.attr("id") == Some(id)) {
            assert_eq!(
                e.attr("type"),
                Some("error"),
                "{ty:?}: unexpected answer: {e}"
            );
        }
        for c in [&mut r1, &mut r2] {
            let seen = sync(c).await;
            for e in with_body(&seen, &m) {
                violations.push(format!("type {ty:?}: {} got {e}", c.full_jid()));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "messages to the unknown resource alice@localhost/nope must be ignored or bounced \
         (RFC 6121 §8.5.3.2.1):\n  {}",
        violations.join("\n  ")
    );
}

#[tokio::test]
async fn groupchat_to_a_user_is_service_unavailable() {
    let server = im_server();
    let mut bob = online(&server, BOB, "b1").await;
    let mut alice = online(&server, ALICE, "a1").await;
    // Bare JID with an available resource (§8.5.2.1.1) or without any
    // session (§8.5.2.2.1): an error, SHOULD be <service-unavailable/>.
    for (to, id) in [(A, "g1"), (C, "g3")] {
        bob.send(&format!(
            "<message to='{to}' type='groupchat' id='{id}'><body>gc</body></message>"
        ))
        .await;
        expect_message_error(&mut bob, id, to, "service-unavailable").await;
    }
    // Unknown resource (§8.5.3.2.1): ignored or an error.
    bob.send(
        "<message to='alice@localhost/nope' type='groupchat' id='g2'><body>gc</body></message>",
    )
    .await;
    let back = sync(&mut bob).await;
    for e in back.iter().filter(|e| e.attr("id") == Some("g2")) {
        assert_eq!(e.attr("type"), Some("error"), "{e}");
    }
    let seen = sync(&mut alice).await;
    assert!(
        seen.iter().all(|e| e.name != "message"),
        "groupchat to a bare JID was delivered: {}",
        show(&seen)
    );
    // To the full JID of a connected resource it is delivered (§8.5.3.1).
    bob.send(
        "<message to='alice@localhost/a1' type='groupchat' id='g4'><body>gc4</body></message>",
    )
    .await;
    let m = alice.recv_message().await;
    assert_eq!(m.child_text("body"), Some("gc4"), "{m}");
}

#[tokio::test]
async fn message_to_nonexistent_user_and_error_messages() {
    let server = im_server();
    let mut bob = online(&server, BOB, "b1").await;
    for (to, id, ty) in [
        ("nobody@localhost", "n1", "chat"),
        ("nobody@localhost/r", "n2", "normal"),
    ] {
        bob.send(&format!(
            "<message to='{to}' type='{ty}' id='{id}'><body>hello?</body></message>"
        ))
        .await;
        expect_message_error(&mut bob, id, to, "service-unavailable").await;
    }
    // Errors are never answered with errors, wherever they go.
    let err = "<error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>";
    for (to, id) in [
        ("nobody@localhost", "e1"),
        ("alice@localhost", "e2"),
        ("alice@localhost/nope", "e3"),
        ("localhost/nope", "e4"),
    ] {
        bob.send(&format!(
            "<message to='{to}' type='error' id='{id}'><body>err</body>{err}</message>"
        ))
        .await;
    }
    let seen = sync(&mut bob).await;
    assert!(
        seen.iter().all(|e| e.name != "message"),
        "error messages were answered: {}",
        show(&seen)
    );
    // Error messages to an offline user are not stored either.
    let (_alice, got) = online_with(&server, ALICE, "a1", "<presence/>").await;
    assert!(
        got.iter().all(|e| e.name != "message"),
        "error message stored offline: {}",
        show(&got)
    );
}
