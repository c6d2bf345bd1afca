//! Server side of the control socket: a Unix socket, owner-only (0600), on
//! which the running server accepts `rookery ctl` commands.
//!
//! Protocol: the client sends one JSON request line
//! `{"command": "...", "args": [...]}` + `\n`; the server answers one JSON
//! line `{"code": 0, "output": "..."}` + `\n` and closes. Requests over
//! [`MAX_REQUEST`] bytes are refused, and a client has [`READ_TIMEOUT`] to
//! send its request. Only peers with our uid (or root) are served.
//! Arguments (which may hold passwords) are never logged.
//!
//! Use [`bind`] (sync, inside a tokio runtime, so bind errors are reported
//! before serving) then [`serve_listener`]; [`serve`] does both.

use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::commands::{execute, CtlEnv, CtlOutput};

/// Largest request line accepted, in bytes (newline excluded).
pub const MAX_REQUEST: usize = 64 * 1024;
/// How long a client has to send its request line.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long writing the response may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long shutdown waits for commands already running (e.g. `stop`).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// One control request (the wire format).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CtlRequest {
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
}

impl std::fmt::Debug for CtlRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Arguments may be passwords: show only how many there are.
        f.debug_struct("CtlRequest")
            .field("command", &self.command)
            .field("args", &format_args!("<{} hidden>", self.args.len()))
            .finish()
    }
}

fn with_path(path: &Path, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("control socket {}: {e}", path.display()))
}

/// Remove a stale socket file at `path` (left by a crashed server), refusing
/// to touch a live socket or a file that is not a socket.
fn clear_stale(path: &Path) -> std::io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(with_path(path, e)),
    };
    if !meta.file_type().is_socket() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!(
                "control socket {}: a file that is not a socket is in the way; not replacing it",
                path.display()
            ),
        ));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!(
                "control socket {}: another server is already listening on it",
                path.display()
            ),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "removing stale control socket");
            match std::fs::remove_file(path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(with_path(path, e)),
            }
        }
        Err(e) => Err(with_path(path, e)),
    }
}

/// Bind the control socket at `path`: creates the parent directory (0700)
/// if missing, replaces a stale socket file, refuses if a server already
/// answers there, and sets the socket to 0600. Must be called inside a
/// tokio runtime.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.is_dir() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|e| with_path(path, e))?;
        }
    }
    clear_stale(path)?;
    let listener = std::os::unix::net::UnixListener::bind(path).map_err(|e| with_path(path, e))?;
    let setup = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| listener.set_nonblocking(true))
        .and_then(|()| UnixListener::from_std(listener));
    match setup {
        Ok(listener) => Ok(listener),
        Err(e) => {
            let _ = std::fs::remove_file(path);
            Err(with_path(path, e))
        }
    }
}

/// Bind at `path` and serve until `shutdown` becomes true; see [`bind`] and
/// [`serve_listener`].
#[cfg(test)]
pub async fn serve(
    path: PathBuf,
    env: Arc<CtlEnv>,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let listener = bind(&path)?;
    serve_listener(listener, path, env, shutdown).await
}

/// Serve control requests on `listener` (bound at `path`) until `shutdown`
/// becomes true (or its sender is dropped). Then stops accepting, removes
/// the socket file (if it is still ours), and lets running commands finish
/// answering (at most 10 s).
pub async fn serve_listener(
    listener: UnixListener,
    path: PathBuf,
    env: Arc<CtlEnv>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let ours = std::fs::symlink_metadata(&path)
        .ok()
        .map(|m| (m.dev(), m.ino()));
    let mut tasks = JoinSet::new();
    tracing::info!(path = %path.display(), "control socket listening");
    while !*shutdown.borrow_and_update() {
        tokio::select! {
            changed = shutdown.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tasks.spawn(handle(stream, env.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "control socket accept failed");
                    // Avoid spinning on e.g. EMFILE.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    drop(listener);
    let still_ours = std::fs::symlink_metadata(&path)
        .ok()
        .map(|m| (m.dev(), m.ino()));
    if ours.is_some() && still_ours == ours {
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove control socket");
        }
    }
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(DRAIN_TIMEOUT, drain).await.is_err() {
        tracing::warn!("control commands still running at shutdown; abandoning them");
    }
    tracing::info!(path = %path.display(), "control socket closed");
    Ok(())
}

/// Read one bounded request line.
async fn read_request<R: tokio::io::AsyncRead + Unpin>(reader: R) -> Result<CtlRequest, String> {
    let mut reader = BufReader::new(reader.take(MAX_REQUEST as u64 + 1));
    let mut line = Vec::new();
    reader
        .read_until(b'\n', &mut line)
        .await
        .map_err(|e| format!("cannot read the request: {e}"))?;
    if line.last() == Some(&b'\n') {
        line.pop();
    } else if line.len() > MAX_REQUEST {
        return Err(format!("request too large (over {MAX_REQUEST} bytes)"));
    }
    if line.iter().all(u8::is_ascii_whitespace) {
        return Err("empty request".into());
    }
    serde_json::from_slice(&line).map_err(|e| format!("malformed request: {e}"))
}

/// Whether a peer may use the control socket: same uid as us, or root.
fn peer_allowed(stream: &UnixStream) -> Result<(), String> {
    let cred = stream
        .peer_cred()
        .map_err(|e| format!("cannot identify the peer: {e}"))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if cred.uid() == me || cred.uid() == 0 {
        Ok(())
    } else {
        Err(format!("permission denied for uid {}", cred.uid()))
    }
}

/// What `rookery ctl` prints when `api_permissions` refuses a command.
pub fn api_refusal(command: &str) -> String {
    format!("Error: api_permissions does not let rookery ctl (from: ejabberd_ctl) run `{command}`")
}

/// Serve one connection: request, execute (on the blocking pool), answer.
async fn handle(stream: UnixStream, env: Arc<CtlEnv>) {
    let allowed = peer_allowed(&stream);
    let (reader, mut writer) = stream.into_split();
    let response = match allowed {
        Err(why) => {
            tracing::warn!(reason = %why, "control connection refused");
            CtlOutput::failed(why)
        }
        Ok(()) => match tokio::time::timeout(READ_TIMEOUT, read_request(reader)).await {
            Err(_) => CtlOutput::failed("timed out waiting for the request"),
            Ok(Err(why)) => {
                tracing::warn!(reason = %why, "bad control request");
                CtlOutput::failed(why)
            }
            Ok(Ok(request))
                if request.command != "help"
                    && env
                        .server
                        .as_ref()
                        .is_some_and(|s| !s.ctl_allows(&request.command)) =>
            {
                tracing::warn!(command = %request.command, "control command refused by api_permissions");
                CtlOutput::failed(api_refusal(&request.command))
            }
            Ok(Ok(request)) => {
                let command = request.command.clone();
                let task_env = env.clone();
                let out = tokio::task::spawn_blocking(move || {
                    execute(&task_env, &request.command, &request.args)
                })
                .await
                .unwrap_or_else(|e| {
                    tracing::error!(command = %command, error = %e, "control command crashed");
                    CtlOutput::failed("internal error while running the command")
                });
                tracing::info!(command = %command, code = out.code, "control command");
                out
            }
        },
    };
    let mut line = serde_json::to_vec(&response).unwrap_or_else(|_| {
        br#"{"code":1,"output":"internal error: cannot encode the response"}"#.to_vec()
    });
    line.push(b'\n');
    let write = async {
        writer.write_all(&line).await?;
        writer.shutdown().await
    };
    if let Ok(Err(e)) | Err(e) = tokio::time::timeout(WRITE_TIMEOUT, write)
        .await
        .map_err(std::io::Error::from)
    {
        tracing::debug!(error = %e, "cannot send control response");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctl::commands::tests::{env_in, FakeServer};
    use std::io::{Read, Write};

    /// Send raw bytes, return the raw answer (blocking client).
    fn raw_exchange(path: &Path, bytes: &[u8]) -> String {
        let mut s = std::os::unix::net::UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        // The server may answer and close before reading everything.
        let _ = s.write_all(bytes);
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    fn parse(answer: &str) -> CtlOutput {
        serde_json::from_str(answer.trim_end()).unwrap()
    }

    #[test]
    fn request_debug_hides_args() {
        let r = CtlRequest {
            command: "register".into(),
            args: vec!["a".into(), "b".into(), "hunter2".into()],
        };
        let shown = format!("{r:?}");
        assert!(!shown.contains("hunter2"));
        assert!(shown.contains("register"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bind_sets_modes_and_shutdown_removes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run").join("ctl.sock");
        let listener = bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let parent = std::fs::metadata(path.parent().unwrap()).unwrap();
        assert_eq!(parent.permissions().mode() & 0o777, 0o700);

        // A second bind sees a live server and refuses.
        let (tx, rx) = watch::channel(false);
        let env = Arc::new(env_in(&dir.path().join("db"), None));
        let task = tokio::spawn(serve_listener(listener, path.clone(), env, rx));
        let err = bind(&path).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);

        tx.send(true).unwrap();
        task.await.unwrap().unwrap();
        assert!(!path.exists());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stale_socket_is_replaced_and_other_files_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctl.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists(), "stale socket file left behind");
        let listener = bind(&path).unwrap();
        drop(listener);

        let file = dir.path().join("not-a-socket");
        std::fs::write(&file, "keep me").unwrap();
        let err = bind(&file).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn api_permissions_refusal_on_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctl.sock");
        let server = Arc::new(FakeServer::default());
        server
            .refused
            .lock()
            .unwrap()
            .push("connected_users".into());
        server
            .sessions
            .lock()
            .unwrap()
            .push("amy@localhost/r".into());
        let env = Arc::new(env_in(&dir.path().join("db"), Some(server)));
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(serve(path.clone(), env, rx));
        while !path.exists() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let p = path.clone();
        let (refused, allowed) = tokio::task::spawn_blocking(move || {
            (
                raw_exchange(&p, b"{\"command\":\"connected_users\",\"args\":[]}\n"),
                raw_exchange(
                    &p,
                    b"{\"command\":\"connected_users_number\",\"args\":[]}\n",
                ),
            )
        })
        .await
        .unwrap();
        let refused = parse(&refused);
        assert_eq!(refused.code, 1);
        assert!(refused.output.contains("api_permissions"), "{refused:?}");
        assert!(!refused.output.contains("amy"), "{refused:?}");
        assert_eq!(parse(&allowed), CtlOutput::ok("1"));
        tx.send(true).unwrap();
        task.await.unwrap().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn protocol_round_trip_and_bad_requests() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctl.sock");
        let server = Arc::new(FakeServer::default());
        server
            .sessions
            .lock()
            .unwrap()
            .push("amy@localhost/r".into());
        let env = Arc::new(env_in(&dir.path().join("db"), Some(server)));
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(serve(path.clone(), env, rx));
        while !path.exists() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let p = path.clone();
        let answers = tokio::task::spawn_blocking(move || {
            let ok = raw_exchange(&p, b"{\"command\":\"connected_users\",\"args\":[]}\n");
            let garbage = raw_exchange(&p, b"not json\n");
            let empty = raw_exchange(&p, b"\n");
            let mut huge = br#"{"command":"help","args":[""#.to_vec();
            huge.extend(std::iter::repeat_n(b'a', MAX_REQUEST + 10));
            huge.extend_from_slice(b"\"]}\n");
            let huge = raw_exchange(&p, &huge);
            // Connect and say nothing: the server gives up after READ_TIMEOUT.
            let silent = raw_exchange(&p, b"");
            (ok, garbage, empty, huge, silent)
        })
        .await
        .unwrap();
        assert!(answers.0.ends_with('\n'));
        assert_eq!(parse(&answers.0), CtlOutput::ok("amy@localhost/r"));
        assert_eq!(parse(&answers.1).code, 1);
        assert!(parse(&answers.1).output.starts_with("malformed request"));
        assert_eq!(parse(&answers.2), CtlOutput::failed("empty request"));
        assert!(parse(&answers.3).output.starts_with("request too large"));
        assert_eq!(
            parse(&answers.4),
            CtlOutput::failed("timed out waiting for the request")
        );
        tx.send(true).unwrap();
        task.await.unwrap().unwrap();
        assert!(!path.exists());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_before_serving_still_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctl.sock");
        let env = Arc::new(env_in(&dir.path().join("db"), None));
        let (tx, rx) = watch::channel(true);
        serve(path.clone(), env, rx).await.unwrap();
        assert!(!path.exists());
        drop(tx);
    }
}
