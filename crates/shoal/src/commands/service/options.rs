//! The flags `service create` and `service update` share (docker's names), how their values
//! are parsed (memory and CPU as docker parses them), and how they change a service spec.

use shoal_api::defaults;
use shoal_api::v1::{
    ConfigReference, ContainerSpec, FileTarget, Placement, ProcessSpec, ResourceRequirements,
    Resources, RestartPolicy, SecretReference, ServiceSpec, TaskSpecFields, UpdateConfig,
    restart_policy, service_spec, task_spec, update_config,
};

use crate::commands::duration;

/// Task and deployment settings, the same flags on `create` and `update`.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct SpecOptions {
    /// Number of tasks (replicated services), or of completions (replicated jobs)
    #[arg(long, value_name = "N")]
    pub replicas: Option<u64>,
    /// Number of job tasks run at once (replicated jobs; default: --replicas)
    #[arg(long = "max-concurrent", value_name = "N")]
    pub max_concurrent: Option<u64>,
    /// Working directory of the task
    #[arg(short = 'w', long, value_name = "DIR")]
    pub workdir: Option<String>,
    /// User the task runs as (name or uid[:gid])
    #[arg(short = 'u', long, value_name = "USER")]
    pub user: Option<String>,
    /// CPU limit (in CPUs: 0.5, 1.5)
    #[arg(long = "limit-cpu", value_name = "CPUS", value_parser = parse_cpus)]
    pub limit_cpu: Option<i64>,
    /// Memory limit (bytes, or with a unit: 512M, 1.5G)
    #[arg(long = "limit-memory", value_name = "BYTES", value_parser = parse_memory)]
    pub limit_memory: Option<i64>,
    /// CPUs reserved for each task (the scheduler places tasks where they fit)
    #[arg(long = "reserve-cpu", value_name = "CPUS", value_parser = parse_cpus)]
    pub reserve_cpu: Option<i64>,
    /// Memory reserved for each task (512M, 1G)
    #[arg(long = "reserve-memory", value_name = "BYTES", value_parser = parse_memory)]
    pub reserve_memory: Option<i64>,
    /// When to restart a task that ended
    #[arg(
        long = "restart-condition",
        value_enum,
        value_name = "none|on-failure|any"
    )]
    pub restart_condition: Option<RestartCondition>,
    /// Delay between restart attempts (5s, 1m)
    #[arg(long = "restart-delay", value_name = "DURATION", value_parser = parse_duration)]
    pub restart_delay: Option<prost_types::Duration>,
    /// Maximum number of restarts before giving up (0: no limit)
    #[arg(long = "restart-max-attempts", value_name = "N")]
    pub restart_max_attempts: Option<u64>,
    /// Window used to count restart attempts
    #[arg(long = "restart-window", value_name = "DURATION", value_parser = parse_duration)]
    pub restart_window: Option<prost_types::Duration>,
    /// Time to wait after the stop signal before killing a task
    #[arg(long = "stop-grace-period", value_name = "DURATION", value_parser = parse_duration)]
    pub stop_grace_period: Option<prost_types::Duration>,
    /// Signal that stops a task (SIGTERM by default)
    #[arg(long = "stop-signal", value_name = "SIGNAL")]
    pub stop_signal: Option<String>,
    /// Maximum number of tasks of the service on one node (0: no limit)
    #[arg(long = "replicas-max-per-node", value_name = "N")]
    pub replicas_max_per_node: Option<u64>,
    /// Tasks updated at once (0: all at once)
    #[arg(long = "update-parallelism", value_name = "N")]
    pub update_parallelism: Option<u64>,
    /// Delay between updates of groups of tasks
    #[arg(long = "update-delay", value_name = "DURATION", value_parser = parse_duration)]
    pub update_delay: Option<prost_types::Duration>,
    /// What to do when an update fails
    #[arg(
        long = "update-failure-action",
        value_enum,
        value_name = "pause|continue|rollback"
    )]
    pub update_failure_action: Option<FailureAction>,
    /// How long to watch each updated task for failure
    #[arg(long = "update-monitor", value_name = "DURATION", value_parser = parse_duration)]
    pub update_monitor: Option<prost_types::Duration>,
    /// Failure rate tolerated during an update (0 to 1)
    #[arg(long = "update-max-failure-ratio", value_name = "RATIO", value_parser = parse_ratio)]
    pub update_max_failure_ratio: Option<f32>,
    /// Order of operations when a task is replaced
    #[arg(
        long = "update-order",
        value_enum,
        value_name = "start-first|stop-first"
    )]
    pub update_order: Option<Order>,
    /// Tasks rolled back at once (0: all at once)
    #[arg(long = "rollback-parallelism", value_name = "N")]
    pub rollback_parallelism: Option<u64>,
    /// Delay between rollbacks of groups of tasks
    #[arg(long = "rollback-delay", value_name = "DURATION", value_parser = parse_duration)]
    pub rollback_delay: Option<prost_types::Duration>,
    /// What to do when a rollback fails
    #[arg(
        long = "rollback-failure-action",
        value_enum,
        value_name = "pause|continue"
    )]
    pub rollback_failure_action: Option<FailureAction>,
    /// How long to watch each rolled back task for failure
    #[arg(long = "rollback-monitor", value_name = "DURATION", value_parser = parse_duration)]
    pub rollback_monitor: Option<prost_types::Duration>,
    /// Failure rate tolerated during a rollback (0 to 1)
    #[arg(long = "rollback-max-failure-ratio", value_name = "RATIO", value_parser = parse_ratio)]
    pub rollback_max_failure_ratio: Option<f32>,
    /// Order of operations when a task is rolled back
    #[arg(
        long = "rollback-order",
        value_enum,
        value_name = "start-first|stop-first"
    )]
    pub rollback_order: Option<Order>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Replicated,
    Global,
    ReplicatedJob,
    GlobalJob,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartCondition {
    None,
    OnFailure,
    Any,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureAction {
    Pause,
    Continue,
    Rollback,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    StartFirst,
    StopFirst,
}

/// Memory as docker parses it: bytes, or a number with a unit (b, k, m, g, t, p; powers of
/// 1024; an optional `b` or `ib` after the unit; case does not matter): `512M`, `1.5g`, `2GiB`.
pub fn parse_memory(s: &str) -> Result<i64, String> {
    let bad = || format!("invalid size {s:?}: write bytes, or a number with a unit (512M, 1.5G)");
    let text = s.trim().to_ascii_lowercase();
    let number_len = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(number_len);
    if number.is_empty() || number.matches('.').count() > 1 {
        return Err(bad());
    }
    let unit = unit.trim_start();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b').filter(|u| !u.is_empty()))
        .unwrap_or(unit);
    let scale: f64 = match unit {
        "" | "b" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024f64.powi(3),
        "t" => 1024f64.powi(4),
        "p" => 1024f64.powi(5),
        _ => return Err(bad()),
    };
    let value: f64 = number.parse().map_err(|_| bad())?;
    let bytes = value * scale;
    if !bytes.is_finite() || bytes >= i64::MAX as f64 {
        return Err(format!("invalid size {s:?}: too large"));
    }
    Ok(bytes as i64)
}

/// CPUs as docker parses them: a decimal number of CPUs (`1.5`, `0.25`), at most nine digits
/// after the point; returned in nano-CPUs.
pub fn parse_cpus(s: &str) -> Result<i64, String> {
    let bad = || format!("invalid CPU count {s:?}: write a number of CPUs such as 0.5 or 2");
    let text = s.trim();
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if (whole.is_empty() && fraction.is_empty())
        || !whole.chars().all(|c| c.is_ascii_digit())
        || !fraction.chars().all(|c| c.is_ascii_digit())
    {
        return Err(bad());
    }
    if fraction.len() > 9 {
        return Err(format!(
            "invalid CPU count {s:?}: too precise (at most 9 digits after the point)"
        ));
    }
    let whole: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    let fraction: i64 = format!("{fraction:0<9}").parse().map_err(|_| bad())?;
    whole
        .checked_mul(1_000_000_000)
        .and_then(|n| n.checked_add(fraction))
        .ok_or_else(|| format!("invalid CPU count {s:?}: too large"))
}

/// A Go-style duration (`10s`, `1m30s`) as a protobuf duration.
pub fn parse_duration(s: &str) -> Result<prost_types::Duration, String> {
    let d = duration::parse(s)?;
    prost_types::Duration::try_from(d).map_err(|_| format!("invalid duration {s:?}: too large"))
}

fn parse_ratio(s: &str) -> Result<f32, String> {
    match s.trim().parse::<f32>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!(
            "invalid failure ratio {s:?}: write a number from 0 to 1"
        )),
    }
}

/// `KEY=VALUE`; a KEY alone takes its value from this shell's environment, as docker does.
pub fn parse_env(s: &str) -> Result<String, String> {
    match s.split_once('=') {
        Some(("", _)) => Err(format!(
            "invalid environment variable {s:?}: the name is empty; write KEY=VALUE"
        )),
        Some(_) => Ok(s.to_string()),
        None if s.trim().is_empty() => {
            Err("invalid environment variable \"\": write KEY=VALUE".into())
        }
        None => Ok(match std::env::var(s) {
            Ok(value) => format!("{s}={value}"),
            Err(_) => s.to_string(),
        }),
    }
}

/// A placement constraint, checked as the manager checks it (`node.labels.zone==east`).
pub fn parse_constraint(s: &str) -> Result<String, String> {
    shoal_api::validation::parse_constraint(s)
        .map(|_| s.to_string())
        .map_err(|e| format!("invalid constraint {s:?}: {e}"))
}

/// The mode's settings for `--mode`.
pub fn mode(mode: Mode) -> service_spec::Mode {
    match mode {
        Mode::Replicated => service_spec::Mode::Replicated(shoal_api::v1::ReplicatedService {
            replicas: defaults::SERVICE_REPLICAS,
        }),
        Mode::Global => service_spec::Mode::Global(Default::default()),
        Mode::ReplicatedJob => service_spec::Mode::ReplicatedJob(shoal_api::v1::ReplicatedJob {
            max_concurrent: 0,
            total_completions: 1,
        }),
        Mode::GlobalJob => service_spec::Mode::GlobalJob(Default::default()),
    }
}

/// Sets the number of replicas (completions, for a replicated job).
pub fn set_replicas(spec: &mut ServiceSpec, n: u64) -> Result<(), String> {
    match spec.mode.as_mut() {
        Some(service_spec::Mode::Replicated(r)) => r.replicas = n,
        Some(service_spec::Mode::ReplicatedJob(j)) => j.total_completions = n,
        _ => {
            return Err(format!(
                "replicas can only be used with replicated or replicated-job mode (this service \
                 is {})",
                shoal_api::validation::mode_name(spec)
            ));
        }
    }
    Ok(())
}

/// The fields both runtimes have, borrowed from whichever the task has.
pub struct RuntimeFields<'a> {
    pub env: &'a mut Vec<String>,
    pub dir: &'a mut String,
    pub user: &'a mut String,
    pub stop_signal: &'a mut String,
    pub stop_grace_period: &'a mut Option<prost_types::Duration>,
    pub secrets: &'a mut Vec<SecretReference>,
    pub configs: &'a mut Vec<ConfigReference>,
}

pub fn runtime_fields(task: &mut TaskSpecFields) -> Option<RuntimeFields<'_>> {
    match task.runtime.as_mut()? {
        task_spec::Runtime::Container(c) => {
            let ContainerSpec {
                env,
                dir,
                user,
                stop_signal,
                stop_grace_period,
                secrets,
                configs,
                ..
            } = &mut **c;
            Some(RuntimeFields {
                env,
                dir,
                user,
                stop_signal,
                stop_grace_period,
                secrets,
                configs,
            })
        }
        task_spec::Runtime::Process(p) => {
            let ProcessSpec {
                env,
                dir,
                user,
                stop_signal,
                stop_grace_period,
                secrets,
                configs,
                ..
            } = &mut **p;
            Some(RuntimeFields {
                env,
                dir,
                user,
                stop_signal,
                stop_grace_period,
                secrets,
                configs,
            })
        }
    }
}

/// The key of a `KEY=VALUE` environment entry.
pub fn env_key(entry: &str) -> &str {
    entry.split_once('=').map(|(k, _)| k).unwrap_or(entry)
}

/// Adds or replaces the variable `entry` sets.
pub fn env_set(env: &mut Vec<String>, entry: &str) {
    let key = env_key(entry);
    match env.iter_mut().find(|e| env_key(e) == key) {
        Some(existing) => *existing = entry.to_string(),
        None => env.push(entry.to_string()),
    }
}

/// The mode of a secret's file when `--secret` gives none: readable by its owner only.
pub const SECRET_MODE: u32 = 0o400;
/// The mode of a config's file when `--config` gives none: readable by all.
pub const CONFIG_MODE: u32 = 0o444;

/// A `--secret`/`--config` value, docker's syntax: `NAME` alone, or
/// `source=NAME,target=FILE,uid=UID,gid=GID,mode=MODE` (`src` for `source`; the mode in
/// octal). The source is a name, an ID or a unique ID prefix (the manager resolves it); the
/// target defaults to the source; uid and gid default to the task's user.
fn parse_file_reference(
    s: &str,
    kind: &str,
    default_mode: u32,
) -> Result<(String, FileTarget), String> {
    let bad = |why: String| {
        format!(
            "invalid --{kind} {s:?}: {why}; write NAME, or \
             source=NAME[,target=FILE][,uid=UID][,gid=GID][,mode=0400]"
        )
    };
    let mut source = String::new();
    let mut file = FileTarget {
        mode: default_mode,
        ..Default::default()
    };
    let fields: Vec<&str> = s.split(',').map(str::trim).collect();
    for field in &fields {
        match field.split_once('=') {
            None if fields.len() == 1 => source = field.to_string(),
            None => return Err(bad(format!("{field:?} is not KEY=VALUE"))),
            Some((key, value)) => match key.trim().to_ascii_lowercase().as_str() {
                "source" | "src" => source = value.to_string(),
                "target" => file.name = value.to_string(),
                "uid" => file.uid = value.to_string(),
                "gid" => file.gid = value.to_string(),
                "mode" => {
                    let digits = value.strip_prefix("0o").unwrap_or(value);
                    file.mode = u32::from_str_radix(digits, 8)
                        .ok()
                        .filter(|m| *m <= 0o7777)
                        .ok_or_else(|| bad(format!("mode {value:?} is not an octal file mode")))?;
                }
                other => return Err(bad(format!("unknown key {other:?}"))),
            },
        }
    }
    if source.is_empty() {
        return Err(bad(format!("the {kind} (source) is missing")));
    }
    for (what, id) in [("uid", &file.uid), ("gid", &file.gid)] {
        if !id.is_empty() && id.parse::<u32>().is_err() {
            return Err(bad(format!("{what} {id:?} is not a number")));
        }
    }
    if file.name.is_empty() {
        file.name = source.clone();
    }
    Ok((source, file))
}

/// A `--secret` value (see [`parse_file_reference`]); mode 0400 unless given.
pub fn parse_secret(s: &str) -> Result<SecretReference, String> {
    let (source, file) = parse_file_reference(s, "secret", SECRET_MODE)?;
    Ok(SecretReference {
        secret_id: String::new(),
        secret_name: source,
        file: Some(file),
    })
}

/// A `--config` value (see [`parse_file_reference`]); mode 0444 unless given.
pub fn parse_config(s: &str) -> Result<ConfigReference, String> {
    let (source, file) = parse_file_reference(s, "config", CONFIG_MODE)?;
    Ok(ConfigReference {
        config_id: String::new(),
        config_name: source,
        file: Some(file),
    })
}

/// The file name a reference's target gives (its object's name when none is given).
fn target_name<'a>(file: &'a Option<FileTarget>, name: &'a str) -> &'a str {
    file.as_ref()
        .map(|f| f.name.as_str())
        .filter(|n| !n.is_empty())
        .unwrap_or(name)
}

/// `--secret-rm`, then `--secret-add` (and the same for configs): a reference is removed when
/// its secret's name or ID is named; an added one replaces one with the same target.
pub fn update_file_references(
    fields: &mut RuntimeFields<'_>,
    secret_add: &[SecretReference],
    secret_rm: &[String],
    config_add: &[ConfigReference],
    config_rm: &[String],
) {
    fields.secrets.retain(|r| {
        !secret_rm
            .iter()
            .any(|x| *x == r.secret_name || *x == r.secret_id)
    });
    for added in secret_add {
        let target = target_name(&added.file, &added.secret_name);
        fields
            .secrets
            .retain(|r| target_name(&r.file, &r.secret_name) != target);
        fields.secrets.push(added.clone());
    }
    fields.configs.retain(|r| {
        !config_rm
            .iter()
            .any(|x| *x == r.config_name || *x == r.config_id)
    });
    for added in config_add {
        let target = target_name(&added.file, &added.config_name);
        fields
            .configs
            .retain(|r| target_name(&r.file, &r.config_name) != target);
        fields.configs.push(added.clone());
    }
}

fn default_update_config() -> UpdateConfig {
    UpdateConfig {
        parallelism: defaults::UPDATE_PARALLELISM,
        delay: prost_types::Duration::try_from(defaults::UPDATE_DELAY).ok(),
        failure_action: update_config::FailureAction::Pause as i32,
        monitor: prost_types::Duration::try_from(defaults::UPDATE_MONITOR).ok(),
        max_failure_ratio: defaults::UPDATE_MAX_FAILURE_RATIO,
        order: update_config::UpdateOrder::StopFirst as i32,
    }
}

fn default_restart_policy() -> RestartPolicy {
    RestartPolicy {
        condition: restart_policy::Condition::Any as i32,
        delay: prost_types::Duration::try_from(defaults::RESTART_DELAY).ok(),
        max_attempts: defaults::RESTART_MAX_ATTEMPTS,
        window: None,
    }
}

struct UpdateFlags {
    parallelism: Option<u64>,
    delay: Option<prost_types::Duration>,
    failure_action: Option<FailureAction>,
    monitor: Option<prost_types::Duration>,
    max_failure_ratio: Option<f32>,
    order: Option<Order>,
}

impl UpdateFlags {
    fn any(&self) -> bool {
        self.parallelism.is_some()
            || self.delay.is_some()
            || self.failure_action.is_some()
            || self.monitor.is_some()
            || self.max_failure_ratio.is_some()
            || self.order.is_some()
    }

    fn apply(&self, config: &mut Option<UpdateConfig>) {
        if !self.any() {
            return;
        }
        let u = config.get_or_insert_with(default_update_config);
        if let Some(n) = self.parallelism {
            u.parallelism = n;
        }
        if let Some(d) = self.delay {
            u.delay = Some(d);
        }
        if let Some(a) = self.failure_action {
            u.failure_action = match a {
                FailureAction::Pause => update_config::FailureAction::Pause,
                FailureAction::Continue => update_config::FailureAction::Continue,
                FailureAction::Rollback => update_config::FailureAction::Rollback,
            } as i32;
        }
        if let Some(d) = self.monitor {
            u.monitor = Some(d);
        }
        if let Some(r) = self.max_failure_ratio {
            u.max_failure_ratio = r;
        }
        if let Some(o) = self.order {
            u.order = match o {
                Order::StartFirst => update_config::UpdateOrder::StartFirst,
                Order::StopFirst => update_config::UpdateOrder::StopFirst,
            } as i32;
        }
    }
}

impl SpecOptions {
    /// Applies the flags that were given to `spec` (whose task must have a runtime).
    pub fn apply(&self, spec: &mut ServiceSpec) -> Result<(), String> {
        if let Some(n) = self.replicas {
            set_replicas(spec, n)?;
        }
        if let Some(n) = self.max_concurrent {
            match spec.mode.as_mut() {
                Some(service_spec::Mode::ReplicatedJob(j)) => j.max_concurrent = n,
                _ => {
                    return Err(format!(
                        "--max-concurrent can only be used with replicated-job mode (this \
                         service is {})",
                        shoal_api::validation::mode_name(spec)
                    ));
                }
            }
        }
        if self.rollback_failure_action == Some(FailureAction::Rollback) {
            return Err(
                "invalid --rollback-failure-action \"rollback\": use pause or continue".into(),
            );
        }
        UpdateFlags {
            parallelism: self.update_parallelism,
            delay: self.update_delay,
            failure_action: self.update_failure_action,
            monitor: self.update_monitor,
            max_failure_ratio: self.update_max_failure_ratio,
            order: self.update_order,
        }
        .apply(&mut spec.update);
        UpdateFlags {
            parallelism: self.rollback_parallelism,
            delay: self.rollback_delay,
            failure_action: self.rollback_failure_action,
            monitor: self.rollback_monitor,
            max_failure_ratio: self.rollback_max_failure_ratio,
            order: self.rollback_order,
        }
        .apply(&mut spec.rollback);

        let task: &mut TaskSpecFields = spec.task.get_or_insert_with(Default::default);
        if let Some(fields) = runtime_fields(task) {
            if let Some(dir) = &self.workdir {
                *fields.dir = dir.clone();
            }
            if let Some(user) = &self.user {
                *fields.user = user.clone();
            }
            if let Some(signal) = &self.stop_signal {
                *fields.stop_signal = signal.clone();
            }
            if let Some(d) = self.stop_grace_period {
                *fields.stop_grace_period = Some(d);
            }
        }
        let resource_flags = [
            self.limit_cpu,
            self.limit_memory,
            self.reserve_cpu,
            self.reserve_memory,
        ];
        if resource_flags.iter().any(Option::is_some) {
            let r: &mut ResourceRequirements = task.resources.get_or_insert_with(Default::default);
            let set = |res: &mut Option<Resources>, cpu: Option<i64>, memory: Option<i64>| {
                if cpu.is_none() && memory.is_none() {
                    return;
                }
                let res = res.get_or_insert_with(Default::default);
                if let Some(c) = cpu {
                    res.nano_cpus = c;
                }
                if let Some(m) = memory {
                    res.memory_bytes = m;
                }
            };
            set(&mut r.limits, self.limit_cpu, self.limit_memory);
            set(&mut r.reservations, self.reserve_cpu, self.reserve_memory);
        }
        if self.restart_condition.is_some()
            || self.restart_delay.is_some()
            || self.restart_max_attempts.is_some()
            || self.restart_window.is_some()
        {
            let r = task.restart.get_or_insert_with(default_restart_policy);
            if let Some(c) = self.restart_condition {
                r.condition = match c {
                    RestartCondition::None => restart_policy::Condition::None,
                    RestartCondition::OnFailure => restart_policy::Condition::OnFailure,
                    RestartCondition::Any => restart_policy::Condition::Any,
                } as i32;
            }
            if let Some(d) = self.restart_delay {
                r.delay = Some(d);
            }
            if let Some(n) = self.restart_max_attempts {
                r.max_attempts = n;
            }
            if let Some(w) = self.restart_window {
                r.window = Some(w);
            }
        }
        if let Some(n) = self.replicas_max_per_node {
            let p: &mut Placement = task.placement.get_or_insert_with(Default::default);
            p.max_replicas = n;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_parses_as_docker_parses_it() {
        assert_eq!(parse_memory("1024").unwrap(), 1024);
        assert_eq!(parse_memory("512M").unwrap(), 512 << 20);
        assert_eq!(parse_memory("512m").unwrap(), 512 << 20);
        assert_eq!(parse_memory("512MB").unwrap(), 512 << 20);
        assert_eq!(parse_memory("1.5g").unwrap(), 3 << 29);
        assert_eq!(parse_memory("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_memory("10k").unwrap(), 10 << 10);
        assert_eq!(parse_memory("7b").unwrap(), 7);
        for bad in ["", "M", "12X", "1.2.3m", "-5m", "ten"] {
            let e = parse_memory(bad).unwrap_err();
            assert!(e.contains("invalid size"), "{bad}: {e}");
        }
    }

    #[test]
    fn cpus_parse_as_docker_parses_them() {
        assert_eq!(parse_cpus("1.5").unwrap(), 1_500_000_000);
        assert_eq!(parse_cpus("2").unwrap(), 2_000_000_000);
        assert_eq!(parse_cpus("0.001").unwrap(), 1_000_000);
        assert_eq!(parse_cpus(".5").unwrap(), 500_000_000);
        assert!(
            parse_cpus("0.0000000001")
                .unwrap_err()
                .contains("too precise")
        );
        for bad in ["", "x", "-1", "1,5", "."] {
            assert!(parse_cpus(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn env_constraints_and_ratios() {
        assert_eq!(parse_env("A=B").unwrap(), "A=B");
        assert_eq!(parse_env("A=").unwrap(), "A=");
        assert!(parse_env("=B").is_err());
        assert_eq!(
            parse_env("SHOAL_TEST_SURELY_UNSET_VAR").unwrap(),
            "SHOAL_TEST_SURELY_UNSET_VAR"
        );
        assert_eq!(
            parse_constraint("node.labels.zone==east").unwrap(),
            "node.labels.zone==east"
        );
        assert!(
            parse_constraint("zone")
                .unwrap_err()
                .contains("invalid constraint")
        );
        assert!(parse_ratio("0.5").is_ok());
        assert!(parse_ratio("2").is_err());
        let mut env = vec!["A=1".to_string(), "B=2".to_string()];
        env_set(&mut env, "A=3");
        env_set(&mut env, "C=4");
        assert_eq!(env, ["A=3", "B=2", "C=4"]);
    }

    #[test]
    fn replicas_only_for_replicated_modes() {
        let mut spec = ServiceSpec {
            mode: Some(mode(Mode::Global)),
            ..Default::default()
        };
        let e = set_replicas(&mut spec, 3).unwrap_err();
        assert!(e.contains("replicated or replicated-job mode"), "{e}");
        spec.mode = Some(mode(Mode::ReplicatedJob));
        set_replicas(&mut spec, 3).unwrap();
        assert!(matches!(
            spec.mode,
            Some(service_spec::Mode::ReplicatedJob(
                shoal_api::v1::ReplicatedJob {
                    total_completions: 3,
                    ..
                }
            ))
        ));
    }

    #[test]
    fn secrets_and_configs_parse_as_docker_parses_them() {
        let short = parse_secret("db-password").unwrap();
        assert_eq!(short.secret_id, "");
        assert_eq!(short.secret_name, "db-password");
        let file = short.file.unwrap();
        assert_eq!(
            (
                file.name.as_str(),
                file.uid.as_str(),
                file.gid.as_str(),
                file.mode
            ),
            ("db-password", "", "", 0o400)
        );
        let long = parse_secret("source=db,target=pw.txt,uid=1000,gid=100,mode=0440").unwrap();
        assert_eq!(long.secret_name, "db");
        let file = long.file.unwrap();
        assert_eq!(
            (
                file.name.as_str(),
                file.uid.as_str(),
                file.gid.as_str(),
                file.mode
            ),
            ("pw.txt", "1000", "100", 0o440)
        );
        assert_eq!(parse_secret("src=db").unwrap().file.unwrap().name, "db");
        assert_eq!(
            parse_secret("src=db,mode=600").unwrap().file.unwrap().mode,
            0o600
        );
        let config = parse_config("app.conf").unwrap();
        assert_eq!(config.config_name, "app.conf");
        assert_eq!(config.file.as_ref().unwrap().mode, 0o444);
        let config = parse_config("source=app.conf,target=/etc/app.conf,mode=0400").unwrap();
        assert_eq!(config.file.as_ref().unwrap().name, "/etc/app.conf");
        assert_eq!(config.file.as_ref().unwrap().mode, 0o400);
        for bad in [
            "",
            "target=x",
            "source=db,mode=9",
            "source=db,uid=root",
            "source=db,color=red",
            "db,target=x",
        ] {
            let e = parse_secret(bad).unwrap_err();
            assert!(e.contains("invalid --secret"), "{bad}: {e}");
        }
    }

    #[test]
    fn secret_and_config_updates_remove_then_add() {
        let process = ProcessSpec {
            command: "true".into(),
            secrets: vec![
                SecretReference {
                    secret_id: "id1".into(),
                    secret_name: "a".into(),
                    file: None,
                },
                SecretReference {
                    secret_id: "id2".into(),
                    secret_name: "b".into(),
                    file: None,
                },
            ],
            configs: vec![parse_config("c").unwrap()],
            ..Default::default()
        };
        let mut task = TaskSpecFields {
            runtime: Some(task_spec::Runtime::Process(Box::new(process))),
            ..Default::default()
        };
        let mut fields = runtime_fields(&mut task).unwrap();
        update_file_references(
            &mut fields,
            &[
                parse_secret("source=x,target=b").unwrap(),
                parse_secret("d").unwrap(),
            ],
            &["id1".to_string()],
            &[],
            &["c".to_string()],
        );
        let names: Vec<&str> = fields
            .secrets
            .iter()
            .map(|r| r.secret_name.as_str())
            .collect();
        assert_eq!(
            names,
            ["x", "d"],
            "a removed by ID, b replaced by x (same target)"
        );
        assert!(fields.configs.is_empty());
    }
}
