//! The top-level options of `/metrics` (the `mod_prometheus` request
//! handler): `openmetrics_allow_ips` and `openmetrics_allow_cidr`, Prosody's
//! names, saying which client addresses may scrape.
//!
//! Invariant: the allow list is never empty unless the admin wrote an empty
//! list; without either option it is loopback (`127.0.0.0/8`, `::1`), as
//! Prosody's default. Both options together: an address in either may
//! scrape.

use super::acl::IpNet;
use super::check::{self, Problem};
use super::yaml::Node;

/// The option names this file reads.
pub const OPTIONS: &[&str] = &["openmetrics_allow_ips", "openmetrics_allow_cidr"];

/// Who may read `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenMetricsOptions {
    /// Addresses and networks allowed to scrape.
    pub allow: Vec<IpNet>,
}

impl OpenMetricsOptions {
    /// Whether `ip` may scrape.
    pub fn allows(&self, ip: std::net::IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.allow.iter().any(|n| n.contains(ip))
    }
}

impl Default for OpenMetricsOptions {
    fn default() -> Self {
        OpenMetricsOptions {
            allow: vec![
                "127.0.0.0/8".parse().expect("net"),
                "::1/128".parse().expect("net"),
            ],
        }
    }
}

/// Read the options (`option` finds a top-level option by name).
pub fn parse<'a>(option: impl Fn(&str) -> Option<&'a Node>) -> Result<OpenMetricsOptions, Problem> {
    let ips = option("openmetrics_allow_ips");
    let cidr = option("openmetrics_allow_cidr");
    if ips.is_none() && cidr.is_none() {
        return Ok(OpenMetricsOptions::default());
    }
    let mut allow = Vec::new();
    if let Some(node) = ips {
        let what = "a list of IP addresses or networks such as 127.0.0.1 or 10.0.0.0/8";
        for item in check::list_or_single(node) {
            let text = check::string(item, "openmetrics_allow_ips", what)?;
            let net = text
                .parse::<IpNet>()
                .map_err(|_| check::expected(item, "openmetrics_allow_ips", what))?;
            allow.push(net);
        }
    }
    if let Some(node) = cidr {
        let what = "a network such as 10.0.0.0/8 or fd00::/8";
        let text = check::string(node, "openmetrics_allow_cidr", what)?;
        let net = text
            .parse::<IpNet>()
            .map_err(|_| check::expected(node, "openmetrics_allow_cidr", what))?;
        allow.push(net);
    }
    Ok(OpenMetricsOptions { allow })
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn parse(text: &str) -> Result<Config, crate::config::ConfigError> {
        Config::from_str(text, "test.yml", std::path::Path::new("/tmp"))
    }

    #[test]
    fn loopback_by_default_and_lists_replace_it() {
        let c = parse("hosts: [a.example]\n").unwrap();
        assert!(c.openmetrics.allows("127.0.0.1".parse().unwrap()));
        assert!(c.openmetrics.allows("::1".parse().unwrap()));
        assert!(c.openmetrics.allows("::ffff:127.0.0.2".parse().unwrap()));
        assert!(!c.openmetrics.allows("10.1.2.3".parse().unwrap()));
        let c = parse(
            "hosts: [a.example]\nopenmetrics_allow_ips: [10.1.2.3, \"fd00::/8\"]\nopenmetrics_allow_cidr: 192.168.0.0/16\n",
        )
        .unwrap();
        assert!(c.openmetrics.allows("10.1.2.3".parse().unwrap()));
        assert!(c.openmetrics.allows("fd00::5".parse().unwrap()));
        assert!(c.openmetrics.allows("192.168.4.4".parse().unwrap()));
        assert!(!c.openmetrics.allows("127.0.0.1".parse().unwrap()));
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn bad_entries_name_the_option_and_line() {
        let e = parse("hosts: [a.example]\nopenmetrics_allow_ips:\n  - 10.0.0.0/99\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("test.yml:3"), "{e}");
        assert!(e.contains("openmetrics_allow_ips"), "{e}");
        let e = parse("hosts: [a.example]\nopenmetrics_allow_cidr: [1, 2]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("openmetrics_allow_cidr"), "{e}");
    }
}
