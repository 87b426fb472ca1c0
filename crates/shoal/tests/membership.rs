//! Nodes joining, leaving and being removed, across real processes: workers join by token,
//! only managers' certificates reach Raft and the Control API, a node that left or was
//! removed cannot come back with its old certificate.

mod support;

use std::time::{Duration, SystemTime};

use shoal_api::v1::control_client::ControlClient;
use shoal_api::v1::node_ca_client::NodeCaClient;
use shoal_api::v1::raft_client::RaftClient;
use shoal_api::v1::raft_membership_client::RaftMembershipClient;
use shoal_api::v1::swarm_client::SwarmClient;
use shoal_api::v1::{
    GetNodeRequest, IssueNodeCertificateRequest, JoinRequest, LeaveSwarmRequest,
    ListClustersRequest, ListNodesRequest, NodeRole, RemoveNodeRequest, StreamRaftMessageRequest,
    SwarmInfoRequest,
};
use shoal_tls::{Credentials, Dialer, NodeCertificates};
use tonic::Code;

/// What a call got: Ok, or the refusal's code and message.
type Outcome = Result<(), (Code, String)>;

fn certificates_of(state_dir: &std::path::Path) -> NodeCertificates {
    shoal_node::certificates::load(state_dir)
        .unwrap()
        .expect("the node has certificates")
}

fn dialer_with(certificates: NodeCertificates) -> Dialer {
    Dialer::mutual(Credentials::new(certificates).unwrap())
        .with_request_timeout(Duration::from_secs(5))
}

/// What a call with `dialer` to the Control API of `addr` gets: Ok, or the refusal's code and
/// message (a refusal during the handshake has no code of its own: `Unknown`).
async fn control_call(dialer: &Dialer, addr: &str) -> Outcome {
    let channel = dialer
        .connect(addr)
        .await
        .map_err(|e| (Code::Unknown, e.to_string()))?;
    ControlClient::new(channel)
        .list_clusters(ListClustersRequest::default())
        .await
        .map(|_| ())
        .map_err(|s| (s.code(), s.message().to_string()))
}

async fn raft_call(dialer: &Dialer, addr: &str) -> Outcome {
    let channel = dialer
        .connect(addr)
        .await
        .map_err(|e| (Code::Unknown, e.to_string()))?;
    let stream = tokio_stream::iter(vec![StreamRaftMessageRequest {
        chunk: Vec::new(),
        last: true,
    }]);
    RaftClient::new(channel)
        .stream_raft_message(stream)
        .await
        .map(|_| ())
        .map_err(|s| (s.code(), s.message().to_string()))
}

async fn raft_join_call(dialer: &Dialer, addr: &str) -> Outcome {
    let channel = dialer
        .connect(addr)
        .await
        .map_err(|e| (Code::Unknown, e.to_string()))?;
    RaftMembershipClient::new(channel)
        .join(JoinRequest {
            addr: "127.0.0.1:1".into(),
            node_id: "intruder".into(),
        })
        .await
        .map(|_| ())
        .map_err(|s| (s.code(), s.message().to_string()))
}

/// A renewal: a CSR without a token, signed for whoever the certificate says the caller is.
async fn renewal_call(dialer: &Dialer, addr: &str) -> Outcome {
    let channel = dialer
        .connect(addr)
        .await
        .map_err(|e| (Code::Unknown, e.to_string()))?;
    let (_, csr) = shoal_ca::node_key_and_csr().unwrap();
    NodeCaClient::new(channel)
        .issue_node_certificate(IssueNodeCertificateRequest {
            csr: csr.into_bytes(),
            token: String::new(),
            availability: 0,
        })
        .await
        .map(|_| ())
        .map_err(|s| (s.code(), s.message().to_string()))
}

async fn status_call(dialer: &Dialer, addr: &str, node_id: &str) -> Outcome {
    let channel = dialer
        .connect(addr)
        .await
        .map_err(|e| (Code::Unknown, e.to_string()))?;
    NodeCaClient::new(channel)
        .node_certificate_status(shoal_api::v1::NodeCertificateStatusRequest {
            node_id: node_id.to_string(),
        })
        .await
        .map(|_| ())
        .map_err(|s| (s.code(), s.message().to_string()))
}

/// A join with a valid token and a request whose body was altered after it was signed.
async fn tampered_csr_call(dialer: &Dialer, addr: &str, token: &str) -> Outcome {
    let channel = dialer
        .connect(addr)
        .await
        .map_err(|e| (Code::Unknown, e.to_string()))?;
    let (_, csr) = shoal_ca::node_key_and_csr().unwrap();
    let mut bytes = csr.into_bytes();
    let i = bytes.len() / 2;
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    NodeCaClient::new(channel)
        .issue_node_certificate(IssueNodeCertificateRequest {
            csr: bytes,
            token: token.to_string(),
            availability: 0,
        })
        .await
        .map(|_| ())
        .map_err(|s| (s.code(), s.message().to_string()))
}

/// A manager certificate naming this cluster, signed by another CA.
fn foreign_manager_certificate(cluster_id: &str, root_pem: &str) -> NodeCertificates {
    let now = SystemTime::now();
    let other = shoal_ca::RootCa::generate(now, Duration::from_secs(3600 * 24)).unwrap();
    let (key_pem, csr) = shoal_ca::node_key_and_csr().unwrap();
    let cert_pem = shoal_ca::issue_node_certificate(
        &other,
        &csr,
        "intruder",
        NodeRole::Manager,
        cluster_id,
        now,
        Duration::from_secs(3600),
    )
    .unwrap();
    NodeCertificates {
        root_pem: root_pem.to_string(),
        cert_pem,
        key_pem,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_joins_by_token_and_is_a_worker() {
    let dir = tempfile::tempdir().unwrap();
    let m1 = support::init_manager(dir.path(), "m1").await;
    let w1 = support::join_worker(dir.path(), "w1", &m1.addr).await;
    let cert = certificates_of(&w1.state_dir);
    let identity = shoal_ca::parse_node_certificate(&cert.cert_pem).unwrap();
    assert_eq!(identity.role, NodeRole::Worker);

    // The manager knows the node, as a worker.
    let mut control = support::client(&m1.addr).await.unwrap();
    let node = control
        .get_node(GetNodeRequest {
            node_id: identity.node_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .node
        .unwrap();
    assert_eq!(node.role, NodeRole::Worker as i32);

    // The worker's own socket: who it is, and no Control API.
    let socket = w1.state_dir.join("control.sock");
    support::eventually("the worker's socket", Duration::from_secs(20), async || {
        socket.exists().then_some(())
    })
    .await;
    let info = SwarmClient::new(support::local_channel(&socket).await)
        .info(SwarmInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.node_id, identity.node_id);
    assert_eq!(info.role, NodeRole::Worker as i32);
    assert_eq!(info.managers, vec![m1.addr.clone()]);
    let refused = support::local_client(&socket)
        .await
        .list_nodes(ListNodesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(refused.message().contains("not a manager"), "{refused:?}");
}

/// Every way in that must be refused, counted. Each case: what is presented, what it calls,
/// and that it is refused (and, where the refusal comes from a handler, with which code).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_that_must_not_get_in_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let m1 = support::init_manager(dir.path(), "m1").await;
    let w1 = support::join_worker(dir.path(), "w1", &m1.addr).await;
    let addr = m1.addr.clone();
    let manager_certs = certificates_of(&m1.state_dir);
    let cluster_id = shoal_ca::parse_node_certificate(&manager_certs.cert_pem)
        .unwrap()
        .cluster_id;
    let worker = dialer_with(certificates_of(&w1.state_dir));
    let anonymous = Dialer::anonymous(&manager_certs.root_pem).unwrap();
    // A manager certificate from another CA, claiming this cluster. (An expired certificate
    // of the right CA is refused by the same TLS verification: see shoal-tls's tests.)
    let foreign = dialer_with(foreign_manager_certificate(
        &cluster_id,
        &manager_certs.root_pem,
    ));
    let mut results: Vec<(&str, Outcome, Option<Code>)> = Vec::new();
    results.push((
        "no certificate → Control",
        control_call(&anonymous, &addr).await,
        Some(Code::Unauthenticated),
    ));
    results.push((
        "no certificate → Raft",
        raft_call(&anonymous, &addr).await,
        Some(Code::Unauthenticated),
    ));
    results.push((
        "no certificate → Raft join",
        raft_join_call(&anonymous, &addr).await,
        Some(Code::Unauthenticated),
    ));
    results.push((
        "no certificate → renewal",
        renewal_call(&anonymous, &addr).await,
        Some(Code::Unauthenticated),
    ));
    results.push((
        "foreign CA → Control",
        control_call(&foreign, &addr).await,
        None,
    ));
    results.push(("foreign CA → Raft", raft_call(&foreign, &addr).await, None));
    results.push((
        "worker → Control",
        control_call(&worker, &addr).await,
        Some(Code::PermissionDenied),
    ));
    results.push((
        "worker → Raft",
        raft_call(&worker, &addr).await,
        Some(Code::PermissionDenied),
    ));
    results.push((
        "worker → Raft join",
        raft_join_call(&worker, &addr).await,
        Some(Code::PermissionDenied),
    ));
    let manager_id = shoal_ca::parse_node_certificate(&manager_certs.cert_pem)
        .unwrap()
        .node_id;
    results.push((
        "worker → another node's certificate",
        status_call(&worker, &addr, &manager_id).await,
        Some(Code::PermissionDenied),
    ));
    let tokens = support::join_tokens(&addr).await;
    results.push((
        "valid token, CSR whose signature does not match its key",
        tampered_csr_call(&anonymous, &addr, &tokens.worker).await,
        Some(Code::InvalidArgument),
    ));
    let total = results.len();
    let mut rejected = 0;
    for (case, result, code) in &results {
        match (result, code) {
            (Ok(()), _) => panic!("{case}: got in"),
            (Err((got, message)), Some(want)) => {
                assert_eq!(got, want, "{case}: {message}");
                rejected += 1;
            }
            (Err(_), None) => rejected += 1,
        }
    }
    assert_eq!(rejected, total);
    eprintln!("{rejected} of {total} rejected");

    // The worker's own renewal is allowed, and yields a worker certificate again: a worker
    // cannot get a manager certificate signed.
    assert_eq!(renewal_call(&worker, &addr).await, Ok(()));
    let worker_id = shoal_ca::parse_node_certificate(&certificates_of(&w1.state_dir).cert_pem)
        .unwrap()
        .node_id;
    let renewed = support::client(&addr)
        .await
        .unwrap()
        .get_node(GetNodeRequest { node_id: worker_id })
        .await
        .unwrap()
        .into_inner()
        .node
        .unwrap();
    let pem = renewed.certificate.unwrap().certificate;
    let renewed = shoal_ca::parse_node_certificate(std::str::from_utf8(&pem).unwrap()).unwrap();
    assert_eq!(renewed.role, NodeRole::Worker);
    // And nothing a refused caller did changed the cluster: one manager, one worker.
    let nodes = support::client(&addr)
        .await
        .unwrap()
        .list_nodes(ListNodesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .nodes;
    assert_eq!(nodes.len(), 2, "{nodes:?}");
    let workers = nodes
        .iter()
        .filter(|n| n.role == NodeRole::Worker as i32)
        .count();
    assert_eq!(workers, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_leaves_and_once_removed_its_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let m1 = support::init_manager(dir.path(), "m1").await;
    support::heartbeat_every_second(&m1.addr).await;
    let w1 = support::join_worker(dir.path(), "w1", &m1.addr).await;
    let kept = certificates_of(&w1.state_dir);
    let node_id = shoal_ca::parse_node_certificate(&kept.cert_pem)
        .unwrap()
        .node_id;
    let mut control = support::client(&m1.addr).await.unwrap();

    // A manager cannot be removed, even by force.
    let manager_id = shoal_ca::parse_node_certificate(&certificates_of(&m1.state_dir).cert_pem)
        .unwrap()
        .node_id;
    let refused = control
        .remove_node(RemoveNodeRequest {
            node_id: manager_id,
            force: true,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(refused.message().contains("demote"), "{refused:?}");

    // `shoal swarm leave` on the worker: the daemon forgets the cluster.
    let socket = w1.state_dir.join("control.sock");
    support::eventually("the worker's socket", Duration::from_secs(20), async || {
        socket.exists().then_some(())
    })
    .await;
    SwarmClient::new(support::local_channel(&socket).await)
        .leave(LeaveSwarmRequest { force: false })
        .await
        .unwrap();
    // Like a Docker Engine, the daemon stays, inactive, its cluster state gone.
    support::eventually("w1 to be inactive", Duration::from_secs(20), async || {
        let refused = SwarmClient::new(support::try_local_channel(&socket).await?)
            .info(SwarmInfoRequest {})
            .await
            .err()?;
        refused
            .message()
            .contains("not part of a cluster")
            .then_some(())
    })
    .await;
    assert!(w1.is_running());
    assert!(!w1.state_dir.join("certificates").exists());
    assert!(!w1.state_dir.join("node.json").exists());

    // Its heartbeats stop: once the manager notices, it can be removed without force.
    support::eventually("w1 to be down", Duration::from_secs(30), async || {
        let node = node_of(&m1.addr, &node_id).await?;
        (node.status?.state == shoal_api::v1::node_status::State::Down as i32).then_some(())
    })
    .await;
    // Until removed, its old certificate still renews; once removed, it is refused.
    let old = dialer_with(kept);
    assert_eq!(renewal_call(&old, &m1.addr).await, Ok(()));
    control
        .remove_node(RemoveNodeRequest {
            node_id: node_id.clone(),
            force: false,
        })
        .await
        .unwrap();
    let (code, message) = renewal_call(&old, &m1.addr).await.unwrap_err();
    assert_eq!(code, Code::PermissionDenied, "{message}");
    assert!(message.contains("removed"), "{message}");
    let cluster = control
        .list_clusters(ListClustersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .clusters
        .remove(0);
    assert!(cluster.blacklisted_certificates.contains_key(&node_id));
    // Removing it again: not found, nothing changes.
    let again = control
        .remove_node(RemoveNodeRequest {
            node_id,
            force: false,
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::NotFound);
}

async fn node_of(addr: &str, node_id: &str) -> Option<shoal_api::v1::Node> {
    support::client(addr)
        .await?
        .get_node(GetNodeRequest {
            node_id: node_id.to_string(),
        })
        .await
        .ok()?
        .into_inner()
        .node
}

fn role_on_disk(state_dir: &std::path::Path) -> Option<NodeRole> {
    let certs = shoal_node::certificates::load(state_dir).ok()??;
    Some(shoal_ca::parse_node_certificate(&certs.cert_pem).ok()?.role)
}

async fn set_desired_role(addr: &str, node_id: &str, role: NodeRole) {
    let node = node_of(addr, node_id).await.unwrap();
    let mut spec = node.spec.clone().unwrap();
    spec.desired_role = role as i32;
    support::client(addr)
        .await
        .unwrap()
        .update_node(shoal_api::v1::UpdateNodeRequest {
            node_id: node_id.to_string(),
            node_version: node.meta.unwrap().version,
            spec: Some(spec),
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_is_promoted_and_demoted_through_new_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let m1 = support::init_manager(dir.path(), "m1").await;
    let w1 = support::join_worker(dir.path(), "w1", &m1.addr).await;
    let node_id = shoal_ca::parse_node_certificate(&certificates_of(&w1.state_dir).cert_pem)
        .unwrap()
        .node_id;
    // Its session makes it READY.
    support::eventually("w1 to be ready", Duration::from_secs(20), async || {
        let node = node_of(&m1.addr, &node_id).await?;
        (node.status?.state == shoal_api::v1::node_status::State::Ready as i32).then_some(())
    })
    .await;

    // Promote: the node renews, gets a manager certificate, joins Raft, and serves the
    // Control API with the cluster's data.
    set_desired_role(&m1.addr, &node_id, NodeRole::Manager).await;
    support::eventually(
        "w1 to become a manager",
        Duration::from_secs(30),
        async || (role_on_disk(&w1.state_dir)? == NodeRole::Manager).then_some(()),
    )
    .await;
    support::eventually(
        "w1 to serve as a manager",
        Duration::from_secs(30),
        async || {
            support::config_names(&w1.addr)
                .await
                .ok()?
                .contains(&"one".to_string())
                .then_some(())
        },
    )
    .await;
    support::eventually(
        "w1 to be a Raft member",
        Duration::from_secs(20),
        async || {
            node_of(&m1.addr, &node_id)
                .await?
                .manager_status
                .map(|_| ())
        },
    )
    .await;

    // Demote: it leaves Raft, gets a worker certificate, and stops serving the Control API.
    let manager_certificate = certificates_of(&w1.state_dir);
    set_desired_role(&m1.addr, &node_id, NodeRole::Worker).await;
    support::eventually(
        "w1 to become a worker again",
        Duration::from_secs(30),
        async || (role_on_disk(&w1.state_dir)? == NodeRole::Worker).then_some(()),
    )
    .await;
    let socket = w1.state_dir.join("control.sock");
    support::eventually(
        "w1's socket to refuse the Control API",
        Duration::from_secs(30),
        async || {
            let refused = support::local_client(&socket)
                .await
                .list_nodes(ListNodesRequest::default())
                .await
                .err()?;
            refused.message().contains("not a manager").then_some(())
        },
    )
    .await;
    let node = node_of(&m1.addr, &node_id).await.unwrap();
    assert_eq!(node.role, NodeRole::Worker as i32);
    assert!(node.manager_status.is_none());
    // The manager certificate it held is still within its dates, but no longer counts.
    let (code, message) = control_call(&dialer_with(manager_certificate), &m1.addr)
        .await
        .unwrap_err();
    assert_eq!(code, Code::PermissionDenied, "{message}");
    assert!(message.contains("not a manager"), "{message}");
    // The cluster still takes writes with its one manager.
    support::create_config(std::slice::from_ref(&m1.addr), "after-demotion")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_running_worker_needs_force_and_the_worker_stops_saying_why() {
    let dir = tempfile::tempdir().unwrap();
    let m1 = support::init_manager(dir.path(), "m1").await;
    let mut w1 = support::join_worker(dir.path(), "w1", &m1.addr).await;
    let node_id = shoal_ca::parse_node_certificate(&certificates_of(&w1.state_dir).cert_pem)
        .unwrap()
        .node_id;
    support::eventually("w1 to be ready", Duration::from_secs(20), async || {
        let node = node_of(&m1.addr, &node_id).await?;
        (node.status?.state == shoal_api::v1::node_status::State::Ready as i32).then_some(())
    })
    .await;
    let mut control = support::client(&m1.addr).await.unwrap();
    let refused = control
        .remove_node(RemoveNodeRequest {
            node_id: node_id.clone(),
            force: false,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        node_of(&m1.addr, &node_id).await.is_some(),
        "nothing changed"
    );
    control
        .remove_node(RemoveNodeRequest {
            node_id: node_id.clone(),
            force: true,
        })
        .await
        .unwrap();
    // The worker hears it, forgets the cluster and exits with an error that says so.
    assert_eq!(
        w1.wait_exit(Duration::from_secs(30)),
        Some(1),
        "{}",
        w1.logs()
    );
    assert!(
        w1.logs().contains("removed from the cluster"),
        "{}",
        w1.logs()
    );
    assert!(!w1.state_dir.join("certificates").exists());
}
