//! Runs one schedule once, end to end, and reports its figures; aggregates runs.
//!
//! The phases of a run, each reported as one progress line:
//!
//! 1. **cluster**: start the managers and workers ([`DockerCluster::start`]; at least the
//!    schedule's [`Schedule::min_workers`]), then the [`Observer`] — the Watch API of nodes,
//!    services and tasks, followed from here to the end, across managers.
//! 2. **service**: create the replicated service (or, for `rolling-update-agent-faults`, six
//!    stop-first replicas and a global service) and wait until it runs; read the heartbeat
//!    period from the cluster spec; for `snapshot-catch-up`, set the cluster spec's
//!    `raft.snapshot_interval` to [`SNAPSHOT_INTERVAL`].
//! 3. **warm-up**: start the workload; let it run without faults.
//! 4. **faults**: play the schedule's timeline. Each action also records what it did to which
//!    node and when ([`FaultSpan`]: killed, paused, a link cut, a manager in a minority), which
//!    the false-DOWN check and the majority-side unavailability read.
//! 5. **heal**: remove every cut, unpause, start stopped nodes; wait for a leader. For
//!    `snapshot-catch-up`, **catch-up**: time until the cut-off follower's own store reaches the
//!    leader's version at the heal, and whether its store was replaced from a snapshot.
//! 6. **converge**: wait until the services run as desired again (timed); for the rolling
//!    update, until both updates are COMPLETED with every task on the new spec.
//! 7. **cool-down**: let the workload run on the healed cluster, then stop it.
//! 8. **final reads** and **check**: read every object, then check the invariants; for
//!    `snapshot-catch-up`, **compare** the follower's own store with the leader's first
//!    ([`crate::snapshot::local_configs`]).
//!
//! The cluster is removed at the end of the run whatever happens (its `Drop`); when an
//! invariant fails (or with `--keep-artifacts`), every node's log, the history and the run's
//! figures (JSON) are saved first, into `<artifacts>/<run>/`, and the path is reported.
//!
//! Two unavailability figures are kept, because the first overstates what a client of a
//! healthy manager sees: `unavailable_ms`, the longest time without any acknowledged write;
//! and `unavailable_majority_ms`, the same counting only time when some client had an
//! operation in flight to a manager that was not killed, paused or cut into a minority. Clients
//! pick a manager at random for every operation (they do not stick to one), so a client stuck
//! on a cut-off manager is stuck for one operation's time limit (4 s), then moves on; while all
//! clients happen to be stuck there, no write can be acknowledged, and only the first figure
//! counts that time.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;

use crate::cluster::{self, ClusterSpec, DockerCluster, Result, eventually};
use crate::invariants::{self, FaultKind, FaultSpan, Linearizable, Lost};
use crate::observe::{Observed, Observer};
use crate::schedules::{Action, Schedule, Shape, Target, groups_for, pick_follower, timeline};
use crate::snapshot;
use crate::workload::{self, Counts, Recorder, Workload, WorkloadSpec};

/// Everything a run needs besides the schedule and seed.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub cluster: ClusterSpec,
    pub workload: WorkloadSpec,
    pub warmup: Duration,
    /// How long the faults go on.
    pub faults: Duration,
    pub cooldown: Duration,
    pub replicas: u64,
    /// Where logs and histories of failed runs go.
    pub artifacts: PathBuf,
    /// Save artifacts even when every invariant holds.
    pub keep_artifacts: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            cluster: ClusterSpec::default(),
            workload: WorkloadSpec::default(),
            warmup: Duration::from_secs(2),
            faults: Duration::from_secs(20),
            cooldown: Duration::from_secs(3),
            replicas: 3,
            artifacts: std::env::temp_dir().join("shoal-faults"),
            keep_artifacts: false,
        }
    }
}

/// The figures of one run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RunFigures {
    pub schedule: &'static str,
    pub seed: u64,
    pub managers: usize,
    pub workers: usize,
    pub ops: Counts,
    /// Why operations failed or ended unknown, and how often.
    pub reasons: BTreeMap<String, usize>,
    pub linearizable: Linearizable,
    pub lost_writes: Vec<Lost>,
    /// Names the final reads could not read.
    pub unread: Vec<String>,
    /// Term → managers that became leader in it.
    pub leaders_by_term: BTreeMap<u64, Vec<String>>,
    pub split_brain_terms: Vec<u64>,
    /// Longest time with no acknowledged write, from the start of the faults to the end of
    /// the workload.
    pub unavailable_ms: u64,
    /// The same, counting only time when some client waited on a manager that was not
    /// killed, paused or in a minority ([`invariants::majority_unavailability`]).
    pub unavailable_majority_ms: u64,
    /// From the end of the faults until the service ran its replicas again.
    pub converge_ms: Option<u64>,
    pub converge_error: Option<String>,
    /// The dispatcher's heartbeat period (the grace is three of them).
    pub heartbeat_period_ms: u64,
    /// Nodes marked DOWN during the run.
    pub node_downs: usize,
    /// DOWN marks no fault explains; None where the schedule does not check it.
    pub false_downs: Option<Vec<String>>,
    /// What the watch of nodes, services and tasks saw.
    pub observed: Observed,
    /// What was done to which node, when.
    pub fault_spans: Vec<FaultSpan>,
    pub snapshot: Option<SnapshotFigures>,
    /// Steps of the timeline as they ran (instant, action, resolved target).
    pub steps: Vec<String>,
    /// Errors of fault actions (a fault that could not be applied is reported, not hidden).
    pub fault_errors: Vec<String>,
    pub artifacts: Option<String>,
    pub elapsed_ms: u64,
}

impl RunFigures {
    /// Every invariant holds.
    pub fn passed(&self) -> bool {
        self.linearizable.holds()
            && self.lost_writes.is_empty()
            && self.unread.is_empty()
            && self.split_brain_terms.is_empty()
            && self.converge_ms.is_some()
            && self.extra_failures().is_empty()
    }

    /// The failures of the invariants beyond the history's: stop-first, stuck tasks, false
    /// DOWN marks, the watch, and `snapshot-catch-up`'s catch-up.
    pub fn extra_failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        for d in &self.observed.double_running {
            out.push(format!("two running tasks in one unit: {d}"));
        }
        for s in &self.observed.stuck {
            out.push(format!("stuck: {s}"));
        }
        for e in &self.observed.errors {
            out.push(format!("watch of nodes and tasks: {e}"));
        }
        for d in self.false_downs.iter().flatten() {
            out.push(format!("false DOWN: {d}"));
        }
        if let Some(s) = &self.snapshot {
            if !s.compacted_past {
                out.push(format!(
                    "snapshot-catch-up: the leader's log was not compacted past {} ({} writes,                      leader snapshot {:?})",
                    s.follower, s.writes, s.leader_snapshot
                ));
            } else if !s.installed_snapshot {
                out.push(format!(
                    "snapshot-catch-up: {}'s store was not replaced from a snapshot",
                    s.follower
                ));
            }
            if s.catch_up_ms.is_none() {
                out.push(format!(
                    "snapshot-catch-up: {} did not catch up",
                    s.follower
                ));
            }
            if s.store_equal != Some(true) {
                out.push(format!(
                    "snapshot-catch-up: {}'s own store differs from the leader's or could not                      be compared: {:?}",
                    s.follower, s.differences
                ));
            }
        }
        out
    }

    /// What failed, one line each.
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        match &self.linearizable {
            Linearizable::Yes => {}
            Linearizable::No(why) => out.push(format!("not linearizable:\n{why}")),
            Linearizable::Unknown(why) => out.push(format!("linearizability {why}")),
        }
        for lost in &self.lost_writes {
            out.push(format!("lost write on {}: {}", lost.name, lost.why));
        }
        if !self.unread.is_empty() {
            out.push(format!("could not read after healing: {:?}", self.unread));
        }
        for term in &self.split_brain_terms {
            out.push(format!(
                "two leaders in term {term}: {:?}",
                self.leaders_by_term.get(term)
            ));
        }
        if let Some(e) = &self.converge_error {
            out.push(e.clone());
        }
        out.extend(self.extra_failures());
        out
    }
}

/// Prints one progress line (to stderr, so `--json` output stays clean).
pub fn progress(run: &str, phase: &str, detail: &str) {
    eprintln!("[{run}] {phase:<12} {detail}");
}

/// Figures of `snapshot-catch-up`.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SnapshotFigures {
    /// What the cluster spec's `raft.snapshot_interval` said after setting it to
    /// [`SNAPSHOT_INTERVAL`], and whether the leader's snapshots followed it.
    pub interval_in_spec: Option<u64>,
    pub follower: String,
    /// The follower's store version when it was cut off.
    pub follower_version: u64,
    pub writes: u64,
    pub write_ms: u64,
    /// The leader's snapshot (Raft index, store version) when the writes stopped.
    pub leader_snapshot: Option<(u64, u64)>,
    /// Whether the leader's log was compacted far enough past the follower.
    pub compacted_past: bool,
    /// Whether the follower's store was replaced from a snapshot (its watch ended with
    /// "replaced from a snapshot").
    pub installed_snapshot: bool,
    /// From the heal until the follower's store reached the leader's version at the heal.
    pub catch_up_ms: Option<u64>,
    /// The follower's configs, rebuilt from its own snapshot file and watch history, equal
    /// the leader's.
    pub store_equal: Option<bool>,
    pub differences: Vec<String>,
    /// Each manager's own store version once quiet.
    pub versions: BTreeMap<String, u64>,
}

/// The snapshot interval `snapshot-catch-up` asks for in the cluster spec.
pub const SNAPSHOT_INTERVAL: u64 = 100;

/// What the fault actions need to keep between steps.
struct FaultState {
    origin: Instant,
    spans: Vec<FaultSpan>,
    snapshot: SnapshotFigures,
    follower: Option<usize>,
    follower_watch: Option<tokio::task::JoinHandle<std::result::Result<(), tonic::Status>>>,
    /// When the cut-off follower was healed, and the leader's store version just before.
    healed: Option<(Instant, Option<u64>)>,
    /// Polls the follower from the heal on; gives how long it took to reach that version.
    catching_up: Option<tokio::task::JoinHandle<Option<Duration>>>,
}

impl FaultState {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    /// A fault on `node` from `start`: the instant before the action began, since a fault
    /// takes effect during the action (a partition's first rule, long before its last).
    fn open(&mut self, node: &str, kind: FaultKind, start: Duration) {
        self.spans.push(FaultSpan {
            node: node.into(),
            kind,
            start,
            end: None,
        });
    }

    fn close(&mut self, kinds: &[FaultKind], node: Option<&str>) {
        let now = self.now();
        for s in &mut self.spans {
            if s.end.is_none() && kinds.contains(&s.kind) && node.is_none_or(|n| n == s.node) {
                s.end = Some(now);
            }
        }
    }
}

/// Runs `schedule` once with `seed`.
pub async fn run_once(schedule: Schedule, seed: u64, options: &RunOptions) -> Result<RunFigures> {
    let started = Instant::now();
    // Unique on this machine: the process and a counter of runs within it.
    static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let run = format!("{}-{seed}-{}-{n}", schedule.name(), std::process::id());
    let tag = format!("{} seed {seed}", schedule.name());
    let mut cluster_spec = options.cluster.clone();
    cluster_spec.workers = cluster_spec.workers.max(schedule.min_workers());
    let rolling = schedule == Schedule::RollingUpdateAgentFaults;
    let replicas = if rolling {
        invariants::ROLLING_REPLICAS
    } else {
        options.replicas
    };
    progress(
        &tag,
        "cluster",
        &format!(
            "starting {} managers and {} workers (network shoal-faults-{run})",
            cluster_spec.managers, cluster_spec.workers
        ),
    );
    let mut cluster = DockerCluster::start(&run, &cluster_spec).await?;
    let managers: Vec<(String, PathBuf)> = cluster
        .managers()
        .map(|(_, n)| (n.name.clone(), n.socket()))
        .collect();
    let origin = Instant::now();
    // Every node, service and task change from here on, before the services exist.
    let observer = Observer::start(managers.clone(), origin);
    observer.wait_subscribed(Duration::from_secs(30)).await?;
    if rolling {
        progress(
            &tag,
            "service",
            &format!(
                "{replicas} replicas (stop-first, parallelism 2) and a global service of `sleep`"
            ),
        );
        invariants::create_rolling_services(&cluster)?;
        invariants::wait_rolling_converged(&cluster, Duration::from_secs(120), false).await?;
    } else {
        progress(&tag, "service", &format!("{replicas} replicas of `sleep`"));
        invariants::create_service(&cluster, replicas)?;
        invariants::wait_converged(&cluster, replicas, Duration::from_secs(90)).await?;
    }
    let period = invariants::heartbeat_period(&cluster).await;
    let mut faults = FaultState {
        origin,
        spans: Vec::new(),
        snapshot: SnapshotFigures::default(),
        follower: None,
        follower_watch: None,
        healed: None,
        catching_up: None,
    };
    if schedule == Schedule::SnapshotCatchUp {
        let set = invariants::set_snapshot_interval(&cluster, SNAPSHOT_INTERVAL).await;
        progress(
            &tag,
            "snapshots",
            &format!("cluster spec raft.snapshot_interval = {SNAPSHOT_INTERVAL}: {set:?}"),
        );
        faults.snapshot.interval_in_spec = set.ok();
    }

    let recorder = Recorder::new(origin);
    // A hard stop well after the phases, should anything below hang.
    let deadline = Instant::now()
        + options.warmup
        + options.faults
        + options.cooldown
        + Duration::from_secs(if schedule == Schedule::SnapshotCatchUp {
            480
        } else {
            180
        });
    let load = Workload::start(
        &options.workload,
        managers.clone(),
        seed,
        recorder.clone(),
        deadline,
    );
    progress(
        &tag,
        "warm-up",
        &format!(
            "{} clients, {} objects, {:?}",
            options.workload.clients, options.workload.objects, options.warmup
        ),
    );
    tokio::time::sleep(options.warmup).await;

    let faults_start = recorder.now();
    let steps = timeline(schedule, seed, options.faults);
    progress(
        &tag,
        "faults",
        &format!("{} steps over {:?}", steps.len(), options.faults),
    );
    let mut rng = StdRng::seed_from_u64(seed.wrapping_add(1));
    let mut log = Vec::new();
    let mut fault_errors = Vec::new();
    let phase = Instant::now();
    for step in &steps {
        if let Some(wait) = step.at.checked_sub(phase.elapsed()) {
            tokio::time::sleep(wait).await;
        }
        let done = apply(&mut cluster, step.action, &mut rng, &mut faults).await;
        let line = format!(
            "{:>6.1}s {:?}: {}",
            phase.elapsed().as_secs_f64(),
            step.action,
            match &done {
                Ok(what) => what.clone(),
                Err(e) => format!("FAILED: {e}"),
            }
        );
        progress(&tag, "faults", &line);
        if let Err(e) = done {
            fault_errors.push(format!("{:?}: {e}", step.action));
        }
        log.push(line);
    }

    progress(
        &tag,
        "heal",
        "removing cuts, unpausing, starting stopped nodes",
    );
    if let Err(e) = cluster.heal() {
        fault_errors.push(format!("heal: {e}"));
    }
    if let Err(e) = cluster.start_stopped() {
        fault_errors.push(format!("start: {e}"));
    }
    faults.close(
        &[
            FaultKind::Kill,
            FaultKind::Pause,
            FaultKind::Cut,
            FaultKind::Minority,
        ],
        None,
    );
    let faults_end = recorder.now();
    observer.faults_ended();
    let leader = cluster.wait_leader(Duration::from_secs(60)).await;
    progress(
        &tag,
        "heal",
        &match leader {
            Ok(l) => format!("{} leads", cluster.nodes[l].name),
            Err(ref e) => e.clone(),
        },
    );
    if schedule == Schedule::SnapshotCatchUp {
        catch_up(&mut faults, &tag).await;
    }
    progress(&tag, "converge", "waiting for the services");
    let converged = if rolling {
        invariants::wait_rolling_converged(&cluster, Duration::from_secs(180), true).await
    } else {
        invariants::wait_converged(&cluster, replicas, Duration::from_secs(120)).await
    };
    // Measured from the end of the faults, not from when this wait began.
    let converge_ms = converged
        .as_ref()
        .ok()
        .map(|_| (recorder.now() - faults_end).as_millis() as u64);
    progress(&tag, "cool-down", &format!("{:?}", options.cooldown));
    tokio::time::sleep(options.cooldown).await;
    let recorder = load.join().await?;
    let workload_end = recorder.now();

    progress(&tag, "final reads", "reading every object");
    let unread = workload::final_reads(
        &recorder,
        &managers,
        options.workload.objects,
        Duration::from_secs(60),
    )
    .await;
    if schedule == Schedule::SnapshotCatchUp {
        compare_stores(&cluster, &mut faults, &tag).await;
    }
    let observed = observer.finish().await;
    let records = recorder.records();
    let ops = workload::counts(&records);
    progress(
        &tag,
        "check",
        &format!(
            "{} operations ({} ok, {} failed, {} unknown); {} commits of {} tasks watched",
            records.len(),
            ops.ok,
            ops.failed,
            ops.unknown,
            observed.commits,
            observed.tasks
        ),
    );
    let linearizable = tokio::task::spawn_blocking({
        let records = records.clone();
        move || invariants::check_linearizable(&records, Duration::from_secs(120))
    })
    .await
    .map_err(|e| format!("checker: {e}"))?;
    let lost_writes = invariants::lost_writes(&records);
    let logs: BTreeMap<String, String> = cluster
        .manager_logs()
        .into_iter()
        .map(|(i, log)| (cluster.nodes[i].name.clone(), log))
        .collect();
    let terms = invariants::leaders_by_term(&logs);
    let split_brain_terms = invariants::split_brains(&terms)
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    let false_downs = if schedule.checks_false_down() {
        Some(invariants::false_downs(
            &observed.node_events,
            &faults.spans,
            period,
        ))
    } else {
        None
    };
    let mut figures = RunFigures {
        schedule: schedule.name(),
        seed,
        managers: cluster_spec.managers,
        workers: cluster_spec.workers,
        ops,
        reasons: workload::reasons(&records),
        linearizable,
        lost_writes,
        unread,
        leaders_by_term: terms
            .into_iter()
            .map(|(t, l)| (t, l.into_iter().collect()))
            .collect(),
        split_brain_terms,
        unavailable_ms: workload::longest_write_gap(&records, faults_start, workload_end)
            .as_millis() as u64,
        unavailable_majority_ms: invariants::majority_unavailability(
            &records,
            &faults.spans,
            faults_start,
            workload_end,
            options.workload.op_timeout,
        )
        .as_millis() as u64,
        converge_ms,
        converge_error: converged.err(),
        heartbeat_period_ms: period.as_millis() as u64,
        node_downs: observed
            .node_events
            .iter()
            .filter(|e| e.state == "DOWN")
            .count(),
        false_downs,
        observed,
        fault_spans: faults.spans.clone(),
        snapshot: (schedule == Schedule::SnapshotCatchUp).then(|| faults.snapshot.clone()),
        steps: log,
        fault_errors,
        artifacts: None,
        elapsed_ms: 0,
    };
    if !figures.passed() || options.keep_artifacts {
        let dir = options.artifacts.join(&run);
        let saved = cluster.save_logs(&dir).and_then(|()| {
            let history = serde_json::to_string_pretty(&records).map_err(|e| e.to_string())?;
            std::fs::write(dir.join("history.json"), history).map_err(|e| e.to_string())?;
            let figures = serde_json::to_string_pretty(&figures).map_err(|e| e.to_string())?;
            std::fs::write(dir.join("figures.json"), figures).map_err(|e| e.to_string())
        });
        figures.artifacts = Some(match saved {
            Ok(()) => dir.display().to_string(),
            Err(e) => format!("(not saved: {e})"),
        });
    }
    drop(cluster);
    figures.elapsed_ms = started.elapsed().as_millis() as u64;
    progress(
        &tag,
        "done",
        &format!(
            "{} in {:.0} s",
            if figures.passed() { "PASS" } else { "FAIL" },
            figures.elapsed_ms as f64 / 1e3
        ),
    );
    Ok(figures)
}

/// Which managers of `groups` are cut off from a majority of the managers.
fn minority_managers(managers: &[usize], groups: &[Vec<usize>]) -> Vec<usize> {
    let majority = managers.len() / 2 + 1;
    managers
        .iter()
        .copied()
        .filter(|&m| {
            let named = groups.iter().any(|g| g.contains(&m));
            if !named {
                return false;
            }
            let reachable = managers
                .iter()
                .filter(|&&o| o == m || groups.iter().any(|g| g.contains(&m) && g.contains(&o)))
                .count();
            reachable < majority
        })
        .collect()
}

/// Applies one action; says what it did.
async fn apply(
    cluster: &mut DockerCluster,
    action: Action,
    rng: &mut StdRng,
    state: &mut FaultState,
) -> Result<String> {
    let managers = cluster.manager_indexes();
    let workers = cluster.worker_indexes();
    let t0 = state.now();
    let leader = match action {
        Action::Kill(Target::Leader | Target::Follower)
        | Action::Pause(Target::Leader | Target::Follower)
        | Action::Partition(_)
        | Action::WriteUntilCompacted => Some(cluster.wait_leader(Duration::from_secs(15)).await?),
        _ => None,
    };
    let resolve = |target: Target, rng: &mut StdRng| match target {
        Target::Leader => leader.expect("resolved above"),
        Target::Follower => pick_follower(&managers, leader, rng),
        Target::Worker => *workers
            .choose(rng)
            .or_else(|| managers.choose(rng))
            .expect("a cluster has nodes"),
    };
    match action {
        Action::Kill(target) => {
            let node = resolve(target, rng);
            cluster.kill(node)?;
            let name = cluster.nodes[node].name.clone();
            state.close(&[FaultKind::Pause], Some(&name));
            state.open(&name, FaultKind::Kill, t0);
            Ok(format!("killed {name}"))
        }
        Action::Pause(target) => {
            let node = resolve(target, rng);
            cluster.pause(node)?;
            let name = cluster.nodes[node].name.clone();
            state.open(&name, FaultKind::Pause, t0);
            Ok(format!("paused {name}"))
        }
        Action::KillManagers => {
            for &m in &managers {
                cluster.kill(m)?;
                let name = cluster.nodes[m].name.clone();
                state.close(&[FaultKind::Pause], Some(&name));
                state.open(&name, FaultKind::Kill, t0);
            }
            Ok("killed every manager".into())
        }
        Action::StartStopped => {
            cluster.start_stopped()?;
            state.close(&[FaultKind::Kill], None);
            Ok("started every stopped node".into())
        }
        Action::Heal => {
            if state.follower.is_some() && state.healed.is_none() {
                // What the follower must reach: the leader's version when the cut ends.
                let version = match cluster.leader().await {
                    Some(l) => snapshot::local_version(&cluster.nodes[l].socket())
                        .await
                        .ok(),
                    None => None,
                };
                cluster.heal()?;
                let healed = Instant::now();
                state.healed = Some((healed, version));
                if let (Some(want), Some(f)) = (version, state.follower) {
                    let socket = cluster.nodes[f].socket();
                    state.catching_up = Some(tokio::spawn(async move {
                        // Bounded: three minutes.
                        while healed.elapsed() < Duration::from_secs(180) {
                            if snapshot::local_version(&socket)
                                .await
                                .is_ok_and(|v| v >= want)
                            {
                                return Some(healed.elapsed());
                            }
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        None
                    }));
                }
            }
            cluster.heal()?;
            state.close(
                &[FaultKind::Pause, FaultKind::Cut, FaultKind::Minority],
                None,
            );
            Ok("healed".into())
        }
        Action::StartUpdate => {
            invariants::start_rolling_update(cluster)?;
            Ok(format!(
                "rolling update of {} and {} started",
                invariants::SERVICE,
                invariants::GLOBAL_SERVICE
            ))
        }
        Action::WriteUntilCompacted => {
            let leader = leader.expect("resolved above");
            write_until_compacted(cluster, leader, state).await
        }
        Action::Partition(shape) => {
            let leader = leader.expect("resolved above");
            let groups = groups_for(shape, &managers, &workers, leader, rng);
            let cuts = cluster.partition(&groups)?;
            let mut touched: Vec<usize> = cuts.iter().flat_map(|&(a, b)| [a, b]).collect();
            touched.sort_unstable();
            touched.dedup();
            for &i in &touched {
                let name = cluster.nodes[i].name.clone();
                state.open(&name, FaultKind::Cut, t0);
            }
            for m in minority_managers(&managers, &groups) {
                let name = cluster.nodes[m].name.clone();
                state.open(&name, FaultKind::Minority, t0);
            }
            if shape == Shape::IsolatedFollower {
                follower_cut_off(cluster, groups[0][0], state).await?;
            }
            let name = |i: &usize| cluster.nodes[*i].name.clone();
            let shown: Vec<Vec<String>> = groups
                .iter()
                .map(|g| g.iter().map(name).collect())
                .collect();
            Ok(format!(
                "groups {shown:?} ({} links cut; {} led)",
                cuts.len(),
                cluster.nodes[leader].name
            ))
        }
    }
}

/// Remembers the follower cut off by `snapshot-catch-up`, its store version, and opens a watch
/// on its own store that ends only if the store is replaced from a snapshot.
async fn follower_cut_off(
    cluster: &DockerCluster,
    follower: usize,
    state: &mut FaultState,
) -> Result<()> {
    let node = &cluster.nodes[follower];
    state.follower = Some(follower);
    state.snapshot.follower = node.name.clone();
    state.snapshot.follower_version = snapshot::local_version(&node.socket()).await?;
    let channel = crate::cluster::local_channel(&node.socket(), Duration::from_secs(2)).await?;
    let mut client = shoal_api::v1::watch_client::WatchClient::new(channel);
    let mut stream = client
        .watch(shoal_api::v1::WatchRequest {
            entries: vec![shoal_api::v1::WatchEntry {
                kind: shoal_api::v1::ObjectKind::Cluster as i32,
                actions: 0,
                filters: Vec::new(),
            }],
            resume_from: 0,
            include_old_object: false,
        })
        .await
        .map_err(|s| format!("watch on {}: {}", node.name, s.message()))?
        .into_inner();
    state.follower_watch = Some(tokio::spawn(async move {
        // Bounded: the runner waits for it a limited time and then aborts it.
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return Ok(()),
                Err(status) => return Err(status),
            }
        }
    }));
    Ok(())
}

/// Writers on the leader's control socket update configs of their own (`faults-bulk-<k>`,
/// outside the workload's names) until the leader's snapshot file holds a store version far
/// enough past the cut-off follower's that the follower's log is behind the leader's first
/// kept entry (raft keeps 500 entries before a snapshot; versions grow no faster than
/// indexes), or a limit.
async fn write_until_compacted(
    cluster: &DockerCluster,
    leader: usize,
    state: &mut FaultState,
) -> Result<String> {
    const WRITERS: usize = 16;
    const MARGIN: u64 = 1_000;
    const LIMIT: Duration = Duration::from_secs(240);
    let socket = cluster.nodes[leader].socket();
    let state_dir = cluster.nodes[leader].state_dir.clone();
    let target = state.snapshot.follower_version + MARGIN;
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..WRITERS {
        let socket = socket.clone();
        let stop = stop.clone();
        let writes = writes.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = cluster::control(&socket, Duration::from_secs(2))
                .await
                .ok()?;
            let name = format!("faults-bulk-{k}");
            let spec = |n: u64| shoal_api::v1::ConfigSpec {
                annotations: Some(shoal_api::v1::Annotations {
                    name: name.clone(),
                    labels: vec![shoal_api::v1::Label {
                        key: workload::VALUE_LABEL.into(),
                        value: n.to_string(),
                    }],
                }),
                data: b"bulk".to_vec(),
                templating: None,
            };
            let created = client
                .create_config(shoal_api::v1::CreateConfigRequest {
                    spec: Some(spec(0)),
                })
                .await
                .ok()?
                .into_inner()
                .config?
                .meta?;
            let (id, mut version) = (created.id, created.version);
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) && start.elapsed() < LIMIT {
                n += 1;
                let call = client.update_config(shoal_api::v1::UpdateConfigRequest {
                    config_id: id.clone(),
                    config_version: version,
                    spec: Some(spec(n)),
                });
                match tokio::time::timeout(Duration::from_secs(5), call).await {
                    Ok(Ok(r)) => {
                        if let Some(meta) = r.into_inner().config.and_then(|c| c.meta) {
                            version = meta.version;
                        }
                        writes.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        let got = client
                            .get_config(shoal_api::v1::GetConfigRequest {
                                config_id: id.clone(),
                            })
                            .await;
                        if let Some(meta) = got.ok().and_then(|r| r.into_inner().config?.meta) {
                            version = meta.version;
                        }
                    }
                }
            }
            Some(())
        }));
    }
    let mut reached = None;
    // Bounded by LIMIT.
    while start.elapsed() < LIMIT {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Ok(Some(s)) = snapshot::read_snapshot(&state_dir) {
            reached = Some((s.index, s.store_version));
            if s.store_version > target {
                break;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
    let s = &mut state.snapshot;
    s.writes = writes.load(Ordering::Relaxed);
    s.write_ms = start.elapsed().as_millis() as u64;
    s.leader_snapshot = reached;
    s.compacted_past = reached.is_some_and(|(_, v)| v > target);
    let what = format!(
        "{} writes in {:.1} s; the leader's snapshot at (index, version) {:?}, the follower at \
         version {}",
        s.writes,
        s.write_ms as f64 / 1e3,
        reached,
        s.follower_version
    );
    if s.compacted_past {
        Ok(what)
    } else {
        Err(format!(
            "the log was not compacted past the follower: {what}"
        ))
    }
}

/// After the heal of `snapshot-catch-up`: how long the follower took, from the end of its cut,
/// to reach the leader's version at that instant, and whether its store was replaced from a
/// snapshot.
async fn catch_up(state: &mut FaultState, tag: &str) {
    if state.follower.is_none() {
        return;
    }
    let Some((_, leader_version)) = state.healed else {
        return;
    };
    if let Some(poll) = state.catching_up.take()
        && let Ok(Some(took)) = poll.await
    {
        state.snapshot.catch_up_ms = Some(took.as_millis() as u64);
    }
    if let Some(watch) = state.follower_watch.take() {
        let abort = watch.abort_handle();
        match tokio::time::timeout(Duration::from_secs(30), watch).await {
            Ok(Ok(Err(status))) => {
                state.snapshot.installed_snapshot =
                    status.code() == tonic::Code::Aborted && status.message().contains("snapshot");
            }
            Ok(_) => {}
            Err(_) => abort.abort(),
        }
    }
    progress(
        tag,
        "catch-up",
        &format!(
            "{} reached the leader's version {leader_version:?} after {:?} ms; store replaced \
             from a snapshot: {}",
            state.snapshot.follower, state.snapshot.catch_up_ms, state.snapshot.installed_snapshot
        ),
    );
}

/// Once the workload has stopped: every manager's own store version (they must agree), and the
/// cut-off follower's configs, from its own snapshot file and watch history, against the
/// leader's.
async fn compare_stores(cluster: &DockerCluster, state: &mut FaultState, tag: &str) {
    let Some(follower) = state.follower else {
        return;
    };
    // The store goes quiet once the services have converged; wait for equal versions.
    let agreed = eventually(
        "every manager at one version",
        Duration::from_secs(60),
        || {
            let sockets: Vec<(String, PathBuf)> = cluster
                .managers()
                .map(|(_, n)| (n.name.clone(), n.socket()))
                .collect();
            async move {
                let mut versions = BTreeMap::new();
                for (name, socket) in sockets {
                    versions.insert(name, snapshot::local_version(&socket).await.ok()?);
                }
                let first = *versions.values().next()?;
                versions.values().all(|&v| v == first).then_some(versions)
            }
        },
    )
    .await;
    match agreed {
        Ok(v) => state.snapshot.versions = v,
        Err(e) => state.snapshot.differences.push(e),
    }
    let node = &cluster.nodes[follower];
    let local = snapshot::local_configs(&node.state_dir, &node.socket()).await;
    let leader = async {
        let l = cluster.leader().await.ok_or("no leader")?;
        let mut client =
            cluster::control(&cluster.nodes[l].socket(), Duration::from_secs(2)).await?;
        let configs = client
            .list_configs(shoal_api::v1::ListConfigsRequest::default())
            .await
            .map_err(|s| s.message().to_string())?
            .into_inner()
            .configs;
        Ok::<_, String>(
            configs
                .into_iter()
                .filter_map(|c| {
                    let meta = c.meta?;
                    let annotations = c.spec?.annotations?;
                    let value = annotations
                        .labels
                        .iter()
                        .find(|l| l.key == workload::VALUE_LABEL)
                        .map(|l| l.value.clone())
                        .unwrap_or_default();
                    Some((
                        meta.id,
                        snapshot::ConfigView {
                            name: annotations.name,
                            version: meta.version,
                            value,
                        },
                    ))
                })
                .collect::<BTreeMap<_, _>>(),
        )
    }
    .await;
    match (local, leader) {
        (Ok((version, mine)), Ok(theirs)) => {
            let mut differences = Vec::new();
            for (id, c) in &theirs {
                if mine.get(id) != Some(c) {
                    differences.push(format!("{id}: leader {c:?}, follower {:?}", mine.get(id)));
                }
            }
            for (id, c) in &mine {
                if !theirs.contains_key(id) {
                    differences.push(format!("{id}: only on the follower: {c:?}"));
                }
            }
            progress(
                tag,
                "compare",
                &format!(
                    "{} configs on the leader, {} in {}'s own store at version {version}; {} \
                     differences",
                    theirs.len(),
                    mine.len(),
                    node.name,
                    differences.len()
                ),
            );
            state.snapshot.store_equal = Some(differences.is_empty());
            differences.truncate(5);
            state.snapshot.differences.extend(differences);
        }
        (local, leader) => {
            let why = format!(
                "could not compare: follower {:?}, leader {:?}",
                local.err(),
                leader.err()
            );
            progress(tag, "compare", &why);
            state.snapshot.differences.push(why);
        }
    }
}

/// The p-th percentile (nearest rank) of `values`, which it sorts.
pub fn percentile(values: &mut [u64], p: f64) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
    Some(values[rank.clamp(1, values.len()) - 1])
}

/// The figures of every run of one schedule.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Summary {
    pub schedule: &'static str,
    pub runs: usize,
    pub passed: usize,
    pub ops: Counts,
    pub linearizable: usize,
    pub lost_writes: usize,
    pub split_brain_terms: usize,
    pub unavailable_p50_ms: Option<u64>,
    pub unavailable_p99_ms: Option<u64>,
    pub unavailable_majority_p50_ms: Option<u64>,
    pub unavailable_majority_p99_ms: Option<u64>,
    /// Violations of the other invariants (stop-first, stuck, false DOWN, catch-up).
    pub other_violations: usize,
    pub converge_p50_ms: Option<u64>,
    pub converge_max_ms: Option<u64>,
    pub errors: usize,
}

/// Aggregates the runs of one schedule (`errors`: runs that could not complete).
pub fn summarize(schedule: &'static str, runs: &[RunFigures], errors: usize) -> Summary {
    let mut ops = Counts::default();
    for r in runs {
        ops.ok += r.ops.ok;
        ops.failed += r.ops.failed;
        ops.unknown += r.ops.unknown;
    }
    let mut unavailable: Vec<u64> = runs.iter().map(|r| r.unavailable_ms).collect();
    let mut converge: Vec<u64> = runs.iter().filter_map(|r| r.converge_ms).collect();
    let mut majority: Vec<u64> = runs.iter().map(|r| r.unavailable_majority_ms).collect();
    Summary {
        schedule,
        runs: runs.len() + errors,
        passed: runs.iter().filter(|r| r.passed()).count(),
        ops,
        linearizable: runs.iter().filter(|r| r.linearizable.holds()).count(),
        lost_writes: runs.iter().map(|r| r.lost_writes.len()).sum(),
        split_brain_terms: runs.iter().map(|r| r.split_brain_terms.len()).sum(),
        unavailable_p50_ms: percentile(&mut unavailable, 50.0),
        unavailable_p99_ms: percentile(&mut unavailable, 99.0),
        unavailable_majority_p50_ms: percentile(&mut majority, 50.0),
        unavailable_majority_p99_ms: percentile(&mut majority, 99.0),
        other_violations: runs.iter().map(|r| r.extra_failures().len()).sum(),
        converge_p50_ms: percentile(&mut converge, 50.0),
        converge_max_ms: converge.iter().copied().max(),
        errors,
    }
}

fn seconds(ms: Option<u64>) -> String {
    ms.map_or("-".into(), |ms| format!("{:.1}", ms as f64 / 1e3))
}

/// The summary table, one line per schedule.
pub fn table(summaries: &[Summary]) -> String {
    let mut out = format!(
        "{:<28} {:>4} {:>5} {:>6} {:>6} {:>7} {:>6} {:>4} {:>6} {:>5} {:>6} {:>6} {:>6} {:>6} {:>6} {:>7}\n",
        "schedule",
        "runs",
        "pass",
        "ok",
        "failed",
        "unknown",
        "linear",
        "lost",
        "2-lead",
        "other",
        "unav50",
        "unav99",
        "umaj50",
        "umaj99",
        "conv50",
        "convmax"
    );
    for s in summaries {
        out.push_str(&format!(
            "{:<28} {:>4} {:>5} {:>6} {:>6} {:>7} {:>6} {:>4} {:>6} {:>5} {:>6} {:>6} {:>6} {:>6} {:>6} {:>7}\n",
            s.schedule,
            s.runs,
            format!("{}/{}", s.passed, s.runs),
            s.ops.ok,
            s.ops.failed,
            s.ops.unknown,
            format!("{}/{}", s.linearizable, s.runs),
            s.lost_writes,
            s.split_brain_terms,
            s.other_violations,
            seconds(s.unavailable_p50_ms),
            seconds(s.unavailable_p99_ms),
            seconds(s.unavailable_majority_p50_ms),
            seconds(s.unavailable_majority_p99_ms),
            seconds(s.converge_p50_ms),
            seconds(s.converge_max_ms),
        ));
    }
    out.push_str(
        "(unav: longest time without an acknowledged write, from the first fault to the end of \
         the workload, s; umaj: the same counting only time when some client waited on a \
         manager not killed, paused or in a minority; conv: from the end of the faults until \
         the services run as desired again, s; 2-lead: terms with two leaders; other: \
         violations of stop-first, stuck tasks, false DOWN, snapshot catch-up)\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let mut v = vec![5, 1, 4, 2, 3];
        assert_eq!(percentile(&mut v, 50.0), Some(3));
        assert_eq!(percentile(&mut v, 99.0), Some(5));
        assert_eq!(percentile(&mut v, 0.0), Some(1));
        assert_eq!(percentile(&mut [], 50.0), None);
        let mut hundred: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&mut hundred, 99.0), Some(99));
    }

    fn figures(unavailable_ms: u64, lost: usize) -> RunFigures {
        RunFigures {
            schedule: "x",
            seed: 1,
            managers: 3,
            workers: 1,
            ops: Counts {
                ok: 10,
                failed: 2,
                unknown: 1,
            },
            reasons: BTreeMap::new(),
            linearizable: Linearizable::Yes,
            lost_writes: (0..lost)
                .map(|_| Lost {
                    name: "a".into(),
                    why: "test".into(),
                })
                .collect(),
            unread: vec![],
            leaders_by_term: BTreeMap::new(),
            split_brain_terms: vec![],
            unavailable_ms,
            unavailable_majority_ms: unavailable_ms / 2,
            converge_ms: Some(1_000),
            converge_error: None,
            heartbeat_period_ms: 5_000,
            node_downs: 0,
            false_downs: None,
            observed: Observed::default(),
            fault_spans: Vec::new(),
            snapshot: None,
            steps: vec![],
            fault_errors: vec![],
            artifacts: None,
            elapsed_ms: 0,
        }
    }

    #[test]
    fn a_summary_adds_runs_and_counts_failures() {
        let runs = vec![figures(1_000, 0), figures(3_000, 1), figures(2_000, 0)];
        let s = summarize("x", &runs, 1);
        assert_eq!(s.runs, 4);
        assert_eq!(s.passed, 2);
        assert_eq!(s.ops.ok, 30);
        assert_eq!(s.lost_writes, 1);
        assert_eq!(s.unavailable_p50_ms, Some(2_000));
        assert_eq!(s.unavailable_p99_ms, Some(3_000));
        assert!(table(&[s]).contains("2/4"));
    }
}
