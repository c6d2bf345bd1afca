//! Typed reading of [`Node`] values with precise error messages.
//!
//! Every reader takes the node and its dotted path in the document
//! (`listen[0].port`) and returns a [`Problem`] — position plus a message such as
//! `listen[0].port: expected a port number 1-65535, found "abc"` — which the
//! loader turns into a `ConfigError` carrying the file name. Warnings are
//! collected in [`Notes`]. Shared by `config` and `acl`.

use super::yaml::{Kind, Node};

/// A wrong value: where it is and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
    /// Message starting with the path of the value.
    pub message: String,
}

/// Warnings gathered while reading, each with the line it is about.
#[derive(Debug, Default)]
pub struct Notes {
    /// `(line, message)` pairs in the order they were found.
    pub warnings: Vec<(usize, String)>,
}

impl Notes {
    /// Records a warning about `node`.
    pub fn warn(&mut self, node: &Node, message: impl Into<String>) {
        self.warnings.push((node.line, message.into()));
    }
}

impl Problem {
    /// A problem located at `node`.
    pub fn at(node: &Node, message: impl Into<String>) -> Problem {
        Problem {
            line: node.line,
            col: node.col,
            message: message.into(),
        }
    }
}

/// Joins a path and a key: `join("listen[0]", "port")` is `listen[0].port`.
pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Path of a list item: `index("listen", 0)` is `listen[0]`.
pub fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// True for text that looks like an ejabberd macro name (`PORT`, `ADMIN_JID`).
fn looks_like_macro(text: &str) -> bool {
    text.len() > 1
        && text.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        && text
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// `PATH: expected WHAT, found VALUE`, with a hint when the value looks like an
/// undefined macro.
pub fn expected(node: &Node, path: &str, what: &str) -> Problem {
    let mut message = format!("{path}: expected {what}, found {}", node.describe());
    if let Kind::Scalar { value, plain: true } = &node.kind {
        if looks_like_macro(value) {
            message.push_str(&format!(
                " (looks like a macro, but no define_macro defines {value})"
            ));
        }
    }
    Problem::at(node, message)
}

/// A scalar as text (numbers and booleans are accepted as their text).
pub fn string<'a>(node: &'a Node, path: &str, what: &str) -> Result<&'a str, Problem> {
    match &node.kind {
        Kind::Scalar { value, .. } if !node.is_null() => Ok(value),
        _ => Err(expected(node, path, what)),
    }
}

/// A mapping key, which must be a scalar.
pub fn key<'a>(node: &'a Node, path: &str) -> Result<&'a str, Problem> {
    match &node.kind {
        Kind::Scalar { value, .. } => Ok(value),
        _ => Err(expected(node, path, "a name as key")),
    }
}

/// The entries of a mapping; null (an empty value) counts as an empty mapping.
pub fn map<'a>(node: &'a Node, path: &str, what: &str) -> Result<&'a [(Node, Node)], Problem> {
    match &node.kind {
        Kind::Map(entries) => Ok(entries),
        _ if node.is_null() => Ok(&[]),
        _ => Err(expected(node, path, what)),
    }
}

/// A list, or a single value taken as a one-item list. Null is an empty list.
pub fn list_or_single(node: &Node) -> Vec<&Node> {
    match &node.kind {
        Kind::Seq(items) => items.iter().collect(),
        _ if node.is_null() => Vec::new(),
        _ => vec![node],
    }
}

/// A boolean, accepting ejabberd's spellings (`true/false`, `yes/no`, `on/off`, `y/n`).
pub fn boolean(node: &Node, path: &str) -> Result<bool, Problem> {
    let value = match &node.kind {
        Kind::Scalar { value, .. } => value.as_str(),
        _ => "",
    };
    match value {
        "true" | "True" | "TRUE" | "yes" | "Yes" | "on" | "On" | "y" => Ok(true),
        "false" | "False" | "FALSE" | "no" | "No" | "off" | "Off" | "n" => Ok(false),
        _ => Err(expected(node, path, "true or false")),
    }
}

/// An integer within `min..=max`; quoted digits are accepted too.
pub fn integer(node: &Node, path: &str, min: u64, max: u64, what: &str) -> Result<u64, Problem> {
    let parsed = match &node.kind {
        Kind::Scalar { value, .. } => super::yaml::parse_int(value.trim()),
        _ => None,
    };
    match parsed {
        Some(n) if n >= i128::from(min) && n <= i128::from(max) => {
            u64::try_from(n).map_err(|_| expected(node, path, what))
        }
        _ => Err(expected(node, path, what)),
    }
}

/// True for ejabberd's spellings of "no limit".
pub fn is_infinity(text: &str) -> bool {
    matches!(text, "infinity" | "infinite" | "unlimited")
}

/// A positive integer or `infinity`/`infinite`/`unlimited` (→ `None`).
pub fn pos_int_or_infinity(node: &Node, path: &str) -> Result<Option<u64>, Problem> {
    if let Some(text) = node.as_str() {
        if is_infinity(text) {
            return Ok(None);
        }
    }
    integer(
        node,
        path,
        1,
        u64::MAX,
        "a positive integer or \"infinity\"",
    )
    .map(Some)
}

/// Validates and normalises a domain name (lowercase, IDNA/nameprep checked).
pub fn domain(text: &str) -> Result<String, String> {
    let trimmed = text.strip_suffix('.').unwrap_or(text);
    if trimmed.is_empty() {
        return Err("an empty domain name".to_string());
    }
    if trimmed
        .chars()
        .any(|c| c.is_whitespace() || matches!(c, '@' | '/' | '\\' | '"' | '\'' | '*'))
    {
        return Err(format!("{text:?} is not a valid domain name"));
    }
    let normalized = jid::DomainPart::new(trimmed)
        .map_err(|e| format!("{text:?} is not a valid domain name ({e})"))?
        .to_string();
    if normalized.split('.').any(str::is_empty) {
        return Err(format!("{text:?} is not a valid domain name (empty label)"));
    }
    Ok(normalized.to_lowercase())
}

/// A domain-name scalar, normalised.
pub fn domain_node(node: &Node, path: &str) -> Result<String, Problem> {
    let text = string(node, path, "a domain name")?;
    domain(text).map_err(|reason| {
        Problem::at(
            node,
            format!("{path}: expected a domain name, found {reason}"),
        )
    })
}

/// Validates and normalises the local part of a JID (nodeprep).
pub fn localpart(text: &str) -> Result<String, String> {
    jid::NodePart::new(text)
        .map(|n| n.to_string())
        .map_err(|e| format!("{text:?} is not a valid user name ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::yaml::parse;

    fn value(text: &str) -> Node {
        parse(&format!("v: {text}\n"))
            .unwrap()
            .unwrap()
            .get("v")
            .unwrap()
            .clone()
    }

    #[test]
    fn integers_respect_bounds_and_report_position() {
        assert_eq!(
            integer(&value("5222"), "p", 1, 65535, "a port").unwrap(),
            5222
        );
        assert_eq!(
            integer(&value("\"5222\""), "p", 1, 65535, "a port").unwrap(),
            5222
        );
        let err = integer(&value("70000"), "p", 1, 65535, "a port number 1-65535").unwrap_err();
        assert_eq!(
            err.message,
            "p: expected a port number 1-65535, found \"70000\""
        );
        assert_eq!((err.line, err.col), (1, 4));
        assert!(integer(&value("-1"), "p", 0, 10, "n").is_err());
    }

    #[test]
    fn macro_like_values_get_a_hint() {
        let err = integer(&value("XMPP_PORT"), "listen[0].port", 1, 65535, "a port").unwrap_err();
        assert!(
            err.message.contains("no define_macro defines XMPP_PORT"),
            "{}",
            err.message
        );
        let err = integer(&value("abc"), "p", 1, 65535, "a port").unwrap_err();
        assert!(!err.message.contains("macro"));
    }

    #[test]
    fn booleans_accept_ejabberd_spellings() {
        assert!(boolean(&value("yes"), "b").unwrap());
        assert!(!boolean(&value("off"), "b").unwrap());
        assert!(boolean(&value("maybe"), "b").is_err());
    }

    #[test]
    fn infinity_spellings() {
        assert_eq!(pos_int_or_infinity(&value("unlimited"), "x").unwrap(), None);
        assert_eq!(pos_int_or_infinity(&value("10"), "x").unwrap(), Some(10));
        assert!(pos_int_or_infinity(&value("0"), "x").is_err());
    }

    #[test]
    fn domains_are_validated_and_lowercased() {
        assert_eq!(domain("Example.ORG").unwrap(), "example.org");
        assert_eq!(domain("example.org.").unwrap(), "example.org");
        assert_eq!(domain("localhost").unwrap(), "localhost");
        assert!(domain("exa mple.org").is_err());
        assert!(domain("-bad.example").is_err());
        assert!(domain("a..b").is_err());
        assert!(domain("user@example.org").is_err());
        assert!(domain("").is_err());
        assert!(domain(&"a".repeat(64)).is_err());
    }

    #[test]
    fn localparts_are_nodeprepped() {
        assert_eq!(localpart("Bob").unwrap(), "bob");
        assert!(localpart("a b\"").is_err());
    }
}
