//! Root CA rotation: replacing the cluster's root certificate and key while the cluster runs,
//! without dropping a node or an RPC (`shoal swarm ca --rotate`, `docker swarm ca --rotate`).
//!
//! ## The steps
//!
//! 1. **Start** ([`start`]): `UpdateCluster` with `spec.ca_config.force_rotate` raised. In the
//!    same transaction the leader generates a new root (ECDSA P-256, the lifetime of a root
//!    made by `swarm init`), has the *old* root sign a certificate for the new root's subject
//!    and key (the *cross-signed* root), and stores the three in `root_ca.root_rotation`;
//!    `last_forced_rotation` takes the spec's value.
//! 2. **While it is pending**, the CA signs every certificate with the new key ([`Signer`])
//!    and hands it out followed by the cross-signed root, so a node that still trusts only
//!    the old root accepts it (through the intermediate), and one that trusts the new root
//!    directly. Nodes are handed the *trust bundle* — old root, then new ([`trust_bundle`]) —
//!    by the dispatcher's session messages, and trust both. Old and new certificates therefore
//!    work with each other in every combination (`shoal_tls`'s tests check each on real
//!    sockets); open connections are never touched.
//! 3. **Every node renews**: the reconciler below marks nodes' certificates `ROTATE`, at most
//!    [`ROTATE_BATCH`] nodes that are up in flight at a time (as SwarmKit: the CA and Raft see
//!    no stampede in a large cluster); an agent renews at once when it sees the mark (as for
//!    `RENEW`). A node is *rotated* when it **reports**, in the TLS information of its node
//!    description (sent when it opens a session), that the certificate it uses was signed by
//!    the new root and that it trusts the new root: the store's record of what the CA issued
//!    is not enough, since a node that crashed before saving its new certificate still holds
//!    the old one.
//! 4. **Completion** ([`complete`]), once every node in the store is rotated (a removed node
//!    is no longer in the store): `root_ca.ca_cert`/`ca_key`/`ca_cert_hash` become the new
//!    root's, the join tokens name the new root's digest and keep their secrets (as Docker
//!    does: whoever holds a token only has to fetch it again for the new digest), and
//!    `root_rotation` is cleared. The trust bundle is then the new root alone, which nodes
//!    learn from their sessions; the old root is trusted by nobody any more, and a node that
//!    trusts the new root alone drops the cross-signed certificate from its chain (every node
//!    trusts the new root by then: completion waited for it), so its certificate chains to
//!    the new root only. The nodes' reads are recorded in that transaction, so a node that
//!    changed meanwhile makes it conflict and the next round decides again.
//!
//! **Down nodes.** The rotation stays pending while a node in the store has not rotated; a
//! down node's old certificate is still trusted, so when it comes back it opens a session,
//! sees its `ROTATE` mark, renews, reports — and the rotation completes. Removing it
//! (`shoal node rm`) lets it complete too.
//!
//! ## The reconciler
//!
//! [`decide`] is the pure part: from each node's [`Progress`] and whether it is up, it says
//! which nodes to mark next, or that the rotation is complete. [`RootRotationReconciler`] is
//! the thin async shell, run on every manager and active on the leader once it has caught up
//! (as the orchestrator): it runs a round when leadership is gained and after every change
//! of the cluster or of a node, reads the store, asks [`decide`], and writes. It is
//! level-triggered and keeps nothing between rounds, so a new leader carries on a rotation
//! from whatever the store holds.
//!
//! ## Invariants
//!
//! - While `root_rotation` is set, the CA signs only with its key, and every certificate it
//!   signs carries the cross-signed root; nodes are told to trust the old and the new root.
//! - The rotation completes only when every node in the store reports a certificate from
//!   the new root and trusts the new root; until then the old root stays trusted everywhere.
//!   So once it completes, no node needs the old root or the cross-signed certificate.
//! - A certificate is recorded for a node only if the cluster still calls for the signer
//!   that signed it (the CA server checks, in the write): no node is recorded with a
//!   certificate from a root a rotation left behind.
//! - `GetRootCACertificate` answers the *current* root (`ca_cert`, the old one during a
//!   rotation), which is what the join tokens' digest names: a node joining during a rotation
//!   checks the old root, gets a certificate from the new key with its cross-signed chain,
//!   and learns the bundle from its first session.
//!
//! ## Choices
//!
//! - A `force_rotate` raised while a rotation is pending **starts over** from a fresh new root
//!   (as SwarmKit does) rather than being refused: nodes already renewed under the abandoned
//!   root still chain to the old one through their cross-signed certificate, so nothing
//!   breaks, and they are marked again. A value lowered is refused; one left as it is starts
//!   nothing.
//! - Join tokens keep their secrets and take the new digest (as Docker): an operator who
//!   distributed a token fetches it again, but needs no new secret.
//!
//! ## Departures from SwarmKit
//!
//! - Only forced rotations (a new root Shoal generates); a root, key or external CA supplied
//!   by the operator is refused, as before.
//! - In-flight marks count only nodes that are up: a down node marked `ROTATE` does not hold
//!   a slot of the batch (in SwarmKit, 30 down nodes stall the rotation of the others).
//! - A rotated node also drops the cross-signed certificate from its chain once the rotation
//!   completes (SwarmKit's nodes keep it until their next renewal), so that after a rotation
//!   every certificate chains to the new root only.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use shoal_api::v1::{
    Cluster, IssuanceStatus, Node, NodeRole, ObjectKind, RootCa, RootRotation, issuance_status,
    node_status,
};
use shoal_ca::{CaError, JoinToken, RootCa as CaRoot, RootReport};
use shoal_raft::RaftHandle;
use shoal_store::{By, Filter, Reader, Store, StoreError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::dispatcher::Leadership;

/// Nodes that are up and told to renew but not rotated yet, at most (SwarmKit's
/// `IssuanceStateRotateMaxBatchSize`).
pub const ROTATE_BATCH: usize = 30;

/// How long a round waits, at most, when nothing happens (a safety net: rounds follow the
/// store's changes).
const IDLE_ROUND: Duration = Duration::from_secs(10);

fn pem(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Whether a root rotation is pending.
pub fn in_progress(root: &RootCa) -> bool {
    root.root_rotation.is_some()
}

/// What nodes must trust: the current root and, during a rotation, the new one after it.
pub fn trust_bundle(root: &RootCa) -> Vec<u8> {
    let mut bundle = root.ca_cert.clone();
    if let Some(rotation) = &root.root_rotation {
        if !bundle.ends_with(b"\n") {
            bundle.push(b'\n');
        }
        bundle.extend_from_slice(&rotation.ca_cert);
    }
    bundle
}

/// Who signs node certificates now: the current root, or the new one during a rotation —
/// whose certificates then carry the cross-signed root as their chain.
#[derive(Clone, Debug)]
pub struct Signer {
    ca: CaRoot,
    intermediate: Option<String>,
}

impl Signer {
    /// The signer `root` calls for.
    pub fn of(root: &RootCa) -> Result<Self, CaError> {
        let signer = match &root.root_rotation {
            Some(rotation) => Signer {
                ca: CaRoot {
                    cert_pem: pem(&rotation.ca_cert),
                    key_pem: pem(&rotation.ca_key),
                },
                intermediate: Some(pem(&rotation.cross_signed_ca_cert)),
            },
            None => Signer {
                ca: CaRoot {
                    cert_pem: pem(&root.ca_cert),
                    key_pem: pem(&root.ca_key),
                },
                intermediate: None,
            },
        };
        if signer.ca.key_pem.is_empty() {
            return Err(CaError::InvalidKey(
                "the cluster object holds no CA key (a redacted copy?)".into(),
            ));
        }
        Ok(signer)
    }

    /// Signs `csr_pem` (see [`shoal_ca::issue_node_certificate`]): the certificate, PEM,
    /// followed by the cross-signed root during a rotation.
    pub fn sign(
        &self,
        csr_pem: &str,
        node_id: &str,
        role: NodeRole,
        cluster_id: &str,
        now: SystemTime,
        lifetime: Duration,
    ) -> Result<String, CaError> {
        let mut cert = shoal_ca::issue_node_certificate(
            &self.ca, csr_pem, node_id, role, cluster_id, now, lifetime,
        )?;
        if let Some(intermediate) = &self.intermediate {
            if !cert.ends_with('\n') {
                cert.push('\n');
            }
            cert.push_str(intermediate);
        }
        Ok(cert)
    }

    /// Whether `root` still calls for this signer (nothing rotated meanwhile).
    pub fn is_current(&self, root: &RootCa) -> bool {
        Signer::of(root).is_ok_and(|now| now.ca.cert_pem == self.ca.cert_pem)
    }
}

/// Starts a rotation in `root` (inside the transaction that raised `force_rotate`): a new
/// root valid from `now` for `lifetime`, cross-signed by the current one. A rotation already
/// pending is replaced by this one (see the module's notes).
pub fn start(
    root: &mut RootCa,
    force_rotate: u64,
    now: SystemTime,
    lifetime: Duration,
) -> Result<(), CaError> {
    let current = CaRoot {
        cert_pem: pem(&root.ca_cert),
        key_pem: pem(&root.ca_key),
    };
    let new = CaRoot::generate(now, lifetime)?;
    let cross = new.cross_signed_by(&current)?;
    root.root_rotation = Some(RootRotation {
        ca_cert: new.cert_pem.into_bytes(),
        ca_key: new.key_pem.into_bytes(),
        cross_signed_ca_cert: cross.into_bytes(),
    });
    root.last_forced_rotation = force_rotate;
    Ok(())
}

/// Finishes the rotation pending in `root`: the new root becomes the root, the join tokens
/// name its digest (keeping their secrets), and nothing is pending any more.
pub fn complete(root: &mut RootCa) -> Result<(), CaError> {
    let rotation = root
        .root_rotation
        .take()
        .ok_or_else(|| CaError::InvalidCertificate("no root rotation is pending".into()))?;
    let digest = shoal_ca::cert_digest(&pem(&rotation.ca_cert))?;
    let tokens = root.join_tokens.get_or_insert_with(Default::default);
    for token in [&mut tokens.worker, &mut tokens.manager] {
        *token = match JoinToken::parse(token) {
            Ok(parsed) => parsed.for_root(&digest),
            // A token that does not parse was unusable anyway: a fresh one.
            Err(_) => JoinToken::generate(&digest),
        }
        .to_string();
    }
    root.ca_cert = rotation.ca_cert;
    root.ca_key = rotation.ca_key;
    root.ca_cert_hash = digest;
    Ok(())
}

/// Where a node stands in a rotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// It reports a certificate from the new root, and trusts the new root: done.
    Rotated,
    /// The CA issued it a certificate from the new root, which it has not reported yet.
    Issued,
    /// Its certificate is marked for renewal (`ROTATE`, or `RENEW` for a role change); it has
    /// not renewed yet.
    Told,
    /// Still on the old root, and not told yet.
    Old,
}

/// Where `node` stands in a rotation to the root `new_root_pem`, reported as `new_root`.
pub fn progress(node: &Node, new_root_pem: &str, new_root: &RootReport) -> Progress {
    let reported = node
        .description
        .as_ref()
        .and_then(|d| d.tls_info.as_ref())
        .is_some_and(|t| new_root.reported_by(t));
    if reported {
        return Progress::Rotated;
    }
    let certificate = node.certificate.as_deref();
    let issued = certificate
        .and_then(|c| std::str::from_utf8(&c.certificate).ok())
        .is_some_and(|cert| shoal_ca::issued_by(cert, new_root_pem));
    if issued {
        return Progress::Issued;
    }
    let told = certificate
        .and_then(|c| c.status.as_ref())
        .is_some_and(|s| {
            s.state == issuance_status::State::Rotate as i32
                || s.state == issuance_status::State::Renew as i32
        });
    if told { Progress::Told } else { Progress::Old }
}

/// What the reconciler knows of a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    pub id: String,
    pub progress: Progress,
    /// READY: its agent has a session, and will act on a mark at once.
    pub up: bool,
}

impl NodeView {
    pub fn of(node: &Node, new_root_pem: &str, new_root: &RootReport) -> Self {
        NodeView {
            id: node.meta.as_ref().map(|m| m.id.clone()).unwrap_or_default(),
            progress: progress(node, new_root_pem, new_root),
            up: node
                .status
                .as_ref()
                .is_some_and(|s| s.state == node_status::State::Ready as i32),
        }
    }
}

/// What a round does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Every node reports a certificate from the new root: finish the rotation.
    Complete,
    /// Mark these nodes' certificates `ROTATE`.
    Tell(Vec<String>),
    /// Wait for the nodes in flight (and for the down ones to come back or be removed).
    Wait,
}

/// The next step of a pending rotation, from every node in the store: complete it once all
/// have rotated; else mark nodes still on the old root, as long as fewer than `batch` nodes
/// that are up are in flight (told or issued, not yet reported) — nodes that are up first,
/// then by ID, so the order is a function of the input. Down nodes are marked too, when the
/// batch has room (they renew when they come back) but do not count as in flight.
pub fn decide(nodes: &[NodeView], batch: usize) -> Decision {
    if nodes.iter().all(|n| n.progress == Progress::Rotated) {
        return Decision::Complete;
    }
    let in_flight = nodes
        .iter()
        .filter(|n| n.up && matches!(n.progress, Progress::Told | Progress::Issued))
        .count();
    let room = batch.saturating_sub(in_flight);
    let mut old: Vec<&NodeView> = nodes
        .iter()
        .filter(|n| n.progress == Progress::Old)
        .collect();
    old.sort_by(|a, b| b.up.cmp(&a.up).then_with(|| a.id.cmp(&b.id)));
    let mut tell = Vec::new();
    let mut up_told = 0;
    for node in old {
        if node.up {
            if up_told == room {
                continue;
            }
            up_told += 1;
        } else if tell.len() >= batch {
            break;
        }
        tell.push(node.id.clone());
    }
    if tell.is_empty() {
        Decision::Wait
    } else {
        Decision::Tell(tell)
    }
}

/// What a round found and did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Round {
    /// No rotation is pending.
    Idle,
    /// Nodes marked `ROTATE` (those still unchanged when written).
    Told(Vec<String>),
    /// Waiting for nodes.
    Waiting,
    /// The rotation completed.
    Completed,
}

/// The leader's root rotation reconciler; [`RootRotationReconciler::start`] spawns its loop
/// and the returned [`ReconcilerTask`] stops it.
pub struct RootRotationReconciler {
    store: Store,
    leadership: Arc<dyn Leadership>,
    batch: usize,
}

/// The running reconciler loop; [`ReconcilerTask::stop`] ends it and waits.
pub struct ReconcilerTask {
    stop: watch::Sender<bool>,
    join: Option<JoinHandle<()>>,
}

impl ReconcilerTask {
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(join) = self.join.take() {
            let _ = join.await;
        }
    }
}

impl Drop for ReconcilerTask {
    fn drop(&mut self) {
        if let Some(join) = self.join.take() {
            join.abort();
        }
    }
}

impl RootRotationReconciler {
    pub fn new(store: Store, raft: RaftHandle) -> Self {
        Self::with_leadership(store, Arc::new(raft))
    }

    pub(crate) fn with_leadership(store: Store, leadership: Arc<dyn Leadership>) -> Self {
        Self {
            store,
            leadership,
            batch: ROTATE_BATCH,
        }
    }

    /// Spawns the loop on the current runtime.
    pub fn start(self) -> ReconcilerTask {
        let (stop, stopped) = watch::channel(false);
        let join = tokio::spawn(self.run(stopped));
        ReconcilerTask {
            stop,
            join: Some(join),
        }
    }

    async fn run(self, mut stopped: watch::Receiver<bool>) {
        let mut status = self.leadership.watch();
        loop {
            // Lead with the store caught up, as the orchestrator: a new leader that has not
            // applied its predecessor's last entries would decide from a stale store.
            tokio::select! {
                () = async { let _ = stopped.wait_for(|s| *s).await; } => return,
                led = async {
                    status.wait_for(|s| s.is_leader && s.leader_caught_up).await.is_ok()
                } => if !led { return },
            }
            self.lead(&mut stopped, &mut status).await;
            if *stopped.borrow() {
                return;
            }
        }
    }

    /// Runs rounds while this manager leads.
    async fn lead(
        &self,
        stopped: &mut watch::Receiver<bool>,
        status: &mut watch::Receiver<shoal_raft::RaftStatus>,
    ) {
        let filter = Filter::all()
            .kind(ObjectKind::Cluster)
            .kind(ObjectKind::Node);
        let mut changes = self.store.watch(filter.clone());
        loop {
            if !status.borrow().is_leader || *stopped.borrow() {
                return;
            }
            match self.round().await {
                Ok(Round::Told(nodes)) => tracing::info!(
                    "root rotation: asked {} node(s) to renew their certificates: {}",
                    nodes.len(),
                    nodes.join(", ")
                ),
                Ok(Round::Completed) => {
                    tracing::info!(
                        "root rotation: every node holds a certificate from the new root; the rotation is complete"
                    )
                }
                Ok(Round::Idle | Round::Waiting) => {}
                Err(error) => {
                    if matches!(error, StoreError::SequenceConflict { .. }) {
                        tracing::debug!("root rotation: round failed ({error}); trying again");
                    } else {
                        tracing::warn!("root rotation: round failed ({error}); trying again");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            tokio::select! {
                () = async { let _ = stopped.wait_for(|s| *s).await; } => return,
                () = async { let _ = status.wait_for(|s| !s.is_leader).await; } => return,
                () = tokio::time::sleep(IDLE_ROUND) => {}
                event = changes.next() => {
                    // Take whatever else has arrived too: a burst makes one round.
                    let mut event = event.map(Some);
                    loop {
                        match event {
                            Ok(Some(_)) => {}
                            Ok(None) => break,
                            Err(_) => {
                                changes = self.store.watch(filter.clone());
                                break;
                            }
                        }
                        event = changes.try_next();
                    }
                }
            }
        }
    }

    /// One round: read the cluster and the nodes, decide, write.
    pub async fn round(&self) -> Result<Round, StoreError> {
        let Some(cluster) = self
            .store
            .view(|tx| tx.find::<Cluster>(By::All).into_iter().next())
        else {
            return Ok(Round::Idle);
        };
        let Some(rotation) = cluster
            .root_ca
            .as_ref()
            .and_then(|r| r.root_rotation.clone())
        else {
            return Ok(Round::Idle);
        };
        let new_root = pem(&rotation.ca_cert);
        let issuer = match RootReport::of(&new_root) {
            Ok(issuer) => issuer,
            Err(e) => {
                tracing::error!(
                    "root rotation: the new root cannot be read ({e}); start the rotation again with `shoal swarm ca --rotate`"
                );
                return Ok(Round::Waiting);
            }
        };
        let views: Vec<NodeView> = self.store.view(|tx| {
            tx.find::<Node>(By::All)
                .iter()
                .map(|n| NodeView::of(n, &new_root, &issuer))
                .collect()
        });
        match decide(&views, self.batch) {
            Decision::Wait => Ok(Round::Waiting),
            Decision::Tell(ids) => {
                let mut told = Vec::new();
                for id in ids {
                    let written = self
                        .store
                        .update(|tx| {
                            let Some(node) = tx.get::<Node>(&id) else {
                                return Ok(false);
                            };
                            if progress(&node, &new_root, &issuer) != Progress::Old {
                                return Ok(false);
                            }
                            let mut node = (*node).clone();
                            node.certificate.get_or_insert_with(Default::default).status =
                                Some(IssuanceStatus {
                                    state: issuance_status::State::Rotate as i32,
                                    err: String::new(),
                                });
                            tx.update(node)?;
                            Ok(true)
                        })
                        .await;
                    match written {
                        Ok(true) => told.push(id),
                        Ok(false) => {}
                        // A node written meanwhile (a session, a renewal): the next round,
                        // which that write wakes, looks again.
                        Err(e) if e.class() == shoal_store::ErrorClass::Conflict => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(Round::Told(told))
            }
            Decision::Complete => {
                let cluster_id = cluster
                    .meta
                    .as_ref()
                    .map(|m| m.id.clone())
                    .unwrap_or_default();
                let completed = self
                    .store
                    .update(|tx| {
                        let Some(current) = tx.get::<Cluster>(&cluster_id) else {
                            return Ok(false);
                        };
                        let still = current
                            .root_ca
                            .as_ref()
                            .and_then(|r| r.root_rotation.as_ref())
                            .is_some_and(|r| r.ca_cert == rotation.ca_cert);
                        if !still {
                            return Ok(false);
                        }
                        // Every node read by ID: one that changes before this commits makes
                        // it conflict, and the next round decides again.
                        let ids: Vec<String> = tx
                            .find::<Node>(By::All)
                            .iter()
                            .map(|n| n.meta.as_ref().map(|m| m.id.clone()).unwrap_or_default())
                            .collect();
                        for id in &ids {
                            let rotated = tx.get::<Node>(id).is_some_and(|n| {
                                progress(&n, &new_root, &issuer) == Progress::Rotated
                            });
                            if !rotated {
                                return Ok(false);
                            }
                        }
                        let mut updated = (*current).clone();
                        let root = updated.root_ca.get_or_insert_with(Default::default);
                        complete(root).map_err(|e| {
                            StoreError::InvalidTransaction(format!(
                                "completing the root rotation: {e}"
                            ))
                        })?;
                        tx.update(updated)?;
                        Ok(true)
                    })
                    .await?;
                Ok(if completed {
                    Round::Completed
                } else {
                    Round::Waiting
                })
            }
        }
    }
}

#[cfg(test)]
mod tests;
