//! `rookery`: the XMPP server (`rookery serve`) and its administration
//! command (`rookery ctl`), with ejabberdctl's command names.

mod archive_faults;
mod auth;
mod c2s;
mod cluster;
mod component;
mod config;
mod conn_log;
mod ctl;
mod ctl_catalog;
mod http;
mod im;
#[cfg(test)]
mod import_graph_tests;
mod links;
mod metrics;
mod queue;
mod router;
mod routes;
mod s2s;
mod serve;
mod server;
mod session_info;
mod sessions;
mod sm_state;
mod storage;
mod stream;
mod tls;
mod xml;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "rookery", version, about = "Rookery, an XMPP server")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default). Without -c, an embedded config for
    /// domain `localhost` on loopback is used.
    Serve {
        /// Configuration file (ejabberd-style YAML).
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
    },
    /// Administer the server: `rookery ctl help` lists the commands.
    Ctl {
        /// Configuration file (to find the control socket and the database).
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
        /// The command and its arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Write a self-signed certificate and key for HOSTs to a PEM file (for development).
    Gencert {
        /// Host names the certificate carries.
        #[arg(required = true)]
        hosts: Vec<String>,
        /// Output PEM file (certificate and key).
        #[arg(short = 'o', long = "out")]
        out: PathBuf,
    },
}

fn load_config(path: Option<&PathBuf>) -> Result<config::Config, String> {
    match path {
        Some(p) => config::Config::load(p).map_err(|e| e.to_string()),
        None => Ok(config::Config::embedded_default()),
    }
}

/// Logs to stderr: text, or with `log_format: json` one JSON object per
/// line (`timestamp`, `level`, `target`, `fields` with `message` and the
/// event's fields such as `peer`) for log shippers; lines logged for a
/// connection carry its id and JID (`conn_log`).
fn init_logging(level: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ROOKERY_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{level},sled=warn,rustls=warn"))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        let inner = tracing_subscriber::fmt::format().json();
        builder
            .json()
            .event_format(conn_log::WithConn { inner, json: true })
            .init();
    } else {
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let inner = tracing_subscriber::fmt::format().with_ansi(ansi);
        builder
            .with_ansi(ansi)
            .event_format(conn_log::WithConn { inner, json: false })
            .init();
    }
}

fn serve(path: Option<PathBuf>) -> ExitCode {
    let config = match load_config(path.as_ref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rookery: configuration error: {e}");
            return ExitCode::from(1);
        }
    };
    init_logging(config.loglevel.tracing_directive(), config.log_json);
    if path.is_none() {
        tracing::info!(
            "no config file given: using the embedded default (domain localhost, loopback only)"
        );
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rookery: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(serve::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("rookery: {e}");
            ExitCode::from(1)
        }
    }
}

fn ctl(path: Option<PathBuf>, args: Vec<String>) -> ExitCode {
    let config = match load_config(path.as_ref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rookery: configuration error: {e}");
            if args.first().map(String::as_str) == Some("reload_config") {
                eprintln!(
                    "The configuration was not reloaded: a running server keeps its current configuration."
                );
            }
            return ExitCode::from(1);
        }
    };
    let (command, rest) = match args.split_first() {
        Some((c, r)) => (c.clone(), r.to_vec()),
        None => ("help".to_string(), Vec::new()),
    };
    // api_permissions (from: ejabberd_ctl), as the configuration file says;
    // the running server checks its own configuration again.
    let asks_help = command == "help"
        || matches!(command.as_str(), "--help" | "-h")
        || matches!(rest.as_slice(), [f] if f == "--help" || f == "-h");
    if !asks_help
        && ctl::commands::find(&command).is_some()
        && !config.api_allows(config::acl::Frontend::Ctl, None, None, &command)
    {
        eprintln!("{}", ctl::socket::api_refusal(&command));
        return ExitCode::from(1);
    }
    if let Some(out) = ctl::run_local(&config, &command, &rest) {
        return ExitCode::from(u8::try_from(ctl::print(&out)).unwrap_or(1));
    }
    let code = ctl::run(
        &config.ctl_socket,
        &config.data_dir.join("db"),
        ctl::DbChoice {
            archive_engine: config.archive_engine,
            sql: config.sql.clone(),
        },
        &config.hosts,
        config.scram_iterations,
        &command,
        &rest,
    );
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// jemalloc instead of the system allocator: the TLS handshake and the
/// stanza path allocate and free many small buffers across threads, where
/// glibc's malloc spent ~10% of the server's CPU at login (perf); measured
/// +15-30% logins per server CPU-second, same memory per idle session (see
/// docs/benchmarks.md).
#[cfg(all(feature = "jemalloc", not(test)))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Unit tests count the bytes a thread holds instead, for the XML reader's
/// memory property (src/xml/fuzz/alloc.rs).
#[cfg(test)]
#[global_allocator]
static GLOBAL: xml::fuzz::alloc::CountingAlloc = xml::fuzz::alloc::CountingAlloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => serve(None),
        Some(Command::Serve { config }) => serve(config),
        Some(Command::Ctl { config, args }) => ctl(config, args),
        Some(Command::Gencert { hosts, out }) => match tls::generate_self_signed(&hosts, &out) {
            Ok(()) => {
                println!(
                    "wrote a self-signed certificate for {} to {}",
                    hosts.join(", "),
                    out.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("rookery: {e}");
                ExitCode::from(1)
            }
        },
    }
}
