//! Spawning and supervising the real `rookery` binary for integration tests.
//!
//! Each [`Server`] owns a temporary directory holding its YAML config, its
//! data directory and the server's stderr log. Listeners use port 0; the
//! harness learns the bound addresses from the `rookery: listening ...` lines
//! printed on stdout and waits (bounded) for `rookery: ready`. Dropping the
//! `Server` sends SIGTERM to the child it started (by PID), then SIGKILL after
//! a bound; when the test is failing, the server's stderr is printed, then
//! the test's panic message again (CI shows the end of a failed test's
//! output, which is the servers' logs: the reason must come last).

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Mutex, Once};
use std::thread;
use std::time::{Duration, Instant};

/// Path of the server binary under test.
pub const ROOKERY: &str = env!("CARGO_BIN_EXE_rookery");

/// How long to wait for `rookery: ready`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long to wait for a SIGTERM'd server to exit before SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on one `rookery ctl` invocation.
pub const CTL_TIMEOUT: Duration = Duration::from_secs(30);

/// Knobs for the generated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Served virtual hosts.
    pub hosts: Vec<String>,
    /// `starttls_required` on the first (STARTTLS) listener.
    pub starttls_required: bool,
    /// `max_stanza_size` on the first listener.
    pub max_stanza_size: usize,
    /// Whether to add the direct-TLS listener.
    pub tls_listener: bool,
    /// `shaper_rules: max_user_sessions`.
    pub max_user_sessions: u32,
    /// `loglevel`.
    pub loglevel: String,
    /// Extra listener entries, each a YAML mapping written without the
    /// leading `- ` (e.g. `"port: 0\nip: 127.0.0.1\nmodule: ejabberd_c2s"`).
    pub extra_listeners: Vec<String>,
    /// Extra top-level YAML appended verbatim.
    pub extra_yaml: String,
    /// The body of `modules:` (each line indented by two spaces).
    pub modules: String,
}

/// The modules every test server enables unless a test says otherwise.
pub const DEFAULT_MODULES: &str = "  mod_ping: {}\n  mod_disco: {}\n  mod_caps: {}\n  mod_private: {}\n  mod_vcard: {}\n  mod_vcard_xupdate: {}\n  mod_avatar: {}\n  mod_blocking: {}\n  mod_version: {}\n  mod_time: {}\n  mod_last: {}\n  mod_pep: {}\n  mod_carbons: {}\n  mod_mam: {}\n  mod_client_state: {}\n  mod_stream_mgmt: {}\n  mod_muc: {}\n";

impl Default for Config {
    fn default() -> Self {
        Config {
            hosts: vec!["localhost".to_string()],
            starttls_required: true,
            max_stanza_size: 65536,
            tls_listener: true,
            max_user_sessions: 10,
            loglevel: "info".to_string(),
            extra_listeners: Vec::new(),
            extra_yaml: String::new(),
            modules: DEFAULT_MODULES.to_string(),
        }
    }
}

fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).expect("string to JSON")
}

impl Config {
    /// Renders the YAML configuration for a server whose files live in `dir`.
    pub fn render(&self, dir: &Path) -> String {
        let data = dir.join("data");
        let hosts: Vec<String> = self.hosts.iter().map(|h| yaml_str(h)).collect();
        let mut y = String::new();
        y.push_str(&format!("hosts: [{}]\n", hosts.join(", ")));
        y.push_str(&format!("loglevel: {}\n", self.loglevel));
        y.push_str(&format!(
            "data_dir: {}\n",
            yaml_str(&data.display().to_string())
        ));
        y.push_str(&format!(
            "ctl_socket: {}\n",
            yaml_str(&data.join("rookery.ctl").display().to_string())
        ));
        y.push_str("listen:\n");
        y.push_str("  - port: 0\n    ip: 127.0.0.1\n    module: ejabberd_c2s\n");
        y.push_str(&format!(
            "    starttls_required: {}\n    max_stanza_size: {}\n",
            self.starttls_required, self.max_stanza_size
        ));
        if self.tls_listener {
            y.push_str("  - port: 0\n    ip: 127.0.0.1\n    module: ejabberd_c2s\n    tls: true\n");
        }
        for l in &self.extra_listeners {
            let mut first = true;
            for line in l.lines() {
                y.push_str(if first { "  - " } else { "    " });
                y.push_str(line);
                y.push('\n');
                first = false;
            }
        }
        y.push_str(&format!(
            "shaper_rules:\n  max_user_sessions: {}\n",
            self.max_user_sessions
        ));
        y.push_str("modules:\n");
        y.push_str(&self.modules);
        if !self.modules.ends_with('\n') {
            y.push('\n');
        }
        if !self.extra_yaml.is_empty() {
            y.push_str(&self.extra_yaml);
            if !self.extra_yaml.ends_with('\n') {
                y.push('\n');
            }
        }
        y
    }
}

/// One listener announced on stdout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    /// Module word, e.g. `c2s`.
    pub module: String,
    /// Bound address.
    pub addr: SocketAddr,
    /// `starttls` or `tls`.
    pub kind: String,
}

/// A running (or stopped) `rookery serve` child process.
pub struct Server {
    dir: tempfile::TempDir,
    config_path: PathBuf,
    stderr_path: PathBuf,
    child: Option<Child>,
    /// Listeners announced by the current run, in the printed order.
    pub listeners: Vec<Listener>,
}

/// Parses `rookery: listening c2s 127.0.0.1:PORT starttls`.
pub fn parse_listening_line(line: &str) -> Option<Listener> {
    let rest = line.trim().strip_prefix("rookery: listening ")?;
    let mut words = rest.split_whitespace();
    let module = words.next()?.to_string();
    let addr = words.next()?.parse().ok()?;
    let kind = words.next()?.to_string();
    Some(Listener { module, addr, kind })
}

/// The last panic message of each test thread (see [`remember_panics`]).
static PANICS: Mutex<Vec<(thread::ThreadId, String)>> = Mutex::new(Vec::new());

/// Install (once) a panic hook that keeps each thread's panic message for
/// [`Server`]'s drop to print after the server's log, then runs the
/// default hook.
fn remember_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let text = format!("{info}");
            if let Ok(mut p) = PANICS.lock() {
                let me = thread::current().id();
                p.retain(|(t, _)| *t != me);
                p.push((me, text));
            }
            default(info);
        }));
    });
}

/// This thread's last panic message, if any.
fn this_threads_panic() -> Option<String> {
    let me = thread::current().id();
    let p = PANICS.lock().ok()?;
    p.iter().find(|(t, _)| *t == me).map(|(_, m)| m.clone())
}

impl Server {
    /// Starts a server with the default configuration.
    pub fn start() -> Server {
        Self::start_with(Config::default())
    }

    /// Starts a server with the given configuration.
    pub fn start_with(config: Config) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("rookery-it-")
            .tempdir()
            .expect("create temp dir");
        fs::create_dir_all(dir.path().join("data")).expect("create data dir");
        let config_path = dir.path().join("rookery.yml");
        fs::write(&config_path, config.render(dir.path())).expect("write config");
        let stderr_path = dir.path().join("server.stderr");
        let mut server = Server {
            dir,
            config_path,
            stderr_path,
            child: None,
            listeners: Vec::new(),
        };
        server.spawn();
        server
    }

    /// Like [`Server::start_with`], but passes the rendered YAML through
    /// `edit` before writing it (e.g. to add entries under `shaper_rules:`,
    /// which [`Config::extra_yaml`] cannot repeat).
    pub fn start_with_yaml_edit(config: Config, edit: impl FnOnce(String) -> String) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("rookery-it-")
            .tempdir()
            .expect("create temp dir");
        fs::create_dir_all(dir.path().join("data")).expect("create data dir");
        let config_path = dir.path().join("rookery.yml");
        fs::write(&config_path, edit(config.render(dir.path()))).expect("write config");
        let stderr_path = dir.path().join("server.stderr");
        let mut server = Server {
            dir,
            config_path,
            stderr_path,
            child: None,
            listeners: Vec::new(),
        };
        server.spawn();
        server
    }

    /// Starts the server again (same config and data) after [`Server::stop`].
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "server is still running");
        self.spawn();
    }

    fn spawn(&mut self) {
        remember_panics();
        let stderr = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr_path)
            .expect("open stderr log");
        let mut child = Command::new(ROOKERY)
            .arg("serve")
            .arg("-c")
            .arg(&self.config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .env("RUST_BACKTRACE", "1")
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {ROOKERY}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        self.child = Some(child);
        let (tx, rx) = mpsc::channel::<String>();
        // Drains stdout for the whole life of the process so it never blocks.
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    // Receiver gone: keep draining silently.
                }
            }
        });
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut listeners = Vec::new();
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if line.trim() == "rookery: ready" {
                        break;
                    }
                    if let Some(l) = parse_listening_line(&line) {
                        listeners.push(l);
                    }
                    seen.push(line);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!(
                        "server not ready within {READY_TIMEOUT:?}; stdout so far: {seen:?}\n{}",
                        self.stderr_tail()
                    );
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.wait_exit(Duration::from_secs(5));
                    self.child = None;
                    panic!(
                        "server exited before ready ({status:?}); stdout: {seen:?}\n{}",
                        self.stderr_tail()
                    );
                }
            }
        }
        assert!(
            !listeners.is_empty(),
            "server announced no listener; stdout: {seen:?}"
        );
        self.listeners = listeners;
    }

    /// Address of the `n`-th listener of the given kind (`starttls`/`tls`).
    pub fn addr(&self, kind: &str, n: usize) -> SocketAddr {
        self.listeners
            .iter()
            .filter(|l| l.module == "c2s" && l.kind == kind)
            .nth(n)
            .unwrap_or_else(|| panic!("no c2s {kind} listener #{n} in {:?}", self.listeners))
            .addr
    }

    /// The first STARTTLS c2s listener.
    pub fn c2s(&self) -> SocketAddr {
        self.addr("starttls", 0)
    }

    /// The first direct-TLS c2s listener.
    pub fn c2s_tls(&self) -> SocketAddr {
        self.addr("tls", 0)
    }

    /// The temp directory holding config, data and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The configuration file.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// PID of the running child, if any.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The server's resident memory in KiB (`VmRSS`, for the idle-memory
    /// measurements).
    pub fn rss_kib(&self) -> u64 {
        let pid = self.pid().expect("pid");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// Whether the child has not exited yet.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Sends SIGTERM to the child (only the process this harness started).
    pub fn send_sigterm(&self) {
        if let Some(c) = &self.child {
            // SAFETY: plain kill(2) on the PID of our own child process.
            unsafe {
                libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
            }
        }
    }

    /// Waits (bounded) for the child to exit; `None` on timeout or no child.
    /// On exit, the child is forgotten.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        loop {
            match child.try_wait() {
                Ok(Some(st)) => {
                    self.child = None;
                    return Some(st);
                }
                Ok(None) => {}
                Err(_) => return None,
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then waits for a clean exit; panics if it does not exit in
    /// time. Returns the exit status (the data dir is kept for restarts).
    pub fn stop(&mut self) -> ExitStatus {
        self.send_sigterm();
        match self.wait_exit(STOP_TIMEOUT) {
            Some(st) => st,
            None => panic!(
                "server did not exit within {STOP_TIMEOUT:?} of SIGTERM\n{}",
                self.stderr_tail()
            ),
        }
    }

    /// SIGKILL to the child (by its PID), then waits (bounded) for it to be
    /// reaped; the data dir is kept for [`Server::restart`]. Returns the exit
    /// status. Simulates a crash: the server gets no chance to flush.
    pub fn kill_hard(&mut self) -> ExitStatus {
        if let Some(c) = &self.child {
            // SAFETY: plain kill(2) on the PID of our own, not yet reaped,
            // child process (so the PID cannot have been reused).
            unsafe {
                libc::kill(c.id() as libc::pid_t, libc::SIGKILL);
            }
        }
        match self.wait_exit(STOP_TIMEOUT) {
            Some(st) => st,
            None => panic!("server did not die within {STOP_TIMEOUT:?} of SIGKILL"),
        }
    }

    /// Runs `rookery ctl -c CONFIG ARGS...` (bounded) and returns
    /// `(exit code, stdout, stderr)`; the code is -1 when killed by a signal.
    pub fn ctl(&self, args: &[&str]) -> (i32, String, String) {
        let mut child = Command::new(ROOKERY)
            .arg("ctl")
            .arg("-c")
            .arg(&self.config_path)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {ROOKERY} ctl: {e}"));
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
        let deadline = Instant::now() + CTL_TIMEOUT;
        let status = loop {
            if let Some(st) = child.try_wait().expect("wait ctl") {
                break st;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("`rookery ctl {args:?}` did not finish within {CTL_TIMEOUT:?}");
            }
            thread::sleep(Duration::from_millis(10));
        };
        let stdout = t_out.join().unwrap_or_default();
        let stderr = t_err.join().unwrap_or_default();
        (status.code().unwrap_or(-1), stdout, stderr)
    }

    /// Like [`Server::ctl`] but asserts exit code `expected`; returns stdout.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.ctl(args);
        assert_eq!(
            code, 0,
            "`rookery ctl {args:?}` exited {code}; stdout={out:?} stderr={err:?}"
        );
        out
    }

    /// Registers `user@host` with `password` through ctl (asserting success).
    pub fn register(&self, user: &str, host: &str, password: &str) {
        self.ctl_ok(&["register", user, host, password]);
    }

    /// The last 64 KiB of the server's stderr log, framed for printing.
    pub fn stderr_tail(&self) -> String {
        let mut buf = Vec::new();
        if let Ok(mut f) = File::open(&self.stderr_path) {
            let _ = f.read_to_end(&mut buf);
        }
        let start = buf.len().saturating_sub(64 * 1024);
        format!(
            "----- rookery stderr ({}) -----\n{}\n----- end of rookery stderr -----",
            self.stderr_path.display(),
            String::from_utf8_lossy(&buf[start..])
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.send_sigterm();
            if self.wait_exit(Duration::from_secs(5)).is_none() {
                if let Some(mut c) = self.child.take() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
            }
        }
        if thread::panicking() {
            eprintln!("{}", self.stderr_tail());
            if let Some(m) = this_threads_panic() {
                eprintln!("----- the test failed (after the log above): {m} -----");
            }
        }
    }
}

/// Runs `rookery serve -c FILE` on `yaml` and waits (bounded) for it to
/// exit; returns the file, the exit status and what it wrote to stderr.
pub fn serve_until_exit(dir: &Path, yaml: &str) -> (String, ExitStatus, String) {
    let path = dir.join("rookery.yml");
    std::fs::write(&path, yaml).unwrap();
    let err_path = dir.join("serve.stderr");
    let mut child = Command::new(ROOKERY)
        .arg("serve")
        .arg("-c")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&err_path).unwrap())
        .spawn()
        .expect("spawn rookery");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("rookery did not exit within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let err = std::fs::read_to_string(&err_path).unwrap_or_default();
    (path.display().to_string(), status, err)
}
