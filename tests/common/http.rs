//! A minimal HTTP/1.1 client over TLS (any certificate accepted) or plain
//! TCP (from a chosen loopback source address) for the XEP-0363 upload,
//! `/metrics` and `mod_http_api` tests: one request per connection,
//! bounded in time.

use std::net::SocketAddr;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Send one request to `addr` over TLS and read the whole answer.
pub async fn https(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    tokio::time::timeout(Duration::from_secs(20), async {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let name = ServerName::try_from("localhost").expect("name");
        let mut tls = super::client::tls_connector()
            .connect(name, tcp)
            .await
            .expect("TLS handshake");
        let mut head =
            format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        tls.write_all(head.as_bytes()).await.expect("write");
        tls.write_all(body).await.expect("write body");
        tls.flush().await.expect("flush");
        let mut raw = Vec::new();
        // The server may close without TLS close_notify after the answer.
        let _ = tls.read_to_end(&mut raw).await;
        parse(&raw)
    })
    .await
    .expect("HTTP request timed out")
}

/// Send one request over plain TCP from `source` (an address of this
/// machine, e.g. 127.0.0.2, so a test can come from a second loopback
/// address) and read the whole answer.
pub async fn http_from(
    source: std::net::IpAddr,
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    tokio::time::timeout(Duration::from_secs(20), async {
        let socket = if source.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        }
        .expect("socket");
        socket
            .bind(SocketAddr::new(source, 0))
            .unwrap_or_else(|e| panic!("bind {source}: {e}"));
        let mut tcp = socket.connect(addr).await.expect("connect");
        let mut head = format!(
            "{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        tcp.write_all(head.as_bytes()).await.expect("write");
        tcp.write_all(body).await.expect("write body");
        let mut raw = Vec::new();
        let _ = tcp.read_to_end(&mut raw).await;
        parse(&raw)
    })
    .await
    .expect("HTTP request timed out")
}

/// [`http_from`] 127.0.0.1.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    http_from([127, 0, 0, 1].into(), addr, method, target, headers, body).await
}

fn parse(raw: &[u8]) -> Answer {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if let Some(len) = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        body.truncate(len);
    }
    Answer {
        status,
        headers,
        body,
    }
}
