//! Tasks: get and list. (Tasks are made by the orchestrators, not by users; removing one by
//! hand comes with them.)

use shoal_api::v1::{
    GetTaskRequest, GetTaskResponse, ListFilters, ListTasksRequest, ListTasksResponse, Service,
    Task,
};
use shoal_store::{By, Reader};
use tonic::Status;

use shoal_api::naming::task_name;

use super::{ControlApi, filters_match};
use crate::status::store_status;

fn task_matches(task: &Task, request: &ListTasksRequest, filters: &ListFilters) -> bool {
    let id = task.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("");
    let name = task_name(task);
    let labels = task
        .annotations
        .as_ref()
        .map(|a| a.labels.as_slice())
        .unwrap_or(&[]);
    filters_match(id, &name, labels, filters)
        && (request.service_ids.is_empty() || request.service_ids.contains(&task.service_id))
        && (request.node_ids.is_empty() || request.node_ids.contains(&task.node_id))
        && (request.desired_states.is_empty()
            || request.desired_states.contains(&task.desired_state))
}

impl ControlApi {
    pub(super) async fn get_task(
        &self,
        request: GetTaskRequest,
    ) -> Result<GetTaskResponse, Status> {
        self.linearize().await?;
        let task = self
            .store
            .view(|tx| tx.lookup::<Task>(&request.task_id))
            .map_err(store_status)?;
        Ok(GetTaskResponse {
            task: Some((*task).clone()),
        })
    }

    pub(super) async fn list_tasks(
        &self,
        request: ListTasksRequest,
    ) -> Result<ListTasksResponse, Status> {
        self.linearize().await?;
        let filters = request.filters.clone().unwrap_or_default();
        let tasks = self.store.view(|tx| {
            tx.find::<Task>(By::All)
                .into_iter()
                .filter(|t| task_matches(t, &request, &filters))
                .filter(|t| {
                    // Up to date: the task runs its service's current spec.
                    !request.up_to_date
                        || tx
                            .get::<Service>(&t.service_id)
                            .is_none_or(|s| t.spec_version >= s.spec_version)
                })
                .map(|t| (*t).clone())
                .collect()
        });
        Ok(ListTasksResponse { tasks })
    }
}
