//! The top-level options of the web transports (ejabberd's names):
//! `websocket_origin`, `websocket_ping_interval`, `websocket_timeout`,
//! `websocket_url` and `bosh_service_url` for XEP-0156 discovery (ejabberd
//! has the two URLs as `mod_host_meta` options), and `trusted_proxies`,
//! the addresses whose `X-Forwarded-For` is believed and which may use a
//! plain (non-TLS) WebSocket or BOSH listener besides loopback.
//!
//! Invariant: `origins` empty means every origin is accepted (ejabberd's
//! `ignore`, its default); a `None` duration means never (`infinity`);
//! `trusted_proxies` empty trusts no proxy (ejabberd's default), `all`
//! is every address.

use std::time::Duration;

use super::acl::IpNet;
use super::check::{self, Problem};
use super::yaml::Node;

/// ejabberd's default `websocket_ping_interval`, seconds.
pub const DEFAULT_PING_INTERVAL: u64 = 60;
/// ejabberd's default `websocket_timeout`, seconds.
pub const DEFAULT_TIMEOUT: u64 = 300;

/// The option names this file reads.
pub const OPTIONS: &[&str] = &[
    "websocket_origin",
    "websocket_ping_interval",
    "websocket_timeout",
    "websocket_url",
    "bosh_service_url",
    "trusted_proxies",
];

/// WebSocket (RFC 7395) settings, for every `ejabberd_http_ws` handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebSocketOptions {
    /// Accepted `Origin` headers; empty = all.
    pub origins: Vec<String>,
    /// Time between WebSocket pings to a silent client.
    pub ping_interval: Option<Duration>,
    /// A client silent (no message, no pong) this long is gone.
    pub timeout: Option<Duration>,
    /// The URL XEP-0156 discovery gives; `None` = `auto` (from the
    /// request's `Host` and the listener).
    pub url: Option<String>,
    /// The BOSH URL XEP-0156 discovery gives; `None` = `auto`.
    pub bosh_url: Option<String>,
    /// Proxies whose `X-Forwarded-For` is believed (`all`: `0.0.0.0/0`
    /// and `::/0`).
    pub trusted_proxies: Vec<IpNet>,
}

impl WebSocketOptions {
    /// Whether `ip` is one of `trusted_proxies`.
    pub fn trusted_proxy(&self, ip: std::net::IpAddr) -> bool {
        self.trusted_proxies.iter().any(|n| n.contains(ip))
    }
}

impl Default for WebSocketOptions {
    fn default() -> Self {
        WebSocketOptions {
            origins: Vec::new(),
            ping_interval: Some(Duration::from_secs(DEFAULT_PING_INTERVAL)),
            timeout: Some(Duration::from_secs(DEFAULT_TIMEOUT)),
            url: None,
            bosh_url: None,
            trusted_proxies: Vec::new(),
        }
    }
}

/// Read the options (`option` finds a top-level option by name).
pub fn parse<'a>(option: impl Fn(&str) -> Option<&'a Node>) -> Result<WebSocketOptions, Problem> {
    let mut o = WebSocketOptions::default();
    if let Some(node) = option("websocket_origin") {
        let what = "ignore, or a list of origins such as https://chat.example.org";
        match node.as_str() {
            Some("ignore") => {}
            _ => {
                for item in check::list_or_single(node) {
                    let origin = check::string(item, "websocket_origin", what)?;
                    if !(origin.starts_with("https://") || origin.starts_with("http://")) {
                        return Err(check::expected(item, "websocket_origin", what));
                    }
                    o.origins.push(origin.trim_end_matches('/').to_string());
                }
            }
        }
    }
    if let Some(node) = option("websocket_ping_interval") {
        o.ping_interval =
            check::pos_int_or_infinity(node, "websocket_ping_interval")?.map(Duration::from_secs);
    }
    if let Some(node) = option("websocket_timeout") {
        o.timeout = check::pos_int_or_infinity(node, "websocket_timeout")?.map(Duration::from_secs);
    }
    if let Some(node) = option("websocket_url") {
        let what = "auto, or a wss:// or ws:// URL";
        match check::string(node, "websocket_url", what)? {
            "auto" => {}
            url if url.starts_with("wss://") || url.starts_with("ws://") => {
                o.url = Some(url.to_string())
            }
            _ => return Err(check::expected(node, "websocket_url", what)),
        }
    }
    if let Some(node) = option("bosh_service_url") {
        let what = "auto, or an https:// or http:// URL";
        match check::string(node, "bosh_service_url", what)? {
            "auto" => {}
            url if url.starts_with("https://") || url.starts_with("http://") => {
                o.bosh_url = Some(url.to_string())
            }
            _ => return Err(check::expected(node, "bosh_service_url", what)),
        }
    }
    if let Some(node) = option("trusted_proxies") {
        let what = "all, or a list of IP addresses or networks such as 10.0.0.0/8";
        match node.as_str() {
            Some("all") => {
                o.trusted_proxies = vec![
                    "0.0.0.0/0".parse().expect("net"),
                    "::/0".parse().expect("net"),
                ]
            }
            _ => {
                for item in check::list_or_single(node) {
                    let text = check::string(item, "trusted_proxies", what)?;
                    let net = text
                        .parse::<IpNet>()
                        .map_err(|_| check::expected(item, "trusted_proxies", what))?;
                    o.trusted_proxies.push(net);
                }
            }
        }
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::time::Duration;

    fn parse(text: &str) -> Result<Config, crate::config::ConfigError> {
        Config::from_str(text, "test.yml", std::path::Path::new("/tmp"))
    }

    #[test]
    fn the_embedded_default_serves_websocket_on_its_https_listeners() {
        let c = Config::embedded_default();
        let http: Vec<_> = c
            .listen
            .iter()
            .filter(|l| l.module == crate::config::listen::ListenerModule::Http)
            .collect();
        assert!(!http.is_empty());
        for l in http {
            assert!(l.tls);
            assert_eq!(l.ws_paths, vec!["/ws", "/xmpp-websocket"]);
            assert_eq!(l.bosh_paths, vec!["/bosh", "/http-bind"]);
            assert!(l.host_meta);
        }
    }

    #[test]
    fn defaults_and_values() {
        let c = parse("hosts: [a.example]\n").unwrap();
        assert!(c.websocket.origins.is_empty());
        assert_eq!(c.websocket.ping_interval, Some(Duration::from_secs(60)));
        assert_eq!(c.websocket.timeout, Some(Duration::from_secs(300)));
        let c = parse(
            "hosts: [a.example]\nwebsocket_origin: [https://chat.a.example/]\nwebsocket_ping_interval: 5\nwebsocket_timeout: infinity\nwebsocket_url: wss://a.example/ws\n",
        )
        .unwrap();
        assert_eq!(c.websocket.origins, vec!["https://chat.a.example"]);
        assert_eq!(c.websocket.ping_interval, Some(Duration::from_secs(5)));
        assert_eq!(c.websocket.timeout, None);
        assert_eq!(c.websocket.url.as_deref(), Some("wss://a.example/ws"));
        let e = parse("hosts: [a.example]\nwebsocket_url: http://x\n")
            .err()
            .unwrap();
        assert!(e.to_string().contains("websocket_url"), "{e}");
    }

    #[test]
    fn bosh_url_and_trusted_proxies() {
        let c = parse(
            "hosts: [a.example]
",
        )
        .unwrap();
        assert!(c.websocket.bosh_url.is_none() && c.websocket.trusted_proxies.is_empty());
        assert!(!c.websocket.trusted_proxy("10.1.2.3".parse().unwrap()));
        let c = parse(
            "hosts: [a.example]
bosh_service_url: https://a.example/bosh
trusted_proxies: [10.0.0.0/8, \"::1\"]
",
        )
        .unwrap();
        assert_eq!(
            c.websocket.bosh_url.as_deref(),
            Some("https://a.example/bosh")
        );
        assert!(c.websocket.trusted_proxy("10.1.2.3".parse().unwrap()));
        assert!(c.websocket.trusted_proxy("::1".parse().unwrap()));
        assert!(!c.websocket.trusted_proxy("192.0.2.1".parse().unwrap()));
        let c = parse(
            "hosts: [a.example]
trusted_proxies: all
",
        )
        .unwrap();
        assert!(c.websocket.trusted_proxy("192.0.2.1".parse().unwrap()));
        let e = parse(
            "hosts: [a.example]
trusted_proxies: [nowhere]
",
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("trusted_proxies"), "{e}");
        let e = parse(
            "hosts: [a.example]
bosh_service_url: wss://x
",
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("bosh_service_url"), "{e}");
    }
}
