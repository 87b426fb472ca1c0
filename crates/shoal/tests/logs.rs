//! `shoal service logs` end to end: a manager and a worker daemon in this process, a service's
//! tasks written into the store for the worker (as the orchestrator will), run by the process
//! executor; the real `shoal` binary asks the manager for their logs, which come from the
//! worker's agent through the leader's log broker.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use shoal_api::shared::TaskSpecFields;
use shoal_api::v1::{
    Annotations, Cluster, Meta, ProcessSpec, ReplicatedService, Service, ServiceSpec, Task,
    TaskState, TaskStatus, service_spec, task_spec,
};
use shoal_node::{Daemon, DaemonConfig};
use shoal_store::{By, Reader, Store};
use support::in_process::{free_addr, shim, until};

const LIMIT: Duration = Duration::from_secs(30);

fn running(store: &Store, id: &str) -> bool {
    store
        .view(|tx| tx.get::<Task>(id))
        .and_then(|t| t.status.clone())
        .is_some_and(|s| s.state == TaskState::Running as i32)
}

fn task(service: &Service, slot: u64, node: &str, script: &str) -> Task {
    let annotations = service.spec.as_ref().unwrap().annotations.clone().unwrap();
    Task {
        meta: Some(Meta {
            id: shoal_api::id::new_id(),
            ..Default::default()
        }),
        spec: Some(
            TaskSpecFields {
                runtime: Some(task_spec::Runtime::Process(Box::new(ProcessSpec {
                    command: "sh".into(),
                    args: vec!["-c".into(), script.into()],
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
        service_annotations: Some(Box::new(annotations)),
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

/// Runs `shoal -s SOCKET args…` to its end: (exit code, stdout, stderr).
fn shoal(socket: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .arg("-s")
        .arg(socket)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `shoal` run off the async runtime's threads.
async fn shoal_async(socket: PathBuf, args: Vec<String>) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        shoal(&socket, &args)
    })
    .await
    .unwrap()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

async fn eventually<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    until(what, LIMIT, f).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_logs_come_from_the_workers_through_the_leader() {
    let dir = tempfile::tempdir().unwrap();
    let mut manager_config = DaemonConfig::new(dir.path().join("m1"));
    manager_config.listen_remote_api = free_addr();
    manager_config.init = true;
    manager_config.process_shim = shim();
    let manager = Daemon::start(manager_config).await.unwrap().spawn();
    let socket = dir.path().join("m1").join("control.sock");
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
    worker_config.hostname = "worker-1".into();
    worker_config.process_shim = shim();
    let worker = Daemon::start(worker_config).await.unwrap();
    let worker_id = worker.identity().node_id.clone();
    let (stop_worker, worker_stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(worker.serve(async move {
        let _ = worker_stopped.await;
    }));

    // What the orchestrator will write: a service and two tasks on the worker. Slot 1 prints
    // three lines and a line on stderr, then waits for a file to say its last line.
    let service = Service {
        meta: Some(Meta {
            id: shoal_api::id::new_id(),
            ..Default::default()
        }),
        spec: Some(ServiceSpec {
            annotations: Some(Annotations {
                name: "web".into(),
                ..Default::default()
            }),
            // Two slots, both filled below: the orchestrator has nothing to add.
            mode: Some(service_spec::Mode::Replicated(ReplicatedService {
                replicas: 2,
            })),
            ..Default::default()
        }),
        ..Default::default()
    };
    let go = dir.path().join("go");
    let one = task(
        &service,
        1,
        &worker_id,
        &format!(
            "echo one-a; echo one-b; echo one-c; echo oops >&2; \
             while [ ! -e {go} ]; do sleep 0.05; done; echo one-late; exec sleep 1000",
            go = go.display()
        ),
    );
    let two = task(&service, 2, &worker_id, "echo two-a; exec sleep 1000");
    let (one_id, two_id) = (
        one.meta.as_ref().unwrap().id.clone(),
        two.meta.as_ref().unwrap().id.clone(),
    );
    store
        .update(|tx| {
            tx.create(service.clone())?;
            tx.create(one)?;
            tx.create(two)
        })
        .await
        .unwrap();
    eventually("both tasks running", || {
        (running(&store, &one_id) && running(&store, &two_id)).then_some(())
    })
    .await;

    // Every line, each with its task and node; stderr lines on stderr.
    let (out, err) = eventually("all lines", || {
        let (code, out, err) = shoal(&socket, &["service", "logs", "web"]);
        assert_eq!(code, 0, "{out}\n{err}");
        (out.contains("two-a") && out.contains("one-c") && err.contains("oops"))
            .then_some((out, err))
    })
    .await;
    let short = |id: &str| id[..12].to_string();
    let one_prefix = format!("web.1.{}@worker-1", short(&one_id));
    let two_prefix = format!("web.2.{}@worker-1", short(&two_id));
    for (line, prefix) in [
        ("one-a", &one_prefix),
        ("one-b", &one_prefix),
        ("one-c", &one_prefix),
        ("two-a", &two_prefix),
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(prefix.as_str()) && l.ends_with(&format!("| {line}"))),
            "no {line} from {prefix} in:\n{out}"
        );
    }
    assert!(!out.contains("oops"), "stderr went to stdout:\n{out}");
    assert!(
        err.lines()
            .any(|l| l.starts_with(one_prefix.as_str()) && l.ends_with("| oops")),
        "{err}"
    );
    // Lines of one task keep their order.
    let a = out.find("one-a").unwrap();
    let b = out.find("one-b").unwrap();
    let c = out.find("one-c").unwrap();
    assert!(a < b && b < c, "{out}");

    // One task by ID prefix, its last two lines (of both streams), raw, with timestamps.
    let (code, out, err) = shoal(
        &socket,
        &[
            "service",
            "logs",
            "--tail",
            "2",
            "--raw",
            "-t",
            &one_id[..10],
        ],
    );
    assert_eq!(code, 0, "{err}");
    for (printed, want) in [(&out, "one-c"), (&err, "oops")] {
        let lines: Vec<&str> = printed.lines().collect();
        assert_eq!(lines.len(), 1, "{printed}");
        let (timestamp, text) = lines[0].split_once(' ').unwrap();
        assert_eq!(text, want);
        assert!(
            timestamp.starts_with("20") && timestamp.ends_with('Z'),
            "{timestamp}"
        );
    }
    // Nothing since a moment from now.
    let (code, out, _) = shoal(
        &socket,
        &[
            "service",
            "logs",
            "--since",
            &format!(
                "{}",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs()
                    + 3600
            ),
            "web",
        ],
    );
    assert_eq!((code, out.as_str()), (0, ""));

    // Following: the line written after the command started arrives.
    let mut follower = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .arg("-s")
        .arg(&socket)
        .args(["service", "logs", "-f", "--raw", &one_id])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = follower.stdout.take().unwrap();
    let (lines_tx, mut lines_rx) = tokio::sync::mpsc::unbounded_channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let saw = |seen: &Vec<String>, want: &str| seen.iter().any(|l| l == want);
    let deadline = tokio::time::Instant::now() + LIMIT;
    while !saw(&seen, "one-c") {
        let line = tokio::time::timeout_at(deadline, lines_rx.recv())
            .await
            .expect("the history arrives")
            .expect("the follower is still running");
        seen.push(line);
    }
    std::fs::write(&go, b"").unwrap();
    while !saw(&seen, "one-late") {
        let line = tokio::time::timeout_at(deadline, lines_rx.recv())
            .await
            .expect("the new line arrives while following")
            .expect("the follower is still running");
        seen.push(line);
    }
    follower.kill().unwrap();
    follower.wait().unwrap();
    reader.join().unwrap();

    // Unknown targets are refused, saying so.
    let (code, _, err) = shoal_async(socket.clone(), args(&["service", "logs", "nope"])).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("Error: no such service or task: nope"),
        "{err}"
    );

    // The service scales to 0: the orchestrator stops both tasks (their logs stay until
    // they are removed)...
    store
        .update(|tx| {
            let mut s = (*tx
                .get::<Service>(service.meta.as_ref().unwrap().id.as_str())
                .unwrap())
            .clone();
            s.spec.as_mut().unwrap().mode =
                Some(service_spec::Mode::Replicated(ReplicatedService {
                    replicas: 0,
                }));
            tx.update(s)
        })
        .await
        .unwrap();
    eventually("both tasks shut down", || {
        [&one_id, &two_id]
            .iter()
            .all(|id| {
                store
                    .view(|tx| tx.get::<Task>(id))
                    .and_then(|t| t.status.clone())
                    .is_some_and(|s| s.state == TaskState::Shutdown as i32)
            })
            .then_some(())
    })
    .await;
    // ...and with the worker down, they cannot be had: the command fails naming the node.
    let _ = stop_worker.send(());
    worker.await.unwrap().unwrap();
    let (code, _, err) = shoal_async(socket.clone(), args(&["service", "logs", "web"])).await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("node {worker_id}")) && err.contains("not connected"),
        "{err}"
    );

    manager.stop().await.unwrap();
}
