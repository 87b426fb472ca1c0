//! Spec validation: every rule a spec must satisfy before anything is written.
//!
//! The Control API runs these checks before it opens a store transaction, so bad input is
//! rejected with a precise error and never reaches Raft. Each error names the offending field
//! by its path in the spec (`spec.task.resources.limits.memory_bytes`) and says what is
//! accepted, so a user can fix it without reading the source. The rules are SwarmKit's
//! controlapi rules (names, counts, resource minimums, duplicates, immutable fields), plus
//! checks that protobuf cannot express: enum fields holding numbers that name no value.

use std::collections::BTreeSet;

use crate::defaults;
use crate::v1::{
    self, ClusterSpec, ConfigSpec, EndpointSpec, HealthConfig, NetworkSpec, NodeSpec, Placement,
    ResourceRequirements, Resources, RestartPolicy, SecretSpec, ServiceSpec, TaskSpec,
    UpdateConfig, endpoint_spec, mount, port_config, service_spec, task_spec,
};

/// A spec broke a rule. `field` is the path of the offending field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {message}")]
pub struct ValidationError {
    pub field: String,
    pub message: String,
}

/// The result of a validation.
pub type Result<T = ()> = std::result::Result<T, ValidationError>;

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ValidationError {
    ValidationError {
        field: field.into(),
        message: message.into(),
    }
}

/// Checks an object name: 1–63 characters, letters and digits, `-` and `_` only between them
/// (`^[a-zA-Z0-9](?:[-_]*[A-Za-z0-9]+)*$`).
pub fn validate_name(field: &str, name: &str) -> Result {
    if name.is_empty() {
        return Err(invalid(field, "a name is required"));
    }
    if name.len() > defaults::MAX_NAME_LEN {
        return Err(invalid(
            field,
            format!(
                "name {name:?} is {} characters long; the limit is {}",
                name.len(),
                defaults::MAX_NAME_LEN
            ),
        ));
    }
    let bytes = name.as_bytes();
    let ok = bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric();
    if !ok {
        return Err(invalid(
            field,
            format!(
                "name {name:?} must start and end with a letter or digit and contain only \
                 letters, digits, '-' and '_'"
            ),
        ));
    }
    Ok(())
}

/// Secret and config names may also contain dots, as Docker allows (`app.key`).
pub fn validate_file_object_name(field: &str, name: &str) -> Result {
    if name.is_empty() {
        return Err(invalid(field, "a name is required"));
    }
    if name.len() > defaults::MAX_NAME_LEN {
        return Err(invalid(
            field,
            format!(
                "name {name:?} is longer than {} characters",
                defaults::MAX_NAME_LEN
            ),
        ));
    }
    let bytes = name.as_bytes();
    let ok = bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric();
    if !ok {
        return Err(invalid(
            field,
            format!(
                "name {name:?} must start and end with a letter or digit and contain only \
                 letters, digits, '-', '_' and '.'"
            ),
        ));
    }
    Ok(())
}

fn validate_labels(field: &str, annotations: &v1::Annotations) -> Result {
    for label in &annotations.labels {
        if label.key.is_empty() {
            return Err(invalid(
                format!("{field}.labels"),
                "label keys must not be empty",
            ));
        }
    }
    Ok(())
}

fn validate_enum<E: TryFrom<i32>>(field: &str, value: i32, accepted: &str) -> Result {
    if E::try_from(value).is_err() {
        return Err(invalid(
            field,
            format!("unknown value {value}; accepted: {accepted}"),
        ));
    }
    Ok(())
}

fn validate_duration(field: &str, d: &Option<prost_types::Duration>) -> Result {
    if let Some(d) = d
        && (d.seconds < 0 || d.nanos < 0)
    {
        return Err(invalid(field, "must not be negative"));
    }
    Ok(())
}

/// Converts a protobuf duration to a std one (negative durations become zero).
pub fn to_std_duration(d: &prost_types::Duration) -> std::time::Duration {
    if d.seconds < 0 || d.nanos < 0 {
        return std::time::Duration::ZERO;
    }
    std::time::Duration::new(d.seconds as u64, d.nanos as u32)
}

// --- Services -----------------------------------------------------------------------------

/// Validates a service spec for creation.
pub fn validate_service_spec(spec: &ServiceSpec) -> Result {
    let annotations = spec.annotations.clone().unwrap_or_default();
    validate_name("spec.annotations.name", &annotations.name)?;
    validate_labels("spec.annotations", &annotations)?;
    validate_mode(spec)?;
    let task = spec
        .task
        .as_ref()
        .ok_or_else(|| invalid("spec.task", "a task spec is required"))?;
    validate_task_spec("spec.task", task)?;
    validate_update_config("spec.update", &spec.update)?;
    validate_update_config("spec.rollback", &spec.rollback)?;
    if is_job(spec) && spec.update.is_some() {
        return Err(invalid(
            "spec.update",
            "jobs do not support an update config",
        ));
    }
    if let Some(endpoint) = &spec.endpoint {
        validate_endpoint("spec.endpoint", endpoint)?;
    }
    Ok(())
}

/// Validates the change of a service from `old` to `new`: `new` must be valid, and the mode
/// and name cannot change.
pub fn validate_service_update(old: &ServiceSpec, new: &ServiceSpec) -> Result {
    validate_service_spec(new)?;
    let name = |s: &ServiceSpec| {
        s.annotations
            .as_ref()
            .map(|a| a.name.clone())
            .unwrap_or_default()
    };
    if name(old) != name(new) {
        return Err(invalid(
            "spec.annotations.name",
            format!(
                "renaming services is not supported ({:?} to {:?})",
                name(old),
                name(new)
            ),
        ));
    }
    if mode_name(old) != mode_name(new) {
        return Err(invalid(
            "spec.mode",
            format!(
                "service mode change is not allowed ({} to {}); remove and recreate the service",
                mode_name(old),
                mode_name(new)
            ),
        ));
    }
    Ok(())
}

/// Whether the service is a job (replicated-job or global-job).
pub fn is_job(spec: &ServiceSpec) -> bool {
    matches!(
        spec.mode,
        Some(service_spec::Mode::ReplicatedJob(_)) | Some(service_spec::Mode::GlobalJob(_))
    )
}

/// The mode's name as users write it: replicated, global, replicated-job, global-job.
pub fn mode_name(spec: &ServiceSpec) -> &'static str {
    match spec.mode {
        Some(service_spec::Mode::Replicated(_)) => "replicated",
        Some(service_spec::Mode::Global(_)) => "global",
        Some(service_spec::Mode::ReplicatedJob(_)) => "replicated-job",
        Some(service_spec::Mode::GlobalJob(_)) => "global-job",
        None => "none",
    }
}

fn validate_mode(spec: &ServiceSpec) -> Result {
    match &spec.mode {
        None => Err(invalid(
            "spec.mode",
            "a mode is required: replicated, global, replicated-job or global-job",
        )),
        Some(service_spec::Mode::Replicated(r)) => {
            // Counts are unsigned on the wire; a negative number sent by a client arrives as a
            // huge one, which would make the orchestrator create tasks without end.
            if i64::try_from(r.replicas).is_err() {
                return Err(invalid(
                    "spec.mode.replicated.replicas",
                    "must be zero or more (a negative number was given)",
                ));
            }
            Ok(())
        }
        Some(service_spec::Mode::ReplicatedJob(j)) => {
            if i64::try_from(j.max_concurrent).is_err() {
                return Err(invalid(
                    "spec.mode.replicated_job.max_concurrent",
                    "must be zero or more (a negative number was given)",
                ));
            }
            if i64::try_from(j.total_completions).is_err() {
                return Err(invalid(
                    "spec.mode.replicated_job.total_completions",
                    "must be zero or more (a negative number was given)",
                ));
            }
            Ok(())
        }
        Some(service_spec::Mode::Global(_)) | Some(service_spec::Mode::GlobalJob(_)) => Ok(()),
    }
}

/// Validates a task spec; `field` is its path.
pub fn validate_task_spec(field: &str, task: &TaskSpec) -> Result {
    match &task.runtime {
        None => {
            return Err(invalid(
                format!("{field}.runtime"),
                "a container spec (an image) or a process spec (a command) is required",
            ));
        }
        Some(task_spec::Runtime::Container(c)) => {
            let f = format!("{field}.container");
            if c.image.trim().is_empty() {
                return Err(invalid(format!("{f}.image"), "an image is required"));
            }
            if c.image.chars().any(char::is_whitespace) {
                return Err(invalid(
                    format!("{f}.image"),
                    format!("image reference {:?} must not contain spaces", c.image),
                ));
            }
            validate_duration(&format!("{f}.stop_grace_period"), &c.stop_grace_period)?;
            validate_mounts(&f, &c.mounts)?;
            validate_file_references(&f, &c.secrets, &c.configs)?;
            if let Some(h) = &c.healthcheck {
                validate_healthcheck(&format!("{f}.healthcheck"), h)?;
            }
        }
        Some(task_spec::Runtime::Process(p)) => {
            let f = format!("{field}.process");
            if p.command.trim().is_empty() {
                return Err(invalid(format!("{f}.command"), "a command is required"));
            }
            validate_duration(&format!("{f}.stop_grace_period"), &p.stop_grace_period)?;
            validate_file_references(&f, &p.secrets, &p.configs)?;
            if let Some(h) = &p.healthcheck {
                validate_healthcheck(&format!("{f}.healthcheck"), h)?;
            }
        }
    }
    if let Some(r) = &task.resources {
        validate_resource_requirements(&format!("{field}.resources"), r)?;
    }
    if let Some(r) = &task.restart {
        validate_restart_policy(&format!("{field}.restart"), r)?;
    }
    if let Some(p) = &task.placement {
        validate_placement(&format!("{field}.placement"), p)?;
    }
    let mut targets = BTreeSet::new();
    for (i, n) in task.networks.iter().enumerate() {
        if n.target.is_empty() {
            return Err(invalid(
                format!("{field}.networks[{i}].target"),
                "a network is required",
            ));
        }
        if !targets.insert(&n.target) {
            return Err(invalid(
                format!("{field}.networks[{i}].target"),
                format!("network {:?} is attached more than once", n.target),
            ));
        }
    }
    Ok(())
}

fn validate_mounts(field: &str, mounts: &[v1::Mount]) -> Result {
    let mut targets = BTreeSet::new();
    for (i, m) in mounts.iter().enumerate() {
        let f = format!("{field}.mounts[{i}]");
        validate_enum::<mount::Type>(&format!("{f}.type"), m.r#type, "bind, volume, tmpfs, npipe")?;
        if m.target.is_empty() {
            return Err(invalid(format!("{f}.target"), "a target path is required"));
        }
        if m.r#type == mount::Type::Bind as i32 && !m.source.starts_with('/') {
            return Err(invalid(
                format!("{f}.source"),
                format!("bind source {:?} must be an absolute path", m.source),
            ));
        }
        if !targets.insert(m.target.as_str()) {
            return Err(invalid(
                format!("{f}.target"),
                format!("duplicate mount point {:?}", m.target),
            ));
        }
    }
    Ok(())
}

fn validate_file_references(
    field: &str,
    secrets: &[v1::SecretReference],
    configs: &[v1::ConfigReference],
) -> Result {
    let mut names = BTreeSet::new();
    for (i, s) in secrets.iter().enumerate() {
        let f = format!("{field}.secrets[{i}]");
        if s.secret_id.is_empty() {
            return Err(invalid(format!("{f}.secret_id"), "a secret ID is required"));
        }
        let target = s
            .file
            .as_ref()
            .map(|t| t.name.as_str())
            .unwrap_or(&s.secret_name);
        if !target.is_empty() && !names.insert(("secret", target.to_string())) {
            return Err(invalid(
                format!("{f}.file.name"),
                format!("secret target {target:?} is used more than once"),
            ));
        }
    }
    for (i, c) in configs.iter().enumerate() {
        let f = format!("{field}.configs[{i}]");
        if c.config_id.is_empty() {
            return Err(invalid(format!("{f}.config_id"), "a config ID is required"));
        }
        let target = c
            .file
            .as_ref()
            .map(|t| t.name.as_str())
            .unwrap_or(&c.config_name);
        if !target.is_empty() && !names.insert(("config", target.to_string())) {
            return Err(invalid(
                format!("{f}.file.name"),
                format!("config target {target:?} is used more than once"),
            ));
        }
    }
    Ok(())
}

fn validate_healthcheck(field: &str, h: &HealthConfig) -> Result {
    for (name, d) in [
        ("interval", &h.interval),
        ("timeout", &h.timeout),
        ("start_period", &h.start_period),
        ("start_interval", &h.start_interval),
    ] {
        if let Some(d) = d {
            let std = to_std_duration(d);
            if d.seconds < 0
                || d.nanos < 0
                || (std > std::time::Duration::ZERO && std < defaults::MIN_HEALTH_DURATION)
            {
                return Err(invalid(
                    format!("{field}.{name}"),
                    "must be zero (the default) or at least 1ms",
                ));
            }
        }
    }
    if h.retries < 0 {
        return Err(invalid(format!("{field}.retries"), "must be zero or more"));
    }
    Ok(())
}

fn validate_resources(field: &str, r: &Resources) -> Result {
    if r.nano_cpus != 0 && r.nano_cpus < defaults::MIN_NANO_CPUS {
        return Err(invalid(
            format!("{field}.nano_cpus"),
            format!(
                "{} CPUs is too little; give at least 0.001 CPU",
                r.nano_cpus as f64 / 1e9
            ),
        ));
    }
    if r.memory_bytes != 0 && r.memory_bytes < defaults::MIN_MEMORY_BYTES {
        return Err(invalid(
            format!("{field}.memory_bytes"),
            format!("{} bytes is too little; give at least 4MiB", r.memory_bytes),
        ));
    }
    for (i, g) in r.generic.iter().enumerate() {
        match &g.resource {
            Some(v1::generic_resource::Resource::Discrete(d)) => {
                if d.kind.is_empty() {
                    return Err(invalid(
                        format!("{field}.generic[{i}].kind"),
                        "a kind is required",
                    ));
                }
                if d.value < 0 {
                    return Err(invalid(
                        format!("{field}.generic[{i}].value"),
                        "must be zero or more",
                    ));
                }
            }
            Some(v1::generic_resource::Resource::Named(n)) => {
                if n.kind.is_empty() || n.value.is_empty() {
                    return Err(invalid(
                        format!("{field}.generic[{i}]"),
                        "a named resource needs a kind and a value",
                    ));
                }
            }
            None => {
                return Err(invalid(
                    format!("{field}.generic[{i}]"),
                    "the resource is empty",
                ));
            }
        }
    }
    Ok(())
}

fn validate_resource_requirements(field: &str, r: &ResourceRequirements) -> Result {
    if let Some(l) = &r.limits {
        validate_resources(&format!("{field}.limits"), l)?;
    }
    if let Some(res) = &r.reservations {
        validate_resources(&format!("{field}.reservations"), res)?;
    }
    if let (Some(l), Some(res)) = (&r.limits, &r.reservations) {
        if l.nano_cpus != 0 && res.nano_cpus > l.nano_cpus {
            return Err(invalid(
                format!("{field}.reservations.nano_cpus"),
                "the CPU reservation is larger than the CPU limit",
            ));
        }
        if l.memory_bytes != 0 && res.memory_bytes > l.memory_bytes {
            return Err(invalid(
                format!("{field}.reservations.memory_bytes"),
                "the memory reservation is larger than the memory limit",
            ));
        }
    }
    if r.pids < 0 {
        return Err(invalid(format!("{field}.pids"), "must be zero or more"));
    }
    Ok(())
}

fn validate_restart_policy(field: &str, r: &RestartPolicy) -> Result {
    validate_enum::<v1::restart_policy::Condition>(
        &format!("{field}.condition"),
        r.condition,
        "none, on-failure, any",
    )?;
    validate_duration(&format!("{field}.delay"), &r.delay)?;
    validate_duration(&format!("{field}.window"), &r.window)?;
    Ok(())
}

/// The node attributes a placement constraint may test.
pub const CONSTRAINT_KEYS: &[&str] = &[
    "node.id",
    "node.hostname",
    "node.ip",
    "node.role",
    "node.platform.os",
    "node.platform.arch",
    "node.labels.",
    "engine.labels.",
];

/// A parsed placement constraint `key==value` or `key!=value`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Constraint {
    pub key: String,
    pub equal: bool,
    pub value: String,
}

/// Parses one constraint expression.
pub fn parse_constraint(expr: &str) -> std::result::Result<Constraint, String> {
    let (key, equal, value) = if let Some((k, v)) = expr.split_once("==") {
        (k, true, v)
    } else if let Some((k, v)) = expr.split_once("!=") {
        (k, false, v)
    } else {
        return Err(format!(
            "constraint {expr:?} has no operator; use key==value or key!=value"
        ));
    };
    let (key, value) = (key.trim(), value.trim());
    let known = CONSTRAINT_KEYS.iter().any(|k| {
        if k.ends_with('.') {
            key.len() > k.len() && key.starts_with(k)
        } else {
            key == *k
        }
    });
    if !known {
        return Err(format!(
            "constraint {expr:?} tests an unknown attribute {key:?}; use one of node.id, \
             node.hostname, node.ip, node.role, node.platform.os, node.platform.arch, \
             node.labels.<key>, engine.labels.<key>"
        ));
    }
    if value.is_empty() {
        return Err(format!("constraint {expr:?} has no value"));
    }
    if value.contains("==") || value.contains("!=") {
        return Err(format!("constraint {expr:?} has more than one operator"));
    }
    Ok(Constraint {
        key: key.to_string(),
        equal,
        value: value.to_string(),
    })
}

fn validate_placement(field: &str, p: &Placement) -> Result {
    for (i, c) in p.constraints.iter().enumerate() {
        parse_constraint(c).map_err(|m| invalid(format!("{field}.constraints[{i}]"), m))?;
    }
    for (i, pref) in p.preferences.iter().enumerate() {
        match &pref.preference {
            Some(v1::placement_preference::Preference::Spread(s)) => {
                let d = &s.spread_descriptor;
                if !(d.starts_with("node.labels.") || d.starts_with("engine.labels."))
                    || d.ends_with('.')
                {
                    return Err(invalid(
                        format!("{field}.preferences[{i}].spread.spread_descriptor"),
                        format!(
                            "{d:?} is not a label descriptor; use node.labels.<key> or \
                             engine.labels.<key>"
                        ),
                    ));
                }
            }
            None => {
                return Err(invalid(
                    format!("{field}.preferences[{i}]"),
                    "the preference is empty",
                ));
            }
        }
    }
    if i64::try_from(p.max_replicas).is_err() {
        return Err(invalid(
            format!("{field}.max_replicas"),
            "must be zero or more",
        ));
    }
    Ok(())
}

fn validate_update_config(field: &str, u: &Option<UpdateConfig>) -> Result {
    let Some(u) = u else { return Ok(()) };
    validate_enum::<v1::update_config::FailureAction>(
        &format!("{field}.failure_action"),
        u.failure_action,
        "pause, continue, rollback",
    )?;
    validate_enum::<v1::update_config::UpdateOrder>(
        &format!("{field}.order"),
        u.order,
        "stop-first, start-first",
    )?;
    validate_duration(&format!("{field}.delay"), &u.delay)?;
    validate_duration(&format!("{field}.monitor"), &u.monitor)?;
    if !(0.0..=1.0).contains(&u.max_failure_ratio) {
        return Err(invalid(
            format!("{field}.max_failure_ratio"),
            format!("{} is outside [0, 1]", u.max_failure_ratio),
        ));
    }
    if i64::try_from(u.parallelism).is_err() {
        return Err(invalid(
            format!("{field}.parallelism"),
            "must be zero or more",
        ));
    }
    Ok(())
}

fn validate_endpoint(field: &str, e: &EndpointSpec) -> Result {
    validate_enum::<endpoint_spec::ResolutionMode>(&format!("{field}.mode"), e.mode, "vip, dnsrr")?;
    let mut published = BTreeSet::new();
    for (i, p) in e.ports.iter().enumerate() {
        let f = format!("{field}.ports[{i}]");
        validate_enum::<port_config::Protocol>(
            &format!("{f}.protocol"),
            p.protocol,
            "tcp, udp, sctp",
        )?;
        validate_enum::<port_config::PublishMode>(
            &format!("{f}.publish_mode"),
            p.publish_mode,
            "ingress, host",
        )?;
        if p.target_port == 0 || p.target_port > 65535 {
            return Err(invalid(
                format!("{f}.target_port"),
                "must be between 1 and 65535",
            ));
        }
        if p.published_port > 65535 {
            return Err(invalid(
                format!("{f}.published_port"),
                "must be between 0 and 65535",
            ));
        }
        let ingress = p.publish_mode == port_config::PublishMode::Ingress as i32;
        if ingress && e.mode == endpoint_spec::ResolutionMode::Dnsrr as i32 {
            return Err(invalid(
                format!("{f}.publish_mode"),
                "a port published in ingress mode cannot be used with dnsrr resolution; \
                 publish it in host mode or use vip",
            ));
        }
        if p.published_port != 0
            && !published.insert((p.published_port, p.protocol, p.publish_mode))
        {
            return Err(invalid(
                format!("{f}.published_port"),
                format!(
                    "port {}/{} is published more than once",
                    p.published_port,
                    port_config::Protocol::try_from(p.protocol)
                        .map(|p| p.as_str_name().to_lowercase())
                        .unwrap_or_default()
                ),
            ));
        }
    }
    Ok(())
}

// --- Other objects ------------------------------------------------------------------------

/// Validates a node spec as sent by `node update`.
pub fn validate_node_spec(spec: &NodeSpec) -> Result {
    validate_enum::<v1::NodeRole>("spec.desired_role", spec.desired_role, "worker, manager")?;
    validate_enum::<v1::node_spec::Membership>(
        "spec.membership",
        spec.membership,
        "pending, accepted",
    )?;
    validate_enum::<v1::node_spec::Availability>(
        "spec.availability",
        spec.availability,
        "active, pause, drain",
    )?;
    if let Some(a) = &spec.annotations {
        validate_labels("spec.annotations", a)?;
    }
    Ok(())
}

/// Validates a secret spec: a name, and data of at least 1 byte and less than 500 KiB.
pub fn validate_secret_spec(spec: &SecretSpec) -> Result {
    let annotations = spec.annotations.clone().unwrap_or_default();
    validate_file_object_name("spec.annotations.name", &annotations.name)?;
    validate_labels("spec.annotations", &annotations)?;
    if spec.data.is_empty() || spec.data.len() >= defaults::MAX_SECRET_BYTES {
        return Err(invalid(
            "spec.data",
            format!(
                "secret data must be larger than 0 and less than 500KiB (got {} bytes)",
                spec.data.len()
            ),
        ));
    }
    Ok(())
}

/// Validates a config spec: a name, and data of at least 1 byte and less than 1000 KiB.
pub fn validate_config_spec(spec: &ConfigSpec) -> Result {
    let annotations = spec.annotations.clone().unwrap_or_default();
    validate_file_object_name("spec.annotations.name", &annotations.name)?;
    validate_labels("spec.annotations", &annotations)?;
    if spec.data.is_empty() || spec.data.len() >= defaults::MAX_CONFIG_BYTES {
        return Err(invalid(
            "spec.data",
            format!(
                "config data must be larger than 0 and less than 1000KiB (got {} bytes)",
                spec.data.len()
            ),
        ));
    }
    Ok(())
}

/// Validates a network spec: a name, a known driver, well-formed subnets.
pub fn validate_network_spec(spec: &NetworkSpec) -> Result {
    let annotations = spec.annotations.clone().unwrap_or_default();
    validate_name("spec.annotations.name", &annotations.name)?;
    validate_labels("spec.annotations", &annotations)?;
    if let Some(d) = &spec.driver_config
        && !d.name.is_empty()
        && d.name != "overlay"
    {
        return Err(invalid(
            "spec.driver_config.name",
            format!("driver {:?} is not supported; use overlay", d.name),
        ));
    }
    if let Some(ipam) = &spec.ipam {
        for (i, c) in ipam.configs.iter().enumerate() {
            if !c.subnet.is_empty() {
                parse_cidr(&c.subnet)
                    .map_err(|m| invalid(format!("spec.ipam.configs[{i}].subnet"), m))?;
            }
            if !c.gateway.is_empty() && c.gateway.parse::<std::net::IpAddr>().is_err() {
                return Err(invalid(
                    format!("spec.ipam.configs[{i}].gateway"),
                    format!("{:?} is not an IP address", c.gateway),
                ));
            }
        }
    }
    Ok(())
}

/// Parses `address/prefix`.
pub fn parse_cidr(s: &str) -> std::result::Result<(std::net::IpAddr, u8), String> {
    let bad = || format!("{s:?} is not a subnet in CIDR notation such as 10.0.9.0/24");
    let (addr, prefix) = s.split_once('/').ok_or_else(bad)?;
    let addr: std::net::IpAddr = addr.parse().map_err(|_| bad())?;
    let prefix: u8 = prefix.parse().map_err(|_| bad())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err(bad());
    }
    Ok((addr, prefix))
}

/// Validates a cluster spec as sent by `swarm update`.
pub fn validate_cluster_spec(spec: &ClusterSpec) -> Result {
    validate_cluster_spec_with(spec, defaults::MIN_NODE_CERT_EXPIRY)
}

/// [`validate_cluster_spec`] with another shortest certificate lifetime than
/// [`defaults::MIN_NODE_CERT_EXPIRY`] (a manager's test knob lowers it; see
/// `shoal_manager::ca_server::minimum_node_cert_expiry`).
pub fn validate_cluster_spec_with(
    spec: &ClusterSpec,
    min_node_cert_expiry: std::time::Duration,
) -> Result {
    if let Some(d) = &spec.dispatcher {
        validate_duration("spec.dispatcher.heartbeat_period", &d.heartbeat_period)?;
        if let Some(p) = &d.heartbeat_period
            && to_std_duration(p).is_zero()
        {
            return Err(invalid(
                "spec.dispatcher.heartbeat_period",
                "must be positive",
            ));
        }
    }
    if let Some(ca) = &spec.ca_config {
        validate_duration("spec.ca_config.node_cert_expiry", &ca.node_cert_expiry)?;
        if let Some(e) = &ca.node_cert_expiry
            && to_std_duration(e) < min_node_cert_expiry
        {
            return Err(invalid(
                "spec.ca_config.node_cert_expiry",
                format!(
                    "certificates must be valid for at least {}",
                    spoken_duration(min_node_cert_expiry)
                ),
            ));
        }
    }
    if let Some(r) = &spec.raft
        && r.election_tick != 0
        && r.election_tick <= r.heartbeat_tick
    {
        return Err(invalid(
            "spec.raft.election_tick",
            "must be larger than the heartbeat tick",
        ));
    }
    Ok(())
}

/// A duration as a sentence says it: `1 hour`, `90 minutes`, `5 seconds`, `1.5 seconds`.
fn spoken_duration(d: std::time::Duration) -> String {
    let plural = |n: u64, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    let secs = d.as_secs();
    if d.subsec_nanos() != 0 || secs == 0 {
        format!("{} seconds", d.as_secs_f64())
    } else if secs.is_multiple_of(3600) {
        plural(secs / 3600, "hour")
    } else if secs.is_multiple_of(60) {
        plural(secs / 60, "minute")
    } else {
        plural(secs, "second")
    }
}

#[cfg(test)]
mod tests;
