//! A test cluster's parts: its engines (a throwaway PostgreSQL and NATS
//! with JetStream, `None` after SKIPPED when either is not installed) and
//! its nodes (the real binary with `default_db: sql` on that PostgreSQL and
//! a `cluster:` section on that NATS, with short timers so that tests of
//! dead nodes finish quickly). Every cluster test module starts its nodes
//! here, so they all run the same configuration.

#![allow(dead_code)]

use super::nats::NatsServer;
use super::pg::PgServer;
use super::server::{Config, Server};

/// PostgreSQL and NATS for `test`, or `None` (SKIPPED printed).
pub fn engines(test: &str) -> Option<(PgServer, NatsServer)> {
    let pg = PgServer::start(test)?;
    let nats = NatsServer::start(test)?;
    Some((pg, nats))
}

/// The configuration of node `name`: `node_ttl` in seconds.
pub fn node_config(pg: &PgServer, nats: &NatsServer, name: &str, node_ttl: u32) -> Config {
    Config {
        extra_yaml: format!(
            "{}cluster:\n  node: {name}\n  nats: {}\n  heartbeat: 1 second\n  node_ttl: {node_ttl} seconds\n  request_timeout: 3 seconds\n",
            pg.config_yaml(),
            nats.url()
        ),
        ..Config::default()
    }
}

/// Node `name` started, with a `node_ttl` of 3 seconds.
pub fn node(pg: &PgServer, nats: &NatsServer, name: &str) -> Server {
    Server::start_with(node_config(pg, nats, name, 3))
}
