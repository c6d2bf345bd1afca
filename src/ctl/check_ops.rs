//! The parts of `rookery ctl check` about a running deployment rather than
//! its files: the data directory's free space (`disk`), doors left open by
//! the configuration (`access`: open in-band registration, `mod_http_api`
//! or `/metrics` open to everyone, a control socket others can reach), and
//! the endpoints (`endpoints`): every listener's port answers and the
//! public URLs clients are given — `mod_http_upload`'s `put_url`,
//! `websocket_url`, `bosh_service_url` — answer over HTTP(S) with a
//! certificate the system trusts, not 404 or a proxy's 5xx.
//!
//! Invariants: nothing here changes anything; every network probe is
//! bounded ([`PROBE_TIMEOUT`]); the endpoints are probed only when the
//! server answers on its control socket (a stopped server is a note, not
//! a list of unreachable ports). Findings use `check.rs`'s levels, so the
//! exit code stays ejabberdctl's: 1 when a problem was found, else 0.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::check::{Finding, Level};
use crate::config::{Config, ListenerModule};

/// Bound on one connection attempt, handshake or answer.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Less free space than this in the data directory is a problem.
const FREE_PROBLEM: u64 = 200 << 20;
/// Less than this (or less than 5 % of the disk) is a warning.
const FREE_WARNING: u64 = 2 << 30;

fn f(level: Level, text: impl Into<String>) -> Finding {
    Finding {
        level,
        text: text.into(),
    }
}

/// Judge `free` of `total` bytes left on the disk of `dir`.
pub fn judge_free(dir: &Path, free: u64, total: u64) -> Finding {
    let shown = dir.display();
    let mib = free >> 20;
    if free < FREE_PROBLEM {
        f(
            Level::Problem,
            format!(
                "{shown}: only {mib} MiB free: messages and uploads will soon be refused \
                 (the database stops writing on a full disk); free space or move data_dir"
            ),
        )
    } else if free < FREE_WARNING || free.saturating_mul(20) < total {
        f(
            Level::Warning,
            format!(
                "{shown}: {mib} MiB free of {} MiB: the disk is filling up",
                total >> 20
            ),
        )
    } else {
        f(Level::Ok, format!("{shown}: {mib} MiB free"))
    }
}

/// The data directory's disk.
pub fn check_disk(config: &Config) -> Vec<Finding> {
    // The directory may not exist yet (a server that never ran): ask
    // about the nearest existing ancestor.
    let mut dir = config.data_dir.as_path();
    while !dir.exists() {
        match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => dir = p,
            _ => {
                dir = Path::new(".");
                break;
            }
        }
    }
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return vec![f(
            Level::Warning,
            format!("{}: cannot check free space", dir.display()),
        )];
    };
    // SAFETY: statvfs writes into the zeroed struct we own; the path is
    // a valid NUL-terminated string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return vec![f(
            Level::Warning,
            format!(
                "{}: cannot check free space: {}",
                dir.display(),
                std::io::Error::last_os_error()
            ),
        )];
    }
    let block = st.f_frsize as u64;
    vec![judge_free(
        &config.data_dir,
        (st.f_bavail as u64).saturating_mul(block),
        (st.f_blocks as u64).saturating_mul(block),
    )]
}

/// Addresses standing for "anyone on the internet" when rules are probed.
const PUBLIC_PROBES: [&str; 2] = ["203.0.113.7", "2001:db8::7"];

fn public_ip_allowed(allows: impl Fn(IpAddr) -> bool) -> bool {
    PUBLIC_PROBES
        .iter()
        .any(|p| allows(p.parse().expect("address")))
}

/// Doors the configuration leaves open to everyone.
pub fn check_open_doors(config: &Config) -> Vec<Finding> {
    let mut out = Vec::new();
    // In-band registration (XEP-0077) from any address.
    if let Some(opts) = config.module_options("mod_register") {
        let rule = |name: &str| opts.get(name).and_then(|v| v.as_str()).map(str::to_string);
        let ip_open = match rule("ip_access") {
            Some(r) => public_ip_allowed(|ip| config.access_allows(&r, None, Some(ip))),
            None => false, // the default: loopback only
        };
        let access = rule("access").unwrap_or_else(|| "all".into());
        let host = config.hosts.first().map(String::as_str).unwrap_or("");
        let open = ip_open
            && public_ip_allowed(|ip| {
                config.access_allows(&access, Some(("newuser", host)), Some(ip))
            });
        if open {
            out.push(f(
                Level::Warning,
                "mod_register: anyone on the internet can create accounts (ip_access and access \
                 allow every address): spammers find such servers within days; restrict \
                 ip_access, set registration_timeout, or create accounts with rookery ctl",
            ));
        } else {
            out.push(f(Level::Ok, "mod_register: not open to every address"));
        }
    }
    // Administration over HTTP for everyone.
    let api_open = config.listen.iter().any(|l| !l.api_paths.is_empty())
        && public_ip_allowed(|ip| {
            crate::ctl_catalog::commands().iter().any(|c| {
                config.api_allows(
                    crate::config::acl::Frontend::HttpApi,
                    None,
                    Some(ip),
                    c.name,
                )
            })
        });
    if api_open {
        out.push(f(
            Level::Problem,
            "mod_http_api: api_permissions let callers from any address run commands without \
             credentials (`who: all` or an open ip rule with from: mod_http_api): anyone can \
             administer this server",
        ));
    }
    let metrics_served = config.listen.iter().any(|l| !l.metrics_paths.is_empty());
    if metrics_served && public_ip_allowed(|ip| config.openmetrics.allows(ip)) {
        out.push(f(
            Level::Warning,
            "/metrics: openmetrics_allow_ips lets every address read the server's metrics \
             (account counts, traffic); allow only the scraper",
        ));
    }
    out.extend(check_ctl_socket(&config.ctl_socket));
    out
}

/// The control socket and its directory: nobody but the server's user
/// should reach or replace it.
pub fn check_ctl_socket(path: &Path) -> Vec<Finding> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(meta) = std::fs::metadata(dir) {
            let mode = meta.permissions().mode();
            if mode & 0o002 != 0 && mode & 0o1000 == 0 {
                out.push(f(
                    Level::Problem,
                    format!(
                        "control socket directory {} is writable by every user (mode {:o}): \
                         another user could replace the socket; chmod 700 it",
                        dir.display(),
                        mode & 0o7777
                    ),
                ));
            }
        }
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            out.push(f(
                Level::Warning,
                format!(
                    "control socket {} has mode {:o}: other users may connect (the server \
                     still refuses other users' connections); it should be 600",
                    path.display(),
                    mode & 0o777
                ),
            ));
        }
    }
    out
}

/// Whether a server answers on the control socket.
fn server_running(config: &Config) -> bool {
    std::os::unix::net::UnixStream::connect(&config.ctl_socket).is_ok()
}

/// The public URLs of the configuration, for each host: (what, URL).
pub fn public_urls(config: &Config) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let put = config
        .module_options("mod_http_upload")
        .and_then(|o| o.get("put_url"))
        .and_then(|v| v.as_str())
        .map(str::to_string);
    for host in &config.hosts {
        if let Some(url) = &put {
            out.push((
                format!("{host}: mod_http_upload put_url"),
                url.replace("@HOST@", host),
            ));
        }
    }
    if let Some(url) = &config.websocket.url {
        out.push(("websocket_url".to_string(), url.clone()));
    }
    if let Some(url) = &config.websocket.bosh_url {
        out.push(("bosh_service_url".to_string(), url.clone()));
    }
    out.sort();
    out.dedup();
    out
}

/// A URL's parts: (TLS, host, port, path).
fn split_url(url: &str) -> Option<(bool, String, u16, String)> {
    let (scheme, rest) = url.split_once("://")?;
    let tls = match scheme {
        "https" | "wss" => true,
        "http" | "ws" => false,
        _ => return None,
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => match p.parse::<u16>() {
            Ok(p) => (h, p),
            Err(_) => (authority, if tls { 443 } else { 80 }),
        },
        _ => (authority, if tls { 443 } else { 80 }),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then(|| (tls, host.to_string(), port, path))
}

fn connect(host: &str, port: u16) -> Result<TcpStream, String> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    let mut last = format!("{host} has no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, PROBE_TIMEOUT) {
            Ok(s) => {
                s.set_read_timeout(Some(PROBE_TIMEOUT)).ok();
                s.set_write_timeout(Some(PROBE_TIMEOUT)).ok();
                return Ok(s);
            }
            Err(e) => last = format!("cannot connect to {a}: {e}"),
        }
    }
    Err(last)
}

fn client_config() -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions of ring")
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

/// Send `method` (with an empty body) to `url`: the HTTP status, or why
/// there was none.
pub fn probe(method: &str, url: &str) -> Result<u16, String> {
    let (tls, host, port, path) = split_url(url).ok_or("not an http(s):// or ws(s):// URL")?;
    let mut tcp = connect(&host, port)?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let mut answer = Vec::new();
    if tls {
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|e| format!("bad host name {host}: {e}"))?;
        let conn = rustls::ClientConnection::new(client_config(), name)
            .map_err(|e| format!("TLS: {e}"))?;
        let mut s = rustls::StreamOwned::new(conn, &mut tcp);
        s.write_all(request.as_bytes())
            .map_err(|e| format!("TLS with {host}:{port} failed: {e}"))?;
        let _ = Read::by_ref(&mut s).take(512).read_to_end(&mut answer);
    } else {
        tcp.write_all(request.as_bytes())
            .map_err(|e| format!("cannot send: {e}"))?;
        let _ = tcp.take(512).read_to_end(&mut answer);
    }
    let text = String::from_utf8_lossy(&answer);
    text.strip_prefix("HTTP/1.")
        .and_then(|r| r.get(2..5))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("no HTTP answer from {host}:{port}"))
}

/// Judge one probed URL.
pub fn judge_url(what: &str, url: &str, result: Result<u16, String>) -> Finding {
    match result {
        Ok(status) if status == 404 || status >= 500 => f(
            Level::Problem,
            format!(
                "{what} {url}: answered HTTP {status}: the path is not served there (check the \
                 listener's request_handlers and any reverse proxy)"
            ),
        ),
        Ok(status) => f(
            Level::Ok,
            format!("{what} {url}: reachable (HTTP {status})"),
        ),
        Err(why) => f(
            Level::Problem,
            format!("{what} {url}: unreachable: {why}; clients will fail to use it"),
        ),
    }
}

/// Every listener's port answers, and every public URL.
pub fn check_endpoints(config: &Config) -> Vec<Finding> {
    if !server_running(config) {
        return vec![f(
            Level::Note,
            format!(
                "the server does not answer on {}: ports and URLs not checked (start it and run \
                 the check again)",
                config.ctl_socket.display()
            ),
        )];
    }
    let mut out = Vec::new();
    for l in &config.listen {
        if l.port == 0 {
            continue; // chosen at start: nothing to check against
        }
        let ip = match l.ip {
            IpAddr::V4(v) if v.is_unspecified() => IpAddr::from([127, 0, 0, 1]),
            IpAddr::V6(v) if v.is_unspecified() => IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let kind = match l.module {
            ListenerModule::C2s => "c2s",
            ListenerModule::S2s => "s2s",
            ListenerModule::Service => "component",
            ListenerModule::Http => "http",
        };
        let addr = SocketAddr::new(ip, l.port);
        match TcpStream::connect_timeout(&addr, PROBE_TIMEOUT) {
            Ok(_) => out.push(f(
                Level::Ok,
                format!("{kind} listener {addr} accepts connections"),
            )),
            Err(e) => out.push(f(
                Level::Problem,
                format!(
                    "{kind} listener {addr} (line {}) does not accept connections: {e}",
                    l.line
                ),
            )),
        }
    }
    for (what, url) in public_urls(config) {
        // An upload service answers an unsigned PUT of a file under its
        // path with 403 (401, ...), and only a path it does not serve with
        // 404; WebSocket and BOSH paths answer a plain GET with 4xx but 404.
        let result = if what.ends_with("put_url") {
            probe(
                "PUT",
                &format!(
                    "{}/{}/rookery-check",
                    url.trim_end_matches('/'),
                    "0".repeat(32)
                ),
            )
        } else {
            probe("GET", &url)
        };
        out.push(judge_url(&what, &url, result));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_space_levels() {
        let d = Path::new("/var/lib/rookery");
        assert_eq!(judge_free(d, 50 << 20, 100 << 30).level, Level::Problem);
        assert_eq!(judge_free(d, 1 << 30, 100 << 30).level, Level::Warning);
        assert_eq!(judge_free(d, 3 << 30, 100 << 30).level, Level::Warning);
        assert_eq!(judge_free(d, 30 << 30, 100 << 30).level, Level::Ok);
    }

    #[test]
    fn urls_split() {
        assert_eq!(
            split_url("https://chat.example.org:5443/upload"),
            Some((true, "chat.example.org".into(), 5443, "/upload".into()))
        );
        assert_eq!(
            split_url("wss://example.org/ws"),
            Some((true, "example.org".into(), 443, "/ws".into()))
        );
        assert_eq!(
            split_url("http://[::1]:5280"),
            Some((false, "::1".into(), 5280, "/".into()))
        );
        assert_eq!(split_url("ftp://x/"), None);
    }

    fn config(text: &str) -> Config {
        Config::from_str(text, "test.yml", Path::new("/tmp")).unwrap()
    }

    fn levels_with(findings: &[Finding], needle: &str) -> Vec<Level> {
        findings
            .iter()
            .filter(|x| x.text.contains(needle))
            .map(|x| x.level)
            .collect()
    }

    #[test]
    fn open_doors() {
        let c = config(
            "hosts: [example.org]\nctl_socket: /nonexistent/x.ctl\nmodules:\n  mod_register:\n    ip_access: all\n",
        );
        let v = check_open_doors(&c);
        assert_eq!(levels_with(&v, "mod_register"), [Level::Warning], "{v:?}");
        let c = config(
            "hosts: [example.org]\nctl_socket: /nonexistent/x.ctl\nacl:\n  lan:\n    ip: 10.0.0.0/8\naccess_rules:\n  lan:\n    allow: lan\nmodules:\n  mod_register:\n    ip_access: lan\n",
        );
        assert_eq!(
            levels_with(&check_open_doors(&c), "mod_register"),
            [Level::Ok]
        );
        let c = config(
            "hosts: [example.org]\nctl_socket: /nonexistent/x.ctl\nlisten:\n  - port: 5443\n    module: ejabberd_http\n    request_handlers:\n      /api: mod_http_api\n      /metrics: mod_prometheus\n\
             openmetrics_allow_ips: [0.0.0.0/0, \"::/0\"]\napi_permissions:\n  open:\n    from: mod_http_api\n    who: all\n    what: status\n",
        );
        let v = check_open_doors(&c);
        assert_eq!(levels_with(&v, "mod_http_api"), [Level::Problem], "{v:?}");
        assert_eq!(levels_with(&v, "/metrics"), [Level::Warning], "{v:?}");
        // The defaults leave nothing open.
        let c = config("hosts: [example.org]\nctl_socket: /nonexistent/x.ctl\n");
        assert!(check_open_doors(&c).is_empty());
    }

    #[test]
    fn a_control_socket_others_can_reach() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let sock = open.join("rookery.ctl");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
        let v = check_ctl_socket(&sock);
        assert_eq!(
            v.iter().map(|x| x.level).collect::<Vec<_>>(),
            [Level::Problem, Level::Warning],
            "{v:?}"
        );
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(check_ctl_socket(&sock).is_empty());
    }
}
