//! SASL2 (XEP-0388) with Bind 2 (XEP-0386) and FAST (XEP-0484) for the
//! `login` scenario's `--sasl2` and `--fast` modes: one `<authenticate/>`
//! carries the mechanism's first message, the user agent and the bind
//! request, so a SCRAM login costs two round trips after the TLS stream's
//! features and a FAST login one (no stream restart, no separate bind).
//!
//! Invariants: a FAST token is used with a count that grows with each use
//! (the server refuses a replayed count; the first use is 1), and a `<token/>` in a
//! `<success/>` (rotation) replaces the one held, count reset; the
//! server's proof (SCRAM server-final, FAST `Responder` HMAC) is checked
//! before a login counts as done. Only `HT-SHA-256-NONE` (no channel
//! binding) is used.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use sasl::client::mechanisms::Scram;
use sasl::client::Mechanism;
use sasl::common::scram::{ScramProvider, Sha256};
use sasl::common::{ChannelBinding, Credentials};
use tokio::time::Instant;

use crate::conn::{contains, ClientCfg, Conn, Error};
use crate::scram::CachedSha256;

const NS_SASL2: &str = "urn:xmpp:sasl:2";
const NS_FAST: &str = "urn:xmpp:fast:0";
/// The FAST mechanism used.
pub const FAST_MECH: &str = "HT-SHA-256-NONE";

/// A FAST token held by a returning client.
#[derive(Clone, Debug)]
pub struct Token {
    pub token: String,
    /// The count of the next use.
    pub count: u64,
}

/// How to authenticate.
pub enum Auth<'a> {
    /// SCRAM-SHA-256; `true`: ask for a FAST token.
    Scram(bool),
    /// A FAST token (updated: its count, or a rotated token).
    Fast(&'a mut Token),
}

fn err(kind: &'static str, msg: impl Into<String>) -> Error {
    Error {
        kind,
        msg: msg.into(),
    }
}

/// A stable user-agent id (UUID form) for user `n`: tokens are bound to it.
pub fn user_agent_id(n: u64) -> String {
    format!("6c6f6164-6765-4e00-8000-{n:012x}")
}

fn hmac(token: &str, label: &[u8]) -> Result<Vec<u8>, Error> {
    Sha256::hmac(label, token.as_bytes()).map_err(|e| err("auth", format!("hmac: {e:?}")))
}

/// The text of the first `<name>` element in `raw` (no nesting inside).
fn inner<'r>(raw: &'r str, name: &str) -> Option<&'r str> {
    let open = raw.find(&format!("<{name}"))?;
    let rest = &raw[open..];
    let gt = rest.find('>')?;
    if rest[..gt].ends_with('/') {
        return Some("");
    }
    let body = &rest[gt + 1..];
    let end = body.find(&format!("</{name}>"))?;
    Some(&body[..end])
}

/// Attribute `attr` of the first `<name …>` in `raw`.
fn attr<'r>(raw: &'r str, name: &str, attr: &str) -> Option<&'r str> {
    let open = raw.find(&format!("<{name} "))?;
    let tag = &raw[open..open + raw[open..].find('>')?];
    for q in ['\'', '"'] {
        if let Some(i) = tag.find(&format!(" {attr}={q}")) {
            let v = &tag[i + attr.len() + 3..];
            return v.find(q).map(|e| &v[..e]);
        }
    }
    None
}

fn decode(text: &str) -> Result<Vec<u8>, Error> {
    let t: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    if t == "=" {
        return Ok(Vec::new());
    }
    B64.decode(t)
        .map_err(|e| err("auth", format!("bad base64 from server: {e}")))
}

/// Log user `n` in over SASL2 with Bind 2 (tag `resource`); returns the
/// bound connection and, when the server issued one, a new FAST token.
pub async fn login(
    cfg: &ClientCfg,
    n: u64,
    resource: &str,
    auth: Auth<'_>,
) -> Result<(Conn, Option<Token>), Error> {
    let cfg = &*cfg.for_user(n);
    let deadline = Instant::now() + cfg.login_timeout;
    let user = cfg.user(n);
    let (mut c, _header, f) = Conn::secure(cfg, deadline).await?;
    let features = c.get(&f.raw).to_vec();
    if !contains(&features, NS_SASL2.as_bytes()) {
        return Err(err("auth", "server offers no SASL2 (XEP-0388)"));
    }
    let ua = format!(
        "<user-agent id='{}'><software>loadgen</software></user-agent>\
         <bind xmlns='urn:xmpp:bind:0'><tag>{resource}</tag></bind>",
        user_agent_id(n)
    );
    let mut scram: Option<Box<dyn Mechanism + Send>> = None;
    let mut fast_token: Option<String> = None;
    let (mech, first, extra) = match &auth {
        Auth::Scram(request) => {
            let creds = Credentials::default()
                .with_username(user.as_str())
                .with_password(cfg.password.as_str())
                .with_channel_binding(ChannelBinding::None);
            let mut m: Box<dyn Mechanism + Send> = Box::new(
                Scram::<CachedSha256>::from_credentials(creds)
                    .map_err(|e| err("auth", format!("{e:?}")))?,
            );
            let first = m.initial();
            scram = Some(m);
            let extra = if *request {
                format!("<request-token xmlns='{NS_FAST}' mechanism='{FAST_MECH}'/>")
            } else {
                String::new()
            };
            ("SCRAM-SHA-256", first, extra)
        }
        Auth::Fast(t) => {
            if !contains(&features, FAST_MECH.as_bytes()) {
                return Err(err("auth", format!("server offers no FAST {FAST_MECH}")));
            }
            let mut first = format!("{user}\0").into_bytes();
            first.extend(hmac(&t.token, b"Initiator")?);
            fast_token = Some(t.token.clone());
            let extra = format!("<fast xmlns='{NS_FAST}' count='{}'/>", t.count);
            (FAST_MECH, first, extra)
        }
    };
    let msg = format!(
        "<authenticate xmlns='{NS_SASL2}' mechanism='{mech}'><initial-response>{}</initial-response>{ua}{extra}</authenticate>",
        B64.encode(&first)
    );
    c.send(msg.as_bytes(), deadline).await?;
    let mut new_token = None;
    for _ in 0..3 {
        let u = c.recv(deadline).await?;
        let raw = String::from_utf8_lossy(c.get(&u.raw)).into_owned();
        match c.get(&u.name) {
            b"challenge" => {
                let m = scram
                    .as_mut()
                    .ok_or_else(|| err("auth", "challenge to a FAST login"))?;
                let data = decode(inner(&raw, "challenge").unwrap_or(""))?;
                let r = m
                    .response(&data)
                    .map_err(|e| err("auth", format!("bad challenge: {e:?}")))?;
                let resp = format!("<response xmlns='{NS_SASL2}'>{}</response>", B64.encode(&r));
                c.send(resp.as_bytes(), deadline).await?;
            }
            b"success" => {
                let data = decode(inner(&raw, "additional-data").unwrap_or(""))?;
                if let Some(m) = scram.as_mut() {
                    m.success(&data)
                        .map_err(|e| err("auth", format!("server signature: {e:?}")))?;
                } else if let Some(t) = &fast_token {
                    if data != hmac(t, b"Responder")? {
                        return Err(err("auth", "wrong FAST server proof"));
                    }
                }
                if let Some(t) = attr(&raw, "token", "token") {
                    new_token = Some(Token {
                        token: t.to_string(),
                        count: 1,
                    });
                }
                if !raw.contains("urn:xmpp:bind:0") {
                    return Err(err("bind", "no Bind 2 <bound/> in the SASL2 <success/>"));
                }
                if let Auth::Fast(t) = auth {
                    t.count += 1;
                }
                return Ok((c, new_token));
            }
            b"failure" => {
                return Err(err(
                    "auth",
                    format!("<failure><{}/></failure>", c.str(&u.child)),
                ))
            }
            other => {
                return Err(err(
                    "protocol",
                    format!(
                        "unexpected <{}> during SASL2",
                        String::from_utf8_lossy(other)
                    ),
                ))
            }
        }
    }
    Err(err("auth", "too many SASL2 round trips"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_success_parts() {
        let raw = "<success xmlns='urn:xmpp:sasl:2'><additional-data>dj1h</additional-data>\
                   <authorization-identifier>a@b/c</authorization-identifier>\
                   <token xmlns='urn:xmpp:fast:0' expiry='2026-01-01T00:00:00Z' token='T0k'/></success>";
        assert_eq!(inner(raw, "additional-data"), Some("dj1h"));
        assert_eq!(attr(raw, "token", "token"), Some("T0k"));
        assert_eq!(attr(raw, "token", "expiry"), Some("2026-01-01T00:00:00Z"));
        assert_eq!(decode("=").unwrap(), Vec::<u8>::new());
        assert_eq!(user_agent_id(255).len(), 36);
    }
}
