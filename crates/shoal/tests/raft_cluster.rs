//! Three real managers on 127.0.0.1: the leader is killed with SIGKILL while clients write;
//! a new leader takes writes, and no acknowledged write is lost.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use support::{Manager, config_names, create_config, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_under_load_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut managers = vec![Manager::start(dir.path(), "m1", &["--init"])];
    let first = managers[0].addr.clone();
    // The first manager elects itself; then two more join through it.
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
    eventually(
        "three managers to see the first write",
        Duration::from_secs(20),
        async || {
            for a in &addrs {
                if !config_names(a).await.ok()?.contains(&"hello".to_string()) {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;

    let mut acknowledged = BTreeSet::from(["hello".to_string()]);
    let mut attempted = BTreeSet::from(["hello".to_string()]);
    for i in 0..40 {
        let name = format!("before-{i:03}");
        attempted.insert(name.clone());
        if create_config(&addrs, &name).await.is_ok() {
            acknowledged.insert(name);
        }
    }

    // Find and kill the leader (any manager accepts writes: followers forward them).
    let leader_addr = support::leader_addr(&addrs[0]).await.unwrap();
    let leader = addrs.iter().position(|a| *a == leader_addr);
    let leader = leader.expect("one manager leads");
    managers[leader].kill();
    let survivors: Vec<String> = addrs
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != leader)
        .map(|(_, a)| a.clone())
        .collect();

    // Keep writing: a new leader must take writes.
    let first_after = eventually(
        "a new leader to accept a write",
        Duration::from_secs(30),
        async || create_config(&survivors, "after-kill").await.ok(),
    )
    .await;
    let _: () = first_after;
    acknowledged.insert("after-kill".into());
    attempted.insert("after-kill".into());
    for i in 0..40 {
        let name = format!("after-{i:03}");
        attempted.insert(name.clone());
        if create_config(&survivors, &name).await.is_ok() {
            acknowledged.insert(name);
        }
    }
    assert!(
        acknowledged.len() > 80,
        "most writes were acknowledged: {}",
        acknowledged.len()
    );

    for a in &survivors {
        let names: BTreeSet<String> = config_names(a).await.unwrap().into_iter().collect();
        let lost: Vec<_> = acknowledged.difference(&names).collect();
        assert!(lost.is_empty(), "{a} lost acknowledged writes: {lost:?}");
        assert!(names.is_subset(&attempted), "{a} holds writes nobody made");
    }

    // The killed manager restarts from its state and catches up.
    managers[leader].restart(&[]);
    let restarted = addrs[leader].clone();
    eventually(
        "the killed manager to catch up",
        Duration::from_secs(30),
        async || {
            let names: BTreeSet<String> =
                config_names(&restarted).await.ok()?.into_iter().collect();
            acknowledged.is_subset(&names).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_the_same_state_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = Manager::start(dir.path(), "m", &["--init"]);
    eventually("the manager to lead", Duration::from_secs(20), async || {
        create_config(std::slice::from_ref(&first.addr), "x")
            .await
            .ok()
    })
    .await;
    let out = support::daemon_once(&first.state_dir, &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("another shoal daemon"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_and_force_new_cluster_keep_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut m1 = support::init_manager(dir.path(), "m1").await;
    let a1 = m1.addr.clone();
    let m2 = support::join_manager(dir.path(), "m2", &a1).await;
    let a2 = m2.addr.clone();
    create_config(&[a1.clone(), a2.clone()], "two")
        .await
        .unwrap();
    // Both stop; m1 alone cannot lead a two-member cluster...
    drop(m2);
    m1.kill();
    m1.restart(&[]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let err = create_config(std::slice::from_ref(&a1), "three")
        .await
        .unwrap_err();
    assert!(
        err.contains("no leader: quorum lost (1 of 2 managers reachable)"),
        "{err}"
    );
    // ...until it is forced into a new one-member cluster, with every write kept.
    m1.kill();
    m1.restart(&["--force-new-cluster"]);
    eventually("m1 to lead alone", Duration::from_secs(20), async || {
        create_config(std::slice::from_ref(&a1), "three").await.ok()
    })
    .await;
    let names = config_names(&a1).await.unwrap();
    assert_eq!(
        names,
        vec!["one".to_string(), "three".to_string(), "two".to_string()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_restarted_at_a_new_address_is_reached_there() {
    let dir = tempfile::tempdir().unwrap();
    let m1 = support::init_manager(dir.path(), "m1").await;
    let a1 = m1.addr.clone();
    let mut m2 = support::join_manager(dir.path(), "m2", &a1).await;
    let old = m2.addr.clone();
    m2.kill();
    m2.restart_at_new_address(&[]);
    let new = m2.addr.clone();
    assert_ne!(old, new);
    // Two members: m1 needs m2's vote, so it must reach m2 at its new address.
    eventually(
        "a write committed with m2 at its new address",
        Duration::from_secs(30),
        async || create_config(std::slice::from_ref(&a1), "two").await.ok(),
    )
    .await;
    eventually("m2 to see it", Duration::from_secs(20), async || {
        config_names(&new)
            .await
            .ok()?
            .contains(&"two".to_string())
            .then_some(())
    })
    .await;
    drop(m1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_a_manager_cleanly_while_peers_are_connected() {
    let dir = tempfile::tempdir().unwrap();
    let m1 = support::init_manager(dir.path(), "m1").await;
    let a1 = m1.addr.clone();
    let mut m2 = support::join_manager(dir.path(), "m2", &a1).await;
    // Bounded so a hang fails the test; not a performance figure.
    assert_eq!(
        m2.terminate(Duration::from_secs(20)),
        Some(0),
        "{}",
        m2.logs()
    );
    assert!(m2.logs().contains("stopped"), "{}", m2.logs());
    drop(m1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_manager_catches_up_from_a_snapshot_larger_than_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let m1 = support::init_manager(dir.path(), "m1").await;
    let a1 = m1.addr.clone();
    // About 2.4 MB of state: the snapshot goes out in several chunks.
    let mut c = support::client(&a1).await.unwrap();
    for i in 0..12 {
        c.create_config(shoal_api::v1::CreateConfigRequest {
            spec: Some(support::big_config_spec(&format!("big-{i:02}"), 200 * 1024)),
        })
        .await
        .unwrap();
    }
    let m2 = support::start_joining(dir.path(), "m2", &a1).await;
    let a2 = m2.addr.clone();
    let names = eventually("m2 to catch up", Duration::from_secs(30), async || {
        let names = config_names(&a2).await.ok()?;
        (names.len() == 13).then_some(names)
    })
    .await;
    assert!(names.contains(&"big-11".to_string()));
    drop(m1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_cluster_has_its_root_ca_and_join_tokens_on_every_manager() {
    let dir = tempfile::tempdir().unwrap();
    let m1 = support::init_manager(dir.path(), "m1").await;
    let a1 = m1.addr.clone();
    let m2 = support::join_manager(dir.path(), "m2", &a1).await;
    let mut seen = Vec::new();
    for addr in [&a1, &m2.addr] {
        let mut c = support::client(addr).await.unwrap();
        let clusters = c
            .list_clusters(shoal_api::v1::ListClustersRequest::default())
            .await
            .unwrap()
            .into_inner()
            .clusters;
        assert_eq!(clusters.len(), 1);
        let cluster = clusters.into_iter().next().unwrap();
        let name = cluster
            .spec
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()
            .name
            .clone();
        assert_eq!(name, "default");
        let root = cluster.root_ca.clone().unwrap();
        assert!(root.ca_key.is_empty(), "the CA key is never returned");
        let cert = String::from_utf8(root.ca_cert.clone()).unwrap();
        assert_eq!(shoal_ca::cert_digest(&cert).unwrap(), root.ca_cert_hash);
        let tokens = root.join_tokens.unwrap();
        for token in [&tokens.worker, &tokens.manager] {
            assert_eq!(
                shoal_ca::JoinToken::parse(token).unwrap().ca_digest,
                root.ca_cert_hash
            );
        }
        seen.push(cluster.meta.unwrap().id);
    }
    assert_eq!(seen[0], seen[1], "one cluster, replicated");
    // Unknown clusters are reported by the name asked for.
    let mut c = support::client(&a1).await.unwrap();
    let err = c
        .get_cluster(shoal_api::v1::GetClusterRequest {
            cluster_id: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert!(
        err.message().contains("cluster nope not found"),
        "{}",
        err.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_api_is_served_on_an_owner_only_local_socket() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let m1 = support::init_manager(dir.path(), "m1").await;
    let socket = m1.state_dir.join("control.sock");
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let mut c = support::local_client(&socket).await;
    let configs = c
        .list_configs(shoal_api::v1::ListConfigsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .configs;
    assert_eq!(configs.len(), 1, "the config init_manager wrote");
}
