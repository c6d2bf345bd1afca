//! XEP-0156 discovery on an `ejabberd_http` listener:
//! `/.well-known/host-meta` (XRD) and `/.well-known/host-meta.json`
//! (JRD) list the listener's WebSocket endpoints as
//! `urn:xmpp:alt-connections:websocket` links and its BOSH endpoints as
//! `urn:xmpp:alt-connections:xbosh` links, with `Access-Control-Allow-
//! Origin: *` so a web client on any origin can read them.
//!
//! A URL is `websocket_url` (`bosh_service_url`) when configured; otherwise
//! (`auto`) it is built from the request's `Host` header (checked to be a
//! host name or address with an optional port; the first served host and
//! the listener's port otherwise), `wss`/`https` on a TLS listener
//! (`ws`/`http` otherwise), and each WebSocket (BOSH) path.

use hyper::{Request, Response, StatusCode};
use xep_support::element::escape;

use super::Body;
use crate::config::Listener;
use crate::server::Server;

/// The paths served.
pub const XRD_PATH: &str = "/.well-known/host-meta";
pub const JRD_PATH: &str = "/.well-known/host-meta.json";

/// The XEP-0156 link relation of RFC 7395 WebSocket endpoints.
pub const REL_WEBSOCKET: &str = "urn:xmpp:alt-connections:websocket";
/// The XEP-0156 link relation of XEP-0206 BOSH endpoints.
pub const REL_XBOSH: &str = "urn:xmpp:alt-connections:xbosh";

/// The `(rel, href)` links this listener advertises.
pub fn links<B>(server: &Server, cfg: &Listener, req: &Request<B>) -> Vec<(&'static str, String)> {
    let config = server.config();
    let opts = &config.websocket;
    let host = req
        .headers()
        .get("host")
        .and_then(|v| v.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .map(str::to_string)
        .unwrap_or_else(|| {
            let first = server.config().hosts.first().cloned().unwrap_or_default();
            format!("{first}:{}", cfg.port)
        });
    let mut links = Vec::new();
    match &opts.url {
        Some(url) => links.push((REL_WEBSOCKET, url.clone())),
        None => {
            let scheme = if cfg.tls { "wss" } else { "ws" };
            for p in &cfg.ws_paths {
                links.push((REL_WEBSOCKET, format!("{scheme}://{host}{p}")));
            }
        }
    }
    match &opts.bosh_url {
        Some(url) => links.push((REL_XBOSH, url.clone())),
        None => {
            let scheme = if cfg.tls { "https" } else { "http" };
            for p in &cfg.bosh_paths {
                links.push((REL_XBOSH, format!("{scheme}://{host}{p}")));
            }
        }
    }
    links
}

/// Answer a host-meta request (`json`: the JRD form).
pub fn serve<B>(server: &Server, cfg: &Listener, req: &Request<B>, json: bool) -> Response<Body> {
    let links = links(server, cfg, req);
    let (body, content_type) = if json {
        let links: Vec<serde_json::Value> = links
            .iter()
            .map(|(rel, href)| serde_json::json!({"rel": rel, "href": href}))
            .collect();
        (
            serde_json::json!({ "links": links }).to_string(),
            "application/json",
        )
    } else {
        let mut x = String::from(
            "<?xml version='1.0' encoding='utf-8'?>\n<XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>\n",
        );
        for (rel, href) in &links {
            x.push_str(&format!(
                "  <Link rel='{}' href='{}'/>\n",
                escape(rel),
                escape(href)
            ));
        }
        x.push_str("</XRD>\n");
        (x, "application/xrd+xml")
    };
    let mut r = super::text(StatusCode::OK, "");
    *r.body_mut() = super::full(body);
    let h = r.headers_mut();
    h.insert("content-type", content_type.parse().expect("header"));
    h.insert("access-control-allow-origin", "*".parse().expect("header"));
    r
}
