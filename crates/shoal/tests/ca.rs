//! The cluster CA on a real manager: the root certificate, node certificates for valid join
//! tokens, and refusals for everything else.

mod support;

use shoal_api::v1::ca_client::CaClient;
use shoal_api::v1::node_ca_client::NodeCaClient;
use shoal_api::v1::{
    GetRootCaCertificateRequest, IssueNodeCertificateRequest, ListClustersRequest,
    NodeCertificateStatusRequest, NodeRole, issuance_status,
};
use tonic::Code;

/// A channel without a client certificate, as a joining node has.
async fn channel(addr: &str) -> tonic::transport::Channel {
    shoal_tls::Dialer::unverified().connect(addr).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_tokens_get_certificates_with_the_role_they_grant_and_nothing_else_does() {
    let dir = tempfile::tempdir().unwrap();
    let m1 = support::init_manager(dir.path(), "m1").await;
    let ch = channel(&m1.addr).await;
    let cluster = the_cluster(&m1.addr).await;
    let cluster_id = cluster.meta.unwrap().id;
    let tokens = cluster.root_ca.unwrap().join_tokens.unwrap();

    // The root certificate is the one the tokens name.
    let root = CaClient::new(ch.clone())
        .get_root_ca_certificate(GetRootCaCertificateRequest {})
        .await
        .unwrap()
        .into_inner()
        .certificate;
    let digest = shoal_ca::cert_digest(std::str::from_utf8(&root).unwrap()).unwrap();
    assert_eq!(
        shoal_ca::JoinToken::parse(&tokens.worker)
            .unwrap()
            .ca_digest,
        digest
    );

    let mut ca = NodeCaClient::new(ch);
    for (token, role) in [
        (&tokens.worker, NodeRole::Worker),
        (&tokens.manager, NodeRole::Manager),
    ] {
        let (_, csr) = shoal_ca::node_key_and_csr().unwrap();
        let issued = ca
            .issue_node_certificate(IssueNodeCertificateRequest {
                csr: csr.into_bytes(),
                token: token.clone(),
                availability: 0,
            })
            .await
            .unwrap()
            .into_inner();
        let status = ca
            .node_certificate_status(NodeCertificateStatusRequest {
                node_id: issued.node_id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            status.status.unwrap().state,
            issuance_status::State::Issued as i32
        );
        let cert = String::from_utf8(status.certificate.unwrap().certificate).unwrap();
        let identity = shoal_ca::parse_node_certificate(&cert).unwrap();
        assert_eq!(identity.node_id, issued.node_id);
        assert_eq!(identity.role, role);
        assert_eq!(identity.cluster_id, cluster_id);
    }

    // Refusals, each with its reason.
    let (_, csr) = shoal_ca::node_key_and_csr().unwrap();
    let worker = shoal_ca::JoinToken::parse(&tokens.worker).unwrap();
    let wrong_secret = shoal_ca::JoinToken::generate(&worker.ca_digest).to_string();
    let other_ca = shoal_ca::JoinToken::generate(&"z".repeat(50)).to_string();
    let cases: Vec<(String, Vec<u8>, Code, &str)> = vec![
        (
            String::new(),
            csr.clone().into_bytes(),
            Code::Unauthenticated,
            "a join token is required",
        ),
        (
            "SWMTKN-1-nope".into(),
            csr.clone().into_bytes(),
            Code::InvalidArgument,
            "malformed join token",
        ),
        (
            wrong_secret,
            csr.clone().into_bytes(),
            Code::PermissionDenied,
            "matches no current token",
        ),
        (
            other_ca,
            csr.clone().into_bytes(),
            Code::PermissionDenied,
            "another cluster's CA",
        ),
        (
            tokens.worker.clone(),
            b"not a csr".to_vec(),
            Code::InvalidArgument,
            "certificate signing request",
        ),
    ];
    for (token, csr, code, text) in cases {
        let err = ca
            .issue_node_certificate(IssueNodeCertificateRequest {
                csr,
                token: token.clone(),
                availability: 0,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), code, "{token:?}: {}", err.message());
        assert!(err.message().contains(text), "{token:?}: {}", err.message());
    }
    let err = ca
        .node_certificate_status(NodeCertificateStatusRequest {
            node_id: "unknown".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

/// The cluster object, as a manager's Control API shows it.
async fn the_cluster(addr: &str) -> shoal_api::v1::Cluster {
    support::client(addr)
        .await
        .unwrap()
        .list_clusters(ListClustersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .clusters
        .remove(0)
}

async fn tokens(addr: &str) -> shoal_api::v1::JoinTokens {
    the_cluster(addr)
        .await
        .root_ca
        .unwrap()
        .join_tokens
        .unwrap()
}

/// Runs `shoal daemon --join-addr ADDR --join-token TOKEN` and returns its exit code and
/// stderr; it must exit by itself (bounded wait, then killed).
fn join_with(dir: &std::path::Path, name: &str, addr: &str, token: &str) -> (Option<i32>, String) {
    let mut m = support::Manager::start(dir, name, &["--join-addr", addr, "--join-token", token]);
    let code = m.wait_exit(std::time::Duration::from_secs(20));
    (code, m.logs())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_token_joins_with_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let m1 = support::init_manager(dir.path(), "m1").await;
    let t = tokens(&m1.addr).await;
    // The first manager has its own manager certificate from the new root.
    let first = shoal_ca::parse_node_certificate(
        &std::fs::read_to_string(m1.state_dir.join("certificates/node.crt")).unwrap(),
    )
    .unwrap();
    assert_eq!(first.role, NodeRole::Manager);
    let first_json = std::fs::read_to_string(m1.state_dir.join("node.json")).unwrap();
    assert!(first_json.contains(&first.node_id));
    // `--init` printed the command to add a worker, and not the manager token.
    let printed = format!(
        "shoal daemon --join-addr {} --join-token {}",
        m1.addr, t.worker
    );
    assert!(m1.logs().contains(&printed), "{}", m1.logs());
    assert!(!m1.logs().contains(&t.manager), "{}", m1.logs());
    let m2 = support::Manager::start(
        dir.path(),
        "m2",
        &["--join-addr", &m1.addr, "--join-token", &t.manager],
    );
    let a2 = m2.addr.clone();
    support::eventually(
        "m2 to catch up",
        std::time::Duration::from_secs(20),
        async || {
            support::config_names(&a2)
                .await
                .ok()?
                .contains(&"one".to_string())
                .then_some(())
        },
    )
    .await;
    let certs = m2.state_dir.join("certificates");
    let cert = std::fs::read_to_string(certs.join("node.crt")).unwrap();
    let identity = shoal_ca::parse_node_certificate(&cert).unwrap();
    assert_eq!(identity.role, NodeRole::Manager);
    let node_json = std::fs::read_to_string(m2.state_dir.join("node.json")).unwrap();
    assert!(
        node_json.contains(&identity.node_id),
        "the CA's node ID is the node's ID"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(certs.join("node.key"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_tokens_stop_the_join_at_once_and_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let m1 = support::init_manager(dir.path(), "m1").await;
    let other = support::init_manager(dir.path(), "other").await;
    let mine = tokens(&m1.addr).await;
    let foreign = tokens(&other.addr).await;
    let digest = shoal_ca::JoinToken::parse(&mine.manager).unwrap().ca_digest;
    let wrong_secret = shoal_ca::JoinToken::generate(&digest).to_string();
    let cases = [
        (
            "malformed",
            "SWMTKN-1-nope".to_string(),
            "malformed join token",
        ),
        ("rotated", wrong_secret, "matches no current token"),
        ("foreign", foreign.manager.clone(), "CA mismatch"),
    ];
    for (name, token, reason) in cases {
        let (code, logs) = join_with(dir.path(), name, &m1.addr, &token);
        assert_eq!(code, Some(1), "{name}: {logs}");
        assert!(logs.contains(reason), "{name}: {logs}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_a_join_token_stops_the_old_one_at_once() {
    use shoal_api::v1::{KeyRotation, UpdateClusterRequest};
    let dir = tempfile::tempdir().unwrap();
    let m1 = support::init_manager(dir.path(), "m1").await;
    let mut control = support::client(&m1.addr).await.unwrap();
    let cluster = the_cluster(&m1.addr).await;
    let meta = cluster.meta.clone().unwrap();
    let old = cluster.root_ca.clone().unwrap().join_tokens.unwrap();
    let rotate = |version: u64, spec: shoal_api::v1::ClusterSpec| UpdateClusterRequest {
        cluster_id: meta.id.clone(),
        cluster_version: version,
        spec: Some(spec),
        rotation: Some(KeyRotation {
            worker_join_token: true,
            ..Default::default()
        }),
    };
    let updated = control
        .update_cluster(rotate(meta.version, cluster.spec.clone().unwrap()))
        .await
        .unwrap()
        .into_inner()
        .cluster
        .unwrap();
    let new = updated.root_ca.unwrap().join_tokens.unwrap();
    assert_ne!(new.worker, old.worker);
    assert_eq!(
        new.manager, old.manager,
        "only the worker token was rotated"
    );

    let mut ca = NodeCaClient::new(channel(&m1.addr).await);
    let (_, csr) = shoal_ca::node_key_and_csr().unwrap();
    let err = ca
        .issue_node_certificate(IssueNodeCertificateRequest {
            csr: csr.clone().into_bytes(),
            token: old.worker,
            availability: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("rotated"), "{}", err.message());
    ca.issue_node_certificate(IssueNodeCertificateRequest {
        csr: csr.into_bytes(),
        token: new.worker,
        availability: 0,
    })
    .await
    .unwrap();

    // A stale version and an invalid spec are refused, and change nothing.
    let err = control
        .update_cluster(rotate(meta.version, cluster.spec.clone().unwrap()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("update out of sequence"),
        "{}",
        err.message()
    );
    let mut short = cluster.spec.clone().unwrap();
    short.ca_config.as_mut().unwrap().node_cert_expiry = Some(prost_types::Duration {
        seconds: 1800,
        nanos: 0,
    });
    let current = the_cluster(&m1.addr).await;
    let err = control
        .update_cluster(rotate(current.meta.clone().unwrap().version, short))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("spec.ca_config.node_cert_expiry"),
        "{}",
        err.message()
    );
    let after = the_cluster(&m1.addr).await;
    assert_eq!(after.meta.unwrap().version, current.meta.unwrap().version);
}
