//! The one evaluator of ejabberd-style `acl`, `access_rules`, `shaper_rules`
//! and `api_permissions` (who may run which administration command from
//! which front end: [`ApiPermissions`]).
//!
//! Semantics follow ejabberd's `acl.erl` and `ejabberd_shaper.erl`:
//!
//! * An ACL (`acl: NAME: {user: ..., ip: ...}`) is a set of specs; it matches when
//!   **any** spec matches. `all` and `none` are built in.
//! * An access rule is an ordered list of `allow`/`deny` entries; the first entry
//!   whose conditions **all** match decides; no match means `deny`. Conditions are
//!   ACL names or inline specs. Built-in rules `all` (allow) and `none` (deny);
//!   an unknown rule denies.
//! * A shaper rule is the same with a value (number, `infinity`, or a shaper
//!   name) instead of `allow`/`deny`; no match means "no value".
//!
//! Spec kinds: `user` (`bob` = on any served host, `bob@host`, `{bob: host}`,
//! `{user: bob, server: host}`), `server`, `user_regexp`, `server_regexp`,
//! `node_regexp`, `user_glob`, `server_glob`, `node_glob`, `ip` (CIDR or bare
//! address, IPv4 and IPv6, IPv4-mapped IPv6 handled), and `acl` (in rules).
//! `resource*` and `shared_group` specs are accepted with a warning and never
//! match, since rules are evaluated for bare users.

use std::collections::HashMap;
use std::net::IpAddr;
use std::str::FromStr;

use regex::Regex;

use crate::config::check::{self, Notes, Problem};
use crate::config::yaml::{Kind, Node};

/// Result of an access rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The rule allows.
    Allow,
    /// The rule denies.
    Deny,
}

/// Who is asking: a user `(localpart, host)` and/or an IP address.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Subject<'a> {
    /// `(localpart, host)` of the user, if known.
    pub user: Option<(&'a str, &'a str)>,
    /// Remote address, if known.
    pub ip: Option<IpAddr>,
}

/// An IP network: address plus prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    /// Network address.
    pub addr: IpAddr,
    /// Prefix length (0-32 for IPv4, 0-128 for IPv6).
    pub prefix: u8,
}

impl FromStr for IpNet {
    type Err = String;

    /// Parses `10.0.0.0/8`, `::1/128` or a bare address (full-length prefix).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr_text, prefix_text) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr_text
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix_text {
            None => max,
            Some(p) => match p.trim().parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("{s:?} has an invalid prefix length (0-{max})")),
            },
        };
        Ok(IpNet { addr, prefix })
    }
}

impl IpNet {
    /// True when `ip` is inside the network; IPv4 and IPv4-mapped IPv6
    /// addresses are treated as the same address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(
                u128::from(u32::from(net)),
                u128::from(u32::from(ip)),
                self.prefix,
                32,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(u128::from(net), u128::from(ip), self.prefix, 128)
            }
            (IpAddr::V4(net), IpAddr::V6(ip)) => match ip.to_ipv4_mapped() {
                Some(v4) => prefix_eq(
                    u128::from(u32::from(net)),
                    u128::from(u32::from(v4)),
                    self.prefix,
                    32,
                ),
                None => false,
            },
            (IpAddr::V6(net), IpAddr::V4(ip)) => {
                let mapped = ip.to_ipv6_mapped();
                prefix_eq(u128::from(net), u128::from(mapped), self.prefix, 128)
            }
        }
    }
}

/// Compares the first `prefix` bits of two `width`-bit numbers.
fn prefix_eq(a: u128, b: u128, prefix: u8, width: u32) -> bool {
    let prefix = u32::from(prefix).min(width);
    if prefix == 0 {
        return true;
    }
    let shift = width - prefix;
    (a >> shift) == (b >> shift)
}

/// One matching condition.
#[derive(Debug, Clone)]
pub enum AclSpec {
    /// Matches everything.
    All,
    /// Matches nothing.
    None,
    /// A user name, on the given server or (when `None`) on any served host.
    User {
        /// Normalised local part.
        user: String,
        /// Normalised server, or any served host.
        server: Option<String>,
    },
    /// Any user of this server.
    Server(String),
    /// User name matching a regexp (from `user_regexp` or `user_glob`), on the
    /// given server or on any served host.
    UserRegexp {
        /// Pattern for the local part.
        user: Regex,
        /// Normalised server, or any served host.
        server: Option<String>,
    },
    /// Server matching a regexp (from `server_regexp` or `server_glob`).
    ServerRegexp(Regex),
    /// Local part and server matching regexps (`node_regexp`, `node_glob`).
    NodeRegexp {
        /// Pattern for the local part.
        user: Regex,
        /// Pattern for the server.
        server: Regex,
    },
    /// Remote address within a network.
    Ip(IpNet),
    /// Reference to a named ACL (inside access and shaper rules).
    Acl(String),
    /// A spec kind Rookery cannot evaluate (`resource`, `shared_group`, …):
    /// never matches.
    Unsupported,
}

/// Named ACL definitions from the `acl` option.
#[derive(Debug, Clone, Default)]
pub struct Acls {
    defs: HashMap<String, Vec<AclSpec>>,
}

/// The entries of one access rule, in order: decision and the conditions
/// that must all match.
pub type AccessRule = Vec<(Access, Vec<AclSpec>)>;

/// The entries of one shaper rule, in order: value and the conditions that
/// must all match.
pub type ShaperRule = Vec<(ShaperValue, Vec<AclSpec>)>;

/// Named access rules from the `access_rules` option.
#[derive(Debug, Clone, Default)]
pub struct AccessRules {
    rules: HashMap<String, AccessRule>,
}

/// The value a shaper rule yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShaperValue {
    /// A number (a limit such as `max_user_sessions`, or a rate in bytes/s).
    Number(u64),
    /// `infinity`, `unlimited`, `infinite` or `none`: no limit.
    Unlimited,
    /// The name of a shaper from the `shaper` option.
    Shaper(String),
}

/// Named shaper rules from the `shaper_rules` option.
#[derive(Debug, Clone, Default)]
pub struct ShaperRules {
    rules: HashMap<String, ShaperRule>,
}

/// What rules are evaluated against: the ACL definitions and the served hosts.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// Named ACLs.
    pub acls: &'a Acls,
    /// Normalised served host names (for `user: bob` without a server).
    pub hosts: &'a [String],
}

impl Context<'_> {
    /// True when the subject matches `spec`.
    pub fn spec_matches(&self, spec: &AclSpec, subject: &Subject<'_>) -> bool {
        let user = subject
            .user
            .map(|(u, s)| (u.to_lowercase(), s.to_lowercase()));
        let served = |server: &str| self.hosts.iter().any(|h| h == server);
        match spec {
            AclSpec::All => true,
            AclSpec::None | AclSpec::Unsupported => false,
            AclSpec::User { user: name, server } => match &user {
                Some((u, s)) => {
                    u == name
                        && match server {
                            Some(required) => s == required,
                            None => served(s),
                        }
                }
                None => false,
            },
            AclSpec::Server(required) => user.as_ref().is_some_and(|(_, s)| s == required),
            AclSpec::UserRegexp { user: re, server } => match &user {
                Some((u, s)) => {
                    re.is_match(u)
                        && match server {
                            Some(required) => s == required,
                            None => served(s),
                        }
                }
                None => false,
            },
            AclSpec::ServerRegexp(re) => user.as_ref().is_some_and(|(_, s)| re.is_match(s)),
            AclSpec::NodeRegexp {
                user: user_re,
                server: server_re,
            } => user
                .as_ref()
                .is_some_and(|(u, s)| user_re.is_match(u) && server_re.is_match(s)),
            AclSpec::Ip(net) => subject.ip.is_some_and(|ip| net.contains(ip)),
            AclSpec::Acl(name) => self.acl_matches(name, subject),
        }
    }

    /// True when the subject matches the named ACL (`all` and `none` built in;
    /// an undefined ACL matches nobody).
    pub fn acl_matches(&self, name: &str, subject: &Subject<'_>) -> bool {
        match name {
            "all" => true,
            "none" => false,
            _ => self.acls.defs.get(name).is_some_and(|specs| {
                specs
                    .iter()
                    // ACL definitions cannot contain `acl` references, so no recursion.
                    .any(|spec| {
                        !matches!(spec, AclSpec::Acl(_)) && self.spec_matches(spec, subject)
                    })
            }),
        }
    }

    /// True when every condition matches (an empty list never matches).
    fn all_match(&self, conditions: &[AclSpec], subject: &Subject<'_>) -> bool {
        !conditions.is_empty() && conditions.iter().all(|c| self.spec_matches(c, subject))
    }

    /// Evaluates an access rule: `all` allows, `none` and unknown rules deny.
    pub fn access(&self, rules: &AccessRules, rule: &str, subject: &Subject<'_>) -> Access {
        match rule {
            "all" => Access::Allow,
            "none" => Access::Deny,
            _ => rules
                .rules
                .get(rule)
                .and_then(|entries| {
                    entries
                        .iter()
                        .find(|(_, conditions)| self.all_match(conditions, subject))
                        .map(|(access, _)| *access)
                })
                .unwrap_or(Access::Deny),
        }
    }

    /// Evaluates a shaper rule: the value of the first matching entry, `None`
    /// when the rule is unknown or nothing matches.
    pub fn shaper_value<'r>(
        &self,
        rules: &'r ShaperRules,
        rule: &str,
        subject: &Subject<'_>,
    ) -> Option<&'r ShaperValue> {
        rules.rules.get(rule).and_then(|entries| {
            entries
                .iter()
                .find(|(_, conditions)| self.all_match(conditions, subject))
                .map(|(value, _)| value)
        })
    }
}

impl Acls {
    /// True when an ACL with this name is defined (built-ins excluded).
    pub fn is_defined(&self, name: &str) -> bool {
        self.defs.contains_key(name)
    }

    /// Parses the `acl` option: `NAME: {KIND: VALUE-OR-LIST, ...}` (or a list of such maps).
    pub(crate) fn parse(node: &Node, path: &str, notes: &mut Notes) -> Result<Acls, Problem> {
        let mut acls = Acls::default();
        for (key, value) in check::map(node, path, "a map of ACL names to definitions")? {
            let name = check::key(key, path)?;
            let item_path = check::join(path, name);
            if name == "all" || name == "none" {
                return Err(Problem::at(
                    key,
                    format!("{item_path}: \"{name}\" is a built-in ACL and cannot be redefined"),
                ));
            }
            let mut specs = Vec::new();
            let parts: Vec<&Node> = match &value.kind {
                Kind::Seq(items) => items.iter().collect(),
                _ => vec![value],
            };
            for part in parts {
                let entries = check::map(
                    part,
                    &item_path,
                    "a map of ACL specs such as {user: bob@example.org}",
                )?;
                if entries.is_empty() {
                    return Err(check::expected(
                        part,
                        &item_path,
                        "at least one ACL spec such as user: or ip:",
                    ));
                }
                for (kind, spec_value) in entries {
                    let kind_name = check::key(kind, &item_path)?;
                    if kind_name == "acl" {
                        return Err(Problem::at(
                            kind,
                            format!("{item_path}: an ACL definition cannot refer to another ACL"),
                        ));
                    }
                    specs.extend(parse_spec(
                        kind,
                        kind_name,
                        spec_value,
                        &check::join(&item_path, kind_name),
                        notes,
                    )?);
                }
            }
            acls.defs.insert(name.to_string(), specs);
        }
        Ok(acls)
    }
}

impl AccessRules {
    /// True when a rule with this name is defined (built-ins excluded).
    pub fn is_defined(&self, name: &str) -> bool {
        self.rules.contains_key(name)
    }

    /// Adds a rule (replacing one of the same name); used for inline rules.
    pub fn insert(&mut self, name: &str, entries: AccessRule) {
        self.rules.insert(name.to_string(), entries);
    }

    /// ACL names referred to by the rules (for "undefined ACL" warnings).
    pub(crate) fn referenced_acls(&self) -> Vec<(&str, &str)> {
        let mut out = Vec::new();
        for (rule, entries) in &self.rules {
            for (_, conditions) in entries {
                for c in conditions {
                    if let AclSpec::Acl(name) = c {
                        out.push((rule.as_str(), name.as_str()));
                    }
                }
            }
        }
        out
    }

    /// Parses the `access_rules` option.
    pub(crate) fn parse(
        node: &Node,
        path: &str,
        notes: &mut Notes,
    ) -> Result<AccessRules, Problem> {
        let mut rules = AccessRules::default();
        for (key, value) in check::map(node, path, "a map of access rule names to rules")? {
            let name = check::key(key, path)?;
            let rule_path = check::join(path, name);
            if name == "all" || name == "none" {
                return Err(Problem::at(
                    key,
                    format!(
                        "{rule_path}: \"{name}\" is a built-in access rule and cannot be redefined"
                    ),
                ));
            }
            rules.rules.insert(
                name.to_string(),
                parse_access_rule(value, &rule_path, notes)?,
            );
        }
        Ok(rules)
    }
}

impl ShaperRules {
    /// True when a rule with this name is defined.
    pub fn is_defined(&self, name: &str) -> bool {
        self.rules.contains_key(name)
    }

    /// Adds a rule (replacing one of the same name); used for inline rules.
    pub fn insert(&mut self, name: &str, entries: ShaperRule) {
        self.rules.insert(name.to_string(), entries);
    }

    /// All `(rule, value)` pairs, for checking shaper names.
    pub(crate) fn values(&self) -> Vec<(&str, &ShaperValue)> {
        self.rules
            .iter()
            .flat_map(|(rule, entries)| entries.iter().map(move |(v, _)| (rule.as_str(), v)))
            .collect()
    }

    /// ACL names referred to by the rules.
    pub(crate) fn referenced_acls(&self) -> Vec<(&str, &str)> {
        let mut out = Vec::new();
        for (rule, entries) in &self.rules {
            for (_, conditions) in entries {
                for c in conditions {
                    if let AclSpec::Acl(name) = c {
                        out.push((rule.as_str(), name.as_str()));
                    }
                }
            }
        }
        out
    }

    /// Parses the `shaper_rules` option.
    pub(crate) fn parse(
        node: &Node,
        path: &str,
        notes: &mut Notes,
    ) -> Result<ShaperRules, Problem> {
        let mut rules = ShaperRules::default();
        for (key, value) in check::map(node, path, "a map of shaper rule names to rules")? {
            let name = check::key(key, path)?;
            let rule_path = check::join(path, name);
            if matches!(name, "none" | "infinity" | "infinite" | "unlimited") {
                return Err(Problem::at(
                    key,
                    format!("{rule_path}: \"{name}\" is reserved and cannot name a shaper rule"),
                ));
            }
            rules.rules.insert(
                name.to_string(),
                parse_shaper_rule(value, &rule_path, notes)?,
            );
        }
        Ok(rules)
    }
}

/// Parses one access rule body: map form (`{allow: admin, deny: all}`), list
/// form (`[{deny: blocked}, allow]`) or a bare `allow`/`deny`.
pub(crate) fn parse_access_rule(
    node: &Node,
    path: &str,
    notes: &mut Notes,
) -> Result<AccessRule, Problem> {
    let entries = rule_entries(node, path)?;
    let mut out = Vec::new();
    for (decision, conditions, at) in entries {
        let access = match decision.as_str() {
            "allow" => Access::Allow,
            "deny" => Access::Deny,
            _ => return Err(check::expected(at, path, "\"allow\" or \"deny\"")),
        };
        let conditions = match conditions {
            None => vec![AclSpec::All],
            Some((n, p)) => parse_conditions(n, &p, notes)?,
        };
        out.push((access, conditions));
    }
    Ok(out)
}

/// Parses one shaper rule body: a bare value (`10`, `fast`, `infinity`), map
/// form (`{none: admin, normal: all}`, `{5000: admin, 100: all}`) or list form.
pub(crate) fn parse_shaper_rule(
    node: &Node,
    path: &str,
    notes: &mut Notes,
) -> Result<ShaperRule, Problem> {
    let entries = rule_entries(node, path)?;
    let mut out = Vec::new();
    for (value_text, conditions, at) in entries {
        let value = shaper_value(&value_text)
            .ok_or_else(|| check::expected(at, path, "a number, \"infinity\" or a shaper name"))?;
        let conditions = match conditions {
            None => vec![AclSpec::All],
            Some((n, p)) => parse_conditions(n, &p, notes)?,
        };
        out.push((value, conditions));
    }
    Ok(out)
}

/// Interprets a shaper rule value.
fn shaper_value(text: &str) -> Option<ShaperValue> {
    if check::is_infinity(text) || text == "none" {
        return Some(ShaperValue::Unlimited);
    }
    if let Some(n) = crate::config::yaml::parse_int(text) {
        return u64::try_from(n)
            .ok()
            .filter(|n| *n > 0)
            .map(ShaperValue::Number);
    }
    let valid_name = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'));
    valid_name.then(|| ShaperValue::Shaper(text.to_string()))
}

/// A rule entry: its head (`allow`, `deny`, a value), its conditions node
/// with path (`None` = everyone) and the node to blame for a bad head.
type RuleEntry<'a> = (String, Option<(&'a Node, String)>, &'a Node);

/// Splits a rule body into entries, in order.
fn rule_entries<'a>(node: &'a Node, path: &str) -> Result<Vec<RuleEntry<'a>>, Problem> {
    let mut out = Vec::new();
    match &node.kind {
        Kind::Map(entries) => {
            for (k, v) in entries {
                let head = check::key(k, path)?.to_string();
                let p = check::join(path, &head);
                out.push((head, Some((v, p)), k));
            }
        }
        Kind::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                let item_path = check::index(path, i);
                match &item.kind {
                    Kind::Map(entries) if entries.len() == 1 => {
                        let (k, v) = &entries[0];
                        let head = check::key(k, &item_path)?.to_string();
                        let p = check::join(&item_path, &head);
                        out.push((head, Some((v, p)), k));
                    }
                    Kind::Scalar { value, .. } if !item.is_null() => {
                        out.push((value.clone(), None, item));
                    }
                    _ => {
                        return Err(check::expected(
                            item,
                            &item_path,
                            "one entry such as `allow: admin` or a bare `allow`",
                        ))
                    }
                }
            }
        }
        Kind::Scalar { value, .. } if !node.is_null() => out.push((value.clone(), None, node)),
        _ => {}
    }
    if out.is_empty() {
        return Err(check::expected(node, path, "a non-empty rule"));
    }
    Ok(out)
}

/// Parses the conditions of one rule entry: an ACL name, an inline spec map,
/// or a list of those. All of them must match.
fn parse_conditions(node: &Node, path: &str, notes: &mut Notes) -> Result<Vec<AclSpec>, Problem> {
    let mut out = Vec::new();
    let items: Vec<&Node> = match &node.kind {
        Kind::Seq(items) => items.iter().collect(),
        _ => vec![node],
    };
    for (i, item) in items.iter().enumerate() {
        let item_path = if matches!(node.kind, Kind::Seq(_)) {
            check::index(path, i)
        } else {
            path.to_string()
        };
        match &item.kind {
            Kind::Scalar { value, .. } if !item.is_null() => out.push(acl_reference(value)),
            Kind::Map(entries) => {
                for (kind, value) in entries {
                    let kind_name = check::key(kind, &item_path)?;
                    let spec_path = check::join(&item_path, kind_name);
                    if kind_name == "acl" {
                        for v in check::list_or_single(value) {
                            out.push(acl_reference(check::string(v, &spec_path, "an ACL name")?));
                        }
                    } else {
                        out.extend(parse_spec(kind, kind_name, value, &spec_path, notes)?);
                    }
                }
            }
            _ => {
                return Err(check::expected(
                    item,
                    &item_path,
                    "an ACL name or an inline ACL spec such as {user: bob@example.org}",
                ))
            }
        }
    }
    if out.is_empty() {
        return Err(check::expected(node, path, "an ACL name or ACL specs"));
    }
    Ok(out)
}

/// An ACL name used as a condition.
fn acl_reference(name: &str) -> AclSpec {
    match name {
        "all" => AclSpec::All,
        "none" => AclSpec::None,
        _ => AclSpec::Acl(name.to_string()),
    }
}

/// Compiles a regexp from the configuration.
fn regex(node: &Node, text: &str, path: &str) -> Result<Regex, Problem> {
    Regex::new(text).map_err(|e| {
        Problem::at(
            node,
            format!(
                "{path}: invalid regular expression {text:?}: {}",
                first_line(&e.to_string())
            ),
        )
    })
}

/// Compiles a shell glob (`*`, `?`, `[abc]`, `[!abc]`) from the configuration.
fn glob(node: &Node, text: &str, path: &str) -> Result<Regex, Problem> {
    Regex::new(&glob_to_regex(text)).map_err(|e| {
        Problem::at(
            node,
            format!(
                "{path}: invalid glob {text:?}: {}",
                first_line(&e.to_string())
            ),
        )
    })
}

/// First line of a (possibly multi-line) error text.
fn first_line(text: &str) -> &str {
    text.lines().find(|l| !l.trim().is_empty()).unwrap_or(text)
}

/// Translates a shell glob into an anchored regular expression.
pub fn glob_to_regex(glob: &str) -> String {
    let mut out = String::from("^(?:");
    let mut chars = glob.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => out.push_str(".*"),
            '?' => out.push('.'),
            '[' => {
                // Copy a bracket expression, translating `!` negation.
                let mut class = String::from("[");
                if matches!(chars.peek(), Some('!') | Some('^')) {
                    chars.next();
                    class.push('^');
                }
                if chars.peek() == Some(&']') {
                    chars.next();
                    class.push_str("\\]");
                }
                let mut closed = false;
                for d in chars.by_ref() {
                    if d == ']' {
                        closed = true;
                        break;
                    }
                    if matches!(d, '\\' | '[' | '&' | '~' | '^') {
                        class.push('\\');
                    }
                    class.push(d);
                }
                if closed {
                    class.push(']');
                    out.push_str(&class);
                } else {
                    // An unclosed `[` is a literal.
                    out.push_str(&regex::escape("["));
                    out.push_str(&regex::escape(&class[1..]));
                }
            }
            other => out.push_str(&regex::escape(&other.to_string())),
        }
    }
    out.push_str(")$");
    out
}

/// Parses one `KIND: VALUE` spec (value may be a list, giving several specs).
fn parse_spec(
    kind_node: &Node,
    kind: &str,
    value: &Node,
    path: &str,
    notes: &mut Notes,
) -> Result<Vec<AclSpec>, Problem> {
    let mut out = Vec::new();
    match kind {
        "user" | "user_regexp" | "user_glob" => {
            for (user_node, user, server) in user_pairs(value, path)? {
                let server = match server {
                    Some((node, text)) => Some(
                        check::domain(&text)
                            .map_err(|r| Problem::at(node, format!("{path}: expected a server name, found {r}")))?,
                    ),
                    None => None,
                };
                out.push(match kind {
                    "user" => AclSpec::User {
                        user: check::localpart(&user)
                            .map_err(|r| Problem::at(user_node, format!("{path}: expected a user name, found {r}")))?,
                        server,
                    },
                    "user_regexp" => AclSpec::UserRegexp {
                        user: regex(user_node, &user, path)?,
                        server,
                    },
                    _ => AclSpec::UserRegexp {
                        user: glob(user_node, &user, path)?,
                        server,
                    },
                });
            }
        }
        "server" => {
            for v in check::list_or_single(value) {
                out.push(AclSpec::Server(check::domain_node(v, path)?));
            }
        }
        "server_regexp" | "server_glob" => {
            for v in check::list_or_single(value) {
                let text = check::string(v, path, "a pattern")?;
                out.push(AclSpec::ServerRegexp(if kind == "server_regexp" {
                    regex(v, text, path)?
                } else {
                    glob(v, text, path)?
                }));
            }
        }
        "node_regexp" | "node_glob" => {
            let maps: Vec<&Node> = check::list_or_single(value);
            for m in maps {
                for (u, s) in check::map(m, path, "a map {USER_PATTERN: SERVER_PATTERN}")? {
                    let user_text = check::key(u, path)?;
                    let server_text = check::string(s, path, "a server pattern")?;
                    out.push(if kind == "node_regexp" {
                        AclSpec::NodeRegexp {
                            user: regex(u, user_text, path)?,
                            server: regex(s, server_text, path)?,
                        }
                    } else {
                        AclSpec::NodeRegexp {
                            user: glob(u, user_text, path)?,
                            server: glob(s, server_text, path)?,
                        }
                    });
                }
            }
        }
        "ip" => {
            for v in check::list_or_single(value) {
                let text = check::string(v, path, "an IP address or network such as 10.0.0.0/8")?;
                let net = text.parse::<IpNet>().map_err(|reason| {
                    Problem::at(v, format!("{path}: expected an IP address or network such as 10.0.0.0/8, found {reason}"))
                })?;
                out.push(AclSpec::Ip(net));
            }
        }
        "resource" | "resource_regexp" | "resource_glob" | "shared_group" => {
            notes.warn(
                kind_node,
                format!("{path}: ACL spec `{kind}` is not supported by Rookery and never matches"),
            );
            out.push(AclSpec::Unsupported);
        }
        _ => {
            return Err(Problem::at(
                kind_node,
                format!(
                    "{path}: unknown ACL spec `{kind}`; expected user, server, user_regexp, server_regexp, \
                     node_regexp, user_glob, server_glob, node_glob, ip or acl"
                ),
            ))
        }
    }
    Ok(out)
}

/// A user spec part: the node to blame, the user text, and the server (node
/// and text) if one was given.
type UserPair<'a> = (&'a Node, String, Option<(&'a Node, String)>);

/// Reads the forms of a user spec: `bob`, `bob@host`, `{bob: host}`,
/// `{user: bob, server: host}`, or a list of those.
fn user_pairs<'a>(value: &'a Node, path: &str) -> Result<Vec<UserPair<'a>>, Problem> {
    let mut out = Vec::new();
    for v in check::list_or_single(value) {
        match &v.kind {
            Kind::Map(entries) => {
                let is_explicit =
                    entries.len() == 2 && v.get("user").is_some() && v.get("server").is_some();
                if is_explicit {
                    let (Some(u), Some(s)) = (v.get("user"), v.get("server")) else {
                        continue;
                    };
                    let user = check::string(u, path, "a user name")?.to_string();
                    let server = check::string(s, path, "a server name")?.to_string();
                    out.push((u, user, Some((s, server))));
                } else {
                    for (u, s) in entries {
                        let user = check::key(u, path)?.to_string();
                        let server = check::string(s, path, "a server name")?.to_string();
                        out.push((u, user, Some((s, server))));
                    }
                }
            }
            _ => {
                let text = check::string(v, path, "a user name such as bob or bob@example.org")?;
                match text.split('@').collect::<Vec<_>>().as_slice() {
                    [user] => out.push((v, user.to_string(), None)),
                    [user, server] => {
                        out.push((v, user.to_string(), Some((v, server.to_string()))))
                    }
                    _ => {
                        return Err(check::expected(
                            v,
                            path,
                            "a user name such as bob or bob@example.org",
                        ))
                    }
                }
            }
        }
    }
    Ok(out)
}

// ------------------------------------------------------------ api_permissions

/// A front end that runs administration commands (`api_permissions`' `from:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frontend {
    /// `rookery ctl` over the control socket or on the database
    /// (ejabberd's `ejabberd_ctl`).
    Ctl,
    /// XEP-0050 ad-hoc commands (`mod_adhoc`; also written `adhoc` or
    /// ejabberd 25's `mod_adhoc_api`).
    AdHoc,
    /// `POST /api/COMMAND` (`mod_http_api`).
    HttpApi,
}

/// One `who:` alternative.
#[derive(Debug, Clone)]
enum Who {
    /// An ACL spec (`all`, `none`, `user:`, `ip:`, `acl:` ...).
    Spec(AclSpec),
    /// `access: RULE` (a rule name or an inline rule).
    Access(AccessRule),
    /// `access: NAME`.
    AccessNamed(String),
}

/// One `what:` pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum What {
    /// `"*"`.
    All,
    /// A command name.
    Command(String),
    /// `"[tag:NAME]"`.
    Tag(String),
}

/// One named group of `api_permissions`.
#[derive(Debug, Clone)]
struct ApiGroup {
    name: String,
    /// `None`: every front end.
    from: Option<Vec<Frontend>>,
    who: Vec<Who>,
    allow: Vec<What>,
    except: Vec<What>,
}

/// ejabberd's `api_permissions`: named groups, each saying which front ends
/// (`from`), which callers (`who`) may run which commands (`what`). A
/// command runs when any group matches all three. Without the option, the
/// defaults are ejabberd's: `rookery ctl` may run everything; ad-hoc
/// commands and `mod_http_api` need the `configure` access rule
/// (`announce` for announcements when that rule is defined, as
/// mod_announce's access).
#[derive(Debug, Clone)]
pub struct ApiPermissions {
    groups: Vec<ApiGroup>,
}

impl ApiPermissions {
    /// The defaults used when the option is absent.
    pub fn defaults(access_rules: &AccessRules) -> ApiPermissions {
        let mut groups = vec![ApiGroup {
            name: "console commands".into(),
            from: Some(vec![Frontend::Ctl]),
            who: vec![Who::Spec(AclSpec::All)],
            allow: vec![What::All],
            except: vec![],
        }];
        let announce_rule = access_rules.is_defined("announce");
        groups.push(ApiGroup {
            name: "admin access".into(),
            from: Some(vec![Frontend::AdHoc, Frontend::HttpApi]),
            who: vec![Who::AccessNamed("configure".into())],
            allow: vec![What::All],
            except: if announce_rule {
                vec![What::Command("announce".into())]
            } else {
                vec![]
            },
        });
        if announce_rule {
            groups.push(ApiGroup {
                name: "announcements".into(),
                from: Some(vec![Frontend::AdHoc]),
                who: vec![Who::AccessNamed("announce".into())],
                allow: vec![What::Command("announce".into())],
                except: vec![],
            });
        }
        ApiPermissions { groups }
    }

    /// Whether `command` (with its `tags`) may run from `frontend` for
    /// `subject`: the first group that matches all of from, who and what
    /// allows it; no group, no command.
    pub fn allows(
        &self,
        ctx: &Context<'_>,
        rules: &AccessRules,
        frontend: Frontend,
        subject: &Subject<'_>,
        command: &str,
        tags: &[&str],
    ) -> bool {
        self.matching_group(ctx, rules, frontend, subject, command, tags)
            .is_some()
    }

    /// The name of the group that allows the call, if any (for logs).
    pub fn matching_group(
        &self,
        ctx: &Context<'_>,
        rules: &AccessRules,
        frontend: Frontend,
        subject: &Subject<'_>,
        command: &str,
        tags: &[&str],
    ) -> Option<&str> {
        let pattern_matches = |p: &What| match p {
            What::All => true,
            What::Command(c) => c == command,
            What::Tag(t) => tags.contains(&t.as_str()),
        };
        self.groups
            .iter()
            .find(|g| {
                g.from.as_ref().is_none_or(|f| f.contains(&frontend))
                    && g.allow.iter().any(pattern_matches)
                    && !g.except.iter().any(pattern_matches)
                    && g.who.iter().any(|w| match w {
                        Who::Spec(spec) => ctx.spec_matches(spec, subject),
                        Who::AccessNamed(rule) => ctx.access(rules, rule, subject) == Access::Allow,
                        Who::Access(rule) => {
                            rule.iter()
                                .find(|(_, conds)| ctx.all_match(conds, subject))
                                .map(|(a, _)| *a)
                                == Some(Access::Allow)
                        }
                    })
            })
            .map(|g| g.name.as_str())
    }

    /// Whether some group lets `rookery ctl` run something (a config
    /// without one locks the control socket; worth a warning).
    pub fn ctl_has_group(&self) -> bool {
        self.groups
            .iter()
            .any(|g| g.from.as_ref().is_none_or(|f| f.contains(&Frontend::Ctl)))
    }

    /// Parses the `api_permissions` option. `known_command` tells whether a
    /// command name exists (unknown ones are warned about, never matched:
    /// ejabberd configs name commands Rookery lacks, such as `start`).
    pub(crate) fn parse(
        node: &Node,
        path: &str,
        notes: &mut Notes,
        known_command: &dyn Fn(&str) -> bool,
    ) -> Result<ApiPermissions, Problem> {
        let mut groups = Vec::new();
        for (key, value) in check::map(node, path, "a map of group names to {from, who, what}")? {
            let name = check::key(key, path)?;
            let gpath = check::join(path, name);
            let mut group = ApiGroup {
                name: name.to_string(),
                from: None,
                who: Vec::new(),
                allow: Vec::new(),
                except: Vec::new(),
            };
            let (mut saw_who, mut saw_what) = (false, false);
            for (k, v) in check::map(value, &gpath, "a map with from, who and what")? {
                let field = check::key(k, &gpath)?;
                let fpath = check::join(&gpath, field);
                match field {
                    "from" => {
                        let mut from = Vec::new();
                        for f in check::list_or_single(v) {
                            match check::string(f, &fpath, "a front end such as ejabberd_ctl")? {
                                "ejabberd_ctl" | "rookery_ctl" => from.push(Frontend::Ctl),
                                "mod_adhoc" | "adhoc" | "mod_adhoc_api" => {
                                    from.push(Frontend::AdHoc)
                                }
                                "mod_http_api" => from.push(Frontend::HttpApi),
                                other @ ("ejabberd_xmlrpc"
                                | "ejabberd_web_admin" | "mod_cron"
                                | "mod_mqtt") => notes.warn(
                                    f,
                                    format!(
                                        "{fpath}: Rookery has no `{other}` front end; this entry never matches"
                                    ),
                                ),
                                other => {
                                    return Err(Problem::at(
                                        f,
                                        format!(
                                            "{fpath}: unknown front end `{other}`; expected ejabberd_ctl, mod_adhoc or mod_http_api"
                                        ),
                                    ))
                                }
                            }
                        }
                        group.from = Some(from);
                    }
                    "who" => {
                        saw_who = true;
                        group.who = parse_who(v, &fpath, notes)?;
                    }
                    "what" => {
                        saw_what = true;
                        for (i, w) in check::list_or_single(v).into_iter().enumerate() {
                            let text = check::string(
                                w,
                                &fpath,
                                "a command name, \"*\", \"!NAME\" or \"[tag:NAME]\"",
                            )?;
                            let (neg, body) = match text.strip_prefix('!') {
                                Some(rest) => (true, rest),
                                None => (false, text),
                            };
                            let pattern = if body == "*" {
                                What::All
                            } else if let Some(tag) =
                                body.strip_prefix("[tag:").and_then(|t| t.strip_suffix(']'))
                            {
                                What::Tag(tag.to_string())
                            } else if !body.is_empty()
                                && body.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                            {
                                if !known_command(body) {
                                    notes.warn(
                                        w,
                                        format!(
                                            "{}: no command `{body}` in Rookery; this entry never matches",
                                            check::index(&fpath, i)
                                        ),
                                    );
                                }
                                What::Command(body.to_string())
                            } else {
                                return Err(check::expected(
                                    w,
                                    &fpath,
                                    "a command name, \"*\", \"!NAME\" or \"[tag:NAME]\"",
                                ));
                            };
                            if neg {
                                group.except.push(pattern);
                            } else {
                                group.allow.push(pattern);
                            }
                        }
                    }
                    _ => {
                        return Err(Problem::at(
                            k,
                            format!("{fpath}: unknown key; expected from, who or what"),
                        ))
                    }
                }
            }
            if !saw_who {
                return Err(Problem::at(key, format!("{gpath}: missing `who:`")));
            }
            if !saw_what {
                return Err(Problem::at(key, format!("{gpath}: missing `what:`")));
            }
            groups.push(group);
        }
        Ok(ApiPermissions { groups })
    }

    /// Access rules named in `who: {access: NAME}` (for "undefined" warnings).
    pub(crate) fn referenced_rules(&self) -> Vec<(&str, &str)> {
        let mut out = Vec::new();
        for g in &self.groups {
            for w in &g.who {
                if let Who::AccessNamed(rule) = w {
                    out.push((g.name.as_str(), rule.as_str()));
                }
            }
        }
        out
    }
}

/// Parses `who:`: one alternative or a list; each an ACL name, `all`,
/// `none`, an inline spec map (`user:`, `ip:`, `acl:` ...) or
/// `access: RULE` (a rule name or an inline rule body).
fn parse_who(node: &Node, path: &str, notes: &mut Notes) -> Result<Vec<Who>, Problem> {
    let mut out = Vec::new();
    let items: Vec<&Node> = match &node.kind {
        Kind::Seq(items) => items.iter().collect(),
        _ => vec![node],
    };
    for (i, item) in items.iter().enumerate() {
        let item_path = if matches!(node.kind, Kind::Seq(_)) {
            check::index(path, i)
        } else {
            path.to_string()
        };
        match &item.kind {
            Kind::Scalar { value, .. } if !item.is_null() => {
                out.push(Who::Spec(acl_reference(value)))
            }
            Kind::Map(entries) => {
                for (kind, value) in entries {
                    let kind_name = check::key(kind, &item_path)?;
                    let spec_path = check::join(&item_path, kind_name);
                    match kind_name {
                        "access" => match &value.kind {
                            Kind::Scalar { value: name, .. } if !value.is_null() => match name.as_str() {
                                "all" => out.push(Who::Spec(AclSpec::All)),
                                "none" => out.push(Who::Spec(AclSpec::None)),
                                _ => out.push(Who::AccessNamed(name.clone())),
                            },
                            _ => out.push(Who::Access(parse_access_rule(value, &spec_path, notes)?)),
                        },
                        "acl" => {
                            for v in check::list_or_single(value) {
                                out.push(Who::Spec(acl_reference(check::string(
                                    v,
                                    &spec_path,
                                    "an ACL name",
                                )?)));
                            }
                        }
                        "oauth" => {
                            notes.warn(
                                kind,
                                format!("{spec_path}: Rookery has no OAuth; this entry never matches"),
                            );
                        }
                        _ => out.extend(
                            parse_spec(kind, kind_name, value, &spec_path, notes)?
                                .into_iter()
                                .map(Who::Spec),
                        ),
                    }
                }
            }
            _ => {
                return Err(check::expected(
                    item,
                    &item_path,
                    "all, none, an ACL name, {access: RULE} or an ACL spec such as {user: bob@example.org}",
                ))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::yaml::parse;

    fn doc(text: &str) -> Node {
        parse(text).unwrap().unwrap()
    }

    struct Fixture {
        acls: Acls,
        access: AccessRules,
        shapers: ShaperRules,
        hosts: Vec<String>,
        notes: Notes,
    }

    fn fixture(text: &str) -> Fixture {
        let root = doc(text);
        let mut notes = Notes::default();
        let empty = Node::scalar("", 0, 0);
        let acls = Acls::parse(root.get("acl").unwrap_or(&empty), "acl", &mut notes).unwrap();
        let access = AccessRules::parse(
            root.get("access_rules").unwrap_or(&empty),
            "access_rules",
            &mut notes,
        )
        .unwrap();
        let shapers = ShaperRules::parse(
            root.get("shaper_rules").unwrap_or(&empty),
            "shaper_rules",
            &mut notes,
        )
        .unwrap();
        Fixture {
            acls,
            access,
            shapers,
            hosts: vec!["example.org".into(), "example.net".into()],
            notes,
        }
    }

    impl Fixture {
        fn ctx(&self) -> Context<'_> {
            Context {
                acls: &self.acls,
                hosts: &self.hosts,
            }
        }
        fn acl(&self, name: &str, user: Option<(&str, &str)>, ip: Option<&str>) -> bool {
            let ip = ip.map(|i| i.parse().unwrap());
            self.ctx().acl_matches(name, &Subject { user, ip })
        }
        fn allows(&self, rule: &str, user: Option<(&str, &str)>, ip: Option<&str>) -> bool {
            let ip = ip.map(|i| i.parse().unwrap());
            self.ctx().access(&self.access, rule, &Subject { user, ip }) == Access::Allow
        }
        fn shaper(&self, rule: &str, user: Option<(&str, &str)>) -> Option<ShaperValue> {
            self.ctx()
                .shaper_value(&self.shapers, rule, &Subject { user, ip: None })
                .cloned()
        }
    }

    fn parse_err(text: &str) -> Problem {
        let root = doc(text);
        let mut notes = Notes::default();
        if let Some(acl) = root.get("acl") {
            if let Err(e) = Acls::parse(acl, "acl", &mut notes) {
                return e;
            }
        }
        if let Some(rules) = root.get("access_rules") {
            if let Err(e) = AccessRules::parse(rules, "access_rules", &mut notes) {
                return e;
            }
        }
        if let Some(rules) = root.get("shaper_rules") {
            if let Err(e) = ShaperRules::parse(rules, "shaper_rules", &mut notes) {
                return e;
            }
        }
        panic!("no error for {text}");
    }

    #[test]
    fn user_specs_in_every_form() {
        let f = fixture(
            "acl:\n  a:\n    user: bob\n  b:\n    user: bob@elsewhere.com\n  c:\n    user: {carol: example.net}\n  \
             d:\n    user: {user: dave, server: example.org}\n  e:\n    user: [Erin@example.org, frank]\n",
        );
        // Bare name: any served host, but not a foreign one.
        assert!(f.acl("a", Some(("bob", "example.org")), None));
        assert!(f.acl("a", Some(("bob", "example.net")), None));
        assert!(!f.acl("a", Some(("bob", "elsewhere.com")), None));
        assert!(!f.acl("a", Some(("alice", "example.org")), None));
        assert!(!f.acl("a", None, Some("127.0.0.1")));
        // user@host matches that exact server (even a foreign one).
        assert!(f.acl("b", Some(("bob", "elsewhere.com")), None));
        assert!(!f.acl("b", Some(("bob", "example.org")), None));
        assert!(f.acl("c", Some(("carol", "example.net")), None));
        assert!(!f.acl("c", Some(("carol", "example.org")), None));
        assert!(f.acl("d", Some(("dave", "example.org")), None));
        // Lists are "any of"; names are normalised.
        assert!(f.acl("e", Some(("erin", "example.org")), None));
        assert!(f.acl("e", Some(("Frank", "EXAMPLE.NET")), None));
        assert!(!f.acl("e", Some(("erin", "example.net")), None));
    }

    #[test]
    fn server_and_regexp_and_glob_specs() {
        let f = fixture(
            "acl:\n  s:\n    server: [Example.ORG]\n  ur:\n    user_regexp: \"^adm\"\n  urs:\n    user_regexp: \"^t.*$@other.com\"\n  \
             sr:\n    server_regexp: \"\\\\.net$\"\n  nr:\n    node_regexp: {\"^x$\": \"^ex\"}\n  ug:\n    user_glob: \"te?t*\"\n  \
             sg:\n    server_glob: \"*.example.com\"\n  ng:\n    node_glob: {\"a*\": \"[!z]*\"}\n  local:\n    user_regexp: \"\"\n",
        );
        assert!(f.acl("s", Some(("anyone", "example.org")), None));
        assert!(!f.acl("s", Some(("anyone", "example.net")), None));
        assert!(f.acl("ur", Some(("admin", "example.org")), None));
        assert!(
            !f.acl("ur", Some(("admin", "foreign.org")), None),
            "user_regexp needs a served host"
        );
        assert!(!f.acl("ur", Some(("xadmin", "example.org")), None));
        assert!(f.acl("urs", Some(("tom", "other.com")), None));
        assert!(!f.acl("urs", Some(("tom", "example.org")), None));
        assert!(f.acl("sr", Some(("a", "example.net")), None));
        assert!(!f.acl("sr", Some(("a", "example.org")), None));
        assert!(f.acl("nr", Some(("x", "example.org")), None));
        assert!(!f.acl("nr", Some(("xy", "example.org")), None));
        assert!(f.acl("ug", Some(("test1", "example.org")), None));
        assert!(f.acl("ug", Some(("text", "example.net")), None));
        assert!(
            !f.acl("ug", Some(("atest", "example.org")), None),
            "globs are anchored"
        );
        assert!(f.acl("sg", Some(("u", "chat.example.com")), None));
        assert!(!f.acl("sg", Some(("u", "example.com")), None));
        assert!(f.acl("ng", Some(("abc", "yes.org")), None));
        assert!(!f.acl("ng", Some(("abc", "zed.org")), None));
        assert!(f.acl("local", Some(("anybody", "example.net")), None));
        assert!(!f.acl("local", Some(("anybody", "remote.org")), None));
    }

    #[test]
    fn ip_specs_v4_v6_and_mapped() {
        let f = fixture(
            "acl:\n  lo:\n    ip:\n      - 127.0.0.0/8\n      - ::1/128\n  lan:\n    ip: 192.168.1.0/24\n  \
             one:\n    ip: 10.1.2.3\n  v6net:\n    ip: \"2001:db8::/32\"\n  any:\n    ip: 0.0.0.0/0\n",
        );
        assert!(f.acl("lo", None, Some("127.1.2.3")));
        assert!(f.acl("lo", None, Some("::1")));
        assert!(!f.acl("lo", None, Some("128.0.0.1")));
        assert!(
            f.acl("lo", None, Some("::ffff:127.0.0.1")),
            "IPv4-mapped IPv6"
        );
        assert!(f.acl("lan", None, Some("192.168.1.254")));
        assert!(!f.acl("lan", None, Some("192.168.2.1")));
        assert!(f.acl("one", None, Some("10.1.2.3")));
        assert!(!f.acl("one", None, Some("10.1.2.4")));
        assert!(f.acl("v6net", None, Some("2001:db8:ffff::1")));
        assert!(!f.acl("v6net", None, Some("2001:db9::1")));
        assert!(!f.acl("v6net", None, Some("10.0.0.1")));
        assert!(f.acl("any", None, Some("203.0.113.9")));
        assert!(
            !f.acl("any", Some(("bob", "example.org")), None),
            "no IP given"
        );
    }

    #[test]
    fn ipnet_parsing() {
        assert_eq!("10.0.0.0/8".parse::<IpNet>().unwrap().prefix, 8);
        assert_eq!("::1".parse::<IpNet>().unwrap().prefix, 128);
        assert!("10.0.0.0/33".parse::<IpNet>().is_err());
        assert!("::/129".parse::<IpNet>().is_err());
        assert!("10.0.0/8".parse::<IpNet>().is_err());
        let net: IpNet = "::ffff:10.0.0.0/104".parse().unwrap();
        assert!(net.contains("10.9.9.9".parse().unwrap()));
    }

    #[test]
    fn builtin_acls_and_undefined_acls() {
        let f = fixture("acl:\n  x:\n    server: example.org\n");
        assert!(f.acl("all", None, None));
        assert!(!f.acl("none", Some(("a", "example.org")), None));
        assert!(!f.acl("undefined", Some(("a", "example.org")), None));
        assert!(f.acls.is_defined("x"));
        assert!(!f.acls.is_defined("all"));
    }

    #[test]
    fn access_rules_first_match_wins_in_order() {
        let f = fixture(
            "acl:\n  admin:\n    user: root@example.org\n  blocked:\n    user: [spammer, root]\n  local:\n    user_regexp: \"\"\n\
             access_rules:\n  c2s:\n    deny: blocked\n    allow: all\n  c2s_list:\n    - allow: admin\n    - deny: blocked\n    - allow\n  \
             configure:\n    allow: admin\n  local:\n    - allow: local\n",
        );
        // Map form keeps document order: deny blocked first.
        assert!(!f.allows("c2s", Some(("spammer", "example.org")), None));
        assert!(!f.allows("c2s", Some(("root", "example.org")), None));
        assert!(f.allows("c2s", Some(("alice", "example.org")), None));
        // List form: admin allowed before the deny entry is reached.
        assert!(f.allows("c2s_list", Some(("root", "example.org")), None));
        assert!(!f.allows("c2s_list", Some(("spammer", "example.net")), None));
        assert!(
            f.allows("c2s_list", Some(("alice", "remote.com")), None),
            "bare allow = all"
        );
        // No match means deny.
        assert!(!f.allows("configure", Some(("alice", "example.org")), None));
        assert!(f.allows("configure", Some(("root", "example.org")), None));
        assert!(!f.allows("local", Some(("alice", "remote.com")), None));
        assert!(!f.allows("local", None, Some("127.0.0.1")));
    }

    #[test]
    fn builtin_and_unknown_access_rules() {
        let f = fixture("access_rules:\n  x:\n    - deny\n");
        assert!(f.allows("all", None, None));
        assert!(!f.allows("none", Some(("a", "example.org")), None));
        assert!(!f.allows("missing", Some(("a", "example.org")), None));
        assert!(!f.allows("x", Some(("a", "example.org")), None));
    }

    #[test]
    fn inline_specs_in_access_rules_must_all_match() {
        let f = fixture(
            "acl:\n  lo:\n    ip: 127.0.0.0/8\n\
             access_rules:\n  r:\n    - allow:\n      - user: bob@example.org\n      - ip: 127.0.0.1\n    - allow: {server: example.net}\n    \
             - allow: {acl: lo, user: carol}\n",
        );
        assert!(f.allows("r", Some(("bob", "example.org")), Some("127.0.0.1")));
        assert!(!f.allows("r", Some(("bob", "example.org")), Some("10.0.0.1")));
        assert!(!f.allows("r", Some(("bob", "example.org")), None));
        assert!(f.allows("r", Some(("anyone", "example.net")), None));
        assert!(f.allows("r", Some(("carol", "example.org")), Some("127.0.0.2")));
        assert!(!f.allows("r", Some(("carol", "example.org")), Some("10.0.0.2")));
    }

    #[test]
    fn shaper_rules_values_and_defaults() {
        let f = fixture(
            "acl:\n  admin:\n    user: root@example.org\n\
             shaper_rules:\n  max_user_sessions: 10\n  max_user_offline_messages:\n    5000: admin\n    100: all\n  \
             max_list:\n    - 5000: admin\n    - 100\n  c2s_shaper:\n    none: admin\n    normal: all\n  s2s_shaper: fast\n  \
             unl: unlimited\n  only_admin:\n    - 7: admin\n",
        );
        let root = Some(("root", "example.org"));
        let alice = Some(("alice", "example.org"));
        assert_eq!(
            f.shaper("max_user_sessions", alice),
            Some(ShaperValue::Number(10))
        );
        assert_eq!(
            f.shaper("max_user_offline_messages", root),
            Some(ShaperValue::Number(5000))
        );
        assert_eq!(
            f.shaper("max_user_offline_messages", alice),
            Some(ShaperValue::Number(100))
        );
        assert_eq!(f.shaper("max_list", root), Some(ShaperValue::Number(5000)));
        assert_eq!(f.shaper("max_list", alice), Some(ShaperValue::Number(100)));
        assert_eq!(f.shaper("c2s_shaper", root), Some(ShaperValue::Unlimited));
        assert_eq!(
            f.shaper("c2s_shaper", alice),
            Some(ShaperValue::Shaper("normal".into()))
        );
        assert_eq!(
            f.shaper("s2s_shaper", None),
            Some(ShaperValue::Shaper("fast".into()))
        );
        assert_eq!(f.shaper("unl", alice), Some(ShaperValue::Unlimited));
        assert_eq!(f.shaper("only_admin", alice), None);
        assert_eq!(f.shaper("missing", alice), None);
    }

    #[test]
    fn unsupported_specs_warn_and_never_match() {
        let f = fixture("acl:\n  bots:\n    resource: bot\n    shared_group: g\n");
        assert_eq!(f.notes.warnings.len(), 2);
        assert_eq!(f.notes.warnings[0].0, 3);
        assert!(
            f.notes.warnings[0].1.contains("acl.bots.resource"),
            "{:?}",
            f.notes.warnings
        );
        assert!(!f.acl("bots", Some(("bot", "example.org")), None));
    }

    #[test]
    fn parse_errors_have_positions() {
        let e = parse_err("acl:\n  lan:\n    ip: 10.0.0.300/8\n");
        assert_eq!((e.line, e.col), (3, 9));
        assert!(
            e.message.starts_with("acl.lan.ip: expected an IP address"),
            "{}",
            e.message
        );

        let e = parse_err("acl:\n  x:\n    colour: red\n");
        assert_eq!((e.line, e.col), (3, 5));
        assert!(
            e.message.contains("unknown ACL spec `colour`"),
            "{}",
            e.message
        );

        let e = parse_err("acl:\n  x:\n    user_regexp: \"(\"\n");
        assert_eq!(e.line, 3);
        assert!(
            e.message.contains("invalid regular expression"),
            "{}",
            e.message
        );

        let e = parse_err("acl:\n  all:\n    user: x\n");
        assert!(e.message.contains("built-in"), "{}", e.message);

        let e = parse_err("access_rules:\n  r:\n    - permit: all\n");
        assert_eq!((e.line, e.col), (3, 7));
        assert!(
            e.message.contains("expected \"allow\" or \"deny\""),
            "{}",
            e.message
        );

        let e = parse_err("shaper_rules:\n  r:\n    - 0: all\n");
        assert_eq!((e.line, e.col), (3, 7));

        let e = parse_err("acl:\n  x:\n    user: \"a@b@c\"\n");
        assert_eq!((e.line, e.col), (3, 11));

        let e = parse_err("acl:\n  x:\n    server: \"bad host\"\n");
        assert!(
            e.message.contains("expected a domain name"),
            "{}",
            e.message
        );
    }

    #[test]
    fn glob_translation() {
        let re = Regex::new(&glob_to_regex("a.b*[!x]?")).unwrap();
        assert!(re.is_match("a.bcdyz"));
        assert!(!re.is_match("axbcdyz"), "dot is literal");
        assert!(!re.is_match("a.bcdxz"));
        let re = Regex::new(&glob_to_regex("[unclosed")).unwrap();
        assert!(re.is_match("[unclosed"));
    }

    fn api(text: &str) -> (Fixture, Result<ApiPermissions, Problem>) {
        let mut f = fixture(text);
        let root = doc(text);
        let known = |name: &str| {
            matches!(
                name,
                "register" | "unregister" | "status" | "stats_host" | "get_roster"
            )
        };
        let p = match root.get("api_permissions") {
            Some(node) => ApiPermissions::parse(node, "api_permissions", &mut f.notes, &known),
            None => Ok(ApiPermissions::defaults(&f.access)),
        };
        (f, p)
    }

    fn may(
        f: &Fixture,
        p: &ApiPermissions,
        from: Frontend,
        user: Option<(&str, &str)>,
        ip: Option<&str>,
        command: &str,
        tags: &[&str],
    ) -> bool {
        let ip = ip.map(|i| i.parse().unwrap());
        p.allows(
            &f.ctx(),
            &f.access,
            from,
            &Subject { user, ip },
            command,
            tags,
        )
    }

    #[test]
    fn api_permissions_defaults_match_ejabberd() {
        let admin = Some(("root", "example.org"));
        let bob = Some(("bob", "example.org"));
        let (f, p) = api(
            "acl:\n  admin:\n    user: root@example.org\naccess_rules:\n  configure:\n    allow: admin\n",
        );
        let p = p.unwrap();
        // rookery ctl: everything.
        assert!(may(&f, &p, Frontend::Ctl, None, None, "unregister", &[]));
        assert!(may(&f, &p, Frontend::Ctl, None, None, "stop", &[]));
        // ad-hoc: the configure rule.
        assert!(may(&f, &p, Frontend::AdHoc, admin, None, "register", &[]));
        assert!(may(&f, &p, Frontend::AdHoc, admin, None, "announce", &[]));
        assert!(!may(&f, &p, Frontend::AdHoc, bob, None, "register", &[]));
        assert!(!may(&f, &p, Frontend::AdHoc, None, None, "register", &[]));
        // mod_http_api: the configure rule too; an address alone (even
        // loopback, which ejabberd lets in) is not enough.
        assert!(may(&f, &p, Frontend::HttpApi, admin, None, "register", &[]));
        assert!(!may(&f, &p, Frontend::HttpApi, bob, None, "register", &[]));
        let lo = Some("127.0.0.1".parse().unwrap());
        assert!(!p.allows(
            &f.ctx(),
            &f.access,
            Frontend::HttpApi,
            &Subject { user: None, ip: lo },
            "register",
            &[]
        ));
        // With an `announce` rule, announcements follow it alone.
        let (f, p) = api(
            "acl:\n  admin:\n    user: root@example.org\n  staff:\n    user: bob@example.org\n\
             access_rules:\n  configure:\n    allow: admin\n  announce:\n    allow: staff\n",
        );
        let p = p.unwrap();
        assert!(may(&f, &p, Frontend::AdHoc, bob, None, "announce", &[]));
        assert!(!may(&f, &p, Frontend::AdHoc, bob, None, "register", &[]));
        assert!(!may(&f, &p, Frontend::AdHoc, admin, None, "announce", &[]));
        assert!(may(&f, &p, Frontend::AdHoc, admin, None, "register", &[]));
    }

    #[test]
    fn api_permissions_from_who_what() {
        let (f, p) = api(
            "acl:\n  admin:\n    user: root@example.org\n  loopback:\n    ip: 127.0.0.0/8\n\
             access_rules:\n  configure:\n    allow: admin\n\
             api_permissions:\n\
             \x20 console:\n    from: ejabberd_ctl\n    who: all\n    what: [\"*\", \"!unregister\", \"!start\"]\n\
             \x20 admins:\n    from: [mod_adhoc, mod_http_api]\n    who:\n      access: configure\n    what: \"*\"\n\
             \x20 inline:\n    who:\n      - user: bob@example.org\n      - ip: 10.0.0.0/8\n    what: [\"[tag:roster]\", status]\n\
             \x20 rule:\n    from: adhoc\n    who:\n      access:\n        - deny: admin\n        - allow: all\n    what: stats_host\n\
             \x20 named_acl:\n    from: adhoc\n    who: loopback\n    what: register\n",
        );
        let p = p.unwrap();
        let admin = Some(("root", "example.org"));
        let bob = Some(("bob", "example.org"));
        let eve = Some(("eve", "example.org"));
        // console: "*" minus the negations.
        assert!(may(&f, &p, Frontend::Ctl, None, None, "register", &[]));
        assert!(!may(&f, &p, Frontend::Ctl, None, None, "unregister", &[]));
        // admins: from mod_adhoc and mod_http_api.
        assert!(may(&f, &p, Frontend::AdHoc, admin, None, "unregister", &[]));
        assert!(may(
            &f,
            &p,
            Frontend::HttpApi,
            admin,
            None,
            "unregister",
            &[]
        ));
        assert!(!may(
            &f,
            &p,
            Frontend::HttpApi,
            eve,
            None,
            "unregister",
            &[]
        ));
        assert!(!may(&f, &p, Frontend::AdHoc, eve, None, "unregister", &[]));
        // inline: no from = every front end; who alternatives; tags.
        assert!(may(
            &f,
            &p,
            Frontend::AdHoc,
            bob,
            None,
            "get_roster",
            &["roster"]
        ));
        assert!(may(
            &f,
            &p,
            Frontend::AdHoc,
            eve,
            Some("10.1.2.3"),
            "status",
            &[]
        ));
        assert!(!may(
            &f,
            &p,
            Frontend::AdHoc,
            eve,
            Some("11.1.2.3"),
            "status",
            &[]
        ));
        assert!(!may(
            &f,
            &p,
            Frontend::AdHoc,
            bob,
            None,
            "register",
            &["accounts"]
        ));
        // rule: an inline access rule, first match wins.
        assert!(may(&f, &p, Frontend::AdHoc, eve, None, "stats_host", &[]));
        assert!(may(&f, &p, Frontend::AdHoc, admin, None, "stats_host", &[]));
        // named_acl: a bare ACL name.
        assert!(may(
            &f,
            &p,
            Frontend::AdHoc,
            eve,
            Some("127.0.0.1"),
            "register",
            &[]
        ));
        assert!(!may(
            &f,
            &p,
            Frontend::AdHoc,
            eve,
            Some("10.0.0.1"),
            "register",
            &[]
        ));
        let warnings: Vec<&String> = f.notes.warnings.iter().map(|(_, w)| w).collect();
        assert!(
            !warnings.iter().any(|w| w.contains("mod_http_api")),
            "{warnings:?}"
        );
        assert!(
            warnings.iter().any(|w| w.contains("no command `start`")),
            "{warnings:?}"
        );
        assert!(p.ctl_has_group());
    }

    #[test]
    fn api_permissions_errors_have_lines() {
        for (text, line, needle) in [
            (
                "api_permissions:\n  g:\n    from: telnet\n    who: all\n    what: \"*\"\n",
                3,
                "unknown front end `telnet`",
            ),
            (
                "api_permissions:\n  g:\n    who: all\n",
                2,
                "missing `what:`",
            ),
            (
                "api_permissions:\n  g:\n    what: \"*\"\n",
                2,
                "missing `who:`",
            ),
            (
                "api_permissions:\n  g:\n    who: all\n    what: \"*\"\n    when: now\n",
                5,
                "unknown key",
            ),
            (
                "api_permissions:\n  g:\n    who:\n      colour: red\n    what: \"*\"\n",
                4,
                "unknown ACL spec `colour`",
            ),
            (
                "api_permissions:\n  g:\n    who: all\n    what: \"re gister\"\n",
                4,
                "api_permissions.g.what",
            ),
            (
                "api_permissions:\n  g:\n    who:\n      ip: 10.0.0.0/99\n    what: \"*\"\n",
                4,
                "expected an IP address",
            ),
        ] {
            let (_, p) = api(text);
            let e = p.expect_err(text);
            assert_eq!(e.line, line, "{text}: {e:?}");
            assert!(e.message.contains(needle), "{text}: {e:?}");
        }
    }
}
