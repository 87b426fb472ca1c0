//! `POST /networks/create`: a swarm-scoped overlay network → 201 `{"Id": …, "Warning": ""}`.
//!
//! The request is checked here (what Shoal cannot make is a 501 that says what to do instead,
//! see [`super::NetworkCreate::to_spec`]); the subnet is checked and chosen by the Control
//! API. A name in use is moby's 409 "network with name X already exists", whatever
//! `CheckDuplicate` says (moby ignores it since API 1.44).

use shoal_api::v1::CreateNetworkRequest;
use tonic::Code;

use super::{Created, NetworkCreate};
use crate::backend::Backend;
use crate::error::EngineError;
use crate::lenient;
use crate::request::{Reply, Request, Result};

pub async fn handle(backend: &Backend, request: Request) -> Result {
    let create: NetworkCreate = lenient::require(&request.body)?;
    let spec = create.to_spec()?;
    match backend
        .control()
        .create_network(CreateNetworkRequest { spec: Some(spec) })
        .await
    {
        Ok(created) => {
            let id = created
                .into_inner()
                .network
                .and_then(|n| n.meta)
                .map(|m| m.id)
                .unwrap_or_default();
            Reply::json_with(
                201,
                &Created {
                    id,
                    warning: String::new(),
                },
            )
        }
        Err(status) if status.code() == Code::AlreadyExists => Err(EngineError::conflict(format!(
            "network with name {} already exists",
            create.name
        ))),
        Err(status) => Err(backend.control_error(status).await),
    }
}
