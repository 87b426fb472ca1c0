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
//! Not here yet (later parts of the orchestration issue): rolling updates (tasks of an older
//! spec version keep running), restart `max_attempts` / `window`, jobs and global services,
//! the task reaper. A service whose tasks use a spec version older than the service's is
//! left as it runs.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use shoal_api::task_state::is_terminal;
use shoal_api::v1::{
    Node, Service, Task, TaskState, node_spec, node_status, restart_policy, service_spec,
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
        // Keep the newest holder.
        held.sort_by_key(|t| {
            t.meta
                .as_ref()
                .and_then(|m| m.created_at.as_ref())
                .map(|c| (c.seconds, c.nanos))
        });
        let newest = held.pop().expect("a slot in the map has a holder");
        for task in held {
            changes.push(Change::Shutdown {
                task_id: id(task).to_string(),
                reason: format!("slot {slot} has a newer task ({})", id(newest)),
            });
        }
        restarts.remove(&slot);
        kept.insert(slot, true);
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
