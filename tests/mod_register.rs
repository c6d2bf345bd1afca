//! XEP-0077 in-band registration (`mod_register`) against the real binary:
//! the stream feature, registration before authentication with ejabberd's
//! options (ip_access, access, password_strength, registration_timeout,
//! welcome_message, registration_watchers, redirect_url), and password
//! change and cancellation after authentication.

use crate::common;

use std::time::Duration;

use common::*;

const NS_REG: &str = "jabber:iq:register";

/// A server with `mod_register` configured by `module_yaml` (indented
/// option lines, or empty) and extra top-level YAML.
fn server_with_register(module_yaml: &str, top: &str) -> Server {
    let module = format!(
        "  mod_register:{}\n",
        if module_yaml.is_empty() {
            " {}".to_string()
        } else {
            format!("\n{module_yaml}")
        }
    );
    let top = top.to_string();
    let s = Server::start_with_yaml_edit(Config::default(), move |y| {
        let y = y.replace("modules:\n", &format!("modules:\n{module}"));
        format!("{y}{top}")
    });
    s.register("bob", "localhost", "hunter2");
    s
}

fn has_register_feature(f: &Element) -> bool {
    f.child_ns("register", "http://jabber.org/features/iq-register")
        .is_some()
}

/// Sends a registration iq on an unauthenticated (TLS) stream.
async fn reg(c: &mut Client, kind: &str, inner: &str) -> Element {
    let id = c.id();
    c.request(
        &format!("<iq type='{kind}' id='{id}'><query xmlns='{NS_REG}'>{inner}</query></iq>"),
        &id,
    )
    .await
}

fn creds(user: &str, pw: &str) -> String {
    format!("<username>{user}</username><password>{pw}</password>")
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

async fn can_login(server: &Server, user: &str, password: &str) -> bool {
    let mut c = Client::connect_starttls(server.c2s()).await;
    c.auth_scram("SCRAM-SHA-256", user, password).await.is_ok()
}

#[tokio::test]
async fn not_enabled_means_no_registration() {
    let server = server_with_users();
    let mut c = Client::connect_starttls(server.c2s()).await;
    assert!(!has_register_feature(c.features.as_ref().unwrap()));
    let id = c.id();
    c.send(&format!(
        "<iq type='set' id='{id}'><query xmlns='{NS_REG}'>{}</query></iq>",
        creds("eve", "pw")
    ))
    .await;
    assert_eq!(c.expect_stream_error().await, "not-authorized");
}

#[tokio::test]
async fn register_before_authentication_then_login() {
    let server = server_with_register("", "registration_timeout: infinity\n");
    // Not before TLS when STARTTLS is required.
    let mut plain = Client::connect(server.c2s()).await;
    let f = plain.open_stream().await;
    assert!(!has_register_feature(&f), "{f}");

    let mut c = Client::connect_starttls(server.c2s()).await;
    assert!(has_register_feature(c.features.as_ref().unwrap()));
    let form = reg(&mut c, "get", "").await;
    assert_eq!(form.attr("type"), Some("result"), "{form}");
    let q = form.child_ns("query", NS_REG).expect("query");
    assert!(
        q.child("username").is_some() && q.child("password").is_some(),
        "{form}"
    );
    assert!(q.child("instructions").is_some());

    let ok = reg(&mut c, "set", &creds("Newbie", "s3cret-pass")).await;
    assert_eq!(ok.attr("type"), Some("result"), "{ok}");
    assert_eq!(
        condition(&reg(&mut c, "set", &creds("newbie", "x")).await),
        "conflict"
    );
    assert_eq!(
        condition(&reg(&mut c, "set", &creds("bob", "x")).await),
        "conflict"
    );
    assert_eq!(
        condition(&reg(&mut c, "set", &creds("bad@name", "x")).await),
        "jid-malformed"
    );
    assert_eq!(
        condition(&reg(&mut c, "set", "<username>solo</username>").await),
        "not-acceptable"
    );
    assert_eq!(
        condition(&reg(&mut c, "set", "<remove/>").await),
        "not-allowed"
    );
    // The same stream can then authenticate as the new account.
    c.auth_scram("SCRAM-SHA-256", "newbie", "s3cret-pass")
        .await
        .expect("login as the registered account");
    assert!(server
        .ctl_ok(&["registered_users", "localhost"])
        .lines()
        .any(|l| l == "newbie"));
    assert!(!can_login(&server, "newbie", "x").await);
}

#[tokio::test]
async fn too_many_pre_auth_requests_close_the_stream() {
    let server = server_with_register("", "registration_timeout: infinity\n");
    let mut c = Client::connect_starttls(server.c2s()).await;
    for _ in 0..10 {
        let r = reg(&mut c, "get", "").await;
        assert_eq!(r.attr("type"), Some("result"));
    }
    c.send(&format!(
        "<iq type='get' id='x'><query xmlns='{NS_REG}'/></iq>"
    ))
    .await;
    assert_eq!(c.expect_stream_error().await, "policy-violation");
}

#[tokio::test]
async fn ip_access_and_access_rules() {
    // ip_access denying loopback: no feature, and a set is forbidden.
    let server = server_with_register(
        "    ip_access: nobody\n",
        "access_rules:\n  nobody:\n    deny: all\n",
    );
    let mut c = Client::connect_starttls(server.c2s()).await;
    assert!(!has_register_feature(c.features.as_ref().unwrap()));
    assert_eq!(
        condition(&reg(&mut c, "set", &creds("eve", "pw")).await),
        "forbidden"
    );
    drop(c);
    drop(server);

    // access on the user name; ip_access allowing loopback explicitly.
    let server = server_with_register(
        "    access: register\n    ip_access: trusted\n",
        "registration_timeout: infinity\n\
         acl:\n  reserved:\n    user_regexp: \"^admin\"\n  lo:\n    ip: 127.0.0.0/8\n\
         access_rules:\n  register:\n    deny: reserved\n    allow: all\n  trusted:\n    allow: lo\n",
    );
    let mut c = Client::connect_starttls(server.c2s()).await;
    assert!(has_register_feature(c.features.as_ref().unwrap()));
    assert_eq!(
        condition(&reg(&mut c, "set", &creds("admin2", "pw")).await),
        "forbidden"
    );
    let ok = reg(&mut c, "set", &creds("carol", "pw")).await;
    assert_eq!(ok.attr("type"), Some("result"), "{ok}");
}

#[tokio::test]
async fn rate_limit_and_password_strength() {
    let server = server_with_register(
        "    password_strength: 40\n",
        "registration_timeout: 3600\n",
    );
    let mut c = Client::connect_starttls(server.c2s()).await;
    assert_eq!(
        condition(&reg(&mut c, "set", &creds("weak", "abc")).await),
        "not-acceptable"
    );
    let ok = reg(&mut c, "set", &creds("first", "Correct-Horse-7")).await;
    assert_eq!(ok.attr("type"), Some("result"), "{ok}");
    // A second registration from the same address within the timeout.
    let mut c2 = Client::connect_starttls(server.c2s()).await;
    let r = reg(&mut c2, "set", &creds("second", "Correct-Horse-8")).await;
    assert_eq!(condition(&r), "resource-constraint", "{r}");
    let err = r.child("error").unwrap();
    assert_eq!(err.attr("type"), Some("wait"));
    assert!(!server
        .ctl_ok(&["registered_users", "localhost"])
        .contains("second"));
}

#[tokio::test]
async fn welcome_message_and_watchers() {
    let server = server_with_register(
        "    welcome_message:\n      subject: Welcome!\n      body: Hello from the admins\n    registration_watchers:\n      - bob@localhost\n",
        "registration_timeout: infinity\n",
    );
    let mut bob = Client::login(&server, "bob", "hunter2", Some("w")).await;
    bob.presence().await;
    let mut c = Client::connect_starttls(server.c2s()).await;
    let ok = reg(&mut c, "set", &creds("dora", "pw-dora")).await;
    assert_eq!(ok.attr("type"), Some("result"), "{ok}");
    let note = bob.recv_message().await;
    assert_eq!(note.attr("from"), Some("localhost"));
    let body = note.child_text("body").unwrap_or_default();
    assert!(
        body.contains("dora@localhost") && body.contains("127.0.0.1"),
        "{body}"
    );

    let mut dora = Client::login(&server, "dora", "pw-dora", Some("d")).await;
    dora.presence().await;
    let welcome = dora.recv_message().await;
    assert_eq!(welcome.attr("from"), Some("localhost"));
    assert_eq!(welcome.child_text("subject"), Some("Welcome!"));
    assert_eq!(welcome.child_text("body"), Some("Hello from the admins"));
}

#[tokio::test]
async fn redirect_url_points_elsewhere() {
    let server = server_with_register("    redirect_url: https://example.org/signup\n", "");
    let mut c = Client::connect_starttls(server.c2s()).await;
    assert!(has_register_feature(c.features.as_ref().unwrap()));
    let form = reg(&mut c, "get", "").await;
    let q = form.child_ns("query", NS_REG).expect("query");
    let url = q
        .child_ns("x", "jabber:x:oob")
        .and_then(|x| x.child("url"))
        .map(|u| u.text.clone());
    assert_eq!(url.as_deref(), Some("https://example.org/signup"), "{form}");
    assert!(q.child("username").is_none());
    assert_eq!(
        condition(&reg(&mut c, "set", &creds("eve", "pw")).await),
        "not-allowed"
    );
}

#[tokio::test]
async fn change_password_and_cancel_after_login() {
    let server = server_with_register("", "");
    server.register("alice", "localhost", "secret");
    let mut a = Client::login(&server, "alice", "secret", Some("r")).await;
    let got = {
        let id = a.id();
        a.request(
            &format!("<iq type='get' to='localhost' id='{id}'><query xmlns='{NS_REG}'/></iq>"),
            &id,
        )
        .await
    };
    let q = got.child_ns("query", NS_REG).expect("query");
    assert!(q.child("registered").is_some(), "{got}");
    assert_eq!(q.child_text("username"), Some("alice"));

    let id = a.id();
    let r = a
        .request(
            &format!(
                "<iq type='set' id='{id}'><query xmlns='{NS_REG}'>{}</query></iq>",
                creds("bob", "stolen")
            ),
            &id,
        )
        .await;
    assert_eq!(condition(&r), "not-allowed");
    assert!(can_login(&server, "bob", "hunter2").await);

    let id = a.id();
    let r = a
        .request(
            &format!(
                "<iq type='set' to='localhost' id='{id}'><query xmlns='{NS_REG}'>{}</query></iq>",
                creds("alice", "n3w")
            ),
            &id,
        )
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    assert!(can_login(&server, "alice", "n3w").await);
    assert!(!can_login(&server, "alice", "secret").await);
    // The session that changed it stays.
    assert_eq!(a.ping("localhost").await.attr("type"), Some("result"));

    let id = a.id();
    a.send(&format!(
        "<iq type='set' to='localhost' id='{id}'><query xmlns='{NS_REG}'><remove/></query></iq>"
    ))
    .await;
    let r = a
        .recv_where("remove result", |e| {
            e.name == "iq" && e.attr("id") == Some(id.as_str())
        })
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    a.expect_end(&["not-authorized"]).await;
    assert!(!can_login(&server, "alice", "n3w").await);
    assert_eq!(
        server.ctl(&["check_account", "alice", "localhost"]).0,
        1,
        "account still there"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
}
