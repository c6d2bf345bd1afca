//! Rookery's configuration: an ejabberd-style YAML file read into [`Config`].
//!
//! Keys keep ejabberd's names and meanings (`hosts`, `loglevel`, `certfiles`,
//! `listen`, `auth_*`, `acl`, `access_rules`, `shaper`, `shaper_rules`,
//! `modules`, `define_macro`, …) so an existing `ejabberd.yml` loads: ejabberd
//! options, listeners and listener options Rookery does not implement become
//! warnings naming them and their line. Rookery's own keys are `data_dir`,
//! `archive_engine`, `ctl_socket` and `auth_scram_iterations`. Wrong values and YAML errors are
//! [`ConfigError`]s with file, line, column and what was expected.
//!
//! Files in this module: `yaml.rs` (YAML tree with positions), `check.rs`
//! (typed value readers and messages), `listen.rs` (the `listen` option),
//! `default.yml` (the embedded default configuration). Rule evaluation lives
//! in `crate::config::acl`.

pub mod acl;
pub mod check;
pub mod cluster;
pub mod listen;
pub mod modules;
pub mod openmetrics;
pub mod s2s;
mod server_info;
pub mod sql;
mod stun_disco;
pub mod websocket;
pub mod yaml;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use self::acl::{AccessRules, Acls, ShaperRules, ShaperValue, Subject};
use check::{Notes, Problem};
pub use listen::{Listener, ListenerModule};
use yaml::{Kind, Node};

/// The embedded default configuration (also shipped as documentation).
pub const DEFAULT_CONFIG_YAML: &str = include_str!("default.yml");

/// File label used in messages about the embedded default configuration.
pub const DEFAULT_CONFIG_LABEL: &str = "<default config>";

/// Default PBKDF2 iteration count for stored SCRAM secrets.
pub const DEFAULT_SCRAM_ITERATIONS: u32 = crate::auth::credentials::DEFAULT_ITERATIONS;

/// Largest accepted `auth_scram_iterations` (logins get slow beyond this).
pub const MAX_SCRAM_ITERATIONS: u32 = 10_000_000;

/// Default `negotiation_timeout` in seconds: from accept to authenticated
/// (and bound), for every listener.
pub const DEFAULT_NEGOTIATION_TIMEOUT: u64 = 60;

/// Log verbosity (ejabberd's `loglevel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// No logging (`none`, `0`).
    None,
    /// `emergency`, `alert`, `critical` (`1`).
    Critical,
    /// `error` (`2`).
    Error,
    /// `warning` (`3`).
    Warning,
    /// `notice`.
    Notice,
    /// `info` (`4`), the default.
    Info,
    /// `debug` (`5`).
    Debug,
}

impl LogLevel {
    /// The `tracing_subscriber::EnvFilter` directive for this level.
    pub fn tracing_directive(&self) -> &'static str {
        match self {
            LogLevel::None => "off",
            LogLevel::Critical | LogLevel::Error => "error",
            LogLevel::Warning => "warn",
            LogLevel::Notice | LogLevel::Info => "info",
            LogLevel::Debug => "debug",
        }
    }
}

/// How passwords are stored (`auth_password_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordFormat {
    /// Salted SCRAM secrets (default).
    Scram,
    /// ejabberd's `plain`; Rookery still stores SCRAM secrets (with a warning).
    Plain,
}

/// STARTTLS policy for server-to-server streams (`s2s_use_starttls`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S2sStartTls {
    /// `false`: no STARTTLS (ejabberd's default).
    Disabled,
    /// `optional`: offered and used when possible.
    Optional,
    /// `required`: streams must be encrypted.
    Required,
}

/// A traffic shaper: sustained rate and burst, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shaper {
    /// Bytes per second.
    pub rate: u64,
    /// Bytes that may be sent at once before the rate applies.
    pub burst_size: u64,
}

/// A configuration error: file, position and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// File name as given, or `<default config>`.
    pub file: String,
    /// 1-based line; 0 when the error is about the whole file.
    pub line: usize,
    /// 1-based column; 0 when unknown.
    pub column: usize,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (0, _) => write!(f, "{}: {}", self.file, self.message),
            (line, 0) => write!(f, "{}:{}: {}", self.file, line, self.message),
            (line, column) => write!(f, "{}:{}:{}: {}", self.file, line, column, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// The loaded configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// File it was read from; `None` for the embedded default.
    pub source: Option<PathBuf>,
    /// Served domains, normalised (lowercase), in file order.
    pub hosts: Vec<String>,
    /// Log verbosity.
    pub loglevel: LogLevel,
    /// `log_format: json`: one JSON object per log line (for log shippers).
    pub log_json: bool,
    /// Certificate and key files (globs expanded, existing files only).
    pub certfiles: Vec<PathBuf>,
    /// Supported listeners.
    pub listen: Vec<Listener>,
    /// Requested password storage format.
    #[allow(dead_code)] // read by the components that implement it
    pub auth_password_format: PasswordFormat,
    /// PBKDF2 iterations for new SCRAM secrets (`auth_scram_iterations`).
    pub scram_iterations: u32,
    /// Whether SCRAM-SHA-256 is offered: `false` with `auth_scram_hash: sha`.
    pub scram_sha256: bool,
    /// `registration_timeout`: minimum time between two in-band
    /// registrations from one IP address (`None` = `infinity`, no limit).
    pub registration_timeout: Option<std::time::Duration>,
    /// `negotiation_timeout`: time a connection has from its accept until
    /// it is authenticated (and, for clients, bound); `None` = `infinity`.
    pub negotiation_timeout: Option<std::time::Duration>,
    /// WebSocket (RFC 7395) options ([`websocket`]).
    pub websocket: websocket::WebSocketOptions,
    /// Who may read `/metrics` ([`openmetrics`]).
    pub openmetrics: openmetrics::OpenMetricsOptions,
    /// `mod_bosh`'s options (XEP-0124/XEP-0206).
    pub bosh: modules::BoshOptions,
    /// Named ACLs.
    pub acl: Acls,
    /// Named access rules (listener inline rules included under generated names).
    pub access_rules: AccessRules,
    /// Named shapers (`infinity` shapers are absent: they mean no shaping).
    pub shapers: HashMap<String, Shaper>,
    /// Named shaper rules.
    pub shaper_rules: ShaperRules,
    /// `api_permissions`: who may run which command from which front end.
    pub api_permissions: acl::ApiPermissions,
    /// Every `modules:` entry in file order, with its options (`Null` if
    /// none), checked against and normalised by the module's option spec.
    pub modules: Vec<(String, serde_yaml_ng::Value)>,
    /// The shaper rule limiting stored offline messages (`mod_offline`'s
    /// `access_max_user_messages`, default `max_user_offline_messages`).
    pub offline_limit_rule: String,
    /// Directory of the database, generated certificates and control socket.
    pub data_dir: PathBuf,
    /// The message archive's engine (`archive_engine`: `sled`, the
    /// default, in `data_dir/db/`, or `fjall`, in `data_dir/archive/`).
    pub archive_engine: crate::storage::ArchiveKind,
    /// `default_db: sql`: every persistent store in PostgreSQL ([`sql`]);
    /// `None`: the embedded sled database in `data_dir`.
    pub sql: Option<sql::SqlOptions>,
    /// The PostgreSQL options when any `sql_*` key is given, also without
    /// `default_db: sql` (for `rookery ctl migrate_db`).
    pub sql_options: Option<sql::SqlOptions>,
    /// `cluster:`: this node's name and the NATS servers of its cluster
    /// (`None`: a single server).
    pub cluster: Option<cluster::ClusterOptions>,
    /// Path of the control socket.
    pub ctl_socket: PathBuf,
    /// Default language of server messages (`language`, default `en`).
    #[allow(dead_code)] // read by the components that implement it
    pub language: String,
    /// STARTTLS policy for server-to-server streams.
    pub s2s_use_starttls: S2sStartTls,
    /// The other s2s options (`s2s_cafile`, `s2s_hosts`, `s2s_secure_auth`, ...).
    pub s2s: s2s::S2sOptions,
    /// Human-readable warnings, each starting with `FILE:LINE:`.
    pub warnings: Vec<String>,
    /// Label used in messages (file name or `<default config>`).
    file_label: String,
    /// Line of each `modules` entry, parallel to `modules`.
    module_lines: Vec<usize>,
    /// Line of each access rule written inline in a module's options, by
    /// its generated name.
    module_rule_lines: Vec<(String, usize)>,
    /// Shapers defined as `infinity`.
    unlimited_shapers: HashSet<String>,
}

/// Top-level options Rookery implements.
const SUPPORTED_OPTIONS: &[&str] = &[
    "access_rules",
    "acl",
    "api_permissions",
    "append_host_config",
    "archive_engine",
    "auth_method",
    "auth_password_format",
    "auth_scram_hash",
    "auth_scram_iterations",
    "certfiles",
    "ctl_socket",
    "data_dir",
    "define_macro",
    "host_config",
    "hosts",
    "include_config_file",
    "language",
    "listen",
    "log_format",
    "loglevel",
    "modules",
    "negotiation_timeout",
    "registration_timeout",
    "s2s_use_starttls",
    "shaper",
    "shaper_rules",
];

/// ejabberd top-level options that Rookery accepts and ignores with a warning.
const EJABBERD_OPTIONS: &[&str] = &[
    "acme",
    "allow_contrib_modules",
    "allow_multiple_connections",
    "anonymous_protocol",
    "auth_cache_life_time",
    "auth_cache_missed",
    "auth_cache_size",
    "auth_external_user_exists_check",
    "auth_opts",
    "auth_password_types_hidden_in_sasl1",
    "auth_stored_password_types",
    "auth_use_cache",
    "c2s_cafile",
    "c2s_ciphers",
    "c2s_dhfile",
    "c2s_protocol_options",
    "c2s_tls_compression",
    "ca_file",
    "cache_life_time",
    "cache_missed",
    "cache_size",
    "captcha_cmd",
    "captcha_host",
    "captcha_limit",
    "captcha_url",
    "cluster_backend",
    "cluster_nodes",
    "default_ram_db",
    "define_keyword",
    "disable_sasl_mechanisms",
    "disable_sasl_scram_downgrade_protection",
    "domain_balancing",
    "domain_certfile",
    "ext_api_headers",
    "ext_api_http_pool_size",
    "ext_api_path_oauth",
    "ext_api_url",
    "extauth_instances",
    "extauth_pool_name",
    "extauth_pool_size",
    "extauth_program",
    "fqdn",
    "hide_sensitive_log_data",
    "hosts_alias",
    "install_contrib_modules",
    "jwt_auth_only_rule",
    "jwt_jid_field",
    "jwt_key",
    "ldap_backups",
    "ldap_base",
    "ldap_deref_aliases",
    "ldap_dn_filter",
    "ldap_encrypt",
    "ldap_filter",
    "ldap_password",
    "ldap_port",
    "ldap_rootdn",
    "ldap_servers",
    "ldap_tls_cacertfile",
    "ldap_tls_certfile",
    "ldap_tls_depth",
    "ldap_tls_verify",
    "ldap_uids",
    "log_burst_limit_count",
    "log_burst_limit_window_time",
    "log_modules_fully",
    "log_rate_limit",
    "log_rotate_count",
    "log_rotate_date",
    "log_rotate_size",
    "max_fsm_queue",
    "net_ticktime",
    "new_sql_schema",
    "oauth_access",
    "oauth_cache_life_time",
    "oauth_cache_missed",
    "oauth_cache_rest_failure_life_time",
    "oauth_cache_size",
    "oauth_client_id_check",
    "oauth_db_type",
    "oauth_expire",
    "oauth_use_cache",
    "oom_killer",
    "oom_queue",
    "oom_watermark",
    "outgoing_s2s_families",
    "outgoing_s2s_ipv4_address",
    "outgoing_s2s_ipv6_address",
    "pam_service",
    "pam_userinfotype",
    "pgsql_users_number_estimate",
    "queue_dir",
    "queue_type",
    "redis_connect_timeout",
    "redis_db",
    "redis_password",
    "redis_pool_size",
    "redis_port",
    "redis_queue_type",
    "redis_server",
    "replaced_connection_timeout",
    "resource_conflict",
    "rest_proxy",
    "rest_proxy_password",
    "rest_proxy_port",
    "rest_proxy_username",
    "route_subdomains",
    "router_cache_life_time",
    "router_cache_missed",
    "router_cache_size",
    "router_db_type",
    "router_use_cache",
    "rpc_timeout",
    "s2s_access",
    "s2s_certfile",
    "s2s_ciphers",
    "s2s_dhfile",
    "s2s_max_retry_delay",
    "s2s_protocol_options",
    "s2s_queue_type",
    "s2s_tls_compression",
    "s2s_zlib",
    "sm_cache_life_time",
    "sm_cache_missed",
    "sm_cache_size",
    "sm_db_type",
    "sm_use_cache",
    "sql_flags",
    "sql_keepalive_interval",
    "sql_odbc_driver",
    "sql_prepared_statements",
    "sql_queue_type",
    "sql_schema_multihost",
    "sql_ssl_cafile",
    "sql_ssl_certfile",
    "sql_ssl_verify",
    "sql_start_interval",
    "update_sql_schema",
    "update_sql_schema_timeout",
    "use_cache",
    "validate_stream",
    "version",
    "watchdog_admins",
];

impl Config {
    /// Reads and validates a configuration file. Relative paths in it resolve
    /// against the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let label = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: label.clone(),
            line: 0,
            column: 0,
            message: format!("cannot read the configuration file: {e}"),
        })?;
        let parent = path.parent().unwrap_or(Path::new(""));
        let base = std::path::absolute(if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        })
        .unwrap_or_else(|_| parent.to_path_buf());
        let mut config = Config::from_str(&text, &label, &base)?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// The built-in configuration used when no file is given: `localhost`,
    /// client listeners on 127.0.0.1 and ::1 (5222 STARTTLS required, 5223
    /// direct TLS), data in `./rookery-data`. Parsed from `default.yml`.
    pub fn embedded_default() -> Config {
        match Config::from_str(DEFAULT_CONFIG_YAML, DEFAULT_CONFIG_LABEL, Path::new("")) {
            Ok(config) => config,
            // default.yml is compiled in and covered by tests.
            Err(e) => panic!("the embedded default configuration is invalid: {e}"),
        }
    }

    /// Parses configuration text. `file_label` names it in messages;
    /// relative paths resolve against `base_dir`.
    #[allow(clippy::should_implement_trait)]
    pub fn from_str(text: &str, file_label: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        let error = |p: Problem| ConfigError {
            file: file_label.to_string(),
            line: p.line,
            column: p.col,
            message: p.message,
        };
        let root = yaml::parse(text).map_err(|e| ConfigError {
            file: file_label.to_string(),
            line: e.line,
            column: e.col,
            message: e.message,
        })?;
        let mut notes = Notes::default();
        let mut config = build(root, file_label, base_dir, &mut notes).map_err(error)?;
        // Report in file order (sort is stable: same-line warnings keep their order).
        notes.warnings.sort_by_key(|(line, _)| *line);
        config.warnings = notes
            .warnings
            .into_iter()
            .map(|(line, message)| format!("{file_label}:{line}: {message}"))
            .collect();
        Ok(config)
    }

    /// The evaluation context for rules.
    fn rule_context(&self) -> acl::Context<'_> {
        acl::Context {
            acls: &self.acl,
            hosts: &self.hosts,
        }
    }

    /// Whether `api_permissions` lets `command` run from `frontend` for this
    /// user and/or address (see [`acl::ApiPermissions`]).
    pub fn api_allows(
        &self,
        frontend: acl::Frontend,
        user: Option<(&str, &str)>,
        ip: Option<IpAddr>,
        command: &str,
    ) -> bool {
        self.api_permissions.allows(
            &self.rule_context(),
            &self.access_rules,
            frontend,
            &Subject { user, ip },
            command,
            crate::ctl_catalog::tags(command),
        )
    }

    /// True when the access rule allows this user and/or address. Built-in
    /// rules: `all` allows, `none` denies; an undefined rule denies.
    pub fn access_allows(
        &self,
        rule: &str,
        user: Option<(&str, &str)>,
        ip: Option<IpAddr>,
    ) -> bool {
        self.rule_context()
            .access(&self.access_rules, rule, &Subject { user, ip })
            == acl::Access::Allow
    }
    /// A numeric limit from a shaper rule (e.g. mod_offline's
    /// `access_max_user_messages`); `None` = no limit (also when the rule is
    /// undefined, matches nothing, or yields `infinity`).
    pub fn shaper_rule_limit(
        &self,
        rule: &str,
        user: Option<(&str, &str)>,
        ip: Option<IpAddr>,
    ) -> Option<usize> {
        match self
            .rule_context()
            .shaper_value(&self.shaper_rules, rule, &Subject { user, ip })
        {
            Some(ShaperValue::Number(n)) => Some(usize::try_from(*n).unwrap_or(usize::MAX)),
            _ => None,
        }
    }

    /// Maximum simultaneous sessions of a user (`shaper_rules:
    /// max_user_sessions`); `None` = unlimited, ejabberd's default.
    pub fn max_user_sessions(&self, localpart: &str, host: &str) -> Option<usize> {
        self.shaper_rule_limit("max_user_sessions", Some((localpart, host)), None)
    }

    /// Maximum stored offline messages of a user (the shaper rule named by
    /// `mod_offline`'s `access_max_user_messages`, by default
    /// `max_user_offline_messages`); `None` = unlimited, ejabberd's default
    /// when the rule is absent.
    pub fn max_user_offline_messages(&self, localpart: &str, host: &str) -> Option<usize> {
        self.shaper_rule_limit(&self.offline_limit_rule, Some((localpart, host)), None)
    }

    /// The shaper to apply for a listener's `shaper:` value, which is a shaper
    /// rule or directly a shaper name; `None` = unlimited (also for `none`).
    pub fn shaper_for(
        &self,
        name: &str,
        user: Option<(&str, &str)>,
        ip: Option<IpAddr>,
    ) -> Option<Shaper> {
        if name == "none" || check::is_infinity(name) {
            return None;
        }
        if self.shaper_rules.is_defined(name) {
            return match self.rule_context().shaper_value(
                &self.shaper_rules,
                name,
                &Subject { user, ip },
            )? {
                ShaperValue::Number(rate) => Some(Shaper {
                    rate: *rate,
                    burst_size: *rate,
                }),
                ShaperValue::Shaper(shaper) => self.shapers.get(shaper).copied(),
                ShaperValue::Unlimited => None,
            };
        }
        self.shapers.get(name).copied()
    }
}

/// Helpers for modules and the server; not every build calls every one.
#[allow(dead_code)]
impl Config {
    /// Where `rookery ctl cert_import` puts certificates:
    /// `data_dir/imported-certs` (generated self-signed ones live in
    /// `data_dir/certs`).
    pub fn imported_certs_dir(&self) -> PathBuf {
        self.data_dir.join("imported-certs")
    }

    /// `certfiles` plus the `*.pem` files `rookery ctl cert_import` put in
    /// [`Config::imported_certs_dir`] (sorted).
    pub fn effective_certfiles(&self) -> Vec<PathBuf> {
        let mut files = self.certfiles.clone();
        if let Ok(dir) = std::fs::read_dir(self.imported_certs_dir()) {
            let mut imported: Vec<PathBuf> = dir
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "pem"))
                .collect();
            imported.sort();
            files.extend(imported);
        }
        files
    }

    /// True when the named ACL matches this user and/or address.
    pub fn acl_matches(
        &self,
        acl_name: &str,
        user: Option<(&str, &str)>,
        ip: Option<IpAddr>,
    ) -> bool {
        self.rule_context()
            .acl_matches(acl_name, &Subject { user, ip })
    }

    /// Line of a `modules:` entry, if listed.
    pub fn module_line(&self, module: &str) -> Option<usize> {
        self.modules
            .iter()
            .position(|(name, _)| name == module)
            .and_then(|i| self.module_lines.get(i).copied())
    }

    /// What every module is built with (`xep_support::registry::build`).
    pub fn module_globals(&self) -> xep_support::module::Globals {
        xep_support::module::Globals {
            registration_timeout: self.registration_timeout,
            data_dir: self.data_dir.clone(),
            // The built-in invitation pages: the first ejabberd_http listener
            // with a `mod_invites` request handler.
            invites_url: self.listen.iter().find_map(|l| {
                let path = l.invites_path.as_ref()?;
                let scheme = if l.tls { "https" } else { "http" };
                Some(format!("{scheme}://@HOST@:{}{path}", l.port))
            }),
        }
    }

    /// A warning about a module entry, formatted like the loader's warnings
    /// (`FILE:LINE: modules.NAME: MESSAGE`).
    pub fn module_warning(&self, module: &str, message: &str) -> String {
        match self.module_line(module) {
            Some(line) => format!("{}:{line}: modules.{module}: {message}", self.file_label),
            None => format!("{}: modules.{module}: {message}", self.file_label),
        }
    }

    /// Warnings for every listed module not in `supported`, in file order.
    pub fn unsupported_module_warnings(&self, supported: &[&str]) -> Vec<String> {
        self.modules
            .iter()
            .filter(|(name, _)| !supported.contains(&name.as_str()))
            .map(|(name, _)| {
                self.module_warning(
                    name,
                    &format!("module `{name}` is not supported by Rookery and is ignored"),
                )
            })
            .collect()
    }

    /// Options of a listed module (`None` if the module is not listed).
    pub fn module_options(&self, module: &str) -> Option<&serde_yaml_ng::Value> {
        self.modules
            .iter()
            .find(|(name, _)| name == module)
            .map(|(_, v)| v)
    }
}

/// Builds the configuration from a parsed document.
fn build(
    root: Option<Node>,
    file_label: &str,
    base_dir: &Path,
    notes: &mut Notes,
) -> Result<Config, Problem> {
    let root = root.unwrap_or(Node {
        kind: Kind::Map(Vec::new()),
        line: 1,
        col: 1,
    });
    let entries = match root.kind {
        Kind::Map(entries) => entries,
        _ => {
            return Err(check::expected(
                &root,
                "configuration",
                "a map of options such as `hosts: [example.org]`",
            ))
        }
    };

    // Macros first: they apply to every other option value.
    let mut macros: HashMap<String, Node> = HashMap::new();
    for (key, value) in &entries {
        if key.as_str() == Some("define_macro") {
            for (name, macro_value) in
                check::map(value, "define_macro", "a map of macro names to values")?
            {
                macros.insert(
                    check::key(name, "define_macro")?.to_string(),
                    macro_value.clone(),
                );
            }
        }
    }
    let mut options: Vec<(String, Node, Node)> = Vec::new();
    for (key, value) in entries {
        let name = check::key(&key, "configuration")?.to_string();
        let value = if name == "define_macro" {
            value
        } else {
            substitute(&value, &macros, &mut Vec::new())?
        };
        options.push((name, key, value));
    }
    let option = |name: &str| {
        options
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, _, v)| v)
    };

    for (name, key, _) in &options {
        if SUPPORTED_OPTIONS.contains(&name.as_str())
            || s2s::OPTIONS.contains(&name.as_str())
            || websocket::OPTIONS.contains(&name.as_str())
            || sql::OPTIONS.contains(&name.as_str())
            || openmetrics::OPTIONS.contains(&name.as_str())
            || cluster::OPTIONS.contains(&name.as_str())
        {
            continue;
        }
        if EJABBERD_OPTIONS.contains(&name.as_str()) {
            notes.warn(
                key,
                format!("`{name}`: ejabberd option not supported by Rookery; ignored"),
            );
        } else if name.starts_with("mod_") {
            notes.warn(
                key,
                format!("`{name}`: unknown option ignored (modules belong under `modules:`)"),
            );
        } else {
            notes.warn(key, format!("`{name}`: unknown option ignored"));
        }
    }

    let hosts = match option("hosts") {
        Some(node) => parse_hosts(node)?,
        None => {
            return Err(Problem {
                line: 1,
                col: 1,
                message: "missing required option `hosts` (the domains this server serves)"
                    .to_string(),
            })
        }
    };

    let loglevel = match option("loglevel") {
        Some(node) => parse_loglevel(node)?,
        None => LogLevel::Info,
    };
    let log_json = match option("log_format") {
        None => false,
        Some(node) => match check::string(node, "log_format", "text or json")? {
            "text" => false,
            "json" => true,
            _ => return Err(check::expected(node, "log_format", "text or json")),
        },
    };

    let certfiles = match option("certfiles") {
        Some(node) => parse_certfiles(node, base_dir, notes)?,
        None => Vec::new(),
    };

    let sql_accounts = option("default_db").and_then(|n| n.as_str()) == Some("sql");
    if let Some(node) = option("auth_method") {
        for (i, m) in check::list_or_single(node).into_iter().enumerate() {
            let path = if matches!(node.kind, Kind::Seq(_)) {
                check::index("auth_method", i)
            } else {
                "auth_method".to_string()
            };
            match check::string(m, &path, "an authentication method such as internal")? {
                "internal" | "mnesia" => {}
                // Accounts live wherever default_db puts them.
                "sql" if sql_accounts => {}
                other @ ("sql" | "ldap" | "external" | "anonymous" | "pam" | "jwt") => notes.warn(
                    m,
                    format!("{path}: authentication method `{other}` is not supported by Rookery; using internal"),
                ),
                _ => {
                    return Err(check::expected(
                        m,
                        &path,
                        "internal (ejabberd's sql, ldap, external, anonymous, pam and jwt are accepted with a warning)",
                    ))
                }
            }
        }
    }

    let auth_password_format = match option("auth_password_format") {
        None => PasswordFormat::Scram,
        Some(node) => match check::string(node, "auth_password_format", "scram or plain")? {
            "scram" => PasswordFormat::Scram,
            "plain" => {
                notes.warn(
                    node,
                    "auth_password_format: `plain` is not supported; passwords are stored as salted SCRAM secrets",
                );
                PasswordFormat::Plain
            }
            _ => {
                return Err(check::expected(
                    node,
                    "auth_password_format",
                    "scram or plain",
                ))
            }
        },
    };

    let mut scram_sha256 = true;
    if let Some(node) = option("auth_scram_hash") {
        match check::string(node, "auth_scram_hash", "sha, sha256 or sha512")? {
            "sha" => scram_sha256 = false,
            "sha256" => {}
            "sha512" => notes.warn(
                node,
                "auth_scram_hash: sha512 is not supported; Rookery stores SCRAM-SHA-1 and SCRAM-SHA-256 secrets",
            ),
            _ => return Err(check::expected(node, "auth_scram_hash", "sha, sha256 or sha512")),
        }
    }

    let scram_iterations = match option("auth_scram_iterations") {
        None => DEFAULT_SCRAM_ITERATIONS,
        Some(node) => {
            let what =
                format!("an iteration count {DEFAULT_SCRAM_ITERATIONS}-{MAX_SCRAM_ITERATIONS}");
            let n = check::integer(
                node,
                "auth_scram_iterations",
                u64::from(DEFAULT_SCRAM_ITERATIONS),
                u64::from(MAX_SCRAM_ITERATIONS),
                &what,
            )?;
            u32::try_from(n).map_err(|_| check::expected(node, "auth_scram_iterations", &what))?
        }
    };

    // ejabberd's default: one registration per address every 600 seconds.
    let registration_timeout = match option("registration_timeout") {
        None => Some(std::time::Duration::from_secs(600)),
        Some(node) => check::pos_int_or_infinity(node, "registration_timeout")?
            .map(std::time::Duration::from_secs),
    };

    // Seconds, as ejabberd's option of the same name.
    let negotiation_timeout = match option("negotiation_timeout") {
        None => Some(std::time::Duration::from_secs(DEFAULT_NEGOTIATION_TIMEOUT)),
        Some(node) => check::pos_int_or_infinity(node, "negotiation_timeout")?
            .map(std::time::Duration::from_secs),
    };

    let websocket = websocket::parse(option)?;
    let openmetrics = openmetrics::parse(option)?;

    let s2s_use_starttls = match option("s2s_use_starttls") {
        None => S2sStartTls::Disabled,
        Some(node) => {
            let what = "false, optional or required";
            match check::string(node, "s2s_use_starttls", what)? {
                "false" | "no" | "off" => S2sStartTls::Disabled,
                "optional" | "true" | "yes" | "on" => S2sStartTls::Optional,
                "required" => S2sStartTls::Required,
                "required_trusted" => {
                    notes.warn(
                        node,
                        "s2s_use_starttls: `required_trusted` is treated as `required`",
                    );
                    S2sStartTls::Required
                }
                _ => return Err(check::expected(node, "s2s_use_starttls", what)),
            }
        }
    };

    let s2s = s2s::parse(option, |p| resolve(base_dir, p))?;

    let language = match option("language") {
        None => "en".to_string(),
        Some(node) => {
            let text = check::string(node, "language", "a language tag such as en")?;
            let valid = !text.is_empty()
                && text.len() <= 35
                && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
            if !valid {
                return Err(check::expected(
                    node,
                    "language",
                    "a language tag such as en",
                ));
            }
            text.to_string()
        }
    };

    let empty = Node {
        kind: Kind::Map(Vec::new()),
        line: 1,
        col: 1,
    };
    let acls = Acls::parse(option("acl").unwrap_or(&empty), "acl", notes)?;
    let mut access_rules = AccessRules::parse(
        option("access_rules").unwrap_or(&empty),
        "access_rules",
        notes,
    )?;
    let (shapers, unlimited_shapers) = parse_shapers(option("shaper").unwrap_or(&empty))?;
    let mut shaper_rules = ShaperRules::parse(
        option("shaper_rules").unwrap_or(&empty),
        "shaper_rules",
        notes,
    )?;

    let defaults = listen::ListenDefaults {
        s2s_starttls: match s2s_use_starttls {
            S2sStartTls::Disabled => (false, false),
            S2sStartTls::Optional => (true, false),
            S2sStartTls::Required => (true, true),
        },
    };
    let mut inline = listen::InlineRules::default();
    let listeners = match option("listen") {
        Some(node) => listen::parse(node, &defaults, notes, &mut inline)?,
        None => Vec::new(),
    };
    for l in &listeners {
        if let Some(h) = l.service_hosts.iter().find(|h| hosts.contains(&h.domain)) {
            return Err(Problem {
                line: l.line,
                col: 1,
                message: format!(
                    "listen: component domain {} is also one of `hosts`; a component needs a domain of its own (e.g. gateway.{})",
                    h.domain, h.domain
                ),
            });
        }
    }
    for (name, rule) in inline.access {
        access_rules.insert(&name, rule);
    }
    for (name, rule) in inline.shaper {
        shaper_rules.insert(&name, rule);
    }

    let api_permissions = match option("api_permissions") {
        Some(node) => {
            let p = acl::ApiPermissions::parse(node, "api_permissions", notes, &|name| {
                crate::ctl_catalog::find(name).is_some() || name == "announce"
            })?;
            for (group, rule) in p.referenced_rules() {
                if !access_rules.is_defined(rule) {
                    notes.warn(
                        node,
                        format!(
                            "api_permissions.{group}: access rule `{rule}` is not defined and allows nobody"
                        ),
                    );
                }
            }
            if !p.ctl_has_group() {
                notes.warn(
                    node,
                    "api_permissions: no group has `from: ejabberd_ctl` (or no `from:`): \
                     `rookery ctl` will be refused every command",
                );
            }
            p
        }
        None => acl::ApiPermissions::defaults(&access_rules),
    };

    let modules::Modules {
        entries: modules,
        lines: module_lines,
        rule_lines: module_rule_lines,
    } = match option("modules") {
        Some(node) => modules::parse(node, notes, &mut access_rules)?,
        None => modules::Modules {
            entries: Vec::new(),
            lines: Vec::new(),
            rule_lines: Vec::new(),
        },
    };
    let offline_limit_rule = modules::offline_limit_rule(&modules);
    let bosh = modules::bosh_options(&modules);

    let data_dir = match option("data_dir") {
        Some(node) => resolve(
            base_dir,
            check::string(node, "data_dir", "a directory path")?,
        ),
        None => resolve(base_dir, "rookery-data"),
    };
    let archive_engine = match option("archive_engine") {
        Some(node) => {
            let what = "`fjall` or `sled`";
            crate::storage::ArchiveKind::parse(check::string(node, "archive_engine", what)?)
                .ok_or_else(|| check::expected(node, "archive_engine", what))?
        }
        None => crate::storage::ArchiveKind::DEFAULT,
    };
    let (use_sql, sql_options) = sql::parse(option, notes)?;
    let sql = if use_sql { sql_options.clone() } else { None };
    cluster::require_sql(option("cluster"), use_sql)?;
    let cluster = cluster::parse(option("cluster"))?;
    let ctl_socket = match option("ctl_socket") {
        Some(node) => resolve(base_dir, check::string(node, "ctl_socket", "a file path")?),
        None => data_dir.join("rookery.ctl"),
    };

    for (name, key, value) in &options {
        match name.as_str() {
            "include_config_file" => notes.warn(
                key,
                "`include_config_file`: not supported by Rookery; the included files are not read",
            ),
            "host_config" | "append_host_config" => {
                let hosts: Vec<&str> = value
                    .as_map()
                    .map(|m| m.iter().filter_map(|(k, _)| k.as_str()).collect())
                    .unwrap_or_default();
                notes.warn(
                    key,
                    format!(
                        "`{name}`: per-host configuration is not supported by Rookery; settings for {} ignored",
                        if hosts.is_empty() { "all hosts".to_string() } else { hosts.join(", ") }
                    ),
                );
            }
            _ => {}
        }
    }

    let config = Config {
        source: None,
        hosts,
        loglevel,
        log_json,
        certfiles,
        listen: listeners,
        auth_password_format,
        scram_iterations,
        scram_sha256,
        registration_timeout,
        negotiation_timeout,
        websocket,
        openmetrics,
        bosh,
        acl: acls,
        access_rules,
        shapers,
        shaper_rules,
        api_permissions,
        modules,
        offline_limit_rule,
        data_dir,
        archive_engine,
        sql,
        sql_options,
        cluster,
        ctl_socket,
        language,
        s2s_use_starttls,
        s2s,
        warnings: Vec::new(),
        file_label: file_label.to_string(),
        module_lines,
        module_rule_lines,
        unlimited_shapers,
    };
    check_references(
        &config,
        option("access_rules"),
        option("shaper_rules"),
        notes,
    );
    Ok(config)
}

/// Replaces scalar values equal to a macro name by the macro's value
/// (recursively, as ejabberd does); keys are left alone.
fn substitute(
    node: &Node,
    macros: &HashMap<String, Node>,
    active: &mut Vec<String>,
) -> Result<Node, Problem> {
    if macros.is_empty() {
        return Ok(node.clone());
    }
    Ok(match &node.kind {
        Kind::Scalar { value, .. } => match macros.get(value) {
            Some(replacement) => {
                if active.contains(value) {
                    return Err(Problem::at(
                        node,
                        format!(
                            "define_macro: macro `{value}` refers to itself ({} -> {value})",
                            active.join(" -> ")
                        ),
                    ));
                }
                active.push(value.clone());
                let expanded = substitute(replacement, macros, active)?;
                active.pop();
                expanded
            }
            None => node.clone(),
        },
        Kind::Seq(items) => Node {
            kind: Kind::Seq(
                items
                    .iter()
                    .map(|item| substitute(item, macros, active))
                    .collect::<Result<_, _>>()?,
            ),
            ..node.clone()
        },
        Kind::Map(entries) => Node {
            kind: Kind::Map(
                entries
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), substitute(v, macros, active)?)))
                    .collect::<Result<_, Problem>>()?,
            ),
            ..node.clone()
        },
    })
}

/// Parses `hosts`: a non-empty list of domain names, normalised.
fn parse_hosts(node: &Node) -> Result<Vec<String>, Problem> {
    let items = check::list_or_single(node);
    if items.is_empty() {
        return Err(check::expected(
            node,
            "hosts",
            "a non-empty list of domain names",
        ));
    }
    let mut hosts: Vec<String> = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let path = check::index("hosts", i);
        let host = check::domain_node(item, &path)?;
        if hosts.contains(&host) {
            return Err(Problem::at(
                item,
                format!("{path}: host {host} is listed twice"),
            ));
        }
        hosts.push(host);
    }
    Ok(hosts)
}

/// Parses `loglevel`: a name or ejabberd's old numbers 0-5.
fn parse_loglevel(node: &Node) -> Result<LogLevel, Problem> {
    let what =
        "one of none, emergency, alert, critical, error, warning, notice, info, debug (or 0-5)";
    let text = check::string(node, "loglevel", what)?;
    Ok(match text {
        "none" | "0" => LogLevel::None,
        "emergency" | "alert" | "critical" | "1" => LogLevel::Critical,
        "error" | "2" => LogLevel::Error,
        "warning" | "3" => LogLevel::Warning,
        "notice" => LogLevel::Notice,
        "info" | "4" => LogLevel::Info,
        "debug" | "5" => LogLevel::Debug,
        _ => return Err(check::expected(node, "loglevel", what)),
    })
}

/// Resolves a configured path against the configuration file's directory.
fn resolve(base_dir: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base_dir.join(p)
    }
}

/// Parses `certfiles`: paths or globs, expanded to existing files.
fn parse_certfiles(
    node: &Node,
    base_dir: &Path,
    notes: &mut Notes,
) -> Result<Vec<PathBuf>, Problem> {
    let mut out: Vec<PathBuf> = Vec::new();
    for (i, item) in check::list_or_single(node).into_iter().enumerate() {
        let path = check::index("certfiles", i);
        let text = check::string(item, &path, "a file path or glob")?;
        let pattern = resolve(base_dir, text);
        let files = if text.contains(['*', '?', '[']) {
            let found = expand_glob(&pattern);
            if found.is_empty() {
                notes.warn(item, format!("{path}: {text:?} matches no file"));
            }
            found
        } else if pattern.is_file() {
            vec![pattern]
        } else {
            notes.warn(
                item,
                format!(
                    "{path}: {} does not exist or is not a file; skipped",
                    pattern.display()
                ),
            );
            Vec::new()
        };
        for f in files {
            if !out.contains(&f) {
                out.push(f);
            }
        }
    }
    Ok(out)
}

/// Expands `*`, `?` and `[...]` in the components of a path; returns the
/// existing files that match, sorted. Hidden entries match only patterns that
/// start with a dot.
pub fn expand_glob(pattern: &Path) -> Vec<PathBuf> {
    use std::path::Component;
    let mut current: Vec<PathBuf> = vec![PathBuf::new()];
    for component in pattern.components() {
        let part = component.as_os_str().to_string_lossy().into_owned();
        let is_pattern =
            matches!(component, Component::Normal(_)) && part.contains(['*', '?', '[']);
        if !is_pattern {
            for p in &mut current {
                p.push(component.as_os_str());
            }
            continue;
        }
        let Ok(re) = regex::Regex::new(&acl::glob_to_regex(&part)) else {
            return Vec::new();
        };
        let mut next = Vec::new();
        for dir in &current {
            let listing = if dir.as_os_str().is_empty() {
                std::fs::read_dir(".")
            } else {
                std::fs::read_dir(dir)
            };
            let Ok(listing) = listing else { continue };
            for entry in listing.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') && !part.starts_with('.') {
                    continue;
                }
                if re.is_match(&name) {
                    next.push(dir.join(&name));
                }
            }
        }
        current = next;
    }
    let mut files: Vec<PathBuf> = current.into_iter().filter(|p| p.is_file()).collect();
    files.sort();
    files
}

/// Parses `shaper`: `NAME: RATE`, `NAME: {rate: R, burst_size: B}` or `NAME: infinity`.
fn parse_shapers(node: &Node) -> Result<(HashMap<String, Shaper>, HashSet<String>), Problem> {
    let mut shapers = HashMap::new();
    let mut unlimited = HashSet::new();
    for (key, value) in check::map(node, "shaper", "a map of shaper names to rates")? {
        let name = check::key(key, "shaper")?;
        let path = check::join("shaper", name);
        if matches!(name, "none" | "infinity" | "infinite" | "unlimited") {
            return Err(Problem::at(
                key,
                format!("{path}: \"{name}\" is reserved and cannot name a shaper"),
            ));
        }
        let what = "a rate in bytes per second, {rate: N, burst_size: M} or infinity";
        match &value.kind {
            Kind::Map(entries) => {
                let mut rate = None;
                let mut burst = None;
                for (k, v) in entries {
                    let field = check::key(k, &path)?;
                    let field_path = check::join(&path, field);
                    match field {
                        "rate" => {
                            rate = Some(check::integer(
                                v,
                                &field_path,
                                1,
                                u64::MAX,
                                "a positive integer",
                            )?)
                        }
                        "burst_size" => {
                            burst = Some(check::integer(
                                v,
                                &field_path,
                                1,
                                u64::MAX,
                                "a positive integer",
                            )?)
                        }
                        _ => {
                            return Err(Problem::at(
                                k,
                                format!(
                                "{field_path}: unknown shaper option; expected rate or burst_size"
                            ),
                            ))
                        }
                    }
                }
                let Some(rate) = rate else {
                    return Err(Problem::at(
                        value,
                        format!("{path}: missing required option `rate`"),
                    ));
                };
                shapers.insert(
                    name.to_string(),
                    Shaper {
                        rate,
                        burst_size: burst.unwrap_or(rate),
                    },
                );
            }
            _ => match check::pos_int_or_infinity(value, &path)
                .map_err(|_| check::expected(value, &path, what))?
            {
                Some(rate) => {
                    shapers.insert(
                        name.to_string(),
                        Shaper {
                            rate,
                            burst_size: rate,
                        },
                    );
                }
                None => {
                    unlimited.insert(name.to_string());
                }
            },
        }
    }
    Ok((shapers, unlimited))
}

/// Warns about names used but not defined: ACLs in rules, shapers in shaper
/// rules, rules and shapers in listeners, non-numeric session limits.
fn check_references(
    config: &Config,
    access_node: Option<&Node>,
    shaper_node: Option<&Node>,
    notes: &mut Notes,
) {
    let line_of = |node: Option<&Node>, rule: &str| -> usize {
        node.and_then(Node::as_map)
            .and_then(|m| m.iter().find(|(k, _)| k.as_str() == Some(rule)))
            .map(|(k, _)| k.line)
            .unwrap_or(1)
    };
    let mut found: Vec<(usize, String)> = Vec::new();
    for (rule, acl_name) in config.access_rules.referenced_acls() {
        if !config.acl.is_defined(acl_name) {
            let line = config
                .listen
                .iter()
                .find(|l| l.access.as_deref() == Some(rule))
                .map(|l| l.line)
                .or_else(|| {
                    config
                        .module_rule_lines
                        .iter()
                        .find(|(name, _)| name == rule)
                        .map(|(_, line)| *line)
                })
                .unwrap_or_else(|| line_of(access_node, rule));
            found.push((
                line,
                format!("access rule `{rule}` refers to ACL `{acl_name}`, which is not defined and matches nobody"),
            ));
        }
    }
    for (rule, acl_name) in config.shaper_rules.referenced_acls() {
        if !config.acl.is_defined(acl_name) {
            found.push((
                line_of(shaper_node, rule),
                format!("shaper rule `{rule}` refers to ACL `{acl_name}`, which is not defined and matches nobody"),
            ));
        }
    }
    let is_shaper =
        |name: &str| config.shapers.contains_key(name) || config.unlimited_shapers.contains(name);
    for (rule, value) in config.shaper_rules.values() {
        let numeric_rule = rule == "max_user_sessions" || rule == config.offline_limit_rule;
        match value {
            ShaperValue::Shaper(name) if numeric_rule => found.push((
                line_of(shaper_node, rule),
                format!("shaper rule `{rule}` should yield a number or infinity, not `{name}`; treated as unlimited"),
            )),
            ShaperValue::Shaper(name) if !is_shaper(name) => found.push((
                line_of(shaper_node, rule),
                format!("shaper rule `{rule}` refers to unknown shaper `{name}`; treated as unlimited"),
            )),
            _ => {}
        }
    }
    listen::check_references(
        &config.listen,
        &config.access_rules,
        &config.shaper_rules,
        &is_shaper,
        &mut |line, message| found.push((line, message)),
    );
    found.sort();
    found.dedup();
    notes.warnings.extend(found);
}

#[cfg(test)]
mod tests;
