//! The WebSocket transport (RFC 7395) of `--transport ws`.
//!
//! A [`WsLink`] is a WebSocket client connection (tokio-tungstenite, the
//! crate Rookery's server side uses; no framing code here) over plain TCP
//! or TLS, opened with the `xmpp` subprotocol on a path such as `/ws`
//! (Rookery, ejabberd's `ejabberd_http_ws`) or `/xmpp-websocket` (Prosody's
//! mod_websocket). It turns the XMPP byte stream the rest of the load
//! generator speaks into RFC 7395 messages and back, so that scenarios are
//! the same code over both transports:
//!
//! * Out: [`WsLink::send`] takes bytes holding whole top-level elements
//!   (one or several, as a scenario writes them), splits them, gives each
//!   element that declares no default namespace `xmlns='jabber:client'`
//!   (every message must declare its namespace) and sends each as one text
//!   message. The stream header and end are written by `conn.rs` as the
//!   framing's `<open/>` and `<close/>` directly ([`open`], [`CLOSE`]).
//! * In: each text message is one element. `<open/>` becomes a
//!   `<stream:stream ...>` header and `<close/>` the `</stream:stream>` end
//!   for the splitter (`xml.rs`); other elements are passed on as they are.
//!   A binary message or a close frame ends the connection (kind `closed`
//!   or `protocol`).
//!
//! Invariants: one element per text message out; nothing is appended to
//! the read buffer but whole messages, so a read cancelled by a scenario's
//! `select!` loses nothing; WebSocket pings are answered by tungstenite
//! while reading. Buffers are small (an idle session must cost the client
//! little): 4 KiB of read buffer; the messages of one `send` are written
//! together at its flush (up to 8 KiB at a time), as c2s over TCP writes a
//! batch of stanzas in one TLS record.

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::conn::{Error, Io};
use crate::xml;

/// The RFC 7395 framing namespace.
pub const NS_FRAMING: &str = "urn:ietf:params:xml:ns:xmpp-framing";
/// The WebSocket subprotocol of RFC 7395.
pub const SUBPROTOCOL: &str = "xmpp";
/// The framing's end of stream.
pub const CLOSE: &[u8] = b"<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>";

/// The framing's stream header (`<open/>`) for `domain`.
pub fn open(domain: &str) -> String {
    format!("<open xmlns='{NS_FRAMING}' to='{domain}' version='1.0' xml:lang='en'/>")
}

fn err(kind: &'static str, msg: impl Into<String>) -> Error {
    Error {
        kind,
        msg: msg.into(),
    }
}

/// A WebSocket connection carrying one XMPP stream.
pub struct WsLink {
    ws: WebSocketStream<Io>,
}

impl WsLink {
    /// The WebSocket opening handshake on `io` (TCP or TLS already up) for
    /// `url` (`wss://host:port/path`), asking for the `xmpp` subprotocol;
    /// a server that does not agree to it fails the handshake.
    pub async fn handshake(io: Io, url: &str) -> Result<WsLink, Error> {
        let mut req = url
            .into_client_request()
            .map_err(|e| err("ws", format!("bad WebSocket URL {url:?}: {e}")))?;
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static(SUBPROTOCOL),
        );
        let cfg = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(8192)
            .max_message_size(Some(xml::MAX_UNIT));
        match tokio_tungstenite::client_async_with_config(req, io, Some(cfg)).await {
            Ok((ws, _)) => Ok(WsLink { ws }),
            Err(e) => Err(err("ws", format!("WebSocket handshake with {url}: {e}"))),
        }
    }

    /// Sends the elements in `data`, one text message each, then flushes.
    pub async fn send(&mut self, data: &[u8]) -> Result<(), Error> {
        let mut rest = data;
        let mut n = 0;
        while !rest.trim_ascii().is_empty() {
            let u = match xml::split(rest, true) {
                Ok(Some(u)) => u,
                Ok(None) => return Err(err("protocol", "incomplete element to send")),
                Err(e) => return Err(err("protocol", format!("element to send: {e}"))),
            };
            let msg = with_namespace(&rest[u.raw.clone()], &rest[u.name.clone()]);
            self.ws
                .feed(Message::text(msg))
                .await
                .map_err(|e| err("io", e.to_string()))?;
            rest = &rest[u.len..];
            n += 1;
        }
        if n > 0 {
            self.ws
                .flush()
                .await
                .map_err(|e| err("io", e.to_string()))?;
        }
        Ok(())
    }

    /// Sends `text` as one message as it is (the framing's own elements).
    pub async fn send_raw(&mut self, text: &[u8]) -> Result<(), Error> {
        let s = std::str::from_utf8(text).map_err(|_| err("protocol", "non-UTF-8 to send"))?;
        self.ws
            .send(Message::text(s))
            .await
            .map_err(|e| err("io", e.to_string()))
    }

    /// Waits for the next message and appends it (translated) to `buf`;
    /// returns the number of bytes appended. Cancel-safe.
    pub async fn recv_into(&mut self, buf: &mut Vec<u8>) -> Result<usize, Error> {
        loop {
            let m = match self.ws.next().await {
                None => return Err(err("closed", "WebSocket closed by the server")),
                Some(Err(e)) => return Err(err("io", e.to_string())),
                Some(Ok(m)) => m,
            };
            match m {
                Message::Text(t) => {
                    let before = buf.len();
                    inbound(t.as_str(), buf);
                    return Ok(buf.len() - before);
                }
                Message::Binary(_) => {
                    return Err(err(
                        "protocol",
                        "binary WebSocket message (RFC 7395: text only)",
                    ))
                }
                Message::Close(f) => {
                    return Err(err(
                        "closed",
                        match f {
                            Some(f) => format!("WebSocket close {}: {}", f.code, f.reason),
                            None => "WebSocket close".to_string(),
                        },
                    ))
                }
                // Pings are answered by tungstenite; pongs and raw frames
                // carry nothing for us.
                _ => continue,
            }
        }
    }

    /// Closes the WebSocket (close frame, then TLS and TCP).
    pub async fn close(&mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// Appends the translation of one received text message to `buf`.
fn inbound(text: &str, buf: &mut Vec<u8>) {
    let t = text.trim();
    let is_framing = |name: &str| {
        t.strip_prefix('<')
            .and_then(|r| r.strip_prefix(name))
            .is_some_and(|r| r.starts_with([' ', '/', '>', '\t', '\n', '\r']))
            && t.contains(NS_FRAMING)
    };
    if is_framing("open") {
        // <open a='b' .../>  ->  <stream:stream a='b' ...>
        let body = t
            .trim_start_matches("<open")
            .trim_end_matches('>')
            .trim_end_matches('/');
        buf.extend_from_slice(b"<stream:stream");
        buf.extend_from_slice(body.as_bytes());
        buf.push(b'>');
    } else if is_framing("close") {
        buf.extend_from_slice(b"</stream:stream>");
    } else {
        buf.extend_from_slice(t.as_bytes());
    }
}

/// `elem` as text, with `xmlns='jabber:client'` added to its start tag if it
/// declares no default namespace (`name` is its local name).
fn with_namespace(elem: &[u8], name: &[u8]) -> String {
    let text = String::from_utf8_lossy(elem);
    let tag_end = elem.iter().position(|&c| c == b'>').unwrap_or(elem.len());
    let start_tag = &elem[..tag_end];
    if xml_has_default_ns(start_tag) {
        return text.into_owned();
    }
    // The name starts right after '<' (our elements are unprefixed).
    let at = 1 + name.len();
    if elem.len() < at || &elem[1..at] != name {
        return text.into_owned();
    }
    let mut s = String::with_capacity(elem.len() + 24);
    s.push_str(&text[..at]);
    s.push_str(" xmlns='jabber:client'");
    s.push_str(&text[at..]);
    s
}

fn xml_has_default_ns(start_tag: &[u8]) -> bool {
    start_tag
        .windows(7)
        .any(|w| w == b" xmlns=" || w == b"\txmlns=" || w == b"\nxmlns=")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tr(s: &str) -> String {
        let mut b = Vec::new();
        inbound(s, &mut b);
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn open_and_close_become_stream_header_and_end() {
        let h = tr("<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' from='localhost' id='x1' version='1.0'/>");
        assert_eq!(
            h,
            "<stream:stream xmlns='urn:ietf:params:xml:ns:xmpp-framing' from='localhost' id='x1' version='1.0'>"
        );
        let u = xml::split(h.as_bytes(), false).unwrap().unwrap();
        assert_eq!(u.kind, xml::Kind::Header);
        assert_eq!(&h.as_bytes()[u.id.unwrap()], b"x1");
        let e = tr("<close xmlns=\"urn:ietf:params:xml:ns:xmpp-framing\" />");
        assert_eq!(e, "</stream:stream>");
        let m = "<message xmlns='jabber:client' type='chat'><body>open</body></message>";
        assert_eq!(tr(m), m);
        // An <open/> in another namespace is not the framing's.
        assert_eq!(
            tr("<openx xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>"),
            "<openx xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>"
        );
    }

    #[test]
    fn namespaces_are_declared_once() {
        assert_eq!(
            with_namespace(b"<presence/>", b"presence"),
            "<presence xmlns='jabber:client'/>"
        );
        assert_eq!(
            with_namespace(b"<message to='a@b'><body>x</body></message>", b"message"),
            "<message xmlns='jabber:client' to='a@b'><body>x</body></message>"
        );
        let auth = b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AA==</auth>";
        assert_eq!(with_namespace(auth, b"auth"), String::from_utf8_lossy(auth));
        // A child's declaration does not count for the top element.
        assert_eq!(
            with_namespace(
                b"<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>",
                b"iq"
            ),
            "<iq xmlns='jabber:client' type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>"
        );
    }
}
