//! Interoperability test with a third-party client: slixmpp (Python).
//!
//! Creates (once, under a file lock) a Python venv in `<target>/interop-venv`
//! with `tests/interop/requirements.txt`, starts the real server, registers
//! two accounts with `rookery ctl` and runs `tests/interop/slixmpp_chat.py`,
//! which logs both in over STARTTLS with SCRAM-SHA-256 and exchanges a
//! message in each direction. The venv logic lives in [`common::interop`].
//! Fails (never skips) when Python's venv module is unavailable.

mod common;

use std::process::Command;

use common::interop::{ensure_venv, run_bounded, tests_file, SCRIPT_TIMEOUT};
use common::*;

#[test]
fn slixmpp_clients_chat_over_starttls_with_scram_sha_256() {
    let python = ensure_venv();
    let script = tests_file("interop/slixmpp_chat.py");

    let server = Server::start();
    let p1 = unique("pw1-");
    let p2 = unique("pw2-");
    server.register("juliet", "localhost", &p1);
    server.register("romeo", "localhost", &p2);

    let mut cmd = Command::new(&python);
    cmd.arg(&script)
        .arg("--host")
        .arg(server.c2s().ip().to_string())
        .arg("--port")
        .arg(server.c2s().port().to_string())
        .args(["--jid1", "juliet@localhost", "--password1", &p1])
        .args(["--jid2", "romeo@localhost", "--password2", &p2])
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let ran = run_bounded(cmd, SCRIPT_TIMEOUT, "slixmpp_chat.py");
    assert!(
        ran.code == Some(0) && ran.stdout.lines().any(|l| l.starts_with("INTEROP OK ")),
        "slixmpp interop failed (exit {:?})\nstdout:\n{}\nstderr:\n{}",
        ran.code,
        ran.stdout,
        ran.stderr
    );
}
