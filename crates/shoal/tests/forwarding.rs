//! Any manager answers any Control call: three real managers on 127.0.0.1, calls made on a
//! follower (its remote API, and its local control socket through the `shoal` command line)
//! are forwarded to the leader in one hop; a call that was forwarded already is refused
//! rather than forwarded again.

mod support;

use std::process::Command;
use std::time::Duration;

use shoal_api::v1::{CreateConfigRequest, GetClusterRequest, ListClustersRequest};
use support::{Manager, config_names, create_config, eventually};

fn shoal(socket: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .arg("-s")
        .arg(socket)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_forward_control_calls_to_the_leader_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut managers = vec![Manager::start(dir.path(), "m1", &["--init"])];
    let first = managers[0].addr.clone();
    eventually(
        "the first manager to lead",
        Duration::from_secs(20),
        async || {
            create_config(std::slice::from_ref(&first), "hello")
                .await
                .ok()
        },
    )
    .await;
    for name in ["m2", "m3"] {
        managers.push(support::start_joining(dir.path(), name, &first).await);
    }
    let addrs: Vec<String> = managers.iter().map(|m| m.addr.clone()).collect();
    let leader = eventually("a leader", Duration::from_secs(20), async || {
        support::leader_addr(&first).await.ok()
    })
    .await;
    let follower = managers
        .iter()
        .find(|m| m.addr != leader)
        .expect("two followers");

    // A write on a follower's remote API is forwarded, acknowledged, and everywhere.
    eventually(
        "a write through a follower",
        Duration::from_secs(20),
        async || {
            create_config(std::slice::from_ref(&follower.addr), "via-follower")
                .await
                .ok()
        },
    )
    .await;
    for a in &addrs {
        eventually(
            "the write to replicate",
            Duration::from_secs(20),
            async || {
                config_names(a)
                    .await
                    .ok()?
                    .contains(&"via-follower".to_string())
                    .then_some(())
            },
        )
        .await;
    }

    // The command line on a follower's control socket: writes and reads just work.
    let socket = follower.state_dir.join("control.sock");
    let (code, out, err) = shoal(&socket, &["swarm", "update", "--task-history-limit", "7"]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    let (code, out, err) = shoal(&socket, &["node", "ls"]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("Leader"), "{out}");
    let mut leader_client = support::client(&leader).await.unwrap();
    let cluster = leader_client
        .list_clusters(ListClustersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .clusters
        .pop()
        .unwrap();
    let limit = cluster
        .spec
        .as_ref()
        .and_then(|s| s.orchestration.as_ref())
        .map(|o| o.task_history_retention_limit);
    assert_eq!(
        limit,
        Some(7),
        "the update made on the follower reached the leader"
    );

    // The command line on a follower's remote API (-H), as a manager of the cluster.
    let remote = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
            .args(["-H", &follower.addr, "--tls-dir"])
            .arg(&managers[0].state_dir)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = remote(&["node", "ls", "-q"]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert_eq!(out.lines().count(), 3, "{out}");
    let (code, out, err) = remote(&["config", "ls", "-q"]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    // Without certificates, a clear error.
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["-H", &follower.addr, "--tls-dir"])
        .arg(dir.path().join("nowhere"))
        .args(["node", "ls"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("holds no node certificates"), "{err}");

    // A call marked as forwarded already is not forwarded a second time.
    let mut follower_client = support::client(&follower.addr).await.unwrap();
    let mut request = tonic::Request::new(CreateConfigRequest {
        spec: Some(support::config_spec("second-hop")),
    });
    request
        .metadata_mut()
        .insert("shoal-forwarded-by", "m9".parse().unwrap());
    let status = follower_client.create_config(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        status
            .message()
            .contains("manager m9 forwarded this call here")
            && status.message().contains("retry"),
        "{status:?}"
    );
    assert!(
        !config_names(&leader)
            .await
            .unwrap()
            .contains(&"second-hop".to_string()),
        "a refused call changes nothing"
    );
    // The leader itself serves a call marked as forwarded.
    let mut request = tonic::Request::new(GetClusterRequest {
        cluster_id: cluster.meta.as_ref().unwrap().id.clone(),
    });
    request
        .metadata_mut()
        .insert("shoal-forwarded-by", "m9".parse().unwrap());
    leader_client.get_cluster(request).await.unwrap();
}
