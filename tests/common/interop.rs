//! Shared helpers for interoperability tests with third-party Python
//! clients: a Python venv under `<target>/interop-venv` built (once, under a
//! file lock) from `tests/interop/requirements.txt`, and bounded child
//! processes. Every interop test module uses this one venv; the lock keeps
//! concurrent tests (and concurrent `cargo test` runs) from building it
//! twice.

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::server::ROOKERY;

/// Bound on waiting for another test (or test run) that is building the venv.
pub const VENV_LOCK_TIMEOUT: Duration = Duration::from_secs(900);
/// Bound on `python3 -m venv`.
pub const VENV_CREATE_TIMEOUT: Duration = Duration::from_secs(180);
/// Bound on `pip install`.
pub const PIP_TIMEOUT: Duration = Duration::from_secs(600);
/// Default bound for one interop script run.
pub const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);

/// Locates a file under `tests/` (`rel` is relative to that directory).
pub fn tests_file(rel: &str) -> PathBuf {
    // This file is tests/common/interop.rs: its grandparent is tests/.
    let here = Path::new(file!());
    let tests_dir = here.parent().and_then(Path::parent);
    let mut candidates = Vec::new();
    if let Some(dir) = tests_dir {
        if dir.is_absolute() {
            candidates.push(dir.join(rel));
        }
    }
    candidates.push(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests")
            .join(rel),
    );
    if let Some(dir) = tests_dir {
        candidates.push(dir.join(rel));
    }
    candidates
        .iter()
        .find(|p| p.exists())
        .cloned()
        .unwrap_or_else(|| panic!("cannot find tests/{rel}; tried {candidates:?}"))
}

/// The cargo target directory: `<target>/<profile>/rookery` → `<target>`.
pub fn target_dir() -> PathBuf {
    if let Ok(d) = std::env::var("CARGO_TARGET_DIR") {
        if !d.is_empty() {
            return PathBuf::from(d);
        }
    }
    Path::new(ROOKERY)
        .parent()
        .and_then(Path::parent)
        .expect("binary path has a target dir")
        .to_path_buf()
}

/// Finds `prog` on PATH.
pub fn which(prog: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(prog))
            .find(|p| p.is_file())
    })
}

/// Output of a bounded child process.
pub struct Ran {
    /// Exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    /// Captured stdout.
    pub stdout: String,
    /// Captured stderr.
    pub stderr: String,
}

/// Runs `cmd` with a time bound, killing only that child (by PID) on expiry.
pub fn run_bounded(mut cmd: Command, limit: Duration, what: &str) -> Ran {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let t_out = thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stdout = t_out.join().unwrap_or_default();
            let stderr = t_err.join().unwrap_or_default();
            panic!("{what}: no result within {limit:?}\nstdout:\n{stdout}\nstderr:\n{stderr}");
        }
        thread::sleep(Duration::from_millis(50));
    };
    Ran {
        code: status.code(),
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
    }
}

/// An exclusive `flock` on a file, released when dropped (file closed).
pub struct FileLock(File);

impl FileLock {
    /// Takes the lock, polling for at most `limit`.
    pub fn acquire(path: &Path, limit: Duration) -> FileLock {
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .unwrap_or_else(|e| panic!("open lock {}: {e}", path.display()));
        let deadline = Instant::now() + limit;
        loop {
            // SAFETY: flock(2) on a descriptor we own.
            let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if r == 0 {
                return FileLock(f);
            }
            assert!(
                Instant::now() < deadline,
                "could not lock {} within {limit:?}",
                path.display()
            );
            thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // SAFETY: unlocking our own descriptor; closing it would do the same.
        unsafe {
            libc::flock(self.0.as_raw_fd(), libc::LOCK_UN);
        }
    }
}

/// Creates or reuses the venv; returns its python interpreter.
pub fn ensure_venv() -> PathBuf {
    let requirements = tests_file("interop/requirements.txt");
    let wanted = fs::read_to_string(&requirements).expect("read requirements.txt");
    let target = target_dir();
    fs::create_dir_all(&target).expect("create target dir");
    let venv = target.join("interop-venv");
    let python = venv.join("bin").join("python");
    let marker = venv.join(".rookery-requirements");
    let _lock = FileLock::acquire(&target.join("interop-venv.lock"), VENV_LOCK_TIMEOUT);

    if python.exists() && fs::read_to_string(&marker).ok().as_deref() == Some(wanted.as_str()) {
        return python;
    }
    if venv.exists() {
        fs::remove_dir_all(&venv)
            .unwrap_or_else(|e| panic!("remove stale {}: {e}", venv.display()));
    }
    if which("python3").is_none() {
        panic!("interop test needs python3 with the venv module, but `python3` is not on PATH");
    }
    let mut cmd = Command::new("python3");
    cmd.arg("-m").arg("venv").arg(&venv);
    let ran = run_bounded(cmd, VENV_CREATE_TIMEOUT, "python3 -m venv");
    if ran.code != Some(0) || !python.exists() {
        panic!(
            "interop test needs `python3 -m venv` (Debian/Ubuntu: apt-get install python3-venv), \
             but it failed (exit {:?}):\nstdout:\n{}\nstderr:\n{}",
            ran.code, ran.stdout, ran.stderr
        );
    }
    let mut cmd = Command::new(&python);
    cmd.args([
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--no-input",
        "--quiet",
        "-r",
    ])
    .arg(&requirements);
    let ran = run_bounded(
        cmd,
        PIP_TIMEOUT,
        "pip install -r tests/interop/requirements.txt",
    );
    if ran.code != Some(0) {
        let _ = fs::remove_dir_all(&venv);
        panic!(
            "pip install -r {} failed (exit {:?}); is PyPI reachable?\nstdout:\n{}\nstderr:\n{}",
            requirements.display(),
            ran.code,
            ran.stdout,
            ran.stderr
        );
    }
    fs::write(&marker, &wanted).expect("write venv marker");
    python
}

/// Run `tests/interop/<script>` with the venv's Python against `server`'s
/// STARTTLS c2s listener (`--host`, `--port`) plus `args`, and assert that
/// it exited 0 after printing `INTEROP OK`.
pub fn run_slixmpp_script(script: &str, server: &super::Server, args: &[&str]) {
    let python = ensure_venv();
    let mut cmd = Command::new(&python);
    cmd.arg(tests_file(&format!("interop/{script}")))
        .arg("--host")
        .arg(server.c2s().ip().to_string())
        .arg("--port")
        .arg(server.c2s().port().to_string())
        .args(args)
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let ran = run_bounded(cmd, SCRIPT_TIMEOUT + SCRIPT_TIMEOUT / 6, script);
    assert!(
        ran.code == Some(0) && ran.stdout.lines().any(|l| l.starts_with("INTEROP OK ")),
        "{script} failed (exit {:?})\nstdout:\n{}\nstderr:\n{}",
        ran.code,
        ran.stdout,
        ran.stderr
    );
}
