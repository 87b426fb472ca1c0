//! The `task` endpoints of the Engine API: list, inspect, logs.
//!
//! A task renders as moby's `Task`: `{ID, Version, CreatedAt, UpdatedAt, Name?, Labels,
//! Spec, ServiceID, Slot?, NodeID?, Status{Timestamp, State, Message?, Err?,
//! ContainerStatus?, PortStatus}, DesiredState, NetworksAttachments?, GenericResources?,
//! JobIteration?}`.
//!
//! - `Spec.ContainerSpec` is never null (the CLI dereferences it); a host-process task shows
//!   its process as a container spec without an image (see [`crate::service::spec`]), and
//!   its PID and exit code as `ContainerStatus`. A task's `Spec` has no `Runtime` (moby
//!   names it in a service's task template only).
//! - `Slot` starts at 1 for replicated services and at 0 for replicated jobs (so the first
//!   job task has none, as in moby, whose `Slot` is `omitempty`); global tasks have none.
//! - `JobIteration` is set for the tasks of job services only, which is why rendering takes
//!   the task's service when it still exists.
//! - A job's task meant to run shows the desired state `complete`, as in moby.
//! - States are SwarmKit's, in lower case (`new`, `pending`, `assigned`, `accepted`,
//!   `preparing`, `ready`, `starting`, `running`, `complete`, `shutdown`, `failed`,
//!   `rejected`, `remove`, `orphaned`).

pub mod inspect;
pub mod list;
pub mod logs;

use std::collections::BTreeMap;

use serde::Serialize;
use shoal_api::v1::{self, GetTaskRequest, TaskState, task_status};

use crate::backend::Backend;
use crate::error::EngineError;
use crate::service::spec::{GenericResource, PortConfig, TaskSpec};
use crate::shapes::{ObjectMeta, Version, time};

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A task in Docker's shape.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Task {
    #[serde(flatten)]
    pub meta: ObjectMeta,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub spec: TaskSpec,
    #[serde(rename = "ServiceID", skip_serializing_if = "String::is_empty")]
    pub service_id: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub slot: u64,
    #[serde(rename = "NodeID", skip_serializing_if = "String::is_empty")]
    pub node_id: String,
    pub status: TaskStatus,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub desired_state: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub networks_attachments: Vec<NetworkAttachment>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub generic_resources: Vec<GenericResource>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_iteration: Option<Version>,
}

/// Docker's `TaskStatus`.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskStatus {
    pub timestamp: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub state: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub err: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_status: Option<ContainerStatus>,
    pub port_status: PortStatus,
}

/// Docker's `ContainerStatus`.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerStatus {
    #[serde(rename = "ContainerID", skip_serializing_if = "String::is_empty")]
    pub container_id: String,
    #[serde(rename = "PID", skip_serializing_if = "is_zero_i32")]
    pub pid: i32,
    #[serde(skip_serializing_if = "is_zero_i32")]
    pub exit_code: i32,
}

fn is_zero_i32(n: &i32) -> bool {
    *n == 0
}

/// Docker's `PortStatus`.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PortStatus {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortConfig>,
}

/// Docker's `NetworkAttachment`: the network object and the task's addresses on it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkAttachment {
    pub network: serde_json::Value,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
}

/// A task state's name, as Docker spells it.
pub fn state_name(state: i32) -> &'static str {
    match TaskState::try_from(state) {
        Ok(TaskState::New) => "new",
        Ok(TaskState::Pending) => "pending",
        Ok(TaskState::Assigned) => "assigned",
        Ok(TaskState::Accepted) => "accepted",
        Ok(TaskState::Preparing) => "preparing",
        Ok(TaskState::Ready) => "ready",
        Ok(TaskState::Starting) => "starting",
        Ok(TaskState::Running) => "running",
        Ok(TaskState::Complete) => "complete",
        Ok(TaskState::Shutdown) => "shutdown",
        Ok(TaskState::Failed) => "failed",
        Ok(TaskState::Rejected) => "rejected",
        Ok(TaskState::Remove) => "remove",
        Ok(TaskState::Orphaned) => "orphaned",
        Err(_) => "",
    }
}

/// A task's desired state as Docker shows it: a job's tasks are meant to complete (SwarmKit
/// gives them the desired state `complete`; Shoal's orchestrator keeps `running` until they
/// end, which means the same).
pub fn desired_state_name(state: i32, job: bool) -> &'static str {
    if job && state == TaskState::Running as i32 {
        return "complete";
    }
    state_name(state)
}

/// The state a Docker name spells (case-insensitively), for the `desired-state` filter.
pub fn parse_state(name: &str) -> Option<TaskState> {
    TaskState::from_str_name(&format!("TASK_STATE_{}", name.to_ascii_uppercase()))
}

/// A swarm network as a task's attachment shows it (moby's `swarm.Network`).
pub fn network_shape(network: &v1::Network) -> serde_json::Value {
    let spec = network.spec.clone().unwrap_or_default();
    let annotations = spec.annotations.clone().unwrap_or_default();
    let labels: BTreeMap<String, String> = annotations
        .labels
        .iter()
        .map(|l| (l.key.clone(), l.value.clone()))
        .collect();
    let mut spec_json = serde_json::json!({ "Name": annotations.name, "Labels": labels });
    if let Some(driver) = &spec.driver_config {
        spec_json["DriverConfiguration"] = driver_shape(driver);
    }
    for (key, on) in [
        ("IPv6Enabled", spec.ipv6_enabled),
        ("Internal", spec.internal),
        ("Attachable", spec.attachable),
        ("Ingress", spec.ingress),
    ] {
        if on {
            spec_json[key] = serde_json::Value::Bool(true);
        }
    }
    spec_json["Scope"] = "swarm".into();
    let mut out =
        serde_json::to_value(ObjectMeta::from_proto(network.meta.as_ref())).unwrap_or_default();
    out["Spec"] = spec_json;
    out["DriverState"] = network
        .driver_state
        .as_ref()
        .map(driver_shape)
        .unwrap_or_else(|| serde_json::json!({}));
    if let Some(ipam) = &network.ipam {
        let configs: Vec<serde_json::Value> = ipam
            .configs
            .iter()
            .map(|c| {
                let mut config = serde_json::Map::new();
                for (key, value) in [
                    ("Subnet", &c.subnet),
                    ("Range", &c.range),
                    ("Gateway", &c.gateway),
                ] {
                    if !value.is_empty() {
                        config.insert(key.into(), value.clone().into());
                    }
                }
                serde_json::Value::Object(config)
            })
            .collect();
        let mut ipam_json = serde_json::json!({
            "Driver": ipam.driver.as_ref().map(driver_shape).unwrap_or_else(|| serde_json::json!({})),
        });
        if !configs.is_empty() {
            ipam_json["Configs"] = configs.into();
        }
        out["IPAMOptions"] = ipam_json;
    }
    out
}

fn driver_shape(driver: &v1::Driver) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    if !driver.name.is_empty() {
        out.insert("Name".into(), driver.name.clone().into());
    }
    if !driver.options.is_empty() {
        out.insert(
            "Options".into(),
            serde_json::to_value(&driver.options).unwrap_or_default(),
        );
    }
    serde_json::Value::Object(out)
}

impl Task {
    /// A stored task in Docker's shape. `job`: its service is a job (so the task shows its
    /// `JobIteration`); `networks`: the networks its attachments name, by ID.
    pub fn from_proto(
        task: &v1::Task,
        job: bool,
        networks: &BTreeMap<String, v1::Network>,
    ) -> Task {
        let status = task.status.clone().unwrap_or_default();
        let container_status = match &status.runtime_status {
            Some(task_status::RuntimeStatus::Container(c)) => Some(ContainerStatus {
                container_id: c.container_id.clone(),
                pid: c.pid,
                exit_code: c.exit_code,
            }),
            Some(task_status::RuntimeStatus::Process(p)) => Some(ContainerStatus {
                container_id: String::new(),
                pid: p.pid,
                exit_code: p.exit_code,
            }),
            None => None,
        };
        let annotations = task.annotations.as_deref().cloned().unwrap_or_default();
        Task {
            meta: ObjectMeta::from_proto(task.meta.as_ref()),
            name: annotations.name,
            labels: annotations
                .labels
                .iter()
                .map(|l| (l.key.clone(), l.value.clone()))
                .collect(),
            spec: TaskSpec {
                // moby names the runtime in a service's task template only, not in a task's
                // spec.
                runtime: String::new(),
                ..task
                    .spec
                    .as_ref()
                    .map(|s| TaskSpec::from_proto(s))
                    .unwrap_or_else(TaskSpec::empty)
            },
            service_id: task.service_id.clone(),
            slot: task.slot,
            node_id: task.node_id.clone(),
            status: TaskStatus {
                timestamp: time(status.timestamp.as_ref()),
                state: state_name(status.state).into(),
                message: status.message.clone(),
                err: status.err.clone(),
                container_status,
                port_status: PortStatus {
                    ports: status
                        .port_status
                        .as_ref()
                        .map(|p| p.ports.iter().map(PortConfig::from_proto).collect())
                        .unwrap_or_default(),
                },
            },
            desired_state: desired_state_name(task.desired_state, job).into(),
            networks_attachments: task
                .networks
                .iter()
                .map(|n| NetworkAttachment {
                    network: networks
                        .get(&n.network_id)
                        .map(network_shape)
                        .unwrap_or_else(|| serde_json::json!({ "ID": n.network_id })),
                    addresses: n.addresses.clone(),
                })
                .collect(),
            generic_resources: Vec::new(),
            job_iteration: job.then_some(Version {
                index: task.job_iteration,
            }),
        }
    }
}

/// The task `reference` names (ID or unique ID prefix).
pub async fn get(backend: &Backend, reference: &str) -> Result<v1::Task, EngineError> {
    if reference.is_empty() {
        return Err(EngineError::not_found("task  not found"));
    }
    let reference = reference.to_string();
    backend
        .call(async move |mut c| c.get_task(GetTaskRequest { task_id: reference }).await)
        .await?
        .task
        .ok_or_else(|| EngineError::internal("the Control API answered without a task"))
}

/// The networks of the cluster by ID, when some task is attached to one (else none are
/// fetched).
pub async fn networks_for(
    backend: &Backend,
    tasks: &[v1::Task],
) -> Result<BTreeMap<String, v1::Network>, EngineError> {
    if tasks.iter().all(|t| t.networks.is_empty()) {
        return Ok(BTreeMap::new());
    }
    let networks = backend
        .call(async move |mut c| c.list_networks(v1::ListNetworksRequest::default()).await)
        .await?
        .networks;
    Ok(networks
        .into_iter()
        .map(|n| (crate::service::id_of(n.meta.as_ref()), n))
        .collect())
}

/// Whether `service` is a job.
pub fn is_job(service: &v1::Service) -> bool {
    matches!(
        service.spec.as_ref().and_then(|s| s.mode.as_ref()),
        Some(v1::service_spec::Mode::ReplicatedJob(_) | v1::service_spec::Mode::GlobalJob(_))
    )
}

#[cfg(test)]
mod tests;
