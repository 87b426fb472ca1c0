//! docker-py drives Shoal: `tests/docker_py/test_flows.py` (Python's unittest, the `docker`
//! package from PyPI) against the Engine API socket of a real `shoal daemon` — swarm init,
//! inspect, update and token rotation, nodes, services (replicated, global, jobs; scale,
//! update, force update, stale versions, insertDefaults, status), secrets, configs, overlay
//! networks, leave.
//!
//! Without Python's `docker` package the test skips, saying so — unless
//! `SHOAL_REQUIRE_DOCKER=1` (CI, whose `.ci/run` installs it), where it fails.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::Manager;
use support::engine::engine_socket;

/// Whether `python3` can import `docker`; panics when it must and cannot.
fn docker_py() -> bool {
    let importable = Command::new("python3")
        .args(["-c", "import docker"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !importable {
        if std::env::var("SHOAL_REQUIRE_DOCKER").as_deref() == Ok("1") {
            panic!("SHOAL_REQUIRE_DOCKER=1 but python3 cannot import docker (pip install docker)");
        }
        eprintln!("skipping: python3 cannot import docker (pip install docker)");
    }
    importable
}

#[test]
fn docker_py_drives_a_node() {
    if !docker_py() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let node = Manager::start(
        dir.path(),
        "py1",
        &["--hostname", "py1", "--executor", "sim"],
    );
    let socket = engine_socket(&node.state_dir);
    support::wait_for_path(&socket, Duration::from_secs(20));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/docker_py/test_flows.py");
    let mut child = Command::new("python3")
        .arg(&script)
        .arg("-v")
        .env("DOCKER_HOST", format!("unix://{}", socket.display()))
        .env("SHOAL_ADDR", &node.addr)
        .env_remove("DOCKER_TLS_VERIFY")
        .env_remove("DOCKER_CERT_PATH")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run python3");
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(300) {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}\n--- daemon log ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        node.logs()
    );
    assert!(out.status.success(), "docker-py flows failed:\n{report}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("OK"),
        "{report}"
    );
}
