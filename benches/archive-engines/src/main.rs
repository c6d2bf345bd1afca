//! archive-engines: sled 0.34, fjall 2 and redb on the message archive's
//! workload (issue 13), one engine after the other in the same process run.
//!
//! `run` measures, per engine: append throughput per CPU-second (the chat
//! load: 2 archive appends per message over `--accounts` accounts, durable
//! batches of `--batch` entries), bytes on disk per message, pages of 50
//! (first, middle, last, with a peer) and the count on an archive of
//! `--heavy` messages, the time to reopen, and a SIGKILL during writes
//! (`crash-writer` is the child that is killed). Figures go to stdout as a
//! markdown table and, one JSON object per engine, to `--json`.
//!
//! Invariant: every engine gets the same entries (same seed) through the
//! same layout (archive.rs); only the `Kv` implementation differs.

mod archive;
mod bench;
mod cpu;
mod crash;
mod engines;
mod workload;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Embedded storage engines on Rookery's message-archive workload")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Measure the engines (see docs/benchmarks.md, "Archive storage engines").
    Run(bench::Opts),
    /// Open an existing database and read the newest page of the heavy
    /// archive; prints `{"open_ms": .., "first_page_ms": ..}` (the clean
    /// reopen of `run`, in a fresh process).
    Reopen {
        #[arg(long)]
        engine: String,
        #[arg(long)]
        dir: PathBuf,
    },
    /// Internal: append chat batches until killed, printing `ACK <entries> <last id>` after each durable batch.
    CrashWriter {
        #[arg(long)]
        engine: String,
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 500)]
        batch: usize,
        #[arg(long, default_value_t = 200)]
        accounts: u32,
    },
}

fn main() {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Run(o) => bench::run(&o),
        Cmd::CrashWriter {
            engine,
            dir,
            batch,
            accounts,
        } => crash::writer(&engine, &dir, batch, accounts),
        Cmd::Reopen { engine, dir } => bench::reopen_here(&engine, &dir),
    };
    if let Err(e) = r {
        eprintln!("archive-engines: {e}");
        std::process::exit(1);
    }
}
