//! What the agent-side scenarios share (S3 `converge`, S4 `heartbeats`, S7 `reschedule`):
//! the manager process this benchmark starts (`shoal daemon --init`, killed with its guard
//! and with this process), `/proc` readings (per-thread CPU from `schedstat`, RSS), the
//! Control API with the manager's own certificate, certificates for simulated agents with
//! the worker join token, sessions and heartbeats as the real agent opens and sends them,
//! and [`TaskAgents`]: simulated agents that also run tasks (read their `Assignments`
//! stream and report statuses through the real agent's status reporter). For S6 (failover)
//! task agents can also reconnect when their session breaks, as the real agent does: backoff,
//! every known manager in turn (the list the last session message carried), a follower's
//! pointer to the leader followed (see `task_agent`).
//!
//! Every wait here is bounded; every address is on loopback.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use shoal_api::v1::assignment_change::AssignmentAction;
use shoal_api::v1::control_client::ControlClient;
use shoal_api::v1::dispatcher_client::DispatcherClient;
use shoal_api::v1::update_task_status_request::TaskStatusUpdate;
use shoal_api::v1::{
    Annotations, AssignmentsRequest, Cluster, CreateServiceRequest, HeartbeatRequest,
    ListClustersRequest, ListNodesRequest, ListTasksRequest, Node, NodeDescription, NodeRole,
    Platform, ProcessSpec, ReplicatedService, Resources, ServiceSpec, SessionRequest, Task,
    TaskSpecFields, TaskState, TaskStatus, UpdateClusterRequest, UpdateNodeRequest,
    UpdateTaskStatusRequest, assignment, node_spec, node_status, service_spec, task_spec,
};
use shoal_node::certificates::Issued;
use shoal_node::worker::{StatusReporter, StatusSink};
use shoal_tls::{Credentials, Dialer};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tonic::transport::Channel;

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration such as 5s or 500ms");
    let (number, unit) = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map(|i| s.split_at(i))
        .ok_or_else(bad)?;
    let n: f64 = number.parse().map_err(|_| bad())?;
    let secs = match unit {
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(bad()),
    };
    if !(secs > 0.0 && secs < 3600.0) {
        return Err(format!(
            "{s:?}: a period must be positive and under an hour"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

pub fn show(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

pub use crate::report::progress;

pub fn free_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("addr")
        .port();
    format!("127.0.0.1:{port}")
}

pub fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i.min(sorted.len() - 1)])
}

// --- The manager process -------------------------------------------------------------------

/// A `shoal daemon --init` this benchmark started; killed and reaped on drop.
pub struct Manager {
    child: Option<Child>,
    pub pid: u32,
}

impl Manager {
    pub fn start(bin: &Path, state: &Path, addr: &str, extra: &[&str]) -> Result<Manager, String> {
        let mut args = vec!["--init"];
        args.extend_from_slice(extra);
        Self::daemon(bin, state, addr, "bench-manager", &args, None)
    }

    /// A `shoal daemon` with `extra` arguments (`--init` or `--join-addr`, or nothing to
    /// restart from its state), named `hostname`. With `log`, its stderr is appended there.
    pub fn daemon(
        bin: &Path,
        state: &Path,
        addr: &str,
        hostname: &str,
        extra: &[&str],
        log: Option<&Path>,
    ) -> Result<Manager, String> {
        // The manager's log level: SHOAL_BENCH_MANAGER_LOG_LEVEL (default warn).
        let level =
            std::env::var("SHOAL_BENCH_MANAGER_LOG_LEVEL").unwrap_or_else(|_| "warn".into());
        let mut command = Command::new(bin);
        command
            .args(["daemon", "--log-level", &level])
            .args(["--hostname", hostname, "--state-dir"])
            .arg(state)
            .args(["--listen-remote-api", addr])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // The manager's log, for looking into a run: SHOAL_BENCH_MANAGER_LOG=<file>.
        if let Some(path) = log {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            command.stderr(file);
        } else if let Some(path) = std::env::var_os("SHOAL_BENCH_MANAGER_LOG") {
            let file = std::fs::File::create(&path)
                .map_err(|e| format!("{}: {e}", Path::new(&path).display()))?;
            command.stderr(file);
        }
        die_with_this_process(&mut command);
        let child = command
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.display()))?;
        Ok(Manager {
            pid: child.id(),
            child: Some(child),
        })
    }

    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        self.kill();
    }
}

// --- /proc ---------------------------------------------------------------------------------

/// Nanoseconds each thread of `pid` has run, by thread ID.
pub fn thread_cpu(pid: u32) -> BTreeMap<u32, u64> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        if let Some(ns) = std::fs::read_to_string(entry.path().join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
        {
            out.insert(tid, ns);
        }
    }
    out
}

/// CPU time between two [`thread_cpu`] readings (threads gone by the second are lost).
pub fn cpu_between(before: &BTreeMap<u32, u64>, after: &BTreeMap<u32, u64>) -> Duration {
    let ns: u64 = after
        .iter()
        .map(|(tid, ns)| ns.saturating_sub(before.get(tid).copied().unwrap_or(0)))
        .sum();
    Duration::from_nanos(ns)
}

/// VmRSS of `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Raises the soft limit of open files to the hard limit; returns the new soft limit.
pub fn raise_nofile() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    limit.rlim_cur
}

// --- The Control API -----------------------------------------------------------------------

/// A Control API client with the manager's own certificate.
pub struct Control {
    pub client: ControlClient<Channel>,
}

impl Control {
    /// Waits (bounded) until the manager wrote its certificates and answers ListClusters.
    pub async fn connect(state: &Path, addr: &str, manager: &mut Manager) -> Result<Self, String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = String::from("no certificates yet");
        loop {
            if !manager.alive() {
                return Err("the manager exited at start".into());
            }
            if let Ok(Some(certificates)) = shoal_node::certificates::load(state) {
                let credentials = Credentials::new(certificates).map_err(|e| e.to_string())?;
                let dialer =
                    Dialer::mutual(credentials).with_request_timeout(Duration::from_secs(30));
                match dialer.connect(addr).await {
                    Ok(channel) => {
                        let mut control = Control {
                            client: ControlClient::new(channel).max_decoding_message_size(1 << 30),
                        };
                        match control.cluster().await {
                            Ok(_) => return Ok(control),
                            Err(e) => last = e,
                        }
                    }
                    Err(e) => last = e.to_string(),
                }
            }
            if Instant::now() > deadline {
                return Err(format!("the manager did not come up in 60 s: {last}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn cluster(&mut self) -> Result<Cluster, String> {
        self.client
            .list_clusters(ListClustersRequest::default())
            .await
            .map_err(|s| format!("ListClusters: {}", s.message()))?
            .into_inner()
            .clusters
            .pop()
            .ok_or_else(|| "no cluster yet".to_string())
    }

    pub async fn set_period(&mut self, period: Duration) -> Result<(), String> {
        for _ in 0..10 {
            let cluster = self.cluster().await?;
            let meta = cluster.meta.unwrap_or_default();
            let mut spec = cluster.spec.unwrap_or_default();
            spec.dispatcher
                .get_or_insert_with(Default::default)
                .heartbeat_period = Some(prost_types::Duration {
                seconds: period.as_secs() as i64,
                nanos: period.subsec_nanos() as i32,
            });
            match self
                .client
                .update_cluster(UpdateClusterRequest {
                    cluster_id: meta.id,
                    cluster_version: meta.version,
                    spec: Some(spec),
                    rotation: None,
                })
                .await
            {
                Ok(_) => return Ok(()),
                // Out of sequence: the cluster changed since the read; read again.
                Err(s) if s.message().contains("out of sequence") => {}
                Err(s) => return Err(format!("UpdateCluster: {}", s.message())),
            }
        }
        Err("UpdateCluster kept failing as out of sequence".into())
    }

    /// Every node, as the store has it.
    pub async fn nodes(&mut self) -> Result<Vec<Node>, String> {
        Ok(self
            .client
            .list_nodes(ListNodesRequest::default())
            .await
            .map_err(|s| format!("ListNodes: {}", s.message()))?
            .into_inner()
            .nodes)
    }

    /// Drains the manager's own node (availability DRAIN), so that tasks go only to the
    /// simulated agents; returns its ID.
    pub async fn drain_manager(&mut self) -> Result<String, String> {
        for _ in 0..10 {
            let node = self
                .client
                .list_nodes(ListNodesRequest {
                    roles: vec![NodeRole::Manager as i32],
                    ..Default::default()
                })
                .await
                .map_err(|s| format!("ListNodes: {}", s.message()))?
                .into_inner()
                .nodes
                .pop()
                .ok_or("the manager's node is not in the store yet")?;
            let meta = node.meta.unwrap_or_default();
            let mut spec = node.spec.unwrap_or_default();
            spec.availability = node_spec::Availability::Drain as i32;
            match self
                .client
                .update_node(UpdateNodeRequest {
                    node_id: meta.id.clone(),
                    node_version: meta.version,
                    spec: Some(spec),
                })
                .await
            {
                Ok(_) => return Ok(meta.id),
                Err(s) if s.message().contains("out of sequence") => {}
                Err(s) => return Err(format!("UpdateNode: {}", s.message())),
            }
        }
        Err("UpdateNode kept failing as out of sequence".into())
    }

    /// Creates a replicated service of `replicas` tasks that run `sleep` as a process (the
    /// agents run nothing); returns its ID.
    pub async fn create_service(&mut self, name: &str, replicas: u64) -> Result<String, String> {
        let task = TaskSpecFields {
            runtime: Some(task_spec::Runtime::Process(Box::new(ProcessSpec {
                command: "sleep".into(),
                args: vec!["1000".into()],
                ..Default::default()
            }))),
            ..Default::default()
        };
        let spec = ServiceSpec {
            annotations: Some(Annotations {
                name: name.into(),
                labels: Vec::new(),
            }),
            task: Some(task.into()),
            mode: Some(service_spec::Mode::Replicated(ReplicatedService {
                replicas,
            })),
            ..Default::default()
        };
        let service = self
            .client
            .create_service(CreateServiceRequest { spec: Some(spec) })
            .await
            .map_err(|s| format!("CreateService: {}", s.message()))?
            .into_inner()
            .service
            .ok_or("CreateService returned no service")?;
        Ok(service.meta.unwrap_or_default().id)
    }

    /// The service's tasks, as the store has them.
    pub async fn tasks(&mut self, service_id: &str) -> Result<Vec<Task>, String> {
        Ok(self
            .client
            .list_tasks(ListTasksRequest {
                service_ids: vec![service_id.to_string()],
                ..Default::default()
            })
            .await
            .map_err(|s| format!("ListTasks: {}", s.message()))?
            .into_inner()
            .tasks)
    }

    /// The service's tasks: (RUNNING with desired state RUNNING, all).
    pub async fn running_tasks(&mut self, service_id: &str) -> Result<(usize, usize), String> {
        let tasks = self.tasks(service_id).await?;
        let running = tasks
            .iter()
            .filter(|t| {
                t.desired_state == TaskState::Running as i32
                    && t.status.as_ref().map(|s| s.state) == Some(TaskState::Running as i32)
            })
            .count();
        Ok((running, tasks.len()))
    }

    /// The IDs among `ours` whose node is DOWN, and how many are neither DOWN nor READY.
    pub async fn down(
        &mut self,
        ours: &HashSet<String>,
    ) -> Result<(HashSet<String>, usize), String> {
        let nodes = self
            .client
            .list_nodes(ListNodesRequest::default())
            .await
            .map_err(|s| format!("ListNodes: {}", s.message()))?
            .into_inner()
            .nodes;
        let mut down = HashSet::new();
        let mut other = 0;
        for n in nodes {
            let id = n.meta.as_ref().map(|m| m.id.clone()).unwrap_or_default();
            if !ours.contains(&id) {
                continue;
            }
            let state = n.status.map(|s| s.state).unwrap_or_default();
            if state == node_status::State::Down as i32 {
                down.insert(id);
            } else if state != node_status::State::Ready as i32 {
                other += 1;
            }
        }
        Ok((down, other))
    }
}

pub fn description(i: usize) -> NodeDescription {
    NodeDescription {
        hostname: format!("sim-{i:05}"),
        platform: Some(Platform {
            architecture: std::env::consts::ARCH.to_string(),
            os: std::env::consts::OS.to_string(),
        }),
        resources: Some(Resources {
            nano_cpus: 2_000_000_000,
            memory_bytes: 4 << 30,
            ..Default::default()
        }),
        runtimes: vec!["process".into()],
        ..Default::default()
    }
}

/// Opens a session for agent `i` on `client`; returns the stream and the session ID.
pub async fn open(
    i: usize,
    client: &mut DispatcherClient<Channel>,
) -> Result<(tonic::Streaming<shoal_api::v1::SessionMessage>, String), String> {
    let mut stream = client
        .session(SessionRequest {
            description: Some(description(i)),
            session_id: String::new(),
        })
        .await
        .map_err(|s| format!("Session: {}", s.message()))?
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .map_err(|_| "no first session message in 10 s".to_string())?
        .map_err(|s| format!("Session: {}", s.message()))?
        .ok_or_else(|| "the session closed at once".to_string())?;
    Ok((stream, first.session_id))
}

/// Sends an agent's heartbeats: on a `HeartbeatStream`, as the real agent does, or (with
/// `--unary`) as one `Heartbeat` call each.
pub struct Beater {
    client: DispatcherClient<Channel>,
    session_id: String,
    stream: Option<(
        tokio::sync::mpsc::Sender<HeartbeatRequest>,
        tonic::Streaming<shoal_api::v1::HeartbeatResponse>,
    )>,
}

impl Beater {
    pub async fn open(
        mut client: DispatcherClient<Channel>,
        session_id: String,
        unary: bool,
    ) -> Result<Self, tonic::Status> {
        let stream = if unary {
            None
        } else {
            let (beats, requests) = tokio::sync::mpsc::channel(1);
            let answers = client
                .heartbeat_stream(tokio_stream::wrappers::ReceiverStream::new(requests))
                .await?
                .into_inner();
            Some((beats, answers))
        };
        Ok(Self {
            client,
            session_id,
            stream,
        })
    }

    pub async fn beat(&mut self) -> Result<shoal_api::v1::HeartbeatResponse, tonic::Status> {
        let request = HeartbeatRequest {
            session_id: self.session_id.clone(),
        };
        match &mut self.stream {
            None => self.client.heartbeat(request).await.map(|r| r.into_inner()),
            Some((beats, answers)) => {
                beats
                    .send(request)
                    .await
                    .map_err(|_| tonic::Status::unavailable("the heartbeat stream closed"))?;
                answers.message().await?.ok_or_else(|| {
                    tonic::Status::unavailable("the manager closed the heartbeat stream")
                })
            }
        }
    }
}

/// Makes the process `command` starts die (SIGKILL) with the thread that started it (the
/// main thread, which lives as long as this process), so that an interrupted benchmark
/// leaves no daemon behind.
pub fn die_with_this_process(command: &mut Command) {
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        use std::os::unix::process::CommandExt;
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The `shoal` binary: the one given, or the one next to this benchmark.
pub fn shoal_bin(given: &Option<PathBuf>) -> Result<PathBuf, String> {
    let bin = match given {
        Some(b) => b.clone(),
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name("shoal"),
    };
    if !bin.exists() {
        return Err(format!(
            "the shoal binary was not found at {}; build it first (cargo build --release -p shoal) \
             or pass --shoal-bin",
            bin.display()
        ));
    }
    Ok(bin)
}

pub async fn wait_for(
    what: &str,
    deadline: Duration,
    mut done: impl FnMut() -> bool,
    mut status: impl FnMut() -> String,
) -> Result<(), String> {
    let start = Instant::now();
    let mut shown = Instant::now();
    while !done() {
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
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// N certificates with the worker join token, `concurrency` at a time.
pub async fn certificates(
    addr: &str,
    token: &str,
    n: usize,
    concurrency: usize,
) -> Result<Vec<Issued>, String> {
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut set = JoinSet::new();
    for i in 0..n {
        let permits = permits.clone();
        let addr = addr.to_string();
        let token = token.to_string();
        set.spawn(async move {
            let _permit = permits.acquire_owned().await.expect("semaphore");
            let mut last = String::new();
            for _ in 0..3 {
                match shoal_node::certificates::obtain(&addr, &token).await {
                    Ok(issued) => return Ok((i, issued)),
                    Err(e) => last = e.to_string(),
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(format!("certificate {i}: {last}"))
        });
    }
    let deadline = Instant::now() + Duration::from_secs(60) + Duration::from_millis(50) * n as u32;
    let mut out: Vec<Option<Issued>> = (0..n).map(|_| None).collect();
    let mut got = 0;
    let started = Instant::now();
    let mut shown = Instant::now();
    while got < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, set.join_next()).await {
            Err(_) => return Err(format!("certificates: {got} of {n} before the deadline")),
            Ok(None) => break,
            Ok(Some(joined)) => {
                let (i, issued) = joined.map_err(|e| e.to_string())??;
                out[i] = Some(issued);
                got += 1;
            }
        }
        if shown.elapsed() >= Duration::from_secs(2) {
            progress(format!(
                "certificates: {got}/{n} ({:.0}/s)",
                got as f64 / started.elapsed().as_secs_f64()
            ));
            shown = Instant::now();
        }
    }
    out.into_iter()
        .map(|o| o.ok_or_else(|| "a certificate task vanished".to_string()))
        .collect()
}

/// Stops the agents when dropped (also on an early return), so that none outlives its level.
pub struct AgentsGuard {
    pub stop: watch::Sender<bool>,
    pub set: JoinSet<()>,
}

impl AgentsGuard {
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.set.is_empty() && Instant::now() < deadline {
            let _ = tokio::time::timeout(Duration::from_secs(1), self.set.join_next()).await;
        }
        self.set.abort_all();
    }
}

impl Drop for AgentsGuard {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.set.abort_all();
    }
}

// --- Simulated agents that run tasks (S3, S7) -----------------------------------------------

/// What one task went through, as its agent saw it (wall-clock times, to compare with the
/// task's `meta.created_at`, which the manager stamps on the same machine).
#[derive(Clone, Debug)]
pub struct TaskLog {
    pub service_id: String,
    pub slot: u64,
    /// The task's `meta.created_at`.
    pub created: Option<SystemTime>,
    /// When the task first arrived on the agent's `Assignments` stream.
    pub seen: SystemTime,
    /// When the `UpdateTaskStatus` call that carried its RUNNING status was answered.
    pub running: Option<SystemTime>,
}

/// One agent's record.
#[derive(Default)]
pub struct AgentLog {
    pub node_id: String,
    /// Tasks by ID.
    pub tasks: HashMap<String, TaskLog>,
    /// When the last heartbeat's answer arrived.
    pub last_beat: Option<SystemTime>,
    /// The manager the current session is open with (empty while there is none).
    pub session_addr: String,
    /// Sessions opened so far.
    pub sessions: u64,
    /// When the current session's first heartbeat was accepted (None while there is none).
    pub session_beat: Option<SystemTime>,
    /// When the last session broke, and why (reconnecting agents).
    pub broken: Option<(SystemTime, String)>,
    /// Why the last reconnection attempt failed.
    pub last_error: String,
}

/// What the task agents report, shared.
pub struct Fleet {
    /// A RUNNING status follows STARTING after this long (0: at once).
    pub start_delay: Duration,
    pub connected: AtomicU64,
    pub failed: AtomicU64,
    pub first_error: Mutex<Option<String>>,
    /// Sessions or streams the manager ended (the agent then stopped), with why.
    pub lost: Mutex<Vec<String>>,
    /// Tasks first seen, and RUNNING statuses acknowledged, over all agents.
    pub seen: AtomicU64,
    pub running: AtomicU64,
    /// `UpdateTaskStatus` calls, and those that failed (the reporter retries them).
    pub status_calls: AtomicU64,
    pub status_errors: AtomicU64,
    pub assignment_messages: AtomicU64,
    /// Reconnecting agents: sessions that broke, sessions opened again, and reconnection
    /// attempts that found no manager to take the session.
    pub breaks: AtomicU64,
    pub reconnected: AtomicU64,
    pub open_failures: AtomicU64,
    /// Started tasks the manager told to shut down, and tasks removed from assignment sets.
    pub shutdowns: AtomicU64,
    pub removals: AtomicU64,
    pub agents: Vec<Mutex<AgentLog>>,
}

impl Fleet {
    pub fn new(n: usize, start_delay: Duration) -> Self {
        Fleet {
            start_delay,
            connected: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            first_error: Mutex::new(None),
            lost: Mutex::new(Vec::new()),
            seen: AtomicU64::new(0),
            running: AtomicU64::new(0),
            status_calls: AtomicU64::new(0),
            status_errors: AtomicU64::new(0),
            assignment_messages: AtomicU64::new(0),
            breaks: AtomicU64::new(0),
            reconnected: AtomicU64::new(0),
            open_failures: AtomicU64::new(0),
            shutdowns: AtomicU64::new(0),
            removals: AtomicU64::new(0),
            agents: (0..n).map(|_| Mutex::new(AgentLog::default())).collect(),
        }
    }

    pub fn lost(&self) -> usize {
        self.lost.lock().expect("lost").len()
    }

    pub fn first_error(&self) -> String {
        self.first_error
            .lock()
            .expect("first error")
            .clone()
            .unwrap_or_default()
    }

    /// Every task of the service the agents saw, with the index of the agent that saw it.
    pub fn tasks_of(&self, service_id: &str) -> Vec<(usize, String, TaskLog)> {
        let mut out = Vec::new();
        for (i, agent) in self.agents.iter().enumerate() {
            let log = agent.lock().expect("agent log");
            for (id, t) in &log.tasks {
                if t.service_id == service_id {
                    out.push((i, id.clone(), t.clone()));
                }
            }
        }
        out
    }
}

/// The task agents: their tasks, and a switch per agent that silences it.
pub struct TaskAgents {
    pub fleet: Arc<Fleet>,
    guard: AgentsGuard,
    silence: Vec<watch::Sender<bool>>,
}

impl TaskAgents {
    /// Starts one task agent per certificate, `concurrency` connecting at a time, and waits
    /// (bounded) until every one has its session and assignments stream open.
    pub async fn start(
        issued: Vec<Issued>,
        addr: &str,
        concurrency: usize,
        start_delay: Duration,
    ) -> Result<TaskAgents, String> {
        Self::start_with(issued, &[addr.to_string()], false, concurrency, start_delay).await
    }

    /// As [`TaskAgents::start`], with agent `i` knowing `managers` first in the order
    /// rotated by `i` (so the agents' first calls spread over the managers, as workers
    /// joined through different managers would); with `reconnect`, an agent whose session
    /// breaks opens a new one as the real agent does (see `task_agent`).
    pub async fn start_with(
        issued: Vec<Issued>,
        managers: &[String],
        reconnect: bool,
        concurrency: usize,
        start_delay: Duration,
    ) -> Result<TaskAgents, String> {
        let n = issued.len();
        let fleet = Arc::new(Fleet::new(n, start_delay));
        let permits = Arc::new(Semaphore::new(concurrency));
        let (stop, stop_rx) = watch::channel(false);
        let mut guard = AgentsGuard {
            stop,
            set: JoinSet::new(),
        };
        let mut silence = Vec::with_capacity(n);
        for (i, issued) in issued.into_iter().enumerate() {
            let (tx, rx) = watch::channel(false);
            silence.push(tx);
            fleet.agents[i].lock().expect("agent log").node_id = issued.identity.node_id.clone();
            let mut known = managers.to_vec();
            if !known.is_empty() {
                known.rotate_left(i % managers.len());
            }
            guard.set.spawn(task_agent(
                i,
                issued,
                known,
                reconnect,
                fleet.clone(),
                permits.clone(),
                rx,
                stop_rx.clone(),
            ));
        }
        let count = |f: &Fleet| {
            (
                f.connected.load(Ordering::Relaxed) as usize,
                f.failed.load(Ordering::Relaxed) as usize,
            )
        };
        wait_for(
            "sessions",
            Duration::from_secs(60) + Duration::from_millis(50) * n as u32,
            || {
                let (c, f) = count(&fleet);
                c + f >= n
            },
            || {
                let (c, f) = count(&fleet);
                format!("{c}/{n} open, {f} failed")
            },
        )
        .await?;
        let (c, _) = count(&fleet);
        if c < n {
            return Err(format!(
                "{} of {n} agents could not open a session; first error: {}",
                n - c,
                fleet.first_error()
            ));
        }
        Ok(TaskAgents {
            fleet,
            guard,
            silence,
        })
    }

    /// Silences agent `i`: it stops heartbeating, reading its streams and reporting, but
    /// keeps its connection and streams open (a hung agent, not a closed one).
    pub fn silence(&self, i: usize) {
        let _ = self.silence[i].send(true);
    }

    pub async fn shutdown(self) {
        self.guard.shutdown().await;
    }
}

/// The real agent's status reporter sends through this: `UpdateTaskStatus` on the session,
/// recording when each RUNNING status was acknowledged.
struct Sink {
    slot: Slot,
    fleet: Arc<Fleet>,
    agent: usize,
}

impl StatusSink for Sink {
    type Error = String;

    async fn send(&self, updates: Vec<TaskStatusUpdate>) -> Result<(), String> {
        let running: Vec<String> = updates
            .iter()
            .filter(|u| {
                u.status
                    .as_ref()
                    .is_some_and(|s| s.state == TaskState::Running as i32)
            })
            .map(|u| u.task_id.clone())
            .collect();
        // Without a session the reports wait (the reporter retries), as on the real agent.
        let Some((mut client, session_id)) = self.slot.lock().expect("session slot").clone() else {
            return Err("no session with a manager yet".into());
        };
        self.fleet.status_calls.fetch_add(1, Ordering::Relaxed);
        let result = tokio::time::timeout(
            shoal_api::defaults::DISPATCHER_RPC_TIMEOUT,
            client.update_task_status(UpdateTaskStatusRequest {
                session_id,
                updates,
            }),
        )
        .await;
        match result {
            Ok(Ok(_)) => {
                let now = SystemTime::now();
                let mut log = self.fleet.agents[self.agent].lock().expect("agent log");
                let mut newly = 0;
                for id in running {
                    if let Some(t) = log.tasks.get_mut(&id)
                        && t.running.is_none()
                    {
                        t.running = Some(now);
                        newly += 1;
                    }
                }
                drop(log);
                self.fleet.running.fetch_add(newly, Ordering::Relaxed);
                Ok(())
            }
            Ok(Err(s)) => {
                self.fleet.status_errors.fetch_add(1, Ordering::Relaxed);
                Err(format!("UpdateTaskStatus: {:?} {}", s.code(), s.message()))
            }
            Err(_) => {
                self.fleet.status_errors.fetch_add(1, Ordering::Relaxed);
                Err("UpdateTaskStatus timed out".into())
            }
        }
    }
}

fn status(state: TaskState, message: &str) -> TaskStatus {
    TaskStatus {
        timestamp: Some(prost_types::Timestamp::from(SystemTime::now())),
        state: state as i32,
        message: message.into(),
        ..Default::default()
    }
}

fn system_time(t: &prost_types::Timestamp) -> Option<SystemTime> {
    SystemTime::try_from(*t).ok()
}

/// The session a task agent's status reports go through while one is open (the real
/// agent's `SessionSlot`): a dispatcher client and the session ID.
type Slot = Arc<Mutex<Option<(DispatcherClient<Channel>, String)>>>;

/// A number in [0, 1), from the standard library's randomly keyed hasher (this crate has no
/// random number crate).
fn random_fraction() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// The leader's address a follower's refusal names, as the real agent reads it.
fn leader_of(status: &tonic::Status) -> Option<String> {
    (status.code() == tonic::Code::FailedPrecondition)
        .then(|| {
            status
                .metadata()
                .get(shoal_raft::service::LEADER_ADDR_METADATA)
        })
        .flatten()
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// An open session, with everything the agent holds next to it.
struct Live {
    client: DispatcherClient<Channel>,
    session: tonic::Streaming<shoal_api::v1::SessionMessage>,
    session_id: String,
    beater: Beater,
    period: Duration,
    assignments: tonic::Streaming<shoal_api::v1::AssignmentsMessage>,
    /// The manager that holds the session (after following the leader's address).
    addr: String,
    /// The managers the first session message named.
    managers: Vec<String>,
}

/// Opens a session as the real agent does (`shoal_node::agent::Agent::open`): tries the
/// managers in order, a fresh connection each; a follower's refusal that names the leader
/// puts the leader first (at most three hops). Then the first session message, the
/// heartbeat stream with its first beat, and the `Assignments` stream.
async fn connect_session(i: usize, dialer: &Dialer, managers: &[String]) -> Result<Live, String> {
    let timeout = shoal_api::defaults::DISPATCHER_RPC_TIMEOUT;
    let mut targets = managers.to_vec();
    let mut last = String::from("no manager is known");
    let mut hops = 0;
    while !targets.is_empty() {
        let target = targets.remove(0);
        let channel = match dialer.connect(&target).await {
            Ok(c) => c,
            Err(e) => {
                last = format!("{target}: {e}");
                continue;
            }
        };
        let mut client = DispatcherClient::new(channel).max_decoding_message_size(64 << 20);
        let request = SessionRequest {
            description: Some(description(i)),
            session_id: String::new(),
        };
        let mut session = match tokio::time::timeout(timeout, client.session(request)).await {
            Ok(Ok(s)) => s.into_inner(),
            Ok(Err(status)) => {
                if let Some(leader) = leader_of(&status)
                    && hops < 3
                {
                    hops += 1;
                    targets.insert(0, leader);
                    continue;
                }
                last = format!(
                    "{target}: Session: {:?} {}",
                    status.code(),
                    status.message()
                );
                continue;
            }
            Err(_) => {
                last = format!("{target}: Session timed out");
                continue;
            }
        };
        let first = tokio::time::timeout(Duration::from_secs(10), session.message())
            .await
            .map_err(|_| format!("{target}: no first session message in 10 s"))?
            .map_err(|s| format!("{target}: Session: {:?} {}", s.code(), s.message()))?
            .ok_or_else(|| format!("{target}: the session closed at once"))?;
        let session_id = first.session_id.clone();
        let mut beater = Beater::open(client.clone(), session_id.clone(), false)
            .await
            .map_err(|s| format!("{target}: heartbeat stream: {}", s.message()))?;
        let period = match tokio::time::timeout(timeout, beater.beat()).await {
            Ok(Ok(r)) => r
                .period
                .map(|p| shoal_api::validation::to_std_duration(&p))
                .unwrap_or(shoal_api::defaults::HEARTBEAT_PERIOD),
            Ok(Err(s)) => return Err(format!("{target}: first heartbeat: {}", s.message())),
            Err(_) => return Err(format!("{target}: first heartbeat timed out")),
        };
        let assignments = client
            .assignments(AssignmentsRequest {
                session_id: session_id.clone(),
            })
            .await
            .map_err(|s| format!("{target}: Assignments: {}", s.message()))?
            .into_inner();
        return Ok(Live {
            managers: managers_of(&first),
            client,
            session,
            session_id,
            beater,
            period,
            assignments,
            addr: target,
        });
    }
    Err(last)
}

/// The managers' addresses a session message names (the real agent's `Agent::learn`).
fn managers_of(m: &shoal_api::v1::SessionMessage) -> Vec<String> {
    m.managers
        .iter()
        .filter(|p| !p.addr.is_empty())
        .map(|p| p.addr.clone())
        .collect()
}

/// How a session of a task agent ended.
enum End {
    Stop,
    Silenced,
    Broken(String),
}

/// What a task agent keeps across sessions: the tasks it has started and stopped, and the
/// RUNNING reports waiting for the start delay.
#[derive(Default)]
struct Tasks {
    started: HashSet<String>,
    shut: HashSet<String>,
    delayed: VecDeque<(tokio::time::Instant, Vec<String>)>,
}

/// One task agent: connection, session, heartbeats, the `Assignments` stream; each task it
/// is given with desired state RUNNING is reported ACCEPTED and STARTING at once and RUNNING
/// after the fleet's start delay, through the real agent's status reporter (which coalesces
/// per task and sends what is pending in one call at a time, on whichever session is open),
/// until `stop`.
///
/// Without `reconnect` a session that breaks ends the agent (recorded in `Fleet::lost`).
/// With it the agent reconnects as the real one (`shoal_node::agent`): backoff
/// min(100 ms + 2 × previous, 8 s), waiting a random part of it, starting afresh after a
/// session that was up; each attempt tries every manager it knows, in order (the list the
/// last session message carried), following a follower's pointer to the leader. Tasks it
/// already started are not started again from the new session's COMPLETE set.
#[allow(clippy::too_many_arguments)]
async fn task_agent(
    i: usize,
    issued: Issued,
    managers: Vec<String>,
    reconnect: bool,
    fleet: Arc<Fleet>,
    permits: Arc<Semaphore>,
    mut silence: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let permit = permits.acquire_owned().await.expect("semaphore");
    let fail = |why: String| {
        fleet.failed.fetch_add(1, Ordering::Relaxed);
        fleet
            .first_error
            .lock()
            .expect("first error")
            .get_or_insert(format!("agent {i}: {why}"));
    };
    let credentials = match Credentials::new(issued.certificates()) {
        Ok(c) => c,
        Err(e) => return fail(e.to_string()),
    };
    let dialer = Dialer::mutual(credentials);
    let slot: Slot = Arc::default();
    let reporter = StatusReporter::start(Sink {
        slot: slot.clone(),
        fleet: fleet.clone(),
        agent: i,
    });
    let mut known = managers;
    let mut tasks = Tasks::default();
    let mut permit = Some(permit);
    let mut backoff = Duration::ZERO;
    loop {
        let live = if permit.is_some() {
            // The first session: three attempts, then the agent counts as failed.
            let mut attempt = 0;
            loop {
                attempt += 1;
                match connect_session(i, &dialer, &known).await {
                    Ok(l) => break l,
                    Err(e) if attempt >= 3 => {
                        reporter.stop().await;
                        return fail(e);
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                }
            }
        } else {
            // A reconnection, as the real agent's.
            let base = shoal_api::defaults::SESSION_BACKOFF_BASE;
            let max = shoal_api::defaults::SESSION_BACKOFF_MAX;
            loop {
                backoff = (base + backoff * 2).min(max);
                let wait = backoff.mul_f64(random_fraction());
                tokio::select! {
                    _ = stop.changed() => {
                        reporter.stop().await;
                        return;
                    }
                    () = tokio::time::sleep(wait) => {}
                }
                match connect_session(i, &dialer, &known).await {
                    Ok(l) => break l,
                    Err(e) => {
                        fleet.open_failures.fetch_add(1, Ordering::Relaxed);
                        fleet.agents[i].lock().expect("agent log").last_error = e;
                    }
                }
            }
        };
        if !live.managers.is_empty() {
            known = live.managers.clone();
        }
        let now = SystemTime::now();
        {
            let mut log = fleet.agents[i].lock().expect("agent log");
            log.session_addr = live.addr.clone();
            log.sessions += 1;
            log.last_beat = Some(now);
            log.session_beat = Some(now);
        }
        *slot.lock().expect("session slot") = Some((live.client.clone(), live.session_id.clone()));
        if permit.take().is_some() {
            fleet.connected.fetch_add(1, Ordering::Relaxed);
        } else {
            fleet.reconnected.fetch_add(1, Ordering::Relaxed);
        }
        let end = serve(
            i,
            live,
            reconnect,
            &fleet,
            &reporter,
            &mut tasks,
            &mut known,
            &mut silence,
            &mut stop,
        )
        .await;
        *slot.lock().expect("session slot") = None;
        match end {
            End::Stop => break,
            End::Silenced => {
                // Hung: no more beats, reads or reports until the benchmark ends (the
                // session's streams were kept open until `stop`).
                reporter.stop().await;
                return;
            }
            End::Broken(why) => {
                if !reconnect {
                    fleet
                        .lost
                        .lock()
                        .expect("lost")
                        .push(format!("agent {i}: {why}"));
                    break;
                }
                fleet.breaks.fetch_add(1, Ordering::Relaxed);
                let mut log = fleet.agents[i].lock().expect("agent log");
                log.session_addr.clear();
                log.session_beat = None;
                log.broken = Some((SystemTime::now(), why));
                // A session that was up starts the backoff afresh.
                backoff = Duration::ZERO;
            }
        }
    }
    reporter.stop().await;
}

/// One session of a task agent, until it breaks, the agent is silenced, or `stop`.
#[allow(clippy::too_many_arguments)]
async fn serve(
    i: usize,
    live: Live,
    reconnect: bool,
    fleet: &Fleet,
    reporter: &StatusReporter,
    tasks: &mut Tasks,
    known: &mut Vec<String>,
    silence: &mut watch::Receiver<bool>,
    stop: &mut watch::Receiver<bool>,
) -> End {
    let timeout = shoal_api::defaults::DISPATCHER_RPC_TIMEOUT;
    let Live {
        client: _client,
        mut session,
        session_id: _,
        mut beater,
        mut period,
        mut assignments,
        addr: _,
        managers: _,
    } = live;
    let learn = |known: &mut Vec<String>, m: &shoal_api::v1::SessionMessage| {
        let addrs = managers_of(m);
        if !addrs.is_empty() {
            *known = addrs;
        }
    };
    let mut next = tokio::time::Instant::now() + period;
    loop {
        let due = tasks.delayed.front().map(|(d, _)| *d);
        tokio::select! {
            _ = stop.changed() => return End::Stop,
            changed = silence.changed() => {
                if changed.is_err() {
                    return End::Stop;
                }
                reporter.stop().await;
                let _ = stop.changed().await;
                drop((session, assignments, beater));
                return End::Silenced;
            }
            message = session.message() => match message {
                Ok(Some(m)) => learn(known, &m),
                Ok(None) => return End::Broken("the manager ended the session stream".into()),
                Err(s) => {
                    if *stop.borrow() {
                        return End::Stop;
                    }
                    return End::Broken(format!("session stream: {:?} {}", s.code(), s.message()));
                }
            },
            message = assignments.message() => match message {
                Ok(Some(m)) => {
                    fleet.assignment_messages.fetch_add(1, Ordering::Relaxed);
                    let now = SystemTime::now();
                    let mut to_run = Vec::new();
                    {
                        let mut log = fleet.agents[i].lock().expect("agent log");
                        for change in m.changes {
                            let remove = change.action == AssignmentAction::Remove as i32;
                            let Some(assignment::Item::Task(task)) =
                                change.assignment.and_then(|a| a.item)
                            else {
                                continue;
                            };
                            if remove {
                                fleet.removals.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                            if change.action != AssignmentAction::Update as i32 {
                                continue;
                            }
                            let Some(meta) = task.meta.as_ref() else { continue };
                            let id = meta.id.clone();
                            if !log.tasks.contains_key(&id) {
                                log.tasks.insert(id.clone(), TaskLog {
                                    service_id: task.service_id.clone(),
                                    slot: task.slot,
                                    created: meta.created_at.as_ref().and_then(system_time),
                                    seen: now,
                                    running: None,
                                });
                                fleet.seen.fetch_add(1, Ordering::Relaxed);
                            }
                            let desired = task.desired_state;
                            if desired > TaskState::Running as i32 {
                                if tasks.started.contains(&id) && tasks.shut.insert(id.clone()) {
                                    fleet.shutdowns.fetch_add(1, Ordering::Relaxed);
                                    reporter.report(&id, status(TaskState::Shutdown, "shutdown"));
                                }
                            } else if desired == TaskState::Running as i32
                                && tasks.started.insert(id.clone())
                            {
                                to_run.push(id);
                            }
                        }
                    }
                    for id in &to_run {
                        reporter.report(id, status(TaskState::Accepted, "accepted"));
                        reporter.report(id, status(TaskState::Starting, "starting"));
                    }
                    if fleet.start_delay.is_zero() {
                        for id in &to_run {
                            reporter.report(id, status(TaskState::Running, "started"));
                        }
                    } else if !to_run.is_empty() {
                        tasks
                            .delayed
                            .push_back((tokio::time::Instant::now() + fleet.start_delay, to_run));
                    }
                }
                Ok(None) => return End::Broken("the manager ended the assignments stream".into()),
                Err(s) => {
                    if *stop.borrow() {
                        return End::Stop;
                    }
                    return End::Broken(format!("assignments stream: {:?} {}", s.code(), s.message()));
                }
            },
            () = async { tokio::time::sleep_until(due.expect("a due time")).await }, if due.is_some() => {
                if let Some((_, ids)) = tasks.delayed.pop_front() {
                    for id in &ids {
                        if !tasks.shut.contains(id) {
                            reporter.report(id, status(TaskState::Running, "started"));
                        }
                    }
                }
            }
            () = tokio::time::sleep_until(next) => {
                match tokio::time::timeout(timeout, beater.beat()).await {
                    Ok(Ok(r)) => {
                        fleet.agents[i].lock().expect("agent log").last_beat = Some(SystemTime::now());
                        if let Some(p) = r.period {
                            period = shoal_api::validation::to_std_duration(&p)
                                .max(Duration::from_millis(100));
                        }
                        next = tokio::time::Instant::now() + period;
                    }
                    Ok(Err(s)) => {
                        if *stop.borrow() {
                            return End::Stop;
                        }
                        return End::Broken(format!("heartbeat refused: {:?} {}", s.code(), s.message()));
                    }
                    // The real agent takes a heartbeat that timed out for a broken session.
                    Err(_) if reconnect => return End::Broken("a heartbeat timed out".into()),
                    Err(_) => next = tokio::time::Instant::now(),
                }
            }
        }
    }
}
