//! Container tasks through a real daemon: a manager and a worker started with `--executor
//! docker` in this process, tasks written into the store for the worker; the containers run
//! on this machine's Docker Engine from the locally built test image
//! (`scripts/build-test-image.sh`; there is no registry). Their logs come back through
//! `shoal service logs`, a missing image is REJECTED naming it.
//!
//! Without an engine the test skips, saying so — unless `SHOAL_REQUIRE_DOCKER=1` (CI), where
//! it fails.

mod support;

use std::process::Command;
use std::time::Duration;

use shoal_api::shared::TaskSpecFields;
use shoal_api::v1::{
    Annotations, Cluster, ContainerSpec, Meta, Node, ReplicatedService, RestartPolicy, Service,
    ServiceSpec, Task, TaskState, TaskStatus, restart_policy, service_spec, task_spec,
};
use shoal_node::{Daemon, DaemonConfig, ExecutorKind};
use shoal_store::{By, Reader, Store};
use support::in_process::{free_addr, until};

const IMAGE: &str = "shoal-test/busybox:latest";
const LIMIT: Duration = Duration::from_secs(60);

/// Whether the engine answers (with the test image built); panics when it must and does not.
fn docker_ready() -> bool {
    support::engine::engine_with_test_image()
}

fn status(store: &Store, id: &str) -> TaskStatus {
    store
        .view(|tx| tx.get::<Task>(id))
        .and_then(|t| t.status.clone())
        .unwrap_or_default()
}

fn container_task(service: &Service, slot: u64, node: &str, image: &str, script: &str) -> Task {
    Task {
        meta: Some(Meta {
            id: shoal_api::id::new_id(),
            ..Default::default()
        }),
        spec: Some(
            TaskSpecFields {
                runtime: Some(task_spec::Runtime::Container(Box::new(ContainerSpec {
                    image: image.into(),
                    command: vec!["sh".into(), "-c".into()],
                    args: vec![script.into()],
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
        service_id: service.meta.as_ref().unwrap().id.clone(),
        service_annotations: service
            .spec
            .as_ref()
            .and_then(|s| s.annotations.clone())
            .map(Box::new),
        slot,
        node_id: node.into(),
        desired_state: TaskState::Running as i32,
        status: Some(TaskStatus {
            state: TaskState::Assigned as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn containers_of(task_id: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=com.docker.swarm.task.id={task_id}"),
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

async fn eventually<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    until(what, LIMIT, f).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_tasks_run_on_the_engine_and_their_logs_reach_the_cli() {
    if !docker_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut manager_config = DaemonConfig::new(dir.path().join("m1"));
    manager_config.listen_remote_api = free_addr();
    manager_config.init = true;
    manager_config.executor = ExecutorKind::Docker;
    let manager = Daemon::start(manager_config).await.unwrap().spawn();
    let socket = dir.path().join("m1/control.sock");
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
    let mut worker_config = DaemonConfig::new(dir.path().join("w1"));
    worker_config.listen_remote_api = free_addr();
    worker_config.join_addr = Some(manager.addr.to_string());
    worker_config.join_token = Some(token);
    worker_config.hostname = "docker-worker".into();
    worker_config.executor = ExecutorKind::Docker;
    let worker = Daemon::start(worker_config).await.unwrap();
    let node = worker.identity().node_id.clone();
    let (stop_worker, worker_stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(worker.serve(async move {
        let _ = worker_stopped.await;
    }));

    // The node says it runs containers, and on which engine.
    let description = eventually("the worker's description", || {
        store
            .view(|tx| tx.get::<Node>(&node))
            .and_then(|n| n.description.as_deref().cloned())
            .filter(|d| !d.runtimes.is_empty())
    })
    .await;
    assert_eq!(description.runtimes, ["container"]);
    assert!(
        description
            .engine
            .as_ref()
            .is_some_and(|e| !e.engine_version.is_empty()),
        "{description:?}"
    );

    let service = Service {
        meta: Some(Meta {
            id: shoal_api::id::new_id(),
            ..Default::default()
        }),
        spec: Some(ServiceSpec {
            annotations: Some(Annotations {
                name: "shoal-docker-test".into(),
                ..Default::default()
            }),
            // Two slots, both filled below; a rejected task is not restarted.
            mode: Some(service_spec::Mode::Replicated(ReplicatedService {
                replicas: 2,
            })),
            task: Some(
                TaskSpecFields {
                    restart: Some(RestartPolicy {
                        condition: restart_policy::Condition::None as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }
                .into(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    };
    let running = container_task(
        &service,
        1,
        &node,
        IMAGE,
        "echo hello from a container; exec sleep 1000",
    );
    let missing = container_task(&service, 2, &node, "127.0.0.1:1/shoal-missing:none", "true");
    let (running_id, missing_id) = (
        running.meta.as_ref().unwrap().id.clone(),
        missing.meta.as_ref().unwrap().id.clone(),
    );
    store
        .update(|tx| {
            tx.create(service.clone())?;
            tx.create(running)?;
            tx.create(missing)
        })
        .await
        .unwrap();

    // The missing image: REJECTED, the message naming it; nothing was created.
    let rejected = eventually("the missing image to be rejected", || {
        let s = status(&store, &missing_id);
        (s.state == TaskState::Rejected as i32).then_some(s)
    })
    .await;
    assert!(
        rejected.err.contains("127.0.0.1:1/shoal-missing:none"),
        "{rejected:?}"
    );
    // The other runs, as a container named and labelled as docker swarm names them.
    eventually("the container task to run", || {
        (status(&store, &running_id).state == TaskState::Running as i32).then_some(())
    })
    .await;
    let ids = containers_of(&running_id);
    assert_eq!(ids.len(), 1, "{ids:?}");
    let name = Command::new("docker")
        .args(["inspect", "--format", "{{.Name}}", &ids[0]])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&name.stdout).trim(),
        format!("/shoal-docker-test.1.{running_id}")
    );

    // Its output, through the leader's log broker and the CLI.
    let socket_for_cli = socket.clone();
    let out = eventually("the container's output", || {
        let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
            .arg("-s")
            .arg(&socket_for_cli)
            .args(["service", "logs", "shoal-docker-test"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains("hello from a container").then_some(text)
    })
    .await;
    assert!(
        out.lines().any(|l| l.starts_with(&format!(
            "shoal-docker-test.1.{}@docker-worker",
            &running_id[..12]
        ))),
        "{out}"
    );

    // Scaled to 0: the orchestrator stops the task (SHUTDOWN); the service deleted, its
    // stopped tasks leave the store and the container goes with them.
    let service_id = service.meta.as_ref().unwrap().id.clone();
    store
        .update(|tx| {
            let mut s = (*tx.get::<Service>(&service_id).unwrap()).clone();
            s.spec.as_mut().unwrap().mode =
                Some(service_spec::Mode::Replicated(ReplicatedService {
                    replicas: 0,
                }));
            tx.update(s)
        })
        .await
        .unwrap();
    eventually("the container task to stop", || {
        (status(&store, &running_id).state == TaskState::Shutdown as i32).then_some(())
    })
    .await;
    store
        .update(|tx| tx.delete::<Service>(&service_id))
        .await
        .unwrap();
    eventually("the container to be removed", || {
        containers_of(&running_id).is_empty().then_some(())
    })
    .await;

    let _ = stop_worker.send(());
    worker.await.unwrap().unwrap();
    manager.stop().await.unwrap();
}
