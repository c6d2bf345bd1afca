//! The ctl adapter: how a running server carries out `rookery ctl`
//! commands ([`crate::ctl::commands::ServerControl`]) — sessions, kicks,
//! routing, roster edits with pushes, reloads, s2s listings, status, stop.
//!
//! Invariants: its methods run on the blocking pool (the control socket's
//! handler), never on a runtime worker, so they may wait for async work
//! with `rt.block_on`; a change made here (kick, roster edit, restore)
//! leaves the session table and the roster cache consistent with storage.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use xep_support::element::Element;

use crate::ctl::commands::{ServerControl, SessionInfo};
use crate::server::Server;
use crate::stream::StreamCondition;

/// The control interface `rookery ctl` uses on a running server. Its
/// methods run on the blocking pool (the control socket's handler), so they
/// may wait for async work with `rt.block_on`.
pub struct Control {
    pub server: Arc<Server>,
    pub rt: tokio::runtime::Handle,
}

impl Control {
    /// Run `f` on the enabled `mod_invites`, if any.
    fn with_invites<T>(&self, f: impl FnOnce(&xep_support::invites::Invites) -> T) -> Option<T> {
        let live = self.server.live();
        live.modules
            .iter()
            .find_map(|m| m.as_any()?.downcast_ref::<xep_support::invites::Invites>())
            .map(f)
    }

    /// Run a node-local command on the cluster's other nodes: their
    /// answers (none without a cluster, or when NATS cannot say).
    fn on_other_nodes(&self, command: &[&str]) -> Vec<(String, String)> {
        let Some(cluster) = self.server.routes.cluster() else {
            return Vec::new();
        };
        let command: Vec<String> = command.iter().map(|s| s.to_string()).collect();
        match self.rt.block_on(cluster.on_other_nodes(&command)) {
            Ok(answers) => answers,
            Err(e) => {
                tracing::warn!("{}: the other nodes cannot be asked ({e})", command[0]);
                Vec::new()
            }
        }
    }

    fn bare(user: &str, host: &str) -> Option<jid::BareJid> {
        jid::BareJid::new(&format!("{user}@{host}")).ok()
    }
}

impl ServerControl for Control {
    fn ctl_allows(&self, command: &str) -> bool {
        self.server
            .config()
            .api_allows(crate::config::acl::Frontend::Ctl, None, None, command)
    }

    fn list_cluster(&self) -> Result<Option<Vec<String>>, String> {
        let Some(cluster) = self.server.routes.cluster() else {
            return Ok(None);
        };
        self.rt.block_on(cluster.members()).map(Some)
    }

    fn connected_users(&self) -> Vec<String> {
        let mut v = self.connected_users_node();
        if let Some(cluster) = self.server.routes.cluster() {
            // Every node's sessions, from the cluster's session table (this
            // node's own are listed from memory even if the table lags).
            match self.rt.block_on(cluster.all_sessions()) {
                Ok(all) => v.extend(all),
                Err(e) => tracing::warn!(
                    "connected_users: the cluster cannot say ({e}); this node's sessions only"
                ),
            }
            v.sort();
            v.dedup();
        }
        v
    }

    fn connected_users_node(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .server
            .sessions
            .all_sessions()
            .iter()
            .map(|s| s.jid.to_string())
            .collect();
        v.sort();
        v
    }

    fn sessions_info(&self) -> Vec<SessionInfo> {
        let node = self.cluster_node();
        let mut rows: Vec<SessionInfo> = self
            .server
            .sessions
            .all_sessions()
            .iter()
            .map(|s| crate::session_info::of(s, node.as_deref()))
            .collect();
        // And the other nodes' sessions, each with its node's name.
        for (node, answer) in self.on_other_nodes(&["sessions_info"]) {
            match serde_json::from_str::<Vec<SessionInfo>>(&answer) {
                Ok(theirs) => rows.extend(theirs.into_iter().map(|mut r| {
                    r.node = Some(node.clone());
                    r
                })),
                Err(e) => tracing::warn!("sessions_info: node {node} answered unreadably: {e}"),
            }
        }
        rows
    }

    fn kick_user(&self, user: &str, host: &str, _reason: &str) -> usize {
        let Some(bare) = Self::bare(user, host) else {
            return 0;
        };
        crate::c2s::revoke_fast_tokens(&self.server, user, host);
        let sessions = self.server.sessions.sessions_of(&bare);
        for s in &sessions {
            s.close(Some(StreamCondition::NotAuthorized));
            self.server.sessions.unbind(s);
        }
        // And the account's sessions on the other nodes of a cluster.
        let elsewhere: usize = self
            .on_other_nodes(&["kick_user", user, host])
            .iter()
            .filter_map(|(_, n)| n.parse::<usize>().ok())
            .sum();
        sessions.len() + elsewhere
    }

    fn kick_session(&self, user: &str, host: &str, resource: &str, reason: &str) -> bool {
        let Some(full) = Self::bare(user, host).and_then(|b| b.with_resource_str(resource).ok())
        else {
            return false;
        };
        let Some(session) = self.server.sessions.session(&full) else {
            // On another node of a cluster, maybe.
            let asked = ["kick_session", user, host, resource, reason];
            let kicked = self.on_other_nodes(&asked).iter().any(|(_, a)| a == "1");
            if kicked {
                crate::c2s::revoke_fast_tokens(&self.server, user, host);
            }
            return kicked;
        };
        tracing::info!("kicking {full}: {reason}");
        // XEP-0484: a kicked client logs in with its password again.
        crate::c2s::revoke_fast_tokens(&self.server, user, host);
        session.close(Some(StreamCondition::PolicyViolation));
        self.server.sessions.unbind(&session);
        true
    }

    fn route(&self, stanza: Element) -> Result<(), String> {
        self.rt.block_on(crate::router::route(&self.server, stanza));
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
        let stored = self.server.rosters.put(self.server.as_ref(), &bare, item)?;
        let ver = stored.ver;
        let el = crate::im::subscription::roster_item_xml(&stored);
        let pushes = crate::im::roster::push_outs(&self.server, &bare, el, ver);
        self.rt
            .block_on(crate::router::perform(&self.server, pushes));
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
        match self
            .server
            .rosters
            .remove(self.server.as_ref(), &bare, contact)?
        {
            Some(ver) => {
                let el = crate::im::subscription::removed_item_xml(contact);
                let pushes = crate::im::roster::push_outs(&self.server, &bare, el, ver);
                self.rt
                    .block_on(crate::router::perform(&self.server, pushes));
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn reload_config(&self) -> Result<String, String> {
        super::live::reload_config(&self.server)
    }

    fn restored(&self) {
        self.server.rosters.clear();
        for s in self.server.sessions.all_sessions() {
            s.close(Some(StreamCondition::Reset));
            self.server.sessions.unbind(&s);
        }
    }

    fn hosts(&self) -> Option<Vec<String>> {
        Some(self.server.config().hosts.clone())
    }

    fn uptime_secs(&self) -> u64 {
        self.server.uptime().as_secs()
    }

    fn stop(&self) {
        self.server.begin_shutdown();
    }

    fn cluster_node(&self) -> Option<String> {
        self.server
            .config()
            .cluster
            .as_ref()
            .map(|c| c.node.clone())
    }

    fn ask_to_leave(&self, node: &str) -> Result<(), String> {
        let Some(cluster) = self.server.routes.cluster() else {
            return Err("not clustered".into());
        };
        let command = vec!["leave_cluster".to_string(), node.to_string()];
        let answers = self.rt.block_on(cluster.on_other_nodes(&command))?;
        match answers.first() {
            Some((_, a)) if a == "leaving" => Ok(()),
            Some((_, a)) => Err(format!("node {node} answered: {a}")),
            None => Err(format!("node {node} did not answer")),
        }
    }

    fn invite_landing_url(
        &self,
        invite: &xep_support::invites::token::Invite,
        token: &str,
    ) -> Option<String> {
        self.with_invites(|i| i.landing_url(invite, token))
            .flatten()
    }

    fn invite_expire_secs(&self) -> Option<u64> {
        self.with_invites(|i| i.expire_secs)
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
        let up = self.server.uptime().as_secs();
        format!(
            "rookery {}: uptime {}s, {} sessions, {} connections",
            env!("CARGO_PKG_VERSION"),
            up,
            self.server.sessions.count(),
            self.server.connections.load(Ordering::Relaxed)
        )
    }
}
