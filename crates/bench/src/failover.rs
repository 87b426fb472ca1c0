//! `shoal-bench failover` (scenario S6): three managers, a fleet of simulated agents running
//! a replicated service, a steady stream of writes, and the leader killed with SIGKILL,
//! again and again.
//!
//! ## The cluster
//!
//! Three `shoal daemon` processes on loopback ports (`--executor sim`, `--availability
//! drain`, so every task goes to a simulated agent), each with its own state directory
//! (redb log, fsync) under `--dir`: the first with `--init`, the other two joining with the
//! manager token. `--agents` simulated agents ([`crate::simagent::TaskAgents`]) get
//! certificates with the worker token and connect as the real agent does: each knows the
//! three managers, agent i starting with manager i mod 3 (as workers joined through
//! different managers would), and a follower's refusal names the leader, which the agent
//! follows — so every session ends up on the leader: in Shoal, as in SwarmKit, only the
//! leader's dispatcher holds sessions. Each agent holds what the real one holds (mutual-TLS
//! HTTP/2 connection, `Session` stream, heartbeats on a `HeartbeatStream` at the cluster's
//! period, 5 s, an `Assignments` stream) and reports its tasks ACCEPTED, STARTING and
//! RUNNING through the real agent's status reporter. When its session breaks it reconnects
//! as the real agent does (`shoal_node::agent`): backoff min(100 ms + 2 × previous, 8 s),
//! waiting a random part of it, trying every manager of the list the last session message
//! carried, following a follower's pointer to the leader. A replicated service of
//! `--agents × --replicas-per-agent` tasks converges to RUNNING before the first kill.
//!
//! ## A round
//!
//! 1. The cluster is stable: three managers reachable, one leader (`ListNodes`), every task
//!    RUNNING, every agent with a session and a heartbeat accepted.
//! 2. The steady writer starts: every `--write-interval` (20 ms) a new `CreateConfig` goes
//!    to one of the two managers that will survive (alternately; a follower forwards it to
//!    the leader), each with a 2 s deadline, each recording when it was answered and how.
//! 3. After a second of writes the leader is killed (SIGKILL, `kill -9`).
//! 4. The round waits (bounded by `--round-deadline`) for the first write committed after
//!    the kill and for every agent to be back; then `--settle` longer, so that whatever the
//!    new leader decides about nodes and tasks shows up; then compares the tasks.
//! 5. The killed manager is restarted from its state and the round ends when the leader
//!    sees all three managers reachable and a write through the restarted one commits.
//!
//! ## Figures
//!
//! - **Write unavailability**, per round: the answer to the first write sent after the kill
//!   that committed, minus the kill ("from the kill"), and minus the last write answered OK before it ("from the
//!   last commit": the window a client sees, which includes up to one write interval and one
//!   commit latency before the kill). p50 / p99 / max over the rounds (with few rounds, p99
//!   is the maximum).
//! - **Agents reconnected**: an agent is *affected* if its session was with the killed
//!   manager, or if its session broke during the round for any other reason. It is back
//!   when it has a new session with a surviving manager and that session's first heartbeat
//!   was accepted. Per round: the time from the kill until the last affected agent is back
//!   ("all agents reconnected"); over all rounds and agents: p50 / p99 of each agent's own
//!   time. Also counted: reconnection attempts that found no manager to take the session.
//! - **Tasks restarted because of the failover**: the service's tasks before the kill
//!   (`ListTasks`) against after recovery and settling: a task RUNNING before and not after,
//!   a task whose desired state changed, or a task that did not exist before. The agents
//!   count too: tasks they had not seen before, and started tasks the manager told them to
//!   shut down. Must be 0; when it is not, the report names the tasks, their status message
//!   (which says which component moved them) and their nodes' state.
//! - **Manager CPU-seconds** (user + system from `/proc/<pid>/stat`, every process
//!   incarnation of the three managers, dead threads included) over the setup and over the
//!   rounds, and **peak RSS** (the largest VmHWM of any manager process, read before each
//!   kill and at the end). The agents' side runs in this process and shares the two cores.
//!
//! ## What it leaves out
//!
//! The agents are simulated: no executor, no container runtime, no agent database (a task
//! an agent already started is simply not started again from the new session's COMPLETE
//! set, as the real worker's plan does not restart a running task it keeps). The kill is of
//! a process on the same machine: no network partition, no disk loss, no asymmetric links.
//! The caught-up check after a restart is the leader's reachability view plus one forwarded
//! write, not a comparison of Raft indexes (the Control API does not expose them). All
//! timings come from one busy machine, manager and agents sharing its cores: provisional.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use shoal_api::v1::control_client::ControlClient;
use shoal_api::v1::{
    CreateConfigRequest, ListNodesRequest, ListTasksRequest, NodeRole, Task, TaskState,
    manager_status, node_status,
};
use shoal_tls::{Credentials, Dialer};
use tokio::sync::watch;
use tonic::transport::Channel;

use crate::converge::{hwm_kib, wait_running};
use crate::report::Report;
use crate::simagent::{
    Control, Manager, TaskAgents, certificates, free_addr, parse_duration, progress, raise_nofile,
    rss_kib, shoal_bin,
};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Simulated agents (the full run: 10000).
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// Replicas of the service per agent (the service has agents × this tasks).
    #[arg(long, default_value_t = 2)]
    replicas_per_agent: u64,
    /// Leader kills (rounds).
    #[arg(long, default_value_t = 5)]
    kills: usize,
    /// Time between two writes of the steady writer (each write is its own call).
    #[arg(long, default_value = "20ms", value_parser = parse_duration)]
    write_interval: Duration,
    /// How long after recovery the tasks are compared (lets late reactions show up).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    settle: Duration,
    /// Longest a round may take from the kill to recovery.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    round_deadline: Duration,
    /// Certificates requested, and first sessions opened, at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// The `shoal` binary (default: next to this one).
    #[arg(long)]
    shoal_bin: Option<PathBuf>,
    /// Directory for the managers' state (default: the system's temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
}

// --- Manager processes ---------------------------------------------------------------------

/// User + system CPU of a process so far (its dead threads included).
fn process_cpu(pid: u32) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    // Fields after the command name (which may hold spaces) start at field 3 (state);
    // utime and stime are fields 14 and 15.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return Duration::ZERO;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    // SAFETY: a plain libc query.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Duration::from_secs_f64(ticks as f64 / hz)
}

/// One of the three managers: its address and state, its current process, and what its
/// past processes used.
struct Member {
    name: String,
    addr: String,
    state: PathBuf,
    log: Option<PathBuf>,
    process: Option<Manager>,
    /// CPU of the current process when the measured phase began (0 if it began later).
    cpu_mark: Duration,
    /// CPU of processes already gone: during setup, and during the rounds.
    cpu_setup_gone: Duration,
    cpu_rounds_gone: Duration,
    peak_kib: u64,
}

impl Member {
    fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(|p| p.pid)
    }

    /// Records the current process's CPU and peak RSS, then kills it with SIGKILL.
    fn kill(&mut self) {
        if let Some(pid) = self.pid() {
            let cpu = process_cpu(pid);
            self.peak_kib = self.peak_kib.max(hwm_kib(pid));
            self.cpu_setup_gone += self.cpu_mark;
            self.cpu_rounds_gone += cpu.saturating_sub(self.cpu_mark);
            self.cpu_mark = Duration::ZERO;
        }
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    fn start(&mut self, bin: &Path, extra: &[&str]) -> Result<(), String> {
        let mut args = vec![
            "--executor",
            "sim",
            "--availability",
            "drain",
            "--listen-engine-api",
            "off",
        ];
        args.extend_from_slice(extra);
        self.process = Some(Manager::daemon(
            bin,
            &self.state,
            &self.addr,
            &self.name,
            &args,
            self.log.as_deref(),
        )?);
        Ok(())
    }
}

// --- The Control API -----------------------------------------------------------------------

/// Control API clients, one channel per manager, with the first manager's certificate.
#[derive(Clone)]
struct Clients {
    channels: Vec<Channel>,
}

impl Clients {
    /// Connects to every manager (bounded wait for each to listen); the channels reconnect
    /// by themselves after a manager is killed and restarted.
    async fn new(dialer: &Dialer, addrs: &[String]) -> Result<Self, String> {
        let mut channels = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        for a in addrs {
            let channel = loop {
                match dialer.connect(a).await {
                    Ok(c) => break c,
                    Err(e) if Instant::now() > deadline => {
                        return Err(format!("no connection to the manager at {a}: {e}"));
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            };
            channels.push(channel);
        }
        Ok(Self { channels })
    }

    fn get(&self, i: usize) -> ControlClient<Channel> {
        ControlClient::new(self.channels[i].clone()).max_decoding_message_size(1 << 30)
    }
}

async fn write(client: &mut ControlClient<Channel>, name: &str) -> Result<(), String> {
    match tokio::time::timeout(
        Duration::from_secs(2),
        client.create_config(CreateConfigRequest {
            spec: Some(crate::raft::spec(name)),
        }),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(s)) => Err(format!("{:?} {}", s.code(), s.message())),
        Err(_) => Err("timed out (2 s)".into()),
    }
}

/// The index (into `addrs`) of the leader, if manager `via` answers and every manager is
/// reachable from the leader.
async fn stable_leader(clients: &Clients, via: usize, addrs: &[String]) -> Result<usize, String> {
    let nodes = tokio::time::timeout(
        Duration::from_secs(5),
        clients.get(via).list_nodes(ListNodesRequest {
            roles: vec![NodeRole::Manager as i32],
            ..Default::default()
        }),
    )
    .await
    .map_err(|_| "ListNodes timed out".to_string())?
    .map_err(|s| format!("ListNodes: {}", s.message()))?
    .into_inner()
    .nodes;
    leader_index(&nodes, addrs)
}

/// The index in `addrs` of the leader the managers' Node objects name, once all of `addrs`
/// are listed and reachable.
pub fn leader_index(nodes: &[shoal_api::v1::Node], addrs: &[String]) -> Result<usize, String> {
    let statuses: Vec<_> = nodes
        .iter()
        .filter_map(|n| n.manager_status.clone())
        .collect();
    if statuses.len() < addrs.len() {
        return Err(format!(
            "{} of {} managers in the store",
            statuses.len(),
            addrs.len()
        ));
    }
    let unreachable = statuses
        .iter()
        .filter(|m| m.reachability != manager_status::Reachability::Reachable as i32)
        .count();
    if unreachable > 0 {
        return Err(format!("{unreachable} managers not reachable"));
    }
    let leader = statuses
        .iter()
        .find(|m| m.leader)
        .ok_or("no leader in the store")?;
    addrs
        .iter()
        .position(|a| *a == leader.addr)
        .ok_or_else(|| format!("the leader's address {} is none of ours", leader.addr))
}

/// Waits (bounded) until the cluster is stable and every manager takes a write.
async fn wait_stable(
    clients: &Clients,
    addrs: &[String],
    deadline: Duration,
    seq: &mut u64,
) -> Result<usize, String> {
    let start = Instant::now();
    let mut shown = Instant::now();
    let mut last = String::new();
    loop {
        for via in 0..addrs.len() {
            match stable_leader(clients, via, addrs).await {
                Ok(leader) => {
                    let mut all = true;
                    for i in 0..addrs.len() {
                        *seq += 1;
                        if let Err(e) = write(&mut clients.get(i), &format!("s6-check-{seq}")).await
                        {
                            last = format!("a write through manager {}: {e}", i + 1);
                            all = false;
                            break;
                        }
                    }
                    if all {
                        return Ok(leader);
                    }
                }
                Err(e) => last = e,
            }
        }
        if start.elapsed() > deadline {
            return Err(format!(
                "the cluster was not stable within {:.0} s: {last}",
                deadline.as_secs_f64()
            ));
        }
        if shown.elapsed() >= Duration::from_secs(2) {
            progress(format!("waiting for a stable cluster: {last}"));
            shown = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The service's tasks by ID: (desired state, observed state, node, status message).
type TaskView = BTreeMap<String, (i32, i32, String, String)>;

async fn task_view(clients: &Clients, via: usize, service: &str) -> Result<TaskView, String> {
    let tasks: Vec<Task> = tokio::time::timeout(
        Duration::from_secs(30),
        clients.get(via).list_tasks(ListTasksRequest {
            service_ids: vec![service.to_string()],
            ..Default::default()
        }),
    )
    .await
    .map_err(|_| "ListTasks timed out".to_string())?
    .map_err(|s| format!("ListTasks: {}", s.message()))?
    .into_inner()
    .tasks;
    Ok(tasks
        .into_iter()
        .map(|t| {
            let id = t.meta.as_ref().map(|m| m.id.clone()).unwrap_or_default();
            let (state, message) = t
                .status
                .as_ref()
                .map(|s| {
                    (
                        s.state,
                        format!("{} {}", s.message, s.err).trim().to_string(),
                    )
                })
                .unwrap_or_default();
            (id, (t.desired_state, state, t.node_id.clone(), message))
        })
        .collect())
}

fn running(view: &TaskView) -> usize {
    let r = TaskState::Running as i32;
    view.values()
        .filter(|(desired, state, _, _)| *desired == r && *state == r)
        .count()
}

/// Node states (by node ID) of every node, as the store has them.
async fn node_states(clients: &Clients, via: usize) -> Result<HashMap<String, i32>, String> {
    Ok(tokio::time::timeout(
        Duration::from_secs(30),
        clients.get(via).list_nodes(ListNodesRequest::default()),
    )
    .await
    .map_err(|_| "ListNodes timed out".to_string())?
    .map_err(|s| format!("ListNodes: {}", s.message()))?
    .into_inner()
    .nodes
    .into_iter()
    .map(|n| {
        (
            n.meta.map(|m| m.id).unwrap_or_default(),
            n.status.map(|s| s.state).unwrap_or_default(),
        )
    })
    .collect())
}

// --- The steady writer ---------------------------------------------------------------------

/// Every write: when it was sent, when it was answered, and whether it committed.
type Answers = Arc<Mutex<Vec<(Instant, Instant, bool)>>>;

/// Sends a write every `interval` to `targets` in turn until `stop`, each on its own task.
fn start_writer(
    clients: Clients,
    targets: Vec<usize>,
    interval: Duration,
    round: usize,
    mut stop: watch::Receiver<bool>,
) -> (Answers, tokio::task::JoinHandle<()>) {
    let answers: Answers = Arc::default();
    let out = answers.clone();
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut k = 0usize;
        let mut inflight = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                _ = tick.tick() => {}
            }
            let mut client = clients.get(targets[k % targets.len()]);
            let name = format!("s6-r{round}-{k}");
            let answers = out.clone();
            inflight.spawn(async move {
                let sent = Instant::now();
                let ok = write(&mut client, &name).await.is_ok();
                answers
                    .lock()
                    .expect("answers")
                    .push((sent, Instant::now(), ok));
            });
            k += 1;
            while inflight.try_join_next().is_some() {}
        }
        // Let the writes in flight finish (each has its own 2 s deadline).
        while inflight.join_next().await.is_some() {}
    });
    (answers, task)
}

/// (the last commit answered before `t`, the first commit answered of the writes sent
/// after `t`). Only writes sent after the kill count for the second: a write the old
/// leader committed just before dying may be answered just after.
fn around(answers: &Answers, t: Instant) -> (Option<Instant>, Option<Instant>) {
    let answers = answers.lock().expect("answers");
    let before = answers
        .iter()
        .filter(|(_, at, ok)| *ok && *at <= t)
        .map(|(_, at, _)| *at)
        .max();
    let after = answers
        .iter()
        .filter(|(sent, _, ok)| *ok && *sent >= t)
        .map(|(_, at, _)| *at)
        .min();
    (before, after)
}

// --- The scenario --------------------------------------------------------------------------

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn secs_since(from: SystemTime, to: SystemTime) -> f64 {
    match to.duration_since(from) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// What the rounds measured.
#[derive(Default)]
struct Measured {
    /// Seconds, one per round.
    from_kill: Vec<f64>,
    from_last: Vec<f64>,
    all_back: Vec<f64>,
    first_back: Vec<f64>,
    /// Seconds, one per affected agent and round.
    per_agent: Vec<f64>,
    affected: Vec<usize>,
    open_failures: u64,
    restarted: usize,
    agent_new_tasks: u64,
    agent_shutdowns: u64,
    nodes_not_ready: usize,
    findings: Vec<String>,
}

pub fn run(args: Args) -> Report {
    let mut report = Report::new("S6 failover");
    let fail = |e: String| -> ! {
        eprintln!("Error: {e}");
        std::process::exit(1);
    };
    if args.agents == 0 || args.replicas_per_agent == 0 || args.kills == 0 {
        fail("--agents, --replicas-per-agent and --kills must be at least 1".into());
    }
    let bin = shoal_bin(&args.shoal_bin).unwrap_or_else(|e| fail(e));
    let nofile = raise_nofile();
    // Each agent holds one connection here (and one on the leader, whose process inherits
    // this limit); a reconnection closes the old one first, but hops open a few more.
    if (nofile as usize) < args.agents + 1024 {
        fail(format!(
            "the open-files limit is {nofile}; {} agents need about {} (ulimit -n)",
            args.agents,
            args.agents + 1024
        ));
    }
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix("shoal-bench-failover-")
        .tempdir_in(&base)
        .unwrap_or_else(|e| fail(format!("a temporary directory in {}: {e}", base.display())));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let tasks = args.agents as u64 * args.replicas_per_agent;
    report.notes.push(format!(
        "3 managers (shoal daemon, --executor sim, drained, own redb log each with fsync, state \
         in {}), {} simulated agents over mutual TLS on loopback, {} tasks RUNNING, a write every \
         {} ms through a surviving manager, {} leader kills (SIGKILL)",
        base.display(),
        args.agents,
        tasks,
        args.write_interval.as_millis(),
        args.kills
    ));
    if let Err(e) = runtime.block_on(scenario(&args, &bin, dir.path(), &mut report)) {
        fail(e);
    }
    report
}

async fn scenario(args: &Args, bin: &Path, dir: &Path, report: &mut Report) -> Result<(), String> {
    let started = Instant::now();
    let log = std::env::var_os("SHOAL_BENCH_MANAGER_LOG").map(PathBuf::from);
    let mut members: Vec<Member> = (1..=3)
        .map(|i| Member {
            name: format!("bench-manager-{i}"),
            addr: free_addr(),
            state: dir.join(format!("m{i}")),
            log: log
                .as_ref()
                .map(|l| PathBuf::from(format!("{}.m{i}", l.display()))),
            process: None,
            cpu_mark: Duration::ZERO,
            cpu_setup_gone: Duration::ZERO,
            cpu_rounds_gone: Duration::ZERO,
            peak_kib: 0,
        })
        .collect();
    let addrs: Vec<String> = members.iter().map(|m| m.addr.clone()).collect();

    // --- Setup: three managers, the agents, the service.
    progress("starting the first manager");
    members[0].start(bin, &["--init"])?;
    let mut first = members[0].process.take().expect("started");
    let control = Control::connect(&members[0].state, &addrs[0], &mut first).await;
    members[0].process = Some(first);
    let mut control = control?;
    let tokens = control
        .cluster()
        .await?
        .root_ca
        .and_then(|r| r.join_tokens)
        .ok_or("the cluster has no join tokens")?;
    progress("two more managers join");
    for m in members.iter_mut().skip(1) {
        m.start(
            bin,
            &["--join-addr", &addrs[0], "--join-token", &tokens.manager],
        )?;
    }
    let certs = shoal_node::certificates::load(&members[0].state)
        .map_err(|e| e.to_string())?
        .ok_or("the first manager has no certificates")?;
    let dialer = Dialer::mutual(Credentials::new(certs).map_err(|e| e.to_string())?)
        .with_request_timeout(Duration::from_secs(30));
    let clients = Clients::new(&dialer, &addrs).await?;
    let mut seq = 0u64;
    wait_stable(&clients, &addrs, Duration::from_secs(60), &mut seq).await?;
    let n = args.agents;
    progress(format!("{n} certificates with the worker token"));
    let t = Instant::now();
    let issued = certificates(&addrs[0], &tokens.worker, n, args.concurrency).await?;
    progress(format!(
        "{n} certificates in {:.1} s; {n} agents: session, heartbeats, assignments",
        t.elapsed().as_secs_f64()
    ));
    let agents =
        TaskAgents::start_with(issued, &addrs, true, args.concurrency, Duration::ZERO).await?;
    let fleet = agents.fleet.clone();
    let tasks = n as u64 * args.replicas_per_agent;
    progress(format!("a service of {tasks} replicas"));
    let service = control.create_service("s6", tasks).await?;
    let leader0 = wait_stable(&clients, &addrs, Duration::from_secs(60), &mut seq).await?;
    let leader_pid = members[leader0].pid().unwrap_or(0);
    wait_running(
        "converge",
        &agents,
        tasks,
        leader_pid,
        Duration::from_secs(60) + Duration::from_millis(20) * tasks as u32,
    )
    .await?;
    let rss_converged = rss_kib(leader_pid);
    let setup = started.elapsed();
    progress(format!(
        "setup done in {:.1} s: {tasks} tasks RUNNING on {n} agents",
        setup.as_secs_f64()
    ));
    // The measured phase starts here for CPU.
    for m in members.iter_mut() {
        m.cpu_mark = m.pid().map(process_cpu).unwrap_or_default();
    }
    let bench_cpu0 = process_cpu(std::process::id());

    let mut measured = Measured::default();
    for round in 1..=args.kills {
        one_round(
            args,
            bin,
            round,
            &mut members,
            &addrs,
            &clients,
            &agents,
            &service,
            tasks,
            &mut seq,
            &mut measured,
        )
        .await?;
    }
    let bench_cpu = process_cpu(std::process::id()).saturating_sub(bench_cpu0);

    // CPU and memory of the managers.
    let mut cpu_setup = Duration::ZERO;
    let mut cpu_rounds = Duration::ZERO;
    let mut peak = 0u64;
    for m in members.iter_mut() {
        if let Some(pid) = m.pid() {
            let cpu = process_cpu(pid);
            peak = peak.max(hwm_kib(pid));
            cpu_setup += m.cpu_mark;
            cpu_rounds += cpu.saturating_sub(m.cpu_mark);
        }
        cpu_setup += m.cpu_setup_gone;
        cpu_rounds += m.cpu_rounds_gone;
        peak = peak.max(m.peak_kib);
    }
    let lost = fleet.lost();
    agents.shutdown().await;
    for m in members.iter_mut() {
        m.kill();
    }

    // --- The report.
    let kills = args.kills;
    let mut from_kill = measured.from_kill.clone();
    let mut from_last = measured.from_last.clone();
    let mut all_back = measured.all_back.clone();
    let mut per_agent = measured.per_agent.clone();
    for v in [
        &mut from_kill,
        &mut from_last,
        &mut all_back,
        &mut per_agent,
    ] {
        v.sort_by(f64::total_cmp);
    }
    let ms = |v: f64| v * 1e3;
    report.row(
        format!("write unavailability from the kill, p50 ({kills} kills)"),
        ms(pct(&from_kill, 0.5)),
        "ms",
        Some(12_680.0),
        None,
    );
    report.row(
        format!("write unavailability from the kill, p99 ({kills} kills)"),
        ms(pct(&from_kill, 0.99)),
        "ms",
        Some(20_010.0),
        Some(1500.0),
    );
    report.row(
        "write unavailability from the last commit, p50",
        ms(pct(&from_last, 0.5)),
        "ms",
        None,
        None,
    );
    report.row(
        "write unavailability from the last commit, p99",
        ms(pct(&from_last, 0.99)),
        "ms",
        None,
        Some(1500.0),
    );
    report.row(
        format!("all {n} agents reconnected after the kill, p50"),
        ms(pct(&all_back, 0.5)),
        "ms",
        None,
        None,
    );
    report.row(
        format!("all {n} agents reconnected after the kill, p99"),
        ms(pct(&all_back, 0.99)),
        "ms",
        None,
        Some(3000.0),
    );
    report.row(
        "one agent reconnected after the kill, p50",
        ms(pct(&per_agent, 0.5)),
        "ms",
        None,
        None,
    );
    report.row(
        "one agent reconnected after the kill, p99",
        ms(pct(&per_agent, 0.99)),
        "ms",
        None,
        None,
    );
    report.row(
        format!("tasks restarted because of the failover ({kills} kills)"),
        measured.restarted as f64,
        "tasks",
        None,
        Some(0.0),
    );
    report.row(
        "manager CPU-seconds, setup (3 managers: join, converge)",
        cpu_setup.as_secs_f64(),
        "s",
        None,
        None,
    );
    report.row(
        format!("manager CPU-seconds, {kills} rounds (3 managers)"),
        cpu_rounds.as_secs_f64(),
        "s",
        None,
        None,
    );
    report.row(
        "manager peak RSS (largest VmHWM of any process)",
        peak as f64 / 1024.0,
        "MiB",
        None,
        None,
    );
    report.row(
        "leader RSS after converging",
        rss_converged as f64 / 1024.0,
        "MiB",
        None,
        None,
    );
    report.row(
        format!("agents' side (this process) CPU-seconds, {kills} rounds"),
        bench_cpu.as_secs_f64(),
        "s",
        None,
        None,
    );
    let affected: Vec<String> = measured.affected.iter().map(|a| a.to_string()).collect();
    report.notes.push(format!(
        "setup {:.1} s; agents affected per round: {}; reconnection attempts that found no \
         manager to take the session: {}; agents that gave up: {lost}",
        setup.as_secs_f64(),
        affected.join(", "),
        measured.open_failures
    ));
    let list = |v: &[f64]| {
        v.iter()
            .map(|s| format!("{:.0}", s * 1e3))
            .collect::<Vec<_>>()
            .join(", ")
    };
    report.notes.push(format!(
        "per round, ms: from the kill {}; from the last commit {}; first agent back {}; all \
         agents back {}",
        list(&measured.from_kill),
        list(&measured.from_last),
        list(&measured.first_back),
        list(&measured.all_back)
    ));
    report.notes.push(format!(
        "tasks: restarted {} (store: RUNNING before and not after, desired state changed, or \
         new); agents saw {} new tasks and {} shutdown orders; agent nodes not READY after \
         recovery: {}",
        measured.restarted,
        measured.agent_new_tasks,
        measured.agent_shutdowns,
        measured.nodes_not_ready
    ));
    report.notes.extend(measured.findings);
    report.notes.push(
        "anchor: SwarmKit (performance notes, S6 side by side): stop → first write p50 12.68 s, \
         max 20.01 s over 10 rounds (3 managers + 3 workers; 1 s Raft ticks); it did not measure \
         reconnection or restarts. Timings on a shared 2-core machine: provisional."
            .into(),
    );
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn one_round(
    args: &Args,
    bin: &Path,
    round: usize,
    members: &mut [Member],
    addrs: &[String],
    clients: &Clients,
    agents: &TaskAgents,
    service: &str,
    tasks: u64,
    seq: &mut u64,
    measured: &mut Measured,
) -> Result<(), String> {
    let fleet = &agents.fleet;
    let n = fleet.agents.len();
    // 1. A stable cluster: every manager up, every task RUNNING, every agent in session.
    let leader = wait_stable(clients, addrs, Duration::from_secs(60), seq).await?;
    let survivors: Vec<usize> = (0..addrs.len()).filter(|&i| i != leader).collect();
    let via = survivors[0];
    let deadline = Instant::now() + Duration::from_secs(60);
    let before = loop {
        let view = task_view(clients, leader, service).await?;
        let in_session = fleet
            .agents
            .iter()
            .filter(|a| a.lock().expect("agent log").session_beat.is_some())
            .count();
        if running(&view) as u64 == tasks && in_session == n {
            break view;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "round {round}: not stable before the kill: {}/{tasks} tasks RUNNING, {in_session}/{n} \
                 agents in session",
                running(&view)
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let killed_addr = addrs[leader].clone();
    let sessions_before: Vec<(u64, String)> = fleet
        .agents
        .iter()
        .map(|a| {
            let a = a.lock().expect("agent log");
            (a.sessions, a.session_addr.clone())
        })
        .collect();
    let seen0 = fleet.seen.load(Ordering::Relaxed);
    let shutdowns0 = fleet.shutdowns.load(Ordering::Relaxed);
    let open_failures0 = fleet.open_failures.load(Ordering::Relaxed);

    // 2. The steady writer, through the two managers that will survive.
    let (stop_writer, stop_rx) = watch::channel(false);
    let (answers, writer) = start_writer(
        clients.clone(),
        survivors.clone(),
        args.write_interval,
        round,
        stop_rx,
    );
    tokio::time::sleep(Duration::from_secs(1)).await;

    // 3. The kill.
    progress(format!(
        "round {round}/{}: kill -9 the leader ({})",
        args.kills, members[leader].name
    ));
    let killed_wall = SystemTime::now();
    let killed_at = Instant::now();
    members[leader].kill();

    // 4. Until the first write after the kill and every affected agent is back.
    let start = Instant::now();
    let mut shown = Instant::now();
    let back = |log: &crate::simagent::AgentLog, i: usize| -> Option<SystemTime> {
        let (sessions, addr) = &sessions_before[i];
        let affected = *addr == killed_addr
            || log.sessions != *sessions
            || log.broken.as_ref().is_some_and(|(t, _)| *t >= killed_wall);
        if !affected {
            return Some(killed_wall);
        }
        if log.sessions > *sessions && log.session_addr != killed_addr {
            return log.session_beat;
        }
        None
    };
    loop {
        let (_, first) = around(&answers, killed_at);
        let mut waiting = 0;
        for (i, a) in fleet.agents.iter().enumerate() {
            if back(&a.lock().expect("agent log"), i).is_none() {
                waiting += 1;
            }
        }
        if first.is_some() && waiting == 0 {
            break;
        }
        if start.elapsed() > args.round_deadline {
            let example = fleet
                .agents
                .iter()
                .enumerate()
                .find(|(i, a)| back(&a.lock().expect("agent log"), *i).is_none())
                .map(|(i, a)| format!("agent {i}: {}", a.lock().expect("agent log").last_error))
                .unwrap_or_default();
            return Err(format!(
                "round {round}: not recovered in {:.0} s: first write after the kill: {}; {waiting}/{n} \
                 agents not back ({example})",
                args.round_deadline.as_secs_f64(),
                if first.is_some() { "yes" } else { "none yet" }
            ));
        }
        if shown.elapsed() >= Duration::from_secs(1) {
            progress(format!(
                "round {round}: {:.1} s after the kill: write committed: {}; agents back {}/{n}; \
                 reconnection attempts refused so far {}",
                killed_at.elapsed().as_secs_f64(),
                if first.is_some() { "yes" } else { "no" },
                n - waiting,
                fleet.open_failures.load(Ordering::Relaxed) - open_failures0
            ));
            shown = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop_writer.send(true);
    let _ = writer.await;
    let (last, first) = around(&answers, killed_at);
    let first = first.expect("a first write after the kill");
    let from_kill = first.duration_since(killed_at).as_secs_f64();
    let from_last = last
        .map(|l| first.duration_since(l).as_secs_f64())
        .unwrap_or(from_kill);
    let mut times = Vec::new();
    for (i, a) in fleet.agents.iter().enumerate() {
        let log = a.lock().expect("agent log");
        let (sessions, addr) = &sessions_before[i];
        let affected = *addr == killed_addr
            || log.sessions != *sessions
            || log.broken.as_ref().is_some_and(|(t, _)| *t >= killed_wall);
        if affected && let Some(t) = back(&log, i) {
            times.push(secs_since(killed_wall, t));
        }
    }
    // When the agents noticed their session break, and why (the first reason seen).
    let mut noticed = Vec::new();
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for a in fleet.agents.iter() {
        let log = a.lock().expect("agent log");
        if let Some((t, why)) = &log.broken
            && *t >= killed_wall
        {
            noticed.push(secs_since(killed_wall, *t));
            let short: String = why.chars().take(60).collect();
            *reasons.entry(short).or_default() += 1;
        }
    }
    noticed.sort_by(f64::total_cmp);
    let top: Vec<String> = reasons.iter().map(|(w, c)| format!("{c}× {w}")).collect();
    let noticed_note = format!(
        "round {round}: {} agents noticed their session break after p50 {:.0} ms, max {:.0} ms \
         ({})",
        noticed.len(),
        pct(&noticed, 0.5) * 1e3,
        noticed.last().copied().unwrap_or(0.0) * 1e3,
        top.join("; ")
    );
    progress(&noticed_note);
    measured.findings.push(noticed_note);
    let all_back = times.iter().copied().fold(0.0, f64::max);
    let first_back = times.iter().copied().fold(f64::INFINITY, f64::min);
    let open_failures = fleet.open_failures.load(Ordering::Relaxed) - open_failures0;
    progress(format!(
        "round {round}: writes back after {:.0} ms from the kill ({:.0} ms from the last commit); \
         {} agents back after {:.0} ms (the first after {:.0} ms); {open_failures} attempts \
         refused",
        from_kill * 1e3,
        from_last * 1e3,
        times.len(),
        all_back * 1e3,
        first_back * 1e3
    ));
    measured.first_back.push(first_back);
    measured.from_kill.push(from_kill);
    measured.from_last.push(from_last);
    measured.all_back.push(all_back);
    measured.affected.push(times.len());
    measured.per_agent.extend(times);
    measured.open_failures += open_failures;

    // 5. Let late reactions show, then compare the tasks.
    tokio::time::sleep(args.settle).await;
    let after = task_view(clients, via, service).await?;
    let nodes = node_states(clients, via).await?;
    let r = TaskState::Running as i32;
    // What each node's agent went through: why a task moved is told by its node's story.
    let stories: HashMap<String, String> = fleet
        .agents
        .iter()
        .map(|a| {
            let log = a.lock().expect("agent log");
            let broken = log
                .broken
                .as_ref()
                .map(|(at, why)| {
                    let ago = SystemTime::now().duration_since(*at).unwrap_or_default();
                    format!("last break {:.1} s ago: {why}", ago.as_secs_f64())
                })
                .unwrap_or_default();
            (
                log.node_id.clone(),
                format!(
                    "agent: {} sessions so far, {broken}, last failed attempt: {}",
                    log.sessions, log.last_error
                ),
            )
        })
        .collect();
    let mut restarted = Vec::new();
    for (id, (desired, state, node, message)) in &after {
        match before.get(id) {
            None => restarted.push(format!(
                "{id}: new task (desired {desired}, state {state}, node {node}: {message})"
            )),
            Some((d0, s0, _, _)) => {
                let was_running = *d0 == r && *s0 == r;
                if *desired != *d0 || (was_running && *state != r) {
                    let node_state = nodes.get(node).copied().unwrap_or_default();
                    restarted.push(format!(
                        "{id}: desired {d0} → {desired}, state {s0} → {state} ({message}); \
                         node {node} is {} ({})",
                        node_status::State::try_from(node_state)
                            .map(|s| s.as_str_name())
                            .unwrap_or("?"),
                        stories.get(node).map(String::as_str).unwrap_or("no agent")
                    ));
                }
            }
        }
    }
    for id in before.keys() {
        if !after.contains_key(id) {
            restarted.push(format!("{id}: gone from the store"));
        }
    }
    let new_seen = fleet.seen.load(Ordering::Relaxed) - seen0;
    let shutdowns = fleet.shutdowns.load(Ordering::Relaxed) - shutdowns0;
    let agent_ids: std::collections::HashSet<String> = fleet
        .agents
        .iter()
        .map(|a| a.lock().expect("agent log").node_id.clone())
        .collect();
    let not_ready = nodes
        .iter()
        .filter(|(id, state)| {
            agent_ids.contains(*id) && **state != node_status::State::Ready as i32
        })
        .count();
    if !restarted.is_empty() || new_seen > 0 || shutdowns > 0 || not_ready > 0 {
        let shown: Vec<&String> = restarted.iter().take(5).collect();
        let finding = format!(
            "round {round}: {} tasks restarted, agents saw {new_seen} new tasks and {shutdowns} \
             shutdown orders, {not_ready} agent nodes not READY; first: {shown:?}",
            restarted.len()
        );
        progress(&finding);
        measured.findings.push(finding);
    }
    measured.restarted += restarted.len();
    measured.agent_new_tasks += new_seen;
    measured.agent_shutdowns += shutdowns;
    measured.nodes_not_ready += not_ready;

    // 6. The killed manager comes back and catches up.
    members[leader].start(bin, &[])?;
    let t = Instant::now();
    wait_stable(clients, addrs, Duration::from_secs(60), seq).await?;
    progress(format!(
        "round {round}: {} restarted and caught up in {:.1} s",
        members[leader].name,
        t.elapsed().as_secs_f64()
    ));
    Ok(())
}
