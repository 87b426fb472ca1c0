//! `shoal-bench scheduler` (scenario S1): placement throughput of the scheduler's decision
//! core, in memory, in this process — no store, no Raft, no agents.
//!
//! ## What is measured
//!
//! For each shape (nodes × tasks; `--shapes`, default 1k×1k, 1k×10k, 1k×100k, 100k×1k and
//! 100k×100k, plus the constrained 1k×100k) and each variant, a fresh
//! `shoal_manager::scheduler::Scheduler` is given N READY, ACTIVE nodes (`reset`: the view
//! the leader builds when it gains leadership), then one `schedule` call with the T pending
//! tasks — the work SwarmKit's `benchScheduler` times, from the tasks' commit to the last
//! assignment, without SwarmKit's store. The figure judged against the goal is the *total*
//! (view build + `schedule`); the two parts are shown too. Each measurement runs `--runs`
//! times (default 3) on fresh inputs and the median is reported, with the range.
//!
//! Variants:
//!
//! - **distinct** (a): one task group per task — every task its own service and its own spec
//!   object, as in SwarmKit's benchmark, where every task is a group of one. Nothing is
//!   shared between tasks but the filter pass of their class.
//! - **service** (b): one service of T replicas, all tasks sharing one spec (what the
//!   orchestrator creates).
//! - **constrained**: (a) with a placement constraint `node.labels.zone==bench` that one
//!   node in three carries — the counterpart of SwarmKit's network-plugin variant, where one
//!   node in three has the plugin the tasks need.
//!
//! Nodes describe 1,000 CPUs and 1 TiB of memory and offer the `process` runtime; every task
//! reserves 0.01 CPU and 1 MiB, so the resource filter does real work on every placement.
//!
//! ## Honesty checks
//!
//! After each run the decisions are checked, outside the timed part: every task got an
//! `Assign` (the count), to a node that exists and (constrained) carries the label; no node
//! holds more reservations than it offers; and the spread is even (the busiest and the
//! idlest eligible node differ by at most one task). A run that fails a check stops the
//! benchmark with an error instead of reporting a figure.
//!
//! The anchors are SwarmKit's `benchScheduler` on this machine class (performance notes,
//! S1): 1k×100k 7.62 s, 100k×1k 12.6 s, constrained 1k×100k 9.96 s, 1k×1k 89 ms.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_api::v1::{
    Annotations, Label, Meta, Node, NodeDescription, NodeSpec, NodeStatus, Placement, ProcessSpec,
    ResourceRequirements, Resources, Task, TaskSpec, TaskSpecFields, TaskState, TaskStatus,
    node_spec, node_status, task_spec,
};
use shoal_manager::scheduler::{Decision, Scheduler};

use crate::report::Report;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Node counts; with --tasks, every combination is run (instead of the default shapes).
    #[arg(long, value_delimiter = ',', value_parser = parse_count)]
    nodes: Vec<usize>,
    /// Task counts; with --nodes, every combination is run.
    #[arg(long, value_delimiter = ',', value_parser = parse_count)]
    tasks: Vec<usize>,
    /// Variants to run: distinct (one group per task), service (one service), constrained.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "distinct,service,constrained"
    )]
    variants: Vec<Variant>,
    /// Runs per measurement; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    /// One task group per task: each task its own service and spec (SwarmKit's benchmark).
    Distinct,
    /// One service of T replicas sharing one spec.
    Service,
    /// Distinct tasks constrained to the third of the nodes that carry a label.
    Constrained,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Distinct => "one group per task",
            Variant::Service => "one service",
            Variant::Constrained => "constrained to 1/3, one group per task",
        }
    }
}

/// "1k", "100k", "1m" or a plain number.
fn parse_count(s: &str) -> Result<usize, String> {
    let lower = s.to_ascii_lowercase();
    let (digits, factor) = if let Some(d) = lower.strip_suffix('k') {
        (d, 1_000)
    } else if let Some(d) = lower.strip_suffix('m') {
        (d, 1_000_000)
    } else {
        (lower.as_str(), 1)
    };
    let n: usize = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a count such as 1000, 10k or 1m"))?;
    if n == 0 || n * factor > 10_000_000 {
        return Err(format!("{s:?}: a count must be between 1 and 10m"));
    }
    Ok(n * factor)
}

/// The default shapes: (nodes, tasks, variants that run at that shape).
const SHAPES: [(usize, usize); 5] = [
    (1_000, 1_000),
    (1_000, 10_000),
    (1_000, 100_000),
    (100_000, 1_000),
    (100_000, 100_000),
];

/// SwarmKit on this machine class (performance notes, S1), seconds.
fn anchor(nodes: usize, tasks: usize, variant: Variant) -> Option<f64> {
    match (nodes, tasks, variant) {
        (1_000, 1_000, Variant::Distinct) => Some(0.089),
        (1_000, 100_000, Variant::Distinct) => Some(7.62),
        (100_000, 1_000, Variant::Distinct) => Some(12.6),
        (1_000, 100_000, Variant::Constrained) => Some(9.96),
        _ => None,
    }
}

/// The S1 goals, seconds.
fn goal(nodes: usize, tasks: usize, variant: Variant) -> Option<f64> {
    match (nodes, tasks, variant) {
        (1_000, 100_000, Variant::Distinct | Variant::Service) => Some(0.4),
        (100_000, 1_000, Variant::Distinct | Variant::Service) => Some(0.1),
        (100_000, 100_000, Variant::Distinct | Variant::Service) => Some(1.0),
        _ => None,
    }
}

const NODE_CPUS: i64 = 1_000_000_000_000; // 1,000 CPUs
const NODE_MEMORY: i64 = 1 << 40;
const TASK_CPUS: i64 = 10_000_000; // 0.01 CPU
const TASK_MEMORY: i64 = 1 << 20;
const LABEL_KEY: &str = "zone";
const LABEL_VALUE: &str = "bench";

fn node(i: usize, labelled: bool) -> Node {
    let id = format!("node{i:07}");
    let labels = if labelled {
        vec![Label {
            key: LABEL_KEY.into(),
            value: LABEL_VALUE.into(),
        }]
    } else {
        Vec::new()
    };
    Node {
        meta: Some(Meta {
            id: id.clone(),
            ..Default::default()
        }),
        spec: Some(NodeSpec {
            annotations: Some(Annotations {
                name: String::new(),
                labels,
            }),
            availability: node_spec::Availability::Active as i32,
            ..Default::default()
        }),
        description: Some(Box::new(NodeDescription {
            hostname: id,
            resources: Some(Resources {
                nano_cpus: NODE_CPUS,
                memory_bytes: NODE_MEMORY,
                generic: Vec::new(),
            }),
            runtimes: vec!["process".into()],
            ..Default::default()
        })),
        status: Some(NodeStatus {
            state: node_status::State::Ready as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A task spec; `distinct` makes it differ from every other (its own argument).
fn spec(distinct: Option<usize>, constrained: bool) -> TaskSpec {
    TaskSpecFields {
        runtime: Some(task_spec::Runtime::Process(Box::new(ProcessSpec {
            command: "sleep".into(),
            args: match distinct {
                Some(i) => vec!["1000".into(), i.to_string()],
                None => vec!["1000".into()],
            },
            ..Default::default()
        }))),
        resources: Some(Box::new(ResourceRequirements {
            reservations: Some(Resources {
                nano_cpus: TASK_CPUS,
                memory_bytes: TASK_MEMORY,
                generic: Vec::new(),
            }),
            ..Default::default()
        })),
        placement: constrained.then(|| {
            Box::new(Placement {
                constraints: vec![format!("node.labels.{LABEL_KEY}=={LABEL_VALUE}")],
                ..Default::default()
            })
        }),
        ..Default::default()
    }
    .into()
}

fn tasks(n: usize, variant: Variant) -> Vec<Arc<Task>> {
    let shared = spec(None, false);
    (0..n)
        .map(|i| {
            let (service, spec) = match variant {
                Variant::Service => ("service0".to_string(), shared.clone()),
                Variant::Distinct => (format!("service{i}"), spec(Some(i), false)),
                Variant::Constrained => (format!("service{i}"), spec(Some(i), true)),
            };
            Arc::new(Task {
                meta: Some(Meta {
                    id: format!("task{i:08}"),
                    ..Default::default()
                }),
                spec: Some(spec),
                spec_version: 1,
                service_id: service,
                slot: i as u64 + 1,
                status: Some(TaskStatus {
                    state: TaskState::Pending as i32,
                    ..Default::default()
                }),
                desired_state: TaskState::Running as i32,
                ..Default::default()
            })
        })
        .collect()
}

/// One run's times.
struct Timing {
    reset: Duration,
    schedule: Duration,
}

/// Builds the inputs, times `reset` and `schedule`, and checks the decisions.
fn run_once(nodes: usize, tasks_n: usize, variant: Variant) -> Result<Timing, String> {
    let constrained = variant == Variant::Constrained;
    let node_list: Vec<Arc<Node>> = (0..nodes).map(|i| Arc::new(node(i, i % 3 == 0))).collect();
    let pending = tasks(tasks_n, variant);
    let mut scheduler = Scheduler::new();
    let start = Instant::now();
    scheduler.reset(node_list.iter().cloned(), Vec::new());
    let reset = start.elapsed();
    let start = Instant::now();
    let decisions = scheduler.schedule(&pending);
    let schedule = start.elapsed();

    // Checks, untimed.
    if decisions.len() != tasks_n {
        return Err(format!("{} decisions for {tasks_n} tasks", decisions.len()));
    }
    let index: HashMap<&str, usize> = node_list
        .iter()
        .enumerate()
        .map(|(i, n)| (n.meta.as_ref().map_or("", |m| m.id.as_str()), i))
        .collect();
    let mut per_node = vec![0u64; nodes];
    for d in &decisions {
        match d {
            Decision::Assign { node_id, task_id } => {
                let &i = index
                    .get(node_id.as_str())
                    .ok_or_else(|| format!("{task_id} assigned to unknown node {node_id}"))?;
                if constrained && i % 3 != 0 {
                    return Err(format!(
                        "{task_id} assigned to {node_id}, which lacks the label"
                    ));
                }
                per_node[i] += 1;
            }
            Decision::NoSuitableNode { task_id, reason } => {
                return Err(format!("{task_id} not placed: {reason}"));
            }
        }
    }
    let eligible: Vec<u64> = per_node
        .iter()
        .enumerate()
        .filter(|(i, _)| !constrained || i % 3 == 0)
        .map(|(_, &n)| n)
        .collect();
    let most = eligible.iter().copied().max().unwrap_or(0);
    let least = eligible.iter().copied().min().unwrap_or(0);
    if most as i64 * TASK_CPUS > NODE_CPUS || most as i64 * TASK_MEMORY > NODE_MEMORY {
        return Err(format!(
            "a node holds {most} tasks, more than its resources allow"
        ));
    }
    if most - least > 1 {
        return Err(format!(
            "uneven spread: {most} tasks on the busiest eligible node, {least} on the idlest"
        ));
    }
    // The scheduler's own count agrees with ours.
    for (i, n) in node_list.iter().enumerate() {
        let id = n.meta.as_ref().map_or("", |m| m.id.as_str());
        let counted = scheduler.node_load(id).map_or(0, |l| u64::from(l.tasks));
        if counted != per_node[i] {
            return Err(format!(
                "node {id}: the scheduler counts {counted} tasks, the decisions {}",
                per_node[i]
            ));
        }
    }
    // Drop the big inputs outside any timed part.
    drop(decisions);
    drop(scheduler);
    Ok(Timing { reset, schedule })
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn short(n: usize) -> String {
    if n >= 1_000_000 && n.is_multiple_of(1_000_000) {
        format!("{}m", n / 1_000_000)
    } else if n >= 1_000 && n.is_multiple_of(1_000) {
        format!("{}k", n / 1_000)
    } else {
        n.to_string()
    }
}

pub fn run(args: Args) -> Report {
    let mut report = Report::new("scheduler");
    let fail = |e: String| -> ! {
        eprintln!("Error: {e}");
        std::process::exit(1);
    };
    if args.runs == 0 || args.variants.is_empty() {
        fail("--runs and --variants must not be zero or empty".into());
    }
    // (nodes, tasks, variant) in order.
    let mut cases: Vec<(usize, usize, Variant)> = Vec::new();
    if args.nodes.is_empty() && args.tasks.is_empty() {
        for (n, t) in SHAPES {
            for &v in &args.variants {
                if v != Variant::Constrained {
                    cases.push((n, t, v));
                }
            }
        }
        if args.variants.contains(&Variant::Constrained) {
            cases.push((1_000, 100_000, Variant::Constrained));
        }
    } else {
        let nodes = if args.nodes.is_empty() {
            vec![1_000]
        } else {
            args.nodes.clone()
        };
        let tasks = if args.tasks.is_empty() {
            vec![100_000]
        } else {
            args.tasks.clone()
        };
        for &n in &nodes {
            for &t in &tasks {
                for &v in &args.variants {
                    cases.push((n, t, v));
                }
            }
        }
    }
    report.notes.push(format!(
        "the scheduler core in this process (reset: the view of N READY nodes; schedule: one \
         call with T pending tasks), {} runs each, median [range]; every run checked: all \
         tasks assigned, within resources, constraints held, spread even to one task. \
         The goal is judged on the total (view build + schedule)",
        args.runs
    ));
    for (nodes, tasks_n, variant) in cases {
        let label = format!("{}×{} {}", short(nodes), short(tasks_n), variant.name());
        let mut resets = Vec::new();
        let mut schedules = Vec::new();
        let mut totals = Vec::new();
        for _ in 0..args.runs {
            let t =
                run_once(nodes, tasks_n, variant).unwrap_or_else(|e| fail(format!("{label}: {e}")));
            resets.push(t.reset.as_secs_f64());
            schedules.push(t.schedule.as_secs_f64());
            totals.push((t.reset + t.schedule).as_secs_f64());
        }
        let (total, lo, hi) = median(totals);
        let (reset, _, _) = median(resets);
        let (schedule, _, _) = median(schedules);
        crate::report::progress(format!(
            "{label}: total {:.1} ms [{:.1}–{:.1}] (view {:.1} ms, schedule {:.1} ms)",
            total * 1e3,
            lo * 1e3,
            hi * 1e3,
            reset * 1e3,
            schedule * 1e3
        ));
        report.row(
            format!("{label}: total"),
            total * 1e3,
            "ms",
            anchor(nodes, tasks_n, variant).map(|s| s * 1e3),
            goal(nodes, tasks_n, variant).map(|s| s * 1e3),
        );
        report.row(
            format!("{label}: of which view build"),
            reset * 1e3,
            "ms",
            None,
            None,
        );
        report.row(
            format!("{label}: of which schedule"),
            schedule * 1e3,
            "ms",
            None,
            None,
        );
        report.row(
            format!("{label}: placements/s (total)"),
            tasks_n as f64 / total,
            "/s",
            anchor(nodes, tasks_n, variant).map(|s| tasks_n as f64 / s),
            None,
        );
    }
    report
}
