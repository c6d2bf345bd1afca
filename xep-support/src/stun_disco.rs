//! XEP-0215 External Service Discovery (`mod_stun_disco`, ejabberd's name
//! and options): tells clients which STUN/TURN servers to use for calls
//! (`<services xmlns='urn:xmpp:extdisco:2'/>`, optionally filtered by
//! `type`) and hands out time-limited TURN credentials (`<credentials/>`
//! for one service).
//!
//! Credentials follow the "REST API for access to TURN services"
//! convention that coturn (`use-auth-secret` + `static-auth-secret`) and
//! other TURN servers accept: the username is `EXPIRY:NAME` (EXPIRY in Unix
//! seconds) and the password is base64(HMAC-SHA1(secret, username)), so the
//! TURN server checks them with the shared `secret` alone, and refuses them
//! once EXPIRY has passed. NAME is a pseudonym of the account (the first 8
//! bytes of HMAC-SHA1(secret, bare JID), hex), so TURN server logs do not
//! carry JIDs but one account's allocations can still be told apart.
//!
//! Invariants: services are exactly those configured (Rookery has no STUN
//! or TURN listener of its own, so `offer_local_services` has nothing to
//! add); credentials are handed out only for `restricted` services, only to
//! entities the `access` rule allows (default: accounts of this server);
//! the config loader (`src/config/stun_disco.rs`) has already refused a
//! malformed service, a zero or infinite lifetime, and restricted services
//! without a `secret`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde_yaml_ng::Value;
use sha1::Sha1;

use crate::element::Element;
use crate::module::{Hooks, IqRequest, IqResult, Module, ServerContext};
use crate::options::{Kind, ModuleSpec, OptSpec, Use};
use crate::opts::Opts;
use crate::stanza::StanzaError;

/// The XEP-0215 namespace (version 2).
pub const NS: &str = "urn:xmpp:extdisco:2";

/// The options of `mod_stun_disco` (ejabberd's).
pub const SPEC: ModuleSpec = ModuleSpec::module(
    "mod_stun_disco",
    &[
        OptSpec::honoured(
            "services",
            Kind::MapList,
            "",
            "the STUN/TURN services offered: a list of {host, port, type, transport, restricted}",
        ),
        OptSpec::honoured(
            "secret",
            Kind::Text,
            "",
            "the secret shared with the TURN server (coturn's `static-auth-secret`); required with restricted services",
        ),
        OptSpec::honoured(
            "credentials_lifetime",
            Kind::Timeout,
            "43200",
            "how long handed-out TURN credentials are valid (12 hours)",
        ),
        OptSpec::honoured(
            "access",
            Kind::AccessRule,
            "local",
            "who may discover the services and get credentials (unset: accounts of this server)",
        ),
        OptSpec {
            name: "offer_local_services",
            kind: Kind::Bool,
            default: "",
            doc: "announce the server's own STUN/TURN listeners; Rookery has none (run coturn, see docs/admin.md), so only `services` are offered",
            used: Use::Fixed("false"),
        },
    ],
    false,
);

/// Default TURN/STUN port, and for the TLS variants.
const PORT: u16 = 3478;
const TLS_PORT: u16 = 5349;

/// What a service is (XEP-0215's registry values Rookery configures).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceType {
    Stun,
    Turn,
    Stuns,
    Turns,
}

impl ServiceType {
    pub const WORDS: [&'static str; 4] = ["stun", "turn", "stuns", "turns"];

    pub fn parse(s: &str) -> Option<ServiceType> {
        Some(match s {
            "stun" => ServiceType::Stun,
            "turn" => ServiceType::Turn,
            "stuns" => ServiceType::Stuns,
            "turns" => ServiceType::Turns,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        Self::WORDS[self as usize]
    }
    /// `stuns`/`turns`: over TLS.
    pub fn is_tls(self) -> bool {
        matches!(self, ServiceType::Stuns | ServiceType::Turns)
    }
    /// `turn`/`turns`: a relay.
    pub fn is_turn(self) -> bool {
        matches!(self, ServiceType::Turn | ServiceType::Turns)
    }
}

/// One configured service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// Host name or IP address, as clients are to use it.
    pub host: String,
    pub port: u16,
    pub kind: ServiceType,
    /// `true`: TCP, `false`: UDP.
    pub tcp: bool,
    /// Whether credentials are handed out for it.
    pub restricted: bool,
}

/// Why a service entry is wrong: the key at fault (`None`: the entry) and
/// what was expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceError {
    pub key: Option<String>,
    pub expected: String,
}

fn bad(key: &str, expected: impl Into<String>) -> ServiceError {
    ServiceError {
        key: Some(key.to_string()),
        expected: expected.into(),
    }
}

/// Read one entry of `services` (ejabberd's defaults: type `stun`; port
/// 3478, or 5349 for `stuns`/`turns`; transport `udp`, or `tcp` for the TLS
/// types; `restricted` true for TURN, false for STUN).
pub fn parse_service(v: &Value) -> Result<Service, ServiceError> {
    let Some(map) = v.as_mapping() else {
        return Err(ServiceError {
            key: None,
            expected: "a map with host and optionally port, type, transport, restricted".into(),
        });
    };
    for k in map.keys() {
        let name = k.as_str().unwrap_or("");
        if !matches!(name, "host" | "port" | "type" | "transport" | "restricted") {
            return Err(bad(
                name,
                "one of the keys host, port, type, transport, restricted",
            ));
        }
    }
    let text = |key: &str| -> Option<String> {
        map.get(key).map(|v| match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => String::new(),
        })
    };
    let host = text("host").ok_or(ServiceError {
        key: None,
        expected: "a `host` (the STUN/TURN server's IP address or name)".into(),
    })?;
    if host.is_empty()
        || host.len() > 253
        || host
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "/@?#[]".contains(c))
    {
        return Err(bad("host", "an IP address or a host name"));
    }
    let kind = match text("type") {
        None => ServiceType::Stun,
        Some(t) => {
            ServiceType::parse(&t).ok_or_else(|| bad("type", "stun, turn, stuns or turns"))?
        }
    };
    let port = match map.get("port") {
        None => {
            if kind.is_tls() {
                TLS_PORT
            } else {
                PORT
            }
        }
        Some(p) => p
            .as_u64()
            .or_else(|| p.as_str().and_then(|s| s.parse().ok()))
            .filter(|p| (1..=65535).contains(p))
            .ok_or_else(|| bad("port", "a port number from 1 to 65535"))? as u16,
    };
    let tcp = match text("transport").as_deref() {
        None => kind.is_tls(),
        Some("udp") => false,
        Some("tcp") => true,
        Some(_) => return Err(bad("transport", "udp or tcp")),
    };
    if kind.is_tls() && !tcp {
        return Err(bad(
            "transport",
            "tcp for stuns/turns (TLS runs over TCP; DTLS is not a XEP-0215 transport)",
        ));
    }
    let restricted = match map.get("restricted") {
        None => kind.is_turn(),
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => match s.as_str() {
            "true" | "yes" | "on" => true,
            "false" | "no" | "off" => false,
            _ => return Err(bad("restricted", "true or false")),
        },
        Some(_) => return Err(bad("restricted", "true or false")),
    };
    Ok(Service {
        host,
        port,
        kind,
        tcp,
        restricted,
    })
}

/// The services of a `mod_stun_disco` options value, the malformed ones
/// left out with a message each (the loader refuses them first).
pub fn services_of(options: &Value) -> (Vec<Service>, Vec<String>) {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    if let Some(items) = options.get("services").and_then(Value::as_sequence) {
        for (i, item) in items.iter().enumerate() {
            match parse_service(item) {
                Ok(s) => out.push(s),
                Err(e) => errors.push(format!(
                    "services[{i}]{}: expected {}; entry ignored",
                    e.key.map(|k| format!(".{k}")).unwrap_or_default(),
                    e.expected
                )),
            }
        }
    }
    (out, errors)
}

/// `mod_stun_disco`.
pub struct StunDisco {
    pub services: Vec<Service>,
    secret: Vec<u8>,
    /// How long credentials are valid.
    pub lifetime: Duration,
    /// The `access` rule; `None`: accounts of this server's hosts.
    access: Option<String>,
}

impl StunDisco {
    /// Read the options; bad values become warnings.
    pub fn from_opts(o: &mut Opts<'_>, options: &Value) -> StunDisco {
        let (services, errors) = services_of(options);
        o.get("services");
        o.warnings.extend(errors);
        o.bool("offer_local_services");
        let secret = match o.string("secret").filter(|s| !s.is_empty()) {
            Some(s) => s.into_bytes(),
            None => {
                if services.iter().any(|s| s.restricted) {
                    o.warnings.push(
                        "restricted services but no `secret`: the credentials handed out are \
                         signed with a random secret no TURN server knows"
                            .into(),
                    );
                }
                let mut s = vec![0u8; 20];
                rand::thread_rng().fill_bytes(&mut s);
                s
            }
        };
        let lifetime = o
            .timeout("credentials_lifetime")
            .filter(|d| d.as_secs() > 0)
            .unwrap_or(Duration::from_secs(43_200));
        StunDisco {
            services,
            secret,
            lifetime,
            access: o.string("access"),
        }
    }

    /// A module with these services, secret and lifetime (tests, tools).
    pub fn new(services: Vec<Service>, secret: &str, lifetime: Duration) -> StunDisco {
        StunDisco {
            services,
            secret: secret.as_bytes().to_vec(),
            lifetime,
            access: None,
        }
    }

    fn hmac(&self, data: &[u8]) -> [u8; 20] {
        let mut mac = Hmac::<Sha1>::new_from_slice(&self.secret).expect("any key length");
        mac.update(data);
        mac.finalize().into_bytes().into()
    }

    /// TURN REST credentials for `account` (a bare JID) expiring at `expiry`
    /// (Unix seconds): (username, password).
    pub fn credentials(&self, account: &str, expiry: u64) -> (String, String) {
        let name: String = self.hmac(account.as_bytes())[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let username = format!("{expiry}:{name}");
        let password =
            base64::engine::general_purpose::STANDARD.encode(self.hmac(username.as_bytes()));
        (username, password)
    }

    /// The `<service/>` element for `s`, with credentials for `account`
    /// when it is restricted.
    fn service_element(&self, s: &Service, account: &str, now: u64) -> Element {
        let mut e = Element::new("service", NS)
            .with_attr("host", s.host.clone())
            .with_attr("port", s.port.to_string())
            .with_attr("type", s.kind.as_str())
            .with_attr("transport", if s.tcp { "tcp" } else { "udp" });
        if s.restricted {
            let expiry = now.saturating_add(self.lifetime.as_secs());
            let (username, password) = self.credentials(account, expiry);
            e = e
                .with_attr("restricted", "true")
                .with_attr("username", username)
                .with_attr("password", password)
                .with_attr(
                    "expires",
                    crate::date::xep0082(i64::try_from(expiry).unwrap_or(i64::MAX), 0),
                );
        }
        e
    }

    fn allowed(&self, ctx: &dyn ServerContext, req: &IqRequest<'_>) -> bool {
        let domain = req.from.domain().as_str();
        match &self.access {
            None => ctx.hosts().iter().any(|h| h == domain),
            Some(rule) => {
                let node = req.from.node().map(|n| n.as_str()).unwrap_or("");
                ctx.access_allows(rule, Some((node, domain)), None)
            }
        }
    }

    /// Answer a `<services/>` or `<credentials/>` get from `account` at `now`.
    pub fn answer(&self, payload: &Element, account: &str, now: u64) -> IqResult {
        match payload.name.as_str() {
            "services" => {
                let wanted = payload.attr("type");
                let mut out = Element::new("services", NS);
                if let Some(t) = wanted {
                    out = out.with_attr("type", t);
                }
                for s in &self.services {
                    if wanted.is_none_or(|t| t == s.kind.as_str()) {
                        out = out.with_child(self.service_element(s, account, now));
                    }
                }
                Ok(Some(out))
            }
            "credentials" => {
                let mut asked = payload.child_elements().filter(|c| c.name == "service");
                let (Some(q), None) = (asked.next(), asked.next()) else {
                    return Err(StanzaError::bad_request()
                        .with_text("expected one <service host='…' type='…'/> in <credentials/>"));
                };
                let (Some(host), Some(kind)) = (q.attr("host"), q.attr("type")) else {
                    return Err(StanzaError::bad_request()
                        .with_text("the <service/> needs a host and a type"));
                };
                let port = match q.attr("port") {
                    None => None,
                    Some(p) => Some(p.parse::<u16>().map_err(|_| {
                        StanzaError::bad_request().with_text("port is not a port number")
                    })?),
                };
                let found = self.services.iter().find(|s| {
                    s.host == host
                        && s.kind.as_str() == kind
                        && port.is_none_or(|p| p == s.port)
                        && q.attr("transport")
                            .is_none_or(|t| t == if s.tcp { "tcp" } else { "udp" })
                });
                match found {
                    Some(s) if s.restricted => Ok(Some(
                        Element::new("credentials", NS)
                            .with_child(self.service_element(s, account, now)),
                    )),
                    Some(_) => Err(StanzaError::item_not_found()
                        .with_text("that service needs no credentials")),
                    None => Err(StanzaError::item_not_found().with_text("no such service")),
                }
            }
            _ => Err(StanzaError::bad_request()),
        }
    }
}

impl Module for StunDisco {
    fn name(&self) -> &'static str {
        "mod_stun_disco"
    }
    fn hooks(&self) -> Hooks {
        Hooks::NONE
    }
    fn disco_features(&self) -> Vec<&'static str> {
        vec![NS]
    }
    fn server_iq_namespaces(&self) -> Vec<&'static str> {
        vec![NS]
    }
    fn handle_server_iq(&self, ctx: &dyn ServerContext, req: &IqRequest<'_>) -> IqResult {
        if req.is_set {
            return Err(
                StanzaError::not_allowed().with_text("external services are only read (get)")
            );
        }
        if !self.allowed(ctx, req) {
            return Err(StanzaError::forbidden());
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        self.answer(req.payload, &req.from.to_bare().to_string(), now)
    }
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn y(s: &str) -> Value {
        serde_yaml_ng::from_str(s).unwrap()
    }

    fn module() -> StunDisco {
        let (services, errors) = services_of(&y("services:\n  - {host: 192.0.2.1}\n  - {host: 192.0.2.1, type: turn}\n  - {host: turn.example.org, type: turns}\n"));
        assert!(errors.is_empty(), "{errors:?}");
        StunDisco::new(services, "s3cret", Duration::from_secs(600))
    }

    #[test]
    fn services_take_ejabberds_defaults() {
        let m = module();
        assert_eq!(
            m.services[0],
            Service {
                host: "192.0.2.1".into(),
                port: 3478,
                kind: ServiceType::Stun,
                tcp: false,
                restricted: false
            }
        );
        assert!(m.services[1].restricted && !m.services[1].tcp);
        assert_eq!((m.services[2].port, m.services[2].tcp), (5349, true));
        for (yaml, key) in [
            ("{port: 1}", None),
            ("{host: a, port: 0}", Some("port")),
            ("{host: a, type: ftp}", Some("type")),
            ("{host: a, transport: sctp}", Some("transport")),
            ("{host: a, type: turns, transport: udp}", Some("transport")),
            ("{host: a, restricted: maybe}", Some("restricted")),
            ("{host: 'a b'}", Some("host")),
            ("{host: a, user: x}", Some("user")),
            ("just-a-host", None),
        ] {
            let e = parse_service(&y(yaml)).unwrap_err();
            assert_eq!(e.key.as_deref(), key, "{yaml}: {e:?}");
        }
    }

    #[test]
    fn credentials_follow_the_turn_rest_convention() {
        let m = module();
        let (user, pass) = m.credentials("alice@example.org", 1_700_000_000);
        let (expiry, name) = user.split_once(':').unwrap();
        assert_eq!(expiry, "1700000000");
        assert_eq!(name.len(), 16);
        assert!(!user.contains("alice"));
        let mut mac = Hmac::<Sha1>::new_from_slice(b"s3cret").unwrap();
        mac.update(user.as_bytes());
        let expected =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        assert_eq!(pass, expected);
        // Another account, another name; the same account, the same name.
        assert_ne!(m.credentials("bob@example.org", 1_700_000_000).0, user);
        assert!(m.credentials("alice@example.org", 5).0.ends_with(name));
    }

    #[test]
    fn services_and_credentials_answers() {
        let m = module();
        let all = m
            .answer(&Element::new("services", NS), "a@b", 1000)
            .unwrap()
            .unwrap();
        let items: Vec<_> = all.child_elements().collect();
        assert_eq!(items.len(), 3);
        assert_eq!(items[0].attr("username"), None);
        assert_eq!(items[1].attr("restricted"), Some("true"));
        assert!(items[1].attr("username").unwrap().starts_with("1600:"));
        assert_eq!(items[1].attr("expires"), Some("1970-01-01T00:26:40.000Z"));
        let turn = m
            .answer(
                &Element::new("services", NS).with_attr("type", "turn"),
                "a@b",
                1000,
            )
            .unwrap()
            .unwrap();
        assert_eq!(turn.child_elements().count(), 1);

        let ask = |attrs: &[(&str, &str)]| {
            let mut s = Element::new("service", NS);
            for (k, v) in attrs {
                s = s.with_attr(*k, *v);
            }
            m.answer(&Element::new("credentials", NS).with_child(s), "a@b", 1000)
        };
        let ok = ask(&[("host", "192.0.2.1"), ("type", "turn")])
            .unwrap()
            .unwrap();
        let s = ok.child("service", NS).unwrap();
        assert_eq!(s.attr("port"), Some("3478"));
        assert!(s.attr("password").is_some());
        let err = |r: IqResult| r.unwrap_err().condition;
        assert_eq!(
            err(ask(&[("host", "192.0.2.9"), ("type", "turn")])),
            "item-not-found"
        );
        assert_eq!(
            err(ask(&[
                ("host", "192.0.2.1"),
                ("type", "turn"),
                ("port", "9")
            ])),
            "item-not-found"
        );
        assert_eq!(
            err(ask(&[("host", "192.0.2.1"), ("type", "stun")])),
            "item-not-found"
        );
        assert_eq!(err(ask(&[("host", "192.0.2.1")])), "bad-request");
        assert_eq!(
            err(ask(&[
                ("host", "192.0.2.1"),
                ("type", "turn"),
                ("port", "x")
            ])),
            "bad-request"
        );
        assert_eq!(
            err(m.answer(&Element::new("credentials", NS), "a@b", 1000)),
            "bad-request"
        );
        assert_eq!(
            err(m.answer(&Element::new("other", NS), "a@b", 1000)),
            "bad-request"
        );
    }
}
