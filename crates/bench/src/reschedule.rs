//! `shoal-bench reschedule` (scenario S7): a tenth of the agents stop answering; how long
//! until their nodes are DOWN, and until their tasks run elsewhere.
//!
//! ## What is measured
//!
//! One manager (`shoal daemon --init --executor sim`, its own node drained so tasks go only
//! to simulated agents), the heartbeat period set to `--heartbeat-period` (default 1 s, to
//! keep the run short; Control API `UpdateCluster`, as `shoal swarm update
//! --dispatcher-heartbeat` does), `--agents` (default 1,000) simulated agents as in
//! `converge` (own certificate, mutual TLS, Session, HeartbeatStream, Assignments, statuses
//! through the real agent's status reporter), and one replicated service of `--tasks`
//! (default 100,000) tasks, all RUNNING first.
//!
//! Then `--fraction` (default 10 %) of the agents, spread evenly over the fleet, go silent
//! at once: they stop heartbeating, stop reading their streams and stop reporting, but keep
//! their connection and streams open. That is a hung or partitioned node, not a stopped
//! one: an agent that closes its connection is marked DISCONNECTED by the dispatcher at
//! once (its session stream ends), which is a different, faster path; a silent one is only
//! found by its missing heartbeats, which is what S7 measures.
//!
//! Figures, each from a silenced agent's last heartbeat (the time its answer arrived):
//!
//! - **(a) detection**: its node's DOWN mark — the `meta.updated_at` the store stamped on the
//!   DOWN write, read by polling `ListNodes` every 100 ms until every silenced node is DOWN.
//!   This is policy: the dispatcher's deadline is 3 heartbeat periods after the last beat.
//! - **(b) replacement assigned**: when the replacement of each of its tasks (same slot)
//!   first reached a live agent on its `Assignments` stream; and **(c) replacement
//!   RUNNING**: when the live agent's RUNNING report for it was acknowledged. The mechanical
//!   part is reported per task as (b − a) and (c − a), against the DOWN mark of the node the
//!   slot's task was on (p50 / p99 / max; the goals are judged on the max), and as the time
//!   from the last DOWN mark to the last replacement assigned / RUNNING. Also when the
//!   orchestrator created each replacement (its `meta.created_at` − a).
//!
//! Checks: every silenced node DOWN and no other node DOWN (false marks), one replacement per
//! displaced slot, all on live agents, and `ListTasks` showing every task of the service
//! RUNNING at the end. Every phase has a deadline; loopback only.
//!
//! Anchors (performance notes, S7): SwarmKit ≥ 20 s (5 s × 3 detection plus a 5 s restart
//! delay), Nomad ≥ 20 s, Kubernetes ~5 min 40 s by default. Shoal's orchestrator replaces a
//! task on a DOWN node at once (no restart delay).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use shoal_api::v1::{TaskState, node_status};

use crate::converge::{cluster, pct_ms, secs_between, wait_running};
use crate::report::Report;
use crate::simagent::{cpu_between, parse_duration, progress, raise_nofile, shoal_bin, thread_cpu};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Simulated agents.
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// Tasks: one replicated service of this many replicas.
    #[arg(long, default_value_t = 100_000)]
    tasks: u64,
    /// The share of agents silenced.
    #[arg(long, default_value_t = 0.1)]
    fraction: f64,
    /// The cluster's heartbeat period (DOWN after 3 periods without a heartbeat).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    heartbeat_period: Duration,
    /// How long after STARTING an agent reports RUNNING (a fake container start), e.g. 20ms.
    #[arg(long, default_value = "0ms", value_parser = parse_delay)]
    start_delay: Duration,
    /// Certificates requested, and sessions opened, at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// The `shoal` binary (default: next to this one).
    #[arg(long)]
    shoal_bin: Option<PathBuf>,
    /// Directory for the manager's state (default: the system's temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn parse_delay(s: &str) -> Result<Duration, String> {
    if s.trim_start_matches('0')
        .trim_end_matches("ms")
        .trim_end_matches('s')
        .is_empty()
    {
        return Ok(Duration::ZERO);
    }
    parse_duration(s)
}

fn timestamp(t: &Option<prost_types::Timestamp>) -> Option<SystemTime> {
    t.as_ref().and_then(|t| SystemTime::try_from(*t).ok())
}

pub fn run(args: Args) -> Report {
    let mut report = Report::new("reschedule");
    let fail = |e: String| -> ! {
        eprintln!("Error: {e}");
        std::process::exit(1);
    };
    let bin = shoal_bin(&args.shoal_bin).unwrap_or_else(|e| fail(e));
    if args.agents < 2 || args.tasks == 0 || !(args.fraction > 0.0 && args.fraction < 1.0) {
        fail("--agents must be at least 2, --tasks positive, --fraction within (0, 1)".into());
    }
    let nofile = raise_nofile();
    let needed = args.agents as u64 + 2 * args.concurrency as u64 + 256;
    if needed > nofile {
        fail(format!(
            "{} agents need about {needed} open files; the limit is {nofile}",
            args.agents
        ));
    }
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix("shoal-bench-reschedule-")
        .tempdir_in(&base)
        .unwrap_or_else(|e| fail(format!("a temporary directory in {}: {e}", base.display())));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let result = runtime.block_on(scenario(&args, &bin, dir.path(), &mut report));
    drop(runtime);
    drop(dir);
    if let Err(e) = result {
        fail(e);
    }
    report
}

async fn scenario(args: &Args, bin: &Path, dir: &Path, report: &mut Report) -> Result<(), String> {
    let (a, t) = (args.agents, args.tasks);
    let period = args.heartbeat_period;
    progress(format!(
        "{t} tasks on {a} agents, heartbeat period {} ms: starting a manager",
        period.as_millis()
    ));
    let (mut manager, mut control, agents) = cluster(
        bin,
        &dir.join("manager"),
        a,
        args.concurrency,
        args.start_delay,
        Some(period),
    )
    .await?;
    let pid = manager.pid;
    let fleet = agents.fleet.clone();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let i0 = Instant::now();
    let service = control.create_service("bench-reschedule", t).await?;
    wait_running(
        &format!("{t} tasks"),
        &agents,
        t,
        pid,
        Duration::from_secs(60) + Duration::from_millis(2) * t as u32,
    )
    .await?;
    let converged = i0.elapsed();
    progress(format!(
        "{t} tasks RUNNING in {:.2} s; settling for 2 periods",
        converged.as_secs_f64()
    ));
    tokio::time::sleep(period * 2 + Duration::from_millis(500)).await;

    // The victims, spread evenly, and the slots their tasks hold.
    let k = ((a as f64 * args.fraction).round() as usize).clamp(1, a - 1);
    let victims: Vec<usize> = (0..k).map(|j| j * a / k).collect();
    let victim_set: HashSet<usize> = victims.iter().copied().collect();
    let mut slot_victim: HashMap<u64, usize> = HashMap::new();
    let mut victim_nodes: HashMap<String, usize> = HashMap::new();
    for &v in &victims {
        let log = fleet.agents[v].lock().expect("agent log");
        victim_nodes.insert(log.node_id.clone(), v);
        for task in log.tasks.values() {
            if task.service_id == service && task.running.is_some() {
                slot_victim.insert(task.slot, v);
            }
        }
    }
    let displaced = slot_victim.len() as u64;
    let running0 = fleet.running.load(Ordering::Relaxed);
    let cpu0 = thread_cpu(pid);
    progress(format!(
        "silencing {k} agents holding {displaced} tasks (no more heartbeats, reads or \
         reports; connections stay open)"
    ));
    let t_stop = SystemTime::now();
    let stopped = Instant::now();
    for &v in &victims {
        agents.silence(v);
    }

    // (a): poll until every silenced node is DOWN.
    let mut down: HashMap<usize, SystemTime> = HashMap::new();
    let mut false_down: HashSet<String> = HashSet::new();
    let deadline = period * 3 + Duration::from_secs(30);
    let mut shown = Instant::now();
    while down.len() < k {
        if stopped.elapsed() > deadline {
            return Err(format!(
                "{} of {k} silenced nodes DOWN after {:.0} s",
                down.len(),
                deadline.as_secs_f64()
            ));
        }
        for node in control.nodes().await? {
            let id = node.meta.as_ref().map(|m| m.id.clone()).unwrap_or_default();
            let is_down =
                node.status.as_ref().map(|s| s.state) == Some(node_status::State::Down as i32);
            if !is_down {
                continue;
            }
            match victim_nodes.get(&id) {
                Some(&v) => {
                    down.entry(v).or_insert_with(|| {
                        node.meta
                            .as_ref()
                            .and_then(|m| timestamp(&m.updated_at))
                            .unwrap_or_else(SystemTime::now)
                    });
                }
                None => {
                    false_down.insert(id);
                }
            }
        }
        if shown.elapsed() >= Duration::from_secs(2) {
            progress(format!("{}/{k} silenced nodes DOWN", down.len()));
            shown = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    progress(format!(
        "{k} nodes DOWN {:.2} s after silencing; waiting for {displaced} replacements RUNNING",
        stopped.elapsed().as_secs_f64()
    ));

    // (b), (c): every displaced slot RUNNING again on a live agent.
    let peak = wait_running(
        "replacements",
        &agents,
        running0 + displaced,
        pid,
        Duration::from_secs(60),
    )
    .await?;
    let recovered = stopped.elapsed();
    let cpu = cpu_between(&cpu0, &thread_cpu(pid)).as_secs_f64();
    // A moment for stragglers (a replacement placed on a node about to go DOWN is replaced
    // again), then the store's view.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let store_tasks = control.tasks(&service).await?;
    let in_store = store_tasks
        .iter()
        .filter(|t| {
            t.desired_state == TaskState::Running as i32
                && t.status.as_ref().map(|s| s.state) == Some(TaskState::Running as i32)
        })
        .count();
    let total = store_tasks.len();
    for node in control.nodes().await? {
        let id = node.meta.as_ref().map(|m| m.id.clone()).unwrap_or_default();
        if !victim_nodes.contains_key(&id)
            && node.status.as_ref().map(|s| s.state) == Some(node_status::State::Down as i32)
        {
            false_down.insert(id);
        }
    }
    let last_beats: HashMap<usize, SystemTime> = victims
        .iter()
        .filter_map(|&v| {
            let log = fleet.agents[v].lock().expect("agent log");
            log.last_beat.map(|b| (v, b))
        })
        .collect();
    // Replacements: the service's tasks first seen by a live agent after the silencing.
    let mut replacements: HashMap<u64, crate::simagent::TaskLog> = HashMap::new();
    for (agent, _, task) in fleet.tasks_of(&service) {
        if victim_set.contains(&agent) || task.seen < t_stop || task.running.is_none() {
            continue;
        }
        // The last placement of the slot (one placed on a node about to go DOWN was
        // replaced again).
        match replacements.get(&task.slot) {
            Some(r) if r.seen >= task.seen => {}
            _ => {
                replacements.insert(task.slot, task);
            }
        }
    }
    let lost = fleet.lost();
    progress("stopping");
    agents.shutdown().await;
    manager.kill();

    let missing: Vec<u64> = slot_victim
        .keys()
        .filter(|s| !replacements.contains_key(s))
        .copied()
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "{} displaced slots without a replacement RUNNING on a live agent (e.g. slot {})",
            missing.len(),
            missing[0]
        ));
    }
    let mut detection = Vec::new();
    for (&v, &d) in &down {
        if let Some(&b) = last_beats.get(&v) {
            detection.push(secs_between(b, d));
        }
    }
    detection.sort_by(f64::total_cmp);
    let beats: Vec<SystemTime> = last_beats.values().copied().collect();
    let beat_spread = match (beats.iter().min(), beats.iter().max()) {
        (Some(&lo), Some(&hi)) => secs_between(lo, hi),
        _ => 0.0,
    };
    // Gaps between consecutive DOWN marks: marks written one after another show as a steady
    // gap of one store write each.
    let mut marks: Vec<SystemTime> = down.values().copied().collect();
    marks.sort();
    let mut gaps: Vec<f64> = marks.windows(2).map(|w| secs_between(w[0], w[1])).collect();
    gaps.sort_by(f64::total_cmp);
    let first_down = down.values().min().copied().unwrap_or(t_stop);
    let last_down = down.values().max().copied().unwrap_or(t_stop);
    // A replacement placed on a silenced node not yet DOWN is replaced again when that node
    // goes DOWN: the mechanical time of a slot counts from the DOWN mark of the last
    // silenced node that held one of its tasks (from the store's view of every task).
    let mut reference: HashMap<u64, SystemTime> = HashMap::new();
    let mut placed_twice = 0usize;
    for task in &store_tasks {
        let Some(&v) = victim_nodes.get(&task.node_id) else {
            continue;
        };
        let Some(&d) = down.get(&v) else { continue };
        let created_after = task
            .meta
            .as_ref()
            .and_then(|m| timestamp(&m.created_at))
            .is_some_and(|c| c > t_stop);
        if created_after {
            placed_twice += 1;
        }
        let r = reference.entry(task.slot).or_insert(d);
        *r = (*r).max(d);
    }
    let mut assigned = Vec::new();
    let mut running = Vec::new();
    let mut created = Vec::new();
    let mut last_seen = last_down;
    let mut last_running = last_down;
    for (slot, v) in &slot_victim {
        let r = &replacements[slot];
        let d = reference.get(slot).copied().unwrap_or(down[v]);
        assigned.push(secs_between(d, r.seen));
        let ran = r.running.expect("filtered");
        running.push(secs_between(d, ran));
        if let Some(c) = r.created {
            created.push(secs_between(d, c));
        }
        last_seen = last_seen.max(r.seen);
        last_running = last_running.max(ran);
    }
    assigned.sort_by(f64::total_cmp);
    running.sort_by(f64::total_cmp);
    created.sort_by(f64::total_cmp);

    let policy = (period * 3).as_secs_f64() * 1e3;
    report.notes.push(format!(
        "one manager (shoal daemon --init --executor sim, its own node drained), {a} simulated \
         agents, {t} tasks in one replicated service, heartbeat period {} ms; {k} agents \
         ({:.0} %) silenced at once: no heartbeats, reads or reports, connections left open; \
         {displaced} tasks displaced; RUNNING {} after STARTING",
        period.as_millis(),
        args.fraction * 100.0,
        if args.start_delay.is_zero() {
            "at once".to_string()
        } else {
            format!("{} ms", args.start_delay.as_millis())
        },
    ));
    report.notes.push(format!(
        "ListTasks at the end: {in_store} of {total} tasks of the service RUNNING; \
         {} nodes DOWN that were not silenced; {lost} live sessions lost; the {k} DOWN marks \
         spread over {:.0} ms; {placed_twice} replacements were placed on a silenced node \
         not yet DOWN and replaced again (their slots count from that node's DOWN mark)",
        false_down.len(),
        secs_between(first_down, last_down) * 1e3
    ));
    report.row(
        format!("{t} tasks on {a} agents: converged first (CreateService → all RUNNING)"),
        converged.as_secs_f64(),
        "s",
        None,
        None,
    );
    report.row(
        "(a) detection: last heartbeat → DOWN, p50",
        pct_ms(&detection, 0.5),
        "ms",
        None,
        None,
    );
    report.row(
        "(a) detection: last heartbeat → DOWN, max",
        pct_ms(&detection, 1.0),
        "ms",
        Some(15_000.0),
        None,
    );
    report.row(
        "(a) detection beyond the policy, max",
        pct_ms(&detection, 1.0) - policy,
        "ms",
        None,
        None,
    );
    report.row(
        "    last heartbeats of the silenced agents: spread",
        beat_spread * 1e3,
        "ms",
        None,
        None,
    );
    report.row(
        "    DOWN marks: spread",
        secs_between(first_down, last_down) * 1e3,
        "ms",
        None,
        None,
    );
    report.row(
        "    DOWN marks: gap between consecutive marks, p50",
        pct_ms(&gaps, 0.5),
        "ms",
        None,
        None,
    );
    report.row(
        "    policy: 3 × heartbeat period",
        policy,
        "ms",
        Some(15_000.0),
        None,
    );
    report.row(
        "DOWN → replacement created (orchestrator), max",
        pct_ms(&created, 1.0),
        "ms",
        None,
        None,
    );
    report.row(
        "(b − a) DOWN → replacement assigned, p50",
        pct_ms(&assigned, 0.5),
        "ms",
        None,
        None,
    );
    report.row(
        "(b − a) DOWN → replacement assigned, p99",
        pct_ms(&assigned, 0.99),
        "ms",
        None,
        None,
    );
    report.row(
        "(b − a) DOWN → replacement assigned, max",
        pct_ms(&assigned, 1.0),
        "ms",
        None,
        Some(500.0),
    );
    report.row(
        "(c − a) DOWN → replacement RUNNING, p50",
        pct_ms(&running, 0.5),
        "ms",
        None,
        None,
    );
    report.row(
        "(c − a) DOWN → replacement RUNNING, p99",
        pct_ms(&running, 0.99),
        "ms",
        None,
        None,
    );
    report.row(
        "(c − a) DOWN → replacement RUNNING, max",
        pct_ms(&running, 1.0),
        "ms",
        Some(5_000.0),
        Some(2000.0),
    );
    report.row(
        "last DOWN → last replacement assigned",
        secs_between(last_down, last_seen) * 1e3,
        "ms",
        None,
        None,
    );
    report.row(
        "last DOWN → last replacement RUNNING",
        secs_between(last_down, last_running) * 1e3,
        "ms",
        None,
        None,
    );
    report.row(
        "silenced → all replacements RUNNING (wall)",
        recovered.as_secs_f64(),
        "s",
        Some(20.0),
        None,
    );
    report.row("displaced tasks", displaced as f64, "", None, None);
    report.row(
        "manager CPU, silenced → all replacements RUNNING",
        cpu,
        "s",
        None,
        None,
    );
    report.row(
        "manager peak RSS during recovery",
        peak as f64 / 1024.0,
        "MiB",
        None,
        None,
    );
    Ok(())
}
