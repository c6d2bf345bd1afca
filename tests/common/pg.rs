//! A throwaway PostgreSQL server for tests: `initdb` in a temporary
//! directory, `pg_ctl start` on a loopback port it picked, one database
//! (`rookery`, UTF-8), trust authentication. Stopped (immediately) and
//! deleted on drop. [`PgServer::start`] returns `None`, after printing
//! SKIPPED, when PostgreSQL's binaries are not installed (Debian's
//! `postgresql` package: `.ci/run` installs it).
//!
//! As root (CI), the server runs as the `postgres` user (PostgreSQL
//! refuses root) through `setpriv`; its directory is handed to that user.
//! Shared by the unit tests (`src/storage/pgsql/testpg.rs` includes this
//! file) and the integration tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A running test PostgreSQL.
pub struct PgServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    as_postgres: bool,
}

/// Where PostgreSQL's programs are: the newest `/usr/lib/postgresql/*/bin`,
/// else the directory of `initdb` on the PATH.
fn bin_dir() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").is_file() && b.join("pg_ctl").is_file())
        .collect();
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    if let Some(b) = found.pop() {
        return Some(b);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .find(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file())
        .map(|d| {
            std::fs::canonicalize(d.join("initdb"))
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf))
                .unwrap_or(d)
        })
}

fn is_root() -> bool {
    // SAFETY: getuid has no arguments and cannot fail.
    unsafe { libc::getuid() == 0 }
}

use super::ports::free_port;

impl PgServer {
    /// Start one, or `None` (after printing `SKIPPED: <test>: ...`) when
    /// PostgreSQL is not installed. Panics when it is installed but does
    /// not start.
    pub fn start(test: &str) -> Option<PgServer> {
        let Some(bin) = bin_dir() else {
            println!("SKIPPED: {test}: PostgreSQL is not installed (apt-get install postgresql)");
            return None;
        };
        let as_postgres = is_root();
        if as_postgres
            && !Command::new("getent")
                .args(["passwd", "postgres"])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        {
            println!("SKIPPED: {test}: running as root and there is no `postgres` user to run PostgreSQL as");
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("rookery-pg")
            .tempdir()
            .expect("temp dir");
        if as_postgres {
            let st = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(st.success(), "chown of the PostgreSQL directory failed");
        }
        let pg = PgServer {
            dir,
            bin,
            port: free_port(),
            as_postgres,
        };
        let out = pg
            .cmd("initdb")
            .arg("-D")
            .arg(pg.data())
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
            ])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        pg.start_server();
        let out = pg
            .cmd("psql")
            .args(["-X", "-q", "-h", "127.0.0.1", "-p", &pg.port.to_string()])
            .args(["-U", "postgres", "-d", "postgres", "-c"])
            .arg("CREATE DATABASE rookery ENCODING 'UTF8'")
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "CREATE DATABASE failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(pg)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// One of PostgreSQL's programs, run as the right user.
    pub fn cmd(&self, program: &str) -> Command {
        let exe = self.bin.join(program);
        let mut c = if self.as_postgres {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=postgres", "--regid=postgres", "--init-groups"])
                .arg(exe);
            c
        } else {
            Command::new(exe)
        };
        c.env("HOME", self.dir.path())
            .env("PGCONNECT_TIMEOUT", "10")
            .current_dir(self.dir.path());
        c
    }

    /// `pg_ctl start` (waits until it accepts connections).
    pub fn start_server(&self) {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=on -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        let out = self
            .cmd("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-w", "-t", "60", "-o", &opts, "-l"])
            .arg(self.dir.path().join("postgres.log"))
            .arg("start")
            .output()
            .expect("run pg_ctl start");
        assert!(
            out.status.success(),
            "pg_ctl start failed: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `pg_ctl stop -m fast` (waits until it is down).
    pub fn stop_server(&self) {
        let out = self
            .cmd("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-w", "-t", "60", "-m", "fast", "stop"])
            .output()
            .expect("run pg_ctl stop");
        assert!(
            out.status.success(),
            "pg_ctl stop failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Run SQL in the test database with `psql`; its output (unaligned,
    /// tuples only).
    pub fn psql(&self, sql: &str) -> String {
        let out = self
            .cmd("psql")
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
            ])
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "rookery",
                "-c",
            ])
            .arg(sql)
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The `default_db: sql` lines of a Rookery configuration for it.
    pub fn config_yaml(&self) -> String {
        format!(
            "default_db: sql\nsql_type: pgsql\nsql_server: 127.0.0.1\nsql_port: {}\n\
             sql_database: rookery\nsql_username: postgres\nsql_password: \"\"\nsql_pool_size: 4\n\
             sql_query_timeout: 3 seconds\nsql_connect_timeout: 2 seconds\n",
            self.port
        )
    }

    /// The server's log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = self
            .cmd("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-w", "-t", "30", "-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
