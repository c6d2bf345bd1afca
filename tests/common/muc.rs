//! XEP-0045 steps shared by the federated MUC checks (`mod_muc_federation`,
//! `s2s_prosody`, `s2s_ejabberd`), written against what every MUC service
//! sends (Rookery's, Prosody's, ejabberd's): a join ends with the joiner's
//! own presence carrying status 110; groupchat messages come back from
//! `room/nick`; a kick is an unavailable presence with status 307.
//!
//! `federated_room` is the one exchange all three federation checks make
//! in a room: a local and a remote occupant see each other join, exchange
//! groupchat messages both ways, a presence change and a private message
//! each way, then the owner kicks the other.

use super::client::Client;
use super::server::Server;
use super::xml::Element;

pub const MUC: &str = "http://jabber.org/protocol/muc";
pub const MUC_USER: &str = "http://jabber.org/protocol/muc#user";
pub const MUC_ADMIN: &str = "http://jabber.org/protocol/muc#admin";
pub const MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";

/// The status codes in a stanza's muc#user `<x/>`.
pub fn codes(e: &Element) -> Vec<String> {
    e.child_ns("x", MUC_USER)
        .map(|x| {
            x.children_named("status")
                .filter_map(|s| s.attr("code").map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Join `room/nick`; returns the joiner's own presence (status 110).
/// Panics on a presence error.
pub async fn join(c: &mut Client, room: &str, nick: &str) -> Element {
    c.send(&format!(
        "<presence to='{room}/{nick}'><x xmlns='{MUC}'><history maxstanzas='0'/></x></presence>"
    ))
    .await;
    let me = format!("{room}/{nick}");
    let p = c
        .recv_where(&format!("own presence in {room}"), |e| {
            e.name == "presence"
                && e.attr("from") == Some(me.as_str())
                && (e.attr("type") == Some("error") || codes(e).iter().any(|c| c == "110"))
        })
        .await;
    assert_ne!(p.attr("type"), Some("error"), "join refused: {p}");
    p
}

/// Join `room/nick`, which must be refused; returns the error condition.
pub async fn join_refused(c: &mut Client, room: &str, nick: &str) -> String {
    c.send(&format!(
        "<presence to='{room}/{nick}'><x xmlns='{MUC}'/></presence>"
    ))
    .await;
    let me = format!("{room}/{nick}");
    let e = c
        .recv_where("a presence error", |e| {
            e.name == "presence"
                && e.attr("from") == Some(me.as_str())
                && e.attr("type") == Some("error")
        })
        .await;
    e.stanza_error().expect("an error condition").1
}

/// Submit the default configuration of a room just created (an instant
/// room, XEP-0045 §10.1.2), so that Prosody and ejabberd unlock it.
pub async fn instant_room(c: &mut Client, room: &str) {
    let id = c.id();
    let r = c
        .request(
            &format!(
                "<iq type='set' to='{room}' id='{id}'><query xmlns='{MUC_OWNER}'>\
                 <x xmlns='jabber:x:data' type='submit'/></query></iq>"
            ),
            &id,
        )
        .await;
    assert_eq!(r.attr("type"), Some("result"), "instant room: {r}");
}

/// The presence of `from` (exact room JID) with `ty` (None: available).
pub async fn presence_from(c: &mut Client, from: &str, ty: Option<&str>) -> Element {
    c.recv_where(&format!("presence from {from} type {ty:?}"), |e| {
        e.name == "presence" && e.attr("from") == Some(from) && e.attr("type") == ty
    })
    .await
}

/// Send a groupchat message to `room`.
pub async fn say(c: &mut Client, room: &str, body: &str) {
    c.send(&format!(
        "<message type='groupchat' to='{room}'><body>{body}</body></message>"
    ))
    .await;
}

/// The groupchat message with `body` from `from` (exact room JID).
pub async fn heard(c: &mut Client, from: &str, body: &str) -> Element {
    c.recv_where(&format!("groupchat {body:?} from {from}"), |e| {
        e.name == "message"
            && e.attr("type") == Some("groupchat")
            && e.attr("from") == Some(from)
            && e.child_text("body") == Some(body)
    })
    .await
}

/// A private message (type chat) with `body` from `from` (exact room JID).
pub async fn heard_privately(c: &mut Client, from: &str, body: &str) -> Element {
    c.recv_where(&format!("private message {body:?} from {from}"), |e| {
        e.name == "message"
            && e.attr("type") == Some("chat")
            && e.attr("from") == Some(from)
            && e.child_text("body") == Some(body)
    })
    .await
}

/// Set `nick`'s role (`none`: a kick) as a moderator.
pub async fn set_role(c: &mut Client, room: &str, nick: &str, role: &str) -> Element {
    let id = c.id();
    c.request(
        &format!(
            "<iq type='set' to='{room}' id='{id}'><query xmlns='{MUC_ADMIN}'>\
             <item nick='{nick}' role='{role}'><reason>test</reason></item></query></iq>"
        ),
        &id,
    )
    .await
}

/// Set `jid`'s affiliation (`outcast`: a ban) as an admin or owner.
pub async fn set_affiliation(c: &mut Client, room: &str, jid: &str, aff: &str) -> Element {
    let id = c.id();
    c.request(
        &format!(
            "<iq type='set' to='{room}' id='{id}'><query xmlns='{MUC_ADMIN}'>\
             <item jid='{jid}' affiliation='{aff}'/></query></iq>"
        ),
        &id,
    )
    .await
}

/// In `room`, already joined by `owner` as `owner_nick` (its owner),
/// `guest` joins as `guest_nick`; both see each other, exchange groupchat
/// messages both ways, the owner sees the guest's presence change, they
/// exchange a private message each way; then the owner kicks the guest, who
/// is told with status 307 (the owner sees it leave).
pub async fn federated_room(
    room: &str,
    owner: &mut Client,
    owner_nick: &str,
    guest: &mut Client,
    guest_nick: &str,
) {
    let (o, g) = (
        format!("{room}/{owner_nick}"),
        format!("{room}/{guest_nick}"),
    );
    join(guest, room, guest_nick).await;
    presence_from(guest, &o, None).await;
    presence_from(owner, &g, None).await;

    say(guest, room, "hello from the guest").await;
    heard(owner, &g, "hello from the guest").await;
    heard(guest, &g, "hello from the guest").await;
    say(owner, room, "welcome, guest").await;
    heard(guest, &o, "welcome, guest").await;
    heard(owner, &o, "welcome, guest").await;

    // A presence update (away) reaches the other occupant.
    guest
        .send(&format!("<presence to='{g}'><show>away</show></presence>"))
        .await;
    owner
        .recv_where(&format!("{g} away"), |e| {
            e.name == "presence"
                && e.attr("from") == Some(g.as_str())
                && e.attr("type").is_none()
                && e.child_text("show") == Some("away")
        })
        .await;

    owner
        .send(&format!(
            "<message type='chat' to='{g}'><body>psst guest</body></message>"
        ))
        .await;
    heard_privately(guest, &o, "psst guest").await;
    guest
        .send(&format!(
            "<message type='chat' to='{o}'><body>psst owner</body></message>"
        ))
        .await;
    heard_privately(owner, &g, "psst owner").await;

    let r = set_role(owner, room, guest_nick, "none").await;
    assert_eq!(r.attr("type"), Some("result"), "kick: {r}");
    let p = presence_from(guest, &g, Some("unavailable")).await;
    assert!(codes(&p).iter().any(|c| c == "307"), "kicked: {p}");
    let p = presence_from(owner, &g, Some("unavailable")).await;
    assert!(codes(&p).iter().any(|c| c == "307"), "kick seen: {p}");
}

/// The federated room exchange with another server (`remote`, e.g.
/// `prosody.test`), both ways: `pat` (a user there) in a Rookery room with
/// `alice` ([`federated_room`], then refused as a non-occupant), `alice`
/// in a room of the other server's service (the same exchange, and out of
/// the room when her session ends). The service domains' own s2s streams
/// must authenticate as `expected_auth` (`sasl-external`, `dialback`).
pub async fn federated_rooms_both_ways(
    rookery: &Server,
    mut alice: Client,
    mut pat: Client,
    remote: &str,
    expected_auth: &str,
) {
    let room = "lounge@conference.rookery.test";
    join(&mut alice, room, "alice").await;
    federated_room(room, &mut alice, "alice", &mut pat, "pat").await;
    pat.send(&format!(
        "<message type='groupchat' to='{room}' id='x1'><body>let me in</body></message>"
    ))
    .await;
    pat.expect_message_error("x1", "not-acceptable").await;

    let den = format!("den@conference.{remote}");
    let den = den.as_str();
    join(&mut pat, den, "pat").await;
    instant_room(&mut pat, den).await;
    federated_room(den, &mut pat, "pat", &mut alice, "alice").await;
    join(&mut alice, den, "alice").await;
    presence_from(&mut pat, &format!("{den}/alice"), None).await;
    drop(alice);
    presence_from(&mut pat, &format!("{den}/alice"), Some("unavailable")).await;

    let conns = rookery.ctl_ok(&["s2s_connections"]);
    eprintln!("s2s connections:\n{conns}");
    for line in [
        format!("out conference.rookery.test {remote} {expected_auth} tls"),
        format!("in conference.rookery.test {remote} {expected_auth} tls"),
        format!("out rookery.test conference.{remote} {expected_auth} tls"),
        format!("in rookery.test conference.{remote} {expected_auth} tls"),
    ] {
        assert!(conns.contains(&line), "{line}: {conns}");
    }
}
