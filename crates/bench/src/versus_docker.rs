//! `shoal-bench versus-docker`: Shoal and Docker swarm mode side by side, on the same Docker
//! Engine, with the same image, driven by the same client code, in one run.
//!
//! **What is measured.** For each replica count N (`--replicas`, default 10, which runs in
//! under a minute; the 10,50,100 on request: about 3 minutes for 10 and 50, and N =
//! 100 alone about 5 minutes on 2 cores) and each run
//! (`--runs`), on each system: (1) *create* a replicated service of N tasks → all N
//! running; (2) *scale up* N → 2N → 2N running; (3) *scale down* 2N → N → only N running;
//! (4) a *rolling update* of all N tasks with parallelism 5 (stop-first, delay 0, failure
//! action pause, monitor 5 s: the same `UpdateConfig` sent to both) → N running tasks, all on
//! the new spec. Each time runs from just before the write request (`POST
//! /services/create` or `POST /services/{id}/update`; the `GET /services/{id}` that fetches
//! the version to update is not timed) until the first poll that sees the phase done. The
//! report gives the median over the runs for each system and the ratio Shoal/Docker, whose
//! goal is ≤ 0.5; the "swarmkit" column of the table is Docker swarm mode measured now, on
//! this machine, and the "goal" column is half of it.
//!
//! Before either system, the engine's own floor for each N is taken and shown as a note:
//! N containers of the same image and command created and started straight through the
//! engine API, all in flight — no system can create N tasks faster than that on this engine.
//!
//! **How "done" is defined, identically for both.** The client polls `GET
//! /tasks?filters={"service":[ID]}` every `--poll-ms` (default 25 ms) and counts the tasks
//! whose `Status.State` is `running`. Create and scale up are done when that count is the
//! target; scale down when it has fallen to N (a task no longer counts once its container is
//! reported stopped — the surplus containers may still exist, being removed); the update
//! when exactly N tasks run and every one of them carries the new spec (`Env` holds
//! `VSBENCH_GEN=1`, read from each task's own `Spec`). `UpdateStatus` is deliberately not
//! used: swarmkit keeps an update `updating` for one monitor period after the last task
//! (5 s), which measures a timer, not the work. Every wait has a deadline
//! (`--phase-timeout`) and fails with the last count seen and the tasks' errors.
//!
//! **Why the same client.** Shoal serves the Docker Engine API on `<state-dir>/docker.sock`,
//! so one implementation (bollard, pinned to API 1.41 — the engine's version — for both
//! sockets) sends byte-for-byte the same service specs and reads the same task lists from
//! both. Differences in the figures are differences in the systems, not in two clients.
//!
//! **The work.** The locally built test image (`scripts/build-test-image.sh`), referenced by
//! its image ID (`sha256:…`) on both sides: swarm mode otherwise tries a registry pull of a
//! tag before every task (there is no registry here), which would measure a network timeout.
//! The command is `sh -c "trap 'exit 0' TERM; sleep 86400 & wait"`: a long sleep that stops at
//! once on SIGTERM (a bare `sleep` as PID 1 ignores SIGTERM and every stop would wait out
//! the 10 s grace period, on both systems alike — measuring a timer again).
//!
//! **What it leaves out.** One node only (the engine is the only worker of both systems);
//! no networks, published ports, secrets or health checks; no failure handling; image pulls.
//! Docker runs first (all sizes and runs), then Shoal, never at the same time; the order is
//! fixed, so a drift of the machine between them is not averaged out (use `--runs`). Shoal's
//! daemon is started with its defaults (Raft tick 100 ms, etc.).
//!
//! **How it leaves the engine.** It refuses to start if the engine is already in swarm mode
//! (a swarm it did not make). Docker side: `swarm init` on 127.0.0.1 (a free port, loopback
//! only), then, after the work — also after an error, a panic (a guard whose `Drop` cleans
//! up) or Ctrl-C/SIGTERM (a handler sets a flag every wait checks; a second Ctrl-C abandons
//! the clean-up) — every service is removed and its containers waited for, `swarm leave
//! --force`, the networks swarm mode added (`docker_gwbridge`, `ingress`) are removed, and
//! any container still carrying the benchmark's label is force-removed. Shoal side: a `shoal
//! daemon --init --executor docker` on a temporary state directory and a loopback port (its
//! own process group, so Ctrl-C reaches only this process), services removed and their
//! containers waited for, the daemon stopped (SIGTERM, then SIGKILL), then the same sweep by
//! label. Leftovers are reported as notes, and the exit status is 1.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_executor_docker::bollard;

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, LocalNodeState, NodeState, ServiceSpec, ServiceSpecMode,
    ServiceSpecModeReplicated, ServiceSpecUpdateConfig, ServiceSpecUpdateConfigFailureActionEnum,
    ServiceSpecUpdateConfigOrderEnum, SwarmInitRequest, Task, TaskSpec, TaskSpecContainerSpec,
    TaskState,
};
use bollard::query_parameters::{
    CreateContainerOptions, InspectServiceOptions, LeaveSwarmOptions, ListContainersOptions,
    ListNetworksOptions, ListNodesOptions, ListTasksOptions, RemoveContainerOptions,
    StartContainerOptions, UpdateServiceOptions,
};

use crate::report::Report;

/// The label on every container of the benchmark (the value: this process's ID).
const LABEL: &str = "shoal-bench.versus-docker";
/// The environment variable whose value is the spec generation (0, then 1 after the update).
const GEN: &str = "VSBENCH_GEN";
/// What every task runs (`sh -c …`): a long sleep that ends at once on SIGTERM.
const COMMAND: &str = "trap 'exit 0' TERM; sleep 86400 & wait";
/// The engine's API version, used for both sockets.
const API: bollard::ClientVersion = bollard::ClientVersion {
    major_version: 1,
    minor_version: 41,
};
/// How long one API request may take.
const REQUEST_TIMEOUT_S: u64 = 60;
/// Deadlines of the steps that are not measured.
const SETUP_DEADLINE: Duration = Duration::from_secs(60);
const REMOVE_DEADLINE: Duration = Duration::from_secs(120);

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Replica counts N to measure (comma-separated). The sizes are 10,50,100; the
    /// default, 10, runs in under a minute on 2 cores, where 10 and 50 take about 3 minutes
    /// and 100 alone about 5 (the engine starts a few containers a second there, and N = 100
    /// starts and stops some 400).
    #[arg(long, value_delimiter = ',', default_value = "10")]
    replicas: Vec<usize>,
    /// Runs per size; the report shows medians.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// The image both systems run (local; there is no registry).
    #[arg(long, default_value = "shoal-test/busybox:latest")]
    image: String,
    /// The Docker Engine's socket.
    #[arg(long, default_value = "/var/run/docker.sock")]
    engine_socket: PathBuf,
    /// The `shoal` binary (default: next to this one).
    #[arg(long)]
    shoal_bin: Option<PathBuf>,
    /// Which systems to run: both, docker or shoal.
    #[arg(long, default_value = "both", value_parser = ["both", "docker", "shoal"])]
    systems: String,
    /// Deadline of one measured phase, in seconds.
    #[arg(long, default_value_t = 180)]
    phase_timeout: u64,
    /// Interval between two task polls, in milliseconds.
    #[arg(long, default_value_t = 25)]
    poll_ms: u64,
    /// Write the Shoal daemon's log (at --shoal-log-level) to this file.
    #[arg(long)]
    shoal_log: Option<PathBuf>,
    /// The Shoal daemon's log level.
    #[arg(long, default_value = "warn")]
    shoal_log_level: String,
}

// --- Ctrl-C ----------------------------------------------------------------------------------

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// SIGINT and SIGTERM set [`INTERRUPTED`], which every wait checks; the handler resets itself,
/// so a second signal ends the process at once (abandoning the clean-up).
fn install_signal_handlers() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
        action.sa_flags = libc::SA_RESETHAND;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGINT, &action, std::ptr::null_mut());
        libc::sigaction(libc::SIGTERM, &action, std::ptr::null_mut());
    }
}

fn check_interrupted() -> Result<(), String> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        Err("interrupted (SIGINT/SIGTERM); cleaning up — press Ctrl-C again to abandon".into())
    } else {
        Ok(())
    }
}

// --- Systems, phases, results ------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum System {
    Docker,
    Shoal,
}

impl fmt::Display for System {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            System::Docker => "docker",
            System::Shoal => "shoal",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Create,
    ScaleUp,
    ScaleDown,
    Update,
}

impl Phase {
    const ALL: [Phase; 4] = [
        Phase::Create,
        Phase::ScaleUp,
        Phase::ScaleDown,
        Phase::Update,
    ];

    fn describe(self, n: usize) -> String {
        match self {
            Phase::Create => format!("create {n} replicas"),
            Phase::ScaleUp => format!("scale {n}→{}", 2 * n),
            Phase::ScaleDown => format!("scale {}→{n}", 2 * n),
            Phase::Update => format!("rolling update of {n} (parallelism 5)"),
        }
    }
}

/// Seconds measured, by (N, phase, system), one per run.
type Results = BTreeMap<(usize, Phase, System), Vec<f64>>;

fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    })
}

// --- Clean-up state and guard ----------------------------------------------------------------

/// A `shoal daemon` this benchmark started.
struct ShoalDaemon {
    child: Child,
    /// Its state directory (removed when dropped).
    dir: tempfile::TempDir,
}

impl ShoalDaemon {
    fn socket(&self) -> PathBuf {
        self.dir.path().join("docker.sock")
    }
}

/// What the benchmark has made and must undo; shared by the work and the guard.
struct Made {
    engine_socket: PathBuf,
    /// The engine's swarm was initialised by us (and must be left).
    swarm: bool,
    /// The engine's networks before `swarm init`.
    networks_before: Option<HashSet<String>>,
    /// Services on the engine's swarm / on Shoal, not yet removed.
    docker_services: Vec<String>,
    shoal_services: Vec<String>,
    shoal: Option<ShoalDaemon>,
    /// Whether the sweep by label is still due.
    sweep: bool,
}

fn connect(socket: &Path) -> Result<Docker, String> {
    let path = socket
        .to_str()
        .ok_or_else(|| format!("socket path {} is not UTF-8", socket.display()))?;
    Docker::connect_with_unix(path, REQUEST_TIMEOUT_S, &API)
        .map_err(|e| format!("connecting to {path}: {e}"))
}

fn label_filter(key: &str, value: &str) -> HashMap<String, Vec<String>> {
    HashMap::from([("label".to_string(), vec![format!("{key}={value}")])])
}

async fn container_ids(engine: &Docker, key: &str, value: &str) -> Result<Vec<String>, String> {
    let list = engine
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(label_filter(key, value)),
            ..Default::default()
        }))
        .await
        .map_err(|e| format!("listing containers: {e}"))?;
    Ok(list.into_iter().filter_map(|c| c.id).collect())
}

async fn force_remove(engine: &Docker, ids: &[String]) -> Vec<String> {
    let mut problems = Vec::new();
    for id in ids {
        if let Err(e) = engine
            .remove_container(
                id,
                Some(RemoveContainerOptions {
                    force: true,
                    v: true,
                    link: false,
                }),
            )
            .await
        {
            problems.push(format!("removing container {id}: {e}"));
        }
    }
    problems
}

/// Removes service `id` through `client` and waits (bounded) until the engine has no container
/// of it left; force-removes what remains at the deadline, saying so.
async fn remove_service(
    system: System,
    client: &Docker,
    engine: &Docker,
    id: &str,
) -> Result<(), String> {
    match client.delete_service(id).await {
        Ok(()) => {}
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => {}
        Err(e) => return Err(format!("{system}: removing service {id}: {e}")),
    }
    let end = Instant::now() + REMOVE_DEADLINE;
    loop {
        let left = container_ids(engine, "com.docker.swarm.service.id", id).await?;
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() >= end {
            let problems = force_remove(engine, &left).await;
            return Err(format!(
                "{system}: {} containers of removed service {id} were still there after {:?}; \
                 force-removed them{}",
                left.len(),
                REMOVE_DEADLINE,
                if problems.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", problems.join("; "))
                }
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Undoes the Docker side: services, swarm, networks. Returns the problems met.
async fn cleanup_docker(made: &Mutex<Made>) -> Vec<String> {
    let (socket, services, swarm, networks_before) = {
        let m = made.lock().expect("lock");
        (
            m.engine_socket.clone(),
            m.docker_services.clone(),
            m.swarm,
            m.networks_before.clone(),
        )
    };
    if !swarm && services.is_empty() {
        return Vec::new();
    }
    let mut problems = Vec::new();
    let engine = match connect(&socket) {
        Ok(e) => e,
        Err(e) => return vec![format!("docker clean-up: {e}")],
    };
    for id in &services {
        if let Err(e) = remove_service(System::Docker, &engine, &engine, id).await {
            problems.push(e);
        }
    }
    made.lock().expect("lock").docker_services.clear();
    if swarm {
        crate::report::progress("docker: swarm leave --force");
        if let Err(e) = engine
            .leave_swarm(Some(LeaveSwarmOptions { force: true }))
            .await
        {
            problems.push(format!("docker: swarm leave --force: {e}"));
        }
        made.lock().expect("lock").swarm = false;
        // Networks that swarm mode made (ingress, docker_gwbridge); retried a little, as the
        // ingress sandbox goes away asynchronously.
        if let Some(before) = networks_before {
            let end = Instant::now() + Duration::from_secs(20);
            loop {
                let added: Vec<String> =
                    match engine.list_networks(None::<ListNetworksOptions>).await {
                        Ok(list) => list
                            .into_iter()
                            .filter_map(|n| n.name)
                            .filter(|n| !before.contains(n))
                            .collect(),
                        Err(e) => {
                            problems.push(format!("docker: listing networks: {e}"));
                            break;
                        }
                    };
                let mut failed = Vec::new();
                for name in &added {
                    if let Err(e) = engine.remove_network(name).await {
                        failed.push(format!("removing network {name}: {e}"));
                    }
                }
                if failed.is_empty() {
                    break;
                }
                if Instant::now() >= end {
                    problems.extend(failed);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    problems
}

/// Undoes the Shoal side: services (through Shoal), then the daemon.
async fn cleanup_shoal(made: &Mutex<Made>) -> Vec<String> {
    let (socket, shoal_socket, services) = {
        let m = made.lock().expect("lock");
        (
            m.engine_socket.clone(),
            m.shoal.as_ref().map(ShoalDaemon::socket),
            m.shoal_services.clone(),
        )
    };
    let mut problems = Vec::new();
    if !services.is_empty() {
        match (connect(&socket), shoal_socket.as_deref().map(connect)) {
            (Ok(engine), Some(Ok(shoal))) => {
                for id in &services {
                    if let Err(e) = remove_service(System::Shoal, &shoal, &engine, id).await {
                        problems.push(e);
                    }
                }
            }
            (Err(e), _) | (_, Some(Err(e))) => problems.push(format!("shoal clean-up: {e}")),
            (_, None) => {}
        }
        made.lock().expect("lock").shoal_services.clear();
    }
    let daemon = made.lock().expect("lock").shoal.take();
    if let Some(mut daemon) = daemon {
        crate::report::progress("shoal: stopping the daemon");
        if let Err(e) = stop_daemon(&mut daemon.child) {
            problems.push(e);
        }
    }
    problems
}

/// Force-removes any container still carrying the benchmark's label.
async fn sweep(made: &Mutex<Made>) -> Vec<String> {
    let socket = {
        let m = made.lock().expect("lock");
        if !m.sweep {
            return Vec::new();
        }
        m.engine_socket.clone()
    };
    let engine = match connect(&socket) {
        Ok(e) => e,
        Err(e) => return vec![format!("sweep: {e}")],
    };
    let mut problems = Vec::new();
    match container_ids(&engine, LABEL, &std::process::id().to_string()).await {
        Ok(ids) if !ids.is_empty() => {
            problems.push(format!(
                "{} containers of the benchmark were left; force-removed",
                ids.len()
            ));
            problems.extend(force_remove(&engine, &ids).await);
        }
        Ok(_) => {}
        Err(e) => problems.push(format!("sweep: {e}")),
    }
    made.lock().expect("lock").sweep = false;
    problems
}

async fn cleanup_all(made: &Mutex<Made>) -> Vec<String> {
    let mut problems = cleanup_docker(made).await;
    problems.extend(cleanup_shoal(made).await);
    problems.extend(sweep(made).await);
    problems
}

/// Cleans up whatever is left when dropped (an error, a panic); [`Guard::finish`] does it on
/// the normal path. The clean-up runs on its own thread and runtime, so that dropping the
/// guard inside another runtime works.
struct Guard {
    made: Arc<Mutex<Made>>,
    done: bool,
}

impl Guard {
    fn cleanup(&self) -> Vec<String> {
        let made = self.made.clone();
        std::thread::spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime.block_on(cleanup_all(&made)),
                Err(e) => vec![format!("clean-up runtime: {e}")],
            }
        })
        .join()
        .unwrap_or_else(|_| vec!["the clean-up panicked".into()])
    }

    fn finish(mut self) -> Vec<String> {
        self.done = true;
        self.cleanup()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.done {
            for p in self.cleanup() {
                eprintln!("versus-docker clean-up: {p}");
            }
        }
    }
}

// --- The Shoal daemon ----------------------------------------------------------------------------

fn free_loopback_addr() -> Result<String, String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("finding a free loopback port: {e}"))?
        .port();
    Ok(format!("127.0.0.1:{port}"))
}

fn start_daemon(args: &Args, bin: &Path) -> Result<ShoalDaemon, String> {
    let dir = tempfile::Builder::new()
        .prefix("shoal-vs-")
        .tempdir()
        .map_err(|e| format!("temporary state directory: {e}"))?;
    let mut command = Command::new(bin);
    command
        .args(["daemon", "--init", "--executor", "docker"])
        .args(["--hostname", "versus-docker", "--log-level"])
        .arg(&args.shoal_log_level)
        .arg("--state-dir")
        .arg(dir.path())
        .args(["--listen-remote-api", &free_loopback_addr()?])
        .env(
            "DOCKER_HOST",
            format!("unix://{}", args.engine_socket.display()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(path) = &args.shoal_log {
        let file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
        command.stderr(file);
    }
    // SAFETY: setpgid and prctl are async-signal-safe; nothing else runs between fork and
    // exec. Its own process group keeps a terminal's Ctrl-C from stopping the daemon before
    // the clean-up has removed its services; the death signal stops it if this process dies
    // (it is spawned from the main thread, which lives as long as the process).
    unsafe {
        use std::os::unix::process::CommandExt;
        command.pre_exec(|| {
            if libc::setpgid(0, 0) != 0 || libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command
        .spawn()
        .map_err(|e| format!("starting {}: {e}", bin.display()))?;
    Ok(ShoalDaemon { child, dir })
}

/// SIGTERM, up to 15 s for the daemon to exit, then SIGKILL.
fn stop_daemon(child: &mut Child) -> Result<(), String> {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return Ok(());
    }
    // SAFETY: signalling our own child, which has not been reaped (try_wait said so).
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let end = Instant::now() + Duration::from_secs(15);
    while Instant::now() < end {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    Err("shoal daemon did not exit within 15 s of SIGTERM; killed".into())
}

// --- Waiting -------------------------------------------------------------------------------------

/// What one poll of a service's tasks saw.
#[derive(Default, Debug)]
struct Tally {
    tasks: usize,
    running: usize,
    /// Running tasks whose spec is of the generation waited for.
    running_current: usize,
    failed: usize,
    last_error: Option<String>,
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} tasks, {} running ({} on the current spec), {} failed/rejected",
            self.tasks, self.running, self.running_current, self.failed
        )?;
        if let Some(e) = &self.last_error {
            write!(f, "; a task's error: {e}")?;
        }
        Ok(())
    }
}

fn generation(task: &Task) -> Option<u64> {
    task.spec
        .as_ref()?
        .container_spec
        .as_ref()?
        .env
        .as_ref()?
        .iter()
        .find_map(|e| e.strip_prefix(GEN)?.strip_prefix('=')?.parse().ok())
}

fn tally(tasks: &[Task], spec_gen: u64) -> Tally {
    let mut t = Tally {
        tasks: tasks.len(),
        ..Default::default()
    };
    for task in tasks {
        let status = task.status.as_ref();
        match status.and_then(|s| s.state) {
            Some(TaskState::RUNNING) => {
                t.running += 1;
                if generation(task) == Some(spec_gen) {
                    t.running_current += 1;
                }
            }
            Some(TaskState::FAILED | TaskState::REJECTED) => {
                t.failed += 1;
                if let Some(e) = status.and_then(|s| s.err.clone()).filter(|e| !e.is_empty()) {
                    t.last_error = Some(e);
                }
            }
            _ => {}
        }
    }
    t
}

struct Target {
    running: usize,
    /// Whether every running task must be of the current generation.
    all_current: bool,
    spec_gen: u64,
}

impl Target {
    fn met(&self, t: &Tally) -> bool {
        t.running == self.running && (!self.all_current || t.running_current == self.running)
    }
}

/// Polls the service's tasks until `target` is met; bounded by `deadline`.
async fn wait_for(
    client: &Docker,
    service: &str,
    target: &Target,
    deadline: Duration,
    poll: Duration,
) -> Result<(), String> {
    let end = Instant::now() + deadline;
    let filters = HashMap::from([("service".to_string(), vec![service.to_string()])]);
    loop {
        check_interrupted()?;
        let tasks = client
            .list_tasks(Some(ListTasksOptions {
                filters: Some(filters.clone()),
            }))
            .await
            .map_err(|e| format!("listing the tasks of {service}: {e}"))?;
        let seen = tally(&tasks, target.spec_gen);
        if target.met(&seen) {
            return Ok(());
        }
        if Instant::now() >= end {
            return Err(format!(
                "not done after {} s (waiting for {} running{}): {seen}",
                deadline.as_secs(),
                target.running,
                if target.all_current {
                    ", all on the new spec"
                } else {
                    ""
                }
            ));
        }
        tokio::time::sleep(poll).await;
    }
}

async fn wait_node_ready(system: System, client: &Docker) -> Result<(), String> {
    let end = Instant::now() + SETUP_DEADLINE;
    loop {
        check_interrupted()?;
        let ready = match client.list_nodes(None::<ListNodesOptions>).await {
            Ok(nodes) => nodes
                .iter()
                .any(|n| n.status.as_ref().and_then(|s| s.state) == Some(NodeState::READY)),
            Err(_) => false,
        };
        if ready {
            return Ok(());
        }
        if Instant::now() >= end {
            return Err(format!(
                "{system}: no node was READY within {} s",
                SETUP_DEADLINE.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// --- The work ------------------------------------------------------------------------------------

fn service_spec(name: &str, image: &str, replicas: usize, spec_gen: u64) -> ServiceSpec {
    ServiceSpec {
        name: Some(name.to_string()),
        labels: Some(HashMap::from([(
            LABEL.to_string(),
            std::process::id().to_string(),
        )])),
        task_template: Some(TaskSpec {
            container_spec: Some(TaskSpecContainerSpec {
                image: Some(image.to_string()),
                labels: Some(HashMap::from([(
                    LABEL.to_string(),
                    std::process::id().to_string(),
                )])),
                command: Some(vec!["sh".into(), "-c".into(), COMMAND.into()]),
                env: Some(vec![format!("{GEN}={spec_gen}")]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated {
                replicas: Some(replicas as i64),
            }),
            ..Default::default()
        }),
        update_config: Some(ServiceSpecUpdateConfig {
            parallelism: Some(5),
            delay: Some(0),
            failure_action: Some(ServiceSpecUpdateConfigFailureActionEnum::PAUSE),
            monitor: Some(5_000_000_000),
            max_failure_ratio: Some(0.0),
            order: Some(ServiceSpecUpdateConfigOrderEnum::STOP_FIRST),
        }),
        ..Default::default()
    }
}

struct Ctx<'a> {
    args: &'a Args,
    system: System,
    client: &'a Docker,
    engine: &'a Docker,
    image: &'a str,
    made: &'a Mutex<Made>,
    results: &'a mut Results,
}

impl Ctx<'_> {
    fn services(&self) -> std::sync::MutexGuard<'_, Made> {
        self.made.lock().expect("lock")
    }

    fn record(&mut self, n: usize, phase: Phase, took: Duration) {
        self.results
            .entry((n, phase, self.system))
            .or_default()
            .push(took.as_secs_f64());
    }

    /// Times one phase: `write` (the request), then the wait for `target`.
    async fn phase(
        &mut self,
        n: usize,
        phase: Phase,
        service: &str,
        target: Target,
        spec: Option<ServiceSpec>,
    ) -> Result<(), String> {
        let what = format!("{}: {}", self.system, phase.describe(n));
        eprint!("  {what} … ");
        // The version to update from (not timed).
        let version = match &spec {
            Some(_) => Some(
                self.client
                    .inspect_service(service, None::<InspectServiceOptions>)
                    .await
                    .map_err(|e| format!("{what}: inspecting {service}: {e}"))?
                    .version
                    .and_then(|v| v.index)
                    .ok_or_else(|| format!("{what}: the service has no Version.Index"))?,
            ),
            None => None,
        };
        let started = Instant::now();
        if let (Some(spec), Some(version)) = (spec, version) {
            self.client
                .update_service(
                    service,
                    spec,
                    UpdateServiceOptions {
                        version: version as i32,
                        ..Default::default()
                    },
                    None,
                )
                .await
                .map_err(|e| format!("{what}: updating {service}: {e}"))?;
        }
        let poll = Duration::from_millis(self.args.poll_ms.max(1));
        let deadline = Duration::from_secs(self.args.phase_timeout);
        match wait_for(self.client, service, &target, deadline, poll).await {
            Ok(()) => {
                let took = started.elapsed();
                eprintln!("{:.2} s", took.as_secs_f64());
                self.record(n, phase, took);
                Ok(())
            }
            Err(e) => {
                eprintln!("failed");
                Err(format!("{what}: {e}"))
            }
        }
    }

    /// Create, scale up, scale down, update, remove: one cycle of size `n`.
    async fn cycle(&mut self, n: usize, run: usize) -> Result<(), String> {
        let name = format!("vsbench-{}-{}-{n}-{run}", std::process::id(), self.system);
        let what = format!("{}: {}", self.system, Phase::Create.describe(n));
        eprint!("  {what} … ");
        let started = Instant::now();
        let created = self
            .client
            .create_service(service_spec(&name, self.image, n, 0), None)
            .await
            .map_err(|e| {
                eprintln!("failed");
                format!("{what}: {e}")
            })?;
        let id = created
            .id
            .ok_or_else(|| format!("{what}: the answer has no ID"))?;
        match self.system {
            System::Docker => self.services().docker_services.push(id.clone()),
            System::Shoal => self.services().shoal_services.push(id.clone()),
        }
        let poll = Duration::from_millis(self.args.poll_ms.max(1));
        let deadline = Duration::from_secs(self.args.phase_timeout);
        let target = Target {
            running: n,
            all_current: false,
            spec_gen: 0,
        };
        match wait_for(self.client, &id, &target, deadline, poll).await {
            Ok(()) => {
                let took = started.elapsed();
                eprintln!("{:.2} s", took.as_secs_f64());
                self.record(n, Phase::Create, took);
            }
            Err(e) => {
                eprintln!("failed");
                return Err(format!("{what}: {e}"));
            }
        }

        for (phase, replicas) in [(Phase::ScaleUp, 2 * n), (Phase::ScaleDown, n)] {
            let target = Target {
                running: replicas,
                all_current: false,
                spec_gen: 0,
            };
            let spec = service_spec(&name, self.image, replicas, 0);
            self.phase(n, phase, &id, target, Some(spec)).await?;
        }
        let target = Target {
            running: n,
            all_current: true,
            spec_gen: 1,
        };
        let spec = service_spec(&name, self.image, n, 1);
        self.phase(n, Phase::Update, &id, target, Some(spec))
            .await?;

        // Remove it (not timed) and wait until its containers are gone.
        let t = Instant::now();
        remove_service(self.system, self.client, self.engine, &id).await?;
        crate::report::progress(format!(
            "{}: service removed, its containers gone ({:.2} s, not measured)",
            self.system,
            t.elapsed().as_secs_f64()
        ));
        let mut made = self.services();
        made.docker_services.retain(|s| s != &id);
        made.shoal_services.retain(|s| s != &id);
        Ok(())
    }

    async fn all(&mut self) -> Result<(), String> {
        for run in 0..self.args.runs.max(1) {
            for &n in &self.args.replicas {
                self.cycle(n, run).await?;
            }
        }
        Ok(())
    }
}

/// The engine's own floor for a create: `n` containers of the same image and command
/// created and started straight through the engine API, all in flight at once (as both
/// agents start a node's tasks), timed until the last start returns; then removed (not
/// timed). They carry the benchmark's label, so the sweep finds them after an error.
async fn engine_floor(engine: &Docker, image: &str, n: usize) -> Result<Duration, String> {
    let started = Instant::now();
    let mut starting = tokio::task::JoinSet::new();
    for _ in 0..n {
        let engine = engine.clone();
        let body = ContainerCreateBody {
            image: Some(image.to_string()),
            cmd: Some(vec!["sh".into(), "-c".into(), COMMAND.into()]),
            env: Some(vec![format!("{GEN}=0")]),
            labels: Some(HashMap::from([(
                LABEL.to_string(),
                std::process::id().to_string(),
            )])),
            ..Default::default()
        };
        starting.spawn(async move {
            let id = engine
                .create_container(None::<CreateContainerOptions>, body)
                .await
                .map_err(|e| format!("engine floor: create: {e}"))?
                .id;
            engine
                .start_container(&id, None::<StartContainerOptions>)
                .await
                .map_err(|e| format!("engine floor: start: {e}"))?;
            Ok::<_, String>(id)
        });
    }
    let mut ids = Vec::with_capacity(n);
    let mut error = None;
    while let Some(done) = starting.join_next().await {
        match done {
            Ok(Ok(id)) => ids.push(id),
            Ok(Err(e)) => error = Some(e),
            Err(e) => error = Some(format!("engine floor: {e}")),
        }
    }
    let took = started.elapsed();
    let problems = force_remove(engine, &ids).await;
    if let Some(e) = error.or_else(|| problems.into_iter().next()) {
        return Err(e);
    }
    Ok(took)
}

async fn bench(
    args: &Args,
    made: &Mutex<Made>,
    results: &mut Results,
    notes: &mut Vec<String>,
) -> Result<(), String> {
    let want_docker = args.systems != "shoal";
    let want_shoal = args.systems != "docker";
    if args.replicas.is_empty() || args.replicas.contains(&0) {
        return Err("--replicas needs counts above zero".into());
    }
    let engine = connect(&args.engine_socket)?;
    engine.ping().await.map_err(|e| {
        format!(
            "no Docker Engine answers at {}: {e}",
            args.engine_socket.display()
        )
    })?;
    let info = engine
        .info()
        .await
        .map_err(|e| format!("engine info: {e}"))?;
    let state = info.swarm.as_ref().and_then(|s| s.local_node_state);
    if !matches!(
        state,
        None | Some(LocalNodeState::INACTIVE) | Some(LocalNodeState::EMPTY)
    ) {
        return Err(format!(
            "the engine is in swarm mode already (state {}); versus-docker does not touch a \
             swarm it did not make: leave it first (docker swarm leave --force) if it is yours",
            state.map(|s| s.to_string()).unwrap_or_default()
        ));
    }
    let image = engine
        .inspect_image(&args.image)
        .await
        .map_err(|e| {
            format!(
                "image {} is not on the engine ({e}); build it with scripts/build-test-image.sh",
                args.image
            )
        })?
        .id
        .ok_or_else(|| format!("image {} has no ID", args.image))?;
    let bin = if want_shoal {
        Some(crate::simagent::shoal_bin(&args.shoal_bin)?)
    } else {
        None
    };
    notes.push(format!(
        "engine {} (API {}), image {} = {image}; command sh -c \"trap 'exit 0' TERM; sleep \
         86400 & wait\"",
        info.server_version.unwrap_or_default(),
        API.minor_version,
        args.image
    ));

    made.lock().expect("lock").sweep = true;
    for &n in &args.replicas {
        check_interrupted()?;
        eprint!("  engine: create+start {n} containers, all in flight … ");
        match engine_floor(&engine, &image, n).await {
            Ok(took) => {
                eprintln!("{:.2} s", took.as_secs_f64());
                notes.push(format!(
                    "engine floor: create+start of {n} containers straight through the engine \
                     API, all in flight: {:.2} s",
                    took.as_secs_f64()
                ));
            }
            Err(e) => {
                eprintln!("failed");
                return Err(e);
            }
        }
    }

    if want_docker {
        let began = Instant::now();
        let networks = engine
            .list_networks(None::<ListNetworksOptions>)
            .await
            .map_err(|e| format!("listing networks: {e}"))?
            .into_iter()
            .filter_map(|n| n.name)
            .collect();
        made.lock().expect("lock").networks_before = Some(networks);
        let addr = free_loopback_addr()?;
        crate::report::progress(format!("docker: swarm init --advertise-addr {addr}"));
        {
            let mut m = made.lock().expect("lock");
            m.swarm = true;
            m.sweep = true;
        }
        engine
            .init_swarm(SwarmInitRequest {
                listen_addr: Some(addr.clone()),
                advertise_addr: Some(addr),
                ..Default::default()
            })
            .await
            .map_err(|e| format!("docker: swarm init: {e}"))?;
        wait_node_ready(System::Docker, &engine).await?;
        let mut ctx = Ctx {
            args,
            system: System::Docker,
            client: &engine,
            engine: &engine,
            image: &image,
            made,
            results,
        };
        ctx.all().await?;
        let problems = cleanup_docker(made).await;
        if !problems.is_empty() {
            return Err(format!("docker clean-up: {}", problems.join("; ")));
        }
        notes.push(format!(
            "docker side: {:.0} s wall time including swarm init and leave",
            began.elapsed().as_secs_f64()
        ));
    }

    if let Some(bin) = bin {
        check_interrupted()?;
        let began = Instant::now();
        crate::report::progress(format!(
            "shoal: starting {} daemon --init --executor docker",
            bin.display()
        ));
        let daemon = start_daemon(args, &bin)?;
        let socket = daemon.socket();
        {
            let mut m = made.lock().expect("lock");
            m.shoal = Some(daemon);
            m.sweep = true;
        }
        // The engine API socket, then a READY node.
        let end = Instant::now() + SETUP_DEADLINE;
        let shoal = loop {
            check_interrupted()?;
            if let Some(d) = made.lock().expect("lock").shoal.as_mut()
                && let Ok(Some(status)) = d.child.try_wait()
            {
                return Err(format!(
                    "shoal: the daemon exited ({status}) before serving {} (see --shoal-log)",
                    socket.display()
                ));
            }
            if socket.exists()
                && let Ok(client) = connect(&socket)
                && client.ping().await.is_ok()
            {
                break client;
            }
            if Instant::now() >= end {
                return Err(format!(
                    "shoal: {} did not answer within {} s",
                    socket.display(),
                    SETUP_DEADLINE.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        wait_node_ready(System::Shoal, &shoal).await?;
        let mut ctx = Ctx {
            args,
            system: System::Shoal,
            client: &shoal,
            engine: &engine,
            image: &image,
            made,
            results,
        };
        ctx.all().await?;
        let problems = cleanup_shoal(made).await;
        if !problems.is_empty() {
            return Err(format!("shoal clean-up: {}", problems.join("; ")));
        }
        notes.push(format!(
            "shoal side: {:.0} s wall time including daemon start and stop",
            began.elapsed().as_secs_f64()
        ));
    }
    Ok(())
}

pub fn run(args: Args, json: bool) -> Report {
    install_signal_handlers();
    let began = Instant::now();
    let made = Arc::new(Mutex::new(Made {
        engine_socket: args.engine_socket.clone(),
        swarm: false,
        networks_before: None,
        docker_services: Vec::new(),
        shoal_services: Vec::new(),
        shoal: None,
        sweep: false,
    }));
    let guard = Guard {
        made: made.clone(),
        done: false,
    };
    let mut results = Results::new();
    let mut notes = Vec::new();
    let outcome = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(bench(&args, &made, &mut results, &mut notes)),
        Err(e) => Err(format!("runtime: {e}")),
    };
    let problems = guard.finish();

    let mut report = Report::new("versus-docker");
    report.notes.push(format!(
        "the same client (bollard, API 1.{}) on both sockets; \"swarmkit\" = Docker swarm mode \
         measured in this run; goal = half of it; medians of {} run(s); done = N tasks with \
         Status.State running (update: all on the new spec)",
        API.minor_version,
        args.runs.max(1)
    ));
    report.notes.extend(notes);
    for &n in &args.replicas {
        for phase in Phase::ALL {
            let docker = results.get(&(n, phase, System::Docker));
            let shoal = results.get(&(n, phase, System::Shoal));
            let d = docker.map(Vec::as_slice).and_then(median);
            let s = shoal.map(Vec::as_slice).and_then(median);
            let name = phase.describe(n);
            match (s, d) {
                (Some(s), d) => {
                    report.row(format!("{name} (s)"), s, "s", d, d.map(|d| d / 2.0));
                    if let Some(d) = d {
                        report.row(format!("{name}: shoal/docker"), s / d, "x", None, Some(0.5));
                    }
                }
                (None, Some(d)) => {
                    report
                        .notes
                        .push(format!("docker: {name}: {d:.3} s (median)"));
                }
                (None, None) => {}
            }
            if args.runs > 1 {
                for (system, values) in [("docker", docker), ("shoal", shoal)] {
                    if let Some(v) = values {
                        let list: Vec<String> = v.iter().map(|x| format!("{x:.2}")).collect();
                        report
                            .notes
                            .push(format!("{system}: {name}: runs {} s", list.join(", ")));
                    }
                }
            }
        }
    }
    report
        .notes
        .push(format!("wall time {:.0} s", began.elapsed().as_secs_f64()));
    let failed = outcome.is_err() || !problems.is_empty();
    if let Err(e) = &outcome {
        eprintln!("versus-docker: {e}");
        report.notes.push(format!("FAILED: {e}"));
    }
    for p in &problems {
        eprintln!("versus-docker clean-up: {p}");
        report.notes.push(format!("clean-up: {p}"));
    }
    if failed {
        // The figures measured so far, then a failing exit status.
        if json {
            println!("{}", report.to_json());
        } else {
            print!("{}", report.to_table());
        }
        std::process::exit(1);
    }
    report
}
