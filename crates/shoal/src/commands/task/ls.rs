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
