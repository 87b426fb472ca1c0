//! `shoal swarm ...` and `shoal node ...` as users run them: the `shoal` binary talking to a
//! real manager over its control socket.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use shoal_api::v1::node_ca_client::NodeCaClient;
use shoal_api::v1::{IssueNodeCertificateRequest, JoinTokens, ListClustersRequest};
use support::cli::{finished, shoal};
use tonic::Code;

fn socket_of(m: &support::Manager) -> PathBuf {
    m.state_dir.join("control.sock")
}

/// The cluster's tokens, read with the Control API over the control socket.
async fn tokens(socket: &Path) -> JoinTokens {
    support::local_client(socket)
        .await
        .list_clusters(ListClustersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .clusters
        .remove(0)
        .root_ca
        .unwrap()
        .join_tokens
        .unwrap()
}

/// The node ID of a manager, from its certificate.
fn node_id(m: &support::Manager) -> String {
    let cert = std::fs::read_to_string(m.state_dir.join("certificates/node.crt")).unwrap();
    shoal_ca::parse_node_certificate(&cert).unwrap().node_id
}

/// `swarm inspect`, parsed: the one cluster object.
fn inspect_swarm(socket: &Path) -> serde_json::Value {
    let out = shoal(socket, &["swarm", "inspect"]).ok();
    let mut all: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(all.len(), 1, "{out}");
    all.remove(0)
}

/// The token in "... --join-token TOKEN".
fn token_in(join_command: &str) -> String {
    join_command
        .split("--join-token ")
        .nth(1)
        .unwrap_or_else(|| panic!("no --join-token in {join_command:?}"))
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_token_prints_the_join_command_and_quiet_only_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let m1 = support::init_manager(dir.path(), "m1").await;
    let socket = socket_of(&m1);
    let known = tokens(&socket).await;

    let out = shoal(&socket, &["swarm", "join-token", "worker"]).ok();
    assert!(
        out.starts_with(
            "To add a worker to this swarm, run the following command:\n\n    \
             shoal daemon --join-addr "
        ),
        "{out}"
    );
    let token = token_in(&out);
    shoal_ca::JoinToken::parse(&token).unwrap();
    assert_eq!(token, known.worker);
    assert_eq!(
        shoal(&socket, &["swarm", "join-token", "-q", "worker"]).ok(),
        format!("{token}\n")
    );

    let manager = shoal(&socket, &["swarm", "join-token", "manager"]).ok();
    assert!(
        manager.starts_with("To add a manager to this swarm"),
        "{manager}"
    );
    assert_eq!(token_in(&manager), known.manager);
    assert_ne!(known.manager, known.worker);

    let bad = shoal(&socket, &["swarm", "join-token", "admin"]).failed();
    assert!(bad.contains("admin"), "{bad}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_token_names_the_managers_advertised_address() {
    let dir = tempfile::tempdir().unwrap();
    let m1 = support::init_manager(dir.path(), "m1").await;
    let out = shoal(&socket_of(&m1), &["swarm", "join-token", "manager"]).ok();
    assert!(
        out.contains(&format!(
            "shoal daemon --join-addr {} --join-token ",
            m1.addr
        )),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_a_join_token_replaces_it_and_the_old_one_stops_working() {
    let dir = tempfile::tempdir().unwrap();
    let m1 = support::init_manager(dir.path(), "m1").await;
    let socket = socket_of(&m1);
    let old = tokens(&socket).await;

    let out = shoal(&socket, &["swarm", "join-token", "--rotate", "worker"]).ok();
    assert!(
        out.starts_with(
            "Successfully rotated worker join token.\n\n\
             To add a worker to this swarm, run the following command:\n"
        ),
        "{out}"
    );
    let new = token_in(&out);
    shoal_ca::JoinToken::parse(&new).unwrap();
    assert_ne!(new, old.worker);
    let now = tokens(&socket).await;
    assert_eq!(now.worker, new);
    assert_eq!(
        now.manager, old.manager,
        "only the worker token was rotated"
    );
    assert_eq!(
        shoal(&socket, &["swarm", "join-token", "-q", "worker"]).ok(),
        format!("{new}\n")
    );

    // `-q` with `--rotate` prints the new token alone.
    let quiet = shoal(
        &socket,
        &["swarm", "join-token", "--rotate", "-q", "manager"],
    )
    .ok();
    let manager = quiet.trim_end().to_string();
    assert_eq!(quiet, format!("{manager}\n"));
    assert_ne!(manager, old.manager);
    assert_eq!(tokens(&socket).await.manager, manager);

    // The CA refuses the old token and takes the new one.
    let channel = shoal_tls::Dialer::unverified()
        .connect(&m1.addr)
        .await
        .unwrap();
    let mut ca = NodeCaClient::new(channel);
    let (_, csr) = shoal_ca::node_key_and_csr().unwrap();
    let issue = |token: &str| IssueNodeCertificateRequest {
        csr: csr.clone().into_bytes(),
        token: token.to_string(),
        availability: 0,
    };
    let err = ca
        .issue_node_certificate(issue(&old.worker))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
    ca.issue_node_certificate(issue(&new)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swarm_update_refuses_too_short_certificates_and_applies_valid_settings() {
    let dir = tempfile::tempdir().unwrap();
    let m1 = support::init_manager(dir.path(), "m1").await;
    let socket = socket_of(&m1);
    let before = inspect_swarm(&socket);
    assert_eq!(before["ID"].as_str().unwrap().len(), 25, "{before}");

    let refused = shoal(&socket, &["swarm", "update", "--cert-expiry", "30m"]);
    assert!(refused.stdout.is_empty(), "{}", refused.stdout);
    let err = refused.failed();
    assert!(err.contains("node_cert_expiry"), "{err}");
    assert!(err.contains("at least 1 hour"), "{err}");
    let after = inspect_swarm(&socket);
    assert_eq!(after["Version"], before["Version"], "nothing changed");
    assert_eq!(after["Spec"], before["Spec"], "nothing changed");

    // A duration the client cannot read is refused before anything is sent.
    let err = shoal(&socket, &["swarm", "update", "--cert-expiry", "2 days"]).failed();
    assert!(err.contains("invalid duration"), "{err}");

    assert_eq!(
        shoal(&socket, &["swarm", "update", "--cert-expiry", "2h"]).ok(),
        "Swarm updated.\n"
    );
    let updated = inspect_swarm(&socket);
    assert_eq!(
        updated["Spec"]["CAConfig"]["NodeCertExpiry"],
        7_200_000_000_000i64
    );
    assert!(
        updated["Version"]["Index"].as_u64() > before["Version"]["Index"].as_u64(),
        "{updated}"
    );
    assert_eq!(
        updated["Spec"]["Orchestration"], before["Spec"]["Orchestration"],
        "settings not given stay"
    );

    assert_eq!(
        shoal(
            &socket,
            &[
                "swarm",
                "update",
                "--task-history-limit",
                "7",
                "--dispatcher-heartbeat",
                "10s"
            ]
        )
        .ok(),
        "Swarm updated.\n"
    );
    let updated = inspect_swarm(&socket);
    assert_eq!(
        updated["Spec"]["Orchestration"]["TaskHistoryRetentionLimit"],
        7
    );
    assert_eq!(
        updated["Spec"]["Dispatcher"]["HeartbeatPeriod"],
        10_000_000_000i64
    );
    assert_eq!(
        updated["Spec"]["CAConfig"]["NodeCertExpiry"],
        7_200_000_000_000i64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_ls_shows_the_manager_as_leader() {
    let dir = tempfile::tempdir().unwrap();
    let m1 = support::init_manager(dir.path(), "m1").await;
    let socket = socket_of(&m1);
    let id = node_id(&m1);
    // The leader is known once init_manager returns; the listing may still be filling in the
    // managers' status, so it is read until it shows one.
    let table = support::eventually(
        "node ls to show a leader",
        Duration::from_secs(20),
        async || {
            let run = shoal(&socket, &["node", "ls"]);
            (run.code == Some(0) && run.stdout.contains("Leader")).then_some(run.stdout)
        },
    )
    .await;
    let mut lines = table.lines();
    let header = lines.next().unwrap();
    for column in ["ID", "HOSTNAME", "STATUS", "AVAILABILITY", "MANAGER STATUS"] {
        assert!(header.contains(column), "{table}");
    }
    let row = lines
        .find(|l| l.contains("Leader"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(row.starts_with(&id[..12]), "{table}");
    assert!(!row.contains(&id), "IDs are truncated in tables: {table}");
    assert!(row.contains("Active"), "{table}");

    assert_eq!(
        shoal(&socket, &["node", "ls", "-q"]).ok(),
        format!("{id}\n")
    );
    let json = shoal(&socket, &["node", "ls", "--format", "json"]).ok();
    let line: serde_json::Value = serde_json::from_str(json.trim_end()).unwrap();
    assert_eq!(line["ID"], id.as_str());
    assert_eq!(line["ManagerStatus"], "Leader");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_are_named_by_id_prefix_and_updated_and_inspected() {
    let dir = tempfile::tempdir().unwrap();
    let m1 = support::init_manager(dir.path(), "m1").await;
    let socket = socket_of(&m1);
    let id = node_id(&m1);
    let prefix = &id[..6];

    let out = shoal(
        &socket,
        &[
            "node",
            "update",
            "--label-add",
            "zone=east",
            "--label-add",
            "ssd",
            "--availability",
            "drain",
            prefix,
        ],
    )
    .ok();
    assert_eq!(out, format!("{prefix}\n"));
    let inspected: Vec<serde_json::Value> =
        serde_json::from_str(&shoal(&socket, &["node", "inspect", &id]).ok()).unwrap();
    assert_eq!(inspected.len(), 1);
    let node = &inspected[0];
    assert_eq!(node["ID"], id.as_str());
    assert_eq!(node["Spec"]["Labels"]["zone"], "east");
    assert_eq!(node["Spec"]["Labels"]["ssd"], "");
    assert_eq!(node["Spec"]["Availability"], "drain");
    assert_eq!(node["Spec"]["Role"], "manager");

    shoal(&socket, &["node", "update", "--label-rm", "zone", &id]).ok();
    let err = shoal(&socket, &["node", "update", "--label-rm", "zone", &id]).failed();
    assert!(err.contains("key zone doesn't exist"), "{err}");
    let inspected: Vec<serde_json::Value> =
        serde_json::from_str(&shoal(&socket, &["node", "inspect", prefix]).ok()).unwrap();
    assert_eq!(
        inspected[0]["Spec"]["Labels"],
        serde_json::json!({"ssd": ""})
    );

    assert_eq!(
        shoal(&socket, &["node", "promote", prefix]).ok(),
        format!("Node {prefix} is already a manager.\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_an_unknown_node_fails_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let m1 = support::init_manager(dir.path(), "m1").await;
    let socket = socket_of(&m1);
    let err = shoal(&socket, &["node", "rm", "no-such-node"]).failed();
    assert_eq!(err, "Error: no such node: no-such-node\n");
    let err = shoal(&socket, &["node", "inspect", "no-such-node"]).failed();
    assert!(err.contains("no such node: no-such-node"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_leaves_only_with_force() {
    let dir = tempfile::tempdir().unwrap();
    let m1 = support::init_manager(dir.path(), "m1").await;
    let socket = socket_of(&m1);
    let err = shoal(&socket, &["swarm", "leave"]).failed();
    assert!(err.contains("demote"), "{err}");
    assert!(m1.is_running());
    shoal(&socket, &["swarm", "inspect"]).ok();

    assert_eq!(
        shoal(&socket, &["swarm", "leave", "--force"]).ok(),
        "Node left the swarm.\n"
    );
    // The daemon stays, inactive, like a Docker Engine after `docker swarm leave`.
    support::eventually(
        "the node to be inactive",
        Duration::from_secs(30),
        async || {
            let run = shoal(&socket, &["node", "ls"]);
            run.stderr.contains("not part of a cluster").then_some(())
        },
    )
    .await;
    assert!(m1.is_running());
    assert!(!m1.state_dir.join("node.json").exists());
}

#[test]
fn a_missing_or_dead_socket_cannot_be_reached() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.sock");
    let expected = |p: &Path| {
        format!(
            "Error: cannot reach the shoal daemon at {} (is `shoal daemon` running? set \
             -s/--socket or SHOAL_SOCKET)\n",
            p.display()
        )
    };
    let run = shoal(&missing, &["node", "ls"]);
    assert!(run.stdout.is_empty());
    assert_eq!(run.failed(), expected(&missing));

    // From the environment when -s is not given.
    let run = finished(
        Command::new(env!("CARGO_BIN_EXE_shoal"))
            .args(["swarm", "join-token", "worker"])
            .env("SHOAL_SOCKET", &missing)
            .output()
            .unwrap(),
    );
    assert_eq!(run.failed(), expected(&missing));

    // A socket file nobody listens on any more refuses connections.
    let dead = dir.path().join("dead.sock");
    drop(std::os::unix::net::UnixListener::bind(&dead).unwrap());
    assert!(dead.exists());
    assert_eq!(
        shoal(&dead, &["swarm", "inspect"]).failed(),
        expected(&dead)
    );
}

#[test]
fn bad_arguments_fail_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.sock");
    let err = shoal(&missing, &["node", "ls", "--format", "yaml"]).failed();
    assert!(err.starts_with("Error: unknown format \"yaml\""), "{err}");
    let err = shoal(
        &missing,
        &["node", "update", "--availability", "sleepy", "x"],
    )
    .failed();
    assert!(err.contains("sleepy"), "{err}");
    let err = shoal(
        &missing,
        &["swarm", "update", "--dispatcher-heartbeat", "5"],
    )
    .failed();
    assert!(err.contains("a unit is missing"), "{err}");
    let err = shoal(&missing, &["node", "rm"]).failed();
    assert!(err.contains("NODE"), "{err}");
    // The daemon's socket flag is --listen-control-api, not -s.
    let err = shoal(&missing, &["daemon"]).failed();
    assert!(err.contains("--listen-control-api"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_availability_and_labels_describe_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let m1 = support::Manager::start(
        dir.path(),
        "m1",
        &[
            "--init",
            "--executor",
            "sim",
            "--availability",
            "drain",
            "--label",
            "zone=east",
            "--label",
            "rack=r1",
        ],
    );
    let socket = socket_of(&m1);
    let node = support::eventually(
        "the node to describe itself",
        Duration::from_secs(20),
        async || {
            let ls = shoal(&socket, &["node", "ls", "-q"]);
            let id = ls.stdout.lines().next()?.to_string();
            let out = shoal(&socket, &["node", "inspect", &id]);
            if out.code != Some(0) {
                return None;
            }
            let v: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
            let node = v[0].clone();
            (node["Description"]["Engine"]["Labels"]["zone"] == "east").then_some(node)
        },
    )
    .await;
    assert_eq!(node["Spec"]["Availability"], "drain", "{node}");
    // `self` names the node whose daemon answers.
    let me: serde_json::Value =
        serde_json::from_str(&shoal(&socket, &["node", "inspect", "self"]).ok()).unwrap();
    assert_eq!(me[0]["ID"], node["ID"], "{me}");
    assert_eq!(
        node["Description"]["Engine"]["Labels"]["rack"], "r1",
        "{node}"
    );
    // A bad value is refused before anything starts.
    let out = finished(
        Command::new(env!("CARGO_BIN_EXE_shoal"))
            .args(["daemon", "--availability", "sometimes"])
            .output()
            .unwrap(),
    );
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr.starts_with("Error: ") && out.stderr.contains("sometimes"),
        "{}",
        out.stderr
    );
}
