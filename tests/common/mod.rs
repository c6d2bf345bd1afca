//! Shared harness for Rookery's integration tests: spawning the real server
//! binary ([`server`]), a strict async XMPP test client ([`client`]) with its
//! XML splitter ([`xml`]) and a hand-rolled SCRAM implementation ([`scram`]),
//! plus RFC 6121 helpers ([`im`]), XEP-0045 steps for federated rooms ([`muc`]), a small DNS server for federation tests
//! ([`dns`]), coturn and a small TURN client ([`turn`]), and the Python venv for interop tests
//! ([`interop`]), and the strict character check every received unit gets
//! ([`wellformed`]).
//!
//! Each test module uses a different subset, hence the `dead_code` and
//! `unused_imports` allowances.
#![allow(dead_code, unused_imports)]

pub mod archive_files;
pub mod client;
pub mod cluster;
pub mod component;
pub mod dns;
pub mod ejabberd;
pub mod federation;
pub mod http;
pub mod im;
pub mod interop;
pub mod muc;
pub mod nats;
pub mod pg;
pub mod ports;
pub mod scram;
pub mod server;
pub mod turn;
pub mod wellformed;
pub mod xml;

pub use client::{Client, SaslReply, StreamEvent};
pub use scram::{Gs2Binding, ScramClient, ScramHash};
pub use server::{Config, Server};
pub use xml::*;

use std::sync::atomic::{AtomicU64, Ordering};

/// A unique token for message bodies, resources and user names.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}{}x{n}x{t}", std::process::id())
}

/// Starts a default server and registers `alice`/`secret` and `bob`/`hunter2`
/// on `localhost`.
pub fn server_with_users() -> Server {
    let s = Server::start();
    s.register("alice", "localhost", "secret");
    s.register("bob", "localhost", "hunter2");
    s
}
