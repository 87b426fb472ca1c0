//! The store benchmark: the operations SwarmKit's `memory_test.go` benchmarks measure, on the
//! same sizes (10,000 nodes; 100,000 tasks), plus watch fan-out and resident memory.
//!
//! Objects carry realistic content: nodes a description (hostname, platform, resources, engine
//! labels) and spec labels; tasks a container spec (image, command, env, labels), a status
//! with a timestamp and message, and annotations. Memory is measured first, in a fresh store,
//! as the growth of the process's resident set; it therefore includes allocator overhead,
//! indexes and everything else the store keeps per object.

use std::hint::black_box;
use std::time::{Duration, Instant};

use shoal_api::labels::labels;
use shoal_api::v1::{
    Annotations, ContainerSpec, EngineDescription, Meta, Node, NodeDescription, NodeSpec, Platform,
    ReplicatedService, Resources, Service, ServiceSpec, Task, TaskSpec, TaskSpecFields, TaskState,
    TaskStatus, node_spec, service_spec, task_spec,
};
use shoal_store::{By, Filter, Reader, Store};

use crate::report::Report;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Nodes in the store.
    #[arg(long, default_value_t = 10_000)]
    nodes: usize,
    /// Tasks in the store.
    #[arg(long, default_value_t = 100_000)]
    tasks: usize,
    /// Watch subscribers for the fan-out measurement.
    #[arg(long, default_value_t = 1_000)]
    subscribers: usize,
}

fn id(prefix: &str, i: usize) -> String {
    // Same length as real IDs (25 characters).
    format!("{prefix}{i:0>24}")
}

pub fn node(i: usize) -> Node {
    Node {
        meta: Some(Meta {
            id: id("n", i),
            ..Default::default()
        }),
        spec: Some(NodeSpec {
            annotations: Some(Annotations {
                name: String::new(),
                labels: labels([
                    ("zone".to_string(), format!("zone-{}", i % 3)),
                    ("rack".to_string(), format!("r{}", i % 40)),
                ]),
            }),
            membership: node_spec::Membership::Accepted as i32,
            ..Default::default()
        }),
        description: Some(Box::new(NodeDescription {
            hostname: format!("host-{i:05}.example.internal"),
            platform: Some(Platform {
                architecture: "x86_64".into(),
                os: "linux".into(),
            }),
            resources: Some(Resources {
                nano_cpus: 4_000_000_000,
                memory_bytes: 16 << 30,
                generic: vec![],
            }),
            engine: Some(EngineDescription {
                engine_version: "28.2.2".into(),
                labels: labels([("storage", "ssd")]),
                plugins: vec![],
            }),
            runtimes: vec!["process".into(), "container".into()],
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// Services the tasks belong to.
pub const SERVICES: usize = 1000;

pub fn service(s: usize) -> Service {
    let task = TaskSpec::from(TaskSpecFields {
        runtime: Some(task_spec::Runtime::Container(Box::new(ContainerSpec {
            image: "registry.local/web:1.4.2".into(),
            command: vec!["/bin/web".into()],
            args: vec!["--port".into(), "8080".into()],
            env: vec![
                "MODE=production".into(),
                "LOG_LEVEL=info".into(),
                format!("SERVICE={s}"),
            ],
            labels: [("app".to_string(), "web".to_string())].into(),
            ..Default::default()
        }))),
        ..Default::default()
    });
    Service {
        meta: Some(Meta {
            id: id("s", s),
            ..Default::default()
        }),
        spec: Some(ServiceSpec {
            annotations: Some(Annotations {
                name: format!("web-{s}"),
                ..Default::default()
            }),
            task: Some(task),
            mode: Some(service_spec::Mode::Replicated(ReplicatedService {
                replicas: 100,
            })),
            ..Default::default()
        }),
        spec_version: 1,
        ..Default::default()
    }
}

/// Task `i`, made from its service as the orchestrator makes tasks: the spec is shared.
pub fn task(i: usize, services: &[Service], nodes: usize) -> Task {
    let s = i % services.len();
    let service = &services[s];
    let spec = service.spec.as_ref().expect("spec");
    Task {
        meta: Some(Meta {
            id: id("t", i),
            ..Default::default()
        }),
        spec: spec.task.clone(),
        spec_version: service.spec_version,
        service_id: id("s", s),
        slot: (i / services.len() + 1) as u64,
        node_id: id("n", i % nodes.max(1)),
        service_annotations: Some(Box::new(Annotations {
            name: spec.annotations.as_ref().expect("annotations").name.clone(),
            ..Default::default()
        })),
        status: Some(TaskStatus {
            timestamp: Some(std::time::SystemTime::now().into()),
            state: TaskState::Running as i32,
            message: "started".into(),
            ..Default::default()
        }),
        desired_state: TaskState::Running as i32,
        ..Default::default()
    }
}

/// Resident set size of this process in bytes.
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn per_op(total: Duration, ops: usize) -> f64 {
    total.as_secs_f64() * 1e6 / ops.max(1) as f64
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
}

async fn create_batched<T: shoal_store::StoreObject>(
    store: &Store,
    objects: impl Iterator<Item = T>,
) {
    let mut batch = store.batch();
    for o in objects {
        let mut o = Some(o);
        // A batch reruns an update only when it overflows 1.5 MiB; objects here are far
        // smaller, so each closure runs once.
        batch
            .update(|tx| tx.create(o.take().expect("objects are far below the size limit")))
            .await
            .expect("create");
    }
    batch.commit().await.expect("commit");
}

pub fn run(args: Args) -> Report {
    let rt = rt();
    let mut report = Report::new("store");
    report.notes.push(format!(
        "{} nodes, {} tasks, {} watch subscribers; local proposer (no Raft); times per operation",
        args.nodes, args.tasks, args.subscribers
    ));

    // --- Memory, in a fresh store -------------------------------------------------------
    crate::report::progress(format!(
        "memory: loading {} nodes and {} tasks into a fresh store",
        args.nodes, args.tasks
    ));
    let (node_bytes, task_bytes, snapshot_per_task) = {
        let store = Store::new();
        // Objects are made as they are inserted, so the growth is the store's alone.
        let before = rss();
        rt.block_on(create_batched(&store, (0..args.nodes).map(node)));
        let after_nodes = rss();
        let services: Vec<Service> = (0..SERVICES).map(service).collect();
        rt.block_on(create_batched(&store, services.iter().cloned()));
        let after_services = rss();
        rt.block_on(create_batched(
            &store,
            (0..args.tasks).map(|i| task(i, &services, args.nodes)),
        ));
        let after_tasks = rss();
        let snapshot = store.snapshot();
        let task_snapshot_bytes: usize =
            snapshot.tasks.iter().map(prost::Message::encoded_len).sum();
        (
            (after_nodes.saturating_sub(before)) as f64 / args.nodes as f64,
            (after_tasks.saturating_sub(after_services)) as f64 / args.tasks as f64,
            task_snapshot_bytes as f64 / args.tasks as f64,
        )
    };

    // --- Timing, in a second store ------------------------------------------------------
    let store = Store::new();
    let nodes: Vec<Node> = (0..args.nodes).map(node).collect();

    // Create: batched, 200 per transaction. SwarmKit's BenchmarkCreateNode puts every node in
    // one transaction, which has no size limit there; ours caps transactions at 1.5 MiB, so a
    // batch is the closest equivalent.
    let start = Instant::now();
    rt.block_on(create_batched(&store, nodes.iter().cloned()));
    report.row(
        "create node (batched, 200 per transaction)",
        per_op(start.elapsed(), args.nodes),
        "µs",
        Some(10.8),
        Some(10.8 / 5.0),
    );

    let store2 = Store::new();
    let start = Instant::now();
    rt.block_on(async {
        for n in nodes.iter().take(args.nodes) {
            store2
                .update(|tx| tx.create(n.clone()))
                .await
                .expect("create");
        }
    });
    report.row(
        "create node (one per transaction)",
        per_op(start.elapsed(), args.nodes),
        "µs",
        None,
        None,
    );
    drop(store2);

    // Update: one node per transaction (SwarmKit's UpdateNodeTransaction).
    let start = Instant::now();
    rt.block_on(async {
        for n in &nodes {
            let nid = n.meta.as_ref().expect("meta").id.clone();
            store
                .update(|tx| {
                    let mut node = (*tx.get::<Node>(&nid).expect("node")).clone();
                    node.spec.as_mut().expect("spec").availability =
                        node_spec::Availability::Pause as i32;
                    tx.update(node)
                })
                .await
                .expect("update");
        }
    });
    report.row(
        "update node (own transaction)",
        per_op(start.elapsed(), args.nodes),
        "µs",
        Some(27.6),
        Some(27.6 / 5.0),
    );

    // Update: many nodes in one transaction (SwarmKit's UpdateNode, which writes nodes it
    // already holds; the store copies each one, as SwarmKit's does).
    let count = args.nodes.min(5_000);
    let current: Vec<Node> = store.view(|tx| {
        tx.find::<Node>(By::All)
            .iter()
            .take(count)
            .map(|n| (**n).clone())
            .collect()
    });
    let start = Instant::now();
    rt.block_on(store.update(|tx| {
        for n in &current {
            let mut node = n.clone();
            node.spec.as_mut().expect("spec").availability = node_spec::Availability::Active as i32;
            tx.update(node)?;
        }
        Ok(())
    }))
    .expect("update");
    report.row(
        "update node (many per transaction)",
        per_op(start.elapsed(), count),
        "µs",
        Some(8.3),
        Some(8.3 / 5.0),
    );

    // Get by ID.
    let ids: Vec<String> = nodes
        .iter()
        .map(|n| n.meta.as_ref().expect("meta").id.clone())
        .collect();
    let rounds = 20;
    let start = Instant::now();
    for round in 0..rounds {
        for i in 0..ids.len() {
            black_box(store.view(|tx| tx.get::<Node>(&ids[(i * 7919 + round) % ids.len()])));
        }
    }
    report.row(
        "get node by ID",
        per_op(start.elapsed(), rounds * ids.len()),
        "µs",
        Some(1.08),
        Some(1.08 / 5.0),
    );

    // Find all nodes.
    let rounds = 50;
    let start = Instant::now();
    for _ in 0..rounds {
        black_box(store.view(|tx| tx.find::<Node>(By::All)));
    }
    report.row(
        format!("list all {} nodes", args.nodes),
        per_op(start.elapsed(), rounds),
        "µs",
        Some(7100.0),
        Some(7100.0 / 5.0),
    );

    // Find by name.
    let names: Vec<String> = (0..args.nodes)
        .map(|i| format!("host-{i:05}.example.internal"))
        .collect();
    let start = Instant::now();
    for n in &names {
        black_box(store.view(|tx| tx.find::<Node>(By::Name(n))));
    }
    report.row(
        "find node by name",
        per_op(start.elapsed(), names.len()),
        "µs",
        None,
        None,
    );

    // Tasks: batched creation, finds by index.
    let services: Vec<Service> = (0..SERVICES).map(service).collect();
    rt.block_on(create_batched(&store, services.iter().cloned()));
    let tasks: Vec<Task> = (0..args.tasks)
        .map(|i| task(i, &services, args.nodes))
        .collect();
    let start = Instant::now();
    rt.block_on(create_batched(&store, tasks.into_iter()));
    report.row(
        format!("create task (batched, {} total)", args.tasks),
        per_op(start.elapsed(), args.tasks),
        "µs",
        None,
        None,
    );

    let service_ids: Vec<String> = (0..SERVICES).map(|s| id("s", s)).collect();
    let start = Instant::now();
    let mut found = 0;
    for s in &service_ids {
        found += store.view(|tx| tx.find::<Task>(By::Service(s)).len());
    }
    black_box(found);
    report.row(
        format!("find tasks by service ({} each)", args.tasks / SERVICES),
        per_op(start.elapsed(), service_ids.len()),
        "µs",
        None,
        None,
    );

    let start = Instant::now();
    for nid in ids.iter().take(1000) {
        black_box(store.view(|tx| tx.find::<Task>(By::Node(nid))));
    }
    report.row(
        format!(
            "find tasks by node ({} each)",
            args.tasks / args.nodes.max(1)
        ),
        per_op(start.elapsed(), 1000.min(ids.len())),
        "µs",
        None,
        None,
    );

    let start = Instant::now();
    black_box(store.view(|tx| tx.count_by::<Task>(By::DesiredState(TaskState::Running))));
    report.row(
        "count tasks by desired state",
        per_op(start.elapsed(), 1),
        "µs",
        None,
        None,
    );

    // Watch fan-out: each commit delivered to every subscriber.
    let mut subs: Vec<_> = (0..args.subscribers)
        .map(|_| store.watch(Filter::all()))
        .collect();
    let commits = 200;
    let start = Instant::now();
    rt.block_on(async {
        for i in 0..commits {
            let nid = ids[i % ids.len()].clone();
            store
                .update(|tx| {
                    let mut node = (*tx.get::<Node>(&nid).expect("node")).clone();
                    node.spec.as_mut().expect("spec").availability = (i % 2) as i32;
                    tx.update(node)
                })
                .await
                .expect("update");
        }
    });
    let publish = start.elapsed();
    let start = Instant::now();
    let mut delivered = 0usize;
    for sub in &mut subs {
        while let Ok(Some(e)) = sub.try_next() {
            black_box(&e);
            delivered += 1;
        }
    }
    let receive = start.elapsed();
    assert_eq!(
        delivered,
        commits * args.subscribers,
        "every subscriber sees every commit"
    );
    report.row(
        format!(
            "watch: publish one commit ({} subscribers)",
            args.subscribers
        ),
        per_op(publish, commits),
        "µs",
        None,
        None,
    );
    report.row(
        "watch: deliver one event to one subscriber",
        per_op(receive, delivered),
        "µs",
        None,
        None,
    );

    // Snapshot of the whole store.
    let start = Instant::now();
    let bytes = store.state_machine().encode_snapshot();
    let encode = start.elapsed();
    let start = Instant::now();
    let decoded: shoal_api::v1::StoreSnapshot =
        prost::Message::decode(bytes.as_slice()).expect("decode");
    Store::new().restore(decoded).expect("restore");
    let restore = start.elapsed();
    report.row(
        format!(
            "snapshot write ({} objects, {} MB)",
            args.nodes + args.tasks,
            bytes.len() / 1_000_000
        ),
        encode.as_secs_f64() * 1e3,
        "ms",
        None,
        None,
    );
    report.row(
        "snapshot restore (decode + rebuild indexes)",
        restore.as_secs_f64() * 1e3,
        "ms",
        None,
        None,
    );

    report.row(
        "resident memory per node",
        node_bytes,
        "B",
        Some(2550.0),
        Some(1024.0),
    );
    report.row(
        "resident memory per task",
        task_bytes,
        "B",
        Some(4500.0),
        Some(1024.0),
    );
    report.row(
        "snapshot bytes per task",
        snapshot_per_task,
        "B",
        None,
        Some(300.0),
    );
    report
}
