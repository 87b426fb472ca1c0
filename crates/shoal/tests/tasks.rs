//! A task assigned to a worker really runs, end to end: a manager and a worker daemon in
//! this process, a task written into the manager's store for the worker, the worker's agent
//! receives it through its assignments, the process executor runs it, and its statuses come
//! back through the dispatcher into the store — RUNNING, then SHUTDOWN when asked to stop.
//!
//! It lives in this crate because the process executor runs each task under a shim, `shoal
//! process-shim`, and only here is the `shoal` binary built for the test
//! (`CARGO_BIN_EXE_shoal`); the daemons in this test binary are told to use it.

mod support;

use std::time::{Duration, Instant};

use shoal_api::shared::TaskSpecFields;
use shoal_api::v1::{Cluster, Meta, Node, ProcessSpec, Task, TaskState, TaskStatus, task_spec};
use shoal_node::{Daemon, DaemonConfig};
use shoal_store::{By, Reader, Store};
use support::in_process::{free_addr, shim};

async fn wait_for_state(store: &Store, id: &str, state: TaskState) -> Task {
    let start = Instant::now();
    loop {
        if let Some(task) = store.view(|tx| tx.get::<Task>(id))
            && task
                .status
                .as_ref()
                .is_some_and(|s| s.state == state as i32)
        {
            return (*task).clone();
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "task {id} never reached {state:?}: {:?}",
            store
                .view(|tx| tx.get::<Task>(id))
                .and_then(|t| t.status.clone())
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assigned_task_runs_on_its_worker_and_stops_when_told() {
    let dir = tempfile::tempdir().unwrap();
    let mut manager_config = DaemonConfig::new(dir.path().join("m1"));
    manager_config.listen_remote_api = free_addr();
    manager_config.init = true;
    manager_config.process_shim = shim();
    let manager = Daemon::start(manager_config).await.unwrap().spawn();
    let store = manager.store.clone();
    let start = Instant::now();
    while !manager.handle.status().is_leader {
        assert!(start.elapsed() < Duration::from_secs(20), "no leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let token = store
        .view(|tx| tx.find::<Cluster>(By::All).pop())
        .and_then(|c| c.root_ca.clone())
        .and_then(|r| r.join_tokens)
        .unwrap()
        .worker;

    let mut worker_config = DaemonConfig::new(dir.path().join("w1"));
    worker_config.listen_remote_api = free_addr();
    worker_config.join_addr = Some(manager.addr.to_string());
    worker_config.join_token = Some(token);
    worker_config.process_shim = shim();
    let worker = Daemon::start(worker_config).await.unwrap();
    let worker_id = worker.identity().node_id.clone();
    let node_id = worker_id.clone();
    let (stop_worker, worker_stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(worker.serve(async move {
        let _ = worker_stopped.await;
    }));

    // The worker registered what its executor runs and has.
    let start = Instant::now();
    let description = loop {
        if let Some(d) = store
            .view(|tx| tx.get::<Node>(&worker_id))
            .and_then(|n| n.description.as_deref().cloned())
        {
            break d;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "no description");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(description.runtimes.contains(&"process".to_string()));
    assert!(
        description
            .resources
            .is_some_and(|r| r.nano_cpus > 0 && r.memory_bytes > 0)
    );

    // What the orchestrator and scheduler will write: a task assigned to the worker.
    let marker = dir.path().join("ran");
    let task = Task {
        meta: Some(Meta {
            id: shoal_api::id::new_id(),
            ..Default::default()
        }),
        spec: Some(
            TaskSpecFields {
                runtime: Some(task_spec::Runtime::Process(Box::new(ProcessSpec {
                    command: "sh".into(),
                    args: vec![
                        "-c".into(),
                        format!("echo $$ > {}; exec sleep 1000", marker.display()),
                    ],
                    stop_grace_period: Some(prost_types::Duration {
                        seconds: 1,
                        nanos: 0,
                    }),
                    ..Default::default()
                }))),
                ..Default::default()
            }
            .into(),
        ),
        node_id,
        desired_state: TaskState::Running as i32,
        status: Some(TaskStatus {
            state: TaskState::Assigned as i32,
            ..Default::default()
        }),
        ..Default::default()
    };
    let id = task.meta.as_ref().unwrap().id.clone();
    store.update(|tx| tx.create(task)).await.unwrap();

    // It runs: RUNNING in the manager's store, and the process exists.
    wait_for_state(&store, &id, TaskState::Running).await;
    let start = Instant::now();
    let pid: i32 = loop {
        if let Ok(text) = std::fs::read_to_string(&marker)
            && let Ok(pid) = text.trim().parse()
        {
            break pid;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "no marker");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    // Its parent is its shim, which writes its output log.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let parent: u32 = stat[stat.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(parent, std::process::id());
    let cmdline = std::fs::read(format!("/proc/{parent}/cmdline")).unwrap();
    assert!(
        cmdline.split(|b| *b == 0).any(|arg| arg == b"process-shim"),
        "{}",
        String::from_utf8_lossy(&cmdline)
    );
    assert!(
        dir.path()
            .join(format!("w1/worker/logs/{id}/output.log"))
            .exists()
    );

    // Told to stop: SHUTDOWN in the store, and the process is gone.
    let mut stopping = (*store.view(|tx| tx.get::<Task>(&id)).unwrap()).clone();
    stopping.desired_state = TaskState::Shutdown as i32;
    store.update(|tx| tx.update(stopping)).await.unwrap();
    wait_for_state(&store, &id, TaskState::Shutdown).await;
    let start = Instant::now();
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the process outlived its task"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let _ = stop_worker.send(());
    worker.await.unwrap().unwrap();
    manager.stop().await.unwrap();
}
