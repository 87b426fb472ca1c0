//! Backup and restore, with real `shoal daemon` processes: `shoal swarm backup FILE` from a
//! running manager (a follower, while writes go on) holds every write acknowledged before it;
//! the cluster is lost; `shoal daemon --restore FILE --force-new-cluster` on a new state
//! directory brings it back, and every object of the backup is there, equal (0 differences);
//! an autolocked cluster's backup is sealed and its restore waits, locked, for the key (a
//! wrong one is refused); bad input changes nothing.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use prost::Message;
use shoal_api::v1::StoreSnapshot;
use support::Manager;
use support::cli::shoal;
use support::cluster::{Cluster, LIMIT};

/// The store snapshot in a backup file, opened with `key` if sealed.
fn snapshot_of(file: &Path, key: Option<&str>) -> StoreSnapshot {
    let backup =
        shoal_node::backup::Backup::parse(std::fs::read(file).unwrap(), "the backup").unwrap();
    let key = key.map(|k| shoal_node::keys::UnlockKey::parse(k).unwrap());
    StoreSnapshot::decode(backup.open(key.as_ref()).unwrap().as_slice()).unwrap()
}

/// Every object of a snapshot by kind and ID, as bytes; a node's and a task's status (what
/// the new cluster observes of them, not what users declared) and their version and update
/// time are left out.
fn objects(s: &StoreSnapshot) -> BTreeMap<(String, String), Vec<u8>> {
    let mut out = BTreeMap::new();
    let id = |m: &Option<shoal_api::v1::Meta>| m.as_ref().unwrap().id.clone();
    for o in &s.clusters {
        out.insert(("cluster".into(), id(&o.meta)), o.encode_to_vec());
    }
    for o in &s.services {
        out.insert(("service".into(), id(&o.meta)), o.encode_to_vec());
    }
    for o in &s.networks {
        out.insert(("network".into(), id(&o.meta)), o.encode_to_vec());
    }
    for o in &s.secrets {
        out.insert(("secret".into(), id(&o.meta)), o.encode_to_vec());
    }
    for o in &s.configs {
        out.insert(("config".into(), id(&o.meta)), o.encode_to_vec());
    }
    for o in &s.nodes {
        let mut o = o.clone();
        o.status = None;
        let meta = o.meta.as_mut().unwrap();
        meta.version = 0;
        meta.updated_at = None;
        out.insert(("node".into(), id(&o.meta)), o.encode_to_vec());
    }
    for o in &s.tasks {
        let mut o = o.clone();
        o.status = None;
        let meta = o.meta.as_mut().unwrap();
        meta.version = 0;
        meta.updated_at = None;
        out.insert(("task".into(), id(&o.meta)), o.encode_to_vec());
    }
    out
}

/// Waits until `socket` answers `shoal service ls`.
fn wait_serving(socket: &Path) -> String {
    let start = std::time::Instant::now();
    loop {
        let run = shoal(socket, &["service", "ls"]);
        if run.code == Some(0) {
            return run.stdout;
        }
        assert!(start.elapsed() < LIMIT, "not serving: {}", run.stderr);
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every kind of object, and a secret and a config with content.
fn populate(c: &Cluster) {
    let outside = tempfile::tempdir().unwrap();
    let file = outside.path().join("data");
    std::fs::write(&file, "backed-up content").unwrap();
    let f = file.to_str().unwrap();
    c.shoal(&["secret", "create", "db-password", f]).ok();
    c.shoal(&["config", "create", "app-config", f]).ok();
    c.shoal(&["network", "create", "backend"]).ok();
    c.create_service("web", &["--replicas", "2", "--secret", "db-password"]);
    c.create_service("api", &["--replicas", "1", "--config", "app-config"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_from_a_running_follower_restores_a_lost_cluster_object_for_object() {
    let mut c = Cluster::start(&["w1"]);
    c.join_manager("m2");
    populate(&c);
    // Writes go on while the backup is taken on the follower; every one acknowledged before
    // the backup started must be in it.
    let socket = c.socket.clone();
    let writer = std::thread::spawn(move || {
        let outside = tempfile::tempdir().unwrap();
        let file = outside.path().join("data");
        std::fs::write(&file, "x").unwrap();
        let mut acknowledged = Vec::new();
        for i in 0..20 {
            let name = format!("during-{i}");
            if shoal(
                &socket,
                &["config", "create", &name, file.to_str().unwrap()],
            )
            .code
                == Some(0)
            {
                acknowledged.push((name, std::time::Instant::now()));
            }
        }
        acknowledged
    });
    std::thread::sleep(Duration::from_millis(300));
    let started = std::time::Instant::now();
    let file = c.dir().join("cluster.backup");
    let out = shoal(
        &c.socket_of("m2"),
        &["swarm", "backup", file.to_str().unwrap()],
    )
    .ok();
    assert!(out.contains("Backed up cluster"), "{out}");
    assert!(out.contains("NOT encrypted"), "{out}");
    let acknowledged = writer.join().unwrap();
    let backup = snapshot_of(&file, None);
    let names: Vec<String> = backup
        .configs
        .iter()
        .map(|c| {
            c.spec
                .as_ref()
                .unwrap()
                .annotations
                .as_ref()
                .unwrap()
                .name
                .clone()
        })
        .collect();
    for (name, at) in &acknowledged {
        if *at < started {
            assert!(
                names.contains(name),
                "{name} was acknowledged before the backup"
            );
        }
    }
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // The cluster is lost.
    for name in ["w1", "m2", "m1"] {
        c.daemon(name).kill();
    }

    // Restored on a new state directory, on a new address.
    let new_dir = tempfile::tempdir().unwrap();
    let mut restored = Manager::start(
        new_dir.path(),
        "r1",
        &[
            "--restore",
            file.to_str().unwrap(),
            "--force-new-cluster",
            "--hostname",
            "r1",
        ],
    );
    let r1 = restored.state_dir.join("control.sock");
    let ls = wait_serving(&r1);
    assert!(ls.contains("web") && ls.contains("api"), "{ls}");
    let again = new_dir.path().join("again.backup");
    shoal(&r1, &["swarm", "backup", again.to_str().unwrap()]).ok();
    let after = snapshot_of(&again, None);
    let (before, after_objects) = (objects(&backup), objects(&after));
    let missing: Vec<_> = before
        .keys()
        .filter(|k| !after_objects.contains_key(k))
        .collect();
    let differing: Vec<_> = before
        .iter()
        .filter(|(k, v)| after_objects.get(*k).is_some_and(|a| a != *v))
        .map(|(k, _)| k)
        .collect();
    assert!(missing.is_empty(), "missing after the restore: {missing:?}");
    assert!(
        differing.is_empty(),
        "different after the restore: {differing:?}"
    );
    // What is new is this manager's node only.
    let added: Vec<_> = after_objects
        .keys()
        .filter(|k| !before.contains_key(k))
        .collect();
    assert_eq!(added.len(), 1, "{added:?}");
    assert_eq!(added[0].0, "node");
    assert!(after.version >= backup.version);
    // It is a cluster: it takes writes.
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("d"), "y").unwrap();
    shoal(
        &r1,
        &[
            "config",
            "create",
            "after-restore",
            outside.path().join("d").to_str().unwrap(),
        ],
    )
    .ok();
    // A second restore into the same (now used) state directory is refused.
    restored.terminate(Duration::from_secs(10));
    let out = support::daemon_once(
        &restored.state_dir,
        &["--restore", file.to_str().unwrap(), "--force-new-cluster"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("already belongs to a cluster"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_autolocked_clusters_backup_is_sealed_and_restores_only_with_its_key() {
    let mut c = Cluster::start(&[]);
    populate(&c);
    let out = c.shoal(&["swarm", "update", "--autolock=true"]).ok();
    let key = out
        .split_whitespace()
        .find(|w| w.starts_with("SWMKEY-1-"))
        .unwrap()
        .to_string();
    let file = c.dir().join("sealed.backup");
    let out = c.shoal(&["swarm", "backup", file.to_str().unwrap()]).ok();
    assert!(
        out.contains("sealed with the cluster's unlock key"),
        "{out}"
    );
    let bytes = std::fs::read(&file).unwrap();
    assert!(
        !bytes.windows(17).any(|w| w == b"backed-up content"),
        "a sealed backup holds the secret in clear"
    );
    let backup = snapshot_of(&file, Some(&key));
    c.daemon("m1").kill();

    let new_dir = tempfile::tempdir().unwrap();
    let _restored = Manager::start(
        new_dir.path(),
        "r1",
        &["--restore", file.to_str().unwrap(), "--force-new-cluster"],
    );
    let r1 = new_dir.path().join("r1/control.sock");
    // Locked until it gets the key.
    let start = std::time::Instant::now();
    loop {
        let run = shoal(&r1, &["service", "ls"]);
        if run.stderr.contains("locked") {
            break;
        }
        assert!(start.elapsed() < LIMIT, "not locked: {}", run.stderr);
        std::thread::sleep(Duration::from_millis(200));
    }
    let wrong = support::cli::shoal_with_input(
        &r1,
        &["swarm", "unlock"],
        "SWMKEY-1-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n",
    )
    .failed();
    assert!(wrong.contains("invalid unlock key"), "{wrong}");
    assert!(
        !new_dir.path().join("r1/node.json").exists(),
        "a refused key wrote state"
    );
    support::cli::shoal_with_input(&r1, &["swarm", "unlock"], format!("{key}\n")).ok();
    wait_serving(&r1);
    // Everything is there, the cluster is still autolocked with the same key, and the
    // restored manager's keys are sealed from the start.
    let again = new_dir.path().join("again.backup");
    shoal(&r1, &["swarm", "backup", again.to_str().unwrap()]).ok();
    let after = snapshot_of(&again, Some(&key));
    let (before, after_objects) = (objects(&backup), objects(&after));
    assert!(before.iter().all(|(k, v)| after_objects.get(k) == Some(v)));
    assert_eq!(shoal(&r1, &["swarm", "unlock-key", "-q"]).ok().trim(), key);
    let key_file =
        std::fs::read_to_string(new_dir.path().join("r1/certificates/node.key")).unwrap();
    assert!(key_file.contains("SHOAL LOCKED NODE KEYS"), "{key_file}");
}

#[test]
fn bad_restores_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let not_a_backup = dir.path().join("notes.txt");
    std::fs::write(&not_a_backup, "hello\n").unwrap();
    let out = support::daemon_once(
        &state,
        &[
            "--restore",
            not_a_backup.to_str().unwrap(),
            "--force-new-cluster",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("is not a Shoal backup"), "{err}");
    assert!(!state.join("node.json").exists());
    // Without --force-new-cluster: refused before anything is read.
    let out = support::daemon_once(&state, &["--restore", not_a_backup.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("--force-new-cluster"), "{err}");
    // A missing file.
    let out = support::daemon_once(
        &state,
        &["--restore", "/nonexistent/backup", "--force-new-cluster"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("reading the backup /nonexistent/backup"),
        "{err}"
    );
}
