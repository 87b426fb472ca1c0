//! `shoal-bench listing`: how fast the command line lists a large cluster.
//!
//! One manager (`shoal daemon --init --executor sim`, its node drained) with `--nodes`
//! simulated agents joined (1,000 by default: real certificates, sessions and heartbeats, as
//! in `converge`) and `--services` services (10,000 by default, created through the Control
//! API, replicated with 0 replicas so that no task is made). Then `shoal service ls` and
//! `shoal node ls` are run as a user runs them — a new process on the manager's control
//! socket, output to a pipe — `--runs` times each, and timed from spawn to exit: the figure
//! includes starting the binary, connecting, the calls (`ListServices` and
//! `ListServiceStatuses`; `ListNodes` and the local node's info) and rendering the table.
//! Goal (the Control API issue): under 100 ms each.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shoal_api::v1::{
    Annotations, CreateServiceRequest, ProcessSpec, ReplicatedService, ServiceSpec, service_spec,
    task_spec,
};

use crate::converge::cluster;
use crate::report::Report;
use crate::simagent::{progress, raise_nofile, shoal_bin};

/// Arguments of `shoal-bench listing`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Simulated agents (nodes).
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Services (each with 0 replicas).
    #[arg(long, default_value_t = 10_000)]
    services: usize,
    /// Timed runs of each command.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// The `shoal` binary (default: next to this one).
    #[arg(long)]
    shoal_bin: Option<std::path::PathBuf>,
}

fn service(i: usize) -> ServiceSpec {
    ServiceSpec {
        annotations: Some(Annotations {
            name: format!("svc-{i:05}"),
            ..Default::default()
        }),
        task: Some(
            shoal_api::shared::TaskSpecFields {
                runtime: Some(task_spec::Runtime::Process(Box::new(ProcessSpec {
                    command: "sleep".into(),
                    args: vec!["1000".into()],
                    ..Default::default()
                }))),
                ..Default::default()
            }
            .into(),
        ),
        mode: Some(service_spec::Mode::Replicated(ReplicatedService {
            replicas: 0,
        })),
        ..Default::default()
    }
}

/// Runs `shoal -s SOCKET args` to its end: (elapsed, output lines).
fn timed(bin: &Path, socket: &Path, args: &[&str]) -> Result<(Duration, usize), String> {
    let start = Instant::now();
    let out = Command::new(bin)
        .arg("-s")
        .arg(socket)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running shoal {args:?}: {e}"))?;
    let elapsed = start.elapsed();
    if !out.status.success() {
        return Err(format!(
            "shoal {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok((elapsed, out.stdout.iter().filter(|b| **b == b'\n').count()))
}

pub fn run(args: Args) -> Report {
    let mut report = Report::new("listing");
    let fail = |e: String| -> ! {
        eprintln!("Error: {e}");
        std::process::exit(1);
    };
    let bin = shoal_bin(&args.shoal_bin).unwrap_or_else(|e| fail(e));
    if args.runs == 0 || args.runs > 100 {
        fail("--runs must be between 1 and 100".into());
    }
    let nofile = raise_nofile();
    if args.nodes as u64 + 512 > nofile {
        fail(format!(
            "{} nodes need about {} open files; the limit is {nofile}",
            args.nodes,
            args.nodes + 512
        ));
    }
    let dir = tempfile::Builder::new()
        .prefix("shoal-bench-listing-")
        .tempdir()
        .unwrap_or_else(|e| fail(format!("a temporary directory: {e}")));
    report.notes.push(format!(
        "one manager (sim executor, its node drained), {} simulated agents joined, {} services \
         of 0 replicas; each figure: `shoal -s <control socket> …` spawned, run and exited, \
         output to a pipe; loopback; both processes share this machine's {} cores",
        args.nodes,
        args.services,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    ));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let result: Result<(), String> = runtime.block_on(async {
        let state = dir.path().join("manager");
        let (_manager, mut control, _agents) =
            cluster(&bin, &state, args.nodes, 64, Duration::ZERO, None).await?;
        progress(format!("creating {} services", args.services));
        let started = Instant::now();
        for i in 0..args.services {
            control
                .client
                .create_service(CreateServiceRequest {
                    spec: Some(service(i)),
                })
                .await
                .map_err(|s| format!("CreateService {i}: {}", s.message()))?;
            if started.elapsed() > Duration::from_secs(600) {
                return Err("creating the services took over 10 minutes".into());
            }
        }
        let socket = state.join("control.sock");
        for (what, command, expected) in [
            ("service ls", ["service", "ls"], args.services + 1),
            ("node ls", ["node", "ls"], args.nodes + 2),
        ] {
            let mut times = Vec::new();
            for _ in 0..args.runs {
                let (elapsed, lines) = timed(&bin, &socket, &command)?;
                if lines != expected {
                    return Err(format!(
                        "`shoal {what}` printed {lines} lines, expected {expected}"
                    ));
                }
                times.push(elapsed.as_secs_f64() * 1e3);
            }
            times.sort_by(f64::total_cmp);
            let label = format!("shoal {what} ({} rows)", expected - 1);
            report.row(
                format!("{label}, median"),
                times[times.len() / 2],
                "ms",
                None,
                Some(100.0),
            );
            report.row(
                format!("{label}, max"),
                times[times.len() - 1],
                "ms",
                None,
                None,
            );
        }
        Ok(())
    });
    drop(runtime);
    if let Err(e) = result {
        fail(e);
    }
    report
}
