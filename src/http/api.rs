//! `mod_http_api`: `POST /api/COMMAND` with a JSON object of arguments,
//! ejabberd's ReST conventions, for every command of the `rookery ctl`
//! registry (`crate::ctl_catalog`) but those that run in `rookery ctl`
//! itself (`check`, `cert_import`) and `help`. The command runs through the
//! same runner as `rookery ctl` and XEP-0133 (`Server::command_runner`).
//!
//! Invariants:
//! - Plain HTTP only from loopback or `trusted_proxies` (else 403): the
//!   credentials travel in the request.
//! - Who calls: HTTP Basic (`user@host` and the account's password), a
//!   bearer token from `rookery ctl api_token_issue` (it acts as its
//!   account), or nobody (then only an address rule can allow). Bad
//!   credentials: 401 after the same growing per-address delay as a failed
//!   SASL login. `api_permissions` with `from: mod_http_api` then decides
//!   (default: the `configure` access rule): refused with credentials 403,
//!   without 401.
//! - Arguments are ejabberd's names, the registry's argument names in lower
//!   case (`user`, `host`, `newpass`, `localuser`...); ejabberd's renamed
//!   ones (`server`, `localserver`) are accepted. Arguments are never
//!   logged (passwords); the command, the caller and the status are.
//! - Results have ejabberd's shapes ([`shape`]); a command the table does
//!   not know (a new one) answers its text as a JSON string.

use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};

use super::{full, Body};
use crate::config::acl::Frontend;
use crate::config::Listener;
use crate::ctl::CtlOutput;
use crate::server::Server;
use crate::storage::AccountKey;

/// Largest request body.
const MAX_BODY: usize = 64 * 1024;

/// How a command's result is shaped (ejabberd's result formats).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// `0` on success, `1` on failure (HTTP 200 both).
    Rescode,
    /// The text as a JSON string; failures as errors.
    Restuple,
    /// A number.
    Integer,
    /// One JSON string per output line.
    Lines,
    /// One object per tab-separated line: the fields and whether each is
    /// a number.
    Tuples(&'static [(&'static str, bool)]),
    /// `get_roster`'s contacts.
    Roster,
}

const SESSION_FIELDS: &[(&str, bool)] = &[
    ("connection", false),
    ("ip", false),
    ("port", true),
    ("priority", true),
    ("node", false),
    ("uptime", true),
    ("status", false),
    ("resource", false),
    ("statustext", false),
];

const SESSION_FIELDS_WITH_JID: &[(&str, bool)] = &[
    ("jid", false),
    ("connection", false),
    ("ip", false),
    ("port", true),
    ("priority", true),
    ("node", false),
    ("uptime", true),
    ("status", false),
    ("resource", false),
    ("statustext", false),
];

/// ejabberd's result format of `command` (unknown ones: its text).
fn shape(command: &str) -> Shape {
    match command {
        "change_password"
        | "check_account"
        | "check_password"
        | "kick_session"
        | "send_message"
        | "send_stanza"
        | "add_rosteritem"
        | "delete_rosteritem"
        | "delete_old_messages"
        | "delete_old_mam_messages"
        | "stop"
        | "reload_config"
        | "export_piefxis"
        | "import_piefxis" => Shape::Rescode,
        "connected_users_number"
        | "kick_user"
        | "incoming_s2s_number"
        | "outgoing_s2s_number"
        | "get_offline_count"
        | "stats"
        | "stats_host"
        | "api_token_revoke" => Shape::Integer,
        "registered_users" | "registered_vhosts" | "connected_users" | "s2s_connections" => {
            Shape::Lines
        }
        "connected_users_info" => Shape::Tuples(SESSION_FIELDS_WITH_JID),
        "user_sessions_info" => Shape::Tuples(SESSION_FIELDS),
        "get_roster" => Shape::Roster,
        _ => Shape::Restuple,
    }
}

/// The JSON name of a registry argument (`NEWPASS` → `newpass`,
/// `[COMMAND]` → `command`).
fn json_name(arg: &str) -> String {
    arg.trim_matches(|c| c == '[' || c == ']' || c == '.')
        .to_ascii_lowercase()
}

fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    let mut r = Response::new(full(body.to_string()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", "application/json".parse().expect("header"));
    r
}

/// ejabberd's error body: `{"status":"error","code":N,"message":"..."}`.
fn error(status: StatusCode, code: i64, message: &str) -> Response<Body> {
    json_response(
        status,
        &json!({"status": "error", "code": code, "message": message}),
    )
}

fn unauthorized(message: &str) -> Response<Body> {
    let mut r = error(StatusCode::UNAUTHORIZED, 10, message);
    r.headers_mut().insert(
        "www-authenticate",
        "Basic realm=\"rookery\"".parse().expect("header"),
    );
    r
}

/// Who the credentials say the caller is.
enum Caller {
    Nobody,
    Account(String, String),
    /// Credentials were given and are wrong.
    Refused(&'static str),
}

/// Check the `Authorization` header (blocking: a password check hashes).
fn caller(server: &Server, header: Option<&str>) -> Caller {
    let Some(header) = header else {
        return Caller::Nobody;
    };
    let (scheme, value) = header.trim().split_once(' ').unwrap_or((header, ""));
    let value = value.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return match crate::ctl::api_tokens::lookup(server.storage.as_ref(), value) {
            Ok(Some((u, h)))
                if server
                    .storage
                    .user_exists(AccountKey::new(&h, &u))
                    .unwrap_or(false) =>
            {
                Caller::Account(u, h)
            }
            _ => Caller::Refused("Token is invalid or revoked."),
        };
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return Caller::Refused("Unsupported authorization scheme: use Basic or Bearer.");
    }
    let bad = Caller::Refused("You are not authorized to call this command.");
    let Some(decoded) = base64::engine::general_purpose::STANDARD
        .decode(value)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
    else {
        return bad;
    };
    let Some((jid, password)) = decoded.split_once(':') else {
        return bad;
    };
    let Ok(bare) = jid::BareJid::new(jid) else {
        return bad;
    };
    let (Some(user), host) = (bare.node(), bare.domain()) else {
        return bad;
    };
    if !server.serves(host.as_str()) {
        return bad;
    }
    let key = AccountKey::new(host.as_str(), user.as_str());
    match server.storage.get_credentials(key) {
        Ok(Some(creds)) if creds.verify_password(password) => {
            Caller::Account(user.to_string(), host.to_string())
        }
        _ => bad,
    }
}

/// The positional arguments of `spec` from the JSON object, or the error.
fn arguments(
    spec: &crate::ctl::CommandSpec,
    object: &serde_json::Map<String, Value>,
) -> Result<Vec<String>, String> {
    let names: Vec<String> = spec.args.iter().map(|a| json_name(a)).collect();
    let rename = |k: &str| -> String {
        match k {
            "server" => "host".to_string(),
            "localserver" => "localhost".to_string(),
            // add_rosteritem's version-1 list of groups.
            "groups" if names.iter().any(|n| n == "group") => "group".to_string(),
            other => other.to_string(),
        }
    };
    let mut given: Vec<(String, &Value)> = Vec::new();
    for (k, v) in object {
        let k = rename(k);
        if !names.contains(&k) {
            return Err(format!("Request have unknown argument: {k}"));
        }
        given.push((k, v));
    }
    let mut out = Vec::new();
    for (arg, name) in spec.args.iter().zip(&names) {
        let optional = arg.starts_with('[');
        match given.iter().find(|(k, _)| k == name) {
            Some((_, v)) => out.push(match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                Value::Array(items) => items
                    .iter()
                    .map(|i| match i {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(";"),
                Value::Null => String::new(),
                Value::Object(_) => {
                    return Err(format!("Argument {name} must be a string or a number"))
                }
            }),
            None if optional => break,
            None => return Err(format!("Missing argument: {name}")),
        }
    }
    Ok(out)
}

/// The HTTP answer for a command's result.
fn result(command: &str, out: CtlOutput) -> Response<Body> {
    use crate::ctl::commands::{EXIT_FAILED, EXIT_OK};
    let shape = shape(command);
    if out.code == EXIT_OK {
        let lines = || out.output.lines().filter(|l| !l.is_empty());
        let body = match shape {
            Shape::Rescode => json!(0),
            Shape::Restuple => json!(out.output),
            Shape::Integer => match out.output.trim().parse::<i64>() {
                Ok(n) => json!(n),
                Err(_) => json!(out.output),
            },
            Shape::Lines => Value::Array(lines().map(|l| json!(l)).collect()),
            Shape::Tuples(fields) => Value::Array(
                lines()
                    .map(|l| {
                        let mut o = serde_json::Map::new();
                        for ((name, numeric), v) in fields.iter().zip(l.split('\t')) {
                            let v = match v.parse::<i64>() {
                                Ok(n) if *numeric => json!(n),
                                _ => json!(v),
                            };
                            o.insert(name.to_string(), v);
                        }
                        Value::Object(o)
                    })
                    .collect(),
            ),
            Shape::Roster => Value::Array(
                lines()
                    .map(|l| {
                        let f: Vec<&str> = l.split('\t').collect();
                        let at = |i: usize| f.get(i).copied().unwrap_or("");
                        let groups: Vec<&str> =
                            at(4).split(';').filter(|g| !g.is_empty()).collect();
                        json!({
                            "jid": at(0),
                            "nick": at(1),
                            "subscription": at(2),
                            "pending": if at(3) == "subscribe" { "out" } else { "none" },
                            "groups": groups,
                        })
                    })
                    .collect(),
            ),
        };
        return json_response(StatusCode::OK, &body);
    }
    if out.code == EXIT_FAILED && shape == Shape::Rescode {
        return json_response(StatusCode::OK, &json!(1));
    }
    let text = out.output.trim();
    if out.code != EXIT_FAILED {
        return error(StatusCode::BAD_REQUEST, 40, text);
    }
    if text.contains("already registered") {
        return error(StatusCode::CONFLICT, 10090, text);
    }
    if text.contains("does not exist")
        || text.starts_with("Unknown virtual host")
        || text.starts_with("No session")
    {
        return error(StatusCode::NOT_FOUND, 0, text);
    }
    if text.starts_with("Database error") || text.contains("failed:") {
        return error(StatusCode::INTERNAL_SERVER_ERROR, 0, text);
    }
    error(StatusCode::BAD_REQUEST, 0, text)
}

/// Answer `POST {base}/COMMAND`.
pub async fn serve(
    server: &Arc<Server>,
    cfg: &Listener,
    base: &str,
    peer: SocketAddr,
    client: SocketAddr,
    req: Request<Incoming>,
) -> Response<Body> {
    if !cfg.tls && !super::proxy::plain_allowed(&server.config().websocket, peer) {
        return error(
            StatusCode::FORBIDDEN,
            0,
            "mod_http_api over plain HTTP is served to loopback and trusted_proxies only: use HTTPS",
        );
    }
    let path = req.uri().path().to_string();
    let name = path
        .strip_prefix(base)
        .unwrap_or("")
        .trim_matches('/')
        .to_string();
    if name.is_empty() {
        return error(StatusCode::BAD_REQUEST, 40, "Missing command name.");
    }
    let spec = match crate::ctl_catalog::find(&name) {
        Some(s) if !s.runs_locally() && s.name != "help" => s,
        _ => return error(StatusCode::NOT_FOUND, 44, "Command not found."),
    };
    if req.method() != Method::POST {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            40,
            "Use POST with a JSON object of arguments.",
        );
    }
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = match http_body_util::Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                40,
                "Request body too large or cut short.",
            )
        }
    };
    let object = if body.iter().all(u8::is_ascii_whitespace) {
        serde_json::Map::new()
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(o)) => o,
            Ok(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    40,
                    "Expected a JSON object of arguments.",
                )
            }
            Err(_) => return error(StatusCode::BAD_REQUEST, 40, "Invalid JSON input"),
        }
    };
    let args = match arguments(spec, &object) {
        Ok(a) => a,
        Err(why) => return error(StatusCode::BAD_REQUEST, 40, &why),
    };
    let checker = server.clone();
    let who = tokio::task::spawn_blocking(move || caller(&checker, auth.as_deref()))
        .await
        .unwrap_or(Caller::Refused("internal error"));
    let user = match &who {
        Caller::Refused(why) => {
            let delay = server.auth_failed(client.ip());
            tokio::time::sleep(delay).await;
            tracing::info!(peer = %client, command = %name, "API call refused: bad credentials");
            return unauthorized(why);
        }
        Caller::Account(u, h) => Some((u.as_str(), h.as_str())),
        Caller::Nobody => None,
    };
    let ip = client.ip().to_canonical();
    if !server
        .config()
        .api_allows(Frontend::HttpApi, user, Some(ip), spec.name)
    {
        tracing::info!(peer = %client, command = %name, user = ?user, "API call refused by api_permissions");
        return match user {
            None => unauthorized("You are not authorized to call this command."),
            Some(_) => error(
                StatusCode::FORBIDDEN,
                32,
                "AccessRules: Account does not have the right to perform the operation.",
            ),
        };
    }
    if let Caller::Account(_, _) = who {
        server.auth_succeeded(client.ip());
    }
    let Some(runner) = server.command_runner().cloned() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            0,
            "commands are not available",
        );
    };
    let command = spec.name;
    let out = tokio::task::spawn_blocking(move || runner(command, &args))
        .await
        .map(|o| CtlOutput {
            code: o.code,
            output: o.output,
        })
        .unwrap_or_else(|_| CtlOutput::failed("Database error: the command crashed"));
    tracing::info!(peer = %client, command = %name, user = ?user, code = out.code, "API call");
    result(command, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_registry_argument_has_a_lowercase_json_name() {
        for spec in crate::ctl_catalog::commands() {
            for arg in spec.args {
                let n = json_name(arg);
                assert!(
                    !n.is_empty() && n.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                    "{arg}"
                );
            }
        }
        assert_eq!(json_name("NEWPASS"), "newpass");
        assert_eq!(json_name("[DIR...]"), "dir");
    }

    #[test]
    fn arguments_by_ejabberd_names() {
        let spec = crate::ctl_catalog::find("add_rosteritem").unwrap();
        let obj: serde_json::Map<String, Value> = serde_json::from_str(
            r#"{"localuser":"a","localserver":"h","user":"b","server":"h","nick":"B","groups":["x","y"],"subs":"both"}"#,
        )
        .unwrap();
        assert_eq!(
            arguments(spec, &obj).unwrap(),
            ["a", "h", "b", "h", "B", "x;y", "both"]
        );
        let spec = crate::ctl_catalog::find("delete_old_messages").unwrap();
        let obj = serde_json::from_str(r#"{"days": 30}"#).unwrap();
        assert_eq!(arguments(spec, &obj).unwrap(), ["30"]);
        let obj = serde_json::from_str(r#"{"days": 30, "colour": "red"}"#).unwrap();
        assert!(arguments(spec, &obj).unwrap_err().contains("colour"));
        let obj = serde_json::Map::new();
        assert_eq!(arguments(spec, &obj).unwrap_err(), "Missing argument: days");
    }

    #[test]
    fn results_have_ejabberd_shapes() {
        let body = |r: Response<Body>| {
            let status = r.status().as_u16();
            let b = futures_util::FutureExt::now_or_never(r.into_body().collect())
                .unwrap()
                .unwrap()
                .to_bytes();
            (status, serde_json::from_slice::<Value>(&b).unwrap())
        };
        assert_eq!(
            body(result("check_account", CtlOutput::ok(""))),
            (200, json!(0))
        );
        assert_eq!(
            body(result(
                "check_account",
                CtlOutput::failed("User a@b does not exist")
            )),
            (200, json!(1))
        );
        assert_eq!(
            body(result("registered_users", CtlOutput::ok("alice\nbob"))),
            (200, json!(["alice", "bob"]))
        );
        assert_eq!(
            body(result("registered_users", CtlOutput::ok(""))),
            (200, json!([]))
        );
        assert_eq!(
            body(result("get_offline_count", CtlOutput::ok("3"))),
            (200, json!(3))
        );
        let (s, v) = body(result(
            "register",
            CtlOutput::failed("User a@h already registered"),
        ));
        assert_eq!(
            (s, &v["status"], &v["code"]),
            (409, &json!("error"), &json!(10090))
        );
        assert_eq!(
            body(result(
                "register",
                CtlOutput::failed("Unknown virtual host: x")
            ))
            .0,
            404
        );
        assert_eq!(
            body(result(
                "user_sessions_info",
                CtlOutput::ok("c2s_tls\t127.0.0.1\t5\t0\tn\t7\tavailable\tr\t")
            ))
            .1,
            json!([{"connection":"c2s_tls","ip":"127.0.0.1","port":5,"priority":0,"node":"n","uptime":7,"status":"available","resource":"r","statustext":""}])
        );
        assert_eq!(
            body(result(
                "get_roster",
                CtlOutput::ok("b@h\tB\tboth\tnone\tx;y")
            ))
            .1,
            json!([{"jid":"b@h","nick":"B","subscription":"both","pending":"none","groups":["x","y"]}])
        );
        // A command the table does not know: its text.
        assert_eq!(
            body(result("some_new_command", CtlOutput::ok("done"))),
            (200, json!("done"))
        );
    }
}
