//! Interoperability test of XEP-0313 archive paging (with XEP-0059 RSM and
//! XEP-0359 stanza ids) with a third-party client: slixmpp (Python) runs
//! `tests/interop/slixmpp_mam.py` against the real server. Alice sends bob
//! 40 chats; her archive is paged through with slixmpp's MAM iterator, 7 per
//! page, forwards and backwards, and bob's without `with`: every message
//! exactly once, in order; bob's archive ids are the stanza ids he got.
//!
//! The Python venv (`<target>/interop-venv`, from
//! `tests/interop/requirements.txt`) is shared with `tests/interop_slixmpp.rs`
//! through [`common::interop`]. Fails (never skips) when Python's venv
//! module is unavailable.

mod common;

use std::process::Command;

use common::interop::{ensure_venv, run_bounded, tests_file, SCRIPT_TIMEOUT};
use common::*;

#[test]
fn slixmpp_mam_paging() {
    let python = ensure_venv();
    let script = tests_file("interop/slixmpp_mam.py");

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
    let ran = run_bounded(cmd, SCRIPT_TIMEOUT + SCRIPT_TIMEOUT / 6, "slixmpp_mam.py");
    assert!(
        ran.code == Some(0) && ran.stdout.lines().any(|l| l.starts_with("INTEROP OK ")),
        "slixmpp MAM interop failed (exit {:?})\nstdout:\n{}\nstderr:\n{}",
        ran.code,
        ran.stdout,
        ran.stderr
    );
}
