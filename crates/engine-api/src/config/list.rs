//! `GET /configs?filters=…`: the configs; filters `id` and `name` (prefixes), `names`
//! (exact), `label` (`key` or `key=value`).

use shoal_api::v1::ListConfigsRequest;

use super::Config;
use crate::backend::Backend;
use crate::request::{Reply, Request, Result};
use crate::secret::file_object::list_filters;

pub async fn handle(backend: &Backend, request: Request) -> Result {
    let filters = list_filters(&request.query.filters()?)?;
    let listed = backend
        .call(async |mut c| {
            c.list_configs(ListConfigsRequest {
                filters: Some(filters),
            })
            .await
        })
        .await?;
    let configs: Vec<Config> = listed.configs.iter().map(Config::from_proto).collect();
    Reply::json(&configs)
}
