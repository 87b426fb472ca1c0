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
use crate::keys::NodeKeys;

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
    obtain_with(addr, token, shoal_api::v1::node_spec::Availability::Active).await
}

/// [`obtain`], asking the cluster to record the node with `availability`.
pub async fn obtain_with(
    addr: &str,
    token: &str,
    availability: shoal_api::v1::node_spec::Availability,
) -> Result<Issued, NodeError> {
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
                availability: availability as i32,
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

/// The certificates kept in `<state>/certificates/`, if the node has any, when its key file
/// is not locked ([`NodeError::Locked`] if it is; a daemon opens its keys with
/// [`NodeKeys::open`] and calls [`load_with`]).
pub fn load(state: &Path) -> Result<Option<NodeCertificates>, NodeError> {
    match NodeKeys::open(state, None)? {
        Some(keys) => load_with(&keys),
        None => load_files(state, None),
    }
}

/// The certificates kept beside `keys`, if the node has any. A renewal cut short by a crash
/// is finished here (see [`save_certificates`]).
pub fn load_with(keys: &NodeKeys) -> Result<Option<NodeCertificates>, NodeError> {
    load_files(keys.state(), Some(keys.tls_key_pem()))
}

fn load_files(
    state: &Path,
    key_pem: Option<String>,
) -> Result<Option<NodeCertificates>, NodeError> {
    let dir = state.join("certificates");
    let read = |name: &str| -> Result<Option<String>, NodeError> {
        let path = dir.join(name);
        match std::fs::read_to_string(&path) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(NodeError::io(format!("reading {}", path.display()), e)),
        }
    };
    match (read("root-ca.crt")?, read("node.crt")?, key_pem) {
        (Some(root_pem), Some(cert_pem), Some(key_pem)) => {
            let mut certificates = NodeCertificates {
                root_pem,
                cert_pem,
                key_pem,
            };
            if !usable(&certificates)
                && let Some(cert_pem) = read("node.crt.new")?
            {
                let finished = NodeCertificates {
                    cert_pem,
                    ..certificates.clone()
                };
                if usable(&finished) {
                    let path = dir.join("node.crt");
                    std::fs::rename(dir.join("node.crt.new"), &path)
                        .and_then(|()| sync_dir(&dir))
                        .map_err(|e| NodeError::io(format!("replacing {}", path.display()), e))?;
                    tracing::info!(
                        "finished replacing this node's certificate (cut short earlier)"
                    );
                    certificates = finished;
                }
            }
            Ok(Some(certificates))
        }
        (None, None, None) => Ok(None),
        _ => Err(NodeError::StateDir(format!(
            "{} is incomplete (it needs root-ca.crt, node.crt and node.key); restore it from a \
             backup, or leave the cluster and join again",
            dir.display()
        ))),
    }
}

/// Whether the key matches the certificate (and both are readable).
fn usable(certificates: &NodeCertificates) -> bool {
    shoal_tls::Credentials::new(certificates.clone()).is_ok()
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Writes `contents` to a fresh file at `path` with `mode`, durably.
fn write_new(path: &Path, contents: &str, mode: u32) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut f = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(mode)
        .open(path)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()
}

/// Saves the certificates of a node that has just got its first ones.
pub fn save(keys: &NodeKeys, issued: &Issued) -> Result<(), NodeError> {
    save_certificates(keys, &issued.certificates())
}

/// Saves `certificates` under `<state>/certificates/` (0700) so that a crash at any point
/// leaves a usable key and certificate: both are written in full beside the old ones
/// (`*.new`), then the key file is renamed into place, then the certificate. A crash between
/// the two renames leaves the new key with the old certificate, and the new certificate in
/// `node.crt.new`; [`load_with`] sees that the pair does not match and finishes the swap. The
/// key file keeps what else it holds (a manager's Raft data keys) and its sealing (autolock):
/// `keys` writes it.
pub fn save_certificates(keys: &NodeKeys, issued: &NodeCertificates) -> Result<(), NodeError> {
    let dir = keys.state().join("certificates");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| NodeError::io(format!("creating {}", dir.display()), e))?;
    let io =
        |what: &str, e: std::io::Error| NodeError::io(format!("{what} in {}", dir.display()), e);
    let root = dir.join("root-ca.crt");
    if std::fs::read_to_string(&root).ok().as_deref() != Some(issued.root_pem.as_str()) {
        write_new(&dir.join("root-ca.crt.new"), &issued.root_pem, 0o644)
            .and_then(|()| std::fs::rename(dir.join("root-ca.crt.new"), &root))
            .map_err(|e| io("writing root-ca.crt", e))?;
    }
    keys.replace_tls_key(&issued.key_pem, |key_file| {
        write_new(&dir.join("node.key.new"), key_file, 0o600)
            .map_err(|e| io("writing node.key.new", e))?;
        write_new(&dir.join("node.crt.new"), &issued.cert_pem, 0o644)
            .map_err(|e| io("writing node.crt.new", e))?;
        sync_dir(&dir).map_err(|e| io("syncing", e))?;
        std::fs::rename(dir.join("node.key.new"), dir.join("node.key"))
            .map_err(|e| io("replacing node.key", e))?;
        std::fs::rename(dir.join("node.crt.new"), dir.join("node.crt"))
            .map_err(|e| io("replacing node.crt", e))?;
        sync_dir(&dir).map_err(|e| io("syncing", e))
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use shoal_api::v1::NodeRole;

    use super::*;

    fn issue(root: &shoal_ca::RootCa) -> NodeCertificates {
        let (key_pem, csr) = shoal_ca::node_key_and_csr().unwrap();
        let cert_pem = shoal_ca::issue_node_certificate(
            root,
            &csr,
            "node1",
            NodeRole::Worker,
            "cluster",
            SystemTime::now(),
            Duration::from_secs(3600),
        )
        .unwrap();
        NodeCertificates {
            root_pem: root.cert_pem.clone(),
            cert_pem,
            key_pem,
        }
    }

    #[test]
    fn a_renewal_cut_short_between_the_renames_is_finished_on_load() {
        let dir = tempfile::tempdir().unwrap();
        let root =
            shoal_ca::RootCa::generate(SystemTime::now(), Duration::from_secs(86400)).unwrap();
        let old = issue(&root);
        save_certificates(&NodeKeys::new(dir.path()), &old).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(old.clone()));
        let certs = dir.path().join("certificates");
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &str| {
            std::fs::metadata(certs.join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("node.key"), 0o600);
        assert_eq!(
            std::fs::metadata(&certs).unwrap().permissions().mode() & 0o777,
            0o700
        );

        // The crash: the new key is in place, the new certificate still beside the old one.
        let new = issue(&root);
        std::fs::write(certs.join("node.key"), &new.key_pem).unwrap();
        std::fs::write(certs.join("node.crt.new"), &new.cert_pem).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(new.clone()));
        assert!(!certs.join("node.crt.new").exists());
        assert_eq!(load(dir.path()).unwrap(), Some(new));

        // A crash before the renames: the old pair stands, the leftovers are ignored.
        let newer = issue(&root);
        std::fs::write(certs.join("node.key.new"), &newer.key_pem).unwrap();
        std::fs::write(certs.join("node.crt.new"), &newer.cert_pem).unwrap();
        let loaded = load(dir.path()).unwrap().unwrap();
        assert!(usable(&loaded));
        assert_ne!(loaded.cert_pem, newer.cert_pem);
    }
}
