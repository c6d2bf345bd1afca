//! XEP-0049 private XML storage (`mod_private`) against the real server:
//! what mcabber, profanity and Gajim store there at login (bookmarks,
//! roster notes, the roster group delimiter), kept across a restart, and
//! never readable or writable by another account.

use crate::common;

use common::im::{bare, login, sync, ALICE, BOB};
use common::{Client, Element};

const NS_PRIVATE: &str = "jabber:iq:private";

async fn private(c: &mut Client, kind: &str, to: Option<&str>, inner: &str) -> Element {
    let id = c.id();
    let to = to.map(|t| format!(" to='{t}'")).unwrap_or_default();
    c.request(
        &format!(
            "<iq type='{kind}' id='{id}'{to}><query xmlns='{NS_PRIVATE}'>{inner}</query></iq>"
        ),
        &id,
    )
    .await
}

fn stored<'a>(reply: &'a Element, name: &str, ns: &str) -> &'a Element {
    assert_eq!(reply.attr("type"), Some("result"), "{reply}");
    reply
        .child_ns("query", NS_PRIVATE)
        .and_then(|q| q.child_ns(name, ns))
        .unwrap_or_else(|| panic!("no {name} in {reply}"))
}

const BOOKMARKS: &str = "<storage xmlns='storage:bookmarks'><conference jid='room@conference.example.org' autojoin='true' name='The Room'><nick>al</nick></conference><url name='Home' url='https://example.org/'/></storage>";

#[tokio::test]
async fn bookmarks_notes_and_delimiter_are_stored_and_survive_a_restart() {
    let mut server = common::im::im_server();
    let mut a = login(&server, ALICE, "pc").await;
    // Nothing stored yet: the empty element comes back (what Gajim expects for roster:delimiter).
    let r = private(&mut a, "get", None, "<roster xmlns='roster:delimiter'/>").await;
    let d = stored(&r, "roster", "roster:delimiter");
    assert!(d.text.is_empty() && d.children.is_empty(), "{r}");
    for inner in [
        BOOKMARKS,
        "<roster xmlns='roster:delimiter'>::</roster>",
        "<storage xmlns='storage:rosternotes'><note jid='bob@localhost' cdate='2026-01-01T00:00:00Z' mdate='2026-01-01T00:00:00Z'>met at &amp; work</note></storage>",
    ] {
        let r = private(&mut a, "set", None, inner).await;
        assert_eq!(r.attr("type"), Some("result"), "set {inner}: {r}");
    }
    // Replacing one namespace keeps the others.
    let r = private(
        &mut a,
        "set",
        None,
        "<roster xmlns='roster:delimiter'>/</roster>",
    )
    .await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    a.close().await;
    server.kill_hard(); // SIGKILL: the writes must already be durable
    server.restart();

    let mut a = login(&server, ALICE, "pc2").await;
    let r = private(&mut a, "get", None, "<storage xmlns='storage:bookmarks'/>").await;
    let s = stored(&r, "storage", "storage:bookmarks");
    let conf = s.child("conference").expect("conference");
    assert_eq!(conf.attr("jid"), Some("room@conference.example.org"));
    assert_eq!(conf.attr("autojoin"), Some("true"));
    assert_eq!(conf.child_text("nick"), Some("al"));
    assert_eq!(
        s.child("url").and_then(|u| u.attr("url")),
        Some("https://example.org/")
    );
    let r = private(&mut a, "get", None, "<roster xmlns='roster:delimiter'/>").await;
    assert_eq!(stored(&r, "roster", "roster:delimiter").text, "/");
    let r = private(
        &mut a,
        "get",
        None,
        "<storage xmlns='storage:rosternotes'/>",
    )
    .await;
    let note = stored(&r, "storage", "storage:rosternotes")
        .child("note")
        .expect("note");
    assert_eq!(note.text, "met at & work");
    // Addressed to the own bare JID explicitly: the same.
    let r = private(
        &mut a,
        "get",
        Some(&bare(ALICE)),
        "<storage xmlns='storage:bookmarks'/>",
    )
    .await;
    stored(&r, "storage", "storage:bookmarks");
}

#[tokio::test]
async fn other_accounts_and_bad_requests_are_refused() {
    let server = common::im::im_server();
    let mut a = login(&server, ALICE, "pc").await;
    let r = private(&mut a, "set", None, BOOKMARKS).await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    let mut b = login(&server, BOB, "pc").await;
    let r = private(
        &mut b,
        "get",
        Some(&bare(ALICE)),
        "<storage xmlns='storage:bookmarks'/>",
    )
    .await;
    assert_eq!(
        r.stanza_error(),
        Some(("auth".into(), "forbidden".into())),
        "{r}"
    );
    assert!(!r.to_string().contains("room@conference"), "leaked: {r}");
    let r = private(
        &mut b,
        "set",
        Some(&bare(ALICE)),
        "<storage xmlns='storage:bookmarks'/>",
    )
    .await;
    assert_eq!(
        r.stanza_error(),
        Some(("auth".into(), "forbidden".into())),
        "{r}"
    );
    // Alice's bookmarks are unchanged.
    let r = private(&mut a, "get", None, "<storage xmlns='storage:bookmarks'/>").await;
    assert!(
        stored(&r, "storage", "storage:bookmarks")
            .child("conference")
            .is_some(),
        "{r}"
    );
    // No fragment, or a reserved namespace: not-acceptable.
    let r = private(&mut a, "get", None, "").await;
    assert_eq!(
        r.stanza_error().map(|e| e.1),
        Some("not-acceptable".into()),
        "{r}"
    );
    let r = private(&mut a, "set", None, "<query xmlns='jabber:iq:private'/>").await;
    assert_eq!(
        r.stanza_error().map(|e| e.1),
        Some("not-acceptable".into()),
        "{r}"
    );
    sync(&mut a).await;
}
