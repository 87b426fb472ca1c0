//! Docker's `ServiceSpec`, `TaskSpec` and `ContainerSpec` (moby's `api/types/swarm`), and
//! their conversions to and from the Control API's specs.
//!
//! One set of types serves both directions: decoded leniently from request bodies
//! ([`crate::lenient`]) and encoded with Go's `omitempty` rules, so that what a client sent is
//! what it reads back. A Go pointer is an `Option` here and is sent whenever it is set, even
//! to zero (docker-py compares `RestartPolicy` dicts whole, `Window: 0` included); a Go value
//! with `omitempty` is skipped when zero; a Go value without it is always sent.
//!
//! # Conversions
//!
//! [`ServiceSpec::to_proto`] validates what the Control API cannot see (the spellings of
//! enums, negative counts, more than one mode, runtimes and fields Shoal does not run) and
//! answers a 400 or 501 naming the field; the Control API validates the rest. Docker's
//! defaults are applied as moby applies them: `"Replicated":{}` is one replica; a replicated
//! job runs `MaxConcurrent` 1 and `TotalCompletions` = `MaxConcurrent`; an empty restart
//! condition is `any`. [`ServiceSpec::from_proto`] renders a stored spec.
//!
//! # Where it departs from moby
//!
//! - Shoal also runs tasks as host processes (runtime `process`). Such a task spec is shown
//!   as a `ContainerSpec` holding the process's fields (`Command` is the one program, `Args`
//!   its arguments, no `Image`), since the docker CLI dereferences `ContainerSpec`, and
//!   without a `Runtime`: the CLI refuses to update a service whose `Runtime` is not
//!   `container` ("mismatched runtime with container spec"). An update of a host-process
//!   service keeps it one (as `docker service scale` sends the spec back); `"Runtime":
//!   "process"` also says so explicitly, on create too.
//! - Not supported, refused with 501 rather than ignored: plugin and attachment runtimes,
//!   Windows credential specs and isolation modes, custom seccomp profiles, bind propagation
//!   and non-recursive binds, volume `NoCopy`/`Subpath`, tmpfs `Options`, image and cluster
//!   mounts, config runtime targets. A mount's `Consistency` is accepted and dropped: it
//!   only means something on Docker Desktop for Mac, and Docker on Linux ignores it too.
//! - `Spec.Networks` (deprecated since API 1.44) is moved into `TaskTemplate.Networks`, as
//!   moby does when the task template names none.

use std::collections::BTreeMap;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use shoal_api::v1::{self, service_spec, task_spec};

use crate::error::EngineError;
use crate::lenient;
use crate::shapes::{duration, nanos};

/// A container's isolation as moby shows it: the only one Shoal runs (Windows' `process` and
/// `hyperv` are refused).
pub const DEFAULT_ISOLATION: &str = "default";

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero_i64(n: &i64) -> bool {
    *n == 0
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

/// A float as Go's `encoding/json` writes it: whole numbers without a fraction (`0`, not
/// `0.0`).
fn go_float<S: serde::Serializer>(value: &f32, serializer: S) -> Result<S::Ok, S::Error> {
    if value.is_finite() && value.fract() == 0.0 && value.abs() < 1e15 {
        serializer.serialize_i64(*value as i64)
    } else {
        serializer.serialize_f32(*value)
    }
}

fn bad(message: impl Into<String>) -> EngineError {
    EngineError::bad_request(message)
}

fn unsupported(message: impl Into<String>) -> EngineError {
    EngineError::not_implemented(message)
}

/// A protobuf duration, or none when zero (Go's `omitempty` durations).
fn duration_if_set(n: i64) -> Option<prost_types::Duration> {
    (n != 0).then(|| duration(n))
}

fn non_negative(field: &str, n: i64) -> Result<i64, EngineError> {
    if n < 0 {
        return Err(bad(format!(
            "invalid {field}: {n} is negative; give 0 or more"
        )));
    }
    Ok(n)
}

fn labels_to_proto(labels: &BTreeMap<String, String>) -> Vec<v1::Label> {
    labels
        .iter()
        .map(|(key, value)| v1::Label {
            key: key.clone(),
            value: value.clone(),
        })
        .collect()
}

fn labels_from_proto(labels: &[v1::Label]) -> BTreeMap<String, String> {
    labels
        .iter()
        .map(|l| (l.key.clone(), l.value.clone()))
        .collect()
}

// --- ServiceSpec ----------------------------------------------------------------------------

/// Docker's `ServiceSpec`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct ServiceSpec {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub task_template: TaskSpec,
    pub mode: ServiceMode,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update_config: Option<UpdateConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback_config: Option<UpdateConfig>,
    /// Deprecated since API 1.44: moved into `TaskTemplate.Networks`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<NetworkAttachmentConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint_spec: Option<EndpointSpec>,
}

/// Docker's `ServiceMode`: one of four members. Decoded by hand so that an unknown mode is
/// refused rather than ignored (Go would ignore it, and create a replicated service).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceMode {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicated: Option<ReplicatedService>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub global: Option<Empty>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicated_job: Option<ReplicatedJob>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub global_job: Option<Empty>,
}

impl<'de> Deserialize<'de> for ServiceMode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let members = BTreeMap::<String, serde_json::Value>::deserialize(deserializer)?;
        let mut mode = ServiceMode::default();
        fn member<T: serde::de::DeserializeOwned, E: de::Error>(
            name: &str,
            value: serde_json::Value,
        ) -> Result<T, E> {
            lenient::from_value(value).map_err(|e| {
                E::custom(format!(
                    "Mode.{name}: {}",
                    e.message.trim_start_matches("invalid JSON: ")
                ))
            })
        }
        for (key, value) in members {
            if value.is_null() {
                continue;
            }
            match key.to_ascii_lowercase().as_str() {
                "replicated" => mode.replicated = Some(member("Replicated", value)?),
                "global" => mode.global = Some(member("Global", value)?),
                "replicatedjob" => mode.replicated_job = Some(member("ReplicatedJob", value)?),
                "globaljob" => mode.global_job = Some(member("GlobalJob", value)?),
                _ => {
                    return Err(de::Error::custom(format!(
                        "unknown service mode {key:?} in Mode: use Replicated, Global, \
                         ReplicatedJob or GlobalJob"
                    )));
                }
            }
        }
        Ok(mode)
    }
}

/// `{}`: a mode without settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Empty {}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct ReplicatedService {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct ReplicatedJob {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_completions: Option<i64>,
}

/// Docker's `UpdateConfig` (also the rollback config).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct UpdateConfig {
    pub parallelism: i64,
    #[serde(skip_serializing_if = "is_zero_i64")]
    pub delay: i64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub failure_action: String,
    #[serde(skip_serializing_if = "is_zero_i64")]
    pub monitor: i64,
    #[serde(serialize_with = "go_float")]
    pub max_failure_ratio: f32,
    pub order: String,
}

/// Docker's `EndpointSpec`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct EndpointSpec {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub mode: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortConfig>,
}

/// Docker's `PortConfig`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct PortConfig {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub target_port: u32,
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub published_port: u32,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub publish_mode: String,
}

/// Docker's `NetworkAttachmentConfig`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct NetworkAttachmentConfig {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub target: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub driver_opts: BTreeMap<String, String>,
}

/// Docker's `Driver` (log drivers, volume drivers).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Driver {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

// --- TaskSpec -------------------------------------------------------------------------------

/// Docker's `TaskSpec` (a service's `TaskTemplate`, a task's `Spec`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct TaskSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_spec: Option<ContainerSpec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin_spec: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_attachment_spec: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<RestartPolicy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<NetworkAttachmentConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_driver: Option<Driver>,
    pub force_update: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub runtime: String,
}

/// Docker's `ResourceRequirements`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct ResourceRequirements {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limit>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reservations: Option<Resources>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swap_bytes: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_swappiness: Option<i64>,
}

/// Docker's `Limit`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Limit {
    #[serde(rename = "NanoCPUs", skip_serializing_if = "is_zero_i64")]
    pub nano_cpus: i64,
    #[serde(skip_serializing_if = "is_zero_i64")]
    pub memory_bytes: i64,
    #[serde(skip_serializing_if = "is_zero_i64")]
    pub pids: i64,
}

/// Docker's `Resources` (reservations).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Resources {
    #[serde(rename = "NanoCPUs", skip_serializing_if = "is_zero_i64")]
    pub nano_cpus: i64,
    #[serde(skip_serializing_if = "is_zero_i64")]
    pub memory_bytes: i64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub generic_resources: Vec<GenericResource>,
}

/// Docker's `GenericResource`: one of a named or a discrete resource.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct GenericResource {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub named_resource_spec: Option<NamedGenericResource>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discrete_resource_spec: Option<DiscreteGenericResource>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct NamedGenericResource {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub value: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct DiscreteGenericResource {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(skip_serializing_if = "is_zero_i64")]
    pub value: i64,
}

/// Docker's `RestartPolicy`: every member but the condition is a pointer, kept when zero.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct RestartPolicy {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub condition: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<i64>,
}

/// Docker's `Placement`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Placement {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub preferences: Vec<PlacementPreference>,
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub max_replicas: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<Platform>,
}

/// Docker's `PlacementPreference` (`Spread` has no `omitempty`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct PlacementPreference {
    pub spread: Option<SpreadOver>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct SpreadOver {
    pub spread_descriptor: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Platform {
    pub architecture: String,
    #[serde(rename = "OS")]
    pub os: String,
}

// --- ContainerSpec --------------------------------------------------------------------------

/// Docker's `ContainerSpec`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct ContainerSpec {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub image: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub hostname: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub dir: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub user: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub privileges: Option<Privileges>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init: Option<bool>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub stop_signal: String,
    #[serde(rename = "TTY", skip_serializing_if = "is_false")]
    pub tty: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub open_stdin: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub read_only: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_grace_period: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthConfig>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(rename = "DNSConfig", skip_serializing_if = "Option::is_none")]
    pub dns_config: Option<DnsConfig>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SecretReference>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub configs: Vec<ConfigReference>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub isolation: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub sysctls: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub capability_add: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub capability_drop: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ulimits: Vec<Ulimit>,
    #[serde(skip_serializing_if = "is_zero_i64")]
    pub oom_score_adj: i64,
}

/// Docker's `Privileges` (`CredentialSpec` and `SELinuxContext` have no `omitempty`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Privileges {
    pub credential_spec: Option<serde_json::Value>,
    #[serde(rename = "SELinuxContext")]
    pub selinux_context: Option<SeLinuxContext>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seccomp: Option<SeccompOpts>,
    #[serde(rename = "AppArmor", skip_serializing_if = "Option::is_none")]
    pub app_armor: Option<AppArmorOpts>,
    pub no_new_privileges: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct SeLinuxContext {
    pub disable: bool,
    pub user: String,
    pub role: String,
    pub r#type: String,
    pub level: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct SeccompOpts {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub mode: String,
    /// A custom profile, base64 (Go's `[]byte`): not supported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct AppArmorOpts {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub mode: String,
}

/// Docker's `mount.Mount`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Mount {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub r#type: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub source: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub target: String,
    #[serde(skip_serializing_if = "is_false")]
    pub read_only: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub consistency: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind_options: Option<BindOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume_options: Option<VolumeOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tmpfs_options: Option<TmpfsOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_options: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_options: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct BindOptions {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub propagation: String,
    #[serde(skip_serializing_if = "is_false")]
    pub non_recursive: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub create_mountpoint: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub read_only_non_recursive: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub read_only_force_recursive: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct VolumeOptions {
    #[serde(skip_serializing_if = "is_false")]
    pub no_copy: bool,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub subpath: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver_config: Option<Driver>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct TmpfsOptions {
    #[serde(skip_serializing_if = "is_zero_i64")]
    pub size_bytes: i64,
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub mode: u32,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<Vec<String>>,
}

/// Docker's `container.HealthConfig`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct HealthConfig {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub test: Vec<String>,
    #[serde(skip_serializing_if = "is_zero_i64")]
    pub interval: i64,
    #[serde(skip_serializing_if = "is_zero_i64")]
    pub timeout: i64,
    #[serde(skip_serializing_if = "is_zero_i64")]
    pub start_period: i64,
    #[serde(skip_serializing_if = "is_zero_i64")]
    pub start_interval: i64,
    #[serde(skip_serializing_if = "is_zero_i64")]
    pub retries: i64,
}

/// Docker's `DNSConfig`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct DnsConfig {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// Docker's `SecretReference` (`File` has no `omitempty`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct SecretReference {
    pub file: Option<FileTarget>,
    #[serde(rename = "SecretID")]
    pub secret_id: String,
    pub secret_name: String,
}

/// Docker's `ConfigReference`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct ConfigReference {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<FileTarget>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<serde_json::Value>,
    #[serde(rename = "ConfigID")]
    pub config_id: String,
    pub config_name: String,
}

/// Docker's `SecretReferenceFileTarget` / `ConfigReferenceFileTarget`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct FileTarget {
    pub name: String,
    #[serde(rename = "UID")]
    pub uid: String,
    #[serde(rename = "GID")]
    pub gid: String,
    pub mode: u32,
}

/// Docker's `Ulimit`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Ulimit {
    pub name: String,
    pub hard: i64,
    pub soft: i64,
}

// --- Docker → Control API -------------------------------------------------------------------

impl ServiceSpec {
    /// The Control API's spec for this one, with Docker's defaults; refuses what is invalid
    /// (400) or not supported (501), naming the field.
    pub fn to_proto(&self) -> Result<v1::ServiceSpec, EngineError> {
        self.to_proto_for(false)
    }

    /// [`ServiceSpec::to_proto`] for an update of a service that runs host processes when
    /// `process` (a task template without a `Runtime` then stays a process).
    pub fn to_proto_for(&self, process: bool) -> Result<v1::ServiceSpec, EngineError> {
        let mut template = self.task_template.clone();
        if template.networks.is_empty() {
            template.networks = self.networks.clone();
        } else if !self.networks.is_empty() {
            return Err(bad(
                "invalid Networks: give the service's networks in TaskTemplate.Networks only \
                 (Spec.Networks is deprecated)",
            ));
        }
        Ok(v1::ServiceSpec {
            annotations: Some(v1::Annotations {
                name: self.name.clone(),
                labels: labels_to_proto(&self.labels),
            }),
            task: Some(template.to_proto("TaskTemplate", process)?.into()),
            mode: Some(self.mode.to_proto()?),
            update: self
                .update_config
                .as_ref()
                .map(|u| u.to_proto("UpdateConfig"))
                .transpose()?,
            rollback: self
                .rollback_config
                .as_ref()
                .map(|u| u.to_proto("RollbackConfig"))
                .transpose()?,
            endpoint: self
                .endpoint_spec
                .as_ref()
                .map(EndpointSpec::to_proto)
                .transpose()?,
        })
    }

    /// A stored spec in Docker's shape.
    pub fn from_proto(spec: &v1::ServiceSpec) -> ServiceSpec {
        let annotations = spec.annotations.clone().unwrap_or_default();
        ServiceSpec {
            name: annotations.name,
            labels: labels_from_proto(&annotations.labels),
            task_template: spec
                .task
                .as_ref()
                .map(|t| TaskSpec::from_proto(t))
                .unwrap_or_else(TaskSpec::empty),
            mode: ServiceMode::from_proto(spec.mode.as_ref()),
            update_config: spec.update.as_ref().map(UpdateConfig::from_proto),
            rollback_config: spec.rollback.as_ref().map(UpdateConfig::from_proto),
            networks: Vec::new(),
            endpoint_spec: spec.endpoint.as_ref().map(EndpointSpec::from_proto),
        }
    }

    /// Fills in what `insertDefaults=true` shows (SwarmKit's `defaults.InterpolateService`):
    /// update and rollback configs, the restart policy, resources, placement, and for
    /// containers the stop grace period and DNS config — each only when absent.
    pub fn insert_defaults(&mut self) {
        let update = || UpdateConfig {
            parallelism: shoal_api::defaults::UPDATE_PARALLELISM as i64,
            delay: 0,
            failure_action: "pause".into(),
            monitor: shoal_api::defaults::UPDATE_MONITOR.as_nanos() as i64,
            max_failure_ratio: 0.0,
            order: "stop-first".into(),
        };
        self.update_config.get_or_insert_with(update);
        self.rollback_config.get_or_insert_with(update);
        let task = &mut self.task_template;
        task.resources.get_or_insert_with(Default::default);
        task.placement.get_or_insert_with(Default::default);
        task.restart_policy.get_or_insert_with(|| RestartPolicy {
            condition: "any".into(),
            delay: Some(shoal_api::defaults::RESTART_DELAY.as_nanos() as i64),
            max_attempts: Some(0),
            window: None,
        });
        let container = task.container_spec.get_or_insert_with(Default::default);
        // A host process has no image (see the module notes).
        let process = container.image.is_empty() && !container.command.is_empty();
        container
            .stop_grace_period
            .get_or_insert(shoal_api::defaults::STOP_GRACE_PERIOD.as_nanos() as i64);
        if !process {
            container.dns_config.get_or_insert_with(Default::default);
        }
    }

    /// The mode's name as `docker service ls` and the `mode` filter spell it.
    pub fn mode_name(&self) -> &'static str {
        self.mode.name()
    }
}

impl ServiceMode {
    fn to_proto(&self) -> Result<service_spec::Mode, EngineError> {
        let given = [
            self.replicated.is_some(),
            self.global.is_some(),
            self.replicated_job.is_some(),
            self.global_job.is_some(),
        ]
        .iter()
        .filter(|g| **g)
        .count();
        if given > 1 {
            return Err(bad(
                "invalid Mode: give only one of Replicated, Global, ReplicatedJob, GlobalJob",
            ));
        }
        if self.global.is_some() {
            return Ok(service_spec::Mode::Global(v1::GlobalService {}));
        }
        if self.global_job.is_some() {
            return Ok(service_spec::Mode::GlobalJob(v1::GlobalJob {}));
        }
        if let Some(job) = &self.replicated_job {
            let max = non_negative(
                "Mode.ReplicatedJob.MaxConcurrent",
                job.max_concurrent.unwrap_or(1),
            )?;
            let total = non_negative(
                "Mode.ReplicatedJob.TotalCompletions",
                job.total_completions.unwrap_or(max),
            )?;
            return Ok(service_spec::Mode::ReplicatedJob(v1::ReplicatedJob {
                max_concurrent: max as u64,
                total_completions: total as u64,
            }));
        }
        let replicas = self
            .replicated
            .as_ref()
            .and_then(|r| r.replicas)
            .unwrap_or(shoal_api::defaults::SERVICE_REPLICAS as i64);
        let replicas = non_negative("Mode.Replicated.Replicas", replicas)?;
        Ok(service_spec::Mode::Replicated(v1::ReplicatedService {
            replicas: replicas as u64,
        }))
    }

    fn from_proto(mode: Option<&service_spec::Mode>) -> ServiceMode {
        let mut out = ServiceMode::default();
        match mode {
            Some(service_spec::Mode::Replicated(r)) => {
                out.replicated = Some(ReplicatedService {
                    replicas: Some(r.replicas as i64),
                })
            }
            Some(service_spec::Mode::Global(_)) => out.global = Some(Empty {}),
            Some(service_spec::Mode::ReplicatedJob(j)) => {
                out.replicated_job = Some(ReplicatedJob {
                    max_concurrent: Some(j.max_concurrent as i64),
                    total_completions: Some(j.total_completions as i64),
                })
            }
            Some(service_spec::Mode::GlobalJob(_)) => out.global_job = Some(Empty {}),
            None => {}
        }
        out
    }

    /// `replicated`, `global`, `replicated-job` or `global-job`.
    pub fn name(&self) -> &'static str {
        if self.global.is_some() {
            "global"
        } else if self.replicated_job.is_some() {
            "replicated-job"
        } else if self.global_job.is_some() {
            "global-job"
        } else {
            "replicated"
        }
    }

    /// Whether this is a job mode.
    pub fn is_job(&self) -> bool {
        self.replicated_job.is_some() || self.global_job.is_some()
    }
}

impl UpdateConfig {
    fn to_proto(&self, field: &str) -> Result<v1::UpdateConfig, EngineError> {
        use v1::update_config::{FailureAction, UpdateOrder};
        let failure_action = match self.failure_action.as_str() {
            "" | "pause" => FailureAction::Pause,
            "continue" => FailureAction::Continue,
            "rollback" => FailureAction::Rollback,
            other => {
                return Err(bad(format!(
                    "invalid {field}.FailureAction {other:?}: use pause, continue or rollback"
                )));
            }
        };
        let order = match self.order.as_str() {
            "" | "stop-first" => UpdateOrder::StopFirst,
            "start-first" => UpdateOrder::StartFirst,
            other => {
                return Err(bad(format!(
                    "invalid {field}.Order {other:?}: use stop-first or start-first"
                )));
            }
        };
        if !(0.0..=1.0).contains(&self.max_failure_ratio) {
            return Err(bad(format!(
                "invalid {field}.MaxFailureRatio {}: give a fraction between 0 and 1",
                self.max_failure_ratio
            )));
        }
        Ok(v1::UpdateConfig {
            parallelism: non_negative(&format!("{field}.Parallelism"), self.parallelism)? as u64,
            delay: duration_if_set(non_negative(&format!("{field}.Delay"), self.delay)?),
            failure_action: failure_action as i32,
            monitor: duration_if_set(non_negative(&format!("{field}.Monitor"), self.monitor)?),
            max_failure_ratio: self.max_failure_ratio,
            order: order as i32,
        })
    }

    fn from_proto(u: &v1::UpdateConfig) -> UpdateConfig {
        use v1::update_config::{FailureAction, UpdateOrder};
        UpdateConfig {
            parallelism: u.parallelism as i64,
            delay: nanos(u.delay.as_ref()),
            failure_action: match FailureAction::try_from(u.failure_action) {
                Ok(FailureAction::Continue) => "continue",
                Ok(FailureAction::Rollback) => "rollback",
                _ => "pause",
            }
            .into(),
            monitor: nanos(u.monitor.as_ref()),
            max_failure_ratio: u.max_failure_ratio,
            order: match UpdateOrder::try_from(u.order) {
                Ok(UpdateOrder::StartFirst) => "start-first",
                _ => "stop-first",
            }
            .into(),
        }
    }
}

impl EndpointSpec {
    fn to_proto(&self) -> Result<v1::EndpointSpec, EngineError> {
        use v1::endpoint_spec::ResolutionMode;
        let mode = match self.mode.as_str() {
            "" | "vip" => ResolutionMode::Vip,
            "dnsrr" => ResolutionMode::Dnsrr,
            other => {
                return Err(bad(format!(
                    "invalid EndpointSpec.Mode {other:?}: use vip or dnsrr"
                )));
            }
        };
        Ok(v1::EndpointSpec {
            mode: mode as i32,
            ports: self
                .ports
                .iter()
                .enumerate()
                .map(|(i, p)| p.to_proto(&format!("EndpointSpec.Ports[{i}]")))
                .collect::<Result<_, _>>()?,
        })
    }

    /// The endpoint spec in Docker's shape.
    pub fn from_proto(e: &v1::EndpointSpec) -> EndpointSpec {
        use v1::endpoint_spec::ResolutionMode;
        EndpointSpec {
            mode: match ResolutionMode::try_from(e.mode) {
                Ok(ResolutionMode::Dnsrr) => "dnsrr",
                _ => "vip",
            }
            .into(),
            ports: e.ports.iter().map(PortConfig::from_proto).collect(),
        }
    }
}

impl PortConfig {
    fn to_proto(&self, field: &str) -> Result<v1::PortConfig, EngineError> {
        use v1::port_config::{Protocol, PublishMode};
        let protocol = match self.protocol.as_str() {
            "" | "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            "sctp" => Protocol::Sctp,
            other => {
                return Err(bad(format!(
                    "invalid {field}.Protocol {other:?}: use tcp, udp or sctp"
                )));
            }
        };
        let publish_mode = match self.publish_mode.as_str() {
            "" | "ingress" => PublishMode::Ingress,
            "host" => PublishMode::Host,
            other => {
                return Err(bad(format!(
                    "invalid {field}.PublishMode {other:?}: use ingress or host"
                )));
            }
        };
        Ok(v1::PortConfig {
            name: self.name.clone(),
            protocol: protocol as i32,
            target_port: self.target_port,
            published_port: self.published_port,
            publish_mode: publish_mode as i32,
        })
    }

    /// A port in Docker's shape.
    pub fn from_proto(p: &v1::PortConfig) -> PortConfig {
        use v1::port_config::{Protocol, PublishMode};
        PortConfig {
            name: p.name.clone(),
            protocol: match Protocol::try_from(p.protocol) {
                Ok(Protocol::Udp) => "udp",
                Ok(Protocol::Sctp) => "sctp",
                _ => "tcp",
            }
            .into(),
            target_port: p.target_port,
            published_port: p.published_port,
            publish_mode: match PublishMode::try_from(p.publish_mode) {
                Ok(PublishMode::Host) => "host",
                _ => "ingress",
            }
            .into(),
        }
    }
}

impl NetworkAttachmentConfig {
    fn to_proto(&self) -> v1::NetworkAttachmentConfig {
        v1::NetworkAttachmentConfig {
            target: self.target.clone(),
            aliases: self.aliases.clone(),
            addresses: Vec::new(),
            driver_attachment_opts: self.driver_opts.clone(),
        }
    }

    fn from_proto(n: &v1::NetworkAttachmentConfig) -> NetworkAttachmentConfig {
        NetworkAttachmentConfig {
            target: n.target.clone(),
            aliases: n.aliases.clone(),
            driver_opts: n.driver_attachment_opts.clone(),
        }
    }
}

impl TaskSpec {
    /// A task spec with an empty `ContainerSpec` (never null: the docker CLI dereferences it).
    pub fn empty() -> TaskSpec {
        TaskSpec {
            container_spec: Some(ContainerSpec::default()),
            ..Default::default()
        }
    }

    /// The Control API's task spec; `field` names it in errors. `process`: a template
    /// without a `Runtime` runs a host process (it updates a host-process service).
    pub fn to_proto(&self, field: &str, process: bool) -> Result<v1::TaskSpecFields, EngineError> {
        if self.plugin_spec.is_some() || self.runtime == "plugin" {
            return Err(unsupported(format!(
                "{field}.PluginSpec: Shoal does not run plugin tasks; give a ContainerSpec"
            )));
        }
        if self.network_attachment_spec.is_some() || self.runtime == "attachment" {
            return Err(unsupported(format!(
                "{field}.NetworkAttachmentSpec: attachment tasks are made by the Engine for \
                 `docker run --network`, which Shoal does not serve"
            )));
        }
        let container = self.container_spec.clone().unwrap_or_default();
        let runtime = match self.runtime.as_str() {
            "" if process => task_spec::Runtime::Process(Box::new(
                container.to_process(&format!("{field}.ContainerSpec"))?,
            )),
            "" | "container" => task_spec::Runtime::Container(Box::new(container.to_proto(field)?)),
            "process" => task_spec::Runtime::Process(Box::new(
                container.to_process(&format!("{field}.ContainerSpec"))?,
            )),
            other => {
                return Err(bad(format!(
                    "invalid {field}.Runtime {other:?}: use container (or process, for \
                     Shoal's host processes)"
                )));
            }
        };
        Ok(v1::TaskSpecFields {
            runtime: Some(runtime),
            resources: self
                .resources
                .as_ref()
                .map(|r| r.to_proto(&format!("{field}.Resources")).map(Box::new))
                .transpose()?,
            restart: self
                .restart_policy
                .as_ref()
                .map(|r| r.to_proto(&format!("{field}.RestartPolicy")))
                .transpose()?,
            placement: self.placement.as_ref().map(|p| Box::new(p.to_proto())),
            log_driver: self.log_driver.as_ref().map(|d| v1::LogDriver {
                name: d.name.clone(),
                options: d.options.clone(),
            }),
            networks: self
                .networks
                .iter()
                .map(NetworkAttachmentConfig::to_proto)
                .collect(),
            force_update: self.force_update,
        })
    }

    /// A stored task spec in Docker's shape.
    pub fn from_proto(t: &v1::TaskSpecFields) -> TaskSpec {
        let (container_spec, runtime) = match t.runtime.as_ref() {
            Some(task_spec::Runtime::Container(c)) => (ContainerSpec::from_proto(c), "container"),
            Some(task_spec::Runtime::Process(p)) => (ContainerSpec::from_process(p), ""),
            None => (ContainerSpec::default(), ""),
        };
        TaskSpec {
            container_spec: Some(container_spec),
            plugin_spec: None,
            network_attachment_spec: None,
            resources: t.resources.as_deref().map(ResourceRequirements::from_proto),
            restart_policy: t.restart.as_ref().map(RestartPolicy::from_proto),
            placement: t.placement.as_deref().map(Placement::from_proto),
            networks: t
                .networks
                .iter()
                .map(NetworkAttachmentConfig::from_proto)
                .collect(),
            log_driver: t.log_driver.as_ref().map(|d| Driver {
                name: d.name.clone(),
                options: d.options.clone(),
            }),
            force_update: t.force_update,
            runtime: runtime.into(),
        }
    }
}

impl ResourceRequirements {
    fn to_proto(&self, field: &str) -> Result<v1::ResourceRequirements, EngineError> {
        let limits = self.limits.as_ref().map(|l| v1::Resources {
            nano_cpus: l.nano_cpus,
            memory_bytes: l.memory_bytes,
            generic: Vec::new(),
        });
        let reservations = self
            .reservations
            .as_ref()
            .map(|r| -> Result<v1::Resources, EngineError> {
                Ok(v1::Resources {
                    nano_cpus: r.nano_cpus,
                    memory_bytes: r.memory_bytes,
                    generic: r
                        .generic_resources
                        .iter()
                        .enumerate()
                        .map(|(i, g)| {
                            g.to_proto(&format!("{field}.Reservations.GenericResources[{i}]"))
                        })
                        .collect::<Result<_, _>>()?,
                })
            })
            .transpose()?;
        Ok(v1::ResourceRequirements {
            limits,
            reservations,
            swap_bytes: self.swap_bytes,
            memory_swappiness: self.memory_swappiness,
            pids: non_negative(
                &format!("{field}.Limits.Pids"),
                self.limits.as_ref().map_or(0, |l| l.pids),
            )?,
        })
    }

    fn from_proto(r: &v1::ResourceRequirements) -> ResourceRequirements {
        ResourceRequirements {
            limits: r.limits.as_ref().map(|l| Limit {
                nano_cpus: l.nano_cpus,
                memory_bytes: l.memory_bytes,
                pids: r.pids,
            }),
            reservations: r.reservations.as_ref().map(|s| Resources {
                nano_cpus: s.nano_cpus,
                memory_bytes: s.memory_bytes,
                generic_resources: s.generic.iter().map(GenericResource::from_proto).collect(),
            }),
            swap_bytes: r.swap_bytes,
            memory_swappiness: r.memory_swappiness,
        }
    }
}

impl GenericResource {
    fn to_proto(&self, field: &str) -> Result<v1::GenericResource, EngineError> {
        use v1::generic_resource::Resource;
        let resource = match (&self.named_resource_spec, &self.discrete_resource_spec) {
            (Some(n), None) => Resource::Named(v1::NamedGenericResource {
                kind: n.kind.clone(),
                value: n.value.clone(),
            }),
            (None, Some(d)) => Resource::Discrete(v1::DiscreteGenericResource {
                kind: d.kind.clone(),
                value: d.value,
            }),
            _ => {
                return Err(bad(format!(
                    "invalid {field}: give exactly one of NamedResourceSpec and \
                     DiscreteResourceSpec"
                )));
            }
        };
        Ok(v1::GenericResource {
            resource: Some(resource),
        })
    }

    fn from_proto(g: &v1::GenericResource) -> GenericResource {
        use v1::generic_resource::Resource;
        match &g.resource {
            Some(Resource::Named(n)) => GenericResource {
                named_resource_spec: Some(NamedGenericResource {
                    kind: n.kind.clone(),
                    value: n.value.clone(),
                }),
                discrete_resource_spec: None,
            },
            Some(Resource::Discrete(d)) => GenericResource {
                named_resource_spec: None,
                discrete_resource_spec: Some(DiscreteGenericResource {
                    kind: d.kind.clone(),
                    value: d.value,
                }),
            },
            None => GenericResource::default(),
        }
    }
}

impl RestartPolicy {
    fn to_proto(&self, field: &str) -> Result<v1::RestartPolicy, EngineError> {
        use v1::restart_policy::Condition;
        let condition = match self.condition.as_str() {
            // moby: an empty condition is `any`.
            "" | "any" => Condition::Any,
            "none" => Condition::None,
            "on-failure" => Condition::OnFailure,
            other => {
                return Err(bad(format!(
                    "invalid {field}.Condition {other:?}: use none, on-failure or any"
                )));
            }
        };
        Ok(v1::RestartPolicy {
            condition: condition as i32,
            delay: self
                .delay
                .map(|d| non_negative(&format!("{field}.Delay"), d).map(duration))
                .transpose()?,
            max_attempts: non_negative(
                &format!("{field}.MaxAttempts"),
                self.max_attempts.unwrap_or(0),
            )? as u64,
            window: self
                .window
                .map(|w| non_negative(&format!("{field}.Window"), w).map(duration))
                .transpose()?,
        })
    }

    fn from_proto(r: &v1::RestartPolicy) -> RestartPolicy {
        use v1::restart_policy::Condition;
        RestartPolicy {
            condition: match Condition::try_from(r.condition) {
                Ok(Condition::None) => "none",
                Ok(Condition::OnFailure) => "on-failure",
                _ => "any",
            }
            .into(),
            delay: r.delay.as_ref().map(|d| nanos(Some(d))),
            // moby always shows it (SwarmKit's is not a pointer).
            max_attempts: Some(r.max_attempts as i64),
            window: r.window.as_ref().map(|w| nanos(Some(w))),
        }
    }
}

impl Placement {
    fn to_proto(&self) -> v1::Placement {
        v1::Placement {
            constraints: self.constraints.clone(),
            preferences: self
                .preferences
                .iter()
                .map(|p| v1::PlacementPreference {
                    preference: p.spread.as_ref().map(|s| {
                        v1::placement_preference::Preference::Spread(v1::SpreadOver {
                            spread_descriptor: s.spread_descriptor.clone(),
                        })
                    }),
                })
                .collect(),
            platforms: self
                .platforms
                .iter()
                .map(|p| v1::Platform {
                    architecture: p.architecture.clone(),
                    os: p.os.clone(),
                })
                .collect(),
            max_replicas: self.max_replicas,
        }
    }

    fn from_proto(p: &v1::Placement) -> Placement {
        Placement {
            constraints: p.constraints.clone(),
            preferences: p
                .preferences
                .iter()
                .map(|p| PlacementPreference {
                    spread: p.preference.as_ref().map(|pref| match pref {
                        v1::placement_preference::Preference::Spread(s) => SpreadOver {
                            spread_descriptor: s.spread_descriptor.clone(),
                        },
                    }),
                })
                .collect(),
            max_replicas: p.max_replicas,
            platforms: p
                .platforms
                .iter()
                .map(|p| Platform {
                    architecture: p.architecture.clone(),
                    os: p.os.clone(),
                })
                .collect(),
        }
    }
}

impl ContainerSpec {
    fn to_proto(&self, task_field: &str) -> Result<v1::ContainerSpec, EngineError> {
        let field = format!("{task_field}.ContainerSpec");
        match self.isolation.as_str() {
            "" | DEFAULT_ISOLATION => {}
            other => {
                return Err(unsupported(format!(
                    "{field}.Isolation {other:?}: isolation modes are Windows containers'; \
                     Shoal runs Linux containers with the default"
                )));
            }
        }
        Ok(v1::ContainerSpec {
            image: self.image.clone(),
            labels: self.labels.clone(),
            command: self.command.clone(),
            args: self.args.clone(),
            hostname: self.hostname.clone(),
            env: self.env.clone(),
            dir: self.dir.clone(),
            user: self.user.clone(),
            groups: self.groups.clone(),
            init: self.init,
            tty: self.tty,
            open_stdin: self.open_stdin,
            read_only: self.read_only,
            stop_signal: self.stop_signal.clone(),
            mounts: self
                .mounts
                .iter()
                .enumerate()
                .map(|(i, m)| m.to_proto(&format!("{field}.Mounts[{i}]")))
                .collect::<Result<_, _>>()?,
            stop_grace_period: self
                .stop_grace_period
                .map(|d| non_negative(&format!("{field}.StopGracePeriod"), d).map(duration))
                .transpose()?,
            secrets: self.secrets.iter().map(SecretReference::to_proto).collect(),
            configs: self
                .configs
                .iter()
                .enumerate()
                .map(|(i, c)| c.to_proto(&format!("{field}.Configs[{i}]")))
                .collect::<Result<_, _>>()?,
            hosts: self.hosts.clone(),
            dns_config: self.dns_config.as_ref().map(|d| {
                Box::new(v1::container_spec::DnsConfig {
                    nameservers: d.nameservers.clone(),
                    search: d.search.clone(),
                    options: d.options.clone(),
                })
            }),
            healthcheck: self
                .healthcheck
                .as_ref()
                .map(|h| h.to_proto(&format!("{field}.Healthcheck")).map(Box::new))
                .transpose()?,
            sysctls: self.sysctls.clone(),
            capability_add: self.capability_add.clone(),
            capability_drop: self.capability_drop.clone(),
            ulimits: self
                .ulimits
                .iter()
                .map(|u| v1::container_spec::Ulimit {
                    name: u.name.clone(),
                    soft: u.soft,
                    hard: u.hard,
                })
                .collect(),
            pids_limit: 0,
            oom_score_adj: self.oom_score_adj,
            privileges: self
                .privileges
                .as_ref()
                .map(|p| p.to_proto(&format!("{field}.Privileges")))
                .transpose()?,
        })
    }

    /// A process spec from the container spec a process task is shown as (see the module
    /// notes): only the fields a process has may be set.
    fn to_process(&self, field: &str) -> Result<v1::ProcessSpec, EngineError> {
        let container_only = [
            ("Image", !self.image.is_empty()),
            ("Labels", !self.labels.is_empty()),
            ("Hostname", !self.hostname.is_empty()),
            ("Groups", !self.groups.is_empty()),
            ("Privileges", self.privileges.is_some()),
            ("Init", self.init.is_some()),
            ("TTY", self.tty),
            ("OpenStdin", self.open_stdin),
            ("ReadOnly", self.read_only),
            ("Mounts", !self.mounts.is_empty()),
            ("Hosts", !self.hosts.is_empty()),
            ("DNSConfig", self.dns_config.is_some()),
            ("Isolation", !self.isolation.is_empty()),
            ("Sysctls", !self.sysctls.is_empty()),
            ("CapabilityAdd", !self.capability_add.is_empty()),
            ("CapabilityDrop", !self.capability_drop.is_empty()),
            ("Ulimits", !self.ulimits.is_empty()),
            ("OomScoreAdj", self.oom_score_adj != 0),
        ];
        if let Some((name, _)) = container_only.iter().find(|(_, set)| *set) {
            return Err(bad(format!(
                "invalid {field}.{name}: it applies to containers, and this task runs a host \
                 process (Runtime \"process\"); remove it, or create a container service"
            )));
        }
        let [command] = self.command.as_slice() else {
            return Err(bad(format!(
                "invalid {field}.Command: a process task runs one program, given as a \
                 one-element Command (its arguments go in Args)"
            )));
        };
        Ok(v1::ProcessSpec {
            command: command.clone(),
            args: self.args.clone(),
            env: self.env.clone(),
            dir: self.dir.clone(),
            user: self.user.clone(),
            stop_signal: self.stop_signal.clone(),
            stop_grace_period: self
                .stop_grace_period
                .map(|d| non_negative(&format!("{field}.StopGracePeriod"), d).map(duration))
                .transpose()?,
            secrets: self.secrets.iter().map(SecretReference::to_proto).collect(),
            configs: self
                .configs
                .iter()
                .enumerate()
                .map(|(i, c)| c.to_proto(&format!("{field}.Configs[{i}]")))
                .collect::<Result<_, _>>()?,
            healthcheck: self
                .healthcheck
                .as_ref()
                .map(|h| h.to_proto(&format!("{field}.Healthcheck")))
                .transpose()?,
        })
    }

    fn from_proto(c: &v1::ContainerSpec) -> ContainerSpec {
        ContainerSpec {
            image: c.image.clone(),
            labels: c.labels.clone(),
            command: c.command.clone(),
            args: c.args.clone(),
            hostname: c.hostname.clone(),
            env: c.env.clone(),
            dir: c.dir.clone(),
            user: c.user.clone(),
            groups: c.groups.clone(),
            privileges: c.privileges.as_ref().map(Privileges::from_proto),
            init: c.init,
            stop_signal: c.stop_signal.clone(),
            tty: c.tty,
            open_stdin: c.open_stdin,
            read_only: c.read_only,
            mounts: c.mounts.iter().map(Mount::from_proto).collect(),
            stop_grace_period: c.stop_grace_period.as_ref().map(|d| nanos(Some(d))),
            healthcheck: c.healthcheck.as_deref().map(HealthConfig::from_proto),
            hosts: c.hosts.clone(),
            dns_config: c.dns_config.as_deref().map(|d| DnsConfig {
                nameservers: d.nameservers.clone(),
                search: d.search.clone(),
                options: d.options.clone(),
            }),
            secrets: c.secrets.iter().map(SecretReference::from_proto).collect(),
            configs: c.configs.iter().map(ConfigReference::from_proto).collect(),
            // moby shows SwarmKit's `ISOLATION_DEFAULT` as "default" (never empty), the only
            // isolation Shoal runs.
            isolation: DEFAULT_ISOLATION.into(),
            sysctls: c.sysctls.clone(),
            capability_add: c.capability_add.clone(),
            capability_drop: c.capability_drop.clone(),
            ulimits: c
                .ulimits
                .iter()
                .map(|u| Ulimit {
                    name: u.name.clone(),
                    hard: u.hard,
                    soft: u.soft,
                })
                .collect(),
            oom_score_adj: c.oom_score_adj,
        }
    }

    fn from_process(p: &v1::ProcessSpec) -> ContainerSpec {
        ContainerSpec {
            command: vec![p.command.clone()],
            args: p.args.clone(),
            env: p.env.clone(),
            dir: p.dir.clone(),
            user: p.user.clone(),
            stop_signal: p.stop_signal.clone(),
            stop_grace_period: p.stop_grace_period.as_ref().map(|d| nanos(Some(d))),
            healthcheck: p.healthcheck.as_ref().map(HealthConfig::from_proto),
            secrets: p.secrets.iter().map(SecretReference::from_proto).collect(),
            configs: p.configs.iter().map(ConfigReference::from_proto).collect(),
            ..Default::default()
        }
    }
}

impl Privileges {
    fn to_proto(&self, field: &str) -> Result<v1::Privileges, EngineError> {
        use v1::privileges::{app_armor, seccomp};
        if self.credential_spec.as_ref().is_some_and(|c| {
            c.as_object()
                .is_none_or(|o| o.values().any(|v| !v.is_null() && v != ""))
        }) {
            return Err(unsupported(format!(
                "{field}.CredentialSpec: credential specs are for Windows containers, which \
                 Shoal does not run"
            )));
        }
        let seccomp = self
            .seccomp
            .as_ref()
            .map(|s| -> Result<v1::privileges::Seccomp, EngineError> {
                if s.profile.as_ref().is_some_and(|p| !p.is_empty()) || s.mode == "custom" {
                    return Err(unsupported(format!(
                        "{field}.Seccomp: custom seccomp profiles are not supported; use mode \
                         default or unconfined"
                    )));
                }
                let mode = match s.mode.as_str() {
                    "" | "default" => seccomp::Mode::Default,
                    "unconfined" => seccomp::Mode::Unconfined,
                    other => {
                        return Err(bad(format!(
                            "invalid {field}.Seccomp.Mode {other:?}: use default or unconfined"
                        )));
                    }
                };
                Ok(v1::privileges::Seccomp {
                    mode: mode as i32,
                    profile: Vec::new(),
                })
            })
            .transpose()?;
        let apparmor = self
            .app_armor
            .as_ref()
            .map(|a| -> Result<v1::privileges::AppArmor, EngineError> {
                let mode = match a.mode.as_str() {
                    "" | "default" => app_armor::Mode::Default,
                    "disabled" => app_armor::Mode::Disabled,
                    other => {
                        return Err(bad(format!(
                            "invalid {field}.AppArmor.Mode {other:?}: use default or disabled"
                        )));
                    }
                };
                Ok(v1::privileges::AppArmor { mode: mode as i32 })
            })
            .transpose()?;
        Ok(v1::Privileges {
            selinux_context: self.selinux_context.as_ref().map(|s| {
                v1::privileges::SeLinuxContext {
                    disable: s.disable,
                    user: s.user.clone(),
                    role: s.role.clone(),
                    r#type: s.r#type.clone(),
                    level: s.level.clone(),
                }
            }),
            seccomp,
            apparmor,
            no_new_privileges: self.no_new_privileges,
        })
    }

    fn from_proto(p: &v1::Privileges) -> Privileges {
        use v1::privileges::{app_armor, seccomp};
        Privileges {
            credential_spec: None,
            selinux_context: p.selinux_context.as_ref().map(|s| SeLinuxContext {
                disable: s.disable,
                user: s.user.clone(),
                role: s.role.clone(),
                r#type: s.r#type.clone(),
                level: s.level.clone(),
            }),
            seccomp: p.seccomp.as_ref().map(|s| SeccompOpts {
                mode: match seccomp::Mode::try_from(s.mode) {
                    Ok(seccomp::Mode::Unconfined) => "unconfined",
                    Ok(seccomp::Mode::Custom) => "custom",
                    _ => "default",
                }
                .into(),
                profile: None,
            }),
            app_armor: p.apparmor.as_ref().map(|a| AppArmorOpts {
                mode: match app_armor::Mode::try_from(a.mode) {
                    Ok(app_armor::Mode::Disabled) => "disabled",
                    _ => "default",
                }
                .into(),
            }),
            no_new_privileges: p.no_new_privileges,
        }
    }
}

impl Mount {
    fn to_proto(&self, field: &str) -> Result<v1::Mount, EngineError> {
        use v1::mount::Type;
        let r#type = match self.r#type.as_str() {
            "bind" => Type::Bind,
            "" | "volume" => Type::Volume,
            "tmpfs" => Type::Tmpfs,
            "npipe" => Type::Npipe,
            "image" | "cluster" => {
                return Err(unsupported(format!(
                    "{field}.Type {:?}: image and cluster volume mounts are not supported; use \
                     bind, volume or tmpfs",
                    self.r#type
                )));
            }
            other => {
                return Err(bad(format!(
                    "invalid {field}.Type {other:?}: use bind, volume or tmpfs"
                )));
            }
        };
        if self.image_options.is_some() || self.cluster_options.is_some() {
            return Err(unsupported(format!(
                "{field}: ImageOptions and ClusterOptions are not supported"
            )));
        }
        if let Some(b) = &self.bind_options
            && *b != BindOptions::default()
        {
            return Err(unsupported(format!(
                "{field}.BindOptions: bind propagation and recursion options are not \
                 supported; remove them to use the engine's defaults"
            )));
        }
        let volume = self.volume_options.clone().unwrap_or_default();
        if volume.no_copy || !volume.subpath.is_empty() {
            return Err(unsupported(format!(
                "{field}.VolumeOptions: NoCopy and Subpath are not supported"
            )));
        }
        let tmpfs = self.tmpfs_options.clone().unwrap_or_default();
        if !tmpfs.options.is_empty() {
            return Err(unsupported(format!(
                "{field}.TmpfsOptions.Options: tmpfs mount options are not supported; use \
                 SizeBytes and Mode"
            )));
        }
        Ok(v1::Mount {
            r#type: r#type as i32,
            source: self.source.clone(),
            target: self.target.clone(),
            readonly: self.read_only,
            tmpfs_size_bytes: non_negative(
                &format!("{field}.TmpfsOptions.SizeBytes"),
                tmpfs.size_bytes,
            )?,
            tmpfs_mode: tmpfs.mode,
            volume_labels: volume.labels,
            volume_driver: volume.driver_config.map(|d| v1::Driver {
                name: d.name,
                options: d.options,
            }),
        })
    }

    fn from_proto(m: &v1::Mount) -> Mount {
        use v1::mount::Type;
        let kind = Type::try_from(m.r#type).unwrap_or(Type::Bind);
        let volume = (kind == Type::Volume
            && (!m.volume_labels.is_empty() || m.volume_driver.is_some()))
        .then(|| VolumeOptions {
            labels: m.volume_labels.clone(),
            driver_config: m.volume_driver.as_ref().map(|d| Driver {
                name: d.name.clone(),
                options: d.options.clone(),
            }),
            ..Default::default()
        });
        let tmpfs =
            (kind == Type::Tmpfs && (m.tmpfs_size_bytes != 0 || m.tmpfs_mode != 0)).then(|| {
                TmpfsOptions {
                    size_bytes: m.tmpfs_size_bytes,
                    mode: m.tmpfs_mode,
                    options: Vec::new(),
                }
            });
        Mount {
            r#type: match kind {
                Type::Bind => "bind",
                Type::Volume => "volume",
                Type::Tmpfs => "tmpfs",
                Type::Npipe => "npipe",
            }
            .into(),
            source: m.source.clone(),
            target: m.target.clone(),
            read_only: m.readonly,
            volume_options: volume,
            tmpfs_options: tmpfs,
            ..Default::default()
        }
    }
}

impl HealthConfig {
    fn to_proto(&self, field: &str) -> Result<v1::HealthConfig, EngineError> {
        Ok(v1::HealthConfig {
            test: self.test.clone(),
            interval: duration_if_set(non_negative(&format!("{field}.Interval"), self.interval)?),
            timeout: duration_if_set(non_negative(&format!("{field}.Timeout"), self.timeout)?),
            retries: i32::try_from(non_negative(&format!("{field}.Retries"), self.retries)?)
                .map_err(|_| bad(format!("invalid {field}.Retries: too large")))?,
            start_period: duration_if_set(non_negative(
                &format!("{field}.StartPeriod"),
                self.start_period,
            )?),
            start_interval: duration_if_set(non_negative(
                &format!("{field}.StartInterval"),
                self.start_interval,
            )?),
        })
    }

    fn from_proto(h: &v1::HealthConfig) -> HealthConfig {
        HealthConfig {
            test: h.test.clone(),
            interval: nanos(h.interval.as_ref()),
            timeout: nanos(h.timeout.as_ref()),
            start_period: nanos(h.start_period.as_ref()),
            start_interval: nanos(h.start_interval.as_ref()),
            retries: h.retries as i64,
        }
    }
}

impl FileTarget {
    fn to_proto(&self) -> v1::FileTarget {
        v1::FileTarget {
            name: self.name.clone(),
            uid: self.uid.clone(),
            gid: self.gid.clone(),
            mode: self.mode,
        }
    }

    fn from_proto(f: &v1::FileTarget) -> FileTarget {
        FileTarget {
            name: f.name.clone(),
            uid: f.uid.clone(),
            gid: f.gid.clone(),
            mode: f.mode,
        }
    }
}

impl SecretReference {
    fn to_proto(&self) -> v1::SecretReference {
        v1::SecretReference {
            secret_id: self.secret_id.clone(),
            secret_name: self.secret_name.clone(),
            file: self.file.as_ref().map(FileTarget::to_proto),
        }
    }

    fn from_proto(s: &v1::SecretReference) -> SecretReference {
        SecretReference {
            file: s.file.as_ref().map(FileTarget::from_proto),
            secret_id: s.secret_id.clone(),
            secret_name: s.secret_name.clone(),
        }
    }
}

impl ConfigReference {
    fn to_proto(&self, field: &str) -> Result<v1::ConfigReference, EngineError> {
        if self.runtime.is_some() {
            return Err(unsupported(format!(
                "{field}.Runtime: runtime config targets (Windows credential specs) are not \
                 supported; give File"
            )));
        }
        Ok(v1::ConfigReference {
            config_id: self.config_id.clone(),
            config_name: self.config_name.clone(),
            file: self.file.as_ref().map(FileTarget::to_proto),
        })
    }

    fn from_proto(c: &v1::ConfigReference) -> ConfigReference {
        ConfigReference {
            file: c.file.as_ref().map(FileTarget::from_proto),
            runtime: None,
            config_id: c.config_id.clone(),
            config_name: c.config_name.clone(),
        }
    }
}
