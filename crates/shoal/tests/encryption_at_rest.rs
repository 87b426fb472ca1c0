//! Security at rest, with real `shoal daemon` processes driven by the command line: the Raft
//! log and snapshots of every manager are sealed (a canary secret is nowhere in any state
//! directory, snapshot installed from the leader included, nor in the debug logs); autolock
//! locks a restarted manager until `shoal swarm unlock` gives it the key (a wrong, malformed
//! or rotated-away key is refused and it stays locked); the unlock key rotates; autolock turns
//! off again; turning it on rotates every manager's data key while writes go on, and no write
//! fails.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use shoal_api::v1::{ListClustersRequest, UpdateClusterRequest};
use support::cluster::{Cluster, LIMIT};

/// The canary, in two halves so that the whole value is in no source line a grep could find.
const A: &str = "shoal-at-rest-canary-";
const B: &str = "3f9a61c07be2d548";

fn canary() -> String {
    format!("{A}{B}")
}

/// Lowers the snapshot interval so that every manager snapshots after a few writes.
async fn snapshot_often(socket: &Path, interval: u64) {
    let mut control = support::local_client(socket).await;
    let cluster = control
        .list_clusters(ListClustersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .clusters
        .remove(0);
    let mut spec = cluster.spec.clone().unwrap();
    let raft = spec.raft.get_or_insert_with(Default::default);
    raft.snapshot_interval = interval;
    raft.log_entries_for_slow_followers = 2;
    let meta = cluster.meta.unwrap();
    control
        .update_cluster(UpdateClusterRequest {
            cluster_id: meta.id,
            cluster_version: meta.version,
            spec: Some(spec),
            rotation: None,
        })
        .await
        .unwrap();
}

/// Creates configs `<prefix>0..<count>` through the CLI; each must succeed.
fn create_configs(c: &Cluster, prefix: &str, count: usize) {
    let outside = tempfile::tempdir().unwrap();
    let file = outside.path().join("data");
    std::fs::write(&file, "x").unwrap();
    for i in 0..count {
        c.shoal(&[
            "config",
            "create",
            &format!("{prefix}{i}"),
            file.to_str().unwrap(),
        ])
        .ok();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_is_in_no_state_directory_snapshot_or_debug_log() {
    let mut c = Cluster::start_with(&[], &["--log-level", "debug"]);
    snapshot_often(&c.socket, 5).await;
    let outside = tempfile::tempdir().unwrap();
    let secret_file = outside.path().join("canary");
    std::fs::write(&secret_file, canary()).unwrap();
    c.shoal(&["secret", "create", "canary", secret_file.to_str().unwrap()])
        .ok();
    // Managers that join get the store as a snapshot from the leader and install it.
    c.join_manager("m2");
    c.join_manager("m3");
    // Enough writes for every manager to snapshot and compact its log.
    create_configs(&c, "after-", 12);
    // A restarted manager opens its sealed log and snapshot.
    c.daemon("m2").terminate(Duration::from_secs(10));
    c.daemon("m2")
        .restart(&["--log-level", "debug", "--hostname", "m2"]);
    c.wait("m2 to be READY again", &[], |c| {
        c.node("m2").filter(|n| n.status == "Ready").map(|_| ())
    });
    create_configs(&c, "restarted-", 3);
    let ls = c.shoal(&["secret", "ls"]).ok();
    assert!(ls.contains("canary"), "{ls}");

    // Not vacuous: every manager has a log and a snapshot file, and logs at debug level.
    for m in ["m1", "m2", "m3"] {
        let raft = c.dir().join(m).join("raft");
        for file in ["log.redb", "snapshot.bin"] {
            assert!(raft.join(file).exists(), "{m} has no {file}");
        }
        let log = std::fs::read_to_string(c.dir().join(format!("{m}.log"))).unwrap();
        assert!(log.contains("DEBUG"), "{m} logs at debug level");
    }
    let hits = support::files_holding(c.dir(), canary().as_bytes());
    // Name the lines that hold it, to say where it leaked.
    for hit in &hits {
        let text = String::from_utf8_lossy(&std::fs::read(hit).unwrap_or_default()).into_owned();
        for line in text.lines().filter(|l| l.contains(&canary())) {
            eprintln!("{}: {}", hit.display(), &line[..line.len().min(300)]);
        }
    }
    assert!(hits.is_empty(), "the secret is on disk in clear: {hits:?}");
    // The node key files hold the data keys but never the secret, and the log file is not
    // protobuf in clear: not even a config's name is readable in it.
    let hits = support::files_holding(c.dir(), b"restarted-1");
    assert!(
        hits.iter()
            .all(|p| p.extension().is_some_and(|e| e == "log")),
        "object names in clear: {hits:?}"
    );
}

/// The unlock key in what `swarm update --autolock=true` / `unlock-key` print.
fn key_in(text: &str) -> String {
    text.split_whitespace()
        .find(|w| w.starts_with("SWMKEY-1-"))
        .unwrap_or_else(|| panic!("no unlock key in {text:?}"))
        .to_string()
}

/// Stops manager `name` and starts it again; it comes back locked.
fn restart_locked(c: &mut Cluster, name: &str) {
    c.daemon(name).terminate(Duration::from_secs(10));
    c.daemon(name).restart(&["--hostname", name]);
    let socket = c.socket_of(name);
    let start = Instant::now();
    loop {
        let run = support::cli::shoal(&socket, &["node", "ls"]);
        if run.code == Some(1) && run.stderr.contains("locked") {
            assert!(run.stderr.contains("shoal swarm unlock"), "{}", run.stderr);
            return;
        }
        assert!(
            start.elapsed() < LIMIT,
            "{name} did not come back locked: {}",
            run.stderr
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autolock_keeps_a_restarted_manager_locked_until_it_gets_the_key() {
    let mut c = Cluster::start(&[]);
    c.create_service("web", &["--replicas", "1"]);
    let e = c.shoal(&["swarm", "unlock-key"]).failed();
    assert!(e.contains("no unlock key is set"), "{e}");
    let e = c.shoal(&["swarm", "unlock-key", "--rotate"]).failed();
    assert!(e.contains("no unlock key is set"), "{e}");

    // On: the key is shown once by the update, and again by unlock-key.
    let out = c.shoal(&["swarm", "update", "--autolock=true"]).ok();
    let key = key_in(&out);
    assert_eq!(c.shoal(&["swarm", "unlock-key", "-q"]).ok().trim(), key);
    let inspect = c.shoal(&["swarm", "inspect"]).ok();
    assert!(!inspect.contains(&key), "inspect shows the key: {inspect}");
    // The manager seals its key file with it (the node key is no longer in clear).
    let key_file = c.dir().join("m1/certificates/node.key");
    c.wait("m1's key file to be sealed", &[], |_| {
        let text = std::fs::read_to_string(&key_file).unwrap_or_default();
        (text.contains("SHOAL LOCKED NODE KEYS") && !text.contains("PRIVATE KEY")).then_some(())
    });
    let e = c.shoal(&["swarm", "unlock"]).failed();
    assert!(e.contains("not locked"), "{e}");

    // A restart: locked, serving nothing — not even the remote API.
    restart_locked(&mut c, "m1");
    let addr = c.daemon("m1").addr.clone();
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "a locked manager listens on {addr}"
    );
    let info = c.shoal(&["swarm", "inspect"]).failed();
    assert!(info.contains("locked"), "{info}");
    let wrong = support::cli::shoal_with_input(
        &c.socket,
        &["swarm", "unlock"],
        "SWMKEY-1-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n",
    )
    .failed();
    assert!(wrong.contains("invalid unlock key"), "{wrong}");
    let malformed =
        support::cli::shoal_with_input(&c.socket, &["swarm", "unlock"], "SWMTKN-1-nope\n").failed();
    assert!(malformed.contains("not an unlock key"), "{malformed}");
    let empty = support::cli::shoal_with_input(&c.socket, &["swarm", "unlock"], "\n").failed();
    assert!(empty.contains("no unlock key given"), "{empty}");
    // Still locked after the refusals.
    let e = c.shoal(&["service", "ls"]).failed();
    assert!(e.contains("locked"), "{e}");
    let ok =
        support::cli::shoal_with_input(&c.socket, &["swarm", "unlock"], format!("{key}\n")).ok();
    assert!(ok.contains("unlocked"), "{ok}");
    c.wait("m1 to serve again", &[], |c| {
        c.shoal(&["service", "ls"]).code.eq(&Some(0)).then_some(())
    });
    assert_eq!(c.inspect("web")["Spec"]["Name"], "web");

    // A rotated key: the old one no longer opens a restarted manager, the new one does.
    let out = c.shoal(&["swarm", "unlock-key", "--rotate"]).ok();
    let rotated = key_in(&out);
    assert_ne!(rotated, key);
    assert!(out.contains("Keep the previous key"), "{out}");
    c.wait("m1 to seal its keys with the new key", &[], |c| {
        let log = std::fs::read_to_string(c.dir().join("m1.log")).unwrap_or_default();
        (log.matches("rotated the raft data key").count() >= 2).then_some(())
    });
    restart_locked(&mut c, "m1");
    let old = support::cli::shoal_with_input(&c.socket, &["swarm", "unlock"], format!("{key}\n"))
        .failed();
    assert!(old.contains("invalid unlock key"), "{old}");
    // The Engine API says it as moby does: locked, 503 for other calls, 401 for a wrong key.
    let engine = c.engine_socket_of("m1");
    let info = support::engine::request(&engine, "GET", "/v1.50/info", None).json();
    assert_eq!(info["Swarm"]["LocalNodeState"], "locked", "{info}");
    let swarm = support::engine::request(&engine, "GET", "/v1.50/swarm", None);
    assert_eq!(swarm.status, 503);
    assert!(
        swarm.json()["message"]
            .as_str()
            .unwrap()
            .starts_with("Swarm is encrypted and needs to be unlocked"),
        "{}",
        swarm.json()
    );
    let wrong = support::engine::request(
        &engine,
        "POST",
        "/v1.50/swarm/unlock",
        Some(&format!(r#"{{"UnlockKey":"{key}"}}"#)),
    );
    assert_eq!(wrong.status, 401, "{}", wrong.json());
    let right = support::engine::request(
        &engine,
        "POST",
        "/v1.50/swarm/unlock",
        Some(&format!(r#"{{"UnlockKey":"{rotated}"}}"#)),
    );
    assert_eq!(right.status, 200, "{}", right.json());
    c.wait("m1 to serve again", &[], |c| {
        c.shoal(&["service", "ls"]).code.eq(&Some(0)).then_some(())
    });

    // Off again: no key, and a restart is not locked.
    c.shoal(&["swarm", "update", "--autolock=false"]).ok();
    let e = c.shoal(&["swarm", "unlock-key"]).failed();
    assert!(e.contains("no unlock key is set"), "{e}");
    c.wait("m1's key file to be in clear", &[], |_| {
        let text = std::fs::read_to_string(&key_file).unwrap_or_default();
        text.contains("PRIVATE KEY").then_some(())
    });
    c.daemon("m1").terminate(Duration::from_secs(10));
    c.daemon("m1").restart(&["--hostname", "m1"]);
    c.wait("m1 to serve after a restart without a key", &[], |c| {
        c.shoal(&["service", "ls"]).code.eq(&Some(0)).then_some(())
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turning_autolock_on_rotates_every_managers_data_key_while_writes_go_on() {
    let mut c = Cluster::start(&[]);
    c.join_manager("m2");
    c.join_manager("m3");
    create_configs(&c, "before-", 5);
    // Writes through every manager while the keys change: none may fail. Bounded in count.
    let sockets: Vec<PathBuf> = ["m1", "m2", "m3"].iter().map(|m| c.socket_of(m)).collect();
    let writer = std::thread::spawn(move || {
        let outside = tempfile::tempdir().unwrap();
        let file = outside.path().join("data");
        std::fs::write(&file, "x").unwrap();
        let mut failures = Vec::new();
        for i in 0..30 {
            let socket = &sockets[i % sockets.len()];
            let run = support::cli::shoal(
                socket,
                &[
                    "config",
                    "create",
                    &format!("during-{i}"),
                    file.to_str().unwrap(),
                ],
            );
            if run.code != Some(0) {
                failures.push(run.stderr);
            }
        }
        failures
    });
    let out = c.shoal(&["swarm", "update", "--autolock=true"]).ok();
    let key = key_in(&out);
    let failures = writer.join().unwrap();
    assert!(
        failures.is_empty(),
        "writes failed during the rotation: {failures:?}"
    );
    for m in ["m1", "m2", "m3"] {
        c.wait(&format!("{m} to rotate its data key"), &[], |c| {
            let log = std::fs::read_to_string(c.dir().join(format!("{m}.log"))).unwrap_or_default();
            log.contains("rotated the raft data key").then_some(())
        });
    }
    // Every manager restarts locked and comes back with the one key, with every write.
    for m in ["m2", "m3", "m1"] {
        restart_locked(&mut c, m);
    }
    for m in ["m1", "m2", "m3"] {
        support::cli::shoal_with_input(&c.socket_of(m), &["swarm", "unlock"], format!("{key}\n"))
            .ok();
    }
    let ls = c.wait("the cluster to serve again", &[], |c| {
        let run = c.shoal(&["config", "ls"]);
        (run.code == Some(0)).then_some(run.stdout)
    });
    for i in 0..30 {
        assert!(
            ls.contains(&format!("during-{i}")),
            "during-{i} was lost: {ls}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swarm_init_autolock_prints_the_key_once_and_a_restart_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = support::Manager::start(dir.path(), "n1", &["--hostname", "n1"]);
    let socket = node.state_dir.join("control.sock");
    support::wait_for_path(&socket, LIMIT);
    let out = support::cli::shoal(&socket, &["swarm", "init", "--autolock"]).ok();
    assert!(out.contains("Swarm initialized"), "{out}");
    let key = key_in(&out);
    assert!(out.contains("shoal swarm unlock"), "{out}");
    // The daemon's log never shows it.
    let log = std::fs::read_to_string(&node.log).unwrap();
    assert!(!log.contains(&key), "the key is in the daemon's log");
    // Sealed from the start: no TLS key in clear was ever written.
    let key_file = std::fs::read_to_string(node.state_dir.join("certificates/node.key")).unwrap();
    assert!(key_file.contains("SHOAL LOCKED NODE KEYS"), "{key_file}");
    node.terminate(Duration::from_secs(10));
    node.restart(&["--hostname", "n1"]);
    let start = Instant::now();
    loop {
        let run = support::cli::shoal(&socket, &["swarm", "unlock-key"]);
        if run.stderr.contains("locked") {
            break;
        }
        assert!(start.elapsed() < LIMIT, "not locked: {}", run.stderr);
        std::thread::sleep(Duration::from_millis(200));
    }
    support::cli::shoal_with_input(&socket, &["swarm", "unlock"], format!("{key}\n")).ok();
    let start = Instant::now();
    loop {
        let run = support::cli::shoal(&socket, &["swarm", "unlock-key", "-q"]);
        if run.code == Some(0) {
            assert_eq!(run.stdout.trim(), key);
            break;
        }
        assert!(start.elapsed() < LIMIT, "not serving: {}", run.stderr);
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demoted_manager_of_an_autolocked_cluster_is_a_worker_that_is_never_locked() {
    let mut c = Cluster::start(&[]);
    c.join_manager("m2");
    let out = c.shoal(&["swarm", "update", "--autolock=true"]).ok();
    key_in(&out);
    let key_file = c.dir().join("m2/certificates/node.key");
    c.wait("m2's key file to be sealed", &[], |_| {
        let text = std::fs::read_to_string(&key_file).unwrap_or_default();
        text.contains("SHOAL LOCKED NODE KEYS").then_some(())
    });
    c.shoal(&["node", "demote", "m2"]).ok();
    c.wait("m2's key file to be in clear again", &[], |_| {
        let text = std::fs::read_to_string(&key_file).unwrap_or_default();
        (text.contains("PRIVATE KEY") && !text.contains("SHOAL RAFT DATA KEYS")).then_some(())
    });
    c.daemon("m2").terminate(Duration::from_secs(10));
    c.daemon("m2").restart(&["--hostname", "m2"]);
    // Up again, and not locked: it answers that there is nothing to unlock.
    let m2 = c.socket_of("m2");
    c.wait("m2 to answer that it is not locked", &[], |_| {
        let run = support::cli::shoal(&m2, &["swarm", "unlock"]);
        assert!(
            !run.stderr.contains("no unlock key given"),
            "m2 came back locked"
        );
        run.stderr.contains("not locked").then_some(())
    });
    c.wait("m2 to be a READY worker", &[], |c| {
        c.node("m2").filter(|n| n.status == "Ready").map(|_| ())
    });
}
