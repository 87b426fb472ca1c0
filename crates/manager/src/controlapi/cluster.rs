//! Clusters: get, list, and update — the spec (validated; the CA's keys in it cannot be set
//! this way), the rotation of join tokens (a rotated token stops working at once, since
//! the CA only accepts the tokens in the cluster object) and autolock: turning
//! `encryption_config.auto_lock_managers` on gives the cluster an unlock key (rotated on
//! request), turning it off removes it; every manager then seals its key file with the key,
//! or stops sealing it (see the node's `keys` module). The CA's private keys and the unlock
//! key are never returned with the cluster; `GetUnlockKey` gives the key to managers.
//!
//! Raising `spec.ca_config.force_rotate` (what `swarm ca --rotate` sends) starts a root CA
//! rotation in the same transaction: a new root, cross-signed by the current one, stored in
//! `root_ca.root_rotation` (see [`crate::root_rotation`], whose reconciler finishes it). A
//! rotation already pending is started over with a fresh root, as SwarmKit does. Lowering
//! the value is refused, changing nothing; leaving it as it is starts nothing.
//!
//! Certificates must last at least the CA's minimum
//! ([`minimum_node_cert_expiry`](crate::ca_server::minimum_node_cert_expiry): one hour, lower
//! only under a test knob).

use shoal_api::v1::{
    Cluster, GetClusterRequest, GetClusterResponse, GetUnlockKeyRequest, GetUnlockKeyResponse,
    ListClustersRequest, ListClustersResponse, UpdateClusterRequest, UpdateClusterResponse,
};
use shoal_ca::JoinToken;
use shoal_store::{By, Reader};
use tonic::Status;

use super::ControlApi;
use crate::cluster::redacted;
use crate::status::store_status;

impl ControlApi {
    pub(super) async fn get_cluster(
        &self,
        request: GetClusterRequest,
    ) -> Result<GetClusterResponse, Status> {
        self.linearize().await?;
        let cluster = self
            .store
            .view(|tx| tx.lookup::<Cluster>(&request.cluster_id))
            .map_err(store_status)?;
        Ok(GetClusterResponse {
            cluster: Some(redacted(&cluster)),
        })
    }

    pub(super) async fn list_clusters(
        &self,
        request: ListClustersRequest,
    ) -> Result<ListClustersResponse, Status> {
        self.linearize().await?;
        let filters = request.filters.unwrap_or_default();
        let clusters = self.store.view(|tx| {
            tx.find::<Cluster>(By::All)
                .iter()
                .filter(|c| {
                    let name = c
                        .spec
                        .as_ref()
                        .and_then(|s| s.annotations.as_ref())
                        .map(|a| a.name.as_str())
                        .unwrap_or("");
                    let id = c.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("");
                    (filters.names.is_empty() || filters.names.iter().any(|n| n == name))
                        && (filters.name_prefixes.is_empty()
                            || filters
                                .name_prefixes
                                .iter()
                                .any(|p| name.starts_with(p.as_str())))
                        && (filters.id_prefixes.is_empty()
                            || filters
                                .id_prefixes
                                .iter()
                                .any(|p| id.starts_with(p.as_str())))
                })
                .map(|c| redacted(c))
                .collect()
        });
        Ok(ListClustersResponse { clusters })
    }

    /// The unlock key while autolock is on; empty otherwise.
    pub(super) async fn get_unlock_key(
        &self,
        _request: GetUnlockKeyRequest,
    ) -> Result<GetUnlockKeyResponse, Status> {
        self.linearize().await?;
        let (key, version) = self.store.view(|tx| {
            tx.find::<Cluster>(By::All)
                .first()
                .map(|c| {
                    (
                        crate::cluster::unlock_key(c).map(<[u8]>::to_vec),
                        c.meta.as_ref().map(|m| m.version).unwrap_or_default(),
                    )
                })
                .unwrap_or_default()
        });
        Ok(GetUnlockKeyResponse {
            unlock_key: key.unwrap_or_default(),
            version,
        })
    }

    pub(super) async fn update_cluster(
        &self,
        request: UpdateClusterRequest,
    ) -> Result<UpdateClusterResponse, Status> {
        let spec = request
            .spec
            .ok_or_else(|| Status::invalid_argument("invalid spec: a cluster spec is required"))?;
        shoal_api::validation::validate_cluster_spec_with(
            &spec,
            crate::ca_server::minimum_node_cert_expiry(),
        )
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if spec
            .ca_config
            .as_ref()
            .is_some_and(|c| !c.signing_ca_key.is_empty() || !c.signing_ca_cert.is_empty())
        {
            return Err(Status::invalid_argument(
                "invalid spec.ca_config: a signing CA cannot be set: Shoal's CA generates its own roots (rotate the root with `shoal swarm ca --rotate`)",
            ));
        }
        let force_rotate = spec
            .ca_config
            .as_ref()
            .map(|c| c.force_rotate)
            .unwrap_or_default();
        self.require_leader()?;
        let current = self
            .store
            .view(|tx| tx.lookup::<Cluster>(&request.cluster_id))
            .map_err(store_status)?;
        let current_force_rotate = current
            .spec
            .as_ref()
            .and_then(|s| s.ca_config.as_ref())
            .map(|c| c.force_rotate)
            .unwrap_or_default();
        if force_rotate < current_force_rotate {
            return Err(Status::invalid_argument(format!(
                "invalid spec.ca_config.force_rotate: {force_rotate} is lower than the current \
                 {current_force_rotate}; it can only be raised (`shoal swarm ca --rotate` raises \
                 it by one) or sent back unchanged"
            )));
        }
        let rotation = request.rotation.unwrap_or_default();
        let id = request.cluster_id.clone();
        let mut refusal = None;
        let updated = self
            .store
            .update(|tx| {
                let current = tx.lookup::<Cluster>(&id)?;
                let mut updated = (*current).clone();
                updated.meta.get_or_insert_with(Default::default).version = request.cluster_version;
                // The name is the cluster's identity for users: it stays. The labels are the
                // request's, as every other part of the spec (Docker's `swarm update` sets them).
                let mut new_spec = spec.clone();
                let mut annotations = current
                    .spec
                    .as_ref()
                    .and_then(|s| s.annotations.clone())
                    .unwrap_or_default();
                annotations.labels = spec
                    .annotations
                    .as_ref()
                    .map(|a| a.labels.clone())
                    .unwrap_or_default();
                new_spec.annotations = Some(annotations);
                let current_force_rotate = current
                    .spec
                    .as_ref()
                    .and_then(|s| s.ca_config.as_ref())
                    .map(|c| c.force_rotate)
                    .unwrap_or_default();
                updated.spec = Some(new_spec);
                // (A lower value was refused above, against the version the request names;
                // if the cluster moved on since, the version check refuses the write.)
                if force_rotate > current_force_rotate {
                    let root = updated.root_ca.as_mut().ok_or_else(|| {
                        shoal_store::StoreError::InvalidTransaction(
                            "the cluster has no root CA to rotate".into(),
                        )
                    })?;
                    crate::root_rotation::start(
                        root,
                        force_rotate,
                        std::time::SystemTime::now(),
                        shoal_api::defaults::ROOT_CA_EXPIRY,
                    )
                    .map_err(|e| {
                        shoal_store::StoreError::InvalidTransaction(format!(
                            "starting the root CA rotation failed: {e}"
                        ))
                    })?;
                }
                if let Some(root) = updated.root_ca.as_mut() {
                    let digest = root.ca_cert_hash.clone();
                    let tokens = root.join_tokens.get_or_insert_with(Default::default);
                    if rotation.worker_join_token {
                        tokens.worker = JoinToken::generate(&digest).to_string();
                    }
                    if rotation.manager_join_token {
                        tokens.manager = JoinToken::generate(&digest).to_string();
                    }
                }
                // Autolock on: the cluster holds an unlock key (a new one when rotated, or
                // turned on); off: none. Every manager follows it (its key file sealed with
                // the key, or in clear).
                if let Err(message) =
                    crate::cluster::reconcile_unlock_key(&mut updated, rotation.manager_unlock_key)
                {
                    refusal = Some(Status::failed_precondition(message));
                    return Err(shoal_store::StoreError::InvalidTransaction(
                        "refused".into(),
                    ));
                }
                tx.update(updated)
            })
            .await;
        if let Some(refused) = refusal {
            return Err(refused);
        }
        updated.map_err(store_status)?;
        let cluster = self
            .store
            .view(|tx| tx.lookup::<Cluster>(&request.cluster_id))
            .map_err(store_status)?;
        Ok(UpdateClusterResponse {
            cluster: Some(redacted(&cluster)),
        })
    }
}
