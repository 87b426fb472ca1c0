//! `shoal service ...`: the swarm's services. One file per command; this one holds what they
//! share: naming services, describing them in words, and a service as JSON. `options` holds
//! the flags `create` and `update` share, `progress` the wait for a service to converge.

pub mod create;
pub mod inspect;
pub mod logs;
pub mod ls;
pub mod options;
pub mod progress;
pub mod ps;
pub mod publish;
pub mod rm;
pub mod rollback;
pub mod scale;
pub mod update;

use std::path::PathBuf;

use shoal_api::v1::{
    ListServicesRequest, ListTasksRequest, Service, ServiceSpec, Task, TaskState, UpdateConfig,
    restart_policy, service_spec, task_spec, update_config, update_status,
};

use super::client::Client;
use super::output::{self, Json};
use super::resolve::Resolver;

/// Arguments of `shoal service`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Create a service: tasks run as containers (IMAGE) or host processes (-- COMMAND)
    Create(Box<create::Args>),
    /// List services
    #[command(visible_alias = "list")]
    Ls(ls::Args),
    /// List the tasks of services
    Ps(ps::Args),
    /// Show services in detail, as JSON
    Inspect(inspect::Args),
    /// Remove services
    #[command(visible_alias = "remove")]
    Rm(rm::Args),
    /// Change the number of replicas of services (SERVICE=N...)
    Scale(scale::Args),
    /// Change a service
    Update(Box<update::Args>),
    /// Go back to a service's previous spec
    Rollback(rollback::Args),
    /// Show the logs of a service's tasks, or of one task
    Logs(logs::Args),
}

pub fn run(socket: Option<PathBuf>, args: Args) -> Result<(), String> {
    match args.command {
        Command::Create(a) => create::run(socket, *a),
        Command::Ls(a) => ls::run(socket, a),
        Command::Ps(a) => ps::run(socket, a),
        Command::Inspect(a) => inspect::run(socket, a),
        Command::Rm(a) => rm::run(socket, a),
        Command::Scale(a) => scale::run(socket, a),
        Command::Update(a) => update::run(socket, *a),
        Command::Rollback(a) => rollback::run(socket, a),
        Command::Logs(a) => logs::run(socket, a),
    }
}

pub fn id(service: &Service) -> &str {
    service.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("")
}

pub fn version(service: &Service) -> u64 {
    service.meta.as_ref().map(|m| m.version).unwrap_or(0)
}

pub fn name(service: &Service) -> &str {
    service
        .spec
        .as_ref()
        .and_then(|s| s.annotations.as_ref())
        .map(|a| a.name.as_str())
        .unwrap_or("")
}

/// Services are named by ID, name, or a unique ID prefix.
pub const RESOLVER: Resolver<'static, Service> = Resolver {
    kind: "service",
    id,
    names: |s| vec![name(s)],
    describe: |s| format!("({})", name(s)),
};

/// Every service of the cluster.
pub async fn services(c: &mut Client) -> Result<Vec<Service>, String> {
    Ok(c.control()
        .list_services(ListServicesRequest::default())
        .await
        .map_err(|s| c.error("ListServices", &s))?
        .into_inner()
        .services)
}

/// The tasks of one service.
pub async fn tasks_of(c: &mut Client, service_id: &str) -> Result<Vec<Task>, String> {
    Ok(c.control()
        .list_tasks(ListTasksRequest {
            service_ids: vec![service_id.to_string()],
            ..Default::default()
        })
        .await
        .map_err(|s| c.error("ListTasks", &s))?
        .into_inner()
        .tasks)
}

/// What a task runs, as the IMAGE column shows it: the image, or the command line of a process.
pub fn image_of(task: Option<&shoal_api::v1::TaskSpec>) -> String {
    match task.and_then(|t| t.runtime.as_ref()) {
        Some(task_spec::Runtime::Container(c)) => c.image.clone(),
        Some(task_spec::Runtime::Process(p)) => std::iter::once(p.command.as_str())
            .chain(p.args.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        None => String::new(),
    }
}

/// A task state in lower case, as docker's tables show it ("running").
pub fn state_name(state: i32) -> String {
    match TaskState::try_from(state) {
        Ok(s) => shoal_api::task_state::name(s).to_ascii_lowercase(),
        Err(_) => format!("state {state}"),
    }
}

fn duration_ns(d: Option<&prost_types::Duration>) -> Json {
    match d {
        Some(d) => Json::Int(d.seconds.saturating_mul(1_000_000_000) + i64::from(d.nanos)),
        None => Json::Null,
    }
}

fn strings(items: &[String]) -> Json {
    Json::Array(items.iter().map(Json::str).collect())
}

fn update_config_json(u: &UpdateConfig) -> Json {
    let action = match update_config::FailureAction::try_from(u.failure_action) {
        Ok(update_config::FailureAction::Pause) => "pause",
        Ok(update_config::FailureAction::Continue) => "continue",
        Ok(update_config::FailureAction::Rollback) => "rollback",
        Err(_) => "unknown",
    };
    let order = match update_config::UpdateOrder::try_from(u.order) {
        Ok(update_config::UpdateOrder::StartFirst) => "start-first",
        _ => "stop-first",
    };
    Json::object([
        ("Parallelism", Json::UInt(u.parallelism)),
        ("Delay", duration_ns(u.delay.as_ref())),
        ("FailureAction", Json::str(action)),
        ("Monitor", duration_ns(u.monitor.as_ref())),
        ("MaxFailureRatio", ratio_json(u.max_failure_ratio)),
        ("Order", Json::str(order)),
    ])
}

/// A ratio from 0 to 1. [`Json`] has no floating-point numbers: whole ratios print as numbers,
/// others as text with three decimals.
fn ratio_json(r: f32) -> Json {
    if r.fract() == 0.0 {
        Json::UInt(r as u64)
    } else {
        Json::str(format!("{r:.3}"))
    }
}

fn file_refs(refs: impl Iterator<Item = (String, String, String)>) -> Json {
    Json::Array(
        refs.map(|(id, name, file)| {
            Json::object([
                ("ID", Json::str(id)),
                ("Name", Json::str(name)),
                ("File", Json::str(file)),
            ])
        })
        .collect(),
    )
}

/// A service spec as `inspect` shows it (docker's field names). Secrets appear as references
/// only: a spec never holds their data.
pub fn spec_json(spec: &ServiceSpec) -> Json {
    let annotations = spec.annotations.clone().unwrap_or_default();
    let task = spec.task.clone().unwrap_or_default();
    let mut template = Vec::new();
    match task.runtime.as_ref() {
        Some(task_spec::Runtime::Container(c)) => template.push((
            "ContainerSpec",
            Json::object([
                ("Image", Json::str(&c.image)),
                (
                    "Labels",
                    Json::object(c.labels.iter().map(|(k, v)| (k.clone(), Json::str(v)))),
                ),
                ("Command", strings(&c.command)),
                ("Args", strings(&c.args)),
                ("Env", strings(&c.env)),
                ("Dir", Json::str(&c.dir)),
                ("User", Json::str(&c.user)),
                ("StopSignal", Json::str(&c.stop_signal)),
                ("StopGracePeriod", duration_ns(c.stop_grace_period.as_ref())),
                (
                    "Secrets",
                    file_refs(c.secrets.iter().map(|s| {
                        (
                            s.secret_id.clone(),
                            s.secret_name.clone(),
                            s.file.as_ref().map(|f| f.name.clone()).unwrap_or_default(),
                        )
                    })),
                ),
                (
                    "Configs",
                    file_refs(c.configs.iter().map(|s| {
                        (
                            s.config_id.clone(),
                            s.config_name.clone(),
                            s.file.as_ref().map(|f| f.name.clone()).unwrap_or_default(),
                        )
                    })),
                ),
            ]),
        )),
        Some(task_spec::Runtime::Process(p)) => template.push((
            "ProcessSpec",
            Json::object([
                ("Command", Json::str(&p.command)),
                ("Args", strings(&p.args)),
                ("Env", strings(&p.env)),
                ("Dir", Json::str(&p.dir)),
                ("User", Json::str(&p.user)),
                ("StopSignal", Json::str(&p.stop_signal)),
                ("StopGracePeriod", duration_ns(p.stop_grace_period.as_ref())),
                (
                    "Secrets",
                    file_refs(p.secrets.iter().map(|s| {
                        (
                            s.secret_id.clone(),
                            s.secret_name.clone(),
                            s.file.as_ref().map(|f| f.name.clone()).unwrap_or_default(),
                        )
                    })),
                ),
                (
                    "Configs",
                    file_refs(p.configs.iter().map(|s| {
                        (
                            s.config_id.clone(),
                            s.config_name.clone(),
                            s.file.as_ref().map(|f| f.name.clone()).unwrap_or_default(),
                        )
                    })),
                ),
            ]),
        )),
        None => {}
    }
    let resources = task.resources.as_deref().cloned().unwrap_or_default();
    let res = |r: Option<&shoal_api::v1::Resources>| {
        let r = r.cloned().unwrap_or_default();
        Json::object([
            ("NanoCPUs", Json::Int(r.nano_cpus)),
            ("MemoryBytes", Json::Int(r.memory_bytes)),
        ])
    };
    template.push((
        "Resources",
        Json::object([
            ("Limits", res(resources.limits.as_ref())),
            ("Reservations", res(resources.reservations.as_ref())),
        ]),
    ));
    if let Some(r) = task.restart.as_ref() {
        let condition = match restart_policy::Condition::try_from(r.condition) {
            Ok(restart_policy::Condition::None) => "none",
            Ok(restart_policy::Condition::OnFailure) => "on-failure",
            _ => "any",
        };
        template.push((
            "RestartPolicy",
            Json::object([
                ("Condition", Json::str(condition)),
                ("Delay", duration_ns(r.delay.as_ref())),
                ("MaxAttempts", Json::UInt(r.max_attempts)),
                ("Window", duration_ns(r.window.as_ref())),
            ]),
        ));
    }
    let placement = task.placement.as_deref().cloned().unwrap_or_default();
    template.push((
        "Placement",
        Json::object([
            ("Constraints", strings(&placement.constraints)),
            ("MaxReplicas", Json::UInt(placement.max_replicas)),
        ]),
    ));
    if let Some(networks) = publish::networks_json(spec) {
        template.push(("Networks", networks));
    }
    template.push(("ForceUpdate", Json::UInt(task.force_update)));
    template.push((
        "Runtime",
        Json::str(match task.runtime {
            Some(task_spec::Runtime::Process(_)) => "process",
            _ => "container",
        }),
    ));
    let mode = match spec.mode.as_ref() {
        Some(service_spec::Mode::Replicated(r)) => Json::object([(
            "Replicated",
            Json::object([("Replicas", Json::UInt(r.replicas))]),
        )]),
        Some(service_spec::Mode::Global(_)) => {
            Json::object([("Global", Json::object(Vec::<(String, Json)>::new()))])
        }
        Some(service_spec::Mode::ReplicatedJob(j)) => Json::object([(
            "ReplicatedJob",
            Json::object([
                ("MaxConcurrent", Json::UInt(j.max_concurrent)),
                ("TotalCompletions", Json::UInt(j.total_completions)),
            ]),
        )]),
        Some(service_spec::Mode::GlobalJob(_)) => {
            Json::object([("GlobalJob", Json::object(Vec::<(String, Json)>::new()))])
        }
        None => Json::Null,
    };
    let mut fields = vec![
        ("Name", Json::str(&annotations.name)),
        ("Labels", output::labels(&annotations.labels)),
        ("TaskTemplate", Json::object(template)),
        ("Mode", mode),
    ];
    if let Some(u) = spec.update.as_ref() {
        fields.push(("UpdateConfig", update_config_json(u)));
    }
    if let Some(u) = spec.rollback.as_ref() {
        fields.push(("RollbackConfig", update_config_json(u)));
    }
    if let Some(e) = publish::endpoint_spec_json(spec) {
        fields.push(("EndpointSpec", e));
    }
    Json::object(fields)
}

/// A service as `service inspect` shows it.
pub fn to_json(service: &Service) -> Json {
    let meta = service.meta.as_ref();
    let mut fields = vec![
        ("ID", Json::str(id(service))),
        ("Version", output::version(meta)),
        (
            "CreatedAt",
            output::timestamp(meta.and_then(|m| m.created_at.as_ref())),
        ),
        (
            "UpdatedAt",
            output::timestamp(meta.and_then(|m| m.updated_at.as_ref())),
        ),
        (
            "Spec",
            spec_json(service.spec.as_ref().unwrap_or(&Default::default())),
        ),
        (
            "SpecVersion",
            Json::object([("Index", Json::UInt(service.spec_version))]),
        ),
    ];
    if let Some(previous) = service.previous_spec.as_deref() {
        fields.push(("PreviousSpec", spec_json(previous)));
    }
    if let Some(u) = service.update_status.as_ref() {
        let state = match update_status::UpdateState::try_from(u.state) {
            Ok(s) => s.as_str_name().to_ascii_lowercase(),
            Err(_) => format!("state {}", u.state),
        };
        fields.push((
            "UpdateStatus",
            Json::object([
                ("State", Json::str(state)),
                ("StartedAt", output::timestamp(u.started_at.as_ref())),
                ("CompletedAt", output::timestamp(u.completed_at.as_ref())),
                ("Message", Json::str(&u.message)),
            ]),
        ));
    }
    if let Some(e) = publish::endpoint_json(service) {
        fields.push(("Endpoint", e));
    }
    Json::object(fields)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use shoal_api::v1::{
        Annotations, ContainerSpec, Meta, ProcessSpec, ReplicatedService, SecretReference,
        TaskSpec, TaskSpecFields,
    };

    /// A replicated service running `sleep 1000` as a process.
    pub(crate) fn service(id: &str, name: &str, replicas: u64) -> Service {
        Service {
            meta: Some(Meta {
                id: id.into(),
                version: 4,
                ..Default::default()
            }),
            spec: Some(ServiceSpec {
                annotations: Some(Annotations {
                    name: name.into(),
                    labels: vec![],
                }),
                task: Some(TaskSpec::from(TaskSpecFields {
                    runtime: Some(task_spec::Runtime::Process(Box::new(ProcessSpec {
                        command: "sleep".into(),
                        args: vec!["1000".into()],
                        env: vec!["A=B".into()],
                        ..Default::default()
                    }))),
                    ..Default::default()
                })),
                mode: Some(service_spec::Mode::Replicated(ReplicatedService {
                    replicas,
                })),
                ..Default::default()
            }),
            spec_version: 2,
            ..Default::default()
        }
    }

    #[test]
    fn json_shows_the_spec_with_docker_names_and_no_secret_data() {
        let mut s = service("abc", "web", 3);
        let v: serde_json::Value = serde_json::from_str(&to_json(&s).compact()).unwrap();
        assert_eq!(v["ID"], "abc");
        assert_eq!(v["Version"]["Index"], 4);
        assert_eq!(v["SpecVersion"]["Index"], 2);
        assert_eq!(v["Spec"]["Name"], "web");
        assert_eq!(v["Spec"]["Mode"]["Replicated"]["Replicas"], 3);
        let p = &v["Spec"]["TaskTemplate"]["ProcessSpec"];
        assert_eq!(p["Command"], "sleep");
        assert_eq!(p["Args"][0], "1000");
        assert_eq!(p["Env"][0], "A=B");
        assert_eq!(v["Spec"]["TaskTemplate"]["Runtime"], "process");

        let spec = s.spec.as_mut().unwrap();
        spec.task = Some(TaskSpec::from(TaskSpecFields {
            runtime: Some(task_spec::Runtime::Container(Box::new(ContainerSpec {
                image: "nginx".into(),
                secrets: vec![SecretReference {
                    secret_id: "sid".into(),
                    secret_name: "db-password".into(),
                    file: None,
                }],
                ..Default::default()
            }))),
            ..Default::default()
        }));
        let v: serde_json::Value = serde_json::from_str(&to_json(&s).compact()).unwrap();
        let c = &v["Spec"]["TaskTemplate"]["ContainerSpec"];
        assert_eq!(c["Image"], "nginx");
        assert_eq!(c["Secrets"][0]["Name"], "db-password");
        assert_eq!(v["Spec"]["TaskTemplate"]["Runtime"], "container");
    }

    #[test]
    fn images_and_states_in_words() {
        let s = service("abc", "web", 3);
        assert_eq!(
            image_of(s.spec.as_ref().unwrap().task.as_ref()),
            "sleep 1000"
        );
        assert_eq!(state_name(TaskState::Running as i32), "running");
        assert_eq!(state_name(9999), "state 9999");
    }
}
