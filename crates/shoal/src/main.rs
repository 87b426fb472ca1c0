//! The `shoal` binary. `shoal daemon` runs a node; every other command is a client of a node's
//! Control API, reached on its local control socket. Commands live one per module under
//! `commands/`: parse the arguments, apply them, render the result.

mod commands;
mod logging;

/// mimalloc: the store allocates many small objects; it is markedly faster than the system
/// allocator at that, with no more resident memory (see docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Shoal: a cluster orchestrator. Declare services; Shoal keeps them running.
#[derive(Parser, Debug)]
#[command(name = "shoal", version, about, long_about = None, propagate_version = true)]
struct Cli {
    /// Control socket of the node to talk to [default: $SHOAL_SOCKET, else
    /// <default state dir>/control.sock]
    #[arg(short = 's', long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// A manager's remote API to talk to instead of a local socket (HOST:PORT), over mutual
    /// TLS with the manager certificate in --tls-dir
    #[arg(
        short = 'H',
        long,
        global = true,
        value_name = "ADDR",
        conflicts_with = "socket"
    )]
    host: Option<String>,
    /// State directory holding the manager certificate used with -H/--host [default: the
    /// default state dir]
    #[arg(long, global = true, value_name = "DIR", requires = "host")]
    tls_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a node
    Daemon(Box<commands::daemon::Args>),
    /// Manage the swarm: join tokens, settings, leaving
    Swarm(commands::swarm::Args),
    /// Manage the swarm's nodes
    Node(commands::node::Args),
    /// Manage overlay networks: create, list, inspect, remove
    Network(commands::network::Args),
    /// Manage services: create, list, inspect, scale, update, roll back, remove; their tasks and logs
    Service(commands::service::Args),
    /// List and inspect tasks
    Task(commands::task::Args),
    /// Manage secrets: create, list, inspect, remove
    Secret(commands::secret::Args),
    /// Manage configs: create, list, inspect, remove
    Config(commands::config::Args),
    /// Show the version of Shoal
    Version(commands::version::Args),
    /// Supervise one process task: started by the daemon, not by hand (see
    /// `shoal_executor::process::shim`)
    #[command(hide = true, disable_help_flag = true, disable_version_flag = true)]
    ProcessShim(ProcessShimArgs),
}

#[derive(clap::Args, Debug)]
struct ProcessShimArgs {
    /// The shim's flags and the task's command line, passed through untouched
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
    args: Vec<OsString>,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    if let Some(host) = cli.host.clone() {
        commands::client::use_remote(
            host,
            cli.tls_dir
                .clone()
                .unwrap_or_else(shoal_node::default_state_dir),
        );
    }
    let result = match cli.command {
        // No logging set up: the shim's stderr is its own log, and its stdout the daemon's
        // status channel.
        Command::ProcessShim(args) => return shoal_executor::process::shim::main(args.args),
        Command::Daemon(_) if cli.socket.is_some() => Err(
            "-s/--socket names the socket client commands talk to; `shoal daemon` listens on \
             --listen-control-api PATH"
                .to_string(),
        ),
        Command::Daemon(args) => commands::daemon::run(*args),
        Command::Swarm(args) => commands::swarm::run(cli.socket, args),
        Command::Node(args) => commands::node::run(cli.socket, args),
        Command::Network(args) => commands::network::run(cli.socket, args),
        Command::Service(args) => commands::service::run(cli.socket, args),
        Command::Task(args) => commands::task::run(cli.socket, args),
        Command::Secret(args) => commands::secret::run(cli.socket, args),
        Command::Config(args) => commands::config::run(cli.socket, args),
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

/// Help and version go to stdout with status 0; every other parse error is an error like any
/// other: `Error: ...` on stderr, status 1.
fn usage_error(e: clap::Error) -> ExitCode {
    if !e.use_stderr() {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    let text = e.render().to_string();
    match text.strip_prefix("error: ") {
        Some(rest) => eprint!("Error: {rest}"),
        None => eprint!("{text}"),
    }
    ExitCode::FAILURE
}
