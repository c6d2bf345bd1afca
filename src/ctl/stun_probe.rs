//! A STUN Binding request (RFC 5389 §7) to one STUN/TURN server, for
//! `rookery ctl check turn`: does the server configured in
//! `mod_stun_disco`'s `services` answer at all? Over UDP the request is
//! retransmitted (RFC 5389 §7.2.1, shortened) until the deadline; over TCP
//! it is sent once on a fresh connection.
//!
//! Invariants: an answer counts only when it decodes as a STUN message with
//! our transaction id; a Binding error response is reported with its code;
//! nothing is left open when [`binding`] returns (the socket is dropped).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use bytecodec::{DecodeExt, EncodeExt};
use stun_codec::rfc5389::attributes::{ErrorCode, MappedAddress, Software, XorMappedAddress};
use stun_codec::rfc5389::{methods::BINDING, Attribute};
use stun_codec::{Message, MessageClass, MessageDecoder, MessageEncoder, TransactionId};

/// What the server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A Binding success, with the address the server saw us at.
    Mapped(Option<SocketAddr>),
    /// A Binding error response (code and reason).
    Error(u16, String),
}

fn request() -> (TransactionId, Vec<u8>) {
    let id = TransactionId::new(rand::random());
    let mut m = Message::<Attribute>::new(MessageClass::Request, BINDING, id);
    m.add_attribute(Software::new_static("rookery ctl check"));
    let bytes = MessageEncoder::new()
        .encode_into_bytes(m)
        .expect("a Binding request encodes");
    (id, bytes)
}

/// Decode `bytes` as the answer to `id`; `None` when it is not one.
fn answer(bytes: &[u8], id: TransactionId) -> Option<Answer> {
    let m = MessageDecoder::<Attribute>::new()
        .decode_from_bytes(bytes)
        .ok()?
        .ok()?;
    if m.transaction_id() != id || m.method() != BINDING {
        return None;
    }
    match m.class() {
        MessageClass::SuccessResponse => Some(Answer::Mapped(
            m.get_attribute::<XorMappedAddress>()
                .map(|a| a.address())
                .or_else(|| m.get_attribute::<MappedAddress>().map(|a| a.address())),
        )),
        MessageClass::ErrorResponse => {
            let e = m.get_attribute::<ErrorCode>();
            Some(Answer::Error(
                e.map_or(0, |e| e.code()),
                e.map(|e| e.reason_phrase().to_string()).unwrap_or_default(),
            ))
        }
        _ => None,
    }
}

/// Send a Binding request to `addr` and wait up to `timeout` for the answer.
pub fn binding(addr: SocketAddr, tcp: bool, timeout: Duration) -> Result<Answer, String> {
    let (id, bytes) = request();
    let deadline = Instant::now() + timeout;
    if tcp {
        let mut s = TcpStream::connect_timeout(&addr, timeout)
            .map_err(|e| format!("cannot connect: {e}"))?;
        s.set_write_timeout(Some(timeout)).ok();
        s.write_all(&bytes)
            .map_err(|e| format!("cannot send: {e}"))?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1500];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err("no answer".into());
            }
            s.set_read_timeout(Some(left)).ok();
            match s.read(&mut chunk) {
                Ok(0) => return Err("the connection was closed without an answer".into()),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(_) => return Err("no answer".into()),
            }
            // A STUN header is 20 bytes; its length field counts the rest.
            if buf.len() >= 20 {
                let total = 20 + u16::from_be_bytes([buf[2], buf[3]]) as usize;
                if buf.len() >= total {
                    return answer(&buf[..total], id)
                        .ok_or_else(|| "the answer is not a STUN Binding response".into());
                }
            }
        }
    }
    let local: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse().expect("address")
    } else {
        "[::]:0".parse().expect("address")
    };
    let sock = UdpSocket::bind(local).map_err(|e| format!("cannot open a UDP socket: {e}"))?;
    sock.connect(addr)
        .map_err(|e| format!("cannot reach: {e}"))?;
    let mut rto = Duration::from_millis(250);
    let mut buf = [0u8; 1500];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err("no answer".into());
        }
        // An ICMP "port unreachable" shows up as an error on a later send.
        sock.send(&bytes).map_err(|e| format!("cannot send: {e}"))?;
        let until = (now + rto).min(deadline);
        while let Some(left) = until
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
        {
            sock.set_read_timeout(Some(left)).ok();
            match sock.recv(&mut buf) {
                Ok(n) => {
                    if let Some(a) = answer(&buf[..n], id) {
                        return Ok(a);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    return Err("refused (nothing listens on that UDP port)".into())
                }
                Err(_) => break,
            }
        }
        rto *= 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny STUN server on loopback answering one Binding request.
    #[test]
    fn a_binding_request_gets_the_mapped_address() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            let (n, from) = server.recv_from(&mut buf).unwrap();
            let req = MessageDecoder::<Attribute>::new()
                .decode_from_bytes(&buf[..n])
                .unwrap()
                .unwrap();
            let mut resp = Message::<Attribute>::new(
                MessageClass::SuccessResponse,
                BINDING,
                req.transaction_id(),
            );
            resp.add_attribute(XorMappedAddress::new(from));
            let bytes = MessageEncoder::new().encode_into_bytes(resp).unwrap();
            server.send_to(&bytes, from).unwrap();
            from
        });
        let a = binding(addr, false, Duration::from_secs(3)).unwrap();
        let from = t.join().unwrap();
        assert_eq!(a, Answer::Mapped(Some(from)));
    }

    #[test]
    fn silence_and_refusal_are_errors_within_the_timeout() {
        // Bound but never answering.
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let start = Instant::now();
        let e = binding(
            silent.local_addr().unwrap(),
            false,
            Duration::from_millis(600),
        )
        .unwrap_err();
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        assert!(e.contains("no answer") || e.contains("refused"), "{e}");
        // Nothing listening on TCP.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        drop(l);
        let e = binding(a, true, Duration::from_secs(1)).unwrap_err();
        assert!(e.contains("cannot connect"), "{e}");
        // Garbage in answer.
        assert_eq!(
            answer(b"not stun at all, not stun", TransactionId::new([0; 12])),
            None
        );
    }
}
