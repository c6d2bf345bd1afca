//! Ports for the programs a test starts that cannot be told to bind port 0
//! and report it (PostgreSQL, NATS, ejabberd, Prosody, coturn, s2s peers).
//!
//! Invariants:
//! - a port (or block of ports) is handed out at most once per test process
//!   (one counter for all tests of the binary);
//! - every port lies below the kernel's ephemeral range
//!   (`/proc/sys/net/ipv4/ip_local_port_range`), so neither an outgoing
//!   connection nor a listener on port 0 can take it between the pick and
//!   the program's bind, or while the program is stopped for a restart
//!   test (picking with `bind(":0")` had both races);
//! - it was free for TCP and UDP on 127.0.0.1 when handed out (another
//!   process on the machine may still hold it: those are skipped);
//! - the counter starts at an offset drawn from the process id, so two test
//!   processes on one machine rarely walk the same ports.

use std::net::{TcpListener, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};

/// The lowest port handed out.
const FLOOR: u32 = 10_000;

/// The next offset above [`FLOOR`] to try (`u32::MAX`: not drawn yet).
static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);

/// The first port of the kernel's ephemeral range (32768 when unreadable).
fn ephemeral_low() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .filter(|&p: &u32| p > FLOOR + 1_000)
        .unwrap_or(32_768)
}

fn free_here(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok() && UdpSocket::bind(("127.0.0.1", port)).is_ok()
}

/// `n` consecutive ports, each free for TCP and UDP; the first is returned.
pub fn free_ports(n: u16) -> u16 {
    let span = ephemeral_low() - FLOOR;
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id().wrapping_mul(7_919)) % span,
        Ordering::AcqRel,
        Ordering::Acquire,
    );
    for _ in 0..span {
        let off = NEXT.fetch_add(u32::from(n), Ordering::AcqRel) % span;
        if off + u32::from(n) > span {
            continue;
        }
        let first = (FLOOR + off) as u16;
        if (0..n).all(|i| free_here(first + i)) {
            return first;
        }
    }
    panic!("no {n} free ports below the ephemeral range");
}

/// One port free for TCP and UDP.
pub fn free_port() -> u16 {
    free_ports(1)
}

#[test]
fn ports_are_unique_and_below_the_ephemeral_range() {
    let low = ephemeral_low();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..200 {
        let p = free_port();
        assert!(u32::from(p) >= FLOOR && u32::from(p) < low, "{p}");
        assert!(seen.insert(p), "{p} handed out twice");
    }
    let b = free_ports(10);
    for i in 0..10 {
        assert!(seen.insert(b + i), "{} handed out twice", b + i);
    }
}
