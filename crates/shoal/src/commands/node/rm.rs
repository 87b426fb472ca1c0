//! `shoal node rm [--force] NODE...`: removes nodes from the swarm, printing each removed ID.

use std::path::PathBuf;

use shoal_api::v1::RemoveNodeRequest;

use super::{RESOLVER, id, join_errors};
use crate::commands::client;
use crate::commands::output;

/// Arguments of `shoal node rm`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Remove a node even if it is not down (a manager must be demoted first in any case)
    #[arg(short, long)]
    pub force: bool,
    /// Nodes, by ID, name, hostname or unique ID prefix
    #[arg(value_name = "NODE", required = true)]
    pub nodes: Vec<String>,
}

pub fn run(socket: Option<PathBuf>, args: Args) -> Result<(), String> {
    client::run(socket, async |c| {
        let nodes = c.nodes().await?;
        let mut errors = Vec::new();
        for name in &args.nodes {
            let node_id = match RESOLVER.resolve(&nodes, name) {
                Ok(node) => id(node).to_string(),
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            let request = RemoveNodeRequest {
                node_id: node_id.clone(),
                force: args.force,
            };
            match c.control().remove_node(request).await {
                // Printed as each goes, so what was removed is shown even if a later one fails.
                Ok(_) => output::print(&format!("{node_id}\n"))?,
                Err(s) => errors.push(c.error("RemoveNode", &s)),
            }
        }
        join_errors(errors)
    })
}
