//! Interoperability with slixmpp's administration-related plugins:
//! XEP-0077 in-band registration (register before login, change password,
//! cancel) against `mod_register`, XEP-0445 (an invitation redeemed before
//! registering, on an invitation-only server), and XEP-0050/XEP-0133 (command list,
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

/// XEP-0445 with slixmpp: on an invitation-only server (`allow_modules:
/// [mod_invites]`) its own registration is refused, and with a token from
/// `rookery ctl generate_invite` (sent as `<preauth/>` before its XEP-0077
/// registration) it registers and logs in.
#[test]
fn slixmpp_xep_0445_invitation() {
    let python = ensure_venv();
    let script = tests_file("interop/slixmpp_invite.py");
    let server = Server::start_with_yaml_edit(Config::default(), |y| {
        y.replace(
            "modules:\n",
            "modules:\n  mod_register:\n    allow_modules: [mod_invites]\n  mod_invites: {}\n",
        )
    });
    let out = server.ctl_ok(&["generate_invite", "localhost"]);
    let token = out
        .lines()
        .next()
        .and_then(|uri| uri.split("preauth=").nth(1))
        .expect("an invitation URI")
        .to_string();
    let user = unique("invited");
    let jid = format!("{user}@localhost");
    let mut cmd = Command::new(&python);
    cmd.arg(&script)
        .arg("--host")
        .arg(server.c2s().ip().to_string())
        .arg("--port")
        .arg(server.c2s().port().to_string())
        .args(["--jid", &jid, "--password", "invited-Pass1"])
        .args(["--token", &token])
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let ran = run_bounded(cmd, SCRIPT_TIMEOUT, "slixmpp_invite.py");
    assert!(
        ran.code == Some(0) && ran.stdout.lines().any(|l| l.starts_with("INTEROP OK ")),
        "slixmpp XEP-0445 interop failed (exit {:?})\nstdout:\n{}\nstderr:\n{}",
        ran.code,
        ran.stdout,
        ran.stderr
    );
    let users = server.ctl_ok(&["registered_users", "localhost"]);
    assert!(users.lines().any(|l| l == user), "{users}");
    let list = server.ctl_ok(&["list_invites", "localhost"]);
    assert!(list.contains("\tused\t"), "{list}");
}
