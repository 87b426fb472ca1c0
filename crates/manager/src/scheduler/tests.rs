//! Property tests of the scheduler's invariants, and an ignored timing check.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use proptest::prelude::*;
use shoal_api::v1::{
    Meta, Node, NodeDescription, NodeSpec, NodeStatus, Placement, ResourceRequirements, Resources,
    Task, TaskSpec, TaskSpecFields, TaskState, TaskStatus, node_spec, node_status, task_spec,
};

use super::{Decision, Scheduler};

fn node(
    id: &str,
    state: node_status::State,
    availability: node_spec::Availability,
    cpus: i64,
) -> Node {
    Node {
        meta: Some(Meta {
            id: id.into(),
            ..Default::default()
        }),
        spec: Some(NodeSpec {
            availability: availability as i32,
            ..Default::default()
        }),
        description: Some(Box::new(NodeDescription {
            hostname: id.into(),
            resources: Some(Resources {
                nano_cpus: cpus,
                memory_bytes: 1 << 30,
                generic: Vec::new(),
            }),
            runtimes: vec!["process".into()],
            ..Default::default()
        })),
        status: Some(NodeStatus {
            state: state as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn spec(cpus: i64, max_replicas: u64) -> TaskSpec {
    TaskSpecFields {
        runtime: Some(task_spec::Runtime::Process(Box::default())),
        resources: Some(Box::new(ResourceRequirements {
            reservations: Some(Resources {
                nano_cpus: cpus,
                ..Default::default()
            }),
            ..Default::default()
        })),
        placement: Some(Box::new(Placement {
            max_replicas,
            ..Default::default()
        })),
        ..Default::default()
    }
    .into()
}

fn task(id: String, service: &str, spec: &TaskSpec, node: &str, state: TaskState) -> Task {
    Task {
        meta: Some(Meta {
            id,
            ..Default::default()
        }),
        spec: Some(spec.clone()),
        spec_version: 1,
        service_id: service.into(),
        node_id: node.into(),
        status: Some(TaskStatus {
            state: state as i32,
            ..Default::default()
        }),
        desired_state: TaskState::Running as i32,
        ..Default::default()
    }
}

const STATES: [node_status::State; 3] = [
    node_status::State::Ready,
    node_status::State::Down,
    node_status::State::Disconnected,
];
const AVAILABILITIES: [node_spec::Availability; 3] = [
    node_spec::Availability::Active,
    node_spec::Availability::Pause,
    node_spec::Availability::Drain,
];

/// Nodes: (state, availability, cpus in tenths); services: (cpus in tenths, max replicas,
/// pending tasks); existing: (service, node, terminal).
#[derive(Debug, Clone)]
struct Case {
    nodes: Vec<(usize, usize, i64)>,
    services: Vec<(i64, u64, usize)>,
    existing: Vec<(usize, usize, bool)>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec((0..3usize, 0..3usize, 0..40i64), 0..8),
        prop::collection::vec((0..15i64, 0..4u64, 0..12usize), 1..4),
        prop::collection::vec((0..4usize, 0..8usize, any::<bool>()), 0..12),
    )
        .prop_map(|(nodes, services, existing)| Case {
            nodes,
            services,
            existing,
        })
}

const TENTH: i64 = 100_000_000;

proptest! {
    #[test]
    fn decisions_respect_every_filter(case in case()) {
        let nodes: Vec<Arc<Node>> = case
            .nodes
            .iter()
            .enumerate()
            .map(|(i, &(s, a, cpus))| {
                Arc::new(node(&format!("n{i}"), STATES[s], AVAILABILITIES[a], cpus * TENTH))
            })
            .collect();
        let specs: Vec<TaskSpec> = case
            .services
            .iter()
            .map(|&(cpus, max, _)| spec(cpus * TENTH, max))
            .collect();
        let mut tasks: Vec<Arc<Task>> = Vec::new();
        for (i, &(service, n, terminal)) in case.existing.iter().enumerate() {
            if service >= specs.len() || n >= nodes.len() {
                continue;
            }
            let state = if terminal { TaskState::Failed } else { TaskState::Running };
            tasks.push(Arc::new(task(
                format!("old{i}"),
                &format!("s{service}"),
                &specs[service],
                &format!("n{n}"),
                state,
            )));
        }
        let mut pending = Vec::new();
        for (s, &(_, _, count)) in case.services.iter().enumerate() {
            for i in 0..count {
                pending.push(Arc::new(task(
                    format!("s{s}.{i}"),
                    &format!("s{s}"),
                    &specs[s],
                    "",
                    TaskState::Pending,
                )));
            }
        }
        let mut scheduler = Scheduler::new();
        scheduler.reset(nodes.clone(), tasks.clone());
        let decisions = scheduler.schedule(&pending);

        // One decision per task, in order.
        prop_assert_eq!(decisions.len(), pending.len());
        for (d, t) in decisions.iter().zip(&pending) {
            prop_assert_eq!(d.task_id(), super::task_id(t));
        }

        // Recount everything from scratch: the final placement of all live tasks.
        let mut final_tasks: Vec<Arc<Task>> = tasks.clone();
        for (d, t) in decisions.iter().zip(&pending) {
            if let Decision::Assign { node_id, .. } = d {
                let n = nodes.iter().find(|n| super::node_id(n) == node_id).unwrap();
                let st = n.status.as_ref().unwrap().state;
                let av = n.spec.as_ref().unwrap().availability;
                prop_assert_eq!(st, node_status::State::Ready as i32, "assigned to a node not ready");
                prop_assert_eq!(av, node_spec::Availability::Active as i32, "assigned to an inactive node");
                let mut t = (**t).clone();
                t.node_id = node_id.clone();
                t.status.as_mut().unwrap().state = TaskState::Assigned as i32;
                final_tasks.push(Arc::new(t));
            }
        }
        let mut cpus: HashMap<&str, i64> = HashMap::new();
        let mut per_service: HashMap<(&str, &str), u64> = HashMap::new();
        let mut new_per_service: HashMap<(&str, &str), u64> = HashMap::new();
        for t in &final_tasks {
            let state = t.status.as_ref().unwrap().state;
            if state >= TaskState::Complete as i32 {
                continue;
            }
            let r = t.spec.as_ref().unwrap().resources.as_ref().unwrap();
            *cpus.entry(&t.node_id).or_default() += r.reservations.as_ref().unwrap().nano_cpus;
            *per_service.entry((&t.node_id, &t.service_id)).or_default() += 1;
            if state == TaskState::Assigned as i32 {
                *new_per_service.entry((&t.node_id, &t.service_id)).or_default() += 1;
            }
        }
        for n in &nodes {
            let id = super::node_id(n);
            let capacity = n.description.as_ref().unwrap().resources.as_ref().unwrap().nano_cpus;
            let used = cpus.get(id).copied().unwrap_or(0);
            let old_used = used
                - final_tasks
                    .iter()
                    .filter(|t| t.node_id == id && t.status.as_ref().unwrap().state == TaskState::Assigned as i32)
                    .map(|t| t.spec.as_ref().unwrap().resources.as_ref().unwrap().reservations.as_ref().unwrap().nano_cpus)
                    .sum::<i64>();
            // New placements never push a node over its capacity (existing tasks may already).
            prop_assert!(used <= capacity.max(old_used), "over-committed {}: {} > {}", id, used, capacity);
            // The view matches a recount.
            prop_assert_eq!(scheduler.node_load(id).map_or(0, |l| l.nano_cpus), used);
        }
        for (s, &(_, max, _)) in case.services.iter().enumerate() {
            if max == 0 {
                continue;
            }
            let service = format!("s{s}");
            for n in &nodes {
                let id = super::node_id(n);
                let new = new_per_service.get(&(id, service.as_str())).copied().unwrap_or(0);
                let all = per_service.get(&(id, service.as_str())).copied().unwrap_or(0);
                prop_assert!(new == 0 || all <= max, "max_replicas exceeded on {}", id);
            }
        }

        // A task left pending really fits nowhere at the end.
        for (d, t) in decisions.iter().zip(&pending) {
            if let Decision::NoSuitableNode { .. } = d {
                let s: usize = t.service_id[1..].parse().unwrap();
                let (need, max, _) = case.services[s];
                for n in &nodes {
                    let id = super::node_id(n);
                    let ok = n.status.as_ref().unwrap().state == node_status::State::Ready as i32
                        && n.spec.as_ref().unwrap().availability == node_spec::Availability::Active as i32
                        && n.description.as_ref().unwrap().resources.as_ref().unwrap().nano_cpus
                            - cpus.get(id).copied().unwrap_or(0) >= need * TENTH
                        && (max == 0 || per_service.get(&(id, t.service_id.as_str())).copied().unwrap_or(0) < max);
                    prop_assert!(!ok, "{} left pending but fits on {}", super::task_id(t), id);
                }
            }
        }

        // The incremental view equals one rebuilt from scratch.
        let mut fresh = Scheduler::new();
        fresh.reset(nodes.clone(), final_tasks.clone());
        for n in &nodes {
            let id = super::node_id(n);
            prop_assert_eq!(fresh.node_load(id), scheduler.node_load(id));
        }
    }
}

#[test]
fn terminal_tasks_free_their_node() {
    let mut s = Scheduler::new();
    s.node_changed(Arc::new(node(
        "n1",
        node_status::State::Ready,
        node_spec::Availability::Active,
        10 * TENTH,
    )));
    let spec = spec(10 * TENTH, 0);
    let a = Arc::new(task("a".into(), "s", &spec, "", TaskState::Pending));
    let b = Arc::new(task("b".into(), "s", &spec, "", TaskState::Pending));
    assert!(matches!(
        s.schedule(std::slice::from_ref(&a))[0],
        Decision::Assign { .. }
    ));
    assert!(matches!(
        s.schedule(std::slice::from_ref(&b))[0],
        Decision::NoSuitableNode { .. }
    ));
    s.task_changed(Arc::new(task(
        "a".into(),
        "s",
        &spec,
        "n1",
        TaskState::Failed,
    )));
    assert_eq!(s.node_load("n1").unwrap().tasks, 0);
    assert!(matches!(s.schedule(&[b])[0], Decision::Assign { .. }));
    // A removed node with no tasks left is forgotten.
    s.task_removed("b");
    s.node_removed("n1");
    assert_eq!(s.node_load("n1"), None);
}

/// Timing of the goal shapes; run with
/// `cargo test -p shoal-manager --release scheduler::tests::timing -- --ignored --nocapture`.
/// Goals: 1k nodes × 100k tasks ≤ 0.4 s, 100k nodes × 1k tasks ≤ 0.1 s. Each shape runs with
/// one service and with 100 (one filter pass per service). Nothing is asserted.
#[test]
#[ignore]
fn timing() {
    let shapes = [(1_000usize, 100_000usize), (100_000, 1_000), (1_000, 1_000)];
    for (nodes, tasks) in shapes {
        for services in [1usize, 100] {
            let node_list: Vec<Arc<Node>> = (0..nodes)
                .map(|i| {
                    Arc::new(node(
                        &format!("node{i:06}"),
                        node_status::State::Ready,
                        node_spec::Availability::Active,
                        1_000_000 * TENTH,
                    ))
                })
                .collect();
            let specs: Vec<TaskSpec> = (0..services).map(|_| spec(TENTH, 0)).collect();
            let pending: Vec<Arc<Task>> = (0..tasks)
                .map(|i| {
                    let s = i % services;
                    Arc::new(task(
                        format!("task{i:07}"),
                        &format!("svc{s}"),
                        &specs[s],
                        "",
                        TaskState::Pending,
                    ))
                })
                .collect();
            let mut s = Scheduler::new();
            let start = Instant::now();
            s.reset(node_list, Vec::new());
            let reset = start.elapsed();
            let start = Instant::now();
            let decisions = s.schedule(&pending);
            let elapsed = start.elapsed();
            assert!(
                decisions
                    .iter()
                    .all(|d| matches!(d, Decision::Assign { .. }))
            );
            println!(
                "{nodes} nodes × {tasks} tasks in {services} services: schedule {elapsed:?} \
                 (reset {reset:?})"
            );
        }
    }
}

#[test]
fn runtime_filter_and_its_reason() {
    // A task without a runtime asks for none: it passes the runtime filter anywhere.
    let mut s = Scheduler::new();
    let mut n = node(
        "n1",
        node_status::State::Ready,
        node_spec::Availability::Active,
        0,
    );
    n.description.as_mut().unwrap().runtimes.clear();
    s.node_changed(Arc::new(n));
    let no_runtime: TaskSpec = TaskSpecFields::default().into();
    let t = Arc::new(task("t".into(), "s", &no_runtime, "", TaskState::Pending));
    assert!(matches!(s.schedule(&[t])[0], Decision::Assign { .. }));
    let process: TaskSpec = TaskSpecFields {
        runtime: Some(task_spec::Runtime::Process(Box::default())),
        ..Default::default()
    }
    .into();
    let t = Arc::new(task("u".into(), "s", &process, "", TaskState::Pending));
    let d = &s.schedule(&[t])[0];
    assert_eq!(
        d,
        &Decision::NoSuitableNode {
            task_id: "u".into(),
            reason: "no suitable node (runtime process not supported on 1 node)".into()
        }
    );
}

/// A task publishing `port` (0: none) in host mode, as the allocator leaves it.
fn with_host_port(mut task: Task, port: u32) -> Task {
    use shoal_api::v1::{Endpoint, PortConfig, port_config};
    if port != 0 {
        task.endpoint = Some(Box::new(Endpoint {
            ports: vec![PortConfig {
                target_port: 80,
                published_port: port,
                publish_mode: port_config::PublishMode::Host as i32,
                ..Default::default()
            }],
            ..Default::default()
        }));
    }
    task
}

proptest! {
    /// Nodes never end up with two live tasks publishing the same host-mode port, whether the
    /// tasks come in one batch, several, or one node at a time (global services); and a task
    /// is refused only when every ready node has its port taken.
    #[test]
    fn host_ports_are_never_published_twice_on_a_node(
        nodes in 1..5usize,
        // Per service: host port (0 = none, few values so they clash) and pending tasks.
        services in prop::collection::vec((prop_oneof![Just(0u32), 8080u32..8083], 0..6usize), 1..5),
        batches in 1..3usize,
        global in any::<bool>(),
    ) {
        let nodes: Vec<Arc<Node>> = (0..nodes)
            .map(|i| {
                Arc::new(node(
                    &format!("n{i}"),
                    node_status::State::Ready,
                    node_spec::Availability::Active,
                    100 * TENTH,
                ))
            })
            .collect();
        let spec = spec(0, 0);
        let mut scheduler = Scheduler::new();
        scheduler.reset(nodes.clone(), Vec::new());
        let mut pending = Vec::new();
        for (s, &(port, count)) in services.iter().enumerate() {
            for i in 0..count {
                let t = task(format!("s{s}.{i}"), &format!("s{s}"), &spec, "", TaskState::Pending);
                pending.push(Arc::new(with_host_port(t, port)));
            }
        }
        let mut placed: Vec<(String, u32)> = Vec::new();
        let port_of = |t: &Task| {
            t.endpoint.as_ref().map_or(0, |e| e.ports[0].published_port)
        };
        if global {
            for (i, t) in pending.iter().enumerate() {
                let target = format!("n{}", i % nodes.len());
                let taken = placed.iter().any(|(n, p)| *n == target && *p != 0 && *p == port_of(t));
                match scheduler.place_on(t, &target) {
                    Decision::Assign { node_id, .. } => {
                        prop_assert!(!taken, "{} placed on {node_id} where its port is taken", super::task_id(t));
                        placed.push((node_id, port_of(t)));
                    }
                    Decision::NoSuitableNode { reason, .. } => {
                        prop_assert!(taken, "refused: {reason}");
                        prop_assert!(reason.contains("host-mode port"), "{reason}");
                    }
                }
            }
        } else {
            let size = pending.len().div_ceil(batches).max(1);
            for batch in pending.chunks(size) {
                for (d, t) in scheduler.schedule(batch).into_iter().zip(batch) {
                    match d {
                        Decision::Assign { node_id, .. } => placed.push((node_id, port_of(t))),
                        Decision::NoSuitableNode { reason, .. } => {
                            let port = port_of(t);
                            prop_assert!(port != 0, "a task without ports refused: {reason}");
                            let holders = placed.iter().filter(|(_, p)| *p == port).count();
                            prop_assert_eq!(holders, nodes.len(), "{}", reason);
                        }
                    }
                }
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (node, port) in &placed {
            if *port != 0 {
                prop_assert!(seen.insert((node.clone(), *port)), "port {port} twice on {node}");
            }
        }
    }
}
