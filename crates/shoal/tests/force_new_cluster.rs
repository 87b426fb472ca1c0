//! `shoal swarm init --force-new-cluster` on a running node, with real `shoal daemon`
//! processes: a manager that lost its quorum becomes the only manager of a new cluster,
//! keeping its data, without restarting its process; a worker refuses, changing nothing; a
//! node outside any cluster takes it as a normal init.

mod support;

use std::path::Path;
use std::time::Duration;

use shoal_api::v1::swarm_client::SwarmClient;
use shoal_api::v1::{NodeRole, SwarmInfoRequest, SwarmInfoResponse};
use support::cli::shoal;
use support::cluster::Cluster;

/// `Swarm.Info` over a node's control socket.
async fn info(socket: &Path) -> SwarmInfoResponse {
    SwarmClient::new(support::local_channel(socket).await)
        .info(SwarmInfoRequest {})
        .await
        .expect("Swarm.Info")
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_that_lost_its_quorum_forces_a_new_cluster_keeping_its_data() {
    let mut c = Cluster::start(&[]);
    c.join_manager("m2");
    c.join_manager("m3");
    c.create_service("before", &["--replicas", "1"]);
    let id_before = c.inspect("before")["ID"].clone();
    let m1 = info(&c.socket).await;
    assert_ne!(m1.incarnation, 0);

    // Two of three managers die: m1 cannot lead alone.
    c.daemon("m2").kill();
    c.daemon("m3").kill();
    let e = c.wait("m1 to see the quorum lost", &[], |c| {
        let run = c.shoal(&["node", "ls"]);
        (run.code == Some(1) && run.stderr.contains("quorum")).then_some(run.stderr)
    });
    assert!(e.starts_with("Error: "), "{e}");
    assert!(e.contains("no leader: quorum lost"), "{e}");

    // Forced, in place: the same daemon process serves a one-member cluster.
    let pid = c.daemon("m1").pid();
    let run = c.shoal(&["swarm", "init", "--force-new-cluster"]);
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr
            .contains("Forcing a new cluster from this manager's state"),
        "{}",
        run.stderr
    );
    assert!(
        run.stdout.contains(&format!(
            "Swarm initialized: current node ({}) is now a manager.",
            m1.node_id
        )),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("shoal swarm join --token SWMTKN-"),
        "{}",
        run.stdout
    );
    assert_eq!(c.daemon("m1").pid(), pid);
    let after = info(&c.socket).await;
    assert_ne!(after.incarnation, m1.incarnation);
    assert_eq!(after.node_id, m1.node_id);
    assert_eq!(after.cluster_id, m1.cluster_id);
    assert_eq!(after.role, NodeRole::Manager as i32);

    // It leads: reads and writes work, and nothing was lost.
    let nodes = c.nodes().expect("node ls after forcing a new cluster");
    let mut hostnames: Vec<&str> = nodes.iter().map(|n| n.hostname.as_str()).collect();
    hostnames.sort();
    assert_eq!(hostnames, ["m1", "m2", "m3"]);
    let ls = c.shoal(&["service", "ls"]).ok();
    assert!(ls.contains("before"), "{ls}");
    assert_eq!(c.inspect("before")["ID"], id_before);
    c.create_service("after", &["--replicas", "1"]);
    assert_eq!(c.inspect("after")["Spec"]["Name"], "after");
    c.wait_settled("after to run on m1", "after", |placed| {
        placed.len() == 1 && placed[0].node == "m1"
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_refuses_to_force_a_new_cluster_and_changes_nothing() {
    let c = Cluster::start(&["w1"]);
    let worker = c.socket_of("w1");
    let before = info(&worker).await;

    let e = shoal(&worker, &["swarm", "init", "--force-new-cluster"]).failed();
    assert!(e.contains("only a manager can force a new cluster"), "{e}");
    assert!(e.contains(&before.node_id), "{e}");

    // The same run of the worker serves on, still a worker, still READY.
    let after = info(&worker).await;
    assert_eq!(after.incarnation, before.incarnation);
    assert_eq!(after.role, NodeRole::Worker as i32);
    assert_eq!(c.node("w1").expect("w1 in node ls").status, "Ready");

    // Without the flag, init is refused on any member, manager included.
    let e = c.shoal(&["swarm", "init"]).failed();
    assert!(e.contains("already part of a cluster"), "{e}");
    let e = shoal(&worker, &["swarm", "init"]).failed();
    assert!(e.contains("already part of a cluster"), "{e}");
    // Bad addresses are refused before anything happens.
    let m1 = info(&c.socket).await;
    let e = c
        .shoal(&[
            "swarm",
            "init",
            "--force-new-cluster",
            "--listen-addr",
            "nowhere",
        ])
        .failed();
    assert!(e.contains("invalid listen_addr"), "{e}");
    assert_eq!(info(&c.socket).await.incarnation, m1.incarnation);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_any_cluster_force_new_cluster_is_a_normal_init() {
    let dir = tempfile::tempdir().unwrap();
    let node = support::Manager::start(dir.path(), "n1", &[]);
    let socket = node.state_dir.join("control.sock");
    support::eventually(
        "n1 to serve its socket",
        Duration::from_secs(20),
        async || support::try_local_channel(&socket).await,
    )
    .await;
    let run = shoal(&socket, &["swarm", "init", "--force-new-cluster"]);
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("Creating the swarm"), "{}", run.stderr);
    assert!(run.stdout.contains("is now a manager."), "{}", run.stdout);
    // The new cluster has this one node, its manager (the leader).
    let nodes = shoal(&socket, &["node", "ls"]).ok();
    assert_eq!(nodes.lines().count(), 2, "{nodes}");
    assert!(nodes.contains("Leader"), "{nodes}");
}
