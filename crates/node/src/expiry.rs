//! A node whose certificate expired while it was off.
//!
//! A node proves who it is with its certificate; once the certificate's `not_after` has
//! passed, no manager accepts it (TLS refuses it at the handshake), and it cannot be renewed
//! either: a renewal is signed for the identity a *valid* certificate proves. A node that was
//! off past that point (a laptop in a drawer, a host down for the holidays with short
//! certificates) would start and then fail every handshake (moby/moby#24132). At start,
//! before anything else changes, [`on_start`] looks at the certificate in the state
//! directory and, if it has expired (by the daemon's clock):
//!
//! - **with `--join-token`** (and `--join-addr`, or else the managers `node.json`
//!   remembers): the node joins again. The CA cannot tell that the token's holder is the
//!   old node, so this is a *new* node identity: a new node ID, certificate and key replace
//!   the old ones in the state directory (which stays, with its lock and task db; a former
//!   manager's Raft state goes). The log names the old node ID and says to remove it on a
//!   manager (`shoal node rm OLD-ID`); until then the cluster lists it as down. This is the
//!   only case where `--join-addr` is taken by a node that already belongs to a cluster.
//! - **a manager with `--force-new-cluster`**: it holds the cluster's root CA key in its Raft
//!   store. Once the store is loaded (and rewritten into a one-member cluster),
//!   [`reissue_if_expired`] signs it a fresh certificate from that root — same node ID,
//!   manager role, the cluster's certificate lifetime — saves it and puts it in use before
//!   any server starts; [`record_certificate`] then writes it into the node's object, as
//!   the CA does for a renewal, once this manager leads.
//! - **otherwise**: the daemon does not start. The error says when the certificate expired
//!   and exactly what to run; nothing in the state directory changes.
//!
//! # Departures from SwarmKit
//!
//! SwarmKit's node refuses to start with an expired certificate, except that
//! `--force-new-cluster` lets a manager renew it from its own CA key (swarmkit#1919, its
//! TestForceNewCluster). A worker's only way back there is to wipe its state and join again
//! by hand; here the worker joins again with a token and keeps its state directory.

use std::sync::Arc;
use std::time::Duration;

use shoal_api::clock::SystemClock;
use shoal_api::v1::{Certificate, Cluster, Node, NodeRole};
use shoal_executor::process::logs::format_timestamp;
use shoal_raft::RaftHandle;
use shoal_store::{By, LocalProposer, Reader, StateMachine, Store};
use shoal_tls::{Credentials, NodeCertificates};

use crate::daemon::DaemonConfig;
use crate::error::NodeError;
use crate::keys::NodeKeys;
use crate::state_dir::StateDir;

/// What [`on_start`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// The certificate is valid (or there is none, or no identity: start-up says what then).
    Valid,
    /// It had expired; the node joined again with the token, as a new node.
    Rejoined,
    /// A manager's certificate had expired and `--force-new-cluster` is set: it is renewed
    /// from the store once the store is loaded ([`reissue_if_expired`]).
    ReissueUnderForce,
}

fn role_name(role: NodeRole) -> &'static str {
    match role {
        NodeRole::Manager => "manager",
        NodeRole::Worker => "worker",
    }
}

/// Looks at this node's certificate before it starts, and acts if it has expired (see the
/// module notes).
pub(crate) async fn on_start(
    config: &DaemonConfig,
    state_dir: &StateDir,
) -> Result<Expiry, NodeError> {
    if config.init {
        // A node that already belongs to a cluster is refused `--init` further on.
        return Ok(Expiry::Valid);
    }
    let Some(identity) = state_dir.identity()? else {
        return Ok(Expiry::Valid);
    };
    // Missing or unreadable certificates are reported by the start-up that follows; a key
    // file sealed with an unlock key the daemon was not given is [`NodeError::Locked`], which
    // the supervisor answers by waiting, locked, for the key.
    let Some(keys) = NodeKeys::open(state_dir.path(), config.unlock_key.as_ref())? else {
        return Ok(Expiry::Valid);
    };
    let Some(certificates) = crate::certificates::load_with(&keys)? else {
        return Ok(Expiry::Valid);
    };
    let Ok(certificate) = shoal_ca::parse_node_certificate(&certificates.cert_pem) else {
        return Ok(Expiry::Valid);
    };
    if !certificate.expired_at(config.clock.now()) {
        return Ok(Expiry::Valid);
    }
    let old = certificate.node_id.as_str();
    let expired = format_timestamp(certificate.not_after);
    if let Some(token) = &config.join_token {
        if config.force_new_cluster {
            return Err(NodeError::Config(format!(
                "this node's certificate expired at {expired}, and both --join-token and \
                 --force-new-cluster were given: choose one (--force-new-cluster to keep this \
                 manager's cluster as its only manager, --join-token to join a cluster again \
                 as a new node)"
            )));
        }
        rejoin(config, state_dir, &identity, &certificate, token).await?;
        return Ok(Expiry::Rejoined);
    }
    let managers = if identity.managers.is_empty() {
        "MANAGER".to_string()
    } else {
        identity.managers.join(" or ")
    };
    match certificate.role {
        NodeRole::Manager if config.force_new_cluster => {
            tracing::warn!(
                node_id = %old,
                "this manager's certificate expired at {expired}; forcing a new cluster, it \
                 issues itself a new one from the cluster's root CA in its store"
            );
            Ok(Expiry::ReissueUnderForce)
        }
        NodeRole::Manager => Err(NodeError::Config(format!(
            "this manager's certificate (node {old}) expired at {expired}, while the daemon \
             was not running: it can no longer prove who it is to the cluster, so the daemon \
             did not start (nothing was changed). If it is the only manager of its cluster, \
             start it with --force-new-cluster: it issues itself a new certificate from the \
             cluster's root CA, which its store holds, and keeps all the cluster's data. If \
             the cluster has other managers, on one of them run `shoal node demote {old}` \
             and `shoal node rm {old}`, then start this one with `shoal daemon --join-token \
             TOKEN --join-addr {managers} …` (a manager token, from `shoal swarm join-token \
             manager` on a manager): it joins again as a new manager"
        ))),
        NodeRole::Worker => Err(NodeError::Config(format!(
            "this node's certificate (node {old}, a worker) expired at {expired}, while the \
             daemon was not running: it can no longer prove who it is to the cluster, so the \
             daemon did not start (nothing was changed). To join again, get the worker token \
             on a manager (`shoal swarm join-token worker`) and start this node with `shoal \
             daemon --join-token TOKEN --join-addr {managers} …` (--join-addr may be left out \
             to use the managers it knows). It joins as a new node; then remove the old one \
             on a manager: `shoal node rm {old}`"
        ))),
    }
}

/// Joins the cluster again with `token`, through `--join-addr` or else the managers this node
/// knows, replacing its identity and certificates.
async fn rejoin(
    config: &DaemonConfig,
    state_dir: &StateDir,
    identity: &crate::state_dir::NodeIdentity,
    certificate: &shoal_ca::NodeIdentity,
    token: &str,
) -> Result<(), NodeError> {
    let old = certificate.node_id.as_str();
    let addrs: Vec<String> = match &config.join_addr {
        Some(addr) => vec![addr.clone()],
        None => identity.managers.clone(),
    };
    if addrs.is_empty() {
        return Err(NodeError::Config(format!(
            "this node's certificate (node {old}) expired and it knows no manager to join \
             through: give one with --join-addr MANAGER"
        )));
    }
    tracing::warn!(
        node_id = %old,
        "this node's certificate expired at {}; joining the cluster again with the join token. \
         The cluster's CA cannot tell that the token's holder is node {old}: this node gets a \
         new node ID",
        format_timestamp(certificate.not_after)
    );
    let mut last = NodeError::Config("no manager to join through".into());
    for addr in &addrs {
        match crate::daemon::join_cluster(state_dir, addr, token, config.availability).await {
            Ok((joined, issued)) => {
                if identity.raft_id != 0 {
                    // A former manager: its Raft state belongs to the old member.
                    state_dir.remove_raft()?;
                }
                let demote = if certificate.role == NodeRole::Manager {
                    format!("`shoal node demote {old}`, then ")
                } else {
                    String::new()
                };
                tracing::warn!(
                    node_id = %joined.node_id,
                    old_node_id = %old,
                    "joined the cluster again as node {} (a {}). The cluster still lists the \
                     old node {old}, which stays down: remove it on a manager with {demote}`shoal \
                     node rm {old}`",
                    joined.node_id,
                    role_name(issued.identity.role)
                );
                return Ok(());
            }
            Err(e) => {
                tracing::warn!("joining again through {addr} failed: {e}");
                last = e;
            }
        }
    }
    Err(last)
}

/// Under `--force-new-cluster`, a manager whose certificate has expired: signs it a new one
/// from the cluster's root CA in `state` (the store just loaded), for the same node ID, as a
/// manager, for the cluster's certificate lifetime; saves it and puts it in use. Returns the
/// record the node's object should keep of it, or `None` if the certificate is valid.
pub(crate) fn reissue_if_expired(
    config: &DaemonConfig,
    keys: &NodeKeys,
    state: &Arc<StateMachine>,
    credentials: &Credentials,
) -> Result<Option<Certificate>, NodeError> {
    let current = credentials.identity();
    let now = config.clock.now();
    if !current.expired_at(now) {
        return Ok(None);
    }
    let view = Store::with_state(
        state.clone(),
        Arc::new(LocalProposer),
        Arc::new(SystemClock),
    );
    let cluster = view.view(|tx| tx.find::<Cluster>(By::All).into_iter().next());
    let cannot = |why: String| {
        NodeError::StateDir(format!(
            "this manager's certificate (node {}) expired and cannot be renewed from its store: \
             {why}; restore the state directory from a backup, or join a cluster again with a \
             token from an empty state directory",
            current.node_id
        ))
    };
    let cluster = cluster.ok_or_else(|| cannot("it holds no cluster object".into()))?;
    let cluster_id = cluster.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("");
    if cluster_id != current.cluster_id {
        return Err(cannot(format!(
            "the store belongs to cluster {cluster_id}, the certificate to cluster {}",
            current.cluster_id
        )));
    }
    let lifetime = shoal_manager::cluster::node_cert_lifetime(&cluster);
    let (record, cert_pem, key_pem) = shoal_manager::cluster::issue_manager_certificate(
        &cluster,
        &current.node_id,
        std::time::SystemTime::now(),
        lifetime,
    )
    .map_err(|e| cannot(e.to_string()))?;
    let certificates = NodeCertificates {
        root_pem: credentials.certificates().root_pem,
        cert_pem,
        key_pem,
    };
    credentials
        .update(certificates.clone())
        .map_err(|e| cannot(format!("the new certificate is unusable: {e}")))?;
    crate::certificates::save_certificates(keys, &certificates)?;
    let renewed = credentials.identity();
    tracing::warn!(
        node_id = %renewed.node_id,
        "issued this manager a new certificate from the cluster's root CA (the old one \
         expired at {}); it is valid until {}",
        format_timestamp(current.not_after),
        format_timestamp(renewed.not_after)
    );
    Ok(Some(record))
}

/// How long [`record_certificate`] waits for this manager to lead.
const RECORD_WAIT: Duration = Duration::from_secs(120);

/// Writes `record` (a certificate [`reissue_if_expired`] issued) into node `node_id`'s object,
/// as the CA does for a renewal, once this manager leads and has caught up. A few tries
/// against concurrent writers; a failure is logged (the certificate is in use regardless,
/// and the next renewal records its successor).
pub(crate) async fn record_certificate(
    store: Store,
    raft: RaftHandle,
    node_id: String,
    record: Certificate,
) {
    let mut status = raft.watch_status();
    let leads = matches!(
        tokio::time::timeout(RECORD_WAIT, status.wait_for(|s| s.leader_caught_up)).await,
        Ok(Ok(_))
    );
    if !leads {
        tracing::warn!(
            "this manager did not lead within {RECORD_WAIT:?}: its node object still shows its \
             expired certificate, until its next renewal"
        );
        return;
    }
    for _ in 0..5 {
        let written = store
            .update(|tx| {
                let current =
                    tx.get::<Node>(&node_id)
                        .ok_or_else(|| shoal_store::StoreError::NotFound {
                            kind: "node",
                            what: node_id.clone(),
                        })?;
                let mut updated = (*current).clone();
                updated.role = NodeRole::Manager as i32;
                updated.certificate = Some(Box::new(record.clone()));
                tx.update(updated)
            })
            .await;
        match written {
            Ok(()) => return,
            Err(e) if e.is_conflict() => continue,
            Err(e) => {
                tracing::warn!("recording this manager's new certificate failed: {e}");
                return;
            }
        }
    }
    tracing::warn!("recording this manager's new certificate kept conflicting; left as it was");
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::time::SystemTime;

    use shoal_api::clock::ManualClock;

    use super::*;
    use crate::state_dir::NodeIdentity;

    const HOUR: Duration = Duration::from_secs(3600);

    /// A node's state directory: its identity (knowing manager `127.0.0.1:1`) and a
    /// certificate of `role` from `cluster`'s CA, lasting an hour from now.
    fn node_state(dir: &Path, cluster: &Cluster, role: NodeRole) -> (StateDir, String) {
        let state = StateDir::open(dir).unwrap();
        let root = cluster.root_ca.as_ref().unwrap();
        let ca = shoal_ca::RootCa {
            cert_pem: String::from_utf8(root.ca_cert.clone()).unwrap(),
            key_pem: String::from_utf8(root.ca_key.clone()).unwrap(),
        };
        let (key_pem, csr) = shoal_ca::node_key_and_csr().unwrap();
        let node_id = shoal_api::id::new_id();
        let cert_pem = shoal_ca::issue_node_certificate(
            &ca,
            &csr,
            &node_id,
            role,
            cluster.meta.as_ref().unwrap().id.as_str(),
            SystemTime::now(),
            HOUR,
        )
        .unwrap();
        crate::certificates::save_certificates(
            &NodeKeys::new(dir),
            &NodeCertificates {
                root_pem: ca.cert_pem.clone(),
                cert_pem,
                key_pem,
            },
        )
        .unwrap();
        state
            .save_identity(&NodeIdentity {
                node_id: node_id.clone(),
                raft_id: if role == NodeRole::Manager { 7 } else { 0 },
                advertise_addr: String::new(),
                managers: vec!["127.0.0.1:1".into()],
            })
            .unwrap();
        (state, node_id)
    }

    /// A daemon configuration whose clock reads `later` past now.
    fn config(dir: &Path, later: Duration) -> DaemonConfig {
        let mut config = DaemonConfig::new(dir.to_path_buf());
        config.clock = Arc::new(ManualClock::new(SystemTime::now() + later));
        config
    }

    /// Every file of the state directory and its content, but the lock.
    fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        let mut dirs = vec![dir.to_path_buf()];
        while let Some(d) = dirs.pop() {
            for entry in std::fs::read_dir(&d).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else if entry.file_name() != "lock" {
                    out.push((path.clone(), std::fs::read(&path).unwrap()));
                }
            }
        }
        out.sort();
        out
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn a_valid_certificate_starts_as_usual() {
        let dir = tempfile::tempdir().unwrap();
        let cluster = shoal_manager::cluster::new_cluster(SystemTime::now()).unwrap();
        let (state, _) = node_state(dir.path(), &cluster, NodeRole::Worker);
        let within = config(dir.path(), HOUR / 2);
        assert_eq!(block_on(on_start(&within, &state)).unwrap(), Expiry::Valid);
        // No identity yet: nothing to look at.
        let empty = tempfile::tempdir().unwrap();
        let fresh = StateDir::open(empty.path()).unwrap();
        let cfg = config(empty.path(), 2 * HOUR);
        assert_eq!(block_on(on_start(&cfg, &fresh)).unwrap(), Expiry::Valid);
    }

    #[test]
    fn an_expired_worker_without_a_token_is_told_what_to_run_and_nothing_changes() {
        let dir = tempfile::tempdir().unwrap();
        let cluster = shoal_manager::cluster::new_cluster(SystemTime::now()).unwrap();
        let (state, node_id) = node_state(dir.path(), &cluster, NodeRole::Worker);
        let before = files(dir.path());
        let late = config(dir.path(), 2 * HOUR);
        let e = block_on(on_start(&late, &state)).unwrap_err().to_string();
        for says in [
            format!("this node's certificate (node {node_id}, a worker) expired at "),
            "`shoal swarm join-token worker`".into(),
            "`shoal daemon --join-token TOKEN --join-addr 127.0.0.1:1 …`".into(),
            format!("`shoal node rm {node_id}`"),
        ] {
            assert!(e.contains(&says), "{says:?} missing from: {e}");
        }
        // --force-new-cluster is for managers: the same answer.
        let mut forced = config(dir.path(), 2 * HOUR);
        forced.force_new_cluster = true;
        assert!(block_on(on_start(&forced, &state)).is_err());
        assert_eq!(files(dir.path()), before);
    }

    #[test]
    fn an_expired_manager_needs_force_new_cluster_or_a_token_not_both() {
        let dir = tempfile::tempdir().unwrap();
        let cluster = shoal_manager::cluster::new_cluster(SystemTime::now()).unwrap();
        let (state, node_id) = node_state(dir.path(), &cluster, NodeRole::Manager);
        let before = files(dir.path());
        let late = config(dir.path(), 2 * HOUR);
        let e = block_on(on_start(&late, &state)).unwrap_err().to_string();
        for says in [
            format!("this manager's certificate (node {node_id}) expired at "),
            "start it with --force-new-cluster".into(),
            format!("`shoal node demote {node_id}` and `shoal node rm {node_id}`"),
            "`shoal swarm join-token manager`".into(),
        ] {
            assert!(e.contains(&says), "{says:?} missing from: {e}");
        }
        let mut forced = config(dir.path(), 2 * HOUR);
        forced.force_new_cluster = true;
        assert_eq!(
            block_on(on_start(&forced, &state)).unwrap(),
            Expiry::ReissueUnderForce
        );
        forced.join_token = Some("SWMTKN-1-x".into());
        let e = block_on(on_start(&forced, &state)).unwrap_err().to_string();
        assert!(e.contains("choose one"), "{e}");
        assert_eq!(files(dir.path()), before);
    }

    #[test]
    fn a_token_needs_a_manager_to_join_through() {
        let dir = tempfile::tempdir().unwrap();
        let cluster = shoal_manager::cluster::new_cluster(SystemTime::now()).unwrap();
        let (state, node_id) = node_state(dir.path(), &cluster, NodeRole::Worker);
        let mut identity = state.identity().unwrap().unwrap();
        identity.managers.clear();
        state.save_identity(&identity).unwrap();
        let before = files(dir.path());
        let mut late = config(dir.path(), 2 * HOUR);
        late.join_token = Some("SWMTKN-1-x".into());
        let e = block_on(on_start(&late, &state)).unwrap_err().to_string();
        assert!(e.contains(&format!("node {node_id}")), "{e}");
        assert!(e.contains("--join-addr MANAGER"), "{e}");
        // A token that is not one: refused before any manager is asked; nothing changes.
        late.join_addr = Some("127.0.0.1:1".into());
        late.join_token = Some("not-a-token".into());
        assert!(block_on(on_start(&late, &state)).is_err());
        assert_eq!(files(dir.path()), before);
    }

    #[test]
    fn a_manager_reissues_its_certificate_from_the_store_under_force_new_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let mut cluster = shoal_manager::cluster::new_cluster(now).unwrap();
        cluster
            .spec
            .as_mut()
            .unwrap()
            .ca_config
            .as_mut()
            .unwrap()
            .node_cert_expiry = Some(prost_types::Duration {
            seconds: 2 * 3600,
            nanos: 0,
        });
        let (_state_dir, node_id) = node_state(dir.path(), &cluster, NodeRole::Manager);
        let credentials =
            Credentials::new(crate::certificates::load(dir.path()).unwrap().unwrap()).unwrap();
        let keys = NodeKeys::open(dir.path(), None).unwrap().unwrap();
        // The store as a manager loads it: the cluster (its root CA key) and this node.
        let (node, _, _) =
            shoal_manager::cluster::first_manager(&cluster, &node_id, "m1", now).unwrap();
        let state = Arc::new(StateMachine::new(16));
        state
            .apply(shoal_manager::cluster::initial_state(cluster, node, now))
            .unwrap();

        // Still valid: nothing to do.
        let valid = config(dir.path(), HOUR / 2);
        assert!(
            reissue_if_expired(&valid, &keys, &state, &credentials)
                .unwrap()
                .is_none()
        );
        let late = config(dir.path(), 2 * HOUR);
        let record = reissue_if_expired(&late, &keys, &state, &credentials)
            .unwrap()
            .expect("a new certificate");
        let renewed = credentials.identity();
        assert_eq!(renewed.node_id, node_id);
        assert_eq!(renewed.role, NodeRole::Manager);
        assert_eq!(
            renewed
                .not_after
                .duration_since(renewed.issued_at())
                .unwrap(),
            2 * HOUR,
            "the cluster's lifetime"
        );
        assert_eq!(
            record.certificate,
            credentials.certificates().cert_pem.as_bytes()
        );
        // On disk too, so the next start finds it.
        let saved = crate::certificates::load(dir.path()).unwrap().unwrap();
        assert_eq!(saved, credentials.certificates());

        // A store without the cluster object cannot sign anything: said, nothing changed.
        let empty = Arc::new(StateMachine::new(16));
        let later = config(dir.path(), 3 * HOUR);
        let before = files(dir.path());
        let e = reissue_if_expired(&later, &keys, &empty, &credentials)
            .unwrap_err()
            .to_string();
        assert!(e.contains("holds no cluster object"), "{e}");
        assert_eq!(files(dir.path()), before);
    }
}
