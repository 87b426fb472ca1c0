//! `GET /tasks/{id}`: one task (by ID or unique ID prefix).

use shoal_api::v1::GetServiceRequest;

use super::Task;
use crate::backend::Backend;
use crate::request::{Reply, Request, Result};

pub async fn handle(backend: &Backend, request: Request) -> Result {
    let task = super::get(backend, request.segment(1)).await?;
    // Whether it belongs to a job: its service says (gone services' tasks show no iteration).
    let service_id = task.service_id.clone();
    let job = !service_id.is_empty()
        && backend
            .call(async move |mut c| {
                c.get_service(GetServiceRequest {
                    service_id,
                    insert_defaults: false,
                })
                .await
            })
            .await
            .ok()
            .and_then(|r| r.service)
            .is_some_and(|s| super::is_job(&s));
    let networks = super::networks_for(backend, std::slice::from_ref(&task)).await?;
    Reply::json(&Task::from_proto(&task, job, &networks))
}
