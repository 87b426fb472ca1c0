//! The constraint enforcer: which of a node's tasks must leave it because the node no longer
//! satisfies them.
//!
//! The scheduler checks a task against its node once, when it places it. Nodes change
//! afterwards: a label is removed, the engine reports fewer CPUs or less memory. For each
//! node that changed, the orchestrator asks [`evictions`] which of the node's live tasks
//! (wanted RUNNING, not ended) no longer fit, and tells those to stop; their services'
//! reconcilers then replace them on nodes that do fit (or leave them PENDING, saying why).
//!
//! The rules:
//! - A task whose constraints (`node.labels.*`, `node.role`, …) or platforms the node fails
//!   now is evicted.
//! - When the tasks' reservations together exceed what the node offers, the oldest tasks
//!   keep their place as long as they fit, and the newer ones that do not fit are evicted —
//!   so a node that shrank keeps as much of its established work as it can. A node that
//!   does not describe its resources is not judged on them.
//!
//! Availability is not the enforcer's business: a paused node keeps its tasks, a drained or
//! down one loses them through the reconcilers.
//!
//! Departure from SwarmKit: its enforcer evicts tasks in no particular order until the node
//! fits, and watches every node update on its own; here it is part of the orchestrator's
//! round and keeps the oldest tasks.

use std::collections::HashMap;
use std::sync::Arc;

use shoal_api::v1::{Node, Task};

use super::Slot;
use super::filter::{Capacity, Filter, Requirement, Reservation};

/// A task that must leave its node, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Eviction {
    pub task_id: String,
    pub reason: String,
}

fn id(task: &Task) -> &str {
    task.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("")
}

/// The tasks among `tasks` (the node's live tasks) that must leave `node`.
pub fn evictions(node: &Node, tasks: &[&Arc<Task>]) -> Vec<Eviction> {
    let node_id = node.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("");
    let mut out = Vec::new();
    let mut staying: Vec<(&Arc<Task>, Requirement)> = Vec::new();
    for task in tasks {
        // A malformed constraint was refused by the API; the scheduler treats it as none.
        let Ok(requirement) = Requirement::of_task(task) else {
            continue;
        };
        match requirement.placement_violated(node) {
            Some(Filter::Constraints) => out.push(Eviction {
                task_id: id(task).to_string(),
                reason: format!("node {node_id} no longer satisfies the task's constraints"),
            }),
            Some(_) => out.push(Eviction {
                task_id: id(task).to_string(),
                reason: format!("node {node_id} no longer has a platform the task supports"),
            }),
            None => staying.push((task, requirement)),
        }
    }
    if node
        .description
        .as_ref()
        .and_then(|d| d.resources.as_ref())
        .is_none()
    {
        return out;
    }
    // Oldest first keep their place.
    staying.sort_by_key(|(t, _)| {
        (
            t.meta
                .as_ref()
                .and_then(|m| m.created_at.as_ref())
                .map(|c| (c.seconds, c.nanos)),
            id(t).to_string(),
        )
    });
    let mut slot = Slot {
        id: node_id.to_string(),
        node: None,
        capacity: Capacity::of(node),
        tasks: 0,
        reserved: Reservation::default(),
        services: HashMap::new(),
    };
    for (task, requirement) in staying {
        if requirement.fits(&slot) {
            slot.reserved.add(&requirement.reservation);
        } else {
            out.push(Eviction {
                task_id: id(task).to_string(),
                reason: format!(
                    "insufficient resources on node {node_id} (its resources shrank); \
                     moving the task"
                ),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::v1::{
        Meta, NodeDescription, NodeSpec, Placement, ResourceRequirements, Resources, TaskSpec,
    };

    fn node(labels: &[(&str, &str)], memory: Option<i64>) -> Node {
        let mut annotations = shoal_api::v1::Annotations::default();
        for (k, v) in labels {
            annotations.labels.push(shoal_api::v1::Label {
                key: k.to_string(),
                value: v.to_string(),
            });
        }
        Node {
            meta: Some(Meta {
                id: "n1".into(),
                ..Default::default()
            }),
            spec: Some(NodeSpec {
                annotations: Some(annotations),
                ..Default::default()
            }),
            description: Some(Box::new(NodeDescription {
                hostname: "n1".into(),
                resources: memory.map(|m| Resources {
                    nano_cpus: 4_000_000_000,
                    memory_bytes: m,
                    ..Default::default()
                }),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    fn task(id: &str, created: i64, constraint: Option<&str>, memory: i64) -> Arc<Task> {
        let spec = shoal_api::shared::TaskSpecFields {
            placement: constraint.map(|c| {
                Box::new(Placement {
                    constraints: vec![c.to_string()],
                    ..Default::default()
                })
            }),
            resources: Some(Box::new(ResourceRequirements {
                reservations: Some(Resources {
                    memory_bytes: memory,
                    ..Default::default()
                }),
                ..Default::default()
            })),
            ..Default::default()
        };
        Arc::new(Task {
            meta: Some(Meta {
                id: id.into(),
                created_at: Some(prost_types::Timestamp {
                    seconds: created,
                    nanos: 0,
                }),
                ..Default::default()
            }),
            spec: Some(TaskSpec::from(spec)),
            node_id: "n1".into(),
            ..Default::default()
        })
    }

    fn evicted(node: &Node, tasks: &[Arc<Task>]) -> Vec<String> {
        let refs: Vec<&Arc<Task>> = tasks.iter().collect();
        evictions(node, &refs)
            .into_iter()
            .map(|e| e.task_id)
            .collect()
    }

    #[test]
    fn a_removed_label_evicts_the_tasks_constrained_to_it() {
        let tasks = [
            task("zone-a", 1, Some("node.labels.zone==a"), 0),
            task("anywhere", 2, None, 0),
            task("not-b", 3, Some("node.labels.zone!=b"), 0),
        ];
        assert!(evicted(&node(&[("zone", "a")], None), &tasks).is_empty());
        assert_eq!(evicted(&node(&[], None), &tasks), ["zone-a"]);
        assert_eq!(
            evicted(&node(&[("zone", "b")], None), &tasks),
            ["zone-a", "not-b"]
        );
        let e = evictions(&node(&[], None), &[&tasks[0]]);
        assert_eq!(
            e[0].reason,
            "node n1 no longer satisfies the task's constraints"
        );
    }

    #[test]
    fn a_node_that_shrank_keeps_its_oldest_tasks_that_fit() {
        const GB: i64 = 1 << 30;
        let tasks = [
            task("newest", 3, None, GB),
            task("oldest", 1, None, 2 * GB),
            task("middle", 2, None, 2 * GB),
            task("free", 4, None, 0),
        ];
        assert!(evicted(&node(&[], Some(8 * GB)), &tasks).is_empty());
        // 4 GB left: the two oldest fit, the newest with a reservation does not.
        assert_eq!(evicted(&node(&[], Some(4 * GB)), &tasks), ["newest"]);
        assert_eq!(
            evicted(&node(&[], Some(3 * GB)), &tasks),
            ["middle"],
            "the oldest stays, then what still fits (the newest's 1 GB)"
        );
        // A node without resources in its description is not judged on them.
        assert!(evicted(&node(&[], None), &tasks).is_empty());
    }
}
