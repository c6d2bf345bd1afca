//! `rookery ctl check turn`: each STUN/TURN service that `mod_stun_disco`
//! hands to clients (XEP-0215) answers a STUN Binding request, so calls
//! between clients behind NATs have a server to meet at. Rookery has no
//! STUN/TURN listener of its own; coturn is the recommended companion
//! (docs/admin.md).
//!
//! A service that does not answer within [`TIMEOUT`] is a problem (clients
//! would be sent to it); `stuns`/`turns` services are checked only for a
//! TCP connection (the TLS handshake is not made). Findings name the
//! service as clients see it (`type host:port transport`).

use std::net::ToSocketAddrs;
use std::time::Duration;

use xep_support::stun_disco::{services_of, Service};

use super::check::{Finding, Level};
use super::stun_probe::{binding, Answer};
use crate::config::Config;

/// How long one service may take to answer.
pub const TIMEOUT: Duration = Duration::from_secs(3);

fn f(level: Level, text: String) -> Finding {
    Finding { level, text }
}

fn name(s: &Service) -> String {
    format!(
        "{} {}:{} ({})",
        s.kind.as_str(),
        s.host,
        s.port,
        if s.tcp { "tcp" } else { "udp" }
    )
}

/// Check one service.
pub fn check_service(s: &Service, timeout: Duration) -> Finding {
    let n = name(s);
    let addr = match (s.host.as_str(), s.port).to_socket_addrs() {
        Ok(mut addrs) => match addrs.next() {
            Some(a) => a,
            None => return f(Level::Problem, format!("{n}: {} has no address", s.host)),
        },
        Err(e) => {
            return f(
                Level::Problem,
                format!("{n}: cannot resolve {}: {e}", s.host),
            )
        }
    };
    if s.kind.is_tls() {
        return match std::net::TcpStream::connect_timeout(&addr, timeout) {
            Ok(_) => f(
                Level::Ok,
                format!("{n}: accepts TCP connections at {addr} (TLS not checked)"),
            ),
            Err(e) => f(
                Level::Problem,
                format!("{n}: cannot connect to {addr}: {e}; clients will not reach this service"),
            ),
        };
    }
    match binding(addr, s.tcp, timeout) {
        Ok(Answer::Mapped(seen)) => f(
            Level::Ok,
            format!(
                "{n}: answers STUN Binding requests at {addr}{}",
                seen.map(|a| format!(" (sees this machine as {a})"))
                    .unwrap_or_default()
            ),
        ),
        Ok(Answer::Error(code, reason)) => f(
            Level::Warning,
            format!(
                "{n}: answers at {addr}, but with STUN error {code} {reason} to a Binding request"
            ),
        ),
        Err(e) => f(
            Level::Problem,
            format!(
                "{n}: no STUN Binding answer from {addr} (waited up to {} s): {e}. Is the \
                 STUN/TURN server (e.g. coturn) running and reachable there? Clients are sent \
                 to it for their calls",
                timeout.as_secs_f32()
            ),
        ),
    }
}

/// Every service of `mod_stun_disco`.
pub fn check_turn(config: &Config, timeout: Duration) -> Vec<Finding> {
    let Some((_, options)) = config.modules.iter().find(|(n, _)| n == "mod_stun_disco") else {
        return vec![f(
            Level::Note,
            "mod_stun_disco is not enabled: clients are told of no STUN/TURN server \
             (XEP-0215), so calls between clients behind NATs may not connect"
                .into(),
        )];
    };
    let (services, errors) = services_of(options);
    let mut out: Vec<Finding> = errors
        .into_iter()
        .map(|e| f(Level::Problem, format!("mod_stun_disco: {e}")))
        .collect();
    if services.is_empty() {
        out.push(f(
            Level::Warning,
            "mod_stun_disco lists no services: clients are told of no STUN/TURN server".into(),
        ));
    }
    if !services.iter().any(|s| s.kind.is_turn()) && !services.is_empty() {
        out.push(f(
            Level::Warning,
            "mod_stun_disco lists no TURN service: calls between clients behind strict NATs \
             need a relay"
                .into(),
        ));
    }
    out.extend(services.iter().map(|s| check_service(s, timeout)));
    out
}
