//! A private ejabberd node for tests (Debian's `ejabberd` package, 23.01):
//! its own configuration, spool, logs and Erlang node name, run as the
//! `ejabberd` user through `setpriv`, stopped (and its VM ended by PID) on
//! drop, with the tail of its log printed when the test failed. Also the
//! small process helpers the tests that drive other programs share.
//! Used by `ctl_migrate_real` (XEP-0227 exports) and `storage_pgsql`
//! (ejabberd on PostgreSQL).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Bound on each external command (start, register, export...).
pub const COMMAND_LIMIT: Duration = Duration::from_secs(90);

pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

pub use super::ports::free_port;

/// Runs `cmd` to completion within [`COMMAND_LIMIT`] (killed by its PID
/// after that); returns (success, stdout+stderr).
pub fn run(cmd: &mut Command) -> (bool, String) {
    let out = tempfile::NamedTempFile::new().unwrap();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out.reopen().unwrap())
        .stderr(out.reopen().unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let deadline = Instant::now() + COMMAND_LIMIT;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(out.path()).unwrap_or_default();
    match status {
        Some(st) => (st.success(), text),
        None => (false, format!("{text}\n(killed after {COMMAND_LIMIT:?})")),
    }
}

pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

pub fn is_root() -> bool {
    run(Command::new("id").arg("-u")).1.trim() == "0"
}

/// Whether the test can run; panics under `CI` when it cannot.
pub fn available(tools: &[&str]) -> bool {
    let missing: Vec<&&str> = tools.iter().filter(|t| !have(t)).collect();
    let why = if !missing.is_empty() {
        format!("missing {missing:?} (apt-get install prosody ejabberd)")
    } else if !is_root() {
        "needs root (the servers run as their own system users)".to_string()
    } else {
        return true;
    };
    if std::env::var_os("CI").is_some() {
        panic!("cannot run the migration test: {why}");
    }
    eprintln!("SKIPPED: {why}");
    false
}

pub fn chown(user: &str, path: &Path) {
    let (ok, out) = run(Command::new("chown").args([
        "-R",
        &format!("{user}:{user}"),
        &path.display().to_string(),
    ]));
    assert!(ok, "chown: {out}");
}

/// A running ejabberd node.
pub struct Ejabberd {
    dir: PathBuf,
    ctl: Vec<String>,
    /// Whether an epmd ran before this test (else we ask ours to leave).
    epmd_before: bool,
}

impl Ejabberd {
    pub fn ctl(&self, args: &[&str]) -> (bool, String) {
        run(Command::new(&self.ctl[0]).args(&self.ctl[1..]).args(args))
    }

    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let (ok, out) = self.ctl(args);
        assert!(ok, "ejabberdctl {args:?}: {out}");
        out
    }
}

impl Drop for Ejabberd {
    fn drop(&mut self) {
        let _ = self.ctl(&["stop"]);
        // If it is still there, end the VM this test started, by its PID.
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("ejabberd.pid")) {
            if let Ok(pid) = pid.trim().parse::<u32>() {
                let deadline = Instant::now() + Duration::from_secs(15);
                while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(200));
                }
                if Path::new(&format!("/proc/{pid}")).exists() {
                    let _ = Command::new("kill")
                        .args(["-KILL", &pid.to_string()])
                        .status();
                }
            }
        }
        if !self.epmd_before {
            // The Erlang port mapper our node started: `-kill` only ends it
            // when no node is registered with it any more.
            let _ = run(Command::new("epmd").arg("-kill"));
        }
        if std::thread::panicking() {
            let log =
                std::fs::read_to_string(self.dir.join("logs/ejabberd.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("----- ejabberd log -----");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

impl Ejabberd {
    /// Start ejabberd with `DIR/ejabberd.yml` (written by the caller), its
    /// Erlang node named `NODE<pid>@localhost`; waits until it is up.
    pub fn start(dir: &Path, node: &str) -> Ejabberd {
        let d = dir.display().to_string();
        for sub in ["spool", "logs"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        write(
            dir,
            "ejabberdctl.cfg",
            &format!(
                "ERLANG_NODE={node}{}@localhost\nERL_DIST_PORT={}\nINET_DIST_INTERFACE=127.0.0.1\n\
                 ERL_EPMD_ADDRESS=127.0.0.1\nEJABBERD_PID_PATH={d}/ejabberd.pid\nEJABBERD_BYPASS_WARNINGS=true\n",
                std::process::id(),
                free_port()
            ),
        );
        write(dir, "inetrc", "{lookup,[\"file\"]}.\n");
        chown("ejabberd", dir);
        let ctl: Vec<String> = [
            "setpriv",
            "--reuid=ejabberd",
            "--regid=ejabberd",
            "--init-groups",
            "env",
            "HOME=/var/lib/ejabberd",
            "ejabberdctl",
            "--config-dir",
            &d,
            "--config",
            &format!("{d}/ejabberd.yml"),
            "--ctl-config",
            &format!("{d}/ejabberdctl.cfg"),
            "--spool",
            &format!("{d}/spool"),
            "--logs",
            &format!("{d}/logs"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let epmd_before = run(Command::new("epmd").arg("-names")).0;
        let e = Ejabberd {
            dir: dir.to_path_buf(),
            ctl,
            epmd_before,
        };
        e.ctl_ok(&["start"]);
        // `started` waits (about a minute at most) until the node is up.
        e.ctl_ok(&["started"]);
        e
    }
}
