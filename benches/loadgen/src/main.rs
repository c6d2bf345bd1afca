//! `loadgen`: the load generator for Rookery (and any XMPP server).
//!
//! It speaks real client-to-server XMPP — TCP, STARTTLS, SASL SCRAM-SHA-256,
//! SCRAM-SHA-1 or PLAIN (or SASL2 with Bind 2 and FAST: `login --sasl2`,
//! `--fast`), resource binding, presence — or the same over a
//! WebSocket (RFC 7395, `--transport ws`), from one tokio process with no
//! thread per connection, and runs one scenario per invocation: `login`,
//! `idle`, `chat`, `presence`, `offline`, `muc`,
//! `pubsub`. Each prints one JSON line
//! on stdout and a short human summary on stderr. `provision` creates the
//! accounts and `relay` is the "speed of light" baseline: a TLS byte relay
//! without XML that `chat --raw` can be pointed at. See docs/benchmarks.md.

mod conn;
mod modern;
mod placement;
mod provision;
mod relay;
mod run;
mod sasl2;
mod scenario;
mod scram;
mod stats;
mod tls;
mod ws;
mod xml;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use conn::{ClientCfg, Mech};

/// Load generator for XMPP servers (c2s over STARTTLS).
#[derive(Parser, Debug)]
#[command(name = "loadgen", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// How clients reach the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// c2s over TCP with STARTTLS (RFC 6120).
    Tcp,
    /// XMPP over WebSocket (RFC 7395) on the server's HTTPS listener.
    Ws,
}

/// Options every client scenario takes.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Server c2s address (STARTTLS port); with `--transport ws` its HTTPS
    /// (or, with --ws-plain, HTTP) listener; the relay's port with `chat --raw`.
    #[arg(long, default_value = "127.0.0.1:5222")]
    pub server: SocketAddr,
    /// Several servers (the nodes of a cluster), `IP:PORT,IP:PORT,...`:
    /// accounts are spread over them round-robin by pair, receivers placed
    /// by --pairing; replaces --server.
    #[arg(long, value_parser = placement::parse_servers)]
    pub servers: Option<placement::Servers>,
    /// With --servers: a pair's receiver on the sender's server (`same`),
    /// on the next one (`cross`), or on each equally often (`any`: 1/N of
    /// the pairs on one server).
    #[arg(long, value_enum, default_value = "any")]
    pub pairing: placement::Pairing,
    /// Another process to measure, `NAME=PID` (repeatable): the CPU time of
    /// it and its descendants is reported under `watched_cpu_s.NAME`.
    #[arg(long = "watch", value_parser = stats::parse_watch)]
    pub watch: Vec<(String, u32)>,
    /// tcp: c2s with STARTTLS; ws: WebSocket (RFC 7395, subprotocol xmpp)
    /// at --ws-path, over TLS.
    #[arg(long, value_enum, default_value = "tcp")]
    pub transport: Transport,
    /// Path of the WebSocket endpoint: /ws (Rookery, ejabberd's
    /// ejabberd_http_ws), /xmpp-websocket (Prosody's mod_websocket).
    #[arg(long, default_value = "/ws")]
    pub ws_path: String,
    /// With --transport ws: plain ws:// instead of wss://.
    #[arg(long)]
    pub ws_plain: bool,
    /// XMPP domain of the accounts.
    #[arg(long, default_value = "localhost")]
    pub domain: String,
    /// Account names are `{prefix}{n}`, n counting from --first-user.
    #[arg(long, default_value = "bench")]
    pub users_prefix: String,
    /// Password of every account.
    #[arg(long, default_value = "secret")]
    pub password: String,
    /// SASL mechanism.
    #[arg(long, value_enum, default_value = "scram-sha-256")]
    pub mech: Mech,
    /// PID of the server process: its CPU time and RSS are measured.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Seconds: chat's sending time, idle's hold time; for the other
    /// scenarios a hard bound on the whole run.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Number of the first account used (for several processes or scenarios
    /// on distinct ranges of accounts).
    #[arg(long, default_value_t = 1)]
    pub first_user: u64,
    /// Logins in flight at once.
    #[arg(long, default_value_t = 50)]
    pub concurrency: usize,
    /// Tokio worker threads of this process (1 leaves the other core to the
    /// server on a 2-core machine).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Local address to connect from (e.g. 127.0.0.2 to get a second set of
    /// ephemeral ports).
    #[arg(long)]
    pub bind_ip: Option<IpAddr>,
    /// Bound on one login, seconds.
    #[arg(long, default_value_t = 30.0)]
    pub login_timeout: f64,
    /// File caching SCRAM salted passwords between runs (see docs).
    #[arg(long)]
    pub scram_cache: Option<PathBuf>,
    /// Resource every session binds.
    #[arg(long, default_value = "lg")]
    pub resource: String,
}

impl Common {
    /// The client configuration these options describe.
    pub fn client_cfg(&self) -> Result<ClientCfg, String> {
        let placement = self.servers.as_ref().map(|s| placement::Placement {
            servers: s.clone(),
            pairing: self.pairing,
            first: self.first_user,
        });
        let server = placement.as_ref().map_or(self.server, |p| p.servers[0]);
        Ok(ClientCfg {
            server,
            placement,
            domain: self.domain.clone(),
            prefix: self.users_prefix.clone(),
            password: self.password.clone(),
            mech: self.mech,
            connector: tls::connector(),
            server_name: tls::server_name(&self.domain)?,
            bind_ip: self.bind_ip,
            login_timeout: Duration::from_secs_f64(self.login_timeout),
            resource: self.resource.clone(),
            ws_url: match self.transport {
                Transport::Tcp => None,
                Transport::Ws => {
                    if !self.ws_path.starts_with('/') {
                        return Err(format!(
                            "--ws-path must start with '/', not {:?}",
                            self.ws_path
                        ));
                    }
                    Some(format!(
                        "{}://{}:{}{}",
                        if self.ws_plain { "ws" } else { "wss" },
                        self.domain,
                        server.port(),
                        self.ws_path
                    ))
                }
            },
        })
    }
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// N full logins (TCP, STARTTLS, SASL, bind, presence, ping) at
    /// concurrency C; each session is then closed.
    Login(scenario::login::Opts),
    /// Hold N authenticated sessions; server RSS per session.
    Idle(scenario::idle::Opts),
    /// P pairs exchanging chat messages; latency, order, loss.
    Chat(scenario::chat::Opts),
    /// Presence fan-out over rosters of R mutual contacts.
    Presence(scenario::presence::Opts),
    /// Messages to offline users, then their delivery at login.
    Offline(scenario::offline::Opts),
    /// Group chat fan-out: N rooms of M occupants posting at a set rate.
    Muc(scenario::muc::Opts),
    /// Publish-subscribe broadcast: one node, S subscribers, P items/s.
    Pubsub(scenario::pubsub::Opts),
    /// Create accounts with the server's own admin command.
    Provision(provision::Opts),
    /// Trivial TLS byte relay (the baseline for `chat --raw`).
    Relay(relay::Opts),
}

/// Raises RLIMIT_NOFILE's soft limit to the hard limit; returns the new soft
/// limit.
fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                return want.rlim_cur;
            }
        }
    }
    lim.rlim_cur
}

fn runtime(threads: usize) -> tokio::runtime::Runtime {
    let mut b = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    b.enable_all().build().expect("tokio runtime")
}

fn run_client<F, Fut>(common: &Common, f: F) -> ExitCode
where
    F: FnOnce(ClientCfg) -> Fut,
    Fut: std::future::Future<Output = Result<bool, String>>,
{
    stats::set_transport(match common.transport {
        Transport::Tcp => "tcp",
        Transport::Ws => "ws",
    });
    stats::set_watched(common.watch.clone());
    let cfg = match common.client_cfg() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return ExitCode::from(1);
        }
    };
    if let Some(p) = &common.scram_cache {
        match scram::load(p) {
            Ok(n) if n > 0 => eprintln!("loadgen: {n} SCRAM cache entries from {}", p.display()),
            Ok(_) => {}
            Err(e) => eprintln!("loadgen: SCRAM cache not loaded: {e}"),
        }
    }
    let rt = runtime(common.threads);
    let r = rt.block_on(f(cfg));
    // Do not wait for stray tasks (e.g. a close still waiting for a slow
    // server): every scenario has already waited, bounded, for its own.
    rt.shutdown_timeout(Duration::from_secs(1));
    if let Some(p) = &common.scram_cache {
        if let Err(e) = scram::save(p) {
            eprintln!("loadgen: SCRAM cache not saved: {e}");
        }
    }
    match r {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::from(1)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let nofile = raise_nofile();
    if nofile > 0 && nofile < 1024 {
        eprintln!("loadgen: warning: only {nofile} file descriptors allowed");
    }
    match cli.cmd {
        Cmd::Login(o) => {
            let c = o.common.clone();
            run_client(&c, |cfg| scenario::login::run(cfg, o))
        }
        Cmd::Idle(o) => {
            let c = o.common.clone();
            run_client(&c, |cfg| scenario::idle::run(cfg, o))
        }
        Cmd::Chat(o) => {
            let c = o.common.clone();
            run_client(&c, |cfg| scenario::chat::run(cfg, o))
        }
        Cmd::Presence(o) => {
            let c = o.common.clone();
            run_client(&c, |cfg| scenario::presence::run(cfg, o))
        }
        Cmd::Offline(o) => {
            let c = o.common.clone();
            run_client(&c, |cfg| scenario::offline::run(cfg, o))
        }
        Cmd::Muc(o) => {
            let c = o.common.clone();
            run_client(&c, |cfg| scenario::muc::run(cfg, o))
        }
        Cmd::Pubsub(o) => {
            let c = o.common.clone();
            run_client(&c, |cfg| scenario::pubsub::run(cfg, o))
        }
        Cmd::Provision(o) => match provision::run(o) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(2),
            Err(e) => {
                eprintln!("loadgen provision: {e}");
                ExitCode::from(1)
            }
        },
        Cmd::Relay(o) => {
            let rt = runtime(o.threads);
            let r = rt.block_on(relay::run(o));
            rt.shutdown_timeout(Duration::from_secs(1));
            match r {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("loadgen relay: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}
