//! The top-level WebSocket options (ejabberd's names): `websocket_origin`,
//! `websocket_ping_interval`, `websocket_timeout`, and `websocket_url`
//! for XEP-0156 discovery (ejabberd has it as a `mod_host_meta` option).
//!
//! Invariant: `origins` empty means every origin is accepted (ejabberd's
//! `ignore`, its default); a `None` duration means never (`infinity`).

use std::time::Duration;

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
}

impl Default for WebSocketOptions {
    fn default() -> Self {
        WebSocketOptions {
            origins: Vec::new(),
            ping_interval: Some(Duration::from_secs(DEFAULT_PING_INTERVAL)),
            timeout: Some(Duration::from_secs(DEFAULT_TIMEOUT)),
            url: None,
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
}
