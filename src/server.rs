//! The running server: what every connection shares (config, TLS, storage,
//! router, modules), the listeners' accept loops, the control socket, and
//! orderly shutdown on SIGTERM/SIGINT or `rookery ctl stop`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::watch;
use xep_support::element::Element;
use xep_support::module::{Identity, Module, ServerContext};

use crate::config::{Config, Listener, ListenerModule};
use crate::ctl::commands::{CtlEnv, ServerControl};
use crate::router::Router;
use crate::storage::{SledStorage, Storage};
use crate::tls::TlsSetup;

/// How long shutdown waits for streams to close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Failed authentications remembered per address (for slowing down guessing).
const AUTH_FAILURE_MEMORY: Duration = Duration::from_secs(300);
/// Addresses the failure table holds at most.
const AUTH_FAILURE_TABLE: usize = 10_000;

/// Disco features of the core (not of a module): XEP-0160 offline storage.
const CORE_DISCO_FEATURES: &[&str] = &["msgoffline"];

/// Everything the connections share.
pub struct Server {
    pub config: Config,
    pub tls: Arc<TlsSetup>,
    /// TLS acceptors built once: for STARTTLS, and for direct TLS (ALPN `xmpp-client`).
    starttls_acceptor: tokio_rustls::TlsAcceptor,
    direct_tls_acceptor: tokio_rustls::TlsAcceptor,
    pub storage: Arc<dyn Storage>,
    /// Batches the flushes that make offline messages durable (one fsync
    /// for every message stored meanwhile), off the runtime's threads.
    pub group_commit: Arc<crate::storage::group_commit::GroupCommit>,
    pub router: Router,
    /// Rosters of accounts with sessions (RFC 6121), written through to storage.
    pub rosters: crate::im::roster::RosterCache,
    /// Per-account locks ordering offline storage against draining it.
    pub account_locks: crate::im::offline::AccountLocks,
    pub modules: Vec<Arc<dyn Module>>,
    iq_handlers: HashMap<&'static str, Arc<dyn Module>>,
    shutdown: watch::Sender<bool>,
    started: Instant,
    /// Connections open now (negotiating or bound).
    pub connections: AtomicUsize,
    auth_failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
    /// This server, for hooks that must spawn routing work.
    this: std::sync::OnceLock<std::sync::Weak<Server>>,
}

impl Server {
    /// Whether this server serves `domain`.
    pub fn serves(&self, domain: &str) -> bool {
        self.config.hosts.iter().any(|h| h == domain)
    }

    /// The module answering iqs with this payload namespace.
    pub fn module_for(&self, ns: &str) -> Option<&Arc<dyn Module>> {
        self.iq_handlers.get(ns)
    }

    /// The TLS acceptor for direct TLS (`true`) or STARTTLS (`false`).
    pub fn tls_acceptor(&self, direct: bool) -> tokio_rustls::TlsAcceptor {
        if direct {
            self.direct_tls_acceptor.clone()
        } else {
            self.starttls_acceptor.clone()
        }
    }

    /// A receiver that flips to `true` when the server shuts down.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Begin shutdown.
    pub fn begin_shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    /// Note a failed authentication from `ip`; returns how long to wait
    /// before answering (grows with the address's recent failures).
    pub fn auth_failed(&self, ip: IpAddr) -> Duration {
        let mut table = self.auth_failures.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if table.len() >= AUTH_FAILURE_TABLE {
            table.retain(|_, (_, t)| now.duration_since(*t) < AUTH_FAILURE_MEMORY);
        }
        let entry = table.entry(ip).or_insert((0, now));
        if now.duration_since(entry.1) >= AUTH_FAILURE_MEMORY {
            entry.0 = 0;
        }
        entry.0 = entry.0.saturating_add(1);
        entry.1 = now;
        let n = entry.0.min(20);
        Duration::from_millis((200 * u64::from(n)).min(5000))
    }

    /// Forget failures of an address that authenticated.
    pub fn auth_succeeded(&self, ip: IpAddr) {
        let mut table = self.auth_failures.lock().unwrap_or_else(|e| e.into_inner());
        table.remove(&ip);
    }
}

impl ServerContext for Server {
    fn hosts(&self) -> Vec<String> {
        self.config.hosts.clone()
    }

    fn disco_features(&self) -> Vec<String> {
        // Core features (docs/features.md), then those of the enabled modules.
        let mut f: Vec<String> = CORE_DISCO_FEATURES.iter().map(|s| s.to_string()).collect();
        f.extend(
            self.modules
                .iter()
                .flat_map(|m| m.disco_features())
                .map(str::to_string),
        );
        f.sort();
        f.dedup();
        f
    }

    fn disco_identities(&self) -> Vec<Identity> {
        let mut ids = vec![Identity {
            category: "server".into(),
            kind: "im".into(),
            name: Some("Rookery".into()),
        }];
        ids.extend(self.modules.iter().flat_map(|m| m.disco_identities()));
        ids
    }

    fn route(&self, stanza: Element) {
        // Modules run synchronously; their stanzas are routed on a task of their own.
        if let Some(server) = self.this.get().and_then(std::sync::Weak::upgrade) {
            tokio::spawn(async move { crate::delivery::route(&server, stanza).await });
        }
    }
}

/// The control interface `rookery ctl` uses on a running server.
struct Control(Arc<Server>);

impl ServerControl for Control {
    fn connected_users(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .0
            .router
            .all_sessions()
            .iter()
            .map(|s| s.jid.to_string())
            .collect();
        v.sort();
        v
    }

    fn kick_user(&self, user: &str, host: &str, _reason: &str) -> usize {
        let Ok(bare) = jid::BareJid::new(&format!("{user}@{host}")) else {
            return 0;
        };
        let sessions = self.0.router.sessions_of(&bare);
        for s in &sessions {
            s.close(Some("not-authorized"));
            self.0.router.unbind(s);
        }
        sessions.len()
    }

    fn stop(&self) {
        self.0.begin_shutdown();
    }

    fn status(&self) -> String {
        let up = self.0.started.elapsed().as_secs();
        format!(
            "rookery {}: uptime {}s, {} sessions, {} connections",
            env!("CARGO_PKG_VERSION"),
            up,
            self.0.router.count(),
            self.0.connections.load(Ordering::Relaxed)
        )
    }
}

/// Start everything, serve until shutdown, then close every stream and flush storage.
pub async fn run(config: Config) -> Result<(), String> {
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| format!("cannot create data_dir {}: {e}", config.data_dir.display()))?;
    let (tls, tls_warnings) = TlsSetup::load(&config.certfiles, &config.hosts, &config.data_dir)
        .map_err(|e| e.to_string())?;
    for w in tls_warnings {
        tracing::warn!("{w}");
    }
    let storage: Arc<dyn Storage> = Arc::new(
        SledStorage::open(&config.data_dir.join("db"))
            .map_err(|e| format!("cannot open the database: {e}"))?,
    );
    let (modules, module_warnings) = xep_support::registry::build(&config.modules);
    for (module, message) in module_warnings {
        tracing::warn!("{}", config.module_warning(&module, &message));
    }
    let mut iq_handlers: HashMap<&'static str, Arc<dyn Module>> = HashMap::new();
    for m in &modules {
        for ns in m.server_iq_namespaces() {
            iq_handlers.insert(ns, m.clone());
        }
    }

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

    let (shutdown, _) = watch::channel(false);
    let server = Arc::new(Server {
        config,
        starttls_acceptor: tls.acceptor(&[]),
        direct_tls_acceptor: tls.acceptor(&[b"xmpp-client"]),
        tls,
        storage: storage.clone(),
        group_commit: crate::storage::group_commit::GroupCommit::start(storage.clone()),
        router: Router::new(),
        rosters: Default::default(),
        account_locks: Default::default(),
        modules,
        iq_handlers,
        shutdown,
        started: Instant::now(),
        connections: AtomicUsize::new(0),
        auth_failures: Mutex::new(HashMap::new()),
        this: std::sync::OnceLock::new(),
    });
    let _ = server.this.set(Arc::downgrade(&server));

    let env = Arc::new(CtlEnv {
        storage: storage.clone(),
        hosts: server.config.hosts.clone(),
        scram_iterations: server.config.scram_iterations,
        server: Some(Arc::new(Control(server.clone()))),
    });
    let ctl_path = server.config.ctl_socket.clone();
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
        };
        let mode = if cfg.tls { "tls" } else { "starttls" };
        println!("rookery: listening {kind} {local} {mode}");
        tracing::info!("listening for {kind} on {local} ({mode})");
        if cfg.module == ListenerModule::S2s {
            tracing::warn!("s2s listener on {local}: federation is not implemented yet; connections are refused");
        }
        accept_tasks.push(tokio::spawn(accept_loop(server.clone(), listener, cfg)));
    }
    println!("rookery: ready");
    tracing::info!(
        "rookery {} ready for {}",
        env!("CARGO_PKG_VERSION"),
        server.config.hosts.join(", ")
    );

    signals.wait(&server).await;
    tracing::info!("shutting down");
    server.begin_shutdown();
    for t in &accept_tasks {
        t.abort();
    }
    for s in server.router.all_sessions() {
        s.close(Some("system-shutdown"));
    }
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    while server.connections.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), ctl_task).await;
    storage
        .flush()
        .map_err(|e| format!("flushing the database: {e}"))?;
    tracing::info!("stopped");
    Ok(())
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
        if cfg.module == ListenerModule::S2s {
            drop(sock);
            continue;
        }
        if let Some(rule) = &cfg.access {
            if !server.config.access_allows(rule, None, Some(peer.ip())) {
                tracing::info!(%peer, "connection refused by access rule {rule}");
                drop(sock);
                continue;
            }
        }
        let _ = sock.set_nodelay(true);
        let server = server.clone();
        let cfg = cfg.clone();
        server.connections.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            crate::c2s::handle(server.clone(), sock, peer, cfg).await;
            server.connections.fetch_sub(1, Ordering::Relaxed);
        });
    }
}
