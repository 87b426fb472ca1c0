//! Who may call what: every RPC that reaches a manager over the network is checked here,
//! against the identity in the caller's certificate.
//!
//! TLS has already verified the certificate against the cluster root (a foreign CA or an
//! expired certificate never gets this far). What remains is the cluster, the membership and
//! the role:
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
//! must be within its dates, must belong to this cluster (its O names the cluster ID), and
//! must belong to a **member**: a node the cluster's store holds. For `Managers`, the
//! certificate's role is not enough: the cluster must still want the node as a manager (its
//! Node's desired role), so a demoted manager's old certificate is refused at once.
//!
//! # Membership, not a list of revoked certificates
//!
//! Node IDs are never reused; a node's object is created in the transaction that records its
//! first certificate (the CA answers a join only once that is applied), and deleted when the
//! node is removed. So "the store holds node X" is what "X's certificates count" means, and a
//! removed node's certificate is refused however long it still has to live — without keeping
//! anything per removed node. The cluster's `blacklisted_certificates` remain, short-lived
//! and capped (see `controlapi/node.rs`, "Removal"): an entry lets a manager say "node X was
//! removed" rather than "X is not a member (removed?)", and lets a follower that has applied
//! the removal give that answer as final. Neither is needed to keep X out.
//!
//! Who may conclude that a node is not a member: only a manager whose store holds every
//! committed write — a leader that has applied an entry of its own term
//! (`RaftStatus::leader_caught_up`; [`Authorizer::with_raft`]). A follower, or a leader just
//! elected, may not have applied the commit that created a node that joined a moment ago:
//! there an unknown node is answered UNAVAILABLE ("not known here yet"), which every client of
//! a node retries (the agent's session, renewal, Raft streams, a joining manager's
//! `RaftMembership.Join`), and which lets nothing in. The final refusal — PERMISSION_DENIED,
//! "not a member of this cluster (removed?)", which makes an agent forget the cluster — comes
//! only from where the store is complete. A store with no cluster object yet (a manager
//! joining, before its first snapshot) cannot judge membership and goes by the certificate
//! alone, as before.
//!
//! This replaces a grace window on the certificate's `not_before` (let an unknown node in for
//! a minute or two after its certificate was issued, in case the store lags): the window
//! would compare two managers' clocks, would let a node removed within it back in, and would
//! need every removal kept on the list for its length. Deciding only where the store is known
//! to be complete needs no clock, has no window, and a full or pruned list cannot weaken it.
//! Its cost: a node's first call to a follower that has not applied its creation yet is
//! retried instead of served (the dispatcher already answers such a session UNAVAILABLE).
//!
//! Calls on the local control socket do not come through here: the socket is owner-only
//! and trusted, as in SwarmKit.
//!
//! # Departures from SwarmKit
//!
//! SwarmKit checks the certificate's role and organisation and its blacklist of removed
//! nodes, kept until each removed node's certificates expire (up to 90 days): with many nodes
//! joining and leaving, the cluster object grows until Raft refuses it (moby/moby#36792).
//! Here membership is the node object's existence and the list is bounded.

use std::sync::Arc;
use std::time::SystemTime;

use shoal_api::v1::{Cluster, Node, NodeRole};
use shoal_ca::NodeIdentity;
use shoal_raft::RaftHandle;
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
    /// Whether the store holds every committed write, so that a node it lacks is not a member.
    store_complete: Arc<dyn Fn() -> bool + Send + Sync>,
}

fn role_name(role: NodeRole) -> &'static str {
    match role {
        NodeRole::Manager => "manager",
        NodeRole::Worker => "worker",
    }
}

impl Authorizer {
    /// An authorizer over a store that holds every write there is (one not replicated, as in
    /// tests); a manager's is [`Authorizer::with_raft`].
    pub fn new(store: Store, cluster_id: impl Into<String>) -> Self {
        Self {
            store,
            cluster_id: cluster_id.into(),
            store_complete: Arc::new(|| true),
        }
    }

    /// The store is replicated by `raft`: it is known to hold every committed write only while
    /// this manager leads and has caught up (see the module notes).
    pub fn with_raft(self, raft: RaftHandle) -> Self {
        self.with_store_complete(move || raft.status().leader_caught_up)
    }

    /// Says, each time it is asked, whether the store holds every committed write.
    pub fn with_store_complete(self, complete: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        Self {
            store_complete: Arc::new(complete),
            ..self
        }
    }

    /// The caller's identity, if it may make a call that requires `access`.
    pub fn check<T>(
        &self,
        request: &Request<T>,
        access: Access,
    ) -> Result<Option<NodeIdentity>, Status> {
        let identity = shoal_tls::peer(request).and_then(|p| p.identity.clone());
        self.check_identity(identity, access)
    }

    /// [`Authorizer::check`], given the identity the caller's certificate carries (if any).
    pub fn check_identity(
        &self,
        identity: Option<NodeIdentity>,
        access: Access,
    ) -> Result<Option<NodeIdentity>, Status> {
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
        let (initialized, revoked, member, desired_role) = self.store.view(|tx| {
            let cluster = tx.find::<Cluster>(By::All).into_iter().next();
            let node = tx.get::<Node>(&identity.node_id);
            (
                cluster.is_some(),
                cluster.is_some_and(|c| c.blacklisted_certificates.contains_key(&identity.node_id)),
                node.is_some(),
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
        if initialized && !member {
            return Err(if (self.store_complete)() {
                Status::permission_denied(format!(
                    "node {} is not a member of this cluster (removed?): the cluster has no node \
                     with this ID, so its certificate no longer counts; leave (`shoal swarm \
                     leave --force` on that node) and join again with a token",
                    identity.node_id
                ))
            } else {
                Status::unavailable(format!(
                    "this manager does not know node {} (yet): it may have joined a moment ago, \
                     before this manager caught up; retry, or ask the leader",
                    identity.node_id
                ))
            });
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use shoal_api::v1::{Meta, NodeSpec};
    use tonic::Code;

    use super::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a test runtime")
            .block_on(f)
    }

    fn node(id: &str, desired: NodeRole) -> Node {
        Node {
            meta: Some(Meta {
                id: id.into(),
                ..Default::default()
            }),
            spec: Some(NodeSpec {
                desired_role: desired as i32,
                ..Default::default()
            }),
            role: desired as i32,
            ..Default::default()
        }
    }

    /// A store with the cluster, manager `m1`, worker `w1`, a manager `d1` the cluster wants
    /// as a worker now, and node `gone` on the revocation list.
    fn cluster_store() -> (Store, String) {
        let store = Store::new();
        let mut cluster = crate::cluster::new_cluster(SystemTime::now()).unwrap();
        cluster.blacklisted_certificates.insert(
            "gone".into(),
            shoal_api::v1::BlacklistedCertificate {
                expiry: Some((SystemTime::now() + Duration::from_secs(3600)).into()),
            },
        );
        let cluster_id = cluster.meta.as_ref().unwrap().id.clone();
        block_on(store.update(|tx| {
            tx.create(cluster)?;
            tx.create(node("m1", NodeRole::Manager))?;
            tx.create(node("w1", NodeRole::Worker))?;
            tx.create(node("d1", NodeRole::Worker))
        }))
        .unwrap();
        (store, cluster_id)
    }

    fn identity(node_id: &str, role: NodeRole, cluster_id: &str) -> NodeIdentity {
        let now = SystemTime::now();
        NodeIdentity {
            node_id: node_id.into(),
            role,
            cluster_id: cluster_id.into(),
            not_before: now - Duration::from_secs(3600),
            not_after: now + Duration::from_secs(3600),
        }
    }

    fn refused(result: Result<Option<NodeIdentity>, Status>, code: Code, says: &str) {
        let status = result.expect_err("refused");
        assert_eq!(status.code(), code, "{status:?}");
        assert!(status.message().contains(says), "{status:?}");
    }

    #[test]
    fn members_get_in_by_role_and_everyone_else_is_refused_saying_why() {
        let (store, cid) = cluster_store();
        let auth = Authorizer::new(store, cid.clone());
        let check =
            |id: &str, role, access| auth.check_identity(Some(identity(id, role, &cid)), access);
        use Access::{Joining, Managers, Nodes};
        use NodeRole::{Manager, Worker};

        assert!(check("m1", Manager, Managers).is_ok());
        assert!(check("w1", Worker, Nodes).is_ok());
        assert!(check("w1", Worker, Joining).is_ok());
        assert_eq!(auth.check_identity(None, Joining).unwrap(), None);
        refused(
            auth.check_identity(None, Nodes),
            Code::Unauthenticated,
            "join",
        );
        refused(
            check("w1", Worker, Managers),
            Code::PermissionDenied,
            "managers only",
        );
        // A demoted manager's manager certificate: the cluster's word counts.
        refused(
            check("d1", Manager, Managers),
            Code::PermissionDenied,
            "not a manager",
        );
        // On the list: said explicitly.
        refused(
            check("gone", Worker, Nodes),
            Code::PermissionDenied,
            "was removed",
        );
        // Not a member, not on the list: still refused, whatever the access.
        for access in [Managers, Nodes, Joining] {
            refused(
                check("stranger", Manager, access),
                Code::PermissionDenied,
                "node stranger is not a member of this cluster (removed?)",
            );
        }
        let e = check("stranger", Worker, Nodes).unwrap_err();
        assert!(e.message().contains("join again with a token"), "{e:?}");
        // Another cluster, or expired (a connection can outlive its certificate).
        refused(
            auth.check_identity(Some(identity("m1", Manager, "other")), Nodes),
            Code::PermissionDenied,
            "belongs to cluster other",
        );
        let mut expired = identity("w1", Worker, &cid);
        expired.not_after = SystemTime::now() - Duration::from_secs(1);
        refused(
            auth.check_identity(Some(expired), Nodes),
            Code::Unauthenticated,
            "has expired",
        );
    }

    #[test]
    fn only_a_complete_store_says_a_node_is_not_a_member() {
        let (store, cid) = cluster_store();
        let complete = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = complete.clone();
        let auth = Authorizer::new(store, cid.clone())
            .with_store_complete(move || flag.load(std::sync::atomic::Ordering::SeqCst));
        let stranger = || Some(identity("stranger", NodeRole::Worker, &cid));
        // A follower (or a leader still catching up) may lack a node that just joined:
        // not final, and nothing is let in.
        refused(
            auth.check_identity(stranger(), Access::Nodes),
            Code::Unavailable,
            "does not know node stranger (yet)",
        );
        // The revocation list is final anywhere; members are unaffected.
        refused(
            auth.check_identity(
                Some(identity("gone", NodeRole::Worker, &cid)),
                Access::Nodes,
            ),
            Code::PermissionDenied,
            "was removed",
        );
        assert!(
            auth.check_identity(Some(identity("w1", NodeRole::Worker, &cid)), Access::Nodes)
                .is_ok()
        );
        complete.store(true, std::sync::atomic::Ordering::SeqCst);
        refused(
            auth.check_identity(stranger(), Access::Nodes),
            Code::PermissionDenied,
            "not a member",
        );
    }

    #[test]
    fn a_store_without_a_cluster_goes_by_the_certificate() {
        // A manager that is joining, before its first snapshot.
        let auth = Authorizer::new(Store::new(), "c1");
        let id = identity("anyone", NodeRole::Manager, "c1");
        assert_eq!(
            auth.check_identity(Some(id.clone()), Access::Managers)
                .unwrap(),
            Some(id)
        );
    }
}
