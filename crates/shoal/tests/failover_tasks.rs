//! A leader failover keeps every task running: three managers and a worker in this process,
//! a task running on the worker as a real process; the leader stops; the worker's agent moves
//! its session to the new leader, which sees the node READY and the task RUNNING — the same
//! process, never restarted — through several heartbeat periods after the election.

mod support;

use std::time::{Duration, Instant};

use shoal_api::shared::TaskSpecFields;
use shoal_api::v1::{
    Cluster, Meta, Node, ProcessSpec, Task, TaskState, TaskStatus, node_status, task_spec,
};
use shoal_node::{Daemon, DaemonConfig, RunningDaemon};
use shoal_store::{By, Reader, Store};
use support::in_process::{free_addr, join_tokens, small_shim as shim, until};

const LIMIT: Duration = Duration::from_secs(40);

async fn manager(
    dir: &std::path::Path,
    name: &str,
    join: Option<(String, String)>,
) -> RunningDaemon {
    let mut config = DaemonConfig::new(dir.join(name));
    config.listen_remote_api = free_addr();
    config.process_shim = shim();
    match join {
        None => config.init = true,
        Some((addr, token)) => {
            config.join_addr = Some(addr);
            config.join_token = Some(token);
        }
    }
    Daemon::start(config).await.unwrap().spawn()
}

fn node_state(store: &Store, id: &str) -> i32 {
    store
        .view(|tx| tx.get::<Node>(id))
        .and_then(|n| n.status.clone())
        .map(|s| s.state)
        .unwrap_or_default()
}

fn task_status(store: &Store, id: &str) -> TaskStatus {
    store
        .view(|tx| tx.get::<Task>(id))
        .and_then(|t| t.status.clone())
        .unwrap_or_default()
}

async fn eventually<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    until(what, LIMIT, f).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_failover_keeps_tasks_running_and_their_node_ready() {
    let dir = tempfile::tempdir().unwrap();
    let m1 = manager(dir.path(), "m1", None).await;
    eventually("m1 to lead", || m1.handle.status().is_leader.then_some(())).await;
    let joined = join_tokens(&m1.store);
    let m2 = manager(
        dir.path(),
        "m2",
        Some((m1.addr.to_string(), joined.manager.clone())),
    )
    .await;
    let m3 = manager(
        dir.path(),
        "m3",
        Some((m1.addr.to_string(), joined.manager.clone())),
    )
    .await;
    eventually("three voters", || {
        (m1.handle.status().voters == 3).then_some(())
    })
    .await;
    // Heartbeats every second: DOWN would come after 3 s, the post-election grace after 6 s.
    m1.store
        .update(|tx| {
            let mut cluster = (*tx.find::<Cluster>(By::All).pop().unwrap()).clone();
            let dispatcher = cluster
                .spec
                .as_mut()
                .unwrap()
                .dispatcher
                .get_or_insert_with(Default::default);
            dispatcher.heartbeat_period = Some(prost_types::Duration {
                seconds: 1,
                nanos: 0,
            });
            tx.update(cluster)
        })
        .await
        .unwrap();

    let mut worker_config = DaemonConfig::new(dir.path().join("w1"));
    worker_config.listen_remote_api = free_addr();
    worker_config.join_addr = Some(m1.addr.to_string());
    worker_config.join_token = Some(joined.worker.clone());
    worker_config.process_shim = shim();
    let worker = Daemon::start(worker_config).await.unwrap();
    let node = worker.identity().node_id.clone();
    let (stop_worker, worker_stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(worker.serve(async move {
        let _ = worker_stopped.await;
    }));

    let marker = dir.path().join("pid");
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
        node_id: node.clone(),
        desired_state: TaskState::Running as i32,
        status: Some(TaskStatus {
            state: TaskState::Assigned as i32,
            ..Default::default()
        }),
        ..Default::default()
    };
    let id = task.meta.as_ref().unwrap().id.clone();
    m1.store.update(|tx| tx.create(task)).await.unwrap();
    eventually("the task to run", || {
        (task_status(&m1.store, &id).state == TaskState::Running as i32).then_some(())
    })
    .await;
    let pid: i32 = eventually("the task's PID", || {
        std::fs::read_to_string(&marker).ok()?.trim().parse().ok()
    })
    .await;
    let running_since = task_status(&m1.store, &id).timestamp;

    // The leader goes.
    m1.stop().await.unwrap();
    let survivors = [&m2, &m3];
    let leader = eventually("a new leader", || {
        survivors
            .iter()
            .find(|m| m.handle.status().is_leader)
            .copied()
    })
    .await;
    // Through more than the grace period and three heartbeat periods after it.
    let watch_until = Instant::now() + Duration::from_secs(12);
    while Instant::now() < watch_until {
        let state = node_state(&leader.store, &node);
        assert_ne!(
            state,
            node_status::State::Down as i32,
            "the failover marked the worker down"
        );
        let status = task_status(&leader.store, &id);
        assert_eq!(
            status.state,
            TaskState::Running as i32,
            "the task left RUNNING: {status:?}"
        );
        assert!(
            std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "the task's process died"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        node_state(&leader.store, &node),
        node_status::State::Ready as i32
    );
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap().trim(),
        pid.to_string(),
        "the task was started again"
    );
    assert_eq!(
        task_status(&leader.store, &id).timestamp,
        running_since,
        "the task reported a new status"
    );

    // Clean up: the task stops through the new leader.
    let mut stopping = (*leader.store.view(|tx| tx.get::<Task>(&id)).unwrap()).clone();
    stopping.desired_state = TaskState::Shutdown as i32;
    leader.store.update(|tx| tx.update(stopping)).await.unwrap();
    eventually("the task to stop", || {
        (task_status(&leader.store, &id).state == TaskState::Shutdown as i32).then_some(())
    })
    .await;
    let _ = stop_worker.send(());
    worker.await.unwrap().unwrap();
    m2.stop().await.unwrap();
    m3.stop().await.unwrap();
}
