//! The job orchestrator's decisions: tasks that run to completion, as many as the job asks,
//! and no more.
//!
//! Pure and synchronous, like [`super::replicated`]. A job runs in *iterations*: creating it
//! starts iteration 0, and every update of its spec starts the next one
//! (`Service.job_status.job_iteration`); tasks carry the iteration they belong to, and tasks
//! of an older iteration that still run are told to stop.
//!
//! - **Replicated job** (`max_concurrent`, `total_completions`, each defaulting to the other,
//!   1 when both are 0): slots `0..total_completions`; a slot is *done* when a task of this
//!   iteration COMPLETEd in it, *busy* while one of its tasks is alive; new tasks go to the
//!   free slots, lowest first, while fewer than `max_concurrent` are busy.
//! - **Global job**: one task of this iteration per READY, ACTIVE node (where the scheduler's
//!   filters say it fits, checked by the runner); a node whose task completed gets no other.
//! - A task that fails is restarted as the restart policy says — `on-failure` when the spec
//!   names none, as docker does for jobs — by stopping it and freeing its slot (or node) for a
//!   new task after the restart delay. A completed task is never restarted.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use shoal_api::task_state::is_terminal;
use shoal_api::v1::{Node, Service, Task, TaskState, restart_policy, service_spec};

use super::global;
use super::replicated::{self, DEFAULT_RESTART_DELAY, desired, id, node_unfit, state};

/// The job iteration tasks are created for now.
pub fn iteration(service: &Service) -> u64 {
    service.job_status.as_ref().map_or(0, |j| j.job_iteration)
}

fn restart(service: &Service) -> (restart_policy::Condition, Duration) {
    let policy = service
        .spec
        .as_ref()
        .and_then(|s| s.task.as_ref())
        .and_then(|t| t.restart.as_ref());
    match policy {
        None => (restart_policy::Condition::OnFailure, DEFAULT_RESTART_DELAY),
        Some(p) => (
            restart_policy::Condition::try_from(p.condition)
                .unwrap_or(restart_policy::Condition::OnFailure),
            p.delay
                .as_ref()
                .map(shoal_api::validation::to_std_duration)
                .unwrap_or(DEFAULT_RESTART_DELAY),
        ),
    }
}

/// What happened to the job's tasks of the current iteration: stops for tasks that must
/// stop, and per slot (or node) whether it is done, busy, or waiting out a restart delay.
struct Survey<K> {
    stops: Vec<replicated::Change>,
    done: BTreeSet<K>,
    busy: BTreeSet<K>,
    delays: HashMap<K, Duration>,
}

fn survey<K: Ord + std::hash::Hash + Clone>(
    service: &Service,
    tasks: &[Arc<Task>],
    nodes: &HashMap<String, Arc<Node>>,
    key: impl Fn(&Task) -> K,
) -> Survey<K> {
    let current = iteration(service);
    let (condition, delay) = restart(service);
    let mut survey = Survey {
        stops: Vec::new(),
        done: BTreeSet::new(),
        busy: BTreeSet::new(),
        delays: HashMap::new(),
    };
    let stop = |task: &Task, reason: String| replicated::Change::Shutdown {
        task_id: id(task).to_string(),
        reason,
    };
    for task in tasks {
        if desired(task) > TaskState::Running {
            continue;
        }
        let observed = state(task);
        if task.job_iteration != current {
            if !is_terminal(observed) {
                survey.stops.push(stop(
                    task,
                    format!("the job was re-run (iteration {current})"),
                ));
            }
            continue;
        }
        let k = key(task);
        if observed == TaskState::Complete {
            survey.done.insert(k);
            continue;
        }
        if let Some(why) = node_unfit(&task.node_id, nodes)
            && !is_terminal(observed)
        {
            survey.stops.push(stop(task, why));
            continue;
        }
        if !is_terminal(observed) {
            survey.busy.insert(k);
            continue;
        }
        // Failed (or rejected): restarted as the policy says, or left as it is.
        if condition == restart_policy::Condition::None {
            survey.busy.insert(k);
            continue;
        }
        survey.stops.push(stop(
            task,
            format!(
                "task ended ({}); restarting",
                shoal_api::task_state::name(observed)
            ),
        ));
        survey.delays.insert(k, delay);
    }
    survey
}

/// The changes a replicated job needs (for other modes, none).
pub fn reconcile_replicated(
    service: &Service,
    tasks: &[Arc<Task>],
    nodes: &HashMap<String, Arc<Node>>,
) -> Vec<replicated::Change> {
    let Some(service_spec::Mode::ReplicatedJob(job)) =
        service.spec.as_ref().and_then(|s| s.mode.as_ref())
    else {
        return Vec::new();
    };
    let (max_concurrent, total) = match (job.max_concurrent, job.total_completions) {
        (0, 0) => (1, 1),
        (0, t) => (t, t),
        (m, 0) => (m, m),
        (m, t) => (m, t),
    };
    let survey = survey(service, tasks, nodes, |t| t.slot);
    let mut changes = survey.stops;
    let room = max_concurrent.saturating_sub(survey.busy.len() as u64);
    let free = (0..total)
        .filter(|slot| !survey.done.contains(slot) && !survey.busy.contains(slot))
        .take(usize::try_from(room).unwrap_or(usize::MAX));
    for slot in free {
        changes.push(replicated::Change::Create {
            slot,
            delay: survey.delays.get(&slot).copied().unwrap_or(Duration::ZERO),
            attempts: Vec::new(),
        });
    }
    changes
}

/// The changes a global job needs (for other modes, none).
pub fn reconcile_global(
    service: &Service,
    tasks: &[Arc<Task>],
    nodes: &HashMap<String, Arc<Node>>,
) -> Vec<global::Change> {
    if !matches!(
        service.spec.as_ref().and_then(|s| s.mode.as_ref()),
        Some(service_spec::Mode::GlobalJob(_))
    ) {
        return Vec::new();
    }
    let survey = survey(service, tasks, nodes, |t| t.node_id.clone());
    let mut changes: Vec<global::Change> = survey
        .stops
        .into_iter()
        .filter_map(|c| match c {
            replicated::Change::Shutdown { task_id, reason } => {
                Some(global::Change::Shutdown { task_id, reason })
            }
            replicated::Change::Create { .. } => None,
        })
        .collect();
    let mut eligible: Vec<&String> = nodes
        .iter()
        .filter(|(_, n)| global::takes_new_tasks(n))
        .map(|(id, _)| id)
        .collect();
    eligible.sort();
    for node_id in eligible {
        if survey.done.contains(node_id) || survey.busy.contains(node_id) {
            continue;
        }
        changes.push(global::Change::Create {
            node_id: node_id.clone(),
            delay: survey
                .delays
                .get(node_id)
                .copied()
                .unwrap_or(Duration::ZERO),
            attempts: Vec::new(),
        });
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::v1::{JobStatus, Meta, ReplicatedJob, ServiceSpec, TaskStatus};

    fn job(max_concurrent: u64, total: u64, iteration: u64) -> Service {
        Service {
            spec: Some(ServiceSpec {
                mode: Some(service_spec::Mode::ReplicatedJob(ReplicatedJob {
                    max_concurrent,
                    total_completions: total,
                })),
                ..Default::default()
            }),
            job_status: Some(JobStatus {
                job_iteration: iteration,
                last_execution: None,
            }),
            ..Default::default()
        }
    }

    fn task(id: &str, slot: u64, iteration: u64, state: TaskState) -> Arc<Task> {
        Arc::new(Task {
            meta: Some(Meta {
                id: id.into(),
                ..Default::default()
            }),
            slot,
            job_iteration: iteration,
            desired_state: TaskState::Running as i32,
            status: Some(TaskStatus {
                state: state as i32,
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    fn created(changes: &[replicated::Change]) -> Vec<u64> {
        changes
            .iter()
            .filter_map(|c| match c {
                replicated::Change::Create { slot, .. } => Some(*slot),
                _ => None,
            })
            .collect()
    }

    fn stopped(changes: &[replicated::Change]) -> Vec<&str> {
        changes
            .iter()
            .filter_map(|c| match c {
                replicated::Change::Shutdown { task_id, .. } => Some(task_id.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_replicated_job_runs_at_most_max_concurrent_until_total_completions() {
        let nodes = HashMap::new();
        assert_eq!(
            created(&reconcile_replicated(&job(2, 5, 0), &[], &nodes)),
            [0, 1]
        );
        let tasks = [
            task("a", 0, 0, TaskState::Complete),
            task("b", 1, 0, TaskState::Running),
        ];
        assert_eq!(
            created(&reconcile_replicated(&job(2, 5, 0), &tasks, &nodes)),
            [2]
        );
        let all_done: Vec<_> = (0..5)
            .map(|s| task(&format!("t{s}"), s, 0, TaskState::Complete))
            .collect();
        assert!(reconcile_replicated(&job(2, 5, 0), &all_done, &nodes).is_empty());
    }

    #[test]
    fn failures_restart_completions_do_not_and_a_new_iteration_starts_over() {
        let nodes = HashMap::new();
        let tasks = [
            task("ok", 0, 0, TaskState::Complete),
            task("bad", 1, 0, TaskState::Failed),
        ];
        let changes = reconcile_replicated(&job(2, 2, 0), &tasks, &nodes);
        assert_eq!(stopped(&changes), ["bad"]);
        assert_eq!(created(&changes), [1]);
        // Re-run: iteration 1; the old iteration's live task stops, every slot runs again.
        let tasks = [
            task("ok", 0, 0, TaskState::Complete),
            task("slow", 1, 0, TaskState::Running),
        ];
        let changes = reconcile_replicated(&job(2, 2, 1), &tasks, &nodes);
        assert_eq!(stopped(&changes), ["slow"]);
        assert_eq!(created(&changes), [0, 1]);
    }
}
