//! `GET /networks/{id|name|id-prefix}?scope=…&verbose=…`: the network.
//!
//! `scope` may be empty or `swarm` (every network here); `local` and `global` find nothing,
//! as in moby for a swarm network; anything else is a 400. `verbose` is accepted (a Go
//! boolean) and adds nothing: there are no per-node endpoints to show.

use shoal_api::v1::GetNetworkRequest;

use super::{Network, SWARM_SCOPE};
use crate::backend::Backend;
use crate::error::EngineError;
use crate::request::{Reply, Request, Result};

pub async fn handle(backend: &Backend, request: Request) -> Result {
    let reference = request.segment(1).to_string();
    request.query.bool("verbose")?;
    match request.query.get("scope").unwrap_or_default() {
        "" | SWARM_SCOPE => {}
        "local" | "global" => {
            return Err(EngineError::not_found(format!(
                "network {reference} not found"
            )));
        }
        other => {
            return Err(EngineError::bad_request(format!(
                "invalid scope value {other:?}: use swarm, global or local"
            )));
        }
    }
    let found = backend
        .call(async |mut c| {
            c.get_network(GetNetworkRequest {
                name: String::new(),
                network_id: reference,
            })
            .await
        })
        .await?;
    Reply::json(&Network::from_proto(&found.network.unwrap_or_default()))
}
