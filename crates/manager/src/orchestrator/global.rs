//! The global orchestrator's decisions: one task of a global service on every node that can
//! take one.
//!
//! Pure and synchronous, like [`super::replicated`]: the runner passes the service, its
//! tasks and the nodes, and applies the [`Change`]s. Per node:
//! - READY and ACTIVE without a live task of the service: a task is created for it (the
//!   runner then checks the node against the task's constraints, resources and runtime with
//!   the scheduler's filters, and creates nothing where it does not fit).
//! - PAUSE: running tasks stay; none is created.
//! - DRAIN, DOWN, or removed: its live task is told to stop, and none is created.
//! - A task that ended is restarted on its node as the restart policy says (after the
//!   restart delay), or keeps its place (policy `none`, or `on-failure` after COMPLETE).
//! - Two live tasks on one node: the newest stays.
//! - A task of an older task spec is replaced on its node at the update's pace
//!   ([`super::update`]), on nodes that take new tasks (a paused node keeps what it runs).
//!
//! Departures from SwarmKit: a node that lacks the resources for the task gets none (rather
//! than a task PENDING on it) until a round finds it fits; nodes that stop satisfying the
//! constraints keep their task until the constraint enforcer (not written yet) evicts it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use shoal_api::task_state::is_terminal;
use shoal_api::v1::{Node, Service, Task, TaskState, node_spec, node_status, update_config};

use super::replicated::{desired, id, node_unfit, restart, restart_policy, state};
use super::update;

/// What the runner must do for a global service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Create a task for `node_id`; it may start after `delay`. It carries the node's
    /// restart `attempts` (see [`super::replicated::restart`]).
    Create {
        node_id: String,
        delay: Duration,
        attempts: Vec<prost_types::Timestamp>,
    },
    /// Tell this task to stop, saying why.
    Shutdown { task_id: String, reason: String },
}

/// Whether `service` is a global service.
pub fn is_global(service: &Service) -> bool {
    matches!(
        service.spec.as_ref().and_then(|s| s.mode.as_ref()),
        Some(shoal_api::v1::service_spec::Mode::Global(_))
    )
}

pub(super) fn takes_new_tasks(node: &Node) -> bool {
    node.status.as_ref().map(|s| s.state).unwrap_or_default() == node_status::State::Ready as i32
        && node
            .spec
            .as_ref()
            .map(|s| s.availability)
            .unwrap_or_default()
            == node_spec::Availability::Active as i32
}

/// The changes the global `service` needs, as of now (see [`plan`]).
pub fn reconcile(
    service: &Service,
    tasks: &[Arc<Task>],
    nodes: &HashMap<String, Arc<Node>>,
) -> Vec<Change> {
    plan(service, tasks, nodes, SystemTime::now()).changes
}

/// What a global service needs: task changes, and its update's supervision.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub changes: Vec<Change>,
    pub update: update::Supervision,
}

/// The changes the global `service` needs at `now`, and what its rolling update decided
/// (a rollback comes alone, as for replicated services).
pub fn plan(
    service: &Service,
    tasks: &[Arc<Task>],
    nodes: &HashMap<String, Arc<Node>>,
    now: SystemTime,
) -> Plan {
    if !is_global(service) {
        return Plan::default();
    }
    let restart_policy = restart_policy(service);
    let mut changes = Vec::new();
    let mut holders: BTreeMap<&str, Vec<&Arc<Task>>> = BTreeMap::new();
    // Nodes whose place is taken by an ended task that is not restarted.
    let mut kept: Vec<&str> = Vec::new();
    let mut restarts: BTreeMap<&str, (Duration, Vec<prost_types::Timestamp>)> = BTreeMap::new();
    for task in tasks {
        if desired(task) > TaskState::Running || task.node_id.is_empty() {
            continue;
        }
        let node = task.node_id.as_str();
        let observed = state(task);
        let terminal = is_terminal(observed);
        if let Some(why) = node_unfit(node, nodes) {
            if !terminal {
                changes.push(Change::Shutdown {
                    task_id: id(task).to_string(),
                    reason: why,
                });
            }
            continue;
        }
        if !terminal {
            holders.entry(node).or_default().push(task);
            continue;
        }
        let Some(restart) = restart(&restart_policy, service, task, now) else {
            kept.push(node);
            continue;
        };
        changes.push(Change::Shutdown {
            task_id: id(task).to_string(),
            reason: format!(
                "task ended ({}); restarting",
                shoal_api::task_state::name(observed)
            ),
        });
        restarts.insert(node, restart);
    }
    // Per node: the newest task stays; an older spec version's task is replaced at the
    // update's pace (on nodes that take new tasks: a paused node keeps what it runs).
    let order = update::policy(service).order;
    let current = service.spec_version;
    let mut outdated: Vec<(&str, &Arc<Task>)> = Vec::new();
    for (node, held) in holders.iter_mut() {
        let node: &str = node;
        let held = std::mem::take(held);
        let (stops, old) = update::sort_unit(service, held, &format!("node {node}"), order);
        for (task_id, reason) in stops {
            changes.push(Change::Shutdown { task_id, reason });
        }
        if let Some(task) = old
            && nodes.get(node).is_some_and(|n| takes_new_tasks(n))
        {
            outdated.push((node, task));
        }
    }
    let missing = nodes
        .iter()
        .filter(|(id, node)| {
            !holders.contains_key(id.as_str())
                && !kept.contains(&id.as_str())
                && takes_new_tasks(node)
        })
        .count();
    let units = update::Units {
        total: (holders.len() + missing).max(1),
        outdated: outdated.len(),
        missing,
    };
    let supervision = update::supervise(service, tasks, units, now);
    if supervision.rollback {
        return Plan {
            changes: Vec::new(),
            update: supervision,
        };
    }
    for (node, task) in outdated.into_iter().take(supervision.allowed) {
        if order == update_config::UpdateOrder::StopFirst {
            changes.push(Change::Shutdown {
                task_id: id(task).to_string(),
                reason: format!("updating to spec version {current}"),
            });
        }
        changes.push(Change::Create {
            node_id: node.to_string(),
            delay: Duration::ZERO,
            attempts: Vec::new(),
        });
    }
    let mut eligible: Vec<(&String, &Arc<Node>)> = nodes.iter().collect();
    eligible.sort_by(|a, b| a.0.cmp(b.0));
    for (node_id, node) in eligible {
        let node_id = node_id.as_str();
        if holders.contains_key(node_id) || kept.contains(&node_id) || !takes_new_tasks(node) {
            continue;
        }
        let (delay, attempts) = restarts.remove(node_id).unwrap_or_default();
        changes.push(Change::Create {
            node_id: node_id.to_string(),
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
mod tests {
    use super::*;
    use shoal_api::v1::{GlobalService, Meta, NodeSpec, NodeStatus, ServiceSpec, TaskStatus};

    fn node(
        id: &str,
        status: node_status::State,
        availability: node_spec::Availability,
    ) -> Arc<Node> {
        Arc::new(Node {
            meta: Some(Meta {
                id: id.into(),
                ..Default::default()
            }),
            spec: Some(NodeSpec {
                availability: availability as i32,
                ..Default::default()
            }),
            status: Some(NodeStatus {
                state: status as i32,
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    fn task(id: &str, node: &str, state: TaskState) -> Arc<Task> {
        Arc::new(Task {
            meta: Some(Meta {
                id: id.into(),
                ..Default::default()
            }),
            node_id: node.into(),
            desired_state: TaskState::Running as i32,
            status: Some(TaskStatus {
                state: state as i32,
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    fn global() -> Service {
        Service {
            spec: Some(ServiceSpec {
                mode: Some(shoal_api::v1::service_spec::Mode::Global(GlobalService {})),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn one_task_per_node_that_takes_new_tasks() {
        use node_spec::Availability::*;
        use node_status::State::*;
        let nodes: HashMap<String, Arc<Node>> = [
            node("a", Ready, Active),
            node("b", Ready, Active),
            node("paused", Ready, Pause),
            node("drained", Ready, Drain),
            node("down", Down, Active),
        ]
        .into_iter()
        .map(|n| (n.meta.as_ref().unwrap().id.clone(), n))
        .collect();
        let tasks = [
            task("on-b", "b", TaskState::Running),
            task("on-paused", "paused", TaskState::Running),
            task("on-drained", "drained", TaskState::Running),
            task("on-down", "down", TaskState::Assigned),
            task("on-gone", "gone", TaskState::Running),
        ];
        let changes = reconcile(&global(), &tasks, &nodes);
        let stopped: Vec<&str> = changes
            .iter()
            .filter_map(|c| match c {
                Change::Shutdown { task_id, .. } => Some(task_id.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(stopped, ["on-drained", "on-down", "on-gone"]);
        let created: Vec<&str> = changes
            .iter()
            .filter_map(|c| match c {
                Change::Create { node_id, .. } => Some(node_id.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(created, ["a"]);
    }

    #[test]
    fn an_ended_task_restarts_on_its_node_after_the_delay() {
        let nodes: HashMap<String, Arc<Node>> = [node(
            "a",
            node_status::State::Ready,
            node_spec::Availability::Active,
        )]
        .into_iter()
        .map(|n| (n.meta.as_ref().unwrap().id.clone(), n))
        .collect();
        let changes = reconcile(&global(), &[task("t", "a", TaskState::Failed)], &nodes);
        assert_eq!(
            changes,
            [
                Change::Shutdown {
                    task_id: "t".into(),
                    reason: "task ended (FAILED); restarting".into()
                },
                Change::Create {
                    node_id: "a".into(),
                    delay: super::super::replicated::DEFAULT_RESTART_DELAY,
                    attempts: Vec::new(),
                }
            ]
        );
    }
}
