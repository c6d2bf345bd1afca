//! Integration tests of the `modules:` option on the real `rookery` binary.
//!
//! Module options are checked against each module's spec when the
//! configuration is loaded, as ejabberd does: a wrong value or an unknown
//! option name stops `rookery serve` with exit status 1 and an error naming
//! the file, line and column, the option and what was expected (no
//! warning-and-default). An ejabberd-style configuration listing the
//! modules Rookery's core provides (`mod_roster`, `mod_offline`,
//! `mod_s2s_dialback`), ejabberd's `mod_carboncopy` and `mod_stream_mgmt`
//! with ejabberd's options starts cleanly: no "not provided" warnings for
//! them, one warning naming the ejabberd options accepted but not
//! implemented, and the options Rookery honours are applied
//! (`mod_offline: {access_max_user_messages: RULE}` limits stored offline
//! messages with that shaper rule; `mod_carboncopy` enables XEP-0280); a
//! bad module option written afterwards is refused by `reload_config`.

use crate::common;

use std::process::{Command, Stdio};

use common::im::*;
use common::server::serve_until_exit;
use common::*;

/// The test servers' modules with `mod_carbons` replaced by ejabberd's
/// name and `mod_stream_mgmt` given ejabberd's options.
fn ejabberd_style_modules() -> String {
    let base = common::server::DEFAULT_MODULES
        .replace("  mod_carbons: {}\n", "  mod_carboncopy: {}\n")
        .replace(
            "  mod_stream_mgmt: {}\n",
            "  mod_stream_mgmt:\n    resume_timeout: 300\n    resend_on_timeout: if_offline\n    cache_size: 1000\n",
        );
    format!(
        "{base}  mod_roster:\n    versioning: true\n    store_current_id: false\n  \
         mod_offline:\n    access_max_user_messages: offline_cap\n    store_groupchat: true\n    \
         db_type: sql\n  mod_s2s_dialback: {{}}\n"
    )
}

/// The 1-based line of `yaml` that is exactly `line`.
fn line_of(yaml: &str, line: &str) -> usize {
    yaml.lines()
        .position(|l| l == line)
        .unwrap_or_else(|| panic!("no line {line:?} in:\n{yaml}"))
        + 1
}

#[test]
fn a_bad_module_value_stops_the_server_with_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        modules: "  mod_ping: {}\n  mod_mam:\n    default: sometimes\n".into(),
        ..Config::default()
    };
    let yaml = config.render(dir.path());
    let line = line_of(&yaml, "    default: sometimes");
    let (file, status, err) = serve_until_exit(dir.path(), &yaml);
    assert_eq!(status.code(), Some(1), "{err}");
    let want = format!(
        "rookery: configuration error: {file}:{line}:14: modules.mod_mam.default: \
         expected one of always, never, roster, found \"sometimes\""
    );
    assert!(err.contains(&want), "want {want:?} in:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn an_unknown_module_option_stops_the_server_with_a_suggestion() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        modules: "  mod_stream_mgmt:\n    resume_timout: 30\n".into(),
        ..Config::default()
    };
    let yaml = config.render(dir.path());
    let line = line_of(&yaml, "    resume_timout: 30");
    let (file, status, err) = serve_until_exit(dir.path(), &yaml);
    assert_eq!(status.code(), Some(1), "{err}");
    let want = format!(
        "rookery: configuration error: {file}:{line}:5: modules.mod_stream_mgmt: unknown option \
         `resume_timout` of mod_stream_mgmt; did you mean `resume_timeout`? (its options: \
         resume_timeout, max_resume_timeout, ack_timeout, max_ack_queue"
    );
    assert!(err.contains(&want), "want {want:?} in:\n{err}");

    // `rookery ctl check` refuses the same file the same way.
    let out = Command::new(common::server::ROOKERY)
        .args(["ctl", "-c", &file, "check", "config"])
        .stdin(Stdio::null())
        .output()
        .expect("run rookery ctl");
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!(
            "{file}:{line}:5: modules.mod_stream_mgmt: unknown option"
        )),
        "{text}"
    );
}

#[tokio::test]
async fn an_ejabberd_style_module_list_starts_cleanly_and_is_applied() {
    let config = Config {
        modules: ejabberd_style_modules(),
        ..Config::default()
    };
    let server = Server::start_with_yaml_edit(config, |y| {
        let marker = "shaper_rules:\n";
        assert!(y.contains(marker), "no shaper_rules in: {y}");
        y.replacen(marker, &format!("{marker}  offline_cap: 2\n"), 1)
    });
    let log = server.stderr_tail();
    for m in [
        "mod_roster",
        "mod_offline",
        "mod_carboncopy",
        "mod_stream_mgmt",
        "mod_s2s_dialback",
    ] {
        assert!(!log.contains(&format!("module `{m}` is not")), "{m}: {log}");
        assert!(!log.contains(&format!("module {m} is not")), "{m}: {log}");
    }
    // One warning per module naming what is accepted and not implemented;
    // storage tuning (`db_type`, `cache_size`) and values Rookery always
    // has (`versioning: true`, `resend_on_timeout: if_offline`) are silent.
    assert!(
        log.contains("modules.mod_roster: option `store_current_id` accepted for ejabberd configurations but not implemented by Rookery; ignored"),
        "{log}"
    );
    assert!(
        log.contains("modules.mod_offline: option `store_groupchat` accepted"),
        "{log}"
    );
    for quiet in ["db_type", "cache_size", "versioning", "resend_on_timeout"] {
        assert!(!log.contains(&format!("`{quiet}`")), "{quiet}: {log}");
    }

    server.register(ALICE.0, "localhost", ALICE.1);
    server.register(BOB.0, "localhost", BOB.1);
    let mut alice = online(&server, ALICE, "a1").await;

    // mod_carboncopy is XEP-0280.
    let id = alice.id();
    let r = alice
        .request(
            &format!("<iq type='set' id='{id}'><enable xmlns='urn:xmpp:carbons:2'/></iq>"),
            &id,
        )
        .await;
    assert_eq!(r.attr("type"), Some("result"), "carbons enable: {r}");

    // mod_offline's access_max_user_messages names the rule: 2 stored, the
    // third bounces.
    for i in 0..3 {
        alice
            .send(&chat(
                "bob@localhost",
                &format!("o{i}"),
                &format!("off-{i}"),
            ))
            .await;
    }
    let back = sync(&mut alice).await;
    let bounced: Vec<&str> = back
        .iter()
        .filter(|e| e.name == "message" && e.attr("type") == Some("error"))
        .filter_map(|e| e.attr("id"))
        .collect();
    assert_eq!(bounced, ["o2"], "{}", show(&back));
    let (_bob, got) = online_with(&server, BOB, "b1", "<presence/>").await;
    assert_eq!(bodies(&got), ["off-0", "off-1"], "{}", show(&got));

    // A bad module option in the file is refused by reload_config (exit
    // 1, with its position); the running server keeps its configuration.
    let yaml = std::fs::read_to_string(server.config_path()).unwrap();
    let bad = yaml.replace("    resume_timeout: 300\n", "    resume_timeout: soon\n");
    assert_ne!(bad, yaml);
    std::fs::write(server.config_path(), &bad).unwrap();
    let line = line_of(&bad, "    resume_timeout: soon");
    let (code, out, err) = server.ctl(&["reload_config"]);
    assert_eq!(code, 1, "{out}{err}");
    let want = format!(
        "{}:{line}:21: modules.mod_stream_mgmt.resume_timeout: expected a duration",
        server.config_path().display()
    );
    assert!(err.contains(&want), "want {want:?} in {out}{err}");
    let id = alice.id();
    let r = alice
        .request(
            &format!("<iq type='get' id='{id}'><ping xmlns='urn:xmpp:ping'/></iq>"),
            &id,
        )
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
}
