//! `shoal node promote NODE...`: makes workers managers.

use std::path::PathBuf;

use shoal_api::v1::NodeRole;

use crate::commands::client;
use crate::commands::output;

/// Arguments of `shoal node promote`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Nodes, by ID, name, hostname or unique ID prefix
    #[arg(value_name = "NODE", required = true)]
    pub nodes: Vec<String>,
}

pub fn run(socket: Option<PathBuf>, args: Args) -> Result<(), String> {
    let (text, result) = client::run(socket, async |c| {
        Ok(super::change_role(c, &args.nodes, NodeRole::Manager).await)
    })?;
    output::print(&text)?;
    result
}
