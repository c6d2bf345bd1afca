//! The `modules` option: each entry checked against the option specs of
//! the module that provides it, with file, line and column.
//!
//! Specs come from two places: `xep_support::registry::SPECS` for the
//! modules of the xep-support crate (declared beside each module's code)
//! and [`CORE`] here for ejabberd modules whose work Rookery's core does
//! (rosters, offline storage, dialback), which are always on: listing them
//! only sets their options.
//!
//! Invariants: a listed module nobody provides is a warning (ejabberd
//! configurations list many); for a module Rookery provides, an unknown
//! option or a value of the wrong kind is an error at its position (as
//! ejabberd refuses to start); options Rookery accepts without implementing
//! them are named in one warning per module. The options kept in
//! [`super::Config::modules`] are normalised by the spec (`yes` is `true`,
//! an inline access rule is replaced by the name under which it was
//! defined), so modules read exactly what was checked.

use serde_yaml_ng::Value;
use xep_support::options::{self, Kind, ModuleSpec, OptSpec, Provider, Use};

use super::check::{self, Notes, Problem};
use super::server_info;
use super::stun_disco;
use super::yaml::{Kind as YamlKind, Node};
use crate::config::acl::{self, AccessRules};

/// `mod_roster`: rosters are part of Rookery's core (RFC 6121 §2).
pub const ROSTER: ModuleSpec = ModuleSpec {
    name: "mod_roster",
    provider: Provider::Core,
    options: &[
        OptSpec {
            name: "versioning",
            kind: Kind::Bool,
            default: "",
            doc: "Rookery always offers roster versioning (RFC 6121 §2.6)",
            used: Use::Fixed("true"),
        },
        OptSpec::ignored(
            "store_current_id",
            Kind::Any,
            "keeping the roster version in the database",
        ),
        OptSpec::ignored(
            "access",
            Kind::Any,
            "who may change their roster (everyone may)",
        ),
    ],
    storage: true,
};

/// `mod_offline`: offline storage is part of Rookery's core (always on).
pub const OFFLINE: ModuleSpec = ModuleSpec {
    name: "mod_offline",
    provider: Provider::Core,
    options: &[
        OptSpec::honoured(
            "access_max_user_messages",
            Kind::Text,
            "max_user_offline_messages",
            "the shaper rule giving how many messages an account may have stored",
        ),
        OptSpec::ignored(
            "store_empty_body",
            Kind::Any,
            "which messages without a body are stored",
        ),
        OptSpec::ignored("store_groupchat", Kind::Any, "storing groupchat messages"),
        OptSpec::ignored("bounce_groupchat", Kind::Any, "bouncing groupchat messages"),
        OptSpec::ignored(
            "use_mam_for_storage",
            Kind::Any,
            "offline messages kept in the archive",
        ),
    ],
    storage: true,
};

/// `mod_s2s_dialback`: dialback (XEP-0220) is part of Rookery's s2s,
/// switched by the top-level `s2s_dialback`.
pub const S2S_DIALBACK: ModuleSpec = ModuleSpec {
    name: "mod_s2s_dialback",
    provider: Provider::Core,
    options: &[OptSpec::ignored(
        "access",
        Kind::Any,
        "which servers may use dialback",
    )],
    storage: false,
};

/// `mod_bosh`: XEP-0124/XEP-0206 sessions on the `ejabberd_http` paths
/// whose request handler is `mod_bosh` (`crate::http::bosh`); its options
/// apply to every such path (listing it is not needed to serve BOSH).
pub const BOSH: ModuleSpec = ModuleSpec {
    name: "mod_bosh",
    provider: Provider::Core,
    options: &[
        OptSpec::honoured(
            "max_inactivity",
            Kind::Timeout,
            "30",
            "seconds a BOSH session may be without a request before it ends",
        ),
        OptSpec::honoured(
            "max_pause",
            Kind::Timeout,
            "120",
            "the longest pause (XEP-0124 §10) a client may ask for, in seconds",
        ),
        OptSpec::honoured(
            "max_sessions_per_ip",
            Kind::Count,
            "100",
            "BOSH sessions one client address may have at once (Rookery's option)",
        ),
        OptSpec::honoured(
            "max_request_size",
            Kind::Count,
            "524288",
            "the largest request body in bytes; larger is refused with HTTP 413 (Rookery's option)",
        ),
        OptSpec::ignored("json", Kind::Any, "JSON-encoded BOSH (not supported)"),
        OptSpec::ignored(
            "max_concat",
            Kind::Any,
            "concatenating stanzas into one response (Rookery always does)",
        ),
        OptSpec::ignored("prebind", Kind::Any, "session pre-binding"),
        OptSpec::storage("queue_type", Kind::Any),
        OptSpec::storage("ram_db_type", Kind::Any),
    ],
    storage: true,
};

/// `mod_http_api`: `POST /api/COMMAND` on the `ejabberd_http` paths whose
/// request handler is `mod_http_api` (`crate::http::api`); listing it is
/// not needed, and its one option is ignored.
pub const HTTP_API: ModuleSpec = ModuleSpec {
    name: "mod_http_api",
    provider: Provider::Core,
    options: &[OptSpec::ignored(
        "default_version",
        Kind::Any,
        "the API version when the URL names none (Rookery serves one version)",
    )],
    storage: false,
};

/// ejabberd modules whose work Rookery's core does.
pub const CORE: &[&ModuleSpec] = &[&ROSTER, &OFFLINE, &S2S_DIALBACK, &BOSH, &HTTP_API];

/// The spec of a module Rookery provides (in xep-support or the core).
pub fn spec(name: &str) -> Option<&'static ModuleSpec> {
    xep_support::registry::spec(name).or_else(|| CORE.iter().copied().find(|s| s.name == name))
}

/// Every module Rookery provides.
#[cfg(test)]
pub fn all_specs() -> impl Iterator<Item = &'static ModuleSpec> {
    xep_support::registry::SPECS
        .iter()
        .chain(CORE.iter())
        .copied()
}

/// The parsed `modules` map: entries in file order with their normalised
/// options, the line of each entry, and the line of each inline access rule
/// (under its generated name) for later warnings.
pub struct Modules {
    pub entries: Vec<(String, Value)>,
    pub lines: Vec<usize>,
    pub rule_lines: Vec<(String, usize)>,
}

/// Reads and checks the `modules` map; inline access rules are defined in
/// `access_rules`.
pub fn parse(
    node: &Node,
    notes: &mut Notes,
    access_rules: &mut AccessRules,
) -> Result<Modules, Problem> {
    let mut out = Modules {
        entries: Vec::new(),
        lines: Vec::new(),
        rule_lines: Vec::new(),
    };
    for (key, value) in check::map(node, "modules", "a map of module names to their options")? {
        let name = check::key(key, "modules")?;
        let path = check::join("modules", name);
        let empty = value.is_null() || value.as_map().is_some_and(<[_]>::is_empty);
        if !empty && value.as_map().is_none() {
            return Err(check::expected(
                value,
                &path,
                "a map of module options (or {} for none)",
            ));
        }
        let options = match spec(name) {
            Some(spec) => module_options(spec, key, value, &path, notes, access_rules, &mut out)?,
            None => {
                notes.warn(
                    key,
                    format!("{path}: module `{name}` is not provided by Rookery and is ignored"),
                );
                if empty {
                    Value::Null
                } else {
                    value.to_value()
                }
            }
        };
        out.entries.push((name.to_string(), options));
        out.lines.push(key.line);
    }
    let listed = |n: &str| out.entries.iter().any(|(name, _)| name == n);
    if listed("mod_carbons") && listed("mod_carboncopy") {
        if let Some(i) = out.entries.iter().position(|(n, _)| n == "mod_carboncopy") {
            notes.warnings.push((
                out.lines[i],
                "modules.mod_carboncopy: ejabberd's name of mod_carbons, which is listed too; enabled once".to_string(),
            ));
        }
    }
    Ok(out)
}

/// Checks one module's options against its spec; returns them normalised.
fn module_options(
    spec: &ModuleSpec,
    key: &Node,
    value: &Node,
    path: &str,
    notes: &mut Notes,
    access_rules: &mut AccessRules,
    out: &mut Modules,
) -> Result<Value, Problem> {
    let mut normalised = serde_yaml_ng::Mapping::new();
    let mut ignored: Vec<String> = Vec::new();
    // First, for its more precise messages than the generic check.
    if spec.name == "mod_disco" {
        if let Some(info) = value.get("server_info") {
            server_info::check(info, "modules.mod_disco.server_info", notes)?;
        }
    }
    if spec.name == "mod_stun_disco" {
        stun_disco::check(value, path)?;
    }
    for (k, v) in value.as_map().unwrap_or_default() {
        let opt_name = check::key(k, path)?;
        let opt_path = check::join(path, opt_name);
        let Some(opt) = spec.option(opt_name) else {
            return Err(Problem::at(
                k,
                format!("{path}: {}", spec.unknown_option_message(opt_name)),
            ));
        };
        let inline = matches!(v.kind, YamlKind::Seq(_) | YamlKind::Map(_));
        let checked = if opt.kind == Kind::AccessRule && inline {
            let rule = acl::parse_access_rule(v, &opt_path, notes)?;
            let generated = format!("{opt_path} (inline)");
            access_rules.insert(&generated, rule);
            out.rule_lines.push((generated.clone(), v.line));
            Value::String(generated)
        } else {
            options::check(&opt.kind, &v.to_value()).map_err(|m| {
                let (at, at_path) = match (m.item, &v.kind) {
                    (Some(i), YamlKind::Seq(items)) if i < items.len() => {
                        (&items[i], check::index(&opt_path, i))
                    }
                    _ => (v, opt_path.clone()),
                };
                check::expected(at, &at_path, &m.expected)
            })?
        };
        match opt.used {
            Use::Ignored => ignored.push(format!("`{opt_name}`")),
            Use::Fixed(fixed) if !options::is_fixed_value(fixed, &checked) => notes.warn(
                v,
                format!(
                    "{opt_path}: Rookery always behaves as `{opt_name}: {fixed}`; {} is ignored",
                    v.describe()
                ),
            ),
            _ => {}
        }
        normalised.insert(Value::String(opt_name.to_string()), checked);
    }
    if !ignored.is_empty() {
        notes.warn(
            key,
            format!(
                "{path}: {} {} accepted for ejabberd configurations but not implemented by Rookery; ignored",
                if ignored.len() == 1 { "option" } else { "options" },
                ignored.join(", ")
            ),
        );
    }
    Ok(if normalised.is_empty() {
        Value::Null
    } else {
        Value::Mapping(normalised)
    })
}

/// `mod_offline`'s `access_max_user_messages`: the shaper rule that limits
/// stored offline messages (ejabberd's default name when unset).
pub fn offline_limit_rule(entries: &[(String, Value)]) -> String {
    entries
        .iter()
        .find(|(n, _)| n == "mod_offline")
        .and_then(|(_, o)| o.get("access_max_user_messages"))
        .and_then(Value::as_str)
        .unwrap_or(OFFLINE.options[0].default)
        .to_string()
}

/// `mod_bosh`'s options, as the BOSH transport applies them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoshOptions {
    /// `max_inactivity`; `None` = infinity.
    pub max_inactivity: Option<std::time::Duration>,
    /// `max_pause`; `None` = infinity.
    pub max_pause: Option<std::time::Duration>,
    /// `max_sessions_per_ip`; `None` = infinity.
    pub max_sessions_per_ip: Option<u64>,
    /// `max_request_size` in bytes; `None` = infinity.
    pub max_request_size: Option<u64>,
}

/// `mod_bosh`'s options from the `modules:` entries (its defaults when it
/// is not listed).
pub fn bosh_options(entries: &[(String, Value)]) -> BoshOptions {
    let none = Value::Null;
    let value = entries
        .iter()
        .find(|(n, _)| n == BOSH.name)
        .map_or(&none, |(_, v)| v);
    let mut o = xep_support::opts::Opts::new(value, &BOSH);
    BoshOptions {
        max_inactivity: o.timeout("max_inactivity"),
        max_pause: o.timeout("max_pause"),
        max_sessions_per_ip: o.count("max_sessions_per_ip"),
        max_request_size: o.count("max_request_size"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mod_bosh_options() {
        let (r, notes, _) = parse_text("modules:\n  mod_bosh:\n    max_inactivity: 5\n    max_sessions_per_ip: infinity\n    json: false\n");
        let m = r.unwrap();
        let o = bosh_options(&m.entries);
        assert_eq!(o.max_inactivity, Some(std::time::Duration::from_secs(5)));
        assert_eq!(o.max_pause, Some(std::time::Duration::from_secs(120)));
        assert_eq!(o.max_sessions_per_ip, None);
        assert_eq!(o.max_request_size, Some(524288));
        assert!(
            notes.warnings.iter().any(|(_, w)| w.contains("json")),
            "{:?}",
            notes.warnings
        );
        let d = bosh_options(&[]);
        assert_eq!(d.max_inactivity, Some(std::time::Duration::from_secs(30)));
        assert_eq!(d.max_sessions_per_ip, Some(100));
        let (r, _, _) = parse_text("modules:\n  mod_bosh: {max_pause: soon}\n");
        assert!(r.err().unwrap().message.contains("max_pause"));
    }

    fn parse_text(text: &str) -> (Result<Modules, Problem>, Notes, AccessRules) {
        let root = super::super::yaml::parse(text).unwrap().unwrap();
        let node = root.get("modules").unwrap().clone();
        let mut notes = Notes::default();
        let mut rules = AccessRules::default();
        let r = parse(&node, &mut notes, &mut rules);
        (r, notes, rules)
    }

    #[test]
    fn a_bad_value_is_an_error_at_its_position() {
        let (r, _, _) =
            parse_text("modules:\n  mod_ping: {}\n  mod_mam:\n    default: sometimes\n");
        let p = r.err().unwrap();
        assert_eq!((p.line, p.col), (4, 14), "{p:?}");
        assert_eq!(
            p.message,
            "modules.mod_mam.default: expected one of always, never, roster, found \"sometimes\""
        );
        let (r, _, _) = parse_text("modules:\n  mod_stream_mgmt: {resume_timeout: soon}\n");
        let p = r.err().unwrap();
        assert_eq!((p.line, p.col), (2, 37), "{p:?}");
        assert!(p.message.contains("expected a duration"), "{p:?}");
        let (r, _, _) = parse_text(
            "modules:\n  mod_register:\n    registration_watchers:\n      - a@b\n      - \"@@\"\n",
        );
        let p = r.err().unwrap();
        assert_eq!((p.line, p.col), (5, 9), "{p:?}");
        assert!(
            p.message.starts_with(
                "modules.mod_register.registration_watchers[1]: expected a list of JIDs"
            ),
            "{p:?}"
        );
    }

    #[test]
    fn an_unknown_option_is_an_error_with_a_suggestion() {
        let (r, _, _) = parse_text("modules:\n  mod_stream_mgmt:\n    resume_timout: 30\n");
        let p = r.err().unwrap();
        assert_eq!((p.line, p.col), (3, 5));
        assert!(p.message.starts_with("modules.mod_stream_mgmt: unknown option `resume_timout` of mod_stream_mgmt; did you mean `resume_timeout`?"), "{}", p.message);
        assert!(
            p.message
                .contains("its options: resume_timeout, max_resume_timeout"),
            "{}",
            p.message
        );
        let (r, _, _) = parse_text("modules:\n  mod_time: {zone: utc}\n");
        assert!(r
            .err()
            .unwrap()
            .message
            .contains("mod_time takes no options"));
    }

    #[test]
    fn good_values_are_normalised() {
        let (r, notes, rules) = parse_text(
            "modules:\n  mod_version: {show_os: no}\n  mod_pep: {max_items_node: \"50\"}\n  mod_muc:\n    access_admin:\n      - allow: admin\n    host: conference.@HOST@\n",
        );
        let m = r.unwrap();
        assert!(notes.warnings.is_empty(), "{:?}", notes.warnings);
        assert_eq!(m.entries[0].1["show_os"], Value::Bool(false));
        assert_eq!(m.entries[1].1["max_items_node"], Value::from(50u64));
        let rule = m.entries[2].1["access_admin"].as_str().unwrap();
        assert_eq!(rule, "modules.mod_muc.access_admin (inline)");
        assert!(rules.is_defined(rule));
        assert_eq!(m.rule_lines, [(rule.to_string(), 6)]);
    }

    #[test]
    fn core_modules_are_recognised_and_unimplemented_options_named_once() {
        let (r, notes, _) = parse_text(
            "modules:\n  mod_roster: {versioning: true, store_current_id: false}\n  mod_offline:\n    access_max_user_messages: max_offline\n    store_groupchat: true\n    db_type: sql\n  mod_stream_mgmt: {resend_on_timeout: false}\n  mod_irc: {}\n",
        );
        let m = r.unwrap();
        assert_eq!(offline_limit_rule(&m.entries), "max_offline");
        let w: Vec<String> = notes
            .warnings
            .iter()
            .map(|(l, m)| format!("{l}: {m}"))
            .collect();
        assert_eq!(w.len(), 4, "{w:#?}");
        assert_eq!(w[0], "2: modules.mod_roster: option `store_current_id` accepted for ejabberd configurations but not implemented by Rookery; ignored");
        assert_eq!(w[1], "3: modules.mod_offline: option `store_groupchat` accepted for ejabberd configurations but not implemented by Rookery; ignored");
        assert!(w[2].starts_with("7: modules.mod_stream_mgmt.resend_on_timeout: Rookery always behaves as `resend_on_timeout: if_offline`"), "{}", w[2]);
        assert_eq!(
            w[3],
            "8: modules.mod_irc: module `mod_irc` is not provided by Rookery and is ignored"
        );
        let (r, _, _) = parse_text("modules:\n  mod_roster: {versioning: sometimes}\n");
        assert!(r.is_err());
        let (r, _, _) = parse_text("modules:\n  mod_offline: {}\n");
        assert_eq!(
            offline_limit_rule(&r.unwrap().entries),
            "max_user_offline_messages"
        );
    }
}
