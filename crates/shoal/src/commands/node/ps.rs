//! `shoal node ps [-q] [--no-trunc] [--format json] [NODE...]`: the tasks on nodes (the local
//! node by default), drawn as `service ps` draws them, history included, as docker does.

use std::path::PathBuf;
use std::time::SystemTime;

use shoal_api::v1::ListTasksRequest;

use super::{RESOLVER, id};
use crate::commands::client::{self, Client};
use crate::commands::output::{self, Format};
use crate::commands::service::ps::{Options, render};
use crate::commands::{service, task};

/// Arguments of `shoal node ps`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only print task IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// Do not truncate IDs and errors
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    /// Output format: a table (the default) or `json` (one object per line)
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
    /// Nodes, by ID, name, hostname or unique ID prefix [default: self, the node whose socket
    /// this talks to]
    #[arg(value_name = "NODE")]
    pub nodes: Vec<String>,
}

/// The IDs of the nodes named; `self` is the local node.
pub async fn node_ids(c: &mut Client, wanted: &[String]) -> Result<Vec<String>, String> {
    let nodes = c.nodes().await?;
    let mut ids = Vec::new();
    for w in wanted {
        if w == "self" {
            ids.push(local_node_id(c).await?);
        } else {
            ids.push(id(RESOLVER.resolve(&nodes, w)?).to_string());
        }
    }
    Ok(ids)
}

pub(super) async fn local_node_id(c: &mut Client) -> Result<String, String> {
    c.info()
        .await
        .map(|i| i.node_id)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| {
            "cannot tell which node this is (its daemon did not say); name the node: \
             shoal node ps NODE"
                .to_string()
        })
}

pub fn run(socket: Option<PathBuf>, args: Args) -> Result<(), String> {
    let format = Format::parse(args.format.as_deref())?;
    let wanted = if args.nodes.is_empty() {
        vec!["self".to_string()]
    } else {
        args.nodes
    };
    let text = client::run(socket, async |c| {
        let node_ids = node_ids(c, &wanted).await?;
        let services = service::services(c).await?;
        let tasks = task::list(
            c,
            ListTasksRequest {
                node_ids,
                ..Default::default()
            },
        )
        .await?;
        let hostnames = task::hostnames(c).await?;
        let options = Options {
            quiet: args.quiet,
            no_trunc: args.no_trunc,
            current_only: false,
            format,
        };
        Ok(render(
            &task::by_service(tasks, &services),
            &hostnames,
            &options,
            SystemTime::now(),
        ))
    })?;
    output::print(&text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::service::ps::tests::{cluster, now};

    #[test]
    fn snapshot_tasks_of_one_node() {
        // `shoal node ps manager-1`: the tasks on that node, of every service, history
        // included.
        let (listed, hostnames) = cluster();
        let services: Vec<_> = listed.iter().map(|(s, _)| s.clone()).collect();
        let tasks: Vec<_> = listed
            .into_iter()
            .flat_map(|(_, tasks)| tasks)
            .filter(|t| t.node_id == "7x3lzq0c1n8d5k2m9w4v6b8hr")
            .collect();
        let options = Options {
            quiet: false,
            no_trunc: false,
            current_only: false,
            format: Format::Table,
        };
        insta::assert_snapshot!(
            "node_ps",
            render(
                &task::by_service(tasks, &services),
                &hostnames,
                &options,
                now()
            )
        );
    }
}
