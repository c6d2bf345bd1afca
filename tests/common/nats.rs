//! A throwaway NATS server with JetStream for the cluster tests:
//! `nats-server -js` on a loopback port it picked, its JetStream store in a
//! temporary directory; killed and deleted on drop. [`NatsServer::stop`]
//! and [`NatsServer::restart`] take it down and bring it back on the same
//! port with the same store (the cluster fault tests). [`NatsServer::start`]
//! returns `None`, after printing SKIPPED, when `nats-server` is not
//! installed (Debian's `nats-server` package: `.ci/run` installs it).

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running test NATS server.
pub struct NatsServer {
    dir: tempfile::TempDir,
    child: Option<Child>,
    pub port: u16,
}

fn binary() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = vec!["/usr/sbin".into(), "/usr/bin".into()];
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs.into_iter()
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
}

use super::ports::free_port;

impl NatsServer {
    /// Start one, or `None` (SKIPPED printed) without `nats-server`.
    pub fn start(test: &str) -> Option<NatsServer> {
        let Some(bin) = binary() else {
            eprintln!("SKIPPED {test}: nats-server is not installed (Debian package nats-server)");
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("rookery-nats-")
            .tempdir()
            .expect("temp dir");
        let port = free_port();
        let mut server = NatsServer {
            dir,
            child: None,
            port,
        };
        server.spawn(&bin);
        Some(server)
    }

    fn spawn(&mut self, bin: &std::path::Path) {
        let (dir, port) = (&self.dir, self.port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join("nats.log"))
            .expect("log file");
        let mut cmd = Command::new(bin);
        cmd.args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir.path().join("js"));
        // ROOKERY_TEST_NATS_TRACE=1: protocol trace, copied to
        // /tmp/rookery-nats-trace-PORT.log at the end.
        if std::env::var_os("ROOKERY_TEST_NATS_TRACE").is_some() {
            cmd.arg("-V");
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stop it (SIGKILL: no goodbye to the clients); the store stays.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it again on the same port with an empty store (as a NATS
    /// that lost its disk): the buckets are gone.
    pub fn restart_empty(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(self.dir.path().join("js"));
        let bin = binary().expect("nats-server");
        self.spawn(&bin);
    }

    /// Start it again on the same port with the same store.
    pub fn restart(&mut self) {
        self.stop();
        let bin = binary().expect("nats-server");
        self.spawn(&bin);
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nats.log")).unwrap_or_default()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            if std::env::var_os("ROOKERY_TEST_NATS_TRACE").is_some() {
                let _ = std::fs::copy(
                    self.dir.path().join("nats.log"),
                    format!("/tmp/rookery-nats-trace-{}.log", self.port),
                );
            }
        }
    }
}
