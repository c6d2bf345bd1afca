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

use crate::common;

use common::*;

#[test]
fn slixmpp_mam_paging() {
    let server = Server::start();
    let p1 = unique("pw1-");
    let p2 = unique("pw2-");
    server.register("alice", "localhost", &p1);
    server.register("bob", "localhost", &p2);

    common::interop::run_slixmpp_script(
        "slixmpp_mam.py",
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
