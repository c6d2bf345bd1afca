//! XEP-0077 In-Band Registration (`mod_register`, ejabberd's options).
//!
//! - Before authentication (stream feature
//!   `http://jabber.org/features/iq-register`): `get` returns the fields,
//!   `set` with `<username/>` and `<password/>` creates the account on the
//!   stream's host, if `ip_access` allows the client's address (default:
//!   loopback only), `access` allows the new account (default `all`), the
//!   password is strong enough (`password_strength`, entropy bits, default
//!   0 = no check), and the address has not registered an account within
//!   the top-level `registration_timeout` (ejabberd's default 600 s).
//!   `welcome_message` is then sent to the new account and
//!   `registration_watchers` are told.
//! - After authentication: `get` says `<registered/>`, `set` with
//!   `<username/>` (the account's own) and `<password/>` changes the
//!   password, `set` with `<remove/>` deletes the account (if
//!   `access_remove` allows, default `all`); the result is sent, then the
//!   account's sessions are closed.
//! - `allow_modules` (ejabberd's): the modules that may create accounts.
//!   A list without `mod_register` closes open in-band registration; with
//!   `mod_invites` in it, a client that presented a valid XEP-0445
//!   invitation (`<preauth/>`, checked by `mod_invites`) still registers,
//!   from any address: the invitation is the permission (`ip_access` and
//!   the rate limit do not apply; `access` and `password_strength` do).
//! - With `redirect_url`, registration happens elsewhere: `get` returns the
//!   instructions and the URL (XEP-0077 §5, `jabber:x:oob`), `set` is refused.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::element::Element;
use crate::module::{
    AccountError, Globals, Hooks, IqRequest, IqResult, Module, PreAuthIq, ServerContext,
};
use crate::options::{Kind, ModuleSpec, OptSpec};
use crate::opts::Opts;
use crate::stanza::{Condition, ErrorType, StanzaError};

/// `jabber:iq:register`.
pub const NS_REGISTER: &str = "jabber:iq:register";
/// The stream feature announcing registration before authentication.
pub const NS_FEATURE_REGISTER: &str = "http://jabber.org/features/iq-register";
const NS_OOB: &str = "jabber:x:oob";

/// Addresses remembered for `registration_timeout` at most.
const RATE_TABLE_MAX: usize = 10_000;

/// `mod_register`.
pub struct Register {
    access: String,
    access_remove: String,
    /// `None`: the built-in default, loopback addresses only.
    ip_access: Option<String>,
    password_strength: f64,
    welcome: Option<(String, String)>,
    watchers: Vec<String>,
    redirect_url: Option<String>,
    /// `allow_modules`: `None` = all.
    allow_modules: Option<Vec<String>>,
    timeout: Option<Duration>,
    /// Last successful registration per address.
    recent: Mutex<HashMap<IpAddr, Instant>>,
}

fn yaml_str(v: &serde_yaml_ng::Value) -> Option<String> {
    match v {
        serde_yaml_ng::Value::String(s) => Some(s.clone()),
        serde_yaml_ng::Value::Number(n) => Some(n.to_string()),
        serde_yaml_ng::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The options of `mod_register` (ejabberd's).
pub const SPEC: ModuleSpec = ModuleSpec::module(
    "mod_register",
    &[
        OptSpec::honoured(
            "ip_access",
            Kind::AccessRule,
            "",
            "access rule on the client's address: who may register (default: loopback only)",
        ),
        OptSpec::honoured(
            "access",
            Kind::AccessRule,
            "all",
            "access rule on the new account and address",
        ),
        OptSpec::honoured(
            "access_remove",
            Kind::AccessRule,
            "all",
            "access rule for deleting one's own account",
        ),
        OptSpec::honoured(
            "password_strength",
            Kind::Number { min: 0.0 },
            "0",
            "minimum password entropy in bits (0: no check)",
        ),
        OptSpec::honoured(
            "welcome_message",
            Kind::Map,
            "",
            "`{subject: ..., body: ...}` sent to each new account",
        ),
        OptSpec::honoured(
            "registration_watchers",
            Kind::JidList,
            "",
            "JIDs told of each new account",
        ),
        OptSpec::honoured(
            "redirect_url",
            Kind::Text,
            "",
            "register on this web page instead",
        ),
        OptSpec::ignored(
            "access_from",
            Kind::Any,
            "registration through other servers",
        ),
        OptSpec::ignored(
            "captcha_protected",
            Kind::Any,
            "CAPTCHA before registration",
        ),
        OptSpec::honoured(
            "allow_modules",
            Kind::TextList,
            "all",
            "modules that may create accounts: `all`, or a list of `mod_register` (open in-band registration) and `mod_invites` (invitations)",
        ),
    ],
    false,
);

impl Register {
    /// Build from the module's options; returns warnings for bad values
    /// (the default is used instead).
    pub fn new(options: &serde_yaml_ng::Value, globals: &Globals) -> (Register, Vec<String>) {
        let mut o = Opts::new(options, &SPEC);
        let welcome = o.get("welcome_message").and_then(|v| {
            let get = |name: &str| v.get(name).and_then(yaml_str).unwrap_or_default();
            let (subject, body) = (get("subject"), get("body"));
            (!subject.is_empty() || !body.is_empty()).then_some((subject, body))
        });
        let r = Register {
            access: o.text("access"),
            access_remove: o.text("access_remove"),
            ip_access: o.string("ip_access"),
            password_strength: o.number("password_strength"),
            welcome,
            watchers: o.list("registration_watchers"),
            redirect_url: o.string("redirect_url").filter(|u| !u.is_empty()),
            allow_modules: {
                let list = o.list("allow_modules");
                (!list.is_empty() && !list.iter().any(|m| m == "all")).then_some(list)
            },
            timeout: globals.registration_timeout,
            recent: Mutex::new(HashMap::new()),
        };
        (r, o.warnings)
    }

    /// Whether `module` may create accounts (`allow_modules`).
    pub fn allows_module(&self, module: &str) -> bool {
        self.allow_modules
            .as_ref()
            .is_none_or(|list| list.iter().any(|m| m == module))
    }

    fn ip_allowed(&self, ctx: &dyn ServerContext, ip: IpAddr) -> bool {
        match &self.ip_access {
            Some(rule) => ctx.access_allows(rule, None, Some(ip)),
            None => ip.to_canonical().is_loopback(),
        }
    }

    /// Whether `ip` must wait before registering again.
    fn rate_limited(&self, ip: IpAddr) -> bool {
        let Some(timeout) = self.timeout else {
            return false;
        };
        let table = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        table.get(&ip).is_some_and(|t| t.elapsed() < timeout)
    }

    fn note_registration(&self, ip: IpAddr) {
        let Some(timeout) = self.timeout else {
            return;
        };
        let mut table = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if table.len() >= RATE_TABLE_MAX {
            table.retain(|_, t| t.elapsed() < timeout);
        }
        table.insert(ip, Instant::now());
    }

    fn weak(&self, password: &str) -> bool {
        self.password_strength > 0.0 && entropy(password) < self.password_strength
    }

    fn form(&self) -> Element {
        let mut q = Element::new("query", NS_REGISTER);
        match &self.redirect_url {
            Some(url) => {
                q = q
                    .with_child(
                        Element::new("instructions", NS_REGISTER)
                            .with_text(format!("To register, visit {url}")),
                    )
                    .with_child(
                        Element::new("x", NS_OOB)
                            .with_child(Element::new("url", NS_OOB).with_text(url.clone())),
                    );
            }
            None => {
                q = q
                    .with_child(
                        Element::new("instructions", NS_REGISTER).with_text(
                            "Choose a user name and password to register with this server",
                        ),
                    )
                    .with_child(Element::new("username", NS_REGISTER))
                    .with_child(Element::new("password", NS_REGISTER));
            }
        }
        q
    }

    fn welcome_and_watchers(&self, ctx: &dyn ServerContext, user: &str, host: &str, ip: IpAddr) {
        let account = format!("{user}@{host}");
        if let Some((subject, body)) = &self.welcome {
            let mut m = Element::new("message", crate::ns::CLIENT)
                .with_attr("from", host)
                .with_attr("to", account.clone())
                .with_attr("type", "normal");
            if !subject.is_empty() {
                m = m.with_child(
                    Element::new("subject", crate::ns::CLIENT).with_text(subject.clone()),
                );
            }
            m = m.with_child(Element::new("body", crate::ns::CLIENT).with_text(body.clone()));
            ctx.route(m);
        }
        for watcher in &self.watchers {
            let body = format!(
                "The account {account} was registered from IP address {} using mod_register.",
                ip.to_canonical()
            );
            ctx.route(
                Element::new("message", crate::ns::CLIENT)
                    .with_attr("from", host)
                    .with_attr("to", watcher.clone())
                    .with_attr("type", "chat")
                    .with_child(Element::new("body", crate::ns::CLIENT).with_text(body)),
            );
        }
    }
}

/// A password's entropy in bits, estimated as ejabberd does: its length
/// times log2 of the size of the character classes it uses.
pub fn entropy(password: &str) -> f64 {
    let (mut lower, mut upper, mut digit, mut printable, mut other) =
        (false, false, false, false, false);
    let mut len = 0usize;
    for c in password.chars() {
        len += 1;
        match c {
            'a'..='z' => lower = true,
            'A'..='Z' => upper = true,
            '0'..='9' => digit = true,
            c if c.is_ascii_graphic() || c == ' ' => printable = true,
            _ => other = true,
        }
    }
    let mut classes = 0u32;
    for (used, size) in [
        (lower, 26),
        (upper, 26),
        (digit, 10),
        (printable, 33),
        (other, 128),
    ] {
        if used {
            classes += size;
        }
    }
    if classes == 0 {
        return 0.0;
    }
    len as f64 * f64::from(classes).log2()
}

fn child_text(q: &Element, name: &str) -> Option<String> {
    q.child(name, NS_REGISTER).map(|e| e.text())
}

fn not_acceptable(text: &str) -> StanzaError {
    StanzaError::new(ErrorType::Modify, Condition::NotAcceptable).with_text(text)
}

/// The stanza error for a failed account operation.
pub fn account_error(e: AccountError) -> StanzaError {
    e.stanza_error()
}

impl Register {
    /// What this module's policy says against a new account `user@host`
    /// with `password` from `ip`: the `access` rule on the name,
    /// `password_strength`. (Invitations skip `ip_access` and the rate
    /// limit: the invitation is the permission.)
    pub fn policy_refuses(
        &self,
        ctx: &dyn ServerContext,
        user: &str,
        host: &str,
        password: &str,
        ip: IpAddr,
    ) -> Option<StanzaError> {
        if let Ok(n) = jid::NodePart::new(user.trim()) {
            if !ctx.access_allows(&self.access, Some((n.as_str(), host)), Some(ip)) {
                return Some(
                    StanzaError::forbidden()
                        .with_text("This user name is not allowed by the server's policy"),
                );
            }
        }
        if self.weak(password) {
            return Some(not_acceptable("The password is too weak"));
        }
        None
    }

    /// XEP-0445: registration with the invitation this stream presented.
    fn register_invited(
        &self,
        ctx: &dyn ServerContext,
        req: &PreAuthIq<'_>,
        token: &str,
    ) -> IqResult {
        let (Some(user), Some(password)) = (
            child_text(req.payload, "username"),
            child_text(req.payload, "password"),
        ) else {
            return Err(not_acceptable("A user name and a password are required"));
        };
        if let Some(e) = self.policy_refuses(ctx, &user, req.host, &password, req.ip) {
            return Err(e);
        }
        let user = crate::invites::redeem_registration(ctx, req.host, token, &user, &password)?;
        *req.preauth.lock().unwrap_or_else(|e| e.into_inner()) = None;
        tracing::info!(ip = %req.ip, "registered {user}@{} in-band with an invitation", req.host);
        self.welcome_and_watchers(ctx, &user, req.host, req.ip);
        Ok(None)
    }
}

impl Module for Register {
    fn name(&self) -> &'static str {
        "mod_register"
    }
    fn hooks(&self) -> Hooks {
        Hooks::NONE
    }
    fn disco_features(&self) -> Vec<&'static str> {
        vec![NS_REGISTER]
    }
    fn server_iq_namespaces(&self) -> Vec<&'static str> {
        vec![NS_REGISTER]
    }
    fn pre_auth_iq_namespaces(&self) -> Vec<&'static str> {
        vec![NS_REGISTER]
    }
    fn pre_auth_stream_features(
        &self,
        ctx: &dyn ServerContext,
        _host: &str,
        ip: IpAddr,
    ) -> Vec<Element> {
        if self.redirect_url.is_some()
            || (self.allows_module("mod_register") && self.ip_allowed(ctx, ip))
        {
            vec![Element::new("register", NS_FEATURE_REGISTER)]
        } else {
            Vec::new()
        }
    }

    fn handle_pre_auth_iq(&self, ctx: &dyn ServerContext, req: &PreAuthIq<'_>) -> IqResult {
        if req.payload.name != "query" {
            return Err(StanzaError::bad_request());
        }
        if !req.is_set {
            return Ok(Some(self.form()));
        }
        if self.redirect_url.is_some() {
            return Err(StanzaError::not_allowed()
                .with_text("Registration happens on the web page given in the form"));
        }
        if req.payload.child("remove", NS_REGISTER).is_some() {
            return Err(StanzaError::not_allowed().with_text("Log in to cancel your registration"));
        }
        let token = req
            .preauth
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(token) = token.filter(|_| self.allows_module("mod_invites")) {
            return self.register_invited(ctx, req, &token);
        }
        if !self.allows_module("mod_register") {
            tracing::info!(ip = %req.ip, "in-band registration without an invitation refused (allow_modules)");
            return Err(StanzaError::not_allowed()
                .with_text("This server registers new accounts by invitation only"));
        }
        if !self.ip_allowed(ctx, req.ip) {
            tracing::info!(ip = %req.ip, "in-band registration refused by ip_access");
            return Err(StanzaError::forbidden()
                .with_text("Registration from your address is not allowed by this server"));
        }
        let (Some(user), Some(password)) = (
            child_text(req.payload, "username"),
            child_text(req.payload, "password"),
        ) else {
            return Err(not_acceptable("A user name and a password are required"));
        };
        let user = match jid::NodePart::new(user.trim()) {
            Ok(n) => n.as_str().to_string(),
            Err(_) => {
                return Err(StanzaError::new(ErrorType::Modify, Condition::JidMalformed)
                    .with_text("This user name is not allowed in an address"))
            }
        };
        if password.is_empty() {
            return Err(not_acceptable("The password must not be empty"));
        }
        if !ctx.access_allows(&self.access, Some((&user, req.host)), Some(req.ip)) {
            return Err(StanzaError::forbidden()
                .with_text("This user name is not allowed by the server's policy"));
        }
        if self.weak(&password) {
            return Err(not_acceptable("The password is too weak"));
        }
        if self.rate_limited(req.ip) {
            return Err(
                StanzaError::new(ErrorType::Wait, Condition::ResourceConstraint)
                    .with_text("Too many registrations from your address; try again later"),
            );
        }
        ctx.create_account(&user, req.host, &password)
            .map_err(account_error)?;
        self.note_registration(req.ip);
        tracing::info!(ip = %req.ip, "registered {user}@{} in-band", req.host);
        self.welcome_and_watchers(ctx, &user, req.host, req.ip);
        Ok(None)
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }

    fn handle_server_iq(&self, ctx: &dyn ServerContext, req: &IqRequest<'_>) -> IqResult {
        if req.payload.name != "query" {
            return Err(StanzaError::bad_request());
        }
        let Some(node) = req.from.node() else {
            return Err(StanzaError::not_allowed());
        };
        let (user, host) = (node.as_str(), req.from.domain().as_str());
        if !req.is_set {
            return Ok(Some(
                Element::new("query", NS_REGISTER)
                    .with_child(Element::new("registered", NS_REGISTER))
                    .with_child(Element::new("username", NS_REGISTER).with_text(user))
                    .with_child(Element::new("password", NS_REGISTER)),
            ));
        }
        if req.payload.child("remove", NS_REGISTER).is_some() {
            if !ctx.access_allows(&self.access_remove, Some((user, host)), None) {
                return Err(StanzaError::forbidden()
                    .with_text("Removing accounts is not allowed by the server's policy"));
            }
            ctx.remove_account(user, host).map_err(account_error)?;
            tracing::info!("{user}@{host} cancelled its registration");
            return Ok(None);
        }
        let Some(password) = child_text(req.payload, "password") else {
            return Err(StanzaError::bad_request().with_text("A new password is required"));
        };
        if let Some(name) = child_text(req.payload, "username") {
            let same = jid::NodePart::new(name.trim())
                .map(|n| n.as_str() == user)
                .unwrap_or(false);
            if !same {
                return Err(
                    StanzaError::not_allowed().with_text("You can only change your own password")
                );
            }
        }
        if password.is_empty() {
            return Err(not_acceptable("The password must not be empty"));
        }
        if self.weak(&password) {
            return Err(not_acceptable("The password is too weak"));
        }
        ctx.change_password(user, host, &password)
            .map_err(account_error)?;
        tracing::info!("{user}@{host} changed its password in-band");
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_like_ejabberd() {
        assert_eq!(entropy(""), 0.0);
        // 8 lowercase letters: 8 * log2(26) ≈ 37.6
        assert!((entropy("abcdefgh") - 37.6).abs() < 0.1);
        assert!(entropy("Tr0ub4dor&3") > entropy("troubador"));
    }

    #[test]
    fn options_and_warnings() {
        let yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(
            "access: register\nip_access: trusted\npassword_strength: 32\n\
             welcome_message: {subject: Hi, body: Welcome}\n\
             registration_watchers: ['admin@localhost', 'not a jid@@']\n\
             redirect_url: ''\n",
        )
        .unwrap();
        let (r, warnings) = Register::new(&yaml, &Globals::default());
        assert_eq!(r.access, "register");
        assert_eq!(r.ip_access.as_deref(), Some("trusted"));
        assert_eq!(r.password_strength, 32.0);
        assert_eq!(r.welcome, Some(("Hi".into(), "Welcome".into())));
        // A list with a bad JID is refused whole (the config loader makes it
        // an error with its position; here it is a warning).
        assert!(r.watchers.is_empty());
        assert!(r.redirect_url.is_none());
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        let yaml = serde_yaml_ng::from_str("registration_watchers: [Admin@localhost]").unwrap();
        let (r2, _) = Register::new(&yaml, &Globals::default());
        assert_eq!(r2.watchers, vec!["admin@localhost".to_string()]);
        assert!(r.weak("abc"));
        assert!(!r.weak("correct horse battery staple"));
    }
}
