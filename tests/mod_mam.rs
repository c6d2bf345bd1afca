//! XEP-0313 Message Archive Management and XEP-0359 stanza ids against the
//! real binary: both sides of a 1:1 chat archived, results in order before
//! the `<fin/>`, the `with` filter, RSM paging forwards and from the end,
//! bad form values, another account's archive refused, and messages to an
//! offline account archived.

use crate::common;

use common::client::Client;
use common::im::{self, bare, sync, ALICE, BOB, CAROL};
use common::Element;

const NS_MAM: &str = "urn:xmpp:mam:2";
const NS_RSM: &str = "http://jabber.org/protocol/rsm";
const NS_SID: &str = "urn:xmpp:sid:0";
const NS_FORWARD: &str = "urn:xmpp:forward:0";
const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";

/// Sends a MAM query (`inner` = form and RSM) and returns the result messages
/// received before the iq answer, and the answer.
async fn mam(c: &mut Client, to: Option<&str>, inner: &str) -> (Vec<Element>, Element) {
    let id = c.id();
    let to = to.map(|t| format!(" to='{t}'")).unwrap_or_default();
    c.send(&format!(
        "<iq type='set' id='{id}'{to}><query xmlns='{NS_MAM}' queryid='q-{id}'>{inner}</query></iq>"
    ))
    .await;
    let mut results = Vec::new();
    for _ in 0..500 {
        let e = c.recv().await;
        if e.name == "iq" && e.attr("id") == Some(id.as_str()) {
            for r in &results {
                let r: &Element = r;
                let res = r.child_ns("result", NS_MAM).unwrap();
                assert_eq!(res.attr("queryid"), Some(format!("q-{id}").as_str()), "{r}");
            }
            return (results, e);
        }
        if e.name == "message" && e.child_ns("result", NS_MAM).is_some() {
            results.push(e);
        }
    }
    panic!("no answer to the MAM query");
}

fn with_form(with: &str) -> String {
    format!(
        "<x xmlns='jabber:x:data' type='submit'>\
         <field var='FORM_TYPE' type='hidden'><value>{NS_MAM}</value></field>\
         <field var='with'><value>{with}</value></field></x>"
    )
}

fn rsm(inner: &str) -> String {
    format!("<set xmlns='{NS_RSM}'>{inner}</set>")
}

/// The forwarded message of a result.
fn forwarded(r: &Element) -> &Element {
    let f = r
        .child_ns("result", NS_MAM)
        .and_then(|x| x.child_ns("forwarded", NS_FORWARD))
        .unwrap_or_else(|| panic!("no forwarded in {r}"));
    assert!(
        f.child("delay").and_then(|d| d.attr("stamp")).is_some(),
        "no delay stamp: {r}"
    );
    f.child("message").expect("forwarded message")
}

fn bodies(rs: &[Element]) -> Vec<String> {
    rs.iter()
        .map(|r| forwarded(r).child_text("body").unwrap_or("").to_string())
        .collect()
}

fn result_id(r: &Element) -> String {
    r.child_ns("result", NS_MAM)
        .and_then(|x| x.attr("id"))
        .unwrap()
        .to_string()
}

/// `complete`, first, last, count of a `<fin/>` answer.
fn fin(answer: &Element) -> (bool, Option<String>, Option<String>, Option<String>) {
    assert_eq!(answer.attr("type"), Some("result"), "{answer}");
    let fin = answer
        .child_ns("fin", NS_MAM)
        .unwrap_or_else(|| panic!("no fin: {answer}"));
    let set = fin.child_ns("set", NS_RSM).expect("rsm set in fin");
    let t = |n: &str| set.child_text(n).map(str::to_string);
    (
        fin.attr("complete") == Some("true"),
        t("first"),
        t("last"),
        t("count"),
    )
}

fn error_condition(answer: &Element) -> String {
    assert_eq!(answer.attr("type"), Some("error"), "{answer}");
    answer
        .child("error")
        .and_then(|e| e.condition_in(STANZAS))
        .unwrap_or("")
        .to_string()
}

#[tokio::test]
async fn archive_query_paging_and_access() {
    let server = im::im_server();
    let (alice, bob_jid, carol) = (bare(ALICE), bare(BOB), bare(CAROL));

    // A message to carol while she is offline lands in her archive too.
    let mut a = im::online(&server, ALICE, "a").await;
    a.send(&im::chat(&carol, "off", "while you were out")).await;
    sync(&mut a).await;

    let mut b = im::online(&server, BOB, "b").await;
    let mut sent_to_bob = Vec::new();
    for i in 1..=5 {
        let body = format!("m{i}");
        if i % 2 == 1 {
            a.send(&im::chat(&format!("{bob_jid}/b"), &body, &body))
                .await;
            sync(&mut a).await;
            let m = b.recv_message().await;
            assert_eq!(m.child_text("body"), Some(body.as_str()));
            let sid = m
                .child_ns("stanza-id", NS_SID)
                .unwrap_or_else(|| panic!("no stanza-id: {m}"));
            assert_eq!(sid.attr("by"), Some(bob_jid.as_str()), "{m}");
            sent_to_bob.push(sid.attr("id").unwrap().to_string());
        } else {
            // A stanza-id forged by bob in alice's name is removed.
            b.send(&format!(
                "<message to='{alice}/a' type='chat' id='{body}'><body>{body}</body>\
                 <stanza-id xmlns='{NS_SID}' by='{alice}' id='forged'/></message>"
            ))
            .await;
            sync(&mut b).await;
            let m = a.recv_message().await;
            assert_eq!(m.child_text("body"), Some(body.as_str()));
            let sids: Vec<&Element> = m.children_named("stanza-id").collect();
            assert_eq!(sids.len(), 1, "{m}");
            assert_ne!(sids[0].attr("id"), Some("forged"), "{m}");
        }
    }
    // A chat state without a body is not archived.
    a.send(&format!(
        "<message to='{bob_jid}/b' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>"
    ))
    .await;
    sync(&mut a).await;

    // Carol comes online, gets the offline message, and finds it archived.
    let mut c = im::online(&server, CAROL, "c").await;
    let (rs, ans) = mam(&mut c, None, "").await;
    assert_eq!(bodies(&rs), ["while you were out"], "{}", im::show(&rs));
    assert!(fin(&ans).0);
    c.send(&im::chat(&format!("{alice}/a"), "fc", "from carol"))
        .await;
    sync(&mut c).await;
    a.recv_message().await;

    // Alice's archive with bob: the five, in order, then fin complete.
    let (rs, ans) = mam(&mut a, None, &with_form(&bob_jid)).await;
    assert_eq!(
        bodies(&rs),
        ["m1", "m2", "m3", "m4", "m5"],
        "{}",
        im::show(&rs)
    );
    let (complete, first, last, count) = fin(&ans);
    assert!(complete, "{ans}");
    assert_eq!(first.as_deref(), Some(result_id(&rs[0]).as_str()));
    assert_eq!(last.as_deref(), Some(result_id(&rs[4]).as_str()));
    assert_eq!(count.as_deref(), Some("5"));
    for r in &rs {
        assert_eq!(r.attr("from"), Some(alice.as_str()), "{r}");
        assert_eq!(r.attr("to"), Some(format!("{alice}/a").as_str()), "{r}");
    }
    // Outgoing ones are kept as sent (from alice), incoming from bob.
    assert_eq!(
        forwarded(&rs[0]).attr("to"),
        Some(format!("{bob_jid}/b").as_str())
    );
    assert_eq!(
        forwarded(&rs[1]).attr("from"),
        Some(format!("{bob_jid}/b").as_str())
    );

    // Without `with`: carol's messages too; with bob: not.
    let (all, _) = mam(&mut a, None, "").await;
    assert_eq!(
        bodies(&all),
        [
            "while you were out",
            "m1",
            "m2",
            "m3",
            "m4",
            "m5",
            "from carol"
        ]
    );
    let (rs, _) = mam(&mut a, None, &with_form(&carol)).await;
    assert_eq!(bodies(&rs), ["while you were out", "from carol"]);

    // Paging forward with max=2.
    let form = with_form(&bob_jid);
    let (p1, ans) = mam(&mut a, None, &format!("{form}{}", rsm("<max>2</max>"))).await;
    assert_eq!(bodies(&p1), ["m1", "m2"]);
    let (complete, first, last, count) = fin(&ans);
    assert!(!complete, "{ans}");
    assert_eq!(first.as_deref(), Some(result_id(&p1[0]).as_str()));
    assert_eq!(last.as_deref(), Some(result_id(&p1[1]).as_str()));
    assert_eq!(count.as_deref(), Some("5"));
    let after = last.unwrap();
    let (p2, ans) = mam(
        &mut a,
        None,
        &format!(
            "{form}{}",
            rsm(&format!("<max>2</max><after>{after}</after>"))
        ),
    )
    .await;
    assert_eq!(bodies(&p2), ["m3", "m4"]);
    let (complete, _, last, _) = fin(&ans);
    assert!(!complete);
    let (p3, ans) = mam(
        &mut a,
        None,
        &format!(
            "{form}{}",
            rsm(&format!("<max>2</max><after>{}</after>", last.unwrap()))
        ),
    )
    .await;
    assert_eq!(bodies(&p3), ["m5"]);
    assert!(fin(&ans).0, "{ans}");
    // The last page: empty <before/>.
    let (p, ans) = mam(
        &mut a,
        None,
        &format!("{form}{}", rsm("<max>2</max><before/>")),
    )
    .await;
    assert_eq!(bodies(&p), ["m4", "m5"]);
    assert!(!fin(&ans).0, "{ans}");
    // A huge max is capped, not refused.
    let (p, ans) = mam(&mut a, None, &rsm("<max>100000</max>")).await;
    assert_eq!(p.len(), 7);
    assert!(fin(&ans).0);

    // Bob's archive: the ids match the stanza-ids bob was given.
    let (rs, _) = mam(&mut b, None, &with_form(&alice)).await;
    assert_eq!(bodies(&rs), ["m1", "m2", "m3", "m4", "m5"]);
    let incoming: Vec<String> = [0, 2, 4].iter().map(|&i| result_id(&rs[i])).collect();
    assert_eq!(incoming, sent_to_bob);

    // start/end filter by time: an end before everything finds nothing.
    let end_form = format!(
        "<x xmlns='jabber:x:data' type='submit'>\
         <field var='FORM_TYPE' type='hidden'><value>{NS_MAM}</value></field>\
         <field var='end'><value>2000-01-01T00:00:00Z</value></field></x>"
    );
    let (rs, ans) = mam(&mut a, None, &end_form).await;
    assert!(rs.is_empty());
    assert_eq!(fin(&ans).3.as_deref(), Some("0"));

    // Bad values: bad-request; an unknown RSM id: item-not-found.
    let bad = end_form.replace("2000-01-01T00:00:00Z", "yesterday");
    let (rs, ans) = mam(&mut a, None, &bad).await;
    assert!(rs.is_empty());
    assert_eq!(error_condition(&ans), "bad-request");
    let (_, ans) = mam(&mut a, None, &rsm("<max>many</max>")).await;
    assert_eq!(error_condition(&ans), "bad-request");
    let (_, ans) = mam(&mut a, None, &rsm("<after>nope</after>")).await;
    assert_eq!(error_condition(&ans), "item-not-found");

    // Bob's archive is not alice's to read.
    let (rs, ans) = mam(&mut a, Some(&bob_jid), "").await;
    assert!(rs.is_empty(), "{}", im::show(&rs));
    assert_eq!(error_condition(&ans), "forbidden");
}

#[tokio::test]
async fn account_advertises_mam() {
    let server = im::im_server();
    let alice = bare(ALICE);
    let mut a = im::online(&server, ALICE, "a").await;
    let id = a.id();
    let r = a
        .request(
            &format!(
                "<iq type='get' id='{id}' to='{alice}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
            ),
            &id,
        )
        .await;
    let q = r.child("query").unwrap_or_else(|| panic!("{r}"));
    assert!(
        q.children_named("feature")
            .any(|f| f.attr("var") == Some(NS_MAM)),
        "{r}"
    );
}

async fn prefs_iq(c: &mut Client, kind: &str, inner: &str) -> Element {
    let id = c.id();
    c.request(&format!("<iq type='{kind}' id='{id}'>{inner}</iq>"), &id)
        .await
}

/// Bodies of the whole archive (one page of up to 250).
async fn archive(c: &mut Client) -> Vec<String> {
    let (rs, ans) = mam(c, None, &rsm("<max>250</max>")).await;
    assert!(fin(&ans).0, "{ans}");
    bodies(&rs)
}

#[tokio::test]
async fn preferences_decide_what_is_archived() {
    let server = im::im_server();
    let (alice, bob_jid, carol) = (bare(ALICE), bare(BOB), bare(CAROL));
    im::subscribe_mutual(&server, ALICE, CAROL).await;
    let mut a = im::online(&server, ALICE, "a").await;
    let mut b = im::online(&server, BOB, "b").await;
    let mut c = im::online(&server, CAROL, "c").await;

    // No preferences stored: the module default (always), empty lists.
    let r = prefs_iq(&mut a, "get", &format!("<prefs xmlns='{NS_MAM}'/>")).await;
    let p = r.child_ns("prefs", NS_MAM).unwrap_or_else(|| panic!("{r}"));
    assert_eq!(p.attr("default"), Some("always"), "{r}");

    // never by default, but always carol.
    let r = prefs_iq(
        &mut a,
        "set",
        &format!(
            "<prefs xmlns='{NS_MAM}' default='never'><always><jid>{carol}</jid></always><never/></prefs>"
        ),
    )
    .await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    let p = r.child_ns("prefs", NS_MAM).unwrap_or_else(|| panic!("{r}"));
    assert_eq!(p.attr("default"), Some("never"), "{r}");
    let r = prefs_iq(&mut a, "get", &format!("<prefs xmlns='{NS_MAM}'/>")).await;
    let p = r.child_ns("prefs", NS_MAM).unwrap();
    assert_eq!(p.attr("default"), Some("never"), "{r}");
    let always: Vec<String> = p
        .child_ns("always", NS_MAM)
        .unwrap()
        .children_named("jid")
        .map(|j| j.text.clone())
        .collect();
    assert_eq!(always, std::slice::from_ref(&carol));

    // One after the other, so each archive's order is known.
    a.send(&im::chat(&format!("{bob_jid}/b"), "p1", "to bob"))
        .await;
    sync(&mut a).await;
    b.send(&im::chat(&format!("{alice}/a"), "p2", "from bob"))
        .await;
    sync(&mut b).await;
    c.send(&im::chat(&format!("{alice}/a"), "p3", "from carol"))
        .await;
    sync(&mut c).await;
    sync(&mut a).await;
    assert_eq!(archive(&mut a).await, ["from carol"]);
    // Bob's own preferences (none: always) still keep his side.
    assert_eq!(archive(&mut b).await, ["to bob", "from bob"]);

    // roster: carol (subscribed) yes, bob (not in the roster) no; never wins.
    let r = prefs_iq(
        &mut a,
        "set",
        &format!("<prefs xmlns='{NS_MAM}' default='roster'><always/><never><jid>{bob_jid}/b</jid></never></prefs>"),
    )
    .await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    c.send(&im::chat(&format!("{alice}/a"), "p4", "carol again"))
        .await;
    b.send(&im::chat(&format!("{alice}/a"), "p5", "bob again"))
        .await;
    sync(&mut b).await;
    sync(&mut c).await;
    sync(&mut a).await;
    assert_eq!(archive(&mut a).await, ["from carol", "carol again"]);

    // Bad preferences are refused; another account's preferences are not ours.
    let r = prefs_iq(
        &mut a,
        "set",
        &format!("<prefs xmlns='{NS_MAM}' default='sometimes'/>"),
    )
    .await;
    assert_eq!(error_condition(&r), "bad-request");
    let id = a.id();
    let r = a
        .request(
            &format!("<iq type='get' id='{id}' to='{bob_jid}'><prefs xmlns='{NS_MAM}'/></iq>"),
            &id,
        )
        .await;
    assert_eq!(error_condition(&r), "forbidden");
}

#[tokio::test]
async fn fin_complete_at_both_ends_and_what_is_never_archived() {
    let server = im::im_server();
    let bob_jid = bare(BOB);
    let mut a = im::online(&server, ALICE, "a").await;
    let mut b = im::online(&server, BOB, "b").await;
    let to = format!("{bob_jid}/b");
    for (i, body) in ["m1", "m2", "m3"].iter().enumerate() {
        a.send(&im::chat(&to, &format!("c{i}"), body)).await;
    }
    // Not archived: headline, error, chat state only, a no-store hint.
    a.send(&format!(
        "<message to='{to}' type='headline'><body>news</body></message>"
    ))
    .await;
    a.send(&format!(
        "<message to='{to}' type='error'><body>oops</body></message>"
    ))
    .await;
    a.send(&format!(
        "<message to='{to}' type='chat'><active xmlns='http://jabber.org/protocol/chatstates'/></message>"
    ))
    .await;
    a.send(&format!(
        "<message to='{to}' type='chat'><body>secret</body><no-store xmlns='urn:xmpp:hints'/></message>"
    ))
    .await;
    sync(&mut a).await;
    sync(&mut b).await;
    assert_eq!(archive(&mut a).await, ["m1", "m2", "m3"]);
    assert_eq!(archive(&mut b).await, ["m1", "m2", "m3"]);

    // Exactly a page's worth: complete.
    let (p, ans) = mam(&mut a, None, &rsm("<max>3</max>")).await;
    assert_eq!(bodies(&p), ["m1", "m2", "m3"]);
    assert!(fin(&ans).0, "{ans}");
    // Forwards: the first page is not complete, the last one is.
    let (p, ans) = mam(&mut a, None, &rsm("<max>2</max>")).await;
    assert_eq!(bodies(&p), ["m1", "m2"]);
    let (complete, _, last, count) = fin(&ans);
    assert!(!complete, "{ans}");
    assert_eq!(count.as_deref(), Some("3"));
    let (p, ans) = mam(
        &mut a,
        None,
        &rsm(&format!("<max>2</max><after>{}</after>", last.unwrap())),
    )
    .await;
    assert_eq!(bodies(&p), ["m3"]);
    assert!(fin(&ans).0, "{ans}");
    // Backwards: the last page is not complete, the one with m1 is.
    let (p, ans) = mam(&mut a, None, &rsm("<max>2</max><before/>")).await;
    assert_eq!(bodies(&p), ["m2", "m3"]);
    let (complete, first, _, _) = fin(&ans);
    assert!(!complete, "{ans}");
    let (p, ans) = mam(
        &mut a,
        None,
        &rsm(&format!("<max>2</max><before>{}</before>", first.unwrap())),
    )
    .await;
    assert_eq!(bodies(&p), ["m1"]);
    assert!(fin(&ans).0, "{ans}");
    // after-id / before-id form fields bound the range too.
    let (all, _) = mam(&mut a, None, "").await;
    let ids: Vec<String> = all.iter().map(result_id).collect();
    let form = format!(
        "<x xmlns='jabber:x:data' type='submit'>\
         <field var='FORM_TYPE' type='hidden'><value>{NS_MAM}</value></field>\
         <field var='after-id'><value>{}</value></field>\
         <field var='before-id'><value>{}</value></field></x>",
        ids[0], ids[2]
    );
    let (p, ans) = mam(&mut a, None, &form).await;
    assert_eq!(bodies(&p), ["m2"]);
    let (complete, _, _, count) = fin(&ans);
    assert!(complete);
    assert_eq!(count.as_deref(), Some("3"));
}

#[tokio::test]
async fn offline_self_and_carbon_copied_messages_are_archived_once() {
    let server = im::im_server();
    let (alice, bob_jid) = (bare(ALICE), bare(BOB));
    let mut a = im::online(&server, ALICE, "a").await;
    let mut a2 = im::online(&server, ALICE, "a2").await;
    for c in [&mut a, &mut a2] {
        let id = c.id();
        let r = c
            .request(
                &format!("<iq type='set' id='{id}'><enable xmlns='urn:xmpp:carbons:2'/></iq>"),
                &id,
            )
            .await;
        assert_eq!(r.attr("type"), Some("result"), "{r}");
    }
    // To bob while he is offline (carbon-copied to a2).
    a.send(&im::chat(&bob_jid, "o1", "offline one")).await;
    // Between alice's own resources.
    a.send(&im::chat(&format!("{alice}/a2"), "o2", "note to self"))
        .await;
    sync(&mut a).await;
    sync(&mut a2).await;
    let (mut b, got) = im::online_with(&server, BOB, "b", "<presence/>").await;
    let m = got
        .iter()
        .find(|e| e.name == "message")
        .unwrap_or_else(|| panic!("offline message: {}", im::show(&got)));
    let sid = m
        .child_ns("stanza-id", NS_SID)
        .unwrap_or_else(|| panic!("{m}"));
    assert_eq!(sid.attr("by"), Some(bob_jid.as_str()));
    let (rs, _) = mam(&mut b, None, "").await;
    assert_eq!(bodies(&rs), ["offline one"]);
    assert_eq!(result_id(&rs[0]), sid.attr("id").unwrap());
    assert_eq!(archive(&mut a).await, ["offline one", "note to self"]);
}

#[tokio::test]
async fn expired_messages_are_left_out_and_deleted() {
    let modules = common::server::DEFAULT_MODULES
        .replace("  mod_mam: {}\n", "  mod_mam: {archive_expires_after: 2}\n");
    let server = common::server::Server::start_with(common::server::Config {
        modules,
        ..common::server::Config::default()
    });
    server.register(ALICE.0, "localhost", ALICE.1);
    server.register(BOB.0, "localhost", BOB.1);
    let bob_jid = bare(BOB);
    let mut a = im::online(&server, ALICE, "a").await;
    a.send(&im::chat(&bob_jid, "x1", "old")).await;
    sync(&mut a).await;
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    a.send(&im::chat(&bob_jid, "x2", "new")).await;
    sync(&mut a).await;
    assert_eq!(archive(&mut a).await, ["new"]);
    let (_, ans) = mam(&mut a, None, "").await;
    assert_eq!(fin(&ans).3.as_deref(), Some("1"));
    // The expired one was deleted from storage at bob's login (bob: "old"
    // is expired, "new" waits); ctl finds only what is left.
    let _b = im::online(&server, BOB, "b").await;
    let (code, out, err) = server.ctl(&["delete_old_mam_messages", "sometimes", "1"]);
    assert_eq!(code, 1, "{out}{err}");
    let out = server.ctl_ok(&["delete_old_mam_messages", "groupchat", "0"]);
    assert_eq!(out.trim(), "0");
    let out = server.ctl_ok(&["delete_old_mam_messages", "all", "0"]);
    // alice's "old" and "new", bob's "new" ("old" went at his login).
    assert_eq!(out.trim(), "3", "{out}");
    assert!(archive(&mut a).await.is_empty());
}

#[tokio::test]
async fn archive_is_removed_with_the_account() {
    let server = im::im_server();
    let mut a = im::online(&server, ALICE, "a").await;
    a.send(&im::chat(&bare(BOB), "g1", "before")).await;
    sync(&mut a).await;
    assert_eq!(archive(&mut a).await, ["before"]);
    let r = prefs_iq(
        &mut a,
        "set",
        &format!("<prefs xmlns='{NS_MAM}' default='never'/>"),
    )
    .await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    server.ctl_ok(&["unregister", ALICE.0, "localhost"]);
    drop(a);
    server.register(ALICE.0, "localhost", ALICE.1);
    let mut a = im::online(&server, ALICE, "a").await;
    assert!(archive(&mut a).await.is_empty());
    // Preferences went too.
    let r = prefs_iq(&mut a, "get", &format!("<prefs xmlns='{NS_MAM}'/>")).await;
    assert_eq!(
        r.child_ns("prefs", NS_MAM).and_then(|p| p.attr("default")),
        Some("always"),
        "{r}"
    );
}
