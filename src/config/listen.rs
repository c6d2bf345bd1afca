//! The `listen` option: listener entries in ejabberd's format.
//!
//! Supported modules are `ejabberd_c2s` (`c2s`), `ejabberd_s2s_in` (`s2s`),
//! `ejabberd_service` (`service`, XEP-0114 external components) and
//! `ejabberd_http` (`http`: `mod_http_upload`, `ejabberd_http_ws` for RFC
//! 7395 WebSocket clients, `mod_bosh` for XEP-0206 BOSH clients, and
//! `mod_host_meta` for XEP-0156 discovery).
//! Other ejabberd listener modules (`ejabberd_http`, `ejabberd_stun`,
//! `mod_mqtt`, …) and ejabberd listener options Rookery does not implement are
//! reported as warnings and skipped; wrong values of supported options are
//! errors with their position.

use std::net::{IpAddr, Ipv4Addr};

use super::check::{self, Notes, Problem};
use super::yaml::{Kind, Node};
use crate::config::acl::{self, AccessRules, ShaperRules};

/// Default `max_stanza_size` of client listeners (ejabberd's shipped config).
pub const DEFAULT_C2S_MAX_STANZA_SIZE: usize = 262_144;
/// Default `max_stanza_size` of server listeners (ejabberd's shipped config).
pub const DEFAULT_S2S_MAX_STANZA_SIZE: usize = 524_288;
/// Default `pre_auth_max_stanza_size` of every listener: before it is
/// authenticated a peer sends only a stream header, `<starttls/>`, SASL,
/// dialback, a component handshake or an in-band registration.
pub const DEFAULT_PRE_AUTH_MAX_STANZA_SIZE: usize = 8192;

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListenerModule {
    /// Client-to-server (`ejabberd_c2s`).
    C2s,
    /// Incoming server-to-server (`ejabberd_s2s_in`).
    S2s,
    /// External components (`ejabberd_service`, XEP-0114).
    Service,
    /// HTTP (`ejabberd_http`): XEP-0363 uploads, WebSocket, BOSH, host-meta.
    Http,
}

/// A component domain an `ejabberd_service` listener accepts, with its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceHost {
    pub domain: String,
    pub password: String,
}

/// One supported listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// TCP port (0 = any free port chosen by the system, as in ejabberd).
    pub port: u16,
    /// Address to bind (ejabberd's default `0.0.0.0`).
    pub ip: IpAddr,
    /// What the listener serves.
    pub module: ListenerModule,
    /// Direct TLS (TLS from the first byte, XEP-0368).
    pub tls: bool,
    /// STARTTLS offered (also true when `starttls_required`).
    pub starttls: bool,
    /// STARTTLS required before authentication / stream use.
    pub starttls_required: bool,
    /// Largest stanza in bytes; `None` = unlimited.
    pub max_stanza_size: Option<usize>,
    /// Largest stanza in bytes before the peer is authenticated (c2s: SASL
    /// success; s2s: a domain authenticated; components: the handshake);
    /// `None` = unlimited. See [`Listener::pre_auth_limit`].
    pub pre_auth_max_stanza_size: Option<usize>,
    /// Shaper rule or shaper name (see `Config::shaper_for`); `None` = no shaper.
    pub shaper: Option<String>,
    /// Access rule that decides who may use the listener; `None` = everyone.
    pub access: Option<String>,
    /// Component domains and secrets (`ejabberd_service` listeners only).
    pub service_hosts: Vec<ServiceHost>,
    /// The path `mod_http_upload` serves (`ejabberd_http` listeners only).
    pub upload_path: Option<String>,
    /// The paths `ejabberd_http_ws` serves (`ejabberd_http` listeners only).
    pub ws_paths: Vec<String>,
    /// The path `mod_invites` serves its landing pages and web registration
    /// form under (`ejabberd_http` listeners only).
    pub invites_path: Option<String>,
    /// The paths `mod_bosh` serves (`ejabberd_http` listeners only).
    pub bosh_paths: Vec<String>,
    /// Whether `/.well-known/host-meta` is served (XEP-0156): with a
    /// WebSocket or BOSH path, or a `mod_host_meta` handler.
    pub host_meta: bool,
    /// The paths `/metrics` (OpenMetrics) is served at: request handler
    /// `mod_prometheus` (`ejabberd_http` listeners only).
    pub metrics_paths: Vec<String>,
    /// The paths `mod_http_api` serves (`POST PATH/COMMAND`).
    pub api_paths: Vec<String>,
    /// Line of the listener in the configuration file.
    pub line: usize,
}

impl Listener {
    /// The stanza-size limit before the peer is authenticated: the smaller
    /// of `pre_auth_max_stanza_size` and `max_stanza_size`.
    pub fn pre_auth_limit(&self) -> Option<usize> {
        match (self.pre_auth_max_stanza_size, self.max_stanza_size) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// ejabberd listener options Rookery accepts but ignores (with a warning).
const IGNORED_OPTIONS: &[&str] = &[
    "accept_interval",
    "allow_unencrypted_sasl2",
    "backlog",
    "cafile",
    "certfile",
    "ciphers",
    "dhfile",
    "hibernate_after",
    "max_fsm_queue",
    "max_stanza_elements",
    "pre_auth_max_stanza_elements",
    "protocol_options",
    "send_timeout",
    "supervisor",
    "tls_compression",
    "tls_verify",
    "unix_socket",
    "use_proxy_protocol",
    "zlib",
];

/// Global settings that influence listeners.
pub struct ListenDefaults {
    /// `s2s_use_starttls`: (offered, required) for s2s listeners.
    pub s2s_starttls: (bool, bool),
}

/// Inline rules found in listeners, registered under generated names.
#[derive(Default)]
pub struct InlineRules {
    /// Access rules from `access: [...]` written inline.
    pub access: Vec<(String, acl::AccessRule)>,
    /// Shaper rules from `shaper: [...]` written inline.
    pub shaper: Vec<(String, acl::ShaperRule)>,
}

/// Parses the `listen` option into supported listeners.
pub fn parse(
    node: &Node,
    defaults: &ListenDefaults,
    notes: &mut Notes,
    inline: &mut InlineRules,
) -> Result<Vec<Listener>, Problem> {
    let items = match &node.kind {
        Kind::Seq(items) => items.as_slice(),
        _ if node.is_null() => &[],
        _ => return Err(check::expected(node, "listen", "a list of listeners")),
    };
    let mut out: Vec<Listener> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = check::index("listen", i);
        let Some(listener) = parse_one(item, &path, defaults, notes, inline)? else {
            continue;
        };
        for other in &out {
            let same_family = other.ip.is_ipv4() == listener.ip.is_ipv4();
            if listener.port == 0 || other.port != listener.port || !same_family {
                continue;
            }
            if other.ip == listener.ip {
                return Err(Problem::at(
                    item,
                    format!(
                        "{path}: port {} on {} is already used by the listener at line {}",
                        listener.port, listener.ip, other.line
                    ),
                ));
            }
            if other.ip.is_unspecified() || listener.ip.is_unspecified() {
                return Err(Problem::at(
                    item,
                    format!(
                        "{path}: port {} on {} conflicts with the listener on {} at line {}",
                        listener.port, listener.ip, other.ip, other.line
                    ),
                ));
            }
        }
        out.push(listener);
    }
    Ok(out)
}

/// Parses one listener; `Ok(None)` when it is skipped with a warning.
fn parse_one(
    item: &Node,
    path: &str,
    defaults: &ListenDefaults,
    notes: &mut Notes,
    inline: &mut InlineRules,
) -> Result<Option<Listener>, Problem> {
    let entries = match &item.kind {
        Kind::Map(entries) => entries,
        _ => {
            return Err(check::expected(
                item,
                path,
                "a listener such as {port: 5222, module: ejabberd_c2s}",
            ))
        }
    };
    let Some(module_node) = item.get("module") else {
        return Err(Problem::at(
            item,
            format!("{path}: missing required option `module`"),
        ));
    };
    let module_path = check::join(path, "module");
    let module_name = check::string(
        module_node,
        &module_path,
        "a listener module such as ejabberd_c2s",
    )?;
    let module = match module_name {
        "ejabberd_c2s" | "c2s" => ListenerModule::C2s,
        "ejabberd_s2s_in" | "s2s" => ListenerModule::S2s,
        "ejabberd_service" | "service" => ListenerModule::Service,
        "ejabberd_http" | "http" => ListenerModule::Http,
        other if is_module_name(other) => {
            let port = item
                .get("port")
                .and_then(Node::as_str)
                .map(|p| format!(" on port {p}"))
                .unwrap_or_default();
            notes.warn(
                item,
                format!("{path}: listener module `{other}`{port} is not supported by Rookery; listener skipped"),
            );
            return Ok(None);
        }
        _ => return Err(check::expected(
            module_node,
            &module_path,
            "ejabberd_c2s, ejabberd_s2s_in or ejabberd_service (other ejabberd_*/mod_* listener modules are skipped)",
        )),
    };

    let Some(port_node) = item.get("port") else {
        return Err(Problem::at(
            item,
            format!("{path}: missing required option `port`"),
        ));
    };
    let port_path = check::join(path, "port");
    if port_node.as_str().is_some_and(|p| p.starts_with("unix:")) {
        notes.warn(
            port_node,
            format!(
                "{port_path}: unix socket listeners are not supported by Rookery; listener skipped"
            ),
        );
        return Ok(None);
    }
    // 0 (as in ejabberd) asks the system for any free port; used by tests.
    let port = check::integer(port_node, &port_path, 0, 65535, "a port number 1-65535")?;
    let port = u16::try_from(port)
        .map_err(|_| check::expected(port_node, &port_path, "a port number 1-65535"))?;

    let mut listener = Listener {
        port,
        ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        module,
        tls: false,
        starttls: false,
        starttls_required: false,
        max_stanza_size: Some(match module {
            // HTTP listeners: the limit applies to WebSocket clients.
            ListenerModule::C2s | ListenerModule::Http => DEFAULT_C2S_MAX_STANZA_SIZE,
            ListenerModule::S2s | ListenerModule::Service => DEFAULT_S2S_MAX_STANZA_SIZE,
        }),
        pre_auth_max_stanza_size: Some(DEFAULT_PRE_AUTH_MAX_STANZA_SIZE),
        shaper: None,
        access: None,
        service_hosts: Vec::new(),
        upload_path: None,
        ws_paths: Vec::new(),
        invites_path: None,
        bosh_paths: Vec::new(),
        host_meta: false,
        metrics_paths: Vec::new(),
        api_paths: Vec::new(),
        line: item.line,
    };
    let mut starttls: Option<bool> = None;
    let mut starttls_required: Option<bool> = None;
    // ejabberd_service: `password` for every host, `hosts` with their own.
    let mut service_password: Option<String> = None;
    let mut service_hosts: Vec<(String, Option<String>, &Node)> = Vec::new();
    // ejabberd_http: handlers other than mod_http_upload (warned if the listener is kept).
    let mut unsupported_handlers: Vec<(&Node, String)> = Vec::new();

    for (key, value) in entries {
        let name = check::key(key, path)?;
        let opt_path = check::join(path, name);
        match name {
            "module" | "port" => {}
            "ip" => {
                let text = check::string(value, &opt_path, "an IP address such as \"::\" or 127.0.0.1")?;
                listener.ip = text
                    .parse()
                    .map_err(|_| check::expected(value, &opt_path, "an IP address such as \"::\" or 127.0.0.1"))?;
            }
            "transport" => match check::string(value, &opt_path, "tcp")? {
                "tcp" => {}
                _ => return Err(check::expected(value, &opt_path, "tcp (udp is only for ejabberd_stun/ejabberd_sip)")),
            },
            "tls" => listener.tls = check::boolean(value, &opt_path)?,
            "starttls" => starttls = Some(check::boolean(value, &opt_path)?),
            "starttls_required" => starttls_required = Some(check::boolean(value, &opt_path)?),
            "max_stanza_size" => {
                listener.max_stanza_size = check::pos_int_or_infinity(value, &opt_path)?
                    .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
            }
            "pre_auth_max_stanza_size" => {
                listener.pre_auth_max_stanza_size = check::pos_int_or_infinity(value, &opt_path)?
                    .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
            }
            "shaper" => {
                listener.shaper = match &value.kind {
                    Kind::Scalar { value: text, .. } if !value.is_null() => {
                        (text != "none").then(|| text.clone())
                    }
                    Kind::Seq(_) | Kind::Map(_) => {
                        let rule = acl::parse_shaper_rule(value, &opt_path, notes)?;
                        let generated = format!("{opt_path} (inline)");
                        inline.shaper.push((generated.clone(), rule));
                        Some(generated)
                    }
                    _ => return Err(check::expected(value, &opt_path, "a shaper rule or shaper name")),
                }
            }
            "access" => {
                listener.access = match &value.kind {
                    Kind::Scalar { value: text, .. } if !value.is_null() => {
                        (text != "all").then(|| text.clone())
                    }
                    Kind::Seq(_) | Kind::Map(_) => {
                        let rule = acl::parse_access_rule(value, &opt_path, notes)?;
                        let generated = format!("{opt_path} (inline)");
                        inline.access.push((generated.clone(), rule));
                        Some(generated)
                    }
                    _ => return Err(check::expected(value, &opt_path, "an access rule name")),
                }
            }
            "password" if module == ListenerModule::Service => {
                service_password =
                    Some(check::string(value, &opt_path, "the components' shared secret")?.to_string());
            }
            "hosts" if module == ListenerModule::Service => {
                let what = "a map of component domains, e.g. {icq.example.org: {password: secret}}";
                let Kind::Map(hosts) = &value.kind else {
                    return Err(check::expected(value, &opt_path, what));
                };
                for (host, opts) in hosts {
                    let domain = check::key(host, &opt_path)?.to_lowercase();
                    let host_path = check::join(&opt_path, &domain);
                    if jid::BareJid::new(&domain).map_or(true, |j| j.node().is_some()) {
                        return Err(check::expected(host, &opt_path, "a domain name"));
                    }
                    let password = match opts.get("password") {
                        Some(pw) => Some(
                            check::string(pw, &check::join(&host_path, "password"), "a shared secret")?
                                .to_string(),
                        ),
                        None if opts.is_null() || opts.as_map().is_some() => None,
                        None => return Err(check::expected(opts, &host_path, "{password: secret}")),
                    };
                    service_hosts.push((domain, password, host));
                }
            }
            "request_handlers" if module == ListenerModule::Http => {
                let Kind::Map(handlers) = &value.kind else {
                    return Err(check::expected(value, &opt_path, "a map of paths to handlers, e.g. {/upload: mod_http_upload}"));
                };
                for (p, h) in handlers {
                    let p = check::key(p, &opt_path)?;
                    let handler = check::string(h, &check::join(&opt_path, p), "a request handler module")?;
                    if handler == "mod_http_upload" {
                        listener.upload_path = Some(p.trim_end_matches('/').to_string());
                    } else if handler == "mod_invites" {
                        let p = p.trim_end_matches('/');
                        if !p.starts_with('/') {
                            return Err(check::expected(h, &check::join(&opt_path, p), "a path starting with /"));
                        }
                        listener.invites_path = Some(p.to_string());
                    } else if handler == "ejabberd_http_ws" || handler == "mod_bosh" {
                        let p = p.trim_end_matches('/');
                        if !p.starts_with('/') {
                            return Err(check::expected(h, &check::join(&opt_path, p), "a path starting with /"));
                        }
                        if handler == "mod_bosh" {
                            listener.bosh_paths.push(p.to_string());
                        } else {
                            listener.ws_paths.push(p.to_string());
                        }
                        listener.host_meta = true;
                    } else if matches!(handler, "mod_prometheus" | "mod_http_openmetrics" | "mod_http_api") {
                        let p = p.trim_end_matches('/');
                        if !p.starts_with('/') {
                            return Err(check::expected(h, &check::join(&opt_path, p), "a path starting with /"));
                        }
                        if handler == "mod_http_api" {
                            listener.api_paths.push(p.to_string());
                        } else {
                            listener.metrics_paths.push(p.to_string());
                        }
                    } else if handler == "mod_host_meta" {
                        // Served at /.well-known/host-meta(.json) whatever the path.
                        listener.host_meta = true;
                    } else {
                        unsupported_handlers.push((h, format!("{opt_path}.{p}: request handler `{handler}` is not supported by Rookery; {p} answers 404")));
                    }
                }
            }
            "check_from" | "global_routes" if module == ListenerModule::Service => notes.warn(
                key,
                format!("{opt_path}: `{name}` is not supported by Rookery and is ignored (a component's stanzas must come from its domain)"),
            ),
            _ if IGNORED_OPTIONS.contains(&name) => notes.warn(
                key,
                format!("{opt_path}: ejabberd listener option `{name}` is not supported by Rookery and is ignored"),
            ),
            _ => notes.warn(key, format!("{opt_path}: unknown listener option `{name}` ignored")),
        }
    }

    if module == ListenerModule::Http
        && listener.upload_path.is_none()
        && listener.invites_path.is_none()
        && listener.ws_paths.is_empty()
        && listener.bosh_paths.is_empty()
        && !listener.host_meta
        && listener.metrics_paths.is_empty()
        && listener.api_paths.is_empty()
    {
        notes.warn(
            item,
            format!("{path}: listener module `ejabberd_http` on port {port} serves nothing Rookery supports (mod_http_upload, ejabberd_http_ws, mod_bosh, mod_host_meta, mod_invites, mod_prometheus, mod_http_api); listener skipped"),
        );
        return Ok(None);
    }
    for (node, warning) in unsupported_handlers {
        notes.warn(node, warning);
    }
    if module == ListenerModule::Service {
        if service_hosts.is_empty() {
            return Err(Problem::at(
                item,
                format!("{path}: an ejabberd_service listener needs `hosts`, the component domains it accepts"),
            ));
        }
        for (domain, password, node) in service_hosts {
            let Some(password) = password.or_else(|| service_password.clone()) else {
                return Err(Problem::at(
                    node,
                    format!("{path}.hosts.{domain}: no `password` for this component (set it here or on the listener)"),
                ));
            };
            listener
                .service_hosts
                .push(ServiceHost { domain, password });
        }
    }
    let (default_offered, default_required) = match module {
        ListenerModule::C2s | ListenerModule::Service | ListenerModule::Http => (false, false),
        ListenerModule::S2s => defaults.s2s_starttls,
    };
    listener.starttls_required =
        starttls_required.unwrap_or(default_required && starttls.is_none());
    listener.starttls = starttls.unwrap_or(default_offered) || listener.starttls_required;
    if listener.tls && (listener.starttls || listener.starttls_required) {
        // Direct TLS already encrypts; STARTTLS flags are meaningless there.
        listener.starttls = false;
        listener.starttls_required = false;
    }
    Ok(Some(listener))
}

/// True for names that look like ejabberd modules (`ejabberd_http`, `mod_mqtt`).
fn is_module_name(name: &str) -> bool {
    (name.starts_with("ejabberd_") || name.starts_with("mod_"))
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Checks names referenced by listeners against the rules that exist and warns
/// about unknown ones.
pub fn check_references(
    listeners: &[Listener],
    access_rules: &AccessRules,
    shaper_rules: &ShaperRules,
    shaper_names: &dyn Fn(&str) -> bool,
    warn: &mut dyn FnMut(usize, String),
) {
    for (i, l) in listeners.iter().enumerate() {
        if let Some(rule) = &l.access {
            if rule != "none" && !access_rules.is_defined(rule) {
                warn(
                    l.line,
                    format!("listen[{i}].access: access rule `{rule}` is not defined, so nobody may connect"),
                );
            }
        }
        if let Some(name) = &l.shaper {
            if !shaper_rules.is_defined(name) && !shaper_names(name) {
                warn(
                    l.line,
                    format!("listen[{i}].shaper: `{name}` is neither a shaper rule nor a shaper; no shaping applied"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::yaml::parse as parse_yaml;

    fn listeners(text: &str) -> (Result<Vec<Listener>, Problem>, Notes, InlineRules) {
        let root = parse_yaml(text).unwrap().unwrap();
        let mut notes = Notes::default();
        let mut inline = InlineRules::default();
        let defaults = ListenDefaults {
            s2s_starttls: (true, false),
        };
        let result = parse(
            root.get("listen").unwrap(),
            &defaults,
            &mut notes,
            &mut inline,
        );
        (result, notes, inline)
    }

    #[test]
    fn c2s_and_s2s_with_defaults() {
        let (result, notes, _) = listeners(
            "listen:\n  -\n    port: 5222\n    ip: \"::\"\n    module: ejabberd_c2s\n    starttls_required: true\n    \
             shaper: c2s_shaper\n    access: c2s\n  - {port: 5223, module: c2s, tls: true, max_stanza_size: infinity}\n  \
             - {port: 5269, module: ejabberd_s2s_in}\n",
        );
        let l = result.unwrap();
        assert!(notes.warnings.is_empty(), "{:?}", notes.warnings);
        assert_eq!(l.len(), 3);
        assert_eq!(l[0].port, 5222);
        assert_eq!(l[0].ip, "::".parse::<IpAddr>().unwrap());
        assert_eq!(l[0].module, ListenerModule::C2s);
        assert!(l[0].starttls && l[0].starttls_required && !l[0].tls);
        assert_eq!(l[0].max_stanza_size, Some(262_144));
        assert_eq!(l[0].shaper.as_deref(), Some("c2s_shaper"));
        assert_eq!(l[0].access.as_deref(), Some("c2s"));
        assert_eq!(l[0].line, 3);
        assert!(l[1].tls && !l[1].starttls);
        assert_eq!(l[1].max_stanza_size, None);
        assert_eq!(l[1].ip, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        assert_eq!(l[2].module, ListenerModule::S2s);
        assert_eq!(l[2].max_stanza_size, Some(524_288));
        assert!(
            l[2].starttls && !l[2].starttls_required,
            "from s2s_use_starttls"
        );
    }

    #[test]
    fn pre_auth_max_stanza_size() {
        let (result, notes, _) = listeners(
            "listen:\n  - {port: 5222, module: c2s}\n  - {port: 5223, module: c2s, pre_auth_max_stanza_size: 4096}\n  \
             - {port: 5224, module: c2s, max_stanza_size: 2000}\n  \
             - {port: 5225, module: c2s, max_stanza_size: infinity, pre_auth_max_stanza_size: infinity}\n  \
             - {port: 5269, module: s2s}\n  - {port: 5347, module: service, password: x, hosts: {c.a.org: {}}}\n",
        );
        let l = result.unwrap();
        assert!(notes.warnings.is_empty(), "{:?}", notes.warnings);
        let limits: Vec<Option<usize>> = l.iter().map(Listener::pre_auth_limit).collect();
        assert_eq!(
            limits,
            [
                Some(8192),
                Some(4096),
                Some(2000),
                None,
                Some(8192),
                Some(8192)
            ]
        );
        let (result, _, _) =
            listeners("listen:\n  - {port: 5222, module: c2s, pre_auth_max_stanza_size: 0}\n");
        let e = result.unwrap_err().message;
        assert!(e.contains("pre_auth_max_stanza_size"), "{e}");
    }

    #[test]
    fn websocket_and_host_meta_handlers() {
        let (result, notes, _) = listeners(
            "listen:\n  - port: 5443\n    module: ejabberd_http\n    tls: true\n    request_handlers:\n      /ws/: ejabberd_http_ws\n      /xmpp-websocket: ejabberd_http_ws\n  \
             - port: 5280\n    module: ejabberd_http\n    request_handlers:\n      /.well-known/host-meta: mod_host_meta\n",
        );
        let l = result.unwrap();
        assert!(notes.warnings.is_empty(), "{:?}", notes.warnings);
        assert_eq!(l[0].ws_paths, vec!["/ws", "/xmpp-websocket"]);
        assert!(l[0].bosh_paths.is_empty());
        assert!(l[0].host_meta);
        assert_eq!(l[0].max_stanza_size, Some(DEFAULT_C2S_MAX_STANZA_SIZE));
        assert!(l[1].ws_paths.is_empty() && l[1].host_meta);
    }

    #[test]
    fn unsupported_modules_and_options_are_warnings() {
        let (result, notes, _) = listeners(
            "listen:\n  - port: 5280\n    module: ejabberd_http\n    request_handlers:\n      /admin: ejabberd_web_admin\n  \
             - {port: 1883, module: mod_mqtt}\n  - {port: 5222, module: ejabberd_c2s, zlib: false, colour: red}\n",
        );
        let l = result.unwrap();
        assert_eq!(l.len(), 1);
        let w = &notes.warnings;
        assert_eq!(w.len(), 4, "{w:?}");
        assert_eq!(w[0].0, 2);
        assert!(
            w[0].1.contains("`ejabberd_http` on port 5280"),
            "{}",
            w[0].1
        );
        assert!(w[1].1.contains("mod_mqtt"));
        assert!(w[2].1.contains("listen[2].zlib"));
        assert!(w[3].1.contains("unknown listener option `colour`"));
    }

    #[test]
    fn errors_with_positions() {
        let (r, _, _) = listeners("listen:\n  -\n    port: abc\n    module: ejabberd_c2s\n");
        let e = r.unwrap_err();
        assert_eq!((e.line, e.col), (3, 11));
        assert_eq!(
            e.message,
            "listen[0].port: expected a port number 1-65535, found \"abc\""
        );

        let (r, _, _) = listeners("listen:\n  - port: 65536\n    module: c2s\n");
        let e = r.unwrap_err();
        assert_eq!((e.line, e.col), (2, 11));
        assert!(e.message.contains("found \"65536\""));

        let (r, _, _) = listeners("listen:\n  - port: 5222\n    module: c2s\n    ip: 300.1.1.1\n");
        let e = r.unwrap_err();
        assert_eq!((e.line, e.col), (4, 9));
        assert!(
            e.message
                .starts_with("listen[0].ip: expected an IP address"),
            "{}",
            e.message
        );

        let (r, _, _) = listeners("listen:\n  - port: 5222\n    module: xmpp_thing\n");
        assert_eq!(r.unwrap_err().line, 3);

        let (r, _, _) = listeners("listen:\n  - port: 5222\n    module: c2s\n    tls: maybe\n");
        assert!(r.unwrap_err().message.contains("expected true or false"));

        let (r, _, _) = listeners("listen:\n  - module: c2s\n");
        assert!(r
            .unwrap_err()
            .message
            .contains("missing required option `port`"));
    }

    #[test]
    fn duplicate_and_conflicting_ports() {
        let (r, _, _) =
            listeners("listen:\n  - {port: 5222, module: c2s}\n  - {port: 5222, module: s2s}\n");
        let e = r.unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.message.contains("already used"), "{}", e.message);
        let (r, _, _) =
            listeners("listen:\n  - {port: 5222, module: c2s, ip: 127.0.0.1}\n  - {port: 5222, module: c2s}\n");
        assert!(r.unwrap_err().message.contains("conflicts"));
        let (r, _, _) =
            listeners("listen:\n  - {port: 5222, module: c2s, ip: 127.0.0.1}\n  - {port: 5222, module: c2s, ip: \"::1\"}\n");
        assert_eq!(r.unwrap().len(), 2);
        // Port 0 (any free port) may repeat.
        let (r, _, _) = listeners("listen:\n  - {port: 0, module: c2s, ip: 127.0.0.1}\n  - {port: 0, module: c2s, tls: true, ip: 127.0.0.1}\n");
        assert_eq!(r.unwrap().len(), 2);
    }

    #[test]
    fn inline_rules_get_generated_names() {
        let (r, _, inline) =
            listeners("listen:\n  - port: 5222\n    module: c2s\n    access:\n      - allow: admin\n    shaper: none\n");
        let l = r.unwrap();
        assert_eq!(l[0].access.as_deref(), Some("listen[0].access (inline)"));
        assert_eq!(l[0].shaper, None);
        assert_eq!(inline.access.len(), 1);
    }
}
