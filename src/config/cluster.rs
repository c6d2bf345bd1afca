//! The `cluster:` section: this node's name and the NATS servers the nodes
//! of a cluster share (docs/configuration.md, "cluster"; docs/admin.md,
//! "Running a cluster").
//!
//! ```yaml
//! cluster:
//!   node: node1                     # [A-Za-z0-9_-], unique in the cluster
//!   nats: nats://127.0.0.1:4222     # or a list of URLs of one NATS cluster
//!   request_timeout: 2 seconds      # how long a forwarded stanza waits
//!   heartbeat: 2 seconds            # how often this node says it is alive
//!   node_ttl: 10 seconds            # silent that long = dead
//! ```
//!
//! Invariants: a built [`ClusterOptions`] has a valid node name, at least
//! one `nats://` URL, and `node_ttl` at least twice `heartbeat`; a cluster
//! needs `default_db: sql` (the nodes share one PostgreSQL database), which
//! the loader checks with [`require_sql`].

use std::time::Duration;

use super::check::{self, Problem};
use super::yaml::Node;

/// The keys this file reads (the loader treats them as supported).
pub const OPTIONS: &[&str] = &["cluster"];

/// What `cluster:` says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterOptions {
    /// `node`: this node's name.
    pub node: String,
    /// `nats`: the NATS server URLs.
    pub nats: Vec<String>,
    /// `request_timeout` (default 2 s).
    pub request_timeout: Duration,
    /// `heartbeat` (default 2 s).
    pub heartbeat: Duration,
    /// `node_ttl` (default 10 s).
    pub node_ttl: Duration,
}

fn node_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 64
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Read `cluster:` (absent: `None`, a single server).
pub fn parse(node: Option<&Node>) -> Result<Option<ClusterOptions>, Problem> {
    let Some(section) = node else {
        return Ok(None);
    };
    let entries = check::map(
        section,
        "cluster",
        "a mapping with `node` and `nats` (see docs/configuration.md)",
    )?;
    let mut name = None;
    let mut nats = Vec::new();
    let mut o = ClusterOptions {
        node: String::new(),
        nats: Vec::new(),
        request_timeout: Duration::from_secs(2),
        heartbeat: Duration::from_secs(2),
        node_ttl: Duration::from_secs(10),
    };
    let mut ttl_node = None;
    for (k, v) in entries {
        let key = check::key(k, "cluster")?;
        let path = check::join("cluster", key);
        match key {
            "node" => {
                let what = "a node name of letters, digits, `-` and `_` (at most 64)";
                let s = check::string(v, &path, what)?;
                if !node_name(s) {
                    return Err(check::expected(v, &path, what));
                }
                name = Some(s.to_string());
            }
            "nats" => {
                let items = check::list_or_single(v);
                if items.is_empty() {
                    return Err(check::expected(v, &path, "a `nats://HOST:PORT` URL or a list of them"));
                }
                for (i, item) in items.into_iter().enumerate() {
                    let p = check::index(&path, i);
                    let what = "a `nats://HOST:PORT` URL";
                    let s = check::string(item, &p, what)?;
                    let rest = s.strip_prefix("nats://").or_else(|| s.strip_prefix("tls://"));
                    if rest.is_none_or(|r| r.is_empty() || r.contains(char::is_whitespace)) {
                        return Err(check::expected(item, &p, what));
                    }
                    nats.push(s.to_string());
                }
            }
            "request_timeout" => o.request_timeout = super::sql::duration(v, &path)?,
            "heartbeat" => o.heartbeat = super::sql::duration(v, &path)?,
            "node_ttl" => {
                o.node_ttl = super::sql::duration(v, &path)?;
                ttl_node = Some(v);
            }
            other => {
                return Err(Problem::at(
                    k,
                    format!(
                        "cluster: unknown key `{other}` (expected `node`, `nats`, `request_timeout`, `heartbeat` or `node_ttl`)"
                    ),
                ))
            }
        }
    }
    let Some(name) = name else {
        return Err(Problem::at(
            section,
            "cluster: `node` (this node's name) is missing",
        ));
    };
    if nats.is_empty() {
        return Err(Problem::at(
            section,
            "cluster: `nats` (the NATS server URL, e.g. nats://127.0.0.1:4222) is missing",
        ));
    }
    if o.node_ttl < o.heartbeat * 2 {
        return Err(check::expected(
            ttl_node.unwrap_or(section),
            "cluster.node_ttl",
            "a duration at least twice `heartbeat`",
        ));
    }
    o.node = name;
    o.nats = nats;
    Ok(Some(o))
}

/// A cluster's nodes share one database: refuse `cluster:` on the
/// embedded engine.
pub fn require_sql(section: Option<&Node>, sql: bool) -> Result<(), Problem> {
    match section {
        Some(node) if !sql => Err(Problem::at(
            node,
            "cluster: needs `default_db: sql` (the nodes of a cluster share one PostgreSQL database; the embedded database belongs to one node)",
        )),
        _ => Ok(()),
    }
}
