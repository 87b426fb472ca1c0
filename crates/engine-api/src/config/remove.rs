//! `DELETE /configs/{id|name}`: 204. A config in use is not removed (400), as in moby.

use shoal_api::v1::RemoveConfigRequest;

use crate::backend::Backend;
use crate::request::{Reply, Request, Result};

pub async fn handle(backend: &Backend, request: Request) -> Result {
    let reference = request.segment(1).to_string();
    backend
        .call(async |mut c| {
            c.remove_config(RemoveConfigRequest {
                config_id: reference,
            })
            .await
        })
        .await?;
    Ok(Reply::Empty(204))
}
