//! Interoperability of XEP-0060 publish-subscribe with a third-party
//! client: slixmpp's own xep_0060 plugin (create with a configuration
//! form, node configuration, subscribe, publish with and without ids,
//! events, items retrieval including xep_0059 paging, retract with notify,
//! subscriptions, affiliations, purge, delete) runs
//! `tests/interop/slixmpp_pubsub.py` against the real server with
//! `mod_pubsub` on `pubsub.localhost`. Fails (never skips) when Python's
//! venv module is unavailable.

use crate::common;

use std::process::Command;

use common::im::{ALICE, BOB};
use common::interop::{ensure_venv, run_bounded, tests_file, SCRIPT_TIMEOUT};
use common::*;

#[tokio::test]
async fn slixmpp_pubsub_create_publish_subscribe_retrieve() {
    let python = ensure_venv();
    let script = tests_file("interop/slixmpp_pubsub.py");
    let server = Server::start_with(Config {
        modules: format!("{}  mod_pubsub: {{}}\n", server::DEFAULT_MODULES),
        ..Default::default()
    });
    server.register("alice", "localhost", ALICE.1);
    server.register("bob", "localhost", BOB.1);

    let mut cmd = Command::new(&python);
    cmd.arg(&script)
        .arg("--host")
        .arg(server.c2s().ip().to_string())
        .arg("--port")
        .arg(server.c2s().port().to_string())
        .args(["--jid1", "alice@localhost", "--password1", ALICE.1])
        .args(["--jid2", "bob@localhost", "--password2", BOB.1])
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let ran = tokio::task::spawn_blocking(move || {
        run_bounded(
            cmd,
            SCRIPT_TIMEOUT + SCRIPT_TIMEOUT / 6,
            "slixmpp_pubsub.py",
        )
    })
    .await
    .expect("script runner");
    assert!(
        ran.code == Some(0) && ran.stdout.lines().any(|l| l.starts_with("INTEROP OK ")),
        "slixmpp slixmpp_pubsub.py failed (exit {:?})\nstdout:\n{}\nstderr:\n{}",
        ran.code,
        ran.stdout,
        ran.stderr
    );
}
