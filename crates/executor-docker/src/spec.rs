//! From a task to the engine's container configuration: names, labels and the mapping of
//! [`ContainerSpec`] onto `POST /containers/create`.
//!
//! Pure: nothing here talks to the engine, so every rule is unit-tested.
//!
//! Rules:
//! - The container's name is `<service>.<slot>.<task id>` for replicated tasks,
//!   `<service>.<node id>.<task id>` for global ones (slot 0), and `<task id>` for a task
//!   without a service — the names Docker's swarm mode gives, so that `docker ps` reads the
//!   same. It must be a valid engine name (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`).
//! - The labels are the spec's, then ours (`com.docker.swarm.*`, see [`labels`]), which win on
//!   a clash: the executor finds its containers again by them.
//! - `command` becomes the entrypoint and `args` the command (SwarmKit's rule): without a
//!   `command` the image's entrypoint runs with `args` (or the image's command, if none).
//! - `hosts` entries may be written like `/etc/hosts` (`"10.0.0.1 db db.local"`) or like the
//!   engine's `ExtraHosts` (`"db:10.0.0.1"`); both end as `ExtraHosts`.
//! - Durations are sent in the engine's units (nanoseconds for health checks, whole seconds,
//!   rounded up, for the stop timeout).
//! - Resource limits: `limits.nano_cpus` → `NanoCpus`, `limits.memory_bytes` → `Memory`,
//!   `reservations.memory_bytes` → `MemoryReservation`, `swap_bytes` → `MemorySwap` (memory +
//!   swap, as the engine counts it), `memory_swappiness`, `pids` (unless the container spec
//!   has its own `pids_limit`). A CPU reservation is the scheduler's business and has no
//!   engine counterpart.
//!
//! - Secrets and configs ([`file_mounts`]): each is a file on the host's memory-backed
//!   filesystem (`<secrets_dir>/<task id>/{secrets,configs}/<n>`, written by the controller's
//!   `prepare`), bind-mounted read-only at `/run/secrets/<target>` (secrets) or `/<target>`
//!   (configs), or at the target itself when it is an absolute path, as Docker does.
//!
//! What cannot be honoured is said, never dropped silently: npipe mounts are
//! refused (Windows only); networks, published ports, generic resources and health-check
//! `start_interval` (engine API 1.44, we speak 1.41) are accepted with a warning.

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::{
    ContainerCreateBody, HealthConfig, HostConfig, HostConfigLogConfig, Mount, MountTmpfsOptions,
    MountType, MountVolumeOptions, MountVolumeOptionsDriverConfig, ResourcesUlimits,
};
use shoal_api::defaults;
use shoal_api::v1::{ContainerSpec, Task, mount, task_spec};
use shoal_executor::files::{FileKind, TaskFile};
use shoal_executor::{ExecutorError, Result};

/// Label: the ID of the task's service.
pub const LABEL_SERVICE_ID: &str = "com.docker.swarm.service.id";
/// Label: the name of the task's service.
pub const LABEL_SERVICE_NAME: &str = "com.docker.swarm.service.name";
/// Label (empty value): the container runs a swarm task.
pub const LABEL_TASK: &str = "com.docker.swarm.task";
/// Label: the task's ID; how the executor recognises its containers.
pub const LABEL_TASK_ID: &str = "com.docker.swarm.task.id";
/// Label: the task's name (the container's name).
pub const LABEL_TASK_NAME: &str = "com.docker.swarm.task.name";
/// Label: the node the task was assigned to.
pub const LABEL_NODE_ID: &str = "com.docker.swarm.node.id";

/// Everything the controller needs to create the task's container.
#[derive(Clone, Debug)]
pub struct ContainerPlan {
    pub task_id: String,
    /// The container's name.
    pub name: String,
    pub image: String,
    /// The stop grace period (what `shutdown` waits before the engine kills).
    pub grace: Duration,
    /// Whether `start` waits for the container to be healthy.
    pub healthcheck: bool,
    /// The body of `POST /containers/create`.
    pub body: ContainerCreateBody,
    /// Parts of the spec that are not honoured.
    pub warnings: Vec<String>,
}

/// The container spec of `task`, or `Unsupported` for another runtime.
pub fn container_spec(task: &Task) -> Result<&ContainerSpec> {
    match task.spec.as_ref().and_then(|s| s.runtime.as_ref()) {
        Some(task_spec::Runtime::Container(c)) => Ok(c),
        _ => Err(ExecutorError::Unsupported(
            "the Docker executor runs only tasks of runtime \"container\"".into(),
        )),
    }
}

/// The task's container name (see the module's rules).
pub fn container_name(task: &Task, node_id: &str) -> Result<String> {
    let task_id = task_id(task)?;
    let service = task
        .service_annotations
        .as_ref()
        .map(|a| a.name.as_str())
        .unwrap_or_default();
    let name = if service.is_empty() {
        task_id.to_string()
    } else if task.slot > 0 {
        format!("{service}.{}.{task_id}", task.slot)
    } else {
        let node = if task.node_id.is_empty() {
            node_id
        } else {
            &task.node_id
        };
        if node.is_empty() {
            format!("{service}.{task_id}")
        } else {
            format!("{service}.{node}.{task_id}")
        }
    };
    let valid = name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !valid {
        return Err(ExecutorError::InvalidSpec(format!(
            "container name {name:?} (from the service name) is not a valid engine name"
        )));
    }
    Ok(name)
}

/// The task's ID, which must be letters and digits.
pub fn task_id(task: &Task) -> Result<&str> {
    let id = task
        .meta
        .as_ref()
        .map(|m| m.id.as_str())
        .unwrap_or_default();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(ExecutorError::InvalidSpec(format!(
            "task ID {id:?} must be letters and digits"
        )));
    }
    Ok(id)
}

/// The container's labels: the spec's, then ours.
pub fn labels(
    task: &Task,
    spec: &ContainerSpec,
    name: &str,
    node_id: &str,
) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> = spec
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let service_name = task
        .service_annotations
        .as_ref()
        .map(|a| a.name.clone())
        .unwrap_or_default();
    let node = if task.node_id.is_empty() {
        node_id.to_string()
    } else {
        task.node_id.clone()
    };
    for (key, value) in [
        (LABEL_SERVICE_ID, task.service_id.clone()),
        (LABEL_SERVICE_NAME, service_name),
        (LABEL_TASK, String::new()),
        (
            LABEL_TASK_ID,
            task.meta.as_ref().map(|m| m.id.clone()).unwrap_or_default(),
        ),
        (LABEL_TASK_NAME, name.to_string()),
        (LABEL_NODE_ID, node),
    ] {
        labels.insert(key.into(), value);
    }
    labels
}

/// Nanoseconds of a protobuf duration (negative ones count as zero).
fn nanos(d: &prost_types::Duration) -> i64 {
    (d.seconds.max(0))
        .saturating_mul(1_000_000_000)
        .saturating_add(i64::from(d.nanos.max(0)))
}

fn std_duration(d: &prost_types::Duration) -> Duration {
    Duration::from_nanos(nanos(d) as u64)
}

/// Whole seconds, rounded up: the engine's stop timeout is in seconds.
pub fn ceil_seconds(d: Duration) -> i64 {
    let secs = d.as_secs() as i64;
    if d.subsec_nanos() > 0 { secs + 1 } else { secs }
}

/// Where a secret or config file appears in the container: an absolute target as is, else
/// `/run/secrets/<target>` for a secret and `/<target>` for a config (Docker's places).
pub fn container_target(file: &TaskFile) -> Result<String> {
    let t = file.target.as_str();
    if t.is_empty() || t.contains('\0') || t.split('/').any(|c| c == "..") {
        return Err(ExecutorError::InvalidSpec(format!(
            "{} {}: target {t:?} must be a file name or an absolute path without \"..\"",
            match file.kind {
                FileKind::Secret => "secret",
                FileKind::Config => "config",
            },
            file.name
        )));
    }
    Ok(if t.starts_with('/') {
        t.to_string()
    } else {
        match file.kind {
            FileKind::Secret => format!("/run/secrets/{t}"),
            FileKind::Config => format!("/{t}"),
        }
    })
}

/// The host file of the `index`th of a task's files, under the task's directory.
pub fn host_file_name(index: usize) -> String {
    index.to_string()
}

/// Read-only bind mounts of the task's secret and config files (written under
/// `<secrets_dir>/<task id>/`), refusing a target that another mount of the spec uses.
pub fn file_mounts(
    plan: &ContainerPlan,
    files: &[TaskFile],
    secrets_dir: &std::path::Path,
) -> Result<Vec<Mount>> {
    let taken: Vec<String> = plan
        .body
        .host_config
        .as_ref()
        .and_then(|h| h.mounts.as_ref())
        .map(|m| m.iter().filter_map(|m| m.target.clone()).collect())
        .unwrap_or_default();
    let mut mounts: Vec<Mount> = Vec::new();
    for (i, file) in files.iter().enumerate() {
        let target = container_target(file)?;
        if taken.contains(&target) || mounts.iter().any(|m| m.target.as_ref() == Some(&target)) {
            return Err(ExecutorError::InvalidSpec(format!(
                "{target} is the target of more than one mount, secret or config"
            )));
        }
        let source = secrets_dir
            .join(&plan.task_id)
            .join(file.kind.dir())
            .join(host_file_name(i));
        mounts.push(Mount {
            target: Some(target),
            source: Some(source.display().to_string()),
            typ: Some(MountType::BIND),
            read_only: Some(true),
            ..Default::default()
        });
    }
    Ok(mounts)
}

/// Plans the task's container: the whole mapping, refusing what cannot be run.
pub fn plan(task: &Task, node_id: &str) -> Result<ContainerPlan> {
    let spec = container_spec(task)?;
    let task_id = task_id(task)?.to_string();
    let name = container_name(task, node_id)?;
    if spec.image.trim().is_empty() {
        return Err(ExecutorError::InvalidSpec(
            "container.image is empty".into(),
        ));
    }
    let mut warnings = Vec::new();
    let grace = spec
        .stop_grace_period
        .as_ref()
        .map(std_duration)
        .unwrap_or(defaults::STOP_GRACE_PERIOD);

    let mut host = HostConfig {
        readonly_rootfs: spec.read_only.then_some(true),
        init: spec.init,
        ..Default::default()
    };
    if !spec.groups.is_empty() {
        host.group_add = Some(spec.groups.clone());
    }
    if !spec.mounts.is_empty() {
        host.mounts = Some(
            spec.mounts
                .iter()
                .enumerate()
                .map(|(i, m)| engine_mount(i, m))
                .collect::<Result<_>>()?,
        );
    }
    if !spec.hosts.is_empty() {
        host.extra_hosts = Some(
            spec.hosts
                .iter()
                .enumerate()
                .map(|(i, h)| extra_hosts(i, h))
                .collect::<Result<Vec<_>>>()?
                .into_iter()
                .flatten()
                .collect(),
        );
    }
    if let Some(dns) = &spec.dns_config {
        if !dns.nameservers.is_empty() {
            host.dns = Some(dns.nameservers.clone());
        }
        if !dns.search.is_empty() {
            host.dns_search = Some(dns.search.clone());
        }
        if !dns.options.is_empty() {
            host.dns_options = Some(dns.options.clone());
        }
    }
    if !spec.sysctls.is_empty() {
        host.sysctls = Some(
            spec.sysctls
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        );
    }
    if !spec.capability_add.is_empty() {
        host.cap_add = Some(spec.capability_add.clone());
    }
    if !spec.capability_drop.is_empty() {
        host.cap_drop = Some(spec.capability_drop.clone());
    }
    if !spec.ulimits.is_empty() {
        host.ulimits = Some(
            spec.ulimits
                .iter()
                .map(|u| ResourcesUlimits {
                    name: Some(u.name.clone()),
                    soft: Some(u.soft),
                    hard: Some(u.hard),
                })
                .collect(),
        );
    }
    if spec.pids_limit != 0 {
        host.pids_limit = Some(spec.pids_limit);
    }
    if spec.oom_score_adj != 0 {
        host.oom_score_adj = Some(spec.oom_score_adj);
    }
    if let Some(privileges) = &spec.privileges {
        let options = security_options(privileges)?;
        if !options.is_empty() {
            host.security_opt = Some(options);
        }
    }

    let task_spec = task.spec.as_ref().expect("container_spec found a spec");
    if let Some(resources) = &task_spec.resources {
        if let Some(limits) = &resources.limits {
            if limits.nano_cpus > 0 {
                host.nano_cpus = Some(limits.nano_cpus);
            }
            if limits.memory_bytes > 0 {
                host.memory = Some(limits.memory_bytes);
            }
            if !limits.generic.is_empty() {
                warnings.push(
                    "resources.limits.generic: generic resource limits are not enforced by the Docker executor"
                        .into(),
                );
            }
        }
        if let Some(reservations) = &resources.reservations
            && reservations.memory_bytes > 0
        {
            host.memory_reservation = Some(reservations.memory_bytes);
        }
        if let Some(swap) = resources.swap_bytes {
            match host.memory {
                Some(memory) if swap >= 0 => host.memory_swap = Some(memory.saturating_add(swap)),
                _ if swap < 0 => host.memory_swap = Some(-1),
                _ => {
                    return Err(ExecutorError::InvalidSpec(
                        "resources.swap_bytes needs resources.limits.memory_bytes".into(),
                    ));
                }
            }
        }
        if let Some(swappiness) = resources.memory_swappiness {
            host.memory_swappiness = Some(swappiness);
        }
        if resources.pids > 0 && host.pids_limit.is_none() {
            host.pids_limit = Some(resources.pids);
        }
    }
    let log_driver = task
        .log_driver
        .as_deref()
        .or(task_spec.log_driver.as_ref())
        .filter(|d| !d.name.is_empty());
    if let Some(driver) = log_driver {
        host.log_config = Some(HostConfigLogConfig {
            typ: Some(driver.name.clone()),
            config: Some(
                driver
                    .options
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
        });
    }
    if !task_spec.networks.is_empty() || !task.networks.is_empty() {
        warnings.push(
            "networks: the Docker executor does not attach tasks to networks yet; the container uses the engine's default bridge"
                .into(),
        );
    }
    if task.endpoint.as_ref().is_some_and(|e| {
        !e.ports.is_empty() || e.spec.as_ref().is_some_and(|s| !s.ports.is_empty())
    }) {
        warnings.push("endpoint ports: the Docker executor does not publish ports yet".into());
    }

    let healthcheck = match &spec.healthcheck {
        Some(h) if !h.test.is_empty() => {
            if h.start_interval.as_ref().is_some_and(|d| nanos(d) > 0) {
                warnings.push(
                    "container.healthcheck.start_interval: needs engine API 1.44; ignored".into(),
                );
            }
            let test = h.test.clone();
            if !matches!(test[0].as_str(), "NONE" | "CMD" | "CMD-SHELL") {
                return Err(ExecutorError::InvalidSpec(format!(
                    "container.healthcheck.test must start with NONE, CMD or CMD-SHELL, not {:?}",
                    test[0]
                )));
            }
            Some(HealthConfig {
                test: Some(test),
                interval: h.interval.as_ref().map(nanos).filter(|n| *n > 0),
                timeout: h.timeout.as_ref().map(nanos).filter(|n| *n > 0),
                retries: (h.retries > 0).then_some(i64::from(h.retries)),
                start_period: h.start_period.as_ref().map(nanos).filter(|n| *n > 0),
                start_interval: None,
            })
        }
        _ => None,
    };
    let gates_on_health = healthcheck
        .as_ref()
        .and_then(|h| h.test.as_ref())
        .is_some_and(|t| t[0] != "NONE");

    let non_empty = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
    let non_blank = |s: &String| (!s.is_empty()).then(|| s.clone());
    let body = ContainerCreateBody {
        image: Some(spec.image.clone()),
        entrypoint: non_empty(&spec.command),
        cmd: non_empty(&spec.args),
        env: non_empty(&spec.env),
        working_dir: non_blank(&spec.dir),
        user: non_blank(&spec.user),
        hostname: non_blank(&spec.hostname),
        tty: Some(spec.tty),
        open_stdin: Some(spec.open_stdin),
        attach_stdin: Some(false),
        attach_stdout: Some(false),
        attach_stderr: Some(false),
        stop_signal: non_blank(&spec.stop_signal),
        stop_timeout: Some(ceil_seconds(grace)),
        healthcheck,
        labels: Some(labels(task, spec, &name, node_id)),
        host_config: Some(host),
        ..Default::default()
    };
    Ok(ContainerPlan {
        task_id,
        name,
        image: spec.image.clone(),
        grace,
        healthcheck: gates_on_health,
        body,
        warnings,
    })
}

/// The engine's `--security-opt` values for a container's privileges, as moby's swarm
/// executor writes them.
fn security_options(p: &shoal_api::v1::Privileges) -> Result<Vec<String>> {
    use shoal_api::v1::privileges::{app_armor, seccomp};
    let mut options = Vec::new();
    if let Some(selinux) = &p.selinux_context {
        if selinux.disable {
            options.push("label=disable".to_string());
        }
        for (key, value) in [
            ("user", &selinux.user),
            ("role", &selinux.role),
            ("type", &selinux.r#type),
            ("level", &selinux.level),
        ] {
            if !value.is_empty() {
                options.push(format!("label={key}:{value}"));
            }
        }
    }
    if let Some(s) = &p.seccomp {
        match seccomp::Mode::try_from(s.mode) {
            Ok(seccomp::Mode::Default) => {}
            Ok(seccomp::Mode::Unconfined) => options.push("seccomp=unconfined".into()),
            Ok(seccomp::Mode::Custom) => {
                let profile = std::str::from_utf8(&s.profile).map_err(|_| {
                    ExecutorError::InvalidSpec(
                        "container.privileges.seccomp.profile is not UTF-8 JSON".into(),
                    )
                })?;
                options.push(format!("seccomp={profile}"));
            }
            Err(_) => {
                return Err(ExecutorError::InvalidSpec(format!(
                    "container.privileges.seccomp.mode {} is unknown",
                    s.mode
                )));
            }
        }
    }
    if let Some(a) = &p.apparmor
        && a.mode == app_armor::Mode::Disabled as i32
    {
        options.push("apparmor=unconfined".into());
    }
    if p.no_new_privileges {
        options.push("no-new-privileges=true".into());
    }
    Ok(options)
}

fn engine_mount(index: usize, m: &shoal_api::v1::Mount) -> Result<Mount> {
    let field = format!("container.mounts[{index}]");
    if m.target.is_empty() {
        return Err(ExecutorError::InvalidSpec(format!(
            "{field}.target is empty"
        )));
    }
    let base = Mount {
        target: Some(m.target.clone()),
        source: (!m.source.is_empty()).then(|| m.source.clone()),
        read_only: m.readonly.then_some(true),
        ..Default::default()
    };
    match mount::Type::try_from(m.r#type) {
        Ok(mount::Type::Bind) => {
            if m.source.is_empty() {
                return Err(ExecutorError::InvalidSpec(format!(
                    "{field}.source: a bind mount needs a source path"
                )));
            }
            Ok(Mount {
                typ: Some(MountType::BIND),
                ..base
            })
        }
        Ok(mount::Type::Volume) => {
            let driver = m.volume_driver.as_ref().filter(|d| !d.name.is_empty());
            let options =
                (!m.volume_labels.is_empty() || driver.is_some()).then(|| MountVolumeOptions {
                    labels: (!m.volume_labels.is_empty()).then(|| {
                        m.volume_labels
                            .iter()
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect()
                    }),
                    driver_config: driver.map(|d| MountVolumeOptionsDriverConfig {
                        name: Some(d.name.clone()),
                        options: Some(
                            d.options
                                .iter()
                                .map(|(k, v)| (k.clone(), v.clone()))
                                .collect(),
                        ),
                    }),
                    ..Default::default()
                });
            Ok(Mount {
                typ: Some(MountType::VOLUME),
                volume_options: options,
                ..base
            })
        }
        Ok(mount::Type::Tmpfs) => {
            if !m.source.is_empty() {
                return Err(ExecutorError::InvalidSpec(format!(
                    "{field}.source: a tmpfs mount has no source"
                )));
            }
            Ok(Mount {
                typ: Some(MountType::TMPFS),
                tmpfs_options: Some(MountTmpfsOptions {
                    size_bytes: (m.tmpfs_size_bytes > 0).then_some(m.tmpfs_size_bytes),
                    mode: (m.tmpfs_mode != 0).then_some(i64::from(m.tmpfs_mode)),
                    ..Default::default()
                }),
                ..base
            })
        }
        Ok(mount::Type::Npipe) => Err(ExecutorError::InvalidSpec(format!(
            "{field}: npipe mounts exist only on Windows engines"
        ))),
        Err(_) => Err(ExecutorError::InvalidSpec(format!(
            "{field}.type: unknown mount type {}",
            m.r#type
        ))),
    }
}

/// One `hosts` entry as `ExtraHosts` entries: `"IP name..."` → `["name:IP", ...]`;
/// `"name:IP"` is kept.
fn extra_hosts(index: usize, entry: &str) -> Result<Vec<String>> {
    let mut words = entry.split_whitespace();
    let Some(first) = words.next() else {
        return Err(ExecutorError::InvalidSpec(format!(
            "container.hosts[{index}] is empty"
        )));
    };
    let names: Vec<&str> = words.collect();
    if names.is_empty() {
        if first.contains(':') {
            return Ok(vec![first.to_string()]);
        }
        return Err(ExecutorError::InvalidSpec(format!(
            "container.hosts[{index}]: {entry:?} is neither \"IP name...\" nor \"name:IP\""
        )));
    }
    Ok(names.into_iter().map(|n| format!("{n}:{first}")).collect())
}

/// The image reference to pull: with `:latest` when it names neither tag nor digest (the
/// engine would otherwise pull every tag).
pub fn pull_reference(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') || last.contains(':') {
        image.to_string()
    } else {
        format!("{image}:latest")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use shoal_api::v1::{
        Annotations, ContainerSpec, HealthConfig as ProtoHealth, Meta, ResourceRequirements,
        Resources, SecretReference, TaskSpecFields, container_spec,
    };

    use super::*;

    fn task(spec: ContainerSpec) -> Task {
        Task {
            meta: Some(Meta {
                id: "abc123".into(),
                ..Default::default()
            }),
            service_id: "svc1".into(),
            slot: 2,
            node_id: "node9".into(),
            service_annotations: Some(Box::new(Annotations {
                name: "web".into(),
                labels: Vec::new(),
            })),
            spec: Some(
                TaskSpecFields {
                    runtime: Some(task_spec::Runtime::Container(Box::new(spec))),
                    ..Default::default()
                }
                .into(),
            ),
            ..Default::default()
        }
    }

    fn image(image: &str) -> ContainerSpec {
        ContainerSpec {
            image: image.into(),
            ..Default::default()
        }
    }

    #[test]
    fn names_follow_docker_swarm_mode() {
        let mut t = task(image("x"));
        assert_eq!(container_name(&t, "self").unwrap(), "web.2.abc123");
        t.slot = 0;
        assert_eq!(container_name(&t, "self").unwrap(), "web.node9.abc123");
        t.node_id.clear();
        assert_eq!(container_name(&t, "self").unwrap(), "web.self.abc123");
        t.service_annotations = None;
        assert_eq!(container_name(&t, "self").unwrap(), "abc123");
        t.meta.as_mut().unwrap().id = "../x".into();
        assert!(matches!(
            container_name(&t, "self"),
            Err(ExecutorError::InvalidSpec(_))
        ));
    }

    #[test]
    fn command_is_the_entrypoint_and_args_the_command() {
        let mut spec = image("busybox");
        spec.command = vec!["/bin/sh".into(), "-c".into()];
        spec.args = vec!["echo hi".into()];
        spec.env = vec!["A=1".into()];
        spec.labels = BTreeMap::from([
            ("mine".to_string(), "yes".to_string()),
            (LABEL_TASK_ID.to_string(), "forged".to_string()),
        ]);
        let plan = plan(&task(spec), "self").unwrap();
        let body = &plan.body;
        assert_eq!(body.entrypoint.as_deref().unwrap(), ["/bin/sh", "-c"]);
        assert_eq!(body.cmd.as_deref().unwrap(), ["echo hi"]);
        assert_eq!(body.env.as_deref().unwrap(), ["A=1"]);
        let labels = body.labels.as_ref().unwrap();
        assert_eq!(labels["mine"], "yes");
        assert_eq!(labels[LABEL_TASK_ID], "abc123", "ours win");
        assert_eq!(labels[LABEL_TASK_NAME], "web.2.abc123");
        assert_eq!(labels[LABEL_SERVICE_NAME], "web");
        assert_eq!(labels[LABEL_SERVICE_ID], "svc1");
        assert_eq!(labels[LABEL_NODE_ID], "node9");
        assert_eq!(labels[LABEL_TASK], "");
        assert_eq!(plan.grace, defaults::STOP_GRACE_PERIOD);
        assert_eq!(body.stop_timeout, Some(10));
        assert!(!plan.healthcheck);

        let plan = super::plan(
            &task(ContainerSpec {
                args: vec!["x".into()],
                ..image("busybox")
            }),
            "self",
        )
        .unwrap();
        assert_eq!(plan.body.entrypoint, None, "the image's entrypoint runs");
        assert_eq!(plan.body.cmd.as_deref().unwrap(), ["x"]);
    }

    #[test]
    fn the_rest_of_the_spec_maps_to_host_config() {
        let spec = ContainerSpec {
            hosts: vec!["10.0.0.1 db db.local".into(), "cache:10.0.0.2".into()],
            dns_config: Some(Box::new(container_spec::DnsConfig {
                nameservers: vec!["1.1.1.1".into()],
                search: vec!["example.org".into()],
                options: vec!["ndots:2".into()],
            })),
            healthcheck: Some(Box::new(ProtoHealth {
                test: vec!["CMD-SHELL".into(), "true".into()],
                interval: Some(prost_types::Duration {
                    seconds: 1,
                    nanos: 0,
                }),
                retries: 3,
                ..Default::default()
            })),
            stop_grace_period: Some(prost_types::Duration {
                seconds: 1,
                nanos: 500_000_000,
            }),
            ulimits: vec![container_spec::Ulimit {
                name: "nofile".into(),
                soft: 100,
                hard: 200,
            }],
            pids_limit: 50,
            read_only: true,
            init: Some(true),
            groups: vec!["audio".into()],
            mounts: vec![
                shoal_api::v1::Mount {
                    r#type: mount::Type::Tmpfs as i32,
                    target: "/scratch".into(),
                    tmpfs_size_bytes: 1 << 20,
                    ..Default::default()
                },
                shoal_api::v1::Mount {
                    r#type: mount::Type::Bind as i32,
                    source: "/etc".into(),
                    target: "/host-etc".into(),
                    readonly: true,
                    ..Default::default()
                },
            ],
            ..image("busybox")
        };
        let mut t = task(spec);
        t.spec.as_mut().unwrap().resources = Some(Box::new(ResourceRequirements {
            limits: Some(Resources {
                nano_cpus: 500_000_000,
                memory_bytes: 64 << 20,
                generic: Vec::new(),
            }),
            ..Default::default()
        }));
        let plan = plan(&t, "self").unwrap();
        let host = plan.body.host_config.as_ref().unwrap();
        assert_eq!(
            host.extra_hosts.as_deref().unwrap(),
            ["db:10.0.0.1", "db.local:10.0.0.1", "cache:10.0.0.2"]
        );
        assert_eq!(host.dns.as_deref().unwrap(), ["1.1.1.1"]);
        assert_eq!(host.dns_search.as_deref().unwrap(), ["example.org"]);
        assert_eq!(host.dns_options.as_deref().unwrap(), ["ndots:2"]);
        assert_eq!(host.nano_cpus, Some(500_000_000));
        assert_eq!(host.memory, Some(64 << 20));
        assert_eq!(host.pids_limit, Some(50));
        assert_eq!(host.readonly_rootfs, Some(true));
        assert_eq!(host.init, Some(true));
        assert_eq!(host.group_add.as_deref().unwrap(), ["audio"]);
        let mounts = host.mounts.as_ref().unwrap();
        assert_eq!(mounts[0].typ, Some(MountType::TMPFS));
        assert_eq!(
            mounts[0].tmpfs_options.as_ref().unwrap().size_bytes,
            Some(1 << 20)
        );
        assert_eq!(mounts[1].typ, Some(MountType::BIND));
        assert_eq!(mounts[1].read_only, Some(true));
        assert_eq!(plan.body.stop_timeout, Some(2), "rounded up");
        let health = plan.body.healthcheck.as_ref().unwrap();
        assert_eq!(health.interval, Some(1_000_000_000));
        assert_eq!(health.retries, Some(3));
        assert!(plan.healthcheck);
        assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
    }

    #[test]
    fn privileges_become_security_options() {
        use shoal_api::v1::{Privileges, privileges};
        let spec = ContainerSpec {
            privileges: Some(Privileges {
                selinux_context: Some(privileges::SeLinuxContext {
                    disable: true,
                    level: "s0:c1".into(),
                    ..Default::default()
                }),
                seccomp: Some(privileges::Seccomp {
                    mode: privileges::seccomp::Mode::Unconfined as i32,
                    profile: Vec::new(),
                }),
                apparmor: Some(privileges::AppArmor {
                    mode: privileges::app_armor::Mode::Disabled as i32,
                }),
                no_new_privileges: true,
            }),
            ..image("busybox")
        };
        let plan = plan(&task(spec), "self").unwrap();
        let host = plan.body.host_config.as_ref().unwrap();
        assert_eq!(
            host.security_opt.as_deref().unwrap(),
            [
                "label=disable",
                "label=level:s0:c1",
                "seccomp=unconfined",
                "apparmor=unconfined",
                "no-new-privileges=true"
            ]
        );
    }

    #[test]
    fn what_cannot_be_honoured_is_refused_or_warned_about() {
        let mut spec = image("busybox");
        spec.secrets = vec![SecretReference::default()];
        assert!(
            plan(&task(spec), "n").is_ok(),
            "secrets are the controller's"
        );
        let mut spec = image("busybox");
        spec.mounts = vec![shoal_api::v1::Mount {
            r#type: mount::Type::Npipe as i32,
            target: "x".into(),
            ..Default::default()
        }];
        let error = plan(&task(spec), "n").unwrap_err();
        assert!(error.to_string().contains("container.mounts[0]"), "{error}");
        assert!(matches!(
            plan(&task(image(" ")), "n"),
            Err(ExecutorError::InvalidSpec(_))
        ));
        let mut t = task(image("busybox"));
        t.spec.as_mut().unwrap().networks = vec![Default::default()];
        let plan = plan(&t, "n").unwrap();
        assert!(
            plan.warnings[0].starts_with("networks:"),
            "{:?}",
            plan.warnings
        );
        let process = Task {
            meta: Some(Meta {
                id: "p".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(matches!(
            container_spec(&process),
            Err(ExecutorError::Unsupported(_))
        ));
    }

    #[test]
    fn pull_references_name_a_tag() {
        assert_eq!(pull_reference("busybox"), "busybox:latest");
        assert_eq!(pull_reference("busybox:1.36"), "busybox:1.36");
        assert_eq!(pull_reference("127.0.0.1:1/x"), "127.0.0.1:1/x:latest");
        assert_eq!(pull_reference("127.0.0.1:1/x:none"), "127.0.0.1:1/x:none");
        assert_eq!(pull_reference("x@sha256:abc"), "x@sha256:abc");
    }

    fn file(kind: FileKind, target: &str) -> TaskFile {
        TaskFile {
            kind,
            id: "x1".into(),
            name: "db".into(),
            target: target.into(),
            mode: 0o400,
            uid: None,
            gid: None,
            data: b"hunter2".to_vec(),
        }
    }

    #[test]
    fn secrets_and_configs_are_read_only_bind_mounts_at_dockers_places() {
        let mut spec = image("busybox");
        spec.mounts = vec![shoal_api::v1::Mount {
            r#type: mount::Type::Tmpfs as i32,
            target: "/run/secrets/taken".into(),
            ..Default::default()
        }];
        let p = plan(&task(spec), "n").unwrap();
        let files = [
            file(FileKind::Secret, "db"),
            file(FileKind::Config, "app.conf"),
            file(FileKind::Config, "/etc/app/other.conf"),
        ];
        let mounts = file_mounts(&p, &files, std::path::Path::new("/dev/shm/shoal-x")).unwrap();
        let targets: Vec<&str> = mounts
            .iter()
            .map(|m| m.target.as_deref().unwrap())
            .collect();
        assert_eq!(
            targets,
            ["/run/secrets/db", "/app.conf", "/etc/app/other.conf"]
        );
        assert_eq!(
            mounts[0].source.as_deref(),
            Some(format!("/dev/shm/shoal-x/{}/secrets/0", p.task_id).as_str())
        );
        assert_eq!(
            mounts[1].source.as_deref(),
            Some(format!("/dev/shm/shoal-x/{}/configs/1", p.task_id).as_str())
        );
        assert!(
            mounts
                .iter()
                .all(|m| m.read_only == Some(true) && m.typ == Some(MountType::BIND))
        );
        let e = file_mounts(
            &p,
            &[file(FileKind::Secret, "taken")],
            std::path::Path::new("/x"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("more than one mount"), "{e}");
        let e = file_mounts(
            &p,
            &[file(FileKind::Secret, "../etc/passwd")],
            std::path::Path::new("/x"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("without"), "{e}");
        assert!(!format!("{mounts:?}").contains("hunter2"));
    }
}
