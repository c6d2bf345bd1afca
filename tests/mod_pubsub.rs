//! XEP-0060 publish-subscribe (`mod_pubsub`) against the real server: the
//! service on `pubsub.localhost`, listed in the server's disco#items.
//!
//! Checked: service and node disco (identity, features, `pubsub#meta-data`
//! with `pubsub#num_subscribers`); node creation (named, instant, with a
//! configuration form; `access_createnode`; conflict), configuration
//! (get/set, bad values), deletion and purge with their notifications;
//! publish (ids given and generated, auto-create, publish-options
//! preconditions, too-big and malformed payloads), notifications to bare
//! and full JIDs, retract with notify; subscribe/unsubscribe with options,
//! send_last_published_item; items retrieval (all, max_items, by id,
//! XEP-0059 pages with count and index), retention by max_items, items and
//! subscriptions surviving a restart; the access models (open, presence,
//! roster, whitelist, authorize with the owner's approval form) and
//! affiliations (owner, publisher, publish-only, member, outcast). The
//! exchanges of Prosody's pubsub transcripts (basic, multi items, max
//! items, resend on subscribe) are replayed in our own words.

use crate::common;

use common::im::login as connect;
use common::im::{bare, online as login, subscribe_mutual, sync, ALICE, BOB, CAROL};
use common::{Client, Element, Server};

const SERVICE: &str = "pubsub.localhost";
const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
const OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
const EVENT: &str = "http://jabber.org/protocol/pubsub#event";
const ERRORS: &str = "http://jabber.org/protocol/pubsub#errors";
const RSM: &str = "http://jabber.org/protocol/rsm";
const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
const NODE_CONFIG: &str = "http://jabber.org/protocol/pubsub#node_config";
const ATOM: &str = "http://www.w3.org/2005/Atom";

/// alice and bob may create nodes, carol may not; small limits to test them.
fn server() -> Server {
    let s = Server::start_with(common::Config {
        modules: format!(
            "{}  mod_pubsub:\n    access_createnode: creators\n    max_items_node: 50\n    max_payload_size: 2000\n    plugins: [flat, pep]\n",
            common::server::DEFAULT_MODULES
        ),
        extra_yaml: "acl:\n  creator:\n    user: [alice@localhost, bob@localhost]\naccess_rules:\n  creators:\n    allow: creator\n".into(),
        ..Default::default()
    });
    s.register("alice", "localhost", "secret");
    s.register("bob", "localhost", "hunter2");
    s.register("carol", "localhost", "carolpw");
    s
}

/// Sends an iq of `kind` to the service with this payload; its answer.
async fn iq(c: &mut Client, kind: &str, payload: &str) -> Element {
    let id = c.id();
    c.request(
        &format!("<iq type='{kind}' to='{SERVICE}' id='{id}'>{payload}</iq>"),
        &id,
    )
    .await
}

async fn ok(c: &mut Client, kind: &str, payload: &str) -> Element {
    let r = iq(c, kind, payload).await;
    assert_eq!(r.attr("type"), Some("result"), "{payload} -> {r}");
    r
}

/// The error's (type, condition, pubsub condition).
fn err(r: &Element) -> (String, String, String) {
    assert_eq!(r.attr("type"), Some("error"), "{r}");
    let (t, c) = r.stanza_error().expect("an error");
    let app = r
        .child("error")
        .and_then(|e| e.children.iter().find(|c| c.ns == ERRORS))
        .map(|c| c.name.clone())
        .unwrap_or_default();
    (t, c, app)
}

async fn expect_err(c: &mut Client, kind: &str, payload: &str, cond: &str, app: &str) {
    let r = iq(c, kind, payload).await;
    let (_, got, got_app) = err(&r);
    assert_eq!(
        (got.as_str(), got_app.as_str()),
        (cond, app),
        "{payload} -> {r}"
    );
}

fn form(form_type: &str, fields: &[(&str, &str)]) -> String {
    let f: String = fields
        .iter()
        .map(|(k, v)| format!("<field var='{k}'><value>{v}</value></field>"))
        .collect();
    format!("<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>{form_type}</value></field>{f}</x>")
}

async fn create(c: &mut Client, node: &str, config: &[(&str, &str)]) {
    let conf = if config.is_empty() {
        String::new()
    } else {
        format!("<configure>{}</configure>", form(NODE_CONFIG, config))
    };
    ok(
        c,
        "set",
        &format!("<pubsub xmlns='{PUBSUB}'><create node='{node}'/>{conf}</pubsub>"),
    )
    .await;
}

async fn configure(c: &mut Client, node: &str, fields: &[(&str, &str)]) -> Element {
    iq(
        c,
        "set",
        &format!(
            "<pubsub xmlns='{OWNER}'><configure node='{node}'>{}</configure></pubsub>",
            form(NODE_CONFIG, fields)
        ),
    )
    .await
}

fn entry(title: &str) -> String {
    format!("<entry xmlns='{ATOM}'><title>{title}</title></entry>")
}

async fn publish(c: &mut Client, node: &str, id: Option<&str>, payload: &str) -> Element {
    let id = id.map(|i| format!(" id='{i}'")).unwrap_or_default();
    iq(
        c,
        "set",
        &format!("<pubsub xmlns='{PUBSUB}'><publish node='{node}'><item{id}>{payload}</item></publish></pubsub>"),
    )
    .await
}

/// The id the service gave the published item.
fn published_id(r: &Element) -> String {
    r.child("pubsub")
        .and_then(|p| p.child("publish"))
        .and_then(|p| p.child("item"))
        .and_then(|i| i.attr("id"))
        .unwrap_or_else(|| panic!("no published item id in {r}"))
        .to_string()
}

async fn subscribe(c: &mut Client, node: &str, jid: &str, extra: &str) -> Element {
    iq(
        c,
        "set",
        &format!("<pubsub xmlns='{PUBSUB}'><subscribe node='{node}' jid='{jid}'/>{extra}</pubsub>"),
    )
    .await
}

fn subscription_state(r: &Element) -> String {
    r.child("pubsub")
        .and_then(|p| p.child("subscription"))
        .and_then(|s| s.attr("subscription"))
        .unwrap_or("")
        .to_string()
}

/// Item ids of an items result, in order.
fn item_ids(r: &Element) -> Vec<String> {
    r.child("pubsub")
        .and_then(|p| p.child("items"))
        .map(|i| {
            i.children_named("item")
                .filter_map(|x| x.attr("id").map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

async fn items(c: &mut Client, node: &str, attrs: &str, inner: &str, set: &str) -> Element {
    iq(
        c,
        "get",
        &format!(
            "<pubsub xmlns='{PUBSUB}'><items node='{node}'{attrs}>{inner}</items>{set}</pubsub>"
        ),
    )
    .await
}

/// The next notification (a message from the service with an `<event/>`).
async fn event(c: &mut Client) -> Element {
    let m = c
        .recv_where("a pubsub notification", |e| {
            e.name == "message"
                && e.attr("from") == Some(SERVICE)
                && e.child_ns("event", EVENT).is_some()
        })
        .await;
    m.child_ns("event", EVENT).cloned().expect("event")
}

fn field_value<'a>(x: &'a Element, var: &str) -> Option<&'a str> {
    x.children_named("field")
        .find(|f| f.attr("var") == Some(var))
        .and_then(|f| f.child("value"))
        .map(|v| v.text.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_disco_create_configure_delete() {
    let server = server();
    let mut a = login(&server, ALICE, "pc").await;
    let mut b = login(&server, BOB, "pc").await;
    let mut c = login(&server, CAROL, "pc").await;

    // The server lists the service; the service says what it is.
    let id = a.id();
    let listed = a
        .request(
            &format!("<iq type='get' to='localhost' id='{id}'><query xmlns='{DISCO_ITEMS}'/></iq>"),
            &id,
        )
        .await;
    let q = listed.child("query").unwrap();
    assert!(
        q.children_named("item")
            .any(|i| i.attr("jid") == Some(SERVICE)),
        "{listed}"
    );
    let info = ok(&mut a, "get", &format!("<query xmlns='{DISCO_INFO}'/>")).await;
    let q = info.child("query").unwrap();
    let ident = q.child("identity").unwrap();
    assert_eq!(
        (ident.attr("category"), ident.attr("type")),
        (Some("pubsub"), Some("service"))
    );
    let features: Vec<&str> = q
        .children_named("feature")
        .filter_map(|f| f.attr("var"))
        .collect();
    for f in [
        "",
        "#create-nodes",
        "#publish",
        "#subscribe",
        "#access-authorize",
        "#retrieve-items",
        "#meta-data",
    ] {
        let want = format!("{PUBSUB}{f}");
        assert!(features.contains(&want.as_str()), "{want} missing: {info}");
    }

    // Named creation, then a conflict; carol may not create.
    create(&mut a, "news", &[]).await;
    expect_err(
        &mut a,
        "set",
        &format!("<pubsub xmlns='{PUBSUB}'><create node='news'/></pubsub>"),
        "conflict",
        "",
    )
    .await;
    expect_err(
        &mut c,
        "set",
        &format!("<pubsub xmlns='{PUBSUB}'><create node='hers'/></pubsub>"),
        "forbidden",
        "",
    )
    .await;
    // An instant node gets a name from the service.
    let r = ok(
        &mut b,
        "set",
        &format!("<pubsub xmlns='{PUBSUB}'><create/></pubsub>"),
    )
    .await;
    let instant = r
        .child("pubsub")
        .and_then(|p| p.child("create"))
        .and_then(|c| c.attr("node"))
        .unwrap_or("")
        .to_string();
    assert!(!instant.is_empty(), "{r}");

    // Create with a configuration; the form shows it back.
    create(
        &mut a,
        "channel",
        &[
            ("pubsub#title", "The Channel"),
            ("pubsub#max_items", "3"),
            ("pubsub#access_model", "open"),
        ],
    )
    .await;
    let r = ok(
        &mut a,
        "get",
        &format!("<pubsub xmlns='{OWNER}'><configure node='channel'/></pubsub>"),
    )
    .await;
    let x = r
        .child("pubsub")
        .and_then(|p| p.child("configure"))
        .and_then(|c| c.child("x"))
        .expect("form");
    assert_eq!(field_value(x, "FORM_TYPE"), Some(NODE_CONFIG));
    assert_eq!(field_value(x, "pubsub#title"), Some("The Channel"));
    assert_eq!(field_value(x, "pubsub#max_items"), Some("3"));
    assert_eq!(field_value(x, "pubsub#access_model"), Some("open"));
    // Only owners configure; bad values are refused, nothing changes.
    let r = configure(&mut b, "channel", &[("pubsub#title", "Mine")]).await;
    assert_eq!(err(&r).1, "forbidden", "{r}");
    let r = configure(&mut a, "channel", &[("pubsub#max_items", "51")]).await;
    assert_eq!(err(&r).1, "not-acceptable", "{r}");
    let r = configure(&mut a, "channel", &[("pubsub#access_model", "everyone")]).await;
    assert_eq!(err(&r).1, "not-acceptable", "{r}");
    let r = configure(&mut a, "channel", &[("pubsub#deliver_payloads", "perhaps")]).await;
    assert_eq!(err(&r).1, "not-acceptable", "{r}");
    let r = configure(&mut a, "nowhere", &[("pubsub#title", "x")]).await;
    assert_eq!(err(&r).1, "item-not-found", "{r}");
    let r = iq(
        &mut a,
        "set",
        &format!(
            "<pubsub xmlns='{OWNER}'><configure node='channel'>{}</configure></pubsub>",
            form("urn:wrong", &[])
        ),
    )
    .await;
    assert_eq!(err(&r).1, "bad-request", "{r}");

    // Bob subscribes; notify_config sends him the new configuration.
    assert_eq!(
        subscription_state(&subscribe(&mut b, "channel", &bare(BOB), "").await),
        "subscribed"
    );
    let r = configure(
        &mut a,
        "channel",
        &[
            ("pubsub#notify_config", "1"),
            ("pubsub#description", "All the news"),
        ],
    )
    .await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    let ev = event(&mut b).await;
    let conf = ev.child("configuration").expect("configuration event");
    assert_eq!(conf.attr("node"), Some("channel"));

    // Node disco#info: leaf, meta-data with the subscriber count.
    let r = ok(
        &mut c,
        "get",
        &format!("<query xmlns='{DISCO_INFO}' node='channel'/>"),
    )
    .await;
    let q = r.child("query").unwrap();
    assert_eq!(
        q.child("identity").and_then(|i| i.attr("type")),
        Some("leaf"),
        "{r}"
    );
    let meta = q.child("x").expect("meta-data form");
    assert_eq!(
        field_value(meta, "FORM_TYPE"),
        Some("http://jabber.org/protocol/pubsub#meta-data")
    );
    assert_eq!(
        field_value(meta, "pubsub#num_subscribers"),
        Some("1"),
        "{r}"
    );
    assert_eq!(field_value(meta, "pubsub#title"), Some("The Channel"));
    assert_eq!(
        field_value(meta, "pubsub#description"),
        Some("All the news")
    );
    assert_eq!(field_value(meta, "pubsub#owner"), Some("alice@localhost"));
    let r = iq(
        &mut c,
        "get",
        &format!("<query xmlns='{DISCO_INFO}' node='nothing'/>"),
    )
    .await;
    assert_eq!(err(&r).1, "item-not-found");
    // The service's disco#items: its nodes, titled.
    let r = ok(&mut c, "get", &format!("<query xmlns='{DISCO_ITEMS}'/>")).await;
    let q = r.child("query").unwrap();
    let channel = q
        .children_named("item")
        .find(|i| i.attr("node") == Some("channel"))
        .expect("channel listed");
    assert_eq!(channel.attr("name"), Some("The Channel"));
    assert_eq!(channel.attr("jid"), Some(SERVICE));
    assert_eq!(q.children_named("item").count(), 3, "{r}");
    // The default configuration.
    let r = ok(
        &mut a,
        "get",
        &format!("<pubsub xmlns='{OWNER}'><default/></pubsub>"),
    )
    .await;
    assert!(
        r.child("pubsub")
            .and_then(|p| p.child("default"))
            .and_then(|d| d.child("x"))
            .is_some(),
        "{r}"
    );

    // Deletion: owners only; the subscriber is told.
    expect_err(
        &mut b,
        "set",
        &format!("<pubsub xmlns='{OWNER}'><delete node='channel'/></pubsub>"),
        "forbidden",
        "",
    )
    .await;
    ok(
        &mut a,
        "set",
        &format!("<pubsub xmlns='{OWNER}'><delete node='channel'/></pubsub>"),
    )
    .await;
    let ev = event(&mut b).await;
    assert_eq!(
        ev.child("delete").and_then(|d| d.attr("node")),
        Some("channel"),
        "{ev}"
    );
    let r = items(&mut a, "channel", "", "", "").await;
    assert_eq!(err(&r).1, "item-not-found");
    expect_err(
        &mut a,
        "set",
        &format!("<pubsub xmlns='{OWNER}'><delete node='channel'/></pubsub>"),
        "item-not-found",
        "",
    )
    .await;
    // Unknown payloads to the service, and no operation at all.
    let r = iq(&mut a, "get", "<query xmlns='jabber:iq:version'/>").await;
    assert_eq!(err(&r).1, "service-unavailable");
    let r = iq(&mut a, "set", &format!("<pubsub xmlns='{PUBSUB}'/>")).await;
    assert_eq!(err(&r).1, "bad-request");
    // An empty node name is no node name.
    let r = publish(&mut a, "", Some("x"), &entry("x")).await;
    assert_eq!(err(&r).2, "nodeid-required", "{r}");
    let r = subscribe(&mut b, "", &bare(BOB), "").await;
    assert_eq!(err(&r).2, "nodeid-required", "{r}");
    // The module's pep plugin: PEP on accounts still answers.
    let id = a.id();
    let r = a.request(&format!("<iq type='set' id='{id}'><pubsub xmlns='{PUBSUB}'><publish node='urn:xmpp:test'><item id='current'><x xmlns='urn:xmpp:test'/></item></publish></pubsub></iq>"), &id).await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
}

/// Prosody's basic transcript and resend-on-subscribe, then retract, purge
/// and notifications to a bare JID.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_subscribe_notify_retract_purge() {
    let server = server();
    let mut romeo = login(&server, ALICE, "pc").await;
    let mut juliet = login(&server, BOB, "pc").await;
    create(&mut romeo, "princely_musings", &[]).await;

    // Subscribing someone else is refused; her own full JID is fine.
    let r = subscribe(&mut juliet, "princely_musings", &romeo.full_jid(), "").await;
    assert_eq!(
        err(&r),
        ("modify".into(), "bad-request".into(), "invalid-jid".into()),
        "{r}"
    );
    let full = juliet.full_jid();
    let r = subscribe(&mut juliet, "princely_musings", &full, "").await;
    let sub = r
        .child("pubsub")
        .and_then(|p| p.child("subscription"))
        .expect("subscription");
    assert_eq!(
        (sub.attr("jid"), sub.attr("subscription")),
        (Some(full.as_str()), Some("subscribed")),
        "{r}"
    );
    assert!(sub.attr("subid").is_some());

    let r = publish(
        &mut romeo,
        "princely_musings",
        Some("current"),
        &entry("Soliloquy"),
    )
    .await;
    assert_eq!(published_id(&r), "current");
    let ev = event(&mut juliet).await;
    let items_el = ev.child("items").expect("items");
    assert_eq!(items_el.attr("node"), Some("princely_musings"));
    let item = items_el.child("item").expect("item");
    assert_eq!(item.attr("id"), Some("current"));
    assert_eq!(item.attr("publisher"), Some("alice@localhost"));
    assert_eq!(
        item.child_ns("entry", ATOM)
            .and_then(|e| e.child_text("title")),
        Some("Soliloquy")
    );

    // Unsubscribe: subscription none; again: not subscribed.
    let r = ok(
        &mut juliet,
        "set",
        &format!(
            "<pubsub xmlns='{PUBSUB}'><unsubscribe node='princely_musings' jid='{full}'/></pubsub>"
        ),
    )
    .await;
    assert_eq!(subscription_state(&r), "none");
    expect_err(
        &mut juliet,
        "set",
        &format!(
            "<pubsub xmlns='{PUBSUB}'><unsubscribe node='princely_musings' jid='{full}'/></pubsub>"
        ),
        "unexpected-request",
        "not-subscribed",
    )
    .await;
    publish(
        &mut romeo,
        "princely_musings",
        Some("second"),
        &entry("Second"),
    )
    .await;
    let got = sync(&mut juliet).await;
    assert!(
        got.iter().all(|e| e.child_ns("event", EVENT).is_none()),
        "no notification after unsubscribing"
    );

    // send_last_published_item: never, then on_sub (the last item at once).
    let r = configure(
        &mut romeo,
        "princely_musings",
        &[("pubsub#send_last_published_item", "never")],
    )
    .await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    subscribe(&mut juliet, "princely_musings", &full, "").await;
    let got = sync(&mut juliet).await;
    assert!(
        got.iter().all(|e| e.child_ns("event", EVENT).is_none()),
        "never: {:?}",
        got
    );
    ok(
        &mut juliet,
        "set",
        &format!(
            "<pubsub xmlns='{PUBSUB}'><unsubscribe node='princely_musings' jid='{full}'/></pubsub>"
        ),
    )
    .await;
    configure(
        &mut romeo,
        "princely_musings",
        &[("pubsub#send_last_published_item", "on_sub")],
    )
    .await;
    // Subscribed by her bare JID this time: every resource gets notifications.
    let r = subscribe(&mut juliet, "princely_musings", &bare(BOB), "").await;
    assert_eq!(subscription_state(&r), "subscribed");
    let ev = event(&mut juliet).await;
    assert_eq!(
        ev.child("items")
            .and_then(|i| i.child("item"))
            .and_then(|i| i.attr("id")),
        Some("second"),
        "{ev}"
    );

    // An item without an id gets one; the notification carries it.
    let r = publish(&mut romeo, "princely_musings", None, &entry("Third")).await;
    let third = published_id(&r);
    assert!(!third.is_empty());
    let ev = event(&mut juliet).await;
    assert_eq!(
        ev.child("items")
            .and_then(|i| i.child("item"))
            .and_then(|i| i.attr("id")),
        Some(third.as_str())
    );

    // Retract: only the publisher's side; unknown ids; notify.
    expect_err(&mut juliet, "set", &format!("<pubsub xmlns='{PUBSUB}'><retract node='princely_musings'><item id='current'/></retract></pubsub>"), "forbidden", "").await;
    expect_err(&mut romeo, "set", &format!("<pubsub xmlns='{PUBSUB}'><retract node='princely_musings'><item id='nope'/></retract></pubsub>"), "item-not-found", "").await;
    expect_err(
        &mut romeo,
        "set",
        &format!("<pubsub xmlns='{PUBSUB}'><retract node='princely_musings'/></pubsub>"),
        "bad-request",
        "item-required",
    )
    .await;
    expect_err(
        &mut romeo,
        "set",
        &format!("<pubsub xmlns='{PUBSUB}'><retract><item id='current'/></retract></pubsub>"),
        "bad-request",
        "nodeid-required",
    )
    .await;
    ok(&mut romeo, "set", &format!("<pubsub xmlns='{PUBSUB}'><retract node='princely_musings' notify='true'><item id='current'/></retract></pubsub>")).await;
    let ev = event(&mut juliet).await;
    assert_eq!(
        ev.child("items")
            .and_then(|i| i.child("retract"))
            .and_then(|r| r.attr("id")),
        Some("current"),
        "{ev}"
    );
    let r = items(&mut juliet, "princely_musings", "", "", "").await;
    assert_eq!(item_ids(&r), vec!["second".to_string(), third.clone()]);

    // Purge: owners only; subscribers are told; nothing left.
    expect_err(
        &mut juliet,
        "set",
        &format!("<pubsub xmlns='{OWNER}'><purge node='princely_musings'/></pubsub>"),
        "forbidden",
        "",
    )
    .await;
    ok(
        &mut romeo,
        "set",
        &format!("<pubsub xmlns='{OWNER}'><purge node='princely_musings'/></pubsub>"),
    )
    .await;
    let ev = event(&mut juliet).await;
    assert_eq!(
        ev.child("purge").and_then(|p| p.attr("node")),
        Some("princely_musings"),
        "{ev}"
    );
    assert!(item_ids(&items(&mut juliet, "princely_musings", "", "", "").await).is_empty());

    // Her own subscriptions and affiliations; the owner's view.
    let r = ok(
        &mut juliet,
        "get",
        &format!("<pubsub xmlns='{PUBSUB}'><subscriptions/></pubsub>"),
    )
    .await;
    let subs: Vec<_> = r
        .child("pubsub")
        .unwrap()
        .child("subscriptions")
        .unwrap()
        .children_named("subscription")
        .collect();
    assert_eq!(subs.len(), 1, "{r}");
    assert_eq!(subs[0].attr("jid"), Some("bob@localhost"));
    let r = ok(
        &mut romeo,
        "get",
        &format!("<pubsub xmlns='{PUBSUB}'><affiliations/></pubsub>"),
    )
    .await;
    let affs = r.child("pubsub").unwrap().child("affiliations").unwrap();
    assert!(
        affs.children_named("affiliation")
            .any(|a| a.attr("node") == Some("princely_musings")
                && a.attr("affiliation") == Some("owner")),
        "{r}"
    );
    let r = ok(
        &mut romeo,
        "get",
        &format!("<pubsub xmlns='{OWNER}'><subscriptions node='princely_musings'/></pubsub>"),
    )
    .await;
    let list = r.child("pubsub").unwrap().child("subscriptions").unwrap();
    assert_eq!(
        list.children_named("subscription")
            .filter(|s| s.attr("jid") == Some("bob@localhost"))
            .count(),
        1,
        "{r}"
    );
}

/// Subscription options, publish errors, publish-options, auto-create.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_errors_options_and_auto_create() {
    let server = server();
    let mut a = login(&server, ALICE, "pc").await;
    let mut b = login(&server, BOB, "pc").await;
    let mut c = login(&server, CAROL, "pc").await;
    create(&mut a, "feed", &[]).await;

    // Payloads: too big, two items, two payloads, none; unknown node.
    let big = format!("<blob xmlns='urn:example'>{}</blob>", "x".repeat(3000));
    let r = publish(&mut a, "feed", Some("big"), &big).await;
    assert_eq!(
        err(&r),
        (
            "modify".into(),
            "not-acceptable".into(),
            "payload-too-big".into()
        ),
        "{r}"
    );
    expect_err(&mut a, "set", &format!("<pubsub xmlns='{PUBSUB}'><publish node='feed'><item id='1'>{}</item><item id='2'>{}</item></publish></pubsub>", entry("a"), entry("b")), "bad-request", "invalid-payload").await;
    let r = publish(
        &mut a,
        "feed",
        Some("two"),
        &format!("{}{}", entry("a"), entry("b")),
    )
    .await;
    assert_eq!(err(&r).2, "invalid-payload", "{r}");
    let r = publish(&mut a, "feed", Some("empty"), "").await;
    assert_eq!(err(&r).2, "payload-required", "{r}");
    expect_err(
        &mut a,
        "set",
        &format!("<pubsub xmlns='{PUBSUB}'><publish node='feed'/></pubsub>"),
        "bad-request",
        "item-required",
    )
    .await;
    // Publishing needs the publisher affiliation (publish_model publishers).
    let r = publish(&mut b, "feed", Some("hers"), &entry("b")).await;
    assert_eq!(err(&r).1, "forbidden", "{r}");
    // Carol may not create, so her publish to a missing node finds nothing;
    // Alice's creates it (auto-create) with the publish-options.
    let r = publish(&mut c, "auto", Some("1"), &entry("c")).await;
    assert_eq!(err(&r).1, "item-not-found", "{r}");
    let opts = format!(
        "<publish-options>{}</publish-options>",
        form(
            "http://jabber.org/protocol/pubsub#publish-options",
            &[
                ("pubsub#access_model", "whitelist"),
                ("pubsub#max_items", "5")
            ]
        )
    );
    let pubx = |id: &str, opts: &str| {
        format!("<pubsub xmlns='{PUBSUB}'><publish node='auto'><item id='{id}'>{}</item></publish>{opts}</pubsub>", entry(id))
    };
    ok(&mut a, "set", &pubx("1", &opts)).await;
    let r = items(&mut c, "auto", "", "", "").await;
    assert_eq!(
        err(&r),
        ("cancel".into(), "not-allowed".into(), "closed-node".into()),
        "whitelist: {r}"
    );
    // Matching preconditions pass; a differing one is refused.
    ok(&mut a, "set", &pubx("2", &opts)).await;
    let other = format!(
        "<publish-options>{}</publish-options>",
        form(
            "http://jabber.org/protocol/pubsub#publish-options",
            &[("pubsub#access_model", "open")]
        )
    );
    let r = iq(&mut a, "set", &pubx("3", &other)).await;
    assert_eq!(
        err(&r),
        (
            "cancel".into(),
            "conflict".into(),
            "precondition-not-met".into()
        ),
        "{r}"
    );

    // Subscription options: delivery off, read and changed.
    let sub_opts = format!(
        "<options>{}</options>",
        form(
            "http://jabber.org/protocol/pubsub#subscribe_options",
            &[("pubsub#deliver", "0")]
        )
    );
    let r = subscribe(&mut b, "feed", &bare(BOB), &sub_opts).await;
    assert_eq!(subscription_state(&r), "subscribed", "{r}");
    publish(&mut a, "feed", Some("quiet"), &entry("quiet")).await;
    let got = sync(&mut b).await;
    assert!(
        got.iter().all(|e| e.child_ns("event", EVENT).is_none()),
        "deliver off: {:?}",
        got
    );
    let r = ok(
        &mut b,
        "get",
        &format!("<pubsub xmlns='{PUBSUB}'><options node='feed' jid='bob@localhost'/></pubsub>"),
    )
    .await;
    let x = r
        .child("pubsub")
        .and_then(|p| p.child("options"))
        .and_then(|o| o.child("x"))
        .expect("options form");
    assert_eq!(field_value(x, "pubsub#deliver"), Some("0"));
    ok(&mut b, "set", &format!("<pubsub xmlns='{PUBSUB}'><options node='feed' jid='bob@localhost'>{}</options></pubsub>", form("http://jabber.org/protocol/pubsub#subscribe_options", &[("pubsub#deliver", "1")]))).await;
    publish(&mut a, "feed", Some("loud"), &entry("loud")).await;
    let ev = event(&mut b).await;
    assert_eq!(
        ev.child("items")
            .and_then(|i| i.child("item"))
            .and_then(|i| i.attr("id")),
        Some("loud")
    );
    let r = iq(
        &mut c,
        "get",
        &format!("<pubsub xmlns='{PUBSUB}'><options node='feed' jid='carol@localhost'/></pubsub>"),
    )
    .await;
    assert_eq!(err(&r).2, "not-subscribed", "{r}");
    let bad = format!(
        "<options>{}</options>",
        form(
            "http://jabber.org/protocol/pubsub#subscribe_options",
            &[("pubsub#deliver", "often")]
        )
    );
    let r = subscribe(&mut c, "feed", &bare(CAROL), &bad).await;
    assert_eq!(err(&r).2, "invalid-options", "{r}");
    let r = subscribe(&mut c, "nowhere", &bare(CAROL), "").await;
    assert_eq!(err(&r).1, "item-not-found", "{r}");

    // Transient nodes: nothing stored, notifications still go out.
    configure(&mut a, "feed", &[("pubsub#persist_items", "0")]).await;
    publish(&mut a, "feed", Some("fleeting"), &entry("fleeting")).await;
    let ev = event(&mut b).await;
    assert_eq!(
        ev.child("items")
            .and_then(|i| i.child("item"))
            .and_then(|i| i.attr("id")),
        Some("fleeting")
    );
    assert!(!item_ids(&items(&mut b, "feed", "", "", "").await).contains(&"fleeting".to_string()));
    // Without payloads in notifications.
    configure(
        &mut a,
        "feed",
        &[
            ("pubsub#persist_items", "1"),
            ("pubsub#deliver_payloads", "0"),
        ],
    )
    .await;
    publish(&mut a, "feed", Some("bare"), &entry("bare")).await;
    let ev = event(&mut b).await;
    let item = ev
        .child("items")
        .and_then(|i| i.child("item"))
        .expect("item");
    assert_eq!(item.attr("id"), Some("bare"));
    assert!(item.children.is_empty(), "no payload: {ev}");
}

/// Items retrieval (Prosody's max items and multi items transcripts),
/// XEP-0059 pages, retention, and persistence across a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_pages_retention_and_restart() {
    let mut server = server();
    let mut a = login(&server, ALICE, "pc").await;
    create(&mut a, "log", &[("pubsub#max_items", "5")]).await;
    for i in 1..=7 {
        let r = publish(
            &mut a,
            "log",
            Some(&format!("i{i}")),
            &entry(&format!("entry {i}")),
        )
        .await;
        assert_eq!(r.attr("type"), Some("result"), "{r}");
    }
    let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    // Retention keeps the newest five, oldest first.
    let r = items(&mut a, "log", "", "", "").await;
    assert_eq!(item_ids(&r), ids(&["i3", "i4", "i5", "i6", "i7"]), "{r}");
    let item = r
        .child("pubsub")
        .unwrap()
        .child("items")
        .unwrap()
        .child("item")
        .unwrap();
    assert_eq!(item.attr("publisher"), Some("alice@localhost"));
    assert!(item.child_ns("entry", ATOM).is_some(), "{r}");
    // max_items: the newest.
    assert_eq!(
        item_ids(&items(&mut a, "log", " max_items='2'", "", "").await),
        ids(&["i6", "i7"])
    );
    assert_eq!(
        item_ids(&items(&mut a, "log", " max_items='1'", "", "").await),
        ids(&["i7"])
    );
    // By id, several at once; a retired id is not there.
    let r = items(
        &mut a,
        "log",
        "",
        "<item id='i4'/><item id='i1'/><item id='i6'/>",
        "",
    )
    .await;
    assert_eq!(item_ids(&r), ids(&["i4", "i6"]));
    let r = items(&mut a, "log", " max_items='many'", "", "").await;
    assert_eq!(err(&r).1, "bad-request");

    // XEP-0059: newest first, count, index, after/before.
    let page = |r: &Element| -> (Vec<String>, Option<String>, Option<String>, Option<String>) {
        let set = r
            .child("pubsub")
            .and_then(|p| p.child_ns("set", RSM))
            .unwrap_or_else(|| panic!("no set in {r}"));
        (
            item_ids(r),
            set.child("first")
                .and_then(|f| f.attr("index"))
                .map(str::to_string),
            set.child_text("count").map(str::to_string),
            set.child_text("last").map(str::to_string),
        )
    };
    let rsm = |inner: &str| format!("<set xmlns='{RSM}'>{inner}</set>");
    let r = items(&mut a, "log", "", "", &rsm("<max>2</max>")).await;
    assert_eq!(
        page(&r),
        (
            ids(&["i7", "i6"]),
            Some("0".into()),
            Some("5".into()),
            Some("i6".into())
        )
    );
    let r = items(&mut a, "log", "", "", &rsm("<max>2</max><after>i6</after>")).await;
    assert_eq!(
        page(&r),
        (
            ids(&["i5", "i4"]),
            Some("2".into()),
            Some("5".into()),
            Some("i4".into())
        )
    );
    let r = items(&mut a, "log", "", "", &rsm("<max>2</max><after>i4</after>")).await;
    assert_eq!(
        page(&r),
        (
            ids(&["i3"]),
            Some("4".into()),
            Some("5".into()),
            Some("i3".into())
        )
    );
    let r = items(
        &mut a,
        "log",
        "",
        "",
        &rsm("<max>2</max><before>i4</before>"),
    )
    .await;
    assert_eq!(
        page(&r),
        (
            ids(&["i6", "i5"]),
            Some("1".into()),
            Some("5".into()),
            Some("i5".into())
        )
    );
    let r = items(&mut a, "log", "", "", &rsm("<max>2</max><before/>")).await;
    assert_eq!(
        page(&r),
        (
            ids(&["i4", "i3"]),
            Some("3".into()),
            Some("5".into()),
            Some("i3".into())
        )
    );
    let r = items(&mut a, "log", "", "", &rsm("<max>0</max>")).await;
    assert_eq!(page(&r), (vec![], None, Some("5".into()), None));
    let r = items(&mut a, "log", "", "", &rsm("<max>2</max><after>i1</after>")).await;
    assert_eq!(err(&r).1, "item-not-found", "{r}");
    let r = items(&mut a, "log", "", "", &rsm("<max>two</max>")).await;
    assert_eq!(err(&r).1, "bad-request", "{r}");

    // Publishing an id again replaces the item and makes it the newest.
    publish(&mut a, "log", Some("i3"), &entry("entry 3 again")).await;
    assert_eq!(
        item_ids(&items(&mut a, "log", "", "", "").await),
        ids(&["i4", "i5", "i6", "i7", "i3"])
    );
    // Lowering max_items drops the oldest at once.
    configure(&mut a, "log", &[("pubsub#max_items", "2")]).await;
    assert_eq!(
        item_ids(&items(&mut a, "log", "", "", "").await),
        ids(&["i7", "i3"])
    );

    // Bob subscribes; everything survives a restart.
    let mut b = login(&server, BOB, "pc").await;
    subscribe(&mut b, "log", &bare(BOB), "").await;
    drop(a);
    drop(b);
    server.kill_hard(); // SIGKILL: the writes must already be durable
    server.restart();
    let mut a = login(&server, ALICE, "pc").await;
    // send_last_published_item on_sub_and_presence (the default): bob's
    // first available presence brings the last item.
    let mut b = connect(&server, BOB, "pc").await;
    b.send("<presence/>").await;
    let ev = event(&mut b).await;
    assert_eq!(
        ev.child("items")
            .and_then(|i| i.child("item"))
            .and_then(|i| i.attr("id")),
        Some("i3"),
        "{ev}"
    );
    let r = items(&mut a, "log", "", "", "").await;
    assert_eq!(item_ids(&r), ids(&["i7", "i3"]));
    let r = ok(
        &mut a,
        "get",
        &format!("<query xmlns='{DISCO_INFO}' node='log'/>"),
    )
    .await;
    let meta = r
        .child("query")
        .and_then(|q| q.child("x"))
        .expect("meta-data");
    assert_eq!(field_value(meta, "pubsub#num_subscribers"), Some("1"));
    assert_eq!(field_value(meta, "pubsub#max_items"), Some("2"));
    // New items go after the stored ones, and the subscriber hears of them.
    publish(&mut a, "log", Some("i8"), &entry("entry 8")).await;
    let ev = event(&mut b).await;
    assert_eq!(
        ev.child("items")
            .and_then(|i| i.child("item"))
            .and_then(|i| i.attr("id")),
        Some("i8")
    );
    assert_eq!(
        item_ids(&items(&mut a, "log", "", "", "").await),
        ids(&["i3", "i8"])
    );
    // Node creation is still refused for an existing (stored) node.
    expect_err(
        &mut a,
        "set",
        &format!("<pubsub xmlns='{PUBSUB}'><create node='log'/></pubsub>"),
        "conflict",
        "",
    )
    .await;
}

/// Access models and affiliations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_models_and_affiliations() {
    let server = server();
    let mut a = login(&server, ALICE, "pc").await;
    let mut b = login(&server, BOB, "pc").await;
    let mut c = login(&server, CAROL, "pc").await;

    // presence: a presence subscription to the owner is needed.
    create(&mut a, "status", &[("pubsub#access_model", "presence")]).await;
    publish(&mut a, "status", Some("now"), &entry("here")).await;
    let r = subscribe(&mut b, "status", &bare(BOB), "").await;
    assert_eq!(
        err(&r),
        (
            "auth".into(),
            "not-authorized".into(),
            "presence-subscription-required".into()
        ),
        "{r}"
    );
    let r = items(&mut b, "status", "", "", "").await;
    assert_eq!(err(&r).2, "presence-subscription-required", "{r}");
    subscribe_mutual(&server, ALICE, BOB).await;
    assert_eq!(
        subscription_state(&subscribe(&mut b, "status", &bare(BOB), "").await),
        "subscribed"
    );
    assert_eq!(
        item_ids(&items(&mut b, "status", "", "", "").await),
        vec!["now".to_string()]
    );
    // roster: carol is in nobody's roster.
    create(&mut a, "friends", &[("pubsub#access_model", "roster")]).await;
    let r = subscribe(&mut c, "friends", &bare(CAROL), "").await;
    assert_eq!(err(&r).2, "not-in-roster-group", "{r}");
    assert_eq!(
        subscription_state(&subscribe(&mut b, "friends", &bare(BOB), "").await),
        "subscribed"
    );

    // whitelist: closed until the owner makes carol a member.
    create(&mut a, "club", &[("pubsub#access_model", "whitelist")]).await;
    let r = subscribe(&mut c, "club", &bare(CAROL), "").await;
    assert_eq!(
        err(&r),
        ("cancel".into(), "not-allowed".into(), "closed-node".into()),
        "{r}"
    );
    let aff = |jid: &str, a: &str| {
        format!("<pubsub xmlns='{OWNER}'><affiliations node='club'><affiliation jid='{jid}' affiliation='{a}'/></affiliations></pubsub>")
    };
    expect_err(
        &mut b,
        "set",
        &aff("carol@localhost", "member"),
        "forbidden",
        "",
    )
    .await;
    ok(&mut a, "set", &aff("carol@localhost", "member")).await;
    assert_eq!(
        subscription_state(&subscribe(&mut c, "club", &bare(CAROL), "").await),
        "subscribed"
    );
    // publisher: bob may publish; publish-only: publish but not read.
    let r = publish(&mut b, "club", Some("b1"), &entry("bob's")).await;
    assert_eq!(err(&r).1, "forbidden");
    ok(&mut a, "set", &aff("bob@localhost", "publisher")).await;
    publish(&mut b, "club", Some("b1"), &entry("bob's")).await;
    let ev = event(&mut c).await;
    assert_eq!(
        ev.child("items")
            .and_then(|i| i.child("item"))
            .and_then(|i| i.attr("publisher")),
        Some("bob@localhost")
    );
    ok(&mut a, "set", &aff("bob@localhost", "publish-only")).await;
    publish(&mut b, "club", Some("b2"), &entry("bob's again")).await;
    let r = items(&mut b, "club", "", "", "").await;
    assert_eq!(err(&r).1, "forbidden", "publish-only reads nothing: {r}");
    // The owner's list.
    let r = ok(
        &mut a,
        "get",
        &format!("<pubsub xmlns='{OWNER}'><affiliations node='club'/></pubsub>"),
    )
    .await;
    let list = r.child("pubsub").unwrap().child("affiliations").unwrap();
    let affs: Vec<(String, String)> = list
        .children_named("affiliation")
        .map(|x| {
            (
                x.attr("jid").unwrap_or("").into(),
                x.attr("affiliation").unwrap_or("").into(),
            )
        })
        .collect();
    assert!(
        affs.contains(&("alice@localhost".into(), "owner".into())),
        "{r}"
    );
    assert!(
        affs.contains(&("bob@localhost".into(), "publish-only".into())),
        "{r}"
    );
    assert!(
        affs.contains(&("carol@localhost".into(), "member".into())),
        "{r}"
    );
    // Bad input: an unknown affiliation, no JID, removing the only owner.
    expect_err(
        &mut a,
        "set",
        &aff("carol@localhost", "queen"),
        "not-acceptable",
        "",
    )
    .await;
    expect_err(&mut a, "set", &format!("<pubsub xmlns='{OWNER}'><affiliations node='club'><affiliation affiliation='member'/></affiliations></pubsub>"), "bad-request", "").await;
    expect_err(
        &mut a,
        "set",
        &aff("alice@localhost", "none"),
        "not-acceptable",
        "",
    )
    .await;
    // outcast: her subscription goes, she reads nothing.
    ok(&mut a, "set", &aff("carol@localhost", "outcast")).await;
    let r = items(&mut c, "club", "", "", "").await;
    assert_eq!(err(&r).1, "forbidden", "{r}");
    let r = subscribe(&mut c, "club", &bare(CAROL), "").await;
    assert_eq!(err(&r).1, "forbidden", "{r}");
    let r = ok(
        &mut a,
        "get",
        &format!("<pubsub xmlns='{OWNER}'><subscriptions node='club'/></pubsub>"),
    )
    .await;
    assert_eq!(
        r.child("pubsub")
            .unwrap()
            .child("subscriptions")
            .unwrap()
            .children_named("subscription")
            .count(),
        0,
        "{r}"
    );

    // authorize: pending until the owner approves with the form.
    create(
        &mut a,
        "inner",
        &[
            ("pubsub#access_model", "authorize"),
            ("pubsub#title", "Inner circle"),
        ],
    )
    .await;
    publish(&mut a, "inner", Some("secret"), &entry("secret")).await;
    let r = subscribe(&mut c, "inner", &bare(CAROL), "").await;
    assert_eq!(subscription_state(&r), "pending", "{r}");
    let r = items(&mut c, "inner", "", "", "").await;
    assert_eq!(err(&r).2, "not-subscribed", "{r}");
    let req = a
        .recv_where("the authorization form", |e| {
            e.name == "message" && e.attr("from") == Some(SERVICE) && e.child("x").is_some()
        })
        .await;
    let x = req.child("x").unwrap();
    assert_eq!(
        field_value(x, "FORM_TYPE"),
        Some("http://jabber.org/protocol/pubsub#subscribe_authorization")
    );
    assert_eq!(
        field_value(x, "pubsub#subscriber_jid"),
        Some("carol@localhost")
    );
    assert_eq!(field_value(x, "pubsub#node"), Some("inner"));
    // Only an owner's answer counts.
    b.send(&format!(
        "<message to='{SERVICE}' id='fake'>{}</message>",
        form(
            "http://jabber.org/protocol/pubsub#subscribe_authorization",
            &[
                ("pubsub#node", "inner"),
                ("pubsub#subscriber_jid", "carol@localhost"),
                ("pubsub#allow", "1")
            ]
        )
    ))
    .await;
    b.expect_message_error("fake", "forbidden").await;
    a.send(&format!(
        "<message to='{SERVICE}'>{}</message>",
        form(
            "http://jabber.org/protocol/pubsub#subscribe_authorization",
            &[
                ("pubsub#node", "inner"),
                ("pubsub#subscriber_jid", "carol@localhost"),
                ("pubsub#allow", "1")
            ]
        )
    ))
    .await;
    let m = c
        .recv_where("the approval", |e| {
            e.name == "message" && e.attr("from") == Some(SERVICE) && e.child("pubsub").is_some()
        })
        .await;
    assert_eq!(
        m.child("pubsub")
            .and_then(|p| p.child("subscription"))
            .and_then(|s| s.attr("subscription")),
        Some("subscribed"),
        "{m}"
    );
    assert_eq!(
        item_ids(&items(&mut c, "inner", "", "", "").await),
        vec!["secret".to_string()]
    );
    // The owner approves bob through the subscriptions list instead.
    let r = subscribe(&mut b, "inner", &bare(BOB), "").await;
    assert_eq!(subscription_state(&r), "pending");
    ok(&mut a, "set", &format!("<pubsub xmlns='{OWNER}'><subscriptions node='inner'><subscription jid='bob@localhost' subscription='subscribed'/></subscriptions></pubsub>")).await;
    let m = b
        .recv_where("the approval", |e| {
            e.name == "message" && e.attr("from") == Some(SERVICE) && e.child("pubsub").is_some()
        })
        .await;
    assert_eq!(
        m.child("pubsub")
            .and_then(|p| p.child("subscription"))
            .and_then(|s| s.attr("subscription")),
        Some("subscribed")
    );
    let r = ok(
        &mut a,
        "get",
        &format!("<query xmlns='{DISCO_INFO}' node='inner'/>"),
    )
    .await;
    let meta = r.child("query").and_then(|q| q.child("x")).unwrap();
    assert_eq!(
        field_value(meta, "pubsub#num_subscribers"),
        Some("2"),
        "{r}"
    );
    expect_err(&mut a, "set", &format!("<pubsub xmlns='{OWNER}'><subscriptions node='inner'><subscription jid='bob@localhost' subscription='maybe'/></subscriptions></pubsub>"), "not-acceptable", "").await;
}

/// A node with thousands of subscribers: each publish's notifications are
/// streamed (built and routed one at a time on the service's queue), and a
/// subscriber gets the notifications of back-to-back publishes in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_subscribers_get_notifications_in_order() {
    const SUBSCRIBERS: usize = 2000;
    let server = server();
    let mut a = login(&server, ALICE, "pc").await;
    let mut b = login(&server, BOB, "pc").await;
    create(&mut a, "wide", &[]).await;
    // Alice subscribes many resources of hers (none connected: their
    // notifications are routed and dropped), sent back to back.
    for i in 0..SUBSCRIBERS {
        a.send(&format!(
            "<iq type='set' to='{SERVICE}' id='s{i}'><pubsub xmlns='{PUBSUB}'><subscribe node='wide' jid='alice@localhost/r{i}'/></pubsub></iq>"
        ))
        .await;
    }
    let last = format!("s{}", SUBSCRIBERS - 1);
    let r = a
        .recv_where("the last subscription", |e| {
            e.attr("id") == Some(last.as_str())
        })
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    assert_eq!(
        subscription_state(&subscribe(&mut b, "wide", &bare(BOB), "").await),
        "subscribed"
    );
    let r = ok(
        &mut a,
        "get",
        &format!("<query xmlns='{DISCO_INFO}' node='wide'/>"),
    )
    .await;
    let meta = r.child("query").and_then(|q| q.child("x")).unwrap();
    let n = (SUBSCRIBERS + 1).to_string();
    assert_eq!(
        field_value(meta, "pubsub#num_subscribers"),
        Some(n.as_str())
    );

    let started = std::time::Instant::now();
    for i in 0..5 {
        a.send(&format!(
            "<iq type='set' to='{SERVICE}' id='p{i}'><pubsub xmlns='{PUBSUB}'><publish node='wide'><item id='w{i}'>{}</item></publish></pubsub></iq>",
            entry(&format!("wide {i}"))
        ))
        .await;
    }
    for i in 0..5 {
        let ev = event(&mut b).await;
        let id = ev
            .child("items")
            .and_then(|x| x.child("item"))
            .and_then(|x| x.attr("id"));
        assert_eq!(id, Some(format!("w{i}").as_str()), "in order: {ev}");
    }
    for i in 0..5 {
        let id = format!("p{i}");
        let r = a
            .recv_where("a publish result", |e| e.attr("id") == Some(id.as_str()))
            .await;
        assert_eq!(r.attr("type"), Some("result"), "{r}");
    }
    eprintln!(
        "5 publishes to {} subscribers delivered to the last one in {:?}",
        SUBSCRIBERS + 1,
        started.elapsed()
    );
}

/// `pubsub#presence_based_delivery`: a subscriber whose session is not
/// available (it sent unavailable presence) is not notified while the
/// option is on, and is again once it is off; an available one always is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_based_delivery_skips_unavailable_subscribers() {
    let server = server();
    let mut alice = login(&server, ALICE, "pc").await;
    let mut bob = login(&server, BOB, "pc").await;
    let mut carol = login(&server, CAROL, "pc").await;
    create(
        &mut alice,
        "presence_news",
        &[
            ("pubsub#notification_type", "normal"),
            ("pubsub#presence_based_delivery", "1"),
        ],
    )
    .await;
    let r = ok(
        &mut alice,
        "get",
        &format!("<pubsub xmlns='{OWNER}'><configure node='presence_news'/></pubsub>"),
    )
    .await;
    let x = r
        .child("pubsub")
        .and_then(|p| p.child("configure"))
        .and_then(|c| c.child("x"))
        .expect("configuration form");
    assert_eq!(
        field_value(x, "pubsub#presence_based_delivery"),
        Some("1"),
        "{r}"
    );
    for c in [&mut bob, &mut carol] {
        let full = c.full_jid();
        let r = subscribe(c, "presence_news", &full, "").await;
        assert_eq!(subscription_state(&r), "subscribed", "{r}");
    }
    // bob's session stays, unavailable.
    bob.send("<presence type='unavailable'/>").await;
    sync(&mut bob).await;

    // On: carol (available) is notified, bob is skipped.
    publish(
        &mut alice,
        "presence_news",
        Some("while-away"),
        &entry("One"),
    )
    .await;
    let ev = event(&mut carol).await;
    let first = ev
        .child("items")
        .and_then(|i| i.child("item"))
        .expect("item");
    assert_eq!(first.attr("id"), Some("while-away"));

    // Off: bob is notified although unavailable; the first notification
    // he sees is this one (a skipped one would have come before it).
    let r = configure(
        &mut alice,
        "presence_news",
        &[("pubsub#presence_based_delivery", "0")],
    )
    .await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    publish(
        &mut alice,
        "presence_news",
        Some("delivered"),
        &entry("Two"),
    )
    .await;
    for c in [&mut carol, &mut bob] {
        let ev = event(c).await;
        let item = ev
            .child("items")
            .and_then(|i| i.child("item"))
            .expect("item");
        assert_eq!(item.attr("id"), Some("delivered"), "{ev}");
    }
}
