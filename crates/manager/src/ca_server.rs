//! The CA server: hands out the root certificate and signs node certificates for nodes that
//! present a valid join token.
//!
//! `CA.GetRootCACertificate` needs no credentials: a joining node checks the answer against
//! the digest in its token before trusting it. `NodeCA.IssueNodeCertificate` takes a CSR and
//! a join token; the token that matches decides the role. The CA assigns the node ID, signs a
//! certificate whose subject it sets itself (CN = node ID, OU = role, O = cluster ID), and
//! records the node, accepted, in the store.
//!
//! Without a token, a caller that presents its certificate *renews* it: the CA signs the new
//! CSR for the caller's own node ID, with the role the cluster assigned the node
//! (`spec.desired_role`, which promote and demote change) — never the role the caller would
//! like. A node that was removed is refused. Every call goes through the
//! [`Authorizer`](crate::authorize::Authorizer): anyone may join with a token, but a
//! certificate that is presented must be a valid, unrevoked one of this cluster.
//!
//! During a root rotation ([`crate::root_rotation`]) the CA signs with the *new* root's key
//! and hands every certificate out followed by the new root cross-signed by the old one, so
//! nodes that trust only the old root accept it; `GetRootCACertificate` still answers the
//! current (old) root, which the join tokens' digest names. A certificate is written to the
//! store only if the cluster still calls for the signer that made it (the write reads the
//! cluster, so a rotation committed meanwhile makes it conflict, and it is signed again): no
//! node is recorded with a certificate from a root the rotation left behind.
//!
//! Certificates last the cluster's `ca_config.node_cert_expiry` (90 days by default), which
//! `UpdateCluster` accepts down to one hour ([`minimum_node_cert_expiry`]).
//!
//! # Test knob
//!
//! Tests of what happens when certificates expire (a node that was off past its
//! certificate's end, renewal with short lifetimes) cannot wait an hour. The environment
//! variable `SHOAL_TEST_MINIMUM_CERT_EXPIRY` (a duration such as `5s`, `500ms`, `2m`),
//! read once by a manager's process, lowers that minimum — never raises it — so a test can
//! run `shoal swarm update --cert-expiry 10s`. It is for tests only: it is not a flag, no
//! help text names it, and a manager that has it set says so in its log. Unset (always, in
//! production), the minimum is one hour, as in SwarmKit.

use std::sync::OnceLock;
use std::time::Duration;

use shoal_api::v1::ca_server::Ca;
use shoal_api::v1::node_ca_server::NodeCa;
use shoal_api::v1::{
    Certificate, Cluster, GetRootCaCertificateRequest, GetRootCaCertificateResponse,
    GetUnlockKeyRequest, GetUnlockKeyResponse, IssuanceStatus, IssueNodeCertificateRequest,
    IssueNodeCertificateResponse, Meta, Node, NodeCertificateStatusRequest,
    NodeCertificateStatusResponse, NodeRole, NodeSpec, issuance_status, node_spec,
};
use shoal_ca::JoinToken;
use shoal_raft::RaftHandle;
use shoal_raft::service::{not_leader, to_status};
use shoal_store::{By, Reader, Store};

use crate::authorize::{Access, Authorizer};
use crate::root_rotation::Signer;
use tonic::{Request, Response, Status};

use crate::status::store_status;

/// The environment variable of the test knob that lowers the shortest certificate lifetime
/// (see the module notes).
pub const TEST_MINIMUM_CERT_EXPIRY_ENV: &str = "SHOAL_TEST_MINIMUM_CERT_EXPIRY";

/// The shortest node certificate lifetime `UpdateCluster` accepts:
/// [`defaults::MIN_NODE_CERT_EXPIRY`](shoal_api::defaults::MIN_NODE_CERT_EXPIRY), unless the
/// test knob `SHOAL_TEST_MINIMUM_CERT_EXPIRY` lowers it (read once per process).
pub fn minimum_node_cert_expiry() -> Duration {
    static MINIMUM: OnceLock<Duration> = OnceLock::new();
    *MINIMUM.get_or_init(|| {
        let value = std::env::var(TEST_MINIMUM_CERT_EXPIRY_ENV).ok();
        match minimum_from(value.as_deref()) {
            Ok(minimum) => {
                if value.is_some() {
                    tracing::warn!(
                        "test knob {TEST_MINIMUM_CERT_EXPIRY_ENV} is set: certificates may be made to \
                         last as little as {minimum:?} (never set it outside tests)"
                    );
                }
                minimum
            }
            Err(why) => {
                tracing::warn!(
                    "ignoring {TEST_MINIMUM_CERT_EXPIRY_ENV}: {why}; the shortest certificate \
                     lifetime stays {:?}",
                    shoal_api::defaults::MIN_NODE_CERT_EXPIRY
                );
                shoal_api::defaults::MIN_NODE_CERT_EXPIRY
            }
        }
    })
}

/// The minimum the test knob's `value` asks for: at most the default, never zero.
fn minimum_from(value: Option<&str>) -> Result<Duration, String> {
    let default = shoal_api::defaults::MIN_NODE_CERT_EXPIRY;
    let Some(value) = value.map(str::trim) else {
        return Ok(default);
    };
    let bad = || format!("{value:?} is not a duration such as 5s, 500ms or 2m");
    let split = value.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = value.split_at(split);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let asked = match unit {
        "ms" => Duration::from_millis(number),
        "s" => Duration::from_secs(number),
        "m" => Duration::from_secs(number.saturating_mul(60)),
        "h" => Duration::from_secs(number.saturating_mul(3600)),
        _ => return Err(bad()),
    };
    if asked.is_zero() {
        return Err(format!("{value:?} is no lifetime at all"));
    }
    Ok(asked.min(default))
}

/// The CA and NodeCA services of one manager.
#[derive(Clone)]
pub struct CaServer {
    store: Store,
    raft: RaftHandle,
    authorizer: Authorizer,
}

/// How many times an issuance that conflicted with another write of the cluster object (a
/// removal's revocation entry, a rotation, a setting) is signed and written again. Node
/// removals in a burst each rewrite the cluster object, so a join among them may conflict a
/// few times in a row.
const CONFLICT_RETRIES: u32 = 10;

/// A short, growing, jittered pause before trying a conflicted issuance again, so that
/// writers that conflicted together do not collide again.
async fn conflict_pause(attempt: u32) {
    let millis = rand::random_range(5..=20) * u64::from(attempt);
    tokio::time::sleep(std::time::Duration::from_millis(millis)).await;
}

impl CaServer {
    pub fn new(store: Store, raft: RaftHandle, authorizer: Authorizer) -> Self {
        Self {
            store,
            raft,
            authorizer,
        }
    }

    /// Who signs now (the root, or the new root during a rotation), the lifetime of node
    /// certificates, and the cluster ID.
    fn signer(cluster: &Cluster) -> Result<(Signer, std::time::Duration, String), Status> {
        let root = cluster
            .root_ca
            .as_ref()
            .ok_or_else(|| Status::internal("the cluster has no root CA"))?;
        let signer = Signer::of(root).map_err(|e| Status::internal(e.to_string()))?;
        let expiry = crate::cluster::node_cert_lifetime(cluster);
        let cluster_id = cluster
            .meta
            .as_ref()
            .map(|m| m.id.clone())
            .unwrap_or_default();
        Ok((signer, expiry, cluster_id))
    }

    /// Signs `csr` for `node_id` with `role`, as the record a Node keeps of its certificate,
    /// and the signer that signed it.
    fn sign(
        cluster: &Cluster,
        csr: Vec<u8>,
        node_id: &str,
        role: NodeRole,
    ) -> Result<(Box<Certificate>, Signer), Status> {
        let (signer, expiry, cluster_id) = Self::signer(cluster)?;
        let cert = signer
            .sign(
                &Self::csr_text(&csr)?,
                node_id,
                role,
                &cluster_id,
                std::time::SystemTime::now(),
                expiry,
            )
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok((
            Box::new(Certificate {
                role: role as i32,
                csr,
                status: Some(IssuanceStatus {
                    state: issuance_status::State::Issued as i32,
                    err: String::new(),
                }),
                certificate: cert.into_bytes(),
                cn: node_id.to_string(),
            }),
            signer,
        ))
    }

    /// Inside a write: refuses (as a conflict, which the caller retries after signing again)
    /// when the cluster no longer calls for `signer` — a root rotation started or completed
    /// since the certificate was signed. Reading the cluster by ID also makes the write
    /// conflict if the cluster changes before it commits.
    fn still_signing(
        tx: &shoal_store::WriteTx<'_>,
        cluster: &Cluster,
        signer: &Signer,
    ) -> shoal_store::Result<()> {
        let id = cluster.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("");
        let current = tx.get::<Cluster>(id);
        let same = current
            .as_ref()
            .and_then(|c| c.root_ca.as_ref())
            .is_some_and(|root| signer.is_current(root));
        if same {
            Ok(())
        } else {
            Err(shoal_store::StoreError::SequenceConflict {
                kind: "cluster",
                id: id.to_string(),
                read: cluster.meta.as_ref().map(|m| m.version).unwrap_or(0),
                current: current
                    .and_then(|c| c.meta.as_ref().map(|m| m.version))
                    .unwrap_or(0),
            })
        }
    }

    fn csr_text(csr: &[u8]) -> Result<String, Status> {
        String::from_utf8(csr.to_vec()).map_err(|_| {
            Status::invalid_argument("invalid certificate signing request: not PEM text")
        })
    }

    /// Signs a new certificate for the node that called, with the role the cluster assigned.
    async fn renew(
        &self,
        caller: shoal_ca::NodeIdentity,
        csr: Vec<u8>,
    ) -> Result<IssueNodeCertificateResponse, Status> {
        if !self.raft.status().is_leader {
            return Err(not_leader(&self.raft));
        }
        // The role comes from the store: read it after every earlier promotion or demotion.
        self.raft
            .read_barrier()
            .await
            .map_err(|e| to_status(&self.raft, e))?;
        let cluster = self.cluster()?;
        let node_id = caller.node_id.clone();
        let node = self
            .store
            .view(|tx| tx.get::<Node>(&node_id))
            .ok_or_else(|| {
                Status::permission_denied(format!(
                    "node {node_id} is not a member of this cluster any more; join again with a token"
                ))
            })?;
        let role = node
            .spec
            .as_ref()
            .and_then(|s| NodeRole::try_from(s.desired_role).ok())
            .unwrap_or(NodeRole::Worker);
        let membership = node.spec.as_ref().map(|s| s.membership).unwrap_or(0);
        // The node is read again inside the write: its session writes it too (status,
        // description), and a renewal must not fail because a heartbeat-driven write came
        // first. A conflict with a write already in flight — or a root rotation that started
        // or ended since signing — is tried again, signed afresh.
        let mut attempts = 0;
        let mut cluster = cluster;
        loop {
            let (certificate, signer) = Self::sign(&cluster, csr.clone(), &node_id, role)?;
            let written = self
                .store
                .update(|tx| {
                    Self::still_signing(tx, &cluster, &signer)?;
                    let Some(current) = tx.get::<Node>(&node_id) else {
                        return Err(shoal_store::StoreError::NotFound {
                            kind: "node",
                            what: node_id.clone(),
                        });
                    };
                    let mut updated = (*current).clone();
                    updated.role = role as i32;
                    updated.certificate = Some(certificate.clone());
                    tx.update(updated)
                })
                .await;
            match written {
                Ok(_) => break,
                Err(e)
                    if attempts < CONFLICT_RETRIES
                        && e.class() == shoal_store::ErrorClass::Conflict =>
                {
                    attempts += 1;
                    conflict_pause(attempts).await;
                    cluster = self.cluster()?;
                }
                Err(e) => return Err(store_status(e)),
            }
        }
        tracing::info!(node_id = %node_id, "renewed the certificate of node {node_id} as {role:?}");
        Ok(IssueNodeCertificateResponse {
            node_id,
            node_membership: membership,
        })
    }

    fn cluster(&self) -> Result<std::sync::Arc<Cluster>, Status> {
        self.store
            .view(|tx| tx.find::<Cluster>(By::All).into_iter().next())
            .ok_or_else(|| {
                Status::unavailable("this manager has no cluster object yet; retry shortly")
            })
    }

    /// The role `token` grants in `cluster`, or why it grants none.
    fn role_for(cluster: &Cluster, token: &str) -> Result<NodeRole, Status> {
        if token.is_empty() {
            return Err(Status::unauthenticated(
                "a join token is required to join this cluster",
            ));
        }
        let token = JoinToken::parse(token).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let root = cluster
            .root_ca
            .as_ref()
            .ok_or_else(|| Status::internal("the cluster has no root CA"))?;
        if token.ca_digest != root.ca_cert_hash {
            return Err(Status::permission_denied(
                "the join token was made for another cluster's CA; get a token from a manager of this cluster",
            ));
        }
        let tokens = root.join_tokens.clone().unwrap_or_default();
        let matches = |known: &str| JoinToken::parse(known).is_ok_and(|k| k.matches(&token));
        if matches(&tokens.manager) {
            Ok(NodeRole::Manager)
        } else if matches(&tokens.worker) {
            Ok(NodeRole::Worker)
        } else {
            Err(Status::permission_denied(
                "invalid join token: it matches no current token of this cluster (it may have been \
                 rotated); get the current one with `shoal swarm join-token worker|manager`",
            ))
        }
    }
}

#[tonic::async_trait]
impl Ca for CaServer {
    async fn get_root_ca_certificate(
        &self,
        request: Request<GetRootCaCertificateRequest>,
    ) -> Result<Response<GetRootCaCertificateResponse>, Status> {
        self.authorizer.check(&request, Access::Joining)?;
        let cluster = self.cluster()?;
        let root = cluster
            .root_ca
            .as_ref()
            .ok_or_else(|| Status::internal("the cluster has no root CA"))?;
        Ok(Response::new(GetRootCaCertificateResponse {
            certificate: root.ca_cert.clone(),
        }))
    }

    async fn get_unlock_key(
        &self,
        request: Request<GetUnlockKeyRequest>,
    ) -> Result<Response<GetUnlockKeyResponse>, Status> {
        self.authorizer.check(&request, Access::Managers)?;
        let cluster = self.cluster()?;
        Ok(Response::new(GetUnlockKeyResponse {
            unlock_key: crate::cluster::unlock_key(&cluster)
                .map(<[u8]>::to_vec)
                .unwrap_or_default(),
            version: cluster.meta.as_ref().map(|m| m.version).unwrap_or_default(),
        }))
    }
}

#[tonic::async_trait]
impl NodeCa for CaServer {
    async fn issue_node_certificate(
        &self,
        request: Request<IssueNodeCertificateRequest>,
    ) -> Result<Response<IssueNodeCertificateResponse>, Status> {
        let caller = self.authorizer.check(&request, Access::Joining)?;
        let request = request.into_inner();
        if request.token.is_empty()
            && let Some(caller) = caller
        {
            return Ok(Response::new(self.renew(caller, request.csr).await?));
        }
        // The tokens are read after a ReadIndex barrier: a leader elected a moment ago has
        // applied every rotation committed before, so a rotated token never slips through.
        self.raft
            .read_barrier()
            .await
            .map_err(|e| to_status(&self.raft, e))?;
        let cluster = self.cluster()?;
        let role = Self::role_for(&cluster, &request.token)?;
        let availability =
            node_spec::Availability::try_from(request.availability).map_err(|_| {
                Status::invalid_argument(format!(
                    "invalid availability {}; accepted: active, pause, drain",
                    request.availability
                ))
            })?;
        if !self.raft.status().is_leader {
            return Err(not_leader(&self.raft));
        }
        let node_id = shoal_api::id::new_id();
        let mut cluster = cluster;
        let mut role = role;
        let mut attempts = 0;
        loop {
            let (certificate, signer) = Self::sign(&cluster, request.csr.clone(), &node_id, role)?;
            let node = Node {
                meta: Some(Meta {
                    id: node_id.clone(),
                    ..Default::default()
                }),
                spec: Some(NodeSpec {
                    desired_role: role as i32,
                    membership: node_spec::Membership::Accepted as i32,
                    availability: availability as i32,
                    ..Default::default()
                }),
                role: role as i32,
                certificate: Some(certificate),
                ..Default::default()
            };
            let written = self
                .store
                .update(|tx| {
                    Self::still_signing(tx, &cluster, &signer)?;
                    tx.create(node)
                })
                .await;
            match written {
                Ok(()) => break,
                // The cluster changed meanwhile (a rotation, a token or a setting): check the
                // token and sign again with what the cluster says now.
                Err(e)
                    if attempts < CONFLICT_RETRIES
                        && e.class() == shoal_store::ErrorClass::Conflict =>
                {
                    attempts += 1;
                    conflict_pause(attempts).await;
                    cluster = self.cluster()?;
                    role = Self::role_for(&cluster, &request.token)?;
                }
                Err(e) => return Err(store_status(e)),
            }
        }
        Ok(Response::new(IssueNodeCertificateResponse {
            node_id,
            node_membership: node_spec::Membership::Accepted as i32,
        }))
    }

    async fn node_certificate_status(
        &self,
        request: Request<NodeCertificateStatusRequest>,
    ) -> Result<Response<NodeCertificateStatusResponse>, Status> {
        let caller = self.authorizer.check(&request, Access::Joining)?;
        if let Some(caller) = &caller
            && caller.role != NodeRole::Manager
            && caller.node_id != request.get_ref().node_id
        {
            return Err(Status::permission_denied(format!(
                "node {} may ask about its own certificate only",
                caller.node_id
            )));
        }
        self.raft
            .read_barrier()
            .await
            .map_err(|e| to_status(&self.raft, e))?;
        let node_id = request.into_inner().node_id;
        let node = self
            .store
            .view(|tx| tx.get::<Node>(&node_id))
            .ok_or_else(|| Status::not_found(format!("node {node_id} not found")))?;
        let certificate = node.certificate.as_deref().cloned().unwrap_or_default();
        Ok(Response::new(NodeCertificateStatusResponse {
            status: certificate.status.clone(),
            certificate: Some(certificate),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_knob_only_lowers_the_minimum_lifetime() {
        let hour = shoal_api::defaults::MIN_NODE_CERT_EXPIRY;
        assert_eq!(minimum_from(None), Ok(hour));
        assert_eq!(minimum_from(Some("5s")), Ok(Duration::from_secs(5)));
        assert_eq!(
            minimum_from(Some(" 500ms ")),
            Ok(Duration::from_millis(500))
        );
        assert_eq!(minimum_from(Some("2m")), Ok(Duration::from_secs(120)));
        // Never above the default.
        assert_eq!(minimum_from(Some("3h")), Ok(hour));
        for bad in ["", "5", "five", "5 parsecs", "-5s", "0s"] {
            let e = minimum_from(Some(bad)).unwrap_err();
            assert!(e.contains(&format!("{:?}", bad.trim())), "{bad}: {e}");
        }
    }
}
