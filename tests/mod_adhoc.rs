//! XEP-0050 ad-hoc commands with the XEP-0133 administration set
//! (`mod_adhoc`) against the real binary: who sees and may run what
//! (`acl: admin` + `access_rules: configure`), the two-step and one-step
//! flows, sessions, and each command's effect checked through `rookery ctl`
//! or a client.

use crate::common;

use common::client::esc;
use common::*;

const NS_CMD: &str = "http://jabber.org/protocol/commands";
const ADMIN: &str = "http://jabber.org/protocol/admin";

fn admin_server() -> Server {
    let s = Server::start_with_yaml_edit(Config::default(), |y| {
        let y = y.replace(
            "modules:\n",
            "modules:\n  mod_adhoc: {}\n  mod_configure: {}\n",
        );
        format!(
            "{y}acl:\n  admin:\n    user:\n      - alice@localhost\n\
             access_rules:\n  configure:\n    allow: admin\n"
        )
    });
    s.register("alice", "localhost", "secret");
    s.register("bob", "localhost", "hunter2");
    s
}

async fn items(c: &mut Client, node: &str) -> Element {
    let id = c.id();
    c.request(
        &format!("<iq type='get' to='localhost' id='{id}'><query xmlns='http://jabber.org/protocol/disco#items' node='{node}'/></iq>"),
        &id,
    )
    .await
}

fn field(var: &str, vals: &[&str]) -> String {
    let v: String = vals
        .iter()
        .map(|v| format!("<value>{}</value>", esc(v)))
        .collect();
    format!("<field var='{var}'>{v}</field>")
}

fn submit(fields: &[String]) -> String {
    format!(
        "<x xmlns='jabber:x:data' type='submit'>{}{}</x>",
        field("FORM_TYPE", &[ADMIN]),
        fields.concat()
    )
}

async fn command(c: &mut Client, node: &str, attrs: &str, inner: &str) -> Element {
    let id = c.id();
    c.request(
        &format!("<iq type='set' to='localhost' id='{id}'><command xmlns='{NS_CMD}' node='{ADMIN}#{node}' {attrs}>{inner}</command></iq>"),
        &id,
    )
    .await
}

fn error_condition(reply: &Element) -> (String, Option<String>) {
    assert_eq!(reply.attr("type"), Some("error"), "{reply}");
    let err = reply.child("error").expect("error");
    let cond = err
        .children
        .iter()
        .find(|c| c.ns == "urn:ietf:params:xml:ns:xmpp-stanzas" && c.name != "text")
        .map(|c| c.name.clone())
        .unwrap_or_default();
    let app = err
        .children
        .iter()
        .find(|c| c.ns == NS_CMD)
        .map(|c| c.name.clone());
    (cond, app)
}

fn completed(reply: &Element) -> &Element {
    assert_eq!(reply.attr("type"), Some("result"), "{reply}");
    let cmd = reply.child_ns("command", NS_CMD).expect("command");
    assert_eq!(cmd.attr("status"), Some("completed"), "{reply}");
    cmd
}

async fn can_login(server: &Server, user: &str, password: &str) -> bool {
    let mut c = Client::connect_starttls(server.c2s()).await;
    c.auth_scram("SCRAM-SHA-256", user, password).await.is_ok()
}

#[tokio::test]
async fn only_admins_see_and_run_commands() {
    let server = admin_server();
    let mut bob = Client::login(&server, "bob", "hunter2", Some("b")).await;
    let r = items(&mut bob, NS_CMD).await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    assert_eq!(
        r.child("query").unwrap().children_named("item").count(),
        0,
        "{r}"
    );
    let r = command(&mut bob, "add-user", "action='execute'", "").await;
    assert_eq!(error_condition(&r).0, "forbidden");
    let r = command(
        &mut bob,
        "add-user",
        "",
        &submit(&[
            field("accountjid", &["mallory@localhost"]),
            field("password", &["x"]),
        ]),
    )
    .await;
    assert_eq!(error_condition(&r).0, "forbidden");
    assert_eq!(server.ctl(&["check_account", "mallory", "localhost"]).0, 1);

    let mut alice = Client::login(&server, "alice", "secret", Some("a")).await;
    let r = items(&mut alice, NS_CMD).await;
    let nodes: Vec<String> = r
        .child("query")
        .unwrap()
        .children_named("item")
        .filter_map(|i| i.attr("node").map(str::to_string))
        .collect();
    for id in [
        "add-user",
        "delete-user",
        "change-user-password",
        "end-user-session",
        "disable-user",
        "reenable-user",
        "get-online-users-num",
        "announce",
    ] {
        assert!(
            nodes.contains(&format!("{ADMIN}#{id}")),
            "{id} missing: {nodes:?}"
        );
    }
    let id = alice.id();
    let info = alice
        .request(
            &format!("<iq type='get' to='localhost' id='{id}'><query xmlns='http://jabber.org/protocol/disco#info' node='{ADMIN}#add-user'/></iq>"),
            &id,
        )
        .await;
    let q = info.child("query").expect("query");
    let ident = q.child("identity").expect("identity");
    assert_eq!(ident.attr("category"), Some("automation"));
    assert_eq!(ident.attr("type"), Some("command-node"));
}

#[tokio::test]
async fn add_change_end_delete_user() {
    let server = admin_server();
    let mut alice = Client::login(&server, "alice", "secret", Some("a")).await;

    // Two steps: execute returns the form and a session.
    let r = command(&mut alice, "add-user", "action='execute'", "").await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    let cmd = r.child_ns("command", NS_CMD).unwrap();
    assert_eq!(cmd.attr("status"), Some("executing"));
    let sid = cmd.attr("sessionid").unwrap().to_string();
    let form = cmd.child_ns("x", "jabber:x:data").expect("form");
    let vars: Vec<&str> = form
        .children_named("field")
        .filter_map(|f| f.attr("var"))
        .collect();
    assert!(
        vars.contains(&"accountjid") && vars.contains(&"password"),
        "{vars:?}"
    );
    let fields = [
        field("accountjid", &["carol@localhost"]),
        field("password", &["c-pass"]),
        field("password-verify", &["c-pass"]),
    ];
    let r = command(
        &mut alice,
        "add-user",
        &format!("sessionid='{sid}' action='complete'"),
        &submit(&fields),
    )
    .await;
    completed(&r);
    assert!(can_login(&server, "carol", "c-pass").await);
    // The session is used up.
    let r = command(
        &mut alice,
        "add-user",
        &format!("sessionid='{sid}' action='complete'"),
        &submit(&fields),
    )
    .await;
    assert_eq!(
        error_condition(&r),
        ("bad-request".into(), Some("bad-sessionid".into()))
    );
    // One step (form with the first request); an existing account is a conflict.
    let r = command(&mut alice, "add-user", "", &submit(&fields)).await;
    assert_eq!(error_condition(&r).0, "conflict");
    let r = command(
        &mut alice,
        "add-user",
        "",
        &submit(&[
            field("accountjid", &["dan@localhost"]),
            field("password", &["a"]),
            field("password-verify", &["b"]),
        ]),
    )
    .await;
    assert_eq!(
        error_condition(&r),
        ("bad-request".into(), Some("bad-payload".into()))
    );
    // Cancel.
    let r = command(&mut alice, "delete-user", "action='execute'", "").await;
    let sid = r
        .child_ns("command", NS_CMD)
        .unwrap()
        .attr("sessionid")
        .unwrap()
        .to_string();
    let r = command(
        &mut alice,
        "delete-user",
        &format!("sessionid='{sid}' action='cancel'"),
        "",
    )
    .await;
    assert_eq!(
        r.child_ns("command", NS_CMD).unwrap().attr("status"),
        Some("canceled")
    );

    let r = command(
        &mut alice,
        "change-user-password",
        "",
        &submit(&[
            field("accountjid", &["carol@localhost"]),
            field("password", &["new-c"]),
        ]),
    )
    .await;
    completed(&r);
    assert!(can_login(&server, "carol", "new-c").await);
    assert!(!can_login(&server, "carol", "c-pass").await);

    let mut bob = Client::login(&server, "bob", "hunter2", Some("b")).await;
    let r = command(&mut alice, "get-online-users-num", "action='execute'", "").await;
    let cmd = completed(&r);
    let value = cmd
        .child_ns("x", "jabber:x:data")
        .and_then(|x| {
            x.children_named("field")
                .find(|f| f.attr("var") == Some("onlineusersnum"))
        })
        .and_then(|f| f.child("value"))
        .map(|v| v.text.clone());
    assert_eq!(value.as_deref(), Some("2"), "{r}");

    let r = command(
        &mut alice,
        "end-user-session",
        "",
        &submit(&[field("accountjids", &["bob@localhost/b"])]),
    )
    .await;
    completed(&r);
    bob.expect_end(&["policy-violation"]).await;

    let r = command(
        &mut alice,
        "delete-user",
        "",
        &submit(&[field("accountjids", &["carol@localhost", "bob@localhost"])]),
    )
    .await;
    completed(&r);
    let users = server.ctl_ok(&["registered_users", "localhost"]);
    assert_eq!(users.trim(), "alice");
    let r = command(
        &mut alice,
        "delete-user",
        "",
        &submit(&[field("accountjids", &["nobody@localhost"])]),
    )
    .await;
    assert_eq!(error_condition(&r).0, "item-not-found");
    let r = command(&mut alice, "no-such-command", "action='execute'", "").await;
    assert_eq!(error_condition(&r).0, "item-not-found");
}

#[tokio::test]
async fn announce_reaches_online_users() {
    let server = admin_server();
    let mut alice = Client::login(&server, "alice", "secret", Some("a")).await;
    let mut bob = Client::login(&server, "bob", "hunter2", Some("b")).await;
    bob.presence().await;
    let r = command(
        &mut alice,
        "announce",
        "",
        &submit(&[
            field("subject", &["Maintenance"]),
            field("announcement", &["Restart at 22:00"]),
        ]),
    )
    .await;
    completed(&r);
    let m = bob.recv_message().await;
    assert_eq!(m.attr("from"), Some("localhost"));
    assert_eq!(m.attr("type"), Some("headline"));
    assert_eq!(m.child_text("subject"), Some("Maintenance"));
    assert_eq!(m.child_text("body"), Some("Restart at 22:00"));
}

#[tokio::test]
async fn without_mod_adhoc_the_command_list_is_an_error_not_silence() {
    let server = server_with_users();
    let mut c = Client::login(&server, "alice", "secret", Some("p")).await;
    let r = items(&mut c, NS_CMD).await;
    assert_eq!(r.attr("type"), Some("error"), "{r}");
}

/// `api_permissions` (ejabberd's): a configured group lets carol, who is
/// no admin, run exactly one command (`get-online-users-num`, the ctl
/// command `stats_host`) through ad-hoc commands; bob stays refused
/// everything; `rookery ctl` keeps its own group minus `unregister`.
#[tokio::test]
async fn api_permissions_groups_decide_per_front_end_and_command() {
    let server = Server::start_with_yaml_edit(Config::default(), |y| {
        let y = y.replace(
            "modules:\n",
            "modules:\n  mod_adhoc: {}\n  mod_configure: {}\n",
        );
        format!(
            "{y}acl:\n  admin:\n    user:\n      - alice@localhost\n\
             access_rules:\n  configure:\n    allow: admin\n\
             api_permissions:\n\
             \x20 \"console commands\":\n\
             \x20   from: ejabberd_ctl\n\
             \x20   who: all\n\
             \x20   what: [\"*\", \"!unregister\"]\n\
             \x20 \"admin access\":\n\
             \x20   from: [mod_adhoc]\n\
             \x20   who:\n\
             \x20     access: configure\n\
             \x20   what: \"*\"\n\
             \x20 \"carol counts users\":\n\
             \x20   from: mod_adhoc\n\
             \x20   who:\n\
             \x20     user: carol@localhost\n\
             \x20   what: stats_host\n"
        )
    });
    for (u, p) in [
        ("alice", "secret"),
        ("bob", "hunter2"),
        ("carol", "carolpw"),
    ] {
        server.register(u, "localhost", p);
    }

    let mut carol = Client::login(&server, "carol", "carolpw", Some("c")).await;
    let r = items(&mut carol, NS_CMD).await;
    let nodes: Vec<String> = r
        .child("query")
        .unwrap()
        .children_named("item")
        .filter_map(|i| i.attr("node").map(str::to_string))
        .collect();
    assert!(
        nodes.contains(&format!("{ADMIN}#get-online-users-num")),
        "{nodes:?}"
    );
    assert!(!nodes.contains(&format!("{ADMIN}#add-user")), "{nodes:?}");
    let r = command(&mut carol, "get-online-users-num", "", &submit(&[])).await;
    let cmd = completed(&r);
    assert!(cmd.to_string().contains("onlineusersnum"), "{r}");
    let r = command(
        &mut carol,
        "add-user",
        "",
        &submit(&[
            field("accountjid", &["mallory@localhost"]),
            field("password", &["x"]),
        ]),
    )
    .await;
    assert_eq!(error_condition(&r).0, "forbidden");

    let mut bob = Client::login(&server, "bob", "hunter2", Some("b")).await;
    let r = command(&mut bob, "get-online-users-num", "", &submit(&[])).await;
    assert_eq!(error_condition(&r).0, "forbidden");
    let r = command(
        &mut bob,
        "delete-user",
        "",
        &submit(&[field("accountjids", &["carol@localhost"])]),
    )
    .await;
    assert_eq!(error_condition(&r).0, "forbidden");
    assert_eq!(server.ctl(&["check_account", "carol", "localhost"]).0, 0);

    // The admin group still works for alice.
    let mut alice = Client::login(&server, "alice", "secret", Some("a")).await;
    let r = command(
        &mut alice,
        "add-user",
        "",
        &submit(&[
            field("accountjid", &["dave@localhost"]),
            field("password", &["davepw"]),
        ]),
    )
    .await;
    completed(&r);
    assert!(can_login(&server, "dave", "davepw").await);

    // rookery ctl: everything but unregister.
    let (code, _, err) = server.ctl(&["unregister", "dave", "localhost"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("api_permissions"), "{err}");
    assert_eq!(server.ctl(&["check_account", "dave", "localhost"]).0, 0);
    server.ctl_ok(&["change_password", "dave", "localhost", "newpw"]);
    assert!(server.ctl_ok(&["help"]).contains("unregister"));

    // A mistake in the group is a configuration error with file and line;
    // the running server keeps its configuration.
    let yaml = std::fs::read_to_string(server.config_path()).unwrap();
    let bad = yaml.replace("from: ejabberd_ctl", "from: telnet");
    let line = bad.lines().position(|l| l.contains("telnet")).unwrap() + 1;
    std::fs::write(server.config_path(), &bad).unwrap();
    let (code, _, err) = server.ctl(&["reload_config"]);
    assert_eq!(code, 1, "{err}");
    let file = server
        .config_path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        err.contains(&format!("{file}:{line}")) && err.contains("unknown front end `telnet`"),
        "{err}"
    );
    let r = command(&mut carol, "get-online-users-num", "", &submit(&[])).await;
    completed(&r);
}

/// XEP-0133 disable-user / reenable-user run `ban_account` / `unban_account`.
#[tokio::test]
async fn disable_and_reenable_user() {
    let server = admin_server();
    let mut alice = Client::login(&server, "alice", "secret", Some("a")).await;
    let mut bob = Client::login(&server, "bob", "hunter2", Some("b")).await;
    let r = command(
        &mut alice,
        "disable-user",
        "",
        &submit(&[field("accountjids", &["bob@localhost"])]),
    )
    .await;
    completed(&r);
    bob.expect_end(&["not-authorized", "policy-violation"])
        .await;
    assert!(!can_login(&server, "bob", "hunter2").await);
    let details = server.ctl_ok(&["get_ban_details", "bob", "localhost"]);
    assert!(details.contains("XEP-0133"), "{details}");
    let r = command(
        &mut alice,
        "reenable-user",
        "",
        &submit(&[field("accountjids", &["bob@localhost"])]),
    )
    .await;
    completed(&r);
    assert!(can_login(&server, "bob", "hunter2").await);
    // Not banned any more: re-enabling again fails.
    let r = command(
        &mut alice,
        "reenable-user",
        "",
        &submit(&[field("accountjids", &["bob@localhost"])]),
    )
    .await;
    assert!(r.attr("type") == Some("error"), "{r}");
    // A user without the configure rule may not.
    let mut bob = Client::login(&server, "bob", "hunter2", Some("b2")).await;
    let r = command(
        &mut bob,
        "disable-user",
        "",
        &submit(&[field("accountjids", &["alice@localhost"])]),
    )
    .await;
    assert_eq!(error_condition(&r).0, "forbidden");
}
