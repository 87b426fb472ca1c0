//! `GET /secrets/{id|name|id-prefix}`: the secret, without its data.

use shoal_api::v1::GetSecretRequest;

use super::Secret;
use crate::backend::Backend;
use crate::request::{Reply, Request, Result};

pub async fn handle(backend: &Backend, request: Request) -> Result {
    let reference = request.segment(1).to_string();
    let found = backend
        .call(async |mut c| {
            c.get_secret(GetSecretRequest {
                secret_id: reference,
            })
            .await
        })
        .await?;
    Reply::json(&Secret::from_proto(&found.secret.unwrap_or_default()))
}
