//! Clusters: get, list, and update — the spec (validated; the CA's keys in it cannot be set
//! this way) and the rotation of join tokens: a rotated token stops working at once, since
//! the CA only accepts the tokens in the cluster object. The CA's private keys are never
//! returned. Certificates must last at least the CA's minimum
//! ([`minimum_node_cert_expiry`](crate::ca_server::minimum_node_cert_expiry): one hour, lower
//! only under a test knob).

use shoal_api::v1::{
    Cluster, GetClusterRequest, GetClusterResponse, ListClustersRequest, ListClustersResponse,
    UpdateClusterRequest, UpdateClusterResponse,
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
                "invalid spec.ca_config: a signing CA cannot be set this way (root rotation comes with `swarm ca --rotate`)",
            ));
        }
        self.require_leader()?;
        let rotation = request.rotation.unwrap_or_default();
        if rotation.manager_unlock_key {
            return Err(Status::unimplemented(
                "rotating the unlock key is not available yet in this version of Shoal (it comes with autolock)",
            ));
        }
        let id = request.cluster_id.clone();
        self.store
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
                updated.spec = Some(new_spec);
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
                tx.update(updated)
            })
            .await
            .map_err(store_status)?;
        let cluster = self
            .store
            .view(|tx| tx.lookup::<Cluster>(&request.cluster_id))
            .map_err(store_status)?;
        Ok(UpdateClusterResponse {
            cluster: Some(redacted(&cluster)),
        })
    }
}
