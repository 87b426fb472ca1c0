//! The docker CLI creates a service through Shoal's Engine API, and its containers run on the
//! machine's Docker Engine through the docker executor: `docker service create --replicas 3`
//! converges, and `docker ps` on the engine shows the three containers, named
//! `<service>.<slot>.<task id>` as docker swarm names them. Removing the service removes them.
//!
//! The image is built locally (`scripts/build-test-image.sh`; there is no registry). Without
//! an engine the test skips, saying so — unless `SHOAL_REQUIRE_DOCKER=1` (CI), where it fails.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::Manager;
use support::engine::{docker, docker_cli, engine_socket, engine_with_test_image};

const IMAGE: &str = "shoal-test/busybox:latest";

/// Whether the docker CLI and the machine's engine are there, with the test image built.
fn engine_ready() -> bool {
    docker_cli() && engine_with_test_image()
}

/// The machine engine's containers of `service` (names), running or not.
fn containers_of(service: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args([
            "ps",
            "-a",
            "--filter",
            &format!("label=com.docker.swarm.service.name={service}"),
            "--format",
            "{{.Names}}",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Removes the service's containers from the engine when the test ends, however it ends.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for name in containers_of(&self.0) {
            let _ = Command::new("docker").args(["rm", "-f", &name]).output();
        }
    }
}

#[test]
fn a_service_created_with_the_docker_cli_runs_containers_on_the_engine() {
    if !engine_ready() {
        return;
    }
    let service = format!("shoalweb{}", std::process::id());
    let _cleanup = Cleanup(service.clone());
    let dir = tempfile::tempdir().unwrap();
    let node = Manager::start(
        dir.path(),
        "d1",
        &["--init", "--hostname", "d1", "--executor", "docker"],
    );
    let socket = engine_socket(&node.state_dir);
    support::wait_for_path(&socket, Duration::from_secs(20));
    // The manager leads once `docker node ls` answers.
    let start = Instant::now();
    while docker(&socket, &["node", "ls"]).code != Some(0) {
        assert!(start.elapsed() < Duration::from_secs(30), "{}", node.logs());
        std::thread::sleep(Duration::from_millis(200));
    }

    let created = docker(
        &socket,
        &[
            "service",
            "create",
            "--name",
            &service,
            "--replicas",
            "3",
            "--no-resolve-image",
            IMAGE,
            "sleep",
            "1d",
        ],
    );
    assert_eq!(
        created.code,
        Some(0),
        "{}\n{}\n{}",
        created.stdout,
        created.stderr,
        node.logs()
    );
    assert!(
        created
            .stdout
            .trim_end()
            .ends_with(&format!("verify: Service {service} converged"))
            || created.stdout.contains("converged"),
        "{}",
        created.stdout
    );

    let names = containers_of(&service);
    assert_eq!(names.len(), 3, "{names:?}");
    for slot in 1..=3 {
        assert!(
            names
                .iter()
                .any(|n| n.starts_with(&format!("{service}.{slot}."))),
            "slot {slot} in {names:?}"
        );
    }
    let ps = docker(&socket, &["service", "ps", &service]).ok();
    assert_eq!(ps.matches("Running").count(), 6, "{ps}");

    docker(&socket, &["service", "rm", &service]).ok();
    let start = Instant::now();
    while !containers_of(&service).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "containers left: {:?}",
            containers_of(&service)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}
