//! `hopcore-bench`: the loopback load generator (default), `hopcore-bench memory` and
//! `hopcore-bench report`. See the crate documentation and `scripts/bench.sh`.

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hopcore_bench::{load, memory, profile, relay, report};

#[derive(Debug, Parser)]
#[command(name = "hopcore-bench", version, about = "hopcore load generator, memory figures and benchmark report")]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    load: load::LoadArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Bytes per security context and per exchange in flight (resident size of this process).
    Memory(memory::MemoryArgs),
    /// Writes OUT.md and OUT.svg from a run's raw files.
    Report(report::ReportArgs),
    /// A bare UDP relay (one recv and one send per datagram): the floor for a proxy.
    Relay(relay::RelayArgs),
    /// One OSCORE layer's exchanges in a loop, for callgrind / perf.
    OscoreLoop(profile::LoopArgs),
}

fn append_json(path: &std::path::Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    writeln!(f, "{}", serde_json::to_string(value)?)?;
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Memory(args)) => memory::run(&args).and_then(|r| match r {
            Some(r) => {
                memory::print(&r);
                match &args.json {
                    Some(p) => append_json(p, &r),
                    None => Ok(()),
                }
            }
            None => Ok(()),
        }),
        Some(Command::Report(args)) => report::run(&args),
        Some(Command::Relay(args)) => relay::run(&args),
        Some(Command::OscoreLoop(args)) => profile::run(&args),
        None => load::run(cli.load.clone()).and_then(|r| {
            load::print(&r);
            match &cli.load.json {
                Some(p) => append_json(p, &r),
                None => Ok(()),
            }
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
