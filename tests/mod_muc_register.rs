//! Nickname registration in a room (XEP-0045 §7.10, `jabber:iq:register`
//! on the room JID) and the registered nick lookup (§7.12, disco#info node
//! `x-roomuser-item`) against the real server: the `muc#register` form;
//! a registration makes the registrant a member of an open room; a get
//! afterwards says `<registered/>` with the nick; the nick is reserved
//! (another account registering it, joining with it or changing to it:
//! `conflict`); bad forms (none, a wrong FORM_TYPE: `bad-request`; an
//! empty nick: `not-acceptable`); a members-only room refuses
//! non-members (`registration-required`) and outcasts (`forbidden`);
//! `<remove/>` and a lost affiliation give the nick up; registrations
//! survive a restart of a persistent room.

use crate::common;
use crate::mod_muc_archive::{configure, error_condition, iq, join, room};

use common::im::{login, ALICE, BOB, CAROL};
use common::muc::join_refused;
use common::{Client, Element};

const REGISTER: &str = "jabber:iq:register";
const MUC_ADMIN: &str = "http://jabber.org/protocol/muc#admin";
const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const MUC_REGISTER: &str = "http://jabber.org/protocol/muc#register";

pub fn register_form(nick: &str) -> String {
    format!(
        "<query xmlns='{REGISTER}'><x xmlns='jabber:x:data' type='submit'>\
         <field var='FORM_TYPE'><value>{MUC_REGISTER}</value></field>\
         <field var='muc#register_roomnick'><value>{nick}</value></field></x></query>"
    )
}

pub async fn register(c: &mut Client, r: &str, nick: &str) -> Element {
    iq(c, "set", r, &register_form(nick)).await
}

/// The registered nick the room reports (§7.12), if any.
async fn roomuser_nick(c: &mut Client, r: &str) -> Option<String> {
    let a = iq(
        c,
        "get",
        r,
        &format!("<query xmlns='{DISCO_INFO}' node='x-roomuser-item'/>"),
    )
    .await;
    assert_eq!(a.attr("type"), Some("result"), "{a}");
    a.child("query")
        .and_then(|q| q.child("identity"))
        .and_then(|i| i.attr("name"))
        .map(str::to_string)
}

async fn members(c: &mut Client, r: &str) -> String {
    let a = iq(
        c,
        "get",
        r,
        &format!("<query xmlns='{MUC_ADMIN}'><item affiliation='member'/></query>"),
    )
    .await;
    assert_eq!(a.attr("type"), Some("result"), "{a}");
    a.to_string()
}

#[tokio::test]
async fn nick_registration_reserves_the_nick() {
    let mut server = common::im::im_server();
    let r = room("club");
    let mut b = login(&server, BOB, "pc").await;
    join(&mut b, &r, "bob", "").await;
    let ok = configure(&mut b, &r, &[("muc#roomconfig_persistentroom", "1")]).await;
    assert_eq!(ok.attr("type"), Some("result"), "{ok}");
    let mut a = login(&server, ALICE, "pc").await;
    let mut c = login(&server, CAROL, "pc").await;

    // The room says it takes registrations; the form asks for a nick.
    let info = iq(&mut a, "get", &r, &format!("<query xmlns='{DISCO_INFO}'/>")).await;
    assert!(info.to_string().contains(REGISTER), "{info}");
    let form = iq(&mut a, "get", &r, &format!("<query xmlns='{REGISTER}'/>")).await;
    assert_eq!(form.attr("type"), Some("result"), "{form}");
    let text = form.to_string();
    assert!(text.contains("muc#register_roomnick"), "{form}");
    assert!(text.contains(MUC_REGISTER), "{form}");
    assert!(!text.contains("<registered"), "{form}");
    assert_eq!(roomuser_nick(&mut a, &r).await, None);

    // Bad forms.
    let e = iq(&mut a, "set", &r, &format!("<query xmlns='{REGISTER}'/>")).await;
    assert_eq!(error_condition(&e), "bad-request");
    let e = iq(
        &mut a,
        "set",
        &r,
        &register_form("x").replace(MUC_REGISTER, "urn:example:other"),
    )
    .await;
    assert_eq!(error_condition(&e), "bad-request");
    let e = register(&mut a, &r, "  ").await;
    assert_eq!(error_condition(&e), "not-acceptable");

    // Alice registers: the nick is hers, and she is a member.
    let ok = register(&mut a, &r, "wonder").await;
    assert_eq!(ok.attr("type"), Some("result"), "{ok}");
    assert_eq!(roomuser_nick(&mut a, &r).await.as_deref(), Some("wonder"));
    assert_eq!(roomuser_nick(&mut c, &r).await, None);
    let again = iq(&mut a, "get", &r, &format!("<query xmlns='{REGISTER}'/>")).await;
    assert!(again.to_string().contains("<registered"), "{again}");
    assert!(again.to_string().contains(">wonder<"), "{again}");
    assert!(members(&mut b, &r).await.contains("alice@localhost"));

    // Nobody else takes it: not by registering, joining, or changing nick.
    let e = register(&mut c, &r, "wonder").await;
    assert_eq!(error_condition(&e), "conflict");
    assert_eq!(join_refused(&mut c, &r, "wonder").await, "conflict");
    join(&mut c, &r, "carol", "").await;
    c.send(&format!("<presence to='{r}/wonder'/>")).await;
    let e = c
        .recv_where("nick change refused", |e| {
            e.name == "presence" && e.attr("type") == Some("error")
        })
        .await;
    assert_eq!(e.stanza_error().expect("error").1, "conflict");
    // A nick in use by another occupant cannot be registered either.
    let e = register(&mut a, &r, "carol").await;
    assert_eq!(error_condition(&e), "conflict");
    // Alice herself joins with it.
    join(&mut a, &r, "wonder", "").await;

    // The registration survives a restart (the room is persistent).
    drop((a, b, c));
    server.stop();
    server.restart();
    let mut a = login(&server, ALICE, "pc").await;
    let mut b = login(&server, BOB, "pc").await;
    let mut c = login(&server, CAROL, "pc").await;
    assert_eq!(roomuser_nick(&mut a, &r).await.as_deref(), Some("wonder"));
    assert_eq!(join_refused(&mut c, &r, "wonder").await, "conflict");

    // <remove/> gives it up; then Carol may have it.
    let ok = iq(
        &mut a,
        "set",
        &r,
        &format!("<query xmlns='{REGISTER}'><remove/></query>"),
    )
    .await;
    assert_eq!(ok.attr("type"), Some("result"), "{ok}");
    assert_eq!(roomuser_nick(&mut a, &r).await, None);
    let ok = register(&mut c, &r, "wonder").await;
    assert_eq!(ok.attr("type"), Some("result"), "{ok}");

    // Members-only: non-members cannot register; outcasts neither; an
    // account whose affiliation is taken loses its nick.
    let ok = configure(&mut b, &r, &[("muc#roomconfig_membersonly", "1")]).await;
    assert_eq!(ok.attr("type"), Some("result"), "{ok}");
    server.register("dave", "localhost", "davepw");
    let mut d = login(&server, ("dave", "davepw"), "pc").await;
    let e = iq(&mut d, "get", &r, &format!("<query xmlns='{REGISTER}'/>")).await;
    assert_eq!(error_condition(&e), "registration-required");
    let e = register(&mut d, &r, "dave").await;
    assert_eq!(error_condition(&e), "registration-required");
    let set = iq(
        &mut b,
        "set",
        &r,
        &format!(
            "<query xmlns='{MUC_ADMIN}'><item jid='dave@localhost' affiliation='outcast'/></query>"
        ),
    )
    .await;
    assert_eq!(set.attr("type"), Some("result"), "{set}");
    let e = register(&mut d, &r, "dave").await;
    assert_eq!(error_condition(&e), "forbidden");
    let set = iq(
        &mut b,
        "set",
        &r,
        &format!(
            "<query xmlns='{MUC_ADMIN}'><item jid='carol@localhost' affiliation='none'/></query>"
        ),
    )
    .await;
    assert_eq!(set.attr("type"), Some("result"), "{set}");
    let set = iq(
        &mut b,
        "set",
        &r,
        &format!(
            "<query xmlns='{MUC_ADMIN}'><item jid='carol@localhost' affiliation='member'/></query>"
        ),
    )
    .await;
    assert_eq!(set.attr("type"), Some("result"), "{set}");
    assert_eq!(roomuser_nick(&mut c, &r).await, None);
}
