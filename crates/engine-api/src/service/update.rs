//! `POST /services/{id|name}/update?version=N`: a new spec for a service, or, with
//! `rollback=previous`, a rollback to its previous spec (the body is then not used).
//!
//! `version` is required (the `Version.Index` the client read): a stale one answers moby's
//! 500 `…update out of sequence`, which docker-py retries on. As moby does, a change of mode
//! or of name is refused with 501. An empty name means the service's own (docker-py's
//! `update_service` may leave it out). `registryAuthFrom` and `X-Registry-Auth` are accepted
//! and not used. A host-process service stays one (see [`super::spec`]). Answers
//! `{"Warnings": null}`.
//!
//! An update with the spec the service already has still raises `Version.Index` (as moby's;
//! docker-py reads it back and expects it higher), and redeploys nothing.

use serde::Serialize;
use shoal_api::v1::{UpdateServiceRequest, update_service_request::Rollback};

use super::spec::ServiceSpec;
use crate::backend::Backend;
use crate::error::EngineError;
use crate::lenient;
use crate::request::{Reply, Request, Result};

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Updated {
    warnings: Option<Vec<String>>,
}

pub async fn handle(backend: &Backend, request: Request) -> Result {
    let reference = request.segment(1).to_string();
    let version = request.query.version("service")?;
    let rollback = match request.query.get("rollback").unwrap_or_default() {
        "" | "none" => false,
        "previous" => true,
        other => {
            return Err(EngineError::bad_request(format!(
                "invalid rollback {other:?}: use previous (or none)"
            )));
        }
    };
    match request.query.get("registryAuthFrom").unwrap_or_default() {
        "" | "spec" | "previous-spec" => {}
        other => {
            return Err(EngineError::bad_request(format!(
                "invalid registryAuthFrom {other:?}: use spec or previous-spec"
            )));
        }
    }
    let spec = if rollback {
        // moby decodes the body and then ignores it; so does this, leniently.
        None
    } else {
        let mut spec: ServiceSpec = lenient::require(&request.body)?;
        let stored = super::get(backend, &reference).await?;
        let process =
            super::runtime_of(stored.spec.as_ref().and_then(|s| s.task.as_ref())) == "process";
        let current = super::Service::from_proto(&stored).spec;
        if spec.name.is_empty() {
            spec.name = current.name.clone();
        }
        if spec.name != current.name {
            return Err(EngineError::not_implemented(format!(
                "renaming services is not supported ({} to {}); create a new service instead",
                current.name, spec.name
            )));
        }
        if spec.mode_name() != current.mode_name() {
            return Err(EngineError::not_implemented(format!(
                "service mode change is not allowed ({} to {}); remove and recreate the service",
                current.mode_name(),
                spec.mode_name()
            )));
        }
        Some(spec.to_proto_for(process)?)
    };
    backend
        .call(async move |mut c| {
            c.update_service(UpdateServiceRequest {
                service_id: reference,
                service_version: version,
                spec,
                rollback: if rollback {
                    Rollback::Previous as i32
                } else {
                    Rollback::None as i32
                },
            })
            .await
        })
        .await?;
    Reply::json(&Updated { warnings: None })
}
