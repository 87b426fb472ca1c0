//! `shoal-sim`: runs seeds of the deterministic simulation and reports violations.
//!
//! ```text
//! shoal-sim --seeds 0..200                 # CI-sized run; exit status 1 on a violation
//! shoal-sim --seeds 0..5000 --managers 5   # a longer run
//! shoal-sim --seed 17 --trace              # replay one seed, printing every event
//! shoal-sim --seeds 0..100 --agents 0      # managers and clients only
//! ```
//!
//! By default each run also has 4 agents, the orchestrator and scheduler on the leader, and
//! a few services (`--agents N` picks the number, `--agents 0` turns them off).

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use shoal_sim::{EarlyAnswers, PlantedBug, Report, SimConfig, run};

#[derive(Parser, Debug)]
#[command(
    name = "shoal-sim",
    about = "Deterministic simulation of Shoal: managers, clients and agents under seeded faults"
)]
struct Args {
    /// Seeds to run: `A..B` (B excluded), `A..=B`, or one number.
    #[arg(long, default_value = "0..200", conflicts_with = "seed")]
    seeds: String,
    /// Run one seed (with `--trace` to see every event).
    #[arg(long)]
    seed: Option<u64>,
    /// Managers in the cluster.
    #[arg(long, default_value_t = 3, value_parser = parse_managers)]
    managers: u64,
    /// Ticks of faults and client load per seed (a tick is 10 ms of simulated time).
    #[arg(long, default_value_t = 300)]
    steps: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Objects the clients share.
    #[arg(long, default_value_t = 3)]
    objects: usize,
    /// Simulated agents (worker nodes), with the orchestrator and scheduler on the leader and
    /// a few services; 0 turns them off (managers and clients only).
    #[arg(long, default_value_t = DEFAULT_AGENTS)]
    agents: usize,
    /// No faults: client load on a healthy cluster.
    #[arg(long)]
    no_faults: bool,
    /// How a leader answers a write whose early checks fail on its local store:
    /// `confirmed` (after a ReadIndex barrier, the fix) or `control-api` (at once, as the
    /// Control API did before it confirmed its view, which is not linearizable).
    #[arg(long, default_value = "confirmed", value_parser = ["confirmed", "control-api"])]
    early_answers: String,
    /// Print every event of the run (with `--seed`).
    #[arg(long)]
    trace: bool,
    /// Plant a bug, to see the invariants catch it.
    #[arg(long, hide = true, value_parser = ["ack-before-commit", "start-while-stopping", "agent-ignores-shutdown"])]
    plant_bug: Option<String>,
}

const DEFAULT_AGENTS: usize = 4;

fn parse_managers(s: &str) -> Result<u64, String> {
    match s {
        "3" => Ok(3),
        "5" => Ok(5),
        _ => Err("3 or 5 managers".into()),
    }
}

fn parse_seeds(s: &str) -> Result<std::ops::Range<u64>, String> {
    let bad = || format!("--seeds: expected A..B, A..=B or N, got {s:?}");
    if let Some((a, b)) = s.split_once("..=") {
        let a: u64 = a.trim().parse().map_err(|_| bad())?;
        let b: u64 = b.trim().parse().map_err(|_| bad())?;
        return Ok(a..b + 1);
    }
    if let Some((a, b)) = s.split_once("..") {
        let a: u64 = a.trim().parse().map_err(|_| bad())?;
        let b: u64 = b.trim().parse().map_err(|_| bad())?;
        return Ok(a..b);
    }
    let n: u64 = s.trim().parse().map_err(|_| bad())?;
    Ok(n..n + 1)
}

impl Args {
    fn config(&self, seed: u64) -> SimConfig {
        SimConfig {
            managers: self.managers,
            steps: self.steps,
            clients: self.clients,
            objects: self.objects,
            faults: !self.no_faults,
            early_answers: if self.early_answers == "control-api" {
                EarlyAnswers::ControlApi
            } else {
                EarlyAnswers::Confirmed
            },
            agents: self.agents,
            planted_bug: self.plant_bug.as_deref().map(|bug| match bug {
                "start-while-stopping" => PlantedBug::StartWhileStopping,
                "agent-ignores-shutdown" => PlantedBug::AgentIgnoresShutdown,
                _ => PlantedBug::AckBeforeCommit,
            }),
            ..SimConfig::new(seed)
        }
    }

    fn replay_command(&self, seed: u64) -> String {
        let mut cmd = format!("shoal-sim --seed {seed}");
        if self.managers != 3 {
            cmd += &format!(" --managers {}", self.managers);
        }
        if self.steps != 300 {
            cmd += &format!(" --steps {}", self.steps);
        }
        if self.clients != 4 {
            cmd += &format!(" --clients {}", self.clients);
        }
        if self.objects != 3 {
            cmd += &format!(" --objects {}", self.objects);
        }
        if self.agents != DEFAULT_AGENTS {
            cmd += &format!(" --agents {}", self.agents);
        }
        if self.no_faults {
            cmd += " --no-faults";
        }
        if self.early_answers != "confirmed" {
            cmd += &format!(" --early-answers {}", self.early_answers);
        }
        if let Some(bug) = &self.plant_bug {
            cmd += &format!(" --plant-bug {bug}");
        }
        cmd + " --trace"
    }
}

fn print_report(r: &Report) {
    let s = &r.stats;
    println!(
        "seed {}: {} operations ({} returned, {} unknown, {} refused), {} writes acknowledged, \
         {} events, {:.1}s simulated, {} leader terms, {} crashes, {} snapshots delivered, \
         history {}, digest {:016x}, {} violations",
        r.seed,
        s.operations,
        s.returned,
        s.unknown,
        s.refused,
        s.writes_acknowledged,
        r.events,
        r.sim_time as f64 / 1e6,
        s.leader_terms,
        s.crashes,
        s.snapshots_delivered,
        s.verdict,
        r.digest,
        r.violation_count
    );
    if s.agents.agents > 0 {
        let a = &s.agents;
        println!(
            "  agents: {} agents, {} services, {} rounds ({} failed), {} orchestrator writes, \
             {} tasks started, {} failed, {} nodes written DOWN, {} agent crashes, {} service \
             changes, {} tasks running at the end",
            a.agents,
            a.services,
            a.rounds,
            a.failed_rounds,
            a.orchestrator_writes,
            a.tasks_started,
            a.tasks_failed,
            a.nodes_written_down,
            a.agent_crashes,
            a.service_changes,
            a.running_at_end
        );
    }
    if !s.faults.is_empty() {
        let faults: Vec<String> = s.faults.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!("  faults: {}", faults.join(", "));
    }
}

/// Whether a trace line's instant (its first field, in ms) lies in `from..=to` (µs).
fn in_window(line: &str, from: u64, to: u64) -> bool {
    line.split_whitespace()
        .next()
        .and_then(|t| t.trim_end_matches("ms").parse::<f64>().ok())
        .is_some_and(|ms| {
            let us = (ms * 1000.0).round() as u64;
            (from..=to).contains(&us)
        })
}

fn explain(args: &Args, r: &Report) {
    let Some(first) = r.violations.first() else {
        return;
    };
    println!();
    println!("VIOLATION in seed {}", r.seed);
    for v in &r.violations {
        println!(
            "  {} at {:.3}ms: {}",
            v.invariant,
            v.at as f64 / 1000.0,
            v.detail.lines().next().unwrap_or("")
        );
    }
    if r.violation_count > r.violations.len() {
        println!("  ... {} violations in all", r.violation_count);
    }
    println!();
    println!("{}: {}", first.invariant, first.detail);
    // The run is a function of the seed: replay it keeping the trace.
    let replay = run(SimConfig {
        keep_trace: Some(if first.window.is_some() {
            usize::MAX
        } else {
            40
        }),
        ..args.config(r.seed)
    });
    if let Some(v) = replay.violations.first() {
        println!();
        let lines = match v.window {
            Some((from, to)) => {
                println!(
                    "trace from {:.3}ms to {:.3}ms, ticks and heartbeats left out (replayed):",
                    from as f64 / 1000.0,
                    to as f64 / 1000.0
                );
                let mut lines: Vec<String> = replay
                    .trace
                    .iter()
                    .filter(|l| in_window(l, from, to))
                    .filter(|l| !l.contains("  tick ") && !l.contains("Heartbeat"))
                    .cloned()
                    .collect();
                lines.drain(..lines.len().saturating_sub(60));
                lines
            }
            None => {
                println!("trace before it (replayed):");
                v.excerpt.clone()
            }
        };
        for line in &lines {
            println!("  {line}");
        }
    }
    if replay.digest != r.digest {
        println!(
            "(the replay's digest differs: {:016x} — determinism is broken)",
            replay.digest
        );
    }
    println!();
    println!("replay: {}", args.replay_command(r.seed));
    println!();
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(seed) = args.seed {
        let config = SimConfig {
            keep_trace: args.trace.then_some(usize::MAX),
            ..args.config(seed)
        };
        let report = run(config);
        for line in &report.trace {
            println!("{line}");
        }
        print_report(&report);
        explain(&args, &report);
        return if report.violation_count == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    let seeds = match parse_seeds(&args.seeds) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let started = Instant::now();
    let (mut run_count, mut operations, mut unknown, mut acked, mut snapshots) = (0u64, 0, 0, 0, 0);
    let mut violating = Vec::new();
    let mut inconclusive = 0;
    let mut violations = 0;
    let mut combined = 0u64;
    for seed in seeds.clone() {
        let report = run(args.config(seed));
        run_count += 1;
        operations += report.stats.operations;
        unknown += report.stats.unknown;
        acked += report.stats.writes_acknowledged;
        snapshots += report.stats.snapshots_delivered;
        combined = combined.rotate_left(5) ^ report.digest;
        if report.stats.verdict.starts_with("unknown") {
            inconclusive += 1;
        }
        if report.violation_count > 0 {
            violations += report.violation_count;
            print_report(&report);
            explain(&args, &report);
            violating.push(seed);
        }
        if run_count % 50 == 0 {
            println!(
                "{run_count} seeds run ({}..{}), {operations} operations, {violations} violations, {:.0} ms/seed",
                seeds.start,
                seed + 1,
                started.elapsed().as_secs_f64() * 1e3 / run_count as f64
            );
        }
    }
    let elapsed = started.elapsed();
    println!(
        "summary: {run_count} seeds ({}..{}), {} managers, {} ticks each: {operations} operations \
         ({unknown} of unknown outcome), {acked} writes acknowledged, {snapshots} snapshots \
         delivered, {inconclusive} histories inconclusive, {violations} violations; {:.1}s \
         ({:.0} ms/seed); digest {combined:016x}",
        seeds.start,
        seeds.end,
        args.managers,
        args.steps,
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e3 / run_count.max(1) as f64
    );
    if violating.is_empty() {
        ExitCode::SUCCESS
    } else {
        println!("violating seeds: {violating:?}");
        ExitCode::FAILURE
    }
}
