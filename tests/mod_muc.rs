//! XEP-0045 Multi-User Chat (`mod_muc`) against the real server: the
//! service on `conference.localhost`, joining (creation, occupants'
//! presence first, own presence with 110, history, subject), groupchat and
//! private messages, nick changes, leaving (also by ending the session),
//! kick/ban, members-only and password-protected rooms, the configuration
//! form, destroy, persistence across a restart, disco of the service and of
//! rooms, XEP-0249 direct and mediated invitations.

use crate::common;

use common::im::{login, ALICE, BOB, CAROL};
use common::{Client, Element};

const SERVICE: &str = "conference.localhost";
const MUC: &str = "http://jabber.org/protocol/muc";
const MUC_USER: &str = "http://jabber.org/protocol/muc#user";
const MUC_ADMIN: &str = "http://jabber.org/protocol/muc#admin";
const MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";
const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";

fn room(name: &str) -> String {
    format!("{name}@{SERVICE}")
}

/// The status codes in a stanza's muc#user `<x/>`.
fn codes(e: &Element) -> Vec<String> {
    e.child_ns("x", MUC_USER)
        .map(|x| {
            x.children_named("status")
                .filter_map(|s| s.attr("code").map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The muc#user `<item/>` of a presence.
fn item(e: &Element) -> &Element {
    e.child_ns("x", MUC_USER)
        .and_then(|x| x.child("item"))
        .unwrap_or_else(|| panic!("no muc#user item in {e}"))
}

fn is_subject(e: &Element, room_jid: &str) -> bool {
    e.name == "message"
        && e.child("subject").is_some()
        && e.child("body").is_none()
        && e.attr("from")
            .is_some_and(|f| f == room_jid || f.starts_with(&format!("{room_jid}/")))
}

/// Sends a join presence and returns everything up to the subject message
/// (the end of the join sequence).
async fn join(c: &mut Client, room_jid: &str, nick: &str, x_inner: &str) -> Vec<Element> {
    c.send(&format!(
        "<presence to='{room_jid}/{nick}'><x xmlns='{MUC}'>{x_inner}</x></presence>"
    ))
    .await;
    let mut got = Vec::new();
    for _ in 0..200 {
        let e = c
            .recv_where("the join sequence", |e| {
                e.attr("from")
                    .is_some_and(|f| f == room_jid || f.starts_with(&format!("{room_jid}/")))
            })
            .await;
        if e.name == "presence" && e.attr("type") == Some("error") {
            panic!("join refused: {e}");
        }
        let done = is_subject(&e, room_jid);
        got.push(e);
        if done {
            return got;
        }
    }
    panic!("no subject after 200 stanzas");
}

/// Sends a join presence that must be refused; returns the error condition.
async fn join_refused(c: &mut Client, room_jid: &str, nick: &str, x_inner: &str) -> String {
    c.send(&format!(
        "<presence to='{room_jid}/{nick}'><x xmlns='{MUC}'>{x_inner}</x></presence>"
    ))
    .await;
    let full = format!("{room_jid}/{nick}");
    let e = c
        .recv_where("a presence error", |e| {
            e.name == "presence" && e.attr("from") == Some(&full) && e.attr("type") == Some("error")
        })
        .await;
    e.stanza_error().expect("error").1
}

/// A presence from `from` (exact full room JID) with `type` (None: available).
async fn presence_from(c: &mut Client, from: &str, ty: Option<&str>) -> Element {
    c.recv_where(&format!("presence from {from} type {ty:?}"), |e| {
        e.name == "presence" && e.attr("from") == Some(from) && e.attr("type") == ty
    })
    .await
}

async fn iq(c: &mut Client, kind: &str, to: &str, inner: &str) -> Element {
    let id = c.id();
    c.request(
        &format!("<iq type='{kind}' to='{to}' id='{id}'>{inner}</iq>"),
        &id,
    )
    .await
}

fn assert_result(e: &Element) {
    assert_eq!(e.attr("type"), Some("result"), "{e}");
}

fn error_condition(e: &Element) -> String {
    assert_eq!(e.attr("type"), Some("error"), "{e}");
    e.stanza_error().expect("error").1
}

/// Submit the room configuration with these (var, value) fields.
async fn configure(c: &mut Client, room_jid: &str, fields: &[(&str, &str)]) -> Element {
    let mut x = "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>".to_string();
    for (var, value) in fields {
        x.push_str(&format!(
            "<field var='{var}'><value>{value}</value></field>"
        ));
    }
    x.push_str("</x>");
    iq(
        c,
        "set",
        room_jid,
        &format!("<query xmlns='{MUC_OWNER}'>{x}</query>"),
    )
    .await
}

async fn groupchat(c: &mut Client, room_jid: &str, id: &str, body: &str) {
    c.send(&format!(
        "<message type='groupchat' to='{room_jid}' id='{id}'><body>{body}</body></message>"
    ))
    .await;
}

async fn groupchat_from(c: &mut Client, from: &str, body: &str) -> Element {
    c.recv_where(&format!("groupchat {body} from {from}"), |e| {
        e.name == "message"
            && e.attr("type") == Some("groupchat")
            && e.attr("from") == Some(from)
            && e.child_text("body") == Some(body)
    })
    .await
}

async fn features(c: &mut Client, jid: &str) -> Vec<String> {
    let r = iq(c, "get", jid, &format!("<query xmlns='{DISCO_INFO}'/>")).await;
    assert_result(&r);
    r.child("query")
        .expect("query")
        .children_named("feature")
        .filter_map(|f| f.attr("var").map(str::to_string))
        .collect()
}

async fn items(c: &mut Client, jid: &str) -> Vec<String> {
    let r = iq(c, "get", jid, &format!("<query xmlns='{DISCO_ITEMS}'/>")).await;
    assert_result(&r);
    r.child("query")
        .expect("query")
        .children_named("item")
        .filter_map(|f| f.attr("jid").map(str::to_string))
        .collect()
}

#[tokio::test]
async fn join_history_subject_messages_nick_change_and_leave() {
    let server = common::im::im_server();
    let r = room("lounge");
    let mut a = login(&server, ALICE, "pc").await;
    let mut b = login(&server, BOB, "pc").await;
    let mut c = login(&server, CAROL, "pc").await;

    // Alice creates the room: her own presence says 110 and 201, she owns it.
    let got = join(&mut a, &r, "alice", "").await;
    assert_eq!(got.len(), 2, "{got:?}");
    let me = &got[0];
    assert_eq!(me.attr("from"), Some(format!("{r}/alice").as_str()));
    let mut cs = codes(me);
    cs.sort();
    assert_eq!(cs, ["110", "201"], "{me}");
    assert_eq!(item(me).attr("affiliation"), Some("owner"));
    assert_eq!(item(me).attr("role"), Some("moderator"));
    // The (empty) subject ends the join.
    assert_eq!(got[1].child_text("subject"), Some(""), "{}", got[1]);
    // The instant room (XEP-0045 §10.1.2) is accepted.
    let reply = iq(
        &mut a,
        "set",
        &r,
        &format!("<query xmlns='{MUC_OWNER}'><x xmlns='jabber:x:data' type='submit'/></query>"),
    )
    .await;
    assert_result(&reply);

    // Messages come back to the sender from her room JID, with her id.
    for i in 1..=3 {
        groupchat(&mut a, &r, &format!("m{i}"), &format!("hello {i}")).await;
        let echo = groupchat_from(&mut a, &format!("{r}/alice"), &format!("hello {i}")).await;
        assert_eq!(echo.attr("id"), Some(format!("m{i}").as_str()));
    }
    // Subject change.
    a.send(&format!(
        "<message type='groupchat' to='{r}'><subject>Topic &amp; more</subject></message>"
    ))
    .await;
    a.recv_where("the new subject", |e| {
        e.child_text("subject") == Some("Topic & more")
    })
    .await;

    // Bob joins: Alice's presence first (no real JID: semi-anonymous), then
    // his own (110), the history with delays, then the subject.
    let got = join(&mut b, &r, "bob", "").await;
    let kinds: Vec<String> = got
        .iter()
        .map(|e| format!("{} {}", e.name, e.attr("from").unwrap_or("")))
        .collect();
    assert_eq!(
        kinds,
        [
            format!("presence {r}/alice"),
            format!("presence {r}/bob"),
            format!("message {r}/alice"),
            format!("message {r}/alice"),
            format!("message {r}/alice"),
            format!("message {r}/alice"),
        ],
        "{got:?}"
    );
    assert_eq!(item(&got[0]).attr("affiliation"), Some("owner"));
    assert_eq!(item(&got[0]).attr("jid"), None, "{}", got[0]);
    assert_eq!(codes(&got[1]), ["110"]);
    assert_eq!(item(&got[1]).attr("role"), Some("participant"));
    for (i, m) in got[2..5].iter().enumerate() {
        assert_eq!(
            m.child_text("body"),
            Some(format!("hello {}", i + 1).as_str())
        );
        let delay = m.child_ns("delay", "urn:xmpp:delay").expect("delay");
        assert_eq!(delay.attr("from"), Some(r.as_str()));
        assert!(delay.attr("stamp").is_some());
    }
    assert_eq!(got[5].child_text("subject"), Some("Topic & more"));
    // Alice, a moderator, sees Bob's real JID.
    let p = presence_from(&mut a, &format!("{r}/bob"), None).await;
    assert!(
        item(&p)
            .attr("jid")
            .is_some_and(|j| j.starts_with("bob@localhost/")),
        "{p}"
    );

    // History limited by the joining client: the last message only.
    let got = join(&mut c, &r, "carol", "<history maxstanzas='1'/>").await;
    let history: Vec<&Element> = got
        .iter()
        .filter(|e| e.name == "message" && e.child("body").is_some())
        .collect();
    assert_eq!(history.len(), 1, "{got:?}");
    assert_eq!(history[0].child_text("body"), Some("hello 3"));
    // Carol leaves again (her presence is unavailable with 110 to herself).
    c.send(&format!("<presence to='{r}/carol' type='unavailable'/>"))
        .await;
    let gone = presence_from(&mut c, &format!("{r}/carol"), Some("unavailable")).await;
    assert_eq!(codes(&gone), ["110"]);
    presence_from(&mut a, &format!("{r}/carol"), Some("unavailable")).await;

    // A taken nick is a conflict.
    assert_eq!(join_refused(&mut c, &r, "alice", "").await, "conflict");
    // Only occupants may send to the room.
    c.send(&format!(
        "<message type='groupchat' to='{r}' id='x1'><body>let me in</body></message>"
    ))
    .await;
    c.expect_message_error("x1", "not-acceptable").await;

    // Bob speaks; Alice hears him.
    groupchat(&mut b, &r, "b1", "hi all").await;
    groupchat_from(&mut a, &format!("{r}/bob"), "hi all").await;
    // Private message through the room: from Bob's room JID, to Alice's real JID.
    b.send(&format!(
        "<message type='chat' to='{r}/alice' id='pm1'><body>psst</body></message>"
    ))
    .await;
    let pm = a
        .recv_where("the private message", |e| {
            e.name == "message" && e.child_text("body") == Some("psst")
        })
        .await;
    assert_eq!(pm.attr("from"), Some(format!("{r}/bob").as_str()));
    assert_eq!(pm.attr("to"), Some(a.full_jid().as_str()));
    assert!(pm.child_ns("x", MUC_USER).is_some(), "{pm}");
    // To a nick that is not there.
    b.send(&format!(
        "<message type='chat' to='{r}/nobody' id='pm2'><body>?</body></message>"
    ))
    .await;
    b.expect_message_error("pm2", "item-not-found").await;

    // Nick change: unavailable with 303 and the new nick, then the new presence.
    b.send(&format!("<presence to='{r}/robert'/>")).await;
    let old = presence_from(&mut a, &format!("{r}/bob"), Some("unavailable")).await;
    assert_eq!(codes(&old), ["303"]);
    assert_eq!(item(&old).attr("nick"), Some("robert"));
    presence_from(&mut a, &format!("{r}/robert"), None).await;
    let old = presence_from(&mut b, &format!("{r}/bob"), Some("unavailable")).await;
    let mut cs = codes(&old);
    cs.sort();
    assert_eq!(cs, ["110", "303"]);
    let new = presence_from(&mut b, &format!("{r}/robert"), None).await;
    assert_eq!(codes(&new), ["110"]);
    // The new nick is the one messages come from.
    groupchat(&mut b, &r, "b2", "renamed").await;
    groupchat_from(&mut a, &format!("{r}/robert"), "renamed").await;

    // Presence update (show) is broadcast.
    b.send(&format!(
        "<presence to='{r}/robert'><show>away</show></presence>"
    ))
    .await;
    let p = presence_from(&mut a, &format!("{r}/robert"), None).await;
    assert_eq!(p.child_text("show"), Some("away"), "{p}");

    // Alice's session ends: the room tells Bob she left.
    a.close().await;
    drop(a);
    presence_from(&mut b, &format!("{r}/alice"), Some("unavailable")).await;
    // Bob leaves: the temporary room is gone.
    b.send(&format!("<presence to='{r}/robert' type='unavailable'/>"))
        .await;
    presence_from(&mut b, &format!("{r}/robert"), Some("unavailable")).await;
    let reply = iq(&mut c, "get", &r, &format!("<query xmlns='{DISCO_INFO}'/>")).await;
    assert_eq!(error_condition(&reply), "item-not-found");
    assert!(!items(&mut c, SERVICE).await.contains(&r));
}

#[tokio::test]
async fn disco_of_service_and_rooms_and_configuration_form() {
    let server = common::im::im_server();
    let mut a = login(&server, ALICE, "pc").await;
    let mut b = login(&server, BOB, "pc").await;
    // The server lists its MUC service.
    assert!(items(&mut a, "localhost")
        .await
        .contains(&SERVICE.to_string()));
    // The service: conference/text, the MUC feature.
    let r = iq(
        &mut a,
        "get",
        SERVICE,
        &format!("<query xmlns='{DISCO_INFO}'/>"),
    )
    .await;
    assert_result(&r);
    let q = r.child("query").unwrap();
    let id = q.child("identity").expect("identity");
    assert_eq!(
        (id.attr("category"), id.attr("type")),
        (Some("conference"), Some("text"))
    );
    assert!(features(&mut a, SERVICE).await.contains(&MUC.to_string()));
    // A room that does not exist.
    let r = iq(
        &mut a,
        "get",
        &room("none"),
        &format!("<query xmlns='{DISCO_INFO}'/>"),
    )
    .await;
    assert_eq!(error_condition(&r), "item-not-found");

    let rj = room("cfg");
    join(&mut a, &rj, "al", "").await;
    let f = features(&mut a, &rj).await;
    for want in [
        MUC,
        "muc_public",
        "muc_temporary",
        "muc_open",
        "muc_semianonymous",
        "muc_unsecured",
        "muc_moderated",
    ] {
        assert!(f.contains(&want.to_string()), "{want} missing in {f:?}");
    }
    assert!(items(&mut a, SERVICE).await.contains(&rj));

    // The form has the usual fields with the current values.
    let form = iq(&mut a, "get", &rj, &format!("<query xmlns='{MUC_OWNER}'/>")).await;
    assert_result(&form);
    let x = form
        .child("query")
        .and_then(|q| q.child_ns("x", "jabber:x:data"))
        .expect("form");
    let vars: Vec<&str> = x
        .children_named("field")
        .filter_map(|f| f.attr("var"))
        .collect();
    for v in [
        "FORM_TYPE",
        "muc#roomconfig_roomname",
        "muc#roomconfig_roomdesc",
        "muc#roomconfig_persistentroom",
        "muc#roomconfig_publicroom",
        "muc#roomconfig_membersonly",
        "muc#roomconfig_passwordprotectedroom",
        "muc#roomconfig_roomsecret",
        "muc#roomconfig_whois",
        "muc#roomconfig_changesubject",
        "muc#roomconfig_maxusers",
    ] {
        assert!(vars.contains(&v), "{v} missing in {form}");
    }
    // Only owners see it.
    join(&mut b, &rj, "bob", "").await;
    let r = iq(&mut b, "get", &rj, &format!("<query xmlns='{MUC_OWNER}'/>")).await;
    assert_eq!(error_condition(&r), "forbidden");

    // Submitting changes the room; occupants hear 104 (and 172: non-anonymous).
    let r = configure(
        &mut a,
        &rj,
        &[
            ("muc#roomconfig_roomname", "Config Room"),
            ("muc#roomconfig_roomdesc", "About things"),
            ("muc#roomconfig_publicroom", "0"),
            ("muc#roomconfig_persistentroom", "1"),
            ("muc#roomconfig_whois", "anyone"),
            ("muc#roomconfig_changesubject", "0"),
            ("muc#roomconfig_maxusers", "30"),
        ],
    )
    .await;
    assert_result(&r);
    let notice = b
        .recv_where("status 104", |e| {
            e.name == "message" && codes(e).contains(&"104".to_string())
        })
        .await;
    assert!(codes(&notice).contains(&"172".to_string()), "{notice}");
    let f = features(&mut b, &rj).await;
    for want in ["muc_hidden", "muc_persistent", "muc_nonanonymous"] {
        assert!(f.contains(&want.to_string()), "{want} missing in {f:?}");
    }
    let info = iq(
        &mut b,
        "get",
        &rj,
        &format!("<query xmlns='{DISCO_INFO}'/>"),
    )
    .await;
    assert_eq!(
        info.child("query")
            .and_then(|q| q.child("identity"))
            .and_then(|i| i.attr("name")),
        Some("Config Room")
    );
    // Hidden rooms are not listed.
    assert!(!items(&mut b, SERVICE).await.contains(&rj));
    // Bob, a participant, may no longer change the subject.
    b.send(&format!(
        "<message type='groupchat' to='{rj}' id='s1'><subject>mine</subject></message>"
    ))
    .await;
    b.expect_message_error("s1", "forbidden").await;
    // A bad value is refused.
    let r = configure(&mut a, &rj, &[("muc#roomconfig_maxusers", "100000")]).await;
    assert_eq!(error_condition(&r), "not-acceptable");

    // Destroy: occupants get unavailable with <destroy/>; the room is gone.
    let r = iq(
        &mut a,
        "set",
        &rj,
        &format!(
            "<query xmlns='{MUC_OWNER}'><destroy jid='{}'><reason>moved</reason></destroy></query>",
            room("other")
        ),
    )
    .await;
    assert_result(&r);
    let p = presence_from(&mut b, &format!("{rj}/bob"), Some("unavailable")).await;
    let d = p
        .child_ns("x", MUC_USER)
        .and_then(|x| x.child("destroy"))
        .expect("destroy");
    assert_eq!(d.attr("jid"), Some(room("other").as_str()));
    assert_eq!(d.child_text("reason"), Some("moved"));
    let r = iq(
        &mut b,
        "get",
        &rj,
        &format!("<query xmlns='{DISCO_INFO}'/>"),
    )
    .await;
    assert_eq!(error_condition(&r), "item-not-found");
}

#[tokio::test]
async fn kick_ban_members_only_and_password() {
    let server = common::im::im_server();
    let rj = room("mod");
    let mut a = login(&server, ALICE, "pc").await;
    let mut b = login(&server, BOB, "pc").await;
    let mut c = login(&server, CAROL, "pc").await;
    join(&mut a, &rj, "alice", "").await;
    join(&mut b, &rj, "bob", "").await;
    join(&mut c, &rj, "carol", "").await;

    // A participant may not kick.
    let r = iq(
        &mut c,
        "set",
        &rj,
        &format!("<query xmlns='{MUC_ADMIN}'><item nick='bob' role='none'/></query>"),
    )
    .await;
    assert_eq!(error_condition(&r), "forbidden");
    // Nobody kicks the owner.
    let r = iq(
        &mut a,
        "set",
        &rj,
        &format!("<query xmlns='{MUC_ADMIN}'><item nick='nobody' role='none'/></query>"),
    )
    .await;
    assert_eq!(error_condition(&r), "item-not-found");

    // Kick: 307 to everyone, 110 too for Bob, with the reason.
    let r = iq(
        &mut a,
        "set",
        &rj,
        &format!("<query xmlns='{MUC_ADMIN}'><item nick='bob' role='none'><reason>calm down</reason></item></query>"),
    )
    .await;
    assert_result(&r);
    let p = presence_from(&mut b, &format!("{rj}/bob"), Some("unavailable")).await;
    let mut cs = codes(&p);
    cs.sort();
    assert_eq!(cs, ["110", "307"], "{p}");
    assert_eq!(item(&p).child_text("reason"), Some("calm down"));
    let p = presence_from(&mut c, &format!("{rj}/bob"), Some("unavailable")).await;
    assert_eq!(codes(&p), ["307"]);
    // Kicked, not banned: Bob comes back.
    join(&mut b, &rj, "bob", "").await;

    // Ban by bare JID: 301, and he cannot come back (forbidden).
    let r = iq(
        &mut a,
        "set",
        &rj,
        &format!(
            "<query xmlns='{MUC_ADMIN}'><item jid='bob@localhost' affiliation='outcast'/></query>"
        ),
    )
    .await;
    assert_result(&r);
    let p = presence_from(&mut b, &format!("{rj}/bob"), Some("unavailable")).await;
    assert!(codes(&p).contains(&"301".to_string()), "{p}");
    assert_eq!(item(&p).attr("affiliation"), Some("outcast"));
    assert_eq!(join_refused(&mut b, &rj, "bob", "").await, "forbidden");
    // The outcast list has him; a participant may not read it.
    let r = iq(
        &mut a,
        "get",
        &rj,
        &format!("<query xmlns='{MUC_ADMIN}'><item affiliation='outcast'/></query>"),
    )
    .await;
    assert_result(&r);
    let jids: Vec<&str> = r
        .child("query")
        .unwrap()
        .children_named("item")
        .filter_map(|i| i.attr("jid"))
        .collect();
    assert_eq!(jids, ["bob@localhost"]);
    let r = iq(
        &mut c,
        "get",
        &rj,
        &format!("<query xmlns='{MUC_ADMIN}'><item affiliation='outcast'/></query>"),
    )
    .await;
    assert_eq!(error_condition(&r), "forbidden");

    // Members-only: Carol (no affiliation) is removed with 322 and refused
    // with registration-required until she is made a member.
    assert_result(&configure(&mut a, &rj, &[("muc#roomconfig_membersonly", "1")]).await);
    let p = presence_from(&mut c, &format!("{rj}/carol"), Some("unavailable")).await;
    assert!(codes(&p).contains(&"322".to_string()), "{p}");
    assert_eq!(
        join_refused(&mut c, &rj, "carol", "").await,
        "registration-required"
    );
    let r = iq(
        &mut a,
        "set",
        &rj,
        &format!(
            "<query xmlns='{MUC_ADMIN}'><item jid='carol@localhost' affiliation='member'/></query>"
        ),
    )
    .await;
    assert_result(&r);
    let got = join(&mut c, &rj, "carol", "").await;
    let me = got
        .iter()
        .find(|e| e.attr("from") == Some(&format!("{rj}/carol")))
        .unwrap();
    assert_eq!(item(me).attr("affiliation"), Some("member"));
    // Making Carol an admin makes her a moderator (presence broadcast).
    let r = iq(
        &mut a,
        "set",
        &rj,
        &format!(
            "<query xmlns='{MUC_ADMIN}'><item jid='carol@localhost' affiliation='admin'/></query>"
        ),
    )
    .await;
    assert_result(&r);
    let p = c
        .recv_where("carol as moderator", |e| {
            e.name == "presence"
                && e.attr("from") == Some(&format!("{rj}/carol"))
                && e.child_ns("x", MUC_USER)
                    .and_then(|x| x.child("item"))
                    .and_then(|i| i.attr("role"))
                    == Some("moderator")
        })
        .await;
    assert_eq!(item(&p).attr("affiliation"), Some("admin"));
    // An admin may not demote the owner.
    let r = iq(
        &mut c,
        "set",
        &rj,
        &format!(
            "<query xmlns='{MUC_ADMIN}'><item jid='alice@localhost' affiliation='member'/></query>"
        ),
    )
    .await;
    assert_eq!(error_condition(&r), "not-allowed");

    // Password-protected room.
    let pj = room("secret");
    join(&mut a, &pj, "alice", "").await;
    assert_result(
        &configure(
            &mut a,
            &pj,
            &[
                ("muc#roomconfig_passwordprotectedroom", "1"),
                ("muc#roomconfig_roomsecret", "sesame"),
            ],
        )
        .await,
    );
    assert_eq!(join_refused(&mut b, &pj, "bob", "").await, "not-authorized");
    assert_eq!(
        join_refused(&mut b, &pj, "bob", "<password>wrong</password>").await,
        "not-authorized"
    );
    join(&mut b, &pj, "bob", "<password>sesame</password>").await;
    assert!(features(&mut b, &pj)
        .await
        .contains(&"muc_passwordprotected".to_string()));
}

#[tokio::test]
async fn persistent_room_survives_a_restart() {
    let mut server = common::im::im_server();
    let rj = room("forever");
    let tj = room("temp");
    {
        let mut a = login(&server, ALICE, "pc").await;
        join(&mut a, &rj, "alice", "").await;
        assert_result(
            &configure(
                &mut a,
                &rj,
                &[
                    ("muc#roomconfig_persistentroom", "1"),
                    ("muc#roomconfig_roomname", "Forever"),
                    ("muc#roomconfig_membersonly", "1"),
                ],
            )
            .await,
        );
        let r = iq(
            &mut a,
            "set",
            &rj,
            &format!("<query xmlns='{MUC_ADMIN}'><item jid='bob@localhost' affiliation='member'/></query>"),
        )
        .await;
        assert_result(&r);
        a.send(&format!(
            "<message type='groupchat' to='{rj}'><subject>Kept</subject></message>"
        ))
        .await;
        a.recv_where("subject", |e| e.child_text("subject") == Some("Kept"))
            .await;
        join(&mut a, &tj, "alice", "").await;
        a.close().await;
    }
    server.kill_hard(); // SIGKILL: the writes must already be durable
    server.restart();

    let mut b = login(&server, BOB, "pc").await;
    let mut c = login(&server, CAROL, "pc").await;
    // The room, its name, its members-only setting and its subject are back.
    assert!(items(&mut b, SERVICE).await.contains(&rj));
    assert!(!items(&mut b, SERVICE).await.contains(&tj));
    let info = iq(
        &mut b,
        "get",
        &rj,
        &format!("<query xmlns='{DISCO_INFO}'/>"),
    )
    .await;
    assert_eq!(
        info.child("query")
            .and_then(|q| q.child("identity"))
            .and_then(|i| i.attr("name")),
        Some("Forever")
    );
    assert_eq!(
        join_refused(&mut c, &rj, "carol", "").await,
        "registration-required"
    );
    let got = join(&mut b, &rj, "bob", "").await;
    assert_eq!(got.last().unwrap().child_text("subject"), Some("Kept"));
    // Alice still owns it; the room stays when everyone has left.
    let mut a = login(&server, ALICE, "pc2").await;
    let got = join(&mut a, &rj, "alice", "").await;
    let me = got
        .iter()
        .find(|e| e.attr("from") == Some(&format!("{rj}/alice")))
        .unwrap();
    assert_eq!(item(me).attr("affiliation"), Some("owner"));
    assert!(!codes(me).contains(&"201".to_string()), "{me}");
    a.send(&format!("<presence to='{rj}/alice' type='unavailable'/>"))
        .await;
    b.send(&format!("<presence to='{rj}/bob' type='unavailable'/>"))
        .await;
    presence_from(&mut b, &format!("{rj}/bob"), Some("unavailable")).await;
    presence_from(&mut a, &format!("{rj}/alice"), Some("unavailable")).await;
    assert!(items(&mut b, SERVICE).await.contains(&rj));
}

#[tokio::test]
async fn invitations_direct_and_mediated() {
    let server = common::im::im_server();
    let rj = room("party");
    let mut a = login(&server, ALICE, "pc").await;
    let mut b = login(&server, BOB, "pc").await;
    // Invitations and declines go to bare JIDs: both are available.
    a.presence().await;
    b.presence().await;
    join(&mut a, &rj, "alice", "").await;
    // XEP-0249 direct invitation: an ordinary message, delivered as is.
    a.send(&format!(
        "<message to='bob@localhost/pc' id='d1'><x xmlns='jabber:x:conference' jid='{rj}' reason='come'/></message>"
    ))
    .await;
    let m = b
        .recv_where("direct invite", |e| {
            e.name == "message" && e.child_ns("x", "jabber:x:conference").is_some()
        })
        .await;
    assert_eq!(
        m.child_ns("x", "jabber:x:conference").unwrap().attr("jid"),
        Some(rj.as_str())
    );
    // Mediated invitation through the room (XEP-0045 §7.8.2).
    a.send(&format!(
        "<message to='{rj}' id='i1'><x xmlns='{MUC_USER}'><invite to='bob@localhost'><reason>join us</reason></invite></x></message>"
    ))
    .await;
    let m = b
        .recv_where("mediated invite", |e| {
            e.name == "message" && e.attr("from") == Some(rj.as_str())
        })
        .await;
    let inv = m
        .child_ns("x", MUC_USER)
        .and_then(|x| x.child("invite"))
        .expect("invite");
    assert_eq!(inv.attr("from"), Some("alice@localhost"));
    assert_eq!(inv.child_text("reason"), Some("join us"));
    // Bob declines; Alice hears it from the room.
    b.send(&format!(
        "<message to='{rj}'><x xmlns='{MUC_USER}'><decline to='alice@localhost'><reason>busy</reason></decline></x></message>"
    ))
    .await;
    let m = a
        .recv_where("decline", |e| {
            e.name == "message"
                && e.child_ns("x", MUC_USER)
                    .and_then(|x| x.child("decline"))
                    .is_some()
        })
        .await;
    let d = m.child_ns("x", MUC_USER).unwrap().child("decline").unwrap();
    assert_eq!(d.attr("from"), Some("bob@localhost"));
    // A non-occupant may not invite through the room.
    b.send(&format!(
        "<message to='{rj}' id='i2'><x xmlns='{MUC_USER}'><invite to='carol@localhost'/></x></message>"
    ))
    .await;
    b.expect_message_error("i2", "not-acceptable").await;
}

#[tokio::test]
async fn room_creation_follows_access_create() {
    let server = common::Server::start_with(common::Config {
        modules: "  mod_disco: {}\n  mod_muc:\n    access_create: admins_only\n    history_size: 0\n    max_user_conferences: 1\n"
            .into(),
        extra_yaml: "acl:\n  admin:\n    user: alice@localhost\naccess_rules:\n  admins_only:\n    allow: admin\n".into(),
        ..Default::default()
    });
    server.register("alice", "localhost", "secret");
    server.register("bob", "localhost", "hunter2");
    let mut a = login(&server, ALICE, "pc").await;
    let mut b = login(&server, BOB, "pc").await;
    let rj = room("adminroom");
    assert_eq!(join_refused(&mut b, &rj, "bob", "").await, "not-allowed");
    join(&mut a, &rj, "alice", "").await;
    // An existing room is open to others; history_size 0 keeps no history.
    groupchat(&mut a, &rj, "h1", "not kept").await;
    groupchat_from(&mut a, &format!("{rj}/alice"), "not kept").await;
    let got = join(&mut b, &rj, "bob", "").await;
    assert!(got.iter().all(|e| e.child("body").is_none()), "{got:?}");
    // max_user_conferences: 1 — Alice may not be in a second room.
    assert_eq!(
        join_refused(&mut a, &room("second"), "alice", "").await,
        "resource-constraint"
    );
}

#[tokio::test]
async fn one_account_may_share_its_nick_between_clients() {
    let server = common::im::im_server();
    let rj = room("devices");
    let mut pc = login(&server, ALICE, "pc").await;
    let mut phone = login(&server, ALICE, "phone").await;
    let mut b = login(&server, BOB, "pc").await;
    join(&mut pc, &rj, "alice", "").await;
    join(&mut b, &rj, "bob", "").await;
    // Alice's second client joins under the same nick: no conflict, and it
    // does not see "alice" as somebody else.
    let got = join(&mut phone, &rj, "alice", "").await;
    let from_alice: Vec<&Element> = got
        .iter()
        .filter(|e| e.name == "presence" && e.attr("from") == Some(&format!("{rj}/alice")))
        .collect();
    assert_eq!(from_alice.len(), 1, "{got:?}");
    assert!(codes(from_alice[0]).contains(&"110".to_string()));
    // Bob sees alice's presence again (now from her second client).
    presence_from(&mut b, &format!("{rj}/alice"), None).await;
    // Bob's message and his private message reach both clients.
    groupchat(&mut b, &rj, "g1", "to both").await;
    groupchat_from(&mut pc, &format!("{rj}/bob"), "to both").await;
    groupchat_from(&mut phone, &format!("{rj}/bob"), "to both").await;
    groupchat_from(&mut b, &format!("{rj}/bob"), "to both").await;
    b.send(&format!(
        "<message type='chat' to='{rj}/alice' id='p1'><body>private to both</body></message>"
    ))
    .await;
    for c in [&mut pc, &mut phone] {
        c.recv_where("the private message", |e| {
            e.child_text("body") == Some("private to both")
        })
        .await;
    }
    // One client leaves: for Bob, alice is still there (no unavailable
    // before his next echo); the other client still gets messages.
    phone
        .send(&format!("<presence to='{rj}/alice' type='unavailable'/>"))
        .await;
    presence_from(&mut phone, &format!("{rj}/alice"), Some("unavailable")).await;
    groupchat(&mut b, &rj, "g2", "still here?").await;
    let next = b
        .recv_where("the next stanza from the room", |e| {
            e.attr("from").is_some_and(|f| f.starts_with(&rj))
        })
        .await;
    assert_eq!(next.child_text("body"), Some("still here?"), "{next}");
    groupchat_from(&mut pc, &format!("{rj}/bob"), "still here?").await;
    // The last client leaves: now Bob hears it.
    pc.send(&format!("<presence to='{rj}/alice' type='unavailable'/>"))
        .await;
    presence_from(&mut b, &format!("{rj}/alice"), Some("unavailable")).await;
}

#[tokio::test]
async fn voice_and_iqs_between_occupants() {
    let server = common::im::im_server();
    let rj = room("voice");
    let mut a = login(&server, ALICE, "pc").await;
    let mut b = login(&server, BOB, "pc").await;
    join(&mut a, &rj, "alice", "").await;
    join(&mut b, &rj, "bob", "").await;
    // Bob loses his voice: visitors may not speak.
    let r = iq(
        &mut a,
        "set",
        &rj,
        &format!("<query xmlns='{MUC_ADMIN}'><item nick='bob' role='visitor'/></query>"),
    )
    .await;
    assert_result(&r);
    let p = b
        .recv_where("bob as visitor", |e| {
            e.name == "presence"
                && e.attr("from") == Some(&format!("{rj}/bob"))
                && e.child_ns("x", MUC_USER)
                    .and_then(|x| x.child("item"))
                    .and_then(|i| i.attr("role"))
                    == Some("visitor")
        })
        .await;
    assert!(codes(&p).contains(&"110".to_string()));
    groupchat(&mut b, &rj, "v1", "can I talk?").await;
    b.expect_message_error("v1", "forbidden").await;
    // The participant list no longer has him; the visitor list does.
    let r = iq(
        &mut a,
        "get",
        &rj,
        &format!("<query xmlns='{MUC_ADMIN}'><item role='visitor'/></query>"),
    )
    .await;
    let nicks: Vec<&str> = r
        .child("query")
        .unwrap()
        .children_named("item")
        .filter_map(|i| i.attr("nick"))
        .collect();
    assert_eq!(nicks, ["bob"], "{r}");
    // Voice back.
    let r = iq(
        &mut a,
        "set",
        &rj,
        &format!("<query xmlns='{MUC_ADMIN}'><item nick='bob' role='participant'/></query>"),
    )
    .await;
    assert_result(&r);
    groupchat(&mut b, &rj, "v2", "thanks").await;
    groupchat_from(&mut a, &format!("{rj}/bob"), "thanks").await;

    // A vCard request to an occupant goes to the account behind it (the
    // server answers for the bare JID) and comes back from the room JID.
    let id = b.id();
    let r = b
        .request(
            &format!("<iq type='get' to='{rj}/alice' id='{id}'><vCard xmlns='vcard-temp'/></iq>"),
            &id,
        )
        .await;
    assert_result(&r);
    assert_eq!(r.attr("from"), Some(format!("{rj}/alice").as_str()), "{r}");
    assert!(r.child_ns("vCard", "vcard-temp").is_some(), "{r}");
    // Other iqs go to the occupant's client, which answers; the answer comes back.
    let id = b.id();
    b.send(&format!(
        "<iq type='get' to='{rj}/alice' id='{id}'><query xmlns='jabber:iq:version'/></iq>"
    ))
    .await;
    let fwd = a
        .recv_where("the forwarded iq", |e| {
            e.name == "iq" && e.child_ns("query", "jabber:iq:version").is_some()
        })
        .await;
    assert_eq!(
        fwd.attr("from"),
        Some(format!("{rj}/bob").as_str()),
        "{fwd}"
    );
    let fid = fwd.attr("id").unwrap().to_string();
    a.send(&format!(
        "<iq type='result' to='{rj}/bob' id='{fid}'><query xmlns='jabber:iq:version'><name>A</name><version>1</version></query></iq>"
    ))
    .await;
    let ans = b
        .recv_where("the answer", |e| {
            e.name == "iq" && e.attr("id") == Some(&id)
        })
        .await;
    assert_result(&ans);
    assert_eq!(
        ans.attr("from"),
        Some(format!("{rj}/alice").as_str()),
        "{ans}"
    );
    assert_eq!(
        ans.child_ns("query", "jabber:iq:version")
            .and_then(|q| q.child_text("name")),
        Some("A")
    );
    // A non-occupant may not query occupants.
    let mut c = login(&server, CAROL, "pc").await;
    let r = iq(
        &mut c,
        "get",
        &format!("{rj}/alice"),
        "<query xmlns='jabber:iq:version'/>",
    )
    .await;
    assert_eq!(error_condition(&r), "not-acceptable");
}

/// A rough fan-out figure (not run by default): `cargo test --release
/// --test integration mod_muc::measure_groupchat_fanout -- --ignored --nocapture`. One room
/// with OCCUPANTS local occupants; one of them sends MESSAGES groupchat
/// messages; the time until every occupant has received every message.
#[tokio::test]
#[ignore]
async fn measure_groupchat_fanout() {
    const OCCUPANTS: usize = 20;
    const MESSAGES: usize = 200;
    let server = common::Server::start();
    let rj = room("bench");
    let mut clients = Vec::new();
    for i in 0..OCCUPANTS {
        let user = format!("u{i}");
        server.register(&user, "localhost", "pw");
        let mut c = Client::login(&server, &user, "pw", Some("b")).await;
        join(&mut c, &rj, &user, "<history maxstanzas='0'/>").await;
        clients.push(c);
    }
    let mut first = clients.remove(0);
    let start = std::time::Instant::now();
    for i in 0..MESSAGES {
        groupchat(&mut first, &rj, &format!("n{i}"), &format!("message {i}")).await;
    }
    let last = format!("message {}", MESSAGES - 1);
    let mut handles = Vec::new();
    for mut c in clients {
        let last = last.clone();
        handles.push(tokio::spawn(async move {
            c.recv_where("the last message", |e| e.child_text("body") == Some(&last))
                .await;
        }));
    }
    first
        .recv_where("the last echo", |e| e.child_text("body") == Some(&last))
        .await;
    for h in handles {
        h.await.unwrap();
    }
    let took = start.elapsed();
    println!(
        "MUC fan-out: {MESSAGES} messages x {OCCUPANTS} occupants = {} deliveries in {took:?} ({:.0} deliveries/s)",
        MESSAGES * OCCUPANTS,
        (MESSAGES * OCCUPANTS) as f64 / took.as_secs_f64()
    );
}
