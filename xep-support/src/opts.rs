//! Reading module options the way ejabberd writes them: timeouts as a number
//! of seconds, a string with a unit (`"5 minutes"`, `"30 s"`) or `infinity`;
//! counts as a number or `infinity`.
//!
//! Invariants: every option read is declared in the module's
//! [`ModuleSpec`] (reading an undeclared one panics in debug builds) and a
//! reader without an explicit default takes the spec's, so the documented
//! default is the one applied. The server's loader has already checked the
//! values against the spec (a bad one stops the server); a bad value that
//! reaches a reader anyway (a module built without the loader, in tests)
//! is reported as a warning and the default is kept.

use crate::options::{default_value, Kind, ModuleSpec, OptSpec};
use serde_yaml_ng::Value;
use std::time::Duration;

/// A module's options with the warnings met while reading them.
pub struct Opts<'a> {
    map: Option<&'a serde_yaml_ng::Mapping>,
    spec: &'static ModuleSpec,
    /// Messages about bad values (the registry prefixes the module name).
    pub warnings: Vec<String>,
}

impl<'a> Opts<'a> {
    pub fn new(v: &'a Value, spec: &'static ModuleSpec) -> Self {
        Opts {
            map: v.as_mapping(),
            spec,
            warnings: Vec::new(),
        }
    }

    /// The spec of `key` (declared, or a bug in the module).
    fn spec_of(&self, key: &str) -> Option<&'static OptSpec> {
        let found = self.spec.option(key);
        debug_assert!(
            found.is_some(),
            "{} reads option {key}, which its spec does not declare",
            self.spec.name
        );
        found
    }

    /// The spec's default of `key`, as a value.
    fn default_of(&self, key: &str) -> Option<Value> {
        self.spec_of(key).and_then(default_value)
    }

    /// The raw value of an option.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.spec_of(key);
        self.map.and_then(|m| m.get(key))
    }

    /// The value checked against the spec's kind; `None` (with a warning)
    /// when it does not fit, or when unset.
    fn checked(&mut self, key: &str) -> Option<Value> {
        let v = self.get(key)?;
        let kind = self.spec_of(key).map(|s| s.kind).unwrap_or(Kind::Any);
        match crate::options::check(&kind, v) {
            Ok(v) => Some(v),
            Err(m) => {
                self.warnings.push(format!(
                    "option {key}: expected {}, got {}; using the default",
                    m.expected,
                    show(v)
                ));
                None
            }
        }
    }

    /// A boolean option (default from the spec).
    pub fn bool(&mut self, key: &str) -> bool {
        self.checked(key)
            .or_else(|| self.default_of(key))
            .and_then(|v| v.as_bool())
            .unwrap_or(false)
    }

    /// A timeout; `None` means infinity (default from the spec).
    pub fn timeout(&mut self, key: &str) -> Option<Duration> {
        let default = self
            .default_of(key)
            .and_then(|v| parse_timeout(&v))
            .flatten();
        self.timeout_or(key, default)
    }

    /// A timeout whose default the module computes; `None` means infinity.
    pub fn timeout_or(&mut self, key: &str, default: Option<Duration>) -> Option<Duration> {
        match self.checked(key) {
            Some(v) => parse_timeout(&v).unwrap_or(default),
            None => default,
        }
    }

    /// A positive count; `None` means infinity (default from the spec).
    pub fn count(&mut self, key: &str) -> Option<u64> {
        match self.checked(key).or_else(|| self.default_of(key)) {
            Some(Value::Number(n)) => n.as_u64(),
            _ => None,
        }
    }

    /// A non-negative integer (default from the spec, 0 without one).
    pub fn uint(&mut self, key: &str) -> u64 {
        self.checked(key)
            .or_else(|| self.default_of(key))
            .and_then(|v| v.as_u64())
            .unwrap_or(0)
    }

    /// A number (default from the spec, 0 without one).
    pub fn number(&mut self, key: &str) -> f64 {
        self.checked(key)
            .or_else(|| self.default_of(key))
            .and_then(|v| v.as_f64())
            .unwrap_or(0.0)
    }

    /// A text as written (numbers and booleans too); `None` when unset.
    pub fn string(&mut self, key: &str) -> Option<String> {
        match self.checked(key)? {
            Value::String(s) => Some(s),
            other => Some(show(&other)),
        }
    }

    /// A text, or the spec's default text.
    pub fn text(&mut self, key: &str) -> String {
        self.string(key).unwrap_or_else(|| {
            self.spec_of(key)
                .map(|s| s.default.to_string())
                .unwrap_or_default()
        })
    }

    /// A list of texts (empty when unset).
    pub fn list(&mut self, key: &str) -> Vec<String> {
        match self.checked(key) {
            Some(Value::Sequence(items)) => items
                .iter()
                .filter_map(|i| i.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// One of the spec's words (its default when unset).
    pub fn word(&mut self, key: &str) -> &'static str {
        let words: &'static [&'static str] = match self.spec_of(key).map(|s| s.kind) {
            Some(Kind::Enum(words)) => words,
            _ => &[],
        };
        let chosen = self
            .checked(key)
            .or_else(|| self.default_of(key))
            .and_then(|v| v.as_str().map(str::to_string));
        chosen
            .and_then(|c| words.iter().find(|w| **w == c).copied())
            .or_else(|| words.first().copied())
            .unwrap_or("")
    }
}

fn show(v: &Value) -> String {
    serde_yaml_ng::to_string(v)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

pub use crate::options::parse_timeout;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts() {
        let y = |s: &str| serde_yaml_ng::from_str::<Value>(s).unwrap();
        assert_eq!(
            parse_timeout(&y("300")),
            Some(Some(Duration::from_secs(300)))
        );
        assert_eq!(
            parse_timeout(&y("\"5 minutes\"")),
            Some(Some(Duration::from_secs(300)))
        );
        assert_eq!(
            parse_timeout(&y("\"500 ms\"")),
            Some(Some(Duration::from_millis(500)))
        );
        assert_eq!(parse_timeout(&y("infinity")), Some(None));
        assert_eq!(parse_timeout(&y("\"soon\"")), None);
        assert_eq!(parse_timeout(&y("-1")), None);
    }
}
