//! XEP-0124 BOSH with XEP-0206 (XMPP over BOSH) on an `ejabberd_http`
//! listener's `mod_bosh` paths: the HTTP side. A POST's body is read (up
//! to `mod_bosh`'s `max_request_size`, else HTTP 413) and parsed with the
//! strict XML reader ([`body`], else HTTP 400); without `sid` it creates a
//! session ([`session`]: `wait`, `hold`, `requests`, `inactivity`,
//! `polling`, `ver` agreed; at most `max_sessions_per_ip` per client
//! address) whose c2s session runs on [`io::BoshIo`] in `Framing::Bosh`
//! (`crate::c2s::handle_bosh`: the one c2s code path); with `sid` it goes
//! to that session in `rid` order. OPTIONS answers a CORS preflight; every
//! answer carries CORS headers so a page from any origin may use BOSH.
//!
//! Invariants: the `sid` comes from the operating system's CSPRNG; every
//! error a client can cause is a `<body type='terminate'/>` with the
//! XEP-0124 condition (HTTP 200, as XEP-0124 asks of current clients), or
//! HTTP 400/413 when the request is no BOSH body at all; no request waits
//! past the session's `wait`.

mod body;
mod io;
mod session;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};

use super::{full, Body};
use crate::config::Listener;
use crate::server::Server;
use body::xbosh;
use session::{Handled, Params, Session};

/// Time to read a request's body.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// `wait` when the client gives none.
const DEFAULT_WAIT: u64 = 60;

/// Answer a request to a BOSH path; `peer` is the client's address (after
/// `trusted_proxies`).
pub async fn serve(
    server: &Arc<Server>,
    cfg: &Arc<Listener>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<Body> {
    match *req.method() {
        Method::OPTIONS => with_cors(plain(StatusCode::OK, String::new())),
        Method::GET | Method::HEAD => with_cors(super::text(
            StatusCode::OK,
            "XMPP over BOSH (XEP-0124, XEP-0206): POST <body/> requests here",
        )),
        Method::POST => with_cors(post(server, cfg, peer, req).await),
        _ => with_cors(super::text(
            StatusCode::METHOD_NOT_ALLOWED,
            "BOSH uses POST (and OPTIONS for CORS preflight)",
        )),
    }
}

fn plain(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r
}

fn xml(status: StatusCode, body: String) -> Response<Body> {
    let mut r = plain(status, body);
    r.headers_mut().insert(
        "content-type",
        "text/xml; charset=utf-8".parse().expect("header"),
    );
    r.headers_mut()
        .insert("cache-control", "no-store".parse().expect("header"));
    r
}

fn with_cors(mut r: Response<Body>) -> Response<Body> {
    let h = r.headers_mut();
    for (k, v) in [
        ("access-control-allow-origin", "*"),
        ("access-control-allow-methods", "GET, POST, OPTIONS"),
        ("access-control-allow-headers", "Content-Type"),
        ("access-control-max-age", "86400"),
    ] {
        h.insert(k, v.parse().expect("header"));
    }
    r
}

fn terminate(condition: &str) -> Response<Body> {
    xml(StatusCode::OK, body::terminate(Some(condition), &[]))
}

async fn post(
    server: &Arc<Server>,
    cfg: &Arc<Listener>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<Body> {
    let opts = server.config().bosh.clone();
    let max = opts
        .max_request_size
        .map_or(usize::MAX, |m| usize::try_from(m).unwrap_or(usize::MAX));
    let length: Option<u64> = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let too_big = || {
        xml(
            StatusCode::PAYLOAD_TOO_LARGE,
            body::terminate(Some("policy-violation"), &[]),
        )
    };
    if length.is_some_and(|l| l > max as u64) {
        return too_big();
    }
    let limited = http_body_util::Limited::new(req.into_body(), max);
    let bytes = match tokio::time::timeout(BODY_TIMEOUT, limited.collect()).await {
        Ok(Ok(c)) => c.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => return too_big(),
        Ok(Err(_)) | Err(_) => {
            return xml(
                StatusCode::BAD_REQUEST,
                body::terminate(Some("bad-request"), &[]),
            )
        }
    };
    let body = match body::parse(&bytes) {
        Ok(b) => b,
        Err(why) => {
            tracing::info!(%peer, "BOSH request refused: {why}");
            return xml(
                StatusCode::BAD_REQUEST,
                body::terminate(Some("bad-request"), &[]),
            );
        }
    };
    let Some(rid) = body.attr("rid").and_then(|r| r.trim().parse::<u64>().ok()) else {
        return terminate("bad-request");
    };
    let (session, handled) = match body.attr("sid") {
        None => match create(server, cfg, peer, rid, &body, &opts) {
            Ok((s, rx)) => (s, Handled::Wait(rx)),
            Err(condition) => return terminate(condition),
        },
        Some(sid) => match session::registry().get(sid) {
            Some(s) => {
                let h = s.request(rid, body);
                (s, h)
            }
            None => return terminate("item-not-found"),
        },
    };
    let reply = match handled {
        Handled::Reply(b) => b,
        Handled::Wait(mut rx) => {
            match tokio::time::timeout(session.params().wait, &mut rx).await {
                Ok(Ok(b)) => b,
                // Its responder was replaced by a retransmission of the rid.
                Ok(Err(_)) => body::response(&[], &[]),
                Err(_) => session
                    .wait_over(rid)
                    .or_else(|| rx.try_recv().ok())
                    .unwrap_or_else(|| body::response(&[], &[])),
            }
        }
    };
    xml(StatusCode::OK, reply)
}

/// A session creation request: the session and its c2s task, or the
/// condition of the terminate answer.
fn create(
    server: &Arc<Server>,
    cfg: &Arc<Listener>,
    peer: SocketAddr,
    rid: u64,
    body: &xep_support::element::Element,
    opts: &crate::config::modules::BoshOptions,
) -> Result<(Arc<Session>, tokio::sync::oneshot::Receiver<String>), &'static str> {
    let to = body
        .attr("to")
        .map(|t| t.trim().trim_end_matches('.').to_lowercase())
        .unwrap_or_default();
    if !server.serves(&to) {
        return Err("host-unknown");
    }
    let number = |name: &str, default: u64| {
        body.attr(name)
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(default)
    };
    let wait = number("wait", DEFAULT_WAIT).clamp(1, session::MAX_WAIT);
    let hold = number("hold", 1).min(session::MAX_HOLD);
    let lang = body
        .attr("xml:lang")
        .filter(|l| {
            !l.is_empty()
                && l.len() <= 35
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        .unwrap_or("en")
        .to_string();
    let params = Params {
        wait: Duration::from_secs(wait),
        hold: hold as usize,
        window: hold + 1,
        inactivity: opts.max_inactivity,
        max_pause: opts.max_pause,
        ver: session::version(body.attr("ver")),
    };
    let (s, rx) = Session::new(session::new_sid(), peer.ip(), to, lang, params, rid);
    if !session::registry().insert(s.clone(), opts.max_sessions_per_ip) {
        tracing::info!(%peer, "BOSH session refused: max_sessions_per_ip reached");
        return Err("policy-violation");
    }
    if body.attr(&xbosh("version")).is_none() {
        tracing::debug!(%peer, "BOSH session without xmpp:version (XEP-0206 clients send 1.0)");
    }
    let log = crate::conn_log::ConnLog::new("bosh");
    log.in_scope(|| tracing::info!(%peer, sid = %s.sid, wait, hold, "BOSH session created"));
    tokio::spawn(log.run(s.clone().watch()));
    let c2s = crate::c2s::handle_bosh(
        server.clone(),
        Box::new(io::BoshIo(s.clone())),
        cfg.tls,
        peer,
        cfg.clone(),
        Arc::new(io::Leftovers(s.clone())),
    );
    tokio::spawn(log.run(c2s));
    Ok((s, rx))
}
