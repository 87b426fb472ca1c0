//! `shoal-bench heartbeats` (scenario S4): what keeping agents alive costs one manager.
//!
//! ## What is measured
//!
//! For each agent count (`--agents`, default 1,000) a fresh single-manager cluster is started
//! (`shoal daemon --init`, the `shoal` binary next to this one, on a loopback port, its state
//! in a temporary directory). Then N *simulated agents* join it and stay connected, all
//! multiplexed in this process on one tokio runtime. For each heartbeat period
//! (`--periods`, default the default 5 s, then 500 ms, ten times the rate) the benchmark
//! waits until the state is steady and measures over a window (`--window`, default 20 s):
//!
//! - **manager CPU**: the time the manager's threads spent on a CPU during the window, from
//!   the scheduler's per-thread accounting (`/proc/<pid>/task/*/schedstat`, nanoseconds;
//!   `/proc/<pid>/stat` counts in 10 ms ticks, too coarse for ~40 ms of CPU in a window),
//!   as a percentage of one core, divided by N / 1,000. The idle manager (its own Raft
//!   ticks, its own agent and sweep) is measured for 5 s before any agent joins; the figure
//!   judged against the goal is net of that idle cost, and the gross one is shown beside
//!   it. Divided by the heartbeats the manager answered in the window it gives the CPU per
//!   heartbeat (everything the manager did, HTTP/2 keep-alive pings included, charged to
//!   heartbeats).
//! - **manager memory**: VmRSS (`/proc/<pid>/status`) once the idle manager has settled,
//!   after the N nodes have joined (each join is a Node object in the store, written through
//!   Raft), once the N agents' connections are open (mutual TLS and HTTP/2, no call yet),
//!   and once their N sessions are open. Per agent: (connected − idle) / N, which is what
//!   the goal is judged on (a connected agent costs its node and its connection too), split
//!   into the node, the connection and the session. While the connections are open without
//!   sessions the manager's CPU is measured for 10 s as well: that is what idle connections
//!   cost (the agents' HTTP/2 keep-alive pings, one per connection every 10 s).
//! - **heartbeat latency**: each heartbeat RPC timed in the agent from the call to its
//!   answer, p50 and p99 over the window. This is the round trip as the agents see it, so it
//!   includes the time the bench process itself takes to get to the answer (both processes
//!   share this machine's two cores).
//! - **false DOWN marks**: `ListNodes` through the Control API (remote API, mutual TLS, with
//!   the manager's own certificate from its state directory) before and after each window,
//!   counting our agents' nodes that are DOWN. A simulated agent never opens a second
//!   session: if its session ends (the stream closes, or a heartbeat is refused as past its
//!   deadline) it records why and stops, so its node stays DISCONNECTED or DOWN and every
//!   later poll sees it. That makes two polls per window enough to see every DOWN mark: one
//!   just before it, and one 3 periods + 2 s after it ended (the deadline is 3 periods from
//!   the last heartbeat; the sweep runs at least every second). Nodes first seen DOWN by the
//!   second poll are the window's false DOWN marks; those first seen by the poll before a
//!   window happened while joining or while the agents moved to the new period, and are
//!   reported apart. No poll runs inside a window by default, because listing 10,000 nodes
//!   costs the manager more CPU than the heartbeats being measured (`--poll-interval` adds
//!   some). Agents also count what they saw themselves: sessions lost, heartbeats refused or
//!   timed out, and how late their own heartbeats left compared with the schedule (a late
//!   sender would be a true DOWN, caused by the benchmark, not a false one).
//!
//! ## The simulated agents
//!
//! Each agent has its own identity: a certificate obtained with the cluster's worker join
//! token exactly as a joining node does (`shoal_node::certificates::obtain`: the root
//! certificate over an unverified connection, checked against the token's digest, then a CSR
//! and the token to `NodeCA.IssueNodeCertificate`, then `NodeCertificateStatus`), at most
//! `--concurrency` (64) at a time. Each then opens its own mutual-TLS connection with
//! `shoal_tls::Dialer::mutual` (one HTTP/2 channel per agent, with the same keep-alive as the
//! real agent); once all are open (to measure them alone), each opens a `Dispatcher.Session`
//! stream with a node description (hostname,
//! platform, resources, runtime), reads the first message for its session ID, and then does
//! what the real agent (`shoal_node::agent`) does: a first heartbeat at once, then one each
//! time the period the dispatcher's last answer named (jittered by the dispatcher) has
//! passed, with a 5 s timeout per heartbeat (unlike the real agent, one that times out does
//! not end the session: the agent beats again at once and lets the manager decide). Like the
//! real agent, each sends its beats as messages on one `Dispatcher.HeartbeatStream`; with
//! `--unary` each beat is a `Dispatcher.Heartbeat` call instead (SwarmKit's way), to compare
//! the two. Session messages (node updates) are read and counted. Agents run no tasks: they
//! open no `Assignments` stream.
//!
//! The period is changed between windows with `Control.UpdateCluster`
//! (`spec.dispatcher.heartbeat_period`); a window starts once every agent has been told the
//! new period and one period more has passed.
//!
//! ## Limits
//!
//! Every agent holds one socket here and one in the manager: the soft limit of open files is
//! raised to the hard limit at start, and a count that does not fit is refused before
//! anything starts. Every phase has a deadline. The manager is killed when its guard is
//! dropped (also when the benchmark panics) and gets `PR_SET_PDEATHSIG` so that it dies with
//! this process; the temporary directory is removed.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_api::v1::dispatcher_client::DispatcherClient;
use shoal_node::certificates::Issued;
use shoal_tls::{Credentials, Dialer};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tonic::transport::Channel;

use crate::report::Report;
use crate::simagent::{
    AgentsGuard, Beater, Control, Manager, certificates, cpu_between, free_addr, open,
    parse_duration, percentile, progress, raise_nofile, rss_kib, shoal_bin, show, thread_cpu,
    wait_for,
};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Simulated agent counts, comma-separated; each runs against a fresh manager.
    #[arg(long, default_value = "1000", value_delimiter = ',')]
    agents: Vec<usize>,
    /// Heartbeat periods to measure, in order, comma-separated (e.g. 5s,500ms).
    #[arg(long, default_value = "5s,500ms", value_delimiter = ',', value_parser = parse_duration)]
    periods: Vec<Duration>,
    /// Seconds of each measurement window.
    #[arg(long, default_value_t = 20.0)]
    window: f64,
    /// Certificates requested, and sessions opened, at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Seconds between ListNodes polls inside a window (0: polls only before and after each
    /// window; polls cost the manager CPU that the window counts).
    #[arg(long, default_value_t = 0.0)]
    poll_interval: f64,
    /// Send each heartbeat as a unary `Heartbeat` call, as SwarmKit's agents do, instead of
    /// as a message on the `HeartbeatStream` the real agent keeps open (for comparing the two).
    #[arg(long)]
    unary: bool,
    /// The `shoal` binary (default: next to this one).
    #[arg(long)]
    shoal_bin: Option<PathBuf>,
    /// Directory for the manager's state (default: the system's temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
}

// --- Simulated agents ----------------------------------------------------------------------

/// What the agents report, shared.
struct Shared {
    /// Heartbeats go as unary calls rather than on a stream.
    unary: bool,
    /// Heartbeat latencies are recorded (in µs) only while this is set.
    recording: AtomicBool,
    latencies: Mutex<Vec<u32>>,
    /// Heartbeats answered (all the time).
    beats: AtomicU64,
    /// Heartbeats that timed out on the agent's side (the agent goes on beating).
    timeouts: AtomicU64,
    /// Largest delay (µs) between when a heartbeat was due and when it left, while recording.
    late_max_us: AtomicU64,
    /// Agents whose connection (mutual TLS, HTTP/2) is open.
    channels: AtomicU64,
    /// Agents whose session is open and answered its first heartbeat.
    connected: AtomicU64,
    /// Agents that could not open a session.
    failed: AtomicU64,
    /// Sessions the manager ended or refused (the agent then stopped), with why.
    lost: Mutex<Vec<String>>,
    /// Messages on session streams after the first.
    session_updates: AtomicU64,
    /// The period (ms) each agent was last told.
    periods: Vec<AtomicU64>,
    /// The first error an agent failed to connect with.
    first_error: Mutex<Option<String>>,
}

impl Shared {
    fn new(n: usize, unary: bool) -> Self {
        Shared {
            unary,
            recording: AtomicBool::new(false),
            latencies: Mutex::new(Vec::new()),
            beats: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            late_max_us: AtomicU64::new(0),
            channels: AtomicU64::new(0),
            connected: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            lost: Mutex::new(Vec::new()),
            session_updates: AtomicU64::new(0),
            periods: (0..n).map(|_| AtomicU64::new(0)).collect(),
            first_error: Mutex::new(None),
        }
    }

    fn lose(&self, why: String) {
        self.lost.lock().expect("lost").push(why);
    }

    fn lost(&self) -> usize {
        self.lost.lock().expect("lost").len()
    }

    /// How many agents were last told a period near `period` (the jitter is at most ± half).
    fn adopted(&self, period: Duration) -> usize {
        let p = period.as_millis() as u64;
        self.periods
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .filter(|&ms| ms * 2 >= p && ms * 2 <= p * 3)
            .count()
    }
}

/// One simulated agent: its connection; then, once `go`, a session and heartbeats at the
/// period the dispatcher names, until `stop`. A connect permit is held while connecting, and
/// again from opening the session until the first heartbeat is answered.
async fn agent(
    i: usize,
    issued: Issued,
    addr: String,
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
    mut go: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let timeout = shoal_api::defaults::DISPATCHER_RPC_TIMEOUT;
    let permit = permits.clone().acquire_owned().await.expect("semaphore");
    let fail = |why: String| {
        shared.failed.fetch_add(1, Ordering::Relaxed);
        shared
            .first_error
            .lock()
            .expect("first error")
            .get_or_insert(format!("agent {i}: {why}"));
    };
    let credentials = match Credentials::new(issued.certificates()) {
        Ok(c) => c,
        Err(e) => return fail(e.to_string()),
    };
    // Mutual TLS and HTTP/2, as the real agent's dialer (no request timeout: the session
    // stream lives as long as the session; heartbeats carry their own).
    let dialer = Dialer::mutual(credentials);
    let mut attempt = 0;
    let channel = loop {
        attempt += 1;
        match dialer.connect(&addr).await {
            Ok(c) => break c,
            Err(e) if attempt >= 3 => return fail(e.to_string()),
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    };
    shared.channels.fetch_add(1, Ordering::Relaxed);
    drop(permit);
    tokio::select! {
        _ = stop.changed() => return,
        r = go.wait_for(|go| *go) => if r.is_err() { return },
    }
    let permit = permits.acquire_owned().await.expect("semaphore");
    let mut client = DispatcherClient::new(channel);
    let mut attempt = 0;
    let (mut stream, session_id) = loop {
        attempt += 1;
        match open(i, &mut client).await {
            Ok(s) => break s,
            Err(e) if attempt >= 3 => return fail(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    };
    let mut beater = match Beater::open(client.clone(), session_id.clone(), shared.unary).await {
        Ok(b) => b,
        Err(s) => return fail(format!("heartbeat stream: {}", s.message())),
    };
    let mut beat = async |_: &mut DispatcherClient<Channel>| {
        tokio::time::timeout(timeout, beater.beat()).await
    };
    // The first heartbeat at once, as the real agent: its answer names the period.
    let mut period = match beat(&mut client).await {
        Ok(Ok(r)) => r
            .period
            .map(|p| shoal_api::validation::to_std_duration(&p))
            .unwrap_or(shoal_api::defaults::HEARTBEAT_PERIOD),
        Ok(Err(s)) => return fail(format!("first heartbeat: {}", s.message())),
        Err(_) => return fail("first heartbeat timed out".into()),
    };
    shared.periods[i].store(period.as_millis() as u64, Ordering::Relaxed);
    shared.beats.fetch_add(1, Ordering::Relaxed);
    shared.connected.fetch_add(1, Ordering::Relaxed);
    drop(permit);
    let mut next = tokio::time::Instant::now() + period;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            message = stream.message() => match message {
                Ok(Some(_)) => {
                    shared.session_updates.fetch_add(1, Ordering::Relaxed);
                }
                Ok(None) => return shared.lose("the manager ended the session stream".into()),
                Err(s) => {
                    if *stop.borrow() {
                        return;
                    }
                    return shared.lose(format!("session stream: {:?} {}", s.code(), s.message()));
                }
            },
            () = tokio::time::sleep_until(next) => {
                let recording = shared.recording.load(Ordering::Relaxed);
                let sent = tokio::time::Instant::now();
                if recording {
                    let late = sent.saturating_duration_since(next).as_micros() as u64;
                    shared.late_max_us.fetch_max(late, Ordering::Relaxed);
                }
                match beat(&mut client).await {
                    Ok(Ok(r)) => {
                        let took = sent.elapsed();
                        if recording {
                            shared
                                .latencies
                                .lock()
                                .expect("latencies")
                                .push(took.as_micros().min(u128::from(u32::MAX)) as u32);
                        }
                        shared.beats.fetch_add(1, Ordering::Relaxed);
                        if let Some(p) = r.period {
                            period = shoal_api::validation::to_std_duration(&p)
                                .max(Duration::from_millis(100));
                            shared.periods[i].store(period.as_millis() as u64, Ordering::Relaxed);
                        }
                        next = tokio::time::Instant::now() + period;
                    }
                    Ok(Err(s)) => {
                        if *stop.borrow() {
                            return;
                        }
                        return shared.lose(format!("heartbeat refused: {:?} {}", s.code(), s.message()));
                    }
                    Err(_) => {
                        // Unlike the real agent (which opens a new session), keep beating:
                        // the manager decides whether the session is still alive.
                        shared.timeouts.fetch_add(1, Ordering::Relaxed);
                        next = tokio::time::Instant::now();
                    }
                }
            }
        }
    }
}

// --- The scenario --------------------------------------------------------------------------

pub fn run(args: Args) -> Report {
    let mut report = Report::new("heartbeats");
    let fail = |e: String| -> ! {
        eprintln!("Error: {e}");
        std::process::exit(1);
    };
    let bin = shoal_bin(&args.shoal_bin).unwrap_or_else(|e| fail(e));
    if args.periods.is_empty() || args.agents.is_empty() || args.concurrency == 0 {
        fail("--agents, --periods and --concurrency must not be empty or zero".into());
    }
    let nofile = raise_nofile();
    let most = args.agents.iter().copied().max().unwrap_or(0) as u64;
    // One socket per agent on each side, plus the certificate requests in flight and the
    // processes' own files.
    let needed = most + 2 * args.concurrency as u64 + 256;
    if needed > nofile {
        fail(format!(
            "{most} agents need about {needed} open files in this process and in the manager; \
             the limit is {nofile} (raise the hard limit with `ulimit -Hn` as root, or run fewer agents)"
        ));
    }
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix("shoal-bench-heartbeats-")
        .tempdir_in(&base)
        .unwrap_or_else(|e| fail(format!("a temporary directory in {}: {e}", base.display())));
    report.notes.push(format!(
        "one manager (shoal daemon --init, Raft log in {}), N simulated agents in this process: \
         own certificate, own mutual-TLS HTTP/2 connection, Session stream, heartbeats; \
         loopback; {} s windows; both processes share this machine's {} cores",
        base.display(),
        args.window,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    ));
    report.notes.push(
        "CPU per 1,000 agents is net of the idle manager (measured before any agent joins); \
         RSS per agent is (connected - idle) / N, split into the node (joined - idle), the \
         connection (connections open - joined) and the session (connected - connections open)"
            .into(),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut failed = None;
    for &n in &args.agents {
        // The level's manager and agents are gone when it returns, also on error.
        if let Err(e) = runtime.block_on(level(&args, &bin, dir.path(), n, &mut report)) {
            failed = Some(format!("{n} agents: {e}"));
            break;
        }
    }
    drop(runtime);
    // Remove the temporary directory before exiting, also on failure.
    drop(dir);
    if let Some(e) = failed {
        fail(e);
    }
    report
}

/// Waits until `done()` or `deadline`, printing `what` every 2 s.
async fn level(
    args: &Args,
    bin: &Path,
    dir: &Path,
    n: usize,
    report: &mut Report,
) -> Result<(), String> {
    progress(format!("{n} agents: starting a manager"));
    let state = dir.join(format!("manager-{n}"));
    let addr = free_addr();
    let mut manager = Manager::start(bin, &state, &addr, &[])?;
    let pid = manager.pid;
    let mut control = Control::connect(&state, &addr, &mut manager).await?;
    let token = control
        .cluster()
        .await?
        .root_ca
        .and_then(|r| r.join_tokens)
        .map(|t| t.worker)
        .ok_or("the cluster has no join tokens")?;
    control.set_period(args.periods[0]).await?;

    // The idle manager: its own agent, Raft ticks, the sweep.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_window = Duration::from_secs(5);
    let c0 = thread_cpu(pid);
    tokio::time::sleep(idle_window).await;
    let idle_cpu = cpu_between(&c0, &thread_cpu(pid)).as_secs_f64() / idle_window.as_secs_f64();
    let rss_idle = rss_kib(pid);
    progress(format!(
        "idle manager: {:.2} % of a core, RSS {} MiB",
        idle_cpu * 100.0,
        rss_idle / 1024
    ));

    progress(format!(
        "{n} certificates with the worker token, {} at a time",
        args.concurrency
    ));
    let started = Instant::now();
    let issued = certificates(&addr, &token, n, args.concurrency).await?;
    let cert_rate = n as f64 / started.elapsed().as_secs_f64();
    let ours: HashSet<String> = issued.iter().map(|i| i.identity.node_id.clone()).collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_joined = rss_kib(pid);
    progress(format!(
        "{n} certificates in {:.1} s; manager RSS {} MiB",
        started.elapsed().as_secs_f64(),
        rss_joined / 1024
    ));

    progress(format!(
        "{n} connections (mutual TLS, HTTP/2), {} opened at a time",
        args.concurrency
    ));
    let shared = Arc::new(Shared::new(n, args.unary));
    let permits = Arc::new(Semaphore::new(args.concurrency));
    let (stop, stop_rx) = watch::channel(false);
    let (go, go_rx) = watch::channel(false);
    let mut agents = AgentsGuard {
        stop,
        set: JoinSet::new(),
    };
    let started = Instant::now();
    for (i, issued) in issued.into_iter().enumerate() {
        agents.set.spawn(agent(
            i,
            issued,
            addr.clone(),
            shared.clone(),
            permits.clone(),
            go_rx.clone(),
            stop_rx.clone(),
        ));
    }
    let first_error = |s: &Shared| {
        s.first_error
            .lock()
            .expect("first error")
            .clone()
            .unwrap_or_default()
    };
    let failed = |s: &Shared| s.failed.load(Ordering::Relaxed) as usize;
    let channels = |s: &Shared| s.channels.load(Ordering::Relaxed) as usize;
    let connected = |s: &Shared| s.connected.load(Ordering::Relaxed) as usize;
    let phase_deadline = Duration::from_secs(60) + Duration::from_millis(50) * n as u32;
    wait_for(
        "connections",
        phase_deadline,
        || channels(&shared) + failed(&shared) >= n,
        || format!("{}/{n} open, {} failed", channels(&shared), failed(&shared)),
    )
    .await?;
    if channels(&shared) < n {
        return Err(format!(
            "{} of {n} agents could not connect; first error: {}",
            n - channels(&shared),
            first_error(&shared)
        ));
    }
    let connect_rate = n as f64 / started.elapsed().as_secs_f64();
    // Open connections without sessions: their memory, and what they cost while idle (the
    // agents' HTTP/2 keep-alive pings, every 10 s).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_channels = rss_kib(pid);
    let quiet = Duration::from_secs(10);
    let c0 = thread_cpu(pid);
    tokio::time::sleep(quiet).await;
    let channels_cpu = cpu_between(&c0, &thread_cpu(pid)).as_secs_f64() / quiet.as_secs_f64();
    progress(format!(
        "{n} connections; manager RSS {} MiB, {:.2} % of a core with no session",
        rss_channels / 1024,
        channels_cpu * 100.0
    ));

    progress(format!(
        "{n} sessions, {} opened at a time",
        args.concurrency
    ));
    let started = Instant::now();
    let _ = go.send(true);
    wait_for(
        "sessions",
        phase_deadline,
        || connected(&shared) + failed(&shared) >= n,
        || {
            format!(
                "{}/{n} open, {} failed",
                connected(&shared),
                failed(&shared)
            )
        },
    )
    .await?;
    let session_rate = n as f64 / started.elapsed().as_secs_f64();
    if connected(&shared) < n {
        return Err(format!(
            "{} of {n} agents could not open a session; first error: {}",
            n - connected(&shared),
            first_error(&shared)
        ));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_connected = rss_kib(pid);
    progress(format!(
        "{n} sessions in {:.1} s; manager RSS {} MiB",
        started.elapsed().as_secs_f64(),
        rss_connected / 1024
    ));
    let per_agent = |hi: u64, lo: u64| hi.saturating_sub(lo) as f64 * 1.024 / n as f64;
    report.row(
        format!("{n} agents: manager RSS per connected agent"),
        per_agent(rss_connected, rss_idle),
        "KB",
        None,
        Some(30.0),
    );
    report.row(
        format!("{n} agents: of which the node (join, store)"),
        per_agent(rss_joined, rss_idle),
        "KB",
        None,
        None,
    );
    report.row(
        format!("{n} agents: of which the connection (mTLS, HTTP/2)"),
        per_agent(rss_channels, rss_joined),
        "KB",
        None,
        None,
    );
    report.row(
        format!("{n} agents: of which the session and heartbeats"),
        per_agent(rss_connected, rss_channels),
        "KB",
        None,
        None,
    );
    report.row(
        format!("{n} agents: manager CPU per 1,000 idle connections"),
        (channels_cpu - idle_cpu).max(0.0) * 100.0 / (n as f64 / 1000.0),
        "% core",
        None,
        None,
    );
    report.row(
        format!("{n} agents: connections opened"),
        connect_rate,
        "/s",
        None,
        None,
    );
    report.row(
        format!("{n} agents: idle manager CPU (before agents)"),
        idle_cpu * 100.0,
        "% core",
        None,
        None,
    );
    report.row(
        format!("{n} agents: joins (certificates)"),
        cert_rate,
        "/s",
        None,
        None,
    );
    report.row(
        format!("{n} agents: sessions opened"),
        session_rate,
        "/s",
        None,
        None,
    );

    // DOWN marks: a poll before each window, and one after it once the deadline of its every
    // heartbeat has passed (3 periods + 2 s: the sweep runs at least every second). Marks
    // first seen by the poll after a window are the window's; those first seen by the poll
    // before it come from the change of period (or, for the first, from the joins).
    let mut polls = Polls {
        ours,
        seen: HashSet::new(),
        transitions: 0,
        not_ready: 0,
    };
    let mut windows: Vec<Window> = Vec::new();
    let mut previous: Option<Duration> = None;
    let mut current = args.periods[0];
    let window = Duration::from_secs_f64(args.window);
    for &period in &args.periods {
        if period != current {
            control.set_period(period).await?;
            current = period;
        }
        // Every agent told the new period, then one period more for its schedule.
        let before = previous.unwrap_or(period);
        wait_for(
            &format!("agents told {}", show(period)),
            before * 3 + Duration::from_secs(10),
            || shared.adopted(period) + shared.lost() >= n,
            || format!("{}/{n}", shared.adopted(period)),
        )
        .await?;
        tokio::time::sleep(period + Duration::from_secs(1)).await;
        let seen_before = polls.seen.len();
        let lost_before = shared.lost();
        polls.poll(&mut control).await?;
        let marks_start = polls.seen.len();
        let lost_start = shared.lost();
        let timeouts_start = shared.timeouts.load(Ordering::Relaxed);
        let live = n - lost_start;

        progress(format!(
            "{n} agents at {}: measuring for {:.0} s ({live} with a session)",
            show(period),
            window.as_secs_f64()
        ));
        shared.latencies.lock().expect("latencies").clear();
        shared.late_max_us.store(0, Ordering::Relaxed);
        shared.recording.store(true, Ordering::Relaxed);
        let beats0 = shared.beats.load(Ordering::Relaxed);
        let manager0 = thread_cpu(pid);
        let self0 = thread_cpu(std::process::id());
        let t0 = Instant::now();
        if args.poll_interval > 0.0 {
            let every = Duration::from_secs_f64(args.poll_interval);
            while t0.elapsed() + every < window {
                tokio::time::sleep(every).await;
                polls.poll(&mut control).await?;
            }
        }
        tokio::time::sleep(window.saturating_sub(t0.elapsed())).await;
        let elapsed = t0.elapsed().as_secs_f64();
        let manager_cpu = cpu_between(&manager0, &thread_cpu(pid)).as_secs_f64();
        let self_cpu = cpu_between(&self0, &thread_cpu(std::process::id())).as_secs_f64();
        let beats = shared.beats.load(Ordering::Relaxed) - beats0;
        shared.recording.store(false, Ordering::Relaxed);
        let ended = Instant::now();
        let rss = rss_kib(pid);
        let mut latencies = std::mem::take(&mut *shared.latencies.lock().expect("latencies"));
        latencies.sort_unstable();
        let due = ended + period * 3 + Duration::from_secs(2);
        progress(format!(
            "{n} agents at {}: manager {:.2} % of a core, {beats} heartbeats, p99 {:.2} ms, \
             bench {:.1} % of a core, RSS {} MiB; waiting {:.0} s for late DOWN marks",
            show(period),
            manager_cpu / elapsed * 100.0,
            percentile(&latencies, 0.99) / 1e3,
            self_cpu / elapsed * 100.0,
            rss / 1024,
            due.saturating_duration_since(Instant::now()).as_secs_f64(),
        ));
        tokio::time::sleep(due.saturating_duration_since(Instant::now())).await;
        polls.poll(&mut control).await?;
        windows.push(Window {
            period,
            live,
            elapsed,
            manager_cpu,
            self_cpu,
            beats,
            latencies,
            late_max_us: shared.late_max_us.load(Ordering::Relaxed),
            rss,
            marks_before: marks_start - seen_before,
            lost_before: lost_start - lost_before,
            marks: polls.seen.len() - marks_start,
            lost: shared.lost() - lost_start,
            timeouts: shared.timeouts.load(Ordering::Relaxed) - timeouts_start,
        });
        previous = Some(period);
    }
    let lost_reasons = shared.lost.lock().expect("lost").clone();
    let timeouts = shared.timeouts.load(Ordering::Relaxed);
    progress(format!("{n} agents: stopping"));
    agents.shutdown().await;
    manager.kill();

    let mut first = true;
    for w in &windows {
        let label = format!("{n} agents @{}", show(w.period));
        let before = if first {
            format!("{n} agents: DOWN marks / sessions lost while joining")
        } else {
            format!("{label}: DOWN marks / sessions lost on the change of period")
        };
        first = false;
        report.row(
            before,
            (w.marks_before + w.lost_before) as f64,
            "",
            None,
            Some(0.0),
        );
        if w.live < n {
            report.row(
                format!("{label}: agents with a session in the window"),
                w.live as f64,
                "",
                None,
                None,
            );
        }
        // Per 1,000 agents that had a session.
        let per_k = w.live as f64 / 1000.0;
        let gross = w.manager_cpu / w.elapsed;
        let net = (gross - idle_cpu).max(0.0);
        let at_default = w.period == shoal_api::defaults::HEARTBEAT_PERIOD;
        report.row(
            format!("{label}: manager CPU per 1,000 agents"),
            net * 100.0 / per_k,
            "% core",
            None,
            at_default.then_some(0.2),
        );
        report.row(
            format!("{label}: manager CPU per 1,000 agents, gross"),
            gross * 100.0 / per_k,
            "% core",
            None,
            None,
        );
        report.row(
            format!("{label}: manager CPU per heartbeat (net)"),
            if w.beats == 0 {
                0.0
            } else {
                net * w.elapsed / w.beats as f64 * 1e6
            },
            "µs",
            None,
            Some(10.0),
        );
        report.row(
            format!("{label}: heartbeats answered"),
            w.beats as f64 / w.elapsed,
            "/s",
            None,
            None,
        );
        report.row(
            format!("{label}: heartbeat p50"),
            percentile(&w.latencies, 0.5) / 1e3,
            "ms",
            None,
            None,
        );
        report.row(
            format!("{label}: heartbeat p99"),
            percentile(&w.latencies, 0.99) / 1e3,
            "ms",
            None,
            Some(20.0),
        );
        report.row(
            format!("{label}: heartbeat max"),
            w.latencies.last().copied().map_or(0.0, f64::from) / 1e3,
            "ms",
            None,
            None,
        );
        report.row(
            format!("{label}: heartbeat sent late vs schedule, max"),
            w.late_max_us as f64 / 1e3,
            "ms",
            None,
            None,
        );
        report.row(
            format!("{label}: false DOWN marks"),
            w.marks as f64,
            "marks",
            None,
            Some(0.0),
        );
        report.row(
            format!("{label}: sessions lost / heartbeat timeouts"),
            (w.lost + w.timeouts as usize) as f64,
            "",
            None,
            Some(0.0),
        );
        report.row(
            format!("{label}: bench process CPU (agents' side)"),
            w.self_cpu / w.elapsed * 100.0,
            "% core",
            None,
            None,
        );
        report.row(
            format!("{label}: manager RSS"),
            w.rss as f64 / 1024.0,
            "MiB",
            None,
            None,
        );
    }
    if polls.transitions > 0 || !lost_reasons.is_empty() || timeouts > 0 || polls.not_ready > 0 {
        report.notes.push(format!(
            "{n} agents: {} nodes seen DOWN by polling, {} neither READY nor DOWN at the last \
             poll, {timeouts} heartbeat timeouts; sessions lost (first 5 of {}): {:?}",
            polls.transitions,
            polls.not_ready,
            lost_reasons.len(),
            lost_reasons.iter().take(5).collect::<Vec<_>>()
        ));
    }
    report.notes.push(format!(
        "{n} agents: {} session update messages received in all",
        shared.session_updates.load(Ordering::Relaxed)
    ));
    Ok(())
}

/// One measurement window's figures.
struct Window {
    period: Duration,
    /// Agents with a session when the window started.
    live: usize,
    elapsed: f64,
    manager_cpu: f64,
    self_cpu: f64,
    beats: u64,
    latencies: Vec<u32>,
    late_max_us: u64,
    rss: u64,
    /// Nodes first seen DOWN, and sessions lost, before the window (joining, or the change
    /// of period), and from its start until its marks were due.
    marks_before: usize,
    lost_before: usize,
    marks: usize,
    lost: usize,
    timeouts: u64,
}

/// ListNodes polls: every agent node ever seen DOWN.
struct Polls {
    ours: HashSet<String>,
    seen: HashSet<String>,
    /// Marks seen for the first time (each node counts once: agents never reconnect).
    transitions: usize,
    /// Nodes neither READY nor DOWN at the last poll.
    not_ready: usize,
}

impl Polls {
    async fn poll(&mut self, control: &mut Control) -> Result<(), String> {
        let (down, other) = control.down(&self.ours).await?;
        self.transitions += down.difference(&self.seen).count();
        self.seen.extend(down);
        self.not_ready = other;
        Ok(())
    }
}
