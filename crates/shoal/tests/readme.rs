//! Every command of the README's quick start, run as written (with the test's own sockets,
//! state directories and ports): the daemon lines start real `shoal daemon` processes, the
//! client lines run through `sh` with `cargo run --release --` standing for the `shoal`
//! binary, `service logs -f` runs until the service's output shows up, and the `docker` lines
//! run the real docker CLI against the manager's Engine API socket (skipped without the
//! CLI, unless `SHOAL_REQUIRE_DOCKER=1`).
//!
//! If a command is added to the quick start, this test runs it; if the quick start loses a
//! command this test expects (the daemon lines), it fails.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::cluster::Cluster;

const CARGO_RUN: &str = "cargo run --release --";

/// The shell commands of the quick start's code blocks, continuation lines joined.
fn quick_start_commands() -> Vec<String> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    let section = readme
        .split("## Quick start")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("a Quick start section");
    let mut commands = Vec::new();
    let mut in_block = false;
    let mut pending = String::new();
    for line in section.lines() {
        if line.starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if !in_block {
            continue;
        }
        let line = line.split("   #").next().unwrap_or(line).trim_end();
        if let Some(head) = line.strip_suffix('\\') {
            pending.push_str(head.trim());
            pending.push(' ');
            continue;
        }
        pending.push_str(line.trim());
        if !pending.trim().is_empty() {
            commands.push(pending.trim().to_string());
        }
        pending.clear();
    }
    commands
}

/// Runs a client command of the README through `sh`, `cargo run --release --` being `shoal`
/// on the cluster's control socket.
fn run_client(cluster: &Cluster, command: &str) -> String {
    let script = command.replace(CARGO_RUN, "\"$SHOAL\"");
    let out = Command::new("sh")
        .args(["-c", &script])
        .env("SHOAL", env!("CARGO_BIN_EXE_shoal"))
        .env("SHOAL_SOCKET", &cluster.socket)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "README command failed: {command}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a docker CLI command of the README through `sh`, with `DOCKER_HOST` (which the README
/// exports) pointing at the manager's Engine API socket.
fn run_docker(cluster: &Cluster, command: &str) -> String {
    let config = tempfile::tempdir().unwrap();
    std::fs::write(config.path().join("config.json"), "{}").unwrap();
    let out = Command::new("sh")
        .args(["-c", command])
        .env(
            "DOCKER_HOST",
            format!("unix://{}", cluster.engine_socket_of("m1").display()),
        )
        .env("DOCKER_CONFIG", config.path())
        .env_remove("DOCKER_CONTEXT")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "README command failed: {command}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a following command (`logs -f`) until a line of output arrives, then stops it.
fn run_following(cluster: &Cluster, command: &str) -> String {
    let script = format!("exec {}", command.replace(CARGO_RUN, "\"$SHOAL\""));
    let mut child = Command::new("sh")
        .args(["-c", &script])
        .env("SHOAL", env!("CARGO_BIN_EXE_shoal"))
        .env("SHOAL_SOCKET", &cluster.socket)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(60));
    let _ = child.kill();
    let _ = child.wait();
    line.unwrap_or_else(|_| panic!("{command} printed nothing within 60s"))
}

#[test]
fn the_quick_start_works_as_written() {
    let commands = quick_start_commands();
    let daemons: Vec<&String> = commands
        .iter()
        .filter(|c| c.starts_with(&format!("{CARGO_RUN} daemon")))
        .collect();
    // The first daemon line creates the cluster; the second joins a worker with a token.
    assert_eq!(
        daemons.first().map(|s| s.as_str()),
        Some("cargo run --release -- daemon --init"),
        "{commands:#?}"
    );
    assert!(
        daemons
            .get(1)
            .is_some_and(|d| d.contains("--join-addr") && d.contains("--join-token")),
        "{commands:#?}"
    );
    assert_eq!(daemons.len(), 2, "{commands:#?}");

    // `daemon --init`, then the worker joining with the worker token.
    let mut cluster = Cluster::start(&[]);
    cluster.join_worker("w1");

    let mut ran = 0;
    for command in &commands {
        if command.starts_with(&format!("{CARGO_RUN} daemon")) {
            continue;
        }
        if command.starts_with("export DOCKER_HOST=") {
            continue;
        }
        if command.starts_with("docker ") || command.contains("| docker ") {
            if support::engine::docker_cli() {
                let out = run_docker(&cluster, command);
                if command == "docker secret ls" {
                    assert!(out.contains("db-password"), "{out}");
                }
                if command == "docker node ls" {
                    assert!(out.contains("m1") && out.contains("Leader"), "{out}");
                }
                ran += 1;
            }
            continue;
        }
        assert!(
            command.starts_with(CARGO_RUN),
            "a quick start command this test does not know how to run: {command}"
        );
        if command.contains(" logs -f ") {
            let line = run_following(&cluster, command);
            assert!(!line.trim().is_empty());
        } else {
            let out = run_client(&cluster, command);
            if command.contains("join-token manager") {
                assert!(out.contains("SWMTKN-1-"), "{out}");
            }
            if command.contains("service create") {
                assert!(out.contains("converged"), "{out}");
            }
        }
        ran += 1;
    }
    assert!(ran >= 6, "only {ran} client commands in the quick start");

    // And the inline `node ls` the quick start mentions.
    let nodes = run_client(&cluster, "cargo run --release -- node ls");
    assert!(nodes.contains("w1"), "{nodes}");
    let start = Instant::now();
    while cluster.try_ps("web").is_some_and(|t| !t.is_empty()) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "web's tasks left"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
