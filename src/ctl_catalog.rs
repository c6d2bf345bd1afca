//! The catalog of `rookery ctl` commands: their names, arguments, help
//! text and `api_permissions` tags, and nothing else. A leaf: it imports
//! nothing from the crate, so both `config` (which checks `api_permissions`
//! against it) and `ctl` (which executes the commands) can import it without
//! importing each other.
//!
//! Invariants: every name is unique, and every command listed is implemented
//! by `ctl::commands::execute` (`registry_is_consistent` holds both); a
//! command [`tags`] does not know has no tag (no `[tag:...]` rule covers it).

/// One command: its name, argument names, one-line help, and whether it
/// needs a running server. Arguments in brackets (`[COMMAND]`) are optional.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandSpec {
    pub name: &'static str,
    pub args: &'static [&'static str],
    pub help: &'static str,
    pub needs_server: bool,
}

impl CommandSpec {
    /// `rookery ctl NAME ARGS...`
    pub fn usage(&self) -> String {
        let mut usage = format!("rookery ctl {}", self.name);
        for arg in self.args {
            usage.push(' ');
            usage.push_str(arg);
        }
        usage
    }

    /// (required, maximum) number of arguments; an argument written
    /// `[NAME...]` repeats.
    pub fn arity(&self) -> (usize, usize) {
        let optional = self.args.iter().filter(|a| a.starts_with('[')).count();
        let max = if self.args.iter().any(|a| a.ends_with("...]")) {
            usize::MAX
        } else {
            self.args.len()
        };
        (self.args.len() - optional, max)
    }

    /// Whether `rookery ctl` runs it itself (files, DNS), never the server.
    pub fn runs_locally(&self) -> bool {
        matches!(
            self.name,
            "check" | "cert_import" | "migrate_db" | "sql_migrate" | "import_ejabberd_sql"
        )
    }
}

static COMMANDS: &[CommandSpec] = &[
    CommandSpec {
        name: "register",
        args: &["USER", "HOST", "PASSWORD"],
        help: "Register the account USER@HOST with PASSWORD",
        needs_server: false,
    },
    CommandSpec {
        name: "unregister",
        args: &["USER", "HOST"],
        help: "Delete the account USER@HOST and end its sessions",
        needs_server: false,
    },
    CommandSpec {
        name: "change_password",
        args: &["USER", "HOST", "NEWPASS"],
        help: "Change the password of the account USER@HOST",
        needs_server: false,
    },
    CommandSpec {
        name: "check_account",
        args: &["USER", "HOST"],
        help: "Exit 0 if the account USER@HOST exists, 1 if not",
        needs_server: false,
    },
    CommandSpec {
        name: "check_password",
        args: &["USER", "HOST", "PASSWORD"],
        help: "Exit 0 if PASSWORD is the password of USER@HOST, 1 if not",
        needs_server: false,
    },
    CommandSpec {
        name: "registered_users",
        args: &["HOST"],
        help: "List the accounts of HOST, one user name per line",
        needs_server: false,
    },
    CommandSpec {
        name: "registered_vhosts",
        args: &[],
        help: "List the virtual hosts this server serves, one per line",
        needs_server: false,
    },
    CommandSpec {
        name: "ban_account",
        args: &["USER", "HOST", "REASON"],
        help: "Ban the account USER@HOST: its logins are refused (every SASL path), its sessions ended, its data kept",
        needs_server: false,
    },
    CommandSpec {
        name: "unban_account",
        args: &["USER", "HOST"],
        help: "Lift the ban of USER@HOST",
        needs_server: false,
    },
    CommandSpec {
        name: "get_ban_details",
        args: &["USER", "HOST"],
        help: "Print the reason and date of USER@HOST's ban (nothing if it is not banned)",
        needs_server: false,
    },
    CommandSpec {
        name: "delete_old_users",
        args: &["DAYS"],
        help: "Delete the accounts whose last session ended more than DAYS days ago (mod_last's last activity; online accounts and accounts with no recorded logout are kept)",
        needs_server: false,
    },
    CommandSpec {
        name: "generate_invite",
        args: &["HOST", "[OPTION...]"],
        help: "Create an account invitation for HOST and print its xmpp: URI (and landing page). Options: --reusable N (N uses), --expires DURATION (3600, 30m, 12h, 7d, 2w), --roster-for USER (the new account and USER become mutual contacts)",
        needs_server: false,
    },
    CommandSpec {
        name: "generate_invite_with_username",
        args: &["USER", "HOST"],
        help: "Create an account invitation for the user name USER on HOST",
        needs_server: false,
    },
    CommandSpec {
        name: "generate_password_reset",
        args: &["USER", "HOST"],
        help: "Create a password-reset link for USER@HOST (valid one day at most, once)",
        needs_server: false,
    },
    CommandSpec {
        name: "list_invites",
        args: &["HOST"],
        help: "List HOST's invitations: id, valid|expired|used, created, expires, type, inviter, account, uses left/uses, used by (tab-separated)",
        needs_server: false,
    },
    CommandSpec {
        name: "expire_invite_tokens",
        args: &["USER", "HOST"],
        help: "Expire the invitations USER@HOST created; print how many",
        needs_server: false,
    },
    CommandSpec {
        name: "cleanup_expired_invite_tokens",
        args: &[],
        help: "Delete expired and used-up invitations on every host; print how many",
        needs_server: false,
    },
    CommandSpec {
        name: "connected_users",
        args: &[],
        help: "List the connected sessions, one full JID per line",
        needs_server: true,
    },
    CommandSpec {
        name: "list_cluster",
        args: &[],
        help: "List the live nodes of this node's cluster, one name per line (this node alone without `cluster:`)",
        needs_server: true,
    },
    CommandSpec {
        name: "leave_cluster",
        args: &["NODE"],
        help: "Make NODE (this node's name, or another live node's) leave the cluster: it stops taking sessions, ends its sessions with <system-shutdown/> and stops",
        needs_server: true,
    },
    CommandSpec {
        name: "join_cluster",
        args: &["NODE"],
        help: "Not a run-time operation here: a node joins by its configuration (`cluster:`); prints how",
        needs_server: false,
    },
    CommandSpec {
        name: "connected_users_number",
        args: &[],
        help: "Print the number of connected sessions",
        needs_server: true,
    },
    CommandSpec {
        name: "connected_users_info",
        args: &[],
        help: "List the sessions, one per line: jid, connection, ip, port, priority, node, uptime (s), status, resource, status text (tab-separated)",
        needs_server: true,
    },
    CommandSpec {
        name: "user_sessions_info",
        args: &["USER", "HOST"],
        help: "List USER@HOST's sessions: connection, ip, port, priority, node, uptime (s), status, resource, status text (tab-separated)",
        needs_server: true,
    },
    CommandSpec {
        name: "kick_session",
        args: &["USER", "HOST", "RESOURCE", "REASON"],
        help: "End the session USER@HOST/RESOURCE, telling it REASON",
        needs_server: true,
    },
    CommandSpec {
        name: "kick_user",
        args: &["USER", "HOST"],
        help: "End every session of USER@HOST; print how many were ended",
        needs_server: true,
    },
    CommandSpec {
        name: "send_message",
        args: &["TYPE", "FROM", "TO", "SUBJECT", "BODY"],
        help: "Send a message of TYPE (normal, chat, headline) from FROM to TO (offline storage applies)",
        needs_server: true,
    },
    CommandSpec {
        name: "send_stanza",
        args: &["FROM", "TO", "STANZA"],
        help: "Route the XML STANZA (message, presence or iq) from FROM to TO",
        needs_server: true,
    },
    CommandSpec {
        name: "add_rosteritem",
        args: &[
            "LOCALUSER",
            "LOCALHOST",
            "USER",
            "HOST",
            "NICK",
            "GROUP",
            "SUBS",
        ],
        help: "Add or replace USER@HOST in LOCALUSER@LOCALHOST's roster (GROUP: names separated by ';', may be empty; SUBS: none, from, to or both)",
        needs_server: false,
    },
    CommandSpec {
        name: "delete_rosteritem",
        args: &["LOCALUSER", "LOCALHOST", "USER", "HOST"],
        help: "Remove USER@HOST from LOCALUSER@LOCALHOST's roster",
        needs_server: false,
    },
    CommandSpec {
        name: "delete_old_messages",
        args: &["DAYS"],
        help: "Delete offline messages older than DAYS days (on every host); print how many",
        needs_server: false,
    },
    CommandSpec {
        name: "delete_old_mam_messages",
        args: &["TYPE", "DAYS"],
        help: "Delete archived (XEP-0313) messages older than DAYS days (TYPE: chat, groupchat or all) on every host; print how many",
        needs_server: false,
    },
    CommandSpec {
        name: "incoming_s2s_number",
        args: &[],
        help: "Print the number of authenticated incoming s2s streams",
        needs_server: true,
    },
    CommandSpec {
        name: "outgoing_s2s_number",
        args: &[],
        help: "Print the number of authenticated outgoing s2s connections",
        needs_server: true,
    },
    CommandSpec {
        name: "s2s_connections",
        args: &[],
        help: "List s2s connections: in|out, local domain, remote domains, auth method, tls|plain, address",
        needs_server: true,
    },
    CommandSpec {
        name: "status",
        args: &[],
        help: "Tell whether the server is running (exit 3 if not)",
        needs_server: true,
    },
    CommandSpec {
        name: "stop",
        args: &[],
        help: "Stop the server gracefully",
        needs_server: true,
    },
    CommandSpec {
        name: "get_offline_count",
        args: &["USER", "HOST"],
        help: "Number of offline messages stored for USER@HOST",
        needs_server: false,
    },
    CommandSpec {
        name: "get_roster",
        args: &["USER", "HOST"],
        help: "List USER@HOST's roster: jid, name, subscription, ask, groups (tab-separated)",
        needs_server: false,
    },
    CommandSpec {
        name: "stats",
        args: &["NAME"],
        help: "A statistic: registeredusers, onlineusers, onlineusersnode, uptimeseconds",
        needs_server: false,
    },
    CommandSpec {
        name: "stats_host",
        args: &["NAME", "HOST"],
        help: "A statistic of one host: registeredusers, onlineusers",
        needs_server: false,
    },
    CommandSpec {
        name: "reload_config",
        args: &[],
        help: "Re-read the configuration file without dropping sessions (an invalid file is refused and the old configuration kept)",
        needs_server: true,
    },
    CommandSpec {
        name: "backup",
        args: &["FILE"],
        help: "Write a consistent copy of the whole database to FILE (also while the server runs)",
        needs_server: false,
    },
    CommandSpec {
        name: "restore",
        args: &["FILE"],
        help: "Replace the whole database with the backup FILE (a running server ends every session)",
        needs_server: false,
    },
    CommandSpec {
        name: "export_piefxis",
        args: &["DIR"],
        help: "Export accounts (SCRAM credentials), rosters and offline messages to DIR/<host>.xml (XEP-0227)",
        needs_server: false,
    },
    CommandSpec {
        name: "import_piefxis",
        args: &["FILE"],
        help: "Import accounts, rosters and offline messages from a XEP-0227 file (existing accounts are skipped)",
        needs_server: false,
    },
    CommandSpec {
        name: "check",
        args: &["[WHAT]"],
        help: "Check the configuration, certificates, DNS records, STUN/TURN servers, free disk space, open doors and the listeners and public URLs of a running server (WHAT: config, certs, dns, turn, disk, access or endpoints; default all) and say what to fix",
        needs_server: false,
    },
    CommandSpec {
        name: "cert_import",
        args: &["DIR", "[DIR...]"],
        help: "Import certificates from certbot's layout (DIR/<domain>/fullchain.pem and privkey.pem, or one such <domain> directory) for the served hosts; a running server reloads them",
        needs_server: false,
    },
    CommandSpec {
        name: "sql_migrate",
        args: &[],
        help: "Bring the PostgreSQL schema (default_db: sql) to this version's, and say which version it is at (the server also does this when it starts)",
        needs_server: false,
    },
    CommandSpec {
        name: "migrate_db",
        args: &["FROM", "TO"],
        help: "Copy every account, roster, offline message, archive and module value from one database to the other (sled or sql, the server stopped; the target must be empty) and verify the counts",
        needs_server: false,
    },
    CommandSpec {
        name: "import_ejabberd_sql",
        args: &["HOST"],
        help: "Make ejabberd's PostgreSQL database (the sql_* options) Rookery's for HOST: its message archive and MUC rooms converted, every other table read as it is",
        needs_server: false,
    },
    CommandSpec {
        name: "api_token_issue",
        args: &["USER", "HOST"],
        help: "Make a bearer token for mod_http_api that acts as the account USER@HOST (printed once; only its hash is kept)",
        needs_server: false,
    },
    CommandSpec {
        name: "api_token_revoke",
        args: &["USER", "HOST"],
        help: "Revoke every mod_http_api token of USER@HOST; print how many",
        needs_server: false,
    },
    CommandSpec {
        name: "help",
        args: &["[COMMAND]"],
        help: "List the commands, or describe COMMAND",
        needs_server: false,
    },
];

/// Every command, in the order `help` lists them.
pub fn commands() -> &'static [CommandSpec] {
    COMMANDS
}

/// The command called `name`, if any.
pub fn find(name: &str) -> Option<&'static CommandSpec> {
    COMMANDS.iter().find(|c| c.name == name)
}

/// The tags of a command, as ejabberd groups its commands, for
/// `api_permissions` (`what: "[tag:roster]"`).
pub fn tags(name: &str) -> &'static [&'static str] {
    match name {
        "register"
        | "unregister"
        | "change_password"
        | "check_account"
        | "check_password"
        | "registered_users"
        | "ban_account"
        | "unban_account"
        | "get_ban_details"
        | "generate_invite"
        | "generate_invite_with_username"
        | "generate_password_reset"
        | "list_invites" => &["accounts"],
        "delete_old_users" | "expire_invite_tokens" | "cleanup_expired_invite_tokens" => {
            &["accounts", "purge"]
        }
        "connected_users"
        | "connected_users_number"
        | "connected_users_info"
        | "user_sessions_info"
        | "kick_session"
        | "kick_user" => &["session"],
        "send_message" | "send_stanza" | "announce" => &["stanza"],
        "add_rosteritem" | "delete_rosteritem" | "get_roster" => &["roster"],
        "get_offline_count" | "delete_old_messages" => &["offline", "purge"],
        "incoming_s2s_number" | "outgoing_s2s_number" | "s2s_connections" => &["s2s"],
        "status" | "stop" | "reload_config" | "list_cluster" | "leave_cluster" | "join_cluster"
        | "registered_vhosts" | "check" | "cert_import" => &["server"],
        "stats" | "stats_host" => &["statistics"],
        "api_token_issue" | "api_token_revoke" => &["oauth"],
        "backup" | "restore" | "export_piefxis" | "import_piefxis" => &["mnesia", "backup"],
        "migrate_db" | "sql_migrate" | "import_ejabberd_sql" => &["sql", "backup"],
        _ => &[],
    }
}
