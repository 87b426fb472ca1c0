//! Nodes: get, list, update (availability, labels, promotion and demotion) and remove — what
//! `shoal node inspect | ls | update | promote | demote | rm` call.
//!
//! A node object is written by three parties: the CA (it creates the node when it signs its
//! first certificate, and sets `role` when it renews one), the dispatcher (`status`), and
//! these calls (`spec`, and the consequences of a role change). Reads are rendered with the
//! node's `manager_status` taken from the Raft membership at the time of the read, so it is
//! never stale: Raft, not the store, knows who the managers are.
//!
//! # Role changes
//!
//! - **Promote** (desired role worker → manager) sets `spec.desired_role = MANAGER` and marks
//!   the node's certificate `RENEW`. Nothing else happens here: the node renews its
//!   certificate, the CA signs it with the desired role (so `role` becomes MANAGER), and the
//!   node, now holding a manager certificate, joins Raft.
//! - **Demote** (manager → worker) is refused when it would leave the cluster without a
//!   manager, or without quorum: after the node leaves Raft, the reachable voters must still be
//!   a majority of the remaining voters. Otherwise its Raft member is removed first, then one
//!   store transaction sets `spec.desired_role` and `role` to WORKER, clears `manager_status`
//!   and marks the certificate `RENEW`, so the node gets a worker certificate back.
//! - **Demoting the leader** (the node this manager runs on): a leader cannot remove itself
//!   and keep serving, so it hands leadership to another manager, waits (at most two election
//!   timeouts) until it has moved, and answers FailedPrecondition naming the new leader, with
//!   its address in the `shoal-leader-addr` metadata — the same answer any follower gives to a
//!   write. The client retries there, with the same `node_version` (nothing was written), and
//!   the new leader demotes this node like any other.
//!
//! # Removal
//!
//! A node that is a manager (by role, desired role or Raft membership) must be demoted first,
//! whatever `force` says: removing a Raft member by deleting its node object would leave a
//! voter nobody can see. A node whose status is READY is refused unless `force`.
//!
//! Deleting the node object is what revokes its certificates: the authorizer lets in only
//! certificates of nodes the store holds (`authorize.rs`, "Membership"), and node IDs are
//! never reused, so every certificate the node holds — however long it still has to live —
//! stops counting once the deletion is applied. In the same transaction the node gets an
//! entry in the cluster's `blacklisted_certificates`, which only serves the message: a
//! removed node that calls back is told "node X was removed", and a follower that has
//! applied the removal can say so as a final answer. So the list is kept short:
//!
//! - an entry lasts [`REVOCATION_NOTICE`] (a day) from the removal, time being the store's
//!   clock (`WriteTx::now`); entries past their expiry are pruned at each removal;
//! - the list holds at most [`MAX_BLACKLISTED_CERTIFICATES`] (1,000) entries: beyond, the
//!   entries that expire first (the oldest removals) are dropped.
//!
//! The cluster object, which every snapshot and every read of the cluster carries, therefore
//! stays around 40 KB at most however many nodes come and go (a removed node after its entry
//! is gone is still refused, as "not a member of this cluster (removed?)"). Since every
//! removal rewrites the cluster object, concurrent removals conflict when applied; a removal
//! names no version, so it is built again on a fresh view (a few times) rather than failing.
//!
//! # Invariants
//!
//! - Every write names the version the client read (`node_version`); a stale one is refused
//!   before anything — Raft membership included — is changed.
//! - A manager is never demoted or removed in a way that leaves the cluster without a manager
//!   or, as far as this manager can tell, without quorum. The Raft layer checks quorum again,
//!   exactly (per member), when the member is removed.
//! - Writes happen on the leader only; reads and the checks before writes follow a ReadIndex
//!   barrier, so they see every write committed before the call.
//!
//! # Departures from SwarmKit
//!
//! - SwarmKit's `UpdateNode` only records the desired role; a separate role manager later
//!   removes the Raft member and changes `role`. Shoal has no role manager yet, so the call
//!   does it synchronously: when it answers, the node has left Raft. The check that a demotion
//!   keeps quorum is SwarmKit's (`CanRemoveMember`).
//! - Per-member reachability is not published by the Raft driver (only the number of voters
//!   heard from recently). `manager_status.reachability` is therefore REACHABLE for this
//!   manager and the leader, and for every member when the leader has heard from all of them;
//!   UNREACHABLE for the others when the leader has heard from none; UNKNOWN otherwise. The
//!   demotion check uses the same knowledge; when the target's reachability is unknown it
//!   assumes the case most favourable to the demotion and leaves the final word to the Raft
//!   layer, which refuses a removal that would lose quorum from exact per-member data.
//! - Node calls take the node's full ID (as SwarmKit's do); the command line resolves names.
//! - Membership cannot go back from ACCEPTED to PENDING.
//! - The handlers are written against a small trait over Raft ([`NodeRaft`]) rather than the
//!   `RaftHandle` itself, so their decisions can be tested on a store without running Raft.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use shoal_api::labels::Labels;
use shoal_api::v1::{
    BlacklistedCertificate, Cluster, GetNodeRequest, GetNodeResponse, IssuanceStatus, ListFilters,
    ListNodesRequest, ListNodesResponse, ManagerStatus, Node, NodeRole, NodeSpec, RaftMember,
    RemoveNodeRequest, RemoveNodeResponse, UpdateNodeRequest, UpdateNodeResponse, issuance_status,
    manager_status::Reachability, node_spec, node_status,
};
use shoal_api::{defaults, validation};
use shoal_raft::service::{not_leader, to_status};
use shoal_raft::{RaftError, RaftHandle, RaftStatus};
use shoal_store::{By, Reader, Store, StoreError, StoreObject};
use tonic::Status;

use super::{ControlApi, label_filter_matches};
use crate::status::store_status;

// --- What the node calls need from Raft -----------------------------------------------------

/// The Raft operations the node calls use: [`RaftHandle`] in a manager, a scripted stand-in in
/// tests.
pub(super) trait NodeRaft: Sync {
    /// The latest Raft status.
    fn status(&self) -> RaftStatus;
    /// The answer to a write that reached a manager that is not the leader.
    fn not_leader(&self) -> Status;
    /// A Raft error as a gRPC status.
    fn to_status(&self, e: RaftError) -> Status;
    /// Resolves once the local store holds every write committed before the call.
    fn read_barrier(&self) -> impl Future<Output = Result<(), RaftError>> + Send;
    /// Removes a voter; the Raft layer refuses it if it would lose quorum.
    fn remove_member(&self, raft_id: u64) -> impl Future<Output = Result<(), RaftError>> + Send;
    /// Hands leadership to another manager; resolves to whether it moved in time.
    fn hand_over_leadership(&self) -> impl Future<Output = Result<bool, RaftError>> + Send;
}

/// How long a leader that demotes itself waits for leadership to move: two election timeouts
/// (raft-rs gives up a transfer after one).
const HANDOVER_LIMIT: Duration = Duration::from_millis(
    2 * defaults::RAFT_TICK_INTERVAL.as_millis() as u64 * defaults::RAFT_ELECTION_TICK as u64,
);

impl NodeRaft for RaftHandle {
    fn status(&self) -> RaftStatus {
        RaftHandle::status(self)
    }

    fn not_leader(&self) -> Status {
        not_leader(self)
    }

    fn to_status(&self, e: RaftError) -> Status {
        to_status(self, e)
    }

    fn read_barrier(&self) -> impl Future<Output = Result<(), RaftError>> + Send {
        RaftHandle::read_barrier(self)
    }

    fn remove_member(&self, raft_id: u64) -> impl Future<Output = Result<(), RaftError>> + Send {
        RaftHandle::remove_member(self, raft_id)
    }

    async fn hand_over_leadership(&self) -> Result<bool, RaftError> {
        let me = RaftHandle::status(self).id;
        self.transfer_leadership().await?;
        let mut statuses = self.watch_status();
        let moved = statuses.wait_for(|s| !s.is_leader && s.leader.is_some_and(|l| l != me));
        Ok(tokio::time::timeout(HANDOVER_LIMIT, moved)
            .await
            .is_ok_and(|r| r.is_ok()))
    }
}

// --- Pure decisions --------------------------------------------------------------------------

/// What an update does to a node's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RoleChange {
    Unchanged,
    Promote,
    Demote,
}

fn role_of(value: i32) -> NodeRole {
    NodeRole::try_from(value).unwrap_or(NodeRole::Worker)
}

/// Classifies an update from the node's desired role and current (certificate) role to the
/// requested desired role. A node is a manager, for demotion, if either role says so: that
/// also cancels a promotion whose certificate has not been renewed yet.
fn role_change(desired: NodeRole, role: NodeRole, requested: NodeRole) -> RoleChange {
    match requested {
        NodeRole::Manager if desired != NodeRole::Manager => RoleChange::Promote,
        NodeRole::Worker if desired == NodeRole::Manager || role == NodeRole::Manager => {
            RoleChange::Demote
        }
        _ => RoleChange::Unchanged,
    }
}

/// What a demotion is judged on.
#[derive(Clone, Copy, Debug)]
struct DemotionFacts {
    /// Nodes other than the one demoted whose desired role is manager.
    other_managers: usize,
    /// If the node is a Raft voter: how reachable it is, as far as this manager knows.
    member: Option<Reachability>,
    /// Raft voters, and those heard from recently (this manager included).
    voters: usize,
    reachable: usize,
}

/// Refuses a demotion that would leave the cluster without a manager or without quorum.
///
/// Quorum: after the node leaves, the remaining voters need a majority of them reachable.
/// A reachable node takes its vote with it; an unreachable one does not. When its
/// reachability is unknown, it is counted as unreachable (the case most favourable to the
/// demotion) and the Raft layer's exact check decides.
fn check_demotion(node_id: &str, f: &DemotionFacts) -> Result<(), Status> {
    if f.other_managers == 0 || (f.member.is_some() && f.voters <= 1) {
        return Err(Status::failed_precondition(format!(
            "node {node_id} is the last manager of the cluster, which needs at least one; \
             promote another node first (`shoal node promote NODE`), then demote {node_id}"
        )));
    }
    let Some(reach) = f.member else {
        return Ok(());
    };
    let remaining = f.voters - 1;
    let reachable = f.reachable.min(f.voters);
    let reachable_after = if reach == Reachability::Reachable {
        reachable.saturating_sub(1)
    } else {
        reachable
    };
    let needed = remaining / 2 + 1;
    if reachable_after < needed {
        return Err(Status::failed_precondition(format!(
            "demoting node {node_id} would break quorum: {reachable_after} of the {remaining} \
             remaining managers would be reachable and {needed} are needed; bring the \
             unreachable managers back (or demote an unreachable one) first, then retry"
        )));
    }
    Ok(())
}

/// Refuses removing a manager (whatever `force` says) or, without `force`, a node that is up.
fn check_removal(node: &Node, is_raft_member: bool, force: bool) -> Result<(), Status> {
    let id = node.id();
    let desired = node.spec.as_ref().map(|s| s.desired_role).unwrap_or(0);
    if is_raft_member
        || role_of(desired) == NodeRole::Manager
        || role_of(node.role) == NodeRole::Manager
    {
        return Err(Status::failed_precondition(format!(
            "node {id} is a manager and must be demoted first: run `shoal node demote {id}`, \
             then remove it (--force does not skip this; removing a manager without demoting \
             it would leave the Raft cluster with a member nobody can see)"
        )));
    }
    let state = node.status.as_ref().map(|s| s.state).unwrap_or(0);
    if state == node_status::State::Ready as i32 && !force {
        return Err(Status::failed_precondition(format!(
            "node {id} is up; stop it (or run `shoal swarm leave` on it) first, or use --force \
             to remove it anyway"
        )));
    }
    Ok(())
}

fn is_past(t: &prost_types::Timestamp, now: &prost_types::Timestamp) -> bool {
    (t.seconds, t.nanos) < (now.seconds, now.nanos)
}

/// How long a removed node stays on the cluster's revocation list. The entry is not what
/// keeps the node out (its node object being gone is); it lets a node that comes back the
/// same day hear plainly that it was removed.
pub(crate) const REVOCATION_NOTICE: Duration = Duration::from_secs(24 * 3600);

/// The most entries the revocation list holds, whatever the churn: a hard bound on the size
/// of the cluster object (about 38 bytes an entry).
pub(crate) const MAX_BLACKLISTED_CERTIFICATES: usize = 1000;

/// How many times a removal is built again after conflicting with a concurrent write.
const REMOVAL_ATTEMPTS: usize = 10;

/// Drops the entries that expired before `now`. Entries without an expiry are kept; this
/// module never writes one.
fn prune_blacklist(
    list: &mut BTreeMap<String, BlacklistedCertificate>,
    now: &prost_types::Timestamp,
) {
    list.retain(|_, c| c.expiry.as_ref().is_none_or(|e| !is_past(e, now)));
}

/// Drops entries until at most `max` remain: those that expire first (the oldest removals),
/// entries without an expiry last, equal expiries by node ID.
fn cap_blacklist(list: &mut BTreeMap<String, BlacklistedCertificate>, max: usize) {
    if list.len() <= max {
        return;
    }
    let mut by_expiry: Vec<((i64, i32), String)> = list
        .iter()
        .map(|(id, c)| {
            let expiry = c
                .expiry
                .as_ref()
                .map_or((i64::MAX, i32::MAX), |e| (e.seconds, e.nanos));
            (expiry, id.clone())
        })
        .collect();
    by_expiry.sort_unstable();
    for (_, id) in by_expiry.into_iter().take(list.len() - max) {
        list.remove(&id);
    }
}

/// Puts `node_id` on the revocation list at `now`, keeping the list short (see the module
/// notes): expired entries pruned, at most [`MAX_BLACKLISTED_CERTIFICATES`].
fn revoke(
    list: &mut BTreeMap<String, BlacklistedCertificate>,
    node_id: &str,
    now: &prost_types::Timestamp,
) {
    prune_blacklist(list, now);
    let now_time = SystemTime::try_from(*now).unwrap_or(SystemTime::UNIX_EPOCH);
    list.insert(
        node_id.to_string(),
        BlacklistedCertificate {
            expiry: Some((now_time + REVOCATION_NOTICE).into()),
        },
    );
    cap_blacklist(list, MAX_BLACKLISTED_CERTIFICATES);
}

/// How reachable Raft member `raft_id` is, as far as this manager can tell (see the module
/// notes: the driver publishes how many voters were heard from, not which).
fn reachability(status: &RaftStatus, raft_id: u64) -> Reachability {
    if (raft_id == status.id && !status.removed) || status.leader == Some(raft_id) {
        // This manager answers; the leader is the one this manager hears from.
        Reachability::Reachable
    } else if status.is_leader && status.reachable >= status.voters {
        Reachability::Reachable
    } else if status.is_leader && status.reachable <= 1 {
        Reachability::Unreachable
    } else {
        Reachability::Unknown
    }
}

/// The Raft members by node ID.
fn members_by_node(status: &RaftStatus) -> BTreeMap<&str, &RaftMember> {
    status
        .members
        .values()
        .filter(|m| !m.node_id.is_empty())
        .map(|m| (m.node_id.as_str(), m))
        .collect()
}

/// The node as clients see it: `manager_status` from the Raft membership, none for nodes
/// that are not members.
fn render(node: &Node, status: &RaftStatus, members: &BTreeMap<&str, &RaftMember>) -> Node {
    let mut shown = node.clone();
    shown.manager_status = members.get(node.id()).map(|m| {
        Box::new(ManagerStatus {
            raft_id: m.raft_id,
            addr: m.addr.clone(),
            leader: status.leader == Some(m.raft_id),
            reachability: reachability(status, m.raft_id) as i32,
        })
    });
    shown
}

fn names_of(node: &Node) -> [&str; 2] {
    let spec_name = node
        .spec
        .as_ref()
        .and_then(|s| s.annotations.as_ref())
        .map(|a| a.name.as_str())
        .unwrap_or("");
    let hostname = node
        .description
        .as_ref()
        .map(|d| d.hostname.as_str())
        .unwrap_or("");
    [spec_name, hostname]
}

/// Whether a node passes every filter that is set. Names match the spec's name or the
/// hostname; labels are the node's labels (`spec.annotations`); roles the node's current role.
fn node_matches(node: &Node, f: &ListFilters, roles: &[i32], memberships: &[i32]) -> bool {
    let names = names_of(node);
    let labels = node
        .spec
        .as_ref()
        .and_then(|s| s.annotations.as_ref())
        .map(|a| a.labels.as_slice())
        .unwrap_or(&[]);
    let membership = node.spec.as_ref().map(|s| s.membership).unwrap_or(0);
    let id = node.id();
    (f.names.is_empty()
        || names
            .iter()
            .any(|n| !n.is_empty() && f.names.iter().any(|w| w == n)))
        && (f.name_prefixes.is_empty()
            || names.iter().any(|n| {
                !n.is_empty() && f.name_prefixes.iter().any(|p| n.starts_with(p.as_str()))
            }))
        && (f.id_prefixes.is_empty() || f.id_prefixes.iter().any(|p| id.starts_with(p.as_str())))
        && label_filter_matches(labels, &f.labels)
        && (roles.is_empty() || roles.contains(&node.role))
        && (memberships.is_empty() || memberships.contains(&membership))
}

/// Refuses enum values in list filters that name nothing (they would silently match nothing).
fn check_list_request(request: &ListNodesRequest) -> Result<(), Status> {
    for (i, r) in request.roles.iter().enumerate() {
        if NodeRole::try_from(*r).is_err() {
            return Err(Status::invalid_argument(format!(
                "invalid roles[{i}]: {r} is not a node role; use worker or manager"
            )));
        }
    }
    for (i, m) in request.memberships.iter().enumerate() {
        if node_spec::Membership::try_from(*m).is_err() {
            return Err(Status::invalid_argument(format!(
                "invalid memberships[{i}]: {m} is not a membership; use pending or accepted"
            )));
        }
    }
    Ok(())
}

/// The spec of an update request, validated (enum values name their field), labels in
/// canonical order.
fn checked_spec(spec: Option<NodeSpec>) -> Result<NodeSpec, Status> {
    let mut spec = spec.ok_or_else(|| {
        Status::invalid_argument(
            "invalid spec: a node spec is required; send the node's spec as read, with your \
             changes",
        )
    })?;
    validation::validate_node_spec(&spec).map_err(|e| Status::invalid_argument(e.to_string()))?;
    if let Some(a) = spec.annotations.as_mut() {
        a.labels.normalize_labels();
    }
    Ok(spec)
}

fn check_node_id(node_id: &str) -> Result<(), Status> {
    if node_id.is_empty() {
        return Err(Status::invalid_argument(
            "invalid node_id: a node ID is required; `shoal node ls` lists them",
        ));
    }
    Ok(())
}

fn node_not_found(node_id: &str) -> StoreError {
    StoreError::NotFound {
        kind: "node",
        what: node_id.to_string(),
    }
}

fn not_found_status(node_id: &str) -> Status {
    Status::not_found(format!(
        "node {node_id} not found; `shoal node ls` lists the nodes of the cluster (use the \
         full node ID)"
    ))
}

/// Refuses an update based on a version that is not the node's current one.
fn check_version(node: &Node, version: u64) -> Result<(), Status> {
    if node.version() != version {
        return Err(store_status(StoreError::SequenceConflict {
            kind: "node",
            id: node.id().to_string(),
            read: version,
            current: node.version(),
        }));
    }
    Ok(())
}

/// Membership only moves forward: an accepted node cannot be made pending again.
fn check_membership(node: &Node, spec: &NodeSpec) -> Result<(), Status> {
    let current = node.spec.as_ref().map(|s| s.membership).unwrap_or(0);
    if current == node_spec::Membership::Accepted as i32
        && spec.membership == node_spec::Membership::Pending as i32
    {
        return Err(Status::invalid_argument(format!(
            "invalid spec.membership: node {} is already accepted and cannot be made pending \
             again; send membership ACCEPTED (remove the node to take it out of the cluster)",
            node.id()
        )));
    }
    Ok(())
}

/// Asks the node to renew its certificate (its agent sees this and sends a new CSR).
fn mark_renew(node: &mut Node) {
    node.certificate.get_or_insert_with(Default::default).status = Some(IssuanceStatus {
        state: issuance_status::State::Renew as i32,
        err: String::new(),
    });
}

/// The role fields of a demoted node.
fn mark_demoted(node: &mut Node) {
    node.spec.get_or_insert_with(Default::default).desired_role = NodeRole::Worker as i32;
    node.role = NodeRole::Worker as i32;
    node.manager_status = None;
    mark_renew(node);
}

// --- The calls ---------------------------------------------------------------------------------

/// The node calls, over a store and a Raft.
pub(super) struct Nodes<'a, R> {
    pub(super) store: &'a Store,
    pub(super) raft: &'a R,
}

impl<R: NodeRaft> Nodes<'_, R> {
    fn require_leader(&self) -> Result<(), Status> {
        if self.raft.status().is_leader {
            Ok(())
        } else {
            Err(self.raft.not_leader())
        }
    }

    async fn linearize(&self) -> Result<(), Status> {
        self.raft
            .read_barrier()
            .await
            .map_err(|e| self.raft.to_status(e))
    }

    fn rendered(&self, node: &Node) -> Node {
        let status = self.raft.status();
        render(node, &status, &members_by_node(&status))
    }

    pub(super) async fn get(&self, request: GetNodeRequest) -> Result<GetNodeResponse, Status> {
        check_node_id(&request.node_id)?;
        self.linearize().await?;
        let node = self
            .store
            .view(|tx| tx.get::<Node>(&request.node_id))
            .ok_or_else(|| not_found_status(&request.node_id))?;
        Ok(GetNodeResponse {
            node: Some(self.rendered(&node)),
        })
    }

    pub(super) async fn list(
        &self,
        request: ListNodesRequest,
    ) -> Result<ListNodesResponse, Status> {
        check_list_request(&request)?;
        self.linearize().await?;
        let filters = request.filters.clone().unwrap_or_default();
        let status = self.raft.status();
        let members = members_by_node(&status);
        let nodes = self.store.view(|tx| {
            tx.find::<Node>(By::All)
                .iter()
                .filter(|n| node_matches(n, &filters, &request.roles, &request.memberships))
                .map(|n| render(n, &status, &members))
                .collect()
        });
        Ok(ListNodesResponse { nodes })
    }

    pub(super) async fn update(
        &self,
        request: UpdateNodeRequest,
    ) -> Result<UpdateNodeResponse, Status> {
        check_node_id(&request.node_id)?;
        let spec = checked_spec(request.spec)?;
        self.require_leader()?;
        self.linearize().await?;
        let id = request.node_id.as_str();
        let version = request.node_version;
        let node = self
            .store
            .view(|tx| tx.get::<Node>(id))
            .ok_or_else(|| not_found_status(id))?;
        check_version(&node, version)?;
        check_membership(&node, &spec)?;
        let desired = role_of(node.spec.as_ref().map(|s| s.desired_role).unwrap_or(0));
        let change = role_change(desired, role_of(node.role), role_of(spec.desired_role));
        if change == RoleChange::Demote {
            return self.demote(&node, version, spec).await;
        }
        let promote = change == RoleChange::Promote;
        let updated = self
            .write(id, version, |n| {
                n.spec = Some(spec);
                if promote {
                    mark_renew(n);
                }
            })
            .await
            .map_err(store_status)?;
        if promote {
            tracing::info!(node_id = %id, "node {id} promoted: it renews its certificate as a manager");
        }
        Ok(UpdateNodeResponse {
            node: updated.map(|n| self.rendered(&n)),
        })
    }

    /// Writes `change` to node `id` read at `version`; the node as stored afterwards.
    async fn write(
        &self,
        id: &str,
        version: u64,
        change: impl FnOnce(&mut Node),
    ) -> Result<Option<Arc<Node>>, StoreError> {
        self.store
            .update(|tx| {
                let current = tx.get::<Node>(id).ok_or_else(|| node_not_found(id))?;
                let mut updated = (*current).clone();
                updated.meta.get_or_insert_with(Default::default).version = version;
                change(&mut updated);
                tx.update(updated)
            })
            .await?;
        Ok(self.store.view(|tx| tx.get::<Node>(id)))
    }

    async fn demote(
        &self,
        node: &Node,
        version: u64,
        spec: NodeSpec,
    ) -> Result<UpdateNodeResponse, Status> {
        let id = node.id();
        let status = self.raft.status();
        let member = members_by_node(&status).get(id).map(|m| (*m).clone());
        let other_managers = self.store.view(|tx| {
            tx.find::<Node>(By::Role(NodeRole::Manager))
                .iter()
                .filter(|n| n.id() != id)
                .count()
        });
        let facts = DemotionFacts {
            other_managers,
            member: member.as_ref().map(|m| reachability(&status, m.raft_id)),
            voters: status.voters,
            reachable: status.reachable,
        };
        check_demotion(id, &facts)?;
        if let Some(m) = &member {
            if m.raft_id == status.id {
                return Err(self.hand_over(id).await);
            }
            self.raft
                .remove_member(m.raft_id)
                .await
                .map_err(|e| match e {
                    RaftError::Membership(_) => {
                        Status::failed_precondition(format!("cannot demote node {id}: {e}"))
                    }
                    other => self.raft.to_status(other),
                })?;
            tracing::info!(node_id = %id, raft_id = m.raft_id, "node {id} left the Raft cluster (demoted)");
        }
        let with_spec = self
            .write(id, version, |n| {
                n.spec = Some(spec.clone());
                mark_demoted(n);
            })
            .await;
        let updated = match with_spec {
            Ok(n) => n,
            Err(e) if e.is_conflict() && member.is_some() => {
                // The node left Raft already: the store must say so, even though the node
                // changed meanwhile (its certificate is renewed for the new role, its status
                // moves). Record the demotion on its current version; if the call asked for
                // nothing else, that is all it asked, otherwise tell the caller the rest of
                // the spec was not applied.
                self.record_demotion(id).await?;
                let without_role = |s: &NodeSpec| NodeSpec {
                    desired_role: 0,
                    ..s.clone()
                };
                let asked_only_the_role =
                    without_role(&spec) == without_role(&node.spec.clone().unwrap_or_default());
                if asked_only_the_role {
                    let current = self.store.view(|tx| tx.get::<Node>(id));
                    return Ok(UpdateNodeResponse {
                        node: current.map(|n| self.rendered(&n)),
                    });
                }
                return Err(Status::failed_precondition(format!(
                    "node {id} was demoted (it has left the Raft cluster), but it changed while \
                     being updated, so the rest of the spec was not applied; read it again and \
                     retry those changes"
                )));
            }
            Err(e) => return Err(store_status(e)),
        };
        Ok(UpdateNodeResponse {
            node: updated.map(|n| self.rendered(&n)),
        })
    }

    /// Writes only the role fields of a demotion, on the node's current version (a few tries
    /// against concurrent writers such as the dispatcher).
    async fn record_demotion(&self, id: &str) -> Result<(), Status> {
        let mut last = None;
        for _ in 0..5 {
            let result = self
                .store
                .update(|tx| {
                    let current = tx.get::<Node>(id).ok_or_else(|| node_not_found(id))?;
                    let mut updated = (*current).clone();
                    mark_demoted(&mut updated);
                    tx.update(updated)
                })
                .await;
            match result {
                Ok(()) => return Ok(()),
                Err(e) if e.is_conflict() => last = Some(e),
                Err(e) => return Err(store_status(e)),
            }
        }
        Err(last.map(store_status).unwrap_or_else(|| {
            Status::internal(format!("recording the demotion of node {id} failed"))
        }))
    }

    /// This manager is the leader and is being demoted: leadership moves first, and the
    /// client is sent to the new leader, which demotes this node like any other.
    async fn hand_over(&self, id: &str) -> Status {
        match self.raft.hand_over_leadership().await {
            Ok(true) => {
                let redirect = self.raft.not_leader();
                tracing::info!(node_id = %id, "leadership handed over so that node {id} (this manager) can be demoted");
                let leader = redirect
                    .metadata()
                    .get(shoal_raft::service::LEADER_ADDR_METADATA)
                    .and_then(|v| v.to_str().ok())
                    .map(|addr| format!("the leader is now at {addr}"))
                    .unwrap_or_else(|| redirect.message().to_string());
                Status::with_metadata(
                    redirect.code(),
                    format!(
                        "node {id} is this manager, which was the leader: leadership has been \
                         handed to another manager so that it can be demoted; {leader} — retry \
                         the demotion there"
                    ),
                    redirect.metadata().clone(),
                )
            }
            Ok(false) => Status::unavailable(format!(
                "node {id} is this manager, the leader, and leadership could not be handed to \
                 another manager in time, so it was not demoted; check that the other managers \
                 are reachable (`shoal node ls`) and retry"
            )),
            Err(e) => self.raft.to_status(e),
        }
    }

    pub(super) async fn remove(
        &self,
        request: RemoveNodeRequest,
    ) -> Result<RemoveNodeResponse, Status> {
        check_node_id(&request.node_id)?;
        self.require_leader()?;
        self.linearize().await?;
        let id = request.node_id.as_str();
        let is_member = members_by_node(&self.raft.status()).contains_key(id);
        // Every removal rewrites the cluster object (its revocation list), so concurrent
        // removals of different nodes conflict at apply time; the caller named no version,
        // so the removal is built again on a fresh view (its checks included) a few times.
        let mut attempts = 0;
        let result = loop {
            let mut refusal = None;
            let result = self
                .store
                .update(|tx| {
                    let node = tx.get::<Node>(id).ok_or_else(|| node_not_found(id))?;
                    if let Err(s) = check_removal(&node, is_member, request.force) {
                        refusal = Some(s);
                        return Err(StoreError::InvalidTransaction("refused".into()));
                    }
                    // The single cluster object; without one (a store that was never
                    // initialised) there is no CA, so no certificate to revoke.
                    let cluster = tx
                        .find::<Cluster>(By::All)
                        .first()
                        .and_then(|c| tx.get::<Cluster>(c.id()));
                    tx.delete::<Node>(id)?;
                    if let Some(cluster) = cluster {
                        let mut updated = (*cluster).clone();
                        revoke(&mut updated.blacklisted_certificates, id, &tx.now());
                        tx.update(updated)?;
                    }
                    Ok(())
                })
                .await;
            if let Some(s) = refusal {
                return Err(s);
            }
            match result {
                Err(e) if e.is_conflict() && attempts < REMOVAL_ATTEMPTS => attempts += 1,
                other => break other,
            }
        };
        result.map_err(|e| match e {
            StoreError::NotFound { kind: "node", .. } => not_found_status(id),
            other => store_status(other),
        })?;
        tracing::info!(node_id = %id, "node {id} removed; its certificate is revoked");
        Ok(RemoveNodeResponse {})
    }
}

impl ControlApi {
    fn nodes(&self) -> Nodes<'_, RaftHandle> {
        Nodes {
            store: &self.store,
            raft: &self.raft,
        }
    }

    pub(super) async fn get_node(
        &self,
        request: GetNodeRequest,
    ) -> Result<GetNodeResponse, Status> {
        self.nodes().get(request).await
    }

    pub(super) async fn list_nodes(
        &self,
        request: ListNodesRequest,
    ) -> Result<ListNodesResponse, Status> {
        self.nodes().list(request).await
    }

    pub(super) async fn update_node(
        &self,
        request: UpdateNodeRequest,
    ) -> Result<UpdateNodeResponse, Status> {
        self.nodes().update(request).await
    }

    pub(super) async fn remove_node(
        &self,
        request: RemoveNodeRequest,
    ) -> Result<RemoveNodeResponse, Status> {
        self.nodes().remove(request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::clock::ManualClock;
    use shoal_api::v1::{Annotations, Certificate, Label, Meta, NodeDescription, NodeStatus};
    use shoal_store::{DEFAULT_WATCH_CAPACITY, LocalProposer};
    use std::sync::Mutex;
    use tonic::Code;

    const T0: u64 = 1_700_000_000;
    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn at(seconds: u64) -> prost_types::Timestamp {
        (SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)).into()
    }

    // --- Pure decisions ------------------------------------------------------------------

    #[test]
    fn role_changes_are_classified_from_both_roles() {
        use NodeRole::{Manager as M, Worker as W};
        assert_eq!(role_change(W, W, M), RoleChange::Promote);
        assert_eq!(role_change(M, M, W), RoleChange::Demote);
        // A promotion whose certificate is not renewed yet can be cancelled.
        assert_eq!(role_change(M, W, W), RoleChange::Demote);
        assert_eq!(role_change(M, W, M), RoleChange::Unchanged);
        assert_eq!(role_change(W, W, W), RoleChange::Unchanged);
        assert_eq!(role_change(M, M, M), RoleChange::Unchanged);
    }

    fn facts(
        other_managers: usize,
        member: Option<Reachability>,
        voters: usize,
        reachable: usize,
    ) -> DemotionFacts {
        DemotionFacts {
            other_managers,
            member,
            voters,
            reachable,
        }
    }

    fn refusal(r: Result<(), Status>) -> String {
        let s = r.expect_err("refused");
        assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}");
        s.message().to_string()
    }

    #[test]
    fn the_last_manager_cannot_be_demoted() {
        let m = refusal(check_demotion(
            "n1",
            &facts(0, Some(Reachability::Reachable), 1, 1),
        ));
        assert!(m.contains("last manager"), "{m}");
        assert!(m.contains("shoal node promote"), "{m}");
        // Another node wants to be a manager but has not joined Raft yet: still the last voter.
        let m = refusal(check_demotion(
            "n1",
            &facts(1, Some(Reachability::Reachable), 1, 1),
        ));
        assert!(m.contains("last manager"), "{m}");
        // Not a voter (a promotion not completed), but no other manager either.
        assert!(check_demotion("n1", &facts(0, None, 1, 1)).is_err());
    }

    #[test]
    fn a_demotion_that_would_break_quorum_is_refused() {
        // 3 voters, 1 unreachable: demoting a reachable one leaves 1 of 2 reachable.
        let m = refusal(check_demotion(
            "n2",
            &facts(2, Some(Reachability::Reachable), 3, 2),
        ));
        assert!(m.contains("demoting node n2 would break quorum"), "{m}");
        assert!(m.contains("1 of the 2 remaining"), "{m}");
        // Demoting the unreachable one leaves 2 of 2.
        check_demotion("n3", &facts(2, Some(Reachability::Unreachable), 3, 2)).unwrap();
        // Unknown: the favourable case is assumed, Raft's exact check decides.
        check_demotion("n3", &facts(2, Some(Reachability::Unknown), 3, 2)).unwrap();
        // 5 voters, 2 unreachable: a reachable one leaves 2 of 4, 3 needed.
        assert!(check_demotion("n", &facts(4, Some(Reachability::Reachable), 5, 3)).is_err());
        check_demotion("n", &facts(4, Some(Reachability::Unreachable), 5, 3)).unwrap();
        // Everyone reachable.
        check_demotion("n", &facts(2, Some(Reachability::Reachable), 3, 3)).unwrap();
        check_demotion("n", &facts(1, Some(Reachability::Reachable), 2, 2)).unwrap();
        // Only this manager reachable out of 3: even an unreachable one cannot go.
        assert!(check_demotion("n", &facts(2, Some(Reachability::Unreachable), 3, 1)).is_err());
        // Not a Raft member: only the last-manager rule applies.
        check_demotion("n", &facts(1, None, 3, 1)).unwrap();
    }

    fn plain_node(id: &str, role: NodeRole, state: node_status::State) -> Node {
        Node {
            meta: Some(Meta {
                id: id.into(),
                ..Default::default()
            }),
            spec: Some(NodeSpec {
                desired_role: role as i32,
                membership: node_spec::Membership::Accepted as i32,
                ..Default::default()
            }),
            role: role as i32,
            status: Some(NodeStatus {
                state: state as i32,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn managers_and_nodes_that_are_up_are_not_removed() {
        use node_status::State::{Down, Ready};
        let manager = plain_node("m", NodeRole::Manager, Down);
        let m = refusal(check_removal(&manager, true, true));
        assert!(m.contains("must be demoted first"), "{m}");
        assert!(m.contains("shoal node demote m"), "{m}");
        // Any sign of being a manager is enough, force or not.
        let mut desired = plain_node("d", NodeRole::Worker, Down);
        desired.spec.as_mut().unwrap().desired_role = NodeRole::Manager as i32;
        assert!(check_removal(&desired, false, true).is_err());
        let mut by_cert = plain_node("c", NodeRole::Worker, Down);
        by_cert.role = NodeRole::Manager as i32;
        assert!(check_removal(&by_cert, false, true).is_err());
        let worker = plain_node("w", NodeRole::Worker, Down);
        assert!(check_removal(&worker, true, true).is_err());

        let up = plain_node("w", NodeRole::Worker, Ready);
        let m = refusal(check_removal(&up, false, false));
        assert!(m.contains("node w is up"), "{m}");
        assert!(m.contains("--force"), "{m}");
        check_removal(&up, false, true).unwrap();
        check_removal(&worker, false, false).unwrap();
        check_removal(
            &plain_node("u", NodeRole::Worker, node_status::State::Unknown),
            false,
            false,
        )
        .unwrap();
    }

    #[test]
    fn pruning_keeps_unexpired_entries_and_drops_expired_ones() {
        let entry = |t: Option<u64>| BlacklistedCertificate { expiry: t.map(at) };
        let mut list = BTreeMap::from([
            ("expired".to_string(), entry(Some(T0 - 1))),
            ("fresh".to_string(), entry(Some(T0 + 1))),
            ("now".to_string(), entry(Some(T0))),
            ("forever".to_string(), entry(None)),
        ]);
        prune_blacklist(&mut list, &at(T0));
        let kept: Vec<&str> = list.keys().map(String::as_str).collect();
        assert_eq!(kept, ["forever", "fresh", "now"]);
        prune_blacklist(&mut list, &at(T0 + 10));
        let kept: Vec<&str> = list.keys().map(String::as_str).collect();
        assert_eq!(kept, ["forever"]);
    }

    #[test]
    fn the_list_keeps_a_day_of_removals_and_at_most_its_cap() {
        let entry = |t: Option<u64>| BlacklistedCertificate { expiry: t.map(at) };
        // Over the cap: the entries that expire first go, entries without an expiry last.
        let mut list: BTreeMap<String, BlacklistedCertificate> = (0..5)
            .map(|i| (format!("n{i}"), entry(Some(T0 + 100 - i))))
            .collect();
        list.insert("forever".into(), entry(None));
        list.insert("tie-b".into(), entry(Some(T0 + 50)));
        list.insert("tie-a".into(), entry(Some(T0 + 50)));
        cap_blacklist(&mut list, 4);
        let kept: Vec<&str> = list.keys().map(String::as_str).collect();
        assert_eq!(kept, ["forever", "n0", "n1", "n2"]);
        cap_blacklist(&mut list, 1);
        let kept: Vec<&str> = list.keys().map(String::as_str).collect();
        assert_eq!(kept, ["forever"]);

        // A removal: expired entries go, the new one lasts a day from now.
        let mut list = BTreeMap::from([
            ("old".to_string(), entry(Some(T0 - 1))),
            ("recent".to_string(), entry(Some(T0 + 60))),
        ]);
        revoke(&mut list, "w9", &at(T0));
        let kept: Vec<&str> = list.keys().map(String::as_str).collect();
        assert_eq!(kept, ["recent", "w9"]);
        assert_eq!(
            list["w9"].expiry,
            Some(at(T0 + REVOCATION_NOTICE.as_secs()))
        );
        // At the cap, the newest removal stays and the oldest goes.
        let mut full: BTreeMap<String, BlacklistedCertificate> = (0..MAX_BLACKLISTED_CERTIFICATES
            as u64)
            .map(|i| (format!("n{i:04}"), entry(Some(T0 + i))))
            .collect();
        revoke(&mut full, "latest", &at(T0));
        assert_eq!(full.len(), MAX_BLACKLISTED_CERTIFICATES);
        assert!(full.contains_key("latest"));
        assert!(!full.contains_key("n0000"));
        assert!(full.contains_key("n0001"));
    }

    fn raft_status(me: u64, leader: Option<u64>, voters: usize, reachable: usize) -> RaftStatus {
        RaftStatus {
            id: me,
            leader,
            is_leader: leader == Some(me),
            voters,
            reachable,
            members: (1..=voters as u64)
                .map(|id| {
                    (
                        id,
                        RaftMember {
                            raft_id: id,
                            node_id: format!("m{id}"),
                            addr: format!("10.0.0.{id}:4242"),
                        },
                    )
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn reachability_is_known_where_the_raft_status_tells() {
        use Reachability::{Reachable, Unknown, Unreachable};
        let all = raft_status(1, Some(1), 3, 3);
        assert_eq!([1, 2, 3].map(|id| reachability(&all, id)), [Reachable; 3]);
        let none = raft_status(1, Some(1), 3, 1);
        assert_eq!(
            [1, 2, 3].map(|id| reachability(&none, id)),
            [Reachable, Unreachable, Unreachable]
        );
        let some = raft_status(1, Some(1), 3, 2);
        assert_eq!(
            [1, 2, 3].map(|id| reachability(&some, id)),
            [Reachable, Unknown, Unknown]
        );
        // On a follower: itself and the leader.
        let follower = raft_status(2, Some(1), 3, 3);
        assert_eq!(
            [1, 2, 3].map(|id| reachability(&follower, id)),
            [Reachable, Reachable, Unknown]
        );
    }

    // --- The calls, on a store and a scripted Raft ---------------------------------------

    /// A Raft that answers from a script and records what was asked of it.
    struct FakeRaft {
        status: Mutex<RaftStatus>,
        removed: Mutex<Vec<u64>>,
        handovers: Mutex<usize>,
        refuse_removal: Mutex<Option<String>>,
    }

    impl FakeRaft {
        fn new(status: RaftStatus) -> Self {
            Self {
                status: Mutex::new(status),
                removed: Mutex::default(),
                handovers: Mutex::default(),
                refuse_removal: Mutex::default(),
            }
        }

        fn set(&self, f: impl FnOnce(&mut RaftStatus)) {
            f(&mut self.status.lock().unwrap());
        }
    }

    impl NodeRaft for FakeRaft {
        fn status(&self) -> RaftStatus {
            self.status.lock().unwrap().clone()
        }

        fn not_leader(&self) -> Status {
            let mut s = Status::failed_precondition(
                "this manager is not the leader; the leader is at 10.0.0.2:4242",
            );
            s.metadata_mut()
                .insert("shoal-leader-addr", "10.0.0.2:4242".parse().unwrap());
            s
        }

        fn to_status(&self, e: RaftError) -> Status {
            Status::unavailable(e.to_string())
        }

        async fn read_barrier(&self) -> Result<(), RaftError> {
            Ok(())
        }

        async fn remove_member(&self, raft_id: u64) -> Result<(), RaftError> {
            if let Some(why) = self.refuse_removal.lock().unwrap().clone() {
                return Err(RaftError::Membership(why));
            }
            self.removed.lock().unwrap().push(raft_id);
            self.set(|s| {
                s.members.remove(&raft_id);
                s.voters -= 1;
                s.reachable = s.reachable.min(s.voters);
            });
            Ok(())
        }

        async fn hand_over_leadership(&self) -> Result<bool, RaftError> {
            *self.handovers.lock().unwrap() += 1;
            self.set(|s| {
                s.is_leader = false;
                s.leader = Some(2);
            });
            Ok(true)
        }
    }

    /// Runs a future to completion on a runtime of its own.
    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a test runtime")
            .block_on(f)
    }

    fn node_with_certificate(
        cluster: &Cluster,
        id: &str,
        hostname: &str,
        role: NodeRole,
        now: SystemTime,
    ) -> Node {
        let root = cluster.root_ca.as_ref().unwrap();
        let ca = shoal_ca::RootCa {
            cert_pem: String::from_utf8(root.ca_cert.clone()).unwrap(),
            key_pem: String::from_utf8(root.ca_key.clone()).unwrap(),
        };
        let (_, csr) = shoal_ca::node_key_and_csr().unwrap();
        let cert =
            shoal_ca::issue_node_certificate(&ca, &csr, id, role, cluster.id(), now, 10 * DAY)
                .unwrap();
        let mut node = plain_node(id, role, node_status::State::Down);
        node.description = Some(Box::new(NodeDescription {
            hostname: hostname.into(),
            ..Default::default()
        }));
        node.certificate = Some(Box::new(Certificate {
            role: role as i32,
            status: Some(IssuanceStatus {
                state: issuance_status::State::Issued as i32,
                err: String::new(),
            }),
            certificate: cert.into_bytes(),
            cn: id.into(),
            ..Default::default()
        }));
        node
    }

    /// A cluster with managers m1..=m{managers} (Raft members 1..; this manager is m1, the
    /// leader, hearing from `reachable` voters) and workers w1..=w{workers}.
    struct World {
        store: Store,
        raft: FakeRaft,
        cluster: Cluster,
    }

    impl World {
        fn new(managers: usize, reachable: usize, workers: usize) -> Self {
            let clock = Arc::new(ManualClock::at_unix_seconds(T0));
            let now = shoal_api::clock::Clock::now(&*clock);
            let store = Store::with(Arc::new(LocalProposer), clock, DEFAULT_WATCH_CAPACITY);
            let cluster = crate::cluster::new_cluster(now).unwrap();
            let mut nodes = vec![];
            for i in 1..=managers {
                let id = format!("m{i}");
                nodes.push(node_with_certificate(
                    &cluster,
                    &id,
                    &format!("host-{id}"),
                    NodeRole::Manager,
                    now,
                ));
            }
            for i in 1..=workers {
                let id = format!("w{i}");
                nodes.push(node_with_certificate(
                    &cluster,
                    &id,
                    &format!("host-{id}"),
                    NodeRole::Worker,
                    now,
                ));
            }
            let c = cluster.clone();
            block_on(store.update(move |tx| {
                tx.create(c)?;
                for n in nodes {
                    tx.create(n)?;
                }
                Ok(())
            }))
            .unwrap();
            let cluster = store.view(|tx| tx.find::<Cluster>(By::All))[0]
                .as_ref()
                .clone();
            Self {
                store,
                raft: FakeRaft::new(raft_status(1, Some(1), managers, reachable)),
                cluster,
            }
        }

        fn nodes(&self) -> Nodes<'_, FakeRaft> {
            Nodes {
                store: &self.store,
                raft: &self.raft,
            }
        }

        fn node(&self, id: &str) -> Option<Arc<Node>> {
            self.store.view(|tx| tx.get::<Node>(id))
        }

        fn cluster(&self) -> Arc<Cluster> {
            self.store
                .view(|tx| tx.get::<Cluster>(self.cluster.id()))
                .unwrap()
        }

        fn update(&self, id: &str, f: impl FnOnce(&mut NodeSpec)) -> Result<Node, Status> {
            let node = self.node(id).unwrap();
            let mut spec = node.spec.clone().unwrap_or_default();
            f(&mut spec);
            self.update_at(id, node.version(), spec)
        }

        fn update_at(&self, id: &str, version: u64, spec: NodeSpec) -> Result<Node, Status> {
            block_on(self.nodes().update(UpdateNodeRequest {
                node_id: id.into(),
                node_version: version,
                spec: Some(spec),
            }))
            .map(|r| r.node.unwrap())
        }

        fn set_node(&self, id: &str, f: impl FnOnce(&mut Node)) {
            let mut node = (*self.node(id).unwrap()).clone();
            f(&mut node);
            block_on(self.store.update(|tx| tx.update(node))).unwrap();
        }

        fn remove(&self, id: &str, force: bool) -> Result<RemoveNodeResponse, Status> {
            block_on(self.nodes().remove(RemoveNodeRequest {
                node_id: id.into(),
                force,
            }))
        }

        fn list(&self, request: ListNodesRequest) -> Vec<String> {
            block_on(self.nodes().list(request))
                .unwrap()
                .nodes
                .iter()
                .map(|n| n.id().to_string())
                .collect()
        }
    }

    fn renew_state(node: &Node) -> i32 {
        node.certificate
            .as_ref()
            .unwrap()
            .status
            .as_ref()
            .unwrap()
            .state
    }

    #[test]
    fn get_renders_manager_status_from_raft() {
        let w = World::new(3, 3, 1);
        let got = block_on(w.nodes().get(GetNodeRequest {
            node_id: "m2".into(),
        }))
        .unwrap()
        .node
        .unwrap();
        let ms = got.manager_status.unwrap();
        assert_eq!(
            (ms.raft_id, ms.addr.as_str(), ms.leader),
            (2, "10.0.0.2:4242", false)
        );
        assert_eq!(ms.reachability, Reachability::Reachable as i32);
        let leader = block_on(w.nodes().get(GetNodeRequest {
            node_id: "m1".into(),
        }))
        .unwrap()
        .node
        .unwrap();
        assert!(leader.manager_status.unwrap().leader);
        let worker = block_on(w.nodes().get(GetNodeRequest {
            node_id: "w1".into(),
        }))
        .unwrap()
        .node
        .unwrap();
        assert!(worker.manager_status.is_none());

        let missing = block_on(w.nodes().get(GetNodeRequest {
            node_id: "w".into(),
        }))
        .unwrap_err();
        assert_eq!(missing.code(), Code::NotFound);
        assert!(
            missing.message().starts_with("node w not found"),
            "{missing:?}"
        );
        let empty = block_on(w.nodes().get(GetNodeRequest::default())).unwrap_err();
        assert_eq!(empty.code(), Code::InvalidArgument);
    }

    #[test]
    fn list_filters_by_name_id_label_role_and_membership() {
        let w = World::new(2, 2, 3);
        w.set_node("w2", |n| {
            n.spec.as_mut().unwrap().annotations = Some(Annotations {
                name: "edge".into(),
                labels: vec![Label {
                    key: "zone".into(),
                    value: "a".into(),
                }],
            });
        });
        w.set_node("w3", |n| {
            n.spec.as_mut().unwrap().membership = node_spec::Membership::Pending as i32;
        });
        let filters = |f: ListFilters| ListNodesRequest {
            filters: Some(f),
            ..Default::default()
        };
        assert_eq!(w.list(ListNodesRequest::default()).len(), 5);
        assert_eq!(
            w.list(filters(ListFilters {
                names: vec!["host-w1".into(), "edge".into()],
                ..Default::default()
            })),
            ["w1", "w2"]
        );
        assert_eq!(
            w.list(filters(ListFilters {
                name_prefixes: vec!["host-m".into()],
                ..Default::default()
            })),
            ["m1", "m2"]
        );
        assert_eq!(
            w.list(filters(ListFilters {
                id_prefixes: vec!["w".into()],
                ..Default::default()
            })),
            ["w1", "w2", "w3"]
        );
        assert_eq!(
            w.list(filters(ListFilters {
                labels: BTreeMap::from([("zone".into(), String::new())]),
                ..Default::default()
            })),
            ["w2"]
        );
        assert_eq!(
            w.list(ListNodesRequest {
                roles: vec![NodeRole::Manager as i32],
                ..Default::default()
            }),
            ["m1", "m2"]
        );
        assert_eq!(
            w.list(ListNodesRequest {
                memberships: vec![node_spec::Membership::Pending as i32],
                ..Default::default()
            }),
            ["w3"]
        );
        let bad = block_on(w.nodes().list(ListNodesRequest {
            roles: vec![7],
            ..Default::default()
        }))
        .unwrap_err();
        assert_eq!(bad.code(), Code::InvalidArgument);
        assert!(bad.message().contains("roles[0]"), "{bad:?}");
    }

    #[test]
    fn updates_check_the_spec_and_the_version() {
        let w = World::new(1, 1, 1);
        let before = w.node("w1").unwrap();
        let bad = w
            .update("w1", |s| s.availability = 9)
            .expect_err("unknown availability");
        assert_eq!(bad.code(), Code::InvalidArgument);
        assert!(bad.message().contains("spec.availability"), "{bad:?}");
        let bad = w
            .update("w1", |s| s.desired_role = 5)
            .expect_err("unknown role");
        assert!(bad.message().contains("spec.desired_role"), "{bad:?}");
        let bad = w
            .update("w1", |s| {
                s.membership = node_spec::Membership::Pending as i32
            })
            .expect_err("back to pending");
        assert!(bad.message().contains("spec.membership"), "{bad:?}");

        // A stale version changes nothing, not even for a promotion.
        let mut spec = before.spec.clone().unwrap();
        spec.desired_role = NodeRole::Manager as i32;
        let stale = w
            .update_at("w1", before.version() - 1, spec)
            .expect_err("stale");
        assert_eq!(stale.code(), Code::FailedPrecondition);
        assert!(stale.message().contains("out of sequence"), "{stale:?}");
        assert_eq!(*w.node("w1").unwrap(), *before);

        // Availability and labels are plain updates.
        let updated = w
            .update("w1", |s| {
                s.availability = node_spec::Availability::Drain as i32;
                s.annotations = Some(Annotations {
                    name: String::new(),
                    labels: vec![
                        Label {
                            key: "z".into(),
                            value: "1".into(),
                        },
                        Label {
                            key: "a".into(),
                            value: "2".into(),
                        },
                    ],
                });
            })
            .unwrap();
        let spec = updated.spec.as_ref().unwrap();
        assert_eq!(spec.availability, node_spec::Availability::Drain as i32);
        let keys: Vec<&str> = spec
            .annotations
            .as_ref()
            .unwrap()
            .labels
            .iter()
            .map(|l| l.key.as_str())
            .collect();
        assert_eq!(keys, ["a", "z"]);
        assert!(updated.version() > before.version());
        assert_eq!(renew_state(&updated), issuance_status::State::Issued as i32);
    }

    #[test]
    fn writes_are_refused_on_a_follower() {
        let w = World::new(3, 3, 1);
        w.raft.set(|s| {
            s.is_leader = false;
            s.leader = Some(2);
        });
        let e = w
            .update("w1", |s| {
                s.availability = node_spec::Availability::Pause as i32
            })
            .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition);
        assert!(e.message().contains("not the leader"), "{e:?}");
        assert!(w.remove("w1", true).is_err());
    }

    #[test]
    fn promotion_asks_for_a_manager_certificate_and_nothing_else() {
        let w = World::new(1, 1, 1);
        let updated = w
            .update("w1", |s| s.desired_role = NodeRole::Manager as i32)
            .unwrap();
        assert_eq!(
            updated.spec.as_ref().unwrap().desired_role,
            NodeRole::Manager as i32
        );
        assert_eq!(
            updated.role,
            NodeRole::Worker as i32,
            "the CA changes it on renewal"
        );
        assert_eq!(renew_state(&updated), issuance_status::State::Renew as i32);
        assert!(updated.manager_status.is_none());
        assert!(w.raft.removed.lock().unwrap().is_empty());
        assert_eq!(*w.raft.handovers.lock().unwrap(), 0);
    }

    #[test]
    fn demoting_a_follower_removes_it_from_raft_then_records_it() {
        let w = World::new(3, 3, 0);
        let updated = w
            .update("m3", |s| s.desired_role = NodeRole::Worker as i32)
            .unwrap();
        assert_eq!(*w.raft.removed.lock().unwrap(), [3]);
        assert_eq!(
            updated.spec.as_ref().unwrap().desired_role,
            NodeRole::Worker as i32
        );
        assert_eq!(updated.role, NodeRole::Worker as i32);
        assert!(updated.manager_status.is_none());
        assert_eq!(renew_state(&updated), issuance_status::State::Renew as i32);
        // The stored node says the same.
        let stored = w.node("m3").unwrap();
        assert_eq!(stored.role, NodeRole::Worker as i32);
        assert_eq!(renew_state(&stored), issuance_status::State::Renew as i32);
    }

    #[test]
    fn the_last_manager_is_not_demoted() {
        let w = World::new(1, 1, 2);
        let before = w.node("m1").unwrap();
        let e = w
            .update("m1", |s| s.desired_role = NodeRole::Worker as i32)
            .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition);
        assert!(e.message().contains("last manager"), "{e:?}");
        assert_eq!(*w.node("m1").unwrap(), *before);
        assert_eq!(*w.raft.handovers.lock().unwrap(), 0);
    }

    #[test]
    fn a_demotion_that_breaks_quorum_changes_nothing() {
        // The leader hears from no one: demoting a follower would leave 1 of 2 reachable.
        let w = World::new(3, 1, 0);
        let before = w.node("m2").unwrap();
        let e = w
            .update("m2", |s| s.desired_role = NodeRole::Worker as i32)
            .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition);
        assert!(e.message().contains("would break quorum"), "{e:?}");
        assert_eq!(*w.node("m2").unwrap(), *before);
        assert!(w.raft.removed.lock().unwrap().is_empty());

        // Unknown reachability passes the first check; Raft's exact check refuses.
        let w = World::new(3, 2, 0);
        *w.raft.refuse_removal.lock().unwrap() = Some("removing it would lose quorum".into());
        let before = w.node("m2").unwrap();
        let e = w
            .update("m2", |s| s.desired_role = NodeRole::Worker as i32)
            .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition);
        assert!(e.message().contains("cannot demote node m2"), "{e:?}");
        assert!(e.message().contains("lose quorum"), "{e:?}");
        assert_eq!(*w.node("m2").unwrap(), *before);
    }

    #[test]
    fn the_leader_hands_over_before_it_is_demoted() {
        let w = World::new(3, 3, 0);
        let before = w.node("m1").unwrap();
        let e = w
            .update("m1", |s| s.desired_role = NodeRole::Worker as i32)
            .unwrap_err();
        assert_eq!(*w.raft.handovers.lock().unwrap(), 1);
        assert_eq!(e.code(), Code::FailedPrecondition);
        assert!(
            e.message()
                .contains("the leader is now at 10.0.0.2:4242 — retry the demotion there"),
            "{e:?}"
        );
        assert_eq!(
            e.metadata().get("shoal-leader-addr").unwrap(),
            "10.0.0.2:4242"
        );
        assert_eq!(*w.node("m1").unwrap(), *before);
        assert!(w.raft.removed.lock().unwrap().is_empty());
    }

    #[test]
    fn removal_deletes_the_node_and_revokes_its_certificate() {
        let w = World::new(1, 1, 2);
        // Entries already there: one expired, one not.
        let mut cluster = (*w.cluster()).clone();
        cluster.blacklisted_certificates = BTreeMap::from([
            (
                "gone".to_string(),
                BlacklistedCertificate {
                    expiry: Some(at(T0 - 60)),
                },
            ),
            (
                "recent".to_string(),
                BlacklistedCertificate {
                    expiry: Some(at(T0 + 60)),
                },
            ),
        ]);
        block_on(w.store.update(|tx| tx.update(cluster))).unwrap();

        w.remove("w1", false).unwrap();
        assert!(w.node("w1").is_none());
        let list = &w.cluster().blacklisted_certificates;
        let keys: Vec<&str> = list.keys().map(String::as_str).collect();
        assert_eq!(keys, ["recent", "w1"]);
        // A day from the removal, by the store's clock.
        assert_eq!(
            list["w1"].expiry,
            Some(at(T0 + REVOCATION_NOTICE.as_secs()))
        );

        let e = w.remove("w1", false).unwrap_err();
        assert_eq!(e.code(), Code::NotFound);
        assert!(e.message().starts_with("node w1 not found"), "{e:?}");
    }

    #[test]
    fn removal_refuses_managers_and_nodes_that_are_up() {
        let w = World::new(2, 2, 1);
        let e = w.remove("m2", true).unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition);
        assert!(e.message().contains("must be demoted first"), "{e:?}");
        assert!(w.node("m2").is_some());

        w.set_node("w1", |n| {
            n.status = Some(NodeStatus {
                state: node_status::State::Ready as i32,
                ..Default::default()
            })
        });
        let e = w.remove("w1", false).unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition);
        assert!(e.message().contains("node w1 is up"), "{e:?}");
        assert!(w.node("w1").is_some());
        assert!(w.cluster().blacklisted_certificates.is_empty());
        w.remove("w1", true).unwrap();
        assert!(w.node("w1").is_none());
        assert!(w.cluster().blacklisted_certificates.contains_key("w1"));
    }

    /// What the cluster object may weigh after any number of joins and removals: the list's
    /// 1,000 entries (about 38 bytes each) and the rest of the object (root CA and its key,
    /// tokens, spec: about 2 KB).
    const CLUSTER_BYTES_BOUND: usize = 64 * 1024;

    #[test]
    fn ten_thousand_joins_and_removals_leave_a_bounded_cluster_object_and_no_way_back() {
        const CYCLES: usize = 10_000;
        let w = World::new(1, 1, 0);
        let cluster_id = w.cluster.id().to_string();
        let authorizer = crate::authorize::Authorizer::new(w.store.clone(), cluster_id.clone());
        let root = w.cluster.root_ca.as_ref().unwrap();
        let ca = shoal_ca::RootCa {
            cert_pem: String::from_utf8(root.ca_cert.clone()).unwrap(),
            key_pem: String::from_utf8(root.ca_key.clone()).unwrap(),
        };
        // One key for every node: the CA takes only the public key from a request.
        let (_, csr) = shoal_ca::node_key_and_csr().unwrap();
        let started = std::time::Instant::now();
        let mut removed = Vec::with_capacity(CYCLES);
        let mut largest = 0;
        block_on(async {
            for _ in 0..CYCLES {
                // A join, as the CA records it (`ca_server.rs`): a new node ID, a
                // certificate signed for it, the node object holding it.
                let node_id = shoal_api::id::new_id();
                let pem = shoal_ca::issue_node_certificate(
                    &ca,
                    &csr,
                    &node_id,
                    NodeRole::Worker,
                    &cluster_id,
                    SystemTime::now(),
                    defaults::NODE_CERT_EXPIRY,
                )
                .unwrap();
                let mut node = plain_node(&node_id, NodeRole::Worker, node_status::State::Down);
                node.certificate = Some(Box::new(Certificate {
                    role: NodeRole::Worker as i32,
                    csr: csr.clone().into_bytes(),
                    status: Some(IssuanceStatus {
                        state: issuance_status::State::Issued as i32,
                        err: String::new(),
                    }),
                    certificate: pem.clone().into_bytes(),
                    cn: node_id.clone(),
                }));
                w.store.update(|tx| tx.create(node)).await.unwrap();
                w.nodes()
                    .remove(RemoveNodeRequest {
                        node_id: node_id.clone(),
                        force: false,
                    })
                    .await
                    .unwrap();
                largest = largest.max(prost::Message::encoded_len(&*w.cluster()));
                removed.push(shoal_ca::parse_node_certificate(&pem).unwrap());
            }
        });
        let elapsed = started.elapsed();
        let cluster = w.cluster();
        assert_eq!(
            cluster.blacklisted_certificates.len(),
            MAX_BLACKLISTED_CERTIFICATES
        );
        assert!(
            largest < CLUSTER_BYTES_BOUND,
            "the cluster object reached {largest} bytes"
        );
        // Every removed node's certificate, each valid for 90 days more, is refused: the
        // last 1,000 as removed (their entries), the others as not members.
        let (mut as_removed, mut as_not_members) = (0, 0);
        for identity in removed {
            assert!(identity.not_after > SystemTime::now() + 80 * DAY);
            let e = authorizer
                .check_identity(Some(identity), crate::authorize::Access::Nodes)
                .unwrap_err();
            assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
            if e.message().contains("was removed") {
                as_removed += 1;
            } else if e
                .message()
                .contains("is not a member of this cluster (removed?)")
            {
                as_not_members += 1;
            } else {
                panic!("refused for another reason: {e:?}");
            }
        }
        assert_eq!(
            (as_removed, as_not_members),
            (
                MAX_BLACKLISTED_CERTIFICATES,
                CYCLES - MAX_BLACKLISTED_CERTIFICATES
            )
        );
        eprintln!(
            "{CYCLES} joins and removals in {elapsed:.1?}: the cluster object weighs {} bytes \
             (at most {largest} along the way)",
            prost::Message::encoded_len(&*cluster)
        );
    }
}
