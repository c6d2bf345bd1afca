//! XEP-0363 HTTP file upload against the real binary: a slot from
//! `mod_http_upload`, the PUT and GET over HTTPS on an `ejabberd_http`
//! listener, and the refusals (too large, used twice, wrong size, forged
//! or altered URL); plus slixmpp's own upload plugin over plain HTTP.

use crate::common;

use common::client::Client;
use common::http::https;
use common::server::DEFAULT_MODULES;
use common::{Config, Element, Server};

const NS: &str = "urn:xmpp:http:upload:0";

/// A server with an upload listener; `put_url` is set to the listener's
/// real address by a reload once the port is known.
fn server(tls: bool) -> (Server, std::net::SocketAddr) {
    let server = Server::start_with(Config {
        extra_listeners: vec![format!(
            "port: 0\nip: 127.0.0.1\nmodule: ejabberd_http\ntls: {tls}\nrequest_handlers:\n  /upload: mod_http_upload\n  /admin: ejabberd_web_admin"
        )],
        modules: format!("{DEFAULT_MODULES}  mod_http_upload:\n    put_url: PUT_URL\n    max_size: 1000\n"),
        ..Config::default()
    });
    let addr = server
        .listeners
        .iter()
        .find(|l| l.module == "http")
        .expect("http listener")
        .addr;
    let scheme = if tls { "https" } else { "http" };
    let cfg = std::fs::read_to_string(server.config_path()).expect("config");
    std::fs::write(
        server.config_path(),
        cfg.replace("PUT_URL", &format!("{scheme}://{addr}/upload")),
    )
    .expect("config");
    server.ctl_ok(&["reload_config"]);
    server.register("alice", "localhost", "secret");
    (server, addr)
}

async fn slot(c: &mut Client, name: &str, size: usize) -> Element {
    let id = c.id();
    c.request(
        &format!("<iq type='get' to='localhost' id='{id}'><request xmlns='{NS}' filename='{name}' size='{size}' content-type='image/png'/></iq>"),
        &id,
    )
    .await
}

fn urls(slot: &Element) -> (String, String) {
    let s = slot
        .child("slot")
        .unwrap_or_else(|| panic!("no slot: {slot}"));
    let put = s
        .child("put")
        .and_then(|p| p.attr("url"))
        .expect("put url")
        .to_string();
    let get = s
        .child("get")
        .and_then(|g| g.attr("url"))
        .expect("get url")
        .to_string();
    (put, get)
}

/// The path and query of a URL on `addr`.
fn target(url: &str, addr: std::net::SocketAddr) -> String {
    url.strip_prefix(&format!("https://{addr}"))
        .unwrap_or_else(|| panic!("{url} is not on {addr}"))
        .to_string()
}

#[tokio::test]
async fn upload_and_download_over_https() {
    let (server, addr) = server(true);
    let mut c = Client::login(&server, "alice", "secret", Some("pc")).await;

    // The service is discoverable on the server's domain.
    let id = c.id();
    let info = c
        .request(&format!("<iq type='get' to='localhost' id='{id}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"), &id)
        .await;
    let text = info.to_string();
    assert!(text.contains(NS), "{text}");
    assert!(
        text.contains("category='store'") || text.contains("category=\"store\""),
        "{text}"
    );
    assert!(
        text.contains("max-file-size") && text.contains("1000"),
        "{text}"
    );

    let data: Vec<u8> = (0..700u32).map(|i| (i * 7 % 256) as u8).collect();
    let r = slot(&mut c, "photo of me.png", data.len()).await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    let (put, get) = urls(&r);
    assert!(get.ends_with("/photo%20of%20me.png"), "{get}");
    let len = data.len().to_string();
    let headers = [
        ("Content-Length", len.as_str()),
        ("Content-Type", "image/png"),
    ];
    let a = https(addr, "PUT", &target(&put, addr), &headers, &data).await;
    assert_eq!(a.status, 201, "{a:?}");
    let a = https(addr, "GET", &target(&get, addr), &[], b"").await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.body, data);
    assert_eq!(a.header("content-type"), Some("image/png"));
    assert_eq!(a.header("x-content-type-options"), Some("nosniff"));
    // The same slot cannot be used twice.
    let a = https(addr, "PUT", &target(&put, addr), &headers, &data).await;
    assert_eq!(a.status, 409, "{a:?}");

    // Too large for max_size: not-acceptable with the limit.
    let r = slot(&mut c, "big.bin", 1001).await;
    assert_eq!(r.attr("type"), Some("error"), "{r}");
    let max = r
        .child("error")
        .and_then(|e| e.child("file-too-large"))
        .and_then(|f| f.child_text("max-file-size"));
    assert_eq!(max, Some("1000"), "{r}");

    // A body of another size than granted, an altered size, a forged
    // signature, a made-up path: all refused, nothing stored.
    let r = slot(&mut c, "a.txt", 10).await;
    let (put, get) = urls(&r);
    let a = https(
        addr,
        "PUT",
        &target(&put, addr),
        &[("Content-Length", "9")],
        b"123456789",
    )
    .await;
    assert_eq!(a.status, 400, "{a:?}");
    let altered = target(&put, addr).replace("s=10", "s=9");
    let a = https(
        addr,
        "PUT",
        &altered,
        &[("Content-Length", "9")],
        b"123456789",
    )
    .await;
    assert_eq!(a.status, 403, "{a:?}");
    let forged = target(&put, addr).split("&v=").next().unwrap().to_string() + "&v=00";
    let a = https(
        addr,
        "PUT",
        &forged,
        &[("Content-Length", "10")],
        b"1234567890",
    )
    .await;
    assert_eq!(a.status, 403, "{a:?}");
    let a = https(addr, "GET", &target(&get, addr), &[], b"").await;
    assert_eq!(a.status, 404, "{a:?}");
    let a = https(addr, "GET", "/upload/../../etc/passwd", &[], b"").await;
    assert_eq!(a.status, 404, "{a:?}");
    // Paths of handlers Rookery lacks answer 404.
    let a = https(addr, "GET", "/admin", &[], b"").await;
    assert_eq!(a.status, 404, "{a:?}");
}

/// slixmpp's XEP-0363 plugin (aiohttp) finds the service, asks for a slot,
/// uploads and the file is served back (plain HTTP on loopback: aiohttp
/// verifies certificates and the test server's is self-signed).
#[test]
fn slixmpp_uploads_a_file() {
    let (server, _addr) = server(false);
    common::interop::run_slixmpp_script(
        "slixmpp_upload.py",
        &server,
        &["--jid", "alice@localhost", "--password", "secret"],
    );
}
