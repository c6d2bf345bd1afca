//! `relay`: the "speed of light" baseline, a TLS byte relay with no XML.
//!
//! It accepts TLS connections, reads one line `PAIR token` from each, pairs
//! the two connections that sent the same token, answers `OK` to both and
//! then copies bytes between them until either side closes. `chat --raw`
//! drives it with frames the size of the XMPP chat stanzas, so the relay's
//! messages per CPU-second is what any server pays at least for TLS and
//! socket I/O. The relay stops by itself after `--duration` seconds and
//! accepts at most `--max-conns` connections.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::time::{sleep_until, timeout, Instant};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Options of `relay`.
#[derive(Args, Debug)]
pub struct Opts {
    /// Address to listen on (loopback; port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:5300")]
    pub listen: SocketAddr,
    /// Seconds after which the relay exits.
    #[arg(long, default_value_t = 600.0)]
    pub duration: f64,
    /// Most connections accepted over the relay's life.
    #[arg(long, default_value_t = 100_000)]
    pub max_conns: u64,
    /// Tokio worker threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Name in the self-signed certificate.
    #[arg(long, default_value = "localhost")]
    pub cert_name: String,
}

type Waiting = Arc<Mutex<HashMap<String, oneshot::Sender<TlsStream<TcpStream>>>>>;

const STEP: Duration = Duration::from_secs(10);
const PAIR_WAIT: Duration = Duration::from_secs(120);

async fn read_token(tls: &mut TlsStream<TcpStream>) -> Option<String> {
    let mut line = Vec::with_capacity(64);
    let mut b = [0u8; 1];
    loop {
        match timeout(STEP, tls.read(&mut b)).await {
            Ok(Ok(1)) => {}
            _ => return None,
        }
        if b[0] == b'\n' {
            break;
        }
        line.push(b[0]);
        if line.len() > 128 {
            return None;
        }
    }
    let s = String::from_utf8(line).ok()?;
    Some(s.strip_prefix("PAIR ")?.trim().to_string())
}

async fn handle(tcp: TcpStream, acceptor: TlsAcceptor, waiting: Waiting) {
    let _ = tcp.set_nodelay(true);
    let Ok(Ok(mut tls)) = timeout(STEP, acceptor.accept(tcp)).await else {
        return;
    };
    let Some(token) = read_token(&mut tls).await else {
        return;
    };
    let rx = {
        let mut w = waiting.lock().expect("pairing table");
        match w.remove(&token) {
            Some(tx) => {
                // The first of the pair runs the copy.
                let _ = tx.send(tls);
                return;
            }
            None => {
                let (tx, rx) = oneshot::channel();
                w.insert(token.clone(), tx);
                rx
            }
        }
    };
    let mut other = match timeout(PAIR_WAIT, rx).await {
        Ok(Ok(o)) => o,
        _ => {
            waiting.lock().expect("pairing table").remove(&token);
            return;
        }
    };
    let ok = async {
        tls.write_all(b"OK\n").await?;
        tls.flush().await?;
        other.write_all(b"OK\n").await?;
        other.flush().await
    };
    if timeout(STEP, ok).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut tls, &mut other).await;
    let _ = timeout(STEP, tls.shutdown()).await;
    let _ = timeout(STEP, other.shutdown()).await;
}

/// Runs the relay until `--duration` has passed.
pub async fn run(o: Opts) -> Result<(), String> {
    let acceptor = crate::tls::self_signed_acceptor(std::slice::from_ref(&o.cert_name))?;
    let listener = TcpListener::bind(o.listen)
        .await
        .map_err(|e| format!("bind {}: {e}", o.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    println!("loadgen relay: listening {addr} pid {}", std::process::id());
    println!("loadgen relay: ready");
    let _ = std::io::stdout().flush();
    let waiting: Waiting = Arc::new(Mutex::new(HashMap::new()));
    let end = Instant::now() + Duration::from_secs_f64(o.duration);
    let mut accepted = 0u64;
    loop {
        tokio::select! {
            _ = sleep_until(end) => break,
            a = listener.accept() => {
                let Ok((tcp, _)) = a else {
                    // Out of descriptors, most likely: back off briefly.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                accepted += 1;
                if accepted > o.max_conns {
                    break;
                }
                tokio::spawn(handle(tcp, acceptor.clone(), waiting.clone()));
            }
        }
    }
    eprintln!("loadgen relay: stopping after {accepted} connections");
    Ok(())
}
