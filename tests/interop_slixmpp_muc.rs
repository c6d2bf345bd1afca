//! Interoperability of XEP-0045 Multi-User Chat with a third-party client:
//! slixmpp's own xep_0045 plugin (join_muc_wait, room configuration form,
//! groupchat, subject, get_roster of a room, affiliations, leave_muc) runs
//! `tests/interop/slixmpp_muc.py` against the real server; and room
//! archives with occupant features (xep_0313 on the room, xep_0359,
//! xep_0410, xep_0421, xep_0424, xep_0425) by
//! `tests/interop/slixmpp_muc_archive.py`. Fails (never skips) when
//! Python's venv module is unavailable.

use crate::common;

use std::process::Command;

use common::im::{ALICE, BOB};
use common::interop::{ensure_venv, run_bounded, tests_file, SCRIPT_TIMEOUT};
use common::*;

#[tokio::test]
async fn slixmpp_muc_create_join_talk_and_leave() {
    run_script("slixmpp_muc.py").await;
}

#[tokio::test]
async fn slixmpp_room_archive_self_ping_retraction_and_moderation() {
    run_script("slixmpp_muc_archive.py").await;
}

async fn run_script(name: &'static str) {
    let python = ensure_venv();
    let script = tests_file(&format!("interop/{name}"));
    let server = server_with_users();

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
        run_bounded(cmd, SCRIPT_TIMEOUT + SCRIPT_TIMEOUT / 6, name)
    })
    .await
    .expect("script runner");
    assert!(
        ran.code == Some(0) && ran.stdout.lines().any(|l| l.starts_with("INTEROP OK ")),
        "slixmpp {name} failed (exit {:?})\nstdout:\n{}\nstderr:\n{}",
        ran.code,
        ran.stdout,
        ran.stderr
    );
}
