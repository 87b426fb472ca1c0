//! `shoal service ps [-q] [--no-trunc] [--format json] SERVICE...`: the tasks of services, as
//! docker shows them: grouped by slot (by node for global services), the newest task of each
//! first, older ones (the slot's history) below it marked `\_`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::SystemTime;

use shoal_api::v1::{Service, Task, TaskState};

use super::{RESOLVER, id, image_of, name, services, state_name, tasks_of};
use crate::commands::client;
use crate::commands::node::{self, join_errors};
use crate::commands::output::{self, Format, Json};

/// Arguments of `shoal service ps`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only print task IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// Do not truncate IDs and errors
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    /// Only the tasks meant to run (leave out the history of each slot)
    #[arg(long = "current")]
    pub current: bool,
    /// Every task, history included (the default, as in docker; kept for swarmctl users)
    #[arg(short, long, conflicts_with = "current")]
    pub all: bool,
    /// Output format: a table (the default) or `json` (one object per line)
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
    /// Services, by ID, name or unique ID prefix
    #[arg(value_name = "SERVICE", required = true)]
    pub services: Vec<String>,
}

pub fn run(socket: Option<PathBuf>, args: Args) -> Result<(), String> {
    let format = Format::parse(args.format.as_deref())?;
    let (text, result) = client::run(socket, async |c| {
        let all = services(c).await?;
        let hostnames: BTreeMap<String, String> = c
            .nodes()
            .await?
            .iter()
            .map(|n| (node::id(n).to_string(), node::hostname(n).to_string()))
            .collect();
        let mut listed = Vec::new();
        let mut errors = Vec::new();
        for wanted in &args.services {
            match RESOLVER.resolve(&all, wanted) {
                Ok(service) => {
                    let tasks = tasks_of(c, id(service)).await?;
                    listed.push((service.clone(), tasks));
                }
                Err(e) => errors.push(e),
            }
        }
        let options = Options {
            quiet: args.quiet,
            no_trunc: args.no_trunc,
            current_only: args.current,
            format,
        };
        Ok((
            render(&listed, &hostnames, &options, SystemTime::now()),
            join_errors(errors),
        ))
    })?;
    output::print(&text)?;
    result
}

pub struct Options {
    pub quiet: bool,
    pub no_trunc: bool,
    pub current_only: bool,
    pub format: Format,
}

const HEADERS: [&str; 7] = [
    "ID",
    "NAME",
    "IMAGE",
    "NODE",
    "DESIRED STATE",
    "CURRENT STATE",
    "ERROR",
];

/// "Running" → with how long ago it got there: "Running 5 minutes ago", as docker shows it.
fn since(state: i32, at: Option<&prost_types::Timestamp>, now: SystemTime) -> String {
    let state = crate::commands::node::title(&state_name(state));
    let Some(at) = at else {
        return state;
    };
    let then = SystemTime::UNIX_EPOCH
        + std::time::Duration::new(at.seconds.max(0) as u64, at.nanos.max(0) as u32);
    let secs = now.duration_since(then).map(|d| d.as_secs()).unwrap_or(0);
    format!("{state} {} ago", human_duration(secs))
}

/// Docker's `units.HumanDuration`.
pub fn human_duration(secs: u64) -> String {
    let minutes = secs / 60;
    let hours = minutes / 60;
    match secs {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        s if s < 60 => format!("{s} seconds"),
        _ if minutes == 1 => "About a minute".into(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".into(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", hours / 24 / 365),
    }
}

fn created(task: &Task) -> (i64, i32, u64) {
    let meta = task.meta.as_ref();
    let at = meta.and_then(|m| m.created_at.as_ref());
    (
        at.map(|t| t.seconds).unwrap_or(0),
        at.map(|t| t.nanos).unwrap_or(0),
        meta.map(|m| m.version).unwrap_or(0),
    )
}

fn task_id(task: &Task) -> &str {
    task.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("")
}

struct Row {
    id: String,
    name: String,
    history: bool,
    image: String,
    node: String,
    desired: String,
    current: String,
    error: String,
}

fn rows(
    service: &Service,
    tasks: &[Task],
    hostnames: &BTreeMap<String, String>,
    options: &Options,
    now: SystemTime,
) -> Vec<Row> {
    // Slots for replicated services and jobs; nodes for global ones (slot 0).
    let mut groups: BTreeMap<(u64, String), Vec<&Task>> = BTreeMap::new();
    for t in tasks {
        if options.current_only && t.desired_state > TaskState::Complete as i32 {
            continue;
        }
        let key = if t.slot > 0 {
            (t.slot, String::new())
        } else {
            (0, t.node_id.clone())
        };
        groups.entry(key).or_default().push(t);
    }
    let mut out = Vec::new();
    for ((slot, node_id), mut group) in groups {
        group.sort_by_key(|t| std::cmp::Reverse(created(t)));
        for (i, t) in group.into_iter().enumerate() {
            let status = t.status.clone().unwrap_or_default();
            let suffix = if slot > 0 {
                slot.to_string()
            } else if options.no_trunc {
                node_id.clone()
            } else {
                output::short_id(&node_id).to_string()
            };
            let mut error = status.err.clone();
            if !options.no_trunc && error.chars().count() > 30 {
                error = error.chars().take(29).collect::<String>() + "…";
            }
            out.push(Row {
                id: task_id(t).to_string(),
                name: format!("{}.{suffix}", name(service)),
                history: i > 0,
                image: image_of(
                    t.spec
                        .as_ref()
                        .or(service.spec.as_ref().and_then(|s| s.task.as_ref())),
                ),
                node: hostnames
                    .get(&t.node_id)
                    .filter(|h| !h.is_empty())
                    .cloned()
                    .unwrap_or_else(|| output::short_id(&t.node_id).to_string()),
                desired: crate::commands::node::title(&state_name(t.desired_state)),
                current: since(status.state, status.timestamp.as_ref(), now),
                error,
            });
        }
    }
    out
}

/// The listing of each service's tasks.
pub fn render(
    listed: &[(Service, Vec<Task>)],
    hostnames: &BTreeMap<String, String>,
    options: &Options,
    now: SystemTime,
) -> String {
    let rows: Vec<Row> = listed
        .iter()
        .flat_map(|(s, tasks)| rows(s, tasks, hostnames, options, now))
        .collect();
    if options.quiet {
        return rows.iter().map(|r| format!("{}\n", r.id)).collect();
    }
    match options.format {
        Format::Table => output::table(
            &HEADERS,
            &rows
                .iter()
                .map(|r| {
                    vec![
                        if options.no_trunc {
                            r.id.clone()
                        } else {
                            output::short_id(&r.id).to_string()
                        },
                        if r.history {
                            format!(" \\_ {}", r.name)
                        } else {
                            r.name.clone()
                        },
                        r.image.clone(),
                        r.node.clone(),
                        r.desired.clone(),
                        r.current.clone(),
                        if r.error.is_empty() {
                            String::new()
                        } else {
                            format!("\"{}\"", r.error)
                        },
                    ]
                })
                .collect::<Vec<_>>(),
        ),
        Format::Json => output::json_lines(
            &rows
                .iter()
                .map(|r| {
                    Json::object([
                        ("ID", Json::str(&r.id)),
                        ("Name", Json::str(&r.name)),
                        ("History", Json::Bool(r.history)),
                        ("Image", Json::str(&r.image)),
                        ("Node", Json::str(&r.node)),
                        ("DesiredState", Json::str(&r.desired)),
                        ("CurrentState", Json::str(&r.current)),
                        ("Error", Json::str(&r.error)),
                    ])
                })
                .collect::<Vec<_>>(),
        ),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::commands::service::tests::service;
    use shoal_api::v1::{Meta, TaskStatus};

    fn task(id: &str, slot: u64, desired: TaskState, state: TaskState, at: i64) -> Task {
        Task {
            meta: Some(Meta {
                id: id.into(),
                version: 1,
                created_at: Some(prost_types::Timestamp {
                    seconds: at,
                    nanos: 0,
                }),
                updated_at: None,
            }),
            slot,
            node_id: "n1".into(),
            desired_state: desired as i32,
            status: Some(TaskStatus {
                state: state as i32,
                timestamp: Some(prost_types::Timestamp {
                    seconds: at,
                    nanos: 0,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn options(current_only: bool, format: Format) -> Options {
        Options {
            quiet: false,
            no_trunc: false,
            current_only,
            format,
        }
    }

    #[test]
    fn newest_first_per_slot_with_history_marked() {
        let s = service("svc", "web", 2);
        let mut failed = task(
            "t1aaaaaaaaaaaaaaaa",
            1,
            TaskState::Shutdown,
            TaskState::Failed,
            100,
        );
        failed.status.as_mut().unwrap().err = "exit status 1".into();
        let tasks = vec![
            failed,
            task(
                "t2bbbbbbbbbbbbbbbb",
                2,
                TaskState::Running,
                TaskState::Running,
                150,
            ),
            task(
                "t3cccccccccccccccc",
                1,
                TaskState::Running,
                TaskState::Running,
                200,
            ),
        ];
        let hosts = BTreeMap::from([("n1".to_string(), "host-1".to_string())]);
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(320);
        let out = render(
            &[(s.clone(), tasks.clone())],
            &hosts,
            &options(false, Format::Table),
            now,
        );
        assert_eq!(
            out,
            "ID             NAME        IMAGE        NODE     DESIRED STATE   CURRENT STATE           ERROR\n\
             t3cccccccccc   web.1       sleep 1000   host-1   Running         Running 2 minutes ago\n\
             t1aaaaaaaaaa    \\_ web.1   sleep 1000   host-1   Shutdown        Failed 3 minutes ago    \"exit status 1\"\n\
             t2bbbbbbbbbb   web.2       sleep 1000   host-1   Running         Running 2 minutes ago\n"
        );
        let current = render(
            &[(s.clone(), tasks.clone())],
            &hosts,
            &options(true, Format::Table),
            now,
        );
        assert!(!current.contains("t1aaa"), "{current}");
        let json = render(&[(s, tasks)], &hosts, &options(false, Format::Json), now);
        let first: serde_json::Value = serde_json::from_str(json.lines().nth(1).unwrap()).unwrap();
        assert_eq!(first["History"], true);
        assert_eq!(first["Error"], "exit status 1");
        assert_eq!(first["ID"], "t1aaaaaaaaaaaaaaaa");
    }

    /// "now" in the snapshots: 2024-05-01T12:00:00Z.
    const NOW: i64 = 1_714_564_800;

    /// A task of `slot` (0: a global service's) on `node`, in `state` since `ago` seconds.
    fn at(
        id: &str,
        slot: u64,
        node: &str,
        (desired, state): (TaskState, TaskState),
        ago: i64,
        err: &str,
    ) -> Task {
        let mut t = task(id, slot, desired, state, NOW - ago);
        t.node_id = node.into();
        t.status.as_mut().unwrap().err = err.into();
        t
    }

    pub(crate) fn image(image: &str) -> Option<shoal_api::v1::TaskSpec> {
        Some(shoal_api::v1::TaskSpec::from(
            shoal_api::v1::TaskSpecFields {
                runtime: Some(shoal_api::v1::task_spec::Runtime::Container(Box::new(
                    shoal_api::v1::ContainerSpec {
                        image: image.into(),
                        ..Default::default()
                    },
                ))),
                ..Default::default()
            },
        ))
    }

    /// Services and their tasks, as [`render`] takes them.
    pub(crate) type Listed = Vec<(Service, Vec<Task>)>;

    /// A replicated service `web` (3 replicas) after an update from nginx:1.26 to 1.27:
    /// slot 1's first new task failed and was replaced, slot 3 cannot be placed; and a global
    /// service `agent` on two nodes, one of whose tasks was restarted.
    pub(crate) fn cluster() -> (Listed, BTreeMap<String, String>) {
        use TaskState::{Complete, Failed, Pending, Running, Shutdown};
        let mut web = service("w3b5e7r9v1i2c3e4s5e6r7v8i", "web", 3);
        web.spec.as_mut().unwrap().task = image("nginx:1.27");
        let mut old = at(
            "k1r5t0l8d2s6a9f3g7h4j1k2l",
            1,
            "7x3lzq0c1n8d5k2m9w4v6b8hr",
            (Shutdown, Shutdown),
            600,
            "",
        );
        old.spec = image("nginx:1.26");
        let web_tasks = vec![
            at(
                "r9u8n7n6i5n4g3a2b1c0d9e8f",
                1,
                "7x3lzq0c1n8d5k2m9w4v6b8hr",
                (Running, Running),
                75,
                "",
            ),
            at(
                "f4a1l2e3d5t6a7s8k9q0w1e2r",
                1,
                "7x3lzq0c1n8d5k2m9w4v6b8hr",
                (Shutdown, Failed),
                130,
                "task: non-zero exit (137): the container was killed (out of memory)",
            ),
            old,
            at(
                "s2l0o2t2r2u2n2n2i2n2g2a2b",
                2,
                "q5t8w2e4r6y1u3i9o0p7a5s2d",
                (Running, Running),
                3 * 3600,
                "",
            ),
            at(
                "p3e4n5d6i7n8g9t0a1s2k3x4y",
                3,
                "",
                (Running, Pending),
                20,
                "no suitable node (scheduling constraints not satisfied on 3 nodes)",
            ),
        ];
        let mut agent = service("a9g8e7n6t5s4e3r2v1i0c9e8d", "agent", 0);
        agent.spec.as_mut().unwrap().mode =
            Some(shoal_api::v1::service_spec::Mode::Global(Default::default()));
        let agent_tasks = vec![
            at(
                "g1l2o3b4a5l6t7a8s9k0a1b2c",
                0,
                "7x3lzq0c1n8d5k2m9w4v6b8hr",
                (Running, Running),
                2 * 86_400,
                "",
            ),
            at(
                "g2l3o4b5a6l7t8a9s0k1d2e3f",
                0,
                "q5t8w2e4r6y1u3i9o0p7a5s2d",
                (Running, Running),
                59,
                "",
            ),
            at(
                "g3l4o5b6a7l8t9a0s1k2g3h4i",
                0,
                "q5t8w2e4r6y1u3i9o0p7a5s2d",
                (Shutdown, Complete),
                61,
                "",
            ),
        ];
        let hosts = BTreeMap::from([
            (
                "7x3lzq0c1n8d5k2m9w4v6b8hr".to_string(),
                "manager-1".to_string(),
            ),
            (
                "q5t8w2e4r6y1u3i9o0p7a5s2d".to_string(),
                "worker-1".to_string(),
            ),
        ]);
        let mut listed = vec![(agent, agent_tasks), (web, web_tasks)];
        for (s, tasks) in &mut listed {
            for t in tasks {
                t.service_id = id(s).to_string();
            }
        }
        (listed, hosts)
    }

    pub(crate) fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(NOW as u64)
    }

    #[test]
    fn snapshot_table_with_history_and_errors() {
        let (listed, hosts) = cluster();
        insta::assert_snapshot!(
            "service_ps",
            render(&listed, &hosts, &options(false, Format::Table), now())
        );
    }

    #[test]
    fn snapshot_table_without_truncation() {
        let (listed, hosts) = cluster();
        let options = Options {
            no_trunc: true,
            ..options(false, Format::Table)
        };
        insta::assert_snapshot!(
            "service_ps_no_trunc",
            render(&listed, &hosts, &options, now())
        );
    }

    #[test]
    fn snapshot_current_tasks_only() {
        let (listed, hosts) = cluster();
        insta::assert_snapshot!(
            "service_ps_current",
            render(&listed, &hosts, &options(true, Format::Table), now())
        );
    }

    #[test]
    fn snapshot_quiet_and_json() {
        let (listed, hosts) = cluster();
        let quiet = Options {
            quiet: true,
            ..options(false, Format::Table)
        };
        insta::assert_snapshot!("service_ps_quiet", render(&listed, &hosts, &quiet, now()));
        insta::assert_snapshot!(
            "service_ps_json",
            render(&listed, &hosts, &options(false, Format::Json), now())
        );
    }

    #[test]
    fn human_durations() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(45), "45 seconds");
        assert_eq!(human_duration(61), "About a minute");
        assert_eq!(human_duration(3 * 3600), "3 hours");
        assert_eq!(human_duration(3 * 86400), "3 days");
    }
}
