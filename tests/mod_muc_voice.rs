//! XEP-0045 voice requests (§7.13, §8.6) and the room size limit against
//! the real server: a visitor's request reaches the moderators as an
//! approval form; a second request within `voice_request_min_interval`
//! is `resource-constraint`; with `muc#roomconfig_allowvoicerequests` off
//! it is `forbidden`; a participant's approval is `forbidden`; a
//! moderator's approval makes the visitor a participant; a request from a
//! non-occupant or from someone with voice is `not-acceptable`; a full
//! room (`muc#roomconfig_maxusers`) refuses one more occupant with
//! `service-unavailable`, except admins and owners up to
//! `max_users_admin_threshold`; `min_message_interval` refuses a groupchat
//! message sent too soon with `resource-constraint`; `max_rooms_per_user`
//! refuses creating one more room with `not-allowed`.

use crate::common;
use crate::mod_muc_archive::{configure, groupchat_from, iq, join, room};

use common::im::{login, ALICE, BOB, CAROL};
use common::Client;

const MUC: &str = "http://jabber.org/protocol/muc";
const MUC_ADMIN: &str = "http://jabber.org/protocol/muc#admin";
const NS_REQUEST: &str = "http://jabber.org/protocol/muc#request";

fn request(r: &str, id: &str) -> String {
    format!(
        "<message to='{r}' id='{id}'><x xmlns='jabber:x:data' type='submit'>\
         <field var='FORM_TYPE'><value>{NS_REQUEST}</value></field>\
         <field var='muc#role'><value>participant</value></field></x></message>"
    )
}

fn approval(r: &str, id: &str, nick: &str, allow: bool) -> String {
    format!(
        "<message to='{r}' id='{id}'><x xmlns='jabber:x:data' type='submit'>\
         <field var='FORM_TYPE'><value>{NS_REQUEST}</value></field>\
         <field var='muc#role'><value>participant</value></field>\
         <field var='muc#roomnick'><value>{nick}</value></field>\
         <field var='muc#request_allow'><value>{allow}</value></field></x></message>"
    )
}

/// The role in the muc#user item of a presence from `room/nick`.
async fn role_of(c: &mut Client, r: &str, nick: &str) -> String {
    let full = format!("{r}/{nick}");
    let p = c
        .recv_where(&format!("presence of {nick}"), |e| {
            e.name == "presence"
                && e.attr("from") == Some(full.as_str())
                && e.attr("type").is_none()
        })
        .await;
    p.child_ns("x", "http://jabber.org/protocol/muc#user")
        .and_then(|x| x.child("item"))
        .and_then(|i| i.attr("role"))
        .unwrap_or("")
        .to_string()
}

#[tokio::test]
async fn voice_requests_and_room_size() {
    let server = common::im::im_server();
    let r = room("hushed");
    let mut a = login(&server, ALICE, "pc").await;
    let mut b = login(&server, BOB, "pc").await;
    let mut c = login(&server, CAROL, "pc").await;
    join(&mut a, &r, "alice", "").await;
    let ok = configure(&mut a, &r, &[("members_by_default", "0")]).await;
    assert_eq!(ok.attr("type"), Some("result"), "{ok}");

    // Not in the room: nothing to ask.
    c.send(&request(&r, "v0")).await;
    c.expect_message_error("v0", "not-acceptable").await;

    join(&mut b, &r, "bob", "").await;
    assert_eq!(role_of(&mut a, &r, "bob").await, "visitor");
    b.send(&format!(
        "<message type='groupchat' to='{r}' id='g0'><body>may I?</body></message>"
    ))
    .await;
    b.expect_message_error("g0", "forbidden").await;

    // The request reaches the moderator as an approval form.
    b.send(&request(&r, "v1")).await;
    let form = a
        .recv_where("the approval form", |e| {
            e.name == "message"
                && e.attr("from") == Some(r.as_str())
                && e.to_string().contains(NS_REQUEST)
        })
        .await;
    let text = form.to_string();
    assert!(text.contains("muc#request_allow"), "{form}");
    assert!(text.contains(&b.full_jid()), "{form}");
    assert!(text.contains(">bob<"), "{form}");
    // Again at once: too soon.
    b.send(&request(&r, "v2")).await;
    b.expect_message_error("v2", "resource-constraint").await;
    // Requests switched off.
    let ok = configure(&mut a, &r, &[("muc#roomconfig_allowvoicerequests", "0")]).await;
    assert_eq!(ok.attr("type"), Some("result"), "{ok}");
    b.send(&request(&r, "v3")).await;
    b.expect_message_error("v3", "forbidden").await;

    // Carol, a member (a participant), may not approve.
    let set = iq(
        &mut a,
        "set",
        &r,
        &format!(
            "<query xmlns='{MUC_ADMIN}'><item jid='carol@localhost' affiliation='member'/></query>"
        ),
    )
    .await;
    assert_eq!(set.attr("type"), Some("result"), "{set}");
    join(&mut c, &r, "carol", "").await;
    c.send(&approval(&r, "ap1", "bob", true)).await;
    c.expect_message_error("ap1", "forbidden").await;
    // Carol has voice: no request from her.
    c.send(&request(&r, "v4")).await;
    c.expect_message_error("v4", "not-acceptable").await;

    // The moderator approves: Bob is a participant and speaks.
    a.send(&approval(&r, "ap2", "bob", true)).await;
    assert_eq!(role_of(&mut c, &r, "bob").await, "participant");
    b.send(&format!(
        "<message type='groupchat' to='{r}' id='g1'><body>thanks</body></message>"
    ))
    .await;
    groupchat_from(&mut a, &format!("{r}/bob"), "thanks").await;

    // Room size: three occupants at most, so nobody else gets in.
    let ok = configure(&mut a, &r, &[("muc#roomconfig_maxusers", "3")]).await;
    assert_eq!(ok.attr("type"), Some("result"), "{ok}");
    server.register("dave", "localhost", "davepw");
    let mut d = login(&server, ("dave", "davepw"), "pc").await;
    d.send(&format!(
        "<presence to='{r}/dave'><x xmlns='{MUC}'/></presence>"
    ))
    .await;
    let e = d
        .recv_where("refused join", |e| {
            e.name == "presence" && e.attr("type") == Some("error")
        })
        .await;
    assert_eq!(e.stanza_error().expect("error").1, "service-unavailable");
}

/// `min_message_interval` and `max_users_admin_threshold` (ejabberd's).
#[tokio::test]
async fn message_rate_and_admins_beyond_a_full_room() {
    let server = common::Server::start_with_yaml_edit(common::Config::default(), |y| {
        y.replace(
            "  mod_muc: {}\n",
            "  mod_muc:\n    min_message_interval: 1.5\n    max_users_admin_threshold: 1\n    max_rooms_per_user: 1\n",
        )
    });
    server.register(ALICE.0, "localhost", ALICE.1);
    server.register(BOB.0, "localhost", BOB.1);
    let r = room("limited");
    let mut a = login(&server, ALICE, "pc").await;
    join(&mut a, &r, "alice", "").await;
    // Two messages at once: the second is refused, not broadcast.
    for (id, body) in [("m1", "one"), ("m2", "two")] {
        a.send(&format!(
            "<message type='groupchat' to='{r}' id='{id}'><body>{body}</body></message>"
        ))
        .await;
    }
    groupchat_from(&mut a, &format!("{r}/alice"), "one").await;
    a.expect_message_error("m2", "resource-constraint").await;
    tokio::time::sleep(std::time::Duration::from_millis(1600)).await;
    a.send(&format!(
        "<message type='groupchat' to='{r}' id='m3'><body>three</body></message>"
    ))
    .await;
    groupchat_from(&mut a, &format!("{r}/alice"), "three").await;

    // A room for one: Bob stays out; the owner's second client gets in
    // (threshold 1), her third does not.
    let ok = configure(&mut a, &r, &[("muc#roomconfig_maxusers", "1")]).await;
    assert_eq!(ok.attr("type"), Some("result"), "{ok}");
    let mut b = login(&server, BOB, "pc").await;
    b.send(&format!(
        "<presence to='{r}/bob'><x xmlns='{MUC}'/></presence>"
    ))
    .await;
    let e = b
        .recv_where("refused join", |e| {
            e.name == "presence" && e.attr("type") == Some("error")
        })
        .await;
    assert_eq!(e.stanza_error().expect("error").1, "service-unavailable");
    let mut a2 = login(&server, ALICE, "phone").await;
    join(&mut a2, &r, "alice2", "").await;
    let mut a3 = login(&server, ALICE, "tablet").await;
    a3.send(&format!(
        "<presence to='{r}/alice3'><x xmlns='{MUC}'/></presence>"
    ))
    .await;
    let e = a3
        .recv_where("refused join", |e| {
            e.name == "presence" && e.attr("type") == Some("error")
        })
        .await;
    assert_eq!(e.stanza_error().expect("error").1, "service-unavailable");

    // max_rooms_per_user: 1 — Alice owns one room and may not create
    // another; Bob may.
    a.send(&format!(
        "<presence to='{}/alice'><x xmlns='{MUC}'/></presence>",
        room("second")
    ))
    .await;
    let e = a
        .recv_where("refused creation", |e| {
            e.name == "presence" && e.attr("type") == Some("error")
        })
        .await;
    assert_eq!(e.stanza_error().expect("error").1, "not-allowed");
    assert!(e.to_string().contains("max_rooms_per_user"), "{e}");
    join(&mut b, &room("second"), "bob", "").await;
}
