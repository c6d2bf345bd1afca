//! A tiny authoritative DNS server for federation tests: UDP on
//! 127.0.0.1, port 0, answering from a fixed table of records (A, AAAA, SRV)
//! and logging every question it gets.
//!
//! Answers follow RFC 1035/2308: the records of the asked name and type; for
//! a name that exists (has records, or is an ancestor of a name that has)
//! but not of that type, an empty NOERROR answer (NODATA); for any other
//! name, NXDOMAIN. SRV answers carry the A/AAAA records of their targets in
//! the additional section, as real servers do.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_resolver::proto::op::{Message, MessageType, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, AAAA, SRV};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};

/// One record of the table.
#[derive(Clone, Debug)]
pub enum Rr {
    /// `name A/AAAA ip`.
    Addr(String, IpAddr),
    /// `name SRV priority weight port target`.
    Srv(String, u16, u16, u16, String),
}

impl Rr {
    fn name(&self) -> &str {
        match self {
            Rr::Addr(n, _) | Rr::Srv(n, ..) => n,
        }
    }
}

fn norm(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// A running DNS server; stopped when dropped.
pub struct Dns {
    pub addr: SocketAddr,
    records: Arc<Vec<Rr>>,
    log: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if std::thread::panicking() {
            eprintln!("----- test DNS questions -----\n{}", self.log().join("\n"));
        }
    }
}

impl Dns {
    /// Serve `records` on 127.0.0.1 (a free port).
    pub fn start(records: Vec<Rr>) -> Dns {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind the test DNS server");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let records = Arc::new(records);
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, r, l) = (stop.clone(), records.clone(), log.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !s.load(Ordering::Relaxed) {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    if let Some(reply) = answer(&r, &l, &buf[..n]) {
                        let _ = sock.send_to(&reply, from);
                    }
                }
            }
        });
        Dns {
            addr,
            records,
            log,
            stop,
            thread: Some(thread),
        }
    }

    /// The questions asked so far, as `name TYPE -> outcome`.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Whether a question for `name` of type `kind` (e.g. "SRV") was asked.
    pub fn asked(&self, name: &str, kind: &str) -> bool {
        let prefix = format!("{} {kind} ", norm(name));
        self.log().iter().any(|l| l.starts_with(&prefix))
    }

    /// The records served.
    pub fn records(&self) -> &[Rr] {
        &self.records
    }
}

fn rdata(rr: &Rr) -> (RecordType, RData) {
    match rr {
        Rr::Addr(_, IpAddr::V4(ip)) => (RecordType::A, RData::A(A::from(*ip))),
        Rr::Addr(_, IpAddr::V6(ip)) => (RecordType::AAAA, RData::AAAA(AAAA::from(*ip))),
        Rr::Srv(_, prio, weight, port, target) => (
            RecordType::SRV,
            RData::SRV(SRV::new(
                *prio,
                *weight,
                *port,
                Name::from_ascii(format!("{}.", norm(target))).unwrap(),
            )),
        ),
    }
}

fn answer(records: &[Rr], log: &Mutex<Vec<String>>, query: &[u8]) -> Option<Vec<u8>> {
    let q = Message::from_vec(query).ok()?;
    let mut r = Message::new();
    r.set_id(q.id())
        .set_message_type(MessageType::Response)
        .set_op_code(q.op_code())
        .set_authoritative(true)
        .set_recursion_desired(q.recursion_desired())
        .set_recursion_available(true);
    for query in q.queries() {
        r.add_query(query.clone());
        let name = norm(&query.name().to_ascii());
        let qtype = query.query_type();
        let mut n = 0;
        for rr in records.iter().filter(|rr| norm(rr.name()) == name) {
            let (t, data) = rdata(rr);
            if t != qtype {
                continue;
            }
            n += 1;
            r.add_answer(Record::from_rdata(query.name().clone(), 60, data));
            if let Rr::Srv(_, _, _, _, target) = rr {
                for a in records
                    .iter()
                    .filter(|a| matches!(a, Rr::Addr(..)) && norm(a.name()) == norm(target))
                {
                    let fqdn = Name::from_ascii(format!("{}.", norm(target))).unwrap();
                    r.add_additional(Record::from_rdata(fqdn, 60, rdata(a).1));
                }
            }
        }
        let exists = records.iter().any(|rr| {
            let n = norm(rr.name());
            n == name || n.ends_with(&format!(".{name}"))
        });
        let outcome = if n > 0 {
            "answer"
        } else if exists {
            "nodata"
        } else {
            r.set_response_code(ResponseCode::NXDomain);
            "nxdomain"
        };
        log.lock()
            .unwrap()
            .push(format!("{name} {qtype} -> {outcome}"));
    }
    r.to_vec().ok()
}
