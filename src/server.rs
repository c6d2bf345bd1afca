//! The shared state of the running server: what every connection and task
//! reaches through `Arc<Server>` — the live snapshot of configuration,
//! certificates and modules ([`Live`], swapped whole by a reload), storage
//! and its caches, the session table ([`Sessions`]), the route table
//! ([`Routes`]), the s2s link tables, XEP-0198 resumption state, the authentication-failure
//! table, and the shutdown signal.
//!
//! State only: starting the server (listeners, signals, the certificate
//! watcher, building and reloading [`Live`]) is `serve/`, and the adapters
//! that let modules and `rookery ctl` act on it are `serve/module_api.rs`
//! and `serve/control.rs`. So this file imports nothing above it: no
//! transport (c2s, s2s, component, http), no routing (delivery, im), no ctl
//! (`src/import_graph_tests.rs` holds that).
//!
//! Invariants: a [`Live`] is never changed in place, only replaced
//! ([`Server::set_live`]); every lock here guards a table operation and is
//! never held across an `.await`; the resumable-session and expired tables
//! are bounded (the latter to [`EXPIRED_SM_MEMORY`] entries, the failure
//! table to [`AUTH_FAILURE_TABLE`] addresses).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::{Duration, Instant};

use jid::BareJid;
use tokio::sync::watch;
use xep_support::module::{CommandOutcome, Module, StanzaStream};

use crate::config::Config;
use crate::links::S2s;
use crate::routes::{Domains, Routes};
use crate::sessions::{SessionHandle, Sessions};
use crate::storage::account_locks::AccountLocks;
use crate::storage::roster_cache::{RosterCache, RosterSource};
use crate::storage::Storage;
use crate::tls::TlsSetup;

/// Longest a session whose archive writes failed waits for the senders'
/// errors to be queued before it acknowledges or answers.
const ARCHIVE_REPORT_WAIT: Duration = Duration::from_secs(5);
/// Failed authentications remembered per address (for slowing down guessing).
const AUTH_FAILURE_MEMORY: Duration = Duration::from_secs(300);
/// Addresses the failure table holds at most.
const AUTH_FAILURE_TABLE: usize = 10_000;

/// Ended resumable sessions whose counts are remembered for late resumptions.
const EXPIRED_SM_MEMORY: usize = 1000;

/// What `rookery ctl reload_config` replaces as a whole: the configuration,
/// the certificates and the modules built from it. Connections take a
/// snapshot ([`Server::live`]) and keep using it; sessions are never dropped
/// by a reload. Built (and rebuilt) by `serve::live`, which keeps the
/// handler tables, the hook lists, `services` and the typed stream-level options
/// derived from `modules`, and the acceptors from `tls`.
pub struct Live {
    pub config: Arc<Config>,
    pub tls: Arc<TlsSetup>,
    /// s2s TLS (trusted roots, acceptors, client certificates) built from
    /// these certificates.
    pub s2s_tls: Arc<crate::tls::s2s::S2sTls>,
    /// TLS acceptors built once per load: for STARTTLS, and for direct TLS
    /// (ALPN `xmpp-client`).
    pub starttls_acceptor: tokio_rustls::TlsAcceptor,
    pub direct_tls_acceptor: tokio_rustls::TlsAcceptor,
    pub modules: Vec<Arc<dyn Module>>,
    /// Modules answering iqs to the server, by payload namespace.
    pub iq_handlers: HashMap<&'static str, Arc<dyn Module>>,
    /// Modules answering iqs before authentication, by payload namespace.
    pub pre_auth_handlers: HashMap<&'static str, Arc<dyn Module>>,
    /// Modules answering iqs to accounts' bare JIDs, by payload namespace.
    pub account_iq_handlers: HashMap<&'static str, Arc<dyn Module>>,
    /// For each per-event hook (stanza filters, message hooks, session
    /// events, ticks), the modules that implement it, in config order
    /// (from [`Module::hooks`]): hooks are called through these lists.
    pub hooks: xep_support::hook_lists::HookLists,
    /// Service domains of modules (mod_muc's `conference.HOST`): the module
    /// and the served host the service belongs to.
    pub services: HashMap<String, (Arc<dyn Module>, String)>,
    /// Options of the stream-level modules, when enabled.
    pub sm: Option<xep_support::stream_mgmt::StreamMgmt>,
    pub csi: Option<xep_support::client_state::ClientState>,
    /// `mod_auth_fast`'s options (XEP-0484), when it is on.
    pub fast: Option<xep_support::auth_fast::AuthFast>,
    pub ping: Option<xep_support::ping::Ping>,
}

impl Live {
    /// The module answering iqs with this payload namespace.
    pub fn module_for(&self, ns: &str) -> Option<&Arc<dyn Module>> {
        self.iq_handlers.get(ns)
    }

    /// The module answering iqs with this namespace before authentication.
    pub fn pre_auth_module_for(&self, ns: &str) -> Option<&Arc<dyn Module>> {
        self.pre_auth_handlers.get(ns)
    }

    /// The module answering iqs to accounts with this payload namespace.
    pub fn account_module_for(&self, ns: &str) -> Option<&Arc<dyn Module>> {
        self.account_iq_handlers.get(ns)
    }

    /// The module service domains that belong to `host`, sorted.
    pub fn services_of(&self, host: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .services
            .iter()
            .filter(|(_, (_, h))| h == host)
            .map(|(d, _)| d.clone())
            .collect();
        v.sort();
        v
    }

    /// The TLS acceptor for direct TLS (`true`) or STARTTLS (`false`).
    pub fn tls_acceptor(&self, direct: bool) -> tokio_rustls::TlsAcceptor {
        if direct {
            self.direct_tls_acceptor.clone()
        } else {
            self.starttls_acceptor.clone()
        }
    }
}

/// The route table's configured domains of a live snapshot.
fn domains_of(live: &Live) -> Domains {
    let config = &live.config;
    Domains::new(
        &config.hosts,
        config
            .listen
            .iter()
            .flat_map(|l| l.service_hosts.iter().map(|h| &h.domain)),
        live.services.iter().map(|(d, (m, _))| (d, m)),
    )
}

/// Everything the connections share.
pub struct Server {
    live: RwLock<Arc<Live>>,
    /// Batches the flushes that make offline messages durable (one fsync
    /// for every message stored meanwhile), off the runtime's threads.
    pub group_commit: Arc<crate::storage::group_commit::GroupCommit>,
    /// Federation: outgoing connections, incoming streams, the dialback
    /// secret, the resolver cache.
    pub s2s: S2s,
    /// The route table: where stanzas to a domain go (served hosts,
    /// module services, components, the s2s manager for the rest).
    pub routes: Routes,
    pub storage: Arc<dyn Storage>,
    /// The modules' view of `storage` (`ctx.store(MODULE)`).
    module_data: crate::storage::modules::ModuleAccess,
    /// The message archives (XEP-0313), written off the routing path.
    pub archive: Arc<dyn crate::storage::ArchiveEngine>,
    /// The `seq` of the last archive failure report handled
    /// (`archive_faults.rs`).
    archive_reports: watch::Sender<u64>,
    pub sessions: Sessions,
    /// Rosters of accounts with sessions (RFC 6121), written through to storage.
    pub rosters: RosterCache,
    /// Per-account locks ordering offline storage against draining it.
    pub account_locks: AccountLocks,
    shutdown: watch::Sender<bool>,
    started: Instant,
    /// Connections open now (negotiating or bound).
    pub connections: AtomicUsize,
    auth_failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
    /// XEP-0198 resumable sessions by resumption id.
    resumable: Mutex<HashMap<String, Arc<SessionHandle>>>,
    /// Recently ended resumable sessions (id, account, inbound count), so a
    /// late `<resume/>` learns which of its stanzas arrived (`<failed h=…/>`).
    expired: Mutex<VecDeque<(String, String, u32)>>,
    /// This server, for hooks that must spawn routing work.
    this: OnceLock<Weak<Server>>,
    /// Runs `rookery ctl` commands (for XEP-0050 ad-hoc commands); set once
    /// at start-up, after the server exists.
    commands: OnceLock<Arc<CommandRunner>>,
    /// The modules' stanza streams (`ServerContext::route_stream`): one
    /// queue per name, each drained in order by a task of its own
    /// (`serve/module_api.rs`).
    pub stream_queues: Mutex<HashMap<String, tokio::sync::mpsc::UnboundedSender<StanzaStream>>>,
}

/// Runs one `rookery ctl` command (name, arguments) to its outcome.
pub type CommandRunner = dyn Fn(&str, &[String]) -> CommandOutcome + Send + Sync;

impl Server {
    /// The shared state of a server starting with `live`, `storage` and the
    /// stored dialback secret.
    pub fn new(live: Live, storage: Arc<dyn Storage>, dialback_secret: String) -> Arc<Server> {
        let (shutdown, _) = watch::channel(false);
        let routes = Routes::default();
        routes.set_domains(domains_of(&live));
        let server = Arc::new(Server {
            live: RwLock::new(Arc::new(live)),
            module_data: crate::storage::modules::ModuleAccess::new(storage.clone()),
            archive: storage.archive(),
            archive_reports: watch::channel(0).0,
            group_commit: crate::storage::group_commit::GroupCommit::start(storage.clone()),
            storage,
            sessions: Sessions::new(),
            rosters: Default::default(),
            account_locks: Default::default(),
            resumable: Mutex::new(HashMap::new()),
            expired: Mutex::new(VecDeque::new()),
            s2s: S2s::new(dialback_secret),
            routes,
            shutdown,
            started: Instant::now(),
            connections: AtomicUsize::new(0),
            auth_failures: Mutex::new(HashMap::new()),
            this: OnceLock::new(),
            commands: OnceLock::new(),
            stream_queues: Mutex::new(HashMap::new()),
        });
        let _ = server.this.set(Arc::downgrade(&server));
        server
    }

    /// This server as an `Arc` (for spawning tasks); `None` while it is dropped.
    pub fn arc(&self) -> Option<Arc<Server>> {
        self.this.get().and_then(Weak::upgrade)
    }

    /// The current configuration, certificates and modules (a snapshot:
    /// `reload_config` swaps in a new one).
    pub fn live(&self) -> Arc<Live> {
        self.live.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The current configuration.
    pub fn config(&self) -> Arc<Config> {
        self.live().config.clone()
    }

    /// Whether this server serves `domain`.
    pub fn serves(&self, domain: &str) -> bool {
        self.config().hosts.iter().any(|h| h == domain)
    }

    /// Whether this server speaks for `domain` over s2s: a served host or
    /// a module's service domain (mod_muc's `conference.HOST`). Such a
    /// domain has its own s2s streams and dialback identity, as a host
    /// has, and stanzas from it may leave over s2s.
    pub fn speaks_for(&self, domain: &str) -> bool {
        let live = self.live();
        live.config.hosts.iter().any(|h| h == domain) || live.services.contains_key(domain)
    }

    /// The module answering iqs with this payload namespace.
    pub fn module_for(&self, ns: &str) -> Option<Arc<dyn Module>> {
        self.live().module_for(ns).cloned()
    }

    /// The module answering iqs to accounts with this payload namespace.
    pub fn account_module_for(&self, ns: &str) -> Option<Arc<dyn Module>> {
        self.live().account_module_for(ns).cloned()
    }
    /// Swap in a new live snapshot (a reload); connections holding the old
    /// one keep it until they take a new one.
    pub fn set_live(&self, live: Live) {
        let domains = domains_of(&live);
        *self.live.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(live);
        self.routes.set_domains(domains);
    }

    /// How long the server has been running.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// The modules' view of storage.
    pub fn module_access(&self) -> &crate::storage::modules::ModuleAccess {
        &self.module_data
    }

    /// Set the `rookery ctl` command runner (once, at start-up).
    pub fn set_command_runner(&self, runner: Arc<CommandRunner>) {
        let _ = self.commands.set(runner);
    }

    /// The `rookery ctl` command runner; `None` before start-up set it.
    pub fn command_runner(&self) -> Option<&Arc<CommandRunner>> {
        self.commands.get()
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

    /// Register a resumable session under its XEP-0198 id.
    pub fn remember_resumable(&self, id: &str, handle: Arc<SessionHandle>) {
        let mut t = self.resumable.lock().unwrap_or_else(|e| e.into_inner());
        t.insert(id.to_string(), handle);
    }

    /// Forget a resumption id (if it still names session `session_id`).
    pub fn forget_resumable(&self, id: &str, session_id: u64) {
        let mut t = self.resumable.lock().unwrap_or_else(|e| e.into_inner());
        if t.get(id).is_some_and(|h| h.id == session_id) {
            t.remove(id);
        }
    }

    /// Remember an ended resumable session's inbound count (bounded list).
    pub fn remember_expired(&self, id: &str, bare: &str, h: u32) {
        let mut t = self.expired.lock().unwrap_or_else(|e| e.into_inner());
        if t.len() >= EXPIRED_SM_MEMORY {
            t.pop_front();
        }
        t.push_back((id.to_string(), bare.to_string(), h));
    }

    /// The inbound count of an ended resumable session of `bare`.
    pub fn expired_h(&self, id: &str, bare: &str) -> Option<u32> {
        let t = self.expired.lock().unwrap_or_else(|e| e.into_inner());
        t.iter()
            .rev()
            .find(|(i, b, _)| i == id && b == bare)
            .map(|(_, _, h)| *h)
    }

    /// The resumable session with this id.
    pub fn resumable(&self, id: &str) -> Option<Arc<SessionHandle>> {
        let t = self.resumable.lock().unwrap_or_else(|e| e.into_inner());
        t.get(id).cloned()
    }

    /// Wait until the archive appends `session` caused (its messages, in
    /// its own and its peers' archives) are on disk: before the session
    /// acknowledges anything (XEP-0198 `<a/>`, `<resumed/>`) or handles an
    /// iq, so nothing acknowledged is lost to a crash. Returns at once when
    /// they already are (the usual case: the archive flushes within 200 ms).
    pub async fn archive_durable(&self, session: &SessionHandle) {
        let t = session
            .archive_ticket
            .load(std::sync::atomic::Ordering::Relaxed);
        if t == 0 {
            return;
        }
        if let Err(e) = self.archive.durable(t).await {
            tracing::error!(jid = %session.jid, "archive writes of the session: {e}");
            Box::pin(self.wait_archive_reports()).await;
        }
    }

    /// Wait (up to [`ARCHIVE_REPORT_WAIT`]) until every archive failure
    /// report queued so far was handled: the errors for the messages a
    /// failed write lost are then queued to their senders, ahead of the
    /// acknowledgement or answer that follows.
    async fn wait_archive_reports(&self) {
        let want = self.archive.failures_reported();
        let mut rx = self.archive_reports.subscribe();
        let _ = tokio::time::timeout(ARCHIVE_REPORT_WAIT, rx.wait_for(|d| *d >= want)).await;
    }

    /// Archive failure report `seq` was handled (its senders told).
    pub fn archive_reports_handled(&self, seq: u64) {
        self.archive_reports.send_modify(|d| *d = (*d).max(seq));
    }

    /// Forget failures of an address that authenticated.
    pub fn auth_succeeded(&self, ip: IpAddr) {
        let mut table = self.auth_failures.lock().unwrap_or_else(|e| e.into_inner());
        table.remove(&ip);
    }
}

impl RosterSource for Server {
    fn storage(&self) -> &dyn Storage {
        self.storage.as_ref()
    }

    fn has_sessions(&self, bare: &BareJid) -> bool {
        !self.sessions.sessions_of(bare).is_empty()
    }
}
