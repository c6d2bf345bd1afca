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

use crate::common;

use common::*;

#[test]
fn slixmpp_stream_management_carbons_and_csi() {
    let server = Server::start();
    let p1 = unique("pw1-");
    let p2 = unique("pw2-");
    server.register("alice", "localhost", &p1);
    server.register("bob", "localhost", &p2);

    common::interop::run_slixmpp_script(
        "slixmpp_session.py",
        &server,
        &[
            "--jid1",
            "alice@localhost",
            "--password1",
            &p1,
            "--jid2",
            "bob@localhost",
            "--password2",
            &p2,
        ],
    );
}
