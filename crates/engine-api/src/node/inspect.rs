//! `GET /nodes/{id|name|prefix}`: one node (see the module notes for how it is named).

use super::{NodeJson, get, root_tls};
use crate::backend::Backend;
use crate::request::{Reply, Request, Result};

pub async fn handle(backend: &Backend, request: Request) -> Result {
    let node = get(backend, request.segment(1)).await?;
    let root = root_tls(backend).await;
    Reply::json(&NodeJson::from_proto(&node, &root))
}
