//! `rookery ctl check` on what breaks a running deployment, against the
//! real binary: the upload URL clients are given is probed over real HTTP
//! (reachable; a closed port, a path that answers 404 and a certificate
//! the system does not trust are problems, exit 1), the endpoints of a
//! stopped server are not probed (a note, exit 0), the data directory's
//! free space is reported, and open in-band registration is warned about.

use crate::common;

use common::server::DEFAULT_MODULES;
use common::{Config, Server};

/// A server with plain and TLS HTTP listeners serving uploads; `put_url`
/// is rewritten by each step (only `rookery ctl` reads it again).
fn server() -> (Server, std::net::SocketAddr, std::net::SocketAddr) {
    let server = Server::start_with(Config {
        extra_listeners: vec![
            "port: 0\nip: 127.0.0.1\nmodule: ejabberd_http\nrequest_handlers:\n  /upload: mod_http_upload".to_string(),
            "port: 0\nip: 127.0.0.1\nmodule: ejabberd_http\ntls: true\nrequest_handlers:\n  /upload: mod_http_upload".to_string(),
        ],
        modules: format!(
            "{DEFAULT_MODULES}  mod_http_upload:\n    put_url: PUT_URL\n  mod_register:\n    ip_access: all\n"
        ),
        ..Config::default()
    });
    let http: Vec<_> = server
        .listeners
        .iter()
        .filter(|l| l.module == "http")
        .map(|l| l.addr)
        .collect();
    assert_eq!(http.len(), 2, "{:?}", server.listeners);
    (server, http[0], http[1])
}

/// `rookery ctl check WHAT`: the exit code and the report (printed on
/// stdout, or on stderr when the command fails).
fn check(server: &Server, what: &str) -> (i32, String) {
    let (code, out, err) = server.ctl(&["check", what]);
    (code, format!("{out}{err}"))
}

fn with_put_url(server: &Server, template: &str, url: &str) {
    std::fs::write(server.config_path(), template.replace("PUT_URL", url)).expect("config");
}

#[test]
fn endpoints_disk_and_open_doors() {
    let (mut server, plain, tls) = server();
    let template = std::fs::read_to_string(server.config_path()).expect("config");

    // Reachable: the upload path answers.
    with_put_url(&server, &template, &format!("http://{plain}/upload"));
    let (code, out) = check(&server, "endpoints");
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("put_url http://{plain}/upload: reachable")),
        "{out}"
    );

    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    with_put_url(&server, &template, &format!("http://{closed}/upload"));
    let (code, out) = check(&server, "endpoints");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("PROBLEM") && out.contains(&format!("{closed}/upload: unreachable")),
        "{out}"
    );
    assert!(out.contains("1 problem(s)"), "{out}");

    // A path the listener does not serve.
    with_put_url(&server, &template, &format!("http://{plain}/files"));
    let (code, out) = check(&server, "endpoints");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("answered HTTP 404"), "{out}");

    // HTTPS with the test server's self-signed certificate: not trusted.
    with_put_url(
        &server,
        &template,
        &format!("https://localhost:{}/upload", tls.port()),
    );
    let (code, out) = check(&server, "endpoints");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("unreachable") && out.contains("TLS"), "{out}");

    // Disk and open doors.
    let (_, out) = check(&server, "disk");
    assert!(out.contains("MiB free"), "{out}");
    let (_, out) = check(&server, "access");
    assert!(
        out.contains("warning") && out.contains("anyone on the internet can create accounts"),
        "{out}"
    );

    // A stopped server: nothing to probe, not a problem.
    with_put_url(&server, &template, &format!("http://{closed}/upload"));
    assert!(server.stop().success());
    let (code, out) = check(&server, "endpoints");
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("does not answer") && out.contains("not checked"),
        "{out}"
    );
    let (code, out) = check(&server, "nonsense");
    assert_eq!(code, 2, "{out}");
}

/// `check dns` asks the servers `s2s_dns_servers` names (here the tests'
/// DNS server): a public host with an address but no `_xmpp-client` SRV
/// record and no c2s listener on 5222 fails clearly; with the SRV record
/// it passes.
#[test]
fn dns_check_asks_s2s_dns_servers() {
    use common::dns::{Dns, Rr};
    let host = "chat.rookery-check.net";
    let run = |records: Vec<Rr>| -> (i32, String, bool) {
        let dns = Dns::start(records);
        let mut server = Server::start_with(Config {
            hosts: vec![host.to_string()],
            extra_yaml: format!("s2s_dns_servers: [\"{}\"]\ns2s_dns_timeout: 2\n", dns.addr),
            ..Config::default()
        });
        assert!(server.stop().success());
        let (code, out) = check(&server, "dns");
        (
            code,
            out,
            dns.asked(&format!("_xmpp-client._tcp.{host}"), "SRV"),
        )
    };
    let addr = Rr::Addr(host.to_string(), [127, 0, 0, 1].into());
    let (code, out, asked) = run(vec![addr.clone()]);
    assert!(asked, "the test DNS server was not asked");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("PROBLEM") && out.contains("no c2s listener is on 5222"),
        "{out}"
    );
    let srv = Rr::Srv(
        format!("_xmpp-client._tcp.{host}"),
        0,
        0,
        5222,
        host.to_string(),
    );
    let (code, out, _) = run(vec![addr, srv]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("_xmpp-client._tcp → {host}:5222")),
        "{out}"
    );
}
