//! The `shoal` binary. `shoal daemon` runs a node (coming with the daemon); every other
//! command is a client of a node's Control API. Commands live one per module under `commands/`.

mod commands;
mod logging;

/// mimalloc: the store allocates many small objects; it is markedly faster than the system
/// allocator at that, with no more resident memory (see docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Shoal: a cluster orchestrator. Declare services; Shoal keeps them running.
#[derive(Parser, Debug)]
#[command(name = "shoal", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a node
    Daemon(Box<commands::daemon::Args>),
    /// Show the version of Shoal
    Version(commands::version::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Daemon(args) => commands::daemon::run(*args),
        Command::Version(args) => commands::version::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}
