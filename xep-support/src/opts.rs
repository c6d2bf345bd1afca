//! Reading module options the way ejabberd writes them: timeouts as a number
//! of seconds, a string with a unit (`"5 minutes"`, `"30 s"`) or `infinity`;
//! counts as a number or `infinity`. A bad value is reported as a warning
//! and the module keeps its default.

use serde_yaml_ng::Value;
use std::time::Duration;

/// A module's options with the warnings met while reading them.
pub struct Opts<'a> {
    map: Option<&'a serde_yaml_ng::Mapping>,
    /// Messages about bad values (the registry prefixes the module name).
    pub warnings: Vec<String>,
}

impl<'a> Opts<'a> {
    pub fn new(v: &'a Value) -> Self {
        Opts {
            map: v.as_mapping(),
            warnings: Vec::new(),
        }
    }

    /// The raw value of an option.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.and_then(|m| m.get(key))
    }

    /// A boolean option.
    pub fn bool(&mut self, key: &str, default: bool) -> bool {
        match self.get(key) {
            None => default,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                self.warnings.push(format!(
                    "option {key}: expected true or false, got {}; using {default}",
                    show(other)
                ));
                default
            }
        }
    }

    /// A timeout; `None` means infinity.
    pub fn timeout(&mut self, key: &str, default: Option<Duration>) -> Option<Duration> {
        match self.get(key) {
            None => default,
            Some(v) => match parse_timeout(v) {
                Some(t) => t,
                None => {
                    self.warnings.push(format!(
                        "option {key}: expected seconds, a duration like \"5 minutes\", or infinity, got {}; using the default",
                        show(v)
                    ));
                    default
                }
            },
        }
    }

    /// A positive count; `None` means infinity.
    pub fn count(&mut self, key: &str, default: Option<u64>) -> Option<u64> {
        match self.get(key) {
            None => default,
            Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n > 0) => n.as_u64(),
            Some(Value::String(s)) if s == "infinity" || s == "unlimited" => None,
            Some(v) => {
                self.warnings.push(format!(
                    "option {key}: expected a positive number or infinity, got {}; using the default",
                    show(v)
                ));
                default
            }
        }
    }

    /// A string (numbers and booleans are taken as written); `None` when unset.
    pub fn string(&mut self, key: &str) -> Option<String> {
        match self.get(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            other => {
                self.warnings.push(format!(
                    "option {key}: expected a string, got {}; using the default",
                    show(other)
                ));
                None
            }
        }
    }

    /// One of a fixed set of words.
    pub fn word(
        &mut self,
        key: &str,
        allowed: &[&'static str],
        default: &'static str,
    ) -> &'static str {
        let Some(v) = self.get(key) else {
            return default;
        };
        let s = match v {
            Value::String(s) => s.clone(),
            Value::Bool(b) => b.to_string(),
            other => show(other),
        };
        match allowed.iter().find(|a| **a == s) {
            Some(a) => a,
            None => {
                self.warnings.push(format!(
                    "option {key}: expected one of {}, got {s}; using {default}",
                    allowed.join(", ")
                ));
                default
            }
        }
    }
}

fn show(v: &Value) -> String {
    serde_yaml_ng::to_string(v)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
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
