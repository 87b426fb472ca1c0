//! The real `docker` CLI (and raw Engine API requests) against real `shoal daemon` processes:
//! `docker version`/`info`, `swarm init/join/leave/update/join-token/unlock-key`, and `node
//! ls/inspect/update/promote/demote/rm` — outputs, exit codes, and the state they leave,
//! read back through `shoal` on the control socket.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::Manager;
use support::cli::{Run, shoal};
use support::engine::{docker, docker_cli, engine_socket, request};

/// moby's texts, as the CLI prints them.
const ALREADY_IN_A_SWARM: &str = "This node is already part of a swarm. Use \"docker swarm \
                                  leave\" to leave this swarm and join another one.";
const NOT_A_MANAGER_INACTIVE: &str = "This node is not a swarm manager. Use \"docker swarm \
                                      init\" or \"docker swarm join\" to connect this node to \
                                      swarm and try again.";
const LAST_MANAGER: &str = "You are attempting to leave the swarm on a node that is \
                            participating as a manager. Removing the last manager erases all \
                            current state of the swarm. Use `--force` to ignore this message.";

/// An inactive daemon named `name` and its Engine API socket, once it serves.
fn inactive(dir: &Path, name: &str) -> (Manager, PathBuf) {
    let node = Manager::start(dir, name, &["--hostname", name, "--executor", "sim"]);
    let socket = engine_socket(&node.state_dir);
    support::wait_for_path(&socket, Duration::from_secs(20));
    (node, socket)
}

fn control(node: &Manager) -> PathBuf {
    node.state_dir.join("control.sock")
}

/// `shoal … inspect` output, as JSON (the first element of the array).
fn shoal_json(node: &Manager, args: &[&str]) -> serde_json::Value {
    let out = shoal(&control(node), args).ok();
    let value: serde_json::Value = serde_json::from_str(&out).unwrap();
    value[0].clone()
}

/// Waits until `f` holds, for at most `limit`.
fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Exit status 1 with `Error response from daemon: <message>`; returns stderr.
fn refused(run: Run, message: &str) -> String {
    assert_eq!(
        run.code,
        Some(1),
        "stdout: {}\nstderr: {}",
        run.stdout,
        run.stderr
    );
    assert!(
        run.stderr.contains(message),
        "expected {message:?} in stderr: {}",
        run.stderr
    );
    run.stderr
}

/// The `docker info` swarm block line `key: value`, trimmed.
fn info_line(info: &str, key: &str) -> Option<String> {
    info.lines().map(str::trim).find_map(|l| {
        l.strip_prefix(&format!("{key}:"))
            .map(|v| v.trim().to_string())
    })
}

#[test]
fn an_inactive_node_answers_and_refuses_as_docker_does() {
    if !docker_cli() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (node, socket) = inactive(dir.path(), "solo");

    // Ping: the headers the CLI reads, no body on HEAD.
    let head = request(&socket, "HEAD", "/_ping", None);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("Swarm"), Some("inactive"));
    assert_eq!(head.header("Api-Version"), Some("1.50"));
    assert_eq!(head.header("Content-Length"), Some("0"));
    assert_eq!(
        head.header("Cache-Control"),
        Some("no-cache, no-store, must-revalidate")
    );
    let get = request(&socket, "GET", "/_ping", None);
    assert_eq!((get.status, get.body.as_slice()), (200, b"OK".as_slice()));
    assert_eq!(
        get.header("Content-Type"),
        Some("text/plain; charset=utf-8")
    );

    // docker version and info.
    let version = docker(&socket, &["version"]).ok();
    assert!(version.contains("Server: Shoal"), "{version}");
    assert!(
        version.contains("API version:      1.50 (minimum version 1.24)"),
        "{version}"
    );
    let raw = request(&socket, "GET", "/version", None).json();
    assert_eq!(raw["ApiVersion"], "1.50");
    assert_eq!(raw["MinAPIVersion"], "1.24");
    assert_eq!(raw["Os"], "linux");
    let info = docker(&socket, &["info"]);
    assert_eq!(info.code, Some(0), "{}", info.stderr);
    assert_eq!(
        info_line(&info.stdout, "Swarm").as_deref(),
        Some("inactive")
    );
    assert_eq!(info_line(&info.stdout, "OSType").as_deref(), Some("linux"));
    let raw = request(&socket, "GET", "/v1.50/info", None).json();
    assert_eq!(raw["Swarm"]["LocalNodeState"], "inactive");
    assert_eq!(raw["Swarm"]["ControlAvailable"], false);
    assert_eq!(raw["ExperimentalBuild"], false);
    assert!(raw["NCPU"].as_i64().unwrap() >= 1);

    // No registry: a clear error (the CLI only warns).
    let dist = request(
        &socket,
        "GET",
        "/v1.50/distribution/busybox:latest/json",
        None,
    );
    assert_eq!(dist.status, 501);
    assert!(
        dist.json()["message"]
            .as_str()
            .unwrap()
            .contains("registries")
    );

    // Manager-only calls and leave while inactive: moby's 503s.
    refused(docker(&socket, &["node", "ls"]), NOT_A_MANAGER_INACTIVE);
    refused(
        docker(&socket, &["swarm", "leave"]),
        "This node is not part of a swarm",
    );
    assert_eq!(request(&socket, "GET", "/v1.50/swarm", None).status, 503);
    assert_eq!(
        request(&socket, "POST", "/v1.50/swarm/leave?force=1", None).status,
        503
    );

    // Bad input changes nothing.
    let pool = request(
        &socket,
        "POST",
        "/v1.50/swarm/init",
        Some(r#"{"ListenAddr":"127.0.0.1:1","DefaultAddrPool":["2.0.0.0/16"],"SubnetSize":28}"#),
    );
    assert_eq!(pool.status, 501);
    let join = request(
        &socket,
        "POST",
        "/v1.50/swarm/join",
        Some(r#"{"RemoteAddrs":[],"JoinToken":"SWMTKN-1-x"}"#),
    );
    assert_eq!(join.status, 400);
    let bad_token = docker(
        &socket,
        &["swarm", "join", "--token", "SWMTKN-1-nonsense", &node.addr],
    );
    assert_eq!(bad_token.code, Some(1), "{}", bad_token.stdout);
    assert_eq!(
        request(&socket, "GET", "/_ping", None).header("Swarm"),
        Some("inactive")
    );

    // A raw init with a spec (docker-py's way): the spec is echoed, on top of the defaults.
    let init = request(
        &socket,
        "POST",
        "/v1.50/swarm/init",
        Some(&format!(
            r#"{{"ListenAddr":"{addr}","AdvertiseAddr":"{addr}","ForceNewCluster":false,"Availability":"drain",
            "Spec":{{"Labels":{{"env":"test"}},"Orchestration":{{"TaskHistoryRetentionLimit":2}},
            "Raft":{{"SnapshotInterval":5000,"KeepOldSnapshots":2,"ElectionTick":null}},
            "CAConfig":{{"NodeCertExpiry":7200000000000}}}}}}"#,
            addr = node.addr
        )),
    );
    assert_eq!(init.status, 200, "{}", String::from_utf8_lossy(&init.body));
    let node_id = init.json().as_str().unwrap().to_string();
    assert_eq!(node_id.len(), 25);
    let swarm = request(&socket, "GET", "/v1.50/swarm", None).json();
    let spec = &swarm["Spec"];
    assert_eq!(spec["Name"], "default");
    assert_eq!(spec["Labels"], serde_json::json!({"env": "test"}));
    assert_eq!(spec["Orchestration"]["TaskHistoryRetentionLimit"], 2);
    assert_eq!(spec["Raft"]["SnapshotInterval"], 5000);
    assert_eq!(spec["Raft"]["KeepOldSnapshots"], 2);
    assert_eq!(spec["Raft"]["ElectionTick"], 10);
    assert_eq!(spec["CAConfig"]["NodeCertExpiry"], 7_200_000_000_000i64);
    assert_eq!(spec["Dispatcher"]["HeartbeatPeriod"], 5_000_000_000i64);
    assert_eq!(swarm["DefaultAddrPool"], serde_json::json!(["10.0.0.0/8"]));
    assert_eq!(swarm["SubnetSize"], 24);
    assert!(
        swarm["JoinTokens"]["Worker"]
            .as_str()
            .unwrap()
            .starts_with("SWMTKN-1-")
    );
    assert!(
        swarm["TLSInfo"]["TrustRoot"]
            .as_str()
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
    let cluster = shoal_json(&node, &["swarm", "inspect"]);
    assert_eq!(
        cluster["Spec"]["Orchestration"]["TaskHistoryRetentionLimit"],
        2
    );
    assert_eq!(
        request(&socket, "GET", "/_ping", None).header("Swarm"),
        Some("active/manager")
    );

    // Init twice: moby's 503.
    let again = request(&socket, "POST", "/v1.50/swarm/init", Some("{}"));
    assert_eq!(again.status, 503);
    assert_eq!(again.json()["message"], ALREADY_IN_A_SWARM);

    // docker-py's update with rotation, then a stale version: the index rises once.
    let index = swarm["Version"]["Index"].as_u64().unwrap();
    let update = request(
        &socket,
        "POST",
        &format!(
            "/v1.50/swarm/update?rotateWorkerToken=True&rotateManagerToken=False&version={index}"
        ),
        Some(
            r#"{"Raft":{"SnapshotInterval":5000,"KeepOldSnapshots":null},"Labels":{"env":"test"}}"#,
        ),
    );
    assert_eq!(
        update.status,
        200,
        "{}",
        String::from_utf8_lossy(&update.body)
    );
    let after = request(&socket, "GET", "/v1.50/swarm", None).json();
    assert!(after["Version"]["Index"].as_u64().unwrap() > index);
    assert_ne!(after["JoinTokens"]["Worker"], swarm["JoinTokens"]["Worker"]);
    assert_eq!(
        after["JoinTokens"]["Manager"],
        swarm["JoinTokens"]["Manager"]
    );
    // Absent fields took their defaults again.
    assert_eq!(
        after["Spec"]["Orchestration"]["TaskHistoryRetentionLimit"],
        5
    );
    let stale = request(
        &socket,
        "POST",
        &format!("/v1.50/swarm/update?version={index}"),
        Some("{}"),
    );
    assert_eq!(stale.status, 500);
    assert!(
        stale.json()["message"]
            .as_str()
            .unwrap()
            .ends_with("update out of sequence")
    );
    let unlock_rotation = request(
        &socket,
        "POST",
        &format!(
            "/v1.50/swarm/update?rotateManagerUnlockKey=true&version={}",
            after["Version"]["Index"]
        ),
        Some("{}"),
    );
    assert_eq!(unlock_rotation.status, 400);
    assert!(
        unlock_rotation.json()["message"]
            .as_str()
            .unwrap()
            .contains("autolock is off"),
        "{:?}",
        unlock_rotation.json()
    );
    assert_eq!(
        request(&socket, "GET", "/v1.50/swarm", None).json()["Version"],
        after["Version"]
    );
    assert_eq!(
        request(&socket, "GET", "/v1.50/swarm/unlockkey", None).json(),
        serde_json::json!({"UnlockKey": ""})
    );
    let unlock = request(
        &socket,
        "POST",
        "/v1.50/swarm/unlock",
        Some(r#"{"UnlockKey":"SWMKEY-1-x"}"#),
    );
    assert_eq!(unlock.status, 409);

    // The node spec round-trips exactly (docker-py's test_update_node).
    let read = request(&socket, "GET", &format!("/v1.50/nodes/{node_id}"), None).json();
    assert_eq!(read["Spec"]["Labels"], serde_json::json!({}));
    assert_eq!(read["Spec"]["Availability"], "drain");
    let version = read["Version"]["Index"].as_u64().unwrap();
    let spec = serde_json::json!({"Availability": "active", "Name": "renamed", "Role": "manager",
        "Labels": {"tier": "front"}});
    let bad = request(
        &socket,
        "POST",
        &format!("/v1.50/nodes/{node_id}/update?version={version}"),
        Some(r#"{"Availability":"active","Role":"boss","Labels":{}}"#),
    );
    assert_eq!(bad.status, 400);
    let missing_version = request(
        &socket,
        "POST",
        &format!("/v1.50/nodes/{node_id}/update"),
        Some(&spec.to_string()),
    );
    assert_eq!(missing_version.status, 400);
    let updated = request(
        &socket,
        "POST",
        &format!("/v1.50/nodes/{node_id}/update?version={version}"),
        Some(&spec.to_string()),
    );
    assert_eq!(
        updated.status,
        200,
        "{}",
        String::from_utf8_lossy(&updated.body)
    );
    let read = request(&socket, "GET", "/v1.50/nodes/renamed", None).json();
    assert_eq!(read["Spec"], spec);
    let unknown = request(&socket, "GET", "/v1.50/nodes/foobar01", None);
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json()["message"], "node foobar01 not found");
    assert_eq!(
        request(&socket, "DELETE", "/v1.50/nodes/foobar01?force=False", None).status,
        404
    );
    let remove_self = request(
        &socket,
        "DELETE",
        &format!("/v1.50/nodes/{node_id}?force=1"),
        None,
    );
    assert_eq!(remove_self.status, 400);
    assert!(
        remove_self.json()["message"]
            .as_str()
            .unwrap()
            .ends_with("It must be demoted to worker before removal")
    );
    let workers = request(
        &socket,
        "GET",
        "/v1.50/nodes?filters=%7B%22role%22%3A%5B%22worker%22%5D%7D",
        None,
    )
    .json();
    assert_eq!(workers, serde_json::json!([]));

    // Leave: refused without force, then done; the swarm is gone.
    let leave = request(&socket, "POST", "/v1.50/swarm/leave", None);
    assert_eq!(leave.status, 503);
    assert_eq!(leave.json()["message"], LAST_MANAGER);
    assert_eq!(
        request(&socket, "POST", "/v1.50/swarm/leave?force=True", None).status,
        200
    );
    assert_eq!(request(&socket, "GET", "/v1.50/swarm", None).status, 503);
    assert_eq!(
        request(&socket, "GET", "/v1.50/info", None).json()["Swarm"]["LocalNodeState"],
        "inactive"
    );
}

#[test]
fn the_docker_cli_makes_and_runs_a_swarm() {
    if !docker_cli() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (m1, socket) = inactive(dir.path(), "m1");
    let (w1, w1_socket) = inactive(dir.path(), "w1");
    let addr = m1.addr.clone();
    let port = addr.rsplit_once(':').unwrap().1.to_string();

    // swarm init.
    let init = docker(
        &socket,
        &[
            "swarm",
            "init",
            "--listen-addr",
            &addr,
            "--advertise-addr",
            &addr,
        ],
    )
    .ok();
    let node_id = init
        .split("current node (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .unwrap_or_else(|| panic!("no node ID in {init}"))
        .to_string();
    assert!(init.contains("is now a manager."), "{init}");
    assert!(
        init.contains("docker swarm join --token SWMTKN-1-"),
        "{init}"
    );
    assert!(init.contains(&format!("127.0.0.1:{port}")), "{init}");
    refused(
        docker(&socket, &["swarm", "init", "--advertise-addr", "127.0.0.1"]),
        ALREADY_IN_A_SWARM,
    );
    let shoal_info = shoal(&control(&m1), &["node", "ls"]).ok();
    assert!(shoal_info.contains("m1"), "{shoal_info}");

    // docker info: the swarm block.
    let info = docker(&socket, &["info"]).ok();
    assert_eq!(info_line(&info, "Swarm").as_deref(), Some("active"));
    assert_eq!(info_line(&info, "NodeID"), Some(node_id.clone()));
    assert_eq!(info_line(&info, "Is Manager").as_deref(), Some("true"));
    assert_eq!(info_line(&info, "Managers").as_deref(), Some("1"));
    assert_eq!(info_line(&info, "Name").as_deref(), Some("m1"));
    assert_eq!(
        info_line(&info, "Task History Retention Limit").as_deref(),
        Some("5")
    );
    assert_eq!(
        info_line(&info, "Node Address").as_deref(),
        Some("127.0.0.1")
    );

    // node ls: this node marked, the leader, ready.
    wait_until("m1 to be ready", Duration::from_secs(30), || {
        docker(&socket, &["node", "ls"]).ok().lines().any(|l| {
            l.starts_with(&format!("{node_id} *")) && l.contains("Ready") && l.contains("Leader")
        })
    });
    let inspect: serde_json::Value =
        serde_json::from_str(&docker(&socket, &["node", "inspect", "self"]).ok()).unwrap();
    let me = &inspect[0];
    assert_eq!(me["ID"], node_id.as_str());
    assert_eq!(me["Description"]["Hostname"], "m1");
    assert_eq!(me["Description"]["Platform"]["OS"], "linux");
    assert_eq!(me["Spec"]["Role"], "manager");
    assert_eq!(me["Spec"]["Availability"], "active");
    assert_eq!(me["Status"]["State"], "ready");
    assert_eq!(me["ManagerStatus"]["Leader"], true);
    assert_eq!(me["ManagerStatus"]["Reachability"], "reachable");
    assert_eq!(me["ManagerStatus"]["Addr"], addr.as_str());

    // node update: labels and availability, read back through shoal.
    assert_eq!(
        docker(&socket, &["node", "update", "--label-add", "a=b", "m1"])
            .ok()
            .trim(),
        "m1"
    );
    let node = shoal_json(&m1, &["node", "inspect", &node_id]);
    assert_eq!(node["Spec"]["Labels"], serde_json::json!({"a": "b"}));
    docker(
        &socket,
        &["node", "update", "--availability", "drain", "m1"],
    )
    .ok();
    let node = shoal_json(&m1, &["node", "inspect", &node_id]);
    assert_eq!(node["Spec"]["Availability"], "drain");
    assert_eq!(node["Spec"]["Labels"], serde_json::json!({"a": "b"}));
    refused(
        docker(
            &socket,
            &["node", "update", "--availability", "drain", "nope"],
        ),
        "node nope not found",
    );
    docker(
        &socket,
        &["node", "update", "--availability", "active", "m1"],
    )
    .ok();

    // join-token: the command, -q, --rotate.
    let tokens = docker(&socket, &["swarm", "join-token", "worker"]).ok();
    let token = docker(&socket, &["swarm", "join-token", "-q", "worker"]).ok();
    let token = token.trim().to_string();
    assert!(token.starts_with("SWMTKN-1-"), "{token}");
    assert!(
        tokens.contains(&format!("docker swarm join --token {token} {addr}")),
        "{tokens}"
    );
    let rotated = docker(&socket, &["swarm", "join-token", "--rotate", "worker"]).ok();
    assert!(
        rotated.contains("Successfully rotated worker join token."),
        "{rotated}"
    );
    let new_token = docker(&socket, &["swarm", "join-token", "-q", "worker"]).ok();
    let new_token = new_token.trim().to_string();
    assert_ne!(new_token, token);
    let cluster = shoal_json(&m1, &["swarm", "inspect"]);
    assert_eq!(cluster["JoinTokens"]["Worker"], new_token.as_str());

    // swarm update; unlock-key (none is set).
    let before = cluster["Version"]["Index"].as_u64().unwrap();
    assert_eq!(
        docker(&socket, &["swarm", "update", "--task-history-limit", "3"])
            .ok()
            .trim(),
        "Swarm updated."
    );
    let cluster = shoal_json(&m1, &["swarm", "inspect"]);
    assert_eq!(
        cluster["Spec"]["Orchestration"]["TaskHistoryRetentionLimit"],
        3
    );
    assert!(cluster["Version"]["Index"].as_u64().unwrap() > before);
    let info = docker(&socket, &["info"]).ok();
    assert_eq!(
        info_line(&info, "Task History Retention Limit").as_deref(),
        Some("3")
    );
    // Autolock on: the CLI prints the key, and unlock-key shows the same; off again: none.
    let locked = docker(&socket, &["swarm", "update", "--autolock"]).ok();
    let shown = locked
        .split_whitespace()
        .find(|w| w.starts_with("SWMKEY-1-"))
        .unwrap_or_else(|| panic!("no key in {locked}"))
        .to_string();
    assert_eq!(
        docker(&socket, &["swarm", "unlock-key", "-q"]).ok().trim(),
        shown
    );
    assert_eq!(
        shoal_json(&m1, &["swarm", "inspect"])["Spec"]["EncryptionConfig"]["AutoLockManagers"],
        true
    );
    let rotated = docker(&socket, &["swarm", "unlock-key", "--rotate", "-q"]).ok();
    assert!(
        rotated.trim().starts_with("SWMKEY-1-") && rotated.trim() != shown,
        "{rotated}"
    );
    docker(&socket, &["swarm", "update", "--autolock=false"]).ok();
    let key = docker(&socket, &["swarm", "unlock-key"]);
    assert_eq!(key.code, Some(1));
    assert!(
        key.stderr.contains("no unlock key is set"),
        "{}",
        key.stderr
    );
    let ca = docker(&socket, &["swarm", "ca"]).ok();
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");

    // A second daemon joins with the CLI on its own socket.
    let joined = docker(&w1_socket, &["swarm", "join", "--token", &new_token, &addr]).ok();
    assert_eq!(joined.trim(), "This node joined a swarm as a worker.");
    let w1_info = docker(&w1_socket, &["info"]).ok();
    assert_eq!(info_line(&w1_info, "Is Manager").as_deref(), Some("false"));
    assert!(w1_info.contains(&addr), "{w1_info}");
    refused(
        docker(&w1_socket, &["node", "ls"]),
        "Worker nodes can't be used to view or modify cluster state",
    );
    refused(
        docker(&w1_socket, &["swarm", "join", "--token", &new_token, &addr]),
        ALREADY_IN_A_SWARM,
    );
    wait_until("w1 to be ready", Duration::from_secs(30), || {
        docker(&socket, &["node", "ls"])
            .ok()
            .lines()
            .any(|l| l.contains(" w1 ") && l.contains("Ready"))
    });
    let workers = docker(&socket, &["node", "ls", "-q", "--filter", "role=worker"]).ok();
    assert_eq!(workers.lines().count(), 1, "{workers}");

    // promote / demote.
    assert_eq!(
        docker(&socket, &["node", "promote", "w1"]).ok().trim(),
        "Node w1 promoted to a manager in the swarm."
    );
    wait_until(
        "w1 to be a reachable manager",
        Duration::from_secs(60),
        || {
            docker(&socket, &["node", "ls"])
                .ok()
                .lines()
                .any(|l| l.contains(" w1 ") && l.contains("Reachable"))
        },
    );
    wait_until("w1 to serve as a manager", Duration::from_secs(60), || {
        let info = docker(&w1_socket, &["info"]).ok();
        info_line(&info, "Is Manager").as_deref() == Some("true")
    });
    assert_eq!(
        docker(&socket, &["node", "demote", "w1"]).ok().trim(),
        "Manager w1 demoted in the swarm."
    );
    wait_until("w1 to be a worker again", Duration::from_secs(60), || {
        let ls = docker(&socket, &["node", "ls"]).ok();
        ls.lines()
            .any(|l| l.contains(" w1 ") && !l.contains("Reachable") && l.contains("Ready"))
    });
    let w1_node = shoal_json(&m1, &["node", "inspect", "w1"]);
    assert_eq!(w1_node["Spec"]["Role"], "worker");

    // rm: refused while w1 is up, and for the manager; w1 leaves, then it goes.
    refused(
        docker(&socket, &["node", "rm", "w1"]),
        "is not down and can't be removed",
    );
    refused(
        docker(&socket, &["node", "rm", "m1"]),
        "is a cluster manager and is a member of the raft cluster",
    );
    wait_until("w1 to run as a worker", Duration::from_secs(60), || {
        let info = docker(&w1_socket, &["info"]).ok();
        info_line(&info, "Is Manager").as_deref() == Some("false")
    });
    assert_eq!(
        docker(&w1_socket, &["swarm", "leave"]).ok().trim(),
        "Node left the swarm."
    );
    let w1_info = docker(&w1_socket, &["info"]).ok();
    assert_eq!(info_line(&w1_info, "Swarm").as_deref(), Some("inactive"));
    assert_eq!(
        docker(&socket, &["node", "rm", "--force", "w1"])
            .ok()
            .trim(),
        "w1"
    );
    let ls = shoal(&control(&m1), &["node", "ls"]).ok();
    // (By hostname: a node ID may contain "w1" too.)
    assert!(
        !ls.lines().any(|l| l.split_whitespace().any(|f| f == "w1")),
        "{ls}"
    );
    drop(w1);

    // init --force-new-cluster on the manager: the same node, the swarm's spec kept.
    let forced = docker(
        &socket,
        &[
            "swarm",
            "init",
            "--force-new-cluster",
            "--listen-addr",
            &addr,
            "--advertise-addr",
            &addr,
        ],
    )
    .ok();
    assert!(
        forced.contains(&format!("current node ({node_id}) is now a manager")),
        "{forced}"
    );
    let cluster = shoal_json(&m1, &["swarm", "inspect"]);
    assert_eq!(
        cluster["Spec"]["Orchestration"]["TaskHistoryRetentionLimit"],
        3
    );

    // leave: the last manager needs --force.
    refused(docker(&socket, &["swarm", "leave"]), LAST_MANAGER);
    assert_eq!(
        docker(&socket, &["swarm", "leave", "--force"]).ok().trim(),
        "Node left the swarm."
    );
    let info = docker(&socket, &["info"]).ok();
    assert_eq!(info_line(&info, "Swarm").as_deref(), Some("inactive"));
    refused(docker(&socket, &["node", "ls"]), NOT_A_MANAGER_INACTIVE);
    drop(m1);
}
