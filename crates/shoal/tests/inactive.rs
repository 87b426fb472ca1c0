//! A node that belongs to no cluster: it waits, says how to start, and joins or creates a
//! cluster on `shoal swarm join` / `shoal swarm init`. Refused tokens fail the command at
//! once, saying why, and leave the node as it was.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::Manager;

/// Runs `shoal -s SOCKET ARGS...`; returns the exit code, stdout and stderr.
fn shoal(socket: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .arg("-s")
        .arg(socket)
        .args(args)
        .output()
        .expect("run shoal");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn inactive_node(dir: &Path, name: &str) -> (Manager, std::path::PathBuf) {
    let node = Manager::start(dir, name, &[]);
    let socket = node.state_dir.join("control.sock");
    support::eventually(
        &format!("{name}'s socket"),
        Duration::from_secs(20),
        async || socket.exists().then_some(()),
    )
    .await;
    (node, socket)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inactive_node_says_how_to_start_and_refused_joins_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let m1 = support::init_manager(dir.path(), "m1").await;
    let other = support::init_manager(dir.path(), "other").await;
    let tokens = support::join_tokens(&m1.addr).await;
    let foreign = support::join_tokens(&other.addr).await;
    let (node, socket) = inactive_node(dir.path(), "n1").await;

    let (code, _, stderr) = shoal(&socket, &["node", "ls"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("not part of a cluster") && stderr.contains("shoal swarm init"),
        "{stderr}"
    );

    let digest = shoal_ca::JoinToken::parse(&tokens.worker)
        .unwrap()
        .ca_digest;
    let rotated = shoal_ca::JoinToken::generate(&digest).to_string();
    for (case, token, reason) in [
        ("malformed", "SWMTKN-1-nope", "malformed join token"),
        ("rotated", rotated.as_str(), "matches no current token"),
        ("foreign", foreign.worker.as_str(), "CA mismatch"),
    ] {
        let (code, _, stderr) = shoal(&socket, &["swarm", "join", "--token", token, &m1.addr]);
        assert_eq!(code, Some(1), "{case}: {stderr}");
        assert!(stderr.contains(reason), "{case}: {stderr}");
        // Still inactive: nothing was written.
        assert!(!node.state_dir.join("node.json").exists(), "{case}");
    }

    // A valid token: the node joins as a worker, and the manager knows it.
    let (code, stdout, stderr) = shoal(
        &socket,
        &["swarm", "join", "--token", &tokens.worker, &m1.addr],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("as a worker"), "{stdout}");
    let m1_socket = m1.state_dir.join("control.sock");
    support::eventually(
        "the new worker in `node ls`",
        Duration::from_secs(20),
        async || {
            let (code, stdout, _) = shoal(&m1_socket, &["node", "ls", "-q"]);
            (code == Some(0) && stdout.lines().count() == 2).then_some(())
        },
    )
    .await;

    // It leaves, and is inactive again: its daemon keeps running.
    support::eventually(
        "the worker to serve its socket",
        Duration::from_secs(20),
        async || {
            let (_, _, stderr) = shoal(&socket, &["node", "ls"]);
            stderr.contains("worker").then_some(())
        },
    )
    .await;
    let (code, stdout, stderr) = shoal(&socket, &["swarm", "leave"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("left the swarm"), "{stdout}");
    support::eventually(
        "the node to be inactive again",
        Duration::from_secs(20),
        async || {
            let (_, _, stderr) = shoal(&socket, &["node", "ls"]);
            stderr.contains("not part of a cluster").then_some(())
        },
    )
    .await;
    assert!(!node.state_dir.join("node.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swarm_init_makes_an_inactive_node_the_first_manager() {
    let dir = tempfile::tempdir().unwrap();
    let (_node, socket) = inactive_node(dir.path(), "n1").await;
    let (code, stdout, stderr) = shoal(&socket, &["swarm", "init"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("Swarm initialized"), "{stdout}");
    assert!(
        stdout.contains("shoal swarm join --token SWMTKN-1-"),
        "{stdout}"
    );
    let (code, stdout, stderr) = shoal(&socket, &["node", "ls"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("Leader"), "{stdout}");
    // A second init is refused: the node belongs to a cluster now.
    let (code, _, stderr) = shoal(&socket, &["swarm", "init"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("already part of a cluster"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swarm_init_takes_the_remote_api_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let (node, socket) = inactive_node(dir.path(), "n1").await;
    // A bad address is refused and the node stays inactive.
    let (code, _, stderr) = shoal(&socket, &["swarm", "init", "--listen-addr", "nowhere"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("invalid listen_addr \"nowhere\""),
        "{stderr}"
    );
    let (code, _, stderr) = shoal(&socket, &["node", "ls"]);
    assert_eq!(code, Some(1), "still inactive: {stderr}");
    // The manager listens and advertises where `swarm init` says.
    let port = support::free_port();
    let addr = format!("127.0.0.1:{port}");
    let (code, stdout, stderr) = shoal(
        &socket,
        &[
            "swarm",
            "init",
            "--listen-addr",
            &addr,
            "--advertise-addr",
            &addr,
        ],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains(&addr),
        "the join command names it: {stdout}"
    );
    // Its remote API answers there, for a manager of the cluster.
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["-H", &addr, "--tls-dir"])
        .arg(&node.state_dir)
        .args(["node", "ls", "-q"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
}
