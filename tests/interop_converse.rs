//! A real web client in a real browser over RFC 7395 WebSocket and,
//! separately, over XEP-0206 BOSH: Converse.js (npm package `converse.js`,
//! installed into `<target>/converse-fixture` by this test or `.ci/run`)
//! in Debian's headless Chromium, driven by Selenium through Debian's
//! chromedriver (`tests/interop/converse_chat.py`). Alice logs in over
//! `wss://` (or `https://…/bosh`), sees bob (slixmpp over STARTTLS) online
//! in her roster, sends him a message typed into the chat box and sees his
//! answer; after her browser storage is cleared and the page reloaded, the
//! conversation is loaded from the archive (XEP-0313). Screenshots:
//! `<target>/artifacts/converse-*.png` (WebSocket) and
//! `<target>/artifacts/converse-bosh-*.png` (BOSH).
//!
//! Certificates: the test server's certificate is self-signed, so
//! Chromium runs with `--ignore-certificate-errors`; the page (served by
//! the script on 127.0.0.1) and the WebSocket only ever reach loopback.
//! Nothing downloads a browser. Says SKIPPED when `chromium` or
//! `chromedriver` is missing, or when Converse.js is neither installed nor
//! installable (no `npm`).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::common;

use common::interop::{ensure_venv, run_bounded, target_dir, tests_file, which, FileLock};
use common::*;

/// The Converse.js release the fixture holds.
const CONVERSE_VERSION: &str = "14.0.0";

/// `dist/` of the Converse.js fixture, installed with npm if missing;
/// `None` when npm is missing too.
fn converse_dist() -> Option<PathBuf> {
    let dir = target_dir().join("converse-fixture");
    let dist = dir.join("node_modules/converse.js/dist");
    let _lock = FileLock::acquire(
        &target_dir().join("converse-fixture.lock"),
        Duration::from_secs(600),
    );
    let installed = std::fs::read_to_string(dir.join("node_modules/converse.js/package.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["version"].as_str().map(str::to_string));
    if dist.join("converse.min.js").exists() && installed.as_deref() == Some(CONVERSE_VERSION) {
        return Some(dist);
    }
    let npm = which("npm")?;
    // A fresh install (npm trips over a half-made or older tree).
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("fixture dir");
    let mut cmd = Command::new(npm);
    cmd.current_dir(&dir).args([
        "install",
        "--no-audit",
        "--no-fund",
        "--ignore-scripts",
        &format!("converse.js@{CONVERSE_VERSION}"),
    ]);
    let ran = run_bounded(cmd, Duration::from_secs(600), "npm install converse.js");
    assert!(
        ran.code == Some(0) && dist.join("converse.min.js").exists(),
        "npm install converse.js@{CONVERSE_VERSION} failed\n{}\n{}",
        ran.stdout,
        ran.stderr
    );
    Some(dist)
}

#[test]
fn converse_js_in_chromium_over_websocket() {
    converse_js_in_chromium(Transport::WebSocket);
}

#[test]
fn converse_js_in_chromium_over_bosh() {
    converse_js_in_chromium(Transport::Bosh);
}

#[derive(Clone, Copy, PartialEq)]
enum Transport {
    WebSocket,
    Bosh,
}

fn converse_js_in_chromium(transport: Transport) {
    if which("chromium").is_none() || which("chromedriver").is_none() {
        eprintln!("SKIPPED: chromium and chromedriver are needed (apt-get install chromium chromium-driver)");
        return;
    }
    let Some(dist) = converse_dist() else {
        eprintln!("SKIPPED: Converse.js is not installed and npm is missing");
        return;
    };
    let server = Server::start_with(Config {
        extra_listeners: vec![
            "port: 0\nip: 127.0.0.1\nmodule: ejabberd_http\ntls: true\nrequest_handlers:\n  /ws: ejabberd_http_ws\n  /bosh: mod_bosh".into(),
        ],
        ..Config::default()
    });
    let (p1, p2) = (unique("pw1-"), unique("pw2-"));
    server.register("alice", "localhost", &p1);
    server.register("bob", "localhost", &p2);
    for (user, contact, nick) in [("alice", "bob", "Bob"), ("bob", "alice", "Alice")] {
        server.ctl_ok(&[
            "add_rosteritem",
            user,
            "localhost",
            contact,
            "localhost",
            nick,
            "Friends",
            "both",
        ]);
    }
    let http = server
        .listeners
        .iter()
        .find(|l| l.module == "http")
        .expect("http listener")
        .addr;
    let artifacts = target_dir().join("artifacts");
    let prefix = match transport {
        Transport::WebSocket => "converse",
        Transport::Bosh => "converse-bosh",
    };
    let python = ensure_venv();
    let mut cmd = Command::new(&python);
    cmd.arg(tests_file("interop/converse_chat.py"))
        .arg("--host")
        .arg(server.c2s().ip().to_string())
        .arg("--port")
        .arg(server.c2s().port().to_string())
        .args(["--jid1", "alice@localhost", "--password1", &p1])
        .args(["--jid2", "bob@localhost", "--password2", &p2])
        .args(match transport {
            Transport::WebSocket => [
                "--ws-url".to_string(),
                format!("wss://localhost:{}/ws", http.port()),
            ],
            Transport::Bosh => [
                "--bosh-url".to_string(),
                format!("https://localhost:{}/bosh", http.port()),
            ],
        })
        .args(["--shot-prefix", prefix])
        .arg("--dist")
        .arg(&dist)
        .arg("--artifacts")
        .arg(&artifacts)
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("SE_OFFLINE", "true");
    let ran = run_bounded(cmd, Duration::from_secs(180), "converse_chat.py");
    assert!(
        ran.code == Some(0) && ran.stdout.lines().any(|l| l.starts_with("INTEROP OK ")),
        "converse_chat.py failed (exit {:?})\nstdout:\n{}\nstderr:\n{}",
        ran.code,
        ran.stdout,
        ran.stderr
    );
    for shot in ["chat", "mam"] {
        let shot = format!("{prefix}-{shot}.png");
        let len = std::fs::metadata(artifacts.join(&shot)).map_or(0, |m| m.len());
        assert!(len > 1000, "screenshot {shot} missing or empty");
    }
    eprintln!("screenshots in {}", artifacts.display());
}
