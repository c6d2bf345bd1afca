//! XEP-0313 Message Archive Management and XEP-0359 stanza ids against the
//! real binary: both sides of a 1:1 chat archived, results in order before
//! the `<fin/>`, the `with` filter, RSM paging forwards and from the end,
//! bad form values, another account's archive refused, and messages to an
//! offline account archived.

mod common;

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
