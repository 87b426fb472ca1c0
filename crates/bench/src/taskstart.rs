//! `shoal-bench taskstart` (scenario S8): what starting a task costs on the agent, measured
//! against the runtime's own floor on the same machine, in the same run.
//!
//! Process executor (runtime `process`): the floor is a bare `posix_spawn` of the same
//! program from this process (`sleep`, returning once spawned; and `/bin/true` spawned and
//! waited for, the anchor of performance.md §6). The executor's figure is its controller's
//! `prepare` + `start` — what the worker does between ACCEPTED and RUNNING: the task
//! directory, the shim (`shoal process-shim`), the shim's spawn of the task and its status
//! line. The difference is the agent's added latency. Starts/s are measured one at a time
//! and with several starts in flight.
//!
//! Docker executor (runtime `container`): the floor is the engine's own create + start of
//! the same container (the two API calls `docker run -d` makes), through the same client on
//! the same socket; `docker run -d` through the CLI is shown for reference (it adds the
//! CLI's start-up). The executor's figure is `prepare` + `start`. The image is the locally
//! built test image (`scripts/build-test-image.sh`); the Docker part is skipped, saying so,
//! when no engine answers.
//!
//! Every started task is killed and removed after it is measured (not timed). Loops are
//! bounded by `--tasks` / `--containers`.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_api::shared::TaskSpecFields;
use shoal_api::v1::{ContainerSpec, Meta, ProcessSpec, Task, task_spec};
use shoal_executor::Executor;
use shoal_executor::process::{ProcessConfig, ProcessExecutor, ShimCommand};
use shoal_executor_docker::bollard;

use crate::report::Report;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Process tasks to start (per measurement).
    #[arg(long, default_value_t = 200)]
    tasks: usize,
    /// Containers to start (per measurement); 0 skips the Docker part.
    #[arg(long, default_value_t = 30)]
    containers: usize,
    /// Starts in flight for the parallel figures.
    #[arg(long, default_value_t = 8)]
    parallel: usize,
    /// The image containers run (built locally; there is no registry).
    #[arg(long, default_value = "shoal-test/busybox:latest")]
    image: String,
    /// The `shoal` binary, whose `process-shim` runs process tasks (default: next to this one).
    #[arg(long)]
    shoal_bin: Option<PathBuf>,
}

use crate::report::progress;

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1e3
}

fn sorted(mut v: Vec<Duration>) -> Vec<Duration> {
    v.sort();
    v
}

fn process_task(command: &str, args: &[&str]) -> Task {
    Task {
        meta: Some(Meta {
            id: shoal_api::id::new_id(),
            ..Default::default()
        }),
        spec: Some(
            TaskSpecFields {
                runtime: Some(task_spec::Runtime::Process(Box::new(ProcessSpec {
                    command: command.into(),
                    args: args.iter().map(|a| a.to_string()).collect(),
                    ..Default::default()
                }))),
                ..Default::default()
            }
            .into(),
        ),
        ..Default::default()
    }
}

fn container_task(image: &str) -> Task {
    Task {
        meta: Some(Meta {
            id: shoal_api::id::new_id(),
            ..Default::default()
        }),
        spec: Some(
            TaskSpecFields {
                runtime: Some(task_spec::Runtime::Container(Box::new(ContainerSpec {
                    image: image.into(),
                    command: vec!["sleep".into(), "1000".into()],
                    ..Default::default()
                }))),
                ..Default::default()
            }
            .into(),
        ),
        ..Default::default()
    }
}

/// Starts `task` through `executor` and returns how long prepare + start took, and the
/// controller (to clean up).
async fn start_one(
    executor: &dyn Executor,
    task: &Task,
) -> (Duration, Box<dyn shoal_executor::Controller>) {
    let started = Instant::now();
    let controller = executor.controller(task).expect("a controller");
    controller.prepare().await.expect("prepare");
    controller.start().await.expect("start");
    (started.elapsed(), controller)
}

pub fn run(args: Args) -> Report {
    let mut report = Report::new("taskstart");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    match crate::simagent::shoal_bin(&args.shoal_bin) {
        Ok(bin) => runtime.block_on(processes(&args, bin, &mut report)),
        Err(e) => report.notes.push(format!("process part skipped: {e}")),
    }
    if args.containers > 0 {
        runtime.block_on(containers(&args, &mut report));
    }
    report
}

async fn processes(args: &Args, bin: PathBuf, report: &mut Report) {
    let n = args.tasks.max(1);
    // Floors: bare spawns from this process.
    progress(format!("bare spawns of /bin/true and sleep ({n} each)"));
    let mut true_runs = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        Command::new("/bin/true")
            .stdin(Stdio::null())
            .status()
            .expect("spawn /bin/true");
        true_runs.push(t.elapsed());
    }
    let mut spawns = Vec::with_capacity(n);
    let mut children = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let child = Command::new("sleep")
            .arg("1000")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sleep");
        spawns.push(t.elapsed());
        children.push(child);
    }
    for mut child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
    let true_runs = sorted(true_runs);
    let spawns = sorted(spawns);

    let dir = tempfile::tempdir().expect("tempdir");
    let executor_with = |shim: ShimCommand| -> Arc<dyn Executor> {
        let mut config = ProcessConfig::new(dir.path().join("logs"));
        config.shim = shim;
        Arc::new(ProcessExecutor::new(config))
    };
    // The daemon's choice: the small shim beside `shoal`, else `shoal process-shim`.
    let small = bin.with_file_name(shoal_executor::process::SHIM_BINARY);
    let whole = ShimCommand {
        program: bin.clone(),
        args: vec!["process-shim".into()],
    };
    let (shim, shim_name) = if small.is_file() {
        (
            ShimCommand {
                program: small,
                args: Vec::new(),
            },
            "shoal-process-shim",
        )
    } else {
        (whole.clone(), "shoal process-shim")
    };
    let executor = executor_with(shim);

    progress(format!("process executor: {n} starts, one at a time"));
    let (starts, sequential) = one_at_a_time(&executor, n).await;
    // For comparison: the shim run as `shoal process-shim`, loading all of `shoal`.
    let whole_n = n.min(50);
    progress(format!(
        "process executor under `shoal process-shim`: {whole_n} starts"
    ));
    let (whole_starts, _) = one_at_a_time(&executor_with(whole), whole_n).await;

    let parallel = args.parallel.max(1);
    progress(format!(
        "process executor: {n} starts, {parallel} in flight"
    ));
    let (rate_parallel, controllers) =
        in_flight(&executor, n, parallel, || process_task("sleep", &["1000"])).await;
    cleanup(controllers).await;

    report.notes.push(format!(
        "process: prepare + start of `sleep 1000` under `{shim_name}`, {n} tasks; bare spawn \
         = posix_spawn of the same program from this process"
    ));
    report.row(
        "bare spawn+wait /bin/true p50 (ms)",
        percentile(&true_runs, 0.5),
        "ms",
        Some(0.54),
        None,
    );
    report.row(
        "bare spawn sleep p50 (ms)",
        percentile(&spawns, 0.5),
        "ms",
        None,
        None,
    );
    report.row(
        "process start p50 (ms)",
        percentile(&starts, 0.5),
        "ms",
        None,
        None,
    );
    report.row(
        "process start p99 (ms)",
        percentile(&starts, 0.99),
        "ms",
        None,
        None,
    );
    report.row(
        "process start via `shoal process-shim` p50 (ms)",
        percentile(&whole_starts, 0.5),
        "ms",
        None,
        None,
    );
    report.row(
        "process start added over bare spawn p50 (ms)",
        percentile(&starts, 0.5) - percentile(&spawns, 0.5),
        "ms",
        None,
        None,
    );
    report.row(
        "process starts/s, one at a time",
        n as f64 / sequential.as_secs_f64(),
        "/s",
        None,
        None,
    );
    report.row(
        format!("process starts/s, {parallel} in flight"),
        rate_parallel,
        "/s",
        None,
        None,
    );
}

/// Starts `n` tasks one after another, then removes them; returns the sorted start times and
/// the whole run's duration.
async fn one_at_a_time(executor: &Arc<dyn Executor>, n: usize) -> (Vec<Duration>, Duration) {
    let mut starts = Vec::with_capacity(n);
    let mut controllers = Vec::with_capacity(n);
    let began = Instant::now();
    for _ in 0..n {
        let (took, controller) = start_one(&**executor, &process_task("sleep", &["1000"])).await;
        starts.push(took);
        controllers.push(controller);
    }
    let took = began.elapsed();
    cleanup(controllers).await;
    (sorted(starts), took)
}

/// Starts `n` tasks with `parallel` in flight; returns starts/s and the controllers.
async fn in_flight(
    executor: &Arc<dyn Executor>,
    n: usize,
    parallel: usize,
    task: impl Fn() -> Task,
) -> (f64, Vec<Box<dyn shoal_executor::Controller>>) {
    let semaphore = Arc::new(tokio::sync::Semaphore::new(parallel));
    let mut running = tokio::task::JoinSet::new();
    let began = Instant::now();
    for _ in 0..n {
        let permit = semaphore.clone().acquire_owned().await.expect("semaphore");
        let executor = executor.clone();
        let task = task();
        running.spawn(async move {
            let (_, controller) = start_one(&*executor, &task).await;
            drop(permit);
            controller
        });
    }
    let mut controllers = Vec::with_capacity(n);
    while let Some(done) = running.join_next().await {
        controllers.push(done.expect("a start"));
    }
    (n as f64 / began.elapsed().as_secs_f64(), controllers)
}

async fn cleanup(controllers: Vec<Box<dyn shoal_executor::Controller>>) {
    let mut removing = tokio::task::JoinSet::new();
    for controller in controllers {
        removing.spawn(async move {
            let _ = controller.terminate().await;
            let _ = controller.remove().await;
        });
        // A few at a time: removing containers in hundreds at once only queues in the engine.
        while removing.len() >= 8 {
            removing.join_next().await;
        }
    }
    while removing.join_next().await.is_some() {}
}

async fn containers(args: &Args, report: &mut Report) {
    let n = args.containers;
    let executor = match shoal_executor_docker::DockerExecutor::new(
        shoal_executor_docker::DockerConfig::new("shoal-bench"),
    )
    .await
    {
        Ok(e) => e,
        Err(e) => {
            report
                .notes
                .push(format!("docker part skipped: no Docker Engine ({e})"));
            return;
        }
    };
    let docker = executor.docker().clone();
    if docker.inspect_image(&args.image).await.is_err() {
        report.notes.push(format!(
            "docker part skipped: image {} is missing (run scripts/build-test-image.sh)",
            args.image
        ));
        return;
    }

    // Floor: create + start through the engine API, the same container.
    progress(format!("engine API create + start ({n} containers)"));
    let mut raw = Vec::with_capacity(n);
    let mut raw_ids = Vec::with_capacity(n);
    for i in 0..n {
        let body = bollard::models::ContainerCreateBody {
            image: Some(args.image.clone()),
            cmd: Some(vec!["sleep".into(), "1000".into()]),
            labels: Some(
                [("shoal-bench".to_string(), "taskstart".to_string())]
                    .into_iter()
                    .collect(),
            ),
            ..Default::default()
        };
        let options = bollard::query_parameters::CreateContainerOptions {
            name: Some(format!("shoal-bench-raw-{}-{i}", std::process::id())),
            ..Default::default()
        };
        let t = Instant::now();
        let created = docker
            .create_container(Some(options), body)
            .await
            .expect("create");
        docker
            .start_container(
                &created.id,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await
            .expect("start");
        raw.push(t.elapsed());
        raw_ids.push(created.id);
    }
    remove_containers(&docker, raw_ids).await;

    // Reference: `docker run -d` through the CLI.
    let cli_runs = n.min(10);
    progress(format!(
        "docker run -d through the CLI ({cli_runs} containers)"
    ));
    let mut cli = Vec::with_capacity(cli_runs);
    let mut cli_ids = Vec::new();
    for _ in 0..cli_runs {
        let t = Instant::now();
        let out = Command::new("docker")
            .args(["run", "-d", "--label", "shoal-bench=taskstart"])
            .arg(&args.image)
            .args(["sleep", "1000"])
            .output()
            .expect("docker run");
        cli.push(t.elapsed());
        if out.status.success() {
            cli_ids.push(String::from_utf8_lossy(&out.stdout).trim().to_string());
        }
    }
    remove_containers(&docker, cli_ids).await;

    let executor: Arc<dyn Executor> = Arc::new(executor);
    progress(format!("docker executor: {n} starts, one at a time"));
    let mut starts = Vec::with_capacity(n);
    let mut controllers = Vec::with_capacity(n);
    let sequential = Instant::now();
    for _ in 0..n {
        let (took, controller) = start_one(&*executor, &container_task(&args.image)).await;
        starts.push(took);
        controllers.push(controller);
    }
    let sequential = sequential.elapsed();
    cleanup(controllers).await;
    let parallel = args.parallel.max(1);
    progress(format!("docker executor: {n} starts, {parallel} in flight"));
    let (rate_parallel, controllers) =
        in_flight(&executor, n, parallel, || container_task(&args.image)).await;
    cleanup(controllers).await;

    let raw = sorted(raw);
    let cli = sorted(cli);
    let starts = sorted(starts);
    report.notes.push(format!(
        "docker: `sleep 1000` in {}, {n} containers; floor = the engine's create + start \
         through the same client",
        args.image
    ));
    report.row(
        "engine create+start p50 (ms)",
        percentile(&raw, 0.5),
        "ms",
        None,
        None,
    );
    report.row(
        "docker run -d (CLI) p50 (ms)",
        percentile(&cli, 0.5),
        "ms",
        None,
        None,
    );
    report.row(
        "docker executor start p50 (ms)",
        percentile(&starts, 0.5),
        "ms",
        None,
        None,
    );
    report.row(
        "docker executor start p99 (ms)",
        percentile(&starts, 0.99),
        "ms",
        None,
        Some(60.0),
    );
    report.row(
        "docker executor added over engine p50 (ms)",
        percentile(&starts, 0.5) - percentile(&raw, 0.5),
        "ms",
        None,
        Some(2.0),
    );
    report.row(
        "containers/s, one at a time",
        n as f64 / sequential.as_secs_f64(),
        "/s",
        None,
        None,
    );
    report.row(
        format!("containers/s, {parallel} in flight"),
        rate_parallel,
        "/s",
        None,
        None,
    );
}

async fn remove_containers(docker: &bollard::Docker, ids: Vec<String>) {
    for id in ids {
        let _ = docker
            .remove_container(
                &id,
                Some(bollard::query_parameters::RemoveContainerOptions {
                    force: true,
                    v: true,
                    link: false,
                }),
            )
            .await;
    }
}
