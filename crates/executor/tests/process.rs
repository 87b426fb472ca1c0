//! The process executor on real processes, each supervised by the shim binary of this crate
//! (`shoal-process-shim`). Every wait is bounded; nothing asserts on timing; every test ends
//! the processes it started.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use shoal_api::v1::{
    Meta, ProcessSpec, ProcessStatus, ResourceRequirements, Resources, Task, TaskSpecFields,
    TaskState, TaskStatus, task_spec, task_status,
};
use shoal_executor::process::{
    LogRotation, ProcessConfig, ProcessController, ProcessExecutor, ShimCommand, logs, procfs, shim,
};
use shoal_executor::state::{Action, Event, TaskMachine};
use shoal_executor::{
    Controller, ErrorClass, Executor, ExecutorError, Exit, LogRecord, LogStream, LogsOptions,
};

const LIMIT: Duration = Duration::from_secs(30);

fn shim_command() -> ShimCommand {
    ShimCommand {
        program: env!("CARGO_BIN_EXE_test-process-shim").into(),
        args: Vec::new(),
    }
}

fn config(dir: &Path) -> ProcessConfig {
    let mut config = ProcessConfig::new(dir);
    config.poll_interval = Duration::from_millis(20);
    config.shim = shim_command();
    config
}

fn executor(dir: &Path) -> ProcessExecutor {
    ProcessExecutor::new(config(dir))
}

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

fn process_spec(task: &mut Task) -> &mut ProcessSpec {
    match &mut task.spec.as_mut().unwrap().runtime {
        Some(task_spec::Runtime::Process(p)) => p,
        _ => unreachable!(),
    }
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

async fn records(controller: &dyn Controller, options: LogsOptions) -> Vec<LogRecord> {
    let mut reader = controller.logs(options).await.unwrap();
    let mut out = Vec::new();
    while let Some(record) = reader.recv().await {
        out.push(record.unwrap());
    }
    out
}

async fn output(controller: &dyn Controller, options: LogsOptions) -> String {
    let bytes = shoal_executor::read_all(controller.logs(options).await.unwrap())
        .await
        .unwrap();
    String::from_utf8(bytes).unwrap()
}

fn only(stream: LogStream) -> LogsOptions {
    LogsOptions {
        stdout: stream == LogStream::Stdout,
        stderr: stream == LogStream::Stderr,
        ..Default::default()
    }
}

async fn stdout(controller: &dyn Controller) -> String {
    output(controller, only(LogStream::Stdout)).await
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

fn process_status(controller: &dyn Controller) -> ProcessStatus {
    match controller.runtime_status() {
        Some(task_status::RuntimeStatus::Process(p)) => *p,
        other => panic!("no process status: {other:?}"),
    }
}

/// SIGKILLs what a test leaves running, should it fail half-way.
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if procfs::group_alive(self.0) {
            let _ = procfs::kill_group(self.0, libc::SIGKILL);
        }
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
        let status = process_status(&*ok);
        assert!(status.pid > 1 && status.start_time > 0);
        assert_eq!((status.exit_code, status.signal), (0, 0));

        let three = executor
            .controller(&task("three", "echo oops >&2; exit 3"))
            .unwrap();
        let machine = run(&*three).await;
        assert_eq!(machine.state(), TaskState::Failed);
        assert_eq!(machine.message(), "exited with code 3");
        assert_eq!(output(&*three, only(LogStream::Stderr)).await, "oops\n");
        assert_eq!(process_status(&*three).exit_code, 3);

        let killed = executor.controller(&task("killed", "kill -9 $$")).unwrap();
        let machine = run(&*killed).await;
        assert_eq!(machine.state(), TaskState::Failed);
        assert_eq!(machine.message(), "killed by signal SIGKILL (9)");
        assert_eq!(process_status(&*killed).signal, 9);
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn environment_arguments_directory_and_user_are_the_specs() {
    let dir = tempfile::tempdir().unwrap();
    let workdir = tempfile::tempdir().unwrap();
    let executor = executor(dir.path());
    tokio::time::timeout(LIMIT, async {
        let mut spec = task(
            "env",
            "echo \"$GREETING|$0|$1|$PATH|${HOME-unset}\"; pwd; id -u; id -g",
        );
        let p = process_spec(&mut spec);
        p.args.extend(["zero".into(), "one two".into()]);
        p.dir = workdir.path().display().to_string();
        let controller = executor.controller(&spec).unwrap();
        assert_eq!(run(&*controller).await.state(), TaskState::Complete);
        let out = stdout(&*controller).await;
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            format!(
                "hello|zero|one two|{}|unset",
                shoal_executor::process::DEFAULT_PATH
            ),
            "the spec's env and PATH only: nothing of the daemon's"
        );
        assert_eq!(
            Path::new(lines[1]).canonicalize().unwrap(),
            workdir.path().canonicalize().unwrap()
        );

        // Another user, where we may switch to one.
        // SAFETY: getuid has no preconditions.
        if unsafe { libc::getuid() } == 0 {
            let mut spec = task("user", "id -u; id -g");
            let p = process_spec(&mut spec);
            p.user = "65534:65533".into();
            p.dir = "/".into();
            let controller = executor.controller(&spec).unwrap();
            assert_eq!(run(&*controller).await.state(), TaskState::Complete);
            assert_eq!(stdout(&*controller).await, "65534\n65533\n");
        }
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn a_program_that_cannot_start_is_a_fatal_error() {
    let dir = tempfile::tempdir().unwrap();
    let executor = executor(dir.path());
    let mut spec = task("missing", "");
    process_spec(&mut spec).command = "/nonexistent/program".into();
    let controller = executor.controller(&spec).unwrap();
    let mut machine = TaskMachine::default();
    machine.begin();
    controller.prepare().await.unwrap();
    machine.handle(Event::Prepared);
    let error = tokio::time::timeout(LIMIT, controller.start())
        .await
        .expect("bounded")
        .unwrap_err();
    match &error {
        ExecutorError::Spawn { command, source } => {
            assert_eq!(command, "/nonexistent/program");
            assert_eq!(source.raw_os_error(), Some(libc::ENOENT), "{error}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(error.class(), ErrorClass::Fatal, "{error}");
    machine.handle(Event::Error {
        class: error.class(),
        message: error.to_string(),
    });
    // The state machine has entered STARTING before `start`, so a fatal start error is
    // FAILED there (REJECTED is for errors before it).
    assert_eq!(machine.state(), TaskState::Failed);
    assert!(machine.message().contains("/nonexistent/program"));
    assert!(controller.wait().await.is_err());
    assert!(controller.runtime_status().is_none());

    // Bad specs are refused before anything runs.
    let mut bad = task("badsignal", "true");
    process_spec(&mut bad).stop_signal = "SIGNOPE".into();
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
async fn a_shim_that_is_not_one_is_an_error_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.shim = ShimCommand {
        program: "/bin/echo".into(),
        args: vec!["hello".into()],
    };
    let controller = ProcessExecutor::new(config)
        .controller(&task("noshim", "true"))
        .unwrap();
    let error = tokio::time::timeout(LIMIT, controller.start())
        .await
        .expect("bounded")
        .unwrap_err();
    assert!(error.to_string().contains("no valid status"), "{error}");
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
        let pid = process_status(&*controller).pid;
        let _cleanup = KillOnDrop(pid);
        let out = wait_for_output(&*controller, "ready").await;
        let child: i32 = out
            .lines()
            .find_map(|l| l.strip_prefix("child "))
            .unwrap()
            .parse()
            .unwrap();
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
        let _cleanup = KillOnDrop(process_status(&*controller).pid);
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
async fn logs_are_timestamped_records_by_stream_with_tail_and_since() {
    let dir = tempfile::tempdir().unwrap();
    let executor = executor(dir.path());
    tokio::time::timeout(LIMIT, async {
        let before = SystemTime::now();
        let script = "echo out1; echo err1 >&2; echo out2; sleep 0.05; echo err2 >&2; \
                      printf 'no newline'";
        let controller = executor.process_controller(&task("logs", script)).unwrap();
        assert_eq!(run(&controller).await.state(), TaskState::Complete);
        let after = SystemTime::now();

        let all = records(&controller, LogsOptions::default()).await;
        let stdout: Vec<&[u8]> = all
            .iter()
            .filter(|r| r.stream == LogStream::Stdout)
            .map(|r| r.data.as_slice())
            .collect();
        let stderr: Vec<&[u8]> = all
            .iter()
            .filter(|r| r.stream == LogStream::Stderr)
            .map(|r| r.data.as_slice())
            .collect();
        assert_eq!(
            stdout,
            vec![&b"out1\n"[..], b"out2\n", b"no newline"],
            "an unfinished line is kept as it is"
        );
        assert_eq!(stderr, vec![&b"err1\n"[..], b"err2\n"]);
        assert!(
            all.windows(2).all(|w| w[0].timestamp <= w[1].timestamp),
            "{all:?}"
        );
        assert!(
            all.iter()
                .all(|r| r.timestamp >= before && r.timestamp <= after),
            "real times, from this run: {all:?}"
        );

        // tail: the last lines of the selected streams.
        let tail = |n, stream: Option<LogStream>| LogsOptions {
            tail: Some(n),
            stdout: stream != Some(LogStream::Stderr),
            stderr: stream != Some(LogStream::Stdout),
            ..Default::default()
        };
        assert_eq!(output(&controller, tail(2, None)).await, "err2\nno newline");
        assert_eq!(
            output(&controller, tail(1, Some(LogStream::Stderr))).await,
            "err2\n"
        );
        assert_eq!(output(&controller, tail(0, None)).await, "");

        // since: records received at or after a time.
        let err2 = all.iter().find(|r| r.data == b"err2\n").unwrap();
        let since = LogsOptions {
            since: Some(err2.timestamp),
            ..Default::default()
        };
        assert_eq!(output(&controller, since).await, "err2\nno newline");

        // The file is in the CRI format.
        let text = std::fs::read_to_string(controller.output_path()).unwrap();
        let first = text.lines().next().unwrap();
        assert!(first.ends_with("Z stdout F out1"), "{first}");
        assert!(text.ends_with(" stdout P no newline\n"), "{text}");
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn following_sees_new_lines_and_ends_with_the_task() {
    let dir = tempfile::tempdir().unwrap();
    let go = dir.path().join("go");
    let executor = executor(dir.path());
    tokio::time::timeout(LIMIT, async {
        let script = format!(
            "echo before; while [ ! -e {go} ]; do sleep 0.02; done; echo after >&2; echo last",
            go = go.display()
        );
        let controller = executor.controller(&task("follow", &script)).unwrap();
        controller.prepare().await.unwrap();
        controller.start().await.unwrap();
        let _cleanup = KillOnDrop(process_status(&*controller).pid);
        wait_for_output(&*controller, "before").await;

        let mut reader = controller
            .logs(LogsOptions {
                follow: true,
                ..Default::default()
            })
            .await
            .unwrap();
        let first = reader.recv().await.unwrap().unwrap();
        assert_eq!(first.data, b"before\n");
        // Written only now, after the follow began.
        std::fs::write(&go, "").unwrap();
        let mut rest = Vec::new();
        while let Some(record) = reader.recv().await {
            let record = record.unwrap();
            rest.push((record.stream, record.data));
        }
        // (Two pipes: their relative order within one read of the shim is not kept.)
        rest.sort_by_key(|(stream, _)| *stream as u8);
        assert_eq!(
            rest,
            vec![
                (LogStream::Stdout, b"last\n".to_vec()),
                (LogStream::Stderr, b"after\n".to_vec()),
            ],
            "and the stream ended with the task"
        );
        assert_eq!(controller.wait().await.unwrap(), Exit::Code(0));

        // Following a finished task returns what is kept and ends.
        let tail = LogsOptions {
            follow: true,
            tail: Some(1),
            ..only(LogStream::Stdout)
        };
        assert_eq!(output(&*controller, tail).await, "last\n");

        // Dropping the reader stops the follower of a task that goes on.
        let endless = executor
            .controller(&task(
                "endless",
                "while true; do echo tick; sleep 0.02; done",
            ))
            .unwrap();
        endless.start().await.unwrap();
        let _cleanup = KillOnDrop(process_status(&*endless).pid);
        let mut reader = endless
            .logs(LogsOptions {
                follow: true,
                ..Default::default()
            })
            .await
            .unwrap();
        for _ in 0..3 {
            assert_eq!(reader.recv().await.unwrap().unwrap().data, b"tick\n");
        }
        drop(reader);
        endless.terminate().await.unwrap();
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn rotation_bounds_the_files_and_long_lines_are_split() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.rotation = LogRotation {
        max_bytes: 1024,
        max_files: 3,
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
        let path = controller.output_path();
        assert!(!logs::rotated(&path, 3).exists(), "at most 3 files");
        for p in [
            path.clone(),
            logs::rotated(&path, 1),
            logs::rotated(&path, 2),
        ] {
            let len = std::fs::metadata(&p).unwrap().len();
            assert!(len <= 1024, "{} has {len} bytes", p.display());
        }
        let kept = stdout(&controller).await;
        assert!(kept.ends_with("line-1999-padding-padding\n"));
        assert!(
            !kept.contains("line-0-"),
            "the oldest output was rotated away"
        );
        // What is kept is consecutive: a rotation loses nothing in between.
        let numbers: Vec<usize> = kept
            .lines()
            .map(|l| l.split('-').nth(1).unwrap().parse().unwrap())
            .collect();
        assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{numbers:?}");
        let tail = LogsOptions {
            tail: Some(1),
            ..only(LogStream::Stdout)
        };
        assert_eq!(
            output(&controller, tail).await,
            "line-1999-padding-padding\n"
        );
        controller.remove().await.unwrap();
        assert!(!controller.log_dir().exists());

        // A line of 40000 bytes: two 16 KiB parts and the rest, put together again (with the
        // default rotation: each of these records is bigger than 1024 bytes).
        let long = self::executor(dir.path())
            .process_controller(&task(
                "long",
                "head -c 40000 /dev/zero | tr '\\0' x; echo; echo short",
            ))
            .unwrap();
        assert_eq!(run(&long).await.state(), TaskState::Complete);
        let all = records(&long, LogsOptions::default()).await;
        let sizes: Vec<usize> = all.iter().map(|r| r.data.len()).collect();
        assert_eq!(sizes, vec![16384, 16384, 40000 - 2 * 16384 + 1, 6]);
        let joined: Vec<u8> = all.iter().flat_map(|r| r.data.clone()).collect();
        let mut expected = vec![b'x'; 40000];
        expected.extend_from_slice(b"\nshort\n");
        assert_eq!(joined, expected);
        // The parts of a line count once in a tail.
        let tail = LogsOptions {
            tail: Some(2),
            ..Default::default()
        };
        assert_eq!(records(&long, tail).await.len(), 4);
        long.remove().await.unwrap();
    })
    .await
    .expect("bounded");
}

/// Starts `spec` in a runtime of its own and shuts that runtime down, as a daemon that exits:
/// the task and its shim run on, and nothing in this process watches them any more.
fn start_in_a_daemon_that_exits(dir: &Path, spec: &Task, ready: &str) -> ProcessStatus {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let status = runtime.block_on(async {
        tokio::time::timeout(LIMIT, async {
            let first = executor(dir).controller(spec).unwrap();
            first.prepare().await.unwrap();
            first.start().await.unwrap();
            wait_for_output(&*first, ready).await;
            process_status(&*first)
        })
        .await
        .expect("bounded")
    });
    drop(runtime);
    status
}

#[test]
fn an_adopted_task_reports_its_real_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let go = dir.path().join("go");
    let spec = task(
        "adoptee",
        &format!(
            "echo ready; while [ ! -e {} ]; do sleep 0.02; done; echo done; exit 7",
            go.display()
        ),
    );
    let status = start_in_a_daemon_that_exits(dir.path(), &spec, "ready");
    let _cleanup = KillOnDrop(status.pid);
    assert!(
        procfs::is_running(status.pid, status.start_time),
        "the task outlives the daemon"
    );

    // A fresh executor, as after a daemon restart.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        tokio::time::timeout(LIMIT, async {
            let fresh = executor(dir.path());
            assert!(
                matches!(
                    fresh.adopt(&spec, status.pid, status.start_time + 1),
                    Err(ExecutorError::NotFound(_))
                ),
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
            assert_eq!(process_status(&*adopted), status);
            assert_eq!(
                stdout(&*adopted).await,
                "ready\n",
                "the logs are found again"
            );
            adopted.start().await.unwrap(); // already running: nothing new is started
            assert_eq!(process_status(&*adopted), status, "same PID");
            assert!(procfs::is_running(status.pid, status.start_time));

            let mut machine = TaskMachine::default();
            machine.begin();
            machine.handle(Event::Prepared);
            machine.handle(Event::Started);
            std::fs::write(&go, "").unwrap();
            let exit = adopted.wait().await.unwrap();
            assert_eq!(exit, Exit::Code(7), "the shim recorded it");
            machine.handle(Event::Exited(exit));
            assert_eq!(machine.state(), TaskState::Failed);
            assert_eq!(machine.message(), "exited with code 7");
            assert_eq!(stdout(&*adopted).await, "ready\ndone\n");
            assert_eq!(process_status(&*adopted).exit_code, 7);

            // Once ended, a later adopter (a daemon restarted after the exit) learns the
            // recorded exit at once; once removed, there is nothing to adopt.
            let again = fresh.adopt(&spec, status.pid, status.start_time).unwrap();
            assert_eq!(again.wait().await.unwrap(), Exit::Code(7));
            adopted.remove().await.unwrap();
            assert!(fresh.adopt(&spec, status.pid, status.start_time).is_err());
        })
        .await
        .expect("bounded")
    });
}

#[test]
fn an_adopted_task_is_stopped_and_its_signal_known() {
    let dir = tempfile::tempdir().unwrap();
    let spec = task("stopme", "echo ready; exec sleep 1000");
    let status = start_in_a_daemon_that_exits(dir.path(), &spec, "ready");
    let _cleanup = KillOnDrop(status.pid);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        tokio::time::timeout(LIMIT, async {
            let adopted = executor(dir.path())
                .adopt(&spec, status.pid, status.start_time)
                .unwrap();
            let mut machine = TaskMachine::default();
            machine.begin();
            machine.handle(Event::Prepared);
            machine.handle(Event::Started);
            machine.handle(Event::ShutdownRequested);
            adopted.shutdown().await.unwrap();
            let exit = adopted.wait().await.unwrap();
            assert_eq!(exit, Exit::Signal(libc::SIGTERM));
            assert!(!procfs::group_alive(status.pid));
            machine.handle(Event::Exited(exit));
            assert_eq!(machine.state(), TaskState::Shutdown);
        })
        .await
        .expect("bounded")
    });
}

#[test]
fn the_shim_records_an_exit_nobody_watched() {
    let dir = tempfile::tempdir().unwrap();
    let spec = task("unwatched", "echo ready; exec sleep 1000");
    let status = start_in_a_daemon_that_exits(dir.path(), &spec, "ready");
    let _cleanup = KillOnDrop(status.pid);
    let task_dir = dir.path().join("unwatched");
    assert_eq!(shim::read_exit(&task_dir).unwrap(), None);
    // Someone else kills it while no daemon runs.
    procfs::kill_group(status.pid, libc::SIGKILL).unwrap();
    let deadline = Instant::now() + LIMIT;
    let exit = loop {
        if let Some(exit) = shim::read_exit(&task_dir).unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "no exit file");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(exit, Exit::Signal(libc::SIGKILL));
}

#[tokio::test]
async fn a_task_whose_shim_is_killed_ends_with_an_unknown_exit() {
    let dir = tempfile::tempdir().unwrap();
    let executor = executor(dir.path());
    tokio::time::timeout(LIMIT, async {
        let controller = executor
            .process_controller(&task("orphan", "echo ready; exec sleep 1000"))
            .unwrap();
        controller.start().await.unwrap();
        let (pid, _) = controller.process().unwrap();
        let _cleanup = KillOnDrop(pid);
        wait_for_output(&controller, "ready").await;
        // The shim is the task's parent.
        let shim_pid = ppid(pid);
        assert!(shim_pid > 1 && shim_pid != std::process::id() as i32);
        // SAFETY: kill has no memory-safety preconditions; shim_pid is our child.
        assert_eq!(unsafe { libc::kill(shim_pid, libc::SIGKILL) }, 0);
        procfs::kill_group(pid, libc::SIGKILL).unwrap();
        assert_eq!(controller.wait().await.unwrap(), Exit::Unknown);
    })
    .await
    .expect("bounded");
}

/// Field 4 of `/proc/<pid>/stat`.
fn ppid(pid: i32) -> i32 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &text[text.rfind(')').unwrap() + 1..];
    rest.split_whitespace().nth(1).unwrap().parse().unwrap()
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
    let mut config = config(dir.path());
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
    let mut config = config(dir.path());
    config.cgroup_root = cgroups.path().into();
    let controller: ProcessController = ProcessExecutor::new(config)
        .process_controller(&limited("joined"))
        .unwrap();
    let machine = tokio::time::timeout(LIMIT, run(&controller)).await.unwrap();
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
