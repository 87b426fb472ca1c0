//! `shoal swarm leave [--force]`: this node leaves the swarm (its daemon forgets the cluster
//! and exits).

use std::path::PathBuf;

use shoal_api::v1::LeaveSwarmRequest;

use crate::commands::client;
use crate::commands::output;

/// Arguments of `shoal swarm leave`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Leave even if this node is a manager (demote it first to keep the swarm's quorum safe)
    #[arg(short, long)]
    pub force: bool,
}

pub fn run(socket: Option<PathBuf>, args: Args) -> Result<(), String> {
    client::run(socket, async |c| {
        c.swarm()
            .leave(LeaveSwarmRequest { force: args.force })
            .await
            .map_err(|s| c.error("Swarm.Leave", &s))?;
        Ok(())
    })?;
    output::print("Node left the swarm.\n")
}
