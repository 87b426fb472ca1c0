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
//!   default). `max_attempts` bounds the restarts of a slot per spec version (within each
//!   `window`, if one is set: see [`restart`]); the attempts travel in the store from each
//!   task to its replacement, so a new leader counts on from them. A task not restarted
//!   keeps its slot as it is (desired RUNNING, observed FAILED or COMPLETE), as in SwarmKit.
//! - A slot with no holder and no task kept from restarting gets a new task.
//! - Slots above `replicas` lose their tasks (scale down removes the highest slots).
//! - At most one holder per slot: extra holders (after a leader change raced a replacement)
//!   stop, keeping the newest.
//!
//! - **Rolling update**: a slot whose task runs an older task spec (the service was
//!   updated, or `--force`d; a new replica count alone redeploys nothing) gets a new task,
//!   at the pace [`super::update::supervise`] allows. Stop-first (the default) stops the old
//!   task as the new one is created; start-first keeps it until the new one runs.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use shoal_api::task_state::is_terminal;
use shoal_api::v1::{
    Node, Service, Task, TaskState, node_spec, node_status, restart_policy, service_spec,
    update_config,
};

use super::update;

/// The restart delay when the service's policy gives none.
pub const DEFAULT_RESTART_DELAY: Duration = Duration::from_secs(5);

/// What the runner must do for a service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Create a task for `slot`; it may start after `delay` (zero: at once). It carries the
    /// slot's restart `attempts` (see [`restart`]).
    Create {
        slot: u64,
        delay: Duration,
        attempts: Vec<prost_types::Timestamp>,
    },
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

/// The restart policy of a service's tasks, with docker's defaults filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restart {
    pub condition: restart_policy::Condition,
    pub delay: Duration,
    /// Restarts allowed (within `window`, if not zero); 0 for no limit.
    pub max_attempts: u64,
    pub window: Duration,
}

/// The restart policy of the service's tasks.
pub(super) fn restart_policy(service: &Service) -> Restart {
    let policy = service
        .spec
        .as_ref()
        .and_then(|s| s.task.as_ref())
        .and_then(|t| t.restart.as_ref());
    let duration = |d: Option<&prost_types::Duration>, default| {
        d.map(shoal_api::validation::to_std_duration)
            .unwrap_or(default)
    };
    match policy {
        None => Restart {
            condition: restart_policy::Condition::Any,
            delay: DEFAULT_RESTART_DELAY,
            max_attempts: 0,
            window: Duration::ZERO,
        },
        Some(p) => Restart {
            condition: restart_policy::Condition::try_from(p.condition)
                .unwrap_or(restart_policy::Condition::Any),
            delay: duration(p.delay.as_ref(), DEFAULT_RESTART_DELAY),
            max_attempts: p.max_attempts,
            window: duration(p.window.as_ref(), Duration::ZERO),
        },
    }
}

/// Whether the ended `task` is restarted, and when: `None` leaves its slot (node) as it is;
/// otherwise the delay before its replacement may start, and the restart attempts the
/// replacement carries.
///
/// With `max_attempts` set, a slot restarts at most that many times per spec version: for
/// ever with no window, or within any `window`-long period otherwise — a restart that would
/// exceed it waits until the oldest attempt has left the window (rather than giving up for
/// good, which would leave the slot dead with nothing left to revive it).
pub(super) fn restart(
    policy: &Restart,
    service: &Service,
    task: &Task,
    now: SystemTime,
) -> Option<(Duration, Vec<prost_types::Timestamp>)> {
    let wanted = match policy.condition {
        restart_policy::Condition::None => false,
        restart_policy::Condition::OnFailure => state(task) != TaskState::Complete,
        restart_policy::Condition::Any => true,
    };
    if !wanted {
        return None;
    }
    if policy.max_attempts == 0 {
        return Some((policy.delay, Vec::new()));
    }
    let mut attempts: Vec<SystemTime> = if task.spec_version == service.spec_version {
        task.restart_attempts
            .iter()
            .filter_map(|t| SystemTime::try_from(*t).ok())
            .collect()
    } else {
        Vec::new()
    };
    attempts.sort();
    let max = usize::try_from(policy.max_attempts).unwrap_or(usize::MAX);
    let mut at = now + policy.delay;
    if !policy.window.is_zero() {
        attempts.retain(|t| *t + policy.window > now);
    }
    if attempts.len() >= max {
        if policy.window.is_zero() {
            return None;
        }
        // The next attempt may come once enough earlier ones have left the window.
        at = at.max(attempts[attempts.len() - max] + policy.window);
        attempts.retain(|t| *t + policy.window > at);
    }
    attempts.push(at);
    let skip = attempts.len().saturating_sub(max);
    let delay = at.duration_since(now).unwrap_or(Duration::ZERO);
    Some((
        delay,
        attempts[skip..].iter().map(|t| (*t).into()).collect(),
    ))
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

/// The changes `service` needs, given its tasks (all of them, any state) and the nodes, as
/// of now (see [`plan`]).
pub fn reconcile(
    service: &Service,
    tasks: &[Arc<Task>],
    nodes: &HashMap<String, Arc<Node>>,
) -> Vec<Change> {
    plan(service, tasks, nodes, SystemTime::now()).changes
}

/// What a service needs: task changes, and its update's supervision.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub changes: Vec<Change>,
    pub update: update::Supervision,
}

/// The changes `service` needs at `now`, and what its rolling update (if any) decided. When
/// the update decides to roll back, no task changes: the rollback's new spec version comes
/// first, and the next round works from it.
pub fn plan(
    service: &Service,
    tasks: &[Arc<Task>],
    nodes: &HashMap<String, Arc<Node>>,
    now: SystemTime,
) -> Plan {
    let Some(replicas) = replicas(service) else {
        return Plan::default();
    };
    let restart_policy = restart_policy(service);
    let mut changes = Vec::new();
    // Per slot: tasks that hold it (alive), and whether a dead task keeps it (no restart).
    let mut holders: BTreeMap<u64, Vec<&Arc<Task>>> = BTreeMap::new();
    let mut kept: BTreeMap<u64, bool> = BTreeMap::new();
    let mut restarts: BTreeMap<u64, (Duration, Vec<prost_types::Timestamp>)> = BTreeMap::new();
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
        // A task on a node it cannot run on is replaced whatever the policy, at once (the
        // node's loss took long enough to notice, and it is no failure of the task's); a
        // task that ended is restarted as the policy says, and otherwise keeps its slot as
        // it is.
        let restart = if terminal {
            restart(&restart_policy, service, task, now)
        } else {
            Some((Duration::ZERO, task.restart_attempts.clone()))
        };
        let Some((wait, attempts)) = restart else {
            kept.insert(task.slot, true);
            continue;
        };
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
        match restarts.get(&task.slot) {
            Some((longer, _)) if *longer >= wait => {}
            _ => {
                restarts.insert(task.slot, (wait, attempts));
            }
        }
    }
    // Rolling updates: a holder of an older spec version is replaced, at the pace the update
    // supervisor allows.
    let order = update::policy(service).order;
    let current = service.spec_version;
    let mut outdated: Vec<(u64, &Arc<Task>)> = Vec::new();
    for (slot, held) in holders {
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
        let (stops, old) = update::sort_unit(service, held, &format!("slot {slot}"), order);
        for (task_id, reason) in stops {
            changes.push(Change::Shutdown { task_id, reason });
        }
        if let Some(task) = old {
            outdated.push((slot, task));
        }
    }
    let units = update::Units {
        total: usize::try_from(replicas).unwrap_or(usize::MAX),
        outdated: outdated.len(),
        missing: (1..=replicas)
            .filter(|slot| !kept.get(slot).copied().unwrap_or(false))
            .count(),
    };
    let supervision = update::supervise(service, tasks, units, now);
    if supervision.rollback {
        return Plan {
            changes: Vec::new(),
            update: supervision,
        };
    }
    for (slot, task) in outdated.into_iter().take(supervision.allowed) {
        if order == update_config::UpdateOrder::StopFirst {
            changes.push(Change::Shutdown {
                task_id: id(task).to_string(),
                reason: format!("updating to spec version {current}"),
            });
        }
        changes.push(Change::Create {
            slot,
            delay: Duration::ZERO,
            attempts: Vec::new(),
        });
    }
    for slot in 1..=replicas {
        if kept.get(&slot).copied().unwrap_or(false) {
            continue;
        }
        let (delay, attempts) = restarts.remove(&slot).unwrap_or_default();
        changes.push(Change::Create {
            slot,
            delay,
            attempts,
        });
    }
    Plan {
        changes,
        update: supervision,
    }
}

#[cfg(test)]
mod tests;
