//! Where persistent data lives: ejabberd's `default_db` and `sql_*` keys.
//!
//! `default_db: mnesia` (ejabberd's default, also spelled `sled` or left
//! out) keeps everything in the embedded sled database under `data_dir`;
//! `default_db: sql` keeps everything in PostgreSQL (`sql_type: pgsql`, the
//! only SQL type Rookery speaks), reached with `sql_server`, `sql_port`,
//! `sql_database`, `sql_username`, `sql_password`, `sql_pool_size`,
//! `sql_ssl` and the two timeouts `sql_connect_timeout` /
//! `sql_query_timeout`, with ejabberd's defaults. Every wrong value is a
//! `Problem` with its position and what was expected. `sql_*` keys
//! without `default_db: sql` are read too: `rookery ctl migrate_db` copies
//! between the embedded database and that PostgreSQL database.
//!
//! Invariant: a built [`SqlOptions`] holds usable values only (pool size
//! >= 1, timeouts > 0).

use std::time::Duration;

use super::check::{self, Notes, Problem};
use super::yaml::Node;

/// The keys this file reads (the loader treats them as supported).
pub const OPTIONS: &[&str] = &[
    "default_db",
    "sql_type",
    "sql_server",
    "sql_port",
    "sql_database",
    "sql_username",
    "sql_password",
    "sql_pool_size",
    "sql_ssl",
    "sql_connect_timeout",
    "sql_query_timeout",
];

pub use crate::storage::pgsql::SqlOptions;

/// A duration in ejabberd's spellings: a number of seconds, or a number
/// with a unit (`5 seconds`, `500 ms`, `1 minute`).
pub(super) fn duration(node: &Node, path: &str) -> Result<Duration, Problem> {
    let what = "a positive duration such as `5 seconds` or `500 ms`";
    let text = check::string(node, path, what)?.trim();
    let (num, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&text[..i], text[i..].trim()),
        None => (text, "seconds"),
    };
    let n: u64 = num.parse().map_err(|_| check::expected(node, path, what))?;
    let d = match unit {
        "ms" | "msec" | "millisecond" | "milliseconds" => Duration::from_millis(n),
        "s" | "sec" | "second" | "seconds" => Duration::from_secs(n),
        "min" | "minute" | "minutes" => Duration::from_secs(n * 60),
        _ => return Err(check::expected(node, path, what)),
    };
    if d.is_zero() {
        return Err(check::expected(node, path, what));
    }
    Ok(d)
}

/// Read `default_db` and the `sql_*` keys: whether `default_db: sql`, and
/// the PostgreSQL options when that or any `sql_*` key is given (the
/// embedded database's `rookery ctl migrate_db` copies to and from them).
pub fn parse<'a>(
    option: impl Fn(&str) -> Option<&'a Node>,
    notes: &mut Notes,
) -> Result<(bool, Option<SqlOptions>), Problem> {
    let sql = match option("default_db") {
        None => false,
        Some(node) => {
            match check::string(
                node,
                "default_db",
                "`sql` or `mnesia` (the embedded database)",
            )? {
                "sql" => true,
                "mnesia" | "sled" => false,
                _ => {
                    return Err(check::expected(
                        node,
                        "default_db",
                        "`sql` or `mnesia` (the embedded database)",
                    ))
                }
            }
        }
    };
    if !sql && !OPTIONS.iter().skip(1).any(|k| option(k).is_some()) {
        return Ok((false, None));
    }
    let mut o = SqlOptions::defaults();
    if let Some(node) = option("sql_type") {
        let what = "`pgsql` (the only SQL database Rookery supports)";
        if check::string(node, "sql_type", what)? != "pgsql" {
            return Err(check::expected(node, "sql_type", what));
        }
    } else if sql {
        // ejabberd's default sql_type is odbc; Rookery has only PostgreSQL.
        notes.warn_at(
            option("default_db"),
            "`default_db: sql` without `sql_type`: assuming `sql_type: pgsql`",
        );
    }
    let text = |key: &str, what: &str| -> Result<Option<String>, Problem> {
        match option(key) {
            Some(node) => Ok(Some(check::string(node, key, what)?.to_string())),
            None => Ok(None),
        }
    };
    if let Some(s) = text("sql_server", "a host name or address")? {
        if s.is_empty() {
            return Err(check::expected(
                option("sql_server").expect("read above"),
                "sql_server",
                "a host name or address",
            ));
        }
        o.server = s;
    }
    if let Some(node) = option("sql_port") {
        o.port = check::integer(node, "sql_port", 1, 65535, "a port number 1-65535")? as u16;
    }
    if let Some(s) = text("sql_database", "a database name")? {
        o.database = s;
    }
    if let Some(s) = text("sql_username", "a user name")? {
        o.username = s;
    }
    if let Some(node) = option("sql_password") {
        // An empty password is allowed (trust authentication).
        if !node.is_null() {
            o.password = check::string(node, "sql_password", "a password")?.to_string();
        }
    }
    if let Some(node) = option("sql_pool_size") {
        o.pool_size =
            check::integer(node, "sql_pool_size", 1, 1000, "a pool size 1-1000")? as usize;
    }
    if let Some(node) = option("sql_ssl") {
        o.ssl = check::boolean(node, "sql_ssl")?;
    }
    if let Some(node) = option("sql_connect_timeout") {
        o.connect_timeout = duration(node, "sql_connect_timeout")?;
    }
    if let Some(node) = option("sql_query_timeout") {
        o.query_timeout = duration(node, "sql_query_timeout")?;
    }
    Ok((sql, Some(o)))
}

impl Notes {
    /// A warning about `node` when there is one (line 1 otherwise).
    fn warn_at(&mut self, node: Option<&Node>, message: &str) {
        self.warnings
            .push((node.map_or(1, |n| n.line), message.to_string()));
    }
}
