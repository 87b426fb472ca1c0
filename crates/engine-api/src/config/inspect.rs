//! `GET /configs/{id|name|id-prefix}`: the config, with its data.

use shoal_api::v1::GetConfigRequest;

use super::Config;
use crate::backend::Backend;
use crate::request::{Reply, Request, Result};

pub async fn handle(backend: &Backend, request: Request) -> Result {
    let reference = request.segment(1).to_string();
    let found = backend
        .call(async |mut c| {
            c.get_config(GetConfigRequest {
                config_id: reference,
            })
            .await
        })
        .await?;
    Reply::json(&Config::from_proto(&found.config.unwrap_or_default()))
}
