//! Where a remote domain's server is (RFC 6120 §3.2, XEP-0368): the static
//! `s2s_hosts` override first; else SRV `_xmpps-server._tcp` (direct TLS)
//! and `_xmpp-server._tcp` (STARTTLS) ordered by priority and weight; else
//! the domain itself on `outgoing_s2s_port` (5269). DNS queries go through
//! hickory-resolver (async), asking /etc/resolv.conf's nameservers, or the
//! `s2s_dns_servers` when configured. Host names are looked up with the
//! system resolver first (so /etc/hosts and nsswitch apply), then DNS;
//! with `s2s_dns_servers`, with hickory only (which reads /etc/hosts too).

use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::{ResolveError, TokioResolver};
use tokio::net::TcpStream;

use crate::config::s2s::S2sOptions;

/// One place to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
    /// TLS from the first byte (`_xmpps-server`).
    pub direct_tls: bool,
}

/// A resolver for these options (`s2s_dns_servers`, `s2s_dns_timeout`,
/// `s2s_dns_retries`).
pub fn resolver(opts: &S2sOptions) -> TokioResolver {
    use hickory_resolver::config::{NameServerConfig, ResolverConfig};
    use hickory_resolver::name_server::TokioConnectionProvider;
    use hickory_resolver::proto::xfer::Protocol;
    let mut builder = if opts.dns_servers.is_empty() {
        TokioResolver::builder_tokio().unwrap_or_else(|e| {
            tracing::warn!("s2s: cannot read the system DNS configuration ({e}); using defaults");
            TokioResolver::builder_with_config(
                ResolverConfig::default(),
                TokioConnectionProvider::default(),
            )
        })
    } else {
        let servers: Vec<NameServerConfig> = opts
            .dns_servers
            .iter()
            .flat_map(|a| {
                [
                    NameServerConfig::new(*a, Protocol::Udp),
                    NameServerConfig::new(*a, Protocol::Tcp),
                ]
            })
            .collect();
        TokioResolver::builder_with_config(
            ResolverConfig::from_parts(None, Vec::new(), servers),
            TokioConnectionProvider::default(),
        )
    };
    let o = builder.options_mut();
    o.timeout = opts.dns_timeout;
    o.attempts = opts.dns_retries;
    builder.build()
}

fn no_records(e: &ResolveError) -> bool {
    matches!(
        e.proto().map(|p| p.kind()),
        Some(ProtoErrorKind::NoRecordsFound { .. })
    )
}

async fn srv(
    resolver: &TokioResolver,
    name: &str,
    direct_tls: bool,
) -> Result<Vec<(u16, u16, Target)>, ResolveError> {
    let lookup = match resolver.srv_lookup(name).await {
        Ok(l) => l,
        Err(e) if no_records(&e) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(lookup
        .iter()
        .filter(|r| r.target().to_ascii() != ".")
        .map(|r| {
            let host = r.target().to_ascii();
            let host = host.trim_end_matches('.').to_string();
            (
                r.priority(),
                r.weight(),
                Target {
                    host,
                    port: r.port(),
                    direct_tls,
                },
            )
        })
        .collect())
}

/// The places to try for `domain`, best first.
pub async fn targets(
    resolver: &TokioResolver,
    opts: &S2sOptions,
    domain: &str,
) -> Result<Vec<Target>, String> {
    if let Some(route) = opts.hosts.get(domain) {
        return Ok(vec![Target {
            host: route.host.clone(),
            port: route.port,
            direct_tls: false,
        }]);
    }
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for (prefix, direct) in [("_xmpps-server._tcp", true), ("_xmpp-server._tcp", false)] {
        match srv(resolver, &format!("{prefix}.{domain}."), direct).await {
            Ok(v) => found.extend(v),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if !found.is_empty() {
        // Lower priority first; within one, higher weight first (a
        // deterministic stand-in for RFC 2782's weighted choice); at equal
        // rank, direct TLS first (XEP-0368).
        found.sort_by(|a, b| {
            a.0.cmp(&b.0)
                .then(b.1.cmp(&a.1))
                .then(b.2.direct_tls.cmp(&a.2.direct_tls))
        });
        return Ok(found.into_iter().map(|(_, _, t)| t).collect());
    }
    if errors.len() == 2 {
        tracing::debug!(
            "s2s: SRV lookups for {domain} failed: {}",
            errors.join("; ")
        );
    }
    // No SRV records: the domain itself (RFC 6120 §3.2.2).
    Ok(vec![Target {
        host: domain.to_string(),
        port: opts.port,
        direct_tls: false,
    }])
}

/// Connect to one target: every address of its host in turn.
pub async fn connect(
    resolver: &TokioResolver,
    opts: &S2sOptions,
    target: &Target,
    per_address: Duration,
) -> Result<(TcpStream, SocketAddr), String> {
    let system = if opts.dns_servers.is_empty() {
        // The system resolver first (it reads /etc/hosts), then DNS.
        tokio::net::lookup_host((target.host.as_str(), target.port))
            .await
            .ok()
            .map(|it| it.collect::<Vec<_>>())
    } else {
        None
    };
    let addrs: Vec<SocketAddr> = if let Ok(ip) = target.host.parse::<std::net::IpAddr>() {
        vec![SocketAddr::new(ip, target.port)]
    } else if let Some(addrs) = system {
        addrs
    } else {
        match resolver.lookup_ip(format!("{}.", target.host)).await {
            Ok(ips) => ips
                .iter()
                .map(|ip| SocketAddr::new(ip, target.port))
                .collect(),
            Err(e) => return Err(format!("{}: {e}", target.host)),
        }
    };
    if addrs.is_empty() {
        return Err(format!("{}: no address", target.host));
    }
    let mut last = String::new();
    for addr in addrs {
        match tokio::time::timeout(per_address, TcpStream::connect(addr)).await {
            Ok(Ok(sock)) => return Ok((sock, addr)),
            Ok(Err(e)) => last = format!("{addr}: {e}"),
            Err(_) => last = format!("{addr}: connection timed out"),
        }
    }
    Err(last)
}
