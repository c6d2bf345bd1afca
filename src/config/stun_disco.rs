//! Checks `modules.mod_stun_disco` (XEP-0215) beyond its options' kinds:
//! each entry of `services` as ejabberd writes it (`host` required; `port`,
//! `type`, `transport`, `restricted` as in
//! [`xep_support::stun_disco::parse_service`], which decides what is valid,
//! so the loader and the module agree), a `credentials_lifetime` that ends
//! (not 0, not infinity: TURN credentials must expire), and a `secret`
//! whenever a service is restricted (the TURN server checks credentials
//! with it; without one, none it would accept could be handed out). Every
//! refusal is a config error at the line of the value at fault.

use xep_support::options::parse_timeout;
use xep_support::stun_disco::parse_service;

use super::check::{self, Problem};
use super::yaml::{Kind, Node};

/// Check the options of `mod_stun_disco` (its node, at `path`).
pub fn check(node: &Node, path: &str) -> Result<(), Problem> {
    let mut restricted = None;
    if let Some(services) = node.get("services") {
        let sp = check::join(path, "services");
        let items = match &services.kind {
            Kind::Seq(items) => items.as_slice(),
            _ if services.is_null() => &[],
            _ => {
                return Err(check::expected(
                    services,
                    &sp,
                    "a list of services, each {host, port, type, transport, restricted}",
                ))
            }
        };
        for (i, item) in items.iter().enumerate() {
            let at = check::index(&sp, i);
            match parse_service(&item.to_value()) {
                Ok(s) => {
                    if s.restricted && restricted.is_none() {
                        restricted = Some(item);
                    }
                }
                Err(e) => {
                    let Some(key) = e.key else {
                        return Err(check::expected(item, &at, &e.expected));
                    };
                    let fields = item.as_map().unwrap_or_default();
                    let (key_node, value_node) = fields
                        .iter()
                        .find(|(k, _)| k.as_str() == Some(key.as_str()))
                        .map(|(k, v)| (k, v))
                        .unwrap_or((item, item));
                    let kp = check::join(&at, &key);
                    return Err(if e.expected.starts_with("one of the keys") {
                        Problem::at(
                            key_node,
                            format!("{kp}: unknown key; expected {}", &e.expected[7..]),
                        )
                    } else {
                        check::expected(value_node, &kp, &e.expected)
                    });
                }
            }
        }
    }
    if let Some(lifetime) = node.get("credentials_lifetime") {
        let ok = matches!(parse_timeout(&lifetime.to_value()), Some(Some(d)) if d.as_secs() > 0);
        if !ok {
            return Err(check::expected(
                lifetime,
                &check::join(path, "credentials_lifetime"),
                "a duration of at least 1 second, such as \"12 hours\" (TURN credentials must expire)",
            ));
        }
    }
    let secret = node
        .get("secret")
        .and_then(Node::as_str)
        .is_some_and(|s| !s.is_empty());
    if let (Some(item), false) = (restricted, secret) {
        return Err(Problem::at(
            item,
            format!(
                "{}: a restricted service (TURN credentials) needs `secret`, the one shared \
                 with the TURN server (coturn's static-auth-secret)",
                check::join(path, "secret")
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(yaml: &str) -> Result<(), Problem> {
        let root = super::super::yaml::parse(yaml).unwrap().unwrap();
        check(&root, "modules.mod_stun_disco")
    }

    #[test]
    fn accepts_ejabberds_format() {
        assert_eq!(run("services:\n  - host: 203.0.113.3\n    port: 3478\n    type: turn\n    transport: udp\n    restricted: true\n  - host: stun.example.org\nsecret: s3cret\ncredentials_lifetime: 12 hours\n"), Ok(()));
        assert_eq!(run("services:\n  - host: 203.0.113.3\n"), Ok(()));
    }

    #[test]
    fn refuses_bad_values_with_their_line() {
        let p = run("secret: x\nservices:\n  - host: a\n    port: 70000\n").unwrap_err();
        assert_eq!(p.line, 4, "{p:?}");
        assert!(
            p.message
                .starts_with("modules.mod_stun_disco.services[0].port: expected a port number"),
            "{}",
            p.message
        );
        let p = run("secret: x\nservices:\n  - host: a\n    typ: turn\n").unwrap_err();
        assert_eq!((p.line, p.col), (4, 5), "{p:?}");
        assert!(
            p.message
                .contains("services[0].typ: unknown key; expected the keys host"),
            "{}",
            p.message
        );
        let p = run("services:\n  - port: 3478\n").unwrap_err();
        assert_eq!(p.line, 2, "{p:?}");
        assert!(p.message.contains("a `host`"), "{}", p.message);
        let p = run("services:\n  - {host: a, type: turn}\n").unwrap_err();
        assert!(p.message.contains("needs `secret`"), "{}", p.message);
        let p = run("credentials_lifetime: infinity\n").unwrap_err();
        assert!(p.message.contains("must expire"), "{}", p.message);
        let p = run("services: turn.example.org\n").unwrap_err();
        assert_eq!(p.line, 1);
    }
}
