//! `shoal-bench converge` (scenario S3): one service of R replicas, from `CreateService` to
//! every task RUNNING on simulated agents.
//!
//! ## What is measured
//!
//! For each replica count (`--replicas`, default 10,000 then 100,000) a fresh
//! single-manager cluster is started (`shoal daemon --init --executor sim`, the `shoal`
//! binary next to this one, on a loopback port, its state in a temporary directory). Its own
//! node is drained (Control API `UpdateNode`, availability DRAIN), so every task goes to a
//! simulated agent and is observed by one. Then `--agents` (default 1,000) simulated agents
//! join, each with its own certificate (worker join token), its own mutual-TLS HTTP/2
//! connection, a `Dispatcher.Session` stream, heartbeats on a `HeartbeatStream` at the
//! cluster's period (5 s), and an `Assignments` stream — what the real agent holds.
//!
//! The clock starts just before `Control.CreateService` (remote API, mutual TLS, the
//! manager's own certificate): one replicated service of R tasks that would run `sleep` as a
//! process. The orchestrator creates the tasks, the scheduler assigns them, the dispatcher
//! streams each agent its assignments; every task an agent receives with desired state
//! RUNNING is reported ACCEPTED and STARTING at once and RUNNING after `--start-delay`
//! (default 0: at once; 20ms stands for a fast container start), through the real agent's
//! status reporter (`shoal_node::worker::StatusReporter`: the latest status per task,
//! coalesced, one `UpdateTaskStatus` call in flight per agent, with what is pending — so
//! with no delay the three statuses usually leave as one RUNNING, as on a real agent whose
//! task starts faster than the call returns). Each agent records, per task, when it arrived
//! and when the call carrying its RUNNING status was answered (the dispatcher answers once
//! the status is committed through Raft).
//!
//! Figures:
//!
//! - **all RUNNING**: the last RUNNING acknowledgement minus the clock's start; R / that is
//!   the end-to-end rate. Also when the last task was created (its `meta.created_at`) and
//!   when the last one reached an agent ("all assigned").
//! - **per task create → RUNNING**, p50 / p99 / max: the acknowledgement minus the task's
//!   `meta.created_at` (stamped by the manager on the same clock); and from the
//!   `CreateService` call.
//! - **manager CPU-seconds** during the run (per-thread `schedstat`), and its **peak RSS**
//!   (VmRSS sampled every 20 ms during the run; VmHWM at the end, which includes the joins).
//!   The agents' side (this process) CPU is given too: both share the machine's two cores.
//! - At the end, `Control.ListTasks` confirms R tasks RUNNING in the store.
//!
//! ## Limits
//!
//! Every phase has a deadline; the manager is killed with its guard (and dies with this
//! process); agents are stopped with theirs. Loopback only. The SwarmKit anchor (performance
//! notes, "Measured side by side", S3) is its whole in-process cluster at 5,000 replicas:
//! 6.78 s, 737 tasks/s (1 manager + 10 workers); 100,000 replicas extrapolate to ~140 s.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use crate::report::Report;
use crate::simagent::{
    Control, Manager, TaskAgents, certificates, cpu_between, free_addr, parse_duration, progress,
    raise_nofile, rss_kib, shoal_bin, thread_cpu,
};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Simulated agents.
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// Replica counts, comma-separated; each runs against a fresh manager and agents.
    #[arg(long, default_value = "10000,100000", value_delimiter = ',')]
    replicas: Vec<u64>,
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

/// Peak VmRSS / VmHWM of `pid`, in KiB.
pub fn hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

pub fn secs_between(from: SystemTime, to: SystemTime) -> f64 {
    match to.duration_since(from) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// Percentile of seconds, as milliseconds (input sorted).
pub fn pct_ms(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)] * 1e3
}

/// Starts a manager with the sim executor, drains its node, and joins `n` task agents.
pub async fn cluster(
    bin: &Path,
    state: &Path,
    n: usize,
    concurrency: usize,
    start_delay: Duration,
    period: Option<Duration>,
) -> Result<(Manager, Control, TaskAgents), String> {
    let addr = free_addr();
    let mut manager = Manager::start(bin, state, &addr, &["--executor", "sim"])?;
    let mut control = Control::connect(state, &addr, &mut manager).await?;
    let token = control
        .cluster()
        .await?
        .root_ca
        .and_then(|r| r.join_tokens)
        .map(|t| t.worker)
        .ok_or("the cluster has no join tokens")?;
    if let Some(period) = period {
        control.set_period(period).await?;
    }
    let manager_node = control.drain_manager().await?;
    progress(format!(
        "manager node {manager_node} drained; {n} certificates with the worker token"
    ));
    let started = Instant::now();
    let issued = certificates(&addr, &token, n, concurrency).await?;
    progress(format!(
        "{n} certificates in {:.1} s; {n} agents: session, heartbeats, assignments",
        started.elapsed().as_secs_f64()
    ));
    let agents = TaskAgents::start(issued, &addr, concurrency, start_delay).await?;
    Ok((manager, control, agents))
}

/// Waits until `agents` acknowledged `target` RUNNING statuses in all, sampling the
/// manager's RSS; returns the peak RSS in KiB.
pub async fn wait_running(
    what: &str,
    agents: &TaskAgents,
    target: u64,
    pid: u32,
    deadline: Duration,
) -> Result<u64, String> {
    let fleet = &agents.fleet;
    let start = Instant::now();
    let mut shown = Instant::now();
    let mut peak = rss_kib(pid);
    while fleet.running.load(Ordering::Relaxed) < target {
        peak = peak.max(rss_kib(pid));
        let status = || {
            format!(
                "{} seen, {}/{target} RUNNING, {} status calls ({} failed), {} sessions lost",
                fleet.seen.load(Ordering::Relaxed),
                fleet.running.load(Ordering::Relaxed),
                fleet.status_calls.load(Ordering::Relaxed),
                fleet.status_errors.load(Ordering::Relaxed),
                fleet.lost()
            )
        };
        if start.elapsed() > deadline {
            return Err(format!(
                "{what}: not done in {:.0} s ({})",
                deadline.as_secs_f64(),
                status()
            ));
        }
        if shown.elapsed() >= Duration::from_secs(2) {
            progress(format!("{what}: {}", status()));
            shown = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(peak.max(rss_kib(pid)))
}

pub fn run(args: Args) -> Report {
    let mut report = Report::new("converge");
    let fail = |e: String| -> ! {
        eprintln!("Error: {e}");
        std::process::exit(1);
    };
    let bin = shoal_bin(&args.shoal_bin).unwrap_or_else(|e| fail(e));
    if args.agents == 0 || args.replicas.is_empty() || args.concurrency == 0 {
        fail("--agents, --replicas and --concurrency must not be empty or zero".into());
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
        .prefix("shoal-bench-converge-")
        .tempdir_in(&base)
        .unwrap_or_else(|e| fail(format!("a temporary directory in {}: {e}", base.display())));
    report.notes.push(format!(
        "one manager (shoal daemon --init --executor sim, its own node drained, Raft log in {}), \
         {} simulated agents in this process (own certificate, mutual-TLS connection, Session, \
         HeartbeatStream and Assignments streams; statuses through the real agent's status \
         reporter), RUNNING {} after STARTING; loopback; both processes share this machine's \
         {} cores",
        base.display(),
        args.agents,
        if args.start_delay.is_zero() {
            "at once".to_string()
        } else {
            format!("{} ms", args.start_delay.as_millis())
        },
        std::thread::available_parallelism().map_or(0, |n| n.get())
    ));
    report.notes.push(
        "anchor: SwarmKit's whole in-process cluster (1 manager + 10 workers, test executor) on \
         this machine class: 5,000 replicas in 6.78 s, 737 tasks/s (performance notes, S3 \
         side by side); 100,000 replicas extrapolate to ~140 s"
            .into(),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut failed = None;
    for &r in &args.replicas {
        if let Err(e) = runtime.block_on(level(&args, &bin, dir.path(), r, &mut report)) {
            failed = Some(format!("{r} replicas: {e}"));
            break;
        }
    }
    drop(runtime);
    drop(dir);
    if let Some(e) = failed {
        fail(e);
    }
    report
}

async fn level(
    args: &Args,
    bin: &Path,
    dir: &Path,
    r: u64,
    report: &mut Report,
) -> Result<(), String> {
    let a = args.agents;
    progress(format!("{r} replicas on {a} agents: starting a manager"));
    let state = dir.join(format!("manager-{r}"));
    let (mut manager, mut control, agents) =
        cluster(bin, &state, a, args.concurrency, args.start_delay, None).await?;
    let pid = manager.pid;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_before = rss_kib(pid);
    let cpu0 = thread_cpu(pid);
    let self0 = thread_cpu(std::process::id());
    progress(format!(
        "{r} replicas: creating the service (manager RSS {} MiB)",
        rss_before / 1024
    ));
    let t0 = SystemTime::now();
    let i0 = Instant::now();
    let service = control.create_service(&format!("bench-{r}"), r).await?;
    let create_call = i0.elapsed();
    let deadline = Duration::from_secs(60) + Duration::from_millis(2) * r as u32;
    let peak = wait_running(&format!("{r} replicas"), &agents, r, pid, deadline).await?;
    let wall = i0.elapsed();
    let cpu = cpu_between(&cpu0, &thread_cpu(pid)).as_secs_f64();
    let self_cpu = cpu_between(&self0, &thread_cpu(std::process::id())).as_secs_f64();
    let hwm = hwm_kib(pid);
    let tasks = agents.fleet.tasks_of(&service);
    let (in_store, total) = control.running_tasks(&service).await?;
    let fleet = &agents.fleet;
    let lost = fleet.lost();
    let status_calls = fleet.status_calls.load(Ordering::Relaxed);
    let status_errors = fleet.status_errors.load(Ordering::Relaxed);
    let messages = fleet.assignment_messages.load(Ordering::Relaxed);
    progress(format!("{r} replicas: stopping"));
    agents.shutdown().await;
    manager.kill();

    if tasks.len() as u64 != r {
        return Err(format!(
            "the agents saw {} tasks of the service, not {r}",
            tasks.len()
        ));
    }
    if in_store as u64 != r {
        return Err(format!(
            "ListTasks: {in_store} of {total} tasks RUNNING in the store, not {r}"
        ));
    }
    let mut from_create = Vec::new();
    let mut from_call = Vec::new();
    let mut last_running = t0;
    let mut last_created = t0;
    let mut last_seen = t0;
    for (_, _, t) in &tasks {
        let running = t
            .running
            .ok_or("a task without a RUNNING acknowledgement")?;
        last_running = last_running.max(running);
        last_seen = last_seen.max(t.seen);
        from_call.push(secs_between(t0, running));
        if let Some(c) = t.created {
            last_created = last_created.max(c);
            from_create.push(secs_between(c, running));
        }
    }
    from_create.sort_by(f64::total_cmp);
    from_call.sort_by(f64::total_cmp);
    let all_running = secs_between(t0, last_running);
    let label = format!("{r} replicas on {a} agents");
    let goal = match r {
        10_000 => Some(1.0),
        100_000 => Some(5.0),
        _ => None,
    };
    let anchor_s = r as f64 / 737.0;
    progress(format!(
        "{label}: all RUNNING in {all_running:.3} s (wall {:.3} s), manager CPU {cpu:.2} s, \
         peak RSS {} MiB",
        wall.as_secs_f64(),
        peak / 1024
    ));
    report.row(
        format!("{label}: CreateService → all RUNNING"),
        all_running,
        "s",
        Some(anchor_s),
        goal,
    );
    report.row(
        format!("{label}: tasks RUNNING / s, end to end"),
        r as f64 / all_running,
        "/s",
        Some(737.0),
        None,
    );
    report.row(
        format!("{label}: CreateService call answered"),
        create_call.as_secs_f64() * 1e3,
        "ms",
        None,
        None,
    );
    report.row(
        format!("{label}: last task created"),
        secs_between(t0, last_created),
        "s",
        None,
        None,
    );
    report.row(
        format!("{label}: last task reached its agent (all assigned)"),
        secs_between(t0, last_seen),
        "s",
        None,
        None,
    );
    report.row(
        format!("{label}: per task created → RUNNING p50"),
        pct_ms(&from_create, 0.5),
        "ms",
        None,
        None,
    );
    report.row(
        format!("{label}: per task created → RUNNING p99"),
        pct_ms(&from_create, 0.99),
        "ms",
        None,
        (r == 100_000).then_some(1000.0),
    );
    report.row(
        format!("{label}: per task created → RUNNING max"),
        pct_ms(&from_create, 1.0),
        "ms",
        None,
        None,
    );
    report.row(
        format!("{label}: per task CreateService call → RUNNING p50"),
        pct_ms(&from_call, 0.5),
        "ms",
        None,
        None,
    );
    report.row(
        format!("{label}: per task CreateService call → RUNNING p99"),
        pct_ms(&from_call, 0.99),
        "ms",
        None,
        None,
    );
    report.row(
        format!("{label}: manager CPU during the run"),
        cpu,
        "s",
        None,
        None,
    );
    report.row(
        format!("{label}: manager CPU per task"),
        cpu / r as f64 * 1e6,
        "µs",
        None,
        None,
    );
    report.row(
        format!("{label}: agents' side CPU (this process)"),
        self_cpu,
        "s",
        None,
        None,
    );
    report.row(
        format!("{label}: manager peak RSS during the run"),
        peak as f64 / 1024.0,
        "MiB",
        None,
        None,
    );
    report.row(
        format!("{label}: manager RSS before the run"),
        rss_before as f64 / 1024.0,
        "MiB",
        None,
        None,
    );
    report.row(
        format!("{label}: manager VmHWM at the end"),
        hwm as f64 / 1024.0,
        "MiB",
        None,
        None,
    );
    report.notes.push(format!(
        "{label}: ListTasks confirms {in_store} of {total} tasks RUNNING; {status_calls} \
         UpdateTaskStatus calls ({status_errors} failed and retried), {messages} assignment \
         messages, {lost} sessions lost; first RUNNING at {:.3} s; per-task p50 from the \
         first sight on the agent {:.1} ms",
        pct_ms(&from_call, 0.0) / 1e3,
        {
            let mut v: Vec<f64> = tasks
                .iter()
                .filter_map(|(_, _, t)| t.running.map(|r| secs_between(t.seen, r)))
                .collect();
            v.sort_by(f64::total_cmp);
            pct_ms(&v, 0.5)
        }
    ));
    Ok(())
}
