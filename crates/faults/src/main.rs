//! `shoal-faults`: runs fault schedules against Docker-hosted Shoal clusters and prints their
//! figures.
//!
//! ```text
//! shoal-faults list
//! shoal-faults run follower-kill bridge --seed 7 --runs 3 --managers 5 [--json]
//! shoal-faults ci          # a bounded subset, about five minutes on two cores
//! shoal-faults cleanup     # remove containers and networks left by earlier runs
//! ```
//!
//! Progress goes to stderr, one line per phase; the summary table (or, with `--json`, every
//! run's figures and the summaries) to stdout. The exit status is 0 only if every invariant
//! held in every run. The image (`shoal:local`, or `$SHOAL_IMAGE`) is built with
//! `scripts/build-shoal-image.sh` when it is missing; nothing is ever pulled.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use shoal_faults::cluster::{self, Scope};
use shoal_faults::runner::{self, RunFigures, RunOptions, Summary};
use shoal_faults::schedules::{self, Schedule};

#[derive(Parser)]
#[command(
    name = "shoal-faults",
    about = "Fault schedules against Docker-hosted Shoal clusters"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct Options {
    /// Seed of the first run; run i uses seed + i.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Runs of each schedule.
    #[arg(long, default_value_t = 1)]
    runs: u64,
    /// Managers (3 or 5).
    #[arg(long, default_value_t = 3, value_parser = parse_managers)]
    managers: usize,
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Seconds of faults per run.
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Config names the clients share.
    #[arg(long, default_value_t = 5)]
    objects: usize,
    /// Print every run's figures and the summaries as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Keep every run's logs and history, not only those of failed runs.
    #[arg(long)]
    keep_artifacts: bool,
    /// Where logs and histories go.
    #[arg(long, default_value_os_t = std::env::temp_dir().join("shoal-faults"))]
    artifacts: PathBuf,
    /// The image of Shoal (built by scripts/build-shoal-image.sh).
    #[arg(long, env = "SHOAL_IMAGE", default_value = cluster::DEFAULT_IMAGE)]
    image: String,
}

#[derive(Subcommand)]
enum Command {
    /// Run schedules by name.
    Run {
        #[arg(required = true)]
        schedules: Vec<String>,
        #[command(flatten)]
        options: Options,
    },
    /// List the schedules.
    List,
    /// The CI subset: one run of each of a few schedules, short faults.
    Ci {
        #[command(flatten)]
        options: Options,
    },
    /// Remove every container and network left by earlier runs (label shoal-faults).
    Cleanup,
}

fn parse_managers(s: &str) -> Result<usize, String> {
    match s {
        "3" => Ok(3),
        "5" => Ok(5),
        _ => Err("3 or 5".into()),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (names, options, faults) = match cli.command {
        Command::List => {
            for s in schedules::ALL {
                let ci = if schedules::CI.contains(s) {
                    " (ci)"
                } else {
                    ""
                };
                println!("{:<28} {}{ci}", s.name(), s.describe());
            }
            return ExitCode::SUCCESS;
        }
        Command::Cleanup => {
            return match cluster::cleanup(Scope::All) {
                Ok(n) => {
                    println!("removed {n} containers and networks");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("shoal-faults: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Run { schedules, options } => {
            let mut parsed = Vec::new();
            for name in schedules {
                match Schedule::parse(&name) {
                    Some(s) => parsed.push(s),
                    None => {
                        eprintln!(
                            "shoal-faults: no schedule {name}; `shoal-faults list` shows them"
                        );
                        return ExitCode::from(2);
                    }
                }
            }
            let faults = options.duration;
            (parsed, options, faults)
        }
        Command::Ci { options } => (schedules::CI.to_vec(), options, 12),
    };
    if let Err(e) = cluster::docker_usable() {
        eprintln!("shoal-faults: Docker is not usable: {e}");
        return ExitCode::FAILURE;
    }
    if let Err(e) = cluster::ensure_image(&options.image, &cluster::binary_dir()) {
        eprintln!("shoal-faults: {e}");
        return ExitCode::FAILURE;
    }
    let run_options = RunOptions {
        cluster: cluster::ClusterSpec {
            managers: options.managers,
            workers: options.workers,
            image: options.image.clone(),
            daemon_flags: Vec::new(),
        },
        workload: shoal_faults::workload::WorkloadSpec {
            clients: options.clients,
            objects: options.objects,
            ..Default::default()
        },
        faults: Duration::from_secs(faults),
        artifacts: options.artifacts.clone(),
        keep_artifacts: options.keep_artifacts,
        ..Default::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async move {
        tokio::select! {
            code = run_all(&names, &options, &run_options) => code,
            _ = tokio::signal::ctrl_c() => {
                eprintln!("shoal-faults: interrupted; removing this run's containers");
                if let Err(e) = cluster::cleanup(Scope::ThisProcess) {
                    eprintln!("shoal-faults: {e}");
                }
                ExitCode::from(130)
            }
        }
    })
}

async fn run_all(names: &[Schedule], options: &Options, run_options: &RunOptions) -> ExitCode {
    let mut all: Vec<RunFigures> = Vec::new();
    let mut summaries: Vec<Summary> = Vec::new();
    let mut ok = true;
    for &schedule in names {
        let mut runs = Vec::new();
        let mut errors = 0;
        for i in 0..options.runs {
            let seed = options.seed + i;
            match runner::run_once(schedule, seed, run_options).await {
                Ok(figures) => {
                    if !figures.passed() {
                        ok = false;
                        eprintln!("\n{} seed {seed} FAILED:", schedule.name());
                        for f in figures.failures() {
                            eprintln!("  {f}");
                        }
                        if let Some(a) = &figures.artifacts {
                            eprintln!("  logs and history: {a}");
                        }
                    }
                    for (why, n) in &figures.reasons {
                        eprintln!("  {n:>6} × {why}");
                    }
                    if !figures.fault_errors.is_empty() {
                        eprintln!("  fault errors: {:?}", figures.fault_errors);
                    }
                    runs.push(figures);
                }
                Err(e) => {
                    ok = false;
                    errors += 1;
                    eprintln!("\n{} seed {seed} could not run: {e}", schedule.name());
                }
            }
        }
        summaries.push(runner::summarize(schedule.name(), &runs, errors));
        all.extend(runs);
    }
    if options.json {
        let out = serde_json::json!({ "runs": all, "summaries": summaries });
        println!(
            "{}",
            serde_json::to_string_pretty(&out).expect("figures serialize")
        );
    } else {
        println!();
        print!("{}", runner::table(&summaries));
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
