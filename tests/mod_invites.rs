//! `mod_invites` against the real binary: invitations instead of open
//! registration. XEP-0445 pre-authenticated in-band registration (the
//! `urn:xmpp:ibr-token:0` feature, `<preauth/>`, then `jabber:iq:register`),
//! XEP-0379 pre-authenticated roster subscription (an invitation with
//! `--roster-for`, and an existing user subscribing with a contact's token),
//! XEP-0401 ad-hoc invitation commands with `access_create_account` and
//! `max_invites`, `mod_register`'s `allow_modules: [mod_invites]`, the
//! `rookery ctl` invitation commands, password-reset links, and the HTTPS
//! landing page and web form (QR code, CSRF). Bad input: expired, reused,
//! malformed and forged tokens, two connections racing for one single-use
//! token, a form POST without its CSRF proof, a user over `max_invites`.

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use common::client::esc;
use common::http::https;
use common::server::DEFAULT_MODULES;
use common::*;

const NS_REG: &str = "jabber:iq:register";
const NS_PARS: &str = "urn:xmpp:pars:0";
const NS_IBR_TOKEN: &str = "urn:xmpp:ibr-token:0";
const NS_CMD: &str = "http://jabber.org/protocol/commands";
const NS_DATA: &str = "jabber:x:data";

/// A server with invitation-only registration, `mod_invites` with
/// `invites_yaml` options, and an HTTPS listener serving `/invites`.
fn invites_server(invites_yaml: &str) -> (Server, SocketAddr) {
    let invites = if invites_yaml.is_empty() {
        "  mod_invites:\n    landing_page: auto\n".to_string()
    } else {
        format!("  mod_invites:\n    landing_page: auto\n{invites_yaml}")
    };
    let s = Server::start_with(Config {
        extra_listeners: vec![
            "port: 0\nip: 127.0.0.1\nmodule: ejabberd_http\ntls: true\nrequest_handlers:\n  /invites: mod_invites".to_string(),
        ],
        modules: format!(
            "{DEFAULT_MODULES}  mod_adhoc: {{}}\n  mod_register:\n    allow_modules: [mod_invites]\n{invites}"
        ),
        extra_yaml: "acl:\n  local:\n    user_regexp: \"\"\naccess_rules:\n  local_invites:\n    allow: local\n"
            .to_string(),
        ..Config::default()
    });
    let http = s
        .listeners
        .iter()
        .find(|l| l.module == "http")
        .expect("http listener")
        .addr;
    s.register("alice", "localhost", "secret");
    (s, http)
}

/// The token of an `xmpp:` invitation URI.
fn token_of(uri: &str) -> String {
    uri.split("preauth=")
        .nth(1)
        .unwrap_or_else(|| panic!("no preauth in {uri}"))
        .split(';')
        .next()
        .unwrap()
        .to_string()
}

fn generate(server: &Server, args: &[&str]) -> (String, String) {
    let mut a = vec!["generate_invite", "localhost"];
    a.extend_from_slice(args);
    let out = server.ctl_ok(&a);
    let mut lines = out.lines();
    let uri = lines.next().expect("uri line").to_string();
    let landing = lines.next().unwrap_or("").to_string();
    (uri, landing)
}

fn condition(reply: &Element) -> String {
    assert_eq!(reply.attr("type"), Some("error"), "{reply}");
    let err = reply.child("error").expect("error child");
    err.children
        .iter()
        .find(|c| c.ns == "urn:ietf:params:xml:ns:xmpp-stanzas" && c.name != "text")
        .map(|c| c.name.clone())
        .unwrap_or_default()
}

async fn preauth(c: &mut Client, token: &str) -> Element {
    let id = c.id();
    c.request(
        &format!(
            "<iq type='set' id='{id}'><preauth xmlns='{NS_PARS}' token='{}'/></iq>",
            esc(token)
        ),
        &id,
    )
    .await
}

async fn register(c: &mut Client, user: &str, password: &str) -> Element {
    let id = c.id();
    c.request(
        &format!(
            "<iq type='set' id='{id}'><query xmlns='{NS_REG}'><username>{}</username><password>{}</password></query></iq>",
            esc(user),
            esc(password)
        ),
        &id,
    )
    .await
}

async fn can_login(server: &Server, user: &str, password: &str) -> bool {
    let mut c = Client::connect_starttls(server.c2s()).await;
    c.auth_scram("SCRAM-SHA-256", user, password).await.is_ok()
}

fn users(server: &Server) -> Vec<String> {
    let mut v: Vec<String> = server
        .ctl_ok(&["registered_users", "localhost"])
        .lines()
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn preauth_registration_with_a_ctl_invitation() {
    let (server, _) = invites_server("");
    let (uri, landing) = generate(&server, &[]);
    assert!(uri.starts_with("xmpp:localhost?register;preauth="), "{uri}");
    let token = token_of(&uri);
    assert_eq!(token.len(), 32, "{token}");
    assert!(
        landing.starts_with("https://localhost:")
            && landing.ends_with(&format!("/invites/{token}")),
        "{landing}"
    );

    let mut c = Client::connect_starttls(server.c2s()).await;
    let f = c.features.clone().unwrap();
    assert!(f.child_ns("register", NS_IBR_TOKEN).is_some(), "{f}");
    assert!(
        f.child_ns("register", "http://jabber.org/features/iq-register")
            .is_none(),
        "open registration is off: {f}"
    );
    // Without an invitation: refused (allow_modules: [mod_invites]).
    assert_eq!(
        condition(&register(&mut c, "eve", "pw").await),
        "not-allowed"
    );
    // Malformed, forged.
    assert_eq!(
        condition(&preauth(&mut c, "not a token").await),
        "bad-request"
    );
    assert_eq!(condition(&preauth(&mut c, "").await), "bad-request");
    let forged = "A".repeat(32);
    assert_eq!(condition(&preauth(&mut c, &forged).await), "item-not-found");
    assert_eq!(
        condition(&register(&mut c, "eve", "pw").await),
        "not-allowed"
    );
    // The real one.
    let ok = preauth(&mut c, &token).await;
    assert_eq!(ok.attr("type"), Some("result"), "{ok}");
    assert_eq!(
        condition(&register(&mut c, "alice", "pw").await),
        "conflict"
    );
    let ok = register(&mut c, "Newbie", "n3w-pass").await;
    assert_eq!(ok.attr("type"), Some("result"), "{ok}");
    assert!(can_login(&server, "newbie", "n3w-pass").await);

    // Reused: the token is spent.
    let mut c2 = Client::connect_starttls(server.c2s()).await;
    let used = preauth(&mut c2, &token).await;
    assert_eq!(condition(&used), "item-not-found");
    let text = used
        .child("error")
        .and_then(|e| e.child("text"))
        .map(|t| t.text.clone());
    assert_eq!(
        text.as_deref(),
        Some("This invitation has already been used")
    );
    let list = server.ctl_ok(&["list_invites", "localhost"]);
    assert!(
        list.contains("\tused\t") && list.contains("newbie@localhost"),
        "{list}"
    );
    // The token itself is not stored anywhere readable: list shows an id.
    assert!(!list.contains(&token), "{list}");
    assert_eq!(users(&server), ["alice", "newbie"]);
}

#[tokio::test]
async fn expired_reusable_and_bad_ctl_input() {
    let (server, _) = invites_server("");
    let (uri, _) = generate(&server, &["--expires", "1"]);
    let expired = token_of(&uri);
    let (uri, _) = generate(&server, &["--reusable", "2", "--expires", "1h"]);
    let twice = token_of(&uri);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let mut c = Client::connect_starttls(server.c2s()).await;
    let r = preauth(&mut c, &expired).await;
    assert_eq!(condition(&r), "item-not-found");
    assert!(format!("{r}").contains("expired"), "{r}");
    for (i, name) in ["one", "two"].iter().enumerate() {
        let mut c = Client::connect_starttls(server.c2s()).await;
        assert_eq!(
            preauth(&mut c, &twice).await.attr("type"),
            Some("result"),
            "use {i}"
        );
        let ok = register(&mut c, name, "pw-pw-pw").await;
        assert_eq!(ok.attr("type"), Some("result"), "{ok}");
    }
    let mut c = Client::connect_starttls(server.c2s()).await;
    assert_eq!(condition(&preauth(&mut c, &twice).await), "item-not-found");
    assert_eq!(users(&server), ["alice", "one", "two"]);

    for (args, code) in [
        (vec!["generate_invite", "localhost", "--reusable", "0"], 1),
        (
            vec!["generate_invite", "localhost", "--reusable", "many"],
            1,
        ),
        (vec!["generate_invite", "localhost", "--expires", "soon"], 1),
        (vec!["generate_invite", "localhost", "--expires"], 2),
        (vec!["generate_invite", "localhost", "--bogus", "1"], 2),
        (vec!["generate_invite", "nowhere.example"], 1),
        (
            vec!["generate_invite", "localhost", "--roster-for", "nobody"],
            1,
        ),
        (
            vec!["generate_invite_with_username", "alice", "localhost"],
            1,
        ),
        (vec!["generate_password_reset", "nobody", "localhost"], 1),
        (vec!["list_invites", "nowhere.example"], 1),
    ] {
        let (got, out, err) = server.ctl(&args);
        assert_eq!(got, code, "{args:?}: {out} {err}");
    }
    // expire_invite_tokens and cleanup_expired_invite_tokens.
    let out = server.ctl_ok(&["generate_invite", "localhost", "--roster-for", "alice"]);
    let alices = token_of(out.lines().next().unwrap());
    assert_eq!(
        server
            .ctl_ok(&["expire_invite_tokens", "alice", "localhost"])
            .trim(),
        "1"
    );
    let mut c = Client::connect_starttls(server.c2s()).await;
    assert_eq!(condition(&preauth(&mut c, &alices).await), "item-not-found");
    // expired, twice (used up), alice's: 3 cleaned up.
    assert_eq!(
        server.ctl_ok(&["cleanup_expired_invite_tokens"]).trim(),
        "3"
    );
    let mut c = Client::connect_starttls(server.c2s()).await;
    let gone = preauth(&mut c, &alices).await;
    assert_eq!(condition(&gone), "item-not-found");
}

#[tokio::test]
async fn two_connections_racing_for_one_token_make_one_account() {
    let (server, _) = invites_server("");
    for round in 0..3 {
        let (uri, _) = generate(&server, &[]);
        let token = token_of(&uri);
        let mut a = Client::connect_starttls(server.c2s()).await;
        let mut b = Client::connect_starttls(server.c2s()).await;
        assert_eq!(preauth(&mut a, &token).await.attr("type"), Some("result"));
        assert_eq!(preauth(&mut b, &token).await.attr("type"), Some("result"));
        let (na, nb) = (format!("racer{round}a"), format!("racer{round}b"));
        let (ra, rb) = tokio::join!(
            register(&mut a, &na, "pw-pw-pw"),
            register(&mut b, &nb, "pw-pw-pw")
        );
        let oks = [&ra, &rb]
            .iter()
            .filter(|r| r.attr("type") == Some("result"))
            .count();
        assert_eq!(oks, 1, "exactly one account per token: {ra} / {rb}");
        let loser = if ra.attr("type") == Some("result") {
            &rb
        } else {
            &ra
        };
        assert_eq!(condition(loser), "item-not-found", "{loser}");
    }
    let all = users(&server);
    assert_eq!(all.len(), 4, "{all:?}");
}

#[tokio::test]
async fn roster_for_invitation_makes_mutual_contacts() {
    let (server, _) = invites_server("");
    let (uri, _) = generate(&server, &["--roster-for", "alice"]);
    assert!(
        uri.starts_with("xmpp:alice@localhost?roster;preauth="),
        "{uri}"
    );
    assert!(uri.ends_with(";ibr=y"), "{uri}");
    let mut alice = Client::login(&server, "alice", "secret", Some("phone")).await;
    // An interested resource (RFC 6121 §2.1.6): it asked for the roster.
    let id = alice.id();
    alice
        .request(
            &format!("<iq type='get' id='{id}'><query xmlns='jabber:iq:roster'/></iq>"),
            &id,
        )
        .await;
    alice.presence().await;
    let mut c = Client::connect_starttls(server.c2s()).await;
    assert_eq!(
        preauth(&mut c, &token_of(&uri)).await.attr("type"),
        Some("result")
    );
    assert_eq!(
        register(&mut c, "bob", "bob-pass").await.attr("type"),
        Some("result")
    );
    // Alice's session gets the roster push.
    let push = alice
        .recv_where("roster push", |e| {
            e.name == "iq" && e.child_ns("query", "jabber:iq:roster").is_some()
        })
        .await;
    let item = push
        .child_ns("query", "jabber:iq:roster")
        .unwrap()
        .child("item")
        .unwrap();
    assert_eq!(item.attr("jid"), Some("bob@localhost"));
    assert_eq!(item.attr("subscription"), Some("both"));
    let roster = server.ctl_ok(&["get_roster", "alice", "localhost"]);
    assert!(
        roster.contains("bob@localhost") && roster.contains("both"),
        "{roster}"
    );
    let roster = server.ctl_ok(&["get_roster", "bob", "localhost"]);
    assert!(
        roster.contains("alice@localhost") && roster.contains("both"),
        "{roster}"
    );
}

async fn command(c: &mut Client, node: &str, inner: &str) -> Element {
    let id = c.id();
    c.request(
        &format!("<iq type='set' to='localhost' id='{id}'><command xmlns='{NS_CMD}' node='{node}' action='execute'>{inner}</command></iq>"),
        &id,
    )
    .await
}

fn field<'a>(cmd: &'a Element, var: &str) -> Option<&'a str> {
    cmd.child_ns("command", NS_CMD)?
        .child_ns("x", NS_DATA)?
        .children
        .iter()
        .find(|f| f.attr("var") == Some(var))?
        .child("value")
        .map(|v| v.text.as_str())
}

#[tokio::test]
async fn adhoc_invitations_access_and_max_invites() {
    let (server, _) =
        invites_server("    access_create_account: local_invites\n    max_invites: 1\n");
    server.register("carol", "localhost", "carol-pw");
    let mut alice = Client::login(&server, "alice", "secret", None).await;
    // Listed in disco#items of the commands node.
    let id = alice.id();
    let items = alice
        .request(&format!("<iq type='get' to='localhost' id='{id}'><query xmlns='http://jabber.org/protocol/disco#items' node='{NS_CMD}'/></iq>"), &id)
        .await;
    let s = format!("{items}");
    assert!(
        s.contains("urn:xmpp:invite#invite") && s.contains("urn:xmpp:invite#create-account"),
        "{s}"
    );

    let id = alice.id();
    let info = alice
        .request(&format!("<iq type='get' to='localhost' id='{id}'><query xmlns='http://jabber.org/protocol/disco#info' node='urn:xmpp:invite#invite'/></iq>"), &id)
        .await;
    let ident = info.child("query").and_then(|q| q.child("identity"));
    assert_eq!(
        ident.and_then(|i| i.attr("type")),
        Some("command-node"),
        "{info}"
    );

    // create-account: a form first, then the invitation.
    let form = command(&mut alice, "urn:xmpp:invite#create-account", "").await;
    assert_eq!(
        form.child_ns("command", NS_CMD).unwrap().attr("status"),
        Some("executing"),
        "{form}"
    );
    let submit = format!("<x xmlns='{NS_DATA}' type='submit'><field var='username'><value>dave</value></field><field var='roster-subscription'><value>true</value></field></x>");
    let done = command(&mut alice, "urn:xmpp:invite#create-account", &submit).await;
    let uri = field(&done, "uri")
        .unwrap_or_else(|| panic!("no uri in {done}"))
        .to_string();
    assert!(
        uri.starts_with("xmpp:alice@localhost?roster;preauth="),
        "{uri}"
    );
    assert!(
        field(&done, "landing-url").is_some_and(|u| u.contains("/invites/")),
        "{done}"
    );
    // Over max_invites (1).
    let over = command(&mut alice, "urn:xmpp:invite#create-account", &submit).await;
    assert_eq!(condition(&over), "policy-violation", "{over}");
    // invite#invite over max_invites: a contact invitation only (no ibr=y).
    let contact = command(&mut alice, "urn:xmpp:invite#invite", "").await;
    let contact_uri = field(&contact, "uri").expect("uri").to_string();
    assert!(
        contact_uri.starts_with("xmpp:alice@localhost?roster;preauth=")
            && !contact_uri.contains("ibr=y"),
        "{contact_uri}"
    );

    // The account invitation is for the user name dave only.
    let mut c = Client::connect_starttls(server.c2s()).await;
    assert_eq!(
        preauth(&mut c, &token_of(&uri)).await.attr("type"),
        Some("result")
    );
    assert_eq!(
        condition(&register(&mut c, "mallory", "pw").await),
        "not-allowed"
    );
    assert_eq!(
        register(&mut c, "dave", "dave-pw").await.attr("type"),
        Some("result")
    );
    let roster = server.ctl_ok(&["get_roster", "dave", "localhost"]);
    assert!(
        roster.contains("alice@localhost\t") && roster.contains("both"),
        "{roster}"
    );

    // A contact invitation is no registration token.
    let mut c = Client::connect_starttls(server.c2s()).await;
    assert_eq!(
        condition(&preauth(&mut c, &token_of(&contact_uri)).await),
        "item-not-found"
    );

    // XEP-0379: an existing user subscribes with it and both become contacts.
    let mut carol = Client::login(&server, "carol", "carol-pw", None).await;
    carol
        .send(&format!(
            "<presence to='alice@localhost' type='subscribe'><preauth xmlns='{NS_PARS}' token='{}'/></presence>",
            token_of(&contact_uri)
        ))
        .await;
    let mut both = false;
    for _ in 0..50 {
        let a = server.ctl_ok(&["get_roster", "alice", "localhost"]);
        let c = server.ctl_ok(&["get_roster", "carol", "localhost"]);
        if a.lines()
            .any(|l| l.starts_with("carol@localhost\t") && l.contains("\tboth"))
            && c.lines()
                .any(|l| l.starts_with("alice@localhost\t") && l.contains("\tboth"))
        {
            both = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(both, "carol and alice are mutual contacts");
    // The token is spent, and recorded as used by carol.
    let list = server.ctl_ok(&["list_invites", "localhost"]);
    assert!(list.contains("carol@localhost"), "{list}");

    drop(carol);
    // With mod_invites' default access_create_account (none), a user gets
    // no create-account node and a forbidden error.
    let (strict, _) = invites_server("");
    let mut user = Client::login(&strict, "alice", "secret", None).await;
    let r = command(&mut user, "urn:xmpp:invite#create-account", "").await;
    assert_eq!(condition(&r), "forbidden");
    let contact = command(&mut user, "urn:xmpp:invite#invite", "").await;
    let uri = field(&contact, "uri").expect("uri");
    assert!(!uri.contains("ibr=y"), "{uri}");
}

fn form_fields(body: &str) -> (String, String) {
    let grab = |name: &str| {
        let marker = format!("name=\"{name}\" value=\"");
        let start = body
            .find(&marker)
            .unwrap_or_else(|| panic!("no {name} in {body}"))
            + marker.len();
        body[start..].split('"').next().unwrap().to_string()
    };
    (grab("nonce"), grab("csrf"))
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn post(
    http: SocketAddr,
    token: &str,
    cookie: Option<&str>,
    fields: &[(&str, &str)],
) -> common::http::Answer {
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{k}={}", urlencode(v)))
        .collect();
    let body = body.join("&");
    let len = body.len().to_string();
    let mut headers = vec![
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("Content-Length", len.as_str()),
    ];
    let cookie_header = cookie.map(|c| format!("rookery_invite={c}"));
    if let Some(c) = &cookie_header {
        headers.push(("Cookie", c.as_str()));
    }
    https(
        http,
        "POST",
        &format!("/invites/{token}/register"),
        &headers,
        body.as_bytes(),
    )
    .await
}

#[tokio::test]
async fn landing_page_and_web_registration_form() {
    let (server, http) = invites_server("    site_name: \"Family <chat>\"\n");
    let (uri, _) = generate(&server, &[]);
    let token = token_of(&uri);

    let page = https(http, "GET", &format!("/invites/{token}"), &[], b"").await;
    assert_eq!(page.status, 200);
    let html = String::from_utf8_lossy(&page.body).to_string();
    assert!(html.contains(&format!("href=\"{uri}\"")), "the xmpp: link");
    assert!(html.contains("<svg"), "a QR code");
    assert!(html.contains("Conversations") && html.contains("Monal") && html.contains("Gajim"));
    assert!(
        html.contains("Family &lt;chat&gt;") && !html.contains("Family <chat>"),
        "escaped site name"
    );
    assert_eq!(page.header("cache-control"), Some("no-store"));
    assert_eq!(page.header("referrer-policy"), Some("no-referrer"));
    assert!(page
        .header("content-security-policy")
        .is_some_and(|c| c.contains("default-src 'none'")));

    for (path, status) in [
        ("/invites/garbage".to_string(), 400),
        (format!("/invites/{}", "B".repeat(32)), 404),
        (format!("/invites/{token}/nothing"), 404),
    ] {
        assert_eq!(
            https(http, "GET", &path, &[], b"").await.status,
            status,
            "{path}"
        );
    }

    let form = https(http, "GET", &format!("/invites/{token}/register"), &[], b"").await;
    assert_eq!(form.status, 200);
    let html = String::from_utf8_lossy(&form.body).to_string();
    let (nonce, csrf) = form_fields(&html);
    let cookie = form.header("set-cookie").expect("cookie");
    assert!(
        cookie.starts_with(&format!("rookery_invite={nonce};"))
            && cookie.contains("SameSite=Strict")
            && cookie.contains("HttpOnly"),
        "{cookie}"
    );

    let fields = |user: &'static str| {
        vec![
            ("username", user),
            ("password", "web-pass"),
            ("password2", "web-pass"),
        ]
    };
    // No CSRF proof at all; a proof without its cookie; a forged proof.
    assert_eq!(
        post(http, &token, None, &fields("webber")).await.status,
        403
    );
    let mut with = fields("webber");
    with.extend([("nonce", nonce.as_str()), ("csrf", csrf.as_str())]);
    assert_eq!(post(http, &token, None, &with).await.status, 403);
    let mut forged = fields("webber");
    forged.extend([("nonce", nonce.as_str()), ("csrf", "00")]);
    assert_eq!(post(http, &token, Some(&nonce), &forged).await.status, 403);
    // A proof made for another invitation does not fit this one.
    let (other_uri, _) = generate(&server, &[]);
    assert_eq!(
        post(http, &token_of(&other_uri), Some(&nonce), &with)
            .await
            .status,
        403
    );
    assert_eq!(users(&server), ["alice"], "nothing registered without CSRF");

    // Bad user name: the form again, the input escaped.
    let mut evil = vec![
        ("username", "<script>x"),
        ("password", "p"),
        ("password2", "p"),
    ];
    evil.extend([("nonce", nonce.as_str()), ("csrf", csrf.as_str())]);
    let again = post(http, &token, Some(&nonce), &evil).await;
    let body = String::from_utf8_lossy(&again.body).to_string();
    assert_eq!(again.status, 200, "{body}");
    assert!(
        !body.contains("<script>") && body.contains("&lt;script&gt;x"),
        "{body}"
    );

    let ok = post(http, &token, Some(&nonce), &with).await;
    let body = String::from_utf8_lossy(&ok.body).to_string();
    assert_eq!(ok.status, 200, "{body}");
    assert!(body.contains("webber@localhost"), "{body}");
    assert!(can_login(&server, "webber", "web-pass").await);
    // The token is spent.
    let reused = post(http, &token, Some(&nonce), &with).await;
    assert_eq!(reused.status, 410);
    assert_eq!(
        https(http, "GET", &format!("/invites/{token}"), &[], b"")
            .await
            .status,
        410
    );
    assert_eq!(users(&server), ["alice", "webber"]);
}

#[tokio::test]
async fn password_reset_link() {
    let (server, http) = invites_server("");
    server.register("bob", "localhost", "old-pass");
    let out = server.ctl_ok(&["generate_password_reset", "bob", "localhost"]);
    let uri = out.lines().next().unwrap().to_string();
    assert!(
        uri.starts_with("xmpp:bob@localhost?register;preauth="),
        "{uri}"
    );
    let token = token_of(&uri);
    // In-band: only for bob.
    let mut c = Client::connect_starttls(server.c2s()).await;
    assert_eq!(preauth(&mut c, &token).await.attr("type"), Some("result"));
    assert_eq!(
        condition(&register(&mut c, "alice", "hijack").await),
        "not-allowed"
    );
    assert_eq!(
        register(&mut c, "bob", "new-pass").await.attr("type"),
        Some("result")
    );
    assert!(can_login(&server, "bob", "new-pass").await);
    assert!(!can_login(&server, "bob", "old-pass").await);
    assert!(can_login(&server, "alice", "secret").await);
    // The web page offers the new-password form, once.
    let out = server.ctl_ok(&["generate_password_reset", "bob", "localhost"]);
    let token = token_of(out.lines().next().unwrap());
    let form = https(http, "GET", &format!("/invites/{token}/register"), &[], b"").await;
    let html = String::from_utf8_lossy(&form.body).to_string();
    assert!(
        html.contains("New password") && html.contains("readonly"),
        "{html}"
    );
    let (nonce, csrf) = form_fields(&html);
    let ok = post(
        http,
        &token,
        Some(&nonce),
        &[
            ("username", "bob"),
            ("password", "web-new"),
            ("password2", "web-new"),
            ("nonce", &nonce),
            ("csrf", &csrf),
        ],
    )
    .await;
    assert_eq!(ok.status, 200, "{}", String::from_utf8_lossy(&ok.body));
    assert!(can_login(&server, "bob", "web-new").await);
}

/// XEP-0379 across servers: alice@a.test's contact invitation, used by
/// bob@b.test in a `subscribe` presence, pre-approves him (RFC 6121 §3.4):
/// a.test answers `subscribed` itself and alice's roster has him with
/// subscription `from`; the token is spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contact_invitation_from_another_server() {
    use crate::s2s::{free_port, start_with_modules, user, Ca, Side};
    let files = tempfile::tempdir().unwrap();
    let ca = Ca::new("Rookery test CA");
    let (pa, pb) = (free_port(), free_port());
    let (ca_cert, cb_cert) = (ca.issue("a.test"), ca.issue("b.test"));
    let a = start_with_modules(
        &Side {
            domain: "a.test",
            s2s_port: pa,
            cert: &ca_cert,
            cafile: None,
            extra: "",
        },
        &[("b.test", pb)],
        files.path(),
        &format!("{DEFAULT_MODULES}  mod_adhoc: {{}}\n  mod_invites: {{}}\n"),
    );
    let b = start_with_modules(
        &Side {
            domain: "b.test",
            s2s_port: pb,
            cert: &cb_cert,
            cafile: None,
            extra: "",
        },
        &[("a.test", pa)],
        files.path(),
        DEFAULT_MODULES,
    );
    let mut alice = user(&a, "a.test", "alice", "pc").await;
    let id = alice.id();
    let done = alice
        .request(
            &format!("<iq type='set' to='a.test' id='{id}'><command xmlns='{NS_CMD}' node='urn:xmpp:invite#invite' action='execute'/></iq>"),
            &id,
        )
        .await;
    let uri = field(&done, "uri")
        .unwrap_or_else(|| panic!("{done}"))
        .to_string();
    assert!(
        uri.starts_with("xmpp:alice@a.test?roster;preauth="),
        "{uri}"
    );
    let mut bob = user(&b, "b.test", "bob", "phone").await;
    bob.send(&format!(
        "<presence to='alice@a.test' type='subscribe'><preauth xmlns='{NS_PARS}' token='{}'/></presence>",
        token_of(&uri)
    ))
    .await;
    // a.test pre-approved bob: it answers `subscribed` without asking alice.
    let subscribed = bob
        .recv_where("subscribed from alice", |e| {
            e.name == "presence" && e.attr("type") == Some("subscribed")
        })
        .await;
    assert_eq!(
        subscribed.attr("from"),
        Some("alice@a.test"),
        "{subscribed}"
    );
    let roster = a.ctl_ok(&["get_roster", "alice", "a.test"]);
    assert!(
        roster
            .lines()
            .any(|l| l.starts_with("bob@b.test\t") && l.contains("\tfrom")),
        "{roster}"
    );
    let list = a.ctl_ok(&["list_invites", "a.test"]);
    assert!(
        list.contains("\tused\t") && list.contains("bob@b.test"),
        "{list}"
    );
    drop(b);
}
