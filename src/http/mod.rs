//! An `ejabberd_http` listener (hyper, HTTP/1.1, plain or direct TLS): the
//! HTTP side of XEP-0363 file upload (here), RFC 7395 WebSocket clients
//! ([`ws`]) and XEP-0206 BOSH clients ([`bosh`]), both handed to the c2s
//! code, and XEP-0156 discovery ([`host_meta`]). [`proxy`] says who the
//! client is (`trusted_proxies`, `X-Forwarded-For`) and whether a plain
//! listener may serve it a web transport (loopback or a trusted proxy
//! only, else HTTP 403). [`metrics`] serves `/metrics` (OpenMetrics, request
//! handler `mod_prometheus`) to the addresses allowed to scrape; [`api`]
//! is `mod_http_api` (`POST /api/COMMAND`, ejabberd's ReST API).
//!
//! The `mod_http_upload` path takes the PUT a slot granted and serves the
//! file with GET/HEAD.
//!
//! A PUT is accepted only with the URL `mod_http_upload` signed (path,
//! size and expiry under its secret), a `Content-Length` equal to the
//! granted size, and only once: the file is streamed to a temporary file
//! in the upload directory (never held in memory), checked against the
//! size, then renamed into place. Files are served with the content type
//! given at upload, `X-Content-Type-Options: nosniff` and a
//! `Content-Security-Policy` that runs nothing, so an upload cannot become
//! a page on the server's origin.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::TryStreamExt;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use xep_support::http_upload::{clean_name, url_encode, HttpUpload};

use crate::config::Listener;
use crate::server::Server;

pub mod api;
pub mod bosh;
pub mod host_meta;
pub mod invites;
pub mod metrics;
pub mod proxy;
pub mod ws;

type Body = BoxBody<Bytes, std::io::Error>;

/// Time for the TLS handshake and for each request's headers.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest life of one HTTP connection (a large upload on a slow link).
const CONNECTION_LIFETIME: Duration = Duration::from_secs(3600);

/// Serve one HTTP connection.
pub async fn handle(server: Arc<Server>, sock: TcpStream, peer: SocketAddr, cfg: Arc<Listener>) {
    let io = match crate::tls::accept_transport(
        server.live().tls_acceptor(false),
        sock,
        cfg.tls,
        HANDSHAKE_TIMEOUT,
    )
    .await
    {
        Ok(io) => {
            if cfg.tls {
                crate::metrics::tls_handshake("http", true);
            }
            io
        }
        Err(why) => {
            crate::metrics::tls_handshake("http", false);
            tracing::debug!(%peer, "HTTP TLS handshake failed: {why}");
            return;
        }
    };
    let service = hyper::service::service_fn(move |req| {
        let (server, cfg) = (server.clone(), cfg.clone());
        async move { Ok::<_, Infallible>(serve(&server, &cfg, peer, req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HANDSHAKE_TIMEOUT)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    match tokio::time::timeout(CONNECTION_LIFETIME, conn).await {
        Ok(Err(e)) => tracing::debug!(%peer, "HTTP connection ended: {e}"),
        Err(_) => tracing::info!(%peer, "HTTP connection open too long; closed"),
        Ok(Ok(())) => {}
    }
}

fn full(body: String) -> Body {
    Full::new(Bytes::from(body))
        .map_err(|never| match never {})
        .boxed()
}

fn empty() -> Body {
    full(String::new())
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut r = Response::new(full(format!("{body}\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-type",
        "text/plain; charset=utf-8".parse().expect("header"),
    );
    r
}

async fn serve(
    server: &Arc<Server>,
    cfg: &Arc<Listener>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<Body> {
    let path = req.uri().path();
    let trimmed = path.trim_end_matches('/');
    if cfg.metrics_paths.iter().any(|p| p == trimmed) {
        let client = proxy::client(&server.config().websocket, peer, req.headers());
        return metrics::serve(server, client, &req).await;
    }
    if let Some(base) = cfg
        .api_paths
        .iter()
        .find(|b| trimmed == b.as_str() || path.starts_with(&format!("{b}/")))
    {
        let client = proxy::client(&server.config().websocket, peer, req.headers());
        let base = base.clone();
        return api::serve(server, cfg, &base, peer, client, req).await;
    }
    let is_ws = cfg.ws_paths.iter().any(|p| p == trimmed);
    let is_bosh = cfg.bosh_paths.iter().any(|p| p == trimmed);
    if is_ws || is_bosh {
        let opts = &server.config().websocket;
        if !cfg.tls && !proxy::plain_allowed(opts, peer) {
            tracing::info!(%peer, "plain HTTP web transport refused (not loopback, not in trusted_proxies)");
            return text(
                StatusCode::FORBIDDEN,
                "plain ws:// and http:// BOSH are served to loopback and trusted_proxies only: use a TLS listener",
            );
        }
        let client = proxy::client(opts, peer, req.headers());
        if is_ws {
            return ws::upgrade(server, cfg, client, req);
        }
        return bosh::serve(server, cfg, client, req).await;
    }
    if let Some(base) = cfg
        .invites_path
        .as_deref()
        .filter(|b| path == *b || path.starts_with(&format!("{b}/")))
    {
        let opts = &server.config().websocket;
        if !cfg.tls && !proxy::plain_allowed(opts, peer) {
            return text(
                StatusCode::FORBIDDEN,
                "invitation pages are served over plain http:// to loopback and trusted_proxies only: use a TLS listener",
            );
        }
        let client = proxy::client(opts, peer, req.headers());
        let base = base.to_string();
        return invites::serve(server, &base, client, req).await;
    }
    if cfg.host_meta && (path == host_meta::XRD_PATH || path == host_meta::JRD_PATH) {
        return host_meta::serve(server, cfg, &req, path == host_meta::JRD_PATH);
    }
    let live = server.live();
    let upload = live
        .modules
        .iter()
        .find_map(|m| m.as_any().and_then(|a| a.downcast_ref::<HttpUpload>()));
    let mut response = match (upload, &cfg.upload_path) {
        (Some(upload), Some(base)) => upload_request(upload, base, req).await,
        _ => text(StatusCode::NOT_FOUND, "not found"),
    };
    if let Some(upload) = upload {
        for (k, v) in &upload.custom_headers {
            if let (Ok(k), Ok(v)) = (
                hyper::header::HeaderName::from_bytes(k.as_bytes()),
                hyper::header::HeaderValue::from_str(v),
            ) {
                response.headers_mut().insert(k, v);
            }
        }
    }
    response
}

/// `token/name` of a request path under `base`, checked and mapped to the
/// file on disk; `None` for anything that no slot could have produced.
fn file_of(upload: &HttpUpload, base: &str, path: &str) -> Option<(String, PathBuf, PathBuf)> {
    let rest = path.strip_prefix(base)?.strip_prefix('/')?;
    let (token, encoded) = rest.split_once('/')?;
    if token.len() != 32 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let name = percent_decode(encoded)?;
    if name.is_empty() || clean_name(&name) != name || url_encode(&name) != encoded {
        return None;
    }
    let dir = upload.docroot.join(token);
    Some((rest.to_string(), dir.join(&name), dir))
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

async fn upload_request(upload: &HttpUpload, base: &str, req: Request<Incoming>) -> Response<Body> {
    if req.method() == Method::OPTIONS {
        return text(StatusCode::OK, "");
    }
    let Some((rest, file, dir)) = file_of(upload, base, req.uri().path()) else {
        return text(StatusCode::NOT_FOUND, "not found");
    };
    match *req.method() {
        Method::PUT => put(upload, &rest, &file, &dir, req).await,
        Method::GET | Method::HEAD => get(&file, &dir, req.method() == Method::HEAD).await,
        _ => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
    }
}

async fn put(
    upload: &HttpUpload,
    rest: &str,
    file: &Path,
    dir: &Path,
    req: Request<Incoming>,
) -> Response<Body> {
    let size = match upload.verify_put(rest, req.uri().query().unwrap_or("")) {
        Ok(size) => size,
        Err(why) => return text(StatusCode::FORBIDDEN, why),
    };
    let length: Option<u64> = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    match length {
        Some(l) if l == size => {}
        Some(l) if l > size => return text(StatusCode::PAYLOAD_TOO_LARGE, "larger than the slot"),
        _ => {
            return text(
                StatusCode::BAD_REQUEST,
                "Content-Length must be the slot's size",
            )
        }
    }
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .filter(|t| {
            t.len() <= 100
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"/+-.;= ".contains(&b))
        })
        .unwrap_or("application/octet-stream")
        .to_string();
    if tokio::fs::create_dir(dir).await.is_err() {
        // The token's directory exists: this slot was used already.
        return text(StatusCode::CONFLICT, "this slot was used already");
    }
    let part = dir.join(".part");
    let result = async {
        let mut out = tokio::fs::File::create(&part).await?;
        let mut body = req.into_body();
        let mut written = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(std::io::Error::other)?;
            if let Ok(data) = frame.into_data() {
                written += data.len() as u64;
                if written > size {
                    return Err(std::io::Error::other("larger than the slot"));
                }
                out.write_all(&data).await?;
            }
        }
        if written != size {
            return Err(std::io::Error::other("shorter than the slot"));
        }
        out.sync_all().await?;
        tokio::fs::write(dir.join(".type"), content_type.as_bytes()).await?;
        tokio::fs::rename(&part, file).await
    }
    .await;
    match result {
        Ok(()) => text(StatusCode::CREATED, "created"),
        Err(e) => {
            let _ = tokio::fs::remove_dir_all(dir).await;
            tracing::info!("upload to {} refused: {e}", file.display());
            text(StatusCode::BAD_REQUEST, &e.to_string())
        }
    }
}

async fn get(file: &Path, dir: &Path, head: bool) -> Response<Body> {
    let Ok(f) = tokio::fs::File::open(file).await else {
        return text(StatusCode::NOT_FOUND, "not found");
    };
    let len = f.metadata().await.map(|m| m.len()).unwrap_or(0);
    let content_type = tokio::fs::read_to_string(dir.join(".type"))
        .await
        .unwrap_or_else(|_| "application/octet-stream".into());
    let body: Body = if head {
        Full::new(Bytes::new())
            .map_err(|never| match never {})
            .boxed()
    } else {
        StreamBody::new(tokio_util::io::ReaderStream::new(f).map_ok(Frame::data)).boxed()
    };
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert("content-length", len.into());
    if let Ok(v) = content_type.parse() {
        h.insert("content-type", v);
    }
    h.insert("x-content-type-options", "nosniff".parse().expect("header"));
    h.insert(
        "content-security-policy",
        "default-src 'none'; img-src 'self'; media-src 'self'; style-src 'unsafe-inline'; sandbox"
            .parse()
            .expect("header"),
    );
    r
}
