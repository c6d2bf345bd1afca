//! How the PostgreSQL engine reaches its server: the values of ejabberd's
//! `sql_*` keys, read by `config/sql.rs` (which re-exports this type) and
//! used here; defined in storage so that storage never imports config.
//!
//! Invariant: a built [`SqlOptions`] holds usable values only (pool size
//! >= 1, timeouts > 0); the config reader checks them.

use std::time::Duration;

/// How to reach PostgreSQL (`default_db: sql`).
#[derive(Clone, PartialEq, Eq)]
pub struct SqlOptions {
    /// `sql_server`: host name or address (default `localhost`).
    pub server: String,
    /// `sql_port` (default 5432).
    pub port: u16,
    /// `sql_database` (default `ejabberd`, as ejabberd's).
    pub database: String,
    /// `sql_username` (default `ejabberd`).
    pub username: String,
    /// `sql_password` (default empty).
    pub password: String,
    /// `sql_pool_size`: connections kept open (default 10).
    pub pool_size: usize,
    /// `sql_ssl`: TLS to the server, certificate checked against the
    /// system's roots (default false).
    pub ssl: bool,
    /// `sql_connect_timeout` (default 5 s).
    pub connect_timeout: Duration,
    /// `sql_query_timeout`: the longest any one storage operation may take,
    /// waiting for a connection included (default 10 s, shorter than
    /// ejabberd's 60 s: routing waits on it).
    pub query_timeout: Duration,
}

impl std::fmt::Debug for SqlOptions {
    // Never prints the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlOptions")
            .field("server", &self.server)
            .field("port", &self.port)
            .field("database", &self.database)
            .field("username", &self.username)
            .field("pool_size", &self.pool_size)
            .field("ssl", &self.ssl)
            .finish_non_exhaustive()
    }
}

impl SqlOptions {
    /// ejabberd's defaults (what a test or tool starts from).
    pub fn defaults() -> SqlOptions {
        SqlOptions {
            server: "localhost".into(),
            port: 5432,
            database: "ejabberd".into(),
            username: "ejabberd".into(),
            password: String::new(),
            pool_size: 10,
            ssl: false,
            connect_timeout: Duration::from_secs(5),
            query_timeout: Duration::from_secs(10),
        }
    }

    /// `user@server:port/database`, for messages.
    pub fn describe(&self) -> String {
        format!(
            "{}@{}:{}/{}",
            self.username, self.server, self.port, self.database
        )
    }
}
