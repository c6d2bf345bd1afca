//! `mod_invites`' web pages on an `ejabberd_http` listener (request handler
//! `/invites: mod_invites`): for `GET PATH/TOKEN` a landing page with the
//! invitation's `xmpp:` URI, its QR code (the `qrcode` crate's SVG) and
//! recommended clients per platform; for `PATH/TOKEN/register` a small
//! registration form (or, for a reset link, a new-password form) for people
//! whose client cannot use XEP-0401 invitations.
//!
//! Invariants:
//! - Everything shown that comes from a request, the configuration or the
//!   store passes through [`esc`]; the SVG comes from the QR crate only.
//! - A form POST is accepted only with a CSRF proof bound to this
//!   invitation: the form carries `nonce` (issue time + 16 random bytes)
//!   and `csrf` = HMAC-SHA-256(process key, token hash ‖ nonce), and the
//!   same nonce must come back in the `rookery_invite` cookie (SameSite=Strict),
//!   within [`FORM_TTL`]. The key is random per server process.
//! - Redemption goes through `xep_support::invites::redeem_registration`
//!   (the one atomic path IBR uses too), off the async workers.
//! - Responses are never cached and send no Referer (the token is in the URL).

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use hmac::{Hmac, Mac};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use xep_support::invites::token::{self, Invalid, Invite, Kind};
use xep_support::invites::Invites;

use super::{full, Body};
use crate::server::Server;

/// How long a served form may be submitted.
pub const FORM_TTL: u64 = 3600;
/// Largest form body read.
const MAX_FORM: usize = 8 * 1024;
const COOKIE: &str = "rookery_invite";

/// Clients recommended per platform: (platform, name, URL).
const CLIENTS: &[(&str, &str, &str)] = &[
    ("Android", "Conversations", "https://conversations.im/"),
    ("Android", "Monocles Chat", "https://monocles.eu/"),
    ("iPhone and iPad", "Monal", "https://monal-im.org/"),
    ("Windows", "Gajim", "https://gajim.org/"),
    ("Linux", "Dino", "https://dino.im/"),
    ("Linux", "Gajim", "https://gajim.org/"),
    ("macOS", "Monal", "https://monal-im.org/"),
];

/// HTML-escape text and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn key() -> &'static [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    KEY.get_or_init(|| {
        use rand::RngCore as _;
        let mut k = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut k);
        k
    })
}

/// The CSRF proof for a form of the invitation whose token hashes to
/// `token_hash`, with `nonce`.
pub fn csrf_proof(token_hash: &str, nonce: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key()).expect("any key length");
    mac.update(token_hash.as_bytes());
    mac.update(b"\0");
    mac.update(nonce.as_bytes());
    token::hex(&mac.finalize().into_bytes())
}

fn new_nonce(now: u64) -> String {
    use rand::RngCore as _;
    let mut r = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut r);
    format!("{now}.{}", token::hex(&r))
}

/// Whether a submitted form's CSRF fields are good at `now`.
pub fn csrf_ok(token_hash: &str, nonce: &str, proof: &str, cookie: Option<&str>, now: u64) -> bool {
    let Some((issued, _)) = nonce.split_once('.') else {
        return false;
    };
    let fresh = issued
        .parse::<u64>()
        .is_ok_and(|t| t <= now && now - t <= FORM_TTL);
    let expected = csrf_proof(token_hash, nonce);
    fresh && cookie == Some(nonce) && bool::from(expected.as_bytes().ct_eq(proof.as_bytes()))
}

fn page(status: StatusCode, title: &str, body: &str, cookie: Option<String>) -> Response<Body> {
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>body{{font-family:sans-serif;max-width:40em;margin:2em auto;padding:0 1em;line-height:1.5}}\
         .qr svg{{width:220px;height:220px}} code{{word-break:break-all}} .error{{color:#a00}}\
         label{{display:block;margin-top:.8em}} input{{font-size:1em}}</style></head><body>\n{body}\n</body></html>\n",
        esc(title)
    );
    let mut r = Response::new(full(html));
    *r.status_mut() = status;
    let h = r.headers_mut();
    let set = |h: &mut hyper::HeaderMap, k: &'static str, v: &str| {
        if let Ok(v) = v.parse() {
            h.insert(k, v);
        }
    };
    set(h, "content-type", "text/html; charset=utf-8");
    set(h, "cache-control", "no-store");
    set(h, "referrer-policy", "no-referrer");
    set(h, "x-content-type-options", "nosniff");
    set(h, "x-frame-options", "DENY");
    set(
        h,
        "content-security-policy",
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; frame-ancestors 'none'",
    );
    if let Some(c) = cookie {
        set(h, "set-cookie", &c);
    }
    r
}

fn error_page(status: StatusCode, text: &str) -> Response<Body> {
    page(
        status,
        "Invitation",
        &format!("<h1>Invitation</h1><p class=\"error\">{}</p>", esc(text)),
        None,
    )
}

/// The served host whose invitation `token` is, with it (usable or not).
fn find(server: &Server, token: &str) -> Result<(String, Invite), Invalid> {
    let store = xep_support::store::ModuleStore::new(server.module_access(), token::MODULE);
    let mut last = Invalid::Unknown;
    for host in &server.config().hosts {
        match token::check(store, host, token) {
            Ok(invite) => return Ok((host.clone(), invite)),
            Err(Invalid::Unknown) => {}
            Err(why) => last = why,
        }
    }
    Err(last)
}

fn invalid_page(why: Invalid) -> Response<Body> {
    let status = match why {
        Invalid::Malformed => StatusCode::BAD_REQUEST,
        Invalid::Store => StatusCode::INTERNAL_SERVER_ERROR,
        Invalid::Expired | Invalid::Used => StatusCode::GONE,
        Invalid::Unknown => StatusCode::NOT_FOUND,
    };
    error_page(status, why.text())
}

fn qr_svg(uri: &str) -> String {
    match qrcode::QrCode::new(uri.as_bytes()) {
        Ok(code) => {
            let svg = code
                .render::<qrcode::render::svg::Color>()
                .min_dimensions(220, 220)
                .build();
            // Inline in HTML: without the XML declaration.
            match svg.find("<svg") {
                Some(i) => svg[i..].to_string(),
                None => String::new(),
            }
        }
        Err(e) => {
            tracing::error!("invitation QR code: {e}");
            String::new()
        }
    }
}

/// Serve a request under the listener's `mod_invites` path `base`.
pub async fn serve(
    server: &Arc<Server>,
    base: &str,
    client: SocketAddr,
    req: Request<Incoming>,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    let Some(rest) = path.strip_prefix(base).and_then(|r| r.strip_prefix('/')) else {
        return error_page(
            StatusCode::NOT_FOUND,
            "Open the invitation link you were sent.",
        );
    };
    let rest = rest.trim_end_matches('/');
    let (tok, action) = match rest.split_once('/') {
        Some((t, a)) => (t.to_string(), a.to_string()),
        None => (rest.to_string(), String::new()),
    };
    if !token::well_formed(&tok) {
        return invalid_page(Invalid::Malformed);
    }
    let live = server.live();
    let Some(invites) = live
        .modules
        .iter()
        .find_map(|m| m.as_any()?.downcast_ref::<Invites>())
    else {
        return error_page(
            StatusCode::NOT_FOUND,
            "Invitations are not enabled on this server.",
        );
    };
    let (host, invite) = match find(server, &tok) {
        Ok(found) => found,
        Err(why) => return invalid_page(why),
    };
    let site = invites.site_name(&host);
    let page_base = format!("{base}/{tok}");
    match (req.method().clone(), action.as_str()) {
        (Method::GET | Method::HEAD, "") => landing(&site, &invite, &tok, &page_base),
        (Method::GET | Method::HEAD, "register") => {
            form(&site, &invite, &tok, &page_base, None, "")
        }
        (Method::POST, "register") => {
            submit(server, &site, &host, invite, tok, &page_base, client, req).await
        }
        (_, "" | "register") => error_page(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed."),
        _ => error_page(StatusCode::NOT_FOUND, "Not found."),
    }
}

fn landing(site: &str, invite: &Invite, tok: &str, page_base: &str) -> Response<Body> {
    let uri = invite.uri(tok);
    let mut body = String::new();
    let what = match invite.kind {
        Kind::Reset => "Set a new password for your account",
        Kind::Roster => "You have been invited to chat",
        Kind::Register => "You have been invited to join",
    };
    body.push_str(&format!("<h1>{} — {}</h1>", esc(what), esc(site)));
    if let Some(inviter) = &invite.inviter {
        body.push_str(&format!(
            "<p>{} invites you to chat with them on {}.</p>",
            esc(&format!("{inviter}@{}", invite.host)),
            esc(site)
        ));
    }
    if invite.kind != Kind::Reset {
        body.push_str(
            "<h2>1. Install a chat app</h2><p>Any XMPP app works; these understand invitations:</p><ul>",
        );
        for (platform, name, url) in CLIENTS {
            body.push_str(&format!(
                "<li>{}: <a href=\"{}\" rel=\"noopener noreferrer\">{}</a></li>",
                esc(platform),
                esc(url),
                esc(name)
            ));
        }
        body.push_str("</ul><h2>2. Open the invitation in the app</h2>");
    }
    body.push_str(&format!(
        "<p><a href=\"{0}\">Open in your chat app</a>, or scan this code with it:</p>\
         <div class=\"qr\">{1}</div><p>The invitation link: <code>{0}</code></p>",
        esc(&uri),
        qr_svg(&uri)
    ));
    if invite.kind != Kind::Roster {
        let label = if invite.kind == Kind::Reset {
            "Set the new password in your browser"
        } else {
            "No app that understands invitations? Create your account in your browser"
        };
        body.push_str(&format!(
            "<p><a href=\"{}/register\">{}</a></p>",
            esc(page_base),
            esc(label)
        ));
    }
    page(StatusCode::OK, site, &body, None)
}

fn form(
    site: &str,
    invite: &Invite,
    tok: &str,
    page_base: &str,
    error: Option<&str>,
    username: &str,
) -> Response<Body> {
    if invite.kind == Kind::Roster {
        return error_page(
            StatusCode::NOT_FOUND,
            "This invitation adds a contact; open it in your chat app.",
        );
    }
    let nonce = new_nonce(token::now());
    let proof = csrf_proof(&token::hash(tok), &nonce);
    let reset = invite.kind == Kind::Reset;
    let mut body = format!(
        "<h1>{} — {}</h1>",
        if reset {
            "New password"
        } else {
            "Create your account"
        },
        esc(site)
    );
    if let Some(e) = error {
        body.push_str(&format!("<p class=\"error\">{}</p>", esc(e)));
    }
    let fixed = invite.account.as_deref();
    let name = fixed.unwrap_or(username);
    body.push_str(&format!(
        "<form method=\"post\" action=\"{}/register\">\
         <input type=\"hidden\" name=\"nonce\" value=\"{}\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <label>User name <input name=\"username\" value=\"{}\" required autocomplete=\"username\"{}> @{}</label>\
         <label>Password <input type=\"password\" name=\"password\" required autocomplete=\"new-password\"></label>\
         <label>Password again <input type=\"password\" name=\"password2\" required autocomplete=\"new-password\"></label>\
         <p><button type=\"submit\">{}</button></p></form>",
        esc(page_base),
        esc(&nonce),
        esc(&proof),
        esc(name),
        if fixed.is_some() { " readonly" } else { "" },
        esc(&invite.host),
        if reset { "Set password" } else { "Create account" }
    ));
    let cookie = format!(
        "{COOKIE}={nonce}; Path={}; Max-Age={FORM_TTL}; HttpOnly; Secure; SameSite=Strict",
        page_base
    );
    page(StatusCode::OK, site, &body, Some(cookie))
}

/// `application/x-www-form-urlencoded` fields.
pub fn parse_form(body: &str) -> Vec<(String, String)> {
    body.split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Some((decode(k)?, decode(v)?))
        })
        .collect()
}

fn decode(s: &str) -> Option<String> {
    super::percent_decode(&s.replace('+', " "))
}

fn cookie_value<'a>(req: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    req.headers()
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[allow(clippy::too_many_arguments)]
async fn submit(
    server: &Arc<Server>,
    site: &str,
    host: &str,
    invite: Invite,
    tok: String,
    page_base: &str,
    client: SocketAddr,
    req: Request<Incoming>,
) -> Response<Body> {
    let cookie = cookie_value(&req, COOKIE).map(str::to_string);
    let declared = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_FORM) {
        return error_page(StatusCode::PAYLOAD_TOO_LARGE, "The form is too large.");
    }
    let body = match http_body_util::Limited::new(req.into_body(), MAX_FORM)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => return error_page(StatusCode::PAYLOAD_TOO_LARGE, "The form is too large."),
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return error_page(StatusCode::BAD_REQUEST, "The form is not UTF-8.");
    };
    let fields = parse_form(text);
    let get = |k: &str| {
        fields
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    if !csrf_ok(
        &token::hash(&tok),
        get("nonce"),
        get("csrf"),
        cookie.as_deref(),
        token::now(),
    ) {
        tracing::info!(%client, "invitation form refused: missing or bad CSRF proof");
        return error_page(
            StatusCode::FORBIDDEN,
            "This form has expired or did not come from this page. Open the invitation link again.",
        );
    }
    let (user, password) = (get("username").to_string(), get("password").to_string());
    if password != get("password2") {
        return form(
            site,
            &invite,
            &tok,
            page_base,
            Some("The two passwords differ."),
            &user,
        );
    }
    if let Some(why) = registration_refused(server, host, &user, &password, client, &invite) {
        return form(site, &invite, &tok, page_base, Some(&why), &user);
    }
    let srv = server.clone();
    let host_owned = host.to_string();
    let tok_owned = tok.clone();
    let result = tokio::task::spawn_blocking(move || {
        xep_support::invites::redeem_registration(
            srv.as_ref(),
            &host_owned,
            &tok_owned,
            &user,
            &password,
        )
        .map_err(|e| (e, user))
    })
    .await;
    match result {
        Ok(Ok(user)) => {
            tracing::info!(%client, "{user}@{host} used an invitation on the web");
            let done = if invite.kind == Kind::Reset {
                "Your new password is set."
            } else {
                "Your account is ready."
            };
            page(
                StatusCode::OK,
                site,
                &format!(
                    "<h1>{}</h1><p>Log in with your chat app as <code>{}</code>.</p>",
                    esc(done),
                    esc(&format!("{user}@{host}"))
                ),
                None,
            )
        }
        Ok(Err((e, user))) => {
            let text = e
                .text
                .clone()
                .unwrap_or_else(|| "The server refused.".into());
            match e.condition {
                xep_support::stanza::Condition::ItemNotFound => error_page(StatusCode::GONE, &text),
                _ => form(site, &invite, &tok, page_base, Some(&text), &user),
            }
        }
        Err(e) => {
            tracing::error!("invitation registration task: {e}");
            error_page(StatusCode::INTERNAL_SERVER_ERROR, "The server failed.")
        }
    }
}

/// What `mod_register`'s policy says against this web registration:
/// `allow_modules` without `mod_invites`, its `access` rule on the user
/// name, its `password_strength`.
fn registration_refused(
    server: &Server,
    host: &str,
    user: &str,
    password: &str,
    client: SocketAddr,
    invite: &Invite,
) -> Option<String> {
    let live = server.live();
    let register = live.modules.iter().find_map(|m| {
        m.as_any()?
            .downcast_ref::<xep_support::register::Register>()
    })?;
    if invite.kind == Kind::Register && !register.allows_module("mod_invites") {
        return Some("This server does not create accounts from invitations.".into());
    }
    register
        .policy_refuses(server, user, host, password, client.ip())
        .and_then(|e| e.text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(
            esc("<script>\"x\" & 'y'</script>"),
            "&lt;script&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/script&gt;"
        );
    }

    #[test]
    fn csrf_is_bound_to_the_invitation_nonce_cookie_and_time() {
        let h = token::hash(&token::new_token());
        let other = token::hash(&token::new_token());
        let now = 1_000_000;
        let nonce = new_nonce(now);
        let proof = csrf_proof(&h, &nonce);
        assert!(csrf_ok(&h, &nonce, &proof, Some(&nonce), now + 10));
        assert!(!csrf_ok(&other, &nonce, &proof, Some(&nonce), now + 10));
        assert!(!csrf_ok(&h, &nonce, &proof, None, now + 10));
        assert!(!csrf_ok(&h, &nonce, &proof, Some("1.00"), now + 10));
        assert!(!csrf_ok(&h, &nonce, "", Some(&nonce), now + 10));
        assert!(!csrf_ok(
            &h,
            &nonce,
            &proof,
            Some(&nonce),
            now + FORM_TTL + 1
        ));
        let forged = new_nonce(now);
        assert!(!csrf_ok(&h, &forged, &proof, Some(&forged), now + 10));
    }

    #[test]
    fn forms_parse() {
        assert_eq!(
            parse_form("username=a%40b&password=p+w&x"),
            vec![
                ("username".into(), "a@b".into()),
                ("password".into(), "p w".into()),
                ("x".into(), String::new())
            ]
        );
    }

    #[test]
    fn qr_is_an_svg() {
        let svg = qr_svg("xmpp:example.org?register;preauth=abc");
        assert!(svg.starts_with("<svg"), "{svg}");
    }
}
