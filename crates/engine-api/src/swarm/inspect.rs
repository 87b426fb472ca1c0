//! `GET /swarm`: the swarm (moby's `Swarm`: `ClusterInfo` and `JoinTokens`), from a manager.
//! Elsewhere moby's 503: not a manager (a worker), or not in a swarm.

use super::cluster;
use super::shapes::Swarm;
use crate::backend::Backend;
use crate::request::{Reply, Request, Result};

pub async fn handle(backend: &Backend, _request: Request) -> Result {
    let cluster = cluster(backend).await?;
    Reply::json(&Swarm::from_cluster(&cluster))
}
