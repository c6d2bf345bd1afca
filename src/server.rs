//! The running server: what every connection shares (config, TLS, storage,
//! router, modules), the listeners' accept loops, the control socket, and
//! orderly shutdown on SIGTERM/SIGINT or `rookery ctl stop`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use jid::{BareJid, FullJid, Jid};
use tokio::net::TcpListener;
use tokio::sync::watch;
use xep_support::element::Element;
use xep_support::module::{
    AccountError, CommandOutcome, Identity, Module, ServerContext, SessionInfo as ModSessionInfo,
    Subscription as ModSubscription,
};

use crate::auth::credentials::StoredCredentials;
use crate::storage::{AccountKey, StorageError};

use crate::config::{Config, Listener, ListenerModule};
use crate::ctl::commands::{CtlEnv, ServerControl, SessionInfo};
use crate::router::Router;
use crate::storage::{SledStorage, Storage};
use crate::stream::StreamCondition;
use crate::tls::TlsSetup;

/// How long shutdown waits for streams to close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Failed authentications remembered per address (for slowing down guessing).
const AUTH_FAILURE_MEMORY: Duration = Duration::from_secs(300);
/// Addresses the failure table holds at most.
const AUTH_FAILURE_TABLE: usize = 10_000;

/// Ended resumable sessions whose counts are remembered for late resumptions.
const EXPIRED_SM_MEMORY: usize = 1000;

/// Disco features of the core (not of a module): XEP-0160 offline storage.
const CORE_DISCO_FEATURES: &[&str] = &["msgoffline"];

/// What `rookery ctl reload_config` replaces as a whole: the configuration,
/// the certificates and the modules built from it. Connections take a
/// snapshot ([`Server::live`]) and keep using it; sessions are never dropped
/// by a reload.
pub struct Live {
    pub config: Arc<Config>,
    pub tls: Arc<TlsSetup>,
    /// s2s TLS (trusted roots, acceptors, client certificates) built from
    /// these certificates.
    pub s2s_tls: Arc<crate::s2s::tls::S2sTls>,
    /// TLS acceptors built once per load: for STARTTLS, and for direct TLS (ALPN `xmpp-client`).
    starttls_acceptor: tokio_rustls::TlsAcceptor,
    direct_tls_acceptor: tokio_rustls::TlsAcceptor,
    pub modules: Vec<Arc<dyn Module>>,
    iq_handlers: HashMap<&'static str, Arc<dyn Module>>,
    pre_auth_handlers: HashMap<&'static str, Arc<dyn Module>>,
    /// Modules answering iqs to accounts' bare JIDs, by payload namespace.
    account_iq_handlers: HashMap<&'static str, Arc<dyn Module>>,
    /// Modules with stanza filters, in config order.
    pub filters: Vec<Arc<dyn Module>>,
    /// Service domains of modules (mod_muc's `conference.HOST`): the module
    /// and the served host the service belongs to.
    services: HashMap<String, (Arc<dyn Module>, String)>,
    /// Options of the stream-level modules, when enabled.
    pub sm: Option<xep_support::stream_mgmt::StreamMgmt>,
    pub csi: Option<xep_support::client_state::ClientState>,
    pub ping: Option<xep_support::ping::Ping>,
}

impl Live {
    /// Load certificates and build modules for `config`. Returns the warnings
    /// to log (module and certificate notes).
    pub fn build(config: Config) -> Result<(Live, Vec<String>), String> {
        let mut warnings = config.warnings.clone();
        let (tls, tls_warnings) = TlsSetup::load(
            &config.effective_certfiles(),
            &config.hosts,
            &config.data_dir,
        )
        .map_err(|e| e.to_string())?;
        warnings.extend(tls_warnings);
        let (s2s_tls, s2s_warnings) =
            crate::s2s::tls::S2sTls::new(tls.clone(), config.s2s.cafile.as_deref())?;
        warnings.extend(s2s_warnings);
        let globals = xep_support::module::Globals {
            registration_timeout: config.registration_timeout,
            data_dir: config.data_dir.clone(),
        };
        let (modules, module_warnings) = xep_support::registry::build(&config.modules, &globals);
        for (module, message) in module_warnings {
            warnings.push(config.module_warning(&module, &message));
        }
        let mut iq_handlers: HashMap<&'static str, Arc<dyn Module>> = HashMap::new();
        let mut pre_auth_handlers: HashMap<&'static str, Arc<dyn Module>> = HashMap::new();
        let mut account_iq_handlers: HashMap<&'static str, Arc<dyn Module>> = HashMap::new();
        for m in &modules {
            for ns in m.server_iq_namespaces() {
                iq_handlers.insert(ns, m.clone());
            }
            for ns in m.pre_auth_iq_namespaces() {
                pre_auth_handlers.insert(ns, m.clone());
            }
            for ns in m.account_iq_namespaces() {
                account_iq_handlers.insert(ns, m.clone());
            }
        }
        let filters: Vec<Arc<dyn Module>> = modules
            .iter()
            .filter(|m| m.has_filters())
            .cloned()
            .collect();
        let mut services: HashMap<String, (Arc<dyn Module>, String)> = HashMap::new();
        for m in &modules {
            for (domain, host) in m.service_domains(&config.hosts) {
                let component = config
                    .listen
                    .iter()
                    .any(|l| l.service_hosts.iter().any(|h| h.domain == domain));
                if config.hosts.contains(&domain) || component || services.contains_key(&domain) {
                    warnings.push(config.module_warning(
                        m.name(),
                        &format!("service domain {domain} is already a served host, a component or another module's service; the module does not serve it"),
                    ));
                    continue;
                }
                services.insert(domain, (m.clone(), host));
            }
        }
        fn typed<T: Clone + 'static>(modules: &[Arc<dyn Module>]) -> Option<T> {
            modules
                .iter()
                .find_map(|m| m.as_any().and_then(|a| a.downcast_ref::<T>()).cloned())
        }
        Ok((
            Live {
                starttls_acceptor: tls.acceptor(&[]),
                direct_tls_acceptor: tls.acceptor(&[b"xmpp-client"]),
                tls,
                s2s_tls: Arc::new(s2s_tls),
                config: Arc::new(config),
                sm: typed(&modules),
                csi: typed(&modules),
                ping: typed(&modules),
                modules,
                iq_handlers,
                pre_auth_handlers,
                account_iq_handlers,
                filters,
                services,
            },
            warnings,
        ))
    }

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

    /// The module serving `domain` as a service of its own (mod_muc).
    pub fn service_module(&self, domain: &str) -> Option<&Arc<dyn Module>> {
        self.services.get(domain).map(|(m, _)| m)
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

/// Everything the connections share.
pub struct Server {
    live: RwLock<Arc<Live>>,
    /// Batches the flushes that make offline messages durable (one fsync
    /// for every message stored meanwhile), off the runtime's threads.
    pub group_commit: Arc<crate::storage::group_commit::GroupCommit>,
    /// Federation: outgoing connections, incoming streams, s2s TLS.
    pub s2s: crate::s2s::S2s,
    /// XEP-0114 external components connected now.
    pub components: crate::component::Components,
    pub storage: Arc<dyn Storage>,
    /// The modules' view of `storage` (`ctx.store(MODULE)`).
    module_data: crate::storage::modules::ModuleAccess,
    /// The message archives (XEP-0313), written off the routing path.
    pub archive: Arc<dyn crate::storage::ArchiveEngine>,
    pub router: Router,
    /// Rosters of accounts with sessions (RFC 6121), written through to storage.
    pub rosters: crate::im::roster::RosterCache,
    /// Per-account locks ordering offline storage against draining it.
    pub account_locks: crate::im::offline::AccountLocks,
    shutdown: watch::Sender<bool>,
    started: Instant,
    /// Connections open now (negotiating or bound).
    pub connections: AtomicUsize,
    auth_failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
    /// XEP-0198 resumable sessions by resumption id.
    resumable: Mutex<HashMap<String, Arc<crate::router::SessionHandle>>>,
    /// Recently ended resumable sessions (id, account, inbound count), so a
    /// late `<resume/>` learns which of its stanzas arrived (`<failed h=…/>`).
    expired: Mutex<std::collections::VecDeque<(String, String, u32)>>,
    /// This server, for hooks that must spawn routing work.
    this: std::sync::OnceLock<std::sync::Weak<Server>>,
    /// The `rookery ctl` command environment (also behind XEP-0050 commands).
    ctl_env: std::sync::OnceLock<Arc<CtlEnv>>,
}

impl Server {
    /// This server as an `Arc` (for spawning tasks); `None` while it is dropped.
    pub fn arc(&self) -> Option<Arc<Server>> {
        self.this.get().and_then(std::sync::Weak::upgrade)
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

    /// The module answering iqs with this payload namespace.
    pub fn module_for(&self, ns: &str) -> Option<Arc<dyn Module>> {
        self.live().module_for(ns).cloned()
    }

    /// The module answering iqs to accounts with this payload namespace.
    pub fn account_module_for(&self, ns: &str) -> Option<Arc<dyn Module>> {
        self.live().account_module_for(ns).cloned()
    }

    /// Load the certificates again (same configuration and modules) and
    /// swap them in; on error the current ones stay.
    pub fn reload_certificates(&self) -> Result<(), String> {
        let old = self.live();
        let config = &old.config;
        let (tls, warnings) = TlsSetup::load(
            &config.effective_certfiles(),
            &config.hosts,
            &config.data_dir,
        )
        .map_err(|e| e.to_string())?;
        for w in &warnings {
            tracing::warn!("{w}");
        }
        let s2s_tls = Arc::new(old.s2s_tls.with_setup(tls.clone())?);
        let live = Live {
            config: old.config.clone(),
            starttls_acceptor: tls.acceptor(&[]),
            direct_tls_acceptor: tls.acceptor(&[b"xmpp-client"]),
            tls,
            s2s_tls,
            modules: old.modules.clone(),
            iq_handlers: old.iq_handlers.clone(),
            pre_auth_handlers: old.pre_auth_handlers.clone(),
            account_iq_handlers: old.account_iq_handlers.clone(),
            filters: old.filters.clone(),
            services: old.services.clone(),
            sm: old.sm.clone(),
            csi: old.csi.clone(),
            ping: old.ping.clone(),
        };
        *self.live.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(live);
        Ok(())
    }

    /// Re-read the configuration file and swap it in. On any error the
    /// running configuration stays. Returns what to tell the admin.
    pub fn reload_config(&self) -> Result<String, String> {
        let old = self.live();
        let Some(path) = old.config.source.clone() else {
            return Err(
                "the server runs with the built-in configuration (no -c FILE): nothing to reload"
                    .into(),
            );
        };
        let new = Config::load(&path).map_err(|e| {
            format!("{e}\nThe configuration was not reloaded; the old one stays in effect.")
        })?;
        let mut notes = Vec::new();
        let restart_only = [
            (
                "listen",
                format!("{:?}", old.config.listen) != format!("{:?}", new.listen),
            ),
            ("data_dir", old.config.data_dir != new.data_dir),
            ("ctl_socket", old.config.ctl_socket != new.ctl_socket),
            ("loglevel", old.config.loglevel != new.loglevel),
        ];
        for (key, changed) in restart_only {
            if changed {
                notes.push(format!(
                    "{}: `{key}` changed; it takes effect only after a restart",
                    path.display()
                ));
            }
        }
        let (live, warnings) = Live::build(new).map_err(|e| {
            format!("{e}\nThe configuration was not reloaded; the old one stays in effect.")
        })?;
        // Keep what only a restart changes, so the running state stays true.
        let mut config = (*live.config).clone();
        config.listen = old.config.listen.clone();
        config.data_dir = old.config.data_dir.clone();
        config.ctl_socket = old.config.ctl_socket.clone();
        config.loglevel = old.config.loglevel;
        let live = Live {
            config: Arc::new(config),
            ..live
        };
        for w in &warnings {
            tracing::warn!("{w}");
        }
        *self.live.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(live);
        tracing::info!("configuration reloaded from {}", path.display());
        let mut text = format!("Configuration reloaded from {}", path.display());
        for n in notes.iter().chain(warnings.iter()) {
            text.push_str("\nwarning: ");
            text.push_str(n);
        }
        Ok(text)
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
    pub fn remember_resumable(&self, id: &str, handle: Arc<crate::router::SessionHandle>) {
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
    pub fn resumable(&self, id: &str) -> Option<Arc<crate::router::SessionHandle>> {
        let t = self.resumable.lock().unwrap_or_else(|e| e.into_inner());
        t.get(id).cloned()
    }

    /// Wait until the archive appends `session` caused (its messages, in
    /// its own and its peers' archives) are on disk: before the session
    /// acknowledges anything (XEP-0198 `<a/>`, `<resumed/>`) or handles an
    /// iq, so nothing acknowledged is lost to a crash. Returns at once when
    /// they already are (the usual case: the archive flushes within 200 ms).
    pub async fn archive_durable(&self, session: &crate::router::SessionHandle) {
        let t = session
            .archive_ticket
            .load(std::sync::atomic::Ordering::Relaxed);
        if t == 0 {
            return;
        }
        if let Err(e) = self.archive.durable(t).await {
            tracing::error!(jid = %session.jid, "archive writes of the session: {e}");
        }
    }

    /// Forget failures of an address that authenticated.
    pub fn auth_succeeded(&self, ip: IpAddr) {
        let mut table = self.auth_failures.lock().unwrap_or_else(|e| e.into_inner());
        table.remove(&ip);
    }
}

impl ServerContext for Server {
    fn hosts(&self) -> Vec<String> {
        self.config().hosts.clone()
    }

    fn disco_features(&self) -> Vec<String> {
        // Core features (docs/features.md), then those of the enabled modules.
        let mut f: Vec<String> = CORE_DISCO_FEATURES.iter().map(|s| s.to_string()).collect();
        f.extend(
            self.live()
                .modules
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
        ids.extend(
            self.live()
                .modules
                .iter()
                .flat_map(|m| m.disco_identities()),
        );
        ids
    }

    fn disco_items(&self, host: &str) -> Vec<String> {
        let mut items = self.components.connected();
        items.extend(self.live().services_of(host));
        items
    }

    fn disco_forms(&self) -> Vec<Element> {
        self.live()
            .modules
            .iter()
            .flat_map(|m| m.disco_forms())
            .collect()
    }

    fn route(&self, stanza: Element) {
        // Modules run synchronously; their stanzas are routed on a task of their own.
        if let Some(server) = self.this.get().and_then(std::sync::Weak::upgrade) {
            tokio::spawn(async move { crate::delivery::route(&server, stanza).await });
        }
    }

    fn route_ordered(&self, stanzas: Vec<Element>) {
        if stanzas.is_empty() {
            return;
        }
        if let Some(server) = self.this.get().and_then(std::sync::Weak::upgrade) {
            tokio::spawn(async move {
                for s in stanzas {
                    crate::delivery::route(&server, s).await;
                }
            });
        }
    }

    fn route_unfiltered(&self, stanza: Element) {
        if let Some(server) = self.this.get().and_then(std::sync::Weak::upgrade) {
            tokio::spawn(async move { crate::delivery::route_unfiltered(&server, stanza).await });
        }
    }

    fn account_disco_features(&self) -> Vec<String> {
        let mut f: Vec<String> = self
            .live()
            .modules
            .iter()
            .flat_map(|m| m.account_disco_features())
            .map(str::to_string)
            .collect();
        f.sort();
        f.dedup();
        f
    }

    fn account_disco_identities(&self) -> Vec<Identity> {
        let mut ids = vec![Identity {
            category: "account".into(),
            kind: "registered".into(),
            name: None,
        }];
        ids.extend(
            self.live()
                .modules
                .iter()
                .flat_map(|m| m.account_disco_identities()),
        );
        ids
    }

    fn account_disco_items(&self, account: &BareJid, from: &Jid) -> Vec<Element> {
        self.live()
            .modules
            .iter()
            .flat_map(|m| m.account_disco_items(self, account, from))
            .collect()
    }

    fn account_exists(&self, account: &BareJid) -> bool {
        !self.router.sessions_of(account).is_empty()
            || crate::delivery::account_exists(self, account)
    }

    fn subscription(&self, owner: &BareJid, contact: &BareJid) -> ModSubscription {
        match self.rosters.item(self, owner, contact.as_str()) {
            Some(item) => mod_sub(&item.subscription),
            None => ModSubscription::None,
        }
    }

    fn roster_contacts(&self, owner: &BareJid) -> Vec<(BareJid, ModSubscription)> {
        let entry = |i: &crate::storage::RosterItem| {
            Some((BareJid::new(&i.jid).ok()?, mod_sub(&i.subscription)))
        };
        if self.router.sessions_of(owner).is_empty() {
            // Not cached (no session): read it without caching.
            self.storage
                .roster_get(owner.into())
                .unwrap_or_default()
                .iter()
                .filter_map(entry)
                .collect()
        } else {
            self.rosters
                .get(self, owner)
                .values()
                .filter_map(entry)
                .collect()
        }
    }

    fn sessions(&self, account: &BareJid) -> Vec<ModSessionInfo> {
        self.router
            .sessions_of(account)
            .iter()
            .map(|s| ModSessionInfo {
                jid: s.jid.clone(),
                available: s.available.load(Ordering::Relaxed),
                priority: s.priority.load(Ordering::Relaxed),
                presence: s
                    .last_presence
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone(),
                detached: s.detached.load(Ordering::Relaxed),
            })
            .collect()
    }

    fn has_sessions(&self, account: &BareJid) -> bool {
        self.router.has_sessions(account)
    }

    fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    fn parse_xml(&self, xml: &str) -> Option<Element> {
        crate::storage::stanza_codec::parse_stanza(xml)
    }

    fn module_data(&self) -> &dyn xep_support::store::ModuleData {
        &self.module_data
    }

    fn archive(&self) -> Option<&dyn xep_support::archive::ArchiveStore> {
        Some(self.archive.as_ref())
    }

    fn parse_stored_xml(&self, xml: &str, owner: &str) -> Option<Element> {
        crate::storage::stanza_codec::parse_stored(xml, Some(owner))
    }

    fn access_allows(&self, rule: &str, user: Option<(&str, &str)>, ip: Option<IpAddr>) -> bool {
        self.config().access_allows(rule, user, ip)
    }

    fn acl_matches(&self, acl: &str, user: Option<(&str, &str)>, ip: Option<IpAddr>) -> bool {
        self.config().acl_matches(acl, user, ip)
    }

    fn create_account(&self, user: &str, host: &str, password: &str) -> Result<(), AccountError> {
        if !self.serves(host) {
            return Err(AccountError::Invalid(format!("{host} is not served here")));
        }
        let user = jid::NodePart::new(user)
            .map_err(|e| AccountError::Invalid(format!("invalid user name: {e}")))?;
        let creds = StoredCredentials::derive(password, self.config().scram_iterations)
            .map_err(|e| AccountError::Invalid(e.to_string()))?;
        match self
            .storage
            .create_user(AccountKey::new(host, user.as_str()), &creds)
        {
            Ok(()) => Ok(()),
            Err(StorageError::AlreadyExists) => Err(AccountError::Exists),
            Err(e) => Err(AccountError::Failed(e.to_string())),
        }
    }

    fn change_password(&self, user: &str, host: &str, password: &str) -> Result<(), AccountError> {
        let creds = StoredCredentials::derive(password, self.config().scram_iterations)
            .map_err(|e| AccountError::Invalid(e.to_string()))?;
        match self
            .storage
            .set_credentials(AccountKey::new(host, user), &creds)
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(AccountError::NotFound),
            Err(e) => Err(AccountError::Failed(e.to_string())),
        }
    }

    fn remove_account(&self, user: &str, host: &str) -> Result<(), AccountError> {
        match self.storage.delete_user(AccountKey::new(host, user)) {
            Ok(true) => {}
            Ok(false) => return Err(AccountError::NotFound),
            Err(e) => return Err(AccountError::Failed(e.to_string())),
        }
        // The module's reply is queued right after this returns; close the
        // sessions a moment later so the reply goes out first.
        if let (Some(server), Ok(bare)) = (
            self.this.get().and_then(std::sync::Weak::upgrade),
            jid::BareJid::new(&format!("{user}@{host}")),
        ) {
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                for s in server.router.sessions_of(&bare) {
                    s.close(Some(StreamCondition::NotAuthorized));
                    server.router.unbind(&s);
                }
                server.rosters.evict(&bare);
            });
        }
        Ok(())
    }

    fn run_command(&self, name: &str, args: &[String]) -> CommandOutcome {
        let Some(env) = self.ctl_env.get() else {
            return CommandOutcome {
                code: 1,
                output: "the command registry is not ready".into(),
            };
        };
        // Commands block (password hashing, the database, waiting for
        // routing): keep them off the async worker's hot loop.
        let out = tokio::task::block_in_place(|| crate::ctl::execute(env, name, args));
        CommandOutcome {
            code: out.code,
            output: out.output,
        }
    }

    fn may_run_command(&self, who: &Jid, name: &str) -> bool {
        let Some(node) = who.node() else {
            return false;
        };
        let user = Some((node.as_str(), who.domain().as_str()));
        // `api_permissions`; by default (as ejabberd) the `configure` rule,
        // and `announce` (mod_announce's access) for announcements when
        // defined. An undefined rule denies.
        self.config()
            .api_allows(crate::acl::Frontend::AdHoc, user, None, name)
    }

    fn disco_node_items(&self, from: &FullJid, node: &str) -> Option<Vec<Element>> {
        let live = self.live();
        live.modules
            .iter()
            .find_map(|m| m.disco_node_items(self, from, node))
    }

    fn disco_node_info(&self, from: &FullJid, node: &str) -> Option<(Vec<Identity>, Vec<String>)> {
        let live = self.live();
        live.modules
            .iter()
            .find_map(|m| m.disco_node_info(self, from, node))
    }
}

fn mod_sub(s: &crate::storage::Subscription) -> ModSubscription {
    use crate::storage::Subscription as S;
    match s {
        S::None => ModSubscription::None,
        S::To => ModSubscription::To,
        S::From => ModSubscription::From,
        S::Both => ModSubscription::Both,
    }
}

/// The control interface `rookery ctl` uses on a running server. Its
/// methods run on the blocking pool (the control socket's handler), so they
/// may wait for async work with `rt.block_on`.
struct Control {
    server: Arc<Server>,
    rt: tokio::runtime::Handle,
}

impl Control {
    fn bare(user: &str, host: &str) -> Option<jid::BareJid> {
        jid::BareJid::new(&format!("{user}@{host}")).ok()
    }
}

impl ServerControl for Control {
    fn ctl_allows(&self, command: &str) -> bool {
        self.server
            .config()
            .api_allows(crate::acl::Frontend::Ctl, None, None, command)
    }

    fn connected_users(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .server
            .router
            .all_sessions()
            .iter()
            .map(|s| s.jid.to_string())
            .collect();
        v.sort();
        v
    }

    fn sessions_info(&self) -> Vec<SessionInfo> {
        self.server
            .router
            .all_sessions()
            .iter()
            .map(|s| {
                let (addr, tls) = s
                    .origin
                    .get()
                    .copied()
                    .unwrap_or((SocketAddr::from(([0, 0, 0, 0], 0)), false));
                let presence = s
                    .last_presence
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                let available = s.available.load(Ordering::Relaxed);
                let show = presence
                    .as_ref()
                    .and_then(|p| p.child("show", xep_support::ns::CLIENT).map(|e| e.text()));
                let text = presence
                    .as_ref()
                    .and_then(|p| p.child("status", xep_support::ns::CLIENT).map(|e| e.text()))
                    .unwrap_or_default();
                SessionInfo {
                    jid: s.jid.to_string(),
                    connection: if tls { "c2s_tls" } else { "c2s" }.into(),
                    ip: addr.ip().to_canonical().to_string(),
                    port: addr.port(),
                    priority: s.priority.load(Ordering::Relaxed),
                    uptime: s.since.elapsed().as_secs(),
                    status: match (available, show) {
                        (false, _) => "unavailable".into(),
                        (true, Some(show)) if !show.trim().is_empty() => show.trim().to_string(),
                        (true, _) => "available".into(),
                    },
                    status_text: text,
                }
            })
            .collect()
    }

    fn kick_user(&self, user: &str, host: &str, _reason: &str) -> usize {
        let Some(bare) = Self::bare(user, host) else {
            return 0;
        };
        let sessions = self.server.router.sessions_of(&bare);
        for s in &sessions {
            s.close(Some(StreamCondition::NotAuthorized));
            self.server.router.unbind(s);
        }
        sessions.len()
    }

    fn kick_session(&self, user: &str, host: &str, resource: &str, reason: &str) -> bool {
        let Some(full) = Self::bare(user, host).and_then(|b| b.with_resource_str(resource).ok())
        else {
            return false;
        };
        let Some(session) = self.server.router.session(&full) else {
            return false;
        };
        tracing::info!("kicking {full}: {reason}");
        session.close(Some(StreamCondition::PolicyViolation));
        self.server.router.unbind(&session);
        true
    }

    fn route(&self, stanza: Element) -> Result<(), String> {
        self.rt
            .block_on(crate::delivery::route(&self.server, stanza));
        Ok(())
    }

    fn roster_put(
        &self,
        user: &str,
        host: &str,
        item: crate::storage::RosterItem,
    ) -> Result<(), crate::storage::StorageError> {
        let Some(bare) = Self::bare(user, host) else {
            return Err(crate::storage::StorageError::Io("invalid JID".into()));
        };
        let stored = self.server.rosters.put(&self.server, &bare, item)?;
        let ver = stored.ver;
        let el = crate::im::subscription::roster_item_xml(&stored);
        self.rt
            .block_on(crate::im::roster::push(&self.server, &bare, el, ver));
        Ok(())
    }

    fn roster_remove(
        &self,
        user: &str,
        host: &str,
        contact: &str,
    ) -> Result<bool, crate::storage::StorageError> {
        let Some(bare) = Self::bare(user, host) else {
            return Err(crate::storage::StorageError::Io("invalid JID".into()));
        };
        match self.server.rosters.remove(&self.server, &bare, contact)? {
            Some(ver) => {
                let el = crate::im::subscription::removed_item_xml(contact);
                self.rt
                    .block_on(crate::im::roster::push(&self.server, &bare, el, ver));
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn reload_config(&self) -> Result<String, String> {
        self.server.reload_config()
    }

    fn restored(&self) {
        self.server.rosters.clear();
        for s in self.server.router.all_sessions() {
            s.close(Some(StreamCondition::Reset));
            self.server.router.unbind(&s);
        }
    }

    fn hosts(&self) -> Option<Vec<String>> {
        Some(self.server.config().hosts.clone())
    }

    fn uptime_secs(&self) -> u64 {
        self.server.started.elapsed().as_secs()
    }

    fn stop(&self) {
        self.server.begin_shutdown();
    }

    fn s2s_connections(&self) -> Vec<String> {
        let s2s = &self.server.s2s;
        let mut v: Vec<String> = s2s
            .incoming_connections()
            .iter()
            .map(|c| c.line("in"))
            .chain(s2s.outgoing_connections().iter().map(|c| c.line("out")))
            .collect();
        v.sort();
        v
    }

    fn status(&self) -> String {
        let up = self.server.started.elapsed().as_secs();
        format!(
            "rookery {}: uptime {}s, {} sessions, {} connections",
            env!("CARGO_PKG_VERSION"),
            up,
            self.server.router.count(),
            self.server.connections.load(Ordering::Relaxed)
        )
    }
}

/// Start everything, serve until shutdown, then close every stream and flush storage.
pub async fn run(config: Config) -> Result<(), String> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| format!("cannot create data_dir {}: {e}", config.data_dir.display()))?;
    let (live, warnings) = Live::build(config)?;
    for w in &warnings {
        tracing::warn!("{w}");
    }
    let config = live.config.clone();
    let storage: Arc<dyn Storage> = Arc::new(
        SledStorage::open(&config.data_dir.join("db"))
            .map_err(|e| format!("cannot open the database: {e}"))?,
    );
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

    let (shutdown, _) = watch::channel(false);
    let server = Arc::new(Server {
        live: RwLock::new(Arc::new(live)),
        storage: storage.clone(),
        module_data: crate::storage::modules::ModuleAccess::new(storage.clone()),
        archive: storage.archive(),
        group_commit: crate::storage::group_commit::GroupCommit::start(storage.clone()),
        router: Router::new(),
        rosters: Default::default(),
        account_locks: Default::default(),
        resumable: Mutex::new(HashMap::new()),
        expired: Mutex::new(std::collections::VecDeque::new()),
        s2s: crate::s2s::S2s::new(dialback_secret),
        components: Default::default(),
        shutdown,
        started: Instant::now(),
        connections: AtomicUsize::new(0),
        auth_failures: Mutex::new(HashMap::new()),
        this: std::sync::OnceLock::new(),
        ctl_env: std::sync::OnceLock::new(),
    });
    let _ = server.this.set(Arc::downgrade(&server));

    let env = Arc::new(CtlEnv {
        storage: storage.clone(),
        hosts: config.hosts.clone(),
        scram_iterations: config.scram_iterations,
        server: Some(Arc::new(Control {
            server: server.clone(),
            rt: tokio::runtime::Handle::current(),
        })),
    });
    let _ = server.ctl_env.set(env.clone());
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
    signals.wait(&server).await;
    watcher.abort();
    tracing::info!("shutting down");
    server.begin_shutdown();
    for t in &accept_tasks {
        t.abort();
    }
    for s in server.router.all_sessions() {
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
        match tokio::task::spawn_blocking(move || s.reload_certificates()).await {
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
                    crate::c2s::handle(server, sock, peer, cfg),
                ));
            }
            ListenerModule::S2s => {
                tokio::spawn(counted(
                    server.clone(),
                    crate::s2s::incoming::handle(server, sock, peer, cfg),
                ));
            }
            ListenerModule::Service => {
                tokio::spawn(counted(
                    server.clone(),
                    crate::component::handle(server, sock, peer, cfg),
                ));
            }
            ListenerModule::Http => {
                tokio::spawn(counted(
                    server.clone(),
                    crate::http::handle(server, sock, peer, cfg),
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
