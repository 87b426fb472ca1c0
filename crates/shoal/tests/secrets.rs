//! Secrets delivered to process tasks, through real `shoal daemon` processes driven by the
//! command line: the task finds its secret as a 0400 file in `$SHOAL_SECRETS_DIR`, on
//! /dev/shm, on its own node only; the secret's bytes are nowhere in the nodes' state
//! directories (the manager's Raft log holds the secret object, sealed), nor in the daemons'
//! debug logs, nor in what `inspect` prints; a service naming a missing secret is
//! refused and nothing is created; the task's directory is gone after `service rm`. And a
//! container task on a `--executor docker` node finds its secret read-only at
//! `/run/secrets/<target>` (skipped without an engine, unless `SHOAL_REQUIRE_DOCKER=1`).

mod support;

use std::path::{Path, PathBuf};
use std::time::Instant;

use support::cluster::{Cluster, LIMIT};

/// The canary, in two halves: the task's command compares the file with `$A$B`, so the whole
/// value is in no spec.
const A: &str = "shoal-canary-";
const B: &str = "8d41f0c2b7e95a36";

fn canary() -> String {
    format!("{A}{B}")
}

/// The container test's canary (its own, as the tests run at the same time).
const DB: &str = "51c7e0a9d3b8f264";

fn docker_canary() -> String {
    format!("{A}{DB}")
}

/// Removes these directories when dropped.
struct ShmCleanup(Vec<PathBuf>);

impl Drop for ShmCleanup {
    fn drop(&mut self) {
        for dir in &self.0 {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The /dev/shm directory of the node whose state directory is `state_dir`.
fn shm_root(state_dir: &Path) -> PathBuf {
    shoal_executor::files::node_root(
        Path::new(shoal_executor::files::SHM_BASE),
        &state_dir.join("worker/logs"),
    )
}

#[test]
fn a_secret_reaches_only_its_task_as_a_private_file_and_nothing_else() {
    if !Path::new("/dev/shm").is_dir() {
        eprintln!("skipped: no /dev/shm on this machine");
        return;
    }
    // Every daemon logs at debug level (they inherit RUST_LOG), so that the logs are searched
    // at their most talkative.
    // SAFETY: set before any daemon starts; every test of this file sets the same value.
    unsafe { std::env::set_var("RUST_LOG", "debug") };
    let cluster = Cluster::start(&["w1", "w2"]);
    let dir = cluster.dir().to_path_buf();
    // Whatever the test leaves on /dev/shm (the daemons are killed at the end) goes.
    let _cleanup = ShmCleanup(["m1", "w1", "w2"].map(|n| shm_root(&dir.join(n))).to_vec());
    let outside = tempfile::tempdir().unwrap();
    let secret_file = outside.path().join("canary.txt");
    std::fs::write(&secret_file, canary()).unwrap();
    cluster
        .shoal(&["secret", "create", "canary", secret_file.to_str().unwrap()])
        .ok();

    // A missing secret: refused, nothing created.
    let e = cluster
        .create_command_service("bad", &["--secret", "nope"], &["sleep", "1000"])
        .failed();
    assert!(e.contains("secret nope not found"), "{e}");
    assert!(
        !cluster.shoal(&["service", "ls"]).ok().contains("bad"),
        "no service was created"
    );

    let check = "test \"$(cat \"$SHOAL_SECRETS_DIR/canary\")\" = \"$A$B\" \
                 && test \"$(stat -c %a \"$SHOAL_SECRETS_DIR/canary\")\" = 400 \
                 && exec sleep 1000";
    let a = format!("A={A}");
    let b = format!("B={B}");
    cluster
        .create_command_service(
            "web",
            &[
                "--secret",
                "canary",
                "--constraint",
                "node.hostname==w1",
                "--env",
                &a,
                "--env",
                &b,
            ],
            &["sh", "-c", check],
        )
        .ok();
    let rows = cluster.ps("web");
    let running: Vec<_> = rows.iter().filter(|r| r.running()).collect();
    assert_eq!(running.len(), 1, "{rows:?}");
    assert_eq!(running[0].node, "w1");
    assert!(
        rows.iter().all(|r| r.id == running[0].id),
        "the task never failed its check: {rows:?}"
    );
    let task = running[0].id.clone();

    // The secret is a 0400 file in the task's 0700 directory on w1's /dev/shm, and nowhere
    // else there.
    let w1 = shm_root(&dir.join("w1"));
    let file = w1.join(&task).join("secrets/canary");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), canary());
    let mode = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    };
    assert_eq!(mode(&file), 0o400);
    assert_eq!(mode(&w1.join(&task)), 0o700);
    let mut on_shm = Vec::new();
    for entry in std::fs::read_dir("/dev/shm").unwrap().flatten() {
        if entry.file_name().to_string_lossy().starts_with("shoal-") {
            on_shm.extend(support::files_holding(&entry.path(), canary().as_bytes()));
        }
    }
    assert_eq!(on_shm, [file], "only the task's own file holds the secret");
    for other in ["m1", "w2"] {
        let root = shm_root(&dir.join(other));
        assert!(
            support::files_holding(&root, canary().as_bytes()).is_empty()
                && !root.join(&task).exists(),
            "{other} has nothing of the secret"
        );
    }

    // Nothing prints it.
    for args in [
        vec!["service", "inspect", "web"],
        vec!["secret", "inspect", "canary"],
        vec!["task", "inspect", task.as_str()],
        vec!["service", "ps", "--no-trunc", "web"],
    ] {
        let out = cluster.shoal(&args).ok();
        assert!(
            !out.contains(&canary()),
            "{args:?} printed the secret: {out}"
        );
    }

    // An update naming a missing secret is refused, and the service stays as it was.
    let before = cluster.inspect("web");
    let e = cluster
        .shoal(&["service", "update", "-d", "--secret-add", "nope", "web"])
        .failed();
    assert!(e.contains("secret nope not found"), "{e}");
    assert_eq!(cluster.inspect("web")["Version"], before["Version"]);

    // Nothing of it on disk, nor in the logs, anywhere under the cluster's directory (every
    // node's state directory and log): the manager's Raft log holds the secret, sealed.
    let check_disk = || {
        let logs: String = ["m1", "w1", "w2"]
            .iter()
            .map(|n| std::fs::read_to_string(dir.join(format!("{n}.log"))).unwrap_or_default())
            .collect();
        assert!(logs.contains("DEBUG"), "the daemons log at debug level");
        assert!(dir.join("m1/raft/log.redb").exists());
        let hits = support::files_holding(&dir, canary().as_bytes());
        assert!(hits.is_empty(), "the secret is on disk: {hits:?}");
    };
    check_disk();

    // Once the service is removed, the task's directory is gone.
    cluster.shoal(&["service", "rm", "web"]).ok();
    let start = Instant::now();
    while w1.join(&task).exists() {
        assert!(
            start.elapsed() < LIMIT,
            "{} still there after service rm",
            w1.join(&task).display()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    check_disk();
}

/// Removes the containers of a service when dropped (the daemons do not outlive the test,
/// their containers would).
struct ContainerCleanup(String);

impl Drop for ContainerCleanup {
    fn drop(&mut self) {
        let listed = std::process::Command::new("docker")
            .args(["ps", "-aq", "--filter"])
            .arg(format!("label=com.docker.swarm.service.name={}", self.0))
            .output();
        if let Ok(listed) = listed {
            let ids = String::from_utf8_lossy(&listed.stdout).to_string();
            for id in ids.split_whitespace() {
                let _ = std::process::Command::new("docker")
                    .args(["rm", "-f", id])
                    .output();
            }
        }
    }
}

/// Whether the engine answers and the test image is built; panics when it must
/// (`SHOAL_REQUIRE_DOCKER=1`) and does not.
fn docker_ready() -> bool {
    let answers = std::process::Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !answers {
        if std::env::var("SHOAL_REQUIRE_DOCKER").as_deref() == Ok("1") {
            panic!("SHOAL_REQUIRE_DOCKER=1 but no Docker Engine answers `docker version`");
        }
        eprintln!("skipping: no Docker Engine answers `docker version`");
        return false;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/build-test-image.sh");
    let built = std::process::Command::new("sh")
        .arg(&script)
        .status()
        .unwrap();
    assert!(built.success(), "{} failed", script.display());
    true
}

#[test]
fn a_container_finds_its_secret_read_only_at_run_secrets() {
    if !docker_ready() {
        return;
    }
    // SAFETY: set before any daemon starts; every test of this file sets the same value.
    unsafe { std::env::set_var("RUST_LOG", "debug") };
    let mut cluster = Cluster::start(&[]);
    let dir = cluster.dir().to_path_buf();
    // A worker that runs containers.
    let token = cluster
        .shoal(&["swarm", "join-token", "-q", "worker"])
        .ok()
        .trim()
        .to_string();
    let manager = cluster.daemon("m1").addr.clone();
    let _d1 = support::Manager::start(
        &dir,
        "d1",
        &[
            "--join-addr",
            &manager,
            "--join-token",
            &token,
            "--hostname",
            "d1",
            "--executor",
            "docker",
        ],
    );
    let node = cluster.wait("d1 to be READY", &[], |c| {
        c.node("d1").filter(|n| n.status == "Ready")
    });
    let root = shoal_executor::files::node_root(
        Path::new(shoal_executor::files::SHM_BASE),
        Path::new(&format!("docker/{}", node.id)),
    );
    let _cleanup = ShmCleanup(vec![root.clone()]);
    let service = format!("dsecret{}", std::process::id());
    let _containers = ContainerCleanup(service.clone());
    let outside = tempfile::tempdir().unwrap();
    let secret_file = outside.path().join("canary.txt");
    std::fs::write(&secret_file, docker_canary()).unwrap();
    cluster
        .shoal(&["secret", "create", "dcanary", secret_file.to_str().unwrap()])
        .ok();
    let a = format!("A={A}");
    let b = format!("B={DB}");
    cluster
        .shoal(&[
            "service",
            "create",
            "--name",
            &service,
            "--secret",
            "source=dcanary,target=canary",
            "--constraint",
            "node.hostname==d1",
            "--env",
            &a,
            "--env",
            &b,
            "shoal-test/busybox:latest",
            "--",
            "sh",
            "-c",
            "test \"$(cat /run/secrets/canary)\" = \"$A$B\" \
             && test \"$(stat -c %a /run/secrets/canary)\" = 400 \
             && ! (echo x > /run/secrets/canary) 2>/dev/null \
             && exec sleep 1000",
        ])
        .ok();
    let rows = cluster.ps(&service);
    assert!(
        rows.len() == 1 && rows[0].running() && rows[0].node == "d1",
        "{rows:?}"
    );
    let task = rows[0].id.clone();
    let on_host = root.join(&task).join("secrets/0");
    assert_eq!(std::fs::read_to_string(&on_host).unwrap(), docker_canary());
    let hits = support::files_holding(&dir, docker_canary().as_bytes());
    assert!(hits.is_empty(), "the secret is on disk: {hits:?}");

    cluster.shoal(&["service", "rm", &service]).ok();
    cluster.wait("the task's files to go", &[], |_| {
        (!root.join(&task).exists()).then_some(())
    });
    let hits = support::files_holding(&dir, docker_canary().as_bytes());
    assert!(hits.is_empty(), "the secret is on disk: {hits:?}");
}
