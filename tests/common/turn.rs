//! A real TURN server for tests and a small TURN client (RFC 5766 over UDP,
//! messages built with the `stun_codec` crate): [`Coturn`] starts Debian's
//! `turnserver` on loopback with `use-auth-secret` (the TURN REST
//! credentials `mod_stun_disco` hands out) in a temporary directory, on
//! ports it picks; [`TurnClient`] allocates a relay with the long-term
//! credential mechanism (401 challenge, then USERNAME/REALM/NONCE/
//! MESSAGE-INTEGRITY), installs a permission and sends data through it.
//!
//! Invariants: the turnserver is killed and reaped when [`Coturn`] drops;
//! every exchange is bounded (retransmitted over UDP until its deadline).

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytecodec::{DecodeExt, EncodeExt};
use stun_codec::rfc5389::attributes::{
    AlternateServer, ErrorCode, Fingerprint, MappedAddress, MessageIntegrity, Nonce, Realm,
    Software, UnknownAttributes, Username, XorMappedAddress,
};
use stun_codec::rfc5389::methods::BINDING;
use stun_codec::rfc5766::attributes::{
    ChannelNumber, Data, DontFragment, EvenPort, Lifetime, RequestedTransport, ReservationToken,
    XorPeerAddress, XorRelayAddress,
};
use stun_codec::rfc5766::methods::{ALLOCATE, CREATE_PERMISSION, SEND};
use stun_codec::{
    define_attribute_enums, Message, MessageClass, MessageDecoder, MessageEncoder, Method,
    TransactionId,
};

define_attribute_enums!(
    Attribute,
    AttributeDecoder,
    AttributeEncoder,
    [
        MappedAddress,
        Username,
        MessageIntegrity,
        ErrorCode,
        UnknownAttributes,
        Realm,
        Nonce,
        XorMappedAddress,
        Software,
        AlternateServer,
        Fingerprint,
        ChannelNumber,
        Lifetime,
        XorPeerAddress,
        Data,
        XorRelayAddress,
        EvenPort,
        RequestedTransport,
        DontFragment,
        ReservationToken
    ]
);

/// Where Debian's coturn puts its server.
pub const TURNSERVER: &str = "/usr/bin/turnserver";

/// Whether coturn is installed.
pub fn coturn_available() -> bool {
    std::path::Path::new(TURNSERVER).exists()
}

use super::ports::{free_port, free_ports};

/// A running coturn.
pub struct Coturn {
    child: Child,
    _dir: tempfile::TempDir,
    /// Its STUN/TURN address (UDP and TCP).
    pub addr: SocketAddr,
    /// The relay port range it was given.
    pub relay_ports: (u16, u16),
    /// What it printed so far (for failure messages).
    pub log: Arc<Mutex<String>>,
}

impl Coturn {
    /// Start `turnserver` with the shared `secret` and `realm`; returns once
    /// it answers a STUN Binding request (panics after 20 s).
    pub fn start(secret: &str, realm: &str) -> Coturn {
        let dir = tempfile::Builder::new()
            .prefix("rookery-coturn-")
            .tempdir()
            .expect("tempdir");
        let port = free_port();
        // A small relay range above a free port (busy ones are skipped).
        let low = free_ports(10);
        let relay_ports = (low, low + 9);
        let mut child = Command::new(TURNSERVER)
            .current_dir(dir.path())
            .args(["-n", "--no-cli", "--no-tls", "--no-dtls", "--simple-log"])
            .args(["--log-file", "stdout", "--listening-ip", "127.0.0.1"])
            .args(["--relay-ip", "127.0.0.1", "--allow-loopback-peers"])
            .arg(format!("--listening-port={port}"))
            .arg(format!("--min-port={}", relay_ports.0))
            .arg(format!("--max-port={}", relay_ports.1))
            .args(["--use-auth-secret", "--static-auth-secret", secret])
            .args(["--realm", realm])
            .arg(format!("--userdb={}", dir.path().join("turndb").display()))
            .arg(format!(
                "--pidfile={}",
                dir.path().join("turnserver.pid").display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {TURNSERVER}: {e}"));
        let log = Arc::new(Mutex::new(String::new()));
        for pipe in [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut l = log.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
            });
        }
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut coturn = Coturn {
            child,
            _dir: dir,
            addr,
            relay_ports,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = coturn.child.try_wait() {
                panic!("turnserver exited ({status}):\n{}", coturn.log());
            }
            if TurnClient::new(addr)
                .binding(Duration::from_millis(300))
                .is_some()
            {
                return coturn;
            }
            assert!(
                Instant::now() < deadline,
                "turnserver did not answer within 20 s:\n{}",
                coturn.log()
            );
        }
    }

    /// What it printed.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TURN client on one UDP socket (one 5-tuple, so one allocation).
pub struct TurnClient {
    pub sock: UdpSocket,
    server: SocketAddr,
    /// After a successful Allocate: username, realm, nonce, password.
    auth: Option<(Username, Realm, Nonce, String)>,
}

/// Why a request failed: the STUN error code and reason, or 0 for no answer.
pub type Refusal = (u16, String);

impl TurnClient {
    pub fn new(server: SocketAddr) -> TurnClient {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("udp bind");
        TurnClient {
            sock,
            server,
            auth: None,
        }
    }

    fn encode(m: Message<Attribute>) -> Vec<u8> {
        MessageEncoder::new().encode_into_bytes(m).expect("encode")
    }

    /// Send `m` (retransmitting) and wait up to `within` for the response
    /// with its transaction id.
    fn transact(&self, m: Message<Attribute>, within: Duration) -> Option<Message<Attribute>> {
        let id = m.transaction_id();
        let bytes = Self::encode(m);
        let deadline = Instant::now() + within;
        let mut rto = Duration::from_millis(200);
        let mut buf = [0u8; 2048];
        while Instant::now() < deadline {
            self.sock.send_to(&bytes, self.server).ok()?;
            let until = (Instant::now() + rto).min(deadline);
            while let Some(left) = until
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
            {
                self.sock.set_read_timeout(Some(left)).ok();
                let Ok((n, _)) = self.sock.recv_from(&mut buf) else {
                    break;
                };
                if let Ok(Ok(r)) = MessageDecoder::<Attribute>::new().decode_from_bytes(&buf[..n]) {
                    if r.transaction_id() == id {
                        return Some(r);
                    }
                }
            }
            rto *= 2;
        }
        None
    }

    fn request(method: Method) -> Message<Attribute> {
        Message::new(
            MessageClass::Request,
            method,
            TransactionId::new(rand::random()),
        )
    }

    fn refusal(r: &Message<Attribute>) -> Refusal {
        r.get_attribute::<ErrorCode>()
            .map(|e| (e.code(), e.reason_phrase().to_string()))
            .unwrap_or((0, format!("{:?} without ERROR-CODE", r.class())))
    }

    /// A STUN Binding request: the address the server saw, if it answered.
    pub fn binding(&self, within: Duration) -> Option<SocketAddr> {
        let r = self.transact(Self::request(BINDING), within)?;
        r.get_attribute::<XorMappedAddress>().map(|a| a.address())
    }

    /// Sign `m` with the long-term credential and send it.
    fn signed(
        &self,
        mut m: Message<Attribute>,
        (user, realm, nonce, password): &(Username, Realm, Nonce, String),
    ) -> Result<Message<Attribute>, Refusal> {
        m.add_attribute(user.clone());
        m.add_attribute(realm.clone());
        m.add_attribute(nonce.clone());
        let mi = MessageIntegrity::new_long_term_credential(&m, user, realm, password)
            .expect("message integrity");
        m.add_attribute(mi);
        self.transact(m, Duration::from_secs(5))
            .ok_or((0, "no answer".to_string()))
    }

    /// Allocate a UDP relay with `username`/`password`: the relayed
    /// address, or the server's refusal.
    pub fn allocate(&mut self, username: &str, password: &str) -> Result<SocketAddr, Refusal> {
        let allocate = || {
            let mut m = Self::request(ALLOCATE);
            m.add_attribute(RequestedTransport::new(17));
            m
        };
        // First without credentials: the server challenges with 401,
        // its realm and a nonce.
        let challenge = self
            .transact(allocate(), Duration::from_secs(5))
            .ok_or((0, "no answer".to_string()))?;
        let (code, reason) = Self::refusal(&challenge);
        if code != 401 {
            return Err((code, format!("expected a 401 challenge, got {reason}")));
        }
        let realm = challenge.get_attribute::<Realm>().cloned().expect("REALM");
        let mut nonce = challenge.get_attribute::<Nonce>().cloned().expect("NONCE");
        let user = Username::new(username.to_string()).expect("username");
        for _ in 0..2 {
            let auth = (
                user.clone(),
                realm.clone(),
                nonce.clone(),
                password.to_string(),
            );
            let r = self.signed(allocate(), &auth)?;
            match r.class() {
                MessageClass::SuccessResponse => {
                    let relay = r
                        .get_attribute::<XorRelayAddress>()
                        .map(|a| a.address())
                        .ok_or((0, "no XOR-RELAYED-ADDRESS".to_string()))?;
                    self.auth = Some(auth);
                    return Ok(relay);
                }
                _ => {
                    let refusal = Self::refusal(&r);
                    // 438 Stale Nonce: once more with the new one.
                    match (refusal.0, r.get_attribute::<Nonce>()) {
                        (438, Some(n)) => nonce = n.clone(),
                        _ => return Err(refusal),
                    }
                }
            }
        }
        Err((438, "stale nonce twice".to_string()))
    }

    /// Permit `peer` to send to (and receive from) the relay.
    pub fn create_permission(&self, peer: SocketAddr) -> Result<(), Refusal> {
        let auth = self.auth.as_ref().expect("allocate first");
        let mut m = Self::request(CREATE_PERMISSION);
        m.add_attribute(XorPeerAddress::new(peer));
        let r = self.signed(m, auth)?;
        match r.class() {
            MessageClass::SuccessResponse => Ok(()),
            _ => Err(Self::refusal(&r)),
        }
    }

    /// A Send indication: `data` leaves the relay towards `peer`.
    pub fn send(&self, peer: SocketAddr, data: &[u8]) {
        let mut m = Message::new(
            MessageClass::Indication,
            SEND,
            TransactionId::new(rand::random()),
        );
        m.add_attribute(XorPeerAddress::new(peer));
        m.add_attribute(Data::new(data.to_vec()).expect("data"));
        self.sock
            .send_to(&Self::encode(m), self.server)
            .expect("send indication");
    }
}
