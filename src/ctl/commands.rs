//! The one registry of `rookery ctl` commands: their names, arguments, help
//! text, and how each is executed against a [`CtlEnv`].
//!
//! The same [`execute`] runs inside the server (behind the control socket,
//! with a [`ServerControl`]) and in the `rookery ctl` process when the server
//! is stopped (directly on the database, with no server). Exit codes follow
//! ejabberdctl: [`EXIT_OK`], [`EXIT_FAILED`], [`EXIT_USAGE`],
//! [`EXIT_NOT_RUNNING`].

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::auth::credentials::StoredCredentials;
use crate::storage::{AccountKey, RosterItem, Storage, StorageError, Subscription};

/// The command succeeded.
pub const EXIT_OK: i32 = 0;
/// The command ran but failed (user exists, unknown host, bad password...).
pub const EXIT_FAILED: i32 = 1;
/// Unknown command or wrong number of arguments.
pub const EXIT_USAGE: i32 = 2;
/// The command needs a running server and none answers.
pub const EXIT_NOT_RUNNING: i32 = 3;

/// What `status` and server-only commands print when the server is stopped.
pub const NOT_RUNNING: &str = "rookery is not running";

pub use crate::ctl_catalog::{commands, find, CommandSpec};

pub use crate::session_info::SessionInfo;

/// What the running server offers to commands (implemented by the server
/// core).
pub trait ServerControl: Send + Sync {
    /// Full JIDs of the connected sessions (in a cluster: on every node).
    fn connected_users(&self) -> Vec<String>;
    /// Full JIDs of the sessions on this node (ejabberd's `onlineusersnode`).
    fn connected_users_node(&self) -> Vec<String> {
        self.connected_users()
    }
    /// Details of every connected session (in a cluster: on every node).
    fn sessions_info(&self) -> Vec<SessionInfo> {
        Vec::new()
    }
    /// The live nodes of the cluster (`Ok(None)`: not clustered).
    fn list_cluster(&self) -> Result<Option<Vec<String>>, String> {
        Ok(None)
    }
    /// End every session of `user@host`; returns how many were ended.
    fn kick_user(&self, user: &str, host: &str, reason: &str) -> usize;
    /// Whether the running configuration's `api_permissions` lets the
    /// control socket (`rookery ctl`) run `command`.
    fn ctl_allows(&self, _command: &str) -> bool {
        true
    }
    /// End one session; whether it existed.
    fn kick_session(&self, _user: &str, _host: &str, _resource: &str, _reason: &str) -> bool {
        false
    }
    /// Route a stanza that carries its own `from` and `to`.
    fn route(&self, _stanza: xep_support::element::Element) -> Result<(), String> {
        Err("routing is not available".into())
    }
    /// Write a roster item through the server (its roster cache, pushes to
    /// the owner's sessions).
    fn roster_put(&self, _user: &str, _host: &str, _item: RosterItem) -> Result<(), StorageError> {
        Err(StorageError::Io("not available".into()))
    }
    /// Remove a roster item through the server; whether it existed.
    fn roster_remove(
        &self,
        _user: &str,
        _host: &str,
        _contact: &str,
    ) -> Result<bool, StorageError> {
        Err(StorageError::Io("not available".into()))
    }
    /// Re-read the configuration file: the message to print, or why not.
    fn reload_config(&self) -> Result<String, String> {
        Err("not available".into())
    }
    /// The database was replaced (`restore`): forget cached data and end
    /// every session.
    fn restored(&self) {}
    /// The served hosts now (they may change on `reload_config`).
    fn hosts(&self) -> Option<Vec<String>> {
        None
    }
    /// The landing page of an invitation, if `mod_invites` has one.
    fn invite_landing_url(
        &self,
        _invite: &xep_support::invites::token::Invite,
        _token: &str,
    ) -> Option<String> {
        None
    }
    /// `mod_invites`' `token_expire_seconds`, if it is enabled.
    fn invite_expire_secs(&self) -> Option<u64> {
        None
    }
    /// Seconds since the server started.
    fn uptime_secs(&self) -> u64 {
        0
    }
    /// Begin a graceful shutdown.
    fn stop(&self);
    /// This node's name in its cluster (`None`: not clustered).
    fn cluster_node(&self) -> Option<String> {
        None
    }
    /// Ask another live node of the cluster to leave it (and stop).
    fn ask_to_leave(&self, _node: &str) -> Result<(), String> {
        Err("not clustered".into())
    }
    /// A short human summary (uptime, sessions...).
    fn status(&self) -> String;
    /// Authenticated s2s connections, one line each, starting `in ` or `out `
    /// (see `s2s::ConnInfo::line`).
    fn s2s_connections(&self) -> Vec<String> {
        Vec::new()
    }
}

impl CtlEnv {
    /// The served hosts (the running server's current ones, if any).
    pub fn hosts(&self) -> Vec<String> {
        self.server
            .as_ref()
            .and_then(|s| s.hosts())
            .unwrap_or_else(|| self.hosts.clone())
    }
}

/// What a command runs against.
pub struct CtlEnv {
    /// The database.
    pub storage: Arc<dyn Storage>,
    /// The served virtual hosts (normalised, e.g. lowercase).
    pub hosts: Vec<String>,
    /// PBKDF2 iterations for new credentials.
    pub scram_iterations: u32,
    /// The running server, or `None` when `rookery ctl` works offline.
    pub server: Option<Arc<dyn ServerControl>>,
}

/// A command's result: the process exit code and the text to print.
/// Also the wire format of control-socket responses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CtlOutput {
    pub code: i32,
    pub output: String,
}

impl CtlOutput {
    /// Success with `output`.
    pub fn ok(output: impl Into<String>) -> Self {
        CtlOutput {
            code: EXIT_OK,
            output: output.into(),
        }
    }

    /// Failure (exit 1) with a message.
    pub fn failed(output: impl Into<String>) -> Self {
        CtlOutput {
            code: EXIT_FAILED,
            output: output.into(),
        }
    }

    /// Usage error (exit 2) with a message.
    pub fn usage(output: impl Into<String>) -> Self {
        CtlOutput {
            code: EXIT_USAGE,
            output: output.into(),
        }
    }

    /// Server not running (exit 3).
    pub fn not_running(output: impl Into<String>) -> Self {
        CtlOutput {
            code: EXIT_NOT_RUNNING,
            output: output.into(),
        }
    }
}

/// Find the command and check its argument count, without running it.
/// Errors are exit-2 outputs carrying the usage to print.
pub fn precheck(command: &str, args: &[String]) -> Result<&'static CommandSpec, CtlOutput> {
    let Some(spec) = find(command) else {
        return Err(CtlOutput::usage(format!(
            "Unknown command '{command}'\nRun 'rookery ctl help' to list the commands."
        )));
    };
    let (min, max) = spec.arity();
    if args.len() < min || args.len() > max {
        let expected = if min == max {
            format!("{min}")
        } else if max == usize::MAX {
            format!("at least {min}")
        } else {
            format!("{min} to {max}")
        };
        return Err(CtlOutput::usage(format!(
            "Error: '{}' takes {expected} argument{}, {} given\nUsage: {}\n  {}",
            spec.name,
            if max == 1 { "" } else { "s" },
            args.len(),
            spec.usage(),
            spec.help
        )));
    }
    Ok(spec)
}

/// The `help` command: every command, or one command's details.
pub fn help(args: &[String]) -> CtlOutput {
    match args.first() {
        None => CtlOutput::ok(help_all()),
        Some(name) => match find(name) {
            Some(spec) => CtlOutput::ok(help_one(spec)),
            None => CtlOutput::usage(format!(
                "Unknown command '{name}'\nRun 'rookery ctl help' to list the commands."
            )),
        },
    }
}

fn help_all() -> String {
    let lines: Vec<(String, &str)> = commands()
        .iter()
        .map(|c| {
            let mut call = c.name.to_string();
            for arg in c.args {
                call.push(' ');
                call.push_str(arg);
            }
            (call, c.help)
        })
        .collect();
    let width = lines.iter().map(|(call, _)| call.len()).max().unwrap_or(0);
    let mut text = String::from("Usage: rookery ctl [-c FILE] COMMAND [ARGS...]\n\nCommands:\n");
    for (call, help) in lines {
        text.push_str(&format!("  {call:<width$}  {help}\n"));
    }
    text.push_str(
        "\nRun 'rookery ctl help COMMAND' for details of one command.\n\
         Exit codes: 0 success, 1 command failed, 2 wrong arguments or unknown command,\n\
         3 the server is not running (for commands that need it).",
    );
    text
}

fn help_one(spec: &CommandSpec) -> String {
    let when = if spec.needs_server {
        "Needs a running server (exit 3 if it is not running)."
    } else {
        "Works while the server runs (through its control socket) and while it is stopped (on the database)."
    };
    format!("Usage: {}\n\n  {}\n\n  {when}", spec.usage(), spec.help)
}

/// Normalise `host` and check it is served.
pub(super) fn served_host(env: &CtlEnv, host: &str) -> Result<String, CtlOutput> {
    let unknown = || CtlOutput::failed(format!("Unknown virtual host: {host}"));
    let normal = match jid::DomainPart::new(host) {
        Ok(d) => d.as_str().to_string(),
        Err(_) => return Err(unknown()),
    };
    let served = env.hosts().iter().any(|h| {
        jid::DomainPart::new(h)
            .map(|d| d.as_str() == normal)
            .unwrap_or(false)
            || *h == normal
    });
    if served {
        Ok(normal)
    } else {
        Err(unknown())
    }
}

/// Validate `user` as a JID localpart and normalise it (nodeprep).
fn localpart(user: &str) -> Result<String, CtlOutput> {
    match jid::NodePart::new(user) {
        Ok(node) => Ok(node.as_str().to_string()),
        Err(e) => Err(CtlOutput::failed(format!(
            "Invalid user name '{user}': {e}"
        ))),
    }
}

/// The normalised (user, host) of a command, or the failure to print.
pub(super) fn account(env: &CtlEnv, user: &str, host: &str) -> Result<(String, String), CtlOutput> {
    let host = served_host(env, host)?;
    let user = localpart(user)?;
    Ok((user, host))
}

fn derive(env: &CtlEnv, password: &str) -> Result<StoredCredentials, CtlOutput> {
    StoredCredentials::derive(password, env.scram_iterations)
        .map_err(|e| CtlOutput::failed(format!("Error: {e}")))
}

/// [`account`], for a command about an account that must exist.
pub(super) fn existing_account(
    env: &CtlEnv,
    user: &str,
    host: &str,
) -> Result<(String, String), CtlOutput> {
    let (user, host) = account(env, user, host)?;
    if !env
        .storage
        .user_exists(AccountKey::new(&host, &user))
        .map_err(db_failed)?
    {
        return Err(no_such_user(&user, &host));
    }
    Ok((user, host))
}

pub(super) fn db_failed(e: StorageError) -> CtlOutput {
    CtlOutput::failed(format!("Database error: {e}"))
}

pub(super) fn no_such_user(user: &str, host: &str) -> CtlOutput {
    CtlOutput::failed(format!("User {user}@{host} does not exist"))
}

/// Run `command` with `args` against `env`. Never panics on bad input:
/// every problem becomes an exit code and a message.
pub fn execute(env: &CtlEnv, command: &str, args: &[String]) -> CtlOutput {
    let spec = match precheck(command, args) {
        Ok(spec) => spec,
        Err(out) => return out,
    };
    let server = match (&env.server, spec.needs_server) {
        (Some(server), _) => Some(server),
        (None, true) => return CtlOutput::not_running(NOT_RUNNING),
        (None, false) => None,
    };
    let result = match (spec.name, args) {
        ("register", [user, host, password]) => register(env, user, host, password),
        ("unregister", [user, host]) => unregister(env, server, user, host),
        ("change_password", [user, host, password]) => change_password(env, user, host, password),
        ("check_account", [user, host]) => check_account(env, user, host),
        ("check_password", [user, host, password]) => check_password(env, user, host, password),
        ("registered_users", [host]) => registered_users(env, host),
        ("registered_vhosts", []) => Ok(CtlOutput::ok(env.hosts().join("\n"))),
        ("connected_users", []) => Ok(connected_users(server)),
        ("list_cluster", []) => list_cluster(server),
        ("leave_cluster", [node]) => leave_cluster(server, node),
        ("join_cluster", [node]) => Err(CtlOutput::failed(format!(
            "join_cluster {node}: a node joins a cluster by its configuration, not at run time: \
             give it a `cluster:` section (its own `node:` name and the cluster's `nats:` URLs) \
             and the cluster's shared database (`default_db: sql`, the same `sql_*` keys), then \
             start it; the nodes find each other through NATS (docs/admin.md, \"Running a cluster\")"
        ))),
        ("connected_users_number", []) => Ok(CtlOutput::ok(
            server
                .map(|s| s.connected_users().len())
                .unwrap_or(0)
                .to_string(),
        )),
        ("incoming_s2s_number" | "outgoing_s2s_number", []) => {
            let prefix = if spec.name.starts_with("in") {
                "in "
            } else {
                "out "
            };
            let lines = server.map(|s| s.s2s_connections()).unwrap_or_default();
            let n = lines.iter().filter(|l| l.starts_with(prefix)).count();
            Ok(CtlOutput::ok(n.to_string()))
        }
        ("s2s_connections", []) => Ok(CtlOutput::ok(
            server
                .map(|s| s.s2s_connections())
                .unwrap_or_default()
                .join("\n"),
        )),
        ("status", []) => Ok(status(server)),
        ("stop", []) => {
            if let Some(server) = server {
                server.stop();
            }
            Ok(CtlOutput::ok(""))
        }
        ("get_offline_count", [user, host]) => {
            existing_account(env, user, host).and_then(|(user, host)| {
                let n = env
                    .storage
                    .offline_count(AccountKey::new(&host, &user))
                    .map_err(db_failed)?;
                Ok(CtlOutput::ok(n.to_string()))
            })
        }
        ("get_roster", [user, host]) => get_roster(env, user, host),
        ("stats", [name]) => stats(env, server, name),
        ("stats_host", [name, host]) => stats_host(env, server, name, host),
        ("connected_users_info", []) => Ok(sessions_info(server, None)),
        ("user_sessions_info", [user, host]) => {
            account(env, user, host).map(|(u, h)| sessions_info(server, Some((&u, &h))))
        }
        ("kick_session", [user, host, resource, reason]) => {
            account(env, user, host).and_then(|(u, h)| {
                let server = server.ok_or_else(|| CtlOutput::not_running(NOT_RUNNING))?;
                if server.kick_session(&u, &h, resource, reason) {
                    Ok(CtlOutput::ok(""))
                } else {
                    Err(CtlOutput::failed(format!("No session {u}@{h}/{resource}")))
                }
            })
        }
        ("kick_user", [user, host]) => account(env, user, host).map(|(u, h)| {
            let n = server.map(|s| s.kick_user(&u, &h, "Kicked by an administrator"));
            CtlOutput::ok(n.unwrap_or(0).to_string())
        }),
        ("send_message", [kind, from, to, subject, body]) => {
            send_message(server, kind, from, to, subject, body)
        }
        ("send_stanza", [from, to, stanza]) => send_stanza(server, from, to, stanza),
        ("add_rosteritem", [luser, lhost, user, host, nick, group, subs]) => {
            add_rosteritem(env, server, [luser, lhost, user, host], nick, group, subs)
        }
        ("delete_rosteritem", [luser, lhost, user, host]) => {
            delete_rosteritem(env, server, luser, lhost, user, host)
        }
        ("delete_old_messages", [days]) => delete_old_messages(env, days),
        ("delete_old_mam_messages", [kind, days]) => delete_old_mam_messages(env, kind, days),
        ("reload_config", []) => match server.map(|s| s.reload_config()) {
            Some(Ok(text)) => Ok(CtlOutput::ok(text)),
            Some(Err(why)) => Err(CtlOutput::failed(why)),
            None => Err(CtlOutput::not_running(NOT_RUNNING)),
        },
        ("backup", [file]) => backup(env, file),
        ("export_piefxis", [dir]) => Ok(super::piefxis::export(
            env,
            &std::path::absolute(dir)
                .unwrap_or_else(|_| dir.into())
                .display()
                .to_string(),
        )),
        ("import_piefxis", [file]) => Ok(super::piefxis::import(
            env,
            &std::path::absolute(file)
                .unwrap_or_else(|_| file.into())
                .display()
                .to_string(),
        )),
        ("restore", [file]) => restore(env, server, file),
        ("generate_invite", [host, options @ ..]) => {
            super::lifecycle::generate_invite(env, server, host, options)
        }
        ("generate_invite_with_username", [user, host]) => {
            super::lifecycle::generate_invite_with_username(env, server, user, host)
        }
        ("generate_password_reset", [user, host]) => {
            super::lifecycle::generate_password_reset(env, server, user, host)
        }
        ("list_invites", [host]) => super::lifecycle::list_invites(env, host),
        ("expire_invite_tokens", [user, host]) => {
            super::lifecycle::expire_invite_tokens(env, user, host)
        }
        ("cleanup_expired_invite_tokens", []) => {
            super::lifecycle::cleanup_expired_invite_tokens(env)
        }
        ("ban_account", [user, host, reason]) => {
            super::lifecycle::ban_account(env, server, user, host, reason)
        }
        ("unban_account", [user, host]) => super::lifecycle::unban_account(env, user, host),
        ("get_ban_details", [user, host]) => super::lifecycle::get_ban_details(env, user, host),
        ("delete_old_users", [days]) => super::lifecycle::delete_old_users(env, server, days),
        ("api_token_issue", [user, host]) => {
            existing_account(env, user, host).and_then(|(u, h)| {
                super::api_tokens::issue(env.storage.as_ref(), &u, &h)
                    .map(CtlOutput::ok)
                    .map_err(db_failed)
            })
        }
        ("api_token_revoke", [user, host]) => account(env, user, host).and_then(|(u, h)| {
            super::api_tokens::revoke(env.storage.as_ref(), &u, &h)
                .map(|n| CtlOutput::ok(n.to_string()))
                .map_err(db_failed)
        }),
        ("help", args) => Ok(help(args)),
        (name, _) if spec.runs_locally() => Err(CtlOutput::failed(format!(
            "'{name}' runs in `rookery ctl` itself, not in the server"
        ))),
        // precheck guarantees the arity; this only guards a registry typo.
        _ => Ok(CtlOutput::failed(format!(
            "Command '{}' is not implemented",
            spec.name
        ))),
    };
    result.unwrap_or_else(|failure| failure)
}

fn sessions_info(server: Option<&Arc<dyn ServerControl>>, only: Option<(&str, &str)>) -> CtlOutput {
    let mut sessions = server.map(|s| s.sessions_info()).unwrap_or_default();
    sessions.sort_by(|a, b| a.jid.cmp(&b.jid));
    let here = format!("rookery@{}", hostname());
    let lines: Vec<String> = sessions
        .iter()
        .filter_map(|s| {
            let (bare, resource) = s.jid.split_once('/').unwrap_or((&s.jid, ""));
            let node = s.node.as_deref().unwrap_or(&here);
            let fields = format!(
                "{}\t{}\t{}\t{}\t{node}\t{}\t{}\t{resource}\t{}",
                s.connection,
                s.ip,
                s.port,
                s.priority,
                s.uptime,
                s.status,
                s.status_text.replace(['\t', '\n'], " ")
            );
            match only {
                None => Some(format!("{}\t{fields}", s.jid)),
                Some((u, h)) if bare == format!("{u}@{h}") => Some(fields),
                Some(_) => None,
            }
        })
        .collect();
    CtlOutput::ok(lines.join("\n"))
}

/// This machine's name (the "node" column of session listings).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

fn parse_jid(what: &str, text: &str) -> Result<jid::Jid, CtlOutput> {
    jid::Jid::new(text).map_err(|e| CtlOutput::failed(format!("Invalid {what} JID '{text}': {e}")))
}

fn send_message(
    server: Option<&Arc<dyn ServerControl>>,
    kind: &str,
    from: &str,
    to: &str,
    subject: &str,
    body: &str,
) -> Result<CtlOutput, CtlOutput> {
    use xep_support::element::Element;
    if !matches!(kind, "normal" | "chat" | "headline") {
        return Err(CtlOutput::failed(format!(
            "Invalid message type '{kind}': expected normal, chat or headline"
        )));
    }
    let from = parse_jid("sender", from)?;
    let to = parse_jid("recipient", to)?;
    let mut msg = Element::new("message", xep_support::ns::CLIENT)
        .with_attr("type", kind)
        .with_attr("from", from.to_string())
        .with_attr("to", to.to_string())
        .with_attr("id", format!("ctl{}", rand::random::<u64>()));
    if !subject.is_empty() {
        msg = msg.with_child(Element::new("subject", xep_support::ns::CLIENT).with_text(subject));
    }
    msg = msg.with_child(Element::new("body", xep_support::ns::CLIENT).with_text(body));
    let server = server.ok_or_else(|| CtlOutput::not_running(NOT_RUNNING))?;
    server.route(msg).map_err(CtlOutput::failed)?;
    Ok(CtlOutput::ok(""))
}

fn send_stanza(
    server: Option<&Arc<dyn ServerControl>>,
    from: &str,
    to: &str,
    stanza: &str,
) -> Result<CtlOutput, CtlOutput> {
    let from = parse_jid("sender", from)?;
    let to = parse_jid("recipient", to)?;
    let Some(mut el) = crate::storage::stanza_codec::parse_stanza(stanza) else {
        return Err(CtlOutput::failed(
            "Invalid stanza: expected one well-formed <message/>, <presence/> or <iq/> element",
        ));
    };
    if el.ns.is_empty() {
        el.ns = xep_support::ns::CLIENT.to_string();
    }
    if el.ns != xep_support::ns::CLIENT
        || !matches!(el.name.as_str(), "message" | "presence" | "iq")
    {
        return Err(CtlOutput::failed(format!(
            "Invalid stanza: <{}/> in {} is not a jabber:client message, presence or iq",
            el.name, el.ns
        )));
    }
    el.set_attr("from", from.to_string());
    el.set_attr("to", to.to_string());
    let server = server.ok_or_else(|| CtlOutput::not_running(NOT_RUNNING))?;
    server.route(el).map_err(CtlOutput::failed)?;
    Ok(CtlOutput::ok(""))
}

/// The normalised bare JID `user@host` of a contact (any server).
fn contact_jid(user: &str, host: &str) -> Result<String, CtlOutput> {
    let text = if user.is_empty() {
        host.to_string()
    } else {
        format!("{user}@{host}")
    };
    match jid::BareJid::new(&text) {
        Ok(b) => Ok(b.to_string()),
        Err(e) => Err(CtlOutput::failed(format!(
            "Invalid contact JID '{text}': {e}"
        ))),
    }
}

fn add_rosteritem(
    env: &CtlEnv,
    server: Option<&Arc<dyn ServerControl>>,
    [luser, lhost, user, host]: [&String; 4],
    nick: &str,
    group: &str,
    subs: &str,
) -> Result<CtlOutput, CtlOutput> {
    let (luser, lhost) = existing_account(env, luser, lhost)?;
    let contact = contact_jid(user, host)?;
    let subscription = match subs {
        "none" => Subscription::None,
        "from" => Subscription::From,
        "to" => Subscription::To,
        "both" => Subscription::Both,
        other => {
            return Err(CtlOutput::failed(format!(
                "Invalid subscription '{other}': expected none, from, to or both"
            )))
        }
    };
    let mut groups: Vec<String> = group
        .split([';', ','])
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .map(str::to_string)
        .collect();
    groups.sort();
    groups.dedup();
    let item = RosterItem {
        jid: contact,
        name: (!nick.is_empty()).then(|| nick.to_string()),
        groups,
        subscription,
        ask: false,
        approved: false,
        pending_in: false,
        ver: 0,
    };
    match server {
        Some(s) => s.roster_put(&luser, &lhost, item).map_err(db_failed)?,
        None => {
            env.storage
                .roster_put(AccountKey::new(&lhost, &luser), item)
                .map_err(db_failed)?;
        }
    }
    Ok(CtlOutput::ok(""))
}

fn delete_rosteritem(
    env: &CtlEnv,
    server: Option<&Arc<dyn ServerControl>>,
    luser: &str,
    lhost: &str,
    user: &str,
    host: &str,
) -> Result<CtlOutput, CtlOutput> {
    let (luser, lhost) = existing_account(env, luser, lhost)?;
    let contact = contact_jid(user, host)?;
    let existed = match server {
        Some(s) => s
            .roster_remove(&luser, &lhost, &contact)
            .map_err(db_failed)?,
        None => env
            .storage
            .roster_remove(AccountKey::new(&lhost, &luser), &contact)
            .map_err(db_failed)?
            .is_some(),
    };
    if existed {
        Ok(CtlOutput::ok(""))
    } else {
        Err(CtlOutput::failed(format!(
            "{contact} is not in the roster of {luser}@{lhost}"
        )))
    }
}

/// The `stamp` of a stored message's XEP-0203 delay, if any.
fn delay_stamp(xml: &str) -> Option<String> {
    let el = crate::storage::stanza_codec::parse_stanza(xml)?;
    el.child("delay", "urn:xmpp:delay")?
        .attr("stamp")
        .map(str::to_string)
}

fn delete_old_messages(env: &CtlEnv, days: &str) -> Result<CtlOutput, CtlOutput> {
    let days: u64 = days.parse().map_err(|_| {
        CtlOutput::failed(format!(
            "Invalid number of days '{days}': expected a whole number"
        ))
    })?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let cutoff = crate::im::offline::stamp_at(now.saturating_sub(days.saturating_mul(86_400)));
    // Compare "YYYY-MM-DDTHH:MM:SS" (fractions and zone vary in form; ours are UTC).
    let cutoff = &cutoff[..19];
    let mut deleted = 0usize;
    for host in env.hosts() {
        for user in env.storage.list_users(&host).map_err(db_failed)? {
            let messages = env
                .storage
                .offline_peek(AccountKey::new(&host, &user), usize::MAX)
                .map_err(db_failed)?;
            let old: Vec<u64> = messages
                .iter()
                .filter(|(_, xml)| {
                    delay_stamp(xml)
                        .map(|st| st.len() >= 19 && &st[..19] < cutoff)
                        .unwrap_or(false)
                })
                .map(|(seq, _)| *seq)
                .collect();
            if !old.is_empty() {
                env.storage
                    .offline_remove(AccountKey::new(&host, &user), &old)
                    .map_err(db_failed)?;
                deleted += old.len();
            }
        }
    }
    Ok(CtlOutput::ok(deleted.to_string()))
}

fn delete_old_mam_messages(env: &CtlEnv, kind: &str, days: &str) -> Result<CtlOutput, CtlOutput> {
    if !matches!(kind, "chat" | "groupchat" | "all") {
        return Err(CtlOutput::failed(format!(
            "Invalid type '{kind}': expected chat, groupchat or all"
        )));
    }
    let days: u64 = days.parse().map_err(|_| {
        CtlOutput::failed(format!(
            "Invalid number of days '{days}': expected a whole number"
        ))
    })?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as u64;
    let cutoff = now.saturating_sub(days.saturating_mul(86_400_000_000));
    let archive = env.storage.archive();
    let mut deleted = 0usize;
    let hosts = env.hosts();
    for account in archive
        .owners()
        .map_err(|e| CtlOutput::failed(format!("Database error: {e}")))?
    {
        // Accounts' archives are on served hosts; rooms' on MUC service
        // domains (every other owner).
        let is_room = !hosts.iter().any(|h| h == account.domain().as_str());
        let wanted = match kind {
            "chat" => !is_room,
            "groupchat" => is_room,
            _ => true,
        };
        if account.node().is_none() || !wanted {
            continue;
        }
        deleted +=
            xep_support::mam::delete_older_than(archive.as_ref(), &account, cutoff, usize::MAX)
                .map_err(|e| CtlOutput::failed(format!("Database error: {e}")))?;
    }
    Ok(CtlOutput::ok(deleted.to_string()))
}

fn backup(env: &CtlEnv, file: &str) -> Result<CtlOutput, CtlOutput> {
    let path = std::path::absolute(file).unwrap_or_else(|_| file.into());
    let n = env
        .storage
        .backup(&path)
        .map_err(|e| CtlOutput::failed(format!("Backup failed: {e}")))?;
    Ok(CtlOutput::ok(format!(
        "Wrote {n} records to {}",
        path.display()
    )))
}

fn restore(
    env: &CtlEnv,
    server: Option<&Arc<dyn ServerControl>>,
    file: &str,
) -> Result<CtlOutput, CtlOutput> {
    let path = std::path::absolute(file).unwrap_or_else(|_| file.into());
    let n = env
        .storage
        .restore(&path)
        .map_err(|e| CtlOutput::failed(format!("Restore failed: {e}")))?;
    if let Some(server) = server {
        server.restored();
    }
    Ok(CtlOutput::ok(format!(
        "Restored {n} records from {}",
        path.display()
    )))
}

fn get_roster(env: &CtlEnv, user: &str, host: &str) -> Result<CtlOutput, CtlOutput> {
    let (user, host) = existing_account(env, user, host)?;
    let mut items = env
        .storage
        .roster_get(AccountKey::new(&host, &user))
        .map_err(db_failed)?;
    items.sort_by(|a, b| a.jid.cmp(&b.jid));
    let lines: Vec<String> = items
        .iter()
        .map(|i| {
            format!(
                "{}\t{}\t{}\t{}\t{}",
                i.jid,
                i.name.as_deref().unwrap_or(""),
                i.subscription.as_str(),
                if i.ask { "subscribe" } else { "none" },
                i.groups.join(";")
            )
        })
        .collect();
    Ok(CtlOutput::ok(lines.join("\n")))
}

fn stats(
    env: &CtlEnv,
    server: Option<&Arc<dyn ServerControl>>,
    name: &str,
) -> Result<CtlOutput, CtlOutput> {
    match name {
        "registeredusers" => {
            let mut total = 0;
            for h in &env.hosts() {
                total += env.storage.count_users(h).map_err(db_failed)?;
            }
            Ok(CtlOutput::ok(total.to_string()))
        }
        "onlineusers" => match server {
            Some(s) => Ok(CtlOutput::ok(s.connected_users().len().to_string())),
            None => Err(CtlOutput::not_running(NOT_RUNNING)),
        },
        "onlineusersnode" => match server {
            Some(s) => Ok(CtlOutput::ok(s.connected_users_node().len().to_string())),
            None => Err(CtlOutput::not_running(NOT_RUNNING)),
        },
        "uptimeseconds" => match server {
            Some(s) => Ok(CtlOutput::ok(s.uptime_secs().to_string())),
            None => Err(CtlOutput::not_running(NOT_RUNNING)),
        },
        other => Err(CtlOutput::usage(format!(
            "Unknown statistic '{other}': expected registeredusers, onlineusers, onlineusersnode or uptimeseconds"
        ))),
    }
}

fn stats_host(
    env: &CtlEnv,
    server: Option<&Arc<dyn ServerControl>>,
    name: &str,
    host: &str,
) -> Result<CtlOutput, CtlOutput> {
    let host = served_host(env, host)?;
    match name {
        "registeredusers" => Ok(CtlOutput::ok(
            env.storage
                .count_users(&host)
                .map_err(db_failed)?
                .to_string(),
        )),
        "onlineusers" => match server {
            Some(s) => {
                let suffix = format!("@{host}/");
                let n = s
                    .connected_users()
                    .iter()
                    .filter(|j| j.contains(&suffix))
                    .count();
                Ok(CtlOutput::ok(n.to_string()))
            }
            None => Err(CtlOutput::not_running(NOT_RUNNING)),
        },
        other => Err(CtlOutput::usage(format!(
            "Unknown statistic '{other}': expected registeredusers or onlineusers"
        ))),
    }
}

fn register(env: &CtlEnv, user: &str, host: &str, password: &str) -> Result<CtlOutput, CtlOutput> {
    let (user, host) = account(env, user, host)?;
    let creds = derive(env, password)?;
    match env
        .storage
        .create_user(AccountKey::new(&host, &user), &creds)
    {
        Ok(()) => Ok(CtlOutput::ok(format!(
            "User {user}@{host} successfully registered"
        ))),
        Err(StorageError::AlreadyExists) => Err(CtlOutput::failed(format!(
            "User {user}@{host} already registered"
        ))),
        Err(e) => Err(db_failed(e)),
    }
}

fn unregister(
    env: &CtlEnv,
    server: Option<&Arc<dyn ServerControl>>,
    user: &str,
    host: &str,
) -> Result<CtlOutput, CtlOutput> {
    let (user, host) = account(env, user, host)?;
    if !env
        .storage
        .delete_user(AccountKey::new(&host, &user))
        .map_err(db_failed)?
    {
        return Err(no_such_user(&user, &host));
    }
    // Its HTTP API tokens go with it (a later account of the same name
    // must not inherit them).
    if let Err(e) = super::api_tokens::revoke(env.storage.as_ref(), &user, &host) {
        tracing::warn!("revoking the API tokens of {user}@{host}: {e}");
    }
    // Deleted first, so the kicked sessions cannot log in again.
    if let Some(server) = server {
        server.kick_user(&user, &host, "Account removed");
    }
    Ok(CtlOutput::ok(""))
}

fn change_password(
    env: &CtlEnv,
    user: &str,
    host: &str,
    password: &str,
) -> Result<CtlOutput, CtlOutput> {
    let (user, host) = account(env, user, host)?;
    let creds = derive(env, password)?;
    if env
        .storage
        .set_credentials(AccountKey::new(&host, &user), &creds)
        .map_err(db_failed)?
    {
        Ok(CtlOutput::ok(""))
    } else {
        Err(no_such_user(&user, &host))
    }
}

fn check_account(env: &CtlEnv, user: &str, host: &str) -> Result<CtlOutput, CtlOutput> {
    let (user, host) = account(env, user, host)?;
    if env
        .storage
        .user_exists(AccountKey::new(&host, &user))
        .map_err(db_failed)?
    {
        Ok(CtlOutput::ok(""))
    } else {
        Err(no_such_user(&user, &host))
    }
}

fn check_password(
    env: &CtlEnv,
    user: &str,
    host: &str,
    password: &str,
) -> Result<CtlOutput, CtlOutput> {
    let (user, host) = account(env, user, host)?;
    let creds = env
        .storage
        .get_credentials(AccountKey::new(&host, &user))
        .map_err(db_failed)?
        .ok_or_else(|| no_such_user(&user, &host))?;
    if creds.verify_password(password) {
        Ok(CtlOutput::ok(""))
    } else {
        Err(CtlOutput::failed(format!(
            "Wrong password for {user}@{host}"
        )))
    }
}

fn registered_users(env: &CtlEnv, host: &str) -> Result<CtlOutput, CtlOutput> {
    let host = served_host(env, host)?;
    let users = env.storage.list_users(&host).map_err(db_failed)?;
    Ok(CtlOutput::ok(users.join("\n")))
}

fn list_cluster(server: Option<&Arc<dyn ServerControl>>) -> Result<CtlOutput, CtlOutput> {
    let Some(server) = server else {
        return Err(CtlOutput::not_running(NOT_RUNNING));
    };
    match server.list_cluster() {
        Ok(Some(mut nodes)) => {
            nodes.sort();
            Ok(CtlOutput::ok(nodes.join("\n")))
        }
        // Not clustered: ejabberd lists its one node.
        Ok(None) => Ok(CtlOutput::ok(
            "rookery (no `cluster:` configured)".to_string(),
        )),
        Err(e) => Err(CtlOutput::failed(format!("the cluster cannot say: {e}"))),
    }
}

fn leave_cluster(
    server: Option<&Arc<dyn ServerControl>>,
    node: &str,
) -> Result<CtlOutput, CtlOutput> {
    let Some(server) = server else {
        return Err(CtlOutput::not_running(NOT_RUNNING));
    };
    let Some(me) = server.cluster_node() else {
        return Err(CtlOutput::failed(
            "this node is not in a cluster (no `cluster:` in its configuration)",
        ));
    };
    if node == me {
        // The orderly shutdown leaves the cluster first (the heartbeat
        // goes, the others stop forwarding here), then ends the sessions.
        server.stop();
        return Ok(CtlOutput::ok(format!(
            "node {me} leaves the cluster: its sessions end with <system-shutdown/> and it stops"
        )));
    }
    match server.ask_to_leave(node) {
        Ok(()) => Ok(CtlOutput::ok(format!(
            "node {node} leaves the cluster: its sessions end with <system-shutdown/> and it stops"
        ))),
        Err(e) => Err(CtlOutput::failed(format!("leave_cluster {node}: {e}"))),
    }
}

fn connected_users(server: Option<&Arc<dyn ServerControl>>) -> CtlOutput {
    let mut users = server.map(|s| s.connected_users()).unwrap_or_default();
    users.sort();
    CtlOutput::ok(users.join("\n"))
}

fn status(server: Option<&Arc<dyn ServerControl>>) -> CtlOutput {
    let Some(server) = server else {
        return CtlOutput::not_running(NOT_RUNNING);
    };
    let mut text = String::from("The server rookery is started with status: started");
    let detail = server.status();
    if !detail.trim().is_empty() {
        text.push('\n');
        text.push_str(detail.trim_end());
    }
    CtlOutput::ok(text)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::storage::SledStorage;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;

    /// A ServerControl that records what commands asked of it.
    #[derive(Default)]
    pub(crate) struct FakeServer {
        pub sessions: Mutex<Vec<String>>,
        pub kicked: Mutex<Vec<(String, String, String)>>,
        pub stopped: AtomicBool,
        /// Commands `ctl_allows` refuses (api_permissions).
        pub refused: Mutex<Vec<String>>,
    }

    impl ServerControl for FakeServer {
        fn ctl_allows(&self, command: &str) -> bool {
            !self.refused.lock().unwrap().iter().any(|c| c == command)
        }
        fn connected_users(&self) -> Vec<String> {
            self.sessions.lock().unwrap().clone()
        }
        fn kick_user(&self, user: &str, host: &str, reason: &str) -> usize {
            self.kicked
                .lock()
                .unwrap()
                .push((user.into(), host.into(), reason.into()));
            let mut sessions = self.sessions.lock().unwrap();
            let before = sessions.len();
            let prefix = format!("{user}@{host}/");
            sessions.retain(|s| !s.starts_with(&prefix));
            before - sessions.len()
        }
        fn stop(&self) {
            self.stopped.store(true, Ordering::SeqCst);
        }
        fn status(&self) -> String {
            "Uptime 5 s, 1 session".into()
        }
    }

    pub(crate) fn env_in(dir: &std::path::Path, server: Option<Arc<FakeServer>>) -> CtlEnv {
        CtlEnv {
            storage: Arc::new(SledStorage::open(dir).unwrap()),
            hosts: vec!["localhost".into(), "example.org".into()],
            scram_iterations: 4096,
            server: server.map(|s| s as Arc<dyn ServerControl>),
        }
    }

    fn a(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    fn run(env: &CtlEnv, command: &str, args: &[&str]) -> CtlOutput {
        execute(env, command, &a(args))
    }

    #[test]
    fn registry_is_consistent() {
        let names: Vec<_> = commands().iter().map(|c| c.name).collect();
        for required in [
            "register",
            "unregister",
            "change_password",
            "registered_users",
            "connected_users",
            "status",
            "stop",
            "help",
        ] {
            assert!(names.contains(&required), "{required} missing");
        }
        let mut dedup = names.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(dedup.len(), names.len(), "duplicate command names");
        // Every registered command is implemented: with the right number of
        // dummy arguments, none falls through to "not implemented".
        let dir = tempfile::tempdir().unwrap();
        let env = env_in(dir.path(), Some(Arc::new(FakeServer::default())));
        for spec in commands() {
            let args = if matches!(
                spec.name,
                "backup" | "restore" | "export_piefxis" | "import_piefxis"
            ) {
                vec![dir.path().join("backup").display().to_string()]
            } else {
                vec!["x".to_string(); spec.arity().0]
            };
            let out = execute(&env, spec.name, &args);
            assert!(!out.output.contains("not implemented"), "{}", spec.name);
        }
    }

    #[test]
    fn register_then_duplicate() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_in(dir.path(), None);
        let out = run(&env, "register", &["Alice", "LocalHost", "secret"]);
        assert_eq!(
            out,
            CtlOutput::ok("User alice@localhost successfully registered")
        );
        assert!(env
            .storage
            .user_exists(AccountKey::new("localhost", "alice"))
            .unwrap());
        let creds = env
            .storage
            .get_credentials(AccountKey::new("localhost", "alice"))
            .unwrap()
            .unwrap();
        assert!(creds.verify_password("secret"));
        let out = run(&env, "register", &["alice", "localhost", "other"]);
        assert_eq!(
            out,
            CtlOutput::failed("User alice@localhost already registered")
        );
    }

    #[test]
    fn register_validates_host_user_and_password() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_in(dir.path(), None);
        let out = run(&env, "register", &["alice", "x", "secret"]);
        assert_eq!(out, CtlOutput::failed("Unknown virtual host: x"));
        for bad in ["a@b", "a b", "", "a/b", "a:b"] {
            let out = run(&env, "register", &[bad, "localhost", "secret"]);
            assert_eq!(out.code, EXIT_FAILED, "{bad:?}");
            assert!(out.output.starts_with("Invalid user name"), "{out:?}");
        }
        let out = run(&env, "register", &["alice", "localhost", ""]);
        assert_eq!(out.code, EXIT_FAILED);
        assert!(out.output.contains("invalid password"), "{out:?}");
        assert_eq!(env.storage.count_users("localhost").unwrap(), 0);
    }

    #[test]
    fn unregister_offline_and_online() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_in(dir.path(), None);
        run(&env, "register", &["alice", "localhost", "pw"]);
        assert_eq!(
            run(&env, "unregister", &["alice", "localhost"]),
            CtlOutput::ok("")
        );
        assert!(!env
            .storage
            .user_exists(AccountKey::new("localhost", "alice"))
            .unwrap());
        assert_eq!(
            run(&env, "unregister", &["alice", "localhost"]),
            CtlOutput::failed("User alice@localhost does not exist")
        );
        drop(env);

        let server = Arc::new(FakeServer::default());
        server.sessions.lock().unwrap().extend([
            "bob@localhost/phone".to_string(),
            "bob@localhost/laptop".to_string(),
            "carol@localhost/x".to_string(),
        ]);
        let env = env_in(dir.path(), Some(server.clone()));
        run(&env, "register", &["bob", "localhost", "pw"]);
        assert_eq!(run(&env, "unregister", &["BOB", "localhost"]).code, EXIT_OK);
        assert_eq!(
            *server.kicked.lock().unwrap(),
            vec![("bob".into(), "localhost".into(), "Account removed".into())]
        );
        assert_eq!(
            *server.sessions.lock().unwrap(),
            vec!["carol@localhost/x".to_string()]
        );
    }

    #[test]
    fn change_password_and_check_password() {
        let dir = tempfile::tempdir().unwrap();
        let server = Arc::new(FakeServer::default());
        let env = env_in(dir.path(), Some(server.clone()));
        assert_eq!(
            run(&env, "change_password", &["alice", "localhost", "new"]),
            CtlOutput::failed("User alice@localhost does not exist")
        );
        assert!(!env
            .storage
            .user_exists(AccountKey::new("localhost", "alice"))
            .unwrap());
        run(&env, "register", &["alice", "localhost", "old"]);
        assert_eq!(
            run(&env, "check_password", &["alice", "localhost", "old"]).code,
            EXIT_OK
        );
        assert_eq!(
            run(&env, "change_password", &["alice", "localhost", "new"]),
            CtlOutput::ok("")
        );
        assert_eq!(
            run(&env, "check_password", &["alice", "localhost", "new"]).code,
            EXIT_OK
        );
        assert_eq!(
            run(&env, "check_password", &["alice", "localhost", "old"]),
            CtlOutput::failed("Wrong password for alice@localhost")
        );
        assert_eq!(
            run(&env, "change_password", &["alice", "localhost", ""]).code,
            EXIT_FAILED
        );
        assert_eq!(
            run(&env, "check_password", &["nobody", "localhost", "x"]),
            CtlOutput::failed("User nobody@localhost does not exist")
        );
        // Changing a password does not end sessions.
        assert!(server.kicked.lock().unwrap().is_empty());
    }

    #[test]
    fn check_account_codes() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_in(dir.path(), None);
        run(&env, "register", &["alice", "localhost", "pw"]);
        assert_eq!(run(&env, "check_account", &["alice", "localhost"]).code, 0);
        assert_eq!(run(&env, "check_account", &["bob", "localhost"]).code, 1);
        assert_eq!(
            run(&env, "check_account", &["alice", "example.org"]).code,
            1
        );
        assert_eq!(run(&env, "check_account", &["alice", "nowhere"]).code, 1);
    }

    #[test]
    fn registered_users_and_vhosts() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_in(dir.path(), None);
        assert_eq!(
            run(&env, "registered_users", &["localhost"]),
            CtlOutput::ok("")
        );
        for u in ["zoe", "bob", "alice"] {
            run(&env, "register", &[u, "localhost", "pw"]);
        }
        run(&env, "register", &["eve", "example.org", "pw"]);
        assert_eq!(
            run(&env, "registered_users", &["localhost"]),
            CtlOutput::ok("alice\nbob\nzoe")
        );
        assert_eq!(
            run(&env, "registered_users", &["EXAMPLE.org"]),
            CtlOutput::ok("eve")
        );
        assert_eq!(
            run(&env, "registered_users", &["x"]),
            CtlOutput::failed("Unknown virtual host: x")
        );
        assert_eq!(
            run(&env, "registered_vhosts", &[]),
            CtlOutput::ok("localhost\nexample.org")
        );
    }

    #[test]
    fn server_commands_need_a_server() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_in(dir.path(), None);
        for cmd in [
            "connected_users",
            "connected_users_number",
            "status",
            "stop",
        ] {
            assert_eq!(
                run(&env, cmd, &[]),
                CtlOutput::not_running(NOT_RUNNING),
                "{cmd}"
            );
        }
    }

    #[test]
    fn server_commands_with_a_server() {
        let dir = tempfile::tempdir().unwrap();
        let server = Arc::new(FakeServer::default());
        server.sessions.lock().unwrap().extend([
            "zed@localhost/a".to_string(),
            "amy@example.org/b".to_string(),
        ]);
        let env = env_in(dir.path(), Some(server.clone()));
        assert_eq!(
            run(&env, "connected_users", &[]),
            CtlOutput::ok("amy@example.org/b\nzed@localhost/a")
        );
        assert_eq!(run(&env, "connected_users_number", &[]), CtlOutput::ok("2"));
        assert_eq!(
            run(&env, "status", &[]),
            CtlOutput::ok(
                "The server rookery is started with status: started\nUptime 5 s, 1 session"
            )
        );
        assert!(!server.stopped.load(Ordering::SeqCst));
        assert_eq!(run(&env, "stop", &[]), CtlOutput::ok(""));
        assert!(server.stopped.load(Ordering::SeqCst));
    }

    #[test]
    fn usage_errors_exit_2() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_in(dir.path(), None);
        let out = run(&env, "frobnicate", &[]);
        assert_eq!(out.code, EXIT_USAGE);
        assert!(out.output.contains("Unknown command 'frobnicate'"));
        let out = run(&env, "register", &["alice", "localhost"]);
        assert_eq!(out.code, EXIT_USAGE);
        assert!(
            out.output
                .contains("Usage: rookery ctl register USER HOST PASSWORD"),
            "{out:?}"
        );
        assert!(out.output.contains("takes 3 arguments, 2 given"), "{out:?}");
        assert_eq!(run(&env, "status", &["extra"]).code, EXIT_USAGE);
        assert_eq!(run(&env, "help", &["a", "b"]).code, EXIT_USAGE);
        assert_eq!(run(&env, "help", &["nope"]).code, EXIT_USAGE);
        // Usage errors win over "not running".
        assert_eq!(run(&env, "stop", &["now"]).code, EXIT_USAGE);
    }

    #[test]
    fn help_lists_every_command() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_in(dir.path(), None);
        let out = run(&env, "help", &[]);
        assert_eq!(out.code, EXIT_OK);
        for spec in commands() {
            let line = out
                .output
                .lines()
                .find(|l| l.trim_start().starts_with(&format!("{} ", spec.name)))
                .unwrap_or_else(|| panic!("{} not listed", spec.name));
            assert!(line.contains(spec.help));
            for arg in spec.args {
                assert!(line.contains(arg));
            }
        }
        let out = run(&env, "help", &["register"]);
        assert_eq!(out.code, EXIT_OK);
        assert!(out
            .output
            .starts_with("Usage: rookery ctl register USER HOST PASSWORD"));
        assert!(out.output.contains("while it is stopped"));
        let out = run(&env, "help", &["stop"]);
        assert!(out.output.contains("Needs a running server"));
    }
}
