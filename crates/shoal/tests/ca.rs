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

async fn channel(addr: &str) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_tokens_get_certificates_with_the_role_they_grant_and_nothing_else_does() {
    let dir = tempfile::tempdir().unwrap();
    let m1 = support::init_manager(dir.path(), "m1").await;
    let ch = channel(&m1.addr).await;
    let cluster = support::client(&m1.addr)
        .await
        .unwrap()
        .list_clusters(ListClustersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .clusters
        .remove(0);
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
