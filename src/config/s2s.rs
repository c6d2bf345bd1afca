//! Server-to-server options: `s2s_cafile`, `s2s_hosts` (a Rookery option:
//! static addresses for remote domains), `s2s_secure_auth` (Prosody's name:
//! only peers with verified certificates, no dialback), `s2s_dialback`,
//! `outgoing_s2s_port`, `outgoing_s2s_timeout`, `s2s_timeout`, ejabberd's
//! `s2s_dns_timeout` and `s2s_dns_retries`, and `s2s_dns_servers` (a Rookery
//! option: the nameservers to ask instead of /etc/resolv.conf's).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::check::{self, Problem};
use super::yaml::Node;

/// Where to reach a remote domain instead of asking DNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticRoute {
    pub host: String,
    pub port: u16,
}

/// The s2s settings.
#[derive(Debug, Clone)]
pub struct S2sOptions {
    /// PEM file of CA certificates that peers' certificates are checked
    /// against; `None`: the system's roots.
    pub cafile: Option<PathBuf>,
    /// Remote domain → host:port, used instead of DNS.
    pub hosts: HashMap<String, StaticRoute>,
    /// Require verified certificates (SASL EXTERNAL) and refuse dialback.
    pub secure_auth: bool,
    /// Offer and use server dialback (XEP-0220) when certificates do not verify.
    pub dialback: bool,
    /// Port used when DNS has no SRV record.
    pub port: u16,
    /// Time to connect and authenticate an outgoing stream.
    pub connect_timeout: Duration,
    /// An s2s stream idle this long is closed.
    pub idle_timeout: Duration,
    /// Nameservers to ask (UDP, then TCP for long answers); empty: the
    /// system's (/etc/resolv.conf).
    pub dns_servers: Vec<SocketAddr>,
    /// Time for one DNS query (`s2s_dns_timeout`).
    pub dns_timeout: Duration,
    /// Times each DNS query is sent (`s2s_dns_retries`).
    pub dns_retries: usize,
    /// Offer and use bidirectional streams (XEP-0288).
    pub bidi: bool,
}

impl Default for S2sOptions {
    fn default() -> Self {
        S2sOptions {
            cafile: None,
            hosts: HashMap::new(),
            secure_auth: false,
            dialback: true,
            port: 5269,
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(600),
            dns_servers: Vec::new(),
            dns_timeout: Duration::from_secs(4),
            dns_retries: 2,
            bidi: false,
        }
    }
}

/// The top-level option names this module reads.
pub const OPTIONS: &[&str] = &[
    "s2s_cafile",
    "s2s_hosts",
    "s2s_secure_auth",
    "s2s_dialback",
    "outgoing_s2s_port",
    "outgoing_s2s_timeout",
    "s2s_timeout",
    "s2s_dns_servers",
    "s2s_dns_timeout",
    "s2s_dns_retries",
    "s2s_bidi",
];

fn seconds(node: &Node, path: &str) -> Result<Duration, Problem> {
    if node.as_str().is_some_and(check::is_infinity) {
        return Ok(Duration::from_secs(365 * 24 * 3600));
    }
    let n = check::integer(node, path, 1, 86_400, "a number of seconds (1-86400)")?;
    Ok(Duration::from_secs(n))
}

/// Read the s2s options; `option` finds a top-level option's value and
/// `path` resolves a file name relative to the config file.
pub fn parse<'a>(
    option: impl Fn(&str) -> Option<&'a Node>,
    path: impl Fn(&str) -> PathBuf,
) -> Result<S2sOptions, Problem> {
    let mut o = S2sOptions::default();
    if let Some(node) = option("s2s_cafile") {
        o.cafile = Some(path(check::string(node, "s2s_cafile", "a file path")?));
    }
    if let Some(node) = option("s2s_secure_auth") {
        o.secure_auth = check::boolean(node, "s2s_secure_auth")?;
    }
    if let Some(node) = option("s2s_dialback") {
        o.dialback = check::boolean(node, "s2s_dialback")?;
    }
    if let Some(node) = option("s2s_bidi") {
        o.bidi = check::boolean(node, "s2s_bidi")?;
    }
    if let Some(node) = option("outgoing_s2s_port") {
        o.port = check::integer(node, "outgoing_s2s_port", 1, 65535, "a port number")? as u16;
    }
    if let Some(node) = option("outgoing_s2s_timeout") {
        o.connect_timeout = seconds(node, "outgoing_s2s_timeout")?;
    }
    if let Some(node) = option("s2s_timeout") {
        o.idle_timeout = seconds(node, "s2s_timeout")?;
    }
    if let Some(node) = option("s2s_dns_timeout") {
        let n = check::integer(node, "s2s_dns_timeout", 1, 60, "a number of seconds (1-60)")?;
        o.dns_timeout = Duration::from_secs(n);
    }
    if let Some(node) = option("s2s_dns_retries") {
        o.dns_retries =
            check::integer(node, "s2s_dns_retries", 1, 10, "a number of tries (1-10)")? as usize;
    }
    if let Some(node) = option("s2s_dns_servers") {
        for (i, item) in check::list_or_single(node).into_iter().enumerate() {
            let p = check::index("s2s_dns_servers", i);
            let what = "an IP address, optionally with a port (\"192.0.2.53\", \"127.0.0.1:5353\", \"[::1]:53\")";
            let text = check::string(item, &p, what)?.trim();
            let addr = match text.parse::<SocketAddr>() {
                Ok(a) => a,
                Err(_) => match text
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<IpAddr>()
                {
                    Ok(ip) => SocketAddr::new(ip, 53),
                    Err(_) => return Err(check::expected(item, &p, what)),
                },
            };
            if addr.port() == 0 {
                return Err(check::expected(item, &p, what));
            }
            o.dns_servers.push(addr);
        }
    }
    if let Some(node) = option("s2s_hosts") {
        let what = "a mapping of domain: \"host:port\"";
        for (k, v) in check::map(node, "s2s_hosts", what)? {
            let key = check::key(k, "s2s_hosts")?;
            let domain =
                check::domain(key).map_err(|e| Problem::at(k, format!("s2s_hosts: {key}: {e}")))?;
            let p = check::join("s2s_hosts", key);
            let text = check::string(v, &p, "\"host:port\" or \"host\"")?;
            let (host, port) = match text.rsplit_once(':') {
                // An IPv6 address in brackets, or host:port.
                Some((h, port)) if !h.is_empty() && !port.contains(']') => {
                    let port: u16 = port.parse().ok().filter(|p| *p > 0).ok_or_else(|| {
                        check::expected(v, &p, "\"host:port\" with a port 1-65535")
                    })?;
                    (
                        h.trim_start_matches('[').trim_end_matches(']').to_string(),
                        port,
                    )
                }
                _ => (text.to_string(), o.port),
            };
            if host.is_empty() {
                return Err(check::expected(v, &p, "\"host:port\""));
            }
            o.hosts.insert(domain, StaticRoute { host, port });
        }
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    fn load(extra: &str) -> Result<Config, String> {
        Config::from_str(
            &format!("hosts: [a.test]\n{extra}"),
            "t.yml",
            Path::new("/etc/r"),
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn reads_s2s_options() {
        let c = load(
            "s2s_hosts:\n  B.Test: \"127.0.0.1:5270\"\n  c.test: \"[::1]:5271\"\n  d.test: host.example\n\
             s2s_cafile: ca.pem\ns2s_secure_auth: true\ns2s_dialback: false\n\
             outgoing_s2s_port: 5299\noutgoing_s2s_timeout: 3\ns2s_timeout: 60\n",
        )
        .unwrap();
        let o = &c.s2s;
        assert_eq!(o.hosts["b.test"].host, "127.0.0.1");
        assert_eq!(o.hosts["b.test"].port, 5270);
        assert_eq!(o.hosts["c.test"].host, "::1");
        assert_eq!(o.hosts["c.test"].port, 5271);
        assert_eq!(o.hosts["d.test"].host, "host.example");
        assert_eq!(o.cafile.as_deref(), Some(Path::new("/etc/r/ca.pem")));
        assert!(o.secure_auth && !o.dialback);
        assert_eq!(o.port, 5299);
        assert_eq!(o.connect_timeout.as_secs(), 3);
        assert_eq!(o.idle_timeout.as_secs(), 60);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn reads_dns_options() {
        let c = load(
            "s2s_dns_servers: [\"127.0.0.1:5353\", 192.0.2.53, \"[::1]:54\", \"::2\"]\n\
             s2s_dns_timeout: 3\ns2s_dns_retries: 1\ns2s_bidi: true\n",
        )
        .unwrap();
        let o = &c.s2s;
        let want: Vec<std::net::SocketAddr> =
            ["127.0.0.1:5353", "192.0.2.53:53", "[::1]:54", "[::2]:53"]
                .iter()
                .map(|a| a.parse().unwrap())
                .collect();
        assert_eq!(o.dns_servers, want);
        assert_eq!(o.dns_timeout.as_secs(), 3);
        assert_eq!(o.dns_retries, 1);
        assert!(o.bidi);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let e = load("s2s_dns_servers:\n  - ns.example.org\n").unwrap_err();
        assert!(e.starts_with("t.yml:3:"), "{e}");
        assert!(e.contains("s2s_dns_servers[0]"), "{e}");
        let e = load("s2s_dns_servers: \"127.0.0.1:0\"\n").unwrap_err();
        assert!(e.contains("s2s_dns_servers[0]"), "{e}");
    }

    #[test]
    fn defaults_and_errors() {
        let c = load("").unwrap();
        assert!(c.s2s.dialback && !c.s2s.secure_auth && c.s2s.hosts.is_empty());
        assert_eq!(c.s2s.port, 5269);
        let e = load("s2s_hosts:\n  b.test: \"h:99999\"\n").unwrap_err();
        assert!(e.starts_with("t.yml:3:"), "{e}");
        assert!(e.contains("s2s_hosts.b.test"), "{e}");
        let e = load("s2s_secure_auth: maybe\n").unwrap_err();
        assert!(e.contains("s2s_secure_auth"), "{e}");
    }
}
