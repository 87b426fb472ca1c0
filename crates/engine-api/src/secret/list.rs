//! `GET /secrets?filters=…`: the secrets (never their data); filters `id` and `name`
//! (prefixes), `names` (exact), `label` (`key` or `key=value`).

use shoal_api::v1::ListSecretsRequest;

use super::Secret;
use super::file_object::list_filters;
use crate::backend::Backend;
use crate::request::{Reply, Request, Result};

pub async fn handle(backend: &Backend, request: Request) -> Result {
    let filters = list_filters(&request.query.filters()?)?;
    let listed = backend
        .call(async |mut c| {
            c.list_secrets(ListSecretsRequest {
                filters: Some(filters),
            })
            .await
        })
        .await?;
    let secrets: Vec<Secret> = listed.secrets.iter().map(Secret::from_proto).collect();
    Reply::json(&secrets)
}
