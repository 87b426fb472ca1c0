//! Certificate renewal under a driven clock: a cluster whose certificates last one hour; the
//! nodes' clock is moved, not waited for. Before the renewal window nothing happens; past it
//! the worker and the manager both get new certificates, on disk and in use, and the manager
//! keeps serving through its own renewal.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use shoal_api::clock::ManualClock;
use shoal_api::v1::control_client::ControlClient;
use shoal_api::v1::{Cluster, ListClustersRequest};
use shoal_node::renewal::renewal_time;
use shoal_node::{Daemon, DaemonConfig};
use shoal_store::{By, Reader};
use shoal_tls::{Credentials, Dialer};

fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn identity_on_disk(state: &std::path::Path) -> (shoal_ca::NodeIdentity, String) {
    let certs = shoal_node::certificates::load(state).unwrap().unwrap();
    (
        shoal_ca::parse_node_certificate(&certs.cert_pem).unwrap(),
        certs.cert_pem,
    )
}

async fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_renewed_inside_the_window_and_not_before() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let config = |name: &str| {
        let mut c = DaemonConfig::new(dir.path().join(name));
        c.listen_remote_api = free_addr();
        c.clock = clock.clone();
        c.renewal_check = Duration::from_millis(20);
        c
    };

    // A manager; its cluster hands out one-hour certificates.
    let mut manager_config = config("m1");
    manager_config.init = true;
    let manager = Daemon::start(manager_config).await.unwrap().spawn();
    let addr = manager.addr.to_string();
    let store = manager.store.clone();
    wait_until("a leader", Duration::from_secs(60), || {
        manager.handle.status().is_leader
    })
    .await;
    let cluster = store.view(|tx| tx.find::<Cluster>(By::All).pop()).unwrap();
    let mut updated = (*cluster).clone();
    let spec = updated.spec.get_or_insert_with(Default::default);
    spec.ca_config
        .get_or_insert_with(Default::default)
        .node_cert_expiry = Some(prost_types::Duration {
        seconds: 3600,
        nanos: 0,
    });
    store.update(|tx| tx.update(updated)).await.unwrap();
    let token = cluster.root_ca.clone().unwrap().join_tokens.unwrap().worker;

    // A worker joins: its certificate lasts an hour.
    let mut worker_config = config("w1");
    worker_config.join_addr = Some(addr.clone());
    worker_config.join_token = Some(token);
    let worker = Daemon::start(worker_config).await.unwrap();
    assert_eq!(worker.role(), shoal_api::v1::NodeRole::Worker);
    let (stop_worker, worker_stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(worker.serve(async move {
        let _ = worker_stopped.await;
    }));
    let w1 = dir.path().join("w1");
    let (first, first_pem) = identity_on_disk(&w1);
    let lifetime = first.not_after.duration_since(first.not_before).unwrap();
    assert!(
        lifetime <= Duration::from_secs(3600) + shoal_api::defaults::CERT_BACKDATE,
        "{lifetime:?}"
    );

    // Just before the earliest renewal point: nothing happens.
    clock.set(renewal_time(&first, 0.49));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(identity_on_disk(&w1).1, first_pem, "renewed too early");

    // Past the latest renewal point: the worker renews, with the same ID and role. The
    // manager's own certificate (90 days, from `--init`) is not due yet.
    let (manager_first, manager_pem) = identity_on_disk(&dir.path().join("m1"));
    // (The CA dates certificates by the real clock, to the second: let one pass so the new
    // certificate ends later than the old one.)
    std::thread::sleep(Duration::from_millis(1100));
    clock.set(renewal_time(&first, 0.81));
    wait_until("the worker's renewal", Duration::from_secs(60), || {
        identity_on_disk(&w1).1 != first_pem
    })
    .await;
    let (renewed, _) = identity_on_disk(&w1);
    assert_eq!(renewed.node_id, first.node_id);
    assert_eq!(renewed.role, first.role);
    assert!(renewed.not_after > first.not_after);
    assert_eq!(identity_on_disk(&dir.path().join("m1")).1, manager_pem);

    // Move the clock into the manager's window: it renews too (with the cluster's new
    // one-hour lifetime) and keeps serving: a new connection with the worker's renewed
    // certificate verifies the manager's new one.
    clock.set(renewal_time(&manager_first, 0.81));
    wait_until("the manager's renewal", Duration::from_secs(60), || {
        identity_on_disk(&dir.path().join("m1")).1 != manager_pem
    })
    .await;
    let (manager_renewed, _) = identity_on_disk(&dir.path().join("m1"));
    assert_eq!(manager_renewed.role, shoal_api::v1::NodeRole::Manager);
    assert!(manager_renewed.not_after < manager_first.not_after);
    let manager_dialer = Dialer::mutual(
        Credentials::new(
            shoal_node::certificates::load(&dir.path().join("m1"))
                .unwrap()
                .unwrap(),
        )
        .unwrap(),
    );
    ControlClient::new(manager_dialer.connect(&addr).await.unwrap())
        .list_clusters(ListClustersRequest::default())
        .await
        .expect("the manager serves with its renewed certificate");

    let _ = stop_worker.send(());
    assert_eq!(worker.await.unwrap().unwrap(), shoal_node::Outcome::Stopped);
    manager.stop().await.unwrap();
}
