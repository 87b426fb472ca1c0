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

/// Whether `task` runs its service's current task spec, as the orchestrator decides it: a
/// scale raises the service's spec version but leaves the task spec, and so its tasks, as
/// they are. A task whose service is gone is up to date with nothing to compare.
fn up_to_date(task: &Task, service: Option<&Service>) -> bool {
    service.is_none_or(|s| !crate::orchestrator::update::is_outdated(task, s))
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
                    !request.up_to_date
                        || up_to_date(t, tx.get::<Service>(&t.service_id).as_deref())
                })
                .map(|t| (*t).clone())
                .collect()
        });
        Ok(ListTasksResponse { tasks })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::v1::{ServiceSpec, TaskSpec};

    fn service(spec_version: u64, command: &str) -> Service {
        Service {
            spec: Some(ServiceSpec {
                task: Some(task_spec(command)),
                ..Default::default()
            }),
            spec_version,
            ..Default::default()
        }
    }

    fn task_spec(command: &str) -> TaskSpec {
        TaskSpec::from(shoal_api::v1::TaskSpecFields {
            runtime: Some(shoal_api::v1::task_spec::Runtime::Process(Box::new(
                shoal_api::v1::ProcessSpec {
                    command: command.into(),
                    ..Default::default()
                },
            ))),
            ..Default::default()
        })
    }

    fn task(spec_version: u64, command: &str) -> Task {
        Task {
            spec: Some(task_spec(command)),
            spec_version,
            ..Default::default()
        }
    }

    #[test]
    fn a_scale_leaves_tasks_up_to_date_an_update_does_not() {
        // Scaled: version 2, same task spec as version 1's tasks.
        assert!(up_to_date(&task(1, "sleep"), Some(&service(2, "sleep"))));
        // Updated: version 2 runs another command.
        assert!(!up_to_date(&task(1, "sleep"), Some(&service(2, "top"))));
        assert!(up_to_date(&task(2, "top"), Some(&service(2, "top"))));
        assert!(up_to_date(&task(1, "sleep"), None));
    }
}
