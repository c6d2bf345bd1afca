//! Interoperability of XEP-0191 blocking and XEP-0163 PEP publish/notify
//! with a third-party client: slixmpp's own plugins (xep_0191, xep_0163 and
//! xep_0172 with xep_0115 caps) run `tests/interop/slixmpp_blocking_pep.py`
//! against the real server. The accounts are subscribed to each other first
//! (with the Rust harness). Fails (never skips) when Python's venv module is
//! unavailable.

use crate::common;

use std::process::Command;

use common::im::{subscribe_mutual, ALICE, BOB};
use common::interop::{ensure_venv, run_bounded, tests_file, SCRIPT_TIMEOUT};
use common::*;

#[tokio::test]
async fn slixmpp_blocking_and_pep_nick() {
    let python = ensure_venv();
    let script = tests_file("interop/slixmpp_blocking_pep.py");
    let server = server_with_users();
    subscribe_mutual(&server, ALICE, BOB).await;

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
            "slixmpp_blocking_pep.py",
        )
    })
    .await
    .expect("script runner");
    assert!(
        ran.code == Some(0) && ran.stdout.lines().any(|l| l.starts_with("INTEROP OK ")),
        "slixmpp blocking/PEP interop failed (exit {:?})\nstdout:\n{}\nstderr:\n{}",
        ran.code,
        ran.stdout,
        ran.stderr
    );
}
