//! `shoal node inspect NODE...`: nodes in full, as a JSON array.

use std::path::PathBuf;

use super::{RESOLVER, join_errors, to_json};
use crate::commands::client;
use crate::commands::output;

/// Arguments of `shoal node inspect`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Nodes, by ID, name, hostname or unique ID prefix (`self`: this node)
    #[arg(value_name = "NODE", required = true)]
    pub nodes: Vec<String>,
}

pub fn run(socket: Option<PathBuf>, args: Args) -> Result<(), String> {
    let (text, result) = client::run(socket, async |c| {
        let nodes = c.nodes().await?;
        let mut found = Vec::new();
        let mut errors = Vec::new();
        for name in &args.nodes {
            // `self`: the node whose daemon answers, as in docker.
            let name = if name == "self" {
                super::ps::local_node_id(c).await?
            } else {
                name.clone()
            };
            match RESOLVER.resolve(&nodes, &name) {
                Ok(node) => found.push(to_json(node)),
                Err(e) => errors.push(e),
            }
        }
        // As docker does: the nodes found are printed even when others are not.
        Ok((output::json_array(found), join_errors(errors)))
    })?;
    output::print(&text)?;
    result
}
