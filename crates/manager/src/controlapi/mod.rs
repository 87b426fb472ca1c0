//! The Control API: what users and the `shoal` command line call.
//!
//! One file per kind of object; each handler parses and validates the request (bad input is
//! refused with InvalidArgument naming the field, before anything is written), applies it
//! through a store transaction on the leader, and renders the answer.

mod cluster;
mod config;
mod network;
mod node;
mod secret;
mod service;
mod task;

use shoal_raft::RaftHandle;
use shoal_raft::service::{not_leader, to_status};
use shoal_store::Store;
use tonic::Status;

/// How many times a removal, which carries no version, reads again after a concurrent write
/// made its transaction stale.
const REMOVE_ATTEMPTS: u32 = 5;

/// Why one attempt at a removal failed.
enum Removal {
    /// A write committed between the read and the removal: read again and retry.
    Conflict(shoal_store::StoreError),
    /// A final answer.
    Refused(Status),
}

/// The Control service of one manager.
#[derive(Clone)]
pub struct ControlApi {
    store: Store,
    raft: RaftHandle,
}

impl ControlApi {
    pub fn new(store: Store, raft: RaftHandle) -> Self {
        Self { store, raft }
    }

    /// Writes are made on the leader only.
    fn require_leader(&self) -> Result<(), Status> {
        if self.raft.status().is_leader {
            Ok(())
        } else {
            Err(not_leader(&self.raft))
        }
    }

    /// Waits until the local store holds every write committed before the call.
    async fn linearize(&self) -> Result<(), Status> {
        self.raft
            .read_barrier()
            .await
            .map_err(|e| to_status(&self.raft, e))
    }
}

pub use config::{filters_match, label_filter_matches};

#[tonic::async_trait]
impl shoal_api::v1::control_server::Control for ControlApi {
    async fn get_config(
        &self,
        request: tonic::Request<shoal_api::v1::GetConfigRequest>,
    ) -> Result<tonic::Response<shoal_api::v1::GetConfigResponse>, Status> {
        self.get_config(request.into_inner())
            .await
            .map(tonic::Response::new)
    }

    async fn list_configs(
        &self,
        request: tonic::Request<shoal_api::v1::ListConfigsRequest>,
    ) -> Result<tonic::Response<shoal_api::v1::ListConfigsResponse>, Status> {
        self.list_configs(request.into_inner())
            .await
            .map(tonic::Response::new)
    }

    async fn create_config(
        &self,
        request: tonic::Request<shoal_api::v1::CreateConfigRequest>,
    ) -> Result<tonic::Response<shoal_api::v1::CreateConfigResponse>, Status> {
        self.create_config(request.into_inner())
            .await
            .map(tonic::Response::new)
    }

    async fn update_config(
        &self,
        request: tonic::Request<shoal_api::v1::UpdateConfigRequest>,
    ) -> Result<tonic::Response<shoal_api::v1::UpdateConfigResponse>, Status> {
        self.update_config(request.into_inner())
            .await
            .map(tonic::Response::new)
    }

    async fn remove_config(
        &self,
        request: tonic::Request<shoal_api::v1::RemoveConfigRequest>,
    ) -> Result<tonic::Response<shoal_api::v1::RemoveConfigResponse>, Status> {
        self.remove_config(request.into_inner())
            .await
            .map(tonic::Response::new)
    }

    async fn get_node(
        &self,
        request: tonic::Request<shoal_api::v1::GetNodeRequest>,
    ) -> Result<tonic::Response<shoal_api::v1::GetNodeResponse>, Status> {
        self.get_node(request.into_inner())
            .await
            .map(tonic::Response::new)
    }

    async fn list_nodes(
        &self,
        request: tonic::Request<shoal_api::v1::ListNodesRequest>,
    ) -> Result<tonic::Response<shoal_api::v1::ListNodesResponse>, Status> {
        self.list_nodes(request.into_inner())
            .await
            .map(tonic::Response::new)
    }

    async fn update_node(
        &self,
        request: tonic::Request<shoal_api::v1::UpdateNodeRequest>,
    ) -> Result<tonic::Response<shoal_api::v1::UpdateNodeResponse>, Status> {
        self.update_node(request.into_inner())
            .await
            .map(tonic::Response::new)
    }

    async fn remove_node(
        &self,
        request: tonic::Request<shoal_api::v1::RemoveNodeRequest>,
    ) -> Result<tonic::Response<shoal_api::v1::RemoveNodeResponse>, Status> {
        self.remove_node(request.into_inner())
            .await
            .map(tonic::Response::new)
    }

    async fn get_task(
        &self,
        request: tonic::Request<shoal_api::v1::GetTaskRequest>,
    ) -> Result<tonic::Response<shoal_api::v1::GetTaskResponse>, Status> {
        self.get_task(request.into_inner())
            .await
            .map(tonic::Response::new)
    }

    async fn list_tasks(
        &self,
        request: tonic::Request<shoal_api::v1::ListTasksRequest>,
    ) -> Result<tonic::Response<shoal_api::v1::ListTasksResponse>, Status> {
        self.list_tasks(request.into_inner())
            .await
            .map(tonic::Response::new)
    }

    async fn remove_task(
        &self,
        request: tonic::Request<shoal_api::v1::RemoveTaskRequest>,
    ) -> Result<tonic::Response<shoal_api::v1::RemoveTaskResponse>, Status> {
        // As in SwarmKit: the task goes; its orchestrator makes a replacement if the service
        // still wants one, and its node stops it.
        self.require_leader()?;
        let task_id = request.into_inner().task_id;
        self.store
            .update(|tx| tx.delete::<shoal_api::v1::Task>(&task_id))
            .await
            .map_err(crate::status::store_status)?;
        Ok(tonic::Response::new(shoal_api::v1::RemoveTaskResponse {}))
    }

    async fn get_service(
        &self,
        request: tonic::Request<shoal_api::v1::GetServiceRequest>,
    ) -> Result<tonic::Response<shoal_api::v1::GetServiceResponse>, Status> {
        self.get_service(request.into_inner())
            .await
            .map(tonic::Response::new)
    }

    async fn list_services(
        &self,
        request: tonic::Request<shoal_api::v1::ListServicesRequest>,
    ) -> Result<tonic::Response<shoal_api::v1::ListServicesResponse>, Status> {
        self.list_services(request.into_inner())
            .await
            .map(tonic::Response::new)
    }

    async fn create_service(
        &self,
        request: tonic::Request<shoal_api::v1::CreateServiceRequest>,
    ) -> Result<tonic::Response<shoal_api::v1::CreateServiceResponse>, Status> {
        self.create_service(request.into_inner())
            .await
            .map(tonic::Response::new)
    }

    async fn update_service(
        &self,
        request: tonic::Request<shoal_api::v1::UpdateServiceRequest>,
    ) -> Result<tonic::Response<shoal_api::v1::UpdateServiceResponse>, Status> {
        self.update_service(request.into_inner())
            .await
            .map(tonic::Response::new)
    }

    async fn remove_service(
        &self,
        request: tonic::Request<shoal_api::v1::RemoveServiceRequest>,
    ) -> Result<tonic::Response<shoal_api::v1::RemoveServiceResponse>, Status> {
        self.remove_service(request.into_inner())
            .await
            .map(tonic::Response::new)
    }

    async fn list_service_statuses(
        &self,
        request: tonic::Request<shoal_api::v1::ListServiceStatusesRequest>,
    ) -> Result<tonic::Response<shoal_api::v1::ListServiceStatusesResponse>, Status> {
        self.list_service_statuses(request.into_inner())
            .await
            .map(tonic::Response::new)
    }

    async fn get_network(
        &self,
        request: tonic::Request<shoal_api::v1::GetNetworkRequest>,
    ) -> Result<tonic::Response<shoal_api::v1::GetNetworkResponse>, Status> {
        self.get_network(request.into_inner())
            .await
            .map(tonic::Response::new)
    }

    async fn list_networks(
        &self,
        request: tonic::Request<shoal_api::v1::ListNetworksRequest>,
    ) -> Result<tonic::Response<shoal_api::v1::ListNetworksResponse>, Status> {
        self.list_networks(request.into_inner())
            .await
            .map(tonic::Response::new)
    }

    async fn create_network(
        &self,
        request: tonic::Request<shoal_api::v1::CreateNetworkRequest>,
    ) -> Result<tonic::Response<shoal_api::v1::CreateNetworkResponse>, Status> {
        self.create_network(request.into_inner())
            .await
            .map(tonic::Response::new)
    }

    async fn remove_network(
        &self,
        request: tonic::Request<shoal_api::v1::RemoveNetworkRequest>,
    ) -> Result<tonic::Response<shoal_api::v1::RemoveNetworkResponse>, Status> {
        self.remove_network(request.into_inner())
            .await
            .map(tonic::Response::new)
    }

    async fn get_cluster(
        &self,
        request: tonic::Request<shoal_api::v1::GetClusterRequest>,
    ) -> Result<tonic::Response<shoal_api::v1::GetClusterResponse>, Status> {
        self.get_cluster(request.into_inner())
            .await
            .map(tonic::Response::new)
    }

    async fn list_clusters(
        &self,
        request: tonic::Request<shoal_api::v1::ListClustersRequest>,
    ) -> Result<tonic::Response<shoal_api::v1::ListClustersResponse>, Status> {
        self.list_clusters(request.into_inner())
            .await
            .map(tonic::Response::new)
    }

    async fn update_cluster(
        &self,
        request: tonic::Request<shoal_api::v1::UpdateClusterRequest>,
    ) -> Result<tonic::Response<shoal_api::v1::UpdateClusterResponse>, Status> {
        self.update_cluster(request.into_inner())
            .await
            .map(tonic::Response::new)
    }

    async fn get_secret(
        &self,
        request: tonic::Request<shoal_api::v1::GetSecretRequest>,
    ) -> Result<tonic::Response<shoal_api::v1::GetSecretResponse>, Status> {
        self.get_secret(request.into_inner())
            .await
            .map(tonic::Response::new)
    }

    async fn list_secrets(
        &self,
        request: tonic::Request<shoal_api::v1::ListSecretsRequest>,
    ) -> Result<tonic::Response<shoal_api::v1::ListSecretsResponse>, Status> {
        self.list_secrets(request.into_inner())
            .await
            .map(tonic::Response::new)
    }

    async fn create_secret(
        &self,
        request: tonic::Request<shoal_api::v1::CreateSecretRequest>,
    ) -> Result<tonic::Response<shoal_api::v1::CreateSecretResponse>, Status> {
        self.create_secret(request.into_inner())
            .await
            .map(tonic::Response::new)
    }

    async fn update_secret(
        &self,
        request: tonic::Request<shoal_api::v1::UpdateSecretRequest>,
    ) -> Result<tonic::Response<shoal_api::v1::UpdateSecretResponse>, Status> {
        self.update_secret(request.into_inner())
            .await
            .map(tonic::Response::new)
    }

    async fn remove_secret(
        &self,
        request: tonic::Request<shoal_api::v1::RemoveSecretRequest>,
    ) -> Result<tonic::Response<shoal_api::v1::RemoveSecretResponse>, Status> {
        self.remove_secret(request.into_inner())
            .await
            .map(tonic::Response::new)
    }
}
