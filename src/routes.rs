//! The route table: for the domain of a stanza's `to`, where the stanza
//! goes — this server's own accounts ([`Route::Local`]), a module's service
//! such as MUC ([`Route::Service`]), a connected external component's queue
//! ([`Route::Link`]), or, for every domain nobody here serves, the s2s
//! manager ([`Route::Remote`]). The router (`router.rs`) asks this table
//! and names no transport: what a link does with a stanza is the link's
//! business (`component/`, `s2s/` implement [`Link`] and register
//! themselves). It is the seam where later transports and a cluster plug
//! in, as `ejabberd_router:register_route` is in ejabberd.
//!
//! Two parts, looked up in this order:
//! - the configured domains ([`Domains`]): served hosts, module service
//!   domains, configured component domains. Replaced whole with each live
//!   snapshot (`Server::new`, `Server::set_live`), never edited in place;
//! - the registered links: a component registers its domain when its
//!   handshake succeeds and unregisters it when its connection ends; the
//!   s2s manager registers once, at start-up, as the route for every domain
//!   not configured here.
//!
//! The cluster (`src/cluster/`) plugs in here too: for an account of a
//! served host with no session on this node, [`Routes::cluster`] says
//! which other nodes hold its resources and forwards a stanza there
//! ([`Cluster`]); the router asks it, and names no transport for it either.
//!
//! Invariants: at most one registered link per domain, removed only by the
//! registration that made it (by id), so a connection that ended late
//! cannot remove its successor's route; a registered link is used only
//! while its domain is configured as a component domain (a component
//! removed from the configuration by a reload stops receiving stanzas, as
//! before the table existed); a served host is always [`Route::Local`],
//! whatever registered; every lock is held for one table operation only,
//! never across an `.await`, and a lookup allocates nothing but the
//! `Arc` clones it returns.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use xep_support::element::Element;
use xep_support::module::Module;
use xep_support::stanza::StanzaError;

/// A stanza a link refused, with the error to return to its sender.
pub type Refused = (Element, StanzaError);

/// What [`Link::send`] returns: done when the link took the stanza (or
/// refused it).
pub type Sending<'a> = Pin<Box<dyn Future<Output = Result<(), Refused>> + Send + 'a>>;

/// Something outside this server's accounts and modules that takes
/// stanzas for a domain: a component's queue, the s2s manager.
pub trait Link: Send + Sync {
    /// Take `stanza` (addressed to `domain`), or give it back with the
    /// error its sender gets. A link that bounces later by itself (s2s,
    /// when a connection fails) returns `Ok`.
    fn send<'a>(&'a self, stanza: Element, domain: &'a str) -> Sending<'a>;
}

/// A future a [`Cluster`] returns.
pub type ClusterFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A resource of an account bound on another node of the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteResource {
    pub resource: String,
    /// The node that holds the session.
    pub node: String,
    pub priority: i32,
    /// Whether it sent available presence.
    pub available: bool,
}

/// The other nodes of a cluster: who holds an account's sessions, and
/// handing a stanza to one of them.
pub trait Cluster: Send + Sync {
    /// The resources of `bare` bound on other nodes that are alive.
    fn remote_resources<'a>(&'a self, bare: &'a str) -> ClusterFuture<'a, Vec<RemoteResource>>;
    /// Hand `stanza` to `node`, which routes it to its own sessions (or
    /// stores it offline, or answers per RFC 6121); `true` once that node
    /// answered, `false` when it did not in time (the caller then handles
    /// the stanza as if the session were gone).
    fn forward<'a>(&'a self, node: &'a str, stanza: &'a Element) -> ClusterFuture<'a, bool>;
    /// Record a session of this node in the cluster's session table
    /// (`full` bound, with its priority and availability); `at_bind`: only
    /// if this node does not hold that resource already (a later presence
    /// change may have been recorded first).
    fn record<'a>(
        &'a self,
        full: &'a str,
        priority: i32,
        available: bool,
        at_bind: bool,
    ) -> ClusterFuture<'a, ()>;
    /// The full JIDs of every session on a live node (this one included),
    /// from the session table.
    fn all_sessions(&self) -> ClusterFuture<'_, Result<Vec<String>, String>>;
    /// The names of the cluster's live nodes.
    fn members(&self) -> ClusterFuture<'_, Result<Vec<String>, String>>;
    /// Remove a session of this node from the cluster's session table.
    fn remove<'a>(&'a self, full: &'a str) -> ClusterFuture<'a, ()>;
    /// Tell the other nodes holding resources of `bare` what a session of
    /// it did here ([`OwnEvent`]); what they answer (for an initial
    /// presence: their available resources' last presence, addressed to
    /// the new session) is returned, to be delivered here.
    fn to_own_resources<'a>(
        &'a self,
        bare: &'a str,
        event: OwnEvent<'a>,
    ) -> ClusterFuture<'a, Vec<Element>>;
    /// Hand `stanza` to the node that owns `name` (a MUC room's bare JID,
    /// a component's domain; see [`Owned`]). A room with no live owner is
    /// claimed for this node; a component domain never is.
    fn to_owner<'a>(
        &'a self,
        kind: OwnerKind,
        name: &'a str,
        stanza: &'a Element,
    ) -> ClusterFuture<'a, Owned>;
    /// Claim `name` for connection `id` of this node (a component
    /// connected here), or release it if that connection's claim is still
    /// the one recorded. A claim fails, with the holder's name, while
    /// another live node holds `name` (a release never fails).
    fn claim<'a>(
        &'a self,
        kind: OwnerKind,
        name: &'a str,
        id: u64,
        on: bool,
    ) -> ClusterFuture<'a, Result<(), String>>;
    /// Run a node-local command (`kick_user`, `kick_session`,
    /// `leave_cluster`: the command's name, then its arguments) on every
    /// other live node, or on the one node named by `leave_cluster NODE`:
    /// (node, answer) for each that answered.
    fn on_other_nodes<'a>(
        &'a self,
        command: &'a [String],
    ) -> ClusterFuture<'a, Result<Vec<(String, String)>, String>>;
}

/// What a session of an account did that the account's resources on other
/// nodes must see (`Cluster::to_own_resources`).
#[derive(Clone, Copy, Debug)]
pub enum OwnEvent<'a> {
    /// A presence broadcast from the session (available, or unavailable,
    /// its `from` the session's full JID); `initial`: its first available
    /// one, which the other nodes answer with their resources' presence.
    Presence { stanza: &'a Element, initial: bool },
    /// A message the session `from` sent (XEP-0280 `<sent/>` copies).
    Sent { stanza: &'a Element, from: &'a str },
    /// A message delivered here to `delivered_to` (XEP-0280 `<received/>`
    /// copies for the resources elsewhere).
    Received {
        stanza: &'a Element,
        delivered_to: &'a [String],
    },
}

/// What [`Cluster::to_owner`] names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnerKind {
    /// A MUC room (`room@conference.HOST`): one owner node per room.
    Room,
    /// An external component's domain: the node it is connected to.
    Component,
}

/// Where [`Cluster::to_owner`] left a stanza.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owned {
    /// This node owns it: handle the stanza here.
    Here,
    /// This node just claimed it (a room that was free, or whose owner is
    /// dead): handle the stanza here once what memory held of it was read
    /// again from storage.
    Claimed,
    /// The owner node took the stanza.
    Taken,
    /// Nobody owns it (a component connected to no live node).
    Nobody,
    /// The owner is alive but did not answer in time.
    Unreachable,
}

/// Where stanzas to one domain go.
pub enum Route {
    /// A host this server serves: the server itself and its accounts.
    Local,
    /// A module's own service domain (mod_muc's `conference.HOST`).
    Service(Arc<dyn Module>),
    /// A connected external component.
    Link(Arc<dyn Link>),
    /// A component domain of the configuration with no component connected.
    Unavailable,
    /// Another server's domain: the s2s manager.
    Remote(Arc<dyn Link>),
    /// Another server's domain, and no s2s manager registered.
    Unreachable,
}

/// What the configuration says about one domain.
#[derive(Clone)]
enum Configured {
    Host,
    Service(Arc<dyn Module>),
    Component,
}

/// The configured domains of one live snapshot.
#[derive(Clone, Default)]
pub struct Domains {
    map: HashMap<String, Configured>,
}

impl Domains {
    /// The configured domains: served hosts, component domains, module
    /// service domains. A served host wins over a component domain of the
    /// same name (its handshake is refused); service domains never overlap
    /// either (`serve::live` refuses those).
    pub fn new<'a>(
        hosts: impl IntoIterator<Item = &'a String>,
        components: impl IntoIterator<Item = &'a String>,
        services: impl IntoIterator<Item = (&'a String, &'a Arc<dyn Module>)>,
    ) -> Domains {
        let mut map = HashMap::new();
        for c in components {
            map.insert(c.clone(), Configured::Component);
        }
        for h in hosts {
            map.insert(h.clone(), Configured::Host);
        }
        for (d, m) in services {
            map.entry(d.clone())
                .or_insert_with(|| Configured::Service(m.clone()));
        }
        Domains { map }
    }
}

/// One registered link and the registration that owns it.
struct Registered {
    link: Arc<dyn Link>,
    id: u64,
}

/// The route table (see the file's header).
#[derive(Default)]
pub struct Routes {
    domains: RwLock<Arc<Domains>>,
    links: RwLock<HashMap<String, Registered>>,
    remote: OnceLock<Arc<dyn Link>>,
    cluster: OnceLock<Arc<dyn Cluster>>,
    next_id: AtomicU64,
}

impl Routes {
    /// Where stanzas to `domain` go.
    pub fn resolve(&self, domain: &str) -> Route {
        let domains = self.domains.read().unwrap_or_else(|e| e.into_inner());
        match domains.map.get(domain) {
            Some(Configured::Host) => Route::Local,
            Some(Configured::Service(m)) => Route::Service(m.clone()),
            Some(Configured::Component) => {
                let links = self.links.read().unwrap_or_else(|e| e.into_inner());
                match links.get(domain) {
                    Some(r) => Route::Link(r.link.clone()),
                    None => Route::Unavailable,
                }
            }
            None => match self.remote.get() {
                Some(l) => Route::Remote(l.clone()),
                None => Route::Unreachable,
            },
        }
    }

    /// Replace the configured domains (a new live snapshot).
    pub fn set_domains(&self, domains: Domains) {
        *self.domains.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(domains);
    }

    /// Register `link` for `domain`; the registration's id, or `None` when
    /// the domain has a link already.
    pub fn register(&self, domain: &str, link: Arc<dyn Link>) -> Option<u64> {
        let mut links = self.links.write().unwrap_or_else(|e| e.into_inner());
        if links.contains_key(domain) {
            return None;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        links.insert(domain.to_string(), Registered { link, id });
        Some(id)
    }

    /// Remove `domain`'s link, if registration `id` still owns it.
    pub fn unregister(&self, domain: &str, id: u64) {
        let mut links = self.links.write().unwrap_or_else(|e| e.into_inner());
        if links.get(domain).is_some_and(|r| r.id == id) {
            links.remove(domain);
        }
    }

    /// The domains with a registered link, sorted.
    pub fn linked(&self) -> Vec<String> {
        let links = self.links.read().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<String> = links.keys().cloned().collect();
        v.sort();
        v
    }

    /// The registration id of `domain`'s link, if one is registered.
    pub fn link_id(&self, domain: &str) -> Option<u64> {
        let links = self.links.read().unwrap_or_else(|e| e.into_inner());
        links.get(domain).map(|r| r.id)
    }

    /// Register the route for domains not configured here (the s2s
    /// manager); only the first registration counts.
    pub fn set_remote(&self, link: Arc<dyn Link>) {
        let _ = self.remote.set(link);
    }

    /// Join a cluster (once, at start-up).
    pub fn set_cluster(&self, cluster: Arc<dyn Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    /// The cluster this node belongs to, if any.
    pub fn cluster(&self) -> Option<&Arc<dyn Cluster>> {
        self.cluster.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Sink;
    impl Link for Sink {
        fn send<'a>(&'a self, _: Element, _: &'a str) -> Sending<'a> {
            Box::pin(std::future::ready(Ok(())))
        }
    }

    fn kind(r: Route) -> &'static str {
        match r {
            Route::Local => "local",
            Route::Service(_) => "service",
            Route::Link(_) => "link",
            Route::Unavailable => "unavailable",
            Route::Remote(_) => "remote",
            Route::Unreachable => "unreachable",
        }
    }

    #[test]
    fn resolves_by_configuration_then_registration() {
        let routes = Routes::default();
        let hosts = vec!["a.test".to_string(), "both.test".to_string()];
        let comps = vec!["gw.a.test".to_string(), "both.test".to_string()];
        routes.set_domains(Domains::new(&hosts, &comps, std::iter::empty()));
        assert_eq!(kind(routes.resolve("a.test")), "local");
        assert_eq!(kind(routes.resolve("both.test")), "local");
        assert_eq!(kind(routes.resolve("gw.a.test")), "unavailable");
        assert_eq!(kind(routes.resolve("elsewhere.test")), "unreachable");
        routes.set_remote(Arc::new(Sink));
        assert_eq!(kind(routes.resolve("elsewhere.test")), "remote");

        let id = routes.register("gw.a.test", Arc::new(Sink)).unwrap();
        assert!(routes.register("gw.a.test", Arc::new(Sink)).is_none());
        assert_eq!(kind(routes.resolve("gw.a.test")), "link");
        assert_eq!(routes.linked(), vec!["gw.a.test".to_string()]);
        // A stale registration does not remove its successor's route.
        routes.unregister("gw.a.test", id + 1);
        assert_eq!(kind(routes.resolve("gw.a.test")), "link");
        routes.unregister("gw.a.test", id);
        assert_eq!(kind(routes.resolve("gw.a.test")), "unavailable");

        // A link whose domain is no longer configured gets nothing.
        routes.register("old.test", Arc::new(Sink)).unwrap();
        assert_eq!(kind(routes.resolve("old.test")), "remote");
    }
}
