//! Start-up and shutdown: `rookery serve` builds the live snapshot, opens
//! the database, binds every listener and the control socket, starts the
//! accept loops (one task per connection, sized for its listener type) and
//! the certificate watcher, then waits for SIGTERM/SIGINT or `rookery ctl
//! stop` and shuts down in order.
//!
//! - [`live`]: building the live snapshot and reloading it;
//! - [`module_api`]: the server as the modules' `ServerContext`;
//! - [`control`]: the server as `rookery ctl`'s `ServerControl`.
//!
//! Invariants: every listener is bound before anything is announced
//! (`rookery: ready` means every port accepts); signals are caught before
//! readiness, so an early signal still means an orderly shutdown; shutdown
//! closes every stream, waits at most [`SHUTDOWN_GRACE`] for connections
//! to end, then writes and flushes the archive and the database.

mod control;
mod live;
mod module_api;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use xep_support::module::CommandOutcome;

use crate::config::{Config, Listener, ListenerModule};
use crate::conn_log::ConnLog;
use crate::ctl::commands::CtlEnv;
use crate::server::Server;
use crate::storage::{PgStorage, SledStorage, Storage};
use crate::stream::StreamCondition;

/// How long shutdown waits for streams to close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The database `default_db` names: the embedded sled database in
/// `data_dir/db`, or PostgreSQL (its schema migrated first).
pub fn open_storage(config: &Config) -> Result<Arc<dyn Storage>, String> {
    match &config.sql {
        Some(sql) => {
            let pg = PgStorage::open(sql).map_err(|e| {
                format!(
                    "cannot open the PostgreSQL database {}: {e}",
                    sql.describe()
                )
            })?;
            tracing::info!("storage: PostgreSQL at {}", pg.describe());
            Ok(Arc::new(pg))
        }
        None => Ok(Arc::new(
            SledStorage::open_with(
                &config.data_dir.join("db"),
                Some(&crate::storage::ArchivePlacement::in_data_dir(
                    &config.data_dir,
                    config.archive_engine,
                )),
            )
            .map_err(|e| format!("cannot open the database: {e}"))?,
        )),
    }
}

/// Start everything, serve until shutdown, then close every stream and flush storage.
pub async fn run(config: Config) -> Result<(), String> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| format!("cannot create data_dir {}: {e}", config.data_dir.display()))?;
    let (live, warnings) = live::build(config)?;
    for w in &warnings {
        tracing::warn!("{w}");
    }
    let config = live.config.clone();
    let storage = open_storage(&config)?;
    let dialback_secret = crate::s2s::dialback::stored_secret(storage.as_ref())?;

    // Bind every listener before announcing anything.
    let mut bound = Vec::new();
    for l in &config.listen {
        let addr = SocketAddr::new(l.ip, l.port);
        let listener = match TcpListener::bind(addr).await {
            Ok(listener) => listener,
            // A machine without IPv6 still serves IPv4 (the default config listens on both loopbacks).
            Err(e) if l.ip.is_ipv6() && e.kind() == std::io::ErrorKind::AddrNotAvailable => {
                tracing::warn!("not listening on {addr} (config line {}): {e}", l.line);
                continue;
            }
            Err(e) => {
                return Err(format!(
                    "cannot listen on {addr} (config line {}): {e}",
                    l.line
                ))
            }
        };
        bound.push((listener, l.clone()));
    }
    let ctl_listener = crate::ctl::socket::bind(&config.ctl_socket).map_err(|e| {
        format!(
            "cannot create the control socket {}: {e}",
            config.ctl_socket.display()
        )
    })?;

    let server = Server::new(live, storage.clone(), dialback_secret);
    crate::s2s::register(&server);
    let cluster = match &config.cluster {
        Some(o) => {
            let cluster = crate::cluster::start(server.clone(), o).await?;
            server.routes.set_cluster(cluster.clone());
            Some(cluster)
        }
        None => None,
    };
    // Writes the archive accepted and then lost: their senders are told.
    if let Some(reports) = server.archive.take_failures() {
        tokio::spawn(crate::archive_faults::run(Arc::downgrade(&server), reports));
    }

    let env = Arc::new(CtlEnv {
        storage: storage.clone(),
        hosts: config.hosts.clone(),
        scram_iterations: config.scram_iterations,
        server: Some(Arc::new(control::Control {
            server: server.clone(),
            rt: tokio::runtime::Handle::current(),
        })),
    });
    let commands = env.clone();
    server.set_command_runner(Arc::new(move |name: &str, args: &[String]| {
        let out = crate::ctl::execute(&commands, name, args);
        CommandOutcome {
            code: out.code,
            output: out.output,
        }
    }));
    let ctl_path = config.ctl_socket.clone();
    let ctl_task = tokio::spawn(crate::ctl::socket::serve_listener(
        ctl_listener,
        ctl_path,
        env,
        server.shutdown_signal(),
    ));

    // Catch SIGTERM/SIGINT before announcing readiness, so an early signal
    // still means an orderly shutdown.
    let signals = Signals::install();
    let mut accept_tasks = Vec::new();
    for (listener, cfg) in bound {
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        let kind = match cfg.module {
            ListenerModule::C2s => "c2s",
            ListenerModule::S2s => "s2s",
            ListenerModule::Service => "service",
            ListenerModule::Http => "http",
        };
        let mode = match (cfg.tls, cfg.module) {
            (true, _) => "tls",
            (false, ListenerModule::Service | ListenerModule::Http) => "plain",
            (false, _) => "starttls",
        };
        println!("rookery: listening {kind} {local} {mode}");
        tracing::info!("listening for {kind} on {local} ({mode})");
        accept_tasks.push(tokio::spawn(accept_loop(server.clone(), listener, cfg)));
    }
    println!("rookery: ready");
    tracing::info!(
        "rookery {} ready for {}",
        env!("CARGO_PKG_VERSION"),
        config.hosts.join(", ")
    );

    let watcher = tokio::spawn(watch_certificates(server.clone()));
    let ticker = tokio::spawn(tick_modules(server.clone()));
    signals.wait(&server).await;
    watcher.abort();
    ticker.abort();
    tracing::info!("shutting down");
    server.begin_shutdown();
    if let Some(cluster) = &cluster {
        // The other nodes stop forwarding here at once (they store
        // offline until the clients reconnect to them).
        cluster.leave().await;
    }
    for t in &accept_tasks {
        t.abort();
    }
    for s in server.sessions.all_sessions() {
        s.close(Some(StreamCondition::SystemShutdown));
    }
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    while server.connections.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), ctl_task).await;
    // The archive's queue is written and flushed (its writer threads end).
    let archive = server.archive.clone();
    let _ = tokio::task::spawn_blocking(move || archive.close()).await;
    storage
        .flush()
        .map_err(|e| format!("flushing the database: {e}"))?;
    tracing::info!("stopped");
    Ok(())
}

/// How often certificate files are checked for changes (seconds; the
/// environment variable `ROOKERY_CERT_CHECK_SECS` overrides it, for tests).
const CERT_CHECK_SECS: u64 = 60;

/// What identifies the certificate files' current content: every file's
/// path, size and modification time.
fn certificate_fingerprint(
    config: &Config,
) -> Vec<(std::path::PathBuf, u64, Option<std::time::SystemTime>)> {
    let mut ignored = Vec::new();
    let files = crate::tls::expand_certfiles(&config.effective_certfiles(), &mut ignored)
        .unwrap_or_default();
    files
        .into_iter()
        .map(|p| {
            let meta = std::fs::metadata(&p).ok();
            let len = meta.as_ref().map(|m| m.len()).unwrap_or(0);
            let modified = meta.and_then(|m| m.modified().ok());
            (p, len, modified)
        })
        .collect()
}

/// Reload the certificates when their files change (renewals by certbot
/// and the like), without dropping sessions.
/// Each module's `tick`, about once a second, until shutdown.
async fn tick_modules(server: Arc<Server>) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let live = server.live();
        for m in &live.hooks.tick {
            m.tick(server.as_ref());
        }
    }
}

async fn watch_certificates(server: Arc<Server>) {
    let secs = std::env::var("ROOKERY_CERT_CHECK_SECS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(CERT_CHECK_SECS);
    let mut last = certificate_fingerprint(&server.config());
    loop {
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let config = server.config();
        let now = tokio::task::spawn_blocking(move || certificate_fingerprint(&config))
            .await
            .unwrap_or_default();
        if now == last {
            continue;
        }
        last = now;
        let s = server.clone();
        match tokio::task::spawn_blocking(move || live::reload_certificates(&s)).await {
            Ok(Ok(())) => tracing::info!("certificate files changed: certificates reloaded"),
            Ok(Err(e)) => {
                tracing::warn!("certificate files changed but cannot be loaded ({e}); keeping the current ones")
            }
            Err(e) => tracing::warn!("certificate reload crashed: {e}"),
        }
    }
}

/// SIGTERM and SIGINT handlers.
struct Signals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn install() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        Signals {
            term: signal(SignalKind::terminate()).ok(),
            int: signal(SignalKind::interrupt()).ok(),
        }
    }

    /// Wait for a signal or for `rookery ctl stop`.
    async fn wait(mut self, server: &Server) {
        let mut stop = server.shutdown_signal();
        let term = async {
            match self.term.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        let int = async {
            match self.int.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = term => {}
            _ = int => {}
            _ = stop.wait_for(|v| *v) => {}
        }
    }
}

async fn accept_loop(server: Arc<Server>, listener: TcpListener, cfg: Listener) {
    let cfg = Arc::new(cfg);
    loop {
        let (sock, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: back off briefly, keep serving.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if let Some(rule) = &cfg.access {
            if !server.config().access_allows(rule, None, Some(peer.ip())) {
                tracing::info!(%peer, "connection refused by access rule {rule}");
                drop(sock);
                continue;
            }
        }
        let _ = sock.set_nodelay(true);
        let server = server.clone();
        let cfg = cfg.clone();
        server.connections.fetch_add(1, Ordering::Relaxed);
        // One task type per module: a task is sized for the largest future
        // it may hold, and the s2s stream's future is several KiB larger
        // than the c2s one (one task for both cost every idle client
        // session 5.7 KiB, measured with massif).
        match cfg.module {
            ListenerModule::C2s => {
                tokio::spawn(counted(
                    server.clone(),
                    ConnLog::new("c2s").run(crate::c2s::handle(server, sock, peer, cfg)),
                ));
            }
            ListenerModule::S2s => {
                tokio::spawn(counted(
                    server.clone(),
                    ConnLog::new("s2s-in")
                        .run(crate::s2s::incoming::handle(server, sock, peer, cfg)),
                ));
            }
            ListenerModule::Service => {
                tokio::spawn(counted(
                    server.clone(),
                    ConnLog::new("comp").run(crate::component::handle(server, sock, peer, cfg)),
                ));
            }
            ListenerModule::Http => {
                tokio::spawn(counted(
                    server.clone(),
                    ConnLog::new("http").run(crate::http::handle(server, sock, peer, cfg)),
                ));
            }
        }
    }
}

/// The task of one accepted connection: `serve` (each listener type's own
/// future, so each gets a task sized for it), then the connection count.
/// A combinator, not an async fn: an async fn would keep `serve` twice in
/// its state (as its argument and as the future it awaits), which cost
/// every client connection 584 bytes.
fn counted(
    server: Arc<Server>,
    serve: impl std::future::Future<Output = ()>,
) -> impl std::future::Future<Output = ()> {
    use futures_util::FutureExt;
    serve.map(move |()| {
        server.connections.fetch_sub(1, Ordering::Relaxed);
    })
}
