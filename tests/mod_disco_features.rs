//! The server's disco#info features agree with docs/features.md: every
//! feature the table lists for a done row (core rows always, module rows for
//! the modules the test config enables) is advertised, and nothing else.

use crate::common;

use std::collections::BTreeSet;

use common::client::Client;
use common::server_with_users;

/// Modules the test harness enables.
const ENABLED: &[&str] = &[
    "mod_ping",
    "mod_disco",
    "mod_caps",
    "mod_private",
    "mod_vcard",
    "mod_vcard_xupdate",
    "mod_avatar",
    "mod_blocking",
    "mod_version",
    "mod_time",
    "mod_last",
    "mod_pep",
    "mod_carbons",
    "mod_mam",
    "mod_client_state",
    "mod_stream_mgmt",
    "mod_muc",
];

/// Features the table promises for the harness's configuration.
fn documented() -> BTreeSet<String> {
    documented_for(ENABLED)
}

/// Features the table promises when `enabled` modules are on.
fn documented_for(enabled: &[&str]) -> BTreeSet<String> {
    let table = include_str!("../docs/features.md");
    let mut out = BTreeSet::new();
    for line in table.lines().filter(|l| l.starts_with('|')) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // | spec | what | status | where | disco feature |
        if cells.len() < 6 || !cells[3].starts_with("done") {
            continue;
        }
        let module = enabled.iter().any(|m| cells[4].contains(m));
        let core = !cells[4].contains("mod_");
        if !(module || core) {
            continue;
        }
        for part in cells[5].split('`').skip(1).step_by(2) {
            out.insert(part.to_string());
        }
    }
    out
}

#[tokio::test]
async fn disco_info_matches_the_features_table() {
    let server = server_with_users();
    let mut c = Client::login(&server, "alice", "secret", Some("disco")).await;
    let id = c.id();
    let reply = c
        .request(
            &format!("<iq type='get' to='localhost' id='{id}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"),
            &id,
        )
        .await;
    assert_eq!(reply.attr("type"), Some("result"), "{reply}");
    let query = reply.child("query").expect("query");
    let advertised: BTreeSet<String> = query
        .children_named("feature")
        .filter_map(|f| f.attr("var").map(str::to_string))
        .collect();
    let expected = documented();
    assert!(
        !expected.is_empty(),
        "no features parsed from docs/features.md"
    );
    assert_eq!(
        advertised, expected,
        "disco#info and docs/features.md disagree"
    );
}

/// The same with the administration modules on (`mod_register`, `mod_adhoc`).
#[tokio::test]
async fn disco_info_matches_the_table_with_admin_modules() {
    let server = common::Server::start_with_yaml_edit(common::Config::default(), |y| {
        y.replace(
            "modules:\n",
            "modules:\n  mod_register: {}\n  mod_adhoc: {}\n",
        )
    });
    server.register("alice", "localhost", "secret");
    let mut c = Client::login(&server, "alice", "secret", Some("disco")).await;
    let id = c.id();
    let reply = c
        .request(
            &format!("<iq type='get' to='localhost' id='{id}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"),
            &id,
        )
        .await;
    let advertised: BTreeSet<String> = reply
        .child("query")
        .expect("query")
        .children_named("feature")
        .filter_map(|f| f.attr("var").map(str::to_string))
        .collect();
    let mut enabled = ENABLED.to_vec();
    enabled.extend(["mod_register", "mod_adhoc"]);
    let expected = documented_for(&enabled);
    assert!(expected.contains("jabber:iq:register"));
    assert!(expected.contains("http://jabber.org/protocol/commands"));
    assert_eq!(
        advertised, expected,
        "disco#info and docs/features.md disagree"
    );
}

/// XEP-0157: `mod_disco`'s `server_info` (ejabberd's format) puts the
/// contact addresses in a serverinfo form in the server's disco#info; an
/// entry only for another module is not shown there.
#[tokio::test]
async fn server_info_contact_addresses_in_disco_info() {
    let cfg = common::server::Config {
        modules: common::server::DEFAULT_MODULES.replace(
            "  mod_disco: {}\n",
            "  mod_disco:\n    server_info:\n      - modules: all\n        name: abuse-addresses\n        urls: [\"mailto:abuse@localhost\", \"https://localhost/abuse\"]\n      - modules: [mod_disco]\n        name: admin-addresses\n        urls: [\"xmpp:admin@localhost\"]\n      - modules: [mod_muc]\n        name: support-addresses\n        urls: [\"xmpp:support@localhost\"]\n",
        ),
        ..common::server::Config::default()
    };
    let server = common::Server::start_with(cfg);
    server.register("alice", "localhost", "secret");
    let mut c = Client::login(&server, "alice", "secret", Some("disco")).await;
    let id = c.id();
    let reply = c
        .request(
            &format!("<iq type='get' to='localhost' id='{id}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"),
            &id,
        )
        .await;
    assert_eq!(reply.attr("type"), Some("result"), "{reply}");
    let query = reply.child("query").expect("query");
    let forms: Vec<_> = query
        .children_named("x")
        .filter(|x| {
            x.children_named("field").any(|f| {
                f.attr("var") == Some("FORM_TYPE")
                    && f.child_text("value") == Some("http://jabber.org/network/serverinfo")
            })
        })
        .collect();
    assert_eq!(forms.len(), 1, "one serverinfo form expected: {reply}");
    let values = |var: &str| -> Vec<String> {
        forms[0]
            .children_named("field")
            .filter(|f| f.attr("var") == Some(var))
            .flat_map(|f| f.children_named("value").map(|v| v.text.clone()))
            .collect()
    };
    assert_eq!(
        values("abuse-addresses"),
        vec!["mailto:abuse@localhost", "https://localhost/abuse"],
        "{reply}"
    );
    assert_eq!(
        values("admin-addresses"),
        vec!["xmpp:admin@localhost"],
        "{reply}"
    );
    assert!(values("support-addresses").is_empty(), "{reply}");
    // The default configuration has none: no serverinfo form at all.
    let plain = server_with_users();
    let mut c = Client::login(&plain, "alice", "secret", Some("disco")).await;
    let id = c.id();
    let reply = c
        .request(
            &format!("<iq type='get' to='localhost' id='{id}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"),
            &id,
        )
        .await;
    assert!(
        !reply
            .to_string()
            .contains("http://jabber.org/network/serverinfo"),
        "{reply}"
    );
}
