//! `shoal-bench`: Shoal's benchmark scenarios. Each prints a table of figures and, with
//! `--json`, one machine-readable JSON object. Figures are for reports (docs/BENCHMARKS.md),
//! never assertions: every loop is bounded in count, and nothing leaves the machine.

/// The same allocator as the `shoal` binary, so figures match what the daemon does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod converge;
mod failover;
mod heartbeats;
mod listing;
mod memory;
mod raft;
mod report;
mod reschedule;
mod scheduler;
mod simagent;
mod store;
mod taskstart;
mod versus_docker;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "shoal-bench", version, about = "Shoal's benchmark scenarios")]
struct Cli {
    /// Print figures as JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// The in-memory object store: create, update, get, find, list, watch fan-out, memory.
    Store(store::Args),
    /// Raft-committed writes (S2): transactions/s and latency by writers, batches, failover.
    Raft(raft::Args),
    /// Heartbeat and session load on one manager (S4): CPU and memory per agent, p99, DOWN marks.
    Heartbeats(heartbeats::Args),
    /// Manager memory per node and task, snapshot size and time, join and catch-up (S5).
    Memory(memory::Args),
    /// Leader failover with simulated agents (S6): write unavailability, agents reconnected,
    /// tasks restarted.
    Failover(failover::Args),
    /// Task start on the agent (S8): process and docker executors against the runtime's floor.
    Taskstart(taskstart::Args),
    /// Scheduler placement throughput (S1): the decision core in memory, nodes × tasks.
    Scheduler(scheduler::Args),
    /// Service create → all tasks RUNNING (S3): one manager, simulated agents that run tasks.
    Converge(converge::Args),
    /// Node loss → reschedule (S7): 10 % of the agents go silent; detection, then replacement.
    Reschedule(reschedule::Args),
    /// `shoal service ls` and `shoal node ls` on a large cluster (10k services, 1k nodes).
    Listing(listing::Args),
    /// Shoal and Docker swarm mode side by side on the same engine: create, scale, update.
    VersusDocker(versus_docker::Args),
}

fn main() {
    let cli = Cli::parse();
    report::start_clock();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let mut report = match cli.scenario {
        Scenario::Store(args) => store::run(args),
        Scenario::Raft(args) => raft::run(args),
        Scenario::Heartbeats(args) => heartbeats::run(args),
        Scenario::Memory(args) => memory::run(args),
        Scenario::Failover(args) => failover::run(args),
        Scenario::Taskstart(args) => taskstart::run(args),
        Scenario::Scheduler(args) => scheduler::run(args),
        Scenario::Converge(args) => converge::run(args),
        Scenario::Reschedule(args) => reschedule::run(args),
        Scenario::Listing(args) => listing::run(args),
        Scenario::VersusDocker(args) => versus_docker::run(args, cli.json),
    };
    report.resources();
    if cli.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_table());
    }
}
