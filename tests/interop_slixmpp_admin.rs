//! Interoperability with slixmpp's administration-related plugins:
//! XEP-0077 in-band registration (register before login, change password,
//! cancel) against `mod_register`, and XEP-0050/XEP-0133 (command list,
//! add-user through its form) against `mod_adhoc`. The venv logic lives in
//! [`common::interop`]; fails (never skips) without Python's venv module.

use crate::common;

use std::process::Command;

use common::interop::{ensure_venv, run_bounded, tests_file, SCRIPT_TIMEOUT};
use common::*;

#[test]
fn slixmpp_xep_0077_register_change_password_cancel() {
    let python = ensure_venv();
    let script = tests_file("interop/slixmpp_register.py");
    let server = Server::start_with_yaml_edit(Config::default(), |y| {
        let y = y.replace("modules:\n", "modules:\n  mod_register: {}\n");
        format!("{y}registration_timeout: infinity\n")
    });
    let user = unique("ibr");
    let jid = format!("{user}@localhost");
    let mut cmd = Command::new(&python);
    cmd.arg(&script)
        .arg("--host")
        .arg(server.c2s().ip().to_string())
        .arg("--port")
        .arg(server.c2s().port().to_string())
        .args(["--jid", &jid, "--password", "first-Pass1"])
        .args(["--new-password", "second-Pass2"])
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let ran = run_bounded(cmd, SCRIPT_TIMEOUT, "slixmpp_register.py");
    assert!(
        ran.code == Some(0) && ran.stdout.lines().any(|l| l.starts_with("INTEROP OK ")),
        "slixmpp XEP-0077 interop failed (exit {:?})\nstdout:\n{}\nstderr:\n{}",
        ran.code,
        ran.stdout,
        ran.stderr
    );
    let users = server.ctl_ok(&["registered_users", "localhost"]);
    assert!(
        !users.lines().any(|l| l == user),
        "cancelled account still listed"
    );
}

#[test]
fn slixmpp_xep_0133_add_user() {
    let python = ensure_venv();
    let script = tests_file("interop/slixmpp_adhoc.py");
    let server = Server::start_with_yaml_edit(Config::default(), |y| {
        let y = y.replace("modules:\n", "modules:\n  mod_adhoc: {}\n");
        format!(
            "{y}acl:\n  admin:\n    user:\n      - boss@localhost\n\
             access_rules:\n  configure:\n    allow: admin\n"
        )
    });
    server.register("boss", "localhost", "boss-pw");
    let user = unique("added");
    let jid = format!("{user}@localhost");
    let mut cmd = Command::new(&python);
    cmd.arg(&script)
        .arg("--host")
        .arg(server.c2s().ip().to_string())
        .arg("--port")
        .arg(server.c2s().port().to_string())
        .args(["--jid", "boss@localhost", "--password", "boss-pw"])
        .args(["--new-jid", &jid, "--new-password", "added-Pw1"])
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let ran = run_bounded(cmd, SCRIPT_TIMEOUT, "slixmpp_adhoc.py");
    assert!(
        ran.code == Some(0) && ran.stdout.lines().any(|l| l.starts_with("INTEROP OK ")),
        "slixmpp XEP-0133 interop failed (exit {:?})\nstdout:\n{}\nstderr:\n{}",
        ran.code,
        ran.stdout,
        ran.stderr
    );
    server.ctl_ok(&["check_password", &user, "localhost", "added-Pw1"]);
}
