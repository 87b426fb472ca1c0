//! What must hold once the faults stop and the cluster has healed.
//!
//! - **(a) Linearizable**: the workload's history (ok and unknown operations, the final reads
//!   included) is checked with `shoal-check` against [`Configs`](crate::model::Configs). A
//!   budget (time and steps) bounds the check; running out is reported as "unknown", never as
//!   a pass.
//! - **(b) No acknowledged write lost**: after healing, every name is read once more
//!   ([`final_reads`](crate::workload::final_reads)) and those reads join the history, so (a)
//!   already fails if an acknowledged write vanished. [`lost_writes`] also counts them
//!   directly, as a figure a reader can trust without the checker: the final read shows the
//!   value of some write X (or absence, left by some removal X); every acknowledged write on
//!   that name that was *called after X returned* must come after X in any order, so X cannot
//!   be the last write — each such write is lost. A value no write produced counts as one lost
//!   write. If X's outcome was unknown, nothing can be concluded (it may have happened late).
//! - **(c) At most one leader per term**: raft-rs logs `became leader at term N` (at info level,
//!   through the Raft layer's slog→tracing drain) on the manager that wins. Each container is
//!   one manager and `docker logs` keeps a container's output across restarts, so the logs of
//!   all managers give every (term, leader) pair of the run. This is the smallest honest source:
//!   the Control API's `ManagerStatus` says who leads now but not in which term, and adding
//!   the term to the API only for this would change the API. The limit: a leadership that left
//!   no log line (a crash between becoming leader and writing the line) is not seen — a miss,
//!   never a false alarm.
//! - **(d) Services converge**: one replicated service of a few replicas (process executor,
//!   `sleep`, which busybox provides inside the image) is created before the faults; after
//!   healing, exactly that many tasks must be wanted running and running, one per slot, with no
//!   slot running two tasks. The time from healing until this holds is a figure.
//!
//! - **(e) No false DOWN** ([`false_downs`]): every change of a node's state is followed
//!   through the Watch API ([`crate::observe`]); a node marked DOWN must be explained by a fault
//!   on it in the preceding grace period — a kill, a cut link, or a pause long enough to
//!   outlast the grace. The dispatcher (`crates/manager/src/dispatcher.rs`) moves a node's
//!   deadline to now + period × 3 at each heartbeat (period: the cluster spec's
//!   `dispatcher.heartbeat_period`, 5 s by default; the agent beats every period ± 0.5 s). A
//!   pause that starts just before a beat and lasts less than (3 − 1) × period − 0.5 s
//!   therefore always ends before the deadline ([`safe_pause`]); DOWN after such a pause (or
//!   after no fault at all) is a false DOWN. Pauses between that bound and the grace may or
//!   may not cause DOWN, and count as explained.
//! - **(f) Stop-first and stuck tasks** are checked at every commit by
//!   [`crate::observe::Observer`]; **(g)** after a rolling update, [`services_converged`]: the
//!   replicated service runs exactly its replicas on the new spec, one per slot, the global
//!   one exactly one task per READY node, both updates COMPLETED.
//! - **Unavailability from the majority side** ([`majority_unavailability`]): the longest
//!   time without an acknowledged write, counting only the time during which some client had
//!   an operation in flight to a manager that was neither killed, paused, nor cut into a
//!   minority when the operation was called. A client stuck on a cut-off manager (for up to
//!   its 4 s time limit) then no longer counts as the cluster being unavailable.
//!
//! Where this departs from Jepsen and etcd: Jepsen's checkers (Knossos, Elle) run on the whole
//! history, including reads that failed; we drop failed operations before checking (they had no
//! effect) and keep unknown writes as optional operations. etcd's robustness tests check watch
//! streams and revision monotonicity as well; watches are not exercised yet. Leader uniqueness is
//! read from logs here, where etcd exposes the term in every response header.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use shoal_api::v1::{ListFilters, ListServicesRequest, ListTasksRequest, TaskState};
use shoal_check::{Checker, Verdict};

use crate::cluster::{DockerCluster, control, docker};
use crate::model::{Configs, Input, Output};
use crate::observe::NodeEvent;
use crate::workload::{Answer, FINAL_READER, Record, history};

/// The result of the linearizability check.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Linearizable {
    Yes,
    No(String),
    /// The checker ran out of budget.
    Unknown(String),
}

impl Linearizable {
    pub fn holds(&self) -> bool {
        matches!(self, Linearizable::Yes)
    }
}

/// Checks the history of `records` within `limit`.
pub fn check_linearizable(records: &[Record], limit: Duration) -> Linearizable {
    let history = history(records);
    let checker = Checker::new(Configs)
        .time_limit(limit)
        .step_limit(200_000_000);
    match checker.check(&history) {
        Verdict::Linearizable => Linearizable::Yes,
        v @ Verdict::NotLinearizable(_) => Linearizable::No(v.to_string()),
        v @ Verdict::Unknown(_) => Linearizable::Unknown(v.to_string()),
    }
}

/// A lost acknowledged write.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Lost {
    pub name: String,
    pub why: String,
}

/// Acknowledged writes that the final reads prove lost (see the module's notes).
pub fn lost_writes(records: &[Record]) -> Vec<Lost> {
    let mut lost = Vec::new();
    let finals: Vec<&Record> = records
        .iter()
        .filter(|r| r.client == FINAL_READER && r.is_ok())
        .collect();
    for last in finals {
        let name = last.input.name();
        let on_name: Vec<&Record> = records
            .iter()
            .filter(|r| r.client != FINAL_READER && r.input.name() == name)
            .collect();
        // When the write that produced the final state returned (None: unknown, no bound).
        let bound: Option<std::time::Duration> = match &last.answer {
            Answer::Ok(Output::Found { value, .. }) => {
                let producer = on_name.iter().find(|r| match &r.input {
                    Input::Create { value: v, .. } | Input::Update { value: v, .. } => v == value,
                    _ => false,
                });
                match producer {
                    None => {
                        lost.push(Lost {
                            name: name.into(),
                            why: format!("final value {value} was written by no operation"),
                        });
                        continue;
                    }
                    Some(p) if p.acknowledged_write() => p.returned,
                    Some(p) if matches!(p.answer, Answer::Unknown(_)) => None,
                    Some(p) => {
                        lost.push(Lost {
                            name: name.into(),
                            why: format!(
                                "final value {value} was written by an operation that did not \
                                 succeed: {:?}",
                                p.answer
                            ),
                        });
                        continue;
                    }
                }
            }
            Answer::Ok(Output::NotFound) => {
                let removes: Vec<&&Record> = on_name
                    .iter()
                    .filter(|r| matches!(r.input, Input::Remove { .. }))
                    .collect();
                if removes
                    .iter()
                    .any(|r| matches!(r.answer, Answer::Unknown(_)))
                {
                    None
                } else {
                    Some(
                        removes
                            .iter()
                            .filter(|r| r.acknowledged_write())
                            .filter_map(|r| r.returned)
                            .max()
                            .unwrap_or_default(),
                    )
                }
            }
            _ => None,
        };
        let Some(bound) = bound else { continue };
        for w in on_name
            .iter()
            .filter(|r| r.acknowledged_write() && r.call > bound)
        {
            lost.push(Lost {
                name: name.into(),
                why: format!(
                    "acknowledged {:?} -> {:?} (called at {:?}) is not in the final state {:?}",
                    w.input, w.answer, w.call, last.answer
                ),
            });
        }
    }
    lost
}

/// Every (term → managers that said they became leader in it), from the managers' logs
/// (node name → log text).
pub fn leaders_by_term(logs: &BTreeMap<String, String>) -> BTreeMap<u64, BTreeSet<String>> {
    const MARK: &str = "became leader at term ";
    let mut terms: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    for (node, log) in logs {
        for line in log.lines() {
            if let Some(at) = line.find(MARK) {
                let digits: String = line[at + MARK.len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_digit())
                    .collect();
                if let Ok(term) = digits.parse() {
                    terms.entry(term).or_default().insert(node.clone());
                }
            }
        }
    }
    terms
}

/// The terms with more than one leader.
pub fn split_brains(terms: &BTreeMap<u64, BTreeSet<String>>) -> Vec<(u64, Vec<String>)> {
    terms
        .iter()
        .filter(|(_, leaders)| leaders.len() > 1)
        .map(|(term, leaders)| (*term, leaders.iter().cloned().collect()))
        .collect()
}

/// What happened to a node, and when (the run's clock); `end` is None while it lasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum FaultKind {
    Kill,
    Pause,
    /// Some link of the node cut.
    Cut,
    /// A manager cut off from a majority of the managers.
    Minority,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FaultSpan {
    pub node: String,
    pub kind: FaultKind,
    pub start: Duration,
    pub end: Option<Duration>,
}

impl FaultSpan {
    fn overlaps(&self, from: Duration, to: Duration) -> bool {
        self.start <= to && self.end.is_none_or(|e| e >= from)
    }

    fn length(&self, now: Duration) -> Duration {
        self.end.unwrap_or(now).saturating_sub(self.start)
    }
}

/// The dispatcher's grace: three heartbeat periods (`GRACE_PERIOD_MULTIPLIER_NORMAL`).
pub fn grace(period: Duration) -> Duration {
    period * 3
}

/// The longest pause that can never outlast the grace, wherever it falls between two beats:
/// (3 − 1) periods, minus the agent's jitter (± 0.5 s, at most half the period).
pub fn safe_pause(period: Duration) -> Duration {
    (period * 2).saturating_sub(Duration::from_millis(500).min(period / 2))
}

/// DOWN marks that no fault explains (see the module's notes), one line each.
pub fn false_downs(events: &[NodeEvent], spans: &[FaultSpan], period: Duration) -> Vec<String> {
    let window = grace(period) + Duration::from_secs(5);
    let mut out = Vec::new();
    for e in events.iter().filter(|e| e.state == "DOWN") {
        let from = e.at.saturating_sub(window);
        let near: Vec<&FaultSpan> = spans
            .iter()
            .filter(|s| s.node == e.node && s.overlaps(from, e.at))
            .collect();
        let explained = near.iter().any(|s| match s.kind {
            FaultKind::Kill | FaultKind::Cut | FaultKind::Minority => true,
            FaultKind::Pause => s.length(e.at) > safe_pause(period),
        });
        if explained {
            continue;
        }
        let pauses: Vec<String> = near
            .iter()
            .map(|s| format!("{:.1} s", s.length(e.at).as_secs_f64()))
            .collect();
        out.push(if pauses.is_empty() {
            format!(
                "{} marked DOWN at {:.1} s with no fault on it ({})",
                e.node,
                e.at.as_secs_f64(),
                e.message
            )
        } else {
            format!(
                "{} marked DOWN at {:.1} s after pauses of {} — shorter than {:.1} s, which                  can never outlast the grace of {:.0} s ({})",
                e.node,
                e.at.as_secs_f64(),
                pauses.join(", "),
                safe_pause(period).as_secs_f64(),
                grace(period).as_secs_f64(),
                e.message
            )
        });
    }
    out
}

/// The longest stretch without an acknowledged write during which some client had an
/// operation in flight to a manager not impaired (killed, paused, in a minority) when called,
/// within `[from, to]`, at a 10 ms resolution. `limit` bounds an unknown operation's interval.
pub fn majority_unavailability(
    records: &[Record],
    spans: &[FaultSpan],
    from: Duration,
    to: Duration,
    limit: Duration,
) -> Duration {
    const STEP_MS: u64 = 10;
    let (from_ms, to_ms) = (from.as_millis() as u64, to.as_millis() as u64);
    if to_ms <= from_ms {
        return Duration::ZERO;
    }
    let buckets = ((to_ms - from_ms) / STEP_MS + 1) as usize;
    let mut covered = vec![false; buckets];
    let mut acked = vec![false; buckets];
    let bucket = |t: Duration| -> Option<usize> {
        let ms = t.as_millis() as u64;
        (ms >= from_ms && ms <= to_ms).then(|| ((ms - from_ms) / STEP_MS) as usize)
    };
    for r in records.iter().filter(|r| r.client != FINAL_READER) {
        let impaired = spans.iter().any(|s| {
            s.node == r.node
                && matches!(
                    s.kind,
                    FaultKind::Kill | FaultKind::Pause | FaultKind::Minority
                )
                && s.overlaps(r.call, r.call)
        });
        if !impaired {
            let end = r.returned.unwrap_or(r.call + limit).min(to);
            let start = r.call.max(from);
            let mut t = start;
            while t <= end {
                if let Some(b) = bucket(t) {
                    covered[b] = true;
                }
                t += Duration::from_millis(STEP_MS);
            }
        }
        if r.acknowledged_write()
            && let Some(b) = r.returned.and_then(bucket)
        {
            acked[b] = true;
        }
    }
    let (mut run, mut longest) = (0u64, 0u64);
    for b in 0..buckets {
        if acked[b] {
            run = 0;
            continue;
        }
        if covered[b] {
            run += STEP_MS;
            longest = longest.max(run);
        }
    }
    Duration::from_millis(longest)
}

/// The name of the service created before the faults.
pub const SERVICE: &str = "faults-svc";
/// The global service of `rolling-update-agent-faults`.
pub const GLOBAL_SERVICE: &str = "faults-global";
/// Replicas of the replicated service in `rolling-update-agent-faults`.
pub const ROLLING_REPLICAS: u64 = 6;

fn shoal_exec(cluster: &DockerCluster, args: &[&str]) -> Result<String, String> {
    // The first running manager that answers; the call is forwarded to the leader.
    let mut last = String::from("no manager");
    for (i, node) in cluster.managers() {
        if !cluster.is_running(i) {
            continue;
        }
        let mut full = vec!["exec", node.container.as_str(), "/bin/shoal"];
        full.extend_from_slice(&args[..1]);
        full.extend_from_slice(&[args[1], "-s", "/var/lib/shoal/control.sock"]);
        full.extend_from_slice(&args[2..]);
        match docker(&full) {
            Ok(out) => return Ok(out),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Creates the services of `rolling-update-agent-faults`: [`SERVICE`] with
/// [`ROLLING_REPLICAS`] replicas, and [`GLOBAL_SERVICE`]; both update stop-first, the
/// replicated one two tasks at a time, 2 s apart, the global one one node at a time, 1 s
/// apart; a failed task does not stop the update (failure action `continue`), so the update
/// is expected to COMPLETE once the faults stop.
pub fn create_rolling_services(cluster: &DockerCluster) -> Result<(), String> {
    let replicas = ROLLING_REPLICAS.to_string();
    shoal_exec(
        cluster,
        &[
            "service",
            "create",
            "-d",
            "--name",
            SERVICE,
            "--replicas",
            &replicas,
            "--update-parallelism",
            "2",
            "--update-order",
            "stop-first",
            "--update-delay",
            "2s",
            "--update-failure-action",
            "continue",
            "--",
            "sleep",
            "1000000",
        ],
    )?;
    shoal_exec(
        cluster,
        &[
            "service",
            "create",
            "-d",
            "--name",
            GLOBAL_SERVICE,
            "--mode",
            "global",
            "--update-order",
            "stop-first",
            "--update-delay",
            "1s",
            "--update-failure-action",
            "continue",
            "--",
            "sleep",
            "1000000",
        ],
    )?;
    Ok(())
}

/// Starts the rolling update of both services: a new environment variable.
pub fn start_rolling_update(cluster: &DockerCluster) -> Result<(), String> {
    for service in [SERVICE, GLOBAL_SERVICE] {
        shoal_exec(
            cluster,
            &[
                "service",
                "update",
                "-d",
                "--env-add",
                "FAULTS_GENERATION=2",
                service,
            ],
        )?;
    }
    Ok(())
}

/// How far the two services of `rolling-update-agent-faults` are from done.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RollingState {
    pub replicated_update: String,
    pub global_update: String,
    /// Running tasks wanted running on the current spec version, by slot.
    pub replicated_by_slot: BTreeMap<u64, usize>,
    /// Running tasks (any version, any desired state) of the replicated service.
    pub replicated_running: usize,
    /// Running tasks wanted running on the current spec version, by node ID.
    pub global_by_node: BTreeMap<String, usize>,
    pub global_running: usize,
    pub ready_nodes: BTreeSet<String>,
}

impl RollingState {
    pub fn converged(&self) -> bool {
        self.replicated_update == "COMPLETED"
            && self.global_update == "COMPLETED"
            && self.replicated_by_slot.len() as u64 == ROLLING_REPLICAS
            && self.replicated_by_slot.values().all(|&n| n == 1)
            && self.replicated_running as u64 == ROLLING_REPLICAS
            && self.global_by_node.keys().cloned().collect::<BTreeSet<_>>() == self.ready_nodes
            && self.global_by_node.values().all(|&n| n == 1)
            && self.global_running == self.ready_nodes.len()
    }
}

/// Reads both services' state through `socket`.
pub async fn rolling_state(socket: &Path) -> Option<RollingState> {
    let mut client = control(socket, Duration::from_secs(2)).await.ok()?;
    let call = async {
        let nodes = client
            .list_nodes(shoal_api::v1::ListNodesRequest::default())
            .await
            .ok()?
            .into_inner()
            .nodes;
        let ready_nodes = nodes
            .iter()
            .filter(|n| {
                n.status
                    .as_ref()
                    .is_some_and(|s| s.state == shoal_api::v1::node_status::State::Ready as i32)
            })
            .filter_map(|n| n.meta.as_ref().map(|m| m.id.clone()))
            .collect();
        let mut state = RollingState {
            replicated_update: String::new(),
            global_update: String::new(),
            replicated_by_slot: BTreeMap::new(),
            replicated_running: 0,
            global_by_node: BTreeMap::new(),
            global_running: 0,
            ready_nodes,
        };
        for name in [SERVICE, GLOBAL_SERVICE] {
            let service = client
                .list_services(ListServicesRequest {
                    filters: Some(ListFilters {
                        names: vec![name.into()],
                        ..Default::default()
                    }),
                })
                .await
                .ok()?
                .into_inner()
                .services
                .pop()?;
            let update = service
                .update_status
                .as_ref()
                .map(|u| {
                    shoal_api::v1::update_status::UpdateState::try_from(u.state)
                        .map(|s| s.as_str_name().to_string())
                        .unwrap_or_default()
                })
                .unwrap_or_else(|| "NONE".into());
            let tasks = client
                .list_tasks(ListTasksRequest {
                    service_ids: vec![service.meta.as_ref()?.id.clone()],
                    ..Default::default()
                })
                .await
                .ok()?
                .into_inner()
                .tasks;
            let running = TaskState::Running as i32;
            for t in tasks {
                if t.status.as_ref().is_none_or(|s| s.state != running) {
                    continue;
                }
                let current = t.desired_state == running && t.spec_version == service.spec_version;
                if name == SERVICE {
                    state.replicated_running += 1;
                    if current {
                        *state.replicated_by_slot.entry(t.slot).or_default() += 1;
                    }
                } else {
                    state.global_running += 1;
                    if current {
                        *state.global_by_node.entry(t.node_id.clone()).or_default() += 1;
                    }
                }
            }
            if name == SERVICE {
                state.replicated_update = update;
            } else {
                state.global_update = update;
            }
        }
        Some(state)
    };
    tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .ok()
        .flatten()
}

/// Waits until both services of `rolling-update-agent-faults` have updated and converged.
pub async fn wait_rolling_converged(
    cluster: &DockerCluster,
    limit: Duration,
    require_update: bool,
) -> Result<Duration, String> {
    let start = Instant::now();
    let sockets: Vec<_> = cluster.managers().map(|(_, n)| n.socket()).collect();
    let mut last = None;
    let mut i = 0;
    while start.elapsed() < limit {
        let socket = &sockets[i % sockets.len()];
        i += 1;
        if let Some(mut state) = rolling_state(socket).await {
            if !require_update {
                // Before the update: the services have no update status yet.
                state.replicated_update = "COMPLETED".into();
                state.global_update = "COMPLETED".into();
            }
            if state.converged() {
                return Ok(start.elapsed());
            }
            last = Some(state);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(format!(
        "the rolling update did not complete and converge within {limit:?}; last seen: {last:?}"
    ))
}

/// The heartbeat period of the cluster's spec (the dispatcher's default when unset).
pub async fn heartbeat_period(cluster: &DockerCluster) -> Duration {
    let default = Duration::from_secs(5);
    let Some((_, node)) = cluster.managers().next() else {
        return default;
    };
    let Ok(mut client) = control(&node.socket(), Duration::from_secs(2)).await else {
        return default;
    };
    let Ok(Ok(r)) = tokio::time::timeout(
        Duration::from_secs(5),
        client.list_clusters(shoal_api::v1::ListClustersRequest::default()),
    )
    .await
    else {
        return default;
    };
    r.into_inner()
        .clusters
        .first()
        .and_then(|c| c.spec.as_ref())
        .and_then(|s| s.dispatcher.as_ref())
        .and_then(|d| d.heartbeat_period.as_ref())
        .map(|d| Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32))
        .filter(|d| !d.is_zero())
        .unwrap_or(default)
}

/// Sets the cluster spec's `raft.snapshot_interval` through the Control API; returns what the
/// spec says afterwards.
pub async fn set_snapshot_interval(cluster: &DockerCluster, interval: u64) -> Result<u64, String> {
    let (_, node) = cluster.managers().next().ok_or("no manager")?;
    let mut client = control(&node.socket(), Duration::from_secs(2)).await?;
    let cluster_object = client
        .list_clusters(shoal_api::v1::ListClustersRequest::default())
        .await
        .map_err(|s| s.message().to_string())?
        .into_inner()
        .clusters
        .pop()
        .ok_or("no cluster object")?;
    let mut spec = cluster_object.spec.clone().unwrap_or_default();
    spec.raft
        .get_or_insert_with(Default::default)
        .snapshot_interval = interval;
    let meta = cluster_object.meta.clone().unwrap_or_default();
    let updated = client
        .update_cluster(shoal_api::v1::UpdateClusterRequest {
            cluster_id: meta.id.clone(),
            cluster_version: meta.version,
            spec: Some(spec),
            ..Default::default()
        })
        .await
        .map_err(|s| s.message().to_string())?
        .into_inner()
        .cluster
        .ok_or("no cluster in the answer")?;
    Ok(updated
        .spec
        .and_then(|s| s.raft)
        .map(|r| r.snapshot_interval)
        .unwrap_or_default())
}

/// Creates the replicated service on the first manager, with the `shoal` command line of its
/// container (`-d`: do not wait).
pub fn create_service(cluster: &DockerCluster, replicas: u64) -> Result<(), String> {
    let container = &cluster.nodes[0].container;
    let replicas = replicas.to_string();
    docker(&[
        "exec",
        container,
        "/bin/shoal",
        "service",
        "create",
        "-s",
        "/var/lib/shoal/control.sock",
        "-d",
        "--name",
        SERVICE,
        "--replicas",
        &replicas,
        "--",
        "sleep",
        "1000000",
    ])
    .map(|_| ())
}

/// How far a service is from converged.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ServiceState {
    /// Tasks wanted running and running, by slot.
    pub running_by_slot: BTreeMap<u64, usize>,
    /// Tasks running (whatever is wanted), by slot.
    pub any_running_by_slot: BTreeMap<u64, usize>,
}

impl ServiceState {
    /// Exactly `replicas` tasks run, one per slot, and no slot runs two.
    pub fn converged(&self, replicas: u64) -> bool {
        self.running_by_slot.len() as u64 == replicas
            && self.running_by_slot.values().all(|&n| n == 1)
            && self.any_running_by_slot.values().all(|&n| n <= 1)
    }
}

/// Reads the service's tasks through the control socket `socket`.
pub async fn service_state(socket: &Path) -> Option<ServiceState> {
    let mut client = control(socket, Duration::from_secs(2)).await.ok()?;
    let call = async {
        let services = client
            .list_services(ListServicesRequest {
                filters: Some(ListFilters {
                    names: vec![SERVICE.into()],
                    ..Default::default()
                }),
            })
            .await
            .ok()?
            .into_inner()
            .services;
        let id = services.first()?.meta.as_ref()?.id.clone();
        let tasks = client
            .list_tasks(ListTasksRequest {
                service_ids: vec![id],
                ..Default::default()
            })
            .await
            .ok()?
            .into_inner()
            .tasks;
        let running = TaskState::Running as i32;
        let mut state = ServiceState {
            running_by_slot: BTreeMap::new(),
            any_running_by_slot: BTreeMap::new(),
        };
        for t in tasks {
            let is_running = t.status.as_ref().is_some_and(|s| s.state == running);
            if is_running {
                *state.any_running_by_slot.entry(t.slot).or_default() += 1;
                if t.desired_state == running {
                    *state.running_by_slot.entry(t.slot).or_default() += 1;
                }
            }
        }
        Some(state)
    };
    tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .ok()
        .flatten()
}

/// Waits until the service has converged (asking the managers in turn); returns how long it
/// took, or the last state seen.
pub async fn wait_converged(
    cluster: &DockerCluster,
    replicas: u64,
    limit: Duration,
) -> Result<Duration, String> {
    let start = Instant::now();
    let sockets: Vec<_> = cluster.managers().map(|(_, n)| n.socket()).collect();
    let mut last = None;
    let mut i = 0;
    while start.elapsed() < limit {
        let socket = &sockets[i % sockets.len()];
        i += 1;
        if let Some(state) = service_state(socket).await {
            if state.converged(replicas) {
                return Ok(start.elapsed());
            }
            last = Some(state);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(format!(
        "service {SERVICE} did not converge to {replicas} running tasks within {limit:?}; last \
         seen: {last:?}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Output;

    fn record(
        client: u32,
        input: Input,
        call: u64,
        returned: Option<u64>,
        answer: Answer,
    ) -> Record {
        Record {
            client,
            node: "m1".into(),
            input,
            call: Duration::from_millis(call),
            returned: returned.map(Duration::from_millis),
            answer,
        }
    }

    fn create(value: u64) -> Input {
        Input::Create {
            name: "a".into(),
            value,
        }
    }

    fn update(value: u64) -> Input {
        Input::Update {
            name: "a".into(),
            id: 1,
            read_version: 2,
            value,
        }
    }

    fn read() -> Input {
        Input::Read { name: "a".into() }
    }

    fn found(value: u64, version: u64) -> Answer {
        Answer::Ok(Output::Found {
            id: 1,
            value,
            version,
        })
    }

    #[test]
    fn a_final_read_of_an_older_value_loses_the_newer_write() {
        let records = vec![
            record(
                0,
                create(1),
                0,
                Some(10),
                Answer::Ok(Output::Created { id: 1, version: 2 }),
            ),
            record(
                0,
                update(2),
                20,
                Some(30),
                Answer::Ok(Output::Updated { version: 3 }),
            ),
            record(FINAL_READER, read(), 100, Some(110), found(1, 2)),
        ];
        let lost = lost_writes(&records);
        assert_eq!(lost.len(), 1, "{lost:?}");
        assert!(!check_linearizable(&records, Duration::from_secs(5)).holds());
    }

    #[test]
    fn overlapping_or_unknown_writes_prove_nothing() {
        let records = vec![
            record(
                0,
                create(1),
                0,
                Some(10),
                Answer::Ok(Output::Created { id: 1, version: 2 }),
            ),
            record(1, update(3), 5, None, Answer::Unknown("timed out".into())),
            record(
                0,
                update(2),
                20,
                Some(30),
                Answer::Ok(Output::Updated { version: 4 }),
            ),
            // Unknown producer of the final value: timing alone proves no loss.
            record(FINAL_READER, read(), 100, Some(110), found(3, 5)),
        ];
        assert!(lost_writes(&records).is_empty());
        // The checker, which knows versions, still sees that both updates read version 2.
        assert!(!check_linearizable(&records, Duration::from_secs(5)).holds());
    }

    #[test]
    fn a_final_value_nobody_wrote_is_lost() {
        let records = vec![record(FINAL_READER, read(), 100, Some(110), found(77, 5))];
        assert_eq!(lost_writes(&records).len(), 1);
    }

    #[test]
    fn an_acknowledged_create_after_the_last_remove_must_be_seen() {
        let remove = Input::Remove {
            name: "a".into(),
            id: 1,
        };
        let records = vec![
            record(
                0,
                create(1),
                0,
                Some(10),
                Answer::Ok(Output::Created { id: 1, version: 2 }),
            ),
            record(0, remove, 20, Some(30), Answer::Ok(Output::Removed)),
            record(
                1,
                create(2),
                40,
                Some(50),
                Answer::Ok(Output::Created { id: 2, version: 4 }),
            ),
            record(
                FINAL_READER,
                read(),
                100,
                Some(110),
                Answer::Ok(Output::NotFound),
            ),
        ];
        let lost = lost_writes(&records);
        assert_eq!(lost.len(), 1, "{lost:?}");
    }

    #[test]
    fn two_leaders_in_one_term_are_found_in_the_logs() {
        let logs: BTreeMap<String, String> = [
            (
                "m1".to_string(),
                "2026 INFO became leader at term 2 term=2 raft_id=1\nINFO became follower at term 3"
                    .to_string(),
            ),
            (
                "m2".to_string(),
                "INFO became leader at term 3 term=3 raft_id=2\nINFO became leader at term 5"
                    .to_string(),
            ),
            ("m3".to_string(), "INFO became leader at term 5 term=5".to_string()),
        ]
        .into();
        let terms = leaders_by_term(&logs);
        assert_eq!(terms.len(), 3);
        assert_eq!(
            split_brains(&terms),
            vec![(5, vec!["m2".into(), "m3".into()])]
        );
    }

    #[test]
    fn convergence_wants_one_running_task_per_slot() {
        let state = |running: &[(u64, usize)], any: &[(u64, usize)]| ServiceState {
            running_by_slot: running.iter().copied().collect(),
            any_running_by_slot: any.iter().copied().collect(),
        };
        assert!(state(&[(1, 1), (2, 1), (3, 1)], &[(1, 1), (2, 1), (3, 1)]).converged(3));
        assert!(!state(&[(1, 1), (2, 1)], &[(1, 1), (2, 1)]).converged(3));
        assert!(!state(&[(1, 2), (2, 1)], &[(1, 2), (2, 1)]).converged(3));
        // A task being replaced still runs beside its successor.
        assert!(!state(&[(1, 1), (2, 1), (3, 1)], &[(1, 2), (2, 1), (3, 1)]).converged(3));
    }
}
