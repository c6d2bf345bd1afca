//! Interoperability test of the session-level XEPs with a third-party
//! client: slixmpp (Python) runs `tests/interop/slixmpp_session.py` against
//! the real server with its xep_0198 (stream management: enable, then
//! resumption after its TCP connection is cut, queued messages delivered
//! once), xep_0280 (carbons received and sent) and xep_0352 (an inactive
//! client still gets messages at once) plugins.
//!
//! The Python venv is shared with the other interop tests through
//! [`common::interop`]. Fails (never skips) when Python's venv module is
//! unavailable.

mod common;

use std::process::Command;

use common::interop::{ensure_venv, run_bounded, tests_file, SCRIPT_TIMEOUT};
use common::*;

#[test]
fn slixmpp_stream_management_carbons_and_csi() {
    let python = ensure_venv();
    let script = tests_file("interop/slixmpp_session.py");

    let server = Server::start();
    let p1 = unique("pw1-");
    let p2 = unique("pw2-");
    server.register("alice", "localhost", &p1);
    server.register("bob", "localhost", &p2);

    let mut cmd = Command::new(&python);
    cmd.arg(&script)
        .arg("--host")
        .arg(server.c2s().ip().to_string())
        .arg("--port")
        .arg(server.c2s().port().to_string())
        .args(["--jid1", "alice@localhost", "--password1", &p1])
        .args(["--jid2", "bob@localhost", "--password2", &p2])
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let ran = run_bounded(
        cmd,
        SCRIPT_TIMEOUT + SCRIPT_TIMEOUT / 6,
        "slixmpp_session.py",
    );
    assert!(
        ran.code == Some(0) && ran.stdout.lines().any(|l| l.starts_with("INTEROP OK ")),
        "slixmpp session interop failed (exit {:?})\nstdout:\n{}\nstderr:\n{}",
        ran.code,
        ran.stdout,
        ran.stderr
    );
}
