//! Runs one schedule once, end to end, and reports its figures; aggregates runs.
//!
//! The phases of a run, each reported as one progress line:
//!
//! 1. **cluster**: start the managers and workers ([`DockerCluster::start`]).
//! 2. **service**: create the replicated service and wait until it runs.
//! 3. **warm-up**: start the workload; let it run without faults.
//! 4. **faults**: play the schedule's timeline.
//! 5. **heal**: remove every cut, unpause, start stopped nodes; wait for a leader.
//! 6. **converge**: wait until the service runs exactly its replicas again (timed).
//! 7. **cool-down**: let the workload run on the healed cluster, then stop it.
//! 8. **final reads** and **check**: read every object, then check the invariants.
//!
//! The cluster is removed at the end of the run whatever happens (its `Drop`); when an
//! invariant fails, every node's log and the history (JSON) are saved first, into
//! `<artifacts>/<run>/`, and the path is reported.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::cluster::{ClusterSpec, DockerCluster, Result};
use crate::invariants::{self, Linearizable, Lost};
use crate::schedules::{Action, Schedule, Target, groups_for, pick_follower, timeline};
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
    /// From the end of the faults until the service ran its replicas again.
    pub converge_ms: Option<u64>,
    pub converge_error: Option<String>,
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
        out
    }
}

/// Prints one progress line (to stderr, so `--json` output stays clean).
pub fn progress(run: &str, phase: &str, detail: &str) {
    eprintln!("[{run}] {phase:<12} {detail}");
}

/// Runs `schedule` once with `seed`.
pub async fn run_once(schedule: Schedule, seed: u64, options: &RunOptions) -> Result<RunFigures> {
    let started = Instant::now();
    // Unique on this machine: the process and a counter of runs within it.
    static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let run = format!("{}-{seed}-{}-{n}", schedule.name(), std::process::id());
    let tag = format!("{} seed {seed}", schedule.name());
    progress(
        &tag,
        "cluster",
        &format!(
            "starting {} managers and {} workers (network shoal-faults-{run})",
            options.cluster.managers, options.cluster.workers
        ),
    );
    let mut cluster = DockerCluster::start(&run, &options.cluster).await?;
    progress(
        &tag,
        "service",
        &format!("{} replicas of `sleep`", options.replicas),
    );
    invariants::create_service(&cluster, options.replicas)?;
    invariants::wait_converged(&cluster, options.replicas, Duration::from_secs(90)).await?;

    let managers: Vec<(String, PathBuf)> = cluster
        .managers()
        .map(|(_, n)| (n.name.clone(), n.socket()))
        .collect();
    let origin = Instant::now();
    let recorder = Recorder::new(origin);
    // A hard stop well after the phases, should anything below hang.
    let deadline =
        origin + options.warmup + options.faults + options.cooldown + Duration::from_secs(180);
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
        let done = apply(&mut cluster, step.action, &mut rng).await;
        let line = format!(
            "{:>6.1}s {:?}: {}",
            step.at.as_secs_f64(),
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
    let faults_end = recorder.now();
    let leader = cluster.wait_leader(Duration::from_secs(60)).await;
    progress(
        &tag,
        "heal",
        &match leader {
            Ok(l) => format!("{} leads", cluster.nodes[l].name),
            Err(ref e) => e.clone(),
        },
    );
    progress(&tag, "converge", "waiting for the service's replicas");
    let converged =
        invariants::wait_converged(&cluster, options.replicas, Duration::from_secs(120)).await;
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
    let records = recorder.records();
    let ops = workload::counts(&records);
    progress(
        &tag,
        "check",
        &format!(
            "{} operations ({} ok, {} failed, {} unknown)",
            records.len(),
            ops.ok,
            ops.failed,
            ops.unknown
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
    let mut figures = RunFigures {
        schedule: schedule.name(),
        seed,
        managers: options.cluster.managers,
        workers: options.cluster.workers,
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
        converge_ms,
        converge_error: converged.err(),
        steps: log,
        fault_errors,
        artifacts: None,
        elapsed_ms: 0,
    };
    if !figures.passed() || options.keep_artifacts {
        let dir = options.artifacts.join(&run);
        let saved = cluster.save_logs(&dir).and_then(|()| {
            let history = serde_json::to_string_pretty(&records).map_err(|e| e.to_string())?;
            std::fs::write(dir.join("history.json"), history).map_err(|e| e.to_string())
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

/// Applies one action; says what it did.
async fn apply(cluster: &mut DockerCluster, action: Action, rng: &mut StdRng) -> Result<String> {
    let managers = cluster.manager_indexes();
    let leader = match action {
        Action::Kill(_) | Action::Pause(_) | Action::Partition(_) => {
            Some(cluster.wait_leader(Duration::from_secs(15)).await?)
        }
        _ => None,
    };
    let resolve = |target: Target, rng: &mut StdRng| match target {
        Target::Leader => leader.expect("resolved above"),
        Target::Follower => pick_follower(&managers, leader, rng),
    };
    match action {
        Action::Kill(target) => {
            let node = resolve(target, rng);
            cluster.kill(node)?;
            Ok(format!("killed {}", cluster.nodes[node].name))
        }
        Action::Pause(target) => {
            let node = resolve(target, rng);
            cluster.pause(node)?;
            Ok(format!("paused {}", cluster.nodes[node].name))
        }
        Action::KillManagers => {
            for &m in &managers {
                cluster.kill(m)?;
            }
            Ok("killed every manager".into())
        }
        Action::StartStopped => {
            cluster.start_stopped()?;
            Ok("started every stopped node".into())
        }
        Action::Heal => {
            cluster.heal()?;
            Ok("healed".into())
        }
        Action::Partition(shape) => {
            let workers = cluster.worker_indexes();
            let leader = leader.expect("resolved above");
            let groups = groups_for(shape, &managers, &workers, leader, rng);
            let cuts = cluster.partition(&groups)?;
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
        "{:<20} {:>5} {:>7} {:>7} {:>7} {:>7} {:>9} {:>5} {:>6} {:>7} {:>7} {:>7} {:>7}\n",
        "schedule",
        "runs",
        "pass",
        "ops ok",
        "failed",
        "unknown",
        "lineariz.",
        "lost",
        "2-lead",
        "unav50",
        "unav99",
        "conv50",
        "convmax"
    );
    for s in summaries {
        out.push_str(&format!(
            "{:<20} {:>5} {:>7} {:>7} {:>7} {:>7} {:>9} {:>5} {:>6} {:>7} {:>7} {:>7} {:>7}\n",
            s.schedule,
            s.runs,
            format!("{}/{}", s.passed, s.runs),
            s.ops.ok,
            s.ops.failed,
            s.ops.unknown,
            format!("{}/{}", s.linearizable, s.runs),
            s.lost_writes,
            s.split_brain_terms,
            seconds(s.unavailable_p50_ms),
            seconds(s.unavailable_p99_ms),
            seconds(s.converge_p50_ms),
            seconds(s.converge_max_ms),
        ));
    }
    out.push_str(
        "(unav: longest time without an acknowledged write, from the first fault to the end of \
         the workload, s; conv: from the end of the faults until the service runs its replicas \
         again, s; 2-lead: terms with two leaders)\n",
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
            converge_ms: Some(1_000),
            converge_error: None,
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
