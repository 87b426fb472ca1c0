//! Clusters: get and list. (Update, with token rotation, comes with the CA server.) The
//! CA's private keys are never returned.

use shoal_api::v1::{
    Cluster, GetClusterRequest, GetClusterResponse, ListClustersRequest, ListClustersResponse,
};
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
}
