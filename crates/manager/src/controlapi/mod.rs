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

/// The refusal to remove a `kind` object (a secret, a config) that the services `users`
/// (their names) reference; `None` when none does.
fn in_use_by_services(kind: &str, name: &str, mut users: Vec<String>) -> Option<Status> {
    if users.is_empty() {
        return None;
    }
    users.sort();
    let one = users.len() == 1;
    Some(Status::failed_precondition(format!(
        "{kind} {name} is in use by service{} {}; remove the {kind} from {} (or remove {}) \
         first",
        if one { "" } else { "s" },
        users.join(", "),
        if one {
            "that service"
        } else {
            "those services"
        },
        if one { "the service" } else { "them" },
    )))
}

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

    /// Runs a write. A write is built on this manager's own store, and some of its checks
    /// (not found, out of sequence, name taken, in use) can refuse it there, before anything
    /// goes through Raft. A leader deposed without knowing it yet, or a new leader that has
    /// not applied its predecessor's last entries, would refuse from a stale store — an answer
    /// no linearizable history allows (the simulation in `crates/sim` found it). So a refusal
    /// is given only after a read barrier has confirmed this manager's view, and the write is
    /// tried again on the confirmed store. (A refused write wrote nothing, so trying again is
    /// safe; a write that succeeds needs no barrier: the store checks the versions it read
    /// again when the entry applies.)
    async fn confirmed<R, T, F, W>(&self, request: R, write: W) -> Result<T, Status>
    where
        R: Clone,
        W: Fn(R) -> F,
        F: std::future::Future<Output = Result<T, Status>>,
    {
        match write(request.clone()).await {
            Err(status) if refused_on_local_state(&status) => {
                self.linearize().await?;
                write(request).await
            }
            answer => answer,
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

/// Whether a write's refusal may come from this manager's view of the store (and so needs
/// a confirmed view before it is given).
fn refused_on_local_state(status: &Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::NotFound
            | tonic::Code::AlreadyExists
            | tonic::Code::FailedPrecondition
            | tonic::Code::InvalidArgument
    )
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
        self.confirmed(request.into_inner(), |r| self.create_config(r))
            .await
            .map(tonic::Response::new)
    }

    async fn update_config(
        &self,
        request: tonic::Request<shoal_api::v1::UpdateConfigRequest>,
    ) -> Result<tonic::Response<shoal_api::v1::UpdateConfigResponse>, Status> {
        self.confirmed(request.into_inner(), |r| self.update_config(r))
            .await
            .map(tonic::Response::new)
    }

    async fn remove_config(
        &self,
        request: tonic::Request<shoal_api::v1::RemoveConfigRequest>,
    ) -> Result<tonic::Response<shoal_api::v1::RemoveConfigResponse>, Status> {
        self.confirmed(request.into_inner(), |r| self.remove_config(r))
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
        self.confirmed(request.into_inner(), |r| self.update_node(r))
            .await
            .map(tonic::Response::new)
    }

    async fn remove_node(
        &self,
        request: tonic::Request<shoal_api::v1::RemoveNodeRequest>,
    ) -> Result<tonic::Response<shoal_api::v1::RemoveNodeResponse>, Status> {
        self.confirmed(request.into_inner(), |r| self.remove_node(r))
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
        let task_id = request.into_inner().task_id;
        self.confirmed(task_id, |task_id: String| async move {
            self.require_leader()?;
            self.store
                .update(|tx| tx.delete::<shoal_api::v1::Task>(&task_id))
                .await
                .map_err(crate::status::store_status)
        })
        .await?;
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
        self.confirmed(request.into_inner(), |r| self.create_service(r))
            .await
            .map(tonic::Response::new)
    }

    async fn update_service(
        &self,
        request: tonic::Request<shoal_api::v1::UpdateServiceRequest>,
    ) -> Result<tonic::Response<shoal_api::v1::UpdateServiceResponse>, Status> {
        self.confirmed(request.into_inner(), |r| self.update_service(r))
            .await
            .map(tonic::Response::new)
    }

    async fn remove_service(
        &self,
        request: tonic::Request<shoal_api::v1::RemoveServiceRequest>,
    ) -> Result<tonic::Response<shoal_api::v1::RemoveServiceResponse>, Status> {
        self.confirmed(request.into_inner(), |r| self.remove_service(r))
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
        self.confirmed(request.into_inner(), |r| self.create_network(r))
            .await
            .map(tonic::Response::new)
    }

    async fn remove_network(
        &self,
        request: tonic::Request<shoal_api::v1::RemoveNetworkRequest>,
    ) -> Result<tonic::Response<shoal_api::v1::RemoveNetworkResponse>, Status> {
        self.confirmed(request.into_inner(), |r| self.remove_network(r))
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
        self.confirmed(request.into_inner(), |r| self.update_cluster(r))
            .await
            .map(tonic::Response::new)
    }

    async fn get_unlock_key(
        &self,
        request: tonic::Request<shoal_api::v1::GetUnlockKeyRequest>,
    ) -> Result<tonic::Response<shoal_api::v1::GetUnlockKeyResponse>, Status> {
        self.get_unlock_key(request.into_inner())
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
        self.confirmed(request.into_inner(), |r| self.create_secret(r))
            .await
            .map(tonic::Response::new)
    }

    async fn update_secret(
        &self,
        request: tonic::Request<shoal_api::v1::UpdateSecretRequest>,
    ) -> Result<tonic::Response<shoal_api::v1::UpdateSecretResponse>, Status> {
        self.confirmed(request.into_inner(), |r| self.update_secret(r))
            .await
            .map(tonic::Response::new)
    }

    async fn remove_secret(
        &self,
        request: tonic::Request<shoal_api::v1::RemoveSecretRequest>,
    ) -> Result<tonic::Response<shoal_api::v1::RemoveSecretResponse>, Status> {
        self.confirmed(request.into_inner(), |r| self.remove_secret(r))
            .await
            .map(tonic::Response::new)
    }
}
