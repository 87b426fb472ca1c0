//! Tests of the process executor on real processes. Every wait is bounded; nothing asserts
//! on timing.

use std::time::Duration;

use shoal_api::v1::{
    Meta, ProcessSpec, ProcessStatus, ResourceRequirements, Resources, Task, TaskSpecFields,
    TaskState, TaskStatus, task_spec, task_status,
};

use super::*;
use crate::state::{Action, Event, TaskMachine};
use crate::{ErrorClass, Executor};

const LIMIT: Duration = Duration::from_secs(30);

fn task(id: &str, script: &str) -> Task {
    Task {
        meta: Some(Meta {
            id: id.into(),
            ..Default::default()
        }),
        spec: Some(
            TaskSpecFields {
                runtime: Some(task_spec::Runtime::Process(Box::new(ProcessSpec {
                    command: "sh".into(),
                    args: vec!["-c".into(), script.into()],
                    env: vec!["GREETING=hello".into()],
                    stop_grace_period: Some(prost_types::Duration {
                        seconds: 0,
                        nanos: 300_000_000,
                    }),
                    ..Default::default()
                }))),
                ..Default::default()
            }
            .into(),
        ),
        ..Default::default()
    }
}

fn executor(dir: &Path) -> ProcessExecutor {
    let mut config = ProcessConfig::new(dir);
    config.poll_interval = Duration::from_millis(20);
    config.rotation.check_interval = Duration::from_millis(20);
    ProcessExecutor::new(config)
}

/// Runs a task to its end through the state machine, as the worker will.
async fn run(controller: &dyn Controller) -> TaskMachine {
    let mut machine = TaskMachine::default();
    assert_eq!(machine.begin().action, Action::Prepare);
    controller.prepare().await.unwrap();
    assert_eq!(machine.handle(Event::Prepared).action, Action::Start);
    controller.start().await.unwrap();
    assert_eq!(machine.handle(Event::Started).action, Action::Wait);
    let exit = controller.wait().await.unwrap();
    machine.handle(Event::Exited(exit));
    machine
}

async fn stdout(controller: &dyn Controller) -> String {
    let bytes = crate::read_all(
        controller
            .logs(LogsOptions {
                stderr: false,
                ..Default::default()
            })
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    String::from_utf8(bytes).unwrap()
}

/// Waits (bounded) until the task's stdout contains `needle`.
async fn wait_for_output(controller: &dyn Controller, needle: &str) -> String {
    let deadline = Instant::now() + LIMIT;
    loop {
        let out = stdout(controller).await;
        if out.contains(needle) {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in the output: {out:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn exit_codes_map_to_complete_and_failed() {
    let dir = tempfile::tempdir().unwrap();
    let executor = executor(dir.path());
    tokio::time::timeout(LIMIT, async {
        let ok = executor
            .controller(&task("ok", "echo $GREETING; exit 0"))
            .unwrap();
        let machine = run(&*ok).await;
        assert_eq!(machine.state(), TaskState::Complete);
        assert_eq!(stdout(&*ok).await, "hello\n");
        match ok.runtime_status() {
            Some(task_status::RuntimeStatus::Process(p)) => {
                assert!(p.pid > 1 && p.start_time > 0);
                assert_eq!((p.exit_code, p.signal), (0, 0));
            }
            other => panic!("{other:?}"),
        }

        let three = executor
            .controller(&task("three", "echo oops >&2; exit 3"))
            .unwrap();
        let machine = run(&*three).await;
        assert_eq!(machine.state(), TaskState::Failed);
        assert_eq!(machine.message(), "exited with code 3");
        let stderr = crate::read_all(
            three
                .logs(LogsOptions {
                    stdout: false,
                    ..Default::default()
                })
                .await
                .unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(stderr, b"oops\n");

        let killed = executor.controller(&task("killed", "kill -9 $$")).unwrap();
        let machine = run(&*killed).await;
        assert_eq!(machine.state(), TaskState::Failed);
        assert_eq!(machine.message(), "killed by signal SIGKILL (9)");
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn a_program_that_cannot_start_is_a_fatal_error() {
    let dir = tempfile::tempdir().unwrap();
    let executor = executor(dir.path());
    let mut spec = task("missing", "");
    if let Some(task_spec::Runtime::Process(p)) = &mut spec.spec.as_mut().unwrap().runtime {
        p.command = "/nonexistent/program".into();
    }
    let controller = executor.controller(&spec).unwrap();
    controller.prepare().await.unwrap();
    let error = controller.start().await.unwrap_err();
    assert_eq!(error.class(), ErrorClass::Fatal, "{error}");
    assert!(controller.wait().await.is_err());

    // Bad specs are refused before anything runs.
    let mut bad = task("badsignal", "true");
    if let Some(task_spec::Runtime::Process(p)) = &mut bad.spec.as_mut().unwrap().runtime {
        p.stop_signal = "SIGNOPE".into();
    }
    assert!(matches!(
        executor.controller(&bad),
        Err(ExecutorError::InvalidSpec(_))
    ));
    assert!(matches!(
        executor.controller(&task("../escape", "true")),
        Err(ExecutorError::InvalidSpec(_))
    ));
    assert!(matches!(
        executor.controller(&Task {
            meta: Some(Meta {
                id: "c".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        Err(ExecutorError::Unsupported(_))
    ));
}

#[tokio::test]
async fn a_process_ignoring_sigterm_is_killed_with_its_group() {
    let dir = tempfile::tempdir().unwrap();
    let executor = executor(dir.path());
    tokio::time::timeout(LIMIT, async {
        // The shell and its child both ignore SIGTERM (an ignored signal stays ignored across
        // fork and exec).
        let script = "trap '' TERM; sleep 1000 & echo child $!; echo ready; wait; wait";
        let controller = executor.controller(&task("stubborn", script)).unwrap();
        let mut machine = TaskMachine::default();
        machine.begin();
        controller.prepare().await.unwrap();
        machine.handle(Event::Prepared);
        controller.start().await.unwrap();
        machine.handle(Event::Started);
        let out = wait_for_output(&*controller, "ready").await;
        let child: i32 = out
            .lines()
            .find_map(|l| l.strip_prefix("child "))
            .unwrap()
            .parse()
            .unwrap();
        let (pid, _) = match controller.runtime_status() {
            Some(task_status::RuntimeStatus::Process(p)) => (p.pid, p.start_time),
            other => panic!("{other:?}"),
        };
        assert!(procfs::group_alive(pid));

        assert_eq!(
            machine.handle(Event::ShutdownRequested).action,
            Action::Shutdown
        );
        controller.shutdown().await.unwrap();
        let exit = controller.wait().await.unwrap();
        assert_eq!(exit, Exit::Signal(libc::SIGKILL), "SIGTERM was ignored");
        assert!(!procfs::group_alive(pid), "the whole group is gone");
        assert!(
            !matches!(procfs::stat(child), Ok(Some(s)) if s.alive() && s.pgrp == pid),
            "the grandchild is gone"
        );
        machine.handle(Event::Exited(exit));
        assert_eq!(machine.state(), TaskState::Shutdown);
        // Shutting down again is harmless.
        controller.shutdown().await.unwrap();
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn a_process_that_obeys_sigterm_stops_before_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let executor = executor(dir.path());
    tokio::time::timeout(LIMIT, async {
        let controller = executor
            .controller(&task("polite", "echo ready; exec sleep 1000"))
            .unwrap();
        controller.prepare().await.unwrap();
        controller.start().await.unwrap();
        wait_for_output(&*controller, "ready").await;
        controller.shutdown().await.unwrap();
        assert_eq!(
            controller.wait().await.unwrap(),
            Exit::Signal(libc::SIGTERM)
        );
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn stdout_is_logged_and_rotation_bounds_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ProcessConfig::new(dir.path());
    config.rotation = LogRotation {
        max_bytes: 1024,
        max_files: 3,
        check_interval: Duration::from_millis(5),
    };
    let executor = ProcessExecutor::new(config);
    tokio::time::timeout(LIMIT, async {
        let script =
            "i=0; while [ $i -lt 2000 ]; do echo line-$i-padding-padding; i=$((i+1)); done";
        let controller = executor
            .process_controller(&task("chatty", script))
            .unwrap();
        let machine = run(&controller).await;
        assert_eq!(machine.state(), TaskState::Complete);
        let path = controller.log_path(LogStream::Stdout);
        assert!(!logs::rotated(&path, 3).exists(), "at most 3 files");
        for p in [
            path.clone(),
            logs::rotated(&path, 1),
            logs::rotated(&path, 2),
        ] {
            let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            assert!(len <= 1024, "{} has {len} bytes", p.display());
        }
        let kept = stdout(&controller).await;
        assert!(kept.ends_with("line-1999-padding-padding\n"));
        assert!(
            !kept.contains("line-0-"),
            "the oldest output was rotated away"
        );
        let tail = crate::read_all(
            controller
                .logs(LogsOptions {
                    tail: Some(1),
                    stderr: false,
                    ..Default::default()
                })
                .await
                .unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(tail, b"line-1999-padding-padding\n");
        assert!(matches!(
            controller
                .logs(LogsOptions {
                    follow: true,
                    ..Default::default()
                })
                .await,
            Err(ExecutorError::NotImplemented(_))
        ));
        controller.remove().await.unwrap();
        assert!(!controller.log_dir().exists());
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn a_running_process_is_adopted_by_pid_and_start_time() {
    let dir = tempfile::tempdir().unwrap();
    tokio::time::timeout(LIMIT, async {
        let spec = task("adoptee", "echo ready; exec sleep 1000");
        let first = executor(dir.path()).controller(&spec).unwrap();
        first.prepare().await.unwrap();
        first.start().await.unwrap();
        wait_for_output(&*first, "ready").await;
        let Some(task_status::RuntimeStatus::Process(status)) = first.runtime_status() else {
            panic!("no process status");
        };
        drop(first);

        // A fresh executor, as after a daemon restart.
        let fresh = executor(dir.path());
        let wrong = fresh.adopt(&spec, status.pid, status.start_time + 1);
        assert!(
            matches!(wrong, Err(ExecutorError::NotFound(_))),
            "a reused PID is refused"
        );
        assert!(matches!(
            fresh.adopt(&spec, std::process::id() as i32, 0),
            Err(ExecutorError::NotFound(_))
        ));

        // Through the Executor trait: the task's recorded status says where it runs.
        let mut recorded = spec.clone();
        recorded.status = Some(TaskStatus {
            state: TaskState::Running as i32,
            runtime_status: Some(task_status::RuntimeStatus::Process(Box::new(
                ProcessStatus {
                    pid: status.pid,
                    start_time: status.start_time,
                    ..Default::default()
                },
            ))),
            ..Default::default()
        });
        let adopted = fresh.controller(&recorded).unwrap();
        assert_eq!(
            adopted.runtime_status(),
            Some(task_status::RuntimeStatus::Process(status.clone()))
        );
        assert_eq!(
            stdout(&*adopted).await,
            "ready\n",
            "the logs are found again"
        );
        adopted.start().await.unwrap(); // already running: nothing new is started
        assert_eq!(
            adopted.runtime_status(),
            Some(task_status::RuntimeStatus::Process(status.clone()))
        );

        let mut machine = TaskMachine::default();
        machine.begin();
        machine.handle(Event::Prepared);
        machine.handle(Event::Started);
        machine.handle(Event::ShutdownRequested);
        adopted.shutdown().await.unwrap();
        let exit = adopted.wait().await.unwrap();
        assert_eq!(
            exit,
            Exit::Unknown,
            "not our child: the status is unknowable"
        );
        assert!(!procfs::group_alive(status.pid));
        machine.handle(Event::Exited(exit));
        assert_eq!(machine.state(), TaskState::Shutdown);

        // Once gone, it cannot be adopted again.
        assert!(fresh.adopt(&spec, status.pid, status.start_time).is_err());
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn an_adopted_process_that_ends_by_itself_is_failed_with_an_unknown_status() {
    let dir = tempfile::tempdir().unwrap();
    tokio::time::timeout(LIMIT, async {
        let spec = task("vanishing", "read line < /dev/null; echo ready; sleep 1000");
        let first = executor(dir.path()).process_controller(&spec).unwrap();
        first.start().await.unwrap();
        wait_for_output(&first, "ready").await;
        let (pid, start_time) = first.process().unwrap();
        let adopted = executor(dir.path()).adopt(&spec, pid, start_time).unwrap();
        // Someone else ends it.
        procfs::kill_group(pid, libc::SIGKILL).unwrap();
        let exit = adopted.wait().await.unwrap();
        let mut machine = TaskMachine::default();
        machine.begin();
        machine.handle(Event::Prepared);
        machine.handle(Event::Started);
        machine.handle(Event::Exited(exit));
        assert_eq!(machine.state(), TaskState::Failed);
        assert!(machine.message().contains("unknown exit status"));
    })
    .await
    .expect("bounded");
}

fn limited(id: &str) -> Task {
    let mut spec = task(id, "echo limited");
    spec.spec.as_mut().unwrap().resources = Some(Box::new(ResourceRequirements {
        limits: Some(Resources {
            memory_bytes: 64 << 20,
            ..Default::default()
        }),
        pids: 50,
        ..Default::default()
    }));
    spec
}

#[tokio::test]
async fn limits_that_cannot_be_applied_are_a_warning_not_silence() {
    let dir = tempfile::tempdir().unwrap();
    let cgroups = tempfile::tempdir().unwrap();
    // A hierarchy like this build machine's: cgroup v2 without the memory controller.
    std::fs::write(cgroups.path().join("cgroup.controllers"), "hugetlb\n").unwrap();
    let mut config = ProcessConfig::new(dir.path());
    config.cgroup_root = cgroups.path().into();
    let controller = ProcessExecutor::new(config)
        .controller(&limited("warned"))
        .unwrap();
    controller.prepare().await.unwrap();
    let warnings = controller.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("not enforced"), "{warnings:?}");
    assert!(warnings[0].contains("no memory controller"), "{warnings:?}");
    let machine = tokio::time::timeout(LIMIT, run(&*controller))
        .await
        .unwrap();
    assert_eq!(
        machine.state(),
        TaskState::Complete,
        "the task runs without them"
    );
}

#[tokio::test]
async fn limits_are_written_to_the_task_cgroup_and_the_process_joins_it() {
    let dir = tempfile::tempdir().unwrap();
    // A directory that imitates a cgroup v2 hierarchy with the controllers we need.
    let cgroups = tempfile::tempdir().unwrap();
    std::fs::write(
        cgroups.path().join("cgroup.controllers"),
        "cpu memory pids\n",
    )
    .unwrap();
    let task_cgroup = cgroups.path().join("shoal/joined");
    std::fs::create_dir_all(&task_cgroup).unwrap();
    std::fs::write(task_cgroup.join("cgroup.procs"), "").unwrap();
    let mut config = ProcessConfig::new(dir.path());
    config.cgroup_root = cgroups.path().into();
    let controller = ProcessExecutor::new(config)
        .controller(&limited("joined"))
        .unwrap();
    let machine = tokio::time::timeout(LIMIT, run(&*controller))
        .await
        .unwrap();
    assert_eq!(machine.state(), TaskState::Complete);
    assert!(
        controller.warnings().is_empty(),
        "{:?}",
        controller.warnings()
    );
    let read = |f: &str| std::fs::read_to_string(task_cgroup.join(f)).unwrap();
    assert_eq!(read("memory.max"), (64 << 20).to_string());
    assert_eq!(read("pids.max"), "50");
    assert_eq!(
        read("cgroup.procs"),
        "0",
        "the child wrote itself into the cgroup"
    );
    assert_eq!(
        std::fs::read_to_string(cgroups.path().join("shoal/cgroup.subtree_control")).unwrap(),
        "+memory +pids"
    );
}

#[test]
fn users_resolve_by_name_and_number() {
    assert_eq!(resolve_user("").unwrap(), None);
    assert_eq!(resolve_user("root").unwrap(), Some((0, 0)));
    assert_eq!(resolve_user("0:5").unwrap(), Some((0, 5)));
    assert!(matches!(
        resolve_user("no-such-user-here"),
        Err(ExecutorError::InvalidSpec(_))
    ));
    assert!(matches!(
        resolve_user("0:wheel"),
        Err(ExecutorError::NotImplemented(_))
    ));
}

#[test]
fn describe_names_the_process_runtime() {
    let description = executor(Path::new("/nonexistent")).describe();
    assert_eq!(description.runtimes, vec!["process".to_string()]);
    assert!(description.resources.unwrap().nano_cpus > 0);
}
