//! Who may call what: every RPC that reaches a manager over the network is checked here,
//! against the identity in the caller's certificate.
//!
//! TLS has already verified the certificate against the cluster root (a foreign CA or an
//! expired certificate never gets this far). What remains is the cluster and the role:
//!
//! | access      | no certificate | worker of this cluster | manager of this cluster |
//! |-------------|----------------|------------------------|-------------------------|
//! | `Managers`  | refused        | refused                | allowed                 |
//! | `Nodes`     | refused        | allowed                | allowed                 |
//! | `Joining`   | allowed        | allowed                | allowed                 |
//!
//! Raft and the remote Control API need `Managers`; the dispatcher `Nodes`; the CA calls a
//! joining node makes (`GetRootCACertificate`, `IssueNodeCertificate` with a token,
//! `NodeCertificateStatus`) `Joining`. Whatever the access, a certificate that *is* presented
//! must be within its dates, must belong to this cluster (its O names the cluster ID) and
//! must not be revoked: a
//! removed node's certificate stays in the cluster's list of revoked certificates until it
//! expires, so a removed node that reconnects is refused with a message saying so. For
//! `Managers`, the certificate's role is not enough: the cluster must still want the node
//! as a manager (its Node's desired role), so a demoted manager's old certificate is
//! refused at once.
//!
//! Calls on the local control socket do not come through here: the socket is owner-only
//! and trusted, as in SwarmKit.

use std::time::SystemTime;

use shoal_api::v1::{Cluster, Node, NodeRole};
use shoal_ca::NodeIdentity;
use shoal_store::{By, Reader, Store};
use tonic::{Request, Status};

/// What a call requires of its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// A manager certificate of this cluster.
    Managers,
    /// Any node certificate of this cluster.
    Nodes,
    /// Anyone, but a certificate, if presented, must be a valid one of this cluster.
    Joining,
}

/// Checks callers against this manager's cluster.
#[derive(Clone)]
pub struct Authorizer {
    store: Store,
    cluster_id: String,
}

fn role_name(role: NodeRole) -> &'static str {
    match role {
        NodeRole::Manager => "manager",
        NodeRole::Worker => "worker",
    }
}

impl Authorizer {
    pub fn new(store: Store, cluster_id: impl Into<String>) -> Self {
        Self {
            store,
            cluster_id: cluster_id.into(),
        }
    }

    /// The caller's identity, if it may make a call that requires `access`.
    pub fn check<T>(
        &self,
        request: &Request<T>,
        access: Access,
    ) -> Result<Option<NodeIdentity>, Status> {
        let identity = shoal_tls::peer(request).and_then(|p| p.identity.clone());
        let Some(identity) = identity else {
            return match access {
                Access::Joining => Ok(None),
                Access::Managers => Err(Status::unauthenticated(
                    "no client certificate: this call needs a manager certificate of this cluster",
                )),
                Access::Nodes => Err(Status::unauthenticated(
                    "no client certificate: this call needs a node certificate of this cluster; \
                     join the cluster with a token first",
                )),
            };
        };
        if identity.cluster_id != self.cluster_id {
            return Err(Status::permission_denied(format!(
                "the certificate of node {} belongs to cluster {}, not to this one ({})",
                identity.node_id, identity.cluster_id, self.cluster_id
            )));
        }
        // TLS checked the dates at the handshake; a connection can outlive them.
        if identity.not_after < SystemTime::now() {
            return Err(Status::unauthenticated(format!(
                "the certificate of node {} has expired; a node whose certificate expired must \
                 leave the cluster and join again with a token",
                identity.node_id
            )));
        }
        let (initialized, revoked, desired_role) = self.store.view(|tx| {
            let cluster = tx.find::<Cluster>(By::All).into_iter().next();
            let node = tx.get::<Node>(&identity.node_id);
            (
                cluster.is_some(),
                cluster.is_some_and(|c| c.blacklisted_certificates.contains_key(&identity.node_id)),
                node.and_then(|n| n.spec.as_ref().map(|s| s.desired_role)),
            )
        });
        if revoked {
            return Err(Status::permission_denied(format!(
                "node {} was removed from the cluster and its certificate is revoked; to come \
                 back, leave (`shoal swarm leave --force` on that node) and join again with a \
                 token",
                identity.node_id
            )));
        }
        if access == Access::Managers && identity.role != NodeRole::Manager {
            return Err(Status::permission_denied(format!(
                "node {} holds a {} certificate; this call is for managers only",
                identity.node_id,
                role_name(identity.role)
            )));
        }
        // A manager certificate outlives a demotion (until it expires): the cluster's word
        // counts. A manager whose store is still empty (it is joining and has not received
        // the first snapshot) cannot know yet, and goes by the certificate alone.
        if access == Access::Managers
            && initialized
            && desired_role != Some(NodeRole::Manager as i32)
        {
            return Err(Status::permission_denied(format!(
                "node {} is not a manager of this cluster (any more): its manager certificate \
                 no longer counts; it gets a worker certificate at its next renewal",
                identity.node_id
            )));
        }
        Ok(Some(identity))
    }

    /// A tonic interceptor that lets through only calls with `access`.
    pub fn interceptor(
        &self,
        access: Access,
    ) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone + Send + Sync + 'static
    {
        let authorizer = self.clone();
        move |request: Request<()>| {
            authorizer.check(&request, access)?;
            Ok(request)
        }
    }
}
