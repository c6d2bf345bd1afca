//! Interoperability test with a third-party client: slixmpp (Python).
//!
//! Creates (once, under a file lock) a Python venv in `<target>/interop-venv`
//! with `tests/interop/requirements.txt`, starts the real server, registers
//! two accounts with `rookery ctl` and runs `tests/interop/slixmpp_chat.py`,
//! which logs both in over STARTTLS with SCRAM-SHA-256 and exchanges a
//! message in each direction. The venv logic lives in [`common::interop`].
//! Fails (never skips) when Python's venv module is unavailable.

use crate::common;

use common::*;

#[test]
fn slixmpp_clients_chat_over_starttls_with_scram_sha_256() {
    let server = Server::start();
    let p1 = unique("pw1-");
    let p2 = unique("pw2-");
    server.register("juliet", "localhost", &p1);
    server.register("romeo", "localhost", &p2);

    common::interop::run_slixmpp_script(
        "slixmpp_chat.py",
        &server,
        &[
            "--jid1",
            "juliet@localhost",
            "--password1",
            &p1,
            "--jid2",
            "romeo@localhost",
            "--password2",
            &p2,
        ],
    );
}
