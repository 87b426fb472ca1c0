//! Getting a node certificate with a join token, and keeping it in the state directory.
//!
//! The joining node asks the manager for the root certificate without trusting it, checks it
//! against the digest in its token (refusing on mismatch: wrong address, or a token of
//! another cluster), then sends a CSR with the token; the CA answers with the node ID and the
//! role the token grants. Refusals (a malformed, rotated or foreign token) are final: the node
//! stops at once and says why, instead of retrying.
//!
//! Files: `<state>/certificates/` (0700) holds `root-ca.crt`, `node.crt` and `node.key`
//! (0600).

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::time::Duration;

use shoal_api::v1::ca_client::CaClient;
use shoal_api::v1::node_ca_client::NodeCaClient;
use shoal_api::v1::{
    GetRootCaCertificateRequest, IssueNodeCertificateRequest, NodeCertificateStatusRequest,
};
use shoal_ca::{JoinToken, NodeIdentity as CertIdentity};
use shoal_raft::service::LEADER_ADDR_METADATA;
use shoal_tls::{Dialer, NodeCertificates};

use crate::error::NodeError;

/// A certificate obtained with a join token.
pub struct Issued {
    pub root_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub identity: CertIdentity,
}

impl Issued {
    pub fn certificates(&self) -> NodeCertificates {
        NodeCertificates {
            root_pem: self.root_pem.clone(),
            cert_pem: self.cert_pem.clone(),
            key_pem: self.key_pem.clone(),
        }
    }
}

fn refused(e: tonic::Status) -> NodeError {
    NodeError::Join(e.message().to_string())
}

/// Gets a certificate from the CA at `addr` with `token`.
pub async fn obtain(addr: &str, token: &str) -> Result<Issued, NodeError> {
    let token_parsed = JoinToken::parse(token).map_err(|e| NodeError::Join(e.to_string()))?;
    let mut last = String::new();
    let mut channel = None;
    // The root comes over a connection that trusts nothing; it is checked against the token
    // before anything else is sent.
    let unverified = Dialer::unverified();
    for _ in 0..20 {
        match unverified.connect(addr).await {
            Ok(c) => {
                channel = Some(c);
                break;
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let channel = channel.ok_or_else(|| {
        NodeError::Join(format!(
            "cannot reach the manager at {addr} ({last}); check the address"
        ))
    })?;
    let root = CaClient::new(channel.clone())
        .get_root_ca_certificate(GetRootCaCertificateRequest {})
        .await
        .map_err(refused)?
        .into_inner()
        .certificate;
    let root_pem = String::from_utf8(root).map_err(|_| {
        NodeError::Join(format!(
            "the manager at {addr} sent a root certificate that is not PEM"
        ))
    })?;
    let digest = shoal_ca::cert_digest(&root_pem).map_err(|e| NodeError::Join(e.to_string()))?;
    if digest != token_parsed.ca_digest {
        return Err(NodeError::Join(format!(
            "the manager at {addr} has another root CA than the join token names (CA mismatch): \
             check the address, or get a token from a manager of the cluster you want to join"
        )));
    }
    let (key_pem, csr_pem) =
        shoal_ca::node_key_and_csr().map_err(|e| NodeError::Join(e.to_string()))?;
    // From here on the manager must prove it holds a manager certificate from that root.
    let trusted = Dialer::anonymous(&root_pem).map_err(|e| NodeError::Join(e.to_string()))?;
    let mut target = addr.to_string();
    let mut hops = 0;
    let (mut ca, issued) = loop {
        let channel = trusted
            .connect(&target)
            .await
            .map_err(|e| NodeError::Join(e.to_string()))?;
        let mut ca = NodeCaClient::new(channel);
        match ca
            .issue_node_certificate(IssueNodeCertificateRequest {
                csr: csr_pem.clone().into_bytes(),
                token: token.to_string(),
                availability: 0,
            })
            .await
        {
            Ok(issued) => break (ca, issued.into_inner()),
            // Only the leader signs: follow it.
            Err(status) if hops < 3 && leader_of(&status).is_some() => {
                target = leader_of(&status).unwrap_or_default();
                hops += 1;
            }
            Err(status) => return Err(refused(status)),
        }
    };
    let status = ca
        .node_certificate_status(NodeCertificateStatusRequest {
            node_id: issued.node_id,
        })
        .await
        .map_err(refused)?
        .into_inner();
    let cert_pem = String::from_utf8(status.certificate.unwrap_or_default().certificate)
        .map_err(|_| NodeError::Join("the CA sent a certificate that is not PEM".into()))?;
    let identity =
        shoal_ca::parse_node_certificate(&cert_pem).map_err(|e| NodeError::Join(e.to_string()))?;
    Ok(Issued {
        root_pem,
        cert_pem,
        key_pem,
        identity,
    })
}

/// The leader's address a follower names when it refuses a write.
pub(crate) fn leader_of(status: &tonic::Status) -> Option<String> {
    (status.code() == tonic::Code::FailedPrecondition)
        .then(|| status.metadata().get(LEADER_ADDR_METADATA))
        .flatten()
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The certificates kept in `<state>/certificates/`, if the node has any.
pub fn load(state: &Path) -> Result<Option<NodeCertificates>, NodeError> {
    let dir = state.join("certificates");
    let read = |name: &str| -> Result<Option<String>, NodeError> {
        let path = dir.join(name);
        match std::fs::read_to_string(&path) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(NodeError::io(format!("reading {}", path.display()), e)),
        }
    };
    match (read("root-ca.crt")?, read("node.crt")?, read("node.key")?) {
        (Some(root_pem), Some(cert_pem), Some(key_pem)) => Ok(Some(NodeCertificates {
            root_pem,
            cert_pem,
            key_pem,
        })),
        (None, None, None) => Ok(None),
        _ => Err(NodeError::StateDir(format!(
            "{} is incomplete (it needs root-ca.crt, node.crt and node.key); restore it from a              backup, or leave the cluster and join again",
            dir.display()
        ))),
    }
}

fn write_file(path: &Path, contents: &str, mode: u32) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Saves the certificates under `<state>/certificates/`.
pub fn save(state: &Path, issued: &Issued) -> Result<(), NodeError> {
    save_certificates(state, &issued.certificates())
}

/// Saves `certificates` under `<state>/certificates/`, each file replaced atomically.
pub fn save_certificates(state: &Path, issued: &NodeCertificates) -> Result<(), NodeError> {
    let dir = state.join("certificates");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| NodeError::io(format!("creating {}", dir.display()), e))?;
    for (name, contents, mode) in [
        ("root-ca.crt", &issued.root_pem, 0o644),
        ("node.crt", &issued.cert_pem, 0o644),
        ("node.key", &issued.key_pem, 0o600),
    ] {
        let path = dir.join(name);
        write_file(&path, contents, mode)
            .map_err(|e| NodeError::io(format!("writing {}", path.display()), e))?;
    }
    Ok(())
}
