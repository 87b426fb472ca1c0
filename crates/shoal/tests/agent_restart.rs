//! Tasks outlive their agent: a worker daemon stopped and started again adopts the programs
//! of its tasks (same PIDs, still RUNNING), learns how a task that ended while it was down
//! exited (from its shim), and stops a task that was removed while it was down.
//!
//! A manager and a worker daemon in this process (the manager's store stands in for the
//! orchestrator); the tasks are real processes under `shoal process-shim`.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use shoal_api::shared::TaskSpecFields;
use shoal_api::v1::{Cluster, Meta, ProcessSpec, Task, TaskState, TaskStatus, task_spec};
use shoal_node::{Daemon, DaemonConfig};
use shoal_store::{By, Reader, Store};
use support::in_process::{Served, free_addr, small_shim as shim, until};

const LIMIT: Duration = Duration::from_secs(30);

fn status(store: &Store, id: &str) -> TaskStatus {
    store
        .view(|tx| tx.get::<Task>(id))
        .and_then(|t| t.status.clone())
        .unwrap_or_default()
}

fn alive(pid: i32) -> bool {
    // A zombie is not alive: its shim has not reaped it yet, but it runs no more.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s[s.rfind(')').unwrap() + 1..].trim_start().starts_with('Z'))
}

/// A process task on `node` running `script`, which writes its PID to `pid_file` first.
fn task(node: &str, pid_file: &Path, script: &str) -> Task {
    Task {
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
                        format!("echo $$ > {}; {script}", pid_file.display()),
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
        node_id: node.into(),
        desired_state: TaskState::Running as i32,
        status: Some(TaskStatus {
            state: TaskState::Assigned as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn read_pid(file: &PathBuf) -> Option<i32> {
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

async fn eventually<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    until(what, LIMIT, f).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_adopts_its_tasks_and_catches_up_with_what_happened_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let mut manager_config = DaemonConfig::new(dir.path().join("m1"));
    manager_config.listen_remote_api = free_addr();
    manager_config.init = true;
    manager_config.process_shim = shim();
    let manager = Daemon::start(manager_config).await.unwrap().spawn();
    let store = manager.store.clone();
    eventually("a leader", || {
        manager.handle.status().is_leader.then_some(())
    })
    .await;
    let token = store
        .view(|tx| tx.find::<Cluster>(By::All).pop())
        .and_then(|c| c.root_ca.clone())
        .and_then(|r| r.join_tokens)
        .unwrap()
        .worker;
    let worker_config = |join: bool| {
        let mut config = DaemonConfig::new(dir.path().join("w1"));
        config.listen_remote_api = free_addr();
        if join {
            config.join_addr = Some(manager.addr.to_string());
            config.join_token = Some(token.clone());
        }
        config.process_shim = shim();
        config
    };
    let (worker, node) = Served::start(worker_config(true)).await;

    // Three tasks: one that runs on, one that will exit with 7 while the agent is down, one
    // that will be removed while the agent is down.
    let go = dir.path().join("go");
    let pid_files: Vec<PathBuf> = (0..3).map(|i| dir.path().join(format!("pid{i}"))).collect();
    let steady = task(&node, &pid_files[0], "exec sleep 1000");
    let exits = task(
        &node,
        &pid_files[1],
        &format!(
            "while [ ! -e {} ]; do sleep 0.05; done; exit 7",
            go.display()
        ),
    );
    let removed = task(&node, &pid_files[2], "exec sleep 1000");
    let ids: Vec<String> = [&steady, &exits, &removed]
        .iter()
        .map(|t| t.meta.as_ref().unwrap().id.clone())
        .collect();
    store
        .update(|tx| {
            tx.create(steady)?;
            tx.create(exits)?;
            tx.create(removed)
        })
        .await
        .unwrap();
    eventually("three running tasks", || {
        ids.iter()
            .all(|id| status(&store, id).state == TaskState::Running as i32)
            .then_some(())
    })
    .await;
    let pids: Vec<i32> = {
        let mut pids = Vec::new();
        for file in &pid_files {
            pids.push(eventually("a task's PID", || read_pid(file)).await);
        }
        pids
    };

    // The agent goes; the programs stay.
    worker.stop().await;
    for pid in &pids {
        assert!(alive(*pid), "task process {pid} died with its agent");
    }
    // Meanwhile: one task ends with 7, one is removed.
    std::fs::write(&go, b"").unwrap();
    eventually("the task to exit", || (!alive(pids[1])).then_some(())).await;
    store.update(|tx| tx.delete::<Task>(&ids[2])).await.unwrap();
    assert!(alive(pids[0]) && alive(pids[2]));

    // The agent comes back.
    let (worker, _) = Served::start(worker_config(false)).await;
    // The removed task is stopped...
    eventually("the removed task's process to end", || {
        (!alive(pids[2])).then_some(())
    })
    .await;
    // ...the one that ended is reported with its real exit code...
    let ended = eventually("the exit to be reported", || {
        let s = status(&store, &ids[1]);
        (s.state == TaskState::Failed as i32).then_some(s)
    })
    .await;
    assert!(ended.message.contains("exited with code 7"), "{ended:?}");
    // ...and the steady one runs on, the same process, never restarted.
    let steady = status(&store, &ids[0]);
    assert_eq!(steady.state, TaskState::Running as i32, "{steady:?}");
    assert!(alive(pids[0]));
    assert_eq!(
        read_pid(&pid_files[0]),
        Some(pids[0]),
        "the task was restarted"
    );
    match steady.runtime_status {
        Some(shoal_api::v1::task_status::RuntimeStatus::Process(p)) => assert_eq!(p.pid, pids[0]),
        other => panic!("no process status: {other:?}"),
    }

    // Clean up: the steady task is told to stop.
    let mut stopping = (*store.view(|tx| tx.get::<Task>(&ids[0])).unwrap()).clone();
    stopping.desired_state = TaskState::Shutdown as i32;
    store.update(|tx| tx.update(stopping)).await.unwrap();
    eventually("the steady task to stop", || {
        (!alive(pids[0])).then_some(())
    })
    .await;
    worker.stop().await;
    manager.stop().await.unwrap();
}
