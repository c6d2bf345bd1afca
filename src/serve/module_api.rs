//! The module API adapter: how the server implements
//! [`xep_support::module::ServerContext`], the one interface modules see
//! (disco, routing, rosters, sessions, accounts, storage, access rules,
//! ctl commands for XEP-0050).
//!
//! Invariants: module calls are synchronous and never block the runtime on
//! routing — stanzas they route go out on a task of their own (in order for
//! `route_ordered`); commands that block run under `block_in_place`.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use jid::{BareJid, FullJid, Jid};
use xep_support::element::Element;
use xep_support::module::{
    AccountError, CommandOutcome, Identity, ServerContext, SessionInfo as ModSessionInfo,
    Subscription as ModSubscription,
};

use crate::auth::credentials::StoredCredentials;
use crate::server::Server;
use crate::storage::{AccountKey, StorageError};
use crate::stream::StreamCondition;

/// Disco features of the core (not of a module): XEP-0160 offline storage.
const CORE_DISCO_FEATURES: &[&str] = &["msgoffline"];

impl ServerContext for Server {
    fn core(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }

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
        let mut items = self.routes.linked();
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
        if let Some(server) = self.arc() {
            tokio::spawn(async move { crate::router::route(&server, stanza).await });
        }
    }

    fn route_stream(&self, queue: &str, stanzas: xep_support::module::StanzaStream) {
        let Some(server) = self.arc() else {
            return;
        };
        let mut queues = self.stream_queues.lock().unwrap_or_else(|e| e.into_inner());
        let tx = queues.entry(queue.to_string()).or_insert_with(|| {
            let (tx, mut rx) =
                tokio::sync::mpsc::unbounded_channel::<xep_support::module::StanzaStream>();
            // The queue's task holds the server weakly: it ends with it.
            let weak = std::sync::Arc::downgrade(&server);
            tokio::spawn(async move {
                while let Some(stream) = rx.recv().await {
                    let Some(server) = weak.upgrade() else {
                        break;
                    };
                    // One stanza built at a time; a yield every 256 so a
                    // long stream does not hold a runtime thread.
                    for (i, s) in stream.enumerate() {
                        crate::router::route(&server, s).await;
                        if i % 256 == 255 {
                            tokio::task::yield_now().await;
                        }
                    }
                }
            });
            tx
        });
        if tx.send(stanzas).is_err() {
            queues.remove(queue);
        }
    }

    fn route_ordered(&self, stanzas: Vec<Element>) {
        if stanzas.is_empty() {
            return;
        }
        if let Some(server) = self.arc() {
            tokio::spawn(async move {
                for s in stanzas {
                    crate::router::route(&server, s).await;
                }
            });
        }
    }

    fn room_mention_hooks(&self) -> bool {
        !self.live().hooks.room_mention.is_empty()
    }

    fn room_mention(&self, account: &BareJid, msg: &Element) {
        for m in &self.live().hooks.room_mention {
            m.room_mention(self, account, msg);
        }
    }

    fn route_unfiltered(&self, stanza: Element) {
        if let Some(server) = self.arc() {
            tokio::spawn(async move { crate::router::route_unfiltered(&server, stanza).await });
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
        !self.sessions.sessions_of(account).is_empty()
            || crate::router::account_exists(self, account)
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
        if self.sessions.sessions_of(owner).is_empty() {
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
        self.sessions
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
        self.sessions.has_sessions(account)
    }

    fn uptime(&self) -> Duration {
        Server::uptime(self)
    }

    fn parse_xml(&self, xml: &str) -> Option<Element> {
        crate::storage::stanza_codec::parse_stanza(xml)
    }

    fn module_data(&self) -> &dyn xep_support::store::ModuleData {
        self.module_access()
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
        if let (Some(server), Ok(bare)) = (self.arc(), jid::BareJid::new(&format!("{user}@{host}")))
        {
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                for s in server.sessions.sessions_of(&bare) {
                    s.close(Some(StreamCondition::NotAuthorized));
                    server.sessions.unbind(&s);
                }
                server.rosters.evict(&bare);
            });
        }
        Ok(())
    }

    fn run_command(&self, name: &str, args: &[String]) -> CommandOutcome {
        let Some(run) = self.command_runner() else {
            return CommandOutcome {
                code: 1,
                output: "the command registry is not ready".into(),
            };
        };
        // Commands block (password hashing, the database, waiting for
        // routing): keep them off the async worker's hot loop.
        tokio::task::block_in_place(|| run(name, args))
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
            .api_allows(crate::config::acl::Frontend::AdHoc, user, None, name)
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

    fn module_adhoc_nodes(&self, from: &FullJid) -> Vec<(&'static str, &'static str)> {
        let live = self.live();
        live.modules
            .iter()
            .flat_map(|m| m.adhoc_nodes(self, from))
            .collect()
    }

    fn module_adhoc(
        &self,
        req: &xep_support::module::IqRequest<'_>,
    ) -> Option<xep_support::module::IqResult> {
        let live = self.live();
        live.modules.iter().find_map(|m| m.adhoc_execute(self, req))
    }

    fn roster_invite_link(
        &self,
        owner: &BareJid,
        contact: &BareJid,
        mutual: bool,
    ) -> Result<(), AccountError> {
        use crate::storage::{RosterItem, Subscription};
        let _subscriptions = self.rosters.subscription_lock(owner);
        let mut item = self
            .rosters
            .item(self, owner, contact.as_str())
            .unwrap_or(RosterItem {
                jid: contact.to_string(),
                name: None,
                groups: Vec::new(),
                subscription: Subscription::None,
                ask: false,
                approved: false,
                pending_in: false,
                ver: 0,
            });
        if mutual {
            item.subscription = Subscription::Both;
            item.ask = false;
            item.pending_in = false;
            item.approved = false;
        } else if matches!(item.subscription, Subscription::From | Subscription::Both) {
            return Ok(());
        } else {
            item.approved = true;
        }
        let stored = self
            .rosters
            .put(self, owner, item)
            .map_err(|e| AccountError::Failed(e.to_string()))?;
        if let Some(server) = self.arc() {
            let el = crate::im::subscription::roster_item_xml(&stored);
            let pushes = crate::im::roster::push_outs(&server, owner, el, stored.ver);
            tokio::spawn(async move { crate::router::perform(&server, pushes).await });
        }
        Ok(())
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
