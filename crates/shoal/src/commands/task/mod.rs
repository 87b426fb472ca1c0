//! `shoal task ...`: the swarm's tasks, whatever their service or node. One file per command;
//! this one holds what they share (and `node ps` uses): fetching tasks, naming them, grouping
//! them by service for the tables `service ps` draws, and a task as JSON.

pub mod inspect;
pub mod ls;

use std::collections::BTreeMap;
use std::path::PathBuf;

use shoal_api::naming::task_name;
use shoal_api::v1::{Annotations, ListTasksRequest, Meta, Service, ServiceSpec, Task, task_status};

use super::client::Client;
use super::output::{self, Json};
use super::resolve::Resolver;
use super::service;

/// Arguments of `shoal task`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// List tasks (those meant to run, or all with -a), of every service or of some
    #[command(visible_alias = "list")]
    Ls(ls::Args),
    /// Show tasks in detail, as JSON
    Inspect(inspect::Args),
}

pub fn run(socket: Option<PathBuf>, args: Args) -> Result<(), String> {
    match args.command {
        Command::Ls(a) => ls::run(socket, a),
        Command::Inspect(a) => inspect::run(socket, a),
    }
}

pub fn id(task: &Task) -> &str {
    task.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("")
}

/// Tasks are named by ID or unique ID prefix (or by a name given to the task itself).
pub const RESOLVER: Resolver<'static, Task> = Resolver {
    kind: "task",
    id,
    names: |t| {
        vec![
            t.annotations
                .as_ref()
                .map(|a| a.name.as_str())
                .unwrap_or(""),
        ]
    },
    describe: |t| format!("({})", task_name(t)),
};

/// The task `query` names: an ID, a unique ID prefix, or its full name as `service logs`
/// prints it (`web.1.<task ID>`).
pub fn resolve<'t>(tasks: &'t [Task], query: &str) -> Result<&'t Task, String> {
    RESOLVER.resolve(tasks, query).or_else(|e| {
        tasks
            .iter()
            .find(|t| !query.is_empty() && task_name(t) == query)
            .ok_or(e)
    })
}

/// The tasks a request selects.
pub async fn list(c: &mut Client, request: ListTasksRequest) -> Result<Vec<Task>, String> {
    Ok(c.control()
        .list_tasks(request)
        .await
        .map_err(|s| c.error("ListTasks", &s))?
        .into_inner()
        .tasks)
}

/// Tasks grouped under their services, services by name, as `service ps`'s table wants them.
/// A task whose service is gone is shown under the service name it carries.
pub fn by_service(tasks: Vec<Task>, services: &[Service]) -> Vec<(Service, Vec<Task>)> {
    let known: BTreeMap<&str, &Service> = services.iter().map(|s| (service::id(s), s)).collect();
    let mut groups: BTreeMap<String, (Service, Vec<Task>)> = BTreeMap::new();
    for t in tasks {
        let group = groups.entry(t.service_id.clone()).or_insert_with(|| {
            let s = known.get(t.service_id.as_str()).map(|s| (*s).clone());
            let s = s.unwrap_or_else(|| Service {
                meta: Some(Meta {
                    id: t.service_id.clone(),
                    ..Default::default()
                }),
                spec: Some(ServiceSpec {
                    annotations: Some(
                        t.service_annotations
                            .as_deref()
                            .cloned()
                            .unwrap_or_else(Annotations::default),
                    ),
                    ..Default::default()
                }),
                ..Default::default()
            });
            (s, Vec::new())
        });
        group.1.push(t);
    }
    let mut listed: Vec<(Service, Vec<Task>)> = groups.into_values().collect();
    listed.sort_by(|a, b| {
        (service::name(&a.0), service::id(&a.0)).cmp(&(service::name(&b.0), service::id(&b.0)))
    });
    listed
}

/// Node IDs to hostnames, for the NODE column.
pub async fn hostnames(c: &mut Client) -> Result<BTreeMap<String, String>, String> {
    Ok(c.nodes()
        .await?
        .iter()
        .map(|n| {
            (
                super::node::id(n).to_string(),
                super::node::hostname(n).to_string(),
            )
        })
        .collect())
}

fn state_json(state: i32) -> Json {
    Json::str(service::state_name(state))
}

/// A task's spec as `inspect` shows it: the TaskTemplate of a service spec.
fn spec_json(task: &Task) -> Json {
    let spec = ServiceSpec {
        task: task.spec.clone(),
        ..Default::default()
    };
    match service::spec_json(&spec) {
        Json::Object(fields) => fields
            .into_iter()
            .find(|(k, _)| k == "TaskTemplate")
            .map(|(_, v)| v)
            .unwrap_or(Json::Null),
        _ => Json::Null,
    }
}

/// A task as `task inspect` shows it (docker's field names, plus `Name` and `ServiceName`).
pub fn to_json(task: &Task) -> Json {
    let meta = task.meta.as_ref();
    let status = task.status.clone().unwrap_or_default();
    let mut status_fields = vec![
        ("Timestamp", output::timestamp(status.timestamp.as_ref())),
        ("State", state_json(status.state)),
        ("Message", Json::str(&status.message)),
        ("Err", Json::str(&status.err)),
    ];
    match status.runtime_status.as_ref() {
        Some(task_status::RuntimeStatus::Container(c)) => status_fields.push((
            "ContainerStatus",
            Json::object([
                ("ContainerID", Json::str(&c.container_id)),
                ("PID", Json::Int(i64::from(c.pid))),
                ("ExitCode", Json::Int(i64::from(c.exit_code))),
            ]),
        )),
        Some(task_status::RuntimeStatus::Process(p)) => status_fields.push((
            "ProcessStatus",
            Json::object([
                ("PID", Json::Int(i64::from(p.pid))),
                ("ExitCode", Json::Int(i64::from(p.exit_code))),
                ("Signal", Json::Int(i64::from(p.signal))),
            ]),
        )),
        None => {}
    }
    let mut fields = vec![
        ("ID", Json::str(id(task))),
        ("Version", output::version(meta)),
        (
            "CreatedAt",
            output::timestamp(meta.and_then(|m| m.created_at.as_ref())),
        ),
        (
            "UpdatedAt",
            output::timestamp(meta.and_then(|m| m.updated_at.as_ref())),
        ),
        ("Name", Json::str(task_name(task))),
        (
            "Labels",
            output::labels(
                task.annotations
                    .as_ref()
                    .map(|a| a.labels.as_slice())
                    .unwrap_or(&[]),
            ),
        ),
        ("Spec", spec_json(task)),
        ("ServiceID", Json::str(&task.service_id)),
        (
            "ServiceName",
            Json::str(
                task.service_annotations
                    .as_ref()
                    .map(|a| a.name.as_str())
                    .unwrap_or(""),
            ),
        ),
        ("Slot", Json::UInt(task.slot)),
        ("NodeID", Json::str(&task.node_id)),
        ("Status", Json::object(status_fields)),
        ("DesiredState", state_json(task.desired_state)),
    ];
    if !task.networks.is_empty() {
        fields.push((
            "NetworksAttachments",
            Json::Array(
                task.networks
                    .iter()
                    .map(|n| {
                        Json::object([
                            ("Network", Json::object([("ID", Json::str(&n.network_id))])),
                            (
                                "Addresses",
                                Json::Array(n.addresses.iter().map(Json::str).collect()),
                            ),
                        ])
                    })
                    .collect(),
            ),
        ));
    }
    if task.job_iteration > 0 {
        fields.push((
            "JobIteration",
            Json::object([("Index", Json::UInt(task.job_iteration))]),
        ));
    }
    Json::object(fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::service::tests::service;
    use shoal_api::v1::{ProcessStatus, TaskState, TaskStatus};

    fn task(id: &str, service_id: &str, slot: u64) -> Task {
        Task {
            meta: Some(Meta {
                id: id.into(),
                version: 2,
                ..Default::default()
            }),
            service_id: service_id.into(),
            slot,
            node_id: "n1".into(),
            service_annotations: Some(Box::new(Annotations {
                name: "gone".into(),
                labels: vec![],
            })),
            desired_state: TaskState::Running as i32,
            ..Default::default()
        }
    }

    #[test]
    fn tasks_are_grouped_under_their_services_by_name() {
        let services = vec![service("s1", "web", 2), service("s2", "api", 1)];
        let listed = by_service(
            vec![
                task("t1", "s1", 1),
                task("t2", "s2", 1),
                task("t3", "s1", 2),
                task("t4", "s9", 1),
            ],
            &services,
        );
        let names: Vec<(&str, usize)> = listed
            .iter()
            .map(|(s, t)| (service::name(s), t.len()))
            .collect();
        assert_eq!(names, [("api", 1), ("gone", 1), ("web", 2)]);
    }

    #[test]
    fn tasks_resolve_by_id_prefix_and_full_name() {
        let tasks = vec![task("abc111", "s1", 1), task("abd222", "s1", 2)];
        assert_eq!(id(resolve(&tasks, "abc").unwrap()), "abc111");
        assert_eq!(id(resolve(&tasks, "gone.2.abd222").unwrap()), "abd222");
        let e = resolve(&tasks, "ab").unwrap_err();
        assert!(e.contains("task ID prefix \"ab\" is ambiguous"), "{e}");
        assert_eq!(resolve(&tasks, "nope").unwrap_err(), "no such task: nope");
    }

    #[test]
    fn json_uses_docker_field_names() {
        let s = service("s1", "web", 1);
        let mut t = task("t1", "s1", 3);
        t.spec = s.spec.as_ref().unwrap().task.clone();
        t.status = Some(TaskStatus {
            state: TaskState::Failed as i32,
            err: "exit status 2".into(),
            runtime_status: Some(task_status::RuntimeStatus::Process(Box::new(
                ProcessStatus {
                    pid: 42,
                    exit_code: 2,
                    ..Default::default()
                },
            ))),
            ..Default::default()
        });
        let v: serde_json::Value = serde_json::from_str(&to_json(&t).compact()).unwrap();
        assert_eq!(v["ID"], "t1");
        assert_eq!(v["Name"], "gone.3.t1");
        assert_eq!(v["ServiceID"], "s1");
        assert_eq!(v["Slot"], 3);
        assert_eq!(v["NodeID"], "n1");
        assert_eq!(v["DesiredState"], "running");
        assert_eq!(v["Status"]["State"], "failed");
        assert_eq!(v["Status"]["Err"], "exit status 2");
        assert_eq!(v["Status"]["ProcessStatus"]["ExitCode"], 2);
        assert_eq!(v["Spec"]["ProcessSpec"]["Command"], "sleep");
    }
}
