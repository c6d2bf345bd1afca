//! An independent SASL2 / Bind 2 / FAST client: xmpp.js (npm package
//! `@xmpp/client`, installed into `<target>/xmppjs-fixture` by this test
//! or `.ci/run`), run by Debian's Node.js (`tests/interop/xmppjs_fast.mjs`).
//! Its first login uses the password (XEP-0388 SASL2 with SCRAM, XEP-0386
//! Bind 2 with the client's tag, XEP-0198 enabled inline) and asks for a
//! XEP-0484 token; its second login has a wrong password and the saved
//! token, so it can only get in through `HT-SHA-256-NONE`. Says SKIPPED
//! when `node` or `npm` is missing.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::common;

use common::interop::{run_bounded, target_dir, tests_file, which, FileLock};
use common::server::DEFAULT_MODULES;
use common::*;

/// The xmpp.js release the fixture holds.
const XMPPJS_VERSION: &str = "0.14.0";

/// `node_modules` of the fixture, installed with npm if missing; `None`
/// when npm is missing.
fn xmppjs_modules() -> Option<PathBuf> {
    let dir = target_dir().join("xmppjs-fixture");
    let modules = dir.join("node_modules");
    let _lock = FileLock::acquire(
        &target_dir().join("xmppjs-fixture.lock"),
        Duration::from_secs(600),
    );
    let installed = std::fs::read_to_string(modules.join("@xmpp/client/package.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["version"].as_str().map(str::to_string));
    if installed.as_deref() == Some(XMPPJS_VERSION) {
        return Some(modules);
    }
    let npm = which("npm")?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("fixture dir");
    let mut cmd = Command::new(npm);
    cmd.current_dir(&dir).args([
        "install",
        "--no-audit",
        "--no-fund",
        "--ignore-scripts",
        &format!("@xmpp/client@{XMPPJS_VERSION}"),
    ]);
    let ran = run_bounded(cmd, Duration::from_secs(600), "npm install @xmpp/client");
    assert!(
        ran.code == Some(0) && modules.join("@xmpp/client").exists(),
        "npm install @xmpp/client@{XMPPJS_VERSION} failed\n{}\n{}",
        ran.stdout,
        ran.stderr
    );
    Some(modules)
}

#[test]
fn xmppjs_sasl2_bind2_and_fast_token_login() {
    let Some(node) = which("node") else {
        eprintln!("SKIPPED: node is needed (apt-get install nodejs)");
        return;
    };
    let Some(modules) = xmppjs_modules() else {
        eprintln!("SKIPPED: xmpp.js is not installed and npm is missing");
        return;
    };
    let server = Server::start_with(Config {
        modules: format!("{DEFAULT_MODULES}  mod_auth_fast: {{}}\n"),
        ..Config::default()
    });
    let password = unique("pw-");
    server.register("alice", "localhost", &password);
    let mut cmd = Command::new(node);
    cmd.arg(tests_file("interop/xmppjs_fast.mjs"))
        .arg(&modules)
        .arg(server.c2s().port().to_string())
        .arg("alice")
        .arg(&password)
        // The test server's certificate is self-signed; loopback only.
        .env("NODE_TLS_REJECT_UNAUTHORIZED", "0");
    let ran = run_bounded(cmd, Duration::from_secs(90), "node xmppjs_fast.mjs");
    let lines: Vec<serde_json::Value> = ran
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        ran.code == Some(0) && lines.len() == 2,
        "xmpp.js failed (exit {:?})\nstdout:\n{}\nstderr:\n{}\nserver:\n{}",
        ran.code,
        ran.stdout,
        ran.stderr,
        server.stderr_tail()
    );
    eprintln!("xmpp.js:\n{}", ran.stdout);
    let (first, fast) = (&lines[0], &lines[1]);
    for l in [first, fast] {
        let jid = l["jid"].as_str().unwrap_or("");
        assert!(
            jid.starts_with("alice@localhost/xmppjs/"),
            "Bind 2 resource is tag/random: {l}"
        );
        assert_eq!(l["ping"], "result", "{l}");
        assert_eq!(l["sm"], true, "stream management enabled inline: {l}");
    }
    assert_eq!(first["token"]["mechanism"], "HT-SHA-256-NONE", "{first}");
    let log = server.stderr_tail();
    assert!(
        log.contains("authenticated with HT-SHA-256-NONE"),
        "the second login did not use the token:\n{log}"
    );
}
