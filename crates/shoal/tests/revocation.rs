//! Revocation under churn, with a real `shoal daemon`: the cluster's list of removed nodes
//! keeps at most 1,000 entries, and a removed node whose entry the cap has dropped is still
//! refused — its node object is gone, and only members' certificates count — and, when its
//! daemon comes back, it is told so, forgets the cluster and stops.

mod support;

use std::time::Duration;

use shoal_api::v1::node_ca_client::NodeCaClient;
use shoal_api::v1::{
    IssueNodeCertificateRequest, ListClustersRequest, RemoveNodeRequest, node_status,
};
use shoal_tls::{Credentials, Dialer, NodeCertificates};
use tonic::Code;

/// How many nodes join and are removed after the one the test follows: enough for the list's
/// cap (1,000) to drop its entry.
const CHURN: usize = 1000;

fn certificates_of(state_dir: &std::path::Path) -> NodeCertificates {
    shoal_node::certificates::load(state_dir)
        .unwrap()
        .expect("the node has certificates")
}

/// The cluster's revocation list, as the manager at `addr` has it.
async fn revoked(addr: &str) -> Vec<String> {
    support::client(addr)
        .await
        .unwrap()
        .list_clusters(ListClustersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .clusters
        .remove(0)
        .blacklisted_certificates
        .into_keys()
        .collect()
}

/// A node joins through the CA with `token` (as `--join-token` does) and is removed.
async fn join_and_remove(
    ca: NodeCaClient<tonic::transport::Channel>,
    csr: String,
    token: String,
    addr: String,
) {
    let mut ca = ca;
    let node_id = ca
        .issue_node_certificate(IssueNodeCertificateRequest {
            csr: csr.into_bytes(),
            token,
            availability: 0,
        })
        .await
        .expect("a join with the worker token")
        .into_inner()
        .node_id;
    support::client(&addr)
        .await
        .unwrap()
        .remove_node(RemoveNodeRequest {
            node_id,
            force: false,
        })
        .await
        .expect("removing a node that never connected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_worker_stays_out_after_the_cap_dropped_its_entry() {
    let dir = tempfile::tempdir().unwrap();
    let m1 = support::init_manager(dir.path(), "m1").await;
    support::heartbeat_every_second(&m1.addr).await;
    let mut w1 = support::join_worker(dir.path(), "w1", &m1.addr).await;
    let kept = certificates_of(&w1.state_dir);
    let node_id = shoal_ca::parse_node_certificate(&kept.cert_pem)
        .unwrap()
        .node_id;
    let state = async |wanted: node_status::State| {
        let node = support::client(&m1.addr)
            .await?
            .get_node(shoal_api::v1::GetNodeRequest {
                node_id: node_id.clone(),
            })
            .await
            .ok()?
            .into_inner()
            .node?;
        (node.status?.state == wanted as i32).then_some(())
    };
    support::eventually("w1 to be ready", Duration::from_secs(30), async || {
        state(node_status::State::Ready).await
    })
    .await;

    // Stopped, then removed: it is on the list.
    assert_eq!(w1.terminate(Duration::from_secs(30)), Some(0));
    support::eventually("w1 to be down", Duration::from_secs(30), async || {
        let ready = state(node_status::State::Ready).await.is_some();
        (!ready).then_some(())
    })
    .await;
    support::client(&m1.addr)
        .await
        .unwrap()
        .remove_node(RemoveNodeRequest {
            node_id: node_id.clone(),
            force: false,
        })
        .await
        .unwrap();
    assert!(revoked(&m1.addr).await.contains(&node_id));

    // A thousand more nodes join and are removed, eight at a time.
    let token = support::join_tokens(&m1.addr).await.worker;
    let channel = Dialer::anonymous(&kept.root_pem)
        .unwrap()
        .connect(&m1.addr)
        .await
        .unwrap();
    let ca = NodeCaClient::new(channel);
    // One key for all of them: the CA takes only the public key from a request.
    let (_, csr) = shoal_ca::node_key_and_csr().unwrap();
    let started = std::time::Instant::now();
    for _ in 0..CHURN / 8 {
        let batch: Vec<_> = (0..8)
            .map(|_| {
                tokio::spawn(join_and_remove(
                    ca.clone(),
                    csr.clone(),
                    token.clone(),
                    m1.addr.clone(),
                ))
            })
            .collect();
        for joined in batch {
            joined.await.unwrap();
        }
    }
    eprintln!("{CHURN} joins and removals in {:.1?}", started.elapsed());
    let list = revoked(&m1.addr).await;
    assert_eq!(list.len(), 1000);
    assert!(
        !list.contains(&node_id),
        "the cap should have dropped w1's entry"
    );

    // Its certificate is within its dates, and refused all the same: not a member.
    let old = Dialer::mutual(Credentials::new(kept).unwrap())
        .with_request_timeout(Duration::from_secs(5));
    let (_, csr) = shoal_ca::node_key_and_csr().unwrap();
    let refused = NodeCaClient::new(old.connect(&m1.addr).await.unwrap())
        .issue_node_certificate(IssueNodeCertificateRequest {
            csr: csr.into_bytes(),
            token: String::new(),
            availability: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains(&format!(
            "node {node_id} is not a member of this cluster (removed?)"
        )),
        "{refused:?}"
    );

    // Its daemon comes back: it is told so, forgets the cluster and stops, saying why.
    w1.restart(&[]);
    assert_eq!(
        w1.wait_exit(Duration::from_secs(60)),
        Some(1),
        "{}",
        w1.logs()
    );
    let logs = w1.logs();
    assert!(
        logs.contains("is not a member of this cluster (removed?)"),
        "{logs}"
    );
    assert!(logs.contains("removed from the cluster"), "{logs}");
    assert!(!w1.state_dir.join("certificates").exists());
}
