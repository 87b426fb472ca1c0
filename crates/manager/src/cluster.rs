//! The cluster object: created once, when a cluster is started, with the cluster's root CA
//! and join tokens and the default cluster spec.

use std::sync::Arc;
use std::time::SystemTime;

use shoal_api::defaults;
use shoal_api::v1::{
    Annotations, CaConfig, Certificate, Cluster, ClusterSpec, DispatcherConfig, EncryptionKey,
    IssuanceStatus, JoinTokens, Meta, Node, NodeDescription, NodeRole, NodeSpec,
    OrchestrationConfig, RaftConfig, RootCa, issuance_status, node_spec,
};
use shoal_ca::{CaError, JoinToken, RootCa as CaRoot};
use shoal_store::{Action, Change, ChangeSet, Object};

fn duration(d: std::time::Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// The default cluster spec (SwarmKit's defaults, with our Raft timing).
pub fn default_spec() -> ClusterSpec {
    ClusterSpec {
        annotations: Some(Annotations {
            name: defaults::CLUSTER_NAME.into(),
            ..Default::default()
        }),
        orchestration: Some(OrchestrationConfig {
            task_history_retention_limit: defaults::TASK_HISTORY_RETENTION_LIMIT,
        }),
        raft: Some(RaftConfig {
            snapshot_interval: defaults::RAFT_SNAPSHOT_INTERVAL,
            keep_old_snapshots: defaults::RAFT_KEEP_OLD_SNAPSHOTS,
            log_entries_for_slow_followers: defaults::RAFT_LOG_ENTRIES_FOR_SLOW_FOLLOWERS,
            heartbeat_tick: defaults::RAFT_HEARTBEAT_TICK,
            election_tick: defaults::RAFT_ELECTION_TICK,
        }),
        dispatcher: Some(DispatcherConfig {
            heartbeat_period: Some(duration(defaults::HEARTBEAT_PERIOD)),
        }),
        ca_config: Some(CaConfig {
            node_cert_expiry: Some(duration(defaults::NODE_CERT_EXPIRY)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A new cluster object: a fresh cluster ID, root CA and one join token per role.
pub fn new_cluster(now: SystemTime) -> Result<Cluster, CaError> {
    let root = CaRoot::generate(now, defaults::ROOT_CA_EXPIRY)?;
    let digest = root.digest()?;
    Ok(Cluster {
        meta: Some(Meta {
            id: shoal_api::id::new_id(),
            ..Default::default()
        }),
        spec: Some(default_spec()),
        root_ca: Some(RootCa {
            ca_key: root.key_pem.into_bytes(),
            ca_cert: root.cert_pem.into_bytes(),
            ca_cert_hash: digest.clone(),
            join_tokens: Some(JoinTokens {
                worker: JoinToken::generate(&digest).to_string(),
                manager: JoinToken::generate(&digest).to_string(),
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// How long the cluster's node certificates last: its spec's `ca_config.node_cert_expiry`, or
/// the default (90 days).
pub fn node_cert_lifetime(cluster: &Cluster) -> std::time::Duration {
    cluster
        .spec
        .as_ref()
        .and_then(|s| s.ca_config.as_ref())
        .and_then(|c| c.node_cert_expiry.as_ref())
        .map(shoal_api::validation::to_std_duration)
        .unwrap_or(defaults::NODE_CERT_EXPIRY)
}

/// A new key and a manager certificate for `node_id`, signed by the cluster's root CA (whose
/// key this manager holds in its store) and valid for `lifetime` from `now`: the record a Node
/// keeps of it, the certificate (PEM) and the key (PEM).
pub fn issue_manager_certificate(
    cluster: &Cluster,
    node_id: &str,
    now: SystemTime,
    lifetime: std::time::Duration,
) -> Result<(Certificate, String, String), CaError> {
    let root = cluster
        .root_ca
        .as_ref()
        .filter(|r| !r.ca_key.is_empty())
        .ok_or_else(|| CaError::InvalidKey("the cluster object holds no root CA key".into()))?;
    let ca = CaRoot {
        cert_pem: String::from_utf8_lossy(&root.ca_cert).into_owned(),
        key_pem: String::from_utf8_lossy(&root.ca_key).into_owned(),
    };
    let cluster_id = cluster
        .meta
        .as_ref()
        .map(|m| m.id.clone())
        .unwrap_or_default();
    let (key_pem, csr_pem) = shoal_ca::node_key_and_csr()?;
    let cert_pem = shoal_ca::issue_node_certificate(
        &ca,
        &csr_pem,
        node_id,
        NodeRole::Manager,
        &cluster_id,
        now,
        lifetime,
    )?;
    let record = Certificate {
        role: NodeRole::Manager as i32,
        csr: csr_pem.into_bytes(),
        status: Some(IssuanceStatus {
            state: issuance_status::State::Issued as i32,
            err: String::new(),
        }),
        certificate: cert_pem.clone().into_bytes(),
        cn: node_id.to_string(),
    };
    Ok((record, cert_pem, key_pem))
}

/// The first manager of a new cluster: its Node object and its certificate (PEM) and key.
pub fn first_manager(
    cluster: &Cluster,
    node_id: &str,
    hostname: &str,
    now: SystemTime,
) -> Result<(Node, String, String), CaError> {
    let (record, cert_pem, key_pem) =
        issue_manager_certificate(cluster, node_id, now, defaults::NODE_CERT_EXPIRY)?;
    let node = Node {
        meta: Some(Meta {
            id: node_id.to_string(),
            ..Default::default()
        }),
        spec: Some(NodeSpec {
            desired_role: NodeRole::Manager as i32,
            membership: node_spec::Membership::Accepted as i32,
            ..Default::default()
        }),
        description: Some(Box::new(NodeDescription {
            hostname: hostname.to_string(),
            ..Default::default()
        })),
        role: NodeRole::Manager as i32,
        certificate: Some(Box::new(record)),
        ..Default::default()
    };
    Ok((node, cert_pem, key_pem))
}

/// The transaction a new cluster's store starts with: the cluster object and its first
/// manager, stamped at `now`.
pub fn initial_state(mut cluster: Cluster, mut node: Node, now: SystemTime) -> ChangeSet {
    for meta in [
        cluster.meta.get_or_insert_with(Meta::default),
        node.meta.get_or_insert_with(Meta::default),
    ] {
        meta.created_at = Some(now.into());
        meta.updated_at = Some(now.into());
    }
    ChangeSet {
        changes: vec![
            Change {
                action: Action::Create,
                object: Object::Cluster(Arc::new(cluster)),
            },
            Change {
                action: Action::Create,
                object: Object::Node(Arc::new(node)),
            },
        ],
        reads: vec![],
    }
}

/// The subsystem of the managers' unlock key in `Cluster.unlock_keys`.
pub const UNLOCK_KEY_SUBSYSTEM: &str = "manager";

/// Whether the cluster's managers are autolocked.
pub fn autolock(cluster: &Cluster) -> bool {
    cluster
        .spec
        .as_ref()
        .and_then(|s| s.encryption_config.as_ref())
        .is_some_and(|e| e.auto_lock_managers)
}

/// The managers' unlock key, while autolock is on.
pub fn unlock_key(cluster: &Cluster) -> Option<&[u8]> {
    if !autolock(cluster) {
        return None;
    }
    cluster
        .unlock_keys
        .iter()
        .find(|k| k.subsystem == UNLOCK_KEY_SUBSYSTEM && !k.key.is_empty())
        .map(|k| k.key.as_slice())
}

/// A new random unlock key, as the cluster object keeps it.
pub fn new_unlock_key() -> EncryptionKey {
    EncryptionKey {
        subsystem: UNLOCK_KEY_SUBSYSTEM.to_string(),
        algorithm: "chacha20-poly1305".to_string(),
        key: rand::random::<[u8; shoal_api::unlock_key::KEY_LEN]>().to_vec(),
        lamport_time: 0,
    }
}

/// Makes the cluster's unlock keys follow its spec: a key while autolock is on (a new one if
/// there is none, or if `rotate`), none while it is off. Rotating with autolock off is
/// refused, saying why.
pub fn reconcile_unlock_key(cluster: &mut Cluster, rotate: bool) -> Result<(), String> {
    if autolock(cluster) {
        if rotate || unlock_key(cluster).is_none() {
            cluster.unlock_keys = vec![new_unlock_key()];
        }
    } else {
        if rotate {
            return Err(
                "the unlock key cannot be rotated: autolock is off, so there is no \
                        key; turn it on with `shoal swarm update --autolock=true`"
                    .into(),
            );
        }
        cluster.unlock_keys.clear();
    }
    Ok(())
}

/// The cluster as clients may see it: without the CA's private keys and the unlock key
/// (which `GetUnlockKey` gives to managers).
pub fn redacted(cluster: &Cluster) -> Cluster {
    let mut c = cluster.clone();
    c.unlock_keys.clear();
    if let Some(root) = c.root_ca.as_mut() {
        root.ca_key.clear();
        if let Some(rotation) = root.root_rotation.as_mut() {
            rotation.ca_key.clear();
        }
    }
    if let Some(ca) = c.spec.as_mut().and_then(|s| s.ca_config.as_mut()) {
        ca.signing_ca_key.clear();
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_cluster_has_a_root_and_tokens_naming_it() {
        let c = new_cluster(SystemTime::now()).unwrap();
        let root = c.root_ca.as_ref().unwrap();
        let cert = String::from_utf8(root.ca_cert.clone()).unwrap();
        assert_eq!(shoal_ca::cert_digest(&cert).unwrap(), root.ca_cert_hash);
        let tokens = root.join_tokens.as_ref().unwrap();
        let worker = JoinToken::parse(&tokens.worker).unwrap();
        let manager = JoinToken::parse(&tokens.manager).unwrap();
        assert_eq!(worker.ca_digest, root.ca_cert_hash);
        assert!(!worker.matches(&manager));
        let shown = redacted(&c);
        assert!(shown.root_ca.as_ref().unwrap().ca_key.is_empty());
        assert!(!c.root_ca.as_ref().unwrap().ca_key.is_empty());
    }

    #[test]
    fn a_manager_certificate_lasts_what_it_is_asked_and_needs_the_root_key() {
        let now = SystemTime::now();
        let mut c = new_cluster(now).unwrap();
        assert_eq!(node_cert_lifetime(&c), defaults::NODE_CERT_EXPIRY);
        c.spec
            .as_mut()
            .unwrap()
            .ca_config
            .as_mut()
            .unwrap()
            .node_cert_expiry = Some(duration(std::time::Duration::from_secs(600)));
        let lifetime = node_cert_lifetime(&c);
        assert_eq!(lifetime, std::time::Duration::from_secs(600));
        let (record, pem, key) = issue_manager_certificate(&c, "n1", now, lifetime).unwrap();
        let id = shoal_ca::parse_node_certificate(&pem).unwrap();
        assert_eq!((id.node_id.as_str(), id.role), ("n1", NodeRole::Manager));
        assert_eq!(
            id.not_after.duration_since(id.issued_at()).unwrap(),
            lifetime
        );
        assert_eq!(record.certificate, pem.as_bytes());
        assert!(key.contains("PRIVATE KEY"));
        // A redacted cluster (as clients see it) cannot sign anything.
        let e = issue_manager_certificate(&redacted(&c), "n1", now, lifetime).unwrap_err();
        assert!(e.to_string().contains("no root CA key"), "{e}");
    }
}
