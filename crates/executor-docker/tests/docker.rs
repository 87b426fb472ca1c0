//! Tests of the Docker executor against the real engine of this machine.
//!
//! Only locally built images are used (`scripts/build-test-image.sh` makes
//! `shoal-test/busybox:latest` from Debian's static busybox), so no registry is needed.
//! Without an engine the tests are skipped, unless `SHOAL_REQUIRE_DOCKER=1` — then they fail.
//!
//! Every container a test makes carries the label `shoal.test.case=<test>`; a guard removes
//! them when the test ends (also when it panics), and each test first removes leftovers of
//! an earlier run. Every wait is bounded; nothing asserts on timing.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use shoal_api::v1::{
    Annotations, ContainerSpec, HealthConfig, Meta, Task, TaskSpecFields, TaskState, task_spec,
    task_status,
};
use shoal_executor::state::{Action, Event, TaskMachine};
use shoal_executor::{Controller, ErrorClass, Executor, Exit, LogStream, LogsOptions, read_all};
use shoal_executor_docker::bollard::models::HealthStatusEnum;
use shoal_executor_docker::bollard::query_parameters::{
    InspectContainerOptions, ListContainersOptions, RemoveContainerOptions,
};
use shoal_executor_docker::{DockerConfig, DockerExecutor, bollard};

const IMAGE: &str = "shoal-test/busybox:latest";
const LIMIT: Duration = Duration::from_secs(60);
const CASE_LABEL: &str = "shoal.test.case";
const SERVICE: &str = "shoaltest";

// --- Setup -------------------------------------------------------------------------------

fn config() -> DockerConfig {
    let mut config = DockerConfig::new("testnode");
    config.poll_interval = Duration::from_millis(50);
    config.pull_timeout = Duration::from_secs(30);
    config
}

/// The executor, or `None` (the test is skipped) when there is no engine. Makes sure the
/// test image exists.
async fn engine() -> Option<DockerExecutor> {
    let executor = match DockerExecutor::new(config()).await {
        Ok(executor) => executor,
        Err(error) => {
            let why = format!("no Docker Engine ({error})");
            if std::env::var("SHOAL_REQUIRE_DOCKER").as_deref() == Ok("1") {
                panic!("SHOAL_REQUIRE_DOCKER=1 but {why}");
            }
            eprintln!("skipping: {why}");
            return None;
        }
    };
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/build-test-image.sh");
        let output = std::process::Command::new("sh")
            .arg(&script)
            .output()
            .map_err(|e| format!("running {}: {e}", script.display()))?;
        eprint!("{}", String::from_utf8_lossy(&output.stdout));
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{} failed ({}): {}",
                script.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    });
    if let Err(error) = built {
        panic!("cannot build the test image: {error}");
    }
    Some(executor)
}

/// Removes the containers of test `case` (leftovers of an earlier run, or this run's).
async fn remove_containers(docker: &bollard::Docker, case: &str) {
    let options = ListContainersOptions {
        all: true,
        filters: Some(HashMap::from([(
            "label".to_string(),
            vec![format!("{CASE_LABEL}={case}")],
        )])),
        ..Default::default()
    };
    let Ok(containers) = docker.list_containers(Some(options)).await else {
        return;
    };
    for container in containers {
        if let Some(id) = container.id {
            let _ = docker
                .remove_container(
                    &id,
                    Some(RemoveContainerOptions {
                        force: true,
                        v: true,
                        link: false,
                    }),
                )
                .await;
        }
    }
}

/// Removes the containers of a test case when dropped, panicking or not.
struct Cleanup {
    case: &'static str,
    docker: bollard::Docker,
}

impl Cleanup {
    async fn new(executor: &DockerExecutor, case: &'static str) -> Self {
        remove_containers(executor.docker(), case).await;
        Cleanup {
            case,
            docker: executor.docker().clone(),
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let (docker, case) = (self.docker.clone(), self.case);
        // A runtime of its own, on a thread of its own: we may be inside the test's runtime.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async {
                let _ = tokio::time::timeout(LIMIT, remove_containers(&docker, case)).await;
            });
        })
        .join();
    }
}

/// A unique task ID for this process (letters and digits).
fn task_id(name: &str) -> String {
    format!("{name}{}", std::process::id())
}

fn task(case: &str, name: &str, spec: ContainerSpec) -> Task {
    let mut spec = spec;
    if spec.image.is_empty() {
        spec.image = IMAGE.into();
    }
    spec.labels.insert(CASE_LABEL.into(), case.into());
    if spec.stop_grace_period.is_none() {
        spec.stop_grace_period = Some(prost_types_duration(1, 0));
    }
    Task {
        meta: Some(Meta {
            id: task_id(name),
            ..Default::default()
        }),
        service_id: "svc0001".into(),
        slot: 1,
        node_id: "testnode".into(),
        service_annotations: Some(Box::new(Annotations {
            name: SERVICE.into(),
            labels: Vec::new(),
        })),
        spec: Some(
            TaskSpecFields {
                runtime: Some(task_spec::Runtime::Container(Box::new(spec))),
                ..Default::default()
            }
            .into(),
        ),
        ..Default::default()
    }
}

fn prost_types_duration(seconds: i64, nanos: i32) -> prost_types::Duration {
    prost_types::Duration { seconds, nanos }
}

fn shell(script: &str) -> ContainerSpec {
    ContainerSpec {
        command: vec!["/bin/sh".into(), "-c".into()],
        args: vec![script.into()],
        ..Default::default()
    }
}

fn error_event(error: &shoal_executor::ExecutorError) -> Event {
    Event::Error {
        class: error.class(),
        message: error.to_string(),
    }
}

/// Prepares and starts a task through the state machine; RUNNING at the end.
async fn run_to_running(controller: &dyn Controller) -> TaskMachine {
    let mut machine = TaskMachine::default();
    assert_eq!(machine.begin().action, Action::Prepare);
    controller.prepare().await.expect("prepare");
    assert_eq!(machine.handle(Event::Prepared).action, Action::Start);
    controller.start().await.expect("start");
    assert_eq!(machine.handle(Event::Started).action, Action::Wait);
    assert_eq!(machine.state(), TaskState::Running);
    machine
}

/// Runs a task to its end through the state machine, as the worker will.
async fn run(controller: &dyn Controller) -> TaskMachine {
    let mut machine = run_to_running(controller).await;
    let exit = controller.wait().await.expect("wait");
    machine.handle(Event::Exited(exit));
    machine
}

async fn output(controller: &dyn Controller, options: LogsOptions) -> String {
    let reader = controller.logs(options).await.expect("logs");
    String::from_utf8(read_all(reader).await.expect("log records")).unwrap()
}

fn only(stream: LogStream) -> LogsOptions {
    LogsOptions {
        stdout: stream == LogStream::Stdout,
        stderr: stream == LogStream::Stderr,
        ..Default::default()
    }
}

async fn inspect(
    executor: &DockerExecutor,
    name: &str,
) -> bollard::models::ContainerInspectResponse {
    executor
        .docker()
        .inspect_container(name, None::<InspectContainerOptions>)
        .await
        .expect("inspect")
}

fn container_id(controller: &dyn Controller) -> String {
    match controller.runtime_status() {
        Some(task_status::RuntimeStatus::Container(c)) => c.container_id,
        other => panic!("no container status: {other:?}"),
    }
}

// --- Tests -------------------------------------------------------------------------------

#[tokio::test]
async fn the_engine_is_described() {
    let Some(executor) = engine().await else {
        return;
    };
    let description = executor.describe();
    assert_eq!(description.runtimes, ["container"]);
    let resources = description.resources.unwrap();
    assert!(resources.nano_cpus >= 1_000_000_000, "{resources:?}");
    assert!(resources.memory_bytes > 0);
    let engine = description.engine.unwrap();
    assert!(!engine.engine_version.is_empty());
    assert!(!description.platform.unwrap().os.is_empty());
    assert!(
        engine
            .plugins
            .iter()
            .any(|p| p.r#type == "Volume" && p.name == "local"),
        "{:?}",
        engine.plugins
    );
}

#[tokio::test]
async fn exit_codes_map_to_complete_and_failed() {
    let Some(executor) = engine().await else {
        return;
    };
    let _cleanup = Cleanup::new(&executor, "exitcodes").await;
    tokio::time::timeout(LIMIT, async {
        let ok = executor
            .controller(&task(
                "exitcodes",
                "ok",
                shell("echo out; echo err >&2; exit 0"),
            ))
            .unwrap();
        let machine = run(&*ok).await;
        assert_eq!(machine.state(), TaskState::Complete);
        assert_eq!(output(&*ok, only(LogStream::Stdout)).await, "out\n");
        assert_eq!(output(&*ok, only(LogStream::Stderr)).await, "err\n");
        let id = container_id(&*ok);
        assert_eq!(
            inspect(&executor, &id).await.id.as_deref(),
            Some(id.as_str())
        );

        let three = executor
            .controller(&task("exitcodes", "three", shell("exit 3")))
            .unwrap();
        let machine = run(&*three).await;
        assert_eq!(machine.state(), TaskState::Failed);
        assert_eq!(machine.message(), "exited with code 3");
        match three.runtime_status() {
            Some(task_status::RuntimeStatus::Container(c)) => assert_eq!(c.exit_code, 3),
            other => panic!("{other:?}"),
        }

        // Removal is idempotent, and what is removed is gone.
        ok.remove().await.unwrap();
        ok.remove().await.unwrap();
        let gone = executor
            .docker()
            .inspect_container(&id, None::<InspectContainerOptions>)
            .await
            .unwrap_err();
        assert!(shoal_executor_docker::error::is_not_found(&gone), "{gone}");
        // Stopping what is gone is fine; waiting on it is a fatal error.
        ok.shutdown().await.unwrap();
        ok.terminate().await.unwrap();
        assert_eq!(ok.wait().await.unwrap_err().class(), ErrorClass::Fatal);
        three.remove().await.unwrap();
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn names_labels_and_the_spec_mapping() {
    let Some(executor) = engine().await else {
        return;
    };
    let _cleanup = Cleanup::new(&executor, "mapping").await;
    tokio::time::timeout(LIMIT, async {
        let mut spec =
            shell("echo $GREETING; pwd; id -u; hostname; cat /etc/hosts | grep -c shoal-db");
        spec.env = vec!["GREETING=hello".into()];
        spec.dir = "/tmp".into();
        spec.user = "65534".into();
        spec.hostname = "boxy".into();
        spec.hosts = vec!["10.1.2.3 shoal-db".into()];
        spec.labels.insert("team".into(), "blue".into());
        let t = task("mapping", "map", spec);
        let id = t.meta.as_ref().unwrap().id.clone();
        let controller = executor.controller(&t).unwrap();
        let machine = run(&*controller).await;
        assert_eq!(
            machine.state(),
            TaskState::Complete,
            "{}",
            machine.message()
        );
        assert_eq!(
            output(&*controller, only(LogStream::Stdout)).await,
            "hello\n/tmp\n65534\nboxy\n1\n"
        );

        let name = format!("{SERVICE}.1.{id}");
        let info = inspect(&executor, &name).await;
        assert_eq!(info.name.as_deref(), Some(format!("/{name}").as_str()));
        let config = info.config.unwrap();
        let labels = config.labels.unwrap();
        for (key, value) in [
            ("com.docker.swarm.service.id", "svc0001"),
            ("com.docker.swarm.service.name", SERVICE),
            ("com.docker.swarm.task", ""),
            ("com.docker.swarm.task.id", id.as_str()),
            ("com.docker.swarm.task.name", name.as_str()),
            ("com.docker.swarm.node.id", "testnode"),
            ("team", "blue"),
        ] {
            assert_eq!(labels.get(key).map(String::as_str), Some(value), "{key}");
        }
        assert_eq!(config.entrypoint.unwrap(), ["/bin/sh", "-c"]);
        assert_eq!(config.stop_timeout, Some(1));
        controller.remove().await.unwrap();

        // Without a command the image's (empty) entrypoint runs the args.
        let args_only = ContainerSpec {
            args: vec!["echo".into(), "from".into(), "args".into()],
            ..Default::default()
        };
        let controller = executor
            .controller(&task("mapping", "args", args_only))
            .unwrap();
        assert_eq!(run(&*controller).await.state(), TaskState::Complete);
        assert_eq!(
            output(&*controller, LogsOptions::default()).await,
            "from args\n"
        );
        controller.remove().await.unwrap();

        // Without args either, the image's CMD (a shell with no input) runs.
        let controller = executor
            .controller(&task("mapping", "imagecmd", ContainerSpec::default()))
            .unwrap();
        assert_eq!(run(&*controller).await.state(), TaskState::Complete);
        controller.remove().await.unwrap();

        // Another runtime is refused.
        let mut process = task("mapping", "proc", ContainerSpec::default());
        process.spec.as_mut().unwrap().runtime = Some(task_spec::Runtime::Process(Box::default()));
        assert!(matches!(
            executor.controller(&process),
            Err(shoal_executor::ExecutorError::Unsupported(_))
        ));
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn shutdown_sends_the_stop_signal_then_kills() {
    let Some(executor) = engine().await else {
        return;
    };
    let _cleanup = Cleanup::new(&executor, "shutdown").await;
    tokio::time::timeout(LIMIT, async {
        // A program that honours its stop signal (SIGUSR1 here) ends on it.
        let mut polite =
            shell("trap 'echo got USR1; exit 7' USR1; echo ready; while :; do sleep 0.1; done");
        polite.stop_signal = "SIGUSR1".into();
        let controller = executor
            .controller(&task("shutdown", "polite", polite))
            .unwrap();
        let mut machine = run_to_running(&*controller).await;
        wait_for_output(&*controller, "ready").await;
        assert_eq!(
            machine.handle(Event::ShutdownRequested).action,
            Action::Shutdown
        );
        controller.shutdown().await.unwrap();
        let exit = controller.wait().await.unwrap();
        assert_eq!(exit, Exit::Code(7));
        machine.handle(Event::Exited(exit));
        assert_eq!(machine.state(), TaskState::Shutdown);
        assert!(
            output(&*controller, LogsOptions::default())
                .await
                .contains("got USR1\n")
        );
        controller.remove().await.unwrap();

        // `sleep` as PID 1 ignores SIGTERM: it is killed once the grace period is over.
        let sleeper = ContainerSpec {
            command: vec!["sleep".into(), "1000".into()],
            ..Default::default()
        };
        let controller = executor
            .controller(&task("shutdown", "sleeper", sleeper))
            .unwrap();
        let mut machine = run_to_running(&*controller).await;
        machine.handle(Event::ShutdownRequested);
        controller.shutdown().await.unwrap();
        let exit = controller.wait().await.unwrap();
        assert_eq!(exit, Exit::Code(137), "SIGKILL");
        machine.handle(Event::Exited(exit));
        assert_eq!(machine.state(), TaskState::Shutdown);
        let state = inspect(&executor, &container_id(&*controller))
            .await
            .state
            .unwrap();
        assert_eq!(state.running, Some(false));
        // Shutting down a stopped container is fine.
        controller.shutdown().await.unwrap();
        controller.remove().await.unwrap();
    })
    .await
    .expect("bounded");
}

/// Waits (bounded by the caller) until the task's output contains `needle`.
async fn wait_for_output(controller: &dyn Controller, needle: &str) -> String {
    loop {
        let out = output(controller, LogsOptions::default()).await;
        if out.contains(needle) {
            return out;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn logs_are_records_with_streams_and_timestamps() {
    let Some(executor) = engine().await else {
        return;
    };
    let _cleanup = Cleanup::new(&executor, "logs").await;
    tokio::time::timeout(LIMIT, async {
        let before = SystemTime::now() - Duration::from_secs(300);
        let controller = executor
            .controller(&task(
                "logs",
                "history",
                shell("echo one; echo two >&2; echo three; echo four >&2"),
            ))
            .unwrap();
        assert_eq!(run(&*controller).await.state(), TaskState::Complete);

        let mut reader = controller.logs(LogsOptions::default()).await.unwrap();
        let mut records = Vec::new();
        while let Some(record) = reader.recv().await {
            records.push(record.unwrap());
        }
        let mut by_stream: HashMap<LogStream, String> = HashMap::new();
        for record in &records {
            assert!(record.timestamp > before, "{record:?}");
            assert!(record.timestamp <= SystemTime::now());
            by_stream
                .entry(record.stream)
                .or_default()
                .push_str(std::str::from_utf8(&record.data).unwrap());
        }
        assert_eq!(by_stream[&LogStream::Stdout], "one\nthree\n");
        assert_eq!(by_stream[&LogStream::Stderr], "two\nfour\n");

        let last = LogsOptions {
            tail: Some(1),
            ..only(LogStream::Stdout)
        };
        assert_eq!(output(&*controller, last).await, "three\n");
        let future = LogsOptions {
            since: Some(SystemTime::now() + Duration::from_secs(3600)),
            ..Default::default()
        };
        assert_eq!(output(&*controller, future).await, "");
        let since_first = LogsOptions {
            since: Some(records[0].timestamp),
            ..only(LogStream::Stderr)
        };
        assert_eq!(output(&*controller, since_first).await, "two\nfour\n");
        controller.remove().await.unwrap();

        // Following: the channel closes when the container stops, after its last line.
        let controller = executor
            .controller(&task(
                "logs",
                "follow",
                shell("for i in 1 2 3; do echo line$i; sleep 0.2; done; echo done >&2"),
            ))
            .unwrap();
        run_to_running(&*controller).await;
        let follow = LogsOptions {
            follow: true,
            ..Default::default()
        };
        let followed = output(&*controller, follow.clone()).await;
        assert_eq!(followed, "line1\nline2\nline3\ndone\n");
        assert_eq!(controller.wait().await.unwrap(), Exit::Code(0));
        controller.remove().await.unwrap();

        // The last record of one stream, then new ones: the engine's tail counts both
        // streams, the executor's only the wanted one. The container waits for a file on a
        // bind mount before it writes more.
        let dir = std::env::temp_dir().join(format!("shoal-docker-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let _ = std::fs::remove_file(dir.join("go"));
        let mut gated = shell(
            "echo a; echo b; echo c >&2; while [ ! -f /signal/go ]; do sleep 0.05; done; echo d; echo e >&2",
        );
        gated.mounts = vec![shoal_api::v1::Mount {
            r#type: shoal_api::v1::mount::Type::Bind as i32,
            source: dir.to_str().unwrap().into(),
            target: "/signal".into(),
            readonly: true,
            ..Default::default()
        }];
        let controller = executor.controller(&task("logs", "gated", gated)).unwrap();
        run_to_running(&*controller).await;
        wait_for_output(&*controller, "c\n").await;
        let mut reader = controller
            .logs(LogsOptions {
                tail: Some(1),
                follow: true,
                ..only(LogStream::Stdout)
            })
            .await
            .unwrap();
        let first = reader.recv().await.unwrap().unwrap();
        assert_eq!(first.data, b"b\n");
        std::fs::write(dir.join("go"), b"").unwrap();
        let rest = String::from_utf8(read_all(reader).await.unwrap()).unwrap();
        assert_eq!(rest, "d\n");
        assert_eq!(controller.wait().await.unwrap(), Exit::Code(0));
        controller.remove().await.unwrap();
        let _ = std::fs::remove_dir_all(&dir);

        // A follower of a container that never ends stops when its receiver is dropped
        // (the channel is closed; the reader notices without waiting for output).
        let quiet = ContainerSpec {
            command: vec!["sleep".into(), "1000".into()],
            ..Default::default()
        };
        let controller = executor.controller(&task("logs", "quiet", quiet)).unwrap();
        run_to_running(&*controller).await;
        let reader = controller.logs(follow).await.unwrap();
        drop(reader);
        controller.terminate().await.unwrap();
        assert_eq!(controller.wait().await.unwrap(), Exit::Code(137));
        controller.remove().await.unwrap();
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn a_health_check_gates_running() {
    let Some(executor) = engine().await else {
        return;
    };
    let _cleanup = Cleanup::new(&executor, "health").await;
    tokio::time::timeout(LIMIT, async {
        let health = |test: &str| {
            Some(Box::new(HealthConfig {
                test: vec!["CMD-SHELL".into(), test.into()],
                interval: Some(prost_types_duration(0, 100_000_000)),
                timeout: Some(prost_types_duration(2, 0)),
                retries: 2,
                ..Default::default()
            }))
        };
        // Ready only after a while: start returns once the engine says healthy.
        let mut slow = shell("sleep 1; touch /tmp/ready; sleep 1000");
        slow.healthcheck = health("test -f /tmp/ready");
        // Failures within the start period do not count: it stays "starting" until ready.
        slow.healthcheck.as_mut().unwrap().start_period = Some(prost_types_duration(30, 0));
        let controller = executor.controller(&task("health", "slow", slow)).unwrap();
        let _machine = run_to_running(&*controller).await;
        let state = inspect(&executor, &container_id(&*controller))
            .await
            .state
            .unwrap();
        assert_eq!(
            state.health.unwrap().status,
            Some(HealthStatusEnum::HEALTHY)
        );
        controller.terminate().await.unwrap();
        controller.remove().await.unwrap();

        // Never healthy: start fails and the task FAILS (it had started).
        let mut sick = shell("sleep 1000");
        sick.healthcheck = health("echo not today; exit 1");
        let controller = executor.controller(&task("health", "sick", sick)).unwrap();
        let mut machine = TaskMachine::default();
        machine.begin();
        controller.prepare().await.unwrap();
        machine.handle(Event::Prepared);
        let error = controller.start().await.unwrap_err();
        assert_eq!(error.class(), ErrorClass::Fatal, "{error}");
        assert!(error.to_string().contains("unhealthy"), "{error}");
        assert!(error.to_string().contains("not today"), "{error}");
        machine.handle(error_event(&error));
        assert_eq!(machine.state(), TaskState::Failed);
        controller.remove().await.unwrap();

        // Ending before becoming healthy is an error too.
        let mut quitter = shell("exit 4");
        quitter.healthcheck = health("false");
        let controller = executor
            .controller(&task("health", "quitter", quitter))
            .unwrap();
        controller.prepare().await.unwrap();
        let error = controller.start().await.unwrap_err();
        assert!(error.to_string().contains("exit code 4"), "{error}");
        controller.remove().await.unwrap();
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn a_missing_image_rejects_the_task() {
    let Some(executor) = engine().await else {
        return;
    };
    let _cleanup = Cleanup::new(&executor, "missing").await;
    tokio::time::timeout(LIMIT, async {
        let image = "127.0.0.1:1/shoal-missing:none";
        let spec = ContainerSpec {
            image: image.into(),
            ..Default::default()
        };
        let controller = executor
            .controller(&task("missing", "missing", spec))
            .unwrap();
        let mut machine = TaskMachine::default();
        machine.begin();
        let error = controller.prepare().await.unwrap_err();
        assert_eq!(error.class(), ErrorClass::Fatal, "{error}");
        let message = error.to_string();
        assert!(
            message.starts_with(&format!(
                "image {image:?} is not on this node and could not be pulled: "
            )),
            "{message}"
        );
        machine.handle(error_event(&error));
        assert_eq!(machine.state(), TaskState::Rejected);
        assert_eq!(machine.message(), message);
        assert!(controller.runtime_status().is_none(), "nothing was created");
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn a_fresh_executor_adopts_a_running_container() {
    let Some(executor) = engine().await else {
        return;
    };
    let _cleanup = Cleanup::new(&executor, "adopt").await;
    tokio::time::timeout(LIMIT, async {
        let spec = ContainerSpec {
            command: vec!["sleep".into(), "1000".into()],
            ..Default::default()
        };
        let t = task("adopt", "adopt", spec);
        let first = executor.controller(&t).unwrap();
        run_to_running(&*first).await;
        let id = container_id(&*first);
        let started_at = inspect(&executor, &id).await.state.unwrap().started_at;
        drop(first);
        drop(executor);

        // The agent restarts: a new executor, a new controller for the same task.
        let executor = DockerExecutor::new(config()).await.unwrap();
        let second = executor.docker_controller(&t).unwrap();
        assert_eq!(second.container_id(), None);
        let waiting = {
            let second = second.clone();
            tokio::spawn(async move { second.wait().await })
        };
        second.prepare().await.unwrap();
        second.start().await.unwrap();
        assert_eq!(second.container_id().as_deref(), Some(id.as_str()));
        let state = inspect(&executor, &id).await.state.unwrap();
        assert_eq!(state.running, Some(true));
        assert_eq!(state.started_at, started_at, "not restarted");
        assert!(!waiting.is_finished());

        second.terminate().await.unwrap();
        let exit = waiting.await.unwrap().unwrap();
        assert_eq!(exit, Exit::Code(137));
        // A finished container is not started again.
        second.start().await.unwrap();
        assert_eq!(
            inspect(&executor, &id).await.state.unwrap().running,
            Some(false)
        );

        second.remove().await.unwrap();

        // A container with the task's name but another task's label is not ours: refused,
        // and left alone.
        let squatter = task("adopt", "squatter", ContainerSpec::default());
        let controller = executor.docker_controller(&squatter).unwrap();
        let body = bollard::models::ContainerCreateBody {
            image: Some(IMAGE.into()),
            labels: Some(HashMap::from([
                (CASE_LABEL.to_string(), "adopt".to_string()),
                (
                    "com.docker.swarm.task.id".to_string(),
                    "someoneelse".to_string(),
                ),
            ])),
            ..Default::default()
        };
        let options = bollard::query_parameters::CreateContainerOptions {
            name: Some(controller.name().to_string()),
            ..Default::default()
        };
        executor
            .docker()
            .create_container(Some(options), body)
            .await
            .unwrap();
        let error = controller.prepare().await.unwrap_err();
        assert_eq!(error.class(), ErrorClass::Fatal, "{error}");
        assert!(error.to_string().contains("someoneelse"), "{error}");
        assert!(controller.remove().await.is_err());
        inspect(&executor, controller.name()).await;
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn secrets_and_configs_are_read_only_files_in_the_container() {
    use shoal_api::v1::{
        Config, ConfigReference, ConfigSpec, FileTarget, Secret, SecretReference, SecretSpec,
    };
    let Some(executor) = engine().await else {
        return;
    };
    let _cleanup = Cleanup::new(&executor, "secrets").await;
    let annotations = |name: &str| {
        Some(Annotations {
            name: name.into(),
            labels: Vec::new(),
        })
    };
    let dependencies = shoal_executor::TaskDependencies {
        secrets: vec![Secret {
            meta: Some(Meta {
                id: "sec1".into(),
                ..Default::default()
            }),
            spec: Some(SecretSpec {
                annotations: annotations("db"),
                data: b"hunter2-canary".to_vec(),
                ..Default::default()
            }),
            internal: false,
        }],
        configs: vec![Config {
            meta: Some(Meta {
                id: "cfg1".into(),
                ..Default::default()
            }),
            spec: Some(ConfigSpec {
                annotations: annotations("app.conf"),
                data: b"x=1".to_vec(),
                ..Default::default()
            }),
        }],
    };
    let mut spec = shell(
        "test \"$(cat /run/secrets/db)\" = hunter2-canary \
         && test \"$(stat -c %a /run/secrets/db)\" = 400 \
         && test \"$(cat /app.conf)\" = x=1 \
         && test \"$(stat -c %a /app.conf)\" = 444 \
         && test \"$(cat /etc/app/other.conf)\" = x=1 \
         && ! (echo x > /run/secrets/db) 2>/dev/null \
         && echo ok",
    );
    spec.secrets = vec![SecretReference {
        secret_id: "sec1".into(),
        secret_name: "db".into(),
        file: None,
    }];
    spec.configs = vec![
        ConfigReference {
            config_id: "cfg1".into(),
            config_name: "app.conf".into(),
            file: None,
        },
        ConfigReference {
            config_id: "cfg1".into(),
            config_name: "app.conf".into(),
            file: Some(FileTarget {
                name: "/etc/app/other.conf".into(),
                mode: 0o444,
                ..Default::default()
            }),
        },
    ];
    let t = task("secrets", "secrets", spec);
    let controller = executor
        .docker_controller_with(&t, &dependencies)
        .expect("controller");
    let machine = run(&controller).await;
    let out = output(&controller, LogsOptions::default()).await;
    assert_eq!(machine.state(), TaskState::Complete, "{out}");
    assert!(out.contains("ok"), "{out}");
    let dir = controller.secrets_dir();
    assert!(dir.starts_with("/dev/shm"), "{}", dir.display());
    assert_eq!(
        std::fs::read(dir.join("secrets/0")).unwrap(),
        b"hunter2-canary"
    );
    controller.remove().await.expect("remove");
    assert!(!dir.exists(), "the files go with the task");
    let _ = std::fs::remove_dir(dir.parent().unwrap());

    // Without its secret's data, the task is refused before anything is created.
    let mut t = task("secrets", "nosecret", shell("true"));
    if let Some(task_spec::Runtime::Container(c)) = t.spec.as_mut().and_then(|s| s.runtime.as_mut())
    {
        c.secrets = vec![SecretReference {
            secret_id: "sec9".into(),
            secret_name: "gone".into(),
            file: None,
        }];
    }
    let controller = executor
        .controller_with(&t, &shoal_executor::TaskDependencies::default())
        .expect("controller");
    let error = controller.prepare().await.unwrap_err();
    assert_eq!(error.class(), ErrorClass::Fatal);
    assert!(
        error
            .to_string()
            .contains("secret gone (sec9) was not sent"),
        "{error}"
    );
}
