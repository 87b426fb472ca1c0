//! `DELETE /secrets/{id|name}`: 204. A secret a service uses is not removed (400, naming the
//! services), as in moby.

use shoal_api::v1::RemoveSecretRequest;

use crate::backend::Backend;
use crate::request::{Reply, Request, Result};

pub async fn handle(backend: &Backend, request: Request) -> Result {
    let reference = request.segment(1).to_string();
    backend
        .call(async |mut c| {
            c.remove_secret(RemoveSecretRequest {
                secret_id: reference,
            })
            .await
        })
        .await?;
    Ok(Reply::Empty(204))
}
