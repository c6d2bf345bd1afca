//! Which server (cluster node) each account connects to, with `--servers
//! A,B,C` and `--pairing same|cross|any`.
//!
//! Accounts are numbered from `--first-user`; offset `i` is role `i % 2` of
//! pair `i / 2` — the pairing `chat` uses (sender `2k`, receiver `2k + 1`).
//! With N servers, pair `k`'s sender is always on server `k % N` (so the
//! clients spread round-robin, every server gets the same number of
//! senders and receivers within one pair of every N), and its receiver on:
//!
//! - `same`: the sender's server;
//! - `cross`: the next server, `(k + 1) % N` (every pair crosses; with one
//!   server it is `same`);
//! - `any` (the default): server `(k + k / N) % N`, so that over every N²
//!   consecutive pairs the receiver is on each server equally often —
//!   1/N of the pairs on the sender's server, as accounts placed on
//!   servers independently would be.
//!
//! Invariants: without `--servers` every account uses `--server` (the
//! behaviour before this option, unchanged); the mapping depends only on
//! the account number, so separate processes and scenarios on the same
//! accounts agree on it.

use std::net::SocketAddr;

use crate::conn::ClientCfg;

/// Where the receiver of a pair goes (see the module comment).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Pairing {
    /// Both accounts of a pair on one server.
    Same,
    /// Receiver on the server after the sender's.
    Cross,
    /// Receiver on every server equally often (1/N same-server).
    Any,
}

impl Pairing {
    /// The option's spelling, for reports.
    pub fn name(self) -> &'static str {
        match self {
            Pairing::Same => "same",
            Pairing::Cross => "cross",
            Pairing::Any => "any",
        }
    }
}

/// The servers and the rule placing accounts on them.
#[derive(Clone, Debug)]
pub struct Placement {
    /// The servers, at least one.
    pub servers: Vec<SocketAddr>,
    /// Where receivers go.
    pub pairing: Pairing,
    /// Account number of offset 0.
    pub first: u64,
}

impl Placement {
    /// Index into `servers` of account `user`.
    pub fn index_of(&self, user: u64) -> usize {
        let n = self.servers.len().max(1) as u64;
        let i = user.saturating_sub(self.first);
        let (k, role) = (i / 2, i % 2);
        let idx = if role == 0 {
            k % n
        } else {
            match self.pairing {
                Pairing::Same => k % n,
                Pairing::Cross => (k + 1) % n,
                Pairing::Any => (k + k / n) % n,
            }
        };
        idx as usize
    }

    /// True when the two accounts are on different servers.
    pub fn crosses(&self, a: u64, b: u64) -> bool {
        self.index_of(a) != self.index_of(b)
    }
}

impl ClientCfg {
    /// The configuration account `user` connects with: `self` with its
    /// server (and WebSocket URL) replaced by the account's server when
    /// `--servers` was given.
    pub fn for_user(&self, user: u64) -> std::borrow::Cow<'_, ClientCfg> {
        let Some(p) = &self.placement else {
            return std::borrow::Cow::Borrowed(self);
        };
        let server = p.servers[p.index_of(user)];
        if server == self.server {
            return std::borrow::Cow::Borrowed(self);
        }
        let mut c = self.clone();
        c.server = server;
        c.ws_url = self.ws_url.as_deref().map(|u| with_port(u, server.port()));
        std::borrow::Cow::Owned(c)
    }
}

/// `scheme://host:PORT/path` with another port.
fn with_port(url: &str, port: u16) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
    format!("{scheme}://{host}:{port}{path}")
}

/// The value of `--servers` (an alias, so that clap takes the list as one
/// value).
pub type Servers = Vec<SocketAddr>;

/// Parses `--servers`: one or more `IP:PORT`, comma-separated.
pub fn parse_servers(s: &str) -> Result<Servers, String> {
    let v: Result<Vec<SocketAddr>, String> = s
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|a| {
            a.parse()
                .map_err(|e| format!("--servers: {a:?} is not IP:PORT ({e})"))
        })
        .collect();
    let v = v?;
    if v.is_empty() {
        return Err("--servers: no address given".into());
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placement(n: usize, pairing: Pairing) -> Placement {
        Placement {
            servers: (0..n)
                .map(|i| SocketAddr::from(([127, 0, 0, 2 + i as u8], 5222)))
                .collect(),
            pairing,
            first: 1,
        }
    }

    /// (pairs crossing, senders per server, receivers per server) over
    /// `pairs` pairs.
    fn census(p: &Placement, pairs: u64) -> (u64, Vec<u64>, Vec<u64>) {
        let n = p.servers.len();
        let (mut cross, mut snd, mut rcv) = (0, vec![0; n], vec![0; n]);
        for k in 0..pairs {
            let (a, b) = (p.first + 2 * k, p.first + 2 * k + 1);
            cross += u64::from(p.crosses(a, b));
            snd[p.index_of(a)] += 1;
            rcv[p.index_of(b)] += 1;
        }
        (cross, snd, rcv)
    }

    #[test]
    fn same_cross_and_any_spread_evenly() {
        for n in 1..=3 {
            let pairs = 36; // a multiple of 1, 4 and 9
            let even = vec![pairs / n as u64; n];
            let (c, s, r) = census(&placement(n, Pairing::Same), pairs);
            assert_eq!((c, &s, &r), (0, &even, &even), "same, {n} servers");
            let (c, s, r) = census(&placement(n, Pairing::Cross), pairs);
            let want = if n == 1 { 0 } else { pairs };
            assert_eq!((c, &s, &r), (want, &even, &even), "cross, {n} servers");
            let (c, s, r) = census(&placement(n, Pairing::Any), pairs);
            assert_eq!(c, pairs - pairs / n as u64, "any, {n} servers");
            assert_eq!((&s, &r), (&even, &even), "any, {n} servers");
        }
    }

    #[test]
    fn urls_and_addresses() {
        assert_eq!(
            with_port("wss://localhost:5443/ws", 6000),
            "wss://localhost:6000/ws"
        );
        assert_eq!(with_port("ws://h:1", 2), "ws://h:2");
        assert_eq!(
            parse_servers("127.0.0.2:5222, 127.0.0.3:5222").unwrap(),
            vec![
                SocketAddr::from(([127, 0, 0, 2], 5222)),
                SocketAddr::from(([127, 0, 0, 3], 5222))
            ]
        );
        assert!(parse_servers("localhost:5222").is_err());
        assert!(parse_servers(",").is_err());
    }
}
