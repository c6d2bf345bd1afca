//! `rookery ctl check [config|certs|dns|turn|disk|access|endpoints]`, in
//! the spirit of `prosodyctl check`: validates the configuration, each
//! host's certificate and the DNS records a client-reachable, federating
//! host needs, whether the STUN/TURN servers handed to clients answer
//! (`src/ctl/check_turn.rs`), the data directory's free space, open doors
//! and the running server's ports and public URLs (`src/ctl/check_ops.rs`),
//! and says what to fix;
//! for module service domains (mod_muc's `conference.HOST`, which federate
//! like hosts) whether a certificate names them and their s2s DNS records
//! (warnings only: local users do not need them).
//!
//! It runs in the `rookery ctl` process (it reads files and asks DNS; the
//! server need not run). Exit 0 when nothing is wrong (notes and warnings
//! may be printed), 1 when a problem was found.

use std::net::IpAddr;

use crate::config::{Config, ListenerModule};
use crate::tls::CertInfo;

use super::commands::CtlOutput;

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    Note,
    Warning,
    Problem,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub level: Level,
    pub text: String,
}

fn f(level: Level, text: impl Into<String>) -> Finding {
    Finding {
        level,
        text: text.into(),
    }
}

/// The configuration part: it loaded (or `rookery ctl` would have stopped
/// with the error); its warnings and the modules' warnings.
pub fn check_config(config: &Config) -> Vec<Finding> {
    let mut out = Vec::new();
    let name = config
        .source
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "the built-in configuration".into());
    out.push(f(Level::Ok, format!("configuration {name} is valid")));
    for w in &config.warnings {
        out.push(f(Level::Warning, w.clone()));
    }
    let globals = config.module_globals();
    let (_, module_warnings) = xep_support::registry::build(&config.modules, &globals);
    for (module, message) in module_warnings {
        out.push(f(Level::Warning, config.module_warning(&module, &message)));
    }
    if !config
        .listen
        .iter()
        .any(|l| l.module == ListenerModule::C2s)
    {
        out.push(f(Level::Problem, "no c2s listener: clients cannot connect"));
    }
    out
}

/// One host's certificate.
pub fn check_certificate(host: &str, cert: Option<&CertInfo>, now: i64) -> Vec<Finding> {
    let mut out = Vec::new();
    let Some(c) = cert else {
        out.push(f(
            Level::Problem,
            format!(
                "{host}: no certificate in certfiles names this host; the server uses a generated \
                 self-signed one that clients and servers will not trust (get one, e.g. with \
                 certbot, and run `rookery ctl cert_import /etc/letsencrypt/live`)"
            ),
        ));
        return out;
    };
    let file = c.source.display();
    let days_left = (c.not_after - now).div_euclid(86_400);
    if c.not_after <= now {
        out.push(f(
            Level::Problem,
            format!(
                "{host}: the certificate in {file} has expired ({} days ago): renew it",
                -days_left
            ),
        ));
    } else if c.not_before > now {
        out.push(f(
            Level::Problem,
            format!("{host}: the certificate in {file} is not valid yet (check the clock)"),
        ));
    } else if days_left < 30 {
        out.push(f(
            Level::Warning,
            format!("{host}: the certificate in {file} expires in {days_left} days: renew it soon"),
        ));
    } else {
        out.push(f(
            Level::Ok,
            format!("{host}: certificate {file} valid for {days_left} more days"),
        ));
    }
    if c.generated || c.self_issued {
        out.push(f(
            Level::Warning,
            format!("{host}: the certificate in {file} is self-signed: clients and servers will not trust it"),
        ));
    } else if c.chain_len < 2 {
        out.push(f(
            Level::Problem,
            format!(
                "{host}: {file} holds only the host's certificate, not its intermediate \
                 certificates: clients cannot build the chain (use certbot's fullchain.pem, \
                 not cert.pem)"
            ),
        ));
    }
    if !c.server_auth {
        out.push(f(
            Level::Problem,
            format!("{host}: the certificate in {file} is not allowed for TLS servers (extendedKeyUsage)"),
        ));
    } else if !c.client_auth && !c.generated && !c.self_issued {
        out.push(f(
            Level::Note,
            format!(
                "{host}: the certificate in {file} is for TLS servers only (no clientAuth, as                  Let's Encrypt issues them since 2026): Rookery accepts such certificates from                  other servers, but servers that require clientAuth on incoming s2s will fall                  back to dialback (keep s2s_dialback on)"
            ),
        ));
    }
    out
}

/// The module service domains of the configuration (mod_muc's
/// `conference.HOST`), sorted: they federate like hosts, so other servers
/// check their certificate and look up their DNS.
pub fn service_domains(config: &Config) -> Vec<String> {
    let globals = config.module_globals();
    let (modules, _) = xep_support::registry::build(&config.modules, &globals);
    let mut v: Vec<String> = modules
        .iter()
        .flat_map(|m| m.service_domains(&config.hosts))
        .map(|(d, _)| d)
        .filter(|d| !config.hosts.contains(d))
        .collect();
    v.sort();
    v.dedup();
    v
}

/// A service domain's certificate: only whether one names it (its validity
/// is its file's, checked for the hosts). Without one, local users are not
/// affected; other servers cannot verify the domain (dialback at best).
pub fn check_service_certificate(domain: &str, cert: Option<&CertInfo>) -> Finding {
    match cert {
        Some(c) => f(
            Level::Ok,
            format!(
                "{domain}: named by the certificate in {}",
                c.source.display()
            ),
        ),
        None => f(
            Level::Warning,
            format!(
                "{domain}: no certificate in certfiles names this service domain: other servers \
                 cannot verify it (they use dialback, or refuse it under s2s_secure_auth); add \
                 it to the host's certificate (certbot -d {domain}) or use a wildcard"
            ),
        ),
    }
}

/// Certificates for every host and module service domain.
pub fn check_certificates(config: &Config) -> Vec<Finding> {
    let now = crate::tls::now_secs();
    let services = service_domains(config);
    match crate::tls::inspect(&config.effective_certfiles(), &config.hosts) {
        Err(e) => vec![f(Level::Problem, format!("certificates: {e}"))],
        Ok((per_host, warnings)) => {
            let mut out: Vec<Finding> =
                warnings.into_iter().map(|w| f(Level::Warning, w)).collect();
            for (host, cert) in &per_host {
                out.extend(check_certificate(host, cert.as_ref(), now));
            }
            if let Ok((per_service, _)) =
                crate::tls::inspect(&config.effective_certfiles(), &services)
            {
                for (domain, cert) in &per_service {
                    out.push(check_service_certificate(domain, cert.as_ref()));
                }
            }
            out
        }
    }
}

/// What DNS said about one host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsFacts {
    /// (service, target, port) per SRV record; service is e.g. `_xmpp-client._tcp`.
    pub srv: Vec<(String, String, u16)>,
    /// The host's own A/AAAA addresses.
    pub addresses: Vec<IpAddr>,
    /// SRV targets that do not resolve.
    pub dead_targets: Vec<String>,
    /// Lookups that failed for another reason than "no such record".
    pub errors: Vec<String>,
}

/// Names DNS is not asked about: not meant to be public.
pub fn is_private_name(host: &str) -> bool {
    !host.contains('.')
        || host.parse::<IpAddr>().is_ok()
        || [
            ".localhost",
            ".local",
            ".test",
            ".example",
            ".invalid",
            ".internal",
            ".lan",
            ".home.arpa",
        ]
        .iter()
        .any(|s| host.ends_with(s))
}

/// Judge one host's DNS records (`c2s_ports`/`s2s_ports`: what we listen on).
pub fn judge_dns(
    host: &str,
    facts: &DnsFacts,
    c2s_ports: &[u16],
    s2s_ports: &[u16],
) -> Vec<Finding> {
    let mut out = Vec::new();
    for e in &facts.errors {
        out.push(f(Level::Warning, format!("{host}: DNS lookup failed: {e}")));
    }
    let of = |service: &str| -> Vec<&(String, String, u16)> {
        facts.srv.iter().filter(|(s, _, _)| s == service).collect()
    };
    let client = [of("_xmpp-client._tcp"), of("_xmpps-client._tcp")].concat();
    let server = [of("_xmpp-server._tcp"), of("_xmpps-server._tcp")].concat();
    if facts.addresses.is_empty() && client.is_empty() {
        out.push(f(
            Level::Problem,
            format!("{host}: no SRV record _xmpp-client._tcp.{host} and no A/AAAA record: clients cannot find the server"),
        ));
    } else if client.is_empty() {
        out.push(f(
            Level::Note,
            format!(
                "{host}: no _xmpp-client._tcp SRV record: clients connect to {host} port 5222 (A/AAAA: {})",
                facts.addresses.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            ),
        ));
        if !c2s_ports.contains(&5222) {
            out.push(f(
                Level::Problem,
                format!("{host}: without an SRV record clients use port 5222, but no c2s listener is on 5222"),
            ));
        }
    } else {
        for (service, target, port) in &client {
            let ok = c2s_ports.contains(port);
            out.push(f(
                if ok { Level::Ok } else { Level::Warning },
                format!(
                    "{host}: {service} → {target}:{port}{}",
                    if ok {
                        ""
                    } else {
                        " (no c2s listener on that port here)"
                    }
                ),
            ));
        }
    }
    if !s2s_ports.is_empty() {
        if server.is_empty() && facts.addresses.is_empty() {
            out.push(f(
                Level::Problem,
                format!("{host}: no _xmpp-server._tcp SRV record and no A/AAAA record: other servers cannot reach this one"),
            ));
        } else if server.is_empty() {
            out.push(f(
                Level::Note,
                format!("{host}: no _xmpp-server._tcp SRV record: other servers connect to {host} port 5269"),
            ));
        } else {
            for (service, target, port) in &server {
                out.push(f(Level::Ok, format!("{host}: {service} → {target}:{port}")));
            }
        }
    }
    for t in &facts.dead_targets {
        out.push(f(
            Level::Problem,
            format!("{host}: the SRV target {t} has no A/AAAA record"),
        ));
    }
    out
}

/// Judge a module service domain's DNS: other servers reach it by its own
/// `_xmpp-server._tcp` SRV record, else its A/AAAA record on 5269; clients
/// never look it up.
pub fn judge_service_dns(domain: &str, facts: &DnsFacts) -> Vec<Finding> {
    let mut out = Vec::new();
    for e in &facts.errors {
        out.push(f(
            Level::Warning,
            format!("{domain}: DNS lookup failed: {e}"),
        ));
    }
    let server: Vec<&(String, String, u16)> = facts
        .srv
        .iter()
        .filter(|(s, _, _)| s == "_xmpp-server._tcp" || s == "_xmpps-server._tcp")
        .collect();
    if server.is_empty() && facts.addresses.is_empty() {
        out.push(f(
            Level::Warning,
            format!(
                "{domain}: no _xmpp-server._tcp SRV record and no A/AAAA record: users of other \
                 servers cannot join its rooms (local users can)"
            ),
        ));
    } else if server.is_empty() {
        out.push(f(
            Level::Note,
            format!("{domain}: no _xmpp-server._tcp SRV record: other servers connect to {domain} port 5269"),
        ));
    }
    for (service, target, port) in &server {
        out.push(f(
            Level::Ok,
            format!("{domain}: {service} → {target}:{port}"),
        ));
    }
    for t in &facts.dead_targets {
        out.push(f(
            Level::Problem,
            format!("{domain}: the SRV target {t} has no A/AAAA record"),
        ));
    }
    out
}

async fn lookup_facts(resolver: &hickory_resolver::TokioResolver, host: &str) -> DnsFacts {
    use hickory_resolver::proto::ProtoErrorKind;
    let no_records = |e: &hickory_resolver::ResolveError| {
        matches!(
            e.proto().map(|p| p.kind()),
            Some(ProtoErrorKind::NoRecordsFound { .. })
        )
    };
    let mut facts = DnsFacts::default();
    for service in [
        "_xmpp-client._tcp",
        "_xmpps-client._tcp",
        "_xmpp-server._tcp",
        "_xmpps-server._tcp",
    ] {
        match resolver.srv_lookup(format!("{service}.{host}.")).await {
            Ok(l) => {
                for r in l.iter() {
                    let target = r.target().to_ascii();
                    let target = target.trim_end_matches('.').to_string();
                    if target.is_empty() {
                        continue; // "." : service explicitly not offered
                    }
                    facts.srv.push((service.to_string(), target, r.port()));
                }
            }
            Err(e) if no_records(&e) => {}
            Err(e) => facts.errors.push(format!("{service}.{host}: {e}")),
        }
    }
    match resolver.lookup_ip(format!("{host}.")).await {
        Ok(l) => facts.addresses = l.iter().collect(),
        Err(e) if no_records(&e) => {}
        Err(e) => facts.errors.push(format!("{host}: {e}")),
    }
    let mut targets: Vec<String> = facts.srv.iter().map(|(_, t, _)| t.clone()).collect();
    targets.sort();
    targets.dedup();
    for t in targets {
        if t == host && !facts.addresses.is_empty() {
            continue;
        }
        if resolver.lookup_ip(format!("{t}.")).await.is_err() {
            facts.dead_targets.push(t);
        }
    }
    facts
}

/// DNS for every public host.
pub fn check_dns(config: &Config) -> Vec<Finding> {
    let ports = |m: ListenerModule| -> Vec<u16> {
        config
            .listen
            .iter()
            .filter(|l| l.module == m)
            .map(|l| l.port)
            .collect()
    };
    let (c2s, s2s) = (ports(ListenerModule::C2s), ports(ListenerModule::S2s));
    let mut out = Vec::new();
    let public: Vec<&String> = config
        .hosts
        .iter()
        .filter(|h| !is_private_name(h))
        .collect();
    for h in config.hosts.iter().filter(|h| is_private_name(h)) {
        out.push(f(
            Level::Note,
            format!("{h}: not a public DNS name; DNS not checked"),
        ));
    }
    // Service domains matter only to other servers.
    let services: Vec<String> = if s2s.is_empty() {
        Vec::new()
    } else {
        service_domains(config)
            .into_iter()
            .filter(|d| !is_private_name(d))
            .collect()
    };
    if public.is_empty() && services.is_empty() {
        return out;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            out.push(f(Level::Warning, format!("cannot check DNS: {e}")));
            return out;
        }
    };
    runtime.block_on(async {
        // The servers federation asks, when the configuration names them.
        let resolver = if config.s2s.dns_servers.is_empty() {
            None
        } else {
            Some(crate::s2s::resolve::resolver(&config.s2s))
        };
        let mut builder = match hickory_resolver::TokioResolver::builder_tokio() {
            Ok(b) => b,
            Err(e) => {
                out.push(f(
                    Level::Warning,
                    format!("cannot read the system DNS configuration: {e}"),
                ));
                return;
            }
        };
        let opts = builder.options_mut();
        opts.timeout = std::time::Duration::from_secs(4);
        opts.attempts = 2;
        let resolver = resolver.unwrap_or_else(|| builder.build());
        for host in public {
            let facts = lookup_facts(&resolver, host).await;
            out.extend(judge_dns(host, &facts, &c2s, &s2s));
        }
        for domain in &services {
            let facts = lookup_facts(&resolver, domain).await;
            out.extend(judge_service_dns(domain, &facts));
        }
    });
    out
}

/// Run the checks named by `what` (`None`: all) and format the report.
pub fn run(config: &Config, what: Option<&str>) -> CtlOutput {
    let mut findings = Vec::new();
    let all = what.is_none();
    match what {
        None | Some("config") | Some("certs") | Some("dns") | Some("turn") => {}
        Some("disk") | Some("access") | Some("endpoints") => {}
        Some(other) => {
            return CtlOutput::usage(format!(
            "Unknown check '{other}': expected config, certs, dns, turn, disk, access or endpoints"
        ))
        }
    }
    if all || what == Some("config") {
        findings.push(f(Level::Note, "== Configuration"));
        findings.extend(check_config(config));
    }
    if all || what == Some("certs") {
        findings.push(f(Level::Note, "== Certificates"));
        findings.extend(check_certificates(config));
    }
    if all || what == Some("dns") {
        findings.push(f(Level::Note, "== DNS"));
        findings.extend(check_dns(config));
    }
    if all || what == Some("turn") {
        findings.push(f(Level::Note, "== STUN/TURN (calls)"));
        findings.extend(super::check_turn::check_turn(
            config,
            super::check_turn::TIMEOUT,
        ));
    }
    if all || what == Some("disk") {
        findings.push(f(Level::Note, "== Disk"));
        findings.extend(super::check_ops::check_disk(config));
    }
    if all || what == Some("access") {
        findings.push(f(Level::Note, "== Open doors"));
        findings.extend(super::check_ops::check_open_doors(config));
    }
    if all || what == Some("endpoints") {
        findings.push(f(Level::Note, "== Ports and public URLs"));
        findings.extend(super::check_ops::check_endpoints(config));
    }
    let problems = findings
        .iter()
        .filter(|x| x.level == Level::Problem)
        .count();
    let warnings = findings
        .iter()
        .filter(|x| x.level == Level::Warning)
        .count();
    let mut text = String::new();
    for x in &findings {
        let tag = match x.level {
            Level::Ok => "  ok       ",
            Level::Note if x.text.starts_with("==") => "",
            Level::Note => "  note     ",
            Level::Warning => "  warning  ",
            Level::Problem => "  PROBLEM  ",
        };
        text.push_str(tag);
        text.push_str(&x.text);
        text.push('\n');
    }
    text.push_str(&format!("\n{problems} problem(s), {warnings} warning(s)"));
    if problems > 0 {
        CtlOutput::failed(text)
    } else {
        CtlOutput::ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn info(days_before: i64, days_after: i64, chain: usize, self_issued: bool) -> CertInfo {
        let now = 1_000_000_000;
        CertInfo {
            names: vec!["example.org".into()],
            source: PathBuf::from("/etc/x.pem"),
            generated: false,
            not_before: now - days_before * 86_400,
            not_after: now + days_after * 86_400,
            chain_len: chain,
            server_auth: true,
            client_auth: true,
            self_issued,
        }
    }

    fn levels(v: &[Finding]) -> Vec<Level> {
        v.iter().map(|f| f.level).collect()
    }

    #[test]
    fn certificate_findings() {
        let now = 1_000_000_000;
        assert_eq!(
            levels(&check_certificate(
                "example.org",
                Some(&info(10, 80, 2, false)),
                now
            )),
            [Level::Ok]
        );
        let expired = check_certificate("example.org", Some(&info(100, -3, 2, false)), now);
        assert_eq!(levels(&expired), [Level::Problem]);
        assert!(
            expired[0].text.contains("expired (3 days ago)"),
            "{expired:?}"
        );
        assert_eq!(
            levels(&check_certificate(
                "example.org",
                Some(&info(10, 5, 2, false)),
                now
            )),
            [Level::Warning]
        );
        let leaf_only = check_certificate("example.org", Some(&info(10, 80, 1, false)), now);
        assert_eq!(levels(&leaf_only), [Level::Ok, Level::Problem]);
        assert!(leaf_only[1].text.contains("fullchain.pem"));
        assert_eq!(
            levels(&check_certificate(
                "example.org",
                Some(&info(10, 80, 1, true)),
                now
            )),
            [Level::Ok, Level::Warning]
        );
        assert_eq!(
            levels(&check_certificate("example.org", None, now)),
            [Level::Problem]
        );
    }

    #[test]
    fn dns_findings() {
        assert!(is_private_name("localhost"));
        assert!(is_private_name("chat.local"));
        assert!(is_private_name("127.0.0.1"));
        assert!(!is_private_name("example.org"));
        let none = DnsFacts::default();
        assert_eq!(
            levels(&judge_dns("example.org", &none, &[5222], &[])),
            [Level::Problem]
        );
        let a_only = DnsFacts {
            addresses: vec!["192.0.2.1".parse().unwrap()],
            ..Default::default()
        };
        assert_eq!(
            levels(&judge_dns("example.org", &a_only, &[5222], &[])),
            [Level::Note]
        );
        assert_eq!(
            levels(&judge_dns("example.org", &a_only, &[5223], &[])),
            [Level::Note, Level::Problem]
        );
        let srv = DnsFacts {
            srv: vec![
                ("_xmpp-client._tcp".into(), "xmpp.example.org".into(), 5222),
                ("_xmpp-server._tcp".into(), "xmpp.example.org".into(), 5269),
            ],
            dead_targets: vec!["xmpp.example.org".into()],
            ..Default::default()
        };
        let v = judge_dns("example.org", &srv, &[5222], &[5269]);
        assert_eq!(levels(&v), [Level::Ok, Level::Ok, Level::Problem], "{v:?}");
        let v = judge_dns("example.org", &DnsFacts::default(), &[5222], &[5269]);
        assert_eq!(levels(&v), [Level::Problem, Level::Problem]);
    }

    #[test]
    fn service_domain_findings() {
        let d = "conference.example.org";
        assert_eq!(
            levels(&judge_service_dns(d, &DnsFacts::default())),
            [Level::Warning]
        );
        let a_only = DnsFacts {
            addresses: vec!["192.0.2.1".parse().unwrap()],
            ..Default::default()
        };
        assert_eq!(levels(&judge_service_dns(d, &a_only)), [Level::Note]);
        let srv = DnsFacts {
            srv: vec![("_xmpp-server._tcp".into(), "xmpp.example.org".into(), 5269)],
            ..Default::default()
        };
        let v = judge_service_dns(d, &srv);
        assert_eq!(levels(&v), [Level::Ok], "{v:?}");
        assert!(v[0].text.contains("xmpp.example.org:5269"), "{v:?}");
        assert_eq!(check_service_certificate(d, None).level, Level::Warning);
        let yaml = "hosts: [example.org]\nmodules:\n  mod_muc: {}\n";
        let config =
            crate::config::Config::from_str(yaml, "test.yml", std::path::Path::new("/tmp"))
                .expect("config");
        assert_eq!(service_domains(&config), vec![d.to_string()]);
    }
}
