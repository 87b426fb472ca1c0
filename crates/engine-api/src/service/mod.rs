//! The `service` endpoints of the Engine API: create, inspect, list, update (and rollback),
//! remove, and logs.
//!
//! A service is kept by the Control API; these handlers translate Docker's shapes
//! ([`spec`]) and render the stored service as moby does ([`Service`]):
//! `{ID, Version, CreatedAt, UpdatedAt, Spec, PreviousSpec?, Endpoint{Spec, Ports?,
//! VirtualIPs?}, UpdateStatus?, ServiceStatus?, JobStatus?}`.
//!
//! # Invariants
//!
//! - `Spec.TaskTemplate.ContainerSpec` is never null (the docker CLI dereferences it).
//! - `JobStatus` is present for job modes (the CLI dereferences it), `ServiceStatus` only when
//!   the list was asked for with `status=true`.
//! - `UpdateStatus` is the Control API's: the orchestrator keeps `updating` until every task
//!   runs the new spec and the monitor window has passed, which is what the CLI's progress
//!   display waits for; a pure change of the replica count is an update too (SwarmKit resets
//!   the status on every spec change, and so does Shoal).
//! - Every reference (`/services/{id}`) is an ID, a name or a unique ID prefix, resolved by
//!   the Control API: unknown → 404 `service X not found`, ambiguous → 400.

pub mod create;
pub mod inspect;
pub mod list;
pub mod logs;
pub mod logstream;
pub mod remove;
pub mod spec;
pub mod update;

use serde::Serialize;
use shoal_api::v1::{self, GetServiceRequest, update_status::UpdateState};

use crate::backend::Backend;
use crate::error::EngineError;
use crate::shapes::{ObjectMeta, Version, time};

pub use spec::ServiceSpec;

/// A service in Docker's shape.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Service {
    #[serde(flatten)]
    pub meta: ObjectMeta,
    pub spec: ServiceSpec,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_spec: Option<ServiceSpec>,
    pub endpoint: Endpoint,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update_status: Option<UpdateStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_status: Option<ServiceStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_status: Option<JobStatus>,
}

/// Docker's `Endpoint`: the spec as stored, the ports as allocated, the virtual IPs.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Endpoint {
    pub spec: spec::EndpointSpec,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<spec::PortConfig>,
    #[serde(rename = "VirtualIPs", skip_serializing_if = "Vec::is_empty")]
    pub virtual_ips: Vec<VirtualIp>,
}

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct VirtualIp {
    #[serde(rename = "NetworkID", skip_serializing_if = "String::is_empty")]
    pub network_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub addr: String,
}

/// Docker's `UpdateStatus`.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateStatus {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// Docker's `ServiceStatus`: task counts, as `service ls` shows them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceStatus {
    pub running_tasks: u64,
    pub desired_tasks: u64,
    pub completed_tasks: u64,
}

/// Docker's `JobStatus`.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct JobStatus {
    pub job_iteration: Version,
    pub last_execution: String,
}

impl Service {
    /// A stored service in Docker's shape (without `ServiceStatus`).
    pub fn from_proto(service: &v1::Service) -> Service {
        let spec = service
            .spec
            .as_ref()
            .map(ServiceSpec::from_proto)
            .unwrap_or_else(|| ServiceSpec {
                task_template: spec::TaskSpec::empty(),
                ..Default::default()
            });
        let endpoint = service.endpoint.as_ref().map(|e| Endpoint {
            spec: e
                .spec
                .as_ref()
                .map(spec::EndpointSpec::from_proto)
                .unwrap_or_default(),
            ports: e.ports.iter().map(spec::PortConfig::from_proto).collect(),
            virtual_ips: e
                .virtual_ips
                .iter()
                .map(|v| VirtualIp {
                    network_id: v.network_id.clone(),
                    addr: v.addr.clone(),
                })
                .collect(),
        });
        let job_status = spec.mode.is_job().then(|| {
            let job = service.job_status.unwrap_or_default();
            JobStatus {
                job_iteration: Version {
                    index: job.job_iteration,
                },
                last_execution: time(job.last_execution.as_ref()),
            }
        });
        Service {
            meta: ObjectMeta::from_proto(service.meta.as_ref()),
            previous_spec: service
                .previous_spec
                .as_deref()
                .map(ServiceSpec::from_proto),
            endpoint: endpoint.unwrap_or_default(),
            update_status: service.update_status.as_ref().map(update_status),
            service_status: None,
            job_status,
            spec,
        }
    }
}

/// An update status as moby shows it: unset times are left out.
fn update_status(status: &v1::UpdateStatus) -> UpdateStatus {
    let state = match UpdateState::try_from(status.state) {
        Ok(UpdateState::Updating) => "updating",
        Ok(UpdateState::Paused) => "paused",
        Ok(UpdateState::Completed) => "completed",
        Ok(UpdateState::RollbackStarted) => "rollback_started",
        Ok(UpdateState::RollbackPaused) => "rollback_paused",
        Ok(UpdateState::RollbackCompleted) => "rollback_completed",
        _ => "",
    };
    let set = |t: Option<&prost_types::Timestamp>| {
        t.filter(|t| t.seconds != 0 || t.nanos != 0)
            .map(|t| time(Some(t)))
    };
    UpdateStatus {
        state: state.into(),
        started_at: set(status.started_at.as_ref()),
        completed_at: set(status.completed_at.as_ref()),
        message: status.message.clone(),
    }
}

/// The service `reference` names (ID, name or unique ID prefix).
pub async fn get(backend: &Backend, reference: &str) -> Result<v1::Service, EngineError> {
    if reference.is_empty() {
        return Err(EngineError::not_found("service  not found"));
    }
    let reference = reference.to_string();
    let response = backend
        .call(async move |mut c| {
            c.get_service(GetServiceRequest {
                service_id: reference,
                insert_defaults: false,
            })
            .await
        })
        .await?;
    response
        .service
        .ok_or_else(|| EngineError::internal("the Control API answered without a service"))
}

/// The ID of a stored object's meta.
pub fn id_of(meta: Option<&v1::Meta>) -> String {
    meta.map(|m| m.id.clone()).unwrap_or_default()
}

/// The runtime a task spec runs (`container`, `process`), as the `runtime` filter names it.
pub fn runtime_of(task: Option<&v1::TaskSpec>) -> &'static str {
    match task.and_then(|t| t.runtime.as_ref()) {
        Some(v1::task_spec::Runtime::Container(_)) => "container",
        Some(v1::task_spec::Runtime::Process(_)) => "process",
        None => "",
    }
}

#[cfg(test)]
mod tests;
