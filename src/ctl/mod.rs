//! `rookery ctl`: the administration commands (ejabberdctl's names and exit
//! codes), client side.
//!
//! [`run`] first asks the running server over its control socket
//! ([`socket`]); if no server answers (no socket file, or a stale one that
//! refuses connections) it opens the sled database itself and runs the
//! command there, with no server. Commands that need a running server then
//! exit 3. The commands themselves live in [`commands`].

pub mod api_tokens;
pub mod cert_import;
pub mod check;
pub mod check_ops;
pub mod check_turn;
pub mod commands;
pub mod dbmove;
pub mod ejabberd_sql;
pub mod erlang_term;
pub mod lifecycle;
pub mod piefxis;
pub mod socket;
pub mod stun_probe;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub use commands::{execute, CommandSpec, CtlEnv, CtlOutput};

use crate::storage::{PgStorage, SledStorage, Storage, StorageError};
use socket::CtlRequest;

/// Which database `rookery ctl` opens when no server answers.
#[derive(Clone, Debug)]
pub struct DbChoice {
    /// The embedded archive's engine (with sled).
    pub archive_engine: crate::storage::ArchiveKind,
    /// `default_db: sql`: PostgreSQL instead of sled.
    pub sql: Option<crate::config::sql::SqlOptions>,
}

impl From<crate::storage::ArchiveKind> for DbChoice {
    fn from(archive_engine: crate::storage::ArchiveKind) -> Self {
        DbChoice {
            archive_engine,
            sql: None,
        }
    }
}

/// How long sending the request may take.
const CLIENT_WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the server may take to answer (password hashing included).
const CLIENT_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest response accepted from the server.
const MAX_RESPONSE: u64 = 64 * 1024 * 1024;

/// Why the server could not be asked.
enum Ask {
    /// Nothing listens on the socket: work offline.
    NotRunning,
    /// Something answered wrongly, or could not be reached for another reason.
    Failed(String),
}

/// Send one request over the control socket and read the answer.
fn ask_server(socket_path: &Path, command: &str, args: &[String]) -> Result<CtlOutput, Ask> {
    let shown = socket_path.display();
    let mut stream = match UnixStream::connect(socket_path) {
        Ok(stream) => stream,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(Ask::NotRunning)
        }
        Err(e) => {
            return Err(Ask::Failed(format!(
                "cannot connect to the control socket at {shown}: {e}"
            )))
        }
    };
    let io_failed = |e: std::io::Error| {
        if matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ) {
            Ask::Failed(format!("the server did not answer on {shown} in time"))
        } else {
            Ask::Failed(format!("control socket {shown}: {e}"))
        }
    };
    stream
        .set_write_timeout(Some(CLIENT_WRITE_TIMEOUT))
        .and_then(|()| stream.set_read_timeout(Some(CLIENT_READ_TIMEOUT)))
        .map_err(io_failed)?;
    let request = CtlRequest {
        command: command.to_string(),
        args: args.to_vec(),
    };
    let mut line = serde_json::to_vec(&request)
        .map_err(|e| Ask::Failed(format!("cannot encode the request: {e}")))?;
    line.push(b'\n');
    stream.write_all(&line).map_err(io_failed)?;
    let mut answer = Vec::new();
    BufReader::new((&stream).take(MAX_RESPONSE))
        .read_until(b'\n', &mut answer)
        .map_err(io_failed)?;
    if answer.is_empty() {
        return Err(Ask::Failed(format!(
            "the server closed the control socket {shown} without answering"
        )));
    }
    serde_json::from_slice(&answer)
        .map_err(|e| Ask::Failed(format!("malformed answer from the server on {shown}: {e}")))
}

/// Run the command with the server stopped, directly on the database
/// (`data_dir` is `DATA_DIR/db`; the archive is where the server keeps it).
fn run_offline(
    spec: &CommandSpec,
    socket_path: &Path,
    data_dir: &Path,
    db: &DbChoice,
    hosts: &[String],
    scram_iterations: u32,
    args: &[String],
) -> CtlOutput {
    if spec.needs_server {
        return CtlOutput::not_running(commands::NOT_RUNNING);
    }
    if let Some(sql) = &db.sql {
        let storage: Arc<dyn Storage> = match PgStorage::open(sql) {
            Ok(s) => Arc::new(s),
            Err(e) => {
                return CtlOutput::failed(format!(
                    "cannot open the PostgreSQL database {}: {e}",
                    sql.describe()
                ))
            }
        };
        let env = CtlEnv {
            storage,
            hosts: hosts.to_vec(),
            scram_iterations,
            server: None,
        };
        return execute(&env, spec.name, args);
    }
    let place = crate::storage::ArchivePlacement::in_data_dir(
        data_dir.parent().unwrap_or(Path::new(".")),
        db.archive_engine,
    );
    let storage = match SledStorage::open_with(data_dir, Some(&place)) {
        Ok(storage) => storage,
        Err(StorageError::Locked(_)) => {
            return CtlOutput::failed(format!(
                "the database at {} is in use by another process, but its control socket at {} does not answer",
                data_dir.display(),
                socket_path.display()
            ))
        }
        Err(e) => {
            return CtlOutput::failed(format!(
                "cannot open the database at {}: {e}",
                data_dir.display()
            ))
        }
    };
    let env = CtlEnv {
        storage: Arc::new(storage),
        hosts: hosts.to_vec(),
        scram_iterations,
        server: None,
    };
    execute(&env, spec.name, args)
}

/// Everything [`run`] does except printing: the exit code and the text.
pub fn dispatch(
    socket_path: &Path,
    data_dir: &Path,
    db: impl Into<DbChoice>,
    hosts: &[String],
    scram_iterations: u32,
    command: &str,
    args: &[String],
) -> CtlOutput {
    // `rookery ctl COMMAND --help` (and `-h`) describes the command.
    if matches!(args, [flag] if flag == "--help" || flag == "-h") && command != "help" {
        return commands::help(&[command.to_string()]);
    }
    if matches!(command, "--help" | "-h") && args.is_empty() {
        return commands::help(&[]);
    }
    let spec = match commands::precheck(command, args) {
        Ok(spec) => spec,
        Err(usage) => return usage,
    };
    if spec.name == "help" {
        return commands::help(args);
    }
    // File arguments are relative to where `rookery ctl` runs, not to the
    // server's working directory.
    let absolute: Vec<String>;
    let args = if matches!(
        spec.name,
        "backup" | "restore" | "export_piefxis" | "import_piefxis"
    ) {
        absolute = args
            .iter()
            .map(|a| {
                std::path::absolute(a)
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|_| a.clone())
            })
            .collect();
        &absolute[..]
    } else {
        args
    };
    match ask_server(socket_path, command, args) {
        Ok(out) => out,
        Err(Ask::Failed(why)) => CtlOutput::failed(why),
        Err(Ask::NotRunning) => run_offline(
            spec,
            socket_path,
            data_dir,
            &db.into(),
            hosts,
            scram_iterations,
            args,
        ),
    }
}

/// Commands `rookery ctl` runs itself with the whole configuration
/// (`check`, `cert_import`); `None` for every other command.
pub fn run_local(
    config: &crate::config::Config,
    command: &str,
    args: &[String],
) -> Option<CtlOutput> {
    if matches!(args, [flag] if flag == "--help" || flag == "-h") {
        return None;
    }
    let spec = commands::find(command).filter(|s| s.runs_locally())?;
    if let Err(usage) = commands::precheck(spec.name, args) {
        return Some(usage);
    }
    Some(match spec.name {
        "check" => check::run(config, args.first().map(String::as_str)),
        "import_ejabberd_sql" => ejabberd_sql::run(config, &args[0]),
        "migrate_db" | "sql_migrate" => dbmove::run(config, spec.name, args, |cmd| {
            ask_server(&config.ctl_socket, cmd, &[]).is_ok()
        }),
        _ => {
            let (mut out, imported) = cert_import::import(config, args);
            if !imported.is_empty() {
                match ask_server(&config.ctl_socket, "reload_config", &[]) {
                    Ok(r) if r.code == commands::EXIT_OK => out
                        .output
                        .push_str("\nThe running server reloaded its certificates."),
                    Ok(r) => {
                        out.output.push_str(&format!(
                            "\nThe running server could not reload: {}",
                            r.output
                        ));
                        out.code = commands::EXIT_FAILED;
                    }
                    Err(_) => out
                        .output
                        .push_str("\nThe server will use them when it starts."),
                }
            }
            out
        }
    })
}

/// Print an output the way `rookery ctl` does; returns the exit code.
pub fn print(out: &CtlOutput) -> i32 {
    if !out.output.is_empty() {
        let text = out.output.trim_end_matches('\n');
        if out.code == commands::EXIT_OK {
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(stdout, "{text}");
        } else {
            eprintln!("{text}");
        }
    }
    out.code
}

/// Entry point of `rookery ctl`: returns the process exit code. Prints the
/// output to stdout on success, to stderr otherwise.
pub fn run(
    socket_path: &Path,
    data_dir: &Path,
    db: impl Into<DbChoice>,
    hosts: &[String],
    scram_iterations: u32,
    command: &str,
    args: &[String],
) -> i32 {
    let out = dispatch(
        socket_path,
        data_dir,
        db,
        hosts,
        scram_iterations,
        command,
        args,
    );
    if !out.output.is_empty() {
        let text = out.output.trim_end_matches('\n');
        if out.code == commands::EXIT_OK {
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(stdout, "{text}");
        } else {
            eprintln!("{text}");
        }
    }
    out.code
}

#[cfg(test)]
mod tests {
    use super::commands::tests::{env_in, FakeServer};
    use super::commands::{EXIT_FAILED, EXIT_NOT_RUNNING, EXIT_OK, EXIT_USAGE, NOT_RUNNING};
    use super::*;
    use crate::storage::{AccountKey, AccountStore};
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::Ordering;

    use crate::storage::ArchiveKind;

    fn hosts() -> Vec<String> {
        vec!["localhost".into()]
    }

    fn a(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    fn offline(sock: &Path, db: &Path, command: &str, args: &[&str]) -> CtlOutput {
        dispatch(
            sock,
            db,
            ArchiveKind::DEFAULT,
            &hosts(),
            4096,
            command,
            &a(args),
        )
    }

    #[test]
    fn offline_fallback_without_socket() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("ctl.sock");
        let db = dir.path().join("db");
        assert_eq!(
            offline(&sock, &db, "register", &["alice", "localhost", "pw"]),
            CtlOutput::ok("User alice@localhost successfully registered")
        );
        assert_eq!(
            offline(&sock, &db, "register", &["alice", "localhost", "pw"]).code,
            EXIT_FAILED
        );
        assert_eq!(
            offline(&sock, &db, "registered_users", &["localhost"]),
            CtlOutput::ok("alice")
        );
        assert_eq!(
            offline(&sock, &db, "change_password", &["alice", "localhost", "n"]),
            CtlOutput::ok("")
        );
        assert_eq!(
            offline(&sock, &db, "check_password", &["alice", "localhost", "n"]).code,
            EXIT_OK
        );
        assert_eq!(
            offline(&sock, &db, "unregister", &["alice", "localhost"]),
            CtlOutput::ok("")
        );
        assert_eq!(
            offline(&sock, &db, "registered_users", &["localhost"]),
            CtlOutput::ok("")
        );
        assert_eq!(
            offline(&sock, &db, "registered_users", &["x"]),
            CtlOutput::failed("Unknown virtual host: x")
        );
        // Server-only commands exit 3; status says the ejabberdctl words.
        assert_eq!(
            offline(&sock, &db, "status", &[]),
            CtlOutput::not_running(NOT_RUNNING)
        );
        assert_eq!(offline(&sock, &db, "stop", &[]).code, EXIT_NOT_RUNNING);
        assert_eq!(
            offline(&sock, &db, "connected_users", &[]).code,
            EXIT_NOT_RUNNING
        );
        // The offline run released the database.
        SledStorage::open(&db).unwrap();
    }

    #[test]
    fn usage_and_help_never_touch_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("ctl.sock");
        let db = dir.path().join("db");
        assert_eq!(offline(&sock, &db, "nope", &[]).code, EXIT_USAGE);
        assert_eq!(offline(&sock, &db, "register", &["a"]).code, EXIT_USAGE);
        assert_eq!(offline(&sock, &db, "help", &[]).code, EXIT_OK);
        assert_eq!(offline(&sock, &db, "help", &["stop"]).code, EXIT_OK);
        assert!(!db.exists());
        assert_eq!(
            run(
                &sock,
                &db,
                ArchiveKind::DEFAULT,
                &hosts(),
                4096,
                "nope",
                &[]
            ),
            EXIT_USAGE
        );
    }

    #[test]
    fn stale_socket_file_falls_back_to_database() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("ctl.sock");
        let db = dir.path().join("db");
        drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
        assert!(sock.exists());
        assert_eq!(
            offline(&sock, &db, "register", &["bob", "localhost", "pw"]).code,
            EXIT_OK
        );
        assert_eq!(offline(&sock, &db, "status", &[]).code, EXIT_NOT_RUNNING);
    }

    #[test]
    fn locked_database_with_silent_socket_is_explained() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("ctl.sock");
        let db = dir.path().join("db");
        let holder = SledStorage::open(&db).unwrap();
        let out = offline(&sock, &db, "register", &["bob", "localhost", "pw"]);
        assert_eq!(out.code, EXIT_FAILED);
        assert_eq!(
            out.output,
            format!(
                "the database at {} is in use by another process, but its control socket at {} does not answer",
                db.display(),
                sock.display()
            )
        );
        assert!(!holder
            .user_exists(AccountKey::new("localhost", "bob"))
            .unwrap());
        assert_eq!(
            run(
                &sock,
                &db,
                ArchiveKind::DEFAULT,
                &hosts(),
                4096,
                "registered_users",
                &a(&["localhost"])
            ),
            1
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commands_go_through_the_running_server() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("run").join("ctl.sock");
        let db = dir.path().join("db");
        let server = Arc::new(FakeServer::default());
        server
            .sessions
            .lock()
            .unwrap()
            .extend(["alice@localhost/a".to_string()]);
        // The server holds the database: the client cannot open it itself.
        let env = Arc::new(env_in(&db, Some(server.clone())));
        let storage = env.storage.clone();
        let listener = socket::bind(&sock).unwrap();
        assert_eq!(
            std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let (tx, rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(socket::serve_listener(listener, sock.clone(), env, rx));

        let (s, d) = (sock.clone(), db.clone());
        let outs = tokio::task::spawn_blocking(move || {
            let call = |c: &str, args: &[&str]| {
                dispatch(&s, &d, ArchiveKind::DEFAULT, &hosts(), 4096, c, &a(args))
            };
            vec![
                call("register", &["Alice", "localhost", "pw"]),
                call("register", &["alice", "localhost", "pw"]),
                call("registered_users", &["localhost"]),
                call("connected_users", &[]),
                call("status", &[]),
                call("unregister", &["alice", "localhost"]),
                call("register", &["bob", "nowhere", "pw"]),
                call("stop", &[]),
            ]
        })
        .await
        .unwrap();
        assert_eq!(
            outs[0],
            CtlOutput::ok("User alice@localhost successfully registered")
        );
        assert_eq!(
            outs[1],
            CtlOutput::failed("User alice@localhost already registered")
        );
        assert_eq!(outs[2], CtlOutput::ok("alice"));
        assert_eq!(outs[3], CtlOutput::ok("alice@localhost/a"));
        assert!(outs[4].output.starts_with("The server rookery is started"));
        assert_eq!(outs[5], CtlOutput::ok(""));
        assert_eq!(outs[6], CtlOutput::failed("Unknown virtual host: nowhere"));
        assert_eq!(outs[7], CtlOutput::ok(""));
        assert!(server.stopped.load(Ordering::SeqCst));
        assert!(server.sessions.lock().unwrap().is_empty(), "alice kicked");
        assert!(!storage
            .user_exists(AccountKey::new("localhost", "alice"))
            .unwrap());

        tx.send(true).unwrap();
        task.await.unwrap().unwrap();
        assert!(!sock.exists(), "shutdown removes the socket");
        drop(storage);
        // Once the server is gone (and the database released), ctl works offline.
        let (s, d) = (sock.clone(), db.clone());
        let out = tokio::task::spawn_blocking(move || {
            dispatch(&s, &d, ArchiveKind::DEFAULT, &hosts(), 4096, "status", &[])
        })
        .await
        .unwrap();
        assert_eq!(out, CtlOutput::not_running(NOT_RUNNING));
    }
}
