//! Nodes whose certificate expired while they were off, with real `shoal daemon` processes
//! (moby/moby#24132; SwarmKit's TestForceNewCluster): a worker is refused until it is given a
//! join token, then comes back as a new node and runs tasks; a lone manager is refused until
//! it is started with `--force-new-cluster`, then comes back with all its data and a fresh
//! certificate. A refused start changes nothing in the state directory. A join token without
//! an address is refused on a node outside any cluster, and on one whose certificate is valid.
//!
//! Certificates are made to expire within seconds through the managers' test knob
//! `SHOAL_TEST_MINIMUM_CERT_EXPIRY`, which lets `shoal swarm update --cert-expiry 10s`
//! through; every certificate is signed by the cluster's own CA, as in production.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use shoal_api::v1::{GetNodeRequest, NodeRole};
use shoal_ca::NodeIdentity;
use support::cluster::{Cluster, LIMIT};

/// Lets certificates last as little as 5 s (read by the managers only).
const SHORT_CERTIFICATES: (&str, &str) = ("SHOAL_TEST_MINIMUM_CERT_EXPIRY", "5s");

/// The certificate a node keeps in its state directory, if it has one.
fn certificate_in(state_dir: &Path) -> Option<NodeIdentity> {
    let certificates = shoal_node::certificates::load(state_dir).ok()??;
    shoal_ca::parse_node_certificate(&certificates.cert_pem).ok()
}

fn certificate(state_dir: &Path) -> NodeIdentity {
    certificate_in(state_dir).expect("the node has a certificate")
}

/// Every regular file of a state directory and its content, except the lock (which each
/// start writes its PID into) and the tasks' logs (their shims, not the daemon, write them):
/// what a refused start must leave as it was.
fn files(state_dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                if !path.ends_with("worker/logs") {
                    walk(&path, out);
                }
            } else if kind.is_file() && entry.file_name() != "lock" {
                out.push((path.clone(), std::fs::read(&path).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(state_dir, &mut out);
    out.sort();
    out
}

/// Sleeps until `t` has passed (with a second to spare), for at most a minute.
fn sleep_past(t: SystemTime) {
    let wait = t
        .duration_since(SystemTime::now())
        .unwrap_or_default()
        .saturating_add(Duration::from_secs(1));
    assert!(
        wait < Duration::from_secs(60),
        "{wait:?} is too long a wait"
    );
    std::thread::sleep(wait);
}

/// The lifetime the CA gave a certificate (its `not_before` is backdated).
fn lifetime(c: &NodeIdentity) -> Duration {
    c.not_after.duration_since(c.issued_at()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_off_past_its_certificate_expiry_comes_back_with_a_token_as_a_new_node() {
    let mut c = Cluster::start_with_env(&[], &[], &[SHORT_CERTIFICATES]);
    c.shoal(&["swarm", "update", "--cert-expiry", "10s"]).ok();
    c.join_worker("w1");
    let w1 = c.daemon("w1").state_dir.clone();
    let first = certificate(&w1);
    assert_eq!(first.role, NodeRole::Worker);
    assert_eq!(lifetime(&first), Duration::from_secs(10));
    let old = first.node_id.clone();

    // While it runs, it renews its 10 s certificates in time (between 5 and 8 s into each).
    let renewed = c.wait("w1 to renew its certificate", &[], |_| {
        certificate_in(&w1).filter(|now| now.not_after > first.not_after)
    });
    assert_eq!(renewed.node_id, old);
    assert_eq!(c.node("w1").expect("w1 in node ls").status, "Ready");

    // Off, past the end of its last certificate. From now on certificates last an hour.
    assert_eq!(c.daemon("w1").terminate(LIMIT), Some(0));
    let last = certificate(&w1);
    c.shoal(&["swarm", "update", "--cert-expiry", "1h"]).ok();
    sleep_past(last.not_after);

    // Without a token: it does not start, says when its certificate expired and what to
    // run, and changes nothing.
    let before = files(&w1);
    c.daemon("w1").restart(&["--hostname", "w1"]);
    let status = c
        .daemon("w1")
        .wait_status(LIMIT)
        .expect("the daemon to exit");
    assert_eq!(status.code(), Some(1));
    let logs = c.daemon("w1").logs();
    let error = logs
        .lines()
        .find(|l| l.starts_with("Error: "))
        .unwrap_or_else(|| panic!("no error in the log:\n{logs}"));
    for says in [
        format!("this node's certificate (node {old}, a worker) expired at ").as_str(),
        "nothing was changed",
        "`shoal swarm join-token worker`",
        "`shoal daemon --join-token TOKEN --join-addr",
        &format!("`shoal node rm {old}`"),
    ] {
        assert!(error.contains(says), "{says:?} missing from: {error}");
    }
    assert_eq!(
        files(&w1),
        before,
        "a refused start changed the state directory"
    );

    // With the worker token (and the managers it remembers): it joins again as a new node,
    // in the same state directory, and says which old node to remove.
    let token = c
        .shoal(&["swarm", "join-token", "-q", "worker"])
        .ok()
        .trim()
        .to_string();
    c.daemon("w1")
        .restart(&["--hostname", "w1", "--join-token", &token]);
    let new = c.wait("w1 to join again", &[], |_| {
        certificate_in(&w1).filter(|id| id.node_id != old)
    });
    assert_eq!(new.role, NodeRole::Worker);
    assert_eq!(lifetime(&new), Duration::from_secs(3600));
    let new_id = new.node_id.clone();
    c.wait("the new node to be READY", &[], |c| {
        let nodes = c.nodes()?;
        let by_id = |id: &str| nodes.iter().find(|n| n.id == id).cloned();
        let (fresh, gone) = (by_id(&new_id)?, by_id(&old)?);
        (fresh.status == "Ready" && gone.status != "Ready").then_some(())
    });
    let logs = c.daemon("w1").logs();
    assert!(
        logs.contains(&format!("joined the cluster again as node {new_id}")),
        "{logs}"
    );
    assert!(logs.contains(&format!("`shoal node rm {old}`")), "{logs}");
    // The old node goes as the log says; the new one runs tasks.
    c.shoal(&["node", "rm", &old]).ok();
    assert!(c.nodes().unwrap().iter().all(|n| n.id != old));
    c.create_service("web", &["--constraint", &format!("node.id=={new_id}")]);
    c.wait_settled("web to run on w1", "web", |placed| {
        placed.len() == 1 && placed[0].node == "w1"
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_manager_off_past_its_certificate_expiry_comes_back_with_force_new_cluster() {
    let mut c = Cluster::start_with_env(&[], &[], &[SHORT_CERTIFICATES]);
    let secret = c.dir().join("secret.txt");
    std::fs::write(&secret, "s3cr3t").unwrap();
    let secret = secret.to_str().unwrap();
    c.shoal(&["secret", "create", "db-password", secret]).ok();
    c.shoal(&["config", "create", "app-config", secret]).ok();
    c.create_service("web", &["--replicas", "1"]);
    let service_id = c.inspect("web")["ID"].clone();

    // The manager's own certificate (90 days, from --init) is renewed through the cluster's
    // CA, as its renewer would at its renewal point, with the lifetime the cluster now
    // gives: 10 s.
    c.shoal(&["swarm", "update", "--cert-expiry", "10s"]).ok();
    let m1 = c.daemon("m1").state_dir.clone();
    let addr = c.daemon("m1").addr.clone();
    let credentials =
        shoal_tls::Credentials::new(shoal_node::certificates::load(&m1).unwrap().unwrap()).unwrap();
    let managers = shoal_node::renewal::Managers::new(vec![addr.clone()]);
    let keys = shoal_node::keys::NodeKeys::open(&m1, None)
        .unwrap()
        .unwrap();
    let short = shoal_node::renewal::renew(&keys, &credentials, &managers)
        .await
        .expect("renewing m1's certificate");
    assert_eq!(short.role, NodeRole::Manager);
    assert_eq!(lifetime(&short), Duration::from_secs(10));
    assert_eq!(certificate(&m1), short);
    let node_id = short.node_id.clone();
    // From now on certificates last an hour (the one it will issue itself included).
    c.shoal(&["swarm", "update", "--cert-expiry", "1h"]).ok();

    // Off, past the end of that certificate.
    assert_eq!(c.daemon("m1").terminate(LIMIT), Some(0));
    sleep_past(short.not_after);

    // Without --force-new-cluster: it does not start, names both ways out, changes nothing.
    let before = files(&m1);
    c.daemon("m1").restart(&["--hostname", "m1"]);
    let status = c
        .daemon("m1")
        .wait_status(LIMIT)
        .expect("the daemon to exit");
    assert_eq!(status.code(), Some(1));
    let logs = c.daemon("m1").logs();
    let error = logs
        .lines()
        .find(|l| l.starts_with("Error: "))
        .unwrap_or_else(|| panic!("no error in the log:\n{logs}"));
    for says in [
        format!("this manager's certificate (node {node_id}) expired at ").as_str(),
        "nothing was changed",
        "If it is the only manager of its cluster, start it with --force-new-cluster",
        &format!("`shoal node demote {node_id}` and `shoal node rm {node_id}`"),
        "`shoal swarm join-token manager`",
    ] {
        assert!(error.contains(says), "{says:?} missing from: {error}");
    }
    assert_eq!(
        files(&m1),
        before,
        "a refused start changed the state directory"
    );

    // With it: it starts, with everything it had, and a certificate from the cluster's CA
    // for an hour (the cluster's lifetime), same node, still a manager.
    c.daemon("m1")
        .restart(&["--hostname", "m1", "--force-new-cluster"]);
    let ls = c.wait("m1 to serve again", &["web"], |c| {
        let run = c.shoal(&["service", "ls"]);
        (run.code == Some(0)).then_some(run.stdout)
    });
    assert!(ls.contains("web"), "{ls}");
    assert_eq!(c.inspect("web")["ID"], service_id);
    assert!(c.shoal(&["secret", "ls"]).ok().contains("db-password"));
    assert!(c.shoal(&["config", "ls"]).ok().contains("app-config"));
    let fresh = certificate(&m1);
    assert_eq!(fresh.node_id, node_id);
    assert_eq!(fresh.role, NodeRole::Manager);
    assert_eq!(lifetime(&fresh), Duration::from_secs(3600));
    assert!(fresh.not_after > SystemTime::now() + Duration::from_secs(30 * 60));
    assert!(
        c.daemon("m1")
            .logs()
            .contains("issued this manager a new certificate from the cluster's root CA"),
        "{}",
        c.daemon("m1").logs()
    );
    // The node's object records it, as a renewal would.
    let recorded = c.wait("m1's node to record its new certificate", &[], |_| {
        let runtime = tokio::runtime::Handle::current();
        let node = tokio::task::block_in_place(|| {
            runtime.block_on(async {
                support::client(&addr)
                    .await?
                    .get_node(GetNodeRequest {
                        node_id: node_id.clone(),
                    })
                    .await
                    .ok()?
                    .into_inner()
                    .node
            })
        })?;
        let pem = node.certificate?.certificate;
        let recorded = shoal_ca::parse_node_certificate(std::str::from_utf8(&pem).ok()?).ok()?;
        (recorded == fresh).then_some(recorded)
    });
    assert_eq!(recorded.not_after, fresh.not_after);
    // And it runs its tasks again.
    c.wait_settled("web to run on m1", "web", |placed| {
        placed.len() == 1 && placed[0].node == "m1"
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_token_without_an_address_is_only_for_a_node_whose_certificate_expired() {
    // A node outside any cluster: refused, nothing created.
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("n1");
    let out = support::daemon_once(&empty, &["--join-token", "SWMTKN-1-abc"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "--join-token without --join-addr only serves a node whose certificate expired"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("add --join-addr MANAGER"), "{stderr}");
    assert!(!empty.join("node.json").exists());

    // A member whose certificate is valid: refused, as with --join-addr, nothing changed.
    let mut c = Cluster::start(&["w1"]);
    assert_eq!(c.daemon("w1").terminate(LIMIT), Some(0));
    let w1 = c.daemon("w1").state_dir.clone();
    let before = files(&w1);
    let token = c
        .shoal(&["swarm", "join-token", "-q", "worker"])
        .ok()
        .trim()
        .to_string();
    c.daemon("w1")
        .restart(&["--hostname", "w1", "--join-token", &token]);
    let status = c
        .daemon("w1")
        .wait_status(LIMIT)
        .expect("the daemon to exit");
    assert_eq!(status.code(), Some(1));
    let logs = c.daemon("w1").logs();
    assert!(
        logs.contains("Error: this node already belongs to a cluster"),
        "{logs}"
    );
    assert_eq!(files(&w1), before);
}
