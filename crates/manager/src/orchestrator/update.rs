//! The update supervisor's decisions: how fast a rolling update (or a rollback) may go, when
//! it has failed, and what its `UpdateStatus` says.
//!
//! Pure and synchronous. The replicated and global reconcilers find the *units* (slots, or
//! nodes for global services) whose task runs an older spec version, and ask
//! [`supervise`] how many of them may be replaced now. Everything it decides from is in the
//! store — the service's spec, spec version and `UpdateStatus`, its tasks' spec versions,
//! states and status times — so a new leader resumes an update where the old one left it.
//!
//! ## The rules
//!
//! The update's tasks are those of the current task spec created since the update started
//! (a task of the same spec from before — the service was rolled back to a spec it ran
//! before — is up to date, but its past failures are not the update's).
//!
//! - **Start**: when some unit is outdated and no update is in progress (no status, or the
//!   last one completed), the status becomes UPDATING, "update in progress". A PAUSED
//!   update (or ROLLBACK_PAUSED rollback) replaces nothing more until the user updates the
//!   service again (or rolls it back); the reconcilers still heal it (restarts, lost
//!   nodes).
//! - **Pace**: a unit is *in flight* while its new task is not RUNNING yet, or has run for
//!   less than the update `delay`. At most `parallelism` units are in flight (0: all at
//!   once), so each replacement waits for its predecessor to run, then for the delay —
//!   SwarmKit's pool of `parallelism` workers, each sleeping `delay` after its task runs.
//! - **Failures**: an update's task that ended on its own (FAILED, REJECTED, or COMPLETE — a
//!   service is not meant to finish) while the update is in progress is a failure. When
//!   failures exceed `max_failure_ratio` of the units (with the default 0, the first one
//!   does), the failure action runs: `pause` (the default) sets PAUSED, `continue` goes on,
//!   `rollback` swaps the spec and the previous spec and sets ROLLBACK_STARTED, each with a
//!   message naming the task. A failing rollback pauses (ROLLBACK_PAUSED) or continues, as
//!   the service's `rollback` config says.
//! - **Monitor**: once every unit runs the current version, the update completes when its
//!   last task has run for `monitor` (5 s by default) without failures exceeding the ratio:
//!   COMPLETED ("update completed") or ROLLBACK_COMPLETED ("rollback completed").
//!
//! While an update or rollback is in progress or waiting out a delay or monitor period,
//! [`Supervision::wake`] says when to look again.
//!
//! Departures from SwarmKit: failures are counted over the whole update rather than per
//! task within its monitor window after it started (the store keeps when a task ended, not
//! how long it ran before), which can only make the failure action run sooner. Status times
//! are the agents' (`TaskStatus.timestamp`), so a node's clock skew shifts its delay and
//! monitor by as much.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use shoal_api::task_state::is_terminal;
use shoal_api::v1::{Service, Task, TaskState, UpdateStatus, update_config, update_status};

use super::replicated::{desired, id, state as task_state};

use update_config::{FailureAction, UpdateOrder};
use update_status::UpdateState;

/// How an update (or rollback) proceeds: the service's config, or docker's defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// Units in flight at once; `usize::MAX` for all.
    pub parallelism: usize,
    pub delay: Duration,
    pub monitor: Duration,
    pub failure_action: FailureAction,
    pub max_failure_ratio: f32,
    pub order: UpdateOrder,
}

/// The state of the service's update, `Unknown` when it has none.
pub fn update_state(service: &Service) -> UpdateState {
    service
        .update_status
        .as_ref()
        .and_then(|s| UpdateState::try_from(s.state).ok())
        .unwrap_or(UpdateState::Unknown)
}

fn rolling_back(state: UpdateState) -> bool {
    matches!(
        state,
        UpdateState::RollbackStarted | UpdateState::RollbackPaused | UpdateState::RollbackCompleted
    )
}

/// The update policy in force: the `rollback` config while rolling back, else `update`.
pub fn policy(service: &Service) -> Policy {
    let spec = service.spec.as_ref();
    let config = if rolling_back(update_state(service)) {
        spec.and_then(|s| s.rollback.as_ref())
    } else {
        spec.and_then(|s| s.update.as_ref())
    };
    let duration = |d: Option<&prost_types::Duration>, default| {
        d.map(shoal_api::validation::to_std_duration)
            .unwrap_or(default)
    };
    match config {
        None => Policy {
            parallelism: shoal_api::defaults::UPDATE_PARALLELISM as usize,
            delay: shoal_api::defaults::UPDATE_DELAY,
            monitor: shoal_api::defaults::UPDATE_MONITOR,
            failure_action: FailureAction::Pause,
            max_failure_ratio: shoal_api::defaults::UPDATE_MAX_FAILURE_RATIO,
            order: UpdateOrder::StopFirst,
        },
        Some(c) => Policy {
            parallelism: match c.parallelism {
                0 => usize::MAX,
                n => usize::try_from(n).unwrap_or(usize::MAX),
            },
            delay: duration(c.delay.as_ref(), shoal_api::defaults::UPDATE_DELAY),
            monitor: duration(c.monitor.as_ref(), shoal_api::defaults::UPDATE_MONITOR),
            failure_action: FailureAction::try_from(c.failure_action)
                .unwrap_or(FailureAction::Pause),
            max_failure_ratio: c.max_failure_ratio.clamp(0.0, 1.0),
            order: UpdateOrder::try_from(c.order).unwrap_or(UpdateOrder::StopFirst),
        },
    }
}

/// What the supervisor decided for one service.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Supervision {
    /// How many outdated units may be replaced now.
    pub allowed: usize,
    /// The new `UpdateStatus`, when it changes.
    pub status: Option<UpdateStatus>,
    /// Roll the service back to its previous spec (with `status`).
    pub rollback: bool,
    /// Look again after this long (a delay or monitor period runs).
    pub wake: Option<Duration>,
}

fn since(at: Option<&prost_types::Timestamp>, now: SystemTime) -> Option<Duration> {
    let at = SystemTime::try_from(*at?).ok()?;
    Some(now.duration_since(at).unwrap_or(Duration::ZERO))
}

fn status(
    state: UpdateState,
    started_at: Option<prost_types::Timestamp>,
    message: String,
    now: SystemTime,
) -> UpdateStatus {
    let done = matches!(
        state,
        UpdateState::Completed | UpdateState::RollbackCompleted
    );
    UpdateStatus {
        state: state as i32,
        started_at: started_at.or_else(|| Some(now.into())),
        completed_at: done.then(|| now.into()),
        message,
    }
}

/// A service's units (slots, or nodes for a global service), as its reconciler found them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Units {
    /// All of them: replicas, or nodes with a task.
    pub total: usize,
    /// Units whose task runs an older spec (and that have no newer task).
    pub outdated: usize,
    /// Units with no live task: one is being created, or waits out its restart delay.
    pub missing: usize,
}

/// Decides the pace and status of `service`'s update. `tasks` are all of the service's
/// tasks.
pub fn supervise(
    service: &Service,
    tasks: &[Arc<Task>],
    units: Units,
    now: SystemTime,
) -> Supervision {
    let Units {
        total: units,
        outdated,
        missing,
    } = units;
    let mut state = update_state(service);
    let started_at = service.update_status.as_ref().and_then(|s| s.started_at);
    let mut out = Supervision::default();
    let in_progress =
        |s: UpdateState| matches!(s, UpdateState::Updating | UpdateState::RollbackStarted);
    let mut started_at_now = started_at;
    if outdated > 0 && !in_progress(state) {
        if matches!(state, UpdateState::Paused | UpdateState::RollbackPaused) {
            return out;
        }
        state = UpdateState::Updating;
        started_at_now = Some(now.into());
        out.status = Some(status(
            state,
            started_at_now,
            "update in progress".into(),
            now,
        ));
    }
    if !in_progress(state) {
        return out;
    }
    let policy = policy(service);
    // The tasks of the current spec, and those of them the update created.
    let ours = || tasks.iter().filter(|t| !is_outdated(t, service));
    let since_start = |t: &&Arc<Task>| {
        let created = t.meta.as_ref().and_then(|m| m.created_at.as_ref());
        match (created, started_at_now.as_ref()) {
            (Some(c), Some(s)) => (c.seconds, c.nanos) >= (s.seconds, s.nanos),
            _ => true,
        }
    };

    // Failures of the update's tasks.
    let failed: Vec<&Arc<Task>> = ours()
        .filter(since_start)
        .filter(|t| {
            matches!(
                task_state(t),
                TaskState::Failed | TaskState::Rejected | TaskState::Complete
            )
        })
        .collect();
    if let Some(first) = failed.first() {
        let ratio = failed.len() as f32 / units.max(1) as f32;
        if ratio > policy.max_failure_ratio {
            let what = if state == UpdateState::Updating {
                "update"
            } else {
                "rollback"
            };
            let cause = format!("due to failure or early termination of task {}", id(first));
            match (state, policy.failure_action) {
                (_, FailureAction::Continue) => {}
                (UpdateState::Updating, FailureAction::Rollback)
                    if service.previous_spec.is_some() =>
                {
                    out.rollback = true;
                    out.status = Some(status(
                        UpdateState::RollbackStarted,
                        Some(now.into()),
                        format!("update rolled back {cause}"),
                        now,
                    ));
                    return out;
                }
                _ => {
                    let paused = if state == UpdateState::Updating {
                        UpdateState::Paused
                    } else {
                        UpdateState::RollbackPaused
                    };
                    out.status = Some(status(
                        paused,
                        started_at_now,
                        format!("{what} paused {cause}"),
                        now,
                    ));
                    return out;
                }
            }
        }
    }

    // Pace: units whose new task does not run yet, or has run for less than the delay.
    let mut in_flight = 0usize;
    let mut wake: Option<Duration> = None;
    let mut last_running: Option<Duration> = None;
    for task in ours() {
        if desired(task) > TaskState::Running || is_terminal(task_state(task)) {
            continue;
        }
        if task_state(task) != TaskState::Running {
            in_flight += 1;
            continue;
        }
        let ran = since(task.status.as_ref().and_then(|s| s.timestamp.as_ref()), now)
            .unwrap_or(Duration::MAX);
        last_running = Some(last_running.map_or(ran, |l: Duration| l.min(ran)));
        if ran < policy.delay {
            in_flight += 1;
            wake = Some(wake.map_or(policy.delay - ran, |w: Duration| w.min(policy.delay - ran)));
        }
    }
    out.allowed = policy.parallelism.saturating_sub(in_flight);

    // Completion: every unit runs the current version, the last one for `monitor`.
    if outdated == 0 && in_flight == 0 && missing == 0 {
        let ran = last_running.unwrap_or(Duration::MAX);
        if ran >= policy.monitor {
            let (done, message) = if state == UpdateState::Updating {
                (UpdateState::Completed, "update completed")
            } else {
                (UpdateState::RollbackCompleted, "rollback completed")
            };
            out.status = Some(status(done, started_at_now, message.into(), now));
            return out;
        }
        let left = policy.monitor - ran;
        wake = Some(wake.map_or(left, |w| w.min(left)));
    }
    out.wake = wake;
    out
}

/// Whether `task` runs an older spec than `service`'s: an earlier spec version whose task
/// spec differs from the current one. A change that leaves the task spec as it was (a new
/// replica count, a new update config) raises the spec version but redeploys nothing, as in
/// docker; `--force` changes the task spec (`force_update`), so it redeploys everything.
pub fn is_outdated(task: &Task, service: &Service) -> bool {
    task.spec_version < service.spec_version
        && task.spec.as_ref() != service.spec.as_ref().and_then(|s| s.task.as_ref())
}

/// Sorts out the live tasks of one unit (`unit` names it in messages: "slot 3", "node
/// abc"): the tasks to stop, with why — all but the newest up-to-date task, and the old
/// tasks once that one runs (at once under stop-first) — and, when the unit has no
/// up-to-date task, its outdated task for the update to replace.
pub fn sort_unit<'a>(
    service: &Service,
    mut held: Vec<&'a Arc<Task>>,
    unit: &str,
    order: UpdateOrder,
) -> (Vec<(String, String)>, Option<&'a Arc<Task>>) {
    // Oldest first.
    held.sort_by_key(|t| {
        t.meta
            .as_ref()
            .and_then(|m| m.created_at.as_ref())
            .map(|c| (c.seconds, c.nanos))
    });
    let (up_to_date, old): (Vec<&Arc<Task>>, Vec<&Arc<Task>>) =
        held.into_iter().partition(|t| !is_outdated(t, service));
    let mut stops = Vec::new();
    let (newest, extra, outdated) = match up_to_date.split_last() {
        Some((newest, extra)) => {
            // Start-first keeps the old task until the new one runs.
            if task_state(newest) == TaskState::Running || order == UpdateOrder::StopFirst {
                for task in &old {
                    stops.push((
                        id(task).to_string(),
                        format!(
                            "replaced by {} (spec version {})",
                            id(newest),
                            service.spec_version
                        ),
                    ));
                }
            }
            (*newest, extra, None)
        }
        None => match old.split_last() {
            Some((newest, extra)) => (*newest, extra, Some(*newest)),
            None => return (stops, None),
        },
    };
    for task in extra {
        stops.push((
            id(task).to_string(),
            format!("{unit} has a newer task ({})", id(newest)),
        ));
    }
    (stops, outdated)
}

/// `service` rolled back to its previous spec, with `status`: the spec and the previous spec
/// swapped and a new spec version, so that every task is replaced by the rollback's pace.
/// `None` when there is no previous spec.
pub fn rolled_back(service: &Service, status: UpdateStatus) -> Option<Service> {
    let previous = service.previous_spec.as_deref()?.clone();
    let mut next = service.clone();
    next.previous_spec = service.spec.clone().map(Box::new);
    next.previous_spec_version = service.spec_version;
    next.spec = Some(previous);
    next.spec_version = service.spec_version + 1;
    next.update_status = Some(status);
    Some(next)
}

#[cfg(test)]
mod tests;
