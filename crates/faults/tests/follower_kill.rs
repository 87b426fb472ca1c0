//! One short schedule end to end on a real Docker cluster: `follower-kill` with a small
//! workload, asserting every invariant. The image is built from the `shoal` binaries of this
//! build (`cargo test --workspace` builds them). Skips (saying why) when Docker or the image
//! is not usable, unless `SHOAL_REQUIRE_DOCKER=1`, which makes that a failure.

use std::time::Duration;

use shoal_faults::cluster::{self, ClusterSpec};
use shoal_faults::runner::{RunOptions, run_once};
use shoal_faults::schedules::Schedule;
use shoal_faults::workload::WorkloadSpec;

/// Whether the test can run; panics instead of skipping under `SHOAL_REQUIRE_DOCKER=1`.
fn usable(image: &str) -> bool {
    let required = std::env::var("SHOAL_REQUIRE_DOCKER").is_ok_and(|v| v == "1");
    let problem = match cluster::docker_usable() {
        Err(e) => Some(format!("Docker is not usable: {e}")),
        // The image of the binaries this test was built with (rebuilt when they are newer).
        Ok(()) => cluster::ensure_image(image, &cluster::binary_dir()).err(),
    };
    match problem {
        None => true,
        Some(p) if required => panic!("SHOAL_REQUIRE_DOCKER=1: {p}"),
        Some(p) => {
            eprintln!("skipping: {p}");
            false
        }
    }
}

#[test]
fn follower_kill_keeps_every_invariant() {
    let image = std::env::var("SHOAL_IMAGE").unwrap_or_else(|_| cluster::DEFAULT_IMAGE.into());
    if !usable(&image) {
        return;
    }
    let options = RunOptions {
        cluster: ClusterSpec {
            managers: 3,
            workers: 1,
            image,
            daemon_flags: Vec::new(),
        },
        workload: WorkloadSpec {
            clients: 3,
            ops_per_client: 400,
            objects: 3,
            ..Default::default()
        },
        warmup: Duration::from_secs(1),
        faults: Duration::from_secs(8),
        cooldown: Duration::from_secs(2),
        replicas: 2,
        ..Default::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let figures = runtime
        .block_on(run_once(Schedule::FollowerKill, 42, &options))
        .expect("the run completes");
    eprintln!(
        "follower-kill: {:?} ops, unavailable {} ms, converged in {:?} ms, terms {:?}",
        figures.ops, figures.unavailable_ms, figures.converge_ms, figures.leaders_by_term
    );
    assert!(
        figures.fault_errors.is_empty(),
        "{:?}",
        figures.fault_errors
    );
    assert!(
        figures.ops.ok > 50,
        "too few operations succeeded: {:?}",
        figures.ops
    );
    assert!(
        figures.passed(),
        "invariants failed (artifacts: {:?}):\n{}",
        figures.artifacts,
        figures.failures().join("\n")
    );
}
