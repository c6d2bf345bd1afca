//! Typed specs of module options, declared beside each module's code (as
//! ejabberd's `mod_opt_type`/`mod_options`/`mod_doc`): every option a
//! module accepts has a name, a [`Kind`] (what values are valid), a default
//! as the documentation writes it, a one-line doc and a [`Use`] (whether
//! Rookery applies it).
//!
//! Invariants: a module reads only options its spec declares (the
//! [`crate::opts::Opts`] readers take their defaults from the spec, so the
//! documented default is the applied one); the server's config loader checks
//! every `modules:` entry against these specs before any module is built,
//! so an unknown option or a wrong value stops the server with the file,
//! line and column (the loader knows positions; this file only says what
//! is valid). [`check`] works on `serde_yaml_ng` values so that both sides
//! agree on what a module will read: it returns the value normalised to
//! what the readers expect (`yes` → `true`, `"30"` → `30`, ...).

use serde_yaml_ng::Value;
use std::time::Duration;

/// What values an option takes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    /// `true` or `false` (ejabberd's `yes`/`no`, `on`/`off` too).
    Bool,
    /// An integer in `min..=max`.
    Int { min: u64, max: u64 },
    /// A number (integer or decimal) of at least `min`.
    Number { min: f64 },
    /// A positive integer, or `infinity` (no limit).
    Count,
    /// A duration: seconds, a number with a unit (`"5 minutes"`), or `infinity`.
    Timeout,
    /// One of these words.
    Enum(&'static [&'static str]),
    /// A text (numbers and booleans are taken as written).
    Text,
    /// A list of texts (a single text counts as a one-item list).
    TextList,
    /// A JID.
    Jid,
    /// A list of JIDs (a single JID counts as a one-item list).
    JidList,
    /// An access rule: its name, or a rule written inline (a list or map
    /// of `allow`/`deny` entries), which the loader names and defines.
    AccessRule,
    /// `true`, `false` or a text.
    BoolOrText,
    /// A map; its entries are checked by the module (with warnings) or by
    /// the loader (`mod_disco`'s `server_info`).
    Map,
    /// A list of maps (checked further by the loader or the module).
    MapList,
    /// Any value (an ejabberd option Rookery does not implement).
    Any,
}

/// Whether Rookery applies an option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Use {
    /// Applied.
    Honoured,
    /// An ejabberd option Rookery accepts but does not implement: the
    /// loader warns once per module, naming every such option used.
    Ignored,
    /// Storage back-end and cache tuning (`db_type`, `use_cache`, ...):
    /// accepted silently, as Rookery's data is always in its own database.
    Storage,
    /// Rookery always behaves as this value says: the value is accepted
    /// silently, any other value gets the warning of [`Use::Ignored`].
    Fixed(&'static str),
}

/// One option of a module.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OptSpec {
    pub name: &'static str,
    pub kind: Kind,
    /// The default as written in docs/configuration.md (`""`: none, or not
    /// applicable); the readers parse it, so it must be a valid value of
    /// `kind` unless the reader is given the default by the module.
    pub default: &'static str,
    /// One line for the documentation.
    pub doc: &'static str,
    pub used: Use,
}

impl OptSpec {
    /// An option Rookery applies.
    pub const fn honoured(
        name: &'static str,
        kind: Kind,
        default: &'static str,
        doc: &'static str,
    ) -> OptSpec {
        OptSpec {
            name,
            kind,
            default,
            doc,
            used: Use::Honoured,
        }
    }

    /// An ejabberd option accepted with a warning and not applied.
    pub const fn ignored(name: &'static str, kind: Kind, doc: &'static str) -> OptSpec {
        OptSpec {
            name,
            kind,
            default: "",
            doc,
            used: Use::Ignored,
        }
    }

    /// A storage or cache tuning option, accepted silently.
    pub const fn storage(name: &'static str, kind: Kind) -> OptSpec {
        OptSpec {
            name,
            kind,
            default: "",
            doc: "storage tuning; no effect (data is in Rookery's database)",
            used: Use::Storage,
        }
    }
}

/// ejabberd's storage and cache options, which many modules take.
pub const STORAGE_OPTIONS: &[OptSpec] = &[
    OptSpec::storage("db_type", Kind::Any),
    OptSpec::storage("use_cache", Kind::Bool),
    OptSpec::storage("cache_size", Kind::Count),
    OptSpec::storage("cache_life_time", Kind::Timeout),
    OptSpec::storage("cache_missed", Kind::Bool),
];

/// Who provides a module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    /// A module of this crate, built by [`crate::registry::build`].
    Module,
    /// The server core (always on; listing it only sets its options).
    Core,
}

/// The options of one module.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ModuleSpec {
    /// Its name under `modules:`.
    pub name: &'static str,
    pub provider: Provider,
    /// Its own options.
    pub options: &'static [OptSpec],
    /// Whether it also takes [`STORAGE_OPTIONS`].
    pub storage: bool,
}

impl ModuleSpec {
    /// A module of this crate.
    pub const fn module(
        name: &'static str,
        options: &'static [OptSpec],
        storage: bool,
    ) -> ModuleSpec {
        ModuleSpec {
            name,
            provider: Provider::Module,
            options,
            storage,
        }
    }

    /// Every option, the storage ones last.
    pub fn all(&self) -> impl Iterator<Item = &'static OptSpec> {
        let storage: &'static [OptSpec] = if self.storage { STORAGE_OPTIONS } else { &[] };
        self.options.iter().chain(storage.iter())
    }

    /// The option called `name`.
    pub fn option(&self, name: &str) -> Option<&'static OptSpec> {
        self.all().find(|o| o.name == name)
    }

    /// `unknown option X; did you mean Y? (valid: ...)`, for an option
    /// name this module does not take.
    pub fn unknown_option_message(&self, name: &str) -> String {
        let names: Vec<&str> = self.all().map(|o| o.name).collect();
        let mut message = format!("unknown option `{name}` of {}", self.name);
        if let Some(close) = did_you_mean(name, &names) {
            message.push_str(&format!("; did you mean `{close}`?"));
        }
        if names.is_empty() {
            message.push_str(&format!(" ({} takes no options)", self.name));
        } else {
            message.push_str(&format!(" (its options: {})", names.join(", ")));
        }
        message
    }
}

/// The closest of `names` to `name` (edit distance at most a third of its
/// length, at least 1), if any.
pub fn did_you_mean<'a>(name: &str, names: &[&'a str]) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).max(1);
    names
        .iter()
        .map(|n| (edit_distance(name, n), *n))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n)
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(cur).min(row[j])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

/// Why a value does not fit its kind: what was expected and, for a list,
/// which item is wrong (so the loader can point at it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    pub item: Option<usize>,
    pub expected: String,
}

impl Kind {
    /// What a valid value looks like, for messages ("expected ...").
    pub fn expected(&self) -> String {
        match self {
            Kind::Bool => "true or false".into(),
            Kind::Int { min, max } if *max == u64::MAX => format!("an integer, at least {min}"),
            Kind::Int { min, max } => format!("an integer from {min} to {max}"),
            Kind::Number { min } => format!("a number, at least {min}"),
            Kind::Count => "a positive integer or infinity".into(),
            Kind::Timeout => {
                "a duration: seconds, a number with a unit such as \"5 minutes\", or infinity"
                    .into()
            }
            Kind::Enum(words) => format!("one of {}", words.join(", ")),
            Kind::Text => "a text".into(),
            Kind::TextList => "a list of texts".into(),
            Kind::Jid => "a JID".into(),
            Kind::JidList => "a list of JIDs".into(),
            Kind::AccessRule => "an access rule name or an inline access rule".into(),
            Kind::BoolOrText => "true, false or a text".into(),
            Kind::Map => "a map".into(),
            Kind::MapList => "a list of maps".into(),
            Kind::Any => "a value".into(),
        }
    }
}

/// A scalar as text (numbers and booleans as written).
fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn is_infinity(text: &str) -> bool {
    matches!(text, "infinity" | "infinite" | "unlimited")
}

/// Checks `v` against `kind`; returns it normalised for the module's
/// readers, or what was expected.
pub fn check(kind: &Kind, v: &Value) -> Result<Value, Mismatch> {
    let bad = || Mismatch {
        item: None,
        expected: kind.expected(),
    };
    let integer = |v: &Value| -> Option<u64> {
        match v {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    };
    let list = |v: &Value| -> Vec<Value> {
        match v {
            Value::Sequence(items) => items.clone(),
            Value::Null => Vec::new(),
            other => vec![other.clone()],
        }
    };
    match kind {
        Kind::Bool => match v {
            Value::Bool(b) => Ok(Value::Bool(*b)),
            Value::String(s) => match s.as_str() {
                "true" | "True" | "TRUE" | "yes" | "Yes" | "on" | "On" | "y" => {
                    Ok(Value::Bool(true))
                }
                "false" | "False" | "FALSE" | "no" | "No" | "off" | "Off" | "n" => {
                    Ok(Value::Bool(false))
                }
                _ => Err(bad()),
            },
            _ => Err(bad()),
        },
        Kind::Int { min, max } => match integer(v) {
            Some(n) if n >= *min && n <= *max => Ok(Value::Number(n.into())),
            _ => Err(bad()),
        },
        Kind::Number { min } => {
            let n = match v {
                Value::Number(n) => n.as_f64(),
                Value::String(s) => s.trim().parse::<f64>().ok(),
                _ => None,
            };
            match n {
                Some(n) if n.is_finite() && n >= *min => Ok(match integer(v) {
                    Some(i) => Value::Number(i.into()),
                    None => Value::Number(n.into()),
                }),
                _ => Err(bad()),
            }
        }
        Kind::Count => match v {
            Value::String(s) if is_infinity(s.trim()) => Ok(Value::String("infinity".into())),
            _ => match integer(v) {
                Some(n) if n > 0 => Ok(Value::Number(n.into())),
                _ => Err(bad()),
            },
        },
        Kind::Timeout => match parse_timeout(v) {
            Some(_) => Ok(v.clone()),
            None => Err(bad()),
        },
        Kind::Enum(words) => match scalar_text(v) {
            Some(s) if words.contains(&s.as_str()) => Ok(Value::String(s)),
            _ => Err(bad()),
        },
        Kind::Text => match scalar_text(v) {
            Some(s) => Ok(Value::String(s)),
            None => Err(bad()),
        },
        Kind::TextList | Kind::JidList => {
            let mut out = Vec::new();
            for (i, item) in list(v).iter().enumerate() {
                let text = scalar_text(item).filter(|s| !s.is_empty());
                let text = match (text, kind) {
                    (Some(s), Kind::JidList) => jid::Jid::new(&s).ok().map(|j| j.to_string()),
                    (text, _) => text,
                };
                match text {
                    Some(s) => out.push(Value::String(s)),
                    None => {
                        return Err(Mismatch {
                            item: matches!(v, Value::Sequence(_)).then_some(i),
                            expected: kind.expected(),
                        })
                    }
                }
            }
            Ok(Value::Sequence(out))
        }
        Kind::Jid => match scalar_text(v).and_then(|s| jid::Jid::new(&s).ok()) {
            Some(j) => Ok(Value::String(j.to_string())),
            None => Err(bad()),
        },
        Kind::AccessRule => match v {
            Value::Sequence(_) | Value::Mapping(_) => Ok(v.clone()),
            _ => match scalar_text(v) {
                Some(s) if !s.is_empty() => Ok(Value::String(s)),
                _ => Err(bad()),
            },
        },
        Kind::BoolOrText => match v {
            Value::Bool(_) => Ok(v.clone()),
            _ => match scalar_text(v) {
                Some(s) => Ok(Value::String(s)),
                None => Err(bad()),
            },
        },
        Kind::Map => match v {
            Value::Mapping(_) => Ok(v.clone()),
            Value::Null => Ok(Value::Mapping(Default::default())),
            _ => Err(bad()),
        },
        Kind::MapList => match v {
            Value::Null => Ok(Value::Sequence(Vec::new())),
            Value::Sequence(items) => match items.iter().position(|i| !i.is_mapping()) {
                None => Ok(v.clone()),
                Some(i) => Err(Mismatch {
                    item: Some(i),
                    expected: "a map".into(),
                }),
            },
            _ => Err(bad()),
        },
        Kind::Any => Ok(v.clone()),
    }
}

/// Whether `v` (already checked) is the value a [`Use::Fixed`] option
/// stands for.
pub fn is_fixed_value(fixed: &str, v: &Value) -> bool {
    scalar_text(v).is_some_and(|s| s == fixed)
}

/// The spec's default parsed as a value of its kind (`None` when the spec
/// gives none or it is descriptive, e.g. "`resume_timeout`").
pub fn default_value(spec: &OptSpec) -> Option<Value> {
    if spec.default.is_empty() {
        return None;
    }
    let v: Value = serde_yaml_ng::from_str(spec.default).ok()?;
    check(&spec.kind, &v).ok()
}

/// Parse an ejabberd timeout: `Some(None)` is infinity.
pub fn parse_timeout(v: &Value) -> Option<Option<Duration>> {
    match v {
        Value::Number(n) => n.as_u64().map(|s| Some(Duration::from_secs(s))),
        Value::String(s) => {
            let s = s.trim();
            if s == "infinity" || s == "infinite" || s == "unlimited" {
                return Some(None);
            }
            let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
            let n: u64 = s[..split].parse().ok()?;
            let unit = s[split..].trim();
            let mult = match unit {
                "" | "s" | "sec" | "second" | "seconds" => 1,
                "ms" | "msec" | "millisecond" | "milliseconds" => {
                    return Some(Some(Duration::from_millis(n)))
                }
                "m" | "min" | "minute" | "minutes" => 60,
                "h" | "hour" | "hours" => 3600,
                "d" | "day" | "days" => 86_400,
                _ => return None,
            };
            Some(Some(Duration::from_secs(n.checked_mul(mult)?)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn y(s: &str) -> Value {
        serde_yaml_ng::from_str(s).unwrap()
    }

    #[test]
    fn values_are_checked_and_normalised() {
        assert_eq!(check(&Kind::Bool, &y("yes")), Ok(Value::Bool(true)));
        assert_eq!(check(&Kind::Bool, &y("false")), Ok(Value::Bool(false)));
        assert!(check(&Kind::Bool, &y("sometimes")).is_err());
        let int = Kind::Int { min: 0, max: 10 };
        assert_eq!(check(&int, &y("\"7\"")), Ok(y("7")));
        assert!(check(&int, &y("11")).is_err());
        assert!(check(&int, &y("-1")).is_err());
        assert_eq!(check(&Kind::Count, &y("unlimited")), Ok(y("infinity")));
        assert!(check(&Kind::Count, &y("0")).is_err());
        assert_eq!(
            check(&Kind::Timeout, &y("\"5 minutes\"")),
            Ok(y("5 minutes"))
        );
        assert!(check(&Kind::Timeout, &y("soon")).is_err());
        let e = Kind::Enum(&["always", "never", "roster"]);
        let err = check(&e, &y("sometimes")).unwrap_err();
        assert_eq!(err.expected, "one of always, never, roster");
        assert_eq!(check(&Kind::Text, &y("42")), Ok(y("\"42\"")));
        assert!(check(&Kind::Text, &y("[a]")).is_err());
        assert!(check(&Kind::Text, &y("~")).is_err());
        assert_eq!(
            check(&Kind::JidList, &y("[a@b, c@d]")),
            Ok(y("[\"a@b\", \"c@d\"]"))
        );
        let err = check(&Kind::JidList, &y("[a@b, \"@\"]")).unwrap_err();
        assert_eq!(err.item, Some(1));
        assert_eq!(check(&Kind::JidList, &y("a@b")), Ok(y("[\"a@b\"]")));
        assert!(check(&Kind::AccessRule, &y("[allow]")).is_ok());
        assert_eq!(check(&Kind::AccessRule, &y("local")), Ok(y("local")));
        assert!(check(&Kind::Map, &y("3")).is_err());
        assert_eq!(
            check(&Kind::MapList, &y("[{a: 1}, 2]")).unwrap_err().item,
            Some(1)
        );
        assert!(check(&Kind::Number { min: 0.0 }, &y("40.5")).is_ok());
        assert!(check(&Kind::Number { min: 0.0 }, &y("-1")).is_err());
    }

    #[test]
    fn unknown_names_get_a_suggestion() {
        const S: ModuleSpec = ModuleSpec::module(
            "mod_x",
            &[OptSpec::honoured("default", Kind::Bool, "true", "d")],
            true,
        );
        let m = S.unknown_option_message("defualt");
        assert!(m.contains("did you mean `default`?"), "{m}");
        assert!(m.contains("default, db_type, use_cache"), "{m}");
        assert!(!S.unknown_option_message("zzz").contains("did you mean"));
        assert!(S.option("cache_size").is_some());
        assert_eq!(
            did_you_mean("resume_timout", &["resume_timeout", "ack_timeout"]),
            Some("resume_timeout")
        );
    }
}
