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
