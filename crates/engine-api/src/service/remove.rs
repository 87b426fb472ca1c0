//! `DELETE /services/{id|name}`: removes a service; its tasks are shut down by the
//! orchestrator. Answers 200 with no body, as moby does.

use shoal_api::v1::RemoveServiceRequest;

use crate::backend::Backend;
use crate::error::EngineError;
use crate::request::{Reply, Request, Result};

pub async fn handle(backend: &Backend, request: Request) -> Result {
    let reference = request.segment(1).to_string();
    if reference.is_empty() {
        return Err(EngineError::not_found("service  not found"));
    }
    backend
        .call(async move |mut c| {
            c.remove_service(RemoveServiceRequest {
                service_id: reference,
            })
            .await
        })
        .await?;
    Ok(Reply::Empty(200))
}
