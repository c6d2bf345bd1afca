//! Helpers for the RFC 6121 (instant messaging and presence) and XEP-0160
//! (offline messages) integration tests: roster requests and pushes,
//! presence matching, subscription set-up through real stanzas, a ping
//! barrier ([`sync`]) that returns everything a client received before the
//! server answered it, and XEP-0082 timestamp parsing for `<delay/>`.
//!
//! The barrier works because the server handles one client's stanzas in
//! order and routes each one (to local sessions' queues) before reading the
//! next: once a client's ping is answered, everything it sent earlier has
//! reached the recipients' queues, and a recipient's own ping answer comes
//! after those stanzas.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::client::{esc, Client};
use super::server::Server;
use super::xml::*;

/// `jabber:iq:roster`.
pub const NS_ROSTER: &str = "jabber:iq:roster";
/// Roster versioning stream feature (RFC 6121 §2.6.1).
pub const NS_ROSTERVER: &str = "urn:xmpp:features:rosterver";
/// Subscription pre-approval stream feature (RFC 6121 §3.4.1).
pub const NS_PREAPPROVAL: &str = "urn:xmpp:features:pre-approval";
/// XEP-0203 delayed delivery.
pub const NS_DELAY: &str = "urn:xmpp:delay";
/// XEP-0085 chat states.
pub const NS_CHATSTATES: &str = "http://jabber.org/protocol/chatstates";

/// Account `alice` (user, password), registered by [`im_server`].
pub const ALICE: (&str, &str) = ("alice", "secret");
/// Account `bob`.
pub const BOB: (&str, &str) = ("bob", "hunter2");
/// Account `carol`.
pub const CAROL: (&str, &str) = ("carol", "carolpw");

/// Bound on one [`sync`] barrier.
pub const SYNC_LIMIT: Duration = Duration::from_secs(60);

/// A default server with `alice`, `bob` and `carol` on `localhost`.
pub fn im_server() -> Server {
    let s = super::server_with_users();
    s.register(CAROL.0, "localhost", CAROL.1);
    s
}

/// `user@localhost`.
pub fn bare(user: (&str, &str)) -> String {
    format!("{}@localhost", user.0)
}

/// Logs `user` in over STARTTLS + SCRAM and binds `resource`; no presence.
pub async fn login(server: &Server, user: (&str, &str), resource: &str) -> Client {
    Client::login(server, user.0, user.1, Some(resource)).await
}

/// Logs in, sends `presence_xml` as initial presence and waits until the
/// server has processed it; whatever arrived meanwhile (own presence,
/// probe answers, offline messages...) is returned.
pub async fn online_with(
    server: &Server,
    user: (&str, &str),
    resource: &str,
    presence_xml: &str,
) -> (Client, Vec<Element>) {
    let mut c = login(server, user, resource).await;
    c.send(presence_xml).await;
    let got = sync(&mut c).await;
    (c, got)
}

/// Logs in and sends `<presence/>`, discarding what arrives until the server
/// has processed it.
pub async fn online(server: &Server, user: (&str, &str), resource: &str) -> Client {
    online_with(server, user, resource, "<presence/>").await.0
}

/// Like [`online`], but also requests the roster first (so the session
/// receives roster pushes).
pub async fn online_interested(server: &Server, user: (&str, &str), resource: &str) -> Client {
    let mut c = login(server, user, resource).await;
    let r = roster_get(&mut c, None).await;
    assert_eq!(r.attr("type"), Some("result"), "roster get failed: {r}");
    c.send("<presence/>").await;
    sync(&mut c).await;
    c
}

/// Pings the server and returns every stanza received before the answer
/// (queued ones first). Panics on errors, timeouts or after [`SYNC_LIMIT`].
pub async fn sync(c: &mut Client) -> Vec<Element> {
    let id = format!("sync-{}", c.id());
    let to = c.domain.clone();
    c.send(&format!(
        "<iq type='get' to='{}' id='{id}'><ping xmlns='urn:xmpp:ping'/></iq>",
        esc(&to)
    ))
    .await;
    let deadline = Instant::now() + SYNC_LIMIT;
    let mut got = Vec::new();
    loop {
        assert!(
            Instant::now() < deadline,
            "sync: no ping answer within {SYNC_LIMIT:?}"
        );
        let e = c.recv().await;
        if e.is_stream_error() {
            panic!("sync: stream error {e}; received before: {}", show(&got));
        }
        if e.name == "iq" && e.attr("id") == Some(id.as_str()) {
            assert_eq!(e.attr("type"), Some("result"), "ping failed: {e}");
            return got;
        }
        got.push(e);
    }
}

/// Renders stanzas for assertion messages.
pub fn show(els: &[Element]) -> String {
    if els.is_empty() {
        return "(nothing)".to_string();
    }
    els.iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n  ")
}

// ----- roster -----------------------------------------------------------

/// Sends a roster get (optionally with `ver`) and returns the iq reply.
pub async fn roster_get(c: &mut Client, ver: Option<&str>) -> Element {
    let id = c.id();
    let ver_attr = ver
        .map(|v| format!(" ver='{}'", esc(v)))
        .unwrap_or_default();
    c.request(
        &format!("<iq type='get' id='{id}'><query xmlns='{NS_ROSTER}'{ver_attr}/></iq>"),
        &id,
    )
    .await
}

/// Fetches the whole roster; returns `(ver, items)`, asserting a result
/// with a `<query/>`.
pub async fn roster(c: &mut Client) -> (Option<String>, Vec<Element>) {
    let r = roster_get(c, None).await;
    assert_eq!(r.attr("type"), Some("result"), "roster get failed: {r}");
    let q = r
        .child_ns("query", NS_ROSTER)
        .unwrap_or_else(|| panic!("roster result without <query/>: {r}"));
    (
        q.attr("ver").map(str::to_string),
        q.children_named("item").cloned().collect(),
    )
}

/// The roster item for `jid`, if any.
pub async fn roster_item(c: &mut Client, jid: &str) -> Option<Element> {
    roster(c)
        .await
        .1
        .into_iter()
        .find(|i| i.attr("jid") == Some(jid))
}

/// `<item/>` XML for a roster set.
pub fn item_xml(jid: &str, name: Option<&str>, groups: &[&str]) -> String {
    let name = name
        .map(|n| format!(" name='{}'", esc(n)))
        .unwrap_or_default();
    let groups: String = groups
        .iter()
        .map(|g| format!("<group>{}</group>", esc(g)))
        .collect();
    format!("<item jid='{}'{name}>{groups}</item>", esc(jid))
}

/// Sends a roster set with `inner` inside `<query/>`; returns the reply.
pub async fn roster_set(c: &mut Client, inner: &str) -> Element {
    let id = c.id();
    c.request(
        &format!("<iq type='set' id='{id}'><query xmlns='{NS_ROSTER}'>{inner}</query></iq>"),
        &id,
    )
    .await
}

/// Removes `jid` from the roster; returns the reply.
pub async fn roster_remove(c: &mut Client, jid: &str) -> Element {
    roster_set(
        c,
        &format!("<item jid='{}' subscription='remove'/>", esc(jid)),
    )
    .await
}

/// True for a roster push (`<iq type='set'><query xmlns='jabber:iq:roster'/>`).
pub fn is_push(e: &Element) -> bool {
    e.name == "iq" && e.attr("type") == Some("set") && e.child_ns("query", NS_ROSTER).is_some()
}

/// The single `<item/>` of a push (asserting the RFC 6121 §2.1.6 shape).
pub fn push_item(e: &Element) -> &Element {
    let q = e
        .child_ns("query", NS_ROSTER)
        .unwrap_or_else(|| panic!("not a roster push: {e}"));
    let items: Vec<&Element> = q.children.iter().collect();
    assert_eq!(
        items.len(),
        1,
        "a roster push carries exactly one item: {e}"
    );
    assert!(
        items[0].is("item", NS_ROSTER),
        "push child is not an item: {e}"
    );
    items[0]
}

/// The `ver` of a push's `<query/>`.
pub fn push_ver(e: &Element) -> Option<String> {
    e.child_ns("query", NS_ROSTER)
        .and_then(|q| q.attr("ver"))
        .map(str::to_string)
}

/// Checks a push received by `c` (id, `from` absent or the user's bare JID,
/// `ver` present, one item) and answers it with an iq result as a client
/// must (RFC 6121 §2.1.6).
pub async fn check_and_ack_push(c: &mut Client, e: &Element) {
    let me = c.full_jid();
    let own_bare = me.split('/').next().unwrap_or("").to_string();
    let from = e.attr("from");
    assert!(
        from.is_none() || from == Some(own_bare.as_str()),
        "roster push from someone else than the user's account: {e}"
    );
    let id = e
        .attr("id")
        .unwrap_or_else(|| panic!("roster push without id: {e}"))
        .to_string();
    assert!(
        push_ver(e).is_some(),
        "roster push without ver although rosterver is advertised: {e}"
    );
    push_item(e);
    c.send(&format!("<iq type='result' id='{}'/>", esc(&id)))
        .await;
}

/// Waits for a roster push about `jid` (other stanzas are queued), checks
/// and acknowledges it, and returns the push.
pub async fn recv_push_for(c: &mut Client, jid: &str) -> Element {
    let j = jid.to_string();
    let e = c
        .recv_where(&format!("roster push for {jid}"), move |e| {
            is_push(e)
                && e.child_ns("query", NS_ROSTER)
                    .and_then(|q| q.child("item"))
                    .and_then(|i| i.attr("jid"))
                    == Some(j.as_str())
        })
        .await;
    check_and_ack_push(c, &e).await;
    e
}

/// Pushes among `els` (e.g. from [`sync`]) about `jid`.
pub fn pushes_for<'a>(els: &'a [Element], jid: &str) -> Vec<&'a Element> {
    els.iter()
        .filter(|e| is_push(e))
        .filter(|e| {
            e.child_ns("query", NS_ROSTER)
                .and_then(|q| q.child("item"))
                .and_then(|i| i.attr("jid"))
                == Some(jid)
        })
        .collect()
}

/// Asserts a roster item's `subscription` (absent counts as `none`), its
/// `ask` (`Some("subscribe")` or absent) and `approved` (`true` or absent).
pub fn assert_item_state(item: &Element, sub: &str, ask: bool, approved: bool, ctx: &str) {
    let s = item.attr("subscription").unwrap_or("none");
    assert_eq!(s, sub, "{ctx}: subscription of {item}");
    if ask {
        assert_eq!(item.attr("ask"), Some("subscribe"), "{ctx}: ask of {item}");
    } else {
        assert_eq!(item.attr("ask"), None, "{ctx}: unexpected ask in {item}");
    }
    let appr = matches!(item.attr("approved"), Some("true") | Some("1"));
    assert_eq!(appr, approved, "{ctx}: approved of {item}");
}

// ----- presence ---------------------------------------------------------

/// True for a presence from `from` whose `type` is `ty` (`None` = available).
pub fn is_presence(e: &Element, from: &str, ty: Option<&str>) -> bool {
    e.name == "presence" && e.attr("from") == Some(from) && e.attr("type") == ty
}

/// Waits for a presence from `from` with type `ty` (others are queued).
pub async fn recv_presence(c: &mut Client, from: &str, ty: Option<&str>) -> Element {
    let f = from.to_string();
    let t = ty.map(str::to_string);
    c.recv_where(&format!("presence type={ty:?} from {from}"), move |e| {
        is_presence(e, &f, t.as_deref())
    })
    .await
}

/// Sends a subscription-related presence (`subscribe`, `subscribed`, ...).
pub async fn send_sub(c: &mut Client, to: &str, ty: &str) {
    c.send(&format!("<presence to='{}' type='{ty}'/>", esc(to)))
        .await;
}

/// Makes `a` subscribed to `b`'s presence (a: `to`, b: `from`, or `both`
/// when the reverse already exists) with real stanzas from throwaway
/// sessions that never send presence (so no presence is broadcast and the
/// request is answered from storage); checks both rosters.
pub async fn subscribe_one_way(server: &Server, a: (&str, &str), b: (&str, &str)) {
    let res = super::unique("setup");
    let mut ca = login(server, a, &res).await;
    send_sub(&mut ca, &bare(b), "subscribe").await;
    sync(&mut ca).await;
    let mut cb = login(server, b, &res).await;
    send_sub(&mut cb, &bare(a), "subscribed").await;
    sync(&mut cb).await;
    let ia = roster_item(&mut ca, &bare(b))
        .await
        .unwrap_or_else(|| panic!("setup: {} has no roster item for {}", a.0, bare(b)));
    let sa = ia.attr("subscription").unwrap_or("none");
    assert!(
        (sa == "to" || sa == "both") && ia.attr("ask").is_none(),
        "setup: {} subscribed to {} but its item is {ia}",
        a.0,
        b.0
    );
    let ib = roster_item(&mut cb, &bare(a))
        .await
        .unwrap_or_else(|| panic!("setup: {} has no roster item for {}", b.0, bare(a)));
    let sb = ib.attr("subscription").unwrap_or("none");
    assert!(
        sb == "from" || sb == "both",
        "setup: {} approved {} but its item is {ib}",
        b.0,
        a.0
    );
    ca.close().await;
    cb.close().await;
}

/// Makes `a` and `b` subscribed to each other (`both` on both sides).
pub async fn subscribe_mutual(server: &Server, a: (&str, &str), b: (&str, &str)) {
    subscribe_one_way(server, a, b).await;
    subscribe_one_way(server, b, a).await;
}

// ----- messages -----------------------------------------------------------

/// A chat message with `body`.
pub fn chat(to: &str, id: &str, body: &str) -> String {
    format!(
        "<message to='{}' type='chat' id='{}'><body>{}</body></message>",
        esc(to),
        esc(id),
        esc(body)
    )
}

/// Bodies of the messages among `els` that have one, in order.
pub fn bodies(els: &[Element]) -> Vec<String> {
    els.iter()
        .filter(|e| e.name == "message")
        .filter_map(|e| e.child_text("body").map(str::to_string))
        .collect()
}

/// Seconds since the Unix epoch of an XEP-0082 DateTime
/// (`YYYY-MM-DDThh:mm:ss[.sss](Z|±hh:mm)`); `None` if malformed.
pub fn parse_stamp(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return None;
    }
    if b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if t.bytes().all(|c| c.is_ascii_digit()) {
            t.parse().ok()
        } else {
            None
        }
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        rest = &frac[n..];
    }
    let offset = match rest {
        "Z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let t = &rest[1..];
            if t.len() != 5 || t.as_bytes()[2] != b':' {
                return None;
            }
            let oh: i64 = t[0..2].parse().ok()?;
            let om: i64 = t[3..5].parse().ok()?;
            sign * (oh * 3600 + om * 60)
        }
    };
    // Days from civil (Howard Hinnant's algorithm).
    let yy = if mo <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + se - offset)
}

/// Now, in seconds since the Unix epoch.
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Asserts `msg` carries a XEP-0203 `<delay/>` from `localhost` whose
/// stamp lies between `not_before` and now (seconds, with 2 s of slack).
pub fn assert_offline_delay(msg: &Element, not_before: i64) {
    let delay = msg
        .child_ns("delay", NS_DELAY)
        .unwrap_or_else(|| panic!("offline message without <delay xmlns='{NS_DELAY}'/>: {msg}"));
    assert_eq!(
        delay.attr("from"),
        Some("localhost"),
        "delay not from the server: {msg}"
    );
    let stamp = delay
        .attr("stamp")
        .unwrap_or_else(|| panic!("delay without stamp: {msg}"));
    let t = parse_stamp(stamp).unwrap_or_else(|| panic!("stamp {stamp:?} is not XEP-0082: {msg}"));
    let now = now_secs();
    assert!(
        t >= not_before - 2 && t <= now + 2,
        "stamp {stamp} ({t}) outside [{not_before}, {now}]: {msg}"
    );
}
