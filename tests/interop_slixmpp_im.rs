//! Interoperability test of RFC 6121 features with a third-party client:
//! slixmpp (Python) runs `tests/interop/slixmpp_im.py` against the real
//! server. Two slixmpp clients subscribe to each other through slixmpp's own
//! subscription handling, see each other's presence, one leaves, receives a
//! chat message while offline and gets it exactly once, with a XEP-0203
//! delay, when it logs in again.
//!
//! The Python venv (`<target>/interop-venv`, from
//! `tests/interop/requirements.txt`) is shared with `tests/interop_slixmpp.rs`
//! through [`common::interop`]. Fails (never skips) when Python's venv
//! module is unavailable.

use crate::common;

use common::*;

#[test]
fn slixmpp_subscriptions_presence_and_offline_message() {
    let server = Server::start();
    let p1 = unique("pw1-");
    let p2 = unique("pw2-");
    server.register("alice", "localhost", &p1);
    server.register("bob", "localhost", &p2);

    common::interop::run_slixmpp_script(
        "slixmpp_im.py",
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
