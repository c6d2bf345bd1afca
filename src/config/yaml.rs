//! A small YAML document tree that remembers where every value was written.
//!
//! The configuration loader needs a line and column for every wrong value, which
//! `serde_yaml_ng` cannot give once a document is parsed. This module builds a
//! [`Node`] tree from the events of the `saphyr-parser` crate instead, resolving
//! anchors and aliases, rejecting duplicate mapping keys, and converting to a
//! `serde_yaml_ng::Value` where the rest of the server wants plain data (module
//! options).

use std::collections::HashMap;
use std::fmt;

use saphyr_parser::{Event, Parser, ScalarStyle};

/// Upper bound on the number of nodes a document may expand to through aliases
/// (protects against "billion laughs" documents).
const MAX_NODES: usize = 1_000_000;

/// One YAML value with the 1-based line and column where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The value itself.
    pub kind: Kind,
    /// 1-based line of the first character of the value.
    pub line: usize,
    /// 1-based column of the first character of the value.
    pub col: usize,
}

/// The shape of a [`Node`].
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// A scalar; `plain` is true when it was written without quotes or block
    /// indicators (only plain scalars can be null, booleans or numbers).
    Scalar {
        /// The text of the scalar.
        value: String,
        /// Whether the scalar was unquoted.
        plain: bool,
    },
    /// A sequence, in document order.
    Seq(Vec<Node>),
    /// A mapping, in document order (keys are unique).
    Map(Vec<(Node, Node)>),
}

/// A YAML syntax error with its 1-based position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
    /// What went wrong.
    pub message: String,
}

impl Node {
    /// A plain scalar node (a synthetic value for tests).
    #[cfg(test)]
    pub fn scalar(value: &str, line: usize, col: usize) -> Node {
        Node {
            kind: Kind::Scalar {
                value: value.to_string(),
                plain: true,
            },
            line,
            col,
        }
    }

    /// True for an empty value, `~` or `null` written without quotes.
    pub fn is_null(&self) -> bool {
        matches!(&self.kind, Kind::Scalar { value, plain: true }
            if matches!(value.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// The text of a scalar (quoted or not), `None` for lists and maps.
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            Kind::Scalar { value, .. } => Some(value),
            _ => None,
        }
    }

    /// The entries of a mapping, `None` for anything else.
    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.kind {
            Kind::Map(entries) => Some(entries),
            _ => None,
        }
    }

    /// The items of a sequence, `None` for anything else.
    #[cfg(test)]
    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.kind {
            Kind::Seq(items) => Some(items),
            _ => None,
        }
    }

    /// Looks a key up in a mapping whose keys are scalars.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }

    /// Short human description of the value for "found ..." in error messages:
    /// a quoted scalar, `a list`, `a map` or `nothing`.
    pub fn describe(&self) -> String {
        if self.is_null() {
            return "nothing".to_string();
        }
        match &self.kind {
            Kind::Scalar { value, .. } => {
                let mut shown: String = value.chars().take(60).collect();
                if shown.len() < value.len() {
                    shown.push('…');
                }
                format!("{shown:?}")
            }
            Kind::Seq(_) => "a list".to_string(),
            Kind::Map(_) => "a map".to_string(),
        }
    }

    /// Converts the tree to a `serde_yaml_ng::Value`, resolving plain scalars
    /// with the YAML 1.2 core schema (null, booleans, integers, floats).
    pub fn to_value(&self) -> serde_yaml_ng::Value {
        use serde_yaml_ng::Value;
        match &self.kind {
            Kind::Scalar {
                value,
                plain: false,
            } => Value::String(value.clone()),
            Kind::Scalar { value, plain: true } => resolve_plain(value),
            Kind::Seq(items) => Value::Sequence(items.iter().map(Node::to_value).collect()),
            Kind::Map(entries) => {
                let mut map = serde_yaml_ng::Mapping::new();
                for (k, v) in entries {
                    map.insert(k.to_value(), v.to_value());
                }
                Value::Mapping(map)
            }
        }
    }
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.col, self.message)
    }
}

/// Resolves a plain scalar to a typed `serde_yaml_ng::Value` (YAML 1.2 core schema).
fn resolve_plain(text: &str) -> serde_yaml_ng::Value {
    use serde_yaml_ng::Value;
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Value::Number(f64::INFINITY.into())
        }
        "-.inf" | "-.Inf" | "-.INF" => return Value::Number(f64::NEG_INFINITY.into()),
        ".nan" | ".NaN" | ".NAN" => return Value::Number(f64::NAN.into()),
        _ => {}
    }
    if let Some(n) = parse_int(text) {
        if let Ok(unsigned) = u64::try_from(n) {
            return Value::Number(unsigned.into());
        }
        if let Ok(signed) = i64::try_from(n) {
            return Value::Number(signed.into());
        }
    }
    let looks_float = text
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'))
        && text.chars().any(|c| c.is_ascii_digit());
    if looks_float {
        if let Ok(f) = text.parse::<f64>() {
            return Value::Number(f.into());
        }
    }
    Value::String(text.to_string())
}

/// Parses a YAML 1.2 core-schema integer: decimal with optional sign, `0x…`, `0o…`.
pub fn parse_int(text: &str) -> Option<i128> {
    if let Some(hex) = text.strip_prefix("0x") {
        return i128::from_str_radix(hex, 16).ok();
    }
    if let Some(oct) = text.strip_prefix("0o") {
        return i128::from_str_radix(oct, 8).ok();
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    text.parse::<i128>().ok()
}

/// One container under construction.
enum Open {
    Seq {
        node: Node,
        anchor: usize,
    },
    Map {
        node: Node,
        anchor: usize,
        pending_key: Option<Node>,
    },
}

/// Parses a YAML document. Returns `Ok(None)` for an empty document; more
/// than one document is an error.
pub fn parse(text: &str) -> Result<Option<Node>, SyntaxError> {
    let mut parser = Parser::new_from_str(text);
    let mut stack: Vec<Open> = Vec::new();
    let mut anchors: HashMap<usize, Node> = HashMap::new();
    let mut root: Option<Node> = None;
    let mut documents = 0usize;
    let mut nodes = 0usize;

    while let Some(next) = parser.next_event() {
        let (event, span) = next.map_err(|e| SyntaxError {
            line: e.marker().line(),
            col: e.marker().col() + 1,
            message: format!("YAML syntax error: {}", e.info()),
        })?;
        let line = span.start.line();
        let col = span.start.col() + 1;
        let completed: Option<(Node, usize)> = match event {
            Event::StreamStart | Event::StreamEnd | Event::Nothing | Event::DocumentEnd => None,
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return Err(SyntaxError {
                        line,
                        col,
                        message: "a configuration file must hold a single YAML document"
                            .to_string(),
                    });
                }
                None
            }
            Event::Scalar(value, style, anchor, tag) => {
                let is_str_tag = tag.as_ref().is_some_and(|t| t.suffix == "str");
                let plain = matches!(style, ScalarStyle::Plain) && !is_str_tag;
                Some((
                    Node {
                        kind: Kind::Scalar {
                            value: value.into_owned(),
                            plain,
                        },
                        line,
                        col,
                    },
                    anchor,
                ))
            }
            Event::Alias(id) => match anchors.get(&id) {
                Some(node) => {
                    nodes += count_nodes(node);
                    if nodes > MAX_NODES {
                        return Err(SyntaxError {
                            line,
                            col,
                            message: "document expands to too many values through aliases"
                                .to_string(),
                        });
                    }
                    let mut copy = node.clone();
                    copy.line = line;
                    copy.col = col;
                    Some((copy, 0))
                }
                None => {
                    return Err(SyntaxError {
                        line,
                        col,
                        message: "YAML syntax error: alias to an unknown anchor".to_string(),
                    })
                }
            },
            Event::SequenceStart(anchor, _) => {
                stack.push(Open::Seq {
                    node: Node {
                        kind: Kind::Seq(Vec::new()),
                        line,
                        col,
                    },
                    anchor,
                });
                None
            }
            Event::MappingStart(anchor, _) => {
                stack.push(Open::Map {
                    node: Node {
                        kind: Kind::Map(Vec::new()),
                        line,
                        col,
                    },
                    anchor,
                    pending_key: None,
                });
                None
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Open::Seq { node, anchor }) | Some(Open::Map { node, anchor, .. }) => {
                    Some((node, anchor))
                }
                None => None,
            },
        };
        let Some((node, anchor)) = completed else {
            continue;
        };
        nodes += 1;
        if nodes > MAX_NODES {
            return Err(SyntaxError {
                line,
                col,
                message: "document has too many values".to_string(),
            });
        }
        if anchor != 0 {
            anchors.insert(anchor, node.clone());
        }
        match stack.last_mut() {
            None => root = Some(node),
            Some(Open::Seq { node: seq, .. }) => {
                if let Kind::Seq(items) = &mut seq.kind {
                    items.push(node);
                }
            }
            Some(Open::Map {
                node: map,
                pending_key,
                ..
            }) => match pending_key.take() {
                None => *pending_key = Some(node),
                Some(key) => {
                    if let Kind::Map(entries) = &mut map.kind {
                        if let Some(name) = key.as_str() {
                            if let Some((first, _)) =
                                entries.iter().find(|(k, _)| k.as_str() == Some(name))
                            {
                                return Err(SyntaxError {
                                    line: key.line,
                                    col: key.col,
                                    message: format!(
                                        "duplicate key {name:?} (first given at line {})",
                                        first.line
                                    ),
                                });
                            }
                        }
                        entries.push((key, node));
                    }
                }
            },
        }
    }
    Ok(root)
}

/// Number of nodes in a subtree (for the alias expansion limit).
fn count_nodes(node: &Node) -> usize {
    match &node.kind {
        Kind::Scalar { .. } => 1,
        Kind::Seq(items) => 1 + items.iter().map(count_nodes).sum::<usize>(),
        Kind::Map(entries) => {
            1 + entries
                .iter()
                .map(|(k, v)| count_nodes(k) + count_nodes(v))
                .sum::<usize>()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_positions_of_values() {
        let doc = parse("hosts:\n  - localhost\nlisten:\n  -\n    port: abc\n")
            .unwrap()
            .unwrap();
        let host = &doc.get("hosts").unwrap().as_seq().unwrap()[0];
        assert_eq!((host.line, host.col), (2, 5));
        let port = doc.get("listen").unwrap().as_seq().unwrap()[0]
            .get("port")
            .unwrap();
        assert_eq!((port.line, port.col), (5, 11));
        assert_eq!(port.describe(), "\"abc\"");
    }

    #[test]
    fn quoted_scalars_are_not_plain() {
        let doc = parse("a: \"1\"\nb: 1\nc:\nd: ~\ne: ''\n").unwrap().unwrap();
        assert_eq!(
            doc.get("a").unwrap().to_value(),
            serde_yaml_ng::Value::from("1")
        );
        assert_eq!(
            doc.get("b").unwrap().to_value(),
            serde_yaml_ng::Value::from(1u64)
        );
        assert!(doc.get("c").unwrap().is_null());
        assert!(doc.get("d").unwrap().is_null());
        assert!(!doc.get("e").unwrap().is_null());
    }

    #[test]
    fn resolves_core_schema_scalars() {
        assert_eq!(resolve_plain("true"), serde_yaml_ng::Value::Bool(true));
        assert_eq!(resolve_plain("-5"), serde_yaml_ng::Value::from(-5i64));
        assert_eq!(resolve_plain("0x10"), serde_yaml_ng::Value::from(16u64));
        assert_eq!(resolve_plain("1.5"), serde_yaml_ng::Value::from(1.5f64));
        assert_eq!(resolve_plain("1.2.3"), serde_yaml_ng::Value::from("1.2.3"));
        assert_eq!(resolve_plain("::1"), serde_yaml_ng::Value::from("::1"));
        assert_eq!(parse_int("+7"), Some(7));
        assert_eq!(parse_int("7a"), None);
    }

    #[test]
    fn expands_aliases() {
        let doc = parse("a: &x {k: [1, 2]}\nb: *x\n").unwrap().unwrap();
        let b = doc.get("b").unwrap();
        assert_eq!(b.get("k").unwrap().as_seq().unwrap().len(), 2);
        assert_eq!((b.line, b.col), (2, 4));
    }

    #[test]
    fn rejects_duplicate_keys_with_position() {
        let err = parse("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!((err.line, err.col), (3, 1));
        assert!(
            err.message.contains("duplicate key \"a\""),
            "{}",
            err.message
        );
        assert!(err.message.contains("line 1"), "{}", err.message);
    }

    #[test]
    fn reports_syntax_errors_with_position() {
        let err = parse("hosts:\n  - localhost\n listen: x\n").unwrap_err();
        assert_eq!(err.line, 3);
        assert!(
            err.message.starts_with("YAML syntax error"),
            "{}",
            err.message
        );
    }

    #[test]
    fn empty_document_is_none_and_two_documents_are_an_error() {
        assert_eq!(parse("# only a comment\n").unwrap(), None);
        let err = parse("a: 1\n---\nb: 2\n").unwrap_err();
        assert_eq!(err.line, 2);
    }

    #[test]
    fn converts_maps_to_values_in_order() {
        let doc = parse("m: {z: 1, a: [x, \"y\"]}\n").unwrap().unwrap();
        let value = doc.get("m").unwrap().to_value();
        let map = value.as_mapping().unwrap();
        let keys: Vec<_> = map.keys().map(|k| k.as_str().unwrap()).collect();
        assert_eq!(keys, ["z", "a"]);
    }
}
