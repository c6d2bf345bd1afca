//! Who is really asking: `trusted_proxies` (ejabberd's top-level option).
//! A request from a trusted proxy names its client in `X-Forwarded-For`
//! (the nearest address not itself a trusted proxy, read from the right);
//! from anyone else the header is ignored. A plain (non-TLS) listener
//! serves WebSocket and BOSH only to loopback and to trusted proxies (a
//! TLS-terminating proxy in front of it).

use std::net::{IpAddr, SocketAddr};

use hyper::HeaderMap;

use crate::config::websocket::WebSocketOptions;

/// The client's address: `peer`, or from a trusted proxy the address it
/// forwarded for (the port stays the proxy's).
pub fn client(opts: &WebSocketOptions, peer: SocketAddr, headers: &HeaderMap) -> SocketAddr {
    if !opts.trusted_proxy(peer.ip()) {
        return peer;
    }
    let mut hops: Vec<IpAddr> = Vec::new();
    for v in headers.get_all("x-forwarded-for") {
        let Ok(v) = v.to_str() else {
            return peer;
        };
        for hop in v.split(',') {
            match parse_hop(hop.trim()) {
                Some(ip) => hops.push(ip),
                None => return peer,
            }
        }
    }
    match hops.iter().rev().find(|ip| !opts.trusted_proxy(**ip)) {
        Some(ip) => SocketAddr::new(*ip, peer.port()),
        // Every hop is a proxy: the first one is the client.
        None => hops
            .first()
            .map_or(peer, |ip| SocketAddr::new(*ip, peer.port())),
    }
}

/// `192.0.2.1`, `2001:db8::1`, `[2001:db8::1]:443` or `192.0.2.1:443`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip);
    }
    hop.parse::<SocketAddr>().ok().map(|s| s.ip())
}

/// Whether a plain listener may serve a web transport to `peer` (the TCP
/// peer, not a forwarded address).
pub fn plain_allowed(opts: &WebSocketOptions, peer: SocketAddr) -> bool {
    peer.ip().to_canonical().is_loopback() || opts.trusted_proxy(peer.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(proxies: &[&str]) -> WebSocketOptions {
        WebSocketOptions {
            trusted_proxies: proxies.iter().map(|p| p.parse().unwrap()).collect(),
            ..WebSocketOptions::default()
        }
    }

    fn headers(xff: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", xff.parse().unwrap());
        h
    }

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let peer: SocketAddr = "10.0.0.2:4000".parse().unwrap();
        let h = headers("198.51.100.7, 10.0.0.9");
        assert_eq!(client(&opts(&[]), peer, &h), peer);
        let o = opts(&["10.0.0.0/8"]);
        assert_eq!(
            client(&o, peer, &h).ip(),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        // A client cannot pose as another by adding hops on the left.
        let h = headers("203.0.113.1, 198.51.100.7");
        assert_eq!(
            client(&o, peer, &h).ip(),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client(&o, peer, &headers("garbage")), peer);
        assert_eq!(client(&o, peer, &HeaderMap::new()), peer);
        assert!(plain_allowed(&o, peer));
        assert!(plain_allowed(&opts(&[]), "127.0.0.1:1".parse().unwrap()));
        assert!(!plain_allowed(&opts(&[]), peer));
    }
}
