//! The replicated orchestrator's decisions: which tasks a replicated service needs created,
//! and which of its tasks must stop, given the service, its tasks and the nodes.
//!
//! Pure and synchronous: the runner ([`super::Orchestrator`]) feeds it what the store holds
//! and applies the [`Change`]s in a transaction. Level-triggered: it looks at the whole state
//! of one service every time, so a new leader converges from whatever it finds.
//!
//! The rules, per slot `1..=replicas`:
//! - A task *holds* its slot while its desired state is RUNNING (or READY: waiting out a
//!   restart delay) and it is *alive*: not in a terminal state, and not on a node that is
//!   gone, DOWN, or drained.
//! - A task on a node that is gone, DOWN or drained is told to stop (desired SHUTDOWN) and
//!   replaced at once by a new task in the same slot.
//! - A task that ended is restarted as the restart policy says — condition `any` by default,
//!   `on-failure` when it did not COMPLETE, never with `none` — by stopping it and creating a
//!   new task in its slot, which may start once the restart delay has passed (5 s by
//!   default). A task not restarted keeps its slot as it is (desired RUNNING, observed FAILED
//!   or COMPLETE), as in SwarmKit.
//! - A slot with no holder and no task kept from restarting gets a new task.
//! - Slots above `replicas` lose their tasks (scale down removes the highest slots).
//! - At most one holder per slot: extra holders (after a leader change raced a replacement)
//!   stop, keeping the newest.
//!
//! - **Rolling update**: a slot whose task runs an older spec version (the service was
//!   updated, or `--force`d) gets a new task; at most `parallelism` slots are in flight at
//!   once (1 by default, 0 = all), a slot being in flight until its new task RUNS. Stop-first
//!   (the default) stops the old task as the new one is created; start-first keeps it until
//!   the new one runs.
//!
//! Not here yet (later parts of the orchestration issue): the update's delay, monitor period,
//! failure action and UpdateStatus, rollback, restart `max_attempts` / `window`, jobs, the
//! task reaper.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use shoal_api::task_state::is_terminal;
use shoal_api::v1::{
    Node, Service, Task, TaskState, node_spec, node_status, restart_policy, service_spec,
    update_config,
};

/// The restart delay when the service's policy gives none.
pub const DEFAULT_RESTART_DELAY: Duration = Duration::from_secs(5);

/// What the runner must do for a service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Create a task for `slot`; it may start after `delay` (zero: at once).
    Create { slot: u64, delay: Duration },
    /// Tell this task to stop (desired state SHUTDOWN), saying why.
    Shutdown { task_id: String, reason: String },
}

pub(super) fn state(task: &Task) -> TaskState {
    task.status
        .as_ref()
        .and_then(|s| TaskState::try_from(s.state).ok())
        .unwrap_or(TaskState::New)
}

pub(super) fn desired(task: &Task) -> TaskState {
    TaskState::try_from(task.desired_state).unwrap_or(TaskState::New)
}

pub(super) fn id(task: &Task) -> &str {
    task.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("")
}

/// Why a task on `node_id` cannot run there any more, if it cannot.
pub(super) fn node_unfit(node_id: &str, nodes: &HashMap<String, Arc<Node>>) -> Option<String> {
    if node_id.is_empty() {
        return None;
    }
    let Some(node) = nodes.get(node_id) else {
        return Some(format!("node {node_id} was removed"));
    };
    let status = node.status.as_ref().map(|s| s.state).unwrap_or_default();
    if status == node_status::State::Down as i32 {
        return Some(format!("node {node_id} is down"));
    }
    let availability = node
        .spec
        .as_ref()
        .map(|s| s.availability)
        .unwrap_or_default();
    if availability == node_spec::Availability::Drain as i32 {
        return Some(format!("node {node_id} is drained"));
    }
    None
}

/// The restart condition and delay of the service's tasks.
pub(super) fn restart_policy(service: &Service) -> (restart_policy::Condition, Duration) {
    let policy = service
        .spec
        .as_ref()
        .and_then(|s| s.task.as_ref())
        .and_then(|t| t.restart.as_ref());
    match policy {
        None => (restart_policy::Condition::Any, DEFAULT_RESTART_DELAY),
        Some(p) => (
            restart_policy::Condition::try_from(p.condition)
                .unwrap_or(restart_policy::Condition::Any),
            p.delay
                .as_ref()
                .map(shoal_api::validation::to_std_duration)
                .unwrap_or(DEFAULT_RESTART_DELAY),
        ),
    }
}

/// How many slots are updated at once (`usize::MAX` for all) and in which order: the
/// service's update config, else docker's defaults (one at a time, stop first).
fn update_policy(service: &Service) -> (usize, update_config::UpdateOrder) {
    match service.spec.as_ref().and_then(|s| s.update.as_ref()) {
        None => (1, update_config::UpdateOrder::StopFirst),
        Some(config) => (
            match config.parallelism {
                0 => usize::MAX,
                n => usize::try_from(n).unwrap_or(usize::MAX),
            },
            update_config::UpdateOrder::try_from(config.order)
                .unwrap_or(update_config::UpdateOrder::StopFirst),
        ),
    }
}

/// The replica count of a replicated service, `None` for other modes.
pub fn replicas(service: &Service) -> Option<u64> {
    match service.spec.as_ref().and_then(|s| s.mode.as_ref()) {
        Some(service_spec::Mode::Replicated(r)) => Some(r.replicas),
        // A spec without a mode is replicated with one replica (docker's default).
        None => Some(1),
        Some(_) => None,
    }
}

/// The changes `service` needs, given its tasks (all of them, any state) and the nodes.
pub fn reconcile(
    service: &Service,
    tasks: &[Arc<Task>],
    nodes: &HashMap<String, Arc<Node>>,
) -> Vec<Change> {
    let Some(replicas) = replicas(service) else {
        return Vec::new();
    };
    let (condition, delay) = restart_policy(service);
    let mut changes = Vec::new();
    // Per slot: tasks that hold it (alive), and whether a dead task keeps it (no restart).
    let mut holders: BTreeMap<u64, Vec<&Arc<Task>>> = BTreeMap::new();
    let mut kept: BTreeMap<u64, bool> = BTreeMap::new();
    let mut restarts: BTreeMap<u64, Duration> = BTreeMap::new();
    for task in tasks {
        let wanted = desired(task);
        if wanted > TaskState::Running {
            continue; // already told to stop: not ours to decide about any more
        }
        let observed = state(task);
        let unfit = node_unfit(&task.node_id, nodes);
        if !is_terminal(observed) && unfit.is_none() {
            holders.entry(task.slot).or_default().push(task);
            continue;
        }
        // Dead, or on a node it cannot run on.
        let terminal = is_terminal(observed);
        if task.slot > replicas || task.slot == 0 {
            changes.push(Change::Shutdown {
                task_id: id(task).to_string(),
                reason: format!("scaled down to {replicas} replicas"),
            });
            continue;
        }
        // A task on a node it cannot run on is replaced whatever the policy; a task that
        // ended is restarted as the policy says, and otherwise keeps its slot as it is.
        let restart = !terminal
            || match condition {
                restart_policy::Condition::None => false,
                restart_policy::Condition::OnFailure => observed != TaskState::Complete,
                restart_policy::Condition::Any => true,
            };
        if !restart {
            kept.insert(task.slot, true);
            continue;
        }
        let reason = match &unfit {
            Some(why) if !terminal => why.clone(),
            _ => format!(
                "task ended ({}); restarting",
                shoal_api::task_state::name(observed)
            ),
        };
        changes.push(Change::Shutdown {
            task_id: id(task).to_string(),
            reason,
        });
        // A task moved off a lost node is no failure of its own: it is replaced at once (the
        // node's loss took long enough to notice); one that ended waits out the delay.
        let wait = if terminal { delay } else { Duration::ZERO };
        restarts
            .entry(task.slot)
            .and_modify(|d| *d = (*d).max(wait))
            .or_insert(wait);
    }
    // Rolling updates: a holder of an older spec version is replaced, at most `parallelism`
    // slots at a time (counting the slots whose new task does not run yet).
    let (parallelism, order) = update_policy(service);
    let current = service.spec_version;
    let mut in_flight = 0usize;
    let mut outdated: Vec<(u64, &Arc<Task>)> = Vec::new();
    for (slot, mut held) in holders {
        if slot > replicas || slot == 0 {
            for task in held {
                changes.push(Change::Shutdown {
                    task_id: id(task).to_string(),
                    reason: format!("scaled down to {replicas} replicas"),
                });
            }
            continue;
        }
        kept.insert(slot, true);
        restarts.remove(&slot);
        // Oldest first.
        held.sort_by_key(|t| {
            t.meta
                .as_ref()
                .and_then(|m| m.created_at.as_ref())
                .map(|c| (c.seconds, c.nanos))
        });
        let (up_to_date, old): (Vec<&Arc<Task>>, Vec<&Arc<Task>>) =
            held.into_iter().partition(|t| t.spec_version >= current);
        match up_to_date.split_last() {
            Some((newest, extra)) => {
                for task in extra {
                    changes.push(Change::Shutdown {
                        task_id: id(task).to_string(),
                        reason: format!("slot {slot} has a newer task ({})", id(newest)),
                    });
                }
                let runs = state(newest) == TaskState::Running;
                if !runs {
                    in_flight += 1;
                }
                // Start-first keeps the old task until the new one runs.
                if runs || order == update_config::UpdateOrder::StopFirst {
                    for task in old {
                        changes.push(Change::Shutdown {
                            task_id: id(task).to_string(),
                            reason: format!("replaced by {} (spec version {current})", id(newest)),
                        });
                    }
                }
            }
            None => {
                let (newest, extra) = old.split_last().expect("a slot in the map has a holder");
                for task in extra {
                    changes.push(Change::Shutdown {
                        task_id: id(task).to_string(),
                        reason: format!("slot {slot} has a newer task ({})", id(newest)),
                    });
                }
                outdated.push((slot, newest));
            }
        }
    }
    for (slot, task) in outdated
        .into_iter()
        .take(parallelism.saturating_sub(in_flight))
    {
        if order == update_config::UpdateOrder::StopFirst {
            changes.push(Change::Shutdown {
                task_id: id(task).to_string(),
                reason: format!("updating to spec version {current}"),
            });
        }
        changes.push(Change::Create {
            slot,
            delay: Duration::ZERO,
        });
    }
    for slot in 1..=replicas {
        if kept.get(&slot).copied().unwrap_or(false) {
            continue;
        }
        let delay = restarts.get(&slot).copied().unwrap_or(Duration::ZERO);
        changes.push(Change::Create { slot, delay });
    }
    changes
}

#[cfg(test)]
mod tests;
