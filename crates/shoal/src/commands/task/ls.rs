//! `shoal task ls [-a] [--service S]... [--node N]... [-q] [--no-trunc] [--format json]`: the
//! swarm's tasks, drawn as `service ps` draws them (grouped by service and slot, a slot's
//! history below its newest task). Without `-a`, only the tasks meant to run (or, for jobs,
//! to complete).

use std::path::PathBuf;
use std::time::SystemTime;

use shoal_api::v1::ListTasksRequest;

use super::{by_service, hostnames, list};
use crate::commands::client;
use crate::commands::output::{self, Format};
use crate::commands::service::ps::{Options, render};
use crate::commands::{node, service};

/// Arguments of `shoal task ls`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Every task, the ones shut down or replaced included
    #[arg(short, long)]
    pub all: bool,
    /// Only the tasks of this service (ID, name or unique ID prefix); may be repeated
    #[arg(long = "service", value_name = "SERVICE")]
    pub services: Vec<String>,
    /// Only the tasks on this node (ID, name, hostname, unique ID prefix, or `self`); may be
    /// repeated
    #[arg(long = "node", value_name = "NODE")]
    pub nodes: Vec<String>,
    /// Only print task IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// Do not truncate IDs and errors
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    /// Output format: a table (the default) or `json` (one object per line)
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
}

pub fn run(socket: Option<PathBuf>, args: Args) -> Result<(), String> {
    let format = Format::parse(args.format.as_deref())?;
    let text = client::run(socket, async |c| {
        let services = service::services(c).await?;
        let mut request = ListTasksRequest::default();
        for wanted in &args.services {
            let s = service::RESOLVER.resolve(&services, wanted)?;
            request.service_ids.push(service::id(s).to_string());
        }
        if !args.nodes.is_empty() {
            request.node_ids = node::ps::node_ids(c, &args.nodes).await?;
        }
        let tasks = list(c, request).await?;
        let hostnames = hostnames(c).await?;
        let options = Options {
            quiet: args.quiet,
            no_trunc: args.no_trunc,
            current_only: !args.all,
            format,
        };
        Ok(render(
            &by_service(tasks, &services),
            &hostnames,
            &options,
            SystemTime::now(),
        ))
    })?;
    output::print(&text)
}

#[cfg(test)]
mod tests {
    use shoal_api::v1::{Annotations, Meta, Task, TaskState, TaskStatus};

    use super::*;
    use crate::commands::service::ps::tests::{cluster, image, now};

    /// Every task of the swarm, and one of a service removed since (named by the service
    /// name it carries).
    fn swarm() -> (
        Vec<Task>,
        Vec<shoal_api::v1::Service>,
        std::collections::BTreeMap<String, String>,
    ) {
        let (listed, hostnames) = cluster();
        let services: Vec<_> = listed.iter().map(|(s, _)| s.clone()).collect();
        let mut tasks: Vec<Task> = listed.into_iter().flat_map(|(_, tasks)| tasks).collect();
        let at = prost_types::Timestamp {
            seconds: 1_714_564_800 - 300,
            nanos: 0,
        };
        tasks.push(Task {
            meta: Some(Meta {
                id: "o1r2p3h4a5n6t7a8s9k0l1m2n".into(),
                version: 9,
                created_at: Some(at),
                updated_at: None,
            }),
            service_id: "h8d2k4m6n1p3q5r7s9t0v2w4x".into(),
            service_annotations: Some(Box::new(Annotations {
                name: "old-api".into(),
                labels: vec![],
            })),
            slot: 1,
            node_id: "q5t8w2e4r6y1u3i9o0p7a5s2d".into(),
            spec: image("registry.example.com/api:2.3"),
            desired_state: TaskState::Remove as i32,
            status: Some(TaskStatus {
                state: TaskState::Shutdown as i32,
                timestamp: Some(at),
                ..Default::default()
            }),
            ..Default::default()
        });
        (tasks, services, hostnames)
    }

    fn options(all: bool) -> Options {
        Options {
            quiet: false,
            no_trunc: false,
            current_only: !all,
            format: Format::Table,
        }
    }

    #[test]
    fn snapshot_tasks_meant_to_run() {
        // `shoal task ls`
        let (tasks, services, hostnames) = swarm();
        insta::assert_snapshot!(
            "task_ls",
            render(
                &by_service(tasks, &services),
                &hostnames,
                &options(false),
                now()
            )
        );
    }

    #[test]
    fn snapshot_every_task() {
        // `shoal task ls -a`
        let (tasks, services, hostnames) = swarm();
        insta::assert_snapshot!(
            "task_ls_all",
            render(
                &by_service(tasks, &services),
                &hostnames,
                &options(true),
                now()
            )
        );
    }
}
